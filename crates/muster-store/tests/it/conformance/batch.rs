//! Batched completions: every item is fenced on its own, the answer has one outcome per item in
//! order, the valid items are committed and the refused ones leave their jobs untouched.

use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use muster_core::{JobId, JobState};
use muster_store::{CompletionItem, Store, StoreError};

use super::{T0, at, claim, claim_one, register_runner, snapshot, submit_many};

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
