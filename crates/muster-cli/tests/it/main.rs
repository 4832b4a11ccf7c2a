//! The `muster` binary as a process: its command line, its data directory, and what survives a
//! SIGKILL; and the whole system end to end: a coordinator, `muster runner` daemons running
//! `exec` jobs, the user commands, and `muster up`. These tests start the real executable Cargo
//! built for this package.

mod bulk_cli;
mod cli;
mod crash;
mod cutting_proxy;
mod dashboard;
mod fleet;
mod grpc_faults;
mod grpc_runner;
mod hardening;
mod https;
mod job_cli;
mod key_runner;
mod keys;
mod orgs;
mod outage;
mod postgres_fleet;
mod postgres_outage;
mod process;
mod shutdown;
mod tokens;
mod up;
mod verify;
mod workloads_cli;
