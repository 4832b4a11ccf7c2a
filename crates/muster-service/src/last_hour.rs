//! The overview's last hour: completions and failed attempts by reason, across every
//! coordinator sharing the store. Each coordinator counts what ends here by the minute in memory
//! (the hot path only adds under a lock) and adds those counts to the store's per-minute totals
//! every few seconds and when it stops; the overview sums the store's last 60 minutes and what
//! this coordinator has not added yet. A coordinator that dies loses at most its last few
//! seconds of counts, never a job.

use std::time::Duration;

use muster_core::{FailureReason, Timestamp};
use muster_store::OutcomeCount;

use crate::metrics::{COMPLETED, MINUTE_MS, RecentOutcomes};
use crate::{Coordinator, ServiceError};

/// How often a coordinator adds what it counted to the store's totals: how stale another
/// coordinator's overview may be.
const ADD_INTERVAL: Duration = Duration::from_secs(5);
const WINDOW_MINUTES: i64 = 60;
/// The store keeps two hours of minutes: one hour shown, one of slack for clocks that disagree.
const KEPT_MINUTES: i64 = 120;

/// The last hour's totals, and where the window starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentTotals {
    pub completed: u64,
    /// Failed attempts by reason, in the order of [`FailureReason::ALL`].
    pub failed: [u64; 4],
    /// The start of the first minute counted, 59 minutes before the current one.
    pub since: Timestamp,
}

impl RecentTotals {
    fn add(&mut self, outcome: &str, count: u64) {
        if outcome == COMPLETED {
            self.completed = self.completed.saturating_add(count);
        } else if let Some(position) = FailureReason::ALL
            .iter()
            .position(|reason| reason.as_str() == outcome)
        {
            self.failed[position] = self.failed[position].saturating_add(count);
        }
    }
}

/// The counts taken from the metrics and being added to the store. Its lock is held while they
/// are added and while the totals are read, so a reader sees each count exactly once: in the
/// store, here, or still in the metrics.
#[derive(Default)]
pub(crate) struct OutcomesBeingAdded {
    counts: tokio::sync::Mutex<RecentOutcomes>,
}

fn minute_of(at: Timestamp) -> i64 {
    at.as_millis().div_euclid(MINUTE_MS)
}

impl Coordinator {
    /// Completions and failed attempts in the last 60 minutes (the current one included), as
    /// every coordinator of this store counted them.
    pub(crate) async fn last_hour(&self) -> Result<RecentTotals, ServiceError> {
        let first_minute = minute_of(self.clock.now()) - WINDOW_MINUTES + 1;
        let being_added = self.outcomes_being_added.counts.lock().await;
        let stored = self.store.outcome_totals(first_minute).await?;
        let mut totals = RecentTotals {
            completed: 0,
            failed: [0; 4],
            since: Timestamp(first_minute * MINUTE_MS),
        };
        for total in stored {
            totals.add(&total.outcome, total.count);
        }
        let not_yet_added = self.metrics.recent_outcomes();
        for ((minute, outcome), count) in being_added.counts.iter().chain(&not_yet_added.counts) {
            if *minute >= first_minute {
                totals.add(outcome, *count);
            }
        }
        Ok(totals)
    }

    /// Add what this coordinator counted to the store's totals now (the background task does it
    /// every few seconds). Counts the store refused are kept and added next time.
    pub async fn add_recent_outcomes_to_store(&self) -> Result<(), ServiceError> {
        let mut being_added = self.outcomes_being_added.counts.lock().await;
        being_added.absorb(self.metrics.take_recent_outcomes());
        if being_added.counts.is_empty() {
            return Ok(());
        }
        let counts = being_added
            .counts
            .iter()
            .map(|((minute, outcome), count)| OutcomeCount {
                minute: *minute,
                outcome: (*outcome).to_string(),
                count: *count,
            })
            .collect();
        let forget_before = minute_of(self.clock.now()) - KEPT_MINUTES;
        self.store.add_outcome_counts(counts, forget_before).await?;
        being_added.counts.clear();
        Ok(())
    }
}

/// Add the counts to the store every [`ADD_INTERVAL`] until shutdown, and once more then.
pub(crate) async fn run(coordinator: Coordinator) {
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(ADD_INTERVAL) => false,
            _ = coordinator.shutdown.cancelled() => true,
        };
        if let Err(error) = coordinator.add_recent_outcomes_to_store().await {
            tracing::warn!(%error, "failed to add the last minutes' job outcomes to the store; keeping them for the next try");
        }
        if stopping {
            return;
        }
    }
}
