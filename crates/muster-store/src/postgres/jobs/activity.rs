//! The lease holder's calls on PostgreSQL (heartbeats, progress, log appends, DAG syncs,
//! outputs): each is one activity, in a transaction that locks the job's row.

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use muster_core::{ArtifactId, Timestamp};

use super::super::{Shared, execute};
use super::{load_by_id, logs, write_one};
use crate::encoding::outputs_to_json;
use crate::rules::activity;
use crate::{Activity, JobCall, RecordedActivity, StoreError};

/// See [`crate::LeaseStore::record_activity`].
pub(in crate::postgres) async fn record(
    transaction: &Transaction<'_>,
    shared: &Shared,
    call: JobCall,
    activity: Activity,
    now: Timestamp,
) -> Result<RecordedActivity, StoreError> {
    let (seq, mut job) = load_by_id(transaction, call.job, true).await?;
    let outputs = match activity.outputs {
        Some(outputs) => Some(activity::outputs_to_record(&job, call, outputs)?),
        None => None,
    };
    let applied = activity::apply(&mut job.lifecycle, call, activity.extend_lease, now)?;
    if let Some(before) = &applied.changed_from {
        write_one(transaction, seq, before, &job, None, now).await?;
    }
    if let Some(progress) = activity.progress {
        execute(
            transaction,
            "UPDATE jobs SET progress_percent = $2, progress_message = $3 WHERE seq = $1",
            &[&seq, &progress.percent, &progress.message],
        )
        .await?;
    }
    let next_seq = logs::append(transaction, shared, seq, activity.log_entries, now).await?;
    if let Some(dag) = activity.dag {
        execute(
            transaction,
            "INSERT INTO job_dags (job_seq, dag, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (job_seq) DO UPDATE SET dag = excluded.dag, updated_at = excluded.updated_at",
            &[&seq, &dag.to_string(), &now.as_millis()],
        )
        .await?;
    }
    if let Some(outputs) = &outputs {
        write_outputs(transaction, seq, outputs).await?;
    }
    Ok(RecordedActivity {
        ack: activity::ack(&job.lifecycle, &applied, next_seq),
        outputs,
    })
}

pub(super) async fn write_outputs(
    transaction: &Transaction<'_>,
    seq: i64,
    outputs: &BTreeMap<String, ArtifactId>,
) -> Result<(), StoreError> {
    execute(
        transaction,
        "UPDATE jobs SET outputs = $2 WHERE seq = $1",
        &[&seq, &outputs_to_json(outputs)],
    )
    .await
    .map(|_| ())
}
