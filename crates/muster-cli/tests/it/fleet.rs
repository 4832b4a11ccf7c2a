//! A coordinator and real `muster runner --exec` daemons as processes: jobs run exactly once
//! across runners, a SIGKILLed runner's jobs come back after their leases expire, a cancel stops
//! the command, and a SIGTERM drains. Every process is killed on drop, every wait is bounded.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use muster_api::{CreateRunner, FailureReason, Job, JobState, RunnerStatus, SubmitJob};
use muster_client::{JobQuery, MusterClient};
use serde_json::json;
use uuid::Uuid;

use crate::process::{
    ADMIN_TOKEN, KillOnDrop, RunnerProcess, ServerProcess, children_of, process_alive, send_signal,
};

/// Poll `probe` every 100 ms until it answers `Ok`, for at most `within`. `Err` carries what was
/// seen last, so a timeout says where things stood.
pub(crate) async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        if started.elapsed() >= within {
            panic!("timed out after {within:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A coordinator on a throwaway data directory, and an admin client for it.
pub(crate) struct Coordinator {
    pub(crate) server: ServerProcess,
    pub(crate) client: MusterClient,
    _data_dir: tempfile::TempDir,
}

impl Coordinator {
    pub(crate) fn start() -> Coordinator {
        let data_dir = tempfile::tempdir().expect("a data directory");
        let server = ServerProcess::start(data_dir.path(), Some(ADMIN_TOKEN));
        let client = server.client(ADMIN_TOKEN);
        Coordinator {
            server,
            client,
            _data_dir: data_dir,
        }
    }

    /// Register a runner; answers its id and token.
    pub(crate) async fn register(&self, name: &str) -> (Uuid, String) {
        let created = self
            .client
            .create_runner(&CreateRunner {
                name: name.into(),
                ..Default::default()
            })
            .await
            .expect("register a runner");
        (created.runner.id, created.token)
    }

    /// Start `muster runner --exec` as a registered runner and wait until the coordinator has
    /// heard its first heartbeat, so jobs submitted next can reach it.
    pub(crate) async fn runner(
        &self,
        name: &str,
        concurrency: u32,
        extra: &[&str],
    ) -> (Uuid, RunnerProcess) {
        let (id, token) = self.register(name).await;
        let mut process = RunnerProcess::start(&self.server.base_url, &token, concurrency, extra);
        let client = self.client.clone();
        wait_for(
            &format!("runner {name} to come online"),
            Duration::from_secs(20),
            || {
                let client = client.clone();
                async move {
                    let runner = client.get_runner(id).await.map_err(|e| e.to_string())?;
                    match (runner.status, runner.last_heartbeat_at) {
                        (RunnerStatus::Online, Some(_)) => Ok(()),
                        _ => Err(format!("{runner:?}")),
                    }
                }
            },
        )
        .await;
        assert!(
            process.try_wait().is_none(),
            "runner {name} exited right after starting:\n{}",
            process.output()
        );
        (id, process)
    }

    pub(crate) async fn job(&self, id: Uuid) -> Job {
        self.client.get_job(id).await.expect("read a job")
    }

    /// Poll job `id` until `accept` holds (bounded).
    pub(crate) async fn wait_job(
        &self,
        id: Uuid,
        what: &str,
        within: Duration,
        accept: impl Fn(&Job) -> bool,
    ) -> Job {
        let accept = &accept;
        wait_for(what, within, || async move {
            let job = self.client.get_job(id).await.map_err(|e| e.to_string())?;
            if accept(&job) {
                Ok(job)
            } else {
                Err(describe(&job))
            }
        })
        .await
    }

    /// Every job, following the cursor.
    pub(crate) async fn all_jobs(&self) -> Vec<Job> {
        let mut jobs = Vec::new();
        let mut query = JobQuery {
            limit: Some(1000),
            ..Default::default()
        };
        loop {
            let page = self.client.list_jobs(&query).await.expect("list jobs");
            jobs.extend(page.items);
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => return jobs,
            }
        }
    }
}

/// The fields of a job that tell its story, for failure messages.
pub(crate) fn describe(job: &Job) -> String {
    format!(
        "job {} state={:?} attempt={} epoch={} runner={:?} error={:?} result={:?} pending={:?}",
        job.id,
        job.state,
        job.attempt,
        job.lease_epoch,
        job.runner_id,
        job.error,
        job.result,
        job.pending_reason
    )
}

/// The pid a command wrote to `path` (`echo $$ > path; exec ...`), once it is there (bounded).
pub(crate) async fn pid_from_file(path: &std::path::Path) -> u32 {
    wait_for(
        "the command to write its pid",
        Duration::from_secs(15),
        || async move {
            let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
            text.trim()
                .parse::<u32>()
                .map_err(|e| format!("{text:?}: {e}"))
        },
    )
    .await
}

pub(crate) fn exec_job(command: &[&str]) -> SubmitJob {
    SubmitJob {
        kind: "exec".into(),
        payload: Some(json!({ "command": command })),
        ..Default::default()
    }
}

fn exit_code(job: &Job) -> Option<i64> {
    job.result.as_ref()?.get("exit_code")?.as_i64()
}

const JOBS: usize = 200;

/// 200 exec jobs over two runners of concurrency 4: each completes exactly once (one claim, one
/// attempt), with exit code 0 and its own output in its log once, and both runners take part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_complete_every_job_exactly_once() {
    let bound = Duration::from_secs(150);
    tokio::time::timeout(bound, async {
        let fleet = Coordinator::start();
        let (runner_a, mut process_a) = fleet.runner("fleet-a", 4, &[]).await;
        let (runner_b, mut process_b) = fleet.runner("fleet-b", 4, &[]).await;

        // Submit from four concurrent submitters while the runners are already claiming, so
        // claims race with submits the way they do in production.
        let mut submitters = Vec::new();
        for part in 0..4 {
            let client = fleet.client.clone();
            submitters.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for index in (part..JOBS).step_by(4) {
                    let marker = format!("job-{index}");
                    let spec = if index % 2 == 0 {
                        exec_job(&["true"])
                    } else {
                        exec_job(&["echo", &marker])
                    };
                    let (job, created) = client.submit_job(&spec).await.expect("submit a job");
                    assert!(created);
                    ids.push((job.id, index));
                }
                ids
            }));
        }
        let mut index_of: HashMap<Uuid, usize> = HashMap::new();
        for submitter in submitters {
            index_of.extend(submitter.await.expect("a submitter"));
        }
        assert_eq!(index_of.len(), JOBS, "every submit made a new job");

        let fleet_ref = &fleet;
        let jobs = wait_for(
            "all 200 jobs to finish",
            Duration::from_secs(120),
            || async move {
                let jobs = fleet_ref.all_jobs().await;
                let finished = jobs
                    .iter()
                    .filter(|job| {
                        matches!(
                            job.state,
                            JobState::Completed | JobState::Failed | JobState::Cancelled
                        )
                    })
                    .count();
                // A failed attempt would be retried; fail fast on it instead of waiting it out.
                if let Some(job) = jobs
                    .iter()
                    .find(|job| job.error.is_some() || job.attempt > 1)
                {
                    return Ok(Err(describe(job)));
                }
                if finished == JOBS {
                    Ok(Ok(jobs))
                } else {
                    Err(format!("{finished} of {JOBS} finished"))
                }
            },
        )
        .await
        .unwrap_or_else(|job| panic!("a job did not run cleanly the first time: {job}"));

        assert_eq!(jobs.len(), JOBS);
        let mut by_runner: HashMap<Uuid, usize> = HashMap::new();
        for job in &jobs {
            assert!(
                index_of.contains_key(&job.id),
                "an unknown job: {}",
                describe(job)
            );
            assert_eq!(job.state, JobState::Completed, "{}", describe(job));
            // One attempt and one lease epoch: claimed once, run once.
            assert_eq!(job.attempt, 1, "{}", describe(job));
            assert_eq!(
                job.lease_epoch,
                1,
                "claimed exactly once: {}",
                describe(job)
            );
            assert_eq!(exit_code(job), Some(0), "{}", describe(job));
            assert!(job.error.is_none(), "{}", describe(job));
            assert!(job.finished_at.is_some(), "{}", describe(job));
            let runner = job
                .runner_id
                .unwrap_or_else(|| panic!("no runner: {}", describe(job)));
            assert!(
                runner == runner_a || runner == runner_b,
                "run by a runner of this test: {}",
                describe(job)
            );
            *by_runner.entry(runner).or_default() += 1;
        }
        assert_eq!(
            by_runner.len(),
            2,
            "both runners took jobs: {by_runner:?} (a={runner_a}, b={runner_b})"
        );

        // The output of each echo job is in its own log exactly once: log shipping neither
        // lost nor duplicated a line, and no job's output went to another job.
        for job in &jobs {
            let index = index_of[&job.id];
            let page = fleet
                .client
                .job_logs(job.id, None, Some(1000))
                .await
                .expect("read a job log");
            let messages: Vec<&str> = page.items.iter().map(|e| e.message.as_str()).collect();
            if index % 2 == 1 {
                let marker = format!("job-{index}");
                assert_eq!(
                    messages,
                    vec![marker.as_str()],
                    "the log of {} is its one output line",
                    describe(job)
                );
            } else {
                assert!(messages.is_empty(), "`true` prints nothing: {messages:?}");
            }
        }

        // Nothing above may have cost a runner its life, and on a healthy loopback nothing is
        // worth a warning: no failed report, refused log batch or unexpected kind.
        for (name, process) in [("a", &mut process_a), ("b", &mut process_b)] {
            assert!(
                process.try_wait().is_none(),
                "runner {name} died:\n{}",
                process.output()
            );
            let output = process.output();
            let troubles: Vec<&str> = output
                .lines()
                .filter(|line| line.contains("WARN") || line.contains("ERROR"))
                .collect();
            assert!(
                troubles.is_empty(),
                "runner {name} reported trouble:\n{}",
                troubles.join("\n")
            );
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the test took more than {bound:?}"));
}

/// SIGKILL a runner holding two running jobs: their leases (2 s) expire, each attempt fails as
/// `lease_expired`, and a second runner completes them as attempt 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runners_jobs_are_finished_by_another_after_the_lease_expires() {
    let bound = Duration::from_secs(90);
    tokio::time::timeout(bound, async {
        let fleet = Coordinator::start();
        let (runner_a, mut process_a) = fleet.runner("doomed", 2, &[]).await;
        let spec = SubmitJob {
            lease_ttl_s: Some(2),
            ..exec_job(&["sleep", "3"])
        };
        let mut ids = Vec::new();
        for _ in 0..2 {
            ids.push(fleet.client.submit_job(&spec).await.expect("submit").0.id);
        }
        // `running` needs the runner's first job heartbeat (at 25-35 % of the 2 s lease), so
        // both commands have started and the leases are being kept alive by A.
        for &id in &ids {
            fleet
                .wait_job(id, "the job to run on A", Duration::from_secs(15), |job| {
                    job.state == JobState::Running && job.runner_id == Some(runner_a)
                })
                .await;
        }
        // The `sleep`s are A's children in their own process groups: a SIGKILL of A does not
        // reach them. Note them now and end them with A, as a dead machine would.
        let orphans = children_of(process_a.pid());
        process_a.kill();
        for pid in orphans {
            send_signal(pid, "KILL");
        }

        // Nobody heartbeats any more: within the lease TTL plus a reaper pass the attempt fails
        // as a lost lease and the job waits for its retry. No runner exists to claim it, so this
        // state stays visible.
        for &id in &ids {
            let job = fleet
                .wait_job(id, "the lease to expire", Duration::from_secs(15), |job| {
                    job.state == JobState::Pending && job.error.is_some()
                })
                .await;
            let error = job.error.as_ref().expect("an error");
            assert_eq!(
                error.reason,
                FailureReason::LeaseExpired,
                "{}",
                describe(&job)
            );
            assert_eq!(job.attempt, 1, "{}", describe(&job));
        }

        let (runner_b, mut process_b) = fleet.runner("rescuer", 2, &[]).await;
        for &id in &ids {
            let job = fleet
                .wait_job(
                    id,
                    "runner B to finish the job",
                    Duration::from_secs(30),
                    |job| {
                        !matches!(
                            job.state,
                            JobState::Pending | JobState::Claimed | JobState::Running
                        )
                    },
                )
                .await;
            assert_eq!(job.state, JobState::Completed, "{}", describe(&job));
            assert_eq!(job.attempt, 2, "{}", describe(&job));
            assert_eq!(job.lease_epoch, 2, "{}", describe(&job));
            assert_eq!(job.runner_id, Some(runner_b), "{}", describe(&job));
            assert_eq!(exit_code(&job), Some(0), "{}", describe(&job));
            assert!(
                job.error.is_none(),
                "a new claim clears the old error: {}",
                describe(&job)
            );
        }
        assert!(
            process_b.try_wait().is_none(),
            "runner B died:\n{}",
            process_b.output()
        );
    })
    .await
    .unwrap_or_else(|_| panic!("the test took more than {bound:?}"));
}

/// Cancelling a running exec job, with the default lease and heartbeat settings, stops its
/// command (the process is gone, not left behind) and the job ends `cancelled` within 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_running_command() {
    let bound = Duration::from_secs(90);
    tokio::time::timeout(bound, async {
        let fleet = Coordinator::start();
        let (runner, mut process) = fleet.runner("canceller", 1, &[]).await;
        let scratch = tempfile::tempdir().expect("a scratch directory");
        let pid_file = scratch.path().join("pid");
        let script = format!("echo $$ > '{}'; exec sleep 600", pid_file.display());
        let (job, _) = fleet
            .client
            .submit_job(&exec_job(&["sh", "-c", &script]))
            .await
            .expect("submit");
        // `$$` is the shell's pid, and `exec` makes it the `sleep`'s: the process to watch.
        let pid = pid_from_file(&pid_file).await;
        let _reaper = KillOnDrop(pid);
        // With the default 30 s lease the first job heartbeat, which marks it running, comes
        // 7.5-10.5 s after the claim.
        fleet
            .wait_job(job.id, "the job to run", Duration::from_secs(20), |job| {
                job.state == JobState::Running && job.runner_id == Some(runner)
            })
            .await;
        assert!(process_alive(pid), "the command runs until cancelled");

        let cancelled_at = Instant::now();
        let answer = fleet.client.cancel_job(job.id).await.expect("cancel");
        assert!(
            matches!(answer.state, JobState::Cancelling | JobState::Cancelled),
            "{}",
            describe(&answer)
        );
        // The runner hears of the cancel at its next job or runner heartbeat (each at most
        // ~10 s apart by default), SIGTERMs the process group and reports the attempt.
        let ended = fleet
            .wait_job(job.id, "the job to end", Duration::from_secs(15), |job| {
                !matches!(
                    job.state,
                    JobState::Cancelling | JobState::Running | JobState::Claimed
                )
            })
            .await;
        assert_eq!(ended.state, JobState::Cancelled, "{}", describe(&ended));
        let took = cancelled_at.elapsed();
        eprintln!("the cancelled job ended {took:?} after the cancel");
        // The runner reports only after the command exited and was reaped, so the process must
        // be gone by now; a short grace covers /proc lagging behind.
        let deadline = Instant::now() + Duration::from_secs(2);
        while process_alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            !process_alive(pid),
            "the cancelled command (pid {pid}) is still running {took:?} after the cancel"
        );
        assert!(
            process.try_wait().is_none(),
            "the runner died:\n{}",
            process.output()
        );
        // The runner is free again: a new job runs to completion on it.
        let (next, _) = fleet
            .client
            .submit_job(&exec_job(&["true"]))
            .await
            .expect("submit");
        let next = fleet
            .wait_job(
                next.id,
                "the next job to finish",
                Duration::from_secs(20),
                |job| job.state == JobState::Completed,
            )
            .await;
        assert_eq!(next.runner_id, Some(runner));
        // An idle runner drains at once: SIGTERM ends it promptly and cleanly.
        let status = tokio::task::block_in_place(|| process.terminate(Duration::from_secs(10)))
            .unwrap_or_else(|| {
                panic!(
                    "an idle runner ignored SIGTERM for 10 s:\n{}",
                    process.output()
                )
            });
        assert_eq!(status.code(), Some(0), "{status:?}:\n{}", process.output());
    })
    .await
    .unwrap_or_else(|_| panic!("the test took more than {bound:?}"));
}

/// The first SIGTERM drains: the running job finishes and is reported, the runner exits 0, and
/// a job submitted after the signal is not claimed (it stays pending, never leased).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_runner() {
    let bound = Duration::from_secs(90);
    tokio::time::timeout(bound, async {
        let fleet = Coordinator::start();
        // Concurrency 2: with one job running, a claim long poll is open for the free slot when
        // the signal comes; the drain must abandon it without taking a job.
        let (runner, mut process) = fleet.runner("drainer", 2, &["--drain-timeout", "30"]).await;
        let (first, _) = fleet
            .client
            .submit_job(&exec_job(&["sleep", "2"]))
            .await
            .expect("submit");
        fleet
            .wait_job(
                first.id,
                "the runner to take the job",
                Duration::from_secs(15),
                |job| {
                    matches!(job.state, JobState::Claimed | JobState::Running)
                        && job.runner_id == Some(runner)
                },
            )
            .await;
        // Let the runner open its next long poll for the free slot.
        tokio::time::sleep(Duration::from_millis(300)).await;
        process.signal("TERM");
        let signalled = Instant::now();
        // Submit the late job only once the drain has begun, as the coordinator sees it: the
        // runner reports `draining` in a heartbeat sent as soon as it starts draining.
        let client = fleet.client.clone();
        wait_for(
            "the runner to report draining",
            Duration::from_secs(5),
            || {
                let client = client.clone();
                async move {
                    let state = client.get_runner(runner).await.map_err(|e| e.to_string())?;
                    if state.status == RunnerStatus::Draining {
                        Ok(())
                    } else {
                        Err(format!("{:?}", state.status))
                    }
                }
            },
        )
        .await;
        let (late, _) = fleet
            .client
            .submit_job(&exec_job(&["true"]))
            .await
            .expect("submit");
        let early_exit = process.try_wait();
        assert!(
            early_exit.is_none() || fleet.job(first.id).await.state == JobState::Completed,
            "the runner exited ({early_exit:?}) before its job ended:\n{}",
            process.output()
        );
        let status = match early_exit {
            Some(status) => status,
            None => tokio::task::block_in_place(|| process.wait(Duration::from_secs(20)))
                .unwrap_or_else(|| {
                    panic!(
                        "the runner did not exit within 20 s of SIGTERM:\n{}",
                        process.output()
                    )
                }),
        };
        assert_eq!(
            status.code(),
            Some(0),
            "a drain ends with exit 0 ({status:?}); output:\n{}",
            process.output()
        );
        // The job was finished *and reported* before the exit.
        let first = fleet.job(first.id).await;
        assert_eq!(first.state, JobState::Completed, "{}", describe(&first));
        assert_eq!(first.attempt, 1, "{}", describe(&first));
        assert_eq!(exit_code(&first), Some(0), "{}", describe(&first));
        assert!(
            signalled.elapsed() < Duration::from_secs(15),
            "the drain waited only for the 2 s job: {:?}",
            signalled.elapsed()
        );
        // The late job was never leased: not by the long poll the drain abandoned (a claim
        // handler that outlived its caller would have taken it the moment it was submitted),
        // and not by anything after. Look twice, a second apart, to catch a late claim.
        for _ in 0..2 {
            let late = fleet.job(late.id).await;
            assert!(
                late.state == JobState::Pending
                    && late.lease_epoch == 0
                    && late.runner_id.is_none(),
                "a job submitted after the runner reported draining was leased: {}\n\
                 (the first job: {})\n--- runner output ---\n{}\n--- server stderr ---\n{}",
                describe(&late),
                describe(&fleet.job(first.id).await),
                process.output(),
                fleet.server.stderr()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let seen: HashSet<Uuid> = fleet.all_jobs().await.iter().map(|job| job.id).collect();
        assert_eq!(seen.len(), 2);
    })
    .await
    .unwrap_or_else(|_| panic!("the test took more than {bound:?}"));
}
