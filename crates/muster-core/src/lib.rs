//! The pure domain model of muster.
//!
//! Everything here is a plain value or a function of its arguments: time comes in as a
//! [`Timestamp`] argument and randomness as a jitter unit, so every rule can be tested without a
//! clock, a runtime, a database or a network. Stores load a job's [`JobLifecycle`], ask it for a
//! transition, and write back what it says; they never decide a state change themselves.

mod ids;
mod job;
mod lifecycle;
mod logs;
mod matching;
mod retry;
mod runner;
mod time;

pub use ids::{ArtifactId, ArtifactIdError, JobId, RunnerId};
pub use job::{
    DEFAULT_BACKOFF_BASE_S, DEFAULT_LEASE_TTL_S, DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY,
    DEFAULT_TIMEOUT_S, FailureReason, JobError, JobPolicy, JobRecord, JobSpec, JobSpecError,
    JobState, MAX_JOB_INPUTS, MAX_JOB_OUTPUTS, NewJob, Progress, validate_outputs,
};
pub use lifecycle::{JobLifecycle, Lease, ReapOutcome, TransitionError};
pub use logs::{LogEntry, LogLevel, NewLogEntry};
pub use matching::{Capabilities, PendingReason, RunnerSnapshot, pending_reason};
pub use retry::{MAX_BACKOFF_MS, backoff_delay_ms, jitter_unit_from_seed};
pub use runner::{RunnerRecord, RunnerStatus, runner_status};
pub use time::{Clock, SystemClock, Timestamp};
