//! Cancel through the store: a pending job ends at once; a leased one is flagged so every
//! answer to its runner says stop, ends when the runner reports back or when the grace runs out,
//! and a finished job cannot be cancelled.

use std::sync::Arc;

use anyhow::{bail, ensure};
use muster_core::{FailureReason, JobState, Progress};
use muster_store::{RunnerBeat, Store};

use super::{
    T0, at, call_for, claim, claim_one, error_reason, expect_invalid_state, log_entry, policy,
    register_runner, runner_error, spec_with_policy, submit_one,
};

pub async fn cancel_of_a_pending_job_cancels_it_at_once(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(
        store,
        spec_with_policy("unwanted", policy(3, 600, 30, 1)),
        T0,
    )
    .await?;
    let record = store.cancel_job(job.id, 10_000, at(1_000)).await?;
    ensure!(record.state() == JobState::Cancelled);
    ensure!(record.lifecycle.finished_at == Some(at(1_000)));
    ensure!(error_reason(&record) == Some(FailureReason::Cancelled));
    ensure!(
        record == store.get_job(job.id).await?,
        "cancel answers the stored job"
    );
    let runner = register_runner(store, "too-late").await?;
    ensure!(
        claim(store, runner, &["unwanted"], 1, at(2_000))
            .await?
            .is_empty(),
        "a cancelled job is never claimed"
    );
    Ok(())
}

pub async fn cancel_of_a_claimed_job_asks_the_runner_to_stop_and_its_failure_ends_it_cancelled(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(
        store,
        spec_with_policy("stoppable", policy(3, 600, 30, 1)),
        T0,
    )
    .await?;
    let runner = register_runner(store, "obedient").await?;
    let claimed = claim_one(store, runner, "stoppable", at(1_000)).await?;
    let call = call_for(&claimed, runner);

    let before_cancel = store
        .job_heartbeat(call, None, Vec::new(), at(1_500))
        .await?;
    ensure!(!before_cancel.cancel, "no cancel requested yet");

    let record = store.cancel_job(job.id, 10_000, at(2_000)).await?;
    ensure!(record.state() == JobState::Cancelling);
    ensure!(record.lifecycle.cancel_deadline_at == Some(at(12_000)));
    ensure!(
        record.runner_id() == Some(runner),
        "the runner still holds it while stopping"
    );
    let again = store.cancel_job(job.id, 99_000, at(2_500)).await?;
    ensure!(again == record, "a second cancel changes nothing");

    let heartbeat = store
        .job_heartbeat(call, None, Vec::new(), at(3_000))
        .await?;
    ensure!(heartbeat.cancel, "a job heartbeat tells the runner to stop");
    ensure!(
        heartbeat.lease.is_some(),
        "the lease is kept while the runner stops"
    );
    let progress = store
        .report_progress(
            call,
            Progress {
                percent: 50.0,
                message: None,
            },
            at(3_100),
        )
        .await?;
    ensure!(
        progress.cancel,
        "a progress answer tells the runner to stop"
    );
    let logs = store
        .append_logs(call, vec![log_entry(None, "stopping")], at(3_200))
        .await?;
    ensure!(logs.cancel, "a log answer tells the runner to stop");
    let stop = store
        .runner_heartbeat(
            RunnerBeat {
                runner,
                draining: false,
                jobs: vec![job.id],
                hostname: None,
                version: None,
            },
            at(3_300),
        )
        .await?;
    ensure!(
        stop == vec![job.id],
        "the runner heartbeat lists the job to stop: {stop:?}"
    );

    // Retryable with attempts left, yet a cancel is final.
    let ended = store
        .fail_job(call, runner_error("interrupted"), true, at(4_000))
        .await?;
    ensure!(ended.state() == JobState::Cancelled);
    ensure!(error_reason(&ended) == Some(FailureReason::Cancelled));
    ensure!(ended.lifecycle.finished_at == Some(at(4_000)));
    ensure!(
        claim(store, runner, &["stoppable"], 1, at(3_600_000))
            .await?
            .is_empty(),
        "a cancelled job is never claimed again"
    );
    Ok(())
}

pub async fn a_cancel_the_runner_never_confirms_ends_when_the_grace_passes(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(
        store,
        spec_with_policy("stubborn", policy(3, 600, 30, 1)),
        T0,
    )
    .await?;
    let runner = register_runner(store, "deaf").await?;
    let claimed = claim_one(store, runner, "stubborn", T0).await?;
    store
        .job_heartbeat(call_for(&claimed, runner), None, Vec::new(), at(1_000))
        .await?;
    store.cancel_job(job.id, 5_000, at(2_000)).await?;

    let early = store.reap(at(6_999), 100).await?;
    ensure!(early.total() == 0, "{early:?}");
    ensure!(store.get_job(job.id).await?.state() == JobState::Cancelling);
    let report = store.reap(at(7_000), 100).await?;
    ensure!(
        report.cancels_finished == 1 && report.total() == 1,
        "{report:?}"
    );
    let ended = store.get_job(job.id).await?;
    ensure!(ended.state() == JobState::Cancelled);
    ensure!(error_reason(&ended) == Some(FailureReason::Cancelled));
    ensure!(ended.lifecycle.finished_at == Some(at(7_000)));
    ensure!(
        store.reap(at(8_000), 100).await?.total() == 0,
        "applied once"
    );
    Ok(())
}

pub async fn a_cancelling_job_whose_attempt_times_out_ends_cancelled_not_retried(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    // Timeout 10 s, lease renewed, a grace of an hour: the attempt deadline passes first.
    let job = submit_one(store, spec_with_policy("overdue", policy(3, 10, 30, 0)), T0).await?;
    let runner = register_runner(store, "overdue").await?;
    let claimed = claim_one(store, runner, "overdue", T0).await?;
    store.cancel_job(job.id, 3_600_000, at(1_000)).await?;
    store
        .job_heartbeat(call_for(&claimed, runner), None, Vec::new(), at(9_000))
        .await?;
    let report = store.reap(T0.plus_seconds(10), 100).await?;
    ensure!(report.total() == 1, "{report:?}");
    let ended = store.get_job(job.id).await?;
    ensure!(
        ended.state() == JobState::Cancelled,
        "a cancelled job must not come back as {}",
        ended.state()
    );
    ensure!(
        claim(store, runner, &["overdue"], 1, at(60_000))
            .await?
            .is_empty(),
        "never claimed again"
    );
    Ok(())
}

pub async fn completing_a_cancelling_job_completes_it(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(store, spec_with_policy("racing", policy(3, 600, 30, 1)), T0).await?;
    let runner = register_runner(store, "fast").await?;
    let claimed = claim_one(store, runner, "racing", at(1_000)).await?;
    store.cancel_job(job.id, 10_000, at(2_000)).await?;
    let done = store
        .complete_job(
            call_for(&claimed, runner),
            serde_json::json!({"answer": 42}),
            super::no_outputs(),
            at(2_500),
        )
        .await?;
    ensure!(
        done.state() == JobState::Completed,
        "the work was done; its result is real"
    );
    ensure!(done.result == Some(serde_json::json!({"answer": 42})));
    ensure!(done.lifecycle.error.is_none());
    ensure!(
        store.reap(at(60_000), 100).await?.total() == 0,
        "no cancel timer survives"
    );
    ensure!(store.get_job(job.id).await?.state() == JobState::Completed);
    Ok(())
}

pub async fn cancel_of_a_finished_job_is_refused(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let store = store.as_ref();
    let runner = register_runner(store, "finisher").await?;
    let completed =
        submit_one(store, spec_with_policy("f-done", policy(1, 600, 30, 1)), T0).await?;
    let failed = submit_one(
        store,
        spec_with_policy("f-failed", policy(1, 600, 30, 1)),
        T0,
    )
    .await?;
    let cancelled = submit_one(
        store,
        spec_with_policy("f-cancelled", policy(1, 600, 30, 1)),
        T0,
    )
    .await?;
    let done = claim_one(store, runner, "f-done", at(1_000)).await?;
    store
        .complete_job(
            call_for(&done, runner),
            serde_json::json!(1),
            super::no_outputs(),
            at(2_000),
        )
        .await?;
    let broken = claim_one(store, runner, "f-failed", at(1_000)).await?;
    store
        .fail_job(
            call_for(&broken, runner),
            runner_error("x"),
            false,
            at(2_000),
        )
        .await?;
    store.cancel_job(cancelled.id, 1_000, at(2_000)).await?;

    for (id, state) in [
        (completed.id, JobState::Completed),
        (failed.id, JobState::Failed),
        (cancelled.id, JobState::Cancelled),
    ] {
        let before = store.get_job(id).await?;
        ensure!(before.state() == state, "setup");
        expect_invalid_state(
            store.cancel_job(id, 1_000, at(3_000)).await,
            state,
            "cancel",
        )?;
        ensure!(
            store.get_job(id).await? == before,
            "a refused cancel of {state} changed it"
        );
    }
    Ok(())
}

pub async fn a_runner_reporting_reason_cancelled_ends_the_job_without_a_retry(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(
        store,
        spec_with_policy("self-stop", policy(5, 600, 30, 0)),
        T0,
    )
    .await?;
    let runner = register_runner(store, "self-stopping").await?;
    let claimed = claim_one(store, runner, "self-stop", at(1_000)).await?;
    let ended = store
        .fail_job(
            call_for(&claimed, runner),
            muster_core::JobError {
                reason: FailureReason::Cancelled,
                message: "stopped by the runner's operator".into(),
            },
            true,
            at(2_000),
        )
        .await?;
    ensure!(
        ended.state() == JobState::Cancelled,
        "attempts remain, yet no retry"
    );
    ensure!(error_reason(&ended) == Some(FailureReason::Cancelled));
    ensure!(ended == store.get_job(job.id).await?);
    ensure!(
        claim(store, runner, &["self-stop"], 1, at(60_000))
            .await?
            .is_empty(),
        "never claimed again"
    );
    Ok(())
}

pub async fn cancels_racing_claims_leave_every_job_either_claimed_or_cancelled(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    use std::collections::{BTreeMap, BTreeSet};

    const JOBS: usize = 400;
    let jobs = super::submit_many(store.as_ref(), "contested", JOBS, T0).await?;
    let mut claimers = Vec::new();
    for index in 0..4 {
        let store = Arc::clone(&store);
        let runner = register_runner(store.as_ref(), &format!("racer-{index}")).await?;
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = claim(store.as_ref(), runner, &["contested"], 5, at(1_000)).await?;
                if claimed.is_empty() {
                    return anyhow::Ok(mine);
                }
                mine.extend(claimed.into_iter().map(|claimed| claimed.job.id));
            }
        }));
    }
    // Every other job is cancelled while the claimers run; each cancel must succeed, whichever
    // state it finds the job in.
    let cancelled_ids: Vec<_> = jobs.iter().step_by(2).map(|job| job.id).collect();
    let canceller = {
        let store = Arc::clone(&store);
        let ids = cancelled_ids.clone();
        tokio::spawn(async move {
            let mut answers = BTreeMap::new();
            for id in ids {
                let job = store.cancel_job(id, 60_000, at(1_000)).await?;
                answers.insert(id, job.state());
            }
            anyhow::Ok(answers)
        })
    };
    let mut claimed_ids = BTreeSet::new();
    for claimer in claimers {
        for id in claimer.await??.into_iter() {
            ensure!(claimed_ids.insert(id), "job {id} was claimed twice");
        }
    }
    let cancel_answers = canceller.await??;
    for job in &jobs {
        let stored = store.get_job(job.id).await?;
        let was_claimed = claimed_ids.contains(&job.id);
        let was_cancelled = cancel_answers.contains_key(&job.id);
        let expected = match (was_claimed, was_cancelled) {
            // Claimed first, then asked to stop: its runner must still report.
            (true, true) => JobState::Cancelling,
            (true, false) => JobState::Claimed,
            // Cancelled while pending: it ended at once and nobody claimed it.
            (false, true) => JobState::Cancelled,
            (false, false) => bail!("job {} was neither claimed nor cancelled", job.id),
        };
        ensure!(
            stored.state() == expected,
            "job {} (claimed: {was_claimed}, cancelled: {was_cancelled}) is {}, expected {expected}",
            job.id,
            stored.state()
        );
        if let Some(answered) = cancel_answers.get(&job.id) {
            ensure!(
                *answered == expected,
                "the cancel of job {} answered {answered}, the job is {expected}",
                job.id
            );
        }
    }
    Ok(())
}
