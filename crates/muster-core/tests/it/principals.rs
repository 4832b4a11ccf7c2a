//! Who may do what: every principal against every action, as one table. A new action or
//! principal must be added here, or this test does not compile its match.

use muster_core::{Action, Audience, ErrorCode, Principal, RunnerId, Timestamp, admit, authorize};

fn runner() -> Principal {
    Principal::Runner(RunnerId::new(Timestamp(1_800_000_000_000), 7))
}

fn pending_runner() -> Principal {
    Principal::PendingRunner(RunnerId::new(Timestamp(1_800_000_000_000), 8))
}

const USER_ACTIONS: &[Action] = &[
    Action::ReadJobs,
    Action::SubmitJobs,
    Action::SteerJobs,
    Action::ReadRunners,
    Action::ManageRunners,
    Action::UploadArtifacts,
    Action::ReadArtifacts,
    Action::ReadRunnerKeys,
    Action::ManageRunnerKeys,
    Action::ReadKinds,
    Action::ManageKinds,
    Action::ReadAudit,
    Action::ManageOrganizations,
];

/// The expected answer: `true` allowed.
fn expected(principal: &Principal, action: Action) -> bool {
    match (principal, action) {
        (
            Principal::BootstrapAdmin,
            Action::ReadJobs
            | Action::SubmitJobs
            | Action::SteerJobs
            | Action::ReadRunners
            | Action::ManageRunners
            | Action::UploadArtifacts
            | Action::ReadArtifacts
            | Action::ReadRunnerKeys
            | Action::ManageRunnerKeys
            | Action::ReadKinds
            | Action::ManageKinds
            | Action::ReadAudit
            | Action::ManageOrganizations,
        ) => true,
        (Principal::BootstrapAdmin, Action::RunnerProtocol | Action::RunnerHeartbeat) => false,
        (Principal::Runner(_), Action::RunnerProtocol | Action::RunnerHeartbeat) => true,
        (Principal::PendingRunner(_), Action::RunnerHeartbeat) => true,
        (Principal::PendingRunner(_), Action::RunnerProtocol) => false,
        (Principal::Runner(_) | Principal::PendingRunner(_), action) => {
            assert!(
                USER_ACTIONS.contains(&action),
                "{action:?} is a user action"
            );
            false
        }
    }
}

#[test]
fn every_principal_against_every_action() {
    for principal in [Principal::BootstrapAdmin, runner(), pending_runner()] {
        for action in Action::ALL {
            let answer = authorize(&principal, *action);
            assert_eq!(
                answer.is_ok(),
                expected(&principal, *action),
                "{principal:?} {action:?}: {answer:?}"
            );
            if let Err(denied) = &answer {
                // Refused outright when the principal is not of the action's audience; a
                // pending runner on the runner routes is told why it may not work yet.
                let expected_code = match principal {
                    Principal::PendingRunner(_) if action.audience() == Audience::Runners => {
                        ErrorCode::RunnerNotEnrolled
                    }
                    _ => ErrorCode::Forbidden,
                };
                assert_eq!(denied.code, expected_code, "{principal:?} {action:?}");
            }
        }
    }
    for action in Action::ALL {
        assert_eq!(
            authorize(&runner(), *action).is_ok(),
            admit(&runner(), action.audience()).is_ok(),
            "an enrolled runner may take every runner action: {action:?}"
        );
    }
}

#[test]
fn the_wrong_audience_is_refused_with_a_message_naming_the_token_to_use() {
    let denied = admit(&runner(), Audience::Users).expect_err("a runner on a user route");
    assert!(denied.message.contains("runner token"), "{denied}");
    let denied = admit(&Principal::BootstrapAdmin, Audience::Runners).expect_err("admin");
    assert!(denied.message.contains("admin token"), "{denied}");
    assert!(runner().runner_id().is_some());
    assert_eq!(Principal::BootstrapAdmin.runner_id(), None);
}
