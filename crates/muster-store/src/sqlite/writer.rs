//! The single writer: one thread owns the only writing connection and commits the operations of
//! many concurrent callers in one transaction (group commit).
//!
//! SQLite allows one writer at a time and a durable commit costs one fsync (about 130 µs on the
//! reference machine), so one fsync per request would cap muster near 7,000 writes per second.
//! Instead, operations queue while the previous commit syncs; the writer then runs everything
//! queued in one transaction, each operation inside its own savepoint so a failing one leaves no
//! trace, commits once, and only then answers every caller. A caller never hears `Ok` before its
//! change is durable.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::{oneshot, watch};

use super::map_sqlite_error;
use crate::StoreError;
use crate::rules::runners::RunnerTouches;

/// The most operations committed together; bounds the latency one commit adds to the first.
const MAX_GROUP: usize = 1024;

/// What a queued operation gets: the connection plus state only the writer thread touches.
pub(crate) struct WriterContext {
    pub(crate) conn: Connection,
    /// What each claiming runner's row was last written with, and when.
    pub(crate) runner_touches: RunnerTouches,
    /// Set by operations that may have made jobs claimable.
    pub(crate) pending_changed: bool,
    pub(crate) log_cap_bytes: u64,
    /// Set when the group's transaction could not begin: every operation is refused with it.
    pub(crate) begin_failed: Option<StoreError>,
    /// Set when an unguarded operation failed: the group is rolled back instead of committed.
    pub(crate) group_failed: Option<StoreError>,
}

type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Operation = Box<dyn FnOnce(&mut WriterContext) -> Reply + Send>;

pub(crate) struct Writer {
    queue: mpsc::Sender<Operation>,
}

impl Writer {
    pub(crate) fn start(
        context: WriterContext,
        pending_signal: watch::Sender<u64>,
    ) -> std::io::Result<Writer> {
        let (queue, operations) = mpsc::channel::<Operation>();
        std::thread::Builder::new()
            .name("muster-sqlite-writer".into())
            .spawn(move || run_writer(context, operations, pending_signal))?;
        Ok(Writer { queue })
    }

    /// Run `operation` in the next group commit and answer once that commit is durable.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        operation: impl FnOnce(&mut WriterContext) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (answer, answered) = oneshot::channel::<Result<R, StoreError>>();
        let queued: Operation = Box::new(move |context| {
            let outcome = run_in_savepoint(context, operation);
            Box::new(move |commit: Result<(), StoreError>| {
                let _ = answer.send(commit.and(outcome));
            })
        });
        let stopped = || StoreError::Unavailable("the SQLite writer has stopped".into());
        self.queue.send(queued).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    /// Like [`Writer::run`] but without a savepoint, for hot operations that refuse (not found,
    /// lease lost, wrong state, rejected) only before their first write and write each row with
    /// one statement, so anything else is an SQLite failure. Such an error rolls back the whole group and every caller in it is refused:
    /// no half-written state, without paying for a savepoint (which copies every page the
    /// operation touches into the statement journal).
    pub(crate) async fn run_unguarded<R: Send + 'static>(
        &self,
        operation: impl FnOnce(&mut WriterContext) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (answer, answered) = oneshot::channel::<Result<R, StoreError>>();
        let queued: Operation = Box::new(move |context| {
            let outcome = match &context.begin_failed {
                Some(error) => Err(error.clone()),
                None => {
                    catch_unwind(AssertUnwindSafe(|| operation(context))).unwrap_or_else(|_| {
                        Err(StoreError::Internal(
                            "a store operation panicked; its group was rolled back".into(),
                        ))
                    })
                }
            };
            // Refusals (not found, lease lost, wrong state, rejected) come before any write by
            // this method's contract; only a failure of SQLite itself can leave writes behind.
            if let Err(error @ (StoreError::Unavailable(_) | StoreError::Internal(_))) = &outcome {
                context.group_failed.get_or_insert_with(|| error.clone());
            }
            Box::new(move |commit: Result<(), StoreError>| {
                let _ = answer.send(commit.and(outcome));
            })
        });
        let stopped = || StoreError::Unavailable("the SQLite writer has stopped".into());
        self.queue.send(queued).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

fn run_in_savepoint<R>(
    context: &mut WriterContext,
    operation: impl FnOnce(&mut WriterContext) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    if let Some(error) = &context.begin_failed {
        return Err(error.clone());
    }
    context
        .conn
        .prepare_cached("SAVEPOINT operation")
        .and_then(|mut s| s.execute([]))
        .map_err(map_sqlite_error)?;
    let outcome = match catch_unwind(AssertUnwindSafe(|| operation(context))) {
        Ok(outcome) => outcome,
        Err(_) => Err(StoreError::Internal(
            "a store operation panicked; its changes were rolled back".into(),
        )),
    };
    let finish = if outcome.is_ok() {
        "RELEASE operation"
    } else {
        "ROLLBACK TO operation"
    };
    let mut finished = context
        .conn
        .prepare_cached(finish)
        .and_then(|mut s| s.execute([]));
    if outcome.is_err() && finished.is_ok() {
        finished = context
            .conn
            .prepare_cached("RELEASE operation")
            .and_then(|mut s| s.execute([]));
    }
    finished.map_err(map_sqlite_error)?;
    outcome
}

fn run_writer(
    mut context: WriterContext,
    operations: mpsc::Receiver<Operation>,
    pending_signal: watch::Sender<u64>,
) {
    while let Ok(first) = operations.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match operations.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let begin = context
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(map_sqlite_error);
        context.begin_failed = begin.clone().err();
        let replies: Vec<Reply> = group
            .into_iter()
            .map(|operation| operation(&mut context))
            .collect();
        // Wake waiting claimers before the fsync rather than after: their claims queue behind
        // this group, so they can only see its jobs once it is committed, and their wake-up and
        // request handling overlap with the sync instead of following it.
        if context.pending_changed
            && context.group_failed.is_none()
            && context.begin_failed.is_none()
        {
            pending_signal.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
        context.pending_changed = false;
        let commit = match context.group_failed.take() {
            Some(error) => Err(StoreError::Unavailable(format!(
                "a write committed together with this one failed ({error}); nothing was committed, retry"
            ))),
            None => begin.and_then(|()| {
                context
                    .conn
                    .execute_batch("COMMIT")
                    .map_err(map_sqlite_error)
            }),
        };
        if let Err(error) = &commit {
            tracing::error!(%error, "failed to commit a write group; every operation in it was refused");
            let _ = context.conn.execute_batch("ROLLBACK");
            context.runner_touches.clear();
        }
        for reply in replies {
            reply(commit.clone());
        }
    }
}
