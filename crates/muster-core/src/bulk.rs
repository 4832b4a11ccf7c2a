//! Changes a user applies to many jobs at once (cancel or retry every selected job). Each job
//! still goes through its own fenced transition; what is written here is which states an
//! action changes, so a dry run counts exactly the jobs the action would change.

use crate::JobState;

/// What a bulk request does to each job it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BulkJobAction {
    /// Cancel: a pending job ends `cancelled`, a claimed or running one is `cancelling`.
    Cancel,
    /// Retry: a failed or cancelled job is pending again with a fresh allowance of attempts.
    Retry,
}

impl BulkJobAction {
    pub const ALL: [BulkJobAction; 2] = [BulkJobAction::Cancel, BulkJobAction::Retry];

    /// The states in which the action changes a job. A job in any other state is left as it
    /// is: one already cancelling is not cancelled twice, a finished one is not cancelled, one
    /// that is not failed or cancelled is not retried.
    pub fn changes_jobs_in(self) -> &'static [JobState] {
        match self {
            BulkJobAction::Cancel => &[JobState::Pending, JobState::Claimed, JobState::Running],
            BulkJobAction::Retry => &[JobState::Failed, JobState::Cancelled],
        }
    }

    /// Whether the action changes a job in `state`.
    pub fn changes(self, state: JobState) -> bool {
        self.changes_jobs_in().contains(&state)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BulkJobAction::Cancel => "cancel",
            BulkJobAction::Retry => "retry",
        }
    }

    pub fn parse(text: &str) -> Option<BulkJobAction> {
        BulkJobAction::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
    }
}
