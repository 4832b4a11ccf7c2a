use std::collections::BTreeMap;

use muster_core::{
    ArtifactId, Capabilities, JobId, JobRecord, JobState, Lease, LogEntry, LogLevel, NewLogEntry,
    Progress, RunnerId, Timestamp,
};
use serde_json::Value;

/// The answer for one submitted job.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub job: JobRecord,
    /// False when an earlier job with the same idempotency key was returned instead.
    pub created: bool,
}

/// Filters for listing jobs; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub kind: Option<String>,
    pub runner_id: Option<RunnerId>,
    pub organization_id: Option<String>,
    /// Created at or after this instant.
    pub created_after: Option<Timestamp>,
    /// Created before this instant.
    pub created_before: Option<Timestamp>,
}

/// Filters for listing workloads; `None` (or no statuses) matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkloadFilter {
    pub organization_id: Option<String>,
    pub thread_id: Option<String>,
    pub runner_id: Option<RunnerId>,
    /// Any of these statuses.
    pub statuses: Vec<muster_core::WorkloadStatus>,
}

/// A report of a workload's status (by its runner, or an orchestrator).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadReport {
    pub id: String,
    pub status: muster_core::WorkloadStatus,
    /// The containers now; `None` keeps those recorded.
    pub containers: Option<Vec<muster_core::Container>>,
    /// Why it has this status; `None` keeps the recorded reason when the status stays, and
    /// clears it when the status changes.
    pub reason: Option<String>,
    pub at: Timestamp,
}

/// Filters for listing runners; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunnerFilter {
    /// Runners of this organization only (cluster-scoped runners belong to none).
    pub organization_id: Option<String>,
}

/// One page of a list: at most `limit` items after `cursor`.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRequest {
    pub limit: u32,
    /// Opaque, from an earlier page's `next_cursor`.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A runner asking for work, with what it declares about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRequest {
    pub runner: RunnerId,
    pub kinds: Vec<String>,
    pub offer: Capabilities,
    pub max_jobs: u32,
}

/// A job just leased to a runner.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    pub job: JobRecord,
    pub lease: Lease,
}

/// A job-scoped call by a runner: who, on which job, at which epoch (when it said).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobCall {
    pub runner: RunnerId,
    pub job: JobId,
    pub epoch: Option<u64>,
}

/// What one call of a lease holder records besides the activity itself (see
/// [`crate::LeaseStore::record_activity`]). The default records nothing else.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activity {
    /// Extend the lease by its time to live from now (a job heartbeat).
    pub extend_lease: bool,
    pub progress: Option<Progress>,
    /// Entries to append to the job's log.
    pub log_entries: Vec<NewLogEntry>,
    /// The job's new step DAG, replacing the one synced before.
    pub dag: Option<Value>,
    /// Outputs to record by name (a name recorded again names the new artifact).
    pub outputs: Option<BTreeMap<String, ArtifactId>>,
}

/// The answer to [`crate::LeaseStore::record_activity`].
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedActivity {
    pub ack: JobAck,
    /// Every output the job holds now, when the call recorded outputs.
    pub outputs: Option<BTreeMap<String, ArtifactId>>,
}

/// The answer to a job-scoped call that does not return the job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobAck {
    pub lease: Option<Lease>,
    /// The runner should stop the work and report it cancelled.
    pub cancel: bool,
    /// The next log sequence number the job will give.
    pub next_seq: u64,
}

/// The answer to recording outputs: the usual acknowledgement and every output the job now has.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedOutputs {
    pub ack: JobAck,
    pub outputs: BTreeMap<String, ArtifactId>,
}

/// One completion in a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionItem {
    pub job: JobId,
    pub epoch: Option<u64>,
    pub result: Value,
    /// The result's verified signature, stored with it (`None`: the result is unsigned).
    pub signature: Option<muster_core::identity::VerifiedResultSignature>,
}

/// A page of a job's log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogPage {
    pub items: Vec<LogEntry>,
    /// Where the next read should continue (`after_seq` = `next_seq - 1`, or read from it).
    pub next_seq: u64,
    /// Whether the job has reached a terminal state (the log will not grow).
    pub job_finished: bool,
}

/// A search through one job's log: entries after `after_seq` whose level is at least
/// `min_level` and whose message contains `text` (ASCII letters compared without case), looking
/// at no more than `window` entries, so that one call's cost is bounded whatever the log's
/// length; the caller continues from the answer's `next_seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSearch {
    pub after_seq: Option<u64>,
    pub text: Option<String>,
    pub min_level: Option<LogLevel>,
    /// How many entries (by `seq`) one call looks at, at most.
    pub window: u64,
    /// How many matches one call answers, at most.
    pub limit: u32,
}

/// What one [`LogSearch`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSearchPage {
    /// The matches, in `seq` order.
    pub items: Vec<LogEntry>,
    /// Where the next call continues (`after_seq` = `next_seq - 1`): past the last match when
    /// the page is full, else past the window, never past what is stored.
    pub next_seq: u64,
    /// The log's next unwritten `seq` when it was read: the search has seen the whole log when
    /// `next_seq` reaches it.
    pub log_next_seq: u64,
}

/// Where one job's log stands (see [`crate::JobStore::log_positions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    pub job: JobId,
    /// The `seq` the next entry will get.
    pub next_seq: u64,
    /// Whether the job is finished (its log will not grow).
    pub finished: bool,
}

/// What one reaper pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReapReport {
    pub lease_expired: u32,
    pub timed_out: u32,
    pub cancels_finished: u32,
    /// The jobs the pass changed, so whoever watches them (live log streams) can look again.
    pub changed_jobs: Vec<JobId>,
}

impl ReapReport {
    pub fn total(&self) -> u32 {
        self.lease_expired + self.timed_out + self.cancels_finished
    }

    /// Count what the reaper did to `job`.
    pub(crate) fn record(&mut self, job: JobId, outcome: muster_core::ReapOutcome) {
        match outcome {
            muster_core::ReapOutcome::AttemptFailed(muster_core::FailureReason::TimedOut) => {
                self.timed_out += 1
            }
            muster_core::ReapOutcome::AttemptFailed(_) => self.lease_expired += 1,
            muster_core::ReapOutcome::CancelFinished => self.cancels_finished += 1,
        }
        self.changed_jobs.push(job);
    }
}

/// What one call of [`crate::Maintenance::delete_finished_jobs`] did, and where the next one goes on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PruneReport {
    /// Jobs deleted, with their logs and DAGs.
    pub deleted: u64,
    /// Where to go on: `None` once every job that could have finished before the cutoff was
    /// looked at (or another coordinator is pruning right now).
    pub resume: Option<PruneCursor>,
}

/// A place in the walk over jobs oldest first; only a store makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneCursor(pub(crate) i64);

/// A runner to register; the coordinator made the id and hashed the token.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRunner {
    pub id: RunnerId,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub organization_id: Option<String>,
    /// Capabilities an operator fixed: its claims may narrow them, never widen them. `None`:
    /// it declares them at each claim.
    pub bound_capabilities: Option<muster_core::Capabilities>,
    pub token_hash: [u8; 32],
    pub created_at: Timestamp,
}

/// A runner's periodic heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerBeat {
    pub runner: RunnerId,
    pub draining: bool,
    pub jobs: Vec<JobId>,
    pub hostname: Option<String>,
    pub version: Option<String>,
}

/// How many jobs of one kind and one organization are in one state.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDepth {
    pub organization: String,
    pub kind: String,
    pub state: JobState,
    pub count: u64,
}

/// How many attempts ended with one outcome in one minute, as the coordinators add them up for
/// the overview's last hour. `outcome` is `completed` or a failure reason's name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OutcomeCount {
    /// Milliseconds since the epoch divided by 60,000.
    pub minute: i64,
    pub outcome: String,
    pub count: u64,
}

/// Who made the coordinator store an artifact: what its bytes are charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArtifactUploader {
    Runner(RunnerId),
    /// A user token (today only the admin token). Charged to the totals alone; a per-user or
    /// per-organization charge takes a variant of its own when user tokens arrive.
    User,
}

impl ArtifactUploader {
    pub fn runner(&self) -> Option<RunnerId> {
        match self {
            ArtifactUploader::Runner(runner) => Some(*runner),
            ArtifactUploader::User => None,
        }
    }
}

/// The record that an upload stored an artifact's bytes anew: whom they are charged to and
/// since when. One per stored artifact at most; a re-upload of stored bytes records nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactRecord {
    pub id: ArtifactId,
    pub size: u64,
    pub uploader: ArtifactUploader,
    pub created_at: Timestamp,
}

/// Bytes and number of recorded artifacts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArtifactUsage {
    pub bytes: u64,
    pub count: u64,
}

/// What [`crate::ArtifactRecords::artifact_usage`] answers: every recorded artifact, and the ones charged
/// to the runner asked about (zero when none was asked about).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArtifactUsageReport {
    pub all: ArtifactUsage,
    pub runner: ArtifactUsage,
}

/// A runner key on the allowlist.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerKeyRecord {
    /// `sha256:` and 64 lowercase hex digits: the key's id.
    pub fingerprint: String,
    /// Standard base64 of the 32 raw bytes.
    pub public_key: String,
    pub note: Option<String>,
    pub organization_id: Option<String>,
    pub created_at: Timestamp,
}

/// What a runner's token says about its holder, as the store reads it by the token's hash.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerCredentials {
    pub runner: RunnerId,
    pub enrollment: muster_core::Enrollment,
    /// When this token (the current one or the previous one in its overlap) stops working;
    /// `None` for a token that does not expire.
    pub expires_at: Option<Timestamp>,
}

/// A registration of a runner by its key, as the coordinator accepted it (signature, time
/// window and gate checked). The same key's runner, if there is one, is updated; otherwise
/// a runner is inserted with `new_runner_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRegistration {
    pub new_runner_id: RunnerId,
    pub key_fingerprint: String,
    /// Standard base64 of the 32 raw bytes.
    pub public_key: String,
    pub name: String,
    pub hostname: String,
    pub organization_id: Option<String>,
    /// What it signed it may claim: its claims may narrow these, never widen them.
    pub kinds: Vec<String>,
    pub capabilities: muster_core::Capabilities,
    /// The enrollment the gate decided.
    pub enrollment: muster_core::Enrollment,
    /// What the gate decided from: the enrollment of the key's runner (`None`: no runner had
    /// the key), and whether the key was on the allowlist. When either is no longer so at the
    /// commit, nothing is written and the answer says what changed, so the decision is made
    /// again on what is true.
    pub decided_from: Option<muster_core::Enrollment>,
    pub key_was_allowed: bool,
    pub token_hash: [u8; 32],
    pub token_expires_at: Timestamp,
    /// The runner's token until now keeps working until this (or its own expiry, if earlier).
    pub previous_token_until: Timestamp,
    /// The registration's signed timestamp: it must be later than the last accepted one.
    pub signed_at: Timestamp,
    pub now: Timestamp,
}

/// What recording a [`KeyRegistration`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistrationOutcome {
    /// Recorded; `created` when the runner is new.
    Registered {
        runner: Box<muster_core::RunnerRecord>,
        created: bool,
    },
    /// The key's last accepted registration was signed at `last`, not earlier than this one:
    /// this is a replay (or the runner's clock went back).
    NotNewer { last: Timestamp },
    /// The key's runner or its place on the allowlist changed since the gate decided.
    Changed,
}

/// An operator's decision on a runner's enrollment (approve or reject).
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentChange {
    pub runner: RunnerId,
    /// The enrollment the decision was made from; when the runner's is no longer this at the
    /// commit, nothing is written.
    pub expected: muster_core::Enrollment,
    pub enrollment: muster_core::Enrollment,
    /// Its tokens stop working and its leases are released.
    pub revoke_tokens: bool,
    /// Put on the allowlist (unless its fingerprint is there already).
    pub add_key: Option<RunnerKeyRecord>,
    pub now: Timestamp,
}

/// What an [`EnrollmentChange`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum EnrollmentChangeOutcome {
    Changed {
        runner: Box<muster_core::RunnerRecord>,
        /// The jobs whose leases a revocation released.
        released: Vec<JobId>,
        /// Whether the key was put on the allowlist (false when it was there already).
        key_added: bool,
    },
    /// The runner's enrollment is no longer the expected one.
    Raced { current: muster_core::Enrollment },
}

/// A key taken off the allowlist, and the runner registered with it, whose tokens and leases
/// went with it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemovedRunnerKey {
    pub key: RunnerKeyRecord,
    pub revoked_runner: Option<RunnerId>,
    pub released: Vec<JobId>,
}

/// An organization: a tenant whose jobs, runners and tokens nothing of another one sees.
#[derive(Debug, Clone, PartialEq)]
pub struct OrganizationRecord {
    /// `default`, or the id the coordinator gave it.
    pub id: String,
    /// Unique among organizations, compared exactly.
    pub name: String,
    /// Whether cluster-scoped runners may take its jobs.
    pub allow_shared_runners: bool,
    pub created_at: Timestamp,
}

/// What keeps an organization from being deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrganizationContents {
    /// Jobs not finished yet (pending, claimed or running).
    pub unfinished_jobs: u64,
    /// Runners not deleted.
    pub runners: u64,
    pub user_tokens: u64,
    /// Workloads not finished (neither stopped nor failed), on its runners or shared ones.
    pub unfinished_workloads: u64,
}

impl OrganizationContents {
    pub fn is_empty(&self) -> bool {
        *self == OrganizationContents::default()
    }
}

/// A user token as the store keeps it, without the token (only its hash is stored).
#[derive(Debug, Clone, PartialEq)]
pub struct UserTokenRecord {
    pub id: muster_core::UserTokenId,
    pub name: String,
    pub role: muster_core::organization::Role,
    /// `None`: every organization.
    pub organization_id: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
}

/// A user token to store: its record and the SHA-256 of the token.
#[derive(Debug, Clone, PartialEq)]
pub struct NewUserToken {
    pub record: UserTokenRecord,
    pub token_hash: [u8; 32],
}

/// A signed-in dashboard session. Only the SHA-256 of its secret (the cookie's value) is
/// stored. It acts as the user token it was opened with, read again at every request, so
/// revoking the token ends the session; a session of the bootstrap admin keeps the hash of the
/// admin token it was opened with, so changing that token ends it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub secret_hash: [u8; 32],
    pub opened_with: SessionHolder,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Whose session it is.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionHolder {
    UserToken(muster_core::UserTokenId),
    /// The bootstrap admin, holding the admin token of this SHA-256.
    BootstrapAdmin {
        admin_token_hash: [u8; 32],
    },
}

/// A security event to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    pub at: Timestamp,
    /// Who did it: `admin`, `runner:<id>`, `key:<fingerprint>`, `address:<ip>`.
    pub actor: String,
    /// What happened, dotted: `runner_key.added`, `registration.refused`, ...
    pub action: String,
    /// What it happened to: a fingerprint, a runner id, a job id.
    pub subject: String,
    /// Anything else worth keeping (an object; never a secret).
    pub detail: Value,
    /// The organization it concerns, whose admins may read it; `None` for the whole cluster
    /// (runner keys, kinds, throttling, refused registrations), read with a token of every
    /// organization only.
    pub organization_id: Option<String>,
}

/// A recorded security event.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Increasing in the order entries were recorded (decimal digits).
    pub id: String,
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: Value,
    pub organization_id: Option<String>,
}

/// Which audit entries to list; `None` matches every one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    pub action: Option<String>,
    /// Only the entries of this organization (not those of the whole cluster).
    pub organization_id: Option<String>,
}

/// The result rules of one job kind.
#[derive(Debug, Clone, PartialEq)]
pub struct KindSettingsRecord {
    pub kind: String,
    /// A JSON Schema (draft 2020-12) every result of the kind must meet; the caller has checked
    /// that it is one.
    pub result_schema: Option<Value>,
    /// Completions of the kind must carry a signature by the runner's key.
    pub require_signed_results: bool,
    pub updated_at: Timestamp,
}
