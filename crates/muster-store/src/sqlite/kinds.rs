//! Job kinds' result rules on the SQLite backend (schema migration 6). A change and its audit
//! entry are written by one operation of the writer thread, so they commit together.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::identity::insert_audit;
use super::map_sqlite_error;
use super::writer::WriterContext;
use crate::columns::{self, KIND_SETTINGS_COLUMNS};
use crate::rules::kinds::{self, kind_settings_not_found, result_schema_to_text};
use crate::rules::paging;
use crate::{KindSettingsRecord, NewAuditEntry, Page, PageRequest, StoreError};

fn kind_settings_from_row(row: &Row<'_>) -> rusqlite::Result<KindSettingsRecord> {
    columns::kind_settings_from_row(row)
}

pub(super) fn get(conn: &Connection, kind: &str) -> Result<Option<KindSettingsRecord>, StoreError> {
    let sql = format!("SELECT {KIND_SETTINGS_COLUMNS} FROM kind_settings WHERE kind = ?1");
    conn.prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_row(params![kind], kind_settings_from_row)
                .optional()
        })
        .map_err(map_sqlite_error)
}

/// Set `settings.kind`'s rules, replacing any, and record `audit`; answers the stored rules.
pub(super) fn put(
    context: &mut WriterContext,
    settings: &KindSettingsRecord,
    audit: &NewAuditEntry,
) -> Result<KindSettingsRecord, StoreError> {
    let conn = &context.conn;
    let sql = format!(
        "INSERT INTO kind_settings (kind, result_schema, require_signed_results, updated_at) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (kind) DO UPDATE SET \
         result_schema = excluded.result_schema, \
         require_signed_results = excluded.require_signed_results, \
         updated_at = excluded.updated_at \
         RETURNING {KIND_SETTINGS_COLUMNS}"
    );
    let stored = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement.query_row(
                params![
                    settings.kind,
                    result_schema_to_text(settings),
                    settings.require_signed_results,
                    settings.updated_at.as_millis(),
                ],
                kind_settings_from_row,
            )
        })
        .map_err(map_sqlite_error)?;
    insert_audit(conn, audit)?;
    Ok(stored)
}

pub(super) fn list(
    conn: &Connection,
    page: &PageRequest,
) -> Result<Page<KindSettingsRecord>, StoreError> {
    let sql = format!(
        "SELECT {KIND_SETTINGS_COLUMNS} FROM kind_settings WHERE ?1 IS NULL OR kind > ?1 \
         ORDER BY kind LIMIT ?2"
    );
    let after = kinds::page_after_kind(page)?;
    let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
    let rows = statement
        .query_map(
            params![after, paging::rows_to_read(page)],
            kind_settings_from_row,
        )
        .map_err(map_sqlite_error)?;
    kinds::page_from_rows(rows, page, |row| row.map_err(map_sqlite_error))
}

/// Remove `kind`'s rules and record `audit`; `NotFound`, recording nothing, when it has none.
pub(super) fn delete(
    context: &mut WriterContext,
    kind: &str,
    audit: &NewAuditEntry,
) -> Result<(), StoreError> {
    let conn = &context.conn;
    let sql =
        format!("DELETE FROM kind_settings WHERE kind = ?1 RETURNING {KIND_SETTINGS_COLUMNS}");
    let removed = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_row(params![kind], kind_settings_from_row)
                .optional()
        })
        .map_err(map_sqlite_error)?;
    if removed.is_none() {
        return Err(kind_settings_not_found(kind));
    }
    insert_audit(conn, audit)
}
