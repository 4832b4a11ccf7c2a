//! An in-memory stand-in for the daemon, to test a runner without a coordinator.
//!
//! A [`Harness`] bundles one implementation of each port: [`InMemoryInputs`] serves inputs from a
//! map, [`InMemoryArtifacts`] records what the runner stores, [`RecordingControlPlane`] records
//! progress, events, log lines and the result and can be cancelled, and [`StaticToken`] hands out
//! a fixed token. Fill the inputs, call [`Harness::run`] (or [`run_runner`]), then look at what
//! was recorded.
//!
//! ```
//! # async fn example() -> anyhow::Result<()> {
//! use muster_runner_sdk::testing::Harness;
//! # use muster_runner_sdk::{Runner, TaskCtx};
//! # struct MyRunner;
//! # #[async_trait::async_trait]
//! # impl Runner for MyRunner {
//! #     fn capability(&self) -> &'static str { "/my/v1" }
//! #     async fn run(&self, ctx: TaskCtx<'_>) -> anyhow::Result<()> {
//! #         let bytes = ctx.input.get_bytes_by_cid(&ctx.lease.task.inputs_cids[0]).await?;
//! #         ctx.output.put_bytes("copy.bin", &bytes).await
//! #     }
//! # }
//! let harness = Harness::new()?;
//! harness.inputs.insert("input-1", b"some bytes".to_vec());
//! let lease = Harness::lease_for("/my/v1", ["input-1"]);
//! harness.run(&MyRunner, &lease).await?;
//! assert_eq!(harness.artifacts.get("copy.bin"), Some(b"some bytes".to_vec()));
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use serde_json::Value;
use tempfile::TempDir;
use uuid::Uuid;

use crate::runner::{
    AccessTokenProvider, ArtifactSink, ControlPlane, InputSource, LogLevel, MultipartUpload,
    Runner, TaskCtx,
};
use crate::types::{LeaseEnvelope, TaskSpec};

/// Takes a lock even if another thread panicked while holding it: every value guarded here is a
/// plain record that stays consistent between statements, so a panic elsewhere cannot leave it
/// half-updated, and a test should see what was recorded rather than a second panic.
fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An [`InputSource`] serving artifacts from a map of id to bytes.
///
/// Materialized files are written to a temporary directory the value owns and removes when
/// dropped, so paths handed to a runner stay valid for as long as the harness lives.
#[derive(Debug)]
pub struct InMemoryInputs {
    artifacts_by_cid: Mutex<HashMap<String, Vec<u8>>>,
    scratch_directory: TempDir,
    materialized_file_count: AtomicU64,
}

impl InMemoryInputs {
    /// An empty source with a fresh temporary directory.
    pub fn new() -> Result<Self> {
        let scratch_directory = tempfile::Builder::new()
            .prefix("muster-runner-sdk-inputs-")
            .tempdir()
            .context("creating the directory for materialized inputs")?;
        Ok(InMemoryInputs {
            artifacts_by_cid: Mutex::new(HashMap::new()),
            scratch_directory,
            materialized_file_count: AtomicU64::new(0),
        })
    }

    /// Adds (or replaces) the artifact `cid`.
    pub fn insert(&self, cid: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        lock_ignoring_poison(&self.artifacts_by_cid).insert(cid.into(), bytes.into());
    }

    /// The directory materialized inputs are written to.
    pub fn scratch_directory(&self) -> &Path {
        self.scratch_directory.path()
    }

    fn bytes_of(&self, cid: &str) -> Result<Vec<u8>> {
        match lock_ignoring_poison(&self.artifacts_by_cid).get(cid) {
            Some(bytes) => Ok(bytes.clone()),
            None => bail!("no input artifact with id {cid:?}"),
        }
    }

    /// A file name unique within the scratch directory. Ids may contain `/` or `..`, so only
    /// their safe characters are kept, and a counter keeps two ids that sanitize alike apart.
    fn fresh_file_name(&self, cid: &str) -> String {
        let sequence_number = self.materialized_file_count.fetch_add(1, Ordering::Relaxed);
        let readable_part: String = cid
            .chars()
            .map(|character| {
                if character.is_ascii_alphanumeric() || character == '-' || character == '_' {
                    character
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        format!("{sequence_number:04}-{readable_part}")
    }
}

#[async_trait]
impl InputSource for InMemoryInputs {
    async fn get_bytes_by_cid(&self, cid: &str) -> Result<Vec<u8>> {
        self.bytes_of(cid)
    }

    async fn materialize_cid_to_temp(&self, cid: &str) -> Result<PathBuf> {
        let path = self
            .scratch_directory
            .path()
            .join(self.fresh_file_name(cid));
        self.materialize_cid_to(cid, &path).await?;
        Ok(path)
    }

    async fn materialize_cid_to(&self, cid: &str, path: &Path) -> Result<()> {
        let bytes = self.bytes_of(cid)?;
        tokio::fs::write(path, &bytes)
            .await
            .with_context(|| format!("writing input {cid:?} to {}", path.display()))
    }
}

type ArtifactsByPath = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

/// An [`ArtifactSink`] that keeps every stored artifact in memory, by `rel_path`.
///
/// Storing to a path twice keeps the second version, as a real sink overwriting an object would.
/// Streamed uploads are supported and appear only once finished. Domain artifact uploads keep the
/// trait's default and are refused.
/// Clones share one store, so a clone kept by a test sees what the runner stored through another.
#[derive(Debug, Default, Clone)]
pub struct InMemoryArtifacts {
    artifacts_by_path: ArtifactsByPath,
}

impl InMemoryArtifacts {
    /// An empty sink.
    pub fn new() -> Self {
        InMemoryArtifacts::default()
    }

    /// The bytes stored at `rel_path`, if any.
    pub fn get(&self, rel_path: &str) -> Option<Vec<u8>> {
        lock_ignoring_poison(&self.artifacts_by_path)
            .get(rel_path)
            .cloned()
    }

    /// Every stored path, sorted.
    pub fn paths(&self) -> Vec<String> {
        lock_ignoring_poison(&self.artifacts_by_path)
            .keys()
            .cloned()
            .collect()
    }

    /// A copy of everything stored, by path.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        lock_ignoring_poison(&self.artifacts_by_path).clone()
    }

    /// True when nothing has been stored.
    pub fn is_empty(&self) -> bool {
        lock_ignoring_poison(&self.artifacts_by_path).is_empty()
    }
}

#[async_trait]
impl ArtifactSink for InMemoryArtifacts {
    async fn put_bytes(&self, rel_path: &str, bytes: &[u8]) -> Result<()> {
        lock_ignoring_poison(&self.artifacts_by_path).insert(rel_path.to_owned(), bytes.to_vec());
        Ok(())
    }

    async fn put_file(&self, rel_path: &str, file_path: &Path) -> Result<()> {
        let bytes = tokio::fs::read(file_path)
            .await
            .with_context(|| format!("reading {} to store as {rel_path:?}", file_path.display()))?;
        lock_ignoring_poison(&self.artifacts_by_path).insert(rel_path.to_owned(), bytes);
        Ok(())
    }

    async fn open_multipart(&self, rel_path: &str) -> Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(InMemoryMultipartUpload {
            rel_path: rel_path.to_owned(),
            collected_chunks: Vec::new(),
            destination: Arc::clone(&self.artifacts_by_path),
        }))
    }
}

/// Collects chunks privately so a reader never sees a half-written artifact.
struct InMemoryMultipartUpload {
    rel_path: String,
    collected_chunks: Vec<u8>,
    destination: ArtifactsByPath,
}

#[async_trait]
impl MultipartUpload for InMemoryMultipartUpload {
    async fn write_chunk(&mut self, chunk: &[u8]) -> Result<()> {
        self.collected_chunks.extend_from_slice(chunk);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<()> {
        let InMemoryMultipartUpload {
            rel_path,
            collected_chunks,
            destination,
        } = *self;
        lock_ignoring_poison(&destination).insert(rel_path, collected_chunks);
        Ok(())
    }
}

/// A [`ControlPlane`] that records every progress report, event, log line and result in order
/// and is cancelled on demand.
#[derive(Debug, Default)]
pub struct RecordingControlPlane {
    cancelled: AtomicBool,
    cancellation: tokio::sync::Notify,
    progress_reports: Mutex<Vec<Value>>,
    logged_events: Mutex<Vec<Value>>,
    log_lines: Mutex<Vec<(LogLevel, String)>>,
    result: Mutex<Option<Value>>,
    cancel_once_event_count_reaches: Mutex<Option<usize>>,
}

impl RecordingControlPlane {
    /// A control plane that is not cancelled and has recorded nothing.
    pub fn new() -> Self {
        RecordingControlPlane::default()
    }

    /// Cancels the task, as a heartbeat answered with `cancel: true` would; from now on
    /// [`ControlPlane::is_cancelled`] is true.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.cancellation.notify_waiters();
    }

    /// Cancels the task as soon as `event_count` events have been logged, to test that a runner
    /// notices a cancellation arriving in the middle of its work.
    pub fn cancel_after_events(&self, event_count: usize) {
        *lock_ignoring_poison(&self.cancel_once_event_count_reaches) = Some(event_count);
        if lock_ignoring_poison(&self.logged_events).len() >= event_count {
            self.cancel();
        }
    }

    /// Whether the task has been cancelled.
    pub fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Every progress value reported, oldest first.
    pub fn progress_reports(&self) -> Vec<Value> {
        lock_ignoring_poison(&self.progress_reports).clone()
    }

    /// The most recent progress value: what a heartbeat would carry now.
    pub fn last_progress(&self) -> Option<Value> {
        lock_ignoring_poison(&self.progress_reports).last().cloned()
    }

    /// Every event logged, oldest first.
    pub fn events(&self) -> Vec<Value> {
        lock_ignoring_poison(&self.logged_events).clone()
    }

    /// Every plain log line, oldest first.
    pub fn log_lines(&self) -> Vec<(LogLevel, String)> {
        lock_ignoring_poison(&self.log_lines).clone()
    }

    /// The result the runner set last, if any.
    pub fn result(&self) -> Option<Value> {
        lock_ignoring_poison(&self.result).clone()
    }
}

#[async_trait]
impl ControlPlane for RecordingControlPlane {
    async fn is_cancelled(&self) -> bool {
        self.cancelled()
    }

    async fn progress(&self, value: Value) -> Result<()> {
        lock_ignoring_poison(&self.progress_reports).push(value);
        Ok(())
    }

    async fn log_event(&self, fields: Value) -> Result<()> {
        let event_count = {
            let mut logged_events = lock_ignoring_poison(&self.logged_events);
            logged_events.push(fields);
            logged_events.len()
        };
        let threshold = *lock_ignoring_poison(&self.cancel_once_event_count_reaches);
        if threshold.is_some_and(|threshold| event_count >= threshold) {
            self.cancel();
        }
        Ok(())
    }

    async fn wait_until_cancelled(&self) {
        loop {
            // Created before the check, so a cancel landing between the two still wakes it.
            let woken = self.cancellation.notified();
            if self.cancelled() {
                return;
            }
            woken.await;
        }
    }

    async fn log(&self, level: LogLevel, message: &str) -> Result<()> {
        lock_ignoring_poison(&self.log_lines).push((level, message.to_owned()));
        Ok(())
    }

    async fn set_result(&self, value: Value) -> Result<()> {
        *lock_ignoring_poison(&self.result) = Some(value);
        Ok(())
    }
}

/// An [`AccessTokenProvider`] that always hands out the same token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticToken(pub String);

impl StaticToken {
    /// A provider of `token`.
    pub fn new(token: impl Into<String>) -> Self {
        StaticToken(token.into())
    }
}

impl AccessTokenProvider for StaticToken {
    fn get(&self) -> String {
        self.0.clone()
    }
}

/// The four in-memory ports together, standing in for the daemon.
#[derive(Debug)]
pub struct Harness {
    /// Inputs the runner can fetch; fill it before running.
    pub inputs: InMemoryInputs,
    /// What the runner stored.
    pub artifacts: InMemoryArtifacts,
    /// Progress and events the runner reported, and the cancellation switch.
    pub control_plane: RecordingControlPlane,
    /// The token handed to the runner.
    pub token: StaticToken,
}

impl Harness {
    /// The token a new harness hands out.
    pub const DEFAULT_TOKEN: &'static str = "muster-runner-sdk-test-token";

    /// A harness with no inputs, nothing recorded, not cancelled, and [`Harness::DEFAULT_TOKEN`].
    pub fn new() -> Result<Self> {
        Ok(Harness {
            inputs: InMemoryInputs::new()?,
            artifacts: InMemoryArtifacts::new(),
            control_plane: RecordingControlPlane::new(),
            token: StaticToken::new(Harness::DEFAULT_TOKEN),
        })
    }

    /// A lease on a fresh task for `capability` with the given input ids and every optional field
    /// at its default.
    pub fn lease_for<I, S>(capability: &str, inputs_cids: I) -> LeaseEnvelope
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        LeaseEnvelope::new(TaskSpec {
            inputs_cids: inputs_cids.into_iter().map(Into::into).collect(),
            ..TaskSpec::new(Uuid::now_v7(), capability)
        })
    }

    /// The context a runner would get for `lease`, borrowing this harness's ports.
    pub fn task_ctx<'a>(&'a self, lease: &'a LeaseEnvelope) -> TaskCtx<'a> {
        TaskCtx {
            lease,
            input: &self.inputs,
            output: &self.artifacts,
            ctrl: &self.control_plane,
            access_token: &self.token,
        }
    }

    /// Runs `runner` on `lease` the way the daemon would dispatch it: a lease for another
    /// capability is refused without running anything, and a lease that already carries
    /// `cancel: true` reaches the runner as a cancelled control plane.
    pub async fn run(&self, runner: &dyn Runner, lease: &LeaseEnvelope) -> Result<()> {
        if lease.task.capability != runner.capability() {
            bail!(
                "the lease is for capability {:?} but the runner implements {:?}",
                lease.task.capability,
                runner.capability()
            );
        }
        if lease.cancel {
            self.control_plane.cancel();
        }
        runner.run(self.task_ctx(lease)).await
    }
}

/// Runs `runner` on `lease` with `harness`'s ports; the same as [`Harness::run`].
pub async fn run_runner(
    runner: &dyn Runner,
    lease: &LeaseEnvelope,
    harness: &Harness,
) -> Result<()> {
    harness.run(runner, lease).await
}
