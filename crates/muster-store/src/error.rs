use muster_core::{JobState, TransitionError};

/// Why a store call did not do what was asked. Callers branch on the variant; the message is for
/// people.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such job or runner (names which).
    #[error("{0} not found")]
    NotFound(String),
    /// The caller does not hold the job's current lease; nothing changed.
    #[error("lease lost: this runner does not hold the current lease on job {0}")]
    LeaseLost(String),
    /// The job's state does not allow the operation; nothing changed.
    #[error("job is {state}: {operation} is not allowed")]
    InvalidState {
        state: JobState,
        operation: &'static str,
    },
    /// The request is well-formed but breaks a store rule (names the rule).
    #[error("{0}")]
    Rejected(String),
    /// Something of that name already exists (names what); nothing changed.
    #[error("{0}")]
    Conflict(String),
    /// The organization still holds what [`crate::OrganizationContents`] counts; nothing
    /// changed.
    #[error(
        "organization {organization} still has {} unfinished jobs, {} runners, {} user tokens and {} unfinished workloads: finish or cancel its jobs, delete its runners, revoke its tokens and stop its workloads first",
        contents.unfinished_jobs,
        contents.runners,
        contents.user_tokens,
        contents.unfinished_workloads
    )]
    OrganizationNotEmpty {
        organization: String,
        contents: crate::OrganizationContents,
    },
    /// The workload's status does not allow the report; nothing changed.
    #[error("workload {workload}: {refusal}")]
    WorkloadRefused {
        workload: String,
        refusal: muster_core::WorkloadRefusal,
    },
    /// The store cannot be reached or cannot write (disk full, I/O error, connection lost).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A bug or corrupt data; the message says what was found.
    #[error("store internal error: {0}")]
    Internal(String),
}

impl StoreError {
    pub(crate) fn from_transition(
        error: TransitionError,
        job: &str,
        operation: &'static str,
    ) -> StoreError {
        match error {
            TransitionError::LeaseLost => StoreError::LeaseLost(job.to_string()),
            TransitionError::InvalidState(state) => StoreError::InvalidState { state, operation },
            TransitionError::NotYetDue => StoreError::InvalidState {
                state: JobState::Pending,
                operation,
            },
        }
    }
}
