//! The workload registry on SQLite.

use muster_core::{Timestamp, WorkloadRecord, WorkloadStatusChange};
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::map_sqlite_error;
use super::writer::WriterContext;
use crate::columns::{
    WORKLOAD_COLUMNS, WORKLOAD_HISTORY_COLUMNS, workload_change_from_row, workload_from_row,
};
use crate::rules::paging;
use crate::rules::runners::runner_not_found;
use crate::rules::workloads::{
    SelectionValue, apply_report, apply_runner_deleted, containers_to_json, selection, status_code,
    workload_not_found,
};
use crate::{Page, PageRequest, StoreError, WorkloadFilter, WorkloadReport};

fn from_row(row: &Row<'_>) -> rusqlite::Result<(i64, Result<WorkloadRecord, StoreError>)> {
    workload_from_row(row)
}

fn load(conn: &Connection, id: &str) -> Result<Option<(i64, WorkloadRecord)>, StoreError> {
    let sql = format!("SELECT {WORKLOAD_COLUMNS} FROM workloads WHERE id = ?1");
    let row = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| statement.query_row(params![id], from_row).optional())
        .map_err(map_sqlite_error)?;
    row.map(|(seq, record)| Ok((seq, record?))).transpose()
}

fn append_history(
    conn: &Connection,
    seq: i64,
    change: &WorkloadStatusChange,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO workload_history (workload_seq, position, status, reason, at) \
         SELECT ?1, coalesce(max(position) + 1, 0), ?2, ?3, ?4 FROM workload_history \
         WHERE workload_seq = ?1",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            seq,
            status_code(change.status),
            change.reason,
            change.at.as_millis()
        ])
    })
    .map_err(map_sqlite_error)?;
    Ok(())
}

fn write_back(conn: &Connection, seq: i64, record: &WorkloadRecord) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE workloads SET status = ?2, status_reason = ?3, containers = ?4, updated_at = ?5 \
         WHERE seq = ?1",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            seq,
            status_code(record.status),
            record.status_reason,
            containers_to_json(&record.containers),
            record.updated_at.as_millis()
        ])
    })
    .map_err(map_sqlite_error)?;
    Ok(())
}

pub(super) fn create(
    context: &mut WriterContext,
    workload: WorkloadRecord,
) -> Result<WorkloadRecord, StoreError> {
    let conn = &context.conn;
    let runner_alive = conn
        .prepare_cached("SELECT 1 FROM runners WHERE id = ?1 AND deleted_at IS NULL")
        .and_then(|mut statement| {
            statement
                .query_row(
                    params![workload.runner_id.as_bytes().as_slice()],
                    |_| Ok(()),
                )
                .optional()
        })
        .map_err(map_sqlite_error)?;
    if runner_alive.is_none() {
        return Err(runner_not_found(workload.runner_id));
    }
    if load(conn, &workload.id)?.is_some() {
        return Err(StoreError::Conflict(format!(
            "a workload with id {} already exists",
            workload.id
        )));
    }
    let seq: i64 = conn
        .prepare_cached(
            "INSERT INTO workloads (id, runner_id, thread_id, agent_id, organization_id, status, \
             status_reason, containers, ziti_identity_id, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) RETURNING seq",
        )
        .and_then(|mut statement| {
            statement.query_row(
                params![
                    workload.id,
                    workload.runner_id.as_bytes().as_slice(),
                    workload.thread_id,
                    workload.agent_id,
                    workload.organization.as_str(),
                    status_code(workload.status),
                    workload.status_reason,
                    containers_to_json(&workload.containers),
                    workload.ziti_identity_id,
                    workload.created_at.as_millis(),
                    workload.updated_at.as_millis()
                ],
                |row| row.get(0),
            )
        })
        .map_err(map_sqlite_error)?;
    append_history(
        conn,
        seq,
        &WorkloadStatusChange {
            status: workload.status,
            reason: workload.status_reason.clone(),
            at: workload.created_at,
        },
    )?;
    Ok(workload)
}

pub(super) fn get(conn: &Connection, id: &str) -> Result<WorkloadRecord, StoreError> {
    load(conn, id)?
        .map(|(_, record)| record)
        .ok_or_else(|| workload_not_found(id))
}

pub(super) fn list(
    conn: &Connection,
    filter: &WorkloadFilter,
    page: &PageRequest,
) -> Result<Page<WorkloadRecord>, StoreError> {
    let (condition, mut values) =
        selection(filter, paging::page_start_bound(page)?, |n| format!("?{n}"));
    values.push(SelectionValue::Integer(paging::rows_to_read(page)));
    let sql = format!(
        "SELECT {WORKLOAD_COLUMNS} FROM workloads WHERE {condition} ORDER BY seq DESC LIMIT ?{}",
        values.len()
    );
    let values: Vec<rusqlite::types::Value> = values
        .into_iter()
        .map(|value| match value {
            SelectionValue::Text(text) => text.into(),
            SelectionValue::Integer(integer) => integer.into(),
            SelectionValue::Bytes(bytes) => bytes.into(),
        })
        .collect();
    let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
    let rows: Vec<_> = statement
        .query_map(params_from_iter(values), from_row)
        .map_err(map_sqlite_error)?
        .collect::<Result<_, _>>()
        .map_err(map_sqlite_error)?;
    paging::page_from_rows(rows, page, |(seq, record)| Ok((seq, record?)))
}

pub(super) fn report(
    context: &mut WriterContext,
    report: &WorkloadReport,
) -> Result<WorkloadRecord, StoreError> {
    let conn = &context.conn;
    let (seq, mut record) =
        load(conn, &report.id)?.ok_or_else(|| workload_not_found(&report.id))?;
    let change = apply_report(&mut record, report)?;
    write_back(conn, seq, &record)?;
    if let Some(change) = change {
        append_history(conn, seq, &change)?;
    }
    Ok(record)
}

pub(super) fn delete(context: &mut WriterContext, id: &str) -> Result<(), StoreError> {
    let conn = &context.conn;
    let (seq, _) = load(conn, id)?.ok_or_else(|| workload_not_found(id))?;
    conn.prepare_cached("DELETE FROM workload_history WHERE workload_seq = ?1")
        .and_then(|mut statement| statement.execute(params![seq]))
        .map_err(map_sqlite_error)?;
    conn.prepare_cached("DELETE FROM workloads WHERE seq = ?1")
        .and_then(|mut statement| statement.execute(params![seq]))
        .map_err(map_sqlite_error)?;
    Ok(())
}

pub(super) fn history(
    conn: &Connection,
    id: &str,
) -> Result<Vec<WorkloadStatusChange>, StoreError> {
    let (seq, _) = load(conn, id)?.ok_or_else(|| workload_not_found(id))?;
    let sql = format!(
        "SELECT {WORKLOAD_HISTORY_COLUMNS} FROM workload_history WHERE workload_seq = ?1 \
         ORDER BY position"
    );
    let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
    let rows: Vec<_> = statement
        .query_map(params![seq], |row| workload_change_from_row(row))
        .map_err(map_sqlite_error)?
        .collect::<Result<_, _>>()
        .map_err(map_sqlite_error)?;
    rows.into_iter().collect()
}

/// Fail the unfinished workloads of the runner `runner` (being deleted, in the caller's
/// transaction).
pub(super) fn fail_workloads_of_deleted_runner(
    conn: &Connection,
    runner: muster_core::RunnerId,
    now: Timestamp,
) -> Result<(), StoreError> {
    let finished: Vec<String> = [
        muster_core::WorkloadStatus::Stopped,
        muster_core::WorkloadStatus::Failed,
    ]
    .into_iter()
    .map(|status| status_code(status).to_string())
    .collect();
    let sql = format!(
        "SELECT {WORKLOAD_COLUMNS} FROM workloads WHERE runner_id = ?1 AND status NOT IN ({})",
        finished.join(", ")
    );
    let rows: Vec<_> = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_map(params![runner.as_bytes().as_slice()], from_row)?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(map_sqlite_error)?;
    for (seq, record) in rows {
        let mut record = record?;
        if let Some(change) = apply_runner_deleted(&mut record, now) {
            write_back(conn, seq, &record)?;
            append_history(conn, seq, &change)?;
        }
    }
    Ok(())
}
