//! The per-minute outcome totals: what every backend does to the counts it is given before
//! writing them.

use std::collections::BTreeMap;

use crate::OutcomeCount;

/// `counts` with each minute and outcome once (their counts summed), in the order of the
/// table's key: one upsert then never touches a row twice (PostgreSQL refuses that), and
/// coordinators adding at once lock the rows in the same order, so they cannot deadlock.
/// Counts are clamped to what a signed 64-bit column holds.
pub(crate) fn merged_in_key_order(counts: Vec<OutcomeCount>) -> Vec<(i64, String, i64)> {
    let mut merged: BTreeMap<(i64, String), u64> = BTreeMap::new();
    for count in counts {
        if count.count == 0 {
            continue;
        }
        let total = merged.entry((count.minute, count.outcome)).or_default();
        *total = total.saturating_add(count.count);
    }
    merged
        .into_iter()
        .map(|((minute, outcome), count)| {
            (minute, outcome, i64::try_from(count).unwrap_or(i64::MAX))
        })
        .collect()
}

/// One summed row as read back.
pub(crate) fn total(first_minute: i64, outcome: String, sum: i64) -> OutcomeCount {
    OutcomeCount {
        minute: first_minute,
        outcome,
        count: u64::try_from(sum).unwrap_or(0),
    }
}
