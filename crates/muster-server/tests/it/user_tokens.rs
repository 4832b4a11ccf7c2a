//! User tokens over HTTP (`/api/v1/admin/tokens`, `/api/v1/whoami`): minted with a role and an
//! organization, shown once and stored hashed; each role may do what the contract gives it and
//! is told the role it lacks otherwise; a scoped token finds nothing of another organization;
//! expiry and revocation hold from the next request on (on every coordinator sharing a
//! PostgreSQL database too); bad requests are refused with nothing stored.

use std::sync::Arc;

use muster_core::SystemClock;
use muster_test_support::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{admin, create_organization, request, send, start, start_manual};

const TOKENS: &str = "/api/v1/admin/tokens";

/// Mint a token with the admin token; answers the whole answer (`token_info`, `token`).
async fn mint(server: &TestServer, body: Value) -> Value {
    let minted = admin(server, Method::POST, TOKENS, Some(body.clone())).await;
    assert_eq!(minted.status, 201, "mint {body}: {}", minted.body);
    minted.json()
}

fn token_of(minted: &Value) -> String {
    minted["token"].as_str().expect("a token").to_string()
}

async fn as_token(
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> crate::support::Reply {
    let mut builder = request(server, method, path, Some(token));
    if let Some(body) = body {
        builder = builder.json(&body);
    }
    send(builder).await
}

async fn token_count(server: &TestServer) -> usize {
    let listed = admin(server, Method::GET, &format!("{TOKENS}?limit=500"), None).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    listed.json()["items"].as_array().expect("items").len()
}

#[tokio::test]
async fn a_token_acts_with_its_role_in_its_organization_and_sees_nothing_of_another() {
    let server = start().await;
    let acme = create_organization(&server, "Acme Corp").await;
    let viewer = mint(
        &server,
        json!({"name": "alice", "role": "viewer", "organization_id": acme}),
    )
    .await;
    let submitter = token_of(
        &mint(
            &server,
            json!({"name": "ci", "role": "submitter", "organization_id": acme}),
        )
        .await,
    );
    let info = &viewer["token_info"];
    assert_eq!(info["role"], "viewer");
    assert_eq!(info["organization_id"], acme.as_str());
    assert_eq!(info["last_used_at"], Value::Null);
    assert_eq!(info["expires_at"], Value::Null);
    let viewer_token = token_of(&viewer);
    assert!(viewer_token.starts_with("muster_user_"));
    assert!(viewer_token.len() >= "muster_user_".len() + 32);
    let listed = admin(&server, Method::GET, TOKENS, None).await;
    assert!(
        !listed.body.contains(&viewer_token),
        "lists never show a token: {}",
        listed.body
    );

    let whoami = as_token(&server, &viewer_token, Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(whoami.status, 200, "{}", whoami.body);
    assert_eq!(whoami.json()["kind"], "user");
    assert_eq!(whoami.json()["role"], "viewer");
    assert_eq!(whoami.json()["organization_id"], acme.as_str());

    // A job of default, submitted with the admin token, is not acme's to see.
    let other = admin(
        &server,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"kind": "build"})),
    )
    .await;
    assert_eq!(other.status, 201, "{}", other.body);
    let other_id = other.json()["id"].as_str().expect("id").to_string();

    // The submitter's job goes to its own organization without naming it.
    let submitted = as_token(
        &server,
        &submitter,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"kind": "build"})),
    )
    .await;
    assert_eq!(submitted.status, 201, "{}", submitted.body);
    assert_eq!(submitted.json()["organization_id"], acme.as_str());
    let own_id = submitted.json()["id"].as_str().expect("id").to_string();
    as_token(
        &server,
        &submitter,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"kind": "build", "organization_id": "default"})),
    )
    .await
    .assert_error(404, "organization_not_found", &["default"]);

    // The viewer reads its organization's jobs and no other's.
    let listed = as_token(&server, &viewer_token, Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let ids: Vec<String> = listed.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|job| job["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids, std::slice::from_ref(&own_id));
    assert!(!listed.body.contains(&other_id));
    for path in [
        format!("/api/v1/jobs/{other_id}"),
        format!("/api/v1/jobs/{other_id}/logs"),
        format!("/api/v1/jobs/{other_id}/dag"),
    ] {
        as_token(&server, &viewer_token, Method::GET, &path, None)
            .await
            .assert_error(404, "not_found", &[&other_id]);
    }
    // The live log stream of another organization's job does not open either.
    let stream = send(
        request(
            &server,
            Method::GET,
            &format!("/api/v1/jobs/{other_id}/logs"),
            Some(&viewer_token),
        )
        .header(reqwest::header::ACCEPT, "text/event-stream"),
    )
    .await;
    stream.assert_error(404, "not_found", &[&other_id]);
    // A cursor does not lead out of the organization: every page, followed to its end, holds
    // the token's organization's jobs alone.
    let mut cursor: Option<String> = None;
    let mut paged = Vec::new();
    for _ in 0..10 {
        let path = match &cursor {
            Some(cursor) => format!("/api/v1/jobs?limit=1&cursor={cursor}"),
            None => "/api/v1/jobs?limit=1".to_string(),
        };
        let page = as_token(&server, &viewer_token, Method::GET, &path, None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let page = page.json();
        for job in page["items"].as_array().expect("items") {
            paged.push(job["id"].as_str().expect("id").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(
        paged,
        std::slice::from_ref(&own_id),
        "paging shows acme's job alone"
    );
    as_token(
        &server,
        &viewer_token,
        Method::GET,
        "/api/v1/jobs?organization_id=default",
        None,
    )
    .await
    .assert_error(404, "organization_not_found", &["default"]);
    let own = as_token(
        &server,
        &viewer_token,
        Method::GET,
        &format!("/api/v1/jobs/{own_id}"),
        None,
    )
    .await;
    assert_eq!(own.status, 200, "{}", own.body);

    // The viewer may not cancel, and is told the role that may; the submitter may, but only
    // its own organization's job: the other one does not exist for it.
    as_token(
        &server,
        &viewer_token,
        Method::POST,
        &format!("/api/v1/jobs/{own_id}/cancel"),
        None,
    )
    .await
    .assert_error(403, "forbidden", &["submitter"]);
    as_token(
        &server,
        &submitter,
        Method::POST,
        &format!("/api/v1/jobs/{other_id}/cancel"),
        None,
    )
    .await
    .assert_error(404, "not_found", &[&other_id]);
    let other_now = admin(
        &server,
        Method::GET,
        &format!("/api/v1/jobs/{other_id}"),
        None,
    )
    .await;
    assert_eq!(
        other_now.json()["state"],
        "pending",
        "the refused cancel changed nothing"
    );
    let cancelled = as_token(
        &server,
        &submitter,
        Method::POST,
        &format!("/api/v1/jobs/{own_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.json()["state"], "cancelled");

    // Runners: an operator's runner goes to its organization; a viewer lists only those.
    let operator = token_of(
        &mint(
            &server,
            json!({"name": "ops", "role": "operator", "organization_id": acme}),
        )
        .await,
    );
    let created = as_token(
        &server,
        &operator,
        Method::POST,
        "/api/v1/runners",
        Some(json!({"name": "acme-box"})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["runner"]["organization_id"], acme.as_str());
    let shared = admin(
        &server,
        Method::POST,
        "/api/v1/runners",
        Some(json!({"name": "shared-box"})),
    )
    .await;
    assert_eq!(shared.status, 201, "{}", shared.body);
    let shared_id = shared.json()["runner"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let runners = as_token(&server, &viewer_token, Method::GET, "/api/v1/runners", None).await;
    assert_eq!(runners.status, 200, "{}", runners.body);
    let names: Vec<Value> = runners.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|runner| runner["name"].clone())
        .collect();
    assert_eq!(names, [json!("acme-box")]);
    as_token(
        &server,
        &operator,
        Method::DELETE,
        &format!("/api/v1/runners/{shared_id}"),
        None,
    )
    .await
    .assert_error(404, "not_found", &[&shared_id]);

    // Using a token records when, in the list.
    let listed = admin(&server, Method::GET, TOKENS, None).await;
    let alice = listed.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|token| token["name"] == "alice")
        .cloned()
        .expect("alice's token is listed");
    assert!(alice["last_used_at"].is_string(), "{alice}");
}

#[tokio::test]
async fn expiry_and_revocation_hold_from_the_next_request_on() {
    let (server, clock) = start_manual().await;
    let expires_at = time::OffsetDateTime::now_utc() + time::Duration::minutes(10);
    let expires_text = expires_at
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format a time");
    let expiring = token_of(
        &mint(
            &server,
            json!({"name": "short", "role": "viewer", "expires_at": expires_text}),
        )
        .await,
    );
    let lasting = mint(&server, json!({"name": "long", "role": "viewer"})).await;
    let lasting_token = token_of(&lasting);
    let lasting_id = lasting["token_info"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    for token in [&expiring, &lasting_token] {
        let reply = as_token(&server, token, Method::GET, "/api/v1/jobs", None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    clock.advance_s(11 * 60);
    as_token(&server, &expiring, Method::GET, "/api/v1/jobs", None)
        .await
        .assert_error(401, "token_expired", &["expired"]);
    let revoked = admin(
        &server,
        Method::DELETE,
        &format!("{TOKENS}/{lasting_id}"),
        None,
    )
    .await;
    assert_eq!(revoked.status, 204, "{}", revoked.body);
    as_token(&server, &lasting_token, Method::GET, "/api/v1/jobs", None)
        .await
        .assert_error(401, "unauthorized", &["token"]);
    admin(
        &server,
        Method::DELETE,
        &format!("{TOKENS}/{lasting_id}"),
        None,
    )
    .await
    .assert_error(404, "not_found", &[&lasting_id]);
    let audit = admin(
        &server,
        Method::GET,
        "/api/v1/admin/audit?action=user_token.revoked",
        None,
    )
    .await;
    assert!(
        audit.body.contains(&lasting_id),
        "the revocation is audited: {}",
        audit.body
    );
}

#[tokio::test]
async fn a_revoked_token_fails_at_once_on_another_coordinator_sharing_the_database() {
    let url = muster_test_support::temp_postgres_database()
        .await
        .expect("make a test database");
    let first = TestServer::start_with(Arc::new(SystemClock), |raw| {
        raw.database = Some(url.clone());
    })
    .await
    .expect("start a coordinator on PostgreSQL");
    let second = TestServer::start_with(Arc::new(SystemClock), |raw| {
        raw.database = Some(url.clone());
    })
    .await
    .expect("start a second coordinator on the same database");
    let minted = mint(&first, json!({"name": "shared", "role": "viewer"})).await;
    let token = token_of(&minted);
    let id = minted["token_info"]["id"].as_str().expect("id").to_string();
    let before = as_token(&second, &token, Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(before.status, 200, "{}", before.body);
    let revoked = admin(&first, Method::DELETE, &format!("{TOKENS}/{id}"), None).await;
    assert_eq!(revoked.status, 204, "{}", revoked.body);
    as_token(&second, &token, Method::GET, "/api/v1/jobs", None)
        .await
        .assert_error(401, "unauthorized", &["token"]);
}

#[tokio::test]
async fn bad_token_requests_are_refused_naming_the_cause_with_nothing_stored() {
    let server = start().await;
    let acme = create_organization(&server, "acme").await;
    let other = create_organization(&server, "other").await;
    let acme_admin = token_of(
        &mint(
            &server,
            json!({"name": "acme-admin", "role": "admin", "organization_id": acme}),
        )
        .await,
    );
    let viewer = token_of(
        &mint(
            &server,
            json!({"name": "acme-viewer", "role": "viewer", "organization_id": acme}),
        )
        .await,
    );
    let other_token = mint(
        &server,
        json!({"name": "other-viewer", "role": "viewer", "organization_id": other}),
    )
    .await;
    let other_token_id = other_token["token_info"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let count = token_count(&server).await;
    let past = "2020-01-01T00:00:00Z";
    for (body, status, code, mentions) in [
        (
            json!({"name": "x", "role": "superuser"}),
            400,
            "invalid_input",
            vec!["role", "superuser"],
        ),
        (
            json!({"name": "", "role": "viewer"}),
            400,
            "invalid_input",
            vec!["name"],
        ),
        (
            json!({"name": "x", "role": "viewer", "expires_at": past}),
            400,
            "invalid_input",
            vec!["expires_at"],
        ),
        (
            json!({"name": "x", "role": "viewer", "organization_id": "nowhere"}),
            404,
            "organization_not_found",
            vec!["nowhere"],
        ),
    ] {
        admin(&server, Method::POST, TOKENS, Some(body.clone()))
            .await
            .assert_error(status, code, &mentions);
    }
    // A scoped admin mints for its own organization only: another one does not exist for it.
    as_token(
        &server,
        &acme_admin,
        Method::POST,
        TOKENS,
        Some(json!({"name": "x", "role": "viewer", "organization_id": other})),
    )
    .await
    .assert_error(404, "organization_not_found", &[&other]);
    as_token(
        &server,
        &acme_admin,
        Method::DELETE,
        &format!("{TOKENS}/{other_token_id}"),
        None,
    )
    .await
    .assert_error(404, "not_found", &[&other_token_id]);
    // Below admin, no token is minted at all, and the caller is told which role may.
    as_token(
        &server,
        &viewer,
        Method::POST,
        TOKENS,
        Some(json!({"name": "x", "role": "viewer"})),
    )
    .await
    .assert_error(403, "forbidden", &["admin"]);
    // A user token is no runner's and manages no organization.
    as_token(
        &server,
        &acme_admin,
        Method::POST,
        "/api/v1/runner/heartbeat",
        Some(json!({})),
    )
    .await
    .assert_error(403, "forbidden", &["runner"]);
    as_token(
        &server,
        &acme_admin,
        Method::GET,
        "/api/v1/admin/organizations",
        None,
    )
    .await
    .assert_error(403, "forbidden", &["bootstrap admin"]);
    assert_eq!(token_count(&server).await, count, "nothing was stored");

    // A scoped admin's own mint lands in its organization without naming it.
    let minted = as_token(
        &server,
        &acme_admin,
        Method::POST,
        TOKENS,
        Some(json!({"name": "acme-ci", "role": "submitter"})),
    )
    .await;
    assert_eq!(minted.status, 201, "{}", minted.body);
    assert_eq!(
        minted.json()["token_info"]["organization_id"],
        acme.as_str()
    );
    let own_list = as_token(&server, &acme_admin, Method::GET, TOKENS, None).await;
    assert_eq!(own_list.status, 200, "{}", own_list.body);
    assert!(
        own_list.json()["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|token| token["organization_id"] == acme.as_str()),
        "a scoped admin lists its organization's tokens only: {}",
        own_list.body
    );
    assert!(!own_list.body.contains(&other_token_id));
}

#[tokio::test]
async fn an_admin_of_one_organization_reads_its_audit_entries_and_no_others() {
    let server = start().await;
    let acme = create_organization(&server, "acme").await;
    let other = create_organization(&server, "other").await;
    let acme_admin = mint(
        &server,
        json!({"name": "acme-admin", "role": "admin", "organization_id": acme}),
    )
    .await;
    let acme_admin_token = token_of(&acme_admin);
    let other_viewer = mint(
        &server,
        json!({"name": "other-viewer", "role": "viewer", "organization_id": other}),
    )
    .await;
    let other_id = other_viewer["token_info"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    // A cluster-wide entry: a kind rule changed with the admin token.
    let kind = admin(
        &server,
        Method::PUT,
        "/api/v1/kinds/audited",
        Some(json!({"require_signed_results": false})),
    )
    .await;
    assert_eq!(kind.status, 200, "{}", kind.body);
    let minted = as_token(
        &server,
        &acme_admin_token,
        Method::POST,
        TOKENS,
        Some(json!({"name": "acme-ci", "role": "submitter"})),
    )
    .await;
    assert_eq!(minted.status, 201, "{}", minted.body);
    let minted_id = minted.json()["token_info"]["id"]
        .as_str()
        .expect("id")
        .to_string();

    let audit = as_token(
        &server,
        &acme_admin_token,
        Method::GET,
        "/api/v1/admin/audit?limit=500",
        None,
    )
    .await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let entries = audit.json()["items"].as_array().expect("items").clone();
    assert!(
        entries
            .iter()
            .all(|entry| entry["organization_id"] == acme.as_str()),
        "acme's entries only: {entries:?}"
    );
    let subjects: Vec<&str> = entries
        .iter()
        .filter_map(|entry| entry["subject"].as_str())
        .collect();
    assert!(
        subjects.contains(&format!("user_token:{minted_id}").as_str()),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&format!("organization:{acme}").as_str()),
        "{subjects:?}"
    );
    assert!(!audit.body.contains(&other_id), "{}", audit.body);
    assert!(
        !audit.body.contains("kind.settings_set"),
        "no cluster entries: {}",
        audit.body
    );
    as_token(
        &server,
        &acme_admin_token,
        Method::GET,
        &format!("/api/v1/admin/audit?organization_id={other}"),
        None,
    )
    .await
    .assert_error(404, "organization_not_found", &[&other]);
    // The bootstrap admin reads every entry, cluster-wide ones too, or one organization's.
    let everything = admin(&server, Method::GET, "/api/v1/admin/audit?limit=500", None).await;
    assert!(everything.body.contains(&other_id), "{}", everything.body);
    let others = admin(
        &server,
        Method::GET,
        &format!("/api/v1/admin/audit?organization_id={other}"),
        None,
    )
    .await;
    assert_eq!(others.status, 200, "{}", others.body);
    assert!(others.body.contains(&other_id) && !others.body.contains(&minted_id));
}

#[tokio::test]
async fn an_operator_of_one_organization_manages_its_runner_keys_and_no_others() {
    let server = start().await;
    let acme = create_organization(&server, "acme").await;
    let operator = token_of(
        &mint(
            &server,
            json!({"name": "acme-ops", "role": "operator", "organization_id": acme}),
        )
        .await,
    );
    let own_key = TestServer::new_runner_key().public_key().to_base64();
    let cluster_key = TestServer::new_runner_key().public_key();
    let added = as_token(
        &server,
        &operator,
        Method::POST,
        "/api/v1/admin/runner-keys",
        Some(json!({"public_key": own_key})),
    )
    .await;
    assert_eq!(added.status, 201, "{}", added.body);
    assert_eq!(
        added.json()["organization_id"],
        acme.as_str(),
        "its organization's key"
    );
    let cluster = admin(
        &server,
        Method::POST,
        "/api/v1/admin/runner-keys",
        Some(json!({"public_key": cluster_key.to_base64()})),
    )
    .await;
    assert_eq!(cluster.status, 201, "{}", cluster.body);
    let cluster_fingerprint = cluster_key.fingerprint();

    let listed = as_token(
        &server,
        &operator,
        Method::GET,
        "/api/v1/admin/runner-keys",
        None,
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.json()["items"].as_array().expect("items").len(), 1);
    assert!(
        !listed.body.contains(&cluster_fingerprint),
        "{}",
        listed.body
    );
    as_token(
        &server,
        &operator,
        Method::DELETE,
        &format!("/api/v1/admin/runner-keys/{cluster_fingerprint}"),
        None,
    )
    .await
    .assert_error(404, "not_found", &[&cluster_fingerprint]);
    let taken = as_token(
        &server,
        &operator,
        Method::POST,
        "/api/v1/admin/runner-keys",
        Some(json!({"public_key": cluster_key.to_base64()})),
    )
    .await;
    taken.assert_error(409, "conflict", &["already on the allowlist"]);
    let everything = admin(&server, Method::GET, "/api/v1/admin/runner-keys", None).await;
    let cluster_entry = everything.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|key| key["fingerprint"] == cluster_fingerprint.as_str())
        .cloned()
        .expect("the cluster key stays");
    assert_eq!(
        cluster_entry["organization_id"],
        Value::Null,
        "unchanged: {cluster_entry}"
    );

    // Approving a runner of another organization: as if it did not exist.
    let elsewhere = admin(
        &server,
        Method::POST,
        "/api/v1/runners",
        Some(json!({"name": "default-box"})),
    )
    .await;
    let elsewhere_id = elsewhere.json()["runner"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    as_token(
        &server,
        &operator,
        Method::POST,
        &format!("/api/v1/runners/{elsewhere_id}/approve"),
        None,
    )
    .await
    .assert_error(404, "not_found", &[&elsewhere_id]);
}

#[tokio::test]
async fn an_organization_reads_the_artifacts_its_tokens_uploaded_or_its_jobs_name_and_no_others() {
    let server = start().await;
    let acme = create_organization(&server, "acme").await;
    let other = create_organization(&server, "other").await;
    let submitter = token_of(
        &mint(
            &server,
            json!({"name": "acme-ci", "role": "submitter", "organization_id": acme}),
        )
        .await,
    );
    let acme_viewer = token_of(
        &mint(
            &server,
            json!({"name": "acme-eyes", "role": "viewer", "organization_id": acme}),
        )
        .await,
    );
    let other_viewer = token_of(
        &mint(
            &server,
            json!({"name": "other-eyes", "role": "viewer", "organization_id": other}),
        )
        .await,
    );
    let upload = |token: String, bytes: &'static [u8]| {
        let server = &server;
        async move {
            let reply = send(
                request(server, Method::POST, "/api/v1/artifacts", Some(&token))
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(bytes),
            )
            .await;
            assert!(matches!(reply.status, 200 | 201), "{}", reply.body);
            reply.json()["id"].as_str().expect("id").to_string()
        }
    };
    let download = |token: String, id: String| {
        let server = &server;
        async move {
            as_token(
                server,
                &token,
                Method::GET,
                &format!("/api/v1/artifacts/{id}"),
                None,
            )
            .await
        }
    };
    // Uploaded by acme's submitter: acme reads it, other finds nothing there.
    let own = upload(submitter.clone(), b"acme's model").await;
    assert_eq!(
        download(acme_viewer.clone(), own.clone()).await.body,
        "acme's model"
    );
    download(other_viewer.clone(), own.clone())
        .await
        .assert_error(404, "not_found", &[&own]);
    // Uploaded with the admin token and named by an acme job: acme reads it from then on.
    let shared = upload(server.admin_token.clone(), b"a dataset").await;
    download(acme_viewer.clone(), shared.clone())
        .await
        .assert_error(404, "not_found", &[&shared]);
    let submitted = as_token(
        &server,
        &submitter,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"kind": "train", "inputs": [shared]})),
    )
    .await;
    assert_eq!(submitted.status, 201, "{}", submitted.body);
    assert_eq!(
        download(acme_viewer.clone(), shared.clone()).await.status,
        200
    );
    download(other_viewer.clone(), shared.clone())
        .await
        .assert_error(404, "not_found", &[&shared]);
    // What the job produced: its runner reads it while it holds the job, and acme reads it.
    let (_, runner) = server.runner("trainer").await.expect("a runner");
    let claimed = crate::support::claim_one(&runner, "train").await;
    let output = runner
        .upload_artifact_bytes(bytes::Bytes::from_static(b"trained weights"))
        .await
        .expect("upload an output")
        .id;
    runner
        .record_outputs(
            claimed.id,
            Some(claimed.lease.epoch),
            std::collections::BTreeMap::from([("weights".to_string(), output.clone())]),
        )
        .await
        .expect("record the output");
    assert_eq!(
        download(acme_viewer.clone(), output.clone()).await.body,
        "trained weights"
    );
    download(other_viewer.clone(), output.clone())
        .await
        .assert_error(404, "not_found", &[&output]);
    // The bootstrap admin reads everything.
    assert_eq!(download(server.admin_token.clone(), own).await.status, 200);
}
