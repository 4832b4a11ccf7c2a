//! Fencing: only the holder of a job's current lease may change it. A stale epoch, another
//! runner, or a lease that ran out gets 409 `lease_lost` and changes nothing; deadlines say why
//! the attempt ended (`lease_expired`, `timed_out`).

use muster_client::RunnerClient;
use muster_client::api::{
    ClaimedJob, Dag, FailJob, FailureReason, JobHeartbeat, JobState, NewLogEntry, SubmitJob,
};
use muster_client::{ClientError, MusterClient};
use muster_test_support::TestServer;
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use crate::support::{
    api_error, claim_one, job, metric, runner_raw, start, start_manual, submit, submit_and_claim,
};

/// Every job-scoped call of `runner` on `id` with `epoch`: each must be refused as
/// `lease_lost`, and the job, its log and its DAG must be as they were.
async fn assert_every_call_is_fenced(
    client: &MusterClient,
    runner: &RunnerClient,
    id: Uuid,
    epoch: Option<u64>,
) {
    // A stored artifact, so recording it as an output is refused for the lease alone.
    let artifact = client
        .upload_artifact_bytes(&b"ghost output"[..])
        .await
        .expect("upload an artifact");
    let before = client.get_job(id).await.expect("show");
    let logs_before = client.job_logs(id, None, None).await.expect("logs");
    let dag_before = client.job_dag(id).await.expect("dag");
    let outcomes: Vec<(&str, Result<(), ClientError>)> = vec![
        (
            "heartbeat",
            runner
                .job_heartbeat(
                    id,
                    epoch,
                    &JobHeartbeat {
                        progress: Some(json!(99)),
                        events: Some(vec![json!("ghost event")]),
                    },
                )
                .await
                .map(drop),
        ),
        (
            "progress",
            runner
                .report_progress(id, epoch, 42.0, Some("ghost".into()))
                .await
                .map(drop),
        ),
        (
            "log",
            runner
                .append_log(
                    id,
                    epoch,
                    vec![NewLogEntry {
                        message: "ghost".into(),
                        ..Default::default()
                    }],
                )
                .await
                .map(drop),
        ),
        (
            "dag",
            runner
                .sync_dag(
                    id,
                    epoch,
                    &Dag {
                        nodes: vec![json!({"id": "ghost"})],
                        edges: vec![],
                    },
                )
                .await
                .map(drop),
        ),
        (
            "fail",
            runner
                .fail_job(
                    id,
                    epoch,
                    &FailJob {
                        error: Some("ghost".into()),
                        reason: None,
                        retryable: Some(false),
                    },
                )
                .await
                .map(drop),
        ),
        (
            "complete",
            runner
                .complete_job(id, epoch, json!("ghost"))
                .await
                .map(drop),
        ),
        (
            "outputs",
            runner
                .record_output(id, epoch, "ghost", &artifact.id)
                .await
                .map(drop),
        ),
        (
            "complete with outputs",
            runner
                .complete_job_with_outputs(
                    id,
                    epoch,
                    json!("ghost"),
                    [("ghost".to_string(), artifact.id.clone())].into(),
                )
                .await
                .map(drop),
        ),
    ];
    for (call, outcome) in outcomes {
        let error = outcome.expect_err(call);
        assert!(error.is_lease_lost(), "{call}: {error}");
        assert_eq!(error.status(), Some(409), "{call}: {error}");
    }
    assert_eq!(
        client.get_job(id).await.expect("show"),
        before,
        "the job is unchanged"
    );
    assert_eq!(
        client.job_logs(id, None, None).await.expect("logs"),
        logs_before
    );
    assert_eq!(client.job_dag(id).await.expect("dag"), dag_before);
}

async fn running(client: &MusterClient, runner: &RunnerClient, kind: &str) -> ClaimedJob {
    let (_, claimed) = submit_and_claim(client, runner, kind).await;
    runner
        .job_heartbeat(
            claimed.id,
            Some(claimed.lease.epoch),
            &JobHeartbeat::default(),
        )
        .await
        .expect("start running");
    claimed
}

#[tokio::test]
async fn a_stale_epoch_from_the_holder_is_refused_and_changes_nothing() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    let claimed = running(&client, &runner, "exec").await;
    for wrong in [claimed.lease.epoch + 1, claimed.lease.epoch - 1, u64::MAX] {
        assert_every_call_is_fenced(&client, &runner, claimed.id, Some(wrong)).await;
    }
    // The right epoch still works afterwards.
    runner
        .complete_job(claimed.id, Some(claimed.lease.epoch), json!("mine"))
        .await
        .expect("the holder completes");
}

#[tokio::test]
async fn another_runner_is_refused_with_or_without_the_epoch() {
    let server = start().await;
    let client = server.client();
    let (_, holder) = server.runner("holder").await.expect("runner");
    let (_, intruder) = server.runner("intruder").await.expect("runner");
    let claimed = running(&client, &holder, "exec").await;
    assert_every_call_is_fenced(&client, &intruder, claimed.id, Some(claimed.lease.epoch)).await;
    assert_every_call_is_fenced(&client, &intruder, claimed.id, None).await;
    let outcomes = intruder
        .complete_jobs(&muster_client::api::CompleteJobs {
            items: vec![muster_client::api::CompletionItem {
                sig: None,
                id: claimed.id,
                epoch: Some(claimed.lease.epoch),
                result: None,
            }],
        })
        .await
        .expect("batch");
    assert_eq!(
        outcomes.items[0]
            .error
            .as_ref()
            .map(|error| error.code.as_str()),
        Some("lease_lost")
    );
    assert_eq!(
        client.get_job(claimed.id).await.expect("show").state,
        JobState::Running
    );
}

#[tokio::test]
async fn the_lease_lost_answer_has_the_contract_shape() {
    let server = start().await;
    let client = server.client();
    let (created, runner) = server.runner("r").await.expect("runner");
    let claimed = running(&client, &runner, "exec").await;
    let reply = runner_raw(
        &server,
        &created.token,
        Method::POST,
        &format!("/api/v1/runner/jobs/{}/complete", claimed.id),
        Some(&(claimed.lease.epoch + 7).to_string()),
        r#"{"result": 1}"#,
    )
    .await;
    reply.assert_error(409, "lease_lost", &["lease"]);
}

async fn expire(server: &TestServer, clock: &muster_test_support::ManualClock, seconds: i64) {
    clock.advance_s(seconds);
    server.reap().await;
}

#[tokio::test]
async fn after_the_lease_expires_the_old_holder_is_refused_and_the_job_says_lease_expired() {
    let (server, clock) = start_manual().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    let (_, other) = server.runner("other").await.expect("runner");
    submit(
        &client,
        SubmitJob {
            lease_ttl_s: Some(5),
            backoff_base_s: Some(0),
            ..job("exec")
        },
    )
    .await;
    let first = claim_one(&runner, "exec").await;
    runner
        .job_heartbeat(first.id, Some(first.lease.epoch), &JobHeartbeat::default())
        .await
        .expect("running");

    expire(&server, &clock, 6).await;
    let expired = client.get_job(first.id).await.expect("show");
    assert_eq!(expired.state, JobState::Pending, "retried: attempts remain");
    let error = expired.error.clone().expect("the expiry says why");
    assert_eq!(error.reason, FailureReason::LeaseExpired);
    assert!(error.message.contains("lease_ttl_s"), "{}", error.message);
    assert_eq!(expired.runner_id, None);
    assert_eq!(
        metric(
            &server,
            r#"muster_attempts_failed_total{reason="lease_expired"}"#
        )
        .await,
        Some(1.0)
    );

    let late = runner
        .complete_job(first.id, Some(first.lease.epoch), json!("late"))
        .await;
    api_error(late, 409, "lease_lost");
    let late = runner.complete_job(first.id, None, json!("late")).await;
    api_error(late, 409, "lease_lost");
    assert_eq!(
        client.get_job(first.id).await.expect("show"),
        expired,
        "nothing changed"
    );

    // A new lease for the same runner: the old epoch stays fenced off, the new one works.
    let second = claim_one(&runner, "exec").await;
    assert_eq!(second.id, first.id);
    assert_eq!(second.lease.epoch, first.lease.epoch + 1);
    assert_every_call_is_fenced(&client, &runner, second.id, Some(first.lease.epoch)).await;
    assert_every_call_is_fenced(&client, &other, second.id, Some(second.lease.epoch)).await;
    let done = runner
        .complete_job(second.id, Some(second.lease.epoch), json!("second try"))
        .await
        .expect("the current holder completes");
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.attempt, 2);
    assert_eq!(
        done.error, None,
        "a later success clears the earlier attempt's error"
    );
}

#[tokio::test]
async fn the_last_attempt_lost_to_expiry_fails_the_job() {
    let (server, clock) = start_manual().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    submit(
        &client,
        SubmitJob {
            lease_ttl_s: Some(5),
            max_attempts: Some(1),
            ..job("exec")
        },
    )
    .await;
    let claimed = claim_one(&runner, "exec").await;
    expire(&server, &clock, 5).await;
    let job = client.get_job(claimed.id).await.expect("show");
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(
        job.error.map(|error| error.reason),
        Some(FailureReason::LeaseExpired)
    );
    assert!(job.finished_at.is_some());
    let late = runner
        .fail_job(claimed.id, Some(claimed.lease.epoch), &FailJob::default())
        .await;
    api_error(late, 409, "lease_lost");
}

#[tokio::test]
async fn an_attempt_past_timeout_s_ends_timed_out_even_while_heartbeating() {
    let (server, clock) = start_manual().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    submit(
        &client,
        SubmitJob {
            timeout_s: Some(10),
            lease_ttl_s: Some(8),
            max_attempts: Some(1),
            ..job("exec")
        },
    )
    .await;
    let claimed = claim_one(&runner, "exec").await;
    let epoch = Some(claimed.lease.epoch);
    for _ in 0..2 {
        clock.advance_s(4);
        runner
            .job_heartbeat(claimed.id, epoch, &JobHeartbeat::default())
            .await
            .expect("the lease is kept alive");
        server.reap().await;
        assert_eq!(
            client.get_job(claimed.id).await.expect("show").state,
            JobState::Running
        );
    }
    clock.advance_s(3);
    server.reap().await;
    let job = client.get_job(claimed.id).await.expect("show");
    assert_eq!(job.state, JobState::Failed);
    let error = job.error.expect("the timeout says why");
    assert_eq!(error.reason, FailureReason::TimedOut);
    assert!(error.message.contains("timeout_s"), "{}", error.message);
    assert_eq!(
        metric(
            &server,
            r#"muster_attempts_failed_total{reason="timed_out"}"#
        )
        .await,
        Some(1.0)
    );
    let late = runner.complete_job(claimed.id, epoch, json!("late")).await;
    api_error(late, 409, "lease_lost");
}

#[tokio::test]
async fn a_batch_completion_after_expiry_is_refused_per_item() {
    let (server, clock) = start_manual().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    let short = submit(
        &client,
        SubmitJob {
            lease_ttl_s: Some(5),
            ..job("exec")
        },
    )
    .await;
    submit(
        &client,
        SubmitJob {
            lease_ttl_s: Some(60),
            ..job("exec")
        },
    )
    .await;
    let claimed = runner
        .claim_job(&muster_client::api::ClaimJobs {
            max_jobs: Some(2),
            ..crate::support::claim_of(&["exec"])
        })
        .await
        .expect("claim both");
    assert_eq!(claimed.len(), 2);
    expire(&server, &clock, 10).await;
    let outcomes = runner
        .complete_jobs(&muster_client::api::CompleteJobs {
            items: claimed
                .iter()
                .map(|job| muster_client::api::CompletionItem {
                    sig: None,
                    id: job.id,
                    epoch: Some(job.lease.epoch),
                    result: Some(json!("done")),
                })
                .collect(),
        })
        .await
        .expect("batch");
    for (job, outcome) in claimed.iter().zip(&outcomes.items) {
        assert_eq!(outcome.id, job.id);
        if job.id == short.id {
            assert_eq!(
                outcome.error.as_ref().map(|error| error.code.as_str()),
                Some("lease_lost")
            );
        } else {
            assert_eq!(outcome.ok, Some(true));
        }
    }
    let expired = client.get_job(short.id).await.expect("show");
    assert_eq!(expired.state, JobState::Pending);
    assert_eq!(expired.result, None);
}
