//! The pure domain model of muster.
//!
//! Everything here is a plain value or a function of its arguments: time comes in as a
//! [`Timestamp`] argument and randomness as a jitter unit, so every rule can be tested without a
//! clock, a runtime, a database or a network. Stores load a job's [`JobLifecycle`], ask it for a
//! transition, and write back what it says; they never decide a state change themselves.

mod attempts;
mod bulk;
mod dag;
mod enrollment;
mod error_code;
pub mod identity;
mod ids;
mod job;
mod lifecycle;
pub mod limits;
mod logs;
mod matching;
pub mod organization;
mod principal;
mod retry;
mod runner;
mod text;
mod time;
pub mod workload;

pub use attempts::{AttemptOutcome, AttemptRecord, attempt_history, attempt_in_job, ended_attempt};
pub use bulk::BulkJobAction;
pub use dag::{DagError, validate_dag};
pub use enrollment::{
    Enrollment, EnrollmentGate, EnrollmentOperation, EnrollmentOutcome, EnrollmentRefusal,
    enrollment_transition,
};
pub use error_code::ErrorCode;
pub use ids::{ArtifactId, ArtifactIdError, JobId, RunnerId, UserTokenId};
pub use job::{
    DEFAULT_BACKOFF_BASE_S, DEFAULT_LEASE_TTL_S, DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY,
    DEFAULT_TIMEOUT_S, FailureReason, JobError, JobOrganization, JobPolicy, JobRecord, JobSpec,
    JobSpecError, JobState, MAX_ATTEMPTS_LIMIT, MAX_BACKOFF_BASE_S, MAX_IDEMPOTENCY_KEY_LEN,
    MAX_JOB_INPUTS, MAX_JOB_OUTPUTS, MAX_LEASE_TTL_S, MAX_OUTPUT_NAME_LEN, MAX_TIMEOUT_S, NewJob,
    Progress, validate_outputs,
};
pub use lifecycle::{
    Activity, CancelOutcome, Completion, JobLifecycle, Lease, LifecycleParts, ReapOutcome,
    TransitionError,
};
pub use logs::{LogEntry, LogLevel, NewLogEntry};
pub use matching::{
    Capabilities, MAX_CAPABILITY_ENTRIES, MAX_CAPABILITY_NAME_LEN, PendingReason, RunnerSnapshot,
    pending_reason,
};
pub use principal::{
    Action, Audience, Denied, Principal, RUNNER_TOKEN_PREFIX, USER_TOKEN_PREFIX, UserPrincipal,
    admit, authorize,
};
pub use retry::{MAX_BACKOFF_MS, backoff_delay_ms, jitter_unit_from_seed};
pub use runner::{RunnerRecord, RunnerStatus, runner_status};
pub use text::{
    MAX_KIND_LEN, MAX_ORGANIZATION_ID_LEN, MAX_RUNNER_NAME_LEN, MAX_RUNNER_REPORT_LEN, TextProblem,
    TextRule, check_field, check_key, check_kind, check_organization_id, check_runner_report,
    check_text, runner_name,
};
pub use time::{Clock, SystemClock, Timestamp};
pub use workload::{
    Container, ContainerRole, ContainerStatus, WorkloadChange, WorkloadOperation, WorkloadRecord,
    WorkloadRefusal, WorkloadStatus, WorkloadStatusChange, workload_transition,
};
