//! The HTTP routes, by audience: users (`/api/v1/jobs`, `/api/v1/runners`), runners
//! (`/api/v1/runner/*`) and operators (`/healthz`, `/readyz`, `/metrics`).

pub(crate) mod artifacts;
pub(crate) mod jobs;
pub(crate) mod ops;
pub(crate) mod protocol;
pub(crate) mod runners;

use axum::Router;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "muster", description = "The muster coordinator's HTTP API v1"),
    modifiers(&SecuritySchemes),
    tags(
        (name = "jobs", description = "Submit and watch jobs (admin token)"),
        (name = "runners", description = "The runner registry (admin token)"),
        (name = "runner", description = "The runner protocol (runner token)"),
        (name = "artifacts", description = "Content-addressed artifacts: upload and download bytes (admin or runner token)"),
        (name = "operations", description = "Health, readiness, metrics (no token)"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["admin_token", "runner_token"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// Every route with its OpenAPI description; the two come from the same list, so the document
/// cannot miss a route.
pub(crate) fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(jobs::submit_job, jobs::list_jobs))
        .routes(routes!(jobs::submit_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::retry_job))
        .routes(routes!(jobs::job_logs))
        .routes(routes!(jobs::job_dag))
        .routes(routes!(runners::create_runner, runners::list_runners))
        .routes(routes!(runners::get_runner, runners::delete_runner))
        .routes(routes!(protocol::runner_heartbeat))
        .routes(routes!(protocol::claim_jobs))
        .routes(routes!(protocol::job_heartbeat))
        .routes(routes!(protocol::report_progress))
        .routes(routes!(protocol::append_log))
        .routes(routes!(protocol::complete_job))
        .routes(routes!(protocol::record_outputs))
        .routes(routes!(protocol::complete_jobs))
        .routes(routes!(protocol::fail_job))
        .routes(routes!(protocol::sync_dag))
        .routes(routes!(artifacts::upload_artifact))
        .routes(routes!(artifacts::download_artifact))
        .routes(routes!(artifacts::runner_upload_artifact))
        .routes(routes!(artifacts::runner_download_artifact))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .split_for_parts()
}
