//! Job operations of the SQLite backend. Write operations take the writer's context and run
//! inside its transaction; read operations take a reader connection.

use std::collections::{BTreeMap, HashSet};

use muster_core::{
    ArtifactId, Capabilities, JobError, JobId, JobLifecycle, JobRecord, JobState, LogEntry,
    LogLevel, NewJob, NewLogEntry, Progress, RunnerId, Timestamp, TransitionError,
};
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::Value;

use super::map_sqlite_error;
use super::rows::{
    JOB_COLUMNS, LIFECYCLE_COLUMNS, job_from_row, lifecycle_from_row, write_lifecycle,
    write_lifecycle_and_result,
};
use super::runners::touch_runner;
use super::writer::WriterContext;
use crate::encoding::{
    capabilities_to_json, decode_cursor, inputs_to_json, level_code, level_from_code,
    outputs_to_json,
};
use crate::rules::{
    MAX_CLAIM_SCAN_PER_KIND, PruneCandidate, TERMINAL_STATE_CODES, choose_jobs_to_prune,
    first_log_seq_after, jitter_for, job_not_found, merged_outputs, next_log_seq,
    truncation_notice,
};
use crate::{
    ClaimRequest, ClaimedJob, CompletionItem, JobAck, JobCall, JobFilter, LogPage, LogPosition,
    Page, PageRequest, QueueDepth, ReapReport, RecordedOutputs, StoreError, Submitted,
};

pub(super) fn load_by_id(conn: &Connection, id: JobId) -> Result<(i64, JobRecord), StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
    let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
    statement
        .query_row(params![id.as_bytes().as_slice()], job_from_row)
        .optional()
        .map_err(map_sqlite_error)?
        .ok_or_else(|| job_not_found(id))
}

fn load_by_idempotency_key(conn: &Connection, key: &str) -> Result<Option<JobRecord>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = ?1");
    let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
    let row = statement
        .query_row(params![key], job_from_row)
        .optional()
        .map_err(map_sqlite_error)?;
    Ok(row.map(|(_, job)| job))
}

pub(super) fn submit(
    context: &mut WriterContext,
    new_jobs: Vec<NewJob>,
) -> Result<Vec<Submitted>, StoreError> {
    let conn = &context.conn;
    let mut answers = Vec::with_capacity(new_jobs.len());
    for new_job in new_jobs {
        if let Some(key) = &new_job.spec.idempotency_key
            && let Some(existing) = load_by_idempotency_key(conn, key)?
        {
            answers.push(Submitted {
                job: existing,
                created: false,
            });
            continue;
        }
        let spec = &new_job.spec;
        let lifecycle = new_job.initial_lifecycle();
        let requirements = (!spec.requirements.is_empty())
            .then(|| capabilities_to_json(&spec.requirements).to_string());
        let mut statement = conn
            .prepare_cached(
                "INSERT INTO jobs (id, kind, state, priority, payload, requirements, idempotency_key, \
                 max_attempts, timeout_s, lease_ttl_s, backoff_base_s, run_after, created_at, inputs) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )
            .map_err(map_sqlite_error)?;
        statement
            .execute(params![
                new_job.id.as_bytes().as_slice(),
                spec.kind,
                JobState::Pending.code(),
                spec.priority,
                spec.payload.to_string(),
                requirements,
                spec.idempotency_key,
                i64::from(spec.policy.max_attempts),
                i64::from(spec.policy.timeout_s),
                i64::from(spec.policy.lease_ttl_s),
                i64::from(spec.policy.backoff_base_s),
                lifecycle.run_after.as_millis(),
                new_job.created_at.as_millis(),
                inputs_to_json(&spec.inputs),
            ])
            .map_err(map_sqlite_error)?;
        let job = JobRecord {
            id: new_job.id,
            kind: spec.kind.clone(),
            payload: spec.payload.clone(),
            priority: spec.priority,
            requirements: spec.requirements.clone(),
            idempotency_key: spec.idempotency_key.clone(),
            created_at: new_job.created_at,
            progress: Progress::default(),
            result: None,
            inputs: spec.inputs.clone(),
            outputs: BTreeMap::new(),
            lifecycle,
        };
        answers.push(Submitted { job, created: true });
    }
    context.pending_changed = true;
    Ok(answers)
}

pub(super) fn list(
    conn: &Connection,
    filter: &JobFilter,
    page: &PageRequest,
) -> Result<Page<JobRecord>, StoreError> {
    let before = decode_cursor(page.cursor.as_deref())?;
    // Leased jobs are read through the reaper's index of them: few rows, whereas SQLite would
    // otherwise walk the whole table newest first to avoid sorting them.
    let source = if filter.state.is_some_and(JobState::is_leased) {
        "jobs INDEXED BY jobs_leased"
    } else {
        "jobs"
    };
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM {source} WHERE 1 = 1");
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(state) = filter.state {
        // A literal (from the enum, never from the caller's text): SQLite picks the partial
        // indexes of failed and cancelled jobs only when it can see the state, and can use that
        // of leased jobs only when the query repeats its condition.
        sql.push_str(&format!(" AND state = {}", state.code()));
        if state.is_leased() {
            sql.push_str(" AND state IN (1, 2, 3)");
        }
    }
    if let Some(kind) = &filter.kind {
        values.push(kind.clone().into());
        sql.push_str(&format!(" AND kind = ?{}", values.len()));
    }
    if let Some(runner) = filter.runner_id {
        values.push(runner.as_bytes().to_vec().into());
        sql.push_str(&format!(" AND runner_id = ?{}", values.len()));
    }
    if let Some(before) = before {
        values.push(before.into());
        sql.push_str(&format!(" AND seq < ?{}", values.len()));
    }
    values.push(i64::from(page.limit).saturating_add(1).into());
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ?{}", values.len()));
    let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
    let mut rows: Vec<(i64, JobRecord)> = statement
        .query_map(params_from_iter(values), job_from_row)
        .map_err(map_sqlite_error)?
        .collect::<Result<_, _>>()
        .map_err(map_sqlite_error)?;
    let next_cursor = if rows.len() > page.limit as usize {
        rows.truncate(page.limit as usize);
        rows.last().map(|(seq, _)| seq.to_string())
    } else {
        None
    };
    Ok(Page {
        items: rows.into_iter().map(|(_, job)| job).collect(),
        next_cursor,
    })
}

/// Load a job, let `change` transition its lifecycle, write it back. Nothing is written when
/// `change` refuses.
fn transition<T>(
    conn: &Connection,
    id: JobId,
    operation: &'static str,
    change: impl FnOnce(&mut JobLifecycle, i64) -> Result<T, TransitionError>,
) -> Result<(i64, JobRecord, T), StoreError> {
    let (seq, mut job) = load_by_id(conn, id)?;
    let outcome = change(&mut job.lifecycle, seq)
        .map_err(|error| StoreError::from_transition(error, &id.to_string(), operation))?;
    write_lifecycle(conn, seq, &job.lifecycle)?;
    Ok((seq, job, outcome))
}

pub(super) fn cancel(
    context: &mut WriterContext,
    id: JobId,
    grace_ms: i64,
    now: Timestamp,
) -> Result<JobRecord, StoreError> {
    let (_, job, ()) = transition(&context.conn, id, "cancel", |lifecycle, _| {
        lifecycle.cancel(grace_ms, now)
    })?;
    Ok(job)
}

pub(super) fn retry(
    context: &mut WriterContext,
    id: JobId,
    now: Timestamp,
) -> Result<JobRecord, StoreError> {
    let (_, job, ()) = transition(&context.conn, id, "retry", |lifecycle, _| {
        lifecycle.retry(now)
    })?;
    context.pending_changed = true;
    Ok(job)
}

/// A candidate row for a claim, with what ordering across kinds needs.
struct Candidate {
    priority: i32,
    seq: i64,
    job: JobRecord,
}

pub(super) fn claim(
    context: &mut WriterContext,
    claim: &ClaimRequest,
    now: Timestamp,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let Some(registered_labels) = touch_runner(context, claim, now)? else {
        return Ok(Vec::new());
    };
    let mut offer = claim.offer.clone();
    // Labels an operator gave the runner at registration win over what it declares itself.
    offer.labels.extend(registered_labels);
    let wanted = claim.max_jobs as usize;
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut kinds: Vec<&String> = claim.kinds.iter().collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        candidates.extend(candidates_of_kind(
            &context.conn,
            kind,
            &offer,
            wanted,
            now,
        )?);
    }
    candidates.sort_by_key(|candidate| (candidate.priority, candidate.seq));
    candidates.truncate(wanted);
    let mut claimed = Vec::with_capacity(candidates.len());
    for Candidate { seq, mut job, .. } in candidates {
        let lease = job
            .lifecycle
            .claim(claim.runner, now)
            // Candidates are due pending jobs, so a refusal here is a bug; as an internal error it
            // rolls back the whole group rather than leave the jobs claimed before it.
            .map_err(|error| {
                StoreError::Internal(format!("claim of candidate job {}: {error}", job.id))
            })?;
        write_lifecycle(&context.conn, seq, &job.lifecycle)?;
        if !job.outputs.is_empty() {
            // Outputs belong to the attempt that recorded them: a new attempt starts without
            // the leftovers of a failed or lost one. Only re-claims of jobs that recorded
            // outputs pay for this second write.
            clear_outputs(&context.conn, seq)?;
            job.outputs.clear();
        }
        claimed.push(ClaimedJob { job, lease });
    }
    Ok(claimed)
}

/// The first `wanted` due jobs of `kind` that `offer` can take, in claim order: the first
/// `wanted` of those without requirements (any runner of the kind can take them) plus the first
/// `wanted` of those whose requirements `offer` meets. The caller merges and cuts.
fn candidates_of_kind(
    conn: &Connection,
    kind: &str,
    offer: &Capabilities,
    wanted: usize,
    now: Timestamp,
) -> Result<Vec<Candidate>, StoreError> {
    // Jobs without requirements live in their own index, so they are found with one bounded
    // read however many jobs no runner can take sit ahead of them; jobs in a retry backoff are
    // skipped inside the index (run_after is one of its columns) without reading their rows.
    let open_sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 0 AND requirements IS NULL AND kind = ?1 \
         AND run_after <= ?3 ORDER BY priority, seq LIMIT ?2"
    );
    let rows: Vec<(i64, JobRecord)> = conn
        .prepare_cached(&open_sql)
        .and_then(|mut statement| {
            statement
                .query_map(params![kind, wanted as i64, now.as_millis()], job_from_row)?
                .collect()
        })
        .map_err(map_sqlite_error)?;
    let mut found: Vec<Candidate> = rows
        .into_iter()
        .map(|(seq, job)| Candidate {
            priority: job.priority,
            seq,
            job,
        })
        .collect();
    found.extend(constrained_candidates(conn, kind, offer, wanted, now)?);
    Ok(found)
}

/// Due jobs of `kind` with requirements that `offer` meets, in claim order. Requirements are
/// checked here, not in SQL, so the scan is bounded: a claim reads at most
/// `MAX_CLAIM_SCAN_PER_KIND` such jobs that this runner cannot take.
fn constrained_candidates(
    conn: &Connection,
    kind: &str,
    offer: &Capabilities,
    wanted: usize,
    now: Timestamp,
) -> Result<Vec<Candidate>, StoreError> {
    let page_size = (wanted + 8).min(512);
    let first_sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 0 AND requirements IS NOT NULL AND kind = ?1 \
         AND run_after <= ?3 ORDER BY priority, seq LIMIT ?2"
    );
    let next_sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 0 AND requirements IS NOT NULL AND kind = ?1 \
         AND run_after <= ?3 AND (priority, seq) > (?4, ?5) ORDER BY priority, seq LIMIT ?2"
    );
    let mut found = Vec::new();
    let mut scanned = 0usize;
    let mut after: Option<(i32, i64)> = None;
    while found.len() < wanted && scanned < MAX_CLAIM_SCAN_PER_KIND {
        let limit = page_size as i64;
        let rows: Vec<(i64, JobRecord)> = match after {
            None => conn.prepare_cached(&first_sql).and_then(|mut statement| {
                statement
                    .query_map(params![kind, limit, now.as_millis()], job_from_row)?
                    .collect()
            }),
            Some((priority, seq)) => conn.prepare_cached(&next_sql).and_then(|mut statement| {
                statement
                    .query_map(
                        params![kind, limit, now.as_millis(), priority, seq],
                        job_from_row,
                    )?
                    .collect()
            }),
        }
        .map_err(map_sqlite_error)?;
        let exhausted = rows.len() < page_size;
        scanned += rows.len();
        for (seq, job) in rows {
            after = Some((job.priority, seq));
            if found.len() < wanted && job.requirements.are_met_by(offer) {
                found.push(Candidate {
                    priority: job.priority,
                    seq,
                    job,
                });
            }
        }
        if exhausted {
            break;
        }
    }
    Ok(found)
}

/// Load a job for a call by its lease holder, checking the lease first.
fn load_for_call(conn: &Connection, call: JobCall) -> Result<(i64, JobRecord), StoreError> {
    let (seq, job) = load_by_id(conn, call.job)?;
    job.lifecycle
        .check_lease(call.runner, call.epoch)
        .map_err(|error| StoreError::from_transition(error, &call.job.to_string(), "this call"))?;
    Ok((seq, job))
}

/// Job heartbeats, progress reports and log appends: activity by the lease holder (a claimed
/// job becomes running), optionally extending the lease, recording progress, appending logs.
pub(super) fn activity(
    context: &mut WriterContext,
    call: JobCall,
    activity: crate::Activity,
    now: Timestamp,
) -> Result<JobAck, StoreError> {
    load_and_record_activity(
        context,
        call,
        activity.progress,
        activity.log_entries,
        activity.extend_lease,
        now,
    )
    .map(|(_, ack)| ack)
}

fn load_and_record_activity(
    context: &mut WriterContext,
    call: JobCall,
    progress: Option<Progress>,
    entries: Vec<NewLogEntry>,
    extend_lease: bool,
    now: Timestamp,
) -> Result<(i64, JobAck), StoreError> {
    let (seq, job) = load_for_call(&context.conn, call)?;
    activity_on(
        context,
        call,
        seq,
        job,
        progress,
        entries,
        extend_lease,
        now,
    )
}

/// [`activity`] on a job the caller already loaded with [`load_for_call`].
#[allow(clippy::too_many_arguments)]
fn activity_on(
    context: &mut WriterContext,
    call: JobCall,
    seq: i64,
    mut job: JobRecord,
    progress: Option<Progress>,
    entries: Vec<NewLogEntry>,
    extend_lease: bool,
    now: Timestamp,
) -> Result<(i64, JobAck), StoreError> {
    let was = job.lifecycle.clone();
    let lease = if extend_lease {
        job.lifecycle
            .extend_lease(call.runner, call.epoch, now)
            .map(Some)
    } else {
        job.lifecycle
            .record_activity(call.runner, call.epoch, now)
            .map(|()| None)
    }
    .map_err(|error| StoreError::from_transition(error, &call.job.to_string(), "this call"))?;
    if job.lifecycle != was {
        write_lifecycle(&context.conn, seq, &job.lifecycle)?;
    }
    if let Some(progress) = progress {
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
    let next_seq = append_log_entries(context, seq, entries, now)?;
    let ack = JobAck {
        lease: lease.or_else(|| job.lifecycle.lease()),
        cancel: job.lifecycle.cancel_requested(),
        next_seq,
    };
    Ok((seq, ack))
}

/// Append entries to a job's log within its cap; answers the job's next sequence number.
fn append_log_entries(
    context: &mut WriterContext,
    job_seq: i64,
    entries: Vec<NewLogEntry>,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let conn = &context.conn;
    let (mut next_seq, mut bytes, mut truncated): (i64, i64, bool) = conn
        .prepare_cached("SELECT log_next_seq, log_bytes, log_truncated FROM jobs WHERE seq = ?1")
        .and_then(|mut statement| {
            statement.query_row(params![job_seq], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
        })
        .map_err(map_sqlite_error)?;
    if entries.is_empty() {
        return Ok(next_seq as u64);
    }
    let cap = context.log_cap_bytes as i64;
    let mut insert = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO job_logs (job_seq, seq, ts, level, message, metadata) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(map_sqlite_error)?;
    let truncation_notice = truncation_notice(cap);
    for entry in entries {
        let entry_seq = match entry.seq {
            Some(seq) => i64::try_from(seq)
                .map_err(|_| StoreError::Rejected(format!("log seq {seq} is too large")))?,
            None => next_seq,
        };
        if entry.seq.is_some() && entry_seq < next_seq {
            // Already stored (a retried batch) or a gap filled late: keep what is there. A late
            // entry counts against the cap like any other, or out-of-order seqs would bypass it;
            // past the cap a free slot gets the truncation notice, a taken one stays as it is.
            if truncated {
                continue;
            }
            let weight = entry.weight() as i64;
            let over_cap = bytes + weight > cap;
            let inserted = if over_cap {
                insert.execute(params![
                    job_seq,
                    entry_seq,
                    now.as_millis(),
                    level_code(LogLevel::Warn),
                    truncation_notice,
                    Option::<String>::None
                ])
            } else {
                insert.execute(params![
                    job_seq,
                    entry_seq,
                    now.as_millis(),
                    level_code(entry.level),
                    entry.message,
                    entry.metadata.as_ref().map(Value::to_string)
                ])
            }
            .map_err(map_sqlite_error)?;
            if inserted > 0 {
                if over_cap {
                    truncated = true;
                } else {
                    bytes += weight;
                }
            }
            continue;
        }
        next_seq = entry_seq + 1;
        if truncated {
            continue;
        }
        let weight = entry.weight() as i64;
        if bytes + weight > cap {
            truncated = true;
            insert
                .execute(params![
                    job_seq,
                    entry_seq,
                    now.as_millis(),
                    level_code(LogLevel::Warn),
                    truncation_notice,
                    Option::<String>::None
                ])
                .map_err(map_sqlite_error)?;
            continue;
        }
        bytes += weight;
        insert
            .execute(params![
                job_seq,
                entry_seq,
                now.as_millis(),
                level_code(entry.level),
                entry.message,
                entry.metadata.as_ref().map(Value::to_string)
            ])
            .map_err(map_sqlite_error)?;
    }
    conn.prepare_cached(
        "UPDATE jobs SET log_next_seq = ?2, log_bytes = ?3, log_truncated = ?4 WHERE seq = ?1",
    )
    .and_then(|mut statement| statement.execute(params![job_seq, next_seq, bytes, truncated]))
    .map_err(map_sqlite_error)?;
    Ok(next_seq as u64)
}

pub(super) fn sync_dag(
    context: &mut WriterContext,
    call: JobCall,
    dag: Value,
    now: Timestamp,
) -> Result<JobAck, StoreError> {
    let (seq, ack) = load_and_record_activity(context, call, None, Vec::new(), false, now)?;
    context
        .conn
        .prepare_cached(
            "INSERT INTO job_dags (job_seq, dag, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (job_seq) DO UPDATE SET dag = excluded.dag, updated_at = excluded.updated_at",
        )
        .and_then(|mut statement| statement.execute(params![seq, dag.to_string(), now.as_millis()]))
        .map_err(map_sqlite_error)?;
    Ok(ack)
}

fn write_outputs(
    conn: &Connection,
    seq: i64,
    outputs: &BTreeMap<String, ArtifactId>,
) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE jobs SET outputs = ?2 WHERE seq = ?1")
        .and_then(|mut statement| statement.execute(params![seq, outputs_to_json(outputs)]))
        .map_err(map_sqlite_error)?;
    Ok(())
}

fn clear_outputs(conn: &Connection, seq: i64) -> Result<(), StoreError> {
    write_outputs(conn, seq, &BTreeMap::new())
}

pub(super) fn record_outputs(
    context: &mut WriterContext,
    call: JobCall,
    outputs: BTreeMap<String, ArtifactId>,
    now: Timestamp,
) -> Result<RecordedOutputs, StoreError> {
    let (seq, job) = load_for_call(&context.conn, call)?;
    // Every refusal (lease, limit) comes before the first write.
    let merged = merged_outputs(&job, outputs)?;
    let (seq, ack) = activity_on(context, call, seq, job, None, Vec::new(), false, now)?;
    write_outputs(&context.conn, seq, &merged)?;
    Ok(RecordedOutputs {
        ack,
        outputs: merged,
    })
}

pub(super) fn complete(
    context: &mut WriterContext,
    call: JobCall,
    result: Value,
    outputs: BTreeMap<String, ArtifactId>,
    now: Timestamp,
) -> Result<JobRecord, StoreError> {
    let (seq, mut job) = load_by_id(&context.conn, call.job)?;
    let before = job.lifecycle.clone();
    job.lifecycle
        .complete(call.runner, call.epoch, now)
        .map_err(|error| StoreError::from_transition(error, &call.job.to_string(), "complete"))?;
    if job.lifecycle == before {
        // A repeated completion: answered with the job as the first one left it.
        return Ok(job);
    }
    let merged = if outputs.is_empty() {
        None
    } else {
        Some(merged_outputs(&job, outputs)?)
    };
    write_lifecycle_and_result(&context.conn, seq, &job.lifecycle, Some(&result))?;
    if let Some(merged) = merged {
        write_outputs(&context.conn, seq, &merged)?;
        job.outputs = merged;
    }
    job.result = Some(result);
    Ok(job)
}

pub(super) fn complete_many(
    context: &mut WriterContext,
    runner: RunnerId,
    items: Vec<CompletionItem>,
    now: Timestamp,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut answers = Vec::with_capacity(items.len());
    for item in items {
        answers.push(complete_by_lifecycle(&context.conn, runner, item, now));
    }
    Ok(answers)
}

/// One completion of a batch. Only the lifecycle is read (batches answer no job), and an item
/// is refused before anything of it is written.
fn complete_by_lifecycle(
    conn: &Connection,
    runner: RunnerId,
    item: CompletionItem,
    now: Timestamp,
) -> Result<(), StoreError> {
    let sql = format!("SELECT {LIFECYCLE_COLUMNS} FROM jobs WHERE id = ?1");
    let (seq, mut lifecycle) = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_row(params![item.job.as_bytes().as_slice()], lifecycle_from_row)
                .optional()
        })
        .map_err(map_sqlite_error)?
        .ok_or_else(|| job_not_found(item.job))?;
    let before = lifecycle.clone();
    lifecycle
        .complete(runner, item.epoch, now)
        .map_err(|error| StoreError::from_transition(error, &item.job.to_string(), "complete"))?;
    if lifecycle == before {
        // A repeated completion changes nothing.
        return Ok(());
    }
    write_lifecycle_and_result(conn, seq, &lifecycle, Some(&item.result))
}

pub(super) fn fail(
    context: &mut WriterContext,
    call: JobCall,
    error: JobError,
    retryable: bool,
    now: Timestamp,
) -> Result<JobRecord, StoreError> {
    let (_, job, ()) = transition(&context.conn, call.job, "fail", |lifecycle, seq| {
        let jitter = jitter_for(seq, lifecycle.attempt);
        lifecycle.fail(call.runner, call.epoch, error, retryable, jitter, now)
    })?;
    if job.state() == JobState::Pending {
        context.pending_changed = true;
    }
    Ok(job)
}

pub(super) fn reap(
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
        let jitter = jitter_for(seq, job.lifecycle.attempt);
        let Some(outcome) = job.lifecycle.reap(jitter, now) else {
            continue;
        };
        write_lifecycle(&context.conn, seq, &job.lifecycle)?;
        report.record(job.id, outcome);
        if job.state() == JobState::Pending {
            context.pending_changed = true;
        }
    }
    Ok(report)
}

pub(super) fn read_logs(
    conn: &Connection,
    id: JobId,
    after_seq: Option<u64>,
    limit: u32,
) -> Result<LogPage, StoreError> {
    let (seq, job) = load_by_id(conn, id)?;
    let first = first_log_seq_after(after_seq);
    let mut statement = conn
        .prepare_cached(
            "SELECT seq, ts, level, message, metadata FROM job_logs WHERE job_seq = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
        )
        .map_err(map_sqlite_error)?;
    let items: Vec<LogEntry> = statement
        .query_map(params![seq, first, i64::from(limit)], |row| {
            let metadata: Option<String> = row.get(4)?;
            Ok(LogEntry {
                seq: row.get::<_, i64>(0)? as u64,
                ts: Timestamp(row.get(1)?),
                level: level_from_code(row.get(2)?),
                message: row.get(3)?,
                metadata: metadata.and_then(|text| serde_json::from_str(&text).ok()),
            })
        })
        .map_err(map_sqlite_error)?
        .collect::<Result<_, _>>()
        .map_err(map_sqlite_error)?;
    let next_seq = next_log_seq(&items, first, || {
        conn.prepare_cached("SELECT log_next_seq FROM jobs WHERE seq = ?1")
            .and_then(|mut statement| statement.query_row(params![seq], |row| row.get(0)))
            .map_err(map_sqlite_error)
    })?;
    Ok(LogPage {
        items,
        next_seq,
        job_finished: job.state().is_terminal(),
    })
}

pub(super) fn log_positions(
    conn: &Connection,
    ids: &[JobId],
) -> Result<Vec<LogPosition>, StoreError> {
    let sql =
        format!("SELECT log_next_seq, state IN ({TERMINAL_STATE_CODES}) FROM jobs WHERE id = ?1");
    let mut statement = conn.prepare_cached(&sql).map_err(map_sqlite_error)?;
    let mut positions = Vec::with_capacity(ids.len());
    for id in ids {
        let found = statement
            .query_row(params![id.as_bytes().as_slice()], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, bool>(1)?))
            })
            .optional()
            .map_err(map_sqlite_error)?;
        if let Some((next_seq, finished)) = found {
            positions.push(LogPosition {
                job: *id,
                next_seq: next_seq.max(0) as u64,
                finished,
            });
        }
    }
    Ok(positions)
}

pub(super) fn read_dag(conn: &Connection, id: JobId) -> Result<Option<Value>, StoreError> {
    let (seq, _) = load_by_id(conn, id)?;
    let text: Option<String> = conn
        .prepare_cached("SELECT dag FROM job_dags WHERE job_seq = ?1")
        .and_then(|mut statement| {
            statement
                .query_row(params![seq], |row| row.get(0))
                .optional()
        })
        .map_err(map_sqlite_error)?;
    text.map(|text| {
        serde_json::from_str(&text)
            .map_err(|error| StoreError::Internal(format!("stored DAG of job {id}: {error}")))
    })
    .transpose()
}

/// See [`crate::Store::delete_finished_jobs`].
pub(super) fn delete_finished(
    context: &mut WriterContext,
    finished_before: Timestamp,
    resume: Option<crate::PruneCursor>,
    limit: u32,
) -> Result<crate::PruneReport, StoreError> {
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
        ] {
            conn.prepare_cached(sql)
                .and_then(|mut statement| statement.execute(params![seq]))
                .map_err(map_sqlite_error)?;
        }
        deleted += 1;
    }
    Ok(crate::PruneReport { deleted, resume })
}

pub(super) fn named_artifacts(conn: &Connection) -> Result<HashSet<ArtifactId>, StoreError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT value FROM jobs, json_each(jobs.inputs) WHERE jobs.inputs IS NOT NULL \
             UNION SELECT value FROM jobs, json_each(jobs.outputs) WHERE jobs.outputs IS NOT NULL",
        )
        .map_err(map_sqlite_error)?;
    let rows = statement
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(map_sqlite_error)?;
    let mut named = HashSet::new();
    for row in rows {
        named.insert(crate::rules::parse_named_artifact(
            &row.map_err(map_sqlite_error)?,
        )?);
    }
    Ok(named)
}

/// Pending jobs are counted in the two pending indexes (whose conditions these statements
/// repeat, so SQLite reads only them) and leased ones through the reaper's index.
pub(super) fn active_job_counts(conn: &Connection) -> Result<Vec<QueueDepth>, StoreError> {
    let mut pending: BTreeMap<String, u64> = BTreeMap::new();
    for sql in [
        "SELECT kind, count(*) FROM jobs WHERE state = 0 AND requirements IS NULL GROUP BY kind",
        "SELECT kind, count(*) FROM jobs WHERE state = 0 AND requirements IS NOT NULL GROUP BY kind",
    ] {
        let mut statement = conn.prepare_cached(sql).map_err(map_sqlite_error)?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(map_sqlite_error)?;
        for row in rows {
            let (kind, count) = row.map_err(map_sqlite_error)?;
            *pending.entry(kind).or_default() += count as u64;
        }
    }
    let mut depths: Vec<QueueDepth> = pending
        .into_iter()
        .map(|(kind, count)| QueueDepth {
            kind,
            state: JobState::Pending,
            count,
        })
        .collect();
    depths.extend(counts_by_kind_and_state(
        conn,
        "SELECT kind, state, count(*) FROM jobs WHERE state IN (1, 2, 3) GROUP BY kind, state",
    )?);
    Ok(depths)
}

pub(super) fn finished_job_counts(conn: &Connection) -> Result<Vec<QueueDepth>, StoreError> {
    counts_by_kind_and_state(
        conn,
        "SELECT kind, state, count(*) FROM jobs WHERE state >= 4 GROUP BY kind, state",
    )
}

fn counts_by_kind_and_state(conn: &Connection, sql: &str) -> Result<Vec<QueueDepth>, StoreError> {
    let mut statement = conn.prepare_cached(sql).map_err(map_sqlite_error)?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })
        .map_err(map_sqlite_error)?;
    let mut depths = Vec::new();
    for row in rows {
        let (kind, state, count) = row.map_err(map_sqlite_error)?;
        if let Some(state) = JobState::from_code(state) {
            depths.push(QueueDepth {
                kind,
                state,
                count: count as u64,
            });
        }
    }
    Ok(depths)
}
