//! Reading SQLite rows through the shared job mapping ([`crate::columns`]), and writing a job's
//! lifecycle back.

use muster_core::identity::VerifiedResultSignature;
use muster_core::{JobLifecycle, JobRecord, Timestamp};
use rusqlite::types::Type;
use rusqlite::{Connection, Row, params};
use serde_json::Value;

use crate::StoreError;
use crate::columns::{self, StoredRow};
use crate::encoding::result_signature_to_json;

impl StoredRow for Row<'_> {
    type Error = rusqlite::Error;

    fn corrupt(index: usize, problem: String) -> rusqlite::Error {
        rusqlite::Error::FromSqlConversionFailure(index, Type::Text, problem.into())
    }

    fn integer(&self, index: usize) -> rusqlite::Result<i64> {
        self.get(index)
    }

    fn optional_integer(&self, index: usize) -> rusqlite::Result<Option<i64>> {
        self.get(index)
    }

    fn state_code(&self, index: usize) -> rusqlite::Result<i64> {
        self.get(index)
    }

    fn priority(&self, index: usize) -> rusqlite::Result<i32> {
        self.get(index)
    }

    fn real(&self, index: usize) -> rusqlite::Result<f64> {
        self.get(index)
    }

    fn boolean(&self, index: usize) -> rusqlite::Result<bool> {
        self.get(index)
    }

    fn optional_text(&self, index: usize) -> rusqlite::Result<Option<&str>> {
        let value = self.get_ref(index)?;
        value.as_str_or_null().map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(index, value.data_type(), Box::new(error))
        })
    }

    fn optional_bytes(&self, index: usize) -> rusqlite::Result<Option<&[u8]>> {
        let value = self.get_ref(index)?;
        value.as_bytes_or_null().map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(index, value.data_type(), Box::new(error))
        })
    }
}

/// Read a row selected with [`columns::LIFECYCLE_COLUMNS`] (as `query_map` wants it).
pub(crate) fn lifecycle_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, JobLifecycle)> {
    columns::lifecycle_from_row(row)
}

/// Read a row selected with [`columns::JOB_COLUMNS`] (as `query_map` wants it).
pub(crate) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, JobRecord)> {
    columns::job_from_row(row)
}

/// Write back every lifecycle column of the job at `seq`.
pub(crate) fn write_lifecycle(
    conn: &Connection,
    seq: i64,
    lifecycle: &JobLifecycle,
) -> Result<(), StoreError> {
    write_lifecycle_and_result(conn, seq, lifecycle, None, None)
}

/// Write back the lifecycle and, when given, the result with its signature (replacing the
/// stored one, so an unsigned result never keeps an earlier result's signature), in one row
/// write (completions are the hot path; two updates would rewrite the row twice).
pub(crate) fn write_lifecycle_and_result(
    conn: &Connection,
    seq: i64,
    lifecycle: &JobLifecycle,
    result: Option<&Value>,
    signature: Option<&VerifiedResultSignature>,
) -> Result<(), StoreError> {
    let millis = |at: Option<Timestamp>| at.map(Timestamp::as_millis);
    let mut statement = conn
        .prepare_cached(
            "UPDATE jobs SET state = ?2, attempt = ?3, lease_epoch = ?4, runner_id = ?5, run_after = ?6, \
             lease_expires_at = ?7, attempt_deadline_at = ?8, cancel_deadline_at = ?9, reap_at = ?10, \
             claimed_at = ?11, started_at = ?12, finished_at = ?13, error_reason = ?14, error_message = ?15, \
             result = coalesce(?16, result), \
             result_signature = CASE WHEN ?16 IS NULL THEN result_signature ELSE ?17 END WHERE seq = ?1",
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
            signature.map(result_signature_to_json),
        ])
        .map_err(super::map_sqlite_error)?;
    Ok(())
}
