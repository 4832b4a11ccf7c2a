//! What every request handler shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muster_core::{Clock, JobId, RunnerSnapshot, runner_status};
use muster_store::blobs::BlobStore;
use muster_store::{PageRequest, Store};
use tokio::sync::watch;

use crate::auth::Auth;
use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// How stale the runner view behind `pending_reason` may be.
const RUNNER_VIEW_MAX_AGE: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Artifact bytes; the store holds only which artifacts jobs name.
    pub blobs: Arc<dyn BlobStore>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<ServerConfig>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    pub runner_view: Arc<RunnerView>,
    /// Jobs whose log or state changed; live log streams wake on it.
    pub job_changes: Arc<JobChanges>,
    /// Cancelled when the coordinator stops; long polls and live streams end on it.
    pub shutdown: tokio_util::sync::CancellationToken,
    pub openapi_json: Arc<String>,
    pub draining_runners: Arc<DrainingRunners>,
    pub finished_counts: Arc<FinishedCounts>,
    /// This coordinator's artifact uploads in progress, which the quotas count beside the store.
    pub(crate) uploads_in_flight: Arc<crate::quota::UploadsInFlight>,
}

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
pub struct FinishedCounts {
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

/// Who is watching which job (live log streams), and the signal that wakes them when the job's
/// log or state changed. Only watched jobs have an entry, so a change nobody watches costs one
/// map lookup; a stream waits for its job's signal and reads nothing until it moves.
#[derive(Default)]
pub struct JobChanges {
    watched: Mutex<HashMap<JobId, watch::Sender<u64>>>,
}

/// One watcher of one job; stops watching when dropped.
pub struct JobWatch {
    job: JobId,
    receiver: Option<watch::Receiver<u64>>,
    changes: Arc<JobChanges>,
}

impl JobChanges {
    /// Watch `job` from now on.
    pub fn watch(self: &Arc<Self>, job: JobId) -> JobWatch {
        let receiver = match self.watched.lock() {
            Ok(mut watched) => Some(
                watched
                    .entry(job)
                    .or_insert_with(|| watch::channel(0).0)
                    .subscribe(),
            ),
            Err(_) => None,
        };
        JobWatch {
            job,
            receiver,
            changes: Arc::clone(self),
        }
    }

    /// `job`'s log or state changed: wake whoever watches it.
    pub fn changed(&self, job: JobId) {
        if let Ok(watched) = self.watched.lock()
            && let Some(sender) = watched.get(&job)
        {
            sender.send_modify(|version| *version = version.wrapping_add(1));
        }
    }

    /// The jobs someone watches now.
    pub fn watched_jobs(&self) -> Vec<JobId> {
        self.watched
            .lock()
            .map(|watched| watched.keys().copied().collect())
            .unwrap_or_default()
    }
}

impl JobWatch {
    /// Note that everything changed so far has been seen: [`JobWatch::changed`] then waits
    /// for a change made after this call. Call it before reading what is watched.
    pub fn mark_seen(&mut self) {
        if let Some(receiver) = self.receiver.as_mut() {
            receiver.borrow_and_update();
        }
    }

    /// Wait for a change not yet marked seen (at once if one came since [`JobWatch::mark_seen`]).
    pub async fn changed(&mut self) {
        match self.receiver.as_mut() {
            Some(receiver) => {
                if receiver.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        drop(self.receiver.take());
        if let Ok(mut watched) = self.changes.watched.lock()
            && watched
                .get(&self.job)
                .is_some_and(|sender| sender.receiver_count() == 0)
        {
            watched.remove(&self.job);
        }
    }
}

/// How often a coordinator sharing its database looks for log and state changes that other
/// coordinators made to the jobs its streams watch: one query for all of them.
pub(crate) const SHARED_STORE_WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// With a store other coordinators also write, wake the watchers of jobs whose log grew or that
/// finished elsewhere; runs until `shutdown`. (Changes made here wake them at once.)
pub(crate) async fn watch_shared_store(
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut known: HashMap<JobId, muster_store::LogPosition> = HashMap::new();
    let mut interval = tokio::time::interval(SHARED_STORE_WATCH_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let watched = state.job_changes.watched_jobs();
        known.retain(|job, _| watched.contains(job));
        if watched.is_empty() {
            continue;
        }
        match state.store.log_positions(watched).await {
            Ok(positions) => {
                for position in positions {
                    if known.insert(position.job, position) != Some(position) {
                        state.job_changes.changed(position.job);
                    }
                }
            }
            Err(error) => {
                tracing::debug!(%error, "could not look for log changes made by other coordinators")
            }
        }
    }
}

/// Runners whose last heartbeat said `draining`, as this coordinator heard it: their long polls
/// end at once instead of handing them work they would not start.
#[derive(Default)]
pub struct DrainingRunners {
    runners: Mutex<std::collections::HashSet<muster_core::RunnerId>>,
    changed: tokio::sync::Notify,
}

impl DrainingRunners {
    pub(crate) fn set(&self, runner: muster_core::RunnerId, draining: bool) {
        let changed = match self.runners.lock() {
            Ok(mut runners) if draining => runners.insert(runner),
            Ok(mut runners) => runners.remove(&runner),
            Err(_) => false,
        };
        if changed && draining {
            self.changed.notify_waiters();
        }
    }

    pub(crate) fn contains(&self, runner: muster_core::RunnerId) -> bool {
        self.runners
            .lock()
            .map(|runners| runners.contains(&runner))
            .unwrap_or(false)
    }

    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// A recent snapshot of every runner, for explaining why pending jobs wait.
#[derive(Default)]
pub struct RunnerView {
    snapshot: Mutex<Option<(Instant, Arc<Vec<RunnerSnapshot>>)>>,
}

impl RunnerView {
    pub(crate) async fn snapshots(&self, state: &AppState) -> Arc<Vec<RunnerSnapshot>> {
        if let Ok(guard) = self.snapshot.lock()
            && let Some((taken, snapshot)) = guard.as_ref()
            && taken.elapsed() < RUNNER_VIEW_MAX_AGE
        {
            return Arc::clone(snapshot);
        }
        let now = state.clock.now();
        let offline_after = state.config.runner_offline_after_ms();
        let mut snapshots = Vec::new();
        let mut cursor = None;
        loop {
            let page = match state
                .store
                .list_runners_for_matching(PageRequest {
                    limit: 1000,
                    cursor,
                })
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, "failed to list runners for pending reasons; reasons may be stale");
                    break;
                }
            };
            snapshots.extend(page.items.into_iter().map(|runner| RunnerSnapshot {
                status: runner_status(runner.last_seen_at, runner.draining, offline_after, now),
                kinds: runner.kinds,
                offer: {
                    let mut offer = runner.offer;
                    offer.labels = runner.labels;
                    offer
                },
            }));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let snapshot = Arc::new(snapshots);
        if let Ok(mut guard) = self.snapshot.lock() {
            *guard = Some((Instant::now(), Arc::clone(&snapshot)));
        }
        snapshot
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
