//! Runners that register themselves with a key, on the PostgreSQL backend: the registration
//! upsert with its token rotation, an operator's approve or reject, and the revocation a key's
//! removal causes, each in one transaction with its audit entries.
//!
//! Coordinators sharing the database race only on rows: a registration locks the key's runner
//! (`FOR UPDATE`) and its allowlist entry (`FOR SHARE`), so a removal of the key waits for it and
//! then revokes what it wrote, and a removal that committed first is seen. Two first
//! registrations of one key meet at the unique index on live runners' fingerprints: the second
//! inserts nothing and is decided again.

use deadpool_postgres::{GenericClient, Transaction};
use muster_core::{
    Enrollment, EnrollmentOperation, JobId, RunnerId, Timestamp, enrollment_transition,
};

use super::identity::{self, insert_audit};
use super::rows::column;
use super::runners::{self, release_held_jobs};
use super::{execute, query};
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

pub(super) async fn by_token_hash(
    client: &impl GenericClient,
    token_hash: &[u8; 32],
) -> Result<Option<RunnerCredentials>, StoreError> {
    let rows = query(
        client,
        "SELECT id, enrollment, \
           CASE WHEN token_hash = $1 THEN token_expires_at ELSE previous_token_expires_at END \
         FROM runners WHERE (token_hash = $1 OR previous_token_hash = $1) AND deleted_at IS NULL",
        &[&token_hash.as_slice()],
    )
    .await?;
    match rows.first() {
        Some(row) => {
            let id: &[u8] = column(row, 0)?;
            let enrollment: &str = column(row, 1)?;
            runner_credentials(id, enrollment, column(row, 2)?).map(Some)
        }
        None => Ok(None),
    }
}

fn runner_id_of(bytes: &[u8]) -> Result<RunnerId, StoreError> {
    RunnerId::from_slice(bytes).ok_or_else(|| StoreError::Internal("bad runner id".into()))
}

pub(super) async fn register(
    transaction: &Transaction<'_>,
    registration: &KeyRegistration,
    audit: &NewAuditEntry,
) -> Result<RegistrationOutcome, StoreError> {
    let existing = query(
        transaction,
        "SELECT id, enrollment, registered_at, token_hash IS NOT NULL, token_expires_at \
         FROM runners WHERE key_fingerprint = $1 AND deleted_at IS NULL FOR UPDATE",
        &[&registration.key_fingerprint],
    )
    .await?;
    let existing = match existing.first() {
        Some(row) => {
            let id: &[u8] = column(row, 0)?;
            let enrollment: &str = column(row, 1)?;
            let registered_at: Option<i64> = column(row, 2)?;
            Some((
                runner_id_of(id)?,
                StoredRegistration {
                    enrollment: stored_enrollment(enrollment)?,
                    registered_at: registered_at.map(Timestamp),
                },
                column::<bool>(row, 3)?,
                column::<Option<i64>>(row, 4)?.map(Timestamp),
            ))
        }
        None => None,
    };
    let key_allowed_now = !query(
        transaction,
        "SELECT 1 FROM runner_keys WHERE fingerprint = $1 FOR SHARE",
        &[&registration.key_fingerprint],
    )
    .await?
    .is_empty();
    let stored = existing.map(|(_, stored, ..)| stored);
    if let Some(refusal) = registration_refusal(registration, stored, key_allowed_now) {
        return Ok(refusal);
    }
    let labels = string_map_to_json(&registration.capabilities.labels).to_string();
    let kinds = serde_json::Value::from(registration.kinds.clone()).to_string();
    let bound = capabilities_to_json(&registration.capabilities).to_string();
    let (id, created) = match existing {
        Some((id, _, had_token, expires_at)) => {
            let previous_until =
                previous_token_expiry(had_token, expires_at, registration.previous_token_until);
            execute(
                transaction,
                "UPDATE runners SET name = $2, hostname = $3, organization_id = $4, labels = $5, \
                   kinds = $6, bound_capabilities = $7, bound_kinds = $6, enrollment = $8, \
                   public_key = $9, previous_token_hash = token_hash, \
                   previous_token_expires_at = $10, token_hash = $11, token_expires_at = $12, \
                   registered_at = $13, last_seen_at = $14 \
                 WHERE id = $1",
                &[
                    &id.as_bytes().as_slice(),
                    &registration.name,
                    &registration.hostname,
                    &registration.organization_id,
                    &labels,
                    &kinds,
                    &bound,
                    &registration.enrollment.as_str(),
                    &registration.public_key,
                    &previous_until.map(|at| at.as_millis()),
                    &registration.token_hash.as_slice(),
                    &registration.token_expires_at.as_millis(),
                    &registration.signed_at.as_millis(),
                    &registration.now.as_millis(),
                ],
            )
            .await?;
            (id, false)
        }
        None => {
            let id = registration.new_runner_id;
            let inserted = execute(
                transaction,
                "INSERT INTO runners (id, name, hostname, organization_id, labels, kinds, \
                   bound_capabilities, bound_kinds, enrollment, key_fingerprint, public_key, \
                   token_hash, token_expires_at, registered_at, created_at, last_seen_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $6, $8, $9, $10, $11, $12, $13, $14, $14) \
                 ON CONFLICT (key_fingerprint) \
                   WHERE key_fingerprint IS NOT NULL AND deleted_at IS NULL DO NOTHING",
                &[
                    &id.as_bytes().as_slice(),
                    &registration.name,
                    &registration.hostname,
                    &registration.organization_id,
                    &labels,
                    &kinds,
                    &bound,
                    &registration.enrollment.as_str(),
                    &registration.key_fingerprint,
                    &registration.public_key,
                    &registration.token_hash.as_slice(),
                    &registration.token_expires_at.as_millis(),
                    &registration.signed_at.as_millis(),
                    &registration.now.as_millis(),
                ],
            )
            .await?;
            if inserted == 0 {
                // Another coordinator's first registration of the key committed meanwhile.
                return Ok(RegistrationOutcome::Changed);
            }
            (id, true)
        }
    };
    insert_audit(transaction, audit).await?;
    let runner = runners::get(transaction, id).await?;
    Ok(RegistrationOutcome::Registered {
        runner: Box::new(runner),
        created,
    })
}

/// An operator's decision; answers it and whether any job went back to the queue.
pub(super) async fn change_enrollment(
    transaction: &Transaction<'_>,
    change: &EnrollmentChange,
    audit: &NewAuditEntry,
    key_audit: &NewAuditEntry,
) -> Result<(EnrollmentChangeOutcome, bool), StoreError> {
    let rows = query(
        transaction,
        "SELECT enrollment FROM runners WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        &[&change.runner.as_bytes().as_slice()],
    )
    .await?;
    let Some(row) = rows.first() else {
        return Err(runner_not_found(change.runner));
    };
    let current = stored_enrollment(column(row, 0)?)?;
    if current != change.expected {
        return Ok((EnrollmentChangeOutcome::Raced { current }, false));
    }
    set_enrollment(
        transaction,
        change.runner,
        change.enrollment,
        change.revoke_tokens,
    )
    .await?;
    let (released, requeued) = if change.revoke_tokens {
        release_held_jobs(
            transaction,
            change.runner,
            ReleaseCause::Revoked,
            change.now,
        )
        .await?
    } else {
        (Vec::new(), false)
    };
    let key_added = match &change.add_key {
        Some(key) => identity::add(transaction, key, key_audit).await?.1,
        None => false,
    };
    insert_audit(transaction, audit).await?;
    let runner = Box::new(runners::get(transaction, change.runner).await?);
    Ok((
        EnrollmentChangeOutcome::Changed {
            runner,
            released,
            key_added,
        },
        requeued,
    ))
}

async fn set_enrollment(
    transaction: &Transaction<'_>,
    runner: RunnerId,
    enrollment: Enrollment,
    revoke_tokens: bool,
) -> Result<(), StoreError> {
    let sql = if revoke_tokens {
        format!("UPDATE runners SET enrollment = $2, {CLEAR_TOKENS} WHERE id = $1")
    } else {
        "UPDATE runners SET enrollment = $2 WHERE id = $1".to_string()
    };
    execute(
        transaction,
        &sql,
        &[&runner.as_bytes().as_slice(), &enrollment.as_str()],
    )
    .await
    .map(|_| ())
}

/// Revoke the live runner registered with the key of `fingerprint`, which `removal` took off
/// the allowlist: its tokens and leases go, its enrollment follows the key's removal, and the
/// revocation is recorded. Answers the runner, the jobs released and whether any went back to
/// the queue.
pub(super) async fn revoke_key_runner(
    transaction: &Transaction<'_>,
    fingerprint: &str,
    removal: &NewAuditEntry,
) -> Result<(Option<RunnerId>, Vec<JobId>, bool), StoreError> {
    let rows = query(
        transaction,
        "SELECT id, enrollment FROM runners \
         WHERE key_fingerprint = $1 AND deleted_at IS NULL FOR UPDATE",
        &[&fingerprint],
    )
    .await?;
    let Some(row) = rows.first() else {
        return Ok((None, Vec::new(), false));
    };
    let runner = runner_id_of(column(row, 0)?)?;
    let outcome = enrollment_transition(
        Some(stored_enrollment(column(row, 1)?)?),
        EnrollmentOperation::KeyRemoved,
    )
    .map_err(|refusal| StoreError::Internal(format!("a key's removal refused: {refusal}")))?;
    set_enrollment(
        transaction,
        runner,
        outcome.enrollment,
        outcome.revoke_tokens,
    )
    .await?;
    let (released, requeued) =
        release_held_jobs(transaction, runner, ReleaseCause::Revoked, removal.at).await?;
    insert_audit(transaction, &revocation_entry(removal, runner)).await?;
    Ok((Some(runner), released, requeued))
}
