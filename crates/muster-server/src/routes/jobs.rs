//! User routes for jobs: submit, list, show, cancel, retry, logs (paged or live), DAG.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use muster_api as wire;
use muster_core::{JobId, JobPolicy, JobRecord, JobSpec, JobState, NewJob, pending_reason};
use muster_store::{JobFilter, PageRequest};
use rand::Rng;
use serde::Deserialize;

use crate::convert::{
    artifact_id_from_wire, capabilities_from_wire, job_to_wire, log_entry_to_wire, state_from_wire,
    time_from_wire,
};
use crate::extract::{AdminAuth, JsonBody, PathId, QueryParams, parse_id};
use crate::routes::artifacts::ensure_artifacts_exist;
use crate::state::AppState;
use crate::{ApiError, Json};

use muster_api::limits::{
    DEFAULT_LOG_PAGE_LIMIT, DEFAULT_PAGE_LIMIT, MAX_BATCH_SUBMIT, MAX_LOG_PAGE_LIMIT,
    MAX_PAGE_LIMIT,
};

/// Render jobs for users, explaining why pending ones wait.
pub(crate) async fn jobs_to_wire(state: &AppState, jobs: Vec<JobRecord>) -> Vec<wire::Job> {
    let needs_reasons = jobs.iter().any(|job| job.state() == JobState::Pending);
    let runners = if needs_reasons {
        Some(state.runner_view.snapshots(state).await)
    } else {
        None
    };
    let now = state.clock.now();
    jobs.into_iter()
        .map(|job| {
            let reason = match (&runners, job.state()) {
                (Some(runners), JobState::Pending) => pending_reason(
                    &job.kind,
                    &job.requirements,
                    job.lifecycle.run_after,
                    now,
                    runners,
                ),
                _ => None,
            };
            job_to_wire(job, reason)
        })
        .collect()
}

pub(crate) async fn job_to_user(state: &AppState, job: JobRecord) -> wire::Job {
    jobs_to_wire(state, vec![job])
        .await
        .pop()
        .expect("one job in, one job out")
}

fn new_job_from_wire(request: wire::SubmitJob, state: &AppState) -> Result<NewJob, ApiError> {
    let defaults = JobSpec::with_defaults(request.kind.clone());
    let inputs = request
        .inputs
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(index, id)| artifact_id_from_wire(id, &format!("inputs[{index}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let spec = JobSpec {
        kind: request.kind,
        payload: request.payload.unwrap_or(defaults.payload),
        priority: request.priority.unwrap_or(defaults.priority),
        requirements: request
            .requirements
            .map(capabilities_from_wire)
            .unwrap_or_default(),
        policy: JobPolicy {
            max_attempts: request.max_attempts.unwrap_or(defaults.policy.max_attempts),
            timeout_s: request.timeout_s.unwrap_or(defaults.policy.timeout_s),
            lease_ttl_s: request.lease_ttl_s.unwrap_or(defaults.policy.lease_ttl_s),
            backoff_base_s: request
                .backoff_base_s
                .unwrap_or(defaults.policy.backoff_base_s),
        },
        run_after: request.run_after.map(time_from_wire),
        idempotency_key: request.idempotency_key,
        inputs,
    };
    spec.validate()
        .map_err(|error| ApiError::InvalidInput(error.to_string()))?;
    let now = state.clock.now();
    Ok(NewJob {
        id: JobId::new(now, rand::rng().random()),
        created_at: now,
        spec,
    })
}

/// Submit a job.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = wire::SubmitJob,
    responses(
        (status = 201, description = "created", body = wire::Job),
        (status = 200, description = "a job with this idempotency_key exists; it is returned", body = wire::Job),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::ArtifactErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn submit_job(
    State(state): State<AppState>,
    _admin: AdminAuth,
    JsonBody(request): JsonBody<wire::SubmitJob>,
) -> Result<Response, ApiError> {
    let new_job = new_job_from_wire(request, &state)?;
    // Checked before anything is stored, so a job naming a missing artifact is never created.
    ensure_artifacts_exist(
        &state,
        new_job
            .spec
            .inputs
            .iter()
            .enumerate()
            .map(|(index, id)| (format!("inputs[{index}]"), *id))
            .collect(),
    )
    .await?;
    let mut submitted = state.store.submit_jobs(vec![new_job]).await?;
    let submitted = submitted
        .pop()
        .ok_or_else(|| ApiError::Internal("store answered no job for one submitted".into()))?;
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(job_to_user(&state, submitted.job).await)).into_response())
}

/// Submit up to 1000 jobs in one commit (all or none).
#[utoipa::path(post, path = "/api/v1/jobs/batch", tag = "jobs", request_body = wire::SubmitJobs,
    responses(
        (status = 201, description = "all created, in one commit", body = wire::JobList),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::ArtifactErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn submit_jobs(
    State(state): State<AppState>,
    _admin: AdminAuth,
    JsonBody(request): JsonBody<wire::SubmitJobs>,
) -> Result<(StatusCode, Json<wire::JobList>), ApiError> {
    if request.jobs.is_empty() || request.jobs.len() > MAX_BATCH_SUBMIT {
        return Err(ApiError::InvalidInput(format!(
            "jobs: between 1 and {MAX_BATCH_SUBMIT} jobs per batch"
        )));
    }
    let new_jobs = request
        .jobs
        .into_iter()
        .enumerate()
        .map(|(index, job)| {
            new_job_from_wire(job, &state)
                .map_err(|error| ApiError::InvalidInput(format!("jobs[{index}]: {error}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    ensure_artifacts_exist(
        &state,
        new_jobs
            .iter()
            .enumerate()
            .flat_map(|(job, new_job)| {
                new_job
                    .spec
                    .inputs
                    .iter()
                    .enumerate()
                    .map(move |(index, id)| (format!("jobs[{job}].inputs[{index}]"), *id))
            })
            .collect(),
    )
    .await?;
    let submitted = state.store.submit_jobs(new_jobs).await?;
    let items = jobs_to_wire(
        &state,
        submitted
            .into_iter()
            .map(|submitted| submitted.job)
            .collect(),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(wire::JobList {
            items,
            next_cursor: None,
        }),
    ))
}

/// The filters of a job list, as `crate::openapi::ListJobsParameters` describes them.
#[derive(Debug, Deserialize)]
pub(crate) struct ListJobsQuery {
    state: Option<wire::JobState>,
    kind: Option<String>,
    runner_id: Option<uuid::Uuid>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub(crate) fn page_request(
    limit: Option<u32>,
    cursor: Option<String>,
) -> Result<PageRequest, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if limit == 0 || limit > MAX_PAGE_LIMIT {
        return Err(ApiError::InvalidInput(format!(
            "query parameter 'limit': must be between 1 and {MAX_PAGE_LIMIT}"
        )));
    }
    Ok(PageRequest {
        limit,
        cursor: cursor.filter(|cursor| !cursor.is_empty()),
    })
}

/// List jobs, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(crate::openapi::ListJobsParameters),
    responses(
        (status = 200, description = "a page of jobs, newest first", body = wire::JobList),
        crate::openapi::AuthErrors, crate::openapi::QueryErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn list_jobs(
    State(state): State<AppState>,
    _admin: AdminAuth,
    QueryParams(query): QueryParams<ListJobsQuery>,
) -> Result<Json<wire::JobList>, ApiError> {
    let filter = JobFilter {
        state: query.state.map(state_from_wire),
        kind: query.kind,
        runner_id: query.runner_id.map(muster_core::RunnerId),
    };
    let page = state
        .store
        .list_jobs(filter, page_request(query.limit, query.cursor)?)
        .await?;
    let items = jobs_to_wire(&state, page.items).await;
    Ok(Json(wire::JobList {
        items,
        next_cursor: page.next_cursor,
    }))
}

/// Show a job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(crate::openapi::JobIdPath),
    responses(
        (status = 200, description = "the job", body = wire::Job),
        crate::openapi::AuthErrors, crate::openapi::IdErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn get_job(
    State(state): State<AppState>,
    _admin: AdminAuth,
    PathId(id): PathId,
) -> Result<Json<wire::Job>, ApiError> {
    let id = JobId(parse_id(&id, "job")?);
    let job = state.store.get_job(id).await?;
    Ok(Json(job_to_user(&state, job).await))
}

/// Cancel a job: a pending job ends `cancelled`, a claimed or running one goes to `cancelling`
/// until its runner confirms or the grace period ends.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", params(crate::openapi::JobIdPath),
    responses(
        (status = 200, description = "the job, cancelled or cancelling", body = wire::Job),
        crate::openapi::AuthErrors, crate::openapi::IdErrors, crate::openapi::StateErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn cancel_job(
    State(state): State<AppState>,
    _admin: AdminAuth,
    PathId(id): PathId,
) -> Result<Json<wire::Job>, ApiError> {
    let id = JobId(parse_id(&id, "job")?);
    let grace_ms = state.config.cancel_grace.as_millis() as i64;
    let job = state
        .store
        .cancel_job(id, grace_ms, state.clock.now())
        .await?;
    state.job_changes.changed(id);
    Ok(Json(job_to_user(&state, job).await))
}

/// Put a failed or cancelled job back in the queue with a fresh allowance of attempts.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "jobs", params(crate::openapi::JobIdPath),
    responses(
        (status = 200, description = "the job, pending again", body = wire::Job),
        crate::openapi::AuthErrors, crate::openapi::IdErrors, crate::openapi::StateErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn retry_job(
    State(state): State<AppState>,
    _admin: AdminAuth,
    PathId(id): PathId,
) -> Result<Json<wire::Job>, ApiError> {
    let id = JobId(parse_id(&id, "job")?);
    let job = state.store.retry_job(id, state.clock.now()).await?;
    Ok(Json(job_to_user(&state, job).await))
}

/// The paging of a log read, as `crate::openapi::LogsParameters` describes it.
#[derive(Debug, Deserialize)]
pub(crate) struct LogsQuery {
    after_seq: Option<u64>,
    limit: Option<u32>,
}

/// Read a job's log, or follow it live with `Accept: text/event-stream` (events `log`, then
/// `end` once the job is finished).
#[utoipa::path(get, path = "/api/v1/jobs/{id}/logs", tag = "jobs", params(crate::openapi::JobIdPath, crate::openapi::LogsParameters),
    responses(
        (status = 200, description = "a page of entries as JSON; with `Accept: text/event-stream`, a live stream (events `log`, then `end`)",
            content(
                (wire::LogPage = "application/json"),
                (inline(crate::openapi::LogStreamEvent) = "text/event-stream"),
            )),
        crate::openapi::AuthErrors, crate::openapi::IdErrors, crate::openapi::QueryErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn job_logs(
    State(state): State<AppState>,
    _admin: AdminAuth,
    PathId(id): PathId,
    QueryParams(query): QueryParams<LogsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = JobId(parse_id(&id, "job")?);
    let limit = query.limit.unwrap_or(DEFAULT_LOG_PAGE_LIMIT);
    if limit == 0 || limit > MAX_LOG_PAGE_LIMIT {
        return Err(ApiError::InvalidInput(format!(
            "query parameter 'limit': must be between 1 and {MAX_LOG_PAGE_LIMIT}"
        )));
    }
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    // Resuming streams send the last id they saw.
    let resume_after = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    let after_seq = resume_after.or(query.after_seq);
    // Watching starts before the first read, so nothing written in between is missed.
    let mut watch = wants_stream.then(|| state.job_changes.watch(id));
    if let Some(watch) = watch.as_mut() {
        watch.mark_seen();
    }
    let page = state.store.read_logs(id, after_seq, limit).await?;
    let Some(watch) = watch else {
        let items = page.items.into_iter().map(log_entry_to_wire).collect();
        return Ok(Json(wire::LogPage {
            items,
            next_seq: page.next_seq,
        })
        .into_response());
    };
    let stream = follow_logs(state, id, watch, page);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Entries as they arrive until the job is finished and its log drained. Between changes the
/// stream reads nothing: it waits for its job's change signal (moved by this coordinator's own
/// writes, and with a shared database by the watcher of other coordinators' writes).
fn follow_logs(
    state: AppState,
    id: JobId,
    mut watch: crate::state::JobWatch,
    first: muster_store::LogPage,
) -> impl Stream<Item = Result<Event, Infallible>> {
    async_stream_from(move |sender| async move {
        let mut page = first;
        loop {
            let drained = page.items.is_empty();
            for entry in page.items.drain(..) {
                let seq = entry.seq;
                let data = serde_json::to_string(&log_entry_to_wire(entry)).unwrap_or_default();
                if sender
                    .send(Event::default().event("log").id(seq.to_string()).data(data))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if drained && page.job_finished {
                let job = match state.store.get_job(id).await {
                    Ok(job) => {
                        serde_json::json!({"id": id.to_string(), "state": job.state().as_str()})
                    }
                    Err(_) => serde_json::json!({"id": id.to_string()}),
                };
                let _ = sender
                    .send(Event::default().event("end").data(job.to_string()))
                    .await;
                return;
            }
            if drained {
                // Stop when the client went away or the coordinator stops: an open stream
                // must neither wait forever for nobody nor hold up a graceful shutdown.
                tokio::select! {
                    _ = watch.changed() => {}
                    _ = sender.closed() => return,
                    _ = state.shutdown.cancelled() => return,
                }
            }
            watch.mark_seen();
            let after = page.next_seq.checked_sub(1);
            page = match state.store.read_logs(id, after, 1000).await {
                Ok(next) => next,
                Err(error) => {
                    tracing::warn!(%error, job = %id, "failed to read logs for a live stream; closing it");
                    let body = crate::ApiError::from(error).body();
                    let _ = sender
                        .send(
                            Event::default()
                                .event("error")
                                .data(serde_json::to_string(&body).unwrap_or_default()),
                        )
                        .await;
                    return;
                }
            };
        }
    })
}

/// A stream fed by a task: the task ends when the client goes away (its sends fail).
fn async_stream_from<F, Fut>(produce: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(produce(sender));
    futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(receiver), Ok)
}

/// The step DAG its runner last synced (empty when none was).
#[utoipa::path(get, path = "/api/v1/jobs/{id}/dag", tag = "jobs", params(crate::openapi::JobIdPath),
    responses(
        (status = 200, description = "the DAG its runner last synced; empty before any", body = wire::Dag),
        crate::openapi::AuthErrors, crate::openapi::IdErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn job_dag(
    State(state): State<AppState>,
    _admin: AdminAuth,
    PathId(id): PathId,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = JobId(parse_id(&id, "job")?);
    let dag = state.store.read_dag(id).await?;
    Ok(Json(dag.unwrap_or_else(
        || serde_json::json!({"nodes": [], "edges": []}),
    )))
}
