//! The HTTP routes, by audience: users (`/api/v1/jobs`, `/api/v1/runners`), runners
//! (`/api/v1/runner/*`) and operators (`/healthz`, `/readyz`, `/metrics`).

pub(crate) mod artifacts;
pub(crate) mod bulk;
pub(crate) mod identity;
pub(crate) mod jobs;
pub(crate) mod kinds;
pub(crate) mod logs;
pub(crate) mod ops;
pub(crate) mod organizations;
pub(crate) mod protocol;
pub(crate) mod runners;
pub(crate) mod sessions;
pub(crate) mod tokens;
pub(crate) mod workloads;

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::ApiDoc;
use crate::state::AppState;

/// Every route with its OpenAPI description; the two come from the same list, so the document
/// cannot miss a route.
pub(crate) fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(jobs::submit_job, jobs::list_jobs))
        .routes(routes!(jobs::submit_jobs))
        .routes(routes!(bulk::count_jobs))
        .routes(routes!(bulk::job_summary))
        .routes(routes!(bulk::bulk_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::retry_job))
        .routes(routes!(jobs::job_logs))
        .routes(routes!(logs::search_logs))
        .routes(routes!(logs::raw_log))
        .routes(routes!(jobs::job_dag))
        .routes(routes!(runners::create_runner, runners::list_runners))
        .routes(routes!(runners::get_runner, runners::delete_runner))
        .routes(routes!(runners::register_runner))
        .routes(routes!(runners::approve_runner))
        .routes(routes!(runners::reject_runner))
        .routes(routes!(
            identity::add_runner_key,
            identity::list_runner_keys
        ))
        .routes(routes!(identity::remove_runner_key))
        .routes(routes!(identity::list_audit))
        .routes(routes!(kinds::list_kind_settings))
        .routes(routes!(
            kinds::put_kind_settings,
            kinds::get_kind_settings,
            kinds::delete_kind_settings
        ))
        .routes(routes!(
            organizations::create_organization,
            organizations::list_organizations
        ))
        .routes(routes!(
            organizations::get_organization,
            organizations::delete_organization
        ))
        .routes(routes!(tokens::create_user_token, tokens::list_user_tokens))
        .routes(routes!(tokens::revoke_user_token))
        .routes(routes!(tokens::whoami))
        .routes(routes!(sessions::open_session, sessions::close_session))
        .routes(routes!(
            workloads::create_workload,
            workloads::list_workloads
        ))
        .routes(routes!(workloads::get_workload, workloads::delete_workload))
        .routes(routes!(workloads::update_workload_status))
        .routes(routes!(workloads::workload_history))
        .routes(routes!(workloads::runner_create_workload))
        .routes(routes!(workloads::runner_update_workload_status))
        .routes(routes!(workloads::runner_delete_workload))
        .routes(routes!(jobs::job_events))
        .routes(routes!(jobs::job_attempts))
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
