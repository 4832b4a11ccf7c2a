//! Reading PostgreSQL rows through the shared job mapping ([`crate::columns`]), and the one
//! statement that writes a job's lifecycle back together with the queue rows and lease checks
//! that go with it.

use muster_core::{AttemptRecord, JobId, JobLifecycle, JobRecord, JobState, RunnerId, Timestamp};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};

use super::map_postgres_error;
use crate::StoreError;
use crate::columns::{self, ATTEMPT_COLUMNS, StoredRow};
use crate::rules::jobs::KEPT_ATTEMPTS_READ;

fn corrupt(column: usize, problem: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("stored job, column {column}: {problem}"))
}

pub(crate) fn column<'row, T: FromSql<'row>>(
    row: &'row Row,
    index: usize,
) -> Result<T, StoreError> {
    row.try_get(index).map_err(map_postgres_error)
}

impl StoredRow for Row {
    type Error = StoreError;

    fn corrupt(index: usize, problem: String) -> StoreError {
        corrupt(index, problem)
    }

    fn integer(&self, index: usize) -> Result<i64, StoreError> {
        column(self, index)
    }

    fn optional_integer(&self, index: usize) -> Result<Option<i64>, StoreError> {
        column(self, index)
    }

    fn state_code(&self, index: usize) -> Result<i64, StoreError> {
        column::<i16>(self, index).map(i64::from)
    }

    fn priority(&self, index: usize) -> Result<i32, StoreError> {
        column(self, index)
    }

    fn real(&self, index: usize) -> Result<f64, StoreError> {
        column(self, index)
    }

    fn boolean(&self, index: usize) -> Result<bool, StoreError> {
        column(self, index)
    }

    fn optional_text(&self, index: usize) -> Result<Option<&str>, StoreError> {
        column(self, index)
    }

    fn optional_bytes(&self, index: usize) -> Result<Option<&[u8]>, StoreError> {
        column(self, index)
    }
}

pub(crate) fn runner_id_column(row: &Row, index: usize) -> Result<Option<RunnerId>, StoreError> {
    columns::runner_id(row, index)
}

pub(crate) fn job_id_column(row: &Row, index: usize) -> Result<JobId, StoreError> {
    columns::job_id(row, index)
}

/// Read a row selected with [`columns::LIFECYCLE_COLUMNS`] first.
pub(crate) fn lifecycle_from_row(row: &Row) -> Result<(i64, JobLifecycle), StoreError> {
    columns::lifecycle_from_row(row)
}

/// Read a row selected with [`columns::JOB_COLUMNS`].
pub(crate) fn job_from_row(row: &Row) -> Result<(i64, JobRecord), StoreError> {
    columns::job_from_row(row)
}

/// Where a job sits in the claim order, for its queue row.
#[derive(Debug, Clone)]
pub(crate) struct QueuePlace {
    pub(crate) kind: String,
    pub(crate) priority: i32,
    /// The requirements as stored in `jobs.requirements` (`None` when anyone may take the job).
    pub(crate) requirements: Option<String>,
}

impl QueuePlace {
    pub(crate) fn of(job: &JobRecord) -> QueuePlace {
        QueuePlace {
            kind: job.kind.clone(),
            priority: job.priority,
            requirements: crate::encoding::requirements_to_json(&job.requirements),
        }
    }
}

/// One job's new lifecycle to write, with what it was before (to know which queue row to add or
/// remove and whether its lease needs a check) and, when it may become pending, where it goes in
/// the queue.
pub(crate) struct LifecycleWrite<'a> {
    pub(crate) seq: i64,
    pub(crate) before: &'a JobLifecycle,
    pub(crate) after: &'a JobLifecycle,
    /// When the change was made: an attempt it ended without completing the job ended then.
    pub(crate) now: Timestamp,
    pub(crate) result: Option<WrittenResult>,
    pub(crate) place: Option<QueuePlace>,
}

/// A completion's result as written: its JSON text and its signature's (`None`: unsigned, and
/// any signature the job had is cleared with the result it signed).
pub(crate) struct WrittenResult {
    pub(crate) json: String,
    pub(crate) signature: Option<String>,
}

impl WrittenResult {
    pub(crate) fn of(
        result: &serde_json::Value,
        signature: Option<&muster_core::identity::VerifiedResultSignature>,
    ) -> WrittenResult {
        WrittenResult {
            json: result.to_string(),
            signature: signature.map(crate::encoding::result_signature_to_json),
        }
    }
}

/// Write back the lifecycles (and results, when given) of many jobs in one statement, and bring
/// the tables beside `jobs` in line: a queue row exactly while pending, and for a leased job a
/// lease check due no later than its deadline. The caller holds the jobs' row locks (or, for a
/// claim, their queue rows').
pub(crate) async fn write_lifecycles(
    transaction: &deadpool_postgres::Transaction<'_>,
    writes: &[LifecycleWrite<'_>],
) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Ok(());
    }
    let millis = |at: Option<Timestamp>| at.map(Timestamp::as_millis);
    let mut seqs = Vec::with_capacity(writes.len());
    let mut states = Vec::with_capacity(writes.len());
    let mut attempts = Vec::with_capacity(writes.len());
    let mut epochs = Vec::with_capacity(writes.len());
    let mut runner_ids = Vec::with_capacity(writes.len());
    let mut run_afters = Vec::with_capacity(writes.len());
    let mut lease_expirations = Vec::with_capacity(writes.len());
    let mut attempt_deadlines = Vec::with_capacity(writes.len());
    let mut cancel_deadlines = Vec::with_capacity(writes.len());
    let mut claimed_ats = Vec::with_capacity(writes.len());
    let mut started_ats = Vec::with_capacity(writes.len());
    let mut finished_ats = Vec::with_capacity(writes.len());
    let mut error_reasons = Vec::with_capacity(writes.len());
    let mut error_messages = Vec::with_capacity(writes.len());
    let mut results = Vec::with_capacity(writes.len());
    let mut result_signatures = Vec::with_capacity(writes.len());

    let mut unqueued = Vec::new();
    let mut queued = QueueRows::default();
    let mut checks = LeaseChecks::default();
    let mut ended_attempts = Vec::new();
    for write in writes {
        let after = write.after;
        if let Some(ended) = muster_core::ended_attempt(write.before, after, write.now) {
            ended_attempts.push((write.seq, ended));
        }
        seqs.push(write.seq);
        states.push(after.state.code() as i16);
        attempts.push(i64::from(after.attempt));
        epochs.push(after.lease_epoch as i64);
        runner_ids.push(after.runner_id.map(|id| id.as_bytes().to_vec()));
        run_afters.push(after.run_after.as_millis());
        lease_expirations.push(millis(after.lease_expires_at));
        attempt_deadlines.push(millis(after.attempt_deadline_at));
        cancel_deadlines.push(millis(after.cancel_deadline_at));
        claimed_ats.push(millis(after.claimed_at));
        started_ats.push(millis(after.started_at));
        finished_ats.push(millis(after.finished_at));
        error_reasons.push(after.error.as_ref().map(|error| error.reason.as_str()));
        error_messages.push(after.error.as_ref().map(|error| error.message.as_str()));
        results.push(write.result.as_ref().map(|result| result.json.as_str()));
        result_signatures.push(
            write
                .result
                .as_ref()
                .and_then(|result| result.signature.as_deref()),
        );

        let was_pending = write.before.state == JobState::Pending;
        if after.state == JobState::Pending {
            if !was_pending || write.before.run_after != after.run_after {
                let place = write.place.as_ref().ok_or_else(|| {
                    StoreError::Internal(format!(
                        "job row {} became pending without its queue place",
                        write.seq
                    ))
                })?;
                queued.push(write.seq, place, after.run_after.as_millis());
            }
        } else if was_pending {
            unqueued.push(write.seq);
        }
        if let Some(check_at) = lease_check_needed(write.before, after)
            && let Some(runner) = after.runner_id
        {
            checks.push(write.seq, runner, check_at);
        }
    }

    // Only the columns some job of the batch changes are sent and written: a claim changes 7 of
    // the 14, a completion about 6, and every column left out is an array fewer to send, unpack
    // and join (measured: about a fifth of the statement's cost per row).
    // (column, array type, values, whether some job of the batch changes it)
    macro_rules! lifecycle_column {
        ($name:literal, $sql_type:literal, $values:expr, $field:ident) => {
            (
                $name,
                $sql_type,
                &$values as &(dyn ToSql + Sync),
                writes
                    .iter()
                    .any(|write| write.before.$field != write.after.$field),
            )
        };
    }
    let columns = [
        lifecycle_column!("state", "smallint", states, state),
        lifecycle_column!("attempt", "bigint", attempts, attempt),
        lifecycle_column!("lease_epoch", "bigint", epochs, lease_epoch),
        lifecycle_column!("runner_id", "bytea", runner_ids, runner_id),
        lifecycle_column!("run_after", "bigint", run_afters, run_after),
        lifecycle_column!(
            "lease_expires_at",
            "bigint",
            lease_expirations,
            lease_expires_at
        ),
        lifecycle_column!(
            "attempt_deadline_at",
            "bigint",
            attempt_deadlines,
            attempt_deadline_at
        ),
        lifecycle_column!(
            "cancel_deadline_at",
            "bigint",
            cancel_deadlines,
            cancel_deadline_at
        ),
        lifecycle_column!("claimed_at", "bigint", claimed_ats, claimed_at),
        lifecycle_column!("started_at", "bigint", started_ats, started_at),
        lifecycle_column!("finished_at", "bigint", finished_ats, finished_at),
        lifecycle_column!("error_reason", "text", error_reasons, error),
        lifecycle_column!("error_message", "text", error_messages, error),
        (
            "result",
            "text",
            &results as &(dyn ToSql + Sync),
            writes.iter().any(|write| write.result.is_some()),
        ),
        (
            "result_signature",
            "text",
            &result_signatures as &(dyn ToSql + Sync),
            writes.iter().any(|write| write.result.is_some()),
        ),
    ];
    let written: Vec<_> = columns.iter().filter(|column| column.3).collect();
    let update_jobs = async {
        if written.is_empty() {
            return Ok(seqs.len() as u64);
        }
        let assignments = written
            .iter()
            .map(|(name, ..)| match *name {
                // A write without a result keeps the one stored.
                "result" => "result = coalesce(u.result, jobs.result)".to_string(),
                // A signature goes with the result it signs: replaced whenever the result is.
                "result_signature" => "result_signature = CASE WHEN u.result IS NULL \
                     THEN jobs.result_signature ELSE u.result_signature END"
                    .to_string(),
                name => format!("{name} = u.{name}"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let arrays = written
            .iter()
            .enumerate()
            .map(|(index, (_, sql_type, ..))| format!("${}::{sql_type}[]", index + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let names = written
            .iter()
            .map(|(name, ..)| *name)
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE jobs SET {assignments} FROM unnest($1::bigint[], {arrays}) AS u(seq, {names}) \
             WHERE jobs.seq = u.seq"
        );
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(written.len() + 1);
        params.push(&seqs);
        params.extend(written.iter().map(|column| column.2));
        let update = transaction
            .prepare_cached(&sql)
            .await
            .map_err(map_postgres_error)?;
        transaction
            .execute(&update, &params)
            .await
            .map_err(map_postgres_error)
    };
    // The statements go out together on the one connection (the driver pipelines them), so the
    // bookkeeping rows cost no extra round trips.
    let (updated, (), (), (), ()) = futures::try_join!(
        update_jobs,
        delete_queue_rows(transaction, &unqueued),
        queued.insert(transaction),
        checks.insert(transaction),
        insert_attempts(transaction, &ended_attempts),
    )?;
    if updated != seqs.len() as u64 {
        return Err(StoreError::Internal(format!(
            "wrote {updated} of {} job rows",
            seqs.len()
        )));
    }
    Ok(())
}

/// Keep the attempts that ended without completing their jobs (the attempt history); the same
/// epoch again changes nothing. Rare next to the writes around it: one statement each.
async fn insert_attempts(
    transaction: &deadpool_postgres::Transaction<'_>,
    ended: &[(i64, AttemptRecord)],
) -> Result<(), StoreError> {
    let millis = |at: Option<Timestamp>| at.map(Timestamp::as_millis);
    for (seq, record) in ended {
        super::execute(
            transaction,
            &format!(
                "INSERT INTO job_attempts (job_seq, {ATTEMPT_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING"
            ),
            &[
                seq,
                &i64::from(record.attempt),
                &(record.lease_epoch as i64),
                &record.runner_id.map(|id| id.as_bytes().to_vec()),
                &millis(record.claimed_at),
                &millis(record.started_at),
                &millis(record.ended_at),
                &record.outcome.as_str(),
                &record.error.as_ref().map(|error| error.reason.as_str()),
                &record.error.as_ref().map(|error| error.message.as_str()),
            ],
        )
        .await?;
    }
    Ok(())
}

/// The kept attempts of the job `id`, oldest first (the newest [`KEPT_ATTEMPTS_READ`] of them).
pub(crate) async fn kept_attempts(
    client: &impl deadpool_postgres::GenericClient,
    id: JobId,
) -> Result<Vec<AttemptRecord>, StoreError> {
    let rows = super::query(
        client,
        &format!(
            "SELECT {ATTEMPT_COLUMNS} FROM job_attempts \
             WHERE job_seq = (SELECT seq FROM jobs WHERE id = $1) \
             ORDER BY lease_epoch DESC LIMIT $2"
        ),
        &[&id.as_bytes().as_slice(), &KEPT_ATTEMPTS_READ],
    )
    .await?;
    let mut records = rows
        .iter()
        .map(columns::attempt_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    records.reverse();
    Ok(records)
}

/// Remove the queue rows of `seqs`.
async fn delete_queue_rows(
    transaction: &deadpool_postgres::Transaction<'_>,
    seqs: &[i64],
) -> Result<(), StoreError> {
    if seqs.is_empty() {
        return Ok(());
    }
    super::execute(
        transaction,
        "DELETE FROM job_queue WHERE seq = ANY($1)",
        &[&seqs],
    )
    .await
    .map(|_| ())
}

/// Queue rows to add (or whose due time to move), column by column.
#[derive(Default)]
struct QueueRows {
    seqs: Vec<i64>,
    kinds: Vec<String>,
    priorities: Vec<i32>,
    run_afters: Vec<i64>,
    requirements: Vec<Option<String>>,
}

impl QueueRows {
    fn push(&mut self, seq: i64, place: &QueuePlace, run_after: i64) {
        self.seqs.push(seq);
        self.kinds.push(place.kind.clone());
        self.priorities.push(place.priority);
        self.run_afters.push(run_after);
        self.requirements.push(place.requirements.clone());
    }

    async fn insert(
        &self,
        transaction: &deadpool_postgres::Transaction<'_>,
    ) -> Result<(), StoreError> {
        if self.seqs.is_empty() {
            return Ok(());
        }
        let statement = transaction
            .prepare_cached(
                "INSERT INTO job_queue (seq, kind, priority, run_after, requirements, \
                   organization_id, shared_runners) \
                 SELECT q.seq, q.kind, q.priority, q.run_after, q.requirements, \
                   jobs.organization_id, jobs.shared_runners \
                 FROM unnest($1::bigint[], $2::text[], $3::integer[], $4::bigint[], $5::text[]) \
                   AS q(seq, kind, priority, run_after, requirements) \
                 JOIN jobs ON jobs.seq = q.seq \
                 ON CONFLICT (seq) DO UPDATE SET run_after = excluded.run_after",
            )
            .await
            .map_err(map_postgres_error)?;
        transaction
            .execute(
                &statement,
                &[
                    &self.seqs,
                    &self.kinds,
                    &self.priorities,
                    &self.run_afters,
                    &self.requirements,
                ],
            )
            .await
            .map_err(map_postgres_error)?;
        Ok(())
    }
}

/// The longest a new lease goes unchecked: a claim's check is due this long after it at the
/// latest, so checks of finished jobs do not pile up, and a job that runs longer gets a new check
/// this often. Small next to the seconds-to-minutes leases runners take.
pub(crate) const LEASE_CHECK_INTERVAL_MS: i64 = 5_000;

/// When a job whose lifecycle went from `before` to `after` needs a new lease check: a lease just
/// taken, one that moved to another runner, or one whose deadline came earlier (a cancel grace).
/// A deadline moved later needs none: the job's earlier check finds it still leased and makes a
/// new one. A lease that ended needs none either: its check finds the job no longer leased.
fn lease_check_needed(before: &JobLifecycle, after: &JobLifecycle) -> Option<i64> {
    let reap_at = after.reap_at()?.as_millis();
    if !before.state.is_leased() {
        let latest = after.claimed_at.map_or(reap_at, |at| {
            at.as_millis().saturating_add(LEASE_CHECK_INTERVAL_MS)
        });
        return Some(reap_at.min(latest));
    }
    let earlier = before
        .reap_at()
        .is_none_or(|before_reap_at| reap_at < before_reap_at.as_millis());
    (earlier || before.runner_id != after.runner_id).then_some(reap_at)
}

/// Lease checks to add, a job at a time; written as one check per runner.
#[derive(Default)]
pub(crate) struct LeaseChecks {
    seqs: Vec<i64>,
    runner_ids: Vec<Vec<u8>>,
    check_ats: Vec<i64>,
}

impl LeaseChecks {
    pub(crate) fn push(&mut self, seq: i64, runner: RunnerId, check_at: i64) {
        self.seqs.push(seq);
        self.runner_ids.push(runner.as_bytes().to_vec());
        self.check_ats.push(check_at);
    }

    /// One check per runner, due at the earliest of its jobs' times.
    pub(crate) async fn insert(
        &self,
        transaction: &deadpool_postgres::Transaction<'_>,
    ) -> Result<(), StoreError> {
        if self.seqs.is_empty() {
            return Ok(());
        }
        let statement = transaction
            .prepare_cached(
                "INSERT INTO lease_checks (runner_id, check_at, seqs) \
                 SELECT runner_id, min(check_at), array_agg(seq) \
                 FROM unnest($1::bytea[], $2::bigint[], $3::bigint[]) AS c(runner_id, check_at, seq) \
                 GROUP BY runner_id",
            )
            .await
            .map_err(map_postgres_error)?;
        transaction
            .execute(&statement, &[&self.runner_ids, &self.check_ats, &self.seqs])
            .await
            .map_err(map_postgres_error)?;
        Ok(())
    }
}
