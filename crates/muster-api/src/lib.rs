//! The JSON shapes of muster's HTTP API v1 (`shared/api-v1.md`), shared by the server and the
//! client so the two cannot drift apart.
//!
//! These types are the wire format only. The server converts them to and from the domain types
//! of `muster-core`; nothing else does.

use std::collections::BTreeMap;

pub use muster_core::limits;
#[cfg(feature = "openapi")]
pub mod schemas;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

macro_rules! schema {
    ($($item:item)*) => {
        $(
            #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
            $item
        )*
    };
}

/// Deserializers that accept only JSON objects where a struct is expected: serde would otherwise
/// read an array as a struct's fields in order, so `["exec"]` would pass for a job. They hand the
/// object's entries to the struct's own derived code, so error paths stay exact.
mod objects_only {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::value::MapAccessDeserializer;
    use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer};

    struct ObjectVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
        type Value = T;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map))
        }
    }

    fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        deserializer.deserialize_map(ObjectVisitor(PhantomData))
    }

    struct OptionalObject<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for OptionalObject<T> {
        type Value = Option<T>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a JSON object or null")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
            object(deserializer).map(Some)
        }
    }

    pub(crate) fn optional<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<Option<T>, D::Error> {
        deserializer.deserialize_option(OptionalObject(PhantomData))
    }

    struct ObjectSeed<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for ObjectSeed<T> {
        type Value = T;

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
            object(deserializer)
        }
    }

    struct ListOfObjects<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ListOfObjects<T> {
        type Value = Vec<T>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("an array of JSON objects")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut sequence: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::with_capacity(sequence.size_hint().unwrap_or(0).min(4096));
            while let Some(item) = sequence.next_element_seed(ObjectSeed(PhantomData))? {
                items.push(item);
            }
            Ok(items)
        }
    }

    pub(crate) fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<Vec<T>, D::Error> {
        deserializer.deserialize_seq(ListOfObjects(PhantomData))
    }

    struct OptionalList<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for OptionalList<T> {
        type Value = Option<Vec<T>>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("an array of JSON objects or null")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Option<Vec<T>>, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Option<Vec<T>>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Option<Vec<T>>, D::Error> {
            list(deserializer).map(Some)
        }
    }

    pub(crate) fn optional_list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<T>>, D::Error> {
        deserializer.deserialize_option(OptionalList(PhantomData))
    }
}

/// `run_after` as RFC 3339, or null, exactly as the schema's pattern states it. A leap second
/// (`23:59:60`) is refused rather than read as `23:59:59.999999999`, as the `time` crate would:
/// JSON Schema cannot state which instants have one, and no job needs to be scheduled at one.
mod schedule_time {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<OffsetDateTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::option::serialize(value, serializer)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(None);
        };
        // RFC 3339 puts the separator at byte 10 and the seconds at bytes 17 and 18:
        // `YYYY-MM-DDTHH:MM:SS`. The `time` crate also takes a space for the `T`; JSON Schema's
        // `date-time` does not, so neither does this.
        if text.get(10..11).is_some_and(|separator| separator == " ") {
            return Err(serde::de::Error::custom(
                "date and time must be separated by T, as RFC 3339 writes them",
            ));
        }
        if text.get(17..19) == Some("60") {
            return Err(serde::de::Error::custom(
                "a leap second (:60) is not a time a job can be scheduled at",
            ));
        }
        OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// The header a runner sends its lease epoch in.
pub const LEASE_EPOCH_HEADER: &str = "Muster-Lease-Epoch";

/// The cookie holding a dashboard session's secret (HttpOnly: the page cannot read it).
pub const SESSION_COOKIE: &str = "muster_session";

/// The cookie holding a dashboard session's CSRF token, which the page reads and sends back.
pub const CSRF_COOKIE: &str = "muster_csrf";

/// The header a request authenticated by a session cookie must carry, when it changes
/// anything, with the value of [`CSRF_COOKIE`].
pub const CSRF_HEADER: &str = "X-CSRF-Token";

pub use muster_core::RUNNER_TOKEN_PREFIX;

schema! {
/// The error body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable snake_case `code` to branch on and a message for people.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Claimed,
    Running,
    Cancelling,
    Completed,
    Failed,
    Cancelled,
}

/// Why an attempt or a job failed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    RunnerError,
    LeaseExpired,
    TimedOut,
    Cancelled,
}

/// Why a pending job is not being taken.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PendingReason {
    NoRunnerForKind,
    RequirementsUnmet,
    Scheduled,
}

/// Log severity.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

/// A runner's health.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunnerStatus {
    Online,
    Offline,
    Draining,
}

/// Where a runner stands with the coordinator.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RunnerEnrollment {
    /// It may claim and run jobs.
    #[default]
    Enrolled,
    /// It registered under the approval gate and waits for an operator: heartbeats only.
    Pending,
    /// An operator turned it away.
    Rejected,
}

/// What a runner says about itself in a heartbeat.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RunnerActivity {
    #[default]
    Active,
    Draining,
}

/// Labels that must match, tags that must all be present, resources that must be at least as
/// large.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct Requirements {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::labels))]
    pub labels: BTreeMap<String, String>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::tags))]
    pub tags: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::resources))]
    pub resources: BTreeMap<String, f64>,
}

/// The last progress a runner reported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Progress {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::progress_percent))]
    pub percent: f64,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub message: Option<String>,
}

/// The error recorded on a failed attempt or job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobError {
    pub reason: FailureReason,
    pub message: String,
}

/// A job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Job {
    pub id: Uuid,
    pub kind: String,
    pub state: JobState,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::json_object))]
    pub payload: Value,
    pub priority: i32,
    pub requirements: Requirements,
    /// Artifact ids (`sha256:...`) the job reads, as submitted.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::inputs))]
    #[serde(default)]
    pub inputs: Vec<String>,
    pub attempt: u32,
    pub max_attempts: u32,
    pub timeout_s: u32,
    pub lease_ttl_s: u32,
    pub backoff_base_s: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub run_after: OffsetDateTime,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub idempotency_key: Option<String>,
    pub progress: Progress,
    /// What the runner completed it with (any JSON); null until then.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::any_json, required))]
    pub result: Option<Value>,
    /// Artifacts the current or last attempt recorded, by name; empty again when a new attempt
    /// is claimed.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::outputs))]
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub error: Option<JobError>,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub runner_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[cfg_attr(feature = "openapi", schema(required))]
    #[serde(with = "time::serde::rfc3339::option")]
    pub claimed_at: Option<OffsetDateTime>,
    #[cfg_attr(feature = "openapi", schema(required))]
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[cfg_attr(feature = "openapi", schema(required))]
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[cfg_attr(feature = "openapi", schema(required))]
    #[serde(with = "time::serde::rfc3339::option")]
    pub lease_expires_at: Option<OffsetDateTime>,
    /// Current lease epoch (0 before the first claim).
    #[serde(default)]
    pub lease_epoch: u64,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub pending_reason: Option<PendingReason>,
    /// The result's signature, when the completion sent one and it verified; null otherwise.
    #[cfg_attr(feature = "openapi", schema(required))]
    #[serde(default)]
    pub result_signature: Option<JobResultSignature>,
    /// The organization the job belongs to.
    #[serde(default = "default_organization")]
    pub organization_id: String,
}


/// The `sig` of a bakeoff result envelope.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResultSignature {
    /// Lowercase hex SHA-256 of the canonical JSON of `result`.
    pub sha256: String,
    /// Standard base64 Ed25519 signature over the 32 raw digest bytes.
    pub signature: String,
    /// The signer's own name for itself: recorded, not matched.
    pub runner_id: String,
    /// When the signer says it signed: recorded, not matched.
    pub signed_at: String,
}

/// A job's verified result signature.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobResultSignature {
    /// `sha256:` and the hex SHA-256 of the key the signature verified against.
    pub key_fingerprint: String,
    pub sha256: String,
    pub signature: String,
    pub signed_at: String,
    pub signer_runner_id: String,
}

/// `POST /api/v1/jobs`: only `kind` is required.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SubmitJob {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::kind))]
    pub kind: String,
    /// A JSON object the runner reads; default `{}`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_json_object))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Lower runs first; default 100.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_priority))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "objects_only::optional")]
    pub requirements: Option<Requirements>,
    /// Default 3.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_max_attempts))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Run-time limit of one attempt; default 3600.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_timeout_s))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u32>,
    /// Lease length, extended by each job heartbeat; default 30.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_lease_ttl_s))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl_s: Option<u32>,
    /// Retry backoff base; default 1.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_backoff_base_s))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_base_s: Option<u32>,
    /// Not before this time (RFC 3339; a leap second is refused).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_run_after))]
    #[serde(default, with = "schedule_time", skip_serializing_if = "Option::is_none")]
    pub run_after: Option<OffsetDateTime>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_idempotency_key))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Artifact ids (`sha256:...`, from an upload) the job reads; each must be stored.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_inputs))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<String>>,
    /// The organization the job is for; `default` when not given. It must exist.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_organization_id))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
}

/// `POST /api/v1/jobs/batch`: up to 1000 jobs submitted in one commit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SubmitJobs {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::batch_jobs))]
    #[serde(deserialize_with = "objects_only::list")]
    pub jobs: Vec<SubmitJob>,
}

/// A page of jobs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobList {
    pub items: Vec<Job>,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub next_cursor: Option<String>,
}

/// A stored log entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
    pub level: LogLevel,
    pub message: String,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::any_json, required))]
    pub metadata: Option<Value>,
}

/// A page of a job's log. Continue with `after_seq = next_seq - 1`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogPage {
    pub items: Vec<LogEntry>,
    pub next_seq: u64,
}

/// `GET /api/v1/jobs/{id}/logs/search`: the matches among the entries one call looked at.
/// Continue with `after_seq = next_seq - 1` while `next_seq` is below `log_next_seq`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogSearchPage {
    pub items: Vec<LogEntry>,
    pub next_seq: u64,
    /// The log's next unwritten `seq` when it was read.
    pub log_next_seq: u64,
}

/// A step DAG as a runner reports it: nodes with at least an `id`, edges with `from` and `to`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Dag {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::dag_nodes))]
    pub nodes: Vec<Value>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::dag_edges))]
    pub edges: Vec<Value>,
}

/// `POST /api/v1/runners`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CreateRunner {
    /// Surrounding white space is dropped.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::runner_name))]
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::labels))]
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Tags the operator fixes. With `tags` or `resources` given, the runner's capabilities are
    /// bound to these and `labels`: its claims may narrow them, never widen them. Without
    /// either, it declares its capabilities at each claim and is trusted to tell the truth.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_tags))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Resources the operator fixes (see `tags`).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_resources))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<BTreeMap<String, f64>>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_organization_id))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
}

/// A registered runner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Runner {
    pub id: Uuid,
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub organization_id: Option<String>,
    pub status: RunnerStatus,
    pub labels: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub resources: BTreeMap<String, f64>,
    pub kinds: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub hostname: Option<String>,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub version: Option<String>,
    #[cfg_attr(feature = "openapi", schema(required))]
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_heartbeat_at: Option<OffsetDateTime>,
    pub running_jobs: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// `enrolled` for runners an operator created.
    #[serde(default)]
    pub enrollment: RunnerEnrollment,
    /// `sha256:` and the hex SHA-256 of the key it registered with; null for runners an
    /// operator created.
    #[cfg_attr(feature = "openapi", schema(required))]
    #[serde(default)]
    pub key_fingerprint: Option<String>,
    /// That key, standard base64 of its 32 bytes: what its result signatures verify against.
    #[cfg_attr(feature = "openapi", schema(required))]
    #[serde(default)]
    pub public_key: Option<String>,
    /// When its current token stops working; null for the non-expiring tokens of runners an
    /// operator created.
    #[cfg_attr(feature = "openapi", schema(required))]
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub token_expires_at: Option<OffsetDateTime>,
    /// Whether its capabilities are bound (by its signed registration, or fixed by the operator
    /// who created it): its claims may narrow them, never widen them.
    #[serde(default)]
    pub capabilities_bound: bool,
}

/// `POST /api/v1/runners/register`: a runner registering itself with its Ed25519 key. The
/// `signature` covers the bytes `muster-register-v1\n` followed by the canonical JSON of this
/// body without `signature`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegisterRunner {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::runner_name))]
    pub name: String,
    pub hostname: String,
    /// Standard base64 (with padding) of the key's 32 raw bytes.
    pub public_key: String,
    /// The kinds it runs; its claims may name some of them, never others.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::claim_kinds))]
    pub kinds: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::labels))]
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::tags))]
    #[serde(default)]
    pub tags: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::resources))]
    #[serde(default)]
    pub resources: BTreeMap<String, f64>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_organization_id))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// When it was signed: within 300 s of the coordinator's clock, and later than the key's
    /// last registration.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// Standard base64 of the Ed25519 signature.
    pub signature: String,
}

/// The answer to `POST /api/v1/runners/register`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunnerRegistered {
    pub runner: Runner,
    /// The runner's token (a new one at every registration); the only time it is shown.
    pub token: String,
    #[serde(with = "time::serde::rfc3339")]
    pub token_expires_at: OffsetDateTime,
}

/// The answer to `POST /api/v1/runners`: the only time the token is shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreatedRunner {
    pub runner: Runner,
    pub token: String,
}

/// A page of runners.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunnerList {
    pub items: Vec<Runner>,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub next_cursor: Option<String>,
}

/// `POST /api/v1/runner/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct RunnerHeartbeat {
    pub status: RunnerActivity,
    /// The jobs the runner is working on.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::heartbeat_jobs))]
    pub jobs: Vec<Uuid>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_runner_report))]
    pub hostname: Option<String>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_runner_report))]
    pub version: Option<String>,
}

/// The answer to a runner heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunnerHeartbeatResponse {
    /// When to send the next heartbeat.
    pub heartbeat_interval_ms: u64,
    /// Jobs among those listed that the runner must stop.
    pub cancel: Vec<Uuid>,
}

/// `POST /api/v1/runner/claim`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ClaimJobs {
    /// The kinds this runner can run; required, not empty.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::claim_kinds))]
    pub kinds: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::labels))]
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::tags))]
    #[serde(default)]
    pub tags: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::resources))]
    #[serde(default)]
    pub resources: BTreeMap<String, f64>,
    /// Default 1, at most 1000.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_claim_max_jobs))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_jobs: Option<u32>,
    /// Long-poll up to this long for work; default 0, at most 60000.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_claim_wait_ms))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// A lease: the time-limited right to work on one attempt, fenced by its epoch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lease {
    pub epoch: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub ttl_ms: u64,
}

/// A job handed to a runner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClaimedJob {
    pub id: Uuid,
    pub kind: String,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::json_object))]
    pub payload: Value,
    pub attempt: u32,
    pub max_attempts: u32,
    pub timeout_s: u32,
    /// Artifact ids the job reads; download them from `/api/v1/runner/artifacts/{id}`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::inputs))]
    #[serde(default)]
    pub inputs: Vec<String>,
    pub lease: Lease,
}

/// The answer to a claim that found work.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClaimedJobs {
    pub jobs: Vec<ClaimedJob>,
}

/// Progress as a runner reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ProgressReport {
    /// 0 to 100.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::progress_percent))]
    pub progress: f64,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_progress_message))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /api/v1/runner/jobs/{id}/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct JobHeartbeat {
    /// Either a number (0 to 100) or `{"progress", "message"}`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_heartbeat_progress))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Value>,
    /// Appended to the job's log as `info` entries: a string is the message, an object's
    /// `message` member is (the object is kept as metadata).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_heartbeat_events))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Value>>,
}

/// The answer to a job heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobHeartbeatResponse {
    pub lease: Lease,
    pub cancel: bool,
}

/// The answer to job-scoped calls that only need to say whether to stop.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CancelFlag {
    pub cancel: bool,
}

/// One log entry as a runner sends it. With `seq`, a resent entry is stored once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct NewLogEntry {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_log_seq))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default)]
    pub level: LogLevel,
    pub message: String,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::any_json))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// A batch of log entries (`POST .../log` also takes one bare entry).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct LogBatch {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::log_entries))]
    #[serde(deserialize_with = "objects_only::list")]
    pub entries: Vec<NewLogEntry>,
}

/// The answer to a log append.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogAppended {
    pub next_seq: u64,
    pub cancel: bool,
}

/// `POST /api/v1/runner/jobs/{id}/complete`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CompleteJob {
    /// Any JSON value.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::any_json))]
    #[serde(default)]
    pub result: Option<Value>,
    /// Outputs to record with the completion, in the same commit: name to artifact id.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_outputs))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<BTreeMap<String, String>>,
    /// The result's signature (the bakeoff envelope's `sig`), verified against the runner's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<ResultSignature>,
}

/// The answer to recording outputs: every output the job now has, and whether to stop.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputsRecorded {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::outputs))]
    pub outputs: BTreeMap<String, String>,
    pub cancel: bool,
}

/// A stored artifact: its content id (`sha256:` and the hex SHA-256 of its bytes) and size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Artifact {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::artifact_id))]
    pub id: String,
    pub size: u64,
}

/// One completion in a batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompletionItem {
    pub id: Uuid,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_lease_epoch))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Any JSON value.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::any_json))]
    #[serde(default)]
    pub result: Option<Value>,
    /// The result's signature, verified against the runner's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<ResultSignature>,
}

/// `POST /api/v1/runner/complete`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CompleteJobs {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::batch_completions))]
    #[serde(deserialize_with = "objects_only::list")]
    pub items: Vec<CompletionItem>,
}

/// The outcome of one completion in a batch: `ok: true` or an `error`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompletionOutcome {
    pub id: Uuid,
    /// Present (and true) when the completion was committed.
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// Present when it was refused; nothing changed for this job.
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// The answer to a batch completion, in the order of the request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompletionOutcomes {
    pub items: Vec<CompletionOutcome>,
}

/// `POST /api/v1/runner/jobs/{id}/fail`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct FailJob {
    /// What went wrong.
    #[serde(default)]
    pub error: Option<String>,
    /// Default `runner_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    /// Default true: retried while attempts remain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
}
}

/// `POST /api/v1/runner/jobs/{id}/outputs`: one output (`name` and `artifact_id`) or several
/// (`outputs`, name to artifact id), not both.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RecordOutputs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<BTreeMap<String, String>>,
}

// Its two forms exclude each other, which a derived schema cannot say.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for RecordOutputs {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schemas::record_outputs()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for RecordOutputs {}

schema! {
/// `POST /api/v1/admin/runner-keys`: put a runner key on the allowlist.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct AddRunnerKey {
    /// The Ed25519 public key: standard base64 (with padding) of its 32 raw bytes.
    pub public_key: String,
    /// Free text for operators: whose machine this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_organization_id))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
}

/// A runner key on the allowlist.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunnerKey {
    /// `sha256:` and the lowercase hex SHA-256 of the key's 32 raw bytes.
    pub fingerprint: String,
    pub public_key: String,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub note: Option<String>,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub organization_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A page of the runner key allowlist, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunnerKeyList {
    pub items: Vec<RunnerKey>,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub next_cursor: Option<String>,
}

/// A recorded security event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    /// Increasing in the order events were recorded.
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who did it: `admin`, `runner:<id>`, `key:<fingerprint>`, `address:<ip>`.
    pub actor: String,
    /// What happened: `runner_key.added`, `runner_key.removed`, ...
    pub action: String,
    /// What it happened to: a key fingerprint, a runner id.
    pub subject: String,
    /// More about it (an object).
    pub detail: Value,
    /// The organization it concerns, whose admins may read it; null for the whole cluster.
    #[cfg_attr(feature = "openapi", schema(required))]
    #[serde(default)]
    pub organization_id: Option<String>,
}

/// A page of the audit log, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditList {
    pub items: Vec<AuditEntry>,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub next_cursor: Option<String>,
}
}

schema! {
/// `PUT /api/v1/kinds/{kind}`: a kind's result rules.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SetKindSettings {
    /// A JSON Schema (draft 2020-12) every result of the kind must meet; null for none.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::any_json))]
    #[serde(default)]
    pub result_schema: Option<Value>,
    /// Completions of the kind must carry a signature by the runner's key. Default false.
    #[serde(default)]
    pub require_signed_results: bool,
}

/// `POST /api/v1/admin/organizations`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CreateOrganization {
    /// Shown in lists; unique. The organization's id is made from it (`Acme Corp` is
    /// `acme-corp`).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub name: String,
    /// Whether cluster-scoped runners may take its jobs. Default (absent or null) true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_shared_runners: Option<bool>,
}

/// An organization.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Organization {
    /// `default`, or the id made from its name.
    pub id: String,
    pub name: String,
    pub allow_shared_runners: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A page of organizations, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OrganizationList {
    pub items: Vec<Organization>,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub next_cursor: Option<String>,
}

/// A kind's result rules.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KindSettings {
    pub kind: String,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::any_json))]
    pub result_schema: Option<Value>,
    pub require_signed_results: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A page of kinds' result rules, by kind name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KindSettingsList {
    pub items: Vec<KindSettings>,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub next_cursor: Option<String>,
}

/// `POST /api/v1/admin/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CreateUserToken {
    /// What the token is for ("ci", "alice's laptop"): shown in lists, never secret.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub name: String,
    /// `viewer`, `submitter`, `operator` or `admin`; each includes the ones before it.
    pub role: String,
    /// The organization it acts in. A scoped admin: its own, or omitted (then its own). An admin
    /// of every organization: omitted (or null) mints a token of every organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// When it stops working (RFC 3339, in the future); never when omitted or null.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
}

/// A user token as lists show it: never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserTokenInfo {
    pub id: Uuid,
    pub name: String,
    /// `viewer`, `submitter`, `operator` or `admin`.
    pub role: String,
    /// Its organization; null for a token of every organization.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub organization_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[cfg_attr(feature = "openapi", schema(required))]
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When it was last used, to the minute; null when never.
    #[cfg_attr(feature = "openapi", schema(required))]
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

/// The answer to `POST /api/v1/admin/tokens`: the token is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreatedUserToken {
    pub token_info: UserTokenInfo,
    /// `muster_user_` and 43 URL-safe characters. Only its hash is kept.
    pub token: String,
}

/// A page of user tokens, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserTokenList {
    pub items: Vec<UserTokenInfo>,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/whoami`: who the token in the request is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WhoAmI {
    /// `bootstrap-admin` or `user`.
    pub kind: String,
    /// The role it acts with.
    pub role: String,
    /// Its organization; null for every organization.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub organization_id: Option<String>,
    /// The user token's record; null for the bootstrap admin token.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub token_info: Option<UserTokenInfo>,
}

/// One try of a job by one runner (`GET /api/v1/jobs/{id}/attempts`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attempt {
    /// Counts from 1 within one run of the job (a user's retry starts it again).
    pub attempt: u32,
    /// The epoch of the attempt's lease: unique within the job, growing.
    pub lease_epoch: u64,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub runner_id: Option<Uuid>,
    #[cfg_attr(feature = "openapi", schema(required))]
    #[serde(with = "time::serde::rfc3339::option")]
    pub claimed_at: Option<OffsetDateTime>,
    #[cfg_attr(feature = "openapi", schema(required))]
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[cfg_attr(feature = "openapi", schema(required))]
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    pub outcome: AttemptOutcome,
    /// Why it ended, when it failed or was cancelled.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub error: Option<JobError>,
}

/// How an attempt ended, or that it goes on.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

/// A job's attempts, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttemptList {
    pub items: Vec<Attempt>,
}

/// `POST /api/v1/session`: sign in to the dashboard with a user token or the bootstrap admin
/// token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpenSession {
    pub token: String,
}

/// A dashboard session just opened. The session itself is in the `muster_session` cookie
/// (HttpOnly) and never in a body; `muster_csrf` (readable by the page) holds the token that
/// state-changing requests send back as `X-CSRF-Token`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionOpened {
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub whoami: WhoAmI,
}

/// `GET /api/v1/jobs/count`: how many jobs match a filter, counted no further than 10,000.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobCount {
    pub count: u64,
    /// Whether more than `count` match (the count stopped at its cap: show "10,000+").
    pub capped: bool,
}

/// `GET /api/v1/jobs/summary`: jobs by state (every state named, zeros included), and by kind
/// for the 50 kinds with the most jobs, most first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobSummary {
    pub by_state: BTreeMap<String, u64>,
    pub kinds: Vec<KindSummary>,
    /// The jobs of the kinds left out, by state.
    pub other_kinds: BTreeMap<String, u64>,
    /// How many kinds were left out.
    pub other_kind_count: u64,
    /// What ended in the last hour on every coordinator of the store; null for a token scoped
    /// to one organization.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub last_hour: Option<LastHour>,
}

/// Completions and failed attempts (by reason) in the last hour, across every coordinator of
/// the store, counted by the minute from `since` (the start of the minute 59 minutes before the
/// current one).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LastHour {
    pub completed: u64,
    /// Failed attempts by reason: `runner_error`, `lease_expired`, `timed_out`, `cancelled`.
    pub failed_attempts: BTreeMap<String, u64>,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
}

/// One kind's jobs by state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KindSummary {
    pub kind: String,
    pub total: u64,
    pub by_state: BTreeMap<String, u64>,
}

/// What a bulk change does to each job it selects.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    /// Pending jobs end `cancelled`; claimed and running ones go to `cancelling`.
    Cancel,
    /// Failed and cancelled jobs are pending again with a fresh allowance of attempts.
    Retry,
}

/// The filter of a bulk change: the filters of `GET /api/v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct JobSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// Created at or after this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub created_after: Option<OffsetDateTime>,
    /// Created before this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub created_before: Option<OffsetDateTime>,
}

/// `POST /api/v1/jobs/bulk`: cancel or retry the jobs named in `ids`, or every job matching
/// `filter` (one page per call: pass `next_cursor` back until it is null). Exactly one of `ids`
/// and `filter`. With `dry_run`, nothing changes and `would_change` counts the jobs the
/// action would change now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BulkJobs {
    pub action: BulkAction,
    /// At most 1,000 job ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<Uuid>>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "objects_only::optional")]
    pub filter: Option<JobSelector>,
    #[serde(default)]
    pub dry_run: bool,
    /// With `filter`: the `next_cursor` of the previous call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// With `filter`: how many matching jobs this call examines (1 to 1000; default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A job a bulk change changed, in its new state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BulkChangedJob {
    pub id: Uuid,
    pub state: JobState,
}

/// A job a bulk change left alone: not found, in a state the action does not change, or
/// changed by someone else since it was read (its state then says how).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BulkSkippedJob {
    pub id: Uuid,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub state: Option<JobState>,
    pub error: ErrorDetail,
}

/// What one `POST /api/v1/jobs/bulk` call did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BulkJobsOutcome {
    pub action: BulkAction,
    pub dry_run: bool,
    /// With `dry_run`: how many jobs the action would change now.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub would_change: Option<JobCount>,
    /// How many jobs this call looked at.
    pub examined: u64,
    pub changed: Vec<BulkChangedJob>,
    pub skipped: Vec<BulkSkippedJob>,
    /// With `filter`, while jobs are left: pass it back as `cursor`.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub next_cursor: Option<String>,
}
}

/// What a job from a coordinator older than organizations belongs to.
fn default_organization() -> String {
    "default".to_string()
}

schema! {
/// Where a workload is in its life; `stopped` and `failed` are final.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadStatus {
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
}

/// What a container is to its workload.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ContainerRole {
    Main,
    Sidecar,
    Init,
}

/// A container's own state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ContainerStatus {
    Running,
    Terminated,
    Waiting,
}

/// One container of a workload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Container {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::container_id))]
    pub container_id: String,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::container_text))]
    #[serde(default)]
    pub name: String,
    pub role: ContainerRole,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::container_text))]
    #[serde(default)]
    pub image: String,
    pub status: ContainerStatus,
}

/// `POST /api/v1/workloads`: record a workload a runner hosts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateWorkload {
    /// The caller's id for it, unique across the coordinator: 1 to 128 of letters, digits and
    /// `. _ - :`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::workload_id))]
    pub id: String,
    /// The runner that hosts it.
    pub runner_id: Uuid,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::workload_reference))]
    #[serde(default)]
    pub thread_id: String,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::workload_reference))]
    #[serde(default)]
    pub agent_id: String,
    /// Its organization: the runner's for a runner of one, the caller's for a scoped token,
    /// `default` otherwise.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_organization_id))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    pub status: WorkloadStatus,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_workload_reason))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::containers))]
    #[serde(default, deserialize_with = "objects_only::list")]
    pub containers: Vec<Container>,
    /// Stored and returned as given.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::workload_reference))]
    #[serde(default)]
    pub ziti_identity_id: String,
}

/// `POST /api/v1/workloads/{id}/status`: a workload's status now, and its containers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UpdateWorkloadStatus {
    pub status: WorkloadStatus,
    /// The containers now; absent or null keeps those recorded.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_containers))]
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "objects_only::optional_list")]
    pub containers: Option<Vec<Container>>,
    /// Why it has this status; absent keeps the recorded reason if the status stays, and clears
    /// it if the status changes.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::optional_workload_reason))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
}

/// A workload as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Workload {
    pub id: String,
    pub runner_id: Uuid,
    pub thread_id: String,
    pub agent_id: String,
    pub organization_id: String,
    pub status: WorkloadStatus,
    /// Why it has its status (`runner_deleted` when its runner was deleted); empty for none.
    pub status_reason: String,
    pub containers: Vec<Container>,
    pub ziti_identity_id: String,
    /// Its runner is offline or gone and it has not finished: the status is only the last one
    /// reported.
    pub stale: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A page of workloads, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkloadList {
    pub items: Vec<Workload>,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub next_cursor: Option<String>,
}

/// One change of a workload's status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkloadStatusChange {
    pub status: WorkloadStatus,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// `GET /api/v1/workloads/{id}/history`: its status changes, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkloadHistory {
    pub items: Vec<WorkloadStatusChange>,
}
}
