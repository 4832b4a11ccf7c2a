//! `RunnerProtocolService`: the runner job protocol. `Attach` moves the service's attached
//! stream ([`muster_service::attached`]) to and from the wire: the Hello in, the Accepted and
//! the pushed events out, each runner message applied by the one service method it names. The
//! unary RPCs call the same methods as the HTTP runner routes. The only thing decided here is
//! wire-level: the first message must be a Hello, and a stream silent for two heartbeat
//! intervals is dead.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use muster_core::identity::ResultSignature;
use muster_core::{
    ArtifactId, Audience, ErrorCode, FailureReason, JobId, LogLevel, NewLogEntry, Principal,
    Progress,
};
use muster_service::attached::{
    self, Accepted, CancelReason, HeldJob, Hello, JobReport, JobReportAnswer, LeaseRefusal, Pushed,
    PushedEvent, RecycleReason, ReportOutcome,
};
use muster_service::jobs::JobView;
use muster_service::protocol::{ClaimedJob, FailureReport, LeasedJob};
use muster_service::{Coordinator, ServiceError};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::convert::{status_of, timestamp};
use crate::protocol_pb as pb;
use crate::protocol_pb::attach_request::Body as RunnerBody;
use crate::protocol_pb::attach_response::Body as ServerBody;
use crate::protocol_pb::runner_protocol_service_server::RunnerProtocolService;
use crate::runners::bearer_token;

/// How long a new stream may take to send its Hello.
const HELLO_WAIT: Duration = Duration::from_secs(30);
/// Messages waiting to be written to one stream; a runner that stops reading holds up only
/// its own stream, whose events wait in the session's replay buffer.
const OUTBOUND_BUFFER: usize = 256;

/// The runner protocol over one coordinator.
#[derive(Clone)]
pub struct RunnerProtocolApi {
    coordinator: Coordinator,
}

impl RunnerProtocolApi {
    pub fn new(coordinator: Coordinator) -> RunnerProtocolApi {
        RunnerProtocolApi { coordinator }
    }

    /// The runner calling, from its `authorization: Bearer ...` metadata.
    async fn runner<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let peer = crate::runners::peer_of(request);
        let Some(token) = bearer_token(request) else {
            return Err(status_of(ServiceError::new(
                ErrorCode::Unauthorized,
                "no token: send `authorization: Bearer <runner token>` metadata",
            )));
        };
        self.coordinator
            .authenticate(token, Audience::Runners, peer)
            .await
            .map_err(status_of)
    }

    async fn unary(
        &self,
        principal: &Principal,
        report: JobReport,
    ) -> Result<JobReportAnswer, Status> {
        let target = report.target();
        match self.coordinator.apply_job_report(principal, report).await {
            Ok(answer) => Ok(answer),
            Err(error) => Err(refusal_status(
                self.coordinator
                    .lease_refusal(principal, target.job, error)
                    .await,
                target,
            )),
        }
    }
}

type AttachStream = Pin<Box<dyn Stream<Item = Result<pb::AttachResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RunnerProtocolService for RunnerProtocolApi {
    type AttachStream = AttachStream;

    async fn attach(
        &self,
        request: Request<Streaming<pb::AttachRequest>>,
    ) -> Result<Response<AttachStream>, Status> {
        let principal = self.runner(&request).await?;
        let credentials = StreamCredentials {
            coordinator: self.coordinator.clone(),
            token: bearer_token(&request).unwrap_or_default().to_string(),
            peer: crate::runners::peer_of(&request),
        };
        let mut inbound = request.into_inner();
        let first = match tokio::time::timeout(HELLO_WAIT, inbound.message()).await {
            Err(_) => {
                return Err(protocol_violation(
                    "no Hello within 30 s of opening the stream",
                ));
            }
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => return Err(protocol_violation("the stream ended before its Hello")),
            Ok(Ok(Some(first))) => first,
        };
        let Some(RunnerBody::Hello(hello)) = first.body else {
            return Err(protocol_violation(
                "the first message of a stream must be a Hello",
            ));
        };
        let hello = hello_from_pb(hello)?;
        let attachment = self
            .coordinator
            .attach_runner(&principal, hello)
            .await
            .map_err(status_of)?;
        let (outbound, receiver) = mpsc::channel(OUTBOUND_BUFFER);
        let accepted = pb::AttachResponse {
            sequence: 0,
            body: Some(ServerBody::Accepted(accepted_to_pb(attachment.accepted))),
        };
        // The channel is new and empty: this cannot wait.
        let _ = outbound.try_send(Ok(accepted));
        tokio::spawn(serve_stream(
            attachment.stream,
            inbound,
            outbound,
            credentials,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn report_progress(
        &self,
        request: Request<pb::ReportProgressRequest>,
    ) -> Result<Response<pb::ReportProgressResponse>, Status> {
        let principal = self.runner(&request).await?;
        let report = progress_from_pb(request.into_inner())?;
        match self.unary(&principal, report).await? {
            JobReportAnswer::Progress(stop) => Ok(Response::new(pb::ReportProgressResponse {
                cancel_requested: stop.cancel,
            })),
            _ => Err(Status::internal("the coordinator answered another call")),
        }
    }

    async fn append_logs(
        &self,
        request: Request<pb::AppendLogsRequest>,
    ) -> Result<Response<pb::AppendLogsResponse>, Status> {
        let principal = self.runner(&request).await?;
        let report = logs_from_pb(request.into_inner())?;
        match self.unary(&principal, report).await? {
            JobReportAnswer::Logs(appended) => Ok(Response::new(pb::AppendLogsResponse {
                next_seq: appended.next_seq,
                cancel_requested: appended.cancel,
            })),
            _ => Err(Status::internal("the coordinator answered another call")),
        }
    }

    async fn complete_job(
        &self,
        request: Request<pb::CompleteJobRequest>,
    ) -> Result<Response<pb::CompleteJobResponse>, Status> {
        let principal = self.runner(&request).await?;
        let report = complete_from_pb(request.into_inner())?;
        match self.unary(&principal, report).await? {
            JobReportAnswer::Complete(view) => Ok(Response::new(completed_to_pb(&view))),
            _ => Err(Status::internal("the coordinator answered another call")),
        }
    }

    async fn fail_job(
        &self,
        request: Request<pb::FailJobRequest>,
    ) -> Result<Response<pb::FailJobResponse>, Status> {
        let principal = self.runner(&request).await?;
        let report = fail_from_pb(request.into_inner())?;
        match self.unary(&principal, report).await? {
            JobReportAnswer::Fail(view) => Ok(Response::new(failed_to_pb(&view))),
            _ => Err(Status::internal("the coordinator answered another call")),
        }
    }
}

/// Push the stream's events and apply the runner's messages until either side ends it, the
/// session moves to a newer stream, or the runner is silent for two heartbeat intervals.
async fn serve_stream(
    mut stream: attached::AttachedStream,
    mut inbound: Streaming<pb::AttachRequest>,
    outbound: mpsc::Sender<Result<pb::AttachResponse, Status>>,
    credentials: StreamCredentials,
) {
    let silence_limit = stream.heartbeat_interval() * 2;
    loop {
        tokio::select! {
            event = stream.next_event() => match event {
                Some(pushed) => {
                    if outbound.send(Ok(pushed_to_pb(pushed))).await.is_err() {
                        return;
                    }
                }
                // A newer stream took over, or the recycle window passed: end with OK.
                None => return,
            },
            message = tokio::time::timeout(silence_limit, inbound.message()) => {
                let message = match message {
                    Err(_) => {
                        tracing::info!(session = stream.session_id(), "runner stream silent for two heartbeat intervals; ending it");
                        let _ = outbound
                            .send(Err(Status::unavailable(
                                "no message from the runner for two heartbeat intervals; reattach with resume",
                            )))
                            .await;
                        return;
                    }
                    Ok(Ok(Some(message))) => message,
                    // The runner closed its side, or the connection broke.
                    Ok(Ok(None)) | Ok(Err(_)) => return,
                };
                // A stream lives longer than any one call: its token is checked again at each
                // heartbeat, so an expired or revoked token ends it within an interval.
                if matches!(message.body, Some(RunnerBody::Heartbeat(_)))
                    && let Err(status) = credentials.check().await
                {
                    let _ = outbound.send(Err(status)).await;
                    return;
                }
                match answer(&stream, message).await {
                    Ok(Some(response)) => {
                        if outbound.send(Ok(response)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(status) => {
                        let _ = outbound.send(Err(status)).await;
                        return;
                    }
                }
            }
            _ = outbound.closed() => return,
        }
    }
}

/// What a stream was opened with, to check again while it lives.
struct StreamCredentials {
    coordinator: Coordinator,
    token: String,
    peer: Option<std::net::IpAddr>,
}

impl StreamCredentials {
    async fn check(&self) -> Result<(), Status> {
        self.coordinator
            .authenticate(&self.token, Audience::Runners, self.peer)
            .await
            .map(|_| ())
            .map_err(status_of)
    }
}

/// The answer to one runner message on the stream (none for Ready), or the status that ends
/// the stream.
async fn answer(
    stream: &attached::AttachedStream,
    message: pb::AttachRequest,
) -> Result<Option<pb::AttachResponse>, Status> {
    let request_id = message.request_id;
    let reply = |body| {
        Ok(Some(pb::AttachResponse {
            sequence: 0,
            body: Some(body),
        }))
    };
    let report = match message.body {
        None => return Err(protocol_violation("a message without a body")),
        Some(RunnerBody::Hello(_)) => {
            return Err(protocol_violation("a second Hello on one stream"));
        }
        Some(RunnerBody::Heartbeat(beat)) => {
            let draining = runner_state(beat.state)?;
            let jobs = held_from_pb("jobs", beat.jobs)?;
            return match stream.heartbeat(jobs, draining, beat.last_sequence).await {
                Ok(answered) => reply(ServerBody::HeartbeatAck(pb::HeartbeatAck {
                    leases: answered
                        .leases
                        .into_iter()
                        .map(|(job, lease)| lease_to_pb(job, lease))
                        .collect(),
                    server_time: Some(timestamp(answered.server_time)),
                })),
                Err(error) if error.code() == ErrorCode::InvalidInput => {
                    reply(ServerBody::Error(stream_error(&request_id, &error, false)))
                }
                Err(error) => Err(status_of(error)),
            };
        }
        Some(RunnerBody::Ready(ready)) => {
            return match stream.ready(ready.additional_credit) {
                Ok(()) => Ok(None),
                Err(error) => reply(ServerBody::Error(stream_error(&request_id, &error, false))),
            };
        }
        Some(RunnerBody::Progress(progress)) => progress_from_pb(progress),
        Some(RunnerBody::Logs(logs)) => logs_from_pb(logs),
        Some(RunnerBody::Complete(complete)) => complete_from_pb(complete),
        Some(RunnerBody::Fail(fail)) => fail_from_pb(fail),
    };
    let report = match report {
        Ok(report) => report,
        Err(status) => {
            let error = ServiceError::invalid_input(status.message().to_string());
            return reply(ServerBody::JobAck(pb::JobAck {
                request_id,
                job_id: String::new(),
                outcome: pb::JobAckOutcome::Rejected as i32,
                result: Some(pb::job_ack::Result::Error(job_error(&error, None))),
            }));
        }
    };
    let target = report.target();
    let job = target.job;
    let (outcome, result) = match stream.report(&request_id, report).await {
        ReportOutcome::Accepted(answer) => (pb::JobAckOutcome::Accepted, answer_to_pb(answer)),
        ReportOutcome::Duplicate(answer) => (pb::JobAckOutcome::Duplicate, answer_to_pb(answer)),
        ReportOutcome::Rejected(refusal) => (
            pb::JobAckOutcome::Rejected,
            pb::job_ack::Result::Error(refusal_to_pb(&refusal, target)),
        ),
    };
    reply(ServerBody::JobAck(pb::JobAck {
        request_id,
        job_id: job.to_string(),
        outcome: outcome as i32,
        result: Some(result),
    }))
}

fn protocol_violation(message: &str) -> Status {
    let mut status = Status::invalid_argument(format!("protocol violation: {message}"));
    status.metadata_mut().insert(
        crate::ERROR_CODE_METADATA,
        "protocol_violation".parse().expect("a valid header value"),
    );
    status
}

fn runner_state(value: i32) -> Result<Option<bool>, Status> {
    match pb::RunnerState::try_from(value) {
        Ok(pb::RunnerState::Unspecified) => Ok(None),
        Ok(pb::RunnerState::Active) => Ok(Some(false)),
        Ok(pb::RunnerState::Draining) => Ok(Some(true)),
        Err(_) => Err(invalid("state", "not a RunnerState")),
    }
}

fn invalid(field: &str, problem: &str) -> Status {
    status_of(ServiceError::invalid_input(format!("{field}: {problem}")))
}

fn job_id(field: &str, text: &str) -> Result<JobId, Status> {
    text.parse::<uuid::Uuid>()
        .map(JobId)
        .map_err(|_| invalid(field, "not a job id (a UUID)"))
}

fn held_from_pb(field: &str, jobs: Vec<pb::HeldJob>) -> Result<Vec<HeldJob>, Status> {
    jobs.into_iter()
        .enumerate()
        .map(|(index, held)| {
            Ok(HeldJob {
                job: job_id(&format!("{field}[{index}].job_id"), &held.job_id)?,
                epoch: held.lease_epoch,
            })
        })
        .collect()
}

fn hello_from_pb(hello: pb::Hello) -> Result<Hello, Status> {
    let capabilities = hello.capabilities.unwrap_or_default();
    let non_empty = |text: String| Some(text).filter(|text| !text.is_empty());
    Ok(Hello {
        protocol_version: hello.protocol_version,
        features: hello.features,
        kinds: hello.kinds,
        offer: muster_core::Capabilities {
            labels: capabilities.labels.into_iter().collect(),
            tags: capabilities.tags,
            resources: capabilities.resources.into_iter().collect(),
        },
        max_jobs: hello.max_jobs,
        resume_session_id: non_empty(hello.resume_session_id),
        resume_after_sequence: hello.resume_after_sequence,
        held_jobs: held_from_pb("held_jobs", hello.held_jobs)?,
        draining: runner_state(hello.state)?.unwrap_or(false),
        hostname: non_empty(hello.hostname),
        version: non_empty(hello.version),
    })
}

fn duration_to_pb(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

fn lease_to_pb(job: JobId, lease: muster_core::Lease) -> pb::Lease {
    pb::Lease {
        job_id: job.to_string(),
        epoch: lease.epoch,
        expires_at: Some(timestamp(lease.expires_at)),
        ttl: Some(duration_to_pb(Duration::from_millis(
            u64::try_from(lease.ttl_ms).unwrap_or(0),
        ))),
    }
}

fn accepted_to_pb(accepted: Accepted) -> pb::Accepted {
    pb::Accepted {
        protocol_version: accepted.protocol_version,
        features: accepted.features,
        session_id: accepted.session_id,
        resumed: accepted.resumed,
        heartbeat_interval: Some(duration_to_pb(accepted.heartbeat_interval)),
        lease_ttl: Some(duration_to_pb(Duration::from_secs(u64::from(
            muster_core::DEFAULT_LEASE_TTL_S,
        )))),
        stream_lifetime: Some(duration_to_pb(accepted.stream_lifetime)),
        runner_id: accepted.runner_id.to_string(),
        enrolled: accepted.enrolled,
        credit: accepted.credit,
        leases: accepted
            .leases
            .into_iter()
            .map(|(job, lease)| lease_to_pb(job, lease))
            .collect(),
    }
}

fn assignment_to_pb(claimed: ClaimedJob) -> pb::Assignment {
    let job = claimed.job;
    let policy = job.lifecycle.policy;
    pb::Assignment {
        job_id: job.id.to_string(),
        kind: job.kind,
        payload_json: job.payload.to_string(),
        priority: job.priority,
        attempt: job.lifecycle.attempt,
        max_attempts: policy.max_attempts,
        lease: Some(lease_to_pb(job.id, claimed.lease)),
        timeout: (policy.timeout_s > 0)
            .then(|| duration_to_pb(Duration::from_secs(u64::from(policy.timeout_s)))),
        input_artifact_ids: job.inputs.iter().map(ToString::to_string).collect(),
        requirements: Some(pb::Requirements {
            labels: job.requirements.labels.into_iter().collect(),
            tags: job.requirements.tags,
            resources: job.requirements.resources.into_iter().collect(),
        }),
        organization_id: job.organization.id,
        created_at: Some(timestamp(job.created_at)),
    }
}

fn pushed_to_pb(pushed: Pushed) -> pb::AttachResponse {
    let body = match pushed.event {
        PushedEvent::Assignment(claimed) => ServerBody::Assignment(assignment_to_pb(*claimed)),
        PushedEvent::Cancel(cancel) => ServerBody::Cancel(pb::Cancel {
            job_id: cancel.job.to_string(),
            lease_epoch: cancel.epoch,
            reason: match cancel.reason {
                CancelReason::Requested => pb::CancelReason::Requested,
                CancelReason::LeaseLost => pb::CancelReason::LeaseLost,
            } as i32,
            message: cancel.message,
            grace: Some(duration_to_pb(cancel.grace)),
        }),
        PushedEvent::Recycle(recycle) => ServerBody::Recycle(pb::Recycle {
            reconnect_by: Some(timestamp(recycle.reconnect_by)),
            reason: match recycle.reason {
                RecycleReason::StreamLifetime => pb::RecycleReason::StreamLifetime,
                RecycleReason::Shutdown => pb::RecycleReason::Shutdown,
            } as i32,
            message: match recycle.reason {
                RecycleReason::StreamLifetime => "the stream reached its planned lifetime".into(),
                RecycleReason::Shutdown => "the coordinator is shutting down".into(),
            },
        }),
    };
    pb::AttachResponse {
        sequence: pushed.sequence,
        body: Some(body),
    }
}

fn target(job: &str, epoch: u64) -> Result<LeasedJob, Status> {
    if epoch == 0 {
        return Err(invalid(
            "lease_epoch",
            "required: the epoch of the lease the job was assigned under",
        ));
    }
    Ok(LeasedJob {
        job: job_id("job_id", job)?,
        epoch: Some(epoch),
    })
}

fn progress_from_pb(request: pb::ReportProgressRequest) -> Result<JobReport, Status> {
    let target = target(&request.job_id, request.lease_epoch)?;
    let percent = request
        .percent
        .ok_or_else(|| invalid("percent", "required, from 0 to 100"))?;
    Ok(JobReport::Progress(
        target,
        Progress {
            percent,
            message: request.message,
        },
    ))
}

fn level_from_pb(value: i32) -> Result<LogLevel, Status> {
    Ok(match pb::LogLevel::try_from(value) {
        Ok(pb::LogLevel::Unspecified | pb::LogLevel::Info) => LogLevel::Info,
        Ok(pb::LogLevel::Trace) => LogLevel::Trace,
        Ok(pb::LogLevel::Debug) => LogLevel::Debug,
        Ok(pb::LogLevel::Warn) => LogLevel::Warn,
        Ok(pb::LogLevel::Error) => LogLevel::Error,
        Err(_) => return Err(invalid("entries[].level", "not a LogLevel")),
    })
}

fn logs_from_pb(request: pb::AppendLogsRequest) -> Result<JobReport, Status> {
    let target = target(&request.job_id, request.lease_epoch)?;
    if request.entries.is_empty() {
        return Err(invalid("entries", "at least one entry"));
    }
    let entries = request
        .entries
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            let metadata = if entry.metadata_json.is_empty() {
                None
            } else {
                let value: serde_json::Value = serde_json::from_str(&entry.metadata_json)
                    .map_err(|_| invalid(&format!("entries[{index}].metadata_json"), "not JSON"))?;
                if !value.is_object() {
                    return Err(invalid(
                        &format!("entries[{index}].metadata_json"),
                        "must be a JSON object",
                    ));
                }
                Some(value)
            };
            Ok(NewLogEntry {
                seq: entry.seq,
                level: level_from_pb(entry.level)?,
                message: entry.message,
                metadata,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(JobReport::Logs(target, entries))
}

fn signature_from_json(text: &str) -> Result<ResultSignature, Status> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|_| invalid("signature_json", "not JSON"))?;
    let field = |name: &str| {
        value
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| invalid(&format!("signature_json.{name}"), "required, a string"))
    };
    Ok(ResultSignature {
        sha256: field("sha256")?,
        signature: field("signature")?,
        runner_id: field("runner_id")?,
        signed_at: field("signed_at")?,
    })
}

fn complete_from_pb(request: pb::CompleteJobRequest) -> Result<JobReport, Status> {
    let target = target(&request.job_id, request.lease_epoch)?;
    let result = if request.result_json.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&request.result_json)
            .map_err(|_| invalid("result_json", "not JSON"))?
    };
    let outputs = request
        .outputs
        .into_iter()
        .map(|(name, id)| {
            id.parse::<ArtifactId>()
                .map(|id| (name.clone(), id))
                .map_err(|_| {
                    invalid(
                        &format!("outputs.{name}"),
                        "not an artifact id (sha256:...)",
                    )
                })
        })
        .collect::<Result<BTreeMap<_, _>, Status>>()?;
    let sig = request
        .signature_json
        .as_deref()
        .map(signature_from_json)
        .transpose()?;
    Ok(JobReport::Complete {
        target,
        result,
        outputs,
        sig,
    })
}

fn fail_from_pb(request: pb::FailJobRequest) -> Result<JobReport, Status> {
    let target = target(&request.job_id, request.lease_epoch)?;
    let reason = match pb::FailureReason::try_from(request.reason) {
        Ok(pb::FailureReason::Unspecified | pb::FailureReason::RunnerError) => {
            FailureReason::RunnerError
        }
        Ok(pb::FailureReason::Cancelled) => FailureReason::Cancelled,
        Err(_) => return Err(invalid("reason", "not a FailureReason")),
    };
    Ok(JobReport::Fail(
        target,
        FailureReport {
            message: Some(request.error_message),
            reason: Some(reason),
            retryable: request.retryable,
        },
    ))
}

fn completed_to_pb(view: &JobView) -> pb::CompleteJobResponse {
    pb::CompleteJobResponse {
        signature_verified: view.job.result_signature.is_some(),
    }
}

fn failed_to_pb(view: &JobView) -> pb::FailJobResponse {
    use muster_core::JobState;
    let (outcome, retry_at) = match view.job.state() {
        JobState::Pending => (
            pb::FailOutcome::RetryScheduled,
            Some(timestamp(view.job.lifecycle.run_after)),
        ),
        JobState::Cancelled => (pb::FailOutcome::Cancelled, None),
        _ => (pb::FailOutcome::Failed, None),
    };
    pb::FailJobResponse {
        outcome: outcome as i32,
        retry_at,
    }
}

fn answer_to_pb(answer: JobReportAnswer) -> pb::job_ack::Result {
    match answer {
        JobReportAnswer::Progress(stop) => {
            pb::job_ack::Result::Progress(pb::ReportProgressResponse {
                cancel_requested: stop.cancel,
            })
        }
        JobReportAnswer::Logs(appended) => pb::job_ack::Result::Logs(pb::AppendLogsResponse {
            next_seq: appended.next_seq,
            cancel_requested: appended.cancel,
        }),
        JobReportAnswer::Complete(view) => pb::job_ack::Result::Complete(completed_to_pb(&view)),
        JobReportAnswer::Fail(view) => pb::job_ack::Result::Fail(failed_to_pb(&view)),
    }
}

/// The protocol's error code for a service error.
fn error_code_to_pb(code: ErrorCode) -> pb::ErrorCode {
    match code {
        ErrorCode::LeaseLost => pb::ErrorCode::LeaseLost,
        ErrorCode::NotFound | ErrorCode::OrganizationNotFound => pb::ErrorCode::NotFound,
        ErrorCode::InvalidSignature => pb::ErrorCode::InvalidSignature,
        ErrorCode::SignatureRequired => pb::ErrorCode::SignatureRequired,
        ErrorCode::ResultSchemaMismatch => pb::ErrorCode::ResultSchemaMismatch,
        ErrorCode::UnknownArtifact => pb::ErrorCode::UnknownArtifact,
        ErrorCode::CapabilityNotRegistered => pb::ErrorCode::CapabilityNotRegistered,
        ErrorCode::RunnerNotEnrolled => pb::ErrorCode::NotEnrolled,
        ErrorCode::TokenExpired => pb::ErrorCode::TokenExpired,
        ErrorCode::TooManyRequests
        | ErrorCode::ArtifactQuotaExceeded
        | ErrorCode::InsufficientStorage => pb::ErrorCode::ResourceExhausted,
        ErrorCode::Unavailable | ErrorCode::RequestTimeout => pb::ErrorCode::Unavailable,
        ErrorCode::Internal => pb::ErrorCode::Internal,
        _ => pb::ErrorCode::InvalidArgument,
    }
}

fn job_error(error: &ServiceError, lease_lost: Option<pb::LeaseLost>) -> pb::JobError {
    pb::JobError {
        code: error_code_to_pb(error.code()) as i32,
        message: error.public_message(),
        detail: lease_lost.map(pb::job_error::Detail::LeaseLost),
    }
}

fn lease_lost_of(refusal: &LeaseRefusal, target: LeasedJob) -> Option<pb::LeaseLost> {
    refusal.current_epoch.map(|current_epoch| pb::LeaseLost {
        job_id: target.job.to_string(),
        current_epoch,
        sent_epoch: target.epoch.unwrap_or(0),
    })
}

fn refusal_to_pb(refusal: &LeaseRefusal, target: LeasedJob) -> pb::JobError {
    job_error(&refusal.error, lease_lost_of(refusal, target))
}

fn stream_error(request_id: &str, error: &ServiceError, fatal: bool) -> pb::StreamError {
    pb::StreamError {
        request_id: request_id.to_string(),
        code: error_code_to_pb(error.code()) as i32,
        message: error.public_message(),
        fatal,
    }
}

/// A unary refusal: the status of the service error, with a `google.rpc.Status`-shaped detail
/// holding the JobError (and, for `lease_lost`, a LeaseLost on its own) packed as Any.
fn refusal_status(refusal: LeaseRefusal, target: LeasedJob) -> Status {
    let lease_lost = lease_lost_of(&refusal, target);
    let base = status_of(refusal.error.clone());
    let code = if refusal.error.code() == ErrorCode::LeaseLost {
        Code::FailedPrecondition
    } else {
        base.code()
    };
    let mut details = vec![prost_types::Any {
        type_url: "type.googleapis.com/muster.runner.v1.JobError".into(),
        value: job_error(&refusal.error, lease_lost.clone()).encode_to_vec(),
    }];
    if let Some(lease_lost) = lease_lost {
        details.push(prost_types::Any {
            type_url: LEASE_LOST_TYPE_URL.into(),
            value: lease_lost.encode_to_vec(),
        });
    }
    let rpc_status = RpcStatus {
        code: code as i32,
        message: base.message().to_string(),
        details,
    };
    let mut status = Status::with_details(code, base.message(), rpc_status.encode_to_vec().into());
    *status.metadata_mut() = base.metadata().clone();
    status
}

/// The type URL of a LeaseLost detail.
pub const LEASE_LOST_TYPE_URL: &str = "type.googleapis.com/muster.runner.v1.LeaseLost";

/// `google.rpc.Status`, the shape of `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// The LeaseLost detail of a unary refusal, when it has one.
pub fn lease_lost_detail(status: &Status) -> Option<pb::LeaseLost> {
    let rpc_status = RpcStatus::decode(status.details()).ok()?;
    rpc_status
        .details
        .iter()
        .find(|any| any.type_url == LEASE_LOST_TYPE_URL)
        .and_then(|any| pb::LeaseLost::decode(any.value.as_slice()).ok())
}
