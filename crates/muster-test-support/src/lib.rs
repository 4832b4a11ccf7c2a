//! Helpers shared by muster's test suites: a store in a temporary SQLite file, a real coordinator
//! on `127.0.0.1:0`, a clock tests move by hand, and ready-made clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use anyhow::Context;
use muster_api::{CreateRunner, CreatedRunner};
use muster_client::{MusterClient, RunnerClient};
use muster_core::{Clock, SystemClock, Timestamp};
use muster_server::{Coordinator, RawServerConfig, ServerConfig};
use muster_store::Store;
use muster_store::sqlite::{SqliteConfig, SqliteStore};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

pub mod certificates;
pub mod parity;
pub mod postgres;

pub use certificates::{CertificateFiles, IssuedCertificate, TestCertificateAuthority};
pub use postgres::{
    CERTIFICATE_USER, ClusterTls, PostgresCluster, PostgresDatabaseGuard, temp_postgres_database,
    temp_postgres_store, temp_postgres_store_with_log_cap,
};

/// The admin token every test server uses.
pub const TEST_ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    millis: AtomicI64,
}

impl ManualClock {
    /// A clock at the current wall time.
    pub fn starting_now() -> Arc<ManualClock> {
        Arc::new(ManualClock {
            millis: AtomicI64::new(SystemClock.now().as_millis()),
        })
    }

    pub fn advance_ms(&self, millis: i64) {
        self.millis.fetch_add(millis, Ordering::SeqCst);
    }

    pub fn advance_s(&self, seconds: i64) {
        self.advance_ms(seconds * 1000);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::SeqCst))
    }
}

/// An SQLite store in a fresh temporary directory (kept alive by the returned guard).
pub fn temp_sqlite_store() -> anyhow::Result<(TempDir, Arc<dyn Store>)> {
    temp_sqlite_store_with_log_cap(4 * 1024 * 1024)
}

pub fn temp_sqlite_store_with_log_cap(
    log_cap_bytes: u64,
) -> anyhow::Result<(TempDir, Arc<dyn Store>)> {
    let directory = tempfile::tempdir().context("create a temporary directory")?;
    let config = SqliteConfig {
        path: directory.path().join("muster.db"),
        log_cap_bytes,
    };
    let store = SqliteStore::open(&config).context("open a temporary SQLite store")?;
    Ok((directory, Arc::new(store)))
}

/// The Python of the test venv (`target/python-venv`, or the one `MUSTER_PYTHON_VENV` names),
/// which has the packages of `tools/python-requirements.txt`. Panics, saying how to make it,
/// when there is none: a test that needs Python never passes without it.
pub fn test_python() -> std::path::PathBuf {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = std::env::var_os("MUSTER_PYTHON_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace.join("target/python-venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no Python venv at {}: make it with `python3 -m venv target/python-venv && \
         target/python-venv/bin/pip install -r tools/python-requirements.txt` (bash .ci/run does \
         this), or point MUSTER_PYTHON_VENV at one with the `cryptography` package",
        venv.display()
    );
    python
}

/// A file of the workspace, by its path from the workspace root.
pub fn workspace_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// A real coordinator serving HTTP on a free loopback port, over a temporary SQLite file.
pub struct TestServer {
    pub base_url: String,
    pub admin_token: String,
    /// The coordinator behind the HTTP front end (for tests that apply deadlines or look at
    /// what it counts).
    pub coordinator: Coordinator,
    pub clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub data_dir: TempDir,
}

/// The test configuration in `data_dir`: a free loopback port, the test admin token, then
/// `adjust`.
fn test_config(
    data_dir: &TempDir,
    adjust: impl FnOnce(&mut RawServerConfig),
) -> anyhow::Result<ServerConfig> {
    let mut raw = RawServerConfig {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(data_dir.path().to_path_buf()),
        admin_token: Some(TEST_ADMIN_TOKEN.into()),
        // Tests must not depend on how full the machine's disk is; the tests of the reserve
        // set one.
        disk_reserve: Some("0".into()),
        // Every test request comes from 127.0.0.1, and some tests send more refused requests to
        // one server than the default limit (auth.rs walks every route with five bad
        // credentials each); the throttle's own tests set a limit. High rather than off, so
        // every request still goes through the throttle.
        auth_failure_limit: Some(1_000_000),
        ..RawServerConfig::default()
    };
    adjust(&mut raw);
    ServerConfig::from_raw(raw).context("check the test configuration")
}

impl TestServer {
    /// Defaults, the wall clock.
    pub async fn start() -> anyhow::Result<TestServer> {
        TestServer::start_with(Arc::new(SystemClock), |_| {}).await
    }

    /// With `clock` as "now" and `adjust` applied to the configuration first.
    pub async fn start_with(
        clock: Arc<dyn Clock>,
        adjust: impl FnOnce(&mut RawServerConfig),
    ) -> anyhow::Result<TestServer> {
        let data_dir = tempfile::tempdir().context("create a data directory")?;
        TestServer::start_in(data_dir, clock, adjust).await
    }

    /// Stop this server and start a new one on the same data directory (its SQLite store and
    /// artifacts), as a restarted coordinator would find it; `clock` and `adjust` as for
    /// [`TestServer::start_with`].
    pub async fn restart_with(
        self,
        clock: Arc<dyn Clock>,
        adjust: impl FnOnce(&mut RawServerConfig),
    ) -> anyhow::Result<TestServer> {
        self.shutdown.cancel();
        self.task.await.context("join the server task")??;
        // The store (and its lock on the data directory) goes with the last handle to it.
        drop(self.coordinator);
        TestServer::start_in(self.data_dir, clock, adjust).await
    }

    async fn start_in(
        data_dir: TempDir,
        clock: Arc<dyn Clock>,
        adjust: impl FnOnce(&mut RawServerConfig),
    ) -> anyhow::Result<TestServer> {
        let config = test_config(&data_dir, adjust)?;
        let store = muster_server::open_store(&config).await?;
        TestServer::serve(clock, config, store, data_dir).await
    }

    /// A server on `store` (opened by the test, which may keep a handle to look inside it),
    /// with `adjust` applied to the configuration first.
    pub async fn start_on_store(
        clock: Arc<dyn Clock>,
        store: Arc<dyn Store>,
        adjust: impl FnOnce(&mut RawServerConfig),
    ) -> anyhow::Result<TestServer> {
        let data_dir = tempfile::tempdir().context("create a data directory")?;
        let config = test_config(&data_dir, adjust)?;
        TestServer::serve(clock, config, store, data_dir).await
    }

    async fn serve(
        clock: Arc<dyn Clock>,
        config: ServerConfig,
        store: Arc<dyn Store>,
        data_dir: TempDir,
    ) -> anyhow::Result<TestServer> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .context("bind a loopback port")?;
        let address = listener.local_addr()?;
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let shutdown = CancellationToken::new();
        let admin_token = config
            .admin_token
            .clone()
            .unwrap_or_else(|| TEST_ADMIN_TOKEN.into());
        let blobs = muster_server::open_blobs(&config).await?;
        let server = muster_server::build_with_blobs(
            config,
            store,
            blobs,
            Arc::clone(&clock),
            &admin_token,
            shutdown.clone(),
        );
        let coordinator = server.coordinator.clone();
        let task = tokio::spawn(muster_server::serve(server, listener, shutdown.clone()));
        Ok(TestServer {
            base_url: format!("{scheme}://{address}"),
            admin_token,
            coordinator,
            clock,
            shutdown,
            task,
            data_dir,
        })
    }

    /// A client with the admin token.
    pub fn client(&self) -> MusterClient {
        MusterClient::new(&self.base_url, &self.admin_token).expect("test URL and token are valid")
    }

    /// Register a runner and answer it with a client holding its token.
    pub async fn runner(&self, name: &str) -> anyhow::Result<(CreatedRunner, RunnerClient)> {
        let created = self
            .client()
            .create_runner(&CreateRunner {
                name: name.into(),
                ..Default::default()
            })
            .await
            .context("register a test runner")?;
        let client = RunnerClient::new(&self.base_url, &created.token)?;
        Ok((created, client))
    }

    /// A new random Ed25519 runner key.
    pub fn new_runner_key() -> muster_core::identity::RunnerSigningKey {
        muster_core::identity::RunnerSigningKey::from_secret_bytes(rand::random())
    }

    /// The coordinator's "now" as a registration timestamp.
    pub fn registration_time(&self) -> time::OffsetDateTime {
        let nanos = i128::from(self.clock.now().as_millis()) * 1_000_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }

    /// A registrar for this server's registration route.
    pub fn registrar(&self) -> muster_client::Registrar {
        muster_client::Registrar::new(&self.base_url, &muster_client::ClientTls::system())
            .expect("the test URL is valid")
    }

    /// Register `description` signed by `key` at the coordinator's "now".
    pub async fn register_key(
        &self,
        key: &muster_core::identity::RunnerSigningKey,
        description: &muster_client::RunnerDescription,
    ) -> Result<(muster_api::RunnerRegistered, bool), muster_client::ClientError> {
        self.registrar()
            .register_signed_at(key, description, self.registration_time())
            .await
    }

    /// A runner that registered itself with a new key, which was put on the allowlist first;
    /// answers its registration, a client holding its token, and its key.
    pub async fn key_runner(
        &self,
        name: &str,
        kinds: &[&str],
    ) -> anyhow::Result<(
        muster_api::RunnerRegistered,
        RunnerClient,
        muster_core::identity::RunnerSigningKey,
    )> {
        let key = TestServer::new_runner_key();
        self.client()
            .add_runner_key(&muster_api::AddRunnerKey {
                public_key: key.public_key().to_base64(),
                note: Some(format!("test runner {name}")),
                organization_id: None,
            })
            .await
            .context("put the test runner's key on the allowlist")?;
        let description = muster_client::RunnerDescription {
            name: name.into(),
            hostname: "test-host".into(),
            kinds: kinds.iter().map(|kind| kind.to_string()).collect(),
            ..Default::default()
        };
        let (registered, _) = self
            .register_key(&key, &description)
            .await
            .context("register the test runner by its key")?;
        let client = RunnerClient::new(&self.base_url, &registered.token)?;
        Ok((registered, client, key))
    }

    /// Where this server keeps artifact bytes (`<data-dir>/blobs`).
    pub fn blobs_dir(&self) -> std::path::PathBuf {
        self.data_dir.path().join("blobs")
    }

    /// Every file under [`TestServer::blobs_dir`], stored artifacts and unfinished uploads
    /// alike, so a test can tell that a refused upload left nothing behind.
    pub fn blob_files(&self) -> anyhow::Result<Vec<std::path::PathBuf>> {
        let mut files = Vec::new();
        let mut pending = vec![self.blobs_dir()];
        while let Some(directory) = pending.pop() {
            let entries = match std::fs::read_dir(&directory) {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => {
                    return Err(error).with_context(|| format!("list {}", directory.display()));
                }
            };
            for entry in entries {
                let entry = entry.with_context(|| format!("list {}", directory.display()))?;
                if entry.file_type()?.is_dir() {
                    pending.push(entry.path());
                } else {
                    files.push(entry.path());
                }
            }
        }
        files.sort();
        Ok(files)
    }

    /// Apply passed deadlines now instead of waiting for the reaper's tick. A store that fails
    /// fails the test: no test means to reap against a broken store.
    pub async fn reap(&self) {
        if let Err(error) = self.coordinator.reap_now().await {
            panic!("reap passed deadlines: {error}");
        }
    }

    /// Delete the finished jobs past the configured retention now instead of waiting for the
    /// next pass; answers how many were deleted. A store that fails fails the test.
    pub async fn prune(&self) -> u64 {
        match self.coordinator.prune_now().await {
            Ok(deleted) => deleted,
            Err(error) => panic!("delete finished jobs past their retention: {error}"),
        }
    }

    /// Delete the artifacts no job names and nobody uploaded or named within `unused_for` now,
    /// as the retention task does; answers how many and their bytes. A store that fails fails
    /// the test.
    pub async fn collect_artifacts(&self, unused_for: std::time::Duration) -> (u64, u64) {
        match self.coordinator.collect_unused_artifacts(unused_for).await {
            Ok(report) => (report.artifacts, report.bytes),
            Err(error) => panic!("delete unused artifacts: {error:#}"),
        }
    }

    /// Stop serving and wait for the server task.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.context("join the server task")?
    }
}
