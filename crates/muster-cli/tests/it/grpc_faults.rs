//! The gRPC runner transport under faults, as real processes: two `muster server` coordinators
//! on one PostgreSQL database, each behind a proxy that cuts every connection through it at
//! random moments, four `muster runner --transport grpc --exec` daemons attached through the
//! proxies, 10,000 jobs. Every few seconds one coordinator is SIGKILLed and restarted on its
//! address, and streams are recycled every few seconds on top. Every job must complete and be
//! executed exactly once, and none may be lost. No job should be taken from the live runner
//! holding it (attempt 1 under lease epoch 1); a handful still are (a known race, bounded here
//! and counted in the output). Every process is killed on drop, every wait is bounded.

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use muster_api::{CreateRunner, JobState, RunnerStatus, SubmitJob};
use muster_test_support::postgres::PostgresCluster;
use rand::Rng;
use serde_json::json;
use uuid::Uuid;

use crate::cutting_proxy::CuttingProxy;
use crate::fleet::describe;
use crate::postgres_fleet::{
    all_jobs, job_counts_by_state, poll_until, read_executions, tail, terminal,
};
use crate::process::{ADMIN_TOKEN, RunnerProcess, ServerProcess};

const JOBS: usize = 10_000;
const BATCH: usize = 1_000;
/// Long enough that a runner whose stream broke, or whose coordinator is being restarted, keeps
/// its leases while it reattaches: the case where a job must not be reassigned.
const LEASE_TTL_S: u32 = 15;
const RUNNERS_PER_COORDINATOR: usize = 2;
const RUNNER_CONCURRENCY: u32 = 4;
const TEST_BOUND: Duration = Duration::from_secs(300);
/// How often a coordinator is SIGKILLed (alternating between the two).
const KILL_EVERY: Duration = Duration::from_secs(4);
/// Jobs that may end leased more than once (attempt 2) though their runner was alive: 0.1 %.
/// The target is 0; see the comment where they are counted.
const MAX_LEASED_AGAIN: usize = 10;

fn coordinator_args(database_url: &str) -> Vec<String> {
    [
        "--database",
        database_url,
        "--heartbeat-interval-ms",
        "1000",
        "--reap-interval-ms",
        "200",
        "--stream-lifetime",
        "3s",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect()
}

fn start_coordinator(
    data_dir: &std::path::Path,
    database_url: &str,
    listen: &str,
) -> ServerProcess {
    let args = coordinator_args(database_url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tokio::task::block_in_place(|| {
        ServerProcess::start_with_args(data_dir, Some(ADMIN_TOKEN), listen, &args)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_runners_complete_every_job_once_through_dropped_streams_and_killed_coordinators()
-> anyhow::Result<()> {
    tokio::time::timeout(TEST_BOUND, fault_run())
        .await
        .with_context(|| format!("finish the gRPC fault test within {TEST_BOUND:?}"))?
}

async fn fault_run() -> anyhow::Result<()> {
    let started = Instant::now();
    let cluster = tokio::task::block_in_place(PostgresCluster::shared)
        .context("start the shared PostgreSQL cluster")?;
    let database_url = tokio::task::block_in_place(|| cluster.create_database())
        .context("create this test's database")?;
    let data_dirs: Vec<tempfile::TempDir> = (0..2)
        .map(|_| tempfile::tempdir().context("create a coordinator data directory"))
        .collect::<anyhow::Result<_>>()?;
    let mut coordinators: Vec<ServerProcess> = data_dirs
        .iter()
        .map(|dir| start_coordinator(dir.path(), &database_url, "127.0.0.1:0"))
        .collect();
    let addresses: Vec<String> = coordinators
        .iter()
        .map(|server| server.listen_address().to_string())
        .collect();
    let clients: Vec<_> = coordinators
        .iter()
        .map(|server| server.client(ADMIN_TOKEN))
        .collect();
    let mut proxies = Vec::new();
    for address in &addresses {
        proxies.push(CuttingProxy::start(address.clone()).await?);
    }

    let records = tempfile::tempdir().context("create the record directory")?;
    let mut record_files = Vec::new();
    let mut runners: Vec<(Uuid, RunnerProcess)> = Vec::new();
    for (coordinator, proxy) in proxies.iter().enumerate() {
        for slot in 0..RUNNERS_PER_COORDINATOR {
            let index = runners.len();
            let record_file = records.path().join(format!("runner-{index}.log"));
            let created = clients[0]
                .create_runner(&CreateRunner {
                    name: format!("grpc-fault-{coordinator}-{slot}"),
                    ..Default::default()
                })
                .await
                .context("register a runner")?;
            let record = record_file.to_str().context("a UTF-8 path")?.to_string();
            let process = RunnerProcess::start_with_env(
                &proxy.base_url,
                &created.token,
                RUNNER_CONCURRENCY,
                &["--transport", "grpc"],
                &[("FLEET_RECORD_FILE", &record)],
            );
            let id = created.runner.id;
            let watcher = &clients[1];
            poll_until(
                &format!("runner {index} to come online"),
                Duration::from_secs(30),
                Duration::from_millis(100),
                || async move {
                    let runner = watcher.get_runner(id).await.map_err(|e| e.to_string())?;
                    match (runner.status, runner.last_heartbeat_at) {
                        (RunnerStatus::Online, Some(_)) => Ok(()),
                        _ => Err(format!("{runner:?}")),
                    }
                },
            )
            .await
            .with_context(|| format!("runner {index}'s output:\n{}", process.output()))?;
            record_files.push(record_file);
            runners.push((id, process));
        }
    }
    let runner_ids: HashSet<Uuid> = runners.iter().map(|(id, _)| *id).collect();

    let record_command =
        r#"printf '%s %s\n' "$MUSTER_JOB_ID" "$MUSTER_ATTEMPT" >> "$FLEET_RECORD_FILE""#;
    let spec = SubmitJob {
        kind: "exec".into(),
        payload: Some(json!({ "command": ["sh", "-c", record_command] })),
        lease_ttl_s: Some(LEASE_TTL_S),
        max_attempts: Some(3),
        backoff_base_s: Some(0),
        ..Default::default()
    };
    let mut submitted: HashSet<Uuid> = HashSet::new();
    for batch in 0..JOBS / BATCH {
        let jobs = clients[batch % 2]
            .submit_jobs(&vec![spec.clone(); BATCH])
            .await
            .with_context(|| format!("submit batch {batch}"))?;
        ensure!(
            jobs.len() == BATCH,
            "batch {batch} answered {} jobs",
            jobs.len()
        );
        submitted.extend(jobs.into_iter().map(|job| job.id));
    }
    eprintln!(
        "grpc faults: {JOBS} jobs submitted after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The faults, until every job is finished: a cut of one proxy's connections every 0.5 to
    // 1.5 s, and every KILL_EVERY a SIGKILL of one coordinator, restarted on its address after
    // a moment. Progress is read from the other coordinator.
    let mut cuts = 0usize;
    let mut cut_connections = 0usize;
    let mut kills = 0usize;
    let mut next_kill = Instant::now() + KILL_EVERY;
    let mut next_cut = Instant::now() + Duration::from_millis(500);
    let mut victim = 0usize;
    let mut last_done = 0u64;
    let mut last_change = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let watcher = &clients[1 - victim];
        let counts = match job_counts_by_state(watcher).await {
            Ok(counts) => counts,
            // The watcher may be the one restarted a moment ago.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let done = terminal(&counts);
        if done >= JOBS as u64 {
            break;
        }
        if done != last_done {
            last_done = done;
            last_change = Instant::now();
        }
        if last_change.elapsed() > Duration::from_secs(45) {
            let outputs: Vec<String> = runners
                .iter()
                .enumerate()
                .map(|(index, (_, process))| {
                    format!("--- runner {index} ---\n{}", tail(&process.output(), 15))
                })
                .collect();
            bail!(
                "no job finished for 45 s: {counts:?}\n{}",
                outputs.join("\n")
            );
        }
        if last_report.elapsed() >= Duration::from_secs(3) {
            eprintln!(
                "grpc faults: {done} of {JOBS} finished after {:.1} s ({kills} kills, {cuts} cuts): {counts:?}",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        let now = Instant::now();
        if now >= next_cut {
            let which = rand::rng().random_range(0..proxies.len());
            cut_connections += proxies[which].cut();
            cuts += 1;
            next_cut = now + Duration::from_millis(rand::rng().random_range(500..1500));
        }
        if now >= next_kill {
            let status = tokio::task::block_in_place(|| coordinators[victim].kill());
            ensure!(
                status.signal() == Some(9),
                "coordinator {victim} was not SIGKILLed: {status:?}"
            );
            kills += 1;
            tokio::time::sleep(Duration::from_millis(rand::rng().random_range(200..800))).await;
            coordinators[victim] =
                start_coordinator(data_dirs[victim].path(), &database_url, &addresses[victim]);
            victim = 1 - victim;
            next_kill = Instant::now() + KILL_EVERY;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run_seconds = started.elapsed().as_secs_f64();
    ensure!(
        kills >= 3,
        "only {kills} coordinator kills happened; the run was too short to test"
    );
    ensure!(cuts >= 10, "only {cuts} connection cuts happened");

    let jobs = all_jobs(&clients[0]).await.context("read every job")?;
    ensure!(
        jobs.len() == JOBS,
        "the store holds {} jobs, not {JOBS}",
        jobs.len()
    );
    let executions = read_executions(&record_files)?;
    let mut problems = Vec::new();
    let mut leased_again = Vec::new();
    for job in &jobs {
        if !submitted.contains(&job.id) {
            problems.push(format!("a job nobody submitted: {}", describe(job)));
            continue;
        }
        if job.state != JobState::Completed {
            problems.push(format!("not completed: {}", describe(job)));
        }
        if job
            .runner_id
            .is_none_or(|runner| !runner_ids.contains(&runner))
        {
            problems.push(format!(
                "not run by a runner of this test: {}",
                describe(job)
            ));
        }
        // Taken from its live runner (a lease that ran out while the runner reattached, or a
        // stream's job handed to another) shows as a second attempt and epoch. The target is
        // none; a known race (open in issue 17) still lets a handful of the 10,000 run out
        // undelivered under this rate of kills, so they are counted and bounded below, and
        // each must still have run exactly once.
        if job.attempt != 1 || job.lease_epoch != 1 {
            leased_again.push(describe(job));
        }
        let runs = executions.get(&job.id).map(Vec::len).unwrap_or(0);
        if runs != 1 {
            let who: Vec<String> = executions
                .get(&job.id)
                .into_iter()
                .flatten()
                .map(|run| format!("attempt {} on runner {}", run.attempt, run.runner))
                .collect();
            problems.push(format!(
                "executed {runs} times ({who:?}): {}",
                describe(job)
            ));
        }
    }
    let stored: HashSet<Uuid> = jobs.iter().map(|job| job.id).collect();
    for id in submitted.difference(&stored) {
        problems.push(format!("submitted job {id} is missing"));
    }
    if leased_again.len() > MAX_LEASED_AGAIN {
        problems.push(format!(
            "{} jobs were leased more than once (at most {MAX_LEASED_AGAIN} allowed), for example {}",
            leased_again.len(),
            leased_again[0]
        ));
    }
    if !problems.is_empty() {
        // What the runners said about the first few jobs at fault.
        let outputs: Vec<String> = runners
            .iter()
            .map(|(_, process)| process.output())
            .collect();
        for job in jobs
            .iter()
            .filter(|job| job.attempt != 1 || job.lease_epoch != 1)
            .take(3)
        {
            let id = job.id.to_string();
            for (index, output) in outputs.iter().enumerate() {
                for line in output.lines().filter(|line| line.contains(&id)) {
                    eprintln!("runner {index}: {line}");
                }
            }
        }
        bail!(
            "{} problems among {JOBS} jobs (up to 20):\n{}",
            problems.len(),
            problems
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    for (index, (_, process)) in runners.iter_mut().enumerate() {
        ensure!(
            process.try_wait().is_none(),
            "runner {index} died:\n{}",
            process.output()
        );
        let output = process.output();
        ensure!(
            !output.contains("refused this runner's stream"),
            "runner {index} was refused its stream:\n{}",
            tail(&output, 20)
        );
    }
    eprintln!(
        "grpc faults: {JOBS} jobs completed and executed once each, {} leased again, in \
         {run_seconds:.1} s through {kills} coordinator kills and {cuts} cuts ({cut_connections} \
         connections cut)",
        leased_again.len()
    );
    Ok(())
}
