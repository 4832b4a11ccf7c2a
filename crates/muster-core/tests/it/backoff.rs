//! Retry backoff as the lifecycle applies it: a failed attempt with attempts left waits
//! `backoff_base_s × 2^(attempt−1)` seconds, moved by up to ±20 % of jitter, at most one hour,
//! and the wait shows up as the pending job's `run_after`.

use muster_core::{FailureReason, JobLifecycle, JobPolicy, JobState, ReapOutcome, Timestamp};

use crate::support::{NO_JITTER, START, at, default_policy, runner_a, runner_error};

struct BackoffCase {
    backoff_base_s: u32,
    /// The attempt that fails, counted from 1.
    failed_attempt: u32,
    jitter_unit: f64,
    expected_delay_ms: i64,
}

const fn case(
    backoff_base_s: u32,
    failed_attempt: u32,
    jitter_unit: f64,
    expected_delay_ms: i64,
) -> BackoffCase {
    BackoffCase {
        backoff_base_s,
        failed_attempt,
        jitter_unit,
        expected_delay_ms,
    }
}

const BACKOFF_CASES: &[BackoffCase] = &[
    case(1, 1, 0.0, 1_000),
    case(1, 2, 0.0, 2_000),
    case(1, 3, 0.0, 4_000),
    case(1, 4, 0.0, 8_000),
    case(3, 1, 0.0, 3_000),
    case(3, 2, 0.0, 6_000),
    case(10, 1, 1.0, 12_000),
    case(10, 1, -1.0, 8_000),
    case(10, 2, 0.5, 22_000),
    case(10, 2, -0.5, 18_000),
    // Jitter outside −1..=1 is clamped: never more than ±20 %.
    case(10, 1, 7.0, 12_000),
    case(10, 1, -7.0, 8_000),
    case(0, 1, 1.0, 0),
    case(1, 12, 0.0, 2_048_000),
    // The one-hour cap, reached by the base, by doubling, and by jitter alone.
    case(1, 13, 0.0, 3_600_000),
    case(1000, 3, 0.0, 3_600_000),
    case(3600, 2, -1.0, 3_600_000),
    case(3600, 1, 1.0, 3_600_000),
    case(3600, 1, -1.0, 2_880_000),
];

/// A job whose attempts 1..`failed_attempt` already failed without backoff, now claimed for
/// attempt `failed_attempt` by runner A, with attempts to spare afterwards.
fn claimed_for_attempt(backoff_base_s: u32, failed_attempt: u32) -> (JobLifecycle, Timestamp) {
    let policy = JobPolicy {
        max_attempts: failed_attempt + 1,
        backoff_base_s,
        ..default_policy()
    };
    let mut lifecycle = JobLifecycle::new_pending(policy, START);
    let mut now = START;
    for _ in 1..failed_attempt {
        lifecycle.claim(runner_a(), now).expect("due");
        lifecycle
            .fail(
                runner_a(),
                None,
                runner_error("earlier"),
                true,
                NO_JITTER,
                now,
            )
            .expect("holder");
        now = lifecycle.run_after;
    }
    lifecycle.claim(runner_a(), now).expect("due");
    assert_eq!(lifecycle.attempt, failed_attempt);
    (lifecycle, now)
}

#[test]
fn fail_schedules_the_next_attempt_after_the_backoff() {
    for case in BACKOFF_CASES {
        let (mut lifecycle, claimed_at) =
            claimed_for_attempt(case.backoff_base_s, case.failed_attempt);
        let failed_at = claimed_at.plus_millis(777);
        lifecycle
            .fail(
                runner_a(),
                None,
                runner_error("flaky"),
                true,
                case.jitter_unit,
                failed_at,
            )
            .expect("holder may fail");
        let label = format!(
            "base {} s, attempt {}, jitter {}",
            case.backoff_base_s, case.failed_attempt, case.jitter_unit
        );
        assert_eq!(lifecycle.state, JobState::Pending, "{label}");
        assert_eq!(
            lifecycle.run_after.millis_since(failed_at),
            case.expected_delay_ms,
            "{label}"
        );
        assert_eq!(lifecycle.runner_id, None, "{label}");
        assert_eq!(lifecycle.lease(), None, "{label}");
        assert_eq!(lifecycle.reap_at(), None, "{label}");
        assert_eq!(
            lifecycle.error.as_ref().map(|error| error.reason),
            Some(FailureReason::RunnerError),
            "{label}: a pending job says why its last attempt failed"
        );
        assert_eq!(lifecycle.finished_at, None, "{label}");
    }
}

#[test]
fn lease_expiry_schedules_the_next_attempt_after_the_same_backoff() {
    for case in BACKOFF_CASES {
        let (mut lifecycle, claimed_at) =
            claimed_for_attempt(case.backoff_base_s, case.failed_attempt);
        let expired_at = lifecycle
            .lease_expires_at
            .expect("a claimed job has a lease expiry");
        assert_eq!(
            expired_at,
            claimed_at.plus_seconds(lifecycle.policy.lease_ttl_s)
        );
        let reaped_at = expired_at.plus_millis(250);
        let outcome = lifecycle.reap(case.jitter_unit, reaped_at);
        let label = format!(
            "base {} s, attempt {}, jitter {}",
            case.backoff_base_s, case.failed_attempt, case.jitter_unit
        );
        assert_eq!(
            outcome,
            Some(ReapOutcome::AttemptFailed(FailureReason::LeaseExpired)),
            "{label}"
        );
        assert_eq!(lifecycle.state, JobState::Pending, "{label}");
        assert_eq!(
            lifecycle.run_after.millis_since(reaped_at),
            case.expected_delay_ms,
            "{label}"
        );
    }
}

#[test]
fn any_jitter_moves_the_delay_by_at_most_twenty_percent() {
    for failed_attempt in 1..=4u32 {
        let nominal_ms = 5_000i64 << (failed_attempt - 1);
        for step in -30..=30 {
            let jitter_unit = f64::from(step) / 20.0;
            let (mut lifecycle, now) = claimed_for_attempt(5, failed_attempt);
            lifecycle
                .fail(runner_a(), None, runner_error("x"), true, jitter_unit, now)
                .expect("holder");
            let delay = lifecycle.run_after.millis_since(now);
            // One millisecond of slack below: the delay is a float truncated to whole ms.
            assert!(
                (nominal_ms * 8 / 10 - 1..=nominal_ms * 12 / 10).contains(&delay),
                "attempt {failed_attempt}, jitter {jitter_unit}: {delay} ms"
            );
        }
    }
}

#[test]
fn retryable_false_fails_at_once_with_attempts_left() {
    let (mut lifecycle, now) = claimed_for_attempt(1, 1);
    assert!(lifecycle.policy.max_attempts > 1);
    let run_after_before = lifecycle.run_after;
    lifecycle
        .fail(
            runner_a(),
            Some(1),
            runner_error("bad input"),
            false,
            NO_JITTER,
            now,
        )
        .expect("holder");
    assert_eq!(lifecycle.state, JobState::Failed);
    assert_eq!(lifecycle.finished_at, Some(now));
    assert_eq!(
        lifecycle.run_after, run_after_before,
        "nothing is scheduled"
    );
    assert_eq!(lifecycle.error, Some(runner_error("bad input")));
    assert_eq!(lifecycle.reap_at(), None);
}

#[test]
fn the_last_attempt_failing_fails_the_job_without_backoff() {
    let policy = JobPolicy {
        max_attempts: 2,
        ..default_policy()
    };
    let mut lifecycle = JobLifecycle::new_pending(policy, START);
    lifecycle.claim(runner_a(), START).expect("due");
    lifecycle
        .fail(
            runner_a(),
            None,
            runner_error("first"),
            true,
            NO_JITTER,
            at(100),
        )
        .expect("holder");
    assert_eq!(lifecycle.state, JobState::Pending, "one attempt left");
    let retry_at = lifecycle.run_after;
    lifecycle
        .claim(runner_a(), retry_at)
        .expect("due after backoff");
    assert_eq!(lifecycle.attempt, 2);
    let failed_at = retry_at.plus_millis(50);
    lifecycle
        .fail(
            runner_a(),
            None,
            runner_error("second"),
            true,
            NO_JITTER,
            failed_at,
        )
        .expect("holder");
    assert_eq!(lifecycle.state, JobState::Failed, "attempts exhausted");
    assert_eq!(lifecycle.error, Some(runner_error("second")));
    assert_eq!(lifecycle.finished_at, Some(failed_at));
    assert_eq!(lifecycle.attempt, 2);
}

#[test]
fn max_attempts_one_never_retries() {
    let policy = JobPolicy {
        max_attempts: 1,
        ..default_policy()
    };
    let mut lifecycle = JobLifecycle::new_pending(policy, START);
    lifecycle.claim(runner_a(), START).expect("due");
    lifecycle
        .fail(
            runner_a(),
            None,
            runner_error("once"),
            true,
            NO_JITTER,
            at(10),
        )
        .expect("holder");
    assert_eq!(lifecycle.state, JobState::Failed);
}
