//! Who is calling, and what they may do: every decision about what a call may do is made from
//! its [`Principal`] here, by [`authorize`], whatever the front end (HTTP, gRPC, dashboard).
//!
//! The principals: the bootstrap admin (the one admin token, admin of every organization and
//! alone able to manage organizations), a user token (a role, in one organization or in all)
//! and a runner (enrolled, or waiting for approval). The front ends only name the [`Audience`]
//! of a route and the [`Action`] a call takes.

use crate::organization::{OrganizationId, OrganizationScope, Role, role_permits};
use crate::{ErrorCode, RunnerId, UserTokenId};

/// The prefix of every runner token (the contract's `muster_runner_...`).
pub const RUNNER_TOKEN_PREFIX: &str = "muster_runner_";

/// The prefix of every user token (the contract's `muster_user_...`).
pub const USER_TOKEN_PREFIX: &str = "muster_user_";

/// The caller of one request, resolved from its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The bootstrap admin token: every user and operator action, in every organization.
    BootstrapAdmin,
    /// A user token: what its role allows, in its organization (or in every one).
    User(UserPrincipal),
    /// A registered runner: the runner protocol, for its own jobs.
    Runner(RunnerId),
    /// A runner that registered itself with a key an operator has not approved yet: it may say
    /// it is alive (runner heartbeats), nothing else.
    PendingRunner(RunnerId),
}

impl Principal {
    /// The runner this principal is, if it is one.
    pub fn runner_id(&self) -> Option<RunnerId> {
        match self {
            Principal::Runner(runner) | Principal::PendingRunner(runner) => Some(*runner),
            Principal::BootstrapAdmin | Principal::User(_) => None,
        }
    }

    /// The organizations a user principal acts in; `None` for a runner, whose reach is its
    /// leases, not a scope.
    pub fn user_scope(&self) -> Option<&OrganizationScope> {
        const EVERY: &OrganizationScope = &OrganizationScope::Every;
        match self {
            Principal::BootstrapAdmin => Some(EVERY),
            Principal::User(user) => Some(&user.scope),
            Principal::Runner(_) | Principal::PendingRunner(_) => None,
        }
    }

    /// Whether this principal may see (and act on) objects of `organization`: a user principal
    /// whose scope covers it. Objects of other organizations answer 404, as if not there.
    pub fn sees_organization(&self, organization: &str) -> bool {
        match self.user_scope() {
            Some(OrganizationScope::Every) => true,
            Some(OrganizationScope::One(own)) => own.as_str() == organization,
            None => false,
        }
    }

    /// The one organization a scoped user principal is limited to, if it is.
    pub fn scoped_organization(&self) -> Option<&OrganizationId> {
        match self.user_scope() {
            Some(OrganizationScope::One(own)) => Some(own),
            _ => None,
        }
    }
}

/// A user token's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPrincipal {
    pub token: UserTokenId,
    pub role: Role,
    pub scope: OrganizationScope,
}

/// Who a route (or a gRPC service) is for. A token of the other audience is refused, as the
/// contract says ("a runner token on a user/admin route, or an admin token on a runner route:
/// 403").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// People and their tools: `/api/v1/jobs`, `/api/v1/runners`, `/api/v1/artifacts`.
    Users,
    /// Runners: `/api/v1/runner/*`.
    Runners,
}

/// What a call does, as far as deciding who may do it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read jobs, their logs and DAGs.
    ReadJobs,
    /// Submit jobs.
    SubmitJobs,
    /// Cancel or retry jobs.
    SteerJobs,
    /// Read the runner registry.
    ReadRunners,
    /// Register and delete runners.
    ManageRunners,
    /// Upload artifacts as a user.
    UploadArtifacts,
    /// Download artifacts as a user.
    ReadArtifacts,
    /// The runner protocol: claims, the calls on leased jobs, artifacts.
    RunnerProtocol,
    /// A runner saying it is alive (`POST /api/v1/runner/heartbeat`), which a runner waiting
    /// for approval may do too.
    RunnerHeartbeat,
    /// Read the allowlist of runner keys.
    ReadRunnerKeys,
    /// Add and remove runner keys; approve and reject self-registered runners.
    ManageRunnerKeys,
    /// Read the per-kind result rules.
    ReadKinds,
    /// Set and delete per-kind result rules.
    ManageKinds,
    /// Read the audit log.
    ReadAudit,
    /// Create, list, show and delete organizations: the bootstrap admin token only.
    ManageOrganizations,
    /// Mint, list and revoke user tokens (of the caller's organization, or of any).
    ManageUserTokens,
    /// Read the workload registry.
    ReadWorkloads,
    /// Record, report on and delete workloads as a user (an orchestrator's token).
    ManageWorkloads,
}

impl Action {
    /// Every action, for tables and tests.
    pub const ALL: &'static [Action] = &[
        Action::ReadJobs,
        Action::SubmitJobs,
        Action::SteerJobs,
        Action::ReadRunners,
        Action::ManageRunners,
        Action::UploadArtifacts,
        Action::ReadArtifacts,
        Action::RunnerProtocol,
        Action::RunnerHeartbeat,
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

    /// Whose action this is.
    pub fn audience(self) -> Audience {
        match self {
            Action::RunnerProtocol | Action::RunnerHeartbeat => Audience::Runners,
            _ => Audience::Users,
        }
    }
}

/// Why a principal may not do something; the message says what it would need.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Denied {
    /// `Forbidden`, or a code that says more (`RunnerNotEnrolled`).
    pub code: ErrorCode,
    pub message: &'static str,
}

impl Denied {
    fn forbidden(message: &'static str) -> Denied {
        Denied {
            code: ErrorCode::Forbidden,
            message,
        }
    }
}

const RUNNER_ON_USER_ROUTE: &str = "a runner token cannot be used on user or admin routes";
const USER_ON_RUNNER_ROUTE: &str = "runner routes take a runner token, not the admin token";
const USER_TOKEN_ON_RUNNER_ROUTE: &str = "runner routes take a runner token, not a user token";
const SCOPED_KIND_RULES: &str = "kind rules are cluster-wide, so they are changed with a token of every organization (the bootstrap admin token, or an operator or admin token minted without organization_id)";
const PENDING_RUNNER: &str =
    "this runner's key waits for an operator's approval: it may send heartbeats, not claim or work";

/// Whether `principal` may call a route of `audience` at all.
pub fn admit(principal: &Principal, audience: Audience) -> Result<(), Denied> {
    match (principal, audience) {
        (Principal::BootstrapAdmin | Principal::User(_), Audience::Users)
        | (Principal::Runner(_) | Principal::PendingRunner(_), Audience::Runners) => Ok(()),
        (Principal::User(_), Audience::Runners) => {
            Err(Denied::forbidden(USER_TOKEN_ON_RUNNER_ROUTE))
        }
        (Principal::Runner(_) | Principal::PendingRunner(_), Audience::Users) => {
            Err(Denied::forbidden(RUNNER_ON_USER_ROUTE))
        }
        (Principal::BootstrapAdmin, Audience::Runners) => {
            Err(Denied::forbidden(USER_ON_RUNNER_ROUTE))
        }
    }
}

/// Whether `principal` may take `action`.
pub fn authorize(principal: &Principal, action: Action) -> Result<(), Denied> {
    // The bootstrap admin and an enrolled runner may take every action of their audience; a
    // runner waiting for approval may only say it is alive; a user token what its role allows.
    admit(principal, action.audience())?;
    match (principal, action) {
        (Principal::User(user), action) => {
            role_permits(user.role, action)?;
            if user.scope == OrganizationScope::Every {
                return Ok(());
            }
            // A rule that binds every organization's jobs is not one organization's to change.
            if action == Action::ManageKinds {
                return Err(Denied::forbidden(SCOPED_KIND_RULES));
            }
            Ok(())
        }
        (Principal::PendingRunner(_), Action::RunnerHeartbeat) => Ok(()),
        (Principal::PendingRunner(_), _) => Err(Denied {
            code: ErrorCode::RunnerNotEnrolled,
            message: PENDING_RUNNER,
        }),
        _ => Ok(()),
    }
}
