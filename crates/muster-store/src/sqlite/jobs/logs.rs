//! Job logs on SQLite: appends (planned by [`crate::rules::logs`], written here in the writer's
//! transaction), reads and positions (on reader connections).

use std::collections::HashSet;

use muster_core::{JobId, LogEntry, NewLogEntry, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};

use super::super::map_sqlite_error;
use super::super::writer::WriterContext;
use super::load_by_id;
use crate::encoding::level_code;
use crate::rules::jobs::TERMINAL_STATE_CODES;
use crate::rules::logs::{self, LogCounters};
use crate::{LogPage, LogPosition, LogSearch, LogSearchPage, StoreError};

/// Append entries to the log of the job at row `job_seq` within its cap; answers the job's next
/// sequence number.
pub(super) fn append(
    context: &mut WriterContext,
    job_seq: i64,
    entries: Vec<NewLogEntry>,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let conn = &context.conn;
    let counters = conn
        .prepare_cached("SELECT log_next_seq, log_bytes, log_truncated FROM jobs WHERE seq = ?1")
        .and_then(|mut statement| {
            statement.query_row(params![job_seq], |row| {
                Ok(LogCounters {
                    next_seq: row.get(0)?,
                    bytes: row.get(1)?,
                    truncated: row.get(2)?,
                })
            })
        })
        .map_err(map_sqlite_error)?;
    let mut stored = HashSet::new();
    for slot in logs::slots_to_check(counters, &entries) {
        let taken = conn
            .prepare_cached("SELECT 1 FROM job_logs WHERE job_seq = ?1 AND seq = ?2")
            .and_then(|mut statement| {
                statement
                    .query_row(params![job_seq, slot], |_| Ok(()))
                    .optional()
            })
            .map_err(map_sqlite_error)?;
        if taken.is_some() {
            stored.insert(slot);
        }
    }
    let append = logs::plan_append(counters, context.log_cap_bytes, entries, &stored)?;
    if !append.rows.is_empty() {
        let mut insert = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO job_logs (job_seq, seq, ts, level, message, metadata) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(map_sqlite_error)?;
        for row in &append.rows {
            insert
                .execute(params![
                    job_seq,
                    row.seq,
                    now.as_millis(),
                    level_code(row.level),
                    row.message,
                    row.metadata
                ])
                .map_err(map_sqlite_error)?;
        }
    }
    if append.counters != counters {
        let LogCounters {
            next_seq,
            bytes,
            truncated,
        } = append.counters;
        conn.prepare_cached(
            "UPDATE jobs SET log_next_seq = ?2, log_bytes = ?3, log_truncated = ?4 WHERE seq = ?1",
        )
        .and_then(|mut statement| statement.execute(params![job_seq, next_seq, bytes, truncated]))
        .map_err(map_sqlite_error)?;
    }
    Ok(append.counters.next_seq as u64)
}

pub(in crate::sqlite) fn read(
    conn: &Connection,
    id: JobId,
    after_seq: Option<u64>,
    limit: u32,
) -> Result<LogPage, StoreError> {
    let (seq, job) = load_by_id(conn, id)?;
    let first = logs::first_log_seq_after(after_seq);
    let mut statement = conn
        .prepare_cached(
            "SELECT seq, ts, level, message, metadata FROM job_logs WHERE job_seq = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
        )
        .map_err(map_sqlite_error)?;
    let items: Vec<LogEntry> = statement
        .query_map(params![seq, first, i64::from(limit)], entry_from_row)
        .map_err(map_sqlite_error)?
        .collect::<Result<_, _>>()
        .map_err(map_sqlite_error)?;
    let next_seq = logs::next_log_seq(&items, first, || {
        conn.prepare_cached("SELECT log_next_seq FROM jobs WHERE seq = ?1")
            .and_then(|mut statement| statement.query_row(params![seq], |row| row.get(0)))
            .map_err(map_sqlite_error)
    })?;
    Ok(LogPage {
        items,
        next_seq,
        job_finished: job.state().is_terminal(),
    })
}

pub(in crate::sqlite) fn search(
    conn: &Connection,
    id: JobId,
    search: &LogSearch,
) -> Result<LogSearchPage, StoreError> {
    let (job_seq, _) = load_by_id(conn, id)?;
    let stored_next_seq: i64 = conn
        .prepare_cached("SELECT log_next_seq FROM jobs WHERE seq = ?1")
        .and_then(|mut statement| statement.query_row(params![job_seq], |row| row.get(0)))
        .map_err(map_sqlite_error)?;
    let (first, last) = logs::search_range(search);
    let mut sql = String::from(
        "SELECT seq, ts, level, message, metadata FROM job_logs \
         WHERE job_seq = ?1 AND seq >= ?2 AND seq <= ?3",
    );
    let mut values: Vec<rusqlite::types::Value> = vec![job_seq.into(), first.into(), last.into()];
    if let Some(level) = search.min_level {
        values.push(level_code(level).into());
        sql.push_str(&format!(" AND level >= ?{}", values.len()));
    }
    if let Some(text) = search.text.as_deref().filter(|text| !text.is_empty()) {
        values.push(logs::like_pattern(text).into());
        sql.push_str(&format!(" AND message LIKE ?{} ESCAPE '\\'", values.len()));
    }
    values.push(i64::from(search.limit).into());
    sql.push_str(&format!(" ORDER BY seq LIMIT ?{}", values.len()));
    let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
    let items: Vec<LogEntry> = statement
        .query_map(rusqlite::params_from_iter(values), entry_from_row)
        .map_err(map_sqlite_error)?
        .collect::<Result<_, _>>()
        .map_err(map_sqlite_error)?;
    Ok(logs::search_page(items, search, stored_next_seq))
}

/// A `job_logs` row read as `seq, ts, level, message, metadata`.
fn entry_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<LogEntry> {
    let metadata: Option<String> = row.get(4)?;
    Ok(logs::log_entry_from_columns(
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        metadata.as_deref(),
    ))
}

pub(in crate::sqlite) fn positions(
    conn: &Connection,
    ids: &[JobId],
) -> Result<Vec<LogPosition>, StoreError> {
    let sql =
        format!("SELECT log_next_seq, state IN ({TERMINAL_STATE_CODES}) FROM jobs WHERE id = ?1");
    let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
    let mut positions = Vec::with_capacity(ids.len());
    for id in ids {
        let found = statement
            .query_row(params![id.as_bytes().as_slice()], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
            .map_err(map_sqlite_error)?;
        if let Some((next_seq, finished)) = found {
            positions.push(logs::log_position(*id, next_seq, finished));
        }
    }
    Ok(positions)
}
