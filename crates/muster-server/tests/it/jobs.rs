//! User routes for jobs: submit (single, batch, idempotent), list with filters and cursors,
//! show, cancel (pending, running, grace), retry, and the step DAG as users read it.

use std::collections::{BTreeMap, HashSet};

use muster_client::JobQuery;
use muster_client::api::{
    Dag, FailJob, FailureReason, JobState, PendingReason, Requirements, RunnerHeartbeat, SubmitJob,
};
use reqwest::Method;
use serde_json::json;
use time::OffsetDateTime;

use crate::support::{
    admin, all_jobs, api_error, claim_of, claim_one, job, job_count, start, start_manual_with,
    submit, submit_and_claim,
};

/// The keys the contract lists for a job.
const JOB_KEYS: [&str; 23] = [
    "id",
    "kind",
    "state",
    "payload",
    "priority",
    "requirements",
    "attempt",
    "max_attempts",
    "timeout_s",
    "lease_ttl_s",
    "backoff_base_s",
    "run_after",
    "idempotency_key",
    "progress",
    "result",
    "error",
    "runner_id",
    "created_at",
    "claimed_at",
    "started_at",
    "finished_at",
    "lease_expires_at",
    "pending_reason",
];

#[tokio::test]
async fn submit_with_only_a_kind_answers_201_and_the_whole_job_with_defaults() {
    let server = start().await;
    let reply = admin(
        &server,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"kind": "exec"})),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let body = reply.json();
    for key in JOB_KEYS {
        assert!(body.get(key).is_some(), "job lacks {key}: {body}");
    }
    assert_eq!(body["kind"], "exec");
    assert_eq!(body["state"], "pending");
    assert_eq!(body["payload"], json!({}));
    assert_eq!(body["priority"], 100);
    assert_eq!(body["attempt"], 0);
    assert_eq!(body["max_attempts"], 3);
    assert_eq!(body["timeout_s"], 3600);
    assert_eq!(body["lease_ttl_s"], 30);
    assert_eq!(body["backoff_base_s"], 1);
    assert_eq!(body["progress"], json!({"percent": 0.0, "message": null}));
    for empty in [
        "idempotency_key",
        "result",
        "error",
        "runner_id",
        "claimed_at",
        "started_at",
        "finished_at",
        "lease_expires_at",
    ] {
        assert!(
            body[empty].is_null(),
            "{empty} of a new job is null: {body}"
        );
    }
    assert_eq!(body["pending_reason"], "no_runner_for_kind");
    let id = body["id"].as_str().expect("id is a string");
    let uuid = uuid::Uuid::parse_str(id).expect("the id is a UUID");
    assert_eq!(uuid.get_version_num(), 7, "job ids are UUIDv7");
    for stamp in ["created_at", "run_after"] {
        let text = body[stamp].as_str().expect("timestamps are strings");
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|error| panic!("{stamp} {text:?} is not RFC 3339: {error}"));
        assert!(text.ends_with('Z'), "{stamp} {text:?} is in UTC");
    }

    let shown = admin(&server, Method::GET, &format!("/api/v1/jobs/{id}"), None).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json(), body, "show answers the job as submit did");
}

#[tokio::test]
async fn submit_keeps_every_field_it_was_given() {
    let server = start().await;
    let client = server.client();
    let run_after =
        OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp() + 3600)
            .expect("a time an hour from now");
    let requirements = Requirements {
        labels: BTreeMap::from([("gpu".to_string(), "a100".to_string())]),
        tags: vec!["q4_k_m".into()],
        resources: BTreeMap::from([("vram_gb".to_string(), 40.0)]),
    };
    let spec = SubmitJob {
        kind: "/reconstruction/v1".into(),
        payload: Some(json!({"scene": "s1", "frames": [1, 2, 3]})),
        priority: Some(7),
        requirements: Some(requirements.clone()),
        max_attempts: Some(5),
        timeout_s: Some(120),
        lease_ttl_s: Some(15),
        backoff_base_s: Some(4),
        run_after: Some(run_after),
        idempotency_key: Some("scene-s1".into()),
        inputs: None,
        organization_id: None,
    };
    let (job, created) = client.submit_job(&spec).await.expect("submit");
    assert!(created);
    assert_eq!(job.kind, "/reconstruction/v1");
    assert_eq!(job.payload, json!({"scene": "s1", "frames": [1, 2, 3]}));
    assert_eq!(job.priority, 7);
    assert_eq!(job.requirements, requirements);
    assert_eq!(job.max_attempts, 5);
    assert_eq!(job.timeout_s, 120);
    assert_eq!(job.lease_ttl_s, 15);
    assert_eq!(job.backoff_base_s, 4);
    assert_eq!(job.run_after, run_after);
    assert_eq!(job.idempotency_key.as_deref(), Some("scene-s1"));
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(
        job.pending_reason,
        Some(PendingReason::Scheduled),
        "run_after is an hour away"
    );
    assert_eq!(
        client.get_job(job.id).await.expect("show"),
        job,
        "what was stored is what was answered"
    );
}

#[tokio::test]
async fn timestamps_with_an_offset_are_stored_and_answered_in_utc() {
    let server = start().await;
    let reply = admin(
        &server,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"kind": "exec", "run_after": "2030-01-01T02:00:00.250+02:00"})),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.json()["run_after"], "2030-01-01T00:00:00.25Z");
    assert_eq!(reply.json()["pending_reason"], "scheduled");
}

#[tokio::test]
async fn a_reused_idempotency_key_answers_200_with_the_first_job_and_stores_nothing() {
    let server = start().await;
    let first = admin(
        &server,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"kind": "exec", "payload": {"n": 1}, "idempotency_key": "k-1"})),
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = admin(
        &server,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"kind": "exec", "payload": {"n": 2}, "idempotency_key": "k-1"})),
    )
    .await;
    assert_eq!(
        again.status, 200,
        "a reused key is not a new job: {}",
        again.body
    );
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!(
        again.json()["payload"],
        json!({"n": 1}),
        "the first job comes back unchanged"
    );

    let client = server.client();
    let (_, created) = client
        .submit_job(&SubmitJob {
            idempotency_key: Some("k-1".into()),
            ..job("exec")
        })
        .await
        .expect("resubmit through the client");
    assert!(!created, "the client reports the 200 as not created");
    assert_eq!(job_count(&client).await, 1);

    let (_, created) = client
        .submit_job(&SubmitJob {
            idempotency_key: Some("k-2".into()),
            ..job("exec")
        })
        .await
        .expect("another key");
    assert!(created, "a different key is a different job");
    assert_eq!(job_count(&client).await, 2);
}

#[tokio::test]
async fn batch_submit_stores_all_in_order_or_nothing() {
    let server = start().await;
    let client = server.client();
    let existing = submit(
        &client,
        SubmitJob {
            idempotency_key: Some("dup".into()),
            ..job("exec")
        },
    )
    .await;

    let reply = admin(
        &server,
        Method::POST,
        "/api/v1/jobs/batch",
        Some(json!({"jobs": [
            {"kind": "a", "priority": 1},
            {"kind": "b", "payload": {"x": true}},
            {"kind": "exec", "idempotency_key": "dup"},
        ]})),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let body = reply.json();
    let items = body["items"].as_array().expect("a list of jobs");
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["kind"], "a");
    assert_eq!(items[0]["priority"], 1);
    assert_eq!(items[1]["kind"], "b");
    assert_eq!(items[1]["payload"], json!({"x": true}));
    assert_eq!(
        items[2]["id"],
        json!(existing.id.to_string()),
        "a reused idempotency key answers the existing job"
    );
    assert_eq!(job_count(&client).await, 3);

    let typed = client
        .submit_jobs(&[job("c"), job("c")])
        .await
        .expect("batch through the client");
    assert_eq!(typed.len(), 2);
    assert_ne!(typed[0].id, typed[1].id);
    assert_eq!(job_count(&client).await, 5);

    // The same new key twice in one batch is one job.
    let twins = client
        .submit_jobs(&[
            SubmitJob {
                idempotency_key: Some("twin".into()),
                ..job("d")
            },
            SubmitJob {
                idempotency_key: Some("twin".into()),
                ..job("d")
            },
        ])
        .await
        .expect("a batch with a repeated key");
    assert_eq!(twins.len(), 2, "one answer per submitted item");
    assert_eq!(twins[0].id, twins[1].id);
    assert_eq!(job_count(&client).await, 6);

    // One bad job refuses the whole batch: nothing half-written.
    let reply = admin(
        &server,
        Method::POST,
        "/api/v1/jobs/batch",
        Some(json!({"jobs": [{"kind": "ok"}, {"kind": "bad", "max_attempts": 0}]})),
    )
    .await;
    reply.assert_error(400, "invalid_input", &["jobs[1]", "max_attempts"]);
    let reply = admin(
        &server,
        Method::POST,
        "/api/v1/jobs/batch",
        Some(json!({"jobs": []})),
    )
    .await;
    reply.assert_error(400, "invalid_input", &["jobs"]);
    let too_many: Vec<_> = (0..1001).map(|_| json!({"kind": "x"})).collect();
    let reply = admin(
        &server,
        Method::POST,
        "/api/v1/jobs/batch",
        Some(json!({ "jobs": too_many })),
    )
    .await;
    reply.assert_error(400, "invalid_input", &["jobs", "1000"]);
    assert_eq!(job_count(&client).await, 6, "refused batches store nothing");
}

#[tokio::test]
async fn list_is_newest_first_and_cursor_pages_show_every_job_once() {
    let server = start().await;
    let client = server.client();
    let mut submitted = Vec::new();
    for index in 0..12 {
        let kind = if index % 3 == 0 { "b" } else { "a" };
        submitted.push(submit(&client, job(kind)).await);
    }
    let newest_first: Vec<_> = submitted.iter().rev().map(|job| job.id).collect();

    let first_page = admin(&server, Method::GET, "/api/v1/jobs?limit=5", None).await;
    assert_eq!(first_page.status, 200);
    let body = first_page.json();
    assert_eq!(body["items"].as_array().map(Vec::len), Some(5));
    assert!(body["next_cursor"].is_string(), "more pages follow: {body}");

    let mut seen = Vec::new();
    let mut query = JobQuery {
        limit: Some(5),
        ..Default::default()
    };
    let mut pages = 0;
    loop {
        let page = client.list_jobs(&query).await.expect("a page");
        pages += 1;
        assert!(page.items.len() <= 5);
        seen.extend(page.items.iter().map(|job| job.id));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, newest_first, "every job once, newest first");

    let kind_a = all_jobs(
        &client,
        JobQuery {
            kind: Some("a".into()),
            limit: Some(3),
            ..Default::default()
        },
    )
    .await;
    let expected: Vec<_> = submitted
        .iter()
        .rev()
        .filter(|job| job.kind == "a")
        .map(|job| job.id)
        .collect();
    assert_eq!(
        kind_a.iter().map(|job| job.id).collect::<Vec<_>>(),
        expected
    );

    let last_page = client
        .list_jobs(&JobQuery {
            limit: Some(12),
            ..Default::default()
        })
        .await
        .expect("one page of everything");
    assert_eq!(last_page.items.len(), 12);
    assert_eq!(
        last_page.next_cursor, None,
        "no cursor when nothing follows"
    );
}

#[tokio::test]
async fn list_filters_by_state_kind_and_runner() {
    let server = start().await;
    let client = server.client();
    for _ in 0..4 {
        submit(&client, job("a")).await;
    }
    let mut bs = Vec::new();
    for _ in 0..3 {
        bs.push(submit(&client, job("b")).await);
    }
    let (created, runner) = server.runner("r1").await.expect("runner");
    let claimed = runner
        .claim_job(&muster_client::api::ClaimJobs {
            max_jobs: Some(2),
            ..claim_of(&["b"])
        })
        .await
        .expect("claim two");
    assert_eq!(claimed.len(), 2);
    client
        .cancel_job(bs[2].id)
        .await
        .expect("cancel the third b");

    let query = |state: Option<JobState>, kind: Option<&str>, runner_id| JobQuery {
        state,
        kind: kind.map(str::to_string),
        runner_id,
        ..Default::default()
    };
    let ids = |jobs: Vec<muster_client::api::Job>| {
        jobs.into_iter().map(|job| job.id).collect::<HashSet<_>>()
    };

    assert_eq!(
        all_jobs(&client, query(Some(JobState::Pending), None, None))
            .await
            .len(),
        4
    );
    assert_eq!(
        all_jobs(&client, query(Some(JobState::Claimed), None, None))
            .await
            .len(),
        2
    );
    assert_eq!(
        ids(all_jobs(&client, query(Some(JobState::Cancelled), None, None)).await),
        HashSet::from([bs[2].id])
    );
    assert_eq!(
        all_jobs(&client, query(None, Some("a"), None)).await.len(),
        4
    );
    assert_eq!(
        all_jobs(&client, query(None, Some("b"), None)).await.len(),
        3
    );
    assert_eq!(
        all_jobs(&client, query(None, Some("nope"), None))
            .await
            .len(),
        0
    );
    assert_eq!(
        ids(all_jobs(&client, query(None, None, Some(created.runner.id))).await),
        claimed.iter().map(|job| job.id).collect::<HashSet<_>>()
    );
    assert_eq!(
        all_jobs(&client, query(Some(JobState::Pending), Some("b"), None))
            .await
            .len(),
        0,
        "filters combine"
    );
    let raw = admin(
        &server,
        Method::GET,
        &format!(
            "/api/v1/jobs?state=claimed&kind=b&runner_id={}",
            created.runner.id
        ),
        None,
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    assert_eq!(raw.json()["items"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn cancel_of_a_pending_job_ends_it_and_no_runner_gets_it() {
    let server = start().await;
    let client = server.client();
    let pending = submit(&client, job("exec")).await;
    let cancelled = client.cancel_job(pending.id).await.expect("cancel");
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(cancelled.finished_at.is_some());
    assert_eq!(
        cancelled.error.as_ref().map(|error| error.reason),
        Some(FailureReason::Cancelled)
    );
    assert_eq!(client.get_job(pending.id).await.expect("show"), cancelled);

    let (_, runner) = server.runner("r").await.expect("runner");
    assert!(
        runner
            .claim_job(&claim_of(&["exec"]))
            .await
            .expect("claim")
            .is_empty(),
        "a cancelled job is never handed out"
    );
    let error = api_error(client.cancel_job(pending.id).await, 409, "invalid_state");
    assert!(
        error.to_string().contains("cancelled"),
        "names the state: {error}"
    );
}

#[tokio::test]
async fn cancel_of_a_running_job_asks_the_runner_to_stop_and_its_cancelled_fail_ends_it() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &runner, "exec").await;
    let epoch = Some(claimed.lease.epoch);
    let beat = runner
        .job_heartbeat(claimed.id, epoch, &Default::default())
        .await
        .expect("heartbeat");
    assert!(!beat.cancel, "nobody cancelled yet");

    let cancelling = client.cancel_job(claimed.id).await.expect("cancel");
    assert_eq!(cancelling.state, JobState::Cancelling);
    assert_eq!(cancelling.finished_at, None, "waits for the runner");

    let beat = runner
        .job_heartbeat(claimed.id, epoch, &Default::default())
        .await
        .expect("heartbeat while cancelling");
    assert!(beat.cancel, "job heartbeat carries cancel");
    let progress = runner
        .report_progress(claimed.id, epoch, 50.0, None)
        .await
        .expect("progress while cancelling");
    assert!(progress.cancel, "progress carries cancel");
    let log = runner
        .append_log(
            claimed.id,
            epoch,
            vec![muster_client::api::NewLogEntry {
                message: "still here".into(),
                ..Default::default()
            }],
        )
        .await
        .expect("log while cancelling");
    assert!(log.cancel, "log carries cancel");
    let dag = runner
        .sync_dag(claimed.id, epoch, &Dag::default())
        .await
        .expect("dag while cancelling");
    assert!(dag.cancel, "dag carries cancel");
    let runner_beat = runner
        .heartbeat(&RunnerHeartbeat {
            jobs: vec![claimed.id],
            ..Default::default()
        })
        .await
        .expect("runner heartbeat");
    assert_eq!(
        runner_beat.cancel,
        vec![claimed.id],
        "the runner heartbeat lists it too"
    );
    assert_eq!(
        client
            .cancel_job(claimed.id)
            .await
            .expect("cancel twice")
            .state,
        JobState::Cancelling,
        "a second cancel changes nothing"
    );

    let ended = runner
        .fail_job(
            claimed.id,
            epoch,
            &FailJob {
                error: Some("stopped on request".into()),
                reason: Some(FailureReason::Cancelled),
                retryable: None,
            },
        )
        .await
        .expect("report the stop");
    assert_eq!(ended.state, JobState::Cancelled);
    let error = ended.error.expect("a cancelled job says why");
    assert_eq!(error.reason, FailureReason::Cancelled);
    assert!(ended.finished_at.is_some());
    assert_eq!(
        client.get_job(claimed.id).await.expect("show").state,
        JobState::Cancelled
    );
}

#[tokio::test]
async fn a_cancel_the_runner_never_confirms_ends_when_the_grace_passes() {
    let (server, clock) = start_manual_with(|config| config.cancel_grace_s = Some(5)).await;
    let client = server.client();
    let (_, runner) = server.runner("silent").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &runner, "exec").await;
    runner
        .job_heartbeat(claimed.id, Some(claimed.lease.epoch), &Default::default())
        .await
        .expect("running");
    client.cancel_job(claimed.id).await.expect("cancel");

    clock.advance_s(4);
    server.reap().await;
    assert_eq!(
        client.get_job(claimed.id).await.expect("show").state,
        JobState::Cancelling,
        "still inside the grace"
    );

    clock.advance_s(2);
    server.reap().await;
    let job = client.get_job(claimed.id).await.expect("show");
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(
        job.error.map(|error| error.reason),
        Some(FailureReason::Cancelled)
    );
    assert_eq!(job.lease_expires_at, None);
    let late = runner
        .complete_job(claimed.id, Some(claimed.lease.epoch), json!("too late"))
        .await;
    assert!(api_error(late, 409, "lease_lost").is_lease_lost());
    assert_eq!(
        client.get_job(claimed.id).await.expect("show").state,
        JobState::Cancelled
    );
}

#[tokio::test]
async fn retry_is_allowed_only_from_failed_or_cancelled() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");

    let pending = submit(&client, job("idle")).await;
    let error = api_error(client.retry_job(pending.id).await, 409, "invalid_state");
    assert!(error.to_string().contains("pending"), "{error}");

    let (_, running) = submit_and_claim(&client, &runner, "exec").await;
    runner
        .job_heartbeat(running.id, Some(running.lease.epoch), &Default::default())
        .await
        .expect("running");
    let error = api_error(client.retry_job(running.id).await, 409, "invalid_state");
    assert!(error.to_string().contains("running"), "{error}");
    let failed = runner
        .fail_job(
            running.id,
            Some(running.lease.epoch),
            &FailJob {
                error: Some("boom".into()),
                reason: None,
                retryable: Some(false),
            },
        )
        .await
        .expect("fail for good");
    assert_eq!(failed.state, JobState::Failed);

    let retried = client
        .retry_job(failed.id)
        .await
        .expect("retry a failed job");
    assert_eq!(retried.state, JobState::Pending);
    assert_eq!(retried.attempt, 0, "a fresh allowance of attempts");
    assert_eq!(retried.error, None);
    assert_eq!(retried.runner_id, None);
    let again = claim_one(&runner, "exec").await;
    assert_eq!(again.id, failed.id);
    assert!(
        again.lease.epoch > running.lease.epoch,
        "older leases stay fenced off"
    );
    let done = runner
        .complete_job(again.id, Some(again.lease.epoch), json!({"ok": true}))
        .await
        .expect("complete the retry");
    let error = api_error(client.retry_job(done.id).await, 409, "invalid_state");
    assert!(error.to_string().contains("completed"), "{error}");

    let cancelled = client.cancel_job(pending.id).await.expect("cancel");
    assert_eq!(cancelled.state, JobState::Cancelled);
    let retried = client
        .retry_job(pending.id)
        .await
        .expect("retry a cancelled job");
    assert_eq!(retried.state, JobState::Pending);
    assert_eq!(retried.error, None);
}

#[tokio::test]
async fn the_dag_a_runner_syncs_is_what_users_read() {
    let server = start().await;
    let client = server.client();
    let (created, runner) = server.runner("r").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &runner, "exec").await;
    let epoch = Some(claimed.lease.epoch);

    let empty = admin(
        &server,
        Method::GET,
        &format!("/api/v1/jobs/{}/dag", claimed.id),
        None,
    )
    .await;
    assert_eq!(empty.status, 200);
    assert_eq!(
        empty.json(),
        json!({"nodes": [], "edges": []}),
        "no DAG synced yet"
    );

    let dag = Dag {
        nodes: vec![
            json!({"id": "fetch", "label": "Fetch", "status": "done"}),
            json!({"id": "build", "label": "Build", "status": "running", "extra": {"cpu": 2}}),
            json!({"id": "test", "label": "Test", "status": "pending"}),
        ],
        edges: vec![
            json!({"from": "fetch", "to": "build"}),
            json!({"from": "build", "to": "test"}),
        ],
    };
    let flag = runner
        .sync_dag(claimed.id, epoch, &dag)
        .await
        .expect("sync");
    assert!(!flag.cancel);
    assert_eq!(client.job_dag(claimed.id).await.expect("read"), dag);

    let smaller = Dag {
        nodes: vec![json!({"id": "only", "status": "done"})],
        edges: vec![],
    };
    runner
        .sync_dag(claimed.id, epoch, &smaller)
        .await
        .expect("resync");
    assert_eq!(
        client.job_dag(claimed.id).await.expect("read"),
        smaller,
        "a sync replaces the DAG"
    );

    let path = format!("/api/v1/runner/jobs/{}/dag", claimed.id);
    let token = created.token.clone();
    let bad = [
        (
            json!({"nodes": [{"id": "a"}], "edges": [{"from": "a", "to": "ghost"}]}),
            "edges[0].to",
        ),
        (
            json!({"nodes": [{"id": "a"}, {"id": "a"}], "edges": []}),
            "nodes[1].id",
        ),
        (
            json!({"nodes": [{"label": "no id"}], "edges": []}),
            "nodes[0].id",
        ),
        (
            json!({"nodes": [{"id": "a"}], "edges": [{"to": "a"}]}),
            "edges[0].from",
        ),
        (json!({"nodes": "a", "edges": []}), "nodes"),
    ];
    for (body, field) in bad {
        let reply = crate::support::runner_raw(
            &server,
            &token,
            Method::PUT,
            &path,
            None,
            &body.to_string(),
        )
        .await;
        reply.assert_error(400, "invalid_input", &[field]);
    }
    assert_eq!(
        client.job_dag(claimed.id).await.expect("read"),
        smaller,
        "a refused DAG leaves the last good one"
    );
}
