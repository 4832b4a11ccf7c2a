//! The enrollment of self-registering runners: every enrollment (and no runner at all) against
//! every operation, as one table written out row by row, plus the properties the table implies
//! and that must never break however the rules are rearranged.

use std::collections::HashSet;

use muster_core::Enrollment::{Enrolled, Pending, Rejected};
use muster_core::EnrollmentGate::{Allowlist, Approval, Closed};
use muster_core::EnrollmentRefusal::{KeyNotAllowed, KeyRejected, RegistrationClosed};
use muster_core::{
    Enrollment, EnrollmentGate, EnrollmentOperation, EnrollmentOutcome, EnrollmentRefusal,
    ErrorCode, enrollment_transition,
};

type Expected = Result<EnrollmentOutcome, EnrollmentRefusal>;

const fn register(gate: EnrollmentGate, key_allowed: bool) -> EnrollmentOperation {
    EnrollmentOperation::Register { gate, key_allowed }
}

const APPROVE: EnrollmentOperation = EnrollmentOperation::Approve;
const REJECT: EnrollmentOperation = EnrollmentOperation::Reject;
const KEY_REMOVED: EnrollmentOperation = EnrollmentOperation::KeyRemoved;

/// A successful registration: a new token in `enrollment`, nothing else.
fn issued(enrollment: Enrollment) -> Expected {
    Ok(EnrollmentOutcome {
        enrollment,
        revoke_tokens: false,
        add_key_to_allowlist: false,
        issue_token: true,
    })
}

/// `enrollment`, with every token of the runner revoked at once.
fn revoked(enrollment: Enrollment) -> Expected {
    Ok(EnrollmentOutcome {
        enrollment,
        revoke_tokens: true,
        add_key_to_allowlist: false,
        issue_token: false,
    })
}

/// Enrolled by an operator, with the key put on the allowlist.
fn approved() -> Expected {
    Ok(EnrollmentOutcome {
        enrollment: Enrolled,
        revoke_tokens: false,
        add_key_to_allowlist: true,
        issue_token: false,
    })
}

/// Every starting point: no runner with this key yet, then each enrollment.
fn every_current() -> Vec<Option<Enrollment>> {
    std::iter::once(None)
        .chain(Enrollment::ALL.into_iter().map(Some))
        .collect()
}

/// Every operation, registrations under every gate with the key on and off the allowlist.
fn every_operation() -> Vec<EnrollmentOperation> {
    let mut operations: Vec<EnrollmentOperation> = EnrollmentGate::ALL
        .into_iter()
        .flat_map(|gate| [register(gate, false), register(gate, true)])
        .collect();
    operations.extend([APPROVE, REJECT, KEY_REMOVED]);
    // No wildcard: a new operation does not compile until this list (and the table) has it.
    for operation in &operations {
        match operation {
            EnrollmentOperation::Register { .. }
            | EnrollmentOperation::Approve
            | EnrollmentOperation::Reject
            | EnrollmentOperation::KeyRemoved => {}
        }
    }
    operations
}

/// One row per starting point and operation, the expected answer written out.
fn table() -> Vec<(Option<Enrollment>, EnrollmentOperation, Expected)> {
    vec![
        // No runner with this key yet.
        (None, register(Allowlist, false), Err(KeyNotAllowed)),
        (None, register(Allowlist, true), issued(Enrolled)),
        (None, register(Approval, false), issued(Pending)),
        (None, register(Approval, true), issued(Enrolled)),
        (None, register(Closed, false), Err(RegistrationClosed)),
        (None, register(Closed, true), Err(RegistrationClosed)),
        // Not sent in practice (there is no runner to act on): read as pending.
        (None, APPROVE, approved()),
        (None, REJECT, revoked(Rejected)),
        (None, KEY_REMOVED, revoked(Pending)),
        // Pending.
        (
            Some(Pending),
            register(Allowlist, false),
            Err(KeyNotAllowed),
        ),
        (Some(Pending), register(Allowlist, true), issued(Enrolled)),
        (Some(Pending), register(Approval, false), issued(Pending)),
        (Some(Pending), register(Approval, true), issued(Enrolled)),
        (
            Some(Pending),
            register(Closed, false),
            Err(RegistrationClosed),
        ),
        (
            Some(Pending),
            register(Closed, true),
            Err(RegistrationClosed),
        ),
        (Some(Pending), APPROVE, approved()),
        (Some(Pending), REJECT, revoked(Rejected)),
        (Some(Pending), KEY_REMOVED, revoked(Pending)),
        // Enrolled.
        (
            Some(Enrolled),
            register(Allowlist, false),
            Err(KeyNotAllowed),
        ),
        (Some(Enrolled), register(Allowlist, true), issued(Enrolled)),
        (Some(Enrolled), register(Approval, false), issued(Pending)),
        (Some(Enrolled), register(Approval, true), issued(Enrolled)),
        (
            Some(Enrolled),
            register(Closed, false),
            Err(RegistrationClosed),
        ),
        (
            Some(Enrolled),
            register(Closed, true),
            Err(RegistrationClosed),
        ),
        (Some(Enrolled), APPROVE, approved()),
        (Some(Enrolled), REJECT, revoked(Rejected)),
        (Some(Enrolled), KEY_REMOVED, revoked(Pending)),
        // Rejected.
        (Some(Rejected), register(Allowlist, false), Err(KeyRejected)),
        (Some(Rejected), register(Allowlist, true), issued(Enrolled)),
        (Some(Rejected), register(Approval, false), Err(KeyRejected)),
        (Some(Rejected), register(Approval, true), issued(Enrolled)),
        (
            Some(Rejected),
            register(Closed, false),
            Err(RegistrationClosed),
        ),
        (
            Some(Rejected),
            register(Closed, true),
            Err(RegistrationClosed),
        ),
        (Some(Rejected), APPROVE, approved()),
        (Some(Rejected), REJECT, revoked(Rejected)),
        (Some(Rejected), KEY_REMOVED, revoked(Rejected)),
    ]
}

#[test]
fn every_transition_matches_the_table() {
    for (current, operation, expected) in table() {
        assert_eq!(
            enrollment_transition(current, operation),
            expected,
            "{current:?} under {operation:?}"
        );
    }
}

#[test]
fn the_table_covers_every_combination_once() {
    let rows: Vec<_> = table()
        .into_iter()
        .map(|(current, operation, _)| (current, operation))
        .collect();
    let distinct: HashSet<_> = rows.iter().copied().collect();
    assert_eq!(distinct.len(), rows.len(), "a combination appears twice");
    let every: HashSet<_> = every_current()
        .into_iter()
        .flat_map(|current| {
            every_operation()
                .into_iter()
                .map(move |operation| (current, operation))
        })
        .collect();
    assert_eq!(distinct, every);
}

#[test]
fn names_round_trip() {
    for enrollment in Enrollment::ALL {
        assert_eq!(Enrollment::parse(enrollment.as_str()), Some(enrollment));
        assert_eq!(enrollment.to_string(), enrollment.as_str());
    }
    for gate in EnrollmentGate::ALL {
        assert_eq!(EnrollmentGate::parse(gate.as_str()), Some(gate));
        assert_eq!(gate.to_string(), gate.as_str());
    }
    let names: Vec<_> = Enrollment::ALL
        .into_iter()
        .map(Enrollment::as_str)
        .collect();
    assert_eq!(names, ["pending", "enrolled", "rejected"]);
    let names: Vec<_> = EnrollmentGate::ALL
        .into_iter()
        .map(EnrollmentGate::as_str)
        .collect();
    assert_eq!(names, ["allowlist", "approval", "closed"]);
    for unknown in ["", "Pending", "approved", " closed", "open"] {
        assert_eq!(Enrollment::parse(unknown), None, "{unknown:?}");
        assert_eq!(EnrollmentGate::parse(unknown), None, "{unknown:?}");
    }
}

#[test]
fn the_default_gate_is_the_allowlist() {
    assert_eq!(EnrollmentGate::default(), Allowlist);
}

#[test]
fn refusals_map_to_their_error_codes() {
    let cases = [
        (KeyNotAllowed, ErrorCode::KeyNotAllowed, "key_not_allowed"),
        (KeyRejected, ErrorCode::KeyRejected, "key_rejected"),
        (
            RegistrationClosed,
            ErrorCode::RegistrationClosed,
            "registration_closed",
        ),
    ];
    for (refusal, code, name) in cases {
        assert_eq!(refusal.code(), code, "{refusal:?}");
        assert_eq!(refusal.code().as_str(), name, "{refusal:?}");
        assert!(!refusal.to_string().is_empty(), "{refusal:?}");
    }
}

#[test]
fn no_operation_but_register_issues_a_token() {
    for current in every_current() {
        for operation in every_operation() {
            let Ok(outcome) = enrollment_transition(current, operation) else {
                continue;
            };
            let is_register = matches!(operation, EnrollmentOperation::Register { .. });
            assert_eq!(
                outcome.issue_token, is_register,
                "{current:?} under {operation:?}"
            );
            if is_register || operation == APPROVE {
                assert!(!outcome.revoke_tokens, "{current:?} under {operation:?}");
            }
        }
    }
}

#[test]
fn a_rejected_runner_is_enrolled_only_by_an_operator() {
    // What a runner (or nobody) can do on its own: register with a key that is not on the
    // allowlist, under any gate, and have its key taken away. Approving and adding the key to
    // the allowlist are the operator's.
    let without_operator: Vec<_> = every_operation()
        .into_iter()
        .filter(|operation| {
            !matches!(
                operation,
                EnrollmentOperation::Approve
                    | EnrollmentOperation::Register {
                        key_allowed: true,
                        ..
                    }
            )
        })
        .collect();
    let mut reached = HashSet::from([Rejected]);
    let mut frontier = vec![Rejected];
    while let Some(current) = frontier.pop() {
        for &operation in &without_operator {
            // A refusal changes nothing.
            let next = enrollment_transition(Some(current), operation)
                .map_or(current, |outcome| outcome.enrollment);
            if reached.insert(next) {
                frontier.push(next);
            }
        }
    }
    assert_eq!(reached, HashSet::from([Rejected]));

    // And each of the operator's ways does enroll it.
    assert_eq!(enrollment_transition(Some(Rejected), APPROVE), approved());
    for gate in [Allowlist, Approval] {
        assert_eq!(
            enrollment_transition(Some(Rejected), register(gate, true)),
            issued(Enrolled)
        );
    }
}
