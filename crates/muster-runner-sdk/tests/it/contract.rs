//! The traits stay object-safe and their default methods behave as the contract says.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use async_trait::async_trait;
use muster_runner_sdk::testing::{
    Harness, InMemoryArtifacts, InMemoryInputs, RecordingControlPlane, StaticToken,
};
use muster_runner_sdk::{
    AccessTokenProvider, ArtifactSink, CRATE_NAME, ControlPlane, DomainArtifactContent,
    DomainArtifactRequest, InputSource, MaterializedInput, MultipartUpload, Runner, TaskCtx,
};
use tempfile::TempDir;

use crate::hello_runner::{HELLO_CAPABILITY, HELLO_OUTPUT_PATH, HelloRunner};

#[test]
fn crate_name_names_this_crate() {
    assert_eq!(CRATE_NAME, "muster-runner-sdk");
}

#[tokio::test]
async fn every_trait_works_behind_a_trait_object() -> Result<()> {
    let runner: Box<dyn Runner> = Box::new(HelloRunner);
    assert_eq!(runner.capability(), HELLO_CAPABILITY);

    let inputs = InMemoryInputs::new()?;
    inputs.insert("in", b"abc".to_vec());
    let artifacts = InMemoryArtifacts::new();
    let control_plane = RecordingControlPlane::new();
    let token = StaticToken::new("secret");

    let input: &dyn InputSource = &inputs;
    let output: &dyn ArtifactSink = &artifacts;
    let ctrl: &dyn ControlPlane = &control_plane;
    let access_token: &dyn AccessTokenProvider = &token;

    assert_eq!(input.get_bytes_by_cid("in").await?, b"abc");
    assert_eq!(access_token.get(), "secret");
    assert!(!ctrl.is_cancelled().await);

    let mut upload: Box<dyn MultipartUpload> = output.open_multipart("streamed.bin").await?;
    upload.write_chunk(b"x").await?;
    upload.finish().await?;
    assert_eq!(artifacts.get("streamed.bin"), Some(b"x".to_vec()));

    let lease = Harness::lease_for(HELLO_CAPABILITY, ["in"]);
    let ctx = TaskCtx {
        lease: &lease,
        input,
        output,
        ctrl,
        access_token,
    };
    runner.run(ctx).await?;
    assert_eq!(artifacts.get(HELLO_OUTPUT_PATH), Some(b"ABC".to_vec()));
    Ok(())
}

/// Implements only the required methods, so the defaults are what gets exercised.
struct DirectoryInputs {
    directory: TempDir,
}

#[async_trait]
impl InputSource for DirectoryInputs {
    async fn get_bytes_by_cid(&self, cid: &str) -> Result<Vec<u8>> {
        Ok(format!("contents of {cid}").into_bytes())
    }

    async fn materialize_cid_to_temp(&self, cid: &str) -> Result<PathBuf> {
        let path = self.directory.path().join(format!("{cid}.bin"));
        tokio::fs::write(&path, self.get_bytes_by_cid(cid).await?).await?;
        Ok(path)
    }
}

#[tokio::test]
async fn default_materialize_with_meta_describes_the_materialized_file_only() -> Result<()> {
    let source = DirectoryInputs {
        directory: TempDir::new().context("a scratch directory for the test source")?,
    };
    let materialized = source.materialize_cid_with_meta("scan-7").await?;

    let expected_path = source.directory.path().join("scan-7.bin");
    assert_eq!(
        materialized,
        MaterializedInput {
            cid: "scan-7".to_owned(),
            path: expected_path.clone(),
            data_id: None,
            name: None,
            data_type: None,
            domain_id: None,
            root_dir: source.directory.path().to_path_buf(),
            related_files: Vec::new(),
            extracted_paths: Vec::new(),
        }
    );
    assert_eq!(std::fs::read(&expected_path)?, b"contents of scan-7");
    Ok(())
}

#[test]
fn materialized_input_root_is_the_parent_directory_or_the_path_itself() {
    let nested = MaterializedInput::new("a", PathBuf::from("/tmp/inputs/a.bin"));
    assert_eq!(nested.root_dir, PathBuf::from("/tmp/inputs"));
    assert_eq!(nested.cid, "a");

    let root = MaterializedInput::new(String::from("b"), PathBuf::from("/"));
    assert_eq!(root.root_dir, PathBuf::from("/"));
}

/// Implements only the required methods, so the optional ones keep their refusing defaults.
struct BytesOnlySink;

#[async_trait]
impl ArtifactSink for BytesOnlySink {
    async fn put_bytes(&self, _rel_path: &str, _bytes: &[u8]) -> Result<()> {
        Ok(())
    }

    async fn put_file(&self, _rel_path: &str, _file_path: &Path) -> Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn optional_sink_methods_refuse_by_default() {
    let sink: &dyn ArtifactSink = &BytesOnlySink;

    let multipart_error = sink
        .open_multipart("big.bin")
        .await
        .err()
        .expect("a sink without streaming must refuse multipart uploads");
    assert_eq!(multipart_error.to_string(), "multipart not supported");

    let request = DomainArtifactRequest {
        rel_path: "mesh.obj",
        name: "mesh",
        data_type: "obj",
        existing_id: None,
        content: DomainArtifactContent::Bytes(b"v 0 0 0"),
    };
    assert!(sink.put_domain_artifact(request).await.is_err());
}

#[tokio::test]
async fn the_harness_sink_refuses_domain_artifacts_like_a_plain_sink() {
    let artifacts = InMemoryArtifacts::new();
    let request = DomainArtifactRequest {
        rel_path: "mesh.obj",
        name: "mesh",
        data_type: "obj",
        existing_id: Some("previous-version"),
        content: DomainArtifactContent::File(Path::new("/nonexistent")),
    };
    assert!(artifacts.put_domain_artifact(request).await.is_err());
    assert!(artifacts.is_empty());
}
