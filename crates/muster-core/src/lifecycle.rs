use crate::{FailureReason, JobError, JobPolicy, JobState, RunnerId, Timestamp, backoff_delay_ms};

/// The time-limited right of one runner to work on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Grows with every claim of the job: a fencing token.
    pub epoch: u64,
    pub expires_at: Timestamp,
    pub ttl_ms: i64,
}

/// Why a transition was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransitionError {
    /// The caller does not hold the job's current lease (another runner, another epoch, or no
    /// lease at all any more).
    #[error("the lease on this job is not held by this runner at this epoch")]
    LeaseLost,
    /// The job's state does not allow this; names the state.
    #[error("not allowed while the job is {0}")]
    InvalidState(JobState),
    /// A pending job whose `run_after` is still in the future.
    #[error("the job is scheduled for later")]
    NotYetDue,
}

/// What the reaper did to a job whose time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReapOutcome {
    /// The attempt failed with this reason; the job is pending again or failed.
    AttemptFailed(FailureReason),
    /// A cancel waited too long for the runner and was finished without it.
    CancelFinished,
}

/// The part of a job that the state machine owns: state, attempts, lease and deadlines, as
/// plain values. A store loads a row into these and writes these back; only [`JobLifecycle`]'s
/// transitions change them.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleParts {
    pub state: JobState,
    pub policy: JobPolicy,
    /// Attempts started so far (0 before the first claim).
    pub attempt: u32,
    pub runner_id: Option<RunnerId>,
    /// The epoch of the latest lease; 0 before the first claim. Never decreases.
    pub lease_epoch: u64,
    pub lease_expires_at: Option<Timestamp>,
    /// When the current attempt times out (`timeout_s` after its claim).
    pub attempt_deadline_at: Option<Timestamp>,
    /// When a cancel stops waiting for the runner's confirmation.
    pub cancel_deadline_at: Option<Timestamp>,
    pub run_after: Timestamp,
    pub claimed_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub error: Option<JobError>,
}

/// The job and lease state machine.
///
/// Every change goes through a method here, so the SQLite and PostgreSQL stores share one set of
/// rules and the rules are tested without a store. Its parts can be read by anyone (it
/// dereferences to [`LifecycleParts`]) and changed by no one but these methods; a store makes
/// one from a row with [`JobLifecycle::from_parts`].
#[derive(Debug, Clone, PartialEq)]
pub struct JobLifecycle {
    parts: LifecycleParts,
}

impl std::ops::Deref for JobLifecycle {
    type Target = LifecycleParts;

    fn deref(&self) -> &LifecycleParts {
        &self.parts
    }
}

/// What a completion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The job is completed now.
    Completed,
    /// The same completion again (its answer was lost on the way): nothing changed, the first
    /// result stays.
    Repeated,
}

/// What a sign of life from the lease holder did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// The first one: the claimed job is running now.
    Started,
    /// The job was running already: nothing changed.
    Continued,
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// A pending job ended `cancelled` at once.
    Cancelled,
    /// A leased job is `cancelling` until its runner confirms or the grace ends.
    Cancelling,
    /// It was being cancelled already: nothing changed.
    AlreadyCancelling,
}

impl JobLifecycle {
    /// The lifecycle a stored row describes (stores only: nothing is checked).
    pub fn from_parts(parts: LifecycleParts) -> JobLifecycle {
        JobLifecycle { parts }
    }

    /// Its parts, to write to a row or show.
    pub fn into_parts(self) -> LifecycleParts {
        self.parts
    }

    pub fn new_pending(policy: JobPolicy, run_after: Timestamp) -> JobLifecycle {
        JobLifecycle::from_parts(LifecycleParts {
            state: JobState::Pending,
            policy,
            attempt: 0,
            runner_id: None,
            lease_epoch: 0,
            lease_expires_at: None,
            attempt_deadline_at: None,
            cancel_deadline_at: None,
            run_after,
            claimed_at: None,
            started_at: None,
            finished_at: None,
            error: None,
        })
    }

    fn lease_ttl_ms(&self) -> i64 {
        i64::from(self.policy.lease_ttl_s) * 1000
    }

    /// The current lease, when a runner holds one.
    pub fn lease(&self) -> Option<Lease> {
        match (self.state.is_leased(), self.lease_expires_at) {
            (true, Some(expires_at)) => Some(Lease {
                epoch: self.lease_epoch,
                expires_at,
                ttl_ms: self.lease_ttl_ms(),
            }),
            _ => None,
        }
    }

    /// When the reaper must look at this job next, or `None` when no timer runs.
    pub fn reap_at(&self) -> Option<Timestamp> {
        if !self.state.is_leased() {
            return None;
        }
        [
            self.lease_expires_at,
            self.attempt_deadline_at,
            self.cancel_deadline_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether the runner holding the lease should stop.
    pub fn cancel_requested(&self) -> bool {
        self.state == JobState::Cancelling
    }

    /// Grant a new lease to `runner`: a new attempt with a larger epoch.
    pub fn claim(&mut self, runner: RunnerId, now: Timestamp) -> Result<Lease, TransitionError> {
        if self.state != JobState::Pending {
            return Err(TransitionError::InvalidState(self.state));
        }
        if self.run_after > now {
            return Err(TransitionError::NotYetDue);
        }
        self.parts.state = JobState::Claimed;
        self.parts.attempt += 1;
        self.parts.lease_epoch += 1;
        self.parts.runner_id = Some(runner);
        self.parts.claimed_at = Some(now);
        self.parts.started_at = None;
        self.parts.finished_at = None;
        self.parts.error = None;
        self.parts.lease_expires_at = Some(now.plus_millis(self.lease_ttl_ms()));
        self.parts.attempt_deadline_at = Some(now.plus_seconds(self.policy.timeout_s));
        self.parts.cancel_deadline_at = None;
        Ok(Lease {
            epoch: self.lease_epoch,
            expires_at: now.plus_millis(self.lease_ttl_ms()),
            ttl_ms: self.lease_ttl_ms(),
        })
    }

    /// Refuse unless `runner` holds the current lease (and `epoch`, when given, is its epoch).
    pub fn check_lease(&self, runner: RunnerId, epoch: Option<u64>) -> Result<(), TransitionError> {
        let holds = self.state.is_leased()
            && self.runner_id == Some(runner)
            && epoch.is_none_or(|epoch| epoch == self.lease_epoch);
        if holds {
            Ok(())
        } else {
            Err(TransitionError::LeaseLost)
        }
    }

    /// A sign of life from the lease holder (heartbeat, progress, log): a claimed job is running
    /// from its first one.
    pub fn record_activity(
        &mut self,
        runner: RunnerId,
        epoch: Option<u64>,
        now: Timestamp,
    ) -> Result<Activity, TransitionError> {
        self.check_lease(runner, epoch)?;
        if self.state == JobState::Claimed {
            self.parts.state = JobState::Running;
            self.parts.started_at = Some(now);
            return Ok(Activity::Started);
        }
        Ok(Activity::Continued)
    }

    /// A job heartbeat: activity plus a lease extended by `lease_ttl_s` from now.
    pub fn extend_lease(
        &mut self,
        runner: RunnerId,
        epoch: Option<u64>,
        now: Timestamp,
    ) -> Result<Lease, TransitionError> {
        self.record_activity(runner, epoch, now)?;
        let expires_at = now.plus_millis(self.lease_ttl_ms());
        self.parts.lease_expires_at = Some(expires_at);
        Ok(Lease {
            epoch: self.lease_epoch,
            expires_at,
            ttl_ms: self.lease_ttl_ms(),
        })
    }

    /// The lease holder finished the work. A job being cancelled still completes: the work is
    /// done and its result is real.
    pub fn complete(
        &mut self,
        runner: RunnerId,
        epoch: Option<u64>,
        now: Timestamp,
    ) -> Result<Completion, TransitionError> {
        // The same completion again, from the runner whose completion ended this attempt: its
        // answer was lost on the way (a coordinator died after the commit), so it retried. It is
        // answered as done and changes nothing; the first result stays.
        let repeated = self.state == JobState::Completed
            && self.runner_id == Some(runner)
            && epoch.is_none_or(|epoch| epoch == self.lease_epoch);
        if repeated {
            return Ok(Completion::Repeated);
        }
        self.check_lease(runner, epoch)?;
        if self.started_at.is_none() {
            self.parts.started_at = Some(now);
        }
        self.parts.state = JobState::Completed;
        self.end_lease(now);
        Ok(Completion::Completed)
    }

    /// The lease holder reports a failed attempt. A job being cancelled, or a failure with reason
    /// `cancelled`, ends `cancelled`; otherwise the attempt is retried while attempts remain and
    /// `retryable` holds.
    pub fn fail(
        &mut self,
        runner: RunnerId,
        epoch: Option<u64>,
        error: JobError,
        retryable: bool,
        jitter_unit: f64,
        now: Timestamp,
    ) -> Result<(), TransitionError> {
        self.check_lease(runner, epoch)?;
        if self.state == JobState::Cancelling || error.reason == FailureReason::Cancelled {
            self.finish_cancelled(error.message, now);
        } else {
            self.fail_attempt(error, retryable, jitter_unit, now);
        }
        Ok(())
    }

    /// A user cancel: a pending job ends at once, a leased one waits `grace_ms` for its runner.
    /// Cancelling a job already being cancelled changes nothing.
    pub fn cancel(
        &mut self,
        grace_ms: i64,
        now: Timestamp,
    ) -> Result<CancelOutcome, TransitionError> {
        match self.state {
            JobState::Pending => {
                self.finish_cancelled("cancelled before it was claimed".to_string(), now);
                Ok(CancelOutcome::Cancelled)
            }
            JobState::Claimed | JobState::Running => {
                self.parts.state = JobState::Cancelling;
                self.parts.cancel_deadline_at = Some(now.plus_millis(grace_ms));
                Ok(CancelOutcome::Cancelling)
            }
            JobState::Cancelling => Ok(CancelOutcome::AlreadyCancelling),
            terminal => Err(TransitionError::InvalidState(terminal)),
        }
    }

    /// A user retry of a failed or cancelled job: pending again with a fresh allowance of
    /// attempts. The epoch keeps growing so older leases stay fenced off.
    pub fn retry(&mut self, now: Timestamp) -> Result<(), TransitionError> {
        if !matches!(self.state, JobState::Failed | JobState::Cancelled) {
            return Err(TransitionError::InvalidState(self.state));
        }
        self.parts.state = JobState::Pending;
        self.parts.attempt = 0;
        self.parts.run_after = now;
        self.parts.runner_id = None;
        self.parts.claimed_at = None;
        self.parts.started_at = None;
        self.parts.finished_at = None;
        self.parts.error = None;
        self.parts.lease_expires_at = None;
        self.parts.attempt_deadline_at = None;
        self.parts.cancel_deadline_at = None;
        Ok(())
    }

    /// Apply whatever deadline has passed by `now`: an unfinished cancel ends, an expired lease or
    /// a passed attempt deadline fails the attempt. `None` when nothing was due.
    pub fn reap(&mut self, jitter_unit: f64, now: Timestamp) -> Option<ReapOutcome> {
        if !self.state.is_leased() {
            return None;
        }
        let passed = |deadline: Option<Timestamp>| deadline.is_some_and(|at| at <= now);
        // Any passed deadline ends a cancel: retrying would bring back a job the user cancelled.
        if self.state == JobState::Cancelling
            && (passed(self.cancel_deadline_at)
                || passed(self.lease_expires_at)
                || passed(self.attempt_deadline_at))
        {
            self.finish_cancelled(
                "the runner did not confirm the cancel in time".to_string(),
                now,
            );
            return Some(ReapOutcome::CancelFinished);
        }
        let reason = if passed(self.attempt_deadline_at) {
            FailureReason::TimedOut
        } else if passed(self.lease_expires_at) {
            FailureReason::LeaseExpired
        } else {
            return None;
        };
        let message = match reason {
            FailureReason::TimedOut => format!(
                "attempt {} ran longer than timeout_s ({} s)",
                self.attempt, self.policy.timeout_s
            ),
            _ => format!(
                "attempt {}: no heartbeat from the runner within lease_ttl_s ({} s)",
                self.attempt, self.policy.lease_ttl_s
            ),
        };
        self.fail_attempt(JobError { reason, message }, true, jitter_unit, now);
        Some(ReapOutcome::AttemptFailed(reason))
    }

    /// The runner holding the lease is gone (deleted): the attempt fails as a lost lease.
    pub fn release(&mut self, message: String, jitter_unit: f64, now: Timestamp) {
        if !self.state.is_leased() {
            return;
        }
        if self.state == JobState::Cancelling {
            self.finish_cancelled(message, now);
        } else {
            let error = JobError {
                reason: FailureReason::LeaseExpired,
                message,
            };
            self.fail_attempt(error, true, jitter_unit, now);
        }
    }

    fn fail_attempt(&mut self, error: JobError, retryable: bool, jitter_unit: f64, now: Timestamp) {
        if retryable && self.attempt < self.policy.max_attempts {
            let delay = backoff_delay_ms(self.policy.backoff_base_s, self.attempt, jitter_unit);
            self.parts.state = JobState::Pending;
            self.parts.run_after = now.plus_millis(delay);
            // Back in the queue: nothing of the failed attempt but its error describes the job now.
            self.parts.runner_id = None;
            self.parts.claimed_at = None;
            self.parts.started_at = None;
            self.parts.lease_expires_at = None;
            self.parts.attempt_deadline_at = None;
            self.parts.cancel_deadline_at = None;
            self.parts.error = Some(error);
        } else {
            self.parts.state = JobState::Failed;
            self.parts.error = Some(error);
            self.end_lease(now);
        }
    }

    fn finish_cancelled(&mut self, message: String, now: Timestamp) {
        self.parts.state = JobState::Cancelled;
        self.parts.error = Some(JobError {
            reason: FailureReason::Cancelled,
            message,
        });
        self.end_lease(now);
    }

    fn end_lease(&mut self, now: Timestamp) {
        self.parts.finished_at = Some(now);
        self.parts.lease_expires_at = None;
        self.parts.attempt_deadline_at = None;
        self.parts.cancel_deadline_at = None;
    }
}
