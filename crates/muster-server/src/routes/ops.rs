//! Unauthenticated operational endpoints: liveness, readiness, metrics, the OpenAPI document.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_service::operations::ProcessFigures;

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
    state.coordinator.readiness().await?;
    Ok(Json(Status { status: "ready" }))
}

/// Prometheus metrics: queue depth by kind and state, claims, completions, failures by reason,
/// claim wait, runners by status.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format (version 0.0.4)", body = String, content_type = "text/plain"),
        crate::openapi::StoreErrors,
    ))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let process = ProcessFigures {
        log_lines_lost: crate::logging::lines_lost(),
    };
    let text = state.coordinator.metrics_text(process).await?;
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
