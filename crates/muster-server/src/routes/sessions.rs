//! Dashboard sign-in and sign-out: a user token (or the admin token) is traded once for a
//! session cookie, so the token itself never stays in the browser. Each route parses, calls
//! the coordinator, and converts; the cookies' attributes are this front end's part.

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use muster_api as wire;

use crate::convert::{identity_to_wire, time_to_wire};
use crate::extract::{JsonBody, UserCaller, cookie, from_another_site, peer_address};
use crate::state::AppState;
use crate::{ApiError, Json};

/// A `Set-Cookie` value: `HttpOnly` for the session (no script may read it), readable for the
/// CSRF token (the page sends it back), both `SameSite=Strict` (never sent on a request another
/// site starts) and `Secure` when served over HTTPS.
fn cookie_header(
    name: &str,
    value: &str,
    max_age_s: i64,
    http_only: bool,
    secure: bool,
) -> Result<HeaderValue, ApiError> {
    let mut text = format!("{name}={value}; Path=/; Max-Age={max_age_s}; SameSite=Strict");
    if http_only {
        text.push_str("; HttpOnly");
    }
    if secure {
        text.push_str("; Secure");
    }
    HeaderValue::from_str(&text).map_err(|_| ApiError::internal("a cookie that is not a header"))
}

/// The request's parts, for what the extractors do not give (the peer, the headers).
pub(crate) struct RequestParts(pub Parts);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestParts {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<RequestParts, std::convert::Infallible> {
        Ok(RequestParts(Parts::clone(parts)))
    }
}

/// Sign in to the dashboard: the token in the body is checked as any user-side token is, and a
/// session acting as it starts. The session is in the `Set-Cookie` answer only.
#[utoipa::path(post, path = "/api/v1/session", tag = "sessions",
    request_body = wire::OpenSession,
    responses(
        (status = 201, description = "signed in: cookies `muster_session` (HttpOnly) and `muster_csrf` are set", body = wire::SessionOpened),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors,
    ))]
pub(crate) async fn open_session(
    State(state): State<AppState>,
    RequestParts(parts): RequestParts,
    JsonBody(request): JsonBody<wire::OpenSession>,
) -> Result<Response, ApiError> {
    // A sign-in another site starts would sign the browser in as someone else (login CSRF).
    if from_another_site(&parts) {
        return Err(ApiError::new(
            muster_core::ErrorCode::CsrfCheckFailed,
            "a sign-in from another site is refused",
        ));
    }
    let opened = state
        .coordinator
        .open_session(request.token.trim(), peer_address(&parts))
        .await?;
    let identity = state.coordinator.whoami(&opened.principal).await?;
    let max_age_s = opened.lasts_s;
    let mut headers = HeaderMap::new();
    headers.append(
        SET_COOKIE,
        cookie_header(
            wire::SESSION_COOKIE,
            &opened.secret,
            max_age_s,
            true,
            state.secure_cookies,
        )?,
    );
    headers.append(
        SET_COOKIE,
        cookie_header(
            wire::CSRF_COOKIE,
            &opened.csrf_token,
            max_age_s,
            false,
            state.secure_cookies,
        )?,
    );
    let body = wire::SessionOpened {
        expires_at: time_to_wire(opened.expires_at),
        whoami: identity_to_wire(identity),
    };
    Ok((StatusCode::CREATED, headers, Json(body)).into_response())
}

/// Sign out: the request's session ends (on every coordinator sharing the store) and its
/// cookies are cleared. With a bearer token and no session there is nothing to end.
#[utoipa::path(delete, path = "/api/v1/session", tag = "sessions",
    responses(
        (status = 204, description = "signed out; the cookies are cleared"),
        crate::openapi::AuthErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn close_session(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    RequestParts(parts): RequestParts,
) -> Result<Response, ApiError> {
    if let Some(secret) = cookie(&parts, wire::SESSION_COOKIE) {
        state.coordinator.close_session(&caller, secret).await?;
    }
    let mut headers = HeaderMap::new();
    for (name, http_only) in [(wire::SESSION_COOKIE, true), (wire::CSRF_COOKIE, false)] {
        headers.append(
            SET_COOKIE,
            cookie_header(name, "", 0, http_only, state.secure_cookies)?,
        );
    }
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}
