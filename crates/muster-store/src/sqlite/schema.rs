//! The SQLite schema, as numbered migrations tracked in `PRAGMA user_version`.

use rusqlite::Connection;

/// Applied in order, each once; never edit one that has shipped, add a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY,
    id BLOB NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    state INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    payload TEXT NOT NULL,
    requirements TEXT,
    idempotency_key TEXT,
    max_attempts INTEGER NOT NULL,
    timeout_s INTEGER NOT NULL,
    lease_ttl_s INTEGER NOT NULL,
    backoff_base_s INTEGER NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    lease_epoch INTEGER NOT NULL DEFAULT 0,
    runner_id BLOB,
    run_after INTEGER NOT NULL,
    lease_expires_at INTEGER,
    attempt_deadline_at INTEGER,
    cancel_deadline_at INTEGER,
    reap_at INTEGER,
    created_at INTEGER NOT NULL,
    claimed_at INTEGER,
    started_at INTEGER,
    finished_at INTEGER,
    progress_percent REAL NOT NULL DEFAULT 0,
    progress_message TEXT,
    result TEXT,
    error_reason TEXT,
    error_message TEXT,
    log_next_seq INTEGER NOT NULL DEFAULT 0,
    log_bytes INTEGER NOT NULL DEFAULT 0,
    log_truncated INTEGER NOT NULL DEFAULT 0
);
-- The claim path reads only these two indexes: they hold pending jobs alone, in claim order per
-- kind, so their cost does not grow with finished jobs. Jobs without requirements (any runner of
-- the kind can take them) are kept apart so no pile of jobs nobody can take hides them; run_after
-- is a column so jobs waiting out a retry backoff are skipped without reading their rows.
CREATE INDEX jobs_pending_open ON jobs (kind, priority, seq, run_after)
    WHERE state = 0 AND requirements IS NULL;
CREATE INDEX jobs_pending_constrained ON jobs (kind, priority, seq, run_after)
    WHERE state = 0 AND requirements IS NOT NULL;
-- The reaper reads only this index: leased jobs by their next deadline.
CREATE INDEX jobs_leased ON jobs (reap_at) WHERE state IN (1, 2, 3);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE job_logs (
    job_seq INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    level INTEGER NOT NULL,
    message TEXT NOT NULL,
    metadata TEXT,
    PRIMARY KEY (job_seq, seq)
) WITHOUT ROWID;

CREATE TABLE job_dags (
    job_seq INTEGER PRIMARY KEY,
    dag TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE runners (
    seq INTEGER PRIMARY KEY,
    id BLOB NOT NULL UNIQUE,
    name TEXT NOT NULL,
    organization_id TEXT,
    labels TEXT NOT NULL,
    kinds TEXT NOT NULL DEFAULT '[]',
    offer TEXT,
    hostname TEXT,
    version TEXT,
    draining INTEGER NOT NULL DEFAULT 0,
    token_hash BLOB,
    created_at INTEGER NOT NULL,
    last_heartbeat_at INTEGER,
    last_seen_at INTEGER,
    deleted_at INTEGER
);
CREATE UNIQUE INDEX runners_token ON runners (token_hash) WHERE token_hash IS NOT NULL;
"#,
    // 2: artifacts a job names. The bytes live in the blob store, not here. Both are JSON and NULL
    // when empty (most jobs have none), so the rows of such jobs do not grow: `inputs` a list of
    // ids in submission order, `outputs` an object from output name to id.
    r#"
ALTER TABLE jobs ADD COLUMN inputs TEXT;
ALTER TABLE jobs ADD COLUMN outputs TEXT;
"#,
    // 3: failed and cancelled jobs by age, so a list of them does not walk the whole history.
    // Partial: a row is in an index only while in its state, so other transitions pay nothing.
    // Lists name the state as a literal, which SQLite needs to pick a partial index.
    r#"
CREATE INDEX jobs_failed ON jobs (seq) WHERE state = 5;
CREATE INDEX jobs_cancelled ON jobs (seq) WHERE state = 6;
"#,
    // 4: who made the coordinator store each artifact, for the upload quotas: a row per artifact
    // an upload stored anew (a re-upload of stored bytes adds none), gone when the collection
    // deletes the bytes. `runner_id` is the uploading runner, NULL for a user's upload.
    // `artifact_usage` holds running totals per runner, and under the empty blob for all
    // artifacts, kept by triggers whatever writes `artifacts`, so an upload reads two rows
    // instead of summing every artifact. A runner's row goes once it has nothing charged.
    r#"
CREATE TABLE artifacts (
    id BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    runner_id BLOB,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE artifact_usage (
    uploader BLOB PRIMARY KEY,
    bytes INTEGER NOT NULL,
    count INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER artifacts_counted AFTER INSERT ON artifacts BEGIN
    INSERT INTO artifact_usage (uploader, bytes, count) VALUES (X'', NEW.size, 1)
        ON CONFLICT (uploader) DO UPDATE SET bytes = bytes + excluded.bytes, count = count + 1;
    INSERT INTO artifact_usage (uploader, bytes, count)
        SELECT NEW.runner_id, NEW.size, 1 WHERE NEW.runner_id IS NOT NULL
        ON CONFLICT (uploader) DO UPDATE SET bytes = bytes + excluded.bytes, count = count + 1;
END;
CREATE TRIGGER artifacts_uncounted AFTER DELETE ON artifacts BEGIN
    UPDATE artifact_usage SET bytes = bytes - OLD.size, count = count - 1
        WHERE uploader = X'' OR uploader = OLD.runner_id;
    DELETE FROM artifact_usage WHERE uploader = OLD.runner_id AND count <= 0;
END;
CREATE TRIGGER artifacts_recounted AFTER UPDATE OF size, runner_id ON artifacts BEGIN
    UPDATE artifact_usage SET bytes = bytes - OLD.size, count = count - 1
        WHERE uploader = X'' OR uploader = OLD.runner_id;
    DELETE FROM artifact_usage WHERE uploader = OLD.runner_id AND count <= 0;
    INSERT INTO artifact_usage (uploader, bytes, count) VALUES (X'', NEW.size, 1)
        ON CONFLICT (uploader) DO UPDATE SET bytes = bytes + excluded.bytes, count = count + 1;
    INSERT INTO artifact_usage (uploader, bytes, count)
        SELECT NEW.runner_id, NEW.size, 1 WHERE NEW.runner_id IS NOT NULL
        ON CONFLICT (uploader) DO UPDATE SET bytes = bytes + excluded.bytes, count = count + 1;
END;
"#,
    // 5: runner identity. `runner_keys` is the allowlist of runner keys, listed oldest first by
    // `seq` (the order they were added); `audit_log` the security events, listed newest first,
    // all of them or one action's (hence the index). `detail` is JSON text.
    r#"
CREATE TABLE runner_keys (
    seq INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL UNIQUE,
    public_key TEXT NOT NULL,
    note TEXT,
    organization_id TEXT,
    created_at INTEGER NOT NULL
);
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_action ON audit_log (action, seq);
"#,
    // 6: job kinds' result rules, listed by kind (the primary key, in byte order).
    // `result_schema` is JSON text; `require_signed_results` 0 or 1. Changes are audited in
    // `audit_log`.
    r#"
CREATE TABLE kind_settings (
    kind TEXT PRIMARY KEY NOT NULL,
    result_schema TEXT,
    require_signed_results INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
"#,
    // 7: runners that registered themselves with a key, and results signed by one. A runner's
    // `enrollment` is `enrolled`, `pending` or `rejected` (rows from before are enrolled).
    // `key_fingerprint` is unique among live runners: the same key registering again is the same
    // runner. `bound_capabilities` (JSON capabilities) and `bound_kinds` (a JSON list) are what
    // it may claim with, NULL when its claims are trusted. A renewed token's predecessor stays in
    // `previous_token_hash` until `previous_token_expires_at`. `registered_at` is the signed
    // timestamp of the last registration accepted, which the next must be later than, so a
    // registration is accepted once by every coordinator sharing the database.
    // `result_signature` on a job is the verified signature of its result, as JSON.
    r#"
ALTER TABLE runners ADD COLUMN enrollment TEXT NOT NULL DEFAULT 'enrolled';
ALTER TABLE runners ADD COLUMN key_fingerprint TEXT;
ALTER TABLE runners ADD COLUMN public_key TEXT;
ALTER TABLE runners ADD COLUMN bound_capabilities TEXT;
ALTER TABLE runners ADD COLUMN bound_kinds TEXT;
ALTER TABLE runners ADD COLUMN token_expires_at INTEGER;
ALTER TABLE runners ADD COLUMN previous_token_hash BLOB;
ALTER TABLE runners ADD COLUMN previous_token_expires_at INTEGER;
ALTER TABLE runners ADD COLUMN registered_at INTEGER;
CREATE UNIQUE INDEX runners_key ON runners (key_fingerprint)
    WHERE key_fingerprint IS NOT NULL AND deleted_at IS NULL;
CREATE UNIQUE INDEX runners_previous_token ON runners (previous_token_hash)
    WHERE previous_token_hash IS NOT NULL;
ALTER TABLE jobs ADD COLUMN result_signature TEXT;
"#,
    // 8: organizations and user tokens. `default` always exists, and every job from before is
    // in it; runners keep `organization_id` NULL (cluster-scoped), as the bootstrap admin that
    // created them makes them. Organizations are listed oldest first by `seq`; names are unique
    // (compared exactly). A user token's `organization_id` NULL means every organization; its
    // `role` is `viewer`, `submitter`, `operator` or `admin`; a revoked token's row is deleted.
    // `audit_log.organization_id` is the organization an event belongs to, NULL when it is
    // cluster-wide.
    r#"
CREATE TABLE organizations (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    allow_shared_runners INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
INSERT INTO organizations (id, name, allow_shared_runners, created_at)
    VALUES ('default', 'default', 1, CAST(unixepoch('subsec') * 1000 AS INTEGER));
CREATE TABLE user_tokens (
    seq INTEGER PRIMARY KEY,
    id BLOB NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    organization_id TEXT,
    token_hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    last_used_at INTEGER
);
CREATE INDEX user_tokens_organization ON user_tokens (organization_id, seq);
ALTER TABLE jobs ADD COLUMN organization_id TEXT NOT NULL DEFAULT 'default';
ALTER TABLE audit_log ADD COLUMN organization_id TEXT;
"#,
    // 9: claims by organization. A runner of an organization claims its organization's jobs
    // through the `_own` indexes (organization first); a cluster-scoped runner claims through
    // the others, which hold only jobs whose organization lets shared runners take them
    // (`shared_runners`, copied from the organization at submission), so neither walks past
    // jobs it may not take however many organizations there are. Jobs of `default` (which
    // always lets shared runners in) are left out of the `_own` indexes, so a single-team
    // install maintains one claim index as before; runners of `default` read the shared ones.
    r#"
ALTER TABLE jobs ADD COLUMN shared_runners INTEGER NOT NULL DEFAULT 1;
DROP INDEX jobs_pending_open;
DROP INDEX jobs_pending_constrained;
CREATE INDEX jobs_pending_open ON jobs (kind, priority, seq, run_after)
    WHERE state = 0 AND requirements IS NULL AND shared_runners = 1;
CREATE INDEX jobs_pending_constrained ON jobs (kind, priority, seq, run_after)
    WHERE state = 0 AND requirements IS NOT NULL AND shared_runners = 1;
CREATE INDEX jobs_pending_open_own ON jobs (organization_id, kind, priority, seq, run_after)
    WHERE state = 0 AND requirements IS NULL AND organization_id <> 'default';
CREATE INDEX jobs_pending_constrained_own ON jobs (organization_id, kind, priority, seq, run_after)
    WHERE state = 0 AND requirements IS NOT NULL AND organization_id <> 'default';
"#,
    // 10: idempotency keys are unique within an organization, not across them: the same key in
    // two organizations names two jobs, so a submission never answers another organization's.
    // An organization's admins read its audit entries through their own index.
    // `artifact_organizations` says which organizations may read an artifact (one of its tokens
    // uploaded it, or one of its jobs names it).
    r#"
DROP INDEX jobs_idempotency;
CREATE UNIQUE INDEX jobs_idempotency ON jobs (organization_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX audit_log_organization ON audit_log (organization_id, seq)
    WHERE organization_id IS NOT NULL;
CREATE TABLE artifact_organizations (
    artifact_id BLOB NOT NULL,
    organization_id TEXT NOT NULL,
    PRIMARY KEY (artifact_id, organization_id)
) WITHOUT ROWID;
"#,
    // 11: dashboard sessions. Only the SHA-256 of a session's secret is kept; a session acts as
    // the user token it was opened with (deleted with it) or as the bootstrap admin holding the
    // admin token of `admin_token_hash`.
    r#"
CREATE TABLE sessions (
    secret_hash BLOB PRIMARY KEY,
    user_token_id BLOB,
    admin_token_hash BLOB,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_user_token ON sessions (user_token_id) WHERE user_token_id IS NOT NULL;
CREATE INDEX sessions_expiry ON sessions (expires_at);
"#,
    // 12: the attempt history. The job row holds only its current attempt; an attempt that ends
    // without completing the job (failed, lost, timed out, cancelled) is kept here when it ends,
    // named by its lease epoch (epochs only grow, a user's retry included). Deleted with its job.
    r#"
CREATE TABLE job_attempts (
    job_seq INTEGER NOT NULL,
    lease_epoch INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    runner_id BLOB,
    claimed_at INTEGER,
    started_at INTEGER,
    ended_at INTEGER,
    outcome TEXT NOT NULL,
    error_reason TEXT,
    error_message TEXT,
    PRIMARY KEY (job_seq, lease_epoch)
) WITHOUT ROWID;
"#,
    // 13: the overview's last hour, by the minute: what ended how often, added up by the
    // coordinators so a restart loses none of it. Minutes older than two hours are deleted as
    // new ones are added.
    r#"
CREATE TABLE outcome_minutes (
    minute INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (minute, outcome)
) WITHOUT ROWID;
"#,
    // 14: the workload registry. A workload's id is the caller's; `seq` orders lists newest
    // first. Its history holds one row per status it took, so it stays a handful of rows.
    r#"
CREATE TABLE workloads (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    runner_id BLOB NOT NULL,
    thread_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    status INTEGER NOT NULL,
    status_reason TEXT NOT NULL,
    containers TEXT NOT NULL,
    ziti_identity_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX workloads_thread ON workloads (thread_id, seq);
CREATE INDEX workloads_runner ON workloads (runner_id, seq);
CREATE INDEX workloads_organization ON workloads (organization_id, seq);
CREATE INDEX workloads_status ON workloads (status, seq);
CREATE TABLE workload_history (
    workload_seq INTEGER NOT NULL,
    position INTEGER NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (workload_seq, position)
) WITHOUT ROWID;
"#,
];

/// Bring the schema up to date inside one transaction.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let applied: usize =
        conn.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))? as usize;
    if applied > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the database schema is version {applied}, newer than this muster knows ({}); upgrade muster",
            MIGRATIONS.len()
        )));
    }
    let transaction = conn.transaction()?;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        transaction.execute_batch(migration)?;
        transaction.pragma_update(None, "user_version", (index + 1) as i64)?;
    }
    transaction.commit()
}
