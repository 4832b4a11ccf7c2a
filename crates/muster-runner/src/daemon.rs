//! The daemon's loops: runner heartbeats, claims, one task per job, drain.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::bail;
use futures::FutureExt;
use muster_core::{FailureReason, LogLevel};
use muster_runner_sdk::Runner;
use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::ports::HostedTask;
use crate::task::{TaskState, keep_lease};
use crate::transport::{ClaimRequest, Failure, RunnerBeat, Transport, TransportError};

/// Settings of one daemon, whatever transport it speaks.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub labels: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub resources: BTreeMap<String, f64>,
    /// Jobs run at once.
    pub concurrency: u32,
    /// How long a drain waits for running jobs before cancelling them.
    pub drain_timeout: Duration,
    pub hostname: Option<String>,
    pub version: String,
    /// Where hosted runners' scratch files go (inputs fetched to temporary files, spooled
    /// uploads), one directory per job, removed when the job ends.
    pub work_dir: PathBuf,
    /// What to tell the operator while the coordinator holds this runner for approval (which
    /// key, and how to approve it).
    pub approval_hint: Option<String>,
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

/// A claim that can never succeed as this runner is configured: its token refused, or it
/// claims with capabilities it did not register.
fn is_fatal(error: &TransportError) -> bool {
    error.is_refused_token()
        || error.code() == Some(muster_core::ErrorCode::CapabilityNotRegistered)
}

type Running = Arc<Mutex<HashMap<Uuid, Arc<TaskState>>>>;

fn running_ids(running: &Running) -> Vec<Uuid> {
    running
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .keys()
        .copied()
        .collect()
}

/// Takes a task out of the running set however its run ends, a panicking runner included, so
/// its slot is freed and the runner heartbeat stops listing it.
struct RunningEntry {
    running: Running,
    id: Uuid,
    slot_freed: Arc<tokio::sync::Notify>,
}

impl Drop for RunningEntry {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        self.slot_freed.notify_one();
    }
}

/// Run the daemon over `transport` until drained or aborted, hosting `runners` (each takes the
/// jobs whose kind is its capability; of two with one capability, the later wins).
pub async fn run(
    transport: Arc<dyn Transport>,
    config: DaemonConfig,
    runners: Vec<Arc<dyn Runner>>,
    stop: StopSignals,
) -> anyhow::Result<()> {
    if runners.is_empty() {
        bail!("no job kinds to run: host at least one runner (for example --exec)");
    }
    let by_kind: HashMap<String, Arc<dyn Runner>> = runners
        .iter()
        .map(|runner| (runner.capability().to_string(), Arc::clone(runner)))
        .collect();
    let mut kinds: Vec<String> = by_kind.keys().cloned().collect();
    kinds.sort();
    let running: Running = Arc::default();
    let heartbeat_stop = CancellationToken::new();
    let heartbeats = tokio::spawn(heartbeat_loop(
        Arc::clone(&transport),
        config.clone(),
        Arc::clone(&running),
        stop.clone(),
        heartbeat_stop.clone(),
    ));
    let pushed_stops = transport
        .pushed_stops()
        .map(|stops| tokio::spawn(obey_pushed_stops(stops, Arc::clone(&running))));
    let mut jobs = JoinSet::new();
    let slot_freed = Arc::new(tokio::sync::Notify::new());
    let mut failures = 0u32;
    let mut waiting_for_approval = false;
    tracing::info!(kinds = ?kinds, concurrency = config.concurrency, server = %transport.describe(), "runner started");
    while !stop.drain.is_cancelled() {
        while jobs.try_join_next().is_some() {}
        let busy = running.lock().unwrap_or_else(PoisonError::into_inner).len() as u32;
        let free = config.concurrency.saturating_sub(busy);
        if free == 0 {
            tokio::select! {
                _ = slot_freed.notified() => {}
                _ = stop.drain.cancelled() => {}
            }
            continue;
        }
        // A short long-poll that is never abandoned: dropping a claim in flight could leave jobs
        // leased to this runner that it never runs (they would wait out their lease and lose an
        // attempt), so a drain waits for the answer (at most `wait`) and runs what it brings.
        let claim = ClaimRequest {
            kinds: kinds.clone(),
            labels: config.labels.clone(),
            tags: config.tags.clone(),
            resources: config.resources.clone(),
            max_jobs: free,
            wait: Duration::from_secs(5),
        };
        match transport.claim(&claim).await {
            Ok(claimed) => {
                failures = 0;
                if waiting_for_approval {
                    tracing::info!("approved: claiming jobs");
                    waiting_for_approval = false;
                }
                for claimed in claimed {
                    let kind = &claimed.lease.task.capability;
                    let Some(runner) = by_kind.get(kind).cloned() else {
                        tracing::error!(job = %claimed.lease.task.id, %kind, "claimed a job of a kind not hosted here");
                        continue;
                    };
                    let task = TaskState::new(claimed);
                    running
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(task.id(), Arc::clone(&task));
                    let entry = RunningEntry {
                        running: Arc::clone(&running),
                        id: task.id(),
                        slot_freed: Arc::clone(&slot_freed),
                    };
                    let transport = Arc::clone(&transport);
                    let work_dir = config.work_dir.clone();
                    jobs.spawn(async move {
                        let _entry = entry;
                        run_task(runner, task, transport, work_dir).await;
                    });
                }
            }
            Err(error) if is_fatal(&error) => {
                heartbeat_stop.cancel();
                if error.is_refused_token() {
                    bail!("the coordinator refused this runner's token: {error}");
                }
                bail!("the coordinator refused this runner's claims: {error}");
            }
            Err(error)
                if error.code() == Some(muster_core::ErrorCode::TokenExpired)
                    && error.is_transient() =>
            {
                // The token ran out while the coordinator was away; the transport has woken
                // whoever renews it, so ask again shortly rather than backing off.
                tracing::warn!(%error, "the runner token expired; waiting for its renewal");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.drain.cancelled() => {}
                }
            }
            Err(error) if error.code() == Some(muster_core::ErrorCode::RunnerNotEnrolled) => {
                // Registered under the approval gate: claims start once an operator approves
                // this runner; until then it heartbeats and asks again now and then.
                if !waiting_for_approval {
                    tracing::warn!(
                        "{}",
                        config
                            .approval_hint
                            .as_deref()
                            .unwrap_or("waiting for an operator to approve this runner")
                    );
                    waiting_for_approval = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.drain.cancelled() => {}
                }
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(%error, attempt = failures, "claim failed; retrying with backoff");
                backoff(failures, &stop.drain).await;
            }
        }
    }
    let count = running.lock().unwrap_or_else(PoisonError::into_inner).len();
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
    if let Some(task) = pushed_stops {
        task.abort();
    }
    tracing::info!("runner stopped");
    Ok(())
}

/// Stop the running jobs the coordinator says to, as it says so.
async fn obey_pushed_stops(
    mut stops: tokio::sync::mpsc::UnboundedReceiver<crate::transport::PushedStop>,
    running: Running,
) {
    while let Some(stop) = stops.recv().await {
        let task = running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&stop.job)
            .cloned();
        let Some(task) = task else { continue };
        if stop.lease_lost {
            tracing::warn!(job = %stop.job, "the coordinator says the lease is lost; stopping the job");
            task.lose_lease();
        } else {
            tracing::info!(job = %stop.job, "the coordinator asked to stop this job");
            task.cancel();
        }
    }
}

/// Stop every running job because this runner is shutting down.
fn interrupt_all(running: &Running) {
    for task in running
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
    {
        task.interrupt();
    }
}

async fn heartbeat_loop(
    transport: Arc<dyn Transport>,
    config: DaemonConfig,
    running: Running,
    stop: StopSignals,
    done: CancellationToken,
) {
    let mut interval = Duration::from_secs(10);
    let mut failures = 0u32;
    loop {
        let beat = RunnerBeat {
            draining: stop.drain.is_cancelled(),
            jobs: running_ids(&running),
            hostname: config.hostname.clone(),
            version: config.version.clone(),
        };
        let wait = match transport.runner_heartbeat(&beat).await {
            Ok(answer) => {
                failures = 0;
                interval = answer.interval.max(Duration::from_millis(100));
                let running = running.lock().unwrap_or_else(PoisonError::into_inner);
                for id in answer.cancel {
                    if let Some(task) = running.get(&id) {
                        tracing::info!(job = %id, "the coordinator asked to stop this job");
                        task.cancel();
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

fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

/// Run one task with its runner and report the outcome, unless the lease was lost.
async fn run_task(
    runner: Arc<dyn Runner>,
    task: Arc<TaskState>,
    transport: Arc<dyn Transport>,
    work_dir: PathBuf,
) {
    let id = task.id();
    let driver_done = CancellationToken::new();
    let driver = tokio::spawn(keep_lease(
        Arc::clone(&task),
        Arc::clone(&transport),
        driver_done.clone(),
    ));
    tracing::info!(job = %id, kind = %task.kind(), attempt = task.lease.task.attempts.unwrap_or(0), "running job");
    let outcome = {
        // The ports (and the job's scratch directory) live exactly as long as the run.
        let ports = HostedTask::new(Arc::clone(&transport), Arc::clone(&task), work_dir);
        // A panicking runner fails its attempt like an error would, instead of taking the
        // task down with the lease-keeping driver still renewing a lease nobody works under.
        AssertUnwindSafe(runner.run(ports.context()))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                Err(anyhow::anyhow!(
                    "the runner panicked: {}",
                    panic_text(&*panic)
                ))
            })
    };
    driver_done.cancel();
    let _ = driver.await;
    if let Err(error) = &outcome {
        task.log(LogLevel::Error, format!("{error:#}"));
    }
    task.flush_logs(transport.as_ref()).await;
    if task.lease_lost() {
        tracing::warn!(job = %id, "lease lost; not reporting this attempt");
        return;
    }
    let result = task.result();
    let mut attempt = 0u32;
    loop {
        let reported = match &outcome {
            Ok(()) => transport.complete(task.held, &result).await,
            Err(error) => {
                // A cancel from the coordinator ends the job; a stop by this runner's shutdown
                // is an ordinary failed attempt, so the job runs again elsewhere.
                let cancelled = task.cancelled().is_cancelled() && !task.interrupted();
                let message = if task.interrupted() {
                    format!("the runner shut down before the job finished: {error:#}")
                } else {
                    format!("{error:#}")
                };
                let failure = Failure {
                    message,
                    reason: if cancelled {
                        FailureReason::Cancelled
                    } else {
                        FailureReason::RunnerError
                    },
                    retryable: true,
                };
                transport.fail(task.held, &failure).await
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
