//! Mapping between SQLite rows and domain values.

use std::collections::BTreeMap;

use muster_core::{
    Capabilities, FailureReason, JobError, JobId, JobLifecycle, JobPolicy, JobRecord, JobState,
    Progress, RunnerId, Timestamp,
};
use rusqlite::types::Type;
use rusqlite::{Connection, Row, params};
use serde_json::Value;

use crate::StoreError;
use crate::encoding::{capabilities_from_json, inputs_from_json, outputs_from_json};

macro_rules! lifecycle_columns {
    () => {
        "seq, state, max_attempts, timeout_s, lease_ttl_s, backoff_base_s, attempt, lease_epoch, \
         runner_id, run_after, lease_expires_at, attempt_deadline_at, cancel_deadline_at, \
         claimed_at, started_at, finished_at, error_reason, error_message"
    };
}

/// The columns [`lifecycle_from_row`] reads: what a state change needs and nothing else, so hot
/// paths that only change state do not decode payloads.
pub(crate) const LIFECYCLE_COLUMNS: &str = lifecycle_columns!();

/// The columns [`job_from_row`] reads: the lifecycle columns first, then the rest of the job.
pub(crate) const JOB_COLUMNS: &str = concat!(
    lifecycle_columns!(),
    ", id, kind, priority, payload, requirements, idempotency_key, created_at, \
     progress_percent, progress_message, result, inputs, outputs"
);

fn conversion_error(column: usize, problem: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, Type::Text, problem.into())
}

fn json_column(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<Value>> {
    let text: Option<String> = row.get(column)?;
    text.map(|text| {
        serde_json::from_str(&text).map_err(|error| conversion_error(column, error.to_string()))
    })
    .transpose()
}

fn timestamp_column(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<Timestamp>> {
    Ok(row.get::<_, Option<i64>>(column)?.map(Timestamp))
}

fn u32_column(row: &Row<'_>, column: usize) -> rusqlite::Result<u32> {
    let value: i64 = row.get(column)?;
    u32::try_from(value).map_err(|_| conversion_error(column, format!("{value} is out of range")))
}

pub(crate) fn runner_id_column(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<RunnerId>> {
    let bytes: Option<Vec<u8>> = row.get(column)?;
    bytes
        .map(|bytes| {
            RunnerId::from_slice(&bytes)
                .ok_or_else(|| conversion_error(column, "bad runner id".into()))
        })
        .transpose()
}

/// Read the leading [`LIFECYCLE_COLUMNS`] of a row; answers the row's `seq` and the lifecycle.
pub(crate) fn lifecycle_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, JobLifecycle)> {
    let seq: i64 = row.get(0)?;
    let state_code: i64 = row.get(1)?;
    let state = JobState::from_code(state_code)
        .ok_or_else(|| conversion_error(1, format!("unknown state {state_code}")))?;
    let error = match row.get::<_, Option<String>>(16)? {
        Some(reason) => Some(JobError {
            reason: reason
                .parse::<FailureReason>()
                .map_err(|()| conversion_error(16, format!("unknown reason {reason}")))?,
            message: row.get::<_, Option<String>>(17)?.unwrap_or_default(),
        }),
        None => None,
    };
    let lifecycle = JobLifecycle {
        state,
        policy: JobPolicy {
            max_attempts: u32_column(row, 2)?,
            timeout_s: u32_column(row, 3)?,
            lease_ttl_s: u32_column(row, 4)?,
            backoff_base_s: u32_column(row, 5)?,
        },
        attempt: u32_column(row, 6)?,
        lease_epoch: row.get::<_, i64>(7)? as u64,
        runner_id: runner_id_column(row, 8)?,
        run_after: Timestamp(row.get(9)?),
        lease_expires_at: timestamp_column(row, 10)?,
        attempt_deadline_at: timestamp_column(row, 11)?,
        cancel_deadline_at: timestamp_column(row, 12)?,
        claimed_at: timestamp_column(row, 13)?,
        started_at: timestamp_column(row, 14)?,
        finished_at: timestamp_column(row, 15)?,
        error,
    };
    Ok((seq, lifecycle))
}

/// Read a row selected with [`JOB_COLUMNS`]; answers the row's `seq` and the job.
pub(crate) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, JobRecord)> {
    let (seq, lifecycle) = lifecycle_from_row(row)?;
    let id_bytes: Vec<u8> = row.get(18)?;
    let id =
        JobId::from_slice(&id_bytes).ok_or_else(|| conversion_error(18, "bad job id".into()))?;
    let requirements = match json_column(row, 22)? {
        Some(value) => {
            capabilities_from_json(&value).map_err(|problem| conversion_error(22, problem))?
        }
        None => Capabilities::default(),
    };
    let job = JobRecord {
        id,
        kind: row.get(19)?,
        priority: row.get(20)?,
        payload: json_column(row, 21)?.unwrap_or(Value::Null),
        requirements,
        idempotency_key: row.get(23)?,
        created_at: Timestamp(row.get(24)?),
        progress: Progress {
            percent: row.get(25)?,
            message: row.get(26)?,
        },
        result: json_column(row, 27)?,
        inputs: match json_column(row, 28)? {
            Some(value) => {
                inputs_from_json(&value).map_err(|problem| conversion_error(28, problem))?
            }
            None => Vec::new(),
        },
        outputs: match json_column(row, 29)? {
            Some(value) => {
                outputs_from_json(&value).map_err(|problem| conversion_error(29, problem))?
            }
            None => BTreeMap::new(),
        },
        lifecycle,
    };
    Ok((seq, job))
}

/// Write back every lifecycle column of the job at `seq`.
pub(crate) fn write_lifecycle(
    conn: &Connection,
    seq: i64,
    lifecycle: &JobLifecycle,
) -> Result<(), StoreError> {
    write_lifecycle_and_result(conn, seq, lifecycle, None)
}

/// Write back the lifecycle and, when given, the result, in one row write (completions are the
/// hot path; two updates would rewrite the row twice).
pub(crate) fn write_lifecycle_and_result(
    conn: &Connection,
    seq: i64,
    lifecycle: &JobLifecycle,
    result: Option<&Value>,
) -> Result<(), StoreError> {
    let millis = |at: Option<Timestamp>| at.map(Timestamp::as_millis);
    let mut statement = conn
        .prepare_cached(
            "UPDATE jobs SET state = ?2, attempt = ?3, lease_epoch = ?4, runner_id = ?5, run_after = ?6, \
             lease_expires_at = ?7, attempt_deadline_at = ?8, cancel_deadline_at = ?9, reap_at = ?10, \
             claimed_at = ?11, started_at = ?12, finished_at = ?13, error_reason = ?14, error_message = ?15, \
             result = coalesce(?16, result) WHERE seq = ?1",
        )
        .map_err(super::map_sqlite_error)?;
    statement
        .execute(params![
            seq,
            lifecycle.state.code(),
            i64::from(lifecycle.attempt),
            lifecycle.lease_epoch as i64,
            lifecycle.runner_id.map(|id| id.as_bytes().to_vec()),
            lifecycle.run_after.as_millis(),
            millis(lifecycle.lease_expires_at),
            millis(lifecycle.attempt_deadline_at),
            millis(lifecycle.cancel_deadline_at),
            millis(lifecycle.reap_at()),
            millis(lifecycle.claimed_at),
            millis(lifecycle.started_at),
            millis(lifecycle.finished_at),
            lifecycle.error.as_ref().map(|error| error.reason.as_str()),
            lifecycle.error.as_ref().map(|error| error.message.as_str()),
            result.map(Value::to_string),
        ])
        .map_err(super::map_sqlite_error)?;
    Ok(())
}
