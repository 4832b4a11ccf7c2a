//! Organizations (bootstrap admin token only): each route parses, calls the coordinator, and
//! converts.

use axum::extract::State;
use axum::http::StatusCode;
use muster_api as wire;
use muster_service::organizations::NewOrganization;

use crate::convert::organization_to_wire;
use crate::extract::{JsonBody, PathId, QueryParams, UserCaller};
use crate::routes::identity::PageQuery;
use crate::state::AppState;
use crate::{ApiError, Json};

/// Create an organization; its id is made from its name.
#[utoipa::path(post, path = "/api/v1/admin/organizations", tag = "organizations",
    request_body = wire::CreateOrganization,
    responses(
        (status = 201, description = "created", body = wire::Organization),
        (status = 409, description = "`conflict`: the name (or the id made from it) is taken", body = wire::ErrorBody),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn create_organization(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    JsonBody(request): JsonBody<wire::CreateOrganization>,
) -> Result<(StatusCode, Json<wire::Organization>), ApiError> {
    let organization = state
        .coordinator
        .create_organization(
            &caller,
            NewOrganization {
                name: request.name,
                allow_shared_runners: request.allow_shared_runners,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(organization_to_wire(organization)),
    ))
}

/// Organizations, oldest first (`default` first).
#[utoipa::path(get, path = "/api/v1/admin/organizations", tag = "organizations",
    params(crate::openapi::ListOrganizationsParameters),
    responses(
        (status = 200, description = "a page of organizations, oldest first", body = wire::OrganizationList),
        crate::openapi::AuthErrors, crate::openapi::QueryErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn list_organizations(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<wire::OrganizationList>, ApiError> {
    let page = state
        .coordinator
        .list_organizations(&caller, query.limit, query.cursor)
        .await?;
    Ok(Json(wire::OrganizationList {
        items: page.items.into_iter().map(organization_to_wire).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One organization.
#[utoipa::path(get, path = "/api/v1/admin/organizations/{id}", tag = "organizations",
    params(crate::openapi::OrganizationPath),
    responses(
        (status = 200, description = "the organization", body = wire::Organization),
        crate::openapi::AuthErrors, crate::openapi::IdErrors, crate::openapi::QueryErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn get_organization(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
) -> Result<Json<wire::Organization>, ApiError> {
    let organization = state.coordinator.get_organization(&caller, &id).await?;
    Ok(Json(organization_to_wire(organization)))
}

/// Delete an organization nothing unfinished is left in (`default` always stays).
#[utoipa::path(delete, path = "/api/v1/admin/organizations/{id}", tag = "organizations",
    params(crate::openapi::OrganizationPath),
    responses(
        (status = 204, description = "deleted; its finished jobs stay"),
        (status = 409, description = "`organization_not_empty`: it still has unfinished jobs, runners, user tokens or unfinished workloads; `invalid_state`: it is `default`", body = wire::ErrorBody),
        crate::openapi::AuthErrors, crate::openapi::IdErrors, crate::openapi::QueryErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn delete_organization(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    state.coordinator.delete_organization(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
