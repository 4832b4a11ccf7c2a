//! The `signed` scenario: what runner identity costs. Runners register with their own Ed25519
//! keys (registrations per second), then burn down one kind that takes unsigned results and one
//! whose settings require signed results, side by side in one run with the same runners, jobs
//! and results; and the coordinator's verification of one result signature is timed on its
//! own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use muster_api::{
    AddRunnerKey, ClaimJobs, CompleteJobs, CompletionItem, ResultSignature, SetKindSettings,
};
use muster_client::{MusterClient, Registrar, RunnerClient, RunnerDescription};
use muster_core::identity::{RunnerSigningKey, verify_result_signature};
use serde_json::{Value, json};

/// What the scenario measured.
pub(crate) struct SignedRun {
    pub(crate) registrations_per_second: f64,
    pub(crate) registrations: usize,
    pub(crate) unsigned: BurnDown,
    pub(crate) signed: BurnDown,
    pub(crate) verify_micros: f64,
    /// Per signature, verifying batches of 100 together as a batch completion does.
    pub(crate) batch_verify_micros: f64,
}

/// One kind's burn-down: end to end, and what it cost the coordinator's own threads.
pub(crate) struct BurnDown {
    pub(crate) jobs_per_second: f64,
    /// Microseconds of the coordinator's CPU per job (its threads only, not the runners').
    pub(crate) coordinator_cpu_micros_per_job: f64,
}

const UNSIGNED_KIND: &str = "bench-unsigned";
const SIGNED_KIND: &str = "bench-signed";

/// The result every job reports: small, like a score with a name and a few numbers.
fn result_of(index: usize) -> Value {
    json!({"score": 0.5 + (index % 100) as f64 / 1000.0, "model": "q4_k_m", "tokens": index})
}

/// A runner registered with its own key.
struct KeyRunner {
    client: RunnerClient,
    key: Arc<RunnerSigningKey>,
    id: String,
}

/// Allow and register `count` runners, each with a new key, 8 registrations in flight; answers
/// them and the registration rate (allowing the keys is not timed).
async fn register_key_runners(
    admin: &MusterClient,
    base_url: &str,
    count: usize,
) -> anyhow::Result<(Vec<KeyRunner>, f64)> {
    let keys: Vec<Arc<RunnerSigningKey>> = (0..count)
        .map(|_| Arc::new(muster_test_support::TestServer::new_runner_key()))
        .collect();
    for key in &keys {
        admin
            .add_runner_key(&AddRunnerKey {
                public_key: key.public_key().to_base64(),
                note: Some("muster-bench".into()),
                organization_id: None,
            })
            .await
            .context("allow a bench key")?;
    }
    let registrar = Registrar::new(base_url, &muster_client::ClientTls::system())?;
    let started = Instant::now();
    let registered = futures::StreamExt::collect::<Vec<_>>(futures::StreamExt::buffer_unordered(
        futures::stream::iter(keys.into_iter().enumerate().map(|(index, key)| {
            let registrar = registrar.clone();
            async move {
                let description = RunnerDescription {
                    name: format!("bench-key-{index}"),
                    hostname: "muster-bench".into(),
                    kinds: vec![UNSIGNED_KIND.into(), SIGNED_KIND.into()],
                    ..Default::default()
                };
                let (registered, _) = registrar
                    .register(&key, &description)
                    .await
                    .context("register a bench runner by key")?;
                anyhow::Ok((registered, key))
            }
        })),
        8,
    ))
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut runners = Vec::with_capacity(count);
    for outcome in registered {
        let (registered, key) = outcome?;
        runners.push(KeyRunner {
            client: RunnerClient::new(base_url, &registered.token)?,
            key,
            id: registered.runner.id.to_string(),
        });
    }
    Ok((runners, count as f64 / elapsed))
}

/// Burn down `jobs` jobs of `kind` with `runners`, each claiming `batch` and completing them
/// in one batch call, signing each result when `sign`; answers jobs per second and the
/// coordinator's CPU per job.
async fn burn_down_kind(
    admin: &MusterClient,
    runners: &[KeyRunner],
    kind: &str,
    jobs: usize,
    batch: u32,
    sign: bool,
) -> anyhow::Result<BurnDown> {
    crate::preload(admin, kind, jobs).await?;
    let completed = Arc::new(AtomicU64::new(0));
    let cpu_before = crate::cpu::coordinator_cpu_seconds()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for runner in runners {
        let client = runner.client.clone();
        let key = Arc::clone(&runner.key);
        let runner_id = runner.id.clone();
        let completed = Arc::clone(&completed);
        let kind = kind.to_string();
        tasks.push(tokio::spawn(async move {
            let claim = ClaimJobs {
                kinds: vec![kind],
                max_jobs: Some(batch),
                ..Default::default()
            };
            loop {
                let claimed = client.claim_job(&claim).await.context("claim")?;
                if claimed.is_empty() {
                    return anyhow::Ok(());
                }
                let items = claimed
                    .iter()
                    .map(|job| {
                        let result = result_of(job.attempt as usize + job.id.as_u128() as usize);
                        let sig = sign.then(|| {
                            let envelope =
                                key.sign_result(&result, &runner_id, "2026-12-02T00:00:00Z");
                            ResultSignature {
                                sha256: envelope["sig"]["sha256"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .into(),
                                signature: envelope["sig"]["signature"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .into(),
                                runner_id: runner_id.clone(),
                                signed_at: "2026-12-02T00:00:00Z".into(),
                            }
                        });
                        CompletionItem {
                            id: job.id,
                            epoch: Some(job.lease.epoch),
                            result: Some(result),
                            sig,
                        }
                    })
                    .collect();
                let outcomes = client
                    .complete_jobs(&CompleteJobs { items })
                    .await
                    .context("complete a batch")?;
                let refused = outcomes
                    .items
                    .iter()
                    .filter(|outcome| outcome.ok != Some(true))
                    .count();
                if refused > 0 {
                    bail!(
                        "{refused} completions were refused: {:?}",
                        outcomes.items.first()
                    );
                }
                completed.fetch_add(claimed.len() as u64, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = crate::cpu::coordinator_cpu_seconds()? - cpu_before;
    let total = completed.load(Ordering::Relaxed);
    if total != jobs as u64 {
        bail!("completed {total} jobs of {kind}, expected {jobs}");
    }
    eprintln!(
        "  burned down {total} jobs of {kind} in {elapsed:.2} s, {cpu:.2} s of the coordinator's CPU"
    );
    Ok(BurnDown {
        jobs_per_second: total as f64 / elapsed,
        coordinator_cpu_micros_per_job: cpu * 1e6 / total as f64,
    })
}

/// Microseconds one result signature takes to verify as the coordinator does it (canonical
/// JSON, SHA-256, Ed25519 strict verification), over `rounds` verifications.
fn verify_cost(rounds: usize) -> anyhow::Result<f64> {
    let key = muster_test_support::TestServer::new_runner_key();
    let public_key = key.public_key();
    let result = result_of(7);
    let envelope = key.sign_result(&result, "bench", "2026-12-02T00:00:00Z");
    let sig = muster_core::identity::ResultSignature {
        sha256: envelope["sig"]["sha256"]
            .as_str()
            .unwrap_or_default()
            .into(),
        signature: envelope["sig"]["signature"]
            .as_str()
            .unwrap_or_default()
            .into(),
        runner_id: "bench".into(),
        signed_at: "2026-12-02T00:00:00Z".into(),
    };
    let started = Instant::now();
    for _ in 0..rounds {
        verify_result_signature(&public_key, std::hint::black_box(&result), &sig)
            .context("verify a bench signature")?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / rounds as f64)
}

/// Microseconds per signature of verifying 100 result signatures of one key together, as the
/// coordinator does for a batch completion, over `rounds` batches.
fn batch_verify_cost(rounds: usize) -> anyhow::Result<f64> {
    const BATCH: usize = 100;
    let key = muster_test_support::TestServer::new_runner_key();
    let public_key = key.public_key();
    let signed: Vec<(Value, ResultSignature)> = (0..BATCH)
        .map(|index| {
            let result = result_of(index);
            let envelope = key.sign_result(&result, "bench", "2026-12-02T00:00:00Z");
            let sig = serde_json::from_value(envelope["sig"].clone())
                .context("read a bench signature")?;
            anyhow::Ok((result, sig))
        })
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    for _ in 0..rounds {
        let items = signed
            .iter()
            .map(|(result, sig)| {
                (
                    result,
                    muster_core::identity::ResultSignature {
                        sha256: sig.sha256.clone(),
                        signature: sig.signature.clone(),
                        runner_id: sig.runner_id.clone(),
                        signed_at: sig.signed_at.clone(),
                    },
                )
            })
            .collect();
        let outcomes = muster_core::identity::verified_result_signatures(
            &public_key,
            std::hint::black_box(items),
        );
        if outcomes.iter().any(Result::is_err) {
            bail!("a bench signature did not verify in a batch");
        }
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / (rounds * BATCH) as f64)
}

pub(crate) async fn run(
    base_url: &str,
    jobs: usize,
    runners: usize,
    registrations: usize,
    batch: u32,
) -> anyhow::Result<SignedRun> {
    let admin = crate::admin(base_url).await?;
    admin
        .put_kind_settings(
            SIGNED_KIND,
            &SetKindSettings {
                result_schema: None,
                require_signed_results: true,
            },
        )
        .await
        .context("require signed results of the signed kind")?;
    eprintln!("signed: registering {registrations} runners by key");
    let (mut registered, registrations_per_second) =
        register_key_runners(&admin, base_url, registrations.max(runners)).await?;
    registered.truncate(runners);
    eprintln!("  {registrations_per_second:.0} registrations/s");
    eprintln!("signed: burn-down of {jobs} jobs with unsigned results");
    let unsigned = burn_down_kind(&admin, &registered, UNSIGNED_KIND, jobs, batch, false).await?;
    eprintln!("signed: burn-down of {jobs} jobs with signed results, required by the kind");
    let signed = burn_down_kind(&admin, &registered, SIGNED_KIND, jobs, batch, true).await?;
    Ok(SignedRun {
        registrations_per_second,
        registrations: registrations.max(runners),
        unsigned,
        signed,
        verify_micros: verify_cost(20_000)?,
        batch_verify_micros: batch_verify_cost(200)?,
    })
}
