//! A job's log as users read it: in pages (`after_seq`, `limit`, `next_seq`) and followed live
//! over server-sent events until the job ends.

use std::sync::Arc;
use std::time::Duration;

use muster_client::api::{JobHeartbeat, LogLevel, NewLogEntry};
use muster_core::SystemClock;
use muster_store::Store;
use muster_store::sqlite::{SqliteConfig, SqliteStore};
use muster_test_support::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{SseReader, admin, field_names, start, submit_and_claim};

fn entry(level: LogLevel, message: &str) -> NewLogEntry {
    NewLogEntry {
        level,
        message: message.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn logs_are_read_in_pages_that_continue_after_next_seq() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &runner, "exec").await;
    let epoch = Some(claimed.lease.epoch);
    let mut entries = vec![
        entry(LogLevel::Trace, "zero"),
        entry(LogLevel::Debug, "one"),
        entry(LogLevel::Info, "two"),
        entry(LogLevel::Warn, "three"),
        entry(LogLevel::Error, "four"),
    ];
    entries[2].metadata = Some(json!({"step": "build", "n": 2}));
    let appended = runner
        .append_log(claimed.id, epoch, entries)
        .await
        .expect("append");
    assert_eq!(appended.next_seq, 5);

    let path = format!("/api/v1/jobs/{}/logs", claimed.id);
    let whole = admin(&server, Method::GET, &path, None).await;
    assert_eq!(whole.status, 200, "{}", whole.body);
    let body = whole.json();
    assert_eq!(body["next_seq"], 5);
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 5);
    for (index, (item, (level, message))) in items
        .iter()
        .zip([
            ("trace", "zero"),
            ("debug", "one"),
            ("info", "two"),
            ("warn", "three"),
            ("error", "four"),
        ])
        .enumerate()
    {
        let keys = field_names(item);
        assert_eq!(
            keys,
            ["level", "message", "metadata", "seq", "ts"],
            "{item}"
        );
        assert_eq!(item["seq"], index as u64);
        assert_eq!(item["level"], level);
        assert_eq!(item["message"], message);
        assert!(
            item["ts"].as_str().is_some_and(|ts| ts.ends_with('Z')),
            "{item}"
        );
    }
    assert_eq!(items[2]["metadata"], json!({"step": "build", "n": 2}));
    assert_eq!(items[0]["metadata"], Value::Null);

    let first = client
        .job_logs(claimed.id, None, Some(2))
        .await
        .expect("page 1");
    assert_eq!(
        first.items.iter().map(|item| item.seq).collect::<Vec<_>>(),
        [0, 1]
    );
    assert_eq!(first.next_seq, 2);
    let second = client
        .job_logs(claimed.id, Some(first.next_seq - 1), Some(2))
        .await
        .expect("page 2");
    assert_eq!(
        second.items.iter().map(|item| item.seq).collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(second.next_seq, 4);
    let third = client
        .job_logs(claimed.id, Some(second.next_seq - 1), Some(2))
        .await
        .expect("page 3");
    assert_eq!(
        third.items.iter().map(|item| item.seq).collect::<Vec<_>>(),
        [4]
    );
    assert_eq!(third.next_seq, 5);
    let beyond = client
        .job_logs(claimed.id, Some(4), None)
        .await
        .expect("past the end");
    assert!(beyond.items.is_empty());
    assert_eq!(
        beyond.next_seq, 5,
        "next_seq stays where the next entry will be"
    );
    // A cursor far past what is stored is not echoed back: next_seq comes from the log.
    for far in [1000, 1u64 << 62, i64::MAX as u64, u64::MAX] {
        let ahead = client
            .job_logs(claimed.id, Some(far), None)
            .await
            .expect("far past the end");
        assert!(ahead.items.is_empty());
        assert_eq!(ahead.next_seq, 5, "after_seq={far}");
    }

    // Heartbeat events land in the same log as info entries.
    runner
        .job_heartbeat(
            claimed.id,
            epoch,
            &JobHeartbeat {
                progress: None,
                events: Some(vec![
                    json!("plain text event"),
                    json!({"message": "structured", "k": 1}),
                ]),
            },
        )
        .await
        .expect("heartbeat with events");
    let events = client
        .job_logs(claimed.id, Some(4), None)
        .await
        .expect("events");
    assert_eq!(events.items.len(), 2);
    assert!(events.items.iter().all(|item| item.level == LogLevel::Info));
    assert_eq!(events.items[0].message, "plain text event");
    assert_eq!(events.items[1].message, "structured");
    assert_eq!(events.next_seq, 7);
}

/// `GET /api/v1/jobs/{id}/logs` with `Accept: text/event-stream`, as the admin.
async fn open_live_log(server: &TestServer, job: uuid::Uuid) -> reqwest::Response {
    crate::support::request(
        server,
        Method::GET,
        &format!("/api/v1/jobs/{job}/logs"),
        Some(&server.admin_token),
    )
    .header(reqwest::header::ACCEPT, "text/event-stream")
    .send()
    .await
    .expect("open a live log stream")
}

#[tokio::test]
async fn following_logs_streams_new_entries_live_and_ends_when_the_job_completes() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &runner, "exec").await;
    let epoch = Some(claimed.lease.epoch);
    runner
        .append_log(
            claimed.id,
            epoch,
            vec![entry(LogLevel::Info, "before the stream")],
        )
        .await
        .expect("append");

    let response = open_live_log(&server, claimed.id).await;
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut events = SseReader::new(response);

    let first = events.next().await.expect("the entry written before");
    assert_eq!(first.event, "log");
    assert_eq!(first.id.as_deref(), Some("0"));
    let data: Value = serde_json::from_str(&first.data).expect("log data is JSON");
    assert_eq!(data["message"], "before the stream");
    assert_eq!(data["seq"], 0);

    runner
        .append_log(
            claimed.id,
            epoch,
            vec![entry(LogLevel::Warn, "while streaming")],
        )
        .await
        .expect("append live");
    let live = events.next().await.expect("a live entry");
    assert_eq!(live.event, "log");
    let data: Value = serde_json::from_str(&live.data).expect("log data is JSON");
    assert_eq!(data["message"], "while streaming");
    assert_eq!(data["level"], "warn");
    assert_eq!(data["seq"], 1);

    runner
        .append_log(
            claimed.id,
            epoch,
            vec![entry(LogLevel::Info, "two"), entry(LogLevel::Info, "three")],
        )
        .await
        .expect("append two");
    for (seq, message) in [(2, "two"), (3, "three")] {
        let next = events.next().await.expect("each entry");
        assert_eq!(next.event, "log");
        let data: Value = serde_json::from_str(&next.data).expect("log data is JSON");
        assert_eq!(data["seq"], seq);
        assert_eq!(data["message"], message);
    }

    runner
        .complete_job(claimed.id, epoch, json!({"ok": true}))
        .await
        .expect("complete");
    let end = events.next().await.expect("the end event");
    assert_eq!(end.event, "end", "{end:?}");
    let data: Value = serde_json::from_str(&end.data).expect("end data is JSON");
    assert_eq!(data["state"], "completed");
    assert!(events.next().await.is_none(), "the stream closes after end");

    // A stream opened on a finished job drains what is there and ends at once.
    let response = client
        .follow_logs_response(claimed.id, Some(2))
        .await
        .expect("follow a finished job");
    let mut events = SseReader::new(response);
    let only = events.next().await.expect("the entry after seq 2");
    assert_eq!(only.id.as_deref(), Some("3"));
    assert_eq!(events.next().await.expect("end").event, "end");
    assert!(events.next().await.is_none());
}

#[tokio::test]
async fn next_seq_of_an_empty_log_is_its_start_whatever_the_cursor() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("quiet").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &runner, "silent").await;
    for after_seq in [None, Some(0), Some(1000), Some(1u64 << 63)] {
        let page = client
            .job_logs(claimed.id, after_seq, None)
            .await
            .expect("read an empty log");
        assert!(page.items.is_empty());
        assert_eq!(page.next_seq, 0, "after_seq={after_seq:?}");
    }
    let path = format!(
        "/api/v1/jobs/{}/logs?after_seq=9223372036854775808",
        claimed.id
    );
    let raw = admin(&server, Method::GET, &path, None).await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    assert_eq!(raw.json()["next_seq"], 0, "{}", raw.body);
}

#[tokio::test]
async fn idle_followers_read_nothing_until_their_job_changes_and_all_wake_when_it_does() {
    let directory = tempfile::tempdir().expect("a directory for the store");
    let store = Arc::new(
        SqliteStore::open(&SqliteConfig {
            path: directory.path().join("muster.db"),
            log_cap_bytes: 1024 * 1024,
        })
        .expect("open the store"),
    );
    let server = TestServer::start_on_store(
        Arc::new(SystemClock),
        Arc::clone(&store) as Arc<dyn Store>,
        |_| {},
    )
    .await
    .expect("start a server on the store");
    let client = server.client();
    let (_, runner) = server.runner("quiet").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &runner, "followed").await;
    let epoch = Some(claimed.lease.epoch);

    const FOLLOWERS: usize = 200;
    let mut followers = Vec::with_capacity(FOLLOWERS);
    for _ in 0..FOLLOWERS {
        let response = open_live_log(&server, claimed.id).await;
        assert_eq!(response.status(), 200);
        followers.push(SseReader::new(response));
    }
    // Every stream has made its first read; from here on nothing changes for a while.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reads_before = store.read_queries();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_reads = store.read_queries() - reads_before;
    assert!(
        idle_reads <= 5,
        "{FOLLOWERS} idle followers made {idle_reads} store reads in 3 s; they should wait for a change"
    );

    runner
        .append_log(claimed.id, epoch, vec![entry(LogLevel::Info, "wake up")])
        .await
        .expect("append");
    for (index, follower) in followers.iter_mut().enumerate() {
        let event = follower.next().await.expect("the new entry");
        assert_eq!(event.event, "log", "follower {index}");
        assert!(
            event.data.contains("wake up"),
            "follower {index}: {}",
            event.data
        );
    }
    assert!(
        store.idle_reader_connections() <= muster_store::sqlite::MAX_READER_CONNECTIONS,
        "the read pool stays bounded when {FOLLOWERS} streams read at once: {}",
        store.idle_reader_connections()
    );

    // The job ends (completed by its runner): every stream says so and closes.
    runner
        .complete_job(claimed.id, epoch, json!({"ok": true}))
        .await
        .expect("complete");
    for (index, follower) in followers.iter_mut().enumerate() {
        let event = follower.next().await.expect("the end event");
        assert_eq!(event.event, "end", "follower {index}");
        assert!(follower.next().await.is_none(), "follower {index} closes");
    }
}

#[tokio::test]
async fn a_follower_sees_the_end_when_the_reaper_fails_the_job() {
    let (server, clock) = crate::support::start_manual().await;
    let client = server.client();
    let (_, runner) = server.runner("vanishing").await.expect("runner");
    let job = crate::support::submit(
        &client,
        muster_client::api::SubmitJob {
            max_attempts: Some(1),
            ..crate::support::job("reaped")
        },
    )
    .await;
    let claimed = runner
        .claim_job(&muster_client::api::ClaimJobs {
            kinds: vec!["reaped".into()],
            ..Default::default()
        })
        .await
        .expect("claim")
        .pop()
        .expect("one job");
    assert_eq!(claimed.id, job.id);
    let mut events = SseReader::new(open_live_log(&server, job.id).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The runner goes silent; its lease expires and the reaper fails the last attempt.
    clock.advance_s(31);
    server.reap().await;
    let end = events.next().await.expect("the end event");
    assert_eq!(end.event, "end");
    assert!(end.data.contains("failed"), "{}", end.data);
}

/// A hundred open streams on one busy job (a hundred dashboard tabs): each gets every entry
/// once and in order, and the store is read once per change for all of them (the shared feed),
/// not once per stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_streams_on_one_job_share_one_read_per_change() {
    const STREAMS: usize = 100;
    const BATCHES: u64 = 20;
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("busy").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &runner, "busy").await;
    let epoch = Some(claimed.lease.epoch);
    runner
        .append_log(claimed.id, epoch, vec![entry(LogLevel::Info, "line 0")])
        .await
        .expect("append");
    let mut streams = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS {
        let mut events = SseReader::new(open_live_log(&server, claimed.id).await);
        let first = events.next().await.expect("the backlog");
        assert_eq!(first.id.as_deref(), Some("0"));
        streams.push(events);
    }
    let before = crate::support::metric(&server, "muster_log_feed_reads_total")
        .await
        .unwrap_or(0.0);
    for line in 1..=BATCHES {
        runner
            .append_log(
                claimed.id,
                epoch,
                vec![entry(LogLevel::Info, &format!("line {line}"))],
            )
            .await
            .expect("append live");
        // Each batch a change of its own: the streams have taken it before the next comes.
        for events in &mut streams {
            let next = events.next().await.expect("the live entry");
            assert_eq!(next.id, Some(line.to_string()), "{next:?}");
        }
    }
    let reads = crate::support::metric(&server, "muster_log_feed_reads_total")
        .await
        .unwrap_or(0.0)
        - before;
    assert!(
        reads <= (BATCHES * 2) as f64,
        "{reads} store reads for {BATCHES} changes followed by {STREAMS} streams"
    );
    assert!(reads >= 1.0, "the feed read the store: {reads}");

    runner
        .complete_job(claimed.id, epoch, json!({}))
        .await
        .expect("complete");
    for events in &mut streams {
        let end = events.next().await.expect("the end");
        assert_eq!(end.event, "end", "{end:?}");
    }
}

#[tokio::test]
async fn following_the_log_or_the_state_of_an_unknown_job_answers_404_before_any_stream() {
    let server = start().await;
    let unknown = uuid::Uuid::now_v7();
    for path in [
        format!("/api/v1/jobs/{unknown}/logs"),
        format!("/api/v1/jobs/{unknown}/events"),
    ] {
        let response =
            crate::support::request(&server, Method::GET, &path, Some(&server.admin_token))
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .send()
                .await
                .expect("open a live stream");
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.expect("a JSON error body");
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }
}

#[tokio::test]
async fn a_log_is_searched_on_the_server_and_downloaded_raw() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("searched").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &runner, "exec").await;
    let epoch = Some(claimed.lease.epoch);
    let mut entries: Vec<NewLogEntry> = (0..30)
        .map(|n| entry(LogLevel::Info, &format!("step {n} fine")))
        .collect();
    entries[12] = entry(
        LogLevel::Error,
        "Step 12 FAILED: \u{1b}[31mdisk full\u{1b}[0m",
    );
    entries[20] = entry(LogLevel::Warn, "step 20 slow");
    runner
        .append_log(claimed.id, epoch, entries)
        .await
        .expect("append");

    let search = |query: &str| {
        let path = format!("/api/v1/jobs/{}/logs/search?{query}", claimed.id);
        let server = &server;
        async move { admin(server, Method::GET, &path, None).await }
    };
    let found = search("q=failed").await;
    assert_eq!(found.status, 200, "{}", found.body);
    let found = found.json();
    assert_eq!(field_names(&found), ["items", "log_next_seq", "next_seq"]);
    let seqs = |page: &Value| -> Vec<u64> {
        page["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item["seq"].as_u64())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(seqs(&found), [12], "{found}");
    assert_eq!(
        (found["next_seq"].as_u64(), found["log_next_seq"].as_u64()),
        (Some(30), Some(30))
    );
    // The first error: level at least error, one match.
    let first_error = search("level=error&limit=1").await.json();
    assert_eq!(seqs(&first_error), [12]);
    let loud = search("level=warn").await.json();
    assert_eq!(seqs(&loud), [12, 20]);
    let after = search("q=step&after_seq=25").await.json();
    assert_eq!(seqs(&after), [26, 27, 28, 29]);
    let nothing = search("q=no%20such%20text").await.json();
    assert!(seqs(&nothing).is_empty());
    assert_eq!(nothing["next_seq"], 30);
    for (query, mentions) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("level=loud", "level"),
        ("after_seq=-1", "after_seq"),
    ] {
        search(query)
            .await
            .assert_error(400, "invalid_input", &[mentions]);
    }
    let long = "x".repeat(201);
    search(&format!("q={long}"))
        .await
        .assert_error(400, "invalid_input", &["q", "200"]);
    let unknown = uuid::Uuid::now_v7();
    admin(
        &server,
        Method::GET,
        &format!("/api/v1/jobs/{unknown}/logs/search?q=x"),
        None,
    )
    .await
    .assert_error(404, "not_found", &[]);

    // The raw log: every entry, one line each, as a download.
    let raw = admin(
        &server,
        Method::GET,
        &format!("/api/v1/jobs/{}/logs/raw", claimed.id),
        None,
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    let header = |name: &str| {
        raw.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert!(
        header("content-type").starts_with("text/plain"),
        "{}",
        header("content-type")
    );
    assert_eq!(
        header("content-disposition"),
        format!("attachment; filename=\"job-{}.log\"", claimed.id)
    );
    let lines: Vec<&str> = raw.body.lines().collect();
    assert_eq!(lines.len(), 30, "{}", raw.body);
    assert!(lines[0].ends_with(" INFO step 0 fine"), "{}", lines[0]);
    assert!(
        lines[12].ends_with(" ERROR Step 12 FAILED: \u{1b}[31mdisk full\u{1b}[0m"),
        "{}",
        lines[12]
    );
    let stamp = lines[0].split(' ').next().unwrap_or("");
    assert!(
        time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).is_ok(),
        "an RFC 3339 time first: {stamp}"
    );
    admin(
        &server,
        Method::GET,
        &format!("/api/v1/jobs/{unknown}/logs/raw"),
        None,
    )
    .await
    .assert_error(404, "not_found", &[]);
}
