//! Fencing: only the runner holding a job's current lease, at the current epoch when it says
//! one, may change the job. Everyone else is refused with `LeaseLost` and changes nothing.

use std::sync::Arc;

use anyhow::ensure;
use muster_core::{JobId, JobState, Progress, RunnerId};
use muster_store::{JobCall, Store};

use super::{
    T0, at, call_for, claim_one, expect_every_job_call_refused, expect_lease_lost,
    expect_not_found, log_entry, policy, register_runner, runner_error, spec_with_policy,
    submit_one,
};

pub async fn calls_by_another_runner_are_refused_and_change_nothing(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    submit_one(store, spec_with_policy("fenced", policy(3, 600, 30, 1)), T0).await?;
    let holder = register_runner(store, "holder").await?;
    let intruder = register_runner(store, "intruder").await?;
    let claimed = claim_one(store, holder, "fenced", at(1_000)).await?;
    let call = call_for(&claimed, holder);
    // Give the job some state worth protecting: running, progress, a log line, a DAG.
    store
        .job_heartbeat(
            call,
            Some(Progress {
                percent: 10.0,
                message: Some("warming up".into()),
            }),
            vec![log_entry(None, "started")],
            at(2_000),
        )
        .await?;
    store
        .sync_dag(
            call,
            serde_json::json!({"nodes": [{"id": "a"}], "edges": []}),
            at(2_500),
        )
        .await?;

    let epoch = Some(claimed.lease.epoch);
    for (who, epoch) in [
        ("another runner with the holder's epoch", epoch),
        ("another runner without an epoch", None),
    ] {
        let call = JobCall {
            runner: intruder,
            job: claimed.job.id,
            epoch,
        };
        expect_every_job_call_refused(store, call, at(3_000), who).await?;
    }
    // The holder is still fine afterwards.
    let done = store
        .complete_job(
            call,
            serde_json::json!({"ok": true}),
            super::no_outputs(),
            at(4_000),
        )
        .await?;
    ensure!(done.state() == JobState::Completed);
    Ok(())
}

pub async fn calls_with_a_stale_or_future_epoch_are_refused_and_change_nothing(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    // No backoff, so the same runner can take the job back at once.
    submit_one(store, spec_with_policy("epochs", policy(5, 600, 30, 0)), T0).await?;
    let runner = register_runner(store, "reclaimer").await?;
    let first = claim_one(store, runner, "epochs", at(1_000)).await?;
    store
        .fail_job(
            call_for(&first, runner),
            runner_error("first try"),
            true,
            at(2_000),
        )
        .await?;
    let second = claim_one(store, runner, "epochs", at(3_000)).await?;
    ensure!(second.job.id == first.job.id);
    ensure!(
        second.lease.epoch > first.lease.epoch,
        "a reclaim must raise the epoch: {} then {}",
        first.lease.epoch,
        second.lease.epoch
    );
    store
        .job_heartbeat(call_for(&second, runner), None, Vec::new(), at(3_500))
        .await?;

    let stale = JobCall {
        epoch: Some(first.lease.epoch),
        ..call_for(&second, runner)
    };
    expect_every_job_call_refused(store, stale, at(4_000), "the same runner at its old epoch")
        .await?;
    let future = JobCall {
        epoch: Some(second.lease.epoch + 1),
        ..call_for(&second, runner)
    };
    expect_every_job_call_refused(
        store,
        future,
        at(4_000),
        "the same runner at a future epoch",
    )
    .await?;

    let done = store
        .complete_job(
            call_for(&second, runner),
            serde_json::json!(1),
            super::no_outputs(),
            at(5_000),
        )
        .await?;
    ensure!(
        done.state() == JobState::Completed,
        "the current epoch still works"
    );
    Ok(())
}

pub async fn after_a_reclaim_by_another_runner_the_old_holder_is_refused(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    submit_one(
        store,
        spec_with_policy("reclaimed", policy(3, 600, 10, 0)),
        T0,
    )
    .await?;
    let old_holder = register_runner(store, "old-holder").await?;
    let new_holder = register_runner(store, "new-holder").await?;
    let first = claim_one(store, old_holder, "reclaimed", T0).await?;
    let report = store.reap(first.lease.expires_at, 100).await?;
    ensure!(report.lease_expired == 1, "{report:?}");
    let second = claim_one(store, new_holder, "reclaimed", first.lease.expires_at).await?;
    ensure!(second.lease.epoch > first.lease.epoch);

    for (who, epoch) in [
        ("the old holder at its epoch", Some(first.lease.epoch)),
        ("the old holder without an epoch", None),
        ("the old holder at the new epoch", Some(second.lease.epoch)),
    ] {
        let call = JobCall {
            runner: old_holder,
            job: first.job.id,
            epoch,
        };
        expect_every_job_call_refused(store, call, at(20_000), who).await?;
    }
    let done = store
        .complete_job(
            call_for(&second, new_holder),
            serde_json::json!({"by": "new"}),
            super::no_outputs(),
            at(21_000),
        )
        .await?;
    ensure!(done.result == Some(serde_json::json!({"by": "new"})));
    ensure!(done.runner_id() == Some(new_holder));
    Ok(())
}

pub async fn calls_on_unleased_jobs_are_refused(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let store = store.as_ref();
    let pending = submit_one(store, spec_with_policy("idle", policy(3, 600, 30, 1)), T0).await?;
    let runner = register_runner(store, "nobody-claimed").await?;
    for epoch in [None, Some(0), Some(1)] {
        let call = JobCall {
            runner,
            job: pending.id,
            epoch,
        };
        expect_every_job_call_refused(store, call, at(1_000), "a runner on a pending job").await?;
    }

    let claimed = claim_one(store, runner, "idle", at(2_000)).await?;
    let call = call_for(&claimed, runner);
    store
        .complete_job(
            call,
            serde_json::json!(null),
            super::no_outputs(),
            at(3_000),
        )
        .await?;
    expect_every_job_call_refused(store, call, at(4_000), "the holder after completing").await?;
    Ok(())
}

pub async fn calls_on_unknown_jobs_are_not_found(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let store = store.as_ref();
    let runner = register_runner(store, "lost").await?;
    let call = JobCall {
        runner,
        job: JobId::new(T0, 0xFEED),
        epoch: Some(1),
    };
    expect_not_found(store.get_job(call.job).await, "get_job")?;
    expect_not_found(
        store
            .complete_job(call, serde_json::json!(1), super::no_outputs(), at(1))
            .await,
        "complete_job",
    )?;
    expect_not_found(
        store.fail_job(call, runner_error("x"), true, at(1)).await,
        "fail_job",
    )?;
    expect_not_found(
        store.job_heartbeat(call, None, Vec::new(), at(1)).await,
        "job_heartbeat",
    )?;
    expect_not_found(
        store
            .record_outputs(call, super::outputs(&[("out", 1)]), at(1))
            .await,
        "record_outputs",
    )?;
    expect_not_found(store.read_logs(call.job, None, 10).await, "read_logs")?;
    expect_not_found(store.read_dag(call.job).await, "read_dag")?;
    expect_not_found(store.cancel_job(call.job, 1_000, at(1)).await, "cancel_job")?;
    expect_not_found(store.retry_job(call.job, at(1)).await, "retry_job")?;
    expect_not_found(
        store.get_runner(RunnerId::new(T0, 0xFEED)).await,
        "get_runner",
    )?;
    // A lost lease and an unknown job are different answers; make sure the first one exists too.
    let job = submit_one(store, spec_with_policy("known", policy(1, 60, 30, 0)), T0).await?;
    expect_lease_lost(
        store
            .complete_job(
                JobCall {
                    job: job.id,
                    ..call
                },
                serde_json::json!(1),
                super::no_outputs(),
                at(1),
            )
            .await,
        "complete of a known pending job",
    )?;
    Ok(())
}
