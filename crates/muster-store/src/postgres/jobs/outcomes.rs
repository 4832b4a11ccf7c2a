//! The per-minute outcome totals (the overview's last hour), added up by every coordinator.

use deadpool_postgres::GenericClient;

use super::super::rows::column;
use super::super::{execute, query};
use crate::rules::outcomes::{merged_in_key_order, total};
use crate::{OutcomeCount, StoreError};

pub(in crate::postgres) async fn add(
    client: &impl GenericClient,
    counts: Vec<OutcomeCount>,
    forget_before_minute: i64,
) -> Result<(), StoreError> {
    let merged = merged_in_key_order(counts);
    if !merged.is_empty() {
        let minutes: Vec<i64> = merged.iter().map(|(minute, _, _)| *minute).collect();
        let outcomes: Vec<&str> = merged
            .iter()
            .map(|(_, outcome, _)| outcome.as_str())
            .collect();
        let counts: Vec<i64> = merged.iter().map(|(_, _, count)| *count).collect();
        // WITH ORDINALITY keeps the key order the rows were merged in, so concurrent adds lock
        // them in one order.
        execute(
            client,
            "INSERT INTO outcome_minutes (minute, outcome, count) \
             SELECT minute, outcome, count FROM unnest($1::bigint[], $2::text[], $3::bigint[]) \
             WITH ORDINALITY AS added (minute, outcome, count, position) ORDER BY position \
             ON CONFLICT (minute, outcome) DO UPDATE SET count = outcome_minutes.count + excluded.count",
            &[&minutes, &outcomes, &counts],
        )
        .await?;
    }
    execute(
        client,
        "DELETE FROM outcome_minutes WHERE minute < $1",
        &[&forget_before_minute],
    )
    .await?;
    Ok(())
}

pub(in crate::postgres) async fn totals(
    client: &impl GenericClient,
    first_minute: i64,
) -> Result<Vec<OutcomeCount>, StoreError> {
    let rows = query(
        client,
        "SELECT outcome, sum(count)::bigint FROM outcome_minutes WHERE minute >= $1 \
         GROUP BY outcome ORDER BY outcome",
        &[&first_minute],
    )
    .await?;
    rows.iter()
        .map(|row| Ok(total(first_minute, column(row, 0)?, column(row, 1)?)))
        .collect()
}
