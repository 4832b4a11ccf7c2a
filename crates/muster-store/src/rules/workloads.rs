//! The workload registry: what both backends do the same way (encoding the status and the
//! containers, the selection of a list, applying a report through the core's rule).

use muster_core::organization::OrganizationId;
use muster_core::{
    Container, ContainerRole, ContainerStatus, RunnerId, Timestamp, WorkloadOperation,
    WorkloadRecord, WorkloadStatus, WorkloadStatusChange, workload_transition,
};
use serde_json::{Value, json};

use crate::{StoreError, WorkloadFilter, WorkloadReport};

pub(crate) fn workload_not_found(id: &str) -> StoreError {
    StoreError::NotFound(format!("workload {id}"))
}

/// The stored code of a status: its place in [`WorkloadStatus::ALL`].
pub(crate) fn status_code(status: WorkloadStatus) -> i16 {
    WorkloadStatus::ALL
        .iter()
        .position(|known| *known == status)
        .and_then(|position| i16::try_from(position).ok())
        .unwrap_or(i16::MAX)
}

pub(crate) fn status_from_code(code: i64) -> Result<WorkloadStatus, StoreError> {
    usize::try_from(code)
        .ok()
        .and_then(|position| WorkloadStatus::ALL.get(position).copied())
        .ok_or_else(|| StoreError::Internal(format!("unknown workload status code {code}")))
}

pub(crate) fn containers_to_json(containers: &[Container]) -> String {
    Value::Array(
        containers
            .iter()
            .map(|container| {
                json!({
                    "container_id": container.container_id,
                    "name": container.name,
                    "role": container.role.as_str(),
                    "image": container.image,
                    "status": container.status.as_str(),
                })
            })
            .collect(),
    )
    .to_string()
}

pub(crate) fn containers_from_json(text: &str) -> Result<Vec<Container>, StoreError> {
    let corrupt = |what: &str| StoreError::Internal(format!("stored workload containers: {what}"));
    let value: Value = serde_json::from_str(text).map_err(|error| corrupt(&error.to_string()))?;
    let items = value.as_array().ok_or_else(|| corrupt("not a list"))?;
    items
        .iter()
        .map(|item| {
            let field = |name: &str| {
                item.get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| corrupt(&format!("no {name}")))
            };
            Ok(Container {
                container_id: field("container_id")?.to_string(),
                name: field("name")?.to_string(),
                role: ContainerRole::parse(field("role")?).ok_or_else(|| corrupt("bad role"))?,
                image: field("image")?.to_string(),
                status: ContainerStatus::parse(field("status")?)
                    .ok_or_else(|| corrupt("bad status"))?,
            })
        })
        .collect()
}

/// A workload's row, in its stored form.
pub(crate) struct WorkloadColumns {
    pub id: String,
    pub runner_id: Option<RunnerId>,
    pub thread_id: String,
    pub agent_id: String,
    pub organization_id: String,
    pub status: i64,
    pub status_reason: String,
    pub containers: String,
    pub ziti_identity_id: String,
    pub created_at: i64,
    pub updated_at: i64,
}

pub(crate) fn workload_record(columns: WorkloadColumns) -> Result<WorkloadRecord, StoreError> {
    let organization = OrganizationId::parse(&columns.organization_id)
        .map_err(|error| StoreError::Internal(format!("stored workload organization: {error}")))?;
    Ok(WorkloadRecord {
        runner_id: columns.runner_id.ok_or_else(|| {
            StoreError::Internal(format!("workload {} has no runner", columns.id))
        })?,
        id: columns.id,
        thread_id: columns.thread_id,
        agent_id: columns.agent_id,
        organization,
        status: status_from_code(columns.status)?,
        status_reason: columns.status_reason,
        containers: containers_from_json(&columns.containers)?,
        ziti_identity_id: columns.ziti_identity_id,
        created_at: Timestamp(columns.created_at),
        updated_at: Timestamp(columns.updated_at),
    })
}

/// One value of a list's selection, as the backend binds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SelectionValue {
    Text(String),
    Integer(i64),
    Bytes(Vec<u8>),
}

/// The condition of the workloads `filter` matches below row `before`, with its placeholders
/// written by `placeholder` (numbered from 1) and their values in order.
pub(crate) fn selection(
    filter: &WorkloadFilter,
    before: i64,
    placeholder: impl Fn(usize) -> String,
) -> (String, Vec<SelectionValue>) {
    let mut values = vec![SelectionValue::Integer(before)];
    let mut condition = format!("seq < {}", placeholder(1));
    let mut add = |column: &str, value: SelectionValue| {
        values.push(value);
        condition.push_str(&format!(" AND {column} = {}", placeholder(values.len())));
    };
    if let Some(organization) = &filter.organization_id {
        add(
            "organization_id",
            SelectionValue::Text(organization.clone()),
        );
    }
    if let Some(thread) = &filter.thread_id {
        add("thread_id", SelectionValue::Text(thread.clone()));
    }
    if let Some(runner) = filter.runner_id {
        add(
            "runner_id",
            SelectionValue::Bytes(runner.as_bytes().to_vec()),
        );
    }
    if !filter.statuses.is_empty() {
        let mut codes: Vec<i16> = filter.statuses.iter().copied().map(status_code).collect();
        codes.sort_unstable();
        codes.dedup();
        // Codes are small integers written by this crate, never caller text.
        let listed: Vec<String> = codes.iter().map(i16::to_string).collect();
        condition.push_str(&format!(" AND status IN ({})", listed.join(", ")));
    }
    (condition, values)
}

/// Apply `report` to `record` through the core's rule; answers the history entry to add when
/// the status changed. A refusal changes nothing.
pub(crate) fn apply_report(
    record: &mut WorkloadRecord,
    report: &WorkloadReport,
) -> Result<Option<WorkloadStatusChange>, StoreError> {
    let change = workload_transition(record.status, WorkloadOperation::Report(report.status))
        .map_err(|refusal| StoreError::WorkloadRefused {
            workload: record.id.clone(),
            refusal,
        })?;
    record.status = change.status;
    if change.replace_details {
        if let Some(containers) = &report.containers {
            record.containers = containers.clone();
        }
        if let Some(reason) = &report.reason {
            record.status_reason = reason.clone();
        } else if change.status_changed {
            record.status_reason.clear();
        }
    }
    record.updated_at = report.at;
    Ok(change.status_changed.then(|| WorkloadStatusChange {
        status: record.status,
        reason: record.status_reason.clone(),
        at: report.at,
    }))
}

/// What the deletion of its runner at `now` does to `record`: the history entry to add when it
/// failed it.
pub(crate) fn apply_runner_deleted(
    record: &mut WorkloadRecord,
    now: Timestamp,
) -> Option<WorkloadStatusChange> {
    let change = workload_transition(record.status, WorkloadOperation::RunnerDeleted).ok()?;
    if !change.status_changed {
        return None;
    }
    record.status = change.status;
    record.status_reason = muster_core::workload::RUNNER_DELETED_REASON.to_string();
    record.updated_at = now;
    Some(WorkloadStatusChange {
        status: record.status,
        reason: record.status_reason.clone(),
        at: now,
    })
}
