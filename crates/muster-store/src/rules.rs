//! Store rules that do not depend on the backend, so both apply them the same way.

use std::collections::BTreeMap;

use muster_core::{
    ArtifactId, JobId, JobRecord, MAX_JOB_OUTPUTS, RunnerId, Timestamp, jitter_unit_from_seed,
};

use crate::{ArtifactRecord, ArtifactUploader, ArtifactUsage, ArtifactUsageReport, StoreError};

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

/// The first log `seq` a read after `after_seq` returns (0 when reading from the start).
pub(crate) fn first_log_seq_after(after_seq: Option<u64>) -> i64 {
    after_seq
        .map_or(0, |after| after.saturating_add(1))
        .min(i64::MAX as u64) as i64
}

/// Where the next read of a job's log continues after a page of `items` that started at
/// `first`: past the page's last entry, or, when the page is empty, at the job's next unwritten
/// `seq` (`stored_next_seq`) if that is lower. So an answer never passes what is stored, however
/// far ahead the caller's cursor was: a follower resuming from it sees the entries written next.
pub(crate) fn next_log_seq(
    items: &[muster_core::LogEntry],
    first: i64,
    stored_next_seq: impl FnOnce() -> Result<i64, StoreError>,
) -> Result<u64, StoreError> {
    match items.last() {
        Some(entry) => Ok(entry.seq + 1),
        None => Ok(first.min(stored_next_seq()?).max(0) as u64),
    }
}

/// The warning that takes the place of the first log entry past a job's cap.
pub(crate) fn truncation_notice(cap_bytes: i64) -> String {
    format!(
        "log truncated: this job's log reached its cap of {cap_bytes} bytes and later entries were dropped"
    )
}

/// One job as the pruning walk sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PruneCandidate {
    pub(crate) seq: i64,
    pub(crate) state_code: i64,
    pub(crate) finished_at: Option<i64>,
    pub(crate) created_at: i64,
}

/// Of `walked` (jobs in `seq` order, at most `limit` of them), the ones to delete, and where the
/// walk goes on: nowhere once it reached a job created at or after the cutoff (no later job can
/// have finished before it; creation follows `seq` up to the coordinators' clock skew, which
/// only makes a pass stop a little early) or the end of the table.
pub(crate) fn choose_jobs_to_prune(
    walked: &[PruneCandidate],
    finished_before: muster_core::Timestamp,
    limit: u32,
) -> (Vec<i64>, Option<crate::PruneCursor>) {
    let cutoff = finished_before.as_millis();
    let mut doomed = Vec::new();
    for candidate in walked {
        if candidate.created_at >= cutoff {
            return (doomed, None);
        }
        let terminal = muster_core::JobState::from_code(candidate.state_code)
            .is_some_and(muster_core::JobState::is_terminal);
        if terminal
            && candidate
                .finished_at
                .is_some_and(|finished| finished < cutoff)
        {
            doomed.push(candidate.seq);
        }
    }
    let resume = match walked.last() {
        Some(last) if walked.len() >= limit as usize => Some(crate::PruneCursor(last.seq)),
        _ => None,
    };
    (doomed, resume)
}

/// The state codes of finished jobs, for SQL.
pub(crate) const TERMINAL_STATE_CODES: &str = "4, 5, 6";

/// An artifact id read back from a job's inputs or outputs. One that does not parse is corrupt
/// data, and stops the collection of unused artifacts rather than being passed over.
pub(crate) fn parse_named_artifact(text: &str) -> Result<ArtifactId, StoreError> {
    text.parse().map_err(|error| {
        StoreError::Internal(format!(
            "a job names the artifact '{text}', which is not an artifact id: {error}"
        ))
    })
}

/// The `artifact_usage` key of the totals over every artifact (a runner's key is its id).
pub(crate) const ALL_ARTIFACTS_KEY: &[u8] = b"";

/// An artifact's size as the stores keep it (a signed 64-bit column).
pub(crate) fn artifact_size_column(size: u64) -> Result<i64, StoreError> {
    i64::try_from(size).map_err(|_| {
        StoreError::Rejected(format!(
            "an artifact of {size} bytes is too large to record"
        ))
    })
}

/// An `artifacts` row read back: id digest, size, uploading runner (none for a user), time.
pub(crate) fn artifact_record_from_columns(
    id: &[u8],
    size: i64,
    runner: Option<&[u8]>,
    created_at: i64,
) -> Result<ArtifactRecord, StoreError> {
    let digest: [u8; 32] = id
        .try_into()
        .map_err(|_| StoreError::Internal("an artifact id in the store is not 32 bytes".into()))?;
    let uploader = match runner {
        None => ArtifactUploader::User,
        Some(bytes) => ArtifactUploader::Runner(RunnerId::from_slice(bytes).ok_or_else(|| {
            StoreError::Internal("an artifact's runner id in the store is not 16 bytes".into())
        })?),
    };
    Ok(ArtifactRecord {
        id: ArtifactId::from_digest(digest),
        size: u64::try_from(size).unwrap_or(0),
        uploader,
        created_at: Timestamp(created_at),
    })
}

/// Running totals read back; a total the triggers never let go negative reads as 0 if it did.
pub(crate) fn artifact_usage_from_columns(bytes: i64, count: i64) -> ArtifactUsage {
    ArtifactUsage {
        bytes: u64::try_from(bytes).unwrap_or(0),
        count: u64::try_from(count).unwrap_or(0),
    }
}

/// The report from the `artifact_usage` rows read for `runner`: `(key, bytes, count)` each.
pub(crate) fn artifact_usage_report(
    rows: impl IntoIterator<Item = (Vec<u8>, i64, i64)>,
    runner: Option<RunnerId>,
) -> ArtifactUsageReport {
    let mut report = ArtifactUsageReport::default();
    for (key, bytes, count) in rows {
        let usage = artifact_usage_from_columns(bytes, count);
        if key.as_slice() == ALL_ARTIFACTS_KEY {
            report.all = usage;
        } else if runner.is_some_and(|runner| key.as_slice() == runner.as_bytes()) {
            report.runner = usage;
        }
    }
    report
}

/// The largest uploaders from `artifact_usage` rows `(key, bytes, count)`, skipping the totals.
pub(crate) fn artifact_uploaders_from_rows(
    rows: impl IntoIterator<Item = (Vec<u8>, i64, i64)>,
) -> Result<Vec<(RunnerId, ArtifactUsage)>, StoreError> {
    rows.into_iter()
        .filter(|(key, _, _)| key.as_slice() != ALL_ARTIFACTS_KEY)
        .map(|(key, bytes, count)| {
            let runner = RunnerId::from_slice(&key).ok_or_else(|| {
                StoreError::Internal("an artifact usage key in the store is not a runner id".into())
            })?;
            Ok((runner, artifact_usage_from_columns(bytes, count)))
        })
        .collect()
}
