//! Organizations and user tokens on the SQLite backend (schema migration 8). A change and its
//! audit entry are written by one operation of the writer thread, so they commit together, and
//! the writer being the only one means nothing lands in an organization between the check that
//! it is empty and its deletion.

use muster_core::{Timestamp, UserTokenId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::identity::insert_audit;
use super::map_sqlite_error;
use super::writer::WriterContext;
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

fn organization_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, OrganizationRecord)> {
    columns::organization_from_row(row)
}

fn user_token_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, UserTokenRecord)> {
    columns::user_token_from_row(row)
}

pub(super) fn create(
    context: &mut WriterContext,
    organization: &OrganizationRecord,
    audit: &NewAuditEntry,
) -> Result<OrganizationRecord, StoreError> {
    let conn = &context.conn;
    let sql = format!(
        "INSERT INTO organizations (id, name, allow_shared_runners, created_at) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING RETURNING {ORGANIZATION_COLUMNS}"
    );
    let stored = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_row(
                    params![
                        organization.id,
                        organization.name,
                        organization.allow_shared_runners,
                        organization.created_at.as_millis(),
                    ],
                    organization_from_row,
                )
                .optional()
        })
        .map_err(map_sqlite_error)?;
    let Some((_, stored)) = stored else {
        return Err(organization_taken(organization));
    };
    insert_audit(conn, audit)?;
    Ok(stored)
}

pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<OrganizationRecord>, StoreError> {
    let sql = format!("SELECT {ORGANIZATION_COLUMNS} FROM organizations WHERE id = ?1");
    let row = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_row(params![id], organization_from_row)
                .optional()
        })
        .map_err(map_sqlite_error)?;
    Ok(row.map(|(_, record)| record))
}

pub(super) fn list(
    conn: &Connection,
    page: &PageRequest,
) -> Result<Page<OrganizationRecord>, StoreError> {
    let sql = format!(
        "SELECT {ORGANIZATION_COLUMNS} FROM organizations WHERE seq > ?1 ORDER BY seq LIMIT ?2"
    );
    let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
    let rows = statement
        .query_map(
            params![paging::page_after_bound(page)?, paging::rows_to_read(page)],
            organization_from_row,
        )
        .map_err(map_sqlite_error)?;
    paging::page_from_rows(rows, page, |row| row.map_err(map_sqlite_error))
}

fn contents(conn: &Connection, id: &str) -> Result<OrganizationContents, StoreError> {
    let sql = format!(
        "SELECT \
         (SELECT count(*) FROM jobs WHERE organization_id = ?1 \
             AND state NOT IN ({TERMINAL_STATE_CODES})), \
         (SELECT count(*) FROM runners WHERE organization_id = ?1 AND deleted_at IS NULL), \
         (SELECT count(*) FROM user_tokens WHERE organization_id = ?1), \
         (SELECT count(*) FROM workloads WHERE organization_id = ?1 AND status NOT IN ({}, {}))",
        crate::rules::workloads::status_code(muster_core::WorkloadStatus::Stopped),
        crate::rules::workloads::status_code(muster_core::WorkloadStatus::Failed)
    );
    conn.prepare_cached(&sql)
        .and_then(|mut statement| {
            statement.query_row(params![id], |row| {
                Ok(OrganizationContents {
                    unfinished_jobs: count(row.get(0)?),
                    runners: count(row.get(1)?),
                    user_tokens: count(row.get(2)?),
                    unfinished_workloads: count(row.get(3)?),
                })
            })
        })
        .map_err(map_sqlite_error)
}

pub(super) fn delete(
    context: &mut WriterContext,
    id: &str,
    audit: &NewAuditEntry,
) -> Result<(), StoreError> {
    let conn = &context.conn;
    if get(conn, id)?.is_none() {
        return Err(organization_not_found(id));
    }
    check_deletable(id, contents(conn, id)?)?;
    conn.prepare_cached("DELETE FROM organizations WHERE id = ?1")
        .and_then(|mut statement| statement.execute(params![id]))
        .map_err(map_sqlite_error)?;
    insert_audit(conn, audit)
}

pub(super) fn create_token(
    context: &mut WriterContext,
    token: &NewUserToken,
    audit: &NewAuditEntry,
) -> Result<UserTokenRecord, StoreError> {
    let conn = &context.conn;
    let record = &token.record;
    let sql = format!(
        "INSERT INTO user_tokens \
         (id, name, role, organization_id, token_hash, created_at, expires_at, last_used_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING {USER_TOKEN_COLUMNS}"
    );
    let (_, stored) = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement.query_row(
                params![
                    record.id.as_bytes().as_slice(),
                    record.name,
                    record.role.as_str(),
                    record.organization_id,
                    token.token_hash.as_slice(),
                    record.created_at.as_millis(),
                    record.expires_at.map(|at| at.as_millis()),
                    record.last_used_at.map(|at| at.as_millis()),
                ],
                user_token_from_row,
            )
        })
        .map_err(map_sqlite_error)?;
    insert_audit(conn, audit)?;
    Ok(stored)
}

pub(super) fn list_tokens(
    conn: &Connection,
    organization: Option<&str>,
    page: &PageRequest,
) -> Result<Page<UserTokenRecord>, StoreError> {
    let after = paging::page_after_bound(page)?;
    let limit = paging::rows_to_read(page);
    // One statement per filter, so a list of one organization's tokens reads its index.
    let rows: Vec<rusqlite::Result<(i64, UserTokenRecord)>> = match organization {
        Some(organization) => {
            let sql = format!(
                "SELECT {USER_TOKEN_COLUMNS} FROM user_tokens \
                 WHERE organization_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
            );
            let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
            statement
                .query_map(params![organization, after, limit], user_token_from_row)
                .map_err(map_sqlite_error)?
                .collect()
        }
        None => {
            let sql = format!(
                "SELECT {USER_TOKEN_COLUMNS} FROM user_tokens WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            );
            let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
            statement
                .query_map(params![after, limit], user_token_from_row)
                .map_err(map_sqlite_error)?
                .collect()
        }
    };
    paging::page_from_rows(rows, page, |row| row.map_err(map_sqlite_error))
}

fn token_where(
    conn: &Connection,
    condition: &str,
    value: &[u8],
) -> Result<Option<UserTokenRecord>, StoreError> {
    let sql = format!("SELECT {USER_TOKEN_COLUMNS} FROM user_tokens WHERE {condition} = ?1");
    let row = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_row(params![value], user_token_from_row)
                .optional()
        })
        .map_err(map_sqlite_error)?;
    Ok(row.map(|(_, record)| record))
}

pub(super) fn get_token(
    conn: &Connection,
    id: UserTokenId,
) -> Result<Option<UserTokenRecord>, StoreError> {
    token_where(conn, "id", id.as_bytes())
}

pub(super) fn token_by_hash(
    conn: &Connection,
    token_hash: &[u8; 32],
) -> Result<Option<UserTokenRecord>, StoreError> {
    token_where(conn, "token_hash", token_hash)
}

pub(super) fn revoke_token(
    context: &mut WriterContext,
    id: UserTokenId,
    audit: &NewAuditEntry,
) -> Result<UserTokenRecord, StoreError> {
    let conn = &context.conn;
    let sql = format!("DELETE FROM user_tokens WHERE id = ?1 RETURNING {USER_TOKEN_COLUMNS}");
    let removed = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_row(params![id.as_bytes().as_slice()], user_token_from_row)
                .optional()
        })
        .map_err(map_sqlite_error)?;
    let Some((_, removed)) = removed else {
        return Err(user_token_not_found(id));
    };
    conn.prepare_cached("DELETE FROM sessions WHERE user_token_id = ?1")
        .and_then(|mut statement| statement.execute(params![id.as_bytes().as_slice()]))
        .map_err(map_sqlite_error)?;
    insert_audit(conn, audit)?;
    Ok(removed)
}

pub(super) fn touch_token(
    context: &mut WriterContext,
    id: UserTokenId,
    at: Timestamp,
) -> Result<(), StoreError> {
    context
        .conn
        .prepare_cached(
            "UPDATE user_tokens SET last_used_at = ?2 \
             WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
        )
        .and_then(|mut statement| {
            statement.execute(params![id.as_bytes().as_slice(), at.as_millis()])
        })
        .map_err(map_sqlite_error)?;
    Ok(())
}

pub(super) fn create_session(
    context: &mut WriterContext,
    session: &SessionRecord,
    audit: &NewAuditEntry,
) -> Result<(), StoreError> {
    let conn = &context.conn;
    conn.prepare_cached(
        "DELETE FROM sessions WHERE secret_hash IN \
         (SELECT secret_hash FROM sessions WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            session.created_at.as_millis(),
            EXPIRED_SESSIONS_DELETED_PER_SIGN_IN
        ])
    })
    .map_err(map_sqlite_error)?;
    let (user_token_id, admin_token_hash) = session.holder_columns();
    conn.prepare_cached(&format!(
        "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"
    ))
    .and_then(|mut statement| {
        statement.execute(params![
            session.secret_hash.as_slice(),
            user_token_id,
            admin_token_hash,
            session.created_at.as_millis(),
            session.expires_at.as_millis(),
        ])
    })
    .map_err(map_sqlite_error)?;
    insert_audit(conn, audit)
}

pub(super) fn session_by_hash(
    conn: &Connection,
    secret_hash: &[u8; 32],
) -> Result<Option<SessionRecord>, StoreError> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE secret_hash = ?1");
    conn.prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_row(params![secret_hash.as_slice()], |row| {
                    columns::session_from_row(row)
                })
                .optional()
        })
        .map_err(map_sqlite_error)
}

pub(super) fn delete_session(
    context: &mut WriterContext,
    secret_hash: &[u8; 32],
    audit: &NewAuditEntry,
) -> Result<(), StoreError> {
    let conn = &context.conn;
    let deleted = conn
        .prepare_cached("DELETE FROM sessions WHERE secret_hash = ?1")
        .and_then(|mut statement| statement.execute(params![secret_hash.as_slice()]))
        .map_err(map_sqlite_error)?;
    if deleted == 0 {
        return Err(session_not_found());
    }
    insert_audit(conn, audit)
}
