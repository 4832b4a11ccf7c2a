//! Runner operations of the SQLite backend.

use std::collections::BTreeMap;

use muster_core::{JobId, JobState, RunnerId, RunnerRecord, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::map_sqlite_error;
use super::rows::{job_from_row, write_transition};
use super::writer::WriterContext;
use crate::columns::{self, JOB_COLUMNS, runner_identity_columns};
use crate::encoding::{capabilities_to_json, string_map_to_json};
use crate::rules::paging;
use crate::rules::runners::{
    ClaimingRunner, Declaration, ReleaseCause, claiming_runner, jobs_to_stop, release_from_runner,
    runner_not_found,
};
use crate::{ClaimRequest, NewRunner, Page, PageRequest, RunnerBeat, RunnerFilter, StoreError};

const RUNNER_COLUMNS: &str = concat!(
    "seq, id, name, organization_id, labels, kinds, offer, hostname, version, draining, \
     created_at, last_heartbeat_at, last_seen_at, \
     (SELECT count(*) FROM jobs WHERE jobs.state IN (1, 2, 3) AND jobs.runner_id = runners.id), ",
    runner_identity_columns!()
);

fn runner_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, Result<RunnerRecord, StoreError>)> {
    columns::runner_from_row(row)
}

pub(super) fn create(conn: &Connection, runner: &NewRunner) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO runners (id, name, organization_id, labels, token_hash, created_at, bound_capabilities) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            runner.id.as_bytes().as_slice(),
            runner.name,
            runner.organization_id,
            string_map_to_json(&runner.labels).to_string(),
            runner.token_hash.as_slice(),
            runner.created_at.as_millis(),
            runner
                .bound_capabilities
                .as_ref()
                .map(|bound| capabilities_to_json(bound).to_string()),
        ])
    })
    .map_err(map_sqlite_error)?;
    Ok(())
}

pub(super) fn get(conn: &Connection, id: RunnerId) -> Result<RunnerRecord, StoreError> {
    let sql = format!("SELECT {RUNNER_COLUMNS} FROM runners WHERE id = ?1 AND deleted_at IS NULL");
    let row = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_row(params![id.as_bytes().as_slice()], runner_from_row)
                .optional()
        })
        .map_err(map_sqlite_error)?;
    match row {
        Some((_, record)) => record,
        None => Err(runner_not_found(id)),
    }
}

pub(super) fn list(
    conn: &Connection,
    filter: &RunnerFilter,
    page: &PageRequest,
) -> Result<Page<RunnerRecord>, StoreError> {
    let sql = format!(
        "SELECT {RUNNER_COLUMNS} FROM runners WHERE deleted_at IS NULL AND seq < ?1 \
         AND (?3 IS NULL OR organization_id = ?3) ORDER BY seq DESC LIMIT ?2"
    );
    let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
    let rows = statement
        .query_map(
            params![
                paging::page_start_bound(page)?,
                paging::rows_to_read(page),
                filter.organization_id
            ],
            runner_from_row,
        )
        .map_err(map_sqlite_error)?;
    paging::page_from_rows(rows, page, |row| {
        let (seq, record) = row.map_err(map_sqlite_error)?;
        Ok((seq, record?))
    })
}

/// The live runner registered with the key of `fingerprint`.
pub(super) fn by_key(
    conn: &Connection,
    fingerprint: &str,
) -> Result<Option<RunnerRecord>, StoreError> {
    let sql = format!(
        "SELECT {RUNNER_COLUMNS} FROM runners WHERE key_fingerprint = ?1 AND deleted_at IS NULL"
    );
    let row = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_row(params![fingerprint], runner_from_row)
                .optional()
        })
        .map_err(map_sqlite_error)?;
    row.map(|(_, record)| record).transpose()
}

pub(super) fn delete(
    context: &mut WriterContext,
    id: RunnerId,
    now: Timestamp,
) -> Result<Vec<JobId>, StoreError> {
    let conn = &context.conn;
    let changed = conn
        .prepare_cached("UPDATE runners SET deleted_at = ?2, token_hash = NULL WHERE id = ?1 AND deleted_at IS NULL")
        .and_then(|mut statement| statement.execute(params![id.as_bytes().as_slice(), now.as_millis()]))
        .map_err(map_sqlite_error)?;
    if changed == 0 {
        return Err(runner_not_found(id));
    }
    super::workloads::fail_workloads_of_deleted_runner(&context.conn, id, now)?;
    let released = release_held_jobs(context, id, ReleaseCause::Deleted, now)?;
    context.runner_touches.forget(id);
    Ok(released)
}

/// Release every job `id` holds (it was deleted or revoked); answers those released.
pub(super) fn release_held_jobs(
    context: &mut WriterContext,
    id: RunnerId,
    cause: ReleaseCause,
    now: Timestamp,
) -> Result<Vec<JobId>, StoreError> {
    let conn = &context.conn;
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE state IN (1, 2, 3) AND runner_id = ?1");
    let held: Vec<_> = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_map(params![id.as_bytes().as_slice()], job_from_row)?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(map_sqlite_error)?;
    let mut released = Vec::with_capacity(held.len());
    for (seq, mut job) in held {
        let before = job.lifecycle.clone();
        if !release_from_runner(seq, &mut job, id, cause, now) {
            continue;
        }
        released.push(job.id);
        write_transition(conn, seq, &before, &job.lifecycle, now)?;
        if job.state() == JobState::Pending {
            context.pending_changed = true;
        }
    }
    Ok(released)
}

/// A claiming runner as its row says: the labels an operator gave it and its organization.
pub(super) type ClaimingRunnerRow = (BTreeMap<String, String>, Option<String>);

/// Record that a runner is claiming and what it declared; answers the labels an operator gave it
/// at registration and its organization (`None`: cluster-scoped), or `None` when the runner is
/// draining (it claims nothing more). Rewrites the runner row only when the declaration changed
/// or a second passed.
pub(super) fn touch_runner(
    context: &mut WriterContext,
    claim: &ClaimRequest,
    now: Timestamp,
) -> Result<Option<ClaimingRunnerRow>, StoreError> {
    let conn = &context.conn;
    let row: Option<(String, bool, Option<String>)> = conn
        .prepare_cached(
            "SELECT labels, draining, organization_id FROM runners WHERE id = ?1 AND deleted_at IS NULL",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![claim.runner.as_bytes().as_slice()], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()
        })
        .map_err(map_sqlite_error)?;
    let organization = row
        .as_ref()
        .and_then(|(_, _, organization)| organization.clone());
    let row = row
        .as_ref()
        .map(|(labels, draining, _)| (labels.as_str(), *draining));
    let registered_labels = match claiming_runner(claim.runner, row)? {
        ClaimingRunner::Ready(labels) => labels,
        ClaimingRunner::Draining => return Ok(None),
        ClaimingRunner::Unknown(error) => return Err(error),
    };
    let declaration = Declaration::of(claim);
    if context
        .runner_touches
        .needs_write(claim.runner, &declaration, now)
    {
        conn.prepare_cached(
            "UPDATE runners SET last_seen_at = ?2, offer = ?3, kinds = ?4 WHERE id = ?1",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                claim.runner.as_bytes().as_slice(),
                now.as_millis(),
                declaration.offer_json,
                declaration.kinds_json
            ])
        })
        .map_err(map_sqlite_error)?;
        context
            .runner_touches
            .written(claim.runner, &declaration, now);
    }
    Ok(Some((registered_labels, organization)))
}

pub(super) fn heartbeat(
    context: &mut WriterContext,
    beat: &RunnerBeat,
    now: Timestamp,
) -> Result<Vec<JobId>, StoreError> {
    let conn = &context.conn;
    let changed = conn
        .prepare_cached(
            "UPDATE runners SET last_heartbeat_at = ?2, last_seen_at = ?2, draining = ?3, \
             hostname = coalesce(?4, hostname), version = coalesce(?5, version) WHERE id = ?1 AND deleted_at IS NULL",
        )
        .and_then(|mut statement| {
            statement.execute(params![beat.runner.as_bytes().as_slice(), now.as_millis(), beat.draining, beat.hostname, beat.version])
        })
        .map_err(map_sqlite_error)?;
    if changed == 0 {
        return Err(runner_not_found(beat.runner));
    }
    let mut statement = conn
        .prepare_cached("SELECT state, runner_id FROM jobs WHERE id = ?1")
        .map_err(map_sqlite_error)?;
    let mut found = Vec::with_capacity(beat.jobs.len());
    for job in &beat.jobs {
        let row: Option<(i64, Option<Vec<u8>>)> = statement
            .query_row(params![job.as_bytes().as_slice()], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
            .map_err(map_sqlite_error)?;
        if let Some((state, holder)) = row {
            found.push((
                *job,
                state,
                holder.as_deref().and_then(RunnerId::from_slice),
            ));
        }
    }
    Ok(jobs_to_stop(beat.runner, &beat.jobs, found))
}
