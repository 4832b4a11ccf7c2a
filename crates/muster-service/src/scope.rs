//! What a caller's organization scope lets it see. A token scoped to one organization finds
//! nothing of another: a list is filtered by the store query itself (so counts and cursors
//! never carry another organization's rows), and an object of another organization answers
//! exactly as an id that does not exist.

use muster_core::organization::OrganizationScope;
use muster_core::{JobId, Principal, RunnerId};
use muster_store::StoreError;

use crate::organizations::organization_not_found;
use crate::{Coordinator, ServiceError};

/// The organization `principal` acts in when it names `asked` (or none), for a list filter or
/// a new object: a scoped token's own whatever it asks (another one answers
/// `organization_not_found`, as one that does not exist); with a token of every organization,
/// what it asks for (none: every organization for a list, cluster-scoped for a runner or key,
/// `default` for a job).
pub(crate) fn organization_for(
    principal: &Principal,
    asked: Option<String>,
) -> Result<Option<String>, ServiceError> {
    match principal.scoped_organization() {
        None => Ok(asked),
        Some(own) => match asked {
            Some(asked) if asked != own.as_str() => Err(organization_not_found(&asked)),
            _ => Ok(Some(own.as_str().to_string())),
        },
    }
}

/// Whether `principal` may see an object of `organization` (`None`: cluster-scoped, which only
/// a token of every organization sees).
pub(crate) fn sees(principal: &Principal, organization: Option<&str>) -> bool {
    match organization {
        Some(organization) => principal.sees_organization(organization),
        None => principal.user_scope() == Some(&OrganizationScope::Every),
    }
}

pub(crate) fn job_not_found(id: JobId) -> ServiceError {
    ServiceError::from(StoreError::NotFound(format!("job {id}")))
}

pub(crate) fn runner_not_found(id: RunnerId) -> ServiceError {
    ServiceError::from(StoreError::NotFound(format!("runner {id}")))
}

impl Coordinator {
    /// `Ok` when `principal` may see job `id`; the job's absence otherwise. A token of every
    /// organization costs no read.
    pub(crate) async fn check_job_in_scope(
        &self,
        principal: &Principal,
        id: JobId,
    ) -> Result<(), ServiceError> {
        if principal.scoped_organization().is_none() {
            return Ok(());
        }
        let job = self.store.get_job(id).await?;
        if sees(principal, Some(&job.organization.id)) {
            Ok(())
        } else {
            Err(job_not_found(id))
        }
    }

    /// `Ok` when job `id` exists and `principal` may see it, at the cost of one read even for
    /// a token of every organization: for a stream, which must answer an unknown job with its
    /// absence before it opens rather than end at once as if the job were finished.
    pub(crate) async fn check_job_exists_in_scope(
        &self,
        principal: &Principal,
        id: JobId,
    ) -> Result<(), ServiceError> {
        let job = self.store.get_job(id).await?;
        if sees(principal, Some(&job.organization.id)) {
            Ok(())
        } else {
            Err(job_not_found(id))
        }
    }

    /// `Ok` when `principal` may see runner `id`; the runner's absence otherwise.
    pub(crate) async fn check_runner_in_scope(
        &self,
        principal: &Principal,
        id: RunnerId,
    ) -> Result<(), ServiceError> {
        if principal.scoped_organization().is_none() {
            return Ok(());
        }
        let runner = self.store.get_runner(id).await?;
        if sees(principal, runner.organization_id.as_deref()) {
            Ok(())
        } else {
            Err(runner_not_found(id))
        }
    }
}
