//! `muster runner`: the runner daemon, configured from flags, environment and a config file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use muster_client::ClientTls;
use muster_runner::exec::{DEFAULT_KILL_GRACE, ExecRunner};
use muster_runner::{DaemonConfig, HttpTransport, StopSignals};
use muster_runner_sdk::Runner;
use serde::Deserialize;

/// `muster runner [FLAGS]` runs the daemon; `muster runner keygen PATH` makes a key.
#[derive(Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct RunnerCommand {
    #[command(subcommand)]
    pub(crate) action: Option<RunnerAction>,
    #[command(flatten)]
    pub(crate) args: RunnerArgs,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub(crate) enum RunnerAction {
    /// Write a new Ed25519 private key (PEM PKCS#8, mode 0600) and print its fingerprint and
    /// public key, for `muster runners keys add`. The key never leaves this machine.
    ///
    ///   muster runner keygen /etc/muster/runner.pem
    Keygen(crate::keys::KeygenArgs),
}

#[derive(Args, Debug, Clone)]
pub(crate) struct RunnerArgs {
    /// Coordinator URL [env: MUSTER_SERVER] [default: http://127.0.0.1:7070]
    #[arg(long)]
    server: Option<String>,
    /// This runner's token, from `muster runners create` [env: MUSTER_RUNNER_TOKEN]
    #[arg(long)]
    token: Option<String>,
    /// For an https:// server whose certificate comes from a private authority: trust that
    /// authority's certificate (PEM) instead of the system's [env: MUSTER_CA_CERT]
    #[arg(long = "ca-cert", value_name = "PATH")]
    ca_cert: Option<PathBuf>,
    /// A TOML file with any of: server, token, ca_cert, exec, labels, tags, resources, concurrency,
    /// drain_timeout_s, work_dir [env: MUSTER_RUNNER_CONFIG]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Host the built-in `exec` runner, which runs any command a submitter sends. Only turn this
    /// on for runners whose submitters you trust with a shell on this machine.
    #[arg(long)]
    exec: bool,
    /// A label this runner declares, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// A tag this runner declares (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// A resource amount, NAME=AMOUNT (repeatable), e.g. vram_gb=24; cpus and memory_gb are
    /// detected unless given.
    #[arg(long = "resource", value_name = "NAME=AMOUNT")]
    resources: Vec<String>,
    /// Jobs run at once [default: 1].
    #[arg(long)]
    concurrency: Option<u32>,
    /// On SIGTERM/SIGINT, how long to let running jobs finish before cancelling them [default: 300].
    #[arg(long = "drain-timeout", value_name = "SECONDS")]
    drain_timeout_s: Option<u64>,
    /// Where job output directories are made [default: the system temp dir].
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunnerFile {
    server: Option<String>,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
    exec: Option<bool>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    resources: BTreeMap<String, f64>,
    concurrency: Option<u32>,
    drain_timeout_s: Option<u64>,
    work_dir: Option<PathBuf>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// How to reach the coordinator.
pub(crate) struct Connection {
    pub(crate) server: String,
    pub(crate) token: String,
    pub(crate) tls: ClientTls,
}

impl Connection {
    pub(crate) fn transport(&self) -> anyhow::Result<Arc<HttpTransport>> {
        let transport = HttpTransport::new(&self.server, &self.token, &self.tls)
            .context("set up the runner client")?;
        Ok(Arc::new(transport))
    }
}

/// What `muster runner` was asked to be.
struct Resolved {
    connection: Connection,
    config: DaemonConfig,
    exec: bool,
}

/// Flags win over the environment, which wins over the file.
fn resolve(args: RunnerArgs) -> anyhow::Result<Resolved> {
    let file_path = args
        .config
        .clone()
        .or_else(|| env("MUSTER_RUNNER_CONFIG").map(PathBuf::from));
    let file: RunnerFile = match &file_path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read runner config {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("parse runner config {}", path.display()))?
        }
        None => RunnerFile::default(),
    };
    let server = args
        .server
        .or_else(|| env("MUSTER_SERVER"))
        .or(file.server)
        .unwrap_or_else(|| crate::connect::DEFAULT_SERVER.to_string());
    let Some(token) = args
        .token
        .or_else(|| env("MUSTER_RUNNER_TOKEN"))
        .or(file.token)
    else {
        bail!(
            "no runner token: pass --token or set MUSTER_RUNNER_TOKEN (create one with `muster runners create NAME`)"
        );
    };
    let tls = match args
        .ca_cert
        .or_else(|| env("MUSTER_CA_CERT").map(PathBuf::from))
        .or(file.ca_cert)
    {
        Some(path) => muster_client::ClientTls::from_authority_file(&path)
            .context("load the certificate authority (--ca-cert)")?,
        None => muster_client::ClientTls::system(),
    };
    let mut labels = file.labels;
    for pair in &args.labels {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--label '{pair}' is not KEY=VALUE")
        };
        labels.insert(key.to_string(), value.to_string());
    }
    let mut resources = muster_runner::detect_resources();
    resources.extend(file.resources);
    for pair in &args.resources {
        let Some((name, amount)) = pair.split_once('=') else {
            bail!("--resource '{pair}' is not NAME=AMOUNT")
        };
        let amount: f64 = amount
            .parse()
            .with_context(|| format!("--resource '{pair}': the amount is not a number"))?;
        resources.insert(name.to_string(), amount);
    }
    let mut tags = file.tags;
    tags.extend(args.tags);
    let concurrency = args.concurrency.or(file.concurrency).unwrap_or(1);
    if concurrency == 0 || concurrency > 1000 {
        bail!("--concurrency must be between 1 and 1000");
    }
    let work_dir = args
        .work_dir
        .or(file.work_dir)
        .unwrap_or_else(|| std::env::temp_dir().join("muster-runner"));
    let config = DaemonConfig {
        labels,
        tags,
        resources,
        concurrency,
        drain_timeout: Duration::from_secs(
            args.drain_timeout_s.or(file.drain_timeout_s).unwrap_or(300),
        ),
        hostname: hostname(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        work_dir,
    };
    Ok(Resolved {
        connection: Connection { server, token, tls },
        config,
        exec: args.exec || file.exec.unwrap_or(false),
    })
}

pub(crate) fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| env("HOSTNAME"))
}

/// The runners a runner process hosts; `exec`'s output directories go under `work_dir`.
pub(crate) fn runners(exec: bool, work_dir: &std::path::Path) -> Vec<Arc<dyn Runner>> {
    let mut runners: Vec<Arc<dyn Runner>> = Vec::new();
    if exec {
        runners.push(Arc::new(ExecRunner::new(
            work_dir.to_path_buf(),
            DEFAULT_KILL_GRACE,
        )));
    }
    runners
}

pub(crate) fn run(args: RunnerArgs) -> anyhow::Result<()> {
    let resolved = resolve(args)?;
    let runners = runners(resolved.exec, &resolved.config.work_dir);
    if runners.is_empty() {
        bail!(
            "this runner hosts no job kinds: pass --exec to run commands (or embed muster-runner with your own runners)"
        );
    }
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    runtime.block_on(async move {
        let transport = resolved.connection.transport()?;
        let stop = StopSignals::default();
        tokio::spawn(stop_on_signals(stop.clone()));
        muster_runner::run(transport, resolved.config, runners, stop).await
    })
}

/// First SIGINT/SIGTERM drains, a second one stops at once.
pub(crate) async fn stop_on_signals(stop: StopSignals) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("failed to install signal handlers; the runner cannot drain on signals");
        return;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    crate::output::note!(
        "draining: no new jobs; running jobs may finish (signal again to stop now)"
    );
    stop.drain.cancel();
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    crate::output::note!("stopping now: cancelling running jobs");
    stop.abort.cancel();
}
