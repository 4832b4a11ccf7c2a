//! Builders that put a lifecycle into each state by the same public transitions a store uses,
//! so a test never depends on field pokes that the state machine itself could not produce.

use muster_core::{
    FailureReason, JobError, JobLifecycle, JobPolicy, JobState, RunnerId, Timestamp,
};

/// An arbitrary but fixed "now" far from zero, so saturating arithmetic never hides a bug.
pub const START: Timestamp = Timestamp(1_700_000_000_000);

pub const LEASE_TTL_S: u32 = 30;
pub const TIMEOUT_S: u32 = 600;
pub const BACKOFF_BASE_S: u32 = 1;
pub const MAX_ATTEMPTS: u32 = 3;
pub const CANCEL_GRACE_MS: i64 = 5_000;

/// Jitter of zero: the nominal backoff, so run_after values are exact.
pub const NO_JITTER: f64 = 0.0;

pub fn runner_a() -> RunnerId {
    RunnerId::new(START, 0xA)
}

pub fn runner_b() -> RunnerId {
    RunnerId::new(START, 0xB)
}

pub fn at(offset_ms: i64) -> Timestamp {
    START.plus_millis(offset_ms)
}

pub fn default_policy() -> JobPolicy {
    JobPolicy {
        max_attempts: MAX_ATTEMPTS,
        timeout_s: TIMEOUT_S,
        lease_ttl_s: LEASE_TTL_S,
        backoff_base_s: BACKOFF_BASE_S,
    }
}

pub fn policy_with(max_attempts: u32, backoff_base_s: u32) -> JobPolicy {
    JobPolicy {
        max_attempts,
        backoff_base_s,
        ..default_policy()
    }
}

pub fn runner_error(message: &str) -> JobError {
    JobError {
        reason: FailureReason::RunnerError,
        message: message.to_string(),
    }
}

pub fn cancelled_error() -> JobError {
    JobError {
        reason: FailureReason::Cancelled,
        message: "the runner stopped on request".to_string(),
    }
}

pub fn pending() -> JobLifecycle {
    JobLifecycle::new_pending(default_policy(), START)
}

/// Claimed by runner A at `START`, epoch 1.
pub fn claimed() -> JobLifecycle {
    let mut lifecycle = pending();
    lifecycle
        .claim(runner_a(), START)
        .expect("a due pending job can be claimed");
    lifecycle
}

/// Claimed at `START`, first sign of life one second later.
pub fn running() -> JobLifecycle {
    let mut lifecycle = claimed();
    lifecycle
        .record_activity(runner_a(), Some(1), at(1_000))
        .expect("the lease holder may report activity");
    lifecycle
}

/// Running, cancelled two seconds after the claim with `CANCEL_GRACE_MS` of grace.
pub fn cancelling() -> JobLifecycle {
    let mut lifecycle = running();
    lifecycle
        .cancel(CANCEL_GRACE_MS, at(2_000))
        .expect("a running job can be cancelled");
    lifecycle
}

pub fn completed() -> JobLifecycle {
    let mut lifecycle = running();
    lifecycle
        .complete(runner_a(), Some(1), at(3_000))
        .expect("the lease holder may complete");
    lifecycle
}

pub fn failed() -> JobLifecycle {
    let mut lifecycle = running();
    lifecycle
        .fail(
            runner_a(),
            Some(1),
            runner_error("boom"),
            false,
            NO_JITTER,
            at(3_000),
        )
        .expect("the lease holder may fail");
    lifecycle
}

pub fn cancelled() -> JobLifecycle {
    let mut lifecycle = pending();
    lifecycle
        .cancel(CANCEL_GRACE_MS, at(500))
        .expect("a pending job can be cancelled");
    lifecycle
}

/// A lifecycle in `state`, built by real transitions.
pub fn in_state(state: JobState) -> JobLifecycle {
    let lifecycle = match state {
        JobState::Pending => pending(),
        JobState::Claimed => claimed(),
        JobState::Running => running(),
        JobState::Cancelling => cancelling(),
        JobState::Completed => completed(),
        JobState::Failed => failed(),
        JobState::Cancelled => cancelled(),
    };
    assert_eq!(lifecycle.state, state, "the builder must reach {state}");
    lifecycle
}
