//! A `muster server` child process that is always killed, even when a test panics.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The admin token the tests hand the server through `MUSTER_ADMIN_TOKEN`.
pub(crate) const ADMIN_TOKEN: &str = "crash-test-admin-token-0123456789";

/// How long a server may take to print its listening line; generous for a loaded 2-core box.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The binary under test, with none of the settings the environment could leak in.
pub(crate) fn muster() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_muster"));
    for variable in [
        "MUSTER_ADMIN_TOKEN",
        "MUSTER_LISTEN",
        "MUSTER_DATA_DIR",
        "MUSTER_DATABASE_URL",
        "MUSTER_MAX_BODY_BYTES",
        "MUSTER_LOG_CAP_BYTES",
        "MUSTER_HEARTBEAT_INTERVAL_MS",
        "MUSTER_CANCEL_GRACE_S",
        "MUSTER_REAP_INTERVAL_MS",
    ] {
        command.env_remove(variable);
    }
    command.env("MUSTER_LOG", "warn");
    command
}

/// A running `muster server`; dropping it kills the process and reaps it.
pub(crate) struct ServerProcess {
    child: Option<Child>,
    pub(crate) base_url: String,
    stderr_path: PathBuf,
    _stderr_dir: tempfile::TempDir,
}

impl ServerProcess {
    /// `muster server --listen 127.0.0.1:0 --data-dir DATA_DIR`, with `admin_token` in the
    /// environment when given; answers once the server printed where it listens.
    pub(crate) fn start(data_dir: &Path, admin_token: Option<&str>) -> ServerProcess {
        let stderr_dir = tempfile::tempdir().expect("a directory for the server's stderr");
        let stderr_path = stderr_dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
        let mut command = muster();
        command
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(token) = admin_token {
            command.env("MUSTER_ADMIN_TOKEN", token);
        }
        let mut child = command.spawn().expect("spawn muster server");
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        // Build the guard first so the child is killed if waiting for it fails.
        let mut server = ServerProcess {
            child: Some(child),
            base_url: String::new(),
            stderr_path,
            _stderr_dir: stderr_dir,
        };
        let (lines, received) = mpsc::channel();
        // Drains stdout for the life of the process so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match received.recv_timeout(remaining) {
                Ok(line) => {
                    if let Some((_, address)) = line.split_once("listening on ") {
                        let address = address.trim();
                        assert!(
                            address.starts_with("http://"),
                            "the listening line names an http URL: {line:?}"
                        );
                        server.base_url = address.to_string();
                        return server;
                    }
                }
                Err(error) => panic!(
                    "muster server did not print its listening line ({error}); stderr:\n{}",
                    server.stderr()
                ),
            }
        }
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGKILL: no graceful shutdown, no chance to flush anything.
    pub(crate) fn kill(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the server is still running");
        child.kill().expect("SIGKILL the server");
        child.wait().expect("reap the killed server")
    }

    /// SIGTERM, then wait (bounded) for the process to finish what is in flight and exit.
    pub(crate) fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("the server is still running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM failed: {sent:?}");
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("poll the server process") {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub(crate) fn client(&self, token: &str) -> muster_client::MusterClient {
        muster_client::MusterClient::new(&self.base_url, token).expect("a client for the server")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
