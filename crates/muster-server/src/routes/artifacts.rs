//! Artifact routes: upload and download content-addressed bytes, for users (admin token,
//! `/api/v1/artifacts`) and runners (runner token, `/api/v1/runner/artifacts`).
//!
//! Bodies here are streams, never buffered: an upload goes chunk by chunk to the blob store,
//! which hashes it on the way to disk, and a download goes from disk to the socket. These
//! handlers take the raw `Body`, which the router's `DefaultBodyLimit` (meant for JSON bodies)
//! does not limit; they count bytes against `--max-artifact-bytes` instead.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use muster_api as wire;
use muster_core::ArtifactId;
use muster_store::blobs::{BlobError, ByteStream};
use muster_store::{ArtifactRecord, ArtifactUploader};

use crate::extract::{AdminAuth, PathId, RunnerAuth};
use crate::quota;
use crate::state::AppState;
use crate::{ApiError, Json};

/// How much of a refused upload is still read (and thrown away) before answering 413. A client
/// is usually still sending when the server refuses; if the server closed the connection on
/// unread bytes, the client would see a reset instead of the answer. Past this budget the
/// connection is closed anyway: reading gigabytes to be polite is not worth it.
const DRAIN_BUDGET: u64 = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Fail with `unknown_artifact` (422) naming the first artifact that is not stored. Each item
/// is `(field, id)`, the field naming where the request put the id. (An owned list: borrowing
/// iterators held across the awaits below trip up the handlers' `Send` bounds.)
pub(crate) async fn ensure_artifacts_exist(
    state: &AppState,
    artifacts: Vec<(String, ArtifactId)>,
) -> Result<(), ApiError> {
    let mut checked = HashSet::new();
    for (field, id) in artifacts {
        if !checked.insert(id) {
            continue;
        }
        // Marks it used, so a collection of unused artifacts cannot take it from the job.
        if !state.blobs.keep(&id).await? {
            return Err(ApiError::UnknownArtifact(format!(
                "{field}: artifact {id} is not stored; upload it first (POST /api/v1/artifacts or /api/v1/runner/artifacts)"
            )));
        }
    }
    Ok(())
}

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

/// Store an upload's bytes, charged to `uploader`, within the quotas (see [`crate::quota`]).
async fn upload(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    uploader: ArtifactUploader,
) -> Result<Response, ApiError> {
    let limit = state.config.max_artifact_bytes;
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "the artifact is larger than the limit of {limit} bytes (--max-artifact-bytes); nothing was stored"
        ))
    };
    let stream: ByteStream = Box::pin(
        body.into_data_stream()
            .map(|chunk| chunk.map_err(std::io::Error::other)),
    );
    let declared = declared_length(headers);
    if declared.is_some_and(|declared| declared > limit) {
        return refuse_before_reading(too_large(), headers, declared, stream).await;
    }
    let admission = match quota::admit(state, uploader, declared).await {
        Ok(admission) => Arc::new(Mutex::new(admission)),
        Err(error) => return refuse_before_reading(error, headers, declared, stream).await,
    };
    let metered = Arc::clone(&admission);
    // Each chunk is counted against the quotas before the artifact store sees it, so nothing
    // past a quota is written.
    let mut stream: ByteStream = Box::pin(stream.map(move |chunk| {
        let chunk = chunk?;
        lock(&metered)
            .receive(chunk.len() as u64)
            .map_err(|_| std::io::Error::other("the upload passed an artifact quota"))?;
        Ok(chunk)
    }));
    match state.blobs.put(&mut stream, limit).await {
        Ok(stored) => {
            if stored.created {
                let record = ArtifactRecord {
                    id: stored.id,
                    size: stored.size,
                    uploader,
                    created_at: state.clock.now(),
                };
                // Unrecorded, the bytes are stored but charged to nobody until collected.
                state.store.record_artifact(record).await?;
                lock(&admission).finish(Some(stored.size));
            } else {
                lock(&admission).finish(None);
            }
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
        Err(BlobError::TooLarge { .. }) => {
            drain(&mut stream).await;
            Err(too_large())
        }
        Err(error) => {
            let refusal = lock(&admission).refusal();
            match refusal {
                Some(refusal) => {
                    state
                        .metrics
                        .record_artifact_upload_refused(refusal.reason());
                    drain(&mut stream).await;
                    Err(refusal.into())
                }
                None => Err(error.into()),
            }
        }
    }
}

/// Answer `error` to an upload none of whose bytes were stored. The body is drained unless
/// announced larger than the budget (a chunked one up to the budget), so the client gets to
/// read the answer instead of a reset.
async fn refuse_before_reading(
    error: ApiError,
    headers: &HeaderMap,
    declared: Option<u64>,
    mut stream: ByteStream,
) -> Result<Response, ApiError> {
    if declared.is_none_or(|declared| declared <= DRAIN_BUDGET) && !expects_continue(headers) {
        drain(&mut stream).await;
    }
    Err(error)
}

fn lock(admission: &Mutex<quota::Admission>) -> std::sync::MutexGuard<'_, quota::Admission> {
    admission.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn download(state: &AppState, id: &str) -> Result<Response, ApiError> {
    let id: ArtifactId = id.parse().map_err(|_| {
        let shown: String = id.chars().take(100).collect();
        ApiError::NotFound(format!(
            "artifact '{shown}' not found (ids are sha256: followed by 64 lowercase hex digits)"
        ))
    })?;
    let reader = state.blobs.open(&id).await?;
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, reader.size)
        // The id names the content, so it is a perfect (strong) entity tag.
        .header(header::ETAG, format!("\"{id}\""))
        .body(Body::from_stream(reader.stream))
        .map_err(|error| ApiError::Internal(format!("build the download answer: {error}")))
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
    _admin: AdminAuth,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Charged to the totals only, until user tokens (and their organizations) arrive to be
    // charged: then the caller's identity goes here.
    upload(&state, &headers, body, ArtifactUploader::User).await
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
    _admin: AdminAuth,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    download(&state, &id).await
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
    RunnerAuth(runner): RunnerAuth,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    upload(&state, &headers, body, ArtifactUploader::Runner(runner)).await
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
    _runner: RunnerAuth,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    download(&state, &id).await
}
