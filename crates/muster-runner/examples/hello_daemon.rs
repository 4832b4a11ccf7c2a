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
use muster_runner::sdk::SdkHandler;
use muster_runner::{DaemonConfig, JobHandler, StopSignals};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = std::env::var("MUSTER_SERVER").unwrap_or_else(|_| "http://127.0.0.1:7070".into());
    let token = std::env::var("MUSTER_RUNNER_TOKEN")
        .context("set MUSTER_RUNNER_TOKEN to a runner token")?;
    let handler = SdkHandler::new(
        Arc::new(hello_runner::HelloRunner),
        token.clone(),
        std::env::temp_dir().join("muster-hello"),
    );
    let handlers: Vec<Arc<dyn JobHandler>> = vec![Arc::new(handler)];
    let config = DaemonConfig {
        server,
        token,
        labels: Default::default(),
        tags: Vec::new(),
        resources: muster_runner::detect_resources(),
        concurrency: 1,
        drain_timeout: Duration::from_secs(30),
        hostname: None,
        tls: muster_client::ClientTls::system(),
        version: env!("CARGO_PKG_VERSION").to_string(),
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
    muster_runner::run(config, handlers, stop).await
}
