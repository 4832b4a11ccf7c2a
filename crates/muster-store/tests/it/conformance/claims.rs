//! Claiming: exclusive under concurrency, in priority-then-age order, limited to the runner's
//! kinds and capabilities, never before `run_after`, at most `max_jobs` at a time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use anyhow::{Context, ensure};
use muster_core::{Capabilities, JobId, JobSpec, JobState, RunnerId};
use muster_store::{ClaimRequest, CompletionItem, Store, StoreError};

use super::{
    T0, at, claim, claim_one, claim_request, expect_not_found, new_job, register_runner,
    register_runner_with_labels, snapshot, spec, submit_each, submit_many, submit_one,
};

const CONCURRENT_JOBS: usize = 500;
const CONCURRENT_CLAIMERS: usize = 16;

pub async fn concurrent_claimers_claim_every_job_exactly_once(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let submitted = submit_many(store.as_ref(), "burn", CONCURRENT_JOBS, T0).await?;
    let now = at(1_000);
    let mut tasks = Vec::new();
    for claimer in 0..CONCURRENT_CLAIMERS {
        let store = Arc::clone(&store);
        let runner = register_runner(store.as_ref(), &format!("claimer-{claimer}")).await?;
        tasks.push(tokio::spawn(async move {
            let mut claimed: Vec<(JobId, u64)> = Vec::new();
            for round in 0usize.. {
                // Every claimer varies its batch size so small and large claims interleave.
                let max_jobs = 1 + ((claimer + round) % 10) as u32;
                let batch = store
                    .claim_jobs(claim_request(runner, &["burn"], max_jobs), now)
                    .await
                    .context("claim under concurrency")?;
                ensure!(
                    batch.len() <= max_jobs as usize,
                    "claimed {} jobs with max_jobs {max_jobs}",
                    batch.len()
                );
                if batch.is_empty() {
                    break;
                }
                let mut items = Vec::new();
                for job in &batch {
                    ensure!(job.job.state() == JobState::Claimed);
                    ensure!(job.job.runner_id() == Some(runner));
                    claimed.push((job.job.id, job.lease.epoch));
                    items.push(CompletionItem {
                        job: job.job.id,
                        epoch: Some(job.lease.epoch),
                        result: serde_json::json!({"claimer": claimer}),
                        signature: None,
                    });
                }
                // Completing while others still claim puts writes of both kinds in flight.
                let outcomes = store
                    .complete_jobs(runner, items, now.plus_millis(1))
                    .await
                    .context("complete a claimed batch")?;
                for outcome in outcomes {
                    outcome.context("a job this runner just claimed must complete")?;
                }
            }
            anyhow::Ok((runner, claimed))
        }));
    }
    let mut claims_per_job: HashMap<JobId, Vec<RunnerId>> = HashMap::new();
    for task in tasks {
        let (runner, claimed) = task.await.context("join a claimer task")??;
        for (job, epoch) in claimed {
            ensure!(epoch == 1, "a job claimed once has epoch 1, got {epoch}");
            claims_per_job.entry(job).or_default().push(runner);
        }
    }
    let doubles: Vec<_> = claims_per_job
        .iter()
        .filter(|(_, runners)| runners.len() > 1)
        .collect();
    ensure!(
        doubles.is_empty(),
        "jobs claimed more than once: {doubles:?}"
    );
    let submitted_ids: HashSet<JobId> = submitted.iter().map(|job| job.id).collect();
    let claimed_ids: HashSet<JobId> = claims_per_job.keys().copied().collect();
    ensure!(
        claimed_ids == submitted_ids,
        "claimed {} distinct jobs of {} submitted",
        claimed_ids.len(),
        submitted_ids.len()
    );
    for job in &submitted {
        let stored = store.get_job(job.id).await?;
        ensure!(
            stored.state() == JobState::Completed,
            "{} is {}",
            job.id,
            stored.state()
        );
        ensure!(
            stored.runner_id() == claims_per_job[&job.id].first().copied(),
            "the stored holder is the claimer"
        );
    }
    Ok(())
}

pub async fn claims_take_the_lowest_priority_number_first_then_the_oldest(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let with_priority = |priority: i32| JobSpec {
        priority,
        ..spec("ordered")
    };
    // Submitted in this order, so within one priority the earlier is the older.
    let jobs = submit_each(
        store,
        vec![
            with_priority(100),
            with_priority(5),
            with_priority(100),
            with_priority(-3),
            with_priority(5),
            with_priority(50),
        ],
        T0,
    )
    .await?;
    let expected_order = [
        jobs[3].id, jobs[1].id, jobs[4].id, jobs[5].id, jobs[0].id, jobs[2].id,
    ];

    // A batch claim takes the best two.
    let runner = register_runner(store, "ordered-batch").await?;
    let batch = claim(store, runner, &["ordered"], 2, at(1_000)).await?;
    let batch_ids: HashSet<JobId> = batch.iter().map(|claimed| claimed.job.id).collect();
    ensure!(
        batch_ids == HashSet::from([expected_order[0], expected_order[1]]),
        "a claim of two takes the two best jobs"
    );

    // One at a time, the rest come in order.
    let mut taken = Vec::new();
    for _ in 2..expected_order.len() {
        taken.push(claim_one(store, runner, "ordered", at(2_000)).await?.job.id);
    }
    ensure!(
        taken == expected_order[2..],
        "claim order by priority then age: expected {:?}, got {taken:?}",
        &expected_order[2..]
    );
    Ok(())
}

pub async fn claims_order_by_priority_across_kinds(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let store = store.as_ref();
    let jobs = submit_each(
        store,
        vec![
            JobSpec {
                priority: 10,
                ..spec("kind-a")
            },
            JobSpec {
                priority: 1,
                ..spec("kind-b")
            },
            JobSpec {
                priority: 10,
                ..spec("kind-b")
            },
        ],
        T0,
    )
    .await?;
    let runner = register_runner(store, "two-kinds").await?;
    let mut taken = Vec::new();
    for _ in 0..3 {
        let mut claimed = claim(store, runner, &["kind-a", "kind-b"], 1, at(1_000)).await?;
        ensure!(claimed.len() == 1, "one job per claim of one");
        taken.push(claimed.remove(0).job.id);
    }
    ensure!(
        taken == vec![jobs[1].id, jobs[0].id, jobs[2].id],
        "the best job of any listed kind comes first, ties by age"
    );
    Ok(())
}

pub async fn claims_respect_max_jobs(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let store = store.as_ref();
    submit_many(store, "limited", 10, T0).await?;
    let runner = register_runner(store, "limited").await?;
    let mut sizes = Vec::new();
    for _ in 0..5 {
        sizes.push(
            claim(store, runner, &["limited"], 3, at(1_000))
                .await?
                .len(),
        );
    }
    ensure!(sizes == vec![3, 3, 3, 1, 0], "batch sizes {sizes:?}");
    Ok(())
}

pub async fn a_submit_handed_off_to_a_waiting_runner_is_leased_to_it_at_once(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let runner = register_runner(store, "waiting").await?;
    let job = new_job(spec("handed"), T0);
    let (submitted, claimed) = store
        .submit_and_claim(
            vec![job.clone()],
            claim_request(runner, &["handed"], 1),
            at(10),
        )
        .await?;
    ensure!(
        submitted.len() == 1 && submitted[0].created,
        "{submitted:?}"
    );
    ensure!(claimed.len() == 1, "the new job is leased: {claimed:?}");
    ensure!(claimed[0].job.id == job.id);
    ensure!(claimed[0].lease.epoch == 1);
    let stored = store.get_job(job.id).await?;
    ensure!(stored.state() == JobState::Claimed, "{stored:?}");
    ensure!(stored.runner_id() == Some(runner));
    // A runner of another kind leaves the new job pending; the submit still stands.
    let other = new_job(spec("handed"), T0.plus_millis(1));
    let (submitted, claimed) = store
        .submit_and_claim(
            vec![other.clone()],
            claim_request(runner, &["elsewhere"], 1),
            at(20),
        )
        .await?;
    ensure!(submitted.len() == 1 && claimed.is_empty(), "{claimed:?}");
    ensure!(store.get_job(other.id).await?.state() == JobState::Pending);
    // Older pending work the runner can take comes first, as in any claim.
    let (_, claimed) = store
        .submit_and_claim(
            vec![new_job(spec("handed"), T0.plus_millis(2))],
            claim_request(runner, &["handed"], 1),
            at(30),
        )
        .await?;
    ensure!(
        claimed.len() == 1 && claimed[0].job.id == other.id,
        "{claimed:?}"
    );
    Ok(())
}

pub async fn claims_only_take_the_runners_kinds(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let store = store.as_ref();
    let a = submit_many(store, "alpha", 3, T0).await?;
    let b = submit_many(store, "beta", 3, T0).await?;
    let c = submit_many(store, "gamma", 3, T0).await?;
    let runner = register_runner(store, "alpha-gamma").await?;

    ensure!(
        claim(store, runner, &[], 10, at(1_000)).await?.is_empty(),
        "a runner hosting no kind takes nothing"
    );
    ensure!(
        claim(store, runner, &["delta"], 10, at(1_000))
            .await?
            .is_empty(),
        "a kind with no jobs gives nothing"
    );
    // A kind listed twice must not make a job look like two candidates.
    let claimed = claim(store, runner, &["gamma", "alpha", "gamma"], 10, at(1_000)).await?;
    let claimed_ids: HashSet<JobId> = claimed.iter().map(|job| job.job.id).collect();
    let expected: HashSet<JobId> = a.iter().chain(&c).map(|job| job.id).collect();
    ensure!(claimed.len() == 6, "each job once, got {}", claimed.len());
    ensure!(claimed_ids == expected, "exactly the alpha and gamma jobs");
    for job in &b {
        ensure!(store.get_job(job.id).await?.state() == JobState::Pending);
    }
    Ok(())
}

fn capabilities(labels: &[(&str, &str)], tags: &[&str], resources: &[(&str, f64)]) -> Capabilities {
    Capabilities {
        labels: labels
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
        tags: tags.iter().map(|tag| tag.to_string()).collect(),
        resources: resources
            .iter()
            .map(|(name, amount)| (name.to_string(), *amount))
            .collect(),
    }
}

pub async fn claims_match_labels_tags_and_resources(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let store = store.as_ref();
    let offer = capabilities(
        &[("gpu", "a100"), ("zone", "eu")],
        &["q4_k_m", "q8_0"],
        &[("vram_gb", 40.0), ("cpus", 8.0)],
    );
    let cases: Vec<(&str, Capabilities, bool)> = vec![
        ("no requirements", Capabilities::default(), true),
        (
            "equal label",
            capabilities(&[("gpu", "a100")], &[], &[]),
            true,
        ),
        (
            "different label value",
            capabilities(&[("gpu", "h100")], &[], &[]),
            false,
        ),
        (
            "missing label",
            capabilities(&[("arch", "arm")], &[], &[]),
            false,
        ),
        (
            "tags subset",
            capabilities(&[], &["q8_0", "q4_k_m"], &[]),
            true,
        ),
        (
            "tag missing",
            capabilities(&[], &["q8_0", "fp16"], &[]),
            false,
        ),
        (
            "resource equal",
            capabilities(&[], &[], &[("vram_gb", 40.0)]),
            true,
        ),
        (
            "resource less",
            capabilities(&[], &[], &[("cpus", 2.5)]),
            true,
        ),
        (
            "resource more",
            capabilities(&[], &[], &[("vram_gb", 40.5)]),
            false,
        ),
        (
            "resource absent",
            capabilities(&[], &[], &[("memory_gb", 1.0)]),
            false,
        ),
        (
            "all parts met",
            capabilities(&[("zone", "eu")], &["q8_0"], &[("cpus", 8.0)]),
            true,
        ),
    ];
    let runner = register_runner(store, "matcher").await?;
    for (index, (name, requirements, claimable)) in cases.into_iter().enumerate() {
        // A kind per case keeps the cases from seeing each other's jobs.
        let kind = format!("match-{index}");
        let job = submit_one(
            store,
            JobSpec {
                requirements: requirements.clone(),
                ..spec(&kind)
            },
            T0,
        )
        .await?;
        ensure!(
            store.get_job(job.id).await?.requirements == requirements,
            "{name}: requirements are stored as given"
        );
        let claimed = store
            .claim_jobs(
                ClaimRequest {
                    runner,
                    kinds: vec![kind.clone()],
                    offer: offer.clone(),
                    max_jobs: 5,
                },
                at(1_000),
            )
            .await?;
        let expected = usize::from(claimable);
        ensure!(
            claimed.len() == expected,
            "{name}: expected {expected} claimed, got {}",
            claimed.len()
        );
    }
    Ok(())
}

pub async fn registration_labels_count_for_matching_and_cannot_be_overridden(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let needs_a100 = JobSpec {
        requirements: capabilities(&[("gpu", "a100")], &[], &[]),
        ..spec("gpu-work")
    };
    let job = submit_one(store, needs_a100, T0).await?;

    // Declares a100 itself, but an operator registered it as t4: the operator's word holds.
    let t4 = register_runner_with_labels(
        store,
        "registered-t4",
        BTreeMap::from([("gpu".to_string(), "t4".to_string())]),
    )
    .await?;
    let spoofed = store
        .claim_jobs(
            ClaimRequest {
                runner: t4,
                kinds: vec!["gpu-work".into()],
                offer: capabilities(&[("gpu", "a100")], &[], &[]),
                max_jobs: 1,
            },
            at(1_000),
        )
        .await?;
    ensure!(
        spoofed.is_empty(),
        "declared labels must not override registered ones"
    );

    // Declares nothing, registered as a100: matches on the registration alone.
    let a100 = register_runner_with_labels(
        store,
        "registered-a100",
        BTreeMap::from([("gpu".to_string(), "a100".to_string())]),
    )
    .await?;
    let claimed = claim_one(store, a100, "gpu-work", at(2_000)).await?;
    ensure!(claimed.job.id == job.id);
    let runner = store.get_runner(a100).await?;
    ensure!(
        runner.labels.get("gpu").map(String::as_str) == Some("a100"),
        "registered labels are reported: {:?}",
        runner.labels
    );
    Ok(())
}

pub async fn jobs_scheduled_for_later_are_claimed_only_once_due(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let due_at = at(60_000);
    let later = submit_one(
        store,
        JobSpec {
            run_after: Some(due_at),
            // The best priority: being scheduled must still keep it out of claims.
            priority: -100,
            ..spec("scheduled")
        },
        T0,
    )
    .await?;
    ensure!(store.get_job(later.id).await?.lifecycle.run_after == due_at);
    let now_job = submit_one(store, spec("scheduled"), T0.plus_millis(1)).await?;
    let runner = register_runner(store, "scheduler").await?;

    let first = claim(store, runner, &["scheduled"], 10, at(1_000)).await?;
    ensure!(
        first.iter().map(|job| job.job.id).collect::<Vec<_>>() == vec![now_job.id],
        "only the due job is claimed, the scheduled one does not block it"
    );
    ensure!(
        claim(store, runner, &["scheduled"], 10, due_at.plus_millis(-1))
            .await?
            .is_empty(),
        "one millisecond early is too early"
    );
    let claimed = claim_one(store, runner, "scheduled", due_at).await?;
    ensure!(claimed.job.id == later.id, "due exactly at run_after");
    Ok(())
}

pub async fn claims_by_unknown_or_deleted_runners_are_refused(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(store, spec("guarded"), T0).await?;
    let before = snapshot(store, job.id).await?;
    let stranger = RunnerId::new(T0, 0xDEAD_BEEF);
    expect_not_found(
        store
            .claim_jobs(claim_request(stranger, &["guarded"], 1), at(1_000))
            .await,
        "claim by a runner never registered",
    )?;
    let deleted = register_runner(store, "soon-gone").await?;
    store.delete_runner(deleted, at(500)).await?;
    expect_not_found(
        store
            .claim_jobs(claim_request(deleted, &["guarded"], 1), at(1_000))
            .await,
        "claim by a deleted runner",
    )?;
    ensure!(
        snapshot(store, job.id).await? == before,
        "refused claims change nothing"
    );
    Ok(())
}

pub async fn a_claim_records_the_lease_attempt_and_what_the_runner_declared(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let job = submit_one(
        store,
        JobSpec {
            policy: super::policy(4, 120, 45, 2),
            ..spec("leased")
        },
        T0,
    )
    .await?;
    let runner = register_runner(store, "declaring").await?;
    let offer = capabilities(&[("zone", "eu")], &["fast"], &[("cpus", 4.0)]);
    let now = at(1_000);
    let mut claimed = store
        .claim_jobs(
            ClaimRequest {
                runner,
                kinds: vec!["leased".into()],
                offer: offer.clone(),
                max_jobs: 1,
            },
            now,
        )
        .await?;
    ensure!(claimed.len() == 1);
    let claimed = claimed.remove(0);
    ensure!(claimed.lease.epoch == 1);
    ensure!(claimed.lease.ttl_ms == 45_000);
    ensure!(claimed.lease.expires_at == now.plus_seconds(45));
    let stored = store.get_job(job.id).await?;
    ensure!(stored == claimed.job, "the claim answers the job as stored");
    ensure!(stored.state() == JobState::Claimed);
    ensure!(stored.lifecycle.attempt == 1);
    ensure!(stored.lifecycle.claimed_at == Some(now));
    ensure!(stored.lifecycle.started_at.is_none());
    ensure!(stored.lifecycle.lease() == Some(claimed.lease));
    ensure!(stored.lifecycle.attempt_deadline_at == Some(now.plus_seconds(120)));

    let record = store
        .get_runner(runner)
        .await
        .context("reload the runner")?;
    ensure!(
        record.kinds == vec!["leased".to_string()],
        "kinds {:?}",
        record.kinds
    );
    ensure!(record.offer == offer, "offer {:?}", record.offer);
    ensure!(record.last_seen_at == Some(now));
    ensure!(record.running_jobs == 1);
    Ok(())
}

/// More jobs nobody can take than one claim scans must not hide a job anyone can take, nor a job
/// in a retry backoff hide due jobs behind it.
pub async fn jobs_anyone_can_take_are_not_hidden_behind_jobs_nobody_can_take(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let unmatchable = JobSpec {
        requirements: capabilities(&[("gpu", "h100")], &[], &[]),
        ..spec("hidden")
    };
    let blockers: Vec<_> = (0..2_100)
        .map(|_| new_job(unmatchable.clone(), T0))
        .collect();
    store
        .submit_jobs(blockers)
        .await
        .context("submit jobs no runner can take")?;
    let scheduled_later = JobSpec {
        run_after: Some(at(3_600_000)),
        ..spec("hidden")
    };
    let later: Vec<_> = (0..2_100)
        .map(|_| new_job(scheduled_later.clone(), T0))
        .collect();
    store
        .submit_jobs(later)
        .await
        .context("submit jobs scheduled for later")?;
    let open = submit_one(store, spec("hidden"), at(1)).await?;
    let runner = register_runner(store, "no-gpu").await?;
    let claimed = store
        .claim_jobs(claim_request(runner, &["hidden"], 5), at(10))
        .await
        .context("claim behind 4,200 jobs this runner cannot take now")?;
    let ids: Vec<JobId> = claimed.iter().map(|claimed| claimed.job.id).collect();
    ensure!(
        ids == vec![open.id],
        "expected only the open job, got {ids:?}"
    );
    Ok(())
}

/// What one claimer of `claims_arriving_together_are_each_answered_as_their_own` asks for.
struct WaveClaimer {
    runner: RunnerId,
    kinds: Vec<&'static str>,
    offer: Capabilities,
    max_jobs: u32,
    /// How many it must get (enough jobs are pending for every claim that can take them).
    expected: usize,
}

/// Claims and completions that reach a store at the same moment (which a backend may run
/// together, as one transaction) are each answered as if they had run alone: an unknown runner's
/// claim is refused without failing the others, a draining runner gets nothing, every claim gets
/// only jobs of its kinds that it can take, at most `max_jobs`, and never a job another claim got;
/// a kind that only single-kind claims ask for is taken from the front of its claim order; a
/// completion that names another runner's job is refused for that item alone.
///
/// (Under `SKIP LOCKED` a claim naming two kinds may hold rows of one that it then leaves, and a
/// concurrent claim skips them; so the front-of-the-order check is made only on a kind that no
/// such claim names.)
pub async fn claims_arriving_together_are_each_answered_as_their_own(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    // Priorities mixed so the claim order is not the submission order.
    let ordered = |kind: &str, count: i32| -> Vec<JobSpec> {
        (0..count)
            .map(|index| JobSpec {
                priority: (index * 7) % 5,
                ..spec(kind)
            })
            .collect()
    };
    let mut specs = ordered("wave-a", 20);
    specs.extend(ordered("wave-b", 10));
    specs.extend(ordered("wave-c", 10));
    specs.extend((0..5).map(|_| JobSpec {
        requirements: capabilities(&[("gpu", "yes")], &[], &[]),
        ..spec("wave-gpu")
    }));
    let submitted = submit_each(store.as_ref(), specs, T0).await?;
    // The claim order of wave-a, the kind only single-kind claims ask for.
    let mut wave_a: Vec<&muster_core::JobRecord> = submitted
        .iter()
        .filter(|job| job.kind == "wave-a")
        .collect();
    wave_a.sort_by_key(|job| (job.priority, job.created_at));

    let mut claimers = Vec::new();
    for index in 0..4 {
        claimers.push(WaveClaimer {
            runner: register_runner(store.as_ref(), &format!("wave-a-{index}")).await?,
            kinds: vec!["wave-a"],
            offer: Capabilities::default(),
            max_jobs: 3,
            expected: 3,
        });
    }
    for index in 0..2 {
        claimers.push(WaveClaimer {
            runner: register_runner(store.as_ref(), &format!("wave-bc-{index}")).await?,
            kinds: vec!["wave-c", "wave-b"],
            offer: Capabilities::default(),
            max_jobs: 4,
            expected: 4,
        });
    }
    claimers.push(WaveClaimer {
        runner: register_runner(store.as_ref(), "wave-gpu").await?,
        kinds: vec!["wave-gpu"],
        offer: capabilities(&[("gpu", "yes")], &[], &[]),
        max_jobs: 5,
        expected: 5,
    });
    // Asks for the same kind without the label: none of those jobs is for it.
    claimers.push(WaveClaimer {
        runner: register_runner(store.as_ref(), "wave-no-gpu").await?,
        kinds: vec!["wave-gpu"],
        offer: capabilities(&[("gpu", "no")], &[], &[]),
        max_jobs: 2,
        expected: 0,
    });
    let draining = register_runner(store.as_ref(), "wave-draining").await?;
    store
        .runner_heartbeat(
            muster_store::RunnerBeat {
                runner: draining,
                draining: true,
                jobs: Vec::new(),
                hostname: None,
                version: None,
            },
            at(100),
        )
        .await?;
    let unknown = RunnerId::new(T0, 0x5EED_0BAD);

    let now = at(1_000);
    let request = |claimer: &WaveClaimer| ClaimRequest {
        runner: claimer.runner,
        kinds: claimer.kinds.iter().map(|kind| kind.to_string()).collect(),
        offer: claimer.offer.clone(),
        max_jobs: claimer.max_jobs,
    };
    let mut tasks = Vec::new();
    for request in claimers.iter().map(request).chain([
        claim_request(draining, &["wave-a"], 5),
        claim_request(unknown, &["wave-a"], 5),
    ]) {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(
            async move { store.claim_jobs(request, now).await },
        ));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.context("join a claim")?);
    }
    let unknown_answer = answers.pop().context("the unknown runner's answer")?;
    expect_not_found(unknown_answer, "a claim by an unknown runner")?;
    let draining_answer = answers
        .pop()
        .context("the draining runner's answer")?
        .context("a draining runner's claim is answered")?;
    ensure!(
        draining_answer.is_empty(),
        "a draining runner claimed {} job(s)",
        draining_answer.len()
    );

    let mut holder: HashMap<JobId, (RunnerId, u64)> = HashMap::new();
    let mut taken_of_wave_a: HashSet<JobId> = HashSet::new();
    for (claimer, answer) in claimers.iter().zip(answers) {
        let claimed = answer.context("a known runner's claim is answered")?;
        ensure!(
            claimed.len() == claimer.expected,
            "a claim for {} job(s) of {:?} got {}, expected {}",
            claimer.max_jobs,
            claimer.kinds,
            claimed.len(),
            claimer.expected
        );
        for job in claimed {
            ensure!(
                claimer.kinds.contains(&job.job.kind.as_str()),
                "a claim for {:?} got a job of kind {}",
                claimer.kinds,
                job.job.kind
            );
            ensure!(job.job.runner_id() == Some(claimer.runner));
            ensure!(
                holder
                    .insert(job.job.id, (claimer.runner, job.lease.epoch))
                    .is_none(),
                "job {} was claimed twice",
                job.job.id
            );
            if job.job.kind == "wave-a" {
                taken_of_wave_a.insert(job.job.id);
            }
        }
    }
    ensure!(
        holder.len() == 4 * 3 + 2 * 4 + 5,
        "claimed {} jobs",
        holder.len()
    );
    let front: HashSet<JobId> = wave_a
        .iter()
        .take(taken_of_wave_a.len())
        .map(|job| job.id)
        .collect();
    ensure!(
        taken_of_wave_a.len() == 4 * 3 && front == taken_of_wave_a,
        "the {} job(s) of wave-a claimed are not the first 12 in its claim order",
        taken_of_wave_a.len()
    );

    // All holders complete at once; one of them also names a job another runner holds.
    let foreign_job = *holder
        .iter()
        .find(|(_, (runner, _))| *runner == claimers[1].runner)
        .context("the second claimer holds a job")?
        .0;
    let mut tasks = Vec::new();
    for (index, claimer) in claimers.iter().enumerate() {
        let mut items: Vec<CompletionItem> = holder
            .iter()
            .filter(|(_, (runner, _))| *runner == claimer.runner)
            .map(|(job, (_, epoch))| CompletionItem {
                job: *job,
                epoch: Some(*epoch),
                result: serde_json::json!({ "by": index }),
                signature: None,
            })
            .collect();
        if index == 0 {
            items.push(CompletionItem {
                job: foreign_job,
                epoch: None,
                result: serde_json::json!({ "by": "someone else" }),
                signature: None,
            });
        }
        let store = Arc::clone(&store);
        let runner = claimer.runner;
        tasks.push(tokio::spawn(async move {
            let count = items.len();
            let answers = store.complete_jobs(runner, items, at(2_000)).await;
            (count, answers)
        }));
    }
    for (index, task) in tasks.into_iter().enumerate() {
        let (count, answers) = task.await.context("join a completion")?;
        let answers = answers.context("a completion batch is answered item by item")?;
        ensure!(answers.len() == count, "one answer per item");
        for (position, answer) in answers.into_iter().enumerate() {
            if index == 0 && position == count - 1 {
                ensure!(
                    matches!(answer, Err(StoreError::LeaseLost(_))),
                    "completing another runner's job: expected LeaseLost, got {answer:?}"
                );
            } else {
                answer.context("completing a job this runner holds")?;
            }
        }
    }
    for (job, (runner, _)) in &holder {
        let stored = store.get_job(*job).await?;
        let by = claimers
            .iter()
            .position(|claimer| claimer.runner == *runner)
            .context("a holder is a claimer")?;
        ensure!(stored.state() == JobState::Completed, "{job} completed");
        ensure!(
            stored.result == Some(serde_json::json!({ "by": by })),
            "{job} keeps its holder's result, not another runner's: {:?}",
            stored.result
        );
    }
    Ok(())
}

pub async fn a_claim_naming_a_kind_twice_takes_each_job_once(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let needs_gpu = capabilities(&[("gpu", "a100")], &[], &[]);
    let jobs = submit_each(
        store,
        vec![
            spec("twice"),
            JobSpec {
                requirements: needs_gpu.clone(),
                ..spec("twice")
            },
            spec("twice"),
        ],
        T0,
    )
    .await?;
    let runner = register_runner(store, "twice").await?;
    let claimed = store
        .claim_jobs(
            ClaimRequest {
                offer: needs_gpu,
                ..claim_request(runner, &["twice", "twice"], 10)
            },
            at(1_000),
        )
        .await?;
    let claimed_ids: Vec<JobId> = claimed.iter().map(|job| job.job.id).collect();
    let submitted_ids: Vec<JobId> = jobs.iter().map(|job| job.id).collect();
    ensure!(
        claimed_ids == submitted_ids,
        "every job once, oldest first: {claimed_ids:?}"
    );
    Ok(())
}
