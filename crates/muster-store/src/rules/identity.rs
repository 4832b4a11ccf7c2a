//! Runner identity as the store keeps it: the allowlist of runner keys (oldest first) and the
//! audit log (newest first), how their rows read back, and the refusals by name.

use serde_json::Value;

use crate::{AuditEntry, AuditFilter, RunnerKeyRecord, StoreError};

pub(crate) fn runner_key_not_found(fingerprint: &str) -> StoreError {
    StoreError::NotFound(format!("runner key {fingerprint}"))
}

/// An audit entry's detail as stored: JSON text.
pub(crate) fn audit_detail_to_text(detail: &Value) -> String {
    detail.to_string()
}

/// A `runner_keys` row read back, in its stored form.
pub(crate) struct RunnerKeyColumns {
    pub(crate) fingerprint: String,
    pub(crate) public_key: String,
    pub(crate) note: Option<String>,
    pub(crate) organization_id: Option<String>,
    pub(crate) created_at: i64,
}

pub(crate) fn runner_key_record(columns: RunnerKeyColumns) -> RunnerKeyRecord {
    RunnerKeyRecord {
        fingerprint: columns.fingerprint,
        public_key: columns.public_key,
        note: columns.note,
        organization_id: columns.organization_id,
        created_at: muster_core::Timestamp(columns.created_at),
    }
}

/// The condition an audit list adds for `filter`, ahead of `seq < <1st> ORDER BY seq DESC LIMIT
/// <2nd>`: its values are the 3rd and 4th parameters, written by `placeholder` (`?3` or `$3`).
/// One statement per filter, so a list of one action reads the (action, seq) index and one of an
/// organization the (organization_id, seq) one.
pub(crate) fn audit_filter_condition(
    filter: &AuditFilter,
    placeholder: fn(usize) -> String,
) -> (String, Vec<&String>) {
    match (&filter.action, &filter.organization_id) {
        (Some(action), Some(organization)) => (
            format!(
                "action = {} AND organization_id = {} AND",
                placeholder(3),
                placeholder(4)
            ),
            vec![action, organization],
        ),
        (Some(action), None) => (format!("action = {} AND", placeholder(3)), vec![action]),
        (None, Some(organization)) => (
            format!("organization_id = {} AND", placeholder(3)),
            vec![organization],
        ),
        (None, None) => (String::new(), Vec::new()),
    }
}

/// An `audit_log` row read back, in its stored form.
pub(crate) struct AuditColumns<'a> {
    pub(crate) seq: i64,
    pub(crate) at: i64,
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) subject: String,
    /// JSON text.
    pub(crate) detail: &'a str,
    pub(crate) organization_id: Option<String>,
}

/// An audit entry read back; its id is its row's sequence number. Detail that is not JSON is
/// corrupt data.
pub(crate) fn audit_entry(columns: AuditColumns<'_>) -> Result<AuditEntry, StoreError> {
    let detail: Value = serde_json::from_str(columns.detail).map_err(|error| {
        StoreError::Internal(format!(
            "audit entry {}: stored detail: {error}",
            columns.seq
        ))
    })?;
    Ok(AuditEntry {
        id: columns.seq.to_string(),
        at: muster_core::Timestamp(columns.at),
        actor: columns.actor,
        action: columns.action,
        subject: columns.subject,
        detail,
        organization_id: columns.organization_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(detail: &str) -> AuditColumns<'_> {
        AuditColumns {
            seq: 42,
            at: 7,
            actor: "admin".into(),
            action: "runner_key.added".into(),
            subject: "sha256:00".into(),
            detail,
            organization_id: None,
        }
    }

    #[test]
    fn an_audit_entry_reads_back_with_its_sequence_number_as_id() {
        let detail = serde_json::json!({"note": "n", "nested": {"a": [1, 2]}});
        let entry = audit_entry(columns(&audit_detail_to_text(&detail))).expect("an entry");
        assert_eq!(entry.id, "42");
        assert_eq!(entry.at, muster_core::Timestamp(7));
        assert_eq!(entry.detail, detail);
        assert!(matches!(
            audit_entry(columns("{not json")),
            Err(StoreError::Internal(_))
        ));
        assert_eq!(
            runner_key_not_found("sha256:ab"),
            StoreError::NotFound("runner key sha256:ab".into())
        );
    }
}
