//! A runner that stops before its job ends, by an operator's decision (the drain timeout passes,
//! or a second SIGTERM): the command is stopped and the job is not lost. Nobody cancelled the
//! job, so it goes back to the queue and another runner finishes it as its next attempt.

use std::time::{Duration, Instant};

use muster_api::{JobState, SubmitJob};

use crate::fleet::{Coordinator, describe, exec_job, pid_from_file};
use crate::process::{KillOnDrop, process_alive};

/// How the runner is made to give up its job.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// One SIGTERM with `--drain-timeout 1`: the drain runs out while the job still runs.
    DrainTimeout,
    /// Two SIGTERMs: the second one stops at once.
    SecondSignal,
}

async fn an_interrupted_job_goes_back_to_the_queue(stop: Stop) {
    let fleet = Coordinator::start();
    let drain_timeout = match stop {
        Stop::DrainTimeout => "1",
        Stop::SecondSignal => "300",
    };
    let (runner_a, mut process_a) = fleet
        .runner("stopping", 1, &["--drain-timeout", drain_timeout])
        .await;
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let pid_file = scratch.path().join("pid");
    // The first attempt runs until stopped; any later one (MUSTER_ATTEMPT is set by the exec
    // runner) finishes at once, so a rescued job can complete.
    let script = format!(
        "echo $$ > '{}'; if [ \"$MUSTER_ATTEMPT\" = 1 ]; then exec sleep 600; fi; echo rescued",
        pid_file.display()
    );
    let spec = SubmitJob {
        // A short lease only so `running` shows within a second; heartbeats keep it alive.
        lease_ttl_s: Some(4),
        backoff_base_s: Some(0),
        ..exec_job(&["sh", "-c", &script])
    };
    let (job, _) = fleet.client.submit_job(&spec).await.expect("submit");
    let pid = pid_from_file(&pid_file).await;
    let _reaper = KillOnDrop(pid);
    fleet
        .wait_job(job.id, "the job to run", Duration::from_secs(15), |job| {
            job.state == JobState::Running && job.runner_id == Some(runner_a)
        })
        .await;

    process_a.signal("TERM");
    if let Stop::SecondSignal = stop {
        // Draining lets the job run on: a second later the command and the runner still live.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(process_alive(pid), "a drain does not stop running commands");
        assert!(
            process_a.try_wait().is_none(),
            "the runner waits for its job while draining:\n{}",
            process_a.output()
        );
        process_a.signal("TERM");
    }
    let stopped = Instant::now();
    let status = tokio::task::block_in_place(|| process_a.wait(Duration::from_secs(20)))
        .unwrap_or_else(|| {
            panic!(
                "the runner ({stop:?}) did not exit within 20 s:\n{}",
                process_a.output()
            )
        });
    match stop {
        Stop::DrainTimeout => assert_eq!(
            status.code(),
            Some(0),
            "a drain ends with exit 0 ({status:?}):\n{}",
            process_a.output()
        ),
        Stop::SecondSignal => assert!(
            status.code().is_some(),
            "the runner exits by itself, not by the signal ({status:?}):\n{}",
            process_a.output()
        ),
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while process_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !process_alive(pid),
        "the command outlived its runner ({stop:?}, {:?} after the stop)",
        stopped.elapsed()
    );

    // The runner reported the stopped attempt before it exited. The job's user did not cancel
    // it and attempts remain: it must wait in the queue, not end.
    let after = fleet.job(job.id).await;
    assert!(
        !matches!(after.state, JobState::Claimed | JobState::Running),
        "the runner exited without reporting its job ({stop:?}): {}\n{}",
        describe(&after),
        process_a.output()
    );
    assert_eq!(
        after.state,
        JobState::Pending,
        "a job stopped by its runner's shutdown ({stop:?}) goes back to the queue: {}",
        describe(&after)
    );
    assert_eq!(after.attempt, 1, "{}", describe(&after));
    assert!(after.error.is_some(), "{}", describe(&after));

    let (runner_b, _process_b) = fleet.runner("rescuer", 1, &[]).await;
    let done = fleet
        .wait_job(
            job.id,
            "another runner to finish the job",
            Duration::from_secs(30),
            |job| {
                !matches!(
                    job.state,
                    JobState::Pending | JobState::Claimed | JobState::Running
                )
            },
        )
        .await;
    assert_eq!(done.state, JobState::Completed, "{}", describe(&done));
    assert_eq!(done.attempt, 2, "{}", describe(&done));
    assert_eq!(done.runner_id, Some(runner_b), "{}", describe(&done));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outliving_the_drain_timeout_is_requeued_not_cancelled() {
    let bound = Duration::from_secs(90);
    tokio::time::timeout(
        bound,
        an_interrupted_job_goes_back_to_the_queue(Stop::DrainTimeout),
    )
    .await
    .unwrap_or_else(|_| panic!("the test took more than {bound:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_stops_the_job_and_requeues_it() {
    let bound = Duration::from_secs(90);
    tokio::time::timeout(
        bound,
        an_interrupted_job_goes_back_to_the_queue(Stop::SecondSignal),
    )
    .await
    .unwrap_or_else(|_| panic!("the test took more than {bound:?}"));
}
