//! The PostgreSQL schema, as numbered migrations per component, tracked in `muster_schema`.
//!
//! Several coordinators may start at once against one database: each applies migrations under
//! a transaction-scoped advisory lock, so exactly one of them applies a given migration and the
//! others see it done.

use deadpool_postgres::Client;

use super::map_postgres_error;
use crate::StoreError;

/// The advisory lock key every coordinator takes while migrating ("muster" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6d75_7374_6572;

/// The job store's migrations. Applied in order, each once; never edit one that has shipped.
pub(crate) const STORE_MIGRATIONS: &[&str] = &[
    r#"
-- Every job's record, for the life of the job and after. Its only indexes are on columns that
-- never change, so state changes are HOT updates, and finished jobs piling up cost the claim path
-- nothing: claims never scan this table. HOT needs room on the row's own page: jobs submitted
-- together share pages and are claimed and completed together, so every row on a page gets a
-- new version at once, twice. A fill factor of 30 leaves room for both (at 70, half of the
-- updates measured were not HOT and wrote three index entries each).
CREATE TABLE jobs (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id BYTEA NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    state SMALLINT NOT NULL,
    priority INTEGER NOT NULL,
    payload TEXT NOT NULL,
    requirements TEXT,
    idempotency_key TEXT,
    max_attempts BIGINT NOT NULL,
    timeout_s BIGINT NOT NULL,
    lease_ttl_s BIGINT NOT NULL,
    backoff_base_s BIGINT NOT NULL,
    attempt BIGINT NOT NULL DEFAULT 0,
    lease_epoch BIGINT NOT NULL DEFAULT 0,
    runner_id BYTEA,
    run_after BIGINT NOT NULL,
    lease_expires_at BIGINT,
    attempt_deadline_at BIGINT,
    cancel_deadline_at BIGINT,
    created_at BIGINT NOT NULL,
    claimed_at BIGINT,
    started_at BIGINT,
    finished_at BIGINT,
    progress_percent DOUBLE PRECISION NOT NULL DEFAULT 0,
    progress_message TEXT,
    result TEXT,
    error_reason TEXT,
    error_message TEXT,
    log_next_seq BIGINT NOT NULL DEFAULT 0,
    log_bytes BIGINT NOT NULL DEFAULT 0,
    log_truncated BOOLEAN NOT NULL DEFAULT false,
    inputs TEXT,
    outputs TEXT
) WITH (fillfactor = 30);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_kind ON jobs (kind, seq);

-- The claimable jobs, and only they: a row exists exactly while its job is pending. Claims read
-- these two indexes alone, in claim order per kind; a claimed job's row is deleted, so the
-- indexes stay as small as the queue. Jobs without requirements (any runner of the kind can take
-- them) are kept apart so no pile of jobs nobody can take hides them; run_after is a key column
-- so jobs waiting out a retry backoff are skipped inside the index. The table churns (a row per
-- claim): the coordinators vacuum it themselves every few thousand changes, and autovacuum is
-- set to a fixed count of dead rows instead of a fraction as a backstop.
CREATE TABLE job_queue (
    seq BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    run_after BIGINT NOT NULL,
    requirements TEXT
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
        autovacuum_vacuum_cost_delay = 0, autovacuum_analyze_scale_factor = 0.02);
CREATE INDEX job_queue_open ON job_queue (kind, priority, seq, run_after) WHERE requirements IS NULL;
CREATE INDEX job_queue_constrained ON job_queue (kind, priority, seq, run_after) WHERE requirements IS NOT NULL;

-- The leased jobs (claimed, running, cancelling), and only they, by their next deadline: what
-- the reaper reads, and what a runner holds (few rows: read without an index by runner). Like
-- job_queue it churns, and the coordinators vacuum both themselves (see `vacuum_queue_tables`).
CREATE TABLE job_leases (
    seq BIGINT PRIMARY KEY,
    runner_id BYTEA NOT NULL,
    reap_at BIGINT NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
        autovacuum_vacuum_cost_delay = 0);
CREATE INDEX job_leases_reap ON job_leases (reap_at);

CREATE TABLE job_logs (
    job_seq BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    level SMALLINT NOT NULL,
    message TEXT NOT NULL,
    metadata TEXT,
    PRIMARY KEY (job_seq, seq)
);

CREATE TABLE job_dags (
    job_seq BIGINT PRIMARY KEY,
    dag TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE runners (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id BYTEA NOT NULL UNIQUE,
    name TEXT NOT NULL,
    organization_id TEXT,
    labels TEXT NOT NULL,
    kinds TEXT NOT NULL DEFAULT '[]',
    offer TEXT,
    hostname TEXT,
    version TEXT,
    draining BOOLEAN NOT NULL DEFAULT false,
    token_hash BYTEA,
    created_at BIGINT NOT NULL,
    last_heartbeat_at BIGINT,
    last_seen_at BIGINT,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX runners_token ON runners (token_hash) WHERE token_hash IS NOT NULL;
"#,
    r#"
-- Leases are found by lease checks instead of a row per lease: a row per job leased cost an
-- insert into a table and two indexes at every claim and a delete at every completion, about a
-- sixth of the database's work per job. A check lists the jobs one claim leased to one runner and
-- when to look at them again (never later than the first of their deadlines); the reaper then
-- reads those jobs: finished ones are forgotten, passed deadlines applied, and jobs still leased
-- get a new check. A completion writes nothing here. Every leased job is in at least one check
-- of its runner due no later than its deadline; checks are looked at a few seconds after the
-- claim at the latest, so the table stays a few seconds of claims long, and counting the jobs
-- a runner holds reads that runner's checks.
CREATE TABLE lease_checks (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    runner_id BYTEA NOT NULL,
    check_at BIGINT NOT NULL,
    seqs BIGINT[] NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_cost_delay = 0);
CREATE INDEX lease_checks_due ON lease_checks (check_at);
CREATE INDEX lease_checks_runner ON lease_checks (runner_id);
INSERT INTO lease_checks (runner_id, check_at, seqs)
    SELECT runner_id, min(reap_at), array_agg(seq ORDER BY seq) FROM job_leases GROUP BY runner_id;
DROP TABLE job_leases;
"#,
    r#"
-- Failed and cancelled jobs, so a list of them reads these instead of walking the history: an
-- index on jobs.state would make every state change a non-HOT update, which costs the hot path
-- far more. Kept by triggers on jobs, so whatever changes a job's state keeps this right; the
-- WHEN conditions make the triggers cost nothing for the transitions that do not concern them.
CREATE TABLE jobs_unsuccessful (
    seq BIGINT PRIMARY KEY,
    state SMALLINT NOT NULL
);
INSERT INTO jobs_unsuccessful (seq, state) SELECT seq, state FROM jobs WHERE state IN (5, 6);
CREATE FUNCTION muster_track_unsuccessful() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.state IN (5, 6) THEN
        DELETE FROM jobs_unsuccessful WHERE seq = OLD.seq;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.state IN (5, 6) THEN
        INSERT INTO jobs_unsuccessful (seq, state) VALUES (NEW.seq, NEW.state)
            ON CONFLICT (seq) DO UPDATE SET state = excluded.state;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_unsuccessful_inserted AFTER INSERT ON jobs
    FOR EACH ROW WHEN (NEW.state IN (5, 6)) EXECUTE FUNCTION muster_track_unsuccessful();
CREATE TRIGGER jobs_unsuccessful_updated AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state AND (OLD.state IN (5, 6) OR NEW.state IN (5, 6)))
    EXECUTE FUNCTION muster_track_unsuccessful();
CREATE TRIGGER jobs_unsuccessful_deleted AFTER DELETE ON jobs
    FOR EACH ROW WHEN (OLD.state IN (5, 6)) EXECUTE FUNCTION muster_track_unsuccessful();
"#,
    r#"
-- Who made the coordinators store each artifact, for the upload quotas: a row per artifact an
-- upload stored anew (a re-upload of stored bytes adds none), gone when the collection deletes
-- the bytes. runner_id is the uploading runner, NULL for a user's upload. artifact_usage holds
-- running totals per runner, and under the empty key for all artifacts, kept by a trigger
-- whatever writes artifacts, so an upload reads two rows instead of summing every artifact.
CREATE TABLE artifacts (
    id BYTEA PRIMARY KEY,
    size BIGINT NOT NULL,
    runner_id BYTEA,
    created_at BIGINT NOT NULL
);
CREATE TABLE artifact_usage (
    uploader BYTEA PRIMARY KEY,
    bytes BIGINT NOT NULL,
    count BIGINT NOT NULL
);
INSERT INTO artifact_usage (uploader, bytes, count) VALUES ('\x', 0, 0);
-- The totals row is changed first, always: every change of usage locks it before any runner's
-- row, so transactions changing usage queue on it and never lock runners' rows in two orders.
-- A runner's row goes once nothing is charged to it.
CREATE FUNCTION muster_count_artifacts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE artifact_usage SET bytes = bytes - OLD.size, count = count - 1
            WHERE uploader = '\x'::bytea;
        IF OLD.runner_id IS NOT NULL THEN
            UPDATE artifact_usage SET bytes = bytes - OLD.size, count = count - 1
                WHERE uploader = OLD.runner_id;
            DELETE FROM artifact_usage WHERE uploader = OLD.runner_id AND count <= 0;
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO artifact_usage (uploader, bytes, count) VALUES ('\x'::bytea, NEW.size, 1)
            ON CONFLICT (uploader) DO UPDATE
            SET bytes = artifact_usage.bytes + excluded.bytes, count = artifact_usage.count + 1;
        IF NEW.runner_id IS NOT NULL THEN
            INSERT INTO artifact_usage (uploader, bytes, count) VALUES (NEW.runner_id, NEW.size, 1)
                ON CONFLICT (uploader) DO UPDATE
                SET bytes = artifact_usage.bytes + excluded.bytes, count = artifact_usage.count + 1;
        END IF;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER artifacts_counted AFTER INSERT OR DELETE OR UPDATE OF size, runner_id ON artifacts
    FOR EACH ROW EXECUTE FUNCTION muster_count_artifacts();
"#,
    r#"
-- Runner identity. runner_keys is the allowlist of runner keys, listed oldest first by seq (the
-- order they were added); audit_log the security events, listed newest first, all of them or
-- one action's (hence the index). detail is JSON text, like every other JSON column here.
CREATE TABLE runner_keys (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fingerprint TEXT NOT NULL UNIQUE,
    public_key TEXT NOT NULL,
    note TEXT,
    organization_id TEXT,
    created_at BIGINT NOT NULL
);
CREATE TABLE audit_log (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_action ON audit_log (action, seq);
"#,
    r#"
-- Job kinds' result rules, listed by kind. kind is collated "C" so that it lists in byte order,
-- as on SQLite, whatever the database's locale. result_schema is JSON text. Changes are
-- audited in audit_log.
CREATE TABLE kind_settings (
    kind TEXT COLLATE "C" PRIMARY KEY,
    result_schema TEXT,
    require_signed_results BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL
);
"#,
    r#"
-- Runners that registered themselves with a key, and results signed by one. enrollment is
-- 'enrolled', 'pending' or 'rejected' (rows from before are enrolled). key_fingerprint is unique
-- among live runners: the same key registering again is the same runner. bound_capabilities
-- (JSON capabilities) and bound_kinds (a JSON list) are what it may claim with, NULL when its
-- claims are trusted. A renewed token's predecessor stays in previous_token_hash until
-- previous_token_expires_at. registered_at is the signed timestamp of the last registration
-- accepted, which the next must be later than, so a registration is accepted once by every
-- coordinator sharing the database. result_signature on a job is the verified signature of its
-- result, as JSON.
ALTER TABLE runners ADD COLUMN enrollment TEXT NOT NULL DEFAULT 'enrolled';
ALTER TABLE runners ADD COLUMN key_fingerprint TEXT;
ALTER TABLE runners ADD COLUMN public_key TEXT;
ALTER TABLE runners ADD COLUMN bound_capabilities TEXT;
ALTER TABLE runners ADD COLUMN bound_kinds TEXT;
ALTER TABLE runners ADD COLUMN token_expires_at BIGINT;
ALTER TABLE runners ADD COLUMN previous_token_hash BYTEA;
ALTER TABLE runners ADD COLUMN previous_token_expires_at BIGINT;
ALTER TABLE runners ADD COLUMN registered_at BIGINT;
CREATE UNIQUE INDEX runners_key ON runners (key_fingerprint)
    WHERE key_fingerprint IS NOT NULL AND deleted_at IS NULL;
CREATE UNIQUE INDEX runners_previous_token ON runners (previous_token_hash)
    WHERE previous_token_hash IS NOT NULL;
ALTER TABLE jobs ADD COLUMN result_signature TEXT;
"#,
    r#"
-- Organizations and user tokens. 'default' always exists, and every job from before is in it;
-- runners keep organization_id NULL (cluster-scoped), as the bootstrap admin that created them
-- makes them. Organizations are listed oldest first by seq; names are unique, compared exactly
-- (collated "C", as on SQLite). A user token's organization_id NULL means every organization;
-- its role is 'viewer', 'submitter', 'operator' or 'admin'; a revoked token's row is deleted.
-- audit_log.organization_id is the organization an event belongs to, NULL when it is
-- cluster-wide.
CREATE TABLE organizations (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT COLLATE "C" NOT NULL UNIQUE,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    allow_shared_runners BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);
INSERT INTO organizations (id, name, allow_shared_runners, created_at)
    VALUES ('default', 'default', true, (extract(epoch FROM now()) * 1000)::BIGINT);
CREATE TABLE user_tokens (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id BYTEA NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    organization_id TEXT,
    token_hash BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    last_used_at BIGINT
);
CREATE INDEX user_tokens_organization ON user_tokens (organization_id, seq);
ALTER TABLE jobs ADD COLUMN organization_id TEXT NOT NULL DEFAULT 'default';
ALTER TABLE audit_log ADD COLUMN organization_id TEXT;
"#,
    r#"
-- Claims by organization. A runner of an organization claims its organization's jobs through
-- the _own indexes (organization first); a cluster-scoped runner claims through the others,
-- which hold only jobs whose organization lets shared runners take them (shared_runners,
-- copied from the organization at submission), so neither walks past jobs it may not take
-- however many organizations there are. The queue rows carry both, as claims read only them.
-- Jobs of 'default' (which always lets shared runners in) are left out of the _own indexes, so
-- a single-team install maintains one claim index as before; runners of 'default' read the
-- shared ones.
ALTER TABLE jobs ADD COLUMN shared_runners BOOLEAN NOT NULL DEFAULT true;
ALTER TABLE job_queue ADD COLUMN organization_id TEXT NOT NULL DEFAULT 'default';
ALTER TABLE job_queue ADD COLUMN shared_runners BOOLEAN NOT NULL DEFAULT true;
UPDATE job_queue SET organization_id = jobs.organization_id, shared_runners = jobs.shared_runners
    FROM jobs WHERE jobs.seq = job_queue.seq
    AND (jobs.organization_id, jobs.shared_runners)
        IS DISTINCT FROM (job_queue.organization_id, job_queue.shared_runners);
DROP INDEX job_queue_open;
DROP INDEX job_queue_constrained;
CREATE INDEX job_queue_open ON job_queue (kind, priority, seq, run_after)
    WHERE requirements IS NULL AND shared_runners;
CREATE INDEX job_queue_constrained ON job_queue (kind, priority, seq, run_after)
    WHERE requirements IS NOT NULL AND shared_runners;
CREATE INDEX job_queue_open_own ON job_queue (organization_id, kind, priority, seq, run_after)
    WHERE requirements IS NULL AND organization_id <> 'default';
CREATE INDEX job_queue_constrained_own ON job_queue (organization_id, kind, priority, seq, run_after)
    WHERE requirements IS NOT NULL AND organization_id <> 'default';
"#,
    r#"
-- Idempotency keys are unique within an organization, not across them: the same key in two
-- organizations names two jobs, so a submission never answers another organization's. An
-- organization's admins read its audit entries through their own index.
DROP INDEX jobs_idempotency;
CREATE UNIQUE INDEX jobs_idempotency ON jobs (organization_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX audit_log_organization ON audit_log (organization_id, seq)
    WHERE organization_id IS NOT NULL;
-- Which organizations may read an artifact: one of its tokens uploaded it, or one of its jobs
-- names it.
CREATE TABLE artifact_organizations (
    artifact_id BYTEA NOT NULL,
    organization_id TEXT NOT NULL,
    PRIMARY KEY (artifact_id, organization_id)
);
"#,
    r#"
-- Dashboard sessions. Only the SHA-256 of a session's secret is kept; a session acts as the
-- user token it was opened with (deleted with it) or as the bootstrap admin holding the admin
-- token of admin_token_hash.
CREATE TABLE sessions (
    secret_hash BYTEA PRIMARY KEY,
    user_token_id BYTEA,
    admin_token_hash BYTEA,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user_token ON sessions (user_token_id) WHERE user_token_id IS NOT NULL;
CREATE INDEX sessions_expiry ON sessions (expires_at);
"#,
    r#"
-- The attempt history. The job row holds only its current attempt; an attempt that ends without
-- completing the job (failed, lost, timed out, cancelled) is kept here when it ends, named by its
-- lease epoch (epochs only grow, a user's retry included). Deleted with its job.
CREATE TABLE job_attempts (
    job_seq BIGINT NOT NULL,
    lease_epoch BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    runner_id BYTEA,
    claimed_at BIGINT,
    started_at BIGINT,
    ended_at BIGINT,
    outcome TEXT NOT NULL,
    error_reason TEXT,
    error_message TEXT,
    PRIMARY KEY (job_seq, lease_epoch)
);
"#,
    r#"
-- The overview's last hour, by the minute: what ended how often, added up by every coordinator
-- sharing the database, so the overview is the fleet's and a restart loses none of it. Minutes
-- older than two hours are deleted as new ones are added.
CREATE TABLE outcome_minutes (
    minute BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (minute, outcome)
);
"#,
    r#"
-- The workload registry. A workload's id is the caller's; `seq` orders lists newest first. Its
-- history holds one row per status it took, so it stays a handful of rows.
CREATE TABLE workloads (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    runner_id BYTEA NOT NULL,
    thread_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    status SMALLINT NOT NULL,
    status_reason TEXT NOT NULL,
    containers TEXT NOT NULL,
    ziti_identity_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX workloads_thread ON workloads (thread_id, seq);
CREATE INDEX workloads_runner ON workloads (runner_id, seq);
CREATE INDEX workloads_organization ON workloads (organization_id, seq);
CREATE INDEX workloads_status ON workloads (status, seq);
CREATE TABLE workload_history (
    workload_seq BIGINT NOT NULL REFERENCES workloads (seq) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    status SMALLINT NOT NULL,
    reason TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (workload_seq, position)
);
"#,
];

/// Bring `component`'s schema up to date: apply the migrations of `migrations` not yet applied,
/// each in the same transaction as the record of it.
pub(crate) async fn migrate_component(
    client: &mut Client,
    component: &str,
    migrations: &[&str],
) -> Result<(), StoreError> {
    let transaction = client.transaction().await.map_err(map_postgres_error)?;
    // "already exists, skipping" notices from every start are noise in the coordinator's log.
    transaction
        .batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(map_postgres_error)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(map_postgres_error)?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS muster_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)",
        )
        .await
        .map_err(map_postgres_error)?;
    let applied: i32 = transaction
        .query_opt(
            "SELECT version FROM muster_schema WHERE component = $1",
            &[&component],
        )
        .await
        .map_err(map_postgres_error)?
        .map(|row| row.get(0))
        .unwrap_or(0);
    let applied = usize::try_from(applied).unwrap_or(0);
    if applied > migrations.len() {
        return Err(StoreError::Unavailable(format!(
            "the database's {component} schema is version {applied}, newer than this muster knows ({}); upgrade muster",
            migrations.len()
        )));
    }
    for (index, migration) in migrations.iter().enumerate().skip(applied) {
        transaction
            .batch_execute(migration)
            .await
            .map_err(map_postgres_error)?;
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        transaction
            .execute(
                "INSERT INTO muster_schema (component, version) VALUES ($1, $2) \
                 ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                &[&component, &version],
            )
            .await
            .map_err(map_postgres_error)?;
    }
    transaction.commit().await.map_err(map_postgres_error)
}
