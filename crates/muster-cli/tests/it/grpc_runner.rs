//! `muster runner --transport grpc` as a real process against a real coordinator: jobs pushed
//! on its stream run exactly once with their output in their logs, a cancel reaches the running
//! command at once (pushed, not at the next heartbeat), and SIGTERM still drains.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use muster_api::JobState;
use uuid::Uuid;

use crate::fleet::{Coordinator, describe, exec_job, pid_from_file, wait_for};
use crate::process::{KillOnDrop, process_alive};

const JOBS: usize = 40;

fn finished(state: JobState) -> bool {
    matches!(
        state,
        JobState::Completed | JobState::Failed | JobState::Cancelled
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_runner_runs_each_job_once_and_stops_a_cancelled_one_at_once() {
    let bound = Duration::from_secs(120);
    tokio::time::timeout(bound, async {
        let fleet = Coordinator::start();
        let (runner, mut process) = fleet
            .runner("grpc-runner", 4, &["--transport", "grpc"])
            .await;

        let mut index_of: HashMap<Uuid, usize> = HashMap::new();
        for index in 0..JOBS {
            let marker = format!("grpc-job-{index}");
            let (job, _) = fleet
                .client
                .submit_job(&exec_job(&["echo", &marker]))
                .await
                .expect("submit a job");
            index_of.insert(job.id, index);
        }
        let fleet_ref = &fleet;
        let jobs = wait_for(
            "every job to finish",
            Duration::from_secs(60),
            || async move {
                let jobs = fleet_ref.all_jobs().await;
                let finished = jobs.iter().filter(|job| finished(job.state)).count();
                if finished == JOBS {
                    Ok(jobs)
                } else {
                    Err(format!("{finished} of {JOBS} finished"))
                }
            },
        )
        .await;
        for job in &jobs {
            assert_eq!(job.state, JobState::Completed, "{}", describe(job));
            assert_eq!(job.attempt, 1, "run once: {}", describe(job));
            assert_eq!(job.lease_epoch, 1, "claimed once: {}", describe(job));
            assert_eq!(job.runner_id, Some(runner), "{}", describe(job));
            let page = fleet
                .client
                .job_logs(job.id, None, Some(100))
                .await
                .expect("read the log");
            let messages: Vec<&str> = page
                .items
                .iter()
                .map(|entry| entry.message.as_str())
                .collect();
            let marker = format!("grpc-job-{}", index_of[&job.id]);
            assert_eq!(messages, vec![marker.as_str()], "{}", describe(job));
        }

        // A long command, cancelled while it runs: the cancel is pushed on the stream.
        let scratch = tempfile::tempdir().expect("a scratch directory");
        let pid_file = scratch.path().join("pid");
        let script = format!("echo $$ > '{}'; exec sleep 600", pid_file.display());
        let (job, _) = fleet
            .client
            .submit_job(&exec_job(&["sh", "-c", &script]))
            .await
            .expect("submit");
        let pid = pid_from_file(&pid_file).await;
        let _reaper = KillOnDrop(pid);
        let cancelled_at = Instant::now();
        fleet.client.cancel_job(job.id).await.expect("cancel");
        let ended = fleet
            .wait_job(
                job.id,
                "the cancelled job to end",
                Duration::from_secs(20),
                |job| finished(job.state),
            )
            .await;
        assert_eq!(ended.state, JobState::Cancelled, "{}", describe(&ended));
        let took = cancelled_at.elapsed();
        eprintln!("the cancelled job ended {took:?} after the cancel");
        // Over HTTP the runner would hear of it at its next heartbeat, up to 10 s later; pushed,
        // it takes the command's SIGTERM and one report.
        assert!(
            took < Duration::from_secs(5),
            "the cancel took {took:?}: it was not pushed\n{}",
            process.output()
        );
        assert!(
            !process_alive(pid) || {
                tokio::time::sleep(Duration::from_secs(1)).await;
                !process_alive(pid)
            },
            "the cancelled command is gone"
        );

        let output = process.output();
        assert!(
            output.contains("(gRPC)"),
            "the runner spoke gRPC:\n{output}"
        );
        let troubles: Vec<&str> = output
            .lines()
            .filter(|line| line.contains("WARN") || line.contains("ERROR"))
            .collect();
        assert!(
            troubles.is_empty(),
            "the runner reported trouble:\n{}",
            troubles.join("\n")
        );
        let status = tokio::task::block_in_place(|| process.terminate(Duration::from_secs(10)))
            .unwrap_or_else(|| panic!("the runner ignored SIGTERM:\n{}", process.output()));
        assert_eq!(status.code(), Some(0), "{status:?}:\n{}", process.output());
    })
    .await
    .unwrap_or_else(|_| panic!("the test took more than {bound:?}"));
}
