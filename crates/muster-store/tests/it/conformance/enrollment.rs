//! Runners registering by key: the upsert with its token rotation and overlap, the refusal of a
//! registration not newer than the key's last or decided on what changed, an operator's
//! decision, and a key's removal revoking its runner and releasing its leases in one commit.

use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use muster_core::{Capabilities, Enrollment, JobState, RunnerId, Timestamp};
use muster_store::{
    EnrollmentChange, EnrollmentChangeOutcome, KeyRegistration, RegistrationOutcome,
    RunnerCredentials, Store,
};
use serde_json::json;

use super::{
    T0, at, audit, claim_one, register_runner, runner_key, spec, submit_one, unique_bits,
    unique_token_hash,
};

/// A registration of the key numbered `key` signed at `signed_at`, decided as `enrollment`
/// from `decided_from`.
fn registration(
    key: u64,
    signed_at: Timestamp,
    decided_from: Option<Enrollment>,
    enrollment: Enrollment,
    key_was_allowed: bool,
) -> KeyRegistration {
    let bits = unique_bits();
    KeyRegistration {
        new_runner_id: RunnerId::new(T0.plus_millis(bits as i64), bits),
        key_fingerprint: runner_key(key, None).fingerprint,
        public_key: runner_key(key, None).public_key,
        name: format!("runner-{key}"),
        hostname: format!("host-{key}"),
        organization_id: None,
        kinds: vec!["build".into()],
        capabilities: Capabilities {
            tags: vec!["q4_k_m".into()],
            ..Default::default()
        },
        enrollment,
        decided_from,
        key_was_allowed,
        token_hash: unique_token_hash(),
        token_expires_at: signed_at.plus_millis(3_600_000),
        previous_token_until: signed_at.plus_millis(300_000),
        signed_at,
        now: signed_at,
    }
}

fn registered(outcome: RegistrationOutcome) -> anyhow::Result<(muster_core::RunnerRecord, bool)> {
    match outcome {
        RegistrationOutcome::Registered { runner, created } => Ok((*runner, created)),
        other => bail!("expected the registration recorded, got {other:?}"),
    }
}

async fn credentials(
    store: &dyn Store,
    token_hash: [u8; 32],
) -> anyhow::Result<Option<RunnerCredentials>> {
    store
        .runner_by_token_hash(token_hash)
        .await
        .context("look a token up")
}

pub async fn a_key_registration_is_an_upsert_that_rotates_the_token_with_an_overlap(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let number = unique_bits() as u64;
    let first = registration(number, at(1_000), None, Enrollment::Pending, false);
    let entry = audit("runner.registered", "runner:x", at(1_000), json!({}));
    let (runner, created) = registered(
        store
            .register_runner_key(first.clone(), entry.clone())
            .await?,
    )?;
    ensure!(created, "a new key makes a runner");
    ensure!(runner.id == first.new_runner_id);
    ensure!(runner.enrollment == Enrollment::Pending);
    ensure!(runner.key_fingerprint.as_deref() == Some(first.key_fingerprint.as_str()));
    ensure!(runner.public_key.as_deref() == Some(first.public_key.as_str()));
    ensure!(runner.hostname.as_deref() == Some(first.hostname.as_str()));
    ensure!(runner.bound_capabilities.as_ref() == Some(&first.capabilities));
    ensure!(runner.bound_kinds.as_deref() == Some(first.kinds.as_slice()));
    ensure!(runner.token_expires_at == Some(first.token_expires_at));
    ensure!(
        store
            .runner_by_key(&first.key_fingerprint)
            .await?
            .map(|found| found.id)
            == Some(runner.id)
    );
    let token = credentials(store, first.token_hash).await?;
    ensure!(
        token
            == Some(RunnerCredentials {
                runner: runner.id,
                enrollment: Enrollment::Pending,
                expires_at: Some(first.token_expires_at),
            }),
        "{token:?}"
    );

    // The same signature time again, or an earlier one: a replay; nothing is written.
    for signed_at in [at(1_000), at(999)] {
        let replay = registration(
            number,
            signed_at,
            Some(Enrollment::Pending),
            Enrollment::Pending,
            false,
        );
        let outcome = store
            .register_runner_key(replay.clone(), entry.clone())
            .await?;
        ensure!(
            outcome == RegistrationOutcome::NotNewer { last: at(1_000) },
            "{outcome:?}"
        );
        ensure!(credentials(store, replay.token_hash).await?.is_none());
    }
    // Decided on an enrollment that is not the runner's: nothing is written.
    let stale = registration(
        number,
        at(2_000),
        Some(Enrollment::Enrolled),
        Enrollment::Enrolled,
        false,
    );
    ensure!(
        store
            .register_runner_key(stale.clone(), entry.clone())
            .await?
            == RegistrationOutcome::Changed
    );
    ensure!(credentials(store, stale.token_hash).await?.is_none());
    // Decided on the key being allowed when it is not.
    let allowed = registration(
        number,
        at(2_000),
        Some(Enrollment::Pending),
        Enrollment::Enrolled,
        true,
    );
    ensure!(
        store.register_runner_key(allowed, entry.clone()).await? == RegistrationOutcome::Changed
    );

    let mut renewal = registration(
        number,
        at(2_000),
        Some(Enrollment::Pending),
        Enrollment::Pending,
        false,
    );
    renewal.name = "renamed".into();
    renewal.kinds = vec!["build".into(), "test".into()];
    let (renewed, created) = registered(
        store
            .register_runner_key(renewal.clone(), entry.clone())
            .await?,
    )?;
    ensure!(
        !created && renewed.id == runner.id,
        "the same key is the same runner"
    );
    ensure!(renewed.name == "renamed");
    ensure!(renewed.bound_kinds.as_deref() == Some(renewal.kinds.as_slice()));
    ensure!(renewed.token_expires_at == Some(renewal.token_expires_at));
    let previous = credentials(store, first.token_hash).await?;
    ensure!(
        previous.as_ref().and_then(|found| found.expires_at) == Some(renewal.previous_token_until),
        "the previous token works until the overlap ends: {previous:?}"
    );
    let current = credentials(store, renewal.token_hash).await?;
    ensure!(current.and_then(|found| found.expires_at) == Some(renewal.token_expires_at));

    // A third registration: the first token is gone, the second is now the previous one.
    let third = registration(
        number,
        at(3_000),
        Some(Enrollment::Pending),
        Enrollment::Pending,
        false,
    );
    registered(store.register_runner_key(third, entry).await?)?;
    ensure!(credentials(store, first.token_hash).await?.is_none());
    ensure!(credentials(store, renewal.token_hash).await?.is_some());
    Ok(())
}

pub async fn approving_enrolls_the_runner_and_allows_its_key_in_one_commit(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let number = unique_bits() as u64;
    let first = registration(number, at(1_000), None, Enrollment::Pending, false);
    let entry = audit("runner.registered", "runner:x", at(1_000), json!({}));
    let (runner, _) = registered(store.register_runner_key(first.clone(), entry).await?)?;
    let key = runner_key(number, Some("approved"));
    let approve = |expected| EnrollmentChange {
        runner: runner.id,
        expected,
        enrollment: Enrollment::Enrolled,
        revoke_tokens: false,
        add_key: Some(key.clone()),
        now: at(2_000),
    };
    let approval = audit("runner.approved", "runner:x", at(2_000), json!({}));
    let key_added = audit("runner_key.added", &key.fingerprint, at(2_000), json!({}));
    let raced = store
        .change_runner_enrollment(
            approve(Enrollment::Rejected),
            approval.clone(),
            key_added.clone(),
        )
        .await?;
    ensure!(
        raced
            == EnrollmentChangeOutcome::Raced {
                current: Enrollment::Pending
            },
        "{raced:?}"
    );
    ensure!(store.get_runner_key(&key.fingerprint).await?.is_none());
    match store
        .change_runner_enrollment(approve(Enrollment::Pending), approval, key_added)
        .await?
    {
        EnrollmentChangeOutcome::Changed {
            runner: changed,
            released,
            key_added,
        } => {
            ensure!(changed.enrollment == Enrollment::Enrolled);
            ensure!(released.is_empty() && key_added);
        }
        other => bail!("expected the approval applied, got {other:?}"),
    }
    ensure!(store.get_runner_key(&key.fingerprint).await?.is_some());
    let token = credentials(store, first.token_hash).await?;
    ensure!(
        token.map(|found| found.enrollment) == Some(Enrollment::Enrolled),
        "the current token is enrolled with its runner"
    );
    let unknown = store
        .change_runner_enrollment(
            EnrollmentChange {
                runner: RunnerId::new(at(1), 1),
                ..approve(Enrollment::Pending)
            },
            audit("runner.approved", "x", at(1), json!({})),
            audit("runner_key.added", "x", at(1), json!({})),
        )
        .await;
    ensure!(
        matches!(unknown, Err(muster_store::StoreError::NotFound(_))),
        "{unknown:?}"
    );
    Ok(())
}

pub async fn removing_a_key_revokes_its_runner_and_releases_its_leases_in_one_commit(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let number = unique_bits() as u64;
    let key = runner_key(number, None);
    store
        .add_runner_key(
            key.clone(),
            audit("runner_key.added", &key.fingerprint, at(1), json!({})),
        )
        .await?;
    let first = registration(number, at(1_000), None, Enrollment::Enrolled, true);
    let entry = audit("runner.registered", "runner:x", at(1_000), json!({}));
    let (runner, _) = registered(store.register_runner_key(first.clone(), entry).await?)?;
    let bystander = register_runner(store, "bystander").await?;
    let kind = format!("revoked-{number}");
    let job = submit_one(store, spec(&kind), at(1_100)).await?;
    let claimed = claim_one(store, runner.id, &kind, at(1_200)).await?;
    ensure!(claimed.job.id == job.id);

    let removal = audit("runner_key.removed", &key.fingerprint, at(1_300), json!({}));
    let removed = store.remove_runner_key(&key.fingerprint, removal).await?;
    ensure!(removed.key == key);
    ensure!(removed.revoked_runner == Some(runner.id));
    ensure!(removed.released == vec![job.id]);
    ensure!(
        credentials(store, first.token_hash).await?.is_none(),
        "its token is gone"
    );
    let after = store.get_runner(runner.id).await?;
    ensure!(
        after.enrollment == Enrollment::Pending,
        "{:?}",
        after.enrollment
    );
    ensure!(after.token_expires_at.is_none());
    let released = store.get_job(job.id).await?;
    ensure!(
        released.state() == JobState::Pending,
        "{:?}",
        released.state()
    );
    ensure!(
        store.get_runner(bystander).await.is_ok(),
        "other runners are untouched"
    );
    let revoked = super::identity::all_audit(store, Some("runner.revoked"), 100).await?;
    ensure!(
        revoked
            .iter()
            .any(|entry| entry.subject == format!("runner:{}", runner.id)),
        "{revoked:?}"
    );
    // The key can come back and the runner register again with it.
    store
        .add_runner_key(
            key.clone(),
            audit("runner_key.added", &key.fingerprint, at(1_400), json!({})),
        )
        .await?;
    let again = registration(
        number,
        at(1_500),
        Some(Enrollment::Pending),
        Enrollment::Enrolled,
        true,
    );
    let entry = audit("runner.registered", "runner:x", at(1_500), json!({}));
    let (back, created) = registered(store.register_runner_key(again, entry).await?)?;
    ensure!(!created && back.id == runner.id && back.enrollment == Enrollment::Enrolled);
    Ok(())
}
