//! Combining concurrent calls of one kind into one transaction.
//!
//! Thirty runners claiming at once as thirty transactions each walk past the queue rows the other
//! twenty-nine hold (`SKIP LOCKED` skips a row only after reading it), and each pays for its own
//! statements and commit. A coordinator instead gathers the calls that arrive while earlier ones
//! are being written, and runs them as one transaction: the database sees a few large claims
//! instead of many small ones racing each other (docs/benchmarks.md has the figures).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::StoreError;

/// A call waiting for its batch, and where its answer goes.
type Waiting<Call, Answer> = (Call, oneshot::Sender<Result<Answer, StoreError>>);

/// How a combiner sizes its batches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits<Call> {
    /// Batches running at once.
    pub(crate) in_flight: usize,
    /// Calls at most in one batch.
    pub(crate) max_calls: usize,
    /// Work at most in one batch, as `weigh` counts it (jobs, say); a call that alone weighs
    /// more runs alone.
    pub(crate) max_weight: usize,
    pub(crate) weigh: fn(&Call) -> usize,
}

/// Runs calls of one kind in batches: at most `in_flight` batches at a time, each made of the
/// calls that arrived while the slots were busy, within the limits.
pub(crate) struct Combiner<Call, Answer> {
    sender: mpsc::UnboundedSender<Waiting<Call, Answer>>,
    task: tokio::task::JoinHandle<()>,
}

impl<Call, Answer> Combiner<Call, Answer>
where
    Call: Send + 'static,
    Answer: Send + 'static,
{
    /// Start the task that forms batches and hands each to `run`, which answers every call of the
    /// batch in order, or fails the whole batch (every call then gets that error).
    pub(crate) fn start<Run, Batch>(limits: BatchLimits<Call>, run: Run) -> Combiner<Call, Answer>
    where
        Run: Fn(Vec<Call>) -> Batch + Send + 'static,
        Batch:
            Future<Output = Result<Vec<Result<Answer, StoreError>>, StoreError>> + Send + 'static,
    {
        let (sender, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(form_batches(receiver, limits, run));
        Combiner { sender, task }
    }

    /// Run `call` in the next batch and answer what the batch answered for it.
    pub(crate) async fn call(&self, call: Call) -> Result<Answer, StoreError> {
        let (answer_sender, answer) = oneshot::channel();
        self.sender
            .send((call, answer_sender))
            .map_err(|_| StoreError::Unavailable("the store is shutting down".to_string()))?;
        answer.await.map_err(|_| {
            StoreError::Unavailable("the store stopped before answering the call".to_string())
        })?
    }
}

impl<Call, Answer> Drop for Combiner<Call, Answer> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn form_batches<Call, Answer, Run, Batch>(
    mut receiver: mpsc::UnboundedReceiver<Waiting<Call, Answer>>,
    limits: BatchLimits<Call>,
    run: Run,
) where
    Call: Send + 'static,
    Answer: Send + 'static,
    Run: Fn(Vec<Call>) -> Batch,
    Batch: Future<Output = Result<Vec<Result<Answer, StoreError>>, StoreError>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.in_flight.max(1)));
    // A call taken from the queue that did not fit its batch: it opens the next one.
    let mut held_over: Option<Waiting<Call, Answer>> = None;
    loop {
        // A slot first, then the calls: while every slot is busy, calls pile up and the next
        // batch takes them all at once.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let first = match held_over.take() {
            Some(first) => first,
            None => match receiver.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut weight = (limits.weigh)(&first.0);
        let mut waiting = vec![first];
        while waiting.len() < limits.max_calls.max(1) {
            let Ok(next) = receiver.try_recv() else {
                break;
            };
            let next_weight = (limits.weigh)(&next.0);
            if weight.saturating_add(next_weight) > limits.max_weight {
                held_over = Some(next);
                break;
            }
            weight += next_weight;
            waiting.push(next);
        }
        // A caller that gave up (its request was dropped) is left out: work done for it would
        // have nobody to report to.
        waiting.retain(|(_, answer)| !answer.is_closed());
        if waiting.is_empty() {
            continue;
        }
        let (calls, answers): (Vec<Call>, Vec<_>) = waiting.into_iter().unzip();
        let batch = run(calls);
        tokio::spawn(async move {
            let outcome = batch.await;
            drop(slot);
            match outcome {
                Ok(results) => {
                    let mut results = results.into_iter();
                    for answer in answers {
                        let result = results.next().unwrap_or_else(|| {
                            Err(StoreError::Internal(
                                "a batch answered fewer calls than it was given".to_string(),
                            ))
                        });
                        let _ = answer.send(result);
                    }
                }
                Err(error) => {
                    for answer in answers {
                        let _ = answer.send(Err(error.clone()));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::task::JoinHandle;

    use super::*;

    /// A combiner over numbers: a batch records its calls, waits at a gate the test opens, then
    /// answers each call `n` with `n * 10`, or fails whole when a call is negative. A call weighs
    /// its absolute value; one batch runs at a time.
    struct Harness {
        combiner: Arc<Combiner<i64, i64>>,
        batches: Arc<Mutex<Vec<Vec<i64>>>>,
        gate: Arc<Semaphore>,
    }

    impl Harness {
        /// A harness whose first batch (of the call `first`) has started and waits at the gate,
        /// so the calls made next pile up behind it.
        async fn with_a_batch_running(
            max_calls: usize,
            max_weight: usize,
            first: i64,
        ) -> (Harness, JoinHandle<Result<i64, StoreError>>) {
            let batches: Arc<Mutex<Vec<Vec<i64>>>> = Arc::new(Mutex::new(Vec::new()));
            let gate = Arc::new(Semaphore::new(0));
            let limits = BatchLimits {
                in_flight: 1,
                max_calls,
                max_weight,
                weigh: |call: &i64| call.unsigned_abs() as usize,
            };
            let run = {
                let batches = Arc::clone(&batches);
                let gate = Arc::clone(&gate);
                move |calls: Vec<i64>| {
                    let batches = Arc::clone(&batches);
                    let gate = Arc::clone(&gate);
                    async move {
                        batches
                            .lock()
                            .map_err(|_| StoreError::Internal("poisoned".into()))?
                            .push(calls.clone());
                        let _pass = gate
                            .acquire()
                            .await
                            .map_err(|_| StoreError::Internal("gate closed".into()))?;
                        if calls.iter().any(|call| *call < 0) {
                            return Err(StoreError::Unavailable("the batch failed".into()));
                        }
                        Ok(calls.into_iter().map(|call| Ok(call * 10)).collect())
                    }
                }
            };
            let harness = Harness {
                combiner: Arc::new(Combiner::start(limits, run)),
                batches,
                gate,
            };
            let first = harness.call(first);
            while harness.batches().is_empty() {
                tokio::task::yield_now().await;
            }
            (harness, first)
        }

        fn call(&self, call: i64) -> JoinHandle<Result<i64, StoreError>> {
            let combiner = Arc::clone(&self.combiner);
            tokio::spawn(async move { combiner.call(call).await })
        }

        fn batches(&self) -> Vec<Vec<i64>> {
            self.batches
                .lock()
                .map(|batches| batches.clone())
                .unwrap_or_default()
        }

        /// Let the calls made so far reach the combiner's queue, then let every batch through.
        async fn open_the_gate(&self) {
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
            self.gate.add_permits(100);
        }
    }

    #[tokio::test]
    async fn calls_that_arrive_while_the_slot_is_busy_run_as_one_batch_and_each_gets_its_answer() {
        let (harness, first) = Harness::with_a_batch_running(64, 1_000, 1).await;
        let later: Vec<_> = (2..=5).map(|call| harness.call(call)).collect();
        harness.open_the_gate().await;
        assert_eq!(first.await.ok(), Some(Ok(10)));
        for (call, handle) in (2..=5).zip(later) {
            assert_eq!(handle.await.ok(), Some(Ok(call * 10)));
        }
        assert_eq!(harness.batches(), vec![vec![1], vec![2, 3, 4, 5]]);
    }

    #[tokio::test]
    async fn a_failed_batch_answers_every_call_in_it_with_its_error() {
        let (harness, first) = Harness::with_a_batch_running(64, 1_000, 1).await;
        let doomed: Vec<_> = [7, -1, 8]
            .into_iter()
            .map(|call| harness.call(call))
            .collect();
        harness.open_the_gate().await;
        assert_eq!(first.await.ok(), Some(Ok(10)));
        for handle in doomed {
            assert_eq!(
                handle.await.ok(),
                Some(Err(StoreError::Unavailable("the batch failed".into())))
            );
        }
        assert_eq!(harness.batches(), vec![vec![1], vec![7, -1, 8]]);
    }

    #[tokio::test]
    async fn a_caller_that_gave_up_before_its_batch_formed_is_left_out() {
        let (harness, first) = Harness::with_a_batch_running(64, 1_000, 1).await;
        let abandoned = harness.call(2);
        let kept = harness.call(3);
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        assert!(abandoned.await.is_err(), "the abandoned call was cancelled");
        harness.open_the_gate().await;
        assert_eq!(first.await.ok(), Some(Ok(10)));
        assert_eq!(kept.await.ok(), Some(Ok(30)));
        assert_eq!(harness.batches(), vec![vec![1], vec![3]]);
    }

    #[tokio::test]
    async fn a_batch_stops_at_its_call_count_and_its_weight_and_the_rest_open_the_next() {
        let (harness, first) = Harness::with_a_batch_running(3, 10, 20).await;
        // 1 + 2 + 3 fill three calls; 4 + 5 fit ten; 6 alone; 30 weighs more than a batch: alone.
        let calls = [1, 2, 3, 4, 5, 6, 30];
        let later: Vec<_> = calls.into_iter().map(|call| harness.call(call)).collect();
        harness.open_the_gate().await;
        assert_eq!(first.await.ok(), Some(Ok(200)));
        for (call, handle) in calls.into_iter().zip(later) {
            assert_eq!(handle.await.ok(), Some(Ok(call * 10)));
        }
        assert_eq!(
            harness.batches(),
            vec![vec![20], vec![1, 2, 3], vec![4, 5], vec![6], vec![30]]
        );
    }
}
