//! A job's log: appending within the job's byte cap (past it, one truncation notice and then
//! nothing), resent entries stored once, and reading the log back in pages.
//!
//! An append is planned here and written by the backend: it reads the log's counters from the
//! job's row and looks up which of the slots [`slots_to_check`] names are stored, then
//! [`plan_append`] says which rows to insert and what the counters become. The backend holds the
//! job's row (the SQLite writer, a PostgreSQL row lock) from the read to the write, so nothing
//! moves in between.

use std::collections::HashSet;

use muster_core::{JobId, LogEntry, LogLevel, NewLogEntry, Timestamp};
use serde_json::Value;

use crate::encoding::level_from_code;
use crate::{LogPosition, LogSearch, LogSearchPage, StoreError};

/// Where a job's log stands, as kept on the job's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogCounters {
    /// The `seq` the next entry without one gets; every stored entry is below it.
    pub(crate) next_seq: i64,
    /// Bytes of the stored entries, counted against the cap.
    pub(crate) bytes: i64,
    /// Whether the truncation notice is stored: nothing is stored after it.
    pub(crate) truncated: bool,
}

/// A row to insert into a job's log (its time is the call's).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogRow {
    pub(crate) seq: i64,
    pub(crate) level: LogLevel,
    pub(crate) message: String,
    /// JSON text.
    pub(crate) metadata: Option<String>,
}

/// What one append writes: rows to insert, in order, and the counters after them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogAppend {
    pub(crate) rows: Vec<LogRow>,
    pub(crate) counters: LogCounters,
}

/// The warning that takes the place of the first log entry past a job's cap.
pub(crate) fn truncation_notice(cap_bytes: i64) -> String {
    format!(
        "log truncated: this job's log reached its cap of {cap_bytes} bytes and later entries were dropped"
    )
}

/// The slots below the log's `next_seq` that `entries` name, each once, in order: an entry
/// resent, or one filling a gap late. What such an entry does depends on whether its slot is
/// stored, so the backend looks these up before [`plan_append`].
pub(crate) fn slots_to_check(counters: LogCounters, entries: &[NewLogEntry]) -> Vec<i64> {
    let mut slots: Vec<i64> = entries
        .iter()
        .filter_map(|entry| entry.seq)
        .filter_map(|seq| i64::try_from(seq).ok())
        .filter(|seq| *seq < counters.next_seq)
        .collect();
    slots.sort_unstable();
    slots.dedup();
    slots
}

/// Plan appending `entries` to a log standing at `counters`, where `stored` holds those of the
/// [`slots_to_check`] that are taken. An entry without a `seq` gets the next one; one with a
/// `seq` keeps it, and a `seq` at or past `next_seq` moves `next_seq` past it. An entry whose
/// slot is taken (stored, or by an earlier entry of the call) is skipped: the first version
/// stays. Every entry counts against the cap, late ones too, or out-of-order sequence numbers
/// would get past it; the first entry over the cap is replaced by the truncation notice, and
/// nothing after the notice is stored. Refused, before anything is written, when a `seq` does
/// not fit the store.
pub(crate) fn plan_append(
    counters: LogCounters,
    cap_bytes: u64,
    entries: Vec<NewLogEntry>,
    stored: &HashSet<i64>,
) -> Result<LogAppend, StoreError> {
    let cap = i64::try_from(cap_bytes).unwrap_or(i64::MAX);
    let LogCounters {
        mut next_seq,
        mut bytes,
        mut truncated,
    } = counters;
    let mut rows = Vec::with_capacity(entries.len());
    // Slots this call fills: a later entry of the call naming one is skipped like a stored one.
    let mut planned: HashSet<i64> = HashSet::with_capacity(entries.len());
    for entry in entries {
        let entry_seq = match entry.seq {
            Some(seq) => i64::try_from(seq)
                .map_err(|_| StoreError::Rejected(format!("log seq {seq} is too large")))?,
            None => next_seq,
        };
        let late = entry.seq.is_some() && entry_seq < next_seq;
        if late {
            if truncated || stored.contains(&entry_seq) || planned.contains(&entry_seq) {
                continue;
            }
        } else {
            next_seq = entry_seq + 1;
            if truncated {
                continue;
            }
        }
        let weight = entry.weight() as i64;
        let row = if bytes + weight > cap {
            truncated = true;
            LogRow {
                seq: entry_seq,
                level: LogLevel::Warn,
                message: truncation_notice(cap),
                metadata: None,
            }
        } else {
            bytes += weight;
            LogRow {
                seq: entry_seq,
                level: entry.level,
                metadata: entry.metadata.as_ref().map(Value::to_string),
                message: entry.message,
            }
        };
        planned.insert(entry_seq);
        rows.push(row);
    }
    Ok(LogAppend {
        rows,
        counters: LogCounters {
            next_seq,
            bytes,
            truncated,
        },
    })
}

/// The first log `seq` a read after `after_seq` returns (0 when reading from the start).
pub(crate) fn first_log_seq_after(after_seq: Option<u64>) -> i64 {
    after_seq
        .map_or(0, |after| after.saturating_add(1))
        .min(i64::MAX as u64) as i64
}

/// Where the next read of a job's log continues after a page of `items` that started at
/// `first`: past the page's last entry, or, when the page is empty, at the job's next unwritten
/// `seq` (`stored_next_seq`) if that is lower. So an answer never passes what is stored, however
/// far ahead the caller's cursor was: a follower resuming from it sees the entries written next.
pub(crate) fn next_log_seq(
    items: &[LogEntry],
    first: i64,
    stored_next_seq: impl FnOnce() -> Result<i64, StoreError>,
) -> Result<u64, StoreError> {
    match items.last() {
        Some(entry) => Ok(entry.seq + 1),
        None => Ok(first.min(stored_next_seq()?).max(0) as u64),
    }
}

/// `text` as a `LIKE` pattern that matches messages containing it, a backslash escaping `%`, `_`
/// and itself: the same pattern for both backends (SQLite's `LIKE` and PostgreSQL's `ILIKE`
/// compare ASCII letters without case).
pub(crate) fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for character in text.chars() {
        if matches!(character, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(character);
    }
    pattern.push('%');
    pattern
}

/// The `seq` range a search looks at: from the first after `after_seq`, `window` entries.
pub(crate) fn search_range(search: &LogSearch) -> (i64, i64) {
    let first = first_log_seq_after(search.after_seq);
    let last = first.saturating_add(i64::try_from(search.window.max(1)).unwrap_or(i64::MAX) - 1);
    (first, last)
}

/// A search's answer from its matches: the next call goes on past the last match when the page
/// is full, else past the window, and never past what is stored (`stored_next_seq`).
pub(crate) fn search_page(
    items: Vec<LogEntry>,
    search: &LogSearch,
    stored_next_seq: i64,
) -> LogSearchPage {
    let (_, last) = search_range(search);
    let stored_next_seq = stored_next_seq.max(0);
    let next_seq = match items.last() {
        Some(entry) if items.len() >= search.limit as usize => entry.seq + 1,
        _ => last.saturating_add(1).min(stored_next_seq).max(0) as u64,
    };
    LogSearchPage {
        items,
        next_seq,
        log_next_seq: stored_next_seq as u64,
    }
}

/// A stored log row read back: `seq`, time, level code, message, metadata as JSON text (which,
/// should it not parse, is left out rather than failing the read).
pub(crate) fn log_entry_from_columns(
    seq: i64,
    ts: i64,
    level_code: i64,
    message: String,
    metadata: Option<&str>,
) -> LogEntry {
    LogEntry {
        seq: seq as u64,
        ts: Timestamp(ts),
        level: level_from_code(level_code),
        message,
        metadata: metadata.and_then(|text| serde_json::from_str(text).ok()),
    }
}

/// Where a job's log stands, read back as its next `seq` and whether the job is finished.
pub(crate) fn log_position(job: JobId, next_seq: i64, finished: bool) -> LogPosition {
    LogPosition {
        job,
        next_seq: next_seq.max(0) as u64,
        finished,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: Option<u64>, message: &str) -> NewLogEntry {
        NewLogEntry {
            seq,
            level: LogLevel::Info,
            message: message.to_string(),
            metadata: None,
        }
    }

    fn fresh() -> LogCounters {
        LogCounters {
            next_seq: 0,
            bytes: 0,
            truncated: false,
        }
    }

    fn seqs_and_messages(append: &LogAppend) -> Vec<(i64, &str)> {
        append
            .rows
            .iter()
            .map(|row| (row.seq, row.message.as_str()))
            .collect()
    }

    #[test]
    fn entries_without_a_seq_continue_after_the_highest_one_given() {
        let entries = vec![entry(Some(4), "four"), entry(None, "five")];
        let append = plan_append(fresh(), 1_000, entries, &HashSet::new()).expect("a plan");
        assert_eq!(seqs_and_messages(&append), vec![(4, "four"), (5, "five")]);
        assert_eq!(
            append.counters,
            LogCounters {
                next_seq: 6,
                bytes: 8,
                truncated: false
            }
        );
    }

    #[test]
    fn metadata_is_stored_as_json_and_counts_against_the_cap() {
        let mut with_metadata = entry(None, "disk");
        with_metadata.metadata = Some(serde_json::json!({"free_gb": 3}));
        let append =
            plan_append(fresh(), 1_000, vec![with_metadata], &HashSet::new()).expect("a plan");
        assert_eq!(append.rows[0].metadata.as_deref(), Some(r#"{"free_gb":3}"#));
        assert_eq!(append.counters.bytes, 4 + 13);
    }

    #[test]
    fn resent_entries_are_skipped_whether_stored_or_sent_twice_in_one_call() {
        let counters = LogCounters {
            next_seq: 3,
            bytes: 3,
            truncated: false,
        };
        let entries = vec![
            entry(Some(1), "one again"),
            entry(Some(2), "two, late"),
            entry(Some(2), "two again"),
            entry(Some(3), "three"),
            entry(Some(3), "three again"),
        ];
        assert_eq!(slots_to_check(counters, &entries), vec![1, 2]);
        let stored = HashSet::from([0, 1]);
        let append = plan_append(counters, 1_000, entries, &stored).expect("a plan");
        assert_eq!(
            seqs_and_messages(&append),
            vec![(2, "two, late"), (3, "three")]
        );
        assert_eq!(append.counters.next_seq, 4);
        assert_eq!(append.counters.bytes, 3 + 9 + 5);
    }

    #[test]
    fn the_first_entry_over_the_cap_becomes_the_notice_and_nothing_follows_it() {
        let entries = (0..5).map(|_| entry(None, "0123456789")).collect();
        let append = plan_append(fresh(), 25, entries, &HashSet::new()).expect("a plan");
        assert_eq!(append.rows.len(), 3);
        assert_eq!(append.rows[2].level, LogLevel::Warn);
        assert_eq!(append.rows[2].message, truncation_notice(25));
        assert_eq!(append.rows[2].seq, 2);
        assert_eq!(
            append.counters,
            LogCounters {
                next_seq: 5,
                bytes: 20,
                truncated: true
            },
            "dropped entries still take their seq"
        );
        let after = plan_append(
            append.counters,
            25,
            vec![entry(None, "x"), entry(Some(3), "y")],
            &HashSet::new(),
        )
        .expect("a plan");
        assert!(after.rows.is_empty(), "nothing after the notice");
        assert_eq!(after.counters.next_seq, 6);
    }

    #[test]
    fn late_entries_filling_a_gap_count_against_the_cap() {
        // The highest seq first, then the gap below it.
        let first = plan_append(
            fresh(),
            25,
            vec![entry(Some(9), "0123456789")],
            &HashSet::new(),
        )
        .expect("a plan");
        let gap: Vec<NewLogEntry> = (0..9).map(|seq| entry(Some(seq), "0123456789")).collect();
        assert_eq!(
            slots_to_check(first.counters, &gap),
            (0..9).collect::<Vec<_>>()
        );
        let filled = plan_append(first.counters, 25, gap, &HashSet::from([9])).expect("a plan");
        assert_eq!(
            seqs_and_messages(&filled),
            vec![(0, "0123456789"), (1, truncation_notice(25).as_str())]
        );
        assert_eq!(
            filled.counters,
            LogCounters {
                next_seq: 10,
                bytes: 20,
                truncated: true
            }
        );
    }

    #[test]
    fn a_seq_the_store_cannot_hold_is_refused() {
        let refused = plan_append(
            fresh(),
            1_000,
            vec![entry(None, "fine"), entry(Some(u64::MAX), "too far")],
            &HashSet::new(),
        );
        assert!(
            matches!(refused, Err(StoreError::Rejected(_))),
            "{refused:?}"
        );
        assert!(slots_to_check(fresh(), &[entry(Some(u64::MAX), "x")]).is_empty());
    }

    #[test]
    fn a_cap_past_what_the_store_counts_is_no_cap() {
        let append = plan_append(fresh(), u64::MAX, vec![entry(None, "a")], &HashSet::new())
            .expect("a plan");
        assert_eq!(append.rows.len(), 1);
        assert!(!append.counters.truncated);
    }

    #[test]
    fn reads_continue_past_the_page_or_at_what_is_stored() {
        assert_eq!(first_log_seq_after(None), 0);
        assert_eq!(first_log_seq_after(Some(4)), 5);
        assert_eq!(first_log_seq_after(Some(u64::MAX)), i64::MAX);
        let page = vec![log_entry_from_columns(7, 1, 2, "seven".into(), None)];
        let unread = || {
            Err(StoreError::Internal(
                "not read for a page with entries".into(),
            ))
        };
        assert_eq!(next_log_seq(&page, 5, unread), Ok(8));
        assert_eq!(
            next_log_seq(&[], 1_000, || Ok(3)),
            Ok(3),
            "never past what is stored"
        );
        assert_eq!(next_log_seq(&[], 2, || Ok(3)), Ok(2));
    }

    #[test]
    fn stored_rows_read_back_with_unparsable_metadata_left_out() {
        let entry = log_entry_from_columns(1, 5, 3, "m".into(), Some("{"));
        assert_eq!(entry.level, LogLevel::Warn);
        assert_eq!(entry.metadata, None);
        let entry = log_entry_from_columns(1, 5, 3, "m".into(), Some("[1]"));
        assert_eq!(entry.metadata, Some(serde_json::json!([1])));
        assert_eq!(
            log_position(JobId::new(Timestamp(0), 1), -1, true).next_seq,
            0
        );
    }
}
