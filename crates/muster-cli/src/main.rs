//! `muster`: one binary for the coordinator and the tools around it.

mod connect;
mod enroll;
mod identity;
mod jobs;
mod keys;
mod kinds;
mod orgs;
mod output;
mod runner;
mod runners;
mod tokens;
mod up;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use muster_server::{RawServerConfig, ServerConfig};
use tokio_util::sync::CancellationToken;

/// muster: a control plane for fleets of runners.
#[derive(Parser)]
#[command(name = "muster", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator: the job queue, the runner registry and the HTTP API.
    ///
    /// With no flags it listens on 127.0.0.1:7070 and keeps everything in ./.muster (an SQLite
    /// file and the admin token). Example:
    ///
    ///   muster server --listen 0.0.0.0:7070 --data-dir /var/lib/muster
    #[command(verbatim_doc_comment)]
    Server(ServerArgs),
    /// Run the coordinator and one local runner (hosting `exec`) in one process: the quickest
    /// way to try muster. Takes the same flags as `muster server`.
    ///
    ///   muster up
    ///   muster job submit -- echo hello
    #[command(verbatim_doc_comment)]
    Up(up::UpArgs),
    /// Run a runner: claim jobs of the kinds it hosts and run them; `muster runner keygen PATH`
    /// makes a key for it.
    ///
    ///   muster runner --server http://coordinator:7070 --token muster_runner_... --exec
    ///   muster runner keygen /etc/muster/runner.pem
    #[command(verbatim_doc_comment)]
    Runner(runner::RunnerCommand),
    /// Submit and watch jobs.
    #[command(
        after_help = "Examples:\n  muster job submit -- echo hello\n  muster job wait $(muster job submit -- make test)\n  muster job logs -f JOB_ID\n  muster job list --state failed --json"
    )]
    Job {
        #[command(flatten)]
        connect: connect::ConnectArgs,
        #[command(subcommand)]
        command: jobs::JobCommand,
    },
    /// Register, list and delete runners.
    #[command(
        after_help = "Examples:\n  muster runners create gpu-box-1 --label gpu=a100\n  muster runners list --json\n  muster runners delete RUNNER_ID\n  muster runners keys add PUBLIC_KEY --note gpu-box-1"
    )]
    Runners {
        #[command(flatten)]
        connect: connect::ConnectArgs,
        #[command(subcommand)]
        command: runners::RunnersCommand,
    },
    /// The workload registry: what runners host (containers, agents, workers) and its status.
    #[command(
        after_help = "Examples:\n  muster workloads list --thread thread-42\n  muster workloads list --status running --json\n  muster workloads show wl-1"
    )]
    Workloads {
        #[command(flatten)]
        connect: connect::ConnectArgs,
        #[command(subcommand)]
        command: workloads::WorkloadsCommand,
    },
    /// Result rules per job kind: a JSON Schema results must meet, signed results only.
    #[command(
        after_help = "Examples:\n  muster kinds set bench --schema score.schema.json\n  muster kinds list\n  muster kinds delete bench"
    )]
    Kinds {
        #[command(flatten)]
        connect: connect::ConnectArgs,
        #[command(subcommand)]
        command: kinds::KindsCommand,
    },
    /// Organizations, the tenants of a coordinator (bootstrap admin token only).
    #[command(
        after_help = "Examples:\n  muster orgs create \"Acme Corp\"\n  muster orgs list\n  muster orgs show acme-corp --json\n  muster orgs delete acme-corp"
    )]
    Orgs {
        #[command(flatten)]
        connect: connect::ConnectArgs,
        #[command(subcommand)]
        command: orgs::OrgsCommand,
    },
    /// User tokens with roles (viewer, submitter, operator, admin), of one organization or all.
    #[command(
        after_help = "Examples:\n  muster tokens create alice --role viewer --org acme-corp\n  muster tokens create ci --role submitter --org acme-corp --expires-in 90d\n  muster tokens list --org acme-corp\n  muster tokens revoke 0193...-...\n\nUse a token with --token or MUSTER_TOKEN; `muster whoami` says what it may do."
    )]
    Tokens {
        #[command(flatten)]
        connect: connect::ConnectArgs,
        #[command(subcommand)]
        command: tokens::TokensCommand,
    },
    /// Who the token in use is: bootstrap admin or user token, its role and organization.
    #[command(
        after_help = "Examples:\n  muster whoami\n  MUSTER_TOKEN=muster_user_... muster whoami --json"
    )]
    Whoami {
        #[command(flatten)]
        connect: connect::ConnectArgs,
        /// Print the answer as the API returns it.
        #[arg(long)]
        json: bool,
    },
    /// The log of security events: runner keys added and removed, and more.
    #[command(
        after_help = "Examples:\n  muster audit\n  muster audit --action runner_key.removed --json"
    )]
    Audit {
        #[command(flatten)]
        connect: connect::ConnectArgs,
        #[command(flatten)]
        args: identity::AuditArgs,
    },
}

#[derive(Args, Clone, Debug)]
pub(crate) struct ServerArgs {
    /// Address to listen on (HOST:PORT); port 0 picks a free one.
    #[arg(long, env = "MUSTER_LISTEN", default_value = muster_server::config::DEFAULT_LISTEN)]
    pub(crate) listen: String,
    /// Directory for the database file and the generated admin token.
    #[arg(long, env = "MUSTER_DATA_DIR", default_value = muster_server::config::DEFAULT_DATA_DIR)]
    pub(crate) data_dir: PathBuf,
    /// Store URL; omit for the embedded SQLite file in the data directory (`sqlite:PATH` names
    /// another file).
    ///
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` stores everything in PostgreSQL, where
    /// several coordinators can share it; each coordinator then needs the same
    /// `MUSTER_ADMIN_TOKEN`.
    #[arg(long, env = "MUSTER_DATABASE_URL")]
    pub(crate) database: Option<String>,
    /// PostgreSQL connections this coordinator opens at most for jobs; besides them it opens one
    /// that listens for wake-ups and up to 4 for artifact transfers.
    #[arg(long, env = "MUSTER_DATABASE_MAX_CONNECTIONS")]
    pub(crate) database_max_connections: Option<usize>,
    /// PostgreSQL only: how long to keep trying at start while the database cannot be reached
    /// (refused connections, a server still starting), logging each try; `0` fails at once
    /// [default: 60s]. A refused password or a missing database fails at once regardless.
    #[arg(long, env = "MUSTER_DATABASE_WAIT", value_name = "DURATION")]
    pub(crate) database_wait: Option<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "MUSTER_MAX_BODY_BYTES")]
    pub(crate) max_body_bytes: Option<usize>,
    /// Largest accepted artifact upload, in bytes [default: 1 GiB].
    #[arg(long, env = "MUSTER_MAX_ARTIFACT_BYTES")]
    pub(crate) max_artifact_bytes: Option<u64>,
    /// Log bytes kept per job; later lines are dropped after one truncation notice.
    #[arg(long, env = "MUSTER_LOG_CAP_BYTES")]
    pub(crate) log_cap_bytes: Option<u64>,
    /// How often runners are asked to heartbeat; a runner silent for 3 intervals is offline.
    #[arg(long, env = "MUSTER_HEARTBEAT_INTERVAL_MS")]
    pub(crate) heartbeat_interval_ms: Option<u64>,
    /// How long a cancelled running job waits for its runner before it ends `cancelled` anyway.
    #[arg(long, env = "MUSTER_CANCEL_GRACE_S")]
    pub(crate) cancel_grace_s: Option<u64>,
    /// How often expired leases and timeouts are looked for.
    #[arg(long, env = "MUSTER_REAP_INTERVAL_MS")]
    pub(crate) reap_interval_ms: Option<u64>,
    /// How long finished jobs (completed, failed, cancelled) are kept, with their logs and DAGs,
    /// before they are deleted: a duration such as `30d`, `12h` or `90m`, at least `1m`, or
    /// `forever` to keep every job [default: 30d].
    ///
    /// Deleted jobs answer 404; the artifacts they named go once no job names them (see
    /// --retain-unused-artifacts).
    #[arg(long, env = "MUSTER_RETAIN_FINISHED_JOBS", value_name = "DURATION")]
    pub(crate) retain_finished_jobs: Option<String>,
    /// How long an artifact that no job names is kept after it was last uploaded or named on a
    /// job: a duration such as `24h` or `7d`, at least `1h`, or `forever` to keep every artifact
    /// [default: 24h].
    ///
    /// An artifact a job names (as an input or output) is never deleted while that job exists;
    /// once retention has deleted the job, its artifacts go after this long. Uploads meant as
    /// inputs must be named on a job within this time.
    #[arg(long, env = "MUSTER_RETAIN_UNUSED_ARTIFACTS", value_name = "DURATION")]
    pub(crate) retain_unused_artifacts: Option<String>,
    /// Artifact bytes one runner may have stored: what its uploads stored anew (re-uploads of
    /// stored bytes are free) until collected. A size such as `50GiB` or `500MB`, or
    /// `unlimited` [default: 50GiB].
    ///
    /// An upload that would pass it gets 507 artifact_quota_exceeded and stores nothing. Stops a
    /// runaway or compromised runner long before it fills a disk; raise it for runners whose
    /// jobs keep more (outputs count while a job names them).
    #[arg(long, env = "MUSTER_RUNNER_ARTIFACT_QUOTA_BYTES", value_name = "SIZE")]
    pub(crate) runner_artifact_quota_bytes: Option<String>,
    /// Artifacts one runner may have stored, counted like --runner-artifact-quota-bytes: a number
    /// or `unlimited` [default: 100000].
    #[arg(long, env = "MUSTER_RUNNER_ARTIFACT_QUOTA_COUNT", value_name = "COUNT")]
    pub(crate) runner_artifact_quota_count: Option<String>,
    /// Artifact bytes all uploaders together (runners and users) may have stored: a size or
    /// `unlimited` [default: unlimited; --disk-reserve guards the disk].
    #[arg(long, env = "MUSTER_ARTIFACT_QUOTA_BYTES", value_name = "SIZE")]
    pub(crate) artifact_quota_bytes: Option<String>,
    /// Artifacts all uploaders together may have stored: a number or `unlimited`
    /// [default: unlimited].
    #[arg(long, env = "MUSTER_ARTIFACT_QUOTA_COUNT", value_name = "COUNT")]
    pub(crate) artifact_quota_count: Option<String>,
    /// Room artifact uploads leave free on the file system of <data-dir>/blobs: a share of its
    /// size (`5%`) or a size (`20GiB`); `0` keeps none [default: 5%].
    ///
    /// An upload that would leave less free gets 507 insufficient_storage and stores nothing,
    /// so the database and logs beside it can still be written. Not used with PostgreSQL, whose
    /// artifacts live in the database.
    #[arg(long, env = "MUSTER_DISK_RESERVE", value_name = "SHARE_OR_SIZE")]
    pub(crate) disk_reserve: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM, the server's certificate first); needs
    /// --tls-key. The files are looked at every 30 s and a renewed pair is served without a
    /// restart.
    #[arg(
        long = "tls-cert",
        env = "MUSTER_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long = "tls-key",
        env = "MUSTER_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub(crate) tls_key: Option<PathBuf>,
    /// How long a client may take to send a request's head (request line and headers), from
    /// its first byte, or from connecting for a new connection; slower ones are disconnected
    /// [default: 10s].
    #[arg(long, env = "MUSTER_HEADER_READ_TIMEOUT", value_name = "DURATION")]
    pub(crate) header_read_timeout: Option<String>,
    /// How long a kept-alive connection may stay silent after an answer before it is closed
    /// [default: 60s]. Long polls and live log streams are requests in flight, not idle, and
    /// stay open as long as they are meant to.
    #[arg(long, env = "MUSTER_IDLE_TIMEOUT", value_name = "DURATION")]
    pub(crate) idle_timeout: Option<String>,
    /// How long a request body may take before --body-min-rate applies [default: 30s].
    #[arg(long, env = "MUSTER_BODY_READ_TIMEOUT", value_name = "DURATION")]
    pub(crate) body_read_timeout: Option<String>,
    /// Bytes a second a request body (an artifact upload, say) must average after
    /// --body-read-timeout; slower ones are answered 408 and disconnected [default: 1024].
    #[arg(long, env = "MUSTER_BODY_MIN_RATE", value_name = "BYTES_PER_SECOND")]
    pub(crate) body_min_rate: Option<u64>,
    /// Connections served at once [default: 16384], lowered at start to what the open-file
    /// limit allows. At the limit, the connection that has waited longest without a request is
    /// closed to make room for a new one.
    #[arg(long, env = "MUSTER_MAX_CONNECTIONS")]
    pub(crate) max_connections: Option<usize>,
    /// Failed authentications (unknown, revoked or expired tokens, no token) one address may
    /// have per minute [default: 100]; `0` turns throttling off.
    ///
    /// Past the limit, every request from that address needing a token, valid ones included,
    /// gets 429 too_many_requests with Retry-After until its minute ends, and one
    /// auth.throttled audit entry is written. IPv6 addresses count by their /64. Clients behind
    /// one NAT or proxy address share the limit: raise it for them rather than turn it off.
    #[arg(long, env = "MUSTER_AUTH_FAILURE_LIMIT", value_name = "N")]
    pub(crate) auth_failure_limit: Option<u32>,
    /// Who may register a runner by its key (`muster runner --key`) [default: allowlist].
    ///
    /// `allowlist`: only keys an operator put on the allowlist (`muster runners keys add`);
    /// others get 403 key_not_allowed. `approval`: an unknown key registers as pending, may only
    /// heartbeat, and waits for `muster runners approve ID` (or `reject`). `closed`: no
    /// registration at all; runners are created with `muster runners create` only.
    #[arg(long, env = "MUSTER_ENROLLMENT", value_name = "GATE", value_parser = ["allowlist", "approval", "closed"])]
    pub(crate) enrollment: Option<String>,
    /// How long a token of a runner that registered by its key works [default: 1h; 30s to
    /// 24h]. The runner renews it by registering again at 75 % of its life; the token it
    /// replaces works 5 more minutes at most. Runners created by an operator keep tokens that
    /// do not expire.
    #[arg(long, env = "MUSTER_RUNNER_TOKEN_TTL", value_name = "DURATION")]
    pub(crate) runner_token_ttl: Option<String>,
    /// How long a dashboard sign-in lasts [default: 12h; 1m to 30d]. A session never outlives
    /// the user token it was opened with, and revoking that token ends it at once.
    #[arg(long, env = "MUSTER_SESSION_TTL", value_name = "DURATION")]
    pub(crate) session_ttl: Option<String>,
    /// How long a runner's gRPC push stream lasts before the coordinator asks the runner to
    /// move to a new one [default: 30m, give or take a tenth; 2s to 24h]. Jobs and leases carry
    /// over untouched; keep it under the idle timeout of any proxy between runners and here.
    #[arg(long, env = "MUSTER_STREAM_LIFETIME", value_name = "DURATION")]
    pub(crate) stream_lifetime: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Kept to the end of `main`: dropping it writes out queued log lines (waiting briefly).
    let log_guard = muster_server::logging::init("info");
    let outcome = match cli.command {
        Command::Server(args) => run_server(args).map(|()| 0),
        Command::Up(args) => up::run(args).map(|()| 0),
        Command::Runner(command) => match command.action {
            Some(runner::RunnerAction::Keygen(args)) => keys::keygen(args).map(|()| 0),
            None => runner::run(command.args).map(|()| 0),
        },
        Command::Job { connect, command } => run_async(jobs::run(command, &connect)),
        Command::Runners { connect, command } => run_async(runners::run(command, &connect)),
        Command::Workloads { connect, command } => run_async(workloads::run(command, &connect)),
        Command::Kinds { connect, command } => run_async(kinds::run(command, &connect)),
        Command::Orgs { connect, command } => run_async(orgs::run(command, &connect)),
        Command::Tokens { connect, command } => run_async(tokens::run(command, &connect)),
        Command::Whoami { connect, json } => run_async(tokens::whoami(&connect, json)),
        Command::Audit { connect, args } => run_async(identity::run_audit(args, &connect)),
    };
    let code = match outcome {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            muster_server::logging::note_line(format_args!("error: {error:#}"));
            ExitCode::FAILURE
        }
    };
    drop(log_guard);
    code
}

/// Run a client command on a small runtime.
fn run_async(command: impl std::future::Future<Output = anyhow::Result<u8>>) -> anyhow::Result<u8> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?
        .block_on(command)
}

/// The checked server configuration from `muster server`/`muster up` flags.
pub(crate) fn server_config(args: ServerArgs) -> anyhow::Result<ServerConfig> {
    let raw = RawServerConfig {
        listen: Some(args.listen),
        data_dir: Some(args.data_dir),
        database: args.database,
        database_max_connections: args.database_max_connections,
        database_wait: args.database_wait,
        admin_token: std::env::var("MUSTER_ADMIN_TOKEN")
            .ok()
            .filter(|token| !token.trim().is_empty()),
        max_body_bytes: args.max_body_bytes,
        log_cap_bytes: args.log_cap_bytes,
        heartbeat_interval_ms: args.heartbeat_interval_ms,
        cancel_grace_s: args.cancel_grace_s,
        reap_interval_ms: args.reap_interval_ms,
        max_artifact_bytes: args.max_artifact_bytes,
        retain_finished_jobs: args.retain_finished_jobs,
        retain_unused_artifacts: args.retain_unused_artifacts,
        runner_artifact_quota_bytes: args.runner_artifact_quota_bytes,
        runner_artifact_quota_count: args.runner_artifact_quota_count,
        artifact_quota_bytes: args.artifact_quota_bytes,
        artifact_quota_count: args.artifact_quota_count,
        disk_reserve: args.disk_reserve,
        tls_certificate: args.tls_cert,
        tls_private_key: args.tls_key,
        header_read_timeout: args.header_read_timeout,
        idle_timeout: args.idle_timeout,
        body_read_timeout: args.body_read_timeout,
        body_min_rate: args.body_min_rate,
        max_connections: args.max_connections,
        auth_failure_limit: args.auth_failure_limit,
        enrollment: args.enrollment,
        runner_token_ttl: args.runner_token_ttl,
        session_ttl: args.session_ttl,
        stream_lifetime: args.stream_lifetime,
    };
    ServerConfig::from_raw(raw).context("check the configuration")
}

/// Everything a coordinator needs before it serves: its admin token, store and socket.
pub(crate) struct PreparedServer {
    pub(crate) config: ServerConfig,
    pub(crate) admin_token: String,
    /// Where the admin token is kept, when it did not come from the environment.
    pub(crate) admin_token_file: Option<std::path::PathBuf>,
    pub(crate) store: muster_server::SharedStore,
    pub(crate) listener: tokio::net::TcpListener,
}

pub(crate) async fn prepare_server(config: ServerConfig) -> anyhow::Result<PreparedServer> {
    match muster_server::raise_open_file_limit() {
        Ok((before, now)) if now > before => {
            tracing::info!(before, now, "raised the open-file limit to its hard limit")
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not read the open-file limit"),
    }
    // Checked before the store is opened, which may wait for a database: a wrong file should
    // not take a minute to be reported. The server loads the files again when it starts serving.
    if let Some(files) = &config.tls {
        muster_server::tls::load_certified_key(files).context("load the TLS certificate")?;
    }
    let (admin_token, token_file) =
        muster_server::load_or_create_admin_token(config.admin_token.as_deref(), &config.data_dir)?;
    let store = muster_server::open_store(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    Ok(PreparedServer {
        config,
        admin_token,
        admin_token_file: token_file,
        store,
        listener,
    })
}

fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let config = server_config(args)?;
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    runtime.block_on(async move {
        let prepared = prepare_server(config).await?;
        muster_server::logging::note_line(format_args!(
            "admin token: {}",
            crate::up::token_hint(prepared.admin_token_file.as_deref())
        ));
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        muster_server::run(
            prepared.config,
            prepared.store,
            &prepared.admin_token,
            prepared.listener,
            shutdown,
        )
        .await
    })
}

/// Cancel `shutdown` on SIGINT or SIGTERM: the server stops taking requests and finishes the
/// ones in flight.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        tracing::warn!("failed to install the SIGTERM handler; stop with SIGINT");
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping: finishing requests in flight");
    shutdown.cancel();
}
