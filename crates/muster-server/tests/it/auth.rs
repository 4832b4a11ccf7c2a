//! Who may call what: every route of the contract without a token, with an unknown token and
//! with the other audience's token; the operational endpoints need none.

use muster_test_support::TestServer;
use reqwest::Method;

use crate::support::{Reply, job_count, request, send, start, submit_and_claim};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Audience {
    Admin,
    Runner,
}

/// Every authenticated route of the contract, with a body it would accept.
fn routes(job: &str, runner: &str) -> Vec<(Method, String, Audience, &'static str)> {
    use Audience::{Admin, Runner};
    vec![
        (
            Method::POST,
            "/api/v1/jobs".into(),
            Admin,
            r#"{"kind": "exec"}"#,
        ),
        (
            Method::POST,
            "/api/v1/jobs/batch".into(),
            Admin,
            r#"{"jobs": [{"kind": "exec"}]}"#,
        ),
        (Method::GET, "/api/v1/jobs".into(), Admin, ""),
        (Method::GET, format!("/api/v1/jobs/{job}"), Admin, ""),
        (
            Method::POST,
            format!("/api/v1/jobs/{job}/cancel"),
            Admin,
            "",
        ),
        (Method::POST, format!("/api/v1/jobs/{job}/retry"), Admin, ""),
        (Method::GET, format!("/api/v1/jobs/{job}/logs"), Admin, ""),
        (Method::GET, format!("/api/v1/jobs/{job}/dag"), Admin, ""),
        (
            Method::POST,
            "/api/v1/runners".into(),
            Admin,
            r#"{"name": "x"}"#,
        ),
        (Method::GET, "/api/v1/runners".into(), Admin, ""),
        (Method::GET, format!("/api/v1/runners/{runner}"), Admin, ""),
        (
            Method::DELETE,
            format!("/api/v1/runners/{runner}"),
            Admin,
            "",
        ),
        (
            Method::POST,
            "/api/v1/runner/heartbeat".into(),
            Runner,
            "{}",
        ),
        (
            Method::POST,
            "/api/v1/runner/claim".into(),
            Runner,
            r#"{"kinds": ["exec"]}"#,
        ),
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{job}/heartbeat"),
            Runner,
            "{}",
        ),
        (
            Method::PUT,
            format!("/api/v1/runner/jobs/{job}/progress"),
            Runner,
            r#"{"progress": 1}"#,
        ),
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{job}/log"),
            Runner,
            r#"{"message": "x"}"#,
        ),
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{job}/complete"),
            Runner,
            "{}",
        ),
        (
            Method::POST,
            "/api/v1/runner/complete".into(),
            Runner,
            r#"{"items": []}"#,
        ),
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{job}/outputs"),
            Runner,
            r#"{"name": "x", "artifact_id": "sha256:0000000000000000000000000000000000000000000000000000000000000000"}"#,
        ),
        (Method::POST, "/api/v1/artifacts".into(), Admin, "bytes"),
        (
            Method::GET,
            "/api/v1/artifacts/sha256:0000000000000000000000000000000000000000000000000000000000000000".into(),
            Admin,
            "",
        ),
        (Method::POST, "/api/v1/runner/artifacts".into(), Runner, "bytes"),
        (
            Method::GET,
            "/api/v1/runner/artifacts/sha256:0000000000000000000000000000000000000000000000000000000000000000".into(),
            Runner,
            "",
        ),
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{job}/fail"),
            Runner,
            "{}",
        ),
        (
            Method::PUT,
            format!("/api/v1/runner/jobs/{job}/dag"),
            Runner,
            r#"{"nodes": [], "edges": []}"#,
        ),
    ]
}

async fn call(
    server: &TestServer,
    method: &Method,
    path: &str,
    body: &str,
    authorization: Option<&str>,
) -> Reply {
    let mut builder = request(server, method.clone(), path, None);
    if let Some(value) = authorization {
        builder = builder.header(reqwest::header::AUTHORIZATION, value);
    }
    if !body.is_empty() {
        builder = builder
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
    }
    send(builder).await
}

#[tokio::test]
async fn every_route_refuses_missing_unknown_and_wrong_audience_tokens() {
    let server = start().await;
    let client = server.client();
    let (created, runner) = server.runner("r").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &runner, "exec").await;
    let job = claimed.id.to_string();
    let runner_id = created.runner.id.to_string();
    let admin = format!("Bearer {}", server.admin_token);
    let runner_token = format!("Bearer {}", created.token);
    let jobs_before = job_count(&client).await;
    let job_before = client.get_job(claimed.id).await.expect("show");

    for (method, path, audience, body) in routes(&job, &runner_id) {
        let what = format!("{method} {path}");
        let missing = call(&server, &method, &path, body, None).await;
        missing.assert_error(401, "unauthorized", &["authorization"]);
        for unknown in [
            "Bearer not-a-token-we-know",
            "Bearer muster_runner_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "Bearer ",
        ] {
            let reply = call(&server, &method, &path, body, Some(unknown)).await;
            assert_eq!(reply.status, 401, "{what} with {unknown:?}: {}", reply.body);
            reply.assert_error(401, "unauthorized", &[]);
        }
        let not_bearer = call(
            &server,
            &method,
            &path,
            body,
            Some(&format!("Basic {}", server.admin_token)),
        )
        .await;
        not_bearer.assert_error(401, "unauthorized", &["bearer"]);

        let wrong = match audience {
            Audience::Admin => &runner_token,
            Audience::Runner => &admin,
        };
        let reply = call(&server, &method, &path, body, Some(wrong)).await;
        assert_eq!(
            reply.status, 403,
            "{what} with the other audience's token: {}",
            reply.body
        );
        // The message tells the caller which token the route wants.
        match audience {
            Audience::Admin => reply.assert_error(403, "forbidden", &["runner token", "admin"]),
            Audience::Runner => {
                reply.assert_error(403, "forbidden", &["runner token", "not the admin token"])
            }
        }
    }
    assert_eq!(
        job_count(&client).await,
        jobs_before,
        "no refused call stored a job"
    );
    assert_eq!(
        server.blob_files().expect("list artifact files"),
        Vec::<std::path::PathBuf>::new(),
        "no refused call stored an artifact"
    );
    assert_eq!(client.get_job(claimed.id).await.expect("show"), job_before);
    client
        .get_runner(created.runner.id)
        .await
        .expect("the runner was not deleted");
}

#[tokio::test]
async fn operational_endpoints_need_no_token() {
    let server = start().await;
    for path in ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"] {
        let reply = call(&server, &Method::GET, path, "", None).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    }
}
