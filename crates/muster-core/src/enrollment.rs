//! Enrollment of self-registering runners: whether a runner that registered itself with its
//! Ed25519 key may work, must wait for an operator, or was turned away.
//!
//! The coordinator's gate mode (`--enrollment allowlist|approval|closed`) decides what happens to
//! a key it does not trust yet; the allowlist of keys and the operator's approve and reject
//! decide the rest. [`enrollment_transition`] is the one place these rules live, so every store
//! and front end answers the same way and the rules are tested without either. It says what must
//! happen (tokens issued or revoked, a key added to the allowlist); the caller does it.

use crate::ErrorCode;

/// Where a runner stands with the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Enrollment {
    /// Registered under the approval gate with a key not on the allowlist: its token may
    /// heartbeat, nothing more, until an operator approves it (or adds its key).
    Pending,
    /// Its key is trusted: it may claim and run jobs.
    Enrolled,
    /// An operator turned it away: its registrations are refused until an operator trusts its key
    /// explicitly.
    Rejected,
}

impl Enrollment {
    pub const ALL: [Enrollment; 3] = [
        Enrollment::Pending,
        Enrollment::Enrolled,
        Enrollment::Rejected,
    ];

    /// The name in storage and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Enrollment::Pending => "pending",
            Enrollment::Enrolled => "enrolled",
            Enrollment::Rejected => "rejected",
        }
    }

    /// The enrollment [`Enrollment::as_str`] names, if any.
    pub fn parse(text: &str) -> Option<Enrollment> {
        Enrollment::ALL
            .into_iter()
            .find(|enrollment| enrollment.as_str() == text)
    }
}

impl std::fmt::Display for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the coordinator does with a registration by a key it does not trust yet
/// (`--enrollment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EnrollmentGate {
    /// Only keys on the allowlist may register. The default: nothing runs jobs unless an
    /// operator put its key there.
    #[default]
    Allowlist,
    /// An unknown key registers as [`Enrollment::Pending`] and waits for an operator.
    Approval,
    /// No registration at all, not even by a trusted key.
    Closed,
}

impl EnrollmentGate {
    pub const ALL: [EnrollmentGate; 3] = [
        EnrollmentGate::Allowlist,
        EnrollmentGate::Approval,
        EnrollmentGate::Closed,
    ];

    /// The name on the command line and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            EnrollmentGate::Allowlist => "allowlist",
            EnrollmentGate::Approval => "approval",
            EnrollmentGate::Closed => "closed",
        }
    }

    /// The gate [`EnrollmentGate::as_str`] names, if any.
    pub fn parse(text: &str) -> Option<EnrollmentGate> {
        EnrollmentGate::ALL
            .into_iter()
            .find(|gate| gate.as_str() == text)
    }
}

impl std::fmt::Display for EnrollmentGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that changes a runner's enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnrollmentOperation {
    /// A signed registration by the runner's key; `key_allowed`: the key is on the allowlist now.
    Register {
        gate: EnrollmentGate,
        key_allowed: bool,
    },
    /// An operator approves the runner.
    Approve,
    /// An operator rejects the runner.
    Reject,
    /// The runner's key was taken off the allowlist.
    KeyRemoved,
}

/// What a transition decided; the caller carries it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnrollmentOutcome {
    pub enrollment: Enrollment,
    /// Whether the runner's tokens must stop working now (and its leases be released).
    pub revoke_tokens: bool,
    /// Whether the runner's key must be put on the allowlist (approval).
    pub add_key_to_allowlist: bool,
    /// Whether a new token is issued (a successful registration).
    pub issue_token: bool,
}

impl EnrollmentOutcome {
    /// A successful registration: a new token, nothing revoked.
    fn registered(enrollment: Enrollment) -> EnrollmentOutcome {
        EnrollmentOutcome {
            enrollment,
            revoke_tokens: false,
            add_key_to_allowlist: false,
            issue_token: true,
        }
    }

    /// A change that takes the runner's right to work away at once.
    fn revoked(enrollment: Enrollment) -> EnrollmentOutcome {
        EnrollmentOutcome {
            enrollment,
            revoke_tokens: true,
            add_key_to_allowlist: false,
            issue_token: false,
        }
    }
}

/// Why a registration was refused; nothing changed. The messages are for the operator of the
/// runner, who sees them in its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum EnrollmentRefusal {
    #[error(
        "this runner's key is not on the coordinator's allowlist; ask an operator to add the key \
         (or to run the coordinator with --enrollment approval)"
    )]
    KeyNotAllowed,
    #[error(
        "an operator rejected this runner; ask an operator to approve it or to add its key to the \
         allowlist"
    )]
    KeyRejected,
    #[error(
        "the coordinator accepts no registrations (--enrollment closed); ask an operator to open \
         enrollment"
    )]
    RegistrationClosed,
}

impl EnrollmentRefusal {
    /// The contract's error code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            EnrollmentRefusal::KeyNotAllowed => ErrorCode::KeyNotAllowed,
            EnrollmentRefusal::KeyRejected => ErrorCode::KeyRejected,
            EnrollmentRefusal::RegistrationClosed => ErrorCode::RegistrationClosed,
        }
    }
}

/// The enrollment a runner moves to under `operation`, and what must happen with it.
///
/// `current`: `None` when no runner has registered with this key yet. That only means something
/// for a registration, which is where a runner comes into being; an operator's approve or reject
/// and the removal of a key act on runners that exist, so a caller never sends them with `None`.
/// Should one do so anyway, `None` is read as [`Enrollment::Pending`], a runner nobody decided on
/// yet, which is what "no runner" is closest to; the answer is then never a refusal and never
/// grants more than the operator asked for.
///
/// The rules, and why:
/// - `Register` under [`EnrollmentGate::Closed`] is refused `registration_closed` before anything
///   else is looked at: closed means no registration at all, trusted key or not.
/// - `Register` by a runner that is new, pending or enrolled: a key on the allowlist enrolls it; a
///   key off the list is refused `key_not_allowed` under the allowlist gate and registers as
///   pending under the approval gate. The allowlist is read at every registration, so an enrolled
///   runner whose key left the list does not keep its standing by registering again.
/// - `Register` by a rejected runner: refused `key_rejected` under any open gate, or an operator's
///   rejection would be undone by the runner simply registering again under approval. Only a key
///   on the allowlist enrolls it: an operator put it there after the rejection, and that explicit
///   trust wins over the earlier rejection.
/// - `Approve` enrolls from any state and puts the key on the allowlist, so approval survives the
///   runner's next registration under any gate. Approving an enrolled runner changes nothing but
///   still makes sure its key is on the list.
/// - `Reject` makes the runner rejected from any state and revokes its tokens: a rejected runner
///   loses its tokens and its leases at once, not when they expire.
/// - `KeyRemoved` revokes the runner's tokens at once from any state. An enrolled runner becomes
///   pending: it must be approved, or its key added again, before it works again. A pending
///   runner stays pending and a rejected one stays rejected.
///
/// Only a registration issues a token, and neither a registration nor an approval revokes one.
pub fn enrollment_transition(
    current: Option<Enrollment>,
    operation: EnrollmentOperation,
) -> Result<EnrollmentOutcome, EnrollmentRefusal> {
    match operation {
        EnrollmentOperation::Register { gate, key_allowed } => register(current, gate, key_allowed),
        EnrollmentOperation::Approve => Ok(EnrollmentOutcome {
            enrollment: Enrollment::Enrolled,
            revoke_tokens: false,
            add_key_to_allowlist: true,
            issue_token: false,
        }),
        EnrollmentOperation::Reject => Ok(EnrollmentOutcome::revoked(Enrollment::Rejected)),
        EnrollmentOperation::KeyRemoved => {
            let enrollment = match current.unwrap_or(Enrollment::Pending) {
                Enrollment::Pending | Enrollment::Enrolled => Enrollment::Pending,
                Enrollment::Rejected => Enrollment::Rejected,
            };
            Ok(EnrollmentOutcome::revoked(enrollment))
        }
    }
}

/// The rules for `Register`, in the order they are checked: the first arm that fits decides.
fn register(
    current: Option<Enrollment>,
    gate: EnrollmentGate,
    key_allowed: bool,
) -> Result<EnrollmentOutcome, EnrollmentRefusal> {
    match (gate, key_allowed, current) {
        (EnrollmentGate::Closed, _, _) => Err(EnrollmentRefusal::RegistrationClosed),
        (_, true, _) => Ok(EnrollmentOutcome::registered(Enrollment::Enrolled)),
        (_, false, Some(Enrollment::Rejected)) => Err(EnrollmentRefusal::KeyRejected),
        (EnrollmentGate::Allowlist, false, _) => Err(EnrollmentRefusal::KeyNotAllowed),
        (EnrollmentGate::Approval, false, _) => {
            Ok(EnrollmentOutcome::registered(Enrollment::Pending))
        }
    }
}
