//! Job logs: sequence numbers from zero, resent entries stored once, paging by `after_seq`, and a
//! per-job byte cap past which entries are dropped after exactly one truncation notice.

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, ensure};
use muster_core::{JobState, LogLevel};
use muster_store::Store;

use super::{
    OpenedStore, T0, at, call_for, claim_one, log_entry, policy, register_runner, spec_with_policy,
    submit_one,
};

fn messages(page: &muster_store::LogPage) -> Vec<(u64, String)> {
    page.items
        .iter()
        .map(|entry| (entry.seq, entry.message.clone()))
        .collect()
}

pub async fn log_entries_resent_with_their_seq_are_stored_once(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(store, spec_with_policy("chatty", policy(3, 600, 30, 1)), T0).await?;
    let runner = register_runner(store, "chatty").await?;
    let claimed = claim_one(store, runner, "chatty", at(1_000)).await?;
    let call = call_for(&claimed, runner);

    let first = store
        .append_logs(
            call,
            vec![
                log_entry(Some(0), "zero"),
                log_entry(Some(1), "one"),
                log_entry(Some(2), "two"),
            ],
            at(2_000),
        )
        .await?;
    ensure!(
        first.next_seq == 3,
        "next_seq after 0..=2 is 3, got {}",
        first.next_seq
    );

    // A retried batch overlapping the first: only seq 3 is new.
    let resent = store
        .append_logs(
            call,
            vec![
                log_entry(Some(1), "one again"),
                log_entry(Some(2), "two again"),
                log_entry(Some(3), "three"),
            ],
            at(3_000),
        )
        .await?;
    ensure!(resent.next_seq == 4, "got {}", resent.next_seq);
    let exact_repeat = store
        .append_logs(call, vec![log_entry(Some(3), "three again")], at(3_500))
        .await?;
    ensure!(exact_repeat.next_seq == 4, "a full resend moves nothing");

    // Entries without a seq continue after the highest one given.
    let unnumbered = store
        .append_logs(
            call,
            vec![log_entry(None, "four"), log_entry(None, "five")],
            at(4_000),
        )
        .await?;
    ensure!(unnumbered.next_seq == 6);

    let page = store.read_logs(job.id, None, 100).await?;
    let expected: Vec<(u64, String)> = [
        (0, "zero"),
        (1, "one"),
        (2, "two"),
        (3, "three"),
        (4, "four"),
        (5, "five"),
    ]
    .into_iter()
    .map(|(seq, message)| (seq, message.to_string()))
    .collect();
    ensure!(
        messages(&page) == expected,
        "each entry once, first version kept: {:?}",
        messages(&page)
    );
    ensure!(page.next_seq == 6);
    ensure!(!page.job_finished);
    Ok(())
}

pub async fn next_seq_starts_at_zero_and_read_logs_pages_by_after_seq(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(
        store,
        spec_with_policy("paged-log", policy(3, 600, 30, 1)),
        T0,
    )
    .await?;
    let empty = store.read_logs(job.id, None, 10).await?;
    ensure!(empty.items.is_empty());
    ensure!(
        empty.next_seq == 0,
        "an empty log reads from 0, got {}",
        empty.next_seq
    );

    let runner = register_runner(store, "pager").await?;
    let claimed = claim_one(store, runner, "paged-log", at(1_000)).await?;
    let call = call_for(&claimed, runner);
    let ack = store
        .job_heartbeat(call, None, Vec::new(), at(1_500))
        .await?;
    ensure!(ack.next_seq == 0, "nothing logged yet: {}", ack.next_seq);

    let events = vec![log_entry(None, "event a"), log_entry(None, "event b")];
    let ack = store.job_heartbeat(call, None, events, at(2_000)).await?;
    ensure!(
        ack.next_seq == 2,
        "heartbeat events are logged: {}",
        ack.next_seq
    );
    let mut warn = log_entry(None, "careful");
    warn.level = LogLevel::Warn;
    warn.metadata = Some(serde_json::json!({"disk_free_gb": 3}));
    let ack = store
        .append_logs(call, vec![warn, log_entry(None, "last")], at(3_000))
        .await?;
    ensure!(ack.next_seq == 4);

    let mut seen = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let page = store.read_logs(job.id, after, 1).await?;
        if page.items.is_empty() {
            break;
        }
        ensure!(page.items.len() == 1, "limit 1 gives one entry");
        ensure!(page.next_seq == page.items[0].seq + 1);
        seen.push(page.items[0].clone());
        after = Some(page.next_seq - 1);
    }
    let seqs: Vec<u64> = seen.iter().map(|entry| entry.seq).collect();
    ensure!(
        seqs == vec![0, 1, 2, 3],
        "paging walks every entry once: {seqs:?}"
    );
    ensure!(seen[0].message == "event a" && seen[1].message == "event b");
    ensure!(seen[2].level == LogLevel::Warn);
    ensure!(seen[2].metadata == Some(serde_json::json!({"disk_free_gb": 3})));
    ensure!(
        seen[2].ts == at(3_000),
        "entries carry the time they were stored"
    );

    let tail = store.read_logs(job.id, Some(1), 100).await?;
    ensure!(
        tail.items.iter().map(|entry| entry.seq).collect::<Vec<_>>() == vec![2, 3],
        "after_seq is exclusive"
    );

    store
        .complete_job(
            call,
            serde_json::json!(null),
            super::no_outputs(),
            at(4_000),
        )
        .await?;
    let finished = store.read_logs(job.id, Some(3), 100).await?;
    ensure!(finished.items.is_empty());
    ensure!(finished.job_finished, "the log says when it will not grow");
    Ok(())
}

/// The cap the log-cap test opens its store with, in bytes of message text.
pub const SMALL_LOG_CAP: u64 = 100;

pub async fn entries_past_the_log_cap_are_dropped_after_one_truncation_notice<F, Fut>(
    open_with_log_cap: F,
) -> anyhow::Result<()>
where
    F: FnOnce(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<OpenedStore>>,
{
    let opened = open_with_log_cap(SMALL_LOG_CAP)
        .await
        .context("open a store with a small log cap")?;
    let store = opened.store.as_ref();
    let job = submit_one(
        store,
        spec_with_policy("verbose", policy(3, 600, 30, 1)),
        T0,
    )
    .await?;
    let runner = register_runner(store, "verbose").await?;
    let claimed = claim_one(store, runner, "verbose", at(1_000)).await?;
    let call = call_for(&claimed, runner);

    // 30 bytes each: three fit in 100 bytes, the fourth does not.
    let line = |index: usize| format!("line {index:02} {}", "x".repeat(22));
    ensure!(line(0).len() == 30);
    for batch in 0..3 {
        let entries = (0..4)
            .map(|offset| log_entry(None, &line(batch * 4 + offset)))
            .collect();
        store
            .append_logs(call, entries, at(2_000 + batch as i64))
            .await?;
    }
    // A heartbeat's events are log entries too and are capped the same way.
    store
        .job_heartbeat(call, None, vec![log_entry(None, &line(99))], at(3_000))
        .await?;

    let page = store.read_logs(job.id, None, 1_000).await?;
    let kept: Vec<&str> = page
        .items
        .iter()
        .filter(|entry| entry.level != LogLevel::Warn)
        .map(|entry| entry.message.as_str())
        .collect();
    ensure!(
        kept == vec![line(0), line(1), line(2)],
        "the entries within the cap are kept: {kept:?}"
    );
    let notices: Vec<_> = page
        .items
        .iter()
        .filter(|entry| entry.level == LogLevel::Warn)
        .collect();
    ensure!(
        notices.len() == 1,
        "exactly one truncation notice, got {notices:?}"
    );
    ensure!(
        notices[0].message.to_lowercase().contains("truncat"),
        "the notice says the log was truncated: {}",
        notices[0].message
    );
    ensure!(
        page.items.last().map(|entry| entry.level) == Some(LogLevel::Warn),
        "nothing is stored after the notice"
    );
    ensure!(page.items.len() == 4);

    let done = store
        .complete_job(
            call,
            serde_json::json!({"lines": 13}),
            super::no_outputs(),
            at(4_000),
        )
        .await?;
    ensure!(
        done.state() == JobState::Completed,
        "a full log does not stop the job"
    );
    Ok(())
}

pub async fn sequence_numbers_sent_out_of_order_cannot_get_past_the_log_cap<F, Fut>(
    open_with_log_cap: F,
) -> anyhow::Result<()>
where
    F: FnOnce(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<OpenedStore>>,
{
    let opened = open_with_log_cap(SMALL_LOG_CAP)
        .await
        .context("open a store with a small log cap")?;
    let store = opened.store.as_ref();
    let job = submit_one(store, spec_with_policy("gappy", policy(3, 600, 30, 1)), T0).await?;
    let runner = register_runner(store, "gappy").await?;
    let claimed = claim_one(store, runner, "gappy", at(1_000)).await?;
    let call = call_for(&claimed, runner);

    // The highest seq first, then the gap below it: each entry is 30 bytes and the gap alone
    // holds 270, far past the 100-byte cap.
    let line = |seq: u64| format!("seq {seq:02} {}", "y".repeat(23));
    ensure!(line(0).len() == 30);
    store
        .append_logs(call, vec![log_entry(Some(9), &line(9))], at(2_000))
        .await?;
    let gap = (0..9).map(|seq| log_entry(Some(seq), &line(seq))).collect();
    store.append_logs(call, gap, at(3_000)).await?;
    // Resending everything must not add anything either.
    let all = (0..10)
        .map(|seq| log_entry(Some(seq), &line(seq)))
        .collect();
    store.append_logs(call, all, at(4_000)).await?;

    let page = store.read_logs(job.id, None, 1_000).await?;
    let kept_bytes: usize = page
        .items
        .iter()
        .filter(|entry| entry.level != LogLevel::Warn)
        .map(|entry| entry.message.len())
        .sum();
    ensure!(
        kept_bytes as u64 <= SMALL_LOG_CAP,
        "{kept_bytes} bytes of log kept with a cap of {SMALL_LOG_CAP}: {:?}",
        messages(&page)
    );
    let notices = page
        .items
        .iter()
        .filter(|entry| entry.level == LogLevel::Warn)
        .count();
    ensure!(
        notices == 1,
        "exactly one truncation notice, got {notices}: {:?}",
        messages(&page)
    );
    let seqs: Vec<u64> = page.items.iter().map(|entry| entry.seq).collect();
    let mut distinct = seqs.clone();
    distinct.dedup();
    ensure!(seqs == distinct, "every seq at most once: {seqs:?}");
    Ok(())
}

pub async fn log_positions_follow_appends_and_the_end_of_a_job_and_skip_unknown_jobs(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let quiet = submit_one(
        store,
        spec_with_policy("watched", policy(3, 600, 30, 1)),
        T0,
    )
    .await?;
    let chatty = submit_one(
        store,
        spec_with_policy("watched", policy(3, 600, 30, 1)),
        T0,
    )
    .await?;
    let runner = register_runner(store, "watched").await?;
    let first = claim_one(store, runner, "watched", at(1_000)).await?;
    let second = claim_one(store, runner, "watched", at(1_000)).await?;
    let (quiet_claim, chatty_claim) = if first.job.id == quiet.id {
        (first, second)
    } else {
        (second, first)
    };
    store
        .append_logs(
            call_for(&chatty_claim, runner),
            vec![log_entry(None, "one"), log_entry(None, "two")],
            at(2_000),
        )
        .await?;
    let unknown = muster_core::JobId::new(T0, 0xDEAD_BEEF);
    let mut positions = store
        .log_positions(vec![quiet.id, chatty.id, unknown])
        .await?;
    positions.sort_by_key(|position| position.job != quiet.id);
    ensure!(
        positions
            == vec![
                muster_store::LogPosition {
                    job: quiet.id,
                    next_seq: 0,
                    finished: false
                },
                muster_store::LogPosition {
                    job: chatty.id,
                    next_seq: 2,
                    finished: false
                },
            ],
        "{positions:?}"
    );
    store
        .complete_job(
            call_for(&quiet_claim, runner),
            serde_json::json!(null),
            super::no_outputs(),
            at(3_000),
        )
        .await?;
    let after = store.log_positions(vec![quiet.id]).await?;
    ensure!(
        after.len() == 1 && after[0].finished && after[0].next_seq == 0,
        "{after:?}"
    );
    ensure!(store.log_positions(Vec::new()).await?.is_empty());
    Ok(())
}

pub async fn next_seq_never_passes_what_is_stored_however_far_the_cursor(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(store, spec_with_policy("cursor", policy(3, 600, 30, 1)), T0).await?;
    let runner = register_runner(store, "cursor").await?;
    let claimed = claim_one(store, runner, "cursor", at(1_000)).await?;
    for after in [None, Some(0), Some(1_000), Some(u64::MAX)] {
        let page = store.read_logs(job.id, after, 100).await?;
        ensure!(
            page.next_seq == 0,
            "empty log after {after:?}: {}",
            page.next_seq
        );
    }
    store
        .append_logs(
            call_for(&claimed, runner),
            vec![
                log_entry(None, "a"),
                log_entry(None, "b"),
                log_entry(None, "c"),
            ],
            at(2_000),
        )
        .await?;
    for after in [Some(2), Some(1_000), Some(1u64 << 63), Some(u64::MAX)] {
        let page = store.read_logs(job.id, after, 100).await?;
        ensure!(
            page.items.is_empty() && page.next_seq == 3,
            "after {after:?}: {}",
            page.next_seq
        );
    }
    Ok(())
}

/// A store opened with a log cap of `cap_bytes`, and a job claimed there by a runner of its own.
async fn claimed_under_log_cap<F, Fut>(
    open_with_log_cap: F,
    cap_bytes: u64,
) -> anyhow::Result<(OpenedStore, muster_core::JobRecord, muster_store::JobCall)>
where
    F: FnOnce(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<OpenedStore>>,
{
    let opened = open_with_log_cap(cap_bytes)
        .await
        .context("open a store with a log cap")?;
    let store = opened.store.as_ref();
    let kind = "capped";
    let job = submit_one(store, spec_with_policy(kind, policy(3, 600, 30, 1)), T0).await?;
    let runner = register_runner(store, kind).await?;
    let claimed = claim_one(store, runner, kind, at(1_000)).await?;
    let call = call_for(&claimed, runner);
    Ok((opened, job, call))
}

/// The cap of the slot test: what its entries hold when each is counted once, to the byte.
const EXACT_LOG_CAP: u64 = 20;

pub async fn each_log_slot_is_stored_and_counted_once_whether_named_twice_in_a_call_or_filled_late<
    F,
    Fut,
>(
    open_with_log_cap: F,
) -> anyhow::Result<()>
where
    F: FnOnce(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<OpenedStore>>,
{
    let (opened, job, call) = claimed_under_log_cap(open_with_log_cap, EXACT_LOG_CAP).await?;
    let store = opened.store.as_ref();

    // Seq 5 first: 0 to 4 are gaps.
    let first = store
        .append_logs(
            call,
            vec![log_entry(Some(5), "five"), log_entry(None, "six")],
            at(2_000),
        )
        .await?;
    ensure!(first.next_seq == 7, "got {}", first.next_seq);
    // One call filling a gap late, naming that slot again, filling a new slot and naming it
    // again, resending a stored entry, and filling another gap. The entries stored hold 20
    // bytes, the cap: one counted twice would push the log past it.
    let mixed = vec![
        log_entry(Some(2), "two"),
        log_entry(Some(2), "two again"),
        log_entry(Some(7), "seven"),
        log_entry(Some(7), "seven again"),
        log_entry(Some(5), "five again"),
        log_entry(Some(3), "three"),
    ];
    let second = store.append_logs(call, mixed.clone(), at(3_000)).await?;
    ensure!(second.next_seq == 8, "got {}", second.next_seq);
    let expected: Vec<(u64, String)> = [
        (2, "two"),
        (3, "three"),
        (5, "five"),
        (6, "six"),
        (7, "seven"),
    ]
    .into_iter()
    .map(|(seq, message)| (seq, message.to_string()))
    .collect();
    let page = store.read_logs(job.id, None, 100).await?;
    ensure!(
        messages(&page) == expected,
        "each slot once, its first version kept, nothing truncated: {:?}",
        messages(&page)
    );
    // The same call again stores nothing more; a new entry is the first past the cap.
    let again = store.append_logs(call, mixed, at(4_000)).await?;
    ensure!(again.next_seq == 8, "got {}", again.next_seq);
    ensure!(messages(&store.read_logs(job.id, None, 100).await?) == expected);
    store
        .append_logs(call, vec![log_entry(None, "x")], at(5_000))
        .await?;
    let page = store.read_logs(job.id, None, 100).await?;
    ensure!(page.items.len() == 6 && page.items[5].level == LogLevel::Warn);
    ensure!(page.next_seq == 9);
    Ok(())
}

pub async fn log_search_finds_text_and_levels_within_its_window_and_never_passes_the_end(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    use muster_store::LogSearch;
    let store = store.as_ref();
    let job = submit_one(
        store,
        spec_with_policy("searched", policy(3, 600, 30, 1)),
        T0,
    )
    .await?;
    let runner = register_runner(store, "searcher").await?;
    let claimed = claim_one(store, runner, "searched", at(1_000)).await?;
    let call = call_for(&claimed, runner);
    // 0..=9: "line N"; 3 is an error, 7 a warning; 5 and 8 hold LIKE's wildcards literally.
    let entries = (0..10)
        .map(|n| {
            let mut entry = log_entry(
                None,
                &match n {
                    3 => "Disk FULL on /dev/sda".to_string(),
                    5 => "100% done".to_string(),
                    8 => "file_name ok".to_string(),
                    _ => format!("line {n}"),
                },
            );
            entry.level = match n {
                3 => LogLevel::Error,
                7 => LogLevel::Warn,
                _ => LogLevel::Info,
            };
            entry
        })
        .collect();
    store.append_logs(call, entries, at(2_000)).await?;
    let search =
        |text: Option<&str>, min_level: Option<LogLevel>, after_seq, window, limit| LogSearch {
            after_seq,
            text: text.map(str::to_string),
            min_level,
            window,
            limit,
        };
    let seqs = |page: &muster_store::LogSearchPage| -> Vec<u64> {
        page.items.iter().map(|entry| entry.seq).collect()
    };

    // Text, without case for ASCII letters.
    let found = store
        .search_logs(job.id, search(Some("disk full"), None, None, 1_000, 10))
        .await?;
    ensure!(seqs(&found) == vec![3], "{found:?}");
    ensure!(
        found.next_seq == 10 && found.log_next_seq == 10,
        "{found:?}"
    );
    // Wildcards are literal: "%" matches only the line that has one, "_" likewise.
    let percent = store
        .search_logs(job.id, search(Some("0%"), None, None, 1_000, 10))
        .await?;
    ensure!(seqs(&percent) == vec![5], "{percent:?}");
    let underscore = store
        .search_logs(job.id, search(Some("e_n"), None, None, 1_000, 10))
        .await?;
    ensure!(seqs(&underscore) == vec![8], "{underscore:?}");
    // Levels: at least warn.
    let loud = store
        .search_logs(job.id, search(None, Some(LogLevel::Warn), None, 1_000, 10))
        .await?;
    ensure!(seqs(&loud) == vec![3, 7], "{loud:?}");
    let first_error = store
        .search_logs(job.id, search(None, Some(LogLevel::Error), None, 1_000, 1))
        .await?;
    ensure!(
        seqs(&first_error) == vec![3] && first_error.next_seq == 4,
        "{first_error:?}"
    );
    // Both together.
    let both = store
        .search_logs(
            job.id,
            search(Some("line"), Some(LogLevel::Warn), None, 1_000, 10),
        )
        .await?;
    ensure!(seqs(&both) == vec![7], "{both:?}");

    // A window of 4 looks at 4 entries per call and says where to go on, never past the end.
    let mut after = None;
    let mut found = Vec::new();
    let mut calls = 0;
    loop {
        let page = store
            .search_logs(job.id, search(Some("line"), None, after, 4, 100))
            .await?;
        calls += 1;
        ensure!(
            page.items
                .iter()
                .all(|entry| entry.seq >= after.map_or(0, |a| a + 1))
        );
        found.extend(seqs(&page));
        if page.next_seq >= page.log_next_seq {
            ensure!(page.next_seq == 10, "{page:?}");
            break;
        }
        after = Some(page.next_seq - 1);
        ensure!(calls < 10, "the search ends");
    }
    ensure!(calls == 3, "10 entries in windows of 4: {calls} calls");
    ensure!(found == vec![0, 1, 2, 4, 6, 7, 9], "{found:?}");
    // A full page stops at its last match; the next call goes on from there.
    let page = store
        .search_logs(job.id, search(Some("line"), None, None, 1_000, 2))
        .await?;
    ensure!(seqs(&page) == vec![0, 1] && page.next_seq == 2, "{page:?}");
    // A cursor far past the end answers nothing and the end.
    let beyond = store
        .search_logs(
            job.id,
            search(Some("line"), None, Some(1_000_000), 1_000, 10),
        )
        .await?;
    ensure!(
        beyond.items.is_empty() && beyond.next_seq == 10,
        "{beyond:?}"
    );
    // An unknown job is not found.
    let unknown = store
        .search_logs(
            muster_core::JobId::new(T0, 42),
            search(None, None, None, 10, 10),
        )
        .await;
    ensure!(
        matches!(unknown, Err(muster_store::StoreError::NotFound(_))),
        "{unknown:?}"
    );
    Ok(())
}
