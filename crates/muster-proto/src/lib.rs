//! The generated protobuf messages and gRPC stubs of every proto under `proto/`, in modules
//! named as the proto packages are (the gateway's code names the runners package's messages by
//! that path). Both sides use this crate: the coordinator's gRPC front end (`muster-grpc`)
//! implements the servers, the runner daemon and tests use the clients. Nothing but generated
//! code lives here.

#![allow(unreachable_pub, clippy::all)]

pub mod pb {
    pub mod muster {
        pub mod runners {
            pub mod v1 {
                tonic::include_proto!("muster.runners.v1");
            }
        }
        pub mod gateway {
            pub mod v1 {
                tonic::include_proto!("muster.gateway.v1");
            }
        }
        pub mod runner {
            pub mod v1 {
                tonic::include_proto!("muster.runner.v1");
            }
        }
    }
}

pub use pb::muster::gateway::v1 as gateway_pb;
pub use pb::muster::runner::v1 as protocol_pb;
pub use pb::muster::runners::v1 as runners_pb;

/// The encoded descriptors of every service, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/muster_descriptor.bin"));
