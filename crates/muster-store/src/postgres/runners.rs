//! Runner operations of the PostgreSQL backend.

use deadpool_postgres::{GenericClient, Transaction};
use muster_core::{JobId, JobLifecycle, JobRecord, RunnerId, RunnerRecord, Timestamp};
use tokio_postgres::Row;

use super::rows::{column, job_from_row, job_id_column, runner_id_column};
use super::{Shared, execute, query};
use crate::columns::{self, JOB_COLUMNS, runner_identity_columns};
use crate::encoding::{capabilities_to_json, string_map_to_json};
use crate::rules::paging;
use crate::rules::runners::{
    ClaimingRunner, Declaration, ReleaseCause, claiming_runner, jobs_to_stop, release_from_runner,
    runner_not_found,
};
use crate::{ClaimRequest, NewRunner, Page, PageRequest, RunnerBeat, RunnerFilter, StoreError};

/// The columns `runner_from_row` reads, from `runners` joined with `held` (leases per runner).
const RUNNER_COLUMNS: &str = concat!(
    "seq, id, name, organization_id, labels, kinds, offer, hostname, version, draining, \
     created_at, last_heartbeat_at, last_seen_at, coalesce(held.jobs, 0), ",
    runner_identity_columns!()
);

/// The jobs a runner holds, counted from its lease checks (every job it holds is in one of them;
/// they list a few seconds of its claims), each job confirmed on its row.
const HELD_JOBS: &str = "LEFT JOIN LATERAL (SELECT count(DISTINCT jobs.seq) AS jobs \
     FROM lease_checks CROSS JOIN LATERAL unnest(lease_checks.seqs) AS checked(seq) \
     JOIN jobs ON jobs.seq = checked.seq \
     WHERE lease_checks.runner_id = runners.id AND jobs.runner_id = runners.id \
       AND jobs.state IN (1, 2, 3)) held ON true";
/// In place of `HELD_JOBS` when the caller does not want the counts.
const HELD_JOBS_NOT_COUNTED: &str = "CROSS JOIN (SELECT 0::bigint AS jobs) held";

fn runner_from_row(row: &Row) -> Result<(i64, RunnerRecord), StoreError> {
    let (seq, record) = columns::runner_from_row(row)?;
    Ok((seq, record?))
}

pub(super) async fn create(
    client: &impl GenericClient,
    runner: &NewRunner,
) -> Result<(), StoreError> {
    execute(
        client,
        "INSERT INTO runners (id, name, organization_id, labels, token_hash, created_at, bound_capabilities) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &runner.id.as_bytes().as_slice(),
            &runner.name,
            &runner.organization_id,
            &string_map_to_json(&runner.labels).to_string(),
            &runner.token_hash.as_slice(),
            &runner.created_at.as_millis(),
            &runner
                .bound_capabilities
                .as_ref()
                .map(|bound| capabilities_to_json(bound).to_string()),
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
    filter: &RunnerFilter,
    page: &PageRequest,
    count_held_jobs: bool,
) -> Result<Page<RunnerRecord>, StoreError> {
    let held = if count_held_jobs {
        HELD_JOBS
    } else {
        HELD_JOBS_NOT_COUNTED
    };
    let sql = format!(
        "SELECT {RUNNER_COLUMNS} FROM runners {held} WHERE deleted_at IS NULL AND seq < $1 \
         AND ($3::text IS NULL OR organization_id = $3) ORDER BY seq DESC LIMIT $2"
    );
    let params = [paging::page_start_bound(page)?, paging::rows_to_read(page)];
    let rows = query(
        client,
        &sql,
        &[&params[0], &params[1], &filter.organization_id],
    )
    .await?;
    paging::page_from_rows(&rows, page, runner_from_row)
}

/// The live runner registered with the key of `fingerprint`.
pub(super) async fn by_key(
    client: &impl GenericClient,
    fingerprint: &str,
) -> Result<Option<RunnerRecord>, StoreError> {
    let sql = format!(
        "SELECT {RUNNER_COLUMNS} FROM runners {HELD_JOBS} \
         WHERE key_fingerprint = $1 AND deleted_at IS NULL"
    );
    let rows = query(client, &sql, &[&fingerprint]).await?;
    rows.first()
        .map(|row| runner_from_row(row).map(|(_, record)| record))
        .transpose()
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
    super::workloads::fail_workloads_of_deleted_runner(transaction, id, now).await?;
    release_held_jobs(transaction, id, ReleaseCause::Deleted, now).await
}

/// Release every job `id` holds (it was deleted or revoked); answers those released and
/// whether any went back to the queue.
pub(super) async fn release_held_jobs(
    transaction: &Transaction<'_>,
    id: RunnerId,
    cause: ReleaseCause,
    now: Timestamp,
) -> Result<(Vec<JobId>, bool), StoreError> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs \
         WHERE seq IN (SELECT unnest(seqs) FROM lease_checks WHERE runner_id = $1) \
           AND state IN (1, 2, 3) ORDER BY seq FOR UPDATE"
    );
    let rows = query(transaction, &sql, &[&id.as_bytes().as_slice()]).await?;
    let mut released: Vec<(i64, JobLifecycle, JobRecord)> = Vec::with_capacity(rows.len());
    for row in &rows {
        let (seq, mut job) = job_from_row(row)?;
        let before = job.lifecycle.clone();
        if release_from_runner(seq, &mut job, id, cause, now) {
            released.push((seq, before, job));
        }
    }
    let requeued = super::jobs::write_back_and_wake(transaction, &released, now).await?;
    Ok((
        released.iter().map(|(_, _, job)| job.id).collect(),
        requeued,
    ))
}

/// Record that a runner is claiming and what it declared, and answer whether it may, and its
/// organization (`None`: cluster-scoped). Rewrites the runner row only when the declaration
/// changed or a second passed since this coordinator last wrote it. An error here is the
/// transaction's; an unknown runner is an answer.
pub(super) async fn touch_runner(
    transaction: &Transaction<'_>,
    shared: &Shared,
    claim: &ClaimRequest,
    now: Timestamp,
) -> Result<(ClaimingRunner, Option<String>), StoreError> {
    let declaration = Declaration::of(claim);
    let needs_write = shared.runner_touches.lock().map_or(true, |touches| {
        touches.needs_write(claim.runner, &declaration, now)
    });
    let id = claim.runner.as_bytes().as_slice();
    let rows = if needs_write {
        query(
            transaction,
            "UPDATE runners SET last_seen_at = $2, offer = $3, kinds = $4 \
             WHERE id = $1 AND deleted_at IS NULL RETURNING labels, draining, organization_id",
            &[
                &id,
                &now.as_millis(),
                &declaration.offer_json,
                &declaration.kinds_json,
            ],
        )
        .await?
    } else {
        query(
            transaction,
            "SELECT labels, draining, organization_id FROM runners \
             WHERE id = $1 AND deleted_at IS NULL",
            &[&id],
        )
        .await?
    };
    let (row, organization) = match rows.first() {
        Some(row) => (
            Some((column(row, 0)?, column(row, 1)?)),
            column::<Option<String>>(row, 2)?,
        ),
        None => (None, None),
    };
    let claiming = claiming_runner(claim.runner, row)?;
    if needs_write
        && matches!(claiming, ClaimingRunner::Ready(_))
        && let Ok(mut touches) = shared.runner_touches.lock()
    {
        touches.written(claim.runner, &declaration, now);
    }
    Ok((claiming, organization))
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
    let mut found = Vec::with_capacity(rows.len());
    for row in &rows {
        found.push((
            job_id_column(row, 0)?,
            i64::from(column::<i16>(row, 1)?),
            runner_id_column(row, 2)?,
        ));
    }
    Ok(jobs_to_stop(beat.runner, &beat.jobs, found))
}
