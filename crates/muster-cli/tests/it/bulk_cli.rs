//! `muster job cancel-all` and `retry-all` against a real coordinator: a dry run counts and
//! changes nothing, without --yes (stdin not a terminal) nothing changes, with it every matching
//! job changes and others are left as they are; a bad time fails naming its flag.

use serde_json::Value;

use crate::fleet::Coordinator;
use crate::process::{COMMAND_BOUND, admin_cli, admin_ok, run_bounded};

fn states(url: &str, kind: &str) -> Vec<String> {
    let listed = admin_ok(url, &["job", "list", "--kind", kind, "--json"]);
    let listed: Value = serde_json::from_str(&listed.stdout).expect("one JSON document");
    listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|job| job["state"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn every_matching_job_is_cancelled_then_retried_from_the_cli_after_a_dry_run() {
    let fleet = Coordinator::start();
    let url = fleet.server.base_url.clone();
    for kind in [
        "sweep-cli",
        "sweep-cli",
        "sweep-cli",
        "sweep-cli",
        "kept-cli",
    ] {
        admin_ok(&url, &["job", "submit", "--kind", kind]);
    }

    let dry = admin_ok(
        &url,
        &["job", "cancel-all", "--kind", "sweep-cli", "--dry-run"],
    );
    assert_eq!(dry.stdout.trim(), "4 jobs would be cancelled", "{dry:?}");
    assert_eq!(states(&url, "sweep-cli"), ["pending"; 4]);

    let unasked = run_bounded(
        &mut admin_cli(&url, &["job", "cancel-all", "--kind", "sweep-cli"]),
        COMMAND_BOUND,
    );
    assert!(!unasked.status.success(), "{unasked:?}");
    assert!(unasked.stderr.contains("--yes"), "{unasked:?}");
    assert_eq!(states(&url, "sweep-cli"), ["pending"; 4], "nothing changed");

    let done = admin_ok(&url, &["job", "cancel-all", "--kind", "sweep-cli", "--yes"]);
    assert_eq!(done.stdout.trim(), "cancelled 4 jobs", "{done:?}");
    assert_eq!(states(&url, "sweep-cli"), ["cancelled"; 4]);
    assert_eq!(
        states(&url, "kept-cli"),
        ["pending"],
        "another kind is left alone"
    );

    let retried = admin_ok(
        &url,
        &[
            "job",
            "retry-all",
            "--kind",
            "sweep-cli",
            "--state",
            "cancelled",
            "--yes",
            "--json",
        ],
    );
    let retried: Value = serde_json::from_str(&retried.stdout).expect("one JSON document");
    assert_eq!(retried["changed"], 4, "{retried}");
    assert_eq!(states(&url, "sweep-cli"), ["pending"; 4]);
    let audit = admin_ok(&url, &["audit", "--action", "jobs.bulk_retried", "--json"]);
    assert!(audit.stdout.contains("jobs.bulk_retried"), "{audit:?}");

    let bad = run_bounded(
        &mut admin_cli(
            &url,
            &[
                "job",
                "cancel-all",
                "--created-before",
                "yesterday",
                "--yes",
            ],
        ),
        COMMAND_BOUND,
    );
    assert!(!bad.status.success(), "{bad:?}");
    assert!(bad.stderr.contains("--created-before"), "{bad:?}");
    assert_eq!(states(&url, "kept-cli"), ["pending"]);
}
