//! muster's gRPC front end: `RunnersService` (seed 002: runners and workloads), the read-only
//! `RunnersGateway`, and server reflection, over the same `Coordinator` methods the HTTP API
//! calls. Each method parses, calls the service, and converts; no rule lives here.

pub use muster_proto::{FILE_DESCRIPTOR_SET, gateway_pb, pb, protocol_pb, runners_pb};

mod convert;
mod protocol;
mod runners;

pub use convert::{ERROR_CODE_METADATA, status_of};
pub use protocol::{LEASE_LOST_TYPE_URL, RpcStatus, RunnerProtocolApi, lease_lost_detail};
pub use runners::{PeerAddress, RunnersApi};

/// Every gRPC service of the coordinator, ready to be served: `RunnersService`,
/// `RunnersGateway`, and server reflection (v1 and v1alpha, which generic tools such as
/// `grpcurl` use to list and call the services).
pub fn services(
    coordinator: muster_service::Coordinator,
) -> Result<tonic::service::Routes, ReflectionError> {
    let protocol = RunnerProtocolApi::new(coordinator.clone());
    let api = RunnersApi::new(coordinator);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|error| ReflectionError(error.to_string()))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|error| ReflectionError(error.to_string()))?;
    Ok(tonic::service::Routes::new(
        runners_pb::runners_service_server::RunnersServiceServer::new(api.clone()),
    )
    .add_service(gateway_pb::runners_gateway_server::RunnersGatewayServer::new(api))
    .add_service(
        protocol_pb::runner_protocol_service_server::RunnerProtocolServiceServer::new(protocol),
    )
    .add_service(reflection)
    .add_service(reflection_alpha))
}

/// The embedded descriptors did not load into the reflection service (a build defect).
#[derive(Debug, thiserror::Error)]
#[error("load the gRPC descriptors for reflection: {0}")]
pub struct ReflectionError(String);
