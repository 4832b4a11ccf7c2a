//! Signed results (the bakeoff envelope) over HTTP: a verified signature is recorded on the job
//! with the key's fingerprint, single and batch; a signature that does not verify (a changed
//! result, a wrong-length signature, a malformed digest, a runner without a key) and an unsigned
//! result of a kind that requires signatures are refused with 422, audited, and leave the job
//! leased to its runner, which can then complete it properly.

use muster_client::RunnerClient;
use muster_client::api::{CompleteJobs, CompletionItem, JobState, ResultSignature};
use muster_core::identity::RunnerSigningKey;
use muster_test_support::TestServer;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{admin, api_error, start, submit_and_claim};

const SIGNED_AT: &str = "2026-12-02T10:00:00Z";

fn sig_of(envelope: &Value) -> ResultSignature {
    serde_json::from_value(envelope["sig"].clone()).expect("the envelope's sig")
}

/// The audit entries of refused signatures, as (subject, code).
async fn signature_refusals(server: &TestServer) -> Vec<(String, String)> {
    let audit = admin(
        server,
        Method::GET,
        "/api/v1/admin/audit?action=signature.refused",
        None,
    )
    .await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    audit.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|entry| {
            assert_eq!(entry["action"], "signature.refused");
            assert!(
                entry["actor"]
                    .as_str()
                    .is_some_and(|actor| actor.starts_with("runner:")),
                "{entry}"
            );
            (
                entry["subject"].as_str().unwrap_or_default().to_string(),
                entry["detail"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// A runner of `bench` jobs registered with its own key, and its id as it signs with it.
async fn signer(server: &TestServer) -> (RunnerClient, RunnerSigningKey, String) {
    let (registered, runner, key) = server
        .key_runner("signer", &["bench"])
        .await
        .expect("a runner with a key");
    (runner, key, registered.runner.id.to_string())
}

/// The job is still claimed by its runner, with no result.
async fn assert_still_leased(server: &TestServer, id: Uuid) {
    let job = server.client().get_job(id).await.expect("the job");
    assert_eq!(job.state, JobState::Claimed, "unchanged: {job:?}");
    assert_eq!(job.result, None);
    assert_eq!(job.result_signature, None);
    assert!(job.runner_id.is_some(), "still leased to its runner");
}

#[tokio::test]
async fn a_signed_result_is_recorded_with_the_keys_fingerprint_single_and_batch() {
    let server = start().await;
    let client = server.client();
    let (runner, key, runner_name) = signer(&server).await;
    let (job, claimed) = submit_and_claim(&client, &runner, "bench").await;
    let result = json!({"score": 0.5, "name": "caf\u{e9}", "list": [1, 2.5, null]});
    let envelope = key.sign_result(&result, &runner_name, SIGNED_AT);
    let completed = runner
        .complete_job_signed(job.id, Some(claimed.lease.epoch), &envelope)
        .await
        .expect("a signed completion");
    assert_eq!(completed.state, JobState::Completed);
    assert_eq!(completed.result, Some(result.clone()));
    let signature = completed
        .result_signature
        .clone()
        .expect("a result signature");
    assert_eq!(signature.key_fingerprint, key.public_key().fingerprint());
    assert_eq!(signature.sha256, envelope["sig"]["sha256"]);
    assert_eq!(signature.signature, envelope["sig"]["signature"]);
    assert_eq!(signature.signed_at, SIGNED_AT);
    assert_eq!(signature.signer_runner_id, runner_name);
    let read = client.get_job(job.id).await.expect("the job");
    assert_eq!(read.result_signature, Some(signature));

    // A batch: one signed item, one unsigned.
    let (signed_job, signed_claim) = submit_and_claim(&client, &runner, "bench").await;
    let (plain_job, plain_claim) = submit_and_claim(&client, &runner, "bench").await;
    let batch_result = json!({"score": 1});
    let batch_envelope = key.sign_result(&batch_result, &runner_name, SIGNED_AT);
    let outcomes = runner
        .complete_jobs(&CompleteJobs {
            items: vec![
                CompletionItem {
                    id: signed_job.id,
                    epoch: Some(signed_claim.lease.epoch),
                    result: Some(batch_result),
                    sig: Some(sig_of(&batch_envelope)),
                },
                CompletionItem {
                    id: plain_job.id,
                    epoch: Some(plain_claim.lease.epoch),
                    result: Some(json!({"score": 0})),
                    sig: None,
                },
            ],
        })
        .await
        .expect("a batch");
    assert!(
        outcomes.items.iter().all(|item| item.ok == Some(true)),
        "{outcomes:?}"
    );
    let signed = client.get_job(signed_job.id).await.expect("the job");
    assert_eq!(
        signed
            .result_signature
            .map(|signature| signature.key_fingerprint),
        Some(key.public_key().fingerprint())
    );
    let plain = client.get_job(plain_job.id).await.expect("the job");
    assert_eq!(plain.state, JobState::Completed);
    assert_eq!(plain.result_signature, None);
    assert!(signature_refusals(&server).await.is_empty());
}

#[tokio::test]
async fn signatures_that_do_not_verify_are_refused_audited_and_leave_the_job_leased() {
    let server = start().await;
    let client = server.client();
    let (runner, key, runner_name) = signer(&server).await;
    let (job, claimed) = submit_and_claim(&client, &runner, "bench").await;
    let epoch = Some(claimed.lease.epoch);
    let result = json!({"score": 0.25});
    let envelope = key.sign_result(&result, &runner_name, SIGNED_AT);

    // The result changed by one byte after signing.
    let mut tampered = envelope.clone();
    tampered["result"] = json!({"score": 0.26});
    let refused = runner.complete_job_signed(job.id, epoch, &tampered).await;
    api_error(refused, 422, "invalid_signature");
    assert_still_leased(&server, job.id).await;

    // The digest of the changed result, but the signature of the original.
    let mut redigested = tampered.clone();
    redigested["sig"]["sha256"] =
        key.sign_result(&tampered["result"], "x", "y")["sig"]["sha256"].clone();
    let refused = runner.complete_job_signed(job.id, epoch, &redigested).await;
    api_error(refused, 422, "invalid_signature");

    let mut short = envelope.clone();
    short["sig"]["signature"] = json!("c2hvcnQ=");
    let refused = runner.complete_job_signed(job.id, epoch, &short).await;
    let message = api_error(refused, 422, "invalid_signature").to_string();
    assert!(message.contains("64 bytes"), "{message}");

    let mut malformed = envelope.clone();
    malformed["sig"]["sha256"] = json!("ABC");
    let refused = runner.complete_job_signed(job.id, epoch, &malformed).await;
    let message = api_error(refused, 422, "invalid_signature").to_string();
    assert!(message.contains("sig.sha256"), "{message}");
    assert_still_leased(&server, job.id).await;

    let refusals = signature_refusals(&server).await;
    assert_eq!(refusals.len(), 4, "one entry per refusal: {refusals:?}");
    assert!(
        refusals
            .iter()
            .all(|(subject, code)| *subject == format!("job:{}", job.id)
                && code == "invalid_signature"),
        "{refusals:?}"
    );

    // The same runner then completes it properly.
    let completed = runner
        .complete_job_signed(job.id, epoch, &envelope)
        .await
        .expect("the genuine envelope");
    assert_eq!(completed.state, JobState::Completed);
    assert!(completed.result_signature.is_some());
}

#[tokio::test]
async fn a_batch_with_signatures_that_do_not_verify_refuses_those_items_only() {
    let server = start().await;
    let client = server.client();
    let (runner, key, runner_name) = signer(&server).await;
    let another_key = TestServer::new_runner_key();
    let mut items = Vec::new();
    let mut jobs = Vec::new();
    for index in 0..5 {
        let (job, claimed) = submit_and_claim(&client, &runner, "bench").await;
        let result = json!({"index": index});
        let mut sig = sig_of(&key.sign_result(&result, &runner_name, SIGNED_AT));
        match index {
            // Signed by a key this runner did not register.
            1 => sig = sig_of(&another_key.sign_result(&result, &runner_name, SIGNED_AT)),
            // The signature of another result, under this result's digest.
            3 => {
                let other = key.sign_result(&json!({"index": 99}), &runner_name, SIGNED_AT);
                sig.signature = sig_of(&other).signature;
            }
            _ => {}
        }
        jobs.push(job.id);
        items.push(CompletionItem {
            id: job.id,
            epoch: Some(claimed.lease.epoch),
            result: Some(result),
            sig: Some(sig),
        });
    }
    let outcomes = runner
        .complete_jobs(&CompleteJobs { items })
        .await
        .expect("a batch");
    let answered: Vec<(Uuid, Option<String>)> = outcomes
        .items
        .iter()
        .map(|item| (item.id, item.error.as_ref().map(|error| error.code.clone())))
        .collect();
    let refused = Some("invalid_signature".to_string());
    assert_eq!(
        answered,
        vec![
            (jobs[0], None),
            (jobs[1], refused.clone()),
            (jobs[2], None),
            (jobs[3], refused),
            (jobs[4], None),
        ],
        "each item answered on its own, in order: {outcomes:?}"
    );
    for (index, id) in jobs.iter().enumerate() {
        if index == 1 || index == 3 {
            assert_still_leased(&server, *id).await;
        } else {
            let job = client.get_job(*id).await.expect("the job");
            assert_eq!(job.state, JobState::Completed);
            assert_eq!(
                job.result_signature
                    .map(|signature| signature.key_fingerprint),
                Some(key.public_key().fingerprint())
            );
        }
    }
    let refusals = signature_refusals(&server).await;
    let mut subjects: Vec<String> = refusals.into_iter().map(|(subject, _)| subject).collect();
    subjects.sort();
    let mut expected = vec![format!("job:{}", jobs[1]), format!("job:{}", jobs[3])];
    expected.sort();
    assert_eq!(subjects, expected, "one audit entry per refused item");
}

#[tokio::test]
async fn a_runner_without_a_key_cannot_sign_but_may_complete_unsigned() {
    let server = start().await;
    let client = server.client();
    let (_, runner): (_, RunnerClient) = server.runner("keyless").await.expect("a runner");
    let (job, claimed) = submit_and_claim(&client, &runner, "bench").await;
    let someone = TestServer::new_runner_key();
    let envelope = someone.sign_result(&json!(1), "someone", SIGNED_AT);
    let refused = runner
        .complete_job_signed(job.id, Some(claimed.lease.epoch), &envelope)
        .await;
    let message = api_error(refused, 422, "invalid_signature").to_string();
    assert!(message.contains("no registered key"), "{message}");
    assert_still_leased(&server, job.id).await;
    assert_eq!(
        signature_refusals(&server).await,
        [(format!("job:{}", job.id), "invalid_signature".to_string())]
    );
    let completed = runner
        .complete_job(job.id, Some(claimed.lease.epoch), json!(1))
        .await
        .expect("an unsigned completion");
    assert_eq!(completed.result_signature, None);
}

#[tokio::test]
async fn a_kind_requiring_signatures_refuses_unsigned_results_single_and_batch() {
    let server = start().await;
    let client = server.client();
    let (registered, runner, key) = server
        .key_runner("signer", &["secure"])
        .await
        .expect("a runner with a key");
    let runner_name = registered.runner.id.to_string();
    let put = admin(
        &server,
        Method::PUT,
        "/api/v1/kinds/secure",
        Some(json!({"require_signed_results": true})),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let (job, claimed) = submit_and_claim(&client, &runner, "secure").await;
    let epoch = Some(claimed.lease.epoch);
    let refused = runner
        .complete_job(job.id, epoch, json!({"ok": true}))
        .await;
    api_error(refused, 422, "signature_required");
    assert_still_leased(&server, job.id).await;

    let (batch_job, batch_claim) = submit_and_claim(&client, &runner, "secure").await;
    let batch_result = json!({"ok": "batch"});
    let outcomes = runner
        .complete_jobs(&CompleteJobs {
            items: vec![
                CompletionItem {
                    id: batch_job.id,
                    epoch: Some(batch_claim.lease.epoch),
                    result: Some(batch_result.clone()),
                    sig: None,
                },
                CompletionItem {
                    id: batch_job.id,
                    epoch: Some(batch_claim.lease.epoch),
                    result: Some(json!({"ok": "tampered"})),
                    sig: Some(sig_of(&key.sign_result(
                        &batch_result,
                        &runner_name,
                        SIGNED_AT,
                    ))),
                },
            ],
        })
        .await
        .expect("a batch answers item by item");
    let codes: Vec<Option<String>> = outcomes
        .items
        .iter()
        .map(|item| item.error.as_ref().map(|error| error.code.clone()))
        .collect();
    assert_eq!(
        codes,
        [
            Some("signature_required".to_string()),
            Some("invalid_signature".to_string())
        ],
        "{outcomes:?}"
    );
    assert_still_leased(&server, batch_job.id).await;
    let mut refusals = signature_refusals(&server).await;
    refusals.sort();
    let mut expected = vec![
        (format!("job:{}", job.id), "signature_required".to_string()),
        (
            format!("job:{}", batch_job.id),
            "signature_required".to_string(),
        ),
        (
            format!("job:{}", batch_job.id),
            "invalid_signature".to_string(),
        ),
    ];
    expected.sort();
    assert_eq!(refusals, expected);

    // Signed, both complete.
    let envelope = key.sign_result(&json!({"ok": true}), &runner_name, SIGNED_AT);
    let completed = runner
        .complete_job_signed(job.id, epoch, &envelope)
        .await
        .expect("a signed completion");
    assert!(completed.result_signature.is_some());
    let outcomes = runner
        .complete_jobs(&CompleteJobs {
            items: vec![CompletionItem {
                id: batch_job.id,
                epoch: Some(batch_claim.lease.epoch),
                result: Some(batch_result.clone()),
                sig: Some(sig_of(&key.sign_result(
                    &batch_result,
                    &runner_name,
                    SIGNED_AT,
                ))),
            }],
        })
        .await
        .expect("a batch");
    assert_eq!(outcomes.items[0].ok, Some(true), "{outcomes:?}");
}
