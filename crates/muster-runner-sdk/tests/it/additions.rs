//! The ports' later additions (a chosen input path, files stored together, waiting for a cancel,
//! plain log lines, a result): what their defaults do for ports written before them, and what
//! the harness records.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use muster_runner_sdk::testing::{InMemoryInputs, RecordingControlPlane};
use muster_runner_sdk::{
    ArtifactSink, ControlPlane, InputSource, LeaseEnvelope, LogLevel, TaskSpec,
};
use serde_json::{Value, json};
use tempfile::TempDir;

/// An input source written against the original contract: two required methods only.
struct OriginalInputs {
    directory: TempDir,
}

#[async_trait]
impl InputSource for OriginalInputs {
    async fn get_bytes_by_cid(&self, cid: &str) -> Result<Vec<u8>> {
        Ok(format!("contents of {cid}").into_bytes())
    }

    async fn materialize_cid_to_temp(&self, cid: &str) -> Result<PathBuf> {
        let path = self.directory.path().join(format!("{cid}.tmp"));
        tokio::fs::write(&path, self.get_bytes_by_cid(cid).await?).await?;
        Ok(path)
    }
}

#[tokio::test]
async fn the_default_materialize_to_a_chosen_path_copies_the_temporary_file() -> Result<()> {
    let source = OriginalInputs {
        directory: TempDir::new().context("a directory for the source")?,
    };
    let chosen = TempDir::new().context("a directory the runner chose")?;
    let target = chosen.path().join("scan");

    source.materialize_cid_to("scan-7", &target).await?;

    assert_eq!(std::fs::read(&target)?, b"contents of scan-7");
    Ok(())
}

#[tokio::test]
async fn the_harness_writes_an_input_to_the_chosen_path_and_names_a_missing_one() -> Result<()> {
    let inputs = InMemoryInputs::new()?;
    inputs.insert("greeting", b"hi".to_vec());
    let chosen = TempDir::new().context("a directory the runner chose")?;

    inputs
        .materialize_cid_to("greeting", &chosen.path().join("greeting"))
        .await?;
    assert_eq!(std::fs::read(chosen.path().join("greeting"))?, b"hi");

    let missing = inputs
        .materialize_cid_to("absent", &chosen.path().join("absent"))
        .await
        .expect_err("an unknown input cannot be materialized");
    assert!(missing.to_string().contains("absent"), "{missing}");
    assert!(!chosen.path().join("absent").exists());
    Ok(())
}

/// A sink written against the original contract, recording each call.
#[derive(Default)]
struct OriginalSink {
    calls: Mutex<Vec<(String, Vec<u8>)>>,
}

#[async_trait]
impl ArtifactSink for OriginalSink {
    async fn put_bytes(&self, rel_path: &str, bytes: &[u8]) -> Result<()> {
        self.calls
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push((rel_path.to_owned(), bytes.to_vec()));
        Ok(())
    }

    async fn put_file(&self, rel_path: &str, file_path: &Path) -> Result<()> {
        let bytes = tokio::fs::read(file_path).await?;
        self.put_bytes(rel_path, &bytes).await
    }
}

#[tokio::test]
async fn the_default_put_files_stores_each_file_in_order_and_stops_at_the_first_error() -> Result<()>
{
    let directory = TempDir::new()?;
    std::fs::write(directory.path().join("a"), b"first")?;
    std::fs::write(directory.path().join("b"), b"second")?;
    let sink = OriginalSink::default();

    sink.put_files(&[
        ("out/a.txt".to_owned(), directory.path().join("a")),
        ("out/b.txt".to_owned(), directory.path().join("b")),
    ])
    .await?;
    let stored = sink
        .calls
        .lock()
        .map(|calls| calls.clone())
        .unwrap_or_default();
    assert_eq!(
        stored,
        [
            ("out/a.txt".to_owned(), b"first".to_vec()),
            ("out/b.txt".to_owned(), b"second".to_vec())
        ]
    );

    let failing = OriginalSink::default();
    let error = failing
        .put_files(&[
            ("missing".to_owned(), directory.path().join("nope")),
            ("b".to_owned(), directory.path().join("b")),
        ])
        .await;
    assert!(error.is_err(), "a file that cannot be read fails the call");
    assert!(
        failing
            .calls
            .lock()
            .map(|calls| calls.is_empty())
            .unwrap_or(false),
        "nothing after the failing file is stored"
    );
    Ok(())
}

/// A control plane written against the original contract, cancelled by a flag.
#[derive(Default)]
struct OriginalControlPlane {
    cancelled: std::sync::atomic::AtomicBool,
    events: Mutex<Vec<Value>>,
}

#[async_trait]
impl ControlPlane for OriginalControlPlane {
    async fn is_cancelled(&self) -> bool {
        self.cancelled.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn progress(&self, _value: Value) -> Result<()> {
        Ok(())
    }

    async fn log_event(&self, fields: Value) -> Result<()> {
        self.events
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push(fields);
        Ok(())
    }
}

#[tokio::test]
async fn the_default_log_line_is_an_event_and_a_result_is_accepted() -> Result<()> {
    let ctrl = OriginalControlPlane::default();

    ctrl.log(LogLevel::Warn, "disk nearly full").await?;
    ctrl.set_result(json!({"answer": 42})).await?;

    let events = ctrl
        .events
        .lock()
        .map(|events| events.clone())
        .unwrap_or_default();
    assert_eq!(
        events,
        [json!({"level": "warn", "message": "disk nearly full"})]
    );
    Ok(())
}

#[tokio::test]
async fn the_default_wait_for_a_cancel_ends_once_it_is_cancelled() -> Result<()> {
    let ctrl = Arc::new(OriginalControlPlane::default());
    let waiter = {
        let ctrl = Arc::clone(&ctrl);
        tokio::spawn(async move { ctrl.wait_until_cancelled().await })
    };
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(!waiter.is_finished(), "nothing cancelled the task yet");

    ctrl.cancelled
        .store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .context("the wait did not end within 5 s of the cancel")??;
    Ok(())
}

#[tokio::test]
async fn the_recording_control_plane_wakes_a_waiter_and_records_lines_and_the_result() -> Result<()>
{
    let control_plane = Arc::new(RecordingControlPlane::new());
    let waiter = {
        let control_plane = Arc::clone(&control_plane);
        tokio::spawn(async move { control_plane.wait_until_cancelled().await })
    };
    let ctrl: &dyn ControlPlane = control_plane.as_ref();
    ctrl.log(LogLevel::Info, "one").await?;
    ctrl.log(LogLevel::Error, "two").await?;
    ctrl.set_result(json!({"first": true})).await?;
    ctrl.set_result(json!({"second": true})).await?;
    assert!(!waiter.is_finished(), "nothing cancelled the task yet");

    control_plane.cancel();
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .context("the wait did not end within 5 s of the cancel")??;
    assert_eq!(
        control_plane.log_lines(),
        [
            (LogLevel::Info, "one".to_owned()),
            (LogLevel::Error, "two".to_owned())
        ]
    );
    assert_eq!(control_plane.result(), Some(json!({"second": true})));
    assert!(
        control_plane.events().is_empty(),
        "plain lines are not events"
    );
    Ok(())
}

#[test]
fn the_lease_and_task_constructors_give_what_the_smallest_json_gives() -> Result<()> {
    let id = uuid::Uuid::now_v7();
    let from_json: LeaseEnvelope =
        serde_json::from_value(json!({"task": {"id": id, "capability": "/x/v1"}}))?;
    assert_eq!(LeaseEnvelope::new(TaskSpec::new(id, "/x/v1")), from_json);
    Ok(())
}
