//! The calls a lease holder makes on its job between claim and completion: heartbeats, progress,
//! log appends, DAG syncs and outputs. Each is activity (a claimed job becomes running), fenced
//! on the lease, and answered with the lease as it stands.

use std::collections::BTreeMap;

use muster_core::{Activity, ArtifactId, JobLifecycle, JobRecord, Lease, Timestamp};

use crate::{JobAck, JobCall, StoreError};

/// The operation a refused activity call names.
const OPERATION: &str = "this call";

/// Refuse unless the caller holds the job's current lease.
pub(crate) fn check_lease(lifecycle: &JobLifecycle, call: JobCall) -> Result<(), StoreError> {
    lifecycle
        .check_lease(call.runner, call.epoch)
        .map_err(|error| StoreError::from_transition(error, &call.job.to_string(), OPERATION))
}

/// What one activity did to the lifecycle.
#[derive(Debug)]
pub(crate) struct Applied {
    /// The lease as the call extended it (`None` when the call does not extend it).
    pub(crate) extended: Option<Lease>,
    /// The lifecycle before the call, when the call changed it (the caller writes it back).
    pub(crate) changed_from: Option<JobLifecycle>,
}

/// Activity by the caller on `lifecycle`, extending the lease when asked (a job heartbeat).
/// Refused, changing nothing, unless the caller holds the current lease.
pub(crate) fn apply(
    lifecycle: &mut JobLifecycle,
    call: JobCall,
    extend_lease: bool,
    now: Timestamp,
) -> Result<Applied, StoreError> {
    let before = lifecycle.clone();
    // A heartbeat always moves the lease's expiry; other activity changes the lifecycle only
    // when it is the first (the job starts running).
    let (extended, changed) = if extend_lease {
        lifecycle
            .extend_lease(call.runner, call.epoch, now)
            .map(|lease| (Some(lease), true))
    } else {
        lifecycle
            .record_activity(call.runner, call.epoch, now)
            .map(|activity| (None, activity == Activity::Started))
    }
    .map_err(|error| StoreError::from_transition(error, &call.job.to_string(), OPERATION))?;
    let changed_from = changed.then_some(before);
    Ok(Applied {
        extended,
        changed_from,
    })
}

/// The answer to an activity call: the lease (as extended, or as it stands), whether the runner
/// should stop, and where the job's log goes on.
pub(crate) fn ack(lifecycle: &JobLifecycle, applied: &Applied, next_seq: u64) -> JobAck {
    JobAck {
        lease: applied.extended.or_else(|| lifecycle.lease()),
        cancel: lifecycle.cancel_requested(),
        next_seq,
    }
}

/// The outputs `job` holds once `recorded` is added by the caller: refused, before anything is
/// written, unless the caller holds the lease and the job stays within its outputs limit.
pub(crate) fn outputs_to_record(
    job: &JobRecord,
    call: JobCall,
    recorded: BTreeMap<String, ArtifactId>,
) -> Result<BTreeMap<String, ArtifactId>, StoreError> {
    check_lease(&job.lifecycle, call)?;
    super::artifacts::merged_outputs(job, recorded)
}

#[cfg(test)]
mod tests {
    use muster_core::JobState;

    use super::*;
    use crate::rules::testing::{call, leased_to, runner};

    #[test]
    fn the_first_activity_starts_the_job_and_later_ones_change_nothing() {
        let runner = runner(2);
        let mut lifecycle = leased_to(runner);
        let first = apply(
            &mut lifecycle,
            call(runner, Some(1)),
            false,
            Timestamp(2_000),
        )
        .expect("activity by the holder");
        assert_eq!(lifecycle.state, JobState::Running);
        assert_eq!(
            first.changed_from.map(|before| before.state),
            Some(JobState::Claimed)
        );
        assert_eq!(first.extended, None);
        let again = apply(&mut lifecycle, call(runner, None), false, Timestamp(3_000))
            .expect("activity by the holder");
        assert!(again.changed_from.is_none(), "nothing to write back");
        let ack = ack(&lifecycle, &again, 4);
        assert_eq!(ack.lease, lifecycle.lease());
        assert_eq!(ack.next_seq, 4);
        assert!(!ack.cancel);
    }

    #[test]
    fn a_heartbeat_extends_the_lease_and_answers_the_extended_one() {
        let runner = runner(2);
        let mut lifecycle = leased_to(runner);
        let expires = lifecycle.lease_expires_at;
        let applied = apply(&mut lifecycle, call(runner, None), true, Timestamp(20_000))
            .expect("a heartbeat by the holder");
        let extended = applied.extended.expect("an extended lease");
        assert!(Some(extended.expires_at) > expires);
        assert_eq!(ack(&lifecycle, &applied, 0).lease, Some(extended));
    }

    #[test]
    fn activity_by_anyone_but_the_holder_is_refused_and_changes_nothing() {
        let runner = runner(2);
        let mut lifecycle = leased_to(runner);
        let before = lifecycle.clone();
        for refused in [
            call(super::super::testing::runner(3), None),
            call(runner, Some(7)),
        ] {
            let answer = apply(&mut lifecycle, refused, true, Timestamp(2_000));
            assert!(
                matches!(answer, Err(StoreError::LeaseLost(_))),
                "{answer:?}"
            );
            assert_eq!(lifecycle, before);
            assert!(check_lease(&lifecycle, refused).is_err());
        }
        assert!(check_lease(&lifecycle, call(runner, Some(1))).is_ok());
    }
}
