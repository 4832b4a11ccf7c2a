//! No job stays leased forever: an unrenewed lease expires, an attempt past `timeout_s` times
//! out, and `reap_at` always names the earliest of the running timers so the reaper looks in time.

use muster_core::{FailureReason, JobLifecycle, JobPolicy, JobState, ReapOutcome, Timestamp};

use crate::support::{
    LEASE_TTL_S, NO_JITTER, START, TIMEOUT_S, at, default_policy, in_state, runner_a,
};

fn lease_expiry_of(lifecycle: &JobLifecycle) -> Timestamp {
    lifecycle
        .lease_expires_at
        .expect("a leased job has a lease expiry")
}

#[test]
fn an_unrenewed_lease_expires_exactly_at_its_expiry() {
    let before = in_state(JobState::Running);
    let expiry = lease_expiry_of(&before);
    assert_eq!(expiry, START.plus_seconds(LEASE_TTL_S));

    let mut lifecycle = before.clone();
    assert_eq!(lifecycle.reap(NO_JITTER, expiry.plus_millis(-1)), None);
    assert_eq!(lifecycle, before, "nothing is due a millisecond early");

    assert_eq!(
        lifecycle.reap(NO_JITTER, expiry),
        Some(ReapOutcome::AttemptFailed(FailureReason::LeaseExpired))
    );
    assert_eq!(lifecycle.state, JobState::Pending);
    let error = lifecycle
        .error
        .clone()
        .expect("the attempt's failure is recorded");
    assert_eq!(error.reason, FailureReason::LeaseExpired);
    assert_eq!(error.reason.as_str(), "lease_expired");
    assert!(
        error.message.contains("lease_ttl_s"),
        "the message says which limit ran out: {}",
        error.message
    );
    assert_eq!(
        lifecycle.run_after,
        expiry.plus_millis(1_000),
        "attempt 1 waits base × 1 s"
    );
    assert_eq!(lifecycle.runner_id, None);
    assert_eq!(lifecycle.lease(), None);
    assert_eq!(
        lifecycle.attempt, 1,
        "the attempt counter is not rolled back"
    );
}

#[test]
fn a_reap_applies_a_deadline_once() {
    let mut lifecycle = in_state(JobState::Running);
    let later = lease_expiry_of(&lifecycle).plus_millis(10);
    assert!(lifecycle.reap(NO_JITTER, later).is_some());
    let after_first = lifecycle.clone();
    assert_eq!(lifecycle.reap(NO_JITTER, later), None);
    assert_eq!(
        lifecycle.reap(NO_JITTER, later.plus_seconds(7200)),
        None,
        "a pending job has no timer even long after"
    );
    assert_eq!(lifecycle, after_first);
}

#[test]
fn heartbeats_keep_the_lease_alive() {
    let mut lifecycle = in_state(JobState::Claimed);
    let mut now = START;
    for _ in 0..10 {
        now = now.plus_seconds(LEASE_TTL_S - 1);
        lifecycle
            .extend_lease(runner_a(), Some(1), now)
            .expect("holder");
        assert_eq!(
            lifecycle.reap(NO_JITTER, now.plus_seconds(LEASE_TTL_S - 1)),
            None
        );
    }
    assert_eq!(lifecycle.state, JobState::Running);
    assert_eq!(lease_expiry_of(&lifecycle), now.plus_seconds(LEASE_TTL_S));
}

#[test]
fn an_attempt_past_its_timeout_is_timed_out_even_with_a_live_lease() {
    let policy = JobPolicy {
        timeout_s: 60,
        ..default_policy()
    };
    let mut lifecycle = JobLifecycle::new_pending(policy, START);
    lifecycle.claim(runner_a(), START).expect("due");
    let deadline = START.plus_seconds(60);
    assert_eq!(lifecycle.attempt_deadline_at, Some(deadline));
    lifecycle
        .extend_lease(runner_a(), None, deadline.plus_millis(-1))
        .expect("holder");
    assert_eq!(
        lifecycle.reap_at(),
        Some(deadline),
        "the timeout is the nearer timer"
    );
    assert_eq!(lifecycle.reap(NO_JITTER, deadline.plus_millis(-1)), None);
    assert_eq!(
        lifecycle.reap(NO_JITTER, deadline),
        Some(ReapOutcome::AttemptFailed(FailureReason::TimedOut))
    );
    assert_eq!(lifecycle.state, JobState::Pending, "attempts remain");
    let error = lifecycle.error.clone().expect("recorded");
    assert_eq!(error.reason.as_str(), "timed_out");
    assert!(error.message.contains("timeout_s"), "{}", error.message);
    assert_eq!(lifecycle.run_after, deadline.plus_millis(1_000));
}

#[test]
fn when_lease_and_timeout_both_passed_the_timeout_is_the_reason() {
    let mut lifecycle = in_state(JobState::Running);
    let far = START.plus_seconds(TIMEOUT_S + 3600);
    assert_eq!(
        lifecycle.reap(NO_JITTER, far),
        Some(ReapOutcome::AttemptFailed(FailureReason::TimedOut))
    );
}

#[test]
fn the_last_attempt_lost_to_a_deadline_fails_the_job_with_that_reason() {
    let cases = [
        (FailureReason::LeaseExpired, START.plus_seconds(LEASE_TTL_S)),
        (FailureReason::TimedOut, START.plus_seconds(TIMEOUT_S)),
    ];
    for (reason, when) in cases {
        let policy = JobPolicy {
            max_attempts: 1,
            ..default_policy()
        };
        let mut lifecycle = JobLifecycle::new_pending(policy, START);
        lifecycle.claim(runner_a(), START).expect("due");
        assert_eq!(
            lifecycle.reap(NO_JITTER, when),
            Some(ReapOutcome::AttemptFailed(reason))
        );
        assert_eq!(lifecycle.state, JobState::Failed, "{reason:?}");
        assert_eq!(
            lifecycle.error.as_ref().map(|error| error.reason),
            Some(reason)
        );
        assert_eq!(lifecycle.finished_at, Some(when));
        assert_eq!(lifecycle.reap_at(), None);
    }
}

#[test]
fn reap_at_is_the_earliest_running_timer() {
    // Lease 30 s, timeout 600 s: the lease comes first.
    let claimed = in_state(JobState::Claimed);
    assert_eq!(claimed.reap_at(), Some(START.plus_seconds(LEASE_TTL_S)));

    // Timeout shorter than the lease: the timeout comes first.
    let policy = JobPolicy {
        timeout_s: 5,
        lease_ttl_s: 30,
        ..default_policy()
    };
    let mut short = JobLifecycle::new_pending(policy, START);
    short.claim(runner_a(), START).expect("due");
    assert_eq!(short.reap_at(), Some(START.plus_seconds(5)));

    // A cancel grace shorter than both: the cancel deadline comes first.
    let mut cancelling = in_state(JobState::Running);
    cancelling.cancel(1_000, at(2_000)).expect("running");
    assert_eq!(cancelling.reap_at(), Some(at(3_000)));

    // A cancel grace longer than the lease: the lease still comes first.
    let mut slow_cancel = in_state(JobState::Running);
    slow_cancel.cancel(600_000, at(2_000)).expect("running");
    assert_eq!(slow_cancel.reap_at(), Some(START.plus_seconds(LEASE_TTL_S)));
}
