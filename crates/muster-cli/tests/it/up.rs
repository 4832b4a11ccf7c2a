//! `muster up`, the one-process quick start (a coordinator plus a local `exec` runner), driven
//! the way its help text tells a newcomer to use it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use crate::process::{ADMIN_TOKEN, CliOutput, listening_url, muster, run_bounded, send_signal};

const COMMAND_BOUND: Duration = Duration::from_secs(60);

/// A running `muster up`; dropping it kills and reaps it.
struct UpProcess {
    child: Option<Child>,
    url: String,
    stderr_path: PathBuf,
    _stderr_dir: tempfile::TempDir,
}

impl UpProcess {
    /// `muster up --listen 127.0.0.1:0 --data-dir DATA_DIR`; answers once it printed where it
    /// listens (bounded).
    fn start(data_dir: &Path, admin_token: Option<&str>) -> UpProcess {
        let stderr_dir = tempfile::tempdir().expect("a directory for stderr");
        let stderr_path = stderr_dir.path().join("stderr.log");
        let mut command = muster();
        command
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("MUSTER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).expect("create the stderr file"));
        if let Some(token) = admin_token {
            command.env("MUSTER_ADMIN_TOKEN", token);
        }
        let mut child = command.spawn().expect("spawn muster up");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut up = UpProcess {
            child: Some(child),
            url: String::new(),
            stderr_path,
            _stderr_dir: stderr_dir,
        };
        match listening_url(stdout, Duration::from_secs(30)) {
            Ok(url) => {
                up.url = url;
                up
            }
            Err(error) => panic!("muster up {error}; stderr:\n{}", up.stderr()),
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGTERM, then wait up to `within` for the exit.
    fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("still running");
        assert!(send_signal(child.id(), "TERM"), "kill -TERM failed");
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("poll muster up") {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn cli(url: &str, token: Option<&str>, args: &[&str]) -> Command {
    let mut command = muster();
    command.args(args).env("MUSTER_SERVER", url);
    if let Some(token) = token {
        command.env("MUSTER_TOKEN", token);
    }
    command
}

fn ok(mut command: Command) -> CliOutput {
    let output = run_bounded(&mut command, COMMAND_BOUND);
    assert!(output.status.success(), "{command:?} failed: {output:?}");
    output
}

/// The quick start: submit, wait and read the log of `echo hello` through the CLI.
fn hello_round_trip(url: &str, token: Option<&str>, cwd: Option<&Path>) {
    let with_cwd = |mut command: Command| {
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        command
    };
    let submitted = ok(with_cwd(cli(
        url,
        token,
        &["job", "submit", "--", "echo", "hello"],
    )));
    let id = submitted.stdout.trim().to_string();
    Uuid::parse_str(&id)
        .unwrap_or_else(|error| panic!("submit prints an id ({error}): {submitted:?}"));
    ok(with_cwd(cli(
        url,
        token,
        &["job", "wait", &id, "--timeout", "45"],
    )));
    let logs = ok(with_cwd(cli(url, token, &["job", "logs", &id])));
    assert!(logs.stdout.contains("hello"), "{logs:?}");
}

#[test]
fn up_runs_exec_jobs_and_stops_cleanly_on_sigterm() {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let mut up = UpProcess::start(data_dir.path(), Some(ADMIN_TOKEN));
    hello_round_trip(&up.url, Some(ADMIN_TOKEN), None);
    let status = up.terminate(Duration::from_secs(15)).unwrap_or_else(|| {
        panic!(
            "muster up did not exit within 15 s of SIGTERM:\n{}",
            up.stderr()
        )
    });
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?}; stderr:\n{}",
        up.stderr()
    );
}

/// Without MUSTER_ADMIN_TOKEN, `muster up` writes `.muster/admin.token` and a CLI started beside
/// it needs no token; a restart on the same data directory reuses the local runner instead of
/// registering another one.
#[test]
fn up_works_with_its_generated_token_and_restarts_without_piling_up_runners() {
    let workspace = tempfile::tempdir().expect("a working directory");
    let data_dir = workspace.path().join(".muster");
    let mut up = UpProcess::start(&data_dir, None);
    hello_round_trip(&up.url, None, Some(workspace.path()));
    // It says where the dashboard is; the token itself is printed only to a terminal, and this
    // standard error is a file.
    let dashboard_line = format!("dashboard: {}/", up.url);
    let generated = std::fs::read_to_string(data_dir.join("admin.token")).expect("admin.token");
    let printed = up.stderr();
    assert!(printed.contains(&dashboard_line), "{printed}");
    assert!(
        printed.contains("admin.token"),
        "where the token is: {printed}"
    );
    assert!(
        !printed.contains(generated.trim()),
        "the token is not written to a file: {printed}"
    );
    let page = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(async {
            let page =
                muster_client::http_client_builder(&up.url, &muster_client::ClientTls::system())
                    .expect("an HTTP client")
                    .build()
                    .expect("an HTTP client")
                    .get(format!("{}/", up.url))
                    .send()
                    .await
                    .expect("the dashboard answers");
            assert_eq!(page.status(), 200);
            page.text().await.expect("the page")
        });
    assert!(page.contains("/assets/app.js"), "{page}");
    let status = up.terminate(Duration::from_secs(15)).unwrap_or_else(|| {
        panic!(
            "muster up did not exit within 15 s of SIGTERM:\n{}",
            up.stderr()
        )
    });
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?}; stderr:\n{}",
        up.stderr()
    );

    let up = UpProcess::start(&data_dir, None);
    hello_round_trip(&up.url, None, Some(workspace.path()));
    let mut list = cli(&up.url, None, &["runners", "list", "--json"]);
    list.current_dir(workspace.path());
    let listed = ok(list);
    let listed: Value = serde_json::from_str(&listed.stdout).expect("runners list --json parses");
    let runners = listed["items"].as_array().expect("items");
    assert_eq!(
        runners.len(),
        1,
        "one local runner across restarts: {listed}"
    );
}
