//! The reaper on PostgreSQL: it reads the lease checks that are due (never the history of
//! finished jobs), settles most of them on a plain read, and locks only the jobs whose deadlines
//! passed, skipping those another transaction holds.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::Transaction;
use muster_core::{JobLifecycle, JobRecord, RunnerId, Timestamp};
use tokio_postgres::types::ToSql;

use super::super::rows::{
    LEASE_CHECK_INTERVAL_MS, LeaseChecks, column, job_from_row, lifecycle_from_row,
    runner_id_column,
};
use super::super::{execute, query};
use super::write_back_and_wake;
use crate::columns::{JOB_COLUMNS, LIFECYCLE_COLUMNS};
use crate::rules::jobs;
use crate::{ReapReport, StoreError};

/// Lease checks one reaper pass reads at most.
const MAX_CHECKS_PER_REAP: i64 = 1_000;
/// Jobs one reaper pass looks at at most: checks beyond are left for the next pass, so a pile of
/// them cannot make one transaction long.
const MAX_CHECKED_JOBS_PER_REAP: usize = 20_000;

/// Apply passed deadlines to at most `limit` jobs, looking at the lease checks that are due (see
/// the `lease_checks` migration); answers what was done and whether any job went back to the
/// queue. Every job of a due check that is still leased gets a new check: at its deadline when
/// that has not passed yet (or sooner, see `LEASE_CHECK_INTERVAL_MS`), right away when it was
/// over the limit or another transaction held its row.
pub(in crate::postgres) async fn reap(
    transaction: &Transaction<'_>,
    now: Timestamp,
    limit: u32,
) -> Result<(ReapReport, bool), StoreError> {
    // Another coordinator's reaper may hold some checks: skipped, it handles them.
    let due = query(
        transaction,
        "SELECT id, runner_id, seqs FROM lease_checks WHERE check_at <= $1 \
         ORDER BY check_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        &[&now.as_millis(), &MAX_CHECKS_PER_REAP],
    )
    .await?;
    let mut report = ReapReport::default();
    if due.is_empty() {
        return Ok((report, false));
    }
    let mut check_ids = Vec::with_capacity(due.len());
    let mut runner_of: HashMap<i64, RunnerId> = HashMap::new();
    for row in &due {
        if runner_of.len() >= MAX_CHECKED_JOBS_PER_REAP {
            break;
        }
        let id: i64 = column(row, 0)?;
        let runner = runner_id_column(row, 1)?
            .ok_or_else(|| StoreError::Internal(format!("lease check {id} without a runner")))?;
        let seqs: Vec<i64> = column(row, 2)?;
        check_ids.push(id);
        runner_of.extend(seqs.into_iter().map(|seq| (seq, runner)));
    }
    let checked: Vec<i64> = runner_of.keys().copied().collect();
    // Most checked jobs have finished, and most others are not due yet: both are settled on a
    // plain read, without locking anything. A job not due gets its next check; whatever changes
    // it meanwhile either moves its deadline later, ends its lease, or writes a check of its own
    // (a deadline moved earlier, a new claim).
    let sql =
        format!("SELECT {LIFECYCLE_COLUMNS} FROM jobs WHERE seq = ANY($1) AND state IN (1, 2, 3)");
    let mut next_checks = LeaseChecks::default();
    let next_check_at = |reap_at: Timestamp| {
        reap_at
            .as_millis()
            .min(now.as_millis().saturating_add(LEASE_CHECK_INTERVAL_MS))
    };
    let mut due: Vec<i64> = Vec::new();
    for row in &query(transaction, &sql, &[&checked]).await? {
        let (seq, lifecycle) = lifecycle_from_row(row)?;
        match (lifecycle.reap_at(), lifecycle.runner_id) {
            (Some(reap_at), Some(runner)) if reap_at > now => {
                next_checks.push(seq, runner, next_check_at(reap_at));
            }
            (Some(_), Some(_)) => due.push(seq),
            _ => {}
        }
    }
    let mut changed: Vec<(i64, JobLifecycle, JobRecord)> = Vec::new();
    if !due.is_empty() {
        // A job whose row another transaction holds (a completion, another reaper) is skipped
        // here and checked again on the next pass, when that transaction has ended. A job seen
        // here after the other one committed is judged on its fresh row, so no deadline is
        // applied twice.
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE seq = ANY($1) AND state IN (1, 2, 3) \
             FOR UPDATE SKIP LOCKED"
        );
        let rows = query(transaction, &sql, &[&due]).await?;
        let mut locked = HashSet::with_capacity(rows.len());
        for row in &rows {
            let (seq, mut job) = job_from_row(row)?;
            locked.insert(seq);
            let (Some(reap_at), Some(runner)) = (job.lifecycle.reap_at(), job.lifecycle.runner_id)
            else {
                continue;
            };
            if reap_at > now {
                next_checks.push(seq, runner, next_check_at(reap_at));
                continue;
            }
            if report.total() >= limit {
                next_checks.push(seq, runner, now.as_millis());
                continue;
            }
            let before = job.lifecycle.clone();
            let Some(outcome) = jobs::reap(seq, &mut job.lifecycle, now) else {
                next_checks.push(seq, runner, now.as_millis());
                continue;
            };
            report.record(job.id, outcome);
            changed.push((seq, before, job));
        }
        for seq in due.iter().filter(|seq| !locked.contains(seq)) {
            if let Some(runner) = runner_of.get(seq) {
                next_checks.push(*seq, *runner, now.as_millis());
            }
        }
    }
    let requeued = write_back_and_wake(transaction, &changed, now).await?;
    let delete_params: [&(dyn ToSql + Sync); 1] = [&check_ids];
    let (_, ()) = futures::try_join!(
        execute(
            transaction,
            "DELETE FROM lease_checks WHERE id = ANY($1)",
            &delete_params,
        ),
        next_checks.insert(transaction),
    )?;
    Ok((report, requeued))
}
