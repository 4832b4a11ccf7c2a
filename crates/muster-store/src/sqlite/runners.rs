//! Runner operations of the SQLite backend.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use muster_core::{JobId, JobState, RunnerId, RunnerRecord, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::map_sqlite_error;
use super::rows::{JOB_COLUMNS, job_from_row, write_lifecycle};
use super::writer::WriterContext;
use crate::encoding::{
    capabilities_to_json, decode_cursor, labels_from_text, offer_from_text, string_map_to_json,
};
use crate::{ClaimRequest, NewRunner, Page, PageRequest, RunnerBeat, StoreError};

/// How often at most a claiming runner's "last seen" is rewritten when nothing else changed.
const TOUCH_INTERVAL_MS: i64 = 1000;

const RUNNER_COLUMNS: &str = "seq, id, name, organization_id, labels, kinds, offer, hostname, version, draining, \
    created_at, last_heartbeat_at, last_seen_at, \
    (SELECT count(*) FROM jobs WHERE jobs.state IN (1, 2, 3) AND jobs.runner_id = runners.id)";

fn runner_not_found(id: RunnerId) -> StoreError {
    StoreError::NotFound(format!("runner {id}"))
}

fn runner_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, Result<RunnerRecord, StoreError>)> {
    let seq: i64 = row.get(0)?;
    let id_bytes: Vec<u8> = row.get(1)?;
    let labels_text: String = row.get(4)?;
    let kinds_text: String = row.get(5)?;
    let offer_text: Option<String> = row.get(6)?;
    let name: String = row.get(2)?;
    let organization_id: Option<String> = row.get(3)?;
    let hostname: Option<String> = row.get(7)?;
    let version: Option<String> = row.get(8)?;
    let draining: bool = row.get(9)?;
    let created_at = Timestamp(row.get(10)?);
    let last_heartbeat_at = row.get::<_, Option<i64>>(11)?.map(Timestamp);
    let last_seen_at = row.get::<_, Option<i64>>(12)?.map(Timestamp);
    let running_jobs: i64 = row.get(13)?;
    let record = (|| {
        let id = RunnerId::from_slice(&id_bytes)
            .ok_or_else(|| StoreError::Internal("bad runner id".into()))?;
        let mut labels = labels_from_text(&labels_text)?;
        let offer = offer_from_text(offer_text.as_deref())?;
        let kinds: Vec<String> = serde_json::from_str(&kinds_text)
            .map_err(|error| StoreError::Internal(format!("stored kinds: {error}")))?;
        for (key, value) in &offer.labels {
            labels.entry(key.clone()).or_insert_with(|| value.clone());
        }
        Ok(RunnerRecord {
            id,
            name,
            organization_id,
            labels,
            offer,
            kinds,
            hostname,
            version,
            draining,
            last_heartbeat_at,
            last_seen_at,
            running_jobs: running_jobs as u32,
            created_at,
        })
    })();
    Ok((seq, record))
}

pub(super) fn create(conn: &Connection, runner: &NewRunner) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO runners (id, name, organization_id, labels, token_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            runner.id.as_bytes().as_slice(),
            runner.name,
            runner.organization_id,
            string_map_to_json(&runner.labels).to_string(),
            runner.token_hash.as_slice(),
            runner.created_at.as_millis(),
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
    page: &PageRequest,
) -> Result<Page<RunnerRecord>, StoreError> {
    let before = decode_cursor(page.cursor.as_deref())?.unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {RUNNER_COLUMNS} FROM runners WHERE deleted_at IS NULL AND seq < ?1 ORDER BY seq DESC LIMIT ?2"
    );
    let rows: Vec<(i64, Result<RunnerRecord, StoreError>)> = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_map(params![before, i64::from(page.limit) + 1], runner_from_row)?
                .collect()
        })
        .map_err(map_sqlite_error)?;
    let mut items = Vec::with_capacity(rows.len());
    let mut last_seq = None;
    for (seq, record) in rows.into_iter().take(page.limit as usize + 1) {
        if items.len() == page.limit as usize {
            return Ok(Page {
                items,
                next_cursor: last_seq.map(|seq: i64| seq.to_string()),
            });
        }
        items.push(record?);
        last_seq = Some(seq);
    }
    Ok(Page {
        items,
        next_cursor: None,
    })
}

pub(super) fn by_token_hash(
    conn: &Connection,
    token_hash: &[u8; 32],
) -> Result<Option<RunnerId>, StoreError> {
    let bytes: Option<Vec<u8>> = conn
        .prepare_cached("SELECT id FROM runners WHERE token_hash = ?1 AND deleted_at IS NULL")
        .and_then(|mut statement| {
            statement
                .query_row(params![token_hash.as_slice()], |row| row.get(0))
                .optional()
        })
        .map_err(map_sqlite_error)?;
    bytes
        .map(|bytes| {
            RunnerId::from_slice(&bytes).ok_or_else(|| StoreError::Internal("bad runner id".into()))
        })
        .transpose()
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
        released.push(job.id);
        let jitter = crate::rules::jitter_for(seq, job.lifecycle.attempt);
        job.lifecycle.release(
            format!("runner {id} was deleted while it held the lease"),
            jitter,
            now,
        );
        write_lifecycle(conn, seq, &job.lifecycle)?;
        if job.state() == JobState::Pending {
            context.pending_changed = true;
        }
    }
    context.runner_touches.remove(&id);
    Ok(released)
}

/// Record that a runner is claiming and what it declared; answers the labels an operator gave it
/// at registration, or `None` when the runner is draining (it claims nothing more). Rewrites the
/// runner row only when the declaration changed or a second passed.
pub(super) fn touch_runner(
    context: &mut WriterContext,
    claim: &ClaimRequest,
    now: Timestamp,
) -> Result<Option<BTreeMap<String, String>>, StoreError> {
    let conn = &context.conn;
    let row: Option<(String, bool)> = conn
        .prepare_cached("SELECT labels, draining FROM runners WHERE id = ?1 AND deleted_at IS NULL")
        .and_then(|mut statement| {
            statement
                .query_row(params![claim.runner.as_bytes().as_slice()], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()
        })
        .map_err(map_sqlite_error)?;
    let (labels_text, draining) = row.ok_or_else(|| runner_not_found(claim.runner))?;
    if draining {
        return Ok(None);
    }
    let offer_json = capabilities_to_json(&claim.offer).to_string();
    let kinds_json = serde_json::Value::from(claim.kinds.clone()).to_string();
    let mut hasher = DefaultHasher::new();
    (&offer_json, &kinds_json).hash(&mut hasher);
    let fingerprint = hasher.finish();
    let fresh = context
        .runner_touches
        .get(&claim.runner)
        .is_some_and(|(seen, written_at)| {
            *seen == fingerprint && now.as_millis() - written_at < TOUCH_INTERVAL_MS
        });
    if !fresh {
        conn.prepare_cached(
            "UPDATE runners SET last_seen_at = ?2, offer = ?3, kinds = ?4 WHERE id = ?1",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                claim.runner.as_bytes().as_slice(),
                now.as_millis(),
                offer_json,
                kinds_json
            ])
        })
        .map_err(map_sqlite_error)?;
        context
            .runner_touches
            .insert(claim.runner, (fingerprint, now.as_millis()));
    }
    labels_from_text(&labels_text).map(Some)
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
    let mut stop = Vec::new();
    let mut statement = conn
        .prepare_cached("SELECT state, runner_id FROM jobs WHERE id = ?1")
        .map_err(map_sqlite_error)?;
    for job in &beat.jobs {
        let row: Option<(i64, Option<Vec<u8>>)> = statement
            .query_row(params![job.as_bytes().as_slice()], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
            .map_err(map_sqlite_error)?;
        let keep_running = match row {
            Some((state, holder)) => {
                let state = JobState::from_code(state);
                let held_here = holder.as_deref() == Some(beat.runner.as_bytes().as_slice());
                held_here && matches!(state, Some(JobState::Claimed | JobState::Running))
            }
            None => false,
        };
        if !keep_running {
            stop.push(*job);
        }
    }
    Ok(stop)
}
