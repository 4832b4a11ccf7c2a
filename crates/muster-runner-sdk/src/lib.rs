//! The muster runner SDK: write a runner for one capability by implementing [`Runner`].
//!
//! A runner only says which capability it implements and how to run one task. Everything else
//! (claiming work, keeping the lease alive, fetching inputs, storing outputs, reporting progress,
//! noticing cancellation, completing or failing the job) is done by the daemon that hosts it and
//! reached through the [`TaskCtx`] handed to [`Runner::run`].
//!
//! The names, fields and signatures are those of posemesh's compute-node runner API, so a runner
//! written for that contract ports to muster by changing its imports only.
//!
//! # Writing a runner
//!
//! ```
//! use anyhow::{Context, Result, bail};
//! use async_trait::async_trait;
//! use muster_runner_sdk::{Runner, TaskCtx};
//! use serde_json::json;
//!
//! struct HelloRunner;
//!
//! #[async_trait]
//! impl Runner for HelloRunner {
//!     fn capability(&self) -> &'static str {
//!         "/examples/hello/v1"
//!     }
//!
//!     async fn run(&self, ctx: TaskCtx<'_>) -> Result<()> {
//!         ctx.ctrl.progress(json!({ "progress": 0, "message": "started" })).await?;
//!         let cid = ctx.lease.task.inputs_cids.first().context("the task has no input")?;
//!         let bytes = ctx.input.get_bytes_by_cid(cid).await?;
//!         if ctx.ctrl.is_cancelled().await {
//!             bail!("cancelled before writing the output");
//!         }
//!         ctx.output.put_bytes("outputs/hello.bin", &bytes).await?;
//!         ctx.ctrl.log_event(json!({ "event": "copied", "bytes": bytes.len() })).await?;
//!         ctx.ctrl.progress(json!({ "progress": 100, "message": "finished" })).await?;
//!         Ok(())
//!     }
//! }
//!
//! // Without a coordinator, the in-memory harness stands in for the daemon.
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<()> {
//! use muster_runner_sdk::testing::Harness;
//!
//! let harness = Harness::new()?;
//! harness.inputs.insert("greeting", b"hello".to_vec());
//! harness.run(&HelloRunner, &Harness::lease_for("/examples/hello/v1", ["greeting"])).await?;
//! assert_eq!(harness.artifacts.get("outputs/hello.bin"), Some(b"hello".to_vec()));
//! # Ok(()) }
//! ```
//!
//! `Ok` from [`Runner::run`] completes the task, `Err` fails it. A runner that finds the task
//! cancelled should stop promptly with an error: nothing it stores afterwards will be used.
//!
//! # The ports
//!
//! - [`InputSource`]: fetches the task's inputs (the ids in `lease.task.inputs_cids`) into memory or
//!   onto local disk.
//! - [`ArtifactSink`]: stores the task's outputs by relative path, from memory, from a file (or
//!   several files together), or streamed in chunks through a [`MultipartUpload`] where the sink
//!   supports it.
//! - [`ControlPlane`]: tells whether the task was cancelled (or waits until it is) and takes
//!   progress reports, structured log events, plain log lines and the task's result.
//! - [`AccessTokenProvider`]: the current bearer token, for runners that call other services.
//!
//! [`LeaseEnvelope`] and [`TaskSpec`] describe the lease and the task; the daemon picks the runner
//! whose [`Runner::capability`] equals `lease.task.capability`.
//!
//! # Who implements the ports
//!
//! The muster runner daemon (`muster runner`, crate `muster-runner`) hosts runners and provides the
//! real implementations over its connection to the coordinator (HTTP today):
//!
//! - [`InputSource`] downloads artifacts from the coordinator by id;
//! - [`ArtifactSink`] uploads the outputs to the coordinator and records each on the job under its
//!   relative path;
//! - [`ControlPlane`]: progress travels with the next job heartbeat
//!   (`POST /api/v1/runner/jobs/{id}/heartbeat`); events and log lines become lines of the job's
//!   log, shipped in order within a fraction of a second; when the coordinator answers anything
//!   about the task with `cancel: true` (or the lease is lost), [`ControlPlane::is_cancelled`] turns
//!   true and [`ControlPlane::wait_until_cancelled`] resolves; [`ControlPlane::set_result`] is the job's
//!   result.
//!
//! The daemon's own `exec` runner (commands in a process group) is written against these same
//! ports.
//!
//! The [`testing`] module provides in-memory implementations of all four ports and a [`Harness`]
//! that runs a runner on them, so runners can be tested without a coordinator.
//!
//! [`Harness`]: testing::Harness

#![deny(missing_docs)]

pub mod runner;
pub mod testing;
pub mod types;

pub use runner::{
    AccessTokenProvider, ArtifactSink, ControlPlane, DomainArtifactContent, DomainArtifactRequest,
    InputSource, LogLevel, MaterializedInput, MultipartUpload, Runner, TaskCtx,
};
pub use types::{LeaseEnvelope, TaskSpec};

/// This crate's name, for smoke tests that check every crate of a workspace was built and linked.
pub const CRATE_NAME: &str = "muster-runner-sdk";
