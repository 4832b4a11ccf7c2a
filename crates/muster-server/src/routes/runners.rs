//! Admin routes for the runner registry.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use muster_api as wire;
use muster_core::{RunnerId, RunnerRecord, runner_status};
use muster_store::NewRunner;
use rand::Rng;
use serde::Deserialize;

use crate::auth::{hash_token, new_runner_token};
use crate::convert::runner_to_wire;
use crate::extract::{AdminAuth, JsonBody, QueryParams, parse_id};
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
    responses((status = 201, body = wire::CreatedRunner), (status = 400, body = wire::ErrorBody)),
    security(("admin_token" = [])))]
pub(crate) async fn create_runner(
    State(state): State<AppState>,
    _admin: AdminAuth,
    JsonBody(request): JsonBody<wire::CreateRunner>,
) -> Result<(StatusCode, Json<wire::CreatedRunner>), ApiError> {
    let name = request.name.trim().to_string();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::InvalidInput(
            "name: must be 1 to 200 bytes".into(),
        ));
    }
    let labels = muster_core::Capabilities {
        labels: request.labels,
        ..Default::default()
    };
    labels
        .validate("labels")
        .map_err(|error| ApiError::InvalidInput(error.to_string()))?;
    if request
        .organization_id
        .as_ref()
        .is_some_and(|org| org.is_empty() || org.len() > 200)
    {
        return Err(ApiError::InvalidInput(
            "organization_id: must be 1 to 200 bytes".into(),
        ));
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct ListRunnersQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List runners, newest first.
#[utoipa::path(get, path = "/api/v1/runners", tag = "runners", params(ListRunnersQuery),
    responses((status = 200, body = wire::RunnerList)),
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
#[utoipa::path(get, path = "/api/v1/runners/{id}", tag = "runners", params(("id" = String, Path)),
    responses((status = 200, body = wire::Runner), (status = 404, body = wire::ErrorBody)),
    security(("admin_token" = [])))]
pub(crate) async fn get_runner(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<wire::Runner>, ApiError> {
    let id = RunnerId(parse_id(&id, "runner")?);
    let runner = state.store.get_runner(id).await?;
    Ok(Json(runner_for_user(&state, runner)))
}

/// Delete a runner: its token stops working and the attempts it holds fail as lost leases.
#[utoipa::path(delete, path = "/api/v1/runners/{id}", tag = "runners", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = wire::ErrorBody)),
    security(("admin_token" = [])))]
pub(crate) async fn delete_runner(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Path(id): Path<String>,
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
