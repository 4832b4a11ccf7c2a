//! A coordinator in memory, behind the daemon's `Transport` trait: the second transport. It
//! hands out offered tasks to claims, records every call the daemon makes, and answers as a
//! test tells it to (cancel a job, lose its lease, refuse the token, be unavailable for a while),
//! so the real daemon loop runs without HTTP.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use muster_core::{ErrorCode, NewLogEntry, Progress};
use muster_runner::{
    ClaimRequest, ClaimedTask, DaemonConfig, Failure, HeldLease, JobAck, LeaseRenewal, RunnerBeat,
    RunnerBeatAnswer, StopSignals, Transport, TransportError,
};
use muster_runner_sdk::testing::Harness;
use muster_runner_sdk::{LeaseEnvelope, Runner};
use serde_json::Value;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// How long leases last here: short, so heartbeats come several times a second.
pub(crate) const LEASE_TTL: Duration = Duration::from_millis(400);

/// One call the daemon made about a job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JobCall {
    Heartbeat(Option<Progress>),
    Logs(Vec<NewLogEntry>),
    Outputs(BTreeMap<String, String>),
    Complete(Value),
    Fail(Failure),
}

impl JobCall {
    pub(crate) fn is_report(&self) -> bool {
        matches!(self, JobCall::Complete(_) | JobCall::Fail(_))
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<ClaimedTask>,
    claims: Vec<ClaimRequest>,
    runner_beats: Vec<RunnerBeat>,
    /// Named in the next runner heartbeat answer.
    cancel_in_runner_heartbeat: HashSet<Uuid>,
    /// Answered `cancel: true` about.
    cancelled: HashSet<Uuid>,
    /// Answered `lease_lost` about.
    lost: HashSet<Uuid>,
    /// Every job-scoped call, in order, with whether the lease was already lost when it came.
    calls: Vec<(Uuid, JobCall, bool)>,
    artifacts: HashMap<String, Vec<u8>>,
    refuse_token: bool,
    /// Completions and failures answered `unavailable` before one is taken.
    unavailable_reports: u32,
    /// The code that refuses every completion, when set.
    refuse_reports: Option<ErrorCode>,
}

#[derive(Default)]
pub(crate) struct MemoryCoordinator {
    state: Mutex<State>,
    offered: tokio::sync::Notify,
}

impl MemoryCoordinator {
    pub(crate) fn new() -> Arc<MemoryCoordinator> {
        Arc::new(MemoryCoordinator::default())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue a task of `kind`; answers its job id.
    pub(crate) fn offer(&self, kind: &str, payload: Value, inputs: &[&str]) -> Uuid {
        let mut lease: LeaseEnvelope = Harness::lease_for(kind, inputs.iter().copied());
        lease.task.meta = payload;
        lease.task.attempts = Some(1);
        lease.task.job_id = Some(lease.task.id);
        let id = lease.task.id;
        self.state().queue.push_back(ClaimedTask {
            lease,
            epoch: 1,
            ttl: LEASE_TTL,
        });
        self.offered.notify_waiters();
        id
    }

    /// Store an artifact the way a submitter's upload would.
    pub(crate) fn put_artifact(&self, id: &str, bytes: &[u8]) {
        self.state()
            .artifacts
            .insert(id.to_string(), bytes.to_vec());
    }

    pub(crate) fn artifact(&self, id: &str) -> Option<Vec<u8>> {
        self.state().artifacts.get(id).cloned()
    }

    /// From now on every answer about `job` says `cancel: true`.
    pub(crate) fn cancel(&self, job: Uuid) {
        self.state().cancelled.insert(job);
    }

    /// The next runner heartbeat answer names `job` to stop (job-scoped answers do not).
    pub(crate) fn cancel_by_runner_heartbeat(&self, job: Uuid) {
        self.state().cancel_in_runner_heartbeat.insert(job);
    }

    /// From now on every call about `job` is refused with `lease_lost`.
    pub(crate) fn lose_lease(&self, job: Uuid) {
        self.state().lost.insert(job);
    }

    pub(crate) fn refuse_token(&self) {
        self.state().refuse_token = true;
    }

    pub(crate) fn be_unavailable_for_reports(&self, count: u32) {
        self.state().unavailable_reports = count;
    }

    pub(crate) fn refuse_reports_with(&self, code: ErrorCode) {
        self.state().refuse_reports = Some(code);
    }

    pub(crate) fn calls(&self, job: Uuid) -> Vec<JobCall> {
        self.state()
            .calls
            .iter()
            .filter(|(id, _, _)| *id == job)
            .map(|(_, call, _)| call.clone())
            .collect()
    }

    /// Calls about `job` that came after its lease was lost.
    pub(crate) fn calls_after_loss(&self, job: Uuid) -> Vec<JobCall> {
        self.state()
            .calls
            .iter()
            .filter(|(id, _, lost)| *id == job && *lost)
            .map(|(_, call, _)| call.clone())
            .collect()
    }

    /// Every log line shipped for `job`, in the order it arrived.
    pub(crate) fn log_lines(&self, job: Uuid) -> Vec<NewLogEntry> {
        self.calls(job)
            .into_iter()
            .flat_map(|call| match call {
                JobCall::Logs(entries) => entries,
                _ => Vec::new(),
            })
            .collect()
    }

    pub(crate) fn reports(&self, job: Uuid) -> Vec<JobCall> {
        self.calls(job)
            .into_iter()
            .filter(JobCall::is_report)
            .collect()
    }

    pub(crate) fn claims(&self) -> Vec<ClaimRequest> {
        self.state().claims.clone()
    }

    pub(crate) fn runner_beats(&self) -> Vec<RunnerBeat> {
        self.state().runner_beats.clone()
    }

    pub(crate) fn queued(&self) -> Vec<Uuid> {
        self.state()
            .queue
            .iter()
            .map(|task| task.lease.task.id)
            .collect()
    }

    /// Note a job-scoped call; answers the refusal it gets, if any.
    fn job_call(&self, lease: HeldLease, call: JobCall) -> Result<JobAck, TransportError> {
        let mut state = self.state();
        let lost = state.lost.contains(&lease.job);
        let is_report = call.is_report();
        state.calls.push((lease.job, call, lost));
        if lost {
            return Err(TransportError::refused(
                ErrorCode::LeaseLost,
                "the lease is gone",
            ));
        }
        if is_report {
            if state.unavailable_reports > 0 {
                state.unavailable_reports -= 1;
                return Err(TransportError::refused(
                    ErrorCode::Unavailable,
                    "the store is unavailable",
                ));
            }
            if let Some(code) = state.refuse_reports {
                return Err(TransportError::refused(code, "refused"));
            }
        }
        Ok(JobAck {
            cancel: state.cancelled.contains(&lease.job),
        })
    }
}

#[async_trait]
impl Transport for MemoryCoordinator {
    fn describe(&self) -> String {
        "memory".to_string()
    }

    async fn runner_heartbeat(
        &self,
        beat: &RunnerBeat,
    ) -> Result<RunnerBeatAnswer, TransportError> {
        let mut state = self.state();
        state.runner_beats.push(beat.clone());
        let cancel = beat
            .jobs
            .iter()
            .copied()
            .filter(|job| state.cancel_in_runner_heartbeat.contains(job))
            .collect();
        Ok(RunnerBeatAnswer {
            interval: Duration::from_millis(100),
            cancel,
        })
    }

    async fn claim(&self, claim: &ClaimRequest) -> Result<Vec<ClaimedTask>, TransportError> {
        let deadline = tokio::time::Instant::now() + claim.wait.min(Duration::from_millis(200));
        loop {
            let offered = self.offered.notified();
            {
                let mut state = self.state();
                state.claims.push(claim.clone());
                if state.refuse_token {
                    return Err(TransportError::refused(
                        ErrorCode::Unauthorized,
                        "unknown runner token",
                    ));
                }
                let mut taken = Vec::new();
                let mut kept = VecDeque::new();
                while let Some(task) = state.queue.pop_front() {
                    if taken.len() < claim.max_jobs as usize
                        && claim.kinds.contains(&task.lease.task.capability)
                    {
                        taken.push(task);
                    } else {
                        kept.push_back(task);
                    }
                }
                state.queue = kept;
                if !taken.is_empty() {
                    return Ok(taken);
                }
            }
            if tokio::time::timeout_at(deadline, offered).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn job_heartbeat(
        &self,
        lease: HeldLease,
        progress: Option<&Progress>,
    ) -> Result<LeaseRenewal, TransportError> {
        let ack = self.job_call(lease, JobCall::Heartbeat(progress.cloned()))?;
        Ok(LeaseRenewal {
            ttl: LEASE_TTL,
            cancel: ack.cancel,
        })
    }

    async fn append_logs(
        &self,
        lease: HeldLease,
        entries: &[NewLogEntry],
    ) -> Result<JobAck, TransportError> {
        self.job_call(lease, JobCall::Logs(entries.to_vec()))
    }

    async fn record_outputs(
        &self,
        lease: HeldLease,
        outputs: &BTreeMap<String, String>,
    ) -> Result<JobAck, TransportError> {
        let missing: Vec<&String> = {
            let state = self.state();
            outputs
                .values()
                .filter(|id| !state.artifacts.contains_key(*id))
                .collect()
        };
        if !missing.is_empty() {
            return Err(TransportError::refused(
                ErrorCode::UnknownArtifact,
                format!("no artifacts {missing:?}"),
            ));
        }
        self.job_call(lease, JobCall::Outputs(outputs.clone()))
    }

    async fn complete(&self, lease: HeldLease, result: &Value) -> Result<(), TransportError> {
        self.job_call(lease, JobCall::Complete(result.clone()))
            .map(|_| ())
    }

    async fn fail(&self, lease: HeldLease, failure: &Failure) -> Result<(), TransportError> {
        self.job_call(lease, JobCall::Fail(failure.clone()))
            .map(|_| ())
    }

    async fn upload_bytes(&self, bytes: Vec<u8>) -> Result<String, TransportError> {
        let mut state = self.state();
        let id = format!("artifact-{}", state.artifacts.len() + 1);
        state.artifacts.insert(id.clone(), bytes);
        Ok(id)
    }

    async fn upload_file(&self, path: &Path) -> Result<String, TransportError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|error| TransportError::new(None, false, error.to_string()))?;
        self.upload_bytes(bytes).await
    }

    async fn download_bytes(&self, id: &str) -> Result<Vec<u8>, TransportError> {
        self.artifact(id).ok_or_else(|| {
            TransportError::refused(ErrorCode::NotFound, format!("no artifact {id}"))
        })
    }

    async fn download_to_file(&self, id: &str, path: &Path) -> Result<(), TransportError> {
        let bytes = self.download_bytes(id).await?;
        tokio::fs::write(path, bytes)
            .await
            .map_err(|error| TransportError::new(None, false, error.to_string()))
    }
}

/// A daemon running over a [`MemoryCoordinator`].
pub(crate) struct Daemon {
    pub stop: StopSignals,
    pub finished: JoinHandle<anyhow::Result<()>>,
    _work_dir: tempfile::TempDir,
}

pub(crate) fn config(concurrency: u32, drain_timeout: Duration, work_dir: PathBuf) -> DaemonConfig {
    DaemonConfig {
        labels: BTreeMap::from([("zone".to_string(), "test".to_string())]),
        tags: vec!["memory".to_string()],
        resources: BTreeMap::new(),
        concurrency,
        drain_timeout,
        hostname: Some("test-host".to_string()),
        version: "test".to_string(),
        work_dir,
        approval_hint: None,
    }
}

impl Daemon {
    pub(crate) fn start(
        coordinator: &Arc<MemoryCoordinator>,
        runners: Vec<Arc<dyn Runner>>,
        concurrency: u32,
        drain_timeout: Duration,
    ) -> anyhow::Result<Daemon> {
        let work_dir = tempfile::tempdir()?;
        let stop = StopSignals::default();
        let transport: Arc<dyn Transport> = coordinator.clone();
        let finished = tokio::spawn(muster_runner::run(
            transport,
            config(concurrency, drain_timeout, work_dir.path().to_path_buf()),
            runners,
            stop.clone(),
        ));
        Ok(Daemon {
            stop,
            finished,
            _work_dir: work_dir,
        })
    }

    /// Drain and wait (at most `within`) for the daemon to end.
    pub(crate) async fn drain(self, within: Duration) -> anyhow::Result<()> {
        self.stop.drain.cancel();
        self.join(within).await
    }

    pub(crate) async fn join(self, within: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(within, self.finished)
            .await
            .map_err(|_| anyhow::format_err!("the daemon did not stop within {within:?}"))??
    }
}

/// Wait (at most `within`) until `probe` answers something.
pub(crate) async fn eventually<T>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("{what} did not happen within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The one report (complete or fail) about `job`, once it came.
pub(crate) async fn report_of(
    coordinator: &MemoryCoordinator,
    job: Uuid,
) -> anyhow::Result<JobCall> {
    eventually("the job's report", Duration::from_secs(20), || {
        coordinator.reports(job).into_iter().next()
    })
    .await
}
