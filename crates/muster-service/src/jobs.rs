//! Users' calls on jobs: submit (one or a batch), list, show (with why a pending job waits),
//! cancel, retry, read and follow the log, read the DAG.

use futures::Stream;
use muster_core::JobOrganization;
use muster_core::limits::{
    DEFAULT_LOG_PAGE_LIMIT, DEFAULT_PAGE_LIMIT, MAX_BATCH_SUBMIT, MAX_LOG_PAGE_LIMIT,
    MAX_PAGE_LIMIT,
};
use muster_core::organization::DEFAULT_ORGANIZATION;
use muster_core::{
    Action, ArtifactId, Capabilities, JobId, JobPolicy, JobRecord, JobSpec, JobState, LogEntry,
    NewJob, PendingReason, Principal, RunnerSnapshot, Timestamp, authorize, pending_reason,
};
use muster_store::PageRequest;
/// Which jobs a list shows (by state, kind, runner), and a page of answers.
pub use muster_store::{JobFilter, Page};
use rand::Rng;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

use crate::{Coordinator, ServiceError};

/// A job as a submitter asks for it: what is not given takes its default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSubmission {
    pub kind: String,
    pub payload: Option<Value>,
    pub priority: Option<i32>,
    pub requirements: Option<Capabilities>,
    pub max_attempts: Option<u32>,
    pub timeout_s: Option<u32>,
    pub lease_ttl_s: Option<u32>,
    pub backoff_base_s: Option<u32>,
    pub run_after: Option<Timestamp>,
    pub idempotency_key: Option<String>,
    /// Artifacts the job reads, in order; each must be stored.
    pub inputs: Vec<ArtifactId>,
    /// The organization the job is for (`default` when not given); it must exist.
    pub organization_id: Option<String>,
}

/// A job as users see it: its record and, while pending, why nothing takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    pub job: JobRecord,
    pub pending_reason: Option<PendingReason>,
}

/// A submitted job and whether it is new (false: an earlier job with the same idempotency key).
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub view: JobView,
    pub created: bool,
}

/// Which jobs a list shows, and which page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobQuery {
    pub filter: JobFilter,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A page of a job's log and where the next read continues.
#[derive(Debug, Clone, PartialEq)]
pub struct LogPage {
    pub items: Vec<LogEntry>,
    pub next_seq: u64,
}

/// What a live log stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum LogStreamEvent {
    /// An entry, in `seq` order.
    Entry(LogEntry),
    /// The job is finished and its log drained: the stream ends after this. `state` is `None`
    /// when the job was deleted meanwhile.
    End { job: JobId, state: Option<JobState> },
    /// The log could not be read; the stream ends after this.
    Failed(ServiceError),
}

/// What a live stream of one job yields.
#[derive(Debug, Clone, PartialEq)]
pub enum JobStreamEvent {
    /// The job as it is now: first at once, then after each change.
    Job(Box<JobView>),
    /// The job is finished (or was deleted): the stream ends after this.
    End,
    /// The job could not be read; the stream ends after this.
    Failed(ServiceError),
}

/// How a live log stream ended.
enum StreamEnd {
    /// Its caller went away.
    Gone,
    /// The job is finished and its log was sent to the end.
    Finished,
    Failed(ServiceError),
}

/// A list page request: `limit` within its bounds (the default when `None`), an empty cursor
/// as none.
pub fn page_request(
    limit: Option<u32>,
    cursor: Option<String>,
) -> Result<PageRequest, ServiceError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if limit == 0 || limit > MAX_PAGE_LIMIT {
        return Err(ServiceError::invalid_input(format!(
            "query parameter 'limit': must be between 1 and {MAX_PAGE_LIMIT}"
        )));
    }
    Ok(PageRequest {
        limit,
        cursor: cursor.filter(|cursor| !cursor.is_empty()),
    })
}

impl Coordinator {
    /// Explain why each pending job waits; other jobs as they are.
    pub(crate) async fn views(&self, jobs: Vec<JobRecord>) -> Vec<JobView> {
        let needs_reasons = jobs.iter().any(|job| job.state() == JobState::Pending);
        let runners = if needs_reasons {
            Some(self.runner_view.snapshots(self).await)
        } else {
            None
        };
        let now = self.clock.now();
        jobs.into_iter()
            .map(|job| explain(job, runners.as_deref().map(Vec::as_slice), now))
            .collect()
    }

    pub(crate) async fn view(&self, job: JobRecord) -> JobView {
        let runners = if job.state() == JobState::Pending {
            Some(self.runner_view.snapshots(self).await)
        } else {
            None
        };
        explain(job, runners.as_deref().map(Vec::as_slice), self.clock.now())
    }

    /// The organization a submission names (`default` when none), as its job records it; a
    /// name that is no organization answers `organization_not_found`. `known` keeps those read
    /// already, so a batch reads each organization once.
    async fn job_organization(
        &self,
        asked: Option<&str>,
        known: &mut HashMap<String, JobOrganization>,
    ) -> Result<JobOrganization, ServiceError> {
        let Some(id) = asked.filter(|id| *id != DEFAULT_ORGANIZATION) else {
            // The default organization always exists and always lets shared runners in.
            return Ok(JobOrganization::default());
        };
        if let Some(organization) = known.get(id) {
            return Ok(organization.clone());
        }
        muster_core::check_organization_id(id)
            .map_err(|error| ServiceError::invalid_input(error.to_string()))?;
        let record = self
            .store
            .get_organization(id)
            .await?
            .ok_or_else(|| crate::organizations::organization_not_found(id))?;
        let organization = JobOrganization {
            id: record.id,
            shared_runners: record.allow_shared_runners,
        };
        known.insert(id.to_string(), organization.clone());
        Ok(organization)
    }

    /// Defaults applied, checked, and given an id: the job `submission` asks for, in
    /// `organization`.
    fn new_job(
        &self,
        submission: JobSubmission,
        organization: JobOrganization,
    ) -> Result<NewJob, ServiceError> {
        let defaults = JobSpec::with_defaults(submission.kind.clone());
        let spec = JobSpec {
            kind: submission.kind,
            payload: submission
                .payload
                .filter(|payload| !payload.is_null())
                .unwrap_or(defaults.payload),
            priority: submission.priority.unwrap_or(defaults.priority),
            requirements: submission.requirements.unwrap_or_default(),
            policy: JobPolicy {
                max_attempts: submission
                    .max_attempts
                    .unwrap_or(defaults.policy.max_attempts),
                timeout_s: submission.timeout_s.unwrap_or(defaults.policy.timeout_s),
                lease_ttl_s: submission
                    .lease_ttl_s
                    .unwrap_or(defaults.policy.lease_ttl_s),
                backoff_base_s: submission
                    .backoff_base_s
                    .unwrap_or(defaults.policy.backoff_base_s),
            },
            run_after: submission.run_after,
            idempotency_key: submission.idempotency_key,
            inputs: submission.inputs,
        };
        spec.validate()
            .map_err(|error| ServiceError::invalid_input(error.to_string()))?;
        let now = self.clock.now();
        Ok(NewJob {
            id: JobId::new(now, rand::rng().random()),
            created_at: now,
            spec,
            organization,
        })
    }

    /// Submit one job. Its inputs must be stored; nothing is created otherwise.
    pub async fn submit(
        &self,
        principal: &Principal,
        submission: JobSubmission,
    ) -> Result<Submission, ServiceError> {
        authorize(principal, Action::SubmitJobs)?;
        let asked = crate::scope::organization_for(principal, submission.organization_id.clone())?;
        let organization = self
            .job_organization(asked.as_deref(), &mut HashMap::new())
            .await?;
        let new_job = self.new_job(submission, organization)?;
        // Checked before anything is stored, so a job naming a missing artifact is never created.
        self.keep_artifacts(
            new_job
                .spec
                .inputs
                .iter()
                .enumerate()
                .map(|(index, id)| (format!("inputs[{index}]"), *id))
                .collect(),
        )
        .await?;
        let submitted = self.submit_handing_off(new_job).await?;
        self.grant_inputs([&submitted.job]).await;
        self.job_changes.fleet.changed();
        Ok(Submission {
            view: self.view(submitted.job).await,
            created: submitted.created,
        })
    }

    /// Submit up to [`MAX_BATCH_SUBMIT`] jobs in one commit: all of them or none.
    pub async fn submit_many(
        &self,
        principal: &Principal,
        submissions: Vec<JobSubmission>,
    ) -> Result<Vec<JobView>, ServiceError> {
        authorize(principal, Action::SubmitJobs)?;
        if submissions.is_empty() || submissions.len() > MAX_BATCH_SUBMIT {
            return Err(ServiceError::invalid_input(format!(
                "jobs: between 1 and {MAX_BATCH_SUBMIT} jobs per batch"
            )));
        }
        let mut known = HashMap::new();
        let mut new_jobs = Vec::with_capacity(submissions.len());
        for (index, submission) in submissions.into_iter().enumerate() {
            let in_batch = |error: ServiceError| {
                ServiceError::new(error.code(), format!("jobs[{index}]: {}", error.message()))
            };
            let asked =
                crate::scope::organization_for(principal, submission.organization_id.clone())
                    .map_err(in_batch)?;
            let organization = self
                .job_organization(asked.as_deref(), &mut known)
                .await
                .map_err(in_batch)?;
            new_jobs.push(self.new_job(submission, organization).map_err(in_batch)?);
        }
        self.keep_artifacts(
            new_jobs
                .iter()
                .enumerate()
                .flat_map(|(job, new_job)| {
                    new_job
                        .spec
                        .inputs
                        .iter()
                        .enumerate()
                        .map(move |(index, id)| (format!("jobs[{job}].inputs[{index}]"), *id))
                })
                .collect(),
        )
        .await?;
        let submitted = self.store.submit_jobs(new_jobs).await?;
        self.job_changes.fleet.changed();
        self.grant_inputs(submitted.iter().map(|answer| &answer.job))
            .await;
        Ok(self
            .views(
                submitted
                    .into_iter()
                    .map(|submitted| submitted.job)
                    .collect(),
            )
            .await)
    }

    /// Let each job's organization read the inputs it names.
    async fn grant_inputs<'a>(&self, jobs: impl IntoIterator<Item = &'a JobRecord>) {
        let mut by_organization: HashMap<&str, Vec<muster_core::ArtifactId>> = HashMap::new();
        for job in jobs {
            if !job.inputs.is_empty() {
                by_organization
                    .entry(job.organization.id.as_str())
                    .or_default()
                    .extend(job.inputs.iter().copied());
            }
        }
        for (organization, inputs) in by_organization {
            self.grant_to_job_organization(organization, inputs).await;
        }
    }

    /// Jobs, newest first.
    pub async fn list_jobs(
        &self,
        principal: &Principal,
        query: JobQuery,
    ) -> Result<Page<JobView>, ServiceError> {
        authorize(principal, Action::ReadJobs)?;
        let mut filter = query.filter;
        filter.organization_id = crate::scope::organization_for(principal, filter.organization_id)?;
        let page = self
            .store
            .list_jobs(filter, page_request(query.limit, query.cursor)?)
            .await?;
        Ok(Page {
            items: self.views(page.items).await,
            next_cursor: page.next_cursor,
        })
    }

    pub async fn get_job(&self, principal: &Principal, id: JobId) -> Result<JobView, ServiceError> {
        authorize(principal, Action::ReadJobs)?;
        let job = self.store.get_job(id).await?;
        if !crate::scope::sees(principal, Some(&job.organization.id)) {
            return Err(crate::scope::job_not_found(id));
        }
        Ok(self.view(job).await)
    }

    /// Cancel a job: a pending one ends `cancelled`, a claimed or running one is `cancelling`
    /// until its runner confirms or the grace period ends.
    pub async fn cancel_job(
        &self,
        principal: &Principal,
        id: JobId,
    ) -> Result<JobView, ServiceError> {
        authorize(principal, Action::SteerJobs)?;
        self.check_job_in_scope(principal, id).await?;
        let grace_ms = self.config.cancel_grace.as_millis() as i64;
        let job = self
            .store
            .cancel_job(id, grace_ms, self.clock.now())
            .await?;
        self.job_changes.changed(id);
        self.attached.cancel_requested(id, self.config.cancel_grace);
        Ok(self.view(job).await)
    }

    /// Put a failed or cancelled job back in the queue with a fresh allowance of attempts.
    pub async fn retry_job(
        &self,
        principal: &Principal,
        id: JobId,
    ) -> Result<JobView, ServiceError> {
        authorize(principal, Action::SteerJobs)?;
        self.check_job_in_scope(principal, id).await?;
        let job = self.store.retry_job(id, self.clock.now()).await?;
        self.job_changes.changed(id);
        Ok(self.view(job).await)
    }

    /// Entries after `after_seq` (from the start when `None`), at most `limit` (default
    /// [`DEFAULT_LOG_PAGE_LIMIT`]).
    pub async fn read_logs(
        &self,
        principal: &Principal,
        id: JobId,
        after_seq: Option<u64>,
        limit: Option<u32>,
    ) -> Result<LogPage, ServiceError> {
        authorize(principal, Action::ReadJobs)?;
        let limit = log_page_limit(limit)?;
        self.check_job_in_scope(principal, id).await?;
        let page = self.store.read_logs(id, after_seq, limit).await?;
        Ok(LogPage {
            items: page.items,
            next_seq: page.next_seq,
        })
    }

    /// The log from after `after_seq`, then entries as they arrive, until the job is finished
    /// and its log drained. Between changes the stream reads nothing: it waits for its job's
    /// change signal (moved by this coordinator's own writes, and with a shared database by the
    /// watcher of other coordinators' writes). It ends when the caller drops it or the
    /// coordinator stops.
    pub async fn follow_logs(
        &self,
        principal: &Principal,
        id: JobId,
        after_seq: Option<u64>,
        limit: Option<u32>,
    ) -> Result<impl Stream<Item = LogStreamEvent> + Send + 'static, ServiceError> {
        authorize(principal, Action::ReadJobs)?;
        let limit = log_page_limit(limit)?;
        self.check_job_exists_in_scope(principal, id).await?;
        // Joined before the first read, so nothing written in between is missed.
        let joined = self.log_feeds.follow(self, id).await;
        let coordinator = self.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let outcome = coordinator
                .stream_log(id, after_seq, limit, joined, &sender)
                .await;
            let last = match outcome {
                StreamEnd::Gone => return,
                StreamEnd::Finished => {
                    let state = coordinator
                        .store
                        .get_job(id)
                        .await
                        .ok()
                        .map(|job| job.state());
                    LogStreamEvent::End { job: id, state }
                }
                StreamEnd::Failed(error) => LogStreamEvent::Failed(error),
            };
            let _ = sender.send(last).await;
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(receiver))
    }

    /// Send `id`'s log after `after_seq` to `sender`: the backlog read from the store up to
    /// where the shared feed joined stands, then what the feed hands out, joining again when
    /// this stream fell behind it.
    async fn stream_log(
        &self,
        id: JobId,
        after_seq: Option<u64>,
        page_limit: u32,
        mut joined: Option<crate::feeds::Joined>,
        sender: &tokio::sync::mpsc::Sender<LogStreamEvent>,
    ) -> StreamEnd {
        use crate::feeds::FeedEvent;
        use tokio::sync::broadcast::error::RecvError;
        let mut last = after_seq;
        loop {
            let Some(mut current) = joined.take() else {
                return StreamEnd::Failed(ServiceError::unavailable(
                    "the live log could not be followed (the coordinator is stopping)",
                ));
            };
            // The backlog: what is before the feed's position, read by this stream alone.
            loop {
                if last.map_or(0, |seq| seq + 1) >= current.position {
                    break;
                }
                let page = match self.store.read_logs(id, last, page_limit).await {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::warn!(%error, job = %id, "failed to read logs for a live stream; closing it");
                        return StreamEnd::Failed(ServiceError::from(error));
                    }
                };
                let full = page.items.len() >= page_limit as usize;
                let mut reached = false;
                for entry in page.items {
                    if entry.seq >= current.position {
                        reached = true;
                        break;
                    }
                    last = Some(entry.seq);
                    if sender.send(LogStreamEvent::Entry(entry)).await.is_err() {
                        return StreamEnd::Gone;
                    }
                }
                if reached || !full {
                    break;
                }
            }
            if current.finished {
                return StreamEnd::Finished;
            }
            // Live: what the feed hands out. Between changes nothing is read.
            loop {
                let event = tokio::select! {
                    event = current.receiver.recv() => event,
                    _ = sender.closed() => return StreamEnd::Gone,
                };
                match event {
                    Ok(FeedEvent::Entry(entry)) => {
                        if last.is_some_and(|seq| entry.seq <= seq) {
                            continue;
                        }
                        last = Some(entry.seq);
                        let entry = Arc::unwrap_or_clone(entry);
                        if sender.send(LogStreamEvent::Entry(entry)).await.is_err() {
                            return StreamEnd::Gone;
                        }
                    }
                    // Everything the feed handed out came before its end, and this stream
                    // received all of it (it did not fall behind): the log is sent.
                    Ok(FeedEvent::Finished) => return StreamEnd::Finished,
                    Ok(FeedEvent::Failed(message)) => {
                        return StreamEnd::Failed(ServiceError::unavailable(message));
                    }
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => {
                        joined = self.log_feeds.follow(self, id).await;
                        break;
                    }
                }
            }
        }
    }

    /// The job now, then again after each change (claimed, running, progress, DAG synced,
    /// cancelled, finished), until it is finished. Between changes the stream reads nothing:
    /// it waits for the job's change signal, as a live log stream does.
    pub async fn follow_job(
        &self,
        principal: &Principal,
        id: JobId,
    ) -> Result<impl Stream<Item = JobStreamEvent> + Send + 'static, ServiceError> {
        // Authorized and scoped by this read; what follows comes from the job's shared feed.
        let first = self.get_job(principal, id).await?;
        let followed = self.job_feeds.follow(self, id);
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let send = |event| sender.send(event);
            let mut current = first;
            if send(JobStreamEvent::Job(Box::new(current.clone())))
                .await
                .is_err()
            {
                return;
            }
            let Some((mut snapshots, _feed)) = followed else {
                let _ = send(JobStreamEvent::Failed(ServiceError::unavailable(
                    "the job could not be followed",
                )))
                .await;
                return;
            };
            loop {
                if current.job.state().is_terminal() {
                    let _ = send(JobStreamEvent::End).await;
                    return;
                }
                tokio::select! {
                    changed = snapshots.changed() => if changed.is_err() {
                        let _ = send(JobStreamEvent::End).await;
                        return;
                    },
                    _ = sender.closed() => return,
                }
                let snapshot = snapshots.borrow_and_update().clone();
                match snapshot {
                    None => continue,
                    Some(crate::feeds::JobSnapshot::Job(view)) => {
                        if *view == current {
                            continue;
                        }
                        current = *view;
                        if send(JobStreamEvent::Job(Box::new(current.clone())))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Some(crate::feeds::JobSnapshot::Gone) => {
                        let _ = send(JobStreamEvent::End).await;
                        return;
                    }
                    Some(crate::feeds::JobSnapshot::Failed(message)) => {
                        let _ =
                            send(JobStreamEvent::Failed(ServiceError::unavailable(message))).await;
                        return;
                    }
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(receiver))
    }

    /// Every attempt of the job, oldest first: those that ended without completing it, then the
    /// one in progress or the one that completed it.
    pub async fn job_attempts(
        &self,
        principal: &Principal,
        id: JobId,
    ) -> Result<Vec<muster_core::AttemptRecord>, ServiceError> {
        let view = self.get_job(principal, id).await?;
        let kept = self.store.kept_attempts(id).await?;
        Ok(muster_core::attempt_history(kept, &view.job.lifecycle))
    }

    /// The step DAG its runner last synced (empty when none was).
    pub async fn read_dag(&self, principal: &Principal, id: JobId) -> Result<Value, ServiceError> {
        authorize(principal, Action::ReadJobs)?;
        self.check_job_in_scope(principal, id).await?;
        let dag = self.store.read_dag(id).await?;
        Ok(dag.unwrap_or_else(|| serde_json::json!({"nodes": [], "edges": []})))
    }
}

/// `job` with why it waits, when it is pending and the runners are known.
fn explain(job: JobRecord, runners: Option<&[RunnerSnapshot]>, now: Timestamp) -> JobView {
    let reason = match (runners, job.state()) {
        (Some(runners), JobState::Pending) => {
            // Only the runners that may take the job's organization's jobs count: a job whose
            // organization refuses shared runners and has none of its own has no runner.
            let eligible: Vec<RunnerSnapshot> = runners
                .iter()
                .filter(|runner| runner.may_take_from(&job.organization))
                .cloned()
                .collect();
            pending_reason(
                &job.kind,
                &job.requirements,
                job.lifecycle.run_after,
                now,
                &eligible,
            )
        }
        _ => None,
    };
    JobView {
        job,
        pending_reason: reason,
    }
}

fn log_page_limit(limit: Option<u32>) -> Result<u32, ServiceError> {
    let limit = limit.unwrap_or(DEFAULT_LOG_PAGE_LIMIT);
    if limit == 0 || limit > MAX_LOG_PAGE_LIMIT {
        return Err(ServiceError::invalid_input(format!(
            "query parameter 'limit': must be between 1 and {MAX_LOG_PAGE_LIMIT}"
        )));
    }
    Ok(limit)
}
