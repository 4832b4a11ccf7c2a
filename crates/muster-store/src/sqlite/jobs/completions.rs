//! Completions and failures on SQLite. A single completion runs in its own savepoint; a batch
//! runs unguarded (hot: each item is refused before anything of it is written, and reads only
//! the lifecycle, as batches answer no job).

use std::collections::BTreeMap;

use muster_core::identity::VerifiedResultSignature;
use muster_core::{ArtifactId, JobError, JobRecord, JobState, RunnerId, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::super::map_sqlite_error;
use super::super::rows::{lifecycle_from_row, write_lifecycle_and_result};
use super::super::writer::WriterContext;
use super::activity::write_outputs;
use super::{load_by_id, transition};
use crate::columns::LIFECYCLE_COLUMNS;
use crate::rules::completions::{self, item_call};
use crate::rules::jobs::{self, job_not_found};
use crate::{CompletionItem, JobCall, StoreError};

pub(in crate::sqlite) fn complete(
    context: &mut WriterContext,
    call: JobCall,
    result: Value,
    signature: Option<VerifiedResultSignature>,
    outputs: BTreeMap<String, ArtifactId>,
    now: Timestamp,
) -> Result<JobRecord, StoreError> {
    let (seq, mut job) = load_by_id(&context.conn, call.job)?;
    let Some(completed) = completions::complete(&job.lifecycle, call, now)? else {
        return Ok(job);
    };
    let outputs = completions::outputs_after(&job, outputs)?;
    job.lifecycle = completed;
    write_lifecycle_and_result(
        &context.conn,
        seq,
        &job.lifecycle,
        Some(&result),
        signature.as_ref(),
    )?;
    if let Some(outputs) = outputs {
        write_outputs(&context.conn, seq, &outputs)?;
        job.outputs = outputs;
    }
    job.result = Some(result);
    job.result_signature = signature;
    Ok(job)
}

pub(in crate::sqlite) fn complete_many(
    context: &mut WriterContext,
    runner: RunnerId,
    items: Vec<CompletionItem>,
    now: Timestamp,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut answers = Vec::with_capacity(items.len());
    for item in items {
        answers.push(complete_item(&context.conn, runner, item, now));
    }
    Ok(answers)
}

/// One completion of a batch.
fn complete_item(
    conn: &Connection,
    runner: RunnerId,
    item: CompletionItem,
    now: Timestamp,
) -> Result<(), StoreError> {
    let sql = format!("SELECT {LIFECYCLE_COLUMNS} FROM jobs WHERE id = ?1");
    let (seq, lifecycle) = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_row(params![item.job.as_bytes().as_slice()], lifecycle_from_row)
                .optional()
        })
        .map_err(map_sqlite_error)?
        .ok_or_else(|| job_not_found(item.job))?;
    match completions::complete(&lifecycle, item_call(runner, &item), now)? {
        Some(completed) => write_lifecycle_and_result(
            conn,
            seq,
            &completed,
            Some(&item.result),
            item.signature.as_ref(),
        ),
        None => Ok(()),
    }
}

pub(in crate::sqlite) fn fail(
    context: &mut WriterContext,
    call: JobCall,
    error: JobError,
    retryable: bool,
    now: Timestamp,
) -> Result<JobRecord, StoreError> {
    let (_, job, ()) = transition(&context.conn, call.job, "fail", now, |lifecycle, seq| {
        jobs::fail(lifecycle, seq, call, error, retryable, now)
    })?;
    if job.state() == JobState::Pending {
        context.pending_changed = true;
    }
    Ok(job)
}
