//! The built-in `exec` runner: runs the command a job names, streams its output to the job log,
//! and stops its whole process group on cancel. The job's input artifacts are downloaded into
//! `$MUSTER_INPUT_DIR` (one file per input, named after its id); files the command writes into
//! `$MUSTER_OUTPUT_DIR` become the job's output artifacts. Hosted only when a runner is started with
//! `--exec`, because it runs whatever a submitter sends.
//!
//! It is an SDK [`Runner`] like any other: everything it does to the job goes through the
//! [`TaskCtx`] ports, so it runs the same under the daemon, over any transport, or in the SDK's
//! harness.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use muster_runner_sdk::{ControlPlane, LogLevel, Runner, TaskCtx};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

/// The job kind (the runner's capability).
pub const EXEC_KIND: &str = "exec";

/// How long a cancelled command gets between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

/// The payload of an `exec` job.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecPayload {
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<PathBuf>,
    #[serde(default)]
    timeout_s: Option<u64>,
}

/// Runs `exec` jobs.
pub struct ExecRunner {
    kill_grace: Duration,
    work_dir: PathBuf,
}

impl ExecRunner {
    /// Output directories are made under `work_dir`; a stopped command gets `kill_grace`
    /// between SIGTERM and SIGKILL.
    pub fn new(work_dir: PathBuf, kill_grace: Duration) -> ExecRunner {
        ExecRunner {
            kill_grace,
            work_dir,
        }
    }
}

/// A log line the job cannot take is not worth stopping the command for: the daemon's port
/// never refuses one, and a stricter host loses a line, not the run.
async fn log_line(ctrl: &dyn ControlPlane, level: LogLevel, line: &str) {
    if let Err(error) = ctrl.log(level, line).await {
        tracing::warn!(%error, "could not log a line of the command's output");
    }
}

async fn forward_lines(stream: impl AsyncRead + Unpin, ctrl: &dyn ControlPlane, level: LogLevel) {
    let mut lines = BufReader::new(stream).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => log_line(ctrl, level, &line).await,
            Ok(None) => return,
            Err(error) => {
                log_line(
                    ctrl,
                    LogLevel::Warn,
                    &format!("could not read the command's output: {error}"),
                )
                .await;
                return;
            }
        }
    }
}

/// Every file under `directory` (recursively), named by its path relative to `directory`.
fn files_under(directory: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries =
            std::fs::read_dir(&folder).with_context(|| format!("list {}", folder.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("list {}", folder.display()))?
                .path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let name = path
                .strip_prefix(directory)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            files.push((name, path));
        }
    }
    Ok(files)
}

/// Removes the job's input directory however the job ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        // The group may already be gone; that is the outcome wanted.
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

#[async_trait]
impl Runner for ExecRunner {
    fn capability(&self) -> &'static str {
        EXEC_KIND
    }

    async fn run(&self, ctx: TaskCtx<'_>) -> anyhow::Result<()> {
        let task = &ctx.lease.task;
        let payload: ExecPayload = serde_json::from_value(task.meta.clone())
            .context("read the exec payload {\"command\": [...], \"env\": {}, \"cwd\": null, \"timeout_s\": null}")?;
        let Some((program, arguments)) = payload.command.split_first() else {
            bail!("the exec payload's command is empty");
        };
        std::fs::create_dir_all(&self.work_dir)
            .with_context(|| format!("create {}", self.work_dir.display()))?;
        let output_dir = tempfile::Builder::new()
            .prefix(&format!("job-{}-", task.id))
            .tempdir_in(&self.work_dir)
            .context("create the job's output directory")?;
        // Inputs are downloaded before the command starts, each to a file named after its id.
        let input_dir = output_dir.path().with_extension("inputs");
        let _remove_inputs = RemoveOnDrop(input_dir.clone());
        if !task.inputs_cids.is_empty() {
            std::fs::create_dir_all(&input_dir)
                .with_context(|| format!("create {}", input_dir.display()))?;
            for input in &task.inputs_cids {
                let name: String = input
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                ctx.input
                    .materialize_cid_to(input, &input_dir.join(name))
                    .await?;
            }
        }
        let mut command = Command::new(program);
        command
            .args(arguments)
            .envs(&payload.env)
            .env("MUSTER_JOB_ID", task.id.to_string())
            .env("MUSTER_OUTPUT_DIR", output_dir.path())
            .env("MUSTER_INPUT_DIR", &input_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a cancel reaches everything it started.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(attempt) = task.attempts {
            command.env("MUSTER_ATTEMPT", attempt.to_string());
        }
        if let Some(cwd) = &payload.cwd {
            command.current_dir(cwd);
        }
        let started = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("start {program}"))?;
        let pid = child
            .id()
            .context("the command exited before it could be watched")?;
        let stdout = child.stdout.take().context("take the command's stdout")?;
        let stderr = child.stderr.take().context("take the command's stderr")?;
        let forward = async {
            tokio::join!(
                forward_lines(stdout, ctx.ctrl, LogLevel::Info),
                forward_lines(stderr, ctx.ctrl, LogLevel::Warn)
            );
        };
        tokio::pin!(forward);
        let deadline = payload
            .timeout_s
            .map(|seconds| tokio::time::Instant::now() + Duration::from_secs(seconds));
        let timed_out = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timed_out);
        let cancelled = ctx.ctrl.wait_until_cancelled();
        tokio::pin!(cancelled);
        let mut stopping: Option<&str> = None;
        let mut kill_at = tokio::time::Instant::now();
        let mut forwarded = false;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status.context("wait for the command")?,
                _ = &mut forward, if !forwarded => forwarded = true,
                _ = &mut cancelled, if stopping.is_none() => {
                    stopping = Some("cancelled");
                    kill_at = tokio::time::Instant::now() + self.kill_grace;
                    signal_group(pid, Signal::SIGTERM);
                }
                _ = &mut timed_out, if stopping.is_none() => {
                    stopping = Some("timed out");
                    kill_at = tokio::time::Instant::now() + self.kill_grace;
                    signal_group(pid, Signal::SIGTERM);
                }
                _ = tokio::time::sleep_until(kill_at), if stopping.is_some() => {
                    signal_group(pid, Signal::SIGKILL);
                }
            }
        };
        // Children of the command may hold the pipes open; do not wait for them for ever.
        if !forwarded {
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut forward).await;
        }
        signal_group(pid, Signal::SIGKILL);
        let duration_ms = started.elapsed().as_millis() as u64;
        if let Some(why) = stopping {
            bail!("the command was {why} and stopped after {duration_ms} ms");
        }
        // Files the command left in MUSTER_OUTPUT_DIR become the job's output artifacts, whatever
        // its exit code: a failed run's outputs are often what explains it.
        let mut outputs = files_under(output_dir.path())?;
        outputs.sort();
        ctx.output.put_files(&outputs).await?;
        if !outputs.is_empty() {
            let names: Vec<&str> = outputs.iter().map(|(name, _)| name.as_str()).collect();
            log_line(
                ctx.ctrl,
                LogLevel::Info,
                &format!(
                    "uploaded {} output file(s): {}",
                    outputs.len(),
                    names.join(", ")
                ),
            )
            .await;
        }
        match status.code() {
            Some(0) => {
                ctx.ctrl
                    .set_result(serde_json::json!({"exit_code": 0, "duration_ms": duration_ms}))
                    .await
            }
            Some(code) => bail!("the command exited with code {code} after {duration_ms} ms"),
            None => bail!("the command was killed by a signal after {duration_ms} ms"),
        }
    }
}
