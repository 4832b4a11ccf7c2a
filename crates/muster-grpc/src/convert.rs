//! Conversions between the service's types and the generated messages, and from
//! `ServiceError` to a gRPC status: the only place where the two meet.

use muster_core::{
    Container, ContainerRole, ContainerStatus, Enrollment, ErrorCode, RunnerStatus, Timestamp,
    WorkloadStatus,
};
use muster_service::ServiceError;
use muster_service::runners::RunnerView;
use muster_service::workloads::WorkloadView;
use tonic::{Code, Status};

use crate::runners_pb as pb;

/// The metadata key that carries the contract's error code beside the gRPC status, so a client
/// can branch on `lease_lost` or `organization_not_found` as an HTTP client branches on
/// `error.code`.
pub const ERROR_CODE_METADATA: &str = "muster-error-code";

/// The gRPC status of a service error: the nearest code, the caller's message, and the
/// contract's code in [`ERROR_CODE_METADATA`]. An internal error's detail goes to the log only.
pub fn status_of(error: ServiceError) -> Status {
    let code = match error.code() {
        ErrorCode::InvalidInput
        | ErrorCode::PayloadTooLarge
        | ErrorCode::UnknownArtifact
        | ErrorCode::ResultSchemaMismatch
        | ErrorCode::InvalidSignature
        | ErrorCode::SignatureRequired
        | ErrorCode::InvalidSchema
        | ErrorCode::CapabilityNotRegistered => Code::InvalidArgument,
        ErrorCode::Unauthorized | ErrorCode::TokenExpired => Code::Unauthenticated,
        ErrorCode::Forbidden
        | ErrorCode::CsrfCheckFailed
        | ErrorCode::KeyNotAllowed
        | ErrorCode::KeyRejected
        | ErrorCode::RegistrationClosed
        | ErrorCode::RunnerNotEnrolled => Code::PermissionDenied,
        ErrorCode::NotFound | ErrorCode::OrganizationNotFound => Code::NotFound,
        ErrorCode::LeaseLost | ErrorCode::InvalidState | ErrorCode::OrganizationNotEmpty => {
            Code::FailedPrecondition
        }
        ErrorCode::Conflict => Code::AlreadyExists,
        ErrorCode::TooManyRequests
        | ErrorCode::ArtifactQuotaExceeded
        | ErrorCode::InsufficientStorage => Code::ResourceExhausted,
        ErrorCode::RequestTimeout => Code::DeadlineExceeded,
        ErrorCode::MethodNotAllowed => Code::Unimplemented,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::Internal => Code::Internal,
    };
    if error.code() == ErrorCode::Internal {
        tracing::error!(error = %error.message(), "a gRPC call failed inside the coordinator");
    }
    let mut status = Status::new(code, error.public_message());
    if let Ok(value) = error.code().as_str().parse() {
        status.metadata_mut().insert(ERROR_CODE_METADATA, value);
    }
    status
}

/// A field the caller sent that does not parse.
pub(crate) fn invalid_argument(field: &str, problem: &str) -> Status {
    status_of(ServiceError::invalid_input(format!("{field}: {problem}")))
}

pub(crate) fn timestamp(at: Timestamp) -> prost_types::Timestamp {
    let millis = at.as_millis();
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

pub(crate) fn runner_to_pb(view: RunnerView) -> pb::Runner {
    let runner = view.runner;
    let status = match (runner.enrollment, view.status) {
        (Enrollment::Pending | Enrollment::Rejected, _) => pb::RunnerStatus::Pending,
        (Enrollment::Enrolled, RunnerStatus::Offline) => pb::RunnerStatus::Offline,
        (Enrollment::Enrolled, RunnerStatus::Online | RunnerStatus::Draining) => {
            pb::RunnerStatus::Enrolled
        }
    };
    let enrollment = match runner.enrollment {
        Enrollment::Pending => pb::RunnerEnrollment::Pending,
        Enrollment::Enrolled => pb::RunnerEnrollment::Enrolled,
        Enrollment::Rejected => pb::RunnerEnrollment::Rejected,
    };
    let (tags, resources) = match &runner.bound_capabilities {
        Some(bound) => (bound.tags.clone(), bound.resources.clone()),
        None => (runner.offer.tags.clone(), runner.offer.resources.clone()),
    };
    pb::Runner {
        meta: Some(pb::EntityMeta {
            id: runner.id.to_string(),
            created_at: Some(timestamp(runner.created_at)),
            // A runner's record changes with every heartbeat; its last sign of life is the
            // nearest thing to an update time.
            updated_at: Some(timestamp(runner.last_seen_at.unwrap_or(runner.created_at))),
        }),
        name: runner.name,
        organization_id: runner.organization_id,
        identity_id: runner.key_fingerprint.unwrap_or_default(),
        status: status.into(),
        labels: runner.labels.into_iter().collect(),
        tags,
        resources: resources.into_iter().collect(),
        kinds: runner.kinds,
        enrollment: enrollment.into(),
        draining: runner.draining,
        version: runner.version.unwrap_or_default(),
        last_heartbeat_at: runner.last_heartbeat_at.map(timestamp),
        hostname: runner.hostname.unwrap_or_default(),
        running_jobs: runner.running_jobs,
        token_expires_at: runner.token_expires_at.map(timestamp),
    }
}

pub(crate) fn workload_status_to_pb(status: WorkloadStatus) -> pb::WorkloadStatus {
    match status {
        WorkloadStatus::Starting => pb::WorkloadStatus::Starting,
        WorkloadStatus::Running => pb::WorkloadStatus::Running,
        WorkloadStatus::Stopping => pb::WorkloadStatus::Stopping,
        WorkloadStatus::Stopped => pb::WorkloadStatus::Stopped,
        WorkloadStatus::Failed => pb::WorkloadStatus::Failed,
    }
}

pub(crate) fn workload_status_from_pb(field: &str, value: i32) -> Result<WorkloadStatus, Status> {
    match pb::WorkloadStatus::try_from(value) {
        Ok(pb::WorkloadStatus::Starting) => Ok(WorkloadStatus::Starting),
        Ok(pb::WorkloadStatus::Running) => Ok(WorkloadStatus::Running),
        Ok(pb::WorkloadStatus::Stopping) => Ok(WorkloadStatus::Stopping),
        Ok(pb::WorkloadStatus::Stopped) => Ok(WorkloadStatus::Stopped),
        Ok(pb::WorkloadStatus::Failed) => Ok(WorkloadStatus::Failed),
        Ok(pb::WorkloadStatus::Unspecified) | Err(_) => Err(invalid_argument(
            field,
            "must be a workload status (STARTING, RUNNING, STOPPING, STOPPED or FAILED)",
        )),
    }
}

pub(crate) fn container_from_pb(
    index: usize,
    container: pb::Container,
) -> Result<Container, Status> {
    let role = match pb::ContainerRole::try_from(container.role) {
        Ok(pb::ContainerRole::Main) => ContainerRole::Main,
        Ok(pb::ContainerRole::Sidecar) => ContainerRole::Sidecar,
        Ok(pb::ContainerRole::Init) => ContainerRole::Init,
        Ok(pb::ContainerRole::Unspecified) | Err(_) => {
            return Err(invalid_argument(
                &format!("containers[{index}].role"),
                "must be MAIN, SIDECAR or INIT",
            ));
        }
    };
    let status = match pb::ContainerStatus::try_from(container.status) {
        Ok(pb::ContainerStatus::Running) => ContainerStatus::Running,
        Ok(pb::ContainerStatus::Terminated) => ContainerStatus::Terminated,
        Ok(pb::ContainerStatus::Waiting) => ContainerStatus::Waiting,
        Ok(pb::ContainerStatus::Unspecified) | Err(_) => {
            return Err(invalid_argument(
                &format!("containers[{index}].status"),
                "must be RUNNING, TERMINATED or WAITING",
            ));
        }
    };
    Ok(Container {
        container_id: container.container_id,
        name: container.name,
        role,
        image: container.image,
        status,
    })
}

pub(crate) fn containers_from_pb(containers: Vec<pb::Container>) -> Result<Vec<Container>, Status> {
    containers
        .into_iter()
        .enumerate()
        .map(|(index, container)| container_from_pb(index, container))
        .collect()
}

fn container_to_pb(container: Container) -> pb::Container {
    pb::Container {
        container_id: container.container_id,
        name: container.name,
        role: match container.role {
            ContainerRole::Main => pb::ContainerRole::Main,
            ContainerRole::Sidecar => pb::ContainerRole::Sidecar,
            ContainerRole::Init => pb::ContainerRole::Init,
        }
        .into(),
        image: container.image,
        status: match container.status {
            ContainerStatus::Running => pb::ContainerStatus::Running,
            ContainerStatus::Terminated => pb::ContainerStatus::Terminated,
            ContainerStatus::Waiting => pb::ContainerStatus::Waiting,
        }
        .into(),
    }
}

pub(crate) fn workload_to_pb(view: WorkloadView) -> pb::Workload {
    let record = view.record;
    pb::Workload {
        meta: Some(pb::EntityMeta {
            id: record.id,
            created_at: Some(timestamp(record.created_at)),
            updated_at: Some(timestamp(record.updated_at)),
        }),
        runner_id: record.runner_id.to_string(),
        thread_id: record.thread_id,
        agent_id: record.agent_id,
        organization_id: record.organization.as_str().to_string(),
        status: workload_status_to_pb(record.status).into(),
        containers: record.containers.into_iter().map(container_to_pb).collect(),
        ziti_identity_id: record.ziti_identity_id,
        status_reason: record.status_reason,
        stale: view.stale,
    }
}

/// A runner id the caller sent.
pub(crate) fn runner_id(field: &str, text: &str) -> Result<muster_core::RunnerId, Status> {
    text.parse::<uuid::Uuid>()
        .map(muster_core::RunnerId)
        .map_err(|_| invalid_argument(field, "must be a runner id (a UUID)"))
}

/// `page_size` as the service takes it: 0 is the default.
pub(crate) fn page_size(value: i32) -> Result<Option<u32>, Status> {
    match u32::try_from(value) {
        Ok(0) => Ok(None),
        Ok(size) => Ok(Some(size)),
        Err(_) => Err(invalid_argument("page_size", "must not be negative")),
    }
}

/// `page_token` as the service takes it: empty is the first page.
pub(crate) fn page_token(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}
