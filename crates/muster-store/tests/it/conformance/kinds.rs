//! Job kinds' result rules: set (replacing), read, listed by kind in byte order a page at a
//! time, removed; every change committed together with its audit entry.

use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use muster_core::Timestamp;
use muster_store::{
    AuditEntry, AuditFilter, KindSettingsRecord, NewAuditEntry, PageRequest, Store,
};
use serde_json::{Value, json};

use super::identity::audit;
use super::{at, every_page, expect_not_found, expect_rejected};

const SET: &str = "test.kind_settings_set";
const DELETED: &str = "test.kind_settings_deleted";

fn settings(
    kind: &str,
    schema: Option<Value>,
    signed: bool,
    when: Timestamp,
) -> KindSettingsRecord {
    KindSettingsRecord {
        kind: kind.to_string(),
        result_schema: schema,
        require_signed_results: signed,
        updated_at: when,
    }
}

fn set(record: &KindSettingsRecord) -> NewAuditEntry {
    audit(
        SET,
        &record.kind,
        record.updated_at,
        json!({"require_signed_results": record.require_signed_results}),
    )
}

fn page(limit: u32, cursor: Option<String>) -> PageRequest {
    PageRequest { limit, cursor }
}

fn nested_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["digest", "files"],
        "properties": {
            "digest": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
            "files": {"type": "array", "items": {"type": "object", "properties": {"size": {"type": "integer", "minimum": 0}}}},
            "note": {"type": ["string", "null"], "maxLength": 200}
        },
        "additionalProperties": false
    })
}

/// Every audit entry of `action`, newest first.
async fn audit_of(store: &dyn Store, action: &str) -> anyhow::Result<Vec<AuditEntry>> {
    let filter = AuditFilter {
        organization_id: None,
        action: Some(action.to_string()),
    };
    every_page("the audit log", 50, |page| {
        store.list_audit(filter.clone(), page)
    })
    .await
}

async fn all_kinds(store: &dyn Store, page_size: u32) -> anyhow::Result<Vec<KindSettingsRecord>> {
    every_page("kind settings", page_size, |page| {
        store.list_kind_settings(page)
    })
    .await
}

pub async fn kind_settings_put_then_get_round_trip(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let store = store.as_ref();
    ensure!(
        store.get_kind_settings("build").await?.is_none(),
        "no settings before they are put"
    );
    let record = settings("build", Some(nested_schema()), true, at(5));
    let stored = store
        .put_kind_settings(record.clone(), set(&record))
        .await
        .context("put settings")?;
    ensure!(
        stored == record,
        "the answer is the settings as given: {stored:?}"
    );
    let read = store.get_kind_settings("build").await?;
    ensure!(
        read == Some(record.clone()),
        "the settings read back with every field, the schema nested as given: {read:?}"
    );
    ensure!(
        store.get_kind_settings("Build").await?.is_none(),
        "kinds are case-sensitive"
    );
    let log = audit_of(store, SET).await?;
    ensure!(log.len() == 1, "one audit entry: {log:?}");
    ensure!(
        log[0].subject == "build"
            && log[0].actor == "admin"
            && log[0].at == at(5)
            && log[0].detail == json!({"require_signed_results": true}),
        "the audit entry is as recorded: {:?}",
        log[0]
    );
    Ok(())
}

pub async fn kind_settings_put_again_replaces_and_audits_each_time(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let first = settings("deploy", Some(nested_schema()), true, at(1));
    store.put_kind_settings(first.clone(), set(&first)).await?;
    let second = settings("deploy", Some(json!({"type": "string"})), false, at(2));
    let stored = store
        .put_kind_settings(second.clone(), set(&second))
        .await
        .context("put settings again")?;
    ensure!(
        stored == second,
        "the answer is the new settings: {stored:?}"
    );
    ensure!(
        store.get_kind_settings("deploy").await? == Some(second.clone()),
        "the new settings replaced the old"
    );
    let listed = all_kinds(store, 10).await?;
    ensure!(listed == vec![second], "one row for the kind: {listed:?}");
    let log = audit_of(store, SET).await?;
    ensure!(log.len() == 2, "two audit entries: {log:?}");
    ensure!(
        log[0].at == at(2) && log[1].at == at(1),
        "newest first: {log:?}"
    );
    Ok(())
}

pub async fn kind_settings_list_by_kind_in_byte_order_across_pages(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    // Byte order differs from every locale's: uppercase before lowercase, accents last.
    let kinds = ["é", "a", "Z", "B", "ab", "a b", "ä", "b", "_x", "A", "日本"];
    for (index, kind) in kinds.iter().enumerate() {
        let record = settings(kind, None, index % 2 == 0, at(index as i64));
        store
            .put_kind_settings(record.clone(), set(&record))
            .await?;
    }
    let mut expected: Vec<&str> = kinds.to_vec();
    expected.sort_unstable();
    for page_size in [1, 2, 3, 4, 11, 50] {
        let listed = all_kinds(store, page_size).await?;
        let names: Vec<&str> = listed.iter().map(|record| record.kind.as_str()).collect();
        ensure!(
            names == expected,
            "pages of {page_size} list by kind in byte order: {names:?}"
        );
    }
    let first = store.list_kind_settings(page(4, None)).await?;
    ensure!(first.items.len() == 4 && first.next_cursor.is_some());
    let full = store.list_kind_settings(page(11, None)).await?;
    ensure!(
        full.items.len() == 11,
        "a page of exactly all of them: {full:?}"
    );
    let after_full = match full.next_cursor {
        Some(cursor) => {
            store
                .list_kind_settings(page(11, Some(cursor)))
                .await?
                .items
        }
        None => Vec::new(),
    };
    ensure!(after_full.is_empty(), "nothing follows the last kind");
    for bad in ["", "nonsense", "17", "k6", "kzz"] {
        expect_rejected(
            store.list_kind_settings(page(5, Some(bad.into()))).await,
            &format!("cursor {bad:?}"),
        )?;
    }
    Ok(())
}

pub async fn deleted_kind_settings_are_gone_and_audited_once(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let kept = settings("kept", None, true, at(1));
    let doomed = settings("doomed", Some(nested_schema()), true, at(2));
    store.put_kind_settings(kept.clone(), set(&kept)).await?;
    store
        .put_kind_settings(doomed.clone(), set(&doomed))
        .await?;
    store
        .delete_kind_settings("doomed", audit(DELETED, "doomed", at(3), json!({})))
        .await
        .context("delete settings")?;
    ensure!(store.get_kind_settings("doomed").await?.is_none(), "gone");
    ensure!(
        all_kinds(store, 10).await? == vec![kept.clone()],
        "only the other kind is left"
    );
    let log = audit_of(store, DELETED).await?;
    ensure!(
        log.len() == 1 && log[0].subject == "doomed" && log[0].at == at(3),
        "one audit entry for the delete: {log:?}"
    );
    expect_not_found(
        store
            .delete_kind_settings("doomed", audit(DELETED, "doomed", at(4), json!({})))
            .await,
        "delete again",
    )?;
    expect_not_found(
        store
            .delete_kind_settings("never", audit(DELETED, "never", at(4), json!({})))
            .await,
        "delete a kind that never had settings",
    )?;
    match store
        .delete_kind_settings("never", audit(DELETED, "never", at(4), json!({})))
        .await
    {
        Err(muster_store::StoreError::NotFound(what)) => {
            ensure!(what.contains("never"), "NotFound names the kind: {what}");
        }
        other => bail!("expected NotFound, got {other:?}"),
    }
    ensure!(
        audit_of(store, DELETED).await?.len() == 1,
        "a delete of nothing records nothing"
    );
    ensure!(
        store.get_kind_settings("kept").await? == Some(kept),
        "the other kind is untouched"
    );
    Ok(())
}

pub async fn kind_settings_without_a_schema_round_trip(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let record = settings("plain", None, false, at(7));
    let stored = store
        .put_kind_settings(record.clone(), set(&record))
        .await?;
    ensure!(stored == record, "{stored:?}");
    let read = store.get_kind_settings("plain").await?;
    ensure!(
        read.as_ref().map(|read| &read.result_schema) == Some(&None),
        "no schema reads back as None, not JSON null: {read:?}"
    );
    ensure!(read == Some(record.clone()));
    // A schema replaced by none is gone too.
    let with = settings("plain", Some(json!({"type": "integer"})), true, at(8));
    store.put_kind_settings(with.clone(), set(&with)).await?;
    store
        .put_kind_settings(record.clone(), set(&record))
        .await?;
    ensure!(store.get_kind_settings("plain").await? == Some(record));
    Ok(())
}
