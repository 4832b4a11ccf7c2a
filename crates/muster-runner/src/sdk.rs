//! Hosting runners written with `muster-runner-sdk`: the SDK's ports implemented over the
//! coordinator's HTTP API. Inputs are artifacts downloaded by id, outputs are artifacts uploaded
//! and recorded on the job, progress and events travel with job heartbeats and log batches, and
//! `is_cancelled` follows the coordinator's `cancel` and the lease.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use async_trait::async_trait;
use muster_client::RunnerClient;
use muster_runner_sdk::{
    AccessTokenProvider, ArtifactSink, ControlPlane, InputSource, LeaseEnvelope, MultipartUpload,
    Runner, TaskCtx,
};
use serde_json::Value;
use uuid::Uuid;

use crate::control::{JobContext, JobHandler};

/// Runs the jobs of one SDK [`Runner`]'s capability.
pub struct SdkHandler {
    runner: Arc<dyn Runner>,
    token: String,
    work_dir: PathBuf,
}

impl SdkHandler {
    /// `token` is what [`AccessTokenProvider::get`] hands the runner; scratch files go under
    /// `work_dir`.
    pub fn new(runner: Arc<dyn Runner>, token: String, work_dir: PathBuf) -> SdkHandler {
        SdkHandler {
            runner,
            token,
            work_dir,
        }
    }
}

fn lease_envelope(job: &JobContext, token: &str) -> Result<LeaseEnvelope> {
    let claimed = &job.claimed;
    let expires_at = claimed
        .lease
        .expires_at
        .format(&time::format_description::well_known::Rfc3339)
        .ok();
    let lease = serde_json::json!({
        "access_token": token,
        "lease_expires_at": expires_at,
        "cancel": false,
        "status": "leased",
        "task": {
            "id": claimed.id,
            "job_id": claimed.id,
            "capability": claimed.kind,
            "inputs_cids": claimed.inputs,
            "meta": claimed.payload,
            "attempts": claimed.attempt,
            "max_attempts": claimed.max_attempts,
            "lease_expires_at": expires_at,
            "status": "running",
        },
    });
    serde_json::from_value(lease).context("build the lease envelope")
}

#[async_trait]
impl JobHandler for SdkHandler {
    fn kind(&self) -> &str {
        self.runner.capability()
    }

    async fn run(&self, job: &JobContext) -> Result<Value> {
        let lease = lease_envelope(job, &self.token)?;
        std::fs::create_dir_all(&self.work_dir)
            .with_context(|| format!("create {}", self.work_dir.display()))?;
        let scratch = tempfile::Builder::new()
            .prefix(&format!("job-{}-", job.claimed.id))
            .tempdir_in(&self.work_dir)
            .context("create the job's scratch directory")?;
        let inputs = CoordinatorInputs {
            client: job.client.clone(),
            directory: scratch.path().to_path_buf(),
        };
        let outputs = CoordinatorArtifacts {
            job,
            recorded: Mutex::new(BTreeMap::new()),
            scratch: scratch.path().to_path_buf(),
        };
        let control = JobControlPlane {
            job,
            last_percent: Mutex::new(0.0),
        };
        let token = RunnerToken(self.token.clone());
        let context = TaskCtx {
            lease: &lease,
            input: &inputs,
            output: &outputs,
            ctrl: &control,
            access_token: &token,
        };
        self.runner.run(context).await?;
        let recorded = outputs
            .recorded
            .lock()
            .map(|recorded| recorded.clone())
            .unwrap_or_default();
        Ok(serde_json::json!({ "outputs": recorded }))
    }
}

struct RunnerToken(String);

impl AccessTokenProvider for RunnerToken {
    fn get(&self) -> String {
        self.0.clone()
    }
}

/// Inputs are artifacts of the coordinator, named by their content id.
struct CoordinatorInputs {
    client: RunnerClient,
    directory: PathBuf,
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

#[async_trait]
impl InputSource for CoordinatorInputs {
    async fn get_bytes_by_cid(&self, cid: &str) -> Result<Vec<u8>> {
        let bytes = self
            .client
            .download_artifact_bytes(cid)
            .await
            .with_context(|| format!("download input {cid}"))?;
        Ok(bytes.to_vec())
    }

    async fn materialize_cid_to_temp(&self, cid: &str) -> Result<PathBuf> {
        let path = self.directory.join(file_name_for(cid));
        self.client
            .download_artifact_to_file(cid, &path)
            .await
            .with_context(|| format!("download input {cid}"))?;
        Ok(path)
    }
}

/// Outputs are uploaded as artifacts and recorded on the job under their relative path.
struct CoordinatorArtifacts<'a> {
    job: &'a JobContext,
    recorded: Mutex<BTreeMap<String, String>>,
    scratch: PathBuf,
}

async fn record(
    client: &RunnerClient,
    job: Uuid,
    epoch: Option<u64>,
    rel_path: &str,
    artifact_id: &str,
) -> Result<()> {
    client
        .record_output(job, epoch, rel_path, artifact_id)
        .await
        .with_context(|| format!("record output {rel_path}"))?;
    Ok(())
}

impl CoordinatorArtifacts<'_> {
    fn remember(&self, rel_path: &str, id: &str) {
        if let Ok(mut recorded) = self.recorded.lock() {
            recorded.insert(rel_path.to_string(), id.to_string());
        }
    }
}

#[async_trait]
impl ArtifactSink for CoordinatorArtifacts<'_> {
    async fn put_bytes(&self, rel_path: &str, bytes: &[u8]) -> Result<()> {
        let artifact = self
            .job
            .client
            .upload_artifact_bytes(bytes.to_vec())
            .await
            .with_context(|| format!("upload output {rel_path}"))?;
        record(
            &self.job.client,
            self.job.claimed.id,
            self.job.epoch(),
            rel_path,
            &artifact.id,
        )
        .await?;
        self.remember(rel_path, &artifact.id);
        Ok(())
    }

    async fn put_file(&self, rel_path: &str, file_path: &Path) -> Result<()> {
        let artifact = self
            .job
            .client
            .upload_artifact_file(file_path)
            .await
            .with_context(|| format!("upload output {rel_path} from {}", file_path.display()))?;
        record(
            &self.job.client,
            self.job.claimed.id,
            self.job.epoch(),
            rel_path,
            &artifact.id,
        )
        .await?;
        self.remember(rel_path, &artifact.id);
        Ok(())
    }

    /// Chunks are spooled to a scratch file and streamed up on `finish`, so an upload of unknown
    /// size never sits in memory.
    async fn open_multipart(&self, rel_path: &str) -> Result<Box<dyn MultipartUpload>> {
        let spool = tempfile::NamedTempFile::new_in(&self.scratch)
            .context("create a spool file for a multipart upload")?;
        Ok(Box::new(SpooledUpload {
            spool,
            rel_path: rel_path.to_string(),
            client: self.job.client.clone(),
            job: self.job.claimed.id,
            epoch: self.job.epoch(),
        }))
    }
}

struct SpooledUpload {
    spool: tempfile::NamedTempFile,
    rel_path: String,
    client: RunnerClient,
    job: Uuid,
    epoch: Option<u64>,
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
        let artifact = upload
            .client
            .upload_artifact_file(upload.spool.path())
            .await
            .with_context(|| format!("upload output {}", upload.rel_path))?;
        record(
            &upload.client,
            upload.job,
            upload.epoch,
            &upload.rel_path,
            &artifact.id,
        )
        .await
    }
}

/// Progress and events of an SDK runner become job progress and log lines.
struct JobControlPlane<'a> {
    job: &'a JobContext,
    last_percent: Mutex<f64>,
}

#[async_trait]
impl ControlPlane for JobControlPlane<'_> {
    async fn is_cancelled(&self) -> bool {
        self.job.cancelled().is_cancelled()
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
        let percent = match percent {
            Some(percent) => {
                if let Ok(mut last) = self.last_percent.lock() {
                    *last = percent;
                }
                percent
            }
            None => self.last_percent.lock().map(|last| *last).unwrap_or(0.0),
        };
        self.job.set_progress(percent, message);
        Ok(())
    }

    async fn log_event(&self, fields: Value) -> Result<()> {
        self.job.log_event(fields);
        Ok(())
    }
}
