//! Two coordinators over one PostgreSQL database, over real HTTP: whichever coordinator a
//! request reaches, it sees the same jobs, runners and artifacts, and a runner long-polling one
//! coordinator is woken by a job submitted through the other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_client::RunnerClient;
use muster_client::api::{ClaimJobs, JobState, SubmitJob};
use muster_core::SystemClock;
use muster_server::RawServerConfig;
use muster_test_support::TestServer;
use serde_json::json;

/// Two coordinators on one fresh database.
async fn two_coordinators() -> (TestServer, TestServer) {
    two_coordinators_with(|_| {}).await
}

/// Two coordinators on one fresh database, with `adjust` applied to both configurations.
pub(crate) async fn two_coordinators_with(
    adjust: impl Fn(&mut RawServerConfig),
) -> (TestServer, TestServer) {
    let url = muster_test_support::temp_postgres_database()
        .await
        .expect("make a test database");
    let mut servers = Vec::new();
    for _ in 0..2 {
        let url = url.clone();
        let server = TestServer::start_with(Arc::new(SystemClock), |raw| {
            raw.database = Some(url);
            adjust(raw);
        })
        .await
        .expect("start a coordinator on PostgreSQL");
        servers.push(server);
    }
    let second = servers.pop().expect("two servers");
    let first = servers.pop().expect("two servers");
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_runners_and_artifacts_are_shared_by_coordinators_on_one_database() {
    let (first, second) = two_coordinators().await;
    // A runner registered on one coordinator authenticates on the other.
    let (created, _) = first.runner("shared").await.expect("register a runner");
    let runner_on_second =
        RunnerClient::new(&second.base_url, &created.token).expect("a runner client");

    let input = b"bytes uploaded through the first coordinator".to_vec();
    let artifact = first
        .client()
        .upload_artifact_bytes(input.clone())
        .await
        .expect("upload an artifact through the first coordinator");
    let submitted = second
        .client()
        .submit_job(&SubmitJob {
            kind: "shared-kind".into(),
            inputs: Some(vec![artifact.id.clone()]),
            ..Default::default()
        })
        .await
        .expect("submit through the second coordinator, naming the artifact")
        .0;

    let claimed = runner_on_second
        .claim_job(&ClaimJobs {
            kinds: vec!["shared-kind".into()],
            max_jobs: Some(1),
            ..Default::default()
        })
        .await
        .expect("claim through the second coordinator");
    assert_eq!(claimed.len(), 1, "the job is claimable: {claimed:?}");
    assert_eq!(claimed[0].id, submitted.id);
    let downloaded = runner_on_second
        .download_artifact_bytes(&artifact.id)
        .await
        .expect("download through the other coordinator");
    assert_eq!(downloaded.as_ref(), input.as_slice(), "the same bytes");

    runner_on_second
        .complete_job(
            submitted.id,
            Some(claimed[0].lease.epoch),
            json!({"ok": true}),
        )
        .await
        .expect("complete through the second coordinator");
    let seen_by_first = first
        .client()
        .get_job(submitted.id)
        .await
        .expect("read the job through the first coordinator");
    assert_eq!(seen_by_first.state, JobState::Completed);
    assert_eq!(seen_by_first.result, Some(json!({"ok": true})));
    let runner_seen = first
        .client()
        .get_runner(created.runner.id)
        .await
        .expect("read the runner through the first coordinator");
    assert_eq!(
        runner_seen.kinds,
        vec!["shared-kind".to_string()],
        "what it declared when claiming on the other coordinator was recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_poll_on_one_coordinator_is_answered_by_a_submit_through_the_other() {
    let (first, second) = two_coordinators().await;
    let (created, _) = first.runner("poller").await.expect("register a runner");
    let runner_on_second =
        RunnerClient::new(&second.base_url, &created.token).expect("a runner client");
    let poll = tokio::spawn(async move {
        runner_on_second
            .claim_job(&ClaimJobs {
                kinds: vec!["late".into()],
                max_jobs: Some(1),
                wait_ms: Some(20_000),
                ..Default::default()
            })
            .await
    });
    // Let the long poll park before the job exists.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "the long poll waits while there is no job"
    );
    let submitted_at = Instant::now();
    let job = first
        .client()
        .submit_job(&SubmitJob {
            kind: "late".into(),
            ..Default::default()
        })
        .await
        .expect("submit through the first coordinator")
        .0;
    let claimed = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the long poll on the other coordinator answers within 5 s")
        .expect("join the long poll")
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, job.id);
    eprintln!(
        "submit on one coordinator to claim on the other: {:?}",
        submitted_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_followed_on_one_coordinator_shows_lines_and_the_end_written_through_the_other() {
    use futures::StreamExt;
    use muster_client::api::{LogLevel, NewLogEntry};

    let (first, second) = two_coordinators().await;
    let (created, _) = first.runner("writer").await.expect("register a runner");
    let runner_on_second =
        RunnerClient::new(&second.base_url, &created.token).expect("a runner client");
    let (job, _) = first
        .client()
        .submit_job(&SubmitJob {
            kind: "followed-elsewhere".into(),
            ..Default::default()
        })
        .await
        .expect("submit");
    let claimed = runner_on_second
        .claim_job(&ClaimJobs {
            kinds: vec!["followed-elsewhere".into()],
            ..Default::default()
        })
        .await
        .expect("claim")
        .pop()
        .expect("the job");
    let stream =
        muster_client::http_client_builder(&first.base_url, &muster_client::ClientTls::system())
            .expect("an HTTP client")
            .build()
            .expect("build it")
            .get(format!("{}/api/v1/jobs/{}/logs", first.base_url, job.id))
            .bearer_auth(&first.admin_token)
            .header("Accept", "text/event-stream")
            .send()
            .await
            .expect("follow the log on the first coordinator");
    let mut chunks = stream.bytes_stream();
    runner_on_second
        .append_log(
            claimed.id,
            Some(claimed.lease.epoch),
            vec![NewLogEntry {
                level: LogLevel::Info,
                message: "written through the second".into(),
                ..Default::default()
            }],
        )
        .await
        .expect("append through the second coordinator");
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut completed = false;
    while !seen.contains("event: end") {
        if seen.contains("written through the second") && !completed {
            runner_on_second
                .complete_job(claimed.id, Some(claimed.lease.epoch), json!({"ok": true}))
                .await
                .expect("complete through the second coordinator");
            completed = true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, chunks.next()).await {
            Ok(Some(Ok(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the stream stalled or ended early ({other:?}): {seen}"),
        }
    }
    assert!(completed, "{seen}");
    assert!(seen.contains("\"state\":\"completed\""), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_hour_on_one_coordinator_counts_what_ended_on_the_other() {
    let (first, second) = two_coordinators().await;
    let (_, runner) = first
        .runner("hour-on-first")
        .await
        .expect("register a runner");
    let client = first.client();
    for kind in ["hour-first-done", "hour-first-failed"] {
        client
            .submit_job(&SubmitJob {
                kind: kind.into(),
                ..SubmitJob::default()
            })
            .await
            .expect("submit");
        let claimed = runner
            .claim_job(&ClaimJobs {
                kinds: vec![kind.into()],
                max_jobs: Some(1),
                ..Default::default()
            })
            .await
            .expect("claim")
            .pop()
            .expect("a job");
        if kind.ends_with("done") {
            runner
                .complete_job(claimed.id, Some(claimed.lease.epoch), json!({}))
                .await
                .expect("complete");
        } else {
            runner
                .fail_job(claimed.id, Some(claimed.lease.epoch), &Default::default())
                .await
                .expect("fail");
        }
    }
    // The first coordinator adds its counts to the database every few seconds; the second
    // reads them from there.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let summary = second.client().job_summary().await.expect("summary");
        let hour = summary.last_hour.expect("the admin sees the last hour");
        if hour.completed == 1 && hour.failed_attempts.get("runner_error") == Some(&1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second coordinator never counted the first one's outcomes: {hour:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
