//! Admin routes for the runner registry: each parses, calls the coordinator, and converts.

use axum::extract::State;
use axum::http::StatusCode;
use muster_api as wire;
use muster_core::RunnerId;
use muster_service::runners::RunnerRegistration;
use serde::Deserialize;

use crate::convert::runner_to_wire;
use crate::extract::{JsonBody, PathId, QueryParams, UserCaller, parse_id};
use crate::state::AppState;
use crate::{ApiError, Json};

/// Register a runner. The answer holds its token, shown this once.
#[utoipa::path(post, path = "/api/v1/runners", tag = "runners", request_body = wire::CreateRunner,
    responses(
        (status = 201, description = "registered; the token is shown this once", body = wire::CreatedRunner),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn create_runner(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    JsonBody(request): JsonBody<wire::CreateRunner>,
) -> Result<(StatusCode, Json<wire::CreatedRunner>), ApiError> {
    let registration = RunnerRegistration {
        name: request.name,
        labels: request.labels,
        organization_id: request.organization_id,
    };
    let registered = state
        .coordinator
        .create_runner(&caller, registration)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(wire::CreatedRunner {
            runner: runner_to_wire(registered.view),
            token: registered.token,
        }),
    ))
}

/// The paging of a runner list, as `crate::openapi::ListRunnersParameters` describes it.
#[derive(Debug, Deserialize)]
pub(crate) struct ListRunnersQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List runners, newest first.
#[utoipa::path(get, path = "/api/v1/runners", tag = "runners", params(crate::openapi::ListRunnersParameters),
    responses(
        (status = 200, description = "a page of runners, newest first", body = wire::RunnerList),
        crate::openapi::AuthErrors, crate::openapi::QueryErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn list_runners(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    QueryParams(query): QueryParams<ListRunnersQuery>,
) -> Result<Json<wire::RunnerList>, ApiError> {
    let page = state
        .coordinator
        .list_runners(&caller, query.limit, query.cursor)
        .await?;
    Ok(Json(wire::RunnerList {
        items: page.items.into_iter().map(runner_to_wire).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Show a runner.
#[utoipa::path(get, path = "/api/v1/runners/{id}", tag = "runners", params(crate::openapi::RunnerIdPath),
    responses(
        (status = 200, description = "the runner", body = wire::Runner),
        crate::openapi::AuthErrors, crate::openapi::IdErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn get_runner(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
) -> Result<Json<wire::Runner>, ApiError> {
    let id = RunnerId(parse_id(&id, "runner")?);
    let view = state.coordinator.get_runner(&caller, id).await?;
    Ok(Json(runner_to_wire(view)))
}

/// Delete a runner: its token stops working and the attempts it holds fail as lost leases.
#[utoipa::path(delete, path = "/api/v1/runners/{id}", tag = "runners", params(crate::openapi::RunnerIdPath),
    responses(
        (status = 204, description = "deleted: its token stops working, its leases are released"),
        crate::openapi::AuthErrors, crate::openapi::IdErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn delete_runner(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let id = RunnerId(parse_id(&id, "runner")?);
    state.coordinator.delete_runner(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
