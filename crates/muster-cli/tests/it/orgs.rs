//! `muster orgs ...` against a real coordinator: an organization is created (its id printed, made
//! from its name), listed, shown as JSON, given a job (`muster job submit --org`, listed with
//! `muster job list --org`) that keeps it from deletion until cancelled, and deleted; deleting
//! `default` or an unknown one fails with the coordinator's reason and a non-zero exit.

use serde_json::Value;

use crate::fleet::Coordinator;
use crate::process::{COMMAND_BOUND, admin_cli, admin_ok, run_bounded};

#[test]
fn organizations_are_created_listed_shown_and_deleted_from_the_cli() {
    let fleet = Coordinator::start();
    let url = fleet.server.base_url.clone();
    let created = admin_ok(
        &url,
        &["orgs", "create", "Acme Corp", "--no-shared-runners"],
    );
    assert_eq!(
        created.stdout.trim(),
        "acme-corp",
        "the id alone on stdout: {created:?}"
    );
    assert!(created.stderr.contains("Acme Corp"), "{created:?}");

    let listed = admin_ok(&url, &["orgs", "list"]);
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert!(lines[0].starts_with("ID"), "a header: {listed:?}");
    assert!(lines[1].starts_with("default"), "default first: {listed:?}");
    assert!(
        lines[2].starts_with("acme-corp")
            && lines[2].contains("Acme Corp")
            && lines[2].contains("refused"),
        "{listed:?}"
    );
    let shown = admin_ok(&url, &["orgs", "show", "acme-corp", "--json"]);
    let shown: Value = serde_json::from_str(&shown.stdout).expect("one JSON document");
    assert_eq!(shown["name"], "Acme Corp");
    assert_eq!(shown["allow_shared_runners"], false);

    for (id, reason) in [
        ("default", "default organization always exists"),
        ("nope", "not found"),
    ] {
        let refused = run_bounded(&mut admin_cli(&url, &["orgs", "delete", id]), COMMAND_BOUND);
        assert!(!refused.status.success(), "{refused:?}");
        assert!(refused.stderr.contains(reason), "{refused:?}");
    }
    // A job submitted to it keeps it until the job is finished.
    let submitted = admin_ok(&url, &["job", "submit", "--org", "acme-corp", "--", "true"]);
    let job = submitted.stdout.trim().to_string();
    let listed = admin_ok(&url, &["job", "list", "--org", "acme-corp", "--json"]);
    let listed: Value = serde_json::from_str(&listed.stdout).expect("one JSON document");
    assert_eq!(listed["items"][0]["id"], job.as_str(), "{listed}");
    assert_eq!(listed["items"][0]["organization_id"], "acme-corp");
    let shown = admin_ok(&url, &["job", "show", &job]);
    assert!(
        shown
            .stdout
            .lines()
            .any(|line| line.starts_with("organization") && line.ends_with("acme-corp")),
        "{shown:?}"
    );
    let runner = admin_ok(
        &url,
        &[
            "runners",
            "create",
            "acme-box",
            "--org",
            "acme-corp",
            "--json",
        ],
    );
    let runner: Value = serde_json::from_str(&runner.stdout).expect("one JSON document");
    assert_eq!(runner["runner"]["organization_id"], "acme-corp");
    let runner_id = runner["runner"]["id"].as_str().expect("an id").to_string();
    let elsewhere = admin_ok(&url, &["job", "list", "--org", "default", "--json"]);
    let elsewhere: Value = serde_json::from_str(&elsewhere.stdout).expect("one JSON document");
    assert_eq!(elsewhere["items"], serde_json::json!([]), "{elsewhere}");
    let refused = run_bounded(
        &mut admin_cli(&url, &["orgs", "delete", "acme-corp"]),
        COMMAND_BOUND,
    );
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        refused.stderr.contains("1 unfinished jobs") && refused.stderr.contains("1 runners"),
        "{refused:?}"
    );
    admin_ok(&url, &["job", "cancel", &job]);
    admin_ok(&url, &["runners", "delete", &runner_id]);
    admin_ok(&url, &["orgs", "delete", "acme-corp"]);
    let listed = admin_ok(&url, &["orgs", "list", "--json"]);
    let listed: Value = serde_json::from_str(&listed.stdout).expect("one JSON document");
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}
