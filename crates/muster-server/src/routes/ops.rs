//! Unauthenticated operational endpoints: liveness, readiness, metrics, the OpenAPI document.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_core::runner_status;
use muster_store::PageRequest;

use crate::state::AppState;
use crate::{ApiError, Json};

/// The answer of the health and readiness checks.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Status {
    /// `ok` (alive) or `ready`.
    status: &'static str,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "alive", body = Status)))]
pub(crate) async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// The store answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready", body = Status), crate::openapi::StoreErrors))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::Unavailable(
            "the coordinator is shutting down".into(),
        ));
    }
    state.store.ping().await?;
    Ok(Json(Status { status: "ready" }))
}

/// Runners whose artifact usage `/metrics` shows: the ones charged the most, so the number of
/// series stays small however many runners there are, and a runner nearing its quota shows.
const LARGEST_UPLOADERS_SHOWN: u32 = 10;

/// Prometheus metrics: queue depth by kind and state, claims, completions, failures by reason,
/// claim wait, runners by status.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format (version 0.0.4)", body = String, content_type = "text/plain"),
        crate::openapi::StoreErrors,
    ))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut depths = state.store.active_job_counts().await?;
    depths.extend(state.finished_counts.get(state.store.as_ref()).await?);
    let now = state.clock.now();
    let offline_after = state.config.runner_offline_after_ms();
    let mut statuses = Vec::new();
    let mut cursor = None;
    loop {
        // Statuses need no counts of held jobs, which PostgreSQL would read per runner.
        let page = state
            .store
            .list_runners_for_matching(PageRequest {
                limit: 1000,
                cursor,
            })
            .await?;
        statuses.extend(
            page.items.iter().map(|runner| {
                runner_status(runner.last_seen_at, runner.draining, offline_after, now)
            }),
        );
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let artifacts = state.store.artifact_usage(None).await?.all;
    let largest_uploaders = state
        .store
        .largest_artifact_uploaders(LARGEST_UPLOADERS_SHOWN)
        .await?;
    state
        .metrics
        .set_artifact_usage(artifacts, &largest_uploaders);
    let text = state.metrics.render(&depths, &statuses);
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "the OpenAPI 3.1 document of this API", body = serde_json::Value, content_type = "application/json")))]
pub(crate) async fn openapi(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi_json.as_ref().clone(),
    )
        .into_response()
}
