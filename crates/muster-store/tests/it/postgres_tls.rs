//! TLS to PostgreSQL, against a real server that accepts TCP connections over TLS only: the
//! database URL's `sslmode`, `sslrootcert`, `sslcert` and `sslkey` mean what they mean to libpq.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, anyhow, bail, ensure};
use muster_store::postgres::{DEFAULT_MAX_CONNECTIONS, PostgresConfig, PostgresStore};
use muster_store::{Store, StoreError};
use muster_test_support::{
    CERTIFICATE_USER, CertificateFiles, ClusterTls, PostgresCluster, TestCertificateAuthority,
};
use tempfile::TempDir;

use crate::conformance::{T0, claim_one, register_runner, spec, submit_one};

/// A TLS-only cluster with a certificate for 127.0.0.1 from one authority, and the files a
/// client may be handed.
struct TlsServer {
    cluster: PostgresCluster,
    /// The authority that signed the server's certificate.
    authority: PathBuf,
    /// An authority that signed nothing the server has.
    stranger: PathBuf,
    /// A client certificate for `CERTIFICATE_USER`, from the server's authority.
    client: CertificateFiles,
    _files: TempDir,
}

fn tls_server() -> anyhow::Result<&'static TlsServer> {
    static SERVER: OnceLock<Result<TlsServer, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| start_tls_server().map_err(|error| format!("{error:#}")))
        .as_ref()
        .map_err(|message| anyhow!("start the TLS PostgreSQL cluster: {message}"))
}

fn start_tls_server() -> anyhow::Result<TlsServer> {
    let files = tempfile::tempdir().context("create a directory for certificates")?;
    let authority = TestCertificateAuthority::new("muster test database authority")?;
    let server_certificate = authority.issue_server_certificate(&["127.0.0.1", "localhost"])?;
    let cluster = PostgresCluster::start_with_tls(&ClusterTls {
        server_certificate_pem: server_certificate.certificate_pem,
        server_private_key_pem: server_certificate.private_key_pem,
        client_authority_pem: authority.certificate_pem(),
    })?;
    let authority_file = files.path().join("authority.crt");
    authority.write_certificate(&authority_file)?;
    let stranger_file = files.path().join("stranger.crt");
    TestCertificateAuthority::new("someone else")?.write_certificate(&stranger_file)?;
    let client = authority
        .issue_client_certificate(CERTIFICATE_USER)?
        .write_to(files.path(), "client")?;
    Ok(TlsServer {
        cluster,
        authority: authority_file,
        stranger: stranger_file,
        client,
        _files: files,
    })
}

/// A fresh database on the TLS server: `(host:port, database name)`.
async fn fresh_database() -> anyhow::Result<(&'static TlsServer, String)> {
    tokio::task::spawn_blocking(|| {
        let server = tls_server()?;
        let url = server.cluster.create_database()?;
        let name = url
            .rsplit('/')
            .next()
            .context("read the database name")?
            .to_string();
        Ok((server, name))
    })
    .await
    .context("join the database-creating task")?
}

async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let store = PostgresStore::open(&PostgresConfig {
        url: url.to_string(),
        log_cap_bytes: 1024 * 1024,
        max_connections: DEFAULT_MAX_CONNECTIONS,
    })
    .await?;
    Ok(Arc::new(store))
}

/// The store at `url` opens, and a job goes in and is claimed through it.
async fn works(url: &str) -> anyhow::Result<()> {
    let store = open(url)
        .await
        .with_context(|| format!("open a store on {url}"))?;
    let job = submit_one(store.as_ref(), spec("over-tls"), T0).await?;
    let runner = register_runner(store.as_ref(), "tls-runner").await?;
    let claimed = claim_one(store.as_ref(), runner, "over-tls", T0).await?;
    ensure!(
        claimed.job.id == job.id,
        "the job submitted is the job claimed"
    );
    Ok(())
}

/// Opening the store at `url` fails, with a message containing `expected`.
async fn refused(url: &str, expected: &str) -> anyhow::Result<()> {
    match open(url).await {
        Ok(_) => bail!("{url} opened; it should have been refused ({expected})"),
        Err(error) => {
            let message = error.to_string();
            ensure!(
                message.contains(expected),
                "{url}: the error `{message}` does not say `{expected}`"
            );
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_works_with_the_authority_that_signed_the_server_certificate()
-> anyhow::Result<()> {
    let (server, database) = fresh_database().await?;
    works(&format!(
        "postgres://postgres@127.0.0.1:{}/{database}?sslmode=verify-full&sslrootcert={}",
        server.cluster.port(),
        server.authority.display()
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_host_name_fails_verify_full_and_passes_verify_ca()
-> anyhow::Result<()> {
    let (server, database) = fresh_database().await?;
    // The host name the certificate is checked against is not one it names; the address is
    // the server's.
    let url = |mode: &str| {
        format!(
            "postgres://postgres@db.elsewhere.test:{}/{database}?hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={}",
            server.cluster.port(),
            server.authority.display()
        )
    };
    refused(&url("verify-full"), "certificate not valid for name").await?;
    works(&url("verify-ca")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_an_unknown_authority_is_refused_unless_only_encryption_is_asked()
-> anyhow::Result<()> {
    let (server, database) = fresh_database().await?;
    let base = format!(
        "postgres://postgres@127.0.0.1:{}/{database}",
        server.cluster.port()
    );
    let stranger = server.stranger.display();
    refused(
        &format!("{base}?sslmode=verify-full&sslrootcert={stranger}"),
        "UnknownIssuer",
    )
    .await?;
    refused(
        &format!("{base}?sslmode=verify-ca&sslrootcert={stranger}"),
        "UnknownIssuer",
    )
    .await?;
    // As libpq: `require` with an authority file checks the chain.
    refused(
        &format!("{base}?sslmode=require&sslrootcert={stranger}"),
        "UnknownIssuer",
    )
    .await?;
    // Without one it encrypts and trusts whoever answers.
    works(&format!("{base}?sslmode=require")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_parameters_tls_is_used_when_offered_and_disable_is_refused_by_this_server()
-> anyhow::Result<()> {
    let (server, database) = fresh_database().await?;
    let base = format!(
        "postgres://postgres@127.0.0.1:{}/{database}",
        server.cluster.port()
    );
    // The server refuses plain TCP (pg_hba's `hostnossl ... reject`), so opening at all proves
    // the default went over TLS.
    works(&base).await?;
    refused(&format!("{base}?sslmode=disable"), "no encryption").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_logs_in_as_the_role_it_names() -> anyhow::Result<()> {
    let (server, database) = fresh_database().await?;
    let base = format!(
        "postgres://{CERTIFICATE_USER}@127.0.0.1:{}/{database}?sslmode=verify-full&sslrootcert={}",
        server.cluster.port(),
        server.authority.display()
    );
    refused(&base, "certificate").await?;
    works(&format!(
        "{base}&sslcert={}&sslkey={}",
        server.client.certificate.display(),
        server.client.private_key.display()
    ))
    .await
}

#[tokio::test]
async fn unreadable_certificate_files_are_rejected_before_connecting() -> anyhow::Result<()> {
    // No server is needed: the files are read when the store is set up.
    let url = "postgres://postgres@127.0.0.1:1/none?sslmode=verify-full&sslrootcert=/nonexistent/authority.crt";
    match open(url).await {
        Err(StoreError::Rejected(message)) => ensure!(
            message.contains("/nonexistent/authority.crt"),
            "the error names the file: {message}"
        ),
        Err(other) => bail!("expected a rejection, got {other}"),
        Ok(_) => bail!("a store opened without its authority file"),
    }
    Ok(())
}
