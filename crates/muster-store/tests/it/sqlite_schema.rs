//! The SQLite schema's migrations: a database made by an older muster is upgraded in place.

use anyhow::{Context, ensure};
use muster_core::{ArtifactId, JobSpec, Timestamp};
use muster_store::JobStore;
use muster_store::sqlite::{SqliteConfig, SqliteStore};

/// The statements that take the schema from version 14 back to version 13: no workloads.
macro_rules! undo_migration_14 {
    () => {
        "DROP TABLE workload_history;
         DROP TABLE workloads;"
    };
}

/// The statements that take the schema from version 13 back to version 12: no outcome totals.
macro_rules! undo_migration_13 {
    () => {
        "DROP TABLE outcome_minutes;"
    };
}

/// The statements that take the schema from version 12 back to version 11: no attempt history.
macro_rules! undo_migration_12 {
    () => {
        "DROP TABLE job_attempts;"
    };
}

/// The statements that take the schema from version 11 back to version 10: no sessions.
macro_rules! undo_migration_11 {
    () => {
        "DROP TABLE sessions;"
    };
}

/// The statements that take the schema from version 10 back to version 9: idempotency keys
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

/// The statements that take the schema from version 9 back to version 8: the claim indexes
/// without organizations.
macro_rules! undo_migration_9 {
    () => {
        "DROP INDEX jobs_pending_open_own;
         DROP INDEX jobs_pending_constrained_own;
         DROP INDEX jobs_pending_open;
         DROP INDEX jobs_pending_constrained;
         ALTER TABLE jobs DROP COLUMN shared_runners;
         CREATE INDEX jobs_pending_open ON jobs (kind, priority, seq, run_after)
             WHERE state = 0 AND requirements IS NULL;
         CREATE INDEX jobs_pending_constrained ON jobs (kind, priority, seq, run_after)
             WHERE state = 0 AND requirements IS NOT NULL;"
    };
}

/// The statements that take the schema from version 8 back to version 7: no organizations, no
/// user tokens, jobs and audit entries without an organization.
macro_rules! undo_migration_8 {
    () => {
        "DROP TABLE organizations;
         DROP TABLE user_tokens;
         ALTER TABLE jobs DROP COLUMN organization_id;
         ALTER TABLE audit_log DROP COLUMN organization_id;"
    };
}

#[tokio::test]
async fn a_version_1_database_is_upgraded_in_place_keeping_its_jobs() -> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let config = SqliteConfig {
        path: directory.path().join("muster.db"),
        log_cap_bytes: 1 << 20,
    };
    let now = Timestamp(1_800_000_000_000);
    let old_job = {
        let store = SqliteStore::open(&config)?;
        let submitted = store
            .submit_jobs(vec![muster_core::NewJob {
                id: muster_core::JobId::new(now, 1),
                created_at: now,
                spec: JobSpec::with_defaults("old"),
                organization: Default::default(),
            }])
            .await?;
        submitted[0].job.clone()
    };
    // Turn the file back into what version 1 of the schema made: no artifact columns.
    {
        let conn = rusqlite::Connection::open(&config.path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(concat!(
            undo_migration_14!(),
            undo_migration_13!(),
            undo_migration_12!(),
            undo_migration_11!(),
            undo_migration_10!(),
            undo_migration_9!(),
            undo_migration_8!(),
            "
             ALTER TABLE jobs DROP COLUMN inputs;
             ALTER TABLE jobs DROP COLUMN outputs;
             DROP INDEX jobs_failed;
             DROP INDEX jobs_cancelled;
             DROP TABLE artifacts;
             DROP TABLE artifact_usage;
             DROP TABLE runner_keys;
             DROP TABLE audit_log;
             DROP TABLE kind_settings;
             DROP INDEX runners_key;
             DROP INDEX runners_previous_token;
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
             PRAGMA user_version = 1;"
        ))
        .context("downgrade the schema to version 1")?;
    }
    let store = SqliteStore::open(&config).context("open a version 1 database")?;
    ensure!(
        store.get_job(old_job.id).await? == old_job,
        "the job made before the upgrade reads back unchanged"
    );
    let input = ArtifactId::from_digest([9; 32]);
    let submitted = store
        .submit_jobs(vec![muster_core::NewJob {
            id: muster_core::JobId::new(now, 2),
            created_at: now,
            spec: JobSpec {
                inputs: vec![input],
                ..JobSpec::with_defaults("new")
            },
            organization: Default::default(),
        }])
        .await?;
    ensure!(store.get_job(submitted[0].job.id).await?.inputs == vec![input]);
    drop(store);
    let conn = rusqlite::Connection::open(&config.path)?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    ensure!(version == 14, "the schema is at version 14, got {version}");
    let identity_tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
         AND name IN ('runner_keys', 'audit_log')",
        [],
        |row| row.get(0),
    )?;
    ensure!(identity_tables == 2, "the runner identity tables exist");
    let kind_tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'kind_settings'",
        [],
        |row| row.get(0),
    )?;
    ensure!(kind_tables == 1, "the kind settings table exists");
    let artifact_tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
         AND name IN ('artifacts', 'artifact_usage')",
        [],
        |row| row.get(0),
    )?;
    ensure!(artifact_tables == 2, "the artifact record tables exist");
    let indexes: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' \
         AND name IN ('jobs_failed', 'jobs_cancelled')",
        [],
        |row| row.get(0),
    )?;
    ensure!(
        indexes == 2,
        "the indexes of failed and cancelled jobs exist"
    );
    // A list of failed jobs reads the partial index, not the table.
    let plan: String = conn.query_row(
        "EXPLAIN QUERY PLAN SELECT seq FROM jobs WHERE state = 5 ORDER BY seq DESC LIMIT 51",
        [],
        |row| row.get(3),
    )?;
    ensure!(plan.contains("jobs_failed"), "query plan: {plan}");
    Ok(())
}

#[tokio::test]
async fn jobs_and_runners_from_before_organizations_move_into_default() -> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let config = SqliteConfig {
        path: directory.path().join("muster.db"),
        log_cap_bytes: 1 << 20,
    };
    let now = Timestamp(1_800_000_000_000);
    {
        let store = SqliteStore::open(&config)?;
        let jobs = (1..=3)
            .map(|bits| muster_core::NewJob {
                id: muster_core::JobId::new(now, bits),
                created_at: now,
                spec: JobSpec::with_defaults("old"),
                organization: Default::default(),
            })
            .collect();
        store.submit_jobs(jobs).await?;
    }
    // Back to version 7: no organizations, no user tokens, jobs without an organization.
    {
        let conn = rusqlite::Connection::open(&config.path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(concat!(
            undo_migration_14!(),
            undo_migration_13!(),
            undo_migration_12!(),
            undo_migration_11!(),
            undo_migration_10!(),
            undo_migration_9!(),
            undo_migration_8!(),
            "PRAGMA user_version = 7;"
        ))
        .context("downgrade the schema to version 7")?;
    }
    let store = SqliteStore::open(&config).context("open a version 7 database")?;
    let default = muster_store::OrganizationStore::get_organization(&store, "default")
        .await?
        .context("the upgrade creates the default organization")?;
    ensure!(default.allow_shared_runners, "{default:?}");
    drop(store);
    let conn = rusqlite::Connection::open(&config.path)?;
    let (jobs, in_default): (i64, i64) = conn.query_row(
        "SELECT count(*), count(*) FILTER (WHERE organization_id = 'default') FROM jobs",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    ensure!(
        jobs == 3 && in_default == 3,
        "every job from before is in default: {in_default} of {jobs}"
    );
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    ensure!(version == 14, "the schema is at version 14, got {version}");
    Ok(())
}
