//! A real PostgreSQL server for tests, run from the distribution's server binaries.
//!
//! Each [`PostgresCluster`] is a private cluster: `initdb` into a fresh temporary directory, the
//! server on a free loopback port with its unix sockets in that directory, trust authentication
//! for the `postgres` role. Tests share one per process ([`PostgresCluster::shared`]) and make
//! a database each, which is far cheaper than a cluster each; a test that stops the server (a
//! database outage) starts its own with [`PostgresCluster::start`].
//!
//! No server may outlive the test process, yet statics are never dropped and a test binary may
//! be killed: every cluster therefore comes with a guardian shell that waits for the test process
//! to go away, then stops the server and removes its directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use muster_store::Store;
use muster_store::postgres::{DEFAULT_MAX_CONNECTIONS, PostgresConfig, PostgresStore};
use tempfile::TempDir;

/// How long a start may take before it counts as failed: initdb's cluster starts in well under a
/// second on an idle machine, but test runs load every core.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Starts on a port another process grabbed between our probe and the server's bind are
/// retried on a new port this many times in all.
const PORT_ATTEMPTS: usize = 5;
/// The server binaries every cluster needs.
const REQUIRED_BINARIES: &[&str] = &[
    "initdb",
    "pg_ctl",
    "postgres",
    "createdb",
    "createuser",
    "pg_isready",
];
/// Lines of the server's log quoted when it fails to start.
const LOG_TAIL_LINES: usize = 40;

/// Database names must be unique within a cluster; one counter for the process is simplest.
static DATABASE_SEQ: AtomicU64 = AtomicU64::new(0);

/// The role of [`PostgresCluster::start_with_tls`] that logs in with a client certificate.
pub const CERTIFICATE_USER: &str = "muster_certificate_user";

/// What a TLS test cluster serves and trusts, as PEM text.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    pub server_certificate_pem: String,
    pub server_private_key_pem: String,
    /// The authority whose client certificates the server accepts.
    pub client_authority_pem: String,
}

/// A private PostgreSQL server, stopped and removed when dropped.
pub struct PostgresCluster {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    /// The system user the server runs as when the tests run as root (initdb and postgres refuse
    /// to run as root).
    run_as: Option<SystemUser>,
    guardian: Mutex<Option<Child>>,
    /// Declared last so it is removed after the server stopped.
    directory: TempDir,
}

#[derive(Debug, Clone, Copy)]
struct SystemUser {
    uid: u32,
    gid: u32,
}

impl std::fmt::Debug for PostgresCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCluster")
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl PostgresCluster {
    /// A new private cluster: initdb into a fresh temporary directory, the server on a free
    /// 127.0.0.1 port, unix sockets in that directory. Answers once it accepts connections.
    pub fn start() -> anyhow::Result<PostgresCluster> {
        PostgresCluster::start_with(None)
    }

    /// A new private cluster that accepts TCP connections over TLS only, with `tls`'s server
    /// certificate. `postgres` logs in without a password; the role `certificate_user` (made
    /// here) must show a client certificate, signed by `tls.client_authority_pem`, that names it.
    pub fn start_with_tls(tls: &ClusterTls) -> anyhow::Result<PostgresCluster> {
        PostgresCluster::start_with(Some(tls))
    }

    fn start_with(tls: Option<&ClusterTls>) -> anyhow::Result<PostgresCluster> {
        let bin_dir = find_bin_dir()?;
        let run_as = server_user()?;
        let directory = tempfile::Builder::new()
            .prefix("muster-pg-")
            .tempdir()
            .context("create a directory for a PostgreSQL cluster")?;
        if let Some(user) = run_as {
            std::os::unix::fs::chown(directory.path(), Some(user.uid), Some(user.gid))
                .with_context(|| {
                    format!(
                        "hand {} to the postgres system user",
                        directory.path().display()
                    )
                })?;
        }
        let data_dir = directory.path().join("data");
        let log_file = directory.path().join("server.log");
        let mut cluster = PostgresCluster {
            bin_dir,
            data_dir,
            log_file,
            port: 0,
            run_as,
            guardian: Mutex::new(None),
            directory,
        };
        // Before initdb: a test process killed during initdb leaves a directory too.
        cluster.start_guardian()?;
        cluster.initdb()?;
        if let Some(tls) = tls {
            cluster.configure_tls(tls)?;
        }
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            cluster.port = free_port()?;
            match cluster.start_server() {
                Ok(()) => {
                    if tls.is_some() {
                        cluster.create_role(CERTIFICATE_USER)?;
                    }
                    return Ok(cluster);
                }
                Err(ServerStartError::PortTaken) => {
                    last_error = Some(anyhow!(
                        "port {} was taken before the server bound it",
                        cluster.port
                    ));
                }
                Err(ServerStartError::Other(error)) => return Err(error),
            }
        }
        Err(last_error
            .unwrap_or_else(|| anyhow!("no port tried"))
            .context(format!(
                "start PostgreSQL: no free port after {PORT_ATTEMPTS} attempts"
            )))
    }

    /// One cluster shared by every test of this process, started on first use. Never stop it:
    /// other tests are using it.
    pub fn shared() -> anyhow::Result<&'static PostgresCluster> {
        static SHARED: OnceLock<Result<PostgresCluster, String>> = OnceLock::new();
        match SHARED.get_or_init(|| PostgresCluster::start().map_err(|error| format!("{error:#}")))
        {
            Ok(cluster) => Ok(cluster),
            Err(message) => Err(anyhow!("start the shared PostgreSQL cluster: {message}")),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A fresh empty database with a name unique in this process; answers its URL.
    pub fn create_database(&self) -> anyhow::Result<String> {
        let name = format!(
            "muster_test_{}_{}",
            std::process::id(),
            DATABASE_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let output = Command::new(self.bin_dir.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "--no-password", &name])
            .stdin(Stdio::null())
            .output()
            .context("run createdb")?;
        if !output.status.success() {
            bail!(
                "create database {name} on port {}: createdb {}: {}",
                self.port,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(self.url(&name))
    }

    /// Stop the server now (a fast shutdown: sessions are cut off), keeping its data.
    pub fn stop(&self) -> anyhow::Result<()> {
        let output = self
            .server_command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "-t"])
            .arg(START_TIMEOUT.as_secs().to_string())
            .stdin(Stdio::null())
            .output()
            .context("run pg_ctl stop")?;
        if !output.status.success() {
            bail!(
                "stop PostgreSQL on port {}: pg_ctl {}: {}\n{}",
                self.port,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Start the stopped server again on the same port and data; answers once it accepts
    /// connections.
    pub fn start_again(&self) -> anyhow::Result<()> {
        match self.start_server() {
            Ok(()) => Ok(()),
            Err(ServerStartError::PortTaken) => Err(anyhow!(
                "start PostgreSQL again: port {} is now taken by another process\n{}",
                self.port,
                self.log_tail()
            )),
            Err(ServerStartError::Other(error)) => Err(error.context("start PostgreSQL again")),
        }
    }

    /// A command for one of the server binaries, run as the user owning the cluster.
    fn server_command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        // The server user may not be allowed into the test's working directory.
        command.current_dir(self.directory.path());
        command.env_remove("PGDATA");
        if let Some(user) = self.run_as {
            use std::os::unix::process::CommandExt;
            command.uid(user.uid).gid(user.gid);
        }
        command
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let output = self
            .server_command("initdb")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            // The durability tests are about the server's commits, not about initdb's files
            // reaching the disk; skipping that sync saves seconds per cluster.
            .arg("--no-sync")
            .stdin(Stdio::null())
            .output()
            .context("run initdb")?;
        if !output.status.success() {
            bail!(
                "initialise a PostgreSQL cluster in {}: initdb {}: {}{}",
                self.data_dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let settings = format!(
            "\n# muster tests\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             max_connections = 200\n\
             shared_buffers = 128MB\n\
             fsync = on\n\
             synchronous_commit = on\n\
             full_page_writes = on\n\
             logging_collector = off\n",
            self.directory.path().display()
        );
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir.join("postgresql.conf"))
            .and_then(|mut file| file.write_all(settings.as_bytes()))
            .context("write the test settings into postgresql.conf")?;
        Ok(())
    }

    /// Serve TLS with `tls`'s files and refuse plain TCP connections (before the first start).
    fn configure_tls(&self, tls: &ClusterTls) -> anyhow::Result<()> {
        let files = [
            ("server.crt", tls.server_certificate_pem.as_str()),
            ("server.key", tls.server_private_key_pem.as_str()),
            ("client-authority.crt", tls.client_authority_pem.as_str()),
        ];
        for (name, contents) in files {
            let path = self.data_dir.join(name);
            std::fs::write(&path, contents).with_context(|| format!("write {}", path.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("restrict {}", path.display()))?;
            if let Some(user) = self.run_as {
                std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid))
                    .with_context(|| format!("hand {} to the server user", path.display()))?;
            }
        }
        let settings = "\n# muster TLS tests\n\
             ssl = on\n\
             ssl_cert_file = 'server.crt'\n\
             ssl_key_file = 'server.key'\n\
             ssl_ca_file = 'client-authority.crt'\n";
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir.join("postgresql.conf"))
            .and_then(|mut file| file.write_all(settings.as_bytes()))
            .context("write the TLS settings into postgresql.conf")?;
        // The first line that matches decides; plain TCP matches only the last one.
        let rules = format!(
            "local all all trust\n\
             hostssl all {CERTIFICATE_USER} 127.0.0.1/32 cert\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n"
        );
        let hba = self.data_dir.join("pg_hba.conf");
        std::fs::write(&hba, rules).context("write pg_hba.conf for TLS")?;
        Ok(())
    }

    /// A login role without a password, made over the unix socket.
    fn create_role(&self, name: &str) -> anyhow::Result<()> {
        let output = Command::new(self.bin_dir.join("createuser"))
            .arg("-h")
            .arg(self.directory.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "--no-password",
            ])
            .args(["--superuser", name])
            .stdin(Stdio::null())
            .output()
            .context("run createuser")?;
        if !output.status.success() {
            bail!(
                "create the role {name}: createuser {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Start the shell that stops the server and removes the directory once this process is
    /// gone (or the directory was removed by `Drop`, which makes it exit).
    fn start_guardian(&self) -> anyhow::Result<()> {
        const SCRIPT: &str = r#"
            test_pid=$1; directory=$2; data=$3; pg_ctl=$4
            while [ -d "/proc/$test_pid" ] && [ -d "$directory" ]; do sleep 1; done
            if [ -f "$data/postmaster.pid" ]; then
                "$pg_ctl" stop -D "$data" -m immediate -w -t 30 >/dev/null 2>&1
            fi
            rm -rf "$directory"
        "#;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(SCRIPT)
            .arg("muster-postgres-guardian")
            .arg(std::process::id().to_string())
            .arg(self.directory.path())
            .arg(&self.data_dir)
            .arg(self.bin_dir.join("pg_ctl"))
            .current_dir(self.directory.path())
            // Its own process group, so the Ctrl-C that kills the tests does not kill it too;
            // no inherited output, so a pipe reading the test output (`| tee`) is not held open.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        {
            use std::os::unix::process::CommandExt;
            command.process_group(0);
            if let Some(user) = self.run_as {
                command.uid(user.uid).gid(user.gid);
            }
        }
        let child = command
            .spawn()
            .context("start the guardian shell (sh) of a PostgreSQL cluster")?;
        *self
            .guardian
            .lock()
            .map_err(|_| anyhow!("the guardian lock is poisoned"))? = Some(child);
        Ok(())
    }

    /// `pg_ctl start` on `self.port`, then wait until the server answers over TCP.
    fn start_server(&self) -> Result<(), ServerStartError> {
        let output_path = self.directory.path().join("pg_ctl.out");
        let output = File::create(&output_path)
            .context("create pg_ctl's output file")
            .map_err(ServerStartError::Other)?;
        let errors = output
            .try_clone()
            .context("share pg_ctl's output file")
            .map_err(ServerStartError::Other)?;
        let log_size_before =
            std::fs::metadata(&self.log_file).map_or(0, |metadata| metadata.len());
        let mut command = self.server_command("pg_ctl");
        command
            .arg("start")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t"])
            .arg(START_TIMEOUT.as_secs().to_string())
            .arg("-o")
            .arg(format!("-p {}", self.port))
            // Files, not pipes: the server inherits them, and a pipe would stay open as long as
            // it runs.
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors);
        {
            use std::os::unix::process::CommandExt;
            // The server's own process group: a Ctrl-C to the tests reaches the guardian's
            // cleanup, not the server behind its back.
            command.process_group(0);
        }
        let status = command
            .status()
            .context("run pg_ctl start")
            .map_err(ServerStartError::Other)?;
        if !status.success() {
            let new_log = read_from(&self.log_file, log_size_before);
            if new_log.contains("could not bind") || new_log.contains("Address already in use") {
                return Err(ServerStartError::PortTaken);
            }
            return Err(ServerStartError::Other(anyhow!(
                "start PostgreSQL on port {}: pg_ctl start {status}: {}\n{}",
                self.port,
                std::fs::read_to_string(&output_path)
                    .unwrap_or_default()
                    .trim(),
                self.log_tail()
            )));
        }
        self.wait_until_ready().map_err(ServerStartError::Other)
    }

    fn wait_until_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let probe = Command::new(self.bin_dir.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "postgres", "-d", "postgres", "-t", "2"])
                .stdin(Stdio::null())
                .output()
                .context("run pg_isready")?;
            if probe.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "wait for PostgreSQL on port {} to accept connections: still refusing after {:?}: {}\n{}",
                    self.port,
                    START_TIMEOUT,
                    String::from_utf8_lossy(&probe.stdout).trim(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        format!(
            "last lines of the server log {}:\n{tail}",
            self.log_file.display()
        )
    }
}

enum ServerStartError {
    PortTaken,
    Other(anyhow::Error),
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        if self.data_dir.join("postmaster.pid").exists() {
            let stopped = self
                .server_command("pg_ctl")
                .arg("stop")
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "immediate", "-w", "-t", "30"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !matches!(stopped, Ok(status) if status.success()) {
                eprintln!(
                    "cannot stop the PostgreSQL test server on port {} ({stopped:?}); its guardian will",
                    self.port
                );
            }
        }
        if let Ok(mut guardian) = self.guardian.lock()
            && let Some(mut child) = guardian.take()
        {
            // Its work is done here; the directory goes when `directory` is dropped.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The bytes of `path` from `offset` on, as text (empty when it cannot be read).
fn read_from(path: &Path, offset: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(0).min(text.len());
    String::from_utf8_lossy(&text[start..]).into_owned()
}

/// A loopback port nobody listens on right now. The server binds it a moment later; the race
/// with other processes is why starts retry on a new port.
fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("find a free loopback port")?;
    Ok(listener
        .local_addr()
        .context("read the free port's address")?
        .port())
}

/// The directory holding initdb, pg_ctl and postgres: `MUSTER_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian's layout), else `pg_config --bindir`.
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    const INSTALL_HINT: &str = "install the Debian package `postgresql` (apt-get install -y postgresql) or set MUSTER_PG_BIN to the directory holding initdb, pg_ctl and postgres";
    if let Some(configured) = std::env::var_os("MUSTER_PG_BIN") {
        let bin_dir = PathBuf::from(configured);
        let missing = missing_binaries(&bin_dir);
        if !missing.is_empty() {
            bail!(
                "PostgreSQL server binaries {} not found in MUSTER_PG_BIN={}: point MUSTER_PG_BIN at the directory holding them (for Debian's package `postgresql`: /usr/lib/postgresql/<version>/bin), or unset it",
                missing.join(", "),
                bin_dir.display()
            );
        }
        return Ok(bin_dir);
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| {
                    let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((version, entry.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    if let Some((_, bin_dir)) = candidates
        .into_iter()
        .rev()
        .find(|(_, bin_dir)| missing_binaries(bin_dir).is_empty())
    {
        return Ok(bin_dir);
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let bin_dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if missing_binaries(&bin_dir).is_empty() {
            return Ok(bin_dir);
        }
    }
    bail!(
        "PostgreSQL server binaries ({}) not found: MUSTER_PG_BIN is not set, no /usr/lib/postgresql/*/bin holds them, and `pg_config --bindir` names no directory that does; {INSTALL_HINT}",
        REQUIRED_BINARIES.join(", ")
    )
}

fn missing_binaries(bin_dir: &Path) -> Vec<&'static str> {
    REQUIRED_BINARIES
        .iter()
        .copied()
        .filter(|binary| !bin_dir.join(binary).is_file())
        .collect()
}

/// Who runs the server: nobody in particular (this process's user) unless this process is root,
/// which initdb and postgres refuse; then the `postgres` system user.
fn server_user() -> anyhow::Result<Option<SystemUser>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .context("look up the postgres system user")?
        .ok_or_else(|| {
            anyhow!(
                "the tests run as root, which initdb refuses, and there is no `postgres` system user to run PostgreSQL as: install the Debian package `postgresql` (apt-get install -y postgresql), which creates it, or run the tests as an ordinary user"
            )
        })?;
    Ok(Some(SystemUser {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }))
}

/// Keeps a test database's store company; the database itself goes with the cluster.
#[derive(Debug)]
pub struct PostgresDatabaseGuard {
    url: String,
}

impl PostgresDatabaseGuard {
    /// The database's URL, for opening more stores (more coordinators) on it.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// A fresh empty database in the shared cluster; answers its URL.
pub async fn temp_postgres_database() -> anyhow::Result<String> {
    // Starting the cluster and createdb block for a while; keep them off the runtime's workers.
    tokio::task::spawn_blocking(|| PostgresCluster::shared()?.create_database())
        .await
        .context("join the database-creating task")?
}

/// A PostgresStore on a fresh database of the shared cluster.
pub async fn temp_postgres_store() -> anyhow::Result<(PostgresDatabaseGuard, Arc<dyn Store>)> {
    temp_postgres_store_with_log_cap(4 * 1024 * 1024).await
}

pub async fn temp_postgres_store_with_log_cap(
    log_cap_bytes: u64,
) -> anyhow::Result<(PostgresDatabaseGuard, Arc<dyn Store>)> {
    let url = temp_postgres_database().await?;
    let store = PostgresStore::open(&PostgresConfig {
        url: url.clone(),
        log_cap_bytes,
        max_connections: DEFAULT_MAX_CONNECTIONS,
    })
    .await
    .with_context(|| format!("open a PostgresStore on {url}"))?;
    Ok((PostgresDatabaseGuard { url }, Arc::new(store)))
}

#[cfg(test)]
mod tests {
    use anyhow::{Context, ensure};

    use super::PostgresCluster;

    async fn select_one(url: &str) -> Result<i32, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(connection);
        let one: i32 = client.query_one("SELECT 1", &[]).await?.get(0);
        drop(client);
        let _ = connection.await;
        Ok(one)
    }

    fn is_connection_refused(error: &tokio_postgres::Error) -> bool {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(current) = source {
            if let Some(io) = current.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::ConnectionRefused
            {
                return true;
            }
            source = current.source();
        }
        false
    }

    #[tokio::test]
    async fn a_cluster_serves_fresh_databases_and_survives_a_stop_and_start() -> anyhow::Result<()>
    {
        let cluster = tokio::task::spawn_blocking(PostgresCluster::start)
            .await
            .context("join the cluster start")??;
        let cluster = std::sync::Arc::new(cluster);
        let first = tokio::task::spawn_blocking({
            let cluster = std::sync::Arc::clone(&cluster);
            move || cluster.create_database()
        })
        .await??;
        let second = cluster.create_database()?;
        ensure!(first != second, "each database is new: {first} {second}");
        ensure!(first.starts_with(&format!(
            "postgres://postgres@127.0.0.1:{}/",
            cluster.port()
        )));
        ensure!(
            select_one(&first)
                .await
                .context("query the first database")?
                == 1
        );
        ensure!(
            select_one(&second)
                .await
                .context("query the second database")?
                == 1
        );

        cluster.stop()?;
        match select_one(&first).await {
            Err(error) if is_connection_refused(&error) => {}
            other => anyhow::bail!("a stopped server refuses connections, got {other:?}"),
        }

        cluster.start_again()?;
        ensure!(
            select_one(&first)
                .await
                .context("query again after the restart")?
                == 1
        );

        let data_dir = cluster.data_dir.clone();
        let directory = cluster.directory.path().to_path_buf();
        drop(cluster);
        ensure!(
            !directory.exists() && !data_dir.exists(),
            "dropping the cluster removes its directory"
        );
        match select_one(&first).await {
            Err(error) if is_connection_refused(&error) => Ok(()),
            other => anyhow::bail!("a dropped cluster's server is gone, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_shared_cluster_is_started_once() -> anyhow::Result<()> {
        let (first, second) = tokio::task::spawn_blocking(|| {
            anyhow::Ok((PostgresCluster::shared()?, PostgresCluster::shared()?))
        })
        .await??;
        ensure!(std::ptr::eq(first, second));
        let url =
            tokio::task::spawn_blocking(|| PostgresCluster::shared()?.create_database()).await??;
        ensure!(select_one(&url).await? == 1);
        Ok(())
    }
}
