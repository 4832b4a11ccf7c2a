//! Retention: jobs that finished longer ago than `--retain-finished-jobs` are deleted with their
//! logs and DAGs, so the database holds a bounded window of history instead of growing forever.
//! Every coordinator runs this; on PostgreSQL one of them prunes at a time.

use std::time::Duration;

use muster_core::Timestamp;
use muster_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

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

pub(crate) async fn run(state: AppState, retention: Duration, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(prune_interval(retention));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_healthy = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = prune_once(&state, retention, PAUSE_BETWEEN_CALLS) => outcome,
        };
        match (&outcome, was_healthy) {
            (Err(error), true) => tracing::warn!(
                %error,
                "deleting finished jobs past their retention fails; it is tried again every {:?}",
                prune_interval(retention)
            ),
            (Ok(_), false) => tracing::info!("retention reaches the store again"),
            _ => {}
        }
        was_healthy = outcome.is_ok();
    }
}

/// One pass over every job that may be past its retention; answers how many were deleted. An
/// error is for the caller to report.
pub(crate) async fn prune_once(
    state: &AppState,
    retention: Duration,
    pause_between_calls: Duration,
) -> Result<u64, StoreError> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let finished_before = state.clock.now().plus_millis(retention_ms.saturating_neg());
    let deleted = delete_finished_before(
        state.store.as_ref(),
        finished_before,
        pause_between_calls,
        |count| state.metrics.record_jobs_pruned(count),
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
    use super::prune_interval;
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
}
