//! Throttling of failed authentications per address (`shared/api-v1.md`, "Runner identity"):
//! past the limit an address gets 429 `too_many_requests` with `Retry-After` until its minute
//! ends, one `auth.throttled` audit entry says so, and a limit of 0 turns it off. Every request
//! of a test comes from 127.0.0.1, so the tests' server is the blocked address's only target;
//! the manual clock ends the minute without sleeping.

use std::sync::Arc;

use muster_test_support::{ManualClock, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Reply, request, send, start_manual_with};

const UNKNOWN_TOKEN: &str = "muster_runner_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

async fn with_limit(limit: u32) -> (TestServer, Arc<ManualClock>) {
    start_manual_with(|config| config.auth_failure_limit = Some(limit)).await
}

async fn list_jobs(server: &TestServer, token: Option<&str>) -> Reply {
    send(request(server, Method::GET, "/api/v1/jobs", token)).await
}

/// The `Retry-After` of a 429, checked to be whole seconds within the minute.
#[track_caller]
fn assert_throttled(reply: &Reply) -> u64 {
    reply.assert_error(
        429,
        "too_many_requests",
        &["too many failed authentications"],
    );
    let retry_after = reply
        .headers
        .get(reqwest::header::RETRY_AFTER)
        .unwrap_or_else(|| panic!("a 429 carries Retry-After: {reply:?}"))
        .to_str()
        .expect("Retry-After is text")
        .parse::<u64>()
        .expect("Retry-After is whole seconds");
    assert!(
        (1..=60).contains(&retry_after),
        "Retry-After {retry_after} is within the minute"
    );
    retry_after
}

async fn throttled_audit_entries(server: &TestServer) -> Vec<Value> {
    let audit = send(request(
        server,
        Method::GET,
        "/api/v1/admin/audit?action=auth.throttled",
        Some(&server.admin_token),
    ))
    .await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    audit.json()["items"]
        .as_array()
        .expect("audit items")
        .clone()
}

#[tokio::test]
async fn an_address_past_the_limit_gets_429_with_retry_after_until_its_minute_ends() {
    let (server, clock) = with_limit(5).await;
    for attempt in 1..=5 {
        let reply = list_jobs(&server, Some(UNKNOWN_TOKEN)).await;
        assert_eq!(reply.status, 401, "attempt {attempt}: {}", reply.body);
    }
    let refused = list_jobs(&server, Some(UNKNOWN_TOKEN)).await;
    let retry_after = assert_throttled(&refused);
    // The clock has not moved since the first failure: the whole minute is left.
    assert_eq!(retry_after, 60);

    // While blocked, a valid token from the same address is refused too: the refusal comes
    // before any token is looked at, so a guesser learns nothing from it about its guesses
    // (a hit would otherwise answer 200 among the 429s), and a flood costs the store nothing.
    assert_throttled(&list_jobs(&server, Some(&server.admin_token)).await);
    let heartbeat = send(
        request(
            &server,
            Method::POST,
            "/api/v1/runner/heartbeat",
            Some(UNKNOWN_TOKEN),
        )
        .json(&json!({})),
    )
    .await;
    assert_throttled(&heartbeat);

    clock.advance_s(30);
    let later = assert_throttled(&list_jobs(&server, Some(UNKNOWN_TOKEN)).await);
    assert_eq!(
        later, 30,
        "Retry-After counts down to the end of the minute"
    );

    clock.advance_s(31);
    let listed = list_jobs(&server, Some(&server.admin_token)).await;
    assert_eq!(listed.status, 200, "{}", listed.body);

    let entries = throttled_audit_entries(&server).await;
    assert_eq!(
        entries.len(),
        1,
        "one entry per blocked minute: {entries:?}"
    );
    let entry = &entries[0];
    assert_eq!(entry["action"], "auth.throttled");
    assert_eq!(entry["actor"], "address:127.0.0.1");
    assert_eq!(entry["subject"], "address:127.0.0.1");
    assert_eq!(entry["detail"], json!({"failures": 5, "window_s": 60}));

    // A new minute counts afresh: one failure is a plain 401 again.
    let reply = list_jobs(&server, Some(UNKNOWN_TOKEN)).await;
    reply.assert_error(401, "unauthorized", &[]);
}

#[tokio::test]
async fn a_missing_or_malformed_authorization_header_counts_as_a_failure() {
    let (server, _clock) = with_limit(3).await;
    list_jobs(&server, None)
        .await
        .assert_error(401, "unauthorized", &["authorization"]);
    list_jobs(&server, None)
        .await
        .assert_error(401, "unauthorized", &["authorization"]);
    let not_bearer = send(
        request(&server, Method::GET, "/api/v1/jobs", None)
            .header("Authorization", format!("Basic {}", server.admin_token)),
    )
    .await;
    not_bearer.assert_error(401, "unauthorized", &["bearer"]);
    assert_throttled(&list_jobs(&server, None).await);
    assert_throttled(&list_jobs(&server, Some(&server.admin_token)).await);
}

#[tokio::test]
async fn a_valid_token_on_the_other_audiences_route_is_not_a_failed_authentication() {
    let (server, _clock) = with_limit(2).await;
    for _ in 0..5 {
        let reply = send(
            request(
                &server,
                Method::POST,
                "/api/v1/runner/heartbeat",
                Some(&server.admin_token),
            )
            .json(&json!({})),
        )
        .await;
        reply.assert_error(403, "forbidden", &[]);
    }
    let listed = list_jobs(&server, Some(&server.admin_token)).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
}

#[tokio::test]
async fn a_limit_of_zero_turns_throttling_off() {
    let (server, _clock) = with_limit(0).await;
    for attempt in 0..150 {
        let token = (attempt % 2 == 0).then_some(UNKNOWN_TOKEN);
        let reply = list_jobs(&server, token).await;
        assert_eq!(reply.status, 401, "attempt {attempt}: {}", reply.body);
    }
    let listed = list_jobs(&server, Some(&server.admin_token)).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(throttled_audit_entries(&server).await, Vec::<Value>::new());
}
