//! The data a runner receives with its work: the lease and the task it covers.
//!
//! Both types keep the field names and JSON shape of the posemesh compute-node lease envelope, so a
//! runner written against that contract reads the same fields here. Only `task`, `task.id` and
//! `task.capability` are required when deserializing; every other field falls back to its default
//! (`None`, `false`, an empty list or JSON `null`), which keeps older and newer peers compatible.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;
use uuid::Uuid;

/// One lease on one task: what the runner may work on, until when, and with which credentials.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct LeaseEnvelope {
    /// Bearer token for calls the runner makes on the task's behalf, if the issuer hands one out.
    #[serde(default)]
    pub access_token: Option<String>,
    /// When `access_token` stops being accepted.
    #[serde(default)]
    pub access_token_expires_at: Option<DateTime<Utc>>,

    /// When the lease runs out unless a heartbeat extends it.
    #[serde(default)]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The coordinator asked for the task to stop; a runner should wind down instead of starting.
    #[serde(default)]
    pub cancel: bool,
    /// The task's state as the issuer last saw it.
    #[serde(default)]
    pub status: Option<String>,

    /// The data domain the task belongs to, for issuers that partition storage by domain.
    #[serde(default)]
    pub domain_id: Option<Uuid>,
    /// Base address of the storage server for `domain_id`.
    #[serde(default)]
    pub domain_server_url: Option<Url>,

    /// The task this lease covers.
    pub task: TaskSpec,
}

impl LeaseEnvelope {
    /// A lease on `task` with every other field at its default (no token, no expiry, not
    /// cancelled, no domain): what a lease deserializes to when only its task is given.
    pub fn new(task: TaskSpec) -> Self {
        LeaseEnvelope {
            access_token: None,
            access_token_expires_at: None,
            lease_expires_at: None,
            cancel: false,
            status: None,
            domain_id: None,
            domain_server_url: None,
            task,
        }
    }
}

/// What to do: the capability that runs the task, its inputs, where outputs go, and bookkeeping.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct TaskSpec {
    /// The task's identity; in muster, the job id.
    pub id: Uuid,
    /// The job this task is one step of, when the issuer groups tasks into jobs.
    #[serde(default)]
    pub job_id: Option<Uuid>,

    /// The capability that must run the task; a runner takes it when its
    /// [`Runner::capability`](crate::Runner::capability) is equal to this string.
    pub capability: String,
    /// Extra constraints on which runner may take the task, as opaque JSON.
    #[serde(default)]
    pub capability_filters: Value,

    /// Ids of the input artifacts, in the order the task expects them; fetch them through
    /// [`InputSource`](crate::InputSource).
    #[serde(default)]
    pub inputs_cids: Vec<String>,
    /// Prefix the artifact sink puts before every output path.
    #[serde(default)]
    pub outputs_prefix: Option<String>,

    /// A human-readable name for the task.
    #[serde(default)]
    pub label: Option<String>,
    /// Which stage of a multi-stage job this task is.
    #[serde(default)]
    pub stage: Option<String>,
    /// Task parameters for the runner, as opaque JSON.
    #[serde(default)]
    pub meta: Value,

    /// Scheduling priority.
    #[serde(default)]
    pub priority: Option<i64>,
    /// How many attempts have been made, this one included when the issuer counts it so.
    #[serde(default)]
    pub attempts: Option<u64>,
    /// How many attempts the task may have in all.
    #[serde(default)]
    pub max_attempts: Option<u64>,
    /// How many tasks this one still waits on.
    #[serde(default)]
    pub deps_remaining: Option<u64>,

    /// The task's state as the issuer last saw it.
    #[serde(default)]
    pub status: Option<String>,
    /// Issuer-defined execution mode.
    #[serde(default)]
    pub mode: Option<String>,
    /// Restricts the task to runners of one organization (tenant).
    #[serde(default)]
    pub organization_filter: Option<String>,

    /// Unit in which the task's cost is counted, for issuers that bill.
    #[serde(default)]
    pub billing_units: Option<String>,
    /// Cost estimated before the task ran, as a decimal string so no precision is lost.
    #[serde(default)]
    pub estimated_credit_cost: Option<String>,
    /// Amount actually charged, as a decimal string.
    #[serde(default)]
    pub debited_amount: Option<String>,
    /// When the charge was made.
    #[serde(default)]
    pub debited_at: Option<DateTime<Utc>>,
    /// When the lease on this task runs out, as the task record carries it.
    #[serde(default)]
    pub lease_expires_at: Option<DateTime<Utc>>,
}

impl TaskSpec {
    /// The task `id` for `capability` with every other field at its default (no inputs, `meta`
    /// JSON `null`, nothing counted): what a task deserializes to when only those two are given.
    pub fn new(id: Uuid, capability: impl Into<String>) -> Self {
        TaskSpec {
            id,
            job_id: None,
            capability: capability.into(),
            capability_filters: Value::Null,
            inputs_cids: Vec::new(),
            outputs_prefix: None,
            label: None,
            stage: None,
            meta: Value::Null,
            priority: None,
            attempts: None,
            max_attempts: None,
            deps_remaining: None,
            status: None,
            mode: None,
            organization_filter: None,
            billing_units: None,
            estimated_credit_cost: None,
            debited_amount: None,
            debited_at: None,
            lease_expires_at: None,
        }
    }
}
