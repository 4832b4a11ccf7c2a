//! Shared helpers: servers with a wall or a manual clock, raw HTTP calls for when the exact
//! shape of an answer matters, and the assertions every error answer must pass.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use muster_client::api::{ClaimJobs, ClaimedJob, Job, JobState, SubmitJob};
use muster_client::{ClientError, JobQuery, MusterClient, RunnerClient};
use muster_core::Clock;
use muster_server::RawServerConfig;
use muster_test_support::{ManualClock, TestServer};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// A server on the wall clock with default settings.
pub(crate) async fn start() -> TestServer {
    TestServer::start().await.expect("start a test server")
}

/// A server whose "now" only moves when the test says so.
pub(crate) async fn start_manual() -> (TestServer, Arc<ManualClock>) {
    start_manual_with(|_| {}).await
}

pub(crate) async fn start_manual_with(
    adjust: impl FnOnce(&mut RawServerConfig),
) -> (TestServer, Arc<ManualClock>) {
    let clock = ManualClock::starting_now();
    let server = TestServer::start_with(Arc::clone(&clock) as Arc<dyn Clock>, adjust)
        .await
        .expect("start a test server with a manual clock");
    (server, clock)
}

/// A raw answer: status, headers and the body as text.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| {
            panic!(
                "HTTP {} answered a body that is not JSON ({error}): {:?}",
                self.status, self.body
            )
        })
    }

    /// The contract's error answer: this status, `{"error": {"code", "message"}}` and nothing
    /// else, with a message that mentions each of `mentions` (case-insensitively) so a person
    /// can tell which field or cause was wrong.
    #[track_caller]
    pub(crate) fn assert_error(&self, status: u16, code: &str, mentions: &[&str]) {
        assert_eq!(
            self.status, status,
            "expected HTTP {status} {code}, got {}: {}",
            self.status, self.body
        );
        let content_type = self
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        assert!(
            content_type.starts_with("application/json"),
            "an error answer is JSON, got content-type {content_type:?}: {}",
            self.body
        );
        let body = self.json();
        let object = body.as_object().expect("the error body is an object");
        assert_eq!(
            object.keys().collect::<Vec<_>>(),
            vec!["error"],
            "the error body has exactly one key, error: {body}"
        );
        let error = object["error"]
            .as_object()
            .expect("error is an object with code and message");
        let mut keys: Vec<_> = error.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, vec!["code", "message"], "{body}");
        assert_eq!(error["code"], code, "{body}");
        let message = error["message"]
            .as_str()
            .expect("error.message is a string");
        assert!(!message.trim().is_empty(), "error.message is empty: {body}");
        let lowered = message.to_lowercase();
        for mention in mentions {
            assert!(
                lowered.contains(&mention.to_lowercase()),
                "error.message should mention {mention:?}: {message:?}"
            );
        }
    }
}

/// The names of a JSON object's fields, sorted: to hold an answer to exactly the contract's
/// fields.
pub(crate) fn field_names(value: &Value) -> Vec<String> {
    let mut names: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("an object: {value}"))
        .keys()
        .cloned()
        .collect();
    names.sort_unstable();
    names
}

/// A plain HTTP client; a fresh one per call keeps tests independent of pooled connections.
pub(crate) fn http() -> reqwest::Client {
    muster_client::http_client_builder("http://127.0.0.1", &muster_client::ClientTls::system())
        .expect("set up an HTTP client")
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .expect("build an HTTP client")
}

pub(crate) async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.expect("read the answer body");
    Reply {
        status,
        headers,
        body,
    }
}

/// A request to `path` with `token` as bearer (none when `None`).
pub(crate) fn request(
    server: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> reqwest::RequestBuilder {
    let request = http().request(method, format!("{}{}", server.base_url, path));
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// A call with the admin token and an optional JSON body.
pub(crate) async fn admin(
    server: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Reply {
    let mut builder = request(server, method, path, Some(&server.admin_token));
    if let Some(body) = body {
        builder = builder.json(&body);
    }
    send(builder).await
}

/// A call with the admin token and a body sent exactly as given.
pub(crate) async fn admin_raw(
    server: &TestServer,
    method: Method,
    path: &str,
    body: &str,
) -> Reply {
    send(
        request(server, method, path, Some(&server.admin_token))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string()),
    )
    .await
}

/// A call with a runner token, an optional lease epoch header and a body sent as given.
pub(crate) async fn runner_raw(
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    epoch: Option<&str>,
    body: &str,
) -> Reply {
    let mut builder = request(server, method, path, Some(token))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string());
    if let Some(epoch) = epoch {
        builder = builder.header(muster_client::api::LEASE_EPOCH_HEADER, epoch);
    }
    send(builder).await
}

/// A job of `kind` with every other field at its default.
pub(crate) fn job(kind: &str) -> SubmitJob {
    SubmitJob {
        kind: kind.into(),
        ..Default::default()
    }
}

pub(crate) async fn submit(client: &MusterClient, spec: SubmitJob) -> Job {
    let (job, created) = client.submit_job(&spec).await.expect("submit a job");
    assert!(created, "a job without a reused idempotency key is new");
    job
}

pub(crate) fn claim_of(kinds: &[&str]) -> ClaimJobs {
    ClaimJobs {
        kinds: kinds.iter().map(|kind| kind.to_string()).collect(),
        ..Default::default()
    }
}

/// Claim exactly one job of `kind`.
pub(crate) async fn claim_one(runner: &RunnerClient, kind: &str) -> ClaimedJob {
    let mut jobs = runner
        .claim_job(&claim_of(&[kind]))
        .await
        .expect("claim a job");
    assert_eq!(
        jobs.len(),
        1,
        "expected one job of kind {kind}, got {jobs:?}"
    );
    jobs.pop().expect("one job")
}

/// Submit one job of `kind` and have `runner` claim it.
pub(crate) async fn submit_and_claim(
    client: &MusterClient,
    runner: &RunnerClient,
    kind: &str,
) -> (Job, ClaimedJob) {
    let job = submit(client, job(kind)).await;
    let claimed = claim_one(runner, kind).await;
    assert_eq!(claimed.id, job.id);
    (job, claimed)
}

/// Every job in the store, walking all pages.
pub(crate) async fn all_jobs(client: &MusterClient, mut query: JobQuery) -> Vec<Job> {
    let mut jobs = Vec::new();
    query.limit = Some(query.limit.unwrap_or(1000));
    loop {
        let page = client.list_jobs(&query).await.expect("list jobs");
        jobs.extend(page.items);
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return jobs,
        }
    }
}

pub(crate) async fn job_count(client: &MusterClient) -> usize {
    all_jobs(client, JobQuery::default()).await.len()
}

pub(crate) async fn count_in_state(client: &MusterClient, state: JobState) -> usize {
    all_jobs(
        client,
        JobQuery {
            state: Some(state),
            ..Default::default()
        },
    )
    .await
    .len()
}

/// The API error of a call that must fail.
#[track_caller]
pub(crate) fn api_error<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    status: u16,
    code: &str,
) -> ClientError {
    let error = result.expect_err("the call must be refused");
    assert_eq!(error.status(), Some(status), "{error}");
    assert_eq!(error.code_text(), Some(code), "{error}");
    error
}

/// The value of the Prometheus sample `series` (`name{labels}` as the exporter writes it).
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
}

/// The current value of a metric series of `server`.
pub(crate) async fn metric(server: &TestServer, series: &str) -> Option<f64> {
    let text = server
        .client()
        .metrics_text()
        .await
        .expect("scrape /metrics");
    sample(&text, series)
}

/// The audit entries of `action`, newest first (up to 500), read with the admin token.
pub(crate) async fn audited(server: &TestServer, action: &str) -> Vec<Value> {
    let reply = admin(
        server,
        Method::GET,
        &format!("/api/v1/admin/audit?action={action}&limit=500"),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Create the organization `name` with the admin token; answers its id.
pub(crate) async fn create_organization(server: &TestServer, name: &str) -> String {
    let created = admin(
        server,
        Method::POST,
        "/api/v1/admin/organizations",
        Some(serde_json::json!({"name": name})),
    )
    .await;
    assert_eq!(
        created.status, 201,
        "create organization {name}: {}",
        created.body
    );
    created.json()["id"]
        .as_str()
        .expect("an organization id")
        .to_string()
}

/// One server-sent event.
#[derive(Debug)]
pub(crate) struct SseEvent {
    pub(crate) event: String,
    pub(crate) id: Option<String>,
    pub(crate) data: String,
}

/// Reads server-sent events off a response body, skipping keep-alive comments.
pub(crate) struct SseReader {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseReader {
    pub(crate) fn new(response: reqwest::Response) -> SseReader {
        SseReader {
            stream: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event, or `None` when the stream ended. Bounded so a missing event fails the
    /// test instead of hanging it.
    pub(crate) async fn next(&mut self) -> Option<SseEvent> {
        tokio::time::timeout(Duration::from_secs(10), self.next_unbounded())
            .await
            .expect("an SSE event (or the end of the stream) within 10 s")
    }

    async fn next_unbounded(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut has_field = false;
                for line in block.lines() {
                    if line.starts_with(':') || line.is_empty() {
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    has_field = true;
                    match field {
                        "event" => event.event = value.to_string(),
                        "id" => event.id = Some(value.to_string()),
                        "data" => {
                            if !event.data.is_empty() {
                                event.data.push('\n');
                            }
                            event.data.push_str(value);
                        }
                        _ => {}
                    }
                }
                if has_field {
                    return Some(event);
                }
            }
            match self.stream.next().await {
                Some(chunk) => {
                    let chunk = chunk.expect("read the event stream");
                    self.buffer
                        .push_str(std::str::from_utf8(&chunk).expect("SSE is UTF-8"));
                }
                None => return None,
            }
        }
    }
}
