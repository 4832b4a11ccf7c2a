//! Completions and failures on PostgreSQL. Completions without outputs (single ones and batches)
//! are the hot path: the ones that arrive together run as one transaction (see `combine`), each
//! answered as if it had run alone.

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::Transaction;
use muster_core::identity::VerifiedResultSignature;
use muster_core::{
    ArtifactId, JobError, JobId, JobLifecycle, JobRecord, JobState, RunnerId, Timestamp,
};
use serde_json::Value;

use super::super::SingleCompletionCall;
use super::super::query;
use super::super::rows::{
    LifecycleWrite, QueuePlace, WrittenResult, job_from_row, job_id_column, lifecycle_from_row,
    write_lifecycles,
};
use super::activity::write_outputs;
use super::{load_by_id, notify_pending, transition, write_one};
use crate::columns::{ID_COLUMN, JOB_COLUMNS, LIFECYCLE_AND_ID_COLUMNS};
use crate::rules::completions::{self, item_call};
use crate::rules::jobs::{self, job_not_found};
use crate::{CompletionItem, JobCall, StoreError};

/// A completion with outputs (those without run through [`complete_singles`]).
pub(in crate::postgres) async fn complete(
    transaction: &Transaction<'_>,
    call: JobCall,
    result: Value,
    signature: Option<VerifiedResultSignature>,
    outputs: BTreeMap<String, ArtifactId>,
    now: Timestamp,
) -> Result<JobRecord, StoreError> {
    let (seq, mut job) = load_by_id(transaction, call.job, true).await?;
    let Some(completed) = completions::complete(&job.lifecycle, call, now)? else {
        return Ok(job);
    };
    let outputs = completions::outputs_after(&job, outputs)?;
    let before = std::mem::replace(&mut job.lifecycle, completed);
    let written = WrittenResult::of(&result, signature.as_ref());
    write_one(transaction, seq, &before, &job, Some(written), now).await?;
    if let Some(outputs) = outputs {
        write_outputs(transaction, seq, &outputs).await?;
        job.outputs = outputs;
    }
    job.result = Some(result);
    job.result_signature = signature;
    Ok(job)
}

/// Lock and read `columns` of the jobs `ids` names (each once; unknown ones are left out). Rows
/// are locked in one order (by seq), so two batches naming the same jobs cannot deadlock.
async fn lock_jobs(
    transaction: &Transaction<'_>,
    columns: &str,
    ids: Vec<JobId>,
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let mut ids: Vec<Vec<u8>> = ids.iter().map(|id| id.as_bytes().to_vec()).collect();
    ids.sort_unstable();
    ids.dedup();
    let sql = format!("SELECT {columns} FROM jobs WHERE id = ANY($1) ORDER BY seq FOR UPDATE");
    query(transaction, &sql, &[&ids]).await
}

/// Run single completions without outputs that arrived together (see `combine`), possibly from
/// several runners, as one transaction: each is answered as if it had run alone, in the order
/// given; a refused one changes nothing.
pub(in crate::postgres) async fn complete_singles(
    transaction: &Transaction<'_>,
    calls: &[SingleCompletionCall],
) -> Result<Vec<Result<JobRecord, StoreError>>, StoreError> {
    let rows = lock_jobs(
        transaction,
        JOB_COLUMNS,
        calls.iter().map(|(call, ..)| call.job).collect(),
    )
    .await?;
    // Per job: its row's seq, its lifecycle as read, and the job as changed by the calls.
    let mut current: HashMap<JobId, (i64, JobLifecycle, JobRecord)> =
        HashMap::with_capacity(rows.len());
    for row in &rows {
        let (seq, job) = job_from_row(row)?;
        current.insert(job.id, (seq, job.lifecycle.clone(), job));
    }
    let mut results: HashMap<i64, WrittenResult> = HashMap::new();
    let answers = calls
        .iter()
        .map(|(call, result, signature, now)| {
            let Some((seq, _, job)) = current.get_mut(&call.job) else {
                return Err(job_not_found(call.job));
            };
            if let Some(completed) = completions::complete(&job.lifecycle, *call, *now)? {
                job.lifecycle = completed;
                job.result = Some(result.clone());
                job.result_signature = signature.clone();
                results.insert(*seq, WrittenResult::of(result, signature.as_ref()));
            }
            Ok(job.clone())
        })
        .collect();
    // Completions end no attempt the history keeps; the latest call's time stands for them all.
    let latest = calls
        .iter()
        .map(|(.., now)| *now)
        .max()
        .unwrap_or(Timestamp(0));
    let writes: Vec<LifecycleWrite<'_>> = current
        .values()
        .filter(|(_, before, job)| *before != job.lifecycle)
        .map(|(seq, before, job)| LifecycleWrite {
            seq: *seq,
            before,
            after: &job.lifecycle,
            now: latest,
            result: results.remove(seq),
            place: Some(QueuePlace::of(job)),
        })
        .collect();
    write_lifecycles(transaction, &writes).await?;
    Ok(answers)
}

/// Run batch completions that arrived together (see `combine`), possibly from several runners,
/// as one transaction: each item is answered as if its call had run alone, calls in the order
/// given, items in the order of their call.
pub(in crate::postgres) async fn complete_batch(
    transaction: &Transaction<'_>,
    calls: &[(RunnerId, Vec<CompletionItem>, Timestamp)],
) -> Result<Vec<Result<Vec<Result<(), StoreError>>, StoreError>>, StoreError> {
    let rows = lock_jobs(
        transaction,
        LIFECYCLE_AND_ID_COLUMNS,
        calls
            .iter()
            .flat_map(|(_, items, _)| items.iter().map(|item| item.job))
            .collect(),
    )
    .await?;
    // Per job: its row's seq, its lifecycle as read, and as changed by the calls.
    let mut current: HashMap<JobId, (i64, JobLifecycle, JobLifecycle)> =
        HashMap::with_capacity(rows.len());
    for row in &rows {
        let (seq, lifecycle) = lifecycle_from_row(row)?;
        current.insert(
            job_id_column(row, ID_COLUMN)?,
            (seq, lifecycle.clone(), lifecycle),
        );
    }
    let mut answers = Vec::with_capacity(calls.len());
    let mut results: HashMap<i64, WrittenResult> = HashMap::new();
    for (runner, items, now) in calls {
        let mut call_answers = Vec::with_capacity(items.len());
        for item in items {
            let Some((seq, _, lifecycle)) = current.get_mut(&item.job) else {
                call_answers.push(Err(job_not_found(item.job)));
                continue;
            };
            // Each item is judged on its own, so a refused item changes nothing.
            call_answers.push(
                completions::complete(lifecycle, item_call(*runner, item), *now).map(|completed| {
                    if let Some(completed) = completed {
                        *lifecycle = completed;
                        results.insert(
                            *seq,
                            WrittenResult::of(&item.result, item.signature.as_ref()),
                        );
                    }
                }),
            );
        }
        answers.push(Ok(call_answers));
    }
    let latest = calls
        .iter()
        .map(|(.., now)| *now)
        .max()
        .unwrap_or(Timestamp(0));
    let writes: Vec<LifecycleWrite<'_>> = current
        .values()
        .filter(|(_, before, after)| before != after)
        .map(|(seq, before, after)| LifecycleWrite {
            seq: *seq,
            before,
            after,
            now: latest,
            result: results.remove(seq),
            place: None,
        })
        .collect();
    write_lifecycles(transaction, &writes).await?;
    Ok(answers)
}

pub(in crate::postgres) async fn fail(
    transaction: &Transaction<'_>,
    call: JobCall,
    error: JobError,
    retryable: bool,
    now: Timestamp,
) -> Result<JobRecord, StoreError> {
    let (_, job, ()) = transition(transaction, call.job, "fail", now, |lifecycle, seq| {
        jobs::fail(lifecycle, seq, call, error, retryable, now)
    })
    .await?;
    if job.state() == JobState::Pending {
        notify_pending(transaction).await?;
    }
    Ok(job)
}
