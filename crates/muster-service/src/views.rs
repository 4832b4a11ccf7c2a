//! What the coordinator keeps in memory to answer quickly: a recent view of every runner (for
//! `pending_reason`) and the counts of finished jobs (for `/metrics`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muster_core::{RunnerId, RunnerSnapshot, RunnerStatus, runner_status};
use muster_store::{PageRequest, Store};

use crate::Coordinator;

/// How stale the runner view behind `pending_reason` may be.
const RUNNER_VIEW_MAX_AGE: Duration = Duration::from_secs(1);

/// How many times as long as counting finished jobs took, an answer is reused: counting then
/// costs at most about a twentieth of one core, however often `/metrics` is scraped.
const FINISHED_COUNTS_REUSE_FACTOR: u32 = 20;
/// Counts quicker than this are never reused: a small history is always counted afresh.
const FINISHED_COUNTS_SLOW: Duration = Duration::from_millis(10);

/// Whether finished-job counts that took `took` to get and are `age` old may still be served.
fn finished_counts_reusable(took: Duration, age: Duration) -> bool {
    took >= FINISHED_COUNTS_SLOW && age < took * FINISHED_COUNTS_REUSE_FACTOR
}

/// The counts of finished jobs `/metrics` reports. Counting them reads the whole history, so an
/// answer is reused for a while when it was slow to get: with a small history every scrape
/// counts afresh; with millions of finished jobs the counts may lag by up to twenty times the
/// time one count takes (counts quicker than 10 ms are never reused). Unfinished jobs are counted
/// on every scrape (that reads only the queue).
#[derive(Default)]
pub(crate) struct FinishedCounts {
    last: tokio::sync::Mutex<Option<FinishedCountsTaken>>,
}

struct FinishedCountsTaken {
    counts: Vec<muster_store::QueueDepth>,
    taken_at: Instant,
    took: Duration,
}

impl FinishedCounts {
    pub(crate) async fn get(
        &self,
        store: &dyn Store,
    ) -> Result<Vec<muster_store::QueueDepth>, muster_store::StoreError> {
        // Held while counting, so scrapes arriving meanwhile wait for this count, not start one.
        let mut last = self.last.lock().await;
        if let Some(taken) = last.as_ref()
            && finished_counts_reusable(taken.took, taken.taken_at.elapsed())
        {
            return Ok(taken.counts.clone());
        }
        let started = Instant::now();
        let counts = store.finished_job_counts().await?;
        *last = Some(FinishedCountsTaken {
            counts: counts.clone(),
            taken_at: Instant::now(),
            took: started.elapsed(),
        });
        Ok(counts)
    }
}

/// A recent snapshot of every runner, for explaining why pending jobs wait.
#[derive(Default)]
pub(crate) struct RunnerView {
    snapshot: Mutex<Option<TakenView>>,
}

/// One reading of every runner: what matching needs, and each runner's status by id.
struct TakenView {
    taken: Instant,
    snapshots: Arc<Vec<RunnerSnapshot>>,
    statuses: Arc<HashMap<RunnerId, RunnerStatus>>,
}

impl RunnerView {
    pub(crate) async fn snapshots(&self, coordinator: &Coordinator) -> Arc<Vec<RunnerSnapshot>> {
        self.read(coordinator, |view| Arc::clone(&view.snapshots))
            .await
    }

    /// Every runner's status by id, as recent as [`RunnerView::snapshots`].
    pub(crate) async fn statuses(
        &self,
        coordinator: &Coordinator,
    ) -> Arc<HashMap<RunnerId, RunnerStatus>> {
        self.read(coordinator, |view| Arc::clone(&view.statuses))
            .await
    }

    async fn read<T>(&self, coordinator: &Coordinator, part: impl Fn(&TakenView) -> T) -> T {
        if let Ok(guard) = self.snapshot.lock()
            && let Some(view) = guard.as_ref()
            && view.taken.elapsed() < RUNNER_VIEW_MAX_AGE
        {
            return part(view);
        }
        let now = coordinator.clock.now();
        let offline_after = coordinator.config.runner_offline_after_ms();
        let mut snapshots = Vec::new();
        let mut statuses = HashMap::new();
        let mut cursor = None;
        loop {
            let page = match coordinator
                .store
                .list_runners_for_matching(PageRequest {
                    limit: 1000,
                    cursor,
                })
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, "failed to list runners for pending reasons and workload staleness; they may be stale");
                    break;
                }
            };
            for runner in page.items {
                let status =
                    runner_status(runner.last_seen_at, runner.draining, offline_after, now);
                statuses.insert(runner.id, status);
                snapshots.push(RunnerSnapshot {
                    status,
                    kinds: runner.kinds,
                    offer: {
                        let mut offer = runner.offer;
                        offer.labels = runner.labels;
                        offer
                    },
                    organization_id: runner.organization_id,
                });
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let view = TakenView {
            taken: Instant::now(),
            snapshots: Arc::new(snapshots),
            statuses: Arc::new(statuses),
        };
        let answer = part(&view);
        if let Ok(mut guard) = self.snapshot.lock() {
            *guard = Some(view);
        }
        answer
    }

    /// Drop the snapshot so the next read sees a change just made.
    pub(crate) fn invalidate(&self) {
        if let Ok(mut guard) = self.snapshot.lock() {
            *guard = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::finished_counts_reusable;
    use std::time::Duration;

    #[test]
    fn slow_finished_counts_are_reused_for_twenty_times_their_cost_and_quick_ones_never() {
        let ms = Duration::from_millis;
        assert!(
            !finished_counts_reusable(ms(2), ms(0)),
            "quick: always afresh"
        );
        assert!(!finished_counts_reusable(ms(9), ms(1)));
        assert!(finished_counts_reusable(ms(10), ms(199)));
        assert!(!finished_counts_reusable(ms(10), ms(200)));
        assert!(finished_counts_reusable(ms(2_000), ms(39_000)));
        assert!(!finished_counts_reusable(ms(2_000), ms(40_000)));
    }
}
