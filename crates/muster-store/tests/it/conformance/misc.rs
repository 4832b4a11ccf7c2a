//! Submission (round trip and idempotency keys), runner activity on a job (progress, DAG,
//! everything an activity holds at once, completion), queue depths and the pending signal.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::{Context, ensure};
use muster_core::{ArtifactId, Capabilities, JobSpec, JobState, MAX_JOB_OUTPUTS, NewJob, Progress};
use muster_store::{Activity, JobFilter, Store};

use super::{
    T0, artifact, at, call_for, claim, claim_one, expect_not_found, expect_rejected, list_all_jobs,
    log_entry, new_job, outputs, policy, register_runner, runner_error, snapshot, spec,
    spec_with_policy, submit_many, submit_one,
};

pub async fn a_submitted_job_is_stored_exactly_as_given(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let full = JobSpec {
        kind: "/reconstruction/v1".into(),
        payload: serde_json::json!({"scene": "hall", "frames": [1, 2, 3], "nested": {"ok": true}}),
        priority: 7,
        requirements: Capabilities {
            labels: BTreeMap::from([("gpu".into(), "a100".into())]),
            tags: vec!["q8_0".into(), "fp16".into()],
            resources: BTreeMap::from([("vram_gb".into(), 24.5), ("cpus".into(), 4.0)]),
        },
        policy: policy(7, 900, 45, 3),
        run_after: Some(at(30_000)),
        idempotency_key: Some("scene-hall-v1".into()),
        inputs: vec![super::artifact(1), super::artifact(2)],
    };
    let submitted = store
        .submit_jobs(vec![new_job(full.clone(), at(1_000))])
        .await?;
    ensure!(submitted.len() == 1 && submitted[0].created);
    let record = submitted[0].job.clone();
    ensure!(
        record == store.get_job(record.id).await?,
        "submit answers the job as stored"
    );
    ensure!(record.kind == full.kind);
    ensure!(record.payload == full.payload);
    ensure!(record.priority == 7);
    ensure!(record.requirements == full.requirements);
    ensure!(record.idempotency_key == full.idempotency_key);
    ensure!(record.created_at == at(1_000));
    ensure!(record.state() == JobState::Pending);
    ensure!(record.lifecycle.policy == full.policy);
    ensure!(record.lifecycle.run_after == at(30_000));
    ensure!(record.lifecycle.attempt == 0 && record.lifecycle.lease_epoch == 0);
    ensure!(record.progress == Progress::default());
    ensure!(record.result.is_none() && record.lifecycle.error.is_none());
    ensure!(record.inputs == full.inputs);
    ensure!(record.outputs.is_empty());

    let plain = submit_one(store, spec("plain"), at(2_000)).await?;
    ensure!(
        plain.lifecycle.run_after == at(2_000),
        "without run_after a job is due when created"
    );
    Ok(())
}

pub async fn a_submitted_batch_is_stored_all_or_nothing(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    ensure!(
        store.submit_jobs(Vec::new()).await?.is_empty(),
        "an empty batch answers nothing"
    );
    let existing = submit_one(store, spec("atomic"), T0).await?;
    let fresh = new_job(spec("atomic"), at(1_000));
    // Reusing an id is the simplest way to make one job of a batch impossible to store.
    let clash = NewJob {
        id: existing.id,
        ..new_job(spec("atomic"), at(1_000))
    };
    let outcome = store.submit_jobs(vec![fresh.clone(), clash]).await;
    ensure!(
        outcome.is_err(),
        "a batch with an unstorable job is refused: {outcome:?}"
    );
    expect_not_found(
        store.get_job(fresh.id).await,
        "the good job of a refused batch",
    )?;
    let stored = list_all_jobs(store, JobFilter::default(), 100).await?;
    ensure!(
        stored.iter().map(|job| job.id).collect::<Vec<_>>() == vec![existing.id],
        "only the earlier job exists"
    );
    ensure!(
        store.get_job(existing.id).await? == existing,
        "the earlier job is untouched"
    );
    Ok(())
}

pub async fn submitting_an_idempotency_key_again_returns_the_first_job(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let keyed = |key: &str, payload: i64| JobSpec {
        idempotency_key: Some(key.to_string()),
        payload: serde_json::json!({ "version": payload }),
        ..spec("keyed")
    };
    let first = store
        .submit_jobs(vec![new_job(keyed("order-1", 1), at(1_000))])
        .await?;
    ensure!(first.len() == 1 && first[0].created);
    let original = first[0].job.clone();

    let second = store
        .submit_jobs(vec![new_job(keyed("order-1", 2), at(2_000))])
        .await?;
    ensure!(second.len() == 1);
    ensure!(!second[0].created, "the key was taken");
    ensure!(
        second[0].job.id == original.id,
        "the same job id comes back"
    );
    ensure!(
        second[0].job.payload == serde_json::json!({"version": 1}),
        "the first job is kept, not overwritten"
    );

    // Within one call: a new key, the old key, and the new key again.
    let mixed = store
        .submit_jobs(vec![
            new_job(keyed("order-2", 1), at(3_000)),
            new_job(keyed("order-1", 3), at(3_000)),
            new_job(keyed("order-2", 2), at(3_000)),
            new_job(spec("keyed"), at(3_000)),
        ])
        .await?;
    let created: Vec<bool> = mixed.iter().map(|answer| answer.created).collect();
    ensure!(
        created == vec![true, false, false, true],
        "created flags {created:?}"
    );
    ensure!(mixed[1].job.id == original.id);
    ensure!(
        mixed[2].job.id == mixed[0].job.id,
        "a key repeated in one call is one job"
    );

    let stored = list_all_jobs(store, JobFilter::default(), 100).await?;
    ensure!(
        stored.len() == 3,
        "three distinct jobs stored, got {}",
        stored.len()
    );

    // A key stays taken after its job finished.
    let runner = register_runner(store, "keyed").await?;
    let claimed = claim(store, runner, &["keyed"], 10, at(4_000)).await?;
    for job in &claimed {
        store
            .complete_job(
                call_for(job, runner),
                serde_json::json!(null),
                super::no_outputs(),
                at(5_000),
            )
            .await?;
    }
    let later = store
        .submit_jobs(vec![new_job(keyed("order-1", 4), at(6_000))])
        .await?;
    ensure!(!later[0].created && later[0].job.id == original.id);
    ensure!(
        later[0].job.state() == JobState::Completed,
        "answered as it is now"
    );
    Ok(())
}

pub async fn progress_and_heartbeats_start_the_job_and_record_progress(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(
        store,
        spec_with_policy("progressing", policy(3, 600, 30, 1)),
        T0,
    )
    .await?;
    let runner = register_runner(store, "reporter").await?;
    let claimed = claim_one(store, runner, "progressing", at(1_000)).await?;
    let call = call_for(&claimed, runner);
    ensure!(store.get_job(job.id).await?.state() == JobState::Claimed);

    let ack = store
        .report_progress(
            call,
            Progress {
                percent: 25.0,
                message: Some("a quarter".into()),
            },
            at(2_000),
        )
        .await?;
    ensure!(!ack.cancel);
    ensure!(
        ack.lease.map(|lease| lease.epoch) == Some(claimed.lease.epoch),
        "answers carry the lease: {ack:?}"
    );
    let stored = store.get_job(job.id).await?;
    ensure!(
        stored.state() == JobState::Running,
        "the first sign of life starts the job"
    );
    ensure!(stored.lifecycle.started_at == Some(at(2_000)));
    ensure!(
        stored.lifecycle.lease_expires_at == Some(claimed.lease.expires_at),
        "progress alone does not renew the lease"
    );
    ensure!(
        stored.progress
            == Progress {
                percent: 25.0,
                message: Some("a quarter".into()),
            }
    );

    let ack = store
        .job_heartbeat(
            call,
            Some(Progress {
                percent: 80.0,
                message: None,
            }),
            Vec::new(),
            at(10_000),
        )
        .await?;
    ensure!(ack.lease.map(|lease| lease.expires_at) == Some(at(40_000)));
    let stored = store.get_job(job.id).await?;
    ensure!(stored.progress.percent == 80.0);
    ensure!(
        stored.lifecycle.started_at == Some(at(2_000)),
        "started once"
    );
    ensure!(stored.lifecycle.lease_expires_at == Some(at(40_000)));
    Ok(())
}

pub async fn complete_stores_the_result_once(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(store, spec_with_policy("result", policy(3, 600, 30, 1)), T0).await?;
    let runner = register_runner(store, "resulting").await?;
    let claimed = claim_one(store, runner, "result", at(1_000)).await?;
    let result = serde_json::json!({"artifacts": ["sha256:ab"], "score": 0.93});
    let done = store
        .complete_job(
            call_for(&claimed, runner),
            result.clone(),
            super::no_outputs(),
            at(2_000),
        )
        .await?;
    ensure!(
        done == store.get_job(job.id).await?,
        "complete answers the stored job"
    );
    ensure!(done.state() == JobState::Completed);
    ensure!(done.result == Some(result.clone()));
    ensure!(done.lifecycle.finished_at == Some(at(2_000)));
    ensure!(
        done.lifecycle.started_at.is_some(),
        "a finished job has a start"
    );
    ensure!(done.runner_id() == Some(runner), "who did it is kept");
    ensure!(store.get_runner(runner).await?.running_jobs == 0);
    // The same runner completing again at the same epoch (its answer was lost, it retried) is
    // answered with the job as the first completion left it; nothing changes.
    let repeated = store
        .complete_job(
            call_for(&claimed, runner),
            serde_json::json!("again"),
            super::no_outputs(),
            at(3_000),
        )
        .await?;
    ensure!(
        repeated == done,
        "a repeated completion answers the stored job unchanged"
    );
    let batch = store
        .complete_jobs(
            runner,
            vec![muster_store::CompletionItem {
                job: job.id,
                epoch: Some(claimed.lease.epoch),
                result: serde_json::json!("batch again"),
                signature: None,
            }],
            at(3_500),
        )
        .await?;
    ensure!(
        matches!(batch.as_slice(), [Ok(())]),
        "a repeated completion in a batch is accepted: {batch:?}"
    );
    // Anyone else, or a stale epoch, is refused.
    let other = register_runner(store, "another").await?;
    super::expect_lease_lost(
        store
            .complete_job(
                super::JobCall {
                    runner: other,
                    job: job.id,
                    epoch: Some(claimed.lease.epoch),
                },
                serde_json::json!("stolen"),
                super::no_outputs(),
                at(4_000),
            )
            .await,
        "a completion by another runner",
    )?;
    super::expect_lease_lost(
        store
            .complete_job(
                super::JobCall {
                    runner,
                    job: job.id,
                    epoch: Some(claimed.lease.epoch + 1),
                },
                serde_json::json!("future"),
                super::no_outputs(),
                at(4_000),
            )
            .await,
        "a completion at another epoch",
    )?;
    let stored = store.get_job(job.id).await?;
    ensure!(stored.result == Some(result), "the first result stays");
    ensure!(stored == done, "nothing changed after the first completion");
    Ok(())
}

pub async fn read_dag_returns_the_last_synced_dag(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(store, spec_with_policy("dagged", policy(3, 600, 30, 1)), T0).await?;
    ensure!(
        store.read_dag(job.id).await?.is_none(),
        "no DAG before the runner sends one"
    );
    let runner = register_runner(store, "dagger").await?;
    let claimed = claim_one(store, runner, "dagged", at(1_000)).await?;
    let call = call_for(&claimed, runner);

    let first = serde_json::json!({
        "nodes": [{"id": "fetch", "label": "Fetch", "status": "running"}],
        "edges": []
    });
    let ack = store.sync_dag(call, first.clone(), at(2_000)).await?;
    ensure!(!ack.cancel);
    ensure!(store.read_dag(job.id).await? == Some(first));
    ensure!(
        store.get_job(job.id).await?.state() == JobState::Running,
        "a DAG sync is a sign of life"
    );

    let second = serde_json::json!({
        "nodes": [
            {"id": "fetch", "label": "Fetch", "status": "done"},
            {"id": "build", "label": "Build", "status": "running"}
        ],
        "edges": [{"from": "fetch", "to": "build"}]
    });
    store.sync_dag(call, second.clone(), at(3_000)).await?;
    ensure!(
        store.read_dag(job.id).await? == Some(second.clone()),
        "replaced, not merged"
    );

    store
        .complete_job(
            call,
            serde_json::json!(null),
            super::no_outputs(),
            at(4_000),
        )
        .await?;
    ensure!(
        store.read_dag(job.id).await? == Some(second),
        "kept after the job ends"
    );
    Ok(())
}

pub async fn queue_depths_count_jobs_by_kind_and_state(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    ensure!(
        store
            .queue_depths()
            .await?
            .iter()
            .all(|depth| depth.count == 0),
        "an empty store has no depth"
    );
    submit_many(store, "depth-a", 5, T0).await?;
    submit_many(store, "depth-b", 3, T0).await?;
    // Pending jobs only some runners can take, and one waiting to be due.
    for _ in 0..2 {
        submit_one(
            store,
            JobSpec {
                requirements: Capabilities {
                    labels: BTreeMap::from([("gpu".into(), "yes".into())]),
                    ..Capabilities::default()
                },
                ..spec("depth-a")
            },
            T0,
        )
        .await?;
    }
    submit_one(
        store,
        JobSpec {
            run_after: Some(at(3_600_000)),
            ..spec("depth-b")
        },
        T0,
    )
    .await?;
    let retried = submit_one(
        store,
        spec_with_policy("depth-retried", policy(3, 600, 30, 0)),
        T0,
    )
    .await?;
    let runner = register_runner(store, "depth").await?;

    // depth-a: one completed, one running, one claimed.
    let claimed_a = claim(store, runner, &["depth-a"], 3, at(1_000)).await?;
    store
        .complete_job(
            call_for(&claimed_a[0], runner),
            serde_json::json!(1),
            super::no_outputs(),
            at(2_000),
        )
        .await?;
    store
        .report_progress(
            call_for(&claimed_a[1], runner),
            Progress {
                percent: 50.0,
                message: None,
            },
            at(2_000),
        )
        .await?;
    // depth-b: one failed, one cancelling, one cancelled.
    let claimed_b = claim(store, runner, &["depth-b"], 2, at(1_000)).await?;
    store
        .fail_job(
            call_for(&claimed_b[0], runner),
            runner_error("x"),
            false,
            at(2_000),
        )
        .await?;
    store
        .cancel_job(claimed_b[1].job.id, 30_000, at(2_000))
        .await?;
    let pending_b = list_all_jobs(store, JobFilter::default(), 100)
        .await?
        .into_iter()
        .find(|job| job.kind == "depth-b" && job.state() == JobState::Pending)
        .ok_or_else(|| anyhow::anyhow!("a pending depth-b job"))?;
    store.cancel_job(pending_b.id, 30_000, at(2_000)).await?;
    // Claimed, failed and claimed again: counted once, as claimed.
    let first = claim_one(store, runner, "depth-retried", at(1_000)).await?;
    ensure!(first.job.id == retried.id);
    store
        .fail_job(
            call_for(&first, runner),
            runner_error("again"),
            true,
            at(1_500),
        )
        .await?;
    let second = claim_one(store, runner, "depth-retried", at(10_000)).await?;
    ensure!(second.job.id == retried.id);

    let collect = |listed: Vec<muster_store::QueueDepth>| -> anyhow::Result<HashMap<(String, JobState), u64>> {
        let mut depths = HashMap::new();
        for depth in listed {
            if depth.count > 0 {
                ensure!(depth.organization == "default", "every job is default's: {depth:?}");
                let previous = depths.insert((depth.kind.clone(), depth.state), depth.count);
                ensure!(previous.is_none(), "one row per organization, kind and state: {depth:?}");
            }
        }
        Ok(depths)
    };
    let expected = |pairs: &[(&str, JobState, u64)]| -> HashMap<(String, JobState), u64> {
        pairs
            .iter()
            .map(|(kind, state, count)| ((kind.to_string(), *state), *count))
            .collect()
    };
    let active = collect(store.active_job_counts().await?)?;
    let expected_active = expected(&[
        ("depth-a", JobState::Pending, 4),
        ("depth-a", JobState::Claimed, 1),
        ("depth-a", JobState::Running, 1),
        ("depth-b", JobState::Pending, 1),
        ("depth-b", JobState::Cancelling, 1),
        ("depth-retried", JobState::Claimed, 1),
    ]);
    ensure!(active == expected_active, "active counts {active:?}");
    let finished = collect(store.finished_job_counts().await?)?;
    let expected_finished = expected(&[
        ("depth-a", JobState::Completed, 1),
        ("depth-b", JobState::Failed, 1),
        ("depth-b", JobState::Cancelled, 1),
    ]);
    ensure!(
        finished == expected_finished,
        "finished counts {finished:?}"
    );
    let all = collect(store.queue_depths().await?)?;
    let mut expected_all = expected_active;
    expected_all.extend(expected_finished);
    ensure!(all == expected_all, "depths {all:?}");
    Ok(())
}

pub async fn the_pending_signal_moves_whenever_jobs_may_have_become_claimable(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let mut signal = store.pending_signal();
    let mut last = *signal.borrow_and_update();
    let mut expect_moved = |what: &str| -> anyhow::Result<()> {
        // The value is read only after the call answered, so no waiting is needed.
        ensure!(signal.has_changed()?, "{what}: the signal must move");
        let now = *signal.borrow_and_update();
        ensure!(
            now != last,
            "{what}: the value must change ({last} -> {now})"
        );
        last = now;
        Ok(())
    };

    let job = submit_one(store, spec_with_policy("signal", policy(3, 600, 30, 0)), T0).await?;
    expect_moved("submit")?;

    let runner = register_runner(store, "signal").await?;
    let claimed = claim_one(store, runner, "signal", at(1_000)).await?;
    store
        .fail_job(
            call_for(&claimed, runner),
            runner_error("again"),
            true,
            at(2_000),
        )
        .await?;
    expect_moved("a retryable failure")?;

    let claimed = claim_one(store, runner, "signal", at(3_000)).await?;
    store.reap(claimed.lease.expires_at, 10).await?;
    expect_moved("a lease expiry")?;

    let claimed = claim_one(store, runner, "signal", at(60_000)).await?;
    store
        .fail_job(
            call_for(&claimed, runner),
            runner_error("final"),
            false,
            at(61_000),
        )
        .await?;
    store.retry_job(job.id, at(62_000)).await?;
    expect_moved("a user retry")?;
    Ok(())
}

pub async fn ping_answers(store: Arc<dyn Store>) -> anyhow::Result<()> {
    store.ping().await?;
    Ok(())
}

pub async fn an_activity_records_all_it_holds_in_one_commit_or_nothing(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(store, spec_with_policy("busy", policy(3, 600, 30, 1)), T0).await?;
    let runner = register_runner(store, "busy").await?;
    let claimed = claim_one(store, runner, "busy", at(1_000)).await?;
    let call = call_for(&claimed, runner);
    let progress = Progress {
        percent: 50.0,
        message: Some("halfway".into()),
    };
    let dag = serde_json::json!({"nodes": [{"id": "build"}], "edges": []});
    let everything = |outputs, log_entries| Activity {
        extend_lease: true,
        progress: Some(progress.clone()),
        log_entries,
        dag: Some(dag.clone()),
        outputs: Some(outputs),
    };

    // Refused for one thing it holds, it stores none of the others.
    let before = snapshot(store, job.id).await?;
    let too_many: BTreeMap<String, ArtifactId> = (0..=MAX_JOB_OUTPUTS as u64)
        .map(|n| (format!("out{n}"), artifact(n)))
        .collect();
    let refused = store
        .record_activity(
            call,
            everything(too_many, vec![log_entry(None, "refused")]),
            at(2_000),
        )
        .await;
    expect_rejected(refused, "an activity with too many outputs")?;
    ensure!(
        snapshot(store, job.id).await? == before,
        "a refused activity changes nothing"
    );
    let unstorable_seq = vec![
        log_entry(None, "fine"),
        log_entry(Some(u64::MAX), "too far"),
    ];
    let refused = store
        .record_activity(
            call,
            everything(outputs(&[("report", 1)]), unstorable_seq),
            at(2_000),
        )
        .await;
    expect_rejected(refused, "an activity with a log seq the store cannot hold")?;
    ensure!(
        snapshot(store, job.id).await? == before,
        "a refused activity changes nothing"
    );

    let recorded = store
        .record_activity(
            call,
            everything(
                outputs(&[("report", 1)]),
                vec![log_entry(None, "a"), log_entry(None, "b")],
            ),
            at(3_000),
        )
        .await?;
    ensure!(recorded.outputs == Some(outputs(&[("report", 1)])));
    ensure!(recorded.ack.next_seq == 2);
    let lease = recorded.ack.lease.context("the job is leased")?;
    ensure!(
        lease.expires_at == at(3_000 + 30_000),
        "the lease was extended: {lease:?}"
    );
    let stored = store.get_job(job.id).await?;
    ensure!(stored.state() == JobState::Running);
    ensure!(stored.lifecycle.started_at == Some(at(3_000)));
    ensure!(stored.progress == progress);
    ensure!(stored.outputs == outputs(&[("report", 1)]));
    ensure!(store.read_dag(job.id).await? == Some(dag));
    ensure!(store.read_logs(job.id, None, 10).await?.items.len() == 2);

    // An activity recording nothing else answers no outputs and keeps the lease as it is.
    let plain = store
        .record_activity(call, Activity::default(), at(4_000))
        .await?;
    ensure!(plain.outputs.is_none());
    ensure!(plain.ack.lease == Some(lease), "{:?}", plain.ack.lease);
    ensure!(plain.ack.next_seq == 2);
    Ok(())
}

fn outcome(minute: i64, outcome: &str, count: u64) -> muster_store::OutcomeCount {
    muster_store::OutcomeCount {
        minute,
        outcome: outcome.into(),
        count,
    }
}

pub async fn outcome_counts_add_up_by_minute_and_outcome_and_old_minutes_are_forgotten(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    ensure!(
        store.outcome_totals(0).await?.is_empty(),
        "nothing counted yet"
    );
    // Twice the same minute and outcome in one call: summed, not refused.
    store
        .add_outcome_counts(
            vec![
                outcome(100, "completed", 3),
                outcome(100, "completed", 2),
                outcome(101, "timed_out", 1),
                outcome(102, "completed", 0),
            ],
            0,
        )
        .await?;
    store
        .add_outcome_counts(
            vec![outcome(101, "completed", 4), outcome(101, "timed_out", 1)],
            0,
        )
        .await?;
    ensure!(
        store.outcome_totals(100).await?
            == vec![outcome(100, "completed", 9), outcome(100, "timed_out", 2)],
        "{:?}",
        store.outcome_totals(100).await?
    );
    ensure!(
        store.outcome_totals(101).await?
            == vec![outcome(101, "completed", 4), outcome(101, "timed_out", 2)],
        "from minute 101 on: {:?}",
        store.outcome_totals(101).await?
    );
    // Forgetting the minutes before 101 leaves minute 101 whole.
    store
        .add_outcome_counts(vec![outcome(103, "runner_error", 1)], 101)
        .await?;
    ensure!(
        store.outcome_totals(0).await?
            == vec![
                outcome(0, "completed", 4),
                outcome(0, "runner_error", 1),
                outcome(0, "timed_out", 2)
            ],
        "minute 100 forgotten: {:?}",
        store.outcome_totals(0).await?
    );

    // Coordinators adding to the same rows at once lose none of it and never deadlock.
    let adders: Vec<_> = (0..8)
        .map(|adder| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for _ in 0..10 {
                    let mut counts =
                        vec![outcome(200, "completed", 1), outcome(201, "cancelled", 1)];
                    if adder % 2 == 0 {
                        counts.reverse();
                    }
                    store.add_outcome_counts(counts, 101).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for adder in adders {
        adder.await??;
    }
    ensure!(
        store.outcome_totals(200).await?
            == vec![outcome(200, "cancelled", 80), outcome(200, "completed", 80)],
        "{:?}",
        store.outcome_totals(200).await?
    );
    Ok(())
}
