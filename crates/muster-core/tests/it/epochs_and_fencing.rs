//! Fencing: only the runner holding the current lease, at the current epoch, may change a job,
//! and the epoch grows with every claim so a superseded holder can never sneak back in.

use muster_core::JobState::{self, Cancelling, Claimed, Pending, Running};
use muster_core::{JobLifecycle, JobPolicy, RunnerId, Timestamp, TransitionError};

use crate::support::{
    NO_JITTER, START, at, default_policy, in_state, policy_with, runner_a, runner_b, runner_error,
};

#[derive(Debug, Clone, Copy, PartialEq)]
enum LeaseCall {
    CheckLease,
    RecordActivity,
    ExtendLease,
    Complete,
    Fail,
}

const LEASE_CALLS: [LeaseCall; 5] = [
    LeaseCall::CheckLease,
    LeaseCall::RecordActivity,
    LeaseCall::ExtendLease,
    LeaseCall::Complete,
    LeaseCall::Fail,
];

fn call(
    lifecycle: &mut JobLifecycle,
    kind: LeaseCall,
    runner: RunnerId,
    epoch: Option<u64>,
    now: Timestamp,
) -> Result<(), TransitionError> {
    match kind {
        LeaseCall::CheckLease => lifecycle.check_lease(runner, epoch),
        LeaseCall::RecordActivity => lifecycle.record_activity(runner, epoch, now).map(|_| ()),
        LeaseCall::ExtendLease => lifecycle.extend_lease(runner, epoch, now).map(|_| ()),
        LeaseCall::Complete => lifecycle.complete(runner, epoch, now).map(|_| ()),
        LeaseCall::Fail => {
            lifecycle.fail(runner, epoch, runner_error("stale"), true, NO_JITTER, now)
        }
    }
}

#[test]
fn another_runner_or_another_epoch_is_refused_with_lease_lost_and_changes_nothing() {
    let now = at(10_000);
    for state in [Claimed, Running, Cancelling] {
        let current = in_state(state).lease_epoch;
        let intruders: [(&str, RunnerId, Option<u64>); 5] = [
            (
                "other runner at the current epoch",
                runner_b(),
                Some(current),
            ),
            ("other runner without an epoch", runner_b(), None),
            ("holder at an older epoch", runner_a(), Some(current - 1)),
            ("holder at a newer epoch", runner_a(), Some(current + 1)),
            ("holder at epoch zero", runner_a(), Some(0)),
        ];
        for (who, runner, epoch) in intruders {
            for kind in LEASE_CALLS {
                let before = in_state(state);
                let mut lifecycle = before.clone();
                let outcome = call(&mut lifecycle, kind, runner, epoch, now);
                assert_eq!(
                    outcome,
                    Err(TransitionError::LeaseLost),
                    "{kind:?} by {who} in {state}"
                );
                assert_eq!(
                    lifecycle, before,
                    "{kind:?} by {who} in {state} changed the job"
                );
            }
        }
    }
}

#[test]
fn the_holder_is_accepted_with_the_current_epoch_or_without_one() {
    for state in [Claimed, Running, Cancelling] {
        for epoch in [Some(in_state(state).lease_epoch), None] {
            for kind in LEASE_CALLS {
                let mut lifecycle = in_state(state);
                assert_eq!(
                    call(&mut lifecycle, kind, runner_a(), epoch, at(10_000)),
                    Ok(()),
                    "{kind:?} by the holder with epoch {epoch:?} in {state}"
                );
            }
        }
    }
}

#[test]
fn unleased_states_refuse_every_lease_call_even_from_the_last_holder() {
    for state in [
        JobState::Pending,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ] {
        let last_epoch = in_state(state).lease_epoch;
        for epoch in [Some(last_epoch), None] {
            for kind in LEASE_CALLS {
                let before = in_state(state);
                let mut lifecycle = before.clone();
                let outcome = call(&mut lifecycle, kind, runner_a(), epoch, at(10_000));
                // The one exception: the runner whose completion ended the job may repeat it
                // (its answer was lost); that is accepted and changes nothing.
                let expected = if state == JobState::Completed && kind == LeaseCall::Complete {
                    Ok(())
                } else {
                    Err(TransitionError::LeaseLost)
                };
                assert_eq!(
                    outcome, expected,
                    "{kind:?} in {state} with epoch {epoch:?}"
                );
                assert_eq!(lifecycle, before, "{kind:?} in {state} changed the job");
            }
        }
    }
}

#[test]
fn only_the_runner_that_completed_a_job_may_repeat_the_completion_and_only_at_its_epoch() {
    let completed = in_state(JobState::Completed);
    let epoch = completed.lease_epoch;
    for (runner, epoch, accepted) in [
        (runner_a(), Some(epoch), true),
        (runner_a(), None, true),
        (runner_a(), Some(epoch + 1), false),
        (runner_a(), Some(epoch.saturating_sub(1)), false),
        (runner_b(), Some(epoch), false),
        (runner_b(), None, false),
    ] {
        let mut lifecycle = completed.clone();
        let outcome = lifecycle.complete(runner, epoch, at(20_000));
        let expected = if accepted {
            Ok(muster_core::Completion::Repeated)
        } else {
            Err(TransitionError::LeaseLost)
        };
        assert_eq!(outcome, expected, "completion by {runner:?} at {epoch:?}");
        assert_eq!(
            lifecycle, completed,
            "a repeated completion changes nothing"
        );
    }
}

#[test]
fn after_a_failed_attempt_the_old_holder_is_fenced_off_even_before_the_next_claim() {
    let mut lifecycle = in_state(Running);
    lifecycle
        .fail(
            runner_a(),
            Some(1),
            runner_error("x"),
            true,
            NO_JITTER,
            at(5_000),
        )
        .expect("holder may fail");
    assert_eq!(lifecycle.state, Pending);
    let before = lifecycle.clone();
    assert_eq!(
        lifecycle.complete(runner_a(), Some(1), at(5_500)),
        Err(TransitionError::LeaseLost)
    );
    assert_eq!(lifecycle, before);
}

#[test]
fn a_reclaim_by_the_same_runner_fences_off_its_own_older_epoch() {
    let mut lifecycle = JobLifecycle::new_pending(policy_with(5, 0), START);
    let first = lifecycle.claim(runner_a(), at(0)).expect("due");
    lifecycle
        .fail(
            runner_a(),
            Some(first.epoch),
            runner_error("x"),
            true,
            NO_JITTER,
            at(1_000),
        )
        .expect("holder may fail");
    // Backoff base 0: due again at once, and the same runner takes it back.
    let second = lifecycle.claim(runner_a(), at(1_000)).expect("due");
    assert_eq!(second.epoch, first.epoch + 1);
    let before = lifecycle.clone();
    assert_eq!(
        lifecycle.complete(runner_a(), Some(first.epoch), at(2_000)),
        Err(TransitionError::LeaseLost),
        "the first attempt's epoch is stale"
    );
    assert_eq!(lifecycle, before);
    lifecycle
        .complete(runner_a(), Some(second.epoch), at(2_000))
        .expect("the current epoch is accepted");
}

#[test]
fn epochs_grow_strictly_across_claims_failures_reaps_releases_and_retries() {
    let policy = JobPolicy {
        max_attempts: 2,
        backoff_base_s: 0,
        ..default_policy()
    };
    let mut lifecycle = JobLifecycle::new_pending(policy, START);
    let mut epochs = Vec::new();
    let mut claim = |lifecycle: &mut JobLifecycle, runner: RunnerId, now: Timestamp| {
        let lease = lifecycle.claim(runner, now).expect("pending and due");
        assert_eq!(lease.epoch, lifecycle.lease_epoch);
        epochs.push(lease.epoch);
    };

    claim(&mut lifecycle, runner_a(), at(1_000));
    lifecycle
        .fail(
            runner_a(),
            None,
            runner_error("1"),
            true,
            NO_JITTER,
            at(2_000),
        )
        .expect("holder");
    claim(&mut lifecycle, runner_b(), at(3_000));
    // The second and last attempt is lost to the reaper: failed for good.
    let much_later = at(3_000).plus_seconds(3600);
    assert!(lifecycle.reap(NO_JITTER, much_later).is_some());
    assert_eq!(lifecycle.state, JobState::Failed);
    lifecycle.retry(much_later).expect("failed may be retried");
    claim(&mut lifecycle, runner_a(), much_later);
    lifecycle.release("runner gone".into(), NO_JITTER, much_later);
    assert_eq!(lifecycle.state, Pending);
    claim(&mut lifecycle, runner_b(), much_later);
    lifecycle
        .cancel(1_000, much_later)
        .expect("a leased job can be cancelled");
    lifecycle
        .fail(
            runner_b(),
            None,
            runner_error("stopped"),
            true,
            NO_JITTER,
            much_later,
        )
        .expect("holder");
    assert_eq!(lifecycle.state, JobState::Cancelled);
    lifecycle
        .retry(much_later)
        .expect("cancelled may be retried");
    claim(&mut lifecycle, runner_a(), much_later);

    assert_eq!(
        epochs,
        vec![1, 2, 3, 4, 5],
        "one new epoch per claim, never reused"
    );
}

#[test]
fn claim_before_run_after_is_not_yet_due_and_changes_nothing() {
    let run_after = at(60_000);
    let before = JobLifecycle::new_pending(default_policy(), run_after);
    let mut lifecycle = before.clone();
    assert_eq!(
        lifecycle.claim(runner_a(), run_after.plus_millis(-1)),
        Err(TransitionError::NotYetDue)
    );
    assert_eq!(lifecycle, before);
    let lease = lifecycle
        .claim(runner_a(), run_after)
        .expect("due exactly at run_after");
    assert_eq!(lease.epoch, 1);
}

#[test]
fn claim_during_retry_backoff_is_not_yet_due() {
    let mut lifecycle = JobLifecycle::new_pending(policy_with(3, 10), START);
    lifecycle.claim(runner_a(), START).expect("due");
    lifecycle
        .fail(
            runner_a(),
            Some(1),
            runner_error("x"),
            true,
            NO_JITTER,
            at(1_000),
        )
        .expect("holder");
    assert_eq!(lifecycle.run_after, at(11_000), "base 10 s for attempt 1");
    let before = lifecycle.clone();
    assert_eq!(
        lifecycle.claim(runner_b(), at(10_999)),
        Err(TransitionError::NotYetDue)
    );
    assert_eq!(lifecycle, before);
    lifecycle
        .claim(runner_b(), at(11_000))
        .expect("due once the backoff is over");
    assert_eq!(lifecycle.attempt, 2);
}
