//! User tokens: minted by an admin (the bootstrap admin token, or a user token of the admin
//! role) with a role and an organization (or every organization), shown once, kept as a
//! SHA-256; listed and revoked by admins of their organization. A revoked token fails from the
//! next request on, on every coordinator sharing the store, because user tokens are read from
//! the store at each request.

use muster_core::organization::{OrganizationId, OrganizationScope, Role, TokenGrant, may_grant};
use muster_core::{
    Action, Principal, TextRule, Timestamp, USER_TOKEN_PREFIX, UserTokenId, authorize, check_field,
};
use muster_store::{NewAuditEntry, NewUserToken, Page, StoreError, UserTokenRecord};
use rand::Rng;
use serde_json::json;

use crate::auth::{hash_token, random_token_text};
use crate::jobs::page_request;
use crate::organizations::organization_not_found;
use crate::{Coordinator, ServiceError};

pub use muster_store::UserTokenRecord as UserTokenInfo;

/// Audit actions of user tokens.
pub mod audit_actions {
    pub const USER_TOKEN_CREATED: &str = "user_token.created";
    pub const USER_TOKEN_REVOKED: &str = "user_token.revoked";
}

/// The longest token name, in characters.
pub const MAX_TOKEN_NAME_LEN: usize = 200;

/// A user token to mint, as asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewTokenRequest {
    /// What the token is for ("ci", "alice's laptop"); shown in lists, never secret.
    pub name: String,
    /// `viewer`, `submitter`, `operator` or `admin`.
    pub role: String,
    /// The organization it acts in. A scoped admin: its own when omitted. An admin of every
    /// organization: every organization when omitted.
    pub organization_id: Option<String>,
    /// When it stops working; never when omitted. Must be in the future.
    pub expires_at: Option<Timestamp>,
}

/// A token just minted: its record and the token itself (shown this once).
#[derive(Debug, Clone, PartialEq)]
pub struct MintedToken {
    pub info: UserTokenInfo,
    pub token: String,
}

/// Who a token is, for `whoami`.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// `bootstrap-admin`, `user` or `runner`.
    pub kind: &'static str,
    /// The role it acts with (`None` for a runner).
    pub role: Option<Role>,
    /// Its organization; `None` for every organization (or, for a runner, cluster-scoped).
    pub organization_id: Option<String>,
    /// The user token's record, for a user token.
    pub token: Option<UserTokenInfo>,
    /// The runner's id, for a runner token.
    pub runner_id: Option<muster_core::RunnerId>,
}

/// What `principal` may grant: its role and scope, when it mints at all.
fn minter_grant(principal: &Principal) -> TokenGrant {
    match principal {
        Principal::User(user) => TokenGrant {
            role: user.role,
            scope: user.scope.clone(),
        },
        // The bootstrap admin (the only other principal past `authorize`) is admin of all.
        _ => TokenGrant {
            role: Role::Admin,
            scope: OrganizationScope::Every,
        },
    }
}

fn token_not_found(id: UserTokenId) -> ServiceError {
    ServiceError::from(StoreError::NotFound(format!("user token {id}")))
}

impl Coordinator {
    /// Mint a user token. Refused with nothing stored: an unknown role, a name out of rule, an
    /// expiry not in the future, an organization that does not exist (or, for a scoped admin,
    /// is not its own: answered as one that does not exist).
    pub async fn create_user_token(
        &self,
        principal: &Principal,
        request: NewTokenRequest,
    ) -> Result<MintedToken, ServiceError> {
        authorize(principal, Action::ManageUserTokens)?;
        check_field("name", &request.name, TextRule::name(MAX_TOKEN_NAME_LEN))
            .map_err(|error| ServiceError::invalid_input(error.to_string()))?;
        let role = Role::parse(&request.role)
            .map_err(|error| ServiceError::invalid_input(error.to_string()))?;
        let now = self.clock.now();
        if let Some(expires_at) = request.expires_at
            && expires_at <= now
        {
            return Err(ServiceError::invalid_input(format!(
                "expires_at: {} is not in the future",
                crate::rfc3339(expires_at)
            )));
        }
        let minter = minter_grant(principal);
        let scope = match (&minter.scope, request.organization_id) {
            (OrganizationScope::One(own), None) => OrganizationScope::One(own.clone()),
            (_, Some(asked)) => {
                let id =
                    OrganizationId::parse(&asked).map_err(|_| organization_not_found(&asked))?;
                OrganizationScope::One(id)
            }
            (OrganizationScope::Every, None) => OrganizationScope::Every,
        };
        let grant = TokenGrant { role, scope };
        may_grant(&minter, &grant).map_err(|refused| match refused {
            muster_core::organization::GrantRefused::OtherOrganization => match &grant.scope {
                OrganizationScope::One(asked) => organization_not_found(asked.as_str()),
                OrganizationScope::Every => ServiceError::forbidden(refused.to_string()),
            },
            other => ServiceError::new(other.code(), other.to_string()),
        })?;
        let organization_id = match &grant.scope {
            OrganizationScope::One(id) => {
                self.existing_organization(id.as_str()).await?;
                Some(id.as_str().to_string())
            }
            OrganizationScope::Every => None,
        };
        let token = format!("{USER_TOKEN_PREFIX}{}", random_token_text());
        let id = UserTokenId::new(now, rand::rng().random());
        let record = UserTokenRecord {
            id,
            name: request.name.trim().to_string(),
            role,
            organization_id: organization_id.clone(),
            created_at: now,
            expires_at: request.expires_at,
            last_used_at: None,
        };
        let audit = NewAuditEntry {
            at: now,
            actor: crate::identity::actor_of(principal),
            action: audit_actions::USER_TOKEN_CREATED.to_string(),
            subject: format!("user_token:{id}"),
            detail: json!({
                "name": record.name,
                "role": role.as_str(),
                "organization_id": organization_id,
                "expires_at": request.expires_at.map(crate::rfc3339),
            }),
            organization_id: organization_id.clone(),
        };
        let new_token = NewUserToken {
            record,
            token_hash: hash_token(&token),
        };
        match self.store.create_user_token(new_token, audit).await {
            // The organization went away between the check and the commit.
            Err(StoreError::NotFound(_)) => Err(organization_not_found(
                organization_id.as_deref().unwrap_or_default(),
            )),
            outcome => Ok(MintedToken {
                info: outcome?,
                token,
            }),
        }
    }

    /// User tokens, oldest first: those of the caller's organization for a scoped admin (asking
    /// for another answers `organization_not_found`), all of them or one organization's for an
    /// admin of every organization.
    pub async fn list_user_tokens(
        &self,
        principal: &Principal,
        organization_id: Option<String>,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> Result<Page<UserTokenInfo>, ServiceError> {
        authorize(principal, Action::ManageUserTokens)?;
        let organization = crate::scope::organization_for(principal, organization_id)?;
        Ok(self
            .store
            .list_user_tokens(organization, page_request(limit, cursor)?)
            .await?)
    }

    /// Revoke a user token: it stops working from the next request on. A token of another
    /// organization than a scoped admin's own answers as one that does not exist.
    pub async fn revoke_user_token(
        &self,
        principal: &Principal,
        id: UserTokenId,
    ) -> Result<(), ServiceError> {
        authorize(principal, Action::ManageUserTokens)?;
        let record = self
            .store
            .get_user_token(id)
            .await?
            .ok_or_else(|| token_not_found(id))?;
        if !crate::scope::sees(principal, record.organization_id.as_deref()) {
            return Err(token_not_found(id));
        }
        let audit = NewAuditEntry {
            at: self.clock.now(),
            actor: crate::identity::actor_of(principal),
            action: audit_actions::USER_TOKEN_REVOKED.to_string(),
            subject: format!("user_token:{id}"),
            detail: json!({
                "name": record.name,
                "role": record.role.as_str(),
                "organization_id": record.organization_id,
            }),
            organization_id: record.organization_id.clone(),
        };
        match self.store.revoke_user_token(id, audit).await {
            Err(StoreError::NotFound(_)) => Err(token_not_found(id)),
            outcome => outcome.map(|_| ()).map_err(ServiceError::from),
        }
    }

    /// Who `principal` is: the kind of token, its role and organization.
    pub async fn whoami(&self, principal: &Principal) -> Result<Identity, ServiceError> {
        match principal {
            Principal::BootstrapAdmin => Ok(Identity {
                kind: "bootstrap-admin",
                role: Some(Role::Admin),
                organization_id: None,
                token: None,
                runner_id: None,
            }),
            Principal::User(user) => {
                let token = self.store.get_user_token(user.token).await?;
                Ok(Identity {
                    kind: "user",
                    role: Some(user.role),
                    organization_id: match &user.scope {
                        OrganizationScope::Every => None,
                        OrganizationScope::One(id) => Some(id.as_str().to_string()),
                    },
                    token,
                    runner_id: None,
                })
            }
            Principal::Runner(runner) | Principal::PendingRunner(runner) => {
                let record = self.store.get_runner(*runner).await?;
                Ok(Identity {
                    kind: "runner",
                    role: None,
                    organization_id: record.organization_id,
                    token: None,
                    runner_id: Some(*runner),
                })
            }
        }
    }
}
