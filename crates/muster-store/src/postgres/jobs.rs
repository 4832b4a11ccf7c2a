//! Job operations of the PostgreSQL backend. Write operations run inside the caller's
//! transaction and lock the rows of the jobs they change (see the module docs of `postgres` for
//! the lock order); reads take any connection.

use std::collections::{BTreeMap, HashMap, HashSet};

use deadpool_postgres::{GenericClient, Transaction};
use muster_core::{
    ArtifactId, Capabilities, JobError, JobId, JobLifecycle, JobRecord, JobState, LogEntry,
    LogLevel, NewJob, NewLogEntry, Progress, RunnerId, Timestamp, TransitionError,
};
use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::rows::{
    JOB_COLUMNS, LEASE_CHECK_INTERVAL_MS, LIFECYCLE_COLUMNS, LeaseChecks, LifecycleWrite,
    QueuePlace, column, job_from_row, job_id_column, lifecycle_from_row, runner_id_column,
    write_lifecycles,
};
use super::runners::{ClaimingRunner, touch_runner};
use super::{PENDING_CHANNEL, Shared, execute, query};
use crate::encoding::{
    capabilities_to_json, decode_cursor, inputs_to_json, level_code, level_from_code,
    outputs_to_json,
};
use crate::rules::{
    MAX_CLAIM_SCAN_PER_KIND, PruneCandidate, TERMINAL_STATE_CODES, choose_jobs_to_prune,
    first_log_seq_after, jitter_for, job_not_found, merged_outputs, next_log_seq,
    truncation_notice,
};
use crate::{
    ClaimRequest, ClaimedJob, CompletionItem, JobAck, JobCall, JobFilter, LogPage, LogPosition,
    Page, PageRequest, QueueDepth, ReapReport, RecordedOutputs, StoreError, Submitted,
};

/// Load a job by id; with `lock`, also take its row lock for the rest of the transaction.
pub(super) async fn load_by_id(
    client: &impl GenericClient,
    id: JobId,
    lock: bool,
) -> Result<(i64, JobRecord), StoreError> {
    let sql = if lock {
        format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 FOR UPDATE")
    } else {
        format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1")
    };
    let rows = query(client, &sql, &[&id.as_bytes().as_slice()]).await?;
    match rows.first() {
        Some(row) => job_from_row(row),
        None => Err(job_not_found(id)),
    }
}

async fn notify_pending(transaction: &Transaction<'_>) -> Result<(), StoreError> {
    // Delivered at commit, and only then; identical notifications of one transaction are folded.
    execute(transaction, "SELECT pg_notify($1, '')", &[&PENDING_CHANNEL])
        .await
        .map(|_| ())
}

macro_rules! submit_sql {
    ($on_conflict:literal) => {
        concat!(
            "WITH stored AS ( \
               INSERT INTO jobs (id, kind, state, priority, payload, requirements, idempotency_key, \
                 max_attempts, timeout_s, lease_ttl_s, backoff_base_s, run_after, created_at, inputs) \
               SELECT id, kind, 0, priority, payload, requirements, idempotency_key, max_attempts, \
                 timeout_s, lease_ttl_s, backoff_base_s, run_after, created_at, inputs \
               FROM unnest($1::bytea[], $2::text[], $3::integer[], $4::text[], $5::text[], $6::text[], \
                 $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], \
                 $13::text[]) \
                 AS n(id, kind, priority, payload, requirements, idempotency_key, max_attempts, \
                   timeout_s, lease_ttl_s, backoff_base_s, run_after, created_at, inputs) ",
            $on_conflict,
            " RETURNING seq, id, kind, priority, run_after, requirements), \
             queued AS ( \
               INSERT INTO job_queue (seq, kind, priority, run_after, requirements) \
               SELECT seq, kind, priority, run_after, requirements FROM stored) \
             SELECT id FROM stored"
        )
    };
}

const SUBMIT_SQL: &str = submit_sql!("");
const SUBMIT_SQL_WITH_KEYS: &str =
    submit_sql!("ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING");

pub(super) async fn submit(
    transaction: &Transaction<'_>,
    new_jobs: Vec<NewJob>,
) -> Result<Vec<Submitted>, StoreError> {
    // A key used twice in one batch: the first job is stored, the later ones answer with it.
    let mut first_with_key: HashMap<&str, usize> = HashMap::new();
    let mut fresh: Vec<usize> = Vec::new();
    for (index, new_job) in new_jobs.iter().enumerate() {
        match &new_job.spec.idempotency_key {
            Some(key) if first_with_key.contains_key(key.as_str()) => {}
            Some(key) => {
                first_with_key.insert(key.as_str(), index);
                fresh.push(index);
            }
            None => fresh.push(index),
        }
    }
    let mut ids = Vec::with_capacity(fresh.len());
    let mut kinds = Vec::with_capacity(fresh.len());
    let mut priorities = Vec::with_capacity(fresh.len());
    let mut payloads = Vec::with_capacity(fresh.len());
    let mut requirements = Vec::with_capacity(fresh.len());
    let mut keys = Vec::with_capacity(fresh.len());
    let mut max_attempts = Vec::with_capacity(fresh.len());
    let mut timeouts = Vec::with_capacity(fresh.len());
    let mut lease_ttls = Vec::with_capacity(fresh.len());
    let mut backoffs = Vec::with_capacity(fresh.len());
    let mut run_afters = Vec::with_capacity(fresh.len());
    let mut created_ats = Vec::with_capacity(fresh.len());
    let mut inputs = Vec::with_capacity(fresh.len());
    for &index in &fresh {
        let new_job = &new_jobs[index];
        let spec = &new_job.spec;
        ids.push(new_job.id.as_bytes().to_vec());
        kinds.push(spec.kind.as_str());
        priorities.push(spec.priority);
        payloads.push(spec.payload.to_string());
        requirements.push(
            (!spec.requirements.is_empty())
                .then(|| capabilities_to_json(&spec.requirements).to_string()),
        );
        keys.push(spec.idempotency_key.as_deref());
        max_attempts.push(i64::from(spec.policy.max_attempts));
        timeouts.push(i64::from(spec.policy.timeout_s));
        lease_ttls.push(i64::from(spec.policy.lease_ttl_s));
        backoffs.push(i64::from(spec.policy.backoff_base_s));
        run_afters.push(new_job.initial_lifecycle().run_after.as_millis());
        created_ats.push(new_job.created_at.as_millis());
        inputs.push(inputs_to_json(&spec.inputs));
    }
    // One statement stores the jobs and their queue rows. A key another transaction stored
    // first makes its job's row skip (the job is then answered from the stored one below).
    // Batches without keys (most) leave out ON CONFLICT: it makes every row a speculative
    // insertion, which costs about as much again as the insert.
    let any_key = keys.iter().any(Option::is_some);
    let sql = if any_key {
        SUBMIT_SQL_WITH_KEYS
    } else {
        SUBMIT_SQL
    };
    let inserted = query(
        transaction,
        sql,
        &[
            &ids,
            &kinds,
            &priorities,
            &payloads,
            &requirements,
            &keys,
            &max_attempts,
            &timeouts,
            &lease_ttls,
            &backoffs,
            &run_afters,
            &created_ats,
            &inputs,
        ],
    )
    .await?;
    let mut created_ids = std::collections::HashSet::with_capacity(inserted.len());
    for row in &inserted {
        created_ids.insert(job_id_column(row, 0)?);
    }
    if !created_ids.is_empty() {
        notify_pending(transaction).await?;
    }
    let mut answers: Vec<Option<Submitted>> = Vec::with_capacity(new_jobs.len());
    let mut by_key: HashMap<String, JobRecord> = HashMap::new();
    for new_job in &new_jobs {
        if created_ids.contains(&new_job.id) {
            let spec = &new_job.spec;
            let job = JobRecord {
                id: new_job.id,
                kind: spec.kind.clone(),
                payload: spec.payload.clone(),
                priority: spec.priority,
                requirements: spec.requirements.clone(),
                idempotency_key: spec.idempotency_key.clone(),
                created_at: new_job.created_at,
                progress: Progress::default(),
                result: None,
                inputs: spec.inputs.clone(),
                outputs: BTreeMap::new(),
                lifecycle: new_job.initial_lifecycle(),
            };
            if let Some(key) = &spec.idempotency_key {
                by_key.entry(key.clone()).or_insert_with(|| job.clone());
            }
            answers.push(Some(Submitted { job, created: true }));
        } else {
            answers.push(None);
        }
    }
    for (index, new_job) in new_jobs.iter().enumerate() {
        if answers[index].is_some() {
            continue;
        }
        let key = new_job.spec.idempotency_key.as_deref().ok_or_else(|| {
            StoreError::Internal(format!("job {} without a key was not stored", new_job.id))
        })?;
        let existing = match by_key.get(key) {
            Some(job) => job.clone(),
            None => {
                let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = $1");
                let rows = query(transaction, &sql, &[&key]).await?;
                let row = rows.first().ok_or_else(|| {
                    StoreError::Internal(format!("idempotency key {key} is taken by no job"))
                })?;
                let (_, job) = job_from_row(row)?;
                by_key.insert(key.to_string(), job.clone());
                job
            }
        };
        answers[index] = Some(Submitted {
            job: existing,
            created: false,
        });
    }
    Ok(answers.into_iter().flatten().collect())
}

pub(super) async fn list(
    client: &impl GenericClient,
    filter: &JobFilter,
    page: &PageRequest,
) -> Result<Page<JobRecord>, StoreError> {
    let before = decode_cursor(page.cursor.as_deref())?;
    let state = filter.state.map(|state| state.code() as i16);
    let runner = filter.runner_id.map(|id| id.as_bytes().to_vec());
    let limit = i64::from(page.limit).saturating_add(1);
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if let Some(code) = &state {
        params.push(code);
    }
    let mut sql = match filter.state {
        // Failed and cancelled jobs are listed through their own small table, newest first,
        // instead of walking every job for them.
        Some(JobState::Failed | JobState::Cancelled) => format!(
            "SELECT {JOB_COLUMNS} FROM jobs \
             JOIN (SELECT seq AS unsuccessful_seq FROM jobs_unsuccessful WHERE state = $1) u \
               ON jobs.seq = u.unsuccessful_seq WHERE true"
        ),
        // Leased jobs are among those the lease checks list (every leased job is in one).
        Some(leased) if leased.is_leased() => format!(
            "SELECT {JOB_COLUMNS} FROM jobs \
             JOIN (SELECT DISTINCT unnest(seqs) AS leased_seq FROM lease_checks) l \
               ON jobs.seq = l.leased_seq WHERE state = $1"
        ),
        Some(_) => format!("SELECT {JOB_COLUMNS} FROM jobs WHERE state = $1"),
        None => format!("SELECT {JOB_COLUMNS} FROM jobs WHERE true"),
    };
    if let Some(kind) = &filter.kind {
        params.push(kind);
        sql.push_str(&format!(" AND kind = ${}", params.len()));
    }
    if let Some(runner) = &runner {
        params.push(runner);
        sql.push_str(&format!(" AND runner_id = ${}", params.len()));
    }
    if let Some(before) = &before {
        params.push(before);
        sql.push_str(&format!(" AND seq < ${}", params.len()));
    }
    params.push(&limit);
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", params.len()));
    let rows = query(client, &sql, &params).await?;
    let mut jobs: Vec<(i64, JobRecord)> =
        rows.iter().map(job_from_row).collect::<Result<_, _>>()?;
    let next_cursor = if jobs.len() > page.limit as usize {
        jobs.truncate(page.limit as usize);
        jobs.last().map(|(seq, _)| seq.to_string())
    } else {
        None
    };
    Ok(Page {
        items: jobs.into_iter().map(|(_, job)| job).collect(),
        next_cursor,
    })
}

/// Lock and load a job, let `change` transition its lifecycle, write it back. Nothing is written
/// when `change` refuses.
async fn transition<T>(
    transaction: &Transaction<'_>,
    id: JobId,
    operation: &'static str,
    change: impl FnOnce(&mut JobLifecycle, i64) -> Result<T, TransitionError>,
) -> Result<(i64, JobRecord, T), StoreError> {
    let (seq, mut job) = load_by_id(transaction, id, true).await?;
    let before = job.lifecycle.clone();
    let outcome = change(&mut job.lifecycle, seq)
        .map_err(|error| StoreError::from_transition(error, &id.to_string(), operation))?;
    write_one(transaction, seq, &before, &job, None).await?;
    Ok((seq, job, outcome))
}

async fn write_one(
    transaction: &Transaction<'_>,
    seq: i64,
    before: &JobLifecycle,
    job: &JobRecord,
    result: Option<String>,
) -> Result<(), StoreError> {
    write_lifecycles(
        transaction,
        &[LifecycleWrite {
            seq,
            before,
            after: &job.lifecycle,
            result,
            place: Some(QueuePlace::of(job)),
        }],
    )
    .await
}

pub(super) async fn cancel(
    transaction: &Transaction<'_>,
    id: JobId,
    grace_ms: i64,
    now: Timestamp,
) -> Result<JobRecord, StoreError> {
    // A pending job belongs to whoever holds its queue row: a claim takes that row and then
    // changes the job without locking its row first. So a cancel of a pending job takes the queue
    // row too, before the job's row (waiting for a claim that holds it to commit). Then the job
    // is locked and cancelled in whatever state it is in by then: still pending, or claimed.
    let (seq, job) = load_by_id(transaction, id, false).await?;
    if job.state() == JobState::Pending {
        execute(transaction, "DELETE FROM job_queue WHERE seq = $1", &[&seq]).await?;
    }
    let (_, job, ()) = transition(transaction, id, "cancel", |lifecycle, _| {
        lifecycle.cancel(grace_ms, now)
    })
    .await?;
    Ok(job)
}

pub(super) async fn retry(
    transaction: &Transaction<'_>,
    id: JobId,
    now: Timestamp,
) -> Result<JobRecord, StoreError> {
    let (_, job, ()) = transition(transaction, id, "retry", |lifecycle, _| {
        lifecycle.retry(now)
    })
    .await?;
    notify_pending(transaction).await?;
    Ok(job)
}

/// A queue row that may be claimed: its place in the claim order.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    priority: i32,
    seq: i64,
}

/// One claim of a batch, once its runner's row said it may claim.
struct ReadyClaim<'a> {
    /// Where the claim is in the batch.
    index: usize,
    claim: &'a ClaimRequest,
    /// The runner's declared offer with the labels an operator gave it.
    offer: Capabilities,
    kinds: Vec<&'a str>,
    now: Timestamp,
}

/// Where the claim batches running now have locked the queue up to, per kind: a batch that
/// starts while another one holds the head of a kind's queue reads on from where that one
/// stopped, instead of walking (and skipping) every row it holds. Jobs that enter the queue ahead
/// of that point meanwhile (a higher priority, a retry) are taken by the next batch; a batch that
/// finds too few jobs past the point reads from the head after all.
#[derive(Default)]
pub(crate) struct ClaimFrontiers {
    next_batch: std::sync::atomic::AtomicU64,
    held: std::sync::Mutex<Vec<HeldFrontier>>,
}

/// (batch, kind, furthest (priority, seq) it locked)
type HeldFrontier = (u64, String, (i32, i64));

/// A claim batch's place among the running ones; forgotten when dropped.
pub(crate) struct ClaimBatch {
    frontiers: std::sync::Arc<ClaimFrontiers>,
    id: u64,
}

impl ClaimBatch {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for ClaimBatch {
    fn drop(&mut self) {
        if let Ok(mut held) = self.frontiers.held.lock() {
            held.retain(|(batch, ..)| *batch != self.id);
        }
    }
}

impl ClaimFrontiers {
    pub(crate) fn start(frontiers: &std::sync::Arc<ClaimFrontiers>) -> ClaimBatch {
        let id = frontiers
            .next_batch
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ClaimBatch {
            frontiers: std::sync::Arc::clone(frontiers),
            id,
        }
    }

    /// The furthest point other running batches locked in `kind`'s queue.
    fn ahead_of(&self, batch: u64, kind: &str) -> Option<(i32, i64)> {
        let held = self.held.lock().ok()?;
        held.iter()
            .filter(|(other, held_kind, _)| *other != batch && held_kind == kind)
            .map(|(.., position)| *position)
            .max()
    }

    fn record(&self, batch: u64, kind: &str, position: (i32, i64)) {
        if let Ok(mut held) = self.held.lock() {
            held.push((batch, kind.to_string(), position));
        }
    }
}

/// Run claims that arrived together as one transaction (see `combine`): every claim is answered
/// as if it had run alone, one after the other in the order given, each getting the first jobs
/// in claim order that it can take and that an earlier claim of the batch did not take.
pub(super) async fn claim_batch(
    transaction: &Transaction<'_>,
    shared: &Shared,
    claims: &[(ClaimRequest, Timestamp)],
    batch: u64,
) -> Result<Vec<Result<Vec<ClaimedJob>, StoreError>>, StoreError> {
    // The runners' rows first: they are the only rows a claim may wait for, and they are taken
    // before any job row, so a claim never holds a job while it waits.
    let runners = futures::future::try_join_all(
        claims
            .iter()
            .map(|(claim, now)| touch_runner(transaction, shared, claim, *now)),
    )
    .await?;
    let mut answers: Vec<Result<Vec<ClaimedJob>, StoreError>> = Vec::with_capacity(claims.len());
    let mut ready = Vec::new();
    for (index, ((claim, now), runner)) in claims.iter().zip(runners).enumerate() {
        match runner {
            ClaimingRunner::Unknown(error) => answers.push(Err(error)),
            ClaimingRunner::Draining => answers.push(Ok(Vec::new())),
            ClaimingRunner::Ready(registered_labels) => {
                answers.push(Ok(Vec::new()));
                if claim.max_jobs == 0 {
                    continue;
                }
                let mut offer = claim.offer.clone();
                // Labels an operator gave the runner at registration win over what it declares.
                offer.labels.extend(registered_labels);
                let mut kinds: Vec<&str> = claim.kinds.iter().map(String::as_str).collect();
                kinds.sort_unstable();
                kinds.dedup();
                ready.push(ReadyClaim {
                    index,
                    claim,
                    offer,
                    kinds,
                    now: *now,
                });
            }
        }
    }
    if ready.is_empty() {
        return Ok(answers);
    }
    // Jobs due for the earliest clock of the batch are due for every claim in it.
    let due_at = ready
        .iter()
        .map(|claim| claim.now)
        .min()
        .unwrap_or(Timestamp(0));
    // Jobs without requirements: one locked read per kind, enough for every claim naming it.
    let mut open_wanted: BTreeMap<&str, usize> = BTreeMap::new();
    for claim in &ready {
        for kind in &claim.kinds {
            *open_wanted.entry(kind).or_default() += claim.claim.max_jobs as usize;
        }
    }
    let open_reads = open_wanted.iter().map(|(kind, wanted)| async move {
        let after = shared.claim_frontiers.ahead_of(batch, kind);
        let mut found = open_candidates(transaction, kind, *wanted, due_at, after).await?;
        if after.is_some() && found.len() < *wanted {
            // Few jobs past the other batches: read from the head (this batch's own locked rows
            // come back too, and are not skipped).
            found = open_candidates(transaction, kind, *wanted, due_at, None).await?;
        }
        if let Some(last) = found.last() {
            shared
                .claim_frontiers
                .record(batch, kind, (last.priority, last.seq));
        }
        Ok::<_, StoreError>(found)
    });
    // Jobs with requirements: read per claim, as they depend on the runner's offer.
    let constrained_reads = ready.iter().map(|claim| async move {
        let mut found = Vec::new();
        for kind in &claim.kinds {
            found.extend(
                constrained_candidates(
                    transaction,
                    kind,
                    &claim.offer,
                    claim.claim.max_jobs as usize,
                    due_at,
                )
                .await?,
            );
        }
        Ok::<_, StoreError>(found)
    });
    let (open, constrained) = futures::try_join!(
        futures::future::try_join_all(open_reads),
        futures::future::try_join_all(constrained_reads),
    )?;
    let open_by_kind: HashMap<&str, Vec<Candidate>> =
        open_wanted.keys().copied().zip(open).collect();

    // Hand out the locked rows in batch order. Rows locked and handed to nobody (a claim that
    // named two kinds took fewer of one than was read for it) are released at commit.
    let mut taken: std::collections::HashSet<i64> = std::collections::HashSet::new();
    let mut assigned: Vec<Vec<i64>> = Vec::with_capacity(ready.len());
    for (claim, constrained) in ready.iter().zip(constrained) {
        let mut candidates: Vec<Candidate> = claim
            .kinds
            .iter()
            .filter_map(|kind| open_by_kind.get(kind))
            .flatten()
            .copied()
            .chain(constrained)
            .filter(|candidate| !taken.contains(&candidate.seq))
            .collect();
        candidates.sort_by_key(|candidate| (candidate.priority, candidate.seq));
        candidates.dedup_by_key(|candidate| candidate.seq);
        candidates.truncate(claim.claim.max_jobs as usize);
        taken.extend(candidates.iter().map(|candidate| candidate.seq));
        assigned.push(candidates.iter().map(|candidate| candidate.seq).collect());
    }
    if taken.is_empty() {
        return Ok(answers);
    }
    let seqs: Vec<i64> = taken.into_iter().collect();
    // The queue rows held (locked above) make these pending jobs this batch's: everything else
    // that changes a pending job (only a cancel) takes its queue row first. So the job rows are
    // read without a lock: a row lock per job would cost a write and a WAL record each.
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE seq = ANY($1) AND state = 0");
    let rows = query(transaction, &sql, &[&seqs]).await?;
    let mut loaded: HashMap<i64, JobRecord> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let (seq, job) = job_from_row(row)?;
        loaded.insert(seq, job);
    }
    // Per claimed job, in the order of `claimed_by_claim` flattened: its row and its lifecycle
    // before the claim.
    let mut befores: Vec<(i64, JobLifecycle)> = Vec::with_capacity(loaded.len());
    let mut outputs_to_clear = Vec::new();
    let mut claimed_by_claim: Vec<Vec<ClaimedJob>> = Vec::with_capacity(ready.len());
    for (claim, seqs) in ready.iter().zip(assigned) {
        let mut claimed = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let Some(mut job) = loaded.remove(&seq) else {
                continue;
            };
            let before = job.lifecycle.clone();
            let lease = job
                .lifecycle
                .claim(claim.claim.runner, claim.now)
                // The rows are locked pending jobs that are due, so a refusal here is a bug; as
                // an error it rolls back the whole batch rather than leave some jobs claimed.
                .map_err(|error| {
                    StoreError::Internal(format!("claim of candidate job {}: {error}", job.id))
                })?;
            if !job.outputs.is_empty() {
                // Outputs belong to the attempt that recorded them: a new attempt starts without
                // the leftovers of a failed or lost one.
                outputs_to_clear.push(seq);
                job.outputs.clear();
            }
            befores.push((seq, before));
            claimed.push(ClaimedJob { job, lease });
        }
        claimed_by_claim.push(claimed);
    }
    let writes: Vec<LifecycleWrite<'_>> = befores
        .iter()
        .zip(claimed_by_claim.iter().flatten())
        .map(|((seq, before), claimed)| LifecycleWrite {
            seq: *seq,
            before,
            after: &claimed.job.lifecycle,
            result: None,
            place: None,
        })
        .collect();
    futures::try_join!(write_lifecycles(transaction, &writes), async {
        if outputs_to_clear.is_empty() {
            return Ok(0);
        }
        execute(
            transaction,
            "UPDATE jobs SET outputs = NULL WHERE seq = ANY($1)",
            &[&outputs_to_clear],
        )
        .await
    })?;
    drop(writes);
    for (claim, claimed) in ready.iter().zip(claimed_by_claim) {
        answers[claim.index] = Ok(claimed);
    }
    Ok(answers)
}

/// Rows selected as `seq, priority`.
fn candidates_from_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<Candidate>, StoreError> {
    rows.iter()
        .map(|row| {
            Ok(Candidate {
                seq: column(row, 0)?,
                priority: column(row, 1)?,
            })
        })
        .collect()
}

/// The first `wanted` due jobs of `kind` without requirements (past `after` in claim order, when
/// given), locked (skipping those other claims hold), in claim order.
async fn open_candidates(
    transaction: &Transaction<'_>,
    kind: &str,
    wanted: usize,
    now: Timestamp,
    after: Option<(i32, i64)>,
) -> Result<Vec<Candidate>, StoreError> {
    let rows = match after {
        None => {
            query(
                transaction,
                "SELECT seq, priority FROM job_queue \
                 WHERE kind = $1 AND requirements IS NULL AND run_after <= $2 \
                 ORDER BY priority, seq LIMIT $3 FOR UPDATE SKIP LOCKED",
                &[&kind, &now.as_millis(), &(wanted as i64)],
            )
            .await?
        }
        Some((priority, seq)) => {
            query(
                transaction,
                "SELECT seq, priority FROM job_queue \
                 WHERE kind = $1 AND requirements IS NULL AND run_after <= $2 \
                   AND (priority, seq) > ($4, $5) \
                 ORDER BY priority, seq LIMIT $3 FOR UPDATE SKIP LOCKED",
                &[&kind, &now.as_millis(), &(wanted as i64), &priority, &seq],
            )
            .await?
        }
    };
    candidates_from_rows(&rows)
}

/// Due jobs of `kind` with requirements that `offer` meets, locked, in claim order.
/// Requirements are checked here, not in SQL, so the scan is bounded: a claim reads at most
/// `MAX_CLAIM_SCAN_PER_KIND` such jobs that this runner cannot take. Rows are read without a
/// lock and only the matching ones are locked, so rows this runner cannot take are never held
/// from a runner that can.
async fn constrained_candidates(
    transaction: &Transaction<'_>,
    kind: &str,
    offer: &Capabilities,
    wanted: usize,
    now: Timestamp,
) -> Result<Vec<Candidate>, StoreError> {
    let page_size = (wanted + 8).min(512) as i64;
    let mut matching: Vec<i64> = Vec::new();
    let mut scanned = 0usize;
    let mut after: (i32, i64) = (i32::MIN, i64::MIN);
    while matching.len() < wanted && scanned < MAX_CLAIM_SCAN_PER_KIND {
        let rows = query(
            transaction,
            "SELECT seq, priority, requirements FROM job_queue \
             WHERE kind = $1 AND requirements IS NOT NULL AND run_after <= $2 \
               AND (priority, seq) > ($4, $5) \
             ORDER BY priority, seq LIMIT $3",
            &[&kind, &now.as_millis(), &page_size, &after.0, &after.1],
        )
        .await?;
        let exhausted = (rows.len() as i64) < page_size;
        scanned += rows.len();
        for row in &rows {
            let seq: i64 = column(row, 0)?;
            let priority: i32 = column(row, 1)?;
            let text: &str = column(row, 2)?;
            after = (priority, seq);
            let requirements = serde_json::from_str::<Value>(text)
                .map_err(|error| error.to_string())
                .and_then(|value| crate::encoding::capabilities_from_json(&value))
                .map_err(|problem| {
                    StoreError::Internal(format!("stored requirements of job row {seq}: {problem}"))
                })?;
            if matching.len() < wanted && requirements.are_met_by(offer) {
                matching.push(seq);
            }
        }
        if exhausted {
            break;
        }
    }
    if matching.is_empty() {
        return Ok(Vec::new());
    }
    // Rows claimed or cancelled since they were read are gone or locked, and skipped.
    let rows = query(
        transaction,
        "SELECT seq, priority FROM job_queue WHERE seq = ANY($1) AND run_after <= $2 \
         ORDER BY priority, seq FOR UPDATE SKIP LOCKED",
        &[&matching, &now.as_millis()],
    )
    .await?;
    candidates_from_rows(&rows)
}

/// Job heartbeats, progress reports and log appends: activity by the lease holder (a claimed
/// job becomes running), optionally extending the lease, recording progress, appending logs.
pub(super) async fn activity(
    transaction: &Transaction<'_>,
    shared: &Shared,
    call: JobCall,
    activity: crate::Activity,
    now: Timestamp,
) -> Result<JobAck, StoreError> {
    let (seq, job) = load_by_id(transaction, call.job, true).await?;
    activity_on(
        transaction,
        shared,
        call,
        seq,
        job,
        activity.progress,
        activity.log_entries,
        activity.extend_lease,
        now,
    )
    .await
    .map(|(_, ack)| ack)
}

/// Activity by the lease holder with nothing else to record (a claimed job becomes running).
async fn mark_activity(
    transaction: &Transaction<'_>,
    shared: &Shared,
    call: JobCall,
    seq: i64,
    job: JobRecord,
    now: Timestamp,
) -> Result<(i64, JobAck), StoreError> {
    activity_on(
        transaction,
        shared,
        call,
        seq,
        job,
        None,
        Vec::new(),
        false,
        now,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn activity_on(
    transaction: &Transaction<'_>,
    shared: &Shared,
    call: JobCall,
    seq: i64,
    mut job: JobRecord,
    progress: Option<Progress>,
    entries: Vec<NewLogEntry>,
    extend_lease: bool,
    now: Timestamp,
) -> Result<(i64, JobAck), StoreError> {
    let before = job.lifecycle.clone();
    let lease = if extend_lease {
        job.lifecycle
            .extend_lease(call.runner, call.epoch, now)
            .map(Some)
    } else {
        job.lifecycle
            .record_activity(call.runner, call.epoch, now)
            .map(|()| None)
    }
    .map_err(|error| StoreError::from_transition(error, &call.job.to_string(), "this call"))?;
    if job.lifecycle != before {
        write_one(transaction, seq, &before, &job, None).await?;
    }
    if let Some(progress) = progress {
        execute(
            transaction,
            "UPDATE jobs SET progress_percent = $2, progress_message = $3 WHERE seq = $1",
            &[&seq, &progress.percent, &progress.message],
        )
        .await?;
    }
    let next_seq = append_log_entries(transaction, shared, seq, entries, now).await?;
    let ack = JobAck {
        lease: lease.or_else(|| job.lifecycle.lease()),
        cancel: job.lifecycle.cancel_requested(),
        next_seq,
    };
    Ok((seq, ack))
}

/// Append entries to a job's log within its cap; answers the job's next sequence number. The
/// caller holds the job's row lock, so the log's counters cannot move underneath.
async fn append_log_entries(
    transaction: &Transaction<'_>,
    shared: &Shared,
    job_seq: i64,
    entries: Vec<NewLogEntry>,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let rows = query(
        transaction,
        "SELECT log_next_seq, log_bytes, log_truncated FROM jobs WHERE seq = $1",
        &[&job_seq],
    )
    .await?;
    let row = rows
        .first()
        .ok_or_else(|| StoreError::Internal(format!("job row {job_seq} vanished")))?;
    let (mut next_seq, mut bytes, mut truncated): (i64, i64, bool) =
        (column(row, 0)?, column(row, 1)?, column(row, 2)?);
    if entries.is_empty() {
        return Ok(next_seq as u64);
    }
    let cap = shared.log_cap_bytes.min(i64::MAX as u64) as i64;
    let truncation_notice = truncation_notice(cap);
    let mut batch = LogRows::default();
    let insert_one = "INSERT INTO job_logs (job_seq, seq, ts, level, message, metadata) \
                      VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (job_seq, seq) DO NOTHING";
    for entry in entries {
        let entry_seq = match entry.seq {
            Some(seq) => i64::try_from(seq)
                .map_err(|_| StoreError::Rejected(format!("log seq {seq} is too large")))?,
            None => next_seq,
        };
        if entry.seq.is_some() && entry_seq < next_seq {
            // Already stored (a retried batch) or a gap filled late: keep what is there. A late
            // entry counts against the cap like any other, or out-of-order seqs would bypass it;
            // past the cap a free slot gets the truncation notice, a taken one stays as it is.
            if truncated {
                continue;
            }
            let weight = entry.weight() as i64;
            let over_cap = bytes + weight > cap;
            let metadata = entry.metadata.as_ref().map(Value::to_string);
            let (level, message, metadata) = if over_cap {
                (level_code(LogLevel::Warn), truncation_notice.as_str(), None)
            } else {
                (level_code(entry.level), entry.message.as_str(), metadata)
            };
            // Earlier entries of this call may fill the same slot; they go in first.
            batch.flush(transaction, job_seq).await?;
            let inserted = execute(
                transaction,
                insert_one,
                &[
                    &job_seq,
                    &entry_seq,
                    &now.as_millis(),
                    &(level as i16),
                    &message,
                    &metadata,
                ],
            )
            .await?;
            if inserted > 0 {
                if over_cap {
                    truncated = true;
                } else {
                    bytes += weight;
                }
            }
            continue;
        }
        next_seq = entry_seq + 1;
        if truncated {
            continue;
        }
        let weight = entry.weight() as i64;
        if bytes + weight > cap {
            truncated = true;
            batch.push(
                entry_seq,
                now,
                LogLevel::Warn,
                truncation_notice.clone(),
                None,
            );
            continue;
        }
        bytes += weight;
        let metadata = entry.metadata.as_ref().map(Value::to_string);
        batch.push(entry_seq, now, entry.level, entry.message, metadata);
    }
    batch.flush(transaction, job_seq).await?;
    execute(
        transaction,
        "UPDATE jobs SET log_next_seq = $2, log_bytes = $3, log_truncated = $4 WHERE seq = $1",
        &[&job_seq, &next_seq, &bytes, &truncated],
    )
    .await?;
    Ok(next_seq as u64)
}

/// Log entries to insert in one statement, column by column.
#[derive(Default)]
struct LogRows {
    seqs: Vec<i64>,
    timestamps: Vec<i64>,
    levels: Vec<i16>,
    messages: Vec<String>,
    metadata: Vec<Option<String>>,
}

impl LogRows {
    fn push(
        &mut self,
        seq: i64,
        at: Timestamp,
        level: LogLevel,
        message: String,
        metadata: Option<String>,
    ) {
        self.seqs.push(seq);
        self.timestamps.push(at.as_millis());
        self.levels.push(level_code(level) as i16);
        self.messages.push(message);
        self.metadata.push(metadata);
    }

    async fn flush(
        &mut self,
        transaction: &Transaction<'_>,
        job_seq: i64,
    ) -> Result<(), StoreError> {
        if self.seqs.is_empty() {
            return Ok(());
        }
        execute(
            transaction,
            "INSERT INTO job_logs (job_seq, seq, ts, level, message, metadata) \
             SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::smallint[], $5::text[], $6::text[]) \
             ON CONFLICT (job_seq, seq) DO NOTHING",
            &[
                &job_seq,
                &self.seqs,
                &self.timestamps,
                &self.levels,
                &self.messages,
                &self.metadata,
            ],
        )
        .await?;
        *self = LogRows::default();
        Ok(())
    }
}

pub(super) async fn sync_dag(
    transaction: &Transaction<'_>,
    shared: &Shared,
    call: JobCall,
    dag: Value,
    now: Timestamp,
) -> Result<JobAck, StoreError> {
    let (seq, job) = load_by_id(transaction, call.job, true).await?;
    let (seq, ack) = mark_activity(transaction, shared, call, seq, job, now).await?;
    execute(
        transaction,
        "INSERT INTO job_dags (job_seq, dag, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (job_seq) DO UPDATE SET dag = excluded.dag, updated_at = excluded.updated_at",
        &[&seq, &dag.to_string(), &now.as_millis()],
    )
    .await?;
    Ok(ack)
}

async fn write_outputs(
    transaction: &Transaction<'_>,
    seq: i64,
    outputs: &BTreeMap<String, ArtifactId>,
) -> Result<(), StoreError> {
    execute(
        transaction,
        "UPDATE jobs SET outputs = $2 WHERE seq = $1",
        &[&seq, &outputs_to_json(outputs)],
    )
    .await
    .map(|_| ())
}

pub(super) async fn record_outputs(
    transaction: &Transaction<'_>,
    shared: &Shared,
    call: JobCall,
    outputs: BTreeMap<String, ArtifactId>,
    now: Timestamp,
) -> Result<RecordedOutputs, StoreError> {
    let (seq, job) = load_by_id(transaction, call.job, true).await?;
    job.lifecycle
        .check_lease(call.runner, call.epoch)
        .map_err(|error| StoreError::from_transition(error, &call.job.to_string(), "this call"))?;
    // Every refusal (lease, limit) comes before the first write.
    let merged = merged_outputs(&job, outputs)?;
    let (seq, ack) = mark_activity(transaction, shared, call, seq, job, now).await?;
    write_outputs(transaction, seq, &merged).await?;
    Ok(RecordedOutputs {
        ack,
        outputs: merged,
    })
}

pub(super) async fn complete(
    transaction: &Transaction<'_>,
    call: JobCall,
    result: Value,
    outputs: BTreeMap<String, ArtifactId>,
    now: Timestamp,
) -> Result<JobRecord, StoreError> {
    let (seq, mut job) = load_by_id(transaction, call.job, true).await?;
    let before = job.lifecycle.clone();
    job.lifecycle
        .complete(call.runner, call.epoch, now)
        .map_err(|error| StoreError::from_transition(error, &call.job.to_string(), "complete"))?;
    if job.lifecycle == before {
        // A repeated completion: answered with the job as the first one left it.
        return Ok(job);
    }
    let merged = if outputs.is_empty() {
        None
    } else {
        Some(merged_outputs(&job, outputs)?)
    };
    write_one(transaction, seq, &before, &job, Some(result.to_string())).await?;
    if let Some(merged) = merged {
        write_outputs(transaction, seq, &merged).await?;
        job.outputs = merged;
    }
    job.result = Some(result);
    Ok(job)
}

/// Lock and read `columns` of the jobs `ids` names (each once; unknown ones are left out). Rows
/// are locked in one order (by seq), so two batches naming the same jobs cannot deadlock.
async fn lock_jobs(
    transaction: &Transaction<'_>,
    columns: &str,
    ids: Vec<JobId>,
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let mut ids: Vec<Vec<u8>> = ids.iter().map(|id| id.as_bytes().to_vec()).collect();
    ids.sort_unstable();
    ids.dedup();
    let sql = format!("SELECT {columns} FROM jobs WHERE id = ANY($1) ORDER BY seq FOR UPDATE");
    query(transaction, &sql, &[&ids]).await
}

/// Run single completions without outputs that arrived together (see `combine`), possibly from
/// several runners, as one transaction: each is answered as if it had run alone, in the order
/// given; a refused one changes nothing.
pub(super) async fn complete_singles(
    transaction: &Transaction<'_>,
    calls: &[(JobCall, Value, Timestamp)],
) -> Result<Vec<Result<JobRecord, StoreError>>, StoreError> {
    let rows = lock_jobs(
        transaction,
        JOB_COLUMNS,
        calls.iter().map(|(call, _, _)| call.job).collect(),
    )
    .await?;
    // Per job: its row's seq, its lifecycle as read, and the job as changed by the calls.
    let mut current: HashMap<JobId, (i64, JobLifecycle, JobRecord)> =
        HashMap::with_capacity(rows.len());
    for row in &rows {
        let (seq, job) = job_from_row(row)?;
        current.insert(job.id, (seq, job.lifecycle.clone(), job));
    }
    let mut results: HashMap<i64, String> = HashMap::new();
    let answers = calls
        .iter()
        .map(|(call, result, now)| {
            let Some((seq, _, job)) = current.get_mut(&call.job) else {
                return Err(job_not_found(call.job));
            };
            let mut completed = job.lifecycle.clone();
            completed
                .complete(call.runner, call.epoch, *now)
                .map_err(|error| {
                    StoreError::from_transition(error, &call.job.to_string(), "complete")
                })?;
            // A repeated completion changes nothing, its result included: it is answered with
            // the job as the first one left it.
            if completed != job.lifecycle {
                job.lifecycle = completed;
                job.result = Some(result.clone());
                results.insert(*seq, result.to_string());
            }
            Ok(job.clone())
        })
        .collect();
    let writes: Vec<LifecycleWrite<'_>> = current
        .values()
        .filter(|(_, before, job)| *before != job.lifecycle)
        .map(|(seq, before, job)| LifecycleWrite {
            seq: *seq,
            before,
            after: &job.lifecycle,
            result: results.remove(seq),
            place: Some(QueuePlace::of(job)),
        })
        .collect();
    write_lifecycles(transaction, &writes).await?;
    Ok(answers)
}

/// Run batch completions that arrived together (see `combine`), possibly from several runners,
/// as one transaction: each item is answered as if its call had run alone, calls in the order
/// given, items in the order of their call.
pub(super) async fn complete_batch(
    transaction: &Transaction<'_>,
    calls: &[(RunnerId, Vec<CompletionItem>, Timestamp)],
) -> Result<Vec<Result<Vec<Result<(), StoreError>>, StoreError>>, StoreError> {
    let rows = lock_jobs(
        transaction,
        LIFECYCLE_COLUMNS,
        calls
            .iter()
            .flat_map(|(_, items, _)| items.iter().map(|item| item.job))
            .collect(),
    )
    .await?;
    // Per job: its row's seq, its lifecycle as read, and as changed by the calls.
    let mut current: HashMap<JobId, (i64, JobLifecycle, JobLifecycle)> =
        HashMap::with_capacity(rows.len());
    for row in &rows {
        let (seq, lifecycle) = lifecycle_from_row(row)?;
        current.insert(job_id_column(row, 18)?, (seq, lifecycle.clone(), lifecycle));
    }
    let mut answers = Vec::with_capacity(calls.len());
    let mut results: HashMap<i64, String> = HashMap::new();
    for (runner, items, now) in calls {
        let mut call_answers = Vec::with_capacity(items.len());
        for item in items {
            let Some((seq, _, lifecycle)) = current.get_mut(&item.job) else {
                call_answers.push(Err(job_not_found(item.job)));
                continue;
            };
            // Each item is checked on its own copy, so a refused item changes nothing.
            let mut attempt = lifecycle.clone();
            match attempt.complete(*runner, item.epoch, *now) {
                Ok(()) => {
                    // A repeated completion changes nothing, its result included.
                    if attempt != *lifecycle {
                        *lifecycle = attempt;
                        results.insert(*seq, item.result.to_string());
                    }
                    call_answers.push(Ok(()));
                }
                Err(error) => call_answers.push(Err(StoreError::from_transition(
                    error,
                    &item.job.to_string(),
                    "complete",
                ))),
            }
        }
        answers.push(Ok(call_answers));
    }
    let writes: Vec<LifecycleWrite<'_>> = current
        .values()
        .filter(|(_, before, after)| before != after)
        .map(|(seq, before, after)| LifecycleWrite {
            seq: *seq,
            before,
            after,
            result: results.remove(seq),
            place: None,
        })
        .collect();
    write_lifecycles(transaction, &writes).await?;
    Ok(answers)
}

pub(super) async fn fail(
    transaction: &Transaction<'_>,
    call: JobCall,
    error: JobError,
    retryable: bool,
    now: Timestamp,
) -> Result<JobRecord, StoreError> {
    let (_, job, ()) = transition(transaction, call.job, "fail", |lifecycle, seq| {
        let jitter = jitter_for(seq, lifecycle.attempt);
        lifecycle.fail(call.runner, call.epoch, error, retryable, jitter, now)
    })
    .await?;
    if job.state() == JobState::Pending {
        notify_pending(transaction).await?;
    }
    Ok(job)
}

/// Write back jobs whose lifecycles changed (each with what it was before) and, when any went
/// back to the queue, wake the waiting claims of every coordinator. Answers whether any did.
pub(super) async fn write_back_and_wake(
    transaction: &Transaction<'_>,
    changed: &[(i64, JobLifecycle, JobRecord)],
) -> Result<bool, StoreError> {
    let writes: Vec<LifecycleWrite<'_>> = changed
        .iter()
        .map(|(seq, before, job)| LifecycleWrite {
            seq: *seq,
            before,
            after: &job.lifecycle,
            result: None,
            place: Some(QueuePlace::of(job)),
        })
        .collect();
    write_lifecycles(transaction, &writes).await?;
    let requeued = changed
        .iter()
        .any(|(_, _, job)| job.state() == JobState::Pending);
    if requeued {
        notify_pending(transaction).await?;
    }
    Ok(requeued)
}

/// Lease checks one reaper pass reads at most.
const MAX_CHECKS_PER_REAP: i64 = 1_000;
/// Jobs one reaper pass looks at at most: checks beyond are left for the next pass, so a pile of
/// them cannot make one transaction long.
const MAX_CHECKED_JOBS_PER_REAP: usize = 20_000;

/// Apply passed deadlines to at most `limit` jobs, looking at the lease checks that are due (see
/// the `lease_checks` migration); answers what was done and whether any job went back to the
/// queue. Every job of a due check that is still leased gets a new check: at its deadline when
/// that has not passed yet (or sooner, see `LEASE_CHECK_INTERVAL_MS`), right away when it was
/// over the limit or another transaction held its row.
pub(super) async fn reap(
    transaction: &Transaction<'_>,
    now: Timestamp,
    limit: u32,
) -> Result<(ReapReport, bool), StoreError> {
    // Another coordinator's reaper may hold some checks: skipped, it handles them.
    let due = query(
        transaction,
        "SELECT id, runner_id, seqs FROM lease_checks WHERE check_at <= $1 \
         ORDER BY check_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        &[&now.as_millis(), &MAX_CHECKS_PER_REAP],
    )
    .await?;
    let mut report = ReapReport::default();
    if due.is_empty() {
        return Ok((report, false));
    }
    let mut check_ids = Vec::with_capacity(due.len());
    let mut runner_of: HashMap<i64, RunnerId> = HashMap::new();
    for row in &due {
        if runner_of.len() >= MAX_CHECKED_JOBS_PER_REAP {
            break;
        }
        let id: i64 = column(row, 0)?;
        let runner = runner_id_column(row, 1)?
            .ok_or_else(|| StoreError::Internal(format!("lease check {id} without a runner")))?;
        let seqs: Vec<i64> = column(row, 2)?;
        check_ids.push(id);
        runner_of.extend(seqs.into_iter().map(|seq| (seq, runner)));
    }
    let checked: Vec<i64> = runner_of.keys().copied().collect();
    // Most checked jobs have finished, and most others are not due yet: both are settled on a
    // plain read, without locking anything. A job not due gets its next check; whatever changes
    // it meanwhile either moves its deadline later, ends its lease, or writes a check of its own
    // (a deadline moved earlier, a new claim).
    let sql =
        format!("SELECT {LIFECYCLE_COLUMNS} FROM jobs WHERE seq = ANY($1) AND state IN (1, 2, 3)");
    let mut next_checks = LeaseChecks::default();
    let next_check_at = |reap_at: Timestamp| {
        reap_at
            .as_millis()
            .min(now.as_millis().saturating_add(LEASE_CHECK_INTERVAL_MS))
    };
    let mut due: Vec<i64> = Vec::new();
    for row in &query(transaction, &sql, &[&checked]).await? {
        let (seq, lifecycle) = lifecycle_from_row(row)?;
        match (lifecycle.reap_at(), lifecycle.runner_id) {
            (Some(reap_at), Some(runner)) if reap_at > now => {
                next_checks.push(seq, runner, next_check_at(reap_at));
            }
            (Some(_), Some(_)) => due.push(seq),
            _ => {}
        }
    }
    let mut changed: Vec<(i64, JobLifecycle, JobRecord)> = Vec::new();
    if !due.is_empty() {
        // A job whose row another transaction holds (a completion, another reaper) is skipped
        // here and checked again on the next pass, when that transaction has ended. A job seen
        // here after the other one committed is judged on its fresh row, so no deadline is
        // applied twice.
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE seq = ANY($1) AND state IN (1, 2, 3) \
             FOR UPDATE SKIP LOCKED"
        );
        let rows = query(transaction, &sql, &[&due]).await?;
        let mut locked = std::collections::HashSet::with_capacity(rows.len());
        for row in &rows {
            let (seq, mut job) = job_from_row(row)?;
            locked.insert(seq);
            let (Some(reap_at), Some(runner)) = (job.lifecycle.reap_at(), job.lifecycle.runner_id)
            else {
                continue;
            };
            if reap_at > now {
                next_checks.push(seq, runner, next_check_at(reap_at));
                continue;
            }
            if report.total() >= limit {
                next_checks.push(seq, runner, now.as_millis());
                continue;
            }
            let before = job.lifecycle.clone();
            let jitter = jitter_for(seq, job.lifecycle.attempt);
            let Some(outcome) = job.lifecycle.reap(jitter, now) else {
                next_checks.push(seq, runner, now.as_millis());
                continue;
            };
            report.record(job.id, outcome);
            changed.push((seq, before, job));
        }
        for seq in due.iter().filter(|seq| !locked.contains(seq)) {
            if let Some(runner) = runner_of.get(seq) {
                next_checks.push(*seq, *runner, now.as_millis());
            }
        }
    }
    let requeued = write_back_and_wake(transaction, &changed).await?;
    let delete_params: [&(dyn ToSql + Sync); 1] = [&check_ids];
    let (_, ()) = futures::try_join!(
        execute(
            transaction,
            "DELETE FROM lease_checks WHERE id = ANY($1)",
            &delete_params,
        ),
        next_checks.insert(transaction),
    )?;
    Ok((report, requeued))
}

pub(super) async fn read_logs(
    client: &impl GenericClient,
    id: JobId,
    after_seq: Option<u64>,
    limit: u32,
) -> Result<LogPage, StoreError> {
    let (seq, job) = load_by_id(client, id, false).await?;
    let first = first_log_seq_after(after_seq);
    let rows = query(
        client,
        "SELECT seq, ts, level, message, metadata FROM job_logs \
         WHERE job_seq = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
        &[&seq, &first, &i64::from(limit)],
    )
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let metadata: Option<&str> = column(row, 4)?;
        items.push(LogEntry {
            seq: column::<i64>(row, 0)? as u64,
            ts: Timestamp(column(row, 1)?),
            level: level_from_code(i64::from(column::<i16>(row, 2)?)),
            message: column(row, 3)?,
            metadata: metadata.and_then(|text| serde_json::from_str(text).ok()),
        });
    }
    let stored_next_seq = if items.is_empty() {
        let rows = query(
            client,
            "SELECT log_next_seq FROM jobs WHERE seq = $1",
            &[&seq],
        )
        .await?;
        match rows.first() {
            Some(row) => column::<i64>(row, 0)?,
            None => return Err(job_not_found(id)),
        }
    } else {
        0
    };
    let next_seq = next_log_seq(&items, first, || Ok(stored_next_seq))?;
    Ok(LogPage {
        items,
        next_seq,
        job_finished: job.state().is_terminal(),
    })
}

pub(super) async fn log_positions(
    client: &impl GenericClient,
    ids: &[JobId],
) -> Result<Vec<LogPosition>, StoreError> {
    let keys: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes().as_slice()).collect();
    let sql = format!(
        "SELECT id, log_next_seq, state IN ({TERMINAL_STATE_CODES}) FROM jobs WHERE id = ANY($1)"
    );
    let rows = query(client, &sql, &[&keys]).await?;
    let mut positions = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: &[u8] = column(row, 0)?;
        let Some(job) = ids.iter().find(|job| job.as_bytes().as_slice() == id) else {
            continue;
        };
        positions.push(LogPosition {
            job: *job,
            next_seq: column::<i64>(row, 1)?.max(0) as u64,
            finished: column(row, 2)?,
        });
    }
    Ok(positions)
}

pub(super) async fn read_dag(
    client: &impl GenericClient,
    id: JobId,
) -> Result<Option<Value>, StoreError> {
    let (seq, _) = load_by_id(client, id, false).await?;
    let rows = query(
        client,
        "SELECT dag FROM job_dags WHERE job_seq = $1",
        &[&seq],
    )
    .await?;
    rows.first()
        .map(|row| {
            let text: &str = column(row, 0)?;
            serde_json::from_str(text)
                .map_err(|error| StoreError::Internal(format!("stored DAG of job {id}: {error}")))
        })
        .transpose()
}

/// The advisory lock that lets one coordinator prune at a time: two would walk the same jobs
/// and wait on each other's row locks.
const PRUNE_LOCK_KEY: i64 = 0x6d75_7374_6572_7072; // "musterpr"

/// See [`crate::Store::delete_finished_jobs`].
pub(super) async fn delete_finished(
    transaction: &Transaction<'_>,
    finished_before: Timestamp,
    resume: Option<crate::PruneCursor>,
    limit: u32,
) -> Result<crate::PruneReport, StoreError> {
    let locked: bool = column(
        query(
            transaction,
            "SELECT pg_try_advisory_xact_lock($1)",
            &[&PRUNE_LOCK_KEY],
        )
        .await?
        .first()
        .ok_or_else(|| StoreError::Internal("the advisory lock answered no row".into()))?,
        0,
    )?;
    if !locked {
        return Ok(crate::PruneReport::default());
    }
    let rows = query(
        transaction,
        "SELECT seq, state, finished_at, created_at FROM jobs WHERE seq > $1 ORDER BY seq LIMIT $2",
        &[&resume.map_or(0, |cursor| cursor.0), &i64::from(limit)],
    )
    .await?;
    let mut walked = Vec::with_capacity(rows.len());
    for row in &rows {
        walked.push(PruneCandidate {
            seq: column(row, 0)?,
            state_code: i64::from(column::<i16>(row, 1)?),
            finished_at: column(row, 2)?,
            created_at: column(row, 3)?,
        });
    }
    let (doomed, resume) = choose_jobs_to_prune(&walked, finished_before, limit);
    if doomed.is_empty() {
        return Ok(crate::PruneReport { deleted: 0, resume });
    }
    // Judged again on the locked rows: a job retried since the walk is pending and stays.
    let deleted_rows = query(
        transaction,
        &format!(
            "DELETE FROM jobs WHERE seq = ANY($1) AND state IN ({TERMINAL_STATE_CODES}) \
             AND finished_at < $2 RETURNING seq"
        ),
        &[&doomed, &finished_before.as_millis()],
    )
    .await?;
    let deleted: Vec<i64> = deleted_rows
        .iter()
        .map(|row| column(row, 0))
        .collect::<Result<_, _>>()?;
    let params: [&(dyn ToSql + Sync); 1] = [&deleted];
    futures::try_join!(
        execute(
            transaction,
            "DELETE FROM job_logs WHERE job_seq = ANY($1)",
            &params
        ),
        execute(
            transaction,
            "DELETE FROM job_dags WHERE job_seq = ANY($1)",
            &params
        ),
    )?;
    Ok(crate::PruneReport {
        deleted: deleted.len() as u64,
        resume,
    })
}

pub(super) async fn named_artifacts(
    client: &impl GenericClient,
) -> Result<HashSet<ArtifactId>, StoreError> {
    let rows = query(
        client,
        "SELECT jsonb_array_elements_text(inputs::jsonb) FROM jobs WHERE inputs IS NOT NULL \
         UNION SELECT value FROM jobs, jsonb_each_text(outputs::jsonb) WHERE outputs IS NOT NULL",
        &[],
    )
    .await?;
    let mut named = HashSet::with_capacity(rows.len());
    for row in &rows {
        named.insert(crate::rules::parse_named_artifact(&column::<String>(
            row, 0,
        )?)?);
    }
    Ok(named)
}

/// Pending jobs are the rows of `job_queue`; leased ones are among the jobs the lease checks
/// list (every leased job is in one), so neither count reads the history in `jobs`.
pub(super) async fn active_job_counts(
    client: &impl GenericClient,
) -> Result<Vec<QueueDepth>, StoreError> {
    counts_by_kind_and_state(
        client,
        "SELECT kind, 0::smallint, count(*) FROM job_queue GROUP BY kind \
         UNION ALL \
         SELECT kind, state, count(*) FROM jobs \
         WHERE seq IN (SELECT unnest(seqs) FROM lease_checks) AND state IN (1, 2, 3) \
         GROUP BY kind, state",
    )
    .await
}

pub(super) async fn finished_job_counts(
    client: &impl GenericClient,
) -> Result<Vec<QueueDepth>, StoreError> {
    counts_by_kind_and_state(
        client,
        "SELECT kind, state, count(*) FROM jobs WHERE state >= 4 GROUP BY kind, state",
    )
    .await
}

async fn counts_by_kind_and_state(
    client: &impl GenericClient,
    sql: &str,
) -> Result<Vec<QueueDepth>, StoreError> {
    let rows = query(client, sql, &[]).await?;
    let mut depths = Vec::with_capacity(rows.len());
    for row in &rows {
        let state: i16 = column(row, 1)?;
        if let Some(state) = JobState::from_code(i64::from(state)) {
            depths.push(QueueDepth {
                kind: column(row, 0)?,
                state,
                count: column::<i64>(row, 2)? as u64,
            });
        }
    }
    Ok(depths)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::ClaimFrontiers;

    #[test]
    fn a_batch_reads_past_the_other_running_batches_and_is_forgotten_when_done() {
        let frontiers = Arc::new(ClaimFrontiers::default());
        let first = ClaimFrontiers::start(&frontiers);
        let second = ClaimFrontiers::start(&frontiers);
        assert_eq!(frontiers.ahead_of(second.id(), "a"), None);
        frontiers.record(first.id(), "a", (0, 500));
        frontiers.record(first.id(), "b", (0, 90));
        assert_eq!(frontiers.ahead_of(second.id(), "a"), Some((0, 500)));
        assert_eq!(frontiers.ahead_of(second.id(), "b"), Some((0, 90)));
        assert_eq!(frontiers.ahead_of(second.id(), "c"), None);
        // A batch never reads past itself.
        assert_eq!(frontiers.ahead_of(first.id(), "a"), None);
        let third = ClaimFrontiers::start(&frontiers);
        frontiers.record(second.id(), "a", (1, 20));
        assert_eq!(frontiers.ahead_of(third.id(), "a"), Some((1, 20)));
        drop(second);
        assert_eq!(frontiers.ahead_of(third.id(), "a"), Some((0, 500)));
        drop(first);
        assert_eq!(frontiers.ahead_of(third.id(), "a"), None);
        assert_eq!(frontiers.ahead_of(third.id(), "b"), None);
    }
}
