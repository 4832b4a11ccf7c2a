//! Organizations and user tokens as the store keeps them: rows read back into records (a role
//! that is none of the four is corrupt data, not a viewer), the refusals by name, and what
//! keeps an organization from being deleted; dashboard sessions read back.

use muster_core::organization::Role;
use muster_core::{Timestamp, UserTokenId};

use crate::{
    OrganizationContents, OrganizationRecord, SessionHolder, SessionRecord, StoreError,
    UserTokenRecord,
};

/// An `organizations` row read back, in its stored form.
pub(crate) struct OrganizationColumns {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) allow_shared_runners: bool,
    pub(crate) created_at: i64,
}

pub(crate) fn organization_record(columns: OrganizationColumns) -> OrganizationRecord {
    OrganizationRecord {
        id: columns.id,
        name: columns.name,
        allow_shared_runners: columns.allow_shared_runners,
        created_at: Timestamp(columns.created_at),
    }
}

/// A `user_tokens` row read back, in its stored form.
pub(crate) struct UserTokenColumns<'a> {
    pub(crate) id: &'a [u8],
    pub(crate) name: String,
    pub(crate) role: &'a str,
    pub(crate) organization_id: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) expires_at: Option<i64>,
    pub(crate) last_used_at: Option<i64>,
}

/// The record of a `user_tokens` row; `Err` names what in it is not what this store writes.
pub(crate) fn user_token_record(columns: UserTokenColumns<'_>) -> Result<UserTokenRecord, String> {
    let id = UserTokenId::from_slice(columns.id)
        .ok_or_else(|| format!("a user token id of {} bytes", columns.id.len()))?;
    let role = Role::parse(columns.role).map_err(|error| error.to_string())?;
    Ok(UserTokenRecord {
        id,
        name: columns.name,
        role,
        organization_id: columns.organization_id,
        created_at: Timestamp(columns.created_at),
        expires_at: columns.expires_at.map(Timestamp),
        last_used_at: columns.last_used_at.map(Timestamp),
    })
}

pub(crate) fn organization_not_found(id: &str) -> StoreError {
    StoreError::NotFound(format!("organization {id}"))
}

pub(crate) fn user_token_not_found(id: UserTokenId) -> StoreError {
    StoreError::NotFound(format!("user token {id}"))
}

/// The refusal of an organization whose id or name is taken.
pub(crate) fn organization_taken(organization: &OrganizationRecord) -> StoreError {
    StoreError::Conflict(format!(
        "name: an organization named '{}' already exists",
        organization.name
    ))
}

/// `Ok` when nothing keeps the organization `id` from being deleted.
pub(crate) fn check_deletable(id: &str, contents: OrganizationContents) -> Result<(), StoreError> {
    if contents.is_empty() {
        Ok(())
    } else {
        Err(StoreError::OrganizationNotEmpty {
            organization: id.to_string(),
            contents,
        })
    }
}

/// A count as the database answers it (never negative).
pub(crate) fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// How many expired sessions a new session's commit deletes at most: a sign-in then costs a
/// bounded amount of work, and the table stays near the number of live sessions as long as
/// people sign in more often than sessions pile up unused.
pub(crate) const EXPIRED_SESSIONS_DELETED_PER_SIGN_IN: i64 = 100;

/// A session row's columns, as both backends store them: `user_token_id` for a user token's
/// session, `admin_token_hash` for the bootstrap admin's.
pub(crate) struct SessionColumns<'a> {
    pub(crate) secret_hash: &'a [u8],
    pub(crate) user_token_id: Option<&'a [u8]>,
    pub(crate) admin_token_hash: Option<&'a [u8]>,
    pub(crate) created_at: i64,
    pub(crate) expires_at: i64,
}

impl SessionRecord {
    /// The `user_token_id` and `admin_token_hash` columns of this session.
    pub(crate) fn holder_columns(&self) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        match &self.opened_with {
            SessionHolder::UserToken(id) => (Some(id.as_bytes().to_vec()), None),
            SessionHolder::BootstrapAdmin { admin_token_hash } => {
                (None, Some(admin_token_hash.to_vec()))
            }
        }
    }
}

pub(crate) fn session_record(columns: SessionColumns<'_>) -> Result<SessionRecord, String> {
    let secret_hash: [u8; 32] = columns
        .secret_hash
        .try_into()
        .map_err(|_| format!("a session hash of {} bytes", columns.secret_hash.len()))?;
    let opened_with = match (columns.user_token_id, columns.admin_token_hash) {
        (Some(id), None) => SessionHolder::UserToken(
            UserTokenId::from_slice(id)
                .ok_or_else(|| format!("a user token id of {} bytes", id.len()))?,
        ),
        (None, Some(hash)) => SessionHolder::BootstrapAdmin {
            admin_token_hash: hash
                .try_into()
                .map_err(|_| format!("an admin token hash of {} bytes", hash.len()))?,
        },
        _ => return Err("a session of neither a user token nor the bootstrap admin".into()),
    };
    Ok(SessionRecord {
        secret_hash,
        opened_with,
        created_at: Timestamp(columns.created_at),
        expires_at: Timestamp(columns.expires_at),
    })
}

pub(crate) fn session_not_found() -> StoreError {
    StoreError::NotFound("session".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns<'a>(id: &'a [u8], role: &'a str) -> UserTokenColumns<'a> {
        UserTokenColumns {
            id,
            name: "ci".into(),
            role,
            organization_id: Some("team-a".into()),
            created_at: 5,
            expires_at: None,
            last_used_at: Some(7),
        }
    }

    #[test]
    fn a_token_row_reads_back_and_a_corrupt_one_says_what_is_wrong() {
        let id = [7u8; 16];
        let record = user_token_record(columns(&id, "operator")).expect("a valid row");
        assert_eq!(record.role, Role::Operator);
        assert_eq!(record.id.as_bytes(), &id);
        assert_eq!(record.last_used_at, Some(Timestamp(7)));
        let error = user_token_record(columns(&id, "root")).expect_err("no such role");
        assert!(error.contains("root"), "{error}");
        let error = user_token_record(columns(&id[..3], "viewer")).expect_err("short id");
        assert!(error.contains("3 bytes"), "{error}");
    }

    #[test]
    fn an_organization_is_deletable_only_when_empty() {
        assert_eq!(
            check_deletable("a", OrganizationContents::default()),
            Ok(())
        );
        let contents = OrganizationContents {
            unfinished_jobs: 2,
            runners: 0,
            user_tokens: 1,
            unfinished_workloads: 3,
        };
        let error = check_deletable("a", contents).expect_err("not empty");
        assert_eq!(
            error,
            StoreError::OrganizationNotEmpty {
                organization: "a".into(),
                contents
            }
        );
        let message = error.to_string();
        assert!(
            message.contains("2 unfinished jobs") && message.contains("1 user tokens"),
            "{message}"
        );
        assert_eq!(count(-1), 0);
    }
}
