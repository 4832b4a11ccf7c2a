//! Artifact records of the PostgreSQL backend: who made the coordinators store which bytes,
//! and the running totals the upload quotas read (kept by the trigger of store migration 4).
//! Each operation is one statement; the trigger runs in its transaction.

use deadpool_postgres::GenericClient;
use muster_core::{ArtifactId, RunnerId};
use tokio_postgres::Row;

use super::rows::column;
use super::{execute, query};
use crate::rules::artifacts::{
    ALL_ARTIFACTS_KEY, artifact_record_from_columns, artifact_size_column,
    artifact_uploaders_from_rows, artifact_usage_report,
};
use crate::{ArtifactRecord, ArtifactUsage, ArtifactUsageReport, StoreError};

pub(super) async fn record(
    client: &impl GenericClient,
    record: &ArtifactRecord,
) -> Result<(), StoreError> {
    let size = artifact_size_column(record.size)?;
    let runner = record.uploader.runner();
    execute(
        client,
        "INSERT INTO artifacts (id, size, runner_id, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET size = excluded.size, runner_id = excluded.runner_id, \
         created_at = excluded.created_at",
        &[
            &record.id.digest().as_slice(),
            &size,
            &runner.as_ref().map(|runner| runner.as_bytes().as_slice()),
            &record.created_at.as_millis(),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn take(
    client: &impl GenericClient,
    id: ArtifactId,
) -> Result<Option<ArtifactRecord>, StoreError> {
    let rows = query(
        client,
        "DELETE FROM artifacts WHERE id = $1 RETURNING id, size, runner_id, created_at",
        &[&id.digest().as_slice()],
    )
    .await?;
    rows.first()
        .map(|row| {
            artifact_record_from_columns(
                column(row, 0)?,
                column(row, 1)?,
                column(row, 2)?,
                column(row, 3)?,
            )
        })
        .transpose()
}

fn usage_row(row: &Row) -> Result<(Vec<u8>, i64, i64), StoreError> {
    Ok((column(row, 0)?, column(row, 1)?, column(row, 2)?))
}

pub(super) async fn usage(
    client: &impl GenericClient,
    runner: Option<RunnerId>,
) -> Result<ArtifactUsageReport, StoreError> {
    let runner_key: &[u8] = runner
        .as_ref()
        .map_or(ALL_ARTIFACTS_KEY, |runner| runner.as_bytes().as_slice());
    let rows = query(
        client,
        "SELECT uploader, bytes, count FROM artifact_usage WHERE uploader IN ($1, $2)",
        &[&ALL_ARTIFACTS_KEY, &runner_key],
    )
    .await?;
    let rows = rows.iter().map(usage_row).collect::<Result<Vec<_>, _>>()?;
    Ok(artifact_usage_report(rows, runner))
}

pub(super) async fn largest_uploaders(
    client: &impl GenericClient,
    limit: u32,
) -> Result<Vec<(RunnerId, ArtifactUsage)>, StoreError> {
    let rows = query(
        client,
        "SELECT uploader, bytes, count FROM artifact_usage WHERE uploader <> $1 \
         ORDER BY bytes DESC, uploader LIMIT $2",
        &[&ALL_ARTIFACTS_KEY, &i64::from(limit)],
    )
    .await?;
    let rows = rows.iter().map(usage_row).collect::<Result<Vec<_>, _>>()?;
    artifact_uploaders_from_rows(rows)
}

pub(super) async fn grant(
    client: &impl GenericClient,
    organization: &str,
    ids: &[ArtifactId],
) -> Result<(), StoreError> {
    let digests: Vec<Vec<u8>> = ids.iter().map(|id| id.digest().to_vec()).collect();
    execute(
        client,
        "INSERT INTO artifact_organizations (artifact_id, organization_id) \
         SELECT id, $2 FROM artifacts WHERE id = ANY($1) ON CONFLICT DO NOTHING",
        &[&digests, &organization],
    )
    .await?;
    Ok(())
}

pub(super) async fn granted(
    client: &impl GenericClient,
    organization: &str,
    id: ArtifactId,
) -> Result<bool, StoreError> {
    let rows = query(
        client,
        "SELECT 1 FROM artifact_organizations WHERE artifact_id = $1 AND organization_id = $2",
        &[&id.digest().as_slice(), &organization],
    )
    .await?;
    Ok(!rows.is_empty())
}

/// A runner's leased jobs are those its lease checks list (a few seconds of claims), and their
/// inputs and outputs hold artifact ids as text.
pub(super) async fn runner_may_read(
    client: &impl GenericClient,
    runner: RunnerId,
    id: ArtifactId,
) -> Result<bool, StoreError> {
    let pattern = crate::rules::artifacts::named_in_json_pattern(id);
    let rows = query(
        client,
        "SELECT 1 FROM artifacts WHERE id = $1 AND runner_id = $2 \
         UNION ALL \
         (SELECT 1 FROM jobs \
          WHERE seq IN (SELECT unnest(seqs) FROM lease_checks WHERE runner_id = $2) \
          AND runner_id = $2 AND state IN (1, 2, 3) AND (inputs LIKE $3 OR outputs LIKE $3)) \
         LIMIT 1",
        &[
            &id.digest().as_slice(),
            &runner.as_bytes().as_slice(),
            &pattern,
        ],
    )
    .await?;
    Ok(!rows.is_empty())
}
