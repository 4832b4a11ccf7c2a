//! The SDK's example runner, unchanged, hosted by the daemon: it downloads its input artifact,
//! reports progress and an event, uploads its output, and the job completes with the output
//! recorded, all over the coordinator's HTTP API.

#[path = "../../../muster-runner-sdk/examples/hello_runner.rs"]
#[allow(dead_code, reason = "the example's own main is not used here")]
mod hello_runner;

use std::sync::Arc;
use std::time::Duration;

use muster_client::api::{JobState, SubmitJob};
use muster_runner::{DaemonConfig, HttpTransport, StopSignals};
use muster_runner_sdk::Runner;
use muster_test_support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_example_runner_runs_against_the_real_coordinator() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = server.client();
    let (created, _) = server.runner("hello").await?;
    let work_dir = tempfile::tempdir()?;
    let transport = HttpTransport::new(
        &server.base_url,
        &created.token,
        &muster_client::ClientTls::system(),
    )?;
    let runners: Vec<Arc<dyn Runner>> = vec![Arc::new(hello_runner::HelloRunner)];
    let config = DaemonConfig {
        labels: Default::default(),
        tags: Vec::new(),
        resources: Default::default(),
        concurrency: 1,
        drain_timeout: Duration::from_secs(10),
        hostname: Some("test".into()),
        version: "test".into(),
        work_dir: work_dir.path().to_path_buf(),
        approval_hint: None,
    };
    let stop = StopSignals::default();
    let daemon = tokio::spawn(muster_runner::run(
        Arc::new(transport),
        config,
        runners,
        stop.clone(),
    ));

    let input = client
        .upload_artifact_bytes(b"hello, muster".to_vec())
        .await?;
    let (job, _) = client
        .submit_job(&SubmitJob {
            kind: hello_runner::HELLO_CAPABILITY.into(),
            inputs: Some(vec![input.id.clone()]),
            ..Default::default()
        })
        .await?;
    let mut finished = None;
    for _ in 0..200 {
        let current = client.get_job(job.id).await?;
        if matches!(
            current.state,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        ) {
            finished = Some(current);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let finished =
        finished.ok_or_else(|| anyhow::format_err!("the job did not finish within 10 s"))?;
    assert_eq!(finished.state, JobState::Completed, "{finished:?}");
    let output_id = finished
        .outputs
        .get(hello_runner::HELLO_OUTPUT_PATH)
        .ok_or_else(|| {
            anyhow::format_err!(
                "no output {} on {:?}",
                hello_runner::HELLO_OUTPUT_PATH,
                finished.outputs
            )
        })?;
    let output = client.download_artifact_bytes(output_id).await?;
    assert_eq!(
        &output[..],
        b"HELLO, MUSTER",
        "the runner uppercased its input"
    );
    let logs = client.job_logs(job.id, None, None).await?;
    assert!(
        logs.items
            .iter()
            .any(|entry| entry.message.contains("input_read")),
        "the runner's event reached the job log: {:?}",
        logs.items
    );

    stop.drain.cancel();
    tokio::time::timeout(Duration::from_secs(15), daemon).await???;
    server.stop().await?;
    Ok(())
}
