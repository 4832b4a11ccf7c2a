//! The workload registry over HTTP (`/api/v1/workloads`): record, read, list by thread and
//! status a page at a time, report statuses forward only with a history, delete; the errors a
//! caller can hit; organizations kept apart; a deleted runner's workloads failed and an offline
//! runner's marked stale.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{admin, create_organization, request, send, start};

fn workload_body(id: &str, runner: &str, thread: &str) -> Value {
    json!({
        "id": id,
        "runner_id": runner,
        "thread_id": thread,
        "agent_id": "agent-1",
        "status": "starting",
        "containers": [
            {"container_id": "c1", "name": "main", "role": "main", "image": "agent:1", "status": "waiting"}
        ],
        "ziti_identity_id": "ziti-9"
    })
}

#[tokio::test]
async fn a_workload_is_recorded_reported_listed_and_deleted() {
    let server = start().await;
    let (created, runner) = server.runner("host").await.expect("runner");
    let runner_id = created.runner.id.to_string();
    runner
        .heartbeat(&muster_client::api::RunnerHeartbeat::default())
        .await
        .expect("heartbeat");

    let reply = admin(
        &server,
        Method::POST,
        "/api/v1/workloads",
        Some(workload_body("wl-1", &runner_id, "thread-a")),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let workload = reply.json();
    assert_eq!(workload["id"], "wl-1");
    assert_eq!(workload["runner_id"], runner_id.as_str());
    assert_eq!(workload["organization_id"], "default");
    assert_eq!(workload["status"], "starting");
    assert_eq!(workload["containers"][0]["role"], "main");
    assert_eq!(workload["ziti_identity_id"], "ziti-9");
    assert_eq!(workload["stale"], false, "its runner is online: {workload}");
    let fetched = admin(&server, Method::GET, "/api/v1/workloads/wl-1", None).await;
    assert_eq!(fetched.json(), workload);

    for n in 2..=4 {
        let reply = admin(
            &server,
            Method::POST,
            "/api/v1/workloads",
            Some(workload_body(
                &format!("wl-{n}"),
                &runner_id,
                if n == 4 { "thread-b" } else { "thread-a" },
            )),
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }

    let running = admin(
        &server,
        Method::POST,
        "/api/v1/workloads/wl-1/status",
        Some(json!({"status": "running", "containers": [
            {"container_id": "c1", "name": "main", "role": "main", "image": "agent:1", "status": "running"},
            {"container_id": "c2", "name": "proxy", "role": "sidecar", "image": "proxy:2", "status": "running"}
        ]})),
    )
    .await;
    assert_eq!(running.status, 200, "{}", running.body);
    assert_eq!(
        running.json()["containers"].as_array().map(Vec::len),
        Some(2)
    );
    admin(
        &server,
        Method::POST,
        "/api/v1/workloads/wl-1/status",
        Some(json!({"status": "starting"})),
    )
    .await
    .assert_error(409, "invalid_state", &["running", "starting"]);

    // By thread, a page at a time, newest first; by status.
    let first = admin(
        &server,
        Method::GET,
        "/api/v1/workloads?thread_id=thread-a&limit=2",
        None,
    )
    .await
    .json();
    let ids: Vec<&str> = first["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|w| w["id"].as_str())
        .collect();
    assert_eq!(ids, ["wl-3", "wl-2"]);
    let cursor = first["next_cursor"].as_str().expect("another page");
    let second = admin(
        &server,
        Method::GET,
        &format!("/api/v1/workloads?thread_id=thread-a&limit=2&cursor={cursor}"),
        None,
    )
    .await
    .json();
    assert_eq!(second["items"][0]["id"], "wl-1");
    assert!(second["next_cursor"].is_null(), "{second}");
    let running_ones = admin(
        &server,
        Method::GET,
        "/api/v1/workloads?status=running,stopping",
        None,
    )
    .await
    .json();
    assert_eq!(
        running_ones["items"].as_array().map(Vec::len),
        Some(1),
        "{running_ones}"
    );
    admin(
        &server,
        Method::GET,
        "/api/v1/workloads?status=sleeping",
        None,
    )
    .await
    .assert_error(400, "invalid_input", &["status", "sleeping"]);

    admin(
        &server,
        Method::POST,
        "/api/v1/workloads/wl-1/status",
        Some(json!({"status": "stopped", "status_reason": "done"})),
    )
    .await;
    let history = admin(&server, Method::GET, "/api/v1/workloads/wl-1/history", None)
        .await
        .json();
    let statuses: Vec<&str> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|change| change["status"].as_str())
        .collect();
    assert_eq!(statuses, ["starting", "running", "stopped"]);
    assert_eq!(history["items"][2]["reason"], "done");

    let deleted = admin(&server, Method::DELETE, "/api/v1/workloads/wl-1", None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    admin(&server, Method::GET, "/api/v1/workloads/wl-1", None)
        .await
        .assert_error(404, "not_found", &["wl-1"]);
    admin(&server, Method::DELETE, "/api/v1/workloads/wl-1", None)
        .await
        .assert_error(404, "not_found", &["wl-1"]);
}

#[tokio::test]
async fn bad_workload_requests_are_refused_and_record_nothing() {
    let server = start().await;
    let (created, _) = server.runner("host").await.expect("runner");
    let runner_id = created.runner.id.to_string();
    let post = |body: Value| admin(&server, Method::POST, "/api/v1/workloads", Some(body));

    post(workload_body("has/slash", &runner_id, "t"))
        .await
        .assert_error(400, "invalid_input", &["id"]);
    post(workload_body(&"x".repeat(129), &runner_id, "t"))
        .await
        .assert_error(400, "invalid_input", &["id"]);
    post(workload_body(
        "w",
        "01900000-0000-7000-8000-000000000000",
        "t",
    ))
    .await
    .assert_error(404, "not_found", &["runner"]);
    let mut twice = workload_body("w", &runner_id, "t");
    twice["containers"] = json!([
        {"container_id": "c", "role": "main", "status": "running"},
        {"container_id": "c", "role": "init", "status": "terminated"}
    ]);
    post(twice)
        .await
        .assert_error(400, "invalid_input", &["containers[1].container_id"]);
    let mut bad_role = workload_body("w", &runner_id, "t");
    bad_role["containers"][0]["role"] = json!("boss");
    post(bad_role)
        .await
        .assert_error(400, "invalid_input", &["role"]);
    let mut elsewhere = workload_body("w", &runner_id, "t");
    elsewhere["organization_id"] = json!("no-such-org");
    post(elsewhere)
        .await
        .assert_error(404, "organization_not_found", &["no-such-org"]);
    let listed = admin(&server, Method::GET, "/api/v1/workloads", None)
        .await
        .json();
    assert_eq!(listed["items"], json!([]), "nothing was recorded");

    assert_eq!(post(workload_body("w", &runner_id, "t")).await.status, 201);
    post(workload_body("w", &runner_id, "other"))
        .await
        .assert_error(409, "conflict", &["w"]);
    admin(
        &server,
        Method::POST,
        "/api/v1/workloads/w/status",
        Some(json!({"status": "paused"})),
    )
    .await
    .assert_error(400, "invalid_input", &["status"]);
    admin(
        &server,
        Method::POST,
        "/api/v1/workloads/nope/status",
        Some(json!({"status": "running"})),
    )
    .await
    .assert_error(404, "not_found", &["nope"]);
}

#[tokio::test]
async fn organizations_keep_their_workloads_and_runners_apart() {
    let server = start().await;
    let team_a = create_organization(&server, "wl-team-a").await;
    let team_b = create_organization(&server, "wl-team-b").await;
    let runner_a = admin(
        &server,
        Method::POST,
        "/api/v1/runners",
        Some(json!({"name": "runner-a", "organization_id": team_a})),
    )
    .await
    .json()["runner"]["id"]
        .as_str()
        .expect("runner id")
        .to_string();
    let mint = |name: &str, role: &str, organization: &str| {
        let body = json!({"name": name, "role": role, "organization_id": organization});
        let server = &server;
        async move {
            admin(server, Method::POST, "/api/v1/admin/tokens", Some(body))
                .await
                .json()["token"]
                .as_str()
                .expect("token")
                .to_string()
        }
    };
    let operator_a = mint("op-a", "operator", &team_a).await;
    let operator_b = mint("op-b", "operator", &team_b).await;
    let viewer_a = mint("viewer-a", "viewer", &team_a).await;

    // A runner of team-a hosts team-a's workloads, whoever records them.
    let recorded = send(
        request(
            &server,
            Method::POST,
            "/api/v1/workloads",
            Some(&operator_a),
        )
        .json(&workload_body("wl-a", &runner_a, "t")),
    )
    .await;
    assert_eq!(recorded.status, 201, "{}", recorded.body);
    assert_eq!(recorded.json()["organization_id"], team_a.as_str());
    let mut for_b = workload_body("wl-b", &runner_a, "t");
    for_b["organization_id"] = json!(team_b);
    admin(&server, Method::POST, "/api/v1/workloads", Some(for_b))
        .await
        .assert_error(400, "invalid_input", &["organization_id", &team_a]);

    // Team b finds neither the runner nor the workload; a viewer of a reads but cannot write.
    send(
        request(
            &server,
            Method::POST,
            "/api/v1/workloads",
            Some(&operator_b),
        )
        .json(&workload_body("wl-b", &runner_a, "t")),
    )
    .await
    .assert_error(404, "not_found", &["runner"]);
    for path in ["/api/v1/workloads/wl-a", "/api/v1/workloads/wl-a/history"] {
        send(request(&server, Method::GET, path, Some(&operator_b)))
            .await
            .assert_error(404, "not_found", &["wl-a"]);
    }
    send(
        request(
            &server,
            Method::POST,
            "/api/v1/workloads/wl-a/status",
            Some(&operator_b),
        )
        .json(&json!({"status": "running"})),
    )
    .await
    .assert_error(404, "not_found", &["wl-a"]);
    let listed_b = send(request(
        &server,
        Method::GET,
        "/api/v1/workloads",
        Some(&operator_b),
    ))
    .await
    .json();
    assert_eq!(listed_b["items"], json!([]), "{listed_b}");
    let seen_by_a = send(request(
        &server,
        Method::GET,
        "/api/v1/workloads/wl-a",
        Some(&viewer_a),
    ))
    .await;
    assert_eq!(seen_by_a.status, 200, "{}", seen_by_a.body);
    send(request(
        &server,
        Method::DELETE,
        "/api/v1/workloads/wl-a",
        Some(&viewer_a),
    ))
    .await
    .assert_error(403, "forbidden", &["operator"]);
}

#[tokio::test]
async fn a_deleted_runners_workloads_fail_and_a_silent_runners_are_stale() {
    let server = start().await;
    let (created, runner) = server.runner("mortal").await.expect("runner");
    let runner_id = created.runner.id.to_string();
    let silent = admin(
        &server,
        Method::POST,
        "/api/v1/workloads",
        Some(workload_body("wl-silent", &runner_id, "t")),
    )
    .await
    .json();
    assert_eq!(
        silent["stale"], true,
        "a runner that never said it is alive: {silent}"
    );
    runner
        .heartbeat(&muster_client::api::RunnerHeartbeat::default())
        .await
        .expect("heartbeat");
    let alive = admin(&server, Method::GET, "/api/v1/workloads/wl-silent", None)
        .await
        .json();
    assert_eq!(alive["stale"], false, "{alive}");

    let deleted = admin(
        &server,
        Method::DELETE,
        &format!("/api/v1/runners/{runner_id}"),
        None,
    )
    .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let failed = admin(&server, Method::GET, "/api/v1/workloads/wl-silent", None)
        .await
        .json();
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["status_reason"], "runner_deleted");
    assert_eq!(
        failed["stale"], false,
        "a finished workload is not waiting on anyone"
    );
}

#[tokio::test]
async fn a_runner_records_and_reports_its_own_workloads_and_no_other_runners() {
    let server = start().await;
    let (me, runner) = server.runner("self-reporter").await.expect("runner");
    let (other, other_runner) = server.runner("other").await.expect("another runner");
    let own = |id: &str, runner_id: uuid::Uuid| muster_client::api::CreateWorkload {
        id: id.into(),
        runner_id,
        thread_id: "t".into(),
        agent_id: String::new(),
        organization_id: None,
        status: muster_client::api::WorkloadStatus::Starting,
        status_reason: None,
        containers: Vec::new(),
        ziti_identity_id: String::new(),
    };
    let recorded = runner
        .record_workload(&own("wl-own", me.runner.id))
        .await
        .expect("record its own workload");
    assert_eq!(recorded.runner_id, me.runner.id);
    let reported = runner
        .report_workload(
            "wl-own",
            &muster_client::api::UpdateWorkloadStatus {
                status: muster_client::api::WorkloadStatus::Running,
                containers: None,
                status_reason: None,
            },
        )
        .await
        .expect("report it running");
    assert_eq!(reported.status, muster_client::api::WorkloadStatus::Running);

    // Another runner's id, and another runner's workload, are not there for it.
    let refused = runner
        .record_workload(&own("wl-theirs", other.runner.id))
        .await
        .expect_err("a workload for another runner");
    assert!(refused.to_string().contains("not found"), "{refused}");
    other_runner
        .record_workload(&own("wl-other", other.runner.id))
        .await
        .expect("the other runner records its own");
    let hidden = runner
        .report_workload(
            "wl-other",
            &muster_client::api::UpdateWorkloadStatus {
                status: muster_client::api::WorkloadStatus::Failed,
                containers: None,
                status_reason: None,
            },
        )
        .await
        .expect_err("another runner's workload");
    assert!(hidden.to_string().contains("not found"), "{hidden}");
    runner
        .remove_workload("wl-other")
        .await
        .expect_err("removing another runner's workload");
    let untouched = admin(&server, Method::GET, "/api/v1/workloads/wl-other", None)
        .await
        .json();
    assert_eq!(untouched["status"], "starting", "{untouched}");

    runner
        .remove_workload("wl-own")
        .await
        .expect("remove its own");
    admin(&server, Method::GET, "/api/v1/workloads/wl-own", None)
        .await
        .assert_error(404, "not_found", &["wl-own"]);
}
