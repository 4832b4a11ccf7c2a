//! `muster runner`: the runner daemon, configured from flags, environment and a config file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use muster_client::{ClientTls, Registrar, RunnerDescription};
use muster_core::identity::RunnerSigningKey;
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
    #[arg(long, conflicts_with = "key")]
    token: Option<String>,
    /// Register with this Ed25519 key (PEM PKCS#8, from `muster runner keygen`) instead of a
    /// token: the runner signs its registration, waits while an operator approves it (under
    /// `--enrollment approval`), renews its short-lived token in the background, and signs
    /// every result. The token is kept in memory only [env: MUSTER_RUNNER_KEY]
    #[arg(long, value_name = "PATH")]
    key: Option<PathBuf>,
    /// The name this runner registers under with --key [env: MUSTER_RUNNER_NAME] [default: the
    /// hostname]
    #[arg(long)]
    name: Option<String>,
    /// For an https:// server whose certificate comes from a private authority: trust that
    /// authority's certificate (PEM) instead of the system's [env: MUSTER_CA_CERT]
    #[arg(long = "ca-cert", value_name = "PATH")]
    ca_cert: Option<PathBuf>,
    /// A TOML file with any of: server, token, key, name, ca_cert, exec, labels, tags, resources, concurrency,
    /// drain_timeout_s, work_dir, transport [env: MUSTER_RUNNER_CONFIG]
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
    /// How to reach the coordinator [env: MUSTER_RUNNER_TRANSPORT] [default: http]. `http`
    /// long-polls the HTTP API. `grpc` attaches one gRPC stream on the same address, on which
    /// the coordinator pushes jobs and cancels as they happen (artifacts still go over HTTP);
    /// it takes an http:// address and a --token for now.
    #[arg(long, value_enum)]
    transport: Option<TransportChoice>,
}

/// The line a runner speaks to the coordinator over.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TransportChoice {
    #[default]
    Http,
    Grpc,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunnerFile {
    server: Option<String>,
    token: Option<String>,
    key: Option<PathBuf>,
    name: Option<String>,
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
    transport: Option<TransportChoice>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// Who this runner is to the coordinator.
pub(crate) enum Identity {
    /// A long-lived token an operator created.
    Token(String),
    /// A key it registers with (and renews its token with).
    Key {
        key: Arc<RunnerSigningKey>,
        name: String,
    },
}

/// How to reach the coordinator.
pub(crate) struct Connection {
    pub(crate) server: String,
    pub(crate) identity: Identity,
    pub(crate) tls: ClientTls,
}

impl Connection {
    /// The transport with a token; with a key, `None` (it must register first).
    pub(crate) fn token_transport(&self) -> anyhow::Result<Option<Arc<HttpTransport>>> {
        match &self.identity {
            Identity::Token(token) => {
                let transport = HttpTransport::new(&self.server, token, &self.tls)
                    .context("set up the runner client")?;
                Ok(Some(Arc::new(transport)))
            }
            Identity::Key { .. } => Ok(None),
        }
    }
}

/// What `muster runner` was asked to be.
struct Resolved {
    connection: Connection,
    config: DaemonConfig,
    exec: bool,
    transport: TransportChoice,
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
    let token = args
        .token
        .or_else(|| env("MUSTER_RUNNER_TOKEN"))
        .or(file.token);
    let key = args
        .key
        .or_else(|| env("MUSTER_RUNNER_KEY").map(PathBuf::from))
        .or(file.key);
    let identity = match (token, key) {
        (Some(_), Some(_)) => bail!(
            "both a token and a key were given: a runner joins either with a token (muster runners create) or with its key (muster runner keygen), not both"
        ),
        (Some(token), None) => Identity::Token(token),
        (None, Some(path)) => {
            let pem = std::fs::read_to_string(&path)
                .with_context(|| format!("read the runner key {}", path.display()))?;
            let key = RunnerSigningKey::from_pkcs8_pem(&pem)
                .with_context(|| format!("read the runner key {}", path.display()))?;
            let name = args
                .name
                .or_else(|| env("MUSTER_RUNNER_NAME"))
                .or(file.name)
                .or_else(hostname)
                .unwrap_or_else(|| "runner".to_string());
            Identity::Key {
                key: Arc::new(key),
                name,
            }
        }
        (None, None) => bail!(
            "no runner identity: pass --key PATH (a key from `muster runner keygen`) or --token (from `muster runners create NAME`), or set MUSTER_RUNNER_KEY or MUSTER_RUNNER_TOKEN"
        ),
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
    let transport = match args.transport {
        Some(choice) => choice,
        None => match env("MUSTER_RUNNER_TRANSPORT") {
            Some(text) => match text.trim().to_ascii_lowercase().as_str() {
                "http" => TransportChoice::Http,
                "grpc" => TransportChoice::Grpc,
                other => bail!(
                    "MUSTER_RUNNER_TRANSPORT='{other}' is not a transport; write http or grpc"
                ),
            },
            None => file.transport.unwrap_or_default(),
        },
    };
    if transport == TransportChoice::Grpc && matches!(identity, Identity::Key { .. }) {
        bail!(
            "--transport grpc runs with a --token for now; a runner that registers with its key uses --transport http"
        );
    }
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
        approval_hint: None,
    };
    Ok(Resolved {
        connection: Connection {
            server,
            identity,
            tls,
        },
        config,
        exec: args.exec || file.exec.unwrap_or(false),
        transport,
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
        let stop = StopSignals::default();
        tokio::spawn(stop_on_signals(stop.clone()));
        let mut config = resolved.config;
        if resolved.transport == TransportChoice::Grpc
            && let Identity::Token(token) = &resolved.connection.identity
        {
            let http = HttpTransport::new(
                &resolved.connection.server,
                token,
                &resolved.connection.tls,
            )
            .context("set up the runner client")?;
            let transport =
                muster_runner::GrpcTransport::new(http, &resolved.connection.server, token)
                    .context("set up the gRPC runner transport")?;
            return muster_runner::run(Arc::new(transport), config, runners, stop).await;
        }
        if let Some(transport) = resolved.connection.token_transport()? {
            return muster_runner::run(transport, config, runners, stop).await;
        }
        let Identity::Key { key, name } = &resolved.connection.identity else {
            bail!("a runner without a token has a key");
        };
        let mut kinds: Vec<String> = runners
            .iter()
            .map(|runner| runner.capability().to_string())
            .collect();
        kinds.sort();
        kinds.dedup();
        let description = RunnerDescription {
            name: name.clone(),
            hostname: config.hostname.clone().unwrap_or_else(|| name.clone()),
            kinds,
            labels: config.labels.clone(),
            tags: config.tags.clone(),
            resources: config.resources.clone(),
            organization_id: None,
        };
        let registrar = Registrar::new(&resolved.connection.server, &resolved.connection.tls)
            .context("set up the registration client")?;
        let Some(registered) =
            crate::enroll::register_until_answered(&registrar, key, &description, &stop).await?
        else {
            return Ok(());
        };
        let fingerprint = key.public_key().fingerprint();
        if registered.runner.enrollment == muster_client::api::RunnerEnrollment::Pending {
            let hint = format!(
                "waiting for approval of key {fingerprint}: an operator runs `muster runners approve {}`",
                registered.runner.id
            );
            crate::output::note!("{hint}");
            config.approval_hint = Some(hint);
        }
        let transport = HttpTransport::new(
            &resolved.connection.server,
            &registered.token,
            &resolved.connection.tls,
        )
        .context("set up the runner client")?
        .signing_results(Arc::clone(key), registered.runner.id.to_string());
        let expired = Arc::new(tokio::sync::Notify::new());
        let transport = Arc::new(transport.renewed_by(Arc::clone(&expired)));
        let renewal = tokio::spawn(crate::enroll::renew_tokens(
            registrar,
            Arc::clone(key),
            description,
            Arc::clone(&transport),
            registered.token_expires_at,
            expired,
        ));
        let outcome = muster_runner::run(transport, config, runners, stop).await;
        renewal.abort();
        outcome
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
