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

/// The served document, and a resolver for its `$ref`s.
async fn served_document() -> Value {
    let server = start().await;
    let reply = send(request(&server, Method::GET, "/api/v1/openapi.json", None)).await;
    assert_eq!(reply.status, 200);
    reply.json()
}

fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            document
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{reference} does not resolve"))
        }
        None => value,
    }
}

#[tokio::test]
async fn the_openapi_document_declares_every_answer_and_where_each_parameter_goes() {
    // The document used to declare the list filters as required path parameters, artifact
    // bodies as arrays of integers, and 401/403/404/409/413/503 on few operations.
    let document = served_document().await;
    let paths = document["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("a path item") {
            operations += 1;
            let name = format!("{} {path}", method.to_uppercase());
            let responses = operation["responses"].as_object().expect("responses");
            for (status, response) in responses {
                assert!(
                    resolve(&document, response)["description"].is_string(),
                    "{name} {status}: OpenAPI requires a description"
                );
            }
            let declares = |statuses: &[&str], why: &str| {
                for status in statuses {
                    assert!(
                        responses.contains_key(*status),
                        "{name} can answer {status} ({why}) but does not declare it; it declares {:?}",
                        responses.keys().collect::<Vec<_>>()
                    );
                }
            };
            if operation.get("security").is_some() {
                declares(&["401", "403", "503"], "a token route");
            }
            if operation["requestBody"]["content"]
                .get("application/json")
                .is_some()
            {
                declares(&["400", "413"], "a JSON body");
            }
            if path.contains("{id}") {
                declares(&["404"], "an id in the path");
            }
            if operation["parameters"]
                .as_array()
                .is_some_and(|parameters| parameters.iter().any(|p| p["in"] == "query"))
            {
                declares(&["400"], "query parameters");
            }
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let parameter_name = parameter["name"].as_str().expect("a name");
                if parameter["in"] == "path" {
                    assert!(
                        path.contains(&format!("{{{parameter_name}}}")),
                        "{name}: path parameter {parameter_name} is not in the path"
                    );
                    assert_eq!(parameter["required"], true, "{name} {parameter_name}");
                } else {
                    assert_ne!(
                        parameter["required"], true,
                        "{name}: {parameter_name} is optional"
                    );
                }
            }
        }
    }
    assert!(operations >= 29, "every route is described");

    let where_they_go = |path: &str| -> Vec<(String, String)> {
        paths[path]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or("").to_string(),
                    p["in"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let query = |names: &[&str]| -> Vec<(String, String)> {
        names
            .iter()
            .map(|name| (name.to_string(), "query".to_string()))
            .collect()
    };
    assert_eq!(
        where_they_go("/api/v1/jobs"),
        query(&[
            "state",
            "kind",
            "runner_id",
            "organization_id",
            "created_after",
            "created_before",
            "limit",
            "cursor"
        ])
    );
    assert_eq!(
        where_they_go("/api/v1/runners"),
        query(&["organization_id", "limit", "cursor"])
    );
    assert_eq!(
        where_they_go("/api/v1/admin/tokens"),
        query(&["organization_id", "limit", "cursor"])
    );
    let logs = where_they_go("/api/v1/jobs/{id}/logs");
    assert_eq!(logs[1..], query(&["after_seq", "limit"])[..]);

    let binary = serde_json::json!({"type": "string", "format": "binary"});
    for upload in ["/api/v1/artifacts", "/api/v1/runner/artifacts"] {
        let body = &paths[upload]["post"]["requestBody"];
        assert_eq!(
            body["content"]["application/octet-stream"]["schema"], binary,
            "{upload}"
        );
        assert_ne!(
            body["required"], true,
            "{upload}: an empty upload is an empty artifact"
        );
        let download = &paths[&format!("{upload}/{{id}}")]["get"]["responses"]["200"];
        assert_eq!(
            download["content"]["application/octet-stream"]["schema"],
            binary
        );
    }
    for (path, action) in [
        (
            "/api/v1/runner/jobs/{id}/heartbeat",
            "an empty heartbeat extends the lease",
        ),
        (
            "/api/v1/runner/jobs/{id}/complete",
            "an empty completion has a null result",
        ),
    ] {
        assert_ne!(
            paths[path]["post"]["requestBody"]["required"], true,
            "{action}"
        );
    }
    let live = &paths["/api/v1/jobs/{id}/logs"]["get"]["responses"]["200"]["content"];
    assert!(live["application/json"].is_object() && live["text/event-stream"].is_object());
    assert!(paths["/metrics"]["get"]["responses"]["200"]["content"]["text/plain"].is_object());
    assert!(
        paths["/api/v1/openapi.json"]["get"]["responses"]["200"]["content"]["application/json"]
            .is_object()
    );
    assert!(paths["/api/v1/runners/{id}"]["delete"]["responses"]["204"].is_object());
    assert!(paths["/api/v1/runner/claim"]["post"]["responses"]["204"].is_object());
}

#[tokio::test]
async fn the_openapi_document_states_the_limits_the_server_enforces() {
    let document = served_document().await;
    let schemas = &document["components"]["schemas"];
    let field = |schema: &str, field: &str| schemas[schema]["properties"][field].clone();
    let kind = field("SubmitJob", "kind");
    assert_eq!(kind["minLength"], 1);
    assert_eq!(kind["maxLength"], muster_core::MAX_KIND_LEN);
    assert!(
        kind["pattern"]
            .as_str()
            .is_some_and(|p| p.contains(r"\u0000-\u001F"))
    );
    assert_eq!(
        field("SubmitJob", "payload")["type"],
        serde_json::json!(["object", "null"])
    );
    assert_eq!(field("Job", "payload")["type"], "object");
    assert_eq!(
        field("SubmitJob", "max_attempts")["maximum"],
        muster_core::MAX_ATTEMPTS_LIMIT
    );
    assert_eq!(field("SubmitJob", "lease_ttl_s")["minimum"], 1);
    assert!(field("SubmitJob", "run_after")["pattern"].is_string());
    let jobs = field("SubmitJobs", "jobs");
    assert_eq!(
        (jobs["minItems"].clone(), jobs["maxItems"].clone()),
        (1.into(), 1000.into())
    );
    let kinds = field("ClaimJobs", "kinds");
    assert_eq!(kinds["minItems"], 1);
    assert_eq!(kinds["items"]["minLength"], 1);
    assert_eq!(field("ClaimJobs", "wait_ms")["maximum"], 60_000);
    assert_eq!(field("ClaimJobs", "max_jobs")["minimum"], 1);
    let name = field("CreateRunner", "name");
    assert_eq!(name["minLength"], 1);
    assert!(name["pattern"].is_string());
    let labels = field("CreateRunner", "labels");
    assert_eq!(labels["propertyNames"]["minLength"], 1);
    assert!(labels["additionalProperties"]["pattern"].is_string());
    assert_eq!(field("ProgressReport", "progress")["maximum"], 100);
    assert!(field("RunnerHeartbeat", "hostname")["pattern"].is_string());
    let limit = document["paths"]["/api/v1/jobs"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|parameter| parameter["name"] == "limit")
        .map(|parameter| &parameter["schema"])
        .expect("a limit parameter");
    assert_eq!(
        (limit["minimum"].clone(), limit["maximum"].clone()),
        (1.into(), 1000.into())
    );
    // Answers are closed: a field the server sent but the document did not describe would be a
    // schema violation. Request bodies stay open: unknown fields are ignored.
    assert_eq!(schemas["Job"]["additionalProperties"], false);
    assert_eq!(schemas["Runner"]["additionalProperties"], false);
    assert!(schemas["SubmitJob"].get("additionalProperties").is_none());
    // Always-present nullable fields are required and nullable.
    let job_required = schemas["Job"]["required"].as_array().expect("required");
    for always in [
        "result",
        "error",
        "runner_id",
        "finished_at",
        "pending_reason",
    ] {
        assert!(
            job_required.contains(&Value::from(always)),
            "Job.{always} is always sent"
        );
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
