//! What a running job shares with the daemon: its cancellation, its progress and its pending
//! log lines, and the driver task that ships them and keeps the lease alive.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use muster_api::{ClaimedJob, JobHeartbeat, LogLevel, NewLogEntry};
use muster_client::RunnerClient;
use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Runs the jobs of one kind. The answer of `run` becomes the job's result; an error fails the
/// attempt (retried while attempts remain).
#[async_trait]
pub trait JobHandler: Send + Sync {
    /// The job kind this handler runs.
    fn kind(&self) -> &str;

    /// Do the work. Watch [`JobContext::cancelled`]: once it fires, stop and return an error.
    async fn run(&self, job: &JobContext) -> anyhow::Result<serde_json::Value>;
}

/// Log lines shipped per call at most, and how long a line may wait to be shipped.
const LOG_BATCH: usize = 500;
const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Default)]
struct Shared {
    progress: Option<(f64, Option<String>)>,
    progress_sent: bool,
    pending_logs: Vec<NewLogEntry>,
    next_seq: u64,
}

/// A job being run, as its handler sees it.
pub struct JobContext {
    pub claimed: ClaimedJob,
    /// The runner's client, for artifacts and other calls a handler makes itself.
    pub client: RunnerClient,
    cancelled: CancellationToken,
    lease_lost: CancellationToken,
    /// Stopped because this runner is shutting down, not because anyone cancelled the job.
    interrupted: std::sync::atomic::AtomicBool,
    shared: Mutex<Shared>,
}

impl JobContext {
    pub(crate) fn new(claimed: ClaimedJob, client: RunnerClient) -> Arc<JobContext> {
        Arc::new(JobContext {
            claimed,
            client,
            cancelled: CancellationToken::new(),
            lease_lost: CancellationToken::new(),
            interrupted: std::sync::atomic::AtomicBool::new(false),
            shared: Mutex::new(Shared::default()),
        })
    }

    /// Fires when the job must stop: cancelled by a user, timed out, or its lease lost.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancelled
    }

    /// Whether the lease is gone (nothing about the job may be reported any more).
    pub fn lease_lost(&self) -> bool {
        self.lease_lost.is_cancelled()
    }

    pub(crate) fn cancel(&self) {
        self.cancelled.cancel();
    }

    /// Stop the work because the runner is shutting down; the attempt is reported as a
    /// retryable failure, not as a cancel, so the job runs again elsewhere.
    pub(crate) fn interrupt(&self) {
        self.interrupted
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cancelled.cancel();
    }

    /// Whether the work was stopped by this runner's shutdown.
    pub fn interrupted(&self) -> bool {
        self.interrupted.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn lose_lease(&self) {
        self.lease_lost.cancel();
        self.cancelled.cancel();
    }

    /// Queue a log line; it is shipped within a fraction of a second, in order, exactly once.
    pub fn log(&self, level: LogLevel, message: impl Into<String>) {
        if let Ok(mut shared) = self.shared.lock() {
            let seq = shared.next_seq;
            shared.next_seq += 1;
            shared.pending_logs.push(NewLogEntry {
                seq: Some(seq),
                level,
                message: message.into(),
                metadata: None,
            });
        }
    }

    /// Queue a structured event as an `info` log line with the event as metadata.
    pub fn log_event(&self, event: serde_json::Value) {
        if let Ok(mut shared) = self.shared.lock() {
            let seq = shared.next_seq;
            shared.next_seq += 1;
            let message = event
                .get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| event.to_string());
            shared.pending_logs.push(NewLogEntry {
                seq: Some(seq),
                level: LogLevel::Info,
                message,
                metadata: Some(event),
            });
        }
    }

    /// Record progress (0–100); it travels with the next job heartbeat.
    pub fn set_progress(&self, percent: f64, message: Option<String>) {
        if let Ok(mut shared) = self.shared.lock() {
            shared.progress = Some((percent.clamp(0.0, 100.0), message));
            shared.progress_sent = false;
        }
    }

    fn take_logs(&self) -> Vec<NewLogEntry> {
        match self.shared.lock() {
            Ok(mut shared) => {
                let count = shared.pending_logs.len().min(LOG_BATCH);
                shared.pending_logs.drain(..count).collect()
            }
            Err(_) => Vec::new(),
        }
    }

    fn put_back_logs(&self, mut entries: Vec<NewLogEntry>) {
        if let Ok(mut shared) = self.shared.lock() {
            entries.append(&mut shared.pending_logs);
            shared.pending_logs = entries;
        }
    }

    fn has_logs(&self) -> bool {
        self.shared
            .lock()
            .map(|shared| !shared.pending_logs.is_empty())
            .unwrap_or(false)
    }

    /// Upload every file under `directory` and record each as an output named by its path
    /// relative to `directory`; answers the outputs recorded.
    pub async fn upload_outputs(
        &self,
        directory: &std::path::Path,
    ) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
        use anyhow::Context;
        let mut outputs = std::collections::BTreeMap::new();
        let mut pending = vec![directory.to_path_buf()];
        while let Some(folder) = pending.pop() {
            let entries =
                std::fs::read_dir(&folder).with_context(|| format!("list {}", folder.display()))?;
            for entry in entries {
                let path = entry
                    .with_context(|| format!("list {}", folder.display()))?
                    .path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let name = path
                    .strip_prefix(directory)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                let artifact = self
                    .client
                    .upload_artifact_file(&path)
                    .await
                    .with_context(|| format!("upload output {name}"))?;
                outputs.insert(name, artifact.id);
            }
        }
        if !outputs.is_empty() {
            self.client
                .record_outputs(self.claimed.id, self.epoch(), outputs.clone())
                .await
                .context("record the job's outputs")?;
        }
        Ok(outputs)
    }

    fn progress_to_send(&self) -> Option<serde_json::Value> {
        let shared = self.shared.lock().ok()?;
        match (&shared.progress, shared.progress_sent) {
            (Some((percent, message)), false) => {
                Some(serde_json::json!({"progress": percent, "message": message}))
            }
            _ => None,
        }
    }

    fn mark_progress_sent(&self) {
        if let Ok(mut shared) = self.shared.lock() {
            shared.progress_sent = true;
        }
    }

    /// The lease epoch to send with job-scoped calls.
    pub fn epoch(&self) -> Option<u64> {
        Some(self.claimed.lease.epoch)
    }

    /// Ship every queued log line now; gives up when the lease is lost.
    pub(crate) async fn flush_logs(&self, client: &RunnerClient) {
        while self.has_logs() && !self.lease_lost() {
            let entries = self.take_logs();
            match client
                .append_log(self.claimed.id, self.epoch(), entries.clone())
                .await
            {
                Ok(answer) => {
                    if answer.cancel {
                        self.cancel();
                    }
                }
                Err(error) if error.is_lease_lost() => self.lose_lease(),
                Err(error) if error.is_transient() => {
                    tracing::warn!(job = %self.claimed.id, %error, "failed to ship log lines; will retry");
                    self.put_back_logs(entries);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => {
                    tracing::error!(job = %self.claimed.id, %error, "the coordinator refused log lines; dropping them");
                }
            }
        }
    }
}

/// The next job heartbeat falls at a random point between 25 % and 35 % of the lease TTL, so a
/// fleet's heartbeats spread out and two can be lost before the lease is.
fn heartbeat_delay(ttl_ms: u64) -> Duration {
    let fraction = rand::rng().random_range(0.25..0.35);
    Duration::from_millis(((ttl_ms as f64 * fraction) as u64).max(100))
}

/// Keep the lease alive and ship logs until `done` fires or the lease is lost.
pub(crate) async fn drive(job: Arc<JobContext>, client: RunnerClient, done: CancellationToken) {
    let mut ttl_ms = job.claimed.lease.ttl_ms;
    let mut next_heartbeat = tokio::time::Instant::now() + heartbeat_delay(ttl_ms);
    loop {
        let flush_at = tokio::time::Instant::now() + LOG_FLUSH_INTERVAL;
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep_until(flush_at.min(next_heartbeat)) => {}
        }
        if job.lease_lost() {
            return;
        }
        job.flush_logs(&client).await;
        if tokio::time::Instant::now() < next_heartbeat && job.progress_to_send().is_none() {
            continue;
        }
        let beat = JobHeartbeat {
            progress: job.progress_to_send(),
            events: None,
        };
        match client
            .job_heartbeat(job.claimed.id, job.epoch(), &beat)
            .await
        {
            Ok(answer) => {
                job.mark_progress_sent();
                ttl_ms = answer.lease.ttl_ms;
                if answer.cancel {
                    job.cancel();
                }
                next_heartbeat = tokio::time::Instant::now() + heartbeat_delay(ttl_ms);
            }
            Err(error) if error.is_lease_lost() => {
                tracing::warn!(job = %job.claimed.id, "the lease was lost; stopping the job");
                job.lose_lease();
                return;
            }
            Err(error) => {
                // Keep working: the lease may still hold, and the next try comes sooner.
                tracing::warn!(job = %job.claimed.id, %error, "job heartbeat failed; will retry");
                next_heartbeat = tokio::time::Instant::now() + Duration::from_millis(1000);
            }
        }
    }
}
