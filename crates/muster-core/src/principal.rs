//! Who is calling, and what they may do: every decision about what a call may do is made from
//! its [`Principal`] here, by [`authorize`], whatever the front end (HTTP, gRPC, dashboard).
//!
//! Today there are two principals: the bootstrap admin (the one admin token) and a runner.
//! Organizations, user tokens with roles and enrollment add principals and rules here; the
//! front ends, which only name the [`Audience`] of a route and the [`Action`] a call takes, do
//! not change.

use crate::{ErrorCode, RunnerId};

/// The prefix of every runner token (the contract's `muster_runner_...`).
pub const RUNNER_TOKEN_PREFIX: &str = "muster_runner_";

/// The caller of one request, resolved from its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// The bootstrap admin token: every user and operator action.
    BootstrapAdmin,
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
            Principal::BootstrapAdmin => None,
        }
    }
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
const PENDING_RUNNER: &str =
    "this runner's key waits for an operator's approval: it may send heartbeats, not claim or work";

/// Whether `principal` may call a route of `audience` at all.
pub fn admit(principal: &Principal, audience: Audience) -> Result<(), Denied> {
    match (principal, audience) {
        (Principal::BootstrapAdmin, Audience::Users)
        | (Principal::Runner(_) | Principal::PendingRunner(_), Audience::Runners) => Ok(()),
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
    // Each principal today may take every action of its own audience and none of the other's,
    // except that a runner waiting for approval may only say it is alive; roles will make the
    // user side finer.
    admit(principal, action.audience())?;
    match (principal, action) {
        (Principal::PendingRunner(_), Action::RunnerHeartbeat) => Ok(()),
        (Principal::PendingRunner(_), _) => Err(Denied {
            code: ErrorCode::RunnerNotEnrolled,
            message: PENDING_RUNNER,
        }),
        _ => Ok(()),
    }
}
