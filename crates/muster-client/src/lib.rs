//! A typed async client for muster's HTTP API v1.
//!
//! [`MusterClient`] speaks the user and admin routes with the admin token; [`RunnerClient`] speaks
//! the runner protocol with a runner token. Both answer the wire types of `muster-api` and turn
//! every non-2xx answer into a [`ClientError::Api`] carrying the contract's error code.
//!
//! ```no_run
//! # async fn example() -> Result<(), muster_client::ClientError> {
//! use muster_client::{MusterClient, api::SubmitJob};
//! let client = MusterClient::new("http://127.0.0.1:7070", "admin-token")?;
//! let (job, _created) = client
//!     .submit_job(&SubmitJob { kind: "exec".into(), ..Default::default() })
//!     .await?;
//! println!("{} is {:?}", job.id, job.state);
//! # Ok(()) }
//! ```
//!
//! Artifacts travel as streams both ways ([`MusterClient::upload_artifact_file`],
//! [`MusterClient::download_artifact_to_file`] and their stream forms): nothing here holds a
//! whole artifact in memory unless asked to (`*_bytes`).

mod artifacts;
mod registration;
mod tls;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

pub use artifacts::{ArtifactDownload, ArtifactStream, UploadError};
use bytes::Bytes;
pub use muster_api as api;
use muster_api::{
    Artifact, AttemptList, BulkJobs, BulkJobsOutcome, CancelFlag, ClaimJobs, ClaimedJob,
    ClaimedJobs, CompleteJob, CompleteJobs, CompletionOutcomes, CreateRunner, CreatedRunner, Dag,
    ErrorBody, FailJob, Job, JobCount, JobHeartbeat, JobHeartbeatResponse, JobList, JobState,
    JobSummary, LEASE_EPOCH_HEADER, LogAppended, LogBatch, LogPage, NewLogEntry, OutputsRecorded,
    ProgressReport, RecordOutputs, Runner, RunnerHeartbeat, RunnerHeartbeatResponse, RunnerList,
    SubmitJob, SubmitJobs,
};
pub use muster_core::ErrorCode;
pub use registration::{Registrar, RunnerDescription, signed_registration};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
pub use tls::{ClientTls, http_client_builder};
use uuid::Uuid;

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The coordinator answered with an error (the contract's `code` and `message`).
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The coordinator could not be reached, or the connection broke.
    #[error("could not reach the coordinator: {0}")]
    Transport(String),
    /// The answer was not what the contract promises.
    #[error("unexpected answer from the coordinator: {0}")]
    Decode(String),
    /// The client was given something unusable (a bad URL, a bad token).
    #[error("{0}")]
    Config(String),
    /// A local file (an artifact to upload, a download's target) could not be read or written.
    #[error("{0}")]
    Io(String),
}

impl ClientError {
    /// The contract's error code, for API errors with a code this client knows.
    pub fn code(&self) -> Option<ErrorCode> {
        self.code_text().and_then(ErrorCode::parse)
    }

    /// The error code as the coordinator spelled it, for API errors (known to this client or
    /// not).
    pub fn code_text(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, for API errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The lease on the job is gone: stop working on it.
    pub fn is_lease_lost(&self) -> bool {
        self.code() == Some(ErrorCode::LeaseLost)
    }

    /// The token is not accepted (unknown, revoked, or the wrong kind for the route).
    pub fn is_refused_token(&self) -> bool {
        matches!(
            self.code(),
            Some(ErrorCode::Unauthorized | ErrorCode::Forbidden)
        )
    }

    /// Worth retrying later: the coordinator was unreachable or said it is unavailable. An
    /// answer whose code this client does not know counts when it is a 5xx or a 429.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Api { status, .. } => match self.code() {
                Some(code) => code.is_transient(),
                None => *status == 429 || *status >= 500,
            },
            _ => false,
        }
    }
}

/// What every request needs: where, with which token.
#[derive(Clone)]
struct Connection {
    http: reqwest::Client,
    base_url: String,
    /// Shared by every clone, so a runner that renews its token renews it for all its calls.
    token: std::sync::Arc<std::sync::RwLock<String>>,
}

impl Connection {
    /// `base_url` without trailing slashes, or why it is not a coordinator's URL.
    fn checked_base_url(base_url: &str) -> Result<String, ClientError> {
        let base_url = base_url.trim().trim_end_matches('/').to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ClientError::Config(format!(
                "server URL '{base_url}' must start with http:// or https://"
            )));
        }
        Ok(base_url)
    }

    fn new(base_url: &str, token: &str, tls: &ClientTls) -> Result<Connection, ClientError> {
        let base_url = Connection::checked_base_url(base_url)?;
        if token.trim().is_empty() {
            return Err(ClientError::Config("the token is empty".into()));
        }
        let http = http_client_builder(&base_url, tls)?
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|error| ClientError::Config(format!("build HTTP client: {error}")))?;
        Ok(Connection {
            http,
            base_url,
            token: std::sync::Arc::new(std::sync::RwLock::new(token.trim().to_string())),
        })
    }

    fn current_token(&self) -> String {
        self.token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base_url, path))
            .bearer_auth(self.current_token())
    }

    async fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|error| ClientError::Transport(error_chain(&error)))?;
        refuse_unsuccessful(response).await
    }

    async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let response = self.send(request).await?;
        decode(response).await
    }
}

/// `response` when it succeeded, else the API error it carries.
async fn refuse_unsuccessful(response: Response) -> Result<Response, ClientError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let bytes = response
        .bytes()
        .await
        .map_err(|error| ClientError::Transport(error_chain(&error)))?;
    Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => ClientError::Api {
            status,
            code: body.error.code,
            message: body.error.message,
        },
        Err(_) => ClientError::Api {
            status,
            code: "unknown".into(),
            message: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
        },
    })
}

/// `text` as one path segment, percent-encoded.
fn path_segment(text: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
}

/// The route of one kind's settings.
/// The path of organization `id`'s route, the id percent-encoded.
fn organization_path(id: &str) -> String {
    format!("/api/v1/admin/organizations/{}", path_segment(id))
}

fn kind_path(kind: &str) -> String {
    format!("/api/v1/kinds/{}", path_segment(kind))
}

/// The `limit` and `cursor` query parameters of a list.
/// [`page_query`] with an `organization_id` filter when one is given.
fn organization_page_query(
    organization: Option<&str>,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut query = page_query(limit, cursor);
    if let Some(organization) = organization {
        query.push(("organization_id", organization.to_string()));
    }
    query
}

fn page_query(limit: Option<u32>, cursor: Option<&str>) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if let Some(limit) = limit {
        query.push(("limit", limit.to_string()));
    }
    if let Some(cursor) = cursor {
        query.push(("cursor", cursor.to_string()));
    }
    query
}

async fn decode<T: DeserializeOwned>(response: Response) -> Result<T, ClientError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|error| ClientError::Transport(error_chain(&error)))?;
    serde_json::from_slice(&bytes).map_err(|error| ClientError::Decode(error.to_string()))
}

/// The error and its causes on one line, with what to do about it when the cause is the
/// coordinator's certificate.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut hint = None;
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        hint = hint.or_else(|| tls::hint_for(cause));
        source = cause.source();
    }
    if let Some(hint) = hint {
        text.push_str(" (");
        text.push_str(hint);
        text.push(')');
    }
    text
}

/// Filters for [`MusterClient::list_workloads`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkloadQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner_id: Option<Uuid>,
    /// Any of these statuses, comma-separated (`running,failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

fn workload_path(id: &str) -> String {
    format!("/api/v1/workloads/{}", path_segment(id))
}

/// Filters for [`MusterClient::list_jobs`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// Created at or after this instant (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_after: Option<String>,
    /// Created before this instant (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// The user and admin API, with the admin token.
#[derive(Clone)]
pub struct MusterClient {
    connection: Connection,
}

impl MusterClient {
    /// A client trusting the system's certificate authorities for `https://` URLs.
    pub fn new(base_url: &str, admin_token: &str) -> Result<MusterClient, ClientError> {
        MusterClient::with_tls(base_url, admin_token, &ClientTls::system())
    }

    /// A client trusting what `tls` says for `https://` URLs.
    pub fn with_tls(
        base_url: &str,
        admin_token: &str,
        tls: &ClientTls,
    ) -> Result<MusterClient, ClientError> {
        Ok(MusterClient {
            connection: Connection::new(base_url, admin_token, tls)?,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.connection.base_url
    }

    /// Submit a job; `created` is false when its idempotency key was already used and the
    /// earlier job came back.
    pub async fn submit_job(&self, job: &SubmitJob) -> Result<(Job, bool), ClientError> {
        let response = self
            .connection
            .send(
                self.connection
                    .request(Method::POST, "/api/v1/jobs")
                    .json(job),
            )
            .await?;
        let created = response.status() == StatusCode::CREATED;
        Ok((decode(response).await?, created))
    }

    /// Submit up to 1000 jobs in one commit.
    pub async fn submit_jobs(&self, jobs: &[SubmitJob]) -> Result<Vec<Job>, ClientError> {
        let body = SubmitJobs {
            jobs: jobs.to_vec(),
        };
        let list: JobList = self
            .connection
            .json(
                self.connection
                    .request(Method::POST, "/api/v1/jobs/batch")
                    .json(&body),
            )
            .await?;
        Ok(list.items)
    }

    pub async fn list_jobs(&self, query: &JobQuery) -> Result<JobList, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::GET, "/api/v1/jobs")
                    .query(query),
            )
            .await
    }

    /// How many jobs match the filters of `query` (its paging is ignored), up to 10,000.
    pub async fn count_jobs(&self, query: &JobQuery) -> Result<JobCount, ClientError> {
        let filter = JobQuery {
            limit: None,
            cursor: None,
            ..query.clone()
        };
        self.connection
            .json(
                self.connection
                    .request(Method::GET, "/api/v1/jobs/count")
                    .query(&filter),
            )
            .await
    }

    /// Jobs by state and by kind (the overview's counts).
    pub async fn job_summary(&self) -> Result<JobSummary, ClientError> {
        self.connection
            .json(self.connection.request(Method::GET, "/api/v1/jobs/summary"))
            .await
    }

    /// One call of a bulk cancel or retry (for a filter, one page: call again with its
    /// `next_cursor` until it is `None`).
    pub async fn bulk_jobs(&self, request: &BulkJobs) -> Result<BulkJobsOutcome, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::POST, "/api/v1/jobs/bulk")
                    .json(request),
            )
            .await
    }

    pub async fn get_job(&self, id: Uuid) -> Result<Job, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::GET, &format!("/api/v1/jobs/{id}")),
            )
            .await
    }

    pub async fn cancel_job(&self, id: Uuid) -> Result<Job, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::POST, &format!("/api/v1/jobs/{id}/cancel")),
            )
            .await
    }

    pub async fn retry_job(&self, id: Uuid) -> Result<Job, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::POST, &format!("/api/v1/jobs/{id}/retry")),
            )
            .await
    }

    /// A page of the job's log: entries after `after_seq`.
    pub async fn job_logs(
        &self,
        id: Uuid,
        after_seq: Option<u64>,
        limit: Option<u32>,
    ) -> Result<LogPage, ClientError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(after) = after_seq {
            query.push(("after_seq", after.to_string()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        self.connection
            .json(
                self.connection
                    .request(Method::GET, &format!("/api/v1/jobs/{id}/logs"))
                    .query(&query),
            )
            .await
    }

    /// The raw response of the live log stream (`text/event-stream`), for callers that read
    /// server-sent events themselves.
    pub async fn follow_logs_response(
        &self,
        id: Uuid,
        after_seq: Option<u64>,
    ) -> Result<Response, ClientError> {
        let mut request = self
            .connection
            .request(Method::GET, &format!("/api/v1/jobs/{id}/logs"))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(after) = after_seq {
            request = request.query(&[("after_seq", after.to_string())]);
        }
        self.connection.send(request).await
    }

    /// Every attempt of the job, oldest first.
    pub async fn job_attempts(&self, id: Uuid) -> Result<AttemptList, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::GET, &format!("/api/v1/jobs/{id}/attempts")),
            )
            .await
    }

    pub async fn job_dag(&self, id: Uuid) -> Result<Dag, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::GET, &format!("/api/v1/jobs/{id}/dag")),
            )
            .await
    }

    /// Register a runner; the answer holds its token, shown this once.
    pub async fn create_runner(&self, runner: &CreateRunner) -> Result<CreatedRunner, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::POST, "/api/v1/runners")
                    .json(runner),
            )
            .await
    }

    pub async fn list_runners(
        &self,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<RunnerList, ClientError> {
        self.list_runners_of(None, limit, cursor).await
    }

    /// Runners of one organization (`None`: every runner the token sees), newest first.
    pub async fn list_runners_of(
        &self,
        organization: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<RunnerList, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::GET, "/api/v1/runners")
                    .query(&organization_page_query(organization, limit, cursor)),
            )
            .await
    }

    /// Record a workload a runner hosts.
    pub async fn create_workload(
        &self,
        workload: &muster_api::CreateWorkload,
    ) -> Result<muster_api::Workload, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::POST, "/api/v1/workloads")
                    .json(workload),
            )
            .await
    }

    pub async fn get_workload(&self, id: &str) -> Result<muster_api::Workload, ClientError> {
        self.connection
            .json(self.connection.request(Method::GET, &workload_path(id)))
            .await
    }

    /// Workloads, newest first, a page at a time.
    pub async fn list_workloads(
        &self,
        query: &WorkloadQuery,
    ) -> Result<muster_api::WorkloadList, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::GET, "/api/v1/workloads")
                    .query(query),
            )
            .await
    }

    /// Report a workload's status (and its containers).
    pub async fn update_workload_status(
        &self,
        id: &str,
        update: &muster_api::UpdateWorkloadStatus,
    ) -> Result<muster_api::Workload, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::POST, &format!("{}/status", workload_path(id)))
                    .json(update),
            )
            .await
    }

    pub async fn delete_workload(&self, id: &str) -> Result<(), ClientError> {
        self.connection
            .send(self.connection.request(Method::DELETE, &workload_path(id)))
            .await?;
        Ok(())
    }

    /// A workload's status changes, oldest first.
    pub async fn workload_history(
        &self,
        id: &str,
    ) -> Result<muster_api::WorkloadHistory, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::GET, &format!("{}/history", workload_path(id))),
            )
            .await
    }

    pub async fn get_runner(&self, id: Uuid) -> Result<Runner, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::GET, &format!("/api/v1/runners/{id}")),
            )
            .await
    }

    pub async fn delete_runner(&self, id: Uuid) -> Result<(), ClientError> {
        self.connection
            .send(
                self.connection
                    .request(Method::DELETE, &format!("/api/v1/runners/{id}")),
            )
            .await?;
        Ok(())
    }

    /// Approve a runner waiting for approval: it is enrolled and its key joins the allowlist.
    pub async fn approve_runner(&self, id: Uuid) -> Result<Runner, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::POST, &format!("/api/v1/runners/{id}/approve")),
            )
            .await
    }

    /// Reject a runner: its tokens and leases go, and its key leaves the allowlist.
    pub async fn reject_runner(&self, id: Uuid) -> Result<Runner, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::POST, &format!("/api/v1/runners/{id}/reject")),
            )
            .await
    }

    /// Set `kind`'s result rules, replacing any it had.
    pub async fn put_kind_settings(
        &self,
        kind: &str,
        settings: &api::SetKindSettings,
    ) -> Result<api::KindSettings, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::PUT, &kind_path(kind))
                    .json(settings),
            )
            .await
    }

    /// `kind`'s result rules (`not_found` when it has none).
    pub async fn get_kind_settings(&self, kind: &str) -> Result<api::KindSettings, ClientError> {
        self.connection
            .json(self.connection.request(Method::GET, &kind_path(kind)))
            .await
    }

    /// Every kind's result rules, by kind name.
    pub async fn list_kind_settings(
        &self,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<api::KindSettingsList, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::GET, "/api/v1/kinds")
                    .query(&page_query(limit, cursor)),
            )
            .await
    }

    /// Remove `kind`'s result rules.
    pub async fn delete_kind_settings(&self, kind: &str) -> Result<(), ClientError> {
        self.connection
            .send(self.connection.request(Method::DELETE, &kind_path(kind)))
            .await?;
        Ok(())
    }

    /// Create an organization (bootstrap admin token); its id is made from its name.
    pub async fn create_organization(
        &self,
        organization: &api::CreateOrganization,
    ) -> Result<api::Organization, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::POST, "/api/v1/admin/organizations")
                    .json(organization),
            )
            .await
    }

    /// One organization (`organization_not_found` when there is none).
    pub async fn get_organization(&self, id: &str) -> Result<api::Organization, ClientError> {
        self.connection
            .json(self.connection.request(Method::GET, &organization_path(id)))
            .await
    }

    /// Organizations, oldest first.
    pub async fn list_organizations(
        &self,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<api::OrganizationList, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::GET, "/api/v1/admin/organizations")
                    .query(&page_query(limit, cursor)),
            )
            .await
    }

    /// Delete an organization nothing unfinished is left in.
    pub async fn delete_organization(&self, id: &str) -> Result<(), ClientError> {
        self.connection
            .send(
                self.connection
                    .request(Method::DELETE, &organization_path(id)),
            )
            .await?;
        Ok(())
    }

    /// Mint a user token (admin role); the answer holds the token, shown this once.
    pub async fn create_user_token(
        &self,
        token: &api::CreateUserToken,
    ) -> Result<api::CreatedUserToken, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::POST, "/api/v1/admin/tokens")
                    .json(token),
            )
            .await
    }

    /// User tokens, oldest first: of one organization, or all the token sees.
    pub async fn list_user_tokens(
        &self,
        organization: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<api::UserTokenList, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::GET, "/api/v1/admin/tokens")
                    .query(&organization_page_query(organization, limit, cursor)),
            )
            .await
    }

    /// Revoke a user token by its id: it fails from the next request on.
    pub async fn revoke_user_token(&self, id: Uuid) -> Result<(), ClientError> {
        self.connection
            .send(
                self.connection
                    .request(Method::DELETE, &format!("/api/v1/admin/tokens/{id}")),
            )
            .await?;
        Ok(())
    }

    /// Who this client's token is: its kind, role and organization.
    pub async fn whoami(&self) -> Result<api::WhoAmI, ClientError> {
        self.connection
            .json(self.connection.request(Method::GET, "/api/v1/whoami"))
            .await
    }

    /// Put a runner key on the allowlist; `true` when it was not there before.
    pub async fn add_runner_key(
        &self,
        key: &api::AddRunnerKey,
    ) -> Result<(api::RunnerKey, bool), ClientError> {
        let response = self
            .connection
            .send(
                self.connection
                    .request(Method::POST, "/api/v1/admin/runner-keys")
                    .json(key),
            )
            .await?;
        let created = response.status() == StatusCode::CREATED;
        Ok((decode(response).await?, created))
    }

    /// The allowlist of runner keys, oldest first.
    pub async fn list_runner_keys(
        &self,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<api::RunnerKeyList, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::GET, "/api/v1/admin/runner-keys")
                    .query(&page_query(limit, cursor)),
            )
            .await
    }

    /// Take the key with `fingerprint` (`sha256:...`) off the allowlist.
    pub async fn remove_runner_key(&self, fingerprint: &str) -> Result<(), ClientError> {
        let path = format!("/api/v1/admin/runner-keys/{}", path_segment(fingerprint));
        self.connection
            .send(self.connection.request(Method::DELETE, &path))
            .await?;
        Ok(())
    }

    /// The audit log newest first, optionally one action only.
    pub async fn list_audit(
        &self,
        action: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<api::AuditList, ClientError> {
        self.list_audit_of(None, action, limit, cursor).await
    }

    /// The audit log of one organization (`None`: every entry the token may read), newest
    /// first, optionally one action only.
    pub async fn list_audit_of(
        &self,
        organization: Option<&str>,
        action: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<api::AuditList, ClientError> {
        let mut query = organization_page_query(organization, limit, cursor);
        if let Some(action) = action {
            query.push(("action", action.to_string()));
        }
        self.connection
            .json(
                self.connection
                    .request(Method::GET, "/api/v1/admin/audit")
                    .query(&query),
            )
            .await
    }

    /// Upload an artifact from a stream of byte chunks; answers its id and size. The
    /// coordinator stores the same bytes once: uploading them again answers the same id.
    pub async fn upload_artifact<S>(&self, chunks: S) -> Result<Artifact, ClientError>
    where
        S: futures::TryStream + Send + 'static,
        S::Error: Into<UploadError>,
        Bytes: From<S::Ok>,
    {
        artifacts::upload_stream(&self.connection, artifacts::USER_PATH, chunks, None).await
    }

    /// Upload a file, streamed from disk (its size is sent first, so an artifact over the
    /// coordinator's limit is refused before any of it travels).
    pub async fn upload_artifact_file(&self, path: &Path) -> Result<Artifact, ClientError> {
        artifacts::upload_file(&self.connection, artifacts::USER_PATH, path).await
    }

    /// Upload bytes already in memory.
    pub async fn upload_artifact_bytes(
        &self,
        bytes: impl Into<Bytes>,
    ) -> Result<Artifact, ClientError> {
        artifacts::upload_bytes(&self.connection, artifacts::USER_PATH, bytes.into()).await
    }

    /// Start downloading an artifact: its size and a stream of its bytes. The stream is not
    /// checked against the id; [`MusterClient::download_artifact_to_file`] and
    /// [`MusterClient::download_artifact_bytes`] are.
    pub async fn download_artifact(&self, id: &str) -> Result<ArtifactDownload, ClientError> {
        artifacts::download(&self.connection, artifacts::USER_PATH, id).await
    }

    /// Download an artifact into memory, checked against its id.
    pub async fn download_artifact_bytes(&self, id: &str) -> Result<Bytes, ClientError> {
        artifacts::download_bytes(&self.connection, artifacts::USER_PATH, id).await
    }

    /// Download an artifact to `path`, streamed and checked against its id. The file appears
    /// complete or not at all (it is written beside `path` and renamed). Answers its size.
    pub async fn download_artifact_to_file(
        &self,
        id: &str,
        path: &Path,
    ) -> Result<u64, ClientError> {
        artifacts::download_to_file(&self.connection, artifacts::USER_PATH, id, path).await
    }

    /// `GET /readyz`: whether the coordinator's store answers.
    pub async fn ready(&self) -> Result<(), ClientError> {
        self.connection
            .send(
                self.connection
                    .http
                    .get(format!("{}/readyz", self.connection.base_url)),
            )
            .await?;
        Ok(())
    }

    /// `GET /metrics`, as Prometheus text.
    pub async fn metrics_text(&self) -> Result<String, ClientError> {
        let response = self
            .connection
            .send(
                self.connection
                    .http
                    .get(format!("{}/metrics", self.connection.base_url)),
            )
            .await?;
        response
            .text()
            .await
            .map_err(|error| ClientError::Transport(error_chain(&error)))
    }
}

/// The runner protocol, with a runner token. Job-scoped methods take the lease epoch the claim
/// gave; a call after the lease was lost fails with [`ClientError::is_lease_lost`].
#[derive(Clone)]
pub struct RunnerClient {
    connection: Connection,
}

impl RunnerClient {
    /// A client trusting the system's certificate authorities for `https://` URLs.
    pub fn new(base_url: &str, runner_token: &str) -> Result<RunnerClient, ClientError> {
        RunnerClient::with_tls(base_url, runner_token, &ClientTls::system())
    }

    /// A client trusting what `tls` says for `https://` URLs.
    pub fn with_tls(
        base_url: &str,
        runner_token: &str,
        tls: &ClientTls,
    ) -> Result<RunnerClient, ClientError> {
        if !runner_token
            .trim()
            .starts_with(muster_api::RUNNER_TOKEN_PREFIX)
        {
            return Err(ClientError::Config(format!(
                "a runner token starts with '{}'",
                muster_api::RUNNER_TOKEN_PREFIX
            )));
        }
        Ok(RunnerClient {
            connection: Connection::new(base_url, runner_token, tls)?,
        })
    }

    /// Use `token` from now on, for this client and every clone of it (a runner that renewed
    /// its token by registering again).
    pub fn replace_token(&self, token: &str) -> Result<(), ClientError> {
        if !token.trim().starts_with(muster_api::RUNNER_TOKEN_PREFIX) {
            return Err(ClientError::Config(format!(
                "a runner token starts with '{}'",
                muster_api::RUNNER_TOKEN_PREFIX
            )));
        }
        *self
            .connection
            .token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = token.trim().to_string();
        Ok(())
    }

    /// The token this client sends now.
    pub fn token(&self) -> String {
        self.connection.current_token()
    }

    fn job_request(
        &self,
        method: Method,
        id: Uuid,
        action: &str,
        epoch: Option<u64>,
    ) -> RequestBuilder {
        let request = self
            .connection
            .request(method, &format!("/api/v1/runner/jobs/{id}/{action}"));
        match epoch {
            Some(epoch) => request.header(LEASE_EPOCH_HEADER, epoch.to_string()),
            None => request,
        }
    }

    /// Record a workload this runner hosts (`runner_id` must be this runner's).
    pub async fn record_workload(
        &self,
        workload: &muster_api::CreateWorkload,
    ) -> Result<muster_api::Workload, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::POST, "/api/v1/runner/workloads")
                    .json(workload),
            )
            .await
    }

    /// Report the status (and containers) of a workload this runner hosts.
    pub async fn report_workload(
        &self,
        id: &str,
        update: &muster_api::UpdateWorkloadStatus,
    ) -> Result<muster_api::Workload, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(
                        Method::POST,
                        &format!("/api/v1/runner/workloads/{}/status", path_segment(id)),
                    )
                    .json(update),
            )
            .await
    }

    /// Remove a workload this runner hosted.
    pub async fn remove_workload(&self, id: &str) -> Result<(), ClientError> {
        self.connection
            .send(self.connection.request(
                Method::DELETE,
                &format!("/api/v1/runner/workloads/{}", path_segment(id)),
            ))
            .await?;
        Ok(())
    }

    /// Tell the coordinator this runner is alive; answers the jobs to stop and when to beat next.
    pub async fn heartbeat(
        &self,
        beat: &RunnerHeartbeat,
    ) -> Result<RunnerHeartbeatResponse, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::POST, "/api/v1/runner/heartbeat")
                    .json(beat),
            )
            .await
    }

    /// Claim jobs; empty when none came within `wait_ms`.
    pub async fn claim_job(&self, claim: &ClaimJobs) -> Result<Vec<ClaimedJob>, ClientError> {
        let response = self
            .connection
            .send(
                self.connection
                    .request(Method::POST, "/api/v1/runner/claim")
                    .json(claim),
            )
            .await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(Vec::new());
        }
        let claimed: ClaimedJobs = decode(response).await?;
        Ok(claimed.jobs)
    }

    /// Extend the lease, optionally with progress and log events.
    pub async fn job_heartbeat(
        &self,
        id: Uuid,
        epoch: Option<u64>,
        beat: &JobHeartbeat,
    ) -> Result<JobHeartbeatResponse, ClientError> {
        self.connection
            .json(
                self.job_request(Method::POST, id, "heartbeat", epoch)
                    .json(beat),
            )
            .await
    }

    pub async fn report_progress(
        &self,
        id: Uuid,
        epoch: Option<u64>,
        progress: f64,
        message: Option<String>,
    ) -> Result<CancelFlag, ClientError> {
        let body = ProgressReport { progress, message };
        self.connection
            .json(
                self.job_request(Method::PUT, id, "progress", epoch)
                    .json(&body),
            )
            .await
    }

    pub async fn append_log(
        &self,
        id: Uuid,
        epoch: Option<u64>,
        entries: Vec<NewLogEntry>,
    ) -> Result<LogAppended, ClientError> {
        let body = LogBatch { entries };
        self.connection
            .json(self.job_request(Method::POST, id, "log", epoch).json(&body))
            .await
    }

    pub async fn complete_job(
        &self,
        id: Uuid,
        epoch: Option<u64>,
        result: serde_json::Value,
    ) -> Result<Job, ClientError> {
        let body = CompleteJob {
            result: Some(result),
            outputs: None,
            sig: None,
        };
        self.connection
            .json(
                self.job_request(Method::POST, id, "complete", epoch)
                    .json(&body),
            )
            .await
    }

    /// Complete a job with a signed result: `envelope` is the bakeoff envelope
    /// `{"result", "sig"}` (as `RunnerSigningKey::sign_result` makes it), sent as it is.
    pub async fn complete_job_signed(
        &self,
        id: Uuid,
        epoch: Option<u64>,
        envelope: &serde_json::Value,
    ) -> Result<Job, ClientError> {
        self.connection
            .json(
                self.job_request(Method::POST, id, "complete", epoch)
                    .json(envelope),
            )
            .await
    }

    /// Complete a job and record `outputs` (name to artifact id) in the same commit.
    pub async fn complete_job_with_outputs(
        &self,
        id: Uuid,
        epoch: Option<u64>,
        result: serde_json::Value,
        outputs: BTreeMap<String, String>,
    ) -> Result<Job, ClientError> {
        let body = CompleteJob {
            result: Some(result),
            outputs: Some(outputs),
            sig: None,
        };
        self.connection
            .json(
                self.job_request(Method::POST, id, "complete", epoch)
                    .json(&body),
            )
            .await
    }

    /// Record artifacts (uploaded first) as the job's outputs, by name; a name recorded again
    /// names the new artifact. Answers every output the job now has and whether to stop.
    pub async fn record_outputs(
        &self,
        id: Uuid,
        epoch: Option<u64>,
        outputs: BTreeMap<String, String>,
    ) -> Result<OutputsRecorded, ClientError> {
        let body = RecordOutputs {
            outputs: Some(outputs),
            ..Default::default()
        };
        self.connection
            .json(
                self.job_request(Method::POST, id, "outputs", epoch)
                    .json(&body),
            )
            .await
    }

    /// Record one output.
    pub async fn record_output(
        &self,
        id: Uuid,
        epoch: Option<u64>,
        name: &str,
        artifact_id: &str,
    ) -> Result<OutputsRecorded, ClientError> {
        let body = RecordOutputs {
            name: Some(name.to_string()),
            artifact_id: Some(artifact_id.to_string()),
            outputs: None,
        };
        self.connection
            .json(
                self.job_request(Method::POST, id, "outputs", epoch)
                    .json(&body),
            )
            .await
    }

    /// Upload an artifact from a stream of byte chunks (for example a job's output).
    pub async fn upload_artifact<S>(&self, chunks: S) -> Result<Artifact, ClientError>
    where
        S: futures::TryStream + Send + 'static,
        S::Error: Into<UploadError>,
        Bytes: From<S::Ok>,
    {
        artifacts::upload_stream(&self.connection, artifacts::RUNNER_PATH, chunks, None).await
    }

    /// Upload a file, streamed from disk.
    pub async fn upload_artifact_file(&self, path: &Path) -> Result<Artifact, ClientError> {
        artifacts::upload_file(&self.connection, artifacts::RUNNER_PATH, path).await
    }

    /// Upload bytes already in memory.
    pub async fn upload_artifact_bytes(
        &self,
        bytes: impl Into<Bytes>,
    ) -> Result<Artifact, ClientError> {
        artifacts::upload_bytes(&self.connection, artifacts::RUNNER_PATH, bytes.into()).await
    }

    /// Start downloading an artifact (for example a job's input); not checked against its id.
    pub async fn download_artifact(&self, id: &str) -> Result<ArtifactDownload, ClientError> {
        artifacts::download(&self.connection, artifacts::RUNNER_PATH, id).await
    }

    /// Download an artifact into memory, checked against its id.
    pub async fn download_artifact_bytes(&self, id: &str) -> Result<Bytes, ClientError> {
        artifacts::download_bytes(&self.connection, artifacts::RUNNER_PATH, id).await
    }

    /// Download an artifact to `path`, streamed and checked against its id; answers its size.
    pub async fn download_artifact_to_file(
        &self,
        id: &str,
        path: &Path,
    ) -> Result<u64, ClientError> {
        artifacts::download_to_file(&self.connection, artifacts::RUNNER_PATH, id, path).await
    }

    /// Complete many jobs in one commit; one outcome per item, in order.
    pub async fn complete_jobs(
        &self,
        batch: &CompleteJobs,
    ) -> Result<CompletionOutcomes, ClientError> {
        self.connection
            .json(
                self.connection
                    .request(Method::POST, "/api/v1/runner/complete")
                    .json(batch),
            )
            .await
    }

    pub async fn fail_job(
        &self,
        id: Uuid,
        epoch: Option<u64>,
        failure: &FailJob,
    ) -> Result<Job, ClientError> {
        self.connection
            .json(
                self.job_request(Method::POST, id, "fail", epoch)
                    .json(failure),
            )
            .await
    }

    pub async fn sync_dag(
        &self,
        id: Uuid,
        epoch: Option<u64>,
        dag: &Dag,
    ) -> Result<CancelFlag, ClientError> {
        self.connection
            .json(self.job_request(Method::PUT, id, "dag", epoch).json(dag))
            .await
    }
}
