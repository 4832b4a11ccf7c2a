//! [`Transport`] over the gRPC runner protocol (`proto/muster/runner/v1/protocol.proto`): one
//! `Attach` stream per session, on which the coordinator pushes assignments and cancels as they
//! happen and this runner heartbeats; job reports go as unary calls on the same connection, and
//! artifacts over the HTTP API (the protocol has no byte streams). This module is the only
//! place in the daemon that names the generated messages.
//!
//! The stream is kept by a background task: it reattaches with the session id and the last
//! sequence handled when the stream breaks, is recycled, or goes silent for two heartbeat
//! intervals (the zombie rule), naming the jobs held so their leases stay this runner's.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use muster_core::{ErrorCode, FailureReason, LogLevel, NewLogEntry, Progress};
use muster_proto::protocol_pb as pb;
use muster_proto::protocol_pb::attach_request::Body as RunnerBody;
use muster_proto::protocol_pb::attach_response::Body as ServerBody;
use muster_proto::protocol_pb::runner_protocol_service_client::RunnerProtocolServiceClient;
use muster_runner_sdk::{LeaseEnvelope, TaskSpec};
use rand::Rng;
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

use crate::HttpTransport;
use crate::transport::{
    ClaimRequest, ClaimedTask, Failure, HeldLease, JobAck, LeaseRenewal, PushedStop, RunnerBeat,
    RunnerBeatAnswer, Transport, TransportError,
};

/// Messages queued for the stream; heartbeats and credit are small and rare.
const STREAM_OUTBOUND: usize = 64;
/// How long the coordinator may take to answer a Hello.
const ACCEPT_WAIT: Duration = Duration::from_secs(10);
/// A lease extended this recently (a share of its TTL) is not extended again for one job's
/// heartbeat: one stream heartbeat extends every held lease at once.
const EXTENSION_REUSE_SHARE: u32 = 4;

/// The coordinator over gRPC at an `http://` address (h2c), with a runner token.
pub struct GrpcTransport {
    http: HttpTransport,
    client: RunnerProtocolServiceClient<Channel>,
    server: String,
    token: String,
    shared: Arc<Shared>,
    stops: Mutex<Option<mpsc::UnboundedReceiver<PushedStop>>>,
    /// Ends the stream task when the transport goes.
    closed: CancellationToken,
}

impl Drop for GrpcTransport {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

impl std::fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("GrpcTransport")
            .field("server", &self.server)
            .finish()
    }
}

/// What the stream task and the daemon's calls share.
struct Shared {
    state: Mutex<StreamState>,
    /// Woken when an assignment arrives or the stream refuses this runner for good.
    arrived: Notify,
    stops: mpsc::UnboundedSender<PushedStop>,
}

#[derive(Default)]
struct StreamState {
    started: bool,
    /// What the runner takes, from its first claim.
    kinds: Vec<String>,
    capabilities: pb::Capabilities,
    max_jobs: u32,
    hostname: String,
    version: String,
    draining: bool,
    session_id: String,
    last_sequence: u64,
    /// Jobs assigned and not yet finished, with their lease epochs.
    held: HashMap<Uuid, u64>,
    /// Assignments the daemon has not claimed yet.
    queue: VecDeque<ClaimedTask>,
    /// Credit granted and not used yet.
    outstanding_credit: u32,
    heartbeat_interval: Option<Duration>,
    /// The current stream's sender; `None` while (re)attaching.
    sender: Option<mpsc::Sender<pb::AttachRequest>>,
    heartbeat_waiters: VecDeque<oneshot::Sender<pb::HeartbeatAck>>,
    /// When each held lease was last extended, and its TTL.
    extended: HashMap<Uuid, (tokio::time::Instant, Duration)>,
    /// Why the coordinator will never take this runner's stream (a refused token, kinds beyond
    /// its registration), for the next claim to report.
    refused: Option<TransportError>,
}

fn lock(shared: &Shared) -> MutexGuard<'_, StreamState> {
    shared.state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GrpcTransport {
    /// `server` is the coordinator's `http://` address; the same port serves gRPC. `http` is
    /// the HTTP transport to the same address with the same token, for what the protocol does
    /// not carry (artifacts, recording outputs). Fails when the address cannot be used.
    pub fn new(
        http: HttpTransport,
        server: &str,
        token: &str,
    ) -> Result<GrpcTransport, TransportError> {
        if !server.starts_with("http://") {
            return Err(TransportError::new(
                None,
                false,
                format!(
                    "--transport grpc takes an http:// coordinator address for now (gRPC over TLS is served, but this runner does not dial it yet); got {server}"
                ),
            ));
        }
        let endpoint = Endpoint::from_shared(server.to_string())
            .map_err(|error| {
                TransportError::new(
                    None,
                    false,
                    format!("coordinator address {server}: {error}"),
                )
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        let (stops_sender, stops) = mpsc::unbounded_channel();
        Ok(GrpcTransport {
            http,
            client: RunnerProtocolServiceClient::new(channel),
            server: server.to_string(),
            token: token.to_string(),
            shared: Arc::new(Shared {
                state: Mutex::new(StreamState::default()),
                arrived: Notify::new(),
                stops: stops_sender,
            }),
            stops: Mutex::new(Some(stops)),
            closed: CancellationToken::new(),
        })
    }

    fn authorized<T>(&self, message: T) -> tonic::Request<T> {
        authorized(&self.token, message)
    }

    /// Start the stream task with what the first claim says the runner takes.
    fn start(&self, claim: &ClaimRequest) {
        let mut state = lock(&self.shared);
        if state.started {
            return;
        }
        state.started = true;
        state.kinds = claim.kinds.clone();
        state.capabilities = pb::Capabilities {
            labels: claim.labels.clone().into_iter().collect(),
            tags: claim.tags.clone(),
            resources: claim.resources.clone().into_iter().collect(),
        };
        state.max_jobs = claim.max_jobs.max(1);
        drop(state);
        tokio::spawn(keep_stream(
            self.client.clone(),
            self.token.clone(),
            Arc::clone(&self.shared),
            self.closed.clone(),
        ));
    }

    /// Send a heartbeat on the stream naming every held job; answers the coordinator's ack.
    async fn stream_heartbeat(&self) -> Result<pb::HeartbeatAck, TransportError> {
        let (sender, waiter, interval) = {
            let mut state = lock(&self.shared);
            let Some(sender) = state.sender.clone() else {
                return Err(TransportError::unreachable(
                    "the stream to the coordinator is reattaching",
                ));
            };
            let (answer, waiter) = oneshot::channel();
            state.heartbeat_waiters.push_back(answer);
            let heartbeat = pb::Heartbeat {
                jobs: state
                    .held
                    .iter()
                    .map(|(job, epoch)| pb::HeldJob {
                        job_id: job.to_string(),
                        lease_epoch: *epoch,
                    })
                    .collect(),
                state: runner_state(state.draining) as i32,
                last_sequence: state.last_sequence,
            };
            let interval = state.heartbeat_interval.unwrap_or(Duration::from_secs(10));
            (sender, (waiter, heartbeat), interval)
        };
        let (waiter, heartbeat) = waiter;
        let sent_at = tokio::time::Instant::now();
        sender
            .send(pb::AttachRequest {
                request_id: String::new(),
                body: Some(RunnerBody::Heartbeat(heartbeat)),
            })
            .await
            .map_err(|_| TransportError::unreachable("the stream to the coordinator broke"))?;
        let ack = tokio::time::timeout(interval * 2, waiter)
            .await
            .map_err(|_| TransportError::unreachable("no heartbeat answer within two intervals"))?
            .map_err(|_| TransportError::unreachable("the stream to the coordinator broke"))?;
        let mut state = lock(&self.shared);
        for lease in &ack.leases {
            if let Ok(job) = lease.job_id.parse::<Uuid>() {
                let ttl = lease
                    .ttl
                    .as_ref()
                    .map_or(Duration::from_secs(30), duration_of);
                state.extended.insert(job, (sent_at, ttl));
            }
        }
        Ok(ack)
    }

    fn released(&self, job: Uuid) {
        let mut state = lock(&self.shared);
        state.held.remove(&job);
        state.extended.remove(&job);
    }
}

fn authorized<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn runner_state(draining: bool) -> pb::RunnerState {
    if draining {
        pb::RunnerState::Draining
    } else {
        pb::RunnerState::Active
    }
}

fn duration_of(duration: &prost_types::Duration) -> Duration {
    Duration::from_secs(u64::try_from(duration.seconds).unwrap_or(0))
        + Duration::from_nanos(u64::try_from(duration.nanos).unwrap_or(0))
}

/// A gRPC status in the contract's vocabulary: the code from `muster-error-code` metadata,
/// transient when that code is or when the coordinator could not be reached.
fn from_status(status: &tonic::Status) -> TransportError {
    let code = status
        .metadata()
        .get("muster-error-code")
        .and_then(|value| value.to_str().ok())
        .and_then(ErrorCode::parse);
    let unreachable = matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Aborted
    );
    let transient =
        code.map_or(unreachable, ErrorCode::is_transient) || (code.is_none() && unreachable);
    TransportError::new(
        code,
        transient,
        format!("{}: {}", status.code(), status.message()),
    )
}

fn timestamp_of(at: &prost_types::Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).unwrap_or(0))
        .unwrap_or_default()
}

fn task_of(assignment: pb::Assignment, token: &str) -> Option<ClaimedTask> {
    let id = assignment.job_id.parse::<Uuid>().ok()?;
    let lease = assignment.lease?;
    let payload: Value = serde_json::from_str(&assignment.payload_json).unwrap_or(Value::Null);
    let expires_at = lease.expires_at.as_ref().map(timestamp_of);
    let task = TaskSpec {
        job_id: Some(id),
        inputs_cids: assignment.input_artifact_ids,
        meta: payload,
        attempts: Some(u64::from(assignment.attempt)),
        max_attempts: Some(u64::from(assignment.max_attempts)),
        status: Some("running".to_string()),
        lease_expires_at: expires_at,
        ..TaskSpec::new(id, assignment.kind)
    };
    Some(ClaimedTask {
        epoch: lease.epoch,
        ttl: lease
            .ttl
            .as_ref()
            .map_or(Duration::from_secs(30), duration_of),
        lease: LeaseEnvelope {
            access_token: Some(token.to_string()),
            lease_expires_at: expires_at,
            status: Some("leased".to_string()),
            ..LeaseEnvelope::new(task)
        },
    })
}

/// Whether the coordinator will refuse this runner's stream however often it asks: its token,
/// or a Hello it cannot accept (kinds beyond its registration, a malformed field). Anything
/// else (a coordinator restarting, a store outage, a broken connection) is retried.
fn refuses_for_good(error: &TransportError) -> bool {
    error.is_refused_token()
        || matches!(
            error.code(),
            Some(ErrorCode::CapabilityNotRegistered | ErrorCode::InvalidInput)
        )
}

/// Keep one stream attached until the transport closes, reattaching with resume.
async fn keep_stream(
    mut client: RunnerProtocolServiceClient<Channel>,
    token: String,
    shared: Arc<Shared>,
    closed: CancellationToken,
) {
    let mut failures = 0u32;
    while !closed.is_cancelled() {
        let recycled = tokio::select! {
            outcome = attach_once(&mut client, &token, &shared) => match outcome {
                Ok(recycled) => {
                    failures = 0;
                    recycled
                }
                Err(error) => {
                    failures += 1;
                    if refuses_for_good(&error) {
                        tracing::error!(%error, "the coordinator refused this runner's stream");
                        lock(&shared).refused = Some(error);
                        shared.arrived.notify_waiters();
                        return;
                    }
                    if failures == 1 || failures.is_multiple_of(10) {
                        tracing::warn!(%error, attempt = failures, "the stream to the coordinator broke; reattaching");
                    }
                    false
                }
            },
            _ = closed.cancelled() => return,
        };
        {
            let mut state = lock(&shared);
            state.sender = None;
            // Heartbeats waiting on the old stream fail now (their senders drop).
            state.heartbeat_waiters.clear();
        }
        if !recycled && failures > 0 {
            let ceiling = (200u64 << failures.min(6)).min(10_000);
            let delay = rand::rng().random_range(ceiling / 2..=ceiling);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
                _ = closed.cancelled() => return,
            }
        }
    }
}

/// One stream, from Hello to its end: answers whether the coordinator recycled it (reattach
/// at once), or why it ended otherwise.
async fn attach_once(
    client: &mut RunnerProtocolServiceClient<Channel>,
    token: &str,
    shared: &Arc<Shared>,
) -> Result<bool, TransportError> {
    let (sender, receiver) = mpsc::channel(STREAM_OUTBOUND);
    let hello = {
        let state = lock(shared);
        pb::Hello {
            protocol_version: 1,
            features: vec!["resume".to_string()],
            kinds: state.kinds.clone(),
            capabilities: Some(state.capabilities.clone()),
            max_jobs: state.max_jobs,
            resume_session_id: state.session_id.clone(),
            resume_after_sequence: state.last_sequence,
            held_jobs: state
                .held
                .iter()
                .map(|(job, epoch)| pb::HeldJob {
                    job_id: job.to_string(),
                    lease_epoch: *epoch,
                })
                .collect(),
            state: runner_state(state.draining) as i32,
            hostname: state.hostname.clone(),
            version: state.version.clone(),
        }
    };
    let _ = sender.try_send(pb::AttachRequest {
        request_id: String::new(),
        body: Some(RunnerBody::Hello(hello)),
    });
    let response = client
        .attach(authorized(token, ReceiverStream::new(receiver)))
        .await
        .map_err(|status| from_status(&status))?;
    let mut inbound = response.into_inner();
    let first = tokio::time::timeout(ACCEPT_WAIT, inbound.message())
        .await
        .map_err(|_| TransportError::unreachable("no answer to Hello within 10 s"))?
        .map_err(|status| from_status(&status))?;
    let Some(pb::AttachResponse {
        body: Some(ServerBody::Accepted(accepted)),
        ..
    }) = first
    else {
        return Err(TransportError::unreachable(
            "the coordinator's first message was not Accepted",
        ));
    };
    let interval = accepted
        .heartbeat_interval
        .as_ref()
        .map_or(Duration::from_secs(10), duration_of);
    {
        let mut state = lock(shared);
        if state.session_id != accepted.session_id {
            tracing::info!(session = %accepted.session_id, resumed = accepted.resumed, "attached to the coordinator");
        }
        if !accepted.resumed {
            // A new session numbers its events from 1 again: what the old one handled says
            // nothing about them.
            state.last_sequence = 0;
        }
        state.session_id = accepted.session_id;
        state.heartbeat_interval = Some(interval);
        state.outstanding_credit = accepted.credit;
        state.sender = Some(sender);
    }
    // The daemon's claim may be waiting to send credit.
    shared.arrived.notify_waiters();
    loop {
        let message = tokio::time::timeout(interval * 2, inbound.message())
            .await
            .map_err(|_| {
                TransportError::unreachable(
                    "the stream was silent for two heartbeat intervals; reattaching",
                )
            })?
            .map_err(|status| from_status(&status))?;
        let Some(message) = message else {
            // Ended with OK: a newer stream of the session took over, or a recycle.
            return Ok(true);
        };
        let sequence = message.sequence;
        match message.body {
            Some(ServerBody::Assignment(assignment)) => {
                let mut state = lock(shared);
                if sequence <= state.last_sequence {
                    continue;
                }
                state.last_sequence = sequence;
                if let Some(task) = task_of(assignment, token) {
                    let job = task.lease.task.id;
                    if state.held.insert(job, task.epoch).is_none() {
                        state
                            .extended
                            .insert(job, (tokio::time::Instant::now(), task.ttl));
                        state.outstanding_credit = state.outstanding_credit.saturating_sub(1);
                        state.queue.push_back(task);
                    }
                }
                drop(state);
                shared.arrived.notify_waiters();
            }
            Some(ServerBody::Cancel(cancel)) => {
                let mut state = lock(shared);
                if sequence <= state.last_sequence {
                    continue;
                }
                state.last_sequence = sequence;
                let Ok(job) = cancel.job_id.parse::<Uuid>() else {
                    continue;
                };
                let lease_lost = cancel.reason == pb::CancelReason::LeaseLost as i32;
                if lease_lost {
                    state.held.remove(&job);
                    state.queue.retain(|task| task.lease.task.id != job);
                }
                drop(state);
                let _ = shared.stops.send(PushedStop { job, lease_lost });
            }
            Some(ServerBody::Recycle(_)) => {
                {
                    let mut state = lock(shared);
                    state.last_sequence = state.last_sequence.max(sequence);
                }
                tracing::debug!("the coordinator recycles the stream; reattaching");
                return Ok(true);
            }
            Some(ServerBody::HeartbeatAck(ack)) => {
                if let Some(waiter) = lock(shared).heartbeat_waiters.pop_front() {
                    let _ = waiter.send(ack);
                }
            }
            Some(ServerBody::Error(error)) => {
                tracing::warn!(message = %error.message, "the coordinator refused a stream message");
            }
            Some(ServerBody::JobAck(_)) | Some(ServerBody::Accepted(_)) | None => {}
        }
    }
}

fn level_to_pb(level: LogLevel) -> pb::LogLevel {
    match level {
        LogLevel::Trace => pb::LogLevel::Trace,
        LogLevel::Debug => pb::LogLevel::Debug,
        LogLevel::Info => pb::LogLevel::Info,
        LogLevel::Warn => pb::LogLevel::Warn,
        LogLevel::Error => pb::LogLevel::Error,
    }
}

#[async_trait]
impl Transport for GrpcTransport {
    fn describe(&self) -> String {
        format!("{} (gRPC)", self.server)
    }

    async fn runner_heartbeat(
        &self,
        beat: &RunnerBeat,
    ) -> Result<RunnerBeatAnswer, TransportError> {
        let attached = {
            let mut state = lock(&self.shared);
            state.draining = beat.draining;
            state.hostname = beat.hostname.clone().unwrap_or_default();
            state.version = beat.version.clone();
            state.sender.is_some()
        };
        if !attached {
            // Before the first claim, or while the stream reattaches: say so over HTTP, so the
            // runner stays online and hears of cancels meanwhile.
            return self.http.runner_heartbeat(beat).await;
        }
        self.stream_heartbeat().await?;
        let interval = lock(&self.shared)
            .heartbeat_interval
            .unwrap_or(Duration::from_secs(10));
        // Cancels arrive pushed on the stream (see `stops`), not in this answer.
        Ok(RunnerBeatAnswer {
            interval,
            cancel: Vec::new(),
        })
    }

    async fn claim(&self, claim: &ClaimRequest) -> Result<Vec<ClaimedTask>, TransportError> {
        self.start(claim);
        let deadline = tokio::time::Instant::now() + claim.wait;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            {
                let mut state = lock(&self.shared);
                if let Some(refused) = state.refused.clone() {
                    return Err(refused);
                }
                if !state.queue.is_empty() {
                    let take = (claim.max_jobs as usize).min(state.queue.len());
                    return Ok(state.queue.drain(..take).collect());
                }
                let wanted = claim.max_jobs;
                if let Some(sender) = state.sender.clone()
                    && state.outstanding_credit < wanted
                {
                    let additional = wanted - state.outstanding_credit;
                    let sent = sender.try_send(pb::AttachRequest {
                        request_id: String::new(),
                        body: Some(RunnerBody::Ready(pb::Ready {
                            additional_credit: additional,
                        })),
                    });
                    if sent.is_ok() {
                        state.outstanding_credit = wanted;
                    }
                }
            }
            tokio::select! {
                _ = arrived => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            }
        }
    }

    async fn job_heartbeat(
        &self,
        lease: HeldLease,
        progress: Option<&Progress>,
    ) -> Result<LeaseRenewal, TransportError> {
        let mut cancel = false;
        if let Some(progress) = progress {
            let answer = self
                .client
                .clone()
                .report_progress(self.authorized(pb::ReportProgressRequest {
                    job_id: lease.job.to_string(),
                    lease_epoch: lease.epoch,
                    percent: Some(progress.percent),
                    message: progress.message.clone(),
                }))
                .await
                .map_err(|status| from_status(&status))?;
            cancel = answer.into_inner().cancel_requested;
        }
        let (recent, attached) = {
            let state = lock(&self.shared);
            let recent = state
                .extended
                .get(&lease.job)
                .copied()
                .filter(|(at, ttl)| at.elapsed() < *ttl / EXTENSION_REUSE_SHARE);
            (recent, state.sender.is_some())
        };
        if recent.is_none() && !attached {
            // The stream is reattaching: keep the lease over HTTP meanwhile.
            let renewal = self.http.job_heartbeat(lease, None).await?;
            return Ok(LeaseRenewal {
                ttl: renewal.ttl,
                cancel: cancel || renewal.cancel,
            });
        }
        if let Some((at, ttl)) = recent {
            return Ok(LeaseRenewal {
                ttl: ttl.saturating_sub(at.elapsed()),
                cancel,
            });
        }
        let ack = self.stream_heartbeat().await?;
        let job = lease.job.to_string();
        match ack.leases.iter().find(|kept| kept.job_id == job) {
            Some(kept) => Ok(LeaseRenewal {
                ttl: kept
                    .ttl
                    .as_ref()
                    .map_or(Duration::from_secs(30), duration_of),
                cancel,
            }),
            None => {
                self.released(lease.job);
                Err(TransportError::refused(
                    ErrorCode::LeaseLost,
                    "the coordinator did not extend this job's lease",
                ))
            }
        }
    }

    async fn append_logs(
        &self,
        lease: HeldLease,
        entries: &[NewLogEntry],
    ) -> Result<JobAck, TransportError> {
        let request = pb::AppendLogsRequest {
            job_id: lease.job.to_string(),
            lease_epoch: lease.epoch,
            entries: entries
                .iter()
                .map(|entry| pb::LogEntry {
                    seq: entry.seq,
                    level: level_to_pb(entry.level) as i32,
                    message: entry.message.clone(),
                    metadata_json: entry
                        .metadata
                        .as_ref()
                        .map(Value::to_string)
                        .unwrap_or_default(),
                })
                .collect(),
        };
        let answer = self
            .client
            .clone()
            .append_logs(self.authorized(request))
            .await
            .map_err(|status| from_status(&status))?;
        Ok(JobAck {
            cancel: answer.into_inner().cancel_requested,
        })
    }

    async fn record_outputs(
        &self,
        lease: HeldLease,
        outputs: &BTreeMap<String, String>,
    ) -> Result<JobAck, TransportError> {
        self.http.record_outputs(lease, outputs).await
    }

    async fn complete(&self, lease: HeldLease, result: &Value) -> Result<(), TransportError> {
        let request = pb::CompleteJobRequest {
            job_id: lease.job.to_string(),
            lease_epoch: lease.epoch,
            result_json: result.to_string(),
            outputs: HashMap::new(),
            signature_json: None,
        };
        let answer = self
            .client
            .clone()
            .complete_job(self.authorized(request))
            .await;
        match answer {
            Ok(_) => {
                self.released(lease.job);
                Ok(())
            }
            Err(status) => {
                let error = from_status(&status);
                if error.is_lease_lost() {
                    self.released(lease.job);
                }
                Err(error)
            }
        }
    }

    async fn fail(&self, lease: HeldLease, failure: &Failure) -> Result<(), TransportError> {
        let request = pb::FailJobRequest {
            job_id: lease.job.to_string(),
            lease_epoch: lease.epoch,
            error_message: failure.message.clone(),
            reason: match failure.reason {
                FailureReason::Cancelled => pb::FailureReason::Cancelled,
                _ => pb::FailureReason::RunnerError,
            } as i32,
            retryable: Some(failure.retryable),
        };
        let answer = self.client.clone().fail_job(self.authorized(request)).await;
        match answer {
            Ok(_) => {
                self.released(lease.job);
                Ok(())
            }
            Err(status) => {
                let error = from_status(&status);
                if error.is_lease_lost() {
                    self.released(lease.job);
                }
                Err(error)
            }
        }
    }

    async fn upload_bytes(&self, bytes: Vec<u8>) -> Result<String, TransportError> {
        self.http.upload_bytes(bytes).await
    }

    async fn upload_file(&self, path: &Path) -> Result<String, TransportError> {
        self.http.upload_file(path).await
    }

    async fn download_bytes(&self, id: &str) -> Result<Vec<u8>, TransportError> {
        self.http.download_bytes(id).await
    }

    async fn download_to_file(&self, id: &str, path: &Path) -> Result<(), TransportError> {
        self.http.download_to_file(id, path).await
    }

    fn pushed_stops(&self) -> Option<mpsc::UnboundedReceiver<PushedStop>> {
        self.stops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}
