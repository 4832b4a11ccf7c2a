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
    scrub_environment(&mut command);
    command
}

/// The binary under test run by `sh` after `ulimit ULIMIT_ARGUMENTS` (for example `-n 256`), so
/// it starts with that open-file limit; otherwise like [`muster`].
pub(crate) fn muster_with_ulimit(ulimit_arguments: &str) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("ulimit {ulimit_arguments} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_muster"));
    scrub_environment(&mut command);
    command
}

fn scrub_environment(command: &mut Command) {
    for variable in [
        "MUSTER_ADMIN_TOKEN",
        "MUSTER_LISTEN",
        "MUSTER_DATA_DIR",
        "MUSTER_DATABASE_URL",
        "MUSTER_DATABASE_MAX_CONNECTIONS",
        "MUSTER_MAX_BODY_BYTES",
        "MUSTER_LOG_CAP_BYTES",
        "MUSTER_HEARTBEAT_INTERVAL_MS",
        "MUSTER_CANCEL_GRACE_S",
        "MUSTER_REAP_INTERVAL_MS",
        // What the client commands and `muster runner` read, so the developer's own settings
        // (or a config file under their HOME) never reach a test.
        "MUSTER_SERVER",
        "MUSTER_TOKEN",
        "MUSTER_CONFIG",
        "MUSTER_RUNNER_TOKEN",
        "MUSTER_RUNNER_CONFIG",
    ] {
        command.env_remove(variable);
    }
    // The default config file is looked for under XDG_CONFIG_HOME first: point it nowhere.
    command.env("XDG_CONFIG_HOME", "/nonexistent/muster-tests-config");
    command.env("MUSTER_LOG", "warn");
    // The default reserve is a share of the host's file system, so whether an upload fits
    // would depend on how full the test machine's disk is. Tests of the reserve pass
    // `--disk-reserve`, which wins over this.
    command.env("MUSTER_DISK_RESERVE", "0");
}

/// Read a child's stdout until it prints `listening on http://HOST:PORT` (bounded) and answer
/// that URL. Keeps draining stdout afterwards so the child never blocks on a full pipe.
pub(crate) fn listening_url(
    stdout: std::process::ChildStdout,
    within: Duration,
) -> Result<String, String> {
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            // After the listening line nobody receives: keep reading regardless.
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + within;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let line = received
            .recv_timeout(remaining)
            .map_err(|error| format!("did not print its listening line ({error})"))?;
        if let Some((_, address)) = line.split_once("listening on ") {
            let address = address.trim();
            if !(address.starts_with("http://") || address.starts_with("https://")) {
                return Err(format!(
                    "printed a listening line without an http URL: {line:?}"
                ));
            }
            return Ok(address.to_string());
        }
    }
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
        ServerProcess::start_listening(data_dir, admin_token, "127.0.0.1:0")
    }

    /// Like [`ServerProcess::start`] on a chosen address (to come back on the same port).
    pub(crate) fn start_listening(
        data_dir: &Path,
        admin_token: Option<&str>,
        listen: &str,
    ) -> ServerProcess {
        ServerProcess::start_with_args(data_dir, admin_token, listen, &[])
    }

    /// Like [`ServerProcess::start_listening`] with more command-line arguments after the
    /// usual ones (`--database URL`, `--reap-interval-ms N`, ...).
    pub(crate) fn start_with_args(
        data_dir: &Path,
        admin_token: Option<&str>,
        listen: &str,
        extra: &[&str],
    ) -> ServerProcess {
        ServerProcess::start_command(muster(), data_dir, admin_token, listen, extra)
    }

    /// Like [`ServerProcess::start_with_args`], running `command` (see [`muster_with_ulimit`]).
    pub(crate) fn start_command(
        mut command: Command,
        data_dir: &Path,
        admin_token: Option<&str>,
        listen: &str,
        extra: &[&str],
    ) -> ServerProcess {
        let stderr_dir = tempfile::tempdir().expect("a directory for the server's stderr");
        let stderr_path = stderr_dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
        command
            .args(["server", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
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
        match listening_url(stdout, STARTUP_TIMEOUT) {
            Ok(url) => {
                server.base_url = url;
                server
            }
            Err(error) => panic!("muster server {error}; stderr:\n{}", server.stderr()),
        }
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// `HOST:PORT` the server listens on, to start it again on the same address.
    pub(crate) fn listen_address(&self) -> &str {
        self.base_url.trim_start_matches("http://")
    }

    /// The exit status if the server has exited (reaping it), else `None`: still serving.
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().expect("poll the server process")?;
        self.child = None;
        Some(status)
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

    /// The server's process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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

/// Send `signal` (a `kill` name such as `TERM` or `KILL`) to one process id.
pub(crate) fn send_signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}

/// Whether `pid` names a live process: a zombie (exited, not yet reaped) does not count.
pub(crate) fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The ids of the live direct children of `pid`, read from /proc.
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Kills a process by id when dropped: for commands a failing test could leave behind.
pub(crate) struct KillOnDrop(pub(crate) u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if process_alive(self.0) {
            send_signal(self.0, "KILL");
        }
    }
}

/// A running `muster runner --exec`; dropping it kills the process and reaps it. Its stdout and
/// stderr go to one file (read with [`RunnerProcess::output`]) so a full pipe can never stall it.
pub(crate) struct RunnerProcess {
    child: Option<Child>,
    pid: u32,
    output_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl RunnerProcess {
    /// `muster runner --server URL --token TOKEN --exec --concurrency N EXTRA...`, with its job
    /// output directories in a private temp dir. Answers at once: the runner has been spawned,
    /// not necessarily registered its first heartbeat yet.
    pub(crate) fn start(
        base_url: &str,
        token: &str,
        concurrency: u32,
        extra: &[&str],
    ) -> RunnerProcess {
        RunnerProcess::start_with_env(base_url, token, concurrency, extra, &[])
    }

    /// Like [`RunnerProcess::start`] with more environment variables for the daemon, which its
    /// `exec` commands inherit.
    pub(crate) fn start_with_env(
        base_url: &str,
        token: &str,
        concurrency: u32,
        extra: &[&str],
        environment: &[(&str, &str)],
    ) -> RunnerProcess {
        RunnerProcess::spawn(
            base_url,
            &["--token", token],
            concurrency,
            extra,
            environment,
        )
    }

    /// `muster runner --server URL --key KEY_PATH --exec ...`: a runner that registers itself
    /// with its key.
    pub(crate) fn start_with_key(base_url: &str, key_path: &Path, extra: &[&str]) -> RunnerProcess {
        let key_path = key_path.to_string_lossy().into_owned();
        RunnerProcess::spawn(base_url, &["--key", &key_path], 1, extra, &[])
    }

    fn spawn(
        base_url: &str,
        identity: &[&str],
        concurrency: u32,
        extra: &[&str],
        environment: &[(&str, &str)],
    ) -> RunnerProcess {
        let dir = tempfile::tempdir().expect("a directory for the runner");
        let output_path = dir.path().join("runner.log");
        let output = std::fs::File::create(&output_path).expect("create the runner's log file");
        let errors = output.try_clone().expect("share the log file");
        let mut command = muster();
        command
            .args(["runner", "--server", base_url])
            .args(identity)
            .args(["--exec", "--concurrency"])
            .arg(concurrency.to_string())
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .args(extra)
            // Info level: when a test fails, the runner's side of the story is in the message.
            .env("MUSTER_LOG", "info")
            .envs(environment.iter().copied())
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors);
        let child = command.spawn().expect("spawn muster runner");
        let pid = child.id();
        RunnerProcess {
            child: Some(child),
            pid,
            output_path,
            _dir: dir,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything the runner printed so far.
    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.output_path).unwrap_or_default()
    }

    /// Send a signal by name (`TERM`, `INT`, ...) without waiting for anything.
    pub(crate) fn signal(&self, signal: &str) {
        assert!(self.child.is_some(), "the runner already exited");
        assert!(
            send_signal(self.pid, signal),
            "kill -{signal} {} failed",
            self.pid
        );
    }

    /// The exit status if the runner has exited (reaping it), else `None`.
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().expect("poll the runner process")?;
        self.child = None;
        Some(status)
    }

    /// Wait up to `within` for the runner to exit; `None` if it is still running.
    pub(crate) fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL the runner (only the daemon: its commands run in their own process groups).
    pub(crate) fn kill(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the runner is still running");
        child.kill().expect("SIGKILL the runner");
        child.wait().expect("reap the killed runner")
    }

    /// SIGTERM, then wait up to `within` for the runner to exit.
    pub(crate) fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        self.signal("TERM");
        self.wait(within)
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Its commands live in their own process groups; end the ones still attached.
            for pid in children_of(self.pid) {
                let _ = send_signal(pid, "KILL");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a finished CLI command left behind.
pub(crate) struct CliOutput {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl std::fmt::Debug for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// How long one CLI command of a test may take before the test fails.
pub(crate) const COMMAND_BOUND: Duration = Duration::from_secs(60);

/// `muster ARGS` against `server` with the admin token, both given through the environment as a
/// script would set them up.
pub(crate) fn admin_cli(server: &str, args: &[&str]) -> Command {
    cli_with_token(server, ADMIN_TOKEN, args)
}

/// `muster ARGS` against `server` as the holder of `token`, given through the environment.
pub(crate) fn cli_with_token(server: &str, token: &str, args: &[&str]) -> Command {
    let mut command = muster();
    command
        .args(args)
        .env("MUSTER_SERVER", server)
        .env("MUSTER_TOKEN", token);
    command
}

/// Run [`admin_cli`] (bounded by [`COMMAND_BOUND`]) and insist on exit 0.
pub(crate) fn admin_ok(server: &str, args: &[&str]) -> CliOutput {
    let output = run_bounded(&mut admin_cli(server, args), COMMAND_BOUND);
    assert!(
        output.status.success(),
        "muster {args:?} failed: {output:?}"
    );
    output
}

/// Run `command` to its end, but for at most `within`: past it the process is killed and the
/// test fails, so a command that hangs cannot hang the suite.
pub(crate) fn run_bounded(command: &mut Command, within: Duration) -> CliOutput {
    let dir = tempfile::tempdir().expect("a directory for the command's output");
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("create stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("create stderr file"))
        .spawn()
        .expect("spawn the command");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the command") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} did not finish within {within:?}; stderr so far:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    CliOutput {
        status,
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    }
}
