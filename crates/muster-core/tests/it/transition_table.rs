//! Every operation from every state: the full matrix of what the state machine allows and what
//! it refuses. A refusal must leave the lifecycle exactly as it was, because stores write back
//! whatever the lifecycle holds after a call.

use muster_core::JobState::{
    self, Cancelled, Cancelling, Claimed, Completed, Failed, Pending, Running,
};
use muster_core::TransitionError::{self, InvalidState, LeaseLost};
use muster_core::{
    Activity, AttemptOutcome, BulkJobAction, CancelOutcome, Completion, FailureReason,
    JobLifecycle, ReapOutcome, attempt_history, ended_attempt,
};

use crate::support::{
    CANCEL_GRACE_MS, LEASE_TTL_S, NO_JITTER, at, cancelled_error, in_state, runner_a, runner_b,
    runner_error,
};

#[derive(Debug, Clone, Copy)]
enum Operation {
    /// By runner B, which never held the job: only the state decides.
    Claim,
    RecordActivity,
    ExtendLease,
    Complete,
    FailRetryable,
    FailNotRetryable,
    FailWithReasonCancelled,
    Cancel,
    Retry,
}

const OPERATIONS: [Operation; 9] = [
    Operation::Claim,
    Operation::RecordActivity,
    Operation::ExtendLease,
    Operation::Complete,
    Operation::FailRetryable,
    Operation::FailNotRetryable,
    Operation::FailWithReasonCancelled,
    Operation::Cancel,
    Operation::Retry,
];

type Expected = Result<JobState, TransitionError>;

/// Rows are the starting state; columns follow `OPERATIONS`. Lease-scoped calls are made by
/// runner A with the lifecycle's current epoch, i.e. by the rightful holder whenever there is one.
fn matrix() -> Vec<(JobState, [Expected; 9])> {
    vec![
        (
            Pending,
            [
                Ok(Claimed),
                Err(LeaseLost),
                Err(LeaseLost),
                Err(LeaseLost),
                Err(LeaseLost),
                Err(LeaseLost),
                Err(LeaseLost),
                Ok(Cancelled),
                Err(InvalidState(Pending)),
            ],
        ),
        (
            Claimed,
            [
                Err(InvalidState(Claimed)),
                Ok(Running),
                Ok(Running),
                Ok(Completed),
                Ok(Pending),
                Ok(Failed),
                Ok(Cancelled),
                Ok(Cancelling),
                Err(InvalidState(Claimed)),
            ],
        ),
        (
            Running,
            [
                Err(InvalidState(Running)),
                Ok(Running),
                Ok(Running),
                Ok(Completed),
                Ok(Pending),
                Ok(Failed),
                Ok(Cancelled),
                Ok(Cancelling),
                Err(InvalidState(Running)),
            ],
        ),
        (
            Cancelling,
            [
                Err(InvalidState(Cancelling)),
                Ok(Cancelling),
                Ok(Cancelling),
                Ok(Completed),
                Ok(Cancelled),
                Ok(Cancelled),
                Ok(Cancelled),
                Ok(Cancelling),
                Err(InvalidState(Cancelling)),
            ],
        ),
        (
            Completed,
            [
                Err(InvalidState(Completed)),
                Err(LeaseLost),
                Err(LeaseLost),
                // The completing runner repeating its completion: accepted, nothing changes
                // (checked in epochs_and_fencing).
                Ok(Completed),
                Err(LeaseLost),
                Err(LeaseLost),
                Err(LeaseLost),
                Err(InvalidState(Completed)),
                Err(InvalidState(Completed)),
            ],
        ),
        (
            Failed,
            [
                Err(InvalidState(Failed)),
                Err(LeaseLost),
                Err(LeaseLost),
                Err(LeaseLost),
                Err(LeaseLost),
                Err(LeaseLost),
                Err(LeaseLost),
                Err(InvalidState(Failed)),
                Ok(Pending),
            ],
        ),
        (
            Cancelled,
            [
                Err(InvalidState(Cancelled)),
                Err(LeaseLost),
                Err(LeaseLost),
                Err(LeaseLost),
                Err(LeaseLost),
                Err(LeaseLost),
                Err(LeaseLost),
                Err(InvalidState(Cancelled)),
                Ok(Pending),
            ],
        ),
    ]
}

fn apply(lifecycle: &mut JobLifecycle, operation: Operation) -> Result<(), TransitionError> {
    // Ten seconds after the claim: the lease (30 s) and the timeout are still running, and the
    // builders' pending jobs are due.
    let now = at(10_000);
    let epoch = Some(lifecycle.lease_epoch);
    match operation {
        Operation::Claim => lifecycle.claim(runner_b(), now).map(|_| ()),
        Operation::RecordActivity => lifecycle
            .record_activity(runner_a(), epoch, now)
            .map(|_| ()),
        Operation::ExtendLease => lifecycle.extend_lease(runner_a(), epoch, now).map(|_| ()),
        Operation::Complete => lifecycle.complete(runner_a(), epoch, now).map(|_| ()),
        Operation::FailRetryable => {
            lifecycle.fail(runner_a(), epoch, runner_error("x"), true, NO_JITTER, now)
        }
        Operation::FailNotRetryable => {
            lifecycle.fail(runner_a(), epoch, runner_error("x"), false, NO_JITTER, now)
        }
        Operation::FailWithReasonCancelled => {
            lifecycle.fail(runner_a(), epoch, cancelled_error(), true, NO_JITTER, now)
        }
        Operation::Cancel => lifecycle.cancel(CANCEL_GRACE_MS, now).map(|_| ()),
        Operation::Retry => lifecycle.retry(now),
    }
}

#[test]
fn every_operation_from_every_state_gives_the_expected_state_or_refusal() {
    let rows = matrix();
    let states_covered: Vec<JobState> = rows.iter().map(|(state, _)| *state).collect();
    assert_eq!(
        states_covered,
        JobState::ALL.to_vec(),
        "the matrix must have one row per state"
    );
    let mut failures = Vec::new();
    for (state, expectations) in rows {
        for (operation, expected) in OPERATIONS.into_iter().zip(expectations) {
            let before = in_state(state);
            let mut lifecycle = before.clone();
            let outcome = apply(&mut lifecycle, operation).map(|()| lifecycle.state);
            if outcome != expected {
                failures.push(format!(
                    "{state} + {operation:?}: expected {expected:?}, got {outcome:?}"
                ));
            }
            if outcome.is_err() && lifecycle != before {
                failures.push(format!(
                    "{state} + {operation:?}: refused but changed the lifecycle"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_bulk_action_changes_exactly_the_jobs_whose_state_its_transition_changes() {
    // A dry run counts the jobs in `changes_jobs_in`: that must be exactly the states from
    // which the action's own transition succeeds and leaves the job in another state.
    let mut failures = Vec::new();
    for action in BulkJobAction::ALL {
        assert_eq!(BulkJobAction::parse(action.as_str()), Some(action));
        let operation = match action {
            BulkJobAction::Cancel => Operation::Cancel,
            BulkJobAction::Retry => Operation::Retry,
        };
        for state in JobState::ALL {
            let mut lifecycle = in_state(state);
            let changed = apply(&mut lifecycle, operation).is_ok() && lifecycle.state != state;
            if changed != action.changes(state) {
                failures.push(format!(
                    "{action:?} from {state}: the transition changes it: {changed}, the bulk rule says {}",
                    action.changes(state)
                ));
            }
        }
    }
    assert_eq!(BulkJobAction::parse("delete"), None);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn reaping_after_the_lease_ran_out_acts_only_on_leased_jobs() {
    // The lease of every builder's claim (at START) ran out at START + 30 s; the attempt
    // deadline (600 s) has not passed and the cancel grace (7 s after START) has.
    let lease_end = at(i64::from(LEASE_TTL_S) * 1000);
    let cases: [(JobState, Option<ReapOutcome>, JobState); 7] = [
        (Pending, None, Pending),
        (
            Claimed,
            Some(ReapOutcome::AttemptFailed(FailureReason::LeaseExpired)),
            Pending,
        ),
        (
            Running,
            Some(ReapOutcome::AttemptFailed(FailureReason::LeaseExpired)),
            Pending,
        ),
        (Cancelling, Some(ReapOutcome::CancelFinished), Cancelled),
        (Completed, None, Completed),
        (Failed, None, Failed),
        (Cancelled, None, Cancelled),
    ];
    for (state, expected_outcome, expected_state) in cases {
        let before = in_state(state);
        let mut lifecycle = before.clone();
        let outcome = lifecycle.reap(0.0, lease_end);
        assert_eq!(outcome, expected_outcome, "reap from {state}");
        assert_eq!(
            lifecycle.state, expected_state,
            "state after reap from {state}"
        );
        if outcome.is_none() {
            assert_eq!(lifecycle, before, "a reap that did nothing changed {state}");
        }
    }
}

#[test]
fn releasing_a_deleted_runners_lease_acts_only_on_leased_jobs() {
    let now = at(10_000);
    let cases: [(JobState, JobState, Option<FailureReason>); 7] = [
        (Pending, Pending, None),
        (Claimed, Pending, Some(FailureReason::LeaseExpired)),
        (Running, Pending, Some(FailureReason::LeaseExpired)),
        (Cancelling, Cancelled, Some(FailureReason::Cancelled)),
        (Completed, Completed, None),
        (Failed, Failed, Some(FailureReason::RunnerError)),
        (Cancelled, Cancelled, Some(FailureReason::Cancelled)),
    ];
    for (state, expected_state, expected_reason) in cases {
        let before = in_state(state);
        let mut lifecycle = before.clone();
        lifecycle.release("runner deleted".to_string(), NO_JITTER, now);
        assert_eq!(lifecycle.state, expected_state, "release from {state}");
        assert_eq!(
            lifecycle.error.as_ref().map(|error| error.reason),
            expected_reason,
            "error reason after release from {state}"
        );
        if !state.is_leased() {
            assert_eq!(
                lifecycle, before,
                "release must not touch an unleased {state} job"
            );
        } else {
            assert_eq!(lifecycle.runner_id.is_some(), expected_state != Pending);
            assert_eq!(lifecycle.lease(), None, "no lease survives a release");
        }
    }
}

#[test]
fn lease_reap_at_and_cancel_requested_follow_the_state() {
    for state in JobState::ALL {
        let lifecycle = in_state(state);
        assert_eq!(
            lifecycle.lease().is_some(),
            state.is_leased(),
            "lease() in {state}"
        );
        assert_eq!(
            lifecycle.reap_at().is_some(),
            state.is_leased(),
            "reap_at() in {state}"
        );
        assert_eq!(
            lifecycle.cancel_requested(),
            state == Cancelling,
            "cancel_requested() in {state}"
        );
        if state.is_terminal() {
            assert!(
                lifecycle.finished_at.is_some(),
                "{state} must record finished_at"
            );
            assert_eq!(lifecycle.lease_expires_at, None);
            assert_eq!(lifecycle.attempt_deadline_at, None);
            assert_eq!(lifecycle.cancel_deadline_at, None);
        } else {
            assert_eq!(lifecycle.finished_at, None, "{state} must not be finished");
        }
    }
}

#[test]
fn claim_grants_a_lease_with_the_policys_ttl_and_timeout() {
    let mut lifecycle = in_state(Pending);
    let now = at(4_000);
    let lease = lifecycle.claim(runner_b(), now).expect("pending and due");
    assert_eq!(lease.epoch, 1);
    assert_eq!(lease.ttl_ms, i64::from(LEASE_TTL_S) * 1000);
    assert_eq!(lease.expires_at, now.plus_seconds(LEASE_TTL_S));
    assert_eq!(lifecycle.lease(), Some(lease));
    assert_eq!(lifecycle.attempt, 1);
    assert_eq!(lifecycle.runner_id, Some(runner_b()));
    assert_eq!(lifecycle.claimed_at, Some(now));
    assert_eq!(
        lifecycle.started_at, None,
        "started only at the first activity"
    );
    assert_eq!(
        lifecycle.attempt_deadline_at,
        Some(now.plus_seconds(lifecycle.policy.timeout_s))
    );
    assert_eq!(lifecycle.reap_at(), Some(lease.expires_at));
}

#[test]
fn first_activity_starts_the_job_and_later_activity_keeps_started_at() {
    let mut lifecycle = in_state(Claimed);
    lifecycle
        .record_activity(runner_a(), None, at(1_500))
        .expect("holder without an epoch is accepted");
    assert_eq!(lifecycle.state, Running);
    assert_eq!(lifecycle.started_at, Some(at(1_500)));
    let lease_before = lifecycle.lease_expires_at;
    lifecycle
        .record_activity(runner_a(), Some(1), at(9_000))
        .expect("holder with the epoch is accepted");
    assert_eq!(lifecycle.started_at, Some(at(1_500)));
    assert_eq!(
        lifecycle.lease_expires_at, lease_before,
        "plain activity does not extend the lease"
    );
}

#[test]
fn extend_lease_moves_expiry_to_now_plus_ttl_and_starts_a_claimed_job() {
    let mut lifecycle = in_state(Claimed);
    let now = at(20_000);
    let lease = lifecycle
        .extend_lease(runner_a(), Some(1), now)
        .expect("holder may extend");
    assert_eq!(lease.expires_at, now.plus_seconds(LEASE_TTL_S));
    assert_eq!(lease.epoch, 1, "extending keeps the epoch");
    assert_eq!(lifecycle.state, Running);
    assert_eq!(lifecycle.started_at, Some(now));
    assert_eq!(lifecycle.lease(), Some(lease));
}

#[test]
fn complete_records_the_end_and_clears_every_timer() {
    let mut lifecycle = in_state(Claimed);
    lifecycle
        .complete(runner_a(), Some(1), at(2_000))
        .expect("holder may complete");
    assert_eq!(lifecycle.state, Completed);
    assert_eq!(lifecycle.finished_at, Some(at(2_000)));
    assert_eq!(
        lifecycle.started_at,
        Some(at(2_000)),
        "a job completed without any heartbeat still gets a start"
    );
    assert_eq!(lifecycle.error, None);
    assert_eq!(lifecycle.reap_at(), None);
    assert_eq!(lifecycle.runner_id, Some(runner_a()), "who did it is kept");
}

#[test]
fn retry_of_failed_or_cancelled_gives_a_fresh_pending_job_that_keeps_its_epoch() {
    for state in [Failed, Cancelled] {
        let mut lifecycle = in_state(state);
        let epoch_before = lifecycle.lease_epoch;
        let now = at(50_000);
        lifecycle.retry(now).expect("retry is allowed here");
        assert_eq!(lifecycle.state, Pending, "from {state}");
        assert_eq!(lifecycle.attempt, 0, "attempts start over from {state}");
        assert_eq!(lifecycle.run_after, now, "due at once from {state}");
        assert_eq!(lifecycle.lease_epoch, epoch_before, "epoch never goes back");
        assert_eq!(lifecycle.error, None);
        assert_eq!(lifecycle.runner_id, None);
        assert_eq!(lifecycle.finished_at, None);
        assert_eq!(lifecycle.claimed_at, None);
        let lease = lifecycle
            .claim(runner_b(), now)
            .expect("a retried job is claimable at once");
        assert_eq!(lease.epoch, epoch_before + 1);
    }
}

#[test]
fn a_completion_or_a_cancel_says_whether_it_changed_anything() {
    // Stores write back only what changed; they learn it from the outcome, so the outcome must
    // be true to the lifecycle in every state.
    let now = at(10_000);
    for state in JobState::ALL {
        let before = in_state(state);
        let epoch = Some(before.lease_epoch);
        let mut completed = before.clone();
        match completed.complete(runner_a(), epoch, now) {
            Ok(Completion::Repeated) => assert_eq!(completed, before, "{state}: a repeat"),
            Ok(Completion::Completed) => {
                assert_ne!(completed, before, "{state}: completed");
                assert_eq!(completed.state, Completed);
            }
            Err(_) => assert_eq!(completed, before, "{state}: refused"),
        }
        let mut cancelled = before.clone();
        match cancelled.cancel(CANCEL_GRACE_MS, now) {
            Ok(CancelOutcome::AlreadyCancelling) => {
                assert_eq!(cancelled, before, "{state}: already cancelling")
            }
            Ok(CancelOutcome::Cancelled) => assert_eq!(cancelled.state, Cancelled, "{state}"),
            Ok(CancelOutcome::Cancelling) => assert_eq!(cancelled.state, Cancelling, "{state}"),
            Err(_) => assert_eq!(cancelled, before, "{state}: refused"),
        }
    }
    assert_eq!(
        in_state(Completed).complete(runner_a(), None, now),
        Ok(Completion::Repeated)
    );
    let claimed = in_state(Claimed);
    let mut started = claimed.clone();
    assert_eq!(
        started.record_activity(runner_a(), None, now),
        Ok(Activity::Started)
    );
    assert_ne!(started, claimed, "the first activity starts the job");
    let running = started.clone();
    assert_eq!(
        started.record_activity(runner_a(), None, now),
        Ok(Activity::Continued)
    );
    assert_eq!(started, running, "later activity changes nothing");
    assert_eq!(
        in_state(Cancelling).cancel(CANCEL_GRACE_MS, now),
        Ok(CancelOutcome::AlreadyCancelling)
    );
}

/// What each allowed operation leaves in the attempt history: the attempt it ended without
/// completing it (`Some`), or nothing (`None`: no attempt was running, the same one goes on, or
/// it completed and the job row keeps it). Refused operations are `None` too. Rows and columns
/// as in [`matrix`].
fn attempt_matrix() -> Vec<(JobState, [Option<AttemptOutcome>; 9])> {
    use AttemptOutcome::{Cancelled as Stopped, Failed as Broke};
    let leased = [
        None,
        None,
        None,
        None,
        Some(Broke),
        Some(Broke),
        Some(Stopped),
        None,
        None,
    ];
    vec![
        (Pending, [None; 9]),
        (Claimed, leased),
        (Running, leased),
        (
            Cancelling,
            [
                None,
                None,
                None,
                None,
                Some(Stopped),
                Some(Stopped),
                Some(Stopped),
                None,
                None,
            ],
        ),
        (Completed, [None; 9]),
        (Failed, [None; 9]),
        (Cancelled, [None; 9]),
    ]
}

#[test]
fn every_operation_from_every_state_keeps_the_attempt_it_ended_and_only_that() {
    let rows = attempt_matrix();
    assert_eq!(
        rows.iter().map(|(state, _)| *state).collect::<Vec<_>>(),
        JobState::ALL.to_vec()
    );
    let now = at(10_000);
    let mut failures = Vec::new();
    for (state, expectations) in rows {
        for (operation, expected) in OPERATIONS.into_iter().zip(expectations) {
            let before = in_state(state);
            let mut after = before.clone();
            let kept = match apply(&mut after, operation) {
                Ok(()) => ended_attempt(&before, &after, now),
                Err(_) => None,
            };
            if kept.as_ref().map(|record| record.outcome) != expected {
                failures.push(format!(
                    "{state} + {operation:?}: expected {expected:?}, got {kept:?}"
                ));
            }
            if let Some(record) = kept {
                // The record is the attempt that was running, with the error that ended it.
                let wrong = record.attempt != before.attempt
                    || record.lease_epoch != before.lease_epoch
                    || record.runner_id != before.runner_id
                    || record.claimed_at != before.claimed_at
                    || record.started_at != before.started_at
                    || record.ended_at != Some(after.finished_at.unwrap_or(now))
                    || record.error != after.error
                    || record.error.is_none();
                if wrong {
                    failures.push(format!("{state} + {operation:?}: kept {record:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn deadlines_and_a_released_lease_keep_the_attempt_they_ended() {
    let running = in_state(Running);
    let mut timed_out = running.clone();
    let late = at(10_000_000);
    assert!(timed_out.reap(NO_JITTER, late).is_some());
    let kept = ended_attempt(&running, &timed_out, late).expect("a timed-out attempt is kept");
    assert_eq!(kept.outcome, AttemptOutcome::Failed);
    assert_eq!(
        kept.error.map(|error| error.reason),
        Some(FailureReason::TimedOut)
    );
    assert_eq!(kept.ended_at, Some(late), "pending again: it ended now");

    let mut released = running.clone();
    released.release("runner deleted".into(), NO_JITTER, at(20_000));
    let kept = ended_attempt(&running, &released, at(20_000)).expect("a released attempt");
    assert_eq!(
        kept.error.map(|error| error.reason),
        Some(FailureReason::LeaseExpired)
    );
    let mut not_due = running.clone();
    assert!(not_due.reap(NO_JITTER, at(10_000)).is_none());
    assert_eq!(ended_attempt(&running, &not_due, at(10_000)), None);
}

#[test]
fn the_history_is_the_kept_attempts_then_the_one_in_the_job() {
    // Attempt 1 failed and was kept; attempt 2 runs: both show, oldest first.
    let running = in_state(Running);
    let mut first = running.clone();
    first
        .fail(
            runner_a(),
            Some(running.lease_epoch),
            runner_error("boom"),
            true,
            NO_JITTER,
            at(10_000),
        )
        .expect("fail");
    let kept = ended_attempt(&running, &first, at(10_000)).expect("kept");
    let mut second = first.clone();
    second.claim(runner_b(), at(50_000)).expect("claim again");
    let history = attempt_history(vec![kept.clone()], &second);
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[0], kept);
    assert_eq!(history[1].outcome, AttemptOutcome::InProgress);
    assert_eq!(history[1].runner_id, Some(runner_b()));
    assert!(history[1].lease_epoch > history[0].lease_epoch);

    // It completes: the job row's attempt is the completed one.
    let mut done = second.clone();
    done.complete(runner_b(), Some(second.lease_epoch), at(60_000))
        .expect("complete");
    let history = attempt_history(vec![kept.clone()], &done);
    assert_eq!(history[1].outcome, AttemptOutcome::Completed);
    assert_eq!(history[1].ended_at, Some(at(60_000)));

    // It fails for good instead: that attempt was kept when it ended, and shows once.
    let mut broke = second.clone();
    broke
        .fail(
            runner_b(),
            Some(second.lease_epoch),
            runner_error("again"),
            false,
            NO_JITTER,
            at(70_000),
        )
        .expect("fail");
    let last = ended_attempt(&second, &broke, at(70_000)).expect("kept");
    let history = attempt_history(vec![last.clone(), kept.clone()], &broke);
    assert_eq!(history, vec![kept, last], "oldest first, each once");

    // A pending job that never ran has no history.
    assert_eq!(attempt_history(Vec::new(), &in_state(Pending)), Vec::new());
    for outcome in AttemptOutcome::ALL {
        assert_eq!(AttemptOutcome::parse(outcome.as_str()), Some(outcome));
    }
}
