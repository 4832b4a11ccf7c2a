//! Request extractors that answer bad input with the contract's typed errors instead of axum's
//! plain-text rejections.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use muster_core::{Audience, Principal};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::ApiError;
use crate::state::AppState;

/// A JSON body of type `T`. Ignores the content type (curl's `-d` sends a form type), enforces
/// the configured size limit with 413, and names the offending field in 400s.
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<JsonBody<T>, ApiError> {
        let limit = state.max_body_bytes;
        let bytes = read_body(request.into_body(), limit).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A request body as bytes, possibly empty. Like [`JsonBody`] it answers an oversize body with
/// the contract's 413 instead of axum's plain-text rejection.
pub(crate) struct RawBody(pub bytes::Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<RawBody, ApiError> {
        read_body(request.into_body(), state.max_body_bytes)
            .await
            .map(RawBody)
    }
}

pub(crate) async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let inner = error.into_inner();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
        while let Some(current) = source {
            if current.is::<http_body_util::LengthLimitError>() {
                return ApiError::new(
                    muster_core::ErrorCode::PayloadTooLarge,
                    format!("request body is larger than the limit of {limit} bytes"),
                );
            }
            source = current.source();
        }
        ApiError::invalid_input(format!("could not read the request body: {inner}"))
    })
}

/// Parse JSON, naming the field that is wrong.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_input(
            "request body is empty; a JSON object is required",
        ));
    }
    // Every body of the API is an object. serde would read an array as a struct's fields in
    // order (`["exec"]` as a job of kind exec), so well-formed non-objects are refused here.
    let first = bytes.iter().find(|byte| !byte.is_ascii_whitespace());
    if first != Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        return Err(ApiError::invalid_input(
            "invalid body: the request body must be a JSON object",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let what = if inner.is_syntax() || inner.is_eof() {
            "malformed JSON"
        } else {
            "invalid field"
        };
        if path == "." || path.is_empty() {
            ApiError::invalid_input(format!("{what}: {inner}"))
        } else {
            ApiError::invalid_input(format!("{what} '{path}': {inner}"))
        }
    })?;
    deserializer
        .end()
        .map_err(|error| ApiError::invalid_input(format!("malformed JSON: {error}")))?;
    Ok(value)
}

/// Convert an already parsed JSON body to `T`, naming the field that is wrong.
pub(crate) fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." || path.is_empty() {
            ApiError::invalid_input(format!("invalid body: {inner}"))
        } else {
            ApiError::invalid_input(format!("invalid field '{path}': {inner}"))
        }
    })
}

/// Query parameters of type `T`, with 400s that name the parameter.
pub(crate) struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<QueryParams<T>, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(QueryParams)
            .map_err(|error| {
                ApiError::invalid_input(format!(
                    "query parameter '{}': {}",
                    error.path(),
                    error.inner()
                ))
            })
    }
}

/// The id in a route's path, percent-decoded. An id whose bytes are not UTF-8 names nothing, so
/// it is answered like any unknown id (404), not with axum's plain-text 400.
pub(crate) struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<PathId, ApiError> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(id)) => Ok(PathId(id)),
            Err(_) => Err(ApiError::not_found(format!(
                "nothing at {}: the id is not valid text",
                parts.uri.path()
            ))),
        }
    }
}

/// The id in a path, as a UUID; anything else is an unknown id.
pub(crate) fn parse_id(text: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::not_found(format!("{what} '{text}' not found (ids are UUIDs)")))
}

/// An instant a query parameter names, in RFC 3339 (`2026-12-03T10:00:00Z`).
pub(crate) fn parse_instant(
    text: Option<&str>,
    name: &str,
) -> Result<Option<muster_core::Timestamp>, ApiError> {
    let Some(text) = text else {
        return Ok(None);
    };
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|at| Some(crate::convert::time_from_wire(at)))
        .map_err(|_| {
            ApiError::invalid_input(format!(
                "query parameter '{name}': not an RFC 3339 time (e.g. 2026-12-03T10:00:00Z)"
            ))
        })
}

/// The bearer token of a request, if any.
pub(crate) fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("missing Authorization header; send 'Authorization: Bearer <token>'")
    })?;
    let text = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("Authorization header is not valid text"))?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthorized("Authorization header must be 'Bearer <token>'"))?;
    Ok(token.trim())
}

/// The address the request came from, as the connection loop recorded it (`None` when the
/// router is driven without one, as in-process tests may).
pub(crate) fn peer_address(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
}

/// The value of the cookie `name` in the request, if it has one.
pub(crate) fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// Whether the browser says the request came from another site. `Sec-Fetch-Site` is sent by
/// every current browser and cannot be set by a page; a client that is no browser sends none.
pub(crate) fn from_another_site(parts: &Parts) -> bool {
    parts
        .headers
        .get("sec-fetch-site")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|site| !matches!(site, "same-origin" | "none"))
}

/// A request authenticated by a session cookie that changes anything must show it comes from
/// the dashboard itself: the session's CSRF token in [`muster_api::CSRF_HEADER`] (another site
/// can send the cookie along, but cannot know the token), and no `Sec-Fetch-Site` naming
/// another site.
fn check_csrf(parts: &Parts, session_secret: &str) -> Result<(), ApiError> {
    let safe = matches!(
        parts.method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if safe {
        return Ok(());
    }
    let refused = |message: &str| {
        Err(ApiError::new(
            muster_core::ErrorCode::CsrfCheckFailed,
            message.to_string(),
        ))
    };
    if from_another_site(parts) {
        return refused("a request from another site may not use the dashboard's session");
    }
    let sent = parts
        .headers
        .get(muster_api::CSRF_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let expected = muster_service::sessions::csrf_token_for(session_secret);
    if sent.is_empty() {
        return refused(&format!(
            "a request signed in by a session cookie that changes anything must send the {} header (the {} cookie's value)",
            muster_api::CSRF_HEADER,
            muster_api::CSRF_COOKIE
        ));
    }
    if !muster_service::sessions::constant_time_equal(sent, &expected) {
        return refused(&format!(
            "the {} header is not this session's CSRF token",
            muster_api::CSRF_HEADER
        ));
    }
    Ok(())
}

/// The caller holding the request's bearer token (or, on user routes without one, the
/// dashboard session of its cookie). A missing or malformed `Authorization` header goes
/// through the coordinator's throttle like an unknown token: both are failed authentications
/// of the peer's address.
async fn authenticate(
    parts: &Parts,
    state: &AppState,
    audience: Audience,
) -> Result<Principal, ApiError> {
    let peer = peer_address(parts);
    // A bearer token is never sent by a browser on its own, so it needs no CSRF check; a
    // session cookie is, so it does.
    if audience == Audience::Users
        && !parts.headers.contains_key(AUTHORIZATION)
        && let Some(secret) = cookie(parts, muster_api::SESSION_COOKIE)
    {
        check_csrf(parts, secret)?;
        return Ok(state.coordinator.authenticate_session(secret, peer).await?);
    }
    match bearer_token(parts) {
        Ok(token) => Ok(state
            .coordinator
            .authenticate(token, audience, peer)
            .await?),
        Err(ApiError(refusal)) => Err(ApiError(
            state.coordinator.refuse_credentials(refusal, peer).await,
        )),
    }
}

/// The caller of a user route (`/api/v1/jobs`, `/runners`, `/artifacts`): its token resolved by
/// the coordinator, which refuses a token of the other audience.
pub(crate) struct UserCaller(pub Principal);

impl FromRequestParts<AppState> for UserCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<UserCaller, ApiError> {
        authenticate(parts, state, Audience::Users)
            .await
            .map(UserCaller)
    }
}

/// The caller of a runner route (`/api/v1/runner/*`).
pub(crate) struct RunnerCaller(pub Principal);

impl FromRequestParts<AppState> for RunnerCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<RunnerCaller, ApiError> {
        authenticate(parts, state, Audience::Runners)
            .await
            .map(RunnerCaller)
    }
}

/// The `Muster-Lease-Epoch` header, when sent.
pub(crate) struct LeaseEpoch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for LeaseEpoch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<LeaseEpoch, ApiError> {
        match parts.headers.get(muster_api::LEASE_EPOCH_HEADER) {
            None => Ok(LeaseEpoch(None)),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .map(|epoch| LeaseEpoch(Some(epoch)))
                .ok_or_else(|| {
                    ApiError::invalid_input(format!(
                        "header {}: must be a non-negative integer",
                        muster_api::LEASE_EPOCH_HEADER
                    ))
                }),
        }
    }
}
