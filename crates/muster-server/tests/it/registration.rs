//! Runners registering themselves with their Ed25519 key over HTTP: the proof and its
//! freshness, each enrollment gate, approval and rejection, tokens that expire and overlap when
//! renewed (on a manual clock, no sleeps), a key's removal revoking a working runner, the
//! capabilities a registration binds, and the audit entry each event leaves.

use std::collections::BTreeMap;

use muster_client::api::{AddRunnerKey, ClaimJobs, JobState, RunnerEnrollment};
use muster_client::{RunnerClient, RunnerDescription, signed_registration};
use muster_core::identity::RunnerSigningKey;
use muster_test_support::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    admin, api_error, audited, claim_of, job, request, send, start, start_manual,
    start_manual_with, submit,
};

fn description(name: &str) -> RunnerDescription {
    RunnerDescription {
        name: name.into(),
        hostname: format!("{name}.example"),
        kinds: vec!["exec".into()],
        ..Default::default()
    }
}

async fn allow(server: &TestServer, key: &RunnerSigningKey) {
    server
        .client()
        .add_runner_key(&AddRunnerKey {
            public_key: key.public_key().to_base64(),
            note: None,
            organization_id: None,
        })
        .await
        .expect("put the key on the allowlist");
}

/// POST a registration body exactly as given.
async fn post_registration(server: &TestServer, body: &Value) -> crate::support::Reply {
    send(request(server, Method::POST, "/api/v1/runners/register", None).json(body)).await
}

#[tokio::test]
async fn an_allowed_key_registers_and_the_same_key_again_is_the_same_runner() {
    let (server, clock) = start_manual().await;
    let key = TestServer::new_runner_key();
    let refused = server.register_key(&key, &description("gpu-1")).await;
    api_error(refused, 403, "key_not_allowed");
    let refusals = audited(&server, "registration.refused").await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(
        refusals[0]["subject"],
        format!("key:{}", key.public_key().fingerprint())
    );
    assert_eq!(refusals[0]["detail"]["code"], "key_not_allowed");

    allow(&server, &key).await;
    let (first, created) = server
        .register_key(&key, &description("gpu-1"))
        .await
        .expect("an allowed key registers");
    assert!(created, "a new key makes a new runner (201)");
    let runner = &first.runner;
    assert_eq!(runner.enrollment, RunnerEnrollment::Enrolled);
    assert_eq!(
        runner.key_fingerprint.as_deref(),
        Some(key.public_key().fingerprint().as_str())
    );
    assert_eq!(
        runner.public_key.as_deref(),
        Some(key.public_key().to_base64().as_str())
    );
    assert_eq!(runner.hostname.as_deref(), Some("gpu-1.example"));
    assert!(runner.capabilities_bound);
    assert!(first.token.starts_with("muster_runner_"));
    let lifetime = first.token_expires_at - server.registration_time();
    assert!(
        (3599..=3600).contains(&lifetime.whole_seconds()),
        "the default lifetime is an hour: {lifetime}"
    );
    assert_eq!(runner.token_expires_at, Some(first.token_expires_at));

    clock.advance_s(60);
    let mut renamed = description("gpu-1-renamed");
    renamed.tags = vec!["q4_k_m".into()];
    let (second, created) = server
        .register_key(&key, &renamed)
        .await
        .expect("the same key registers again");
    assert!(!created, "the same key is the same runner (200)");
    assert_eq!(second.runner.id, runner.id);
    assert_eq!(second.runner.name, "gpu-1-renamed");
    assert_eq!(second.runner.tags, vec!["q4_k_m".to_string()]);
    assert_ne!(
        second.token, first.token,
        "every registration issues a new token"
    );
    let listed = server
        .client()
        .list_runners(None, None)
        .await
        .expect("list runners");
    assert_eq!(listed.items.len(), 1, "no second runner: {listed:?}");

    let registered = audited(&server, "runner.registered").await;
    assert_eq!(registered.len(), 2);
    assert_eq!(registered[0]["detail"]["renewal"], true);
    assert_eq!(registered[1]["detail"]["renewal"], false);
    assert_eq!(registered[0]["subject"], format!("runner:{}", runner.id));
}

#[tokio::test]
async fn a_registration_is_accepted_once_within_its_window_and_only_with_a_good_signature() {
    let (server, clock) = start_manual().await;
    let key = TestServer::new_runner_key();
    allow(&server, &key).await;
    let body =
        signed_registration(&key, &description("r"), server.registration_time()).expect("sign");
    let accepted = post_registration(&server, &body).await;
    assert_eq!(accepted.status, 201, "{}", accepted.body);
    post_registration(&server, &body).await.assert_error(
        401,
        "unauthorized",
        &["already accepted"],
    );

    // Signed five minutes and a second ago, or as far ahead: outside the window.
    for offset_s in [-301, 301] {
        let at = server.registration_time() + time::Duration::seconds(offset_s);
        let stale = signed_registration(&key, &description("r"), at).expect("sign");
        post_registration(&server, &stale).await.assert_error(
            401,
            "unauthorized",
            &["timestamp", "300 s"],
        );
    }

    // A field changed after signing, a signature of another key, one of the wrong length.
    clock.advance_s(1);
    let mut tampered =
        signed_registration(&key, &description("r"), server.registration_time()).expect("sign");
    tampered["name"] = json!("someone-else");
    post_registration(&server, &tampered).await.assert_error(
        422,
        "invalid_signature",
        &["signature"],
    );
    let other = TestServer::new_runner_key();
    let mut foreign =
        signed_registration(&other, &description("r"), server.registration_time()).expect("sign");
    foreign["public_key"] = json!(key.public_key().to_base64());
    post_registration(&server, &foreign).await.assert_error(
        422,
        "invalid_signature",
        &["signature"],
    );
    let mut short =
        signed_registration(&key, &description("r"), server.registration_time()).expect("sign");
    short["signature"] = json!("AAAA");
    post_registration(&server, &short)
        .await
        .assert_error(422, "invalid_signature", &["64 bytes"]);

    // Malformed keys and fields: 400 naming the field.
    let mut bad_key = body.clone();
    bad_key["public_key"] = json!("AAAA");
    post_registration(&server, &bad_key).await.assert_error(
        400,
        "invalid_input",
        &["public_key", "32 bytes"],
    );
    bad_key["public_key"] = json!("not base64 at all!");
    post_registration(&server, &bad_key).await.assert_error(
        400,
        "invalid_input",
        &["public_key", "base64"],
    );
    let mut no_kinds = body.clone();
    no_kinds["kinds"] = json!([]);
    post_registration(&server, &no_kinds)
        .await
        .assert_error(400, "invalid_input", &["kinds"]);
    let huge: BTreeMap<String, String> = (0..10_000)
        .map(|index| (format!("label{index}"), "x".to_string()))
        .collect();
    let mut huge_labels = body.clone();
    huge_labels["labels"] = json!(huge);
    post_registration(&server, &huge_labels)
        .await
        .assert_error(400, "invalid_input", &["labels"]);
    let mut no_timestamp = body.clone();
    no_timestamp["timestamp"] = json!("yesterday");
    post_registration(&server, &no_timestamp)
        .await
        .assert_error(400, "invalid_input", &["timestamp"]);

    let listed = server
        .client()
        .list_runners(None, None)
        .await
        .expect("list runners");
    assert_eq!(listed.items.len(), 1, "refusals write nothing: {listed:?}");
}

#[tokio::test]
async fn under_the_approval_gate_an_unknown_key_waits_until_an_operator_approves_it() {
    let (server, _clock) = start_manual_with(|raw| raw.enrollment = Some("approval".into())).await;
    let key = TestServer::new_runner_key();
    let (registered, created) = server
        .register_key(&key, &description("newcomer"))
        .await
        .expect("an unknown key registers as pending");
    assert!(created);
    assert_eq!(registered.runner.enrollment, RunnerEnrollment::Pending);
    let runner = RunnerClient::new(&server.base_url, &registered.token).expect("client");
    runner
        .heartbeat(&Default::default())
        .await
        .expect("a pending runner may heartbeat");
    api_error(
        runner.claim_job(&claim_of(&["exec"])).await,
        403,
        "runner_not_enrolled",
    );
    let listed = admin(&server, Method::GET, "/api/v1/runners", None).await;
    assert_eq!(listed.json()["items"][0]["enrollment"], "pending");

    let submitted = submit(&server.client(), job("exec")).await;
    let approved = server
        .client()
        .approve_runner(registered.runner.id)
        .await
        .expect("approve");
    assert_eq!(approved.enrollment, RunnerEnrollment::Enrolled);
    let claimed = runner
        .claim_job(&claim_of(&["exec"]))
        .await
        .expect("the same token claims at once");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, submitted.id);
    let keys = server
        .client()
        .list_runner_keys(None, None)
        .await
        .expect("list keys");
    assert_eq!(
        keys.items[0].fingerprint,
        key.public_key().fingerprint(),
        "approval put the key on the allowlist"
    );
    assert_eq!(audited(&server, "runner.approved").await.len(), 1);
    assert_eq!(audited(&server, "runner_key.added").await.len(), 1);

    // Approving an operator's runner (which has no key) is refused.
    let (created, _) = server.runner("operators").await.expect("create");
    api_error(
        server.client().approve_runner(created.runner.id).await,
        409,
        "invalid_state",
    );
}

#[tokio::test]
async fn a_rejected_runner_loses_its_token_and_its_key_and_cannot_register_again() {
    let (server, clock) = start_manual_with(|raw| raw.enrollment = Some("approval".into())).await;
    let key = TestServer::new_runner_key();
    let (registered, _) = server
        .register_key(&key, &description("approved-then-rejected"))
        .await
        .expect("register");
    server
        .client()
        .approve_runner(registered.runner.id)
        .await
        .expect("approve");
    let runner = RunnerClient::new(&server.base_url, &registered.token).expect("client");
    let submitted = submit(&server.client(), job("exec")).await;
    let claimed = runner.claim_job(&claim_of(&["exec"])).await.expect("claim");
    assert_eq!(claimed.len(), 1);

    let rejected = server
        .client()
        .reject_runner(registered.runner.id)
        .await
        .expect("reject");
    assert_eq!(rejected.enrollment, RunnerEnrollment::Rejected);
    api_error(
        runner.heartbeat(&Default::default()).await,
        401,
        "unauthorized",
    );
    let job = server.client().get_job(submitted.id).await.expect("job");
    assert_eq!(
        job.state,
        JobState::Pending,
        "its lease was released: {job:?}"
    );
    let keys = server
        .client()
        .list_runner_keys(None, None)
        .await
        .expect("keys");
    assert!(
        keys.items.is_empty(),
        "the key left the allowlist: {keys:?}"
    );
    clock.advance_s(1);
    api_error(
        server.register_key(&key, &description("again")).await,
        403,
        "key_rejected",
    );
    assert_eq!(audited(&server, "runner.rejected").await.len(), 1);
    assert_eq!(audited(&server, "runner.revoked").await.len(), 1);
}

#[tokio::test]
async fn a_closed_gate_refuses_every_registration() {
    let (server, _clock) = start_manual_with(|raw| raw.enrollment = Some("closed".into())).await;
    let key = TestServer::new_runner_key();
    allow(&server, &key).await;
    api_error(
        server.register_key(&key, &description("r")).await,
        403,
        "registration_closed",
    );
}

#[tokio::test]
async fn tokens_expire_and_a_renewed_tokens_predecessor_works_five_minutes_more() {
    let (server, clock) = start_manual().await;
    let (first, runner, key) = server
        .key_runner("renewing", &["exec"])
        .await
        .expect("runner");
    clock.advance_s(45 * 60);
    runner
        .heartbeat(&Default::default())
        .await
        .expect("the token works within its hour");
    let (second, _) = server
        .register_key(&key, &description("renewing"))
        .await
        .expect("renew");
    let renewed = RunnerClient::new(&server.base_url, &second.token).expect("client");
    clock.advance_s(4 * 60 + 59);
    runner
        .heartbeat(&Default::default())
        .await
        .expect("the previous token works during the overlap");
    clock.advance_s(2);
    let expired = api_error(
        runner.heartbeat(&Default::default()).await,
        401,
        "token_expired",
    );
    assert!(expired.to_string().contains("register again"), "{expired}");
    renewed
        .heartbeat(&Default::default())
        .await
        .expect("the new token works");
    clock.advance_s(60 * 60);
    api_error(
        renewed.heartbeat(&Default::default()).await,
        401,
        "token_expired",
    );
    assert_ne!(first.token, second.token);

    // An operator's runner keeps its token however long it lives.
    let (_, operators) = server.runner("operators").await.expect("create");
    clock.advance_s(48 * 60 * 60);
    operators
        .heartbeat(&Default::default())
        .await
        .expect("a non-expiring token");
}

#[tokio::test]
async fn removing_a_key_revokes_its_runner_at_once_and_releases_its_leases() {
    let server = start().await;
    let (registered, runner, key) = server
        .key_runner("doomed", &["exec"])
        .await
        .expect("runner");
    let submitted = submit(&server.client(), job("exec")).await;
    let claimed = runner.claim_job(&claim_of(&["exec"])).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    server
        .client()
        .remove_runner_key(&key.public_key().fingerprint())
        .await
        .expect("remove the key");
    api_error(
        runner.heartbeat(&Default::default()).await,
        401,
        "unauthorized",
    );
    api_error(
        runner
            .complete_job(
                submitted.id,
                Some(claimed[0].lease.epoch),
                json!({"done": true}),
            )
            .await,
        401,
        "unauthorized",
    );
    let job = server.client().get_job(submitted.id).await.expect("job");
    assert_eq!(job.state, JobState::Pending, "{job:?}");
    assert!(
        job.result.is_none(),
        "no result of a revoked identity counts"
    );
    let message = job.error.map(|error| error.message).unwrap_or_default();
    assert!(message.contains("lost its identity"), "{message}");
    let revoked = audited(&server, "runner.revoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(
        revoked[0]["subject"],
        format!("runner:{}", registered.runner.id)
    );
    let shown = server
        .client()
        .get_runner(registered.runner.id)
        .await
        .expect("the runner stays listed");
    assert_eq!(shown.enrollment, RunnerEnrollment::Pending);
    assert_eq!(shown.token_expires_at, None, "no token left");
}

#[tokio::test]
async fn a_claim_may_narrow_what_a_registration_bound_but_never_widen_it() {
    let (server, _clock) = start_manual().await;
    let key = TestServer::new_runner_key();
    allow(&server, &key).await;
    let mut bound = description("bound");
    bound.kinds = vec!["exec".into(), "llm".into()];
    bound.labels = BTreeMap::from([("gpu".to_string(), "a100".to_string())]);
    bound.tags = vec!["q4_k_m".into()];
    bound.resources = BTreeMap::from([("vram_gb".to_string(), 40.0)]);
    let (registered, _) = server.register_key(&key, &bound).await.expect("register");
    let runner = RunnerClient::new(&server.base_url, &registered.token).expect("client");
    let widen = |claim: ClaimJobs| {
        let runner = runner.clone();
        async move { runner.claim_job(&claim).await }
    };
    for (claim, named) in [
        (claim_of(&["exec", "video"]), "'video'"),
        (
            ClaimJobs {
                tags: vec!["q8_0".into()],
                ..claim_of(&["exec"])
            },
            "q8_0",
        ),
        (
            ClaimJobs {
                resources: BTreeMap::from([("vram_gb".to_string(), 80.0)]),
                ..claim_of(&["exec"])
            },
            "vram_gb",
        ),
        (
            ClaimJobs {
                labels: BTreeMap::from([("gpu".to_string(), "h100".to_string())]),
                ..claim_of(&["exec"])
            },
            "gpu",
        ),
    ] {
        let error = api_error(widen(claim).await, 403, "capability_not_registered");
        assert!(error.to_string().contains(named), "{error}");
    }
    let narrowed = ClaimJobs {
        tags: vec!["q4_k_m".into()],
        resources: BTreeMap::from([("vram_gb".to_string(), 20.0)]),
        ..claim_of(&["llm"])
    };
    let mut requiring = job("llm");
    requiring.requirements = Some(muster_client::api::Requirements {
        labels: BTreeMap::from([("gpu".to_string(), "a100".to_string())]),
        tags: vec!["q4_k_m".into()],
        resources: BTreeMap::from([("vram_gb".to_string(), 16.0)]),
    });
    let submitted = submit(&server.client(), requiring).await;
    let claimed = runner.claim_job(&narrowed).await.expect("a narrower claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, submitted.id);

    // An operator's runner with fixed tags is bound the same way; one without is trusted.
    let fixed = server
        .client()
        .create_runner(&muster_client::api::CreateRunner {
            name: "fixed".into(),
            tags: Some(vec!["q4_k_m".into()]),
            ..Default::default()
        })
        .await
        .expect("create");
    assert!(fixed.runner.capabilities_bound);
    let fixed_runner = RunnerClient::new(&server.base_url, &fixed.token).expect("client");
    api_error(
        fixed_runner
            .claim_job(&ClaimJobs {
                tags: vec!["fp16".into()],
                ..claim_of(&["exec"])
            })
            .await,
        403,
        "capability_not_registered",
    );
    let (trusted, trusted_runner) = server.runner("trusted").await.expect("create");
    assert!(!trusted.runner.capabilities_bound);
    trusted_runner
        .claim_job(&ClaimJobs {
            tags: vec!["fp16".into()],
            ..claim_of(&["exec"])
        })
        .await
        .expect("an unbound runner declares what it likes");
}

/// The example in `tools/examples/register_runner.py` registers a runner with Python's
/// `cryptography` alone: what it signs is what the coordinator verifies.
#[tokio::test]
async fn a_runner_registers_from_python_with_cryptography_alone() {
    let server = start().await;
    let directory = tempfile::tempdir().expect("a directory");
    let key_path = directory.path().join("runner.pem");
    let script = muster_test_support::workspace_file("tools/examples/register_runner.py");
    let python = muster_test_support::test_python();
    // Run off the test's runtime thread, which also serves the coordinator.
    let run = |extra: &[&str]| {
        let mut command = std::process::Command::new(&python);
        command
            .arg(&script)
            .args(["--server", &server.base_url, "--key"])
            .arg(&key_path)
            .args(["--name", "py-runner", "--kind", "exec"])
            .args(extra);
        async move {
            tokio::task::spawn_blocking(move || command.output().expect("run the Python example"))
                .await
                .expect("join the Python example")
        }
    };
    let printed = run(&["--print-public-key"]).await;
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let public_key = String::from_utf8_lossy(&printed.stdout).trim().to_string();
    let refused = run(&[]).await;
    assert!(!refused.status.success(), "an unknown key is refused");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("key_not_allowed"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    server
        .client()
        .add_runner_key(&AddRunnerKey {
            public_key: public_key.clone(),
            note: Some("python".into()),
            organization_id: None,
        })
        .await
        .expect("allow the key");
    let accepted = run(&[
        "--tag",
        "q4_k_m",
        "--resource",
        "vram_gb=24",
        "--label",
        "zone=\u{e9}t\u{e9}",
    ])
    .await;
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    let answer: Value = serde_json::from_slice(&accepted.stdout).expect("the answer as JSON");
    assert_eq!(answer["created"], true);
    assert_eq!(answer["runner"]["public_key"], public_key.as_str());
    assert_eq!(answer["runner"]["resources"]["vram_gb"], 24.0);
    assert_eq!(answer["runner"]["labels"]["zone"], "\u{e9}t\u{e9}");
    let token = answer["token"].as_str().expect("a token");
    RunnerClient::new(&server.base_url, token)
        .expect("client")
        .heartbeat(&Default::default())
        .await
        .expect("the token works");
}
