//! Runner identity of the PostgreSQL backend: the allowlist of runner keys and the audit log
//! (store migration 5). A change to the allowlist and its audit entry are written in one
//! transaction, so they commit together.

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;

use super::{execute, query};
use crate::columns::{self, AUDIT_COLUMNS, RUNNER_KEY_COLUMNS};
use crate::rules::identity::{audit_detail_to_text, runner_key_not_found};
use crate::rules::paging;
use crate::{
    AuditEntry, AuditFilter, NewAuditEntry, Page, PageRequest, RemovedRunnerKey, RunnerKeyRecord,
    StoreError,
};

fn runner_key_from_row(row: &Row) -> Result<(i64, RunnerKeyRecord), StoreError> {
    columns::runner_key_from_row(row)
}

fn audit_entry_from_row(row: &Row) -> Result<(i64, AuditEntry), StoreError> {
    let (seq, entry) = columns::audit_entry_from_row(row)?;
    Ok((seq, entry?))
}

pub(super) async fn insert_audit(
    client: &impl GenericClient,
    entry: &NewAuditEntry,
) -> Result<(), StoreError> {
    execute(
        client,
        "INSERT INTO audit_log (at, actor, action, subject, detail, organization_id) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &entry.at.as_millis(),
            &entry.actor,
            &entry.action,
            &entry.subject,
            &audit_detail_to_text(&entry.detail),
            &entry.organization_id,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn get(
    client: &impl GenericClient,
    fingerprint: &str,
) -> Result<Option<RunnerKeyRecord>, StoreError> {
    let sql = format!("SELECT {RUNNER_KEY_COLUMNS} FROM runner_keys WHERE fingerprint = $1");
    let rows = query(client, &sql, &[&fingerprint]).await?;
    rows.first()
        .map(|row| runner_key_from_row(row).map(|(_, record)| record))
        .transpose()
}

/// Add `key` and record `audit`, unless the fingerprint is there already: then answer the
/// stored key and `false`, recording nothing. Two coordinators adding one key at once: one adds
/// it, the other waits on the row and then reads it back.
pub(super) async fn add(
    transaction: &Transaction<'_>,
    key: &RunnerKeyRecord,
    audit: &NewAuditEntry,
) -> Result<(RunnerKeyRecord, bool), StoreError> {
    let sql = format!(
        "INSERT INTO runner_keys (fingerprint, public_key, note, organization_id, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (fingerprint) DO NOTHING \
         RETURNING {RUNNER_KEY_COLUMNS}"
    );
    let added = query(
        transaction,
        &sql,
        &[
            &key.fingerprint,
            &key.public_key,
            &key.note,
            &key.organization_id,
            &key.created_at.as_millis(),
        ],
    )
    .await?;
    if let Some(row) = added.first() {
        let (_, stored) = runner_key_from_row(row)?;
        insert_audit(transaction, audit).await?;
        return Ok((stored, true));
    }
    match get(transaction, &key.fingerprint).await? {
        Some(stored) => Ok((stored, false)),
        // Removed by another coordinator between the two statements.
        None => Err(StoreError::Unavailable(format!(
            "runner key {} was removed while it was being added; retry",
            key.fingerprint
        ))),
    }
}

pub(super) async fn list(
    client: &impl GenericClient,
    organization: Option<&str>,
    page: &PageRequest,
) -> Result<Page<RunnerKeyRecord>, StoreError> {
    let sql = format!(
        "SELECT {RUNNER_KEY_COLUMNS} FROM runner_keys WHERE seq > $1 \
         AND ($3::text IS NULL OR organization_id = $3) ORDER BY seq LIMIT $2"
    );
    let params = [paging::page_after_bound(page)?, paging::rows_to_read(page)];
    let rows = query(client, &sql, &[&params[0], &params[1], &organization]).await?;
    paging::page_from_rows(&rows, page, runner_key_from_row)
}

/// Remove the key of `fingerprint` and record `audit`; `NotFound`, recording nothing, when
/// there is none.
pub(super) async fn remove(
    transaction: &Transaction<'_>,
    fingerprint: &str,
    audit: &NewAuditEntry,
) -> Result<(RemovedRunnerKey, bool), StoreError> {
    let sql =
        format!("DELETE FROM runner_keys WHERE fingerprint = $1 RETURNING {RUNNER_KEY_COLUMNS}");
    let rows = query(transaction, &sql, &[&fingerprint]).await?;
    let Some(row) = rows.first() else {
        return Err(runner_key_not_found(fingerprint));
    };
    let (_, removed) = runner_key_from_row(row)?;
    insert_audit(transaction, audit).await?;
    let (revoked_runner, released, requeued) =
        super::enrollment::revoke_key_runner(transaction, fingerprint, audit).await?;
    Ok((
        RemovedRunnerKey {
            key: removed,
            revoked_runner,
            released,
        },
        requeued,
    ))
}

pub(super) async fn append_audit(
    client: &impl GenericClient,
    entry: &NewAuditEntry,
) -> Result<(), StoreError> {
    insert_audit(client, entry).await
}

pub(super) async fn list_audit(
    client: &impl GenericClient,
    filter: &AuditFilter,
    page: &PageRequest,
) -> Result<Page<AuditEntry>, StoreError> {
    let below = paging::page_start_bound(page)?;
    let limit = paging::rows_to_read(page);
    let (condition, values) =
        crate::rules::identity::audit_filter_condition(filter, |index| format!("${index}"));
    let sql = format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE {condition} seq < $1 \
         ORDER BY seq DESC LIMIT $2"
    );
    let mut parameters: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&below, &limit];
    parameters.extend(
        values
            .into_iter()
            .map(|value| value as &(dyn tokio_postgres::types::ToSql + Sync)),
    );
    let rows = query(client, &sql, &parameters).await?;
    paging::page_from_rows(&rows, page, audit_entry_from_row)
}
