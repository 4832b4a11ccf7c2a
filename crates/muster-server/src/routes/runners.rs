//! Admin routes for the runner registry.

use axum::extract::State;
use axum::http::StatusCode;
use muster_api as wire;
use muster_core::{RunnerId, RunnerRecord, runner_status};
use muster_store::NewRunner;
use rand::Rng;
use serde::Deserialize;

use crate::auth::{hash_token, new_runner_token};
use crate::convert::runner_to_wire;
use crate::extract::{AdminAuth, JsonBody, PathId, QueryParams, parse_id};
use crate::routes::jobs::page_request;
use crate::state::AppState;
use crate::{ApiError, Json};

fn runner_for_user(state: &AppState, runner: RunnerRecord) -> wire::Runner {
    let status = runner_status(
        runner.last_seen_at,
        runner.draining,
        state.config.runner_offline_after_ms(),
        state.clock.now(),
    );
    runner_to_wire(runner, status)
}

/// Register a runner. The answer holds its token, shown this once.
#[utoipa::path(post, path = "/api/v1/runners", tag = "runners", request_body = wire::CreateRunner,
    responses(
        (status = 201, description = "registered; the token is shown this once", body = wire::CreatedRunner),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn create_runner(
    State(state): State<AppState>,
    _admin: AdminAuth,
    JsonBody(request): JsonBody<wire::CreateRunner>,
) -> Result<(StatusCode, Json<wire::CreatedRunner>), ApiError> {
    let invalid = |error: muster_core::JobSpecError| ApiError::InvalidInput(error.to_string());
    let name = muster_core::runner_name(&request.name).map_err(invalid)?;
    let labels = muster_core::Capabilities {
        labels: request.labels,
        ..Default::default()
    };
    labels.validate("").map_err(invalid)?;
    if let Some(organization_id) = &request.organization_id {
        muster_core::check_organization_id(organization_id).map_err(invalid)?;
    }
    let token = new_runner_token();
    let now = state.clock.now();
    let new_runner = NewRunner {
        id: RunnerId::new(now, rand::rng().random()),
        name,
        labels: labels.labels,
        organization_id: request.organization_id,
        token_hash: hash_token(&token),
        created_at: now,
    };
    let runner = state.store.create_runner(new_runner).await?;
    state.runner_view.invalidate();
    Ok((
        StatusCode::CREATED,
        Json(wire::CreatedRunner {
            runner: runner_for_user(&state, runner),
            token,
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
    _admin: AdminAuth,
    QueryParams(query): QueryParams<ListRunnersQuery>,
) -> Result<Json<wire::RunnerList>, ApiError> {
    let page = state
        .store
        .list_runners(page_request(query.limit, query.cursor)?)
        .await?;
    let items = page
        .items
        .into_iter()
        .map(|runner| runner_for_user(&state, runner))
        .collect();
    Ok(Json(wire::RunnerList {
        items,
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
    _admin: AdminAuth,
    PathId(id): PathId,
) -> Result<Json<wire::Runner>, ApiError> {
    let id = RunnerId(parse_id(&id, "runner")?);
    let runner = state.store.get_runner(id).await?;
    Ok(Json(runner_for_user(&state, runner)))
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
    _admin: AdminAuth,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let id = RunnerId(parse_id(&id, "runner")?);
    let released = state.store.delete_runner(id, state.clock.now()).await?;
    state.auth.forget_runner(id);
    for job in released {
        state.job_changes.changed(job);
    }
    state.runner_view.invalidate();
    Ok(StatusCode::NO_CONTENT)
}
