//! The parity scenarios with direct calls on the coordinator: what every front end must get
//! from the service, shown without any front end in between.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use muster_core::{Audience, ErrorCode, JobId, JobState, Principal, RunnerId, SystemClock};
use muster_service::jobs::JobSubmission;
use muster_service::protocol::{Claim, FailureReport, LeasedJob};
use muster_service::runners::RunnerRegistration;
use muster_service::{
    ArtifactQuotas, Coordinator, CoordinatorParts, DiskReserve, ServiceConfig, ServiceError,
};
use muster_store::blobs::LocalBlobStore;
use muster_test_support::parity::{self, FrontEnd, Granted, JobSummary};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const ADMIN_TOKEN: &str = "service-parity-admin-token-0123456789";

struct DirectCalls {
    coordinator: Coordinator,
    admin: Principal,
    _data: tempfile::TempDir,
}

/// A runner as the direct front end holds it: its token, resolved on every call as a front end
/// resolves the token of every request.
struct RunnerToken {
    id: RunnerId,
    token: String,
}

fn code(error: ServiceError) -> ErrorCode {
    error.code()
}

impl DirectCalls {
    async fn start() -> DirectCalls {
        let (data, store) = muster_test_support::temp_sqlite_store().expect("a store");
        let blobs = Arc::new(LocalBlobStore::new(data.path().join("blobs")));
        let config = ServiceConfig {
            max_artifact_bytes: 1 << 30,
            heartbeat_interval: Duration::from_secs(10),
            cancel_grace: Duration::from_secs(30),
            reap_interval: Duration::from_millis(250),
            retain_finished_jobs: None,
            retain_unused_artifacts: None,
            artifact_quotas: ArtifactQuotas {
                runner_bytes: None,
                runner_count: None,
                total_bytes: None,
                total_count: None,
                disk_reserve: DiskReserve::Bytes(0),
            },
            auth_failure_limit: None,
            enrollment_gate: muster_core::EnrollmentGate::default(),
            runner_token_ttl: Duration::from_secs(3600),
            session_ttl: Duration::from_secs(3600),
            runner_stream_lifetime: Duration::from_secs(1800),
        };
        let coordinator = Coordinator::new(CoordinatorParts {
            store,
            blobs,
            clock: Arc::new(SystemClock),
            config,
            admin_token: ADMIN_TOKEN.into(),
            shutdown: CancellationToken::new(),
        });
        let admin = coordinator
            .authenticate(ADMIN_TOKEN, Audience::Users, None)
            .await
            .expect("the admin token is the admin's");
        DirectCalls {
            coordinator,
            admin,
            _data: data,
        }
    }

    async fn runner(&self, runner: &RunnerToken) -> Result<Principal, ErrorCode> {
        self.coordinator
            .authenticate(&runner.token, Audience::Runners, None)
            .await
            .map_err(code)
    }
}

fn summary(view: muster_service::jobs::JobView) -> JobSummary {
    JobSummary {
        state: view.job.state(),
        attempt: view.job.lifecycle.attempt,
        result: view.job.result,
        error_reason: view.job.lifecycle.error.as_ref().map(|error| error.reason),
    }
}

fn granted(claimed: Vec<muster_store::ClaimedJob>) -> Vec<Granted> {
    claimed
        .into_iter()
        .map(|claimed| Granted {
            job: claimed.job.id.0,
            epoch: claimed.lease.epoch,
        })
        .collect()
}

fn leased(job: Uuid, epoch: Option<u64>) -> LeasedJob {
    LeasedJob {
        job: JobId(job),
        epoch,
    }
}

fn claim(kind: &str, max_jobs: u32, wait_ms: u64) -> Claim {
    Claim {
        kinds: vec![kind.to_string()],
        max_jobs: Some(max_jobs),
        wait_ms: Some(wait_ms),
        ..Default::default()
    }
}

#[async_trait]
impl FrontEnd for DirectCalls {
    type Runner = RunnerToken;

    async fn register_runner(&self, name: &str) -> Result<RunnerToken, ErrorCode> {
        let registered = self
            .coordinator
            .create_runner(
                &self.admin,
                RunnerRegistration {
                    name: name.into(),
                    ..Default::default()
                },
            )
            .await
            .map_err(code)?;
        Ok(RunnerToken {
            id: registered.view.runner.id,
            token: registered.token,
        })
    }

    async fn delete_runner(&self, runner: &RunnerToken) -> Result<(), ErrorCode> {
        self.coordinator
            .delete_runner(&self.admin, runner.id)
            .await
            .map_err(code)
    }

    async fn submit(
        &self,
        kind: &str,
        payload: Value,
        max_attempts: u32,
    ) -> Result<Uuid, ErrorCode> {
        let submission = JobSubmission {
            kind: kind.into(),
            payload: Some(payload),
            max_attempts: Some(max_attempts),
            ..Default::default()
        };
        let submitted = self
            .coordinator
            .submit(&self.admin, submission)
            .await
            .map_err(code)?;
        Ok(submitted.view.job.id.0)
    }

    async fn job(&self, job: Uuid) -> Result<JobSummary, ErrorCode> {
        let view = self
            .coordinator
            .get_job(&self.admin, JobId(job))
            .await
            .map_err(code)?;
        Ok(summary(view))
    }

    async fn cancel(&self, job: Uuid) -> Result<JobState, ErrorCode> {
        let view = self
            .coordinator
            .cancel_job(&self.admin, JobId(job))
            .await
            .map_err(code)?;
        Ok(view.job.state())
    }

    async fn retry(&self, job: Uuid) -> Result<JobState, ErrorCode> {
        let view = self
            .coordinator
            .retry_job(&self.admin, JobId(job))
            .await
            .map_err(code)?;
        Ok(view.job.state())
    }

    async fn log_messages(&self, job: Uuid) -> Result<Vec<String>, ErrorCode> {
        let page = self
            .coordinator
            .read_logs(&self.admin, JobId(job), None, None)
            .await
            .map_err(code)?;
        Ok(page.items.into_iter().map(|entry| entry.message).collect())
    }

    async fn claim(
        &self,
        runner: &RunnerToken,
        kind: &str,
        max_jobs: u32,
        wait_ms: u64,
    ) -> Result<Vec<Granted>, ErrorCode> {
        let principal = self.runner(runner).await?;
        let claimed = self
            .coordinator
            .claim(&principal, claim(kind, max_jobs, wait_ms))
            .await
            .map_err(code)?;
        Ok(granted(claimed))
    }

    async fn heartbeat_job(
        &self,
        runner: &RunnerToken,
        job: Uuid,
        epoch: Option<u64>,
    ) -> Result<bool, ErrorCode> {
        let principal = self.runner(runner).await?;
        let extended = self
            .coordinator
            .job_heartbeat(&principal, leased(job, epoch), None, Vec::new())
            .await
            .map_err(code)?;
        Ok(extended.cancel)
    }

    async fn append_log(
        &self,
        runner: &RunnerToken,
        job: Uuid,
        epoch: Option<u64>,
        message: &str,
    ) -> Result<bool, ErrorCode> {
        let principal = self.runner(runner).await?;
        let entry = muster_core::NewLogEntry {
            seq: None,
            level: muster_core::LogLevel::Info,
            message: message.into(),
            metadata: None,
        };
        let appended = self
            .coordinator
            .append_logs(&principal, leased(job, epoch), vec![entry])
            .await
            .map_err(code)?;
        Ok(appended.cancel)
    }

    async fn complete(
        &self,
        runner: &RunnerToken,
        job: Uuid,
        epoch: Option<u64>,
        result: Value,
    ) -> Result<(), ErrorCode> {
        let principal = self.runner(runner).await?;
        self.coordinator
            .complete(&principal, leased(job, epoch), result, Default::default())
            .await
            .map(|_| ())
            .map_err(code)
    }

    async fn fail(
        &self,
        runner: &RunnerToken,
        job: Uuid,
        epoch: Option<u64>,
        message: &str,
        retryable: bool,
    ) -> Result<JobState, ErrorCode> {
        let principal = self.runner(runner).await?;
        let report = FailureReport {
            message: Some(message.into()),
            reason: None,
            retryable: Some(retryable),
        };
        let view = self
            .coordinator
            .fail(&principal, leased(job, epoch), report)
            .await
            .map_err(code)?;
        Ok(view.job.state())
    }

    async fn submit_as_runner(&self, runner: &RunnerToken, kind: &str) -> Result<Uuid, ErrorCode> {
        // A front end resolves the token for the audience of the call it serves: a user call.
        let principal = self
            .coordinator
            .authenticate(&runner.token, Audience::Users, None)
            .await
            .map_err(code)?;
        let submission = JobSubmission {
            kind: kind.into(),
            ..Default::default()
        };
        let submitted = self
            .coordinator
            .submit(&principal, submission)
            .await
            .map_err(code)?;
        Ok(submitted.view.job.id.0)
    }

    async fn claim_as_admin(&self, kind: &str) -> Result<Vec<Granted>, ErrorCode> {
        let principal = self
            .coordinator
            .authenticate(ADMIN_TOKEN, Audience::Runners, None)
            .await
            .map_err(code)?;
        let claimed = self
            .coordinator
            .claim(&principal, claim(kind, 1, 0))
            .await
            .map_err(code)?;
        Ok(granted(claimed))
    }
}

#[tokio::test]
async fn every_parity_scenario_holds_on_direct_calls() {
    let front = DirectCalls::start().await;
    parity::run_all(&front).await.expect("the parity scenarios");
}

#[tokio::test]
async fn a_principal_of_the_other_audience_is_refused_by_every_method_not_only_at_the_door() {
    // Even a front end that forgot the audience check at authentication cannot get a runner
    // to submit or the admin to claim: each method authorizes its caller itself.
    let front = DirectCalls::start().await;
    let runner = front.register_runner("direct").await.expect("a runner");
    let as_runner = Principal::Runner(runner.id);
    let submitted = front
        .coordinator
        .submit(
            &as_runner,
            JobSubmission {
                kind: "direct".into(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(
        submitted.map(|_| ()).map_err(code),
        Err(ErrorCode::Forbidden)
    );
    let claimed = front
        .coordinator
        .claim(&Principal::BootstrapAdmin, claim("direct", 1, 0))
        .await;
    assert_eq!(claimed.map(|_| ()).map_err(code), Err(ErrorCode::Forbidden));
    let listed = front
        .coordinator
        .list_runners(&as_runner, Default::default(), None, None)
        .await;
    assert_eq!(listed.map(|_| ()).map_err(code), Err(ErrorCode::Forbidden));
}
