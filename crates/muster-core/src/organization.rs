//! Organizations and roles, as rules: which role an action needs, what a token scoped to
//! organizations may see, which tokens an admin may mint, and which jobs a runner may take.
//! Pure: the service layer calls these with what it read; the store applies the same scope in
//! its queries so that nothing of another organization is ever read for a caller.

use std::fmt;

use crate::principal::{Action, Denied};
use crate::{ErrorCode, JobSpecError, check_organization_id};

/// The organization that always exists: a single-team install lives in it without naming it.
pub const DEFAULT_ORGANIZATION: &str = "default";

/// The id of an organization (`default`, or the id the coordinator gave it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrganizationId(String);

impl OrganizationId {
    /// An id as a caller sent it, checked as every organization id is.
    pub fn parse(text: &str) -> Result<OrganizationId, JobSpecError> {
        check_organization_id(text)?;
        Ok(OrganizationId(text.to_string()))
    }

    pub fn default_organization() -> OrganizationId {
        OrganizationId(DEFAULT_ORGANIZATION.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrganizationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a user token may do, each role including every one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read jobs, logs, DAGs, artifacts, runners, kinds and workloads.
    Viewer,
    /// Also submit, cancel and retry jobs, and upload artifacts.
    Submitter,
    /// Also create, delete, approve and reject runners; runner keys; kind rules.
    Operator,
    /// Also user tokens and the audit log of its organizations.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Submitter, Role::Operator, Role::Admin];

    /// The contract's name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Submitter => "submitter",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// A role by its contract name, exactly as written.
    pub fn parse(text: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| UnknownRole(text.chars().take(40).collect()))
    }

    /// Why this role may not take an action that needs `needed`.
    fn short_of(self, needed: Role) -> Denied {
        Denied {
            code: ErrorCode::Forbidden,
            message: match needed {
                Role::Viewer => "this call needs the viewer role",
                Role::Submitter => {
                    "this call needs the submitter role (or operator or admin); the token's role is below it"
                }
                Role::Operator => {
                    "this call needs the operator role (or admin); the token's role is below it"
                }
                Role::Admin => "this call needs the admin role; the token's role is below it",
            },
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is none of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role: '{0}' is not a role; use viewer, submitter, operator or admin")]
pub struct UnknownRole(String);

/// Which organizations a user token acts in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OrganizationScope {
    /// Every organization, those created later too.
    Every,
    /// This one only: the others do not exist for the token.
    One(OrganizationId),
}

impl OrganizationScope {
    /// Whether something of `organization` exists for a token of this scope.
    pub fn covers(&self, organization: &OrganizationId) -> bool {
        match self {
            OrganizationScope::Every => true,
            OrganizationScope::One(own) => own == organization,
        }
    }

    /// The organization a new object goes to when the caller names `asked` (or none): a scoped
    /// token's own when it names none; `default` for an every-organization token that names
    /// none. Another organization than a scoped token's own answers as if it did not exist.
    pub fn organization_for_new(
        &self,
        asked: Option<&OrganizationId>,
    ) -> Result<OrganizationId, NotInScope> {
        match (self, asked) {
            (OrganizationScope::Every, Some(asked)) => Ok(asked.clone()),
            (OrganizationScope::Every, None) => Ok(OrganizationId::default_organization()),
            (OrganizationScope::One(own), None) => Ok(own.clone()),
            (OrganizationScope::One(own), Some(asked)) if own == asked => Ok(own.clone()),
            (OrganizationScope::One(_), Some(_)) => Err(NotInScope),
        }
    }
}

/// Something of an organization the caller's token does not cover: answered exactly as an id
/// that does not exist (404), so a token learns nothing of other organizations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not found")]
pub struct NotInScope;

/// Who may take an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// A user token of this role or above (and the bootstrap admin token).
    Role(Role),
    /// The bootstrap admin token alone: no user token, whatever its role.
    BootstrapAdmin,
    /// A runner token.
    Runner,
}

/// Who may take `action`.
pub fn requirement(action: Action) -> Requirement {
    match action {
        Action::ReadJobs
        | Action::ReadRunners
        | Action::ReadArtifacts
        | Action::ReadKinds
        | Action::ReadWorkloads => Requirement::Role(Role::Viewer),
        Action::SubmitJobs | Action::SteerJobs | Action::UploadArtifacts => {
            Requirement::Role(Role::Submitter)
        }
        Action::ManageRunners
        | Action::ReadRunnerKeys
        | Action::ManageRunnerKeys
        | Action::ManageKinds
        | Action::ManageWorkloads => Requirement::Role(Role::Operator),
        Action::ReadAudit | Action::ManageUserTokens => Requirement::Role(Role::Admin),
        Action::ManageOrganizations => Requirement::BootstrapAdmin,
        Action::RunnerProtocol | Action::RunnerHeartbeat => Requirement::Runner,
    }
}

/// The role `action` needs of a user token; `None` when no role is enough.
pub fn required_role(action: Action) -> Option<Role> {
    match requirement(action) {
        Requirement::Role(role) => Some(role),
        Requirement::BootstrapAdmin | Requirement::Runner => None,
    }
}

/// Whether a user token of `role` may take `action` at all (its scope decides where).
pub fn role_permits(role: Role, action: Action) -> Result<(), Denied> {
    match requirement(action) {
        Requirement::Role(needed) if role >= needed => Ok(()),
        Requirement::Role(needed) => Err(role.short_of(needed)),
        Requirement::BootstrapAdmin => Err(Denied {
            code: ErrorCode::Forbidden,
            message: "organizations are managed with the bootstrap admin token only (MUSTER_ADMIN_TOKEN or admin.token), not a user token",
        }),
        Requirement::Runner => Err(Denied {
            code: ErrorCode::Forbidden,
            message: "runner routes take a runner token, not a user token",
        }),
    }
}

/// A user token to mint: its role and where it acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub role: Role,
    pub scope: OrganizationScope,
}

/// Why an admin may not mint a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantRefused {
    /// Only admins mint tokens.
    #[error("minting user tokens needs the admin role")]
    NotAdmin,
    /// A scoped admin naming another organization: as if it did not exist.
    #[error("organization_id: no such organization")]
    OtherOrganization,
    /// A scoped admin asking for a token of every organization.
    #[error(
        "organization_id: a token of every organization can only be minted by an admin of every organization"
    )]
    BeyondScope,
}

impl GrantRefused {
    pub fn code(&self) -> ErrorCode {
        match self {
            GrantRefused::NotAdmin | GrantRefused::BeyondScope => ErrorCode::Forbidden,
            GrantRefused::OtherOrganization => ErrorCode::NotFound,
        }
    }
}

/// Whether a token of `minter` may mint `grant`: admins only, never a wider scope than their
/// own. A role is never above the minter's own, since only admins mint and admin is the top.
pub fn may_grant(minter: &TokenGrant, grant: &TokenGrant) -> Result<(), GrantRefused> {
    if minter.role != Role::Admin {
        return Err(GrantRefused::NotAdmin);
    }
    match (&minter.scope, &grant.scope) {
        (OrganizationScope::Every, _) => Ok(()),
        (OrganizationScope::One(own), OrganizationScope::One(asked)) if own == asked => Ok(()),
        (OrganizationScope::One(_), OrganizationScope::One(_)) => {
            Err(GrantRefused::OtherOrganization)
        }
        (OrganizationScope::One(_), OrganizationScope::Every) => Err(GrantRefused::BeyondScope),
    }
}

/// Whether a runner of `runner_organization` (`None`: cluster-scoped) may take a job of
/// `job_organization`, whose organization allows shared runners or not. The store's claim
/// queries state the same rule in SQL; this is the rule they are tested against.
pub fn runner_may_take(
    runner_organization: Option<&str>,
    job_organization: &str,
    job_organization_allows_shared_runners: bool,
) -> bool {
    match runner_organization {
        Some(own) => own == job_organization,
        None => job_organization_allows_shared_runners,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(id: &str) -> OrganizationId {
        OrganizationId::parse(id).expect("a valid organization id")
    }

    #[test]
    fn every_action_needs_the_role_the_contract_gives_it_and_each_role_includes_the_ones_before() {
        use Role::*;
        // action, then whether viewer, submitter, operator, admin may take it.
        let table: &[(Action, [bool; 4])] = &[
            (Action::ReadJobs, [true, true, true, true]),
            (Action::ReadRunners, [true, true, true, true]),
            (Action::ReadArtifacts, [true, true, true, true]),
            (Action::ReadKinds, [true, true, true, true]),
            (Action::SubmitJobs, [false, true, true, true]),
            (Action::SteerJobs, [false, true, true, true]),
            (Action::UploadArtifacts, [false, true, true, true]),
            (Action::ManageRunners, [false, false, true, true]),
            (Action::ReadRunnerKeys, [false, false, true, true]),
            (Action::ManageRunnerKeys, [false, false, true, true]),
            (Action::ManageKinds, [false, false, true, true]),
            (Action::ReadAudit, [false, false, false, true]),
            (Action::ManageUserTokens, [false, false, false, true]),
            (Action::ManageOrganizations, [false, false, false, false]),
            (Action::RunnerProtocol, [false, false, false, false]),
            (Action::RunnerHeartbeat, [false, false, false, false]),
            (Action::ReadWorkloads, [true, true, true, true]),
            (Action::ManageWorkloads, [false, false, true, true]),
        ];
        assert_eq!(
            table.len(),
            Action::ALL.len(),
            "every action is in the table"
        );
        for (action, allowed) in table {
            for (role, allowed) in [Viewer, Submitter, Operator, Admin]
                .into_iter()
                .zip(allowed)
            {
                let outcome = role_permits(role, *action);
                assert_eq!(
                    outcome.is_ok(),
                    *allowed,
                    "{role} × {action:?}: {outcome:?}"
                );
                if let Err(denied) = outcome {
                    assert_eq!(denied.code, ErrorCode::Forbidden);
                    let names = match requirement(*action) {
                        Requirement::Role(needed) => needed.as_str(),
                        Requirement::BootstrapAdmin => "bootstrap admin",
                        Requirement::Runner => "runner token",
                    };
                    assert!(
                        denied.message.contains(names),
                        "the refusal says what is needed: {}",
                        denied.message
                    );
                }
            }
        }
    }

    #[test]
    fn roles_are_read_by_their_exact_names_only() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        for text in ["Admin", "root", "", " viewer", "owner"] {
            let error = Role::parse(text).expect_err(text).to_string();
            assert!(
                error.contains("viewer, submitter, operator or admin"),
                "{error}"
            );
        }
        let long = "x".repeat(10_000);
        assert!(Role::parse(&long).expect_err("long").to_string().len() < 200);
    }

    #[test]
    fn a_scoped_token_sees_its_own_organization_only() {
        let a = org("team-a");
        let b = org("team-b");
        let scoped = OrganizationScope::One(a.clone());
        assert!(scoped.covers(&a));
        assert!(!scoped.covers(&b));
        assert!(!scoped.covers(&OrganizationId::default_organization()));
        assert!(OrganizationScope::Every.covers(&b));
    }

    #[test]
    fn a_new_object_goes_to_the_scoped_organization_or_default() {
        let a = org("team-a");
        let b = org("team-b");
        let scoped = OrganizationScope::One(a.clone());
        // (scope, organization asked, where it goes)
        let table: Vec<(
            &OrganizationScope,
            Option<&OrganizationId>,
            Result<OrganizationId, NotInScope>,
        )> = vec![
            (&scoped, None, Ok(a.clone())),
            (&scoped, Some(&a), Ok(a.clone())),
            (&scoped, Some(&b), Err(NotInScope)),
            (
                &OrganizationScope::Every,
                None,
                Ok(OrganizationId::default_organization()),
            ),
            (&OrganizationScope::Every, Some(&b), Ok(b.clone())),
        ];
        for (scope, asked, expected) in table {
            assert_eq!(
                scope.organization_for_new(asked),
                expected,
                "{scope:?} asking {asked:?}"
            );
        }
    }

    #[test]
    fn only_admins_mint_tokens_and_never_wider_than_their_own_scope() {
        let a = org("team-a");
        let b = org("team-b");
        let grant = |role, scope| TokenGrant { role, scope };
        let admin_a = grant(Role::Admin, OrganizationScope::One(a.clone()));
        let admin_every = grant(Role::Admin, OrganizationScope::Every);
        let operator_a = grant(Role::Operator, OrganizationScope::One(a.clone()));
        let table = [
            (
                &admin_a,
                grant(Role::Viewer, OrganizationScope::One(a.clone())),
                Ok(()),
            ),
            (
                &admin_a,
                grant(Role::Admin, OrganizationScope::One(a.clone())),
                Ok(()),
            ),
            (
                &admin_a,
                grant(Role::Viewer, OrganizationScope::One(b.clone())),
                Err(GrantRefused::OtherOrganization),
            ),
            (
                &admin_a,
                grant(Role::Viewer, OrganizationScope::Every),
                Err(GrantRefused::BeyondScope),
            ),
            (
                &admin_every,
                grant(Role::Admin, OrganizationScope::Every),
                Ok(()),
            ),
            (
                &admin_every,
                grant(Role::Submitter, OrganizationScope::One(b.clone())),
                Ok(()),
            ),
            (
                &operator_a,
                grant(Role::Viewer, OrganizationScope::One(a.clone())),
                Err(GrantRefused::NotAdmin),
            ),
        ];
        for (minter, asked, expected) in table {
            assert_eq!(
                may_grant(minter, &asked),
                expected,
                "{minter:?} minting {asked:?}"
            );
        }
        assert_eq!(GrantRefused::OtherOrganization.code(), ErrorCode::NotFound);
        assert_eq!(GrantRefused::BeyondScope.code(), ErrorCode::Forbidden);
    }

    #[test]
    fn a_runner_takes_its_own_organizations_jobs_and_a_shared_one_those_that_allow_it() {
        let (a, b) = ("team-a", "team-b");
        // (runner's organization, job's organization, the job's organization allows shared
        // runners, may take)
        let table = [
            (Some(a), a, true, true),
            (Some(a), a, false, true),
            (Some(a), b, true, false),
            (Some(a), b, false, false),
            (None, a, true, true),
            (None, a, false, false),
        ];
        for (runner, job, shared, expected) in table {
            assert_eq!(
                runner_may_take(runner, job, shared),
                expected,
                "runner of {runner:?}, job of {job}, shared allowed {shared}"
            );
        }
    }

    #[test]
    fn organization_ids_are_checked_like_every_id() {
        assert_eq!(OrganizationId::default_organization().as_str(), "default");
        assert!(OrganizationId::parse("team-a").is_ok());
        for bad in ["", "a\u{0}b", &"x".repeat(1_000)] {
            assert!(OrganizationId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
