//! User routes for jobs: submit, list, show (or follow live), cancel, retry, logs (paged or
//! live), DAG. Each
//! parses, calls the coordinator, and converts.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use muster_api as wire;
use muster_core::JobId;
use muster_service::jobs::{JobFilter, JobQuery, JobStreamEvent, LogStreamEvent};
use serde::Deserialize;

use crate::convert::{
    attempt_to_wire, job_submission_from_wire, log_entry_to_wire, state_from_wire, state_to_wire,
    view_to_wire,
};
use crate::error::error_body;
use crate::extract::{JsonBody, PathId, QueryParams, UserCaller, parse_id, parse_instant};
use crate::state::AppState;
use crate::{ApiError, Json};

/// Submit a job.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = wire::SubmitJob,
    responses(
        (status = 201, description = "created", body = wire::Job),
        (status = 200, description = "a job with this idempotency_key exists; it is returned", body = wire::Job),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::ArtifactErrors,
        crate::openapi::OrganizationErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn submit_job(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    JsonBody(request): JsonBody<wire::SubmitJob>,
) -> Result<Response, ApiError> {
    let submission = job_submission_from_wire(request, "")?;
    let submitted = state.coordinator.submit(&caller, submission).await?;
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view_to_wire(submitted.view))).into_response())
}

/// Submit up to 1000 jobs in one commit (all or none).
#[utoipa::path(post, path = "/api/v1/jobs/batch", tag = "jobs", request_body = wire::SubmitJobs,
    responses(
        (status = 201, description = "all created, in one commit", body = wire::JobList),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::ArtifactErrors,
        crate::openapi::OrganizationErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn submit_jobs(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    JsonBody(request): JsonBody<wire::SubmitJobs>,
) -> Result<(StatusCode, Json<wire::JobList>), ApiError> {
    let submissions = request
        .jobs
        .into_iter()
        .enumerate()
        .map(|(index, job)| job_submission_from_wire(job, &format!("jobs[{index}]: ")))
        .collect::<Result<Vec<_>, _>>()?;
    let views = state.coordinator.submit_many(&caller, submissions).await?;
    Ok((
        StatusCode::CREATED,
        Json(wire::JobList {
            items: views.into_iter().map(view_to_wire).collect(),
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
    organization_id: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

impl ListJobsQuery {
    /// The filters, converted (the creation range parsed as RFC 3339).
    pub(crate) fn filter(&self) -> Result<JobFilter, ApiError> {
        Ok(JobFilter {
            state: self.state.map(state_from_wire),
            kind: self.kind.clone(),
            runner_id: self.runner_id.map(muster_core::RunnerId),
            organization_id: self.organization_id.clone(),
            created_after: parse_instant(self.created_after.as_deref(), "created_after")?,
            created_before: parse_instant(self.created_before.as_deref(), "created_before")?,
        })
    }

    /// Whether it asks for a page (`limit` or `cursor`), which a count has none of.
    pub(crate) fn pages(&self) -> bool {
        self.limit.is_some() || self.cursor.is_some()
    }
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
    UserCaller(caller): UserCaller,
    QueryParams(query): QueryParams<ListJobsQuery>,
) -> Result<Json<wire::JobList>, ApiError> {
    let query = JobQuery {
        filter: query.filter()?,
        limit: query.limit,
        cursor: query.cursor,
    };
    let page = state.coordinator.list_jobs(&caller, query).await?;
    Ok(Json(wire::JobList {
        items: page.items.into_iter().map(view_to_wire).collect(),
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
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
) -> Result<Json<wire::Job>, ApiError> {
    let id = JobId(parse_id(&id, "job")?);
    let view = state.coordinator.get_job(&caller, id).await?;
    Ok(Json(view_to_wire(view)))
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
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
) -> Result<Json<wire::Job>, ApiError> {
    let id = JobId(parse_id(&id, "job")?);
    let view = state.coordinator.cancel_job(&caller, id).await?;
    Ok(Json(view_to_wire(view)))
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
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
) -> Result<Json<wire::Job>, ApiError> {
    let id = JobId(parse_id(&id, "job")?);
    let view = state.coordinator.retry_job(&caller, id).await?;
    Ok(Json(view_to_wire(view)))
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
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
    QueryParams(query): QueryParams<LogsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = JobId(parse_id(&id, "job")?);
    let wants_stream = wants_event_stream(&headers);
    // Resuming streams send the last id they saw.
    let resume_after = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    let after_seq = resume_after.or(query.after_seq);
    if !wants_stream {
        let page = state
            .coordinator
            .read_logs(&caller, id, after_seq, query.limit)
            .await?;
        return Ok(Json(wire::LogPage {
            items: page.items.into_iter().map(log_entry_to_wire).collect(),
            next_seq: page.next_seq,
        })
        .into_response());
    }
    let events = state
        .coordinator
        .follow_logs(&caller, id, after_seq, query.limit)
        .await?;
    Ok(Sse::new(events.map(sse_event))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A live log stream's event as server-sent events carry it: `log` with the entry's `seq` as
/// its id, then `end` with the job's state (or `error`).
fn sse_event(event: LogStreamEvent) -> Result<Event, Infallible> {
    Ok(match event {
        LogStreamEvent::Entry(entry) => {
            let seq = entry.seq;
            let data = serde_json::to_string(&log_entry_to_wire(entry)).unwrap_or_default();
            Event::default().event("log").id(seq.to_string()).data(data)
        }
        LogStreamEvent::End { job, state } => {
            let data = match state {
                Some(state) => {
                    serde_json::json!({"id": job.to_string(), "state": state_to_wire(state)})
                }
                None => serde_json::json!({"id": job.to_string()}),
            };
            Event::default().event("end").data(data.to_string())
        }
        LogStreamEvent::Failed(error) => Event::default()
            .event("error")
            .data(serde_json::to_string(&error_body(&error)).unwrap_or_default()),
    })
}

/// A job, live: with `Accept: text/event-stream`, events `job` (the job as `GET
/// /api/v1/jobs/{id}` answers it) at once and after each change, then `end` once it is
/// finished; without, the job now as JSON.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", tag = "jobs", params(crate::openapi::JobIdPath),
    responses(
        (status = 200, description = "the job as JSON; with `Accept: text/event-stream`, a live stream (events `job`, then `end`)",
            content(
                (wire::Job = "application/json"),
                (inline(crate::openapi::JobStreamEvent) = "text/event-stream"),
            )),
        crate::openapi::AuthErrors, crate::openapi::IdErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn job_events(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = JobId(parse_id(&id, "job")?);
    if !wants_event_stream(&headers) {
        let view = state.coordinator.get_job(&caller, id).await?;
        return Ok(Json(view_to_wire(view)).into_response());
    }
    let events = state.coordinator.follow_job(&caller, id).await?;
    Ok(Sse::new(events.map(job_sse_event))
        .keep_alive(KeepAlive::default())
        .into_response())
}

pub(crate) fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"))
}

/// A job stream's event as server-sent events carry it.
fn job_sse_event(event: JobStreamEvent) -> Result<Event, Infallible> {
    Ok(match event {
        JobStreamEvent::Job(view) => {
            let data = serde_json::to_string(&view_to_wire(*view)).unwrap_or_default();
            Event::default().event("job").data(data)
        }
        JobStreamEvent::End => Event::default().event("end").data("{}"),
        JobStreamEvent::Failed(error) => Event::default()
            .event("error")
            .data(serde_json::to_string(&error_body(&error)).unwrap_or_default()),
    })
}

/// Every attempt of a job, oldest first: each one's runner, lease epoch, claim, start and end
/// times, and how it ended.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/attempts", tag = "jobs", params(crate::openapi::JobIdPath),
    responses(
        (status = 200, description = "the job's attempts, oldest first", body = wire::AttemptList),
        crate::openapi::AuthErrors, crate::openapi::IdErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn job_attempts(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
) -> Result<Json<wire::AttemptList>, ApiError> {
    let id = JobId(parse_id(&id, "job")?);
    let attempts = state.coordinator.job_attempts(&caller, id).await?;
    Ok(Json(wire::AttemptList {
        items: attempts.into_iter().map(attempt_to_wire).collect(),
    }))
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
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = JobId(parse_id(&id, "job")?);
    Ok(Json(state.coordinator.read_dag(&caller, id).await?))
}
