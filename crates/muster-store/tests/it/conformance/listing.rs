//! Listing jobs and runners: newest first, cursors that visit every item exactly once, filters
//! that combine, and cursors the store never gave out refused as `Rejected`.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::ensure;
use muster_core::{JobId, JobState, RunnerId};
use muster_store::{JobFilter, PageRequest, RunnerFilter, Store};

use super::{
    T0, at, call_for, claim, expect_rejected, list_all_jobs, no_outputs, register_runner,
    runner_error, spec, submit_each, submit_many,
};

pub async fn list_jobs_is_newest_first_and_cursors_visit_every_job_once(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let submitted = submit_each(store, (0..23).map(|_| spec("listed")).collect(), T0).await?;
    let newest_first: Vec<JobId> = submitted.iter().rev().map(|job| job.id).collect();

    for page_size in [1, 5, 23, 100] {
        let listed: Vec<JobId> = list_all_jobs(store, JobFilter::default(), page_size)
            .await?
            .iter()
            .map(|job| job.id)
            .collect();
        ensure!(
            listed == newest_first,
            "page size {page_size}: every job once, newest first"
        );
    }

    let first = store
        .list_jobs(
            JobFilter::default(),
            PageRequest {
                limit: 5,
                cursor: None,
            },
        )
        .await?;
    ensure!(first.items.len() == 5);
    ensure!(first.next_cursor.is_some(), "more jobs remain");
    ensure!(
        first.items[0] == store.get_job(newest_first[0]).await?,
        "items are full records"
    );
    let all = store
        .list_jobs(
            JobFilter::default(),
            PageRequest {
                limit: 23,
                cursor: None,
            },
        )
        .await?;
    ensure!(all.items.len() == 23);
    ensure!(
        all.next_cursor.is_none(),
        "a page holding the rest has no cursor"
    );
    Ok(())
}

pub async fn list_jobs_cursors_stay_stable_while_new_jobs_arrive(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let older = submit_each(store, (0..6).map(|_| spec("stable")).collect(), T0).await?;
    let first = store
        .list_jobs(
            JobFilter::default(),
            PageRequest {
                limit: 3,
                cursor: None,
            },
        )
        .await?;
    // Jobs submitted mid-walk are newer than the cursor and must not shift what follows.
    submit_each(store, (0..4).map(|_| spec("stable")).collect(), at(10_000)).await?;
    let second = store
        .list_jobs(
            JobFilter::default(),
            PageRequest {
                limit: 3,
                cursor: first.next_cursor.clone(),
            },
        )
        .await?;
    let seen: Vec<JobId> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|job| job.id)
        .collect();
    let expected: Vec<JobId> = older.iter().rev().map(|job| job.id).collect();
    ensure!(seen == expected, "the walk continues where it was");
    Ok(())
}

pub async fn list_jobs_filters_by_state_kind_and_runner(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    submit_many(store, "filter-a", 6, T0).await?;
    submit_many(store, "filter-b", 4, T0.plus_millis(1)).await?;
    let first_runner = register_runner(store, "filter-1").await?;
    let second_runner = register_runner(store, "filter-2").await?;
    let by_first = claim(store, first_runner, &["filter-a"], 2, at(1_000)).await?;
    let by_second = claim(store, second_runner, &["filter-b"], 1, at(1_000)).await?;
    ensure!(by_first.len() == 2 && by_second.len() == 1);
    store
        .complete_job(
            call_for(&by_first[0], first_runner),
            serde_json::json!(1),
            super::no_outputs(),
            at(2_000),
        )
        .await?;

    let ids_of = |jobs: &[muster_store::ClaimedJob]| -> HashSet<JobId> {
        jobs.iter().map(|job| job.job.id).collect()
    };
    let filter =
        |state: Option<JobState>, kind: Option<&str>, runner: Option<RunnerId>| JobFilter {
            state,
            kind: kind.map(str::to_string),
            runner_id: runner,
            ..JobFilter::default()
        };
    let cases: Vec<(&str, JobFilter, usize)> = vec![
        ("everything", JobFilter::default(), 10),
        ("pending", filter(Some(JobState::Pending), None, None), 7),
        ("claimed", filter(Some(JobState::Claimed), None, None), 2),
        (
            "completed",
            filter(Some(JobState::Completed), None, None),
            1,
        ),
        ("failed", filter(Some(JobState::Failed), None, None), 0),
        ("kind a", filter(None, Some("filter-a"), None), 6),
        ("kind b", filter(None, Some("filter-b"), None), 4),
        ("unknown kind", filter(None, Some("filter-z"), None), 0),
        ("first runner", filter(None, None, Some(first_runner)), 2),
        ("second runner", filter(None, None, Some(second_runner)), 1),
        (
            "kind a and pending",
            filter(Some(JobState::Pending), Some("filter-a"), None),
            4,
        ),
        (
            "first runner and claimed",
            filter(Some(JobState::Claimed), None, Some(first_runner)),
            1,
        ),
        (
            "kind b and first runner",
            filter(None, Some("filter-b"), Some(first_runner)),
            0,
        ),
        // Kind a was created at T0, kind b a millisecond later.
        (
            "created from T0 + 1 ms",
            JobFilter {
                created_after: Some(T0.plus_millis(1)),
                ..JobFilter::default()
            },
            4,
        ),
        (
            "created before T0 + 1 ms",
            JobFilter {
                created_before: Some(T0.plus_millis(1)),
                ..JobFilter::default()
            },
            6,
        ),
        (
            "created in [T0, T0 + 1 ms) and pending",
            JobFilter {
                state: Some(JobState::Pending),
                created_after: Some(T0),
                created_before: Some(T0.plus_millis(1)),
                ..JobFilter::default()
            },
            4,
        ),
        (
            "created in an empty range",
            JobFilter {
                created_after: Some(T0.plus_millis(1)),
                created_before: Some(T0.plus_millis(1)),
                ..JobFilter::default()
            },
            0,
        ),
    ];
    for (name, job_filter, expected) in cases {
        // A page size of 2 makes every filter walk several pages.
        let jobs = list_all_jobs(store, job_filter.clone(), 2).await?;
        ensure!(
            jobs.len() == expected,
            "{name}: expected {expected}, got {}",
            jobs.len()
        );
        let distinct: HashSet<JobId> = jobs.iter().map(|job| job.id).collect();
        ensure!(distinct.len() == jobs.len(), "{name}: no job listed twice");
        // The count agrees with the list, and stops at its cap.
        for cap in [1_000, expected as u64, 1, 0] {
            let counted = store.count_jobs(job_filter.clone(), cap).await?;
            let wanted = (expected as u64).min(cap);
            ensure!(
                counted == wanted,
                "{name}: count capped at {cap}: expected {wanted}, got {counted}"
            );
        }
        if expected > 1 {
            let counted = store
                .count_jobs(job_filter.clone(), expected as u64 - 1)
                .await?;
            ensure!(counted == expected as u64 - 1, "{name}: capped below");
        }
        for job in &jobs {
            ensure!(
                job_filter.state.is_none_or(|state| job.state() == state),
                "{name}"
            );
            ensure!(
                job_filter
                    .kind
                    .as_deref()
                    .is_none_or(|kind| job.kind == kind),
                "{name}"
            );
            ensure!(
                job_filter
                    .runner_id
                    .is_none_or(|runner| job.runner_id() == Some(runner)),
                "{name}"
            );
        }
    }
    let first_runners_jobs: HashSet<JobId> =
        list_all_jobs(store, filter(None, None, Some(first_runner)), 10)
            .await?
            .iter()
            .map(|job| job.id)
            .collect();
    ensure!(first_runners_jobs == ids_of(&by_first));
    Ok(())
}

pub async fn lists_of_failed_cancelled_and_leased_jobs_follow_every_change_of_state(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let a = submit_many(store, "unsuccessful-a", 5, T0).await?;
    let b = submit_many(store, "unsuccessful-b", 3, T0.plus_millis(1)).await?;
    let runner = register_runner(store, "unsuccessful").await?;
    let claimed_a = claim(store, runner, &["unsuccessful-a"], 4, at(1_000)).await?;
    let claimed_b = claim(store, runner, &["unsuccessful-b"], 2, at(1_000)).await?;
    ensure!(claimed_a.len() == 4 && claimed_b.len() == 2);
    for claimed in [&claimed_a[0], &claimed_a[1], &claimed_b[0]] {
        store
            .fail_job(
                call_for(claimed, runner),
                runner_error("no"),
                false,
                at(2_000),
            )
            .await?;
    }
    // Failed, then retried: no longer failed.
    store.retry_job(claimed_a[1].job.id, at(3_000)).await?;
    store
        .complete_job(
            call_for(&claimed_a[3], runner),
            serde_json::json!(null),
            no_outputs(),
            at(3_000),
        )
        .await?;
    // A claimed job being cancelled is cancelling, not cancelled; pending ones end at once.
    store
        .cancel_job(claimed_a[2].job.id, 30_000, at(3_000))
        .await?;
    let pending_a = a
        .iter()
        .find(|job| !claimed_a.iter().any(|claimed| claimed.job.id == job.id))
        .ok_or_else(|| anyhow::anyhow!("a job of kind a nobody claimed"))?;
    let pending_b = b
        .iter()
        .find(|job| !claimed_b.iter().any(|claimed| claimed.job.id == job.id))
        .ok_or_else(|| anyhow::anyhow!("a job of kind b nobody claimed"))?;
    store.cancel_job(pending_a.id, 30_000, at(3_000)).await?;
    store.cancel_job(pending_b.id, 30_000, at(3_000)).await?;

    let listed = |state: JobState, kind: Option<&str>| {
        let filter = JobFilter {
            state: Some(state),
            kind: kind.map(str::to_string),
            ..JobFilter::default()
        };
        // Pages of one, so every cursor is used; the count reads the same tables.
        async move {
            let ids = list_all_jobs(store, filter.clone(), 1)
                .await?
                .iter()
                .map(|job| job.id)
                .collect::<Vec<JobId>>();
            let counted = store.count_jobs(filter.clone(), 1_000).await?;
            ensure!(
                counted == ids.len() as u64,
                "{filter:?}: counted {counted}, listed {}",
                ids.len()
            );
            anyhow::Ok(ids)
        }
    };
    // Newest first: b's jobs were submitted after a's.
    let failed = listed(JobState::Failed, None).await?;
    ensure!(
        failed == vec![claimed_b[0].job.id, claimed_a[0].job.id],
        "failed jobs, newest first: {failed:?}"
    );
    ensure!(listed(JobState::Failed, Some("unsuccessful-a")).await? == vec![claimed_a[0].job.id]);
    ensure!(
        listed(JobState::Failed, Some("unsuccessful-c"))
            .await?
            .is_empty()
    );
    let cancelled = listed(JobState::Cancelled, None).await?;
    ensure!(
        cancelled == vec![pending_b.id, pending_a.id],
        "cancelled jobs, newest first: {cancelled:?}"
    );
    ensure!(listed(JobState::Cancelling, None).await? == vec![claimed_a[2].job.id]);
    ensure!(listed(JobState::Claimed, None).await? == vec![claimed_b[1].job.id]);
    ensure!(listed(JobState::Running, None).await?.is_empty());
    store
        .report_progress(
            call_for(&claimed_b[1], runner),
            muster_core::Progress {
                percent: 10.0,
                message: None,
            },
            at(3_500),
        )
        .await?;
    ensure!(listed(JobState::Running, Some("unsuccessful-b")).await? == vec![claimed_b[1].job.id]);
    ensure!(
        listed(JobState::Running, Some("unsuccessful-a"))
            .await?
            .is_empty()
    );
    ensure!(listed(JobState::Claimed, None).await?.is_empty());
    ensure!(listed(JobState::Pending, Some("unsuccessful-a")).await? == vec![claimed_a[1].job.id]);

    // The cancelling job ends cancelled when its runner confirms.
    store
        .fail_job(
            call_for(&claimed_a[2], runner),
            muster_core::JobError {
                reason: muster_core::FailureReason::Cancelled,
                message: "stopped".into(),
            },
            false,
            at(4_000),
        )
        .await?;
    let cancelled_a = listed(JobState::Cancelled, Some("unsuccessful-a")).await?;
    ensure!(
        cancelled_a == vec![pending_a.id, claimed_a[2].job.id],
        "the confirmed cancellation joins the list in its place by age: {cancelled_a:?}"
    );
    // Deleted by retention: gone from every list.
    store.delete_finished_jobs(at(60_000), None, 100).await?;
    ensure!(listed(JobState::Failed, None).await?.is_empty());
    ensure!(listed(JobState::Cancelled, None).await?.is_empty());
    Ok(())
}

pub async fn cursors_the_store_never_gave_out_are_rejected(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    submit_many(store, "cursed", 3, T0).await?;
    register_runner(store, "cursed").await?;
    for bad in ["not a cursor!", "%%%", "-1"] {
        expect_rejected(
            store
                .list_jobs(
                    JobFilter::default(),
                    PageRequest {
                        limit: 10,
                        cursor: Some(bad.to_string()),
                    },
                )
                .await,
            &format!("list_jobs with cursor {bad:?}"),
        )?;
        expect_rejected(
            store
                .list_runners(
                    RunnerFilter::default(),
                    PageRequest {
                        limit: 10,
                        cursor: Some(bad.to_string()),
                    },
                )
                .await,
            &format!("list_runners with cursor {bad:?}"),
        )?;
    }
    Ok(())
}

pub async fn list_runners_is_newest_first_and_cursors_visit_every_runner_once(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let mut created = Vec::new();
    for index in 0..7 {
        created.push(register_runner(store, &format!("listed-{index}")).await?);
    }
    let gone = created.remove(3);
    store.delete_runner(gone, at(1_000)).await?;
    let newest_first: Vec<RunnerId> = created.iter().rev().copied().collect();

    // The listing for matching (which may leave out the held-job counts) walks the same way.
    for (page_size, for_matching) in [1u32, 2, 6, 50]
        .into_iter()
        .flat_map(|size| [(size, false), (size, true)])
    {
        let mut listed = Vec::new();
        let mut cursor = None;
        for _ in 0..100 {
            let request = PageRequest {
                limit: page_size,
                cursor: cursor.clone(),
            };
            let page = if for_matching {
                store.list_runners_for_matching(request).await?
            } else {
                store.list_runners(RunnerFilter::default(), request).await?
            };
            ensure!(page.items.len() <= page_size as usize);
            ensure!(
                cursor.is_none() || !page.items.is_empty() || page.next_cursor.is_none(),
                "an empty page must end the walk"
            );
            listed.extend(page.items.iter().map(|runner| runner.id));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        ensure!(
            listed == newest_first,
            "page size {page_size} (for matching: {for_matching}): every live runner once, newest first, deleted ones left out: {listed:?}"
        );
    }
    Ok(())
}
