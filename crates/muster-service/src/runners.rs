//! The runner registry: register a runner (its token minted here and shown once), list, show,
//! delete (its token stops working at once here, its leases are released).

use std::collections::BTreeMap;

use muster_core::{
    Action, Principal, RunnerId, RunnerRecord, RunnerStatus, authorize, runner_status,
};
use muster_store::{NewRunner, Page};

pub use muster_store::RunnerFilter;
use rand::Rng;

use crate::auth::{hash_token, new_runner_token};
use crate::jobs::page_request;
use crate::{Coordinator, ServiceError};

/// A runner to register.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunnerRegistration {
    pub name: String,
    /// Labels an operator gives it, which count for matching and the runner cannot override.
    pub labels: BTreeMap<String, String>,
    /// Tags and resources an operator fixes. When either is given, the runner's capabilities
    /// are bound to these and the labels: its claims may narrow them, never widen them.
    /// Without them, it declares tags, resources and further labels at each claim and is
    /// trusted to tell the truth.
    pub tags: Option<Vec<String>>,
    pub resources: Option<BTreeMap<String, f64>>,
    pub organization_id: Option<String>,
}

/// A runner as users see it: its record and its status now.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerView {
    pub runner: RunnerRecord,
    pub status: RunnerStatus,
}

/// A runner just registered, with its token (shown this once; only its hash is kept).
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredRunner {
    pub view: RunnerView,
    pub token: String,
}

impl Coordinator {
    pub(crate) fn runner_view(&self, runner: RunnerRecord) -> RunnerView {
        let status = runner_status(
            runner.last_seen_at,
            runner.draining,
            self.config.runner_offline_after_ms(),
            self.clock.now(),
        );
        RunnerView { runner, status }
    }

    pub async fn create_runner(
        &self,
        principal: &Principal,
        registration: RunnerRegistration,
    ) -> Result<RegisteredRunner, ServiceError> {
        authorize(principal, Action::ManageRunners)?;
        let invalid =
            |error: muster_core::JobSpecError| ServiceError::invalid_input(error.to_string());
        let name = muster_core::runner_name(&registration.name).map_err(invalid)?;
        let binds = registration.tags.is_some() || registration.resources.is_some();
        let capabilities = muster_core::Capabilities {
            labels: registration.labels,
            tags: registration.tags.unwrap_or_default(),
            resources: registration.resources.unwrap_or_default(),
        };
        capabilities.validate("").map_err(invalid)?;
        let organization_id =
            crate::scope::organization_for(principal, registration.organization_id)?;
        if let Some(organization_id) = &organization_id {
            muster_core::check_organization_id(organization_id).map_err(invalid)?;
            self.existing_organization(organization_id).await?;
        }
        let token = new_runner_token();
        let now = self.clock.now();
        let new_runner = NewRunner {
            id: RunnerId::new(now, rand::rng().random()),
            name,
            labels: capabilities.labels.clone(),
            organization_id,
            bound_capabilities: binds.then_some(capabilities),
            token_hash: hash_token(&token),
            created_at: now,
        };
        let runner = self.store.create_runner(new_runner).await?;
        self.runner_view.invalidate();
        Ok(RegisteredRunner {
            view: self.runner_view(runner),
            token,
        })
    }

    /// Runners, newest first.
    pub async fn list_runners(
        &self,
        principal: &Principal,
        filter: RunnerFilter,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> Result<Page<RunnerView>, ServiceError> {
        authorize(principal, Action::ReadRunners)?;
        let filter = RunnerFilter {
            organization_id: crate::scope::organization_for(principal, filter.organization_id)?,
        };
        let page = self
            .store
            .list_runners(filter, page_request(limit, cursor)?)
            .await?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|runner| self.runner_view(runner))
                .collect(),
            next_cursor: page.next_cursor,
        })
    }

    pub async fn get_runner(
        &self,
        principal: &Principal,
        id: RunnerId,
    ) -> Result<RunnerView, ServiceError> {
        authorize(principal, Action::ReadRunners)?;
        let runner = self.store.get_runner(id).await?;
        if !crate::scope::sees(principal, runner.organization_id.as_deref()) {
            return Err(crate::scope::runner_not_found(id));
        }
        Ok(self.runner_view(runner))
    }

    /// The runner whose current token hashes to `token_hash` (the lowercase hex SHA-256 of the
    /// token, as stored), for a component that was handed a runner token and must learn whose
    /// it is without keeping tokens itself. An unknown, revoked or expired token, and a runner
    /// outside the caller's organization, answer `not_found` alike.
    pub async fn runner_by_token_hash(
        &self,
        principal: &Principal,
        token_hash: &str,
    ) -> Result<RunnerView, ServiceError> {
        authorize(principal, Action::ManageRunners)?;
        let malformed = || {
            ServiceError::invalid_input(
                "token_hash: must be 64 lowercase hex digits, the SHA-256 of the token",
            )
        };
        if token_hash.len() != 64
            || !token_hash
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        {
            return Err(malformed());
        }
        let mut hash = [0u8; 32];
        for (index, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&token_hash[index * 2..index * 2 + 2], 16)
                .map_err(|_| malformed())?;
        }
        let unknown = || ServiceError::not_found("no runner holds a live token with this hash");
        let credentials = self
            .store
            .runner_by_token_hash(hash)
            .await?
            .ok_or_else(unknown)?;
        if credentials
            .expires_at
            .is_some_and(|expires| expires <= self.clock.now())
        {
            return Err(unknown());
        }
        let runner = match self.store.get_runner(credentials.runner).await {
            Ok(runner) => runner,
            Err(muster_store::StoreError::NotFound(_)) => return Err(unknown()),
            Err(error) => return Err(error.into()),
        };
        if !crate::scope::sees(principal, runner.organization_id.as_deref()) {
            return Err(unknown());
        }
        Ok(self.runner_view(runner))
    }

    /// Delete a runner: its token stops working (at once on this coordinator, within the token
    /// cache's few seconds on others) and the attempts it holds fail as lost leases.
    pub async fn delete_runner(
        &self,
        principal: &Principal,
        id: RunnerId,
    ) -> Result<(), ServiceError> {
        authorize(principal, Action::ManageRunners)?;
        self.check_runner_in_scope(principal, id).await?;
        let released = self.store.delete_runner(id, self.clock.now()).await?;
        self.auth.forget_runner(id);
        for job in released {
            self.job_changes.changed(job);
        }
        self.runner_view.invalidate();
        Ok(())
    }
}

impl Coordinator {
    /// The key `runner` registered itself with, which its result signatures must verify
    /// against; `None` for a runner an operator created (it has no key).
    pub(crate) async fn runner_public_key(
        &self,
        runner: RunnerId,
    ) -> Result<Option<muster_core::identity::RunnerPublicKey>, ServiceError> {
        let binding = self.auth.binding(runner, self.store.as_ref()).await?;
        Ok(binding.public_key)
    }
}
