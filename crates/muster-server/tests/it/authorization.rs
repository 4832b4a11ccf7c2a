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
use muster_server::access::{
    CALLERS, Expected, ORGANIZATION_A, ORGANIZATION_B, ROUTE_ACCESS, RouteAccess, expected,
    render_markdown,
};
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
    spare_key: String,
    /// Objects of team-a, named in the paths of the routes that name one.
    job_of_a: String,
    runner_of_a: String,
    token_of_a: String,
    /// What team-b's callers must never see in an answer.
    secrets_of_a: Vec<String>,
}

async fn mint(
    server: &TestServer,
    name: &str,
    role: &str,
    organization: Option<&str>,
    expires_at: Option<time::OffsetDateTime>,
) -> muster_client::api::CreatedUserToken {
    server
        .client()
        .create_user_token(&muster_client::api::CreateUserToken {
            name: name.into(),
            role: role.into(),
            organization_id: organization.map(str::to_string),
            expires_at,
        })
        .await
        .expect("mint a user token")
}

async fn fixture(server: &TestServer) -> Fixture {
    let client = server.client();
    for organization in [ORGANIZATION_A, ORGANIZATION_B] {
        client
            .create_organization(&muster_client::api::CreateOrganization {
                name: organization.into(),
                allow_shared_runners: None,
            })
            .await
            .expect("create an organization");
    }
    let create = |name: &str, organization: Option<&str>| CreateRunner {
        name: name.into(),
        organization_id: organization.map(str::to_string),
        ..Default::default()
    };
    let runner = client
        .create_runner(&create("bystander", None))
        .await
        .expect("a runner");
    let runner_a = client
        .create_runner(&create("runner-a", Some(ORGANIZATION_A)))
        .await
        .expect("a runner of team-a");
    let runner_b = client
        .create_runner(&create("runner-b", Some(ORGANIZATION_B)))
        .await
        .expect("a runner of team-b");
    let spare_runner_a = client
        .create_runner(&create("spare-a", Some(ORGANIZATION_A)))
        .await
        .expect("a runner of team-a");
    let holder = client
        .create_runner(&create("holder", None))
        .await
        .expect("a runner");
    let revoked = client
        .create_runner(&create("revoked", None))
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
    let job_of_a = client
        .submit_job(&SubmitJob {
            kind: "auth-of-a".into(),
            organization_id: Some(ORGANIZATION_A.into()),
            ..Default::default()
        })
        .await
        .expect("submit a job of team-a")
        .0
        .id
        .to_string();
    let mut tokens: Vec<(&'static str, Option<String>)> = vec![
        ("none", None),
        ("malformed", Some("not a token".into())),
        ("unknown", Some(unknown)),
        ("revoked", Some(revoked.token)),
        (
            "user-unknown",
            Some(format!("muster_user_{}", "u".repeat(43))),
        ),
    ];
    let expiring = mint(
        server,
        "expiring",
        "admin",
        None,
        Some(time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1_200)),
    )
    .await;
    let revoked_user = mint(server, "revoked", "admin", None, None).await;
    client
        .revoke_user_token(revoked_user.token_info.id)
        .await
        .expect("revoke a user token");
    tokens.push(("user-expired", Some(expiring.token)));
    tokens.push(("user-revoked", Some(revoked_user.token)));
    tokens.push(("admin", Some(server.admin_token.clone())));
    for (caller, _) in CALLERS {
        if let Some((role, organization)) = caller.split_once('-')
            && muster_core::organization::Role::parse(role).is_ok()
        {
            let organization = match organization {
                "a" => Some(ORGANIZATION_A),
                "b" => Some(ORGANIZATION_B),
                _ => None,
            };
            let minted = mint(server, caller, role, organization, None).await;
            tokens.push((caller, Some(minted.token)));
        }
    }
    let spare_token_a = mint(server, "spare-a", "viewer", Some(ORGANIZATION_A), None).await;
    tokens.push(("runner", Some(runner.token)));
    tokens.push(("runner-a", Some(runner_a.token)));
    tokens.push(("runner-b", Some(runner_b.token)));
    tokens.push(("holder", Some(holder.token.clone())));
    tokens.push(("pending", Some(pending.token)));
    let holder_client =
        muster_client::RunnerClient::new(&server.base_url, &holder.token).expect("a runner client");
    // The expiring token has had its time by the time the cells are called.
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    let runner_of_a = spare_runner_a.runner.id.to_string();
    let token_of_a = spare_token_a.token_info.id.to_string();
    Fixture {
        tokens,
        holder: holder_client,
        artifact,
        spare_key: TestServer::new_runner_key().public_key().to_base64(),
        secrets_of_a: vec![
            job_of_a.clone(),
            runner_of_a.clone(),
            token_of_a.clone(),
            runner_a.runner.id.to_string(),
            ORGANIZATION_A.to_string(),
        ],
        job_of_a,
        runner_of_a,
        token_of_a,
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
/// (`artifact` is a stored artifact's id, `key` a runner key no one registered).
fn body_of(template: &str, artifact: &str, key: &str) -> Value {
    let unknown_job = "01900000-0000-7000-8000-000000000000";
    match template {
        "/api/v1/jobs" => json!({"kind": "auth-submitted"}),
        "/api/v1/jobs/batch" => json!({"jobs": [{"kind": "auth-submitted"}]}),
        "/api/v1/jobs/bulk" => json!({"action": "cancel", "ids": [unknown_job]}),
        "/api/v1/runners" => json!({"name": "made-by-the-matrix"}),
        "/api/v1/workloads" => {
            json!({"id": "made-by-the-matrix", "runner_id": unknown_job, "status": "starting"})
        }
        "/api/v1/workloads/{id}/status" | "/api/v1/runner/workloads/{id}/status" => {
            json!({"status": "running"})
        }
        "/api/v1/runner/workloads" => {
            json!({"id": "made-by-the-matrix", "runner_id": unknown_job, "status": "starting"})
        }
        "/api/v1/admin/tokens" => json!({"name": "made-by-the-matrix", "role": "viewer"}),
        "/api/v1/admin/runner-keys" => json!({"public_key": key}),
        "/api/v1/admin/organizations" => json!({"name": "made-by-the-matrix"}),
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

/// Everything the lists show, to tell that a refused call changed nothing. A user token's
/// `last_used_at` is left out: being refused is a use of the token.
async fn snapshot(server: &TestServer) -> Vec<Value> {
    let mut seen = Vec::new();
    for path in [
        "/api/v1/jobs?limit=500",
        "/api/v1/runners?limit=500",
        "/api/v1/admin/runner-keys",
        "/api/v1/admin/audit?limit=500",
        "/api/v1/kinds",
        "/api/v1/workloads?limit=500",
        "/api/v1/admin/organizations",
        "/api/v1/admin/tokens?limit=500",
    ] {
        let reply = admin(server, Method::GET, path, None).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        let mut listed = reply.json();
        if let Some(items) = listed["items"].as_array_mut() {
            for item in items {
                if let Some(item) = item.as_object_mut() {
                    item.remove("last_used_at");
                }
            }
        }
        seen.push(listed);
    }
    seen
}

/// The path of `template` with its parameters filled: the lease route's job, team-a's job,
/// runner or token, and ids that name nothing elsewhere (a caller past authorization then gets
/// 404, which is enough).
fn fill(template: &str, fixture: &Fixture, leased: Option<&str>) -> String {
    let unknown_uuid = "01900000-0000-7000-8000-000000000000";
    let id = if let Some(job) = leased {
        job
    } else if template.starts_with("/api/v1/jobs/") {
        &fixture.job_of_a
    } else if template.starts_with("/api/v1/runners/") {
        &fixture.runner_of_a
    } else if template.starts_with("/api/v1/admin/tokens/") {
        &fixture.token_of_a
    } else {
        unknown_uuid
    };
    template
        .replace("{id}", id)
        .replace("{kind}", "auth-kind")
        .replace("{fingerprint}", &format!("sha256:{}", "0".repeat(64)))
}

/// The order the callers call each route in: those that may only be refused or find nothing
/// first, so that what the others change (a job cancelled, a runner deleted) cannot pass for
/// a refusal; the holder last, since its allowed call may finish the job in the path.
fn calling_order(fixture: &Fixture) -> Vec<&(&'static str, Option<String>)> {
    let rank = |caller: &str| match caller {
        "holder" => 3,
        "admin" => 2,
        _ if caller.ends_with("-a") || caller.ends_with("-all") => 1,
        _ => 0,
    };
    let mut order: Vec<_> = fixture.tokens.iter().collect();
    order.sort_by_key(|(caller, _)| rank(caller));
    order
}

async fn walk_the_matrix(server: &TestServer) -> (usize, usize, usize) {
    let fixture = fixture(server).await;
    assert_eq!(
        fixture.tokens.len(),
        CALLERS.len(),
        "a token for every caller"
    );
    let mut cells = 0;
    let mut refused_checked = 0;
    let mut leak_checked = 0;
    let mut failures = Vec::new();
    for (index, (method, template, access)) in ROUTE_ACCESS.iter().enumerate() {
        let leased = match access {
            RouteAccess::LeaseHolder => Some(leased_job(server, &fixture, index).await),
            _ => None,
        };
        for (caller, token) in calling_order(&fixture) {
            cells += 1;
            let path = fill(template, &fixture, leased.as_deref());
            let method: Method = method.parse().expect("a method");
            let request = crate::support::request(server, method.clone(), &path, token.as_deref());
            let request = if template.ends_with("/artifacts") && method == Method::POST {
                request
                    .header("content-type", "application/octet-stream")
                    .body("x")
            } else if method == Method::POST || method == Method::PUT {
                request.json(&body_of(template, &fixture.artifact, &fixture.spare_key))
            } else {
                request
            };
            let expected = expected(*access, template, caller);
            let refused_status = match expected {
                Expected::Refused(status) => Some(status),
                Expected::Hidden => Some(404),
                Expected::Allowed => None,
            };
            let before = match refused_status {
                Some(_) => Some(snapshot(server).await),
                None => None,
            };
            let reply = send(request).await;
            // Open routes answer anyone without a token: what they show (the metrics name
            // organizations) is for the operators' network, not for a tenant, so they are no
            // tenant's answer to check.
            let tenant_answer = *access != RouteAccess::Open;
            if tenant_answer && caller.ends_with("-b") && (200..300).contains(&reply.status) {
                leak_checked += 1;
                for secret in &fixture.secrets_of_a {
                    if reply.body.contains(secret.as_str()) {
                        failures.push(format!(
                            "{method} {template} as {caller} answered something of team-a ({secret}): {}",
                            reply.body
                        ));
                    }
                }
            }
            match refused_status {
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
    (cells, refused_checked, leak_checked)
}

fn approval(raw: &mut RawServerConfig) {
    raw.enrollment = Some("approval".into());
}

#[tokio::test]
async fn every_route_answers_every_caller_as_the_matrix_says_on_sqlite() {
    let server = TestServer::start_with(Arc::new(SystemClock), approval)
        .await
        .expect("start a coordinator");
    let (cells, refused, leaks) = walk_the_matrix(&server).await;
    eprintln!(
        "authorization matrix on SQLite: {cells} cells, {refused} refusals checked unchanged, {leaks} answers to team-b checked for team-a's ids: 0 leaks"
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
    let (cells, refused, leaks) = walk_the_matrix(&server).await;
    eprintln!(
        "authorization matrix on PostgreSQL: {cells} cells, {refused} refusals checked unchanged, {leaks} answers to team-b checked for team-a's ids: 0 leaks"
    );
}
