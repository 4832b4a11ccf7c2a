//! Operational endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document.

use muster_client::api::{ClaimJobs, FailJob, FailureReason, RunnerHeartbeat};
use reqwest::Method;
use serde_json::Value;

use crate::support::{claim_of, job, request, sample, send, start, submit, submit_and_claim};

#[tokio::test]
async fn healthz_and_readyz_answer_ok() {
    let server = start().await;
    let health = send(request(&server, Method::GET, "/healthz", None)).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    let ready = send(request(&server, Method::GET, "/readyz", None)).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");
    server.client().ready().await.expect("the client agrees");
}

#[tokio::test]
async fn metrics_count_jobs_claims_failures_waits_and_runners() {
    let server = start().await;
    let client = server.client();
    for _ in 0..3 {
        submit(&client, job("exec")).await;
    }
    submit(&client, job("render")).await;
    let (_, runner) = server.runner("r").await.expect("runner");
    let (_, idle) = server.runner("idle").await.expect("runner");
    runner
        .heartbeat(&RunnerHeartbeat::default())
        .await
        .expect("heartbeat");
    let claimed = runner
        .claim_job(&ClaimJobs {
            max_jobs: Some(2),
            ..claim_of(&["exec"])
        })
        .await
        .expect("claim two");
    assert_eq!(claimed.len(), 2);
    runner
        .complete_job(claimed[0].id, Some(claimed[0].lease.epoch), Value::Null)
        .await
        .expect("complete");
    runner
        .fail_job(
            claimed[1].id,
            Some(claimed[1].lease.epoch),
            &FailJob {
                error: Some("boom".into()),
                reason: Some(FailureReason::RunnerError),
                retryable: Some(false),
            },
        )
        .await
        .expect("fail");
    let (_, cancelled) = submit_and_claim(&client, &runner, "cancel-me").await;
    runner
        .fail_job(
            cancelled.id,
            Some(cancelled.lease.epoch),
            &FailJob {
                error: None,
                reason: Some(FailureReason::Cancelled),
                retryable: None,
            },
        )
        .await
        .expect("fail as cancelled");
    idle.heartbeat(&RunnerHeartbeat {
        status: muster_client::api::RunnerActivity::Draining,
        ..Default::default()
    })
    .await
    .expect("draining");

    let reply = send(request(&server, Method::GET, "/metrics", None)).await;
    assert_eq!(reply.status, 200);
    let content_type = reply
        .headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = &reply.body;
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(text, series), Some(value), "{series} in:\n{text}");
    };
    expect(r#"muster_jobs{kind="exec",state="pending"}"#, 1.0);
    expect(r#"muster_jobs{kind="exec",state="completed"}"#, 1.0);
    expect(r#"muster_jobs{kind="exec",state="failed"}"#, 1.0);
    expect(r#"muster_jobs{kind="render",state="pending"}"#, 1.0);
    expect(r#"muster_jobs{kind="cancel-me",state="cancelled"}"#, 1.0);
    expect("muster_jobs_claimed_total", 3.0);
    expect(
        r#"muster_attempts_failed_total{reason="runner_error"}"#,
        1.0,
    );
    expect(r#"muster_attempts_failed_total{reason="cancelled"}"#, 1.0);
    expect("muster_claim_wait_seconds_count", 3.0);
    assert!(
        text.lines()
            .any(|line| line.starts_with("muster_claim_wait_seconds_bucket{le=")),
        "claim wait is a histogram:\n{text}"
    );
    expect(r#"muster_runners{status="online"}"#, 1.0);
    expect(r#"muster_runners{status="draining"}"#, 1.0);
    expect(r#"muster_runners{status="offline"}"#, 0.0);
    // Series order within a family is not fixed, so compare as sets of lines; the open
    // connections are the scrapers' own and differ between the two.
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text
            .lines()
            .filter(|line| !line.starts_with("muster_connections_open "))
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(
        sorted(&client.metrics_text().await.expect("through the client")),
        sorted(text)
    );
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_of_the_contract() {
    let server = start().await;
    let reply = send(request(&server, Method::GET, "/api/v1/openapi.json", None)).await;
    assert_eq!(reply.status, 200);
    let document = reply.json();
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|version| version.starts_with('3')),
        "an OpenAPI 3 document"
    );
    let paths = document["paths"].as_object().expect("paths");
    let contract = [
        ("/api/v1/jobs", &["post", "get"][..]),
        ("/api/v1/jobs/batch", &["post"]),
        ("/api/v1/jobs/{id}", &["get"]),
        ("/api/v1/jobs/{id}/cancel", &["post"]),
        ("/api/v1/jobs/{id}/retry", &["post"]),
        ("/api/v1/jobs/{id}/logs", &["get"]),
        ("/api/v1/jobs/{id}/dag", &["get"]),
        ("/api/v1/runners", &["post", "get"]),
        ("/api/v1/runners/{id}", &["get", "delete"]),
        ("/api/v1/runner/heartbeat", &["post"]),
        ("/api/v1/runner/claim", &["post"]),
        ("/api/v1/runner/jobs/{id}/heartbeat", &["post"]),
        ("/api/v1/runner/jobs/{id}/progress", &["put"]),
        ("/api/v1/runner/jobs/{id}/log", &["post"]),
        ("/api/v1/runner/jobs/{id}/complete", &["post"]),
        ("/api/v1/runner/complete", &["post"]),
        ("/api/v1/runner/jobs/{id}/fail", &["post"]),
        ("/api/v1/runner/jobs/{id}/dag", &["put"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
    ];
    for (path, methods) in contract {
        let item = paths.get(path).unwrap_or_else(|| {
            panic!(
                "the document lacks {path}; it has {:?}",
                paths.keys().collect::<Vec<_>>()
            )
        });
        for method in methods {
            assert!(item.get(*method).is_some(), "{path} lacks {method}");
        }
    }
    // The schemas of the contract's bodies are described, not left as bare objects.
    let schemas = document["components"]["schemas"]
        .as_object()
        .expect("schemas");
    for schema in [
        "Job",
        "SubmitJob",
        "ErrorBody",
        "ClaimJobs",
        "ClaimedJobs",
        "Runner",
        "CreatedRunner",
    ] {
        assert!(schemas.contains_key(schema), "schema {schema} is described");
    }
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_a_live_log_stream() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &runner, "exec").await;
    let stream = client
        .follow_logs_response(claimed.id, None)
        .await
        .expect("open a live log stream on a running job");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(5), server.stop()).await;
    drop(stream);
    stopped
        .expect("the server stops within 5 s although a log stream is open")
        .expect("the server stops cleanly");
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_a_long_poll() {
    let server = start().await;
    let (_, runner) = server.runner("r").await.expect("runner");
    let poll = tokio::spawn(async move {
        runner
            .claim_job(&ClaimJobs {
                wait_ms: Some(60_000),
                ..claim_of(&["nothing-comes"])
            })
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(5), server.stop()).await;
    stopped
        .expect("the server stops within 5 s although a claim is long-polling")
        .expect("the server stops cleanly");
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), poll)
        .await
        .expect("the long poll is answered")
        .expect("the claim task");
    // Answered with nothing or refused as unavailable; either way not left hanging.
    match answer {
        Ok(jobs) => assert!(jobs.is_empty()),
        Err(error) => assert!(error.is_transient(), "{error}"),
    }
}
