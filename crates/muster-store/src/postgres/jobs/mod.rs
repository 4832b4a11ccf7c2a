//! Job operations of the PostgreSQL backend, by operation: [`claims`], the lease holder's
//! [`activity`], [`logs`], [`completions`], [`reap`] and [`prune`]; here, submitting, reading,
//! listing, cancelling and retrying jobs, writing lifecycles back, and the counts. Write
//! operations run inside the caller's transaction and lock the rows of the jobs they change (see
//! the module docs of `postgres` for the lock order); reads take any connection. What they
//! decide is asked of [`crate::rules`].

pub(super) mod activity;
pub(super) mod claims;
pub(super) mod completions;
pub(super) mod logs;
pub(super) mod outcomes;
pub(super) mod prune;
pub(super) mod reap;

use std::collections::{HashMap, HashSet};

use deadpool_postgres::{GenericClient, Transaction};
use muster_core::{
    ArtifactId, JobId, JobLifecycle, JobRecord, JobState, NewJob, RunnerId, Timestamp,
    TransitionError,
};
use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::rows::{
    LifecycleWrite, QueuePlace, WrittenResult, column, job_from_row, job_id_column,
    write_lifecycles,
};
use super::{PENDING_CHANNEL, execute, query};
use crate::columns::JOB_COLUMNS;
use crate::encoding::{inputs_to_json, requirements_to_json};
use crate::rules::artifacts::parse_named_artifact;
use crate::rules::jobs::TERMINAL_STATE_CODES;
use crate::rules::jobs::{dag_from_text, job_not_found, queue_depth, submitted_job};
use crate::rules::{jobs, paging};
use crate::{JobFilter, Page, PageRequest, QueueDepth, StoreError, Submitted};

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

pub(super) async fn kinds_of_held(
    client: &impl GenericClient,
    runner: RunnerId,
    ids: &[JobId],
) -> Result<HashMap<JobId, String>, StoreError> {
    let keys: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes().as_slice()).collect();
    let sql = format!(
        "SELECT id, kind FROM jobs WHERE id = ANY($1) AND runner_id = $2 AND state NOT IN ({TERMINAL_STATE_CODES})"
    );
    let rows = query(client, &sql, &[&keys, &runner.as_bytes().as_slice()]).await?;
    let mut kinds = HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: &[u8] = column(row, 0)?;
        if let Some(job) = ids.iter().find(|job| job.as_bytes().as_slice() == id) {
            kinds.insert(*job, column::<String>(row, 1)?);
        }
    }
    Ok(kinds)
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
                 max_attempts, timeout_s, lease_ttl_s, backoff_base_s, run_after, created_at, inputs, \
                 organization_id, shared_runners) \
               SELECT id, kind, 0, priority, payload, requirements, idempotency_key, max_attempts, \
                 timeout_s, lease_ttl_s, backoff_base_s, run_after, created_at, inputs, \
                 organization_id, shared_runners \
               FROM unnest($1::bytea[], $2::text[], $3::integer[], $4::text[], $5::text[], $6::text[], \
                 $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], \
                 $13::text[], $14::text[], $15::boolean[]) \
                 AS n(id, kind, priority, payload, requirements, idempotency_key, max_attempts, \
                   timeout_s, lease_ttl_s, backoff_base_s, run_after, created_at, inputs, \
                   organization_id, shared_runners) ",
            $on_conflict,
            " RETURNING seq, id, kind, priority, run_after, requirements, organization_id, \
               shared_runners), \
             queued AS ( \
               INSERT INTO job_queue (seq, kind, priority, run_after, requirements, \
                 organization_id, shared_runners) \
               SELECT seq, kind, priority, run_after, requirements, organization_id, shared_runners \
               FROM stored) \
             SELECT id FROM stored"
        )
    };
}

const SUBMIT_SQL: &str = submit_sql!("");
const SUBMIT_SQL_WITH_KEYS: &str = submit_sql!(
    "ON CONFLICT (organization_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
);

/// One statement stores the jobs and their queue rows. A key used twice in one batch: the first
/// job is stored, the later ones answer with it; a key another transaction stored first makes
/// its job's row skip, and the job is answered with the stored one.
pub(super) async fn submit(
    transaction: &Transaction<'_>,
    new_jobs: Vec<NewJob>,
) -> Result<Vec<Submitted>, StoreError> {
    // Keys are unique within an organization: the same key in two organizations is two jobs.
    let mut first_with_key: HashMap<(&str, &str), usize> = HashMap::new();
    let mut fresh: Vec<usize> = Vec::new();
    for (index, new_job) in new_jobs.iter().enumerate() {
        let organization = new_job.organization.id.as_str();
        match &new_job.spec.idempotency_key {
            Some(key) if first_with_key.contains_key(&(organization, key.as_str())) => {}
            Some(key) => {
                first_with_key.insert((organization, key.as_str()), index);
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
    let mut organizations = Vec::with_capacity(fresh.len());
    let mut shared_runners = Vec::with_capacity(fresh.len());
    for &index in &fresh {
        let new_job = &new_jobs[index];
        let spec = &new_job.spec;
        ids.push(new_job.id.as_bytes().to_vec());
        kinds.push(spec.kind.as_str());
        priorities.push(spec.priority);
        payloads.push(spec.payload.to_string());
        requirements.push(requirements_to_json(&spec.requirements));
        keys.push(spec.idempotency_key.as_deref());
        max_attempts.push(i64::from(spec.policy.max_attempts));
        timeouts.push(i64::from(spec.policy.timeout_s));
        lease_ttls.push(i64::from(spec.policy.lease_ttl_s));
        backoffs.push(i64::from(spec.policy.backoff_base_s));
        run_afters.push(new_job.initial_lifecycle().run_after.as_millis());
        created_ats.push(new_job.created_at.as_millis());
        inputs.push(inputs_to_json(&spec.inputs));
        organizations.push(new_job.organization.id.as_str());
        shared_runners.push(new_job.organization.shared_runners);
    }
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
            &organizations,
            &shared_runners,
        ],
    )
    .await?;
    let mut created_ids = HashSet::with_capacity(inserted.len());
    for row in &inserted {
        created_ids.insert(job_id_column(row, 0)?);
    }
    if !created_ids.is_empty() {
        notify_pending(transaction).await?;
    }
    let mut answers: Vec<Option<Submitted>> = Vec::with_capacity(new_jobs.len());
    let mut by_key: HashMap<(String, String), JobRecord> = HashMap::new();
    for new_job in &new_jobs {
        if created_ids.contains(&new_job.id) {
            let job = submitted_job(new_job);
            if let Some(key) = &new_job.spec.idempotency_key {
                by_key
                    .entry((new_job.organization.id.clone(), key.clone()))
                    .or_insert_with(|| job.clone());
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
        let organization = new_job.organization.id.as_str();
        let by = (organization.to_string(), key.to_string());
        let existing = match by_key.get(&by) {
            Some(job) => job.clone(),
            None => {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE organization_id = $1 AND idempotency_key = $2"
                );
                let rows = query(transaction, &sql, &[&organization, &key]).await?;
                let row = rows.first().ok_or_else(|| {
                    StoreError::Internal(format!("idempotency key {key} is taken by no job"))
                })?;
                let (_, job) = job_from_row(row)?;
                by_key.insert(by, job.clone());
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
    let before = paging::page_start(page)?;
    let limit = paging::rows_to_read(page);
    let selection = Selection::of(filter, before);
    let mut params = selection.params();
    params.push(&limit);
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM {} ORDER BY seq DESC LIMIT ${}",
        selection.sql,
        params.len()
    );
    let rows = query(client, &sql, &params).await?;
    paging::page_from_rows(&rows, page, job_from_row)
}

/// How many jobs match `filter`, counting no further than `cap`: the count reads at most `cap`
/// matching rows through the same tables and indexes as the list.
pub(super) async fn count(
    client: &impl GenericClient,
    filter: &JobFilter,
    cap: u64,
) -> Result<u64, StoreError> {
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    let selection = Selection::of(filter, None);
    let mut params = selection.params();
    params.push(&cap);
    let sql = format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM {} ORDER BY seq DESC LIMIT ${}) matching",
        selection.sql,
        params.len()
    );
    let rows = query(client, &sql, &params).await?;
    let counted: i64 = rows.first().map(|row| row.get(0)).unwrap_or(0);
    Ok(u64::try_from(counted).unwrap_or(0))
}

/// The tables and condition of the jobs a filter matches, with the values of their
/// placeholders (numbered from 1, in the order of `params`).
struct Selection {
    sql: String,
    state: Option<i16>,
    kind: Option<String>,
    organization: Option<String>,
    runner: Option<Vec<u8>>,
    created_after: Option<i64>,
    created_before: Option<i64>,
    before: Option<i64>,
}

impl Selection {
    fn of(filter: &JobFilter, before: Option<i64>) -> Selection {
        let mut selection = Selection {
            sql: String::new(),
            state: filter.state.map(|state| state.code() as i16),
            kind: filter.kind.clone(),
            organization: filter.organization_id.clone(),
            runner: filter.runner_id.map(|id| id.as_bytes().to_vec()),
            created_after: filter.created_after.map(|at| at.as_millis()),
            created_before: filter.created_before.map(|at| at.as_millis()),
            before,
        };
        let mut placeholders = 0;
        let mut next = || {
            placeholders += 1;
            placeholders
        };
        let mut sql = match filter.state {
            // Failed and cancelled jobs are listed through their own small table, newest first,
            // instead of walking every job for them.
            Some(JobState::Failed | JobState::Cancelled) => format!(
                "jobs JOIN (SELECT seq AS unsuccessful_seq FROM jobs_unsuccessful WHERE state = ${}) u \
                   ON jobs.seq = u.unsuccessful_seq WHERE true",
                next()
            ),
            // Leased jobs are among those the lease checks list (every leased job is in one).
            Some(leased) if leased.is_leased() => format!(
                "jobs JOIN (SELECT DISTINCT unnest(seqs) AS leased_seq FROM lease_checks) l \
                   ON jobs.seq = l.leased_seq WHERE state = ${}",
                next()
            ),
            Some(_) => format!("jobs WHERE state = ${}", next()),
            None => "jobs WHERE true".to_string(),
        };
        if selection.kind.is_some() {
            sql.push_str(&format!(" AND kind = ${}", next()));
        }
        if selection.organization.is_some() {
            sql.push_str(&format!(" AND organization_id = ${}", next()));
        }
        if selection.runner.is_some() {
            sql.push_str(&format!(" AND runner_id = ${}", next()));
        }
        if selection.created_after.is_some() {
            sql.push_str(&format!(" AND created_at >= ${}", next()));
        }
        if selection.created_before.is_some() {
            sql.push_str(&format!(" AND created_at < ${}", next()));
        }
        if selection.before.is_some() {
            sql.push_str(&format!(" AND seq < ${}", next()));
        }
        selection.sql = sql;
        selection
    }

    /// The values of the placeholders, in their order.
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(state) = &self.state {
            params.push(state);
        }
        if let Some(kind) = &self.kind {
            params.push(kind);
        }
        if let Some(organization) = &self.organization {
            params.push(organization);
        }
        if let Some(runner) = &self.runner {
            params.push(runner);
        }
        if let Some(after) = &self.created_after {
            params.push(after);
        }
        if let Some(created_before) = &self.created_before {
            params.push(created_before);
        }
        if let Some(before) = &self.before {
            params.push(before);
        }
        params
    }
}

/// Lock and load a job, let `change` transition its lifecycle, write it back. Nothing is written
/// when `change` refuses.
pub(super) async fn transition<T>(
    transaction: &Transaction<'_>,
    id: JobId,
    operation: &'static str,
    now: Timestamp,
    change: impl FnOnce(&mut JobLifecycle, i64) -> Result<T, TransitionError>,
) -> Result<(i64, JobRecord, T), StoreError> {
    let (seq, mut job) = load_by_id(transaction, id, true).await?;
    let before = job.lifecycle.clone();
    let outcome = jobs::transition(&mut job, seq, operation, change)?;
    write_one(transaction, seq, &before, &job, None, now).await?;
    Ok((seq, job, outcome))
}

/// Write back one job's lifecycle (and result, when given), which was `before`.
pub(super) async fn write_one(
    transaction: &Transaction<'_>,
    seq: i64,
    before: &JobLifecycle,
    job: &JobRecord,
    result: Option<WrittenResult>,
    now: Timestamp,
) -> Result<(), StoreError> {
    write_lifecycles(
        transaction,
        &[LifecycleWrite {
            seq,
            before,
            after: &job.lifecycle,
            now,
            result,
            place: Some(QueuePlace::of(job)),
        }],
    )
    .await
}

/// Write back jobs whose lifecycles changed (each with what it was before) and, when any went
/// back to the queue, wake the waiting claims of every coordinator. Answers whether any did.
pub(super) async fn write_back_and_wake(
    transaction: &Transaction<'_>,
    changed: &[(i64, JobLifecycle, JobRecord)],
    now: Timestamp,
) -> Result<bool, StoreError> {
    let writes: Vec<LifecycleWrite<'_>> = changed
        .iter()
        .map(|(seq, before, job)| LifecycleWrite {
            seq: *seq,
            before,
            after: &job.lifecycle,
            now,
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
    let (_, job, _) = transition(transaction, id, "cancel", now, |lifecycle, _| {
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
    let (_, job, ()) = transition(transaction, id, "retry", now, |lifecycle, _| {
        lifecycle.retry(now)
    })
    .await?;
    notify_pending(transaction).await?;
    Ok(job)
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
        .map(|row| dag_from_text(id, column(row, 0)?))
        .transpose()
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
        named.insert(parse_named_artifact(column(row, 0)?)?);
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
        "SELECT organization_id, kind, 0::smallint, count(*) FROM job_queue \
         GROUP BY organization_id, kind \
         UNION ALL \
         SELECT organization_id, kind, state, count(*) FROM jobs \
         WHERE seq IN (SELECT unnest(seqs) FROM lease_checks) AND state IN (1, 2, 3) \
         GROUP BY organization_id, kind, state",
    )
    .await
}

pub(super) async fn finished_job_counts(
    client: &impl GenericClient,
) -> Result<Vec<QueueDepth>, StoreError> {
    counts_by_kind_and_state(
        client,
        "SELECT organization_id, kind, state, count(*) FROM jobs WHERE state >= 4 \
         GROUP BY organization_id, kind, state",
    )
    .await
}

/// Counts selected as `organization_id, kind, state, count`.
async fn counts_by_kind_and_state(
    client: &impl GenericClient,
    sql: &str,
) -> Result<Vec<QueueDepth>, StoreError> {
    let rows = query(client, sql, &[]).await?;
    let mut depths = Vec::with_capacity(rows.len());
    for row in &rows {
        let state: i16 = column(row, 2)?;
        depths.extend(queue_depth(
            column(row, 0)?,
            column(row, 1)?,
            i64::from(state),
            column(row, 3)?,
        ));
    }
    Ok(depths)
}
