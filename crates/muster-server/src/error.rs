//! The one mapping from failures to HTTP answers: every error leaves as
//! `{"error": {"code", "message"}}` with the contract's status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use muster_api::{ErrorBody, ErrorDetail};
use muster_store::StoreError;
use muster_store::blobs::BlobError;

use crate::quota::QuotaRefusal;

/// An error answer. User mistakes are answered as they are; internal ones are logged here, where
/// they are handled, and answered without details.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    LeaseLost(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request body arrived slower than `--body-min-rate` allows.
    #[error("{0}")]
    RequestTimeout(String),
    /// A body names an artifact that is not stored (well-formed, so not a 400).
    #[error("{0}")]
    UnknownArtifact(String),
    /// An artifact upload would pass an artifact quota (507); names the quota, the usage, the
    /// limit and the flag that sets it.
    #[error("{0}")]
    ArtifactQuotaExceeded(String),
    /// An artifact upload would leave less than `--disk-reserve` free (507).
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidInput(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::LeaseLost(_) => (StatusCode::CONFLICT, "lease_lost"),
            ApiError::InvalidState(_) => (StatusCode::CONFLICT, "invalid_state"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::UnknownArtifact(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_artifact"),
            ApiError::ArtifactQuotaExceeded(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "artifact_quota_exceeded")
            }
            ApiError::InsufficientStorage(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (_, code) = self.status_and_code();
        let message = match self {
            ApiError::Internal(_) => {
                "internal error; the coordinator's log has the details".to_string()
            }
            other => other.to_string(),
        };
        ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message,
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::NotFound(_) => ApiError::NotFound(error.to_string()),
            StoreError::LeaseLost(_) => ApiError::LeaseLost(error.to_string()),
            StoreError::InvalidState { .. } => ApiError::InvalidState(error.to_string()),
            StoreError::Rejected(message) => ApiError::InvalidInput(message),
            StoreError::Unavailable(_) => ApiError::Unavailable(error.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(error: BlobError) -> ApiError {
        match error {
            BlobError::NotFound(_) => ApiError::NotFound(error.to_string()),
            BlobError::TooLarge { .. } => ApiError::PayloadTooLarge(format!(
                "{error} (--max-artifact-bytes); nothing was stored"
            )),
            BlobError::Upload(_) => ApiError::InvalidInput(format!(
                "could not read the request body: {error}; nothing was stored"
            )),
            BlobError::Unavailable(_) => ApiError::Unavailable(error.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<QuotaRefusal> for ApiError {
    fn from(refusal: QuotaRefusal) -> ApiError {
        match refusal {
            QuotaRefusal::Quota { .. } => ApiError::ArtifactQuotaExceeded(refusal.message()),
            QuotaRefusal::DiskReserve { .. } => ApiError::InsufficientStorage(refusal.message()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_code();
        match &self {
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "request failed with an internal error")
            }
            ApiError::Unavailable(detail) => {
                tracing::warn!(%detail, "request refused: store unavailable")
            }
            _ => {}
        }
        (status, axum::Json(self.body())).into_response()
    }
}
