//! Dashboard sessions over HTTP: signing in trades a user token (or the admin token) for an
//! HttpOnly, SameSite=Strict cookie that acts as the token; a state-changing request by cookie
//! needs the session's CSRF token and no other site's `Sec-Fetch-Site`; revoking the token,
//! changing the admin token, the session's lifetime and signing out each end it. Also the live
//! job stream the dashboard watches a job with.

use std::sync::Arc;

use muster_client::api::{CreateUserToken, JobHeartbeat};
use muster_test_support::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    Reply, SseReader, admin, claim_one, job, request, send, start, start_manual_with, submit,
    submit_and_claim,
};

/// A browser's view of one session: its two cookies, as the sign-in answer set them.
struct Browser {
    session: String,
    csrf: String,
    set_cookies: Vec<String>,
    body: Value,
}

impl Browser {
    fn cookie_header(&self) -> String {
        format!("muster_session={}; muster_csrf={}", self.session, self.csrf)
    }

    /// A request carrying the cookies only (no bearer token), as the dashboard sends it.
    fn request(&self, server: &TestServer, method: Method, path: &str) -> reqwest::RequestBuilder {
        request(server, method, path, None).header(reqwest::header::COOKIE, self.cookie_header())
    }

    /// The same, with the CSRF header a page of the dashboard adds.
    fn request_from_page(
        &self,
        server: &TestServer,
        method: Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.request(server, method, path)
            .header("X-CSRF-Token", &self.csrf)
            .header("Sec-Fetch-Site", "same-origin")
    }
}

fn cookie_value(set_cookies: &[String], name: &str) -> Option<String> {
    set_cookies.iter().find_map(|line| {
        line.split(';')
            .next()
            .and_then(|pair| pair.trim().strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    })
}

async fn try_sign_in(server: &TestServer, token: &str) -> Reply {
    send(
        request(server, Method::POST, "/api/v1/session", None)
            .header("Sec-Fetch-Site", "same-origin")
            .json(&json!({ "token": token })),
    )
    .await
}

async fn sign_in(server: &TestServer, token: &str) -> Browser {
    let reply = try_sign_in(server, token).await;
    assert_eq!(reply.status, 201, "sign in: {}", reply.body);
    let set_cookies: Vec<String> = reply
        .headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok().map(str::to_string))
        .collect();
    Browser {
        session: cookie_value(&set_cookies, "muster_session").expect("a session cookie"),
        csrf: cookie_value(&set_cookies, "muster_csrf").expect("a CSRF cookie"),
        body: reply.json(),
        set_cookies,
    }
}

async fn mint(
    server: &TestServer,
    role: &str,
    expires_at: Option<time::OffsetDateTime>,
) -> (String, String) {
    let minted = server
        .client()
        .create_user_token(&CreateUserToken {
            name: format!("{role} for the dashboard"),
            role: role.into(),
            organization_id: None,
            expires_at,
        })
        .await
        .expect("mint a user token");
    (minted.token, minted.token_info.id.to_string())
}

async fn audit_actions(server: &TestServer) -> Vec<String> {
    let audit = admin(server, Method::GET, "/api/v1/admin/audit?limit=500", None).await;
    audit.json()["items"]
        .as_array()
        .expect("audit items")
        .iter()
        .filter_map(|entry| entry["action"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn signing_in_sets_an_httponly_strict_cookie_that_acts_as_the_token() {
    let server = start().await;
    let (token, _) = mint(&server, "operator", None).await;
    let browser = sign_in(&server, &token).await;

    let session_line = browser
        .set_cookies
        .iter()
        .find(|line| line.starts_with("muster_session="))
        .expect("the session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(session_line.contains(attribute), "{session_line}");
    }
    assert!(
        !session_line.contains("Secure"),
        "plain HTTP: {session_line}"
    );
    let csrf_line = browser
        .set_cookies
        .iter()
        .find(|line| line.starts_with("muster_csrf="))
        .expect("the CSRF cookie");
    assert!(csrf_line.contains("SameSite=Strict"), "{csrf_line}");
    assert!(
        !csrf_line.contains("HttpOnly"),
        "the page reads it: {csrf_line}"
    );
    assert!(
        browser.session.starts_with("muster_session_"),
        "{}",
        browser.session
    );
    assert_ne!(
        browser.session, token,
        "the token itself is never the cookie"
    );
    assert_ne!(browser.csrf, browser.session);
    assert_eq!(
        browser.body["whoami"]["role"], "operator",
        "{}",
        browser.body
    );
    let body_text = browser.body.to_string();
    assert!(
        !body_text.contains(&browser.session) && !body_text.contains(&token),
        "neither the session nor the token is in the body: {body_text}"
    );

    let whoami = send(browser.request(&server, Method::GET, "/api/v1/whoami")).await;
    assert_eq!(whoami.status, 200, "{}", whoami.body);
    assert_eq!(whoami.json()["role"], "operator");
    assert_eq!(whoami.json()["kind"], "user");
    let jobs = send(browser.request(&server, Method::GET, "/api/v1/jobs")).await;
    assert_eq!(jobs.status, 200, "{}", jobs.body);
    // The runner protocol takes runner tokens only: a session is no runner.
    let claim = send(
        browser
            .request_from_page(&server, Method::POST, "/api/v1/runner/claim")
            .json(&json!({"kinds": ["any"]})),
    )
    .await;
    claim.assert_error(401, "unauthorized", &["Authorization"]);
    assert!(
        audit_actions(&server)
            .await
            .contains(&"session.opened".to_string())
    );

    // The admin token signs in too, as the bootstrap admin.
    let admin_browser = sign_in(&server, &server.admin_token).await;
    assert_eq!(admin_browser.body["whoami"]["kind"], "bootstrap-admin");
}

#[tokio::test]
async fn a_sign_in_with_a_bad_token_a_runner_token_or_from_another_site_is_refused() {
    let server = start().await;
    try_sign_in(&server, "muster_user_notatokenatall")
        .await
        .assert_error(401, "unauthorized", &["token"]);
    try_sign_in(&server, "")
        .await
        .assert_error(401, "unauthorized", &["token"]);
    let (runner, _) = server.runner("not-a-person").await.expect("a runner");
    try_sign_in(&server, &runner.token)
        .await
        .assert_error(403, "forbidden", &[]);
    send(
        request(&server, Method::POST, "/api/v1/session", None)
            .json(&json!({"tokn": server.admin_token})),
    )
    .await
    .assert_error(400, "invalid_input", &["token"]);
    // Another site may not sign this browser in as someone else.
    let (token, _) = mint(&server, "viewer", None).await;
    let refused = send(
        request(&server, Method::POST, "/api/v1/session", None)
            .header("Sec-Fetch-Site", "cross-site")
            .json(&json!({ "token": token })),
    )
    .await;
    refused.assert_error(403, "csrf_check_failed", &["another site"]);
    assert!(refused.headers.get(reqwest::header::SET_COOKIE).is_none());
    assert!(
        !audit_actions(&server)
            .await
            .contains(&"session.opened".to_string()),
        "no refused sign-in opened a session"
    );
}

#[tokio::test]
async fn a_change_by_cookie_needs_the_sessions_csrf_token_and_the_same_site() {
    let server = start().await;
    let (token, _) = mint(&server, "submitter", None).await;
    let browser = sign_in(&server, &token).await;
    let other = sign_in(&server, &token).await;
    let submit_by = |builder: reqwest::RequestBuilder| builder.json(&json!({"kind": "csrf"}));

    // A form another site posts carries the cookie but not the token.
    send(submit_by(browser.request(
        &server,
        Method::POST,
        "/api/v1/jobs",
    )))
    .await
    .assert_error(403, "csrf_check_failed", &["X-CSRF-Token"]);
    // Another session's token is no good either.
    send(submit_by(
        browser
            .request(&server, Method::POST, "/api/v1/jobs")
            .header("X-CSRF-Token", &other.csrf),
    ))
    .await
    .assert_error(403, "csrf_check_failed", &["not this session"]);
    // The right token from another site (a browser says so) is refused.
    send(submit_by(
        browser
            .request(&server, Method::POST, "/api/v1/jobs")
            .header("X-CSRF-Token", &browser.csrf)
            .header("Sec-Fetch-Site", "cross-site"),
    ))
    .await
    .assert_error(403, "csrf_check_failed", &["another site"]);
    let listed = admin(&server, Method::GET, "/api/v1/jobs?kind=csrf", None).await;
    assert_eq!(
        listed.json()["items"],
        json!([]),
        "nothing refused was submitted"
    );

    let accepted = send(submit_by(browser.request_from_page(
        &server,
        Method::POST,
        "/api/v1/jobs",
    )))
    .await;
    assert_eq!(accepted.status, 201, "{}", accepted.body);
    // A bearer token is never sent by a browser on its own: no CSRF token needed.
    let by_bearer = send(
        request(&server, Method::POST, "/api/v1/jobs", Some(&token))
            .header("Sec-Fetch-Site", "cross-site")
            .json(&json!({"kind": "csrf"})),
    )
    .await;
    assert_eq!(by_bearer.status, 201, "{}", by_bearer.body);
}

#[tokio::test]
async fn a_viewers_session_reads_but_its_forged_cancel_is_refused() {
    let server = start().await;
    let (token, _) = mint(&server, "viewer", None).await;
    let browser = sign_in(&server, &token).await;
    let pending = submit(&server.client(), job("viewed")).await;
    let path = format!("/api/v1/jobs/{}/cancel", pending.id);
    send(browser.request(&server, Method::POST, &path))
        .await
        .assert_error(403, "csrf_check_failed", &[]);
    send(browser.request_from_page(&server, Method::POST, &path))
        .await
        .assert_error(403, "forbidden", &["submitter"]);
    let seen = send(browser.request(
        &server,
        Method::GET,
        &format!("/api/v1/jobs/{}", pending.id),
    ))
    .await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.json()["state"], "pending", "the job is untouched");
}

#[tokio::test]
async fn revoking_the_token_ends_its_sessions_and_signing_out_ends_one() {
    let server = start().await;
    let (token, token_id) = mint(&server, "operator", None).await;
    let first = sign_in(&server, &token).await;
    let second = sign_in(&server, &token).await;

    let signed_out =
        send(first.request_from_page(&server, Method::DELETE, "/api/v1/session")).await;
    assert_eq!(signed_out.status, 204, "{}", signed_out.body);
    let cleared: Vec<String> = signed_out
        .headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok().map(str::to_string))
        .collect();
    for name in ["muster_session=", "muster_csrf="] {
        assert!(
            cleared
                .iter()
                .any(|line| line.starts_with(name) && line.contains("Max-Age=0")),
            "{name} cleared: {cleared:?}"
        );
    }
    send(first.request(&server, Method::GET, "/api/v1/whoami"))
        .await
        .assert_error(401, "unauthorized", &["session"]);
    let still = send(second.request(&server, Method::GET, "/api/v1/whoami")).await;
    assert_eq!(
        still.status, 200,
        "the other session lives on: {}",
        still.body
    );

    let revoked = admin(
        &server,
        Method::DELETE,
        &format!("/api/v1/admin/tokens/{token_id}"),
        None,
    )
    .await;
    assert_eq!(revoked.status, 204, "{}", revoked.body);
    send(second.request(&server, Method::GET, "/api/v1/whoami"))
        .await
        .assert_error(401, "unauthorized", &[]);
    let actions = audit_actions(&server).await;
    assert!(
        actions.contains(&"session.ended".to_string()),
        "{actions:?}"
    );
}

#[tokio::test]
async fn a_session_lasts_its_lifetime_and_never_past_its_tokens_expiry() {
    let (server, clock) = start_manual_with(|config| {
        config.session_ttl = Some("1h".into());
    })
    .await;
    let (token, _) = mint(&server, "viewer", None).await;
    let browser = sign_in(&server, &token).await;
    let session_line = browser
        .set_cookies
        .iter()
        .find(|line| line.starts_with("muster_session="))
        .expect("the session cookie");
    assert!(session_line.contains("Max-Age=3600"), "{session_line}");
    clock.advance_s(3_599);
    let within = send(browser.request(&server, Method::GET, "/api/v1/whoami")).await;
    assert_eq!(within.status, 200, "{}", within.body);
    clock.advance_s(1);
    send(browser.request(&server, Method::GET, "/api/v1/whoami"))
        .await
        .assert_error(401, "token_expired", &["session expired"]);

    let now = time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(server.clock.now().as_millis()) * 1_000_000,
    )
    .expect("a time");
    let (short, _) = mint(&server, "viewer", Some(now + time::Duration::minutes(10))).await;
    let short_browser = sign_in(&server, &short).await;
    let expires_at = short_browser.body["expires_at"]
        .as_str()
        .expect("expires_at");
    let expires_at =
        time::OffsetDateTime::parse(expires_at, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339");
    assert!(
        expires_at <= now + time::Duration::minutes(10),
        "the session ends with its token: {expires_at}"
    );
    clock.advance_s(600);
    send(short_browser.request(&server, Method::GET, "/api/v1/whoami"))
        .await
        .assert_error(401, "token_expired", &[]);
}

#[tokio::test]
async fn changing_the_admin_token_ends_the_admins_sessions() {
    let server = start().await;
    let browser = sign_in(&server, &server.admin_token).await;
    let clock = Arc::clone(&server.clock);
    let server = server
        .restart_with(clock, |config| {
            config.admin_token = Some("a-new-admin-token-for-this-coordinator".into());
        })
        .await
        .expect("restart with another admin token");
    send(browser.request(&server, Method::GET, "/api/v1/whoami"))
        .await
        .assert_error(401, "unauthorized", &["admin token"]);
}

/// `GET /api/v1/jobs/{id}/events` as a live stream, by the browser's session.
async fn open_job_stream(
    server: &TestServer,
    browser: &Browser,
    job: uuid::Uuid,
) -> reqwest::Response {
    browser
        .request(server, Method::GET, &format!("/api/v1/jobs/{job}/events"))
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await
        .expect("open the job stream")
}

#[tokio::test]
async fn the_job_stream_sends_the_job_at_once_after_each_change_and_ends_when_it_finishes() {
    let server = start().await;
    let (token, _) = mint(&server, "viewer", None).await;
    let browser = sign_in(&server, &token).await;
    let (_, runner) = server.runner("streamed").await.expect("a runner");
    let pending = submit(&server.client(), job("streamed")).await;
    let response = open_job_stream(&server, &browser, pending.id).await;
    assert_eq!(response.status(), 200);
    let mut events = SseReader::new(response);
    let state_of = |event: &crate::support::SseEvent| -> String {
        assert_eq!(event.event, "job", "{event:?}");
        let job: Value = serde_json::from_str(&event.data).expect("a job");
        job["state"].as_str().expect("a state").to_string()
    };
    let first = events.next().await.expect("the job at once");
    assert_eq!(state_of(&first), "pending");

    let claimed = claim_one(&runner, "streamed").await;
    assert_eq!(claimed.id, pending.id);
    assert_eq!(state_of(&events.next().await.expect("claimed")), "claimed");
    runner
        .job_heartbeat(
            claimed.id,
            Some(claimed.lease.epoch),
            &JobHeartbeat::default(),
        )
        .await
        .expect("heartbeat");
    assert_eq!(state_of(&events.next().await.expect("running")), "running");
    runner
        .complete_job(claimed.id, Some(claimed.lease.epoch), json!({"ok": true}))
        .await
        .expect("complete");
    let mut last = state_of(&events.next().await.expect("finished"));
    // A heartbeat's lease change may come as its own event before the completion.
    while last == "running" {
        last = state_of(&events.next().await.expect("finished"));
    }
    assert_eq!(last, "completed");
    let end = events.next().await.expect("the end event");
    assert_eq!(end.event, "end", "{end:?}");
    assert!(events.next().await.is_none(), "the stream ends after end");

    // Without asking for a stream: the job now, as JSON.
    let plain = send(browser.request(
        &server,
        Method::GET,
        &format!("/api/v1/jobs/{}/events", pending.id),
    ))
    .await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.json()["state"], "completed");
    // Another job finished already: the stream is that job, then its end.
    let (finished, claimed) = submit_and_claim(&server.client(), &runner, "streamed").await;
    runner
        .complete_job(claimed.id, Some(claimed.lease.epoch), json!({}))
        .await
        .expect("complete");
    let response = open_job_stream(&server, &browser, finished.id).await;
    let mut events = SseReader::new(response);
    assert_eq!(
        state_of(&events.next().await.expect("the job")),
        "completed"
    );
    assert_eq!(events.next().await.expect("end").event, "end");
}
