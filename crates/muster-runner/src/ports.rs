//! The SDK's ports for one task, over the daemon's [`Transport`]: inputs are artifacts fetched
//! by id, outputs are artifacts uploaded and recorded on the job under their relative path,
//! progress travels with job heartbeats, events and log lines become job log lines, and
//! cancellation follows the coordinator's `cancel`, the lease and this runner's shutdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use async_trait::async_trait;
use muster_runner_sdk::{
    AccessTokenProvider, ArtifactSink, ControlPlane, InputSource, LogLevel, MultipartUpload,
    TaskCtx,
};
use serde_json::Value;
use tempfile::TempDir;

use crate::task::TaskState;
use crate::transport::Transport;

/// The four ports of one task.
pub(crate) struct HostedTask {
    transport: Arc<dyn Transport>,
    task: Arc<TaskState>,
    work_dir: PathBuf,
    /// Made on first use under `work_dir` (inputs materialized to temporary files, spooled
    /// uploads) and removed with the task.
    scratch: Mutex<Option<TempDir>>,
}

impl HostedTask {
    pub(crate) fn new(
        transport: Arc<dyn Transport>,
        task: Arc<TaskState>,
        work_dir: PathBuf,
    ) -> HostedTask {
        HostedTask {
            transport,
            task,
            work_dir,
            scratch: Mutex::new(None),
        }
    }

    /// The context a runner gets, borrowing these ports and the task's lease.
    pub(crate) fn context(&self) -> TaskCtx<'_> {
        TaskCtx {
            lease: &self.task.lease,
            input: self,
            output: self,
            ctrl: self,
            access_token: self,
        }
    }

    async fn record_one(&self, rel_path: &str, id: String) -> Result<()> {
        record(
            self.transport.as_ref(),
            &self.task,
            one_output(rel_path, id),
            || format!("record output {rel_path}"),
        )
        .await
    }

    fn scratch(&self) -> Result<PathBuf> {
        let mut scratch = self
            .scratch
            .lock()
            .map_err(|_| anyhow::anyhow!("the task's scratch directory lock was poisoned"))?;
        if let Some(directory) = scratch.as_ref() {
            return Ok(directory.path().to_path_buf());
        }
        std::fs::create_dir_all(&self.work_dir)
            .with_context(|| format!("create {}", self.work_dir.display()))?;
        let directory = tempfile::Builder::new()
            .prefix(&format!("job-{}-", self.task.id()))
            .tempdir_in(&self.work_dir)
            .context("create the job's scratch directory")?;
        let path = directory.path().to_path_buf();
        *scratch = Some(directory);
        Ok(path)
    }
}

fn file_name_for(cid: &str) -> String {
    cid.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Record `outputs` on the task's job and remember them for its result.
async fn record(
    transport: &dyn Transport,
    task: &TaskState,
    outputs: BTreeMap<String, String>,
    what: impl FnOnce() -> String,
) -> Result<()> {
    let answer = transport.record_outputs(task.held, &outputs).await;
    task.heed(&answer);
    answer.with_context(what)?;
    task.remember_outputs(&outputs);
    Ok(())
}

fn one_output(rel_path: &str, id: String) -> BTreeMap<String, String> {
    BTreeMap::from([(rel_path.to_string(), id)])
}

#[async_trait]
impl InputSource for HostedTask {
    async fn get_bytes_by_cid(&self, cid: &str) -> Result<Vec<u8>> {
        self.transport
            .download_bytes(cid)
            .await
            .with_context(|| format!("download input {cid}"))
    }

    async fn materialize_cid_to_temp(&self, cid: &str) -> Result<PathBuf> {
        let path = self.scratch()?.join(file_name_for(cid));
        self.materialize_cid_to(cid, &path).await?;
        Ok(path)
    }

    async fn materialize_cid_to(&self, cid: &str, path: &Path) -> Result<()> {
        self.transport
            .download_to_file(cid, path)
            .await
            .with_context(|| format!("download input {cid}"))
    }
}

#[async_trait]
impl ArtifactSink for HostedTask {
    async fn put_bytes(&self, rel_path: &str, bytes: &[u8]) -> Result<()> {
        let uploaded = self.transport.upload_bytes(bytes.to_vec()).await;
        self.record_one(
            rel_path,
            uploaded.with_context(|| format!("upload output {rel_path}"))?,
        )
        .await
    }

    async fn put_file(&self, rel_path: &str, file_path: &Path) -> Result<()> {
        let uploaded = self.transport.upload_file(file_path).await;
        self.record_one(
            rel_path,
            uploaded.with_context(|| {
                format!("upload output {rel_path} from {}", file_path.display())
            })?,
        )
        .await
    }

    /// Every file is uploaded first, then all are recorded in one call.
    async fn put_files(&self, files: &[(String, PathBuf)]) -> Result<()> {
        let mut outputs = BTreeMap::new();
        for (rel_path, file_path) in files {
            let id = self
                .transport
                .upload_file(file_path)
                .await
                .with_context(|| format!("upload output {rel_path}"))?;
            outputs.insert(rel_path.clone(), id);
        }
        if outputs.is_empty() {
            return Ok(());
        }
        record(self.transport.as_ref(), &self.task, outputs, || {
            "record the job's outputs".to_string()
        })
        .await
    }

    /// Chunks are spooled to a scratch file and streamed up on `finish`, so an upload of unknown
    /// size never sits in memory.
    async fn open_multipart(&self, rel_path: &str) -> Result<Box<dyn MultipartUpload>> {
        let spool = tempfile::NamedTempFile::new_in(self.scratch()?)
            .context("create a spool file for a multipart upload")?;
        Ok(Box::new(SpooledUpload {
            spool,
            rel_path: rel_path.to_string(),
            transport: Arc::clone(&self.transport),
            task: Arc::clone(&self.task),
        }))
    }
}

struct SpooledUpload {
    spool: tempfile::NamedTempFile,
    rel_path: String,
    transport: Arc<dyn Transport>,
    task: Arc<TaskState>,
}

#[async_trait]
impl MultipartUpload for SpooledUpload {
    async fn write_chunk(&mut self, chunk: &[u8]) -> Result<()> {
        use std::io::Write;
        self.spool
            .write_all(chunk)
            .context("spool a multipart chunk")
    }

    async fn finish(self: Box<Self>) -> Result<()> {
        use std::io::Write;
        let mut upload = *self;
        upload.spool.flush().context("flush the spooled upload")?;
        let id = upload
            .transport
            .upload_file(upload.spool.path())
            .await
            .with_context(|| format!("upload output {}", upload.rel_path))?;
        let rel_path = upload.rel_path;
        record(
            upload.transport.as_ref(),
            &upload.task,
            one_output(&rel_path, id),
            || format!("record output {rel_path}"),
        )
        .await
    }
}

#[async_trait]
impl ControlPlane for HostedTask {
    async fn is_cancelled(&self) -> bool {
        self.task.cancelled().is_cancelled()
    }

    async fn wait_until_cancelled(&self) {
        self.task.cancelled().cancelled().await;
    }

    /// A number, or an object with `progress`/`percent` (0–100) and `message`/`status`; a value
    /// without a number keeps the last percent and becomes the progress message.
    async fn progress(&self, value: Value) -> Result<()> {
        let percent = value
            .as_f64()
            .or_else(|| value.get("progress").and_then(Value::as_f64))
            .or_else(|| value.get("percent").and_then(Value::as_f64));
        let message = value
            .get("message")
            .or_else(|| value.get("status"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| (percent.is_none()).then(|| value.to_string()));
        let percent = percent.unwrap_or_else(|| self.task.last_percent());
        self.task.set_progress(percent, message);
        Ok(())
    }

    async fn log_event(&self, fields: Value) -> Result<()> {
        self.task.log_event(fields);
        Ok(())
    }

    async fn log(&self, level: LogLevel, message: &str) -> Result<()> {
        self.task.log(level, message);
        Ok(())
    }

    async fn set_result(&self, value: Value) -> Result<()> {
        self.task.set_result(value);
        Ok(())
    }
}

/// The token the coordinator handed out with the lease.
impl AccessTokenProvider for HostedTask {
    fn get(&self) -> String {
        self.task.lease.access_token.clone().unwrap_or_default()
    }
}
