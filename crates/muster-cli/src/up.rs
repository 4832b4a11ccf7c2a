//! `muster up`: a coordinator and one local runner (hosting `exec`) in one process.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use muster_api::{CreateRunner, RunnerHeartbeat};
use muster_client::{MusterClient, RunnerClient};
use muster_runner::{DaemonConfig, StopSignals};
use tokio_util::sync::CancellationToken;

use crate::{ServerArgs, prepare_server, server_config};

#[derive(Args, Debug, Clone)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Jobs the local runner runs at once.
    #[arg(long, default_value_t = 4)]
    concurrency: u32,
}

/// Where the admin token is, for people reading the startup lines.
pub(crate) fn token_hint(file: Option<&Path>) -> String {
    match file {
        Some(path) => format!("in {}", path.display()),
        None => "from MUSTER_ADMIN_TOKEN".to_string(),
    }
}

const LOCAL_RUNNER_TOKEN_FILE: &str = "local-runner.token";

/// The local runner's token: the one saved in the data directory while the coordinator still
/// accepts it, otherwise a newly registered runner's (so restarts do not pile up runners).
async fn local_runner_token(
    url: &str,
    admin_token: &str,
    data_dir: &Path,
) -> anyhow::Result<String> {
    let path = data_dir.join(LOCAL_RUNNER_TOKEN_FILE);
    if let Ok(saved) = std::fs::read_to_string(&path) {
        let saved = saved.trim().to_string();
        if let Ok(client) = RunnerClient::new(url, &saved) {
            match client.heartbeat(&RunnerHeartbeat::default()).await {
                Ok(_) => return Ok(saved),
                Err(error) if error.is_refused_token() => {}
                Err(error) => return Err(error).context("check the saved local runner token"),
            }
        }
    }
    let admin = MusterClient::new(url, admin_token)?;
    let name = format!(
        "local-{}",
        crate::runner::hostname().unwrap_or_else(|| "runner".into())
    );
    let created = admin
        .create_runner(&CreateRunner {
            name,
            ..Default::default()
        })
        .await
        .context("register the local runner")?;
    write_private(&path, &created.token).with_context(|| format!("save {}", path.display()))?;
    Ok(created.token)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

pub(crate) fn run(args: UpArgs) -> anyhow::Result<()> {
    if args.server.tls_cert.is_some() || args.server.tls_key.is_some() {
        anyhow::bail!(
            "muster up serves plain HTTP for trying muster on one machine; serve HTTPS with `muster server --tls-cert PATH --tls-key PATH` and start runners with `muster runner --ca-cert PATH` when the certificate's authority is private"
        );
    }
    let config = server_config(args.server)?;
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    runtime.block_on(async move {
        let prepared = prepare_server(config).await?;
        let address = prepared
            .listener
            .local_addr()
            .context("read the listening address")?;
        let url = format!("http://{address}");
        let data_dir = prepared.config.data_dir.clone();
        let admin_token = prepared.admin_token.clone();
        let token_hint = token_hint(prepared.admin_token_file.as_deref());
        let server_stop = CancellationToken::new();
        let server = {
            let stop = server_stop.clone();
            let admin_token = admin_token.clone();
            tokio::spawn(async move {
                muster_server::run(
                    prepared.config,
                    prepared.store,
                    &admin_token,
                    prepared.listener,
                    stop,
                )
                .await
            })
        };
        let token = local_runner_token(&url, &admin_token, &data_dir).await?;
        crate::output::note!("muster is up at {url}");
        crate::output::note!("  dashboard: {url}/ (sign in with the admin token)");
        // The token itself only for a person at a terminal: standard error sent to a file or a
        // log collector gets where it is instead.
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            crate::output::note!("  admin token: {admin_token} (kept {token_hint})");
        } else {
            crate::output::note!("  admin token: {token_hint}");
        }
        crate::output::note!(
            "  a local runner runs `exec` jobs ({} at a time)",
            args.concurrency
        );
        crate::output::note!("  try: muster job submit -- echo hello");
        let transport =
            muster_runner::HttpTransport::new(&url, &token, &muster_client::ClientTls::system())
                .context("set up the runner client")
                .map(std::sync::Arc::new);
        let work_dir = data_dir.join("work");
        let daemon = DaemonConfig {
            labels: Default::default(),
            tags: Vec::new(),
            resources: muster_runner::detect_resources(),
            concurrency: args.concurrency.max(1),
            drain_timeout: Duration::from_secs(30),
            hostname: crate::runner::hostname(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            work_dir: work_dir.clone(),
            approval_hint: None,
        };
        let stop = StopSignals::default();
        tokio::spawn(crate::runner::stop_on_signals(stop.clone()));
        let runners = crate::runner::runners(true, &work_dir);
        let ran = match transport {
            Ok(transport) => muster_runner::run(transport, daemon, runners, stop).await,
            Err(error) => Err(error),
        };
        server_stop.cancel();
        let served = server.await.context("join the coordinator")?;
        ran.and(served)
    })
}
