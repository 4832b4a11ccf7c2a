//! `GET /api/v1/jobs/{id}/attempts`: every attempt of a job, oldest first, each with its runner,
//! lease epoch, times and how it ended; the failed ones kept when they ended, the running or
//! completing one read from the job.

use muster_client::api::{AttemptOutcome, FailJob, FailureReason, SubmitJob};
use reqwest::Method;
use serde_json::json;

use crate::support::{admin, claim_one, field_names, start, submit};

#[tokio::test]
async fn a_jobs_attempts_show_each_try_with_its_runner_and_how_it_ended() {
    let server = start().await;
    let client = server.client();
    let (first_runner, first) = server.runner("first").await.expect("a runner");
    let (second_runner, second) = server.runner("second").await.expect("a runner");
    let job = submit(
        &client,
        SubmitJob {
            kind: "tried".into(),
            max_attempts: Some(3),
            backoff_base_s: Some(0),
            ..Default::default()
        },
    )
    .await;
    let none = client.job_attempts(job.id).await.expect("attempts");
    assert!(none.items.is_empty(), "a pending job has none: {none:?}");

    let claimed = claim_one(&first, "tried").await;
    let running = client.job_attempts(job.id).await.expect("attempts");
    assert_eq!(running.items.len(), 1, "{running:?}");
    assert_eq!(running.items[0].outcome, AttemptOutcome::InProgress);
    assert_eq!(running.items[0].runner_id, Some(first_runner.runner.id));
    first
        .fail_job(
            claimed.id,
            Some(claimed.lease.epoch),
            &FailJob {
                error: Some("exit code 3".into()),
                ..Default::default()
            },
        )
        .await
        .expect("fail");
    let claimed_again = claim_one(&second, "tried").await;
    second
        .complete_job(
            claimed_again.id,
            Some(claimed_again.lease.epoch),
            json!({"ok": true}),
        )
        .await
        .expect("complete");

    let attempts = client.job_attempts(job.id).await.expect("attempts").items;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    let failed = &attempts[0];
    assert_eq!(failed.attempt, 1);
    assert_eq!(failed.lease_epoch, claimed.lease.epoch);
    assert_eq!(failed.runner_id, Some(first_runner.runner.id));
    assert_eq!(failed.outcome, AttemptOutcome::Failed);
    let error = failed.error.clone().expect("why it failed");
    assert_eq!(error.reason, FailureReason::RunnerError);
    assert_eq!(error.message, "exit code 3");
    assert!(failed.claimed_at.is_some() && failed.ended_at.is_some());
    assert!(failed.claimed_at <= failed.ended_at);
    let done = &attempts[1];
    assert_eq!(done.attempt, 2);
    assert_eq!(done.runner_id, Some(second_runner.runner.id));
    assert_eq!(done.outcome, AttemptOutcome::Completed);
    assert!(done.error.is_none() && done.ended_at.is_some());
    assert!(done.lease_epoch > failed.lease_epoch);

    // The answer is exactly the contract's shape.
    let raw = admin(
        &server,
        Method::GET,
        &format!("/api/v1/jobs/{}/attempts", job.id),
        None,
    )
    .await;
    assert_eq!(raw.status, 200);
    let first_item = &raw.json()["items"][0];
    let keys = field_names(first_item);
    assert_eq!(
        keys,
        vec![
            "attempt",
            "claimed_at",
            "ended_at",
            "error",
            "lease_epoch",
            "outcome",
            "runner_id",
            "started_at"
        ]
    );
    assert_eq!(first_item["outcome"], "failed");

    let unknown = admin(
        &server,
        Method::GET,
        "/api/v1/jobs/01900000-0000-7000-8000-000000000000/attempts",
        None,
    )
    .await;
    unknown.assert_error(404, "not_found", &["job"]);
}
