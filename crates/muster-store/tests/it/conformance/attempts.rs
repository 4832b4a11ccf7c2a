//! The attempt history: an attempt that ends without completing its job (a failure, a lost
//! lease, a timeout, a cancel, its runner deleted) is kept when it ends, named by its lease
//! epoch, with the runner, times and error of that attempt; a completed attempt stays in the job
//! row only; a user's retry goes on numbering by epoch; retention deletes the history with its
//! job.

use std::sync::Arc;

use anyhow::{Context, ensure};
use muster_core::{AttemptOutcome, FailureReason, JobState, attempt_history};
use muster_store::Store;
use serde_json::json;

use super::{
    T0, at, call_for, claim_one, no_outputs, policy, register_runner, runner_error,
    spec_with_policy, submit_one,
};

pub async fn attempts_that_end_without_completing_are_kept_and_a_completed_one_stays_in_the_job(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(store, spec_with_policy("tried", policy(4, 600, 30, 1)), T0).await?;
    ensure!(store.kept_attempts(job.id).await?.is_empty(), "none yet");
    let first_runner = register_runner(store, "tried").await?;
    let second_runner = register_runner(store, "tried").await?;

    // Attempt 1: the runner reports an error.
    let first = claim_one(store, first_runner, "tried", at(1_000)).await?;
    store
        .fail_job(
            call_for(&first, first_runner),
            runner_error("broke"),
            true,
            at(2_000),
        )
        .await?;
    // Attempt 2: its lease runs out and the reaper ends it.
    let pending = store.get_job(job.id).await?;
    let second = claim_one(store, second_runner, "tried", pending.lifecycle.run_after).await?;
    let lost_at = pending.lifecycle.run_after.plus_millis(31_000);
    store.reap(lost_at, 100).await?;
    // Attempt 3 completes.
    let pending = store.get_job(job.id).await?;
    ensure!(pending.state() == JobState::Pending, "{pending:?}");
    let third = claim_one(store, first_runner, "tried", pending.lifecycle.run_after).await?;
    let done_at = pending.lifecycle.run_after.plus_millis(500);
    let done = store
        .complete_job(
            call_for(&third, first_runner),
            json!({}),
            no_outputs(),
            done_at,
        )
        .await?;

    let kept = store.kept_attempts(job.id).await?;
    ensure!(
        kept.len() == 2,
        "two attempts ended without completing: {kept:?}"
    );
    ensure!(kept[0].attempt == 1 && kept[0].lease_epoch == first.lease.epoch);
    ensure!(kept[0].runner_id == Some(first_runner));
    ensure!(kept[0].claimed_at == Some(at(1_000)), "{:?}", kept[0]);
    ensure!(kept[0].ended_at == Some(at(2_000)), "{:?}", kept[0]);
    ensure!(kept[0].outcome == AttemptOutcome::Failed);
    let error = kept[0].error.clone().context("its error")?;
    ensure!(error.reason == FailureReason::RunnerError && error.message == "broke");
    ensure!(kept[1].attempt == 2 && kept[1].lease_epoch == second.lease.epoch);
    ensure!(kept[1].runner_id == Some(second_runner));
    ensure!(kept[1].ended_at == Some(lost_at), "{:?}", kept[1]);
    ensure!(
        kept[1].error.as_ref().map(|error| error.reason) == Some(FailureReason::LeaseExpired),
        "{:?}",
        kept[1]
    );
    let history = attempt_history(kept, &done.lifecycle);
    ensure!(history.len() == 3, "{history:?}");
    ensure!(history[2].outcome == AttemptOutcome::Completed);
    ensure!(history[2].runner_id == Some(first_runner));
    ensure!(history[2].ended_at == Some(done_at));

    // Reaping again (nothing due) and reading again keep nothing twice.
    store.reap(done_at.plus_millis(60_000), 100).await?;
    ensure!(store.kept_attempts(job.id).await?.len() == 2);
    Ok(())
}

pub async fn a_cancelled_attempt_a_released_one_and_a_retried_job_keep_their_attempts(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(
        store,
        spec_with_policy("stopped", policy(1, 600, 30, 1)),
        T0,
    )
    .await?;
    let runner = register_runner(store, "stopped").await?;
    let claimed = claim_one(store, runner, "stopped", at(1_000)).await?;
    // Cancelling waits for the runner: the attempt goes on until the runner confirms.
    store.cancel_job(job.id, 5_000, at(2_000)).await?;
    ensure!(
        store.kept_attempts(job.id).await?.is_empty(),
        "still running"
    );
    store
        .fail_job(
            call_for(&claimed, runner),
            muster_core::JobError {
                reason: FailureReason::Cancelled,
                message: "stopped by the user".into(),
            },
            false,
            at(3_000),
        )
        .await?;
    let kept = store.kept_attempts(job.id).await?;
    ensure!(kept.len() == 1, "{kept:?}");
    ensure!(kept[0].outcome == AttemptOutcome::Cancelled);
    ensure!(kept[0].ended_at == Some(at(3_000)));

    // Retried by a user: attempts start at 1 again, the epochs go on, both attempts 1 are kept.
    store.retry_job(job.id, at(4_000)).await?;
    let again = claim_one(store, runner, "stopped", at(5_000)).await?;
    ensure!(again.job.lifecycle.attempt == 1);
    ensure!(again.lease.epoch > claimed.lease.epoch);
    // Its runner deleted: the attempt ends as a lost lease.
    store.delete_runner(runner, at(6_000)).await?;
    let kept = store.kept_attempts(job.id).await?;
    ensure!(kept.len() == 2, "{kept:?}");
    ensure!(kept[0].lease_epoch == claimed.lease.epoch);
    ensure!(kept[1].lease_epoch == again.lease.epoch && kept[1].attempt == 1);
    ensure!(kept[1].outcome == AttemptOutcome::Failed);
    ensure!(kept[1].ended_at == Some(at(6_000)));
    let failed = store.get_job(job.id).await?;
    ensure!(failed.state() == JobState::Failed, "{failed:?}");
    ensure!(
        attempt_history(kept, &failed.lifecycle).len() == 2,
        "a failed job's last attempt is kept, not shown twice"
    );

    // Retention deletes the job and its history with it.
    let report = store.delete_finished_jobs(at(1_000_000), None, 100).await?;
    ensure!(report.deleted >= 1, "{report:?}");
    ensure!(store.kept_attempts(job.id).await?.is_empty());
    Ok(())
}
