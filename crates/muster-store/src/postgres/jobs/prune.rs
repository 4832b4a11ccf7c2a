//! Retention on PostgreSQL: one coordinator at a time (an advisory lock) walks the jobs oldest
//! first and deletes the finished ones, judged again on the locked rows, with their logs and
//! DAGs.

use deadpool_postgres::Transaction;
use muster_core::Timestamp;
use tokio_postgres::types::ToSql;

use super::super::rows::column;
use super::super::{execute, query};
use crate::rules::jobs::TERMINAL_STATE_CODES;
use crate::rules::prune::{PruneCandidate, choose_jobs_to_prune};
use crate::{PruneCursor, PruneReport, StoreError};

/// The advisory lock that lets one coordinator prune at a time: two would walk the same jobs
/// and wait on each other's row locks.
const PRUNE_LOCK_KEY: i64 = 0x6d75_7374_6572_7072; // "musterpr"

/// See [`crate::Maintenance::delete_finished_jobs`].
pub(in crate::postgres) async fn delete_finished(
    transaction: &Transaction<'_>,
    finished_before: Timestamp,
    resume: Option<PruneCursor>,
    limit: u32,
) -> Result<PruneReport, StoreError> {
    let locked: bool = column(
        query(
            transaction,
            "SELECT pg_try_advisory_xact_lock($1)",
            &[&PRUNE_LOCK_KEY],
        )
        .await?
        .first()
        .ok_or_else(|| StoreError::Internal("the advisory lock answered no row".into()))?,
        0,
    )?;
    if !locked {
        return Ok(PruneReport::default());
    }
    let rows = query(
        transaction,
        "SELECT seq, state, finished_at, created_at FROM jobs WHERE seq > $1 ORDER BY seq LIMIT $2",
        &[&resume.map_or(0, |cursor| cursor.0), &i64::from(limit)],
    )
    .await?;
    let mut walked = Vec::with_capacity(rows.len());
    for row in &rows {
        walked.push(PruneCandidate {
            seq: column(row, 0)?,
            state_code: i64::from(column::<i16>(row, 1)?),
            finished_at: column(row, 2)?,
            created_at: column(row, 3)?,
        });
    }
    let (doomed, resume) = choose_jobs_to_prune(&walked, finished_before, limit);
    if doomed.is_empty() {
        return Ok(PruneReport { deleted: 0, resume });
    }
    // Judged again on the locked rows: a job retried since the walk is pending and stays.
    let deleted_rows = query(
        transaction,
        &format!(
            "DELETE FROM jobs WHERE seq = ANY($1) AND state IN ({TERMINAL_STATE_CODES}) \
             AND finished_at < $2 RETURNING seq"
        ),
        &[&doomed, &finished_before.as_millis()],
    )
    .await?;
    let deleted: Vec<i64> = deleted_rows
        .iter()
        .map(|row| column(row, 0))
        .collect::<Result<_, _>>()?;
    let params: [&(dyn ToSql + Sync); 1] = [&deleted];
    futures::try_join!(
        execute(
            transaction,
            "DELETE FROM job_logs WHERE job_seq = ANY($1)",
            &params
        ),
        execute(
            transaction,
            "DELETE FROM job_dags WHERE job_seq = ANY($1)",
            &params
        ),
        execute(
            transaction,
            "DELETE FROM job_attempts WHERE job_seq = ANY($1)",
            &params
        ),
    )?;
    Ok(PruneReport {
        deleted: deleted.len() as u64,
        resume,
    })
}
