//! Runner identity: the allowlist of runner keys (oldest first) and the audit log (newest first),
//! and a change to the allowlist committed together with its audit entry.

use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use muster_core::Timestamp;
use muster_store::{
    AuditEntry, AuditFilter, NewAuditEntry, PageRequest, RunnerKeyRecord, Store, StoreError,
};
use serde_json::{Value, json};

use super::{T0, at, every_page, expect_not_found, expect_rejected};

/// A key with a fingerprint made from `n`, added at `at(n)`.
pub fn runner_key(n: u64, note: Option<&str>) -> RunnerKeyRecord {
    RunnerKeyRecord {
        fingerprint: format!("sha256:{n:064x}"),
        public_key: format!("key-{n}-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        note: note.map(str::to_string),
        organization_id: n.is_multiple_of(2).then(|| format!("org-{n}")),
        created_at: at(n as i64),
    }
}

pub fn audit(action: &str, subject: &str, at: Timestamp, detail: Value) -> NewAuditEntry {
    NewAuditEntry {
        at,
        actor: "admin".to_string(),
        action: action.to_string(),
        subject: subject.to_string(),
        detail,
        organization_id: None,
    }
}

fn added(key: &RunnerKeyRecord) -> NewAuditEntry {
    audit(
        "runner_key.added",
        &key.fingerprint,
        key.created_at,
        json!({"note": key.note}),
    )
}

fn page(limit: u32, cursor: Option<String>) -> PageRequest {
    PageRequest { limit, cursor }
}

/// The whole audit log (or one action's), newest first, one page of `page_size` at a time.
pub async fn all_audit(
    store: &dyn Store,
    action: Option<&str>,
    page_size: u32,
) -> anyhow::Result<Vec<AuditEntry>> {
    let filter = AuditFilter {
        action: action.map(str::to_string),
        organization_id: None,
    };
    every_page("the audit log", page_size, |page| {
        store.list_audit(filter.clone(), page)
    })
    .await
}

async fn all_keys(store: &dyn Store, page_size: u32) -> anyhow::Result<Vec<RunnerKeyRecord>> {
    every_page("runner keys", page_size, |page| {
        store.list_runner_keys(None, page)
    })
    .await
}

fn ids_increase_from_oldest(entries: &[AuditEntry]) -> anyhow::Result<()> {
    let ids = entries
        .iter()
        .map(|entry| {
            entry
                .id
                .parse::<u64>()
                .context("an audit id is decimal digits")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(
        ids.windows(2).all(|pair| pair[0] > pair[1]),
        "the audit log lists newest first, by id: {ids:?}"
    );
    Ok(())
}

pub async fn an_added_runner_key_reads_back_and_is_audited(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    ensure!(
        store
            .get_runner_key(&runner_key(2, None).fingerprint)
            .await?
            .is_none(),
        "no key before it is added"
    );
    let key = runner_key(2, Some("the build box"));
    let (stored, created) = store
        .add_runner_key(key.clone(), added(&key))
        .await
        .context("add a key")?;
    ensure!(created, "a new fingerprint is added");
    ensure!(stored == key, "the answer is the key as given: {stored:?}");
    ensure!(
        store.get_runner_key(&key.fingerprint).await? == Some(key.clone()),
        "the key reads back with every field"
    );
    let keyless = runner_key(3, None);
    store
        .add_runner_key(keyless.clone(), added(&keyless))
        .await?;
    ensure!(
        store.get_runner_key(&keyless.fingerprint).await? == Some(keyless.clone()),
        "a key without note or organization reads back"
    );
    let listed = store.list_runner_keys(None, page(10, None)).await?;
    ensure!(
        listed.items == vec![key.clone(), keyless.clone()] && listed.next_cursor.is_none(),
        "the list holds both keys, oldest first: {listed:?}"
    );
    let of_org = store
        .list_runner_keys(Some("org-2".into()), page(10, None))
        .await?;
    ensure!(
        of_org.items == vec![key.clone()],
        "one organization's keys only: {of_org:?}"
    );
    let of_none = store
        .list_runner_keys(Some("org-3".into()), page(10, None))
        .await?;
    ensure!(of_none.items.is_empty(), "{of_none:?}");
    let log = all_audit(store, None, 10).await?;
    ensure!(log.len() == 2, "one audit entry per key added: {log:?}");
    let first = &log[1];
    ensure!(
        first.action == "runner_key.added"
            && first.subject == key.fingerprint
            && first.actor == "admin"
            && first.at == key.created_at
            && first.detail == json!({"note": "the build box"}),
        "the audit entry is as recorded: {first:?}"
    );
    Ok(())
}

pub async fn adding_a_fingerprint_again_changes_nothing_and_records_nothing(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let key = runner_key(4, Some("first"));
    let (_, created) = store.add_runner_key(key.clone(), added(&key)).await?;
    ensure!(created);
    let again = RunnerKeyRecord {
        note: Some("second".into()),
        organization_id: None,
        created_at: at(1_000),
        ..key.clone()
    };
    let (stored, created) = store
        .add_runner_key(again.clone(), added(&again))
        .await
        .context("add the same fingerprint again")?;
    ensure!(!created, "the fingerprint was there already");
    ensure!(stored == key, "the answer is the stored key: {stored:?}");
    ensure!(
        store.get_runner_key(&key.fingerprint).await? == Some(key.clone()),
        "the stored key is unchanged"
    );
    ensure!(store.list_runner_keys(None, page(10, None)).await?.items == vec![key]);
    let log = all_audit(store, None, 10).await?;
    ensure!(log.len() == 1, "the second add recorded nothing: {log:?}");
    Ok(())
}

pub async fn runner_keys_list_oldest_first_across_pages(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    // Added in an order unlike their fingerprints' or times', so only insertion order fits.
    let keys: Vec<RunnerKeyRecord> = [9u64, 3, 7, 1, 8, 5, 6]
        .iter()
        .map(|n| runner_key(*n, None))
        .collect();
    for key in &keys {
        store.add_runner_key(key.clone(), added(key)).await?;
    }
    let first = store.list_runner_keys(None, page(3, None)).await?;
    ensure!(
        first.items == keys[..3],
        "the first page: {:?}",
        first.items
    );
    let cursor = first
        .next_cursor
        .context("a full page points at the next")?;
    let second = store.list_runner_keys(None, page(3, Some(cursor))).await?;
    ensure!(
        second.items == keys[3..6],
        "the second page: {:?}",
        second.items
    );
    let cursor = second
        .next_cursor
        .context("a full page points at the next")?;
    let third = store.list_runner_keys(None, page(3, Some(cursor))).await?;
    ensure!(third.items == keys[6..], "the last page: {:?}", third.items);
    ensure!(third.next_cursor.is_none(), "nothing follows the last page");
    for size in [1, 2, 7, 50] {
        ensure!(
            all_keys(store, size).await? == keys,
            "a walk by pages of {size} visits every key once, oldest first"
        );
    }
    for bad in ["not a cursor!", "%%%", "-1"] {
        expect_rejected(
            store
                .list_runner_keys(None, page(3, Some(bad.to_string())))
                .await,
            &format!("list_runner_keys with cursor {bad:?}"),
        )?;
        expect_rejected(
            store
                .list_audit(AuditFilter::default(), page(3, Some(bad.to_string())))
                .await,
            &format!("list_audit with cursor {bad:?}"),
        )?;
    }
    Ok(())
}

pub async fn a_removed_runner_key_is_gone_and_audited_once(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let key = runner_key(6, Some("retiring"));
    let kept = runner_key(11, None);
    store.add_runner_key(key.clone(), added(&key)).await?;
    store.add_runner_key(kept.clone(), added(&kept)).await?;
    let removal = audit(
        "runner_key.removed",
        &key.fingerprint,
        at(5_000),
        json!({"reason": "rotated"}),
    );
    let removed = store
        .remove_runner_key(&key.fingerprint, removal.clone())
        .await
        .context("remove the key")?;
    ensure!(
        removed.key == key && removed.revoked_runner.is_none(),
        "the answer is the removed key: {removed:?}"
    );
    ensure!(
        store.get_runner_key(&key.fingerprint).await?.is_none(),
        "the key is gone"
    );
    ensure!(
        store.list_runner_keys(None, page(10, None)).await?.items == vec![kept.clone()],
        "only the other key is listed"
    );
    let removals = all_audit(store, Some("runner_key.removed"), 10).await?;
    ensure!(removals.len() == 1, "one removal recorded: {removals:?}");
    ensure!(
        removals[0].subject == key.fingerprint
            && removals[0].at == at(5_000)
            && removals[0].detail == json!({"reason": "rotated"}),
        "the removal's entry is as recorded: {:?}",
        removals[0]
    );
    let outcome = store
        .remove_runner_key(&key.fingerprint, removal.clone())
        .await;
    match &outcome {
        Err(StoreError::NotFound(message)) => ensure!(
            message.contains(&key.fingerprint),
            "the refusal names the fingerprint: {message}"
        ),
        other => bail!("removing again: expected NotFound, got {other:?}"),
    }
    expect_not_found(
        store.remove_runner_key("sha256:never-added", removal).await,
        "removing a key never added",
    )?;
    ensure!(
        all_audit(store, None, 10).await?.len() == 3,
        "the refused removals recorded nothing"
    );
    ensure!(store.get_runner_key(&kept.fingerprint).await? == Some(kept));
    Ok(())
}

pub async fn the_audit_log_lists_newest_first_by_action_a_page_at_a_time(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let mut recorded = Vec::new();
    for index in 0..9i64 {
        let action = if index % 3 == 0 {
            "registration.refused"
        } else {
            "runner.registered"
        };
        let mut entry = audit(
            action,
            &format!("subject-{index}"),
            T0.plus_millis(index),
            json!({"index": index}),
        );
        // Entries 1, 3, 5 and 7 are team-a's; the others the whole cluster's.
        if index % 2 == 1 {
            entry.organization_id = Some("team-a".into());
        }
        store.append_audit(entry.clone()).await.context("append")?;
        recorded.push(entry);
    }
    let newest_first: Vec<&NewAuditEntry> = recorded.iter().rev().collect();
    for size in [1, 2, 4, 9, 20] {
        let all = all_audit(store, None, size).await?;
        ensure!(
            all.len() == 9,
            "every entry once by pages of {size}: {all:?}"
        );
        ids_increase_from_oldest(&all)?;
        for (entry, expected) in all.iter().zip(&newest_first) {
            ensure!(
                entry.action == expected.action
                    && entry.subject == expected.subject
                    && entry.at == expected.at
                    && entry.actor == expected.actor
                    && entry.detail == expected.detail
                    && entry.organization_id == expected.organization_id,
                "newest first: {entry:?} where {expected:?} belongs"
            );
        }
    }
    let first = store
        .list_audit(
            AuditFilter {
                action: Some("registration.refused".into()),
                organization_id: None,
            },
            page(2, None),
        )
        .await?;
    ensure!(
        first
            .items
            .iter()
            .map(|entry| entry.subject.as_str())
            .collect::<Vec<_>>()
            == ["subject-6", "subject-3"],
        "a filtered page holds only that action, newest first: {:?}",
        first.items
    );
    let cursor = first
        .next_cursor
        .context("a full filtered page points at the next")?;
    let second = store
        .list_audit(
            AuditFilter {
                action: Some("registration.refused".into()),
                organization_id: None,
            },
            page(2, Some(cursor)),
        )
        .await?;
    ensure!(
        second
            .items
            .iter()
            .map(|entry| entry.subject.as_str())
            .collect::<Vec<_>>()
            == ["subject-0"]
            && second.next_cursor.is_none(),
        "the last filtered page: {second:?}"
    );
    let registered = all_audit(store, Some("runner.registered"), 2).await?;
    ensure!(
        registered.len() == 6,
        "six of the other action: {registered:?}"
    );
    ensure!(
        registered
            .iter()
            .all(|entry| entry.action == "runner.registered")
    );
    ensure!(
        all_audit(store, Some("nothing.happened"), 5)
            .await?
            .is_empty(),
        "an action never recorded lists nothing"
    );
    // One organization's entries, a page at a time, alone and with an action.
    for (action, expected) in [
        (
            None,
            vec!["subject-7", "subject-5", "subject-3", "subject-1"],
        ),
        (Some("registration.refused"), vec!["subject-3"]),
    ] {
        let filter = AuditFilter {
            action: action.map(str::to_string),
            organization_id: Some("team-a".into()),
        };
        let listed = every_page("team-a's audit", 3, |page| {
            store.list_audit(filter.clone(), page)
        })
        .await?;
        let subjects: Vec<&str> = listed.iter().map(|entry| entry.subject.as_str()).collect();
        ensure!(
            subjects == expected,
            "team-a's entries ({action:?}): {subjects:?}"
        );
    }
    let elsewhere = store
        .list_audit(
            AuditFilter {
                action: None,
                organization_id: Some("team-b".into()),
            },
            page(10, None),
        )
        .await?;
    ensure!(elsewhere.items.is_empty() && elsewhere.next_cursor.is_none());
    Ok(())
}

pub async fn audit_detail_round_trips_as_json(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let store = store.as_ref();
    let detail = json!({
        "address": "192.0.2.7",
        "reason": "unknown key",
        "nested": {"labels": {"zone": "a", "gpu": "yes"}, "tries": [1, 2, 3], "ok": false},
        "nothing": null,
        "unicode": "schlüssel ✓",
        "quote": "it's \"quoted\"",
    });
    let entry = audit(
        "registration.refused",
        "key:sha256:ff",
        at(3),
        detail.clone(),
    );
    store.append_audit(entry.clone()).await?;
    let log = all_audit(store, None, 10).await?;
    ensure!(log.len() == 1, "{log:?}");
    ensure!(
        log[0].detail == detail,
        "the detail reads back: {:?}",
        log[0].detail
    );
    ensure!(
        log[0].actor == entry.actor && log[0].at == entry.at,
        "{:?}",
        log[0]
    );
    Ok(())
}

pub async fn a_key_and_its_audit_entry_are_committed_together(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let keys: Vec<RunnerKeyRecord> = (20..30).map(|n| runner_key(n, None)).collect();
    // Added at once, so backends that commit writes together (the SQLite writer's groups)
    // commit them together too.
    let adds = keys.iter().map(|key| {
        let key = key.clone();
        async move { store.add_runner_key(key.clone(), added(&key)).await }
    });
    for outcome in futures::future::join_all(adds).await {
        ensure!(outcome?.1, "every key is new");
    }
    let stored = all_keys(store, 100).await?;
    let audited = all_audit(store, Some("runner_key.added"), 100).await?;
    ensure!(stored.len() == keys.len(), "every key is there: {stored:?}");
    for key in &keys {
        ensure!(
            store.get_runner_key(&key.fingerprint).await? == Some(key.clone()),
            "key {} reads back",
            key.fingerprint
        );
        let entries = audited
            .iter()
            .filter(|entry| entry.subject == key.fingerprint)
            .count();
        ensure!(
            entries == 1,
            "key {} has exactly one audit entry, found {entries}",
            key.fingerprint
        );
    }
    // Racing adds of one fingerprint: one adds it and is audited, the others answer the key.
    let racer = runner_key(40, Some("raced"));
    let races = (0..8).map(|index| {
        let key = RunnerKeyRecord {
            note: Some(format!("racer {index}")),
            ..racer.clone()
        };
        async move { store.add_runner_key(key.clone(), added(&key)).await }
    });
    let outcomes = futures::future::join_all(races)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    ensure!(
        outcomes.iter().filter(|(_, created)| *created).count() == 1,
        "exactly one racing add adds the key: {outcomes:?}"
    );
    let winner = outcomes
        .iter()
        .find(|(_, created)| *created)
        .map(|(key, _)| key.clone())
        .context("the winner")?;
    ensure!(
        outcomes.iter().all(|(key, _)| *key == winner),
        "every racer answers the stored key: {outcomes:?}"
    );
    ensure!(
        all_audit(store, None, 100)
            .await?
            .iter()
            .filter(|entry| entry.subject == racer.fingerprint)
            .count()
            == 1,
        "the race recorded one audit entry"
    );
    Ok(())
}
