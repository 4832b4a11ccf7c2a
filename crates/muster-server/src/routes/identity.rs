//! Runner keys and the audit log: each route parses, calls the coordinator, and converts.

use axum::extract::State;
use axum::http::StatusCode;
use muster_api as wire;
use muster_service::identity::NewRunnerKey;
use serde::Deserialize;

use crate::convert::{audit_entry_to_wire, runner_key_to_wire};
use crate::extract::{JsonBody, PathId, QueryParams, UserCaller};
use crate::state::AppState;
use crate::{ApiError, Json};

/// Put a runner key on the allowlist.
#[utoipa::path(post, path = "/api/v1/admin/runner-keys", tag = "identity", request_body = wire::AddRunnerKey,
    responses(
        (status = 201, description = "added", body = wire::RunnerKey),
        (status = 200, description = "already on the allowlist: the entry as it was", body = wire::RunnerKey),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::OrganizationErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn add_runner_key(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    JsonBody(request): JsonBody<wire::AddRunnerKey>,
) -> Result<(StatusCode, Json<wire::RunnerKey>), ApiError> {
    let key = NewRunnerKey {
        public_key: request.public_key,
        note: request.note,
        organization_id: request.organization_id,
    };
    let added = state.coordinator.add_runner_key(&caller, key).await?;
    let status = if added.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(runner_key_to_wire(added.key))))
}

/// The paging of a list, as `crate::openapi::ListRunnerKeysParameters` describes it.
#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    pub(crate) limit: Option<u32>,
    pub(crate) cursor: Option<String>,
}

/// The allowlist of runner keys, oldest first.
#[utoipa::path(get, path = "/api/v1/admin/runner-keys", tag = "identity", params(crate::openapi::ListRunnerKeysParameters),
    responses(
        (status = 200, description = "a page of keys, oldest first", body = wire::RunnerKeyList),
        crate::openapi::AuthErrors, crate::openapi::QueryErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn list_runner_keys(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<wire::RunnerKeyList>, ApiError> {
    let page = state
        .coordinator
        .list_runner_keys(&caller, query.limit, query.cursor)
        .await?;
    Ok(Json(wire::RunnerKeyList {
        items: page.items.into_iter().map(runner_key_to_wire).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Take a runner key off the allowlist.
#[utoipa::path(delete, path = "/api/v1/admin/runner-keys/{fingerprint}", tag = "identity", params(crate::openapi::RunnerKeyPath),
    responses(
        (status = 204, description = "removed"),
        crate::openapi::AuthErrors, crate::openapi::IdErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn remove_runner_key(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(fingerprint): PathId,
) -> Result<StatusCode, ApiError> {
    state
        .coordinator
        .remove_runner_key(&caller, &fingerprint)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The filter and paging of the audit log, as `crate::openapi::ListAuditParameters` says.
#[derive(Debug, Deserialize)]
pub(crate) struct AuditQuery {
    action: Option<String>,
    organization_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The audit log of security events, newest first.
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "identity", params(crate::openapi::ListAuditParameters),
    responses(
        (status = 200, description = "a page of entries, newest first", body = wire::AuditList),
        crate::openapi::AuthErrors, crate::openapi::QueryErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn list_audit(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    QueryParams(query): QueryParams<AuditQuery>,
) -> Result<Json<wire::AuditList>, ApiError> {
    let page = state
        .coordinator
        .list_audit(
            &caller,
            query.action,
            query.organization_id,
            query.limit,
            query.cursor,
        )
        .await?;
    Ok(Json(wire::AuditList {
        items: page.items.into_iter().map(audit_entry_to_wire).collect(),
        next_cursor: page.next_cursor,
    }))
}
