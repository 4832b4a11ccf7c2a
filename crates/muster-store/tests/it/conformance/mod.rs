//! The storage conformance suite: what every `muster_store::Store` backend must do, written
//! against the trait alone. Each test is a plain async function taking a fresh, empty store (or,
//! when it needs a special configuration, a function that opens one), so every backend runs the
//! very same code; `main.rs` turns them into `#[tokio::test]`s per backend.
//!
//! Time is always passed in as a `Timestamp` the test picks; nothing here sleeps or reads a clock.

mod artifact_records;
mod artifacts;
mod attempts;
mod batch;
mod cancel;
mod claims;
mod enrollment;
mod fencing;
mod identity;
mod kinds;
mod listing;
mod logs;
mod misc;
mod organizations;
mod pruning;
mod reaping;
mod result_signatures;
mod retries;
mod runners;
mod workloads;

pub use artifact_records::*;
pub use artifacts::*;
pub use attempts::*;
pub use batch::*;
pub use cancel::*;
pub use claims::*;
pub use enrollment::*;
pub use fencing::*;
pub use identity::*;
pub use kinds::*;
pub use listing::*;
pub use logs::*;
pub use misc::*;
pub use organizations::*;
pub use pruning::*;
pub use reaping::*;
pub use result_signatures::*;
pub use retries::*;
pub use runners::*;
pub use workloads::*;

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail, ensure};
use muster_core::{
    ArtifactId, Capabilities, FailureReason, JobError, JobId, JobPolicy, JobRecord, JobSpec,
    JobState, LogLevel, NewJob, NewLogEntry, RunnerId, Timestamp,
};
use muster_store::{
    ClaimRequest, ClaimedJob, JobCall, JobFilter, LogPage, NewRunner, PageRequest, Store,
    StoreError,
};
use serde_json::Value;

/// A store opened for one test, with whatever must live as long as it (a temporary directory,
/// a database to drop afterwards).
pub struct OpenedStore {
    pub store: Arc<dyn Store>,
    _keep_alive: Box<dyn Any + Send + Sync>,
}

impl OpenedStore {
    pub fn new(store: Arc<dyn Store>, keep_alive: impl Any + Send + Sync) -> OpenedStore {
        OpenedStore {
            store,
            _keep_alive: Box::new(keep_alive),
        }
    }
}

/// An arbitrary fixed "now" for the start of every test.
pub const T0: Timestamp = Timestamp(1_800_000_000_000);

pub fn at(offset_ms: i64) -> Timestamp {
    T0.plus_millis(offset_ms)
}

/// Ids and token hashes must be unique within a store; one counter for the whole process is
/// the simplest way to guarantee it.
static UNIQUE: AtomicU64 = AtomicU64::new(1);

pub fn unique_bits() -> u128 {
    u128::from(UNIQUE.fetch_add(1, Ordering::Relaxed))
}

pub fn unique_token_hash() -> [u8; 32] {
    let mut hash = [0x5Au8; 32];
    hash[..16].copy_from_slice(&unique_bits().to_be_bytes());
    hash
}

pub fn spec(kind: &str) -> JobSpec {
    JobSpec::with_defaults(kind)
}

pub fn spec_with_policy(kind: &str, policy: JobPolicy) -> JobSpec {
    JobSpec {
        policy,
        ..JobSpec::with_defaults(kind)
    }
}

pub fn policy(
    max_attempts: u32,
    timeout_s: u32,
    lease_ttl_s: u32,
    backoff_base_s: u32,
) -> JobPolicy {
    JobPolicy {
        max_attempts,
        timeout_s,
        lease_ttl_s,
        backoff_base_s,
    }
}

pub fn new_job(spec: JobSpec, created_at: Timestamp) -> NewJob {
    NewJob {
        id: JobId::new(created_at, unique_bits()),
        created_at,
        spec,
        organization: Default::default(),
    }
}

/// Submit each spec as its own call, one millisecond apart, so "older" is unambiguous.
pub async fn submit_each(
    store: &dyn Store,
    specs: Vec<JobSpec>,
    first_created_at: Timestamp,
) -> anyhow::Result<Vec<JobRecord>> {
    let mut jobs = Vec::with_capacity(specs.len());
    for (index, spec) in specs.into_iter().enumerate() {
        let created_at = first_created_at.plus_millis(index as i64);
        jobs.push(submit_one(store, spec, created_at).await?);
    }
    Ok(jobs)
}

pub async fn submit_one(
    store: &dyn Store,
    spec: JobSpec,
    created_at: Timestamp,
) -> anyhow::Result<JobRecord> {
    let mut answers = store
        .submit_jobs(vec![new_job(spec, created_at)])
        .await
        .context("submit one job")?;
    ensure!(
        answers.len() == 1,
        "one answer per submitted job, got {}",
        answers.len()
    );
    let submitted = answers.remove(0);
    ensure!(
        submitted.created,
        "a job without an idempotency key is always created"
    );
    Ok(submitted.job)
}

/// `count` plain jobs of `kind` in one call, all created at `created_at`.
pub async fn submit_many(
    store: &dyn Store,
    kind: &str,
    count: usize,
    created_at: Timestamp,
) -> anyhow::Result<Vec<JobRecord>> {
    let jobs = (0..count)
        .map(|_| new_job(spec(kind), created_at))
        .collect();
    let answers = store.submit_jobs(jobs).await.context("submit a batch")?;
    ensure!(answers.len() == count, "one answer per job");
    Ok(answers.into_iter().map(|submitted| submitted.job).collect())
}

pub async fn register_runner(store: &dyn Store, name: &str) -> anyhow::Result<RunnerId> {
    register_runner_with_labels(store, name, BTreeMap::new()).await
}

pub async fn register_runner_with_labels(
    store: &dyn Store,
    name: &str,
    labels: BTreeMap<String, String>,
) -> anyhow::Result<RunnerId> {
    // Later registrations get later times, so "newest first" means the same on every backend.
    let bits = unique_bits();
    let created_at = T0.plus_millis(bits as i64);
    let id = RunnerId::new(created_at, bits);
    let record = store
        .create_runner(NewRunner {
            id,
            name: name.to_string(),
            labels,
            organization_id: None,
            bound_capabilities: None,
            token_hash: unique_token_hash(),
            created_at,
        })
        .await
        .with_context(|| format!("register runner {name}"))?;
    ensure!(record.id == id, "the store keeps the id it was given");
    Ok(id)
}

pub fn claim_request(runner: RunnerId, kinds: &[&str], max_jobs: u32) -> ClaimRequest {
    ClaimRequest {
        runner,
        kinds: kinds.iter().map(|kind| kind.to_string()).collect(),
        offer: Capabilities::default(),
        max_jobs,
    }
}

pub async fn claim(
    store: &dyn Store,
    runner: RunnerId,
    kinds: &[&str],
    max_jobs: u32,
    now: Timestamp,
) -> anyhow::Result<Vec<ClaimedJob>> {
    store
        .claim_jobs(claim_request(runner, kinds, max_jobs), now)
        .await
        .context("claim jobs")
}

/// Claim exactly one job and fail the test otherwise.
pub async fn claim_one(
    store: &dyn Store,
    runner: RunnerId,
    kind: &str,
    now: Timestamp,
) -> anyhow::Result<ClaimedJob> {
    let mut claimed = claim(store, runner, &[kind], 1, now).await?;
    match claimed.len() {
        1 => Ok(claimed.remove(0)),
        count => bail!("expected to claim one job of kind {kind}, got {count}"),
    }
}

pub fn call_for(claimed: &ClaimedJob, runner: RunnerId) -> JobCall {
    JobCall {
        runner,
        job: claimed.job.id,
        epoch: Some(claimed.lease.epoch),
    }
}

/// A made-up artifact id, distinct per `n`: stores take ids as given (the caller checks that
/// the bytes exist), so the conformance suite needs no bytes.
pub fn artifact(n: u64) -> ArtifactId {
    let mut digest = [0xA7u8; 32];
    digest[24..].copy_from_slice(&n.to_be_bytes());
    ArtifactId::from_digest(digest)
}

/// Outputs from `(name, artifact(n))` pairs.
pub fn outputs(pairs: &[(&str, u64)]) -> BTreeMap<String, ArtifactId> {
    pairs
        .iter()
        .map(|(name, n)| (name.to_string(), artifact(*n)))
        .collect()
}

pub fn no_outputs() -> BTreeMap<String, ArtifactId> {
    BTreeMap::new()
}

pub fn runner_error(message: &str) -> JobError {
    JobError {
        reason: FailureReason::RunnerError,
        message: message.to_string(),
    }
}

pub fn log_entry(seq: Option<u64>, message: &str) -> NewLogEntry {
    NewLogEntry {
        seq,
        level: LogLevel::Info,
        message: message.to_string(),
        metadata: None,
    }
}

pub fn error_reason(job: &JobRecord) -> Option<FailureReason> {
    job.lifecycle.error.as_ref().map(|error| error.reason)
}

pub fn expect_lease_lost<T: Debug>(
    outcome: Result<T, StoreError>,
    what: &str,
) -> anyhow::Result<()> {
    match outcome {
        Err(StoreError::LeaseLost(_)) => Ok(()),
        other => bail!("{what}: expected StoreError::LeaseLost, got {other:?}"),
    }
}

pub fn expect_invalid_state<T: Debug>(
    outcome: Result<T, StoreError>,
    expected_state: JobState,
    what: &str,
) -> anyhow::Result<()> {
    match outcome {
        Err(StoreError::InvalidState { state, .. }) if state == expected_state => Ok(()),
        other => {
            bail!("{what}: expected StoreError::InvalidState({expected_state}), got {other:?}")
        }
    }
}

pub fn expect_not_found<T: Debug>(
    outcome: Result<T, StoreError>,
    what: &str,
) -> anyhow::Result<()> {
    match outcome {
        Err(StoreError::NotFound(_)) => Ok(()),
        other => bail!("{what}: expected StoreError::NotFound, got {other:?}"),
    }
}

pub fn expect_rejected<T: Debug>(outcome: Result<T, StoreError>, what: &str) -> anyhow::Result<()> {
    match outcome {
        Err(StoreError::Rejected(_)) => Ok(()),
        other => bail!("{what}: expected StoreError::Rejected, got {other:?}"),
    }
}

/// Everything a job-scoped call could change, to prove a refused call changed none of it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSnapshot {
    pub job: JobRecord,
    pub logs: LogPage,
    pub dag: Option<Value>,
}

pub async fn snapshot(store: &dyn Store, id: JobId) -> anyhow::Result<JobSnapshot> {
    Ok(JobSnapshot {
        job: store.get_job(id).await.context("reload the job")?,
        logs: store
            .read_logs(id, None, 10_000)
            .await
            .context("read the job's log")?,
        dag: store.read_dag(id).await.context("read the job's DAG")?,
    })
}

/// Every job-scoped call a runner can make, all with `call`; each must be refused as a lost
/// lease and leave the job exactly as it was.
pub async fn expect_every_job_call_refused(
    store: &dyn Store,
    call: JobCall,
    now: Timestamp,
    who: &str,
) -> anyhow::Result<()> {
    let before = snapshot(store, call.job).await?;
    expect_lease_lost(
        store
            .job_heartbeat(
                call,
                Some(muster_core::Progress {
                    percent: 99.0,
                    message: Some("intruder".into()),
                }),
                vec![log_entry(None, "intruder heartbeat event")],
                now,
            )
            .await,
        &format!("job_heartbeat by {who}"),
    )?;
    expect_lease_lost(
        store
            .report_progress(
                call,
                muster_core::Progress {
                    percent: 42.0,
                    message: Some("intruder".into()),
                },
                now,
            )
            .await,
        &format!("report_progress by {who}"),
    )?;
    expect_lease_lost(
        store
            .append_logs(call, vec![log_entry(Some(0), "intruder log")], now)
            .await,
        &format!("append_logs by {who}"),
    )?;
    expect_lease_lost(
        store
            .sync_dag(
                call,
                serde_json::json!({"nodes": ["intruder"], "edges": []}),
                now,
            )
            .await,
        &format!("sync_dag by {who}"),
    )?;
    expect_lease_lost(
        store
            .record_outputs(call, outputs(&[("intruder", 0xBAD)]), now)
            .await,
        &format!("record_outputs by {who}"),
    )?;
    expect_lease_lost(
        store
            .fail_job(call, runner_error("intruder failure"), true, now)
            .await,
        &format!("fail_job by {who}"),
    )?;
    // The runner that completed the job, at that attempt's epoch, repeating its completion is
    // answered as done (its answer may have been lost); the snapshot check below proves nothing
    // changed.
    let repeat_of_its_completion = before.job.state() == JobState::Completed
        && before.job.runner_id() == Some(call.runner)
        && call
            .epoch
            .is_none_or(|epoch| epoch == before.job.lifecycle.lease_epoch);
    let completion = store
        .complete_job(
            call,
            serde_json::json!({"by": "intruder"}),
            outputs(&[("intruder", 0xBAD)]),
            now,
        )
        .await;
    if repeat_of_its_completion {
        completion.context("a repeated completion by the runner that completed the job")?;
    } else {
        expect_lease_lost(completion, &format!("complete_job by {who}"))?;
    }
    let batch = store
        .complete_jobs(
            call.runner,
            vec![muster_store::CompletionItem {
                job: call.job,
                epoch: call.epoch,
                result: serde_json::json!({"by": "intruder batch"}),
                signature: None,
            }],
            now,
        )
        .await
        .context("a batch whose only item is refused still answers")?;
    ensure!(
        batch.len() == 1,
        "one outcome per item, got {}",
        batch.len()
    );
    let outcome = batch
        .into_iter()
        .next()
        .context("the batch's only outcome")?;
    if repeat_of_its_completion {
        outcome.context("a repeated completion in a batch by the runner that completed the job")?;
    } else {
        expect_lease_lost(outcome, &format!("complete_jobs item by {who}"))?;
    }
    let after = snapshot(store, call.job).await?;
    ensure!(
        after == before,
        "refused calls by {who} changed the job:\nbefore {before:#?}\nafter {after:#?}"
    );
    Ok(())
}

/// Every job in the store, newest first, by walking `list_jobs` with `filter`.
pub async fn list_all_jobs(
    store: &dyn Store,
    filter: JobFilter,
    page_size: u32,
) -> anyhow::Result<Vec<JobRecord>> {
    let mut all = Vec::new();
    let mut cursor = None;
    for _ in 0..100_000 {
        let page = store
            .list_jobs(
                filter.clone(),
                PageRequest {
                    limit: page_size,
                    cursor: cursor.clone(),
                },
            )
            .await
            .context("list a page of jobs")?;
        ensure!(
            page.items.len() <= page_size as usize,
            "a page holds at most its limit: {} > {page_size}",
            page.items.len()
        );
        ensure!(
            cursor.is_none() || !page.items.is_empty() || page.next_cursor.is_none(),
            "an empty page must end the walk"
        );
        all.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(all),
        }
    }
    bail!("list_jobs never stopped giving cursors")
}

/// Every item of a list, walking its pages of `page_size` with `list`, checking each page holds
/// at most its limit; fails when the cursors never end.
pub async fn every_page<T, F, Fut>(
    what: &str,
    page_size: u32,
    mut list: F,
) -> anyhow::Result<Vec<T>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = Result<muster_store::Page<T>, StoreError>>,
{
    let mut all = Vec::new();
    let mut cursor = None;
    for _ in 0..10_000 {
        let answer = list(PageRequest {
            limit: page_size,
            cursor: cursor.clone(),
        })
        .await
        .with_context(|| format!("list a page of {what}"))?;
        ensure!(
            answer.items.len() <= page_size as usize,
            "a page of {what} holds at most its limit"
        );
        all.extend(answer.items);
        match answer.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(all),
        }
    }
    bail!("listing {what} never stopped giving cursors")
}
