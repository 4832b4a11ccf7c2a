//! The SDK's example runner (`crates/muster-runner-sdk/examples/hello_runner.rs`) hosted by the
//! runner daemon against a real coordinator: the same `Runner` the SDK's harness runs, now taking
//! leased jobs of kind `/examples/hello/v1` over HTTP.
//!
//! ```sh
//! muster up &                                            # a coordinator
//! TOKEN=$(muster runners create hello)                    # a runner token
//! MUSTER_SERVER=http://127.0.0.1:7070 MUSTER_RUNNER_TOKEN=$TOKEN \
//!     cargo run -p muster-runner --example hello_daemon
//! INPUT=$(muster job submit --kind /examples/hello/v1 --input ./greeting.txt --payload '{}')
//! muster job wait $INPUT && muster job download $INPUT outputs/hello.txt
//! ```

#[path = "../../muster-runner-sdk/examples/hello_runner.rs"]
#[allow(dead_code, reason = "the SDK example's own main is not used here")]
mod hello_runner;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use muster_runner::{DaemonConfig, HttpTransport, StopSignals};
use muster_runner_sdk::Runner;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = std::env::var("MUSTER_SERVER").unwrap_or_else(|_| "http://127.0.0.1:7070".into());
    let token = std::env::var("MUSTER_RUNNER_TOKEN")
        .context("set MUSTER_RUNNER_TOKEN to a runner token")?;
    let transport = HttpTransport::new(&server, &token, &muster_client::ClientTls::system())
        .context("set up the runner client")?;
    let runners: Vec<Arc<dyn Runner>> = vec![Arc::new(hello_runner::HelloRunner)];
    let config = DaemonConfig {
        labels: Default::default(),
        tags: Vec::new(),
        resources: muster_runner::detect_resources(),
        concurrency: 1,
        drain_timeout: Duration::from_secs(30),
        hostname: None,
        version: env!("CARGO_PKG_VERSION").to_string(),
        work_dir: std::env::temp_dir().join("muster-hello"),
        approval_hint: None,
    };
    let stop = StopSignals::default();
    let drain = stop.drain.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        drain.cancel();
    });
    println!(
        "hello runner started; hosting {}",
        hello_runner::HELLO_CAPABILITY
    );
    muster_runner::run(Arc::new(transport), config, runners, stop).await
}
