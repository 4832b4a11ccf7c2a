//! Completions: the lease holder finishing the work, and the same completion sent again (its
//! answer was lost on the way) answered as done while changing nothing, its result included.

use std::collections::BTreeMap;

use muster_core::{ArtifactId, Completion, JobLifecycle, JobRecord, RunnerId, Timestamp};

use crate::{CompletionItem, JobCall, StoreError};

/// The lifecycle a completion by the caller leaves `lifecycle` in, or `None` for a repeated
/// completion, which changes nothing (the first one's result stays). Refused unless the caller
/// holds the lease (or made the completion that ended it).
pub(crate) fn complete(
    lifecycle: &JobLifecycle,
    call: JobCall,
    now: Timestamp,
) -> Result<Option<JobLifecycle>, StoreError> {
    let mut completed = lifecycle.clone();
    let outcome = completed
        .complete(call.runner, call.epoch, now)
        .map_err(|error| StoreError::from_transition(error, &call.job.to_string(), "complete"))?;
    Ok(match outcome {
        Completion::Completed => Some(completed),
        Completion::Repeated => None,
    })
}

/// One item of a batch of completions by `runner`, as the call it stands for.
pub(crate) fn item_call(runner: RunnerId, item: &CompletionItem) -> JobCall {
    JobCall {
        runner,
        job: item.job,
        epoch: item.epoch,
    }
}

/// The outputs `job` holds once a completion recording `outputs` commits; `None` when it records
/// none, so the job's stay as they are. Refused, before anything is written, past the job's
/// outputs limit.
pub(crate) fn outputs_after(
    job: &JobRecord,
    outputs: BTreeMap<String, ArtifactId>,
) -> Result<Option<BTreeMap<String, ArtifactId>>, StoreError> {
    if outputs.is_empty() {
        return Ok(None);
    }
    super::artifacts::merged_outputs(job, outputs).map(Some)
}

#[cfg(test)]
mod tests {
    use muster_core::JobState;

    use super::*;
    use crate::rules::testing::{call, leased_to, pending_job, runner};

    #[test]
    fn a_completion_ends_the_lease_and_the_same_one_again_changes_nothing() {
        let runner = runner(2);
        let lifecycle = leased_to(runner);
        let completed = complete(&lifecycle, call(runner, Some(1)), Timestamp(2_000))
            .expect("the holder completes")
            .expect("a change");
        assert_eq!(completed.state, JobState::Completed);
        assert_eq!(
            complete(&completed, call(runner, Some(1)), Timestamp(3_000)),
            Ok(None),
            "a repeat is answered as done and writes nothing"
        );
        let other = super::super::testing::runner(3);
        assert!(matches!(
            complete(&completed, call(other, None), Timestamp(3_000)),
            Err(StoreError::LeaseLost(_))
        ));
        assert!(matches!(
            complete(&lifecycle, call(runner, Some(2)), Timestamp(3_000)),
            Err(StoreError::LeaseLost(_))
        ));
    }

    #[test]
    fn a_completion_without_outputs_keeps_the_jobs() {
        let mut job = pending_job(1);
        let artifact = ArtifactId::from_digest([2; 32]);
        job.outputs.insert("log".into(), artifact);
        assert_eq!(outputs_after(&job, BTreeMap::new()), Ok(None));
        let recorded = BTreeMap::from([("report".to_string(), artifact)]);
        let after = outputs_after(&job, recorded).expect("within the limit");
        assert_eq!(after.map(|outputs| outputs.len()), Some(2));
    }
}
