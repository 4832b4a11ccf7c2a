//! Several stateless coordinators in front of one PostgreSQL database, as real processes: three
//! `muster server --database postgres://...`, four `muster runner --exec` daemons spread over
//! them, 5,000 jobs. One coordinator (one with runners attached) is SIGKILLed mid-run and
//! restarted on the same port and data directory. Every job must end `completed`, completed once
//! by the store, and executed once per attempt it was claimed for: a job runs again only when
//! its earlier attempt's lease was lost. Every process is killed on drop, every wait is bounded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use muster_api::{CreateRunner, Job, JobState, RunnerStatus, SubmitJob};
use muster_client::{JobQuery, MusterClient};
use muster_test_support::postgres::PostgresCluster;
use serde_json::json;
use uuid::Uuid;

use crate::fleet::describe;
use crate::process::{ADMIN_TOKEN, RunnerProcess, ServerProcess};

const JOBS: usize = 5_000;
/// Jobs per `POST /api/v1/jobs/batch` (the contract allows up to 1,000).
const BATCH: usize = 500;
/// Completions seen before the coordinator is killed: well into the run, far from its end.
const KILL_AFTER_COMPLETIONS: u64 = 1_000;
/// Short leases so that jobs held by the runners of the killed coordinator are taken over by
/// the rest of the fleet while it is down, which is the case that could run a job twice.
const LEASE_TTL_S: u32 = 2;
/// Enough attempts that only a real fault, not an unlucky lease loss or two, fails a job.
const MAX_ATTEMPTS: u32 = 6;
/// Runners attached to each coordinator: two on the one that gets killed.
const RUNNERS_ON: [usize; 4] = [0, 0, 1, 2];
const RUNNER_CONCURRENCY: u32 = 4;
/// The coordinator the test kills, and one that stays up to watch progress through.
const VICTIM: usize = 0;
const WATCHER: usize = 1;
/// The whole test, for a loaded 2-core machine; it normally takes a fraction of this.
const TEST_BOUND: Duration = Duration::from_secs(240);

/// Poll `probe` every `every` until it answers `Ok`, for at most `within`; the error names what
/// was awaited and what was seen last.
pub(crate) async fn poll_until<T, F, Fut>(
    what: &str,
    within: Duration,
    every: Duration,
    mut probe: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let last = match probe().await {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        if started.elapsed() >= within {
            bail!("timed out after {within:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(every).await;
    }
}

/// `muster server --database URL` with the shared admin token (which PostgreSQL coordinators
/// require), quick runner heartbeats and reaper passes, on `listen` (port 0 for a free one).
pub(crate) fn start_postgres_coordinator(
    data_dir: &Path,
    database_url: &str,
    listen: &str,
) -> ServerProcess {
    tokio::task::block_in_place(|| {
        ServerProcess::start_with_args(
            data_dir,
            Some(ADMIN_TOKEN),
            listen,
            &[
                "--database",
                database_url,
                "--heartbeat-interval-ms",
                "1000",
                "--reap-interval-ms",
                "200",
            ],
        )
    })
}

/// Coordinators on one database, each with its own data directory, and an admin client of each.
pub(crate) struct PostgresCoordinators {
    pub(crate) data_dirs: Vec<tempfile::TempDir>,
    pub(crate) coordinators: Vec<ServerProcess>,
    pub(crate) clients: Vec<MusterClient>,
}

/// Start `count` coordinators on `database_url`. Each keeps its own local files; only the
/// database is shared.
pub(crate) fn start_postgres_coordinators(
    count: usize,
    database_url: &str,
) -> anyhow::Result<PostgresCoordinators> {
    let data_dirs: Vec<tempfile::TempDir> = (0..count)
        .map(|_| tempfile::tempdir().context("create a coordinator data directory"))
        .collect::<anyhow::Result<_>>()?;
    let coordinators: Vec<ServerProcess> = data_dirs
        .iter()
        .map(|dir| start_postgres_coordinator(dir.path(), database_url, "127.0.0.1:0"))
        .collect();
    let clients = coordinators
        .iter()
        .map(|server| server.client(ADMIN_TOKEN))
        .collect();
    Ok(PostgresCoordinators {
        data_dirs,
        coordinators,
        clients,
    })
}

/// The job counts by state in the store, as one coordinator's `/metrics` reports them (the
/// `muster_jobs` gauge, summed over kinds). Cheap enough to poll during a run of 5,000 jobs.
pub(crate) async fn job_counts_by_state(
    client: &MusterClient,
) -> Result<BTreeMap<String, u64>, String> {
    let text = client
        .metrics_text()
        .await
        .map_err(|error| format!("GET /metrics failed: {error}"))?;
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("muster_jobs{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let Some(state) = labels.split(',').find_map(|label| {
            label
                .trim()
                .strip_prefix("state=\"")
                .and_then(|state| state.strip_suffix('"'))
        }) else {
            continue;
        };
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|error| format!("unreadable metrics line {line:?}: {error}"))?;
        *counts.entry(state.to_string()).or_default() += value as u64;
    }
    Ok(counts)
}

fn count(counts: &BTreeMap<String, u64>, state: &str) -> u64 {
    counts.get(state).copied().unwrap_or(0)
}

pub(crate) fn terminal(counts: &BTreeMap<String, u64>) -> u64 {
    count(counts, "completed") + count(counts, "failed") + count(counts, "cancelled")
}

/// Every job in the store, following the cursor.
pub(crate) async fn all_jobs(client: &MusterClient) -> anyhow::Result<Vec<Job>> {
    let mut jobs = Vec::new();
    let mut query = JobQuery {
        limit: Some(1000),
        ..Default::default()
    };
    loop {
        let page = client.list_jobs(&query).await.context("list jobs")?;
        jobs.extend(page.items);
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return Ok(jobs),
        }
    }
}

/// Register a runner through `client` and start `muster runner --exec` against `base_url`,
/// recording each command it runs into `record_file`; answers once the coordinator has heard
/// its first heartbeat.
async fn start_runner(
    client: &MusterClient,
    base_url: &str,
    name: &str,
    record_file: &Path,
) -> anyhow::Result<(Uuid, RunnerProcess)> {
    let created = client
        .create_runner(&CreateRunner {
            name: name.into(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("register runner {name}"))?;
    let record = record_file
        .to_str()
        .context("read the record file's path as UTF-8")?;
    let mut process = RunnerProcess::start_with_env(
        base_url,
        &created.token,
        RUNNER_CONCURRENCY,
        &[],
        &[("FLEET_RECORD_FILE", record)],
    );
    let id = created.runner.id;
    poll_until(
        &format!("runner {name} to come online"),
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let runner = client
                .get_runner(id)
                .await
                .map_err(|error| error.to_string())?;
            match (runner.status, runner.last_heartbeat_at) {
                (RunnerStatus::Online, Some(_)) => Ok(()),
                _ => Err(format!("{runner:?}")),
            }
        },
    )
    .await
    .with_context(|| format!("wait for runner {name}; its output:\n{}", process.output()))?;
    ensure!(
        process.try_wait().is_none(),
        "runner {name} exited right after starting:\n{}",
        process.output()
    );
    Ok((id, process))
}

/// One execution of a job's command: which runner, which attempt.
pub(crate) struct Execution {
    pub(crate) runner: usize,
    pub(crate) attempt: u32,
}

/// Read the record files: each line `JOB_ID ATTEMPT`, appended by the job's command.
pub(crate) fn read_executions(
    record_files: &[std::path::PathBuf],
) -> anyhow::Result<HashMap<Uuid, Vec<Execution>>> {
    let mut executions: HashMap<Uuid, Vec<Execution>> = HashMap::new();
    for (runner, path) in record_files.iter().enumerate() {
        // A runner that never ran a job never created its file.
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => {
                return Err(error).with_context(|| format!("read {}", path.display()));
            }
        };
        for line in text.lines() {
            let (id, attempt) = line
                .split_once(' ')
                .with_context(|| format!("parse record line {line:?} of runner {runner}"))?;
            let id: Uuid = id
                .parse()
                .with_context(|| format!("parse the job id in record line {line:?}"))?;
            let attempt: u32 = attempt
                .trim()
                .parse()
                .with_context(|| format!("parse the attempt in record line {line:?}"))?;
            executions
                .entry(id)
                .or_default()
                .push(Execution { runner, attempt });
        }
    }
    Ok(executions)
}

/// Wait until at least `target` jobs are terminal, printing progress on stderr; fails early
/// when nothing moved for `stall_limit`.
async fn wait_for_terminal(
    watcher: &MusterClient,
    target: u64,
    within: Duration,
    stall_limit: Duration,
    label: &str,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut last_terminal = 0;
    let mut last_change = Instant::now();
    loop {
        let counts = job_counts_by_state(watcher)
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("read progress ({label})"))?;
        let done = terminal(&counts);
        if done >= target {
            return Ok(counts);
        }
        if done != last_terminal {
            last_terminal = done;
            last_change = Instant::now();
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "postgres fleet: {label}: {done} of {target} terminal after {:.1} s: {counts:?}",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        if last_change.elapsed() >= stall_limit {
            bail!(
                "no job finished for {stall_limit:?} ({label}): {done} of {target} terminal, counts {counts:?}"
            );
        }
        if started.elapsed() >= within {
            bail!("{label}: only {done} of {target} jobs terminal after {within:?}: {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_coordinators_on_one_database_survive_a_sigkill_and_complete_every_job_once()
-> anyhow::Result<()> {
    tokio::time::timeout(TEST_BOUND, fleet_run())
        .await
        .with_context(|| format!("finish the fleet test within {TEST_BOUND:?}"))?
}

async fn fleet_run() -> anyhow::Result<()> {
    let test_started = Instant::now();
    let cluster = tokio::task::block_in_place(PostgresCluster::shared)
        .context("start the shared PostgreSQL cluster")?;
    let database_url = tokio::task::block_in_place(|| cluster.create_database())
        .context("create this test's database")?;

    let PostgresCoordinators {
        data_dirs,
        mut coordinators,
        clients,
    } = start_postgres_coordinators(3, &database_url)?;
    eprintln!(
        "postgres fleet: coordinators {:?} on one database, started after {:.1} s",
        coordinators
            .iter()
            .map(|server| server.base_url.as_str())
            .collect::<Vec<_>>(),
        test_started.elapsed().as_secs_f64()
    );

    // Runners are registered through one coordinator and work through another: the registry
    // and the tokens live in the shared database.
    let records = tempfile::tempdir().context("create the record directory")?;
    let record_files: Vec<std::path::PathBuf> = (0..RUNNERS_ON.len())
        .map(|runner| records.path().join(format!("runner-{runner}.log")))
        .collect();
    let mut runners = Vec::new();
    for (runner, &coordinator) in RUNNERS_ON.iter().enumerate() {
        let registrar = &clients[(coordinator + 1) % clients.len()];
        let (id, process) = start_runner(
            registrar,
            &coordinators[coordinator].base_url,
            &format!("pg-fleet-{runner}-via-{coordinator}"),
            &record_files[runner],
        )
        .await?;
        runners.push((id, process));
    }
    let runner_ids: Vec<Uuid> = runners.iter().map(|(id, _)| *id).collect();

    // Submit while the runners are already claiming, spread over the coordinators. The command
    // appends "JOB_ID ATTEMPT" to its runner's record file, so every execution is counted.
    let record_command =
        r#"printf '%s %s\n' "$MUSTER_JOB_ID" "$MUSTER_ATTEMPT" >> "$FLEET_RECORD_FILE""#;
    let spec = SubmitJob {
        kind: "exec".into(),
        payload: Some(json!({ "command": ["sh", "-c", record_command] })),
        lease_ttl_s: Some(LEASE_TTL_S),
        max_attempts: Some(MAX_ATTEMPTS),
        backoff_base_s: Some(0),
        ..Default::default()
    };
    let mut submitted: HashSet<Uuid> = HashSet::new();
    for batch in 0..JOBS / BATCH {
        let client = &clients[batch % clients.len()];
        let jobs = client
            .submit_jobs(&vec![spec.clone(); BATCH])
            .await
            .with_context(|| format!("submit batch {batch} through {}", client.base_url()))?;
        ensure!(
            jobs.len() == BATCH,
            "batch {batch} answered {} jobs, not {BATCH}",
            jobs.len()
        );
        for job in jobs {
            ensure!(
                submitted.insert(job.id),
                "job id {} came back twice",
                job.id
            );
        }
    }
    eprintln!(
        "postgres fleet: {JOBS} jobs submitted after {:.1} s",
        test_started.elapsed().as_secs_f64()
    );

    // Mid-run: enough completions that the fleet is busy, far from the end.
    let before_kill = wait_for_terminal(
        &clients[WATCHER],
        KILL_AFTER_COMPLETIONS,
        Duration::from_secs(120),
        Duration::from_secs(30),
        "before the kill",
    )
    .await?;
    ensure!(
        terminal(&before_kill) < JOBS as u64,
        "the run ended before the coordinator could be killed mid-run: {before_kill:?}"
    );
    let victim_address = coordinators[VICTIM].listen_address().to_string();
    let status = tokio::task::block_in_place(|| coordinators[VICTIM].kill());
    ensure!(
        status.signal() == Some(9),
        "coordinator {VICTIM} was killed by SIGKILL, not shut down: {status:?}"
    );
    let killed_at = Instant::now();
    eprintln!(
        "postgres fleet: SIGKILLed coordinator {VICTIM} ({victim_address}) at {:?} after {:.1} s",
        before_kill,
        test_started.elapsed().as_secs_f64()
    );

    // While it is down the rest of the fleet keeps completing jobs. It stays down longer than a
    // lease, so the leases its runners hold run out and the survivors' reapers hand those jobs
    // to the other runners.
    let at_kill = terminal(&before_kill);
    let progress_target = (at_kill + 100).min(JOBS as u64);
    wait_for_terminal(
        &clients[WATCHER],
        progress_target,
        Duration::from_secs(60),
        Duration::from_secs(30),
        "while a coordinator is down",
    )
    .await
    .context("keep completing jobs through the surviving coordinators")?;
    let hold = Duration::from_secs(u64::from(LEASE_TTL_S) + 1);
    if let Some(rest) = hold.checked_sub(killed_at.elapsed()) {
        // The outage's length is part of the scenario, not a wait for a condition.
        tokio::time::sleep(rest).await;
    }
    for (runner, &coordinator) in RUNNERS_ON.iter().enumerate() {
        let process = &mut runners[runner].1;
        ensure!(
            process.try_wait().is_none(),
            "runner {runner} (on coordinator {coordinator}) died while coordinator {VICTIM} was down:\n{}",
            process.output()
        );
    }

    let restarted_wall_clock = time::OffsetDateTime::now_utc();
    coordinators[VICTIM] =
        start_postgres_coordinator(data_dirs[VICTIM].path(), &database_url, &victim_address);
    // Down from the kill until the restarted process printed its listening line.
    let down_for = killed_at.elapsed();
    eprintln!(
        "postgres fleet: coordinator {VICTIM} back on {victim_address} after {:.1} s down",
        down_for.as_secs_f64()
    );

    // The runners of the killed coordinator kept retrying and are back: their heartbeats, which
    // only the restarted coordinator can receive, reach the shared registry again.
    for (runner, _) in RUNNERS_ON
        .iter()
        .enumerate()
        .filter(|(_, on)| **on == VICTIM)
    {
        let id = runners[runner].0;
        let watcher = &clients[WATCHER];
        poll_until(
            &format!("runner {runner} to heartbeat through the restarted coordinator"),
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async move {
                let seen = watcher.get_runner(id).await.map_err(|e| e.to_string())?;
                match seen.last_heartbeat_at {
                    Some(at) if at >= restarted_wall_clock => Ok(()),
                    _ => Err(format!("{seen:?}")),
                }
            },
        )
        .await
        .with_context(|| {
            format!(
                "runner {runner}'s output:\n{}",
                tail(&runners[runner].1.output(), 20)
            )
        })?;
    }

    let finished = match wait_for_terminal(
        &clients[WATCHER],
        JOBS as u64,
        Duration::from_secs(150),
        Duration::from_secs(45),
        "after the restart",
    )
    .await
    {
        Ok(finished) => finished,
        Err(error) => {
            // Name the jobs that are lost or stuck, and what the runners were saying.
            let mut unfinished = Vec::new();
            for state in [JobState::Pending, JobState::Claimed, JobState::Running] {
                let query = JobQuery {
                    state: Some(state),
                    limit: Some(10),
                    ..Default::default()
                };
                match clients[WATCHER].list_jobs(&query).await {
                    Ok(page) => unfinished.extend(page.items.iter().map(describe)),
                    Err(list_error) => {
                        unfinished.push(format!("listing {state:?} jobs failed: {list_error}"))
                    }
                }
            }
            let outputs: Vec<String> = runners
                .iter()
                .enumerate()
                .map(|(index, (_, process))| {
                    format!("--- runner {index} ---\n{}", tail(&process.output(), 20))
                })
                .collect();
            return Err(error.context(format!(
                "wait for all jobs to finish; unfinished jobs (up to 10 per state):\n{}\nrunner outputs (tails):\n{}",
                unfinished.join("\n"),
                outputs.join("\n")
            )));
        }
    };
    let run_seconds = test_started.elapsed().as_secs_f64();

    // The store's view, read through a coordinator that was never killed and one that was.
    let jobs = all_jobs(&clients[2]).await.context("read every job")?;
    ensure!(
        jobs.len() == JOBS,
        "the database holds {} jobs, {JOBS} were submitted (metrics: {finished:?})",
        jobs.len()
    );
    let restarted_view = all_jobs(&coordinators[VICTIM].client(ADMIN_TOKEN))
        .await
        .context("read every job through the restarted coordinator")?;
    ensure!(
        restarted_view.len() == JOBS,
        "the restarted coordinator sees {} jobs, not {JOBS}",
        restarted_view.len()
    );

    let executions = read_executions(&record_files)?;
    let mut problems = Vec::new();
    let mut completed = 0;
    let mut reexecuted_jobs = 0;
    let mut extra_executions = 0;
    let mut later_attempts = 0;
    for job in &jobs {
        if !submitted.contains(&job.id) {
            problems.push(format!("a job nobody submitted: {}", describe(job)));
            continue;
        }
        if job.state == JobState::Completed {
            completed += 1;
        } else {
            problems.push(format!("not completed: {}", describe(job)));
        }
        if job.finished_at.is_none() {
            problems.push(format!("no finished_at: {}", describe(job)));
        }
        if job
            .result
            .as_ref()
            .and_then(|result| result.get("exit_code"))
            != Some(&json!(0))
        {
            problems.push(format!("not exit code 0: {}", describe(job)));
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
        // Every claim starts a new attempt under a new lease epoch.
        if job.lease_epoch < u64::from(job.attempt) {
            problems.push(format!("fewer epochs than attempts: {}", describe(job)));
        }
        if job.attempt > 1 {
            later_attempts += 1;
        }
        let runs = executions.get(&job.id).map(Vec::as_slice).unwrap_or(&[]);
        let mut attempts: Vec<u32> = runs.iter().map(|run| run.attempt).collect();
        attempts.sort_unstable();
        let distinct = {
            let mut distinct = attempts.clone();
            distinct.dedup();
            distinct
        };
        let who: Vec<String> = runs
            .iter()
            .map(|run| format!("attempt {} on runner {}", run.attempt, run.runner))
            .collect();
        if runs.is_empty() {
            problems.push(format!("never executed: {}", describe(job)));
        } else if distinct.len() != attempts.len() {
            // One attempt is one lease: two executions under it mean two runners held it.
            problems.push(format!(
                "an attempt executed twice ({who:?}): {}",
                describe(job)
            ));
        } else if attempts.last() != Some(&job.attempt) {
            // Executions are only under attempts the job had, and the last one is the one
            // that completed it.
            problems.push(format!(
                "executions {who:?} do not end with the final attempt: {}",
                describe(job)
            ));
        }
        if runs.len() > 1 {
            reexecuted_jobs += 1;
            extra_executions += runs.len() - 1;
        }
    }
    for id in executions.keys() {
        if !submitted.contains(id) {
            problems.push(format!("an execution of job {id}, which nobody submitted"));
        }
    }
    let stored: HashSet<Uuid> = jobs.iter().map(|job| job.id).collect();
    for id in submitted.difference(&stored) {
        problems.push(format!("submitted job {id} is missing from the store"));
    }

    // The protocol's side of "completed once": a runner is told its completion succeeded at
    // most once per job across the whole fleet, and every completed job's runner was told. A
    // completion the killed coordinator committed without answering is retried by its runner
    // through the restarted one, and a repeated completion is answered 200.
    let reports = poll_until(
        "every runner to log the outcome of each completion it reported",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || async {
            let reports = read_reports(&runners);
            let unaccounted = stored
                .iter()
                .filter(|id| {
                    !reports.acknowledged.contains_key(id) && !reports.refused.contains_key(id)
                })
                .count();
            if unaccounted == 0 {
                Ok(reports)
            } else {
                Err(format!(
                    "{unaccounted} completed jobs have neither an acknowledged nor a refused \
                     report in the runners' logs ({} acknowledged reports logged)",
                    reports.acknowledged.values().sum::<usize>()
                ))
            }
        },
    )
    .await?;
    for (id, times) in &reports.acknowledged {
        if *times > 1 {
            problems.push(format!(
                "job {id}: {times} completions were acknowledged to runners"
            ));
        }
    }
    for (id, line) in &reports.failed {
        problems.push(format!(
            "job {id}: a runner reported a failed attempt: {line}"
        ));
    }
    let unacknowledged: Vec<String> = reports
        .refused
        .iter()
        .filter(|(id, _)| !reports.acknowledged.contains_key(id))
        .map(|(id, line)| format!("{id}: {line}"))
        .collect();
    if !unacknowledged.is_empty() {
        problems.push(format!(
            "{} jobs completed without any runner being told: {unacknowledged:?}",
            unacknowledged.len()
        ));
    }
    if !problems.is_empty() {
        bail!(
            "{} problems among {JOBS} jobs (showing up to 20):\n{}",
            problems.len(),
            problems
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    ensure!(completed == JOBS, "{completed} of {JOBS} jobs completed");

    // Nobody died: the restarted coordinator, the others, and every runner.
    for (index, server) in coordinators.iter_mut().enumerate() {
        if let Some(status) = server.try_wait() {
            bail!(
                "coordinator {index} exited ({status:?}); stderr:\n{}",
                server.stderr()
            );
        }
    }
    let mut per_runner = Vec::new();
    for (index, (_, process)) in runners.iter_mut().enumerate() {
        ensure!(
            process.try_wait().is_none(),
            "runner {index} died:\n{}",
            process.output()
        );
        let ran = executions
            .values()
            .flatten()
            .filter(|run| run.runner == index)
            .count();
        per_runner.push(ran);
    }
    eprintln!(
        "postgres fleet: {JOBS} jobs completed once each in {run_seconds:.1} s; executions per \
         runner {per_runner:?}; {reexecuted_jobs} jobs executed again ({extra_executions} extra \
         executions); {later_attempts} jobs needed more than one attempt; coordinator \
         {VICTIM} was down {:.1} s; {} completions acknowledged to runners, {} refused \
         retries of a committed completion {unacknowledged:?}",
        down_for.as_secs_f64(),
        reports.acknowledged.values().sum::<usize>(),
        unacknowledged.len()
    );
    Ok(())
}

/// What the runners' logs say about the outcomes they reported, by job.
struct Reports {
    /// "reported job outcome ... ok=true": the coordinator answered the completion with a 2xx.
    acknowledged: HashMap<Uuid, usize>,
    /// "reported job outcome ... ok=false": an attempt reported as failed.
    failed: Vec<(Uuid, String)>,
    /// "the coordinator refused the job outcome": the report was answered with an error.
    refused: HashMap<Uuid, String>,
}

/// The value of the `job=` field of a runner log line.
fn job_field(line: &str) -> Option<Uuid> {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("job="))
        .and_then(|id| id.parse().ok())
}

fn read_reports(runners: &[(Uuid, RunnerProcess)]) -> Reports {
    let mut reports = Reports {
        acknowledged: HashMap::new(),
        failed: Vec::new(),
        refused: HashMap::new(),
    };
    for (_, process) in runners {
        for line in process.output().lines() {
            let Some(id) = job_field(line) else { continue };
            if line.contains("reported job outcome") {
                if line.contains("ok=true") {
                    *reports.acknowledged.entry(id).or_default() += 1;
                } else {
                    reports.failed.push((id, line.to_string()));
                }
            } else if line.contains("refused the job outcome") {
                reports.refused.insert(id, line.to_string());
            }
        }
    }
    reports
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
