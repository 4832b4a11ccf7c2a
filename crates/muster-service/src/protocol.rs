//! The runner protocol: runner heartbeats, claims (with long polling), and the calls of a job's
//! lease holder (heartbeat, progress, log, complete, outputs, fail, DAG). Every job-scoped call
//! is fenced by the store on the runner and the lease epoch; every answer says whether to stop.

use std::collections::BTreeMap;
use std::time::Duration;

use muster_core::ErrorCode;
use muster_core::identity::{ResultSignature, VerifiedResultSignature};
use muster_core::limits::{
    MAX_BATCH_COMPLETIONS, MAX_CLAIM_JOBS, MAX_CLAIM_KINDS, MAX_CLAIM_WAIT_MS,
    MAX_FAILURE_MESSAGE_LEN, MAX_HEARTBEAT_JOBS, MAX_LOG_ENTRIES, MAX_PROGRESS_MESSAGE_LEN,
};
use muster_core::{
    Action, ArtifactId, Capabilities, FailureReason, JobError, JobId, Lease, LogLevel, NewLogEntry,
    Principal, Progress, RunnerId, authorize,
};
/// A job a claim leased, with its lease.
pub use muster_store::ClaimedJob;
use muster_store::{CompletionItem, JobCall, NewAuditEntry};
use serde_json::{Value, json};

use crate::auth::RunnerBinding;
use crate::identity::audit_actions;
use crate::jobs::JobView;
use crate::{Coordinator, ServiceError};

/// A long poll re-checks the store at least this often, for jobs that became due by time alone
/// (a retry's backoff ending) and for jobs submitted through another coordinator.
const LONG_POLL_RECHECK: Duration = Duration::from_millis(250);

/// What a runner says in its heartbeat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunnerHeartbeat {
    /// It takes no new jobs (a long poll it has open ends at once).
    pub draining: bool,
    /// The jobs it runs; the answer names those it should stop.
    pub jobs: Vec<JobId>,
    pub hostname: Option<String>,
    pub version: Option<String>,
}

/// The answer to a runner heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatAnswer {
    /// When to beat next.
    pub heartbeat_interval: Duration,
    /// Of the jobs listed, those to stop (being cancelled, or no longer this runner's).
    pub cancel: Vec<JobId>,
}

/// A claim: which kinds, what the runner offers, how many jobs, how long to wait for one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claim {
    pub kinds: Vec<String>,
    pub offer: Capabilities,
    /// Default 1.
    pub max_jobs: Option<u32>,
    /// How long to wait when nothing is there yet (a long poll), in milliseconds; default 0.
    pub wait_ms: Option<u64>,
}

/// A job-scoped call's target: the job, and the lease epoch the caller believes it holds (when
/// it sends one, it must be the current epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasedJob {
    pub job: JobId,
    pub epoch: Option<u64>,
}

/// What a lease holder is told after each call: whether to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSignal {
    pub cancel: bool,
}

/// The answer to a job heartbeat: the extended lease.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseExtended {
    pub lease: Lease,
    pub cancel: bool,
}

/// The answer to a log append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogAppended {
    pub next_seq: u64,
    pub cancel: bool,
}

/// The answer to recording outputs: every output the job now has.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputsRecorded {
    pub outputs: BTreeMap<String, ArtifactId>,
    pub cancel: bool,
}

/// One completion of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchCompletion {
    pub job: JobId,
    pub epoch: Option<u64>,
    pub result: Value,
    /// The result's bakeoff signature, when the runner signed it.
    pub sig: Option<ResultSignature>,
}

/// At most this many refused signatures of one batch are audited one by one; the last entry
/// counts the rest, so a batch of bad signatures costs a bounded number of audit writes.
const MAX_AUDITED_REFUSALS_PER_BATCH: usize = 16;

/// A refused signature, waiting for its audit entry.
struct SignatureRefusal {
    job: JobId,
    code: ErrorCode,
    message: String,
}

impl SignatureRefusal {
    /// The refusal `error` is, when it is one of a signature.
    fn of(job: JobId, error: &ServiceError) -> Option<SignatureRefusal> {
        matches!(
            error.code(),
            ErrorCode::InvalidSignature | ErrorCode::SignatureRequired
        )
        .then(|| SignatureRefusal {
            job,
            code: error.code(),
            message: error.message().to_string(),
        })
    }
}

/// A failure as the runner reports it: what defaults and limits apply is decided here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FailureReport {
    pub message: Option<String>,
    /// Default `runner_error`.
    pub reason: Option<FailureReason>,
    /// Default true: retried while attempts remain.
    pub retryable: Option<bool>,
}

/// A runner's progress report, checked: a percentage from 0 to 100 and a message of at most
/// [`MAX_PROGRESS_MESSAGE_LEN`] characters.
pub fn checked_progress(percent: f64, message: Option<String>) -> Result<Progress, ServiceError> {
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return Err(ServiceError::invalid_input(format!(
            "progress must be between 0 and 100, got {percent}"
        )));
    }
    if message
        .as_ref()
        .is_some_and(|message| message.chars().nth(MAX_PROGRESS_MESSAGE_LEN).is_some())
    {
        return Err(ServiceError::invalid_input(format!(
            "progress message must be at most {MAX_PROGRESS_MESSAGE_LEN} characters"
        )));
    }
    Ok(Progress { percent, message })
}

/// A heartbeat's progress field: a number, or `{"progress"|"percent": N, "message": "..."}`.
pub fn progress_from_value(value: Value) -> Result<Progress, ServiceError> {
    let (percent, message) = match value {
        Value::Number(number) => (number.as_f64(), None),
        Value::Object(object) => {
            let percent = object
                .get("progress")
                .or_else(|| object.get("percent"))
                .and_then(Value::as_f64);
            let message = match object.get("message") {
                None | Some(Value::Null) => None,
                Some(Value::String(text)) => Some(text.clone()),
                Some(_) => {
                    return Err(ServiceError::invalid_input(
                        "progress.message must be a string",
                    ));
                }
            };
            (percent, message)
        }
        _ => (None, None),
    };
    let percent = percent.ok_or_else(|| {
        ServiceError::invalid_input(
            "progress must be a number from 0 to 100, or {\"progress\": N, \"message\": \"...\"}",
        )
    })?;
    checked_progress(percent, message)
}

/// A heartbeat event as the log entry it becomes: `info`, its text (a string event, or an
/// object's `message`), the event itself as metadata when it is not a plain string.
fn event_entry(event: Value) -> NewLogEntry {
    let message = match &event {
        Value::String(text) => text.clone(),
        other => other
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| other.to_string()),
    };
    NewLogEntry {
        seq: None,
        level: LogLevel::Info,
        message,
        metadata: (!event.is_string()).then_some(event),
    }
}

/// The runner a protocol call comes from, or why it may not make it.
fn calling_runner(principal: &Principal) -> Result<RunnerId, ServiceError> {
    runner_taking(principal, Action::RunnerProtocol)
}

/// The runner taking `action`, or why it may not.
fn runner_taking(principal: &Principal, action: Action) -> Result<RunnerId, ServiceError> {
    authorize(principal, action)?;
    principal
        .runner_id()
        .ok_or_else(|| ServiceError::forbidden("runner routes take a runner token"))
}

fn job_call(principal: &Principal, target: LeasedJob) -> Result<JobCall, ServiceError> {
    Ok(JobCall {
        runner: calling_runner(principal)?,
        job: target.job,
        epoch: target.epoch,
    })
}

/// The kinds a runner names (in a claim or its registration): at least one, at most
/// [`MAX_CLAIM_KINDS`], each a well-formed kind.
pub(crate) fn check_runner_kinds(kinds: &[String]) -> Result<(), ServiceError> {
    if kinds.is_empty() {
        return Err(ServiceError::invalid_input(
            "kinds: name at least one kind this runner can run",
        ));
    }
    if kinds.len() > MAX_CLAIM_KINDS {
        return Err(ServiceError::invalid_input(format!(
            "kinds: at most {MAX_CLAIM_KINDS} kinds, got {}",
            kinds.len()
        )));
    }
    for (index, kind) in kinds.iter().enumerate() {
        muster_core::check_kind(&format!("kinds[{index}]"), kind)
            .map_err(|error| ServiceError::invalid_input(error.to_string()))?;
    }
    Ok(())
}

/// A runner whose capabilities are bound (by its signed registration, or by the operator who
/// created it) may claim with fewer kinds and capabilities than bound, never more: a claim that
/// widens them is refused rather than narrowed silently, so a misconfigured runner hears why it
/// gets no jobs instead of quietly running fewer.
pub(crate) fn check_claim_within_binding(
    binding: &RunnerBinding,
    kinds: &[String],
    offer: &muster_core::Capabilities,
) -> Result<(), ServiceError> {
    let refused = |problem: String| {
        ServiceError::new(
            ErrorCode::CapabilityNotRegistered,
            format!("{problem}; a claim may narrow what the runner registered, never widen it"),
        )
    };
    if let Some(bound_kinds) = &binding.bound_kinds
        && let Some(kind) = kinds.iter().find(|kind| !bound_kinds.contains(kind))
    {
        return Err(refused(format!(
            "kinds: '{kind}' is not in the runner's registration"
        )));
    }
    if let Some(bound) = &binding.bound_capabilities
        && let Some(problem) = offer.first_beyond(bound)
    {
        return Err(refused(problem));
    }
    Ok(())
}

impl Coordinator {
    pub async fn runner_heartbeat(
        &self,
        principal: &Principal,
        beat: RunnerHeartbeat,
    ) -> Result<HeartbeatAnswer, ServiceError> {
        let runner = runner_taking(principal, Action::RunnerHeartbeat)?;
        if beat.jobs.len() > MAX_HEARTBEAT_JOBS {
            return Err(ServiceError::invalid_input(format!(
                "jobs: at most {MAX_HEARTBEAT_JOBS} ids"
            )));
        }
        for (field, text) in [("hostname", &beat.hostname), ("version", &beat.version)] {
            if let Some(text) = text {
                muster_core::check_runner_report(field, text)
                    .map_err(|error| ServiceError::invalid_input(error.to_string()))?;
            }
        }
        let draining = beat.draining;
        let cancel = self
            .store
            .runner_heartbeat(
                muster_store::RunnerBeat {
                    runner,
                    draining,
                    jobs: beat.jobs,
                    hostname: beat.hostname,
                    version: beat.version,
                },
                self.clock.now(),
            )
            .await?;
        self.draining_runners.set(runner, draining);
        Ok(HeartbeatAnswer {
            heartbeat_interval: self.config.heartbeat_interval,
            cancel,
        })
    }

    /// Lease jobs of the claim's kinds whose requirements the runner meets, lowest priority
    /// number first; when none is there, wait up to `wait_ms` for one (answering no jobs when
    /// none came, or when the runner is draining, or the coordinator stops).
    pub async fn claim(
        &self,
        principal: &Principal,
        claim: Claim,
    ) -> Result<Vec<ClaimedJob>, ServiceError> {
        let runner = calling_runner(principal)?;
        check_runner_kinds(&claim.kinds)?;
        let max_jobs = claim.max_jobs.unwrap_or(1);
        if max_jobs == 0 || max_jobs > MAX_CLAIM_JOBS {
            return Err(ServiceError::invalid_input(format!(
                "max_jobs: must be between 1 and {MAX_CLAIM_JOBS}, got {max_jobs}"
            )));
        }
        let wait_ms = claim.wait_ms.unwrap_or(0);
        if wait_ms > MAX_CLAIM_WAIT_MS {
            return Err(ServiceError::invalid_input(format!(
                "wait_ms: must be at most {MAX_CLAIM_WAIT_MS}, got {wait_ms}"
            )));
        }
        claim
            .offer
            .validate("")
            .map_err(|error| ServiceError::invalid_input(error.to_string()))?;
        let binding = self.auth.binding(runner, self.store.as_ref()).await?;
        check_claim_within_binding(&binding, &claim.kinds, &claim.offer)?;
        let request = muster_store::ClaimRequest {
            runner,
            kinds: claim.kinds,
            offer: claim.offer,
            max_jobs,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        let mut signal = self.store.pending_signal();
        loop {
            // A draining runner claims nothing more, including in a long poll it began before.
            if self.draining_runners.contains(runner) {
                self.metrics.record_claim(std::iter::empty());
                return Ok(Vec::new());
            }
            signal.borrow_and_update();
            let now = self.clock.now();
            let claimed = self.store.claim_jobs(request.clone(), now).await?;
            if !claimed.is_empty() {
                self.job_changes
                    .changed_many(claimed.iter().map(|claimed| claimed.job.id));
                self.metrics.record_claim(claimed.iter().map(|claimed| {
                    let ready = claimed.job.created_at.max(claimed.job.lifecycle.run_after);
                    now.millis_since(ready) as f64 / 1000.0
                }));
                return Ok(claimed);
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                self.metrics.record_claim(std::iter::empty());
                return Ok(Vec::new());
            }
            // A long poll must not hold up a graceful shutdown for up to wait_ms.
            tokio::select! {
                _ = tokio::time::timeout(remaining.min(LONG_POLL_RECHECK), signal.changed()) => {}
                _ = self.draining_runners.changed() => {}
                _ = self.shutdown.cancelled() => {
                    return Err(ServiceError::unavailable("the coordinator is shutting down"));
                }
            }
        }
    }

    /// Extend the lease by the job's `lease_ttl_s`, recording progress and appending `events`
    /// to the log as `info` entries.
    pub async fn job_heartbeat(
        &self,
        principal: &Principal,
        target: LeasedJob,
        progress: Option<Progress>,
        events: Vec<Value>,
    ) -> Result<LeaseExtended, ServiceError> {
        let call = job_call(principal, target)?;
        if events.len() > MAX_LOG_ENTRIES {
            return Err(ServiceError::invalid_input(format!(
                "events: at most {MAX_LOG_ENTRIES} per heartbeat"
            )));
        }
        let events: Vec<NewLogEntry> = events.into_iter().map(event_entry).collect();
        let ack = self
            .store
            .job_heartbeat(call, progress, events, self.clock.now())
            .await?;
        // Even without events: the first heartbeat moves a claimed job to running, and the
        // lease's expiry moves, which a live view of the job shows.
        self.job_changes.changed(call.job);
        let lease = ack
            .lease
            .ok_or_else(|| ServiceError::internal("heartbeat answered without a lease"))?;
        Ok(LeaseExtended {
            lease,
            cancel: ack.cancel,
        })
    }

    pub async fn report_progress(
        &self,
        principal: &Principal,
        target: LeasedJob,
        progress: Progress,
    ) -> Result<StopSignal, ServiceError> {
        let call = job_call(principal, target)?;
        let progress = checked_progress(progress.percent, progress.message)?;
        let ack = self
            .store
            .report_progress(call, progress, self.clock.now())
            .await?;
        self.job_changes.changed(call.job);
        Ok(StopSignal { cancel: ack.cancel })
    }

    pub async fn append_logs(
        &self,
        principal: &Principal,
        target: LeasedJob,
        entries: Vec<NewLogEntry>,
    ) -> Result<LogAppended, ServiceError> {
        let call = job_call(principal, target)?;
        if entries.len() > MAX_LOG_ENTRIES {
            return Err(ServiceError::invalid_input(format!(
                "entries: at most {MAX_LOG_ENTRIES} per call"
            )));
        }
        let ack = self
            .store
            .append_logs(call, entries, self.clock.now())
            .await?;
        self.job_changes.changed(call.job);
        Ok(LogAppended {
            next_seq: ack.next_seq,
            cancel: ack.cancel,
        })
    }

    /// Complete the job with an unsigned result: [`Coordinator::complete_signed`] without `sig`.
    pub async fn complete(
        &self,
        principal: &Principal,
        target: LeasedJob,
        result: Value,
        outputs: BTreeMap<String, ArtifactId>,
    ) -> Result<JobView, ServiceError> {
        self.complete_signed(principal, target, result, None, outputs)
            .await
    }

    /// Complete the job with its result, recording `outputs` (each a stored artifact) in the
    /// same commit. A `sig` must verify against the caller's registered key
    /// (`invalid_signature`) and is then recorded on the job; a kind requiring signed results
    /// refuses a result without one (`signature_required`). A refusal leaves the job unchanged
    /// and still leased, and a refused signature is audited.
    pub async fn complete_signed(
        &self,
        principal: &Principal,
        target: LeasedJob,
        result: Value,
        sig: Option<ResultSignature>,
        outputs: BTreeMap<String, ArtifactId>,
    ) -> Result<JobView, ServiceError> {
        let call = job_call(principal, target)?;
        muster_core::validate_outputs(&outputs)
            .map_err(|error| ServiceError::invalid_input(error.to_string()))?;
        let checked = self
            .check_completion(call.runner, call.job, &result, sig)
            .await;
        let signature = match checked {
            Ok(signature) => signature,
            Err(error) => {
                if let Some(refusal) = SignatureRefusal::of(call.job, &error) {
                    self.audit_signature_refusals(call.runner, vec![refusal])
                        .await;
                }
                return Err(error);
            }
        };
        self.keep_outputs(&outputs).await?;
        let produced: Vec<ArtifactId> = outputs.values().copied().collect();
        let job = self
            .store
            .complete_job_signed(call, result, signature, outputs, self.clock.now())
            .await?;
        self.grant_to_job_organization(&job.organization.id, produced)
            .await;
        self.metrics.record_completions(1, self.clock.now());
        self.job_changes.changed(call.job);
        self.attached.job_released(call.runner, call.job);
        Ok(self.view(job).await)
    }

    /// Whether `result` (with `sig`, when sent) may complete `job`: the signature verified
    /// against `runner`'s key, then the kind's rules. Answers what the job records of the
    /// signature.
    async fn check_completion(
        &self,
        runner: RunnerId,
        job: JobId,
        result: &Value,
        sig: Option<ResultSignature>,
    ) -> Result<Option<VerifiedResultSignature>, ServiceError> {
        let signature = match sig {
            Some(sig) => {
                let public_key = self.runner_public_key(runner).await?;
                let public_key = public_key.ok_or_else(no_registered_key)?;
                let verified =
                    muster_core::identity::verified_result_signature(&public_key, result, sig)
                        .map_err(refused_signature)?;
                Some(verified)
            }
            None => None,
        };
        self.check_result_rules(runner, job, result, signature.is_some())
            .await?;
        Ok(signature)
    }

    /// Verify the signatures sent with a batch of completions (`sigs`, one per completion) against
    /// `runner`'s key, all together; answers, per completion, what its job records of its
    /// signature (`None` when it came unsigned) or why it was refused.
    async fn verify_batch_signatures(
        &self,
        runner: RunnerId,
        completions: &[BatchCompletion],
        sigs: Vec<Option<ResultSignature>>,
    ) -> Result<Vec<Result<Option<VerifiedResultSignature>, ServiceError>>, ServiceError> {
        if sigs.iter().all(Option::is_none) {
            return Ok(sigs.into_iter().map(|_| Ok(None)).collect());
        }
        let Some(public_key) = self.runner_public_key(runner).await? else {
            return Ok(sigs
                .into_iter()
                .map(|sig| match sig {
                    Some(_) => Err(no_registered_key()),
                    None => Ok(None),
                })
                .collect());
        };
        let signed: Vec<(&Value, ResultSignature)> = completions
            .iter()
            .zip(sigs.iter())
            .filter_map(|(item, sig)| sig.clone().map(|sig| (&item.result, sig)))
            .collect();
        let mut verified =
            muster_core::identity::verified_result_signatures(&public_key, signed).into_iter();
        Ok(sigs
            .into_iter()
            .map(|sig| match sig {
                None => Ok(None),
                Some(_) => match verified.next() {
                    Some(outcome) => outcome.map(Some).map_err(refused_signature),
                    None => Err(ServiceError::internal(
                        "fewer signature outcomes than signatures",
                    )),
                },
            })
            .collect())
    }

    /// Audit refused signatures, one entry each up to [`MAX_AUDITED_REFUSALS_PER_BATCH`]. The
    /// refusal is answered whether or not its audit entry could be written: the entry is a
    /// record of it, and failing to write one must not turn a 422 into a 500.
    async fn audit_signature_refusals(&self, runner: RunnerId, refusals: Vec<SignatureRefusal>) {
        let unrecorded = refusals
            .len()
            .saturating_sub(MAX_AUDITED_REFUSALS_PER_BATCH);
        let recorded = refusals.len() - unrecorded;
        let at = self.clock.now();
        for (index, refusal) in refusals.into_iter().take(recorded).enumerate() {
            let mut detail = json!({
                "code": refusal.code.as_str(),
                "cause": refusal.message,
            });
            if unrecorded > 0 && index + 1 == recorded {
                detail["unrecorded_refusals_in_batch"] = json!(unrecorded);
            }
            let entry = NewAuditEntry {
                at,
                actor: format!("runner:{runner}"),
                action: audit_actions::SIGNATURE_REFUSED.to_string(),
                subject: format!("job:{}", refusal.job),
                detail,
                organization_id: None,
            };
            if let Err(error) = self.store.append_audit(entry).await {
                tracing::warn!(%runner, job = %refusal.job, %error, "could not audit a refused result signature");
            }
        }
    }

    async fn keep_outputs(
        &self,
        outputs: &BTreeMap<String, ArtifactId>,
    ) -> Result<(), ServiceError> {
        self.keep_artifacts(
            outputs
                .iter()
                .map(|(name, id)| (format!("outputs.{name}"), *id))
                .collect(),
        )
        .await
    }

    /// Record artifacts the job produced, by name; a name recorded again names the new one.
    pub async fn record_outputs(
        &self,
        principal: &Principal,
        target: LeasedJob,
        outputs: BTreeMap<String, ArtifactId>,
    ) -> Result<OutputsRecorded, ServiceError> {
        let call = job_call(principal, target)?;
        if outputs.is_empty() {
            return Err(ServiceError::invalid_input(
                "send either name and artifact_id, or outputs (an object of at least one name to artifact id)",
            ));
        }
        muster_core::validate_outputs(&outputs)
            .map_err(|error| ServiceError::invalid_input(error.to_string()))?;
        self.keep_outputs(&outputs).await?;
        let produced: Vec<ArtifactId> = outputs.values().copied().collect();
        let recorded = self
            .store
            .record_outputs(call, outputs, self.clock.now())
            .await?;
        match self.store.get_job(call.job).await {
            Ok(job) => {
                self.grant_to_job_organization(&job.organization.id, produced)
                    .await
            }
            Err(error) => {
                tracing::warn!(%error, job = %call.job, "read the organization of a job whose outputs were recorded; its outputs stay unreadable to its organization's scoped tokens");
            }
        }
        Ok(OutputsRecorded {
            outputs: recorded.outputs,
            cancel: recorded.ack.cancel,
        })
    }

    /// Complete many jobs in one commit, each fenced on its own; answers each one's outcome
    /// in the order given.
    pub async fn complete_many(
        &self,
        principal: &Principal,
        completions: Vec<BatchCompletion>,
    ) -> Result<Vec<Result<(), ServiceError>>, ServiceError> {
        let runner = calling_runner(principal)?;
        if completions.len() > MAX_BATCH_COMPLETIONS {
            return Err(ServiceError::invalid_input(format!(
                "items: at most {MAX_BATCH_COMPLETIONS} per call"
            )));
        }
        // Items whose signature does not verify or whose result breaks its kind's rules are
        // answered here and never reach the store; the others are committed together, each
        // fenced on its own. The signatures are verified together, then the rules read once.
        let mut completions = completions;
        let sigs: Vec<Option<ResultSignature>> =
            completions.iter_mut().map(|item| item.sig.take()).collect();
        let signatures = self
            .verify_batch_signatures(runner, &completions, sigs)
            .await?;
        let rule_items: Vec<(JobId, &Value, bool)> = completions
            .iter()
            .zip(&signatures)
            .map(|(item, signature)| (item.job, &item.result, matches!(signature, Ok(Some(_)))))
            .collect();
        let rule_outcomes = self.check_results_rules(runner, &rule_items).await?;
        let mut refused: Vec<Option<ServiceError>> = Vec::with_capacity(completions.len());
        let mut ids = Vec::with_capacity(completions.len());
        let mut items = Vec::with_capacity(completions.len());
        let mut signature_refusals = Vec::new();
        for ((item, signature), rules) in completions.into_iter().zip(signatures).zip(rule_outcomes)
        {
            match signature.and_then(|signature| rules.map(|()| signature)) {
                Ok(signature) => {
                    refused.push(None);
                    ids.push(item.job);
                    items.push(CompletionItem {
                        job: item.job,
                        epoch: item.epoch,
                        result: item.result,
                        signature,
                    });
                }
                Err(error) => {
                    signature_refusals.extend(SignatureRefusal::of(item.job, &error));
                    refused.push(Some(error));
                }
            }
        }
        if !signature_refusals.is_empty() {
            self.audit_signature_refusals(runner, signature_refusals)
                .await;
        }
        let stored = if items.is_empty() {
            Vec::new()
        } else {
            self.store
                .complete_jobs(runner, items, self.clock.now())
                .await?
        };
        let mut completed = 0;
        let mut stored = ids.into_iter().zip(stored);
        let mut outcomes = Vec::with_capacity(refused.len());
        for refusal in refused {
            let outcome = match refusal {
                Some(error) => Err(error),
                None => match stored.next() {
                    Some((id, Ok(()))) => {
                        completed += 1;
                        self.job_changes.changed(id);
                        self.attached.job_released(runner, id);
                        Ok(())
                    }
                    Some((_, Err(error))) => Err(ServiceError::from(error)),
                    None => Err(ServiceError::internal(
                        "the store answered fewer completions than it was given",
                    )),
                },
            };
            outcomes.push(outcome);
        }
        self.metrics.record_completions(completed, self.clock.now());
        Ok(outcomes)
    }

    /// Fail the attempt: retried while attempts remain unless not retryable.
    pub async fn fail(
        &self,
        principal: &Principal,
        target: LeasedJob,
        report: FailureReport,
    ) -> Result<JobView, ServiceError> {
        let call = job_call(principal, target)?;
        let reason = report.reason.unwrap_or(FailureReason::RunnerError);
        let message = report
            .message
            .filter(|message| !message.trim().is_empty())
            .unwrap_or_else(|| "the runner reported a failure without a message".to_string());
        let message: String = message.chars().take(MAX_FAILURE_MESSAGE_LEN).collect();
        let job = self
            .store
            .fail_job(
                call,
                JobError { reason, message },
                report.retryable.unwrap_or(true),
                self.clock.now(),
            )
            .await?;
        self.metrics.record_failure(reason, 1, self.clock.now());
        self.job_changes.changed(call.job);
        self.attached.job_released(call.runner, call.job);
        Ok(self.view(job).await)
    }

    /// Replace the job's step DAG.
    pub async fn sync_dag(
        &self,
        principal: &Principal,
        target: LeasedJob,
        nodes: Vec<Value>,
        edges: Vec<Value>,
    ) -> Result<StopSignal, ServiceError> {
        let call = job_call(principal, target)?;
        muster_core::validate_dag(&nodes, &edges)
            .map_err(|error| ServiceError::invalid_input(error.to_string()))?;
        let value = serde_json::json!({"nodes": nodes, "edges": edges});
        let ack = self.store.sync_dag(call, value, self.clock.now()).await?;
        Ok(StopSignal { cancel: ack.cancel })
    }
}

/// A signature sent by a runner without a registered key, which nothing can verify.
fn no_registered_key() -> ServiceError {
    ServiceError::new(
        ErrorCode::InvalidSignature,
        "sig: this runner has no registered key (an operator created it), so no signature of its can verify; send the result without sig, or register the runner with a key; the job is unchanged and still yours",
    )
}

fn refused_signature(error: muster_core::identity::IdentityError) -> ServiceError {
    ServiceError::new(
        ErrorCode::InvalidSignature,
        format!("{error}; the job is unchanged and still yours"),
    )
}
