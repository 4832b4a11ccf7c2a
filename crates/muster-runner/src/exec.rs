//! The built-in `exec` runner: runs the command a job names, streams its output to the job log,
//! and stops its whole process group on cancel. The job's input artifacts are downloaded into
//! `$MUSTER_INPUT_DIR` (one file per input, named after its id); files the command writes into
//! `$MUSTER_OUTPUT_DIR` become the job's output artifacts. Hosted only when a runner is started with
//! `--exec`, because it runs whatever a submitter sends.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use muster_api::LogLevel;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use crate::control::{JobContext, JobHandler};

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
pub struct ExecHandler {
    kill_grace: Duration,
    work_dir: PathBuf,
}

impl ExecHandler {
    /// Output directories are made under `work_dir`.
    pub fn new(work_dir: PathBuf, kill_grace: Duration) -> ExecHandler {
        ExecHandler {
            kill_grace,
            work_dir,
        }
    }
}

async fn forward_lines(stream: impl AsyncRead + Unpin, job: &JobContext, level: LogLevel) {
    let mut lines = BufReader::new(stream).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => job.log(level, line),
            Ok(None) => return,
            Err(error) => {
                job.log(
                    LogLevel::Warn,
                    format!("could not read the command's output: {error}"),
                );
                return;
            }
        }
    }
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
impl JobHandler for ExecHandler {
    fn kind(&self) -> &str {
        "exec"
    }

    async fn run(&self, job: &JobContext) -> anyhow::Result<serde_json::Value> {
        let payload: ExecPayload = serde_json::from_value(job.claimed.payload.clone())
            .context("read the exec payload {\"command\": [...], \"env\": {}, \"cwd\": null, \"timeout_s\": null}")?;
        let Some((program, arguments)) = payload.command.split_first() else {
            bail!("the exec payload's command is empty");
        };
        std::fs::create_dir_all(&self.work_dir)
            .with_context(|| format!("create {}", self.work_dir.display()))?;
        let output_dir = tempfile::Builder::new()
            .prefix(&format!("job-{}-", job.claimed.id))
            .tempdir_in(&self.work_dir)
            .context("create the job's output directory")?;
        // Inputs are downloaded before the command starts, each to a file named after its id.
        let input_dir = output_dir.path().with_extension("inputs");
        if !job.claimed.inputs.is_empty() {
            std::fs::create_dir_all(&input_dir)
                .with_context(|| format!("create {}", input_dir.display()))?;
            for input in &job.claimed.inputs {
                let name: String = input
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                job.client
                    .download_artifact_to_file(input, &input_dir.join(name))
                    .await
                    .with_context(|| format!("download input {input}"))?;
            }
        }
        let _remove_inputs = RemoveOnDrop(input_dir.clone());
        let mut command = Command::new(program);
        command
            .args(arguments)
            .envs(&payload.env)
            .env("MUSTER_JOB_ID", job.claimed.id.to_string())
            .env("MUSTER_ATTEMPT", job.claimed.attempt.to_string())
            .env("MUSTER_OUTPUT_DIR", output_dir.path())
            .env("MUSTER_INPUT_DIR", &input_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a cancel reaches everything it started.
            .process_group(0)
            .kill_on_drop(true);
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
                forward_lines(stdout, job, LogLevel::Info),
                forward_lines(stderr, job, LogLevel::Warn)
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
        let mut stopping: Option<&str> = None;
        let mut kill_at = tokio::time::Instant::now();
        let mut forwarded = false;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status.context("wait for the command")?,
                _ = &mut forward, if !forwarded => forwarded = true,
                _ = job.cancelled().cancelled(), if stopping.is_none() => {
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
        let outputs = job.upload_outputs(output_dir.path()).await?;
        if !outputs.is_empty() {
            job.log(
                LogLevel::Info,
                format!(
                    "uploaded {} output file(s): {}",
                    outputs.len(),
                    outputs.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        match status.code() {
            Some(0) => Ok(
                serde_json::json!({"exit_code": 0, "duration_ms": duration_ms, "outputs": outputs}),
            ),
            Some(code) => bail!("the command exited with code {code} after {duration_ms} ms"),
            None => bail!("the command was killed by a signal after {duration_ms} ms"),
        }
    }
}
