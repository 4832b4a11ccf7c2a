//! The front-end parity scenarios (`muster_test_support::parity`) over real HTTP: the same
//! scenarios the service's own tests run with direct calls, here through routes, JSON and
//! status codes, so a rule the HTTP front end lost (or kept on its own) shows.

use async_trait::async_trait;
use muster_client::api::{
    ClaimJobs, CreateRunner, FailJob, JobHeartbeat, JobState as WireState, LogLevel, NewLogEntry,
    SubmitJob,
};
use muster_client::{ClientError, ErrorCode, MusterClient, RunnerClient};
use muster_core::{FailureReason, JobState};
use muster_test_support::TestServer;
use reqwest::Method;

use crate::support::{request, send};
use muster_test_support::parity::{self, FrontEnd, Granted, JobSummary};
use serde_json::Value;
use uuid::Uuid;

struct OverHttp {
    server: TestServer,
    admin: MusterClient,
}

struct HttpRunner {
    id: Uuid,
    client: RunnerClient,
    token: String,
}

fn code(error: ClientError) -> ErrorCode {
    error.code().unwrap_or(ErrorCode::Internal)
}

fn state(state: WireState) -> JobState {
    match state {
        WireState::Pending => JobState::Pending,
        WireState::Claimed => JobState::Claimed,
        WireState::Running => JobState::Running,
        WireState::Cancelling => JobState::Cancelling,
        WireState::Completed => JobState::Completed,
        WireState::Failed => JobState::Failed,
        WireState::Cancelled => JobState::Cancelled,
    }
}

fn granted(claimed: Vec<muster_client::api::ClaimedJob>) -> Vec<Granted> {
    claimed
        .into_iter()
        .map(|claimed| Granted {
            job: claimed.id,
            epoch: claimed.lease.epoch,
        })
        .collect()
}

fn claim(kind: &str, max_jobs: u32, wait_ms: u64) -> ClaimJobs {
    ClaimJobs {
        kinds: vec![kind.to_string()],
        max_jobs: Some(max_jobs),
        wait_ms: Some(wait_ms),
        ..Default::default()
    }
}

#[async_trait]
impl FrontEnd for OverHttp {
    type Runner = HttpRunner;

    async fn register_runner(&self, name: &str) -> Result<HttpRunner, ErrorCode> {
        let created = self
            .admin
            .create_runner(&CreateRunner {
                name: name.into(),
                ..Default::default()
            })
            .await
            .map_err(code)?;
        let client = RunnerClient::new(&self.server.base_url, &created.token).map_err(code)?;
        Ok(HttpRunner {
            id: created.runner.id,
            client,
            token: created.token,
        })
    }

    async fn delete_runner(&self, runner: &HttpRunner) -> Result<(), ErrorCode> {
        self.admin.delete_runner(runner.id).await.map_err(code)
    }

    async fn submit(
        &self,
        kind: &str,
        payload: Value,
        max_attempts: u32,
    ) -> Result<Uuid, ErrorCode> {
        let (job, _) = self
            .admin
            .submit_job(&SubmitJob {
                kind: kind.into(),
                payload: Some(payload),
                max_attempts: Some(max_attempts),
                ..Default::default()
            })
            .await
            .map_err(code)?;
        Ok(job.id)
    }

    async fn job(&self, job: Uuid) -> Result<JobSummary, ErrorCode> {
        let job = self.admin.get_job(job).await.map_err(code)?;
        Ok(JobSummary {
            state: state(job.state),
            attempt: job.attempt,
            result: job.result,
            error_reason: job.error.map(|error| match error.reason {
                muster_client::api::FailureReason::RunnerError => FailureReason::RunnerError,
                muster_client::api::FailureReason::LeaseExpired => FailureReason::LeaseExpired,
                muster_client::api::FailureReason::TimedOut => FailureReason::TimedOut,
                muster_client::api::FailureReason::Cancelled => FailureReason::Cancelled,
            }),
        })
    }

    async fn cancel(&self, job: Uuid) -> Result<JobState, ErrorCode> {
        Ok(state(self.admin.cancel_job(job).await.map_err(code)?.state))
    }

    async fn retry(&self, job: Uuid) -> Result<JobState, ErrorCode> {
        Ok(state(self.admin.retry_job(job).await.map_err(code)?.state))
    }

    async fn log_messages(&self, job: Uuid) -> Result<Vec<String>, ErrorCode> {
        let page = self.admin.job_logs(job, None, None).await.map_err(code)?;
        Ok(page.items.into_iter().map(|entry| entry.message).collect())
    }

    async fn claim(
        &self,
        runner: &HttpRunner,
        kind: &str,
        max_jobs: u32,
        wait_ms: u64,
    ) -> Result<Vec<Granted>, ErrorCode> {
        let claimed = runner
            .client
            .claim_job(&claim(kind, max_jobs, wait_ms))
            .await
            .map_err(code)?;
        Ok(granted(claimed))
    }

    async fn heartbeat_job(
        &self,
        runner: &HttpRunner,
        job: Uuid,
        epoch: Option<u64>,
    ) -> Result<bool, ErrorCode> {
        let answer = runner
            .client
            .job_heartbeat(job, epoch, &JobHeartbeat::default())
            .await
            .map_err(code)?;
        Ok(answer.cancel)
    }

    async fn append_log(
        &self,
        runner: &HttpRunner,
        job: Uuid,
        epoch: Option<u64>,
        message: &str,
    ) -> Result<bool, ErrorCode> {
        let entry = NewLogEntry {
            level: LogLevel::Info,
            message: message.into(),
            ..Default::default()
        };
        let appended = runner
            .client
            .append_log(job, epoch, vec![entry])
            .await
            .map_err(code)?;
        Ok(appended.cancel)
    }

    async fn complete(
        &self,
        runner: &HttpRunner,
        job: Uuid,
        epoch: Option<u64>,
        result: Value,
    ) -> Result<(), ErrorCode> {
        runner
            .client
            .complete_job(job, epoch, result)
            .await
            .map(|_| ())
            .map_err(code)
    }

    async fn fail(
        &self,
        runner: &HttpRunner,
        job: Uuid,
        epoch: Option<u64>,
        message: &str,
        retryable: bool,
    ) -> Result<JobState, ErrorCode> {
        let failed = runner
            .client
            .fail_job(
                job,
                epoch,
                &FailJob {
                    error: Some(message.into()),
                    reason: None,
                    retryable: Some(retryable),
                },
            )
            .await
            .map_err(code)?;
        Ok(state(failed.state))
    }

    async fn submit_as_runner(&self, runner: &HttpRunner, kind: &str) -> Result<Uuid, ErrorCode> {
        // A user route with the runner's token (the client crate refuses to send it there).
        let body = serde_json::json!({"kind": kind});
        let reply = raw_call(&self.server, "/api/v1/jobs", &runner.token, body).await?;
        reply["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .ok_or(ErrorCode::Internal)
    }

    async fn claim_as_admin(&self, kind: &str) -> Result<Vec<Granted>, ErrorCode> {
        // A runner route with the admin token.
        let body = serde_json::json!({"kinds": [kind]});
        raw_call(
            &self.server,
            "/api/v1/runner/claim",
            &self.server.admin_token,
            body,
        )
        .await?;
        Ok(Vec::new())
    }
}

/// `POST path` with `token` and a JSON body, past the client crate's own checks; answers the
/// body, or the error code the answer carries.
async fn raw_call(
    server: &TestServer,
    path: &str,
    token: &str,
    body: Value,
) -> Result<Value, ErrorCode> {
    let reply = send(request(server, Method::POST, path, Some(token)).json(&body)).await;
    if reply.status < 300 {
        return Ok(if reply.body.is_empty() {
            Value::Null
        } else {
            reply.json()
        });
    }
    let code = reply.json()["error"]["code"]
        .as_str()
        .and_then(ErrorCode::parse)
        .ok_or(ErrorCode::Internal)?;
    Err(code)
}

#[tokio::test]
async fn every_parity_scenario_holds_over_http() {
    let server = TestServer::start().await.expect("start a test server");
    let admin = server.client();
    let front = OverHttp { server, admin };
    parity::run_all(&front).await.expect("the parity scenarios");
}
