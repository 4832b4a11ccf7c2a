//! The listening socket under attack from anyone who can reach it, over real sockets: slow and
//! silent clients are disconnected within their timeouts, honest slow uploads and long-lived
//! requests are not, and a flood of idle connections cannot lock out runners and users.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use muster_client::api::{ClaimJobs, LogLevel, NewLogEntry};
use muster_core::SystemClock;
use muster_server::RawServerConfig;
use muster_test_support::{TEST_ADMIN_TOKEN, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::submit_and_claim;

async fn start_with(adjust: impl FnOnce(&mut RawServerConfig)) -> TestServer {
    TestServer::start_with(Arc::new(SystemClock), adjust)
        .await
        .expect("start a test server")
}

fn address(server: &TestServer) -> String {
    server.base_url.trim_start_matches("http://").to_string()
}

async fn connect(server: &TestServer) -> TcpStream {
    TcpStream::connect(address(server))
        .await
        .expect("connect to the server")
}

/// Read until the server closes the connection (or resets it), for at most `within`; answers
/// what was read and how long it took, or `None` when the connection was still open.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<(String, Duration)> {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((
                    String::from_utf8_lossy(&received).into_owned(),
                    started.elapsed(),
                ));
            }
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

/// Read one whole HTTP/1.1 answer with a `Content-Length` body from a kept-alive connection.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("an answer within 10 s")
            .expect("read the answer");
        assert!(
            read > 0,
            "the connection closed before a whole answer: {text:?}"
        );
        received.extend_from_slice(&buffer[..read]);
    }
}

fn head_has(answer: &str, header_line: &str) -> bool {
    let head = answer.split("\r\n\r\n").next().unwrap_or("");
    head.lines()
        .any(|line| line.eq_ignore_ascii_case(header_line))
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
    let server = start_with(|raw| raw.header_read_timeout = Some("1s".into())).await;
    let mut silent = connect(&server).await;
    let (_, after) = read_until_closed(&mut silent, Duration::from_secs(8))
        .await
        .expect("a silent connection is closed, not kept forever");
    assert!(
        after >= Duration::from_millis(800),
        "closed after {after:?}: the timeout, not at once"
    );
    let closed = crate::support::metric(
        &server,
        "muster_connections_closed_total{reason=\"header_timeout\"}",
    )
    .await;
    assert_eq!(closed, Some(1.0));
}

#[tokio::test]
async fn a_request_head_trickled_a_byte_at_a_time_is_cut_off() {
    let server = start_with(|raw| raw.header_read_timeout = Some("1s".into())).await;
    let mut slow = connect(&server).await;
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: muster\r\n")
        .await
        .expect("write the first line");
    // One byte of a header every 100 ms: each is progress, none finishes the head.
    let mut cut_off = None;
    for byte in b"X-Trickle: ".iter().cycle().take(200) {
        if slow.write_all(&[*byte]).await.is_err() {
            cut_off = Some(started.elapsed());
            break;
        }
        let mut probe = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut_off = Some(started.elapsed());
                break;
            }
            Ok(Ok(_)) => panic!("a trickled head got an answer"),
            Err(_) => {}
        }
    }
    let after = cut_off.expect("a trickling client was never disconnected (20 s of bytes)");
    assert!(
        after < Duration::from_secs(5),
        "cut off only after {after:?}"
    );
}

#[tokio::test]
async fn a_request_body_that_trickles_in_is_answered_408_and_disconnected() {
    let server = start_with(|raw| {
        raw.body_read_timeout = Some("1s".into());
        raw.body_min_rate = Some(1024);
    })
    .await;
    let slow = connect(&server).await;
    let (mut reader, mut writer) = slow.into_split();
    let head = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: muster\r\nAuthorization: Bearer {TEST_ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    );
    writer
        .write_all(head.as_bytes())
        .await
        .expect("write the head");
    let started = Instant::now();
    let trickle = async {
        for _ in 0..200 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut received = Vec::new();
    let read = async {
        let mut buffer = [0u8; 4096];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
            }
        }
    };
    // Until the server answers and closes, or the trickle ends (20 s); bounded either way.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            _ = read => {}
            _ = trickle => {}
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&received).into_owned();
    let after = started.elapsed();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a slow body is answered 408 (after {after:?}): {answer:?}"
    );
    assert!(head_has(&answer, "connection: close"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(
        answer.contains("--body-min-rate"),
        "the answer names the setting: {answer}"
    );
    assert!(after < Duration::from_secs(6), "answered after {after:?}");
    assert!(
        server
            .client()
            .list_jobs(&muster_client::JobQuery::default())
            .await
            .expect("list")
            .items
            .is_empty(),
        "nothing was stored from a body that never arrived"
    );
}

#[tokio::test]
async fn an_honest_upload_slower_than_the_grace_but_above_the_minimum_rate_completes() {
    let server = start_with(|raw| {
        raw.body_read_timeout = Some("1s".into());
        raw.body_min_rate = Some(1024);
    })
    .await;
    let mut upload = connect(&server).await;
    let size = 12 * 1024;
    let head = format!(
        "POST /api/v1/artifacts HTTP/1.1\r\nHost: muster\r\nAuthorization: Bearer {TEST_ADMIN_TOKEN}\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
    );
    upload.write_all(head.as_bytes()).await.expect("head");
    let started = Instant::now();
    // 512 bytes every 100 ms: about 5 KiB/s, above the 1 KiB/s minimum, 2.4 s in all.
    for _ in 0..size / 512 {
        upload.write_all(&[b'x'; 512]).await.expect("a chunk");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = read_answer(&mut upload).await;
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "the upload took longer than the grace"
    );
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let server = start_with(|raw| {
        raw.header_read_timeout = Some("1s".into());
        raw.idle_timeout = Some("3s".into());
    })
    .await;
    let mut kept = connect(&server).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: muster\r\n\r\n";
    kept.write_all(request).await.expect("first request");
    let first = read_answer(&mut kept).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Past the header timeout but within the idle timeout, the connection still serves.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    kept.write_all(request).await.expect("second request");
    let second = read_answer(&mut kept).await;
    assert!(
        second.starts_with("HTTP/1.1 200"),
        "kept alive past the header timeout: {second}"
    );
    let (_, after) = read_until_closed(&mut kept, Duration::from_secs(10))
        .await
        .expect("an idle kept-alive connection is closed");
    assert!(
        after >= Duration::from_millis(2500) && after < Duration::from_secs(8),
        "closed {after:?} after its last answer (idle timeout 3 s)"
    );
}

#[tokio::test]
async fn long_polls_and_live_log_streams_outlive_the_idle_and_header_timeouts() {
    let server = start_with(|raw| {
        raw.header_read_timeout = Some("1s".into());
        raw.idle_timeout = Some("1s".into());
        raw.body_read_timeout = Some("1s".into());
    })
    .await;
    let client = server.client();
    let (_, runner) = server.runner("patient").await.expect("runner");

    let started = Instant::now();
    let nothing = runner
        .claim_job(&ClaimJobs {
            kinds: vec!["nothing-comes".into()],
            wait_ms: Some(3000),
            ..Default::default()
        })
        .await
        .expect("a long poll is answered, not cut off");
    assert!(nothing.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(2900),
        "it waited its whole wait_ms"
    );

    let (_, claimed) = submit_and_claim(&client, &runner, "followed").await;
    let response = crate::support::http()
        .get(format!(
            "{}/api/v1/jobs/{}/logs",
            server.base_url, claimed.id
        ))
        .bearer_auth(TEST_ADMIN_TOKEN)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .expect("open a live stream");
    assert_eq!(response.status(), 200);
    let mut events = response.bytes_stream();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    runner
        .append_log(
            claimed.id,
            Some(claimed.lease.epoch),
            vec![NewLogEntry {
                level: LogLevel::Info,
                message: "still listening".into(),
                ..Default::default()
            }],
        )
        .await
        .expect("append");
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen.contains("still listening") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.next()).await {
            Ok(Some(Ok(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the stream ended or stalled before the line ({other:?}): {seen}"),
        }
    }
}

#[tokio::test]
async fn at_the_connection_limit_idle_connections_make_room_for_new_ones() {
    let server = start_with(|raw| {
        raw.max_connections = Some(16);
        // Long enough that only making room can close them within the test.
        raw.header_read_timeout = Some("120s".into());
    })
    .await;
    let mut flood = Vec::new();
    for _ in 0..48 {
        flood.push(connect(&server).await);
    }
    // Give the accept loop a moment to take them all (each one past 16 closes an older one).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let health = crate::support::http()
        .get(format!("{}/healthz", server.base_url))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("/healthz is answered beside a flood of idle connections");
    assert_eq!(health.status(), 200);
    let (_, runner) = server.runner("flooded").await.expect("register a runner");
    runner
        .claim_job(&ClaimJobs {
            kinds: vec!["anything".into()],
            ..Default::default()
        })
        .await
        .expect("a runner's claim is answered beside the flood");
    assert!(started.elapsed() < Duration::from_secs(10));

    let mut closed = 0;
    for stream in &mut flood {
        if read_until_closed(stream, Duration::from_millis(50))
            .await
            .is_some()
        {
            closed += 1;
        }
    }
    assert!(
        closed >= 48 - 16,
        "at most 16 connections stay open: {closed} of 48 idle ones were closed"
    );
    let evicted = crate::support::metric(
        &server,
        "muster_connections_closed_total{reason=\"evicted\"}",
    )
    .await
    .unwrap_or(0.0);
    assert!(evicted >= 32.0, "evictions are counted: {evicted}");
}

#[tokio::test]
async fn an_oversized_chunked_body_is_answered_413_with_connection_close() {
    let server = start_with(|raw| raw.max_body_bytes = Some(1024)).await;
    let mut stream = connect(&server).await;
    let head = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: muster\r\nAuthorization: Bearer {TEST_ADMIN_TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let chunk = format!("400\r\n{}\r\n", "x".repeat(1024));
    for _ in 0..8 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .expect("the server closes the connection after refusing the body");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        head_has(&answer, "connection: close"),
        "the answer says the connection closes: {answer}"
    );
    assert!(answer.contains("\"payload_too_large\""), "{answer}");
}
