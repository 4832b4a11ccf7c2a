//! The workload registry: records round trip, reports go through the lifecycle's rule with a
//! history of status changes, lists filter and page, deletion, and a deleted runner's
//! workloads failed in the same commit.

use std::sync::Arc;

use anyhow::{bail, ensure};
use muster_core::organization::OrganizationId;
use muster_core::{
    Container, ContainerRole, ContainerStatus, RunnerId, WorkloadRecord, WorkloadStatus,
};
use muster_store::{PageRequest, Store, StoreError, WorkloadFilter, WorkloadReport};

use super::{T0, at, every_page, expect_not_found, register_runner, unique_bits};

fn container(id: &str, status: ContainerStatus) -> Container {
    Container {
        container_id: id.into(),
        name: format!("{id}-name"),
        role: ContainerRole::Main,
        image: "registry.example/agent:1".into(),
        status,
    }
}

fn workload(id: &str, runner: RunnerId, thread: &str) -> WorkloadRecord {
    WorkloadRecord {
        id: id.into(),
        runner_id: runner,
        thread_id: thread.into(),
        agent_id: "agent-7".into(),
        organization: OrganizationId::default_organization(),
        status: WorkloadStatus::Starting,
        status_reason: String::new(),
        containers: vec![container("c-main", ContainerStatus::Waiting)],
        ziti_identity_id: "ziti-1".into(),
        created_at: T0,
        updated_at: T0,
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:x}", unique_bits())
}

fn report(id: &str, status: WorkloadStatus, offset_ms: i64) -> WorkloadReport {
    WorkloadReport {
        id: id.into(),
        status,
        containers: None,
        reason: None,
        at: at(offset_ms),
    }
}

fn expect_refused<T: std::fmt::Debug>(
    outcome: Result<T, StoreError>,
    what: &str,
) -> anyhow::Result<()> {
    match outcome {
        Err(StoreError::WorkloadRefused { .. }) => Ok(()),
        other => bail!("{what}: expected StoreError::WorkloadRefused, got {other:?}"),
    }
}

pub async fn a_workload_is_recorded_once_exactly_as_given_for_a_live_runner(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let runner = register_runner(store, "hosts-workloads").await?;
    let id = unique("w");
    let recorded = store
        .create_workload(workload(&id, runner, "thread-1"))
        .await?;
    ensure!(recorded == workload(&id, runner, "thread-1"));
    ensure!(
        store.get_workload(&id).await? == recorded,
        "reads back as stored"
    );
    let history = store.workload_history(&id).await?;
    ensure!(
        history.len() == 1 && history[0].status == WorkloadStatus::Starting && history[0].at == T0,
        "{history:?}"
    );

    // The same id again, even from another thread: refused, and the first one is untouched.
    let mut again = workload(&id, runner, "thread-2");
    again.status = WorkloadStatus::Running;
    match store.create_workload(again).await {
        Err(StoreError::Conflict(_)) => {}
        other => bail!("a taken id: expected Conflict, got {other:?}"),
    }
    ensure!(store.get_workload(&id).await? == recorded);
    ensure!(store.workload_history(&id).await?.len() == 1);

    // A runner that does not exist, or was deleted, hosts nothing.
    expect_not_found(
        store
            .create_workload(workload(
                &unique("w"),
                RunnerId::new(T0, unique_bits()),
                "t",
            ))
            .await,
        "an unknown runner",
    )?;
    let gone = register_runner(store, "gone").await?;
    store.delete_runner(gone, at(1)).await?;
    let orphan = unique("w");
    expect_not_found(
        store.create_workload(workload(&orphan, gone, "t")).await,
        "a deleted runner",
    )?;
    expect_not_found(store.get_workload(&orphan).await, "nothing was written")?;
    expect_not_found(
        store.get_workload("no-such-workload").await,
        "an unknown id",
    )?;
    expect_not_found(
        store.workload_history("no-such-workload").await,
        "its history",
    )?;
    Ok(())
}

pub async fn reports_move_a_workload_forward_and_keep_a_history_of_its_statuses(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let runner = register_runner(store, "reporter").await?;
    let id = unique("w");
    store.create_workload(workload(&id, runner, "t")).await?;

    let running = store
        .report_workload(WorkloadReport {
            containers: Some(vec![
                container("c-main", ContainerStatus::Running),
                container("c-side", ContainerStatus::Running),
            ]),
            ..report(&id, WorkloadStatus::Running, 10)
        })
        .await?;
    ensure!(running.status == WorkloadStatus::Running);
    ensure!(running.containers.len() == 2 && running.updated_at == at(10));
    ensure!(running.created_at == T0, "the creation time stays");

    // The same status again refreshes the containers and adds no history; no containers keeps
    // the recorded ones.
    let refreshed = store
        .report_workload(WorkloadReport {
            containers: Some(vec![container("c-main", ContainerStatus::Terminated)]),
            reason: Some("sidecar gone".into()),
            ..report(&id, WorkloadStatus::Running, 20)
        })
        .await?;
    ensure!(refreshed.containers == vec![container("c-main", ContainerStatus::Terminated)]);
    ensure!(refreshed.status_reason == "sidecar gone");
    let kept = store
        .report_workload(report(&id, WorkloadStatus::Running, 30))
        .await?;
    ensure!(kept.containers == refreshed.containers && kept.status_reason == "sidecar gone");
    ensure!(store.workload_history(&id).await?.len() == 2);

    // Backwards is refused and changes nothing.
    let before = store.get_workload(&id).await?;
    expect_refused(
        store
            .report_workload(report(&id, WorkloadStatus::Starting, 40))
            .await,
        "running back to starting",
    )?;
    ensure!(
        store.get_workload(&id).await? == before,
        "a refusal changes nothing"
    );

    store
        .report_workload(WorkloadReport {
            reason: Some("exit 0".into()),
            ..report(&id, WorkloadStatus::Stopped, 50)
        })
        .await?;
    expect_refused(
        store
            .report_workload(report(&id, WorkloadStatus::Failed, 60))
            .await,
        "a stopped workload failing",
    )?;
    let history = store.workload_history(&id).await?;
    let statuses: Vec<_> = history.iter().map(|change| change.status).collect();
    ensure!(
        statuses
            == vec![
                WorkloadStatus::Starting,
                WorkloadStatus::Running,
                WorkloadStatus::Stopped
            ],
        "{history:?}"
    );
    ensure!(history[2].reason == "exit 0" && history[2].at == at(50));
    ensure!(
        history[1].reason.is_empty(),
        "a change without a reason clears the old one: {history:?}"
    );
    expect_not_found(
        store
            .report_workload(report("no-such-workload", WorkloadStatus::Running, 1))
            .await,
        "an unknown workload",
    )?;
    Ok(())
}

pub async fn reports_sent_at_once_change_the_status_once(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let runner = register_runner(store.as_ref(), "racer").await?;
    let id = unique("w");
    store.create_workload(workload(&id, runner, "t")).await?;
    let reporters: Vec<_> = (0..8)
        .map(|n| {
            let store = Arc::clone(&store);
            let id = id.clone();
            tokio::spawn(async move {
                store
                    .report_workload(report(&id, WorkloadStatus::Running, 100 + n))
                    .await
            })
        })
        .collect();
    for reporter in reporters {
        reporter.await??;
    }
    let history = store.workload_history(&id).await?;
    ensure!(
        history.len() == 2 && history[1].status == WorkloadStatus::Running,
        "one change to running, however many said so: {history:?}"
    );
    Ok(())
}

pub async fn workloads_are_listed_newest_first_by_thread_runner_organization_and_status(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let first = register_runner(store, "lister-1").await?;
    let second = register_runner(store, "lister-2").await?;
    let thread = unique("thread");
    let other_thread = unique("thread");
    let team = OrganizationId::parse(&unique("team"))?;
    let mut ids = Vec::new();
    for n in 0..7 {
        let id = unique("w");
        let mut record = workload(
            &id,
            if n % 2 == 0 { first } else { second },
            if n < 5 { &thread } else { &other_thread },
        );
        if n == 6 {
            record.organization = team.clone();
        }
        store.create_workload(record).await?;
        ids.push(id);
    }
    store
        .report_workload(report(&ids[1], WorkloadStatus::Running, 5))
        .await?;
    store
        .report_workload(report(&ids[3], WorkloadStatus::Failed, 5))
        .await?;

    let listed = |filter: WorkloadFilter| async move {
        let items = every_page("workloads", 2, |page| {
            store.list_workloads(filter.clone(), page)
        })
        .await?;
        anyhow::Ok(items.into_iter().map(|w| w.id).collect::<Vec<_>>())
    };
    let of_thread = listed(WorkloadFilter {
        thread_id: Some(thread.clone()),
        ..WorkloadFilter::default()
    })
    .await?;
    let expected: Vec<String> = ids[..5].iter().rev().cloned().collect();
    ensure!(
        of_thread == expected,
        "newest first, every page: {of_thread:?}"
    );
    let of_second = listed(WorkloadFilter {
        thread_id: Some(thread.clone()),
        runner_id: Some(second),
        ..WorkloadFilter::default()
    })
    .await?;
    ensure!(
        of_second == vec![ids[3].clone(), ids[1].clone()],
        "{of_second:?}"
    );
    let moving = listed(WorkloadFilter {
        thread_id: Some(thread.clone()),
        statuses: vec![WorkloadStatus::Running, WorkloadStatus::Failed],
        ..WorkloadFilter::default()
    })
    .await?;
    ensure!(moving == vec![ids[3].clone(), ids[1].clone()], "{moving:?}");
    let starting = listed(WorkloadFilter {
        thread_id: Some(thread.clone()),
        statuses: vec![WorkloadStatus::Starting],
        ..WorkloadFilter::default()
    })
    .await?;
    ensure!(
        starting == vec![ids[4].clone(), ids[2].clone(), ids[0].clone()],
        "{starting:?}"
    );
    let of_team = listed(WorkloadFilter {
        organization_id: Some(team.as_str().to_string()),
        ..WorkloadFilter::default()
    })
    .await?;
    ensure!(of_team == vec![ids[6].clone()], "{of_team:?}");
    let nothing = listed(WorkloadFilter {
        thread_id: Some(unique("thread")),
        ..WorkloadFilter::default()
    })
    .await?;
    ensure!(nothing.is_empty());
    match store
        .list_workloads(
            WorkloadFilter::default(),
            PageRequest {
                limit: 2,
                cursor: Some("not-a-cursor".into()),
            },
        )
        .await
    {
        Err(StoreError::Rejected(_)) => {}
        other => bail!("a cursor this store never gave: expected Rejected, got {other:?}"),
    }
    Ok(())
}

pub async fn a_deleted_workload_is_gone_with_its_history(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let runner = register_runner(store, "deleter").await?;
    let id = unique("w");
    store.create_workload(workload(&id, runner, "t")).await?;
    store.delete_workload(&id).await?;
    expect_not_found(store.get_workload(&id).await, "a deleted workload")?;
    expect_not_found(store.workload_history(&id).await, "its history")?;
    expect_not_found(store.delete_workload(&id).await, "deleting it again")?;
    // Its id may be used again, with a history of its own.
    store.create_workload(workload(&id, runner, "t")).await?;
    ensure!(store.workload_history(&id).await?.len() == 1);
    Ok(())
}

pub async fn deleting_a_runner_fails_its_unfinished_workloads_and_leaves_the_rest(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let doomed = register_runner(store, "doomed").await?;
    let survivor = register_runner(store, "survivor").await?;
    let running = unique("w");
    let stopped = unique("w");
    let elsewhere = unique("w");
    store
        .create_workload(workload(&running, doomed, "t"))
        .await?;
    store
        .report_workload(report(&running, WorkloadStatus::Running, 1))
        .await?;
    store
        .create_workload(workload(&stopped, doomed, "t"))
        .await?;
    store
        .report_workload(report(&stopped, WorkloadStatus::Stopped, 2))
        .await?;
    store
        .create_workload(workload(&elsewhere, survivor, "t"))
        .await?;
    let stopped_before = store.get_workload(&stopped).await?;

    store.delete_runner(doomed, at(100)).await?;

    let failed = store.get_workload(&running).await?;
    ensure!(failed.status == WorkloadStatus::Failed, "{failed:?}");
    ensure!(failed.status_reason == muster_core::workload::RUNNER_DELETED_REASON);
    ensure!(failed.updated_at == at(100));
    ensure!(failed.containers.len() == 1, "its last containers are kept");
    let history = store.workload_history(&running).await?;
    ensure!(
        history
            .last()
            .is_some_and(|change| change.status == WorkloadStatus::Failed
                && change.reason == muster_core::workload::RUNNER_DELETED_REASON
                && change.at == at(100)),
        "{history:?}"
    );
    ensure!(
        store.get_workload(&stopped).await? == stopped_before,
        "a finished workload stays as it was"
    );
    ensure!(store.get_workload(&elsewhere).await?.status == WorkloadStatus::Starting);
    Ok(())
}
