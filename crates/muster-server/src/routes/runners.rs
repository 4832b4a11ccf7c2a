//! Admin routes for the runner registry: each parses, calls the coordinator, and converts.

use axum::extract::State;
use axum::http::StatusCode;
use muster_api as wire;
use muster_core::RunnerId;
use muster_service::registration::SignedRegistration;
use muster_service::runners::RunnerRegistration;
use serde::Deserialize;

use crate::convert::{runner_to_wire, time_from_wire, time_to_wire};
use crate::extract::{
    JsonBody, PathId, QueryParams, RawBody, UserCaller, parse_id, parse_json, peer_address,
};
use crate::state::AppState;
use crate::{ApiError, Json};

/// Register a runner. The answer holds its token, shown this once.
#[utoipa::path(post, path = "/api/v1/runners", tag = "runners", request_body = wire::CreateRunner,
    responses(
        (status = 201, description = "registered; the token is shown this once", body = wire::CreatedRunner),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::OrganizationErrors,
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
        tags: request.tags,
        resources: request.resources,
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
    organization_id: Option<String>,
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
        .list_runners(
            &caller,
            muster_service::runners::RunnerFilter {
                organization_id: query.organization_id,
            },
            query.limit,
            query.cursor,
        )
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

/// A runner registers itself with its Ed25519 key: no token, the signature is the proof. The
/// same key registering again is the same runner, its capabilities updated and a new token
/// issued (the one it replaces works 5 more minutes at most).
#[utoipa::path(post, path = "/api/v1/runners/register", tag = "runners", request_body = wire::RegisterRunner,
    responses(
        (status = 201, description = "a new runner; the token is shown this once", body = wire::RunnerRegistered),
        (status = 200, description = "the key's runner, capabilities updated, with a new token", body = wire::RunnerRegistered),
        (status = 401, description = "unauthorized: the timestamp is outside 300 s of the coordinator's clock, or the registration was accepted before (each must be signed later than the last)", body = wire::ErrorBody),
        (status = 403, description = "key_not_allowed, key_rejected or registration_closed: the enrollment gate refused the key", body = wire::ErrorBody),
        (status = 422, description = "invalid_signature: the signature does not verify against public_key", body = wire::ErrorBody),
        (status = 429, description = "too_many_requests: too many failed registrations or tokens from this address; see Retry-After", body = wire::ErrorBody),
        crate::openapi::BodyErrors, crate::openapi::StoreErrors, crate::openapi::OrganizationErrors,
    ))]
pub(crate) async fn register_runner(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<wire::RunnerRegistered>), ApiError> {
    let peer = peer_address(&parts);
    let request: wire::RegisterRunner = parse_json(&body)?;
    // The signature covers the document as sent, not as this server would write it again.
    let signed_document: serde_json::Value = parse_json(&body)?;
    let registration = SignedRegistration {
        name: request.name,
        hostname: request.hostname,
        public_key: request.public_key,
        kinds: request.kinds,
        capabilities: muster_core::Capabilities {
            labels: request.labels,
            tags: request.tags,
            resources: request.resources,
        },
        organization_id: request.organization_id,
        timestamp: time_from_wire(request.timestamp),
        signature: request.signature,
        signed_document,
    };
    let registered = state
        .coordinator
        .register_runner_with_key(registration, peer)
        .await?;
    let status = if registered.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(wire::RunnerRegistered {
            runner: runner_to_wire(registered.view),
            token: registered.token,
            token_expires_at: time_to_wire(registered.token_expires_at),
        }),
    ))
}

/// Approve a runner waiting for approval: it is enrolled, its key joins the allowlist, and its
/// current token may claim at once.
#[utoipa::path(post, path = "/api/v1/runners/{id}/approve", tag = "runners", params(crate::openapi::RunnerIdPath),
    responses(
        (status = 200, description = "the runner, enrolled", body = wire::Runner),
        (status = 409, description = "invalid_state: an operator created this runner; it has no key", body = wire::ErrorBody),
        crate::openapi::AuthErrors, crate::openapi::IdErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn approve_runner(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
) -> Result<Json<wire::Runner>, ApiError> {
    let id = RunnerId(parse_id(&id, "runner")?);
    let view = state.coordinator.approve_runner(&caller, id).await?;
    Ok(Json(runner_to_wire(view)))
}

/// Reject a runner: its tokens stop working, its leases are released, and its key leaves the
/// allowlist, so it cannot register again until an operator trusts the key.
#[utoipa::path(post, path = "/api/v1/runners/{id}/reject", tag = "runners", params(crate::openapi::RunnerIdPath),
    responses(
        (status = 200, description = "the runner, rejected", body = wire::Runner),
        (status = 409, description = "invalid_state: an operator created this runner; it has no key", body = wire::ErrorBody),
        crate::openapi::AuthErrors, crate::openapi::IdErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn reject_runner(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
) -> Result<Json<wire::Runner>, ApiError> {
    let id = RunnerId(parse_id(&id, "runner")?);
    let view = state.coordinator.reject_runner(&caller, id).await?;
    Ok(Json(runner_to_wire(view)))
}
