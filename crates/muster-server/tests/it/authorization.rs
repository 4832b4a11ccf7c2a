//! The authorization matrix (`muster_server::access`): the OpenAPI document's routes are exactly
//! the table's, `docs/authorization.md` is what the table renders, and every cell (each route
//! called by each kind of caller) answers as the table says against a real coordinator, on
//! SQLite and on PostgreSQL, a refused call changing nothing any list shows.

use std::collections::BTreeSet;
use std::sync::Arc;

use muster_client::RunnerDescription;
use muster_client::api::{ClaimJobs, CreateRunner, SubmitJob};
use muster_core::SystemClock;
use muster_server::RawServerConfig;
use muster_server::access::{CALLERS, ROUTE_ACCESS, RouteAccess, refusal, render_markdown};
use muster_test_support::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{admin, send};

const WRITE_DOC: &str = "MUSTER_WRITE_AUTHORIZATION_DOC";

#[tokio::test]
async fn the_openapi_document_has_exactly_the_routes_of_the_matrix() {
    let server = crate::support::start().await;
    let document = admin(&server, Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(document.status, 200);
    let mut served = BTreeSet::new();
    for (path, operations) in document.json()["paths"].as_object().expect("paths").iter() {
        for method in operations.as_object().expect("operations").keys() {
            served.insert((method.to_uppercase(), path.clone()));
        }
    }
    let table: BTreeSet<(String, String)> = ROUTE_ACCESS
        .iter()
        .map(|(method, path, _)| (method.to_string(), path.to_string()))
        .collect();
    let missing: Vec<_> = served.difference(&table).collect();
    let stale: Vec<_> = table.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "routes with no row in muster_server::access::ROUTE_ACCESS (say who may call them): {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "rows for routes that do not exist: {stale:?}"
    );
}

#[test]
fn docs_authorization_md_is_the_matrix_rendered() {
    let path = muster_test_support::workspace_file("docs/authorization.md");
    let rendered = render_markdown();
    if std::env::var_os(WRITE_DOC).is_some() {
        std::fs::write(&path, &rendered).expect("write docs/authorization.md");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "docs/authorization.md is not the matrix as it stands: run `{WRITE_DOC}=1 cargo test -p muster-server --test it authorization` and commit it"
    );
}

/// The tokens of each kind of caller, and the objects the cells name.
struct Fixture {
    tokens: Vec<(&'static str, Option<String>)>,
    holder: muster_client::RunnerClient,
    artifact: String,
}

async fn fixture(server: &TestServer) -> Fixture {
    let client = server.client();
    let create = |name: &str| CreateRunner {
        name: name.into(),
        ..Default::default()
    };
    let runner = client
        .create_runner(&create("bystander"))
        .await
        .expect("a runner");
    let holder = client
        .create_runner(&create("holder"))
        .await
        .expect("a runner");
    let revoked = client
        .create_runner(&create("revoked"))
        .await
        .expect("a runner");
    client
        .delete_runner(revoked.runner.id)
        .await
        .expect("delete the runner");
    let key = TestServer::new_runner_key();
    let (pending, _) = server
        .register_key(
            &key,
            &RunnerDescription {
                name: "pending".into(),
                hostname: "pending".into(),
                kinds: vec!["auth".into()],
                ..Default::default()
            },
        )
        .await
        .expect("a registration waiting for approval");
    let unknown = format!("muster_runner_{}", "u".repeat(43));
    let artifact = client
        .upload_artifact(futures::stream::iter([Ok::<_, std::io::Error>(
            bytes::Bytes::from_static(b"named by the matrix"),
        )]))
        .await
        .expect("upload an artifact")
        .id;
    let holder_client =
        muster_client::RunnerClient::new(&server.base_url, &holder.token).expect("a runner client");
    Fixture {
        tokens: vec![
            ("none", None),
            ("malformed", Some("not a token".into())),
            ("unknown", Some(unknown)),
            ("revoked", Some(revoked.token)),
            ("admin", Some(server.admin_token.clone())),
            ("runner", Some(runner.token)),
            ("holder", Some(holder.token)),
            ("pending", Some(pending.token)),
        ],
        holder: holder_client,
        artifact,
    }
}

/// A job of its own kind, leased by the holder: the job in the path of a lease route's cells.
async fn leased_job(server: &TestServer, fixture: &Fixture, index: usize) -> String {
    let kind = format!("auth-{index}");
    server
        .client()
        .submit_job(&SubmitJob {
            kind: kind.clone(),
            ..Default::default()
        })
        .await
        .expect("submit");
    let claimed = fixture
        .holder
        .claim_job(&ClaimJobs {
            kinds: vec![kind],
            max_jobs: Some(1),
            ..Default::default()
        })
        .await
        .expect("claim");
    claimed
        .first()
        .map(|job| job.id.to_string())
        .expect("the holder leased the job")
}

/// A body each route takes, so that a refusal is about who calls and not about what was sent
/// (`artifact` is a stored artifact's id).
fn body_of(template: &str, artifact: &str) -> Value {
    let unknown_job = "01900000-0000-7000-8000-000000000000";
    match template {
        "/api/v1/runner/claim" => json!({"kinds": ["auth-none"], "wait_ms": 0}),
        "/api/v1/runner/complete" => json!({"items": [{"id": unknown_job, "result": {}}]}),
        "/api/v1/runner/jobs/{id}/progress" => {
            json!({"progress": 10.0})
        }
        "/api/v1/runner/jobs/{id}/log" => json!({"message": "from the matrix"}),
        "/api/v1/runner/jobs/{id}/outputs" => json!({"name": "out", "artifact_id": artifact}),
        "/api/v1/runner/jobs/{id}/dag" => json!({"nodes": [], "edges": []}),
        _ => json!({}),
    }
}

/// Everything the lists show, to tell that a refused call changed nothing.
async fn snapshot(server: &TestServer) -> Vec<Value> {
    let mut seen = Vec::new();
    for path in [
        "/api/v1/jobs?limit=500",
        "/api/v1/runners?limit=500",
        "/api/v1/admin/runner-keys",
        "/api/v1/admin/audit?limit=500",
        "/api/v1/kinds",
        "/api/v1/admin/organizations",
    ] {
        let reply = admin(server, Method::GET, path, None).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        seen.push(reply.json());
    }
    seen
}

/// The path of `template` with its parameters filled: `job` for a lease route's job, ids that
/// name nothing elsewhere (a caller past authorization then gets 404, which is enough).
fn fill(template: &str, job: Option<&str>) -> String {
    let unknown_uuid = "01900000-0000-7000-8000-000000000000";
    template
        .replace("{id}", job.unwrap_or(unknown_uuid))
        .replace("{kind}", "auth-kind")
        .replace("{fingerprint}", &format!("sha256:{}", "0".repeat(64)))
}

async fn walk_the_matrix(server: &TestServer) -> (usize, usize) {
    let fixture = fixture(server).await;
    let mut cells = 0;
    let mut refused_checked = 0;
    let mut failures = Vec::new();
    for (index, (method, template, access)) in ROUTE_ACCESS.iter().enumerate() {
        let job = match access {
            RouteAccess::LeaseHolder => Some(leased_job(server, &fixture, index).await),
            _ => None,
        };
        // The holder goes last: its allowed call may finish the job the others were refused on.
        let mut order: Vec<&(&str, Option<String>)> = fixture
            .tokens
            .iter()
            .filter(|(caller, _)| *caller != "holder")
            .collect();
        order.extend(
            fixture
                .tokens
                .iter()
                .filter(|(caller, _)| *caller == "holder"),
        );
        for (caller, token) in order {
            cells += 1;
            let path = fill(template, job.as_deref());
            let method: Method = method.parse().expect("a method");
            let request = crate::support::request(server, method.clone(), &path, token.as_deref());
            let request = if template.ends_with("/artifacts") && method == Method::POST {
                request
                    .header("content-type", "application/octet-stream")
                    .body("x")
            } else if method == Method::POST || method == Method::PUT {
                request.json(&body_of(template, &fixture.artifact))
            } else {
                request
            };
            let expected = refusal(*access, caller);
            let before = match expected {
                Some(_) => Some(snapshot(server).await),
                None => None,
            };
            let reply = send(request).await;
            match expected {
                Some(status) => {
                    refused_checked += 1;
                    if reply.status != status {
                        failures.push(format!(
                            "{method} {template} as {caller}: expected {status}, got {} {}",
                            reply.status, reply.body
                        ));
                    }
                    if before != Some(snapshot(server).await) {
                        failures.push(format!(
                            "{method} {template} as {caller} was refused but changed something"
                        ));
                    }
                }
                None => {
                    let refused_status = matches!(reply.status, 401 | 403)
                        || (*access == RouteAccess::LeaseHolder && reply.status == 409);
                    if refused_status {
                        failures.push(format!(
                            "{method} {template} as {caller}: expected to get past authorization, got {} {}",
                            reply.status, reply.body
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells disagree with the matrix:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(cells, ROUTE_ACCESS.len() * CALLERS.len());
    (cells, refused_checked)
}

fn approval(raw: &mut RawServerConfig) {
    raw.enrollment = Some("approval".into());
}

#[tokio::test]
async fn every_route_answers_every_caller_as_the_matrix_says_on_sqlite() {
    let server = TestServer::start_with(Arc::new(SystemClock), approval)
        .await
        .expect("start a coordinator");
    let (cells, refused) = walk_the_matrix(&server).await;
    eprintln!(
        "authorization matrix on SQLite: {cells} cells, {refused} refusals checked unchanged"
    );
}

#[tokio::test]
async fn every_route_answers_every_caller_as_the_matrix_says_on_postgres() {
    let url = muster_test_support::temp_postgres_database()
        .await
        .expect("make a test database");
    let server = TestServer::start_with(Arc::new(SystemClock), |raw| {
        raw.database = Some(url);
        approval(raw);
    })
    .await
    .expect("start a coordinator on PostgreSQL");
    let (cells, refused) = walk_the_matrix(&server).await;
    eprintln!(
        "authorization matrix on PostgreSQL: {cells} cells, {refused} refusals checked unchanged"
    );
}
