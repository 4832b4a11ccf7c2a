//! The runner registry: create (the token shown once), list, show, delete (token revoked, leases
//! released), and the status users see (offline, online, draining).

use std::collections::{BTreeMap, HashSet};

use muster_client::api::{
    CreateRunner, FailureReason, JobState, PendingReason, RunnerActivity, RunnerHeartbeat,
    RunnerStatus,
};
use muster_client::{JobQuery, RunnerClient};
use reqwest::Method;
use serde_json::json;

use crate::support::{
    admin, all_jobs, api_error, claim_of, claim_one, create_organization, start, start_manual,
    submit_and_claim,
};

/// The fields the contract lists for a runner.
const RUNNER_KEYS: [&str; 13] = [
    "id",
    "name",
    "status",
    "labels",
    "tags",
    "resources",
    "kinds",
    "hostname",
    "version",
    "last_heartbeat_at",
    "running_jobs",
    "created_at",
    "organization_id",
];

#[tokio::test]
async fn create_answers_201_with_the_runner_and_a_token_shown_only_then() {
    let server = start().await;
    assert_eq!(create_organization(&server, "Acme").await, "acme");
    let reply = admin(
        &server,
        Method::POST,
        "/api/v1/runners",
        Some(json!({"name": "gpu-box-1", "labels": {"gpu": "a100"}, "organization_id": "acme"})),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let body = reply.json();
    let token = body["token"].as_str().expect("a token").to_string();
    let suffix = token
        .strip_prefix("muster_runner_")
        .expect("runner tokens start with muster_runner_");
    assert!(suffix.len() >= 32, "at least 32 random characters: {token}");
    assert!(
        suffix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "URL-safe characters only: {token}"
    );
    let runner = &body["runner"];
    for key in RUNNER_KEYS {
        assert!(runner.get(key).is_some(), "runner lacks {key}: {runner}");
    }
    assert!(runner.get("token").is_none() && runner.get("token_hash").is_none());
    assert_eq!(runner["name"], "gpu-box-1");
    assert_eq!(runner["labels"], json!({"gpu": "a100"}));
    assert_eq!(runner["organization_id"], "acme");
    assert_eq!(runner["status"], "offline", "never heard from yet");
    assert_eq!(runner["running_jobs"], 0);
    assert!(runner["last_heartbeat_at"].is_null());
    let id = runner["id"].as_str().expect("id");

    let shown = admin(&server, Method::GET, &format!("/api/v1/runners/{id}"), None).await;
    assert_eq!(shown.status, 200);
    assert_eq!(
        &shown.json(),
        runner,
        "show answers the runner as create did"
    );
    let listed = admin(&server, Method::GET, "/api/v1/runners", None).await;
    assert_eq!(listed.status, 200);
    for text in [&shown.body, &listed.body] {
        assert!(
            !text.contains(&token),
            "the token is never shown again: {text}"
        );
        assert!(!text.contains("muster_runner_"), "no token at all: {text}");
        assert!(!text.contains("\"token\":"), "no token field: {text}");
    }

    let other = admin(
        &server,
        Method::POST,
        "/api/v1/runners",
        Some(json!({"name": "gpu-box-2"})),
    )
    .await;
    assert_eq!(other.status, 201);
    assert_ne!(
        other.json()["token"],
        body["token"],
        "every runner gets its own token"
    );

    // The token works at once.
    let client = RunnerClient::new(&server.base_url, &token).expect("runner client");
    client
        .heartbeat(&RunnerHeartbeat::default())
        .await
        .expect("a fresh token is accepted");
}

#[tokio::test]
async fn list_pages_newest_first_and_show_finds_each() {
    let server = start().await;
    let client = server.client();
    let mut ids = Vec::new();
    for index in 0..5 {
        let created = client
            .create_runner(&CreateRunner {
                name: format!("r{index}"),
                labels: BTreeMap::from([("slot".to_string(), index.to_string())]),
                organization_id: None,
                ..Default::default()
            })
            .await
            .expect("create");
        ids.push(created.runner.id);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = client
            .list_runners(Some(2), cursor.as_deref())
            .await
            .expect("a page");
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|runner| runner.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let newest_first: Vec<_> = ids.iter().rev().copied().collect();
    assert_eq!(seen, newest_first);
    for (index, id) in ids.iter().enumerate() {
        let runner = client.get_runner(*id).await.expect("show");
        assert_eq!(runner.name, format!("r{index}"));
        assert_eq!(runner.labels.get("slot"), Some(&index.to_string()));
    }
}

#[tokio::test]
async fn delete_revokes_the_token_and_releases_the_runners_leases() {
    let (server, clock) = start_manual().await;
    let client = server.client();
    let (doomed, doomed_client) = server.runner("doomed").await.expect("runner");
    let (_, heir) = server.runner("heir").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &doomed_client, "exec").await;
    doomed_client
        .job_heartbeat(claimed.id, Some(claimed.lease.epoch), &Default::default())
        .await
        .expect("running");
    assert_eq!(
        client
            .get_runner(doomed.runner.id)
            .await
            .expect("show")
            .running_jobs,
        1
    );

    let reply = admin(
        &server,
        Method::DELETE,
        &format!("/api/v1/runners/{}", doomed.runner.id),
        None,
    )
    .await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert!(reply.body.is_empty(), "204 has no body");

    let refused = doomed_client.heartbeat(&RunnerHeartbeat::default()).await;
    api_error(refused, 401, "unauthorized");
    let refused = doomed_client
        .complete_job(claimed.id, Some(claimed.lease.epoch), json!(null))
        .await;
    api_error(refused, 401, "unauthorized");
    api_error(client.get_runner(doomed.runner.id).await, 404, "not_found");
    api_error(
        client.delete_runner(doomed.runner.id).await,
        404,
        "not_found",
    );
    let listed = client.list_runners(None, None).await.expect("list");
    assert!(
        listed
            .items
            .iter()
            .all(|runner| runner.id != doomed.runner.id)
    );

    let released = client.get_job(claimed.id).await.expect("show");
    assert_eq!(
        released.state,
        JobState::Pending,
        "its lease went back to the queue"
    );
    assert_eq!(released.runner_id, None);
    assert_eq!(released.lease_expires_at, None);
    let error = released.error.expect("the release says why");
    assert_eq!(error.reason, FailureReason::LeaseExpired);
    assert!(error.message.contains("deleted"), "{}", error.message);
    assert!(
        all_jobs(
            &client,
            JobQuery {
                runner_id: Some(doomed.runner.id),
                ..Default::default()
            }
        )
        .await
        .is_empty(),
        "no job is held by a deleted runner"
    );

    // After the retry backoff another runner takes it under a newer lease.
    clock.advance_s(2);
    let taken = claim_one(&heir, "exec").await;
    assert_eq!(taken.id, claimed.id);
    assert_eq!(taken.attempt, 2);
    assert!(taken.lease.epoch > claimed.lease.epoch);
}

#[tokio::test]
async fn status_follows_heartbeats_claims_and_draining() {
    let (server, clock) = start_manual().await;
    let client = server.client();
    let (beating, beating_client) = server.runner("beating").await.expect("runner");
    let (claiming, claiming_client) = server.runner("claiming").await.expect("runner");
    let status = |runner: muster_client::api::Runner| runner.status;
    assert_eq!(
        status(client.get_runner(beating.runner.id).await.expect("show")),
        RunnerStatus::Offline
    );

    let answer = beating_client
        .heartbeat(&RunnerHeartbeat {
            status: RunnerActivity::Active,
            jobs: vec![],
            hostname: Some("host-a".into()),
            version: Some("1.2.3".into()),
        })
        .await
        .expect("heartbeat");
    assert_eq!(answer.heartbeat_interval_ms, 10_000);
    let seen = client.get_runner(beating.runner.id).await.expect("show");
    assert_eq!(seen.status, RunnerStatus::Online);
    assert_eq!(seen.hostname.as_deref(), Some("host-a"));
    assert_eq!(seen.version.as_deref(), Some("1.2.3"));
    assert!(seen.last_heartbeat_at.is_some());

    let mut claim = claim_of(&["exec", "render"]);
    claim.tags = vec!["fp16".into()];
    claim.resources = BTreeMap::from([("vram_gb".to_string(), 24.0)]);
    assert!(
        claiming_client
            .claim_job(&claim)
            .await
            .expect("claim")
            .is_empty()
    );
    let seen = client.get_runner(claiming.runner.id).await.expect("show");
    assert_eq!(
        seen.status,
        RunnerStatus::Online,
        "a claim is a sign of life"
    );
    assert_eq!(
        seen.kinds.iter().cloned().collect::<HashSet<_>>(),
        HashSet::from(["exec".to_string(), "render".to_string()])
    );
    assert_eq!(seen.tags, vec!["fp16".to_string()]);
    assert_eq!(seen.resources.get("vram_gb"), Some(&24.0));

    beating_client
        .heartbeat(&RunnerHeartbeat {
            status: RunnerActivity::Draining,
            ..Default::default()
        })
        .await
        .expect("draining heartbeat");
    assert_eq!(
        status(client.get_runner(beating.runner.id).await.expect("show")),
        RunnerStatus::Draining
    );
    assert_eq!(
        client
            .get_runner(beating.runner.id)
            .await
            .expect("show")
            .hostname
            .as_deref(),
        Some("host-a"),
        "a heartbeat without a hostname keeps the known one"
    );

    // Silent for more than three heartbeat intervals: offline.
    clock.advance_s(31);
    for runner in [beating.runner.id, claiming.runner.id] {
        assert_eq!(
            status(client.get_runner(runner).await.expect("show")),
            RunnerStatus::Offline
        );
    }
    let listed = client.list_runners(None, None).await.expect("list");
    assert!(
        listed
            .items
            .iter()
            .all(|runner| runner.status == RunnerStatus::Offline)
    );
}

#[tokio::test]
async fn pending_reason_says_why_no_runner_takes_a_job() {
    let (server, clock) = start_manual().await;
    let client = server.client();

    let alone = crate::support::submit(&client, crate::support::job("train")).await;
    assert_eq!(alone.pending_reason, Some(PendingReason::NoRunnerForKind));

    // A runner for the kind that lacks what the next job needs; it takes the first one.
    let (_, small) = server.runner("small").await.expect("runner");
    let mut offer = claim_of(&["train"]);
    offer.resources = BTreeMap::from([("vram_gb".to_string(), 8.0)]);
    offer.labels = BTreeMap::from([("gpu".to_string(), "t4".to_string())]);
    let taken = small.claim_job(&offer).await.expect("claim");
    assert_eq!(
        taken.iter().map(|job| job.id).collect::<Vec<_>>(),
        vec![alone.id]
    );
    let needs_big = crate::support::submit(
        &client,
        muster_client::api::SubmitJob {
            requirements: Some(muster_client::api::Requirements {
                resources: BTreeMap::from([("vram_gb".to_string(), 40.0)]),
                ..Default::default()
            }),
            ..crate::support::job("train")
        },
    )
    .await;
    assert_eq!(
        needs_big.pending_reason,
        Some(PendingReason::RequirementsUnmet)
    );

    let later = crate::support::submit(
        &client,
        muster_client::api::SubmitJob {
            run_after: Some(time::OffsetDateTime::now_utc() + time::Duration::minutes(10)),
            ..crate::support::job("train")
        },
    )
    .await;
    assert_eq!(later.pending_reason, Some(PendingReason::Scheduled));

    let fits = crate::support::submit(
        &client,
        muster_client::api::SubmitJob {
            requirements: Some(muster_client::api::Requirements {
                labels: BTreeMap::from([("gpu".to_string(), "t4".to_string())]),
                ..Default::default()
            }),
            ..crate::support::job("train")
        },
    )
    .await;
    assert_eq!(fits.pending_reason, None, "only waiting for capacity");

    // A job no runner could take stays pending and keeps saying why.
    let taken = small.claim_job(&offer).await.expect("claim");
    assert_eq!(
        taken.iter().map(|job| job.id).collect::<Vec<_>>(),
        vec![fits.id]
    );
    assert!(small.claim_job(&offer).await.expect("claim").is_empty());
    let still = client.get_job(needs_big.id).await.expect("show");
    assert_eq!(still.state, JobState::Pending);
    assert_eq!(still.pending_reason, Some(PendingReason::RequirementsUnmet));
    assert_eq!(
        client.get_job(later.id).await.expect("show").state,
        JobState::Pending,
        "a scheduled job is not claimed early"
    );
    clock.advance_s(11 * 60);
    let claimed = small.claim_job(&offer).await.expect("claim once due");
    assert_eq!(
        claimed.iter().map(|job| job.id).collect::<Vec<_>>(),
        vec![later.id]
    );
}
