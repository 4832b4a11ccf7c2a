//! `muster-bench`: measures a real coordinator (SQLite WAL, `synchronous=FULL`, group commit)
//! through real HTTP on loopback, the way runners use it.
//!
//! The coordinator runs in this process on its own Tokio runtime and its own listening socket;
//! the simulated runners run on another runtime and talk to it only through `muster-client`.
//! Both share the machine's cores, as a coordinator and its load would on one box.
//!
//! Scenarios:
//! - `burn-down`: N no-op jobs pending, R runners claiming `--batch` at a time and completing
//!   them in one batch call each: jobs per second end to end.
//! - `latency`: idle runners long-poll; jobs are submitted one at a time; enqueue→claim p50/p99.
//! - `depth`: one runner's claim+complete cycle with 1,000 and with 1,000,000 jobs pending.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use muster_api::{ClaimJobs, CompleteJobs, CompletionItem, CreateRunner, SubmitJob};
use muster_client::{MusterClient, RunnerClient};
use muster_server::{RawServerConfig, ServerConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(about = "Benchmark a real muster coordinator over HTTP", long_about = None)]
struct Args {
    /// Which scenarios to run.
    #[arg(long, value_enum, default_value = "all")]
    scenario: Scenario,
    /// Jobs in the burn-down.
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    /// Simulated runners in the burn-down.
    #[arg(long, default_value_t = 32)]
    runners: usize,
    /// Jobs per claim (max_jobs) and per batch completion in the burn-down.
    #[arg(long, default_value_t = 100)]
    batch: u32,
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
    /// Worker threads of the coordinator's runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Where the coordinator keeps its database (a fresh temporary directory by default).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Scenario {
    All,
    BurnDown,
    Latency,
    Depth,
}

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

/// A coordinator running in this process on its own runtime.
struct Coordinator {
    base_url: String,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    _data_dir: Option<tempfile::TempDir>,
}

impl Coordinator {
    fn start(args: &Args, data_dir: Option<std::path::PathBuf>) -> anyhow::Result<Coordinator> {
        let (path, guard) = match data_dir {
            Some(path) => (path, None),
            None => {
                let temporary = tempfile::tempdir().context("create a data directory")?;
                (temporary.path().to_path_buf(), Some(temporary))
            }
        };
        let config = ServerConfig::from_raw(RawServerConfig {
            listen: Some("127.0.0.1:0".into()),
            data_dir: Some(path),
            admin_token: Some(ADMIN_TOKEN.into()),
            ..RawServerConfig::default()
        })?;
        let std_listener = std::net::TcpListener::bind(config.listen).context("bind loopback")?;
        std_listener.set_nonblocking(true)?;
        let base_url = format!("http://{}", std_listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let threads = args.server_threads;
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("coordinator")
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let store = muster_server::open_store(&config)?;
                let listener = tokio::net::TcpListener::from_std(std_listener)?;
                muster_server::run(config, store, ADMIN_TOKEN, listener, stop).await
            })
        });
        Ok(Coordinator {
            base_url,
            shutdown,
            thread: Some(thread),
            _data_dir: guard,
        })
    }

    fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .map_err(|_| anyhow::format_err!("the coordinator thread panicked"))??;
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let want = |scenario: Scenario| args.scenario == Scenario::All || args.scenario == scenario;
    if want(Scenario::BurnDown) {
        let coordinator = Coordinator::start(&args, args.data_dir.clone())?;
        let rate = runtime.block_on(burn_down(&coordinator.base_url, &args))?;
        coordinator.stop()?;
        rows.push((
            format!(
                "burn-down: {} no-op jobs, {} runners, batch {}",
                args.jobs, args.runners, args.batch
            ),
            format!("{rate:.0} jobs/s"),
            "≥ 50,000 jobs/s".into(),
        ));
    }
    if want(Scenario::Latency) {
        let coordinator = Coordinator::start(&args, None)?;
        let (p50, p99) = runtime.block_on(latency(&coordinator.base_url, &args))?;
        coordinator.stop()?;
        rows.push((
            format!(
                "enqueue→claim, {} samples, {} idle long-polling runners",
                args.latency_samples, args.latency_runners
            ),
            format!("p50 {:.3} ms, p99 {:.3} ms", p50, p99),
            "p50 ≤ 1 ms, p99 ≤ 5 ms".into(),
        ));
    }
    if want(Scenario::Depth) {
        let coordinator = Coordinator::start(&args, None)?;
        let (small, large) = runtime.block_on(depth(&coordinator.base_url, &args))?;
        coordinator.stop()?;
        rows.push((
            format!(
                "claim+complete at 1,000 pending (median of 10 blocks of {} cycles)",
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
    print_table(&rows);
    Ok(())
}

fn print_table(rows: &[(String, String, String)]) {
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
    let created = admin
        .create_runner(&CreateRunner {
            name,
            ..Default::default()
        })
        .await?;
    Ok(RunnerClient::new(base_url, &created.token)?)
}

/// Submit `count` no-op jobs of `kind` in batches of 1000, several batches in flight.
async fn preload(admin: &MusterClient, kind: &str, count: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let batches: Vec<usize> = (0..count)
        .step_by(1000)
        .map(|start| (count - start).min(1000))
        .collect();
    let job = SubmitJob {
        kind: kind.to_string(),
        ..Default::default()
    };
    let mut done = 0usize;
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut pending_batches = batches.into_iter();
    loop {
        while in_flight.len() < 4 {
            let Some(size) = pending_batches.next() else {
                break;
            };
            let jobs = vec![job.clone(); size];
            let admin = admin.clone();
            in_flight.push(async move { admin.submit_jobs(&jobs).await.map(|jobs| jobs.len()) });
        }
        match futures::StreamExt::next(&mut in_flight).await {
            Some(result) => {
                done += result.context("submit a batch of jobs")?;
                if done % 100_000 == 0 {
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

async fn burn_down(base_url: &str, args: &Args) -> anyhow::Result<f64> {
    eprintln!("burn-down: preloading {} jobs", args.jobs);
    let admin = admin(base_url).await?;
    preload(&admin, "noop", args.jobs).await?;
    let completed = Arc::new(AtomicU64::new(0));
    let mut runners = Vec::new();
    for index in 0..args.runners {
        runners.push(register(&admin, base_url, format!("bench-{index}")).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for runner in runners {
        let completed = Arc::clone(&completed);
        let batch = args.batch;
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
                let items = jobs
                    .iter()
                    .map(|job| CompletionItem {
                        id: job.id,
                        epoch: Some(job.lease.epoch),
                        result: None,
                    })
                    .collect();
                let outcomes = runner.complete_jobs(&CompleteJobs { items }).await?;
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
                completed.fetch_add(ok as u64, Ordering::Relaxed);
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
    Ok(total as f64 / elapsed)
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
