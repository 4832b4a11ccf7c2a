//! The lease holder's calls on SQLite (heartbeats, progress, log appends, DAG syncs, outputs):
//! each is one activity, run in its own savepoint.

use std::collections::BTreeMap;

use muster_core::{ArtifactId, Timestamp};
use rusqlite::{Connection, params};

use super::super::map_sqlite_error;
use super::super::rows::write_lifecycle;
use super::super::writer::WriterContext;
use super::{load_by_id, logs};
use crate::encoding::outputs_to_json;
use crate::rules::activity;
use crate::{Activity, JobCall, RecordedActivity, StoreError};

/// See [`crate::LeaseStore::record_activity`].
pub(in crate::sqlite) fn record(
    context: &mut WriterContext,
    call: JobCall,
    activity: Activity,
    now: Timestamp,
) -> Result<RecordedActivity, StoreError> {
    let (seq, mut job) = load_by_id(&context.conn, call.job)?;
    let outputs = activity
        .outputs
        .map(|outputs| activity::outputs_to_record(&job, call, outputs))
        .transpose()?;
    let applied = activity::apply(&mut job.lifecycle, call, activity.extend_lease, now)?;
    if applied.changed_from.is_some() {
        write_lifecycle(&context.conn, seq, &job.lifecycle)?;
    }
    if let Some(progress) = activity.progress {
        context
            .conn
            .prepare_cached(
                "UPDATE jobs SET progress_percent = ?2, progress_message = ?3 WHERE seq = ?1",
            )
            .and_then(|mut statement| {
                statement.execute(params![seq, progress.percent, progress.message])
            })
            .map_err(map_sqlite_error)?;
    }
    let next_seq = logs::append(context, seq, activity.log_entries, now)?;
    if let Some(dag) = activity.dag {
        context
            .conn
            .prepare_cached(
                "INSERT INTO job_dags (job_seq, dag, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (job_seq) DO UPDATE SET dag = excluded.dag, updated_at = excluded.updated_at",
            )
            .and_then(|mut statement| {
                statement.execute(params![seq, dag.to_string(), now.as_millis()])
            })
            .map_err(map_sqlite_error)?;
    }
    if let Some(outputs) = &outputs {
        write_outputs(&context.conn, seq, outputs)?;
    }
    Ok(RecordedActivity {
        ack: activity::ack(&job.lifecycle, &applied, next_seq),
        outputs,
    })
}

pub(super) fn write_outputs(
    conn: &Connection,
    seq: i64,
    outputs: &BTreeMap<String, ArtifactId>,
) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE jobs SET outputs = ?2 WHERE seq = ?1")
        .and_then(|mut statement| statement.execute(params![seq, outputs_to_json(outputs)]))
        .map_err(map_sqlite_error)?;
    Ok(())
}

pub(super) fn clear_outputs(conn: &Connection, seq: i64) -> Result<(), StoreError> {
    write_outputs(conn, seq, &BTreeMap::new())
}
