//! The PostgreSQL server a benchmark runs on: a private cluster started for the run, or an
//! existing server. Either way every scenario and every system gets a fresh database of its own
//! on it, so muster and graphile-worker share the server and its settings but not their tables.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use muster_test_support::PostgresCluster;
use tokio::sync::Mutex;

/// A PostgreSQL server and the databases this run made on it.
pub(crate) struct PgServer {
    /// The URL of the server's `postgres` database, from which databases are created and dropped.
    maintenance_url: String,
    /// The private cluster, when this run started one (stopped when dropped).
    cluster: Option<Arc<PostgresCluster>>,
    /// Whether `pg_stat_statements` is loaded and its extension created in `postgres`.
    statements: bool,
    /// Databases made by this run and not dropped yet.
    created: Mutex<Vec<String>>,
    sequence: AtomicU64,
}

/// Settings applied to a private cluster before the benchmark starts.
pub(crate) struct PrivateSettings {
    pub(crate) shared_buffers: String,
    pub(crate) statements: bool,
}

impl PgServer {
    /// Start a private cluster (initdb in a temporary directory, loopback, its own port) and
    /// restart it with `settings`; it is stopped and removed when the returned value is dropped,
    /// and by its guardian if this process dies first.
    pub(crate) async fn start_private(settings: &PrivateSettings) -> anyhow::Result<PgServer> {
        eprintln!("postgres: starting a private cluster");
        let cluster = tokio::task::spawn_blocking(PostgresCluster::start)
            .await
            .context("join the cluster-starting task")?
            .context("start a private PostgreSQL cluster")?;
        let cluster = Arc::new(cluster);
        let maintenance_url = cluster.url("postgres");
        {
            let client = connect(&maintenance_url).await?;
            client
                .batch_execute(&format!(
                    "ALTER SYSTEM SET shared_buffers = {}",
                    quote_literal(&settings.shared_buffers)
                ))
                .await
                .context("set shared_buffers with ALTER SYSTEM")?;
            if settings.statements {
                client
                    .batch_execute(
                        "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'",
                    )
                    .await
                    .context("preload pg_stat_statements with ALTER SYSTEM")?;
            }
        }
        let restarting = Arc::clone(&cluster);
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            restarting.stop()?;
            restarting.start_again()
        })
        .await
        .context("join the cluster-restarting task")?
        .context("restart the private cluster with the benchmark's settings")?;
        if settings.statements {
            let client = connect(&maintenance_url).await?;
            client
                .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .await
                .context(
                    "create the pg_stat_statements extension (is postgresql-contrib installed?)",
                )?;
        }
        eprintln!("postgres: private cluster on 127.0.0.1:{}", cluster.port());
        Ok(PgServer {
            maintenance_url,
            cluster: Some(cluster),
            statements: settings.statements,
            created: Mutex::new(Vec::new()),
            sequence: AtomicU64::new(0),
        })
    }

    /// An existing server, reached through `url` (any database on it; this run creates and drops
    /// databases of its own, so the role needs CREATEDB).
    pub(crate) async fn existing(url: &str, statements: bool) -> anyhow::Result<PgServer> {
        // Databases are created from the database the URL names, or from `postgres` if none.
        let maintenance_url =
            with_database(url, database_of(url).as_deref().unwrap_or("postgres"))?;
        let client = connect(&maintenance_url).await?;
        if statements {
            client
                .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .await
                .context("create the pg_stat_statements extension")?;
        }
        Ok(PgServer {
            maintenance_url,
            cluster: None,
            statements,
            created: Mutex::new(Vec::new()),
            sequence: AtomicU64::new(0),
        })
    }

    /// A fresh, empty database named after `label`; answers its URL.
    pub(crate) async fn create_database(&self, label: &str) -> anyhow::Result<String> {
        let name = format!(
            "{}_{}_{}",
            label.replace('-', "_"),
            std::process::id(),
            self.sequence.fetch_add(1, Ordering::Relaxed)
        );
        let client = connect(&self.maintenance_url).await?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("create database {name}"))?;
        self.created.lock().await.push(name.clone());
        with_database(&self.maintenance_url, &name)
    }

    /// Flush everything written so far to the data files, so that the next run does not pay for
    /// the previous one's checkpoint.
    pub(crate) async fn checkpoint(&self) -> anyhow::Result<()> {
        connect(&self.maintenance_url)
            .await?
            .batch_execute("CHECKPOINT")
            .await
            .context("run CHECKPOINT")
    }

    /// Drop the database at `database_url` (one this run created), so that the next run does not
    /// share the server with its dead rows and autovacuum work.
    pub(crate) async fn drop_database(&self, database_url: &str) -> anyhow::Result<()> {
        let Some(name) = database_of(database_url) else {
            return Ok(());
        };
        let mut created = self.created.lock().await;
        if !created.contains(&name) {
            return Ok(());
        }
        connect(&self.maintenance_url)
            .await?
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .with_context(|| format!("drop database {name}"))?;
        created.retain(|created| created != &name);
        Ok(())
    }

    /// Drop the databases this run created and has not dropped yet.
    pub(crate) async fn drop_databases(&self) -> anyhow::Result<()> {
        let names: Vec<String> = std::mem::take(&mut *self.created.lock().await);
        if names.is_empty() {
            return Ok(());
        }
        let client = connect(&self.maintenance_url).await?;
        for name in names {
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .with_context(|| format!("drop database {name}"))?;
        }
        Ok(())
    }

    /// The server's version and the settings that matter for throughput, for the report.
    pub(crate) async fn describe(&self) -> anyhow::Result<String> {
        let client = connect(&self.maintenance_url).await?;
        let names = [
            "server_version",
            "shared_buffers",
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "autovacuum",
            "max_connections",
        ];
        let mut settings = Vec::new();
        for name in names {
            let row = client
                .query_one("SELECT current_setting($1)", &[&name])
                .await
                .with_context(|| format!("read the server's setting {name}"))?;
            let value: String = row.get(0);
            settings.push(match name {
                "server_version" => {
                    format!("PG {}", value.split_whitespace().next().unwrap_or_default())
                }
                _ => format!("{name}={value}"),
            });
        }
        let location = match &self.cluster {
            Some(cluster) => format!("private cluster on :{}", cluster.port()),
            None => "existing server".to_string(),
        };
        Ok(format!("{location}, {}", settings.join(", ")))
    }

    /// Forget the statement statistics gathered so far (when `pg_stat_statements` is on).
    pub(crate) async fn reset_statements(&self) -> anyhow::Result<()> {
        if !self.statements {
            return Ok(());
        }
        connect(&self.maintenance_url)
            .await?
            .batch_execute("SELECT pg_stat_statements_reset()")
            .await
            .context("reset pg_stat_statements")
    }

    /// The statements run in `database_url`'s database since the last reset, most total time
    /// first, printed to stderr (when `pg_stat_statements` is on).
    pub(crate) async fn print_statements(
        &self,
        database_url: &str,
        limit: i64,
    ) -> anyhow::Result<()> {
        if !self.statements {
            return Ok(());
        }
        let Some(database) = database_of(database_url) else {
            return Ok(());
        };
        let client = connect(&self.maintenance_url).await?;
        let rows = client
            .query(
                "SELECT calls, total_exec_time, rows, \
                        regexp_replace(query, '\\s+', ' ', 'g') \
                   FROM pg_stat_statements \
                  WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1) \
                  ORDER BY total_exec_time DESC LIMIT $2",
                &[&database, &limit],
            )
            .await
            .context("read pg_stat_statements")?;
        eprintln!("  statements in {database}, most server time first:");
        eprintln!(
            "  {:>9} {:>10} {:>8} {:>10}  query",
            "calls", "total ms", "µs/call", "rows"
        );
        for row in rows {
            let calls: i64 = row.get(0);
            let total: f64 = row.get(1);
            let returned: i64 = row.get(2);
            let query: String = row.get(3);
            let shown: String = query.chars().take(150).collect();
            eprintln!(
                "  {calls:>9} {total:>10.0} {:>8.1} {returned:>10}  {shown}",
                total * 1000.0 / calls.max(1) as f64
            );
        }
        Ok(())
    }

    /// Live and dead rows and size of the largest tables of `database_url`'s database: the
    /// evidence of finished jobs piling up (or not).
    pub(crate) async fn table_report(&self, database_url: &str) -> anyhow::Result<String> {
        let connection = connect_closable(database_url).await?;
        let rows = connection
            .client
            .query(
                "SELECT relname, n_live_tup, n_dead_tup, autovacuum_count, \
                        pg_total_relation_size(relid) \
                   FROM pg_stat_user_tables \
                  ORDER BY pg_total_relation_size(relid) DESC LIMIT 3",
                &[],
            )
            .await
            .context("read the tables' statistics")?;
        connection.close().await;
        let tables: Vec<String> = rows
            .iter()
            .map(|row| {
                format!(
                    "{} {} live / {} dead rows, {} autovacuums, {:.1} MiB",
                    row.get::<_, String>(0),
                    row.get::<_, i64>(1),
                    row.get::<_, i64>(2),
                    row.get::<_, i64>(3),
                    row.get::<_, i64>(4) as f64 / (1024.0 * 1024.0)
                )
            })
            .collect();
        Ok(tables.join("; "))
    }
}

/// The server's write-ahead log counters (`pg_stat_wal`, server-wide), to tell per job how much
/// the log grew over a run: what each job costs the disk and, through checkpoints, what it
/// costs in full-page images.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WalCounters {
    records: i64,
    full_page_images: i64,
    bytes: f64,
}

impl WalCounters {
    pub(crate) async fn read(database_url: &str) -> anyhow::Result<WalCounters> {
        let row = connect(database_url)
            .await?
            .query_one(
                "SELECT wal_records, wal_fpi, wal_bytes::float8 FROM pg_stat_wal",
                &[],
            )
            .await
            .context("read pg_stat_wal")?;
        Ok(WalCounters {
            records: row.get(0),
            full_page_images: row.get(1),
            bytes: row.get(2),
        })
    }

    /// What the log grew by since `earlier`, per job, in words.
    pub(crate) fn per_job_since(&self, earlier: &WalCounters, jobs: u64) -> String {
        let jobs = jobs.max(1) as f64;
        format!(
            "{:.0} bytes, {:.1} records, {:.3} full-page images of write-ahead log per job",
            (self.bytes - earlier.bytes) / jobs,
            (self.records - earlier.records) as f64 / jobs,
            (self.full_page_images - earlier.full_page_images) as f64 / jobs,
        )
    }
}

/// CPU time used by a tree of processes on this machine (a root and its direct children), read
/// from `/proc`: what a run cost the database server, or graphile-worker's Node processes,
/// whatever else the machine did meanwhile.
pub(crate) struct ProcessCpu {
    root: u32,
}

impl ProcessCpu {
    /// The PostgreSQL server behind `database_url` (its postmaster is the parent of the backend
    /// that answers); `None` when it is not on this machine or `/proc` cannot tell.
    pub(crate) async fn of_postgres(database_url: &str) -> anyhow::Result<Option<ProcessCpu>> {
        let backend: i32 = connect(database_url)
            .await?
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .context("ask the server for its backend's pid")?
            .get(0);
        Ok(proc_stat(backend as u32).map(|stat| ProcessCpu { root: stat.parent }))
    }

    /// The process `pid` and its children.
    pub(crate) fn of_process(pid: u32) -> ProcessCpu {
        ProcessCpu { root: pid }
    }

    /// Seconds of CPU used so far by the root, its live children, and the children it has
    /// already reaped.
    pub(crate) fn seconds(&self) -> f64 {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return f64::NAN;
        };
        let mut ticks = proc_stat(self.root).map_or(0, |stat| stat.own_ticks + stat.children_ticks);
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(stat) = proc_stat(pid)
                && stat.parent == self.root
            {
                ticks += stat.own_ticks;
            }
        }
        ticks as f64 / CLOCK_TICKS_PER_SECOND
    }
}

/// The kernel's clock tick for `/proc/*/stat` times (`USER_HZ`, 100 on Linux).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

struct ProcStat {
    parent: u32,
    own_ticks: u64,
    children_ticks: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let after_name = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        parent: u32::try_from(field(4)?).ok()?,
        own_ticks: field(14)? + field(15)?,
        children_ticks: field(16)? + field(17)?,
    })
}

/// CPU seconds this process (the bench, with the coordinator in it) has used so far.
pub(crate) fn own_cpu_seconds() -> f64 {
    proc_stat(std::process::id()).map_or(f64::NAN, |stat| {
        stat.own_ticks as f64 / CLOCK_TICKS_PER_SECOND
    })
}

/// `ANALYZE` the database at `database_url`: after a preload, before the clock starts, so the
/// planner knows the tables as it would in a deployment that has been running (graphile-worker's
/// harness does the same).
pub(crate) async fn analyze(database_url: &str) -> anyhow::Result<()> {
    connect(database_url)
        .await?
        .batch_execute("ANALYZE")
        .await
        .context("ANALYZE the preloaded database")
}

/// A connection for watching a database's dead rows while a run goes on.
pub(crate) struct DeadRows {
    connection: ClosableClient,
}

impl DeadRows {
    pub(crate) async fn watch(database_url: &str) -> anyhow::Result<DeadRows> {
        Ok(DeadRows {
            connection: connect_closable(database_url).await?,
        })
    }

    /// Stop watching, once the connection has closed.
    pub(crate) async fn close(self) {
        self.connection.close().await;
    }

    /// The tables with the most dead rows right now, e.g. `job_queue 120.3k, jobs 80.1k`
    /// (from the statistics system, which lags by about a second).
    pub(crate) async fn sample(&self) -> anyhow::Result<String> {
        let rows = self
            .connection
            .client
            .query(
                "SELECT relname, n_dead_tup FROM pg_stat_user_tables \
                  WHERE n_dead_tup > 0 ORDER BY n_dead_tup DESC LIMIT 3",
                &[],
            )
            .await
            .context("read the tables' dead rows")?;
        let tables: Vec<String> = rows
            .iter()
            .map(|row| {
                format!(
                    "{} {:.1}k",
                    row.get::<_, String>(0),
                    row.get::<_, i64>(1) as f64 / 1000.0
                )
            })
            .collect();
        Ok(if tables.is_empty() {
            "none".into()
        } else {
            tables.join(", ")
        })
    }
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    Ok(connect_closable(url).await?.client)
}

/// A connection whose end can be waited for. Used for connections to a run's database, which
/// is dropped `WITH (FORCE)` right after: a connection still closing then would be cut off and
/// reported as failed.
pub(crate) struct ClosableClient {
    pub(crate) client: tokio_postgres::Client,
    task: tokio::task::JoinHandle<()>,
}

impl ClosableClient {
    pub(crate) async fn close(self) {
        drop(self.client);
        let _ = self.task.await;
    }
}

async fn connect_closable(url: &str) -> anyhow::Result<ClosableClient> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connect to PostgreSQL at {}", redact(url)))?;
    let task = tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("postgres: a bench connection failed: {error}");
        }
    });
    Ok(ClosableClient { client, task })
}

/// `url` with its database (the path) replaced by `database`.
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let mut parsed =
        url::Url::parse(url).with_context(|| format!("parse the URL {}", redact(url)))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        bail!(
            "{} is not a postgres:// URL (libpq's key=value form is not supported here)",
            redact(url)
        );
    }
    parsed.set_path(&format!("/{database}"));
    Ok(parsed.to_string())
}

/// The database a `postgres://` URL names, if any.
fn database_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let database = parsed.path().trim_start_matches('/');
    (!database.is_empty()).then(|| database.to_string())
}

/// A URL fit for messages: without its password.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(an unparsable URL)".to_string(),
    }
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
