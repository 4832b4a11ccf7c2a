//! The daemon's line to the coordinator, whatever carries it: the [`Transport`] trait and the
//! values it takes and answers, all domain and SDK types ([`LeaseEnvelope`], muster-core's log
//! entries, progress, failure reasons and error codes). [`crate::HttpTransport`] speaks muster's
//! HTTP API; another protocol (gRPC) is one more implementation, and the daemon's tests drive the
//! real loop over an in-memory one.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use muster_core::{ErrorCode, FailureReason, NewLogEntry, Progress};
use muster_runner_sdk::LeaseEnvelope;
use serde_json::Value;
use uuid::Uuid;

/// Everything the daemon asks of the coordinator. Job-scoped calls name the lease they act
/// under ([`HeldLease`]); the coordinator refuses them with [`ErrorCode::LeaseLost`] once that
/// lease is gone.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Where the coordinator is, for log lines.
    fn describe(&self) -> String;

    /// Say this runner is alive (and whether it is draining); answers which of its jobs to stop
    /// and when to beat again.
    async fn runner_heartbeat(&self, beat: &RunnerBeat)
    -> Result<RunnerBeatAnswer, TransportError>;

    /// Lease up to `claim.max_jobs` jobs, waiting up to `claim.wait` for one; empty when none
    /// came.
    async fn claim(&self, claim: &ClaimRequest) -> Result<Vec<ClaimedTask>, TransportError>;

    /// Extend the lease, carrying the latest progress when there is new progress to report.
    async fn job_heartbeat(
        &self,
        lease: HeldLease,
        progress: Option<&Progress>,
    ) -> Result<LeaseRenewal, TransportError>;

    /// Append log lines (each with its `seq`, so a batch sent twice is stored once).
    async fn append_logs(
        &self,
        lease: HeldLease,
        entries: &[NewLogEntry],
    ) -> Result<JobAck, TransportError>;

    /// Record uploaded artifacts as the job's outputs, name to artifact id, in one commit.
    async fn record_outputs(
        &self,
        lease: HeldLease,
        outputs: &BTreeMap<String, String>,
    ) -> Result<JobAck, TransportError>;

    /// Complete the job with `result`.
    async fn complete(&self, lease: HeldLease, result: &Value) -> Result<(), TransportError>;

    /// Fail this attempt.
    async fn fail(&self, lease: HeldLease, failure: &Failure) -> Result<(), TransportError>;

    /// Store bytes as an artifact; answers its id.
    async fn upload_bytes(&self, bytes: Vec<u8>) -> Result<String, TransportError>;

    /// Store a local file as an artifact, streamed; answers its id.
    async fn upload_file(&self, path: &Path) -> Result<String, TransportError>;

    /// Fetch the artifact `id` into memory, checked against its id.
    async fn download_bytes(&self, id: &str) -> Result<Vec<u8>, TransportError>;

    /// Fetch the artifact `id` into the file `path`, streamed and checked against its id.
    async fn download_to_file(&self, id: &str, path: &Path) -> Result<(), TransportError>;

    /// The jobs the coordinator tells this runner to stop as it happens (a push transport), to
    /// be taken once by the daemon; `None` when stops arrive only in heartbeat answers.
    fn pushed_stops(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<PushedStop>> {
        None
    }
}

/// A job the coordinator told this runner to stop, pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushedStop {
    pub job: Uuid,
    /// The runner holds the job's lease no more: stop at once and report nothing about it.
    /// Otherwise the job was cancelled: stop and fail the attempt as cancelled.
    pub lease_lost: bool,
}

/// The lease a job-scoped call acts under: the job and the epoch its claim gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeldLease {
    pub job: Uuid,
    pub epoch: u64,
}

/// What a runner can take, as it asks for work.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClaimRequest {
    /// The capabilities (job kinds) of the hosted runners.
    pub kinds: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub resources: BTreeMap<String, f64>,
    /// Jobs wanted at most.
    pub max_jobs: u32,
    /// How long the coordinator may hold the claim open waiting for work.
    pub wait: Duration,
}

/// A job leased to this runner: the lease and task as the SDK's runners see them, plus what the
/// daemon needs to keep the lease.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedTask {
    /// `lease.task.id` is the job id, `capability` its kind, `meta` its payload,
    /// `inputs_cids` its input artifacts, `attempts` which attempt this is.
    pub lease: LeaseEnvelope,
    /// The lease's fencing epoch, sent with every job-scoped call.
    pub epoch: u64,
    /// How long the lease lasts from the coordinator's answer; heartbeats fall well inside it.
    pub ttl: Duration,
}

impl ClaimedTask {
    pub fn held(&self) -> HeldLease {
        HeldLease {
            job: self.lease.task.id,
            epoch: self.epoch,
        }
    }
}

/// A runner heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerBeat {
    /// Stopping: the coordinator hands this runner no more work and stops waiting on its claims.
    pub draining: bool,
    /// The jobs this runner is running.
    pub jobs: Vec<Uuid>,
    pub hostname: Option<String>,
    pub version: String,
}

/// The coordinator's answer to a runner heartbeat.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunnerBeatAnswer {
    /// When to beat next.
    pub interval: Duration,
    /// Jobs among those listed that must stop.
    pub cancel: Vec<Uuid>,
}

/// The coordinator's answer to a job heartbeat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseRenewal {
    /// How long the lease lasts from now.
    pub ttl: Duration,
    /// Stop the work and fail the attempt as cancelled.
    pub cancel: bool,
}

/// The coordinator's answer to other job-scoped calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobAck {
    /// Stop the work and fail the attempt as cancelled.
    pub cancel: bool,
}

/// A failed attempt as the runner reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub message: String,
    pub reason: FailureReason,
    /// Whether the job may run again while attempts remain.
    pub retryable: bool,
}

/// Why a call to the coordinator failed, in the contract's vocabulary: the daemon decides what
/// to do from [`TransportError::code`] and [`TransportError::is_transient`], never from a
/// transport's own status codes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    code: Option<ErrorCode>,
    transient: bool,
    message: String,
}

impl TransportError {
    /// `code` is the contract's code when the coordinator answered with one this build knows;
    /// `transient` whether the same call may succeed later unchanged.
    pub fn new(code: Option<ErrorCode>, transient: bool, message: impl Into<String>) -> Self {
        TransportError {
            code,
            transient,
            message: message.into(),
        }
    }

    /// The coordinator refused the call with `code`; transient when the code is.
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        TransportError::new(Some(code), code.is_transient(), message)
    }

    /// The coordinator could not be reached; worth a retry.
    pub fn unreachable(message: impl Into<String>) -> Self {
        TransportError::new(None, true, message)
    }

    pub fn code(&self) -> Option<ErrorCode> {
        self.code
    }

    /// Worth retrying later unchanged.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The lease on the job is gone: stop working on it and report nothing more.
    pub fn is_lease_lost(&self) -> bool {
        self.code == Some(ErrorCode::LeaseLost)
    }

    /// The coordinator does not accept this runner's credentials (unknown, revoked, wrong kind).
    pub fn is_refused_token(&self) -> bool {
        matches!(
            self.code,
            Some(ErrorCode::Unauthorized | ErrorCode::Forbidden)
        )
    }
}
