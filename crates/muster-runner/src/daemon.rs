//! The daemon's loops: runner heartbeats, claims, one task per job, drain.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use muster_api::{ClaimJobs, FailJob, FailureReason, LogLevel, RunnerActivity, RunnerHeartbeat};
use muster_client::{ClientError, ClientTls, RunnerClient};
use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::control::{JobContext, JobHandler, drive};

/// Settings of one daemon.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub server: String,
    pub token: String,
    /// Which authorities to trust for an `https://` server.
    pub tls: ClientTls,
    pub labels: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub resources: BTreeMap<String, f64>,
    /// Jobs run at once.
    pub concurrency: u32,
    /// How long a drain waits for running jobs before cancelling them.
    pub drain_timeout: Duration,
    pub hostname: Option<String>,
    pub version: String,
}

/// The stop requests a daemon obeys: `drain` (stop claiming, finish jobs) and `abort` (cancel
/// running jobs now).
#[derive(Clone, Default)]
pub struct StopSignals {
    pub drain: CancellationToken,
    pub abort: CancellationToken,
}

/// CPUs and memory of this machine, as resources a runner declares.
pub fn detect_resources() -> BTreeMap<String, f64> {
    let mut resources = BTreeMap::new();
    if let Ok(cpus) = std::thread::available_parallelism() {
        resources.insert("cpus".to_string(), cpus.get() as f64);
    }
    let memory_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        });
    if let Some(kb) = memory_kb {
        resources.insert(
            "memory_gb".to_string(),
            (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        );
    }
    resources
}

/// Wait `attempt`'s backoff: 0.5 s doubling to 30 s, with full jitter so a fleet that lost its
/// coordinator does not come back in one wave. Ends early when `stop` fires.
async fn backoff(attempt: u32, stop: &CancellationToken) {
    let ceiling = (500u64 << attempt.min(6)).min(30_000);
    let delay = rand::rng().random_range(ceiling / 2..=ceiling);
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
        _ = stop.cancelled() => {}
    }
}

fn is_fatal(error: &ClientError) -> bool {
    error.is_refused_token()
}

type Running = Arc<Mutex<HashMap<Uuid, Arc<JobContext>>>>;

/// Run the daemon until drained or aborted.
pub async fn run(
    config: DaemonConfig,
    handlers: Vec<Arc<dyn JobHandler>>,
    stop: StopSignals,
) -> anyhow::Result<()> {
    if handlers.is_empty() {
        bail!("no job kinds to run: host at least one runner (for example --exec)");
    }
    let client = RunnerClient::with_tls(&config.server, &config.token, &config.tls)
        .context("set up the runner client")?;
    let by_kind: HashMap<String, Arc<dyn JobHandler>> = handlers
        .iter()
        .map(|handler| (handler.kind().to_string(), Arc::clone(handler)))
        .collect();
    let kinds: Vec<String> = by_kind.keys().cloned().collect();
    let running: Running = Arc::default();
    let heartbeat_stop = CancellationToken::new();
    let heartbeats = tokio::spawn(heartbeat_loop(
        client.clone(),
        config.clone(),
        Arc::clone(&running),
        stop.clone(),
        heartbeat_stop.clone(),
    ));
    let mut jobs = JoinSet::new();
    let slot_freed = Arc::new(tokio::sync::Notify::new());
    let mut failures = 0u32;
    tracing::info!(kinds = ?kinds, concurrency = config.concurrency, server = %config.server, "runner started");
    while !stop.drain.is_cancelled() {
        while jobs.try_join_next().is_some() {}
        let free = config
            .concurrency
            .saturating_sub(running.lock().map(|r| r.len() as u32).unwrap_or(0));
        if free == 0 {
            tokio::select! {
                _ = slot_freed.notified() => {}
                _ = stop.drain.cancelled() => {}
            }
            continue;
        }
        // A short long-poll that is never abandoned: dropping a claim in flight could leave jobs
        // leased to this runner that it never runs (they would wait out their lease and lose an
        // attempt), so a drain waits for the answer (at most `wait_ms`) and runs what it brings.
        let claim = ClaimJobs {
            kinds: kinds.clone(),
            labels: config.labels.clone(),
            tags: config.tags.clone(),
            resources: config.resources.clone(),
            max_jobs: Some(free),
            wait_ms: Some(5_000),
        };
        let claimed = client.claim_job(&claim).await;
        match claimed {
            Ok(claimed) => {
                failures = 0;
                for job in claimed {
                    let Some(handler) = by_kind.get(&job.kind).cloned() else {
                        tracing::error!(job = %job.id, kind = %job.kind, "claimed a job of a kind not hosted here");
                        continue;
                    };
                    let context = JobContext::new(job, client.clone());
                    if let Ok(mut running) = running.lock() {
                        running.insert(context.claimed.id, Arc::clone(&context));
                    }
                    let client = client.clone();
                    let running = Arc::clone(&running);
                    let slot_freed = Arc::clone(&slot_freed);
                    jobs.spawn(async move {
                        run_job(handler, Arc::clone(&context), client).await;
                        if let Ok(mut running) = running.lock() {
                            running.remove(&context.claimed.id);
                        }
                        slot_freed.notify_one();
                    });
                }
            }
            Err(error) if is_fatal(&error) => {
                heartbeat_stop.cancel();
                bail!("the coordinator refused this runner's token: {error}");
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(%error, attempt = failures, "claim failed; retrying with backoff");
                backoff(failures, &stop.drain).await;
            }
        }
    }
    let count = running.lock().map(|r| r.len()).unwrap_or(0);
    if count > 0 {
        tracing::info!(
            running = count,
            timeout_s = config.drain_timeout.as_secs(),
            "draining: finishing running jobs"
        );
    }
    let finished = async { while jobs.join_next().await.is_some() {} };
    tokio::pin!(finished);
    tokio::select! {
        _ = &mut finished => {}
        _ = tokio::time::sleep(config.drain_timeout) => {
            tracing::warn!("drain timeout passed; cancelling running jobs");
            interrupt_all(&running);
            finished.await;
        }
        _ = stop.abort.cancelled() => {
            tracing::warn!("stopping now; cancelling running jobs");
            interrupt_all(&running);
            finished.await;
        }
    }
    heartbeat_stop.cancel();
    let _ = heartbeats.await;
    tracing::info!("runner stopped");
    Ok(())
}

/// Stop every running job because this runner is shutting down.
fn interrupt_all(running: &Running) {
    if let Ok(running) = running.lock() {
        for job in running.values() {
            job.interrupt();
        }
    }
}

async fn heartbeat_loop(
    client: RunnerClient,
    config: DaemonConfig,
    running: Running,
    stop: StopSignals,
    done: CancellationToken,
) {
    let mut interval = Duration::from_secs(10);
    let mut failures = 0u32;
    loop {
        let jobs: Vec<Uuid> = running
            .lock()
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default();
        let beat = RunnerHeartbeat {
            status: if stop.drain.is_cancelled() {
                RunnerActivity::Draining
            } else {
                RunnerActivity::Active
            },
            jobs,
            hostname: config.hostname.clone(),
            version: Some(config.version.clone()),
        };
        let wait = match client.heartbeat(&beat).await {
            Ok(answer) => {
                failures = 0;
                interval = Duration::from_millis(answer.heartbeat_interval_ms.max(100));
                if let Ok(running) = running.lock() {
                    for id in answer.cancel {
                        if let Some(job) = running.get(&id) {
                            tracing::info!(job = %id, "the coordinator asked to stop this job");
                            job.cancel();
                        }
                    }
                }
                interval
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(%error, "runner heartbeat failed; will retry");
                interval.min(Duration::from_millis(1000 * u64::from(failures.min(10))))
            }
        };
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            // Tell the coordinator about a drain at once rather than at the next beat.
            _ = stop.drain.cancelled(), if !stop.drain.is_cancelled() => {}
        }
    }
}

/// Run one job to its end and report the outcome, unless the lease was lost.
async fn run_job(handler: Arc<dyn JobHandler>, job: Arc<JobContext>, client: RunnerClient) {
    let id = job.claimed.id;
    let epoch = Some(job.claimed.lease.epoch);
    let driver_done = CancellationToken::new();
    let driver = tokio::spawn(drive(Arc::clone(&job), client.clone(), driver_done.clone()));
    tracing::info!(job = %id, kind = %job.claimed.kind, attempt = job.claimed.attempt, "running job");
    let outcome = handler.run(&job).await;
    driver_done.cancel();
    let _ = driver.await;
    if let Err(error) = &outcome {
        job.log(LogLevel::Error, format!("{error:#}"));
    }
    job.flush_logs(&client).await;
    if job.lease_lost() {
        tracing::warn!(job = %id, "lease lost; not reporting this attempt");
        return;
    }
    let mut attempt = 0u32;
    loop {
        let reported = match &outcome {
            Ok(result) => client
                .complete_job(id, epoch, result.clone())
                .await
                .map(|_| ()),
            Err(error) => {
                // A cancel from the coordinator ends the job; a stop by this runner's shutdown
                // is an ordinary failed attempt, so the job runs again elsewhere.
                let cancelled = job.cancelled().is_cancelled() && !job.interrupted();
                let message = if job.interrupted() {
                    format!("the runner shut down before the job finished: {error:#}")
                } else {
                    format!("{error:#}")
                };
                let failure = FailJob {
                    error: Some(message),
                    reason: Some(if cancelled {
                        FailureReason::Cancelled
                    } else {
                        FailureReason::RunnerError
                    }),
                    retryable: Some(true),
                };
                client.fail_job(id, epoch, &failure).await.map(|_| ())
            }
        };
        match reported {
            Ok(()) => {
                tracing::info!(job = %id, ok = outcome.is_ok(), "reported job outcome");
                return;
            }
            Err(error) if error.is_transient() && attempt < 20 => {
                attempt += 1;
                tracing::warn!(job = %id, %error, "could not report the job outcome; retrying");
                backoff(attempt, &CancellationToken::new()).await;
            }
            Err(error) => {
                tracing::error!(job = %id, %error, "the coordinator refused the job outcome");
                return;
            }
        }
    }
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.claimed.id)
            .finish()
    }
}
