//! Result rules per kind over HTTP: set, show, list, delete (each audited); a schema that is not
//! one refused at `PUT`; a result that breaks the schema refused at completion with the failing
//! pointer, the job unchanged and still leased; the same per item of a batch; and a kind that
//! requires signed results refusing an unsigned completion.

use muster_client::api::{CompleteJobs, CompletionItem, JobState};
use reqwest::Method;
use serde_json::json;

use crate::support::{admin, api_error, request, send, start, submit_and_claim};

const SCORE_SCHEMA: &str = r#"{
    "type": "object",
    "required": ["score"],
    "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}}
}"#;

fn score_schema() -> serde_json::Value {
    serde_json::from_str(SCORE_SCHEMA).expect("schema")
}

#[tokio::test]
async fn kind_settings_are_set_shown_listed_deleted_and_audited() {
    let server = start().await;
    let put = admin(
        &server,
        Method::PUT,
        "/api/v1/kinds/bench%2Fllm",
        Some(json!({"result_schema": score_schema(), "require_signed_results": false})),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let settings = put.json();
    assert_eq!(settings["kind"], "bench/llm", "the kind is percent-decoded");
    assert_eq!(settings["result_schema"], score_schema());
    assert_eq!(settings["require_signed_results"], false);
    assert!(settings["updated_at"].is_string(), "{settings}");

    let shown = admin(&server, Method::GET, "/api/v1/kinds/bench%2Fllm", None).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.json(), settings);

    // Replaced as a whole: no schema now, signatures required.
    let replaced = admin(
        &server,
        Method::PUT,
        "/api/v1/kinds/bench%2Fllm",
        Some(json!({"require_signed_results": true})),
    )
    .await
    .json();
    assert_eq!(replaced["result_schema"], json!(null));
    assert_eq!(replaced["require_signed_results"], true);
    admin(&server, Method::PUT, "/api/v1/kinds/exec", Some(json!({}))).await;
    let listed = admin(&server, Method::GET, "/api/v1/kinds", None)
        .await
        .json();
    let kinds: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["bench/llm", "exec"]);

    let deleted = admin(&server, Method::DELETE, "/api/v1/kinds/exec", None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    admin(&server, Method::GET, "/api/v1/kinds/exec", None)
        .await
        .assert_error(404, "not_found", &["exec"]);
    admin(&server, Method::DELETE, "/api/v1/kinds/exec", None)
        .await
        .assert_error(404, "not_found", &["exec"]);

    let audit = admin(&server, Method::GET, "/api/v1/admin/audit", None)
        .await
        .json();
    let actions: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|entry| {
            (
                entry["action"].as_str().unwrap_or_default(),
                entry["subject"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("kind.settings_deleted", "exec"),
            ("kind.settings_set", "exec"),
            ("kind.settings_set", "bench/llm"),
            ("kind.settings_set", "bench/llm"),
        ]
    );
}

#[tokio::test]
async fn a_schema_that_is_not_one_is_refused_and_nothing_is_stored() {
    let server = start().await;
    for schema in [
        json!({"type": "no-such-type"}),
        json!({"minimum": "zero"}),
        json!(5),
        json!("object"),
    ] {
        admin(
            &server,
            Method::PUT,
            "/api/v1/kinds/exec",
            Some(json!({"result_schema": schema})),
        )
        .await
        .assert_error(400, "invalid_schema", &["result_schema"]);
    }
    admin(&server, Method::GET, "/api/v1/kinds/exec", None)
        .await
        .assert_error(404, "not_found", &["exec"]);
    admin(
        &server,
        Method::PUT,
        "/api/v1/kinds/exec",
        Some(json!({"require_signed_results": "yes"})),
    )
    .await
    .assert_error(400, "invalid_input", &["require_signed_results"]);
    let audit = admin(&server, Method::GET, "/api/v1/admin/audit", None)
        .await
        .json();
    assert_eq!(
        audit["items"],
        json!([]),
        "a refused change is not recorded"
    );
}

#[tokio::test]
async fn a_result_that_breaks_the_schema_is_refused_and_the_job_stays_with_its_runner() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("scorer").await.expect("a runner");
    admin(
        &server,
        Method::PUT,
        "/api/v1/kinds/bench",
        Some(json!({"result_schema": score_schema()})),
    )
    .await;
    let (job, claimed) = submit_and_claim(&client, &runner, "bench").await;

    let refused = runner
        .complete_job(job.id, Some(claimed.lease.epoch), json!({"score": 7}))
        .await;
    let error = api_error(refused, 422, "result_schema_mismatch").to_string();
    assert!(error.contains("/score"), "names the pointer: {error}");
    assert!(error.contains("maximum"), "names the rule: {error}");

    let missing = runner
        .complete_job(job.id, Some(claimed.lease.epoch), json!({"other": 1}))
        .await;
    let error = api_error(missing, 422, "result_schema_mismatch").to_string();
    assert!(error.contains("score"), "{error}");

    let unchanged = client.get_job(job.id).await.expect("job");
    assert_eq!(
        unchanged.state,
        JobState::Claimed,
        "unchanged: {unchanged:?}"
    );
    assert_eq!(unchanged.result, None);
    assert!(unchanged.runner_id.is_some(), "still leased to its runner");

    // Fixed, the same runner completes it.
    let completed = runner
        .complete_job(job.id, Some(claimed.lease.epoch), json!({"score": 0.75}))
        .await
        .expect("a result that meets the schema");
    assert_eq!(completed.state, JobState::Completed);
    assert_eq!(completed.result, Some(json!({"score": 0.75})));
}

#[tokio::test]
async fn batch_items_are_checked_one_by_one() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("scorer").await.expect("a runner");
    admin(
        &server,
        Method::PUT,
        "/api/v1/kinds/bench",
        Some(json!({"result_schema": score_schema()})),
    )
    .await;
    let (good, good_claim) = submit_and_claim(&client, &runner, "bench").await;
    let (bad, bad_claim) = submit_and_claim(&client, &runner, "bench").await;
    let (free, free_claim) = submit_and_claim(&client, &runner, "exec").await;
    let item = |id, epoch, result| CompletionItem {
        sig: None,
        id,
        epoch: Some(epoch),
        result: Some(result),
    };
    let outcomes = runner
        .complete_jobs(&CompleteJobs {
            items: vec![
                item(good.id, good_claim.lease.epoch, json!({"score": 1})),
                item(bad.id, bad_claim.lease.epoch, json!({"score": "high"})),
                item(free.id, free_claim.lease.epoch, json!("anything")),
            ],
        })
        .await
        .expect("a batch answer")
        .items;
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes[0].ok, Some(true), "{outcomes:?}");
    let error = outcomes[1].error.as_ref().expect("the bad item is refused");
    assert_eq!(error.code, "result_schema_mismatch");
    assert!(error.message.contains("/score"), "{}", error.message);
    assert_eq!(
        outcomes[2].ok,
        Some(true),
        "a kind without rules is not checked"
    );
    assert_eq!(
        client.get_job(good.id).await.expect("job").state,
        JobState::Completed
    );
    assert_eq!(
        client.get_job(bad.id).await.expect("job").state,
        JobState::Claimed
    );
    assert_eq!(
        client.get_job(free.id).await.expect("job").state,
        JobState::Completed
    );
}

#[tokio::test]
async fn a_kind_that_requires_signed_results_refuses_an_unsigned_completion() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("plain").await.expect("a runner");
    admin(
        &server,
        Method::PUT,
        "/api/v1/kinds/signed",
        Some(json!({"require_signed_results": true})),
    )
    .await;
    let (job, claimed) = submit_and_claim(&client, &runner, "signed").await;
    let error = api_error(
        runner
            .complete_job(job.id, Some(claimed.lease.epoch), json!({"score": 1}))
            .await,
        422,
        "signature_required",
    )
    .to_string();
    assert!(error.contains("signed"), "{error}");
    assert_eq!(
        client.get_job(job.id).await.expect("job").state,
        JobState::Claimed
    );

    // Once the rule is removed, the same completion counts.
    admin(&server, Method::DELETE, "/api/v1/kinds/signed", None).await;
    let completed = runner
        .complete_job(job.id, Some(claimed.lease.epoch), json!({"score": 1}))
        .await
        .expect("no rule any more");
    assert_eq!(completed.state, JobState::Completed);
}

#[tokio::test]
async fn only_the_admin_token_may_set_kind_rules() {
    let server = start().await;
    let (created, _) = server.runner("r").await.expect("a runner");
    for (method, path) in [
        (Method::PUT, "/api/v1/kinds/exec"),
        (Method::GET, "/api/v1/kinds/exec"),
        (Method::DELETE, "/api/v1/kinds/exec"),
        (Method::GET, "/api/v1/kinds"),
    ] {
        send(request(&server, method.clone(), path, Some(&created.token)).json(&json!({})))
            .await
            .assert_error(403, "forbidden", &["runner token"]);
        send(request(&server, method, path, None).json(&json!({})))
            .await
            .assert_error(401, "unauthorized", &[]);
    }
}
