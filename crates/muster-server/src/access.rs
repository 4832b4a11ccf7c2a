//! The authorization matrix: every route of the HTTP API with who may call it. It decides
//! nothing (the service decides, with `muster_core::authorize`); it states what the decisions
//! must come to, route by route, so that the tests can hold every route to it
//! (`tests/it/authorization.rs`: the OpenAPI document's routes and this table are the same set,
//! and every cell is called against a real coordinator) and `docs/authorization.md` is made
//! from it. A new route without a row here fails those tests.

use muster_core::Action;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAccess {
    /// No token needed (health, readiness, metrics, the OpenAPI document).
    Open,
    /// No token: the body proves who calls (runner self-registration, signed by its key).
    SignedRegistration,
    /// A user-side token allowed to take the action (today the bootstrap admin token).
    User(Action),
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
            RouteAccess::User(action) => format!("user token: {}", action_name(action)),
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

/// The kinds of caller the matrix holds every route to, with what each is.
pub const CALLERS: &[(&str, &str)] = &[
    ("none", "no Authorization header"),
    ("malformed", "a bearer token of neither token's form"),
    ("unknown", "a runner token the coordinator never issued"),
    ("revoked", "the token of a runner an operator deleted"),
    ("admin", "the bootstrap admin token"),
    (
        "runner",
        "an enrolled runner that holds no lease on the job in the path",
    ),
    ("holder", "the runner holding the job's current lease"),
    (
        "pending",
        "a runner registered by key, waiting for an operator's approval",
    ),
];

/// The status every caller gets on a route of `access`: `Some(status)` when the call is
/// refused before anything is read, `None` when the caller gets past authorization (the answer
/// then depends on the body and the objects named: 200, 400, 404, ...).
pub fn refusal(access: RouteAccess, caller: &str) -> Option<u16> {
    let without_identity = matches!(caller, "none" | "malformed" | "unknown" | "revoked");
    match access {
        RouteAccess::Open | RouteAccess::SignedRegistration => None,
        _ if without_identity => Some(401),
        RouteAccess::User(_) => (caller != "admin").then_some(403),
        RouteAccess::Runner(Action::RunnerHeartbeat) => (caller == "admin").then_some(403),
        RouteAccess::Runner(_) => matches!(caller, "admin" | "pending").then_some(403),
        RouteAccess::LeaseHolder => match caller {
            "admin" | "pending" => Some(403),
            "runner" => Some(409),
            _ => None,
        },
    }
}

/// What a refusal's status means, for the docs.
fn refusal_text(status: Option<u16>) -> &'static str {
    match status {
        None => "allowed",
        Some(401) => "401",
        Some(403) => "403",
        Some(409) => "409 lease_lost",
        Some(_) => "refused",
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
         body and the objects it names.\n\nCallers:\n\n",
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
            doc.push_str(&format!(" {} |", refusal_text(refusal(*access, caller))));
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
