//! The reaper: applies passed deadlines (lease expiry, attempt timeout, cancel grace) so no job
//! stays claimed or running forever.

use muster_core::FailureReason;

use crate::Coordinator;

/// Jobs handled per store call; a pass repeats while calls come back full.
const REAP_BATCH: u32 = 500;

pub(crate) async fn run(coordinator: Coordinator) {
    let mut interval = tokio::time::interval(coordinator.config.reap_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_healthy = true;
    loop {
        tokio::select! {
            _ = coordinator.shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let outcome = reap_once(&coordinator).await;
        // One line when passes start failing (the store is down) and one when they work again,
        // not one per tick.
        match (&outcome, was_healthy) {
            (Err(error), true) => tracing::warn!(
                %error,
                "reaping fails; passed deadlines will be applied once the store answers again"
            ),
            (Ok(()), false) => tracing::info!("the reaper reaches the store again"),
            _ => {}
        }
        was_healthy = outcome.is_ok();
    }
}

/// One pass; an error is for the caller to report (the next tick tries again).
pub(crate) async fn reap_once(coordinator: &Coordinator) -> Result<(), muster_store::StoreError> {
    loop {
        match coordinator
            .store
            .reap(coordinator.clock.now(), REAP_BATCH)
            .await
        {
            Ok(report) => {
                coordinator.metrics.record_failure(
                    FailureReason::LeaseExpired,
                    u64::from(report.lease_expired),
                    coordinator.clock.now(),
                );
                coordinator.metrics.record_failure(
                    FailureReason::TimedOut,
                    u64::from(report.timed_out),
                    coordinator.clock.now(),
                );
                coordinator.metrics.record_failure(
                    FailureReason::Cancelled,
                    u64::from(report.cancels_finished),
                    coordinator.clock.now(),
                );
                for job in &report.changed_jobs {
                    coordinator.job_changes.changed(*job);
                }
                if report.total() > 0 {
                    tracing::info!(
                        lease_expired = report.lease_expired,
                        timed_out = report.timed_out,
                        cancels_finished = report.cancels_finished,
                        "reaped jobs past their deadlines"
                    );
                }
                if report.total() < REAP_BATCH {
                    return Ok(());
                }
            }
            Err(error) => return Err(error),
        }
    }
}
