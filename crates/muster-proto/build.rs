//! Compiles the protos under `proto/` at the workspace root with protox (a protobuf compiler in
//! Rust), so a fresh clone builds with Cargo alone: no `protoc` on the machine. The descriptor
//! set is kept for gRPC server reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "muster/runners/v1/runners.proto",
    "muster/gateway/v1/runners.proto",
    "muster/runner/v1/protocol.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let descriptors = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("muster_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
