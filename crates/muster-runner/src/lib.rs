//! The muster runner daemon (`muster runner`).
//!
//! It hosts runners written against `muster-runner-sdk` (the built-in [`exec::ExecRunner`] is
//! one) and long-polls the coordinator for jobs of their capabilities, runs each with the runner
//! of its kind, keeps the lease alive with job heartbeats at 25–35 % of the lease TTL (carrying
//! progress), ships log lines in batches, and completes or fails the job. A cancel from the
//! coordinator, or a lost lease, stops the job's work. An unreachable coordinator never stops the
//! daemon: jobs keep running and calls are retried with jittered backoff. A first stop signal
//! drains (no new claims, running jobs finish, exit 0); a second stops the running jobs, reports
//! them as failed attempts (so they run again elsewhere) and exits.
//!
//! The daemon reaches the coordinator only through a [`Transport`]; [`HttpTransport`] (over
//! `muster-client`) is the default; [`GrpcTransport`] speaks the gRPC runner protocol, where the
//! coordinator pushes assignments and cancels on a stream instead of answering long polls.

mod daemon;
pub mod exec;
mod grpc;
mod http;
mod ports;
mod task;
mod transport;

pub use daemon::{DaemonConfig, StopSignals, detect_resources, run};
pub use grpc::GrpcTransport;
pub use http::HttpTransport;
pub use transport::{
    ClaimRequest, ClaimedTask, Failure, HeldLease, JobAck, LeaseRenewal, PushedStop, RunnerBeat,
    RunnerBeatAnswer, Transport, TransportError,
};
