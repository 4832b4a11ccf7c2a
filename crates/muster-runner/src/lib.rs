//! The muster runner daemon (`muster runner`).
//!
//! It long-polls the coordinator for jobs of the kinds its handlers run, runs each with the
//! handler registered for its kind, keeps the lease alive with job heartbeats at 25–35 % of the
//! lease TTL (carrying progress), ships log lines in batches, and completes or fails the job.
//! A cancel from the coordinator, or a lost lease (409), stops the job's work. An unreachable
//! coordinator never stops the daemon: jobs keep running and calls are retried with jittered
//! backoff. A first stop signal drains (no new claims, running jobs finish, exit 0); a second
//! stops the running jobs, reports them as failed attempts (so they run again elsewhere) and
//! exits.
//!
//! All coordinator traffic goes through `muster-client`.

mod control;
mod daemon;
pub mod exec;
pub mod sdk;

pub use control::{JobContext, JobHandler};
pub use daemon::{DaemonConfig, StopSignals, detect_resources, run};
