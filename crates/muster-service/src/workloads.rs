//! The workload registry: what runners host, recorded by the runner itself or by a user token
//! acting for it (an orchestrator), read by anyone who may read runners of its organization.
//!
//! The rules, once for every front end:
//! - Writes take `manage workloads` (operator) of the workload's organization, or the runner
//!   itself for its own workloads (another runner, and its workloads, answer absent to it).
//! - A workload belongs to an organization. A runner of an organization hosts only that
//!   organization's workloads; a shared runner hosts those of organizations that accept shared
//!   runners, as with jobs.
//! - A workload's status moves through `muster_core::workload_transition`; a deleted runner's
//!   unfinished workloads are failed (`runner_deleted`) in the same commit as the deletion.
//! - A workload whose runner is offline (or gone) is answered `stale`: its status is the last
//!   one reported, and nobody is reporting it now.

use muster_core::workload::{
    check_containers, check_workload_id, check_workload_reason, check_workload_reference,
};
use muster_core::{
    Action, Container, Principal, RunnerId, RunnerStatus, WorkloadRecord, WorkloadStatus,
    WorkloadStatusChange, authorize,
};
use muster_store::{Page, PageRequest, WorkloadFilter, WorkloadReport};

use crate::jobs::page_request;
use crate::scope::{organization_for, runner_not_found, sees};
use crate::{Coordinator, ServiceError};

/// A workload to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWorkload {
    pub id: String,
    /// `None` for a runner recording its own workload (it is the runner).
    pub runner_id: Option<RunnerId>,
    pub thread_id: String,
    pub agent_id: String,
    /// `None`: the runner's organization, the caller's for a scoped token, else `default`.
    pub organization_id: Option<String>,
    pub status: WorkloadStatus,
    pub status_reason: Option<String>,
    pub containers: Vec<Container>,
    pub ziti_identity_id: String,
}

/// A report of a workload's status.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadStatusReport {
    pub id: String,
    pub status: WorkloadStatus,
    /// `None` keeps the recorded containers.
    pub containers: Option<Vec<Container>>,
    pub reason: Option<String>,
}

/// A workload as answered: the record, and whether its status may be out of date.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadView {
    pub record: WorkloadRecord,
    /// Its runner is offline or gone, so the status is only the last one reported.
    pub stale: bool,
}

/// Which workloads to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkloadQuery {
    pub thread_id: Option<String>,
    pub runner_id: Option<RunnerId>,
    pub statuses: Vec<WorkloadStatus>,
    pub organization_id: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Who is writing: a user token (for any runner it may see) or a runner (for itself).
enum Writer {
    User,
    Runner(RunnerId),
}

fn writer(principal: &Principal) -> Result<Writer, ServiceError> {
    match principal {
        Principal::Runner(runner) | Principal::PendingRunner(runner) => {
            authorize(principal, Action::RunnerProtocol)?;
            Ok(Writer::Runner(*runner))
        }
        Principal::BootstrapAdmin | Principal::User(_) => {
            authorize(principal, Action::ManageWorkloads)?;
            Ok(Writer::User)
        }
    }
}

fn invalid(error: muster_core::JobSpecError) -> ServiceError {
    ServiceError::invalid_input(error.to_string())
}

fn workload_not_found(id: &str) -> ServiceError {
    ServiceError::from(muster_store::StoreError::NotFound(format!("workload {id}")))
}

fn check_report_fields(
    containers: Option<&[Container]>,
    reason: Option<&str>,
) -> Result<(), ServiceError> {
    if let Some(containers) = containers {
        check_containers("containers", containers).map_err(invalid)?;
    }
    if let Some(reason) = reason {
        check_workload_reason("status_reason", reason).map_err(invalid)?;
    }
    Ok(())
}

impl Coordinator {
    /// Record a new workload.
    pub async fn create_workload(
        &self,
        principal: &Principal,
        new: NewWorkload,
    ) -> Result<WorkloadView, ServiceError> {
        let writer = writer(principal)?;
        check_workload_id("id", &new.id).map_err(invalid)?;
        check_workload_reference("thread_id", &new.thread_id).map_err(invalid)?;
        check_workload_reference("agent_id", &new.agent_id).map_err(invalid)?;
        check_workload_reference("ziti_identity_id", &new.ziti_identity_id).map_err(invalid)?;
        check_report_fields(Some(&new.containers), new.status_reason.as_deref())?;
        let runner_id = match (&writer, new.runner_id) {
            // A runner records only its own workloads: another runner is not there for it, as
            // another runner's workloads are not.
            (Writer::Runner(own), Some(named)) if named != *own => {
                return Err(runner_not_found(named));
            }
            (Writer::Runner(own), _) => *own,
            (Writer::User, Some(named)) => named,
            (Writer::User, None) => {
                return Err(ServiceError::invalid_input(
                    "runner_id: required (the runner that hosts the workload)",
                ));
            }
        };
        let runner = match self.store.get_runner(runner_id).await {
            Ok(runner) => runner,
            Err(muster_store::StoreError::NotFound(_)) => return Err(runner_not_found(runner_id)),
            Err(error) => return Err(error.into()),
        };
        // A user names a shared runner, or one of an organization it sees; any other
        // organization's runner is not there for it.
        if matches!(writer, Writer::User)
            && runner
                .organization_id
                .as_deref()
                .is_some_and(|own| !principal.sees_organization(own))
        {
            return Err(runner_not_found(runner_id));
        }
        let asked = new
            .organization_id
            .or_else(|| runner.organization_id.clone());
        let organization = match writer {
            Writer::Runner(_) => asked,
            Writer::User => organization_for(principal, asked)?,
        }
        .unwrap_or_else(|| muster_core::organization::DEFAULT_ORGANIZATION.to_string());
        let organization_record = self
            .store
            .get_organization(&organization)
            .await?
            .ok_or_else(|| crate::organizations::organization_not_found(&organization))?;
        if !muster_core::organization::runner_may_take(
            runner.organization_id.as_deref(),
            &organization,
            organization_record.allow_shared_runners,
        ) {
            return Err(ServiceError::invalid_input(match &runner.organization_id {
                Some(own) => format!(
                    "organization_id: runner {runner_id} belongs to organization {own}, so it hosts only that organization's workloads"
                ),
                None => format!(
                    "organization_id: organization {organization} does not accept shared runners, and runner {runner_id} is one"
                ),
            }));
        }
        let now = self.clock.now();
        let record = WorkloadRecord {
            id: new.id,
            runner_id,
            thread_id: new.thread_id,
            agent_id: new.agent_id,
            organization: muster_core::organization::OrganizationId::parse(&organization)
                .map_err(invalid)?,
            status: new.status,
            status_reason: new.status_reason.unwrap_or_default(),
            containers: new.containers,
            ziti_identity_id: new.ziti_identity_id,
            created_at: now,
            updated_at: now,
        };
        let record = self.store.create_workload(record).await?;
        self.view_of(record).await
    }

    /// The workload `id`, if `principal` may see it.
    pub async fn get_workload(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<WorkloadView, ServiceError> {
        authorize(principal, Action::ReadWorkloads)?;
        let record = self.visible_workload(principal, id).await?;
        self.view_of(record).await
    }

    /// The workload's status changes, oldest first.
    pub async fn workload_history(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<Vec<WorkloadStatusChange>, ServiceError> {
        authorize(principal, Action::ReadWorkloads)?;
        self.visible_workload(principal, id).await?;
        Ok(self.store.workload_history(id).await?)
    }

    /// The workloads `query` selects among those `principal` sees, newest first.
    pub async fn list_workloads(
        &self,
        principal: &Principal,
        query: WorkloadQuery,
    ) -> Result<Page<WorkloadView>, ServiceError> {
        authorize(principal, Action::ReadWorkloads)?;
        if let Some(thread) = &query.thread_id {
            check_workload_reference("thread_id", thread).map_err(invalid)?;
        }
        let page: PageRequest = page_request(query.limit, query.cursor)?;
        let filter = WorkloadFilter {
            organization_id: organization_for(principal, query.organization_id)?,
            thread_id: query.thread_id,
            runner_id: query.runner_id,
            statuses: query.statuses,
        };
        let page = self.store.list_workloads(filter, page).await?;
        let statuses = self.runner_view.statuses(self).await;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|record| WorkloadView {
                    stale: is_stale(&record, statuses.get(&record.runner_id).copied()),
                    record,
                })
                .collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// Report a workload's status (and its containers).
    pub async fn report_workload(
        &self,
        principal: &Principal,
        report: WorkloadStatusReport,
    ) -> Result<WorkloadView, ServiceError> {
        let writer = writer(principal)?;
        check_report_fields(report.containers.as_deref(), report.reason.as_deref())?;
        self.writable_workload(principal, &writer, &report.id)
            .await?;
        let record = self
            .store
            .report_workload(WorkloadReport {
                id: report.id,
                status: report.status,
                containers: report.containers,
                reason: report.reason,
                at: self.clock.now(),
            })
            .await?;
        self.view_of(record).await
    }

    /// Remove a workload and its history.
    pub async fn delete_workload(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<(), ServiceError> {
        let writer = writer(principal)?;
        self.writable_workload(principal, &writer, id).await?;
        Ok(self.store.delete_workload(id).await?)
    }

    async fn visible_workload(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<WorkloadRecord, ServiceError> {
        check_workload_id("id", id).map_err(|_| workload_not_found(id))?;
        let record = self.store.get_workload(id).await?;
        if sees(principal, Some(record.organization.as_str())) {
            Ok(record)
        } else {
            Err(workload_not_found(id))
        }
    }

    /// The workload `id` if `writer` may change it: its own for a runner, one of an
    /// organization it sees for a user; absent otherwise.
    async fn writable_workload(
        &self,
        principal: &Principal,
        writer: &Writer,
        id: &str,
    ) -> Result<WorkloadRecord, ServiceError> {
        check_workload_id("id", id).map_err(|_| workload_not_found(id))?;
        let record = self.store.get_workload(id).await?;
        let allowed = match writer {
            Writer::Runner(own) => record.runner_id == *own,
            Writer::User => sees(principal, Some(record.organization.as_str())),
        };
        if allowed {
            Ok(record)
        } else {
            Err(workload_not_found(id))
        }
    }

    async fn view_of(&self, record: WorkloadRecord) -> Result<WorkloadView, ServiceError> {
        let status = match self.store.get_runner(record.runner_id).await {
            Ok(runner) => Some(muster_core::runner_status(
                runner.last_seen_at,
                runner.draining,
                self.config.runner_offline_after_ms(),
                self.clock.now(),
            )),
            Err(muster_store::StoreError::NotFound(_)) => None,
            Err(error) => return Err(error.into()),
        };
        Ok(WorkloadView {
            stale: is_stale(&record, status),
            record,
        })
    }
}

/// Whether `workload`, whose runner has `status` (`None`: gone), is reported by nobody now. A
/// finished workload never is: nothing more is expected of it.
fn is_stale(workload: &WorkloadRecord, status: Option<RunnerStatus>) -> bool {
    !workload.status.is_final()
        && !matches!(status, Some(RunnerStatus::Online | RunnerStatus::Draining))
}
