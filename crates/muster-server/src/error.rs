//! The one mapping from failures to HTTP answers: every error leaves as
//! `{"error": {"code", "message"}}`, with the status [`http_status`] gives its code.

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use muster_api::{ErrorBody, ErrorDetail};
use muster_core::ErrorCode;
use muster_service::ServiceError;

/// The HTTP status of each error code of the contract.
pub fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound | ErrorCode::OrganizationNotFound => StatusCode::NOT_FOUND,
        ErrorCode::LeaseLost
        | ErrorCode::InvalidState
        | ErrorCode::Conflict
        | ErrorCode::OrganizationNotEmpty => StatusCode::CONFLICT,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::UnknownArtifact => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::ArtifactQuotaExceeded | ErrorCode::InsufficientStorage => {
            StatusCode::INSUFFICIENT_STORAGE
        }
        ErrorCode::KeyNotAllowed
        | ErrorCode::KeyRejected
        | ErrorCode::RegistrationClosed
        | ErrorCode::RunnerNotEnrolled
        | ErrorCode::CapabilityNotRegistered
        | ErrorCode::CsrfCheckFailed => StatusCode::FORBIDDEN,
        ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
        ErrorCode::ResultSchemaMismatch
        | ErrorCode::InvalidSignature
        | ErrorCode::SignatureRequired => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidSchema => StatusCode::BAD_REQUEST,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error answer: a [`ServiceError`] on its way out over HTTP. Internal and unavailable ones
/// are logged here, where they are handled, and internal ones answered without details.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ApiError(#[from] pub ServiceError);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError(ServiceError::new(code, message))
    }

    /// A request the front end could not parse (the body, a query parameter, a header).
    pub fn invalid_input(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidInput, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }

    pub fn status(&self) -> StatusCode {
        http_status(self.0.code())
    }

    pub fn body(&self) -> ErrorBody {
        error_body(&self.0)
    }
}

/// The contract's error body of `error`.
pub(crate) fn error_body(error: &ServiceError) -> ErrorBody {
    ErrorBody {
        error: error_detail(error),
    }
}

/// The `{"code", "message"}` of `error` (also what a batch item's failure carries).
pub(crate) fn error_detail(error: &ServiceError) -> ErrorDetail {
    ErrorDetail {
        code: error.code().as_str().to_string(),
        message: error.public_message(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.0.code() {
            ErrorCode::Internal => {
                tracing::error!(detail = %self.0.message(), "request failed with an internal error")
            }
            ErrorCode::Unavailable => {
                tracing::warn!(detail = %self.0.message(), "request refused: store unavailable")
            }
            _ => {}
        }
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let Some(retry_after_s) = self.0.retry_after_s() {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_s));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::http_status;
    use muster_core::ErrorCode;

    #[test]
    fn every_code_has_the_contracts_status() {
        for code in ErrorCode::ALL {
            let status = http_status(*code).as_u16();
            let expected = match code.as_str() {
                "invalid_input" | "invalid_schema" => 400,
                "unauthorized" | "token_expired" => 401,
                "forbidden"
                | "key_not_allowed"
                | "key_rejected"
                | "registration_closed"
                | "runner_not_enrolled"
                | "capability_not_registered"
                | "csrf_check_failed" => 403,
                "not_found" | "organization_not_found" => 404,
                "method_not_allowed" => 405,
                "request_timeout" => 408,
                "lease_lost" | "invalid_state" | "conflict" | "organization_not_empty" => 409,
                "payload_too_large" => 413,
                "unknown_artifact"
                | "result_schema_mismatch"
                | "invalid_signature"
                | "signature_required" => 422,
                "too_many_requests" => 429,
                "internal" => 500,
                "unavailable" => 503,
                "artifact_quota_exceeded" | "insufficient_storage" => 507,
                other => panic!("no expected status for {other}"),
            };
            assert_eq!(status, expected, "{code}");
        }
    }
}
