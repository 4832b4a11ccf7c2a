//! Retention: finished jobs are deleted, with their logs and DAGs, once they have been finished
//! for longer than `--retain-finished-jobs`; unfinished jobs and recent ones stay. Artifacts no
//! job names go once unused for `--retain-unused-artifacts`; named ones stay.

use std::time::Duration;

use muster_client::api::{Dag, FailJob, FailureReason, NewLogEntry, SubmitJob};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    api_error, claim_one, job, metric, request, sample, send, start_manual, start_manual_with,
    submit, submit_and_claim,
};

const DAY_S: i64 = 86_400;

#[tokio::test]
async fn finished_jobs_are_deleted_with_their_logs_and_dags_once_past_the_default_retention() {
    let (server, clock) = start_manual().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");

    let (completed, claimed) = submit_and_claim(&client, &runner, "done").await;
    let epoch = Some(claimed.lease.epoch);
    runner
        .append_log(
            completed.id,
            epoch,
            vec![NewLogEntry {
                message: "building".into(),
                ..Default::default()
            }],
        )
        .await
        .expect("log");
    runner
        .sync_dag(
            completed.id,
            epoch,
            &Dag {
                nodes: vec![json!({"id": "build"})],
                edges: vec![],
            },
        )
        .await
        .expect("dag");
    runner
        .complete_job(completed.id, epoch, json!({"ok": true}))
        .await
        .expect("complete");
    let (failed, claimed) = submit_and_claim(&client, &runner, "broken").await;
    runner
        .fail_job(
            failed.id,
            Some(claimed.lease.epoch),
            &FailJob {
                error: Some("boom".into()),
                reason: Some(FailureReason::RunnerError),
                retryable: Some(false),
            },
        )
        .await
        .expect("fail");
    let (running, _) = submit_and_claim(&client, &runner, "slow").await;
    let pending = submit(&client, job("nobody-runs-this")).await;

    clock.advance_s(29 * DAY_S);
    assert_eq!(
        server.prune().await,
        0,
        "29 days is within the 30-day default"
    );
    client.get_job(completed.id).await.expect("still there");

    clock.advance_s(2 * DAY_S);
    assert_eq!(
        server.prune().await,
        2,
        "the completed and the failed job are past their retention"
    );
    for gone in [completed.id, failed.id] {
        api_error(client.get_job(gone).await, 404, "not_found");
        api_error(client.job_logs(gone, None, None).await, 404, "not_found");
        api_error(client.job_dag(gone).await, 404, "not_found");
    }
    for kept in [running.id, pending.id] {
        client
            .get_job(kept)
            .await
            .expect("a job that has not finished is never deleted");
    }
    let listed: Vec<_> = crate::support::all_jobs(&client, Default::default())
        .await
        .into_iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.contains(&running.id) && listed.contains(&pending.id));

    let metrics = send(request(
        &server,
        Method::GET,
        "/metrics",
        Some(&server.admin_token),
    ))
    .await;
    assert_eq!(
        sample(&metrics.body, "muster_jobs_pruned_total"),
        Some(2.0),
        "{}",
        metrics.body
    );
    assert_eq!(server.prune().await, 0, "a second pass finds nothing left");
}

#[tokio::test]
async fn a_pruned_jobs_idempotency_key_submits_a_new_job() {
    let (server, clock) =
        start_manual_with(|raw| raw.retain_finished_jobs = Some("1h".into())).await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    let spec = SubmitJob {
        idempotency_key: Some("nightly-2026-11-22".into()),
        ..job("report")
    };
    let (first, created) = client.submit_job(&spec).await.expect("submit");
    assert!(created);
    let claimed = crate::support::claim_one(&runner, "report").await;
    runner
        .complete_job(claimed.id, Some(claimed.lease.epoch), Value::Null)
        .await
        .expect("complete");
    let (again, created) = client.submit_job(&spec).await.expect("submit again");
    assert!(
        !created,
        "within the retention the key answers the first job"
    );
    assert_eq!(again.id, first.id);

    clock.advance_s(3_601);
    assert_eq!(server.prune().await, 1);
    let (after, created) = client
        .submit_job(&spec)
        .await
        .expect("submit after pruning");
    assert!(created, "the key was freed with its job");
    assert_ne!(after.id, first.id);
}

#[tokio::test]
async fn forever_keeps_every_finished_job() {
    let (server, clock) =
        start_manual_with(|raw| raw.retain_finished_jobs = Some("forever".into())).await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    let (completed, claimed) = submit_and_claim(&client, &runner, "done").await;
    runner
        .complete_job(completed.id, Some(claimed.lease.epoch), Value::Null)
        .await
        .expect("complete");
    clock.advance_s(4_000 * DAY_S);
    assert_eq!(server.prune().await, 0);
    client.get_job(completed.id).await.expect("kept forever");
}

#[tokio::test]
async fn artifacts_no_job_names_are_deleted_and_those_a_job_names_stay() {
    let (server, clock) = start_manual().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    let upload = |bytes: &'static [u8]| {
        let client = client.clone();
        async move {
            client
                .upload_artifact_bytes(bytes)
                .await
                .expect("upload")
                .id
        }
    };
    let input_of_pending = upload(b"input of a pending job").await;
    let input_of_old = upload(b"input of a job retention deletes").await;
    let output_of_old = upload(b"its output").await;
    let never_named = upload(b"never named").await;

    let pending = submit(
        &client,
        SubmitJob {
            inputs: Some(vec![input_of_pending.clone()]),
            ..job("nobody-runs-this")
        },
    )
    .await;
    let old = submit(
        &client,
        SubmitJob {
            inputs: Some(vec![input_of_old.clone()]),
            ..job("old")
        },
    )
    .await;
    let claimed = claim_one(&runner, "old").await;
    assert_eq!(claimed.id, old.id);
    runner
        .complete_job_with_outputs(
            old.id,
            Some(claimed.lease.epoch),
            json!(null),
            [("report".to_string(), output_of_old.clone())].into(),
        )
        .await
        .expect("complete with an output");

    assert_eq!(
        server.collect_artifacts(Duration::from_secs(3600)).await,
        (0, 0),
        "everything was uploaded or named just now"
    );
    clock.advance_s(31 * DAY_S);
    assert!(server.prune().await >= 1, "the old jobs are deleted");

    // Every artifact counts as unused for long enough: only naming keeps one now.
    let (deleted, bytes) = server.collect_artifacts(Duration::ZERO).await;
    assert_eq!(
        deleted, 3,
        "the old job's input and output, and the unnamed one"
    );
    let expected_bytes = (b"input of a job retention deletes".len()
        + b"its output".len()
        + b"never named".len()) as u64;
    assert_eq!(bytes, expected_bytes);
    for gone in [&input_of_old, &output_of_old, &never_named] {
        api_error(client.download_artifact_bytes(gone).await, 404, "not_found");
    }
    assert_eq!(
        client
            .download_artifact_bytes(&input_of_pending)
            .await
            .expect("a pending job's input stays"),
        &b"input of a pending job"[..]
    );
    assert_eq!(
        client.get_job(pending.id).await.expect("job").inputs,
        vec![input_of_pending]
    );
    api_error(
        client
            .submit_job(&SubmitJob {
                inputs: Some(vec![never_named.clone()]),
                ..job("late")
            })
            .await,
        422,
        "unknown_artifact",
    );

    assert_eq!(
        metric(&server, "muster_artifacts_collected_total").await,
        Some(3.0)
    );
    assert_eq!(
        metric(&server, "muster_artifact_bytes_collected_total").await,
        Some(expected_bytes as f64)
    );
}
