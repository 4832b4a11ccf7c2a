//! A job's attempt history: one record per try by one runner. The job row holds only the
//! current attempt, so an attempt that ends without completing (failed, lost, timed out,
//! cancelled) is written to the history when it ends, and the history as shown is those records
//! followed by the current attempt read from the job itself. A first-try success, the common
//! case, writes nothing more than the job row.

use crate::{JobError, JobLifecycle, JobState, RunnerId, Timestamp};

/// How an attempt ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 4] = [
        AttemptOutcome::InProgress,
        AttemptOutcome::Completed,
        AttemptOutcome::Failed,
        AttemptOutcome::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::InProgress => "in_progress",
            AttemptOutcome::Completed => "completed",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<AttemptOutcome> {
        AttemptOutcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == text)
    }
}

/// One try of a job by one runner. `lease_epoch` names it uniquely within its job (epochs only
/// grow, a user's retry included, while attempt numbers start over after one).
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub lease_epoch: u64,
    pub runner_id: Option<RunnerId>,
    pub claimed_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub outcome: AttemptOutcome,
    pub error: Option<JobError>,
}

/// The attempt a transition from `before` to `after` at `now` ended without completing it, to
/// keep in the history; `None` when no attempt ended that way (nothing was leased, the same
/// attempt goes on, or it completed and the job row keeps it).
pub fn ended_attempt(
    before: &JobLifecycle,
    after: &JobLifecycle,
    now: Timestamp,
) -> Option<AttemptRecord> {
    if !before.state.is_leased() {
        return None;
    }
    let same_attempt_goes_on = after.state.is_leased() && after.lease_epoch == before.lease_epoch;
    if same_attempt_goes_on || after.state == JobState::Completed {
        return None;
    }
    let outcome = if after.state == JobState::Cancelled {
        AttemptOutcome::Cancelled
    } else {
        AttemptOutcome::Failed
    };
    Some(AttemptRecord {
        attempt: before.attempt,
        lease_epoch: before.lease_epoch,
        runner_id: before.runner_id,
        claimed_at: before.claimed_at,
        started_at: before.started_at,
        ended_at: Some(after.finished_at.unwrap_or(now)),
        outcome,
        error: after.error.clone(),
    })
}

/// The attempt the job row itself describes: the one in progress, or the one that completed
/// the job. A job that failed or was cancelled has its last attempt in the history already.
pub fn attempt_in_job(lifecycle: &JobLifecycle) -> Option<AttemptRecord> {
    let outcome = match lifecycle.state {
        JobState::Claimed | JobState::Running | JobState::Cancelling => AttemptOutcome::InProgress,
        JobState::Completed => AttemptOutcome::Completed,
        JobState::Pending | JobState::Failed | JobState::Cancelled => return None,
    };
    Some(AttemptRecord {
        attempt: lifecycle.attempt,
        lease_epoch: lifecycle.lease_epoch,
        runner_id: lifecycle.runner_id,
        claimed_at: lifecycle.claimed_at,
        started_at: lifecycle.started_at,
        ended_at: match outcome {
            AttemptOutcome::Completed => lifecycle.finished_at,
            _ => None,
        },
        outcome,
        error: None,
    })
}

/// The whole history, oldest first: the kept records, then the job's own attempt unless a kept
/// record is that attempt already.
pub fn attempt_history(
    mut kept: Vec<AttemptRecord>,
    lifecycle: &JobLifecycle,
) -> Vec<AttemptRecord> {
    kept.sort_by_key(|record| record.lease_epoch);
    if let Some(current) = attempt_in_job(lifecycle)
        && kept
            .last()
            .is_none_or(|last| last.lease_epoch < current.lease_epoch)
    {
        kept.push(current);
    }
    kept
}
