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

pub(crate) mod activity;
pub(crate) mod artifacts;
pub(crate) mod claims;
pub(crate) mod completions;
pub(crate) mod jobs;
pub(crate) mod logs;
pub(crate) mod paging;
pub(crate) mod prune;
pub(crate) mod runners;
