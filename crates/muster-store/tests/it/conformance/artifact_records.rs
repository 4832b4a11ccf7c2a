//! Artifact records: what uploads made the coordinator store, charged to the runner (or user)
//! that uploaded them, and the running totals the upload quotas read.

use std::sync::Arc;

use anyhow::{Context, ensure};
use muster_core::Timestamp;
use muster_store::{ArtifactRecord, ArtifactUploader, ArtifactUsage, Store};

use super::{T0, artifact, at, register_runner};

fn record(n: u64, size: u64, uploader: ArtifactUploader, created_at: Timestamp) -> ArtifactRecord {
    ArtifactRecord {
        id: artifact(n),
        size,
        uploader,
        created_at,
    }
}

fn usage(bytes: u64, count: u64) -> ArtifactUsage {
    ArtifactUsage { bytes, count }
}

pub async fn artifact_usage_counts_records_by_runner_and_in_total(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let empty = store.artifact_usage(None).await?;
    ensure!(
        empty.all == usage(0, 0) && empty.runner == usage(0, 0),
        "a new store has nothing charged: {empty:?}"
    );
    let first = register_runner(store, "first").await?;
    let second = register_runner(store, "second").await?;
    let idle = register_runner(store, "idle").await?;
    let records = [
        record(1, 1_000, ArtifactUploader::Runner(first), T0),
        record(2, 2_500, ArtifactUploader::Runner(first), at(1)),
        record(3, 700, ArtifactUploader::Runner(second), at(2)),
        record(4, 40, ArtifactUploader::User, at(3)),
    ];
    for record in records {
        store.record_artifact(record).await?;
    }
    let of_first = store.artifact_usage(Some(first)).await?;
    ensure!(
        of_first.runner == usage(3_500, 2),
        "the first runner is charged its two uploads: {of_first:?}"
    );
    ensure!(
        of_first.all == usage(4_240, 4),
        "the totals count every uploader, users included: {of_first:?}"
    );
    let of_second = store.artifact_usage(Some(second)).await?;
    ensure!(of_second.runner == usage(700, 1), "{of_second:?}");
    ensure!(of_second.all == of_first.all);
    let of_idle = store.artifact_usage(Some(idle)).await?;
    ensure!(of_idle.runner == usage(0, 0), "{of_idle:?}");
    let without_runner = store.artifact_usage(None).await?;
    ensure!(
        without_runner.runner == usage(0, 0) && without_runner.all == of_first.all,
        "{without_runner:?}"
    );
    let largest = store.largest_artifact_uploaders(10).await?;
    ensure!(
        largest == vec![(first, usage(3_500, 2)), (second, usage(700, 1))],
        "runners with artifacts, most bytes first, user uploads not among them: {largest:?}"
    );
    let top = store.largest_artifact_uploaders(1).await?;
    ensure!(top == vec![(first, usage(3_500, 2))], "{top:?}");
    Ok(())
}

pub async fn a_taken_artifact_record_is_no_longer_counted_and_can_be_put_back(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let runner = register_runner(store, "uploader").await?;
    let kept = record(10, 300, ArtifactUploader::Runner(runner), T0);
    let collected = record(11, 200, ArtifactUploader::Runner(runner), at(1));
    let by_user = record(12, 50, ArtifactUploader::User, at(2));
    for record in [kept, collected, by_user] {
        store.record_artifact(record).await?;
    }
    let taken = store
        .take_artifact_record(collected.id)
        .await?
        .context("the record is there to take")?;
    ensure!(
        taken == collected,
        "the record comes back as recorded: {taken:?}"
    );
    let after = store.artifact_usage(Some(runner)).await?;
    ensure!(after.runner == usage(300, 1), "{after:?}");
    ensure!(after.all == usage(350, 2), "{after:?}");
    ensure!(
        store.take_artifact_record(collected.id).await?.is_none(),
        "a record is taken once"
    );
    ensure!(
        store.take_artifact_record(artifact(999)).await?.is_none(),
        "an artifact never recorded has nothing to take"
    );
    // The collection kept the bytes after all: the record goes back, counted as before.
    store.record_artifact(taken).await?;
    let restored = store.artifact_usage(Some(runner)).await?;
    ensure!(
        restored.runner == usage(500, 2) && restored.all == usage(550, 3),
        "{restored:?}"
    );
    let taken_by_user = store
        .take_artifact_record(by_user.id)
        .await?
        .context("a user's record")?;
    ensure!(taken_by_user.uploader == ArtifactUploader::User);
    for record in [kept, collected] {
        store.take_artifact_record(record.id).await?;
    }
    let none_left = store.artifact_usage(Some(runner)).await?;
    ensure!(
        none_left.runner == usage(0, 0) && none_left.all == usage(0, 0),
        "{none_left:?}"
    );
    ensure!(
        store.largest_artifact_uploaders(10).await?.is_empty(),
        "a runner with nothing charged is not listed"
    );
    Ok(())
}

pub async fn recording_an_artifact_again_charges_only_the_new_record(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let first = register_runner(store, "first").await?;
    let second = register_runner(store, "second").await?;
    store
        .record_artifact(record(20, 4_000, ArtifactUploader::Runner(first), T0))
        .await?;
    // The bytes were collected and stored anew by another upload before the old record went.
    let anew = record(20, 4_000, ArtifactUploader::Runner(second), at(5_000));
    store.record_artifact(anew).await?;
    let of_first = store.artifact_usage(Some(first)).await?;
    ensure!(of_first.runner == usage(0, 0), "{of_first:?}");
    ensure!(
        of_first.all == usage(4_000, 1),
        "one artifact, counted once: {of_first:?}"
    );
    let of_second = store.artifact_usage(Some(second)).await?;
    ensure!(of_second.runner == usage(4_000, 1), "{of_second:?}");
    ensure!(
        store.take_artifact_record(anew.id).await? == Some(anew),
        "the record is the newest one"
    );
    Ok(())
}

pub async fn artifact_records_written_at_once_are_each_counted_once(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let first = register_runner(store.as_ref(), "first").await?;
    let second = register_runner(store.as_ref(), "second").await?;
    let mut tasks = Vec::new();
    for n in 0..60u64 {
        let store = Arc::clone(&store);
        let uploader = match n % 3 {
            0 => ArtifactUploader::Runner(first),
            1 => ArtifactUploader::Runner(second),
            _ => ArtifactUploader::User,
        };
        tasks.push(tokio::spawn(async move {
            store
                .record_artifact(record(100 + n, 10 + n, uploader, at(n as i64)))
                .await?;
            // Half of them are collected again at once, racing the others' records.
            if n % 2 == 0 {
                store.take_artifact_record(artifact(100 + n)).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await.context("join a writer")??;
    }
    let expected = |keep: &dyn Fn(u64) -> bool| {
        let kept: Vec<u64> = (0..60u64).filter(|n| n % 2 == 1 && keep(*n)).collect();
        usage(kept.iter().map(|n| 10 + n).sum(), kept.len() as u64)
    };
    let of_first = store.artifact_usage(Some(first)).await?;
    ensure!(of_first.runner == expected(&|n| n % 3 == 0), "{of_first:?}");
    ensure!(of_first.all == expected(&|_| true), "{of_first:?}");
    let of_second = store.artifact_usage(Some(second)).await?;
    ensure!(
        of_second.runner == expected(&|n| n % 3 == 1),
        "{of_second:?}"
    );
    Ok(())
}

pub async fn a_deleted_runners_artifacts_stay_counted_until_collected(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let runner = register_runner(store, "leaving").await?;
    let stored = record(30, 9_000, ArtifactUploader::Runner(runner), T0);
    store.record_artifact(stored).await?;
    store.delete_runner(runner, at(1_000)).await?;
    let after = store.artifact_usage(Some(runner)).await?;
    ensure!(
        after.all == usage(9_000, 1) && after.runner == usage(9_000, 1),
        "the bytes are still stored, so still counted: {after:?}"
    );
    ensure!(
        store.largest_artifact_uploaders(10).await? == vec![(runner, usage(9_000, 1))],
        "and still shown as that runner's"
    );
    store.take_artifact_record(stored.id).await?;
    let collected = store.artifact_usage(Some(runner)).await?;
    ensure!(
        collected.all == usage(0, 0) && collected.runner == usage(0, 0),
        "{collected:?}"
    );
    Ok(())
}

pub async fn artifacts_are_granted_to_organizations_and_readable_by_the_runners_that_need_them(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    use muster_core::JobSpec;
    let store = store.as_ref();
    let uploader = register_runner(store, "uploader").await?;
    let holder = register_runner(store, "holder").await?;
    let bystander = register_runner(store, "bystander").await?;
    for record in [
        record(11, 10, ArtifactUploader::Runner(uploader), T0),
        record(12, 10, ArtifactUploader::User, T0),
        record(13, 10, ArtifactUploader::User, T0),
    ] {
        store.record_artifact(record).await?;
    }
    // Grants: twice is once; an id with no stored record is left out.
    store
        .grant_artifacts(
            "alpha".into(),
            vec![artifact(12), artifact(12), artifact(99)],
        )
        .await?;
    store
        .grant_artifacts("alpha".into(), vec![artifact(12)])
        .await?;
    ensure!(store.artifact_granted("alpha".into(), artifact(12)).await?);
    ensure!(!store.artifact_granted("beta".into(), artifact(12)).await?);
    ensure!(!store.artifact_granted("alpha".into(), artifact(13)).await?);
    ensure!(
        !store.artifact_granted("alpha".into(), artifact(99)).await?,
        "nothing is granted of bytes not stored"
    );

    // A runner reads what it uploaded, and what the job it holds names; nothing else.
    ensure!(
        store
            .runner_may_read_artifact(uploader, artifact(11))
            .await?
    );
    ensure!(
        !store
            .runner_may_read_artifact(bystander, artifact(11))
            .await?
    );
    let job = super::submit_one(
        store,
        JobSpec {
            inputs: vec![artifact(12)],
            ..super::spec("reads-artifacts")
        },
        T0,
    )
    .await?;
    ensure!(
        !store.runner_may_read_artifact(holder, artifact(12)).await?,
        "not before it holds the job"
    );
    let claimed = super::claim_one(store, holder, "reads-artifacts", at(1_000)).await?;
    ensure!(claimed.job.id == job.id);
    ensure!(store.runner_may_read_artifact(holder, artifact(12)).await?);
    ensure!(
        !store
            .runner_may_read_artifact(bystander, artifact(12))
            .await?
    );
    ensure!(
        !store.runner_may_read_artifact(holder, artifact(13)).await?,
        "an artifact the job does not name"
    );
    let call = super::call_for(&claimed, holder);
    store
        .record_outputs(call, super::outputs(&[("result", 13)]), at(2_000))
        .await?;
    ensure!(
        store.runner_may_read_artifact(holder, artifact(13)).await?,
        "an output of the job it holds"
    );
    store
        .complete_job(call, serde_json::json!({}), Default::default(), at(3_000))
        .await
        .context("complete")?;
    ensure!(
        !store.runner_may_read_artifact(holder, artifact(12)).await?,
        "no longer once the lease is gone"
    );
    Ok(())
}
