//! Conversions between the domain types of `muster-core` and the wire types of `muster-api`.
//! This module is the only place where the two meet.

use std::collections::BTreeMap;

use muster_api as wire;
use muster_core::{
    ArtifactId, Capabilities, FailureReason, JobRecord, JobState, Lease, LogEntry, LogLevel,
    PendingReason, RunnerStatus, Timestamp,
};
use muster_service::jobs::{JobSubmission, JobView};
use muster_service::runners::RunnerView;
use time::OffsetDateTime;

use crate::ApiError;

pub(crate) fn time_to_wire(at: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.as_millis()) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(crate) fn time_from_wire(at: OffsetDateTime) -> Timestamp {
    Timestamp((at.unix_timestamp_nanos() / 1_000_000) as i64)
}

pub(crate) fn state_to_wire(state: JobState) -> wire::JobState {
    match state {
        JobState::Pending => wire::JobState::Pending,
        JobState::Claimed => wire::JobState::Claimed,
        JobState::Running => wire::JobState::Running,
        JobState::Cancelling => wire::JobState::Cancelling,
        JobState::Completed => wire::JobState::Completed,
        JobState::Failed => wire::JobState::Failed,
        JobState::Cancelled => wire::JobState::Cancelled,
    }
}

pub(crate) fn state_from_wire(state: wire::JobState) -> JobState {
    match state {
        wire::JobState::Pending => JobState::Pending,
        wire::JobState::Claimed => JobState::Claimed,
        wire::JobState::Running => JobState::Running,
        wire::JobState::Cancelling => JobState::Cancelling,
        wire::JobState::Completed => JobState::Completed,
        wire::JobState::Failed => JobState::Failed,
        wire::JobState::Cancelled => JobState::Cancelled,
    }
}

pub(crate) fn reason_to_wire(reason: FailureReason) -> wire::FailureReason {
    match reason {
        FailureReason::RunnerError => wire::FailureReason::RunnerError,
        FailureReason::LeaseExpired => wire::FailureReason::LeaseExpired,
        FailureReason::TimedOut => wire::FailureReason::TimedOut,
        FailureReason::Cancelled => wire::FailureReason::Cancelled,
    }
}

pub(crate) fn reason_from_wire(reason: wire::FailureReason) -> FailureReason {
    match reason {
        wire::FailureReason::RunnerError => FailureReason::RunnerError,
        wire::FailureReason::LeaseExpired => FailureReason::LeaseExpired,
        wire::FailureReason::TimedOut => FailureReason::TimedOut,
        wire::FailureReason::Cancelled => FailureReason::Cancelled,
    }
}

pub(crate) fn level_to_wire(level: LogLevel) -> wire::LogLevel {
    match level {
        LogLevel::Trace => wire::LogLevel::Trace,
        LogLevel::Debug => wire::LogLevel::Debug,
        LogLevel::Info => wire::LogLevel::Info,
        LogLevel::Warn => wire::LogLevel::Warn,
        LogLevel::Error => wire::LogLevel::Error,
    }
}

pub(crate) fn level_from_wire(level: wire::LogLevel) -> LogLevel {
    match level {
        wire::LogLevel::Trace => LogLevel::Trace,
        wire::LogLevel::Debug => LogLevel::Debug,
        wire::LogLevel::Info => LogLevel::Info,
        wire::LogLevel::Warn => LogLevel::Warn,
        wire::LogLevel::Error => LogLevel::Error,
    }
}

fn pending_reason_to_wire(reason: PendingReason) -> wire::PendingReason {
    match reason {
        PendingReason::Scheduled => wire::PendingReason::Scheduled,
        PendingReason::NoRunnerForKind => wire::PendingReason::NoRunnerForKind,
        PendingReason::RequirementsUnmet => wire::PendingReason::RequirementsUnmet,
    }
}

pub(crate) fn capabilities_to_wire(capabilities: &Capabilities) -> wire::Requirements {
    wire::Requirements {
        labels: capabilities.labels.clone(),
        tags: capabilities.tags.clone(),
        resources: capabilities.resources.clone(),
    }
}

pub(crate) fn capabilities_from_wire(requirements: wire::Requirements) -> Capabilities {
    Capabilities {
        labels: requirements.labels,
        tags: requirements.tags,
        resources: requirements.resources,
    }
}

pub(crate) fn lease_to_wire(lease: Lease) -> wire::Lease {
    wire::Lease {
        epoch: lease.epoch,
        expires_at: time_to_wire(lease.expires_at),
        ttl_ms: lease.ttl_ms.max(0) as u64,
    }
}

pub(crate) fn job_to_wire(job: JobRecord, pending_reason: Option<PendingReason>) -> wire::Job {
    let lifecycle = job.lifecycle.into_parts();
    wire::Job {
        organization_id: job.organization.id,
        id: job.id.0,
        kind: job.kind,
        state: state_to_wire(lifecycle.state),
        payload: job.payload,
        priority: job.priority,
        requirements: capabilities_to_wire(&job.requirements),
        inputs: job.inputs.iter().map(ArtifactId::to_string).collect(),
        attempt: lifecycle.attempt,
        max_attempts: lifecycle.policy.max_attempts,
        timeout_s: lifecycle.policy.timeout_s,
        lease_ttl_s: lifecycle.policy.lease_ttl_s,
        backoff_base_s: lifecycle.policy.backoff_base_s,
        run_after: time_to_wire(lifecycle.run_after),
        idempotency_key: job.idempotency_key,
        progress: wire::Progress {
            percent: job.progress.percent,
            message: job.progress.message,
        },
        result: job.result,
        outputs: outputs_to_wire(job.outputs),
        error: lifecycle.error.map(job_error_to_wire),
        runner_id: lifecycle.runner_id.map(|id| id.0),
        created_at: time_to_wire(job.created_at),
        claimed_at: lifecycle.claimed_at.map(time_to_wire),
        started_at: lifecycle.started_at.map(time_to_wire),
        finished_at: lifecycle.finished_at.map(time_to_wire),
        lease_expires_at: if lifecycle.state.is_leased() {
            lifecycle.lease_expires_at.map(time_to_wire)
        } else {
            None
        },
        lease_epoch: lifecycle.lease_epoch,
        pending_reason: pending_reason.map(pending_reason_to_wire),
        result_signature: job
            .result_signature
            .map(|signature| wire::JobResultSignature {
                key_fingerprint: signature.key_fingerprint,
                sha256: signature.sha256,
                signature: signature.signature,
                signed_at: signature.signed_at,
                signer_runner_id: signature.signer_runner_id,
            }),
    }
}

fn job_error_to_wire(error: muster_core::JobError) -> wire::JobError {
    wire::JobError {
        reason: reason_to_wire(error.reason),
        message: error.message,
    }
}

pub(crate) fn attempt_to_wire(record: muster_core::AttemptRecord) -> wire::Attempt {
    use muster_core::AttemptOutcome;
    wire::Attempt {
        attempt: record.attempt,
        lease_epoch: record.lease_epoch,
        runner_id: record.runner_id.map(|id| id.0),
        claimed_at: record.claimed_at.map(time_to_wire),
        started_at: record.started_at.map(time_to_wire),
        ended_at: record.ended_at.map(time_to_wire),
        outcome: match record.outcome {
            AttemptOutcome::InProgress => wire::AttemptOutcome::InProgress,
            AttemptOutcome::Completed => wire::AttemptOutcome::Completed,
            AttemptOutcome::Failed => wire::AttemptOutcome::Failed,
            AttemptOutcome::Cancelled => wire::AttemptOutcome::Cancelled,
        },
        error: record.error.map(job_error_to_wire),
    }
}

/// A bakeoff envelope's `sig`, as the service checks it.
pub(crate) fn result_signature_from_wire(
    sig: wire::ResultSignature,
) -> muster_core::identity::ResultSignature {
    muster_core::identity::ResultSignature {
        sha256: sig.sha256,
        signature: sig.signature,
        runner_id: sig.runner_id,
        signed_at: sig.signed_at,
    }
}

pub(crate) fn view_to_wire(view: JobView) -> wire::Job {
    job_to_wire(view.job, view.pending_reason)
}

/// A submission from a request body; `prefix` goes before the field a parse error names (the
/// job's place in a batch).
pub(crate) fn job_submission_from_wire(
    request: wire::SubmitJob,
    prefix: &str,
) -> Result<JobSubmission, ApiError> {
    let inputs = request
        .inputs
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(index, id)| artifact_id_from_wire(id, &format!("{prefix}inputs[{index}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(JobSubmission {
        kind: request.kind,
        payload: request.payload,
        priority: request.priority,
        requirements: request.requirements.map(capabilities_from_wire),
        max_attempts: request.max_attempts,
        timeout_s: request.timeout_s,
        lease_ttl_s: request.lease_ttl_s,
        backoff_base_s: request.backoff_base_s,
        run_after: request.run_after.map(time_from_wire),
        idempotency_key: request.idempotency_key,
        inputs,
        organization_id: request.organization_id,
    })
}

/// An artifact id from a request body; `field` names where it was.
pub(crate) fn artifact_id_from_wire(text: &str, field: &str) -> Result<ArtifactId, ApiError> {
    text.parse()
        .map_err(|error| ApiError::invalid_input(format!("{field}: {error}")))
}

pub(crate) fn outputs_to_wire(outputs: BTreeMap<String, ArtifactId>) -> BTreeMap<String, String> {
    outputs
        .into_iter()
        .map(|(name, id)| (name, id.to_string()))
        .collect()
}

/// Outputs from a request body, each id well-formed (the coordinator checks the names).
pub(crate) fn outputs_from_wire(
    outputs: BTreeMap<String, String>,
) -> Result<BTreeMap<String, ArtifactId>, ApiError> {
    outputs
        .into_iter()
        .map(|(name, id)| {
            let id = artifact_id_from_wire(&id, &format!("outputs.{name}"))?;
            Ok((name, id))
        })
        .collect()
}

pub(crate) fn runner_to_wire(view: RunnerView) -> wire::Runner {
    let RunnerView { runner, status } = view;
    let capabilities_bound = runner.bound_capabilities.is_some() || runner.bound_kinds.is_some();
    let shown = match runner.bound_capabilities {
        Some(bound) if runner.offer.is_empty() => bound,
        _ => runner.offer,
    };
    wire::Runner {
        id: runner.id.0,
        name: runner.name,
        organization_id: runner.organization_id,
        status: match status {
            RunnerStatus::Online => wire::RunnerStatus::Online,
            RunnerStatus::Offline => wire::RunnerStatus::Offline,
            RunnerStatus::Draining => wire::RunnerStatus::Draining,
        },
        labels: runner.labels,
        // What it last declared; before its first claim, what it is bound to.
        tags: shown.tags,
        resources: shown.resources,
        kinds: runner.kinds,
        hostname: runner.hostname,
        version: runner.version,
        last_heartbeat_at: runner.last_heartbeat_at.map(time_to_wire),
        running_jobs: runner.running_jobs,
        created_at: time_to_wire(runner.created_at),
        enrollment: enrollment_to_wire(runner.enrollment),
        key_fingerprint: runner.key_fingerprint,
        public_key: runner.public_key,
        token_expires_at: runner.token_expires_at.map(time_to_wire),
        capabilities_bound,
    }
}

pub(crate) fn enrollment_to_wire(enrollment: muster_core::Enrollment) -> wire::RunnerEnrollment {
    match enrollment {
        muster_core::Enrollment::Enrolled => wire::RunnerEnrollment::Enrolled,
        muster_core::Enrollment::Pending => wire::RunnerEnrollment::Pending,
        muster_core::Enrollment::Rejected => wire::RunnerEnrollment::Rejected,
    }
}

pub(crate) fn log_entry_to_wire(entry: LogEntry) -> wire::LogEntry {
    wire::LogEntry {
        seq: entry.seq,
        ts: time_to_wire(entry.ts),
        level: level_to_wire(entry.level),
        message: entry.message,
        metadata: entry.metadata,
    }
}

pub(crate) fn log_entry_from_wire(entry: wire::NewLogEntry) -> muster_core::NewLogEntry {
    muster_core::NewLogEntry {
        seq: entry.seq,
        level: level_from_wire(entry.level),
        message: entry.message,
        metadata: entry.metadata,
    }
}

pub(crate) fn runner_key_to_wire(
    key: muster_service::identity::RunnerKeyRecord,
) -> wire::RunnerKey {
    wire::RunnerKey {
        fingerprint: key.fingerprint,
        public_key: key.public_key,
        note: key.note,
        organization_id: key.organization_id,
        created_at: time_to_wire(key.created_at),
    }
}

pub(crate) fn audit_entry_to_wire(entry: muster_service::identity::AuditEntry) -> wire::AuditEntry {
    wire::AuditEntry {
        id: entry.id,
        at: time_to_wire(entry.at),
        actor: entry.actor,
        action: entry.action,
        subject: entry.subject,
        detail: entry.detail,
        organization_id: entry.organization_id,
    }
}

pub(crate) fn organization_to_wire(
    organization: muster_service::organizations::Organization,
) -> wire::Organization {
    wire::Organization {
        id: organization.id,
        name: organization.name,
        allow_shared_runners: organization.allow_shared_runners,
        created_at: time_to_wire(organization.created_at),
    }
}

pub(crate) fn kind_settings_to_wire(
    settings: muster_service::kinds::KindSettings,
) -> wire::KindSettings {
    wire::KindSettings {
        kind: settings.kind,
        result_schema: settings.result_schema,
        require_signed_results: settings.require_signed_results,
        updated_at: time_to_wire(settings.updated_at),
    }
}

pub(crate) fn user_token_to_wire(
    token: muster_service::tokens::UserTokenInfo,
) -> wire::UserTokenInfo {
    wire::UserTokenInfo {
        id: token.id.0,
        name: token.name,
        role: token.role.as_str().to_string(),
        organization_id: token.organization_id,
        created_at: time_to_wire(token.created_at),
        expires_at: token.expires_at.map(time_to_wire),
        last_used_at: token.last_used_at.map(time_to_wire),
    }
}

pub(crate) fn identity_to_wire(identity: muster_service::tokens::Identity) -> wire::WhoAmI {
    wire::WhoAmI {
        kind: identity.kind.to_string(),
        role: identity
            .role
            .map(|role| role.as_str().to_string())
            .unwrap_or_default(),
        organization_id: identity.organization_id,
        token_info: identity.token.map(user_token_to_wire),
    }
}

pub(crate) fn workload_status_to_wire(status: muster_core::WorkloadStatus) -> wire::WorkloadStatus {
    use muster_core::WorkloadStatus as Status;
    match status {
        Status::Starting => wire::WorkloadStatus::Starting,
        Status::Running => wire::WorkloadStatus::Running,
        Status::Stopping => wire::WorkloadStatus::Stopping,
        Status::Stopped => wire::WorkloadStatus::Stopped,
        Status::Failed => wire::WorkloadStatus::Failed,
    }
}

pub(crate) fn workload_status_from_wire(
    status: wire::WorkloadStatus,
) -> muster_core::WorkloadStatus {
    use muster_core::WorkloadStatus as Status;
    match status {
        wire::WorkloadStatus::Starting => Status::Starting,
        wire::WorkloadStatus::Running => Status::Running,
        wire::WorkloadStatus::Stopping => Status::Stopping,
        wire::WorkloadStatus::Stopped => Status::Stopped,
        wire::WorkloadStatus::Failed => Status::Failed,
    }
}

pub(crate) fn container_to_wire(container: muster_core::Container) -> wire::Container {
    use muster_core::{ContainerRole as Role, ContainerStatus as Status};
    wire::Container {
        container_id: container.container_id,
        name: container.name,
        role: match container.role {
            Role::Main => wire::ContainerRole::Main,
            Role::Sidecar => wire::ContainerRole::Sidecar,
            Role::Init => wire::ContainerRole::Init,
        },
        image: container.image,
        status: match container.status {
            Status::Running => wire::ContainerStatus::Running,
            Status::Terminated => wire::ContainerStatus::Terminated,
            Status::Waiting => wire::ContainerStatus::Waiting,
        },
    }
}

pub(crate) fn container_from_wire(container: wire::Container) -> muster_core::Container {
    use muster_core::{ContainerRole as Role, ContainerStatus as Status};
    muster_core::Container {
        container_id: container.container_id,
        name: container.name,
        role: match container.role {
            wire::ContainerRole::Main => Role::Main,
            wire::ContainerRole::Sidecar => Role::Sidecar,
            wire::ContainerRole::Init => Role::Init,
        },
        image: container.image,
        status: match container.status {
            wire::ContainerStatus::Running => Status::Running,
            wire::ContainerStatus::Terminated => Status::Terminated,
            wire::ContainerStatus::Waiting => Status::Waiting,
        },
    }
}

pub(crate) fn workload_to_wire(view: muster_service::workloads::WorkloadView) -> wire::Workload {
    let record = view.record;
    wire::Workload {
        id: record.id,
        runner_id: record.runner_id.0,
        thread_id: record.thread_id,
        agent_id: record.agent_id,
        organization_id: record.organization.as_str().to_string(),
        status: workload_status_to_wire(record.status),
        status_reason: record.status_reason,
        containers: record
            .containers
            .into_iter()
            .map(container_to_wire)
            .collect(),
        ziti_identity_id: record.ziti_identity_id,
        stale: view.stale,
        created_at: time_to_wire(record.created_at),
        updated_at: time_to_wire(record.updated_at),
    }
}

pub(crate) fn workload_change_to_wire(
    change: muster_core::WorkloadStatusChange,
) -> wire::WorkloadStatusChange {
    wire::WorkloadStatusChange {
        status: workload_status_to_wire(change.status),
        reason: change.reason,
        at: time_to_wire(change.at),
    }
}
