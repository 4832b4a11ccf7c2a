//! `muster runner keygen PATH`: a key file only its owner can read, in the format bakeoff (and
//! Python's `cryptography`) reads, never overwritten by accident; and the allowlist
//! (`muster runners keys ...`) and `muster audit` against a real coordinator.

use std::os::unix::fs::PermissionsExt;

use muster_core::identity::RunnerSigningKey;

use std::time::Duration;

use serde_json::Value;

use crate::fleet::Coordinator;
use crate::process::{ADMIN_TOKEN, CliOutput, muster, run_bounded};

fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The value after `label` on its line of the command's output.
fn printed(stdout: &str, label: &str) -> String {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .map(|rest| rest.trim().to_string())
        .unwrap_or_else(|| panic!("{label} in:\n{stdout}"))
}

/// `muster runner keygen PATH`, run to the end.
fn keygen(path: &std::path::Path) -> std::process::Output {
    muster()
        .args(["runner", "keygen"])
        .arg(path)
        .output()
        .expect("run muster runner keygen")
}

#[test]
fn keygen_writes_a_private_pkcs8_key_and_prints_what_to_allow() {
    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("runner.pem");
    let output = keygen(&path);
    assert!(output.status.success(), "{output:?}");
    let mode = std::fs::metadata(&path)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may read the key");

    let pem = std::fs::read_to_string(&path).expect("read key");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    let key = RunnerSigningKey::from_pkcs8_pem(&pem).expect("an Ed25519 PKCS#8 key");
    let stdout = stdout_of(&output);
    assert_eq!(
        printed(&stdout, "fingerprint:"),
        key.public_key().fingerprint()
    );
    assert_eq!(
        printed(&stdout, "public key:"),
        key.public_key().to_base64()
    );
    assert!(
        !stdout.contains(pem.lines().nth(1).expect("body")),
        "the secret is never printed"
    );
    assert!(
        std::fs::read_dir(directory.path()).expect("list").count() == 1,
        "no temporary file is left behind"
    );
}

#[test]
fn keygen_never_overwrites_a_key_without_force() {
    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("runner.pem");
    let first = keygen(&path);
    assert!(first.status.success(), "{first:?}");
    let original = std::fs::read_to_string(&path).expect("read");

    let second = keygen(&path);
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), original);

    let forced = muster()
        .args(["runner", "keygen", "--force"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(forced.status.success(), "{forced:?}");
    assert_ne!(std::fs::read_to_string(&path).expect("read"), original);
}

#[test]
fn keygen_into_a_missing_directory_fails_naming_the_path() {
    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("no/such/dir/runner.pem");
    let output = keygen(&path);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no/such/dir"), "{stderr}");
}

/// bakeoff reads its key with `cryptography`'s `load_pem_private_key`: so must it read ours, to
/// the same public key. Needs the test venv (`bash .ci/run` makes it).
#[test]
fn python_cryptography_reads_the_key_keygen_writes() {
    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("runner.pem");
    let output = keygen(&path);
    assert!(output.status.success(), "{output:?}");
    let expected_public_key = printed(&stdout_of(&output), "public key:");

    let python = muster_test_support::test_python();
    let script = r#"
import base64, sys
from cryptography.hazmat.primitives import serialization
with open(sys.argv[1], "rb") as f:
    key = serialization.load_pem_private_key(f.read(), password=None)
raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
print(base64.b64encode(raw).decode())
"#;
    let read = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("run python");
    assert!(
        read.status.success(),
        "python could not read the key: {}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert_eq!(stdout_of(&read).trim(), expected_public_key);
}

fn cli_ok(server: &str, args: &[&str]) -> CliOutput {
    let mut command = muster();
    command
        .args(args)
        .env("MUSTER_SERVER", server)
        .env("MUSTER_TOKEN", ADMIN_TOKEN);
    let output = run_bounded(&mut command, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "muster {args:?} failed: {output:?}"
    );
    output
}

fn json_of(output: &CliOutput) -> Value {
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("stdout is one JSON document ({error}): {output:?}"))
}

#[test]
fn a_generated_key_is_allowed_listed_removed_and_audited_with_the_cli() {
    let fleet = Coordinator::start();
    let url = fleet.server.base_url.clone();
    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("runner.pem");
    let generated = keygen(&path);
    assert!(generated.status.success(), "{generated:?}");
    let stdout = stdout_of(&generated);
    let public_key = printed(&stdout, "public key:");
    let fingerprint = printed(&stdout, "fingerprint:");

    let added = cli_ok(
        &url,
        &["runners", "keys", "add", &public_key, "--note", "gpu-box-1"],
    );
    assert_eq!(
        added.stdout.trim(),
        fingerprint,
        "stdout is the fingerprint alone"
    );
    assert!(added.stderr.contains("added"), "{added:?}");
    let again = cli_ok(&url, &["runners", "keys", "add", &public_key]);
    assert!(again.stderr.contains("already"), "{again:?}");

    let listed = json_of(&cli_ok(&url, &["runners", "keys", "list", "--json"]));
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["fingerprint"], fingerprint.as_str());
    assert_eq!(items[0]["note"], "gpu-box-1");
    let table = cli_ok(&url, &["runners", "keys", "list"]);
    assert!(
        table.stdout.contains(&fingerprint) && table.stdout.contains("gpu-box-1"),
        "{table:?}"
    );

    cli_ok(&url, &["runners", "keys", "remove", &fingerprint]);
    let listed = json_of(&cli_ok(&url, &["runners", "keys", "list", "--json"]));
    assert_eq!(listed["items"], serde_json::json!([]));

    let audit = json_of(&cli_ok(&url, &["audit", "--json"]));
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|entry| entry["action"].as_str())
        .collect();
    assert_eq!(actions, ["runner_key.removed", "runner_key.added"]);
    let table = cli_ok(&url, &["audit", "--action", "runner_key.added"]);
    assert!(
        table.stdout.contains("runner_key.added") && !table.stdout.contains("runner_key.removed"),
        "{table:?}"
    );

    // Removing a key that is not there fails, naming it.
    let mut command = muster();
    command
        .args(["runners", "keys", "remove", &fingerprint])
        .env("MUSTER_SERVER", &url)
        .env("MUSTER_TOKEN", ADMIN_TOKEN);
    let missing = run_bounded(&mut command, Duration::from_secs(60));
    assert!(!missing.status.success());
    assert!(missing.stderr.contains(&fingerprint), "{missing:?}");
}

#[test]
fn kind_rules_are_set_shown_listed_and_deleted_with_the_cli() {
    let fleet = Coordinator::start();
    let url = fleet.server.base_url.clone();
    let directory = tempfile::tempdir().expect("temp dir");
    let schema_path = directory.path().join("score.schema.json");
    std::fs::write(&schema_path, r#"{"type": "object", "required": ["score"]}"#)
        .expect("write schema");
    let schema_arg = schema_path.to_string_lossy().into_owned();

    let set = json_of(&cli_ok(
        &url,
        &[
            "kinds",
            "set",
            "bench",
            "--schema",
            &schema_arg,
            "--require-signed-results",
            "--json",
        ],
    ));
    assert_eq!(set["kind"], "bench");
    assert_eq!(
        set["result_schema"]["required"],
        serde_json::json!(["score"])
    );
    assert_eq!(set["require_signed_results"], true);

    let shown = cli_ok(&url, &["kinds", "show", "bench"]);
    assert!(
        shown.stdout.contains("require signed results  true"),
        "{shown:?}"
    );
    assert!(shown.stdout.contains("\"required\""), "{shown:?}");
    let listed = json_of(&cli_ok(&url, &["kinds", "list", "--json"]));
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    // A schema file that is not JSON fails before anything is sent, naming the file.
    let broken = directory.path().join("broken.json");
    std::fs::write(&broken, "{not json").expect("write");
    let mut command = muster();
    command
        .args(["kinds", "set", "bench", "--schema"])
        .arg(&broken)
        .env("MUSTER_SERVER", &url)
        .env("MUSTER_TOKEN", ADMIN_TOKEN);
    let refused = run_bounded(&mut command, Duration::from_secs(60));
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("broken.json"), "{refused:?}");

    cli_ok(&url, &["kinds", "delete", "bench"]);
    let listed = json_of(&cli_ok(&url, &["kinds", "list", "--json"]));
    assert_eq!(listed["items"], serde_json::json!([]));
}
