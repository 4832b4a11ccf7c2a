//! Organizations and user tokens on the PostgreSQL backend (store migration 8). A change and its
//! audit entry are written in one transaction, so they commit together. Deleting an
//! organization locks its row first, so a coordinator that puts something in it (which locks
//! the row to share it) waits for the deletion, or the deletion sees what it put there.

use deadpool_postgres::{GenericClient, Transaction};
use muster_core::{Timestamp, UserTokenId};
use tokio_postgres::Row;

use super::identity::insert_audit;
use super::{execute, query};
use crate::columns::{self, ORGANIZATION_COLUMNS, SESSION_COLUMNS, USER_TOKEN_COLUMNS};
use crate::rules::jobs::TERMINAL_STATE_CODES;
use crate::rules::organizations::{
    EXPIRED_SESSIONS_DELETED_PER_SIGN_IN, check_deletable, count, organization_not_found,
    organization_taken, session_not_found, user_token_not_found,
};
use crate::rules::paging;
use crate::{
    NewAuditEntry, NewUserToken, OrganizationContents, OrganizationRecord, Page, PageRequest,
    SessionRecord, StoreError, UserTokenRecord,
};

fn organization_from_row(row: &Row) -> Result<(i64, OrganizationRecord), StoreError> {
    columns::organization_from_row(row)
}

fn user_token_from_row(row: &Row) -> Result<(i64, UserTokenRecord), StoreError> {
    columns::user_token_from_row(row)
}

pub(super) async fn create(
    transaction: &Transaction<'_>,
    organization: &OrganizationRecord,
    audit: &NewAuditEntry,
) -> Result<OrganizationRecord, StoreError> {
    let sql = format!(
        "INSERT INTO organizations (id, name, allow_shared_runners, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING {ORGANIZATION_COLUMNS}"
    );
    let rows = query(
        transaction,
        &sql,
        &[
            &organization.id,
            &organization.name,
            &organization.allow_shared_runners,
            &organization.created_at.as_millis(),
        ],
    )
    .await?;
    let Some((_, stored)) = rows.first().map(organization_from_row).transpose()? else {
        return Err(organization_taken(organization));
    };
    insert_audit(transaction, audit).await?;
    Ok(stored)
}

pub(super) async fn get(
    client: &impl GenericClient,
    id: &str,
) -> Result<Option<OrganizationRecord>, StoreError> {
    let sql = format!("SELECT {ORGANIZATION_COLUMNS} FROM organizations WHERE id = $1");
    let rows = query(client, &sql, &[&id]).await?;
    Ok(rows
        .first()
        .map(organization_from_row)
        .transpose()?
        .map(|(_, record)| record))
}

pub(super) async fn list(
    client: &impl GenericClient,
    page: &PageRequest,
) -> Result<Page<OrganizationRecord>, StoreError> {
    let sql = format!(
        "SELECT {ORGANIZATION_COLUMNS} FROM organizations WHERE seq > $1 ORDER BY seq LIMIT $2"
    );
    let params = [paging::page_after_bound(page)?, paging::rows_to_read(page)];
    let rows = query(client, &sql, &[&params[0], &params[1]]).await?;
    paging::page_from_rows(&rows, page, organization_from_row)
}

async fn contents(
    transaction: &Transaction<'_>,
    id: &str,
) -> Result<OrganizationContents, StoreError> {
    let sql = format!(
        "SELECT \
         (SELECT count(*) FROM jobs WHERE organization_id = $1 \
             AND state NOT IN ({TERMINAL_STATE_CODES})), \
         (SELECT count(*) FROM runners WHERE organization_id = $1 AND deleted_at IS NULL), \
         (SELECT count(*) FROM user_tokens WHERE organization_id = $1), \
         (SELECT count(*) FROM workloads WHERE organization_id = $1 AND status NOT IN ({}, {}))",
        crate::rules::workloads::status_code(muster_core::WorkloadStatus::Stopped),
        crate::rules::workloads::status_code(muster_core::WorkloadStatus::Failed)
    );
    let rows = query(transaction, &sql, &[&id]).await?;
    let row = rows
        .first()
        .ok_or_else(|| StoreError::Internal("counting an organization answered no row".into()))?;
    let read = |index: usize| -> Result<u64, StoreError> {
        row.try_get::<_, i64>(index)
            .map(count)
            .map_err(|error| StoreError::Internal(format!("read a count: {error}")))
    };
    Ok(OrganizationContents {
        unfinished_jobs: read(0)?,
        runners: read(1)?,
        user_tokens: read(2)?,
        unfinished_workloads: read(3)?,
    })
}

pub(super) async fn delete(
    transaction: &Transaction<'_>,
    id: &str,
    audit: &NewAuditEntry,
) -> Result<(), StoreError> {
    let locked = query(
        transaction,
        "SELECT 1 FROM organizations WHERE id = $1 FOR UPDATE",
        &[&id],
    )
    .await?;
    if locked.is_empty() {
        return Err(organization_not_found(id));
    }
    check_deletable(id, contents(transaction, id).await?)?;
    execute(
        transaction,
        "DELETE FROM organizations WHERE id = $1",
        &[&id],
    )
    .await?;
    insert_audit(transaction, audit).await
}

pub(super) async fn create_token(
    transaction: &Transaction<'_>,
    token: &NewUserToken,
    audit: &NewAuditEntry,
) -> Result<UserTokenRecord, StoreError> {
    let record = &token.record;
    let sql = format!(
        "INSERT INTO user_tokens \
         (id, name, role, organization_id, token_hash, created_at, expires_at, last_used_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {USER_TOKEN_COLUMNS}"
    );
    let rows = query(
        transaction,
        &sql,
        &[
            &record.id.as_bytes().as_slice(),
            &record.name,
            &record.role.as_str(),
            &record.organization_id,
            &token.token_hash.as_slice(),
            &record.created_at.as_millis(),
            &record.expires_at.map(|at| at.as_millis()),
            &record.last_used_at.map(|at| at.as_millis()),
        ],
    )
    .await?;
    let (_, stored) = rows
        .first()
        .map(user_token_from_row)
        .transpose()?
        .ok_or_else(|| StoreError::Internal("a stored user token came back empty".into()))?;
    insert_audit(transaction, audit).await?;
    Ok(stored)
}

pub(super) async fn list_tokens(
    client: &impl GenericClient,
    organization: Option<&str>,
    page: &PageRequest,
) -> Result<Page<UserTokenRecord>, StoreError> {
    let after = paging::page_after_bound(page)?;
    let limit = paging::rows_to_read(page);
    let rows = match organization {
        Some(organization) => {
            let sql = format!(
                "SELECT {USER_TOKEN_COLUMNS} FROM user_tokens \
                 WHERE organization_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
            );
            query(client, &sql, &[&organization, &after, &limit]).await?
        }
        None => {
            let sql = format!(
                "SELECT {USER_TOKEN_COLUMNS} FROM user_tokens WHERE seq > $1 ORDER BY seq LIMIT $2"
            );
            query(client, &sql, &[&after, &limit]).await?
        }
    };
    paging::page_from_rows(&rows, page, user_token_from_row)
}

async fn token_where(
    client: &impl GenericClient,
    condition: &str,
    value: &[u8],
) -> Result<Option<UserTokenRecord>, StoreError> {
    let sql = format!("SELECT {USER_TOKEN_COLUMNS} FROM user_tokens WHERE {condition} = $1");
    let rows = query(client, &sql, &[&value]).await?;
    Ok(rows
        .first()
        .map(user_token_from_row)
        .transpose()?
        .map(|(_, record)| record))
}

pub(super) async fn get_token(
    client: &impl GenericClient,
    id: UserTokenId,
) -> Result<Option<UserTokenRecord>, StoreError> {
    token_where(client, "id", id.as_bytes()).await
}

pub(super) async fn token_by_hash(
    client: &impl GenericClient,
    token_hash: &[u8; 32],
) -> Result<Option<UserTokenRecord>, StoreError> {
    token_where(client, "token_hash", token_hash).await
}

pub(super) async fn revoke_token(
    transaction: &Transaction<'_>,
    id: UserTokenId,
    audit: &NewAuditEntry,
) -> Result<UserTokenRecord, StoreError> {
    let sql = format!("DELETE FROM user_tokens WHERE id = $1 RETURNING {USER_TOKEN_COLUMNS}");
    let rows = query(transaction, &sql, &[&id.as_bytes().as_slice()]).await?;
    let Some((_, removed)) = rows.first().map(user_token_from_row).transpose()? else {
        return Err(user_token_not_found(id));
    };
    execute(
        transaction,
        "DELETE FROM sessions WHERE user_token_id = $1",
        &[&id.as_bytes().as_slice()],
    )
    .await?;
    insert_audit(transaction, audit).await?;
    Ok(removed)
}

pub(super) async fn touch_token(
    client: &impl GenericClient,
    id: UserTokenId,
    at: Timestamp,
) -> Result<(), StoreError> {
    execute(
        client,
        "UPDATE user_tokens SET last_used_at = $2 \
         WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
        &[&id.as_bytes().as_slice(), &at.as_millis()],
    )
    .await?;
    Ok(())
}

pub(super) async fn create_session(
    transaction: &Transaction<'_>,
    session: &SessionRecord,
    audit: &NewAuditEntry,
) -> Result<(), StoreError> {
    execute(
        transaction,
        "DELETE FROM sessions WHERE secret_hash IN \
         (SELECT secret_hash FROM sessions WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2)",
        &[
            &session.created_at.as_millis(),
            &EXPIRED_SESSIONS_DELETED_PER_SIGN_IN,
        ],
    )
    .await?;
    let (user_token_id, admin_token_hash) = session.holder_columns();
    execute(
        transaction,
        &format!("INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"),
        &[
            &session.secret_hash.as_slice(),
            &user_token_id,
            &admin_token_hash,
            &session.created_at.as_millis(),
            &session.expires_at.as_millis(),
        ],
    )
    .await?;
    insert_audit(transaction, audit).await
}

pub(super) async fn session_by_hash(
    client: &impl GenericClient,
    secret_hash: &[u8; 32],
) -> Result<Option<SessionRecord>, StoreError> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE secret_hash = $1");
    let rows = query(client, &sql, &[&secret_hash.as_slice()]).await?;
    rows.first().map(columns::session_from_row).transpose()
}

pub(super) async fn delete_session(
    transaction: &Transaction<'_>,
    secret_hash: &[u8; 32],
    audit: &NewAuditEntry,
) -> Result<(), StoreError> {
    let deleted = execute(
        transaction,
        "DELETE FROM sessions WHERE secret_hash = $1",
        &[&secret_hash.as_slice()],
    )
    .await?;
    if deleted == 0 {
        return Err(session_not_found());
    }
    insert_audit(transaction, audit).await
}
