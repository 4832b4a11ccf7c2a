//! [`Transport`] over muster's HTTP API (`/api/v1/runner/*`) with `muster-client`'s
//! [`RunnerClient`]. This module is the only place in the daemon that names the client or the
//! wire types: every value crosses between them and the transport's domain types here.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use muster_client::api::{
    ClaimJobs, ClaimedJob, FailJob, JobHeartbeat, Lease, LogLevel as WireLogLevel,
    NewLogEntry as WireLogEntry, RunnerActivity, RunnerHeartbeat,
};
use muster_client::{ClientError, ClientTls, RunnerClient};
use muster_core::identity::RunnerSigningKey;
use muster_core::{ErrorCode, FailureReason, LogLevel, NewLogEntry, Progress};
use muster_runner_sdk::{LeaseEnvelope, TaskSpec};
use serde_json::Value;
use tokio::sync::Notify;

use crate::transport::{
    ClaimRequest, ClaimedTask, Failure, HeldLease, JobAck, LeaseRenewal, RunnerBeat,
    RunnerBeatAnswer, Transport, TransportError,
};

/// The coordinator at an `http://` or `https://` address, with a runner token.
#[derive(Clone)]
pub struct HttpTransport {
    client: RunnerClient,
    server: String,
    /// With a key, every completion is signed (the bakeoff envelope), naming the signer as
    /// this runner's id.
    signing: Option<(Arc<RunnerSigningKey>, String)>,
    /// Woken when the coordinator says the token expired, so whoever renews it (the key runner's
    /// renewal task) registers again at once instead of at its next turn.
    renewal: Option<Arc<Notify>>,
}

impl HttpTransport {
    /// `tls` says which authorities an `https://` server's certificate may come from. Fails
    /// when the address or the token cannot be used (a runner token starts with
    /// `muster_runner_`).
    pub fn new(
        server: &str,
        token: &str,
        tls: &ClientTls,
    ) -> Result<HttpTransport, TransportError> {
        let client = RunnerClient::with_tls(server, token, tls).map_err(from_client)?;
        Ok(HttpTransport {
            client,
            server: server.to_string(),
            signing: None,
            renewal: None,
        })
    }

    /// Sign every result with `key`, as the runner `runner_id` (the coordinator verifies it
    /// against the key the runner registered with).
    pub fn signing_results(mut self, key: Arc<RunnerSigningKey>, runner_id: String) -> Self {
        self.signing = Some((key, runner_id));
        self
    }

    /// Someone renews this transport's token (with [`HttpTransport::replace_token`]): an
    /// expired token then wakes `renewal` and is a transient refusal, retried once the renewed
    /// token is in, instead of the end of the runner.
    pub fn renewed_by(mut self, renewal: Arc<Notify>) -> Self {
        self.renewal = Some(renewal);
        self
    }

    /// The contract's error for a refused call, an expired token made transient (and its
    /// renewal woken) when the token is renewed.
    fn refusal(&self, error: ClientError) -> TransportError {
        if error.code() == Some(ErrorCode::TokenExpired)
            && let Some(renewal) = &self.renewal
        {
            renewal.notify_one();
            return TransportError::new(
                Some(ErrorCode::TokenExpired),
                true,
                format!("{error}; registering again with the runner's key"),
            );
        }
        from_client(error)
    }

    /// Use a renewed token from now on, for every call in flight or to come.
    pub fn replace_token(&self, token: &str) -> Result<(), TransportError> {
        self.client.replace_token(token).map_err(from_client)
    }
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("HttpTransport")
            .field("server", &self.server)
            .finish()
    }
}

fn from_client(error: ClientError) -> TransportError {
    TransportError::new(error.code(), error.is_transient(), error.to_string())
}

fn wire_level(level: LogLevel) -> WireLogLevel {
    match level {
        LogLevel::Trace => WireLogLevel::Trace,
        LogLevel::Debug => WireLogLevel::Debug,
        LogLevel::Info => WireLogLevel::Info,
        LogLevel::Warn => WireLogLevel::Warn,
        LogLevel::Error => WireLogLevel::Error,
    }
}

fn wire_reason(reason: FailureReason) -> muster_client::api::FailureReason {
    use muster_client::api::FailureReason as Wire;
    match reason {
        FailureReason::RunnerError => Wire::RunnerError,
        FailureReason::LeaseExpired => Wire::LeaseExpired,
        FailureReason::TimedOut => Wire::TimedOut,
        FailureReason::Cancelled => Wire::Cancelled,
    }
}

fn ttl_of(lease: &Lease) -> Duration {
    Duration::from_millis(lease.ttl_ms)
}

/// The claimed job as the SDK's lease envelope. The runner token rides along as the envelope's
/// access token, for runners that call the coordinator themselves.
fn claimed_task(job: ClaimedJob, token: &str) -> ClaimedTask {
    let expires_at = chrono::DateTime::from_timestamp_nanos(
        i64::try_from(job.lease.expires_at.unix_timestamp_nanos()).unwrap_or(i64::MAX),
    );
    let task = TaskSpec {
        job_id: Some(job.id),
        inputs_cids: job.inputs,
        meta: job.payload,
        attempts: Some(u64::from(job.attempt)),
        max_attempts: Some(u64::from(job.max_attempts)),
        status: Some("running".to_string()),
        lease_expires_at: Some(expires_at),
        ..TaskSpec::new(job.id, job.kind)
    };
    ClaimedTask {
        epoch: job.lease.epoch,
        ttl: ttl_of(&job.lease),
        lease: LeaseEnvelope {
            access_token: Some(token.to_string()),
            lease_expires_at: Some(expires_at),
            status: Some("leased".to_string()),
            ..LeaseEnvelope::new(task)
        },
    }
}

#[async_trait]
impl Transport for HttpTransport {
    fn describe(&self) -> String {
        self.server.clone()
    }

    async fn runner_heartbeat(
        &self,
        beat: &RunnerBeat,
    ) -> Result<RunnerBeatAnswer, TransportError> {
        let wire = RunnerHeartbeat {
            status: if beat.draining {
                RunnerActivity::Draining
            } else {
                RunnerActivity::Active
            },
            jobs: beat.jobs.clone(),
            hostname: beat.hostname.clone(),
            version: Some(beat.version.clone()),
        };
        let answer = self
            .client
            .heartbeat(&wire)
            .await
            .map_err(|error| self.refusal(error))?;
        Ok(RunnerBeatAnswer {
            interval: Duration::from_millis(answer.heartbeat_interval_ms),
            cancel: answer.cancel,
        })
    }

    async fn claim(&self, claim: &ClaimRequest) -> Result<Vec<ClaimedTask>, TransportError> {
        let wire = ClaimJobs {
            kinds: claim.kinds.clone(),
            labels: claim.labels.clone(),
            tags: claim.tags.clone(),
            resources: claim.resources.clone(),
            max_jobs: Some(claim.max_jobs),
            wait_ms: Some(u64::try_from(claim.wait.as_millis()).unwrap_or(u64::MAX)),
        };
        let claimed = self
            .client
            .claim_job(&wire)
            .await
            .map_err(|error| self.refusal(error))?;
        let token = self.client.token();
        Ok(claimed
            .into_iter()
            .map(|job| claimed_task(job, &token))
            .collect())
    }

    async fn job_heartbeat(
        &self,
        lease: HeldLease,
        progress: Option<&Progress>,
    ) -> Result<LeaseRenewal, TransportError> {
        let beat = JobHeartbeat {
            progress: progress.map(|progress| {
                serde_json::json!({"progress": progress.percent, "message": progress.message})
            }),
            events: None,
        };
        let answer = self
            .client
            .job_heartbeat(lease.job, Some(lease.epoch), &beat)
            .await
            .map_err(|error| self.refusal(error))?;
        Ok(LeaseRenewal {
            ttl: ttl_of(&answer.lease),
            cancel: answer.cancel,
        })
    }

    async fn append_logs(
        &self,
        lease: HeldLease,
        entries: &[NewLogEntry],
    ) -> Result<JobAck, TransportError> {
        let wire = entries
            .iter()
            .map(|entry| WireLogEntry {
                seq: entry.seq,
                level: wire_level(entry.level),
                message: entry.message.clone(),
                metadata: entry.metadata.clone(),
            })
            .collect();
        let answer = self
            .client
            .append_log(lease.job, Some(lease.epoch), wire)
            .await
            .map_err(|error| self.refusal(error))?;
        Ok(JobAck {
            cancel: answer.cancel,
        })
    }

    async fn record_outputs(
        &self,
        lease: HeldLease,
        outputs: &BTreeMap<String, String>,
    ) -> Result<JobAck, TransportError> {
        let answer = self
            .client
            .record_outputs(lease.job, Some(lease.epoch), outputs.clone())
            .await
            .map_err(|error| self.refusal(error))?;
        Ok(JobAck {
            cancel: answer.cancel,
        })
    }

    async fn complete(&self, lease: HeldLease, result: &Value) -> Result<(), TransportError> {
        let completed = match &self.signing {
            Some((key, runner_id)) => {
                let signed_at =
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let envelope = key.sign_result(result, runner_id, &signed_at);
                self.client
                    .complete_job_signed(lease.job, Some(lease.epoch), &envelope)
                    .await
            }
            None => {
                self.client
                    .complete_job(lease.job, Some(lease.epoch), result.clone())
                    .await
            }
        };
        completed.map(|_| ()).map_err(|error| self.refusal(error))
    }

    async fn fail(&self, lease: HeldLease, failure: &Failure) -> Result<(), TransportError> {
        let wire = FailJob {
            error: Some(failure.message.clone()),
            reason: Some(wire_reason(failure.reason)),
            retryable: Some(failure.retryable),
        };
        self.client
            .fail_job(lease.job, Some(lease.epoch), &wire)
            .await
            .map(|_| ())
            .map_err(|error| self.refusal(error))
    }

    async fn upload_bytes(&self, bytes: Vec<u8>) -> Result<String, TransportError> {
        let artifact = self
            .client
            .upload_artifact_bytes(bytes)
            .await
            .map_err(|error| self.refusal(error))?;
        Ok(artifact.id)
    }

    async fn upload_file(&self, path: &Path) -> Result<String, TransportError> {
        let artifact = self
            .client
            .upload_artifact_file(path)
            .await
            .map_err(|error| self.refusal(error))?;
        Ok(artifact.id)
    }

    async fn download_bytes(&self, id: &str) -> Result<Vec<u8>, TransportError> {
        let bytes = self
            .client
            .download_artifact_bytes(id)
            .await
            .map_err(|error| self.refusal(error))?;
        Ok(bytes.to_vec())
    }

    async fn download_to_file(&self, id: &str, path: &Path) -> Result<(), TransportError> {
        self.client
            .download_artifact_to_file(id, path)
            .await
            .map(|_| ())
            .map_err(|error| self.refusal(error))
    }
}
