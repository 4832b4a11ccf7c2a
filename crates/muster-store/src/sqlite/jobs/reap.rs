//! The reaper on SQLite: jobs whose deadlines passed, found through the index of leased jobs by
//! `reap_at`, each judged by its lifecycle.

use muster_core::{JobRecord, JobState, Timestamp};
use rusqlite::params;

use super::super::map_sqlite_error;
use super::super::rows::{job_from_row, write_transition};
use super::super::writer::WriterContext;
use crate::columns::JOB_COLUMNS;
use crate::rules::jobs;
use crate::{ReapReport, StoreError};

/// See [`crate::Maintenance::reap`].
pub(in crate::sqlite) fn reap(
    context: &mut WriterContext,
    now: Timestamp,
    limit: u32,
) -> Result<ReapReport, StoreError> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN (1, 2, 3) AND reap_at <= ?1 ORDER BY reap_at LIMIT ?2"
    );
    let due: Vec<(i64, JobRecord)> = context
        .conn
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_map(params![now.as_millis(), i64::from(limit)], job_from_row)?
                .collect()
        })
        .map_err(map_sqlite_error)?;
    let mut report = ReapReport::default();
    for (seq, mut job) in due {
        let before = job.lifecycle.clone();
        let Some(outcome) = jobs::reap(seq, &mut job.lifecycle, now) else {
            continue;
        };
        write_transition(&context.conn, seq, &before, &job.lifecycle, now)?;
        report.record(job.id, outcome);
        if job.state() == JobState::Pending {
            context.pending_changed = true;
        }
    }
    Ok(report)
}
