//! Cancel: a pending job ends at once; a leased one waits a grace period for its runner to stop,
//! and whatever happens next (runner fails, grace runs out, lease or timeout runs out, runner
//! vanishes) it ends `cancelled` and is never retried behind the user's back. Only a completion
//! wins over a cancel, because the work was really done.

use muster_core::{FailureReason, JobLifecycle, JobPolicy, JobState, ReapOutcome, TransitionError};

use crate::support::{
    CANCEL_GRACE_MS, LEASE_TTL_S, NO_JITTER, START, at, default_policy, in_state, runner_a,
    runner_b, runner_error,
};

fn cancel_reason(lifecycle: &JobLifecycle) -> Option<FailureReason> {
    lifecycle.error.as_ref().map(|error| error.reason)
}

#[test]
fn cancel_of_a_pending_job_ends_it_at_once() {
    for run_after in [START, at(3_600_000)] {
        let mut lifecycle = JobLifecycle::new_pending(default_policy(), run_after);
        lifecycle.cancel(CANCEL_GRACE_MS, at(100)).expect("pending");
        assert_eq!(lifecycle.state, JobState::Cancelled);
        assert_eq!(lifecycle.finished_at, Some(at(100)));
        assert_eq!(cancel_reason(&lifecycle), Some(FailureReason::Cancelled));
        assert_eq!(lifecycle.cancel_deadline_at, None, "nothing to wait for");
        assert_eq!(
            lifecycle.claim(runner_a(), at(3_600_000)),
            Err(TransitionError::InvalidState(JobState::Cancelled)),
            "a cancelled job is never claimed"
        );
    }
}

#[test]
fn cancel_of_a_leased_job_waits_for_the_runner_and_keeps_its_lease() {
    for state in [JobState::Claimed, JobState::Running] {
        let mut lifecycle = in_state(state);
        lifecycle
            .cancel(CANCEL_GRACE_MS, at(2_000))
            .expect("leased");
        assert_eq!(lifecycle.state, JobState::Cancelling, "from {state}");
        assert!(lifecycle.cancel_requested());
        assert_eq!(
            lifecycle.cancel_deadline_at,
            Some(at(2_000 + CANCEL_GRACE_MS))
        );
        assert_eq!(lifecycle.runner_id, Some(runner_a()));
        assert_eq!(lifecycle.finished_at, None);
        let lease = lifecycle
            .extend_lease(runner_a(), Some(1), at(3_000))
            .expect("the holder still heartbeats while it winds down");
        assert_eq!(lease.epoch, 1);
        assert_eq!(
            lifecycle.state,
            JobState::Cancelling,
            "activity does not undo a cancel"
        );
    }
}

#[test]
fn a_second_cancel_changes_nothing() {
    let before = in_state(JobState::Cancelling);
    let mut lifecycle = before.clone();
    lifecycle
        .cancel(60_000, at(4_000))
        .expect("cancelling again is accepted");
    assert_eq!(lifecycle, before, "the grace deadline must not move");
}

#[test]
fn the_runner_failing_a_cancelling_job_ends_it_cancelled_whatever_it_reports() {
    for retryable in [true, false] {
        let mut lifecycle = in_state(JobState::Cancelling);
        assert!(
            lifecycle.attempt < lifecycle.policy.max_attempts,
            "attempts remain"
        );
        lifecycle
            .fail(
                runner_a(),
                Some(1),
                runner_error("interrupted"),
                retryable,
                NO_JITTER,
                at(3_000),
            )
            .expect("holder");
        assert_eq!(
            lifecycle.state,
            JobState::Cancelled,
            "retryable {retryable}"
        );
        assert_eq!(cancel_reason(&lifecycle), Some(FailureReason::Cancelled));
        assert_eq!(lifecycle.finished_at, Some(at(3_000)));
        assert_eq!(lifecycle.reap_at(), None);
    }
}

#[test]
fn a_runner_reporting_reason_cancelled_ends_the_job_without_retry() {
    let mut lifecycle = in_state(JobState::Running);
    lifecycle
        .fail(
            runner_a(),
            Some(1),
            muster_core::JobError {
                reason: FailureReason::Cancelled,
                message: "stopped by its own operator".into(),
            },
            true,
            NO_JITTER,
            at(3_000),
        )
        .expect("holder");
    assert_eq!(lifecycle.state, JobState::Cancelled);
    assert_eq!(
        lifecycle.error.as_ref().map(|error| error.message.as_str()),
        Some("stopped by its own operator")
    );
}

#[test]
fn completing_a_cancelling_job_completes_it() {
    let mut lifecycle = in_state(JobState::Cancelling);
    lifecycle
        .complete(runner_a(), Some(1), at(3_000))
        .expect("holder");
    assert_eq!(lifecycle.state, JobState::Completed);
    assert_eq!(lifecycle.error, None);
    assert_eq!(lifecycle.cancel_deadline_at, None);
    assert_eq!(lifecycle.reap_at(), None);
}

#[test]
fn another_runner_cannot_confirm_a_cancel() {
    let before = in_state(JobState::Cancelling);
    let mut lifecycle = before.clone();
    assert_eq!(
        lifecycle.fail(
            runner_b(),
            Some(1),
            runner_error("x"),
            true,
            NO_JITTER,
            at(3_000)
        ),
        Err(TransitionError::LeaseLost)
    );
    assert_eq!(lifecycle, before);
}

#[test]
fn a_cancel_whose_grace_passed_is_finished_by_the_reaper() {
    let before = in_state(JobState::Cancelling);
    let grace_end = before
        .cancel_deadline_at
        .expect("a cancelling job has a grace deadline");
    assert_eq!(grace_end, at(2_000 + CANCEL_GRACE_MS));
    let mut lifecycle = before.clone();
    assert_eq!(lifecycle.reap(NO_JITTER, grace_end.plus_millis(-1)), None);
    assert_eq!(lifecycle, before);
    assert_eq!(
        lifecycle.reap(NO_JITTER, grace_end),
        Some(ReapOutcome::CancelFinished)
    );
    assert_eq!(lifecycle.state, JobState::Cancelled);
    assert_eq!(cancel_reason(&lifecycle), Some(FailureReason::Cancelled));
    assert_eq!(lifecycle.finished_at, Some(grace_end));
    assert_eq!(
        lifecycle.reap(NO_JITTER, grace_end.plus_seconds(60)),
        None,
        "applied once"
    );
}

#[test]
fn a_cancelling_job_whose_lease_expires_before_the_grace_ends_cancelled() {
    let mut lifecycle = in_state(JobState::Running);
    lifecycle.cancel(3_600_000, at(2_000)).expect("running");
    let lease_end = START.plus_seconds(LEASE_TTL_S);
    assert_eq!(lifecycle.reap_at(), Some(lease_end));
    assert_eq!(
        lifecycle.reap(NO_JITTER, lease_end),
        Some(ReapOutcome::CancelFinished)
    );
    assert_eq!(lifecycle.state, JobState::Cancelled);
}

#[test]
fn a_cancelling_job_whose_attempt_times_out_before_the_grace_ends_cancelled_not_retried() {
    // A short timeout, a lease kept alive by heartbeats and a long grace: the attempt deadline is
    // the first timer to pass. The user asked for a cancel, so a retry would resurrect the job.
    let policy = JobPolicy {
        timeout_s: 10,
        ..default_policy()
    };
    let mut lifecycle = JobLifecycle::new_pending(policy, START);
    lifecycle.claim(runner_a(), START).expect("due");
    lifecycle.cancel(3_600_000, at(1_000)).expect("claimed");
    lifecycle
        .extend_lease(runner_a(), Some(1), at(9_000))
        .expect("holder");
    let deadline = START.plus_seconds(10);
    assert_eq!(lifecycle.reap_at(), Some(deadline));
    assert_eq!(
        lifecycle.reap(NO_JITTER, deadline),
        Some(ReapOutcome::CancelFinished)
    );
    assert_eq!(lifecycle.state, JobState::Cancelled);
    assert_eq!(cancel_reason(&lifecycle), Some(FailureReason::Cancelled));
}

#[test]
fn a_cancelling_job_whose_runner_is_deleted_ends_cancelled() {
    let mut lifecycle = in_state(JobState::Cancelling);
    lifecycle.release("runner deleted".into(), NO_JITTER, at(3_000));
    assert_eq!(lifecycle.state, JobState::Cancelled);
    assert_eq!(cancel_reason(&lifecycle), Some(FailureReason::Cancelled));
}

#[test]
fn cancel_of_a_finished_job_is_refused_with_its_state() {
    for state in [JobState::Completed, JobState::Failed, JobState::Cancelled] {
        let before = in_state(state);
        let mut lifecycle = before.clone();
        assert_eq!(
            lifecycle.cancel(CANCEL_GRACE_MS, at(9_000)),
            Err(TransitionError::InvalidState(state))
        );
        assert_eq!(lifecycle, before);
    }
}
