//! A complete runner for the capability `/examples/hello/v1`: it reads its first input, logs what
//! it read, stores the input upper-cased and says how many bytes it wrote as its result. `main`
//! runs it through the in-memory harness; `muster-runner`'s `hello_daemon` example hosts the same
//! runner against a real coordinator.
//!
//! Run it with `cargo run -p muster-runner-sdk --example hello_runner`. The integration tests
//! include this file as a module, so the runner they check is exactly the one shown here.

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use muster_runner_sdk::testing::Harness;
use muster_runner_sdk::{ControlPlane, Runner, TaskCtx};
use serde_json::json;

/// The capability this runner implements.
pub(crate) const HELLO_CAPABILITY: &str = "/examples/hello/v1";

/// Where the runner stores its output, relative to the task's outputs prefix.
pub(crate) const HELLO_OUTPUT_PATH: &str = "outputs/hello.txt";

/// Upper-cases its first input.
pub(crate) struct HelloRunner;

/// Stops the task with an error once it is cancelled: a cancelled job's outputs are never used,
/// so doing more work would only waste the machine.
async fn stop_if_cancelled(ctrl: &dyn ControlPlane, before: &str) -> Result<()> {
    if ctrl.is_cancelled().await {
        bail!("cancelled by the coordinator before {before}");
    }
    Ok(())
}

#[async_trait]
impl Runner for HelloRunner {
    fn capability(&self) -> &'static str {
        HELLO_CAPABILITY
    }

    async fn run(&self, ctx: TaskCtx<'_>) -> Result<()> {
        ctx.ctrl
            .progress(json!({ "progress": 0, "message": "started" }))
            .await?;
        stop_if_cancelled(ctx.ctrl, "reading the input").await?;

        let cid = ctx
            .lease
            .task
            .inputs_cids
            .first()
            .context("the hello runner needs one input and the task lists none")?;
        let input = ctx.input.get_bytes_by_cid(cid).await?;
        ctx.ctrl
            .log_event(json!({ "event": "input_read", "cid": cid, "bytes": input.len() }))
            .await?;
        ctx.ctrl
            .progress(json!({ "progress": 50, "message": "input read" }))
            .await?;
        stop_if_cancelled(ctx.ctrl, "writing the output").await?;

        ctx.output
            .put_bytes(HELLO_OUTPUT_PATH, &input.to_ascii_uppercase())
            .await?;
        // The job's result; the daemon adds the outputs stored above under "outputs".
        ctx.ctrl
            .set_result(json!({ "bytes_written": input.len() }))
            .await?;
        ctx.ctrl
            .progress(json!({ "progress": 100, "message": "finished" }))
            .await?;
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let harness = Harness::new()?;
    harness.inputs.insert("greeting", b"hello, muster".to_vec());
    let lease = Harness::lease_for(HELLO_CAPABILITY, ["greeting"]);

    harness.run(&HelloRunner, &lease).await?;

    for (path, bytes) in harness.artifacts.snapshot() {
        println!("artifact {path}: {}", String::from_utf8_lossy(&bytes));
    }
    for progress in harness.control_plane.progress_reports() {
        println!("progress {progress}");
    }
    for event in harness.control_plane.events() {
        println!("event {event}");
    }
    if let Some(result) = harness.control_plane.result() {
        println!("result {result}");
    }
    Ok(())
}
