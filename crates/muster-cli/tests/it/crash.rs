//! A 2xx on submit, complete or cancel means committed: SIGKILL the coordinator right after the
//! last acknowledged call (with more calls still in flight), restart it on the same data
//! directory, and every acknowledged change must be there.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};

use muster_api::{
    ClaimJobs, CompleteJobs, CompletionItem, CreateRunner, Job, JobState, RunnerHeartbeat,
    SubmitJob,
};
use muster_client::{JobQuery, MusterClient, RunnerClient};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::process::{ADMIN_TOKEN, ServerProcess};

const WORK_JOBS: usize = 100;
const IDLE_JOBS: usize = 200;
const CANCELLED: usize = 60;
const SUBMITTERS: usize = 20;

/// What the coordinator acknowledged, and so must still hold after the crash.
#[derive(Default)]
struct Acknowledged {
    submitted: HashMap<Uuid, (String, Value)>,
    completed: HashMap<Uuid, Value>,
    cancelled: Vec<Uuid>,
    /// Jobs submitted while the kill came; only the acknowledged ones are promised.
    late: Vec<Uuid>,
    late_attempts: usize,
}

fn spec(index: usize) -> SubmitJob {
    let kind = if index < WORK_JOBS { "work" } else { "idle" };
    SubmitJob {
        kind: kind.into(),
        payload: Some(json!({ "index": index })),
        idempotency_key: Some(format!("crash-{index}")),
        ..Default::default()
    }
}

async fn all_jobs(client: &MusterClient) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut query = JobQuery {
        limit: Some(1000),
        ..Default::default()
    };
    loop {
        let page = client.list_jobs(&query).await.expect("list jobs");
        jobs.extend(page.items);
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return jobs,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_change_survives_a_sigkill() {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let mut server = ServerProcess::start(data_dir.path(), Some(ADMIN_TOKEN));
    let client = server.client(ADMIN_TOKEN);
    let acked = Arc::new(Mutex::new(Acknowledged::default()));

    // Submit everything concurrently.
    let mut submitters = Vec::new();
    for submitter in 0..SUBMITTERS {
        let client = client.clone();
        let acked = Arc::clone(&acked);
        submitters.push(tokio::spawn(async move {
            for index in (submitter..WORK_JOBS + IDLE_JOBS).step_by(SUBMITTERS) {
                let spec = spec(index);
                let (job, created) = client.submit_job(&spec).await.expect("submit");
                assert!(created);
                let payload = spec.payload.clone().expect("a payload");
                acked
                    .lock()
                    .expect("ack lock")
                    .submitted
                    .insert(job.id, (spec.kind, payload));
            }
        }));
    }
    for task in submitters {
        task.await.expect("a submitter panicked");
    }

    let registered = client
        .create_runner(&CreateRunner {
            name: "crash-runner".into(),
            ..Default::default()
        })
        .await
        .expect("register a runner");
    let runner = RunnerClient::new(&server.base_url, &registered.token).expect("a runner client");

    // Submissions that keep coming until the kill cuts them off, several in flight at once.
    let mut churn = Vec::new();
    for stream in 0..4 {
        let client = client.clone();
        let acked = Arc::clone(&acked);
        churn.push(tokio::spawn(async move {
            for index in 0..2_000 {
                acked.lock().expect("ack lock").late_attempts += 1;
                let late = SubmitJob {
                    kind: "late".into(),
                    payload: Some(json!({ "stream": stream, "late": index })),
                    ..Default::default()
                };
                match client.submit_job(&late).await {
                    Ok((job, _)) => acked.lock().expect("ack lock").late.push(job.id),
                    Err(_) => return,
                }
            }
        }));
    }

    // Complete the work jobs (half one by one, half in batches) while idle ones are cancelled.
    let completer = tokio::spawn({
        let runner = runner.clone();
        let acked = Arc::clone(&acked);
        async move {
            let mut round = 0;
            loop {
                let claimed = runner
                    .claim_job(&ClaimJobs {
                        kinds: vec!["work".into()],
                        max_jobs: Some(10),
                        ..Default::default()
                    })
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    return;
                }
                round += 1;
                if round % 2 == 0 {
                    let items = claimed
                        .iter()
                        .map(|job| CompletionItem {
                            sig: None,
                            id: job.id,
                            epoch: Some(job.lease.epoch),
                            result: Some(json!({ "done": job.payload["index"] })),
                        })
                        .collect();
                    let outcomes = runner
                        .complete_jobs(&CompleteJobs { items })
                        .await
                        .expect("batch complete");
                    let mut acked = acked.lock().expect("ack lock");
                    for (job, outcome) in claimed.iter().zip(outcomes.items) {
                        assert_eq!(outcome.ok, Some(true), "{:?}", outcome.error);
                        acked
                            .completed
                            .insert(job.id, json!({ "done": job.payload["index"] }));
                    }
                } else {
                    for job in &claimed {
                        let result = json!({ "done": job.payload["index"] });
                        let done = runner
                            .complete_job(job.id, Some(job.lease.epoch), result.clone())
                            .await
                            .expect("complete");
                        assert_eq!(done.state, JobState::Completed);
                        acked
                            .lock()
                            .expect("ack lock")
                            .completed
                            .insert(job.id, result);
                    }
                }
            }
        }
    });
    let to_cancel: Vec<Uuid> = {
        let acked = acked.lock().expect("ack lock");
        acked
            .submitted
            .iter()
            .filter(|(_, (kind, _))| kind == "idle")
            .map(|(id, _)| *id)
            .take(CANCELLED)
            .collect()
    };
    let mut cancellers = Vec::new();
    for chunk in to_cancel.chunks(CANCELLED / 4) {
        let client = client.clone();
        let acked = Arc::clone(&acked);
        let chunk = chunk.to_vec();
        cancellers.push(tokio::spawn(async move {
            for id in chunk {
                let job = client.cancel_job(id).await.expect("cancel");
                assert_eq!(job.state, JobState::Cancelled);
                acked.lock().expect("ack lock").cancelled.push(id);
            }
        }));
    }
    completer.await.expect("the completer panicked");
    for task in cancellers {
        task.await.expect("a canceller panicked");
    }

    // Right after the last acknowledged call, with late submissions still in flight.
    let status = server.kill();
    assert_eq!(
        status.signal(),
        Some(9),
        "killed by SIGKILL, not shut down: {status:?}"
    );
    for task in churn {
        task.await.expect("a churn task panicked");
    }

    // Taken out of the lock: the checks below await.
    let acked = std::mem::take(&mut *acked.lock().expect("ack lock"));
    assert_eq!(acked.submitted.len(), WORK_JOBS + IDLE_JOBS);
    assert_eq!(
        acked.completed.len(),
        WORK_JOBS,
        "every work job was completed before the kill"
    );
    assert_eq!(acked.cancelled.len(), CANCELLED);

    let server = ServerProcess::start(data_dir.path(), Some(ADMIN_TOKEN));
    let client = server.client(ADMIN_TOKEN);
    let jobs: HashMap<Uuid, Job> = all_jobs(&client)
        .await
        .into_iter()
        .map(|job| (job.id, job))
        .collect();
    for (id, (kind, payload)) in &acked.submitted {
        let job = jobs
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged job {id} is gone after the crash"));
        assert_eq!(&job.kind, kind);
        assert_eq!(&job.payload, payload);
        let expected = if acked.completed.contains_key(id) {
            JobState::Completed
        } else if acked.cancelled.contains(id) {
            JobState::Cancelled
        } else {
            JobState::Pending
        };
        assert_eq!(job.state, expected, "job {id} after the crash");
        if let Some(result) = acked.completed.get(id) {
            assert_eq!(
                job.result.as_ref(),
                Some(result),
                "job {id} keeps its result"
            );
            assert!(job.finished_at.is_some());
        }
        if expected == JobState::Pending {
            assert_eq!(job.attempt, 0, "job {id} was never claimed");
        }
    }
    for id in &acked.late {
        let job = jobs
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged late job {id} is gone after the crash"));
        assert_eq!(job.state, JobState::Pending);
    }
    let stored_late = jobs.values().filter(|job| job.kind == "late").count();
    assert!(
        stored_late >= acked.late.len() && stored_late <= acked.late_attempts,
        "late jobs stored {stored_late}, acknowledged {}, attempted {}",
        acked.late.len(),
        acked.late_attempts
    );
    assert_eq!(
        jobs.len(),
        WORK_JOBS + IDLE_JOBS + stored_late,
        "nothing else appeared"
    );

    // The idempotency index, the runner registry and the runner's token survived too.
    let (again, created) = client.submit_job(&spec(7)).await.expect("resubmit");
    assert!(!created, "the idempotency key is remembered");
    assert!(acked.submitted.contains_key(&again.id));
    let runner = RunnerClient::new(&server.base_url, &registered.token).expect("a runner client");
    runner
        .heartbeat(&RunnerHeartbeat::default())
        .await
        .expect("the runner's token still works");
    assert!(
        runner
            .claim_job(&ClaimJobs {
                kinds: vec!["work".into()],
                ..Default::default()
            })
            .await
            .expect("claim")
            .is_empty(),
        "completed work is not handed out again"
    );
}
