//! The one vocabulary of error codes (`shared/api-v1.md`): what every front end answers with
//! and every client branches on. The HTTP front end maps each code to its status in one place;
//! a client reads the code back with [`ErrorCode::parse`].

/// Why a request was refused, as the contract names it on the wire (`snake_case`).
// Not `non_exhaustive`: every front end maps every code (the HTTP status table, say), so a new
// code must not compile until each says what it means there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The body, a query parameter or a header is malformed or out of range.
    InvalidInput,
    /// No token, or one the coordinator does not know.
    Unauthorized,
    /// The caller may not do this (the wrong kind of token, a role below the one needed).
    Forbidden,
    /// No such resource (or one the caller may not see).
    NotFound,
    /// The caller does not hold the job's current lease at the epoch it sent.
    LeaseLost,
    /// The resource is in a state that does not allow this.
    InvalidState,
    /// The body is larger than the coordinator accepts.
    PayloadTooLarge,
    /// The body arrived slower than the coordinator allows.
    RequestTimeout,
    /// Well-formed, but names an artifact that is not stored.
    UnknownArtifact,
    /// The method is not one the route takes.
    MethodNotAllowed,
    /// An artifact upload would pass a storage quota.
    ArtifactQuotaExceeded,
    /// An artifact upload would leave too little free disk.
    InsufficientStorage,
    /// Self-registration: the key is not on the allowlist.
    KeyNotAllowed,
    /// Self-registration: an operator rejected this key's runner.
    KeyRejected,
    /// Self-registration is turned off (`--enrollment closed`).
    RegistrationClosed,
    /// The runner waits for an operator's approval: it may heartbeat, not claim.
    RunnerNotEnrolled,
    /// The token was valid but its time is up; register again for a new one.
    TokenExpired,
    /// A claim declares a capability the runner's registration did not give it.
    CapabilityNotRegistered,
    /// A state-changing request authenticated by a session cookie came without the session's
    /// CSRF token, or from another site (403).
    CsrfCheckFailed,
    /// A result does not validate against its kind's `result_schema`.
    ResultSchemaMismatch,
    /// A result's signature does not verify against the runner's key.
    InvalidSignature,
    /// The kind requires signed results and the completion carried none.
    SignatureRequired,
    /// A `result_schema` that is not a valid JSON Schema.
    InvalidSchema,
    /// Too many failed attempts from one address; wait `Retry-After` seconds.
    TooManyRequests,
    /// Something of that name already exists (an organization's name, say).
    Conflict,
    /// The organization named does not exist (or the caller's token does not cover it).
    OrganizationNotFound,
    /// The organization still has unfinished jobs, runners or tokens, so it cannot be deleted.
    OrganizationNotEmpty,
    /// The store cannot be reached, or the coordinator is stopping; worth a retry.
    Unavailable,
    /// A bug; the coordinator's log has the details.
    Internal,
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::InvalidInput,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::LeaseLost,
        ErrorCode::InvalidState,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::UnknownArtifact,
        ErrorCode::MethodNotAllowed,
        ErrorCode::ArtifactQuotaExceeded,
        ErrorCode::InsufficientStorage,
        ErrorCode::KeyNotAllowed,
        ErrorCode::KeyRejected,
        ErrorCode::RegistrationClosed,
        ErrorCode::RunnerNotEnrolled,
        ErrorCode::TokenExpired,
        ErrorCode::CapabilityNotRegistered,
        ErrorCode::CsrfCheckFailed,
        ErrorCode::ResultSchemaMismatch,
        ErrorCode::InvalidSignature,
        ErrorCode::SignatureRequired,
        ErrorCode::InvalidSchema,
        ErrorCode::TooManyRequests,
        ErrorCode::Conflict,
        ErrorCode::OrganizationNotFound,
        ErrorCode::OrganizationNotEmpty,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The code as the wire spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::LeaseLost => "lease_lost",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::UnknownArtifact => "unknown_artifact",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::ArtifactQuotaExceeded => "artifact_quota_exceeded",
            ErrorCode::InsufficientStorage => "insufficient_storage",
            ErrorCode::KeyNotAllowed => "key_not_allowed",
            ErrorCode::KeyRejected => "key_rejected",
            ErrorCode::RegistrationClosed => "registration_closed",
            ErrorCode::RunnerNotEnrolled => "runner_not_enrolled",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::CapabilityNotRegistered => "capability_not_registered",
            ErrorCode::CsrfCheckFailed => "csrf_check_failed",
            ErrorCode::ResultSchemaMismatch => "result_schema_mismatch",
            ErrorCode::InvalidSignature => "invalid_signature",
            ErrorCode::SignatureRequired => "signature_required",
            ErrorCode::InvalidSchema => "invalid_schema",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::Conflict => "conflict",
            ErrorCode::OrganizationNotFound => "organization_not_found",
            ErrorCode::OrganizationNotEmpty => "organization_not_empty",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The code the wire spells `text`; `None` for one this build does not know (a newer
    /// coordinator's).
    pub fn parse(text: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|code| code.as_str() == text)
    }

    /// Whether the same request may succeed later without change: the coordinator or its
    /// store was unavailable, storage ran short, or the coordinator failed in a way a retry may
    /// not meet again. A quota, bad input or a lost lease stay as they are.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable | ErrorCode::InsufficientStorage | ErrorCode::Internal
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn every_code_reads_back_from_its_wire_spelling_and_spellings_are_unique() {
        let mut spellings = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
            assert!(spellings.insert(code.as_str()), "{code} twice");
            assert!(
                code.as_str()
                    .chars()
                    .all(|character| character.is_ascii_lowercase() || character == '_'),
                "{code} is snake_case"
            );
        }
        assert_eq!(ErrorCode::parse("made_up_by_a_newer_server"), None);
    }
}
