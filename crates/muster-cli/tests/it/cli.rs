//! The command line of `muster server`: help, bad flags, the generated admin token, and one
//! process per data directory.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use crate::process::{ADMIN_TOKEN, ServerProcess, muster};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn non_empty_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .collect()
}

#[test]
fn server_help_explains_every_flag() {
    let output = muster()
        .args(["server", "--help"])
        .output()
        .expect("run muster server --help");
    assert!(output.status.success(), "{output:?}");
    let help = text(&output.stdout);
    for expected in [
        "--listen",
        "--data-dir",
        "--database",
        "127.0.0.1:7070",
        "MUSTER_LISTEN",
        "MUSTER_DATA_DIR",
        "MUSTER_DATABASE_URL",
        "port 0",
        "--retain-finished-jobs",
        "MUSTER_RETAIN_FINISHED_JOBS",
        "--tls-cert",
        "--tls-key",
        "MUSTER_TLS_CERT",
    ] {
        assert!(
            help.contains(expected),
            "help mentions {expected:?}:\n{help}"
        );
    }
    let top = muster().arg("--help").output().expect("run muster --help");
    assert!(top.status.success());
    assert!(
        text(&top.stdout).contains("server"),
        "the top level lists the server command"
    );
}

/// Runs `muster server` with `args` (and a throwaway data directory) and expects it to refuse.
fn refused(args: &[&str]) -> (Output, String) {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let output = muster()
        .args(["server", "--data-dir"])
        .arg(data_dir.path())
        .args(args)
        .env("MUSTER_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run muster server");
    assert!(
        !output.status.success(),
        "{args:?} must be refused: {output:?}"
    );
    assert!(
        !text(&output.stdout).contains("listening on"),
        "{args:?} must not start serving"
    );
    let stderr = text(&output.stderr);
    (output, stderr)
}

#[test]
fn a_bad_listen_address_exits_non_zero_with_one_clear_line() {
    let (output, stderr) = refused(&["--listen", "nonsense"]);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let lines = non_empty_lines(&stderr);
    assert_eq!(lines.len(), 1, "exactly one error line: {stderr:?}");
    let line = lines[0];
    assert!(line.starts_with("error:"), "{line}");
    assert!(line.contains("--listen"), "names the flag: {line}");
    assert!(line.contains("nonsense"), "names the value: {line}");
}

#[test]
fn bad_setting_values_are_refused_with_the_setting_named() {
    for (args, names) in [
        (
            &["--max-body-bytes", "10"][..],
            &["--max-body-bytes", "1024"][..],
        ),
        (
            &["--heartbeat-interval-ms", "5"],
            &["--heartbeat-interval-ms"],
        ),
        (&["--reap-interval-ms", "0"], &["--reap-interval-ms"]),
        (
            &["--retain-finished-jobs", "a while"],
            &["--retain-finished-jobs", "a while", "forever"],
        ),
        // Nothing listens on port 1: the store cannot be opened, and the line says which.
        (
            &[
                "--database",
                "postgres://127.0.0.1:1/muster",
                "--database-wait",
                "0",
            ],
            &["--database", "PostgreSQL", "127.0.0.1:1", "--database-wait"],
        ),
        (
            &[
                "--database",
                "postgres://127.0.0.1:1/muster",
                "--database-wait",
                "soon",
            ],
            &["--database-wait", "soon"],
        ),
        (&["--database", "mysql://x"], &["--database", "mysql://x"]),
        (&["--listen", "127.0.0.1:99999"], &["--listen"]),
    ] {
        let (_, stderr) = refused(args);
        let lines = non_empty_lines(&stderr);
        assert_eq!(lines.len(), 1, "{args:?}: one error line: {stderr:?}");
        for name in names {
            assert!(
                lines[0].contains(name),
                "{args:?}: names {name:?}: {}",
                lines[0]
            );
        }
    }
    // Coordinators sharing a PostgreSQL database must share an admin token: none given is
    // refused before anything connects.
    let data_dir = tempfile::tempdir().expect("a data directory");
    let output = muster()
        .args(["server", "--data-dir"])
        .arg(data_dir.path())
        .args(["--database", "postgres://127.0.0.1:1/muster"])
        .env_remove("MUSTER_ADMIN_TOKEN")
        .output()
        .expect("run muster server");
    assert!(!output.status.success(), "{output:?}");
    let stderr = text(&output.stderr);
    let lines = non_empty_lines(&stderr);
    assert_eq!(lines.len(), 1, "one error line: {stderr:?}");
    assert!(
        lines[0].contains("MUSTER_ADMIN_TOKEN") && lines[0].contains("PostgreSQL"),
        "{}",
        lines[0]
    );
    // Values clap cannot parse at all: its own error, first line naming the flag.
    let (output, stderr) = refused(&["--max-body-bytes", "lots"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "usage errors exit 2: {stderr}"
    );
    let first = non_empty_lines(&stderr)[0];
    assert!(first.starts_with("error:"), "{first}");
    assert!(
        first.contains("--max-body-bytes") && first.contains("lots"),
        "{first}"
    );
    let (_, stderr) = refused(&["--no-such-flag"]);
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

#[test]
fn a_short_admin_token_is_refused() {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let output = muster()
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path())
        .env("MUSTER_ADMIN_TOKEN", "short")
        .output()
        .expect("run muster server");
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert_eq!(non_empty_lines(&stderr).len(), 1, "{stderr}");
    assert!(stderr.contains("MUSTER_ADMIN_TOKEN"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_token_one_is_generated_private_and_kept_across_restarts() {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let mut server = ServerProcess::start(data_dir.path(), None);
    let path = data_dir.path().join("admin.token");
    let token = std::fs::read_to_string(&path)
        .expect("the generated token is in <data-dir>/admin.token")
        .trim()
        .to_string();
    assert!(token.len() >= 32, "a long random token: {token:?}");
    let mode = std::fs::metadata(&path)
        .expect("stat admin.token")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "only its owner may read it");
    assert!(
        !server.stderr().contains(&token),
        "the token is not printed to the log"
    );
    let client = server.client(&token);
    client
        .list_jobs(&Default::default())
        .await
        .expect("the generated token is the admin token");
    let wrong = server.client(ADMIN_TOKEN);
    let refused = wrong
        .list_jobs(&Default::default())
        .await
        .expect_err("another token is not");
    assert_eq!(refused.status(), Some(401));
    server.kill();

    let server = ServerProcess::start(data_dir.path(), None);
    let again = std::fs::read_to_string(&path).expect("still there");
    assert_eq!(again.trim(), token, "a restart keeps the token");
    server
        .client(&token)
        .list_jobs(&Default::default())
        .await
        .expect("the same token works after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let first = ServerProcess::start(data_dir.path(), Some(ADMIN_TOKEN));
    let output = muster()
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path())
        .env("MUSTER_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run a second muster server");
    assert!(!output.status.success(), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("in use"),
        "says the data is in use: {stderr}"
    );
    first
        .client(ADMIN_TOKEN)
        .ready()
        .await
        .expect("the first server is unharmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_promptly_even_with_a_long_poll_open() {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let mut server = ServerProcess::start(data_dir.path(), Some(ADMIN_TOKEN));
    let client = server.client(ADMIN_TOKEN);
    let registered = client
        .create_runner(&muster_api::CreateRunner {
            name: "poller".into(),
            ..Default::default()
        })
        .await
        .expect("register a runner");
    let runner = muster_client::RunnerClient::new(&server.base_url, &registered.token)
        .expect("a runner client");
    let poll = tokio::spawn(async move {
        runner
            .claim_job(&muster_api::ClaimJobs {
                kinds: vec!["nothing-comes".into()],
                wait_ms: Some(60_000),
                ..Default::default()
            })
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let status =
        tokio::task::block_in_place(|| server.terminate(std::time::Duration::from_secs(10)))
            .unwrap_or_else(|| {
                panic!(
                    "muster server did not exit within 10 s of SIGTERM; stderr:\n{}",
                    server.stderr()
                )
            });
    assert!(
        status.success(),
        "a SIGTERM stop is a clean exit: {status:?}"
    );
    let answer = poll.await.expect("the claim task");
    if let Err(error) = answer {
        assert!(
            error.is_transient(),
            "the long poll ends as unavailable: {error}"
        );
    }
}
