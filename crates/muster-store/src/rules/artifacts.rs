//! Artifacts in the job store: the outputs a job records (within its limit), the artifacts
//! jobs name, and the records and running totals the upload quotas read.

use std::collections::BTreeMap;

use muster_core::{ArtifactId, JobRecord, MAX_JOB_OUTPUTS, RunnerId, Timestamp};

use crate::{ArtifactRecord, ArtifactUploader, ArtifactUsage, ArtifactUsageReport, StoreError};

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

/// The `LIKE` pattern that finds `id` in a job's `inputs` or `outputs` (JSON text holding ids
/// as `sha256:` and 64 hex digits, which hold no `%` or `_`).
pub(crate) fn named_in_json_pattern(id: muster_core::ArtifactId) -> String {
    format!("%\"{id}\"%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::pending_job;

    #[test]
    fn outputs_merge_by_name_within_the_limit() {
        let mut job = pending_job(1);
        let first = ArtifactId::from_digest([1; 32]);
        let second = ArtifactId::from_digest([2; 32]);
        job.outputs.insert("report".into(), first);
        let merged = merged_outputs(&job, BTreeMap::from([("report".to_string(), second)]))
            .expect("within the limit");
        assert_eq!(merged, BTreeMap::from([("report".to_string(), second)]));
        let many: BTreeMap<String, ArtifactId> = (0..=MAX_JOB_OUTPUTS)
            .map(|index| (format!("out{index}"), first))
            .collect();
        assert!(matches!(
            merged_outputs(&job, many),
            Err(StoreError::Rejected(_))
        ));
    }

    #[test]
    fn usage_rows_split_into_the_totals_and_a_runners_share() {
        let runner = RunnerId::new(Timestamp(0), 1);
        let rows = vec![
            (ALL_ARTIFACTS_KEY.to_vec(), 30, 3),
            (runner.as_bytes().to_vec(), 10, 1),
            (RunnerId::new(Timestamp(0), 2).as_bytes().to_vec(), 20, 2),
        ];
        let report = artifact_usage_report(rows.clone(), Some(runner));
        assert_eq!(
            report.all,
            ArtifactUsage {
                bytes: 30,
                count: 3
            }
        );
        assert_eq!(
            report.runner,
            ArtifactUsage {
                bytes: 10,
                count: 1
            }
        );
        let uploaders = artifact_uploaders_from_rows(rows).expect("runner keys");
        assert_eq!(uploaders.len(), 2, "the totals are not an uploader");
        assert!(artifact_uploaders_from_rows(vec![(vec![1, 2], 1, 1)]).is_err());
        assert!(parse_named_artifact("not an id").is_err());
    }
}
