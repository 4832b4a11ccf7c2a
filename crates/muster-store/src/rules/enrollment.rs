//! Runners that registered themselves with a key, as the store keeps them: whether a
//! registration still stands on what the gate decided from, how long the token it replaces keeps
//! working, and the audit entry of a revocation that a key's removal causes.

use muster_core::{Enrollment, RunnerId, Timestamp};

use crate::{KeyRegistration, NewAuditEntry, RegistrationOutcome, RunnerCredentials, StoreError};

/// What a backend sets on a runner row to revoke it: no token works any more.
pub(crate) const CLEAR_TOKENS: &str = "token_hash = NULL, token_expires_at = NULL, \
     previous_token_hash = NULL, previous_token_expires_at = NULL";

/// An enrollment column read back.
pub(crate) fn stored_enrollment(text: &str) -> Result<Enrollment, StoreError> {
    Enrollment::parse(text)
        .ok_or_else(|| StoreError::Internal(format!("stored enrollment '{text}'")))
}

/// A token's holder as read by the token's hash: the runner's id, its enrollment, and the
/// expiry of the token that matched.
pub(crate) fn runner_credentials(
    id: &[u8],
    enrollment: &str,
    expires_at: Option<i64>,
) -> Result<RunnerCredentials, StoreError> {
    Ok(RunnerCredentials {
        runner: RunnerId::from_slice(id)
            .ok_or_else(|| StoreError::Internal("bad runner id".into()))?,
        enrollment: stored_enrollment(enrollment)?,
        expires_at: expires_at.map(Timestamp),
    })
}

/// What the store holds of a key's runner when a registration of that key commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoredRegistration {
    pub(crate) enrollment: Enrollment,
    /// The signed timestamp of its last accepted registration (`None` for a runner that never
    /// registered itself).
    pub(crate) registered_at: Option<Timestamp>,
}

/// Why `registration` may not be written over what the store holds (`stored`: the key's live
/// runner, if any; `key_allowed_now`: whether the key is on the allowlist now), or `None` when
/// it may. A registration not newer than the key's last is a replay (every coordinator sharing
/// the store refuses it, whichever accepted the first); a gate decision made on an enrollment or
/// an allowlist that changed since is made again.
pub(crate) fn registration_refusal(
    registration: &KeyRegistration,
    stored: Option<StoredRegistration>,
    key_allowed_now: bool,
) -> Option<RegistrationOutcome> {
    if let Some(last) = stored.and_then(|stored| stored.registered_at)
        && registration.signed_at <= last
    {
        return Some(RegistrationOutcome::NotNewer { last });
    }
    let enrollment_now = stored.map(|stored| stored.enrollment);
    if enrollment_now != registration.decided_from
        || key_allowed_now != registration.key_was_allowed
    {
        return Some(RegistrationOutcome::Changed);
    }
    None
}

/// Until when the token a registration replaces keeps working: the overlap the registration
/// grants, or the token's own expiry if that comes first (a renewal never extends a token).
/// `None` when there was no token.
pub(crate) fn previous_token_expiry(
    had_token: bool,
    current_expires_at: Option<Timestamp>,
    overlap_until: Timestamp,
) -> Option<Timestamp> {
    if !had_token {
        return None;
    }
    Some(match current_expires_at {
        Some(expires_at) => expires_at.min(overlap_until),
        None => overlap_until,
    })
}

/// The audit action of a runner losing its tokens and leases because its key was removed
/// (the store writes it, in the commit of the removal).
pub const RUNNER_REVOKED: &str = "runner.revoked";

/// The entry recording that `runner` was revoked by the removal recorded as `removal`.
pub(crate) fn revocation_entry(removal: &NewAuditEntry, runner: RunnerId) -> NewAuditEntry {
    NewAuditEntry {
        at: removal.at,
        actor: removal.actor.clone(),
        action: RUNNER_REVOKED.to_string(),
        subject: format!("runner:{runner}"),
        detail: serde_json::json!({
            "cause": "runner_key.removed",
            "key_fingerprint": removal.subject,
        }),
        organization_id: removal.organization_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use muster_core::Capabilities;

    use super::*;
    use crate::rules::testing::runner;

    fn registration(signed_at: i64, decided_from: Option<Enrollment>) -> KeyRegistration {
        KeyRegistration {
            new_runner_id: runner(1),
            key_fingerprint: "sha256:00".into(),
            public_key: "AA==".into(),
            name: "r".into(),
            hostname: "h".into(),
            organization_id: None,
            kinds: vec!["a".into()],
            capabilities: Capabilities::default(),
            enrollment: Enrollment::Enrolled,
            decided_from,
            key_was_allowed: true,
            token_hash: [0; 32],
            token_expires_at: Timestamp(10_000),
            previous_token_until: Timestamp(5_000),
            signed_at: Timestamp(signed_at),
            now: Timestamp(signed_at),
        }
    }

    #[test]
    fn a_registration_stands_only_on_what_the_gate_decided_from_and_only_once() {
        let enrolled_at = |at: Option<i64>| StoredRegistration {
            enrollment: Enrollment::Enrolled,
            registered_at: at.map(Timestamp),
        };
        assert_eq!(
            registration_refusal(&registration(5, None), None, true),
            None
        );
        assert_eq!(
            registration_refusal(
                &registration(5, Some(Enrollment::Enrolled)),
                Some(enrolled_at(Some(4))),
                true
            ),
            None
        );
        for last in [5, 6] {
            assert_eq!(
                registration_refusal(
                    &registration(5, Some(Enrollment::Enrolled)),
                    Some(enrolled_at(Some(last))),
                    true
                ),
                Some(RegistrationOutcome::NotNewer {
                    last: Timestamp(last)
                }),
                "signed at 5, the last at {last}"
            );
        }
        assert_eq!(
            registration_refusal(
                &registration(5, Some(Enrollment::Enrolled)),
                Some(enrolled_at(None)),
                true
            ),
            None,
            "a runner that never registered itself has no last registration"
        );
        assert_eq!(
            registration_refusal(&registration(5, None), Some(enrolled_at(Some(1))), true),
            Some(RegistrationOutcome::Changed),
            "another registration of the key made its runner meanwhile"
        );
        assert_eq!(
            registration_refusal(
                &registration(5, Some(Enrollment::Pending)),
                Some(enrolled_at(Some(1))),
                true
            ),
            Some(RegistrationOutcome::Changed),
            "approved meanwhile"
        );
        assert_eq!(
            registration_refusal(&registration(5, None), None, false),
            Some(RegistrationOutcome::Changed),
            "the key left the allowlist meanwhile"
        );
    }

    #[test]
    fn a_replaced_token_keeps_working_for_the_overlap_at_most() {
        let overlap_until = Timestamp(1_000);
        assert_eq!(previous_token_expiry(false, None, overlap_until), None);
        assert_eq!(
            previous_token_expiry(true, None, overlap_until),
            Some(overlap_until)
        );
        assert_eq!(
            previous_token_expiry(true, Some(Timestamp(5_000)), overlap_until),
            Some(overlap_until)
        );
        assert_eq!(
            previous_token_expiry(true, Some(Timestamp(400)), overlap_until),
            Some(Timestamp(400)),
            "a renewal never extends a token"
        );
    }

    #[test]
    fn a_revocation_is_recorded_by_the_actor_of_the_removal() {
        let removal = NewAuditEntry {
            at: Timestamp(7),
            actor: "admin".into(),
            action: "runner_key.removed".into(),
            subject: "sha256:ab".into(),
            detail: serde_json::json!({}),
            organization_id: None,
        };
        let entry = revocation_entry(&removal, runner(3));
        assert_eq!(entry.action, RUNNER_REVOKED);
        assert_eq!(entry.actor, "admin");
        assert_eq!(entry.at, Timestamp(7));
        assert_eq!(entry.subject, format!("runner:{}", runner(3)));
        assert_eq!(entry.detail["key_fingerprint"], "sha256:ab");
    }
}
