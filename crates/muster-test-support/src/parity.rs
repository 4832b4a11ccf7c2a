//! The front-end parity harness: the protocol and job scenarios written once, against the small
//! [`FrontEnd`] trait, so every front end of the coordinator runs the very same scenarios. The
//! HTTP tests implement the trait over real HTTP; the service's own tests implement it with
//! direct calls on the `Coordinator`; the gRPC tests will implement it over gRPC. A rule that
//! one front end kept and another lost fails that front end's run.
//!
//! Errors are compared by [`ErrorCode`], the vocabulary every front end shares.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use async_trait::async_trait;
use muster_core::{ErrorCode, FailureReason, JobState};
use serde_json::{Value, json};
use uuid::Uuid;

/// A job as a scenario looks at it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSummary {
    pub state: JobState,
    pub attempt: u32,
    pub result: Option<Value>,
    pub error_reason: Option<FailureReason>,
}

/// A lease a claim granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    pub job: Uuid,
    pub epoch: u64,
}

/// What a scenario asks of a front end: user calls with the admin's credentials, runner calls
/// with a registered runner's.
#[async_trait]
pub trait FrontEnd: Send + Sync {
    /// A registered runner's credentials, as this front end holds them.
    type Runner: Send + Sync;

    async fn register_runner(&self, name: &str) -> Result<Self::Runner, ErrorCode>;
    async fn delete_runner(&self, runner: &Self::Runner) -> Result<(), ErrorCode>;
    async fn submit(
        &self,
        kind: &str,
        payload: Value,
        max_attempts: u32,
    ) -> Result<Uuid, ErrorCode>;
    async fn job(&self, job: Uuid) -> Result<JobSummary, ErrorCode>;
    async fn cancel(&self, job: Uuid) -> Result<JobState, ErrorCode>;
    async fn retry(&self, job: Uuid) -> Result<JobState, ErrorCode>;
    /// The messages of the job's log, in order.
    async fn log_messages(&self, job: Uuid) -> Result<Vec<String>, ErrorCode>;

    async fn claim(
        &self,
        runner: &Self::Runner,
        kind: &str,
        max_jobs: u32,
        wait_ms: u64,
    ) -> Result<Vec<Granted>, ErrorCode>;
    /// Answers whether the runner is told to stop.
    async fn heartbeat_job(
        &self,
        runner: &Self::Runner,
        job: Uuid,
        epoch: Option<u64>,
    ) -> Result<bool, ErrorCode>;
    async fn append_log(
        &self,
        runner: &Self::Runner,
        job: Uuid,
        epoch: Option<u64>,
        message: &str,
    ) -> Result<bool, ErrorCode>;
    async fn complete(
        &self,
        runner: &Self::Runner,
        job: Uuid,
        epoch: Option<u64>,
        result: Value,
    ) -> Result<(), ErrorCode>;
    async fn fail(
        &self,
        runner: &Self::Runner,
        job: Uuid,
        epoch: Option<u64>,
        message: &str,
        retryable: bool,
    ) -> Result<JobState, ErrorCode>;

    /// A user call (a submit) made with the runner's credentials.
    async fn submit_as_runner(&self, runner: &Self::Runner, kind: &str) -> Result<Uuid, ErrorCode>;
    /// A runner call (a claim) made with the admin's credentials.
    async fn claim_as_admin(&self, kind: &str) -> Result<Vec<Granted>, ErrorCode>;
}

/// Each scenario kind names its own kinds of jobs, so scenarios may share a coordinator.
fn kind(scenario: &str) -> String {
    format!("parity-{scenario}")
}

async fn claim_one<F: FrontEnd>(
    front: &F,
    runner: &F::Runner,
    kind: &str,
) -> anyhow::Result<Granted> {
    let mut granted = front
        .claim(runner, kind, 1, 0)
        .await
        .map_err(|code| anyhow::anyhow!("claim {kind}: {code}"))?;
    ensure!(
        granted.len() == 1,
        "one job of {kind} to claim, got {granted:?}"
    );
    granted.pop().context("one job")
}

/// Submit, claim, log, complete: the job ends completed with its result and its log.
pub async fn a_job_runs_from_submit_to_completion<F: FrontEnd>(front: &F) -> anyhow::Result<()> {
    let kind = kind("lifecycle");
    let runner = front
        .register_runner("parity-lifecycle")
        .await
        .map_err(err)?;
    let job = front.submit(&kind, json!({"n": 1}), 3).await.map_err(err)?;
    ensure!(front.job(job).await.map_err(err)?.state == JobState::Pending);
    let granted = claim_one(front, &runner, &kind).await?;
    ensure!(granted.job == job);
    ensure!(front.job(job).await.map_err(err)?.state == JobState::Claimed);
    ensure!(
        !front
            .heartbeat_job(&runner, job, Some(granted.epoch))
            .await
            .map_err(err)?
    );
    ensure!(front.job(job).await.map_err(err)?.state == JobState::Running);
    front
        .append_log(&runner, job, Some(granted.epoch), "working")
        .await
        .map_err(err)?;
    front
        .complete(&runner, job, Some(granted.epoch), json!({"ok": true}))
        .await
        .map_err(err)?;
    let done = front.job(job).await.map_err(err)?;
    ensure!(done.state == JobState::Completed, "{done:?}");
    ensure!(done.result == Some(json!({"ok": true})), "{done:?}");
    ensure!(front.log_messages(job).await.map_err(err)? == vec!["working".to_string()]);
    // Nothing is left to claim.
    ensure!(
        front
            .claim(&runner, &kind, 1, 0)
            .await
            .map_err(err)?
            .is_empty()
    );
    Ok(())
}

/// Only the holder of the current lease may change a job; everyone else gets `lease_lost` and
/// changes nothing.
pub async fn only_the_lease_holder_at_the_current_epoch_changes_a_job<F: FrontEnd>(
    front: &F,
) -> anyhow::Result<()> {
    let kind = kind("fencing");
    let holder = front.register_runner("parity-holder").await.map_err(err)?;
    let other = front.register_runner("parity-other").await.map_err(err)?;
    let job = front.submit(&kind, json!({}), 3).await.map_err(err)?;
    let granted = claim_one(front, &holder, &kind).await?;
    let refused = front
        .complete(&other, job, Some(granted.epoch), json!("stolen"))
        .await;
    ensure!(
        refused == Err(ErrorCode::LeaseLost),
        "another runner: {refused:?}"
    );
    let stale = front
        .complete(&holder, job, Some(granted.epoch + 1), json!("future"))
        .await;
    ensure!(
        stale == Err(ErrorCode::LeaseLost),
        "a wrong epoch: {stale:?}"
    );
    let log = front.append_log(&other, job, None, "not mine").await;
    ensure!(log == Err(ErrorCode::LeaseLost), "{log:?}");
    let summary = front.job(job).await.map_err(err)?;
    ensure!(
        summary.state == JobState::Claimed && summary.result.is_none(),
        "{summary:?}"
    );
    ensure!(front.log_messages(job).await.map_err(err)?.is_empty());
    front
        .complete(&holder, job, None, json!("mine"))
        .await
        .map_err(err)?;
    ensure!(front.job(job).await.map_err(err)?.result == Some(json!("mine")));
    let unknown = front.job(Uuid::nil()).await;
    ensure!(unknown == Err(ErrorCode::NotFound), "{unknown:?}");
    Ok(())
}

/// A retryable failure puts the job back (after its backoff); one not retryable, or the last
/// attempt, fails it; a failed job can be retried; a pending one cancelled.
pub async fn failures_retries_and_cancels_follow_the_lifecycle<F: FrontEnd>(
    front: &F,
) -> anyhow::Result<()> {
    let kind = kind("failures");
    let runner = front
        .register_runner("parity-failures")
        .await
        .map_err(err)?;
    let job = front.submit(&kind, json!({}), 2).await.map_err(err)?;
    let first = claim_one(front, &runner, &kind).await?;
    let state = front
        .fail(&runner, job, Some(first.epoch), "transient", true)
        .await
        .map_err(err)?;
    ensure!(state == JobState::Pending, "retried: {state:?}");
    let summary = front.job(job).await.map_err(err)?;
    ensure!(summary.error_reason == Some(FailureReason::RunnerError) && summary.attempt == 1);
    // The retry waits out its backoff (1 s with ±20 % jitter) before it can be claimed again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        if let Some(granted) = front
            .claim(&runner, &kind, 1, 500)
            .await
            .map_err(err)?
            .pop()
        {
            break granted;
        }
        ensure!(
            Instant::now() < deadline,
            "the retry never became claimable"
        );
    };
    ensure!(
        second.job == job && second.epoch > first.epoch,
        "{second:?} after {first:?}"
    );
    let state = front
        .fail(&runner, job, Some(second.epoch), "for good", false)
        .await
        .map_err(err)?;
    ensure!(state == JobState::Failed, "{state:?}");
    ensure!(front.cancel(job).await == Err(ErrorCode::InvalidState));
    ensure!(front.retry(job).await.map_err(err)? == JobState::Pending);
    ensure!(front.cancel(job).await.map_err(err)? == JobState::Cancelled);
    ensure!(front.retry(job).await.map_err(err)? == JobState::Pending);
    let pending = front.submit(&kind, json!({}), 1).await.map_err(err)?;
    ensure!(front.retry(pending).await == Err(ErrorCode::InvalidState));
    Ok(())
}

/// A cancel reaches the runner holding the job in its next answer, and the job ends cancelled
/// once the runner confirms.
pub async fn a_cancel_reaches_the_runner_and_ends_the_job<F: FrontEnd>(
    front: &F,
) -> anyhow::Result<()> {
    let kind = kind("cancel");
    let runner = front.register_runner("parity-cancel").await.map_err(err)?;
    let job = front.submit(&kind, json!({}), 3).await.map_err(err)?;
    let granted = claim_one(front, &runner, &kind).await?;
    ensure!(front.cancel(job).await.map_err(err)? == JobState::Cancelling);
    ensure!(
        front
            .heartbeat_job(&runner, job, Some(granted.epoch))
            .await
            .map_err(err)?,
        "the runner is told to stop"
    );
    let state = front
        .fail(&runner, job, Some(granted.epoch), "stopped", true)
        .await
        .map_err(err)?;
    ensure!(state == JobState::Cancelled, "{state:?}");
    Ok(())
}

/// A long poll is answered by a submit made while it waits.
pub async fn a_long_poll_is_woken_by_a_submit<F: FrontEnd>(front: &F) -> anyhow::Result<()> {
    let kind = kind("long-poll");
    let runner = front
        .register_runner("parity-long-poll")
        .await
        .map_err(err)?;
    let started = Instant::now();
    let (granted, job) = tokio::join!(front.claim(&runner, &kind, 1, 10_000), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        front.submit(&kind, json!({}), 3).await
    });
    let job = job.map_err(err)?;
    let granted = granted.map_err(err)?;
    ensure!(
        granted
            .iter()
            .map(|granted| granted.job)
            .collect::<Vec<_>>()
            == vec![job],
        "{granted:?}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "woken by the submit, not the timeout: {:?}",
        started.elapsed()
    );
    Ok(())
}

/// A runner's credentials do not reach user calls, the admin's do not reach runner calls, and a
/// deleted runner's stop working.
pub async fn each_audience_is_kept_to_its_own_calls<F: FrontEnd>(front: &F) -> anyhow::Result<()> {
    let kind = kind("audiences");
    let runner = front
        .register_runner("parity-audiences")
        .await
        .map_err(err)?;
    let as_runner = front.submit_as_runner(&runner, &kind).await;
    ensure!(as_runner == Err(ErrorCode::Forbidden), "{as_runner:?}");
    let as_admin = front.claim_as_admin(&kind).await;
    ensure!(as_admin == Err(ErrorCode::Forbidden), "{as_admin:?}");
    front.delete_runner(&runner).await.map_err(err)?;
    let deleted = front.claim(&runner, &kind, 1, 0).await;
    ensure!(deleted == Err(ErrorCode::Unauthorized), "{deleted:?}");
    Ok(())
}

fn err(code: ErrorCode) -> anyhow::Error {
    anyhow::anyhow!("refused: {code}")
}

type Scenario<'front> =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'front>>;

/// Every scenario, one after the other, on one front end.
pub async fn run_all<F: FrontEnd>(front: &F) -> anyhow::Result<()> {
    let scenarios: [(&str, Scenario<'_>); 6] = [
        (
            "lifecycle",
            Box::pin(a_job_runs_from_submit_to_completion(front)),
        ),
        (
            "fencing",
            Box::pin(only_the_lease_holder_at_the_current_epoch_changes_a_job(
                front,
            )),
        ),
        (
            "failures",
            Box::pin(failures_retries_and_cancels_follow_the_lifecycle(front)),
        ),
        (
            "cancel",
            Box::pin(a_cancel_reaches_the_runner_and_ends_the_job(front)),
        ),
        (
            "long poll",
            Box::pin(a_long_poll_is_woken_by_a_submit(front)),
        ),
        (
            "audiences",
            Box::pin(each_audience_is_kept_to_its_own_calls(front)),
        ),
    ];
    for (name, scenario) in scenarios {
        if let Err(error) = scenario.await {
            bail!("scenario {name}: {error:#}");
        }
    }
    Ok(())
}
