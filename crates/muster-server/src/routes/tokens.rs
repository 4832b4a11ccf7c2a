//! User tokens (admin role) and `whoami` (any user token): each route parses, calls the
//! coordinator, and converts.

use axum::extract::State;
use axum::http::StatusCode;
use muster_api as wire;
use muster_core::UserTokenId;
use muster_service::tokens::NewTokenRequest;
use serde::Deserialize;

use crate::convert::{identity_to_wire, time_from_wire, user_token_to_wire};
use crate::extract::{JsonBody, PathId, QueryParams, UserCaller, parse_id};
use crate::state::AppState;
use crate::{ApiError, Json};

/// Mint a user token; the token is in this answer only.
#[utoipa::path(post, path = "/api/v1/admin/tokens", tag = "tokens",
    request_body = wire::CreateUserToken,
    responses(
        (status = 201, description = "minted: `token` is shown this once", body = wire::CreatedUserToken),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::OrganizationErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn create_user_token(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    JsonBody(request): JsonBody<wire::CreateUserToken>,
) -> Result<(StatusCode, Json<wire::CreatedUserToken>), ApiError> {
    let minted = state
        .coordinator
        .create_user_token(
            &caller,
            NewTokenRequest {
                name: request.name,
                role: request.role,
                organization_id: request.organization_id,
                expires_at: request.expires_at.map(time_from_wire),
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(wire::CreatedUserToken {
            token_info: user_token_to_wire(minted.info),
            token: minted.token,
        }),
    ))
}

/// The filter and paging of a token list, as `crate::openapi::ListTokensParameters` says.
#[derive(Debug, Deserialize)]
pub(crate) struct ListTokensQuery {
    organization_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// User tokens, oldest first: a scoped admin's organization's, or all of them.
#[utoipa::path(get, path = "/api/v1/admin/tokens", tag = "tokens",
    params(crate::openapi::ListTokensParameters),
    responses(
        (status = 200, description = "a page of user tokens, oldest first (never the tokens themselves)", body = wire::UserTokenList),
        crate::openapi::AuthErrors, crate::openapi::QueryErrors, crate::openapi::OrganizationErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn list_user_tokens(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    QueryParams(query): QueryParams<ListTokensQuery>,
) -> Result<Json<wire::UserTokenList>, ApiError> {
    let page = state
        .coordinator
        .list_user_tokens(&caller, query.organization_id, query.limit, query.cursor)
        .await?;
    Ok(Json(wire::UserTokenList {
        items: page.items.into_iter().map(user_token_to_wire).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Revoke a user token: it fails from the next request on.
#[utoipa::path(delete, path = "/api/v1/admin/tokens/{id}", tag = "tokens",
    params(crate::openapi::UserTokenIdPath),
    responses(
        (status = 204, description = "revoked"),
        crate::openapi::AuthErrors, crate::openapi::IdErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn revoke_user_token(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let id = UserTokenId(parse_id(&id, "user token")?);
    state.coordinator.revoke_user_token(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the token in the request is: its kind, role and organization.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "tokens",
    responses(
        (status = 200, description = "the caller", body = wire::WhoAmI),
        crate::openapi::AuthErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn whoami(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
) -> Result<Json<wire::WhoAmI>, ApiError> {
    let identity = state.coordinator.whoami(&caller).await?;
    Ok(Json(identity_to_wire(identity)))
}
