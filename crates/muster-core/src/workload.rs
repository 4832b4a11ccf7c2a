//! Workloads: the long-lived things a runner hosts (containers, an agent, a worker), recorded
//! with their status and containers so the rest of a system can find them (seed 002).
//!
//! Unlike a job, a workload is not scheduled by the coordinator: whoever starts it (the runner,
//! or an orchestrator acting for it) records it and reports its status as it changes. What the
//! coordinator owns is the rule of which status may follow which, [`workload_transition`], and
//! what happens to the workloads of a runner that is deleted. Stores load a workload's status,
//! ask the rule, and write back what it says.

use std::fmt;

use crate::job::{JobSpecError, spec_error};
use crate::organization::OrganizationId;
use crate::text::{TextRule, check_field};
use crate::{ErrorCode, RunnerId, Timestamp};

/// Where a workload is in its life. `Stopped` and `Failed` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadStatus {
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
}

impl WorkloadStatus {
    pub const ALL: [WorkloadStatus; 5] = [
        WorkloadStatus::Starting,
        WorkloadStatus::Running,
        WorkloadStatus::Stopping,
        WorkloadStatus::Stopped,
        WorkloadStatus::Failed,
    ];

    /// The name in storage and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadStatus::Starting => "starting",
            WorkloadStatus::Running => "running",
            WorkloadStatus::Stopping => "stopping",
            WorkloadStatus::Stopped => "stopped",
            WorkloadStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<WorkloadStatus> {
        WorkloadStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }

    /// Whether nothing follows this status.
    pub fn is_final(self) -> bool {
        matches!(self, WorkloadStatus::Stopped | WorkloadStatus::Failed)
    }

    /// How far along its life a workload in this status is: a status may only be followed by
    /// one further along (or by itself).
    fn stage(self) -> u8 {
        match self {
            WorkloadStatus::Starting => 0,
            WorkloadStatus::Running => 1,
            WorkloadStatus::Stopping => 2,
            WorkloadStatus::Stopped | WorkloadStatus::Failed => 3,
        }
    }
}

impl fmt::Display for WorkloadStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a container is to its workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerRole {
    Main,
    Sidecar,
    Init,
}

impl ContainerRole {
    pub const ALL: [ContainerRole; 3] = [
        ContainerRole::Main,
        ContainerRole::Sidecar,
        ContainerRole::Init,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ContainerRole::Main => "main",
            ContainerRole::Sidecar => "sidecar",
            ContainerRole::Init => "init",
        }
    }

    pub fn parse(text: &str) -> Option<ContainerRole> {
        ContainerRole::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
    }
}

/// A container's own state, as its runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerStatus {
    Running,
    Terminated,
    Waiting,
}

impl ContainerStatus {
    pub const ALL: [ContainerStatus; 3] = [
        ContainerStatus::Running,
        ContainerStatus::Terminated,
        ContainerStatus::Waiting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Running => "running",
            ContainerStatus::Terminated => "terminated",
            ContainerStatus::Waiting => "waiting",
        }
    }

    pub fn parse(text: &str) -> Option<ContainerStatus> {
        ContainerStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// One container of a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub container_id: String,
    pub name: String,
    pub role: ContainerRole,
    pub image: String,
    pub status: ContainerStatus,
}

/// The longest workload id, in characters.
pub const MAX_WORKLOAD_ID_LEN: usize = 128;
/// The longest thread, agent, or ziti identity id of a workload, in characters.
pub const MAX_WORKLOAD_REFERENCE_LEN: usize = 256;
/// The most containers one workload records.
pub const MAX_WORKLOAD_CONTAINERS: usize = 64;
/// The longest container id, name or image, in characters.
pub const MAX_CONTAINER_FIELD_LEN: usize = 512;
/// The longest reason given with a status, in characters.
pub const MAX_WORKLOAD_REASON_LEN: usize = 1024;

/// The reason a workload of a deleted runner is failed with.
pub const RUNNER_DELETED_REASON: &str = "runner_deleted";

/// A workload id as a caller chose it: 1 to 128 of `A-Z a-z 0-9 . _ - :`, so it can be put in a
/// URL path, a log line or a shell command as it is.
pub fn check_workload_id(field: &str, id: &str) -> Result<(), JobSpecError> {
    check_field(field, id, TextRule::key(MAX_WORKLOAD_ID_LEN))?;
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')))
    {
        return Err(spec_error(
            field,
            format!(
                "may hold only letters, digits and . _ - : (found {:?})",
                bad.escape_debug().to_string()
            ),
        ));
    }
    Ok(())
}

/// A thread, agent or ziti identity id: up to 256 characters, empty when there is none.
pub fn check_workload_reference(field: &str, text: &str) -> Result<(), JobSpecError> {
    check_field(field, text, TextRule::optional(MAX_WORKLOAD_REFERENCE_LEN))
}

/// The reason given with a status: up to 1024 characters, none when empty.
pub fn check_workload_reason(field: &str, text: &str) -> Result<(), JobSpecError> {
    check_field(field, text, TextRule::optional(MAX_WORKLOAD_REASON_LEN))
}

/// A workload's containers, as reported: at most 64, each id, name and image within 512
/// characters, and no container id twice (the id is what a container is known by).
pub fn check_containers(field: &str, containers: &[Container]) -> Result<(), JobSpecError> {
    if containers.len() > MAX_WORKLOAD_CONTAINERS {
        return Err(spec_error(
            field,
            format!("at most {MAX_WORKLOAD_CONTAINERS} containers"),
        ));
    }
    let rule = TextRule::optional(MAX_CONTAINER_FIELD_LEN);
    let mut seen = std::collections::HashSet::new();
    for (index, container) in containers.iter().enumerate() {
        check_field(
            &format!("{field}[{index}].container_id"),
            &container.container_id,
            TextRule::key(MAX_CONTAINER_FIELD_LEN),
        )?;
        check_field(&format!("{field}[{index}].name"), &container.name, rule)?;
        check_field(&format!("{field}[{index}].image"), &container.image, rule)?;
        if !seen.insert(container.container_id.as_str()) {
            return Err(spec_error(
                format!("{field}[{index}].container_id"),
                "names a container already listed",
            ));
        }
    }
    Ok(())
}

/// A workload as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadRecord {
    pub id: String,
    pub runner_id: RunnerId,
    pub thread_id: String,
    pub agent_id: String,
    pub organization: OrganizationId,
    pub status: WorkloadStatus,
    /// Why it has its status (a runner's message, or `runner_deleted`); empty for none.
    pub status_reason: String,
    pub containers: Vec<Container>,
    pub ziti_identity_id: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One change of a workload's status, as its history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadStatusChange {
    pub status: WorkloadStatus,
    pub reason: String,
    pub at: Timestamp,
}

/// Something that happens to a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadOperation {
    /// Its runner (or an orchestrator) reports it in `status`.
    Report(WorkloadStatus),
    /// Its runner was deleted.
    RunnerDeleted,
}

/// What a transition decided; the caller writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadChange {
    pub status: WorkloadStatus,
    /// Whether the status changed, so the history gets an entry.
    pub status_changed: bool,
    /// Whether the report's containers (and reason) replace the recorded ones.
    pub replace_details: bool,
}

/// Why a report was refused; nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadRefusal {
    #[error(
        "the workload is {current}, which is final: a {current} workload does not become {wanted} (record a new workload instead)"
    )]
    Final {
        current: WorkloadStatus,
        wanted: WorkloadStatus,
    },
    #[error("the workload is {current}: it cannot go back to {wanted}")]
    Backwards {
        current: WorkloadStatus,
        wanted: WorkloadStatus,
    },
}

impl WorkloadRefusal {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidState
    }
}

/// The status a workload in `current` moves to under `operation`.
///
/// The rules, and why:
/// - A report of the status it has is always taken, final or not: it refreshes the containers
///   (a runner reports what it sees, again and again) and changes no history.
/// - A report may move a workload forward only: starting → running → stopping → stopped, and
///   failed from any status that is not final. A workload that was stopping does not start
///   running again, and a stopped or failed one stays so: a restarted workload is a new record,
///   so the history of one never hides that it ended.
/// - Starting may skip ahead (straight to stopped, say): a runner reports what it sees, and may
///   not have seen every step.
/// - Its runner's deletion fails a workload that has not ended (nobody is left to report it), and
///   leaves an ended one as it is.
pub fn workload_transition(
    current: WorkloadStatus,
    operation: WorkloadOperation,
) -> Result<WorkloadChange, WorkloadRefusal> {
    match operation {
        WorkloadOperation::Report(wanted) if wanted == current => Ok(WorkloadChange {
            status: current,
            status_changed: false,
            replace_details: true,
        }),
        WorkloadOperation::Report(wanted) if current.is_final() => {
            Err(WorkloadRefusal::Final { current, wanted })
        }
        WorkloadOperation::Report(wanted) if wanted.stage() < current.stage() => {
            Err(WorkloadRefusal::Backwards { current, wanted })
        }
        WorkloadOperation::Report(wanted) => Ok(WorkloadChange {
            status: wanted,
            status_changed: true,
            replace_details: true,
        }),
        WorkloadOperation::RunnerDeleted if current.is_final() => Ok(WorkloadChange {
            status: current,
            status_changed: false,
            replace_details: false,
        }),
        WorkloadOperation::RunnerDeleted => Ok(WorkloadChange {
            status: WorkloadStatus::Failed,
            status_changed: true,
            replace_details: false,
        }),
    }
}
