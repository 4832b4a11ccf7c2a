//! Runners that register themselves with an Ed25519 key: the proof of possession, its freshness
//! and single use, the enrollment gate, short-lived tokens renewed by registering again, and an
//! operator's approve or reject. Every decision is made here (the rules of enrollment are
//! [`muster_core::enrollment_transition`]); the store commits each change with its audit entry.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use muster_core::identity::{
    FreshnessError, ReplayGuard, RunnerPublicKey, check_registration_time, registration_message,
};
use muster_core::{
    Action, Capabilities, EnrollmentOperation, ErrorCode, Principal, RunnerId, TextRule, Timestamp,
    authorize, enrollment_transition,
};
use muster_store::{
    EnrollmentChange, EnrollmentChangeOutcome, KeyRegistration, NewAuditEntry, RegistrationOutcome,
    RunnerKeyRecord,
};
use rand::Rng;
use serde_json::{Value, json};

use crate::auth::{hash_token, new_runner_token};
use crate::identity::{actor_of, audit_actions};
use crate::protocol::check_runner_kinds;
use crate::runners::RunnerView;
use crate::{Coordinator, ServiceError};

/// How long the token a registration replaces keeps working, so calls in flight while a
/// runner renews do not fail.
pub const TOKEN_OVERLAP: Duration = Duration::from_secs(300);

/// The most registrations remembered at once to refuse their replay (each for the 10 minutes
/// its timestamp stays acceptable): about 170 a second, sustained, far more than a fleet renews.
const REPLAY_GUARD_CAPACITY: usize = 100_000;

/// The longest hostname a registration may give.
const MAX_HOSTNAME_LEN: usize = 255;

/// How often a registration whose gate decision was overtaken by a concurrent change (another
/// registration of the key, an approval, the key's removal) is decided again before giving up.
const REGISTRATION_ATTEMPTS: usize = 3;

/// A registration as a runner sent it: the fields, and the document they were read from, whose
/// canonical JSON without `signature` is what the signature covers.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedRegistration {
    pub name: String,
    pub hostname: String,
    /// Standard base64 of the key's 32 raw bytes.
    pub public_key: String,
    pub kinds: Vec<String>,
    pub capabilities: Capabilities,
    pub organization_id: Option<String>,
    pub timestamp: Timestamp,
    /// Standard base64 of the Ed25519 signature.
    pub signature: String,
    /// The request body as received (a JSON object).
    pub signed_document: Value,
}

/// A runner registered by its key, with its new token (shown this once; only its hash is kept).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRegisteredRunner {
    pub view: RunnerView,
    pub token: String,
    pub token_expires_at: Timestamp,
    /// False when the key's runner existed: the same runner, capabilities updated.
    pub created: bool,
}

/// The signatures of registrations accepted recently, so each is accepted once by this
/// coordinator without asking the store (which refuses a replay for every coordinator sharing
/// it anyway: a key's registrations must be signed ever later).
pub(crate) struct RegistrationReplays(Mutex<ReplayGuard>);

impl Default for RegistrationReplays {
    fn default() -> RegistrationReplays {
        RegistrationReplays(Mutex::new(ReplayGuard::new(REPLAY_GUARD_CAPACITY)))
    }
}

fn freshness_refusal(error: FreshnessError) -> ServiceError {
    match error {
        FreshnessError::OutsideWindow { .. } | FreshnessError::Replayed => {
            ServiceError::unauthorized(error.to_string())
        }
        FreshnessError::ReplayGuardFull { .. } => ServiceError::unavailable(error.to_string()),
    }
}

/// The fields of a registration, checked; answers its key.
fn check_registration(registration: &SignedRegistration) -> Result<RunnerPublicKey, ServiceError> {
    let invalid = |error: muster_core::JobSpecError| ServiceError::invalid_input(error.to_string());
    let public_key = RunnerPublicKey::from_base64("public_key", &registration.public_key)
        .map_err(|error| ServiceError::invalid_input(error.to_string()))?;
    muster_core::runner_name(&registration.name).map_err(invalid)?;
    muster_core::check_field(
        "hostname",
        &registration.hostname,
        TextRule::name(MAX_HOSTNAME_LEN),
    )
    .map_err(invalid)?;
    check_runner_kinds(&registration.kinds)?;
    registration.capabilities.validate("").map_err(invalid)?;
    if let Some(organization_id) = &registration.organization_id {
        muster_core::check_organization_id(organization_id).map_err(invalid)?;
    }
    if !registration.signed_document.is_object() {
        return Err(ServiceError::invalid_input(
            "the registration must be a JSON object",
        ));
    }
    Ok(public_key)
}

impl Coordinator {
    /// Register a runner by its key: check the proof, its freshness and single use, then the
    /// gate; record the runner (new, or the key's runner updated) with a new token that expires.
    /// `peer` is the caller's address, for throttling failed proofs.
    pub async fn register_runner_with_key(
        &self,
        registration: SignedRegistration,
        peer: Option<IpAddr>,
    ) -> Result<KeyRegisteredRunner, ServiceError> {
        self.refuse_if_throttled(peer)?;
        let public_key = check_registration(&registration)?;
        let message = registration_message(&registration.signed_document);
        if let Err(error) = public_key.verify("signature", &message, &registration.signature) {
            self.record_failed_authentication(peer).await;
            self.record_refused_registration(
                &public_key,
                &registration,
                ErrorCode::InvalidSignature,
            )
            .await;
            return Err(ServiceError::new(
                ErrorCode::InvalidSignature,
                format!(
                    "{error}; sign the bytes 'muster-register-v1\\n' followed by the canonical JSON of the body without 'signature'"
                ),
            ));
        }
        if let Err(error) = check_registration_time(registration.timestamp, self.clock.now()) {
            self.record_failed_authentication(peer).await;
            return Err(freshness_refusal(error));
        }
        let mut remembered = false;
        for _ in 0..REGISTRATION_ATTEMPTS {
            match self
                .try_register(&registration, &public_key, &mut remembered)
                .await
            {
                Ok(Some(registered)) => return Ok(registered),
                Ok(None) => continue,
                Err(error) => {
                    if error.code() == ErrorCode::Unauthorized {
                        self.record_failed_authentication(peer).await;
                    }
                    return Err(error);
                }
            }
        }
        Err(ServiceError::unavailable(
            "the runner's enrollment kept changing while it registered; register again",
        ))
    }

    /// One attempt: decide on what the store holds now and commit, or `None` when the store
    /// says the decision was overtaken.
    async fn try_register(
        &self,
        registration: &SignedRegistration,
        public_key: &RunnerPublicKey,
        remembered: &mut bool,
    ) -> Result<Option<KeyRegisteredRunner>, ServiceError> {
        let fingerprint = public_key.fingerprint();
        let existing = self.store.runner_by_key(&fingerprint).await?;
        let key_allowed = self.store.get_runner_key(&fingerprint).await?.is_some();
        let decided_from = existing.as_ref().map(|runner| runner.enrollment);
        let gate = self.config.enrollment_gate;
        let outcome = match enrollment_transition(
            decided_from,
            EnrollmentOperation::Register { gate, key_allowed },
        ) {
            Ok(outcome) => outcome,
            Err(refusal) => {
                self.record_refused_registration(public_key, registration, refusal.code())
                    .await;
                return Err(ServiceError::new(refusal.code(), refusal.to_string()));
            }
        };
        // Checked once the gate let the key through, so an unknown key learns nothing of which
        // organizations exist.
        if let Some(organization_id) = &registration.organization_id {
            self.existing_organization(organization_id).await?;
        }
        let now = self.clock.now();
        // Only a registration the gate lets through is remembered: one it refused may be sent
        // again unchanged once an operator trusts the key. The store's rule (each registration
        // of a key signed later than the last) refuses a replay whatever this coordinator
        // remembers.
        if !*remembered {
            let accepted = match self.registration_replays.0.lock() {
                Ok(mut guard) => guard.accept_once(
                    registration.signature.trim().as_bytes(),
                    registration.timestamp,
                    now,
                ),
                Err(_) => Ok(()),
            };
            accepted.map_err(freshness_refusal)?;
            *remembered = true;
        }
        let token = new_runner_token();
        let ttl_ms = i64::try_from(self.config.runner_token_ttl.as_millis()).unwrap_or(i64::MAX);
        let token_expires_at = now.plus_millis(ttl_ms);
        let key_registration = KeyRegistration {
            new_runner_id: RunnerId::new(now, rand::rng().random()),
            key_fingerprint: fingerprint.clone(),
            public_key: public_key.to_base64(),
            name: registration.name.trim().to_string(),
            hostname: registration.hostname.trim().to_string(),
            organization_id: registration.organization_id.clone(),
            kinds: registration.kinds.clone(),
            capabilities: registration.capabilities.clone(),
            enrollment: outcome.enrollment,
            decided_from,
            key_was_allowed: key_allowed,
            token_hash: hash_token(&token),
            token_expires_at,
            previous_token_until: now.plus_millis(TOKEN_OVERLAP.as_millis() as i64),
            signed_at: registration.timestamp,
            now,
        };
        let audit = NewAuditEntry {
            at: now,
            actor: format!("key:{fingerprint}"),
            action: audit_actions::RUNNER_REGISTERED.to_string(),
            subject: match &existing {
                Some(runner) => format!("runner:{}", runner.id),
                None => format!("runner:{}", key_registration.new_runner_id),
            },
            detail: json!({
                "key_fingerprint": fingerprint,
                "name": key_registration.name,
                "hostname": key_registration.hostname,
                "enrollment": outcome.enrollment.as_str(),
                "renewal": existing.is_some(),
                "token_expires_at": crate::rfc3339(token_expires_at),
            }),
            organization_id: key_registration.organization_id.clone(),
        };
        match self
            .store
            .register_runner_key(key_registration, audit)
            .await?
        {
            RegistrationOutcome::Registered { runner, created } => {
                self.auth.forget_runner(runner.id);
                self.runner_view.invalidate();
                Ok(Some(KeyRegisteredRunner {
                    view: self.runner_view(*runner),
                    token,
                    token_expires_at,
                    created,
                }))
            }
            RegistrationOutcome::NotNewer { last } => Err(ServiceError::unauthorized(format!(
                "timestamp: this key's last registration was signed at {}; a registration is \
                 accepted once and each must be signed later than the last (a replay, or the \
                 runner's clock went back)",
                crate::rfc3339(last)
            ))),
            RegistrationOutcome::Changed => Ok(None),
        }
    }

    /// Record a registration the coordinator refused. A failure to record it is logged, not
    /// answered: the caller hears why it was refused either way.
    async fn record_refused_registration(
        &self,
        public_key: &RunnerPublicKey,
        registration: &SignedRegistration,
        code: ErrorCode,
    ) {
        let fingerprint = public_key.fingerprint();
        let name: String = registration.name.chars().take(100).collect();
        let hostname: String = registration.hostname.chars().take(100).collect();
        let entry = NewAuditEntry {
            at: self.clock.now(),
            actor: format!("key:{fingerprint}"),
            action: audit_actions::REGISTRATION_REFUSED.to_string(),
            subject: format!("key:{fingerprint}"),
            detail: json!({"code": code.as_str(), "name": name, "hostname": hostname}),
            organization_id: None,
        };
        if let Err(error) = self.store.append_audit(entry).await {
            tracing::warn!(%error, key = %fingerprint, "record a refused registration");
        }
    }

    /// An operator approves a pending (or rejected) runner: it is enrolled, its key joins the
    /// allowlist, and its current token may claim at once.
    pub async fn approve_runner(
        &self,
        principal: &Principal,
        id: RunnerId,
    ) -> Result<RunnerView, ServiceError> {
        self.decide_enrollment(principal, id, EnrollmentOperation::Approve)
            .await
    }

    /// An operator rejects a runner: its tokens stop working, its leases are released, its key
    /// leaves the allowlist (so its registrations are refused with `key_rejected`).
    pub async fn reject_runner(
        &self,
        principal: &Principal,
        id: RunnerId,
    ) -> Result<RunnerView, ServiceError> {
        self.decide_enrollment(principal, id, EnrollmentOperation::Reject)
            .await
    }

    async fn decide_enrollment(
        &self,
        principal: &Principal,
        id: RunnerId,
        operation: EnrollmentOperation,
    ) -> Result<RunnerView, ServiceError> {
        authorize(principal, Action::ManageRunnerKeys)?;
        self.check_runner_in_scope(principal, id).await?;
        for _ in 0..REGISTRATION_ATTEMPTS {
            let runner = self.store.get_runner(id).await?;
            let (Some(fingerprint), Some(public_key)) =
                (runner.key_fingerprint.clone(), runner.public_key.clone())
            else {
                return Err(ServiceError::invalid_state(format!(
                    "runner {id} was created by an operator and has no key to approve or reject; \
                     delete it to take it out of the fleet"
                )));
            };
            if operation == EnrollmentOperation::Reject
                && self.store.get_runner_key(&fingerprint).await?.is_some()
            {
                // Rejecting a runner whose key stays trusted would let it register again at
                // once: the key goes too (which revokes the runner), then the rejection.
                let removal = NewAuditEntry {
                    at: self.clock.now(),
                    actor: actor_of(principal),
                    action: audit_actions::RUNNER_KEY_REMOVED.to_string(),
                    subject: fingerprint.clone(),
                    detail: json!({"cause": "runner.rejected", "runner_id": id.to_string()}),
                    organization_id: runner.organization_id.clone(),
                };
                match self.store.remove_runner_key(&fingerprint, removal).await {
                    Ok(removed) => self.after_revocation(removed.revoked_runner, removed.released),
                    // Removed meanwhile by someone else: the rejection goes on.
                    Err(muster_store::StoreError::NotFound(_)) => {}
                    Err(error) => return Err(error.into()),
                }
                continue;
            }
            let outcome = enrollment_transition(Some(runner.enrollment), operation)
                .map_err(|refusal| ServiceError::new(refusal.code(), refusal.to_string()))?;
            let now = self.clock.now();
            let action = match operation {
                EnrollmentOperation::Approve => audit_actions::RUNNER_APPROVED,
                _ => audit_actions::RUNNER_REJECTED,
            };
            let audit = NewAuditEntry {
                at: now,
                actor: actor_of(principal),
                action: action.to_string(),
                subject: format!("runner:{id}"),
                detail: json!({
                    "key_fingerprint": fingerprint,
                    "from": runner.enrollment.as_str(),
                    "to": outcome.enrollment.as_str(),
                }),
                organization_id: runner.organization_id.clone(),
            };
            let key_audit = NewAuditEntry {
                at: now,
                actor: actor_of(principal),
                action: audit_actions::RUNNER_KEY_ADDED.to_string(),
                subject: fingerprint.clone(),
                detail: json!({"cause": "runner.approved", "runner_id": id.to_string()}),
                organization_id: runner.organization_id.clone(),
            };
            let change = EnrollmentChange {
                runner: id,
                expected: runner.enrollment,
                enrollment: outcome.enrollment,
                revoke_tokens: outcome.revoke_tokens,
                add_key: outcome.add_key_to_allowlist.then(|| RunnerKeyRecord {
                    fingerprint: fingerprint.clone(),
                    public_key,
                    note: Some(format!("approved with runner {} ({id})", runner.name)),
                    organization_id: runner.organization_id.clone(),
                    created_at: now,
                }),
                now,
            };
            match self
                .store
                .change_runner_enrollment(change, audit, key_audit)
                .await?
            {
                EnrollmentChangeOutcome::Changed {
                    runner, released, ..
                } => {
                    self.after_revocation(Some(id), released);
                    return Ok(self.runner_view(*runner));
                }
                EnrollmentChangeOutcome::Raced { .. } => continue,
            }
        }
        Err(ServiceError::unavailable(format!(
            "runner {id}'s enrollment kept changing; try again"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_and_replayed_proofs_are_failed_authentications() {
        let stale = freshness_refusal(FreshnessError::OutsideWindow {
            difference_s: 400,
            window_s: 300,
        });
        assert_eq!(stale.code(), ErrorCode::Unauthorized);
        assert!(stale.message().contains("400 s"), "{}", stale.message());
        assert_eq!(
            freshness_refusal(FreshnessError::Replayed).code(),
            ErrorCode::Unauthorized
        );
        assert_eq!(
            freshness_refusal(FreshnessError::ReplayGuardFull { capacity: 1 }).code(),
            ErrorCode::Unavailable
        );
    }
}
