//! Cancel or retry many jobs at once: the jobs a user picked by id, or every job matching a
//! filter, one bounded page per call so a million matching jobs never make one long request.
//!
//! Each job goes through the same fenced transition as a single cancel or retry, so a job that
//! changed state since it was listed is left alone and reported, never clobbered. Which states
//! an action changes is [`BulkJobAction::changes_jobs_in`]; a dry run counts exactly those
//! jobs (capped, like every count the coordinator makes). Every page that changed something is
//! written to the audit log, one entry per organization it touched.

use std::collections::{BTreeMap, HashSet};

use muster_core::{Action, BulkJobAction, JobId, JobRecord, JobState, Principal, authorize};
use muster_store::{JobFilter, NewAuditEntry, PageRequest, StoreError};
use serde_json::json;

use crate::identity::actor_of;
use crate::jobs::page_request;
use crate::scope::{job_not_found, organization_for, sees};
use crate::{Coordinator, ServiceError};

/// The audit actions of bulk changes.
pub mod audit_actions {
    pub const JOBS_BULK_CANCELLED: &str = "jobs.bulk_cancelled";
    pub const JOBS_BULK_RETRIED: &str = "jobs.bulk_retried";
}

/// No count goes past this: beyond it a count answers "at least this many" (shown `10,000+`),
/// so counting costs at most this many index rows whatever the number of jobs.
pub const COUNT_CAP: u64 = 10_000;

/// The most ids one bulk request may name.
pub const MAX_BULK_IDS: usize = 1_000;

/// A count that stops at [`COUNT_CAP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CappedCount {
    pub count: u64,
    /// Whether there are more than `count` (the count stopped at its cap).
    pub capped: bool,
}

impl CappedCount {
    fn of(counted: u64) -> CappedCount {
        CappedCount {
            count: counted.min(COUNT_CAP),
            capped: counted > COUNT_CAP,
        }
    }
}

/// Which jobs a bulk request acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum BulkSelection {
    /// These jobs (at most [`MAX_BULK_IDS`]); an id named twice counts once.
    Ids(Vec<JobId>),
    /// Every job matching the filter, a page per call (a scoped token's own organization only).
    Matching(JobFilter),
}

/// A bulk request: the action, its jobs, and for a filter which page.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkRequest {
    pub action: BulkJobAction,
    pub selection: BulkSelection,
    /// From the previous call's `next_cursor`; only with a filter.
    pub cursor: Option<String>,
    /// How many matching jobs one call examines (the list's page bounds); only with a filter.
    pub limit: Option<u32>,
}

/// A job the action changed, and the state it is in now.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkChanged {
    pub id: JobId,
    pub state: JobState,
}

/// A job the action left alone, and why: not found (or not visible), in a state the action
/// does not change, or changed by someone else since it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkSkipped {
    pub id: JobId,
    /// Its state when it was refused; `None` when it was not found.
    pub state: Option<JobState>,
    pub error: ServiceError,
}

/// What one bulk call did.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkOutcome {
    pub action: BulkJobAction,
    /// How many jobs this call looked at.
    pub examined: u64,
    pub changed: Vec<BulkChanged>,
    pub skipped: Vec<BulkSkipped>,
    /// Where the next call goes on, for a filter with jobs left; `None` when done.
    pub next_cursor: Option<String>,
}

impl Coordinator {
    /// How many jobs match `filter`, up to [`COUNT_CAP`] (a scoped token counts its own
    /// organization's only).
    pub async fn count_jobs(
        &self,
        principal: &Principal,
        mut filter: JobFilter,
    ) -> Result<CappedCount, ServiceError> {
        authorize(principal, Action::ReadJobs)?;
        filter.organization_id = organization_for(principal, filter.organization_id)?;
        let counted = self.store.count_jobs(filter, COUNT_CAP + 1).await?;
        Ok(CappedCount::of(counted))
    }

    /// A dry run: how many of the selected jobs `action` would change now, changing nothing.
    pub async fn count_bulk(
        &self,
        principal: &Principal,
        action: BulkJobAction,
        selection: BulkSelection,
    ) -> Result<CappedCount, ServiceError> {
        authorize(principal, Action::SteerJobs)?;
        match selection {
            BulkSelection::Ids(ids) => {
                let mut would_change = 0;
                for id in distinct_ids(ids)? {
                    if let Ok(job) = self.visible_job(principal, id).await
                        && action.changes(job.state())
                    {
                        would_change += 1;
                    }
                }
                Ok(CappedCount::of(would_change))
            }
            BulkSelection::Matching(filter) => {
                let filter = self.scoped_filter(principal, filter)?;
                let mut counted = 0;
                for state in states_to_visit(action, filter.state) {
                    let remaining = COUNT_CAP + 1 - counted;
                    let in_state = JobFilter {
                        state: Some(state),
                        ..filter.clone()
                    };
                    counted += self.store.count_jobs(in_state, remaining).await?;
                    if counted > COUNT_CAP {
                        break;
                    }
                }
                Ok(CappedCount::of(counted))
            }
        }
    }

    /// Apply `request.action` to the selected jobs (for a filter, to one page of them), each
    /// through its own fenced transition.
    pub async fn bulk_jobs(
        &self,
        principal: &Principal,
        request: BulkRequest,
    ) -> Result<BulkOutcome, ServiceError> {
        authorize(principal, Action::SteerJobs)?;
        let action = request.action;
        let mut outcome = BulkOutcome {
            action,
            examined: 0,
            changed: Vec::new(),
            skipped: Vec::new(),
            next_cursor: None,
        };
        let mut organizations: BTreeMap<String, Vec<JobId>> = BTreeMap::new();
        let filter_detail = match request.selection {
            BulkSelection::Ids(ids) => {
                if request.cursor.is_some() || request.limit.is_some() {
                    return Err(ServiceError::invalid_input(
                        "'cursor' and 'limit' page through a filter; a list of ids takes neither",
                    ));
                }
                for id in distinct_ids(ids)? {
                    outcome.examined += 1;
                    match self.visible_job(principal, id).await {
                        Ok(job) => {
                            self.apply(action, job, &mut outcome, &mut organizations)
                                .await
                        }
                        Err(error) => outcome.skipped.push(BulkSkipped {
                            id,
                            state: None,
                            error,
                        }),
                    }
                }
                serde_json::Value::Null
            }
            BulkSelection::Matching(filter) => {
                let filter = self.scoped_filter(principal, filter)?;
                let states = states_to_visit(action, filter.state);
                let (mut position, mut cursor) = parse_bulk_cursor(request.cursor, states.len())?;
                let page = page_request(request.limit, None)?;
                // Walk the states the action changes, one list per state, until a page's worth
                // of jobs was examined or every state is exhausted.
                while let Some(state) = states.get(position).copied() {
                    let wanted = page.limit - outcome.examined as u32;
                    if wanted == 0 {
                        break;
                    }
                    let in_state = JobFilter {
                        state: Some(state),
                        ..filter.clone()
                    };
                    let listed = self
                        .store
                        .list_jobs(
                            in_state,
                            PageRequest {
                                limit: wanted,
                                cursor: cursor.take(),
                            },
                        )
                        .await?;
                    for job in listed.items {
                        outcome.examined += 1;
                        self.apply(action, job, &mut outcome, &mut organizations)
                            .await;
                    }
                    match listed.next_cursor {
                        Some(next) => cursor = Some(next),
                        None => position += 1,
                    }
                }
                if position < states.len() {
                    outcome.next_cursor = Some(format!(
                        "{position}.{}",
                        cursor.as_deref().unwrap_or_default()
                    ));
                }
                json!({
                    "state": filter.state.map(|state| state.as_str()),
                    "kind": filter.kind,
                    "runner_id": filter.runner_id.map(|id| id.to_string()),
                    "organization_id": filter.organization_id,
                })
            }
        };
        self.audit_bulk(principal, action, organizations, filter_detail)
            .await;
        Ok(outcome)
    }

    /// Job `id` when it exists and `principal` may see it; its absence otherwise.
    async fn visible_job(
        &self,
        principal: &Principal,
        id: JobId,
    ) -> Result<JobRecord, ServiceError> {
        let job = self.store.get_job(id).await?;
        if sees(principal, Some(&job.organization.id)) {
            Ok(job)
        } else {
            Err(job_not_found(id))
        }
    }

    fn scoped_filter(
        &self,
        principal: &Principal,
        mut filter: JobFilter,
    ) -> Result<JobFilter, ServiceError> {
        filter.organization_id = organization_for(principal, filter.organization_id)?;
        Ok(filter)
    }

    /// Apply `action` to `job` (as read), recording the change or why it was left alone.
    async fn apply(
        &self,
        action: BulkJobAction,
        job: JobRecord,
        outcome: &mut BulkOutcome,
        organizations: &mut BTreeMap<String, Vec<JobId>>,
    ) {
        let id = job.id;
        let state = job.state();
        if !action.changes(state) {
            outcome.skipped.push(BulkSkipped {
                id,
                state: Some(state),
                error: ServiceError::invalid_state(format!(
                    "job {id} is {state}: {} changes only {} jobs",
                    action.as_str(),
                    state_names(action)
                )),
            });
            return;
        }
        let now = self.clock.now();
        let changed = match action {
            BulkJobAction::Cancel => {
                let grace_ms = self.config.cancel_grace.as_millis() as i64;
                self.store.cancel_job(id, grace_ms, now).await
            }
            BulkJobAction::Retry => self.store.retry_job(id, now).await,
        };
        match changed {
            Ok(job) => {
                self.job_changes.changed(id);
                if action == BulkJobAction::Cancel {
                    self.attached.cancel_requested(id, self.config.cancel_grace);
                }
                organizations
                    .entry(job.organization.id.clone())
                    .or_default()
                    .push(id);
                outcome.changed.push(BulkChanged {
                    id,
                    state: job.state(),
                });
            }
            Err(error) => {
                // Changed by someone else since it was read: the transition refused it, and
                // its state now says why.
                let now_state = match &error {
                    StoreError::NotFound(_) => None,
                    _ => self.store.get_job(id).await.ok().map(|job| job.state()),
                };
                outcome.skipped.push(BulkSkipped {
                    id,
                    state: now_state,
                    error: ServiceError::from(error),
                });
            }
        }
    }

    /// One audit entry per organization whose jobs the call changed.
    async fn audit_bulk(
        &self,
        principal: &Principal,
        action: BulkJobAction,
        organizations: BTreeMap<String, Vec<JobId>>,
        filter: serde_json::Value,
    ) {
        let audit_action = match action {
            BulkJobAction::Cancel => audit_actions::JOBS_BULK_CANCELLED,
            BulkJobAction::Retry => audit_actions::JOBS_BULK_RETRIED,
        };
        for (organization, ids) in organizations {
            let entry = NewAuditEntry {
                at: self.clock.now(),
                actor: actor_of(principal),
                action: audit_action.to_string(),
                subject: format!("{} jobs", ids.len()),
                detail: json!({
                    "jobs": ids.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
                    "filter": filter,
                }),
                organization_id: Some(organization),
            };
            if let Err(error) = self.store.append_audit(entry).await {
                // The jobs are changed already; the log keeps what the audit could not.
                tracing::error!(%error, action = audit_action, jobs = ?ids, "failed to audit a bulk change");
            }
        }
    }
}

/// `ids` without repeats, in their order; refused when empty or too many.
fn distinct_ids(ids: Vec<JobId>) -> Result<Vec<JobId>, ServiceError> {
    if ids.is_empty() {
        return Err(ServiceError::invalid_input(
            "'ids': name at least one job (or give a 'filter')",
        ));
    }
    if ids.len() > MAX_BULK_IDS {
        return Err(ServiceError::invalid_input(format!(
            "'ids': at most {MAX_BULK_IDS} jobs per request (page through a 'filter' for more)"
        )));
    }
    let mut seen = HashSet::new();
    Ok(ids.into_iter().filter(|id| seen.insert(*id)).collect())
}

/// The states whose jobs a filtered bulk request visits: those the action changes, narrowed
/// to the filter's state when it names one.
fn states_to_visit(action: BulkJobAction, filtered: Option<JobState>) -> Vec<JobState> {
    action
        .changes_jobs_in()
        .iter()
        .copied()
        .filter(|state| filtered.is_none_or(|filtered| filtered == *state))
        .collect()
}

fn state_names(action: BulkJobAction) -> String {
    action
        .changes_jobs_in()
        .iter()
        .map(|state| state.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A bulk cursor is `<state position>.<list cursor>`: which of the visited states the walk is
/// in, and where in that state's list.
fn parse_bulk_cursor(
    cursor: Option<String>,
    states: usize,
) -> Result<(usize, Option<String>), ServiceError> {
    let Some(cursor) = cursor.filter(|cursor| !cursor.is_empty()) else {
        return Ok((0, None));
    };
    let invalid = || {
        ServiceError::invalid_input("'cursor': not one this coordinator gave out for this filter")
    };
    let (position, list_cursor) = cursor.split_once('.').ok_or_else(invalid)?;
    let position: usize = position.parse().map_err(|_| invalid())?;
    if position >= states {
        return Err(invalid());
    }
    Ok((
        position,
        Some(list_cursor.to_string()).filter(|cursor| !cursor.is_empty()),
    ))
}
