//! Runners: registration keeps what it was given and never the token itself, deletion revokes
//! the token and fails the attempts the runner held, and a runner heartbeat answers which of the
//! jobs it believes it runs it must stop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::ensure;
use muster_core::{FailureReason, JobId, JobState, RunnerId};
use muster_store::{NewRunner, PageRequest, RunnerBeat, RunnerFilter, Store};

use super::{
    T0, at, call_for, claim, claim_one, error_reason, expect_every_job_call_refused,
    expect_not_found, policy, register_runner, runner_error, spec, spec_with_policy, submit_one,
    unique_token_hash,
};

pub async fn runners_are_created_read_listed_and_deleted(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let token_hash = unique_token_hash();
    let labels = BTreeMap::from([
        ("gpu".to_string(), "a100".to_string()),
        ("zone".to_string(), "eu-west".to_string()),
    ]);
    let new_runner = NewRunner {
        id: RunnerId::new(at(5_000), 0x1234),
        name: "gpu-box-1".to_string(),
        labels: labels.clone(),
        organization_id: Some("org-7".to_string()),
        bound_capabilities: Some(muster_core::Capabilities {
            tags: vec!["q8_0".to_string()],
            ..Default::default()
        }),
        token_hash,
        created_at: at(5_000),
    };
    let created = store.create_runner(new_runner.clone()).await?;
    ensure!(created.id == new_runner.id);
    ensure!(created.name == "gpu-box-1");
    ensure!(created.labels == labels);
    ensure!(created.organization_id.as_deref() == Some("org-7"));
    ensure!(created.created_at == at(5_000));
    ensure!(created.enrollment == muster_core::Enrollment::Enrolled);
    ensure!(created.key_fingerprint.is_none() && created.public_key.is_none());
    ensure!(
        created.token_expires_at.is_none(),
        "an operator's runner's token does not expire"
    );
    ensure!(created.bound_capabilities == new_runner.bound_capabilities);
    ensure!(created.bound_kinds.is_none());
    ensure!(created.running_jobs == 0);
    ensure!(!created.draining);
    ensure!(created.last_heartbeat_at.is_none() && created.last_seen_at.is_none());
    ensure!(created.kinds.is_empty());
    ensure!(
        store.get_runner(created.id).await? == created,
        "get answers what create did"
    );

    ensure!(
        store
            .runner_by_token_hash(token_hash)
            .await?
            .map(|credentials| credentials.runner)
            == Some(created.id)
    );
    ensure!(
        store
            .runner_by_token_hash(unique_token_hash())
            .await?
            .is_none(),
        "an unknown token finds nobody"
    );
    let listed = store
        .list_runners(
            RunnerFilter::default(),
            PageRequest {
                limit: 100,
                cursor: None,
            },
        )
        .await?;
    ensure!(listed.items == vec![created.clone()]);

    store.delete_runner(created.id, at(6_000)).await?;
    expect_not_found(
        store.get_runner(created.id).await,
        "get of a deleted runner",
    )?;
    ensure!(
        store.runner_by_token_hash(token_hash).await?.is_none(),
        "a deleted runner's token stops working"
    );
    let listed = store
        .list_runners(
            RunnerFilter::default(),
            PageRequest {
                limit: 100,
                cursor: None,
            },
        )
        .await?;
    ensure!(listed.items.is_empty(), "deleted runners are not listed");
    expect_not_found(
        store.delete_runner(created.id, at(7_000)).await,
        "deleting twice",
    )?;
    expect_not_found(
        store
            .runner_heartbeat(
                RunnerBeat {
                    runner: created.id,
                    draining: false,
                    jobs: Vec::new(),
                    hostname: None,
                    version: None,
                },
                at(7_000),
            )
            .await,
        "heartbeat of a deleted runner",
    )?;
    Ok(())
}

pub async fn deleting_a_runner_releases_the_jobs_it_holds(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let leaving = register_runner(store, "leaving").await?;
    let staying = register_runner(store, "staying").await?;
    let job_policy = policy(3, 600, 30, 1);
    let claimed_job = submit_one(store, spec_with_policy("held-claimed", job_policy), T0).await?;
    let running_job = submit_one(store, spec_with_policy("held-running", job_policy), T0).await?;
    let cancelling_job =
        submit_one(store, spec_with_policy("held-cancelling", job_policy), T0).await?;
    let done_job = submit_one(store, spec_with_policy("held-done", job_policy), T0).await?;
    let others_job = submit_one(store, spec_with_policy("held-other", job_policy), T0).await?;

    let claimed = claim_one(store, leaving, "held-claimed", at(1_000)).await?;
    let running = claim_one(store, leaving, "held-running", at(1_000)).await?;
    store
        .job_heartbeat(call_for(&running, leaving), None, Vec::new(), at(1_500))
        .await?;
    claim_one(store, leaving, "held-cancelling", at(1_000)).await?;
    store
        .cancel_job(cancelling_job.id, 60_000, at(1_500))
        .await?;
    let done = claim_one(store, leaving, "held-done", at(1_000)).await?;
    store
        .complete_job(
            call_for(&done, leaving),
            serde_json::json!("kept"),
            super::no_outputs(),
            at(1_500),
        )
        .await?;
    claim_one(store, staying, "held-other", at(1_000)).await?;
    ensure!(
        store.get_runner(leaving).await?.running_jobs == 3,
        "three leases held"
    );

    let completed_before = store.get_job(done_job.id).await?;
    let others_before = store.get_job(others_job.id).await?;
    let deleted_at = at(2_000);
    let mut released_ids = store.delete_runner(leaving, deleted_at).await?;
    released_ids.sort();
    let mut expected = vec![claimed_job.id, running_job.id, cancelling_job.id];
    expected.sort();
    ensure!(
        released_ids == expected,
        "the deletion names the jobs it released (not the finished one nor another runner's): {released_ids:?}"
    );

    for id in [claimed_job.id, running_job.id] {
        let released = store.get_job(id).await?;
        ensure!(
            released.state() == JobState::Pending,
            "{id} is back in the queue"
        );
        ensure!(error_reason(&released) == Some(FailureReason::LeaseExpired));
        ensure!(released.runner_id().is_none());
        ensure!(
            released.lifecycle.run_after > deleted_at,
            "after the usual backoff"
        );
    }
    let cancelled = store.get_job(cancelling_job.id).await?;
    ensure!(
        cancelled.state() == JobState::Cancelled,
        "a job being cancelled just ends"
    );
    ensure!(
        store.get_job(done_job.id).await? == completed_before,
        "finished jobs untouched"
    );
    ensure!(
        store.get_job(others_job.id).await? == others_before,
        "other runners' jobs untouched"
    );

    expect_every_job_call_refused(
        store,
        call_for(&claimed, leaving),
        at(2_500),
        "the deleted runner",
    )
    .await?;
    // The released jobs are anybody's once their backoff is over.
    let retaken = claim(
        store,
        staying,
        &["held-claimed", "held-running"],
        10,
        at(60_000),
    )
    .await?;
    let retaken_ids: BTreeSet<JobId> = retaken.iter().map(|job| job.job.id).collect();
    ensure!(retaken_ids == BTreeSet::from([claimed_job.id, running_job.id]));
    for job in &retaken {
        ensure!(job.lease.epoch == 2, "a second claim has a new epoch");
    }
    Ok(())
}

pub async fn runner_heartbeat_records_the_runner_and_names_the_jobs_to_stop(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let runner = register_runner(store, "beating").await?;
    let other = register_runner(store, "other").await?;
    let job_policy = policy(3, 600, 30, 1);
    for kind in [
        "hb-run",
        "hb-claimed",
        "hb-cancel",
        "hb-other",
        "hb-done",
        "hb-failed",
    ] {
        submit_one(store, spec_with_policy(kind, job_policy), T0).await?;
    }
    let running = claim_one(store, runner, "hb-run", at(1_000)).await?;
    store
        .job_heartbeat(call_for(&running, runner), None, Vec::new(), at(1_100))
        .await?;
    let claimed = claim_one(store, runner, "hb-claimed", at(1_000)).await?;
    let cancelling = claim_one(store, runner, "hb-cancel", at(1_000)).await?;
    store
        .cancel_job(cancelling.job.id, 60_000, at(1_200))
        .await?;
    let others = claim_one(store, other, "hb-other", at(1_000)).await?;
    let done = claim_one(store, runner, "hb-done", at(1_000)).await?;
    store
        .complete_job(
            call_for(&done, runner),
            serde_json::json!(1),
            super::no_outputs(),
            at(1_300),
        )
        .await?;
    let failed = claim_one(store, runner, "hb-failed", at(1_000)).await?;
    store
        .fail_job(
            call_for(&failed, runner),
            runner_error("x"),
            false,
            at(1_300),
        )
        .await?;
    let unknown = JobId::new(T0, 0xABCDEF);

    let stop = store
        .runner_heartbeat(
            RunnerBeat {
                runner,
                draining: true,
                jobs: vec![
                    running.job.id,
                    claimed.job.id,
                    cancelling.job.id,
                    others.job.id,
                    done.job.id,
                    failed.job.id,
                    unknown,
                ],
                hostname: Some("node-17".into()),
                version: Some("1.2.3".into()),
            },
            at(5_000),
        )
        .await?;
    let stop: BTreeSet<JobId> = stop.into_iter().collect();
    let expected = BTreeSet::from([
        cancelling.job.id,
        others.job.id,
        done.job.id,
        failed.job.id,
        unknown,
    ]);
    ensure!(
        stop == expected,
        "stop the cancelled, foreign, finished and unknown jobs and nothing it still holds"
    );

    let record = store.get_runner(runner).await?;
    ensure!(record.last_heartbeat_at == Some(at(5_000)));
    ensure!(record.last_seen_at == Some(at(5_000)));
    ensure!(record.draining, "the runner said it is draining");
    ensure!(record.hostname.as_deref() == Some("node-17"));
    ensure!(record.version.as_deref() == Some("1.2.3"));
    ensure!(record.running_jobs == 3, "running, claimed and cancelling");

    // Omitting hostname and version keeps the last ones; draining is whatever it says now.
    let nothing_to_stop = store
        .runner_heartbeat(
            RunnerBeat {
                runner,
                draining: false,
                jobs: vec![running.job.id, claimed.job.id],
                hostname: None,
                version: None,
            },
            at(6_000),
        )
        .await?;
    ensure!(nothing_to_stop.is_empty(), "{nothing_to_stop:?}");
    let record = store.get_runner(runner).await?;
    ensure!(record.hostname.as_deref() == Some("node-17"));
    ensure!(record.version.as_deref() == Some("1.2.3"));
    ensure!(!record.draining);
    ensure!(record.last_heartbeat_at == Some(at(6_000)));
    Ok(())
}

fn beat(runner: RunnerId, draining: bool) -> RunnerBeat {
    RunnerBeat {
        runner,
        draining,
        jobs: Vec::new(),
        hostname: None,
        version: None,
    }
}

pub async fn a_draining_runner_claims_nothing_until_it_is_active_again(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let draining = register_runner(store, "draining").await?;
    let other = register_runner(store, "other").await?;
    let job = submit_one(store, spec("drain-kind"), T0).await?;

    store
        .runner_heartbeat(beat(draining, true), at(100))
        .await?;
    let claimed = claim(store, draining, &["drain-kind"], 10, at(200)).await?;
    ensure!(
        claimed.is_empty(),
        "a draining runner claimed {} job(s)",
        claimed.len()
    );
    let pending = store.get_job(job.id).await?;
    ensure!(
        pending.state() == JobState::Pending,
        "the job must stay pending for others, is {}",
        pending.state()
    );

    store
        .runner_heartbeat(beat(draining, false), at(300))
        .await?;
    let claimed = claim_one(store, draining, "drain-kind", at(400)).await?;
    ensure!(claimed.job.id == job.id, "the active runner claims the job");

    // Draining is per runner: others keep claiming.
    let second = submit_one(store, spec("drain-kind"), at(500)).await?;
    store
        .runner_heartbeat(beat(draining, true), at(600))
        .await?;
    let by_other = claim_one(store, other, "drain-kind", at(700)).await?;
    ensure!(
        by_other.job.id == second.id,
        "another runner claims while one drains"
    );
    Ok(())
}
