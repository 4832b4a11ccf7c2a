//! The per-minute outcome totals (the overview's last hour).

use rusqlite::{Connection, params};

use super::super::map_sqlite_error;
use super::super::writer::WriterContext;
use crate::rules::outcomes::{merged_in_key_order, total};
use crate::{OutcomeCount, StoreError};

pub(in crate::sqlite) fn add(
    context: &mut WriterContext,
    counts: Vec<OutcomeCount>,
    forget_before_minute: i64,
) -> Result<(), StoreError> {
    let conn = &context.conn;
    {
        let mut insert = conn
            .prepare_cached(
                "INSERT INTO outcome_minutes (minute, outcome, count) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (minute, outcome) DO UPDATE SET count = count + excluded.count",
            )
            .map_err(map_sqlite_error)?;
        for (minute, outcome, count) in merged_in_key_order(counts) {
            insert
                .execute(params![minute, outcome, count])
                .map_err(map_sqlite_error)?;
        }
    }
    conn.prepare_cached("DELETE FROM outcome_minutes WHERE minute < ?1")
        .and_then(|mut statement| statement.execute(params![forget_before_minute]))
        .map_err(map_sqlite_error)?;
    Ok(())
}

pub(in crate::sqlite) fn totals(
    conn: &Connection,
    first_minute: i64,
) -> Result<Vec<OutcomeCount>, StoreError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT outcome, sum(count) FROM outcome_minutes WHERE minute >= ?1 \
             GROUP BY outcome ORDER BY outcome",
        )
        .map_err(map_sqlite_error)?;
    let rows = statement
        .query_map(params![first_minute], |row| {
            Ok(total(first_minute, row.get(0)?, row.get(1)?))
        })
        .map_err(map_sqlite_error)?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(map_sqlite_error)
}
