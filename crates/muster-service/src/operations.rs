//! What operators ask without a token: whether the coordinator can serve, and its metrics.

use muster_core::runner_status;
use muster_store::PageRequest;

use crate::{Coordinator, ServiceError};

/// Runners whose artifact usage the metrics show: the ones charged the most, so the number of
/// series stays small however many runners there are, and a runner nearing its quota shows.
const LARGEST_UPLOADERS_SHOWN: u32 = 10;

/// What the process around the coordinator counts itself (it owns its log destination).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessFigures {
    pub log_lines_lost: u64,
}

impl Coordinator {
    /// Ready to serve: not stopping, and the store answers.
    pub async fn readiness(&self) -> Result<(), ServiceError> {
        if self.shutdown.is_cancelled() {
            return Err(ServiceError::unavailable(
                "the coordinator is shutting down",
            ));
        }
        self.store.ping().await?;
        Ok(())
    }

    /// The Prometheus text of every metric: job counts by kind and state, runners by status,
    /// artifact usage, and the counters this coordinator keeps.
    pub async fn metrics_text(&self, process: ProcessFigures) -> Result<String, ServiceError> {
        let mut depths = self.store.active_job_counts().await?;
        depths.extend(self.finished_counts.get(self.store.as_ref()).await?);
        let now = self.clock.now();
        let offline_after = self.config.runner_offline_after_ms();
        let mut statuses = Vec::new();
        let mut cursor = None;
        loop {
            // Statuses need no counts of held jobs, which PostgreSQL would read per runner.
            let page = self
                .store
                .list_runners_for_matching(PageRequest {
                    limit: 1000,
                    cursor,
                })
                .await?;
            statuses.extend(page.items.iter().map(|runner| {
                runner_status(runner.last_seen_at, runner.draining, offline_after, now)
            }));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let artifacts = self.store.artifact_usage(None).await?.all;
        let largest_uploaders = self
            .store
            .largest_artifact_uploaders(LARGEST_UPLOADERS_SHOWN)
            .await?;
        self.metrics
            .set_artifact_usage(artifacts, &largest_uploaders);
        Ok(self
            .metrics
            .render(&depths, &statuses, process.log_lines_lost))
    }
}
