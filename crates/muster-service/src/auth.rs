//! Who is calling: the bootstrap admin (one token, from the environment or the data directory)
//! or a runner (a token whose SHA-256 the store keeps). Plaintext tokens are never stored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use base64::Engine;
use muster_core::{Principal, RUNNER_TOKEN_PREFIX, RunnerId};
use muster_store::Store;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::ServiceError;

/// How long a runner token stays trusted without asking the store again. A deleted runner's
/// token is forgotten at once by the coordinator that deleted it.
const RUNNER_TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);

pub(crate) struct Auth {
    admin_token_hash: [u8; 32],
    runner_tokens: RwLock<HashMap<[u8; 32], (RunnerId, Instant)>>,
}

/// SHA-256 of a token. Tokens carry 256 random bits, so a fast hash is enough: there is nothing
/// to brute-force.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn random_token_text() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A new runner token: the prefix and 43 URL-safe characters.
pub(crate) fn new_runner_token() -> String {
    format!("{RUNNER_TOKEN_PREFIX}{}", random_token_text())
}

/// The admin token: the configured one, or the one in `<data-dir>/admin.token`, made (mode
/// 0600) on first start. Answers the token and the file it lives in, when it does.
pub fn load_or_create_admin_token(
    configured: Option<&str>,
    data_dir: &Path,
) -> anyhow::Result<(String, Option<PathBuf>)> {
    use anyhow::Context;
    if let Some(token) = configured {
        return Ok((token.to_string(), None));
    }
    let path = data_dir.join("admin.token");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok((text.trim().to_string(), Some(path))),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("read admin token {}", path.display()));
        }
    }
    muster_store::files::create_private_directory(data_dir)
        .with_context(|| format!("create data directory {}", data_dir.display()))?;
    let token = format!("muster_admin_{}", random_token_text());
    write_private_file(&path, &token)
        .with_context(|| format!("write admin token {}", path.display()))?;
    Ok((token, Some(path)))
}

fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("token.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

impl Auth {
    pub(crate) fn new(admin_token: &str) -> Auth {
        Auth {
            admin_token_hash: hash_token(admin_token),
            runner_tokens: RwLock::new(HashMap::new()),
        }
    }

    /// The principal holding `token`; `unauthorized` when the token is unknown or revoked.
    pub(crate) async fn identify(
        &self,
        token: &str,
        store: &dyn Store,
    ) -> Result<Principal, ServiceError> {
        let unknown = || ServiceError::unauthorized("unknown or revoked token");
        if token.is_empty() {
            return Err(unknown());
        }
        let hash = hash_token(token);
        if hash == self.admin_token_hash {
            return Ok(Principal::BootstrapAdmin);
        }
        if !token.starts_with(RUNNER_TOKEN_PREFIX) {
            return Err(unknown());
        }
        let cached = self
            .runner_tokens
            .read()
            .ok()
            .and_then(|cache| cache.get(&hash).copied())
            .filter(|(_, since)| since.elapsed() < RUNNER_TOKEN_CACHE_TTL);
        if let Some((runner, _)) = cached {
            return Ok(Principal::Runner(runner));
        }
        let runner = store
            .runner_by_token_hash(hash)
            .await?
            .ok_or_else(unknown)?;
        if let Ok(mut cache) = self.runner_tokens.write() {
            cache.insert(hash, (runner, Instant::now()));
        }
        Ok(Principal::Runner(runner))
    }

    /// Stop trusting any cached token of `runner`.
    pub(crate) fn forget_runner(&self, runner: RunnerId) {
        if let Ok(mut cache) = self.runner_tokens.write() {
            cache.retain(|_, (cached, _)| *cached != runner);
        }
    }
}
