//! The reaper: an unrenewed lease expires, an attempt past `timeout_s` times out, an unconfirmed
//! cancel ends after its grace, and each deadline is applied exactly once however many reapers
//! run.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::ensure;
use muster_core::{FailureReason, JobSpec, JobState, Timestamp};
use muster_store::{ReapReport, Store};

use super::{
    T0, at, call_for, claim, claim_one, error_reason, policy, register_runner, spec,
    spec_with_policy, submit_many, submit_one,
};

fn within_jitter(delay_ms: i64, nominal_ms: i64) -> bool {
    // ±20 % jitter, with a millisecond of slack for truncation to whole milliseconds.
    (nominal_ms * 8 / 10 - 1..=nominal_ms * 12 / 10 + 1).contains(&delay_ms)
}

pub async fn an_expired_lease_returns_the_job_to_pending_after_backoff(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(
        store,
        spec_with_policy("expiring", policy(3, 600, 30, 2)),
        T0,
    )
    .await?;
    let runner = register_runner(store, "vanishing").await?;
    let claimed = claim_one(store, runner, "expiring", T0).await?;
    let expiry = claimed.lease.expires_at;
    ensure!(expiry == T0.plus_seconds(30));

    let early = store.reap(expiry.plus_millis(-1), 100).await?;
    ensure!(
        early == ReapReport::default(),
        "nothing is due early: {early:?}"
    );
    ensure!(store.get_job(job.id).await?.state() == JobState::Claimed);

    let report = store.reap(expiry, 100).await?;
    ensure!(
        report
            == ReapReport {
                lease_expired: 1,
                changed_jobs: vec![job.id],
                ..ReapReport::default()
            },
        "{report:?}"
    );
    let reaped = store.get_job(job.id).await?;
    ensure!(reaped.state() == JobState::Pending);
    ensure!(error_reason(&reaped) == Some(FailureReason::LeaseExpired));
    ensure!(reaped.runner_id().is_none());
    ensure!(reaped.lifecycle.lease().is_none());
    ensure!(reaped.lifecycle.attempt == 1);
    let delay = reaped.lifecycle.run_after.millis_since(expiry);
    ensure!(
        within_jitter(delay, 2_000),
        "attempt 1 with base 2 s waits 2 s ± 20 %, waited {delay} ms"
    );

    let retry_at = reaped.lifecycle.run_after;
    ensure!(
        claim(store, runner, &["expiring"], 1, retry_at.plus_millis(-1))
            .await?
            .is_empty(),
        "not claimable during the backoff"
    );
    let again = claim_one(store, runner, "expiring", retry_at).await?;
    ensure!(again.job.lifecycle.attempt == 2);
    ensure!(again.lease.epoch > claimed.lease.epoch);
    Ok(())
}

pub async fn a_lease_renewed_by_heartbeats_is_not_reaped(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(
        store,
        spec_with_policy("renewed", policy(3, 600, 30, 1)),
        T0,
    )
    .await?;
    let runner = register_runner(store, "alive").await?;
    let claimed = claim_one(store, runner, "renewed", T0).await?;
    let ack = store
        .job_heartbeat(call_for(&claimed, runner), None, Vec::new(), at(20_000))
        .await?;
    let lease = ack
        .lease
        .ok_or_else(|| anyhow::anyhow!("a heartbeat answers the lease"))?;
    ensure!(
        lease.expires_at == at(50_000),
        "renewed to now + ttl: {lease:?}"
    );
    ensure!(
        lease.epoch == claimed.lease.epoch,
        "renewing keeps the epoch"
    );
    ensure!(!ack.cancel);

    let report = store.reap(at(49_999), 100).await?;
    ensure!(report.total() == 0, "{report:?}");
    let stored = store.get_job(job.id).await?;
    ensure!(
        stored.state() == JobState::Running,
        "the heartbeat started it"
    );
    ensure!(stored.lifecycle.lease_expires_at == Some(at(50_000)));
    let report = store.reap(at(50_000), 100).await?;
    ensure!(report.lease_expired == 1, "{report:?}");
    Ok(())
}

/// A job held for far longer than any one lease, renewed by heartbeats, is never reaped while
/// renewed, counts as held by its runner all along (while a job claimed with it finishes early),
/// and is reaped once, at the deadline of the lease it last renewed.
pub async fn a_job_held_for_many_leases_is_reaped_only_after_its_last_renewal_lapses(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let long = submit_one(
        store,
        spec_with_policy("marathon", policy(3, 86_400, 30, 1)),
        T0,
    )
    .await?;
    let short = submit_one(
        store,
        spec_with_policy("marathon", policy(3, 86_400, 30, 1)),
        T0,
    )
    .await?;
    let runner = register_runner(store, "steady").await?;
    let claimed = claim(store, runner, &["marathon"], 2, T0).await?;
    ensure!(claimed.len() == 2, "both jobs claimed: {}", claimed.len());
    ensure!(store.get_runner(runner).await?.running_jobs == 2);
    let (held, finished): (Vec<_>, Vec<_>) =
        claimed.into_iter().partition(|job| job.job.id == long.id);
    let (Some(held), Some(finished)) = (held.first(), finished.first()) else {
        anyhow::bail!("the claim returned the two submitted jobs");
    };
    ensure!(finished.job.id == short.id);
    store
        .complete_job(
            call_for(finished, runner),
            serde_json::json!({"done": true}),
            BTreeMap::new(),
            at(1_000),
        )
        .await?;
    ensure!(store.get_runner(runner).await?.running_jobs == 1);

    // Twenty minutes of heartbeats every 20 s, with the reaper running in between.
    let mut renewed_until = held.lease.expires_at;
    for step in 1..=60_i64 {
        let now = at(step * 20_000);
        for offset in [-10_000, -1] {
            let report = store.reap(now.plus_millis(offset), 100).await?;
            ensure!(
                report.total() == 0,
                "nothing due at step {step}: {report:?}"
            );
        }
        let ack = store
            .job_heartbeat(call_for(held, runner), None, Vec::new(), now)
            .await?;
        let lease = ack
            .lease
            .ok_or_else(|| anyhow::anyhow!("a heartbeat answers the lease"))?;
        renewed_until = lease.expires_at;
        ensure!(
            store.get_runner(runner).await?.running_jobs == 1,
            "still held at step {step}"
        );
    }
    ensure!(renewed_until == at(60 * 20_000 + 30_000));
    for offset in [-20_000, -5_000, -1] {
        let report = store.reap(renewed_until.plus_millis(offset), 100).await?;
        ensure!(report.total() == 0, "not yet due: {report:?}");
    }
    ensure!(store.get_job(long.id).await?.state() == JobState::Running);
    let report = store.reap(renewed_until, 100).await?;
    ensure!(report.lease_expired == 1, "{report:?}");
    ensure!(
        store
            .reap(renewed_until.plus_seconds(60), 100)
            .await?
            .total()
            == 0
    );
    ensure!(store.get_job(long.id).await?.state() == JobState::Pending);
    ensure!(store.get_job(short.id).await?.state() == JobState::Completed);
    ensure!(store.get_runner(runner).await?.running_jobs == 0);
    Ok(())
}

pub async fn the_last_attempt_lost_to_lease_expiry_fails_the_job(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(
        store,
        spec_with_policy("one-shot", policy(1, 600, 30, 1)),
        T0,
    )
    .await?;
    let runner = register_runner(store, "gone").await?;
    let claimed = claim_one(store, runner, "one-shot", T0).await?;
    let report = store.reap(claimed.lease.expires_at, 100).await?;
    ensure!(report.lease_expired == 1, "{report:?}");
    let failed = store.get_job(job.id).await?;
    ensure!(failed.state() == JobState::Failed);
    ensure!(error_reason(&failed) == Some(FailureReason::LeaseExpired));
    ensure!(failed.lifecycle.finished_at == Some(claimed.lease.expires_at));
    ensure!(
        claim(store, runner, &["one-shot"], 1, at(3_600_000))
            .await?
            .is_empty(),
        "a failed job is never claimed again"
    );
    Ok(())
}

pub async fn an_attempt_past_its_timeout_is_timed_out(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let store = store.as_ref();
    // Lease 30 s kept alive by heartbeats, timeout 60 s: the timeout is what ends it.
    let retried = submit_one(store, spec_with_policy("slow", policy(2, 60, 30, 1)), T0).await?;
    let last = submit_one(
        store,
        spec_with_policy("slow-last", policy(1, 60, 30, 1)),
        T0,
    )
    .await?;
    let runner = register_runner(store, "slowpoke").await?;
    let first = claim_one(store, runner, "slow", T0).await?;
    let only = claim_one(store, runner, "slow-last", T0).await?;
    for claimed in [&first, &only] {
        for beat in [25_000, 50_000] {
            store
                .job_heartbeat(call_for(claimed, runner), None, Vec::new(), at(beat))
                .await?;
        }
    }
    let deadline = T0.plus_seconds(60);
    ensure!(store.reap(deadline.plus_millis(-1), 100).await?.total() == 0);
    let report = store.reap(deadline, 100).await?;
    ensure!(
        (
            report.timed_out,
            report.lease_expired,
            report.cancels_finished
        ) == (2, 0, 0)
            && report.changed_jobs.len() == 2
            && report.changed_jobs.contains(&retried.id)
            && report.changed_jobs.contains(&last.id),
        "{report:?}"
    );

    let pending = store.get_job(retried.id).await?;
    ensure!(pending.state() == JobState::Pending, "one attempt left");
    ensure!(error_reason(&pending) == Some(FailureReason::TimedOut));
    ensure!(within_jitter(
        pending.lifecycle.run_after.millis_since(deadline),
        1_000
    ));

    let failed = store.get_job(last.id).await?;
    ensure!(failed.state() == JobState::Failed, "no attempt left");
    ensure!(error_reason(&failed) == Some(FailureReason::TimedOut));
    Ok(())
}

pub async fn reap_applies_each_deadline_once(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let store_arc = Arc::clone(&store);
    let store = store.as_ref();
    // Default policy: three attempts, a 30 s lease; all due at T0.
    submit_many(store, "expire-once", 6, T0).await?;
    let runner = register_runner(store, "expire-once").await?;
    let claimed = claim(store, runner, &["expire-once"], 6, T0).await?;
    ensure!(claimed.len() == 6);
    let expiry: Timestamp = T0.plus_seconds(30);

    // Two reapers at once, then a third after both: six expiries counted six times in all.
    let (first, second) = futures::join!(store_arc.reap(expiry, 100), store_arc.reap(expiry, 100));
    let third = store.reap(expiry.plus_millis(5), 100).await?;
    let total = first?.total() + second?.total() + third.total();
    ensure!(total == 6, "each expiry applied once, counted {total}");
    ensure!(third.total() == 0, "nothing left for a later reaper");
    for job in &claimed {
        let stored = store.get_job(job.job.id).await?;
        ensure!(stored.state() == JobState::Pending);
        ensure!(stored.lifecycle.attempt == 1, "one attempt used, not two");
    }
    Ok(())
}

pub async fn reap_handles_at_most_its_limit_per_call(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let store = store.as_ref();
    // Default policy: three attempts, a 30 s lease; all due at T0.
    submit_many(store, "limited-reap", 5, T0).await?;
    let runner = register_runner(store, "limited-reap").await?;
    ensure!(claim(store, runner, &["limited-reap"], 5, T0).await?.len() == 5);
    let expiry = T0.plus_seconds(30);
    ensure!(store.reap(expiry, 2).await?.total() == 2);
    ensure!(store.reap(expiry, 2).await?.total() == 2);
    ensure!(store.reap(expiry, 2).await?.total() == 1);
    ensure!(store.reap(expiry, 2).await?.total() == 0);
    Ok(())
}

pub async fn reap_leaves_pending_and_finished_jobs_alone(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let pending = submit_one(store, spec("untouched"), T0).await?;
    let scheduled = submit_one(
        store,
        JobSpec {
            run_after: Some(at(10_000)),
            ..spec("untouched")
        },
        T0,
    )
    .await?;
    let done = submit_one(store, spec("finished"), T0).await?;
    let runner = register_runner(store, "finisher").await?;
    let claimed = claim_one(store, runner, "finished", T0).await?;
    store
        .complete_job(
            call_for(&claimed, runner),
            serde_json::json!(1),
            super::no_outputs(),
            at(1_000),
        )
        .await?;
    let before = [
        store.get_job(pending.id).await?,
        store.get_job(scheduled.id).await?,
        store.get_job(done.id).await?,
    ];
    let report = store.reap(at(100_000_000), 100).await?;
    ensure!(report.total() == 0, "{report:?}");
    let after = [
        store.get_job(pending.id).await?,
        store.get_job(scheduled.id).await?,
        store.get_job(done.id).await?,
    ];
    ensure!(before == after);
    Ok(())
}
