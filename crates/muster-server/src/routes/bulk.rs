//! Counting jobs and changing many at once: `GET /api/v1/jobs/count` (capped),
//! `GET /api/v1/jobs/summary` (by state and kind) and `POST /api/v1/jobs/bulk` (cancel or retry
//! by ids or by filter, with a dry run). Each parses, calls the coordinator, and converts.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use muster_api as wire;
use muster_core::{BulkJobAction, FailureReason, JobId, JobState, RunnerId};
use muster_service::bulk::{BulkOutcome, BulkRequest, BulkSelection, CappedCount};
use muster_service::jobs::JobFilter;
use muster_service::overview::{JobSummary, StateCounts, SummaryEvent};

use crate::convert::{state_from_wire, state_to_wire, time_from_wire, time_to_wire};
use crate::error::error_body;
use crate::error::error_detail;
use crate::extract::{JsonBody, QueryParams, UserCaller};
use crate::routes::jobs::{ListJobsQuery, wants_event_stream};
use crate::state::AppState;
use crate::{ApiError, Json};

/// How many jobs match a filter, counted no further than 10,000 (`capped` says there are
/// more), so a count costs the same with a million jobs as with ten thousand.
#[utoipa::path(get, path = "/api/v1/jobs/count", tag = "jobs", params(crate::openapi::CountJobsParameters),
    responses(
        (status = 200, description = "how many jobs match, up to 10,000", body = wire::JobCount),
        crate::openapi::AuthErrors, crate::openapi::QueryErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn count_jobs(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    QueryParams(query): QueryParams<ListJobsQuery>,
) -> Result<Json<wire::JobCount>, ApiError> {
    if query.pages() {
        return Err(ApiError::invalid_input(
            "a count takes the filters of a list, not 'limit' or 'cursor'",
        ));
    }
    let counted = state
        .coordinator
        .count_jobs(&caller, query.filter()?)
        .await?;
    Ok(Json(count_to_wire(counted)))
}

/// Cancel or retry the jobs named by id, or every job matching a filter one page per call,
/// each through its own fenced transition: a job that changed state meanwhile is left alone
/// and listed in `skipped`. `dry_run` changes nothing and counts what would change.
#[utoipa::path(post, path = "/api/v1/jobs/bulk", tag = "jobs", request_body = wire::BulkJobs,
    responses(
        (status = 200, description = "what this call changed and left alone, and where the next goes on", body = wire::BulkJobsOutcome),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn bulk_jobs(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    JsonBody(request): JsonBody<wire::BulkJobs>,
) -> Result<Json<wire::BulkJobsOutcome>, ApiError> {
    let action = match request.action {
        wire::BulkAction::Cancel => BulkJobAction::Cancel,
        wire::BulkAction::Retry => BulkJobAction::Retry,
    };
    let selection = match (request.ids, request.filter) {
        (Some(ids), None) => BulkSelection::Ids(ids.into_iter().map(JobId).collect()),
        (None, Some(filter)) => BulkSelection::Matching(JobFilter {
            state: filter.state.map(state_from_wire),
            kind: filter.kind,
            runner_id: filter.runner_id.map(RunnerId),
            organization_id: filter.organization_id,
            created_after: filter.created_after.map(time_from_wire),
            created_before: filter.created_before.map(time_from_wire),
        }),
        _ => {
            return Err(ApiError(muster_service::ServiceError::invalid_input(
                "give exactly one of 'ids' (the jobs to change) and 'filter' (every job matching it)",
            )));
        }
    };
    if request.dry_run {
        let would_change = state
            .coordinator
            .count_bulk(&caller, action, selection)
            .await?;
        return Ok(Json(wire::BulkJobsOutcome {
            action: request.action,
            dry_run: true,
            would_change: Some(count_to_wire(would_change)),
            examined: 0,
            changed: Vec::new(),
            skipped: Vec::new(),
            next_cursor: None,
        }));
    }
    let outcome = state
        .coordinator
        .bulk_jobs(
            &caller,
            BulkRequest {
                action,
                selection,
                cursor: request.cursor,
                limit: request.limit,
            },
        )
        .await?;
    Ok(Json(outcome_to_wire(request.action, outcome)))
}

/// Jobs by state, and by kind for the 50 kinds with the most jobs (the organizations the caller
/// sees). Unfinished jobs are counted at each call; finished ones may lag by a few seconds with
/// millions of them (the counts `/metrics` reuses). With `Accept: text/event-stream`, the summary
/// now and again after jobs change (events `summary`, at most every 5 s, at least every 30 s).
#[utoipa::path(get, path = "/api/v1/jobs/summary", tag = "jobs",
    responses(
        (status = 200, description = "jobs by state and by kind; with `Accept: text/event-stream`, a live stream of them (events `summary`)",
            content(
                (wire::JobSummary = "application/json"),
                (inline(crate::openapi::SummaryStreamEvent) = "text/event-stream"),
            )),
        crate::openapi::AuthErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn job_summary(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !wants_event_stream(&headers) {
        let summary = state.coordinator.job_summary(&caller).await?;
        return Ok(Json(summary_to_wire(summary)).into_response());
    }
    let events = state.coordinator.follow_job_summary(&caller).await?;
    Ok(Sse::new(events.map(|event| {
        Ok::<_, Infallible>(match event {
            SummaryEvent::Summary(summary) => Event::default()
                .event("summary")
                .data(serde_json::to_string(&summary_to_wire(*summary)).unwrap_or_default()),
            SummaryEvent::Failed(error) => Event::default()
                .event("error")
                .data(serde_json::to_string(&error_body(&error)).unwrap_or_default()),
        })
    }))
    .keep_alive(KeepAlive::default())
    .into_response())
}

fn summary_to_wire(summary: JobSummary) -> wire::JobSummary {
    wire::JobSummary {
        by_state: states_to_wire(&summary.by_state),
        kinds: summary
            .kinds
            .into_iter()
            .map(|kind| wire::KindSummary {
                total: kind.counts.total(),
                by_state: states_to_wire(&kind.counts),
                kind: kind.kind,
            })
            .collect(),
        other_kinds: states_to_wire(&summary.other_kinds),
        other_kind_count: summary.other_kind_count,
        last_hour: summary.last_hour.map(|recent| wire::LastHour {
            completed: recent.completed,
            failed_attempts: FailureReason::ALL
                .into_iter()
                .zip(recent.failed)
                .map(|(reason, count)| (reason.as_str().to_string(), count))
                .collect(),
            since: time_to_wire(recent.since),
        }),
    }
}

fn states_to_wire(counts: &StateCounts) -> std::collections::BTreeMap<String, u64> {
    JobState::ALL
        .into_iter()
        .map(|state| (state.as_str().to_string(), counts.of(state)))
        .collect()
}

fn count_to_wire(counted: CappedCount) -> wire::JobCount {
    wire::JobCount {
        count: counted.count,
        capped: counted.capped,
    }
}

fn outcome_to_wire(action: wire::BulkAction, outcome: BulkOutcome) -> wire::BulkJobsOutcome {
    wire::BulkJobsOutcome {
        action,
        dry_run: false,
        would_change: None,
        examined: outcome.examined,
        changed: outcome
            .changed
            .into_iter()
            .map(|changed| wire::BulkChangedJob {
                id: changed.id.0,
                state: state_to_wire(changed.state),
            })
            .collect(),
        skipped: outcome
            .skipped
            .into_iter()
            .map(|skipped| wire::BulkSkippedJob {
                id: skipped.id.0,
                state: skipped.state.map(state_to_wire),
                error: error_detail(&skipped.error),
            })
            .collect(),
        next_cursor: outcome.next_cursor,
    }
}
