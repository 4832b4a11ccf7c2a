//! The workload registry on PostgreSQL. A report locks its workload's row, and a creation its
//! runner's row (shared), so a runner deleted meanwhile cannot leave a workload that is not
//! failed behind.

use deadpool_postgres::{GenericClient, Transaction};
use muster_core::{RunnerId, Timestamp, WorkloadRecord, WorkloadStatus, WorkloadStatusChange};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::rows::column;
use super::{execute, query};
use crate::columns::{self, WORKLOAD_COLUMNS, WORKLOAD_HISTORY_COLUMNS, workload_change_from_row};
use crate::rules::paging;
use crate::rules::runners::runner_not_found;
use crate::rules::workloads::{
    SelectionValue, apply_report, apply_runner_deleted, containers_to_json, selection, status_code,
    workload_not_found,
};
use crate::{Page, PageRequest, StoreError, WorkloadFilter, WorkloadReport};

fn from_row(row: &Row) -> Result<(i64, WorkloadRecord), StoreError> {
    let (seq, record) = columns::workload_from_row(row)?;
    Ok((seq, record?))
}

async fn load(
    client: &impl GenericClient,
    id: &str,
    lock: bool,
) -> Result<Option<(i64, WorkloadRecord)>, StoreError> {
    let sql = format!(
        "SELECT {WORKLOAD_COLUMNS} FROM workloads WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let rows = query(client, &sql, &[&id]).await?;
    rows.first().map(from_row).transpose()
}

async fn append_history(
    client: &impl GenericClient,
    seq: i64,
    change: &WorkloadStatusChange,
) -> Result<(), StoreError> {
    execute(
        client,
        "INSERT INTO workload_history (workload_seq, position, status, reason, at) \
         SELECT $1, coalesce(max(position) + 1, 0), $2, $3, $4 FROM workload_history \
         WHERE workload_seq = $1",
        &[
            &seq,
            &status_code(change.status),
            &change.reason,
            &change.at.as_millis(),
        ],
    )
    .await?;
    Ok(())
}

async fn write_back(
    client: &impl GenericClient,
    seq: i64,
    record: &WorkloadRecord,
) -> Result<(), StoreError> {
    execute(
        client,
        "UPDATE workloads SET status = $2, status_reason = $3, containers = $4, updated_at = $5 \
         WHERE seq = $1",
        &[
            &seq,
            &status_code(record.status),
            &record.status_reason,
            &containers_to_json(&record.containers),
            &record.updated_at.as_millis(),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn create(
    transaction: &Transaction<'_>,
    workload: WorkloadRecord,
) -> Result<WorkloadRecord, StoreError> {
    let runner = workload.runner_id.as_bytes().to_vec();
    let alive = query(
        transaction,
        "SELECT 1 FROM runners WHERE id = $1 AND deleted_at IS NULL FOR SHARE",
        &[&runner],
    )
    .await?;
    if alive.is_empty() {
        return Err(runner_not_found(workload.runner_id));
    }
    let inserted = query(
        transaction,
        "INSERT INTO workloads (id, runner_id, thread_id, agent_id, organization_id, status, \
         status_reason, containers, ziti_identity_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (id) DO NOTHING RETURNING seq",
        &[
            &workload.id,
            &runner,
            &workload.thread_id,
            &workload.agent_id,
            &workload.organization.as_str(),
            &status_code(workload.status),
            &workload.status_reason,
            &containers_to_json(&workload.containers),
            &workload.ziti_identity_id,
            &workload.created_at.as_millis(),
            &workload.updated_at.as_millis(),
        ],
    )
    .await?;
    let Some(row) = inserted.first() else {
        return Err(StoreError::Conflict(format!(
            "a workload with id {} already exists",
            workload.id
        )));
    };
    let seq: i64 = column(row, 0)?;
    append_history(
        transaction,
        seq,
        &WorkloadStatusChange {
            status: workload.status,
            reason: workload.status_reason.clone(),
            at: workload.created_at,
        },
    )
    .await?;
    Ok(workload)
}

pub(super) async fn get(
    client: &impl GenericClient,
    id: &str,
) -> Result<WorkloadRecord, StoreError> {
    load(client, id, false)
        .await?
        .map(|(_, record)| record)
        .ok_or_else(|| workload_not_found(id))
}

pub(super) async fn list(
    client: &impl GenericClient,
    filter: &WorkloadFilter,
    page: &PageRequest,
) -> Result<Page<WorkloadRecord>, StoreError> {
    let (condition, mut values) =
        selection(filter, paging::page_start_bound(page)?, |n| format!("${n}"));
    values.push(SelectionValue::Integer(paging::rows_to_read(page)));
    let sql = format!(
        "SELECT {WORKLOAD_COLUMNS} FROM workloads WHERE {condition} ORDER BY seq DESC LIMIT ${}",
        values.len()
    );
    let bound: Vec<Box<dyn ToSql + Sync + Send>> = values
        .into_iter()
        .map(|value| -> Box<dyn ToSql + Sync + Send> {
            match value {
                SelectionValue::Text(text) => Box::new(text),
                SelectionValue::Integer(integer) => Box::new(integer),
                SelectionValue::Bytes(bytes) => Box::new(bytes),
            }
        })
        .collect();
    let parameters: Vec<&(dyn ToSql + Sync)> = bound
        .iter()
        .map(|value| value.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = query(client, &sql, &parameters).await?;
    paging::page_from_rows(&rows, page, from_row)
}

pub(super) async fn report(
    transaction: &Transaction<'_>,
    report: &WorkloadReport,
) -> Result<WorkloadRecord, StoreError> {
    let (seq, mut record) = load(transaction, &report.id, true)
        .await?
        .ok_or_else(|| workload_not_found(&report.id))?;
    let change = apply_report(&mut record, report)?;
    write_back(transaction, seq, &record).await?;
    if let Some(change) = change {
        append_history(transaction, seq, &change).await?;
    }
    Ok(record)
}

pub(super) async fn delete(client: &impl GenericClient, id: &str) -> Result<(), StoreError> {
    // The history goes with its workload (ON DELETE CASCADE).
    let deleted = execute(client, "DELETE FROM workloads WHERE id = $1", &[&id]).await?;
    if deleted == 0 {
        return Err(workload_not_found(id));
    }
    Ok(())
}

pub(super) async fn history(
    client: &impl GenericClient,
    id: &str,
) -> Result<Vec<WorkloadStatusChange>, StoreError> {
    let (seq, _) = load(client, id, false)
        .await?
        .ok_or_else(|| workload_not_found(id))?;
    let sql = format!(
        "SELECT {WORKLOAD_HISTORY_COLUMNS} FROM workload_history WHERE workload_seq = $1 \
         ORDER BY position"
    );
    let rows = query(client, &sql, &[&seq]).await?;
    rows.iter()
        .map(|row| workload_change_from_row(row)?)
        .collect()
}

/// Fail the unfinished workloads of `runner` (being deleted, in the caller's transaction).
pub(super) async fn fail_workloads_of_deleted_runner(
    transaction: &Transaction<'_>,
    runner: RunnerId,
    now: Timestamp,
) -> Result<(), StoreError> {
    let sql = format!(
        "SELECT {WORKLOAD_COLUMNS} FROM workloads WHERE runner_id = $1 \
         AND status NOT IN ({}, {}) ORDER BY seq FOR UPDATE",
        status_code(WorkloadStatus::Stopped),
        status_code(WorkloadStatus::Failed)
    );
    let rows = query(transaction, &sql, &[&runner.as_bytes().as_slice()]).await?;
    for row in &rows {
        let (seq, mut record) = from_row(row)?;
        if let Some(change) = apply_runner_deleted(&mut record, now) {
            write_back(transaction, seq, &record).await?;
            append_history(transaction, seq, &change).await?;
        }
    }
    Ok(())
}
