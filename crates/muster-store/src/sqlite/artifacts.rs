//! Artifact records of the SQLite backend: who made the coordinator store which bytes, and the
//! running totals the upload quotas read (kept by the triggers of schema migration 4).

use muster_core::{ArtifactId, RunnerId};
use rusqlite::{Connection, OptionalExtension, params};

use super::map_sqlite_error;
use super::writer::WriterContext;
use crate::rules::artifacts::{
    ALL_ARTIFACTS_KEY, artifact_record_from_columns, artifact_size_column,
    artifact_uploaders_from_rows, artifact_usage_report,
};
use crate::{ArtifactRecord, ArtifactUsage, ArtifactUsageReport, StoreError};

pub(super) fn record(
    context: &mut WriterContext,
    record: &ArtifactRecord,
) -> Result<(), StoreError> {
    let size = artifact_size_column(record.size)?;
    let runner = record.uploader.runner();
    context
        .conn
        .prepare_cached(
            "INSERT INTO artifacts (id, size, runner_id, created_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (id) DO UPDATE SET size = excluded.size, runner_id = excluded.runner_id, \
             created_at = excluded.created_at",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                record.id.digest().as_slice(),
                size,
                runner.as_ref().map(|runner| runner.as_bytes().as_slice()),
                record.created_at.as_millis(),
            ])
        })
        .map_err(map_sqlite_error)?;
    Ok(())
}

pub(super) fn take(
    context: &mut WriterContext,
    id: ArtifactId,
) -> Result<Option<ArtifactRecord>, StoreError> {
    let row = context
        .conn
        .prepare_cached(
            "DELETE FROM artifacts WHERE id = ?1 RETURNING id, size, runner_id, created_at",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![id.digest().as_slice()], |row| {
                    Ok((
                        row.get::<_, Vec<u8>>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Option<Vec<u8>>>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                })
                .optional()
        })
        .map_err(map_sqlite_error)?;
    row.map(|(id, size, runner, created_at)| {
        artifact_record_from_columns(&id, size, runner.as_deref(), created_at)
    })
    .transpose()
}

pub(super) fn usage(
    conn: &Connection,
    runner: Option<RunnerId>,
) -> Result<ArtifactUsageReport, StoreError> {
    let runner_key: Vec<u8> = runner.map_or_else(Vec::new, |runner| runner.as_bytes().to_vec());
    let mut statement = conn
        .prepare_cached(
            "SELECT uploader, bytes, count FROM artifact_usage WHERE uploader IN (?1, ?2)",
        )
        .map_err(map_sqlite_error)?;
    let rows = statement
        .query_map(params![ALL_ARTIFACTS_KEY, runner_key], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .map_err(map_sqlite_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_sqlite_error)?;
    Ok(artifact_usage_report(rows, runner))
}

pub(super) fn largest_uploaders(
    conn: &Connection,
    limit: u32,
) -> Result<Vec<(RunnerId, ArtifactUsage)>, StoreError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT uploader, bytes, count FROM artifact_usage WHERE uploader <> ?1 \
             ORDER BY bytes DESC, uploader LIMIT ?2",
        )
        .map_err(map_sqlite_error)?;
    let rows = statement
        .query_map(params![ALL_ARTIFACTS_KEY, i64::from(limit)], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .map_err(map_sqlite_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_sqlite_error)?;
    artifact_uploaders_from_rows(rows)
}

pub(super) fn grant(
    context: &mut WriterContext,
    organization: &str,
    ids: &[ArtifactId],
) -> Result<(), StoreError> {
    let mut statement = context
        .conn
        .prepare_cached(
            "INSERT INTO artifact_organizations (artifact_id, organization_id) \
             SELECT id, ?2 FROM artifacts WHERE id = ?1 ON CONFLICT DO NOTHING",
        )
        .map_err(map_sqlite_error)?;
    for id in ids {
        statement
            .execute(params![id.digest().as_slice(), organization])
            .map_err(map_sqlite_error)?;
    }
    Ok(())
}

pub(super) fn granted(
    conn: &Connection,
    organization: &str,
    id: ArtifactId,
) -> Result<bool, StoreError> {
    conn.prepare_cached(
        "SELECT 1 FROM artifact_organizations WHERE artifact_id = ?1 AND organization_id = ?2",
    )
    .and_then(|mut statement| {
        statement
            .query_row(params![id.digest().as_slice(), organization], |_| Ok(()))
            .optional()
    })
    .map(|found| found.is_some())
    .map_err(map_sqlite_error)
}

/// A runner's leased jobs are found through the reaper's index of leased jobs (in flight, so
/// few), and their inputs and outputs hold artifact ids as text.
pub(super) fn runner_may_read(
    conn: &Connection,
    runner: RunnerId,
    id: ArtifactId,
) -> Result<bool, StoreError> {
    let pattern = crate::rules::artifacts::named_in_json_pattern(id);
    conn.prepare_cached(
        "SELECT 1 FROM artifacts WHERE id = ?1 AND runner_id = ?2 \
         UNION ALL \
         SELECT 1 FROM jobs INDEXED BY jobs_leased WHERE state IN (1, 2, 3) AND runner_id = ?2 \
         AND (inputs LIKE ?3 OR outputs LIKE ?3) \
         LIMIT 1",
    )
    .and_then(|mut statement| {
        statement
            .query_row(
                params![
                    id.digest().as_slice(),
                    runner.as_bytes().as_slice(),
                    pattern
                ],
                |_| Ok(()),
            )
            .optional()
    })
    .map(|found| found.is_some())
    .map_err(map_sqlite_error)
}
