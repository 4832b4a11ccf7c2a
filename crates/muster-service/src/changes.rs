//! Change signals: who watches which job (live log streams) and the signal that wakes them, the
//! watcher of changes other coordinators make through a shared database, and the runners this
//! coordinator heard are draining.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_core::JobId;
use tokio::sync::watch;

use crate::Coordinator;

/// Who is watching which job (live log streams), and the signal that wakes them when the job's
/// log or state changed. Only watched jobs have an entry, so a change nobody watches costs one
/// map lookup; a stream waits for its job's signal and reads nothing until it moves.
#[derive(Default)]
pub(crate) struct JobChanges {
    watched: Mutex<HashMap<JobId, watch::Sender<u64>>>,
    /// How many jobs are watched, readable without the lock: a change when nobody watches
    /// anything (the common case on the hot path) costs two atomic loads (this and the fleet's).
    watched_count: AtomicUsize,
    /// That some job changed or was submitted, for views of the whole fleet.
    pub(crate) fleet: FleetChanges,
}

/// A signal that some job changed or was submitted, for views of the whole fleet (the
/// overview's counts). Sending it when nobody listens costs one atomic load.
pub(crate) struct FleetChanges {
    sender: watch::Sender<u64>,
}

impl Default for FleetChanges {
    fn default() -> FleetChanges {
        FleetChanges {
            sender: watch::channel(0).0,
        }
    }
}

impl FleetChanges {
    pub(crate) fn changed(&self) {
        if self.sender.receiver_count() > 0 {
            self.sender
                .send_modify(|version| *version = version.wrapping_add(1));
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }
}

/// One watcher of one job; stops watching when dropped.
pub struct JobWatch {
    job: JobId,
    receiver: Option<watch::Receiver<u64>>,
    changes: Arc<JobChanges>,
}

impl JobChanges {
    /// Watch `job` from now on.
    pub(crate) fn watch(self: &Arc<Self>, job: JobId) -> JobWatch {
        let receiver = match self.watched.lock() {
            Ok(mut watched) => Some({
                let receiver = watched
                    .entry(job)
                    .or_insert_with(|| watch::channel(0).0)
                    .subscribe();
                self.watched_count.store(watched.len(), Ordering::Release);
                receiver
            }),
            Err(_) => None,
        };
        JobWatch {
            job,
            receiver,
            changes: Arc::clone(self),
        }
    }

    /// `job`'s log or state changed: wake whoever watches it.
    pub(crate) fn changed(&self, job: JobId) {
        self.changed_many(std::iter::once(job));
    }

    /// These jobs' logs or states changed: wake whoever watches them, taking the lock once.
    pub(crate) fn changed_many(&self, jobs: impl IntoIterator<Item = JobId>) {
        self.fleet.changed();
        if self.watched_count.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Ok(watched) = self.watched.lock() {
            for job in jobs {
                if let Some(sender) = watched.get(&job) {
                    sender.send_modify(|version| *version = version.wrapping_add(1));
                }
            }
        }
    }

    /// The jobs someone watches now.
    pub(crate) fn watched_jobs(&self) -> Vec<JobId> {
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
            self.changes
                .watched_count
                .store(watched.len(), Ordering::Release);
        }
    }
}

/// How often a coordinator sharing its database looks for log and state changes that other
/// coordinators made to the jobs its streams watch: one query for all of them.
pub(crate) const SHARED_STORE_WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// With a store other coordinators also write, wake the watchers of jobs whose log grew or that
/// finished elsewhere; runs until the coordinator stops. (Changes made here wake them at once.)
pub(crate) async fn watch_shared_store(coordinator: Coordinator) {
    let mut known: HashMap<JobId, muster_store::LogPosition> = HashMap::new();
    let mut interval = tokio::time::interval(SHARED_STORE_WATCH_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = coordinator.shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let watched = coordinator.job_changes.watched_jobs();
        known.retain(|job, _| watched.contains(job));
        if watched.is_empty() {
            continue;
        }
        match coordinator.store.log_positions(watched).await {
            Ok(positions) => {
                for position in positions {
                    if known.insert(position.job, position) != Some(position) {
                        coordinator.job_changes.changed(position.job);
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
pub(crate) struct DrainingRunners {
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
