//! What a store can do, one trait per capability, and [`Store`], all of them together.
//!
//! A caller that needs one capability can ask for just that trait; the coordinator holds an
//! `Arc<dyn Store>`, on which every method of every capability can be called (a trait object's
//! supertraits need no import). Code that holds a concrete backend (`SqliteStore`,
//! `PostgresStore`) imports the traits whose methods it calls. A new capability (the workload
//! registry, say) is one more trait here, one more impl per backend, and one more bound on
//! [`Store`].

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use muster_core::identity::VerifiedResultSignature;
use muster_core::{
    ArtifactId, AttemptRecord, JobError, JobId, JobRecord, NewJob, NewLogEntry, Progress, RunnerId,
    RunnerRecord, Timestamp, UserTokenId, WorkloadRecord, WorkloadStatusChange,
};
use serde_json::Value;

use crate::{
    Activity, ArtifactRecord, ArtifactUsage, ArtifactUsageReport, AuditEntry, AuditFilter,
    ClaimRequest, ClaimedJob, CompletionItem, JobAck, JobCall, JobFilter, KindSettingsRecord,
    LogPage, LogPosition, LogSearch, LogSearchPage, NewAuditEntry, NewRunner, OutcomeCount, Page,
    PageRequest, PruneCursor, PruneReport, QueueDepth, ReapReport, RecordedActivity,
    RecordedOutputs, RunnerBeat, RunnerFilter, RunnerKeyRecord, StoreError, Submitted,
};
use crate::{
    EnrollmentChange, EnrollmentChangeOutcome, KeyRegistration, NewUserToken, OrganizationRecord,
    RegistrationOutcome, RemovedRunnerKey, RunnerCredentials, SessionRecord, UserTokenRecord,
    WorkloadFilter, WorkloadReport,
};

/// The coordinator's durable state: every capability together. See the crate docs for the
/// guarantees every method gives. Implemented by every type that has all the capabilities.
pub trait Store:
    JobStore
    + LeaseStore
    + RunnerStore
    + ArtifactRecords
    + IdentityRecords
    + KindSettingsStore
    + OrganizationStore
    + WorkloadStore
    + Maintenance
{
}

impl<
    T: JobStore
        + LeaseStore
        + RunnerStore
        + ArtifactRecords
        + IdentityRecords
        + KindSettingsStore
        + OrganizationStore
        + WorkloadStore
        + Maintenance
        + ?Sized,
> Store for T
{
}

/// Jobs as their submitters see them: submit, read, list, cancel, retry, and read what runners
/// recorded (logs, DAGs).
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Store new jobs. A job whose `idempotency_key` is already taken is not stored again;
    /// the existing job is returned with `created: false`. All or nothing. A job's `inputs` are
    /// stored as given: the caller has checked that those artifacts exist.
    async fn submit_jobs(&self, jobs: Vec<NewJob>) -> Result<Vec<Submitted>, StoreError>;

    /// Store `jobs` as [`JobStore::submit_jobs`] does and then claim for `claim` as
    /// [`LeaseStore::claim_jobs`] does: the direct hand-off of a submit to a runner already
    /// waiting for work. SQLite does both in one commit (one durable write instead of two in
    /// series); PostgreSQL in two transactions, the claim right after the submit. All or
    /// nothing on SQLite; on PostgreSQL a failed claim leaves the jobs stored and pending.
    async fn submit_and_claim(
        &self,
        jobs: Vec<NewJob>,
        claim: ClaimRequest,
        now: Timestamp,
    ) -> Result<(Vec<Submitted>, Vec<ClaimedJob>), StoreError>;

    async fn get_job(&self, id: JobId) -> Result<JobRecord, StoreError>;

    /// The kinds of those of `jobs` that `runner` holds now (leased to it and not finished),
    /// by job; the others are left out. One read for a batch of completions, so the rules of
    /// their kinds are found without loading each job.
    async fn kinds_of_held_jobs(
        &self,
        runner: RunnerId,
        jobs: Vec<JobId>,
    ) -> Result<HashMap<JobId, String>, StoreError>;

    /// Jobs newest first, filtered, one page at a time.
    async fn list_jobs(
        &self,
        filter: JobFilter,
        page: PageRequest,
    ) -> Result<Page<JobRecord>, StoreError>;

    /// How many jobs match `filter`, counted no further than `cap` (so a count is as cheap as
    /// reading `cap` rows, whatever the number of jobs stored).
    async fn count_jobs(&self, filter: JobFilter, cap: u64) -> Result<u64, StoreError>;

    /// Cancel a job: pending ends at once, leased waits `grace_ms` for its runner.
    async fn cancel_job(
        &self,
        id: JobId,
        grace_ms: i64,
        now: Timestamp,
    ) -> Result<JobRecord, StoreError>;

    /// Put a failed or cancelled job back in the queue.
    async fn retry_job(&self, id: JobId, now: Timestamp) -> Result<JobRecord, StoreError>;

    async fn read_logs(
        &self,
        id: JobId,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<LogPage, StoreError>;

    /// Search one job's log ([`LogSearch`]): matches in `seq` order within the search's window.
    async fn search_logs(&self, id: JobId, search: LogSearch) -> Result<LogSearchPage, StoreError>;

    /// Where the logs of `jobs` stand: the next `seq` each will write and whether the job is
    /// finished. Jobs that do not exist are left out. One call for many jobs, so a coordinator
    /// can watch every followed log with one query.
    async fn log_positions(&self, jobs: Vec<JobId>) -> Result<Vec<LogPosition>, StoreError>;

    /// The DAG as last synced, `None` when the runner never sent one.
    async fn read_dag(&self, id: JobId) -> Result<Option<Value>, StoreError>;

    /// The attempts of the job `id` that ended without completing it (failed, lost, timed out,
    /// cancelled), kept when each ended, oldest first; the newest 1,000 when there are more.
    /// The job's current or completing attempt is in its own row
    /// ([`muster_core::attempt_history`] puts the two together). Empty for an unknown job.
    async fn kept_attempts(&self, id: JobId) -> Result<Vec<AttemptRecord>, StoreError>;
}

/// The runner protocol: claims that grant leases, and every call a lease holder makes. Each
/// job-scoped call is fenced: refused with `LeaseLost`, changing nothing, unless the caller holds
/// the job's current lease at the epoch it names.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Lease up to `max_jobs` due jobs of the runner's kinds whose requirements it meets, lowest
    /// priority number first, then oldest. Records what the runner declared. A runner whose last
    /// heartbeat said it is draining claims nothing until a heartbeat says it is active again.
    async fn claim_jobs(
        &self,
        claim: ClaimRequest,
        now: Timestamp,
    ) -> Result<Vec<ClaimedJob>, StoreError>;

    /// A counter that grows whenever jobs may have become claimable; long-polling claims wait on
    /// it instead of polling the store.
    fn pending_signal(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Activity by the lease holder (a claimed job becomes running), recording what `activity`
    /// holds in the same commit: the lease extended, progress, log entries (entries carrying a
    /// `seq` already stored are skipped; past the job's log cap they are dropped after one
    /// truncation notice), the step DAG, outputs (refused with `Rejected` when the job would hold
    /// more than [`muster_core::MAX_JOB_OUTPUTS`]; the caller has checked that the artifacts
    /// exist). Every call below is this with its own [`Activity`].
    async fn record_activity(
        &self,
        call: JobCall,
        activity: Activity,
        now: Timestamp,
    ) -> Result<RecordedActivity, StoreError>;

    /// Extend the lease; optionally record progress and append events to the log as `info`.
    async fn job_heartbeat(
        &self,
        call: JobCall,
        progress: Option<Progress>,
        events: Vec<NewLogEntry>,
        now: Timestamp,
    ) -> Result<JobAck, StoreError> {
        let activity = Activity {
            extend_lease: true,
            progress,
            log_entries: events,
            ..Activity::default()
        };
        Ok(self.record_activity(call, activity, now).await?.ack)
    }

    async fn report_progress(
        &self,
        call: JobCall,
        progress: Progress,
        now: Timestamp,
    ) -> Result<JobAck, StoreError> {
        let activity = Activity {
            progress: Some(progress),
            ..Activity::default()
        };
        Ok(self.record_activity(call, activity, now).await?.ack)
    }

    /// Append log entries; entries carrying a `seq` already stored are skipped.
    async fn append_logs(
        &self,
        call: JobCall,
        entries: Vec<NewLogEntry>,
        now: Timestamp,
    ) -> Result<JobAck, StoreError> {
        let activity = Activity {
            log_entries: entries,
            ..Activity::default()
        };
        Ok(self.record_activity(call, activity, now).await?.ack)
    }

    /// Replace the job's step DAG.
    async fn sync_dag(
        &self,
        call: JobCall,
        dag: Value,
        now: Timestamp,
    ) -> Result<JobAck, StoreError> {
        let activity = Activity {
            dag: Some(dag),
            ..Activity::default()
        };
        Ok(self.record_activity(call, activity, now).await?.ack)
    }

    /// Record artifacts the lease holder produced, by name: a name recorded again now names
    /// the new artifact. Counts as activity (a claimed job becomes running). Refused with
    /// `Rejected` when the job would hold more than [`muster_core::MAX_JOB_OUTPUTS`]. Outputs
    /// belong to an attempt: a new claim of the job starts with none. The caller has checked
    /// that the artifacts exist.
    async fn record_outputs(
        &self,
        call: JobCall,
        outputs: BTreeMap<String, ArtifactId>,
        now: Timestamp,
    ) -> Result<RecordedOutputs, StoreError> {
        let activity = Activity {
            outputs: Some(outputs),
            ..Activity::default()
        };
        let recorded = self.record_activity(call, activity, now).await?;
        Ok(RecordedOutputs {
            ack: recorded.ack,
            outputs: recorded.outputs.unwrap_or_default(),
        })
    }

    /// Complete a job with an unsigned result: [`LeaseStore::complete_job_signed`] without a
    /// signature.
    async fn complete_job(
        &self,
        call: JobCall,
        result: Value,
        outputs: BTreeMap<String, ArtifactId>,
        now: Timestamp,
    ) -> Result<JobRecord, StoreError> {
        self.complete_job_signed(call, result, None, outputs, now)
            .await
    }

    /// Complete a job with its result and the result's verified signature (`None`: unsigned;
    /// the job's `result_signature` is then null), recording `outputs` (by name, like
    /// [`LeaseStore::record_outputs`]) in the same commit. The same completion again (its
    /// answer was lost) is answered with the job as the first one left it, and changes nothing.
    async fn complete_job_signed(
        &self,
        call: JobCall,
        result: Value,
        signature: Option<VerifiedResultSignature>,
        outputs: BTreeMap<String, ArtifactId>,
        now: Timestamp,
    ) -> Result<JobRecord, StoreError>;

    /// Many completions by one runner, each fenced on its own, committed together. The answer
    /// has one entry per item, in order.
    async fn complete_jobs(
        &self,
        runner: RunnerId,
        items: Vec<CompletionItem>,
        now: Timestamp,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError>;

    async fn fail_job(
        &self,
        call: JobCall,
        error: JobError,
        retryable: bool,
        now: Timestamp,
    ) -> Result<JobRecord, StoreError>;
}

/// The runner registry.
#[async_trait]
pub trait RunnerStore: Send + Sync + 'static {
    async fn create_runner(&self, runner: NewRunner) -> Result<RunnerRecord, StoreError>;

    async fn get_runner(&self, id: RunnerId) -> Result<RunnerRecord, StoreError>;

    async fn list_runners(
        &self,
        filter: RunnerFilter,
        page: PageRequest,
    ) -> Result<Page<RunnerRecord>, StoreError>;

    /// Like [`RunnerStore::list_runners`] for callers that only match runners against jobs: a
    /// backend where counting the jobs each runner holds costs a read per job may leave
    /// `running_jobs` at 0 here.
    async fn list_runners_for_matching(
        &self,
        page: PageRequest,
    ) -> Result<Page<RunnerRecord>, StoreError> {
        self.list_runners(RunnerFilter::default(), page).await
    }

    /// Delete a runner: its token stops working and the attempts it holds fail as lost leases.
    /// Answers the jobs whose leases it released.
    async fn delete_runner(&self, id: RunnerId, now: Timestamp) -> Result<Vec<JobId>, StoreError>;

    /// The live runner whose token (current, or previous within its overlap) hashes to
    /// `token_hash`, with what the token says about it. An expired token is still found: the
    /// caller refuses it, saying so.
    async fn runner_by_token_hash(
        &self,
        token_hash: [u8; 32],
    ) -> Result<Option<RunnerCredentials>, StoreError>;

    /// The live runner registered with the key of `fingerprint`.
    async fn runner_by_key(&self, fingerprint: &str) -> Result<Option<RunnerRecord>, StoreError>;

    /// Record a runner's registration by its key and `audit`, in one commit: the key's runner
    /// is updated (capabilities, enrollment, a new token with the previous one kept for its
    /// overlap) or inserted. Nothing is written when the registration is not newer than the
    /// key's last, or when what the gate decided from changed meanwhile (the answer says which).
    async fn register_runner_key(
        &self,
        registration: KeyRegistration,
        audit: NewAuditEntry,
    ) -> Result<RegistrationOutcome, StoreError>;

    /// Apply an operator's decision on a runner's enrollment with `audit`, and `key_audit` when
    /// the decision put its key on the allowlist, in one commit. A revocation clears its tokens
    /// and releases its leases.
    async fn change_runner_enrollment(
        &self,
        change: EnrollmentChange,
        audit: NewAuditEntry,
        key_audit: NewAuditEntry,
    ) -> Result<EnrollmentChangeOutcome, StoreError>;

    /// Record a runner heartbeat; answers the ids among `beat.jobs` the runner should stop
    /// (being cancelled, or no longer its own).
    async fn runner_heartbeat(
        &self,
        beat: RunnerBeat,
        now: Timestamp,
    ) -> Result<Vec<JobId>, StoreError>;
}

/// What the database knows about artifacts: which ones jobs name (what the collection of unused
/// artifacts must keep) and who made the coordinator store each one (what upload quotas charge).
#[async_trait]
pub trait ArtifactRecords: Send + Sync + 'static {
    /// Every artifact a job names, as an input or an output, whatever the job's state: what the
    /// collection of unused artifacts must keep. Reads every job that names one.
    async fn named_artifacts(&self) -> Result<HashSet<ArtifactId>, StoreError>;

    /// Record that an upload stored `record.id`'s bytes anew, charged to `record.uploader`.
    /// Replaces a record the artifact already has: that one describes bytes collected since.
    /// Counted by [`ArtifactRecords::artifact_usage`] until taken with
    /// [`ArtifactRecords::take_artifact_record`].
    async fn record_artifact(&self, record: ArtifactRecord) -> Result<(), StoreError>;

    /// Remove the artifact's record and answer it (`None` when it has none), for a collection
    /// about to delete the bytes; it puts the record back with
    /// [`ArtifactRecords::record_artifact`] when the bytes stay.
    async fn take_artifact_record(
        &self,
        id: ArtifactId,
    ) -> Result<Option<ArtifactRecord>, StoreError>;

    /// Bytes and count of every recorded artifact, and of those charged to `runner`. Reads
    /// running totals, not the records, so its cost does not grow with the artifacts stored.
    async fn artifact_usage(
        &self,
        runner: Option<RunnerId>,
    ) -> Result<ArtifactUsageReport, StoreError>;

    /// The `limit` runners charged with the most artifact bytes, most first (ties by id).
    /// Deleted runners stay while their artifacts do.
    async fn largest_artifact_uploaders(
        &self,
        limit: u32,
    ) -> Result<Vec<(RunnerId, ArtifactUsage)>, StoreError>;

    /// Let `organization` read the artifacts `ids`: one of its tokens uploaded them, or one of
    /// its jobs names them. Granting twice changes nothing; ids with no stored record are left
    /// out. A grant outlives the bytes' collection: whoever could read bytes once learns
    /// nothing new when the same bytes are stored again.
    async fn grant_artifacts(
        &self,
        organization: String,
        ids: Vec<ArtifactId>,
    ) -> Result<(), StoreError>;

    /// Whether `organization` may read `id` (it was granted to it).
    async fn artifact_granted(
        &self,
        organization: String,
        id: ArtifactId,
    ) -> Result<bool, StoreError>;

    /// Whether `runner` may read `id`: it uploaded the stored bytes, or a job it holds the
    /// lease on names them as an input or an output.
    async fn runner_may_read_artifact(
        &self,
        runner: RunnerId,
        id: ArtifactId,
    ) -> Result<bool, StoreError>;
}

/// Runner identity: the allowlist of runner keys and the audit log of security events. A change
/// to the allowlist and its audit entry are committed together, so the log never misses a change
/// nor records one that did not happen.
#[async_trait]
pub trait IdentityRecords: Send + Sync + 'static {
    /// Put `key` on the allowlist and record `audit`, in one commit. A key whose fingerprint is
    /// already there is left as it was and nothing is recorded: the answer is the stored entry
    /// and `false`.
    async fn add_runner_key(
        &self,
        key: RunnerKeyRecord,
        audit: NewAuditEntry,
    ) -> Result<(RunnerKeyRecord, bool), StoreError>;

    /// The allowlist, oldest first (the order keys were added), one page at a time.
    /// The allowlist oldest first: every key, or only those of `organization`.
    async fn list_runner_keys(
        &self,
        organization: Option<String>,
        page: PageRequest,
    ) -> Result<Page<RunnerKeyRecord>, StoreError>;

    /// The allowlist entry of `fingerprint`, if it is there.
    async fn get_runner_key(
        &self,
        fingerprint: &str,
    ) -> Result<Option<RunnerKeyRecord>, StoreError>;

    /// Take `fingerprint` off the allowlist and record `audit`, in one commit; `NotFound` (and
    /// nothing recorded) when it is not there. The runner registered with the key loses its
    /// tokens and its leases in the same commit (no result of a revoked identity counts), which
    /// is recorded as `runner.revoked` by the same actor.
    async fn remove_runner_key(
        &self,
        fingerprint: &str,
        audit: NewAuditEntry,
    ) -> Result<RemovedRunnerKey, StoreError>;

    /// Record a security event that changes nothing else (a refused registration, say).
    async fn append_audit(&self, entry: NewAuditEntry) -> Result<(), StoreError>;

    /// The audit log newest first, optionally only one action, one page at a time.
    async fn list_audit(
        &self,
        filter: AuditFilter,
        page: PageRequest,
    ) -> Result<Page<AuditEntry>, StoreError>;
}

/// The result rules of each job kind (`PUT /api/v1/kinds/{kind}`): a JSON Schema results must
/// meet, and whether results must be signed. Cluster-wide. A change and its audit entry are
/// committed together.
#[async_trait]
pub trait KindSettingsStore: Send + Sync + 'static {
    /// Set `settings.kind`'s rules, replacing any it had, and record `audit`, in one commit.
    /// Answers the stored settings.
    async fn put_kind_settings(
        &self,
        settings: KindSettingsRecord,
        audit: NewAuditEntry,
    ) -> Result<KindSettingsRecord, StoreError>;

    /// The rules of `kind`, if it has any.
    async fn get_kind_settings(&self, kind: &str)
    -> Result<Option<KindSettingsRecord>, StoreError>;

    /// Every kind's rules, by kind name (byte order), one page at a time.
    async fn list_kind_settings(
        &self,
        page: PageRequest,
    ) -> Result<Page<KindSettingsRecord>, StoreError>;

    /// Remove `kind`'s rules and record `audit`, in one commit; `NotFound` (nothing recorded)
    /// when it has none.
    async fn delete_kind_settings(
        &self,
        kind: &str,
        audit: NewAuditEntry,
    ) -> Result<(), StoreError>;
}

/// The workload registry: what runners host, as they (or an orchestrator) report it. Every
/// status change goes through [`muster_core::workload_transition`] and is kept in the
/// workload's history in the same commit.
#[async_trait]
pub trait WorkloadStore: Send + Sync + 'static {
    /// Record `workload`, its status the first entry of its history. `Conflict` when its id is
    /// taken (in any organization), `NotFound` when its runner does not exist or was deleted;
    /// nothing is written then.
    async fn create_workload(&self, workload: WorkloadRecord)
    -> Result<WorkloadRecord, StoreError>;

    /// The workload of `id`; `NotFound` when there is none.
    async fn get_workload(&self, id: &str) -> Result<WorkloadRecord, StoreError>;

    /// The workloads `filter` matches, newest first, a page at a time.
    async fn list_workloads(
        &self,
        filter: WorkloadFilter,
        page: PageRequest,
    ) -> Result<Page<WorkloadRecord>, StoreError>;

    /// Apply `report`: `NotFound` when there is no such workload, `WorkloadRefused` (nothing
    /// changed) when its status does not allow the one reported. Answers the workload as stored.
    async fn report_workload(&self, report: WorkloadReport) -> Result<WorkloadRecord, StoreError>;

    /// Remove the workload of `id` and its history; `NotFound` when there is none.
    async fn delete_workload(&self, id: &str) -> Result<(), StoreError>;

    /// The workload's status changes, oldest first (at most one per status it can have);
    /// `NotFound` when there is no such workload.
    async fn workload_history(&self, id: &str) -> Result<Vec<WorkloadStatusChange>, StoreError>;
}

/// Organizations and the user tokens that act in them. Every change and its audit entry are
/// committed together. The `default` organization is there from the first migration on.
#[async_trait]
pub trait OrganizationStore: Send + Sync + 'static {
    /// Store a new organization and record `audit`, in one commit; `Conflict` (nothing stored)
    /// when its id or name is taken.
    async fn create_organization(
        &self,
        organization: OrganizationRecord,
        audit: NewAuditEntry,
    ) -> Result<OrganizationRecord, StoreError>;

    async fn get_organization(&self, id: &str) -> Result<Option<OrganizationRecord>, StoreError>;

    /// Organizations oldest first (`default` first of all), one page at a time.
    async fn list_organizations(
        &self,
        page: PageRequest,
    ) -> Result<Page<OrganizationRecord>, StoreError>;

    /// Delete the organization `id` and record `audit`, in one commit: `NotFound` when there is
    /// none, `OrganizationNotEmpty` (nothing changed) while it has unfinished jobs, runners or
    /// user tokens. Its finished jobs stay, for every-organization tokens to read.
    async fn delete_organization(&self, id: &str, audit: NewAuditEntry) -> Result<(), StoreError>;

    /// Store a new user token (its hash) and record `audit`, in one commit.
    async fn create_user_token(
        &self,
        token: NewUserToken,
        audit: NewAuditEntry,
    ) -> Result<UserTokenRecord, StoreError>;

    /// User tokens oldest first, one page at a time: every one, or (`Some`) only those scoped
    /// to that organization.
    async fn list_user_tokens(
        &self,
        organization: Option<String>,
        page: PageRequest,
    ) -> Result<Page<UserTokenRecord>, StoreError>;

    async fn get_user_token(&self, id: UserTokenId) -> Result<Option<UserTokenRecord>, StoreError>;

    /// The token whose SHA-256 is `token_hash`, if one is stored (expired ones too: the caller
    /// decides what expiry means).
    async fn user_token_by_hash(
        &self,
        token_hash: [u8; 32],
    ) -> Result<Option<UserTokenRecord>, StoreError>;

    /// Delete the token `id` (it stops working) and record `audit`, in one commit; answers what
    /// was deleted, `NotFound` (nothing recorded) when there is none.
    async fn revoke_user_token(
        &self,
        id: UserTokenId,
        audit: NewAuditEntry,
    ) -> Result<UserTokenRecord, StoreError>;

    /// Record that the token `id` was used at `at` (never moving `last_used_at` back).
    async fn touch_user_token(&self, id: UserTokenId, at: Timestamp) -> Result<(), StoreError>;

    /// Store a new session and record `audit`, in one commit. Sessions that expired before
    /// `session.created_at` are deleted in the same commit (a bounded number), so the table
    /// holds about as many rows as there are live sessions.
    async fn create_session(
        &self,
        session: SessionRecord,
        audit: NewAuditEntry,
    ) -> Result<(), StoreError>;

    /// The session whose secret's SHA-256 is `secret_hash` (expired ones too: the caller
    /// decides what expiry means).
    async fn session_by_hash(
        &self,
        secret_hash: [u8; 32],
    ) -> Result<Option<SessionRecord>, StoreError>;

    /// Delete the session and record `audit`, in one commit; `NotFound` (nothing recorded)
    /// when there is none. Revoking a user token deletes its sessions with it.
    async fn delete_session(
        &self,
        secret_hash: [u8; 32],
        audit: NewAuditEntry,
    ) -> Result<(), StoreError>;
}

/// What the coordinator's background loops and health checks need: deadlines, retention, counts,
/// and whether the store answers.
#[async_trait]
pub trait Maintenance: Send + Sync + 'static {
    /// Apply passed deadlines (lease expiry, attempt timeout, cancel grace) to at most `limit`
    /// jobs. Safe to call from many places at once: each deadline is applied once.
    async fn reap(&self, now: Timestamp, limit: u32) -> Result<ReapReport, StoreError>;

    /// Delete jobs that finished (completed, failed or cancelled) before `finished_before`,
    /// with their logs and DAGs, walking at most `limit` jobs oldest first from `resume` (the
    /// start when `None`). Jobs not finished, or finished later, are kept; the walk ends at the
    /// first job created at or after `finished_before`, since no later one can qualify. A
    /// deleted job's idempotency key may be used again. Artifact bytes are not touched. Safe to
    /// call from many places at once; on PostgreSQL one coordinator prunes at a time.
    async fn delete_finished_jobs(
        &self,
        finished_before: Timestamp,
        resume: Option<PruneCursor>,
        limit: u32,
    ) -> Result<PruneReport, StoreError>;

    /// Counts of unfinished jobs (pending, claimed, running, cancelling) by kind and state.
    /// Reads only what claims and the reaper read, so its cost follows the queue and the jobs
    /// running, never the history of finished jobs.
    async fn active_job_counts(&self) -> Result<Vec<QueueDepth>, StoreError>;

    /// Counts of finished jobs (completed, failed, cancelled) by kind and state. Reads the whole
    /// history: callers asking often should reuse an answer for a while.
    async fn finished_job_counts(&self) -> Result<Vec<QueueDepth>, StoreError>;

    /// Job counts by kind and state: [`Maintenance::active_job_counts`] and
    /// [`Maintenance::finished_job_counts`] together.
    async fn queue_depths(&self) -> Result<Vec<QueueDepth>, StoreError> {
        let mut depths = self.active_job_counts().await?;
        depths.extend(self.finished_job_counts().await?);
        Ok(depths)
    }

    /// Add `counts` to the per-minute outcome totals every coordinator of this store shares
    /// (a count for a minute and outcome already there is added to it), and forget the minutes
    /// before `forget_before_minute`.
    async fn add_outcome_counts(
        &self,
        counts: Vec<OutcomeCount>,
        forget_before_minute: i64,
    ) -> Result<(), StoreError>;

    /// The outcome totals from `first_minute` on, summed by outcome (`minute` is then the first
    /// minute asked for). Reads at most one row per minute and outcome kept.
    async fn outcome_totals(&self, first_minute: i64) -> Result<Vec<OutcomeCount>, StoreError>;

    /// Whether the store answers at all.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Whether other processes may change this store (coordinators sharing a database): then
    /// what they change is seen here only by reading it.
    fn shared_with_other_coordinators(&self) -> bool;
}
