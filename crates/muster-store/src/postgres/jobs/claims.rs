//! Claims on PostgreSQL. Claims that arrive together run as one transaction (see `combine`):
//! the runners' rows first, then the queue rows, locked with `SKIP LOCKED` so concurrent batches
//! never wait on each other, then the jobs, leased and written back with one statement.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use deadpool_postgres::Transaction;
use muster_core::{Capabilities, JobLifecycle, JobRecord, Timestamp};
use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::super::rows::{LifecycleWrite, column, job_from_row, write_lifecycles};
use super::super::runners::touch_runner;
use super::super::{Shared, execute, query};
use crate::columns::JOB_COLUMNS;
use crate::encoding::capabilities_from_json;
use crate::rules::claims::{self, ClaimOrder, ClaimScope, RequirementScan};
use crate::rules::runners::ClaimingRunner;
use crate::{ClaimRequest, ClaimedJob, StoreError};

/// A queue row that may be claimed: its place in the claim order.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    place: ClaimOrder,
}

/// One claim of a batch, once its runner's row said it may claim.
struct ReadyClaim<'a> {
    /// Where the claim is in the batch.
    index: usize,
    claim: &'a ClaimRequest,
    /// The runner's declared offer with the labels an operator gave it.
    offer: Capabilities,
    kinds: Vec<&'a str>,
    /// Which jobs it may take (its runner's organization's, or shared ones).
    scope: ClaimScope,
    now: Timestamp,
}

/// Where the claim batches running now have locked the queue up to, per kind: a batch that
/// starts while another one holds the head of a kind's queue reads on from where that one
/// stopped, instead of walking (and skipping) every row it holds. Jobs that enter the queue ahead
/// of that point meanwhile (a higher priority, a retry) are taken by the next batch; a batch that
/// finds too few jobs past the point reads from the head after all.
#[derive(Default)]
pub(crate) struct ClaimFrontiers {
    next_batch: AtomicU64,
    held: Mutex<Vec<HeldFrontier>>,
}

/// (batch, kind, furthest place in the claim order it locked)
type HeldFrontier = (u64, String, ClaimOrder);

/// A claim batch's place among the running ones; forgotten when dropped.
pub(crate) struct ClaimBatch {
    frontiers: Arc<ClaimFrontiers>,
    id: u64,
}

impl ClaimBatch {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for ClaimBatch {
    fn drop(&mut self) {
        if let Ok(mut held) = self.frontiers.held.lock() {
            held.retain(|(batch, ..)| *batch != self.id);
        }
    }
}

impl ClaimFrontiers {
    pub(crate) fn start(frontiers: &Arc<ClaimFrontiers>) -> ClaimBatch {
        let id = frontiers.next_batch.fetch_add(1, Ordering::Relaxed);
        ClaimBatch {
            frontiers: Arc::clone(frontiers),
            id,
        }
    }

    /// The furthest point other running batches locked in `kind`'s queue.
    fn ahead_of(&self, batch: u64, kind: &str) -> Option<ClaimOrder> {
        let held = self.held.lock().ok()?;
        held.iter()
            .filter(|(other, held_kind, _)| *other != batch && held_kind == kind)
            .map(|(.., position)| *position)
            .max()
    }

    fn record(&self, batch: u64, kind: &str, position: ClaimOrder) {
        if let Ok(mut held) = self.held.lock() {
            held.push((batch, kind.to_string(), position));
        }
    }
}

/// Run claims that arrived together as one transaction (see `combine`): every claim is answered
/// as if it had run alone, one after the other in the order given, each getting the first jobs
/// in claim order that it can take and that an earlier claim of the batch did not take.
pub(in crate::postgres) async fn claim_batch(
    transaction: &Transaction<'_>,
    shared: &Shared,
    claims: &[(ClaimRequest, Timestamp)],
    batch: u64,
) -> Result<Vec<Result<Vec<ClaimedJob>, StoreError>>, StoreError> {
    // The runners' rows first: they are the only rows a claim may wait for, and they are taken
    // before any job row, so a claim never holds a job while it waits.
    let runners = futures::future::try_join_all(
        claims
            .iter()
            .map(|(claim, now)| touch_runner(transaction, shared, claim, *now)),
    )
    .await?;
    let mut answers: Vec<Result<Vec<ClaimedJob>, StoreError>> = Vec::with_capacity(claims.len());
    let mut ready = Vec::new();
    for (index, ((claim, now), (runner, organization))) in claims.iter().zip(runners).enumerate() {
        match runner {
            ClaimingRunner::Unknown(error) => answers.push(Err(error)),
            ClaimingRunner::Draining => answers.push(Ok(Vec::new())),
            ClaimingRunner::Ready(registered_labels) => {
                answers.push(Ok(Vec::new()));
                if claim.max_jobs == 0 {
                    continue;
                }
                ready.push(ReadyClaim {
                    index,
                    claim,
                    offer: claims::offer(&claim.offer, registered_labels),
                    kinds: claims::kinds(claim),
                    scope: ClaimScope::of(organization),
                    now: *now,
                });
            }
        }
    }
    if ready.is_empty() {
        return Ok(answers);
    }
    // Jobs due for the earliest clock of the batch are due for every claim in it.
    let due_at = ready
        .iter()
        .map(|claim| claim.now)
        .min()
        .unwrap_or(Timestamp(0));
    // Jobs without requirements: one locked read per kind, enough for every claim naming it.
    // One read per scope and kind: the runners of one organization share theirs, shared
    // runners theirs.
    let mut open_wanted: BTreeMap<(ClaimScope, &str), usize> = BTreeMap::new();
    for claim in &ready {
        for kind in &claim.kinds {
            *open_wanted.entry((claim.scope.clone(), kind)).or_default() +=
                claim.claim.max_jobs as usize;
        }
    }
    let open_reads = open_wanted
        .iter()
        .map(|((scope, kind), wanted)| async move {
            let queue = scope.queue_of(kind);
            let after = shared.claim_frontiers.ahead_of(batch, &queue);
            let mut found =
                open_candidates(transaction, scope, kind, *wanted, due_at, after).await?;
            if after.is_some() && found.len() < *wanted {
                // Few jobs past the other batches: read from the head (this batch's own locked rows
                // come back too, and are not skipped).
                found = open_candidates(transaction, scope, kind, *wanted, due_at, None).await?;
            }
            if let Some(last) = found.last() {
                shared.claim_frontiers.record(batch, &queue, last.place);
            }
            Ok::<_, StoreError>(found)
        });
    // Jobs with requirements: read per claim, as they depend on the runner's offer.
    let constrained_reads = ready.iter().map(|claim| async move {
        let mut found = Vec::new();
        for kind in &claim.kinds {
            found.extend(
                constrained_candidates(
                    transaction,
                    &claim.scope,
                    kind,
                    &claim.offer,
                    claim.claim.max_jobs as usize,
                    due_at,
                )
                .await?,
            );
        }
        Ok::<_, StoreError>(found)
    });
    let (open, constrained) = futures::try_join!(
        futures::future::try_join_all(open_reads),
        futures::future::try_join_all(constrained_reads),
    )?;
    let open_by_kind: HashMap<(ClaimScope, &str), Vec<Candidate>> =
        open_wanted.keys().cloned().zip(open).collect();

    // Hand out the locked rows in batch order. Rows locked and handed to nobody (a claim that
    // named two kinds took fewer of one than was read for it) are released at commit.
    let mut taken: HashSet<i64> = HashSet::new();
    let mut assigned: Vec<Vec<i64>> = Vec::with_capacity(ready.len());
    for (claim, constrained) in ready.iter().zip(constrained) {
        let candidates: Vec<Candidate> = claim
            .kinds
            .iter()
            .filter_map(|kind| open_by_kind.get(&(claim.scope.clone(), *kind)))
            .flatten()
            .copied()
            .chain(constrained)
            .collect();
        let picked = claims::pick(
            candidates,
            claim.claim.max_jobs as usize,
            |candidate| candidate.place,
            &mut taken,
        );
        assigned.push(picked.iter().map(|candidate| candidate.place.1).collect());
    }
    if taken.is_empty() {
        return Ok(answers);
    }
    let seqs: Vec<i64> = taken.into_iter().collect();
    // The queue rows held (locked above) make these pending jobs this batch's: everything else
    // that changes a pending job (only a cancel) takes its queue row first. So the job rows are
    // read without a lock: a row lock per job would cost a write and a WAL record each.
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE seq = ANY($1) AND state = 0");
    let rows = query(transaction, &sql, &[&seqs]).await?;
    let mut loaded: HashMap<i64, JobRecord> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let (seq, job) = job_from_row(row)?;
        loaded.insert(seq, job);
    }
    // Per claimed job, in the order of `claimed_by_claim` flattened: its row and its lifecycle
    // before the claim.
    let mut befores: Vec<(i64, JobLifecycle)> = Vec::with_capacity(loaded.len());
    let mut outputs_to_clear = Vec::new();
    let mut claimed_by_claim: Vec<Vec<ClaimedJob>> = Vec::with_capacity(ready.len());
    for (claim, seqs) in ready.iter().zip(assigned) {
        let mut claimed = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let Some(mut job) = loaded.remove(&seq) else {
                continue;
            };
            let before = job.lifecycle.clone();
            let leased = claims::lease(&mut job, claim.claim.runner, claim.now)?;
            if leased.outputs_cleared {
                outputs_to_clear.push(seq);
            }
            befores.push((seq, before));
            claimed.push(ClaimedJob {
                job,
                lease: leased.lease,
            });
        }
        claimed_by_claim.push(claimed);
    }
    let writes: Vec<LifecycleWrite<'_>> = befores
        .iter()
        .zip(claimed_by_claim.iter().flatten())
        .map(|((seq, before), claimed)| LifecycleWrite {
            seq: *seq,
            before,
            after: &claimed.job.lifecycle,
            // A claim ends no attempt; its own time stands for it.
            now: claimed.job.lifecycle.claimed_at.unwrap_or(before.run_after),
            result: None,
            place: None,
        })
        .collect();
    futures::try_join!(write_lifecycles(transaction, &writes), async {
        if outputs_to_clear.is_empty() {
            return Ok(0);
        }
        execute(
            transaction,
            "UPDATE jobs SET outputs = NULL WHERE seq = ANY($1)",
            &[&outputs_to_clear],
        )
        .await
    })?;
    drop(writes);
    for (claim, claimed) in ready.iter().zip(claimed_by_claim) {
        answers[claim.index] = Ok(claimed);
    }
    Ok(answers)
}

/// The condition of the shared queue indexes (store migration 9), written as they write it.
const SHARED: &str = "shared_runners";

/// Rows selected as `seq, priority`.
fn candidates_from_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<Candidate>, StoreError> {
    rows.iter()
        .map(|row| {
            Ok(Candidate {
                place: (column(row, 1)?, column(row, 0)?),
            })
        })
        .collect()
}

/// The first `wanted` due jobs of `kind` without requirements (past `after` in claim order, when
/// given), locked (skipping those other claims hold), in claim order.
async fn open_candidates(
    transaction: &Transaction<'_>,
    scope: &ClaimScope,
    kind: &str,
    wanted: usize,
    now: Timestamp,
    after: Option<ClaimOrder>,
) -> Result<Vec<Candidate>, StoreError> {
    let (now, limit) = (now.as_millis(), wanted as i64);
    let organization = scope.organization();
    let mut values: Vec<&(dyn ToSql + Sync)> = vec![&kind, &now, &limit];
    let sql = match &after {
        None => format!(
            "SELECT seq, priority FROM job_queue \
             WHERE kind = $1 AND requirements IS NULL AND {} AND run_after <= $2 \
             ORDER BY priority, seq LIMIT $3 FOR UPDATE SKIP LOCKED",
            scope.condition("$4", SHARED)
        ),
        Some((priority, seq)) => {
            values.push(priority);
            values.push(seq);
            format!(
                "SELECT seq, priority FROM job_queue \
                 WHERE kind = $1 AND requirements IS NULL AND {} AND run_after <= $2 \
                   AND (priority, seq) > ($4, $5) \
                 ORDER BY priority, seq LIMIT $3 FOR UPDATE SKIP LOCKED",
                scope.condition("$6", SHARED)
            )
        }
    };
    if let Some(organization) = &organization {
        values.push(organization);
    }
    let rows = query(transaction, &sql, &values).await?;
    candidates_from_rows(&rows)
}

/// Due jobs of `kind` with requirements that `offer` meets, locked, in claim order, walked with
/// the bounded [`RequirementScan`]. Rows are read without a lock and only the matching ones are
/// locked, so rows this runner cannot take are never held from a runner that can.
async fn constrained_candidates(
    transaction: &Transaction<'_>,
    scope: &ClaimScope,
    kind: &str,
    offer: &Capabilities,
    wanted: usize,
    now: Timestamp,
) -> Result<Vec<Candidate>, StoreError> {
    let sql = format!(
        "SELECT seq, priority, requirements FROM job_queue \
         WHERE kind = $1 AND requirements IS NOT NULL AND {} AND run_after <= $2 \
           AND (priority, seq) > ($4, $5) \
         ORDER BY priority, seq LIMIT $3",
        scope.condition("$6", SHARED)
    );
    let organization = scope.organization();
    let mut scan = RequirementScan::new(wanted);
    let mut matching: Vec<i64> = Vec::new();
    while let Some((size, after)) = scan.next_page() {
        let (priority, seq) = after.unwrap_or((i32::MIN, i64::MIN));
        let (at, limit) = (now.as_millis(), size as i64);
        let mut values: Vec<&(dyn ToSql + Sync)> = vec![&kind, &at, &limit, &priority, &seq];
        if let Some(organization) = &organization {
            values.push(organization);
        }
        let rows = query(transaction, &sql, &values).await?;
        let mut page = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = column(row, 0)?;
            let text: &str = column(row, 2)?;
            let requirements = serde_json::from_str::<Value>(text)
                .map_err(|error| error.to_string())
                .and_then(|value| capabilities_from_json(&value))
                .map_err(|problem| {
                    StoreError::Internal(format!("stored requirements of job row {seq}: {problem}"))
                })?;
            page.push(((column(row, 1)?, seq), requirements));
        }
        matching.extend(
            scan.take(
                page,
                |(place, _)| *place,
                |(_, requirements)| requirements.are_met_by(offer),
            )
            .into_iter()
            .map(|((_, seq), _)| seq),
        );
    }
    if matching.is_empty() {
        return Ok(Vec::new());
    }
    // Rows claimed or cancelled since they were read are gone or locked, and skipped.
    let rows = query(
        transaction,
        "SELECT seq, priority FROM job_queue WHERE seq = ANY($1) AND run_after <= $2 \
         ORDER BY priority, seq FOR UPDATE SKIP LOCKED",
        &[&matching, &now.as_millis()],
    )
    .await?;
    candidates_from_rows(&rows)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::ClaimFrontiers;

    #[test]
    fn a_batch_reads_past_the_other_running_batches_and_is_forgotten_when_done() {
        let frontiers = Arc::new(ClaimFrontiers::default());
        let first = ClaimFrontiers::start(&frontiers);
        let second = ClaimFrontiers::start(&frontiers);
        assert_eq!(frontiers.ahead_of(second.id(), "a"), None);
        frontiers.record(first.id(), "a", (0, 500));
        frontiers.record(first.id(), "b", (0, 90));
        assert_eq!(frontiers.ahead_of(second.id(), "a"), Some((0, 500)));
        assert_eq!(frontiers.ahead_of(second.id(), "b"), Some((0, 90)));
        assert_eq!(frontiers.ahead_of(second.id(), "c"), None);
        // A batch never reads past itself.
        assert_eq!(frontiers.ahead_of(first.id(), "a"), None);
        let third = ClaimFrontiers::start(&frontiers);
        frontiers.record(second.id(), "a", (1, 20));
        assert_eq!(frontiers.ahead_of(third.id(), "a"), Some((1, 20)));
        drop(second);
        assert_eq!(frontiers.ahead_of(third.id(), "a"), Some((0, 500)));
        drop(first);
        assert_eq!(frontiers.ahead_of(third.id(), "a"), None);
        assert_eq!(frontiers.ahead_of(third.id(), "b"), None);
    }
}
