//! What only the PostgreSQL backend promises, beyond the conformance suite: several stores (one
//! per coordinator) on one database behave as one, wake-ups cross between them, and a store
//! whose database goes away answers `Unavailable` and works again once it is back.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use muster_core::{JobId, JobState};
use muster_store::postgres::{DEFAULT_MAX_CONNECTIONS, PostgresConfig, PostgresStore};
use muster_store::{Store, StoreError};
use muster_test_support::PostgresCluster;

use crate::conformance::{
    T0, at, claim, policy, register_runner, spec_with_policy, submit_many, submit_one,
};

/// The statements that take the schema from version 14 back to version 13: no workloads.
macro_rules! undo_migration_14 {
    () => {
        "DROP TABLE workload_history;
         DROP TABLE workloads;"
    };
}

/// The statements that take a store schema from version 13 back to version 12: no outcome
/// totals.
macro_rules! undo_migration_13 {
    () => {
        "DROP TABLE outcome_minutes;"
    };
}

/// The statements that take a store schema from version 12 back to version 11: no attempt history.
macro_rules! undo_migration_12 {
    () => {
        "DROP TABLE job_attempts;"
    };
}

/// The statements that take a store schema from version 11 back to version 10: no sessions.
macro_rules! undo_migration_11 {
    () => {
        "DROP TABLE sessions;"
    };
}

/// The statements that take a store schema from version 10 back to version 9: idempotency keys
/// unique across organizations, no index of audit entries by organization.
macro_rules! undo_migration_10 {
    () => {
        "DROP INDEX jobs_idempotency;
         DROP INDEX audit_log_organization;
         DROP TABLE artifact_organizations;
         CREATE UNIQUE INDEX jobs_idempotency ON jobs (idempotency_key)
             WHERE idempotency_key IS NOT NULL;"
    };
}

/// The statements that take a store schema from version 9 back to version 8: the claim indexes
/// without organizations.
macro_rules! undo_migration_9 {
    () => {
        "DROP INDEX job_queue_open_own;
         DROP INDEX job_queue_constrained_own;
         ALTER TABLE job_queue DROP COLUMN organization_id;
         ALTER TABLE job_queue DROP COLUMN shared_runners;
         ALTER TABLE jobs DROP COLUMN shared_runners;
         CREATE INDEX job_queue_open ON job_queue (kind, priority, seq, run_after)
             WHERE requirements IS NULL;
         CREATE INDEX job_queue_constrained ON job_queue (kind, priority, seq, run_after)
             WHERE requirements IS NOT NULL;"
    };
}

/// The statements that take a store schema from version 8 back to version 7: no organizations,
/// no user tokens, jobs and audit entries without an organization.
macro_rules! undo_migration_8 {
    () => {
        "DROP TABLE organizations;
         DROP TABLE user_tokens;
         ALTER TABLE jobs DROP COLUMN organization_id;
         ALTER TABLE audit_log DROP COLUMN organization_id;"
    };
}

/// The statements that take a store schema back from its latest version to version 2: both
/// upgrade tests start from what an older coordinator left.
macro_rules! undo_migrations_after_version_2 {
    () => {
        concat!(
            undo_migration_14!(),
            undo_migration_13!(),
            undo_migration_12!(),
            undo_migration_11!(),
            undo_migration_10!(),
            undo_migration_9!(),
            undo_migration_8!(),
            "
         DROP FUNCTION muster_track_unsuccessful() CASCADE;
         DROP TABLE jobs_unsuccessful;
         DROP FUNCTION muster_count_artifacts() CASCADE;
         DROP TABLE artifacts;
         DROP TABLE artifact_usage;
         DROP TABLE runner_keys;
         DROP TABLE audit_log;
         DROP TABLE kind_settings;
         ALTER TABLE runners DROP COLUMN enrollment;
         ALTER TABLE runners DROP COLUMN key_fingerprint;
         ALTER TABLE runners DROP COLUMN public_key;
         ALTER TABLE runners DROP COLUMN bound_capabilities;
         ALTER TABLE runners DROP COLUMN bound_kinds;
         ALTER TABLE runners DROP COLUMN token_expires_at;
         ALTER TABLE runners DROP COLUMN previous_token_hash;
         ALTER TABLE runners DROP COLUMN previous_token_expires_at;
         ALTER TABLE runners DROP COLUMN registered_at;
         ALTER TABLE jobs DROP COLUMN result_signature;
         "
        )
    };
}

async fn open_store(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    let store = PostgresStore::open(&PostgresConfig {
        url: url.to_string(),
        log_cap_bytes: 1024 * 1024,
        max_connections: DEFAULT_MAX_CONNECTIONS,
    })
    .await
    .with_context(|| format!("open a PostgresStore on {url}"))?;
    Ok(Arc::new(store))
}

/// Stores for `count` coordinators on one fresh database.
async fn coordinators(count: usize) -> anyhow::Result<Vec<Arc<dyn Store>>> {
    let url = muster_test_support::temp_postgres_database().await?;
    let mut stores = Vec::with_capacity(count);
    for _ in 0..count {
        stores.push(open_store(&url).await?);
    }
    Ok(stores)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinators_starting_at_once_on_an_empty_database_all_open_it() -> anyhow::Result<()> {
    let url = muster_test_support::temp_postgres_database().await?;
    // The migrations race: each takes the advisory lock, one creates the schema, the others
    // find it done.
    let opened = futures::future::join_all((0..4).map(|_| open_store(&url))).await;
    for store in opened {
        store?.ping().await?;
    }
    Ok(())
}

/// A database written by the first schema (a `job_leases` row per leased job) keeps its leases
/// when a newer coordinator moves it to lease checks: the job still counts as held and is reaped
/// at its deadline, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_taken_under_the_first_schema_survive_the_move_to_lease_checks() -> anyhow::Result<()>
{
    let url = muster_test_support::temp_postgres_database().await?;
    let store = open_store(&url).await?;
    let job = submit_one(
        store.as_ref(),
        spec_with_policy("kept", policy(3, 3_600, 30, 1)),
        T0,
    )
    .await?;
    let runner = register_runner(store.as_ref(), "old-timer").await?;
    let claimed = claim(store.as_ref(), runner, &["kept"], 1, T0).await?;
    let expiry = claimed
        .first()
        .map(|claimed| claimed.lease.expires_at)
        .context("claim the job")?;
    drop(store);

    // Put the database back as the first schema left it: the lease as a job_leases row.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .context("connect to rewrite the schema")?;
    let connection = tokio::spawn(connection);
    client
        .batch_execute(concat!(
            "BEGIN;
             CREATE TABLE job_leases (seq BIGINT PRIMARY KEY, runner_id BYTEA NOT NULL, reap_at BIGINT NOT NULL);
             CREATE INDEX job_leases_reap ON job_leases (reap_at);
             INSERT INTO job_leases SELECT seq, runner_id, lease_expires_at FROM jobs WHERE state IN (1, 2, 3);
             DROP TABLE lease_checks;
             ", undo_migrations_after_version_2!(), "
             UPDATE muster_schema SET version = 1 WHERE component = 'store';
             COMMIT;"
        ))
        .await
        .context("rewrite the schema as version 1")?;
    let moved: i64 = client
        .query_one("SELECT count(*) FROM job_leases", &[])
        .await?
        .get(0);
    ensure!(moved == 1, "the lease is a job_leases row: {moved}");
    drop(client);
    connection.await.context("join the connection task")??;

    let store = open_store(&url).await?;
    ensure!(store.get_runner(runner).await?.running_jobs == 1);
    ensure!(store.reap(expiry.plus_millis(-1), 100).await?.total() == 0);
    ensure!(store.get_job(job.id).await?.state() == JobState::Claimed);
    let report = store.reap(expiry, 100).await?;
    ensure!(report.lease_expired == 1, "{report:?}");
    ensure!(store.get_job(job.id).await?.state() == JobState::Pending);
    ensure!(store.get_runner(runner).await?.running_jobs == 0);
    Ok(())
}

#[tokio::test]
async fn failed_jobs_from_before_their_table_existed_are_listed_after_the_upgrade()
-> anyhow::Result<()> {
    let url = muster_test_support::temp_postgres_database().await?;
    let store = open_store(&url).await?;
    let job = submit_one(
        store.as_ref(),
        spec_with_policy("old-failure", policy(1, 60, 30, 1)),
        T0,
    )
    .await?;
    let runner = register_runner(store.as_ref(), "old-timer").await?;
    let claimed = claim(store.as_ref(), runner, &["old-failure"], 1, T0).await?;
    let claimed = claimed.first().context("claim the job")?;
    store
        .fail_job(
            muster_store::JobCall {
                runner,
                job: job.id,
                epoch: Some(claimed.lease.epoch),
            },
            muster_core::JobError {
                reason: muster_core::FailureReason::RunnerError,
                message: "before the upgrade".into(),
            },
            false,
            T0.plus_millis(1_000),
        )
        .await?;
    drop(store);

    // Put the database back as schema version 2 left it: no table of unsuccessful jobs.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .context("connect to rewrite the schema")?;
    let connection = tokio::spawn(connection);
    client
        .batch_execute(concat!(
            "BEGIN;
             ",
            undo_migrations_after_version_2!(),
            "
             UPDATE muster_schema SET version = 2 WHERE component = 'store';
             COMMIT;"
        ))
        .await
        .context("rewrite the schema as version 2")?;
    drop(client);
    connection.await.context("join the connection task")??;

    let store = open_store(&url).await?;
    let failed = store
        .list_jobs(
            muster_store::JobFilter {
                state: Some(JobState::Failed),
                ..Default::default()
            },
            muster_store::PageRequest {
                limit: 10,
                cursor: None,
            },
        )
        .await?;
    ensure!(
        failed.items.iter().map(|job| job.id).collect::<Vec<_>>() == vec![job.id],
        "the job that failed before the upgrade is listed: {:?}",
        failed.items
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_submit_through_one_coordinator_wakes_the_others() -> anyhow::Result<()> {
    let stores = coordinators(2).await?;
    // A receiver starts from the store's first value, so this sees the one move the listener
    // makes when it starts listening, whether that happened already or is still to come. Once it
    // is consumed, only a notification from the database can move the signal.
    let mut signal = stores[1].pending_signal();
    tokio::time::timeout(Duration::from_secs(10), signal.changed())
        .await
        .context("the second coordinator's listener never started")??;
    signal.borrow_and_update();
    submit_one(stores[0].as_ref(), crate::conformance::spec("wake"), T0).await?;
    // Nothing but a notification from the database can move the other store's signal.
    tokio::time::timeout(Duration::from_secs(5), signal.changed())
        .await
        .context("a submit on one coordinator did not wake another within 5 s")??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_through_three_coordinators_take_every_job_exactly_once() -> anyhow::Result<()> {
    const JOBS: usize = 600;
    let stores = coordinators(3).await?;
    let job_ids: BTreeSet<JobId> = submit_many(stores[0].as_ref(), "shared", JOBS, T0)
        .await?
        .into_iter()
        .map(|job| job.id)
        .collect();
    let mut claimers = Vec::new();
    for index in 0..9 {
        let store = Arc::clone(&stores[index % 3]);
        let runner = register_runner(store.as_ref(), &format!("claimer-{index}")).await?;
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = claim(store.as_ref(), runner, &["shared"], 7, at(1_000)).await?;
                if claimed.is_empty() {
                    return anyhow::Ok(mine);
                }
                mine.extend(claimed.into_iter().map(|claimed| claimed.job.id));
            }
        }));
    }
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for claimer in claimers {
        for id in claimer.await.context("join a claimer")?? {
            total += 1;
            ensure!(seen.insert(id), "job {id} was claimed twice");
        }
    }
    ensure!(total == JOBS, "claimed {total} of {JOBS} jobs");
    ensure!(
        seen == job_ids,
        "the claimed jobs are not the submitted ones"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reapers_of_three_coordinators_apply_each_expired_lease_once() -> anyhow::Result<()> {
    const JOBS: usize = 300;
    let stores = coordinators(3).await?;
    let job_policy = policy(3, 3600, 10, 1);
    let spec = spec_with_policy("reaped", job_policy);
    let mut ids = Vec::with_capacity(JOBS);
    for _ in 0..JOBS {
        ids.push(submit_one(stores[0].as_ref(), spec.clone(), T0).await?.id);
    }
    let runner = register_runner(stores[1].as_ref(), "vanishing").await?;
    let mut leased = 0;
    loop {
        let claimed = claim(stores[1].as_ref(), runner, &["reaped"], 100, at(1_000)).await?;
        if claimed.is_empty() {
            break;
        }
        leased += claimed.len();
    }
    ensure!(leased == JOBS, "leased {leased} of {JOBS}");
    // Every lease expired long ago; all three reapers go at once, in small passes.
    let now = at(60_000);
    let reapers = stores.iter().map(|store| {
        let store = Arc::clone(store);
        tokio::spawn(async move {
            let mut expired = 0u32;
            loop {
                let report = store.reap(now, 25).await?;
                if report.total() == 0 {
                    return anyhow::Ok(expired);
                }
                expired += report.lease_expired;
            }
        })
    });
    let mut total = 0u32;
    for reaper in reapers {
        total += reaper.await.context("join a reaper")??;
    }
    ensure!(
        total as usize == JOBS,
        "the reapers reported {total} expired leases for {JOBS} leased jobs"
    );
    for id in ids {
        let job = stores[2].get_job(id).await?;
        ensure!(
            job.state() == JobState::Pending && job.lifecycle.attempt == 1,
            "job {id} should be pending after exactly one lost attempt, is {} at attempt {}",
            job.state(),
            job.lifecycle.attempt
        );
    }
    Ok(())
}

fn is_unavailable(outcome: &Result<impl std::fmt::Debug, StoreError>) -> bool {
    matches!(outcome, Err(StoreError::Unavailable(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_whose_database_goes_away_is_unavailable_and_recovers_by_itself()
-> anyhow::Result<()> {
    let cluster = Arc::new(
        tokio::task::spawn_blocking(PostgresCluster::start)
            .await
            .context("join the cluster start")??,
    );
    let url = tokio::task::spawn_blocking({
        let cluster = Arc::clone(&cluster);
        move || cluster.create_database()
    })
    .await
    .context("join createdb")??;
    let store = open_store(&url).await?;
    let other = open_store(&url).await?;
    let runner = register_runner(store.as_ref(), "outage").await?;
    let acknowledged = submit_one(store.as_ref(), crate::conformance::spec("outage"), T0).await?;

    tokio::task::spawn_blocking({
        let cluster = Arc::clone(&cluster);
        move || cluster.stop()
    })
    .await
    .context("join the cluster stop")??;
    let ping = store.ping().await;
    ensure!(
        is_unavailable(&ping),
        "ping with the database down: {ping:?}"
    );
    let claimed = store
        .claim_jobs(
            crate::conformance::claim_request(runner, &["outage"], 1),
            at(1_000),
        )
        .await;
    ensure!(
        is_unavailable(&claimed),
        "claim with the database down: {claimed:?}"
    );
    let submitted = store
        .submit_jobs(vec![crate::conformance::new_job(
            crate::conformance::spec("outage"),
            at(1_000),
        )])
        .await;
    ensure!(
        is_unavailable(&submitted),
        "submit with the database down: {submitted:?}"
    );

    let mut signal = store.pending_signal();
    signal.borrow_and_update();
    tokio::task::spawn_blocking({
        let cluster = Arc::clone(&cluster);
        move || cluster.start_again()
    })
    .await
    .context("join the cluster start")??;
    // The same store objects work again: no restart of the coordinator.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match store.ping().await {
            Ok(()) => break,
            Err(error) if tokio::time::Instant::now() > deadline => {
                bail!("the store did not recover within 15 s: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let job = store.get_job(acknowledged.id).await?;
    ensure!(
        job.state() == JobState::Pending,
        "the acknowledged job survived"
    );
    // The wake-up listener reconnected too: a submit through the other store reaches this one.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let recovered = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            signal.borrow_and_update();
            submit_one(other.as_ref(), crate::conformance::spec("after"), at(2_000)).await?;
            if tokio::time::timeout(Duration::from_secs(1), signal.changed())
                .await
                .is_ok()
            {
                return anyhow::Ok(());
            }
        }
    })
    .await;
    ensure!(
        matches!(recovered, Ok(Ok(()))),
        "the wake-up listener did not come back: {recovered:?}"
    );
    let claimed = claim(store.as_ref(), runner, &["outage"], 1, at(3_000)).await?;
    ensure!(
        claimed.len() == 1 && claimed[0].job.id == acknowledged.id,
        "the job acknowledged before the outage is claimed after it"
    );
    Ok(())
}

#[tokio::test]
async fn jobs_from_before_organizations_move_into_default() -> anyhow::Result<()> {
    let url = muster_test_support::temp_postgres_database().await?;
    let store = open_store(&url).await?;
    submit_many(store.as_ref(), "old", 3, T0).await?;
    drop(store);

    // Back to version 7: no organizations, no user tokens, jobs without an organization.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .context("connect to rewrite the schema")?;
    let connection = tokio::spawn(connection);
    client
        .batch_execute(concat!(
            "BEGIN;",
            undo_migration_14!(),
            undo_migration_13!(),
            undo_migration_12!(),
            undo_migration_11!(),
            undo_migration_10!(),
            undo_migration_9!(),
            undo_migration_8!(),
            "UPDATE muster_schema SET version = 7 WHERE component = 'store';
             COMMIT;"
        ))
        .await
        .context("rewrite the schema as version 7")?;

    let store = open_store(&url).await?;
    let default = store
        .get_organization("default")
        .await?
        .context("the upgrade creates the default organization")?;
    ensure!(default.allow_shared_runners, "{default:?}");
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE organization_id = 'default') FROM jobs",
            &[],
        )
        .await?;
    let (jobs, in_default): (i64, i64) = (row.get(0), row.get(1));
    ensure!(
        jobs == 3 && in_default == 3,
        "every job from before is in default: {in_default} of {jobs}"
    );
    let version: i32 = client
        .query_one(
            "SELECT version FROM muster_schema WHERE component = 'store'",
            &[],
        )
        .await?
        .get(0);
    ensure!(version == 14, "the schema is at version 14, got {version}");
    drop(client);
    connection.await.context("join the connection task")??;
    Ok(())
}
