//! Where the coordinator is and which token to use, found in this order: flags, environment
//! (`MUSTER_SERVER`, `MUSTER_TOKEN`), the config file, and for a local coordinator the admin
//! token file it wrote into its data directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use muster_client::{ClientTls, MusterClient};
use serde::Deserialize;

pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// How to reach the coordinator (every user command takes these).
#[derive(Args, Debug, Clone)]
pub(crate) struct ConnectArgs {
    /// Coordinator URL [env: MUSTER_SERVER] [default: http://127.0.0.1:7070]
    #[arg(long, global = true)]
    server: Option<String>,
    /// Admin or user token (muster_user_...) [env: MUSTER_TOKEN]; otherwise the config file's,
    /// or the local coordinator's admin.token file
    #[arg(long, global = true)]
    token: Option<String>,
    /// For an https:// server whose certificate comes from a private authority: trust that
    /// authority's certificate (PEM) instead of the system's [env: MUSTER_CA_CERT]
    #[arg(long = "ca-cert", value_name = "PATH", global = true)]
    ca_cert: Option<PathBuf>,
    /// Config file with `server = "..."`, `token = "..."` and `ca_cert = "PATH"`
    /// [env: MUSTER_CONFIG]
    /// [default: ~/.config/muster/config.toml]
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory of a local coordinator, whose admin.token is the last resort
    /// [env: MUSTER_DATA_DIR] [default: ./.muster]
    #[arg(long = "local-data-dir", global = true)]
    local_data_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    server: Option<String>,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

fn config_file_path(args: &ConnectArgs) -> Option<(PathBuf, bool)> {
    if let Some(path) = &args.config {
        return Some((path.clone(), true));
    }
    if let Some(path) = env("MUSTER_CONFIG") {
        return Some((PathBuf::from(path), true));
    }
    let base = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some((base.join("muster").join("config.toml"), false))
}

fn read_config_file(args: &ConnectArgs) -> anyhow::Result<ConfigFile> {
    let Some((path, named)) = config_file_path(args) else {
        return Ok(ConfigFile::default());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            toml::from_str(&text).with_context(|| format!("read config file {}", path.display()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && !named => {
            Ok(ConfigFile::default())
        }
        Err(error) => Err(error).with_context(|| format!("read config file {}", path.display())),
    }
}

impl ConnectArgs {
    /// The server URL, admin token and trusted authorities, resolved.
    pub(crate) fn resolve(&self) -> anyhow::Result<(String, String, ClientTls)> {
        let file = read_config_file(self)?;
        let tls = match self
            .ca_cert
            .clone()
            .or_else(|| env("MUSTER_CA_CERT").map(PathBuf::from))
            .or(file.ca_cert)
        {
            Some(path) => ClientTls::from_authority_file(&path)
                .context("load the certificate authority (--ca-cert)")?,
            None => ClientTls::system(),
        };
        let server = self
            .server
            .clone()
            .or_else(|| env("MUSTER_SERVER"))
            .or(file.server)
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        let token = match self
            .token
            .clone()
            .or_else(|| env("MUSTER_TOKEN"))
            .or(file.token)
        {
            Some(token) => token,
            None => {
                let data_dir = self
                    .local_data_dir
                    .clone()
                    .or_else(|| env("MUSTER_DATA_DIR").map(PathBuf::from))
                    .unwrap_or_else(|| PathBuf::from(muster_server::config::DEFAULT_DATA_DIR));
                let path = data_dir.join("admin.token");
                match std::fs::read_to_string(&path) {
                    Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
                    _ => bail!(
                        "no token: pass --token, set MUSTER_TOKEN, put `token = \"...\"` in the config file, \
                         or run beside a local coordinator's data directory ({} not found)",
                        path.display()
                    ),
                }
            }
        };
        Ok((server, token, tls))
    }

    pub(crate) fn client(&self) -> anyhow::Result<MusterClient> {
        let (server, token, tls) = self.resolve()?;
        MusterClient::with_tls(&server, &token, &tls).context("set up the client")
    }
}
