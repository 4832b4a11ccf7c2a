//! OpenAPI schemas of the fields whose limits the server enforces, built from the same constants
//! the checks use (muster-core's domain limits, [`crate::limits`]' protocol limits), so the
//! document cannot promise what the server refuses or refuse what it accepts. The types of this
//! crate name these functions in `#[schema(schema_with = ...)]`; the server's query parameters
//! do too.
//!
//! JSON Schema counts a string's length in characters (code points), and so do the checks.

use muster_core::{
    DEFAULT_BACKOFF_BASE_S, DEFAULT_LEASE_TTL_S, DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY,
    DEFAULT_TIMEOUT_S, MAX_ATTEMPTS_LIMIT, MAX_BACKOFF_BASE_S, MAX_CAPABILITY_ENTRIES,
    MAX_CAPABILITY_NAME_LEN, MAX_IDEMPOTENCY_KEY_LEN, MAX_JOB_INPUTS, MAX_JOB_OUTPUTS,
    MAX_KIND_LEN, MAX_LEASE_TTL_S, MAX_ORGANIZATION_ID_LEN, MAX_OUTPUT_NAME_LEN,
    MAX_RUNNER_NAME_LEN, MAX_RUNNER_REPORT_LEN, MAX_TIMEOUT_S, TextRule,
};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema,
    SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};

use crate::limits::{
    MAX_BATCH_COMPLETIONS, MAX_BATCH_SUBMIT, MAX_CLAIM_JOBS, MAX_CLAIM_KINDS, MAX_CLAIM_WAIT_MS,
    MAX_DAG_NODES, MAX_HEARTBEAT_JOBS, MAX_LOG_ENTRIES, MAX_LOG_PAGE_LIMIT, MAX_PAGE_LIMIT,
    MAX_PROGRESS_MESSAGE_LEN,
};

/// No control character anywhere: what muster-core's text rule refuses (`char::is_control`:
/// C0, DEL and C1).
pub const NO_CONTROL_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";
/// [`NO_CONTROL_PATTERN`], and at least one character that is not white space.
pub const NOT_BLANK_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$";
/// An RFC 3339 time exactly as the server reads one: a real calendar date (leap years too),
/// `T` or `t`, a time without a leap second, optional fractions, `Z`, `z` or an offset
/// below 24 hours. (`format: date-time` alone is only an annotation in JSON Schema 2020-12.)
pub const RFC3339_PATTERN: &str = concat!(
    "^(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])",
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)",
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))",
    "|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)",
    "[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:[.][0-9]+)?",
    "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
);
/// An artifact's content id.
pub const ARTIFACT_ID_PATTERN: &str = "^sha256:[0-9a-f]{64}$";

fn types(nullable: bool, of: Type) -> SchemaType {
    if nullable {
        SchemaType::from_iter([of, Type::Null])
    } else {
        SchemaType::new(of)
    }
}

fn text(rule: TextRule, nullable: bool) -> ObjectBuilder {
    let pattern = if rule.not_blank {
        NOT_BLANK_PATTERN
    } else {
        NO_CONTROL_PATTERN
    };
    ObjectBuilder::new()
        .schema_type(types(nullable, Type::String))
        .min_length((rule.min_chars > 0).then_some(rule.min_chars))
        .max_length(Some(rule.max_chars))
        .pattern(Some(pattern))
}

fn integer(nullable: bool, minimum: u64, maximum: u64) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(types(nullable, Type::Integer))
        .minimum(Some(minimum))
        .maximum(Some(maximum))
        .into()
}

fn array(items: impl Into<RefOr<Schema>>, nullable: bool, min: usize, max: usize) -> ArrayBuilder {
    ArrayBuilder::new()
        .schema_type(types(nullable, Type::Array))
        .items(items.into())
        .min_items((min > 0).then_some(min))
        .max_items(Some(max))
}

/// A map from names to `values`, as labels, resources and outputs are.
fn map(
    key: TextRule,
    values: impl Into<RefOr<Schema>>,
    nullable: bool,
    min: usize,
    max: usize,
) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(types(nullable, Type::Object))
        .property_names(Some(text(key, false).build()))
        .additional_properties(Some(AdditionalProperties::RefOr(values.into())))
        .min_properties((min > 0).then_some(min))
        .max_properties(Some(max))
        .into()
}

/// `schema` with a description (a field's doc comment is lost where `schema_with` builds it).
fn described(schema: impl Into<RefOr<Schema>>, text: impl Into<String>) -> RefOr<Schema> {
    match schema.into() {
        RefOr::T(Schema::Object(mut object)) => {
            object.description = Some(text.into());
            RefOr::T(Schema::Object(object))
        }
        RefOr::T(Schema::Array(mut array)) => {
            array.description = Some(text.into());
            RefOr::T(Schema::Array(array))
        }
        other => other,
    }
}

fn reference(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

/// Any JSON value (including null).
pub fn any_json() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some("any JSON value"))
        .into()
}

/// A JSON object with any members.
pub fn json_object() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::Object).into()
}

/// A JSON object with any members, or null.
pub fn optional_json_object() -> RefOr<Schema> {
    described(
        ObjectBuilder::new().schema_type(types(true, Type::Object)),
        "a JSON object; absent or null means `{}`",
    )
}

/// A job kind.
pub fn kind() -> RefOr<Schema> {
    described(
        text(TextRule::name(MAX_KIND_LEN), false),
        "what kind of work this is; runners claim jobs by kind",
    )
}

/// The kinds a runner claims.
pub fn claim_kinds() -> RefOr<Schema> {
    array(kind(), false, 1, MAX_CLAIM_KINDS).into()
}

/// A runner's name as registered.
pub fn runner_name() -> RefOr<Schema> {
    described(
        text(TextRule::name(MAX_RUNNER_NAME_LEN), false),
        "surrounding white space is dropped",
    )
}

/// An organization id a caller gives, or null.
pub fn optional_organization_id() -> RefOr<Schema> {
    text(TextRule::key(MAX_ORGANIZATION_ID_LEN), true).into()
}

/// An idempotency key, or null.
pub fn optional_idempotency_key() -> RefOr<Schema> {
    described(
        text(TextRule::key(MAX_IDEMPOTENCY_KEY_LEN), true),
        "a second submit with the same key answers the first job (200) instead of creating one",
    )
}

/// A runner's hostname or version as it reports them, or null.
pub fn optional_runner_report() -> RefOr<Schema> {
    text(TextRule::optional(MAX_RUNNER_REPORT_LEN), true).into()
}

/// Labels: names to values.
pub fn labels() -> RefOr<Schema> {
    map(
        TextRule::key(MAX_CAPABILITY_NAME_LEN),
        text(TextRule::optional(MAX_CAPABILITY_NAME_LEN), false),
        false,
        0,
        MAX_CAPABILITY_ENTRIES,
    )
}

/// Tags: names.
pub fn tags() -> RefOr<Schema> {
    tags_or_null(false)
}

/// Tags, or null (an operator's runner whose tags are not fixed).
pub fn optional_tags() -> RefOr<Schema> {
    tags_or_null(true)
}

fn tags_or_null(nullable: bool) -> RefOr<Schema> {
    array(
        text(TextRule::key(MAX_CAPABILITY_NAME_LEN), false),
        nullable,
        0,
        MAX_CAPABILITY_ENTRIES,
    )
    .into()
}

/// Resources: names to amounts, each at least 0.
pub fn resources() -> RefOr<Schema> {
    resources_or_null(false)
}

/// Resources, or null (an operator's runner whose resources are not fixed).
pub fn optional_resources() -> RefOr<Schema> {
    resources_or_null(true)
}

fn resources_or_null(nullable: bool) -> RefOr<Schema> {
    map(
        TextRule::key(MAX_CAPABILITY_NAME_LEN),
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
            .minimum(Some(0)),
        nullable,
        0,
        MAX_CAPABILITY_ENTRIES,
    )
}

/// An artifact's content id.
pub fn artifact_id() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(ARTIFACT_ID_PATTERN))
        .into()
}

/// The artifacts a job reads.
pub fn inputs() -> RefOr<Schema> {
    array(artifact_id(), false, 0, MAX_JOB_INPUTS).into()
}

/// The artifacts a job reads, or null for none.
pub fn optional_inputs() -> RefOr<Schema> {
    described(
        array(artifact_id(), true, 0, MAX_JOB_INPUTS),
        "artifacts (from an upload) the job reads; each must be stored",
    )
}

/// A job's outputs: names to artifact ids.
pub fn outputs() -> RefOr<Schema> {
    map(
        TextRule::key(MAX_OUTPUT_NAME_LEN),
        artifact_id(),
        false,
        0,
        MAX_JOB_OUTPUTS,
    )
}

/// Outputs recorded with a completion, or null for none.
pub fn optional_outputs() -> RefOr<Schema> {
    described(
        map(
            TextRule::key(MAX_OUTPUT_NAME_LEN),
            artifact_id(),
            true,
            0,
            MAX_JOB_OUTPUTS,
        ),
        "outputs to record in the same commit: name to artifact id",
    )
}

/// `POST /api/v1/runner/jobs/{id}/outputs`: `{"name", "artifact_id"}` or `{"outputs": {...}}`
/// (at least one), never both; a member of the other form may only be absent or null.
pub fn record_outputs() -> RefOr<Schema> {
    let null = || ObjectBuilder::new().schema_type(Type::Null);
    let one = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("name", text(TextRule::key(MAX_OUTPUT_NAME_LEN), false))
        .property("artifact_id", artifact_id())
        .property("outputs", null())
        .required("name")
        .required("artifact_id");
    let several = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("name", null())
        .property("artifact_id", null())
        .property(
            "outputs",
            map(
                TextRule::key(MAX_OUTPUT_NAME_LEN),
                artifact_id(),
                false,
                1,
                MAX_JOB_OUTPUTS,
            ),
        )
        .required("outputs");
    OneOfBuilder::new()
        .item(one)
        .item(several)
        .description(Some(
            "one output (`name` and `artifact_id`) or several (`outputs`, name to artifact id), not both",
        ))
        .into()
}

/// `POST /api/v1/runner/jobs/{id}/log`: one entry, or `{"entries": [...]}` (a body with
/// `entries` is read as a batch).
pub fn log_body() -> RefOr<Schema> {
    utoipa::openapi::schema::AnyOfBuilder::new()
        .item(reference("NewLogEntry"))
        .item(reference("LogBatch"))
        .into()
}

/// When a job may run first, or null for now.
pub fn optional_run_after() -> RefOr<Schema> {
    described(
        ObjectBuilder::new()
            .schema_type(types(true, Type::String))
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .pattern(Some(RFC3339_PATTERN)),
        "not before this time (RFC 3339, no leap second); absent or null means now",
    )
}

/// A job's priority (lower runs first), or null for the default.
pub fn optional_priority() -> RefOr<Schema> {
    described(
        ObjectBuilder::new()
            .schema_type(types(true, Type::Integer))
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
            .minimum(Some(i32::MIN))
            .maximum(Some(i32::MAX)),
        format!("lower runs first; default {DEFAULT_PRIORITY}"),
    )
}

pub fn optional_max_attempts() -> RefOr<Schema> {
    described(
        integer(true, 1, MAX_ATTEMPTS_LIMIT.into()),
        format!("attempts before the job fails; default {DEFAULT_MAX_ATTEMPTS}"),
    )
}

pub fn optional_timeout_s() -> RefOr<Schema> {
    described(
        integer(true, 1, MAX_TIMEOUT_S.into()),
        format!("run-time limit of one attempt, in seconds; default {DEFAULT_TIMEOUT_S}"),
    )
}

pub fn optional_lease_ttl_s() -> RefOr<Schema> {
    described(
        integer(true, 1, MAX_LEASE_TTL_S.into()),
        format!(
            "lease length in seconds, extended by each job heartbeat; default {DEFAULT_LEASE_TTL_S}"
        ),
    )
}

pub fn optional_backoff_base_s() -> RefOr<Schema> {
    described(
        integer(true, 0, MAX_BACKOFF_BASE_S.into()),
        format!("retry backoff base in seconds; default {DEFAULT_BACKOFF_BASE_S}"),
    )
}

/// The jobs of a batch submit.
pub fn batch_jobs() -> RefOr<Schema> {
    array(reference("SubmitJob"), false, 1, MAX_BATCH_SUBMIT).into()
}

/// How many jobs a claim takes at most, or null for 1.
pub fn optional_claim_max_jobs() -> RefOr<Schema> {
    described(
        integer(true, 1, MAX_CLAIM_JOBS.into()),
        "jobs to lease at most; default 1",
    )
}

/// How long a claim long-polls, in milliseconds, or null for 0.
pub fn optional_claim_wait_ms() -> RefOr<Schema> {
    described(
        integer(true, 0, MAX_CLAIM_WAIT_MS),
        "long-poll up to this long (milliseconds) for work; default 0",
    )
}

/// The job ids a runner heartbeat lists.
pub fn heartbeat_jobs() -> RefOr<Schema> {
    array(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
        false,
        0,
        MAX_HEARTBEAT_JOBS,
    )
    .into()
}

fn percent() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
        .minimum(Some(0))
        .maximum(Some(100))
}

/// A progress percentage, 0 to 100.
pub fn progress_percent() -> RefOr<Schema> {
    percent().into()
}

fn progress_message(nullable: bool) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(types(nullable, Type::String))
        .max_length(Some(MAX_PROGRESS_MESSAGE_LEN))
}

/// A progress message, or null.
pub fn optional_progress_message() -> RefOr<Schema> {
    progress_message(true).into()
}

/// A job heartbeat's progress: a number, `{"progress": N, "message": "..."}`, or null.
pub fn optional_heartbeat_progress() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(percent())
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("progress", percent())
                .property("message", progress_message(true))
                .required("progress"),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

/// A job heartbeat's events, each appended to the log (a string is the message), or null.
pub fn optional_heartbeat_events() -> RefOr<Schema> {
    array(any_json(), true, 0, MAX_LOG_ENTRIES).into()
}

/// The entries of one log call.
pub fn log_entries() -> RefOr<Schema> {
    array(reference("NewLogEntry"), false, 0, MAX_LOG_ENTRIES).into()
}

/// The completions of one batch completion.
pub fn batch_completions() -> RefOr<Schema> {
    array(reference("CompletionItem"), false, 0, MAX_BATCH_COMPLETIONS).into()
}

/// A DAG node or edge end's id: a string or an integer.
fn dag_id() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Integer]))
}

/// A DAG's nodes: objects with a unique `id`; other members are kept as sent.
pub fn dag_nodes() -> RefOr<Schema> {
    array(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("id", dag_id())
            .required("id"),
        false,
        0,
        MAX_DAG_NODES,
    )
    .into()
}

/// A DAG's edges: objects whose `from` and `to` name nodes; other members are kept as sent.
pub fn dag_edges() -> RefOr<Schema> {
    array(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("from", dag_id())
            .property("to", dag_id())
            .required("from")
            .required("to"),
        false,
        0,
        MAX_DAG_NODES,
    )
    .into()
}

/// A whole number from 0 to `maximum`, without a `format`: `int64` would claim a signed range.
fn unsigned(nullable: bool, maximum: u64) -> RefOr<Schema> {
    integer(nullable, 0, maximum)
}

/// A log cursor (`after_seq`): any 64-bit unsigned number; past the last entry is simply empty.
pub fn after_seq() -> RefOr<Schema> {
    unsigned(false, u64::MAX)
}

/// A lease epoch a runner sends (`Muster-Lease-Epoch`, a completion's `epoch`).
pub fn lease_epoch() -> RefOr<Schema> {
    unsigned(false, u64::MAX)
}

/// A lease epoch, or null for "whatever epoch the caller holds".
pub fn optional_lease_epoch() -> RefOr<Schema> {
    unsigned(true, u64::MAX)
}

/// A log entry's own sequence number, or null to have the coordinator number it. Stores keep
/// them as signed 64-bit numbers.
pub fn optional_log_seq() -> RefOr<Schema> {
    unsigned(true, i64::MAX as u64)
}

/// A list's `limit` query parameter.
pub fn page_limit() -> RefOr<Schema> {
    integer(false, 1, MAX_PAGE_LIMIT.into())
}

/// A log page's `limit` query parameter.
pub fn log_page_limit() -> RefOr<Schema> {
    integer(false, 1, MAX_LOG_PAGE_LIMIT.into())
}

/// The raw bytes of an artifact, as a request or answer body.
pub fn binary() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
        .into()
}

/// A workload id as the caller chose it.
pub const WORKLOAD_ID_PATTERN: &str = "^[A-Za-z0-9._:-]+$";

/// A workload's id (the caller's): 1 to 128 of letters, digits and `. _ - :`.
pub fn workload_id() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(types(false, Type::String))
        .min_length(Some(1))
        .max_length(Some(muster_core::workload::MAX_WORKLOAD_ID_LEN))
        .pattern(Some(WORKLOAD_ID_PATTERN))
        .into()
}

/// A thread, agent or ziti identity id of a workload; empty for none.
pub fn workload_reference() -> RefOr<Schema> {
    text(
        TextRule::optional(muster_core::workload::MAX_WORKLOAD_REFERENCE_LEN),
        false,
    )
    .into()
}

/// The reason given with a workload's status, or null.
pub fn optional_workload_reason() -> RefOr<Schema> {
    text(
        TextRule::optional(muster_core::workload::MAX_WORKLOAD_REASON_LEN),
        true,
    )
    .into()
}

/// A container's id: 1 to 512 characters.
pub fn container_id() -> RefOr<Schema> {
    text(
        TextRule::key(muster_core::workload::MAX_CONTAINER_FIELD_LEN),
        false,
    )
    .into()
}

/// A container's name or image.
pub fn container_text() -> RefOr<Schema> {
    text(
        TextRule::optional(muster_core::workload::MAX_CONTAINER_FIELD_LEN),
        false,
    )
    .into()
}

/// A workload's containers: at most 64, each id once.
pub fn containers() -> RefOr<Schema> {
    array(
        reference("Container"),
        false,
        0,
        muster_core::workload::MAX_WORKLOAD_CONTAINERS,
    )
    .into()
}

/// A workload's containers, or null to keep those recorded.
pub fn optional_containers() -> RefOr<Schema> {
    array(
        reference("Container"),
        true,
        0,
        muster_core::workload::MAX_WORKLOAD_CONTAINERS,
    )
    .into()
}
