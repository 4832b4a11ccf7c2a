//! Jobs as stored: what a submitted job is, refusals by name, the retry jitter, the transitions
//! a store applies (user calls, failures, reaping), counts and DAGs read back.

use std::collections::BTreeMap;

use muster_core::{
    JobError, JobId, JobLifecycle, JobRecord, JobState, NewJob, Progress, ReapOutcome, Timestamp,
    TransitionError, jitter_unit_from_seed,
};
use serde_json::Value;

use crate::{JobCall, QueueDepth, StoreError};

/// The state codes of finished jobs, for SQL.
pub(crate) const TERMINAL_STATE_CODES: &str = "4, 5, 6";

pub(crate) fn job_not_found(id: JobId) -> StoreError {
    StoreError::NotFound(format!("job {id}"))
}

/// Pseudo-random but repeatable retry jitter for one attempt of the job stored at row `seq`.
pub(crate) fn jitter_for(seq: i64, attempt: u32) -> f64 {
    jitter_unit_from_seed((seq as u64) ^ (u64::from(attempt) << 48))
}

/// The job a submission stores, as answered without reading it back: pending, with no progress,
/// result or outputs.
pub(crate) fn submitted_job(new_job: &NewJob) -> JobRecord {
    let spec = &new_job.spec;
    JobRecord {
        id: new_job.id,
        kind: spec.kind.clone(),
        payload: spec.payload.clone(),
        priority: spec.priority,
        requirements: spec.requirements.clone(),
        idempotency_key: spec.idempotency_key.clone(),
        created_at: new_job.created_at,
        progress: Progress::default(),
        result: None,
        inputs: spec.inputs.clone(),
        outputs: BTreeMap::new(),
        result_signature: None,
        organization: new_job.organization.clone(),
        lifecycle: new_job.initial_lifecycle(),
    }
}

/// Let `change` transition the lifecycle of `job` (stored at row `seq`); a refusal is answered
/// as the store error for `operation` and leaves the lifecycle as it was.
pub(crate) fn transition<T>(
    job: &mut JobRecord,
    seq: i64,
    operation: &'static str,
    change: impl FnOnce(&mut JobLifecycle, i64) -> Result<T, TransitionError>,
) -> Result<T, StoreError> {
    change(&mut job.lifecycle, seq)
        .map_err(|error| StoreError::from_transition(error, &job.id.to_string(), operation))
}

/// The lease holder's report of a failed attempt, with the retry jitter of the job at row `seq`.
pub(crate) fn fail(
    lifecycle: &mut JobLifecycle,
    seq: i64,
    call: JobCall,
    error: JobError,
    retryable: bool,
    now: Timestamp,
) -> Result<(), TransitionError> {
    let jitter = jitter_for(seq, lifecycle.attempt);
    lifecycle.fail(call.runner, call.epoch, error, retryable, jitter, now)
}

/// Apply a passed deadline to the job at row `seq`; `None` when none has passed.
pub(crate) fn reap(seq: i64, lifecycle: &mut JobLifecycle, now: Timestamp) -> Option<ReapOutcome> {
    let jitter = jitter_for(seq, lifecycle.attempt);
    lifecycle.reap(jitter, now)
}

/// A count read back as `(kind, state code, count)`; `None` for a state this version does not
/// know (a newer coordinator's).
pub(crate) fn queue_depth(kind: String, state_code: i64, count: i64) -> Option<QueueDepth> {
    JobState::from_code(state_code).map(|state| QueueDepth {
        kind,
        state,
        count: u64::try_from(count).unwrap_or(0),
    })
}

/// A job's DAG as stored.
pub(crate) fn dag_from_text(job: JobId, text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::Internal(format!("stored DAG of job {job}: {error}")))
}

#[cfg(test)]
mod tests {
    use muster_core::{JobSpec, RunnerId};

    use super::*;

    fn job() -> JobRecord {
        submitted_job(&NewJob {
            id: JobId::new(Timestamp(1_000), 7),
            created_at: Timestamp(1_000),
            spec: JobSpec::with_defaults("build"),
            organization: Default::default(),
        })
    }

    #[test]
    fn a_submitted_job_is_pending_without_progress_result_or_outputs() {
        let job = job();
        assert_eq!(job.state(), JobState::Pending);
        assert_eq!(job.kind, "build");
        assert_eq!(job.lifecycle.run_after, Timestamp(1_000));
        assert!(job.result.is_none() && job.outputs.is_empty());
        assert_eq!(job.progress, Progress::default());
    }

    #[test]
    fn a_refused_transition_names_the_job_and_the_operation_and_changes_nothing() {
        let mut job = job();
        let before = job.lifecycle.clone();
        let refused = transition(&mut job, 1, "retry", |lifecycle, _| {
            lifecycle.retry(Timestamp(2_000))
        });
        assert_eq!(
            refused,
            Err(StoreError::InvalidState {
                state: JobState::Pending,
                operation: "retry"
            })
        );
        assert_eq!(job.lifecycle, before);
        let runner = RunnerId::new(Timestamp(1), 9);
        let lease = transition(&mut job, 1, "claim", |lifecycle, _| {
            lifecycle.claim(runner, Timestamp(2_000))
        });
        assert!(lease.is_ok());
        let call = JobCall {
            runner: RunnerId::new(Timestamp(1), 10),
            job: job.id,
            epoch: None,
        };
        let lost = transition(&mut job, 1, "fail", |lifecycle, seq| {
            let error = JobError {
                reason: muster_core::FailureReason::RunnerError,
                message: "no".into(),
            };
            fail(lifecycle, seq, call, error, true, Timestamp(3_000))
        });
        assert_eq!(lost, Err(StoreError::LeaseLost(job.id.to_string())));
    }

    #[test]
    fn the_jitter_differs_between_attempts_and_jobs_but_repeats() {
        assert_eq!(jitter_for(5, 1), jitter_for(5, 1));
        assert_ne!(jitter_for(5, 1), jitter_for(5, 2));
        assert_ne!(jitter_for(5, 1), jitter_for(6, 1));
    }

    #[test]
    fn counts_of_unknown_states_are_left_out() {
        assert_eq!(
            queue_depth("a".into(), 0, 3),
            Some(QueueDepth {
                kind: "a".into(),
                state: JobState::Pending,
                count: 3
            })
        );
        assert_eq!(queue_depth("a".into(), 99, 3), None);
    }

    #[test]
    fn a_dag_that_is_not_json_is_corrupt_data() {
        let id = JobId::new(Timestamp(1), 1);
        assert_eq!(
            dag_from_text(id, r#"{"steps":[]}"#),
            Ok(serde_json::json!({"steps": []}))
        );
        assert!(matches!(
            dag_from_text(id, "{"),
            Err(StoreError::Internal(_))
        ));
    }
}
