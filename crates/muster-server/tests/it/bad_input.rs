//! Bad input gets a typed JSON error naming the field or cause, never a panic, a hang or a
//! half-written record: malformed JSON, wrong types, unknown enum values, out-of-range numbers,
//! oversize bodies, unknown and malformed ids, unknown routes and wrong methods.

use muster_client::api::JobState;
use reqwest::Method;
use serde_json::json;

use crate::support::{
    admin, admin_raw, job, job_count, runner_raw, start, start_manual_with, submit,
    submit_and_claim,
};

#[tokio::test]
async fn rejected_submits_name_the_problem_and_store_nothing() {
    let server = start().await;
    let client = server.client();
    submit(&client, job("seed")).await;
    let long_kind = format!(r#"{{"kind": "{}"}}"#, "k".repeat(201));
    let cases: Vec<(&str, &[&str])> = vec![
        (r#"{"kind": "exec""#, &["malformed json"]),
        (r#"{"kind": "exec"} trailing"#, &["malformed json"]),
        (r#"not json at all"#, &["malformed json"]),
        ("", &["empty"]),
        ("   ", &["empty"]),
        (r#"["exec"]"#, &["object"]),
        (r#"[{"kind": "exec"}]"#, &["object"]),
        (r#"["exec", {}, 5]"#, &["object"]),
        (r#""exec""#, &["object"]),
        (r#"{}"#, &["kind"]),
        (r#"{"kind": 5}"#, &["kind"]),
        (r#"{"kind": ""}"#, &["kind"]),
        (r#"{"kind": "   "}"#, &["kind"]),
        (r#"{"kind": null}"#, &["kind"]),
        (&long_kind, &["kind", "200"]),
        (r#"{"kind": "a\u0000b"}"#, &["kind", "control"]),
        (r#"{"kind": "exec", "priority": "high"}"#, &["priority"]),
        (r#"{"kind": "exec", "priority": 1.5}"#, &["priority"]),
        (
            r#"{"kind": "exec", "priority": 99999999999}"#,
            &["priority"],
        ),
        (r#"{"kind": "exec", "max_attempts": -1}"#, &["max_attempts"]),
        (
            r#"{"kind": "exec", "max_attempts": 0}"#,
            &["max_attempts", "between 1 and 1000"],
        ),
        (
            r#"{"kind": "exec", "max_attempts": 1001}"#,
            &["max_attempts"],
        ),
        (
            r#"{"kind": "exec", "max_attempts": 18446744073709551616}"#,
            &["max_attempts"],
        ),
        (r#"{"kind": "exec", "timeout_s": 0}"#, &["timeout_s"]),
        (r#"{"kind": "exec", "timeout_s": -5}"#, &["timeout_s"]),
        (r#"{"kind": "exec", "lease_ttl_s": 0}"#, &["lease_ttl_s"]),
        (r#"{"kind": "exec", "lease_ttl_s": 3601}"#, &["lease_ttl_s"]),
        (
            r#"{"kind": "exec", "backoff_base_s": 4000000}"#,
            &["backoff_base_s"],
        ),
        (
            r#"{"kind": "exec", "backoff_base_s": "1s"}"#,
            &["backoff_base_s"],
        ),
        (
            r#"{"kind": "exec", "run_after": "tomorrow"}"#,
            &["run_after"],
        ),
        (r#"{"kind": "exec", "run_after": 12}"#, &["run_after"]),
        // The schema's pattern states exactly what is read: no leap second (the time crate read
        // one as :59.999999999), no space for the T (JSON Schema's date-time has none).
        (
            r#"{"kind": "exec", "run_after": "2024-06-30T23:59:60Z"}"#,
            &["run_after", "leap second"],
        ),
        (
            r#"{"kind": "exec", "run_after": "2024-06-30 12:00:00Z"}"#,
            &["run_after", "T"],
        ),
        (
            r#"{"kind": "exec", "run_after": "2023-02-29T00:00:00Z"}"#,
            &["run_after"],
        ),
        (
            r#"{"kind": "exec", "idempotency_key": ""}"#,
            &["idempotency_key"],
        ),
        (
            r#"{"kind": "exec", "idempotency_key": 7}"#,
            &["idempotency_key"],
        ),
        (
            r#"{"kind": "exec", "requirements": "gpu"}"#,
            &["requirements"],
        ),
        (
            r#"{"kind": "exec", "requirements": {"labels": {"gpu": 1}}}"#,
            &["requirements.labels"],
        ),
        (
            r#"{"kind": "exec", "requirements": {"tags": "q4"}}"#,
            &["requirements.tags"],
        ),
        (
            r#"{"kind": "exec", "requirements": {"resources": {"vram_gb": -1}}}"#,
            &["requirements.resources.vram_gb"],
        ),
        (
            r#"{"kind": "exec", "requirements": {"resources": {"vram_gb": "lots"}}}"#,
            &["requirements.resources"],
        ),
        // An array where an object belongs must not be read as the object's fields in order.
        (
            r#"{"kind": "exec", "requirements": [{"gpu": "a100"}, ["t"], {"vram_gb": 4}]}"#,
            &["requirements", "object"],
        ),
        (
            r#"{"kind": "exec", "requirements": []}"#,
            &["requirements", "object"],
        ),
    ];
    for (body, mentions) in cases {
        let reply = admin_raw(&server, Method::POST, "/api/v1/jobs", body).await;
        assert_eq!(
            reply.status, 400,
            "{body:?} must be refused: {}",
            reply.body
        );
        reply.assert_error(400, "invalid_input", mentions);
    }
    // Absurdly deep nesting is refused, not followed until the stack runs out.
    let deep = format!(
        r#"{{"kind": "exec", "payload": {}{}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let reply = admin_raw(&server, Method::POST, "/api/v1/jobs", &deep).await;
    reply.assert_error(400, "invalid_input", &["payload"]);
    assert_eq!(
        job_count(&client).await,
        1,
        "no refused submit left a job behind"
    );

    let batch_cases: Vec<(&str, &[&str])> = vec![
        (r#"{"jobs": "exec"}"#, &["jobs"]),
        (r#"{}"#, &["jobs"]),
        (
            r#"{"jobs": [{"kind": "ok"}, {"kind": "x", "lease_ttl_s": 0}]}"#,
            &["jobs[1]", "lease_ttl_s"],
        ),
        (
            r#"{"jobs": [{"kind": "ok"}, {"kind": 3}]}"#,
            &["jobs[1].kind"],
        ),
        (
            r#"{"jobs": [{"kind": "ok"}, ["exec"]]}"#,
            &["jobs[1]", "object"],
        ),
    ];
    for (body, mentions) in batch_cases {
        let reply = admin_raw(&server, Method::POST, "/api/v1/jobs/batch", body).await;
        reply.assert_error(400, "invalid_input", mentions);
    }
    assert_eq!(
        job_count(&client).await,
        1,
        "no refused batch left a job behind"
    );
}

#[tokio::test]
async fn bad_query_parameters_name_the_parameter() {
    let server = start().await;
    submit(&server.client(), job("exec")).await;
    let cases: Vec<(&str, &[&str])> = vec![
        ("/api/v1/jobs?state=bogus", &["state", "bogus"]),
        ("/api/v1/jobs?state=PENDING", &["state"]),
        ("/api/v1/jobs?limit=0", &["limit"]),
        ("/api/v1/jobs?limit=5000", &["limit", "1000"]),
        ("/api/v1/jobs?limit=-1", &["limit"]),
        ("/api/v1/jobs?limit=ten", &["limit"]),
        ("/api/v1/jobs?runner_id=not-a-uuid", &["runner_id"]),
        ("/api/v1/jobs?cursor=garbage", &["cursor"]),
        ("/api/v1/runners?limit=0", &["limit"]),
        ("/api/v1/runners?limit=1001", &["limit"]),
        ("/api/v1/runners?cursor=%%%", &["cursor"]),
    ];
    for (path, mentions) in cases {
        let reply = admin(&server, Method::GET, path, None).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        reply.assert_error(400, "invalid_input", mentions);
    }
    let id = server
        .client()
        .list_jobs(&Default::default())
        .await
        .expect("list")
        .items[0]
        .id;
    for query in ["limit=0", "limit=10001", "after_seq=-1", "after_seq=x"] {
        let path = format!("/api/v1/jobs/{id}/logs?{query}");
        let reply = admin(&server, Method::GET, &path, None).await;
        let field = query.split('=').next().expect("a name");
        reply.assert_error(400, "invalid_input", &[field]);
    }
}

#[tokio::test]
async fn bad_runner_calls_name_the_field_and_change_nothing() {
    let server = start().await;
    let client = server.client();
    let (created, runner) = server.runner("r").await.expect("runner");
    let token = created.token.clone();
    let (_, claimed) = submit_and_claim(&client, &runner, "exec").await;
    let before = client.get_job(claimed.id).await.expect("show");
    submit(&client, job("exec")).await;
    let jobs = job_count(&client).await;

    let claim_cases: Vec<(&str, &[&str])> = vec![
        (r#"{}"#, &["kinds"]),
        (r#"{"kinds": []}"#, &["kinds"]),
        (r#"{"kinds": "exec"}"#, &["kinds"]),
        (r#"{"kinds": [""]}"#, &["kinds"]),
        (r#"{"kinds": ["exec"], "max_jobs": 0}"#, &["max_jobs"]),
        (
            r#"{"kinds": ["exec"], "max_jobs": 5000}"#,
            &["max_jobs", "1000"],
        ),
        (r#"{"kinds": ["exec"], "max_jobs": -1}"#, &["max_jobs"]),
        (
            r#"{"kinds": ["exec"], "wait_ms": 999999}"#,
            &["wait_ms", "60000"],
        ),
        (r#"{"kinds": ["exec"], "wait_ms": -1}"#, &["wait_ms"]),
        (
            r#"{"kinds": ["exec"], "resources": {"cpus": -2}}"#,
            &["resources.cpus"],
        ),
        (r#"{"kinds": ["exec"], "labels": ["gpu"]}"#, &["labels"]),
        (r#"{"kinds": ["exec"]"#, &["malformed json"]),
    ];
    for (body, mentions) in claim_cases {
        let reply = runner_raw(
            &server,
            &token,
            Method::POST,
            "/api/v1/runner/claim",
            None,
            body,
        )
        .await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        reply.assert_error(400, "invalid_input", mentions);
    }
    assert_eq!(
        client
            .list_jobs(&muster_client::JobQuery {
                state: Some(JobState::Pending),
                ..Default::default()
            })
            .await
            .expect("list")
            .items
            .len(),
        1,
        "a refused claim leases nothing"
    );

    let heartbeat_cases: Vec<(&str, &[&str])> = vec![
        (r#"{"status": "sleeping"}"#, &["status", "sleeping"]),
        (r#"{"jobs": ["not-a-uuid"]}"#, &["jobs"]),
        (r#"{"jobs": "all"}"#, &["jobs"]),
        (r#"{"hostname": 12}"#, &["hostname"]),
    ];
    for (body, mentions) in heartbeat_cases {
        let reply = runner_raw(
            &server,
            &token,
            Method::POST,
            "/api/v1/runner/heartbeat",
            None,
            body,
        )
        .await;
        reply.assert_error(400, "invalid_input", mentions);
    }

    let job_path = |action: &str| format!("/api/v1/runner/jobs/{}/{action}", claimed.id);
    let epoch = claimed.lease.epoch.to_string();
    let job_cases: Vec<(Method, &str, &str, &[&str])> = vec![
        (
            Method::POST,
            "fail",
            r#"{"reason": "bogus"}"#,
            &["reason", "bogus"],
        ),
        (
            Method::POST,
            "fail",
            r#"{"retryable": "yes"}"#,
            &["retryable"],
        ),
        (
            Method::POST,
            "fail",
            r#"{"error": {"nested": true}}"#,
            &["error"],
        ),
        (
            Method::PUT,
            "progress",
            r#"{"progress": 101}"#,
            &["progress"],
        ),
        (
            Method::PUT,
            "progress",
            r#"{"progress": "half"}"#,
            &["progress"],
        ),
        (Method::PUT, "progress", r#"{}"#, &["progress"]),
        (
            Method::PUT,
            "progress",
            r#"{"progress": 5, "message": 3}"#,
            &["message"],
        ),
        (
            Method::POST,
            "heartbeat",
            r#"{"progress": 250}"#,
            &["progress"],
        ),
        (
            Method::POST,
            "heartbeat",
            r#"{"progress": {"message": "no number"}}"#,
            &["progress"],
        ),
        (
            Method::POST,
            "heartbeat",
            r#"{"events": "one"}"#,
            &["events"],
        ),
        (
            Method::POST,
            "heartbeat",
            r#"{"progress": "#,
            &["malformed json"],
        ),
        (
            Method::POST,
            "log",
            r#"{"level": "loud", "message": "x"}"#,
            &["level", "loud"],
        ),
        (Method::POST, "log", r#"{"level": "info"}"#, &["message"]),
        (
            Method::POST,
            "log",
            r#"{"entries": [{"message": "ok"}, {"message": "x", "level": "loud"}]}"#,
            &["entries[1].level"],
        ),
        (Method::POST, "log", r#"{"entries": "x"}"#, &["entries"]),
        (
            Method::POST,
            "log",
            r#"{"entries": [{"seq": -1, "message": "x"}]}"#,
            &["seq"],
        ),
        (
            Method::POST,
            "complete",
            r#"{"result": "#,
            &["malformed json"],
        ),
        (
            Method::PUT,
            "dag",
            r#"{"nodes": {}, "edges": []}"#,
            &["nodes"],
        ),
        (Method::PUT, "dag", r#"{"nodes": []}"#, &["edges"]),
    ];
    for (method, action, body, mentions) in job_cases {
        let reply = runner_raw(
            &server,
            &token,
            method.clone(),
            &job_path(action),
            Some(&epoch),
            body,
        )
        .await;
        assert_eq!(
            reply.status, 400,
            "{method} {action} {body}: {}",
            reply.body
        );
        reply.assert_error(400, "invalid_input", mentions);
    }
    for bad_epoch in ["abc", "-1", "1.5", ""] {
        let reply = runner_raw(
            &server,
            &token,
            Method::POST,
            &job_path("heartbeat"),
            Some(bad_epoch),
            "{}",
        )
        .await;
        reply.assert_error(400, "invalid_input", &["Muster-Lease-Epoch"]);
    }
    let batch_cases: Vec<(&str, &[&str])> = vec![
        (r#"{"items": [{"id": "nope"}]}"#, &["items[0].id"]),
        (r#"{"items": [{"epoch": 1}]}"#, &["id"]),
        (r#"{"items": {}}"#, &["items"]),
        (
            r#"{"items": [{"id": "0190a000-0000-7000-8000-000000000000", "epoch": -3}]}"#,
            &["items[0].epoch"],
        ),
        (
            r#"{"items": [["0190a000-0000-7000-8000-000000000000", 1, null]]}"#,
            &["items[0]", "object"],
        ),
    ];
    for (body, mentions) in batch_cases {
        let reply = runner_raw(
            &server,
            &token,
            Method::POST,
            "/api/v1/runner/complete",
            None,
            body,
        )
        .await;
        reply.assert_error(400, "invalid_input", mentions);
    }

    let registry_cases: Vec<(&str, &[&str])> = vec![
        (r#"{}"#, &["name"]),
        (r#"{"name": ""}"#, &["name"]),
        (r#"{"name": "  "}"#, &["name"]),
        (r#"{"name": 5}"#, &["name"]),
        (r#"{"name": "x", "labels": ["a"]}"#, &["labels"]),
        (r#"{"name": "x", "labels": {"a": 1}}"#, &["labels"]),
        (
            r#"{"name": "x", "organization_id": ""}"#,
            &["organization_id"],
        ),
    ];
    let runners_before = client
        .list_runners(None, None)
        .await
        .expect("list")
        .items
        .len();
    for (body, mentions) in registry_cases {
        let reply = admin_raw(&server, Method::POST, "/api/v1/runners", body).await;
        reply.assert_error(400, "invalid_input", mentions);
    }
    assert_eq!(
        client
            .list_runners(None, None)
            .await
            .expect("list")
            .items
            .len(),
        runners_before,
        "no refused registration left a runner behind"
    );

    let after = client.get_job(claimed.id).await.expect("show");
    assert_eq!(
        after.state,
        JobState::Claimed,
        "no refused call started the job"
    );
    assert_eq!(after, before, "no refused call changed the job");
    assert!(
        client
            .job_logs(claimed.id, None, None)
            .await
            .expect("logs")
            .items
            .is_empty()
    );
    assert_eq!(job_count(&client).await, jobs);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_on_every_body_taking_route() {
    let (server, _clock) = start_manual_with(|config| config.max_body_bytes = Some(1024)).await;
    let client = server.client();
    let (created, runner) = server.runner("r").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &runner, "exec").await;
    let jobs = job_count(&client).await;
    let big = json!({"kind": "exec", "payload": {"blob": "x".repeat(4096)}}).to_string();
    let filler = "x".repeat(4096);

    let reply = admin_raw(&server, Method::POST, "/api/v1/jobs", &big).await;
    reply.assert_error(413, "payload_too_large", &["1024"]);
    let reply = admin_raw(
        &server,
        Method::POST,
        "/api/v1/jobs/batch",
        &json!({"jobs": [{"kind": "exec", "payload": filler}]}).to_string(),
    )
    .await;
    reply.assert_error(413, "payload_too_large", &[]);
    let reply = admin_raw(
        &server,
        Method::POST,
        "/api/v1/runners",
        &json!({"name": filler}).to_string(),
    )
    .await;
    reply.assert_error(413, "payload_too_large", &[]);

    let job_routes = [
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{}/heartbeat", claimed.id),
            json!({"events": [filler]}),
        ),
        (
            Method::PUT,
            format!("/api/v1/runner/jobs/{}/progress", claimed.id),
            json!({"progress": 1, "message": filler}),
        ),
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{}/log", claimed.id),
            json!({"message": filler}),
        ),
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{}/complete", claimed.id),
            json!({"result": filler}),
        ),
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{}/fail", claimed.id),
            json!({"error": filler}),
        ),
        (
            Method::PUT,
            format!("/api/v1/runner/jobs/{}/dag", claimed.id),
            json!({"nodes": [{"id": filler}], "edges": []}),
        ),
        (
            Method::POST,
            "/api/v1/runner/complete".to_string(),
            json!({"items": [{"id": claimed.id, "result": filler}]}),
        ),
        (
            Method::POST,
            "/api/v1/runner/claim".to_string(),
            json!({"kinds": [filler]}),
        ),
        (
            Method::POST,
            "/api/v1/runner/heartbeat".to_string(),
            json!({"hostname": filler}),
        ),
    ];
    for (method, path, body) in job_routes {
        let reply = runner_raw(
            &server,
            &created.token,
            method.clone(),
            &path,
            None,
            &body.to_string(),
        )
        .await;
        assert_eq!(reply.status, 413, "{method} {path}: {}", reply.body);
        assert!(
            reply.json().get("error").is_some(),
            "{method} {path}: 413 is a JSON error: {}",
            reply.body
        );
        reply.assert_error(413, "payload_too_large", &[]);
    }
    assert_eq!(job_count(&client).await, jobs);
    let job = client.get_job(claimed.id).await.expect("show");
    assert_eq!(
        job.state,
        JobState::Claimed,
        "nothing oversize reached the job"
    );
    assert_eq!(job.result, None);

    // Just under the limit is fine.
    let fits = json!({"kind": "exec", "payload": {"y": "y".repeat(880)}}).to_string();
    assert!(fits.len() < 1024);
    let reply = admin_raw(&server, Method::POST, "/api/v1/jobs", &fits).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_404() {
    let server = start().await;
    let client = server.client();
    let (created, runner) = server.runner("r").await.expect("runner");
    submit_and_claim(&client, &runner, "exec").await;
    let unknown = uuid::Uuid::now_v7().to_string();
    // `%FF%FE` decodes to bytes that are not UTF-8: axum answered it with a plain-text 400.
    for id in [
        unknown.as_str(),
        "not-a-uuid",
        "12345",
        "0190a000-zzzz",
        "%FF%FE",
    ] {
        let admin_routes = [
            (Method::GET, format!("/api/v1/jobs/{id}")),
            (Method::POST, format!("/api/v1/jobs/{id}/cancel")),
            (Method::POST, format!("/api/v1/jobs/{id}/retry")),
            (Method::GET, format!("/api/v1/jobs/{id}/logs")),
            (Method::GET, format!("/api/v1/jobs/{id}/dag")),
            (Method::GET, format!("/api/v1/runners/{id}")),
            (Method::DELETE, format!("/api/v1/runners/{id}")),
            (Method::GET, format!("/api/v1/artifacts/{id}")),
        ];
        for (method, path) in admin_routes {
            let reply = admin(&server, method.clone(), &path, None).await;
            assert_eq!(reply.status, 404, "{method} {path}: {}", reply.body);
            reply.assert_error(404, "not_found", &[id]);
        }
        let runner_routes = [
            (Method::POST, "heartbeat", "{}"),
            (Method::PUT, "progress", r#"{"progress": 1}"#),
            (Method::POST, "log", r#"{"message": "x"}"#),
            (Method::POST, "complete", "{}"),
            (Method::POST, "fail", "{}"),
            (Method::PUT, "dag", r#"{"nodes": [], "edges": []}"#),
        ];
        for (method, action, body) in runner_routes {
            let path = format!("/api/v1/runner/jobs/{id}/{action}");
            let reply =
                runner_raw(&server, &created.token, method.clone(), &path, None, body).await;
            assert_eq!(reply.status, 404, "{method} {path}: {}", reply.body);
            reply.assert_error(404, "not_found", &[id]);
        }
    }
    let stream = crate::support::send(
        crate::support::request(
            &server,
            Method::GET,
            &format!("/api/v1/jobs/{unknown}/logs"),
            Some(&server.admin_token),
        )
        .header(reqwest::header::ACCEPT, "text/event-stream"),
    )
    .await;
    stream.assert_error(404, "not_found", &[&unknown]);
    let reply = admin(
        &server,
        Method::GET,
        &format!("/api/v1/jobs?runner_id={unknown}"),
        None,
    )
    .await;
    assert_eq!(
        reply.status, 200,
        "an unknown runner id in a filter matches nothing"
    );
    assert_eq!(reply.json()["items"], json!([]));
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_json() {
    let server = start().await;
    for (method, path) in [
        (Method::GET, "/nope"),
        (Method::GET, "/api/v2/jobs"),
        (Method::POST, "/api/v1/jobs/x/y/z"),
        (Method::GET, "/api/v1/runner/jobs"),
    ] {
        let reply = admin(&server, method.clone(), path, None).await;
        reply.assert_error(404, "not_found", &[path]);
    }
    let id = uuid::Uuid::now_v7();
    for (method, path) in [
        (Method::DELETE, "/api/v1/jobs".to_string()),
        (Method::PUT, "/api/v1/jobs".to_string()),
        (Method::GET, "/api/v1/jobs/batch".to_string()),
        (Method::PATCH, format!("/api/v1/jobs/{id}")),
        (Method::GET, format!("/api/v1/jobs/{id}/cancel")),
        (Method::GET, "/api/v1/runner/claim".to_string()),
        (Method::POST, format!("/api/v1/runner/jobs/{id}/progress")),
        (Method::POST, "/healthz".to_string()),
    ] {
        let reply = admin(&server, method.clone(), &path, None).await;
        reply.assert_error(405, "method_not_allowed", &[method.as_str(), &path]);
    }
}

#[tokio::test]
async fn a_payload_that_is_not_an_object_is_refused_and_stores_nothing() {
    // `"payload": 5` used to be stored and returned, breaking the job schema the server itself
    // documents (an object).
    let server = start().await;
    let client = server.client();
    for payload in ["5", r#""text""#, "[1, 2]", "true", "-0.5"] {
        let body = format!(r#"{{"kind": "exec", "payload": {payload}}}"#);
        let reply = admin_raw(&server, Method::POST, "/api/v1/jobs", &body).await;
        reply.assert_error(400, "invalid_input", &["payload", "object"]);
        let batch = format!(r#"{{"jobs": [{{"kind": "ok"}}, {body}]}}"#);
        let reply = admin_raw(&server, Method::POST, "/api/v1/jobs/batch", &batch).await;
        reply.assert_error(400, "invalid_input", &["jobs[1]", "payload", "object"]);
    }
    assert_eq!(
        job_count(&client).await,
        0,
        "no refused submit stored a job"
    );
    // Absent and null mean the default, an empty object.
    for body in [
        r#"{"kind": "exec"}"#,
        r#"{"kind": "exec", "payload": null}"#,
    ] {
        let reply = admin_raw(&server, Method::POST, "/api/v1/jobs", body).await;
        assert_eq!(reply.status, 201, "{body}: {}", reply.body);
        assert_eq!(reply.json()["payload"], json!({}), "{body}");
    }
}

#[tokio::test]
async fn control_characters_and_empty_names_are_refused_wherever_names_arrive() {
    // Only `kind` used to refuse control characters: a NUL, an escape or a newline went into
    // runner names, hostnames, labels, tags and idempotency keys (and on to terminals, metrics
    // and PostgreSQL text columns, which refuse NUL), and an empty label key was accepted.
    let server = start().await;
    let client = server.client();
    let (created, _runner) = server.runner("r").await.expect("runner");
    let token = created.token.clone();

    let submit_cases: Vec<(serde_json::Value, &[&str])> = vec![
        (json!({"kind": "ex\u{85}ec"}), &["kind", "control"]),
        (
            json!({"kind": "exec", "idempotency_key": "key\u{0}"}),
            &["idempotency_key", "U+0000"],
        ),
        (
            json!({"kind": "exec", "requirements": {"labels": {"g\u{0}pu": "a100"}}}),
            &["requirements.labels", "key", "control"],
        ),
        (
            json!({"kind": "exec", "requirements": {"labels": {"": "a100"}}}),
            &["requirements.labels", "key", "empty"],
        ),
        (
            json!({"kind": "exec", "requirements": {"labels": {"gpu": "a\u{1b}100"}}}),
            &["requirements.labels.gpu", "control"],
        ),
        (
            json!({"kind": "exec", "requirements": {"tags": ["a", "b", "c\nd"]}}),
            &["requirements.tags[2]", "control"],
        ),
        (
            json!({"kind": "exec", "requirements": {"tags": [""]}}),
            &["requirements.tags[0]", "empty"],
        ),
        (
            json!({"kind": "exec", "requirements": {"resources": {"vram\u{7f}": 1}}}),
            &["requirements.resources", "control"],
        ),
    ];
    for (body, mentions) in &submit_cases {
        let reply = admin_raw(&server, Method::POST, "/api/v1/jobs", &body.to_string()).await;
        reply.assert_error(400, "invalid_input", mentions);
        let batch = json!({"jobs": [{"kind": "ok"}, body]}).to_string();
        let reply = admin_raw(&server, Method::POST, "/api/v1/jobs/batch", &batch).await;
        reply.assert_error(400, "invalid_input", &["jobs[1]"]);
        reply.assert_error(400, "invalid_input", mentions);
    }
    assert_eq!(
        job_count(&client).await,
        0,
        "no refused submit stored a job"
    );

    // Registrations (admin token), runner heartbeats and claims (the runner's token).
    let route_cases: Vec<(&str, serde_json::Value, &[&str])> = vec![
        (
            "/api/v1/runners",
            json!({"name": "lap\u{0}top"}),
            &["name", "control"],
        ),
        (
            "/api/v1/runners",
            json!({"name": "laptop\t"}),
            &["name", "control"],
        ),
        (
            "/api/v1/runners",
            json!({"name": "x", "labels": {"": "eu"}}),
            &["labels", "key", "empty"],
        ),
        (
            "/api/v1/runners",
            json!({"name": "x", "labels": {"zo\u{9b}ne": "eu"}}),
            &["labels", "key"],
        ),
        (
            "/api/v1/runners",
            json!({"name": "x", "labels": {"zone": "e\u{7}u"}}),
            &["labels.zone", "control"],
        ),
        (
            "/api/v1/runners",
            json!({"name": "x", "organization_id": "acme\u{0}"}),
            &["organization_id", "control"],
        ),
        (
            "/api/v1/runner/heartbeat",
            json!({"hostname": "host\u{0}"}),
            &["hostname", "U+0000"],
        ),
        (
            "/api/v1/runner/heartbeat",
            json!({"version": "1.0\n"}),
            &["version", "control"],
        ),
        (
            "/api/v1/runner/heartbeat",
            json!({"hostname": "h".repeat(257)}),
            &["hostname", "256"],
        ),
        (
            "/api/v1/runner/claim",
            json!({"kinds": ["exec", "a\u{0}"]}),
            &["kinds[1]", "control"],
        ),
        (
            "/api/v1/runner/claim",
            json!({"kinds": [" "]}),
            &["kinds[0]", "white space"],
        ),
        (
            "/api/v1/runner/claim",
            json!({"kinds": ["exec"], "labels": {"": "x"}}),
            &["labels", "empty"],
        ),
        (
            "/api/v1/runner/claim",
            json!({"kinds": ["exec"], "tags": ["ok", "b\u{8}ad"]}),
            &["tags[1]", "control"],
        ),
        (
            "/api/v1/runner/claim",
            json!({"kinds": ["exec"], "resources": {"c\u{1}": 1}}),
            &["resources", "control"],
        ),
    ];
    for (path, body, mentions) in &route_cases {
        let body = body.to_string();
        let reply = if path.starts_with("/api/v1/runner/") {
            runner_raw(&server, &token, Method::POST, path, None, &body).await
        } else {
            admin_raw(&server, Method::POST, path, &body).await
        };
        reply.assert_error(400, "invalid_input", mentions);
    }
    assert_eq!(
        client
            .list_runners(None, None)
            .await
            .expect("list")
            .items
            .len(),
        1,
        "no refused registration left a runner behind"
    );
    let runner = client.get_runner(created.runner.id).await.expect("show");
    assert_eq!(runner.hostname, None, "no refused heartbeat was recorded");
    assert!(runner.kinds.is_empty(), "no refused claim was recorded");

    // Lengths count characters, as the schema's maxLength does: 200 two-byte characters fit.
    let reply = admin(
        &server,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"kind": "é".repeat(200)})),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let reply = admin(
        &server,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"kind": "é".repeat(201)})),
    )
    .await;
    reply.assert_error(400, "invalid_input", &["kind", "200"]);
}
