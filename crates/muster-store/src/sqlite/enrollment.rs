//! Runners that register themselves with a key, on the SQLite backend (schema migration 7): the
//! registration upsert with its token rotation, an operator's approve or reject, and the
//! revocation a key's removal causes. Each runs as one operation of the writer thread, so its
//! writes and its audit entries commit together.

use muster_core::{Enrollment, EnrollmentOperation, JobId, RunnerId, enrollment_transition};
use rusqlite::{Connection, OptionalExtension, params};

use super::identity::{self, insert_audit};
use super::map_sqlite_error;
use super::runners::{self, release_held_jobs};
use super::writer::WriterContext;
use crate::encoding::{capabilities_to_json, string_map_to_json};
use crate::rules::enrollment::{
    CLEAR_TOKENS, StoredRegistration, previous_token_expiry, registration_refusal,
    revocation_entry, runner_credentials, stored_enrollment,
};
use crate::rules::runners::{ReleaseCause, runner_not_found};
use crate::{
    EnrollmentChange, EnrollmentChangeOutcome, KeyRegistration, NewAuditEntry, RegistrationOutcome,
    RunnerCredentials, StoreError,
};

pub(super) fn by_token_hash(
    conn: &Connection,
    token_hash: &[u8; 32],
) -> Result<Option<RunnerCredentials>, StoreError> {
    let row: Option<(Vec<u8>, String, Option<i64>)> = conn
        .prepare_cached(
            "SELECT id, enrollment, \
               CASE WHEN token_hash = ?1 THEN token_expires_at ELSE previous_token_expires_at END \
             FROM runners WHERE (token_hash = ?1 OR previous_token_hash = ?1) AND deleted_at IS NULL",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![token_hash.as_slice()], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()
        })
        .map_err(map_sqlite_error)?;
    row.map(|(id, enrollment, expires_at)| runner_credentials(&id, &enrollment, expires_at))
        .transpose()
}

/// The key's live runner as a registration finds it: its id, enrollment, last registration,
/// whether it has a token, and that token's expiry.
type KeyRunnerRow = (Vec<u8>, String, Option<i64>, bool, Option<i64>);

pub(super) fn register(
    context: &mut WriterContext,
    registration: &KeyRegistration,
    audit: &NewAuditEntry,
) -> Result<RegistrationOutcome, StoreError> {
    let conn = &context.conn;
    let existing: Option<KeyRunnerRow> = conn
        .prepare_cached(
            "SELECT id, enrollment, registered_at, token_hash IS NOT NULL, token_expires_at \
             FROM runners WHERE key_fingerprint = ?1 AND deleted_at IS NULL",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![registration.key_fingerprint], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                })
                .optional()
        })
        .map_err(map_sqlite_error)?;
    let stored = existing
        .as_ref()
        .map(|(_, enrollment, registered_at, ..)| {
            Ok::<_, StoreError>(StoredRegistration {
                enrollment: stored_enrollment(enrollment)?,
                registered_at: registered_at.map(muster_core::Timestamp),
            })
        })
        .transpose()?;
    let key_allowed_now = identity::get(conn, &registration.key_fingerprint)?.is_some();
    if let Some(refusal) = registration_refusal(registration, stored, key_allowed_now) {
        return Ok(refusal);
    }
    let labels = string_map_to_json(&registration.capabilities.labels).to_string();
    let kinds = serde_json::Value::from(registration.kinds.clone()).to_string();
    let bound = capabilities_to_json(&registration.capabilities).to_string();
    let (id, created) = match existing {
        Some((id_bytes, _, _, had_token, expires_at)) => {
            let id = RunnerId::from_slice(&id_bytes)
                .ok_or_else(|| StoreError::Internal("bad runner id".into()))?;
            let previous_until = previous_token_expiry(
                had_token,
                expires_at.map(muster_core::Timestamp),
                registration.previous_token_until,
            );
            conn.prepare_cached(
                "UPDATE runners SET name = ?2, hostname = ?3, organization_id = ?4, labels = ?5, \
                   kinds = ?6, bound_capabilities = ?7, bound_kinds = ?6, enrollment = ?8, \
                   public_key = ?9, previous_token_hash = token_hash, \
                   previous_token_expires_at = ?10, token_hash = ?11, token_expires_at = ?12, \
                   registered_at = ?13, last_seen_at = ?14 \
                 WHERE id = ?1",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    id.as_bytes().as_slice(),
                    registration.name,
                    registration.hostname,
                    registration.organization_id,
                    labels,
                    kinds,
                    bound,
                    registration.enrollment.as_str(),
                    registration.public_key,
                    previous_until.map(|at| at.as_millis()),
                    registration.token_hash.as_slice(),
                    registration.token_expires_at.as_millis(),
                    registration.signed_at.as_millis(),
                    registration.now.as_millis(),
                ])
            })
            .map_err(map_sqlite_error)?;
            (id, false)
        }
        None => {
            let id = registration.new_runner_id;
            conn.prepare_cached(
                "INSERT INTO runners (id, name, hostname, organization_id, labels, kinds, \
                   bound_capabilities, bound_kinds, enrollment, key_fingerprint, public_key, \
                   token_hash, token_expires_at, registered_at, created_at, last_seen_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?6, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    id.as_bytes().as_slice(),
                    registration.name,
                    registration.hostname,
                    registration.organization_id,
                    labels,
                    kinds,
                    bound,
                    registration.enrollment.as_str(),
                    registration.key_fingerprint,
                    registration.public_key,
                    registration.token_hash.as_slice(),
                    registration.token_expires_at.as_millis(),
                    registration.signed_at.as_millis(),
                    registration.now.as_millis(),
                ])
            })
            .map_err(map_sqlite_error)?;
            (id, true)
        }
    };
    insert_audit(conn, audit)?;
    let runner = runners::get(conn, id)?;
    Ok(RegistrationOutcome::Registered {
        runner: Box::new(runner),
        created,
    })
}

pub(super) fn change_enrollment(
    context: &mut WriterContext,
    change: &EnrollmentChange,
    audit: &NewAuditEntry,
    key_audit: &NewAuditEntry,
) -> Result<EnrollmentChangeOutcome, StoreError> {
    let current: Option<String> = context
        .conn
        .prepare_cached("SELECT enrollment FROM runners WHERE id = ?1 AND deleted_at IS NULL")
        .and_then(|mut statement| {
            statement
                .query_row(params![change.runner.as_bytes().as_slice()], |row| {
                    row.get(0)
                })
                .optional()
        })
        .map_err(map_sqlite_error)?;
    let current = stored_enrollment(&current.ok_or_else(|| runner_not_found(change.runner))?)?;
    if current != change.expected {
        return Ok(EnrollmentChangeOutcome::Raced { current });
    }
    set_enrollment(
        &context.conn,
        change.runner,
        change.enrollment,
        change.revoke_tokens,
    )?;
    let released = if change.revoke_tokens {
        release_held_jobs(context, change.runner, ReleaseCause::Revoked, change.now)?
    } else {
        Vec::new()
    };
    let key_added = match &change.add_key {
        Some(key) => identity::add(context, key, key_audit)?.1,
        None => false,
    };
    insert_audit(&context.conn, audit)?;
    let runner = Box::new(runners::get(&context.conn, change.runner)?);
    Ok(EnrollmentChangeOutcome::Changed {
        runner,
        released,
        key_added,
    })
}

fn set_enrollment(
    conn: &Connection,
    runner: RunnerId,
    enrollment: Enrollment,
    revoke_tokens: bool,
) -> Result<(), StoreError> {
    let sql = if revoke_tokens {
        format!("UPDATE runners SET enrollment = ?2, {CLEAR_TOKENS} WHERE id = ?1")
    } else {
        "UPDATE runners SET enrollment = ?2 WHERE id = ?1".to_string()
    };
    conn.prepare_cached(&sql)
        .and_then(|mut statement| {
            statement.execute(params![runner.as_bytes().as_slice(), enrollment.as_str()])
        })
        .map_err(map_sqlite_error)?;
    Ok(())
}

/// Revoke the live runner registered with the key of `fingerprint`, which `removal` took off
/// the allowlist: its tokens and leases go, its enrollment follows the key's removal, and the
/// revocation is recorded. Answers the runner and the jobs released.
pub(super) fn revoke_key_runner(
    context: &mut WriterContext,
    fingerprint: &str,
    removal: &NewAuditEntry,
) -> Result<(Option<RunnerId>, Vec<JobId>), StoreError> {
    let found: Option<(Vec<u8>, String)> = context
        .conn
        .prepare_cached(
            "SELECT id, enrollment FROM runners WHERE key_fingerprint = ?1 AND deleted_at IS NULL",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![fingerprint], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(map_sqlite_error)?;
    let Some((id_bytes, enrollment)) = found else {
        return Ok((None, Vec::new()));
    };
    let runner = RunnerId::from_slice(&id_bytes)
        .ok_or_else(|| StoreError::Internal("bad runner id".into()))?;
    let outcome = enrollment_transition(
        Some(stored_enrollment(&enrollment)?),
        EnrollmentOperation::KeyRemoved,
    )
    .map_err(|refusal| StoreError::Internal(format!("a key's removal refused: {refusal}")))?;
    set_enrollment(
        &context.conn,
        runner,
        outcome.enrollment,
        outcome.revoke_tokens,
    )?;
    let released = release_held_jobs(context, runner, ReleaseCause::Revoked, removal.at)?;
    insert_audit(&context.conn, &revocation_entry(removal, runner))?;
    Ok((Some(runner), released))
}
