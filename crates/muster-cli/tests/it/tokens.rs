//! The README's walkthrough of user tokens, command by command, against a real coordinator: an
//! organization, a viewer token and a submitter token; `muster whoami` names the role and the
//! organization; the submitter's job lands in its organization; the viewer sees that job and not
//! the other organization's, and is refused a cancel that names the role it needs; the
//! submitter cancels; `muster tokens list` shows the tokens but never a token itself; a revoked
//! token fails at its next command.

use serde_json::Value;

use crate::fleet::Coordinator;
use crate::process::{COMMAND_BOUND, admin_ok, cli_with_token as as_token, run_bounded};

#[test]
fn the_readme_walkthrough_of_user_tokens_works_from_the_cli() {
    let fleet = Coordinator::start();
    let url = fleet.server.base_url.clone();
    let created = admin_ok(&url, &["orgs", "create", "Team A"]);
    assert_eq!(created.stdout.trim(), "team-a", "{created:?}");
    let other_job = admin_ok(&url, &["job", "submit", "--", "echo", "default's job"])
        .stdout
        .trim()
        .to_string();
    let viewer = admin_ok(
        &url,
        &[
            "tokens", "create", "alice", "--role", "viewer", "--org", "team-a",
        ],
    );
    let viewer_token = viewer.stdout.trim().to_string();
    assert!(viewer_token.starts_with("muster_user_"), "{viewer:?}");
    assert!(
        viewer.stderr.contains("shown this once"),
        "the note says to keep it: {viewer:?}"
    );
    let submitter = admin_ok(
        &url,
        &[
            "tokens",
            "create",
            "ci",
            "--role",
            "submitter",
            "--org",
            "team-a",
            "--expires-in",
            "90d",
        ],
    );
    let submitter_token = submitter.stdout.trim().to_string();

    let whoami = run_bounded(
        &mut as_token(&url, &submitter_token, &["whoami"]),
        COMMAND_BOUND,
    );
    assert!(whoami.status.success(), "{whoami:?}");
    assert!(
        whoami
            .stdout
            .lines()
            .any(|line| line.starts_with("role") && line.ends_with("submitter")),
        "{whoami:?}"
    );
    assert!(
        whoami
            .stdout
            .lines()
            .any(|line| line.starts_with("organization") && line.ends_with("team-a")),
        "{whoami:?}"
    );

    let submitted = run_bounded(
        &mut as_token(
            &url,
            &submitter_token,
            &["job", "submit", "--", "echo", "hello"],
        ),
        COMMAND_BOUND,
    );
    assert!(submitted.status.success(), "{submitted:?}");
    let job = submitted.stdout.trim().to_string();

    let listed = run_bounded(
        &mut as_token(&url, &viewer_token, &["job", "list", "--json"]),
        COMMAND_BOUND,
    );
    assert!(listed.status.success(), "{listed:?}");
    let listed: Value = serde_json::from_str(&listed.stdout).expect("one JSON document");
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["id"].as_str())
        .collect();
    assert_eq!(ids, [job.as_str()], "team-a's job only: {listed}");
    assert_eq!(listed["items"][0]["organization_id"], "team-a");
    let hidden = run_bounded(
        &mut as_token(&url, &viewer_token, &["job", "show", &other_job]),
        COMMAND_BOUND,
    );
    assert!(!hidden.status.success(), "{hidden:?}");
    assert!(hidden.stderr.contains("not found"), "{hidden:?}");

    let refused = run_bounded(
        &mut as_token(&url, &viewer_token, &["job", "cancel", &job]),
        COMMAND_BOUND,
    );
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        refused.stderr.contains("submitter"),
        "the refusal names the role it needs: {refused:?}"
    );
    let cancelled = run_bounded(
        &mut as_token(&url, &submitter_token, &["job", "cancel", &job]),
        COMMAND_BOUND,
    );
    assert!(cancelled.status.success(), "{cancelled:?}");
    let shown = admin_ok(&url, &["job", "show", &job, "--json"]);
    let shown: Value = serde_json::from_str(&shown.stdout).expect("one JSON document");
    assert_eq!(shown["state"], "cancelled");

    let tokens = admin_ok(&url, &["tokens", "list"]);
    assert!(
        tokens.stdout.contains("alice") && tokens.stdout.contains("ci"),
        "{tokens:?}"
    );
    assert!(
        !tokens.stdout.contains(&viewer_token) && !tokens.stdout.contains(&submitter_token),
        "never the tokens themselves: {tokens:?}"
    );
    let listed = admin_ok(&url, &["tokens", "list", "--org", "team-a", "--json"]);
    let listed: Value = serde_json::from_str(&listed.stdout).expect("one JSON document");
    let alice = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|token| token["name"] == "alice")
        .cloned()
        .expect("alice's token");
    assert!(
        alice["last_used_at"].is_string(),
        "used, so it says when: {alice}"
    );
    let alice_id = alice["id"].as_str().expect("an id").to_string();
    let revoked = admin_ok(&url, &["tokens", "revoke", &alice_id]);
    assert!(revoked.stderr.contains("revoked"), "{revoked:?}");
    let after = run_bounded(
        &mut as_token(&url, &viewer_token, &["job", "list"]),
        COMMAND_BOUND,
    );
    assert!(!after.status.success(), "{after:?}");
    assert!(after.stderr.contains("revoked"), "{after:?}");
}
