//! Retention: which finished jobs a pruning pass deletes, and where the walk goes on.

use muster_core::{JobState, Timestamp};

use crate::PruneCursor;

/// One job as the pruning walk sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PruneCandidate {
    pub(crate) seq: i64,
    pub(crate) state_code: i64,
    pub(crate) finished_at: Option<i64>,
    pub(crate) created_at: i64,
}

/// Of `walked` (jobs in `seq` order, at most `limit` of them), the ones to delete, and where the
/// walk goes on: nowhere once it reached a job created at or after the cutoff (no later job can
/// have finished before it; creation follows `seq` up to the coordinators' clock skew, which
/// only makes a pass stop a little early) or the end of the table.
pub(crate) fn choose_jobs_to_prune(
    walked: &[PruneCandidate],
    finished_before: Timestamp,
    limit: u32,
) -> (Vec<i64>, Option<PruneCursor>) {
    let cutoff = finished_before.as_millis();
    let mut doomed = Vec::new();
    for candidate in walked {
        if candidate.created_at >= cutoff {
            return (doomed, None);
        }
        let terminal = JobState::from_code(candidate.state_code).is_some_and(JobState::is_terminal);
        if terminal
            && candidate
                .finished_at
                .is_some_and(|finished| finished < cutoff)
        {
            doomed.push(candidate.seq);
        }
    }
    let resume = match walked.last() {
        Some(last) if walked.len() >= limit as usize => Some(PruneCursor(last.seq)),
        _ => None,
    };
    (doomed, resume)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(seq: i64, state: JobState, finished_at: Option<i64>, created_at: i64) -> PruneCandidate {
        PruneCandidate {
            seq,
            state_code: state.code(),
            finished_at,
            created_at,
        }
    }

    #[test]
    fn only_jobs_finished_before_the_cutoff_are_deleted_and_a_full_walk_goes_on() {
        let walked = [
            job(1, JobState::Completed, Some(50), 10),
            job(2, JobState::Failed, Some(150), 20),
            job(3, JobState::Running, None, 30),
            job(4, JobState::Cancelled, Some(99), 40),
        ];
        let (doomed, resume) = choose_jobs_to_prune(&walked, Timestamp(100), 4);
        assert_eq!(doomed, vec![1, 4]);
        assert_eq!(resume, Some(PruneCursor(4)), "a full walk goes on");
        let (_, resume) = choose_jobs_to_prune(&walked, Timestamp(100), 5);
        assert_eq!(resume, None, "the end of the table");
    }

    #[test]
    fn the_walk_ends_at_the_first_job_created_at_the_cutoff() {
        let walked = [
            job(1, JobState::Completed, Some(50), 10),
            job(2, JobState::Completed, Some(60), 100),
            job(3, JobState::Completed, Some(70), 30),
        ];
        let (doomed, resume) = choose_jobs_to_prune(&walked, Timestamp(100), 3);
        assert_eq!(doomed, vec![1]);
        assert_eq!(resume, None);
    }
}
