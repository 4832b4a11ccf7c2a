//! Counting jobs (`GET /api/v1/jobs/count`, capped at 10,000) and changing many at once
//! (`POST /api/v1/jobs/bulk`): by ids or by filter a page per call, a dry run that counts what
//! would change, fenced transitions that leave a job changed meanwhile alone, one audit entry
//! per organization and page, and a scoped token kept to its own organization.

use std::collections::HashSet;

use muster_client::JobQuery;
use muster_client::api::{BulkAction, BulkJobs, JobSelector, JobState, SubmitJob};
use muster_test_support::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    admin, audited, create_organization, job, request, send, start, submit_and_claim,
};

async fn submit_many(server: &TestServer, kind: &str, count: usize) -> Vec<uuid::Uuid> {
    let jobs: Vec<SubmitJob> = (0..count).map(|_| job(kind)).collect();
    let mut ids = Vec::new();
    for chunk in jobs.chunks(1_000) {
        let submitted = server
            .client()
            .submit_jobs(chunk)
            .await
            .expect("submit a batch");
        ids.extend(submitted.into_iter().map(|job| job.id));
    }
    ids
}

fn by_filter(action: BulkAction, filter: JobSelector) -> BulkJobs {
    BulkJobs {
        action,
        ids: None,
        filter: Some(filter),
        dry_run: false,
        cursor: None,
        limit: None,
    }
}

fn of_kind(kind: &str) -> JobSelector {
    JobSelector {
        kind: Some(kind.to_string()),
        ..Default::default()
    }
}
#[tokio::test]
async fn counts_follow_the_filter_and_stop_at_ten_thousand() {
    let server = start().await;
    let client = server.client();
    submit_many(&server, "count-a", 12).await;
    submit_many(&server, "count-b", 3).await;
    let (created, runner) = server.runner("counter").await.expect("runner");
    submit_and_claim(&client, &runner, "count-c").await;

    let count = |kind: Option<&str>, state: Option<JobState>| JobQuery {
        kind: kind.map(str::to_string),
        state,
        // Paging is no part of a count.
        limit: Some(1),
        cursor: Some("ignored".into()),
        ..Default::default()
    };
    for (query, expected) in [
        (count(None, None), 16),
        (count(Some("count-a"), None), 12),
        (count(Some("count-b"), Some(JobState::Pending)), 3),
        (count(None, Some(JobState::Claimed)), 1),
        (count(Some("count-c"), Some(JobState::Pending)), 0),
        (count(Some("nothing-of-this-kind"), None), 0),
    ] {
        let counted = client.count_jobs(&query).await.expect("count");
        assert_eq!(counted.count, expected, "{query:?}");
        assert!(!counted.capped, "{query:?}");
    }
    let runner_jobs = client
        .count_jobs(&JobQuery {
            runner_id: Some(created.runner.id),
            ..Default::default()
        })
        .await
        .expect("count a runner's jobs");
    assert_eq!(runner_jobs.count, 1);

    // Past the cap a count says "at least 10,000", whatever the number stored.
    submit_many(&server, "count-many", 10_050).await;
    let counted = client
        .count_jobs(&JobQuery::default())
        .await
        .expect("count everything");
    assert_eq!((counted.count, counted.capped), (10_000, true));
    let exact = client
        .count_jobs(&count(Some("count-a"), None))
        .await
        .expect("count few");
    assert_eq!((exact.count, exact.capped), (12, false));

    let refused = admin(
        &server,
        Method::GET,
        "/api/v1/jobs/count?state=sleeping",
        None,
    )
    .await;
    refused.assert_error(400, "invalid_input", &["state"]);
    admin(&server, Method::GET, "/api/v1/jobs/count?limit=5", None)
        .await
        .assert_error(400, "invalid_input", &["limit", "cursor"]);
}

#[tokio::test]
async fn a_filter_is_cancelled_page_by_page_after_a_dry_run_and_finished_jobs_are_left_alone() {
    let server = start().await;
    let client = server.client();
    let pending = submit_many(&server, "sweep", 23).await;
    let (_, runner) = server.runner("sweeper").await.expect("runner");
    // Three of them leased (the oldest, claimed first), one of those then completed.
    let claimed = runner
        .claim_job(&muster_client::api::ClaimJobs {
            max_jobs: Some(3),
            ..crate::support::claim_of(&["sweep"])
        })
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 3);
    runner
        .complete_job(claimed[0].id, Some(claimed[0].lease.epoch), json!({}))
        .await
        .expect("complete");
    let other_kind = submit_many(&server, "untouched", 2).await;

    let mut dry_run = by_filter(BulkAction::Cancel, of_kind("sweep"));
    dry_run.dry_run = true;
    let counted = client.bulk_jobs(&dry_run).await.expect("dry run");
    let would = counted.would_change.expect("a dry run counts");
    assert_eq!((would.count, would.capped), (22, false), "{counted:?}");
    assert!(counted.changed.is_empty() && counted.examined == 0);
    let still_pending = client
        .count_jobs(&JobQuery {
            kind: Some("sweep".into()),
            state: Some(JobState::Pending),
            ..Default::default()
        })
        .await
        .expect("count");
    assert_eq!(still_pending.count, 20, "a dry run changes nothing");

    // Pages of 5: every call examines at most 5 jobs and says where the next goes on.
    let mut request = by_filter(BulkAction::Cancel, of_kind("sweep"));
    request.limit = Some(5);
    let mut changed = Vec::new();
    let mut calls = 0;
    loop {
        let outcome = client.bulk_jobs(&request).await.expect("bulk cancel");
        calls += 1;
        assert!(outcome.examined <= 5, "{outcome:?}");
        assert!(outcome.skipped.is_empty(), "{outcome:?}");
        changed.extend(outcome.changed);
        match outcome.next_cursor {
            Some(cursor) => request.cursor = Some(cursor),
            None => break,
        }
        assert!(calls < 20, "the walk ends");
    }
    assert_eq!(calls, 5, "22 jobs in pages of 5");
    let ids: HashSet<uuid::Uuid> = changed.iter().map(|job| job.id).collect();
    assert_eq!(ids.len(), 22, "each job changed once");
    for job in &changed {
        let leased = claimed[1..].iter().any(|claimed| claimed.id == job.id);
        let expected = if leased {
            JobState::Cancelling
        } else {
            JobState::Cancelled
        };
        assert_eq!(job.state, expected, "{job:?}");
        assert_eq!(
            client.get_job(job.id).await.expect("job").state,
            expected,
            "{job:?}"
        );
    }
    assert!(
        pending
            .iter()
            .all(|id| ids.contains(id) || *id == claimed[0].id)
    );
    assert_eq!(
        client.get_job(claimed[0].id).await.expect("job").state,
        JobState::Completed
    );
    for id in other_kind {
        assert_eq!(
            client.get_job(id).await.expect("job").state,
            JobState::Pending
        );
    }
    let entries = audited(&server, "jobs.bulk_cancelled").await;
    assert_eq!(entries.len(), 5, "one entry per call that changed jobs");
    let audited_jobs: usize = entries
        .iter()
        .map(|entry| entry["detail"]["jobs"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(audited_jobs, 22);
    assert!(entries.iter().all(|entry| entry["actor"] == "admin"
        && entry["organization_id"] == "default"
        && entry["detail"]["filter"]["kind"] == "sweep"));

    // Again: nothing left to cancel.
    let again = client
        .bulk_jobs(&by_filter(BulkAction::Cancel, of_kind("sweep")))
        .await
        .expect("bulk cancel again");
    assert!(
        again.changed.is_empty() && again.next_cursor.is_none(),
        "{again:?}"
    );
    assert_eq!(audited(&server, "jobs.bulk_cancelled").await.len(), 5);

    // Retry every cancelled one of the kind: the cancelling ones are not cancelled yet.
    let retried = client
        .bulk_jobs(&by_filter(
            BulkAction::Retry,
            JobSelector {
                state: Some(JobState::Cancelled),
                ..of_kind("sweep")
            },
        ))
        .await
        .expect("bulk retry");
    assert_eq!(retried.changed.len(), 20, "{retried:?}");
    assert!(
        retried
            .changed
            .iter()
            .all(|job| job.state == JobState::Pending)
    );
    assert_eq!(audited(&server, "jobs.bulk_retried").await.len(), 1);
}

#[tokio::test]
async fn ids_are_changed_through_their_own_transition_and_the_others_are_reported() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("picker").await.expect("runner");
    let (_, finished) = submit_and_claim(&client, &runner, "picked").await;
    runner
        .complete_job(finished.id, Some(finished.lease.epoch), json!({}))
        .await
        .expect("complete");
    let pending = submit_many(&server, "picked", 2).await;
    let unknown = uuid::Uuid::now_v7();
    let request = BulkJobs {
        action: BulkAction::Cancel,
        // Named twice: changed once.
        ids: Some(vec![
            pending[0],
            finished.id,
            unknown,
            pending[0],
            pending[1],
        ]),
        filter: None,
        dry_run: true,
        cursor: None,
        limit: None,
    };
    let counted = client.bulk_jobs(&request).await.expect("dry run");
    assert_eq!(counted.would_change.map(|count| count.count), Some(2));

    let outcome = client
        .bulk_jobs(&BulkJobs {
            dry_run: false,
            ..request.clone()
        })
        .await
        .expect("bulk cancel by ids");
    assert_eq!(outcome.examined, 4);
    let changed: Vec<uuid::Uuid> = outcome.changed.iter().map(|job| job.id).collect();
    assert_eq!(changed, vec![pending[0], pending[1]]);
    assert_eq!(outcome.skipped.len(), 2, "{outcome:?}");
    let finished_skip = &outcome.skipped[0];
    assert_eq!(finished_skip.id, finished.id);
    assert_eq!(finished_skip.state, Some(JobState::Completed));
    assert_eq!(finished_skip.error.code, "invalid_state");
    let unknown_skip = &outcome.skipped[1];
    assert_eq!((unknown_skip.id, unknown_skip.state), (unknown, None));
    assert_eq!(unknown_skip.error.code, "not_found");
    assert_eq!(
        client.get_job(finished.id).await.expect("job").state,
        JobState::Completed,
        "a finished job is never clobbered"
    );

    // A second call finds them cancelled already: nothing changes, nothing is audited.
    let again = client
        .bulk_jobs(&BulkJobs {
            dry_run: false,
            ..request
        })
        .await
        .expect("again");
    assert!(again.changed.is_empty());
    assert!(
        again
            .skipped
            .iter()
            .filter(|skipped| pending.contains(&skipped.id))
            .all(|skipped| skipped.state == Some(JobState::Cancelled)
                && skipped.error.code == "invalid_state")
    );
    assert_eq!(audited(&server, "jobs.bulk_cancelled").await.len(), 1);
}

#[tokio::test]
async fn bad_bulk_requests_are_refused_and_change_nothing() {
    let server = start().await;
    let pending = submit_many(&server, "refused", 3).await;
    let too_many: Vec<String> = (0..1_001)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    for (body, mentions) in [
        (json!({"action": "cancel"}), vec!["ids", "filter"]),
        (
            json!({"action": "cancel", "ids": [pending[0]], "filter": {}}),
            vec!["ids", "filter"],
        ),
        (
            json!({"action": "delete", "ids": [pending[0]]}),
            vec!["action"],
        ),
        (json!({"action": "cancel", "ids": []}), vec!["ids"]),
        (json!({"action": "cancel", "ids": too_many}), vec!["1000"]),
        (
            json!({"action": "cancel", "ids": ["not-a-uuid"]}),
            vec!["ids"],
        ),
        (
            json!({"action": "cancel", "ids": [pending[0]], "cursor": "0."}),
            vec!["cursor"],
        ),
        (
            json!({"action": "cancel", "filter": {}, "cursor": "9.x"}),
            vec!["cursor"],
        ),
        (
            json!({"action": "cancel", "filter": {}, "limit": 0}),
            vec!["limit"],
        ),
        (
            json!({"action": "cancel", "filter": {"state": "sleeping"}}),
            vec!["state"],
        ),
        (json!({"action": "cancel", "filter": []}), vec!["filter"]),
    ] {
        let reply = admin(
            &server,
            Method::POST,
            "/api/v1/jobs/bulk",
            Some(body.clone()),
        )
        .await;
        reply.assert_error(400, "invalid_input", &mentions);
    }
    for id in pending {
        assert_eq!(
            server.client().get_job(id).await.expect("job").state,
            JobState::Pending
        );
    }
    assert!(audited(&server, "jobs.bulk_cancelled").await.is_empty());
}

#[tokio::test]
async fn a_scoped_token_changes_and_counts_only_its_own_organizations_jobs() {
    let server = start().await;
    let team_a = create_organization(&server, "bulk-a").await;
    let team_b = create_organization(&server, "bulk-b").await;
    let jobs_of = |team: &str| {
        let team = team.to_string();
        let server = &server;
        async move {
            let mut ids = Vec::new();
            for _ in 0..3 {
                let reply = admin(
                    server,
                    Method::POST,
                    "/api/v1/jobs",
                    Some(json!({"kind": "shared-kind", "organization_id": team})),
                )
                .await;
                assert_eq!(reply.status, 201, "{}", reply.body);
                ids.push(reply.json()["id"].as_str().expect("id").to_string());
            }
            ids
        }
    };
    let of_a = jobs_of(&team_a).await;
    let of_b = jobs_of(&team_b).await;
    let minted = admin(
        &server,
        Method::POST,
        "/api/v1/admin/tokens",
        Some(json!({"name": "a-submitter", "role": "submitter", "organization_id": team_a})),
    )
    .await;
    assert_eq!(minted.status, 201, "{}", minted.body);
    let token = minted.json()["token"].as_str().expect("token").to_string();
    let call = |body: Value| {
        let token = token.clone();
        let server = &server;
        async move {
            send(request(server, Method::POST, "/api/v1/jobs/bulk", Some(&token)).json(&body)).await
        }
    };

    let counted = send(request(
        &server,
        Method::GET,
        "/api/v1/jobs/count?kind=shared-kind",
        Some(&token),
    ))
    .await;
    assert_eq!(counted.status, 200, "{}", counted.body);
    assert_eq!(counted.json()["count"], 3, "its own organization's only");
    let dry =
        call(json!({"action": "cancel", "filter": {"kind": "shared-kind"}, "dry_run": true})).await;
    assert_eq!(dry.json()["would_change"]["count"], 3, "{}", dry.body);
    // Another organization's filter answers as one that does not exist.
    call(json!({"action": "cancel", "filter": {"organization_id": team_b}}))
        .await
        .assert_error(404, "organization_not_found", &[]);
    // Another organization's ids are not found, and stay as they were.
    let by_ids = call(json!({"action": "cancel", "ids": [of_b[0], of_a[0]]})).await;
    assert_eq!(by_ids.status, 200, "{}", by_ids.body);
    let outcome = by_ids.json();
    assert_eq!(outcome["changed"][0]["id"], of_a[0].as_str());
    assert_eq!(outcome["skipped"][0]["id"], of_b[0].as_str());
    assert_eq!(outcome["skipped"][0]["error"]["code"], "not_found");
    assert_eq!(
        outcome["skipped"][0]["state"],
        Value::Null,
        "no state leaks"
    );

    let swept = call(json!({"action": "cancel", "filter": {"kind": "shared-kind"}})).await;
    assert_eq!(swept.json()["changed"].as_array().map(Vec::len), Some(2));
    for id in &of_b {
        let job = admin(&server, Method::GET, &format!("/api/v1/jobs/{id}"), None).await;
        assert_eq!(
            job.json()["state"],
            "pending",
            "team b's jobs are untouched"
        );
    }
    let entries = audited(&server, "jobs.bulk_cancelled").await;
    assert!(!entries.is_empty());
    assert!(
        entries
            .iter()
            .all(|entry| entry["organization_id"] == team_a.as_str())
    );

    // A viewer may count but not change.
    let viewer = admin(
        &server,
        Method::POST,
        "/api/v1/admin/tokens",
        Some(json!({"name": "a-viewer", "role": "viewer", "organization_id": team_a})),
    )
    .await;
    let viewer_token = viewer.json()["token"].as_str().expect("token").to_string();
    send(
        request(
            &server,
            Method::POST,
            "/api/v1/jobs/bulk",
            Some(&viewer_token),
        )
        .json(&json!({"action": "cancel", "filter": {}, "dry_run": true})),
    )
    .await
    .assert_error(403, "forbidden", &["submitter"]);
}

#[tokio::test]
async fn the_summary_counts_jobs_by_state_and_kind_of_the_organizations_the_caller_sees() {
    let server = start().await;
    let client = server.client();
    let team = create_organization(&server, "summary-team").await;
    submit_many(&server, "summary-a", 4).await;
    let (_, runner) = server.runner("summarizer").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &runner, "summary-b").await;
    runner
        .complete_job(claimed.id, Some(claimed.lease.epoch), json!({}))
        .await
        .expect("complete");
    for _ in 0..2 {
        let reply = admin(
            &server,
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"kind": "summary-team-kind", "organization_id": team})),
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    // 55 kinds of one job each: the 50 kinds with the most jobs are named, the rest summed.
    let many: Vec<SubmitJob> = (0..55).map(|n| job(&format!("summary-z{n:02}"))).collect();
    client.submit_jobs(&many).await.expect("submit many kinds");

    let summary = admin(&server, Method::GET, "/api/v1/jobs/summary", None).await;
    assert_eq!(summary.status, 200, "{}", summary.body);
    let summary = summary.json();
    assert_eq!(summary["by_state"]["pending"], 4 + 2 + 55, "{summary}");
    assert_eq!(summary["by_state"]["completed"], 1);
    assert_eq!(summary["by_state"]["failed"], 0, "every state is named");
    let kinds = summary["kinds"].as_array().expect("kinds");
    assert_eq!(kinds.len(), 50);
    assert_eq!(kinds[0]["kind"], "summary-a", "most jobs first");
    assert_eq!(
        (
            kinds[0]["total"].as_u64(),
            kinds[0]["by_state"]["pending"].as_u64()
        ),
        (Some(4), Some(4))
    );
    assert_eq!(kinds[1]["kind"], "summary-team-kind");
    let b = kinds
        .iter()
        .find(|kind| kind["kind"] == "summary-b")
        .expect("summary-b is named");
    assert_eq!(b["by_state"]["completed"], 1);
    assert_eq!(summary["other_kind_count"], 58 - 50);
    assert_eq!(summary["other_kinds"]["pending"], 8);
    // One completion; no attempt failed.
    assert_eq!(summary["last_hour"]["completed"], 1, "{summary}");
    assert_eq!(summary["last_hour"]["failed_attempts"]["runner_error"], 0);
    assert!(summary["last_hour"]["since"].is_string());

    // A token of one organization counts its own jobs only.
    let minted = admin(
        &server,
        Method::POST,
        "/api/v1/admin/tokens",
        Some(json!({"name": "summary-viewer", "role": "viewer", "organization_id": team})),
    )
    .await;
    let token = minted.json()["token"].as_str().expect("token").to_string();
    let own = send(request(
        &server,
        Method::GET,
        "/api/v1/jobs/summary",
        Some(&token),
    ))
    .await;
    assert_eq!(own.status, 200, "{}", own.body);
    let own = own.json();
    assert_eq!(own["by_state"]["pending"], 2, "{own}");
    assert_eq!(own["kinds"].as_array().map(Vec::len), Some(1));
    assert_eq!(own["kinds"][0]["kind"], "summary-team-kind");
    assert_eq!(
        own["last_hour"],
        Value::Null,
        "every organization's throughput is not its own"
    );
}

#[tokio::test]
async fn the_last_hour_counts_outlive_a_restart_of_the_coordinator() {
    let server = start().await;
    let client = server.client();
    let (_, runner) = server.runner("hour-keeper").await.expect("runner");
    let (_, claimed) = submit_and_claim(&client, &runner, "hour-done").await;
    runner
        .complete_job(claimed.id, Some(claimed.lease.epoch), json!({}))
        .await
        .expect("complete");
    let (_, claimed) = submit_and_claim(&client, &runner, "hour-failed").await;
    runner
        .fail_job(claimed.id, Some(claimed.lease.epoch), &Default::default())
        .await
        .expect("fail");
    let before = admin(&server, Method::GET, "/api/v1/jobs/summary", None)
        .await
        .json();
    assert_eq!(before["last_hour"]["completed"], 1, "{before}");
    assert_eq!(before["last_hour"]["failed_attempts"]["runner_error"], 1);

    // Stopping adds what this coordinator counted to the store; the next one reads it back.
    let server = server
        .restart_with(std::sync::Arc::new(muster_core::SystemClock), |_| {})
        .await
        .expect("restart");
    let after = admin(&server, Method::GET, "/api/v1/jobs/summary", None)
        .await
        .json();
    assert_eq!(after["last_hour"], before["last_hour"], "{after}");
    let since = after["last_hour"]["since"].as_str().expect("since");
    let since = time::OffsetDateTime::parse(since, &time::format_description::well_known::Rfc3339)
        .expect("an RFC 3339 time");
    let window = time::OffsetDateTime::now_utc() - since;
    assert!(
        window > time::Duration::minutes(59) && window <= time::Duration::minutes(60),
        "the window is the last 60 minutes: {window}"
    );
}

#[tokio::test]
async fn jobs_are_listed_counted_and_changed_by_when_they_were_created() {
    use muster_core::Clock;
    let (server, clock) = crate::support::start_manual().await;
    let client = server.client();
    let rfc3339 = |clock: &muster_test_support::ManualClock| {
        time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(clock.now().as_millis()) * 1_000_000,
        )
        .expect("a time")
    };
    let old = submit_many(&server, "ranged", 3).await;
    clock.advance_s(60);
    let boundary = rfc3339(&clock);
    clock.advance_s(1);
    let new = submit_many(&server, "ranged", 2).await;
    let text = |at: time::OffsetDateTime| {
        at.format(&time::format_description::well_known::Rfc3339)
            .expect("format a time")
    };

    let listed = |after: Option<String>, before: Option<String>| JobQuery {
        kind: Some("ranged".into()),
        created_after: after,
        created_before: before,
        ..Default::default()
    };
    let ids = |page: muster_client::api::JobList| -> HashSet<uuid::Uuid> {
        page.items.into_iter().map(|job| job.id).collect()
    };
    let recent = client
        .list_jobs(&listed(Some(text(boundary)), None))
        .await
        .expect("list the recent ones");
    assert_eq!(ids(recent), new.iter().copied().collect());
    let older = client
        .list_jobs(&listed(None, Some(text(boundary))))
        .await
        .expect("list the older ones");
    assert_eq!(ids(older), old.iter().copied().collect());
    let counted = client
        .count_jobs(&listed(None, Some(text(boundary))))
        .await
        .expect("count the older ones");
    assert_eq!(counted.count, 3);

    // Cancel every job created before the boundary: the newer ones stay pending.
    let outcome = client
        .bulk_jobs(&by_filter(
            BulkAction::Cancel,
            JobSelector {
                created_before: Some(boundary),
                ..of_kind("ranged")
            },
        ))
        .await
        .expect("bulk cancel by creation time");
    let changed: HashSet<uuid::Uuid> = outcome.changed.iter().map(|job| job.id).collect();
    assert_eq!(changed, old.iter().copied().collect());
    for id in new {
        assert_eq!(
            client.get_job(id).await.expect("job").state,
            JobState::Pending
        );
    }

    admin(
        &server,
        Method::GET,
        "/api/v1/jobs?created_after=yesterday",
        None,
    )
    .await
    .assert_error(400, "invalid_input", &["created_after", "RFC 3339"]);
    admin(
        &server,
        Method::GET,
        "/api/v1/jobs/count?created_before=2026-13-01",
        None,
    )
    .await
    .assert_error(400, "invalid_input", &["created_before"]);
}

#[tokio::test]
async fn a_followed_summary_is_pushed_again_after_jobs_change_and_not_before() {
    let server = start().await;
    submit_many(&server, "pushed", 2).await;
    let response = request(
        &server,
        Method::GET,
        "/api/v1/jobs/summary",
        Some(&server.admin_token),
    )
    .header(reqwest::header::ACCEPT, "text/event-stream")
    .send()
    .await
    .expect("open the summary stream");
    assert_eq!(response.status(), 200);
    let mut events = crate::support::SseReader::new(response);
    let first = events.next().await.expect("the summary now");
    assert_eq!(first.event, "summary");
    let first: Value = serde_json::from_str(&first.data).expect("JSON");
    assert_eq!(first["by_state"]["pending"], 2, "{first}");

    // Nothing changes: nothing is sent within the coalescing interval (5 s).
    let quiet = tokio::time::timeout(std::time::Duration::from_secs(6), events.next()).await;
    assert!(
        quiet.is_err(),
        "no summary while nothing changed: {quiet:?}"
    );

    let started = std::time::Instant::now();
    submit_many(&server, "pushed", 3).await;
    let next = tokio::time::timeout(std::time::Duration::from_secs(15), events.next())
        .await
        .expect("a summary after the change")
        .expect("the stream goes on");
    assert_eq!(next.event, "summary");
    let next: Value = serde_json::from_str(&next.data).expect("JSON");
    assert_eq!(next["by_state"]["pending"], 5, "{next}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(12),
        "pushed after the change, not on the 30 s fallback: {:?}",
        started.elapsed()
    );
}
