//! Batched completions: every item is fenced on its own, the answer has one outcome per item in
//! order, the valid items are committed and the refused ones leave their jobs untouched. And
//! single completions sent at once (which a backend may write together): each is answered as if
//! it had run alone.

use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use muster_core::{JobId, JobState};
use muster_store::{CompletionItem, Store, StoreError};

use super::{
    T0, at, call_for, claim, claim_one, expect_lease_lost, expect_not_found, no_outputs,
    register_runner, snapshot, submit_many,
};

#[derive(Debug, PartialEq)]
enum Outcome {
    Ok,
    LeaseLost,
    NotFound,
}

pub async fn complete_jobs_answers_each_item_in_order_and_commits_only_the_valid_ones(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    submit_many(store, "batched", 4, T0).await?;
    submit_many(store, "batched-other", 1, T0).await?;
    let runner = register_runner(store, "batcher").await?;
    let other = register_runner(store, "bystander").await?;
    let mine = claim(store, runner, &["batched"], 4, at(1_000)).await?;
    ensure!(mine.len() == 4);
    let foreign = claim_one(store, other, "batched-other", at(1_000)).await?;

    let stale_before = snapshot(store, mine[1].job.id).await?;
    let foreign_before = snapshot(store, foreign.job.id).await?;
    let untouched_before = snapshot(store, mine[3].job.id).await?;
    let missing = JobId::new(T0, 0x0BAD);

    let item = |job: JobId, epoch: Option<u64>, tag: &str| CompletionItem {
        job,
        epoch,
        result: serde_json::json!({ "tag": tag }),
        signature: None,
    };
    let items = vec![
        item(
            mine[0].job.id,
            Some(mine[0].lease.epoch),
            "valid with epoch",
        ),
        item(mine[1].job.id, Some(mine[1].lease.epoch + 7), "stale epoch"),
        item(
            foreign.job.id,
            Some(foreign.lease.epoch),
            "not this runner's",
        ),
        item(mine[2].job.id, None, "valid without epoch"),
        item(missing, Some(1), "no such job"),
        // The same completion twice (a retried batch): accepted, the first result stays.
        item(mine[0].job.id, Some(mine[0].lease.epoch), "completed twice"),
    ];
    let answers = store
        .complete_jobs(runner, items, at(2_000))
        .await
        .context("a mixed batch is answered item by item, not refused whole")?;
    let outcomes: Vec<Outcome> = answers
        .into_iter()
        .map(|answer| match answer {
            Ok(()) => Ok(Outcome::Ok),
            Err(StoreError::LeaseLost(_)) => Ok(Outcome::LeaseLost),
            Err(StoreError::NotFound(_)) => Ok(Outcome::NotFound),
            Err(other) => bail!("unexpected item error {other:?}"),
        })
        .collect::<anyhow::Result<_>>()?;
    ensure!(
        outcomes
            == vec![
                Outcome::Ok,
                Outcome::LeaseLost,
                Outcome::LeaseLost,
                Outcome::Ok,
                Outcome::NotFound,
                Outcome::Ok,
            ],
        "outcomes in item order: {outcomes:?}"
    );

    for (job, tag) in [
        (mine[0].job.id, "valid with epoch"),
        (mine[2].job.id, "valid without epoch"),
    ] {
        let done = store.get_job(job).await?;
        ensure!(done.state() == JobState::Completed, "{tag}");
        ensure!(
            done.result == Some(serde_json::json!({ "tag": tag })),
            "{tag}: first result kept"
        );
        ensure!(done.lifecycle.finished_at == Some(at(2_000)));
    }
    ensure!(
        snapshot(store, mine[1].job.id).await? == stale_before,
        "stale item untouched"
    );
    ensure!(
        snapshot(store, foreign.job.id).await? == foreign_before,
        "foreign item untouched"
    );
    ensure!(
        snapshot(store, mine[3].job.id).await? == untouched_before,
        "unlisted job untouched"
    );
    Ok(())
}

pub async fn an_empty_completion_batch_answers_nothing(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let runner = register_runner(store, "idle-batcher").await?;
    let answers = store.complete_jobs(runner, Vec::new(), at(1_000)).await?;
    ensure!(answers.is_empty());
    Ok(())
}

pub async fn single_completions_arriving_together_are_each_answered_as_their_own(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    submit_many(store.as_ref(), "single", 12, T0).await?;
    let first = register_runner(store.as_ref(), "single-a").await?;
    let second = register_runner(store.as_ref(), "single-b").await?;
    let firsts = claim(store.as_ref(), first, &["single"], 8, at(1_000)).await?;
    let seconds = claim(store.as_ref(), second, &["single"], 4, at(1_000)).await?;
    ensure!(firsts.len() == 8 && seconds.len() == 4);
    let now = at(2_000);

    let complete = |call: muster_store::JobCall, result: serde_json::Value| {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.complete_job(call, result, no_outputs(), now).await })
    };
    // Every call at once: the first runner's eight (its first job twice, with different
    // results), the first runner naming a job the second holds, the second runner with a stale
    // epoch, a job that does not exist, and the second runner's other three.
    let mut valid = Vec::new();
    for (index, job) in firsts.iter().enumerate() {
        valid.push((
            job.job.id,
            complete(call_for(job, first), serde_json::json!({ "n": index })),
        ));
    }
    let repeated = complete(
        call_for(&firsts[0], first),
        serde_json::json!({ "n": "again" }),
    );
    let foreign = complete(
        muster_store::JobCall {
            runner: first,
            ..call_for(&seconds[0], second)
        },
        serde_json::json!("not mine"),
    );
    let stale_epoch = seconds[1].lease.epoch.saturating_sub(1);
    let stale = complete(
        muster_store::JobCall {
            epoch: Some(stale_epoch),
            ..call_for(&seconds[1], second)
        },
        serde_json::json!("stale"),
    );
    let missing = complete(
        muster_store::JobCall {
            job: JobId::new(T0, 0x51_6E_61_1E),
            ..call_for(&seconds[2], second)
        },
        serde_json::json!("nobody"),
    );
    for job in &seconds[2..] {
        valid.push((
            job.job.id,
            complete(call_for(job, second), serde_json::json!("b")),
        ));
    }

    let mut answered = Vec::new();
    for (id, task) in valid {
        let job = task.await.context("join a completion")??;
        ensure!(
            job.id == id && job.state() == JobState::Completed,
            "{job:?}"
        );
        answered.push(job);
    }
    let repeated = repeated.await.context("join the repeated completion")??;
    ensure!(
        repeated.state() == JobState::Completed && repeated.result == answered[0].result,
        "both completions of one job are answered with the result that was kept: {:?} and {:?}",
        repeated.result,
        answered[0].result
    );
    let stored = store.get_job(firsts[0].job.id).await?;
    ensure!(
        stored.result == repeated.result
            && [
                serde_json::json!({ "n": 0 }),
                serde_json::json!({ "n": "again" })
            ]
            .iter()
            .any(|result| stored.result.as_ref() == Some(result)),
        "one of the two results is stored: {:?}",
        stored.result
    );
    for (index, job) in answered.iter().enumerate().skip(1).take(7) {
        ensure!(
            job.result == Some(serde_json::json!({ "n": index })),
            "each completion keeps its own result: {:?}",
            job.result
        );
        ensure!(store.get_job(job.id).await?.result == job.result);
    }
    expect_lease_lost(
        foreign.await.context("join the foreign completion")?,
        "completing a job another runner holds",
    )?;
    expect_lease_lost(
        stale.await.context("join the stale completion")?,
        "completing with a stale epoch",
    )?;
    expect_not_found(
        missing.await.context("join the missing completion")?,
        "completing a job that does not exist",
    )?;
    for refused in &seconds[..2] {
        ensure!(
            store.get_job(refused.job.id).await?.state() == JobState::Claimed,
            "a refused completion leaves its job as it was"
        );
    }
    // The refused ones' holder completes them after all.
    for job in &seconds[..2] {
        store
            .complete_job(
                call_for(job, second),
                serde_json::json!("late"),
                no_outputs(),
                at(3_000),
            )
            .await
            .context("the holder completes its job")?;
    }
    Ok(())
}
