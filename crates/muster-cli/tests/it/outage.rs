//! A coordinator that disappears under a running job: the runner keeps the job running, retries
//! its calls, and reports it once the coordinator is back; neither the job nor the runner is lost.

use std::time::Duration;

use muster_client::api::{JobState, SubmitJob};

use crate::fleet::{describe, exec_job, wait_for};
use crate::process::{ADMIN_TOKEN, RunnerProcess, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_rides_out_a_coordinator_crash_and_restart() {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let mut server = ServerProcess::start(data_dir.path(), Some(ADMIN_TOKEN));
    let address = server.base_url.trim_start_matches("http://").to_string();
    let client = server.client(ADMIN_TOKEN);
    let created = client
        .create_runner(&muster_client::api::CreateRunner {
            name: "steady".into(),
            ..Default::default()
        })
        .await
        .expect("register a runner");
    let mut runner = RunnerProcess::start(&server.base_url, &created.token, 1, &[]);
    let (job, _) = client
        .submit_job(&SubmitJob {
            lease_ttl_s: Some(60),
            ..exec_job(&["sh", "-c", "echo before; sleep 4; echo after"])
        })
        .await
        .expect("submit");
    wait_for("the job to run", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            let current = client
                .get_job(job.id)
                .await
                .map_err(|error| error.to_string())?;
            if current.state == JobState::Running {
                Ok(())
            } else {
                Err(describe(&current))
            }
        }
    })
    .await;

    // SIGKILL: the runner's heartbeats, log shipping and, soon, its completion all fail.
    server.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        runner.try_wait().is_none(),
        "the runner survives the outage:\n{}",
        runner.output()
    );
    let server = ServerProcess::start_listening(data_dir.path(), Some(ADMIN_TOKEN), &address);
    let client = server.client(ADMIN_TOKEN);
    let finished = wait_for(
        "the job to complete after the restart",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            async move {
                let current = client
                    .get_job(job.id)
                    .await
                    .map_err(|error| error.to_string())?;
                if current.state == JobState::Completed {
                    Ok(current)
                } else {
                    Err(describe(&current))
                }
            }
        },
    )
    .await;
    assert_eq!(
        finished.attempt,
        1,
        "the attempt that ran through the outage is the one that completed: {}",
        describe(&finished)
    );
    let logs = client
        .job_logs(job.id, None, None)
        .await
        .expect("read the log");
    let lines: Vec<&str> = logs
        .items
        .iter()
        .map(|entry| entry.message.as_str())
        .collect();
    for expected in ["before", "after"] {
        assert_eq!(
            lines.iter().filter(|line| **line == expected).count(),
            1,
            "{expected:?} is in the log exactly once (retried batches are stored once): {lines:?}"
        );
    }
    assert!(
        runner.try_wait().is_none(),
        "the runner is still serving:\n{}",
        runner.output()
    );
}
