use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::text::{TextRule, check_field, check_key, check_kind};
use crate::{ArtifactId, Capabilities, JobId, JobLifecycle, RunnerId, Timestamp};

pub const DEFAULT_PRIORITY: i32 = 100;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_TIMEOUT_S: u32 = 3600;
pub const DEFAULT_LEASE_TTL_S: u32 = 30;
pub const DEFAULT_BACKOFF_BASE_S: u32 = 1;

/// Longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;
pub const MAX_ATTEMPTS_LIMIT: u32 = 1000;
pub const MAX_TIMEOUT_S: u32 = 30 * 24 * 3600;
pub const MAX_LEASE_TTL_S: u32 = 3600;
pub const MAX_BACKOFF_BASE_S: u32 = 3600;
/// Artifacts one job may read; each is checked to exist when the job is submitted.
pub const MAX_JOB_INPUTS: usize = 256;
/// Named artifacts one job may record; the whole map is rewritten with each recording.
pub const MAX_JOB_OUTPUTS: usize = 256;
pub const MAX_OUTPUT_NAME_LEN: usize = 200;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Pending,
    Claimed,
    Running,
    Cancelling,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Pending,
        JobState::Claimed,
        JobState::Running,
        JobState::Cancelling,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Claimed => "claimed",
            JobState::Running => "running",
            JobState::Cancelling => "cancelling",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// A small stable number for storage; never reorder.
    pub fn code(self) -> i64 {
        match self {
            JobState::Pending => 0,
            JobState::Claimed => 1,
            JobState::Running => 2,
            JobState::Cancelling => 3,
            JobState::Completed => 4,
            JobState::Failed => 5,
            JobState::Cancelled => 6,
        }
    }

    pub fn from_code(code: i64) -> Option<JobState> {
        JobState::ALL.into_iter().find(|state| state.code() == code)
    }

    /// Held by a runner under a lease.
    pub fn is_leased(self) -> bool {
        matches!(
            self,
            JobState::Claimed | JobState::Running | JobState::Cancelling
        )
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = ();
    fn from_str(text: &str) -> Result<JobState, ()> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or(())
    }
}

/// Why an attempt or a job failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    RunnerError,
    LeaseExpired,
    TimedOut,
    Cancelled,
}

impl FailureReason {
    pub const ALL: [FailureReason; 4] = [
        FailureReason::RunnerError,
        FailureReason::LeaseExpired,
        FailureReason::TimedOut,
        FailureReason::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::RunnerError => "runner_error",
            FailureReason::LeaseExpired => "lease_expired",
            FailureReason::TimedOut => "timed_out",
            FailureReason::Cancelled => "cancelled",
        }
    }
}

impl FromStr for FailureReason {
    type Err = ();
    fn from_str(text: &str) -> Result<FailureReason, ()> {
        FailureReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == text)
            .ok_or(())
    }
}

/// The error recorded on a failed attempt or job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobError {
    pub reason: FailureReason,
    pub message: String,
}

/// The last progress a runner reported.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    pub percent: f64,
    pub message: Option<String>,
}

/// The per-job knobs of the lease and retry rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobPolicy {
    pub max_attempts: u32,
    pub timeout_s: u32,
    pub lease_ttl_s: u32,
    pub backoff_base_s: u32,
}

/// What a submitter asks for, with defaults applied; [`JobSpec::validate`] says whether a store
/// may accept it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub kind: String,
    pub payload: Value,
    pub priority: i32,
    pub requirements: Capabilities,
    pub policy: JobPolicy,
    pub run_after: Option<Timestamp>,
    pub idempotency_key: Option<String>,
    /// Artifacts the job reads, in the submitter's order (repeats allowed).
    pub inputs: Vec<ArtifactId>,
}

/// A rejected [`JobSpec`]; the message names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct JobSpecError {
    pub field: String,
    pub problem: String,
}

pub(crate) fn spec_error(field: impl Into<String>, problem: impl Into<String>) -> JobSpecError {
    JobSpecError {
        field: field.into(),
        problem: problem.into(),
    }
}

fn check_range(field: &'static str, value: u32, min: u32, max: u32) -> Result<(), JobSpecError> {
    if value < min || value > max {
        return Err(spec_error(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(())
}

impl JobSpec {
    /// A spec of `kind` with every other field at its default.
    pub fn with_defaults(kind: impl Into<String>) -> JobSpec {
        JobSpec {
            kind: kind.into(),
            payload: Value::Object(Default::default()),
            priority: DEFAULT_PRIORITY,
            requirements: Capabilities::default(),
            policy: JobPolicy {
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                timeout_s: DEFAULT_TIMEOUT_S,
                lease_ttl_s: DEFAULT_LEASE_TTL_S,
                backoff_base_s: DEFAULT_BACKOFF_BASE_S,
            },
            run_after: None,
            idempotency_key: None,
            inputs: Vec::new(),
        }
    }

    pub fn validate(&self) -> Result<(), JobSpecError> {
        check_kind("kind", &self.kind)?;
        // The contract's job shape has an object here, and runners read fields out of it.
        if !self.payload.is_object() {
            return Err(spec_error(
                "payload",
                format!(
                    "must be a JSON object, got {}",
                    json_type_name(&self.payload)
                ),
            ));
        }
        check_range(
            "max_attempts",
            self.policy.max_attempts,
            1,
            MAX_ATTEMPTS_LIMIT,
        )?;
        check_range("timeout_s", self.policy.timeout_s, 1, MAX_TIMEOUT_S)?;
        check_range("lease_ttl_s", self.policy.lease_ttl_s, 1, MAX_LEASE_TTL_S)?;
        check_range(
            "backoff_base_s",
            self.policy.backoff_base_s,
            0,
            MAX_BACKOFF_BASE_S,
        )?;
        if let Some(key) = &self.idempotency_key {
            check_field(
                "idempotency_key",
                key,
                TextRule::key(MAX_IDEMPOTENCY_KEY_LEN),
            )?;
        }
        self.requirements.validate("requirements")?;
        if self.inputs.len() > MAX_JOB_INPUTS {
            return Err(spec_error(
                "inputs",
                format!(
                    "at most {MAX_JOB_INPUTS} artifacts, got {}",
                    self.inputs.len()
                ),
            ));
        }
        Ok(())
    }
}

/// Check outputs a runner records: names are 1 to 200 characters without control characters, and
/// at most [`MAX_JOB_OUTPUTS`] in one call (the job's total is checked where it is stored).
pub fn validate_outputs(outputs: &BTreeMap<String, ArtifactId>) -> Result<(), JobSpecError> {
    if outputs.len() > MAX_JOB_OUTPUTS {
        return Err(spec_error(
            "outputs",
            format!("at most {MAX_JOB_OUTPUTS} per job, got {}", outputs.len()),
        ));
    }
    for name in outputs.keys() {
        check_key("outputs", name, TextRule::key(MAX_OUTPUT_NAME_LEN))?;
    }
    Ok(())
}

/// The JSON type of `value`, for messages.
fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A validated spec with the identity the coordinator gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub id: JobId,
    pub created_at: Timestamp,
    pub spec: JobSpec,
    pub organization: JobOrganization,
}

/// The organization a job belongs to, as its claims need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOrganization {
    pub id: String,
    /// Whether its organization lets cluster-scoped runners take its jobs (as it was when the
    /// job was submitted; organizations cannot change it).
    pub shared_runners: bool,
}

impl Default for JobOrganization {
    /// The `default` organization, which allows shared runners.
    fn default() -> JobOrganization {
        JobOrganization {
            id: crate::organization::DEFAULT_ORGANIZATION.to_string(),
            shared_runners: true,
        }
    }
}

impl NewJob {
    /// The lifecycle a job starts with.
    pub fn initial_lifecycle(&self) -> JobLifecycle {
        JobLifecycle::new_pending(
            self.spec.policy,
            self.spec.run_after.unwrap_or(self.created_at),
        )
    }
}

/// A job as a store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: JobId,
    pub kind: String,
    pub payload: Value,
    pub priority: i32,
    pub requirements: Capabilities,
    pub idempotency_key: Option<String>,
    pub created_at: Timestamp,
    pub progress: Progress,
    pub result: Option<Value>,
    /// Artifacts the job reads, as submitted.
    pub inputs: Vec<ArtifactId>,
    /// Artifacts the current (or last) attempt recorded, by name; a new claim starts empty.
    pub outputs: BTreeMap<String, ArtifactId>,
    /// The result's signature, when the completion sent one and it verified.
    pub result_signature: Option<crate::identity::VerifiedResultSignature>,
    /// The organization the job belongs to, and whether shared runners may take it.
    pub organization: JobOrganization,
    pub lifecycle: JobLifecycle,
}

impl JobRecord {
    pub fn state(&self) -> JobState {
        self.lifecycle.state
    }

    pub fn runner_id(&self) -> Option<RunnerId> {
        self.lifecycle.runner_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_codes_and_names_round_trip() {
        for state in JobState::ALL {
            assert_eq!(JobState::from_code(state.code()), Some(state));
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
        assert_eq!(JobState::from_code(99), None);
        assert!("done".parse::<JobState>().is_err());
    }

    /// A change that makes a spec invalid, and the field the error must name.
    type BreakingChange = (Box<dyn Fn(&mut JobSpec)>, &'static str);

    #[test]
    fn validation_names_the_field() {
        let cases: Vec<BreakingChange> = vec![
            (Box::new(|spec| spec.kind = String::new()), "kind"),
            (Box::new(|spec| spec.kind = "x".repeat(201)), "kind"),
            (
                Box::new(|spec| spec.policy.max_attempts = 0),
                "max_attempts",
            ),
            (
                Box::new(|spec| spec.policy.max_attempts = 1001),
                "max_attempts",
            ),
            (Box::new(|spec| spec.policy.timeout_s = 0), "timeout_s"),
            (Box::new(|spec| spec.policy.lease_ttl_s = 0), "lease_ttl_s"),
            (
                Box::new(|spec| spec.policy.lease_ttl_s = 3601),
                "lease_ttl_s",
            ),
            (
                Box::new(|spec| spec.policy.backoff_base_s = 3601),
                "backoff_base_s",
            ),
            (
                Box::new(|spec| spec.idempotency_key = Some(String::new())),
                "idempotency_key",
            ),
            (
                Box::new(|spec| spec.idempotency_key = Some("key\u{0}".into())),
                "idempotency_key",
            ),
            (Box::new(|spec| spec.kind = "ex\u{1f}ec".into()), "kind"),
            (Box::new(|spec| spec.payload = Value::from(5)), "payload"),
            (Box::new(|spec| spec.payload = Value::Null), "payload"),
            (
                Box::new(|spec| spec.payload = serde_json::json!(["a"])),
                "payload",
            ),
            (
                Box::new(|spec| {
                    spec.requirements.labels.insert(String::new(), "x".into());
                }),
                "requirements.labels",
            ),
            (
                Box::new(|spec| {
                    spec.requirements.resources.insert("vram_gb".into(), -1.0);
                }),
                "requirements.resources.vram_gb",
            ),
            (
                Box::new(|spec| {
                    spec.inputs = vec![ArtifactId::from_digest([7; 32]); MAX_JOB_INPUTS + 1];
                }),
                "inputs",
            ),
        ];
        for (mutate, field) in cases {
            let mut spec = JobSpec::with_defaults("exec");
            mutate(&mut spec);
            let error = spec.validate().expect_err("spec must be rejected");
            assert_eq!(error.field, field, "{error}");
        }
        assert_eq!(JobSpec::with_defaults("exec").validate(), Ok(()));
    }

    #[test]
    fn output_names_are_checked() {
        let id = ArtifactId::from_digest([1; 32]);
        let one = |name: &str| BTreeMap::from([(name.to_string(), id)]);
        assert_eq!(validate_outputs(&one("model.bin")), Ok(()));
        assert_eq!(validate_outputs(&BTreeMap::new()), Ok(()));
        for bad in [String::new(), "x".repeat(201), "a\nb".to_string()] {
            let error = validate_outputs(&one(&bad)).expect_err("bad name");
            assert!(error.field.starts_with("outputs"), "{error}");
        }
        let many: BTreeMap<String, ArtifactId> = (0..=MAX_JOB_OUTPUTS)
            .map(|index| (format!("o{index}"), id))
            .collect();
        assert_eq!(
            validate_outputs(&many).expect_err("too many").field,
            "outputs"
        );
    }
}
