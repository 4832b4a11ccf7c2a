//! A PostgreSQL outage under load, with real processes and a real server: two coordinators on
//! one database, two runners, and a submitter that never stops. PostgreSQL is stopped for a few
//! seconds: meanwhile each coordinator stays alive, answers 503 with the contract's error body,
//! says it is not ready but alive; when PostgreSQL is back they serve again by themselves (no
//! restart), later submits succeed, and every job they acknowledged exists and completes.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use muster_api::{CreateRunner, JobState, SubmitJob};
use muster_client::{ClientError, MusterClient};
use muster_test_support::postgres::PostgresCluster;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::fleet::describe;
use crate::postgres_fleet::{
    PostgresCoordinators, all_jobs, job_counts_by_state, poll_until, start_postgres_coordinators,
    tail,
};
use crate::process::{ADMIN_TOKEN, RunnerProcess, ServerProcess};

/// How long PostgreSQL stays down once every coordinator has shown it noticed.
const OUTAGE: Duration = Duration::from_secs(3);
/// How long a coordinator may take to notice the database is gone (the first 503), and to
/// serve again once it is back.
const NOTICE_WITHIN: Duration = Duration::from_secs(20);
const RECOVER_WITHIN: Duration = Duration::from_secs(30);
/// Every probe must be answered within this: a coordinator that hangs is not answering 503.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pace of the submitter: continuous load (about 20 jobs a second), without spinning on 503s.
const SUBMIT_PAUSE: Duration = Duration::from_millis(50);
/// Each job runs this long, so that jobs are in flight on the runners when the database goes.
const JOB_SECONDS: &str = "0.3";
const TEST_BOUND: Duration = Duration::from_secs(240);

/// What the submitter saw: every acknowledged job and every refusal, with when it happened.
#[derive(Default)]
struct SubmitLog {
    acknowledged: Vec<(Uuid, Instant)>,
    /// `(status or "transport", code, message, when)`
    errors: Vec<(String, String, String, Instant)>,
    attempts: usize,
}

/// One raw answer: status and body, for checking the contract's exact shape.
struct Answer {
    status: u16,
    body: String,
}

async fn get(http: &reqwest::Client, url: &str, token: Option<&str>) -> Result<Answer, String> {
    let mut request = http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|error| format!("GET {url}: no answer: {error}"))?;
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .map_err(|error| format!("GET {url}: reading the body failed: {error}"))?;
    Ok(Answer { status, body })
}

/// Whether `body` is the contract's error body with `code`:
/// `{"error": {"code": "...", "message": "..."}}` with a non-empty message.
fn is_error_body(body: &str, code: &str) -> bool {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return false;
    };
    let Some(error) = value.get("error").and_then(Value::as_object) else {
        return false;
    };
    error.get("code").and_then(Value::as_str) == Some(code)
        && error
            .get("message")
            .and_then(Value::as_str)
            .is_some_and(|message| !message.trim().is_empty())
}

/// What one coordinator showed during the outage.
#[derive(Default, Debug)]
struct OutageSeen {
    jobs_503: bool,
    readyz_503: bool,
    last: String,
}

/// Probe one coordinator during the outage: `/healthz` must stay 200 (the process is alive);
/// `GET /api/v1/jobs` must never succeed, and must come to answer 503 with the `unavailable`
/// error body; `/readyz` must come to answer 503. Any other answer is a failure at once.
async fn probe_during_outage(
    http: &reqwest::Client,
    base_url: &str,
    seen: &mut OutageSeen,
) -> anyhow::Result<()> {
    let health = get(http, &format!("{base_url}/healthz"), None)
        .await
        .map_err(anyhow::Error::msg)
        .context("ask /healthz during the outage")?;
    ensure!(
        health.status == 200,
        "{base_url}/healthz answered {} during the outage (the process is alive): {}",
        health.status,
        health.body
    );
    let jobs = get(http, &format!("{base_url}/api/v1/jobs"), Some(ADMIN_TOKEN))
        .await
        .map_err(anyhow::Error::msg)
        .context("list jobs during the outage")?;
    match jobs.status {
        503 if is_error_body(&jobs.body, "unavailable") => seen.jobs_503 = true,
        _ => bail!(
            "GET {base_url}/api/v1/jobs answered {} without its database, not 503 with \
             {{\"error\": {{\"code\": \"unavailable\", \"message\": ...}}}}: {}",
            jobs.status,
            jobs.body
        ),
    }
    let ready = get(http, &format!("{base_url}/readyz"), None)
        .await
        .map_err(anyhow::Error::msg)
        .context("ask /readyz during the outage")?;
    match ready.status {
        503 if is_error_body(&ready.body, "unavailable") => seen.readyz_503 = true,
        _ => bail!(
            "{base_url}/readyz answered {} without its database, not 503 with the \
             `unavailable` error body: {}",
            ready.status,
            ready.body
        ),
    }
    seen.last = format!(
        "jobs {} {}; readyz {} {}",
        jobs.status, jobs.body, ready.status, ready.body
    );
    Ok(())
}

/// Whether a coordinator serves again: ready, and lists jobs.
async fn serves(http: &reqwest::Client, base_url: &str) -> Result<(), String> {
    let ready = get(http, &format!("{base_url}/readyz"), None).await?;
    if ready.status != 200 {
        return Err(format!("readyz {}: {}", ready.status, ready.body));
    }
    let jobs = get(
        http,
        &format!("{base_url}/api/v1/jobs?limit=1"),
        Some(ADMIN_TOKEN),
    )
    .await?;
    if jobs.status != 200 {
        return Err(format!("GET /api/v1/jobs {}: {}", jobs.status, jobs.body));
    }
    Ok(())
}

fn ensure_alive(coordinators: &mut [ServerProcess], when: &str) -> anyhow::Result<()> {
    for (index, server) in coordinators.iter_mut().enumerate() {
        if let Some(status) = server.try_wait() {
            bail!(
                "coordinator {index} exited {when} ({status:?}); stderr:\n{}",
                server.stderr()
            );
        }
    }
    Ok(())
}

/// Submit one job at a time, alternating between the coordinators, until `stop`; record every
/// acknowledgement and every refusal.
async fn submit_continuously(
    clients: Vec<MusterClient>,
    spec: SubmitJob,
    log: Arc<Mutex<SubmitLog>>,
    stop: Arc<AtomicBool>,
) {
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let client = &clients[turn % clients.len()];
        turn += 1;
        let answer = client.submit_job(&spec).await;
        let now = Instant::now();
        record_submit_answer(&mut log.lock().expect("the submit log lock"), answer, now);
        tokio::time::sleep(SUBMIT_PAUSE).await;
    }
}

/// Note one submit's answer: an acknowledged job, or a refusal with its status and code.
fn record_submit_answer(
    log: &mut SubmitLog,
    answer: Result<(muster_api::Job, bool), ClientError>,
    now: Instant,
) {
    log.attempts += 1;
    match answer {
        Ok((job, created)) => {
            // A job without an idempotency key is always new; record it either way so a
            // wrong status cannot hide an acknowledged job.
            log.acknowledged.push((job.id, now));
            if !created {
                log.errors.push((
                    "200".into(),
                    "not_created".into(),
                    format!("job {} came back as existing", job.id),
                    now,
                ));
            }
        }
        Err(ClientError::Api {
            status,
            code,
            message,
        }) => log.errors.push((status.to_string(), code, message, now)),
        Err(other) => log
            .errors
            .push(("transport".into(), String::new(), other.to_string(), now)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinators_ride_out_a_database_outage_and_lose_no_acknowledged_job() -> anyhow::Result<()>
{
    tokio::time::timeout(TEST_BOUND, outage_run())
        .await
        .with_context(|| format!("finish the outage test within {TEST_BOUND:?}"))?
}

async fn outage_run() -> anyhow::Result<()> {
    let test_started = Instant::now();
    // A private cluster: this test stops the server, which must not hit other tests.
    let cluster = tokio::task::block_in_place(PostgresCluster::start)
        .context("start a private PostgreSQL cluster")?;
    let database_url = tokio::task::block_in_place(|| cluster.create_database())
        .context("create the test database")?;
    // The data directories live until the end: the coordinators write into them.
    let PostgresCoordinators {
        data_dirs: _data_dirs,
        mut coordinators,
        clients,
    } = start_postgres_coordinators(2, &database_url)?;
    let http = muster_client::http_client_builder(
        &coordinators[0].base_url,
        &muster_client::ClientTls::system(),
    )?
    .timeout(PROBE_TIMEOUT)
    .build()
    .context("build the probing HTTP client")?;

    // One runner per coordinator.
    let mut runners = Vec::new();
    for (index, server) in coordinators.iter().enumerate() {
        let created = clients[index]
            .create_runner(&CreateRunner {
                name: format!("pg-outage-{index}"),
                ..Default::default()
            })
            .await
            .with_context(|| format!("register runner {index}"))?;
        runners.push(RunnerProcess::start(
            &server.base_url,
            &created.token,
            4,
            &[],
        ));
    }

    let spec = SubmitJob {
        kind: "exec".into(),
        payload: Some(json!({ "command": ["sleep", JOB_SECONDS] })),
        // Leases outlast the outage plus the runners' backoff, so a job running through it is
        // normally reported by the runner that ran it; more attempts only cover bad luck.
        lease_ttl_s: Some(15),
        max_attempts: Some(5),
        backoff_base_s: Some(0),
        ..Default::default()
    };
    let log = Arc::new(Mutex::new(SubmitLog::default()));
    let stop_submitting = Arc::new(AtomicBool::new(false));
    let submitter = tokio::spawn(submit_continuously(
        clients.clone(),
        spec,
        Arc::clone(&log),
        Arc::clone(&stop_submitting),
    ));

    // Load first: the submitter is being acknowledged, the runners complete jobs and have more
    // in flight, whose completions the outage will interrupt.
    let load_started = Instant::now();
    poll_until(
        "a second of load: acknowledged submits, completed jobs, jobs in flight",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let acknowledged = log.lock().expect("the submit log lock").acknowledged.len();
            let counts = job_counts_by_state(&clients[0]).await?;
            let completed = counts.get("completed").copied().unwrap_or(0);
            let in_flight = counts.get("claimed").copied().unwrap_or(0)
                + counts.get("running").copied().unwrap_or(0);
            if load_started.elapsed() >= Duration::from_secs(1)
                && acknowledged >= 20
                && completed >= 5
                && in_flight >= 2
            {
                Ok(())
            } else {
                Err(format!("{acknowledged} acknowledged, counts {counts:?}"))
            }
        },
    )
    .await?;
    ensure_alive(&mut coordinators, "under load")?;
    // The jobs on the runners right now: the outage cuts off their heartbeats and completions.
    let mut in_flight_at_stop = Vec::new();
    for state in [JobState::Claimed, JobState::Running] {
        let page = clients[0]
            .list_jobs(&muster_client::JobQuery {
                state: Some(state),
                limit: Some(100),
                ..Default::default()
            })
            .await
            .context("list the jobs in flight")?;
        in_flight_at_stop.extend(page.items.iter().map(|job| job.id));
    }
    let acknowledged_before = log.lock().expect("the submit log lock").acknowledged.len();

    // Submits fail from the moment the shutdown begins: sessions are cut off before pg_ctl
    // returns.
    let stopping_at = Instant::now();
    tokio::task::block_in_place(|| cluster.stop()).context("stop PostgreSQL")?;
    let stopped_at = Instant::now();
    eprintln!(
        "postgres outage: PostgreSQL stopped after {:.1} s ({acknowledged_before} jobs \
         acknowledged so far, {} in flight)",
        test_started.elapsed().as_secs_f64(),
        in_flight_at_stop.len()
    );

    // During the outage: alive, healthy, not ready, 503 with the contract's body; probed over
    // and over, and for at least OUTAGE after the stop.
    let mut seen: Vec<OutageSeen> = coordinators.iter().map(|_| OutageSeen::default()).collect();
    loop {
        for (index, server) in coordinators.iter().enumerate() {
            probe_during_outage(&http, &server.base_url, &mut seen[index])
                .await
                .with_context(|| {
                    format!(
                        "probe coordinator {index} {:.1} s into the outage; its stderr (tail):\n{}",
                        stopped_at.elapsed().as_secs_f64(),
                        tail(&server.stderr(), 20)
                    )
                })?;
        }
        ensure_alive(&mut coordinators, "during the outage")?;
        let all_noticed = seen.iter().all(|seen| seen.jobs_503 && seen.readyz_503);
        if all_noticed && stopped_at.elapsed() >= OUTAGE {
            break;
        }
        if stopped_at.elapsed() >= NOTICE_WITHIN {
            bail!("not every coordinator answered 503 within {NOTICE_WITHIN:?}: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (index, runner) in runners.iter_mut().enumerate() {
        ensure!(
            runner.try_wait().is_none(),
            "runner {index} died during the outage:\n{}",
            runner.output()
        );
    }
    let refused_during_outage = log
        .lock()
        .expect("the submit log lock")
        .errors
        .iter()
        .filter(|(_, _, _, when)| *when >= stopping_at)
        .count();

    tokio::task::block_in_place(|| cluster.start_again()).context("start PostgreSQL again")?;
    let restarted_at = Instant::now();
    let outage = restarted_at - stopped_at;

    // Back by themselves: no coordinator is restarted.
    for (index, server) in coordinators.iter().enumerate() {
        let base_url = server.base_url.clone();
        poll_until(
            &format!("coordinator {index} to serve again"),
            RECOVER_WITHIN,
            Duration::from_millis(100),
            || serves(&http, &base_url),
        )
        .await
        .with_context(|| {
            format!(
                "wait for coordinator {index} to recover; stderr (tail):\n{}",
                tail(&server.stderr(), 20)
            )
        })?;
    }
    let recovered_in = restarted_at.elapsed();
    eprintln!(
        "postgres outage: down {:.1} s; both coordinators served again {:.2} s after PostgreSQL was back",
        outage.as_secs_f64(),
        recovered_in.as_secs_f64()
    );
    ensure_alive(&mut coordinators, "after the outage")?;

    // The submitter, never restarted, is acknowledged again through both coordinators.
    poll_until(
        "submits to be acknowledged again after the outage",
        RECOVER_WITHIN,
        Duration::from_millis(100),
        || async {
            let log = log.lock().expect("the submit log lock");
            let later = log
                .acknowledged
                .iter()
                .filter(|(_, when)| *when > restarted_at)
                .count();
            if later >= 20 {
                Ok(())
            } else {
                Err(format!(
                    "{later} acknowledged since the restart; last errors {:?}",
                    log.errors
                        .iter()
                        .rev()
                        .take(3)
                        .map(|(status, code, message, _)| format!("{status} {code} {message}"))
                        .collect::<Vec<_>>()
                ))
            }
        },
    )
    .await?;
    stop_submitting.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(30), submitter)
        .await
        .context("wait for the submitter to stop")?
        .context("run the submitter")?;

    let log = Arc::try_unwrap(log)
        .map_err(|_| anyhow::anyhow!("the submit log is still shared"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("the submit log lock is poisoned"))?;
    let acknowledged: HashSet<Uuid> = log.acknowledged.iter().map(|(id, _)| *id).collect();
    ensure!(
        acknowledged.len() == log.acknowledged.len(),
        "a job id was acknowledged twice"
    );
    // Refusals are 503 `unavailable`, and only while the database was away (plus the moment a
    // coordinator needs to reconnect); nothing else, and never a broken connection.
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    for (status, code, message, when) in &log.errors {
        ensure!(
            status == "503" && code == "unavailable",
            "a submit was refused with {status} {code:?}: {message}"
        );
        ensure!(
            *when >= stopping_at && *when <= restarted_at + RECOVER_WITHIN,
            "a submit was refused outside the outage (which ran from {:.1} s to {:.1} s into              the test; refused at {:.1} s): {status} {code} {message}",
            (stopping_at - test_started).as_secs_f64(),
            (restarted_at - test_started).as_secs_f64(),
            (*when - test_started).as_secs_f64()
        );
        *refusals.entry(format!("{status} {code}")).or_default() += 1;
    }
    ensure!(
        refused_during_outage > 0,
        "the submitter was never refused during a {outage:?} outage: its submits did not reach \
         the database, or were answered from elsewhere"
    );

    // Every acknowledged job is there and ends completed.
    let jobs = poll_until(
        "every acknowledged job to finish",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            let jobs = all_jobs(&clients[1])
                .await
                .map_err(|error| format!("{error:#}"))?;
            let unfinished: Vec<String> = jobs
                .iter()
                .filter(|job| acknowledged.contains(&job.id))
                .filter(|job| {
                    !matches!(
                        job.state,
                        JobState::Completed | JobState::Failed | JobState::Cancelled
                    )
                })
                .map(describe)
                .collect();
            if unfinished.is_empty() {
                Ok(jobs)
            } else {
                Err(format!(
                    "{} unfinished, e.g. {:?}",
                    unfinished.len(),
                    unfinished.iter().take(3).collect::<Vec<_>>()
                ))
            }
        },
    )
    .await
    .with_context(|| {
        format!(
            "wait for the acknowledged jobs; runner outputs (tails):\n{}",
            runners
                .iter()
                .enumerate()
                .map(|(index, runner)| format!(
                    "--- runner {index} ---\n{}",
                    tail(&runner.output(), 20)
                ))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let stored: HashSet<Uuid> = jobs.iter().map(|job| job.id).collect();
    let lost: Vec<&Uuid> = acknowledged.difference(&stored).collect();
    ensure!(
        lost.is_empty(),
        "{} acknowledged jobs are not in the database after the outage: {:?}",
        lost.len(),
        lost.iter().take(10).collect::<Vec<_>>()
    );
    // The jobs the outage caught on the runners were listed, so they were acknowledged; they
    // are checked with the rest below.
    for id in &in_flight_at_stop {
        ensure!(
            acknowledged.contains(id),
            "job {id} was on a runner at the stop but never acknowledged to the submitter"
        );
    }
    let mut later_attempts = 0;
    for job in jobs.iter().filter(|job| acknowledged.contains(&job.id)) {
        ensure!(
            job.state == JobState::Completed,
            "an acknowledged job did not complete: {}",
            describe(job)
        );
        if job.attempt > 1 {
            later_attempts += 1;
        }
    }
    // Refused submits left nothing behind, or at most what a lost answer could have committed.
    ensure!(
        jobs.len() >= acknowledged.len() && jobs.len() <= log.attempts,
        "{} jobs stored, {} acknowledged, {} submits tried",
        jobs.len(),
        acknowledged.len(),
        log.attempts
    );

    ensure_alive(&mut coordinators, "at the end")?;
    for (index, runner) in runners.iter_mut().enumerate() {
        ensure!(
            runner.try_wait().is_none(),
            "runner {index} died:\n{}",
            runner.output()
        );
    }
    for (index, server) in coordinators.iter().enumerate() {
        let stderr = server.stderr();
        ensure!(
            !stderr.contains("panicked"),
            "coordinator {index} panicked:\n{}",
            tail(&stderr, 40)
        );
    }
    eprintln!(
        "postgres outage: {} submits, {} acknowledged (all completed, {later_attempts} after more \
         than one attempt), {} stored without an acknowledgement, refusals {refusals:?}; total \
         {:.1} s",
        log.attempts,
        acknowledged.len(),
        jobs.len() - acknowledged.len(),
        test_started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `muster server --database URL` with its stdout piped (for the listening line) and its stderr
/// in a file; killed when the guard drops.
fn spawn_postgres_coordinator(
    data_dir: &std::path::Path,
    database_url: &str,
    wait: &str,
    stderr_path: &std::path::Path,
) -> anyhow::Result<(std::process::Child, crate::process::KillOnDrop)> {
    let child = crate::process::muster()
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(["--database", database_url, "--database-wait", wait])
        .env("MUSTER_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(stderr_path).context("create the stderr file")?)
        .spawn()
        .context("spawn muster server")?;
    let guard = crate::process::KillOnDrop(child.id());
    Ok((child, guard))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_started_before_its_database_waits_for_it_then_serves() -> anyhow::Result<()>
{
    tokio::task::block_in_place(|| {
        let cluster = PostgresCluster::start().context("start a private PostgreSQL cluster")?;
        let database_url = cluster
            .create_database()
            .context("create the test database")?;
        cluster.stop()?;
        let data_dir = tempfile::tempdir()?;
        let stderr_path = data_dir.path().join("stderr.log");
        let (mut child, _guard) =
            spawn_postgres_coordinator(data_dir.path(), &database_url, "2m", &stderr_path)?;
        let stdout = child.stdout.take().context("the child's stdout is piped")?;

        // It says it is waiting, and keeps waiting rather than exiting.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            if stderr.matches("cannot be reached yet").count() >= 2 {
                ensure!(
                    stderr.contains("--database-wait"),
                    "the wait names its setting: {stderr}"
                );
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!("the coordinator exited ({status}) instead of waiting:\n{stderr}");
            }
            ensure!(
                Instant::now() < deadline,
                "no second 'cannot be reached yet' line within 20 s:\n{stderr}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }

        cluster.start_again()?;
        let url =
            crate::process::listening_url(stdout, Duration::from_secs(30)).map_err(|error| {
                anyhow::anyhow!(
                    "{error}; stderr:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                )
            })?;
        let client = MusterClient::new(&url, ADMIN_TOKEN)?;
        let runtime = tokio::runtime::Handle::current();
        runtime
            .block_on(client.ready())
            .context("ready once the database is up")?;
        let (job, created) = runtime
            .block_on(client.submit_job(&SubmitJob {
                kind: "exec".into(),
                ..Default::default()
            }))
            .context("submit once the database is up")?;
        ensure!(created && job.state == JobState::Pending, "{job:?}");
        let _ = child.kill();
        let _ = child.wait();
        Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_gives_up_on_an_unreachable_database_after_database_wait()
-> anyhow::Result<()> {
    tokio::task::block_in_place(|| {
        let cluster = PostgresCluster::start().context("start a private PostgreSQL cluster")?;
        let database_url = cluster
            .create_database()
            .context("create the test database")?;
        cluster.stop()?;
        let data_dir = tempfile::tempdir()?;
        let stderr_path = data_dir.path().join("stderr.log");
        let started = Instant::now();
        let (mut child, _guard) =
            spawn_postgres_coordinator(data_dir.path(), &database_url, "2s", &stderr_path)?;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "still running 30 s after a 2 s --database-wait"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = std::fs::read_to_string(&stderr_path)?;
        ensure!(status.code() == Some(1), "exit 1, got {status}:\n{stderr}");
        ensure!(
            started.elapsed() >= Duration::from_secs(1),
            "it tried for a while before giving up ({:?}):\n{stderr}",
            started.elapsed()
        );
        let error_lines: Vec<&str> = stderr
            .lines()
            .filter(|line| line.starts_with("error:"))
            .collect();
        ensure!(
            error_lines.len() == 1
                && error_lines[0].contains("gave up after")
                && error_lines[0].contains("--database-wait"),
            "one error line saying it gave up and which setting to change:\n{stderr}"
        );
        Ok(())
    })
}
