//! Artifact upload quotas over HTTP: a runner that uploads without end (a runaway or a
//! compromised one) is refused with 507 once past its bytes or count, and so is everyone once
//! past the totals or when the disk is down to its reserve; a refused upload stores nothing,
//! re-uploads of stored bytes cost nothing, usage goes down when the collection deletes
//! artifacts and survives a restart, and `/metrics` shows it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use muster_core::RunnerId;
use muster_server::RawServerConfig;
use muster_store::{ArtifactUsage, ArtifactUsageReport};
use muster_test_support::TestServer;
use reqwest::Method;
use sha2::{Digest, Sha256};

use crate::support::{Reply, job, metric, request, send, start_manual_with, submit};

const KIB: usize = 1024;

/// Distinct bytes per `seed`, so every upload is new content unless meant to be the same.
fn content(length: usize, seed: u8) -> Vec<u8> {
    let mut bytes = Sha256::digest([seed]).to_vec();
    while bytes.len() < length {
        let next = Sha256::digest(&bytes[bytes.len() - 32..]);
        bytes.extend_from_slice(&next);
    }
    bytes.truncate(length);
    bytes
}

fn sha256_id(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// How an upload sends its body.
#[derive(Debug, Clone, Copy)]
enum Sent {
    /// With a `Content-Length`: a quota it would pass refuses it before it is read.
    WithLength,
    /// Chunked: refused while streaming, once past the quota.
    Chunked,
}

fn body(bytes: Vec<u8>, sent: Sent) -> reqwest::Body {
    match sent {
        Sent::WithLength => reqwest::Body::from(bytes),
        Sent::Chunked => {
            let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
                .chunks(8 * KIB)
                .map(|part| Ok(Bytes::copy_from_slice(part)))
                .collect();
            reqwest::Body::wrap_stream(futures::stream::iter(chunks))
        }
    }
}

async fn runner_upload(server: &TestServer, token: &str, bytes: Vec<u8>, sent: Sent) -> Reply {
    send(
        request(
            server,
            Method::POST,
            "/api/v1/runner/artifacts",
            Some(token),
        )
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(body(bytes, sent)),
    )
    .await
}

async fn admin_upload(server: &TestServer, bytes: Vec<u8>) -> Reply {
    send(
        request(
            server,
            Method::POST,
            "/api/v1/artifacts",
            Some(&server.admin_token),
        )
        .body(bytes),
    )
    .await
}

#[track_caller]
fn assert_stored(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{}", reply.body);
}

async fn usage(server: &TestServer, runner: Option<RunnerId>) -> ArtifactUsageReport {
    server
        .coordinator
        .artifact_usage(&muster_core::Principal::BootstrapAdmin, runner)
        .await
        .expect("read artifact usage")
}

fn runner_id(created: &muster_client::api::CreatedRunner) -> RunnerId {
    RunnerId(created.runner.id)
}

async fn start(adjust: impl FnOnce(&mut RawServerConfig)) -> TestServer {
    start_manual_with(adjust).await.0
}

#[tokio::test]
async fn a_runner_past_its_byte_quota_is_refused_with_507_and_nothing_is_stored() {
    let server = start(|config| {
        config.runner_artifact_quota_bytes = Some("100KiB".into());
        config.max_artifact_bytes = Some(200 * 1024);
    })
    .await;
    let (created, _) = server.runner("runaway").await.expect("runner");
    let token = created.token.clone();
    let runner = runner_id(&created);

    let first = content(60 * KIB, 1);
    assert_stored(
        &runner_upload(&server, &token, first.clone(), Sent::WithLength).await,
        201,
    );
    for sent in [Sent::WithLength, Sent::Chunked] {
        let refused = runner_upload(&server, &token, content(60 * KIB, 2), sent).await;
        refused.assert_error(
            507,
            "artifact_quota_exceeded",
            &[
                "--runner-artifact-quota-bytes",
                &runner.to_string(),
                "61440 bytes",
                "102400 bytes",
                "nothing was stored",
            ],
        );
    }
    // One larger than --max-artifact-bytes keeps its own answer.
    runner_upload(&server, &token, content(250 * KIB, 3), Sent::WithLength)
        .await
        .assert_error(413, "payload_too_large", &["--max-artifact-bytes"]);
    // Up to the quota exactly is fine; past it, even a byte is refused.
    assert_stored(
        &runner_upload(&server, &token, content(40 * KIB, 4), Sent::Chunked).await,
        201,
    );
    runner_upload(&server, &token, vec![7], Sent::WithLength)
        .await
        .assert_error(507, "artifact_quota_exceeded", &["102400 bytes"]);

    let files = server.blob_files().expect("list artifact files");
    assert_eq!(
        files.len(),
        2,
        "only the two accepted uploads are stored, no upload file is left: {files:?}"
    );
    let charged = usage(&server, Some(runner)).await;
    assert_eq!(
        charged.runner,
        ArtifactUsage {
            bytes: 100 * 1024,
            count: 2
        }
    );
    assert_eq!(charged.all, charged.runner);
    assert_eq!(
        server
            .client()
            .download_artifact_bytes(&sha256_id(&content(60 * KIB, 2)))
            .await
            .expect_err("a refused upload is not stored")
            .status(),
        Some(404)
    );
}

#[tokio::test]
async fn a_runner_past_its_count_quota_is_refused_with_507_and_nothing_is_stored() {
    let server = start(|config| {
        config.runner_artifact_quota_count = Some("2".into());
    })
    .await;
    let (created, _) = server.runner("many-small-files").await.expect("runner");
    for seed in [1, 2] {
        assert_stored(
            &runner_upload(&server, &created.token, content(100, seed), Sent::Chunked).await,
            201,
        );
    }
    for sent in [Sent::WithLength, Sent::Chunked] {
        runner_upload(&server, &created.token, content(100, 3), sent)
            .await
            .assert_error(
                507,
                "artifact_quota_exceeded",
                &["--runner-artifact-quota-count", "2 artifacts"],
            );
    }
    assert_eq!(server.blob_files().expect("list files").len(), 2);
    assert_eq!(
        usage(&server, Some(runner_id(&created))).await.runner,
        ArtifactUsage {
            bytes: 200,
            count: 2
        }
    );
}

#[tokio::test]
async fn re_uploading_bytes_already_stored_is_not_charged() {
    let server = start(|config| {
        config.runner_artifact_quota_bytes = Some("100KiB".into());
    })
    .await;
    let (first, _) = server.runner("first").await.expect("runner");
    let (second, _) = server.runner("second").await.expect("runner");
    let shared = content(80 * KIB, 1);
    assert_stored(&admin_upload(&server, shared.clone()).await, 201);
    // The bytes are stored already: nothing new is written, nothing is charged.
    assert_stored(
        &runner_upload(&server, &first.token, shared.clone(), Sent::WithLength).await,
        200,
    );
    assert_eq!(
        usage(&server, Some(runner_id(&first))).await.runner,
        ArtifactUsage::default()
    );
    // So the runner still has room for 80 KiB of its own.
    let own = content(80 * KIB, 2);
    assert_stored(
        &runner_upload(&server, &first.token, own.clone(), Sent::Chunked).await,
        201,
    );
    // Another runner sending the first one's bytes again is not charged either.
    assert_stored(
        &runner_upload(&server, &second.token, own, Sent::Chunked).await,
        200,
    );
    assert_stored(
        &runner_upload(&server, &second.token, content(80 * KIB, 3), Sent::Chunked).await,
        201,
    );
    let of_first = usage(&server, Some(runner_id(&first))).await;
    assert_eq!(
        of_first.runner,
        ArtifactUsage {
            bytes: 80 * 1024,
            count: 1
        }
    );
    assert_eq!(
        of_first.all,
        ArtifactUsage {
            bytes: 3 * 80 * 1024,
            count: 3
        },
        "three artifacts stored, each counted once"
    );
}

#[tokio::test]
async fn two_runners_are_charged_separately_and_users_only_to_the_totals() {
    let server = start(|config| {
        config.runner_artifact_quota_bytes = Some("100KiB".into());
    })
    .await;
    let (first, _) = server.runner("first").await.expect("runner");
    let (second, _) = server.runner("second").await.expect("runner");
    for (created, seed) in [(&first, 1), (&second, 2)] {
        assert_stored(
            &runner_upload(
                &server,
                &created.token,
                content(80 * KIB, seed),
                Sent::Chunked,
            )
            .await,
            201,
        );
    }
    for (created, seed) in [(&first, 3), (&second, 4)] {
        runner_upload(
            &server,
            &created.token,
            content(30 * KIB, seed),
            Sent::Chunked,
        )
        .await
        .assert_error(
            507,
            "artifact_quota_exceeded",
            &[&created.runner.id.to_string(), "81920 bytes"],
        );
    }
    // A user's upload is charged to no runner.
    assert_stored(&admin_upload(&server, content(150 * KIB, 5)).await, 201);
    assert_eq!(
        usage(&server, Some(runner_id(&first))).await.runner.bytes,
        80 * 1024
    );
    let of_second = usage(&server, Some(runner_id(&second))).await;
    assert_eq!(of_second.runner.bytes, 80 * 1024);
    assert_eq!(of_second.all.bytes, (80 + 80 + 150) * 1024);
}

#[tokio::test]
async fn the_total_byte_quota_counts_every_uploader() {
    let server = start(|config| {
        config.artifact_quota_bytes = Some("100KiB".into());
    })
    .await;
    let (first, _) = server.runner("first").await.expect("runner");
    let (second, _) = server.runner("second").await.expect("runner");
    assert_stored(
        &runner_upload(
            &server,
            &first.token,
            content(40 * KIB, 1),
            Sent::WithLength,
        )
        .await,
        201,
    );
    assert_stored(
        &runner_upload(&server, &second.token, content(40 * KIB, 2), Sent::Chunked).await,
        201,
    );
    admin_upload(&server, content(30 * KIB, 3))
        .await
        .assert_error(
            507,
            "artifact_quota_exceeded",
            &[
                "all artifacts",
                "--artifact-quota-bytes",
                "81920 bytes",
                "102400 bytes",
            ],
        );
    runner_upload(&server, &first.token, content(30 * KIB, 4), Sent::Chunked)
        .await
        .assert_error(507, "artifact_quota_exceeded", &["--artifact-quota-bytes"]);
    assert_stored(&admin_upload(&server, content(20 * KIB, 5)).await, 201);
    assert_eq!(server.blob_files().expect("list files").len(), 3);
    assert_eq!(
        usage(&server, None).await.all,
        ArtifactUsage {
            bytes: 100 * 1024,
            count: 3
        }
    );
}

#[tokio::test]
async fn the_total_count_quota_counts_every_uploader() {
    let server = start(|config| {
        config.artifact_quota_count = Some("3".into());
    })
    .await;
    let (first, _) = server.runner("first").await.expect("runner");
    let (second, _) = server.runner("second").await.expect("runner");
    assert_stored(&admin_upload(&server, content(10, 1)).await, 201);
    assert_stored(
        &runner_upload(&server, &first.token, content(10, 2), Sent::Chunked).await,
        201,
    );
    assert_stored(
        &runner_upload(&server, &second.token, content(10, 3), Sent::Chunked).await,
        201,
    );
    admin_upload(&server, content(10, 4)).await.assert_error(
        507,
        "artifact_quota_exceeded",
        &["--artifact-quota-count", "3 artifacts"],
    );
    runner_upload(&server, &second.token, content(10, 5), Sent::WithLength)
        .await
        .assert_error(507, "artifact_quota_exceeded", &["--artifact-quota-count"]);
    assert_eq!(server.blob_files().expect("list files").len(), 3);
}

#[tokio::test]
async fn usage_goes_down_when_the_collection_deletes_a_runners_artifacts() {
    let server = start(|config| {
        config.runner_artifact_quota_count = Some("2".into());
    })
    .await;
    let client = server.client();
    let (created, _) = server.runner("r").await.expect("runner");
    let runner = runner_id(&created);
    let named = content(1_000, 1);
    let unnamed = content(2_000, 2);
    for bytes in [&named, &unnamed] {
        assert_stored(
            &runner_upload(&server, &created.token, bytes.clone(), Sent::Chunked).await,
            201,
        );
    }
    runner_upload(&server, &created.token, content(10, 3), Sent::Chunked)
        .await
        .assert_error(507, "artifact_quota_exceeded", &[]);
    // A job names one of them: that one stays, and stays charged.
    submit(
        &client,
        muster_client::api::SubmitJob {
            inputs: Some(vec![sha256_id(&named)]),
            ..job("nobody-runs-this")
        },
    )
    .await;
    assert_eq!(
        server.collect_artifacts(Duration::ZERO).await,
        (1, 2_000),
        "the unnamed artifact is deleted"
    );
    assert_eq!(
        usage(&server, Some(runner)).await.runner,
        ArtifactUsage {
            bytes: 1_000,
            count: 1
        }
    );
    assert_eq!(
        metric(&server, "muster_artifact_bytes_stored").await,
        Some(1_000.0)
    );
    assert_stored(
        &runner_upload(&server, &created.token, content(10, 3), Sent::Chunked).await,
        201,
    );
}

#[tokio::test]
async fn usage_survives_a_restart_of_the_coordinator() {
    let quota = |config: &mut RawServerConfig| {
        config.runner_artifact_quota_count = Some("2".into());
    };
    let server = start(quota).await;
    let (created, _) = server.runner("r").await.expect("runner");
    for seed in [1, 2] {
        assert_stored(
            &runner_upload(&server, &created.token, content(500, seed), Sent::Chunked).await,
            201,
        );
    }
    let clock = Arc::clone(&server.clock);
    let server = server
        .restart_with(clock, quota)
        .await
        .expect("restart the coordinator on the same data directory");
    runner_upload(&server, &created.token, content(500, 3), Sent::Chunked)
        .await
        .assert_error(507, "artifact_quota_exceeded", &["2 artifacts"]);
    assert_eq!(
        usage(&server, Some(runner_id(&created))).await.runner,
        ArtifactUsage {
            bytes: 1_000,
            count: 2
        }
    );
}

/// A body that arrives over about a second, so uploads sent together overlap.
fn trickled(bytes: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Bytes> = bytes.chunks(16 * KIB).map(Bytes::copy_from_slice).collect();
    let stream = futures::stream::unfold(chunks.into_iter(), |mut chunks| async move {
        let chunk = chunks.next()?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some((Ok::<_, std::io::Error>(chunk), chunks))
    });
    reqwest::Body::wrap_stream(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_of_one_runner_sent_at_once_cannot_together_pass_its_quota() {
    let server = start(|config| {
        config.runner_artifact_quota_bytes = Some("1MiB".into());
    })
    .await;
    let (created, _) = server.runner("parallel").await.expect("runner");
    let uploads = (0..8u8).map(|seed| {
        let request = request(
            &server,
            Method::POST,
            "/api/v1/runner/artifacts",
            Some(&created.token),
        )
        .body(trickled(content(300 * KIB, seed)));
        send(request)
    });
    let replies = futures::future::join_all(uploads).await;
    let stored = replies.iter().filter(|reply| reply.status == 201).count();
    for reply in replies.iter().filter(|reply| reply.status != 201) {
        reply.assert_error(507, "artifact_quota_exceeded", &["1048576 bytes"]);
    }
    assert!(
        (1..=3).contains(&stored),
        "at most three uploads of 300 KiB fit in 1 MiB, {stored} were stored: {replies:?}"
    );
    let charged = usage(&server, Some(runner_id(&created))).await.runner;
    assert_eq!(charged.count, stored as u64);
    assert!(charged.bytes <= 1024 * 1024, "{charged:?}");
    assert_eq!(server.blob_files().expect("list files").len(), stored);
}

#[tokio::test]
async fn uploads_are_refused_when_they_would_eat_into_the_disk_reserve() {
    // All of the file system is reserved, so there is never room: what a nearly full disk does.
    let server = start(|config| {
        config.disk_reserve = Some("100%".into());
    })
    .await;
    let (created, _) = server.runner("r").await.expect("runner");
    for sent in [Sent::WithLength, Sent::Chunked] {
        runner_upload(&server, &created.token, content(10 * KIB, 1), sent)
            .await
            .assert_error(
                507,
                "insufficient_storage",
                &["--disk-reserve", "100%", "nothing was stored"],
            );
    }
    admin_upload(&server, content(10, 2)).await.assert_error(
        507,
        "insufficient_storage",
        &["--disk-reserve"],
    );
    assert!(server.blob_files().expect("list files").is_empty());
    assert_eq!(usage(&server, None).await.all, ArtifactUsage::default());
    assert_eq!(
        metric(
            &server,
            "muster_artifact_uploads_refused_total{reason=\"disk_reserve\"}"
        )
        .await,
        Some(3.0)
    );

    // An absolute reserve larger than any test machine's disk does the same.
    let server = start(|config| {
        config.disk_reserve = Some("1000000TiB".into());
    })
    .await;
    admin_upload(&server, content(10, 2)).await.assert_error(
        507,
        "insufficient_storage",
        &["--disk-reserve"],
    );
    // And without a reserve the same upload goes through.
    let server = start(|config| {
        config.disk_reserve = Some("0".into());
    })
    .await;
    assert_stored(&admin_upload(&server, content(10, 2)).await, 201);
}

#[tokio::test]
async fn metrics_show_artifact_usage_the_largest_uploaders_and_refusals() {
    let server = start(|config| {
        config.runner_artifact_quota_count = Some("2".into());
        config.runner_artifact_quota_bytes = Some("10KiB".into());
    })
    .await;
    let (first, _) = server.runner("first").await.expect("runner");
    let (second, _) = server.runner("second").await.expect("runner");
    for seed in [1, 2] {
        assert_stored(
            &runner_upload(&server, &first.token, content(1_000, seed), Sent::Chunked).await,
            201,
        );
    }
    assert_stored(
        &runner_upload(&server, &second.token, content(300, 3), Sent::Chunked).await,
        201,
    );
    assert_stored(&admin_upload(&server, content(50, 4)).await, 201);
    runner_upload(&server, &first.token, content(10, 5), Sent::Chunked)
        .await
        .assert_error(507, "artifact_quota_exceeded", &[]);
    runner_upload(
        &server,
        &second.token,
        content(20 * KIB, 6),
        Sent::WithLength,
    )
    .await
    .assert_error(507, "artifact_quota_exceeded", &[]);

    let text = server.client().metrics_text().await.expect("scrape");
    let value = |series: &str| crate::support::sample(&text, series);
    assert_eq!(
        value("muster_artifact_bytes_stored"),
        Some(2_350.0),
        "{text}"
    );
    assert_eq!(value("muster_artifacts_stored"), Some(4.0));
    let first_id = first.runner.id;
    let second_id = second.runner.id;
    assert_eq!(
        value(&format!(
            "muster_runner_artifact_bytes{{runner_id=\"{first_id}\"}}"
        )),
        Some(2_000.0),
        "{text}"
    );
    assert_eq!(
        value(&format!(
            "muster_runner_artifacts{{runner_id=\"{first_id}\"}}"
        )),
        Some(2.0)
    );
    assert_eq!(
        value(&format!(
            "muster_runner_artifact_bytes{{runner_id=\"{second_id}\"}}"
        )),
        Some(300.0)
    );
    assert_eq!(
        value("muster_artifact_uploads_refused_total{reason=\"runner_count\"}"),
        Some(1.0)
    );
    assert_eq!(
        value("muster_artifact_uploads_refused_total{reason=\"runner_bytes\"}"),
        Some(1.0)
    );

    assert_eq!(server.collect_artifacts(Duration::ZERO).await.0, 4);
    let text = server.client().metrics_text().await.expect("scrape");
    let value = |series: &str| crate::support::sample(&text, series);
    assert_eq!(value("muster_artifact_bytes_stored"), Some(0.0));
    assert_eq!(value("muster_artifacts_stored"), Some(0.0));
    assert_eq!(
        value(&format!(
            "muster_runner_artifact_bytes{{runner_id=\"{first_id}\"}}"
        )),
        None,
        "a runner with nothing charged is not shown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinators_sharing_postgresql_charge_a_runner_once_for_all_of_them() {
    let (first, second) = crate::postgres::two_coordinators_with(|raw| {
        raw.runner_artifact_quota_count = Some("2".into());
    })
    .await;
    let servers = [first, second];
    let (created, _) = servers[0].runner("shared").await.expect("runner");
    assert_stored(
        &runner_upload(&servers[0], &created.token, content(700, 1), Sent::Chunked).await,
        201,
    );
    assert_stored(
        &runner_upload(
            &servers[1],
            &created.token,
            content(700, 2),
            Sent::WithLength,
        )
        .await,
        201,
    );
    for server in &servers {
        runner_upload(server, &created.token, content(700, 3), Sent::Chunked)
            .await
            .assert_error(507, "artifact_quota_exceeded", &["2 artifacts"]);
    }
    // No local directory holds PostgreSQL's artifacts, so no disk reserve applies to them.
    assert!(servers[0].blob_files().expect("list files").is_empty());
    assert_eq!(
        usage(&servers[1], Some(runner_id(&created))).await.runner,
        ArtifactUsage {
            bytes: 1_400,
            count: 2
        }
    );
    assert_eq!(
        servers[0].collect_artifacts(Duration::ZERO).await.0,
        2,
        "collected through one coordinator"
    );
    assert_stored(
        &runner_upload(&servers[1], &created.token, content(700, 3), Sent::Chunked).await,
        201,
    );
}

#[tokio::test]
async fn the_openapi_document_declares_the_507_answers_of_the_upload_routes() {
    let server = start(|_| {}).await;
    let reply = send(request(&server, Method::GET, "/api/v1/openapi.json", None)).await;
    assert_eq!(reply.status, 200);
    let document = reply.json();
    for path in ["/api/v1/artifacts", "/api/v1/runner/artifacts"] {
        let answer = &document["paths"][path]["post"]["responses"]["507"];
        let description = answer["description"].as_str().unwrap_or_default();
        assert!(
            description.contains("artifact_quota_exceeded")
                && description.contains("insufficient_storage"),
            "POST {path} declares its 507: {answer}"
        );
    }
}
