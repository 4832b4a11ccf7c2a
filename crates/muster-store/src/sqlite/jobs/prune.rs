//! Retention on SQLite: the walk over jobs oldest first, and the deletion of the finished ones
//! (re-checked in the deleting statement) with their logs and DAGs.

use muster_core::Timestamp;
use rusqlite::params;

use super::super::map_sqlite_error;
use super::super::writer::WriterContext;
use crate::rules::jobs::TERMINAL_STATE_CODES;
use crate::rules::prune::{PruneCandidate, choose_jobs_to_prune};
use crate::{PruneCursor, PruneReport, StoreError};

/// See [`crate::Maintenance::delete_finished_jobs`].
pub(in crate::sqlite) fn delete_finished(
    context: &mut WriterContext,
    finished_before: Timestamp,
    resume: Option<PruneCursor>,
    limit: u32,
) -> Result<PruneReport, StoreError> {
    let conn = &context.conn;
    let walked: Vec<PruneCandidate> = conn
        .prepare_cached(
            "SELECT seq, state, finished_at, created_at FROM jobs WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .and_then(|mut statement| {
            statement
                .query_map(
                    params![resume.map_or(0, |cursor| cursor.0), i64::from(limit)],
                    |row| {
                        Ok(PruneCandidate {
                            seq: row.get(0)?,
                            state_code: row.get(1)?,
                            finished_at: row.get(2)?,
                            created_at: row.get(3)?,
                        })
                    },
                )?
                .collect()
        })
        .map_err(map_sqlite_error)?;
    let (doomed, resume) = choose_jobs_to_prune(&walked, finished_before, limit);
    let mut deleted = 0;
    let delete_job = format!(
        "DELETE FROM jobs WHERE seq = ?1 AND state IN ({TERMINAL_STATE_CODES}) AND finished_at < ?2"
    );
    for seq in doomed {
        let removed = conn
            .prepare_cached(&delete_job)
            .and_then(|mut statement| statement.execute(params![seq, finished_before.as_millis()]))
            .map_err(map_sqlite_error)?;
        if removed == 0 {
            continue;
        }
        for sql in [
            "DELETE FROM job_logs WHERE job_seq = ?1",
            "DELETE FROM job_dags WHERE job_seq = ?1",
            "DELETE FROM job_attempts WHERE job_seq = ?1",
        ] {
            conn.prepare_cached(sql)
                .and_then(|mut statement| statement.execute(params![seq]))
                .map_err(map_sqlite_error)?;
        }
        deleted += 1;
    }
    Ok(PruneReport { deleted, resume })
}
