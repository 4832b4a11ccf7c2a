//! The store's rules that are not SQL, written once for every backend.
//!
//! A backend holds its SQL and the shape of its transactions (the SQLite writer's group commit,
//! PostgreSQL's row locks and combined batches); everything it decides about the rows it reads
//! is asked of this module: pure functions and small structs, tested here without a database.
//! The job and lease state machine itself is [`muster_core::JobLifecycle`]; these are the rules
//! around it that only a store needs.
//!
//! - [`jobs`]: what a submitted job is, refusals by name, retry jitter, failures and reaping.
//! - [`activity`]: the calls of a lease holder (heartbeats, progress, logs, DAGs, outputs).
//! - [`logs`]: appending within a job's log cap (the truncation notice), reading pages back.
//! - [`claims`]: claim assembly: the offer, the bounded scan, the claim order, the lease.
//! - [`completions`]: completion, and a repeated completion changing nothing.
//! - [`runners`]: claiming runners' rows, the heartbeat's stop list, release on delete.
//! - [`paging`]: list cursors and pages.
//! - [`prune`]: which finished jobs retention deletes.
//! - [`artifacts`]: outputs, named artifacts, artifact records and usage totals.
//! - [`identity`]: the runner key allowlist and the audit log.
//! - [`organizations`]: organizations and user tokens, and what keeps an organization.

pub(crate) mod activity;
pub(crate) mod artifacts;
pub(crate) mod claims;
pub(crate) mod completions;
pub(crate) mod enrollment;
pub(crate) mod identity;
pub(crate) mod jobs;
pub(crate) mod kinds;
pub(crate) mod logs;
pub(crate) mod organizations;
pub(crate) mod outcomes;
pub(crate) mod paging;
pub(crate) mod prune;
pub(crate) mod runners;
pub(crate) mod workloads;

/// What the rules' unit tests build their cases from.
#[cfg(test)]
pub(crate) mod testing {
    use muster_core::{JobId, JobLifecycle, JobRecord, JobSpec, NewJob, RunnerId, Timestamp};

    use crate::JobCall;

    pub(crate) fn runner(bits: u128) -> RunnerId {
        RunnerId::new(Timestamp(0), bits)
    }

    /// A pending job of kind `a` with the default policy, as submitted at time 0.
    pub(crate) fn pending_job(bits: u128) -> JobRecord {
        super::jobs::submitted_job(&NewJob {
            id: JobId::new(Timestamp(0), bits),
            created_at: Timestamp(0),
            spec: JobSpec::with_defaults("a"),
            organization: Default::default(),
        })
    }

    /// The lifecycle of a job `runner` claimed at 1,000 (its first lease, epoch 1).
    pub(crate) fn leased_to(runner: RunnerId) -> JobLifecycle {
        let mut lifecycle = pending_job(1).lifecycle;
        lifecycle.claim(runner, Timestamp(1_000)).expect("a claim");
        lifecycle
    }

    /// A call by `runner` on job 1 of [`pending_job`].
    pub(crate) fn call(runner: RunnerId, epoch: Option<u64>) -> JobCall {
        JobCall {
            runner,
            job: pending_job(1).id,
            epoch,
        }
    }
}
