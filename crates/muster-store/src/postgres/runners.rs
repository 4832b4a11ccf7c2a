//! Runner operations of the PostgreSQL backend.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use deadpool_postgres::{GenericClient, Transaction};
use muster_core::{JobId, JobLifecycle, JobRecord, JobState, RunnerId, RunnerRecord, Timestamp};
use tokio_postgres::Row;

use super::rows::{JOB_COLUMNS, column, job_from_row, job_id_column, runner_id_column};
use super::{Shared, execute, query};
use crate::encoding::{
    capabilities_to_json, decode_cursor, labels_from_text, offer_from_text, string_map_to_json,
};
use crate::{ClaimRequest, NewRunner, Page, PageRequest, RunnerBeat, StoreError};

/// How often at most a claiming runner's "last seen" is rewritten when nothing else changed.
const TOUCH_INTERVAL_MS: i64 = 1000;

/// The columns `runner_from_row` reads, from `runners` joined with `held` (leases per runner).
const RUNNER_COLUMNS: &str = "seq, id, name, organization_id, labels, kinds, offer, hostname, version, draining, \
    created_at, last_heartbeat_at, last_seen_at, coalesce(held.jobs, 0)";

/// The jobs a runner holds, counted from its lease checks (every job it holds is in one of them;
/// they list a few seconds of its claims), each job confirmed on its row.
const HELD_JOBS: &str = "LEFT JOIN LATERAL (SELECT count(DISTINCT jobs.seq) AS jobs \
     FROM lease_checks CROSS JOIN LATERAL unnest(lease_checks.seqs) AS checked(seq) \
     JOIN jobs ON jobs.seq = checked.seq \
     WHERE lease_checks.runner_id = runners.id AND jobs.runner_id = runners.id \
       AND jobs.state IN (1, 2, 3)) held ON true";
/// In place of `HELD_JOBS` when the caller does not want the counts.
const HELD_JOBS_NOT_COUNTED: &str = "CROSS JOIN (SELECT 0::bigint AS jobs) held";

fn runner_not_found(id: RunnerId) -> StoreError {
    StoreError::NotFound(format!("runner {id}"))
}

fn runner_from_row(row: &Row) -> Result<(i64, RunnerRecord), StoreError> {
    let seq: i64 = column(row, 0)?;
    let id = runner_id_column(row, 1)?
        .ok_or_else(|| StoreError::Internal("runner row without an id".into()))?;
    let mut labels = labels_from_text(column(row, 4)?)?;
    let kinds_text: &str = column(row, 5)?;
    let kinds: Vec<String> = serde_json::from_str(kinds_text)
        .map_err(|error| StoreError::Internal(format!("stored kinds: {error}")))?;
    let offer = offer_from_text(column(row, 6)?)?;
    for (key, value) in &offer.labels {
        labels.entry(key.clone()).or_insert_with(|| value.clone());
    }
    let running_jobs: i64 = column(row, 13)?;
    let record = RunnerRecord {
        id,
        name: column(row, 2)?,
        organization_id: column(row, 3)?,
        labels,
        offer,
        kinds,
        hostname: column(row, 7)?,
        version: column(row, 8)?,
        draining: column(row, 9)?,
        last_heartbeat_at: column::<Option<i64>>(row, 11)?.map(Timestamp),
        last_seen_at: column::<Option<i64>>(row, 12)?.map(Timestamp),
        running_jobs: u32::try_from(running_jobs).unwrap_or(u32::MAX),
        created_at: Timestamp(column(row, 10)?),
    };
    Ok((seq, record))
}

pub(super) async fn create(
    client: &impl GenericClient,
    runner: &NewRunner,
) -> Result<(), StoreError> {
    execute(
        client,
        "INSERT INTO runners (id, name, organization_id, labels, token_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &runner.id.as_bytes().as_slice(),
            &runner.name,
            &runner.organization_id,
            &string_map_to_json(&runner.labels).to_string(),
            &runner.token_hash.as_slice(),
            &runner.created_at.as_millis(),
        ],
    )
    .await
    .map(|_| ())
}

pub(super) async fn get(
    client: &impl GenericClient,
    id: RunnerId,
) -> Result<RunnerRecord, StoreError> {
    let sql = format!(
        "SELECT {RUNNER_COLUMNS} FROM runners {HELD_JOBS} WHERE id = $1 AND deleted_at IS NULL"
    );
    let rows = query(client, &sql, &[&id.as_bytes().as_slice()]).await?;
    match rows.first() {
        Some(row) => runner_from_row(row).map(|(_, record)| record),
        None => Err(runner_not_found(id)),
    }
}

pub(super) async fn list(
    client: &impl GenericClient,
    page: &PageRequest,
    count_held_jobs: bool,
) -> Result<Page<RunnerRecord>, StoreError> {
    let before = decode_cursor(page.cursor.as_deref())?.unwrap_or(i64::MAX);
    let held = if count_held_jobs {
        HELD_JOBS
    } else {
        HELD_JOBS_NOT_COUNTED
    };
    let sql = format!(
        "SELECT {RUNNER_COLUMNS} FROM runners {held} WHERE deleted_at IS NULL AND seq < $1 \
         ORDER BY seq DESC LIMIT $2"
    );
    let rows = query(client, &sql, &[&before, &(i64::from(page.limit) + 1)]).await?;
    let mut items = Vec::with_capacity(rows.len());
    let mut last_seq = None;
    for row in &rows {
        if items.len() == page.limit as usize {
            return Ok(Page {
                items,
                next_cursor: last_seq.map(|seq: i64| seq.to_string()),
            });
        }
        let (seq, record) = runner_from_row(row)?;
        items.push(record);
        last_seq = Some(seq);
    }
    Ok(Page {
        items,
        next_cursor: None,
    })
}

pub(super) async fn by_token_hash(
    client: &impl GenericClient,
    token_hash: &[u8; 32],
) -> Result<Option<RunnerId>, StoreError> {
    let rows = query(
        client,
        "SELECT id FROM runners WHERE token_hash = $1 AND deleted_at IS NULL",
        &[&token_hash.as_slice()],
    )
    .await?;
    match rows.first() {
        Some(row) => runner_id_column(row, 0),
        None => Ok(None),
    }
}

/// Delete a runner and release what it holds; answers whether any job went back to the queue.
pub(super) async fn delete(
    transaction: &Transaction<'_>,
    id: RunnerId,
    now: Timestamp,
) -> Result<(Vec<JobId>, bool), StoreError> {
    let changed = execute(
        transaction,
        "UPDATE runners SET deleted_at = $2, token_hash = NULL WHERE id = $1 AND deleted_at IS NULL",
        &[&id.as_bytes().as_slice(), &now.as_millis()],
    )
    .await?;
    if changed == 0 {
        return Err(runner_not_found(id));
    }
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs \
         WHERE seq IN (SELECT unnest(seqs) FROM lease_checks WHERE runner_id = $1) \
           AND state IN (1, 2, 3) ORDER BY seq FOR UPDATE"
    );
    let rows = query(transaction, &sql, &[&id.as_bytes().as_slice()]).await?;
    let mut released: Vec<(i64, JobLifecycle, JobRecord)> = Vec::with_capacity(rows.len());
    for row in &rows {
        let (seq, mut job) = job_from_row(row)?;
        if !job.state().is_leased() || job.lifecycle.runner_id != Some(id) {
            continue;
        }
        let before = job.lifecycle.clone();
        let jitter = crate::rules::jitter_for(seq, job.lifecycle.attempt);
        job.lifecycle.release(
            format!("runner {id} was deleted while it held the lease"),
            jitter,
            now,
        );
        released.push((seq, before, job));
    }
    let requeued = super::jobs::write_back_and_wake(transaction, &released).await?;
    Ok((
        released.iter().map(|(_, _, job)| job.id).collect(),
        requeued,
    ))
}

/// What a claiming runner's row says about its claim.
pub(super) enum ClaimingRunner {
    /// The runner may claim; these are the labels an operator gave it at registration.
    Ready(BTreeMap<String, String>),
    /// The runner is draining: it claims nothing more, whichever coordinator heard its heartbeat.
    Draining,
    /// No such runner (or it was deleted): the claim is refused.
    Unknown(StoreError),
}

/// Record that a runner is claiming and what it declared, and answer whether it may. Rewrites
/// the runner row only when the declaration changed or a second passed since this coordinator
/// last wrote it. An error here is the transaction's; an unknown runner is an answer.
pub(super) async fn touch_runner(
    transaction: &Transaction<'_>,
    shared: &Shared,
    claim: &ClaimRequest,
    now: Timestamp,
) -> Result<ClaimingRunner, StoreError> {
    let offer_json = capabilities_to_json(&claim.offer).to_string();
    let kinds_json = serde_json::Value::from(claim.kinds.clone()).to_string();
    let mut hasher = DefaultHasher::new();
    (&offer_json, &kinds_json).hash(&mut hasher);
    let fingerprint = hasher.finish();
    let fresh = shared.runner_touches.lock().is_ok_and(|touches| {
        touches
            .get(&claim.runner)
            .is_some_and(|(seen, written_at)| {
                *seen == fingerprint && now.as_millis() - written_at < TOUCH_INTERVAL_MS
            })
    });
    let id = claim.runner.as_bytes().as_slice();
    let rows = if fresh {
        query(
            transaction,
            "SELECT labels, draining FROM runners WHERE id = $1 AND deleted_at IS NULL",
            &[&id],
        )
        .await?
    } else {
        query(
            transaction,
            "UPDATE runners SET last_seen_at = $2, offer = $3, kinds = $4 \
             WHERE id = $1 AND deleted_at IS NULL RETURNING labels, draining",
            &[&id, &now.as_millis(), &offer_json, &kinds_json],
        )
        .await?
    };
    let Some(row) = rows.first() else {
        return Ok(ClaimingRunner::Unknown(runner_not_found(claim.runner)));
    };
    if column::<bool>(row, 1)? {
        return Ok(ClaimingRunner::Draining);
    }
    let labels = labels_from_text(column(row, 0)?)?;
    if !fresh && let Ok(mut touches) = shared.runner_touches.lock() {
        touches.insert(claim.runner, (fingerprint, now.as_millis()));
    }
    Ok(ClaimingRunner::Ready(labels))
}

pub(super) async fn heartbeat(
    client: &impl GenericClient,
    beat: &RunnerBeat,
    now: Timestamp,
) -> Result<Vec<JobId>, StoreError> {
    let changed = execute(
        client,
        "UPDATE runners SET last_heartbeat_at = $2, last_seen_at = $2, draining = $3, \
         hostname = coalesce($4, hostname), version = coalesce($5, version) \
         WHERE id = $1 AND deleted_at IS NULL",
        &[
            &beat.runner.as_bytes().as_slice(),
            &now.as_millis(),
            &beat.draining,
            &beat.hostname,
            &beat.version,
        ],
    )
    .await?;
    if changed == 0 {
        return Err(runner_not_found(beat.runner));
    }
    if beat.jobs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Vec<u8>> = beat
        .jobs
        .iter()
        .map(|job| job.as_bytes().to_vec())
        .collect();
    let rows = query(
        client,
        "SELECT id, state, runner_id FROM jobs WHERE id = ANY($1)",
        &[&ids],
    )
    .await?;
    let mut held_here = std::collections::HashSet::new();
    for row in &rows {
        let state = JobState::from_code(i64::from(column::<i16>(row, 1)?));
        let holder = runner_id_column(row, 2)?;
        if holder == Some(beat.runner)
            && matches!(state, Some(JobState::Claimed | JobState::Running))
        {
            held_here.insert(job_id_column(row, 0)?);
        }
    }
    Ok(beat
        .jobs
        .iter()
        .filter(|job| !held_here.contains(job))
        .copied()
        .collect())
}
