//! `muster workloads list|show` against a real coordinator: the table, the filters, the JSON
//! as the API answers it, a workload's containers and history, and an unknown id failing.

use muster_api::{Container, ContainerRole, ContainerStatus, CreateWorkload, WorkloadStatus};
use serde_json::Value;

use crate::fleet::Coordinator;
use crate::process::{COMMAND_BOUND, admin_cli, admin_ok, run_bounded};

fn workload(id: &str, runner: uuid::Uuid, thread: &str) -> CreateWorkload {
    CreateWorkload {
        id: id.into(),
        runner_id: runner,
        thread_id: thread.into(),
        agent_id: "agent-1".into(),
        organization_id: None,
        status: WorkloadStatus::Starting,
        status_reason: None,
        containers: vec![Container {
            container_id: "c-main".into(),
            name: "main".into(),
            role: ContainerRole::Main,
            image: "registry.example/agent:3".into(),
            status: ContainerStatus::Running,
        }],
        ziti_identity_id: String::new(),
    }
}

#[test]
fn workloads_are_listed_and_shown_from_the_cli() {
    let fleet = Coordinator::start();
    let url = fleet.server.base_url.clone();
    let created = admin_ok(&url, &["runners", "create", "wl-host", "--json"]);
    let created: Value = serde_json::from_str(&created.stdout).expect("JSON");
    let runner: uuid::Uuid = created["runner"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a runner id");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        for (id, thread) in [
            ("wl-a", "thread-1"),
            ("wl-b", "thread-1"),
            ("wl-c", "thread-2"),
        ] {
            fleet
                .client
                .create_workload(&workload(id, runner, thread))
                .await
                .expect("record a workload");
        }
        fleet
            .client
            .update_workload_status(
                "wl-a",
                &muster_api::UpdateWorkloadStatus {
                    status: WorkloadStatus::Running,
                    containers: None,
                    status_reason: Some("all containers up".into()),
                },
            )
            .await
            .expect("report a status");
    });

    let table = admin_ok(&url, &["workloads", "list", "--thread", "thread-1"]);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("ID"), "{table:?}");
    assert_eq!(lines.len(), 3, "a header and two workloads: {table:?}");
    assert!(
        lines[1].starts_with("wl-b") && lines[2].starts_with("wl-a"),
        "newest first: {table:?}"
    );
    assert!(
        lines[2].contains("running (stale: runner offline)"),
        "a runner that never beat is offline: {table:?}"
    );

    let json = admin_ok(
        &url,
        &["workloads", "list", "--status", "running", "--json"],
    );
    let json: Value = serde_json::from_str(&json.stdout).expect("JSON");
    let items = json["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{json}");
    assert_eq!(items[0]["id"], "wl-a");

    let paged = admin_ok(&url, &["workloads", "list", "--limit", "1"]);
    assert!(
        paged.stderr.contains("--cursor"),
        "the next page is named: {paged:?}"
    );

    let shown = admin_ok(&url, &["workloads", "show", "wl-a"]);
    for expected in [
        "wl-a",
        "all containers up",
        "c-main",
        "registry.example/agent:3",
        "starting",
        "running",
    ] {
        assert!(shown.stdout.contains(expected), "{expected}: {shown:?}");
    }
    let shown = admin_ok(&url, &["workloads", "show", "wl-a", "--json"]);
    let shown: Value = serde_json::from_str(&shown.stdout).expect("JSON");
    assert_eq!(
        shown["history"].as_array().map(Vec::len),
        Some(2),
        "{shown}"
    );

    let unknown = run_bounded(
        &mut admin_cli(&url, &["workloads", "show", "wl-none"]),
        COMMAND_BOUND,
    );
    assert!(!unknown.status.success(), "{unknown:?}");
    assert!(unknown.stderr.contains("not found"), "{unknown:?}");
    let bad = run_bounded(
        &mut admin_cli(&url, &["workloads", "list", "--status", "sleeping"]),
        COMMAND_BOUND,
    );
    assert!(
        !bad.status.success() && bad.stderr.contains("sleeping"),
        "{bad:?}"
    );
}
