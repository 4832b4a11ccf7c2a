//! [`ServiceError`]: why the coordinator refused or failed a call, as one [`ErrorCode`] of the
//! contract and a message. Every front end answers with these; the HTTP front end maps each code
//! to its status in one place.

use muster_core::{Denied, ErrorCode};
use muster_store::StoreError;
use muster_store::blobs::BlobError;

/// Why a call did not do what was asked. User mistakes carry a message that names the field or
/// cause; internal ones carry the detail for the log, which front ends do not show.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    code: ErrorCode,
    message: String,
    /// When the caller may try again, for refusals that end (HTTP sends it as `Retry-After`).
    retry_after_s: Option<u64>,
}

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ServiceError {
        ServiceError {
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// A refusal that lifts by itself after `retry_after_s` seconds (a throttled address).
    pub fn too_many_requests(message: impl Into<String>, retry_after_s: u64) -> ServiceError {
        ServiceError {
            code: ErrorCode::TooManyRequests,
            message: message.into(),
            retry_after_s: Some(retry_after_s),
        }
    }

    /// How many seconds the caller should wait before trying again, when the refusal says.
    pub fn retry_after_s(&self) -> Option<u64> {
        self.retry_after_s
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message for the log (an internal error's detail included).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message for the caller: an internal error's detail stays in the log.
    pub fn public_message(&self) -> String {
        match self.code {
            ErrorCode::Internal => {
                "internal error; the coordinator's log has the details".to_string()
            }
            _ => self.message.clone(),
        }
    }

    pub fn invalid_input(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorCode::InvalidInput, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorCode::NotFound, message)
    }

    pub fn invalid_state(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorCode::InvalidState, message)
    }

    pub fn payload_too_large(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorCode::PayloadTooLarge, message)
    }

    pub fn unknown_artifact(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorCode::UnknownArtifact, message)
    }

    pub fn unavailable(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorCode::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorCode::Internal, message)
    }
}

impl From<Denied> for ServiceError {
    fn from(denied: Denied) -> ServiceError {
        ServiceError::new(denied.code, denied.message)
    }
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> ServiceError {
        let code = match &error {
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::LeaseLost(_) => ErrorCode::LeaseLost,
            StoreError::InvalidState { .. } | StoreError::WorkloadRefused { .. } => {
                ErrorCode::InvalidState
            }
            StoreError::Rejected(message) => {
                return ServiceError::invalid_input(message.clone());
            }
            StoreError::Unavailable(_) => ErrorCode::Unavailable,
            StoreError::Conflict(_) => ErrorCode::Conflict,
            StoreError::OrganizationNotEmpty { .. } => ErrorCode::OrganizationNotEmpty,
            _ => ErrorCode::Internal,
        };
        ServiceError::new(code, error.to_string())
    }
}

impl From<BlobError> for ServiceError {
    fn from(error: BlobError) -> ServiceError {
        match error {
            BlobError::NotFound(_) => ServiceError::not_found(error.to_string()),
            BlobError::TooLarge { .. } => ServiceError::payload_too_large(format!(
                "{error} (--max-artifact-bytes); nothing was stored"
            )),
            BlobError::Upload(_) => ServiceError::invalid_input(format!(
                "could not read the request body: {error}; nothing was stored"
            )),
            BlobError::Unavailable(_) => ServiceError::unavailable(error.to_string()),
            other => ServiceError::internal(other.to_string()),
        }
    }
}
