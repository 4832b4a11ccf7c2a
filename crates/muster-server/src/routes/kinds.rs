//! Result rules per job kind: each route parses, calls the coordinator, and converts.

use axum::extract::State;
use axum::http::StatusCode;
use muster_api as wire;
use muster_service::kinds::KindSettingsUpdate;

use crate::convert::kind_settings_to_wire;
use crate::extract::{JsonBody, PathId, QueryParams, UserCaller};
use crate::routes::identity::PageQuery;
use crate::state::AppState;
use crate::{ApiError, Json};

/// Set a kind's result rules, replacing any it had.
#[utoipa::path(put, path = "/api/v1/kinds/{kind}", tag = "kinds", params(crate::openapi::KindPath),
    request_body = wire::SetKindSettings,
    responses(
        (status = 200, description = "the kind's rules as stored", body = wire::KindSettings),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn put_kind_settings(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(kind): PathId,
    JsonBody(request): JsonBody<wire::SetKindSettings>,
) -> Result<Json<wire::KindSettings>, ApiError> {
    let update = KindSettingsUpdate {
        result_schema: request.result_schema,
        require_signed_results: request.require_signed_results,
    };
    let settings = state
        .coordinator
        .put_kind_settings(&caller, &kind, update)
        .await?;
    Ok(Json(kind_settings_to_wire(settings)))
}

/// A kind's result rules.
#[utoipa::path(get, path = "/api/v1/kinds/{kind}", tag = "kinds", params(crate::openapi::KindPath),
    responses(
        (status = 200, description = "the kind's rules", body = wire::KindSettings),
        crate::openapi::AuthErrors, crate::openapi::IdErrors, crate::openapi::QueryErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn get_kind_settings(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(kind): PathId,
) -> Result<Json<wire::KindSettings>, ApiError> {
    let settings = state.coordinator.get_kind_settings(&caller, &kind).await?;
    Ok(Json(kind_settings_to_wire(settings)))
}

/// Remove a kind's result rules.
#[utoipa::path(delete, path = "/api/v1/kinds/{kind}", tag = "kinds", params(crate::openapi::KindPath),
    responses(
        (status = 204, description = "removed: results of the kind are taken unchecked again"),
        crate::openapi::AuthErrors, crate::openapi::IdErrors, crate::openapi::QueryErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn delete_kind_settings(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(kind): PathId,
) -> Result<StatusCode, ApiError> {
    state
        .coordinator
        .delete_kind_settings(&caller, &kind)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every kind's result rules, by kind name.
#[utoipa::path(get, path = "/api/v1/kinds", tag = "kinds", params(crate::openapi::ListRunnerKeysParameters),
    responses(
        (status = 200, description = "a page of kinds' rules, by kind name", body = wire::KindSettingsList),
        crate::openapi::AuthErrors, crate::openapi::QueryErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn list_kind_settings(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<wire::KindSettingsList>, ApiError> {
    let page = state
        .coordinator
        .list_kind_settings(&caller, query.limit, query.cursor)
        .await?;
    Ok(Json(wire::KindSettingsList {
        items: page.items.into_iter().map(kind_settings_to_wire).collect(),
        next_cursor: page.next_cursor,
    }))
}
