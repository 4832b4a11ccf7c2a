//! Dashboard sessions: a browser signs in once with a user token (or the bootstrap admin token)
//! and gets a session secret to keep in an HttpOnly cookie, so the token itself never sits in
//! the browser. Only the secret's SHA-256 is stored. A session acts as the token it was opened
//! with, read again at every request: revoking the token (or changing the admin token) ends its
//! sessions on every coordinator sharing the store, from the next request on.
//!
//! Requests a session authenticates carry the session's CSRF token as well when they change
//! anything (see [`csrf_token_for`]); the HTTP front end checks it, since only a browser sends
//! credentials on its own.

use base64::Engine;
use muster_core::organization::OrganizationScope;
use muster_core::{Audience, ErrorCode, Principal, Timestamp};
use muster_store::{NewAuditEntry, SessionHolder, SessionRecord, StoreError};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::auth::{hash_token, random_token_text};
use crate::{Coordinator, ServiceError};

/// What every session secret starts with, so one found in a log or a paste is recognised.
pub const SESSION_SECRET_PREFIX: &str = "muster_session_";

/// Audit actions of sessions.
pub mod audit_actions {
    pub const SESSION_OPENED: &str = "session.opened";
    pub const SESSION_ENDED: &str = "session.ended";
}

/// A session just opened: the secret (to hand to the browser once, never stored), its CSRF
/// token, until when it lasts, and who it acts as.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedSession {
    pub secret: String,
    pub csrf_token: String,
    pub expires_at: Timestamp,
    /// How long from now it lasts, in whole seconds.
    pub lasts_s: i64,
    pub principal: Principal,
}

/// The CSRF token of a session: derived from its secret, so the server keeps nothing more and a
/// page can only know it if it was given it at sign-in (another site can neither read the
/// HttpOnly secret nor compute this from anything it can read).
pub fn csrf_token_for(session_secret: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(b"muster-csrf-v1\n");
    digest.update(session_secret.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.finalize())
}

/// Whether two texts are equal, in time that does not depend on where they differ.
pub fn constant_time_equal(left: &str, right: &str) -> bool {
    let (left, right) = (left.as_bytes(), right.as_bytes());
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

fn organization_of(principal: &Principal) -> Option<String> {
    match principal {
        Principal::User(user) => match &user.scope {
            OrganizationScope::Every => None,
            OrganizationScope::One(id) => Some(id.as_str().to_string()),
        },
        _ => None,
    }
}

impl Coordinator {
    /// Sign in with `token`: a session acting as it, lasting the configured session lifetime
    /// but never past the token's own expiry. The token is checked (and throttled) as any
    /// user-side token is; a runner token is refused.
    pub async fn open_session(
        &self,
        token: &str,
        peer: Option<std::net::IpAddr>,
    ) -> Result<OpenedSession, ServiceError> {
        let principal = self.authenticate(token, Audience::Users, peer).await?;
        let now = self.clock.now();
        let lifetime_ms = i64::try_from(self.config.session_ttl.as_millis()).unwrap_or(i64::MAX);
        let mut expires_at = now.plus_millis(lifetime_ms);
        let opened_with = match &principal {
            Principal::BootstrapAdmin => SessionHolder::BootstrapAdmin {
                admin_token_hash: self.auth.admin_token_hash(),
            },
            Principal::User(user) => {
                let record = self
                    .store
                    .get_user_token(user.token)
                    .await?
                    .ok_or_else(|| ServiceError::unauthorized("unknown or revoked token"))?;
                if let Some(token_expires_at) = record.expires_at {
                    expires_at = expires_at.min(token_expires_at);
                }
                SessionHolder::UserToken(user.token)
            }
            Principal::Runner(_) | Principal::PendingRunner(_) => {
                return Err(ServiceError::new(
                    ErrorCode::Forbidden,
                    "a runner token cannot sign in to the dashboard; use a user token",
                ));
            }
        };
        let secret = format!("{SESSION_SECRET_PREFIX}{}", random_token_text());
        let audit = NewAuditEntry {
            at: now,
            actor: crate::identity::actor_of(&principal),
            action: audit_actions::SESSION_OPENED.to_string(),
            subject: "session".to_string(),
            detail: json!({"expires_at": crate::rfc3339(expires_at)}),
            organization_id: organization_of(&principal),
        };
        self.store
            .create_session(
                SessionRecord {
                    secret_hash: hash_token(&secret),
                    opened_with,
                    created_at: now,
                    expires_at,
                },
                audit,
            )
            .await?;
        Ok(OpenedSession {
            csrf_token: csrf_token_for(&secret),
            secret,
            expires_at,
            lasts_s: expires_at.millis_since(now).max(0) / 1000,
            principal,
        })
    }

    /// Who the session of `secret` acts as now: `unauthorized` for an unknown or ended session
    /// (throttled like an unknown token), `token_expired` past its expiry or its token's.
    pub async fn authenticate_session(
        &self,
        secret: &str,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Principal, ServiceError> {
        self.refuse_if_throttled(peer)?;
        let identified = match self.store.session_by_hash(hash_token(secret)).await? {
            None => Err(ServiceError::unauthorized(
                "unknown or ended session; sign in again",
            )),
            Some(session) => {
                self.auth
                    .identify_session(&session, self.store.as_ref(), self.clock.now())
                    .await
            }
        };
        if let Err(error) = &identified
            && crate::throttle::is_failed_authentication(error)
        {
            self.record_failed_authentication(peer).await;
        }
        identified
    }

    /// Sign out: end the session of `secret` (one already ended is no error). `principal` is
    /// who the session acted as, for the audit log.
    pub async fn close_session(
        &self,
        principal: &Principal,
        secret: &str,
    ) -> Result<(), ServiceError> {
        let audit = NewAuditEntry {
            at: self.clock.now(),
            actor: crate::identity::actor_of(principal),
            action: audit_actions::SESSION_ENDED.to_string(),
            subject: "session".to_string(),
            detail: json!({}),
            organization_id: organization_of(principal),
        };
        match self.store.delete_session(hash_token(secret), audit).await {
            Ok(()) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csrf_token_is_fixed_per_secret_and_differs_between_secrets() {
        let first = csrf_token_for("muster_session_a");
        assert_eq!(first, csrf_token_for("muster_session_a"));
        assert_ne!(first, csrf_token_for("muster_session_b"));
        assert_eq!(first.len(), 43, "{first}");
        assert!(!first.contains("muster_session_a"));
    }

    #[test]
    fn texts_compare_equal_only_when_every_byte_is() {
        assert!(constant_time_equal("abc", "abc"));
        assert!(!constant_time_equal("abc", "abd"));
        assert!(!constant_time_equal("abc", "abcd"));
        assert!(constant_time_equal("", ""));
    }
}
