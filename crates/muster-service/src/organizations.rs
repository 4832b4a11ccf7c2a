//! Organizations: created, listed, shown and deleted by the bootstrap admin token alone. The
//! `default` organization always exists; an organization is deleted only once nothing
//! unfinished is left in it (the store checks in the commit that deletes it). Ids are made
//! from the name (`Acme Corp` is `acme-corp`), so the CLI's `--org` reads as what it names.

use muster_core::organization::{DEFAULT_ORGANIZATION, OrganizationId};
use muster_core::{Action, ErrorCode, Principal, TextRule, authorize, check_field};
use muster_store::{NewAuditEntry, OrganizationRecord, Page};
use rand::Rng;
use serde_json::json;

use crate::jobs::page_request;
use crate::{Coordinator, ServiceError};

pub use muster_store::OrganizationRecord as Organization;

/// Audit actions of organizations.
pub mod audit_actions {
    pub const ORGANIZATION_CREATED: &str = "organization.created";
    pub const ORGANIZATION_DELETED: &str = "organization.deleted";
}

/// The longest organization name, in characters.
pub const MAX_ORGANIZATION_NAME_LEN: usize = 200;

/// The longest id made from a name, in characters.
const MAX_MADE_ID_LEN: usize = 63;

/// A new organization as asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewOrganization {
    pub name: String,
    /// Default true: cluster-scoped runners may take its jobs.
    pub allow_shared_runners: Option<bool>,
}

/// The id of an organization named `name`: its ASCII letters and digits lowercased, every other
/// run of characters one `-`, at most [`MAX_MADE_ID_LEN`] characters; `None` when nothing of the
/// name is left.
fn id_from_name(name: &str) -> Option<String> {
    let mut id = String::with_capacity(name.len().min(MAX_MADE_ID_LEN));
    for character in name.chars() {
        if character.is_ascii_alphanumeric() {
            id.push(character.to_ascii_lowercase());
        } else if !id.is_empty() && !id.ends_with('-') {
            id.push('-');
        }
        if id.len() >= MAX_MADE_ID_LEN {
            break;
        }
    }
    let id = id.trim_end_matches('-').to_string();
    (!id.is_empty()).then_some(id)
}

pub(crate) fn organization_not_found(id: &str) -> ServiceError {
    ServiceError::new(
        ErrorCode::OrganizationNotFound,
        format!("organization '{id}' not found (`muster orgs list` shows them)"),
    )
}

fn actor_of(principal: &Principal) -> String {
    crate::identity::actor_of(principal)
}

impl Coordinator {
    /// Create an organization. Its id is made from its name; a name (or the id made from it)
    /// that is taken answers `conflict`, with nothing stored.
    pub async fn create_organization(
        &self,
        principal: &Principal,
        new: NewOrganization,
    ) -> Result<Organization, ServiceError> {
        authorize(principal, Action::ManageOrganizations)?;
        check_field("name", &new.name, TextRule::name(MAX_ORGANIZATION_NAME_LEN))
            .map_err(|error| ServiceError::invalid_input(error.to_string()))?;
        let name = new.name.trim().to_string();
        // A name with nothing to make an id of ("日本", "!!!") gets a random one.
        let id = id_from_name(&name)
            .unwrap_or_else(|| format!("org-{:08x}", rand::rng().random::<u32>()));
        let now = self.clock.now();
        let record = OrganizationRecord {
            id: id.clone(),
            name,
            allow_shared_runners: new.allow_shared_runners.unwrap_or(true),
            created_at: now,
        };
        let audit = NewAuditEntry {
            at: now,
            actor: actor_of(principal),
            action: audit_actions::ORGANIZATION_CREATED.to_string(),
            subject: format!("organization:{id}"),
            detail: json!({
                "name": record.name,
                "allow_shared_runners": record.allow_shared_runners,
            }),
            organization_id: Some(id.clone()),
        };
        match self.store.create_organization(record, audit).await {
            Err(muster_store::StoreError::Conflict(_)) => Err(ServiceError::new(
                ErrorCode::Conflict,
                format!(
                    "name: the organization id '{id}' made from this name is taken; choose another name"
                ),
            )),
            outcome => Ok(outcome?),
        }
    }

    /// One organization; `organization_not_found` when there is none.
    pub async fn get_organization(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<Organization, ServiceError> {
        authorize(principal, Action::ManageOrganizations)?;
        if OrganizationId::parse(id).is_err() {
            return Err(organization_not_found(id));
        }
        self.store
            .get_organization(id)
            .await?
            .ok_or_else(|| organization_not_found(id))
    }

    /// Organizations oldest first (`default` first), a page at a time.
    pub async fn list_organizations(
        &self,
        principal: &Principal,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> Result<Page<Organization>, ServiceError> {
        authorize(principal, Action::ManageOrganizations)?;
        Ok(self
            .store
            .list_organizations(page_request(limit, cursor)?)
            .await?)
    }

    /// Delete an organization that nothing unfinished is left in. `default` always stays.
    pub async fn delete_organization(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<(), ServiceError> {
        authorize(principal, Action::ManageOrganizations)?;
        if id == DEFAULT_ORGANIZATION {
            return Err(ServiceError::new(
                ErrorCode::InvalidState,
                "the default organization always exists and cannot be deleted",
            ));
        }
        if OrganizationId::parse(id).is_err() {
            return Err(organization_not_found(id));
        }
        let audit = NewAuditEntry {
            at: self.clock.now(),
            actor: actor_of(principal),
            action: audit_actions::ORGANIZATION_DELETED.to_string(),
            subject: format!("organization:{id}"),
            detail: json!({}),
            organization_id: Some(id.to_string()),
        };
        match self.store.delete_organization(id, audit).await {
            Err(muster_store::StoreError::NotFound(_)) => Err(organization_not_found(id)),
            outcome => Ok(outcome?),
        }
    }

    /// `Ok` when the organization `id` exists; `organization_not_found` otherwise. For what
    /// names an organization to put something in it.
    pub(crate) async fn existing_organization(&self, id: &str) -> Result<(), ServiceError> {
        match self.store.get_organization(id).await? {
            Some(_) => Ok(()),
            None => Err(organization_not_found(id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_made_from_names_readably_or_not_at_all() {
        for (name, id) in [
            ("Acme Corp", Some("acme-corp")),
            ("  team_A / GPU  ", Some("team-a-gpu")),
            ("default", Some("default")),
            ("ML-Ops 2026", Some("ml-ops-2026")),
            ("日本", None),
            ("!!!", None),
            ("café", Some("caf")),
        ] {
            assert_eq!(id_from_name(name).as_deref(), id, "{name:?}");
        }
        let long = "a".repeat(500);
        assert_eq!(
            id_from_name(&long).map(|id| id.len()),
            Some(MAX_MADE_ID_LEN)
        );
        let dashes = format!("{}-b", "a".repeat(MAX_MADE_ID_LEN - 1));
        assert!(
            id_from_name(&dashes).is_some_and(|id| !id.ends_with('-')),
            "never ends with a dash"
        );
    }
}
