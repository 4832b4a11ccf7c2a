//! The runner interface: the [`Runner`] trait a capability implements, the [`TaskCtx`] it is
//! handed, and the ports inside that context.
//!
//! Every port is an object-safe trait so the daemon can hand out whichever implementation it has
//! (HTTP-backed in production, in-memory in [`crate::testing`]) behind a `&dyn` reference.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;

use crate::types::LeaseEnvelope;

/// The severity of a log line; the same levels as the coordinator's job log.
pub use muster_core::LogLevel;

/// An input artifact written to local disk, with whatever the source knew about it.
///
/// Only `cid`, `path` and `root_dir` are always meaningful; sources that know nothing more leave
/// the optional fields `None` and the lists empty, which is what [`MaterializedInput::new`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterializedInput {
    /// The id the artifact was requested by.
    pub cid: String,
    /// Where the artifact's bytes now are.
    pub path: PathBuf,
    /// The storage system's own id for the artifact, when it differs from `cid`.
    pub data_id: Option<String>,
    /// The artifact's name as stored.
    pub name: Option<String>,
    /// The artifact's declared type (for example a MIME type or a format name).
    pub data_type: Option<String>,
    /// The data domain the artifact came from.
    pub domain_id: Option<String>,
    /// The directory the source materialized into; related and extracted files live under it.
    pub root_dir: PathBuf,
    /// Other files the source wrote next to `path` because they belong with it.
    pub related_files: Vec<PathBuf>,
    /// Files unpacked from `path` when it was an archive.
    pub extracted_paths: Vec<PathBuf>,
}

impl MaterializedInput {
    /// Describes a file at `path` for `cid` with no further metadata; `root_dir` is the file's
    /// parent directory (or `path` itself when it has none).
    pub fn new(cid: impl Into<String>, path: PathBuf) -> Self {
        let root_dir = path
            .parent()
            .map_or_else(|| path.clone(), Path::to_path_buf);
        MaterializedInput {
            cid: cid.into(),
            path,
            data_id: None,
            name: None,
            data_type: None,
            domain_id: None,
            root_dir,
            related_files: Vec::new(),
            extracted_paths: Vec::new(),
        }
    }
}

/// Where a task's inputs come from. The muster daemon downloads them from the coordinator by
/// artifact id; [`crate::testing::InMemoryInputs`] serves them from a map.
#[async_trait]
pub trait InputSource: Send + Sync {
    /// Fetches the whole artifact `cid` into memory.
    async fn get_bytes_by_cid(&self, cid: &str) -> Result<Vec<u8>>;

    /// Writes the artifact `cid` to a local file the runner may read and returns its path. The file
    /// lives in a directory the source owns, so it may disappear once the task is over.
    async fn materialize_cid_to_temp(&self, cid: &str) -> Result<PathBuf>;

    /// Like [`InputSource::materialize_cid_to_temp`], but also says what the source knows about
    /// the artifact. Sources without metadata can rely on this default, which reports none.
    async fn materialize_cid_with_meta(&self, cid: &str) -> Result<MaterializedInput> {
        let path = self.materialize_cid_to_temp(cid).await?;
        Ok(MaterializedInput::new(cid, path))
    }

    /// Writes the artifact `cid` to `path`, a file the runner chose (for tools that expect their
    /// inputs in one directory under known names); the parent directory must exist. The default
    /// materializes to a temporary file and copies it; the muster daemon streams the download
    /// straight to `path`.
    async fn materialize_cid_to(&self, cid: &str, path: &Path) -> Result<()> {
        let temporary = self.materialize_cid_to_temp(cid).await?;
        tokio::fs::copy(&temporary, path)
            .await
            .with_context(|| format!("copy input {cid} to {}", path.display()))?;
        Ok(())
    }
}

/// Where a task's outputs go. `rel_path` is relative to the task's outputs prefix. The muster
/// daemon uploads to the coordinator; [`crate::testing::InMemoryArtifacts`] keeps them in memory.
#[async_trait]
pub trait ArtifactSink: Send + Sync {
    /// Stores `bytes` as the artifact at `rel_path`.
    async fn put_bytes(&self, rel_path: &str, bytes: &[u8]) -> Result<()>;

    /// Stores the contents of the local file `file_path` as the artifact at `rel_path`.
    async fn put_file(&self, rel_path: &str, file_path: &Path) -> Result<()>;

    /// Stores several local files, each `(rel_path, file_path)`. A sink that can make them
    /// visible together does (the muster daemon uploads them all, then records them on the job in
    /// one call, so an upload failing half-way records none); the default stores them one by one
    /// with [`ArtifactSink::put_file`].
    async fn put_files(&self, files: &[(String, PathBuf)]) -> Result<()> {
        for (rel_path, file_path) in files {
            self.put_file(rel_path, file_path).await?;
        }
        Ok(())
    }

    /// Starts a streamed upload for an artifact too large to hold in memory. Sinks that cannot
    /// stream keep this default, which refuses, so runners should fall back to
    /// [`ArtifactSink::put_file`].
    async fn open_multipart(&self, _rel_path: &str) -> Result<Box<dyn MultipartUpload>> {
        Err(anyhow::anyhow!("multipart not supported"))
    }

    /// Stores an artifact together with domain metadata (name, type, the id of a version to
    /// replace) and returns the stored artifact's id when the sink assigns one. Only sinks backed
    /// by a domain data server support this; the default refuses.
    async fn put_domain_artifact(
        &self,
        _request: DomainArtifactRequest<'_>,
    ) -> Result<Option<String>> {
        Err(anyhow::anyhow!(
            "this artifact sink does not support domain artifact uploads"
        ))
    }
}

/// A streamed upload opened by [`ArtifactSink::open_multipart`]. Nothing is visible under the
/// artifact's path until [`MultipartUpload::finish`] succeeds; dropping the upload abandons it.
#[async_trait]
pub trait MultipartUpload: Send + Sync {
    /// Appends `chunk` to the artifact.
    async fn write_chunk(&mut self, chunk: &[u8]) -> Result<()>;

    /// Completes the upload, making the artifact visible. Taking `Box<Self>` means an upload can
    /// be finished only once and never written to afterwards.
    async fn finish(self: Box<Self>) -> Result<()>;
}

/// An artifact to store with domain metadata, for [`ArtifactSink::put_domain_artifact`].
#[derive(Debug, Clone, Copy)]
pub struct DomainArtifactRequest<'a> {
    /// Path relative to the task's outputs prefix.
    pub rel_path: &'a str,
    /// The name to store the artifact under.
    pub name: &'a str,
    /// The artifact's declared type.
    pub data_type: &'a str,
    /// The id of an existing artifact this one replaces, if any.
    pub existing_id: Option<&'a str>,
    /// The artifact's bytes, in memory or in a local file.
    pub content: DomainArtifactContent<'a>,
}

/// Where the bytes of a [`DomainArtifactRequest`] are.
#[derive(Debug, Clone, Copy)]
pub enum DomainArtifactContent<'a> {
    /// Bytes already in memory.
    Bytes(&'a [u8]),
    /// A local file to read.
    File(&'a Path),
}

/// The runner's line back to whoever handed out the task: cancellation, progress, log lines and
/// the result.
///
/// In the muster daemon progress replaces the last value and travels with the next job
/// heartbeat; events and log lines queue up and are shipped in order within a fraction of a
/// second; a `cancel: true` in any answer of the coordinator about the task (or the task's lease
/// being lost) is what [`ControlPlane::is_cancelled`] reports.
#[async_trait]
pub trait ControlPlane: Send + Sync {
    /// True once the task has been cancelled. Runners check this between steps and stop with an
    /// error, since nothing they produce afterwards will be used.
    async fn is_cancelled(&self) -> bool;

    /// Reports progress as opaque JSON; each report replaces the previous one. muster's coordinator
    /// understands a number from 0 to 100 or `{"progress": <0..100>, "message": "..."}`.
    async fn progress(&self, value: serde_json::Value) -> Result<()>;

    /// Records a structured event (a JSON object of fields) for the task's log. Events are kept in
    /// the order they were logged.
    async fn log_event(&self, fields: serde_json::Value) -> Result<()>;

    /// Resolves once the task is cancelled, for a runner that waits on something (a child
    /// process, a socket) and must stop as soon as the task is. The default asks
    /// [`ControlPlane::is_cancelled`] every 100 ms; the muster daemon's resolves at once.
    async fn wait_until_cancelled(&self) {
        while !self.is_cancelled().await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Appends a plain line of text to the task's log at `level` (a command's output, say). The
    /// default records it as the event `{"level": ..., "message": ...}`; the muster daemon writes
    /// it as a job log line of that level.
    async fn log(&self, level: LogLevel, message: &str) -> Result<()> {
        self.log_event(serde_json::json!({ "level": level.as_str(), "message": message }))
            .await
    }

    /// Sets the JSON the task reports as its result when [`Runner::run`] returns `Ok`, replacing
    /// any value set before. The muster daemon adds `outputs` (what was stored, path to artifact
    /// id) to an object result; a task that sets none completes with `{"outputs": {...}}`. The
    /// default ignores the value, for hosts that have no result to report.
    async fn set_result(&self, _value: serde_json::Value) -> Result<()> {
        Ok(())
    }
}

/// The current bearer token for calls a runner makes on its own. The value may change while a task
/// runs (the issuer rotates it), so read it right before each call instead of keeping a copy.
pub trait AccessTokenProvider: Send + Sync {
    /// The token to send now.
    fn get(&self) -> String;
}

/// Everything a runner gets for one task. All fields borrow from the daemon, which keeps them
/// alive for the duration of [`Runner::run`].
#[derive(Clone, Copy)]
pub struct TaskCtx<'a> {
    /// The lease and task being run.
    pub lease: &'a LeaseEnvelope,
    /// Fetches the task's inputs.
    pub input: &'a dyn InputSource,
    /// Stores the task's outputs.
    pub output: &'a dyn ArtifactSink,
    /// Cancellation, progress and events.
    pub ctrl: &'a dyn ControlPlane,
    /// The current bearer token, read-only and possibly rotating.
    pub access_token: &'a dyn AccessTokenProvider,
}

/// A capability implementation: the one trait a runner author writes.
#[async_trait]
pub trait Runner: Send + Sync {
    /// The capability this runner implements, for example `"/reconstruction/legacy/v1"`. The
    /// daemon gives the runner every task whose `capability` is equal to it.
    fn capability(&self) -> &'static str;

    /// Runs one task to the end. `Ok` completes the task (its outputs are what was written to
    /// `ctx.output`); `Err` fails it with the error's message as the reason.
    async fn run(&self, ctx: TaskCtx<'_>) -> Result<()>;
}
