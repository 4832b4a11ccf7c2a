//! Runners as the store keeps them: a runner's row read back, what a claiming runner's row says
//! (and how often a claim rewrites it), the stop list a runner heartbeat answers, and what
//! deleting a runner does to the jobs it holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use muster_core::{Enrollment, JobId, JobRecord, JobState, RunnerId, RunnerRecord, Timestamp};

use crate::encoding::{
    capabilities_from_json, capabilities_to_json, labels_from_text, offer_from_text,
};
use crate::{ClaimRequest, StoreError};

pub(crate) fn runner_not_found(id: RunnerId) -> StoreError {
    StoreError::NotFound(format!("runner {id}"))
}

/// A runner's row as read: the columns in their stored form.
pub(crate) struct RunnerColumns<'a> {
    pub(crate) id: &'a [u8],
    pub(crate) name: String,
    pub(crate) organization_id: Option<String>,
    /// The labels an operator gave it at registration, as JSON text.
    pub(crate) labels: &'a str,
    /// The kinds it last claimed, as a JSON list.
    pub(crate) kinds: &'a str,
    /// What it last declared when claiming, as JSON (`None` before its first claim).
    pub(crate) offer: Option<&'a str>,
    pub(crate) hostname: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) draining: bool,
    pub(crate) created_at: i64,
    pub(crate) last_heartbeat_at: Option<i64>,
    pub(crate) last_seen_at: Option<i64>,
    /// The jobs it holds, as counted by the query.
    pub(crate) running_jobs: i64,
    pub(crate) enrollment: &'a str,
    pub(crate) key_fingerprint: Option<String>,
    pub(crate) public_key: Option<String>,
    /// JSON capabilities, or `None` when its claims are trusted.
    pub(crate) bound_capabilities: Option<&'a str>,
    /// A JSON list, or `None` for any kind.
    pub(crate) bound_kinds: Option<&'a str>,
    pub(crate) token_expires_at: Option<i64>,
}

/// A runner read back. Its labels are the registered ones, with the ones it declared itself
/// where registration did not say.
pub(crate) fn runner_record(columns: RunnerColumns<'_>) -> Result<RunnerRecord, StoreError> {
    let id = RunnerId::from_slice(columns.id)
        .ok_or_else(|| StoreError::Internal("bad runner id".into()))?;
    let mut labels = labels_from_text(columns.labels)?;
    let offer = offer_from_text(columns.offer)?;
    let kinds: Vec<String> = serde_json::from_str(columns.kinds)
        .map_err(|error| StoreError::Internal(format!("stored kinds: {error}")))?;
    for (key, value) in &offer.labels {
        labels.entry(key.clone()).or_insert_with(|| value.clone());
    }
    let enrollment = Enrollment::parse(columns.enrollment).ok_or_else(|| {
        StoreError::Internal(format!("stored enrollment '{}'", columns.enrollment))
    })?;
    let bound_capabilities = columns
        .bound_capabilities
        .map(|text| {
            serde_json::from_str(text)
                .map_err(|error| error.to_string())
                .and_then(|value| capabilities_from_json(&value))
                .map_err(|error| {
                    StoreError::Internal(format!("stored bound capabilities: {error}"))
                })
        })
        .transpose()?;
    let bound_kinds = columns
        .bound_kinds
        .map(|text| {
            serde_json::from_str::<Vec<String>>(text)
                .map_err(|error| StoreError::Internal(format!("stored bound kinds: {error}")))
        })
        .transpose()?;
    Ok(RunnerRecord {
        id,
        name: columns.name,
        organization_id: columns.organization_id,
        labels,
        offer,
        kinds,
        hostname: columns.hostname,
        version: columns.version,
        draining: columns.draining,
        last_heartbeat_at: columns.last_heartbeat_at.map(Timestamp),
        last_seen_at: columns.last_seen_at.map(Timestamp),
        running_jobs: u32::try_from(columns.running_jobs).unwrap_or(u32::MAX),
        created_at: Timestamp(columns.created_at),
        enrollment,
        key_fingerprint: columns.key_fingerprint,
        public_key: columns.public_key,
        bound_capabilities,
        bound_kinds,
        token_expires_at: columns.token_expires_at.map(Timestamp),
    })
}

/// How often at most a claiming runner's "last seen" is rewritten when nothing else changed.
const TOUCH_INTERVAL_MS: i64 = 1000;

/// What a claiming runner declares about itself, as stored on its row.
pub(crate) struct Declaration {
    pub(crate) offer_json: String,
    pub(crate) kinds_json: String,
    fingerprint: u64,
}

impl Declaration {
    pub(crate) fn of(claim: &ClaimRequest) -> Declaration {
        let offer_json = capabilities_to_json(&claim.offer).to_string();
        let kinds_json = serde_json::Value::from(claim.kinds.clone()).to_string();
        let mut hasher = DefaultHasher::new();
        (&offer_json, &kinds_json).hash(&mut hasher);
        Declaration {
            offer_json,
            kinds_json,
            fingerprint: hasher.finish(),
        }
    }
}

/// Per runner, what it last declared when claiming and when this process wrote that to its row:
/// a claim rewrites the row only when the declaration changed or a second passed, so frequent
/// claims do not rewrite it every time.
#[derive(Debug, Default)]
pub(crate) struct RunnerTouches {
    written: HashMap<RunnerId, (u64, i64)>,
}

impl RunnerTouches {
    /// Whether a claim declaring `declaration` at `now` rewrites the runner's row.
    pub(crate) fn needs_write(
        &self,
        runner: RunnerId,
        declaration: &Declaration,
        now: Timestamp,
    ) -> bool {
        !self
            .written
            .get(&runner)
            .is_some_and(|(fingerprint, written_at)| {
                *fingerprint == declaration.fingerprint
                    && now.as_millis() - written_at < TOUCH_INTERVAL_MS
            })
    }

    /// The runner's row now holds `declaration`, written at `now`.
    pub(crate) fn written(&mut self, runner: RunnerId, declaration: &Declaration, now: Timestamp) {
        self.written
            .insert(runner, (declaration.fingerprint, now.as_millis()));
    }

    /// Forget a runner (deleted), so the map does not keep it.
    pub(crate) fn forget(&mut self, runner: RunnerId) {
        self.written.remove(&runner);
    }

    /// Forget every write (they were rolled back).
    pub(crate) fn clear(&mut self) {
        self.written.clear();
    }
}

/// What a claiming runner's row says about its claim.
#[derive(Debug, PartialEq)]
pub(crate) enum ClaimingRunner {
    /// The runner may claim; these are the labels an operator gave it at registration.
    Ready(BTreeMap<String, String>),
    /// The runner is draining: it claims nothing more, whichever coordinator heard its heartbeat.
    Draining,
    /// No such runner (or it was deleted): the claim is refused with this error.
    Unknown(StoreError),
}

/// What the row of `runner`, read as `(labels, draining)` (`None` when there is no live row),
/// says about its claim.
pub(crate) fn claiming_runner(
    runner: RunnerId,
    row: Option<(&str, bool)>,
) -> Result<ClaimingRunner, StoreError> {
    match row {
        None => Ok(ClaimingRunner::Unknown(runner_not_found(runner))),
        Some((_, true)) => Ok(ClaimingRunner::Draining),
        Some((labels, false)) => labels_from_text(labels).map(ClaimingRunner::Ready),
    }
}

/// Of the jobs a heartbeat of `runner` names, in the order named, those it should stop: all but
/// the ones it holds claimed or running (a job being cancelled, finished, leased to another
/// runner or unknown is stopped). `found` has those of the named jobs the store holds, as
/// `(job, state code, holder)`.
pub(crate) fn jobs_to_stop(
    runner: RunnerId,
    named: &[JobId],
    found: impl IntoIterator<Item = (JobId, i64, Option<RunnerId>)>,
) -> Vec<JobId> {
    let running_here: HashSet<JobId> = found
        .into_iter()
        .filter(|(_, state, holder)| {
            *holder == Some(runner)
                && matches!(
                    JobState::from_code(*state),
                    Some(JobState::Claimed | JobState::Running)
                )
        })
        .map(|(job, ..)| job)
        .collect();
    named
        .iter()
        .filter(|job| !running_here.contains(job))
        .copied()
        .collect()
}

/// Why a runner lets go of every job it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReleaseCause {
    /// An operator deleted it.
    Deleted,
    /// Its identity was revoked: its key left the allowlist, or an operator rejected it.
    Revoked,
}

/// Release `job` (stored at row `seq`) from `runner`, which was deleted or revoked: its attempt
/// fails as a lost lease, or, when a cancel was waiting for the runner, the job ends cancelled.
/// Answers whether it did; a job the runner does not hold is left as it is.
pub(crate) fn release_from_runner(
    seq: i64,
    job: &mut JobRecord,
    runner: RunnerId,
    cause: ReleaseCause,
    now: Timestamp,
) -> bool {
    if !job.state().is_leased() || job.lifecycle.runner_id != Some(runner) {
        return false;
    }
    let jitter = super::jobs::jitter_for(seq, job.lifecycle.attempt);
    let what_happened = match cause {
        ReleaseCause::Deleted => "was deleted",
        ReleaseCause::Revoked => "lost its identity (its key was removed or it was rejected)",
    };
    job.lifecycle.release(
        format!("runner {runner} {what_happened} while it held the lease"),
        jitter,
        now,
    );
    true
}

#[cfg(test)]
mod tests {
    use muster_core::Capabilities;

    use super::*;
    use crate::rules::testing::{pending_job, runner};

    fn claim(kinds: &[&str]) -> ClaimRequest {
        ClaimRequest {
            runner: runner(1),
            kinds: kinds.iter().map(|kind| kind.to_string()).collect(),
            offer: Capabilities::default(),
            max_jobs: 1,
        }
    }

    #[test]
    fn a_claim_rewrites_the_runner_row_when_its_declaration_changed_or_a_second_passed() {
        let mut touches = RunnerTouches::default();
        let first = Declaration::of(&claim(&["a"]));
        assert!(touches.needs_write(runner(1), &first, Timestamp(0)));
        touches.written(runner(1), &first, Timestamp(0));
        assert!(!touches.needs_write(runner(1), &first, Timestamp(999)));
        assert!(touches.needs_write(runner(1), &first, Timestamp(1_000)));
        let other_kinds = Declaration::of(&claim(&["a", "b"]));
        assert!(touches.needs_write(runner(1), &other_kinds, Timestamp(10)));
        assert!(touches.needs_write(runner(2), &first, Timestamp(10)));
        touches.forget(runner(1));
        assert!(touches.needs_write(runner(1), &first, Timestamp(10)));
        touches.written(runner(1), &first, Timestamp(0));
        touches.clear();
        assert!(touches.needs_write(runner(1), &first, Timestamp(10)));
        assert_eq!(first.kinds_json, r#"["a"]"#);
        assert_eq!(first.offer_json, "{}");
    }

    #[test]
    fn a_claiming_runners_row_says_whether_it_may_claim() {
        assert_eq!(
            claiming_runner(runner(1), None),
            Ok(ClaimingRunner::Unknown(runner_not_found(runner(1))))
        );
        assert_eq!(
            claiming_runner(runner(1), Some(("not even json", true))),
            Ok(ClaimingRunner::Draining)
        );
        assert_eq!(
            claiming_runner(runner(1), Some((r#"{"zone":"a"}"#, false))),
            Ok(ClaimingRunner::Ready(BTreeMap::from([(
                "zone".to_string(),
                "a".to_string()
            )])))
        );
        assert!(claiming_runner(runner(1), Some(("[", false))).is_err());
    }

    #[test]
    fn a_heartbeat_stops_every_job_the_runner_does_not_hold_claimed_or_running() {
        let jobs: Vec<JobId> = (0..6).map(|bits| JobId::new(Timestamp(0), bits)).collect();
        let found = vec![
            (jobs[0], JobState::Claimed.code(), Some(runner(1))),
            (jobs[1], JobState::Running.code(), Some(runner(1))),
            (jobs[2], JobState::Cancelling.code(), Some(runner(1))),
            (jobs[3], JobState::Running.code(), Some(runner(2))),
            (jobs[4], JobState::Completed.code(), Some(runner(1))),
        ];
        let named = vec![
            jobs[5], jobs[0], jobs[1], jobs[2], jobs[3], jobs[4], jobs[5],
        ];
        assert_eq!(
            jobs_to_stop(runner(1), &named, found),
            vec![jobs[5], jobs[2], jobs[3], jobs[4], jobs[5]]
        );
        assert!(jobs_to_stop(runner(1), &[], Vec::new()).is_empty());
    }

    #[test]
    fn deleting_a_runner_fails_its_attempts_and_ends_its_cancels() {
        let mut running = pending_job(1);
        running
            .lifecycle
            .claim(runner(1), Timestamp(10))
            .expect("a claim");
        assert!(!release_from_runner(
            1,
            &mut running,
            runner(2),
            ReleaseCause::Deleted,
            Timestamp(20)
        ));
        assert_eq!(running.state(), JobState::Claimed, "not that runner's");
        assert!(release_from_runner(
            1,
            &mut running,
            runner(1),
            ReleaseCause::Deleted,
            Timestamp(20)
        ));
        assert_eq!(running.state(), JobState::Pending, "attempts remain");
        let error = running
            .lifecycle
            .error
            .clone()
            .expect("the lost attempt's error");
        assert_eq!(error.reason, muster_core::FailureReason::LeaseExpired);
        assert!(error.message.contains("was deleted"), "{}", error.message);

        let mut cancelling = pending_job(2);
        cancelling
            .lifecycle
            .claim(runner(1), Timestamp(10))
            .expect("a claim");
        cancelling
            .lifecycle
            .cancel(5_000, Timestamp(15))
            .expect("a cancel");
        assert!(release_from_runner(
            2,
            &mut cancelling,
            runner(1),
            ReleaseCause::Revoked,
            Timestamp(20)
        ));
        assert_eq!(cancelling.state(), JobState::Cancelled);

        let mut pending = pending_job(3);
        assert!(!release_from_runner(
            3,
            &mut pending,
            runner(1),
            ReleaseCause::Revoked,
            Timestamp(20)
        ));
    }

    fn columns_of(id: &[u8]) -> RunnerColumns<'_> {
        RunnerColumns {
            id,
            name: "r".into(),
            organization_id: None,
            labels: r#"{"zone":"operator"}"#,
            kinds: r#"["a"]"#,
            offer: Some(r#"{"labels":{"zone":"mine","gpu":"yes"}}"#),
            hostname: None,
            version: None,
            draining: false,
            created_at: 5,
            last_heartbeat_at: None,
            last_seen_at: Some(7),
            running_jobs: 3,
            enrollment: "pending",
            key_fingerprint: None,
            public_key: None,
            bound_capabilities: Some(r#"{"tags":["q8_0"]}"#),
            bound_kinds: Some(r#"["a"]"#),
            token_expires_at: Some(9),
        }
    }

    #[test]
    fn a_runner_reads_back_with_its_declared_labels_under_the_registered_ones() {
        let id = runner(1);
        let record = runner_record(columns_of(id.as_bytes())).expect("a record");
        assert_eq!(record.id, id);
        assert_eq!(record.labels["zone"], "operator");
        assert_eq!(record.labels["gpu"], "yes");
        assert_eq!(record.kinds, vec!["a".to_string()]);
        assert_eq!(record.running_jobs, 3);
        assert_eq!(record.last_seen_at, Some(Timestamp(7)));
        assert_eq!(record.enrollment, Enrollment::Pending);
        assert_eq!(
            record.bound_capabilities.map(|bound| bound.tags),
            Some(vec!["q8_0".to_string()])
        );
        assert_eq!(record.bound_kinds, Some(vec!["a".to_string()]));
        assert_eq!(record.token_expires_at, Some(Timestamp(9)));
        for corrupt in [
            columns_of(&[1, 2, 3]),
            RunnerColumns {
                kinds: "[1]",
                ..columns_of(id.as_bytes())
            },
            RunnerColumns {
                enrollment: "maybe",
                ..columns_of(id.as_bytes())
            },
            RunnerColumns {
                bound_capabilities: Some("not json"),
                ..columns_of(id.as_bytes())
            },
        ] {
            assert!(matches!(
                runner_record(corrupt),
                Err(StoreError::Internal(_))
            ));
        }
    }
}
