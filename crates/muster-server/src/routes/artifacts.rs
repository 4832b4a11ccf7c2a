//! Artifact routes: upload and download content-addressed bytes, for users (`/api/v1/artifacts`)
//! and runners (`/api/v1/runner/artifacts`).
//!
//! Bodies here are streams, never buffered: an upload goes chunk by chunk to the coordinator,
//! which counts it against the quotas and hands it to the blob store, and a download goes from
//! the blob store to the socket. These handlers take the raw `Body`, which the router's
//! `DefaultBodyLimit` (meant for JSON bodies) does not limit; the coordinator counts its bytes
//! against `--max-artifact-bytes`. What is HTTP's alone stays here: reading off the rest of a
//! refused body, so a client still sending reads the answer instead of a reset.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use muster_api as wire;
use muster_core::Principal;
use muster_service::artifacts::ByteStream;

use crate::extract::{PathId, RunnerCaller, UserCaller};
use crate::state::AppState;
use crate::{ApiError, Json};

/// How much of a refused upload is still read (and thrown away) before answering. A client is
/// usually still sending when the server refuses; if the server closed the connection on unread
/// bytes, the client would see a reset instead of the answer. Past this budget the connection
/// is closed anyway: reading gigabytes to be polite is not worth it.
const DRAIN_BUDGET: u64 = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse().ok())
}

/// A client sending `Expect: 100-continue` sends nothing until told to, so there is nothing to
/// drain and reading would only invite the body in.
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|text| text.eq_ignore_ascii_case("100-continue"))
}

/// Read and drop what is left of `body`, up to the budget and time limit.
async fn drain(body: &mut ByteStream) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut drained = 0u64;
        while let Some(Ok(chunk)) = body.next().await {
            drained += chunk.len() as u64;
            if drained > DRAIN_BUDGET {
                break;
            }
        }
    })
    .await;
}

async fn upload(
    state: &AppState,
    caller: &Principal,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut stream: ByteStream = Box::pin(
        body.into_data_stream()
            .map(|chunk| chunk.map_err(std::io::Error::other)),
    );
    let declared = declared_length(headers);
    let permit = match state.coordinator.admit_upload(caller, declared).await {
        Ok(permit) => permit,
        Err(error) => {
            // Refused before a byte was read: drained unless announced larger than the budget
            // (a chunked one up to the budget).
            if declared.is_none_or(|declared| declared <= DRAIN_BUDGET)
                && !expects_continue(headers)
            {
                drain(&mut stream).await;
            }
            return Err(error.into());
        }
    };
    match state.coordinator.store_upload(permit, stream).await {
        Ok(stored) => {
            let status = if stored.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let artifact = wire::Artifact {
                id: stored.id.to_string(),
                size: stored.size,
            };
            Ok((status, Json(artifact)).into_response())
        }
        Err(mut refused) => {
            drain(&mut refused.rest).await;
            Err(refused.error.into())
        }
    }
}

async fn download(state: &AppState, caller: &Principal, id: &str) -> Result<Response, ApiError> {
    let (id, reader) = state.coordinator.open_artifact(caller, id).await?;
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, reader.size)
        // The id names the content, so it is a perfect (strong) entity tag.
        .header(header::ETAG, format!("\"{id}\""))
        .body(Body::from_stream(reader.stream))
        .map_err(|error| ApiError::internal(format!("build the download answer: {error}")))
}

/// Upload an artifact: the request body is its bytes, streamed. Answers its content id.
#[utoipa::path(post, path = "/api/v1/artifacts", tag = "artifacts",
    request_body(content = inline(crate::openapi::ArtifactBytes), content_type = "application/octet-stream", description = "the artifact's bytes; an empty or absent body is an empty artifact"),
    responses(
        (status = 201, description = "stored", body = wire::Artifact),
        (status = 200, description = "the same bytes were already stored; nothing new was written", body = wire::Artifact),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors,
        (status = 507, description = "artifact_quota_exceeded: the upload would pass --artifact-quota-bytes or --artifact-quota-count; insufficient_storage: it would leave less than --disk-reserve free; nothing was stored", body = wire::ErrorBody),
    ),
    security(("admin_token" = [])))]
pub(crate) async fn upload_artifact(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    upload(&state, &caller, &headers, body).await
}

/// Download an artifact's bytes.
#[utoipa::path(get, path = "/api/v1/artifacts/{id}", tag = "artifacts",
    params(crate::openapi::ArtifactIdPath),
    responses(
        (status = 200, description = "the artifact's bytes", body = inline(crate::openapi::ArtifactBytes), content_type = "application/octet-stream",
            headers(
                ("Content-Length" = u64, description = "the artifact's size in bytes"),
                ("ETag" = String, description = "the artifact's id, quoted"),
            )),
        crate::openapi::AuthErrors, crate::openapi::IdErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn download_artifact(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    download(&state, &caller, &id).await
}

/// Upload an artifact as a runner (for example a job's output, before recording it).
#[utoipa::path(post, path = "/api/v1/runner/artifacts", tag = "artifacts",
    request_body(content = inline(crate::openapi::ArtifactBytes), content_type = "application/octet-stream", description = "the artifact's bytes; an empty or absent body is an empty artifact"),
    responses(
        (status = 201, description = "stored", body = wire::Artifact),
        (status = 200, description = "the same bytes were already stored; nothing new was written", body = wire::Artifact),
        crate::openapi::AuthErrors, crate::openapi::BodyErrors,
        (status = 507, description = "artifact_quota_exceeded: the upload would pass this runner's --runner-artifact-quota-bytes or --runner-artifact-quota-count, or a quota of all artifacts; insufficient_storage: it would leave less than --disk-reserve free; nothing was stored", body = wire::ErrorBody),
    ),
    security(("runner_token" = [])))]
pub(crate) async fn runner_upload_artifact(
    State(state): State<AppState>,
    RunnerCaller(caller): RunnerCaller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    upload(&state, &caller, &headers, body).await
}

/// Download an artifact as a runner (for example a job's input).
#[utoipa::path(get, path = "/api/v1/runner/artifacts/{id}", tag = "artifacts",
    params(crate::openapi::ArtifactIdPath),
    responses(
        (status = 200, description = "the artifact's bytes", body = inline(crate::openapi::ArtifactBytes), content_type = "application/octet-stream",
            headers(
                ("Content-Length" = u64, description = "the artifact's size in bytes"),
                ("ETag" = String, description = "the artifact's id, quoted"),
            )),
        crate::openapi::AuthErrors, crate::openapi::IdErrors,
    ),
    security(("runner_token" = [])))]
pub(crate) async fn runner_download_artifact(
    State(state): State<AppState>,
    RunnerCaller(caller): RunnerCaller,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    download(&state, &caller, &id).await
}
