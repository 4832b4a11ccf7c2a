//! Failures and retries: a retryable failure with attempts left waits out its backoff in
//! `pending`; otherwise the job fails. A user retry is allowed only from `failed` or `cancelled`,
//! and the epoch keeps growing through all of it so older leases stay fenced off.

use std::sync::Arc;

use anyhow::ensure;
use muster_core::{FailureReason, JobState};
use muster_store::{JobCall, Store};

use super::{
    T0, at, call_for, claim, claim_one, error_reason, expect_invalid_state, expect_lease_lost,
    policy, register_runner, runner_error, spec_with_policy, submit_one,
};

pub async fn a_retryable_failure_waits_out_a_doubling_backoff_until_attempts_run_out(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(store, spec_with_policy("flaky", policy(3, 600, 30, 10)), T0).await?;
    let runner = register_runner(store, "flaky").await?;
    let mut now = at(1_000);
    let mut epochs = Vec::new();
    for (attempt, nominal_ms) in [(1u32, 10_000i64), (2, 20_000)] {
        let claimed = claim_one(store, runner, "flaky", now).await?;
        ensure!(claimed.job.lifecycle.attempt == attempt);
        epochs.push(claimed.lease.epoch);
        let failed_at = now.plus_millis(500);
        let record = store
            .fail_job(
                call_for(&claimed, runner),
                runner_error(&format!("attempt {attempt} broke")),
                true,
                failed_at,
            )
            .await?;
        ensure!(
            record.state() == JobState::Pending,
            "attempt {attempt} leaves attempts"
        );
        ensure!(
            record == store.get_job(job.id).await?,
            "fail_job answers the stored job"
        );
        let error = record
            .lifecycle
            .error
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the failure is recorded"))?;
        ensure!(error.reason == FailureReason::RunnerError);
        ensure!(error.message == format!("attempt {attempt} broke"));
        ensure!(record.runner_id().is_none());
        let delay = record.lifecycle.run_after.millis_since(failed_at);
        ensure!(
            (nominal_ms * 8 / 10 - 1..=nominal_ms * 12 / 10 + 1).contains(&delay),
            "attempt {attempt}: backoff {delay} ms, nominal {nominal_ms} ms ± 20 %"
        );
        ensure!(
            claim(
                store,
                runner,
                &["flaky"],
                1,
                record.lifecycle.run_after.plus_millis(-1)
            )
            .await?
            .is_empty(),
            "attempt {attempt}: not claimable during its backoff"
        );
        now = record.lifecycle.run_after;
    }
    let last = claim_one(store, runner, "flaky", now).await?;
    ensure!(last.job.lifecycle.attempt == 3);
    epochs.push(last.lease.epoch);
    let failed_at = now.plus_millis(500);
    let record = store
        .fail_job(
            call_for(&last, runner),
            runner_error("third"),
            true,
            failed_at,
        )
        .await?;
    ensure!(record.state() == JobState::Failed, "attempts exhausted");
    ensure!(record.lifecycle.finished_at == Some(failed_at));
    ensure!(
        epochs.windows(2).all(|pair| pair[0] < pair[1]),
        "epochs grow with every claim: {epochs:?}"
    );
    Ok(())
}

pub async fn a_failure_that_is_not_retryable_fails_the_job_at_once(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(store, spec_with_policy("fatal", policy(5, 600, 30, 1)), T0).await?;
    let runner = register_runner(store, "fatal").await?;
    let claimed = claim_one(store, runner, "fatal", at(1_000)).await?;
    let record = store
        .fail_job(
            call_for(&claimed, runner),
            runner_error("bad input"),
            false,
            at(2_000),
        )
        .await?;
    ensure!(record.state() == JobState::Failed);
    ensure!(record.lifecycle.error == Some(runner_error("bad input")));
    ensure!(record.lifecycle.finished_at == Some(at(2_000)));
    ensure!(
        record.lifecycle.attempt == 1,
        "four attempts were left unused"
    );
    ensure!(
        claim(store, runner, &["fatal"], 1, at(3_600_000))
            .await?
            .is_empty(),
        "never claimed again without a user retry"
    );
    ensure!(store.get_job(job.id).await?.state() == JobState::Failed);
    Ok(())
}

pub async fn retry_is_allowed_only_from_failed_or_cancelled(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let runner = register_runner(store, "retrier").await?;
    let retry_policy = policy(3, 600, 30, 1);

    let pending = submit_one(store, spec_with_policy("r-pending", retry_policy), T0).await?;
    let claimed_job = submit_one(store, spec_with_policy("r-claimed", retry_policy), T0).await?;
    let running_job = submit_one(store, spec_with_policy("r-running", retry_policy), T0).await?;
    let cancelling_job =
        submit_one(store, spec_with_policy("r-cancelling", retry_policy), T0).await?;
    let completed_job =
        submit_one(store, spec_with_policy("r-completed", retry_policy), T0).await?;

    claim_one(store, runner, "r-claimed", at(1_000)).await?;
    let running = claim_one(store, runner, "r-running", at(1_000)).await?;
    store
        .job_heartbeat(call_for(&running, runner), None, Vec::new(), at(1_500))
        .await?;
    claim_one(store, runner, "r-cancelling", at(1_000)).await?;
    store
        .cancel_job(cancelling_job.id, 60_000, at(1_500))
        .await?;
    let completed = claim_one(store, runner, "r-completed", at(1_000)).await?;
    store
        .complete_job(
            call_for(&completed, runner),
            serde_json::json!(1),
            super::no_outputs(),
            at(1_500),
        )
        .await?;

    for (job, state) in [
        (pending.id, JobState::Pending),
        (claimed_job.id, JobState::Claimed),
        (running_job.id, JobState::Running),
        (cancelling_job.id, JobState::Cancelling),
        (completed_job.id, JobState::Completed),
    ] {
        let before = store.get_job(job).await?;
        ensure!(
            before.state() == state,
            "setup: {} is {}",
            job,
            before.state()
        );
        expect_invalid_state(store.retry_job(job, at(2_000)).await, state, "retry")?;
        ensure!(
            store.get_job(job).await? == before,
            "a refused retry of {state} changed it"
        );
    }
    Ok(())
}

pub async fn retry_of_failed_and_cancelled_jobs_requeues_them_with_growing_epochs(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(
        store,
        spec_with_policy("revived", policy(1, 600, 30, 1)),
        T0,
    )
    .await?;
    let runner = register_runner(store, "reviver").await?;

    let first = claim_one(store, runner, "revived", at(1_000)).await?;
    store
        .fail_job(
            call_for(&first, runner),
            runner_error("once"),
            true,
            at(2_000),
        )
        .await?;
    ensure!(store.get_job(job.id).await?.state() == JobState::Failed);

    let retried = store.retry_job(job.id, at(3_000)).await?;
    ensure!(retried.state() == JobState::Pending);
    ensure!(
        retried.lifecycle.attempt == 0,
        "a fresh allowance of attempts"
    );
    ensure!(retried.lifecycle.run_after == at(3_000), "due at once");
    ensure!(retried.lifecycle.error.is_none());
    ensure!(
        retried.lifecycle.lease_epoch == first.lease.epoch,
        "the epoch never goes back"
    );
    ensure!(retried == store.get_job(job.id).await?);

    let second = claim_one(store, runner, "revived", at(3_000)).await?;
    ensure!(second.lease.epoch > first.lease.epoch);
    ensure!(second.job.lifecycle.attempt == 1);
    store.cancel_job(job.id, 10_000, at(3_500)).await?;
    store
        .fail_job(
            call_for(&second, runner),
            runner_error("stopped"),
            true,
            at(4_000),
        )
        .await?;
    ensure!(store.get_job(job.id).await?.state() == JobState::Cancelled);

    let again = store.retry_job(job.id, at(5_000)).await?;
    ensure!(
        again.state() == JobState::Pending,
        "cancelled jobs may be retried too"
    );
    let third = claim_one(store, runner, "revived", at(5_000)).await?;
    ensure!(third.lease.epoch > second.lease.epoch);

    for stale in [first.lease.epoch, second.lease.epoch] {
        let call = JobCall {
            epoch: Some(stale),
            ..call_for(&third, runner)
        };
        expect_lease_lost(
            store
                .complete_job(call, serde_json::json!(0), super::no_outputs(), at(6_000))
                .await,
            &format!("complete at the stale epoch {stale}"),
        )?;
    }
    let done = store
        .complete_job(
            call_for(&third, runner),
            serde_json::json!("ok"),
            super::no_outputs(),
            at(6_000),
        )
        .await?;
    ensure!(done.state() == JobState::Completed);
    ensure!(error_reason(&done).is_none());
    Ok(())
}
