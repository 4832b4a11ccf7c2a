//! Shared live feeds: however many streams follow one job's log, one task reads the new entries
//! from the store after each change and hands them to all of them, so a hundred open dashboard
//! tabs on a busy job cost the store what one does.
//!
//! A follower joins under the feed's lock, learning the feed's position `p` (the `seq` the next
//! entry it hands out will have at least) and subscribing at the same instant: everything before
//! `p` it reads from the store itself (once, its backlog), everything from `p` on it receives.
//! A follower that falls too far behind (the channel's capacity) joins again the same way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use muster_core::{JobId, LogEntry};
use tokio::sync::{broadcast, watch};

use crate::Coordinator;
use crate::changes::JobWatch;

/// Entries a follower may fall behind by before it must join again (reading the gap itself).
const FEED_CAPACITY: usize = 4_096;

/// How often an idle feed looks whether anyone still follows it (reading nothing).
const FEED_IDLE_CHECK: Duration = Duration::from_secs(1);

/// The most entries one read of the feed takes from the store.
const FEED_READ_LIMIT: u32 = 1_000;

/// What a feed hands its followers.
#[derive(Debug, Clone)]
pub(crate) enum FeedEvent {
    Entry(Arc<LogEntry>),
    /// The job is finished and its log drained: nothing follows.
    Finished,
    /// The store could not be read: the feed stopped.
    Failed(String),
}

#[derive(Debug, Default)]
struct FeedState {
    /// The `seq` the next entry handed out has at least; `None` until the feed read where the
    /// log stands.
    position: Option<u64>,
    finished: bool,
    /// The task stopped (no followers, an error, or the coordinator stopping): join another.
    closed: bool,
}

pub(crate) struct LogFeed {
    state: Mutex<FeedState>,
    sender: broadcast::Sender<FeedEvent>,
    ready: watch::Sender<bool>,
}

/// A follower's place in a feed: the receiver and the position it joined at.
pub(crate) struct Joined {
    pub(crate) receiver: broadcast::Receiver<FeedEvent>,
    /// Entries before this are the follower's to read from the store.
    pub(crate) position: u64,
    pub(crate) finished: bool,
}

/// The live log feeds of this coordinator, one per followed job.
#[derive(Default)]
pub(crate) struct LogFeeds {
    feeds: Mutex<HashMap<JobId, Weak<LogFeed>>>,
}

impl LogFeed {
    /// Subscribe at the feed's current position, waiting for the feed to learn it first.
    /// `None` when the feed closed meanwhile.
    async fn join(self: &Arc<Self>) -> Option<Joined> {
        let mut ready = self.ready.subscribe();
        if ready.wait_for(|ready| *ready).await.is_err() {
            return None;
        }
        let state = self.state.lock().ok()?;
        // A finished feed is still good to join: its followers read the rest from the store.
        if state.closed && !state.finished {
            return None;
        }
        Some(Joined {
            receiver: self.sender.subscribe(),
            position: state.position.unwrap_or(0),
            finished: state.finished,
        })
    }
}

impl LogFeeds {
    /// Follow `job`'s log: join its feed, starting one when there is none.
    pub(crate) async fn follow(&self, coordinator: &Coordinator, job: JobId) -> Option<Joined> {
        // A feed found closed is replaced; a second closed one means the coordinator stops.
        for _ in 0..2 {
            let feed = self.feed_of(coordinator, job)?;
            if let Some(joined) = feed.join().await {
                return Some(joined);
            }
        }
        None
    }

    fn feed_of(&self, coordinator: &Coordinator, job: JobId) -> Option<Arc<LogFeed>> {
        let mut feeds = self.feeds.lock().ok()?;
        if let Some(feed) = feeds.get(&job).and_then(Weak::upgrade)
            && feed
                .state
                .lock()
                .is_ok_and(|state| !state.closed || state.finished)
        {
            return Some(feed);
        }
        let (sender, _) = broadcast::channel(FEED_CAPACITY);
        let feed = Arc::new(LogFeed {
            state: Mutex::new(FeedState::default()),
            sender,
            ready: watch::channel(false).0,
        });
        feeds.insert(job, Arc::downgrade(&feed));
        // Watching starts before the first read, so nothing written in between is missed.
        let mut watch = coordinator.job_changes.watch(job);
        watch.mark_seen();
        tokio::spawn(run_feed(coordinator.clone(), job, Arc::clone(&feed), watch));
        Some(feed)
    }

    /// Forget `job`'s feed if it is `feed` and nobody follows it; answers whether it was
    /// closed (the caller then stops it).
    fn close_if_unfollowed(&self, job: JobId, feed: &Arc<LogFeed>) -> bool {
        let Ok(mut feeds) = self.feeds.lock() else {
            return true;
        };
        let Ok(mut state) = feed.state.lock() else {
            return true;
        };
        if feed.sender.receiver_count() > 0 {
            return false;
        }
        state.closed = true;
        if feeds
            .get(&job)
            .is_some_and(|known| std::ptr::eq(known.as_ptr(), Arc::as_ptr(feed)))
        {
            feeds.remove(&job);
        }
        true
    }

    fn close(&self, job: JobId, feed: &Arc<LogFeed>, last: FeedEvent) {
        if let Ok(mut feeds) = self.feeds.lock() {
            if let Ok(mut state) = feed.state.lock() {
                state.closed = true;
                if matches!(last, FeedEvent::Finished) {
                    state.finished = true;
                }
                let _ = feed.sender.send(last);
            }
            if feeds
                .get(&job)
                .is_some_and(|known| std::ptr::eq(known.as_ptr(), Arc::as_ptr(feed)))
            {
                feeds.remove(&job);
            }
        }
        feed.ready.send_replace(true);
    }
}

/// One feed's task: learn where the log stands, then after each change read what is new and
/// hand it out, until the job is finished, nobody follows, or the coordinator stops.
async fn run_feed(coordinator: Coordinator, job: JobId, feed: Arc<LogFeed>, mut watch: JobWatch) {
    let feeds = Arc::clone(&coordinator.log_feeds);
    let start = match coordinator.store.log_positions(vec![job]).await {
        Ok(positions) => positions.into_iter().find(|position| position.job == job),
        Err(error) => {
            tracing::warn!(%error, %job, "failed to read where a followed log stands");
            feeds.close(job, &feed, FeedEvent::Failed(error.to_string()));
            return;
        }
    };
    let Some(start) = start else {
        // No such job (deleted meanwhile): nothing will come.
        feeds.close(job, &feed, FeedEvent::Finished);
        return;
    };
    let mut next = start.next_seq;
    if let Ok(mut state) = feed.state.lock() {
        state.position = Some(next);
    }
    if start.finished {
        // Its log will not grow: joiners read it all from the store.
        feeds.close(job, &feed, FeedEvent::Finished);
        return;
    }
    feed.ready.send_replace(true);
    // Whether more is waiting in the store: read on without waiting for another change.
    let mut more_waiting = false;
    loop {
        if !more_waiting {
            tokio::select! {
                _ = watch.changed() => {}
                _ = coordinator.shutdown.cancelled() => {
                    feeds.close(job, &feed, FeedEvent::Failed("the coordinator is stopping".into()));
                    return;
                }
                _ = tokio::time::sleep(FEED_IDLE_CHECK) => {
                    if feeds.close_if_unfollowed(job, &feed) {
                        return;
                    }
                    continue;
                }
            }
            watch.mark_seen();
        }
        let page = match coordinator
            .store
            .read_logs(job, next.checked_sub(1), FEED_READ_LIMIT)
            .await
        {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, %job, "failed to read a followed log; closing its feed");
                feeds.close(job, &feed, FeedEvent::Failed(error.to_string()));
                return;
            }
        };
        coordinator.metrics.record_feed_read();
        more_waiting = page.items.len() >= FEED_READ_LIMIT as usize;
        if let Ok(mut state) = feed.state.lock() {
            for entry in page.items {
                if entry.seq < next {
                    continue;
                }
                next = entry.seq + 1;
                let _ = feed.sender.send(FeedEvent::Entry(Arc::new(entry)));
            }
            next = next.max(page.next_seq);
            state.position = Some(next);
        }
        if page.job_finished && !more_waiting {
            feeds.close(job, &feed, FeedEvent::Finished);
            return;
        }
    }
}

/// What a job feed shows: the job as it is now, or why there is nothing more.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JobSnapshot {
    Job(Box<crate::jobs::JobView>),
    /// The job is gone (deleted by retention).
    Gone,
    Failed(String),
}

/// One job's shared feed: the latest snapshot, read once per change for every follower.
pub(crate) struct JobFeed {
    sender: watch::Sender<Option<JobSnapshot>>,
}

/// The live job feeds of this coordinator, one per followed job.
#[derive(Default)]
pub(crate) struct JobFeeds {
    feeds: Mutex<HashMap<JobId, Weak<JobFeed>>>,
}

impl JobFeeds {
    /// Follow `job`: a receiver of its snapshots (the first one may take a read to come),
    /// and the feed it keeps alive.
    pub(crate) fn follow(
        &self,
        coordinator: &Coordinator,
        job: JobId,
    ) -> Option<(watch::Receiver<Option<JobSnapshot>>, Arc<JobFeed>)> {
        let mut feeds = self.feeds.lock().ok()?;
        if let Some(feed) = feeds.get(&job).and_then(Weak::upgrade) {
            return Some((feed.sender.subscribe(), feed));
        }
        let feed = Arc::new(JobFeed {
            sender: watch::channel(None).0,
        });
        feeds.insert(job, Arc::downgrade(&feed));
        let receiver = feed.sender.subscribe();
        // Watching starts before the first read, so nothing changed in between is missed.
        let mut watch = coordinator.job_changes.watch(job);
        watch.mark_seen();
        tokio::spawn(run_job_feed(
            coordinator.clone(),
            job,
            Arc::clone(&feed),
            watch,
        ));
        Some((receiver, feed))
    }

    /// Forget `job`'s feed if it is `feed`; when `only_unfollowed`, only if nobody follows it.
    /// Answers whether it was forgotten.
    fn forget(&self, job: JobId, feed: &Arc<JobFeed>, only_unfollowed: bool) -> bool {
        let Ok(mut feeds) = self.feeds.lock() else {
            return true;
        };
        if only_unfollowed && feed.sender.receiver_count() > 0 {
            return false;
        }
        if feeds
            .get(&job)
            .is_some_and(|known| std::ptr::eq(known.as_ptr(), Arc::as_ptr(feed)))
        {
            feeds.remove(&job);
        }
        true
    }
}

/// How long a job feed waits after a change before reading the job, so that a burst of changes
/// (a runner shipping log lines) costs one read, not one per change.
const JOB_FEED_COALESCE: Duration = Duration::from_millis(25);

async fn run_job_feed(
    coordinator: Coordinator,
    job: JobId,
    feed: Arc<JobFeed>,
    mut watch: JobWatch,
) {
    let feeds = Arc::clone(&coordinator.job_feeds);
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = watch.changed() => {}
                _ = coordinator.shutdown.cancelled() => {
                    feeds.forget(job, &feed, false);
                    feed.sender.send_replace(Some(JobSnapshot::Failed("the coordinator is stopping".into())));
                    return;
                }
                _ = tokio::time::sleep(FEED_IDLE_CHECK) => {
                    if feeds.forget(job, &feed, true) {
                        return;
                    }
                    continue;
                }
            }
            tokio::time::sleep(JOB_FEED_COALESCE).await;
            watch.mark_seen();
        }
        first = false;
        let snapshot = match coordinator.store.get_job(job).await {
            Ok(record) => JobSnapshot::Job(Box::new(coordinator.view(record).await)),
            Err(muster_store::StoreError::NotFound(_)) => JobSnapshot::Gone,
            Err(error) => {
                tracing::warn!(%error, %job, "failed to read a followed job; closing its feed");
                JobSnapshot::Failed(error.to_string())
            }
        };
        let ends = match &snapshot {
            JobSnapshot::Job(view) => view.job.state().is_terminal(),
            JobSnapshot::Gone | JobSnapshot::Failed(_) => true,
        };
        if ends {
            feeds.forget(job, &feed, false);
        }
        // A log line changes nothing a job shows: only what moved is sent on.
        feed.sender.send_if_modified(|current| {
            if current.as_ref() == Some(&snapshot) {
                false
            } else {
                *current = Some(snapshot);
                true
            }
        });
        if ends {
            return;
        }
    }
}
