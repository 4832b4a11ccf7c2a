//! Runner identity of the SQLite backend: the allowlist of runner keys and the audit log (schema
//! migration 5). A change to the allowlist and its audit entry are written by one operation of
//! the writer thread, so they commit together.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::map_sqlite_error;
use super::writer::WriterContext;
use crate::columns::{self, AUDIT_COLUMNS, RUNNER_KEY_COLUMNS};
use crate::rules::identity::{audit_detail_to_text, runner_key_not_found};
use crate::rules::paging;
use crate::{
    AuditEntry, AuditFilter, NewAuditEntry, Page, PageRequest, RemovedRunnerKey, RunnerKeyRecord,
    StoreError,
};

fn runner_key_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, RunnerKeyRecord)> {
    columns::runner_key_from_row(row)
}

fn audit_entry_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, Result<AuditEntry, StoreError>)> {
    columns::audit_entry_from_row(row)
}

pub(super) fn insert_audit(conn: &Connection, entry: &NewAuditEntry) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit_log (at, actor, action, subject, detail, organization_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            entry.at.as_millis(),
            entry.actor,
            entry.action,
            entry.subject,
            audit_detail_to_text(&entry.detail),
            entry.organization_id,
        ])
    })
    .map_err(map_sqlite_error)?;
    Ok(())
}

pub(super) fn get(
    conn: &Connection,
    fingerprint: &str,
) -> Result<Option<RunnerKeyRecord>, StoreError> {
    let sql = format!("SELECT {RUNNER_KEY_COLUMNS} FROM runner_keys WHERE fingerprint = ?1");
    let row = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_row(params![fingerprint], runner_key_from_row)
                .optional()
        })
        .map_err(map_sqlite_error)?;
    Ok(row.map(|(_, record)| record))
}

/// Add `key` and record `audit`, unless the fingerprint is there already: then answer the
/// stored key and `false`, recording nothing.
pub(super) fn add(
    context: &mut WriterContext,
    key: &RunnerKeyRecord,
    audit: &NewAuditEntry,
) -> Result<(RunnerKeyRecord, bool), StoreError> {
    let conn = &context.conn;
    let added = conn
        .prepare_cached(
            "INSERT INTO runner_keys (fingerprint, public_key, note, organization_id, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (fingerprint) DO NOTHING",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                key.fingerprint,
                key.public_key,
                key.note,
                key.organization_id,
                key.created_at.as_millis(),
            ])
        })
        .map_err(map_sqlite_error)?;
    if added == 1 {
        insert_audit(conn, audit)?;
    }
    let stored = get(conn, &key.fingerprint)?.ok_or_else(|| {
        StoreError::Internal(format!(
            "runner key {} is not there right after it was added",
            key.fingerprint
        ))
    })?;
    Ok((stored, added == 1))
}

pub(super) fn list(
    conn: &Connection,
    organization: Option<&str>,
    page: &PageRequest,
) -> Result<Page<RunnerKeyRecord>, StoreError> {
    let sql = format!(
        "SELECT {RUNNER_KEY_COLUMNS} FROM runner_keys WHERE seq > ?1 \
         AND (?3 IS NULL OR organization_id = ?3) ORDER BY seq LIMIT ?2"
    );
    let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
    let rows = statement
        .query_map(
            params![
                paging::page_after_bound(page)?,
                paging::rows_to_read(page),
                organization
            ],
            runner_key_from_row,
        )
        .map_err(map_sqlite_error)?;
    paging::page_from_rows(rows, page, |row| row.map_err(map_sqlite_error))
}

/// Remove the key of `fingerprint` and record `audit`; `NotFound`, recording nothing, when
/// there is none.
pub(super) fn remove(
    context: &mut WriterContext,
    fingerprint: &str,
    audit: &NewAuditEntry,
) -> Result<RemovedRunnerKey, StoreError> {
    let conn = &context.conn;
    let sql =
        format!("DELETE FROM runner_keys WHERE fingerprint = ?1 RETURNING {RUNNER_KEY_COLUMNS}");
    let removed = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_row(params![fingerprint], runner_key_from_row)
                .optional()
        })
        .map_err(map_sqlite_error)?;
    let Some((_, removed)) = removed else {
        return Err(runner_key_not_found(fingerprint));
    };
    insert_audit(conn, audit)?;
    let (revoked_runner, released) =
        super::enrollment::revoke_key_runner(context, fingerprint, audit)?;
    Ok(RemovedRunnerKey {
        key: removed,
        revoked_runner,
        released,
    })
}

pub(super) fn append_audit(
    context: &mut WriterContext,
    entry: &NewAuditEntry,
) -> Result<(), StoreError> {
    insert_audit(&context.conn, entry)
}

pub(super) fn list_audit(
    conn: &Connection,
    filter: &AuditFilter,
    page: &PageRequest,
) -> Result<Page<AuditEntry>, StoreError> {
    let below = paging::page_start_bound(page)?;
    let limit = paging::rows_to_read(page);
    let decode = |row: rusqlite::Result<(i64, Result<AuditEntry, StoreError>)>| {
        let (seq, entry) = row.map_err(map_sqlite_error)?;
        Ok((seq, entry?))
    };
    let (condition, values) =
        crate::rules::identity::audit_filter_condition(filter, |index| format!("?{index}"));
    let sql = format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE {condition} seq < ?1 \
         ORDER BY seq DESC LIMIT ?2"
    );
    let mut parameters: Vec<&dyn rusqlite::ToSql> = vec![&below, &limit];
    parameters.extend(
        values
            .into_iter()
            .map(|value| value as &dyn rusqlite::ToSql),
    );
    let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
    let rows = statement
        .query_map(parameters.as_slice(), audit_entry_from_row)
        .map_err(map_sqlite_error)?;
    paging::page_from_rows(rows, page, decode)
}
