//! The authorization matrix: every route of the HTTP API with who may call it. It decides
//! nothing (the service decides, with `muster_core::authorize`); it states what the decisions
//! must come to, route by route, so that the tests can hold every route to it
//! (`tests/it/authorization.rs`: the OpenAPI document's routes and this table are the same set,
//! and every cell is called against a real coordinator) and `docs/authorization.md` is made
//! from it. A new route without a row here fails those tests.

use muster_core::organization::{OrganizationId, OrganizationScope, Role};
use muster_core::{Action, Principal, UserPrincipal, UserTokenId};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAccess {
    /// No token needed (health, readiness, metrics, the OpenAPI document).
    Open,
    /// No token: the body proves who calls (runner self-registration, signed by its key).
    SignedRegistration,
    /// No token: the body carries the user token to sign in to the dashboard with.
    SignIn,
    /// A user-side token (the bootstrap admin token, or a user token) allowed to take the
    /// action.
    User(Action),
    /// Any user-side token, whatever its role.
    AnyUser,
    /// A runner token allowed to take the action.
    Runner(Action),
    /// A runner token of the runner holding the job's current lease (the job in the path).
    LeaseHolder,
}

impl RouteAccess {
    /// The cell text of `docs/authorization.md`'s "who" column.
    pub fn describe(self) -> String {
        match self {
            RouteAccess::Open => "anyone (no token)".into(),
            RouteAccess::SignedRegistration => {
                "anyone whose body is signed by the key it registers (no token)".into()
            }
            RouteAccess::SignIn => {
                "anyone; the body carries the user token to sign in with (no token)".into()
            }
            RouteAccess::User(action) => format!("user token: {}", action_name(action)),
            RouteAccess::AnyUser => "any user token (the bootstrap admin's too)".into(),
            RouteAccess::Runner(Action::RunnerHeartbeat) => {
                "runner token, a runner pending approval too".into()
            }
            RouteAccess::Runner(_) => "runner token of an enrolled runner".into(),
            RouteAccess::LeaseHolder => {
                "runner token of the runner holding the job's current lease".into()
            }
        }
    }
}

/// The action's name in the docs.
pub fn action_name(action: Action) -> &'static str {
    match action {
        Action::ReadJobs => "read jobs",
        Action::SubmitJobs => "submit jobs",
        Action::SteerJobs => "cancel and retry jobs",
        Action::ReadRunners => "read runners",
        Action::ManageRunners => "manage runners",
        Action::UploadArtifacts => "upload artifacts",
        Action::ReadArtifacts => "read artifacts",
        Action::RunnerProtocol => "the runner protocol",
        Action::RunnerHeartbeat => "runner heartbeats",
        Action::ReadRunnerKeys => "read runner keys",
        Action::ManageRunnerKeys => "manage runner keys and enrollment",
        Action::ReadKinds => "read kind rules",
        Action::ManageKinds => "manage kind rules",
        Action::ReadAudit => "read the audit log",
        Action::ManageOrganizations => "manage organizations (bootstrap admin only)",
        Action::ManageUserTokens => "manage user tokens",
        Action::ReadWorkloads => "read workloads",
        Action::ManageWorkloads => "manage workloads",
    }
}

/// Every route: method, path as the OpenAPI document writes it, who may call it.
pub const ROUTE_ACCESS: &[(&str, &str, RouteAccess)] = &[
    ("GET", "/healthz", RouteAccess::Open),
    ("GET", "/readyz", RouteAccess::Open),
    ("GET", "/metrics", RouteAccess::Open),
    ("GET", "/api/v1/openapi.json", RouteAccess::Open),
    ("GET", "/api/v1/jobs", RouteAccess::User(Action::ReadJobs)),
    (
        "POST",
        "/api/v1/workloads",
        RouteAccess::User(Action::ManageWorkloads),
    ),
    (
        "GET",
        "/api/v1/workloads",
        RouteAccess::User(Action::ReadWorkloads),
    ),
    (
        "GET",
        "/api/v1/workloads/{id}",
        RouteAccess::User(Action::ReadWorkloads),
    ),
    (
        "DELETE",
        "/api/v1/workloads/{id}",
        RouteAccess::User(Action::ManageWorkloads),
    ),
    (
        "POST",
        "/api/v1/workloads/{id}/status",
        RouteAccess::User(Action::ManageWorkloads),
    ),
    (
        "GET",
        "/api/v1/workloads/{id}/history",
        RouteAccess::User(Action::ReadWorkloads),
    ),
    (
        "POST",
        "/api/v1/runner/workloads",
        RouteAccess::Runner(Action::RunnerProtocol),
    ),
    (
        "POST",
        "/api/v1/runner/workloads/{id}/status",
        RouteAccess::Runner(Action::RunnerProtocol),
    ),
    (
        "DELETE",
        "/api/v1/runner/workloads/{id}",
        RouteAccess::Runner(Action::RunnerProtocol),
    ),
    (
        "POST",
        "/api/v1/jobs",
        RouteAccess::User(Action::SubmitJobs),
    ),
    (
        "POST",
        "/api/v1/jobs/batch",
        RouteAccess::User(Action::SubmitJobs),
    ),
    (
        "GET",
        "/api/v1/jobs/count",
        RouteAccess::User(Action::ReadJobs),
    ),
    (
        "GET",
        "/api/v1/jobs/summary",
        RouteAccess::User(Action::ReadJobs),
    ),
    (
        "POST",
        "/api/v1/jobs/bulk",
        RouteAccess::User(Action::SteerJobs),
    ),
    (
        "GET",
        "/api/v1/jobs/{id}",
        RouteAccess::User(Action::ReadJobs),
    ),
    (
        "POST",
        "/api/v1/jobs/{id}/cancel",
        RouteAccess::User(Action::SteerJobs),
    ),
    (
        "POST",
        "/api/v1/jobs/{id}/retry",
        RouteAccess::User(Action::SteerJobs),
    ),
    (
        "GET",
        "/api/v1/jobs/{id}/logs",
        RouteAccess::User(Action::ReadJobs),
    ),
    (
        "GET",
        "/api/v1/jobs/{id}/logs/search",
        RouteAccess::User(Action::ReadJobs),
    ),
    (
        "GET",
        "/api/v1/jobs/{id}/logs/raw",
        RouteAccess::User(Action::ReadJobs),
    ),
    (
        "GET",
        "/api/v1/jobs/{id}/dag",
        RouteAccess::User(Action::ReadJobs),
    ),
    (
        "GET",
        "/api/v1/runners",
        RouteAccess::User(Action::ReadRunners),
    ),
    (
        "POST",
        "/api/v1/admin/tokens",
        RouteAccess::User(Action::ManageUserTokens),
    ),
    (
        "GET",
        "/api/v1/admin/tokens",
        RouteAccess::User(Action::ManageUserTokens),
    ),
    (
        "DELETE",
        "/api/v1/admin/tokens/{id}",
        RouteAccess::User(Action::ManageUserTokens),
    ),
    ("GET", "/api/v1/whoami", RouteAccess::AnyUser),
    ("POST", "/api/v1/session", RouteAccess::SignIn),
    ("DELETE", "/api/v1/session", RouteAccess::AnyUser),
    (
        "GET",
        "/api/v1/jobs/{id}/events",
        RouteAccess::User(Action::ReadJobs),
    ),
    (
        "GET",
        "/api/v1/jobs/{id}/attempts",
        RouteAccess::User(Action::ReadJobs),
    ),
    (
        "POST",
        "/api/v1/runners",
        RouteAccess::User(Action::ManageRunners),
    ),
    (
        "GET",
        "/api/v1/runners/{id}",
        RouteAccess::User(Action::ReadRunners),
    ),
    (
        "DELETE",
        "/api/v1/runners/{id}",
        RouteAccess::User(Action::ManageRunners),
    ),
    (
        "POST",
        "/api/v1/runners/register",
        RouteAccess::SignedRegistration,
    ),
    (
        "POST",
        "/api/v1/runners/{id}/approve",
        RouteAccess::User(Action::ManageRunnerKeys),
    ),
    (
        "POST",
        "/api/v1/runners/{id}/reject",
        RouteAccess::User(Action::ManageRunnerKeys),
    ),
    (
        "GET",
        "/api/v1/admin/runner-keys",
        RouteAccess::User(Action::ReadRunnerKeys),
    ),
    (
        "POST",
        "/api/v1/admin/runner-keys",
        RouteAccess::User(Action::ManageRunnerKeys),
    ),
    (
        "DELETE",
        "/api/v1/admin/runner-keys/{fingerprint}",
        RouteAccess::User(Action::ManageRunnerKeys),
    ),
    (
        "GET",
        "/api/v1/admin/audit",
        RouteAccess::User(Action::ReadAudit),
    ),
    (
        "GET",
        "/api/v1/admin/organizations",
        RouteAccess::User(Action::ManageOrganizations),
    ),
    (
        "POST",
        "/api/v1/admin/organizations",
        RouteAccess::User(Action::ManageOrganizations),
    ),
    (
        "GET",
        "/api/v1/admin/organizations/{id}",
        RouteAccess::User(Action::ManageOrganizations),
    ),
    (
        "DELETE",
        "/api/v1/admin/organizations/{id}",
        RouteAccess::User(Action::ManageOrganizations),
    ),
    ("GET", "/api/v1/kinds", RouteAccess::User(Action::ReadKinds)),
    (
        "GET",
        "/api/v1/kinds/{kind}",
        RouteAccess::User(Action::ReadKinds),
    ),
    (
        "PUT",
        "/api/v1/kinds/{kind}",
        RouteAccess::User(Action::ManageKinds),
    ),
    (
        "DELETE",
        "/api/v1/kinds/{kind}",
        RouteAccess::User(Action::ManageKinds),
    ),
    (
        "POST",
        "/api/v1/artifacts",
        RouteAccess::User(Action::UploadArtifacts),
    ),
    (
        "GET",
        "/api/v1/artifacts/{id}",
        RouteAccess::User(Action::ReadArtifacts),
    ),
    (
        "POST",
        "/api/v1/runner/heartbeat",
        RouteAccess::Runner(Action::RunnerHeartbeat),
    ),
    (
        "POST",
        "/api/v1/runner/claim",
        RouteAccess::Runner(Action::RunnerProtocol),
    ),
    (
        "POST",
        "/api/v1/runner/complete",
        RouteAccess::Runner(Action::RunnerProtocol),
    ),
    (
        "POST",
        "/api/v1/runner/artifacts",
        RouteAccess::Runner(Action::RunnerProtocol),
    ),
    (
        "GET",
        "/api/v1/runner/artifacts/{id}",
        RouteAccess::Runner(Action::RunnerProtocol),
    ),
    (
        "POST",
        "/api/v1/runner/jobs/{id}/heartbeat",
        RouteAccess::LeaseHolder,
    ),
    (
        "PUT",
        "/api/v1/runner/jobs/{id}/progress",
        RouteAccess::LeaseHolder,
    ),
    (
        "POST",
        "/api/v1/runner/jobs/{id}/log",
        RouteAccess::LeaseHolder,
    ),
    (
        "POST",
        "/api/v1/runner/jobs/{id}/outputs",
        RouteAccess::LeaseHolder,
    ),
    (
        "POST",
        "/api/v1/runner/jobs/{id}/complete",
        RouteAccess::LeaseHolder,
    ),
    (
        "POST",
        "/api/v1/runner/jobs/{id}/fail",
        RouteAccess::LeaseHolder,
    ),
    (
        "PUT",
        "/api/v1/runner/jobs/{id}/dag",
        RouteAccess::LeaseHolder,
    ),
];

/// The kinds of caller the matrix holds every route to, with what each is. The user tokens are
/// of two organizations, `team-a` and `team-b`; the objects in the paths are `team-a`'s.
pub const CALLERS: &[(&str, &str)] = &[
    ("none", "no Authorization header"),
    ("malformed", "a bearer token of neither token's form"),
    ("unknown", "a runner token the coordinator never issued"),
    ("revoked", "the token of a runner an operator deleted"),
    ("user-unknown", "a user token the coordinator never issued"),
    ("user-expired", "a user token past its expires_at"),
    ("user-revoked", "a user token an admin revoked"),
    ("admin", "the bootstrap admin token"),
    ("viewer-all", "a viewer token of every organization"),
    ("viewer-a", "a viewer token of team-a"),
    ("submitter-a", "a submitter token of team-a"),
    ("operator-a", "an operator token of team-a"),
    ("admin-a", "an admin token of team-a"),
    (
        "viewer-b",
        "a viewer token of team-b, acting on team-a's objects",
    ),
    (
        "submitter-b",
        "a submitter token of team-b, acting on team-a's objects",
    ),
    (
        "operator-b",
        "an operator token of team-b, acting on team-a's objects",
    ),
    (
        "admin-b",
        "an admin token of team-b, acting on team-a's objects",
    ),
    (
        "runner",
        "an enrolled cluster-scoped runner that holds no lease on the job in the path",
    ),
    ("runner-a", "an enrolled runner of team-a, holding no lease"),
    ("runner-b", "an enrolled runner of team-b, holding no lease"),
    ("holder", "the runner holding the job's current lease"),
    (
        "pending",
        "a runner registered by key, waiting for an operator's approval",
    ),
];

/// The organization the matrix's scoped user tokens and path objects are of.
pub const ORGANIZATION_A: &str = "team-a";
/// The other organization, whose tokens must find nothing of [`ORGANIZATION_A`]'s.
pub const ORGANIZATION_B: &str = "team-b";

/// The principal a user-token caller of [`CALLERS`] is, by its name (`viewer-a`, `admin-all`).
pub fn user_caller(caller: &str) -> Option<Principal> {
    if caller == "admin" {
        return Some(Principal::BootstrapAdmin);
    }
    let (role, organization) = caller.split_once('-')?;
    let role = Role::parse(role).ok()?;
    let scope = match organization {
        "all" => OrganizationScope::Every,
        "a" => OrganizationScope::One(OrganizationId::parse(ORGANIZATION_A).ok()?),
        "b" => OrganizationScope::One(OrganizationId::parse(ORGANIZATION_B).ok()?),
        _ => return None,
    };
    Some(Principal::User(UserPrincipal {
        token: UserTokenId::new(muster_core::Timestamp(0), 0),
        role,
        scope,
    }))
}

/// Whether the route's path names an object of one organization (`team-a`'s in the matrix):
/// a job, a runner or a user token.
pub fn names_organization_object(path: &str) -> bool {
    [
        "/api/v1/jobs/{id}",
        "/api/v1/runners/{id}",
        "/api/v1/admin/tokens/{id}",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix))
}

/// What a caller gets on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Refused with this status before anything is read or changed.
    Refused(u16),
    /// Answered 404, as if the object in the path did not exist: it is another organization's.
    Hidden,
    /// Past authorization: the answer depends on the body and the objects named.
    Allowed,
}

/// What `caller` gets on the route `path` of `access`.
pub fn expected(access: RouteAccess, path: &str, caller: &str) -> Expected {
    let without_identity = matches!(
        caller,
        "none"
            | "malformed"
            | "unknown"
            | "revoked"
            | "user-unknown"
            | "user-expired"
            | "user-revoked"
    );
    let user = user_caller(caller);
    let refused = |status| Expected::Refused(status);
    match access {
        RouteAccess::Open | RouteAccess::SignedRegistration | RouteAccess::SignIn => {
            Expected::Allowed
        }
        _ if without_identity => refused(401),
        RouteAccess::AnyUser => match user {
            Some(_) => Expected::Allowed,
            None => refused(403),
        },
        RouteAccess::User(action) => match user {
            None => refused(403),
            Some(principal) => match muster_core::authorize(&principal, action) {
                Err(_) => refused(403),
                Ok(())
                    if names_organization_object(path)
                        && !principal.sees_organization(ORGANIZATION_A) =>
                {
                    Expected::Hidden
                }
                Ok(()) => Expected::Allowed,
            },
        },
        _ if user.is_some() => refused(403),
        RouteAccess::Runner(Action::RunnerHeartbeat) => Expected::Allowed,
        RouteAccess::Runner(_) => match caller {
            "pending" => refused(403),
            _ => Expected::Allowed,
        },
        RouteAccess::LeaseHolder => match caller {
            "pending" => refused(403),
            "holder" => Expected::Allowed,
            _ => refused(409),
        },
    }
}

/// What an expectation means, for the docs.
fn expected_text(expected: Expected) -> &'static str {
    match expected {
        Expected::Allowed => "allowed",
        Expected::Hidden => "404",
        Expected::Refused(401) => "401",
        Expected::Refused(403) => "403",
        Expected::Refused(409) => "409 lease_lost",
        Expected::Refused(_) => "refused",
    }
}

/// `docs/authorization.md`, made from [`ROUTE_ACCESS`] and [`refusal`].
pub fn render_markdown() -> String {
    let mut doc = String::from(
        "# Authorization matrix\n\n\
         Made from `crates/muster-server/src/access.rs` (the table the tests hold every route to: \
         `crates/muster-server/tests/it/authorization.rs` checks that the OpenAPI document's \
         routes are exactly these and calls every cell against a real coordinator, on SQLite and \
         on PostgreSQL, checking that a refused call changed nothing). Do not edit by hand: \
         `MUSTER_WRITE_AUTHORIZATION_DOC=1 cargo test -p muster-server --test it authorization` \
         writes it again.\n\n\
         \"allowed\" means the call gets past authorization: what it answers then depends on its \
         body and the objects it names. \"404\" means the object in the path is another \
         organization's, so it answers exactly as one that does not exist. Every answer a \
         caller of team-b gets is checked to hold nothing of team-a's.\n\nCallers:\n\n",
    );
    for (caller, what) in CALLERS {
        doc.push_str(&format!("- `{caller}`: {what}\n"));
    }
    doc.push_str("\n| route | who may call it |");
    for (caller, _) in CALLERS {
        doc.push_str(&format!(" {caller} |"));
    }
    doc.push_str("\n|---|---|");
    for _ in CALLERS {
        doc.push_str("---|");
    }
    doc.push('\n');
    for (method, path, access) in ROUTE_ACCESS {
        doc.push_str(&format!("| `{method} {path}` | {} |", access.describe()));
        for (caller, _) in CALLERS {
            doc.push_str(&format!(
                " {} |",
                expected_text(expected(*access, path, caller))
            ));
        }
        doc.push('\n');
    }
    doc.push_str(&format!(
        "\n{} routes × {} callers = {} cells.\n",
        ROUTE_ACCESS.len(),
        CALLERS.len(),
        ROUTE_ACCESS.len() * CALLERS.len()
    ));
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_of_a_user_route_is_one_the_principals_table_knows() {
        for (method, path, access) in ROUTE_ACCESS {
            if let RouteAccess::User(action) | RouteAccess::Runner(action) = access {
                assert!(Action::ALL.contains(action), "{method} {path}");
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (method, path, _) in ROUTE_ACCESS {
            assert!(seen.insert((method, path)), "{method} {path} twice");
        }
    }
}
