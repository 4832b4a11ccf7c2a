//! The embedded SQLite backend: one file, WAL with `synchronous=FULL`, one writer thread that
//! group-commits (see [`writer`]), and a few reader connections for queries.
//!
//! One process owns a data directory at a time (an exclusive lock on `muster.lock` beside the
//! database), which is what lets the writer thread be the only writer and keep small caches.

mod artifacts;
mod enrollment;
mod identity;
mod jobs;
mod kinds;
mod organizations;
mod rows;
mod runners;
mod schema;
mod workloads;
mod writer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use muster_core::{
    ArtifactId, AttemptRecord, JobError, JobId, JobRecord, NewJob, RunnerId, RunnerRecord,
    Timestamp, UserTokenId, WorkloadRecord, WorkloadStatusChange,
};
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use tokio::sync::watch;

use crate::{
    Activity, ArtifactRecord, ArtifactRecords, ArtifactUsage, ArtifactUsageReport, AuditEntry,
    AuditFilter, ClaimRequest, ClaimedJob, CompletionItem, IdentityRecords, JobCall, JobFilter,
    JobStore, KindSettingsRecord, KindSettingsStore, LeaseStore, LogPage, LogPosition, LogSearch,
    LogSearchPage, Maintenance, NewAuditEntry, NewRunner, OutcomeCount, Page, PageRequest,
    PruneCursor, PruneReport, QueueDepth, ReapReport, RecordedActivity, RunnerBeat, RunnerFilter,
    RunnerKeyRecord, RunnerStore, StoreError, Submitted, WorkloadFilter, WorkloadReport,
    WorkloadStore,
};
use crate::{
    EnrollmentChange, EnrollmentChangeOutcome, KeyRegistration, NewUserToken, OrganizationRecord,
    OrganizationStore, RegistrationOutcome, RemovedRunnerKey, RunnerCredentials, SessionRecord,
    UserTokenRecord,
};
use writer::{Writer, WriterContext};

/// Settings of the SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The database file; created with its directory when missing.
    pub path: PathBuf,
    /// Bytes of log text kept per job; later entries are dropped after one truncation entry.
    pub log_cap_bytes: u64,
}

/// The SQLite [`crate::Store`].
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Readers>,
    pending_signal: watch::Receiver<u64>,
    // Held for the life of the store: while it is open no other process may open the data.
    _lock: File,
}

impl SqliteStore {
    /// Open (creating when missing) the database and bring its schema up to date.
    pub fn open(config: &SqliteConfig) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = config
            .path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            crate::files::create_private_directory(parent).map_err(|error| {
                StoreError::Unavailable(format!("create directory {}: {error}", parent.display()))
            })?;
        }
        // SQLite gives the WAL and shared-memory files the database file's permissions, so a
        // database made private here keeps all three private.
        crate::files::create_private_file(&config.path).map_err(|error| {
            StoreError::Unavailable(format!("create {}: {error}", config.path.display()))
        })?;
        crate::files::warn_if_readable_by_others(&config.path);
        let lock = lock_database(&config.path)?;
        let mut conn = open_connection(&config.path, true)?;
        schema::migrate(&mut conn).map_err(map_sqlite_error)?;
        let (signal_sender, pending_signal) = watch::channel(0u64);
        let context = WriterContext {
            conn,
            runner_touches: Default::default(),
            pending_changed: false,
            log_cap_bytes: config.log_cap_bytes,
            begin_failed: None,
            group_failed: None,
        };
        let writer = Writer::start(context, signal_sender).map_err(|error| {
            StoreError::Unavailable(format!("start the writer thread: {error}"))
        })?;
        let readers = Arc::new(Readers {
            path: config.path.clone(),
            idle: Mutex::new(Vec::new()),
            permits: tokio::sync::Semaphore::new(MAX_READER_CONNECTIONS),
            queries: std::sync::atomic::AtomicU64::new(0),
        });
        Readers::start_closing_expired(&readers);
        Ok(SqliteStore {
            writer,
            readers,
            pending_signal,
            _lock: lock,
        })
    }
}

fn lock_database(path: &Path) -> Result<File, StoreError> {
    let lock_path = path.with_extension("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|error| {
            StoreError::Unavailable(format!("open lock file {}: {error}", lock_path.display()))
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
            "{} is in use by another muster process (lock {} is held)",
            path.display(),
            lock_path.display()
        ))),
        Err(std::fs::TryLockError::Error(error)) => Err(StoreError::Unavailable(format!(
            "lock {}: {error}",
            lock_path.display()
        ))),
    }
}

fn open_connection(path: &Path, writer: bool) -> Result<Connection, StoreError> {
    let flags = if writer {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(map_sqlite_error)?;
    // WAL lets readers run beside the writer; FULL makes every commit durable before it returns.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 5000;
         PRAGMA cache_size = -65536;
         PRAGMA temp_store = MEMORY;",
    )
    .map_err(map_sqlite_error)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Map a SQLite error to what callers can act on: the disk or file failing is "unavailable",
/// anything else is a bug.
pub(crate) fn map_sqlite_error(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &error {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::OutOfMemory => StoreError::Unavailable(error.to_string()),
            _ => StoreError::Internal(error.to_string()),
        },
        _ => StoreError::Internal(error.to_string()),
    }
}

/// Read-only connections open at most: queries beyond this wait for one. Each holds three
/// files (database, WAL, shared memory), and SQLite reads are CPU-bound, so more would not
/// answer sooner on a machine of a few cores.
pub const MAX_READER_CONNECTIONS: usize = 8;
/// A reader connection unused this long is closed, so a burst does not keep its connections
/// (shorter in this crate's unit tests, which watch it happen).
const READER_IDLE_CLOSE: std::time::Duration = if cfg!(test) {
    std::time::Duration::from_millis(300)
} else {
    std::time::Duration::from_secs(30)
};

/// Read-only connections for queries, reused between calls: at most
/// [`MAX_READER_CONNECTIONS`], the most recently used first, closed after
/// [`READER_IDLE_CLOSE`] unused.
struct Readers {
    path: PathBuf,
    /// Idle connections with when each was last used, oldest first.
    idle: Mutex<Vec<(Connection, std::time::Instant)>>,
    permits: tokio::sync::Semaphore,
    /// Queries run so far, for tests that check what costs reads.
    queries: std::sync::atomic::AtomicU64,
}

impl Readers {
    async fn run<R: Send + 'static>(
        self: &Arc<Self>,
        query: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        self.queries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let idle = readers
                .idle
                .lock()
                .map(|mut idle| idle.pop())
                .unwrap_or(None);
            let conn = match idle {
                Some((conn, _)) => conn,
                None => open_connection(&readers.path, false)?,
            };
            let answer = query(&conn);
            if let Ok(mut idle) = readers.idle.lock() {
                idle.push((conn, std::time::Instant::now()));
            }
            readers.close_expired();
            answer
        })
        .await
        .map_err(|error| StoreError::Internal(format!("a read task failed: {error}")))?
    }

    /// Close the idle connections unused for [`READER_IDLE_CLOSE`].
    fn close_expired(&self) {
        let now = std::time::Instant::now();
        let expired: Vec<(Connection, std::time::Instant)> = match self.idle.lock() {
            Ok(mut idle) => {
                let keep_from = idle
                    .iter()
                    .position(|(_, used)| now.duration_since(*used) < READER_IDLE_CLOSE)
                    .unwrap_or(idle.len());
                idle.drain(..keep_from).collect()
            }
            Err(_) => Vec::new(),
        };
        // Closed outside the lock: closing a connection may checkpoint the WAL.
        drop(expired);
    }

    /// Close expired idle connections every few seconds while the store is open, so a quiet
    /// store gives back what a burst opened.
    fn start_closing_expired(readers: &Arc<Readers>) {
        let weak = Arc::downgrade(readers);
        let spawned = std::thread::Builder::new()
            .name("muster-sqlite-readers".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(READER_IDLE_CLOSE / 3);
                    match weak.upgrade() {
                        Some(readers) => readers.close_expired(),
                        None => return,
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "could not start closing idle SQLite readers; they are closed after reads instead");
        }
    }

    /// Reader connections open now (idle ones; for tests of the pool's bounds).
    fn idle_connections(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }
}

impl SqliteStore {
    /// Idle reader connections kept open now; at most [`MAX_READER_CONNECTIONS`], fewer after a
    /// quiet spell. For tests and diagnostics.
    pub fn idle_reader_connections(&self) -> usize {
        self.readers.idle_connections()
    }

    /// Read queries run since the store was opened. For tests and diagnostics.
    pub fn read_queries(&self) -> u64 {
        self.readers
            .queries
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn submit_jobs(&self, new_jobs: Vec<NewJob>) -> Result<Vec<Submitted>, StoreError> {
        self.writer
            .run(move |context| jobs::submit(context, new_jobs))
            .await
    }

    async fn submit_and_claim(
        &self,
        new_jobs: Vec<NewJob>,
        claim: ClaimRequest,
        now: Timestamp,
    ) -> Result<(Vec<Submitted>, Vec<ClaimedJob>), StoreError> {
        self.writer
            .run(move |context| {
                let submitted = jobs::submit(context, new_jobs)?;
                let claimed = jobs::claims::claim(context, &claim, now)?;
                Ok((submitted, claimed))
            })
            .await
    }

    async fn get_job(&self, id: JobId) -> Result<JobRecord, StoreError> {
        self.readers
            .run(move |conn| jobs::load_by_id(conn, id).map(|(_, job)| job))
            .await
    }

    async fn kinds_of_held_jobs(
        &self,
        runner: RunnerId,
        ids: Vec<JobId>,
    ) -> Result<HashMap<JobId, String>, StoreError> {
        self.readers
            .run(move |conn| jobs::kinds_of_held(conn, runner, &ids))
            .await
    }

    async fn list_jobs(
        &self,
        filter: JobFilter,
        page: PageRequest,
    ) -> Result<Page<JobRecord>, StoreError> {
        self.readers
            .run(move |conn| jobs::list(conn, &filter, &page))
            .await
    }

    async fn count_jobs(&self, filter: JobFilter, cap: u64) -> Result<u64, StoreError> {
        self.readers
            .run(move |conn| jobs::count(conn, &filter, cap))
            .await
    }

    async fn cancel_job(
        &self,
        id: JobId,
        grace_ms: i64,
        now: Timestamp,
    ) -> Result<JobRecord, StoreError> {
        self.writer
            .run(move |context| jobs::cancel(context, id, grace_ms, now))
            .await
    }

    async fn retry_job(&self, id: JobId, now: Timestamp) -> Result<JobRecord, StoreError> {
        self.writer
            .run(move |context| jobs::retry(context, id, now))
            .await
    }

    async fn read_logs(
        &self,
        id: JobId,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<LogPage, StoreError> {
        self.readers
            .run(move |conn| jobs::logs::read(conn, id, after_seq, limit))
            .await
    }

    async fn search_logs(&self, id: JobId, search: LogSearch) -> Result<LogSearchPage, StoreError> {
        self.readers
            .run(move |conn| jobs::logs::search(conn, id, &search))
            .await
    }

    async fn log_positions(&self, ids: Vec<JobId>) -> Result<Vec<LogPosition>, StoreError> {
        self.readers
            .run(move |conn| jobs::logs::positions(conn, &ids))
            .await
    }

    async fn read_dag(&self, id: JobId) -> Result<Option<Value>, StoreError> {
        self.readers.run(move |conn| jobs::read_dag(conn, id)).await
    }

    async fn kept_attempts(&self, id: JobId) -> Result<Vec<AttemptRecord>, StoreError> {
        self.readers
            .run(move |conn| rows::kept_attempts(conn, id))
            .await
    }
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn claim_jobs(
        &self,
        claim: ClaimRequest,
        now: Timestamp,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        self.writer
            .run_unguarded(move |context| jobs::claims::claim(context, &claim, now))
            .await
    }

    fn pending_signal(&self) -> watch::Receiver<u64> {
        self.pending_signal.clone()
    }

    async fn record_activity(
        &self,
        call: JobCall,
        activity: Activity,
        now: Timestamp,
    ) -> Result<RecordedActivity, StoreError> {
        self.writer
            .run(move |context| jobs::activity::record(context, call, activity, now))
            .await
    }

    async fn complete_job_signed(
        &self,
        call: JobCall,
        result: Value,
        signature: Option<muster_core::identity::VerifiedResultSignature>,
        outputs: BTreeMap<String, ArtifactId>,
        now: Timestamp,
    ) -> Result<JobRecord, StoreError> {
        self.writer
            .run(move |context| {
                jobs::completions::complete(context, call, result, signature, outputs, now)
            })
            .await
    }

    async fn complete_jobs(
        &self,
        runner: RunnerId,
        items: Vec<CompletionItem>,
        now: Timestamp,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.writer
            .run_unguarded(move |context| {
                jobs::completions::complete_many(context, runner, items, now)
            })
            .await
    }

    async fn fail_job(
        &self,
        call: JobCall,
        error: JobError,
        retryable: bool,
        now: Timestamp,
    ) -> Result<JobRecord, StoreError> {
        self.writer
            .run(move |context| jobs::completions::fail(context, call, error, retryable, now))
            .await
    }
}

#[async_trait]
impl RunnerStore for SqliteStore {
    async fn create_runner(&self, runner: NewRunner) -> Result<RunnerRecord, StoreError> {
        let id = runner.id;
        self.writer
            .run(move |context| runners::create(&context.conn, &runner))
            .await?;
        self.get_runner(id).await
    }

    async fn get_runner(&self, id: RunnerId) -> Result<RunnerRecord, StoreError> {
        self.readers.run(move |conn| runners::get(conn, id)).await
    }

    async fn list_runners(
        &self,
        filter: RunnerFilter,
        page: PageRequest,
    ) -> Result<Page<RunnerRecord>, StoreError> {
        self.readers
            .run(move |conn| runners::list(conn, &filter, &page))
            .await
    }

    async fn delete_runner(&self, id: RunnerId, now: Timestamp) -> Result<Vec<JobId>, StoreError> {
        self.writer
            .run(move |context| runners::delete(context, id, now))
            .await
    }

    async fn runner_by_token_hash(
        &self,
        token_hash: [u8; 32],
    ) -> Result<Option<RunnerCredentials>, StoreError> {
        self.readers
            .run(move |conn| enrollment::by_token_hash(conn, &token_hash))
            .await
    }

    async fn runner_by_key(&self, fingerprint: &str) -> Result<Option<RunnerRecord>, StoreError> {
        let fingerprint = fingerprint.to_string();
        self.readers
            .run(move |conn| runners::by_key(conn, &fingerprint))
            .await
    }

    async fn register_runner_key(
        &self,
        registration: KeyRegistration,
        audit: NewAuditEntry,
    ) -> Result<RegistrationOutcome, StoreError> {
        self.writer
            .run(move |context| enrollment::register(context, &registration, &audit))
            .await
    }

    async fn change_runner_enrollment(
        &self,
        change: EnrollmentChange,
        audit: NewAuditEntry,
        key_audit: NewAuditEntry,
    ) -> Result<EnrollmentChangeOutcome, StoreError> {
        self.writer
            .run(move |context| enrollment::change_enrollment(context, &change, &audit, &key_audit))
            .await
    }

    async fn runner_heartbeat(
        &self,
        beat: RunnerBeat,
        now: Timestamp,
    ) -> Result<Vec<JobId>, StoreError> {
        self.writer
            .run(move |context| runners::heartbeat(context, &beat, now))
            .await
    }
}

#[async_trait]
impl ArtifactRecords for SqliteStore {
    async fn named_artifacts(&self) -> Result<HashSet<ArtifactId>, StoreError> {
        self.readers.run(jobs::named_artifacts).await
    }

    async fn record_artifact(&self, record: ArtifactRecord) -> Result<(), StoreError> {
        self.writer
            .run(move |context| artifacts::record(context, &record))
            .await
    }

    async fn take_artifact_record(
        &self,
        id: ArtifactId,
    ) -> Result<Option<ArtifactRecord>, StoreError> {
        self.writer
            .run(move |context| artifacts::take(context, id))
            .await
    }

    async fn artifact_usage(
        &self,
        runner: Option<RunnerId>,
    ) -> Result<ArtifactUsageReport, StoreError> {
        self.readers
            .run(move |conn| artifacts::usage(conn, runner))
            .await
    }

    async fn largest_artifact_uploaders(
        &self,
        limit: u32,
    ) -> Result<Vec<(RunnerId, ArtifactUsage)>, StoreError> {
        self.readers
            .run(move |conn| artifacts::largest_uploaders(conn, limit))
            .await
    }

    async fn grant_artifacts(
        &self,
        organization: String,
        ids: Vec<ArtifactId>,
    ) -> Result<(), StoreError> {
        self.writer
            .run(move |context| artifacts::grant(context, &organization, &ids))
            .await
    }

    async fn artifact_granted(
        &self,
        organization: String,
        id: ArtifactId,
    ) -> Result<bool, StoreError> {
        self.readers
            .run(move |conn| artifacts::granted(conn, &organization, id))
            .await
    }

    async fn runner_may_read_artifact(
        &self,
        runner: RunnerId,
        id: ArtifactId,
    ) -> Result<bool, StoreError> {
        self.readers
            .run(move |conn| artifacts::runner_may_read(conn, runner, id))
            .await
    }
}

#[async_trait]
impl IdentityRecords for SqliteStore {
    async fn add_runner_key(
        &self,
        key: RunnerKeyRecord,
        audit: NewAuditEntry,
    ) -> Result<(RunnerKeyRecord, bool), StoreError> {
        self.writer
            .run(move |context| identity::add(context, &key, &audit))
            .await
    }

    async fn list_runner_keys(
        &self,
        organization: Option<String>,
        page: PageRequest,
    ) -> Result<Page<RunnerKeyRecord>, StoreError> {
        self.readers
            .run(move |conn| identity::list(conn, organization.as_deref(), &page))
            .await
    }

    async fn get_runner_key(
        &self,
        fingerprint: &str,
    ) -> Result<Option<RunnerKeyRecord>, StoreError> {
        let fingerprint = fingerprint.to_string();
        self.readers
            .run(move |conn| identity::get(conn, &fingerprint))
            .await
    }

    async fn remove_runner_key(
        &self,
        fingerprint: &str,
        audit: NewAuditEntry,
    ) -> Result<RemovedRunnerKey, StoreError> {
        let fingerprint = fingerprint.to_string();
        self.writer
            .run(move |context| identity::remove(context, &fingerprint, &audit))
            .await
    }

    async fn append_audit(&self, entry: NewAuditEntry) -> Result<(), StoreError> {
        self.writer
            .run(move |context| identity::append_audit(context, &entry))
            .await
    }

    async fn list_audit(
        &self,
        filter: AuditFilter,
        page: PageRequest,
    ) -> Result<Page<AuditEntry>, StoreError> {
        self.readers
            .run(move |conn| identity::list_audit(conn, &filter, &page))
            .await
    }
}

#[async_trait]
impl KindSettingsStore for SqliteStore {
    async fn put_kind_settings(
        &self,
        settings: KindSettingsRecord,
        audit: NewAuditEntry,
    ) -> Result<KindSettingsRecord, StoreError> {
        self.writer
            .run(move |context| kinds::put(context, &settings, &audit))
            .await
    }

    async fn get_kind_settings(
        &self,
        kind: &str,
    ) -> Result<Option<KindSettingsRecord>, StoreError> {
        let kind = kind.to_string();
        self.readers.run(move |conn| kinds::get(conn, &kind)).await
    }

    async fn list_kind_settings(
        &self,
        page: PageRequest,
    ) -> Result<Page<KindSettingsRecord>, StoreError> {
        self.readers.run(move |conn| kinds::list(conn, &page)).await
    }

    async fn delete_kind_settings(
        &self,
        kind: &str,
        audit: NewAuditEntry,
    ) -> Result<(), StoreError> {
        let kind = kind.to_string();
        self.writer
            .run(move |context| kinds::delete(context, &kind, &audit))
            .await
    }
}

#[async_trait]
impl OrganizationStore for SqliteStore {
    async fn create_organization(
        &self,
        organization: OrganizationRecord,
        audit: NewAuditEntry,
    ) -> Result<OrganizationRecord, StoreError> {
        self.writer
            .run(move |context| organizations::create(context, &organization, &audit))
            .await
    }

    async fn get_organization(&self, id: &str) -> Result<Option<OrganizationRecord>, StoreError> {
        let id = id.to_string();
        self.readers
            .run(move |conn| organizations::get(conn, &id))
            .await
    }

    async fn list_organizations(
        &self,
        page: PageRequest,
    ) -> Result<Page<OrganizationRecord>, StoreError> {
        self.readers
            .run(move |conn| organizations::list(conn, &page))
            .await
    }

    async fn delete_organization(&self, id: &str, audit: NewAuditEntry) -> Result<(), StoreError> {
        let id = id.to_string();
        self.writer
            .run(move |context| organizations::delete(context, &id, &audit))
            .await
    }

    async fn create_user_token(
        &self,
        token: NewUserToken,
        audit: NewAuditEntry,
    ) -> Result<UserTokenRecord, StoreError> {
        self.writer
            .run(move |context| organizations::create_token(context, &token, &audit))
            .await
    }

    async fn list_user_tokens(
        &self,
        organization: Option<String>,
        page: PageRequest,
    ) -> Result<Page<UserTokenRecord>, StoreError> {
        self.readers
            .run(move |conn| organizations::list_tokens(conn, organization.as_deref(), &page))
            .await
    }

    async fn get_user_token(&self, id: UserTokenId) -> Result<Option<UserTokenRecord>, StoreError> {
        self.readers
            .run(move |conn| organizations::get_token(conn, id))
            .await
    }

    async fn user_token_by_hash(
        &self,
        token_hash: [u8; 32],
    ) -> Result<Option<UserTokenRecord>, StoreError> {
        self.readers
            .run(move |conn| organizations::token_by_hash(conn, &token_hash))
            .await
    }

    async fn revoke_user_token(
        &self,
        id: UserTokenId,
        audit: NewAuditEntry,
    ) -> Result<UserTokenRecord, StoreError> {
        self.writer
            .run(move |context| organizations::revoke_token(context, id, &audit))
            .await
    }

    async fn touch_user_token(&self, id: UserTokenId, at: Timestamp) -> Result<(), StoreError> {
        self.writer
            .run(move |context| organizations::touch_token(context, id, at))
            .await
    }

    async fn create_session(
        &self,
        session: SessionRecord,
        audit: NewAuditEntry,
    ) -> Result<(), StoreError> {
        self.writer
            .run(move |context| organizations::create_session(context, &session, &audit))
            .await
    }

    async fn session_by_hash(
        &self,
        secret_hash: [u8; 32],
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.readers
            .run(move |conn| organizations::session_by_hash(conn, &secret_hash))
            .await
    }

    async fn delete_session(
        &self,
        secret_hash: [u8; 32],
        audit: NewAuditEntry,
    ) -> Result<(), StoreError> {
        self.writer
            .run(move |context| organizations::delete_session(context, &secret_hash, &audit))
            .await
    }
}

#[async_trait]
impl WorkloadStore for SqliteStore {
    async fn create_workload(
        &self,
        workload: WorkloadRecord,
    ) -> Result<WorkloadRecord, StoreError> {
        self.writer
            .run(move |context| workloads::create(context, workload))
            .await
    }

    async fn get_workload(&self, id: &str) -> Result<WorkloadRecord, StoreError> {
        let id = id.to_string();
        self.readers
            .run(move |conn| workloads::get(conn, &id))
            .await
    }

    async fn list_workloads(
        &self,
        filter: WorkloadFilter,
        page: PageRequest,
    ) -> Result<Page<WorkloadRecord>, StoreError> {
        self.readers
            .run(move |conn| workloads::list(conn, &filter, &page))
            .await
    }

    async fn report_workload(&self, report: WorkloadReport) -> Result<WorkloadRecord, StoreError> {
        self.writer
            .run(move |context| workloads::report(context, &report))
            .await
    }

    async fn delete_workload(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.writer
            .run(move |context| workloads::delete(context, &id))
            .await
    }

    async fn workload_history(&self, id: &str) -> Result<Vec<WorkloadStatusChange>, StoreError> {
        let id = id.to_string();
        self.readers
            .run(move |conn| workloads::history(conn, &id))
            .await
    }
}

#[async_trait]
impl Maintenance for SqliteStore {
    async fn reap(&self, now: Timestamp, limit: u32) -> Result<ReapReport, StoreError> {
        self.writer
            .run(move |context| jobs::reap::reap(context, now, limit))
            .await
    }

    async fn delete_finished_jobs(
        &self,
        finished_before: Timestamp,
        resume: Option<PruneCursor>,
        limit: u32,
    ) -> Result<PruneReport, StoreError> {
        self.writer
            .run(move |context| {
                jobs::prune::delete_finished(context, finished_before, resume, limit)
            })
            .await
    }

    async fn active_job_counts(&self) -> Result<Vec<QueueDepth>, StoreError> {
        self.readers.run(jobs::active_job_counts).await
    }

    async fn finished_job_counts(&self) -> Result<Vec<QueueDepth>, StoreError> {
        self.readers.run(jobs::finished_job_counts).await
    }

    async fn add_outcome_counts(
        &self,
        counts: Vec<OutcomeCount>,
        forget_before_minute: i64,
    ) -> Result<(), StoreError> {
        self.writer
            .run(move |context| jobs::outcomes::add(context, counts, forget_before_minute))
            .await
    }

    async fn outcome_totals(&self, first_minute: i64) -> Result<Vec<OutcomeCount>, StoreError> {
        self.readers
            .run(move |conn| jobs::outcomes::totals(conn, first_minute))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.readers
            .run(|conn| {
                conn.query_row("SELECT 1", [], |_| Ok(()))
                    .map_err(map_sqlite_error)
            })
            .await
    }

    fn shared_with_other_coordinators(&self) -> bool {
        // The lock on muster.lock keeps every other process out.
        false
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{MAX_READER_CONNECTIONS, READER_IDLE_CLOSE, SqliteConfig, SqliteStore};
    use crate::Maintenance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_read_pool_is_bounded_and_gives_back_idle_connections() {
        let directory = tempfile::tempdir().expect("a directory");
        let store = Arc::new(
            SqliteStore::open(&SqliteConfig {
                path: directory.path().join("muster.db"),
                log_cap_bytes: 1024,
            })
            .expect("open"),
        );
        let burst = (0..200).map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.ping().await })
        });
        for read in futures::future::join_all(burst).await {
            read.expect("join").expect("ping");
        }
        let open = store.idle_reader_connections();
        assert!(
            (1..=MAX_READER_CONNECTIONS).contains(&open),
            "200 concurrent reads keep at most {MAX_READER_CONNECTIONS} connections, found {open}"
        );
        assert_eq!(store.read_queries(), 200);
        // Unused for the idle time (and a tick of the closer), they are closed.
        tokio::time::sleep(READER_IDLE_CLOSE * 2).await;
        assert_eq!(store.idle_reader_connections(), 0);
    }
}
