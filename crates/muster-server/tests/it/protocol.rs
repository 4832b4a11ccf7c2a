//! The runner protocol's happy paths: heartbeat, claim (batching, long poll, matching,
//! ordering), job heartbeat, progress, log, complete (single and batch) and fail.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use muster_client::api::{
    ClaimJobs, CompleteJobs, CompletionItem, FailJob, FailureReason, JobHeartbeat, JobState,
    LogLevel, NewLogEntry, PendingReason, Requirements, RunnerHeartbeat, SubmitJob,
};
use reqwest::Method;
use serde_json::json;

use crate::support::{
    api_error, claim_of, claim_one, job, runner_raw, start, start_manual, start_manual_with,
    submit, submit_and_claim,
};

#[tokio::test]
async fn runner_heartbeat_answers_the_interval_and_the_jobs_to_stop() {
    let (server, _clock) =
        start_manual_with(|config| config.heartbeat_interval_ms = Some(2_500)).await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    let (_, other) = server.runner("other").await.expect("runner");
    let (_, keep) = submit_and_claim(&client, &runner, "exec").await;
    let (_, stop) = submit_and_claim(&client, &runner, "exec").await;
    let (_, not_mine) = submit_and_claim(&client, &other, "exec").await;
    let unknown = uuid::Uuid::now_v7();
    client.cancel_job(stop.id).await.expect("cancel one");

    let answer = runner
        .heartbeat(&RunnerHeartbeat {
            jobs: vec![keep.id, stop.id, not_mine.id, unknown],
            ..Default::default()
        })
        .await
        .expect("heartbeat");
    assert_eq!(answer.heartbeat_interval_ms, 2_500);
    let mut cancel = answer.cancel.clone();
    cancel.sort();
    let mut expected = vec![stop.id, not_mine.id, unknown];
    expected.sort();
    assert_eq!(
        cancel, expected,
        "stop what is cancelled, unknown or not this runner's"
    );

    let empty = runner
        .heartbeat(&RunnerHeartbeat::default())
        .await
        .expect("heartbeat without jobs");
    assert!(empty.cancel.is_empty());

    let (created, _) = server.runner("raw").await.expect("runner");
    let raw = runner_raw(
        &server,
        &created.token,
        Method::POST,
        "/api/v1/runner/heartbeat",
        None,
        "{}",
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    assert_eq!(
        raw.json(),
        json!({"heartbeat_interval_ms": 2500, "cancel": []})
    );
}

#[tokio::test]
async fn claim_hands_out_up_to_max_jobs_then_204() {
    let server = start().await;
    let client = server.client();
    let (created, runner) = server.runner("r").await.expect("runner");
    let mut ids = Vec::new();
    for index in 0..5 {
        ids.push(
            submit(
                &client,
                SubmitJob {
                    payload: Some(json!({"index": index})),
                    max_attempts: Some(4),
                    timeout_s: Some(90),
                    ..job("exec")
                },
            )
            .await
            .id,
        );
    }
    let three = runner
        .claim_job(&ClaimJobs {
            max_jobs: Some(3),
            ..claim_of(&["exec"])
        })
        .await
        .expect("claim three");
    assert_eq!(three.iter().map(|job| job.id).collect::<Vec<_>>(), ids[..3]);
    for (index, claimed) in three.iter().enumerate() {
        assert_eq!(claimed.kind, "exec");
        assert_eq!(claimed.payload, json!({"index": index}));
        assert_eq!(claimed.attempt, 1);
        assert_eq!(claimed.max_attempts, 4);
        assert_eq!(claimed.timeout_s, 90);
        assert_eq!(claimed.lease.epoch, 1);
        assert_eq!(claimed.lease.ttl_ms, 30_000);
        let job = client.get_job(claimed.id).await.expect("show");
        assert_eq!(job.state, JobState::Claimed);
        assert_eq!(job.runner_id, Some(created.runner.id));
        assert!(job.claimed_at.is_some());
        assert_eq!(job.started_at, None, "claimed is not running yet");
        assert_eq!(job.lease_expires_at, Some(claimed.lease.expires_at));
    }
    let one = runner
        .claim_job(&claim_of(&["exec"]))
        .await
        .expect("default max_jobs");
    assert_eq!(one.len(), 1, "max_jobs defaults to 1");
    let rest = runner
        .claim_job(&ClaimJobs {
            max_jobs: Some(10),
            ..claim_of(&["exec"])
        })
        .await
        .expect("the rest");
    assert_eq!(rest.len(), 1);

    let raw = runner_raw(
        &server,
        &created.token,
        Method::POST,
        "/api/v1/runner/claim",
        None,
        r#"{"kinds": ["exec"], "max_jobs": 5}"#,
    )
    .await;
    assert_eq!(raw.status, 204, "nothing left: {}", raw.body);
    assert!(raw.body.is_empty(), "204 has no body");
    assert_eq!(
        client
            .get_runner(created.runner.id)
            .await
            .expect("show")
            .running_jobs,
        5
    );
}

#[tokio::test]
async fn a_long_poll_returns_soon_after_a_matching_submit() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");

    let started = Instant::now();
    let waiting = tokio::spawn({
        let runner = runner.clone();
        async move {
            runner
                .claim_job(&ClaimJobs {
                    wait_ms: Some(20_000),
                    ..claim_of(&["exec"])
                })
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "nothing to claim yet: the claim waits"
    );
    // A job of another kind does not wake it with work.
    submit(&client, job("other")).await;
    let submitted = submit(&client, job("exec")).await;
    let claimed = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the long poll answers")
        .expect("the claim task")
        .expect("the claim");
    let elapsed = started.elapsed();
    assert_eq!(
        claimed.iter().map(|job| job.id).collect::<Vec<_>>(),
        vec![submitted.id]
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "answered {elapsed:?} after starting, long before wait_ms (20 s)"
    );

    // With nothing coming, the long poll ends with 204 once wait_ms has passed.
    let started = Instant::now();
    let nothing = runner
        .claim_job(&ClaimJobs {
            wait_ms: Some(300),
            ..claim_of(&["exec"])
        })
        .await
        .expect("an empty long poll");
    assert!(nothing.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(280),
        "it waited: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn claims_match_labels_tags_and_resources() {
    let server = start().await;
    let client = server.client();
    let requirements = Requirements {
        labels: BTreeMap::from([("gpu".to_string(), "a100".to_string())]),
        tags: vec!["q4_k_m".into()],
        resources: BTreeMap::from([("vram_gb".to_string(), 40.0)]),
    };
    let wanted = submit(
        &client,
        SubmitJob {
            requirements: Some(requirements),
            ..job("bench")
        },
    )
    .await;
    let offer = |labels: &[(&str, &str)], tags: &[&str], vram: f64| ClaimJobs {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        tags: tags.iter().map(|tag| tag.to_string()).collect(),
        resources: BTreeMap::from([("vram_gb".to_string(), vram)]),
        ..claim_of(&["bench"])
    };
    let (_, runner) = server.runner("r").await.expect("runner");
    let misses = [
        offer(&[("gpu", "h100")], &["q4_k_m"], 80.0),
        offer(&[], &["q4_k_m"], 80.0),
        offer(&[("gpu", "a100")], &["q8_0"], 80.0),
        offer(&[("gpu", "a100")], &["q4_k_m"], 39.5),
        ClaimJobs {
            resources: BTreeMap::new(),
            ..offer(&[("gpu", "a100")], &["q4_k_m"], 0.0)
        },
    ];
    for miss in &misses {
        assert!(
            runner.claim_job(miss).await.expect("claim").is_empty(),
            "{miss:?} does not meet the requirements"
        );
    }
    let hit = runner
        .claim_job(&offer(
            &[("gpu", "a100"), ("zone", "eu")],
            &["q8_0", "q4_k_m"],
            40.0,
        ))
        .await
        .expect("claim");
    assert_eq!(
        hit.iter().map(|job| job.id).collect::<Vec<_>>(),
        vec![wanted.id],
        "a superset matches"
    );

    // Labels given at registration count without being declared again.
    let labelled_job = submit(
        &client,
        SubmitJob {
            requirements: Some(Requirements {
                labels: BTreeMap::from([("site".to_string(), "berlin".to_string())]),
                ..Default::default()
            }),
            ..job("bench")
        },
    )
    .await;
    let created = client
        .create_runner(&muster_client::api::CreateRunner {
            name: "berlin".into(),
            labels: BTreeMap::from([("site".to_string(), "berlin".to_string())]),
            organization_id: None,
            ..Default::default()
        })
        .await
        .expect("create");
    let berlin =
        muster_client::RunnerClient::new(&server.base_url, &created.token).expect("client");
    let claimed = claim_one(&berlin, "bench").await;
    assert_eq!(claimed.id, labelled_job.id);
    // Kinds match exactly.
    submit(&client, job("bench-2")).await;
    assert!(
        runner
            .claim_job(&claim_of(&["bench"]))
            .await
            .expect("claim")
            .is_empty()
    );
}

#[tokio::test]
async fn claims_take_the_lowest_priority_number_first_then_the_oldest() {
    let server = start().await;
    let client = server.client();
    let mut by_name = BTreeMap::new();
    for (name, kind, priority) in [
        ("a", "x", 100),
        ("b", "y", 10),
        ("c", "x", 100),
        ("d", "x", 10),
        ("e", "y", 50),
        ("f", "x", -5),
    ] {
        let submitted = submit(
            &client,
            SubmitJob {
                priority: Some(priority),
                payload: Some(json!({"name": name})),
                ..job(kind)
            },
        )
        .await;
        by_name.insert(submitted.id, name);
    }
    let (_, runner) = server.runner("r").await.expect("runner");
    let mut order = Vec::new();
    for _ in 0..6 {
        let claimed = runner
            .claim_job(&claim_of(&["x", "y"]))
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);
        order.push(by_name[&claimed[0].id]);
    }
    assert_eq!(
        order,
        ["f", "b", "d", "e", "a", "c"],
        "priority across kinds, then age"
    );
}

#[tokio::test]
async fn a_job_heartbeat_extends_the_lease_and_starts_the_job() {
    let (server, clock) = start_manual().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &runner, "exec").await;
    let epoch = Some(claimed.lease.epoch);

    clock.advance_s(20);
    let beat = runner
        .job_heartbeat(claimed.id, epoch, &JobHeartbeat::default())
        .await
        .expect("heartbeat");
    assert_eq!(
        beat.lease.epoch, claimed.lease.epoch,
        "the same lease, extended"
    );
    assert_eq!(beat.lease.ttl_ms, 30_000);
    assert_eq!(
        beat.lease.expires_at - claimed.lease.expires_at,
        time::Duration::seconds(20),
        "expires lease_ttl_s after the heartbeat"
    );
    assert!(!beat.cancel);
    let job = client.get_job(claimed.id).await.expect("show");
    assert_eq!(job.lease_expires_at, Some(beat.lease.expires_at));
    assert_eq!(job.state, JobState::Running);

    // Past the first expiry, but inside the extended one: nothing to reap.
    clock.advance_s(20);
    server.reap().await;
    assert_eq!(
        client.get_job(claimed.id).await.expect("show").state,
        JobState::Running
    );

    // A heartbeat may carry progress as a number or an object.
    runner
        .job_heartbeat(
            claimed.id,
            epoch,
            &JobHeartbeat {
                progress: Some(json!(12.5)),
                events: None,
            },
        )
        .await
        .expect("heartbeat with progress");
    assert_eq!(
        client
            .get_job(claimed.id)
            .await
            .expect("show")
            .progress
            .percent,
        12.5
    );
    runner
        .job_heartbeat(
            claimed.id,
            epoch,
            &JobHeartbeat {
                progress: Some(json!({"progress": 40, "message": "warming up"})),
                events: None,
            },
        )
        .await
        .expect("heartbeat with progress and message");
    let progress = client.get_job(claimed.id).await.expect("show").progress;
    assert_eq!(progress.percent, 40.0);
    assert_eq!(progress.message.as_deref(), Some("warming up"));
}

#[tokio::test]
async fn a_claimed_job_runs_from_its_first_heartbeat_progress_or_log() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    for first_call in ["heartbeat", "progress", "log"] {
        let (_, claimed) = submit_and_claim(&client, &runner, "exec").await;
        let epoch = Some(claimed.lease.epoch);
        let before = client.get_job(claimed.id).await.expect("show");
        assert_eq!(before.state, JobState::Claimed);
        assert_eq!(before.started_at, None);
        match first_call {
            "heartbeat" => {
                runner
                    .job_heartbeat(claimed.id, epoch, &JobHeartbeat::default())
                    .await
                    .expect("heartbeat");
            }
            "progress" => {
                runner
                    .report_progress(claimed.id, epoch, 1.0, None)
                    .await
                    .expect("progress");
            }
            _ => {
                runner
                    .append_log(
                        claimed.id,
                        epoch,
                        vec![NewLogEntry {
                            message: "hello".into(),
                            ..Default::default()
                        }],
                    )
                    .await
                    .expect("log");
            }
        }
        let after = client.get_job(claimed.id).await.expect("show");
        assert_eq!(
            after.state,
            JobState::Running,
            "after the first {first_call}"
        );
        assert!(
            after.started_at.is_some(),
            "started_at is set by the first {first_call}"
        );
    }
}

#[tokio::test]
async fn progress_is_recorded_from_0_to_100_and_refused_outside() {
    let server = start().await;
    let client = server.client();
    let (created, runner) = server.runner("r").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &runner, "exec").await;
    let epoch = Some(claimed.lease.epoch);
    for (percent, message) in [(0.0, None), (55.5, Some("halfway")), (100.0, Some("done"))] {
        let flag = runner
            .report_progress(claimed.id, epoch, percent, message.map(str::to_string))
            .await
            .expect("progress");
        assert!(!flag.cancel);
        let progress = client.get_job(claimed.id).await.expect("show").progress;
        assert_eq!(progress.percent, percent);
        assert_eq!(progress.message.as_deref(), message);
    }
    let path = format!("/api/v1/runner/jobs/{}/progress", claimed.id);
    for body in [
        r#"{"progress": 101}"#,
        r#"{"progress": -1}"#,
        r#"{"progress": 100.01}"#,
    ] {
        let reply = runner_raw(&server, &created.token, Method::PUT, &path, None, body).await;
        reply.assert_error(400, "invalid_input", &["progress"]);
    }
    let raw = runner_raw(
        &server,
        &created.token,
        Method::PUT,
        &path,
        None,
        r#"{"progress": 7, "message": "raw"}"#,
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    assert_eq!(raw.json(), json!({"cancel": false}));
    let progress = client.get_job(claimed.id).await.expect("show").progress;
    assert_eq!(
        (progress.percent, progress.message.as_deref()),
        (7.0, Some("raw"))
    );
}

#[tokio::test]
async fn logs_take_one_entry_or_a_batch_and_a_resent_seq_is_stored_once() {
    let server = start().await;
    let client = server.client();
    let (created, runner) = server.runner("r").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &runner, "exec").await;
    let path = format!("/api/v1/runner/jobs/{}/log", claimed.id);
    let epoch = claimed.lease.epoch.to_string();

    let single = runner_raw(
        &server,
        &created.token,
        Method::POST,
        &path,
        Some(&epoch),
        r#"{"level": "warn", "message": "disk almost full", "metadata": {"free_gb": 2}}"#,
    )
    .await;
    assert_eq!(single.status, 200, "{}", single.body);
    assert_eq!(single.json(), json!({"next_seq": 1, "cancel": false}));

    let batch = json!({"entries": [
        {"seq": 1, "level": "info", "message": "one"},
        {"seq": 2, "level": "debug", "message": "two"},
        {"seq": 3, "message": "three"},
    ]})
    .to_string();
    let first = runner_raw(
        &server,
        &created.token,
        Method::POST,
        &path,
        Some(&epoch),
        &batch,
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.json()["next_seq"], 4);
    let resent = runner_raw(
        &server,
        &created.token,
        Method::POST,
        &path,
        Some(&epoch),
        &batch,
    )
    .await;
    assert_eq!(resent.status, 200, "{}", resent.body);
    assert_eq!(resent.json()["next_seq"], 4, "a resent batch adds nothing");

    let typed = runner
        .append_log(
            claimed.id,
            Some(claimed.lease.epoch),
            vec![NewLogEntry {
                seq: Some(3),
                message: "three again".into(),
                ..Default::default()
            }],
        )
        .await
        .expect("resend one through the client");
    assert_eq!(typed.next_seq, 4);

    let page = client.job_logs(claimed.id, None, None).await.expect("read");
    let summary: Vec<_> = page
        .items
        .iter()
        .map(|item| (item.seq, item.level, item.message.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (0, LogLevel::Warn, "disk almost full"),
            (1, LogLevel::Info, "one"),
            (2, LogLevel::Debug, "two"),
            (3, LogLevel::Info, "three"),
        ],
        "each seq once, first version kept"
    );
    assert_eq!(page.items[0].metadata, Some(json!({"free_gb": 2})));
}

#[tokio::test]
async fn complete_records_the_result_and_ends_the_lease() {
    let server = start().await;
    let client = server.client();
    let (created, runner) = server.runner("r").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &runner, "exec").await;
    let epoch = Some(claimed.lease.epoch);
    runner
        .job_heartbeat(claimed.id, epoch, &JobHeartbeat::default())
        .await
        .expect("running");
    let result = json!({"score": 0.97, "artifacts": ["a", "b"]});
    let done = runner
        .complete_job(claimed.id, epoch, result.clone())
        .await
        .expect("complete");
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.result, Some(result.clone()));
    assert!(done.finished_at.is_some());
    assert_eq!(done.lease_expires_at, None);
    assert_eq!(done.error, None);
    assert_eq!(
        done.runner_id,
        Some(created.runner.id),
        "who completed it stays on record"
    );
    assert_eq!(client.get_job(claimed.id).await.expect("show"), done);
    assert_eq!(
        client
            .get_runner(created.runner.id)
            .await
            .expect("show")
            .running_jobs,
        0
    );

    // Sent again (its answer was lost on the way): 200 with the job as the first completion
    // left it; the first result stays. Another runner completing it is still refused.
    let twice = runner
        .complete_job(claimed.id, epoch, json!("again"))
        .await
        .expect("a repeated completion is answered as done");
    assert_eq!(twice, done, "the job as the first completion left it");
    let (_, stranger) = server.runner("stranger").await.expect("runner");
    let stolen = stranger
        .complete_job(claimed.id, epoch, json!("stolen"))
        .await;
    api_error(stolen, 409, "lease_lost");
    assert_eq!(
        client.get_job(claimed.id).await.expect("show").result,
        Some(result)
    );

    // An empty body completes with a null result.
    let (_, other) = submit_and_claim(&client, &runner, "exec").await;
    let raw = runner_raw(
        &server,
        &created.token,
        Method::POST,
        &format!("/api/v1/runner/jobs/{}/complete", other.id),
        Some(&other.lease.epoch.to_string()),
        "",
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    assert_eq!(raw.json()["state"], "completed");
    assert!(raw.json()["result"].is_null());
}

#[tokio::test]
async fn batch_complete_fences_each_item_and_answers_in_order() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    let (_, other) = server.runner("other").await.expect("runner");
    for _ in 0..3 {
        submit(&client, job("exec")).await;
    }
    let mine = runner
        .claim_job(&ClaimJobs {
            max_jobs: Some(3),
            ..claim_of(&["exec"])
        })
        .await
        .expect("claim three");
    assert_eq!(mine.len(), 3);
    let (_, theirs) = submit_and_claim(&client, &other, "exec").await;
    let unknown = uuid::Uuid::now_v7();

    let before_stale = client.get_job(mine[1].id).await.expect("show");
    let outcomes = runner
        .complete_jobs(&CompleteJobs {
            items: vec![
                CompletionItem {
                    sig: None,
                    id: mine[0].id,
                    epoch: Some(mine[0].lease.epoch),
                    result: Some(json!(0)),
                },
                CompletionItem {
                    sig: None,
                    id: mine[1].id,
                    epoch: Some(mine[1].lease.epoch + 1),
                    result: Some(json!(1)),
                },
                CompletionItem {
                    sig: None,
                    id: theirs.id,
                    epoch: Some(theirs.lease.epoch),
                    result: Some(json!("not mine")),
                },
                CompletionItem {
                    sig: None,
                    id: unknown,
                    epoch: Some(1),
                    result: None,
                },
                CompletionItem {
                    sig: None,
                    id: mine[2].id,
                    epoch: None,
                    result: Some(json!(2)),
                },
                CompletionItem {
                    sig: None,
                    id: mine[0].id,
                    epoch: Some(mine[0].lease.epoch),
                    result: Some(json!("twice")),
                },
            ],
        })
        .await
        .expect("batch complete");
    let summary: Vec<_> = outcomes
        .items
        .iter()
        .map(|outcome| {
            (
                outcome.id,
                outcome.ok,
                outcome.error.as_ref().map(|error| error.code.as_str()),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (mine[0].id, Some(true), None),
            (mine[1].id, None, Some("lease_lost")),
            (theirs.id, None, Some("lease_lost")),
            (unknown, None, Some("not_found")),
            (mine[2].id, Some(true), None),
            // The same completion twice in one batch: both answered as done, the first result
            // stays (checked below).
            (mine[0].id, Some(true), None),
        ],
        "one outcome per item, in order"
    );
    for outcome in &outcomes.items {
        if let Some(error) = &outcome.error {
            assert!(!error.message.is_empty());
        }
    }
    let first = client.get_job(mine[0].id).await.expect("show");
    assert_eq!(
        (first.state, first.result),
        (JobState::Completed, Some(json!(0)))
    );
    assert_eq!(
        client.get_job(mine[2].id).await.expect("show").result,
        Some(json!(2))
    );
    assert_eq!(
        client.get_job(mine[1].id).await.expect("show"),
        before_stale,
        "a refused item changes nothing"
    );
    assert_eq!(
        client.get_job(theirs.id).await.expect("show").state,
        JobState::Claimed
    );

    let empty = runner
        .complete_jobs(&CompleteJobs { items: vec![] })
        .await
        .expect("an empty batch");
    assert!(empty.items.is_empty());
}

#[tokio::test]
async fn fail_retries_while_attempts_remain_unless_not_retryable() {
    let (server, clock) = start_manual().await;
    let client = server.client();
    let (created, runner) = server.runner("r").await.expect("runner");
    let spec = SubmitJob {
        max_attempts: Some(2),
        backoff_base_s: Some(10),
        ..job("exec")
    };
    let submitted = submit(&client, spec.clone()).await;
    let first = claim_one(&runner, "exec").await;

    // The defaults: reason runner_error, retryable.
    let raw = runner_raw(
        &server,
        &created.token,
        Method::POST,
        &format!("/api/v1/runner/jobs/{}/fail", submitted.id),
        Some(&first.lease.epoch.to_string()),
        r#"{"error": "exit code 3"}"#,
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    let failed_once: muster_client::api::Job = serde_json::from_str(&raw.body).expect("a job");
    assert_eq!(
        failed_once.state,
        JobState::Pending,
        "retried: attempts remain"
    );
    assert_eq!(
        failed_once.pending_reason,
        Some(PendingReason::Scheduled),
        "waiting out the backoff"
    );
    let error = failed_once
        .error
        .clone()
        .expect("the attempt's error is kept");
    assert_eq!(error.reason, FailureReason::RunnerError);
    assert_eq!(error.message, "exit code 3");
    assert_eq!(failed_once.attempt, 1);
    assert_eq!(failed_once.runner_id, None);
    // backoff_base_s × 2^0 with at most 20 % jitter.
    let wait = failed_once.run_after - time::OffsetDateTime::now_utc();
    assert!(
        wait > time::Duration::seconds(7) && wait <= time::Duration::seconds(12),
        "backoff of about 10 s, got {wait}"
    );
    assert!(
        runner
            .claim_job(&claim_of(&["exec"]))
            .await
            .expect("claim")
            .is_empty()
    );

    clock.advance_s(13);
    let second = claim_one(&runner, "exec").await;
    assert_eq!(second.id, submitted.id);
    assert_eq!(second.attempt, 2);
    assert_eq!(second.lease.epoch, first.lease.epoch + 1);
    let last = runner
        .fail_job(
            second.id,
            Some(second.lease.epoch),
            &FailJob {
                error: Some("again".into()),
                reason: None,
                retryable: Some(true),
            },
        )
        .await
        .expect("fail the last attempt");
    assert_eq!(last.state, JobState::Failed, "no attempts left");
    assert_eq!(
        last.error.map(|error| error.reason),
        Some(FailureReason::RunnerError)
    );
    assert!(last.finished_at.is_some());

    // Not retryable: failed at once although attempts remain.
    let once = submit(&client, spec).await;
    let claimed = claim_one(&runner, "exec").await;
    assert_eq!(claimed.id, once.id);
    let failed = runner
        .fail_job(
            claimed.id,
            Some(claimed.lease.epoch),
            &FailJob {
                error: None,
                reason: Some(FailureReason::RunnerError),
                retryable: Some(false),
            },
        )
        .await
        .expect("fail for good");
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.attempt, 1);
    let error = failed.error.expect("an error");
    assert!(
        !error.message.is_empty(),
        "a failure without a message still says something"
    );
}

#[tokio::test]
async fn a_draining_runner_claims_nothing_more_even_in_a_long_poll_it_began_before() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("r").await.expect("runner");
    let started = Instant::now();
    let waiting = tokio::spawn({
        let runner = runner.clone();
        async move {
            runner
                .claim_job(&ClaimJobs {
                    wait_ms: Some(20_000),
                    ..claim_of(&["exec"])
                })
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "nothing to claim yet: the claim waits"
    );
    runner
        .heartbeat(&RunnerHeartbeat {
            status: muster_client::api::RunnerActivity::Draining,
            ..Default::default()
        })
        .await
        .expect("draining heartbeat");
    let claimed = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the long poll ends when the runner drains")
        .expect("the claim task")
        .expect("the claim");
    assert!(claimed.is_empty(), "a draining runner gets no work");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Work submitted now stays for other runners.
    let pending = submit(&client, job("exec")).await;
    let again = runner
        .claim_job(&claim_of(&["exec"]))
        .await
        .expect("claim while draining");
    assert!(again.is_empty(), "still draining: nothing claimed");
    assert_eq!(
        client.get_job(pending.id).await.expect("show").state,
        JobState::Pending
    );
    // Active again: it claims.
    runner
        .heartbeat(&RunnerHeartbeat::default())
        .await
        .expect("active heartbeat");
    let claimed = runner
        .claim_job(&claim_of(&["exec"]))
        .await
        .expect("claim when active");
    assert_eq!(
        claimed.iter().map(|job| job.id).collect::<Vec<_>>(),
        vec![pending.id]
    );
}
