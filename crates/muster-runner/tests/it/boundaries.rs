//! The daemon's layering, checked where it is cheap: only the HTTP transport module names the
//! HTTP client or the wire types, only the gRPC transport module names the generated messages
//! or tonic, and nothing branches on HTTP statuses.

use std::path::Path;

use anyhow::{Context, Result};

/// Every source file of the daemon, by name.
fn sources() -> Result<Vec<(String, String)>> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&directory).context("list the daemon's sources")? {
        let path = entry?.path();
        if path.extension().is_some_and(|extension| extension == "rs") {
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("read {}", path.display()))?;
            files.push((name, text));
        }
    }
    Ok(files)
}

#[test]
fn only_the_http_transport_names_the_http_client_or_the_wire_types() -> Result<()> {
    let files = sources()?;
    assert!(
        files.iter().any(|(name, _)| name == "http.rs"),
        "the HTTP transport module is where this test expects it"
    );
    let mut offenders = Vec::new();
    for (name, text) in &files {
        if name == "http.rs" {
            continue;
        }
        for word in ["muster_client", "muster_api", "RunnerClient", "ClientError"] {
            if text.contains(word) {
                offenders.push(format!("{name} names {word}"));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
    Ok(())
}

#[test]
fn only_the_grpc_transport_names_the_generated_messages_or_tonic() -> Result<()> {
    let files = sources()?;
    assert!(
        files.iter().any(|(name, _)| name == "grpc.rs"),
        "the gRPC transport module is where this test expects it"
    );
    let mut offenders = Vec::new();
    for (name, text) in &files {
        if name == "grpc.rs" {
            continue;
        }
        for word in ["muster_proto", "tonic", "prost"] {
            if text.contains(word) {
                offenders.push(format!("{name} names {word}"));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
    Ok(())
}

#[test]
fn no_decision_is_made_on_an_http_status() -> Result<()> {
    let mut offenders = Vec::new();
    for (name, text) in sources()? {
        for word in [".status()", "StatusCode", "status ==", "status >="] {
            if text.contains(word) {
                offenders.push(format!("{name} reads an HTTP status ({word})"));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
    Ok(())
}
