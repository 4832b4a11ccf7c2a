//! Who may do what: every principal against every action, as one table. A new action or
//! principal must be added here, or this test does not compile its match.

use muster_core::{Action, Audience, Principal, RunnerId, Timestamp, admit, authorize};

fn runner() -> Principal {
    Principal::Runner(RunnerId::new(Timestamp(1_800_000_000_000), 7))
}

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
            | Action::ReadArtifacts,
        ) => true,
        (Principal::BootstrapAdmin, Action::RunnerProtocol) => false,
        (Principal::Runner(_), Action::RunnerProtocol) => true,
        (
            Principal::Runner(_),
            Action::ReadJobs
            | Action::SubmitJobs
            | Action::SteerJobs
            | Action::ReadRunners
            | Action::ManageRunners
            | Action::UploadArtifacts
            | Action::ReadArtifacts,
        ) => false,
    }
}

#[test]
fn every_principal_against_every_action() {
    for principal in [Principal::BootstrapAdmin, runner()] {
        for action in Action::ALL {
            let answer = authorize(&principal, *action);
            assert_eq!(
                answer.is_ok(),
                expected(&principal, *action),
                "{principal:?} {action:?}: {answer:?}"
            );
            // Allowed exactly when the principal belongs to the action's audience.
            assert_eq!(answer.is_ok(), admit(&principal, action.audience()).is_ok());
        }
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
