//! The fleet at a glance: jobs by state and by kind, as the dashboard's overview shows them.
//! Unfinished jobs are counted from what claims and the reaper read (so the cost follows the
//! queue, not the history); finished ones come from the counts `/metrics` reuses.

use std::time::Duration;

use futures::Stream;
use muster_core::{Action, JobState, Principal, authorize};

pub use crate::last_hour::RecentTotals;
use crate::scope::sees;
use crate::{Coordinator, ServiceError};

/// The most kinds a summary names, those with the most jobs; the rest are counted together.
pub const SUMMARY_KINDS: usize = 50;

/// How many jobs are in each state, in the order of [`JobState::ALL`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts(pub [u64; 7]);

impl StateCounts {
    fn add(&mut self, state: JobState, count: u64) {
        if let Some(position) = JobState::ALL.iter().position(|known| *known == state) {
            self.0[position] += count;
        }
    }

    pub fn of(&self, state: JobState) -> u64 {
        JobState::ALL
            .iter()
            .position(|known| *known == state)
            .map_or(0, |position| self.0[position])
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// One kind's jobs by state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindCounts {
    pub kind: String,
    pub counts: StateCounts,
}

/// Jobs by state, and by kind for the [`SUMMARY_KINDS`] kinds with the most jobs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobSummary {
    pub by_state: StateCounts,
    /// Most jobs first (ties by name).
    pub kinds: Vec<KindCounts>,
    /// The jobs of the kinds left out, by state.
    pub other_kinds: StateCounts,
    pub other_kind_count: u64,
    /// Completions and failed attempts in the last hour, on every coordinator of the store;
    /// `None` for a token scoped to one organization (they count every organization's jobs).
    pub last_hour: Option<RecentTotals>,
}

/// A followed summary is sent again no sooner than this after the last (a busy fleet changes all
/// the time: this bounds what one open overview costs the store)...
const SUMMARY_MIN_INTERVAL: Duration = Duration::from_secs(5);
/// ...and no later than this even when nothing here changed (other coordinators' changes, the
/// last hour's window moving).
const SUMMARY_MAX_INTERVAL: Duration = Duration::from_secs(30);

/// What a followed summary yields.
#[derive(Debug, Clone, PartialEq)]
pub enum SummaryEvent {
    Summary(Box<JobSummary>),
    /// Reading it failed; the stream ends.
    Failed(ServiceError),
}

impl Coordinator {
    /// The summary now, then again whenever jobs changed (at most every 5 s, at least every
    /// 30 s), and only when it differs from the last one sent.
    pub async fn follow_job_summary(
        &self,
        principal: &Principal,
    ) -> Result<impl Stream<Item = SummaryEvent> + Send + 'static, ServiceError> {
        let mut changes = self.job_changes.fleet.subscribe();
        changes.mark_unchanged();
        let first = self.job_summary(principal).await?;
        let coordinator = self.clone();
        let principal = principal.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = first;
            if sender
                .send(SummaryEvent::Summary(Box::new(last.clone())))
                .await
                .is_err()
            {
                return;
            }
            loop {
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep(SUMMARY_MAX_INTERVAL) => {}
                    _ = sender.closed() => return,
                    _ = coordinator.shutdown.cancelled() => return,
                }
                tokio::select! {
                    _ = tokio::time::sleep(SUMMARY_MIN_INTERVAL) => {}
                    _ = sender.closed() => return,
                    _ = coordinator.shutdown.cancelled() => return,
                }
                changes.mark_unchanged();
                match coordinator.job_summary(&principal).await {
                    Ok(summary) if summary == last => {}
                    Ok(summary) => {
                        last = summary;
                        if sender
                            .send(SummaryEvent::Summary(Box::new(last.clone())))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "failed to count jobs for a followed summary; closing it");
                        let _ = sender.send(SummaryEvent::Failed(error)).await;
                        return;
                    }
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(receiver))
    }

    /// Jobs by state and kind, of the organizations `principal` sees.
    pub async fn job_summary(&self, principal: &Principal) -> Result<JobSummary, ServiceError> {
        authorize(principal, Action::ReadJobs)?;
        let mut depths = self.store.active_job_counts().await?;
        depths.extend(self.finished_counts.get(self.store.as_ref()).await?);
        let mut summary = JobSummary::default();
        let mut by_kind: std::collections::HashMap<String, StateCounts> =
            std::collections::HashMap::new();
        for depth in depths {
            if !sees(principal, Some(&depth.organization)) {
                continue;
            }
            summary.by_state.add(depth.state, depth.count);
            by_kind
                .entry(depth.kind)
                .or_default()
                .add(depth.state, depth.count);
        }
        let mut kinds: Vec<KindCounts> = by_kind
            .into_iter()
            .map(|(kind, counts)| KindCounts { kind, counts })
            .collect();
        kinds.sort_by(|a, b| {
            b.counts
                .total()
                .cmp(&a.counts.total())
                .then_with(|| a.kind.cmp(&b.kind))
        });
        for left_out in kinds.drain(kinds.len().min(SUMMARY_KINDS)..) {
            summary.other_kind_count += 1;
            for state in JobState::ALL {
                summary.other_kinds.add(state, left_out.counts.of(state));
            }
        }
        summary.kinds = kinds;
        if principal.scoped_organization().is_none() {
            summary.last_hour = Some(self.last_hour().await?);
        }
        Ok(summary)
    }
}
