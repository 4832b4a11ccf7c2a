//! Organizations over HTTP (`/api/v1/admin/organizations`, bootstrap admin token only): created
//! with an id made from the name, listed oldest first with `default` first, shown, and deleted
//! only once nothing is left in them; a taken name, an empty one, an unknown id, `default`
//! itself and the other kinds of token are each refused with their own code, nothing written;
//! every change is in the audit log; runners and runner keys may only name an organization that
//! exists.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{admin, audited, create_organization, field_names, request, send, start};

const ORGANIZATIONS: &str = "/api/v1/admin/organizations";

async fn list(server: &muster_test_support::TestServer) -> Vec<Value> {
    let listed = admin(server, Method::GET, ORGANIZATIONS, None).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    listed.json()["items"].as_array().expect("items").clone()
}
#[tokio::test]
async fn organizations_are_created_listed_shown_and_deleted_with_the_admin_token() {
    let server = start().await;
    let listed = list(&server).await;
    assert_eq!(listed.len(), 1, "only default to begin with: {listed:?}");
    assert_eq!(listed[0]["id"], "default");
    assert_eq!(listed[0]["allow_shared_runners"], true);

    let created = admin(
        &server,
        Method::POST,
        ORGANIZATIONS,
        Some(json!({"name": "  Acme Corp  ", "allow_shared_runners": false})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let acme = created.json();
    assert_eq!(acme["id"], "acme-corp", "the id is made from the name");
    assert_eq!(
        acme["name"], "Acme Corp",
        "the name without the spaces around it"
    );
    assert_eq!(acme["allow_shared_runners"], false);
    let fields = field_names(&acme);
    assert_eq!(fields, ["allow_shared_runners", "created_at", "id", "name"]);
    let beta = create_organization(&server, "beta").await;

    let shown = admin(
        &server,
        Method::GET,
        &format!("{ORGANIZATIONS}/acme-corp"),
        None,
    )
    .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.json(), acme);
    let ids: Vec<Value> = list(&server)
        .await
        .iter()
        .map(|o| o["id"].clone())
        .collect();
    assert_eq!(ids, [json!("default"), json!("acme-corp"), json!(beta)]);
    let first_page = admin(
        &server,
        Method::GET,
        &format!("{ORGANIZATIONS}?limit=2"),
        None,
    )
    .await;
    let cursor = first_page.json()["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_string();
    let second_page = admin(
        &server,
        Method::GET,
        &format!("{ORGANIZATIONS}?limit=2&cursor={cursor}"),
        None,
    )
    .await;
    assert_eq!(second_page.json()["items"][0]["id"], beta.as_str());
    assert_eq!(second_page.json()["next_cursor"], Value::Null);

    let deleted = admin(
        &server,
        Method::DELETE,
        &format!("{ORGANIZATIONS}/{beta}"),
        None,
    )
    .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    admin(
        &server,
        Method::GET,
        &format!("{ORGANIZATIONS}/{beta}"),
        None,
    )
    .await
    .assert_error(404, "organization_not_found", &[&beta]);
    admin(
        &server,
        Method::DELETE,
        &format!("{ORGANIZATIONS}/{beta}"),
        None,
    )
    .await
    .assert_error(404, "organization_not_found", &[&beta]);

    let created_entries = audited(&server, "organization.created").await;
    assert_eq!(created_entries.len(), 2, "{created_entries:?}");
    assert!(
        created_entries
            .iter()
            .any(|entry| entry["subject"] == "organization:acme-corp" && entry["actor"] == "admin"),
        "{created_entries:?}"
    );
    let deleted_entries = audited(&server, "organization.deleted").await;
    assert_eq!(
        deleted_entries.len(),
        1,
        "one deletion recorded: {deleted_entries:?}"
    );
}

#[tokio::test]
async fn bad_names_taken_names_default_and_other_tokens_are_refused_and_change_nothing() {
    let server = start().await;
    create_organization(&server, "Acme Corp").await;
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": "a\u{0}b"}), "name"),
        (json!({"name": "x".repeat(201)}), "name"),
        (json!({}), "name"),
        (json!({"name": 5}), "name"),
        (
            json!({"name": "ok", "allow_shared_runners": "yes"}),
            "allow_shared_runners",
        ),
    ] {
        admin(&server, Method::POST, ORGANIZATIONS, Some(body.clone()))
            .await
            .assert_error(400, "invalid_input", &[field]);
    }
    // The same name, or another whose id would be the same.
    for name in ["Acme Corp", "acme-corp", "ACME corp!"] {
        admin(
            &server,
            Method::POST,
            ORGANIZATIONS,
            Some(json!({"name": name})),
        )
        .await
        .assert_error(409, "conflict", &["acme-corp"]);
    }
    admin(
        &server,
        Method::POST,
        ORGANIZATIONS,
        Some(json!({"name": "default"})),
    )
    .await
    .assert_error(409, "conflict", &["default"]);
    admin(
        &server,
        Method::DELETE,
        &format!("{ORGANIZATIONS}/default"),
        None,
    )
    .await
    .assert_error(409, "invalid_state", &["default"]);
    admin(&server, Method::GET, &format!("{ORGANIZATIONS}/nope"), None)
        .await
        .assert_error(404, "organization_not_found", &["nope"]);
    assert_eq!(list(&server).await.len(), 2, "nothing stored by a refusal");
    assert_eq!(audited(&server, "organization.created").await.len(), 1);

    // A runner token, no token, an unknown token.
    let (_, runner) = server.runner("r").await.expect("a runner");
    let runner_token = runner.token();
    for (token, status, code) in [
        (Some(runner_token.as_str()), 403, "forbidden"),
        (None, 401, "unauthorized"),
        (
            Some("muster_user_unknown0000000000000000000000000000"),
            401,
            "unauthorized",
        ),
    ] {
        for (method, path) in [
            (Method::GET, ORGANIZATIONS.to_string()),
            (Method::POST, ORGANIZATIONS.to_string()),
            (Method::GET, format!("{ORGANIZATIONS}/acme-corp")),
            (Method::DELETE, format!("{ORGANIZATIONS}/acme-corp")),
        ] {
            let reply = send(
                request(&server, method.clone(), &path, token).json(&json!({"name": "sneaky"})),
            )
            .await;
            assert_eq!(
                reply.status, status,
                "{method} {path} with {token:?}: {}",
                reply.body
            );
            assert_eq!(reply.json()["error"]["code"], code);
        }
    }
    assert_eq!(list(&server).await.len(), 2, "nothing stored by a refusal");
}

#[tokio::test]
async fn an_organization_with_a_runner_or_a_key_in_it_is_kept_and_unknown_ones_cannot_be_named() {
    let server = start().await;
    let team = create_organization(&server, "team").await;
    admin(
        &server,
        Method::POST,
        "/api/v1/runners",
        Some(json!({"name": "stray", "organization_id": "no-such-team"})),
    )
    .await
    .assert_error(404, "organization_not_found", &["no-such-team"]);
    let key = muster_test_support::TestServer::new_runner_key().public_key();
    admin(
        &server,
        Method::POST,
        "/api/v1/admin/runner-keys",
        Some(json!({"public_key": key.to_base64(), "organization_id": "no-such-team"})),
    )
    .await
    .assert_error(404, "organization_not_found", &["no-such-team"]);
    // A registration by key: the gate answers first, so an unknown key learns nothing of
    // which organizations exist; an allowed key naming an unknown one is refused.
    let signing_key = muster_test_support::TestServer::new_runner_key();
    let description = muster_client::RunnerDescription {
        name: "self".into(),
        hostname: "self".into(),
        kinds: vec!["bench".into()],
        organization_id: Some("no-such-team".into()),
        ..Default::default()
    };
    let refused = server
        .register_key(&signing_key, &description)
        .await
        .expect_err("a key not on the allowlist");
    assert_eq!(refused.code_text(), Some("key_not_allowed"), "{refused}");
    let allowed = admin(
        &server,
        Method::POST,
        "/api/v1/admin/runner-keys",
        Some(json!({"public_key": signing_key.public_key().to_base64()})),
    )
    .await;
    assert_eq!(allowed.status, 201, "{}", allowed.body);
    let refused = server
        .register_key(&signing_key, &description)
        .await
        .expect_err("an organization that does not exist");
    assert_eq!(
        refused.code_text(),
        Some("organization_not_found"),
        "{refused}"
    );
    let runners = admin(&server, Method::GET, "/api/v1/runners", None).await;
    assert_eq!(
        runners.json()["items"],
        json!([]),
        "no runner stored by the refusals"
    );

    let created = admin(
        &server,
        Method::POST,
        "/api/v1/runners",
        Some(json!({"name": "team-box", "organization_id": team})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["runner"]["organization_id"], team.as_str());
    let runner_id = created.json()["runner"]["id"]
        .as_str()
        .expect("an id")
        .to_string();
    let refused = admin(
        &server,
        Method::DELETE,
        &format!("{ORGANIZATIONS}/{team}"),
        None,
    )
    .await;
    refused.assert_error(409, "organization_not_empty", &["1 runners"]);
    assert_eq!(list(&server).await.len(), 2, "still there");

    let removed = admin(
        &server,
        Method::DELETE,
        &format!("/api/v1/runners/{runner_id}"),
        None,
    )
    .await;
    assert_eq!(removed.status, 204, "{}", removed.body);
    let deleted = admin(
        &server,
        Method::DELETE,
        &format!("{ORGANIZATIONS}/{team}"),
        None,
    )
    .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
}

/// The organizations of the jobs a claim of everything of kind `k` by `token` took, sorted.
async fn claimed_organizations(
    server: &muster_test_support::TestServer,
    token: &str,
) -> Vec<String> {
    let reply = send(
        request(server, Method::POST, "/api/v1/runner/claim", Some(token))
            .json(&json!({"kinds": ["k"], "max_jobs": 10, "wait_ms": 0})),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut organizations = Vec::new();
    for job in reply.json()["jobs"].as_array().expect("jobs") {
        let id = job["id"].as_str().expect("a job id");
        let shown = admin(server, Method::GET, &format!("/api/v1/jobs/{id}"), None).await;
        organizations.push(
            shown.json()["organization_id"]
                .as_str()
                .expect("an organization")
                .to_string(),
        );
    }
    organizations.sort();
    organizations
}

#[tokio::test]
async fn jobs_go_to_the_organization_named_and_its_runners_take_them() {
    let server = start().await;
    let team = create_organization(&server, "team").await;
    let solo = admin(
        &server,
        Method::POST,
        ORGANIZATIONS,
        Some(json!({"name": "solo", "allow_shared_runners": false})),
    )
    .await
    .json()["id"]
        .as_str()
        .expect("an id")
        .to_string();
    let submit = |body: Value| admin(&server, Method::POST, "/api/v1/jobs", Some(body));
    let plain = submit(json!({"kind": "k"})).await;
    assert_eq!(plain.status, 201, "{}", plain.body);
    assert_eq!(plain.json()["organization_id"], "default");
    let mut solo_job = String::new();
    for organization in [&team, &solo] {
        let job = submit(json!({"kind": "k", "organization_id": organization})).await;
        assert_eq!(job.status, 201, "{}", job.body);
        assert_eq!(job.json()["organization_id"], organization.as_str());
        solo_job = job.json()["id"].as_str().expect("an id").to_string();
    }
    submit(json!({"kind": "k", "organization_id": "nowhere"}))
        .await
        .assert_error(404, "organization_not_found", &["nowhere"]);
    admin(
        &server,
        Method::POST,
        "/api/v1/jobs/batch",
        Some(json!({"jobs": [{"kind": "k"}, {"kind": "k", "organization_id": "nowhere"}]})),
    )
    .await
    .assert_error(404, "organization_not_found", &["jobs[1]", "nowhere"]);
    let listed = admin(&server, Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(
        listed.json()["items"].as_array().map(Vec::len),
        Some(3),
        "no refused job stored"
    );
    let of_team = admin(
        &server,
        Method::GET,
        &format!("/api/v1/jobs?organization_id={team}"),
        None,
    )
    .await;
    let items = of_team.json()["items"].clone();
    assert_eq!(items.as_array().map(Vec::len), Some(1), "{items}");
    assert_eq!(items[0]["organization_id"], team.as_str());

    // A cluster-scoped runner takes default's and team's jobs, never solo's; solo's own runner
    // takes solo's.
    let (_, shared) = server.runner("shared").await.expect("a runner");
    assert_eq!(
        claimed_organizations(&server, &shared.token()).await,
        ["default", team.as_str()]
    );
    // Only a shared runner is online, and solo refuses shared runners: nothing can take the job.
    let waiting = admin(
        &server,
        Method::GET,
        &format!("/api/v1/jobs/{solo_job}"),
        None,
    )
    .await;
    assert_eq!(waiting.json()["state"], "pending");
    assert_eq!(
        waiting.json()["pending_reason"],
        "no_runner_for_kind",
        "{}",
        waiting.body
    );
    let solo_runner = admin(
        &server,
        Method::POST,
        "/api/v1/runners",
        Some(json!({"name": "solo-box", "organization_id": solo})),
    )
    .await
    .json()["token"]
        .as_str()
        .expect("a token")
        .to_string();
    assert_eq!(
        claimed_organizations(&server, &solo_runner).await,
        [solo.as_str()]
    );
}

#[tokio::test]
async fn metrics_count_jobs_by_organization_and_keep_the_totals() {
    let server = start().await;
    let acme = create_organization(&server, "acme").await;
    for (organization, count) in [(Some(acme.as_str()), 3), (None, 2)] {
        for _ in 0..count {
            let mut body = json!({"kind": "metered"});
            if let Some(organization) = organization {
                body["organization_id"] = json!(organization);
            }
            let submitted = admin(&server, Method::POST, "/api/v1/jobs", Some(body)).await;
            assert_eq!(submitted.status, 201, "{}", submitted.body);
        }
    }
    let by_organization = |organization: &str| {
        format!("muster_jobs_by_organization{{organization=\"{organization}\",state=\"pending\"}}")
    };
    assert_eq!(
        crate::support::metric(&server, &by_organization(&acme)).await,
        Some(3.0)
    );
    assert_eq!(
        crate::support::metric(&server, &by_organization("default")).await,
        Some(2.0)
    );
    assert_eq!(
        crate::support::metric(&server, "muster_jobs{kind=\"metered\",state=\"pending\"}").await,
        Some(5.0),
        "the totals sum every organization"
    );
}
