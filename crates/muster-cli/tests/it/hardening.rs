//! `muster server` as a process under conditions an operator's machine brings: a log destination
//! that goes away, a low open-file limit with a flood of idle connections, and data files that
//! hold payloads, results and logs.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use muster_api::{ClaimJobs, CreateRunner, SubmitJob};
use muster_client::RunnerClient;

use crate::process::{ADMIN_TOKEN, KillOnDrop, ServerProcess, muster, muster_with_ulimit};

/// How the coordinator is used before its log pipe is closed.
#[derive(Debug, Clone, Copy)]
enum Before {
    Nothing,
    /// Hundreds of requests at debug level, so log lines keep coming after the pipe is gone.
    Load,
}

/// Start `muster server` with stdout and stderr on pipes, close the pipes' read ends once it
/// listens, use it, and answer how it ends on SIGTERM (within `within`).
async fn stop_after_losing_the_log_pipe(before: Before) -> Option<std::process::ExitStatus> {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let mut child = muster()
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path())
        .env("MUSTER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("MUSTER_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn muster server");
    let _kill = KillOnDrop(child.id());
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut url = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read the server's stdout");
        if let Some((_, address)) = line.split_once("listening on ") {
            url = Some(address.trim().to_string());
            break;
        }
    }
    let url = url.expect("the server printed where it listens");
    // Both read ends are closed here (the reader above was consumed): what the server writes
    // from now on fails with a broken pipe.
    drop(stderr);
    if let Before::Load = before {
        let client = muster_client::MusterClient::new(&url, ADMIN_TOKEN).expect("client");
        for index in 0..300 {
            client
                .submit_job(&SubmitJob {
                    kind: format!("load-{}", index % 7),
                    ..Default::default()
                })
                .await
                .expect("the coordinator serves with its log destination gone");
        }
    }
    assert!(
        crate::process::send_signal(child.id(), "TERM"),
        "send SIGTERM"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("poll the server") {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[tokio::test]
async fn an_idle_coordinator_whose_log_pipe_closed_stops_cleanly_on_sigterm() {
    let status = stop_after_losing_the_log_pipe(Before::Nothing)
        .await
        .expect("still running 15 s after SIGTERM");
    assert!(
        status.success(),
        "exit status {status:?} (101 would be a panic)"
    );
}

#[tokio::test]
async fn a_busy_coordinator_whose_log_pipe_closed_stops_cleanly_on_sigterm() {
    let status = stop_after_losing_the_log_pipe(Before::Load)
        .await
        .expect("still running 15 s after SIGTERM");
    assert!(
        status.success(),
        "exit status {status:?} (101 would be a panic)"
    );
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn the_data_directory_and_the_files_holding_job_data_are_private() {
    let scratch = tempfile::tempdir().expect("scratch");
    let data_dir = scratch.path().join("made").join("by-muster");
    // The admin token is generated, so the token file is written too.
    let server = ServerProcess::start(&data_dir, None);
    let token = std::fs::read_to_string(data_dir.join("admin.token")).expect("the admin token");
    let artifact = server
        .client(token.trim())
        .upload_artifact_bytes(b"private artifact bytes".to_vec())
        .await
        .expect("upload an artifact");
    server
        .client(token.trim())
        .submit_job(&SubmitJob {
            kind: "private".into(),
            payload: Some(serde_json::json!({"secret": "payload"})),
            ..Default::default()
        })
        .await
        .expect("submit, so the WAL holds data");
    for directory in [scratch.path().join("made"), data_dir.clone()] {
        assert_eq!(mode(&directory), 0o700, "{}", directory.display());
    }
    let hex = artifact.id.trim_start_matches("sha256:");
    let blobs = data_dir.join("blobs");
    let shard = blobs.join("sha256").join(&hex[..2]);
    for directory in [
        blobs.clone(),
        blobs.join("sha256"),
        shard.clone(),
        blobs.join("uploads"),
    ] {
        assert_eq!(mode(&directory), 0o700, "{}", directory.display());
    }
    assert_eq!(mode(&shard.join(&hex[2..])), 0o600, "the artifact's file");
    for name in [
        "muster.db",
        "muster.db-wal",
        "muster.db-shm",
        "muster.lock",
        "admin.token",
    ] {
        let path = data_dir.join(name);
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

/// The `Max open files` soft and hard limits of a running process, from /proc.
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read /proc limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut fields = line.trim_start_matches("Max open files").split_whitespace();
    (
        fields.next().unwrap_or_default().to_string(),
        fields.next().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn the_soft_open_file_limit_is_raised_to_the_hard_limit_at_start() {
    let hard = String::from_utf8(
        Command::new("sh")
            .args(["-c", "ulimit -H -n"])
            .output()
            .expect("read the hard limit")
            .stdout,
    )
    .expect("text");
    let hard = hard.trim().to_string();
    assert!(
        hard == "unlimited" || hard.parse::<u64>().is_ok_and(|hard| hard > 256),
        "this test needs a hard open-file limit above 256, found {hard}"
    );
    let data_dir = tempfile::tempdir().expect("a data directory");
    let server = ServerProcess::start_command(
        muster_with_ulimit("-S -n 256"),
        data_dir.path(),
        Some(ADMIN_TOKEN),
        "127.0.0.1:0",
        &[],
    );
    let pid = server.pid().expect("running");
    let (soft, hard_now) = open_file_limits(pid);
    assert_eq!(soft, hard_now, "soft limit raised to the hard one");
    assert_ne!(soft, "256");
}

#[tokio::test]
async fn with_few_file_descriptors_a_flood_of_idle_connections_does_not_lock_anyone_out() {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let server = ServerProcess::start_command(
        muster_with_ulimit("-n 256"),
        data_dir.path(),
        Some(ADMIN_TOKEN),
        "127.0.0.1:0",
        &[],
    );
    let pid = server.pid().expect("running");
    assert_eq!(open_file_limits(pid).0, "256");
    let admin = server.client(ADMIN_TOKEN);
    let created = admin
        .create_runner(&CreateRunner {
            name: "flooded".into(),
            ..Default::default()
        })
        .await
        .expect("register a runner");
    let runner = RunnerClient::new(&server.base_url, &created.token).expect("runner client");

    // More idle sockets than the process has descriptors: each sends nothing.
    let address = server.base_url.trim_start_matches("http://").to_string();
    let mut flood = Vec::new();
    for _ in 0..400 {
        match tokio::net::TcpStream::connect(&address).await {
            Ok(stream) => flood.push(stream),
            Err(error) => panic!("open idle connection {}: {error}", flood.len()),
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let http =
        muster_client::http_client_builder(&server.base_url, &muster_client::ClientTls::system())
            .expect("an HTTP client")
            .build()
            .expect("build an HTTP client");
    let health = http
        .get(format!("{}/healthz", server.base_url))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("/healthz is answered beside 400 idle connections");
    assert_eq!(health.status(), 200);
    let claimed = runner
        .claim_job(&ClaimJobs {
            kinds: vec!["flood".into()],
            ..Default::default()
        })
        .await
        .expect("a runner's claim is answered beside 400 idle connections");
    assert!(claimed.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered after {:?}",
        started.elapsed()
    );
    drop(flood);
    let log = server.stderr();
    assert!(
        log.contains("connection limit reached"),
        "the limit is reported in the log:\n{log}"
    );
    assert!(
        !log.contains("Too many open files")
            || log.matches("accepting a connection failed").count() <= 3,
        "accept failures are logged a few times, not in a loop:\n{log}"
    );
}
