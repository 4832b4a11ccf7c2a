//! Store rules that do not depend on the backend, so both apply them the same way.

use std::collections::BTreeMap;

use muster_core::{ArtifactId, JobId, JobRecord, MAX_JOB_OUTPUTS, jitter_unit_from_seed};

use crate::StoreError;

/// Jobs with requirements of one kind looked at per claim before giving up on finding ones this
/// runner meets: bounds the work of a claim when the head of the queue holds jobs it cannot take.
/// Jobs without requirements are never behind this bound (they have their own index).
pub(crate) const MAX_CLAIM_SCAN_PER_KIND: usize = 2048;

pub(crate) fn job_not_found(id: JobId) -> StoreError {
    StoreError::NotFound(format!("job {id}"))
}

/// Pseudo-random but repeatable retry jitter for one attempt of the job stored at row `seq`.
pub(crate) fn jitter_for(seq: i64, attempt: u32) -> f64 {
    jitter_unit_from_seed((seq as u64) ^ (u64::from(attempt) << 48))
}

/// The job's outputs with `recorded` added (a name recorded again names the new artifact), or
/// `Rejected` when that would pass the per-job limit. Writes nothing.
pub(crate) fn merged_outputs(
    job: &JobRecord,
    recorded: BTreeMap<String, ArtifactId>,
) -> Result<BTreeMap<String, ArtifactId>, StoreError> {
    let mut merged = job.outputs.clone();
    merged.extend(recorded);
    if merged.len() > MAX_JOB_OUTPUTS {
        return Err(StoreError::Rejected(format!(
            "outputs: a job records at most {MAX_JOB_OUTPUTS} outputs; job {} would have {}",
            job.id,
            merged.len()
        )));
    }
    Ok(merged)
}

/// The warning that takes the place of the first log entry past a job's cap.
pub(crate) fn truncation_notice(cap_bytes: i64) -> String {
    format!(
        "log truncated: this job's log reached its cap of {cap_bytes} bytes and later entries were dropped"
    )
}
