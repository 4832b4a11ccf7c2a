//! Runners attached over a push stream (the runner protocol of `proto/muster/runner/v1`):
//! sessions that outlive their streams, numbered events (assignments, cancels, recycles) with a
//! replay buffer for reattaching runners, flow control by credit, and the reconnect rule that
//! keeps a live runner's leases while it reattaches. The front end (gRPC) only moves these
//! values to and from the wire; every rule of the protocol is here.
//!
//! Leases live in the store, so a session is a convenience, never the truth: a session this
//! process forgot (it restarted, or the runner reached another coordinator) costs a replay, not
//! a job. Every job-scoped call is fenced by the store exactly as over HTTP.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use muster_core::identity::ResultSignature;
use muster_core::limits::{MAX_CLAIM_JOBS, MAX_HEARTBEAT_JOBS};
use muster_core::{
    ArtifactId, Capabilities, ErrorCode, JobId, JobState, Lease, NewLogEntry, Principal, Progress,
    RunnerId, Timestamp,
};
use muster_store::{ClaimedJob, JobFilter, PageRequest};
use rand::Rng;
use serde_json::Value;
use tokio::sync::watch;

use crate::jobs::JobView;
use crate::protocol::{Claim, FailureReport, LeasedJob, LogAppended, RunnerHeartbeat, StopSignal};
use crate::{Coordinator, ServiceError};

/// The protocol version this coordinator speaks (the highest, and so far the only one).
pub const PROTOCOL_VERSION: u32 = 1;
/// The session replay of the reconnect rule.
pub const FEATURE_RESUME: &str = "resume";
/// Completions carry a result signature.
pub const FEATURE_SIGNED_RESULTS: &str = "signed_results";
const SUPPORTED_FEATURES: [&str; 2] = [FEATURE_RESUME, FEATURE_SIGNED_RESULTS];

/// Replayable events a session keeps for a reattaching runner; past it the oldest are
/// forgotten and the runner's held jobs, the store's leases and the resend of claimed jobs
/// still bring it back in step.
const MAX_REPLAYED_EVENTS: usize = 10_000;
/// Answers to job-scoped requests a session remembers, so a request sent again after a
/// reattach is answered DUPLICATE instead of being applied twice.
const MAX_REMEMBERED_ANSWERS: usize = 4_096;
/// How long a session without a stream is kept for its runner to reattach to. Longer than any
/// lease lasts without a heartbeat, so a runner never loses a session whose leases it still has.
const DETACHED_SESSION_KEPT: Duration = Duration::from_secs(15 * 60);
/// How long a recycled stream stays open for its runner to move to a new one.
const RECONNECT_WINDOW: Duration = Duration::from_secs(30);
/// A stream's planned lifetime varies by up to this share either way, so streams opened
/// together (after a coordinator restart) do not all recycle together.
const LIFETIME_JITTER: f64 = 0.1;
/// How often a session with credit looks for due jobs when nothing signalled new ones (retry
/// backoffs ending, jobs submitted through another coordinator).
const ASSIGNMENT_RECHECK: Duration = Duration::from_millis(250);
/// How often a runner held for approval checks whether it was approved.
const ENROLLMENT_RECHECK: Duration = Duration::from_secs(2);

/// A job the runner holds, as it believes: the job and its lease epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeldJob {
    pub job: JobId,
    pub epoch: u64,
}

/// The first message of a stream, checked here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hello {
    pub protocol_version: u32,
    pub features: Vec<String>,
    pub kinds: Vec<String>,
    pub offer: Capabilities,
    pub max_jobs: u32,
    /// The session to continue; `None` for a fresh one.
    pub resume_session_id: Option<String>,
    pub resume_after_sequence: u64,
    pub held_jobs: Vec<HeldJob>,
    pub draining: bool,
    pub hostname: Option<String>,
    pub version: Option<String>,
}

/// The coordinator's terms for a new stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub protocol_version: u32,
    pub features: Vec<String>,
    pub session_id: String,
    pub resumed: bool,
    pub heartbeat_interval: Duration,
    pub stream_lifetime: Duration,
    pub runner_id: RunnerId,
    pub enrolled: bool,
    pub credit: u32,
    /// The held jobs kept, with their extended leases.
    pub leases: Vec<(JobId, Lease)>,
}

/// Why a runner must stop a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// Someone cancelled it: stop and fail the attempt as cancelled within the grace.
    Requested,
    /// The runner does not hold its lease at that epoch any more.
    LeaseLost,
}

/// Stop a job.
#[derive(Debug, Clone, PartialEq)]
pub struct PushedCancel {
    pub job: JobId,
    pub epoch: u64,
    pub reason: CancelReason,
    pub message: String,
    /// For [`CancelReason::Requested`]: how long the coordinator waits for the runner.
    pub grace: Duration,
}

/// Why a stream is being recycled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecycleReason {
    StreamLifetime,
    Shutdown,
}

/// Move to a new stream before `reconnect_by`.
#[derive(Debug, Clone, PartialEq)]
pub struct PushedRecycle {
    pub reconnect_by: Timestamp,
    pub reason: RecycleReason,
}

/// What the coordinator pushes on a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum PushedEvent {
    /// A job to run: the runner holds its lease now.
    Assignment(Box<ClaimedJob>),
    Cancel(PushedCancel),
    Recycle(PushedRecycle),
}

/// A pushed event with its number in the session.
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed {
    pub sequence: u64,
    pub event: PushedEvent,
}

/// A job-scoped request on the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum JobReport {
    Progress(LeasedJob, Progress),
    Logs(LeasedJob, Vec<NewLogEntry>),
    Complete {
        target: LeasedJob,
        result: Value,
        outputs: BTreeMap<String, ArtifactId>,
        sig: Option<ResultSignature>,
    },
    Fail(LeasedJob, FailureReport),
}

impl JobReport {
    pub fn target(&self) -> LeasedJob {
        match self {
            JobReport::Progress(target, _)
            | JobReport::Logs(target, _)
            | JobReport::Complete { target, .. }
            | JobReport::Fail(target, _) => *target,
        }
    }
}

/// What a job-scoped request did, as the matching unary call would answer.
#[derive(Debug, Clone, PartialEq)]
pub enum JobReportAnswer {
    Progress(StopSignal),
    Logs(LogAppended),
    Complete(Box<JobView>),
    Fail(Box<JobView>),
}

/// How a job-scoped request on the stream went.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportOutcome {
    Accepted(JobReportAnswer),
    /// Sent again with a request id already answered: the first answer, not applied again.
    Duplicate(JobReportAnswer),
    Rejected(LeaseRefusal),
}

/// A refused job-scoped request, with the job's current lease epoch when the refusal is
/// `lease_lost` (0 when the runner may not know it, or the job was never leased).
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRefusal {
    pub error: ServiceError,
    pub current_epoch: Option<u64>,
}

/// The answer to a stream heartbeat: the extended leases of the jobs still the runner's.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatAnswer {
    pub leases: Vec<(JobId, Lease)>,
    pub server_time: Timestamp,
}

/// Every session of this coordinator, by id.
#[derive(Default)]
pub(crate) struct AttachedRunners {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// How many sessions there are, readable without the lock: with no runner attached (every
    /// HTTP-only fleet) the hooks on completions and cancels cost one atomic load.
    count: AtomicUsize,
}

struct Session {
    id: String,
    runner: RunnerId,
    state: Mutex<SessionState>,
    /// Bumped whenever an event is pushed or the stream generation changes.
    events: watch::Sender<u64>,
    /// Bumped whenever the assigner should look again (credit, draining, a new stream).
    assigner_wake: watch::Sender<u64>,
}

struct SessionState {
    /// The stream now attached (or last attached); a stream of an older generation ends.
    generation: u64,
    attached: bool,
    /// The current stream was told to recycle: it gets no more assignments.
    recycling: bool,
    detached_at: Option<tokio::time::Instant>,
    next_sequence: u64,
    replay: VecDeque<Pushed>,
    /// Held jobs: epoch, and the sequence of the assignment (0 when the runner named it).
    held: HashMap<JobId, (u64, u64)>,
    /// Cancels of REQUESTED already pushed, so heartbeats do not repeat them.
    cancels_sent: HashSet<HeldJob>,
    credit: u32,
    max_jobs: u32,
    draining: bool,
    kinds: Vec<String>,
    offer: Capabilities,
    hostname: Option<String>,
    version: Option<String>,
    answers: HashMap<String, JobReportAnswer>,
    answer_order: VecDeque<String>,
    /// The principal the assigner claims as (a pending runner becomes enrolled in place).
    principal: Principal,
    ended: bool,
}

fn lock(session: &Session) -> MutexGuard<'_, SessionState> {
    session.state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SessionState {
    fn push(&mut self, event: PushedEvent) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        if !matches!(event, PushedEvent::Recycle(_)) {
            self.replay.push_back(Pushed { sequence, event });
            while self.replay.len() > MAX_REPLAYED_EVENTS {
                self.replay.pop_front();
            }
        }
        sequence
    }

    fn push_cancel(&mut self, cancel: PushedCancel) {
        let held = HeldJob {
            job: cancel.job,
            epoch: cancel.epoch,
        };
        if cancel.reason == CancelReason::LeaseLost {
            self.held.remove(&cancel.job);
        } else if !self.cancels_sent.insert(held) {
            return;
        }
        self.push(PushedEvent::Cancel(cancel));
    }

    /// What the runner may still be given: its credit, less nothing, capped so that held jobs
    /// plus credit never pass max_jobs.
    fn cap_credit(&mut self) {
        let room = self.max_jobs.saturating_sub(self.held.len() as u32);
        self.credit = self.credit.min(room);
    }

    fn remember(&mut self, request_id: &str, answer: JobReportAnswer) {
        if self
            .answers
            .insert(request_id.to_string(), answer)
            .is_none()
        {
            self.answer_order.push_back(request_id.to_string());
        }
        while self.answer_order.len() > MAX_REMEMBERED_ANSWERS {
            if let Some(oldest) = self.answer_order.pop_front() {
                self.answers.remove(&oldest);
            }
        }
    }
}

impl AttachedRunners {
    fn all(&self) -> Vec<Arc<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn of_runner(&self, runner: RunnerId) -> Vec<Arc<Session>> {
        if self.count.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        self.all()
            .into_iter()
            .filter(|session| session.runner == runner)
            .collect()
    }

    /// The runner finished `job` (completed, failed, or lost it): it holds it no more, so the
    /// credit it asks for again is not held back by it.
    pub(crate) fn job_released(&self, runner: RunnerId, job: JobId) {
        for session in self.of_runner(runner) {
            let mut state = lock(&session);
            state.held.remove(&job);
        }
    }

    /// Someone cancelled `job`: tell the session holding it now, rather than at its next
    /// heartbeat.
    pub(crate) fn cancel_requested(&self, job: JobId, grace: Duration) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        for session in self.all() {
            let mut state = lock(&session);
            if let Some(&(epoch, _)) = state.held.get(&job) {
                state.push_cancel(PushedCancel {
                    job,
                    epoch,
                    reason: CancelReason::Requested,
                    message: "the job was cancelled".into(),
                    grace,
                });
                drop(state);
                session.events.send_modify(|version| *version += 1);
            }
        }
    }

    /// A session that could take a job of `kind` now (attached, active, enrolled, with credit
    /// left), with one credit taken for it; `None` when there is none.
    fn reserve_for(
        &self,
        kind: &str,
        draining: &crate::changes::DrainingRunners,
    ) -> Option<Reservation> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        for session in sessions.values() {
            let mut state = lock(session);
            let waiting = state.attached
                && !state.recycling
                && !state.draining
                && !state.ended
                && state.credit > 0
                && matches!(state.principal, Principal::Runner(_))
                && state.kinds.iter().any(|taken| taken == kind)
                && !draining.contains(session.runner);
            if waiting {
                state.credit -= 1;
                let claim = muster_store::ClaimRequest {
                    runner: session.runner,
                    kinds: state.kinds.clone(),
                    offer: state.offer.clone(),
                    max_jobs: 1,
                };
                return Some(Reservation {
                    session: Arc::clone(session),
                    claim,
                    settled: false,
                });
            }
        }
        None
    }

    /// The runner's session on this coordinator, if it has one.
    fn live_session_of(&self, runner: RunnerId) -> Option<Arc<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .find(|session| session.runner == runner && !lock(session).ended)
            .cloned()
    }

    /// Start `session`, ending the runner's earlier sessions here: a runner has one session
    /// at a time, so two assigners never claim for it and its streams never compete.
    fn replace_sessions_of(&self, session: Arc<Session>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, earlier| {
            if earlier.runner != session.runner {
                return true;
            }
            lock(earlier).ended = true;
            earlier.events.send_modify(|version| *version += 1);
            earlier.assigner_wake.send_modify(|version| *version += 1);
            false
        });
        sessions.insert(session.id.clone(), session);
        self.count.store(sessions.len(), Ordering::Release);
    }

    /// Forget sessions whose stream has been gone longer than a runner could still reattach.
    fn forget_expired(&self) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, session| {
            let mut state = lock(session);
            let expired = state
                .detached_at
                .is_some_and(|since| since.elapsed() > DETACHED_SESSION_KEPT);
            if expired {
                state.ended = true;
                session.assigner_wake.send_modify(|version| *version += 1);
            }
            !expired
        });
        self.count.store(sessions.len(), Ordering::Release);
    }

    /// The number of sessions (attached or waiting for their runner), for metrics and tests.
    fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

/// One credit of a waiting session, taken for a submit that may be handed to it. Given back
/// unless the claim made in the submit's commit is delivered.
struct Reservation {
    session: Arc<Session>,
    claim: muster_store::ClaimRequest,
    settled: bool,
}

impl Reservation {
    /// Push what the submit's claim leased to the session, and give back the credit it did not
    /// use.
    fn deliver(mut self, claimed: Vec<ClaimedJob>) {
        self.settled = true;
        let mut state = lock(&self.session);
        if claimed.is_empty() {
            state.credit += 1;
            state.cap_credit();
        }
        for job in claimed {
            let id = job.job.id;
            let epoch = job.lease.epoch;
            let sequence = state.push(PushedEvent::Assignment(Box::new(job)));
            state.held.insert(id, (epoch, sequence));
        }
        drop(state);
        self.session.events.send_modify(|version| *version += 1);
        self.session
            .assigner_wake
            .send_modify(|version| *version += 1);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            let mut state = lock(&self.session);
            state.credit += 1;
            state.cap_credit();
        }
    }
}

impl Coordinator {
    /// Store one new job; when an attached runner is waiting for work of its kind, claim for
    /// that runner in the same commit and push the assignment (the direct hand-off: enqueue to
    /// claim costs one durable write, not two in series). The claim is an ordinary one, so the
    /// runner gets older pending work it can take first, and nothing it cannot.
    pub(crate) async fn submit_handing_off(
        &self,
        new_job: muster_core::NewJob,
    ) -> Result<muster_store::Submitted, ServiceError> {
        let Some(reservation) = self
            .attached
            .reserve_for(&new_job.spec.kind, &self.draining_runners)
        else {
            return self
                .store
                .submit_jobs(vec![new_job])
                .await?
                .pop()
                .ok_or_else(|| ServiceError::internal("store answered no job for one submitted"));
        };
        let now = self.clock.now();
        let (mut submitted, claimed) = self
            .store
            .submit_and_claim(vec![new_job], reservation.claim.clone(), now)
            .await?;
        if !claimed.is_empty() {
            self.job_changes
                .changed_many(claimed.iter().map(|claimed| claimed.job.id));
            self.metrics.record_claim(claimed.iter().map(|claimed| {
                let ready = claimed.job.created_at.max(claimed.job.lifecycle.run_after);
                now.millis_since(ready) as f64 / 1000.0
            }));
        }
        let mut submitted = submitted
            .pop()
            .ok_or_else(|| ServiceError::internal("store answered no job for one submitted"))?;
        // The submit's answer shows the job as the same commit left it: leased, when it was.
        if let Some(leased) = claimed
            .iter()
            .find(|claimed| claimed.job.id == submitted.job.id)
        {
            submitted.job = leased.job.clone();
        }
        reservation.deliver(claimed);
        Ok(submitted)
    }
}

/// One attached stream of a session: the events to push, and the runner's messages to apply.
/// Dropping it detaches the stream (the session and its leases stay for a reattach).
pub struct AttachedStream {
    coordinator: Coordinator,
    session: Arc<Session>,
    generation: u64,
    principal: Principal,
    /// The highest sequence this stream has pushed (or the runner said it had handled).
    cursor: u64,
    events: watch::Receiver<u64>,
    recycle_at: tokio::time::Instant,
    /// Set once Recycle was pushed: the stream ends at this instant.
    ends_at: Option<tokio::time::Instant>,
    heartbeat_interval: Duration,
}

/// A successful attach: the terms, and the stream.
pub struct Attachment {
    pub accepted: Accepted,
    pub stream: AttachedStream,
}

fn check_hello(hello: &Hello) -> Result<(), ServiceError> {
    if hello.protocol_version < PROTOCOL_VERSION {
        return Err(ServiceError::invalid_input(format!(
            "protocol_version: this coordinator speaks version {PROTOCOL_VERSION}, the runner at most {}",
            hello.protocol_version
        )));
    }
    crate::protocol::check_runner_kinds(&hello.kinds)?;
    if hello.max_jobs == 0 || hello.max_jobs > MAX_CLAIM_JOBS {
        return Err(ServiceError::invalid_input(format!(
            "max_jobs: must be between 1 and {MAX_CLAIM_JOBS}, got {}",
            hello.max_jobs
        )));
    }
    if hello.held_jobs.len() > MAX_HEARTBEAT_JOBS {
        return Err(ServiceError::invalid_input(format!(
            "held_jobs: at most {MAX_HEARTBEAT_JOBS}"
        )));
    }
    if hello.held_jobs.iter().any(|held| held.epoch == 0) {
        return Err(ServiceError::invalid_input(
            "held_jobs: every held job needs its lease epoch (at least 1)",
        ));
    }
    hello
        .offer
        .validate("capabilities")
        .map_err(|error| ServiceError::invalid_input(error.to_string()))?;
    for (field, text) in [("hostname", &hello.hostname), ("version", &hello.version)] {
        if let Some(text) = text {
            muster_core::check_runner_report(field, text)
                .map_err(|error| ServiceError::invalid_input(error.to_string()))?;
        }
    }
    Ok(())
}

/// A stream's planned lifetime: `base` give or take [`LIFETIME_JITTER`].
fn jittered(base: Duration) -> Duration {
    let factor = rand::rng().random_range((1.0 - LIFETIME_JITTER)..=(1.0 + LIFETIME_JITTER));
    base.mul_f64(factor)
}

fn new_session_id() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl Coordinator {
    /// Attach a runner's stream: check its Hello, continue the session it names (or start one),
    /// keep the leases of the jobs it holds and cancel those it lost, and answer the terms. The
    /// stream then pushes the replay of what the runner missed, and new events as they come.
    pub async fn attach_runner(
        &self,
        principal: &Principal,
        hello: Hello,
    ) -> Result<Attachment, ServiceError> {
        muster_core::authorize(principal, muster_core::Action::RunnerHeartbeat)?;
        let runner = principal
            .runner_id()
            .ok_or_else(|| ServiceError::forbidden("the runner protocol takes a runner token"))?;
        check_hello(&hello)?;
        let binding = self.auth.binding(runner, self.store.as_ref()).await?;
        crate::protocol::check_claim_within_binding(&binding, &hello.kinds, &hello.offer)?;
        let features: Vec<String> = SUPPORTED_FEATURES
            .iter()
            .filter(|feature| hello.features.iter().any(|asked| asked == *feature))
            .map(|feature| feature.to_string())
            .collect();
        let resume_allowed = features.iter().any(|feature| feature == FEATURE_RESUME);
        self.attached.forget_expired();

        // Heard from: the runner is online, and its drain state is what it says.
        self.runner_heartbeat(
            principal,
            RunnerHeartbeat {
                draining: hello.draining,
                jobs: Vec::new(),
                hostname: hello.hostname.clone(),
                version: hello.version.clone(),
            },
        )
        .await?;

        let existing = hello
            .resume_session_id
            .as_ref()
            .filter(|_| resume_allowed)
            .and_then(|id| {
                self.attached
                    .sessions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(id)
                    .cloned()
            })
            .filter(|session| session.runner == runner && !lock(session).ended);
        let resumed = existing.is_some();
        let session = match existing {
            Some(session) => session,
            None => self.new_session(runner, principal.clone()),
        };

        // The reconnect rule, steps 1 and 2: keep what the runner holds, cancel what it lost.
        let mut leases = Vec::new();
        let mut lost = Vec::new();
        let mut cancelling = Vec::new();
        for held in &hello.held_jobs {
            let target = LeasedJob {
                job: held.job,
                epoch: Some(held.epoch),
            };
            match self
                .job_heartbeat(principal, target, None, Vec::new())
                .await
            {
                Ok(extended) => {
                    if extended.cancel {
                        cancelling.push(*held);
                    }
                    leases.push((held.job, extended.lease));
                }
                Err(error)
                    if matches!(error.code(), ErrorCode::LeaseLost | ErrorCode::NotFound) =>
                {
                    lost.push(*held);
                }
                Err(error) => return Err(error),
            }
        }
        // Without a session to replay from, jobs leased to the runner but never started are
        // sent again (their assignment may have died with the stream or the coordinator).
        let mut resend = Vec::new();
        if !resumed {
            let named: HashSet<JobId> = hello.held_jobs.iter().map(|held| held.job).collect();
            let page = self
                .store
                .list_jobs(
                    JobFilter {
                        state: Some(JobState::Claimed),
                        runner_id: Some(runner),
                        ..JobFilter::default()
                    },
                    PageRequest {
                        // The named ones are on the page too.
                        limit: (hello.max_jobs as usize + hello.held_jobs.len()).min(1000) as u32,
                        cursor: None,
                    },
                )
                .await?;
            for job in page.items {
                if named.contains(&job.id) {
                    continue;
                }
                if let Some(expires_at) = job.lifecycle.lease_expires_at {
                    let lease = Lease {
                        epoch: job.lifecycle.lease_epoch,
                        expires_at,
                        ttl_ms: i64::from(job.lifecycle.policy.lease_ttl_s) * 1000,
                    };
                    resend.push(ClaimedJob { job, lease });
                }
            }
        }

        let grace = self.config.cancel_grace;
        let (generation, credit, resume_from) = {
            let mut state = lock(&session);
            state.generation += 1;
            state.attached = true;
            state.recycling = false;
            state.detached_at = None;
            state.max_jobs = hello.max_jobs;
            state.draining = hello.draining;
            state.kinds = hello.kinds.clone();
            state.offer = hello.offer.clone();
            state.hostname = hello.hostname.clone();
            state.version = hello.version.clone();
            state.held.clear();
            for (job, lease) in &leases {
                state.held.insert(*job, (lease.epoch, 0));
            }
            for held in lost {
                state.push_cancel(PushedCancel {
                    job: held.job,
                    epoch: held.epoch,
                    reason: CancelReason::LeaseLost,
                    message: "the runner no longer holds this job's lease".into(),
                    grace: Duration::ZERO,
                });
            }
            for held in cancelling {
                state.push_cancel(PushedCancel {
                    job: held.job,
                    epoch: held.epoch,
                    reason: CancelReason::Requested,
                    message: "the job was cancelled".into(),
                    grace,
                });
            }
            for claimed in resend {
                let epoch = claimed.lease.epoch;
                let job = claimed.job.id;
                let sequence = state.push(PushedEvent::Assignment(Box::new(claimed)));
                state.held.insert(job, (epoch, sequence));
            }
            // Assignments replayed below count as held too.
            let resume_from = if resumed {
                hello.resume_after_sequence
            } else {
                0
            };
            let replayed: Vec<(JobId, u64, u64)> = state
                .replay
                .iter()
                .filter(|pushed| pushed.sequence > resume_from)
                .filter_map(|pushed| match &pushed.event {
                    PushedEvent::Assignment(claimed) => {
                        Some((claimed.job.id, claimed.lease.epoch, pushed.sequence))
                    }
                    _ => None,
                })
                .collect();
            for (job, epoch, sequence) in replayed {
                state.held.entry(job).or_insert((epoch, sequence));
            }
            state.credit = hello.max_jobs;
            state.cap_credit();
            (state.generation, state.credit, resume_from)
        };
        session.events.send_modify(|version| *version += 1);
        session.assigner_wake.send_modify(|version| *version += 1);

        let heartbeat_interval = self.config.heartbeat_interval;
        let stream_lifetime = jittered(self.config.runner_stream_lifetime);
        let enrolled = matches!(principal, Principal::Runner(_));
        let mut events = session.events.subscribe();
        events.mark_changed();
        Ok(Attachment {
            accepted: Accepted {
                protocol_version: PROTOCOL_VERSION,
                features,
                session_id: session.id.clone(),
                resumed,
                heartbeat_interval,
                stream_lifetime,
                runner_id: runner,
                enrolled,
                credit,
                leases,
            },
            stream: AttachedStream {
                coordinator: self.clone(),
                session,
                generation,
                principal: principal.clone(),
                cursor: resume_from,
                events,
                recycle_at: tokio::time::Instant::now() + stream_lifetime,
                ends_at: None,
                heartbeat_interval,
            },
        })
    }

    fn new_session(&self, runner: RunnerId, principal: Principal) -> Arc<Session> {
        let session = Arc::new(Session {
            id: new_session_id(),
            runner,
            state: Mutex::new(SessionState {
                generation: 0,
                attached: false,
                recycling: false,
                detached_at: None,
                next_sequence: 1,
                replay: VecDeque::new(),
                held: HashMap::new(),
                cancels_sent: HashSet::new(),
                credit: 0,
                max_jobs: 0,
                draining: false,
                kinds: Vec::new(),
                offer: Capabilities::default(),
                hostname: None,
                version: None,
                answers: HashMap::new(),
                answer_order: VecDeque::new(),
                principal,
                ended: false,
            }),
            events: watch::channel(0).0,
            assigner_wake: watch::channel(0).0,
        });
        self.attached.replace_sessions_of(Arc::clone(&session));
        tokio::spawn(assign(self.clone(), Arc::clone(&session)));
        session
    }

    /// Sessions this coordinator keeps (attached, or waiting for their runner to reattach).
    pub fn attached_sessions(&self) -> usize {
        self.attached.len()
    }

    /// The job's current lease epoch for a `lease_lost` answer to `runner`, when the runner may
    /// see the job (its organization's jobs, or the shared ones for a cluster runner).
    async fn current_epoch_for(&self, runner: RunnerId, job: JobId) -> Option<u64> {
        let record = self.store.get_job(job).await.ok()?;
        let runner_record = self.store.get_runner(runner).await.ok()?;
        muster_core::organization::runner_may_take(
            runner_record.organization_id.as_deref(),
            &record.organization.id,
            record.organization.shared_runners,
        )
        .then_some(record.lifecycle.lease_epoch)
    }

    /// A refusal of a job-scoped call, with the current epoch when it is `lease_lost`.
    pub async fn lease_refusal(
        &self,
        principal: &Principal,
        job: JobId,
        error: ServiceError,
    ) -> LeaseRefusal {
        let current_epoch = match (error.code(), principal.runner_id()) {
            (ErrorCode::LeaseLost, Some(runner)) => {
                self.attached.job_released(runner, job);
                Some(self.current_epoch_for(runner, job).await.unwrap_or(0))
            }
            _ => None,
        };
        LeaseRefusal {
            error,
            current_epoch,
        }
    }

    /// Apply one job-scoped report: the same service call as the unary route.
    pub async fn apply_job_report(
        &self,
        principal: &Principal,
        report: JobReport,
    ) -> Result<JobReportAnswer, ServiceError> {
        if report.target().epoch.unwrap_or(0) == 0 {
            return Err(ServiceError::invalid_input(
                "lease_epoch: required, the epoch of the lease the job was assigned under",
            ));
        }
        Ok(match report {
            JobReport::Progress(target, progress) => {
                JobReportAnswer::Progress(self.report_progress(principal, target, progress).await?)
            }
            JobReport::Logs(target, entries) => {
                JobReportAnswer::Logs(self.append_logs(principal, target, entries).await?)
            }
            JobReport::Complete {
                target,
                result,
                outputs,
                sig,
            } => JobReportAnswer::Complete(Box::new(
                self.complete_signed(principal, target, result, sig, outputs)
                    .await?,
            )),
            JobReport::Fail(target, failure) => {
                JobReportAnswer::Fail(Box::new(self.fail(principal, target, failure).await?))
            }
        })
    }
}

/// The session's assigner: while a stream is attached, the runner active and credit left, it
/// claims due jobs for the session and pushes them. A claim is never abandoned half way (the
/// task is not cancelled inside one), so no job is leased to a session that never hears of it.
async fn assign(coordinator: Coordinator, session: Arc<Session>) {
    let mut wake = session.assigner_wake.subscribe();
    let mut failures = 0u32;
    loop {
        wake.borrow_and_update();
        let mut pending = coordinator.store.pending_signal();
        pending.borrow_and_update();
        let claim = {
            let state = lock(&session);
            if state.ended {
                return;
            }
            (state.attached && !state.recycling && !state.draining && state.credit > 0).then(|| {
                (
                    state.principal.clone(),
                    Claim {
                        kinds: state.kinds.clone(),
                        offer: state.offer.clone(),
                        max_jobs: Some(state.credit),
                        wait_ms: Some(0),
                    },
                )
            })
        };
        let Some((principal, claim)) = claim else {
            tokio::select! {
                _ = wake.changed() => {}
                _ = coordinator.shutdown.cancelled() => return,
            }
            continue;
        };
        match coordinator.claim(&principal, claim).await {
            Ok(claimed) if !claimed.is_empty() => {
                failures = 0;
                // The session may have been replaced while the claim ran (the runner came back
                // without resuming it): the jobs go to the runner's session now, so none is
                // leased to a session nobody will read. With none, the runner's next attach
                // sends them again (they are claimed and not started).
                let target = if lock(&session).ended {
                    coordinator.attached.live_session_of(session.runner)
                } else {
                    Some(Arc::clone(&session))
                };
                if let Some(target) = target {
                    {
                        let mut state = lock(&target);
                        for job in claimed {
                            let id = job.job.id;
                            let epoch = job.lease.epoch;
                            let sequence = state.push(PushedEvent::Assignment(Box::new(job)));
                            state.held.insert(id, (epoch, sequence));
                            state.credit = state.credit.saturating_sub(1);
                        }
                    }
                    target.events.send_modify(|version| *version += 1);
                }
                continue;
            }
            Ok(_) => failures = 0,
            Err(error) if error.code() == ErrorCode::RunnerNotEnrolled => {
                // Approved meanwhile? Then claim as the enrolled runner, on this stream.
                if let Ok(runner) = coordinator.store.get_runner(session.runner).await
                    && runner.enrollment == muster_core::Enrollment::Enrolled
                {
                    lock(&session).principal = Principal::Runner(session.runner);
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(ENROLLMENT_RECHECK) => {}
                    _ = wake.changed() => {}
                    _ = coordinator.shutdown.cancelled() => return,
                }
                continue;
            }
            Err(error) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(runner = %session.runner, error = %error.message(), "claim for an attached runner failed; retrying");
                }
                let pause = ASSIGNMENT_RECHECK * failures.min(8);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = coordinator.shutdown.cancelled() => return,
                }
                continue;
            }
        }
        tokio::select! {
            _ = pending.changed() => {}
            _ = wake.changed() => {}
            _ = tokio::time::sleep(ASSIGNMENT_RECHECK) => {}
            _ = coordinator.shutdown.cancelled() => return,
        }
    }
}

impl AttachedStream {
    /// The session this stream belongs to.
    pub fn session_id(&self) -> &str {
        &self.session.id
    }

    /// How often the runner heartbeats; silence for two intervals means the stream is dead.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// The next event to push: the replay first, then new ones as they come. `None` when the
    /// stream should end: a newer stream of the session took over, the recycle window passed,
    /// or the coordinator shut down after telling the runner to move.
    pub async fn next_event(&mut self) -> Option<Pushed> {
        loop {
            self.events.borrow_and_update();
            {
                let mut state = lock(&self.session);
                if state.generation != self.generation || state.ended {
                    return None;
                }
                let cursor = self.cursor;
                if let Some(pushed) = state
                    .replay
                    .iter()
                    .find(|pushed| pushed.sequence > cursor)
                    .cloned()
                {
                    self.cursor = pushed.sequence;
                    return Some(pushed);
                }
                let shutting_down = self.coordinator.shutdown.is_cancelled();
                let lifetime_over = tokio::time::Instant::now() >= self.recycle_at;
                if self.ends_at.is_none() && (shutting_down || lifetime_over) {
                    let window = if shutting_down {
                        Duration::from_secs(1)
                    } else {
                        RECONNECT_WINDOW
                    };
                    self.ends_at = Some(tokio::time::Instant::now() + window);
                    state.recycling = true;
                    let reconnect_by = self
                        .coordinator
                        .clock
                        .now()
                        .plus_millis(window.as_millis() as i64);
                    let reason = if shutting_down {
                        RecycleReason::Shutdown
                    } else {
                        RecycleReason::StreamLifetime
                    };
                    let event = PushedEvent::Recycle(PushedRecycle {
                        reconnect_by,
                        reason,
                    });
                    let sequence = state.push(event.clone());
                    self.cursor = self.cursor.max(sequence);
                    return Some(Pushed { sequence, event });
                }
            }
            let ends_at = self.ends_at;
            tokio::select! {
                changed = self.events.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = tokio::time::sleep_until(self.recycle_at), if ends_at.is_none() => {}
                _ = self.coordinator.shutdown.cancelled(), if ends_at.is_none() => {}
                _ = async {
                    if let Some(at) = ends_at {
                        tokio::time::sleep_until(at).await;
                    }
                }, if ends_at.is_some() => return None,
            }
        }
    }

    /// A heartbeat on the stream: extend the listed jobs' leases (pushing a cancel for each one
    /// lost or being cancelled), record the runner alive, change its drain state when given, and
    /// forget replayable events up to `last_sequence`.
    pub async fn heartbeat(
        &self,
        jobs: Vec<HeldJob>,
        draining: Option<bool>,
        last_sequence: u64,
    ) -> Result<HeartbeatAnswer, ServiceError> {
        if jobs.len() > MAX_HEARTBEAT_JOBS {
            return Err(ServiceError::invalid_input(format!(
                "jobs: at most {MAX_HEARTBEAT_JOBS}"
            )));
        }
        let (draining, hostname, version) = {
            let mut state = lock(&self.session);
            if let Some(draining) = draining {
                state.draining = draining;
            }
            state
                .replay
                .retain(|pushed| pushed.sequence > last_sequence);
            (
                state.draining,
                state.hostname.clone(),
                state.version.clone(),
            )
        };
        let mut leases = Vec::new();
        let mut pushed = Vec::new();
        for held in &jobs {
            let target = LeasedJob {
                job: held.job,
                epoch: Some(held.epoch),
            };
            match self
                .coordinator
                .job_heartbeat(&self.principal, target, None, Vec::new())
                .await
            {
                Ok(extended) => {
                    if extended.cancel {
                        pushed.push(PushedCancel {
                            job: held.job,
                            epoch: held.epoch,
                            reason: CancelReason::Requested,
                            message: "the job was cancelled".into(),
                            grace: self.coordinator.config.cancel_grace,
                        });
                    }
                    leases.push((held.job, extended.lease));
                }
                Err(error)
                    if matches!(error.code(), ErrorCode::LeaseLost | ErrorCode::NotFound) =>
                {
                    pushed.push(PushedCancel {
                        job: held.job,
                        epoch: held.epoch,
                        reason: CancelReason::LeaseLost,
                        message: "the runner no longer holds this job's lease".into(),
                        grace: Duration::ZERO,
                    });
                }
                Err(error) => return Err(error),
            }
        }
        self.coordinator
            .runner_heartbeat(
                &self.principal,
                RunnerHeartbeat {
                    draining,
                    jobs: Vec::new(),
                    hostname,
                    version,
                },
            )
            .await?;
        {
            let mut state = lock(&self.session);
            // The runner's list is the truth about what it holds, except for assignments it
            // had not handled yet when it sent the list.
            let listed: HashSet<JobId> = jobs.iter().map(|held| held.job).collect();
            state
                .held
                .retain(|job, (_, sequence)| listed.contains(job) || *sequence > last_sequence);
            for cancel in pushed {
                state.push_cancel(cancel);
            }
            state.cap_credit();
        }
        self.session.events.send_modify(|version| *version += 1);
        self.session
            .assigner_wake
            .send_modify(|version| *version += 1);
        Ok(HeartbeatAnswer {
            leases,
            server_time: self.coordinator.clock.now(),
        })
    }

    /// More credit: the runner can take `additional` more jobs (capped at max_jobs less those
    /// it holds).
    pub fn ready(&self, additional: u32) -> Result<(), ServiceError> {
        if additional == 0 {
            return Err(ServiceError::invalid_input("additional_credit: at least 1"));
        }
        {
            let mut state = lock(&self.session);
            state.credit = state.credit.saturating_add(additional);
            state.cap_credit();
        }
        self.session
            .assigner_wake
            .send_modify(|version| *version += 1);
        Ok(())
    }

    /// A job-scoped request on the stream, answered once per `request_id`.
    pub async fn report(&self, request_id: &str, report: JobReport) -> ReportOutcome {
        if request_id.is_empty() || request_id.chars().count() > 64 {
            return ReportOutcome::Rejected(LeaseRefusal {
                error: ServiceError::invalid_input(
                    "request_id: required on job-scoped messages, 1 to 64 characters",
                ),
                current_epoch: None,
            });
        }
        if let Some(answer) = lock(&self.session).answers.get(request_id).cloned() {
            return ReportOutcome::Duplicate(answer);
        }
        let job = report.target().job;
        match self
            .coordinator
            .apply_job_report(&self.principal, report)
            .await
        {
            Ok(answer) => {
                lock(&self.session).remember(request_id, answer.clone());
                ReportOutcome::Accepted(answer)
            }
            Err(error) => ReportOutcome::Rejected(
                self.coordinator
                    .lease_refusal(&self.principal, job, error)
                    .await,
            ),
        }
    }
}

impl Drop for AttachedStream {
    fn drop(&mut self) {
        let mut state = lock(&self.session);
        if state.generation == self.generation {
            state.attached = false;
            state.detached_at = Some(tokio::time::Instant::now());
            drop(state);
            self.session
                .assigner_wake
                .send_modify(|version| *version += 1);
        }
    }
}
