//! The coordinator's application layer: every rule of muster above the store, every
//! authorization decision and every change event, behind [`Coordinator`]'s methods.
//!
//! Front ends (the HTTP API, later gRPC and the dashboard) parse a request, resolve its caller
//! with [`Coordinator::authenticate`], call one method with domain inputs and the caller's
//! [`Principal`], and convert the domain answer or the [`ServiceError`] back. So a rule exists
//! once, and a new front end gets every rule by calling the same methods. This crate knows
//! nothing of HTTP, gRPC or the wire types of `muster-api`.
//!
//! The methods are grouped by what they serve: [`protocol`] (runners' calls), [`jobs`] (users'
//! calls on jobs), [`runners`] (the registry), [`artifacts`] (bytes and the rule that an
//! artifact is kept before a job names it), [`operations`] (health and metrics); the background
//! loops (the reaper, retention, watching a shared database) run from
//! [`Coordinator::run_background_tasks`].

pub mod artifacts;
pub mod attached;
mod auth;
pub mod bulk;
mod changes;
mod config;
mod error;
mod feeds;
pub mod identity;
pub mod jobs;
pub mod kinds;
mod last_hour;
pub mod log_search;
mod metrics;
pub mod operations;
pub mod organizations;
pub mod overview;
pub mod protocol;
mod quota;
mod reaper;
pub mod registration;
mod retention;
pub mod runners;
mod scope;
pub mod sessions;
mod throttle;
pub mod tokens;
mod views;
pub mod workloads;

use std::sync::Arc;

use muster_core::{Clock, Principal};
use muster_store::Store;
use muster_store::blobs::BlobStore;
use tokio_util::sync::CancellationToken;

pub use auth::{hash_token, load_or_create_admin_token};
pub use changes::JobWatch;
pub use config::{ArtifactQuotas, DiskReserve, ServiceConfig};
pub use error::ServiceError;
pub use metrics::{MAX_ORGANIZATION_SERIES, OTHER_ORGANIZATIONS};
pub use retention::{
    CollectionError, CollectionReport, PAUSE_BETWEEN_CALLS as RETENTION_PAUSE,
    delete_finished_before,
};

/// `at` as RFC 3339 in UTC with milliseconds, for messages.
pub(crate) fn rfc3339(at: muster_core::Timestamp) -> String {
    let since_epoch = std::time::Duration::from_millis(u64::try_from(at.as_millis()).unwrap_or(0));
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + since_epoch).to_string()
}

/// The coordinator: the store, the artifact store, the clock, the settings, and what this
/// process keeps between calls (the token cache, the runner view, change signals, counters).
/// Cheap to clone; every clone is the same coordinator.
#[derive(Clone)]
pub struct Coordinator {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: Arc<ServiceConfig>,
    pub(crate) auth: Arc<auth::Auth>,
    pub(crate) metrics: Arc<metrics::Metrics>,
    pub(crate) outcomes_being_added: Arc<last_hour::OutcomesBeingAdded>,
    pub(crate) runner_view: Arc<views::RunnerView>,
    pub(crate) finished_counts: Arc<views::FinishedCounts>,
    pub(crate) job_changes: Arc<changes::JobChanges>,
    pub(crate) log_feeds: Arc<feeds::LogFeeds>,
    pub(crate) job_feeds: Arc<feeds::JobFeeds>,
    pub(crate) draining_runners: Arc<changes::DrainingRunners>,
    pub(crate) uploads_in_flight: Arc<quota::UploadsInFlight>,
    pub(crate) kind_rules: Arc<kinds::KindRules>,
    pub(crate) registration_replays: Arc<registration::RegistrationReplays>,
    pub(crate) auth_throttle: Arc<throttle::AuthThrottle>,
    pub(crate) attached: Arc<attached::AttachedRunners>,
    pub(crate) shutdown: CancellationToken,
}

/// What a coordinator is made of.
pub struct CoordinatorParts {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    /// The source of "now" (a manual clock in tests).
    pub clock: Arc<dyn Clock>,
    pub config: ServiceConfig,
    /// The bootstrap admin token (only its hash is kept).
    pub admin_token: String,
    /// Cancelled when the coordinator stops: long polls and live streams end on it.
    pub shutdown: CancellationToken,
}

impl Coordinator {
    pub fn new(parts: CoordinatorParts) -> Coordinator {
        let auth_throttle = Arc::new(throttle::AuthThrottle::new(parts.config.auth_failure_limit));
        Coordinator {
            store: parts.store,
            blobs: parts.blobs,
            clock: parts.clock,
            config: Arc::new(parts.config),
            auth: Arc::new(auth::Auth::new(&parts.admin_token)),
            metrics: Arc::default(),
            outcomes_being_added: Arc::default(),
            runner_view: Arc::default(),
            finished_counts: Arc::default(),
            job_changes: Arc::default(),
            log_feeds: Arc::default(),
            job_feeds: Arc::default(),
            draining_runners: Arc::default(),
            uploads_in_flight: Arc::default(),
            kind_rules: Arc::default(),
            registration_replays: Arc::default(),
            auth_throttle,
            attached: Arc::default(),
            shutdown: parts.shutdown,
        }
    }

    /// The settings it runs with.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Cancelled when the coordinator stops.
    pub fn shutdown_signal(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Count a connection a front end opened, or the coordinator closed and why, in
    /// `/metrics` (front ends own their connections; the counters live with the others).
    pub fn connection_opened(&self) {
        self.metrics.connection_opened();
    }

    pub fn connection_ended(&self) {
        self.metrics.connection_ended();
    }

    pub fn connection_closed(&self, reason: &'static str) {
        self.metrics.connection_closed(reason);
    }

    /// Run the reaper, retention, the adding of outcome counts to the store and (with a database
    /// other coordinators share) the watcher of their changes until the shutdown signal; answers
    /// once all have stopped.
    pub async fn run_background_tasks(&self) {
        let reaper = tokio::spawn(reaper::run(self.clone()));
        let retention = tokio::spawn(retention::run(self.clone()));
        let outcomes = tokio::spawn(last_hour::run(self.clone()));
        let shared_store_watch = self
            .store
            .shared_with_other_coordinators()
            .then(|| tokio::spawn(changes::watch_shared_store(self.clone())));
        let _ = reaper.await;
        let _ = retention.await;
        let _ = outcomes.await;
        if let Some(task) = shared_store_watch {
            let _ = task.await;
        }
    }

    /// Apply passed deadlines now instead of waiting for the reaper's tick (for tests that
    /// move a manual clock).
    pub async fn reap_now(&self) -> Result<(), ServiceError> {
        reaper::reap_once(self).await.map_err(ServiceError::from)
    }

    /// Delete the finished jobs past the configured retention now, in one pass without pauses;
    /// answers how many were deleted (0 when every job is kept).
    pub async fn prune_now(&self) -> Result<u64, ServiceError> {
        match self.config.retain_finished_jobs {
            Some(retention) => retention::prune_once(self, retention, std::time::Duration::ZERO)
                .await
                .map_err(ServiceError::from),
            None => Ok(0),
        }
    }

    /// Delete the artifacts no job names and nobody uploaded or named within `unused_for` now,
    /// as the retention task does (for tests, which pass durations shorter than allowed).
    pub async fn collect_unused_artifacts(
        &self,
        unused_for: std::time::Duration,
    ) -> Result<CollectionReport, CollectionError> {
        retention::collect_once(self, unused_for).await
    }

    /// The caller of a request of `audience` holding `token`, sent from `peer` (when the
    /// front end knows it), or why it is refused: an unknown token is `unauthorized`, one of the
    /// other audience `forbidden`, and an address with too many failed authentications this
    /// minute `too_many_requests` before its token is even looked up.
    pub async fn authenticate(
        &self,
        token: &str,
        audience: muster_core::Audience,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Principal, ServiceError> {
        self.refuse_if_throttled(peer)?;
        let identified = self
            .auth
            .identify(token, self.store.as_ref(), self.clock.now())
            .await;
        let admitted = identified.and_then(|principal| {
            muster_core::admit(&principal, audience)?;
            Ok(principal)
        });
        if let Err(error) = &admitted
            && throttle::is_failed_authentication(error)
        {
            self.record_failed_authentication(peer).await;
        }
        admitted
    }
}
