//! Organizations and user tokens: `default` is always there; organizations list oldest first a
//! page at a time, a taken name is refused with nothing stored, and one is deleted only when
//! nothing unfinished is in it; user tokens are found by their hash (never listed with it),
//! listed all or by organization, touched without going back in time, and revoked at once; every
//! change committed together with its audit entry. Dashboard sessions are found by their hash,
//! ended once, swept when expired, and gone with the user token they were opened with.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use muster_core::organization::{DEFAULT_ORGANIZATION, Role};
use muster_core::{JobOrganization, JobSpec, JobState, NewJob, RunnerId, Timestamp, UserTokenId};
use muster_store::{
    AuditFilter, ClaimRequest, JobFilter, NewAuditEntry, NewRunner, NewUserToken,
    OrganizationContents, OrganizationRecord, PageRequest, RunnerFilter, SessionHolder,
    SessionRecord, Store, StoreError, UserTokenRecord,
};
use serde_json::json;

use super::identity::audit;
use super::{
    at, claim_request, every_page, expect_not_found, new_job, unique_bits, unique_token_hash,
};

const CREATED: &str = "test.organization_created";
const DELETED: &str = "test.organization_deleted";
const TOKEN_CREATED: &str = "test.user_token_created";
const TOKEN_REVOKED: &str = "test.user_token_revoked";

fn organization(id: &str, name: &str, shared: bool, when: Timestamp) -> OrganizationRecord {
    OrganizationRecord {
        id: id.to_string(),
        name: name.to_string(),
        allow_shared_runners: shared,
        created_at: when,
    }
}

fn created(organization: &OrganizationRecord) -> NewAuditEntry {
    audit(
        CREATED,
        &organization.id,
        organization.created_at,
        json!({}),
    )
}

async fn audited(store: &dyn Store, action: &str) -> anyhow::Result<Vec<String>> {
    let page = store
        .list_audit(
            AuditFilter {
                action: Some(action.to_string()),
                organization_id: None,
            },
            PageRequest {
                limit: 100,
                cursor: None,
            },
        )
        .await?;
    Ok(page.items.into_iter().map(|entry| entry.subject).collect())
}

fn new_token(name: &str, role: Role, organization: Option<&str>, when: Timestamp) -> NewUserToken {
    let bits = unique_bits();
    NewUserToken {
        record: UserTokenRecord {
            id: UserTokenId::new(when, bits),
            name: name.to_string(),
            role,
            organization_id: organization.map(str::to_string),
            created_at: when,
            expires_at: Some(when.plus_millis(3_600_000)),
            last_used_at: None,
        },
        token_hash: unique_token_hash(),
    }
}

async fn store_token(store: &dyn Store, token: &NewUserToken) -> anyhow::Result<UserTokenRecord> {
    store
        .create_user_token(
            token.clone(),
            audit(
                TOKEN_CREATED,
                &token.record.id.to_string(),
                token.record.created_at,
                json!({}),
            ),
        )
        .await
        .context("store a user token")
}

pub async fn the_default_organization_is_there_and_organizations_list_oldest_first(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let default = store
        .get_organization(DEFAULT_ORGANIZATION)
        .await?
        .context("the default organization exists from the first migration on")?;
    ensure!(default.name == DEFAULT_ORGANIZATION && default.allow_shared_runners);

    let mut made = Vec::new();
    for (index, name) in ["alpha", "Beta Team", "gamma"].into_iter().enumerate() {
        let record = organization(
            &format!("org-{index}"),
            name,
            index != 1,
            at(1_000 + index as i64),
        );
        let stored = store
            .create_organization(record.clone(), created(&record))
            .await?;
        ensure!(stored == record, "stored as given: {stored:?}");
        made.push(record);
    }
    let listed = every_page("organizations", 2, |page| store.list_organizations(page)).await?;
    let mut expected = vec![default.clone()];
    expected.extend(made.iter().cloned());
    ensure!(
        listed == expected,
        "default first, then oldest first: {listed:?}"
    );
    ensure!(
        store.get_organization("org-1").await? == Some(made[1].clone()),
        "read back by id"
    );
    ensure!(store.get_organization("org-9").await?.is_none());

    // A taken name (or id) is refused, with nothing stored and nothing recorded.
    for clash in [
        organization("org-new", "alpha", true, at(2_000)),
        organization("org-0", "another", true, at(2_000)),
    ] {
        match store
            .create_organization(clash.clone(), created(&clash))
            .await
        {
            Err(StoreError::Conflict(message)) => {
                ensure!(message.contains(&clash.name), "names the clash: {message}")
            }
            other => bail!("a taken name or id must be refused, got {other:?}"),
        }
    }
    let after = every_page("organizations", 10, |page| store.list_organizations(page)).await?;
    ensure!(after == expected, "nothing stored by a refusal: {after:?}");
    ensure!(
        audited(store, CREATED).await?.len() == 3,
        "one audit entry per organization created"
    );
    Ok(())
}

pub async fn an_organization_is_deleted_only_when_nothing_is_left_in_it(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let team = organization("team", "team", true, at(1_000));
    store
        .create_organization(team.clone(), created(&team))
        .await?;
    let runner_id = RunnerId::new(at(1_100), unique_bits());
    store
        .create_runner(NewRunner {
            id: runner_id,
            name: "team-runner".into(),
            labels: Default::default(),
            organization_id: Some("team".into()),
            bound_capabilities: None,
            token_hash: unique_token_hash(),
            created_at: at(1_100),
        })
        .await?;
    let token = store_token(
        store,
        &new_token("ci", Role::Viewer, Some("team"), at(1_200)),
    )
    .await?;

    // A shared runner hosting one of the team's workloads: the workload keeps the team too.
    let shared_runner = super::register_runner(store, "shared-host").await?;
    let workload_id = format!("team-workload-{:x}", unique_bits());
    store
        .create_workload(muster_core::WorkloadRecord {
            id: workload_id.clone(),
            runner_id: shared_runner,
            thread_id: String::new(),
            agent_id: String::new(),
            organization: muster_core::organization::OrganizationId::parse("team")?,
            status: muster_core::WorkloadStatus::Running,
            status_reason: String::new(),
            containers: Vec::new(),
            ziti_identity_id: String::new(),
            created_at: at(1_300),
            updated_at: at(1_300),
        })
        .await?;

    let deleting = || audit(DELETED, "team", at(2_000), json!({}));
    match store.delete_organization("team", deleting()).await {
        Err(StoreError::OrganizationNotEmpty {
            organization,
            contents,
        }) => {
            ensure!(organization == "team");
            ensure!(
                contents
                    == OrganizationContents {
                        unfinished_jobs: 0,
                        runners: 1,
                        user_tokens: 1,
                        unfinished_workloads: 1,
                    },
                "counts what keeps it: {contents:?}"
            );
        }
        other => bail!("an organization with a runner and a token stays, got {other:?}"),
    }
    ensure!(
        store.get_organization("team").await?.is_some(),
        "still there"
    );
    ensure!(
        audited(store, DELETED).await?.is_empty(),
        "nothing recorded"
    );

    store.delete_runner(runner_id, at(2_100)).await?;
    store
        .revoke_user_token(token.id, audit(TOKEN_REVOKED, "ci", at(2_200), json!({})))
        .await?;
    match store.delete_organization("team", deleting()).await {
        Err(StoreError::OrganizationNotEmpty { contents, .. }) => ensure!(
            contents.unfinished_workloads == 1 && contents.runners == 0,
            "its running workload still keeps it: {contents:?}"
        ),
        other => bail!("an organization with a running workload stays, got {other:?}"),
    }
    store
        .report_workload(muster_store::WorkloadReport {
            id: workload_id,
            status: muster_core::WorkloadStatus::Stopped,
            containers: None,
            reason: None,
            at: at(2_300),
        })
        .await?;
    store.delete_organization("team", deleting()).await?;
    ensure!(store.get_organization("team").await?.is_none(), "deleted");
    ensure!(audited(store, DELETED).await? == vec!["team".to_string()]);
    expect_not_found(
        store.delete_organization("team", deleting()).await,
        "deleting it again",
    )?;
    ensure!(
        audited(store, DELETED).await?.len() == 1,
        "a refused deletion records nothing"
    );
    Ok(())
}

pub async fn user_tokens_are_found_by_hash_listed_by_organization_touched_and_revoked(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let every = new_token("root-ish", Role::Admin, None, at(1_000));
    let team_viewer = new_token("viewer", Role::Viewer, Some("team"), at(1_001));
    let team_operator = new_token("operator", Role::Operator, Some("team"), at(1_002));
    let other = new_token("other", Role::Submitter, Some("other"), at(1_003));
    let mut stored = Vec::new();
    for token in [&every, &team_viewer, &team_operator, &other] {
        let record = store_token(store, token).await?;
        ensure!(record == token.record, "stored as given: {record:?}");
        stored.push(record);
    }

    let all = every_page("tokens", 3, |page| store.list_user_tokens(None, page)).await?;
    ensure!(all == stored, "every token, oldest first: {all:?}");
    let team = every_page("team tokens", 1, |page| {
        store.list_user_tokens(Some("team".into()), page)
    })
    .await?;
    ensure!(
        team == vec![team_viewer.record.clone(), team_operator.record.clone()],
        "only the organization's own (not every-organization tokens): {team:?}"
    );
    ensure!(
        store.user_token_by_hash(team_viewer.token_hash).await? == Some(team_viewer.record.clone())
    );
    ensure!(store.user_token_by_hash([0xAB; 32]).await?.is_none());
    ensure!(store.get_user_token(other.record.id).await? == Some(other.record.clone()));

    // Used: last_used_at moves forward, never back.
    store
        .touch_user_token(team_viewer.record.id, at(5_000))
        .await?;
    store
        .touch_user_token(team_viewer.record.id, at(4_000))
        .await?;
    let touched = store
        .get_user_token(team_viewer.record.id)
        .await?
        .context("still there")?;
    ensure!(touched.last_used_at == Some(at(5_000)), "{touched:?}");

    // Revoked: gone at once, found by neither id nor hash, and recorded.
    let revoked = store
        .revoke_user_token(
            team_viewer.record.id,
            audit(TOKEN_REVOKED, "viewer", at(6_000), json!({})),
        )
        .await?;
    ensure!(revoked.id == team_viewer.record.id);
    ensure!(
        store
            .user_token_by_hash(team_viewer.token_hash)
            .await?
            .is_none()
    );
    ensure!(store.get_user_token(team_viewer.record.id).await?.is_none());
    expect_not_found(
        store
            .revoke_user_token(
                team_viewer.record.id,
                audit(TOKEN_REVOKED, "viewer", at(6_100), json!({})),
            )
            .await,
        "revoking it again",
    )?;
    ensure!(audited(store, TOKEN_CREATED).await?.len() == 4);
    ensure!(
        audited(store, TOKEN_REVOKED).await?.len() == 1,
        "a refused revocation records nothing"
    );
    Ok(())
}

fn job_of(kind: &str, organization: &str, shared: bool, constrained: bool) -> NewJob {
    let mut spec = JobSpec::with_defaults(kind);
    if constrained {
        spec.requirements.tags = vec!["gpu".into()];
    }
    NewJob {
        organization: JobOrganization {
            id: organization.to_string(),
            shared_runners: shared,
        },
        ..new_job(spec, at(100))
    }
}

async fn runner_of(
    store: &dyn Store,
    name: &str,
    organization: Option<&str>,
) -> anyhow::Result<RunnerId> {
    let id = RunnerId::new(at(50), unique_bits());
    store
        .create_runner(NewRunner {
            id,
            name: name.into(),
            labels: Default::default(),
            organization_id: organization.map(str::to_string),
            bound_capabilities: None,
            token_hash: unique_token_hash(),
            created_at: at(50),
        })
        .await?;
    Ok(id)
}

pub async fn a_runner_claims_its_organizations_jobs_and_a_shared_one_only_those_that_allow_it(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    // Two jobs without requirements and one with, in each of three organizations: the
    // default one, one that allows shared runners and one that refuses them.
    let mut jobs = Vec::new();
    for (organization, shared) in [("default", true), ("alpha", true), ("solo", false)] {
        for constrained in [false, false, true] {
            jobs.push(job_of("k", organization, shared, constrained));
        }
    }
    let submitted = store.submit_jobs(jobs).await?;
    let organization_of = |id: muster_core::JobId| {
        submitted
            .iter()
            .find(|job| job.job.id == id)
            .map(|job| job.job.organization.id.clone())
            .unwrap_or_default()
    };
    for answer in &submitted {
        let read = store.get_job(answer.job.id).await?;
        ensure!(
            read.organization == answer.job.organization,
            "the organization reads back: {read:?}"
        );
    }
    let solo_runner = runner_of(store, "solo-box", Some("solo")).await?;
    let shared_runner = runner_of(store, "shared-box", None).await?;
    let alpha_runner = runner_of(store, "alpha-box", Some("alpha")).await?;
    let claim_all = |runner| ClaimRequest {
        offer: muster_core::Capabilities {
            tags: vec!["gpu".into()],
            ..Default::default()
        },
        ..claim_request(runner, &["k"], 20)
    };

    // A runner of the default organization takes default's jobs only.
    let default_runner = runner_of(store, "default-box", Some("default")).await?;
    // Listing by organization reads one organization's runners only, cluster-scoped ones in
    // none of them.
    let page = || PageRequest {
        limit: 100,
        cursor: None,
    };
    let listed_of = |organization: Option<&str>| RunnerFilter {
        organization_id: organization.map(str::to_string),
    };
    let alpha_listed = store.list_runners(listed_of(Some("alpha")), page()).await?;
    ensure!(
        alpha_listed
            .items
            .iter()
            .map(|runner| runner.id)
            .collect::<Vec<_>>()
            == [alpha_runner],
        "alpha's runners: {alpha_listed:?}"
    );
    let nowhere = store
        .list_runners(listed_of(Some("nowhere")), page())
        .await?;
    ensure!(nowhere.items.is_empty() && nowhere.next_cursor.is_none());
    let every = store.list_runners(listed_of(None), page()).await?;
    ensure!(every.items.len() == 4, "all four runners: {every:?}");
    let taken = store.claim_jobs(claim_all(default_runner), at(900)).await?;
    let organizations: Vec<String> = taken
        .iter()
        .map(|job| organization_of(job.job.id))
        .collect();
    ensure!(
        organizations == ["default", "default", "default"],
        "a runner of default: {organizations:?}"
    );
    // A cluster-scoped runner takes the jobs of every organization that allows shared runners,
    // and none of one that refuses them.
    let taken = store
        .claim_jobs(claim_all(shared_runner), at(1_000))
        .await?;
    let organizations: Vec<String> = taken
        .iter()
        .map(|job| organization_of(job.job.id))
        .collect();
    ensure!(
        organizations == ["alpha", "alpha", "alpha"],
        "a shared runner: {organizations:?}"
    );
    // A runner of an organization takes its own organization's jobs only, whatever is left of
    // the others'.
    let none_left = store.claim_jobs(claim_all(alpha_runner), at(1_100)).await?;
    ensure!(
        none_left.is_empty(),
        "alpha's jobs are taken; solo's are not alpha's: {none_left:?}"
    );
    let solo = store.claim_jobs(claim_all(solo_runner), at(1_200)).await?;
    ensure!(
        solo.len() == 3 && solo.iter().all(|job| organization_of(job.job.id) == "solo"),
        "the solo runner takes solo's three: {solo:?}"
    );

    // A solo job that failed and waits to run again is still solo's alone.
    let failed = &solo[0];
    store
        .fail_job(
            super::call_for(failed, solo_runner),
            super::runner_error("try again"),
            true,
            at(1_300),
        )
        .await?;
    let later = at(10_000_000);
    ensure!(
        store
            .claim_jobs(claim_all(shared_runner), later)
            .await?
            .is_empty(),
        "a retried job keeps its organization's refusal of shared runners"
    );
    let again = store.claim_jobs(claim_all(solo_runner), later).await?;
    ensure!(
        again.len() == 1 && again[0].job.id == failed.job.id,
        "its own runner takes it again: {again:?}"
    );

    // A runner of an organization takes its organization's jobs through its own index.
    let fresh = store
        .submit_jobs(vec![job_of("k", "alpha", true, false)])
        .await?;
    let alpha = store.claim_jobs(claim_all(alpha_runner), later).await?;
    ensure!(
        alpha.len() == 1 && alpha[0].job.id == fresh[0].job.id,
        "alpha's runner takes alpha's new job: {alpha:?}"
    );

    // Listing by organization.
    let listed = store
        .list_jobs(
            JobFilter {
                organization_id: Some("solo".into()),
                ..Default::default()
            },
            PageRequest {
                limit: 50,
                cursor: None,
            },
        )
        .await?;
    ensure!(
        listed.items.len() == 3 && listed.items.iter().all(|job| job.organization.id == "solo"),
        "{listed:?}"
    );
    Ok(())
}

pub async fn an_idempotency_key_names_one_job_per_organization(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let keyed = |organization: &str| {
        let mut job = job_of("keyed", organization, true, false);
        job.spec.idempotency_key = Some("nightly-2026-12-03".into());
        job
    };
    // The same key in one batch and across batches: one job per organization, each answered
    // with its own organization's job, never another's.
    let first = store
        .submit_jobs(vec![keyed("alpha"), keyed("default"), keyed("alpha")])
        .await?;
    ensure!(first.len() == 3, "{first:?}");
    ensure!(
        first[0].created && first[1].created && !first[2].created,
        "{first:?}"
    );
    ensure!(
        first[0].job.id != first[1].job.id,
        "two organizations, two jobs"
    );
    ensure!(
        first[2].job.id == first[0].job.id,
        "alpha's second is alpha's first"
    );
    ensure!(first[1].job.organization.id == "default");
    let again = store.submit_jobs(vec![keyed("default")]).await?;
    ensure!(
        !again[0].created && again[0].job.id == first[1].job.id,
        "default's key answers default's job: {again:?}"
    );
    let third = store.submit_jobs(vec![keyed("solo")]).await?;
    ensure!(
        third[0].created && third[0].job.organization.id == "solo",
        "a third organization gets its own: {third:?}"
    );
    Ok(())
}

pub async fn job_counts_are_told_by_organization_whether_or_not_it_shares_runners(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    for (id, shared) in [("alpha", true), ("solo", false)] {
        let record = organization(id, id, shared, at(10));
        store
            .create_organization(record.clone(), created(&record))
            .await?;
    }
    // default: 3 open + 1 constrained; alpha (shares): 2 open + 2 constrained; solo (does not
    // share): 1 open + 3 constrained, of which the open one is then claimed.
    let mut jobs = Vec::new();
    for (organization, shared, open, constrained) in [
        ("default", true, 3, 1),
        ("alpha", true, 2, 2),
        ("solo", false, 1, 3),
    ] {
        for _ in 0..open {
            jobs.push(job_of("counted", organization, shared, false));
        }
        for _ in 0..constrained {
            jobs.push(job_of("counted", organization, shared, true));
        }
    }
    store.submit_jobs(jobs).await?;
    let solo_runner = runner_of(store, "solo-counter", Some("solo")).await?;
    let taken = store
        .claim_jobs(claim_request(solo_runner, &["counted"], 1), at(900))
        .await?;
    ensure!(taken.len() == 1, "{taken:?}");
    let mut counts: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    for depth in store.active_job_counts().await? {
        ensure!(depth.kind == "counted", "{depth:?}");
        if depth.count > 0 {
            let previous = counts.insert(
                (depth.organization.clone(), depth.state.as_str()),
                depth.count,
            );
            ensure!(
                previous.is_none(),
                "one row per organization and state: {depth:?}"
            );
        }
    }
    let expected: BTreeMap<(String, &'static str), u64> = [
        ("default", JobState::Pending, 4),
        ("alpha", JobState::Pending, 4),
        ("solo", JobState::Pending, 3),
        ("solo", JobState::Claimed, 1),
    ]
    .into_iter()
    .map(|(organization, state, count)| ((organization.to_string(), state.as_str()), count))
    .collect();
    ensure!(counts == expected, "counts by organization: {counts:?}");
    Ok(())
}

const SESSION_OPENED: &str = "test.session_opened";
const SESSION_ENDED: &str = "test.session_ended";

fn session(holder: SessionHolder, created: Timestamp, lifetime_ms: i64) -> SessionRecord {
    SessionRecord {
        secret_hash: unique_token_hash(),
        opened_with: holder,
        created_at: created,
        expires_at: created.plus_millis(lifetime_ms),
    }
}

async fn open_session(store: &dyn Store, session: &SessionRecord) -> anyhow::Result<()> {
    store
        .create_session(
            session.clone(),
            audit(SESSION_OPENED, "session", session.created_at, json!({})),
        )
        .await
        .context("store a session")
}

pub async fn sessions_are_found_by_hash_ended_once_and_gone_with_their_token(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let token = new_token("dashboard", Role::Operator, Some("team"), at(1_000));
    store_token(store, &token).await?;
    let of_token = session(SessionHolder::UserToken(token.record.id), at(2_000), 60_000);
    let of_admin = session(
        SessionHolder::BootstrapAdmin {
            admin_token_hash: [7; 32],
        },
        at(2_001),
        60_000,
    );
    for session in [&of_token, &of_admin] {
        open_session(store, session).await?;
        ensure!(
            store.session_by_hash(session.secret_hash).await? == Some(session.clone()),
            "reads back as stored: {session:?}"
        );
    }
    ensure!(store.session_by_hash([0xCD; 32]).await?.is_none());

    // Ended: gone, recorded once; ending it again is refused and records nothing.
    store
        .delete_session(
            of_admin.secret_hash,
            audit(SESSION_ENDED, "session", at(3_000), json!({})),
        )
        .await?;
    ensure!(store.session_by_hash(of_admin.secret_hash).await?.is_none());
    expect_not_found(
        store
            .delete_session(
                of_admin.secret_hash,
                audit(SESSION_ENDED, "session", at(3_001), json!({})),
            )
            .await,
        "ending it again",
    )?;
    ensure!(audited(store, SESSION_ENDED).await?.len() == 1);

    // The token revoked: its sessions go with it, in the same commit.
    let second = session(SessionHolder::UserToken(token.record.id), at(2_500), 60_000);
    open_session(store, &second).await?;
    store
        .revoke_user_token(
            token.record.id,
            audit(TOKEN_REVOKED, "dashboard", at(4_000), json!({})),
        )
        .await?;
    for gone in [&of_token, &second] {
        ensure!(
            store.session_by_hash(gone.secret_hash).await?.is_none(),
            "a revoked token's session is gone: {gone:?}"
        );
    }

    // A new session sweeps away sessions that expired before it was opened, not live ones.
    let expired = session(
        SessionHolder::BootstrapAdmin {
            admin_token_hash: [8; 32],
        },
        at(5_000),
        1_000,
    );
    let live = session(
        SessionHolder::BootstrapAdmin {
            admin_token_hash: [8; 32],
        },
        at(5_000),
        3_600_000,
    );
    open_session(store, &expired).await?;
    open_session(store, &live).await?;
    open_session(
        store,
        &session(
            SessionHolder::BootstrapAdmin {
                admin_token_hash: [8; 32],
            },
            at(10_000),
            60_000,
        ),
    )
    .await?;
    ensure!(
        store.session_by_hash(expired.secret_hash).await?.is_none(),
        "an expired session is swept at the next sign-in"
    );
    ensure!(store.session_by_hash(live.secret_hash).await? == Some(live.clone()));
    ensure!(audited(store, SESSION_OPENED).await?.len() == 6);
    Ok(())
}
