//! Runner keys and the audit log over HTTP: the allowlist's routes (add 201 then 200, list
//! oldest first with paging, remove 204 then 404), the typed errors of bad keys, who may call
//! them, and the audit entry each change leaves.

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{admin, create_organization, field_names, request, send, start};

fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A fresh public key in the wire form, and its fingerprint.
fn new_public_key(seed: u8) -> (String, String) {
    let key = muster_core::identity::RunnerSigningKey::from_secret_bytes([seed; 32]).public_key();
    (key.to_base64(), key.fingerprint())
}

#[tokio::test]
async fn a_key_is_added_once_listed_and_removed() {
    let server = start().await;
    assert_eq!(create_organization(&server, "Acme").await, "acme");
    let (public_key, fingerprint) = new_public_key(1);
    let added = admin(
        &server,
        Method::POST,
        "/api/v1/admin/runner-keys",
        Some(json!({"public_key": public_key, "note": "gpu-box-1", "organization_id": "acme"})),
    )
    .await;
    assert_eq!(added.status, 201, "{}", added.body);
    let entry = added.json();
    assert_eq!(entry["fingerprint"], fingerprint.as_str());
    assert_eq!(entry["public_key"], public_key.as_str());
    assert_eq!(entry["note"], "gpu-box-1");
    assert_eq!(entry["organization_id"], "acme");
    assert!(
        entry["created_at"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z')),
        "{entry}"
    );
    let keys = field_names(&entry);
    assert_eq!(
        keys,
        [
            "created_at",
            "fingerprint",
            "note",
            "organization_id",
            "public_key"
        ]
    );

    // The same key again: 200, the entry as it was (the new note is not taken).
    let again = admin(
        &server,
        Method::POST,
        "/api/v1/admin/runner-keys",
        Some(json!({"public_key": public_key, "note": "something else"})),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json(), entry);

    let listed = admin(&server, Method::GET, "/api/v1/admin/runner-keys", None).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(
        listed.json(),
        json!({"items": [entry], "next_cursor": null})
    );

    let path = format!("/api/v1/admin/runner-keys/{fingerprint}");
    let removed = admin(&server, Method::DELETE, &path, None).await;
    assert_eq!(removed.status, 204, "{}", removed.body);
    let listed = admin(&server, Method::GET, "/api/v1/admin/runner-keys", None).await;
    assert_eq!(listed.json()["items"], json!([]));
    admin(&server, Method::DELETE, &path, None)
        .await
        .assert_error(404, "not_found", &[&fingerprint]);
}

#[tokio::test]
async fn the_allowlist_pages_oldest_first() {
    let server = start().await;
    let mut fingerprints = Vec::new();
    for seed in 1..=5u8 {
        let (public_key, fingerprint) = new_public_key(seed);
        let added = admin(
            &server,
            Method::POST,
            "/api/v1/admin/runner-keys",
            Some(json!({"public_key": public_key})),
        )
        .await;
        assert_eq!(added.status, 201, "{}", added.body);
        fingerprints.push(fingerprint);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/v1/admin/runner-keys?limit=2&cursor={cursor}"),
            None => "/api/v1/admin/runner-keys?limit=2".to_string(),
        };
        let page = admin(&server, Method::GET, &path, None).await.json();
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2, "{page}");
        seen.extend(
            items
                .iter()
                .map(|item| item["fingerprint"].as_str().expect("fp").to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, fingerprints);
}

#[tokio::test]
async fn malformed_keys_are_refused_naming_the_cause_and_nothing_is_stored() {
    let server = start().await;
    let cases: Vec<(Value, &[&str])> = vec![
        (
            json!({"public_key": "not base64!"}),
            &["public_key", "base64"],
        ),
        (
            json!({"public_key": base64_of(&[7u8; 31])}),
            &["public_key", "32 bytes", "31"],
        ),
        (
            json!({"public_key": base64_of(&[7u8; 64])}),
            &["public_key", "64"],
        ),
        (
            json!({"public_key": base64_of(&{
                let mut identity_point = [0u8; 32];
                identity_point[0] = 1;
                identity_point
            })}),
            &["public_key", "weak"],
        ),
        (
            json!({"public_key": new_public_key(3).0, "note": "x".repeat(501)}),
            &["note"],
        ),
        (
            json!({"public_key": new_public_key(3).0, "organization_id": ""}),
            &["organization_id"],
        ),
        (json!({}), &["public_key"]),
    ];
    for (body, mentions) in cases {
        admin(
            &server,
            Method::POST,
            "/api/v1/admin/runner-keys",
            Some(body),
        )
        .await
        .assert_error(400, "invalid_input", mentions);
    }
    let listed = admin(&server, Method::GET, "/api/v1/admin/runner-keys", None).await;
    assert_eq!(listed.json()["items"], json!([]), "nothing half-written");
    let audit = admin(&server, Method::GET, "/api/v1/admin/audit", None).await;
    assert_eq!(
        audit.json()["items"],
        json!([]),
        "a refused add is not a change"
    );

    // A fingerprint that is not one names nothing.
    admin(
        &server,
        Method::DELETE,
        "/api/v1/admin/runner-keys/sha256:XYZ",
        None,
    )
    .await
    .assert_error(404, "not_found", &["sha256:"]);
}

#[tokio::test]
async fn only_the_admin_token_may_touch_keys_and_the_audit_log() {
    let server = start().await;
    let created = admin(
        &server,
        Method::POST,
        "/api/v1/runners",
        Some(json!({"name": "r"})),
    )
    .await;
    let runner_token = created.json()["token"].as_str().expect("token").to_string();
    let (public_key, fingerprint) = new_public_key(9);
    let routes = [
        (Method::GET, "/api/v1/admin/runner-keys".to_string(), None),
        (
            Method::POST,
            "/api/v1/admin/runner-keys".to_string(),
            Some(json!({"public_key": public_key})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/admin/runner-keys/{fingerprint}"),
            None,
        ),
        (Method::GET, "/api/v1/admin/audit".to_string(), None),
    ];
    for (method, path, body) in routes {
        let with_body = |builder: reqwest::RequestBuilder| match &body {
            Some(body) => builder.json(body),
            None => builder,
        };
        send(with_body(request(&server, method.clone(), &path, None)))
            .await
            .assert_error(401, "unauthorized", &[]);
        send(with_body(request(
            &server,
            method.clone(),
            &path,
            Some("muster_runner_unknown"),
        )))
        .await
        .assert_error(401, "unauthorized", &[]);
        send(with_body(request(
            &server,
            method.clone(),
            &path,
            Some(&runner_token),
        )))
        .await
        .assert_error(403, "forbidden", &["runner token"]);
    }
    let listed = admin(&server, Method::GET, "/api/v1/admin/runner-keys", None).await;
    assert_eq!(
        listed.json()["items"],
        json!([]),
        "no refused call changed anything"
    );
}

#[tokio::test]
async fn every_key_change_is_in_the_audit_log_newest_first_and_filterable() {
    let server = start().await;
    let (first_key, first) = new_public_key(1);
    let (second_key, second) = new_public_key(2);
    for public_key in [&first_key, &second_key, &first_key] {
        admin(
            &server,
            Method::POST,
            "/api/v1/admin/runner-keys",
            Some(json!({"public_key": public_key, "note": "box"})),
        )
        .await;
    }
    let removed = admin(
        &server,
        Method::DELETE,
        &format!("/api/v1/admin/runner-keys/{first}"),
        None,
    )
    .await;
    assert_eq!(removed.status, 204);

    let audit = admin(&server, Method::GET, "/api/v1/admin/audit", None).await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let audit = audit.json();
    let entries = audit["items"].as_array().expect("items");
    let summary: Vec<(String, String, String)> = entries
        .iter()
        .map(|entry| {
            (
                entry["action"].as_str().expect("action").to_string(),
                entry["actor"].as_str().expect("actor").to_string(),
                entry["subject"].as_str().expect("subject").to_string(),
            )
        })
        .collect();
    // Newest first; adding a key already there is no change and leaves no entry.
    assert_eq!(
        summary,
        vec![
            ("runner_key.removed".into(), "admin".into(), first.clone()),
            ("runner_key.added".into(), "admin".into(), second.clone()),
            ("runner_key.added".into(), "admin".into(), first.clone()),
        ]
    );
    for entry in entries {
        let keys = field_names(entry);
        assert_eq!(
            keys,
            [
                "action",
                "actor",
                "at",
                "detail",
                "id",
                "organization_id",
                "subject"
            ]
        );
    }
    assert_eq!(entries[1]["detail"]["note"], "box");
    assert!(audit["next_cursor"].is_null());

    let filtered = admin(
        &server,
        Method::GET,
        "/api/v1/admin/audit?action=runner_key.removed",
        None,
    )
    .await
    .json();
    assert_eq!(
        filtered["items"].as_array().map(Vec::len),
        Some(1),
        "{filtered}"
    );
    assert_eq!(filtered["items"][0]["subject"], first.as_str());

    let first_page = admin(&server, Method::GET, "/api/v1/admin/audit?limit=2", None)
        .await
        .json();
    assert_eq!(first_page["items"].as_array().map(Vec::len), Some(2));
    let cursor = first_page["next_cursor"].as_str().expect("a second page");
    let second_page = admin(
        &server,
        Method::GET,
        &format!("/api/v1/admin/audit?limit=2&cursor={cursor}"),
        None,
    )
    .await
    .json();
    assert_eq!(second_page["items"][0]["action"], "runner_key.added");
    assert_eq!(second_page["items"][0]["subject"], first.as_str());
    assert!(second_page["next_cursor"].is_null());

    admin(&server, Method::GET, "/api/v1/admin/audit?limit=0", None)
        .await
        .assert_error(400, "invalid_input", &["limit"]);
}
