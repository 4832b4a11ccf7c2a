//! The workload registry (`/api/v1/workloads`): each route parses, calls the coordinator, and
//! converts.

use axum::extract::State;
use axum::http::StatusCode;
use muster_api as wire;
use muster_service::workloads::{NewWorkload, WorkloadQuery, WorkloadStatusReport};
use serde::Deserialize;

use crate::convert::{
    container_from_wire, workload_change_to_wire, workload_status_from_wire, workload_to_wire,
};
use crate::extract::{JsonBody, PathId, QueryParams, RunnerCaller, UserCaller};
use crate::state::AppState;
use crate::{ApiError, Json};

/// Record a workload a runner hosts.
#[utoipa::path(post, path = "/api/v1/workloads", tag = "workloads", request_body = wire::CreateWorkload,
    responses(
        (status = 201, description = "recorded", body = wire::Workload),
        (status = 409, description = "`conflict`: a workload with this id exists", body = wire::ErrorBody),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::IdErrors,
        crate::openapi::OrganizationErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn create_workload(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    JsonBody(request): JsonBody<wire::CreateWorkload>,
) -> Result<(StatusCode, Json<wire::Workload>), ApiError> {
    record(&state, &caller, request).await
}

/// A runner records a workload it hosts (`runner_id` is its own).
#[utoipa::path(post, path = "/api/v1/runner/workloads", tag = "runner", request_body = wire::CreateWorkload,
    responses(
        (status = 201, description = "recorded", body = wire::Workload),
        (status = 409, description = "`conflict`: a workload with this id exists", body = wire::ErrorBody),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::IdErrors,
        crate::openapi::OrganizationErrors,
    ),
    security(("runner_token" = [])))]
pub(crate) async fn runner_create_workload(
    State(state): State<AppState>,
    RunnerCaller(caller): RunnerCaller,
    JsonBody(request): JsonBody<wire::CreateWorkload>,
) -> Result<(StatusCode, Json<wire::Workload>), ApiError> {
    record(&state, &caller, request).await
}

async fn record(
    state: &AppState,
    caller: &muster_core::Principal,
    request: wire::CreateWorkload,
) -> Result<(StatusCode, Json<wire::Workload>), ApiError> {
    let new = NewWorkload {
        id: request.id,
        runner_id: Some(muster_core::RunnerId(request.runner_id)),
        thread_id: request.thread_id,
        agent_id: request.agent_id,
        organization_id: request.organization_id,
        status: workload_status_from_wire(request.status),
        status_reason: request.status_reason,
        containers: request
            .containers
            .into_iter()
            .map(container_from_wire)
            .collect(),
        ziti_identity_id: request.ziti_identity_id,
    };
    let view = state.coordinator.create_workload(caller, new).await?;
    Ok((StatusCode::CREATED, Json(workload_to_wire(view))))
}

/// The filters and paging of a workload list, as `crate::openapi::ListWorkloadsParameters`
/// describes them.
#[derive(Debug, Deserialize)]
pub(crate) struct ListWorkloadsQuery {
    thread_id: Option<String>,
    runner_id: Option<uuid::Uuid>,
    status: Option<String>,
    organization_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `status=running,failed`: any of these statuses.
fn statuses(text: Option<&str>) -> Result<Vec<muster_core::WorkloadStatus>, ApiError> {
    let Some(text) = text.filter(|text| !text.is_empty()) else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(|name| {
            muster_core::WorkloadStatus::parse(name.trim()).ok_or_else(|| {
                ApiError::invalid_input(format!(
                    "query parameter 'status': {name:?} is not a workload status (starting, running, stopping, stopped, failed)"
                ))
            })
        })
        .collect()
}

/// List workloads, newest first.
#[utoipa::path(get, path = "/api/v1/workloads", tag = "workloads", params(crate::openapi::ListWorkloadsParameters),
    responses(
        (status = 200, description = "a page of workloads, newest first", body = wire::WorkloadList),
        crate::openapi::AuthErrors, crate::openapi::QueryErrors, crate::openapi::OrganizationErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn list_workloads(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    QueryParams(query): QueryParams<ListWorkloadsQuery>,
) -> Result<Json<wire::WorkloadList>, ApiError> {
    let query = WorkloadQuery {
        statuses: statuses(query.status.as_deref())?,
        thread_id: query.thread_id.filter(|thread| !thread.is_empty()),
        runner_id: query.runner_id.map(muster_core::RunnerId),
        organization_id: query.organization_id.filter(|id| !id.is_empty()),
        limit: query.limit,
        cursor: query.cursor,
    };
    let page = state.coordinator.list_workloads(&caller, query).await?;
    Ok(Json(wire::WorkloadList {
        items: page.items.into_iter().map(workload_to_wire).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// A workload.
#[utoipa::path(get, path = "/api/v1/workloads/{id}", tag = "workloads", params(crate::openapi::WorkloadIdPath),
    responses(
        (status = 200, description = "the workload", body = wire::Workload),
        crate::openapi::AuthErrors, crate::openapi::IdErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn get_workload(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
) -> Result<Json<wire::Workload>, ApiError> {
    let view = state.coordinator.get_workload(&caller, &id).await?;
    Ok(Json(workload_to_wire(view)))
}

/// Report a workload's status and containers. A status may only move forward (starting,
/// running, stopping, stopped; failed from any that is not final); the same status again
/// refreshes the containers.
#[utoipa::path(post, path = "/api/v1/workloads/{id}/status", tag = "workloads", params(crate::openapi::WorkloadIdPath),
    request_body = wire::UpdateWorkloadStatus,
    responses(
        (status = 200, description = "the workload as recorded now", body = wire::Workload),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::IdErrors,
        crate::openapi::StateErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn update_workload_status(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
    JsonBody(request): JsonBody<wire::UpdateWorkloadStatus>,
) -> Result<Json<wire::Workload>, ApiError> {
    report(&state, &caller, id, request).await
}

/// A runner reports the status of a workload it hosts.
#[utoipa::path(post, path = "/api/v1/runner/workloads/{id}/status", tag = "runner", params(crate::openapi::WorkloadIdPath),
    request_body = wire::UpdateWorkloadStatus,
    responses(
        (status = 200, description = "the workload as recorded now", body = wire::Workload),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::IdErrors,
        crate::openapi::StateErrors,
    ),
    security(("runner_token" = [])))]
pub(crate) async fn runner_update_workload_status(
    State(state): State<AppState>,
    RunnerCaller(caller): RunnerCaller,
    PathId(id): PathId,
    JsonBody(request): JsonBody<wire::UpdateWorkloadStatus>,
) -> Result<Json<wire::Workload>, ApiError> {
    report(&state, &caller, id, request).await
}

async fn report(
    state: &AppState,
    caller: &muster_core::Principal,
    id: String,
    request: wire::UpdateWorkloadStatus,
) -> Result<Json<wire::Workload>, ApiError> {
    let report = WorkloadStatusReport {
        id,
        status: workload_status_from_wire(request.status),
        containers: request
            .containers
            .map(|containers| containers.into_iter().map(container_from_wire).collect()),
        reason: request.status_reason,
    };
    let view = state.coordinator.report_workload(caller, report).await?;
    Ok(Json(workload_to_wire(view)))
}

/// Remove a workload and its history.
#[utoipa::path(delete, path = "/api/v1/workloads/{id}", tag = "workloads", params(crate::openapi::WorkloadIdPath),
    responses(
        (status = 204, description = "removed"),
        crate::openapi::AuthErrors, crate::openapi::IdErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn delete_workload(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    state.coordinator.delete_workload(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A runner removes a workload it hosted.
#[utoipa::path(delete, path = "/api/v1/runner/workloads/{id}", tag = "runner", params(crate::openapi::WorkloadIdPath),
    responses(
        (status = 204, description = "removed"),
        crate::openapi::AuthErrors, crate::openapi::IdErrors,
    ),
    security(("runner_token" = [])))]
pub(crate) async fn runner_delete_workload(
    State(state): State<AppState>,
    RunnerCaller(caller): RunnerCaller,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    state.coordinator.delete_workload(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A workload's status changes, oldest first.
#[utoipa::path(get, path = "/api/v1/workloads/{id}/history", tag = "workloads", params(crate::openapi::WorkloadIdPath),
    responses(
        (status = 200, description = "its status changes, oldest first", body = wire::WorkloadHistory),
        crate::openapi::AuthErrors, crate::openapi::IdErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn workload_history(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
) -> Result<Json<wire::WorkloadHistory>, ApiError> {
    let changes = state.coordinator.workload_history(&caller, &id).await?;
    Ok(Json(wire::WorkloadHistory {
        items: changes.into_iter().map(workload_change_to_wire).collect(),
    }))
}
