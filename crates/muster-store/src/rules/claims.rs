//! Claim assembly: what a claiming runner offers, the bounded scan over jobs with requirements,
//! the claim order across kinds (and, where claims run together, across claims), and the lease
//! a claimed job gets.
//!
//! A backend finds due jobs of each kind the claim names in two reads: those without
//! requirements (any runner of the kind can take them; one bounded read in claim order) and
//! those with requirements, walked with a [`RequirementScan`]. [`pick`] then takes the first
//! ones in claim order, and [`lease`] leases each.

use std::collections::{BTreeMap, HashSet};

use muster_core::organization::DEFAULT_ORGANIZATION;
use muster_core::{Capabilities, JobRecord, Lease, RunnerId, Timestamp};

use crate::{ClaimRequest, StoreError};

/// Jobs with requirements of one kind looked at per claim before giving up on finding ones this
/// runner meets: bounds the work of a claim when the head of the queue holds jobs it cannot take.
/// Jobs without requirements are never behind this bound (they have their own index).
pub(crate) const MAX_CLAIM_SCAN_PER_KIND: usize = 2048;

/// A job's place in the claim order, `(priority, seq)`: the lowest priority number first, then
/// the oldest (row order).
pub(crate) type ClaimOrder = (i32, i64);

/// Which pending jobs a claiming runner may take: its own organization's, or, for a
/// cluster-scoped runner, those whose organization lets shared runners take them
/// (`muster_core::organization::runner_may_take`, stated here as the rows to read).
///
/// Jobs of the `default` organization (which always lets shared runners in) are only in the
/// shared indexes, so a single-team install keeps one claim index per kind; a runner of
/// `default` reads the shared indexes for its organization's jobs. Jobs of other organizations
/// are in the indexes of their own (and in the shared ones too when their organization allows).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ClaimScope {
    Organization(String),
    Shared,
}

impl ClaimScope {
    /// The scope of a runner of `organization` (`None`: cluster-scoped).
    pub(crate) fn of(organization: Option<String>) -> ClaimScope {
        match organization {
            Some(organization) => ClaimScope::Organization(organization),
            None => ClaimScope::Shared,
        }
    }

    /// The condition on job rows: `parameter` is the placeholder the organization binds to
    /// (when [`ClaimScope::organization`] has one), `shared` the backend's literal condition of
    /// the shared indexes. Every part the planner must see to pick an index is a literal.
    pub(crate) fn condition(&self, parameter: &str, shared: &str) -> String {
        match self {
            ClaimScope::Shared => shared.to_string(),
            ClaimScope::Organization(organization) if organization == DEFAULT_ORGANIZATION => {
                format!("{shared} AND organization_id = '{DEFAULT_ORGANIZATION}'")
            }
            ClaimScope::Organization(_) => format!(
                "organization_id <> '{DEFAULT_ORGANIZATION}' AND organization_id = {parameter}"
            ),
        }
    }

    /// A name for the scope's queue of `kind`, unique among scopes and kinds (a kind cannot
    /// hold a NUL).
    pub(crate) fn queue_of(&self, kind: &str) -> String {
        match self {
            ClaimScope::Organization(organization) => format!("{organization}\u{0}{kind}"),
            ClaimScope::Shared => kind.to_string(),
        }
    }

    /// The organization to bind to the condition's parameter, when it has one.
    pub(crate) fn organization(&self) -> Option<&str> {
        match self {
            ClaimScope::Organization(organization) if organization != DEFAULT_ORGANIZATION => {
                Some(organization)
            }
            ClaimScope::Organization(_) | ClaimScope::Shared => None,
        }
    }
}

/// What a claiming runner offers: what it declared, with the labels an operator gave it at
/// registration, which win over what it declares itself.
pub(crate) fn offer(
    declared: &Capabilities,
    registered_labels: BTreeMap<String, String>,
) -> Capabilities {
    let mut offer = declared.clone();
    offer.labels.extend(registered_labels);
    offer
}

/// The kinds a claim names, each once, in a fixed order (so concurrent claims read the kinds'
/// queues in the same order).
pub(crate) fn kinds(claim: &ClaimRequest) -> Vec<&str> {
    let mut kinds: Vec<&str> = claim.kinds.iter().map(String::as_str).collect();
    kinds.sort_unstable();
    kinds.dedup();
    kinds
}

/// The walk over due jobs of one kind with requirements, for the ones a runner meets.
/// Requirements are checked by the store's code, not in SQL, so the walk is bounded: it reads
/// pages in claim order until it has found what is wanted, reached the end of the queue, or read
/// [`MAX_CLAIM_SCAN_PER_KIND`] jobs.
#[derive(Debug)]
pub(crate) struct RequirementScan {
    wanted: usize,
    page_size: usize,
    scanned: usize,
    found: usize,
    after: Option<ClaimOrder>,
    exhausted: bool,
}

impl RequirementScan {
    pub(crate) fn new(wanted: usize) -> RequirementScan {
        RequirementScan {
            wanted,
            // A little more than wanted, as most jobs of a page may not match.
            page_size: (wanted + 8).min(512),
            scanned: 0,
            found: 0,
            after: None,
            exhausted: false,
        }
    }

    /// The next page to read: at most this many jobs, after this place in the claim order (from
    /// the head when `None`). `None` when the walk is over.
    pub(crate) fn next_page(&self) -> Option<(usize, Option<ClaimOrder>)> {
        let over =
            self.exhausted || self.found >= self.wanted || self.scanned >= MAX_CLAIM_SCAN_PER_KIND;
        (!over).then_some((self.page_size, self.after))
    }

    /// Take a page read for [`RequirementScan::next_page`], in claim order: answers those of its
    /// jobs that `meets` accepts, while more are wanted.
    pub(crate) fn take<T>(
        &mut self,
        page: Vec<T>,
        place: impl Fn(&T) -> ClaimOrder,
        meets: impl Fn(&T) -> bool,
    ) -> Vec<T> {
        self.exhausted = page.len() < self.page_size;
        self.scanned += page.len();
        let mut taken = Vec::new();
        for job in page {
            self.after = Some(place(&job));
            if self.found < self.wanted && meets(&job) {
                self.found += 1;
                taken.push(job);
            }
        }
        taken
    }
}

/// Of one claim's `candidates` (in any order, possibly one twice), the first `wanted` in claim
/// order that no earlier claim of the same batch took; they are marked taken. A claim that runs
/// alone passes an empty `taken`.
pub(crate) fn pick<T>(
    mut candidates: Vec<T>,
    wanted: usize,
    place: impl Fn(&T) -> ClaimOrder,
    taken: &mut HashSet<i64>,
) -> Vec<T> {
    candidates.retain(|candidate| !taken.contains(&place(candidate).1));
    candidates.sort_by_key(&place);
    candidates.dedup_by_key(|candidate| place(candidate).1);
    candidates.truncate(wanted);
    taken.extend(candidates.iter().map(|candidate| place(candidate).1));
    candidates
}

/// A job just leased by a claim.
#[derive(Debug)]
pub(crate) struct Leased {
    pub(crate) lease: Lease,
    /// The job held outputs of an earlier attempt, dropped here; the backend clears them in the
    /// row too (only re-claims of jobs that recorded outputs pay for that write).
    pub(crate) outputs_cleared: bool,
}

/// Lease `job`, a candidate the claim picked, to `runner`. Outputs belong to the attempt that
/// recorded them: a new attempt starts without the leftovers of a failed or lost one.
pub(crate) fn lease(
    job: &mut JobRecord,
    runner: RunnerId,
    now: Timestamp,
) -> Result<Leased, StoreError> {
    let lease = job
        .lifecycle
        .claim(runner, now)
        // Candidates are due pending jobs that the claim holds, so a refusal here is a bug; as an
        // internal error it rolls back the whole claim (and whatever ran with it) rather than
        // leave the jobs claimed before it.
        .map_err(|error| {
            StoreError::Internal(format!("claim of candidate job {}: {error}", job.id))
        })?;
    let outputs_cleared = !job.outputs.is_empty();
    job.outputs.clear();
    Ok(Leased {
        lease,
        outputs_cleared,
    })
}

#[cfg(test)]
mod tests {
    use muster_core::JobState;

    use super::*;
    use crate::rules::testing::{self, pending_job};

    #[test]
    fn registration_labels_win_over_declared_ones() {
        let mut declared = Capabilities::default();
        declared.labels.insert("zone".into(), "mine".into());
        declared.labels.insert("gpu".into(), "yes".into());
        declared.tags.push("fast".into());
        let registered = BTreeMap::from([("zone".to_string(), "operator's".to_string())]);
        let offer = offer(&declared, registered);
        assert_eq!(offer.labels["zone"], "operator's");
        assert_eq!(offer.labels["gpu"], "yes");
        assert_eq!(offer.tags, declared.tags);
    }

    #[test]
    fn a_claim_reads_each_kind_once_in_a_fixed_order() {
        let claim = ClaimRequest {
            runner: RunnerId::new(Timestamp(0), 1),
            kinds: vec!["b".into(), "a".into(), "b".into()],
            offer: Capabilities::default(),
            max_jobs: 1,
        };
        assert_eq!(kinds(&claim), vec!["a", "b"]);
    }

    /// Pages of `(priority, seq, matches)` in claim order, as a backend would read them.
    fn walk(queue: &[(i32, i64, bool)], wanted: usize) -> (Vec<i64>, usize) {
        let mut scan = RequirementScan::new(wanted);
        let mut found = Vec::new();
        let mut reads = 0;
        while let Some((size, after)) = scan.next_page() {
            reads += 1;
            let page: Vec<(i32, i64, bool)> = queue
                .iter()
                .filter(|job| after.is_none_or(|after| (job.0, job.1) > after))
                .take(size)
                .copied()
                .collect();
            found.extend(
                scan.take(page, |job| (job.0, job.1), |job| job.2)
                    .into_iter()
                    .map(|job| job.1),
            );
        }
        (found, reads)
    }

    #[test]
    fn the_scan_finds_what_is_wanted_in_claim_order_and_stops() {
        let queue: Vec<(i32, i64, bool)> = (0..100).map(|seq| (0, seq, seq % 10 == 9)).collect();
        let (found, reads) = walk(&queue, 2);
        assert_eq!(found, vec![9, 19]);
        assert_eq!(reads, 2, "pages of 10, the second holds the second match");
        assert_eq!(
            walk(&queue, 0),
            (Vec::new(), 0),
            "nothing wanted, nothing read"
        );
        let (all, _) = walk(&queue, 50);
        assert_eq!(all.len(), 10, "the end of the queue ends the walk");
    }

    #[test]
    fn the_scan_gives_up_after_its_bound_of_jobs_the_runner_cannot_take() {
        let queue: Vec<(i32, i64, bool)> = (0..10_000).map(|seq| (0, seq, seq == 9_999)).collect();
        let (found, reads) = walk(&queue, 1);
        assert!(found.is_empty(), "the one match is past the bound");
        assert_eq!(reads, MAX_CLAIM_SCAN_PER_KIND.div_ceil(9));
    }

    #[test]
    fn picks_take_the_claim_order_once_each_and_leave_what_earlier_claims_took() {
        let mut taken = HashSet::new();
        let first = pick(
            vec![(1, 5), (0, 7), (0, 3), (0, 7)],
            2,
            |candidate| *candidate,
            &mut taken,
        );
        assert_eq!(first, vec![(0, 3), (0, 7)]);
        let second = pick(
            vec![(0, 7), (1, 5), (2, 1)],
            5,
            |candidate| *candidate,
            &mut taken,
        );
        assert_eq!(second, vec![(1, 5), (2, 1)]);
        assert_eq!(taken, HashSet::from([3, 7, 5, 1]));
    }

    #[test]
    fn a_lease_starts_an_attempt_without_the_last_ones_outputs() {
        let mut job = pending_job(1);
        let runner = testing::runner(2);
        let leased = lease(&mut job, runner, Timestamp(10)).expect("a lease");
        assert_eq!(job.state(), JobState::Claimed);
        assert_eq!(leased.lease.epoch, 1);
        assert!(!leased.outputs_cleared, "nothing to clear");
        let again = lease(&mut job, runner, Timestamp(20));
        assert!(matches!(again, Err(StoreError::Internal(_))), "{again:?}");
        let mut retried = pending_job(1);
        let artifact = muster_core::ArtifactId::from_digest([1; 32]);
        retried.outputs.insert("report".into(), artifact);
        let leased = lease(&mut retried, runner, Timestamp(10)).expect("a lease");
        assert!(leased.outputs_cleared && retried.outputs.is_empty());
    }
}
