//! Job logs on PostgreSQL: appends (planned by [`crate::rules::logs`], written here with one
//! statement, under the job's row lock), reads and positions.

use std::collections::HashSet;

use deadpool_postgres::{GenericClient, Transaction};
use muster_core::{JobId, LogEntry, NewLogEntry, Timestamp};
use tokio_postgres::types::ToSql;

use super::super::rows::column;
use super::super::{Shared, execute, query};
use super::load_by_id;
use crate::encoding::level_code;
use crate::rules::jobs::{TERMINAL_STATE_CODES, job_not_found};
use crate::rules::logs::{self, LogCounters, LogRow};
use crate::{LogPage, LogPosition, LogSearch, LogSearchPage, StoreError};

/// Append entries to the log of the job at row `job_seq` within its cap; answers the job's next
/// sequence number. The caller holds the job's row lock, so the log cannot move underneath.
pub(super) async fn append(
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
    let counters = LogCounters {
        next_seq: column(row, 0)?,
        bytes: column(row, 1)?,
        truncated: column(row, 2)?,
    };
    let slots = logs::slots_to_check(counters, &entries);
    let mut stored = HashSet::new();
    if !slots.is_empty() {
        for row in &query(
            transaction,
            "SELECT seq FROM job_logs WHERE job_seq = $1 AND seq = ANY($2)",
            &[&job_seq, &slots],
        )
        .await?
        {
            stored.insert(column::<i64>(row, 0)?);
        }
    }
    let append = logs::plan_append(counters, shared.log_cap_bytes, entries, &stored)?;
    let LogCounters {
        next_seq,
        bytes,
        truncated,
    } = append.counters;
    let update_counters = async {
        if append.counters == counters {
            return Ok(0);
        }
        execute(
            transaction,
            "UPDATE jobs SET log_next_seq = $2, log_bytes = $3, log_truncated = $4 WHERE seq = $1",
            &[&job_seq, &next_seq, &bytes, &truncated],
        )
        .await
    };
    // Both go out together on the one connection (the driver pipelines them).
    futures::try_join!(
        insert_rows(transaction, job_seq, &append.rows, now),
        update_counters
    )?;
    Ok(next_seq as u64)
}

/// Insert `rows` into the log of the job at row `job_seq` with one statement.
async fn insert_rows(
    transaction: &Transaction<'_>,
    job_seq: i64,
    rows: &[LogRow],
    now: Timestamp,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = rows.iter().map(|row| row.seq).collect();
    let timestamps = vec![now.as_millis(); rows.len()];
    let levels: Vec<i16> = rows
        .iter()
        .map(|row| level_code(row.level) as i16)
        .collect();
    let messages: Vec<&str> = rows.iter().map(|row| row.message.as_str()).collect();
    let metadata: Vec<Option<&str>> = rows.iter().map(|row| row.metadata.as_deref()).collect();
    execute(
        transaction,
        "INSERT INTO job_logs (job_seq, seq, ts, level, message, metadata) \
         SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::smallint[], $5::text[], $6::text[]) \
         ON CONFLICT (job_seq, seq) DO NOTHING",
        &[&job_seq, &seqs, &timestamps, &levels, &messages, &metadata],
    )
    .await
    .map(|_| ())
}

pub(in crate::postgres) async fn read(
    client: &impl GenericClient,
    id: JobId,
    after_seq: Option<u64>,
    limit: u32,
) -> Result<LogPage, StoreError> {
    let (seq, job) = load_by_id(client, id, false).await?;
    let first = logs::first_log_seq_after(after_seq);
    let rows = query(
        client,
        "SELECT seq, ts, level, message, metadata FROM job_logs \
         WHERE job_seq = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
        &[&seq, &first, &i64::from(limit)],
    )
    .await?;
    let items = rows
        .iter()
        .map(entry_from_row)
        .collect::<Result<Vec<_>, _>>()?;
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
    let next_seq = logs::next_log_seq(&items, first, || Ok(stored_next_seq))?;
    Ok(LogPage {
        items,
        next_seq,
        job_finished: job.state().is_terminal(),
    })
}

pub(in crate::postgres) async fn search(
    client: &impl GenericClient,
    id: JobId,
    search: &LogSearch,
) -> Result<LogSearchPage, StoreError> {
    let (job_seq, _) = load_by_id(client, id, false).await?;
    let rows = query(
        client,
        "SELECT log_next_seq FROM jobs WHERE seq = $1",
        &[&job_seq],
    )
    .await?;
    let stored_next_seq: i64 = match rows.first() {
        Some(row) => column(row, 0)?,
        None => return Err(job_not_found(id)),
    };
    let (first, last) = logs::search_range(search);
    let level = search.min_level.map(|level| level_code(level) as i16);
    let pattern = search
        .text
        .as_deref()
        .filter(|text| !text.is_empty())
        .map(logs::like_pattern);
    let limit = i64::from(search.limit);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&job_seq, &first, &last];
    let mut sql = String::from(
        "SELECT seq, ts, level, message, metadata FROM job_logs \
         WHERE job_seq = $1 AND seq >= $2 AND seq <= $3",
    );
    if let Some(level) = &level {
        params.push(level);
        sql.push_str(&format!(" AND level >= ${}", params.len()));
    }
    if let Some(pattern) = &pattern {
        params.push(pattern);
        sql.push_str(&format!(" AND message ILIKE ${} ESCAPE '\\'", params.len()));
    }
    params.push(&limit);
    sql.push_str(&format!(" ORDER BY seq LIMIT ${}", params.len()));
    let rows = query(client, &sql, &params).await?;
    let items = rows
        .iter()
        .map(entry_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(logs::search_page(items, search, stored_next_seq))
}

/// A `job_logs` row read as `seq, ts, level, message, metadata`.
fn entry_from_row(row: &tokio_postgres::Row) -> Result<LogEntry, StoreError> {
    Ok(logs::log_entry_from_columns(
        column(row, 0)?,
        column(row, 1)?,
        i64::from(column::<i16>(row, 2)?),
        column(row, 3)?,
        column(row, 4)?,
    ))
}

pub(in crate::postgres) async fn positions(
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
        positions.push(logs::log_position(*job, column(row, 1)?, column(row, 2)?));
    }
    Ok(positions)
}
