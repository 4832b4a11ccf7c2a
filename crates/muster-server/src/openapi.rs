//! What the OpenAPI document says beyond each handler's own annotation: the error answers
//! operations share (declared once in `components.responses`, named by groups a handler lists),
//! the security schemes, parameters, artifact bytes as binary, the live log stream's events, and
//! closed response schemas.
//!
//! The document must tell the truth: every status an operation can answer is declared, and the
//! schemathesis test (`tests/it/schemathesis.rs`) checks the server's answers against it.

use std::collections::BTreeMap;

use muster_api::schemas;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{
    KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required};
use utoipa::{OpenApi, PartialSchema, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(title = "muster", description = "The muster coordinator's HTTP API v1"),
    modifiers(&SharedAnswers),
    // Schemas the routes name only through `muster_api::schemas` references.
    components(schemas(
        muster_api::ErrorBody,
        muster_api::ErrorDetail,
        muster_api::NewLogEntry,
        muster_api::LogBatch,
        muster_api::CompletionItem,
        muster_api::ResultSignature,
        muster_api::SubmitJob
    )),
    tags(
        (name = "jobs", description = "Submit and watch jobs (admin token)"),
        (name = "runners", description = "The runner registry (admin token)"),
        (name = "runner", description = "The runner protocol (runner token)"),
        (name = "identity", description = "Runner keys and the audit log (admin token)"),
        (name = "kinds", description = "Result rules per job kind (admin token)"),
        (name = "workloads", description = "The workload registry: what runners host (admin token)"),
        (name = "organizations", description = "Tenants: organizations (bootstrap admin token)"),
        (name = "tokens", description = "User tokens with roles (admin role), and whoami (any user token)"),
        (name = "sessions", description = "Dashboard sign-in and sign-out: a user token traded for a session cookie"),
        (name = "artifacts", description = "Content-addressed artifacts: upload and download bytes (admin or runner token)"),
        (name = "operations", description = "Health, readiness, metrics (no token)"),
    )
)]
pub(crate) struct ApiDoc;

/// The shared error answers: each a `components.responses` entry, with the error body.
const ERROR_ANSWERS: &[(&str, &str)] = &[
    (
        "InvalidInput",
        "invalid_input: the body, a query parameter or a header is malformed or out of range; the message names it",
    ),
    (
        "Unauthorized",
        "unauthorized: no token, or one the coordinator does not know",
    ),
    (
        "Forbidden",
        "forbidden: the other kind of token (a runner token on a user route, the admin token on a runner route)",
    ),
    (
        "NotFound",
        "not_found: no such id (an id that is not well-formed names nothing either)",
    ),
    (
        "LeaseLost",
        "lease_lost: the caller does not hold the job's current lease (or not at the epoch it sent); nothing changed",
    ),
    (
        "InvalidState",
        "invalid_state: the job is in a state that does not allow this",
    ),
    (
        "PayloadTooLarge",
        "payload_too_large: the body is larger than the coordinator accepts; nothing was stored",
    ),
    (
        "RequestTimeout",
        "request_timeout: the body arrived slower than --body-min-rate allows after --body-read-timeout; nothing of it was used, and the connection closes",
    ),
    (
        "UnknownArtifact",
        "unknown_artifact: the body names an artifact that is not stored; nothing changed",
    ),
    (
        "Unavailable",
        "unavailable: the store cannot be reached, or the coordinator is shutting down; try again",
    ),
    (
        "OrganizationNotFound",
        "organization_not_found: the organization_id names no organization; nothing changed",
    ),
];

/// Groups of shared error answers, named in a handler's `responses(...)` beside its own.
macro_rules! answer_groups {
    ($($(#[$doc:meta])* $group:ident => [$(($status:literal, $answer:literal)),* $(,)?];)*) => {
        $(
            $(#[$doc])*
            pub(crate) enum $group {}

            impl utoipa::IntoResponses for $group {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    BTreeMap::from([$((
                        $status.to_string(),
                        RefOr::Ref(Ref::from_response_name($answer)),
                    )),*])
                }
            }
        )*
    };
}

answer_groups! {
    /// Every route with a token: a missing or unknown one, the wrong kind, and a store that
    /// cannot be reached (tokens are looked up in it).
    AuthErrors => [(401, "Unauthorized"), (403, "Forbidden"), (503, "Unavailable")];
    /// Every route with a body (JSON, or an artifact's bytes).
    BodyErrors => [(400, "InvalidInput"), (408, "RequestTimeout"), (413, "PayloadTooLarge")];
    /// Routes with query parameters.
    QueryErrors => [(400, "InvalidInput")];
    /// Routes with an id in the path.
    IdErrors => [(404, "NotFound")];
    /// The job-scoped runner calls: a malformed `Muster-Lease-Epoch`, an unknown job, a lease
    /// the caller does not hold.
    LeaseErrors => [(400, "InvalidInput"), (404, "NotFound"), (409, "LeaseLost")];
    /// Cancel and retry, which only some states allow.
    StateErrors => [(409, "InvalidState")];
    /// Bodies that name artifacts.
    ArtifactErrors => [(422, "UnknownArtifact")];
    /// Routes without a token that read the store.
    StoreErrors => [(503, "Unavailable")];
    /// Bodies that name an organization.
    OrganizationErrors => [(404, "OrganizationNotFound")];
}

struct SharedAnswers;

impl utoipa::Modify for SharedAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["admin_token", "runner_token"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
        for (name, description) in ERROR_ANSWERS {
            let answer = ResponseBuilder::new()
                .description(*description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(muster_api::ErrorBody::name())))
                        .build(),
                )
                .build();
            components.responses.insert(name.to_string(), answer.into());
        }
    }
}

/// One parameter of an operation. (utoipa's derive drops a field's description and
/// requiredness where `schema_with` gives its schema, so the parameters here are listed by hand.)
pub(crate) fn parameter(
    name: &str,
    location: ParameterIn,
    description: &str,
    schema: impl Into<RefOr<Schema>>,
) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(location.clone())
        .required(if location == ParameterIn::Path {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// Parameters listed by hand, for routes to name in `params(...)`.
macro_rules! parameter_lists {
    ($($(#[$doc:meta])* $list:ident => [$(($name:literal, $location:ident, $description:literal, $schema:expr)),* $(,)?];)*) => {
        $(
            $(#[$doc])*
            pub(crate) enum $list {}

            impl utoipa::IntoParams for $list {
                fn into_params(
                    _parameter_in_provider: impl Fn() -> Option<ParameterIn>,
                ) -> Vec<Parameter> {
                    vec![$(parameter($name, ParameterIn::$location, $description, $schema)),*]
                }
            }
        )*
    };
}

fn uuid() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
}

fn date_time() -> ObjectBuilder {
    text().format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
        utoipa::openapi::KnownFormat::DateTime,
    )))
}

fn text() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

parameter_lists! {
    /// The lease epoch header of the job-scoped runner calls (read by `extract::LeaseEpoch`).
    LeaseEpochHeader => [(
        "Muster-Lease-Epoch", Header,
        "the lease epoch the caller holds; when sent, it must be the current one",
        schemas::lease_epoch()
    )];
    /// The id in the path of a job's route.
    JobIdPath => [("id", Path, "the job's id", uuid())];
    /// The id in the path of a runner's route.
    RunnerIdPath => [("id", Path, "the runner's id", uuid())];
    /// The id in the path of a workload's route.
    WorkloadIdPath => [("id", Path, "the workload's id (the caller's)", schemas::workload_id())];
    /// The filters and paging of `GET /api/v1/workloads` (`routes::workloads::ListWorkloadsQuery`).
    ListWorkloadsParameters => [
        ("thread_id", Query, "only workloads of this thread", text()),
        ("runner_id", Query, "only workloads this runner hosts", uuid()),
        ("status", Query, "only workloads in one of these statuses, comma-separated (`running,failed`)", text()),
        ("organization_id", Query, "only workloads of this organization; a scoped token reads its own whatever this says", text()),
        ("limit", Query, "workloads per page; default 50", schemas::page_limit()),
        ("cursor", Query, "`next_cursor` of the previous page; empty or absent for the first", text()),
    ];
    /// The kind in the path of a kind's route (percent-encoded).
    KindPath => [("kind", Path, "the job kind, percent-encoded", text())];
    /// The fingerprint in the path of a runner key's route.
    RunnerKeyPath => [(
        "fingerprint", Path, "the key's fingerprint: `sha256:` and 64 lowercase hex digits", text()
    )];
    /// The id in the path of an organization's route.
    OrganizationPath => [("id", Path, "the organization's id (`default`, or the id made from its name)", text())];
    /// The paging of `GET /api/v1/admin/organizations` (`routes::identity::PageQuery`).
    ListOrganizationsParameters => [
        ("limit", Query, "organizations per page; default 50", schemas::page_limit()),
        ("cursor", Query, "`next_cursor` of the previous page; empty or absent for the first", text()),
    ];
    /// The id in the path of a user token's route.
    UserTokenIdPath => [("id", Path, "the user token's id (not the token)", uuid())];
    /// The filter and paging of `GET /api/v1/admin/tokens` (`routes::tokens::ListTokensQuery`).
    ListTokensParameters => [
        ("organization_id", Query, "only tokens of this organization; a scoped admin lists its own whatever this says, and another organization answers `organization_not_found`", text()),
        ("limit", Query, "tokens per page; default 50", schemas::page_limit()),
        ("cursor", Query, "`next_cursor` of the previous page; empty or absent for the first", text()),
    ];
    /// The paging of `GET /api/v1/admin/runner-keys` (`routes::identity::PageQuery`).
    ListRunnerKeysParameters => [
        ("limit", Query, "keys per page; default 50", schemas::page_limit()),
        ("cursor", Query, "`next_cursor` of the previous page; empty or absent for the first", text()),
    ];
    /// The filter and paging of `GET /api/v1/admin/audit` (`routes::identity::AuditQuery`).
    ListAuditParameters => [
        ("action", Query, "only entries of this action, e.g. `runner_key.added`", text()),
        ("organization_id", Query, "only entries of this organization (not the whole cluster's); a scoped admin reads its own whatever this says, and another organization answers `organization_not_found`", text()),
        ("limit", Query, "entries per page; default 50", schemas::page_limit()),
        ("cursor", Query, "`next_cursor` of the previous page; empty or absent for the first", text()),
    ];
    /// The id in the path of an artifact's route.
    ArtifactIdPath => [(
        "id", Path, "the artifact's content id: `sha256:` and 64 lowercase hex digits",
        schemas::artifact_id()
    )];
    /// The filters of `GET /api/v1/jobs` (`routes::jobs::ListJobsQuery`).
    ListJobsParameters => [
        ("state", Query, "only jobs in this state", Ref::from_schema_name(muster_api::JobState::name())),
        ("kind", Query, "only jobs of this kind", text()),
        ("runner_id", Query, "only jobs whose current or last lease is this runner's", uuid()),
        ("organization_id", Query, "only jobs of this organization", text()),
        ("created_after", Query, "only jobs created at or after this instant (RFC 3339)", date_time()),
        ("created_before", Query, "only jobs created before this instant (RFC 3339)", date_time()),
        ("limit", Query, "jobs per page; default 50", schemas::page_limit()),
        ("cursor", Query, "`next_cursor` of the previous page; empty or absent for the first", text()),
    ];
    /// The filters of `GET /api/v1/jobs/count` (`routes::jobs::ListJobsQuery` without paging).
    CountJobsParameters => [
        ("state", Query, "only jobs in this state", Ref::from_schema_name(muster_api::JobState::name())),
        ("kind", Query, "only jobs of this kind", text()),
        ("runner_id", Query, "only jobs whose current or last lease is this runner's", uuid()),
        ("organization_id", Query, "only jobs of this organization", text()),
        ("created_after", Query, "only jobs created at or after this instant (RFC 3339)", date_time()),
        ("created_before", Query, "only jobs created before this instant (RFC 3339)", date_time()),
    ];
    /// The paging of `GET /api/v1/runners` (`routes::runners::ListRunnersQuery`).
    ListRunnersParameters => [
        ("organization_id", Query, "only runners of this organization (cluster-scoped runners belong to none); a token scoped to one organization lists its own whatever this says, and another organization answers `organization_not_found`", text()),
        ("limit", Query, "runners per page; default 50", schemas::page_limit()),
        ("cursor", Query, "`next_cursor` of the previous page; empty or absent for the first", text()),
    ];
    /// A search of `GET /api/v1/jobs/{id}/logs/search` (`routes::logs::LogSearchQuery`).
    LogSearchParameters => [
        ("q", Query, "entries whose message contains this text (ASCII letters compared without case; `%` and `_` are literal); at most 200 characters", text()),
        ("level", Query, "entries of at least this level", Ref::from_schema_name(muster_api::LogLevel::name())),
        ("after_seq", Query, "look after this seq; omit to start at the beginning", schemas::after_seq()),
        ("limit", Query, "matches per call; default 100, at most 1000", schemas::page_limit()),
    ];
    /// The paging of `GET /api/v1/jobs/{id}/logs` (`routes::jobs::LogsQuery`).
    LogsParameters => [
        ("after_seq", Query, "entries with a larger seq than this; omit to start at the beginning (a `Last-Event-ID` header takes its place)", schemas::after_seq()),
        ("limit", Query, "entries per page; default 1000", schemas::log_page_limit()),
    ];
}

/// The body of a log call: one entry or a batch.
pub(crate) struct LogBody;

impl PartialSchema for LogBody {
    fn schema() -> RefOr<Schema> {
        muster_api::schemas::log_body()
    }
}

impl ToSchema for LogBody {}

/// One event of a live log stream (`GET /api/v1/jobs/{id}/logs` with `Accept:
/// text/event-stream`), as OpenAPI 3.1 describes an event stream: a schema per event. Each
/// event's `data` is JSON: `log` carries an entry (its `id` is the entry's seq, for
/// `Last-Event-ID`), `end` the finished job's id and state, `error` the error body of a read that
/// failed (the stream ends after `end` or `error`).
pub(crate) struct LogStreamEvent;

/// An event stream's event named `name` whose `data` is JSON of the schema `data`.
fn stream_event(name: &str, data: RefOr<Schema>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "event",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([name])),
        )
        .property(
            "data",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .content_media_type("application/json")
                .content_schema(Some(data)),
        )
        .required("event")
        .required("data")
}

impl PartialSchema for LogStreamEvent {
    fn schema() -> RefOr<Schema> {
        let event = stream_event;
        let log = event(
            "log",
            Ref::from_schema_name(muster_api::LogEntry::name()).into(),
        )
        .property(
            "id",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9]+$")),
        )
        .required("id");
        let finished = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
            )
            .property("state", Ref::from_schema_name(muster_api::JobState::name()))
            .required("id")
            .into();
        let failed = Ref::from_schema_name(muster_api::ErrorBody::name()).into();
        OneOfBuilder::new()
            .item(log)
            .item(event("end", finished))
            .item(event("error", failed))
            .into()
    }
}

impl ToSchema for LogStreamEvent {}

/// One event of a followed summary (`GET /api/v1/jobs/summary` with `Accept:
/// text/event-stream`): `summary` carries the summary as the JSON answer has it, `error` the
/// error body of a count that failed (the stream ends after it).
pub(crate) struct SummaryStreamEvent;

impl PartialSchema for SummaryStreamEvent {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(stream_event(
                "summary",
                Ref::from_schema_name(muster_api::JobSummary::name()).into(),
            ))
            .item(stream_event(
                "error",
                Ref::from_schema_name(muster_api::ErrorBody::name()).into(),
            ))
            .into()
    }
}

impl ToSchema for SummaryStreamEvent {}

/// One event of a live job stream (`GET /api/v1/jobs/{id}/events` with `Accept:
/// text/event-stream`): `job` carries the job as `GET /api/v1/jobs/{id}` answers it, `end` an
/// empty object once it is finished, `error` the error body of a read that failed (the stream
/// ends after `end` or `error`).
pub(crate) struct JobStreamEvent;

impl PartialSchema for JobStreamEvent {
    fn schema() -> RefOr<Schema> {
        let job = Ref::from_schema_name(muster_api::Job::name()).into();
        let empty = ObjectBuilder::new().schema_type(Type::Object).into();
        let failed = Ref::from_schema_name(muster_api::ErrorBody::name()).into();
        OneOfBuilder::new()
            .item(stream_event("job", job))
            .item(stream_event("end", empty))
            .item(stream_event("error", failed))
            .into()
    }
}

impl ToSchema for JobStreamEvent {}

/// Artifact bytes, as an upload's body or a download's answer.
pub(crate) struct ArtifactBytes;

impl PartialSchema for ArtifactBytes {
    fn schema() -> RefOr<Schema> {
        muster_api::schemas::binary()
    }
}

impl ToSchema for ArtifactBytes {}

/// A raw log: one line per entry, `<RFC 3339 time> <LEVEL> <message>`.
pub(crate) struct RawLogText;

impl PartialSchema for RawLogText {
    fn schema() -> RefOr<Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .into()
    }
}

impl ToSchema for RawLogText {}

/// The document as served: [`ApiDoc`] with the routes' operations, as JSON, with the schemas
/// that only answers use closed (`additionalProperties: false`), so a field the server sends
/// but the document does not describe is a schema violation, not silently allowed. Schemas
/// that request bodies use stay open: unknown request fields are ignored.
pub(crate) fn render(document: &utoipa::openapi::OpenApi) -> String {
    let mut value = match serde_json::to_value(document) {
        Ok(value) => value,
        Err(error) => {
            tracing::error!(%error, "could not render the OpenAPI document");
            return "{}".to_string();
        }
    };
    close_answer_schemas(&mut value);
    mark_optional_bodies(&mut value);
    serde_json::to_string_pretty(&value).unwrap_or_else(|_| "{}".to_string())
}

/// Operations whose body may be left out: an upload without one is an empty artifact, a job
/// heartbeat without one only extends the lease, a completion without one has a null result.
/// (utoipa says "optional" only through `Option`, which it also renders as nullable, and a
/// `null` body is refused.)
const OPTIONAL_BODIES: &[&str] = &[
    "upload_artifact",
    "runner_upload_artifact",
    "job_heartbeat",
    "complete_job",
];

fn mark_optional_bodies(document: &mut serde_json::Value) {
    let Some(paths) = document
        .get_mut("paths")
        .and_then(|paths| paths.as_object_mut())
    else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
    {
        let optional = operation
            .get("operationId")
            .and_then(|id| id.as_str())
            .is_some_and(|id| OPTIONAL_BODIES.contains(&id));
        if let Some(body) = operation
            .get_mut("requestBody")
            .and_then(|body| body.as_object_mut())
            && optional
        {
            body.insert("required".into(), serde_json::Value::Bool(false));
        }
    }
}

fn close_answer_schemas(document: &mut serde_json::Value) {
    let mut in_requests = std::collections::BTreeSet::new();
    let mut pending: Vec<String> = Vec::new();
    if let Some(paths) = document.get("paths").and_then(|paths| paths.as_object()) {
        for operation in paths
            .values()
            .filter_map(|item| item.as_object())
            .flat_map(|item| item.values())
        {
            collect_references(operation.get("requestBody"), &mut pending);
            collect_references(operation.get("parameters"), &mut pending);
        }
    }
    let schemas = document
        .pointer("/components/schemas")
        .cloned()
        .unwrap_or_default();
    while let Some(name) = pending.pop() {
        if in_requests.insert(name.clone()) {
            collect_references(schemas.get(&name), &mut pending);
        }
    }
    let Some(schemas) = document
        .pointer_mut("/components/schemas")
        .and_then(|schemas| schemas.as_object_mut())
    else {
        return;
    };
    for (name, schema) in schemas.iter_mut() {
        let Some(schema) = schema.as_object_mut() else {
            continue;
        };
        if !in_requests.contains(name)
            && schema.contains_key("properties")
            && !schema.contains_key("additionalProperties")
        {
            schema.insert(
                "additionalProperties".into(),
                serde_json::Value::Bool(false),
            );
        }
    }
}

/// Names of the component schemas `value` refers to, anywhere inside it.
fn collect_references(value: Option<&serde_json::Value>, into: &mut Vec<String>) {
    match value {
        Some(serde_json::Value::Object(object)) => {
            if let Some(name) = object
                .get("$ref")
                .and_then(|reference| reference.as_str())
                .and_then(|reference| reference.strip_prefix("#/components/schemas/"))
            {
                into.push(name.to_string());
            }
            for member in object.values() {
                collect_references(Some(member), into);
            }
        }
        Some(serde_json::Value::Array(items)) => {
            for item in items {
                collect_references(Some(item), into);
            }
        }
        _ => {}
    }
}
