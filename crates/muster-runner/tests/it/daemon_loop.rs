//! The real daemon loop over the in-memory transport: claim, run an SDK `Runner`, keep the lease,
//! ship logs and progress, complete or fail; cancels from either heartbeat, a lost lease, drain
//! and abort, retries and refusals. None of it touches HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use muster_core::{ErrorCode, FailureReason, LogLevel, Progress};
use muster_runner_sdk::{Runner, TaskCtx};
use serde_json::json;

use crate::memory::{Daemon, JobCall, MemoryCoordinator, eventually, report_of};

const LONG: Duration = Duration::from_secs(60);

/// Reads its input, reports progress, an event and a warning, stores two outputs (one streamed)
/// and sets a result.
struct CopyRunner;

#[async_trait]
impl Runner for CopyRunner {
    fn capability(&self) -> &'static str {
        "copy"
    }

    async fn run(&self, ctx: TaskCtx<'_>) -> Result<()> {
        let cid = ctx.lease.task.inputs_cids.first().context("no input")?;
        let bytes = ctx.input.get_bytes_by_cid(cid).await?;
        ctx.ctrl
            .log_event(json!({"event": "read", "bytes": bytes.len()}))
            .await?;
        ctx.ctrl.log(LogLevel::Warn, "careful").await?;
        ctx.ctrl
            .progress(json!({"progress": 50, "message": "halfway"}))
            .await?;
        // Long enough for a job heartbeat to carry the progress.
        tokio::time::sleep(Duration::from_millis(600)).await;
        ctx.output.put_bytes("out/copy.bin", &bytes).await?;
        let mut streamed = ctx.output.open_multipart("out/streamed.bin").await?;
        streamed.write_chunk(&bytes[..2]).await?;
        streamed.write_chunk(&bytes[2..]).await?;
        streamed.finish().await?;
        ctx.ctrl.set_result(json!({"copied": bytes.len()})).await?;
        Ok(())
    }
}

struct FailingRunner;

#[async_trait]
impl Runner for FailingRunner {
    fn capability(&self) -> &'static str {
        "fail"
    }

    async fn run(&self, _ctx: TaskCtx<'_>) -> Result<()> {
        bail!("the input was malformed")
    }
}

/// Logs that it started, then waits for a cancel (noting that it saw one).
#[derive(Default)]
struct WaitForCancel {
    saw_cancel: AtomicBool,
}

#[async_trait]
impl Runner for WaitForCancel {
    fn capability(&self) -> &'static str {
        "wait"
    }

    async fn run(&self, ctx: TaskCtx<'_>) -> Result<()> {
        ctx.ctrl.log(LogLevel::Info, "waiting").await?;
        ctx.ctrl.wait_until_cancelled().await;
        self.saw_cancel.store(true, Ordering::SeqCst);
        bail!("stopped on request")
    }
}

/// Panics, as a buggy runner might.
struct PanickingRunner;

#[async_trait]
impl Runner for PanickingRunner {
    fn capability(&self) -> &'static str {
        "panic"
    }

    async fn run(&self, ctx: TaskCtx<'_>) -> Result<()> {
        ctx.ctrl.log(LogLevel::Info, "about to panic").await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        panic!("a bug in the runner")
    }
}

/// Works for 800 ms unless stopped first.
struct SlowRunner;

#[async_trait]
impl Runner for SlowRunner {
    fn capability(&self) -> &'static str {
        "slow"
    }

    async fn run(&self, ctx: TaskCtx<'_>) -> Result<()> {
        ctx.ctrl.log(LogLevel::Info, "working").await?;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(800)) => {}
            _ = ctx.ctrl.wait_until_cancelled() => bail!("interrupted"),
        }
        ctx.ctrl.set_result(json!({"slow": true})).await
    }
}

/// Until the job's log holds `message`: the runner is running.
async fn until_logged(
    coordinator: &MemoryCoordinator,
    job: uuid::Uuid,
    message: &str,
) -> Result<()> {
    eventually(
        &format!("the line {message:?}"),
        Duration::from_secs(10),
        || {
            coordinator
                .log_lines(job)
                .iter()
                .any(|line| line.message == message)
                .then_some(())
        },
    )
    .await
}

/// A daemon whose one job (a [`WaitForCancel`]) is running; `others` are hosted beside it.
async fn running_a_waiting_job(
    coordinator: &Arc<MemoryCoordinator>,
    others: Vec<Arc<dyn Runner>>,
    drain_timeout: Duration,
) -> Result<(Daemon, uuid::Uuid, Arc<WaitForCancel>)> {
    let runner = Arc::new(WaitForCancel::default());
    let mut runners: Vec<Arc<dyn Runner>> = vec![runner.clone()];
    runners.extend(others);
    let daemon = Daemon::start(coordinator, runners, 1, drain_timeout)?;
    let job = coordinator.offer("wait", json!({}), &[]);
    until_logged(coordinator, job, "waiting").await?;
    Ok((daemon, job, runner))
}

fn failure(call: JobCall) -> Result<muster_runner::Failure> {
    match call {
        JobCall::Fail(failure) => Ok(failure),
        other => bail!("expected a failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_over_the_transport_and_completes_with_its_result_outputs_logs_and_progress()
-> Result<()> {
    let coordinator = MemoryCoordinator::new();
    coordinator.put_artifact("in-1", b"hello");
    let daemon = Daemon::start(&coordinator, vec![Arc::new(CopyRunner)], 2, LONG)?;
    let job = coordinator.offer("copy", json!({}), &["in-1"]);

    let report = report_of(&coordinator, job).await?;
    let JobCall::Complete(result) = report else {
        bail!("expected a completion, got {report:?}");
    };
    let outputs = result["outputs"]
        .as_object()
        .context("outputs in the result")?;
    assert_eq!(result["copied"], json!(5), "{result}");
    assert_eq!(
        outputs.len(),
        2,
        "both outputs, the streamed one too: {result}"
    );
    for name in ["out/copy.bin", "out/streamed.bin"] {
        let id = outputs[name].as_str().context("an artifact id")?;
        assert_eq!(coordinator.artifact(id), Some(b"hello".to_vec()), "{name}");
    }
    let recorded: Vec<_> = coordinator
        .calls(job)
        .into_iter()
        .filter_map(|call| match call {
            JobCall::Outputs(outputs) => Some(outputs),
            _ => None,
        })
        .collect();
    assert_eq!(
        recorded.len(),
        2,
        "each output recorded as stored: {recorded:?}"
    );

    let lines = coordinator.log_lines(job);
    let seqs: Vec<Option<u64>> = lines.iter().map(|line| line.seq).collect();
    assert_eq!(seqs, [Some(0), Some(1)], "{lines:?}");
    assert_eq!(lines[0].level, LogLevel::Info);
    assert_eq!(
        lines[0].metadata,
        Some(json!({"event": "read", "bytes": 5}))
    );
    assert_eq!(
        (lines[1].level, lines[1].message.as_str()),
        (LogLevel::Warn, "careful")
    );

    let carried = Progress {
        percent: 50.0,
        message: Some("halfway".to_string()),
    };
    assert!(
        coordinator
            .calls(job)
            .contains(&JobCall::Heartbeat(Some(carried.clone()))),
        "a job heartbeat carried the progress: {:?}",
        coordinator.calls(job)
    );
    assert!(
        coordinator
            .runner_beats()
            .iter()
            .any(|beat| beat.jobs.contains(&job)),
        "a runner heartbeat listed the running job"
    );
    let claim = coordinator.claims().first().cloned().context("a claim")?;
    assert_eq!(claim.kinds, ["copy"]);
    assert_eq!(claim.max_jobs, 2);
    assert_eq!(claim.tags, ["memory"]);
    assert_eq!(coordinator.reports(job).len(), 1, "reported once");

    daemon.drain(Duration::from_secs(10)).await?;
    let beats = coordinator.runner_beats();
    assert!(
        beats.iter().any(|beat| beat.draining),
        "the drain was announced: {beats:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_error_fails_the_attempt_for_a_retry_and_logs_the_error() -> Result<()> {
    let coordinator = MemoryCoordinator::new();
    let daemon = Daemon::start(&coordinator, vec![Arc::new(FailingRunner)], 1, LONG)?;
    let job = coordinator.offer("fail", json!({}), &[]);

    let failure = failure(report_of(&coordinator, job).await?)?;
    assert_eq!(failure.reason, FailureReason::RunnerError);
    assert!(failure.retryable);
    assert_eq!(failure.message, "the input was malformed");
    let lines = coordinator.log_lines(job);
    let last = lines.last().context("the error was logged")?;
    assert_eq!(
        (last.level, last.message.as_str()),
        (LogLevel::Error, "the input was malformed")
    );
    daemon.drain(Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_in_a_job_answer_stops_the_runner_and_fails_the_attempt_as_cancelled() -> Result<()>
{
    let coordinator = MemoryCoordinator::new();
    let (daemon, job, runner) = running_a_waiting_job(&coordinator, Vec::new(), LONG).await?;

    coordinator.cancel(job);
    let failure = failure(report_of(&coordinator, job).await?)?;
    assert_eq!(failure.reason, FailureReason::Cancelled, "{failure:?}");
    assert_eq!(failure.message, "stopped on request");
    assert!(runner.saw_cancel.load(Ordering::SeqCst));
    daemon.drain(Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_named_by_the_runner_heartbeat_stops_the_job() -> Result<()> {
    let coordinator = MemoryCoordinator::new();
    let (daemon, job, _) = running_a_waiting_job(&coordinator, Vec::new(), LONG).await?;

    coordinator.cancel_by_runner_heartbeat(job);
    let failure = failure(report_of(&coordinator, job).await?)?;
    assert_eq!(failure.reason, FailureReason::Cancelled, "{failure:?}");
    daemon.drain(Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_stops_the_runner_silently_and_the_daemon_takes_the_next_job() -> Result<()> {
    let coordinator = MemoryCoordinator::new();
    coordinator.put_artifact("in-1", b"hello");
    let (daemon, job, runner) =
        running_a_waiting_job(&coordinator, vec![Arc::new(CopyRunner)], LONG).await?;

    coordinator.lose_lease(job);
    eventually(
        "the runner to see the loss",
        Duration::from_secs(10),
        || runner.saw_cancel.load(Ordering::SeqCst).then_some(()),
    )
    .await?;
    // The slot frees and the next job runs: the loss cost this runner nothing else.
    let next = coordinator.offer("copy", json!({}), &["in-1"]);
    let report = report_of(&coordinator, next).await?;
    assert!(matches!(report, JobCall::Complete(_)), "{report:?}");

    assert!(
        coordinator.reports(job).is_empty(),
        "nothing reported about the lost attempt: {:?}",
        coordinator.calls(job)
    );
    let after = coordinator.calls_after_loss(job);
    assert_eq!(
        after.len(),
        1,
        "only the call that met the loss, nothing after it: {after:?}"
    );
    daemon.drain(Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_lets_the_running_job_finish_and_claims_nothing_more() -> Result<()> {
    let coordinator = MemoryCoordinator::new();
    let daemon = Daemon::start(&coordinator, vec![Arc::new(SlowRunner)], 1, LONG)?;
    let running = coordinator.offer("slow", json!({}), &[]);
    until_logged(&coordinator, running, "working").await?;
    let waiting = coordinator.offer("slow", json!({}), &[]);

    daemon.drain(Duration::from_secs(20)).await?;

    let report = coordinator.reports(running);
    assert_eq!(report.len(), 1, "{report:?}");
    assert!(
        matches!(&report[0], JobCall::Complete(result) if result["slow"] == json!(true)),
        "the running job finished its work: {report:?}"
    );
    assert_eq!(
        coordinator.queued(),
        [waiting],
        "the daemon claimed nothing once draining"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_timeout_stops_the_job_and_reports_a_retryable_failure_not_a_cancel() -> Result<()>
{
    let coordinator = MemoryCoordinator::new();
    let (daemon, job, _) =
        running_a_waiting_job(&coordinator, Vec::new(), Duration::from_millis(300)).await?;

    daemon.drain(Duration::from_secs(20)).await?;

    let failure = failure(report_of(&coordinator, job).await?)?;
    assert_eq!(failure.reason, FailureReason::RunnerError, "{failure:?}");
    assert!(failure.retryable);
    assert!(
        failure
            .message
            .starts_with("the runner shut down before the job finished"),
        "{failure:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_stops_the_job_at_once_and_reports_it_for_a_retry() -> Result<()> {
    let coordinator = MemoryCoordinator::new();
    let (daemon, job, _) = running_a_waiting_job(&coordinator, Vec::new(), LONG).await?;

    daemon.stop.drain.cancel();
    daemon.stop.abort.cancel();
    daemon.join(Duration::from_secs(20)).await?;

    let failure = failure(report_of(&coordinator, job).await?)?;
    assert_eq!(failure.reason, FailureReason::RunnerError, "{failure:?}");
    assert!(
        failure.message.starts_with("the runner shut down"),
        "{failure:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_coordinator_is_asked_again_until_it_takes_the_outcome() -> Result<()> {
    let coordinator = MemoryCoordinator::new();
    coordinator.be_unavailable_for_reports(2);
    let daemon = Daemon::start(&coordinator, vec![Arc::new(SlowRunner)], 1, LONG)?;
    let job = coordinator.offer("slow", json!({}), &[]);

    eventually("the third report", Duration::from_secs(20), || {
        (coordinator.reports(job).len() >= 3).then_some(())
    })
    .await?;
    daemon.drain(Duration::from_secs(10)).await?;
    let reports = coordinator.reports(job);
    assert_eq!(
        reports.len(),
        3,
        "two refused, one taken, none after: {reports:?}"
    );
    assert!(
        reports
            .iter()
            .all(|call| matches!(call, JobCall::Complete(_)))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_outcome_is_not_sent_again() -> Result<()> {
    let coordinator = MemoryCoordinator::new();
    coordinator.refuse_reports_with(ErrorCode::InvalidInput);
    let daemon = Daemon::start(&coordinator, vec![Arc::new(FailingRunner)], 1, LONG)?;
    let job = coordinator.offer("fail", json!({}), &[]);

    report_of(&coordinator, job).await?;
    // Long enough for a retry's backoff (0.5–1 s) to have passed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    daemon.drain(Duration::from_secs(10)).await?;
    assert_eq!(coordinator.reports(job).len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_runner_fails_its_attempt_and_frees_its_slot() -> Result<()> {
    let coordinator = MemoryCoordinator::new();
    let daemon = Daemon::start(
        &coordinator,
        vec![Arc::new(PanickingRunner), Arc::new(SlowRunner)],
        1,
        LONG,
    )?;
    let job = coordinator.offer("panic", json!({}), &[]);

    let failure = failure(report_of(&coordinator, job).await?)?;
    assert_eq!(failure.reason, FailureReason::RunnerError, "{failure:?}");
    assert!(failure.retryable);
    assert_eq!(failure.message, "the runner panicked: a bug in the runner");
    let next = coordinator.offer("slow", json!({}), &[]);
    let report = report_of(&coordinator, next).await?;
    assert!(matches!(report, JobCall::Complete(_)), "{report:?}");
    // Nothing keeps the panicked job's lease alive any more.
    let calls = coordinator.calls(job).len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        coordinator.calls(job).len(),
        calls,
        "{:?}",
        coordinator.calls(job)
    );
    daemon.drain(Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_stops_the_daemon_with_an_error() -> Result<()> {
    let coordinator = MemoryCoordinator::new();
    coordinator.refuse_token();
    let daemon = Daemon::start(&coordinator, vec![Arc::new(FailingRunner)], 1, LONG)?;

    let error = daemon
        .join(Duration::from_secs(10))
        .await
        .expect_err("a refused token is fatal");
    assert!(
        error.to_string().contains("refused this runner's token"),
        "{error:#}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_without_runners_refuses_to_start() -> Result<()> {
    let coordinator = MemoryCoordinator::new();
    let daemon = Daemon::start(&coordinator, Vec::new(), 1, LONG)?;
    let error = daemon
        .join(Duration::from_secs(10))
        .await
        .expect_err("nothing to run");
    assert!(error.to_string().contains("no job kinds"), "{error:#}");
    assert!(coordinator.claims().is_empty());
    Ok(())
}
