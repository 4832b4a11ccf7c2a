//! Claims on SQLite. The writer runs one claim at a time, so a claim reads its candidates
//! without locks and leases them in the same transaction; claims are hot and run unguarded
//! (every refusal comes before the first write).

use std::collections::HashSet;

use muster_core::{Capabilities, JobRecord, Timestamp};
use rusqlite::{Connection, ToSql};

use super::super::map_sqlite_error;
use super::super::rows::{job_from_row, write_lifecycle};
use super::super::runners::touch_runner;
use super::super::writer::WriterContext;
use super::activity::clear_outputs;
use crate::columns::JOB_COLUMNS;
use crate::rules::claims::{self, ClaimOrder, ClaimScope, RequirementScan};
use crate::{ClaimRequest, ClaimedJob, StoreError};

/// The condition of the shared indexes (migration 9), written as they write it.
const SHARED: &str = "shared_runners = 1";

/// A job that may be claimed, with its place in the claim order.
struct Candidate {
    place: ClaimOrder,
    job: JobRecord,
}

impl Candidate {
    fn from_row((seq, job): (i64, JobRecord)) -> Candidate {
        Candidate {
            place: (job.priority, seq),
            job,
        }
    }
}

pub(in crate::sqlite) fn claim(
    context: &mut WriterContext,
    claim: &ClaimRequest,
    now: Timestamp,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let Some((registered_labels, organization)) = touch_runner(context, claim, now)? else {
        return Ok(Vec::new());
    };
    let scope = ClaimScope::of(organization);
    let offer = claims::offer(&claim.offer, registered_labels);
    let wanted = claim.max_jobs as usize;
    let mut candidates: Vec<Candidate> = Vec::new();
    for kind in claims::kinds(claim) {
        candidates.extend(open_candidates(&context.conn, &scope, kind, wanted, now)?);
        candidates.extend(constrained_candidates(
            &context.conn,
            &scope,
            kind,
            &offer,
            wanted,
            now,
        )?);
    }
    let picked = claims::pick(
        candidates,
        wanted,
        |candidate| candidate.place,
        &mut HashSet::new(),
    );
    let mut claimed = Vec::with_capacity(picked.len());
    for Candidate {
        place: (_, seq),
        mut job,
    } in picked
    {
        let leased = claims::lease(&mut job, claim.runner, now)?;
        write_lifecycle(&context.conn, seq, &job.lifecycle)?;
        if leased.outputs_cleared {
            clear_outputs(&context.conn, seq)?;
        }
        claimed.push(ClaimedJob {
            job,
            lease: leased.lease,
        });
    }
    Ok(claimed)
}

/// The first `wanted` due jobs of `kind` without requirements (any runner of the kind can take
/// them), in claim order. They live in their own index, so they are found with one bounded read
/// however many jobs no runner can take sit ahead of them; jobs in a retry backoff are skipped
/// inside the index (`run_after` is one of its columns) without reading their rows.
fn open_candidates(
    conn: &Connection,
    scope: &ClaimScope,
    kind: &str,
    wanted: usize,
    now: Timestamp,
) -> Result<Vec<Candidate>, StoreError> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 0 AND requirements IS NULL AND {} \
         AND kind = ?1 AND run_after <= ?3 ORDER BY priority, seq LIMIT ?2",
        scope.condition("?4", SHARED)
    );
    let (limit, now) = (wanted as i64, now.as_millis());
    let mut values: Vec<&dyn ToSql> = vec![&kind, &limit, &now];
    let organization = scope.organization();
    if let Some(organization) = &organization {
        values.push(organization);
    }
    conn.prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_map(values.as_slice(), |row| {
                    job_from_row(row).map(Candidate::from_row)
                })?
                .collect()
        })
        .map_err(map_sqlite_error)
}

/// Due jobs of `kind` with requirements that `offer` meets, in claim order, walked with the
/// bounded [`RequirementScan`].
fn constrained_candidates(
    conn: &Connection,
    scope: &ClaimScope,
    kind: &str,
    offer: &Capabilities,
    wanted: usize,
    now: Timestamp,
) -> Result<Vec<Candidate>, StoreError> {
    let first_sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 0 AND requirements IS NOT NULL AND {} \
         AND kind = ?1 AND run_after <= ?3 ORDER BY priority, seq LIMIT ?2",
        scope.condition("?4", SHARED)
    );
    let next_sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 0 AND requirements IS NOT NULL AND {} \
         AND kind = ?1 AND run_after <= ?3 AND (priority, seq) > (?4, ?5) \
         ORDER BY priority, seq LIMIT ?2",
        scope.condition("?6", SHARED)
    );
    let organization = scope.organization();
    let now = now.as_millis();
    let mut scan = RequirementScan::new(wanted);
    let mut found = Vec::new();
    while let Some((size, after)) = scan.next_page() {
        let limit = size as i64;
        let mut values: Vec<&dyn ToSql> = vec![&kind, &limit, &now];
        let sql = match &after {
            None => &first_sql,
            Some((priority, seq)) => {
                values.push(priority);
                values.push(seq);
                &next_sql
            }
        };
        if let Some(organization) = &organization {
            values.push(organization);
        }
        let page: Vec<Candidate> = conn
            .prepare_cached(sql)
            .and_then(|mut statement| {
                statement
                    .query_map(values.as_slice(), |row| {
                        job_from_row(row).map(Candidate::from_row)
                    })?
                    .collect()
            })
            .map_err(map_sqlite_error)?;
        found.extend(scan.take(
            page,
            |candidate| candidate.place,
            |candidate| candidate.job.requirements.are_met_by(offer),
        ));
    }
    Ok(found)
}
