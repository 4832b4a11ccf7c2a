//! Who may do what: every principal against every action, as one table. A new action or
//! principal must be added here, or this test does not compile its match.

use muster_core::organization::{OrganizationId, OrganizationScope, Role};
use muster_core::{
    Action, Audience, ErrorCode, Principal, RunnerId, Timestamp, UserPrincipal, UserTokenId, admit,
    authorize,
};

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
    Action::ManageUserTokens,
    Action::ReadWorkloads,
    Action::ManageWorkloads,
];

fn user(role: Role, scope: OrganizationScope) -> Principal {
    Principal::User(UserPrincipal {
        token: UserTokenId(uuid::Uuid::from_u128(role as u128 + 1)),
        role,
        scope,
    })
}

fn team_a() -> OrganizationScope {
    OrganizationScope::One(OrganizationId::parse("team-a").expect("an organization id"))
}

/// Every user token there can be: each role, scoped to one organization and to every one.
fn users() -> Vec<Principal> {
    Role::ALL
        .into_iter()
        .flat_map(|role| [user(role, team_a()), user(role, OrganizationScope::Every)])
        .collect()
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
            | Action::ReadArtifacts
            | Action::ReadRunnerKeys
            | Action::ManageRunnerKeys
            | Action::ReadKinds
            | Action::ManageKinds
            | Action::ReadAudit
            | Action::ManageOrganizations
            | Action::ManageUserTokens
            | Action::ReadWorkloads
            | Action::ManageWorkloads,
        ) => true,
        // The roles, each including the ones before it; organizations are the bootstrap
        // admin's alone, and kind rules (cluster-wide) need a token of every organization.
        (Principal::User(user), action) => match action {
            Action::ReadJobs
            | Action::ReadRunners
            | Action::ReadArtifacts
            | Action::ReadKinds
            | Action::ReadWorkloads => true,
            Action::SubmitJobs | Action::SteerJobs | Action::UploadArtifacts => {
                user.role >= Role::Submitter
            }
            Action::ManageRunners
            | Action::ReadRunnerKeys
            | Action::ManageRunnerKeys
            | Action::ManageWorkloads => user.role >= Role::Operator,
            Action::ManageKinds => {
                user.role >= Role::Operator && user.scope == OrganizationScope::Every
            }
            Action::ReadAudit | Action::ManageUserTokens => user.role == Role::Admin,
            Action::ManageOrganizations | Action::RunnerProtocol | Action::RunnerHeartbeat => false,
        },
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
    let mut principals = vec![Principal::BootstrapAdmin, runner(), pending_runner()];
    principals.extend(users());
    for principal in principals {
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
    let denied = admit(
        &user(Role::Admin, OrganizationScope::Every),
        Audience::Runners,
    )
    .expect_err("a user token on a runner route");
    assert!(denied.message.contains("user token"), "{denied}");
}

#[test]
fn a_refused_role_is_told_the_role_the_call_needs() {
    let denied = authorize(&user(Role::Viewer, team_a()), Action::SteerJobs).expect_err("viewer");
    assert!(denied.message.contains("submitter"), "{denied}");
    let denied =
        authorize(&user(Role::Submitter, team_a()), Action::ManageRunners).expect_err("submitter");
    assert!(denied.message.contains("operator"), "{denied}");
    let denied =
        authorize(&user(Role::Operator, team_a()), Action::ManageUserTokens).expect_err("operator");
    assert!(denied.message.contains("admin"), "{denied}");
    let denied =
        authorize(&user(Role::Admin, team_a()), Action::ManageKinds).expect_err("scoped admin");
    assert!(denied.message.contains("cluster-wide"), "{denied}");
}

#[test]
fn a_scoped_user_sees_only_its_organization_and_a_runner_sees_none_by_scope() {
    let scoped = user(Role::Viewer, team_a());
    assert!(scoped.sees_organization("team-a"));
    assert!(!scoped.sees_organization("team-b"));
    assert!(!scoped.sees_organization("default"));
    assert_eq!(
        scoped.scoped_organization().map(OrganizationId::as_str),
        Some("team-a")
    );
    let every = user(Role::Viewer, OrganizationScope::Every);
    assert!(every.sees_organization("team-b") && every.scoped_organization().is_none());
    assert!(Principal::BootstrapAdmin.sees_organization("team-b"));
    assert!(!runner().sees_organization("team-a"));
    assert_eq!(runner().user_scope(), None);
}
