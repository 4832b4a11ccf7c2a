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
