//! Runner identity administration: the allowlist of runner keys, and the audit log of security
//! events. Every change is authorized here and recorded with its audit entry in the same commit.

use muster_core::identity::RunnerPublicKey;
use muster_core::{Action, ErrorCode, Principal, TextRule, authorize};

pub use muster_store::{AuditEntry, RunnerKeyRecord};
use muster_store::{AuditFilter, NewAuditEntry, Page};
use serde_json::json;

use crate::jobs::page_request;
use crate::{Coordinator, ServiceError};

/// The longest `note` on a runner key, in characters.
pub const MAX_RUNNER_KEY_NOTE_LEN: usize = 500;

/// The longest audit `action` filter, in characters.
const MAX_AUDIT_ACTION_LEN: usize = 100;

/// Audit actions (the contract names them; these are the ones recorded so far).
pub mod audit_actions {
    pub const RUNNER_KEY_ADDED: &str = "runner_key.added";
    pub const RUNNER_KEY_REMOVED: &str = "runner_key.removed";
    pub const AUTH_THROTTLED: &str = "auth.throttled";
    pub const RUNNER_REGISTERED: &str = "runner.registered";
    pub const RUNNER_APPROVED: &str = "runner.approved";
    pub const RUNNER_REJECTED: &str = "runner.rejected";
    /// Written by the store in the commit of the change that revoked the runner.
    pub const RUNNER_REVOKED: &str = muster_store::RUNNER_REVOKED_ACTION;
    pub const REGISTRATION_REFUSED: &str = "registration.refused";
    pub const SIGNATURE_REFUSED: &str = "signature.refused";
}

/// A key to put on the allowlist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewRunnerKey {
    /// Standard base64 of the 32 raw bytes.
    pub public_key: String,
    pub note: Option<String>,
    pub organization_id: Option<String>,
}

/// The allowlist entry of a key, and whether this call put it there.
#[derive(Debug, Clone, PartialEq)]
pub struct AddedRunnerKey {
    pub key: RunnerKeyRecord,
    /// False when the key was already on the allowlist (the entry is as it was).
    pub created: bool,
}

/// How the audit log names who made a change.
pub(crate) fn actor_of(principal: &Principal) -> String {
    match principal {
        Principal::BootstrapAdmin => "admin".to_string(),
        Principal::User(user) => format!("user:{}", user.token),
        Principal::Runner(runner) | Principal::PendingRunner(runner) => format!("runner:{runner}"),
    }
}

/// A fingerprint as the contract spells it, or `not_found` naming the form (a malformed one
/// names no key).
fn check_fingerprint(fingerprint: &str) -> Result<(), ServiceError> {
    let well_formed = fingerprint.strip_prefix("sha256:").is_some_and(|digest| {
        digest.len() == 64
            && digest
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    });
    if well_formed {
        return Ok(());
    }
    let shown: String = fingerprint.chars().take(80).collect();
    Err(ServiceError::not_found(format!(
        "runner key '{shown}' not found (fingerprints are sha256: followed by 64 lowercase hex digits)"
    )))
}

impl Coordinator {
    /// Put a key on the allowlist (201), or answer the entry already there (200, unchanged).
    pub async fn add_runner_key(
        &self,
        principal: &Principal,
        key: NewRunnerKey,
    ) -> Result<AddedRunnerKey, ServiceError> {
        authorize(principal, Action::ManageRunnerKeys)?;
        let invalid =
            |error: muster_core::JobSpecError| ServiceError::invalid_input(error.to_string());
        let public_key = RunnerPublicKey::from_base64("public_key", &key.public_key)
            .map_err(|error| ServiceError::invalid_input(error.to_string()))?;
        let note = key
            .note
            .map(|note| note.trim().to_string())
            .filter(|note| !note.is_empty());
        if let Some(note) = &note {
            muster_core::check_field("note", note, TextRule::optional(MAX_RUNNER_KEY_NOTE_LEN))
                .map_err(invalid)?;
        }
        let organization_id = crate::scope::organization_for(principal, key.organization_id)?;
        if let Some(organization_id) = &organization_id {
            muster_core::check_organization_id(organization_id).map_err(invalid)?;
            self.existing_organization(organization_id).await?;
        }
        let now = self.clock.now();
        let fingerprint = public_key.fingerprint();
        // A key another organization (or the whole cluster) trusts is not a scoped operator's
        // to see: it is told the key is taken, never whose it is.
        if principal.scoped_organization().is_some()
            && let Some(existing) = self.store.get_runner_key(&fingerprint).await?
            && !crate::scope::sees(principal, existing.organization_id.as_deref())
        {
            return Err(ServiceError::new(
                ErrorCode::Conflict,
                format!(
                    "public_key: the key {fingerprint} is already on the allowlist, outside this organization"
                ),
            ));
        }
        let record = RunnerKeyRecord {
            fingerprint: fingerprint.clone(),
            public_key: public_key.to_base64(),
            note: note.clone(),
            organization_id: organization_id.clone(),
            created_at: now,
        };
        let audit = NewAuditEntry {
            at: now,
            actor: actor_of(principal),
            action: audit_actions::RUNNER_KEY_ADDED.to_string(),
            subject: fingerprint,
            detail: json!({"note": note, "organization_id": organization_id}),
            organization_id: organization_id.clone(),
        };
        let (key, created) = self.store.add_runner_key(record, audit).await?;
        Ok(AddedRunnerKey { key, created })
    }

    /// The allowlist, oldest first.
    pub async fn list_runner_keys(
        &self,
        principal: &Principal,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> Result<Page<RunnerKeyRecord>, ServiceError> {
        authorize(principal, Action::ReadRunnerKeys)?;
        let organization = crate::scope::organization_for(principal, None)?;
        Ok(self
            .store
            .list_runner_keys(organization, page_request(limit, cursor)?)
            .await?)
    }

    /// Take a key off the allowlist: no runner may register with it from now on.
    pub async fn remove_runner_key(
        &self,
        principal: &Principal,
        fingerprint: &str,
    ) -> Result<(), ServiceError> {
        authorize(principal, Action::ManageRunnerKeys)?;
        check_fingerprint(fingerprint)?;
        let not_found = || {
            ServiceError::from(muster_store::StoreError::NotFound(format!(
                "runner key {fingerprint}"
            )))
        };
        let key = self
            .store
            .get_runner_key(fingerprint)
            .await?
            .ok_or_else(not_found)?;
        if !crate::scope::sees(principal, key.organization_id.as_deref()) {
            return Err(not_found());
        }
        let audit = NewAuditEntry {
            at: self.clock.now(),
            actor: actor_of(principal),
            action: audit_actions::RUNNER_KEY_REMOVED.to_string(),
            subject: fingerprint.to_string(),
            detail: json!({}),
            organization_id: key.organization_id,
        };
        let removed = self.store.remove_runner_key(fingerprint, audit).await?;
        self.after_revocation(removed.revoked_runner, removed.released);
        Ok(())
    }

    /// What follows a runner's revocation on this coordinator: its cached tokens are forgotten
    /// at once, followers of the jobs it held hear they went back, and the runner view is read
    /// again.
    pub(crate) fn after_revocation(
        &self,
        runner: Option<muster_core::RunnerId>,
        released: Vec<muster_core::JobId>,
    ) {
        if let Some(runner) = runner {
            self.auth.forget_runner(runner);
        }
        for job in released {
            self.job_changes.changed(job);
        }
        self.runner_view.invalidate();
    }

    /// The audit log newest first, optionally one action only, or one organization's only. A
    /// token scoped to one organization reads that organization's entries alone (asking for
    /// another answers `organization_not_found`); the entries of the whole cluster (runner keys,
    /// kinds, throttling) are read with a token of every organization.
    pub async fn list_audit(
        &self,
        principal: &Principal,
        action: Option<String>,
        organization_id: Option<String>,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> Result<Page<AuditEntry>, ServiceError> {
        authorize(principal, Action::ReadAudit)?;
        let action = action.filter(|action| !action.is_empty());
        if let Some(action) = &action {
            muster_core::check_field("action", action, TextRule::key(MAX_AUDIT_ACTION_LEN))
                .map_err(|error| ServiceError::invalid_input(format!("query parameter {error}")))?;
        }
        Ok(self
            .store
            .list_audit(
                AuditFilter {
                    action,
                    organization_id: crate::scope::organization_for(principal, organization_id)?,
                },
                page_request(limit, cursor)?,
            )
            .await?)
    }
}
