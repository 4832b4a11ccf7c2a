//! Runner routes: heartbeat, claim (with long polling), and the job-scoped calls of the lease
//! holder. Each parses, calls the coordinator, and converts; every job-scoped answer says
//! whether to stop (`cancel`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use muster_api as wire;
use muster_core::{Capabilities, JobId};
use muster_service::protocol::{
    BatchCompletion, Claim, ClaimedJob, FailureReport, LeasedJob, RunnerHeartbeat,
    checked_progress, progress_from_value,
};

use crate::convert::{
    lease_to_wire, log_entry_from_wire, outputs_from_wire, outputs_to_wire, reason_from_wire,
    view_to_wire,
};
use crate::error::error_detail;
use crate::extract::{JsonBody, LeaseEpoch, PathId, RawBody, RunnerCaller, parse_id};
use crate::state::AppState;
use crate::{ApiError, Json};

/// A body that may be empty (the call then means "no details"), or JSON.
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        crate::extract::parse_json(body)
    }
}

fn leased_job(id: &str, epoch: Option<u64>) -> Result<LeasedJob, ApiError> {
    Ok(LeasedJob {
        job: JobId(parse_id(id, "job")?),
        epoch,
    })
}

/// Runner heartbeat.
#[utoipa::path(post, path = "/api/v1/runner/heartbeat", tag = "runner", request_body = wire::RunnerHeartbeat,
    responses(
        (status = 200, description = "when to beat next, and which of the listed jobs to stop", body = wire::RunnerHeartbeatResponse),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors,
    ),
    security(("runner_token" = [])))]
pub(crate) async fn runner_heartbeat(
    State(state): State<AppState>,
    RunnerCaller(caller): RunnerCaller,
    JsonBody(request): JsonBody<wire::RunnerHeartbeat>,
) -> Result<Json<wire::RunnerHeartbeatResponse>, ApiError> {
    let beat = RunnerHeartbeat {
        draining: request.status == wire::RunnerActivity::Draining,
        jobs: request.jobs.into_iter().map(JobId).collect(),
        hostname: request.hostname,
        version: request.version,
    };
    let answer = state.coordinator.runner_heartbeat(&caller, beat).await?;
    Ok(Json(wire::RunnerHeartbeatResponse {
        heartbeat_interval_ms: answer.heartbeat_interval.as_millis() as u64,
        cancel: answer.cancel.into_iter().map(|id| id.0).collect(),
    }))
}

fn claimed_to_wire(claimed: ClaimedJob) -> wire::ClaimedJob {
    let job = claimed.job;
    wire::ClaimedJob {
        id: job.id.0,
        kind: job.kind,
        payload: job.payload,
        attempt: job.lifecycle.attempt,
        max_attempts: job.lifecycle.policy.max_attempts,
        timeout_s: job.lifecycle.policy.timeout_s,
        inputs: job.inputs.iter().map(ToString::to_string).collect(),
        lease: lease_to_wire(claimed.lease),
    }
}

/// Claim jobs. Answers 204 when nothing came within `wait_ms`.
#[utoipa::path(post, path = "/api/v1/runner/claim", tag = "runner", request_body = wire::ClaimJobs,
    responses(
        (status = 200, description = "jobs leased to the caller", body = wire::ClaimedJobs),
        (status = 204, description = "no job came within wait_ms (or the runner is draining)"),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors,
    ),
    security(("runner_token" = [])))]
pub(crate) async fn claim_jobs(
    State(state): State<AppState>,
    RunnerCaller(caller): RunnerCaller,
    JsonBody(request): JsonBody<wire::ClaimJobs>,
) -> Result<Response, ApiError> {
    let claim = Claim {
        kinds: request.kinds,
        offer: Capabilities {
            labels: request.labels,
            tags: request.tags,
            resources: request.resources,
        },
        max_jobs: request.max_jobs,
        wait_ms: request.wait_ms,
    };
    let claimed = state.coordinator.claim(&caller, claim).await?;
    if claimed.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let jobs = claimed.into_iter().map(claimed_to_wire).collect();
    Ok(Json(wire::ClaimedJobs { jobs }).into_response())
}

/// Job heartbeat: extends the lease by the job's `lease_ttl_s`.
#[utoipa::path(post, path = "/api/v1/runner/jobs/{id}/heartbeat", tag = "runner", request_body = wire::JobHeartbeat,
    params(crate::openapi::JobIdPath, crate::openapi::LeaseEpochHeader),
    responses(
        (status = 200, description = "the extended lease", body = wire::JobHeartbeatResponse),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::LeaseErrors,
    ),
    security(("runner_token" = [])))]
pub(crate) async fn job_heartbeat(
    State(state): State<AppState>,
    RunnerCaller(caller): RunnerCaller,
    LeaseEpoch(epoch): LeaseEpoch,
    PathId(id): PathId,
    RawBody(body): RawBody,
) -> Result<Json<wire::JobHeartbeatResponse>, ApiError> {
    let target = leased_job(&id, epoch)?;
    let request: wire::JobHeartbeat = optional_json(&body)?;
    let progress = request
        .progress
        .filter(|value| !value.is_null())
        .map(progress_from_value)
        .transpose()?;
    let events = request.events.unwrap_or_default();
    let extended = state
        .coordinator
        .job_heartbeat(&caller, target, progress, events)
        .await?;
    Ok(Json(wire::JobHeartbeatResponse {
        lease: lease_to_wire(extended.lease),
        cancel: extended.cancel,
    }))
}

/// Report progress (0–100) and a message.
#[utoipa::path(put, path = "/api/v1/runner/jobs/{id}/progress", tag = "runner", request_body = wire::ProgressReport,
    params(crate::openapi::JobIdPath, crate::openapi::LeaseEpochHeader),
    responses(
        (status = 200, description = "recorded", body = wire::CancelFlag),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::LeaseErrors,
    ),
    security(("runner_token" = [])))]
pub(crate) async fn report_progress(
    State(state): State<AppState>,
    RunnerCaller(caller): RunnerCaller,
    LeaseEpoch(epoch): LeaseEpoch,
    PathId(id): PathId,
    JsonBody(request): JsonBody<wire::ProgressReport>,
) -> Result<Json<wire::CancelFlag>, ApiError> {
    let target = leased_job(&id, epoch)?;
    let progress = checked_progress(request.progress, request.message)?;
    let stop = state
        .coordinator
        .report_progress(&caller, target, progress)
        .await?;
    Ok(Json(wire::CancelFlag {
        cancel: stop.cancel,
    }))
}

/// Append log entries: one entry, or `{"entries": [...]}`.
#[utoipa::path(post, path = "/api/v1/runner/jobs/{id}/log", tag = "runner",
    request_body(content = inline(crate::openapi::LogBody), description = "one entry, or `{\"entries\": [...]}`"),
    params(crate::openapi::JobIdPath, crate::openapi::LeaseEpochHeader),
    responses(
        (status = 200, description = "stored", body = wire::LogAppended),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::LeaseErrors,
    ),
    security(("runner_token" = [])))]
pub(crate) async fn append_log(
    State(state): State<AppState>,
    RunnerCaller(caller): RunnerCaller,
    LeaseEpoch(epoch): LeaseEpoch,
    PathId(id): PathId,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Json<wire::LogAppended>, ApiError> {
    let target = leased_job(&id, epoch)?;
    let entries: Vec<wire::NewLogEntry> = if body.get("entries").is_some() {
        let batch: wire::LogBatch = crate::extract::from_value(body)?;
        batch.entries
    } else {
        vec![crate::extract::from_value(body)?]
    };
    let entries = entries.into_iter().map(log_entry_from_wire).collect();
    let appended = state
        .coordinator
        .append_logs(&caller, target, entries)
        .await?;
    Ok(Json(wire::LogAppended {
        next_seq: appended.next_seq,
        cancel: appended.cancel,
    }))
}

/// Complete a job with its result, optionally recording outputs in the same commit.
#[utoipa::path(post, path = "/api/v1/runner/jobs/{id}/complete", tag = "runner", request_body = wire::CompleteJob,
    params(crate::openapi::JobIdPath, crate::openapi::LeaseEpochHeader),
    responses(
        (status = 200, description = "the completed job", body = wire::Job),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::LeaseErrors, crate::openapi::ArtifactErrors,
    ),
    security(("runner_token" = [])))]
pub(crate) async fn complete_job(
    State(state): State<AppState>,
    RunnerCaller(caller): RunnerCaller,
    LeaseEpoch(epoch): LeaseEpoch,
    PathId(id): PathId,
    RawBody(body): RawBody,
) -> Result<Json<wire::Job>, ApiError> {
    let target = leased_job(&id, epoch)?;
    let request: wire::CompleteJob = optional_json(&body)?;
    let result = request.result.unwrap_or(serde_json::Value::Null);
    let outputs = outputs_from_wire(request.outputs.unwrap_or_default())?;
    let sig = request.sig.map(crate::convert::result_signature_from_wire);
    let view = state
        .coordinator
        .complete_signed(&caller, target, result, sig, outputs)
        .await?;
    Ok(Json(view_to_wire(view)))
}

/// Record artifacts the job produced, by name: `{"name", "artifact_id"}` or
/// `{"outputs": {name: artifact_id}}`. A name recorded again names the new artifact.
#[utoipa::path(post, path = "/api/v1/runner/jobs/{id}/outputs", tag = "runner", request_body = wire::RecordOutputs,
    params(crate::openapi::JobIdPath, crate::openapi::LeaseEpochHeader),
    responses(
        (status = 200, description = "every output the job now has", body = wire::OutputsRecorded),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::LeaseErrors, crate::openapi::ArtifactErrors,
    ),
    security(("runner_token" = [])))]
pub(crate) async fn record_outputs(
    State(state): State<AppState>,
    RunnerCaller(caller): RunnerCaller,
    LeaseEpoch(epoch): LeaseEpoch,
    PathId(id): PathId,
    JsonBody(request): JsonBody<wire::RecordOutputs>,
) -> Result<Json<wire::OutputsRecorded>, ApiError> {
    let target = leased_job(&id, epoch)?;
    let outputs = match request {
        wire::RecordOutputs {
            name: Some(name),
            artifact_id: Some(artifact_id),
            outputs: None,
        } => std::collections::BTreeMap::from([(name, artifact_id)]),
        wire::RecordOutputs {
            name: None,
            artifact_id: None,
            outputs: Some(outputs),
        } => outputs,
        _ => {
            return Err(ApiError::invalid_input(
                "send either name and artifact_id, or outputs (an object of at least one name to artifact id)",
            ));
        }
    };
    let outputs = outputs_from_wire(outputs)?;
    let recorded = state
        .coordinator
        .record_outputs(&caller, target, outputs)
        .await?;
    Ok(Json(wire::OutputsRecorded {
        outputs: outputs_to_wire(recorded.outputs),
        cancel: recorded.cancel,
    }))
}

/// Complete many jobs in one commit, each fenced on its own.
#[utoipa::path(post, path = "/api/v1/runner/complete", tag = "runner", request_body = wire::CompleteJobs,
    responses(
        (status = 200, description = "each completion's outcome, in the order sent", body = wire::CompletionOutcomes),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors,
    ),
    security(("runner_token" = [])))]
pub(crate) async fn complete_jobs(
    State(state): State<AppState>,
    RunnerCaller(caller): RunnerCaller,
    JsonBody(request): JsonBody<wire::CompleteJobs>,
) -> Result<Json<wire::CompletionOutcomes>, ApiError> {
    let ids: Vec<uuid::Uuid> = request.items.iter().map(|item| item.id).collect();
    let completions = request
        .items
        .into_iter()
        .map(|item| BatchCompletion {
            job: JobId(item.id),
            epoch: item.epoch,
            result: item.result.unwrap_or(serde_json::Value::Null),
            sig: item.sig.map(crate::convert::result_signature_from_wire),
        })
        .collect();
    let outcomes = state
        .coordinator
        .complete_many(&caller, completions)
        .await?;
    let items = ids
        .into_iter()
        .zip(outcomes)
        .map(|(id, outcome)| match outcome {
            Ok(()) => wire::CompletionOutcome {
                id,
                ok: Some(true),
                error: None,
            },
            Err(error) => wire::CompletionOutcome {
                id,
                ok: None,
                error: Some(error_detail(&error)),
            },
        })
        .collect();
    Ok(Json(wire::CompletionOutcomes { items }))
}

/// Fail the attempt; retried while attempts remain unless `retryable` is false.
#[utoipa::path(post, path = "/api/v1/runner/jobs/{id}/fail", tag = "runner", request_body = wire::FailJob,
    params(crate::openapi::JobIdPath, crate::openapi::LeaseEpochHeader),
    responses(
        (status = 200, description = "the job: pending again when retried, else failed or cancelled", body = wire::Job),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::LeaseErrors,
    ),
    security(("runner_token" = [])))]
pub(crate) async fn fail_job(
    State(state): State<AppState>,
    RunnerCaller(caller): RunnerCaller,
    LeaseEpoch(epoch): LeaseEpoch,
    PathId(id): PathId,
    JsonBody(request): JsonBody<wire::FailJob>,
) -> Result<Json<wire::Job>, ApiError> {
    let target = leased_job(&id, epoch)?;
    let report = FailureReport {
        message: request.error,
        reason: request.reason.map(reason_from_wire),
        retryable: request.retryable,
    };
    let view = state.coordinator.fail(&caller, target, report).await?;
    Ok(Json(view_to_wire(view)))
}

/// Replace the job's step DAG.
#[utoipa::path(put, path = "/api/v1/runner/jobs/{id}/dag", tag = "runner", request_body = wire::Dag,
    params(crate::openapi::JobIdPath, crate::openapi::LeaseEpochHeader),
    responses(
        (status = 200, description = "stored", body = wire::CancelFlag),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::LeaseErrors,
    ),
    security(("runner_token" = [])))]
pub(crate) async fn sync_dag(
    State(state): State<AppState>,
    RunnerCaller(caller): RunnerCaller,
    LeaseEpoch(epoch): LeaseEpoch,
    PathId(id): PathId,
    JsonBody(dag): JsonBody<wire::Dag>,
) -> Result<Json<wire::CancelFlag>, ApiError> {
    let target = leased_job(&id, epoch)?;
    let stop = state
        .coordinator
        .sync_dag(&caller, target, dag.nodes, dag.edges)
        .await?;
    Ok(Json(wire::CancelFlag {
        cancel: stop.cancel,
    }))
}
