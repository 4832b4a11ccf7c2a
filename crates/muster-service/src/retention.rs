//! Retention: jobs that finished longer ago than `--retain-finished-jobs` are deleted with their
//! logs and DAGs, so the database holds a bounded window of history instead of growing forever;
//! artifacts that no job names and that nobody uploaded or named for `--retain-unused-artifacts`
//! are deleted too, so the artifact store does not keep the bytes of deleted history.
//! Every coordinator runs this; on PostgreSQL one of them prunes jobs at a time, and deleting an
//! artifact twice is harmless.

use std::time::Duration;

use muster_core::Timestamp;
use muster_store::blobs::BlobError;
use muster_store::{Store, StoreError};

use crate::Coordinator;

/// Jobs walked per store call: each call is one short transaction, so claims and completions
/// running beside a large first prune wait on no long lock.
const PRUNE_BATCH: u32 = 1_000;
/// A pause between calls of one pass, so a backlog of millions of old jobs is worked off without
/// taking the database from the jobs running now.
pub const PAUSE_BETWEEN_CALLS: Duration = Duration::from_millis(20);

/// How often a pass runs: a tenth of the retention (a job outlives its retention by at most that
/// much), at least every second and at most every minute.
pub(crate) fn prune_interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// How often unused artifacts are looked for: a tenth of their retention, at least every
/// minute and at most every hour. A pass reads every job that names an artifact, so it runs
/// far less often than pruning.
pub(crate) fn collect_interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(60), Duration::from_secs(3600))
}

/// Why a collection of unused artifacts stopped; nothing it had not yet decided on was deleted.
#[derive(Debug, thiserror::Error)]
pub enum CollectionError {
    #[error("read which artifacts jobs name, or update their records")]
    Store(#[source] StoreError),
    #[error("reach the artifact store")]
    Blobs(#[source] BlobError),
}

/// What one collection of unused artifacts deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollectionReport {
    pub artifacts: u64,
    pub bytes: u64,
}

/// Logs a task's failures once per outage instead of once per pass.
struct Outage {
    what: &'static str,
    failing: bool,
}

impl Outage {
    fn note<T, E>(&mut self, outcome: Result<T, E>, retry_every: Duration)
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        match (outcome, self.failing) {
            (Err(error), false) => {
                let error = format!("{:#}", anyhow::Error::new(error));
                tracing::warn!(%error, "{} fails; it is tried again every {retry_every:?}", self.what);
                self.failing = true;
            }
            (Err(_), true) => {}
            (Ok(_), true) => {
                tracing::info!("{} reaches the store again", self.what);
                self.failing = false;
            }
            (Ok(_), false) => {}
        }
    }
}

pub(crate) async fn run(coordinator: Coordinator) {
    let jobs_retention = coordinator.config.retain_finished_jobs;
    let artifacts_retention = coordinator.config.retain_unused_artifacts;
    let tick = match (jobs_retention, artifacts_retention) {
        (None, None) => return,
        (Some(retention), _) => prune_interval(retention),
        (None, Some(retention)) => collect_interval(retention),
    };
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruning = Outage {
        what: "deleting finished jobs past their retention",
        failing: false,
    };
    let mut collecting = Outage {
        what: "deleting unused artifacts past their retention",
        failing: false,
    };
    let mut next_collection = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = coordinator.shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let Some(retention) = jobs_retention {
            let outcome = tokio::select! {
                _ = coordinator.shutdown.cancelled() => return,
                outcome = prune_once(&coordinator, retention, PAUSE_BETWEEN_CALLS) => outcome,
            };
            pruning.note(outcome, prune_interval(retention));
        }
        if let Some(retention) = artifacts_retention
            && tokio::time::Instant::now() >= next_collection
        {
            let outcome = tokio::select! {
                _ = coordinator.shutdown.cancelled() => return,
                outcome = collect_once(&coordinator, retention) => outcome,
            };
            let every = collect_interval(retention);
            collecting.note(outcome, every);
            next_collection = tokio::time::Instant::now() + every;
        }
    }
}

/// One collection of the artifacts no job names and nobody stored or named within `retention`.
/// Runs for at most a quarter of the retention: an artifact named by a job submitted after the
/// jobs were read was marked used at most a request's time before, so the marks the deletions
/// re-check must be younger than the retention minus the pass's own length.
pub(crate) async fn collect_once(
    coordinator: &Coordinator,
    retention: Duration,
) -> Result<CollectionReport, CollectionError> {
    let mut report = CollectionReport::default();
    let candidates = coordinator
        .blobs
        .unused_for(retention)
        .await
        .map_err(CollectionError::Blobs)?;
    if candidates.is_empty() {
        return Ok(report);
    }
    let started = tokio::time::Instant::now();
    // (At least a minute, for the short retentions tests use.)
    let time_limit = (retention / 4).max(Duration::from_secs(60));
    // Read after listing: a job written after this read named its artifacts after marking them.
    let named = coordinator
        .store
        .named_artifacts()
        .await
        .map_err(CollectionError::Store)?;
    for id in candidates.iter().filter(|id| !named.contains(id)) {
        if started.elapsed() > time_limit {
            tracing::info!(
                deleted = report.artifacts,
                "an artifact collection ran out of time; the next one goes on"
            );
            break;
        }
        // The record (what the quotas charge) goes before the bytes and comes back if they
        // stay: a crash in between leaves stored bytes charged to nobody until they are
        // collected, never a charge for bytes that are gone; and an upload that stores the same
        // bytes anew once they are deleted records a charge of its own, which nothing here takes.
        let record = coordinator
            .store
            .take_artifact_record(*id)
            .await
            .map_err(CollectionError::Store)?;
        match coordinator.blobs.delete_unused(id, retention).await {
            Ok(Some(bytes)) => {
                report.artifacts += 1;
                report.bytes += bytes;
                coordinator.metrics.record_artifact_collected(bytes);
            }
            // Used meanwhile, or deleted by another coordinator's collection.
            Ok(None) => {
                if let Some(record) = record {
                    put_back_record(coordinator, record).await?;
                }
            }
            Err(error) => {
                if let Some(record) = record
                    && let Err(put_back) = put_back_record(coordinator, record).await
                {
                    let put_back = format!("{:#}", anyhow::Error::new(put_back));
                    tracing::warn!(artifact = %id, error = %put_back, "cannot put back the record of an artifact the collection kept; it is charged to nobody until collected");
                }
                return Err(CollectionError::Blobs(error));
            }
        }
    }
    if report.artifacts > 0 {
        tracing::info!(
            deleted = report.artifacts,
            bytes = report.bytes,
            retention = ?retention,
            "deleted artifacts no job names, unused past their retention"
        );
    }
    Ok(report)
}

/// Record `record` again if its bytes are still stored.
async fn put_back_record(
    coordinator: &Coordinator,
    record: muster_store::ArtifactRecord,
) -> Result<(), CollectionError> {
    if coordinator
        .blobs
        .exists(&record.id)
        .await
        .map_err(CollectionError::Blobs)?
    {
        coordinator
            .store
            .record_artifact(record)
            .await
            .map_err(CollectionError::Store)?;
    }
    Ok(())
}

/// One pass over every job that may be past its retention; answers how many were deleted. An
/// error is for the caller to report.
pub(crate) async fn prune_once(
    coordinator: &Coordinator,
    retention: Duration,
    pause_between_calls: Duration,
) -> Result<u64, StoreError> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let finished_before = coordinator
        .clock
        .now()
        .plus_millis(retention_ms.saturating_neg());
    let deleted = delete_finished_before(
        coordinator.store.as_ref(),
        finished_before,
        pause_between_calls,
        |count| coordinator.metrics.record_jobs_pruned(count),
    )
    .await?;
    if deleted > 0 {
        tracing::info!(
            deleted,
            retention = ?retention,
            "deleted finished jobs past their retention"
        );
    }
    Ok(deleted)
}

/// Delete every job that finished before `finished_before`, as retention does: store calls of
/// [`PRUNE_BATCH`] jobs with `pause_between_calls` between them; `on_deleted` hears each call's
/// count. Answers the total. Public for the benchmark, which measures what a pass costs.
pub async fn delete_finished_before(
    store: &dyn Store,
    finished_before: Timestamp,
    pause_between_calls: Duration,
    mut on_deleted: impl FnMut(u64),
) -> Result<u64, StoreError> {
    let mut deleted = 0;
    let mut resume = None;
    loop {
        let report = store
            .delete_finished_jobs(finished_before, resume, PRUNE_BATCH)
            .await?;
        deleted += report.deleted;
        on_deleted(report.deleted);
        match report.resume {
            Some(next) => resume = Some(next),
            None => return Ok(deleted),
        }
        if !pause_between_calls.is_zero() {
            tokio::time::sleep(pause_between_calls).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{collect_interval, prune_interval};
    use std::time::Duration;

    #[test]
    fn passes_run_a_tenth_of_the_retention_apart_within_a_second_and_a_minute() {
        let day = Duration::from_secs(86_400);
        assert_eq!(prune_interval(30 * day), Duration::from_secs(60));
        assert_eq!(
            prune_interval(Duration::from_secs(300)),
            Duration::from_secs(30)
        );
        assert_eq!(
            prune_interval(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn collections_run_a_tenth_of_the_artifact_retention_apart_within_a_minute_and_an_hour() {
        let hour = Duration::from_secs(3600);
        assert_eq!(collect_interval(24 * hour), hour);
        assert_eq!(collect_interval(2 * hour), Duration::from_secs(720));
        assert_eq!(collect_interval(hour), Duration::from_secs(360));
        assert_eq!(
            collect_interval(Duration::from_secs(100)),
            Duration::from_secs(60)
        );
    }
}
