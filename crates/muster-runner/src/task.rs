//! What a running task shares between its runner's ports and the daemon: its cancellation, lease
//! and shutdown state, its progress, its pending log lines, its result and recorded outputs; and
//! the driver that ships the lines and keeps the lease alive.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use muster_core::{LogLevel, NewLogEntry, Progress};
use muster_runner_sdk::LeaseEnvelope;
use rand::Rng;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::transport::{ClaimedTask, HeldLease, JobAck, Transport, TransportError};

/// Log lines shipped per call at most, and how long a line may wait to be shipped.
const LOG_BATCH: usize = 500;
const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Default)]
struct Shared {
    progress: Option<Progress>,
    progress_sent: bool,
    pending_logs: Vec<NewLogEntry>,
    next_seq: u64,
    result: Option<Value>,
    outputs: BTreeMap<String, String>,
}

/// One leased task being run.
pub(crate) struct TaskState {
    pub(crate) lease: LeaseEnvelope,
    pub(crate) held: HeldLease,
    ttl: Duration,
    cancelled: CancellationToken,
    lease_lost: CancellationToken,
    /// Stopped because this runner is shutting down, not because anyone cancelled the job.
    interrupted: AtomicBool,
    shared: Mutex<Shared>,
}

/// Every value behind the lock is plain data consistent between statements, so a panic elsewhere
/// cannot leave it half-written; losing a task's logs to a poisoned lock would be worse.
fn lock(mutex: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TaskState {
    pub(crate) fn new(claimed: ClaimedTask) -> Arc<TaskState> {
        Arc::new(TaskState {
            held: claimed.held(),
            ttl: claimed.ttl,
            lease: claimed.lease,
            cancelled: CancellationToken::new(),
            lease_lost: CancellationToken::new(),
            interrupted: AtomicBool::new(false),
            shared: Mutex::new(Shared::default()),
        })
    }

    pub(crate) fn id(&self) -> Uuid {
        self.held.job
    }

    pub(crate) fn kind(&self) -> &str {
        &self.lease.task.capability
    }

    /// Fires when the work must stop: cancelled by a user, timed out, its lease lost, or this
    /// runner shutting down.
    pub(crate) fn cancelled(&self) -> &CancellationToken {
        &self.cancelled
    }

    /// Whether the lease is gone (nothing about the job may be reported any more).
    pub(crate) fn lease_lost(&self) -> bool {
        self.lease_lost.is_cancelled()
    }

    pub(crate) fn cancel(&self) {
        self.cancelled.cancel();
    }

    /// Stop the work because the runner is shutting down; the attempt is reported as a
    /// retryable failure, not as a cancel, so the job runs again elsewhere.
    pub(crate) fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        self.cancelled.cancel();
    }

    /// Whether the work was stopped by this runner's shutdown.
    pub(crate) fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    pub(crate) fn lose_lease(&self) {
        self.lease_lost.cancel();
        self.cancelled.cancel();
    }

    /// Apply what an answer about this job says: a cancel stops the work, a lost lease stops it
    /// and silences the task.
    pub(crate) fn heed<T>(&self, answer: &Result<T, TransportError>)
    where
        T: CarriesCancel,
    {
        match answer {
            Ok(answer) if answer.cancel() => self.cancel(),
            Ok(_) => {}
            Err(error) if error.is_lease_lost() => {
                if !self.lease_lost() {
                    tracing::warn!(job = %self.id(), "the lease was lost; stopping the job");
                }
                self.lose_lease();
            }
            Err(_) => {}
        }
    }

    fn push_log(&self, level: LogLevel, message: String, metadata: Option<Value>) {
        let mut shared = lock(&self.shared);
        let seq = shared.next_seq;
        shared.next_seq += 1;
        shared.pending_logs.push(NewLogEntry {
            seq: Some(seq),
            level,
            message,
            metadata,
        });
    }

    /// Queue a log line; it is shipped within a fraction of a second, in order, exactly once.
    pub(crate) fn log(&self, level: LogLevel, message: impl Into<String>) {
        self.push_log(level, message.into(), None);
    }

    /// Queue a structured event as an `info` log line with the event as metadata; its
    /// `message` member, when a string, is the line's text.
    pub(crate) fn log_event(&self, event: Value) {
        let message = event
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| event.to_string());
        self.push_log(LogLevel::Info, message, Some(event));
    }

    /// Record progress (0–100); it travels with the next job heartbeat.
    pub(crate) fn set_progress(&self, percent: f64, message: Option<String>) {
        let mut shared = lock(&self.shared);
        shared.progress = Some(Progress {
            percent: percent.clamp(0.0, 100.0),
            message,
        });
        shared.progress_sent = false;
    }

    /// The percent last reported, for progress that comes without one.
    pub(crate) fn last_percent(&self) -> f64 {
        lock(&self.shared)
            .progress
            .as_ref()
            .map_or(0.0, |progress| progress.percent)
    }

    pub(crate) fn set_result(&self, value: Value) {
        lock(&self.shared).result = Some(value);
    }

    pub(crate) fn remember_outputs(&self, outputs: &BTreeMap<String, String>) {
        lock(&self.shared)
            .outputs
            .extend(outputs.iter().map(|(name, id)| (name.clone(), id.clone())));
    }

    /// The job's result: what the runner set, with the outputs it recorded added as `outputs`
    /// to an object (or alone when it set nothing).
    pub(crate) fn result(&self) -> Value {
        let shared = lock(&self.shared);
        let outputs = serde_json::to_value(&shared.outputs).unwrap_or_default();
        match shared.result.clone() {
            None => serde_json::json!({ "outputs": outputs }),
            Some(Value::Object(mut fields)) => {
                fields.entry("outputs").or_insert(outputs);
                Value::Object(fields)
            }
            Some(other) => other,
        }
    }

    fn take_logs(&self) -> Vec<NewLogEntry> {
        let mut shared = lock(&self.shared);
        let count = shared.pending_logs.len().min(LOG_BATCH);
        shared.pending_logs.drain(..count).collect()
    }

    fn put_back_logs(&self, mut entries: Vec<NewLogEntry>) {
        let mut shared = lock(&self.shared);
        entries.append(&mut shared.pending_logs);
        shared.pending_logs = entries;
    }

    fn has_logs(&self) -> bool {
        !lock(&self.shared).pending_logs.is_empty()
    }

    fn progress_to_send(&self) -> Option<Progress> {
        let shared = lock(&self.shared);
        match (&shared.progress, shared.progress_sent) {
            (Some(progress), false) => Some(progress.clone()),
            _ => None,
        }
    }

    /// Only when `sent` is still the latest: progress reported while the heartbeat was in
    /// flight goes out with the next one.
    fn mark_progress_sent(&self, sent: &Progress) {
        let mut shared = lock(&self.shared);
        if shared.progress.as_ref() == Some(sent) {
            shared.progress_sent = true;
        }
    }

    /// Ship every queued log line now; gives up when the lease is lost.
    pub(crate) async fn flush_logs(&self, transport: &dyn Transport) {
        while self.has_logs() && !self.lease_lost() {
            let entries = self.take_logs();
            let answer = transport.append_logs(self.held, &entries).await;
            self.heed(&answer);
            match answer {
                Ok(_) => {}
                Err(error) if error.is_lease_lost() => {}
                Err(error) if error.is_transient() => {
                    tracing::warn!(job = %self.id(), %error, "failed to ship log lines; will retry");
                    self.put_back_logs(entries);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => {
                    tracing::error!(job = %self.id(), %error, "the coordinator refused log lines; dropping them");
                }
            }
        }
    }
}

/// Answers that may carry a cancel.
pub(crate) trait CarriesCancel {
    fn cancel(&self) -> bool;
}

impl CarriesCancel for JobAck {
    fn cancel(&self) -> bool {
        self.cancel
    }
}

impl CarriesCancel for crate::transport::LeaseRenewal {
    fn cancel(&self) -> bool {
        self.cancel
    }
}

/// The next job heartbeat falls at a random point between 25 % and 35 % of the lease TTL, so a
/// fleet's heartbeats spread out and two can be lost before the lease is.
fn heartbeat_delay(ttl: Duration) -> Duration {
    let fraction = rand::rng().random_range(0.25..0.35);
    ttl.mul_f64(fraction).max(Duration::from_millis(100))
}

/// Keep the lease alive and ship logs until `done` fires or the lease is lost.
pub(crate) async fn keep_lease(
    task: Arc<TaskState>,
    transport: Arc<dyn Transport>,
    done: CancellationToken,
) {
    let mut next_heartbeat = tokio::time::Instant::now() + heartbeat_delay(task.ttl);
    loop {
        let flush_at = tokio::time::Instant::now() + LOG_FLUSH_INTERVAL;
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep_until(flush_at.min(next_heartbeat)) => {}
        }
        if task.lease_lost() {
            return;
        }
        task.flush_logs(transport.as_ref()).await;
        let progress = task.progress_to_send();
        if tokio::time::Instant::now() < next_heartbeat && progress.is_none() {
            continue;
        }
        let answer = transport.job_heartbeat(task.held, progress.as_ref()).await;
        task.heed(&answer);
        match answer {
            Ok(renewal) => {
                if let Some(sent) = &progress {
                    task.mark_progress_sent(sent);
                }
                next_heartbeat = tokio::time::Instant::now() + heartbeat_delay(renewal.ttl);
            }
            Err(error) if error.is_lease_lost() => return,
            Err(error) => {
                // Keep working: the lease may still hold, and the next try comes sooner.
                tracing::warn!(job = %task.id(), %error, "job heartbeat failed; will retry");
                next_heartbeat = tokio::time::Instant::now() + Duration::from_millis(1000);
            }
        }
    }
}
