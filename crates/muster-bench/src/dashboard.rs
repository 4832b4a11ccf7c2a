//! The `dashboard` scenario: what the dashboard's pages cost the coordinator.
//!
//! 1. A log line's way from the runner's acknowledged log call to an open live stream of the
//!    job, with one follower and with a hundred (a hundred tabs on one busy job, served by the
//!    shared feed): the time from the runner's `2xx` to each stream's receipt of the line.
//! 2. With `--jobs` jobs stored (four kinds, a tenth of them completed by one runner), every
//!    list the jobs page asks for (newest first, by state, by kind, by runner, a later page) and
//!    the job page's calls (the job, its attempts, its DAG), creation ranges, the capped counts,
//!    the overview's summary and a bulk dry run, each timed over HTTP on loopback (so at least
//!    the server's time), 50 calls each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use muster_api::{ClaimJobs, JobState, LogLevel, NewLogEntry, SubmitJob};
use muster_client::{JobQuery, MusterClient};

use crate::{ADMIN_TOKEN, admin, complete_all, percentile, preload, register};

/// Log lines timed per follower count.
const LOG_LINES: usize = 200;
/// Calls timed per page.
const PAGE_CALLS: usize = 50;

/// What the scenario measured.
pub(crate) struct DashboardRun {
    /// Followers, then the p50 and p95 milliseconds from the log call's acknowledgement to a
    /// stream's receipt.
    pub(crate) log_latency: Vec<(usize, f64, f64)>,
    /// Page, then p50 and p95 milliseconds.
    pub(crate) pages: Vec<(String, f64, f64)>,
    /// How many jobs were stored while the pages were timed.
    pub(crate) jobs: usize,
}

pub(crate) async fn run(base_url: &str, jobs: usize) -> anyhow::Result<DashboardRun> {
    let admin = admin(base_url).await?;
    let mut log_latency = Vec::new();
    for followers in [1, 100] {
        let (p50, p95) = log_push_latency(base_url, &admin, followers).await?;
        eprintln!("dashboard: log line to {followers} followers: p50 {p50:.2} ms, p95 {p95:.2} ms");
        log_latency.push((followers, p50, p95));
    }
    let pages = page_times(base_url, &admin, jobs).await?;
    Ok(DashboardRun {
        log_latency,
        pages,
        jobs,
    })
}

/// One stream's receipts: when each log `seq` arrived.
type Receipts = Arc<Mutex<HashMap<u64, Instant>>>;

/// Follow `job`'s log as a live stream, noting when each entry arrives, until it ends.
async fn follow(base_url: &str, job: uuid::Uuid, receipts: Receipts) -> anyhow::Result<()> {
    let client = muster_client::http_client_builder(base_url, &muster_client::ClientTls::system())?
        .build()?;
    let response = client
        .get(format!("{base_url}/api/v1/jobs/{job}/logs"))
        .bearer_auth(ADMIN_TOKEN)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .context("open a live log")?;
    if !response.status().is_success() {
        bail!("a live log answered {}", response.status());
    }
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(chunk) = body.next().await {
        let arrived = Instant::now();
        buffer.push_str(&String::from_utf8_lossy(&chunk.context("read a live log")?));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if block.lines().any(|line| line == "event: end") {
                return Ok(());
            }
            if let Some(seq) = block
                .lines()
                .find_map(|line| line.strip_prefix("id:"))
                .and_then(|id| id.trim().parse::<u64>().ok())
                && let Ok(mut receipts) = receipts.lock()
            {
                receipts.insert(seq, arrived);
            }
        }
    }
    Ok(())
}

async fn log_push_latency(
    base_url: &str,
    admin: &MusterClient,
    followers: usize,
) -> anyhow::Result<(f64, f64)> {
    let kind = format!("dashboard-log-{followers}");
    admin
        .submit_job(&SubmitJob {
            kind: kind.clone(),
            lease_ttl_s: Some(300),
            ..Default::default()
        })
        .await?;
    let runner = register(admin, base_url, format!("{kind}-runner")).await?;
    let claimed = runner
        .claim_job(&ClaimJobs {
            kinds: vec![kind],
            max_jobs: Some(1),
            ..Default::default()
        })
        .await?
        .pop()
        .context("claim the logging job")?;
    let epoch = Some(claimed.lease.epoch);
    let mut all_receipts = Vec::with_capacity(followers);
    let mut streams = Vec::with_capacity(followers);
    for _ in 0..followers {
        let receipts: Receipts = Arc::default();
        all_receipts.push(Arc::clone(&receipts));
        let base_url = base_url.to_string();
        streams.push(tokio::spawn(async move {
            follow(&base_url, claimed.id, receipts).await
        }));
    }
    // Every stream open and caught up before timing starts.
    runner
        .append_log(claimed.id, epoch, vec![line("warm-up")])
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while all_receipts
        .iter()
        .any(|receipts| receipts.lock().map(|r| r.is_empty()).unwrap_or(true))
    {
        if Instant::now() > deadline {
            bail!("the live streams did not open within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut acknowledged = Vec::with_capacity(LOG_LINES);
    for index in 0..LOG_LINES {
        let appended = runner
            .append_log(claimed.id, epoch, vec![line(&format!("line {index}"))])
            .await?;
        acknowledged.push((appended.next_seq - 1, Instant::now()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    runner
        .complete_job(claimed.id, epoch, serde_json::Value::Null)
        .await?;
    for stream in streams {
        tokio::time::timeout(Duration::from_secs(30), stream)
            .await
            .context("a live stream did not end")???;
    }
    let mut latencies = Vec::with_capacity(LOG_LINES * followers);
    for receipts in &all_receipts {
        let receipts = receipts
            .lock()
            .map_err(|_| anyhow::anyhow!("a poisoned lock"))?;
        for (seq, acked) in &acknowledged {
            let arrived = receipts
                .get(seq)
                .with_context(|| format!("a stream missed seq {seq}"))?;
            // A stream may hear of a line before the runner hears its acknowledgement.
            latencies.push(arrived.saturating_duration_since(*acked).as_secs_f64() * 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    Ok((percentile(&latencies, 0.5), percentile(&latencies, 0.95)))
}

fn line(message: &str) -> NewLogEntry {
    NewLogEntry {
        level: LogLevel::Info,
        message: message.to_string(),
        ..Default::default()
    }
}

async fn page_times(
    base_url: &str,
    admin: &MusterClient,
    jobs: usize,
) -> anyhow::Result<Vec<(String, f64, f64)>> {
    const KINDS: [&str; 4] = ["page-a", "page-b", "page-c", "page-d"];
    let started = Instant::now();
    for kind in KINDS {
        preload(admin, kind, jobs / KINDS.len()).await?;
    }
    // A tenth completed by one runner, so the state and runner filters have something to find.
    let runner = register(admin, base_url, "page-runner".into()).await?;
    let to_complete = jobs / 10;
    let mut completed = 0;
    while completed < to_complete {
        let claimed = runner
            .claim_job(&ClaimJobs {
                kinds: vec![KINDS[0].to_string()],
                max_jobs: Some(500),
                ..Default::default()
            })
            .await?;
        if claimed.is_empty() {
            break;
        }
        completed += claimed.len();
        complete_all(&runner, &claimed, false).await?;
    }
    eprintln!(
        "dashboard: {jobs} jobs stored, {completed} completed, in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let runner_id = runner_id_of(admin).await?;
    let first_page = admin
        .list_jobs(&JobQuery {
            limit: Some(50),
            ..Default::default()
        })
        .await?;
    let later_cursor = {
        let mut cursor = first_page.next_cursor.clone();
        for _ in 0..10 {
            let Some(current) = cursor.clone() else { break };
            cursor = admin
                .list_jobs(&JobQuery {
                    limit: Some(50),
                    cursor: Some(current),
                    ..Default::default()
                })
                .await?
                .next_cursor;
        }
        cursor
    };
    let some_job = admin
        .list_jobs(&JobQuery {
            state: Some(JobState::Completed),
            limit: Some(1),
            ..Default::default()
        })
        .await?
        .items
        .first()
        .map(|job| job.id)
        .context("a completed job")?;
    let query =
        |state: Option<JobState>, kind: Option<&str>, runner, cursor: Option<String>| JobQuery {
            state,
            kind: kind.map(str::to_string),
            runner_id: runner,
            limit: Some(50),
            cursor,
            ..Default::default()
        };
    let lists = [
        ("jobs, newest first", query(None, None, None, None)),
        (
            "jobs, pending",
            query(Some(JobState::Pending), None, None, None),
        ),
        (
            "jobs, completed",
            query(Some(JobState::Completed), None, None, None),
        ),
        ("jobs of one kind", query(None, Some("page-c"), None, None)),
        (
            "jobs of one kind, completed",
            query(Some(JobState::Completed), Some("page-a"), None, None),
        ),
        (
            "jobs of one runner",
            query(None, None, Some(runner_id), None),
        ),
        ("jobs, the 12th page", query(None, None, None, later_cursor)),
    ];
    let mut pages = Vec::new();
    for (name, query) in lists {
        let times = timed(|| async { admin.list_jobs(&query).await.map(|_| ()) }).await?;
        pages.push((format!("{name} (50 a page)"), times.0, times.1));
    }
    // Creation ranges: the newest minute (found at once, newest first), and everything before
    // an early completed job (a walk past every newer job first: the worst case).
    let early = admin.get_job(some_job).await?.created_at;
    let text = |at: time::OffsetDateTime| {
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let ranges = [
        (
            "jobs created in the last minute",
            JobQuery {
                created_after: Some(text(
                    time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
                )),
                limit: Some(50),
                ..Default::default()
            },
        ),
        (
            "jobs created before an early job (the oldest tenth)",
            JobQuery {
                created_before: Some(text(early)),
                limit: Some(50),
                ..Default::default()
            },
        ),
    ];
    for (name, query) in ranges {
        let times = timed(|| async { admin.list_jobs(&query).await.map(|_| ()) }).await?;
        pages.push((format!("{name} (50 a page)"), times.0, times.1));
    }
    let counts = [
        ("count, all jobs (capped at 10,000)", JobQuery::default()),
        (
            "count, one kind completed",
            query(Some(JobState::Completed), Some("page-a"), None, None),
        ),
        (
            "count, before an early job",
            JobQuery {
                created_before: Some(text(early)),
                ..Default::default()
            },
        ),
    ];
    for (name, query) in counts {
        let times = timed(|| async { admin.count_jobs(&query).await.map(|_| ()) }).await?;
        pages.push((name.to_string(), times.0, times.1));
    }
    let summary = timed(|| async { admin.job_summary().await.map(|_| ()) }).await?;
    pages.push((
        "the overview's summary (jobs by state and kind)".into(),
        summary.0,
        summary.1,
    ));
    let dry_run = timed(|| async {
        admin
            .bulk_jobs(&muster_api::BulkJobs {
                action: muster_api::BulkAction::Cancel,
                ids: None,
                filter: Some(muster_api::JobSelector {
                    kind: Some("page-b".into()),
                    ..Default::default()
                }),
                dry_run: true,
                cursor: None,
                limit: None,
            })
            .await
            .map(|_| ())
    })
    .await?;
    pages.push((
        "bulk cancel dry run of one kind (capped count)".into(),
        dry_run.0,
        dry_run.1,
    ));
    let job_page = timed(|| async {
        let (job, attempts, dag) = futures::join!(
            admin.get_job(some_job),
            admin.job_attempts(some_job),
            admin.job_dag(some_job)
        );
        job?;
        attempts?;
        dag?;
        Ok::<(), muster_client::ClientError>(())
    })
    .await?;
    pages.push((
        "the job page (job, attempts and DAG at once)".into(),
        job_page.0,
        job_page.1,
    ));
    let runners = timed(|| async { admin.list_runners(None, None).await.map(|_| ()) }).await?;
    pages.push(("runners".into(), runners.0, runners.1));
    Ok(pages)
}

/// The id of the runner named `page-runner`.
async fn runner_id_of(admin: &MusterClient) -> anyhow::Result<uuid::Uuid> {
    let runners = admin.list_runners(None, None).await?;
    runners
        .items
        .iter()
        .find(|runner| runner.name == "page-runner")
        .map(|runner| runner.id)
        .context("the page runner is listed")
}

/// p50 and p95 milliseconds of [`PAGE_CALLS`] calls of `call`, one after the other.
async fn timed<F, Fut, E>(call: F) -> anyhow::Result<(f64, f64)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: Into<anyhow::Error>,
{
    call().await.map_err(Into::into)?;
    let mut times = Vec::with_capacity(PAGE_CALLS);
    for _ in 0..PAGE_CALLS {
        let started = Instant::now();
        call().await.map_err(Into::into)?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok((percentile(&times, 0.5), percentile(&times, 0.95)))
}
