//! The `organizations` scenario: what scoping claims by organization costs. Three burn-downs of
//! `--jobs` jobs side by side in one run (one organization and cluster-scoped runners; two
//! organizations and the same cluster-scoped runners; two organizations, each burned down by
//! its own runners), then the depth measurement with `--organizations` organizations: a
//! claim+complete cycle at 1,000 pending jobs against one with `--depth-large` pending spread
//! over every organization, for a runner of one organization and for a cluster-scoped runner.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use muster_api::{ClaimJobs, CreateOrganization};
use muster_client::{MusterClient, RunnerClient};

use crate::{Args, admin, complete_all, median, preload_in, register_in, timed_cycles};

/// What the scenario measured.
pub(crate) struct OrganizationsRun {
    pub(crate) one_organization: f64,
    pub(crate) two_organizations_shared: f64,
    pub(crate) two_organizations_own: f64,
    /// Median claim+complete microseconds at 1,000 and at `--depth-large` pending, for a runner
    /// of one organization.
    pub(crate) own_depth: (f64, f64),
    /// The same for a cluster-scoped runner.
    pub(crate) shared_depth: (f64, f64),
}

async fn create_organizations(
    admin: &MusterClient,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(count);
    for index in 0..count {
        let created = admin
            .create_organization(&CreateOrganization {
                name: format!("{prefix}-{index}"),
                allow_shared_runners: Some(true),
            })
            .await
            .context("create a bench organization")?;
        ids.push(created.id);
    }
    Ok(ids)
}

/// `runners` claim `batch` jobs of `kind` at a time and complete each batch in one call until
/// none is left; answers jobs per second.
async fn burn_down(
    runners: Vec<RunnerClient>,
    kind: &str,
    batch: u32,
    expected: usize,
) -> anyhow::Result<f64> {
    let completed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for runner in runners {
        let completed = Arc::clone(&completed);
        let claim = ClaimJobs {
            kinds: vec![kind.to_string()],
            max_jobs: Some(batch),
            ..Default::default()
        };
        tasks.push(tokio::spawn(async move {
            loop {
                let jobs = runner.claim_job(&claim).await?;
                if jobs.is_empty() {
                    return anyhow::Ok(());
                }
                complete_all(&runner, &jobs, false).await?;
                completed.fetch_add(jobs.len() as u64, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = completed.load(Ordering::Relaxed);
    if total != expected as u64 {
        bail!("completed {total} jobs of {kind}, expected {expected}");
    }
    eprintln!("  burned down {total} jobs of {kind} in {elapsed:.2} s");
    Ok(total as f64 / elapsed)
}

/// Median claim+complete microseconds of `runner` on `shallow` (topped up in `organization`
/// before each block) and on `deep`, in alternating blocks.
async fn alternating_depth(
    admin: &MusterClient,
    runner: &RunnerClient,
    shallow: &str,
    deep: &str,
    organization: &[String],
    block: usize,
    rounds: usize,
) -> anyhow::Result<(f64, f64)> {
    for _ in 0..3 {
        preload_in(admin, shallow, block, organization).await?;
        timed_cycles(runner, shallow, block).await?;
        timed_cycles(runner, deep, block).await?;
    }
    let mut small = Vec::with_capacity(rounds);
    let mut large = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        preload_in(admin, shallow, block, organization).await?;
        small.push(timed_cycles(runner, shallow, block).await?);
        large.push(timed_cycles(runner, deep, block).await?);
    }
    Ok((median(small), median(large)))
}

pub(crate) async fn run(base_url: &str, args: &Args) -> anyhow::Result<OrganizationsRun> {
    let admin = admin(base_url).await?;
    let jobs = args.jobs;
    let half = jobs / 2;
    let pair = create_organizations(&admin, "bench-pair", 2).await?;
    let shared_runners = |prefix: &'static str| {
        let admin = admin.clone();
        async move {
            let mut runners = Vec::with_capacity(args.runners);
            for index in 0..args.runners {
                runners
                    .push(register_in(&admin, base_url, format!("{prefix}-{index}"), None).await?);
            }
            anyhow::Ok(runners)
        }
    };

    eprintln!("organizations: {jobs} jobs in one organization, cluster-scoped runners");
    preload_in(&admin, "one-org", jobs, &[]).await?;
    let one_organization =
        burn_down(shared_runners("one").await?, "one-org", args.batch, jobs).await?;

    eprintln!("organizations: {jobs} jobs over two organizations, cluster-scoped runners");
    preload_in(&admin, "two-orgs", half * 2, &pair).await?;
    let two_organizations_shared = burn_down(
        shared_runners("two").await?,
        "two-orgs",
        args.batch,
        half * 2,
    )
    .await?;

    eprintln!("organizations: {jobs} jobs over two organizations, each organization's own runners");
    preload_in(&admin, "own-orgs", half * 2, &pair).await?;
    let mut own = Vec::with_capacity(args.runners);
    for index in 0..args.runners {
        let organization = &pair[index % 2];
        own.push(register_in(&admin, base_url, format!("own-{index}"), Some(organization)).await?);
    }
    let two_organizations_own = burn_down(own, "own-orgs", args.batch, half * 2).await?;

    const ROUNDS: usize = 10;
    let block = (args.depth_cycles / ROUNDS).max(10);
    let count = args.organizations.max(1);
    eprintln!(
        "organizations: depth, {} pending over {count} organizations against 1,000",
        args.depth_large
    );
    let many = create_organizations(&admin, "bench-many", count).await?;
    let first = vec![many[0].clone()];
    preload_in(&admin, "deep-orgs", args.depth_large, &many).await?;
    // What the timed blocks take from the deep queue, on top of its depth: the first
    // organization's runner takes its own, the shared runner anyone's.
    preload_in(&admin, "deep-orgs", block * (ROUNDS + 3) * 2, &first).await?;
    preload_in(&admin, "shallow-own", 1_000, &first).await?;
    preload_in(&admin, "shallow-shared", 1_000, &[]).await?;
    let own_runner = register_in(&admin, base_url, "depth-own".into(), Some(&many[0])).await?;
    let shared_runner = register_in(&admin, base_url, "depth-shared".into(), None).await?;
    let own_depth = alternating_depth(
        &admin,
        &own_runner,
        "shallow-own",
        "deep-orgs",
        &first,
        block,
        ROUNDS,
    )
    .await?;
    let shared_depth = alternating_depth(
        &admin,
        &shared_runner,
        "shallow-shared",
        "deep-orgs",
        &[],
        block,
        ROUNDS,
    )
    .await?;
    Ok(OrganizationsRun {
        one_organization,
        two_organizations_shared,
        two_organizations_own,
        own_depth,
        shared_depth,
    })
}
