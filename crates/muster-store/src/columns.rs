//! The columns of job and runner rows, which both backends' schemas share, and the one mapping
//! from them to jobs and runners. A backend selects [`JOB_COLUMNS`] (or [`LIFECYCLE_COLUMNS`]
//! when only the state changes: hot paths that do not decode payloads) and reads the row through
//! [`StoredRow`], which its driver's row type implements.

use std::collections::BTreeMap;

use muster_core::{
    AttemptOutcome, AttemptRecord, Capabilities, FailureReason, JobError, JobId, JobLifecycle,
    JobOrganization, JobPolicy, JobRecord, JobState, LifecycleParts, Progress, RunnerId,
    RunnerRecord, Timestamp,
};
use serde_json::Value;

use crate::StoreError;
use crate::encoding::{
    capabilities_from_json, inputs_from_json, outputs_from_json, result_signature_from_json,
};
use crate::rules::identity::{AuditColumns, RunnerKeyColumns, audit_entry, runner_key_record};
use crate::rules::organizations::{
    OrganizationColumns, SessionColumns, UserTokenColumns, organization_record, session_record,
    user_token_record,
};
use crate::rules::runners::{RunnerColumns, runner_record};
use crate::{
    AuditEntry, KindSettingsRecord, OrganizationRecord, RunnerKeyRecord, SessionRecord,
    UserTokenRecord,
};

macro_rules! lifecycle_columns {
    () => {
        "seq, state, max_attempts, timeout_s, lease_ttl_s, backoff_base_s, attempt, lease_epoch, \
         runner_id, run_after, lease_expires_at, attempt_deadline_at, cancel_deadline_at, \
         claimed_at, started_at, finished_at, error_reason, error_message"
    };
}

/// The columns [`lifecycle_from_row`] reads: what a state change needs and nothing else.
pub(crate) const LIFECYCLE_COLUMNS: &str = lifecycle_columns!();

/// [`LIFECYCLE_COLUMNS`], then the job's id (at [`ID_COLUMN`]).
pub(crate) const LIFECYCLE_AND_ID_COLUMNS: &str = concat!(lifecycle_columns!(), ", id");

/// The columns [`job_from_row`] reads: the lifecycle columns first, then the rest of the job.
pub(crate) const JOB_COLUMNS: &str = concat!(
    lifecycle_columns!(),
    ", id, kind, priority, payload, requirements, idempotency_key, created_at, \
     progress_percent, progress_message, result, inputs, outputs, result_signature, \
     organization_id, shared_runners"
);

/// Where the job's id stands in [`JOB_COLUMNS`] and [`LIFECYCLE_AND_ID_COLUMNS`].
pub(crate) const ID_COLUMN: usize = 18;

/// A row as a backend's driver gives it, read by column index. Errors are the driver's own, so
/// a backend maps them as it maps every other error of its driver.
pub(crate) trait StoredRow {
    type Error;

    /// The error for a column that does not hold what the mapping expects (corrupt data).
    fn corrupt(index: usize, problem: String) -> Self::Error;

    fn integer(&self, index: usize) -> Result<i64, Self::Error>;

    fn optional_integer(&self, index: usize) -> Result<Option<i64>, Self::Error>;

    /// The `state` column (a `smallint` where the database has one).
    fn state_code(&self, index: usize) -> Result<i64, Self::Error>;

    /// The `priority` column (a 32-bit integer).
    fn priority(&self, index: usize) -> Result<i32, Self::Error>;

    fn real(&self, index: usize) -> Result<f64, Self::Error>;

    fn boolean(&self, index: usize) -> Result<bool, Self::Error>;

    fn optional_text(&self, index: usize) -> Result<Option<&str>, Self::Error>;

    fn optional_bytes(&self, index: usize) -> Result<Option<&[u8]>, Self::Error>;
}

fn text<R: StoredRow>(row: &R, index: usize) -> Result<String, R::Error> {
    row.optional_text(index)?
        .map(str::to_string)
        .ok_or_else(|| R::corrupt(index, "NULL where text belongs".into()))
}

fn owned_text<R: StoredRow>(row: &R, index: usize) -> Result<Option<String>, R::Error> {
    Ok(row.optional_text(index)?.map(str::to_string))
}

fn timestamp<R: StoredRow>(row: &R, index: usize) -> Result<Option<Timestamp>, R::Error> {
    Ok(row.optional_integer(index)?.map(Timestamp))
}

fn u32_column<R: StoredRow>(row: &R, index: usize) -> Result<u32, R::Error> {
    let value = row.integer(index)?;
    u32::try_from(value).map_err(|_| R::corrupt(index, format!("{value} is out of range")))
}

fn json<R: StoredRow>(row: &R, index: usize) -> Result<Option<Value>, R::Error> {
    row.optional_text(index)?
        .map(|text| {
            serde_json::from_str(text).map_err(|error| R::corrupt(index, error.to_string()))
        })
        .transpose()
}

/// A runner id column (`None` when NULL).
pub(crate) fn runner_id<R: StoredRow>(row: &R, index: usize) -> Result<Option<RunnerId>, R::Error> {
    row.optional_bytes(index)?
        .map(|bytes| {
            RunnerId::from_slice(bytes).ok_or_else(|| R::corrupt(index, "bad runner id".into()))
        })
        .transpose()
}

/// A job id column.
pub(crate) fn job_id<R: StoredRow>(row: &R, index: usize) -> Result<JobId, R::Error> {
    row.optional_bytes(index)?
        .and_then(JobId::from_slice)
        .ok_or_else(|| R::corrupt(index, "bad job id".into()))
}

/// Read the leading [`LIFECYCLE_COLUMNS`] of a row; answers the row's `seq` and the lifecycle.
pub(crate) fn lifecycle_from_row<R: StoredRow>(row: &R) -> Result<(i64, JobLifecycle), R::Error> {
    let seq = row.integer(0)?;
    let state_code = row.state_code(1)?;
    let state = JobState::from_code(state_code)
        .ok_or_else(|| R::corrupt(1, format!("unknown state {state_code}")))?;
    let error = match row.optional_text(16)? {
        Some(reason) => Some(JobError {
            reason: reason
                .parse::<FailureReason>()
                .map_err(|()| R::corrupt(16, format!("unknown reason {reason}")))?,
            message: owned_text(row, 17)?.unwrap_or_default(),
        }),
        None => None,
    };
    let lifecycle = JobLifecycle::from_parts(LifecycleParts {
        state,
        policy: JobPolicy {
            max_attempts: u32_column(row, 2)?,
            timeout_s: u32_column(row, 3)?,
            lease_ttl_s: u32_column(row, 4)?,
            backoff_base_s: u32_column(row, 5)?,
        },
        attempt: u32_column(row, 6)?,
        lease_epoch: row.integer(7)? as u64,
        runner_id: runner_id(row, 8)?,
        run_after: Timestamp(row.integer(9)?),
        lease_expires_at: timestamp(row, 10)?,
        attempt_deadline_at: timestamp(row, 11)?,
        cancel_deadline_at: timestamp(row, 12)?,
        claimed_at: timestamp(row, 13)?,
        started_at: timestamp(row, 14)?,
        finished_at: timestamp(row, 15)?,
        error,
    });
    Ok((seq, lifecycle))
}

/// Read a row selected with [`JOB_COLUMNS`]; answers the row's `seq` and the job.
pub(crate) fn job_from_row<R: StoredRow>(row: &R) -> Result<(i64, JobRecord), R::Error> {
    let (seq, lifecycle) = lifecycle_from_row(row)?;
    let requirements = match json(row, 22)? {
        Some(value) => capabilities_from_json(&value).map_err(|problem| R::corrupt(22, problem))?,
        None => Capabilities::default(),
    };
    let job = JobRecord {
        id: job_id(row, ID_COLUMN)?,
        kind: text(row, 19)?,
        priority: row.priority(20)?,
        payload: json(row, 21)?.unwrap_or(Value::Null),
        requirements,
        idempotency_key: owned_text(row, 23)?,
        created_at: Timestamp(row.integer(24)?),
        progress: Progress {
            percent: row.real(25)?,
            message: owned_text(row, 26)?,
        },
        result: json(row, 27)?,
        inputs: match json(row, 28)? {
            Some(value) => inputs_from_json(&value).map_err(|problem| R::corrupt(28, problem))?,
            None => Vec::new(),
        },
        outputs: match json(row, 29)? {
            Some(value) => outputs_from_json(&value).map_err(|problem| R::corrupt(29, problem))?,
            None => BTreeMap::new(),
        },
        result_signature: json(row, 30)?
            .map(|value| {
                result_signature_from_json(&value).map_err(|problem| R::corrupt(30, problem))
            })
            .transpose()?,
        organization: JobOrganization {
            id: text(row, 31)?,
            shared_runners: row.boolean(32)?,
        },
        lifecycle,
    };
    Ok((seq, job))
}

/// The columns of a runner row that follow the count of jobs it holds in a selection
/// [`runner_from_row`] reads (a macro, so backends can `concat!` it into their selections).
macro_rules! runner_identity_columns {
    () => {
        "enrollment, key_fingerprint, public_key, bound_capabilities, bound_kinds, token_expires_at"
    };
}
pub(crate) use runner_identity_columns;

/// Read a runner row selected as `seq, id, name, organization_id, labels, kinds, offer,
/// hostname, version, draining, created_at, last_heartbeat_at, last_seen_at`, the count of
/// jobs it holds and [`runner_identity_columns`]; answers the row's `seq` and the runner, which is an error of its own when the
/// row's values do not decode (so a page fails only for a runner it holds).
pub(crate) fn runner_from_row<R: StoredRow>(
    row: &R,
) -> Result<(i64, Result<RunnerRecord, StoreError>), R::Error> {
    let record = runner_record(RunnerColumns {
        id: row.optional_bytes(1)?.unwrap_or_default(),
        name: text(row, 2)?,
        organization_id: owned_text(row, 3)?,
        labels: row.optional_text(4)?.unwrap_or_default(),
        kinds: row.optional_text(5)?.unwrap_or_default(),
        offer: row.optional_text(6)?,
        hostname: owned_text(row, 7)?,
        version: owned_text(row, 8)?,
        draining: row.boolean(9)?,
        created_at: row.integer(10)?,
        last_heartbeat_at: row.optional_integer(11)?,
        last_seen_at: row.optional_integer(12)?,
        running_jobs: row.integer(13)?,
        enrollment: row.optional_text(14)?.unwrap_or_default(),
        key_fingerprint: owned_text(row, 15)?,
        public_key: owned_text(row, 16)?,
        bound_capabilities: row.optional_text(17)?,
        bound_kinds: row.optional_text(18)?,
        token_expires_at: row.optional_integer(19)?,
    });
    Ok((row.integer(0)?, record))
}

/// The columns of `runner_keys` that [`runner_key_from_row`] reads.
pub(crate) const RUNNER_KEY_COLUMNS: &str =
    "seq, fingerprint, public_key, note, organization_id, created_at";

/// Read a row selected with [`RUNNER_KEY_COLUMNS`]; answers the row's `seq` and the key.
pub(crate) fn runner_key_from_row<R: StoredRow>(
    row: &R,
) -> Result<(i64, RunnerKeyRecord), R::Error> {
    let record = runner_key_record(RunnerKeyColumns {
        fingerprint: text(row, 1)?,
        public_key: text(row, 2)?,
        note: owned_text(row, 3)?,
        organization_id: owned_text(row, 4)?,
        created_at: row.integer(5)?,
    });
    Ok((row.integer(0)?, record))
}

/// The columns of `audit_log` that [`audit_entry_from_row`] reads.
pub(crate) const AUDIT_COLUMNS: &str = "seq, at, actor, action, subject, detail, organization_id";

/// Read a row selected with [`AUDIT_COLUMNS`]; answers the row's `seq` and the entry, which is
/// an error of its own when its detail does not decode (so a page fails only for an entry it
/// holds).
pub(crate) fn audit_entry_from_row<R: StoredRow>(
    row: &R,
) -> Result<(i64, Result<AuditEntry, StoreError>), R::Error> {
    let seq = row.integer(0)?;
    let entry = audit_entry(AuditColumns {
        seq,
        at: row.integer(1)?,
        actor: text(row, 2)?,
        action: text(row, 3)?,
        subject: text(row, 4)?,
        detail: row
            .optional_text(5)?
            .ok_or_else(|| R::corrupt(5, "NULL where text belongs".into()))?,
        organization_id: row.optional_text(6)?.map(str::to_string),
    });
    Ok((seq, entry))
}

/// The columns of `kind_settings` that [`kind_settings_from_row`] reads.
pub(crate) const KIND_SETTINGS_COLUMNS: &str =
    "kind, result_schema, require_signed_results, updated_at";

/// Read a row selected with [`KIND_SETTINGS_COLUMNS`].
pub(crate) fn kind_settings_from_row<R: StoredRow>(
    row: &R,
) -> Result<KindSettingsRecord, R::Error> {
    Ok(KindSettingsRecord {
        kind: text(row, 0)?,
        result_schema: json(row, 1)?,
        require_signed_results: row.boolean(2)?,
        updated_at: Timestamp(row.integer(3)?),
    })
}

/// The columns of `organizations` that [`organization_from_row`] reads.
pub(crate) const ORGANIZATION_COLUMNS: &str = "seq, id, name, allow_shared_runners, created_at";

/// Read a row selected with [`ORGANIZATION_COLUMNS`]; answers the row's `seq` and the
/// organization.
pub(crate) fn organization_from_row<R: StoredRow>(
    row: &R,
) -> Result<(i64, OrganizationRecord), R::Error> {
    let record = organization_record(OrganizationColumns {
        id: text(row, 1)?,
        name: text(row, 2)?,
        allow_shared_runners: row.boolean(3)?,
        created_at: row.integer(4)?,
    });
    Ok((row.integer(0)?, record))
}

/// The columns of `user_tokens` that [`user_token_from_row`] reads (never the hash).
pub(crate) const USER_TOKEN_COLUMNS: &str =
    "seq, id, name, role, organization_id, created_at, expires_at, last_used_at";

/// Read a row selected with [`USER_TOKEN_COLUMNS`]; answers the row's `seq` and the token.
/// The columns of a `job_attempts` row, as [`attempt_from_row`] reads them.
pub(crate) const ATTEMPT_COLUMNS: &str = "attempt, lease_epoch, runner_id, claimed_at, started_at, \
     ended_at, outcome, error_reason, error_message";

/// A kept attempt of a job (`job_attempts`), read back.
pub(crate) fn attempt_from_row<R: StoredRow>(row: &R) -> Result<AttemptRecord, R::Error> {
    let outcome = row
        .optional_text(6)?
        .and_then(AttemptOutcome::parse)
        .ok_or_else(|| R::corrupt(6, "not an attempt outcome".into()))?;
    let error = match row.optional_text(7)? {
        Some(reason) => Some(JobError {
            reason: reason
                .parse::<FailureReason>()
                .map_err(|()| R::corrupt(7, format!("unknown reason {reason}")))?,
            message: owned_text(row, 8)?.unwrap_or_default(),
        }),
        None => None,
    };
    let attempt = u32_column(row, 0)?;
    let lease_epoch = row.integer(1)?;
    Ok(AttemptRecord {
        attempt,
        lease_epoch: u64::try_from(lease_epoch)
            .map_err(|_| R::corrupt(1, format!("epoch {lease_epoch}")))?,
        runner_id: runner_id(row, 2)?,
        claimed_at: timestamp(row, 3)?,
        started_at: timestamp(row, 4)?,
        ended_at: timestamp(row, 5)?,
        outcome,
        error,
    })
}

/// The columns of a `sessions` row, as [`session_from_row`] reads them.
pub(crate) const SESSION_COLUMNS: &str =
    "secret_hash, user_token_id, admin_token_hash, created_at, expires_at";

pub(crate) fn session_from_row<R: StoredRow>(row: &R) -> Result<SessionRecord, R::Error> {
    let secret_hash = row
        .optional_bytes(0)?
        .ok_or_else(|| R::corrupt(0, "NULL where a session hash belongs".into()))?;
    session_record(SessionColumns {
        secret_hash,
        user_token_id: row.optional_bytes(1)?,
        admin_token_hash: row.optional_bytes(2)?,
        created_at: row.integer(3)?,
        expires_at: row.integer(4)?,
    })
    .map_err(|problem| R::corrupt(0, problem))
}

pub(crate) fn user_token_from_row<R: StoredRow>(
    row: &R,
) -> Result<(i64, UserTokenRecord), R::Error> {
    let id = row
        .optional_bytes(1)?
        .ok_or_else(|| R::corrupt(1, "NULL where a token id belongs".into()))?;
    let role = row
        .optional_text(3)?
        .ok_or_else(|| R::corrupt(3, "NULL where a role belongs".into()))?;
    let record = user_token_record(UserTokenColumns {
        id,
        name: text(row, 2)?,
        role,
        organization_id: owned_text(row, 4)?,
        created_at: row.integer(5)?,
        expires_at: row.optional_integer(6)?,
        last_used_at: row.optional_integer(7)?,
    })
    .map_err(|problem| R::corrupt(1, problem))?;
    Ok((row.integer(0)?, record))
}

/// The columns of `workloads` that [`workload_from_row`] reads.
pub(crate) const WORKLOAD_COLUMNS: &str = "seq, id, runner_id, thread_id, agent_id, organization_id, \
     status, status_reason, containers, ziti_identity_id, created_at, updated_at";

/// Read a row selected with [`WORKLOAD_COLUMNS`]; answers the row's `seq` and the workload, an
/// error of its own when the row does not decode.
pub(crate) fn workload_from_row<R: StoredRow>(
    row: &R,
) -> Result<(i64, Result<muster_core::WorkloadRecord, StoreError>), R::Error> {
    let record =
        crate::rules::workloads::workload_record(crate::rules::workloads::WorkloadColumns {
            id: text(row, 1)?,
            runner_id: runner_id(row, 2)?,
            thread_id: text(row, 3)?,
            agent_id: text(row, 4)?,
            organization_id: text(row, 5)?,
            status: row.state_code(6)?,
            status_reason: text(row, 7)?,
            containers: text(row, 8)?,
            ziti_identity_id: text(row, 9)?,
            created_at: row.integer(10)?,
            updated_at: row.integer(11)?,
        });
    Ok((row.integer(0)?, record))
}

/// The columns of `workload_history` that [`workload_change_from_row`] reads.
pub(crate) const WORKLOAD_HISTORY_COLUMNS: &str = "status, reason, at";

pub(crate) fn workload_change_from_row<R: StoredRow>(
    row: &R,
) -> Result<Result<muster_core::WorkloadStatusChange, StoreError>, R::Error> {
    let status = crate::rules::workloads::status_from_code(row.state_code(0)?);
    let reason = text(row, 1)?;
    let at = Timestamp(row.integer(2)?);
    Ok(status.map(|status| muster_core::WorkloadStatusChange { status, reason, at }))
}
