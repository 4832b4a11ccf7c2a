//! Deleting finished jobs past their retention: only finished ones, only those finished before
//! the cutoff, with their logs and DAGs, in bounded steps.

use std::sync::Arc;

use anyhow::{Context, ensure};
use muster_core::{JobId, JobSpec, JobState, Timestamp};
use muster_store::{PruneReport, Store};
use serde_json::json;

use super::{
    at, call_for, claim, claim_one, expect_not_found, log_entry, no_outputs, policy,
    register_runner, runner_error, spec, spec_with_policy, submit_one,
};

const HOUR_MS: i64 = 3_600_000;

/// Call `delete_finished_jobs` until the walk ends; answers the jobs deleted and the calls made.
async fn prune_all(
    store: &dyn Store,
    finished_before: Timestamp,
    limit: u32,
) -> anyhow::Result<(u64, usize)> {
    let mut deleted = 0;
    let mut calls = 0;
    let mut resume = None;
    loop {
        let PruneReport {
            deleted: this_call,
            resume: next,
        } = store
            .delete_finished_jobs(finished_before, resume, limit)
            .await
            .context("delete finished jobs")?;
        deleted += this_call;
        calls += 1;
        ensure!(calls < 1_000, "the walk does not end");
        match next {
            Some(next) => resume = Some(next),
            None => return Ok((deleted, calls)),
        }
    }
}

async fn exists(store: &dyn Store, id: JobId) -> anyhow::Result<bool> {
    match store.get_job(id).await {
        Ok(_) => Ok(true),
        Err(muster_store::StoreError::NotFound(_)) => Ok(false),
        Err(error) => Err(error).context("read a job"),
    }
}

pub async fn finished_jobs_past_the_cutoff_are_deleted_with_their_logs_and_dags(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let runner = register_runner(store, "pruned").await?;
    let keyed = JobSpec {
        idempotency_key: Some("nightly-2026-11-01".into()),
        ..spec("done")
    };
    // Finished before the cutoff (T0 + 1 h): completed with a log and a DAG, failed for good,
    // cancelled while pending.
    let completed = submit_one(store, keyed.clone(), at(0)).await?;
    let failed = submit_one(
        store,
        spec_with_policy("broken", policy(1, 600, 30, 1)),
        at(1),
    )
    .await?;
    let cancelled = submit_one(store, spec("unwanted"), at(2)).await?;
    // Kept: still pending, still running, and finished after the cutoff.
    let waiting = submit_one(store, spec("nobody-runs-this"), at(3)).await?;
    let running = submit_one(store, spec("long"), at(4)).await?;
    let finished_late = submit_one(store, spec("late"), at(5)).await?;

    let claimed = claim_one(store, runner, "done", at(10)).await?;
    let call = call_for(&claimed, runner);
    store
        .append_logs(call, vec![log_entry(Some(0), "step one")], at(11))
        .await?;
    store
        .sync_dag(call, json!({"steps": [{"id": "a"}]}), at(12))
        .await?;
    store
        .complete_job(call, json!({"ok": true}), no_outputs(), at(13))
        .await?;
    let claimed = claim_one(store, runner, "broken", at(20)).await?;
    store
        .fail_job(
            call_for(&claimed, runner),
            runner_error("boom"),
            true,
            at(21),
        )
        .await?;
    store.cancel_job(cancelled.id, 0, at(30)).await?;
    let long = claim_one(store, runner, "long", at(40)).await?;
    store
        .job_heartbeat(call_for(&long, runner), None, Vec::new(), at(41))
        .await?;
    let late = claim_one(store, runner, "late", at(50)).await?;
    store
        .complete_job(
            call_for(&late, runner),
            json!(null),
            no_outputs(),
            at(2 * HOUR_MS),
        )
        .await?;
    for (id, state) in [
        (completed.id, JobState::Completed),
        (failed.id, JobState::Failed),
        (cancelled.id, JobState::Cancelled),
    ] {
        ensure!(
            store.get_job(id).await?.state() == state,
            "job {id} is {state:?} before pruning"
        );
    }

    let cutoff = at(HOUR_MS);
    let (deleted, _) = prune_all(store, cutoff, 100).await?;
    ensure!(
        deleted == 3,
        "three jobs finished before the cutoff, {deleted} deleted"
    );
    for id in [completed.id, failed.id, cancelled.id] {
        expect_not_found(store.get_job(id).await, "a pruned job")?;
    }
    expect_not_found(
        store.read_logs(completed.id, None, 10).await,
        "a pruned job's log",
    )?;
    expect_not_found(store.read_dag(completed.id).await, "a pruned job's DAG")?;
    for id in [waiting.id, running.id, finished_late.id] {
        ensure!(exists(store, id).await?, "job {id} was kept");
    }
    ensure!(
        store.get_job(running.id).await?.state() == JobState::Running,
        "the running job is untouched"
    );

    // A second pass finds nothing more; the key of a pruned job can be used again.
    let (deleted, _) = prune_all(store, cutoff, 100).await?;
    ensure!(deleted == 0, "a second pass deleted {deleted}");
    let again = store
        .submit_jobs(vec![super::new_job(keyed, at(3 * HOUR_MS))])
        .await?;
    ensure!(
        again
            .first()
            .is_some_and(|submitted| submitted.created && submitted.job.id != completed.id),
        "the idempotency key of a pruned job makes a new job"
    );

    // The reaper still works on the running job after jobs around it were deleted.
    let report = store.reap(at(10 * HOUR_MS), 100).await?;
    ensure!(
        report.total() == 1,
        "the running job's lapsed lease is reaped once: {report:?}"
    );
    Ok(())
}

pub async fn pruning_walks_in_bounded_steps_and_keeps_jobs_retried_meanwhile(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let runner = register_runner(store, "stepper").await?;
    let mut finished = Vec::new();
    for index in 0..7 {
        let job = submit_one(store, spec("step"), at(index)).await?;
        finished.push(job.id);
        if index == 3 {
            // Old and never finished: the walk must go past it.
            submit_one(store, spec("stuck"), at(index)).await?;
        }
    }
    let retried = submit_one(
        store,
        spec_with_policy("flaky", policy(1, 600, 30, 1)),
        at(20),
    )
    .await?;
    // Created after the cutoff: the walk ends here.
    let after_cutoff = submit_one(store, spec("step"), at(2 * HOUR_MS)).await?;

    let claimed = claim(store, runner, &["step"], 7, at(100)).await?;
    ensure!(claimed.len() == 7, "claimed {} of 7", claimed.len());
    for job in &claimed {
        store
            .complete_job(call_for(job, runner), json!(null), no_outputs(), at(200))
            .await?;
    }
    let flaky = claim_one(store, runner, "flaky", at(300)).await?;
    store
        .fail_job(
            call_for(&flaky, runner),
            runner_error("flaky"),
            true,
            at(301),
        )
        .await?;
    store.retry_job(retried.id, at(302)).await?;

    let (deleted, calls) = prune_all(store, at(HOUR_MS), 2).await?;
    ensure!(deleted == 7, "seven finished jobs deleted, not {deleted}");
    ensure!(
        calls >= 5,
        "ten jobs walked two at a time take at least five calls, took {calls}"
    );
    for id in &finished {
        ensure!(!exists(store, *id).await?, "finished job {id} was deleted");
    }
    let retried_now = store.get_job(retried.id).await?;
    ensure!(
        retried_now.state() == JobState::Pending,
        "the retried job is pending and kept"
    );
    ensure!(
        exists(store, after_cutoff.id).await?,
        "a job created after the cutoff is kept"
    );
    Ok(())
}
