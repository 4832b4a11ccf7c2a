//! Job operations of the SQLite backend, by operation: [`claims`], the lease holder's
//! [`activity`], [`logs`], [`completions`], [`reap`] and [`prune`]; here, submitting, reading,
//! listing, cancelling and retrying jobs, and the counts. Write operations take the writer's
//! context and run inside its transaction; read operations take a reader connection. What they
//! decide is asked of [`crate::rules`].

pub(super) mod activity;
pub(super) mod claims;
pub(super) mod completions;
pub(super) mod logs;
pub(super) mod outcomes;
pub(super) mod prune;
pub(super) mod reap;

use std::collections::{BTreeMap, HashMap, HashSet};

use muster_core::{
    ArtifactId, JobId, JobLifecycle, JobRecord, JobState, NewJob, RunnerId, Timestamp,
    TransitionError,
};
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::Value;

use super::map_sqlite_error;
use super::rows::{job_from_row, write_transition};
use super::writer::WriterContext;
use crate::columns::JOB_COLUMNS;
use crate::encoding::{inputs_to_json, requirements_to_json};
use crate::rules::artifacts::parse_named_artifact;
use crate::rules::jobs::TERMINAL_STATE_CODES;
use crate::rules::jobs::{dag_from_text, job_not_found, queue_depth, submitted_job};
use crate::rules::{jobs, paging};
use crate::{JobFilter, Page, PageRequest, QueueDepth, StoreError, Submitted};

pub(super) fn load_by_id(conn: &Connection, id: JobId) -> Result<(i64, JobRecord), StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
    let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
    statement
        .query_row(params![id.as_bytes().as_slice()], job_from_row)
        .optional()
        .map_err(map_sqlite_error)?
        .ok_or_else(|| job_not_found(id))
}

/// One primary-key lookup per job on one prepared statement: a batch is at most a few hundred
/// jobs, and the statement reads no JSON column.
pub(super) fn kinds_of_held(
    conn: &Connection,
    runner: RunnerId,
    ids: &[JobId],
) -> Result<HashMap<JobId, String>, StoreError> {
    let sql = format!(
        "SELECT kind FROM jobs WHERE id = ?1 AND runner_id = ?2 AND state NOT IN ({TERMINAL_STATE_CODES})"
    );
    let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
    let mut kinds = HashMap::with_capacity(ids.len());
    for id in ids {
        let kind: Option<String> = statement
            .query_row(
                params![id.as_bytes().as_slice(), runner.as_bytes().as_slice()],
                |row| row.get(0),
            )
            .optional()
            .map_err(map_sqlite_error)?;
        if let Some(kind) = kind {
            kinds.insert(*id, kind);
        }
    }
    Ok(kinds)
}

fn load_by_idempotency_key(
    conn: &Connection,
    organization: &str,
    key: &str,
) -> Result<Option<JobRecord>, StoreError> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE organization_id = ?1 AND idempotency_key = ?2"
    );
    let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
    let row = statement
        .query_row(params![organization, key], job_from_row)
        .optional()
        .map_err(map_sqlite_error)?;
    Ok(row.map(|(_, job)| job))
}

/// Jobs are stored one by one, so a key used twice in one batch finds the first job stored.
pub(in crate::sqlite) fn submit(
    context: &mut WriterContext,
    new_jobs: Vec<NewJob>,
) -> Result<Vec<Submitted>, StoreError> {
    let conn = &context.conn;
    let mut answers = Vec::with_capacity(new_jobs.len());
    for new_job in new_jobs {
        if let Some(key) = &new_job.spec.idempotency_key
            && let Some(existing) = load_by_idempotency_key(conn, &new_job.organization.id, key)?
        {
            answers.push(Submitted {
                job: existing,
                created: false,
            });
            continue;
        }
        let spec = &new_job.spec;
        let mut statement = conn
            .prepare_cached(
                "INSERT INTO jobs (id, kind, state, priority, payload, requirements, idempotency_key, \
                 max_attempts, timeout_s, lease_ttl_s, backoff_base_s, run_after, created_at, inputs, \
                 organization_id, shared_runners) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )
            .map_err(map_sqlite_error)?;
        statement
            .execute(params![
                new_job.id.as_bytes().as_slice(),
                spec.kind,
                JobState::Pending.code(),
                spec.priority,
                spec.payload.to_string(),
                requirements_to_json(&spec.requirements),
                spec.idempotency_key,
                i64::from(spec.policy.max_attempts),
                i64::from(spec.policy.timeout_s),
                i64::from(spec.policy.lease_ttl_s),
                i64::from(spec.policy.backoff_base_s),
                new_job.initial_lifecycle().run_after.as_millis(),
                new_job.created_at.as_millis(),
                inputs_to_json(&spec.inputs),
                new_job.organization.id,
                new_job.organization.shared_runners,
            ])
            .map_err(map_sqlite_error)?;
        answers.push(Submitted {
            job: submitted_job(&new_job),
            created: true,
        });
    }
    context.pending_changed = true;
    Ok(answers)
}

pub(in crate::sqlite) fn list(
    conn: &Connection,
    filter: &JobFilter,
    page: &PageRequest,
) -> Result<Page<JobRecord>, StoreError> {
    let before = paging::page_start(page)?;
    let (selection, mut values) = selection(filter, before);
    values.push(paging::rows_to_read(page).into());
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM {selection} ORDER BY seq DESC LIMIT ?{}",
        values.len()
    );
    let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
    let rows: Vec<(i64, JobRecord)> = statement
        .query_map(params_from_iter(values), job_from_row)
        .map_err(map_sqlite_error)?
        .collect::<Result<_, _>>()
        .map_err(map_sqlite_error)?;
    paging::page_from_rows(rows, page, Ok)
}

/// How many jobs match `filter`, counting no further than `cap`: the count reads at most `cap`
/// matching rows through the same indexes as the list.
pub(in crate::sqlite) fn count(
    conn: &Connection,
    filter: &JobFilter,
    cap: u64,
) -> Result<u64, StoreError> {
    let (selection, mut values) = selection(filter, None);
    values.push(i64::try_from(cap).unwrap_or(i64::MAX).into());
    let sql = format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM {selection} ORDER BY seq DESC LIMIT ?{})",
        values.len()
    );
    let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
    let counted: i64 = statement
        .query_row(params_from_iter(values), |row| row.get(0))
        .map_err(map_sqlite_error)?;
    Ok(u64::try_from(counted).unwrap_or(0))
}

/// The table and condition of the jobs `filter` matches (before `before`, when given), with
/// the values of their placeholders, numbered from 1.
fn selection(filter: &JobFilter, before: Option<i64>) -> (String, Vec<rusqlite::types::Value>) {
    // Leased jobs are read through the reaper's index of them: few rows, whereas SQLite would
    // otherwise walk the whole table newest first to avoid sorting them.
    let source = if filter.state.is_some_and(JobState::is_leased) {
        "jobs INDEXED BY jobs_leased"
    } else {
        "jobs"
    };
    let mut sql = format!("{source} WHERE 1 = 1");
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(state) = filter.state {
        // A literal (from the enum, never from the caller's text): SQLite picks the partial
        // indexes of failed and cancelled jobs only when it can see the state, and can use that
        // of leased jobs only when the query repeats its condition.
        sql.push_str(&format!(" AND state = {}", state.code()));
        if state.is_leased() {
            sql.push_str(" AND state IN (1, 2, 3)");
        }
    }
    if let Some(kind) = &filter.kind {
        values.push(kind.clone().into());
        sql.push_str(&format!(" AND kind = ?{}", values.len()));
    }
    if let Some(organization) = &filter.organization_id {
        values.push(organization.clone().into());
        sql.push_str(&format!(" AND organization_id = ?{}", values.len()));
    }
    if let Some(runner) = filter.runner_id {
        values.push(runner.as_bytes().to_vec().into());
        sql.push_str(&format!(" AND runner_id = ?{}", values.len()));
    }
    if let Some(after) = filter.created_after {
        values.push(after.as_millis().into());
        sql.push_str(&format!(" AND created_at >= ?{}", values.len()));
    }
    if let Some(created_before) = filter.created_before {
        values.push(created_before.as_millis().into());
        sql.push_str(&format!(" AND created_at < ?{}", values.len()));
    }
    if let Some(before) = before {
        values.push(before.into());
        sql.push_str(&format!(" AND seq < ?{}", values.len()));
    }
    (sql, values)
}

/// Load a job, let `change` transition its lifecycle, write it back. Nothing is written when
/// `change` refuses.
pub(super) fn transition<T>(
    conn: &Connection,
    id: JobId,
    operation: &'static str,
    now: Timestamp,
    change: impl FnOnce(&mut JobLifecycle, i64) -> Result<T, TransitionError>,
) -> Result<(i64, JobRecord, T), StoreError> {
    let (seq, mut job) = load_by_id(conn, id)?;
    let before = job.lifecycle.clone();
    let outcome = jobs::transition(&mut job, seq, operation, change)?;
    write_transition(conn, seq, &before, &job.lifecycle, now)?;
    Ok((seq, job, outcome))
}

pub(in crate::sqlite) fn cancel(
    context: &mut WriterContext,
    id: JobId,
    grace_ms: i64,
    now: Timestamp,
) -> Result<JobRecord, StoreError> {
    let (_, job, _) = transition(&context.conn, id, "cancel", now, |lifecycle, _| {
        lifecycle.cancel(grace_ms, now)
    })?;
    Ok(job)
}

pub(in crate::sqlite) fn retry(
    context: &mut WriterContext,
    id: JobId,
    now: Timestamp,
) -> Result<JobRecord, StoreError> {
    let (_, job, ()) = transition(&context.conn, id, "retry", now, |lifecycle, _| {
        lifecycle.retry(now)
    })?;
    context.pending_changed = true;
    Ok(job)
}

pub(in crate::sqlite) fn read_dag(
    conn: &Connection,
    id: JobId,
) -> Result<Option<Value>, StoreError> {
    let (seq, _) = load_by_id(conn, id)?;
    let text: Option<String> = conn
        .prepare_cached("SELECT dag FROM job_dags WHERE job_seq = ?1")
        .and_then(|mut statement| {
            statement
                .query_row(params![seq], |row| row.get(0))
                .optional()
        })
        .map_err(map_sqlite_error)?;
    text.map(|text| dag_from_text(id, &text)).transpose()
}

pub(in crate::sqlite) fn named_artifacts(
    conn: &Connection,
) -> Result<HashSet<ArtifactId>, StoreError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT value FROM jobs, json_each(jobs.inputs) WHERE jobs.inputs IS NOT NULL \
             UNION SELECT value FROM jobs, json_each(jobs.outputs) WHERE jobs.outputs IS NOT NULL",
        )
        .map_err(map_sqlite_error)?;
    let rows = statement
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(map_sqlite_error)?;
    let mut named = HashSet::new();
    for row in rows {
        named.insert(parse_named_artifact(&row.map_err(map_sqlite_error)?)?);
    }
    Ok(named)
}

/// Pending jobs are counted in the claim indexes (whose conditions these statements repeat, so
/// SQLite reads only them: the shared ones by kind, each organization's own by organization and
/// kind, put together by `rules::jobs::pending_depths`) and leased ones through the reaper's
/// index.
pub(in crate::sqlite) fn active_job_counts(
    conn: &Connection,
) -> Result<Vec<QueueDepth>, StoreError> {
    let mut shared: BTreeMap<String, u64> = BTreeMap::new();
    for sql in [
        "SELECT kind, count(*) FROM jobs \
         WHERE state = 0 AND requirements IS NULL AND shared_runners = 1 GROUP BY kind",
        "SELECT kind, count(*) FROM jobs \
         WHERE state = 0 AND requirements IS NOT NULL AND shared_runners = 1 GROUP BY kind",
    ] {
        let mut statement = conn.prepare_cached(sql).map_err(map_sqlite_error)?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(map_sqlite_error)?;
        for row in rows {
            let (kind, count) = row.map_err(map_sqlite_error)?;
            *shared.entry(kind).or_default() += count as u64;
        }
    }
    let mut own: BTreeMap<(String, String), u64> = BTreeMap::new();
    for sql in [
        "SELECT organization_id, kind, count(*) FROM jobs \
         WHERE state = 0 AND requirements IS NULL AND organization_id <> 'default' \
         GROUP BY organization_id, kind",
        "SELECT organization_id, kind, count(*) FROM jobs \
         WHERE state = 0 AND requirements IS NOT NULL AND organization_id <> 'default' \
         GROUP BY organization_id, kind",
    ] {
        let mut statement = conn.prepare_cached(sql).map_err(map_sqlite_error)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .map_err(map_sqlite_error)?;
        for row in rows {
            let (organization, kind, count) = row.map_err(map_sqlite_error)?;
            *own.entry((organization, kind)).or_default() += count as u64;
        }
    }
    let mut sharing = HashSet::new();
    if !own.is_empty() {
        let mut statement = conn
            .prepare_cached(
                "SELECT id FROM organizations WHERE allow_shared_runners = 1 AND id <> 'default'",
            )
            .map_err(map_sqlite_error)?;
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(map_sqlite_error)?;
        for row in rows {
            sharing.insert(row.map_err(map_sqlite_error)?);
        }
    }
    let mut depths = crate::rules::jobs::pending_depths(&shared, &own, &sharing);
    depths.extend(counts_by_kind_and_state(
        conn,
        "SELECT organization_id, kind, state, count(*) FROM jobs WHERE state IN (1, 2, 3) \
         GROUP BY organization_id, kind, state",
    )?);
    Ok(depths)
}

pub(in crate::sqlite) fn finished_job_counts(
    conn: &Connection,
) -> Result<Vec<QueueDepth>, StoreError> {
    counts_by_kind_and_state(
        conn,
        "SELECT organization_id, kind, state, count(*) FROM jobs WHERE state >= 4 \
         GROUP BY organization_id, kind, state",
    )
}

/// Counts selected as `organization_id, kind, state, count`.
fn counts_by_kind_and_state(conn: &Connection, sql: &str) -> Result<Vec<QueueDepth>, StoreError> {
    let mut statement = conn.prepare_cached(sql).map_err(map_sqlite_error)?;
    let rows = statement
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .map_err(map_sqlite_error)?;
    let mut depths = Vec::new();
    for row in rows {
        let (organization, kind, state, count) = row.map_err(map_sqlite_error)?;
        depths.extend(queue_depth(organization, kind, state, count));
    }
    Ok(depths)
}
