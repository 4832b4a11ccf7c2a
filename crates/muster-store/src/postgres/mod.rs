//! The PostgreSQL backend, for several coordinators in front of one database.
//!
//! Every coordinator is stateless: all state is in the database, and every operation runs in one
//! transaction. A pending job belongs to whoever holds its `job_queue` row: claims take those
//! rows with `FOR UPDATE SKIP LOCKED` (never waiting) and a cancel takes one before the job's
//! row; every other operation concerns jobs that are not pending and locks the job's row. The
//! reaper takes lease checks and job rows with `SKIP LOCKED` only. So coordinators never wait on
//! each other in a cycle.
//!
//! Three tables carry a job (see `schema`): `jobs` holds every job for good and is updated in
//! place (HOT updates, no index changes); `job_queue` holds a row exactly while the job is
//! pending, and is all that claims read; `lease_checks` lists, per claim, the jobs a runner
//! leased and when the reaper should look at them next (no later than their deadlines), and is
//! what the reaper reads. A completion writes only `jobs`. Finished jobs therefore never slow
//! down claims or reaping.
//!
//! Claims and completions (batch calls, and single ones without outputs) are the hot path: the
//! ones that reach a coordinator while earlier ones are being written are run together as one
//! transaction (see `combine`), so many runners cost the database a few large statements instead
//! of many small ones racing for rows.
//!
//! Wake-ups cross coordinators with `LISTEN`/`NOTIFY`: a commit that makes jobs claimable
//! notifies [`PENDING_CHANNEL`], and every coordinator's listener moves its pending signal.

mod artifacts;
mod combine;
mod enrollment;
mod identity;
mod jobs;
mod kinds;
mod organizations;
mod rows;
mod runners;
mod schema;
mod tls;
mod workloads;

pub(crate) use schema::migrate_component;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::StreamExt;
use muster_core::{
    ArtifactId, AttemptRecord, JobError, JobId, JobRecord, NewJob, RunnerId, RunnerRecord,
    Timestamp, UserTokenId, WorkloadRecord, WorkloadStatusChange,
};
use serde_json::Value;
use tokio::sync::watch;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::rules::runners::RunnerTouches;

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

/// Settings of the PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// A `postgres://` URL (libpq's key=value form works too).
    pub url: String,
    /// Bytes of log text kept per job; later entries are dropped after one truncation entry.
    pub log_cap_bytes: u64,
    /// Connections this coordinator keeps open at most (one more is used to listen for
    /// wake-ups from other coordinators).
    pub max_connections: usize,
}

/// Connections per coordinator when not configured.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;

/// The channel a commit notifies when it may have made jobs claimable.
pub const PENDING_CHANNEL: &str = "muster_pending";

/// How long a call waits for a free connection, or for a new one to be made, before it gives up
/// as unavailable: a coordinator whose database is gone answers 503 quickly instead of hanging.
const CONNECTION_WAIT: Duration = Duration::from_secs(5);

/// How often the maintenance task looks whether the queue tables need a vacuum.
const MAINTENANCE_TICK: Duration = Duration::from_millis(500);
/// Rows this coordinator added to or removed from `job_queue` (and `lease_checks`) after which
/// those tables are vacuumed: each claim and completion leaves dead entries at the head of the claim
/// index, and every claim walks them until a vacuum removes them.
const VACUUM_AFTER_QUEUE_CHANGES: u64 = 50_000;
/// The longest a little churn waits for its vacuum.
const VACUUM_AT_LEAST_EVERY: Duration = Duration::from_secs(30);

/// Claim batches one coordinator runs at once. Two let one batch be written while the next is
/// read; more would bring back the races between claims that batching removes.
const CLAIM_BATCHES: combine::BatchLimits<ClaimCall> = combine::BatchLimits {
    in_flight: 2,
    max_calls: 64,
    max_weight: MAX_JOBS_PER_BATCH,
    weigh: |(claim, _)| claim.max_jobs as usize,
};
/// Completion batches one coordinator runs at once: completions do not race each other for rows,
/// so more batches only overlap more commits.
const COMPLETION_BATCHES: combine::BatchLimits<CompletionCall> = combine::BatchLimits {
    in_flight: 4,
    max_calls: 64,
    max_weight: MAX_JOBS_PER_BATCH,
    weigh: |(_, items, _)| items.len(),
};
/// Single completions (`complete_job` without outputs, what runners send as each job ends)
/// batches one coordinator runs at once. Each alone is a transaction of four round trips and a
/// commit; hundreds of runners' slots finishing at once are better written together.
const SINGLE_COMPLETION_BATCHES: combine::BatchLimits<SingleCompletionCall> =
    combine::BatchLimits {
        in_flight: 4,
        max_calls: 256,
        max_weight: 256,
        weigh: |_| 1,
    };
/// Jobs at most in one combined transaction (a single larger call still runs, alone): a few
/// thousand keep each transaction to milliseconds.
const MAX_JOBS_PER_BATCH: usize = 5_000;

/// A claim waiting for its batch: what was asked, and the coordinator's clock when asked.
type ClaimCall = (ClaimRequest, Timestamp);
/// A batch completion waiting for its batch: by whom, the items, and the clock when asked.
type CompletionCall = (RunnerId, Vec<CompletionItem>, Timestamp);

/// A single completion waiting for its batch: the call, the result, its verified signature, and
/// the clock when asked.
pub(crate) type SingleCompletionCall = (
    JobCall,
    Value,
    Option<muster_core::identity::VerifiedResultSignature>,
    Timestamp,
);

/// The PostgreSQL [`crate::Store`].
pub struct PostgresStore {
    pool: Pool,
    shared: Arc<Shared>,
    claims: combine::Combiner<ClaimCall, Vec<ClaimedJob>>,
    completions: combine::Combiner<CompletionCall, Vec<Result<(), StoreError>>>,
    single_completions: combine::Combiner<SingleCompletionCall, JobRecord>,
    pending_signal: watch::Receiver<u64>,
    listener: tokio::task::JoinHandle<()>,
    maintenance: tokio::task::JoinHandle<()>,
}

/// What operations need besides a connection.
pub(crate) struct Shared {
    pub(crate) log_cap_bytes: u64,
    signal: watch::Sender<u64>,
    /// Per runner, what it last declared when claiming and when that was written, so a claim
    /// rewrites the runner's row only when something changed or a second passed.
    pub(crate) runner_touches: Mutex<RunnerTouches>,
    /// Rows added to or removed from the queue tables since their last vacuum (roughly).
    queue_changes: AtomicU64,
    /// How far the claim batches running now have locked the queue, per kind.
    pub(crate) claim_frontiers: Arc<jobs::claims::ClaimFrontiers>,
}

impl Shared {
    fn signal_pending(&self) {
        self.signal
            .send_modify(|counter| *counter = counter.wrapping_add(1));
    }

    fn count_queue_changes(&self, rows: usize) {
        self.queue_changes.fetch_add(rows as u64, Ordering::Relaxed);
    }
}

/// Run `$body` (an expression using the transaction named `$transaction`) in one transaction
/// and commit it. An error anywhere drops the transaction, which rolls it back.
macro_rules! in_transaction {
    ($store:expr, $transaction:ident => $body:expr) => {{
        let mut client = $store.client().await?;
        let $transaction = client.transaction().await.map_err(map_postgres_error)?;
        let answer = $body.await?;
        $transaction.commit().await.map_err(map_postgres_error)?;
        answer
    }};
}

/// What a batch of combined calls needs: a connection for its transaction, and the shared state.
#[derive(Clone)]
struct Batches {
    pool: Pool,
    shared: Arc<Shared>,
}

impl Batches {
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        get_client(&self.pool).await
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.maintenance.abort();
    }
}

impl PostgresStore {
    /// Connect, apply missing migrations, and start listening for other coordinators' wake-ups.
    pub async fn open(config: &PostgresConfig) -> Result<PostgresStore, StoreError> {
        let (pool, connection_config, tls) = connect_pool(&config.url, config.max_connections)?;
        let mut client = get_client(&pool).await?;
        migrate_component(&mut client, "store", schema::STORE_MIGRATIONS).await?;
        drop(client);
        let (signal, pending_signal) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            log_cap_bytes: config.log_cap_bytes,
            signal,
            runner_touches: Mutex::default(),
            claim_frontiers: Arc::default(),
            queue_changes: AtomicU64::new(0),
        });
        let listener = tokio::spawn(listen_for_wake_ups(
            connection_config,
            tls,
            Arc::downgrade(&shared),
        ));
        let maintenance = tokio::spawn(vacuum_queue_tables(pool.clone(), Arc::downgrade(&shared)));
        let batches = Batches {
            pool: pool.clone(),
            shared: Arc::clone(&shared),
        };
        let claims = combine::Combiner::start(CLAIM_BATCHES, {
            let batches = batches.clone();
            move |calls: Vec<ClaimCall>| {
                let batches = batches.clone();
                async move {
                    // Dropped once the transaction has ended, committed or not.
                    let batch =
                        jobs::claims::ClaimFrontiers::start(&batches.shared.claim_frontiers);
                    let answers = in_transaction!(batches, transaction => jobs::claims::claim_batch(
                        &transaction, &batches.shared, &calls, batch.id()
                    ));
                    drop(batch);
                    let claimed: usize = answers.iter().flatten().map(Vec::len).sum();
                    // A claim removes a queue row (its lease check is one row per runner).
                    batches.shared.count_queue_changes(claimed);
                    Ok(answers)
                }
            }
        });
        let single_completions = combine::Combiner::start(SINGLE_COMPLETION_BATCHES, {
            let batches = batches.clone();
            move |calls: Vec<SingleCompletionCall>| {
                let batches = batches.clone();
                async move {
                    Ok(
                        in_transaction!(batches, transaction => jobs::completions::complete_singles(
                            &transaction, &calls
                        )),
                    )
                }
            }
        });
        let completions = combine::Combiner::start(
            COMPLETION_BATCHES,
            move |calls: Vec<CompletionCall>| {
                let batches = batches.clone();
                async move {
                    let answers = in_transaction!(batches, transaction => jobs::completions::complete_batch(
                        &transaction, &calls
                    ));
                    // A completion writes only the job's row.
                    Ok(answers)
                }
            },
        );
        Ok(PostgresStore {
            pool,
            shared,
            claims,
            completions,
            single_completions,
            pending_signal,
            listener,
            maintenance,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        get_client(&self.pool).await
    }
}

/// A pool of connections to `url` (not connected yet: connections are made on first use), the
/// parsed connection settings, and the TLS connector the URL asks for.
fn connect_pool(
    url: &str,
    max_connections: usize,
) -> Result<(Pool, tokio_postgres::Config, MakeRustlsConnect), StoreError> {
    let (mut connection_config, tls) = tls::connection_settings(url)?;
    if connection_config.get_connect_timeout().is_none() {
        connection_config.connect_timeout(CONNECTION_WAIT);
    }
    if connection_config.get_application_name().is_none() {
        connection_config.application_name("muster");
    }
    // Dead peers (a database host that vanished without closing connections) are noticed.
    connection_config.keepalives(true);
    connection_config.keepalives_idle(Duration::from_secs(30));
    let manager = Manager::from_config(
        connection_config.clone(),
        tls.clone(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(max_connections.max(2))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECTION_WAIT))
        .create_timeout(Some(CONNECTION_WAIT))
        .recycle_timeout(Some(CONNECTION_WAIT))
        .build()
        .map_err(|error| StoreError::Internal(format!("build the connection pool: {error}")))?;
    Ok((pool, connection_config, tls))
}

/// Artifact bytes in the PostgreSQL database at `url`, on a pool of their own (at most
/// `max_connections`), so long uploads and downloads never take connections from job operations.
pub async fn open_blob_store(
    url: &str,
    max_connections: usize,
) -> Result<crate::blobs::PostgresBlobStore, StoreError> {
    let (pool, _, _) = connect_pool(url, max_connections)?;
    crate::blobs::PostgresBlobStore::open(pool)
        .await
        .map_err(|error| StoreError::Unavailable(format!("open the artifact store: {error}")))
}

async fn get_client(pool: &Pool) -> Result<deadpool_postgres::Object, StoreError> {
    pool.get().await.map_err(|error| match error {
        deadpool_postgres::PoolError::Backend(error) => map_postgres_error(error),
        other => StoreError::Unavailable(format!("get a database connection: {other}")),
    })
}

/// Keep one connection listening on [`PENDING_CHANNEL`] for as long as the store lives, and
/// move the pending signal on every notification. While the connection is down, wake-ups from
/// other coordinators are missed; waiting claims re-check on their own timer, and the signal is
/// moved once the listener is back so they look at once.
async fn listen_for_wake_ups(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    shared: std::sync::Weak<Shared>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures::stream::poll_fn(move |context| connection.poll_message(context));
                let listen_statement = format!("LISTEN {PENDING_CHANNEL}");
                // The connection must be polled for the LISTEN to complete.
                let listening = {
                    let listen = client.batch_execute(&listen_statement);
                    tokio::pin!(listen);
                    loop {
                        tokio::select! {
                            outcome = &mut listen => break outcome.is_ok(),
                            message = messages.next() => match message {
                                Some(Ok(_)) => continue,
                                _ => break false,
                            },
                        }
                    }
                };
                if listening {
                    backoff = Duration::from_millis(100);
                    match shared.upgrade() {
                        Some(shared) => shared.signal_pending(),
                        None => return,
                    }
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(_)) => match shared.upgrade() {
                                Some(shared) => shared.signal_pending(),
                                None => return,
                            },
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(%error, "the wake-up listener lost its database connection; reconnecting");
                                break;
                            }
                        }
                    }
                }
                drop(client);
            }
            Err(error) => {
                tracing::debug!(%error, "the wake-up listener cannot connect yet");
            }
        }
        if shared.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Keep the claim path's indexes free of dead entries. Autovacuum wakes at most once a minute
/// by default (`autovacuum_naptime`, a server-wide setting muster does not own), while a busy
/// queue leaves tens of thousands of dead entries a second at the head of `job_queue`'s index,
/// which every claim would walk. So each coordinator vacuums the two small queue tables itself
/// after enough churn; `SKIP_LOCKED` makes a coordinator skip a table another one is vacuuming.
async fn vacuum_queue_tables(pool: Pool, weak_shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(MAINTENANCE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_vacuum = tokio::time::Instant::now();
    let mut failing = false;
    loop {
        tick.tick().await;
        let Some(shared) = weak_shared.upgrade() else {
            return;
        };
        let changes = shared.queue_changes.load(Ordering::Relaxed);
        let due = changes >= VACUUM_AFTER_QUEUE_CHANGES
            || (changes > 0 && last_vacuum.elapsed() >= VACUUM_AT_LEAST_EVERY);
        drop(shared);
        if !due {
            continue;
        }
        let outcome = async {
            let client = get_client(&pool).await?;
            client
                .batch_execute("VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON) job_queue, lease_checks")
                .await
                .map_err(map_postgres_error)
        }
        .await;
        match outcome {
            Ok(()) => {
                if let Some(shared) = weak_shared.upgrade() {
                    shared.queue_changes.fetch_sub(changes, Ordering::Relaxed);
                }
                last_vacuum = tokio::time::Instant::now();
                if failing {
                    tracing::info!("vacuuming the queue tables works again");
                }
                failing = false;
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "cannot vacuum the queue tables; claims slow down until this works again");
                }
                failing = true;
            }
        }
    }
}

/// Run a statement (prepared once per connection) and answer its rows.
pub(crate) async fn query(
    client: &impl deadpool_postgres::GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let statement = client
        .prepare_cached(sql)
        .await
        .map_err(map_postgres_error)?;
    client
        .query(&statement, params)
        .await
        .map_err(map_postgres_error)
}

/// Run a statement (prepared once per connection) and answer how many rows it changed.
pub(crate) async fn execute(
    client: &impl deadpool_postgres::GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, StoreError> {
    let statement = client
        .prepare_cached(sql)
        .await
        .map_err(map_postgres_error)?;
    client
        .execute(&statement, params)
        .await
        .map_err(map_postgres_error)
}

/// Map a driver error to what callers can act on: a lost or refused connection, or a server
/// that is shutting down, out of resources, or that broke a tie between transactions
/// (serialization failure, deadlock), is "unavailable" (worth a retry); anything else is a bug.
pub(crate) fn map_postgres_error(error: tokio_postgres::Error) -> StoreError {
    if let Some(database_error) = error.as_db_error() {
        let code = database_error.code().code();
        let retryable = ["08", "53", "57", "58", "40"]
            .iter()
            .any(|class| code.starts_with(class));
        return if retryable {
            StoreError::Unavailable(format!("database: {database_error}"))
        } else {
            StoreError::Internal(format!("database: {database_error}"))
        };
    }
    let source = std::error::Error::source(&error);
    let is_io = source.is_some_and(|source| source.downcast_ref::<std::io::Error>().is_some());
    // The driver's message alone ("error connecting to server") hides the cause.
    let message = match source {
        Some(source) if !error.to_string().contains(&source.to_string()) => {
            format!("{error}: {source}")
        }
        _ => error.to_string(),
    };
    if error.is_closed() || is_io || message.contains("connect") {
        StoreError::Unavailable(format!("database connection: {message}"))
    } else {
        StoreError::Internal(format!("database: {message}"))
    }
}

#[async_trait]
impl JobStore for PostgresStore {
    async fn submit_jobs(&self, new_jobs: Vec<NewJob>) -> Result<Vec<Submitted>, StoreError> {
        let answers = in_transaction!(self, transaction => jobs::submit(&transaction, new_jobs));
        let created = answers
            .iter()
            .filter(|answer: &&Submitted| answer.created)
            .count();
        if created > 0 {
            self.shared.count_queue_changes(created);
            self.shared.signal_pending();
        }
        Ok(answers)
    }

    async fn submit_and_claim(
        &self,
        new_jobs: Vec<NewJob>,
        claim: ClaimRequest,
        now: Timestamp,
    ) -> Result<(Vec<Submitted>, Vec<ClaimedJob>), StoreError> {
        // Claims go through the combiner (one statement for every claim in flight), so the
        // claim follows the submit's transaction instead of joining it.
        let submitted = self.submit_jobs(new_jobs).await?;
        let claimed = self.claim_jobs(claim, now).await?;
        Ok((submitted, claimed))
    }

    async fn get_job(&self, id: JobId) -> Result<JobRecord, StoreError> {
        let client = self.client().await?;
        jobs::load_by_id(&client, id, false)
            .await
            .map(|(_, job)| job)
    }

    async fn kinds_of_held_jobs(
        &self,
        runner: RunnerId,
        ids: Vec<JobId>,
    ) -> Result<HashMap<JobId, String>, StoreError> {
        let client = self.client().await?;
        jobs::kinds_of_held(&client, runner, &ids).await
    }

    async fn list_jobs(
        &self,
        filter: JobFilter,
        page: PageRequest,
    ) -> Result<Page<JobRecord>, StoreError> {
        let client = self.client().await?;
        jobs::list(&client, &filter, &page).await
    }

    async fn count_jobs(&self, filter: JobFilter, cap: u64) -> Result<u64, StoreError> {
        let client = self.client().await?;
        jobs::count(&client, &filter, cap).await
    }

    async fn cancel_job(
        &self,
        id: JobId,
        grace_ms: i64,
        now: Timestamp,
    ) -> Result<JobRecord, StoreError> {
        Ok(in_transaction!(self, transaction => jobs::cancel(&transaction, id, grace_ms, now)))
    }

    async fn retry_job(&self, id: JobId, now: Timestamp) -> Result<JobRecord, StoreError> {
        let job = in_transaction!(self, transaction => jobs::retry(&transaction, id, now));
        self.shared.signal_pending();
        Ok(job)
    }

    async fn read_logs(
        &self,
        id: JobId,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<LogPage, StoreError> {
        let client = self.client().await?;
        jobs::logs::read(&client, id, after_seq, limit).await
    }

    async fn search_logs(&self, id: JobId, search: LogSearch) -> Result<LogSearchPage, StoreError> {
        let client = self.client().await?;
        jobs::logs::search(&client, id, &search).await
    }

    async fn log_positions(&self, ids: Vec<JobId>) -> Result<Vec<LogPosition>, StoreError> {
        let client = self.client().await?;
        jobs::logs::positions(&client, &ids).await
    }

    async fn read_dag(&self, id: JobId) -> Result<Option<Value>, StoreError> {
        let client = self.client().await?;
        jobs::read_dag(&client, id).await
    }

    async fn kept_attempts(&self, id: JobId) -> Result<Vec<AttemptRecord>, StoreError> {
        let client = self.client().await?;
        rows::kept_attempts(&client, id).await
    }
}

#[async_trait]
impl LeaseStore for PostgresStore {
    async fn claim_jobs(
        &self,
        claim: ClaimRequest,
        now: Timestamp,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        self.claims.call((claim, now)).await
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
        Ok(in_transaction!(self, transaction => jobs::activity::record(
            &transaction, &self.shared, call, activity, now
        )))
    }

    async fn complete_job_signed(
        &self,
        call: JobCall,
        result: Value,
        signature: Option<muster_core::identity::VerifiedResultSignature>,
        outputs: BTreeMap<String, ArtifactId>,
        now: Timestamp,
    ) -> Result<JobRecord, StoreError> {
        if outputs.is_empty() {
            return self
                .single_completions
                .call((call, result, signature, now))
                .await;
        }
        let job = in_transaction!(self, transaction => jobs::completions::complete(&transaction, call, result, signature, outputs, now));
        Ok(job)
    }

    async fn complete_jobs(
        &self,
        runner: RunnerId,
        items: Vec<CompletionItem>,
        now: Timestamp,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.completions.call((runner, items, now)).await
    }

    async fn fail_job(
        &self,
        call: JobCall,
        error: JobError,
        retryable: bool,
        now: Timestamp,
    ) -> Result<JobRecord, StoreError> {
        let job = in_transaction!(self, transaction => jobs::completions::fail(&transaction, call, error, retryable, now));
        if job.state() == muster_core::JobState::Pending {
            self.shared.signal_pending();
        }
        Ok(job)
    }
}

#[async_trait]
impl RunnerStore for PostgresStore {
    async fn create_runner(&self, runner: NewRunner) -> Result<RunnerRecord, StoreError> {
        let client = self.client().await?;
        runners::create(&client, &runner).await?;
        runners::get(&client, runner.id).await
    }

    async fn get_runner(&self, id: RunnerId) -> Result<RunnerRecord, StoreError> {
        let client = self.client().await?;
        runners::get(&client, id).await
    }

    async fn list_runners(
        &self,
        filter: RunnerFilter,
        page: PageRequest,
    ) -> Result<Page<RunnerRecord>, StoreError> {
        let client = self.client().await?;
        runners::list(&client, &filter, &page, true).await
    }

    async fn list_runners_for_matching(
        &self,
        page: PageRequest,
    ) -> Result<Page<RunnerRecord>, StoreError> {
        let client = self.client().await?;
        runners::list(&client, &RunnerFilter::default(), &page, false).await
    }

    async fn delete_runner(&self, id: RunnerId, now: Timestamp) -> Result<Vec<JobId>, StoreError> {
        let (released, requeued) =
            in_transaction!(self, transaction => runners::delete(&transaction, id, now));
        if let Ok(mut touches) = self.shared.runner_touches.lock() {
            touches.forget(id);
        }
        if requeued {
            self.shared.signal_pending();
        }
        Ok(released)
    }

    async fn runner_by_token_hash(
        &self,
        token_hash: [u8; 32],
    ) -> Result<Option<RunnerCredentials>, StoreError> {
        let client = self.client().await?;
        enrollment::by_token_hash(&client, &token_hash).await
    }

    async fn runner_by_key(&self, fingerprint: &str) -> Result<Option<RunnerRecord>, StoreError> {
        let client = self.client().await?;
        runners::by_key(&client, fingerprint).await
    }

    async fn register_runner_key(
        &self,
        registration: KeyRegistration,
        audit: NewAuditEntry,
    ) -> Result<RegistrationOutcome, StoreError> {
        Ok(
            in_transaction!(self, transaction => enrollment::register(&transaction, &registration, &audit)),
        )
    }

    async fn change_runner_enrollment(
        &self,
        change: EnrollmentChange,
        audit: NewAuditEntry,
        key_audit: NewAuditEntry,
    ) -> Result<EnrollmentChangeOutcome, StoreError> {
        let (outcome, requeued) = in_transaction!(self, transaction => enrollment::change_enrollment(&transaction, &change, &audit, &key_audit));
        if requeued {
            self.shared.signal_pending();
        }
        Ok(outcome)
    }

    async fn runner_heartbeat(
        &self,
        beat: RunnerBeat,
        now: Timestamp,
    ) -> Result<Vec<JobId>, StoreError> {
        let client = self.client().await?;
        runners::heartbeat(&client, &beat, now).await
    }
}

#[async_trait]
impl ArtifactRecords for PostgresStore {
    async fn named_artifacts(&self) -> Result<HashSet<ArtifactId>, StoreError> {
        let client = self.client().await?;
        jobs::named_artifacts(&client).await
    }

    async fn record_artifact(&self, record: ArtifactRecord) -> Result<(), StoreError> {
        let client = self.client().await?;
        artifacts::record(&client, &record).await
    }

    async fn take_artifact_record(
        &self,
        id: ArtifactId,
    ) -> Result<Option<ArtifactRecord>, StoreError> {
        let client = self.client().await?;
        artifacts::take(&client, id).await
    }

    async fn artifact_usage(
        &self,
        runner: Option<RunnerId>,
    ) -> Result<ArtifactUsageReport, StoreError> {
        let client = self.client().await?;
        artifacts::usage(&client, runner).await
    }

    async fn largest_artifact_uploaders(
        &self,
        limit: u32,
    ) -> Result<Vec<(RunnerId, ArtifactUsage)>, StoreError> {
        let client = self.client().await?;
        artifacts::largest_uploaders(&client, limit).await
    }

    async fn grant_artifacts(
        &self,
        organization: String,
        ids: Vec<ArtifactId>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        artifacts::grant(&client, &organization, &ids).await
    }

    async fn artifact_granted(
        &self,
        organization: String,
        id: ArtifactId,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        artifacts::granted(&client, &organization, id).await
    }

    async fn runner_may_read_artifact(
        &self,
        runner: RunnerId,
        id: ArtifactId,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        artifacts::runner_may_read(&client, runner, id).await
    }
}

#[async_trait]
impl IdentityRecords for PostgresStore {
    async fn add_runner_key(
        &self,
        key: RunnerKeyRecord,
        audit: NewAuditEntry,
    ) -> Result<(RunnerKeyRecord, bool), StoreError> {
        Ok(in_transaction!(self, transaction => identity::add(&transaction, &key, &audit)))
    }

    async fn list_runner_keys(
        &self,
        organization: Option<String>,
        page: PageRequest,
    ) -> Result<Page<RunnerKeyRecord>, StoreError> {
        let client = self.client().await?;
        identity::list(&client, organization.as_deref(), &page).await
    }

    async fn get_runner_key(
        &self,
        fingerprint: &str,
    ) -> Result<Option<RunnerKeyRecord>, StoreError> {
        let client = self.client().await?;
        identity::get(&client, fingerprint).await
    }

    async fn remove_runner_key(
        &self,
        fingerprint: &str,
        audit: NewAuditEntry,
    ) -> Result<RemovedRunnerKey, StoreError> {
        let (removed, requeued) = in_transaction!(self, transaction => identity::remove(&transaction, fingerprint, &audit));
        if requeued {
            self.shared.signal_pending();
        }
        Ok(removed)
    }

    async fn append_audit(&self, entry: NewAuditEntry) -> Result<(), StoreError> {
        let client = self.client().await?;
        identity::append_audit(&client, &entry).await
    }

    async fn list_audit(
        &self,
        filter: AuditFilter,
        page: PageRequest,
    ) -> Result<Page<AuditEntry>, StoreError> {
        let client = self.client().await?;
        identity::list_audit(&client, &filter, &page).await
    }
}

#[async_trait]
impl KindSettingsStore for PostgresStore {
    async fn put_kind_settings(
        &self,
        settings: KindSettingsRecord,
        audit: NewAuditEntry,
    ) -> Result<KindSettingsRecord, StoreError> {
        Ok(in_transaction!(self, transaction => kinds::put(&transaction, &settings, &audit)))
    }

    async fn get_kind_settings(
        &self,
        kind: &str,
    ) -> Result<Option<KindSettingsRecord>, StoreError> {
        let client = self.client().await?;
        kinds::get(&client, kind).await
    }

    async fn list_kind_settings(
        &self,
        page: PageRequest,
    ) -> Result<Page<KindSettingsRecord>, StoreError> {
        let client = self.client().await?;
        kinds::list(&client, &page).await
    }

    async fn delete_kind_settings(
        &self,
        kind: &str,
        audit: NewAuditEntry,
    ) -> Result<(), StoreError> {
        in_transaction!(self, transaction => kinds::delete(&transaction, kind, &audit));
        Ok(())
    }
}

#[async_trait]
impl OrganizationStore for PostgresStore {
    async fn create_organization(
        &self,
        organization: OrganizationRecord,
        audit: NewAuditEntry,
    ) -> Result<OrganizationRecord, StoreError> {
        Ok(
            in_transaction!(self, transaction => organizations::create(&transaction, &organization, &audit)),
        )
    }

    async fn get_organization(&self, id: &str) -> Result<Option<OrganizationRecord>, StoreError> {
        let client = self.client().await?;
        organizations::get(&client, id).await
    }

    async fn list_organizations(
        &self,
        page: PageRequest,
    ) -> Result<Page<OrganizationRecord>, StoreError> {
        let client = self.client().await?;
        organizations::list(&client, &page).await
    }

    async fn delete_organization(&self, id: &str, audit: NewAuditEntry) -> Result<(), StoreError> {
        in_transaction!(self, transaction => organizations::delete(&transaction, id, &audit));
        Ok(())
    }

    async fn create_user_token(
        &self,
        token: NewUserToken,
        audit: NewAuditEntry,
    ) -> Result<UserTokenRecord, StoreError> {
        Ok(
            in_transaction!(self, transaction => organizations::create_token(&transaction, &token, &audit)),
        )
    }

    async fn list_user_tokens(
        &self,
        organization: Option<String>,
        page: PageRequest,
    ) -> Result<Page<UserTokenRecord>, StoreError> {
        let client = self.client().await?;
        organizations::list_tokens(&client, organization.as_deref(), &page).await
    }

    async fn get_user_token(&self, id: UserTokenId) -> Result<Option<UserTokenRecord>, StoreError> {
        let client = self.client().await?;
        organizations::get_token(&client, id).await
    }

    async fn user_token_by_hash(
        &self,
        token_hash: [u8; 32],
    ) -> Result<Option<UserTokenRecord>, StoreError> {
        let client = self.client().await?;
        organizations::token_by_hash(&client, &token_hash).await
    }

    async fn revoke_user_token(
        &self,
        id: UserTokenId,
        audit: NewAuditEntry,
    ) -> Result<UserTokenRecord, StoreError> {
        Ok(
            in_transaction!(self, transaction => organizations::revoke_token(&transaction, id, &audit)),
        )
    }

    async fn touch_user_token(&self, id: UserTokenId, at: Timestamp) -> Result<(), StoreError> {
        let client = self.client().await?;
        organizations::touch_token(&client, id, at).await
    }

    async fn create_session(
        &self,
        session: SessionRecord,
        audit: NewAuditEntry,
    ) -> Result<(), StoreError> {
        in_transaction!(self, transaction => organizations::create_session(&transaction, &session, &audit));
        Ok(())
    }

    async fn session_by_hash(
        &self,
        secret_hash: [u8; 32],
    ) -> Result<Option<SessionRecord>, StoreError> {
        let client = self.client().await?;
        organizations::session_by_hash(&client, &secret_hash).await
    }

    async fn delete_session(
        &self,
        secret_hash: [u8; 32],
        audit: NewAuditEntry,
    ) -> Result<(), StoreError> {
        in_transaction!(self, transaction => organizations::delete_session(&transaction, &secret_hash, &audit));
        Ok(())
    }
}

#[async_trait]
impl WorkloadStore for PostgresStore {
    async fn create_workload(
        &self,
        workload: WorkloadRecord,
    ) -> Result<WorkloadRecord, StoreError> {
        Ok(in_transaction!(self, transaction => workloads::create(&transaction, workload)))
    }

    async fn get_workload(&self, id: &str) -> Result<WorkloadRecord, StoreError> {
        let client = self.client().await?;
        workloads::get(&client, id).await
    }

    async fn list_workloads(
        &self,
        filter: WorkloadFilter,
        page: PageRequest,
    ) -> Result<Page<WorkloadRecord>, StoreError> {
        let client = self.client().await?;
        workloads::list(&client, &filter, &page).await
    }

    async fn report_workload(&self, report: WorkloadReport) -> Result<WorkloadRecord, StoreError> {
        Ok(in_transaction!(self, transaction => workloads::report(&transaction, &report)))
    }

    async fn delete_workload(&self, id: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        workloads::delete(&client, id).await
    }

    async fn workload_history(&self, id: &str) -> Result<Vec<WorkloadStatusChange>, StoreError> {
        let client = self.client().await?;
        workloads::history(&client, id).await
    }
}

#[async_trait]
impl Maintenance for PostgresStore {
    async fn reap(&self, now: Timestamp, limit: u32) -> Result<ReapReport, StoreError> {
        let (report, requeued) =
            in_transaction!(self, transaction => jobs::reap::reap(&transaction, now, limit));
        if requeued {
            self.shared.signal_pending();
        }
        Ok(report)
    }

    async fn delete_finished_jobs(
        &self,
        finished_before: Timestamp,
        resume: Option<PruneCursor>,
        limit: u32,
    ) -> Result<PruneReport, StoreError> {
        Ok(
            in_transaction!(self, transaction => jobs::prune::delete_finished(
                &transaction, finished_before, resume, limit
            )),
        )
    }

    async fn active_job_counts(&self) -> Result<Vec<QueueDepth>, StoreError> {
        let client = self.client().await?;
        jobs::active_job_counts(&client).await
    }

    async fn finished_job_counts(&self) -> Result<Vec<QueueDepth>, StoreError> {
        let client = self.client().await?;
        jobs::finished_job_counts(&client).await
    }

    async fn add_outcome_counts(
        &self,
        counts: Vec<OutcomeCount>,
        forget_before_minute: i64,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        jobs::outcomes::add(&client, counts, forget_before_minute).await
    }

    async fn outcome_totals(&self, first_minute: i64) -> Result<Vec<OutcomeCount>, StoreError> {
        let client = self.client().await?;
        jobs::outcomes::totals(&client, first_minute).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(map_postgres_error)?;
        Ok(())
    }

    fn shared_with_other_coordinators(&self) -> bool {
        true
    }
}
