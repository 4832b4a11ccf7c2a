//! Artifacts over HTTP: content-addressed upload and download for users and runners, the
//! size limit (413, nothing stored), job inputs checked at submit, outputs recorded by the
//! lease holder, and uploads streamed rather than held in memory.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use muster_client::api::{ClaimJobs, JobState, SubmitJob};
use muster_test_support::TestServer;
use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::support::{
    admin, api_error, claim_one, job, job_count, request, runner_raw, send, start,
    start_manual_with, submit, submit_and_claim,
};

const NO_SUCH_ARTIFACT: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fn sha256_id(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Bytes that are not all alike, so a shifted or truncated copy would not pass for them.
fn pattern(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..length)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// `bytes` as a chunked upload body (no Content-Length), `chunk` bytes at a time.
fn chunked(bytes: Vec<u8>, chunk: usize) -> reqwest::Body {
    let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(chunk)
        .map(|part| Ok(Bytes::copy_from_slice(part)))
        .collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

fn no_files(server: &TestServer) -> Vec<std::path::PathBuf> {
    server.blob_files().expect("list artifact files")
}

/// A job of `kind` reading `inputs`.
fn job_with_inputs(kind: &str, inputs: &[&str]) -> SubmitJob {
    SubmitJob {
        inputs: Some(inputs.iter().map(|id| id.to_string()).collect()),
        ..job(kind)
    }
}

#[tokio::test]
async fn an_upload_answers_the_sha256_of_its_bytes_and_a_download_returns_them() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    let bytes = pattern(300_000, 1);
    let expected = sha256_id(&bytes);

    let reply = send(
        request(
            &server,
            Method::POST,
            "/api/v1/artifacts",
            Some(&server.admin_token),
        )
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(bytes.clone()),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.json(), json!({"id": expected, "size": 300_000}));

    let response = request(
        &server,
        Method::GET,
        &format!("/api/v1/artifacts/{expected}"),
        Some(&server.admin_token),
    )
    .send()
    .await
    .expect("download");
    assert_eq!(response.status().as_u16(), 200);
    let header = |name: reqwest::header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        header(reqwest::header::CONTENT_TYPE).as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(
        header(reqwest::header::CONTENT_LENGTH).as_deref(),
        Some("300000"),
        "the download announces its length"
    );
    assert_eq!(
        header(reqwest::header::ETAG),
        Some(format!("\"{expected}\""))
    );
    let body = response.bytes().await.expect("read the download");
    assert!(
        body.as_ref() == bytes.as_slice(),
        "the bytes come back unchanged"
    );

    // The clients, both audiences, checked against the id as they read. A runner reads only
    // what a job it holds names: not before it holds one.
    assert_eq!(
        client
            .download_artifact_bytes(&expected)
            .await
            .expect("user download"),
        bytes
    );
    let before = runner
        .download_artifact_bytes(&expected)
        .await
        .expect_err("no job names it yet");
    assert_eq!(
        before.code(),
        Some(muster_core::ErrorCode::NotFound),
        "{before:?}"
    );
    submit(
        &client,
        job_with_inputs("reads-upload", &[expected.as_str()]),
    )
    .await;
    claim_one(&runner, "reads-upload").await;
    assert_eq!(
        runner
            .download_artifact_bytes(&expected)
            .await
            .expect("runner download"),
        bytes
    );
    let target = server.data_dir.path().join("downloaded.bin");
    let size = client
        .download_artifact_to_file(&expected, &target)
        .await
        .expect("download to a file");
    assert_eq!(size, 300_000);
    assert_eq!(std::fs::read(&target).expect("read the file"), bytes);

    // A runner uploads too (a job's output, say); an empty artifact is an artifact.
    let empty = runner
        .upload_artifact_bytes(Bytes::new())
        .await
        .expect("upload nothing");
    assert_eq!(empty.id, sha256_id(b""));
    assert_eq!(empty.size, 0);
    assert!(
        client
            .download_artifact_bytes(&empty.id)
            .await
            .expect("download nothing")
            .is_empty()
    );
}

#[tokio::test]
async fn the_same_bytes_uploaded_twice_are_stored_once() {
    let server = start().await;
    let client = server.client();
    let (created, runner) = server.runner("r").await.expect("runner");
    let bytes = pattern(100_000, 2);

    let first = send(
        request(
            &server,
            Method::POST,
            "/api/v1/artifacts",
            Some(&server.admin_token),
        )
        .body(bytes.clone()),
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.body);
    // Again, as a runner, chunked differently and without a length: the content decides.
    let second = send(
        request(
            &server,
            Method::POST,
            "/api/v1/runner/artifacts",
            Some(&created.token),
        )
        .body(chunked(bytes.clone(), 7_777)),
    )
    .await;
    assert_eq!(
        second.status, 200,
        "existing content answers 200: {}",
        second.body
    );
    assert_eq!(first.json(), second.json(), "the same id and size");
    let third = client
        .upload_artifact(futures::stream::iter(
            bytes
                .chunks(1_000)
                .map(|part| Ok::<_, std::io::Error>(Bytes::copy_from_slice(part)))
                .collect::<Vec<_>>(),
        ))
        .await
        .expect("upload a stream");
    let file = server.data_dir.path().join("same.bin");
    std::fs::write(&file, &bytes).expect("write a file");
    let fourth = runner
        .upload_artifact_file(&file)
        .await
        .expect("upload a file");
    assert_eq!(third, fourth);
    assert_eq!(third.id, sha256_id(&bytes));

    let files = no_files(&server);
    assert_eq!(files.len(), 1, "one file for one content: {files:?}");
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_with_413_and_leaves_no_file() {
    let (server, _clock) = start_manual_with(|config| {
        config.max_artifact_bytes = Some(64 * 1024);
    })
    .await;
    let client = server.client();
    let (created, runner) = server.runner("r").await.expect("runner");
    let too_big = pattern(200 * 1024, 3);

    // With a Content-Length: refused before a byte is stored.
    let reply = send(
        request(
            &server,
            Method::POST,
            "/api/v1/artifacts",
            Some(&server.admin_token),
        )
        .body(too_big.clone()),
    )
    .await;
    reply.assert_error(413, "payload_too_large", &["limit", "65536"]);
    // Chunked, so the length shows only while streaming: refused once past the limit.
    let reply = send(
        request(
            &server,
            Method::POST,
            "/api/v1/runner/artifacts",
            Some(&created.token),
        )
        .body(chunked(too_big.clone(), 10_000)),
    )
    .await;
    reply.assert_error(413, "payload_too_large", &["limit"]);
    let file = server.data_dir.path().join("big.bin");
    std::fs::write(&file, &too_big).expect("write a file");
    api_error(
        runner.upload_artifact_file(&file).await,
        413,
        "payload_too_large",
    );
    assert_eq!(
        no_files(&server),
        Vec::<std::path::PathBuf>::new(),
        "nothing stored, no upload file left"
    );
    api_error(
        client.download_artifact_bytes(&sha256_id(&too_big)).await,
        404,
        "not_found",
    );

    // Exactly at the limit is fine.
    let at_limit = client
        .upload_artifact_bytes(too_big[..64 * 1024].to_vec())
        .await
        .expect("an artifact of exactly the limit");
    assert_eq!(at_limit.size, 64 * 1024);
}

#[tokio::test]
async fn artifacts_have_their_own_limit_not_the_json_body_limit() {
    let (server, _clock) = start_manual_with(|config| {
        config.max_body_bytes = Some(16 * 1024);
    })
    .await;
    let client = server.client();
    let bytes = pattern(1024 * 1024, 4);
    let stored = client
        .upload_artifact_bytes(bytes.clone())
        .await
        .expect("an artifact far above the JSON body limit");
    assert_eq!(stored.size, bytes.len() as u64);
    // JSON bodies keep their limit.
    let payload = "x".repeat(32 * 1024);
    admin(
        &server,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"kind": "exec", "payload": {"blob": payload}})),
    )
    .await
    .assert_error(413, "payload_too_large", &[]);
}

#[tokio::test]
async fn an_upload_cut_off_half_way_leaves_no_file() {
    let server = start().await;
    let address = server.base_url.trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/artifacts HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        server.admin_token
    );
    socket.write_all(head.as_bytes()).await.expect("send head");
    let chunk = pattern(2 * 1024 * 1024, 5);
    socket
        .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
        .await
        .expect("send chunk size");
    socket.write_all(&chunk).await.expect("send a chunk");
    socket.write_all(b"\r\n").await.expect("end the chunk");
    socket.flush().await.expect("flush");
    // The upload is under way: its file exists (so the check below can see a leftover).
    let mut seen = false;
    for _ in 0..100 {
        if !no_files(&server).is_empty() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "an upload in progress has a file");
    drop(socket);
    let mut left = no_files(&server);
    for _ in 0..250 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = no_files(&server);
    }
    assert_eq!(
        left,
        Vec::<std::path::PathBuf>::new(),
        "the client went away; its partial upload is gone"
    );
}

#[tokio::test]
async fn unknown_and_malformed_artifact_ids_are_not_found() {
    let server = start().await;
    let (created, _) = server.runner("r").await.expect("runner");
    let stored = server
        .client()
        .upload_artifact_bytes(&b"known"[..])
        .await
        .expect("upload");
    for id in [
        NO_SUCH_ARTIFACT.to_string(),
        "nonsense".to_string(),
        stored.id.to_uppercase(),
        stored.id.trim_start_matches("sha256:").to_string(),
        format!("{}0", stored.id),
    ] {
        for (prefix, token) in [
            ("/api/v1/artifacts", server.admin_token.as_str()),
            ("/api/v1/runner/artifacts", created.token.as_str()),
        ] {
            let reply = send(request(
                &server,
                Method::GET,
                &format!("{prefix}/{id}"),
                Some(token),
            ))
            .await;
            reply.assert_error(404, "not_found", &["artifact"]);
        }
    }
}

#[tokio::test]
async fn artifact_routes_take_the_right_token() {
    let server = start().await;
    let (created, _) = server.runner("r").await.expect("runner");
    let stored = server
        .client()
        .upload_artifact_bytes(&b"guarded"[..])
        .await
        .expect("upload");
    let before = no_files(&server);
    let cases = [
        (
            Method::POST,
            "/api/v1/artifacts".to_string(),
            created.token.as_str(),
        ),
        (
            Method::GET,
            format!("/api/v1/artifacts/{}", stored.id),
            created.token.as_str(),
        ),
        (
            Method::POST,
            "/api/v1/runner/artifacts".to_string(),
            server.admin_token.as_str(),
        ),
        (
            Method::GET,
            format!("/api/v1/runner/artifacts/{}", stored.id),
            server.admin_token.as_str(),
        ),
    ];
    for (method, path, wrong_token) in cases {
        let body = || b"other bytes".to_vec();
        send(request(&server, method.clone(), &path, Some(wrong_token)).body(body()))
            .await
            .assert_error(403, "forbidden", &[]);
        send(request(&server, method.clone(), &path, None).body(body()))
            .await
            .assert_error(401, "unauthorized", &[]);
        send(
            request(
                &server,
                method.clone(),
                &path,
                Some("muster_runner_unknown"),
            )
            .body(body()),
        )
        .await
        .assert_error(401, "unauthorized", &[]);
    }
    assert_eq!(no_files(&server), before, "refused uploads stored nothing");
}

#[tokio::test]
async fn a_job_submitted_with_inputs_shows_them_and_its_runner_gets_them() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    let first = client
        .upload_artifact_bytes(pattern(5_000, 6))
        .await
        .expect("upload");
    let second = client
        .upload_artifact_bytes(pattern(6_000, 7))
        .await
        .expect("upload");
    let job = submit(&client, job_with_inputs("render", &[&first.id, &second.id])).await;
    assert_eq!(job.inputs, vec![first.id.clone(), second.id.clone()]);
    assert!(job.outputs.is_empty());
    let shown = admin(
        &server,
        Method::GET,
        &format!("/api/v1/jobs/{}", job.id),
        None,
    )
    .await;
    assert_eq!(shown.json()["inputs"], json!([first.id, second.id]));
    assert_eq!(shown.json()["outputs"], json!({}));

    let claimed = claim_one(&runner, "render").await;
    assert_eq!(claimed.inputs, vec![first.id.clone(), second.id.clone()]);
    let input = runner
        .download_artifact_bytes(&claimed.inputs[1])
        .await
        .expect("the runner downloads its input");
    assert_eq!(input, pattern(6_000, 7));

    // Jobs without inputs show an empty list.
    let plain = submit(&client, crate::support::job("plain")).await;
    assert!(plain.inputs.is_empty());
}

#[tokio::test]
async fn a_submit_naming_an_unknown_or_malformed_input_creates_no_job() {
    let server = start().await;
    let client = server.client();
    let stored = client
        .upload_artifact_bytes(&b"present"[..])
        .await
        .expect("upload");
    let unknown = admin(
        &server,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"kind": "render", "inputs": [stored.id, NO_SUCH_ARTIFACT]})),
    )
    .await;
    unknown.assert_error(422, "unknown_artifact", &["inputs[1]", NO_SUCH_ARTIFACT]);
    let malformed = admin(
        &server,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"kind": "render", "inputs": ["sha256:nothex"]})),
    )
    .await;
    malformed.assert_error(400, "invalid_input", &["inputs[0]", "sha256:nothex"]);
    let not_a_list = admin(
        &server,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"kind": "render", "inputs": stored.id})),
    )
    .await;
    not_a_list.assert_error(400, "invalid_input", &["inputs"]);
    let batch = admin(
        &server,
        Method::POST,
        "/api/v1/jobs/batch",
        Some(json!({"jobs": [
            {"kind": "render", "inputs": [stored.id]},
            {"kind": "render", "inputs": [NO_SUCH_ARTIFACT]},
        ]})),
    )
    .await;
    batch.assert_error(422, "unknown_artifact", &["jobs[1].inputs[0]"]);
    assert_eq!(job_count(&client).await, 0, "no job was created");

    let accepted = admin(
        &server,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"kind": "render", "inputs": null})),
    )
    .await;
    assert_eq!(
        accepted.status, 201,
        "null inputs mean none: {}",
        accepted.body
    );
}

#[tokio::test]
async fn outputs_recorded_by_the_runner_show_on_the_job() {
    let server = start().await;
    let client = server.client();
    let (created, runner) = server.runner("r").await.expect("runner");
    let (job, claimed) = submit_and_claim(&client, &runner, "train").await;
    let model = runner
        .upload_artifact_bytes(pattern(20_000, 8))
        .await
        .expect("upload the model");
    let log = runner
        .upload_artifact_bytes(&b"training log"[..])
        .await
        .expect("upload the log");
    let epoch = claimed.lease.epoch.to_string();

    // One output: name and artifact_id.
    let reply = runner_raw(
        &server,
        &created.token,
        Method::POST,
        &format!("/api/v1/runner/jobs/{}/outputs", job.id),
        Some(&epoch),
        &json!({"name": "model", "artifact_id": model.id}).to_string(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!({"outputs": {"model": model.id}, "cancel": false})
    );
    let shown = client.get_job(job.id).await.expect("show");
    assert_eq!(
        shown.state,
        JobState::Running,
        "recording outputs is activity"
    );
    assert_eq!(
        shown.outputs,
        BTreeMap::from([("model".to_string(), model.id.clone())])
    );

    // Several at once: {"outputs": {...}}; a name recorded again names the new artifact.
    let recorded = runner
        .record_outputs(
            job.id,
            Some(claimed.lease.epoch),
            BTreeMap::from([
                ("log".to_string(), log.id.clone()),
                ("model".to_string(), log.id.clone()),
            ]),
        )
        .await
        .expect("record outputs");
    assert!(!recorded.cancel);
    assert_eq!(recorded.outputs.len(), 2);
    assert_eq!(recorded.outputs["model"], log.id);

    // Completing with outputs records them in the same commit.
    let done = runner
        .complete_job_with_outputs(
            job.id,
            Some(claimed.lease.epoch),
            json!({"loss": 0.1}),
            BTreeMap::from([("model".to_string(), model.id.clone())]),
        )
        .await
        .expect("complete with outputs");
    assert_eq!(done.state, JobState::Completed);
    let expected = BTreeMap::from([
        ("log".to_string(), log.id.clone()),
        ("model".to_string(), model.id.clone()),
    ]);
    assert_eq!(done.outputs, expected);
    let shown = admin(
        &server,
        Method::GET,
        &format!("/api/v1/jobs/{}", job.id),
        None,
    )
    .await;
    assert_eq!(
        shown.json()["outputs"],
        json!({"log": log.id, "model": model.id})
    );
    // And a user downloads what the runner made.
    assert_eq!(
        client
            .download_artifact_bytes(shown.json()["outputs"]["model"].as_str().unwrap_or(""))
            .await
            .expect("download an output"),
        pattern(20_000, 8)
    );
}

#[tokio::test]
async fn recording_outputs_is_fenced_and_checked() {
    let server = start().await;
    let client = server.client();
    let (created, runner) = server.runner("r").await.expect("runner");
    let (other_created, _) = server.runner("other").await.expect("other runner");
    let (job, claimed) = submit_and_claim(&client, &runner, "train").await;
    let artifact = runner
        .upload_artifact_bytes(&b"result"[..])
        .await
        .expect("upload");
    let path = format!("/api/v1/runner/jobs/{}/outputs", job.id);
    let body = json!({"name": "out", "artifact_id": artifact.id}).to_string();
    let before = client.get_job(job.id).await.expect("show");

    let stale = (claimed.lease.epoch + 1).to_string();
    runner_raw(
        &server,
        &created.token,
        Method::POST,
        &path,
        Some(&stale),
        &body,
    )
    .await
    .assert_error(409, "lease_lost", &[]);
    runner_raw(
        &server,
        &other_created.token,
        Method::POST,
        &path,
        None,
        &body,
    )
    .await
    .assert_error(409, "lease_lost", &[]);
    let unknown = json!({"name": "out", "artifact_id": NO_SUCH_ARTIFACT}).to_string();
    runner_raw(&server, &created.token, Method::POST, &path, None, &unknown)
        .await
        .assert_error(422, "unknown_artifact", &["outputs.out", NO_SUCH_ARTIFACT]);
    for bad in [
        json!({}),
        json!({"name": "out"}),
        json!({"artifact_id": artifact.id}),
        json!({"outputs": {}}),
        json!({"name": "out", "artifact_id": artifact.id, "outputs": {"b": artifact.id}}),
        json!({"name": "out", "artifact_id": "sha256:zz"}),
        json!({"name": "", "artifact_id": artifact.id}),
        json!({"outputs": {"out": 7}}),
    ] {
        runner_raw(
            &server,
            &created.token,
            Method::POST,
            &path,
            None,
            &bad.to_string(),
        )
        .await
        .assert_error(400, "invalid_input", &[]);
    }
    let unknown_job = format!("/api/v1/runner/jobs/{}/outputs", uuid::Uuid::now_v7());
    runner_raw(
        &server,
        &created.token,
        Method::POST,
        &unknown_job,
        None,
        &body,
    )
    .await
    .assert_error(404, "not_found", &[]);
    assert_eq!(
        client.get_job(job.id).await.expect("show"),
        before,
        "refused recordings changed nothing (not even the state)"
    );

    // A completion naming an unknown output is refused whole: the job is not completed.
    let refused = runner
        .complete_job_with_outputs(
            job.id,
            Some(claimed.lease.epoch),
            json!("done"),
            BTreeMap::from([("out".to_string(), NO_SUCH_ARTIFACT.to_string())]),
        )
        .await;
    api_error(refused, 422, "unknown_artifact");
    assert_eq!(client.get_job(job.id).await.expect("show"), before);

    // The answer carries the cancel flag like every job-scoped answer.
    client.cancel_job(job.id).await.expect("cancel");
    let recorded = runner
        .record_output(job.id, Some(claimed.lease.epoch), "out", &artifact.id)
        .await
        .expect("record while cancelling");
    assert!(
        recorded.cancel,
        "a job being cancelled tells its runner to stop"
    );
}

#[tokio::test]
async fn a_new_attempt_starts_without_the_outputs_of_the_last() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    let artifact = client
        .upload_artifact_bytes(&b"half done"[..])
        .await
        .expect("upload");
    let job = submit(
        &client,
        SubmitJob {
            max_attempts: Some(2),
            backoff_base_s: Some(0),
            ..job_with_inputs("flaky", &[&artifact.id])
        },
    )
    .await;
    let first = claim_one(&runner, "flaky").await;
    runner
        .record_output(job.id, Some(first.lease.epoch), "partial", &artifact.id)
        .await
        .expect("record");
    let failed = runner
        .fail_job(job.id, Some(first.lease.epoch), &Default::default())
        .await
        .expect("fail");
    assert_eq!(failed.state, JobState::Pending);
    assert_eq!(failed.outputs.len(), 1, "visible until the next attempt");
    let second = runner
        .claim_job(&ClaimJobs {
            kinds: vec!["flaky".into()],
            wait_ms: Some(5_000),
            ..Default::default()
        })
        .await
        .expect("claim again");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].inputs, vec![artifact.id.clone()]);
    let shown = client.get_job(job.id).await.expect("show");
    assert!(shown.outputs.is_empty(), "{:?}", shown.outputs);
    assert_eq!(shown.inputs, vec![artifact.id]);
}

/// The peak resident memory of this process (the server runs inside it), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .expect("VmHWM in /proc/self/status")
}

/// Start measuring the peak anew (Linux: writing 5 to clear_refs resets VmHWM).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
}

#[tokio::test]
async fn a_64_mib_artifact_streams_through_without_being_held_in_memory() {
    const SIZE: usize = 64 * 1024 * 1024;
    const CHUNK: usize = 256 * 1024;
    let server = start().await;
    let client = server.client();
    // The chunks are made as they are sent, so the test holds one at a time too.
    let chunk = |index: usize| Bytes::from(pattern(CHUNK, index as u64));
    let mut hasher = Sha256::new();
    for index in 0..SIZE / CHUNK {
        hasher.update(chunk(index));
    }
    let expected = format!("sha256:{}", hex::encode(hasher.finalize()));

    reset_peak_rss();
    let before = peak_rss();
    let stored = client
        .upload_artifact(
            futures::stream::iter(0..SIZE / CHUNK)
                .map(move |index| Ok::<_, std::io::Error>(chunk(index))),
        )
        .await
        .expect("upload 64 MiB");
    let mut download = client
        .download_artifact(&stored.id)
        .await
        .expect("start the download");
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    while let Some(part) = download.stream.next().await {
        let part = part.expect("a downloaded chunk");
        received += part.len() as u64;
        hasher.update(&part);
    }
    let growth = peak_rss().saturating_sub(before);

    assert_eq!(stored.id, expected);
    assert_eq!(stored.size, SIZE as u64);
    assert_eq!(download.size, Some(SIZE as u64));
    assert_eq!(received, SIZE as u64);
    assert_eq!(
        format!("sha256:{}", hex::encode(hasher.finalize())),
        expected
    );
    // Buffering the upload or the download whole would add at least 64 MiB; streaming adds a
    // few buffers. Half the size leaves room for other tests running in this process.
    assert!(
        growth < (SIZE / 2) as u64,
        "peak memory grew by {} MiB while 64 MiB went through",
        growth / (1024 * 1024)
    );
    // And the structural guarantee behind it: the artifact routes never collect a body.
    let source = include_str!("../../src/routes/artifacts.rs");
    for buffering in ["read_body", "to_bytes", "RawBody", "JsonBody"] {
        assert!(
            !source.contains(buffering),
            "the artifact routes must stream, but use {buffering}"
        );
    }
}

#[tokio::test]
async fn the_openapi_document_lists_the_artifact_routes() {
    let server = start().await;
    let reply = send(request(&server, Method::GET, "/api/v1/openapi.json", None)).await;
    assert_eq!(reply.status, 200);
    let document = reply.json();
    let paths = &document["paths"];
    for (path, method) in [
        ("/api/v1/artifacts", "post"),
        ("/api/v1/artifacts/{id}", "get"),
        ("/api/v1/runner/artifacts", "post"),
        ("/api/v1/runner/artifacts/{id}", "get"),
        ("/api/v1/runner/jobs/{id}/outputs", "post"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is in the OpenAPI document"
        );
    }
    assert!(
        paths["/api/v1/artifacts"]["post"]["requestBody"]["content"]["application/octet-stream"]
            .is_object(),
        "uploads are documented as raw bytes"
    );
    for schema in ["Artifact", "RecordOutputs", "OutputsRecorded"] {
        assert!(
            document["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
    let job = &document["components"]["schemas"]["Job"]["properties"];
    assert!(job["inputs"].is_object() && job["outputs"].is_object());
}
