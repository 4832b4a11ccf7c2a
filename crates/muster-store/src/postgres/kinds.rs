//! Job kinds' result rules on the PostgreSQL backend (store migration 6). A change and its audit
//! entry are written in one transaction, so they commit together. `kind` is collated "C", so
//! kinds list in byte order, as on SQLite.

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;

use super::identity::insert_audit;
use super::query;
use crate::columns::{self, KIND_SETTINGS_COLUMNS};
use crate::rules::kinds::{self, kind_settings_not_found, result_schema_to_text};
use crate::rules::paging;
use crate::{KindSettingsRecord, NewAuditEntry, Page, PageRequest, StoreError};

fn kind_settings_from_row(row: &Row) -> Result<KindSettingsRecord, StoreError> {
    columns::kind_settings_from_row(row)
}

pub(super) async fn get(
    client: &impl GenericClient,
    kind: &str,
) -> Result<Option<KindSettingsRecord>, StoreError> {
    let sql = format!("SELECT {KIND_SETTINGS_COLUMNS} FROM kind_settings WHERE kind = $1");
    let rows = query(client, &sql, &[&kind]).await?;
    rows.first().map(kind_settings_from_row).transpose()
}

/// Set `settings.kind`'s rules, replacing any, and record `audit`; answers the stored rules.
pub(super) async fn put(
    transaction: &Transaction<'_>,
    settings: &KindSettingsRecord,
    audit: &NewAuditEntry,
) -> Result<KindSettingsRecord, StoreError> {
    let sql = format!(
        "INSERT INTO kind_settings (kind, result_schema, require_signed_results, updated_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (kind) DO UPDATE SET \
         result_schema = excluded.result_schema, \
         require_signed_results = excluded.require_signed_results, \
         updated_at = excluded.updated_at \
         RETURNING {KIND_SETTINGS_COLUMNS}"
    );
    let rows = query(
        transaction,
        &sql,
        &[
            &settings.kind,
            &result_schema_to_text(settings),
            &settings.require_signed_results,
            &settings.updated_at.as_millis(),
        ],
    )
    .await?;
    let stored = rows
        .first()
        .map(kind_settings_from_row)
        .transpose()?
        .ok_or_else(|| {
            StoreError::Internal(format!(
                "the settings of kind {} came back empty from their upsert",
                settings.kind
            ))
        })?;
    insert_audit(transaction, audit).await?;
    Ok(stored)
}

pub(super) async fn list(
    client: &impl GenericClient,
    page: &PageRequest,
) -> Result<Page<KindSettingsRecord>, StoreError> {
    let sql = format!(
        "SELECT {KIND_SETTINGS_COLUMNS} FROM kind_settings \
         WHERE $1::text IS NULL OR kind > $1::text COLLATE \"C\" \
         ORDER BY kind COLLATE \"C\" LIMIT $2"
    );
    let after = kinds::page_after_kind(page)?;
    let limit = paging::rows_to_read(page);
    let rows = query(client, &sql, &[&after, &limit]).await?;
    kinds::page_from_rows(&rows, page, kind_settings_from_row)
}

/// Remove `kind`'s rules and record `audit`; `NotFound`, recording nothing, when it has none.
pub(super) async fn delete(
    transaction: &Transaction<'_>,
    kind: &str,
    audit: &NewAuditEntry,
) -> Result<(), StoreError> {
    let sql =
        format!("DELETE FROM kind_settings WHERE kind = $1 RETURNING {KIND_SETTINGS_COLUMNS}");
    let rows = query(transaction, &sql, &[&kind]).await?;
    if rows.is_empty() {
        return Err(kind_settings_not_found(kind));
    }
    insert_audit(transaction, audit).await
}
