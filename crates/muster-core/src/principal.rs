//! Who is calling, and what they may do: every decision about what a call may do is made from
//! its [`Principal`] here, by [`authorize`], whatever the front end (HTTP, gRPC, dashboard).
//!
//! Today there are two principals: the bootstrap admin (the one admin token) and a runner.
//! Organizations, user tokens with roles and enrollment add principals and rules here; the
//! front ends, which only name the [`Audience`] of a route and the [`Action`] a call takes, do
//! not change.

use crate::RunnerId;

/// The prefix of every runner token (the contract's `muster_runner_...`).
pub const RUNNER_TOKEN_PREFIX: &str = "muster_runner_";

/// The caller of one request, resolved from its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// The bootstrap admin token: every user and operator action.
    BootstrapAdmin,
    /// A registered runner: the runner protocol, for its own jobs.
    Runner(RunnerId),
}

impl Principal {
    /// The runner this principal is, if it is one.
    pub fn runner_id(&self) -> Option<RunnerId> {
        match self {
            Principal::Runner(runner) => Some(*runner),
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
    /// The runner protocol: heartbeats, claims, the calls on leased jobs, artifacts.
    RunnerProtocol,
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
    ];

    /// Whose action this is.
    pub fn audience(self) -> Audience {
        match self {
            Action::RunnerProtocol => Audience::Runners,
            _ => Audience::Users,
        }
    }
}

/// Why a principal may not do something; the message says what it would need.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Denied {
    pub message: &'static str,
}

const RUNNER_ON_USER_ROUTE: &str = "a runner token cannot be used on user or admin routes";
const USER_ON_RUNNER_ROUTE: &str = "runner routes take a runner token, not the admin token";

/// Whether `principal` may call a route of `audience` at all.
pub fn admit(principal: &Principal, audience: Audience) -> Result<(), Denied> {
    match (principal, audience) {
        (Principal::BootstrapAdmin, Audience::Users)
        | (Principal::Runner(_), Audience::Runners) => Ok(()),
        (Principal::Runner(_), Audience::Users) => Err(Denied {
            message: RUNNER_ON_USER_ROUTE,
        }),
        (Principal::BootstrapAdmin, Audience::Runners) => Err(Denied {
            message: USER_ON_RUNNER_ROUTE,
        }),
    }
}

/// Whether `principal` may take `action`.
pub fn authorize(principal: &Principal, action: Action) -> Result<(), Denied> {
    // Each principal today may take every action of its own audience and none of the other's;
    // roles will make the user side finer.
    admit(principal, action.audience())
}
