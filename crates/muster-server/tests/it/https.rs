//! HTTPS: a coordinator given `--tls-cert`/`--tls-key` serves the whole API over TLS, clients
//! trust it through `--ca-cert`, and a client that does not trust its authority is refused.

use std::sync::Arc;
use std::time::Duration;

use muster_client::{ClientTls, MusterClient, RunnerClient};
use muster_core::SystemClock;
use muster_server::tls::{ServerTls, TlsFiles, TlsSetupError};
use muster_test_support::{TestCertificateAuthority, TestServer};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::support::{claim_one, job, submit};

struct HttpsServer {
    server: TestServer,
    authority: TestCertificateAuthority,
    _files: tempfile::TempDir,
}

async fn start_https() -> HttpsServer {
    let authority = TestCertificateAuthority::new("muster test authority").expect("authority");
    let files = tempfile::tempdir().expect("temp dir");
    let written = authority
        .issue_server_certificate(&["localhost", "127.0.0.1"])
        .expect("server certificate")
        .write_to(files.path(), "coordinator")
        .expect("write the certificate");
    let server = TestServer::start_with(Arc::new(SystemClock), |raw| {
        raw.tls_certificate = Some(written.certificate.clone());
        raw.tls_private_key = Some(written.private_key.clone());
    })
    .await
    .expect("start an HTTPS test server");
    HttpsServer {
        server,
        authority,
        _files: files,
    }
}

fn trusting(authority: &TestCertificateAuthority) -> ClientTls {
    ClientTls::from_authority_pem(authority.certificate_pem().as_bytes()).expect("authority PEM")
}

#[tokio::test]
async fn jobs_are_submitted_claimed_and_completed_over_https() {
    let https = start_https().await;
    let base_url = &https.server.base_url;
    assert!(base_url.starts_with("https://"), "{base_url}");
    let tls = trusting(&https.authority);
    let client = MusterClient::with_tls(base_url, &https.server.admin_token, &tls).expect("client");
    let created = client
        .create_runner(&muster_client::api::CreateRunner {
            name: "tls-runner".into(),
            ..Default::default()
        })
        .await
        .expect("register a runner over HTTPS");
    let runner = RunnerClient::with_tls(base_url, &created.token, &tls).expect("runner client");
    let submitted = submit(&client, job("exec")).await;
    let claimed = claim_one(&runner, "exec").await;
    assert_eq!(claimed.id, submitted.id);
    runner
        .complete_job(
            claimed.id,
            Some(claimed.lease.epoch),
            json!({"over": "tls"}),
        )
        .await
        .expect("complete over HTTPS");
    let finished = client.get_job(submitted.id).await.expect("read back");
    assert_eq!(finished.result, Some(json!({"over": "tls"})));
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_authority_is_refused_before_sending_anything() {
    let https = start_https().await;
    let other = TestCertificateAuthority::new("some other authority").expect("authority");
    let client = MusterClient::with_tls(
        &https.server.base_url,
        &https.server.admin_token,
        &trusting(&other),
    )
    .expect("client");
    let error = client
        .list_jobs(&Default::default())
        .await
        .expect_err("an untrusted certificate must be refused");
    assert!(error.is_transient() || error.status().is_none(), "{error}");
    let text = error.to_string().to_lowercase();
    assert!(
        text.contains("not from an authority this client trusts") && text.contains("--ca-cert"),
        "the error says why and what to do: {error}"
    );
}

#[tokio::test]
async fn plain_http_to_the_https_port_gets_no_api_answer() {
    let https = start_https().await;
    let plain_url = https.server.base_url.replacen("https://", "http://", 1);
    let client = MusterClient::new(&plain_url, &https.server.admin_token).expect("client");
    client
        .list_jobs(&Default::default())
        .await
        .expect_err("plain HTTP must not reach the API on an HTTPS port");
    // And the other way round: https:// to a plain coordinator says to use http://.
    let plain = crate::support::start().await;
    let error = MusterClient::new(
        &plain.base_url.replacen("http://", "https://", 1),
        &plain.admin_token,
    )
    .expect("client")
    .list_jobs(&Default::default())
    .await
    .expect_err("TLS to a plain HTTP port fails");
    assert!(error.to_string().contains("use an http:// URL"), "{error}");
}

#[tokio::test]
async fn a_connection_that_never_starts_its_handshake_does_not_hold_up_others() {
    let https = start_https().await;
    let address = https
        .server
        .base_url
        .trim_start_matches("https://")
        .to_string();
    // Several sockets that connect and then say nothing, and one that sends half a hello.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(
            tokio::net::TcpStream::connect(&address)
                .await
                .expect("connect"),
        );
    }
    let mut partial = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .expect("write a partial record");
    let client = MusterClient::with_tls(
        &https.server.base_url,
        &https.server.admin_token,
        &trusting(&https.authority),
    )
    .expect("client");
    tokio::time::timeout(Duration::from_secs(5), client.ready())
        .await
        .expect("answered while other handshakes hang")
        .expect("ready");
    drop(silent);
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused_with_both_files_named() {
    let authority = TestCertificateAuthority::new("muster test authority").expect("authority");
    let directory = tempfile::tempdir().expect("temp dir");
    let first = authority
        .issue_server_certificate(&["localhost"])
        .expect("certificate")
        .write_to(directory.path(), "first")
        .expect("write");
    let second = authority
        .issue_server_certificate(&["localhost"])
        .expect("certificate")
        .write_to(directory.path(), "second")
        .expect("write");
    let mismatched = TlsFiles {
        certificate: first.certificate.clone(),
        private_key: second.private_key.clone(),
    };
    let error = ServerTls::load(&mismatched)
        .err()
        .expect("a key of another certificate must be refused");
    let text = error.to_string();
    assert!(
        matches!(error, TlsSetupError::Unusable { .. })
            && text.contains("second.key")
            && text.contains("first.crt")
            && text.contains("is not the key"),
        "{text}"
    );

    let missing = TlsFiles {
        certificate: directory.path().join("absent.crt"),
        private_key: first.private_key.clone(),
    };
    let error = ServerTls::load(&missing).err().expect("a missing file");
    assert!(
        matches!(error, TlsSetupError::Read { .. }) && error.to_string().contains("absent.crt"),
        "{error}"
    );

    let swapped = TlsFiles {
        certificate: first.private_key.clone(),
        private_key: first.certificate.clone(),
    };
    let error = ServerTls::load(&swapped)
        .err()
        .expect("files given the wrong way round");
    assert!(error.to_string().contains("no certificate"), "{error}");
}
