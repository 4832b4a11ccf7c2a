//! The built-in `exec` runner, an SDK `Runner` like any other, hosted by the real daemon over
//! the in-memory transport: inputs in `$MUSTER_INPUT_DIR`, output lines streamed at their
//! levels, files in `$MUSTER_OUTPUT_DIR` recorded together, exit codes, and a cancel that stops
//! the whole process group (SIGTERM, then SIGKILL after the grace).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use muster_core::{FailureReason, LogLevel};
use muster_runner::exec::ExecRunner;
use serde_json::json;

use crate::memory::{Daemon, JobCall, MemoryCoordinator, eventually, report_of};

/// The daemon, and the directory `exec` makes its job directories in.
fn exec_daemon(
    coordinator: &Arc<MemoryCoordinator>,
    kill_grace: Duration,
) -> Result<(Daemon, tempfile::TempDir)> {
    let work_dir = tempfile::tempdir()?;
    let daemon = Daemon::start(
        coordinator,
        vec![Arc::new(ExecRunner::new(
            work_dir.path().to_path_buf(),
            kill_grace,
        ))],
        1,
        Duration::from_secs(60),
    )?;
    Ok((daemon, work_dir))
}

fn shell(script: &str) -> serde_json::Value {
    json!({"command": ["sh", "-c", script]})
}

/// Alive and not a zombie waiting to be reaped, by its `State:` line in /proc.
fn process_alive(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("State:"))
        .is_some_and(|state| !matches!(state.trim().chars().next(), Some('Z' | 'X')))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_the_command_with_its_inputs_streams_its_lines_and_records_its_outputs_together()
-> Result<()> {
    let coordinator = MemoryCoordinator::new();
    coordinator.put_artifact("in-1", b"hello from an input");
    let (daemon, _work_dir) = exec_daemon(&coordinator, Duration::from_secs(5))?;
    let job = coordinator.offer(
        "exec",
        shell(
            r#"ls "$MUSTER_INPUT_DIR"; cat "$MUSTER_INPUT_DIR/in_1"; echo; echo oops >&2
               mkdir "$MUSTER_OUTPUT_DIR/sub"; echo a > "$MUSTER_OUTPUT_DIR/a.txt"
               echo b > "$MUSTER_OUTPUT_DIR/sub/b.txt"
               echo "job=$MUSTER_JOB_ID attempt=$MUSTER_ATTEMPT""#,
        ),
        &["in-1"],
    );

    let report = report_of(&coordinator, job).await?;
    let JobCall::Complete(result) = report else {
        bail!("expected a completion, got {report:?}");
    };
    assert_eq!(result["exit_code"], json!(0), "{result}");
    assert!(result["duration_ms"].is_u64(), "{result}");
    let outputs = result["outputs"].as_object().context("outputs")?;
    let names: Vec<&String> = outputs.keys().collect();
    assert_eq!(names, ["a.txt", "sub/b.txt"], "{result}");
    let id = outputs["sub/b.txt"].as_str().context("an id")?;
    assert_eq!(coordinator.artifact(id), Some(b"b\n".to_vec()));
    let recorded: Vec<_> = coordinator
        .calls(job)
        .into_iter()
        .filter(|call| matches!(call, JobCall::Outputs(_)))
        .collect();
    assert_eq!(
        recorded.len(),
        1,
        "one call records every output: {recorded:?}"
    );

    let lines: Vec<(LogLevel, String)> = coordinator
        .log_lines(job)
        .into_iter()
        .map(|line| (line.level, line.message))
        .collect();
    for expected in [
        (LogLevel::Info, "in_1".to_string()),
        (LogLevel::Info, "hello from an input".to_string()),
        (LogLevel::Warn, "oops".to_string()),
        (LogLevel::Info, format!("job={job} attempt=1")),
        (
            LogLevel::Info,
            "uploaded 2 output file(s): a.txt, sub/b.txt".to_string(),
        ),
    ] {
        assert!(lines.contains(&expected), "{expected:?} in {lines:?}");
    }
    daemon.drain(Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_fails_with_its_exit_code_and_keeps_its_outputs() -> Result<()> {
    let coordinator = MemoryCoordinator::new();
    let (daemon, _work_dir) = exec_daemon(&coordinator, Duration::from_secs(5))?;
    let job = coordinator.offer(
        "exec",
        shell(r#"echo because > "$MUSTER_OUTPUT_DIR/why.txt"; exit 3"#),
        &[],
    );

    let report = report_of(&coordinator, job).await?;
    let JobCall::Fail(failure) = report else {
        bail!("expected a failure, got {report:?}");
    };
    assert_eq!(failure.reason, FailureReason::RunnerError);
    assert!(
        failure
            .message
            .starts_with("the command exited with code 3 after"),
        "{failure:?}"
    );
    let calls = coordinator.calls(job);
    let recorded = calls.iter().find_map(|call| match call {
        JobCall::Outputs(outputs) => Some(outputs.clone()),
        _ => None,
    });
    let recorded = recorded.context("the failed run's output was recorded")?;
    assert_eq!(recorded.keys().collect::<Vec<_>>(), ["why.txt"]);
    daemon.drain(Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_the_whole_process_group_escalating_to_sigkill() -> Result<()> {
    let coordinator = MemoryCoordinator::new();
    let (daemon, _work_dir) = exec_daemon(&coordinator, Duration::from_secs(1))?;
    let pid_dir = tempfile::tempdir()?;
    let pid_file = pid_dir.path().join("child.pid");
    // The shell and its background child ignore SIGTERM, so only the SIGKILL after the grace
    // stops them; the child is in the group, not a direct child of the runner.
    let job = coordinator.offer(
        "exec",
        shell(&format!(
            r#"trap '' TERM; sleep 120 & echo $! > "{}"; echo started; wait"#,
            pid_file.display()
        )),
        &[],
    );
    let pid: u32 = eventually("the child's pid", Duration::from_secs(10), || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .await?;
    assert!(process_alive(pid), "the child runs until cancelled");

    let cancelled_at = Instant::now();
    coordinator.cancel(job);
    let report = report_of(&coordinator, job).await?;
    let took = cancelled_at.elapsed();
    let JobCall::Fail(failure) = report else {
        bail!("expected a failure, got {report:?}");
    };
    assert_eq!(failure.reason, FailureReason::Cancelled, "{failure:?}");
    assert!(
        failure
            .message
            .starts_with("the command was cancelled and stopped after"),
        "{failure:?}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "SIGTERM was ignored, so the stop waited for the grace: {took:?}"
    );
    eventually("the child to be gone", Duration::from_secs(5), || {
        (!process_alive(pid)).then_some(())
    })
    .await?;
    daemon.drain(Duration::from_secs(10)).await
}
