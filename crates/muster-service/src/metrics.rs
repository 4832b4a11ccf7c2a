//! Prometheus metrics. Counters are kept in this process; queue depth and runner counts are read
//! from the store at scrape time so they are right with many coordinators too.

use std::collections::BTreeMap;
use std::sync::Mutex;

use muster_core::{FailureReason, RunnerId, RunnerStatus, Timestamp};
use muster_store::{ArtifactUsage, QueueDepth};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The most organizations `muster_jobs_by_organization` names, those with the most jobs; the
/// others are summed under [`OTHER_ORGANIZATIONS`], so a coordinator with thousands of tenants
/// keeps a bounded number of series.
pub const MAX_ORGANIZATION_SERIES: usize = 50;

/// The `organization` label of the jobs of every organization past [`MAX_ORGANIZATION_SERIES`]
/// (not an organization id: ids have no parentheses).
pub const OTHER_ORGANIZATIONS: &str = "(others)";

pub(crate) struct Metrics {
    registry: Mutex<Registry>,
    claim_requests: Counter,
    jobs_claimed: Counter,
    jobs_completed: Counter,
    jobs_pruned: Counter,
    log_feed_reads: Counter,
    artifacts_collected: Counter,
    artifact_bytes_collected: Counter,
    attempts_failed: Family<Labels, Counter>,
    artifact_uploads_refused: Family<Labels, Counter>,
    artifact_bytes_stored: Gauge,
    artifacts_stored: Gauge,
    runner_artifact_bytes: Family<Labels, Gauge>,
    runner_artifacts: Family<Labels, Gauge>,
    claim_wait_seconds: Histogram,
    jobs: Family<Labels, Gauge>,
    jobs_by_organization: Family<Labels, Gauge>,
    runners: Family<Labels, Gauge>,
    log_lines_lost: Counter,
    connections_open: Gauge,
    connections_closed: Family<Labels, Counter>,
    /// What ended since the last time the counts were taken for the store.
    recent: Mutex<RecentOutcomes>,
}

/// Completions and failed attempts by the minute, counted here and not yet added to the store's
/// totals (see `last_hour`).
#[derive(Debug, Default)]
pub(crate) struct RecentOutcomes {
    /// By minute (milliseconds since the epoch / 60,000) and outcome (`completed` or a
    /// failure reason's name).
    pub(crate) counts: std::collections::BTreeMap<(i64, &'static str), u64>,
}

pub(crate) const MINUTE_MS: i64 = 60_000;

/// The outcome a completion counts under; failed attempts count under their reason's name.
pub(crate) const COMPLETED: &str = "completed";

impl RecentOutcomes {
    pub(crate) fn record(&mut self, now: Timestamp, outcome: &'static str, count: u64) {
        let minute = now.as_millis().div_euclid(MINUTE_MS);
        let total = self.counts.entry((minute, outcome)).or_default();
        *total = total.saturating_add(count);
    }

    /// Add `other`'s counts to these.
    pub(crate) fn absorb(&mut self, other: RecentOutcomes) {
        for ((minute, outcome), count) in other.counts {
            let total = self.counts.entry((minute, outcome)).or_default();
            *total = total.saturating_add(count);
        }
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("muster");
        let claim_requests = Counter::default();
        let jobs_claimed = Counter::default();
        let jobs_completed = Counter::default();
        let jobs_pruned = Counter::default();
        let log_feed_reads = Counter::default();
        let artifacts_collected = Counter::default();
        let artifact_bytes_collected = Counter::default();
        let attempts_failed = Family::<Labels, Counter>::default();
        let artifact_uploads_refused = Family::<Labels, Counter>::default();
        let artifact_bytes_stored = Gauge::default();
        let artifacts_stored = Gauge::default();
        let runner_artifact_bytes = Family::<Labels, Gauge>::default();
        let runner_artifacts = Family::<Labels, Gauge>::default();
        let claim_wait_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 20));
        let jobs = Family::<Labels, Gauge>::default();
        let runners = Family::<Labels, Gauge>::default();
        let log_lines_lost = Counter::default();
        let connections_open = Gauge::default();
        let connections_closed = Family::<Labels, Counter>::default();
        registry.register(
            "log_lines_lost",
            "Log lines dropped because the log destination did not take them (full queue, closed pipe)",
            log_lines_lost.clone(),
        );
        registry.register(
            "connections_open",
            "HTTP connections open now",
            connections_open.clone(),
        );
        registry.register(
            "connections_closed",
            "HTTP connections the coordinator closed, by reason (header_timeout, idle_timeout, body_too_slow, evicted)",
            connections_closed.clone(),
        );
        registry.register(
            "claim_requests",
            "Claim calls answered",
            claim_requests.clone(),
        );
        registry.register(
            "jobs_claimed",
            "Jobs handed to runners",
            jobs_claimed.clone(),
        );
        registry.register(
            "jobs_completed",
            "Jobs completed by runners",
            jobs_completed.clone(),
        );
        registry.register(
            "jobs_pruned",
            "Finished jobs deleted past their retention, by this coordinator",
            jobs_pruned.clone(),
        );
        registry.register(
            "log_feed_reads",
            "Reads of the store by the shared live log feeds (one per change of a followed job, however many streams follow it)",
            log_feed_reads.clone(),
        );
        registry.register(
            "artifacts_collected",
            "Artifacts no job names deleted past their retention, by this coordinator",
            artifacts_collected.clone(),
        );
        registry.register(
            "artifact_bytes_collected",
            "Bytes of the artifacts counted by muster_artifacts_collected_total",
            artifact_bytes_collected.clone(),
        );
        registry.register(
            "attempts_failed",
            "Attempts that failed, by reason (runner_error, lease_expired, timed_out, cancelled)",
            attempts_failed.clone(),
        );
        registry.register(
            "artifact_uploads_refused",
            "Artifact uploads refused by a quota or the disk reserve, by this coordinator, by reason (runner_bytes, runner_count, total_bytes, total_count, disk_reserve)",
            artifact_uploads_refused.clone(),
        );
        registry.register(
            "artifact_bytes_stored",
            "Bytes of the artifacts uploads stored and the collection has not deleted (what --artifact-quota-bytes counts)",
            artifact_bytes_stored.clone(),
        );
        registry.register(
            "artifacts_stored",
            "Artifacts uploads stored and the collection has not deleted (what --artifact-quota-count counts)",
            artifacts_stored.clone(),
        );
        registry.register(
            "runner_artifact_bytes",
            "Artifact bytes charged to a runner (what --runner-artifact-quota-bytes counts), for the runners charged the most",
            runner_artifact_bytes.clone(),
        );
        registry.register(
            "runner_artifacts",
            "Artifacts charged to a runner (what --runner-artifact-quota-count counts), for the same runners",
            runner_artifacts.clone(),
        );
        registry.register(
            "claim_wait_seconds",
            "Time from a job becoming claimable to its claim",
            claim_wait_seconds.clone(),
        );
        registry.register("jobs", "Jobs in the store by kind and state", jobs.clone());
        let jobs_by_organization = Family::<Labels, Gauge>::default();
        registry.register(
            "jobs_by_organization",
            "Jobs in the store by organization and state, for the 50 organizations with the most jobs; the rest under organization=\"(others)\"",
            jobs_by_organization.clone(),
        );
        registry.register("runners", "Registered runners by status", runners.clone());
        Metrics {
            registry: Mutex::new(registry),
            claim_requests,
            jobs_claimed,
            jobs_completed,
            jobs_pruned,
            log_feed_reads,
            artifacts_collected,
            artifact_bytes_collected,
            attempts_failed,
            artifact_uploads_refused,
            artifact_bytes_stored,
            artifacts_stored,
            runner_artifact_bytes,
            runner_artifacts,
            claim_wait_seconds,
            jobs,
            jobs_by_organization,
            runners,
            log_lines_lost,
            connections_open,
            connections_closed,
            recent: Mutex::new(RecentOutcomes::default()),
        }
    }

    pub(crate) fn connection_opened(&self) {
        self.connections_open.inc();
    }

    pub(crate) fn connection_ended(&self) {
        self.connections_open.dec();
    }

    /// The coordinator closed a connection itself, for `reason`.
    pub(crate) fn connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }

    pub(crate) fn record_claim(&self, wait_seconds: impl IntoIterator<Item = f64>) {
        self.claim_requests.inc();
        for wait in wait_seconds {
            self.jobs_claimed.inc();
            self.claim_wait_seconds.observe(wait.max(0.0));
        }
    }

    pub(crate) fn record_completions(&self, count: u64, now: Timestamp) {
        self.jobs_completed.inc_by(count);
        if count > 0
            && let Ok(mut recent) = self.recent.lock()
        {
            recent.record(now, COMPLETED, count);
        }
    }

    /// The outcomes counted since the last call, taken out.
    pub(crate) fn take_recent_outcomes(&self) -> RecentOutcomes {
        self.recent
            .lock()
            .map(|mut recent| std::mem::take(&mut *recent))
            .unwrap_or_default()
    }

    /// A copy of the outcomes counted since the last take.
    pub(crate) fn recent_outcomes(&self) -> RecentOutcomes {
        self.recent
            .lock()
            .map(|recent| RecentOutcomes {
                counts: recent.counts.clone(),
            })
            .unwrap_or_default()
    }

    pub(crate) fn record_feed_read(&self) {
        self.log_feed_reads.inc();
    }

    pub(crate) fn record_jobs_pruned(&self, count: u64) {
        self.jobs_pruned.inc_by(count);
    }

    pub(crate) fn record_artifact_collected(&self, bytes: u64) {
        self.artifacts_collected.inc();
        self.artifact_bytes_collected.inc_by(bytes);
    }

    pub(crate) fn record_artifact_upload_refused(&self, reason: &'static str) {
        self.artifact_uploads_refused
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }

    /// Set the artifact usage gauges for the next render: the totals, and the runners charged
    /// the most (only those, so the series stay few however many runners there are).
    pub(crate) fn set_artifact_usage(
        &self,
        all: ArtifactUsage,
        largest_uploaders: &[(RunnerId, ArtifactUsage)],
    ) {
        self.artifact_bytes_stored
            .set(i64::try_from(all.bytes).unwrap_or(i64::MAX));
        self.artifacts_stored
            .set(i64::try_from(all.count).unwrap_or(i64::MAX));
        self.runner_artifact_bytes.clear();
        self.runner_artifacts.clear();
        for (runner, usage) in largest_uploaders {
            let labels = vec![("runner_id".to_string(), runner.to_string())];
            self.runner_artifact_bytes
                .get_or_create(&labels)
                .set(i64::try_from(usage.bytes).unwrap_or(i64::MAX));
            self.runner_artifacts
                .get_or_create(&labels)
                .set(i64::try_from(usage.count).unwrap_or(i64::MAX));
        }
    }

    pub(crate) fn record_failure(&self, reason: FailureReason, count: u64, now: Timestamp) {
        if count > 0 {
            self.attempts_failed
                .get_or_create(&vec![("reason".to_string(), reason.as_str().to_string())])
                .inc_by(count);
            if let Ok(mut recent) = self.recent.lock() {
                recent.record(now, reason.as_str(), count);
            }
        }
    }

    /// The exposition text, with gauges set from `depths` and `runner_statuses`, and the
    /// process's count of log lines it lost (the process owns its log destination).
    pub(crate) fn render(
        &self,
        depths: &[QueueDepth],
        runner_statuses: &[RunnerStatus],
        log_lines_lost: u64,
    ) -> String {
        self.jobs.clear();
        let mut by_kind: BTreeMap<(&str, &'static str), u64> = BTreeMap::new();
        for depth in depths {
            *by_kind
                .entry((depth.kind.as_str(), depth.state.as_str()))
                .or_default() += depth.count;
        }
        for ((kind, state), count) in by_kind {
            let labels = vec![
                ("kind".to_string(), kind.to_string()),
                ("state".to_string(), state.to_string()),
            ];
            self.jobs.get_or_create(&labels).set(count as i64);
        }
        self.jobs_by_organization.clear();
        for ((organization, state), count) in organization_series(depths) {
            let labels = vec![
                ("organization".to_string(), organization),
                ("state".to_string(), state.to_string()),
            ];
            self.jobs_by_organization
                .get_or_create(&labels)
                .set(count as i64);
        }
        self.runners.clear();
        for status in [
            RunnerStatus::Online,
            RunnerStatus::Offline,
            RunnerStatus::Draining,
        ] {
            let count = runner_statuses
                .iter()
                .filter(|seen| **seen == status)
                .count();
            self.runners
                .get_or_create(&vec![("status".to_string(), status.as_str().to_string())])
                .set(count as i64);
        }
        let counted = self.log_lines_lost.get();
        if log_lines_lost > counted {
            self.log_lines_lost.inc_by(log_lines_lost - counted);
        }
        let mut text = String::new();
        if let Ok(registry) = self.registry.lock()
            && let Err(error) = encode(&mut text, &registry)
        {
            tracing::error!(%error, "failed to encode metrics");
        }
        text
    }
}

/// Job counts by organization and state for at most [`MAX_ORGANIZATION_SERIES`] organizations
/// (those with the most jobs, ties by id), the rest summed under [`OTHER_ORGANIZATIONS`].
fn organization_series(depths: &[QueueDepth]) -> BTreeMap<(String, &'static str), u64> {
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for depth in depths {
        *totals.entry(depth.organization.as_str()).or_default() += depth.count;
    }
    let mut ranked: Vec<(&str, u64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let named: std::collections::HashSet<&str> = ranked
        .iter()
        .take(MAX_ORGANIZATION_SERIES)
        .map(|(organization, _)| *organization)
        .collect();
    let mut series = BTreeMap::new();
    for depth in depths {
        let organization = if named.contains(depth.organization.as_str()) {
            depth.organization.clone()
        } else {
            OTHER_ORGANIZATIONS.to_string()
        };
        *series
            .entry((organization, depth.state.as_str()))
            .or_default() += depth.count;
    }
    series
}

#[cfg(test)]
mod tests {
    use muster_core::JobState;

    use super::*;

    fn depth(organization: &str, kind: &str, state: JobState, count: u64) -> QueueDepth {
        QueueDepth {
            organization: organization.into(),
            kind: kind.into(),
            state,
            count,
        }
    }

    #[test]
    fn organizations_past_the_limit_are_summed_under_others_and_kinds_are_summed() {
        let mut depths = vec![
            depth("default", "a", JobState::Pending, 3),
            depth("default", "b", JobState::Pending, 4),
            depth("default", "a", JobState::Running, 1),
        ];
        // More organizations than the limit, each with fewer jobs than default: the smallest
        // ones (ties broken by id) go under "(others)".
        for index in 0..MAX_ORGANIZATION_SERIES + 5 {
            depths.push(depth(
                &format!("org-{index:03}"),
                "a",
                JobState::Pending,
                (1000 - index) as u64,
            ));
        }
        let series = organization_series(&depths);
        let organizations: std::collections::BTreeSet<&str> = series
            .keys()
            .map(|(organization, _)| organization.as_str())
            .collect();
        assert_eq!(organizations.len(), MAX_ORGANIZATION_SERIES + 1);
        assert!(organizations.contains("org-000"));
        assert!(organizations.contains(format!("org-{:03}", MAX_ORGANIZATION_SERIES - 1).as_str()));
        assert!(
            !organizations.contains("default"),
            "default has the fewest jobs here"
        );
        let others_pending: u64 = (MAX_ORGANIZATION_SERIES..MAX_ORGANIZATION_SERIES + 5)
            .map(|index| (1000 - index) as u64)
            .sum::<u64>()
            + 7;
        assert_eq!(
            series[&(OTHER_ORGANIZATIONS.to_string(), "pending")],
            others_pending
        );
        assert_eq!(series[&(OTHER_ORGANIZATIONS.to_string(), "running")], 1);
        // Below the limit every organization is named, kinds summed.
        let few = organization_series(&depths[..4]);
        assert_eq!(few[&("default".to_string(), "pending")], 7);
        assert_eq!(few[&("default".to_string(), "running")], 1);
        assert_eq!(few[&("org-000".to_string(), "pending")], 1000);
        let total: u64 = series.values().sum();
        assert_eq!(total, depths.iter().map(|depth| depth.count).sum::<u64>());
    }
}
