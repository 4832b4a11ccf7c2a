//! Runner routes: heartbeat, claim (with long polling), and the job-scoped calls of the lease
//! holder. Every job-scoped answer says whether to stop (`cancel`).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use muster_api as wire;
use muster_core::{Capabilities, JobError, JobId, NewLogEntry, RunnerId};
use muster_store::{ClaimRequest, ClaimedJob, CompletionItem, JobCall};

use crate::convert::{
    checked_progress, lease_to_wire, log_entry_from_wire, outputs_from_wire, outputs_to_wire,
    progress_from_value, reason_from_wire,
};
use crate::extract::{JsonBody, LeaseEpoch, PathId, RawBody, RunnerAuth, parse_id};
use crate::routes::artifacts::ensure_artifacts_exist;
use crate::routes::jobs::job_to_user;
use crate::state::AppState;
use crate::{ApiError, Json};

use muster_api::limits::{
    MAX_BATCH_COMPLETIONS, MAX_CLAIM_JOBS, MAX_CLAIM_KINDS, MAX_CLAIM_WAIT_MS, MAX_DAG_NODES,
    MAX_HEARTBEAT_JOBS, MAX_LOG_ENTRIES,
};
/// A long poll re-checks the store at least this often, for jobs that became due by time alone
/// (a retry's backoff ending) and for jobs submitted through another coordinator.
const LONG_POLL_RECHECK: Duration = Duration::from_millis(250);

/// A body that may be empty (the call then means "no details"), or JSON.
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        crate::extract::parse_json(body)
    }
}

fn job_call(runner: RunnerId, id: &str, epoch: Option<u64>) -> Result<JobCall, ApiError> {
    Ok(JobCall {
        runner,
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
    RunnerAuth(runner): RunnerAuth,
    JsonBody(request): JsonBody<wire::RunnerHeartbeat>,
) -> Result<Json<wire::RunnerHeartbeatResponse>, ApiError> {
    if request.jobs.len() > MAX_HEARTBEAT_JOBS {
        return Err(ApiError::InvalidInput(format!(
            "jobs: at most {MAX_HEARTBEAT_JOBS} ids"
        )));
    }
    for (field, text) in [
        ("hostname", &request.hostname),
        ("version", &request.version),
    ] {
        if let Some(text) = text {
            muster_core::check_runner_report(field, text)
                .map_err(|error| ApiError::InvalidInput(error.to_string()))?;
        }
    }
    let beat = muster_store::RunnerBeat {
        runner,
        draining: request.status == wire::RunnerActivity::Draining,
        jobs: request.jobs.into_iter().map(JobId).collect(),
        hostname: request.hostname,
        version: request.version,
    };
    let draining = beat.draining;
    let cancel = state
        .store
        .runner_heartbeat(beat, state.clock.now())
        .await?;
    state.draining_runners.set(runner, draining);
    Ok(Json(wire::RunnerHeartbeatResponse {
        heartbeat_interval_ms: state.config.heartbeat_interval.as_millis() as u64,
        cancel: cancel.into_iter().map(|id| id.0).collect(),
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
    RunnerAuth(runner): RunnerAuth,
    JsonBody(request): JsonBody<wire::ClaimJobs>,
) -> Result<Response, ApiError> {
    if request.kinds.is_empty() {
        return Err(ApiError::InvalidInput(
            "kinds: name at least one kind this runner can run".into(),
        ));
    }
    if request.kinds.len() > MAX_CLAIM_KINDS {
        return Err(ApiError::InvalidInput(format!(
            "kinds: at most {MAX_CLAIM_KINDS} kinds, got {}",
            request.kinds.len()
        )));
    }
    for (index, kind) in request.kinds.iter().enumerate() {
        muster_core::check_kind(&format!("kinds[{index}]"), kind)
            .map_err(|error| ApiError::InvalidInput(error.to_string()))?;
    }
    let max_jobs = request.max_jobs.unwrap_or(1);
    if max_jobs == 0 || max_jobs > MAX_CLAIM_JOBS {
        return Err(ApiError::InvalidInput(format!(
            "max_jobs: must be between 1 and {MAX_CLAIM_JOBS}, got {max_jobs}"
        )));
    }
    let wait_ms = request.wait_ms.unwrap_or(0);
    if wait_ms > MAX_CLAIM_WAIT_MS {
        return Err(ApiError::InvalidInput(format!(
            "wait_ms: must be at most {MAX_CLAIM_WAIT_MS}, got {wait_ms}"
        )));
    }
    let offer = Capabilities {
        labels: request.labels,
        tags: request.tags,
        resources: request.resources,
    };
    offer
        .validate("")
        .map_err(|error| ApiError::InvalidInput(error.to_string()))?;
    let claim = ClaimRequest {
        runner,
        kinds: request.kinds,
        offer,
        max_jobs,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let mut signal = state.store.pending_signal();
    loop {
        // A draining runner claims nothing more, including in a long poll it began before.
        if state.draining_runners.contains(runner) {
            state.metrics.record_claim(std::iter::empty());
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        signal.borrow_and_update();
        let now = state.clock.now();
        let claimed = state.store.claim_jobs(claim.clone(), now).await?;
        if !claimed.is_empty() {
            state.metrics.record_claim(claimed.iter().map(|claimed| {
                let ready = claimed.job.created_at.max(claimed.job.lifecycle.run_after);
                now.millis_since(ready) as f64 / 1000.0
            }));
            let jobs = claimed.into_iter().map(claimed_to_wire).collect();
            return Ok(Json(wire::ClaimedJobs { jobs }).into_response());
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            state.metrics.record_claim(std::iter::empty());
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        // A long poll must not hold up a graceful shutdown for up to wait_ms.
        tokio::select! {
            _ = tokio::time::timeout(remaining.min(LONG_POLL_RECHECK), signal.changed()) => {}
            _ = state.draining_runners.changed() => {}
            _ = state.shutdown.cancelled() => {
                return Err(ApiError::Unavailable("the coordinator is shutting down".into()));
            }
        }
    }
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
    RunnerAuth(runner): RunnerAuth,
    LeaseEpoch(epoch): LeaseEpoch,
    PathId(id): PathId,
    RawBody(body): RawBody,
) -> Result<Json<wire::JobHeartbeatResponse>, ApiError> {
    let call = job_call(runner, &id, epoch)?;
    let request: wire::JobHeartbeat = optional_json(&body)?;
    let progress = request
        .progress
        .filter(|value| !value.is_null())
        .map(progress_from_value)
        .transpose()?;
    let events = request.events.unwrap_or_default();
    if events.len() > MAX_LOG_ENTRIES {
        return Err(ApiError::InvalidInput(format!(
            "events: at most {MAX_LOG_ENTRIES} per heartbeat"
        )));
    }
    let events = events
        .into_iter()
        .map(|event| NewLogEntry {
            seq: None,
            level: muster_core::LogLevel::Info,
            message: match &event {
                serde_json::Value::String(text) => text.clone(),
                other => other
                    .get("message")
                    .and_then(|message| message.as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| other.to_string()),
            },
            metadata: (!event.is_string()).then_some(event),
        })
        .collect::<Vec<_>>();
    let had_events = !events.is_empty();
    let ack = state
        .store
        .job_heartbeat(call, progress, events, state.clock.now())
        .await?;
    if had_events {
        state.job_changes.changed(call.job);
    }
    let lease = ack
        .lease
        .ok_or_else(|| ApiError::Internal("heartbeat answered without a lease".into()))?;
    Ok(Json(wire::JobHeartbeatResponse {
        lease: lease_to_wire(lease),
        cancel: ack.cancel,
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
    RunnerAuth(runner): RunnerAuth,
    LeaseEpoch(epoch): LeaseEpoch,
    PathId(id): PathId,
    JsonBody(request): JsonBody<wire::ProgressReport>,
) -> Result<Json<wire::CancelFlag>, ApiError> {
    let call = job_call(runner, &id, epoch)?;
    let progress = checked_progress(request.progress, request.message)?;
    let ack = state
        .store
        .report_progress(call, progress, state.clock.now())
        .await?;
    Ok(Json(wire::CancelFlag { cancel: ack.cancel }))
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
    RunnerAuth(runner): RunnerAuth,
    LeaseEpoch(epoch): LeaseEpoch,
    PathId(id): PathId,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Json<wire::LogAppended>, ApiError> {
    let call = job_call(runner, &id, epoch)?;
    let entries: Vec<wire::NewLogEntry> = if body.get("entries").is_some() {
        let batch: wire::LogBatch = crate::extract::from_value(body)?;
        batch.entries
    } else {
        vec![crate::extract::from_value(body)?]
    };
    if entries.len() > MAX_LOG_ENTRIES {
        return Err(ApiError::InvalidInput(format!(
            "entries: at most {MAX_LOG_ENTRIES} per call"
        )));
    }
    let entries = entries.into_iter().map(log_entry_from_wire).collect();
    let ack = state
        .store
        .append_logs(call, entries, state.clock.now())
        .await?;
    state.job_changes.changed(call.job);
    Ok(Json(wire::LogAppended {
        next_seq: ack.next_seq,
        cancel: ack.cancel,
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
    RunnerAuth(runner): RunnerAuth,
    LeaseEpoch(epoch): LeaseEpoch,
    PathId(id): PathId,
    RawBody(body): RawBody,
) -> Result<Json<wire::Job>, ApiError> {
    let call = job_call(runner, &id, epoch)?;
    let request: wire::CompleteJob = optional_json(&body)?;
    let result = request.result.unwrap_or(serde_json::Value::Null);
    let outputs = outputs_from_wire(request.outputs.unwrap_or_default())?;
    ensure_artifacts_exist(
        &state,
        outputs
            .iter()
            .map(|(name, id)| (format!("outputs.{name}"), *id))
            .collect(),
    )
    .await?;
    let job = state
        .store
        .complete_job(call, result, outputs, state.clock.now())
        .await?;
    state.metrics.record_completions(1);
    state.job_changes.changed(call.job);
    Ok(Json(job_to_user(&state, job).await))
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
    RunnerAuth(runner): RunnerAuth,
    LeaseEpoch(epoch): LeaseEpoch,
    PathId(id): PathId,
    JsonBody(request): JsonBody<wire::RecordOutputs>,
) -> Result<Json<wire::OutputsRecorded>, ApiError> {
    let call = job_call(runner, &id, epoch)?;
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
        } if !outputs.is_empty() => outputs,
        _ => {
            return Err(ApiError::InvalidInput(
                "send either name and artifact_id, or outputs (an object of at least one name to artifact id)".into(),
            ));
        }
    };
    let outputs = outputs_from_wire(outputs)?;
    ensure_artifacts_exist(
        &state,
        outputs
            .iter()
            .map(|(name, id)| (format!("outputs.{name}"), *id))
            .collect(),
    )
    .await?;
    let recorded = state
        .store
        .record_outputs(call, outputs, state.clock.now())
        .await?;
    Ok(Json(wire::OutputsRecorded {
        outputs: outputs_to_wire(recorded.outputs),
        cancel: recorded.ack.cancel,
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
    RunnerAuth(runner): RunnerAuth,
    JsonBody(request): JsonBody<wire::CompleteJobs>,
) -> Result<Json<wire::CompletionOutcomes>, ApiError> {
    if request.items.len() > MAX_BATCH_COMPLETIONS {
        return Err(ApiError::InvalidInput(format!(
            "items: at most {MAX_BATCH_COMPLETIONS} per call"
        )));
    }
    let ids: Vec<uuid::Uuid> = request.items.iter().map(|item| item.id).collect();
    let items = request
        .items
        .into_iter()
        .map(|item| CompletionItem {
            job: JobId(item.id),
            epoch: item.epoch,
            result: item.result.unwrap_or(serde_json::Value::Null),
        })
        .collect();
    let outcomes = state
        .store
        .complete_jobs(runner, items, state.clock.now())
        .await?;
    let mut completed = 0;
    let items = ids
        .into_iter()
        .zip(outcomes)
        .map(|(id, outcome)| match outcome {
            Ok(()) => {
                completed += 1;
                state.job_changes.changed(JobId(id));
                wire::CompletionOutcome {
                    id,
                    ok: Some(true),
                    error: None,
                }
            }
            Err(error) => wire::CompletionOutcome {
                id,
                ok: None,
                error: Some(ApiError::from(error).body().error),
            },
        })
        .collect();
    state.metrics.record_completions(completed);
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
    RunnerAuth(runner): RunnerAuth,
    LeaseEpoch(epoch): LeaseEpoch,
    PathId(id): PathId,
    JsonBody(request): JsonBody<wire::FailJob>,
) -> Result<Json<wire::Job>, ApiError> {
    let call = job_call(runner, &id, epoch)?;
    let reason = request
        .reason
        .map(reason_from_wire)
        .unwrap_or(muster_core::FailureReason::RunnerError);
    let message = request
        .error
        .filter(|message| !message.trim().is_empty())
        .unwrap_or_else(|| "the runner reported a failure without a message".to_string());
    let message: String = message.chars().take(16 * 1024).collect();
    let error = JobError { reason, message };
    let job = state
        .store
        .fail_job(
            call,
            error,
            request.retryable.unwrap_or(true),
            state.clock.now(),
        )
        .await?;
    state.metrics.record_failure(reason, 1);
    state.job_changes.changed(call.job);
    Ok(Json(job_to_user(&state, job).await))
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
    RunnerAuth(runner): RunnerAuth,
    LeaseEpoch(epoch): LeaseEpoch,
    PathId(id): PathId,
    JsonBody(dag): JsonBody<wire::Dag>,
) -> Result<Json<wire::CancelFlag>, ApiError> {
    let call = job_call(runner, &id, epoch)?;
    validate_dag(&dag)?;
    let value = serde_json::json!({"nodes": dag.nodes, "edges": dag.edges});
    let ack = state.store.sync_dag(call, value, state.clock.now()).await?;
    Ok(Json(wire::CancelFlag { cancel: ack.cancel }))
}

fn validate_dag(dag: &wire::Dag) -> Result<(), ApiError> {
    if dag.nodes.len() > MAX_DAG_NODES || dag.edges.len() > MAX_DAG_NODES {
        return Err(ApiError::InvalidInput(format!(
            "a DAG has at most {MAX_DAG_NODES} nodes and {MAX_DAG_NODES} edges"
        )));
    }
    let mut ids = std::collections::HashSet::new();
    for (index, node) in dag.nodes.iter().enumerate() {
        let id = node.get("id").and_then(|id| {
            id.as_str()
                .map(str::to_string)
                .or_else(|| id.as_i64().map(|n| n.to_string()))
        });
        let id = id.ok_or_else(|| {
            ApiError::InvalidInput(format!("nodes[{index}].id: required, a string"))
        })?;
        if !ids.insert(id.clone()) {
            return Err(ApiError::InvalidInput(format!(
                "nodes[{index}].id: '{id}' appears twice"
            )));
        }
    }
    for (index, edge) in dag.edges.iter().enumerate() {
        for end in ["from", "to"] {
            let id = edge.get(end).and_then(|id| {
                id.as_str()
                    .map(str::to_string)
                    .or_else(|| id.as_i64().map(|n| n.to_string()))
            });
            let id = id.ok_or_else(|| {
                ApiError::InvalidInput(format!("edges[{index}].{end}: required, a node id"))
            })?;
            if !ids.contains(&id) {
                return Err(ApiError::InvalidInput(format!(
                    "edges[{index}].{end}: no node has id '{id}'"
                )));
            }
        }
    }
    Ok(())
}
