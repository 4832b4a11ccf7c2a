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
pub(crate) fn queue_depth(
    organization: String,
    kind: String,
    state_code: i64,
    count: i64,
) -> Option<QueueDepth> {
    JobState::from_code(state_code).map(|state| QueueDepth {
        organization,
        kind,
        state,
        count: u64::try_from(count).unwrap_or(0),
    })
}

/// Pending counts by organization and kind, put together from what the claim indexes hold so
/// that counting reads no job row: `shared` counts by kind the pending jobs cluster-scoped
/// runners may take (those of `default` and of every organization that lets shared runners
/// in), `own` by organization and kind those of every organization but `default`, and
/// `sharing` names the organizations (other than `default`) that let shared runners in, whose
/// jobs are in both. `default`'s are what the shared count holds beyond theirs. A job's
/// `shared_runners` is its organization's setting, which never changes while it has jobs.
pub(crate) fn pending_depths(
    shared: &BTreeMap<String, u64>,
    own: &BTreeMap<(String, String), u64>,
    sharing: &std::collections::HashSet<String>,
) -> Vec<QueueDepth> {
    let mut default_by_kind = shared.clone();
    for ((organization, kind), count) in own {
        if sharing.contains(organization)
            && let Some(shared_count) = default_by_kind.get_mut(kind)
        {
            *shared_count = shared_count.saturating_sub(*count);
        }
    }
    let pending = |organization: &str, kind: &str, count: u64| QueueDepth {
        organization: organization.to_string(),
        kind: kind.to_string(),
        state: JobState::Pending,
        count,
    };
    let mut depths: Vec<QueueDepth> = default_by_kind
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(kind, count)| {
            pending(
                muster_core::organization::DEFAULT_ORGANIZATION,
                kind,
                *count,
            )
        })
        .collect();
    depths.extend(
        own.iter()
            .map(|((organization, kind), count)| pending(organization, kind, *count)),
    );
    depths
}

/// A job's DAG as stored.
pub(crate) fn dag_from_text(job: JobId, text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::Internal(format!("stored DAG of job {job}: {error}")))
}

/// The most kept attempts one read of a job's history answers: the newest ones. Attempts are
/// bounded by `max_attempts` per run of the job, but a job retried by hand again and again has
/// no bound of its own.
pub(crate) const KEPT_ATTEMPTS_READ: i64 = 1_000;

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
            queue_depth("default".into(), "a".into(), 0, 3),
            Some(QueueDepth {
                organization: "default".into(),
                kind: "a".into(),
                state: JobState::Pending,
                count: 3
            })
        );
        assert_eq!(queue_depth("default".into(), "a".into(), 99, 3), None);
    }

    #[test]
    fn pending_counts_of_default_are_the_shared_ones_beyond_the_sharing_organizations() {
        // Shared indexes: default's 5 "a" and alpha's 2 (alpha lets shared runners in); own
        // indexes: alpha's 2 "a" and solo's 4 "a" (solo does not).
        let shared = BTreeMap::from([("a".to_string(), 7), ("b".to_string(), 1)]);
        let own = BTreeMap::from([
            (("alpha".to_string(), "a".to_string()), 2),
            (("solo".to_string(), "a".to_string()), 4),
        ]);
        let sharing = std::collections::HashSet::from(["alpha".to_string()]);
        let mut counted: Vec<(String, String, u64)> = pending_depths(&shared, &own, &sharing)
            .into_iter()
            .map(|depth| (depth.organization, depth.kind, depth.count))
            .collect();
        counted.sort();
        let expected: Vec<(String, String, u64)> = [
            ("alpha", "a", 2),
            ("default", "a", 5),
            ("default", "b", 1),
            ("solo", "a", 4),
        ]
        .into_iter()
        .map(|(organization, kind, count)| (organization.into(), kind.into(), count))
        .collect();
        assert_eq!(counted, expected);
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
