//! Artifacts a job names: inputs stored with the job, outputs recorded by the lease holder
//! (alone or with the completion), cleared for a new attempt, and bounded per job; and the set
//! of artifacts jobs name, which the collection of unused artifacts keeps.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{Context, ensure};
use muster_core::{JobSpec, JobState, MAX_JOB_OUTPUTS};
use muster_store::{JobFilter, Store, StoreError};

use super::{
    T0, artifact, at, call_for, claim_one, list_all_jobs, outputs, policy, register_runner,
    runner_error, snapshot, spec, spec_with_policy, submit_one,
};

pub async fn inputs_are_stored_with_the_job_in_the_order_given(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    // Repeats are kept: a runner may take its inputs by position.
    let inputs = vec![artifact(3), artifact(1), artifact(3)];
    let with_inputs = JobSpec {
        inputs: inputs.clone(),
        ..spec("reads")
    };
    let job = submit_one(store, with_inputs, T0).await?;
    ensure!(job.inputs == inputs, "submit answers the inputs as given");
    ensure!(job.outputs.is_empty(), "a new job has no outputs");
    ensure!(store.get_job(job.id).await?.inputs == inputs);
    let plain = submit_one(store, spec("reads"), at(1)).await?;
    ensure!(plain.inputs.is_empty());
    let listed = list_all_jobs(store, JobFilter::default(), 10).await?;
    ensure!(
        listed
            .iter()
            .find(|listed| listed.id == job.id)
            .is_some_and(|listed| listed.inputs == inputs),
        "listing shows the inputs"
    );
    let runner = register_runner(store, "reader").await?;
    let first = claim_one(store, runner, "reads", at(2_000)).await?;
    ensure!(first.job.id == job.id, "the older job is claimed first");
    ensure!(
        first.job.inputs == inputs,
        "the runner learns the inputs from its claim"
    );
    Ok(())
}

pub async fn recorded_outputs_merge_by_name_and_start_the_job(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(store, spec("writes"), T0).await?;
    let runner = register_runner(store, "writer").await?;
    let claimed = claim_one(store, runner, "writes", at(1_000)).await?;
    let call = call_for(&claimed, runner);
    ensure!(claimed.job.state() == JobState::Claimed);

    let first = store
        .record_outputs(call, outputs(&[("model", 1)]), at(2_000))
        .await?;
    ensure!(first.outputs == outputs(&[("model", 1)]));
    ensure!(!first.ack.cancel);
    let stored = store.get_job(job.id).await?;
    ensure!(
        stored.state() == JobState::Running,
        "recording outputs is activity: the job is running, got {}",
        stored.state()
    );
    ensure!(stored.outputs == outputs(&[("model", 1)]));

    let second = store
        .record_outputs(call, outputs(&[("model", 2), ("log", 3)]), at(3_000))
        .await?;
    let expected = outputs(&[("model", 2), ("log", 3)]);
    ensure!(
        second.outputs == expected,
        "a name recorded again names the new artifact; others stay: {:?}",
        second.outputs
    );
    ensure!(store.get_job(job.id).await?.outputs == expected);

    store.cancel_job(job.id, 30_000, at(4_000)).await?;
    let while_cancelling = store
        .record_outputs(call, outputs(&[("partial", 4)]), at(5_000))
        .await?;
    ensure!(
        while_cancelling.ack.cancel,
        "the answer tells a runner whose job is being cancelled to stop"
    );
    ensure!(while_cancelling.outputs.len() == 3);
    Ok(())
}

pub async fn complete_records_outputs_in_the_same_commit(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(store, spec("finishes"), T0).await?;
    let runner = register_runner(store, "finisher").await?;
    let claimed = claim_one(store, runner, "finishes", at(1_000)).await?;
    let call = call_for(&claimed, runner);
    store
        .record_outputs(call, outputs(&[("a", 1), ("b", 2)]), at(2_000))
        .await?;
    let done = store
        .complete_job(
            call,
            serde_json::json!({"ok": true}),
            outputs(&[("b", 20), ("c", 3)]),
            at(3_000),
        )
        .await?;
    let expected = outputs(&[("a", 1), ("b", 20), ("c", 3)]);
    ensure!(done.state() == JobState::Completed);
    ensure!(done.outputs == expected, "got {:?}", done.outputs);
    ensure!(
        done == store.get_job(job.id).await?,
        "complete answers the job as stored"
    );
    // Completing without outputs keeps those recorded before.
    let other = submit_one(store, spec("finishes"), at(4_000)).await?;
    let claimed = claim_one(store, runner, "finishes", at(5_000)).await?;
    ensure!(claimed.job.id == other.id);
    let call = call_for(&claimed, runner);
    store
        .record_outputs(call, outputs(&[("kept", 9)]), at(6_000))
        .await?;
    let done = store
        .complete_job(
            call,
            serde_json::json!(null),
            super::no_outputs(),
            at(7_000),
        )
        .await?;
    ensure!(done.outputs == outputs(&[("kept", 9)]));
    Ok(())
}

pub async fn outputs_are_cleared_when_the_job_is_claimed_again(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let retried = JobSpec {
        inputs: vec![artifact(7)],
        ..spec_with_policy("flaky", policy(2, 600, 30, 0))
    };
    let job = submit_one(store, retried, T0).await?;
    let runner = register_runner(store, "flaky").await?;
    let first = claim_one(store, runner, "flaky", at(1_000)).await?;
    store
        .record_outputs(call_for(&first, runner), outputs(&[("half", 1)]), at(2_000))
        .await?;
    let failed = store
        .fail_job(
            call_for(&first, runner),
            runner_error("crashed"),
            true,
            at(3_000),
        )
        .await?;
    ensure!(failed.state() == JobState::Pending);
    ensure!(
        failed.outputs == outputs(&[("half", 1)]),
        "a failed attempt's outputs stay visible until the next attempt starts"
    );
    let second = claim_one(store, runner, "flaky", at(10_000)).await?;
    ensure!(second.job.id == job.id);
    ensure!(
        second.job.outputs.is_empty(),
        "a new attempt starts without outputs, got {:?}",
        second.job.outputs
    );
    let stored = store.get_job(job.id).await?;
    ensure!(stored.outputs.is_empty());
    ensure!(
        stored.inputs == vec![artifact(7)],
        "inputs stay for every attempt"
    );
    Ok(())
}

pub async fn a_job_holds_a_bounded_number_of_outputs_and_a_refusal_changes_nothing(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(store, spec("prolific"), T0).await?;
    let runner = register_runner(store, "prolific").await?;
    let claimed = claim_one(store, runner, "prolific", at(1_000)).await?;
    let call = call_for(&claimed, runner);
    let almost: Vec<(String, u64)> = (0..MAX_JOB_OUTPUTS - 1)
        .map(|index| (format!("out-{index:04}"), index as u64))
        .collect();
    let almost: Vec<(&str, u64)> = almost.iter().map(|(name, n)| (name.as_str(), *n)).collect();
    store
        .record_outputs(call, outputs(&almost), at(2_000))
        .await
        .context("one short of the limit is fine")?;
    let before = snapshot(store, job.id).await?;

    let refused = store
        .record_outputs(call, outputs(&[("new-1", 1), ("new-2", 2)]), at(3_000))
        .await;
    ensure!(
        matches!(refused, Err(StoreError::Rejected(_))),
        "past the limit: expected Rejected, got {refused:?}"
    );
    let refused = store
        .complete_job(
            call,
            serde_json::json!("done"),
            outputs(&[("new-1", 1), ("new-2", 2)]),
            at(3_000),
        )
        .await;
    ensure!(
        matches!(refused, Err(StoreError::Rejected(_))),
        "a completion past the limit: expected Rejected, got {refused:?}"
    );
    ensure!(
        snapshot(store, job.id).await? == before,
        "refused recordings and completions change nothing (the job is not completed)"
    );

    // Re-recording names the job has does not grow it; one more name reaches the limit.
    store
        .record_outputs(call, outputs(&[("out-0000", 99), ("last", 5)]), at(4_000))
        .await
        .context("exactly at the limit is fine")?;
    let full = store.get_job(job.id).await?;
    ensure!(full.outputs.len() == MAX_JOB_OUTPUTS);
    ensure!(full.outputs.get("out-0000") == Some(&artifact(99)));
    Ok(())
}

pub async fn named_artifacts_are_every_jobs_inputs_and_outputs_until_the_job_is_deleted(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    ensure!(
        store.named_artifacts().await?.is_empty(),
        "no jobs name nothing"
    );
    let pending = JobSpec {
        inputs: vec![artifact(1), artifact(3), artifact(1)],
        ..spec("waits")
    };
    submit_one(store, pending, T0).await?;
    submit_one(store, spec("plain"), at(1)).await?;
    let finished_spec = JobSpec {
        inputs: vec![artifact(6)],
        ..spec("finishes")
    };
    let finished = submit_one(store, finished_spec, at(2)).await?;
    let running = submit_one(store, spec("runs"), at(3)).await?;
    let runner = register_runner(store, "namer").await?;

    let claimed = claim_one(store, runner, "finishes", at(1_000)).await?;
    ensure!(claimed.job.id == finished.id);
    store
        .complete_job(
            call_for(&claimed, runner),
            serde_json::json!(null),
            outputs(&[("report", 5)]),
            at(2_000),
        )
        .await?;
    let claimed = claim_one(store, runner, "runs", at(3_000)).await?;
    ensure!(claimed.job.id == running.id);
    store
        .record_outputs(
            call_for(&claimed, runner),
            outputs(&[("partial", 4)]),
            at(4_000),
        )
        .await?;

    let named = store.named_artifacts().await?;
    let expected: HashSet<_> = [1, 3, 4, 5, 6].into_iter().map(artifact).collect();
    ensure!(
        named == expected,
        "inputs of a pending job, outputs of a running one, both of a finished one: got {named:?}"
    );

    let report = store.delete_finished_jobs(at(10_000), None, 100).await?;
    ensure!(
        report.deleted == 1,
        "the finished job is deleted: {report:?}"
    );
    let named = store.named_artifacts().await?;
    let expected: HashSet<_> = [1, 3, 4].into_iter().map(artifact).collect();
    ensure!(
        named == expected,
        "a deleted job names nothing any more: got {named:?}"
    );
    Ok(())
}
