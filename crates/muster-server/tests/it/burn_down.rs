//! Burn-down under concurrency: many runners claiming and completing at once must hand out and
//! complete every job exactly once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_client::api::{ClaimJobs, CompleteJobs, CompletionItem, JobState, SubmitJob};
use serde_json::json;
use uuid::Uuid;

use crate::support::{claim_of, count_in_state, start};

const JOBS: usize = 1_000;
const RUNNERS: usize = 8;

#[derive(Default)]
struct Tally {
    claims: HashMap<Uuid, usize>,
    completions: HashMap<Uuid, usize>,
    batch_calls: usize,
    single_calls: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_runners_complete_a_thousand_jobs_exactly_once() {
    let server = start().await;
    let client = server.client();
    let specs: Vec<SubmitJob> = (0..JOBS)
        .map(|index| SubmitJob {
            kind: "noop".into(),
            payload: Some(json!({ "index": index })),
            ..Default::default()
        })
        .collect();
    let mut submitted = Vec::with_capacity(JOBS);
    for chunk in specs.chunks(250) {
        submitted.extend(client.submit_jobs(chunk).await.expect("submit a batch"));
    }
    assert_eq!(submitted.len(), JOBS);

    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = Vec::new();
    for worker in 0..RUNNERS {
        let (_, runner) = server
            .runner(&format!("burner-{worker}"))
            .await
            .expect("register a runner");
        let tally = Arc::clone(&tally);
        tasks.push(tokio::spawn(async move {
            let mut round = 0usize;
            loop {
                let claimed = runner
                    .claim_job(&ClaimJobs {
                        max_jobs: Some(16 + worker as u32),
                        ..claim_of(&["noop"])
                    })
                    .await
                    .expect("claim");
                // Every job was submitted before the runners started and none fails, so an
                // empty claim means everything left is already leased to someone.
                if claimed.is_empty() {
                    return;
                }
                {
                    let mut tally = tally.lock().expect("tally lock");
                    for job in &claimed {
                        *tally.claims.entry(job.id).or_default() += 1;
                    }
                }
                round += 1;
                if (round + worker).is_multiple_of(2) {
                    let items = claimed
                        .iter()
                        .map(|job| CompletionItem {
                            sig: None,
                            id: job.id,
                            epoch: Some(job.lease.epoch),
                            result: Some(json!({ "by": worker, "echo": job.payload["index"] })),
                        })
                        .collect();
                    let outcomes = runner
                        .complete_jobs(&CompleteJobs { items })
                        .await
                        .expect("batch complete");
                    assert_eq!(outcomes.items.len(), claimed.len());
                    let mut tally = tally.lock().expect("tally lock");
                    tally.batch_calls += 1;
                    for (job, outcome) in claimed.iter().zip(outcomes.items) {
                        assert_eq!(outcome.id, job.id, "outcomes come back in order");
                        assert_eq!(outcome.ok, Some(true), "{:?}", outcome.error);
                        *tally.completions.entry(job.id).or_default() += 1;
                    }
                } else {
                    for job in &claimed {
                        let done = runner
                            .complete_job(
                                job.id,
                                Some(job.lease.epoch),
                                json!({ "by": worker, "echo": job.payload["index"] }),
                            )
                            .await
                            .expect("complete");
                        assert_eq!(done.state, JobState::Completed);
                        let mut tally = tally.lock().expect("tally lock");
                        tally.single_calls += 1;
                        *tally.completions.entry(job.id).or_default() += 1;
                    }
                }
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the burn-down finishes")
            .expect("a runner task panicked");
    }

    // Taken out of the lock: the checks below await.
    let tally = std::mem::take(&mut *tally.lock().expect("tally lock"));
    assert!(
        tally.batch_calls > 0 && tally.single_calls > 0,
        "both completion paths were used"
    );
    assert_eq!(tally.claims.len(), JOBS, "every job was claimed");
    assert!(
        tally.claims.values().all(|count| *count == 1),
        "no job was handed out twice"
    );
    assert_eq!(tally.completions.len(), JOBS, "every job was completed");
    assert!(
        tally.completions.values().all(|count| *count == 1),
        "no job was completed twice"
    );
    assert_eq!(tally.completions.values().sum::<usize>(), JOBS);
    for job in &submitted {
        assert!(
            tally.completions.contains_key(&job.id),
            "{} was never completed",
            job.id
        );
    }
    assert_eq!(count_in_state(&client, JobState::Completed).await, JOBS);
    assert_eq!(count_in_state(&client, JobState::Pending).await, 0);
    assert_eq!(count_in_state(&client, JobState::Claimed).await, 0);

    // Each result is the one its runner sent for that job.
    let completed = crate::support::all_jobs(
        &client,
        muster_client::JobQuery {
            state: Some(JobState::Completed),
            ..Default::default()
        },
    )
    .await;
    for job in completed {
        let result = job.result.expect("a completed job has its result");
        assert_eq!(result["echo"], job.payload["index"], "{}", job.id);
    }
}
