//! Reading SQLite rows through the shared job mapping ([`crate::columns`]), and writing a job's
//! lifecycle back.

use muster_core::identity::VerifiedResultSignature;
use muster_core::{AttemptRecord, JobId, JobLifecycle, JobRecord, Timestamp};
use rusqlite::types::Type;
use rusqlite::{Connection, Row, params};
use serde_json::Value;

use crate::StoreError;
use crate::columns::{self, ATTEMPT_COLUMNS, StoredRow};
use crate::encoding::result_signature_to_json;
use crate::rules::jobs::KEPT_ATTEMPTS_READ;

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

/// Write back the lifecycle `after` of the job at `seq`, which was `before` until `now`, and
/// keep the attempt the change ended without completing the job, if it did (the attempt
/// history), in the same transaction.
pub(crate) fn write_transition(
    conn: &Connection,
    seq: i64,
    before: &JobLifecycle,
    after: &JobLifecycle,
    now: Timestamp,
) -> Result<(), StoreError> {
    write_lifecycle(conn, seq, after)?;
    match muster_core::ended_attempt(before, after, now) {
        Some(ended) => insert_attempt(conn, seq, &ended),
        None => Ok(()),
    }
}

/// Keep one ended attempt of the job at `seq` (once: the same epoch again changes nothing).
fn insert_attempt(conn: &Connection, seq: i64, record: &AttemptRecord) -> Result<(), StoreError> {
    let millis = |at: Option<Timestamp>| at.map(Timestamp::as_millis);
    conn.prepare_cached(&format!(
        "INSERT INTO job_attempts (job_seq, {ATTEMPT_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING"
    ))
    .and_then(|mut statement| {
        statement.execute(params![
            seq,
            i64::from(record.attempt),
            record.lease_epoch as i64,
            record.runner_id.map(|id| id.as_bytes().to_vec()),
            millis(record.claimed_at),
            millis(record.started_at),
            millis(record.ended_at),
            record.outcome.as_str(),
            record.error.as_ref().map(|error| error.reason.as_str()),
            record.error.as_ref().map(|error| error.message.as_str()),
        ])
    })
    .map_err(super::map_sqlite_error)?;
    Ok(())
}

/// The kept attempts of the job `id`, oldest first (the newest [`KEPT_ATTEMPTS_READ`] of them).
pub(crate) fn kept_attempts(
    conn: &Connection,
    id: JobId,
) -> Result<Vec<AttemptRecord>, StoreError> {
    let sql = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM job_attempts \
         WHERE job_seq = (SELECT seq FROM jobs WHERE id = ?1) \
         ORDER BY lease_epoch DESC LIMIT ?2"
    );
    let mut records: Vec<AttemptRecord> = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_map(
                    params![id.as_bytes().as_slice(), KEPT_ATTEMPTS_READ],
                    |row| columns::attempt_from_row(row),
                )?
                .collect()
        })
        .map_err(super::map_sqlite_error)?;
    records.reverse();
    Ok(records)
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
