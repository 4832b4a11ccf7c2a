//! Who is calling: the bootstrap admin (one token, from the environment or the data directory),
//! a user token (`muster_user_...`, a role in one organization or in all) or a runner (a token
//! whose SHA-256 the store keeps). Plaintext tokens are never stored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use muster_core::identity::RunnerPublicKey;
use muster_core::organization::{OrganizationId, OrganizationScope};
use muster_core::{
    Enrollment, ErrorCode, Principal, RUNNER_TOKEN_PREFIX, RunnerId, Timestamp, USER_TOKEN_PREFIX,
    UserPrincipal, UserTokenId,
};
use muster_store::Store;
use muster_store::{RunnerCredentials, SessionHolder, SessionRecord, UserTokenRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::ServiceError;

/// How long what the store said about a runner token (or a runner's binding) is trusted
/// without asking again. Changes made on this coordinator (deletion, revocation, approval)
/// forget the runner's entries at once; other coordinators sharing the store see them within
/// this time.
const RUNNER_CACHE_TTL: Duration = Duration::from_secs(5);

/// The most runner tokens and bindings remembered; past it the caches start over (a fleet is
/// far smaller, and a flood of unknown tokens is never cached).
const RUNNER_CACHE_CAPACITY: usize = 100_000;

/// What binds a runner's claims and results: the capabilities and kinds it may claim with and
/// the key its signatures verify against, as its registration recorded them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunnerBinding {
    pub(crate) bound_capabilities: Option<muster_core::Capabilities>,
    pub(crate) bound_kinds: Option<Vec<String>>,
    pub(crate) public_key: Option<RunnerPublicKey>,
}

/// How often a user token's `last_used_at` is written, at most, per token and coordinator:
/// often enough to tell an unused token from a used one, seldom enough that reading costs no
/// write per request.
const USER_TOKEN_TOUCH_INTERVAL: Duration = Duration::from_secs(60);

pub(crate) struct Auth {
    admin_token_hash: [u8; 32],
    user_token_touches: RwLock<HashMap<UserTokenId, Instant>>,
    runner_tokens: RwLock<HashMap<[u8; 32], (RunnerCredentials, Instant)>>,
    bindings: RwLock<HashMap<RunnerId, (Arc<RunnerBinding>, Instant)>>,
}

/// SHA-256 of a token. Tokens carry 256 random bits, so a fast hash is enough: there is nothing
/// to brute-force.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub(crate) fn random_token_text() -> String {
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
            user_token_touches: RwLock::new(HashMap::new()),
            runner_tokens: RwLock::new(HashMap::new()),
            bindings: RwLock::new(HashMap::new()),
        }
    }

    /// The principal holding `token` at `now`: `unauthorized` when the token is unknown or
    /// revoked, `token_expired` when it expired. A pending runner's token makes a
    /// [`Principal::PendingRunner`], which may only heartbeat.
    pub(crate) async fn identify(
        &self,
        token: &str,
        store: &dyn Store,
        now: Timestamp,
    ) -> Result<Principal, ServiceError> {
        let unknown = || ServiceError::unauthorized("unknown or revoked token");
        if token.is_empty() {
            return Err(unknown());
        }
        let hash = hash_token(token);
        if hash == self.admin_token_hash {
            return Ok(Principal::BootstrapAdmin);
        }
        if token.starts_with(USER_TOKEN_PREFIX) {
            return self.identify_user(hash, store, now).await;
        }
        if !token.starts_with(RUNNER_TOKEN_PREFIX) {
            return Err(unknown());
        }
        let cached = self
            .runner_tokens
            .read()
            .ok()
            .and_then(|cache| cache.get(&hash).cloned())
            .filter(|(_, since)| since.elapsed() < RUNNER_CACHE_TTL)
            .map(|(credentials, _)| credentials);
        let credentials = match cached {
            Some(credentials) => credentials,
            None => {
                let credentials = store
                    .runner_by_token_hash(hash)
                    .await?
                    .ok_or_else(unknown)?;
                if let Ok(mut cache) = self.runner_tokens.write() {
                    if cache.len() >= RUNNER_CACHE_CAPACITY {
                        cache.clear();
                    }
                    cache.insert(hash, (credentials.clone(), Instant::now()));
                }
                credentials
            }
        };
        principal_of(&credentials, now)
    }

    /// A user token is read from the store at every request (no cache), so a revocation on any
    /// coordinator sharing the store holds from the next request on.
    async fn identify_user(
        &self,
        hash: [u8; 32],
        store: &dyn Store,
        now: Timestamp,
    ) -> Result<Principal, ServiceError> {
        let record = store
            .user_token_by_hash(hash)
            .await?
            .ok_or_else(|| ServiceError::unauthorized("unknown or revoked token"))?;
        let principal = user_principal_of(&record, now)?;
        if self.touch_due(record.id) {
            // Losing a touch only makes `last_used_at` older; the request goes on.
            if let Err(error) = store.touch_user_token(record.id, now).await {
                tracing::warn!(%error, token = %record.id, "failed to record a user token's use");
            }
        }
        Ok(principal)
    }

    /// The principal a dashboard session acts as at `now`: the user token it was opened with,
    /// read again from the store (so a revoked or expired token ends the session), or the
    /// bootstrap admin while the admin token is still the one the session was opened with.
    pub(crate) async fn identify_session(
        &self,
        session: &SessionRecord,
        store: &dyn Store,
        now: Timestamp,
    ) -> Result<Principal, ServiceError> {
        if now >= session.expires_at {
            return Err(ServiceError::new(
                ErrorCode::TokenExpired,
                "this session expired; sign in again",
            ));
        }
        match &session.opened_with {
            SessionHolder::BootstrapAdmin { admin_token_hash } => {
                if *admin_token_hash == self.admin_token_hash {
                    Ok(Principal::BootstrapAdmin)
                } else {
                    Err(ServiceError::unauthorized(
                        "the admin token this session was opened with changed; sign in again",
                    ))
                }
            }
            SessionHolder::UserToken(id) => {
                let record = store.get_user_token(*id).await?.ok_or_else(|| {
                    ServiceError::unauthorized(
                        "the token this session was opened with was revoked; sign in again",
                    )
                })?;
                let principal = user_principal_of(&record, now)?;
                if self.touch_due(record.id)
                    && let Err(error) = store.touch_user_token(record.id, now).await
                {
                    tracing::warn!(%error, token = %record.id, "failed to record a user token's use");
                }
                Ok(principal)
            }
        }
    }

    /// The SHA-256 of the bootstrap admin token.
    pub(crate) fn admin_token_hash(&self) -> [u8; 32] {
        self.admin_token_hash
    }

    /// Whether `token`'s use is to be written now (and, if so, remember that it was).
    fn touch_due(&self, token: UserTokenId) -> bool {
        let Ok(mut touches) = self.user_token_touches.write() else {
            return false;
        };
        let due = touches
            .get(&token)
            .is_none_or(|since| since.elapsed() >= USER_TOKEN_TOUCH_INTERVAL);
        if due {
            if touches.len() >= RUNNER_CACHE_CAPACITY {
                touches.clear();
            }
            touches.insert(token, Instant::now());
        }
        due
    }

    /// Stop trusting any cached token or binding of `runner`.
    pub(crate) fn forget_runner(&self, runner: RunnerId) {
        if let Ok(mut cache) = self.runner_tokens.write() {
            cache.retain(|_, (cached, _)| cached.runner != runner);
        }
        if let Ok(mut cache) = self.bindings.write() {
            cache.remove(&runner);
        }
    }

    /// What binds `runner`'s claims and results, from the cache or the store.
    pub(crate) async fn binding(
        &self,
        runner: RunnerId,
        store: &dyn Store,
    ) -> Result<Arc<RunnerBinding>, ServiceError> {
        let cached = self
            .bindings
            .read()
            .ok()
            .and_then(|cache| cache.get(&runner).cloned())
            .filter(|(_, since)| since.elapsed() < RUNNER_CACHE_TTL);
        if let Some((binding, _)) = cached {
            return Ok(binding);
        }
        let record = store.get_runner(runner).await?;
        let public_key = record
            .public_key
            .map(|text| {
                RunnerPublicKey::from_base64("public_key", &text).map_err(|error| {
                    ServiceError::internal(format!("stored key of runner {runner}: {error}"))
                })
            })
            .transpose()?;
        let binding = Arc::new(RunnerBinding {
            bound_capabilities: record.bound_capabilities,
            bound_kinds: record.bound_kinds,
            public_key,
        });
        if let Ok(mut cache) = self.bindings.write() {
            if cache.len() >= RUNNER_CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(runner, (Arc::clone(&binding), Instant::now()));
        }
        Ok(binding)
    }
}

/// The principal a stored user token makes at `now`: `token_expired` past its expiry.
fn user_principal_of(record: &UserTokenRecord, now: Timestamp) -> Result<Principal, ServiceError> {
    if let Some(expires_at) = record.expires_at
        && now >= expires_at
    {
        return Err(ServiceError::new(
            ErrorCode::TokenExpired,
            format!(
                "this user token expired at {}; an admin mints a new one (muster tokens create)",
                crate::rfc3339(expires_at)
            ),
        ));
    }
    let scope = match &record.organization_id {
        None => OrganizationScope::Every,
        Some(id) => OrganizationScope::One(OrganizationId::parse(id).map_err(|error| {
            ServiceError::internal(format!(
                "stored organization of user token {}: {error}",
                record.id
            ))
        })?),
    };
    Ok(Principal::User(UserPrincipal {
        token: record.id,
        role: record.role,
        scope,
    }))
}

/// The principal a runner token's credentials make at `now`.
fn principal_of(
    credentials: &RunnerCredentials,
    now: Timestamp,
) -> Result<Principal, ServiceError> {
    if let Some(expires_at) = credentials.expires_at
        && now >= expires_at
    {
        return Err(ServiceError::new(
            ErrorCode::TokenExpired,
            format!(
                "this runner token expired at {}; register again (muster runner --key) for a new one",
                crate::rfc3339(expires_at)
            ),
        ));
    }
    match credentials.enrollment {
        Enrollment::Enrolled => Ok(Principal::Runner(credentials.runner)),
        Enrollment::Pending => Ok(Principal::PendingRunner(credentials.runner)),
        // A rejected runner's tokens are revoked with the rejection; one still found is not
        // trusted either.
        Enrollment::Rejected => Err(ServiceError::unauthorized("unknown or revoked token")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(enrollment: Enrollment, expires_at: Option<i64>) -> RunnerCredentials {
        RunnerCredentials {
            runner: RunnerId::new(Timestamp(0), 1),
            enrollment,
            expires_at: expires_at.map(Timestamp),
        }
    }

    #[test]
    fn a_tokens_principal_follows_its_enrollment_and_expiry() {
        let runner = RunnerId::new(Timestamp(0), 1);
        let now = Timestamp(1_000);
        assert_eq!(
            principal_of(&credentials(Enrollment::Enrolled, None), now),
            Ok(Principal::Runner(runner))
        );
        assert_eq!(
            principal_of(&credentials(Enrollment::Enrolled, Some(1_001)), now),
            Ok(Principal::Runner(runner))
        );
        assert_eq!(
            principal_of(&credentials(Enrollment::Pending, Some(2_000)), now),
            Ok(Principal::PendingRunner(runner))
        );
        let expired = principal_of(&credentials(Enrollment::Enrolled, Some(1_000)), now)
            .expect_err("expired at now");
        assert_eq!(expired.code(), ErrorCode::TokenExpired);
        let rejected =
            principal_of(&credentials(Enrollment::Rejected, None), now).expect_err("rejected");
        assert_eq!(rejected.code(), ErrorCode::Unauthorized);
    }
}
