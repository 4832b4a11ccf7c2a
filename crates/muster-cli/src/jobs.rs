//! `muster job ...`: submit, list, show, logs, cancel, retry, cancel-all, retry-all, wait.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use muster_api::{BulkAction, BulkJobs, Job, JobSelector, JobState, Requirements, SubmitJob};
use muster_client::{JobQuery, MusterClient};
use uuid::Uuid;

use crate::connect::ConnectArgs;
use crate::output::{or_dash, out, print_json, print_table, short_time};

#[derive(Subcommand, Debug)]
pub(crate) enum JobCommand {
    /// Submit a job; prints its id (or the job with --json).
    ///
    /// By default the job is an `exec` job running COMMAND on a runner started with `--exec`:
    ///
    ///   muster job submit -- echo hello
    ///   muster job submit --label gpu=a100 --resource vram_gb=40 -- python train.py
    ///   muster job submit --kind /reconstruction/v1 --payload '{"scene": 7}'
    #[command(verbatim_doc_comment)]
    Submit(Box<SubmitArgs>),
    /// List jobs, newest first.
    ///
    ///   muster job list --state running
    #[command(verbatim_doc_comment)]
    List(ListArgs),
    /// Show one job: state, attempts, progress, error, result, inputs and outputs.
    ///
    ///   muster job show 0192... --json
    #[command(verbatim_doc_comment)]
    Show(IdArgs),
    /// Print a job's log; -f follows it live until the job ends.
    ///
    ///   muster job logs 0192... -f
    #[command(verbatim_doc_comment)]
    Logs(LogsArgs),
    /// Cancel a job (a running job's runner is told to stop).
    ///
    ///   muster job cancel 0192...
    #[command(verbatim_doc_comment)]
    Cancel(IdArgs),
    /// Put a failed or cancelled job back in the queue, with a fresh allowance of attempts.
    ///
    ///   muster job retry 0192...
    #[command(verbatim_doc_comment)]
    Retry(IdArgs),
    /// Cancel every job matching the filters.
    ///
    /// A page at a time: pending jobs end cancelled, claimed and running ones are told to stop;
    /// a job that changed state meanwhile is left alone. Asks first at a terminal; elsewhere
    /// needs --yes. Audited.
    ///
    ///   muster job cancel-all --kind render --state pending --dry-run
    ///   muster job cancel-all --kind render --created-before 2026-12-03T10:00:00Z --yes
    #[command(verbatim_doc_comment)]
    CancelAll(BulkArgs),
    /// Retry every failed or cancelled job matching the filters, a page at a time.
    ///
    /// Asks first at a terminal; elsewhere needs --yes. Audited.
    ///
    ///   muster job retry-all --kind render --state failed --yes
    #[command(verbatim_doc_comment)]
    RetryAll(BulkArgs),
    /// Save one of a job's output artifacts to a file.
    ///
    ///   muster job download 0192... report.pdf --output ./report.pdf
    #[command(verbatim_doc_comment)]
    Download(DownloadArgs),
    /// Wait for a job to end, showing its progress; exits 0 only if it completed.
    ///
    ///   muster job wait $(muster job submit -- make test)
    #[command(verbatim_doc_comment)]
    Wait(WaitArgs),
    /// Check a job's result signature again, offline; exits 0 only if it verifies.
    ///
    /// Checks the digest of its result's canonical JSON, the Ed25519 signature, and that the
    /// key's fingerprint is the one recorded.
    ///
    ///   muster job verify 0192... --public-key BASE64
    ///   muster job verify 0192... --runner-key-from-coordinator
    ///   muster job verify --file job.json --public-key BASE64
    #[command(verbatim_doc_comment)]
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// The job's id (read from the coordinator); or give --file.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    id: Option<Uuid>,
    /// A job's JSON (as `muster job show --json` prints it), checked without a coordinator.
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// The signer's public key (standard base64 of its 32 bytes).
    #[arg(long, required_unless_present = "runner_key_from_coordinator")]
    public_key: Option<String>,
    /// Take the key the job's runner registered with from the coordinator.
    #[arg(long, conflicts_with_all = ["public_key", "file"])]
    runner_key_from_coordinator: bool,
}

#[derive(Args, Debug)]
pub(crate) struct IdArgs {
    /// The job's id.
    id: Uuid,
    /// Print the API's JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct SubmitArgs {
    /// The job's kind: the capability that runs it.
    #[arg(long, default_value = "exec")]
    kind: String,
    /// The payload, a JSON object; for `exec` jobs it is built from COMMAND, --env and --cwd.
    #[arg(long)]
    payload: Option<String>,
    /// Lower runs first.
    #[arg(long)]
    priority: Option<i32>,
    /// A label the runner must have, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// A tag the runner must have (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// A resource the runner must have at least, NAME=AMOUNT (repeatable), e.g. vram_gb=24.
    #[arg(long = "resource", value_name = "NAME=AMOUNT")]
    resources: Vec<String>,
    /// Attempts before the job fails.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Run-time limit of one attempt, seconds.
    #[arg(long = "timeout")]
    timeout_s: Option<u32>,
    /// Lease length in seconds; the runner's heartbeats extend it.
    #[arg(long = "lease-ttl")]
    lease_ttl_s: Option<u32>,
    /// Base of the exponential retry backoff, seconds.
    #[arg(long = "backoff-base")]
    backoff_base_s: Option<u32>,
    /// Do not run before this time (RFC 3339, e.g. 2026-12-01T09:00:00Z).
    #[arg(long)]
    run_after: Option<String>,
    /// A file to upload as an input artifact of the job (repeatable); the runner gets its id.
    #[arg(long = "input", value_name = "FILE")]
    inputs: Vec<std::path::PathBuf>,
    /// An artifact already uploaded, by id (sha256:...), as an input (repeatable).
    #[arg(long = "input-id", value_name = "ID")]
    input_ids: Vec<String>,
    /// Submitting again with the same key returns the first job instead of a new one.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// The organization the job is for (its id, as `muster orgs list` shows it) [default:
    /// default].
    #[arg(long = "org", value_name = "ORGANIZATION")]
    organization: Option<String>,
    /// Environment variable for an `exec` command, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory for an `exec` command on the runner.
    #[arg(long)]
    cwd: Option<String>,
    /// Print the job as JSON instead of its id.
    #[arg(long)]
    json: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct DownloadArgs {
    /// The job's id.
    id: Uuid,
    /// The output's name, as `muster job show` lists it.
    name: String,
    /// Where to write it [default: the output's name in the current directory].
    #[arg(long, short)]
    output: Option<std::path::PathBuf>,
}

/// Which jobs: the filters `job list`, `cancel-all` and `retry-all` share.
#[derive(Args, Debug)]
pub(crate) struct FilterArgs {
    /// pending, claimed, running, cancelling, completed, failed or cancelled.
    #[arg(long)]
    state: Option<String>,
    #[arg(long)]
    kind: Option<String>,
    /// Only jobs of this runner.
    #[arg(long)]
    runner: Option<Uuid>,
    /// Only jobs of this organization (its id).
    #[arg(long = "org", value_name = "ORGANIZATION")]
    organization: Option<String>,
    /// Only jobs created at or after this instant (RFC 3339, e.g. 2026-12-03T10:00:00Z).
    #[arg(long, value_name = "TIME")]
    created_after: Option<String>,
    /// Only jobs created before this instant (RFC 3339).
    #[arg(long, value_name = "TIME")]
    created_before: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// At most this many jobs.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct BulkArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Count the jobs it would change, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Change them without asking (needed when stdin is not a terminal).
    #[arg(short, long)]
    yes: bool,
    /// Print what changed as JSON: {"changed", "skipped"}.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct LogsArgs {
    id: Uuid,
    /// Keep printing new entries until the job ends.
    #[arg(short, long)]
    follow: bool,
    /// One JSON entry per line.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct WaitArgs {
    id: Uuid,
    /// Give up after this many seconds (exit code 2).
    #[arg(long)]
    timeout: Option<u64>,
    /// Print the final job as JSON.
    #[arg(long)]
    json: bool,
}

fn key_values(pairs: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            _ => bail!("{what} '{pair}' is not KEY=VALUE"),
        })
        .collect()
}

fn parse_state(text: &str) -> anyhow::Result<JobState> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|_| {
        anyhow::format_err!("unknown state '{text}': use pending, claimed, running, cancelling, completed, failed or cancelled")
    })
}

/// Run a job command; answers the process exit code.
pub(crate) async fn run(command: JobCommand, connect: &ConnectArgs) -> anyhow::Result<u8> {
    // Verifying a file needs no coordinator, so no token either.
    let command = match command {
        JobCommand::Verify(args) => return verify(connect, args).await,
        command => command,
    };
    let client = connect.client()?;
    match command {
        JobCommand::Submit(args) => submit(&client, *args).await,
        JobCommand::List(args) => list(&client, args).await,
        JobCommand::Show(args) => {
            let job = client.get_job(args.id).await.context("show job")?;
            print_job(&job, args.json)?;
            if !args.json {
                let attempts = client
                    .job_attempts(args.id)
                    .await
                    .context("read the job's attempts")?;
                print_attempts(&attempts.items);
            }
            Ok(0)
        }
        JobCommand::Logs(args) => logs(&client, args).await,
        JobCommand::Cancel(args) => {
            let job = client.cancel_job(args.id).await.context("cancel job")?;
            print_job(&job, args.json)?;
            Ok(0)
        }
        JobCommand::Retry(args) => {
            let job = client.retry_job(args.id).await.context("retry job")?;
            print_job(&job, args.json)?;
            Ok(0)
        }
        JobCommand::CancelAll(args) => bulk(&client, BulkAction::Cancel, args).await,
        JobCommand::RetryAll(args) => bulk(&client, BulkAction::Retry, args).await,
        JobCommand::Wait(args) => wait(&client, args).await,
        JobCommand::Verify(args) => verify(connect, args).await,
        JobCommand::Download(args) => {
            let job = client.get_job(args.id).await.context("read job")?;
            let Some(artifact) = job.outputs.get(&args.name) else {
                let names: Vec<&str> = job.outputs.keys().map(String::as_str).collect();
                bail!(
                    "job {} has no output named '{}' (it has: {})",
                    job.id,
                    args.name,
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                );
            };
            let target = args.output.unwrap_or_else(|| {
                std::path::PathBuf::from(
                    std::path::Path::new(&args.name)
                        .file_name()
                        .unwrap_or_else(|| std::ffi::OsStr::new("output")),
                )
            });
            let size = client
                .download_artifact_to_file(artifact, &target)
                .await
                .context("download the output")?;
            crate::output::note!("saved {} ({size} bytes) to {}", args.name, target.display());
            Ok(0)
        }
    }
}

async fn submit(client: &MusterClient, args: SubmitArgs) -> anyhow::Result<u8> {
    let payload = match (&args.payload, args.command.is_empty()) {
        (Some(text), true) => Some(serde_json::from_str(text).context("parse --payload as JSON")?),
        (Some(_), false) => bail!("give either --payload or a command after --, not both"),
        (None, false) => Some(serde_json::json!({
            "command": args.command,
            "env": key_values(&args.env, "--env")?,
            "cwd": args.cwd,
            "timeout_s": args.timeout_s,
        })),
        (None, true) if args.kind == "exec" => {
            bail!("an exec job needs a command: muster job submit -- COMMAND ARGS...")
        }
        (None, true) => None,
    };
    let resources = args
        .resources
        .iter()
        .map(|pair| {
            let (name, amount) = pair
                .split_once('=')
                .ok_or_else(|| anyhow::format_err!("--resource '{pair}' is not NAME=AMOUNT"))?;
            let amount: f64 = amount
                .parse()
                .with_context(|| format!("--resource '{pair}': the amount is not a number"))?;
            Ok((name.to_string(), amount))
        })
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    let requirements = Requirements {
        labels: key_values(&args.labels, "--label")?,
        tags: args.tags,
        resources,
    };
    let run_after = args
        .run_after
        .as_deref()
        .map(|text| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        })
        .transpose()
        .context("parse --run-after as RFC 3339")?;
    let mut inputs = args.input_ids;
    for path in &args.inputs {
        let uploaded = client
            .upload_artifact_file(path)
            .await
            .with_context(|| format!("upload input {}", path.display()))?;
        inputs.push(uploaded.id);
    }
    let request = SubmitJob {
        inputs: if inputs.is_empty() {
            None
        } else {
            Some(inputs)
        },
        kind: args.kind,
        payload,
        priority: args.priority,
        requirements: Some(requirements),
        max_attempts: args.max_attempts,
        timeout_s: args.timeout_s,
        lease_ttl_s: args.lease_ttl_s,
        backoff_base_s: args.backoff_base_s,
        run_after,
        idempotency_key: args.idempotency_key,
        organization_id: args.organization,
    };
    let (job, _) = client.submit_job(&request).await.context("submit job")?;
    if args.json {
        print_json(&job)?;
    } else {
        out!("{}", job.id);
    }
    Ok(0)
}

fn state_name(state: JobState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn print_job(job: &Job, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(job);
    }
    let field = |name: &str, value: String| out!("{name:<14}{value}");
    field("id", job.id.to_string());
    field("kind", job.kind.clone());
    field("organization", job.organization_id.clone());
    field("state", state_name(job.state));
    if let Some(reason) = job.pending_reason {
        field(
            "waiting",
            serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        );
    }
    field(
        "attempt",
        format!("{} of {}", job.attempt, job.max_attempts),
    );
    field("priority", job.priority.to_string());
    field(
        "progress",
        format!(
            "{}%{}",
            job.progress.percent,
            job.progress
                .message
                .as_deref()
                .map(|m| format!(" {m}"))
                .unwrap_or_default()
        ),
    );
    field(
        "runner",
        or_dash(job.runner_id.map(|id| id.to_string()).as_deref()),
    );
    field("created", short_time(Some(job.created_at)));
    field("started", short_time(job.started_at));
    field("finished", short_time(job.finished_at));
    if let Some(error) = &job.error {
        let reason = serde_json::to_value(error.reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        field("error", format!("{reason}: {}", error.message));
    }
    if let Some(result) = &job.result {
        field("result", result.to_string());
    }
    if let Some(signature) = &job.result_signature {
        field("signed by", signature.key_fingerprint.clone());
        field("  sha256", signature.sha256.clone());
        field("  signed at", signature.signed_at.clone());
        field("  signer", signature.signer_runner_id.clone());
    }
    for (index, input) in job.inputs.iter().enumerate() {
        field(if index == 0 { "inputs" } else { "" }, input.clone());
    }
    for (index, (name, id)) in job.outputs.iter().enumerate() {
        field(
            if index == 0 { "outputs" } else { "" },
            format!("{name}  {id}"),
        );
    }
    field("payload", job.payload.to_string());
    Ok(())
}

/// A job's attempts, one line each: number, runner, lease epoch, claim and end, how it ended.
fn print_attempts(attempts: &[muster_client::api::Attempt]) {
    use muster_client::api::AttemptOutcome;
    for (index, attempt) in attempts.iter().enumerate() {
        let outcome = match (attempt.outcome, &attempt.error) {
            (AttemptOutcome::InProgress, _) => "in progress".to_string(),
            (AttemptOutcome::Completed, _) => "completed".to_string(),
            (outcome, Some(error)) => {
                let reason = serde_json::to_value(error.reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let outcome = if outcome == AttemptOutcome::Cancelled {
                    "cancelled"
                } else {
                    "failed"
                };
                format!("{outcome} ({reason}: {})", error.message)
            }
            (AttemptOutcome::Cancelled, None) => "cancelled".to_string(),
            (AttemptOutcome::Failed, None) => "failed".to_string(),
        };
        out!(
            "{:<14}{}  runner {}  epoch {}  claimed {}  ended {}  {outcome}",
            if index == 0 { "attempts" } else { "" },
            attempt.attempt,
            or_dash(attempt.runner_id.map(|id| id.to_string()).as_deref()),
            attempt.lease_epoch,
            short_time(attempt.claimed_at),
            short_time(attempt.ended_at),
        );
    }
}

async fn list(client: &MusterClient, args: ListArgs) -> anyhow::Result<u8> {
    if args.limit == 0 || args.limit > 1000 {
        bail!("--limit must be between 1 and 1000");
    }
    let query = JobQuery {
        state: args.filter.state.as_deref().map(parse_state).transpose()?,
        kind: args.filter.kind,
        runner_id: args.filter.runner,
        organization_id: args.filter.organization,
        created_after: args.filter.created_after,
        created_before: args.filter.created_before,
        limit: Some(args.limit),
        cursor: None,
    };
    let page = client.list_jobs(&query).await.context("list jobs")?;
    if args.json {
        return print_json(&page).map(|()| 0);
    }
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .map(|job| {
            vec![
                job.id.to_string(),
                job.kind.clone(),
                state_name(job.state),
                format!("{}/{}", job.attempt, job.max_attempts),
                format!("{:.0}%", job.progress.percent),
                short_time(Some(job.created_at)),
            ]
        })
        .collect();
    print_table(
        &["ID", "KIND", "STATE", "ATTEMPT", "PROGRESS", "CREATED"],
        &rows,
    );
    if page.next_cursor.is_some() {
        crate::output::note!("(more jobs: raise --limit or filter with --state/--kind)");
    }
    Ok(0)
}

fn print_log_entry(entry: &muster_api::LogEntry, json: bool) -> anyhow::Result<()> {
    if json {
        out!("{}", serde_json::to_string(entry)?);
    } else {
        let level = serde_json::to_value(entry.level)
            .ok()
            .and_then(|v| v.as_str().map(str::to_uppercase))
            .unwrap_or_default();
        out!(
            "{} {level:<5} {}",
            short_time(Some(entry.ts)),
            entry.message
        );
    }
    Ok(())
}

async fn logs(client: &MusterClient, args: LogsArgs) -> anyhow::Result<u8> {
    if !args.follow {
        let mut after = None;
        loop {
            let page = client
                .job_logs(args.id, after, Some(1000))
                .await
                .context("read job log")?;
            for entry in &page.items {
                print_log_entry(entry, args.json)?;
            }
            if page.items.is_empty() {
                return Ok(0);
            }
            after = page.next_seq.checked_sub(1);
        }
    }
    let response = client
        .follow_logs_response(args.id, None)
        .await
        .context("follow job log")?;
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut event = String::new();
    let mut data = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("read the live log")?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(newline) = buffer.find('\n') {
            let line: String = buffer.drain(..=newline).collect();
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                match event.as_str() {
                    "log" => {
                        let entry: muster_api::LogEntry =
                            serde_json::from_str(&data).context("parse a log event")?;
                        print_log_entry(&entry, args.json)?;
                    }
                    "end" => return Ok(0),
                    "error" => bail!("the coordinator ended the stream: {data}"),
                    _ => {}
                }
                event.clear();
                data.clear();
            } else if let Some(value) = line.strip_prefix("event:") {
                event = value.trim().to_string();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.trim_start());
            }
        }
    }
    bail!("the live log ended before the job did (coordinator stopped?)")
}

/// How many matching jobs one bulk call examines.
const BULK_PAGE: u32 = 500;

async fn bulk(client: &MusterClient, action: BulkAction, args: BulkArgs) -> anyhow::Result<u8> {
    let instant =
        |text: Option<String>, flag: &str| -> anyhow::Result<Option<time::OffsetDateTime>> {
            text.map(|text| {
                time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        anyhow::format_err!(
                            "{flag} '{text}': not an RFC 3339 time (e.g. 2026-12-03T10:00:00Z)"
                        )
                    })
            })
            .transpose()
        };
    let filter = JobSelector {
        state: args.filter.state.as_deref().map(parse_state).transpose()?,
        kind: args.filter.kind,
        runner_id: args.filter.runner,
        organization_id: args.filter.organization,
        created_after: instant(args.filter.created_after, "--created-after")?,
        created_before: instant(args.filter.created_before, "--created-before")?,
    };
    let (verb, done) = match action {
        BulkAction::Cancel => ("cancel", "cancelled"),
        BulkAction::Retry => ("retry", "retried"),
    };
    let mut request = BulkJobs {
        action,
        ids: None,
        filter: Some(filter),
        dry_run: true,
        cursor: None,
        limit: None,
    };
    let counted = client
        .bulk_jobs(&request)
        .await
        .with_context(|| format!("count the jobs to {verb}"))?
        .would_change
        .context("the coordinator answered a dry run without a count")?;
    let count_text = if counted.capped {
        format!("more than {}", counted.count)
    } else {
        counted.count.to_string()
    };
    if args.dry_run || counted.count == 0 {
        if args.json {
            print_json(
                &serde_json::json!({"would_change": counted.count, "capped": counted.capped}),
            )?;
        } else {
            println!("{count_text} jobs would be {done}");
        }
        return Ok(0);
    }
    if !args.yes {
        use std::io::{BufRead, IsTerminal, Write};
        if !std::io::stdin().is_terminal() {
            bail!(
                "{verb} {count_text} jobs? Nothing changed: pass --yes to do it (or --dry-run to only count)"
            );
        }
        eprint!("{verb} {count_text} jobs matching the filters? [y/N] ");
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("read the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing changed");
            return Ok(1);
        }
    }
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new(counted.count)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    request.dry_run = false;
    request.limit = Some(BULK_PAGE);
    let (mut changed, mut skipped) = (0u64, 0u64);
    loop {
        let outcome = client
            .bulk_jobs(&request)
            .await
            .with_context(|| format!("{verb} jobs ({changed} {done} before this)"))?;
        changed += outcome.changed.len() as u64;
        skipped += outcome.skipped.len() as u64;
        if changed > bar.length().unwrap_or(0) {
            bar.set_length(changed);
        }
        bar.set_position(changed);
        bar.set_message(done);
        match outcome.next_cursor {
            Some(cursor) => request.cursor = Some(cursor),
            None => break,
        }
    }
    bar.finish_and_clear();
    if args.json {
        print_json(&serde_json::json!({"changed": changed, "skipped": skipped}))?;
    } else {
        println!("{done} {changed} jobs");
        if skipped > 0 {
            eprintln!("{skipped} jobs were left alone: they changed state meanwhile");
        }
    }
    Ok(0)
}

async fn wait(client: &MusterClient, args: WaitArgs) -> anyhow::Result<u8> {
    let bar = indicatif::ProgressBar::new(100);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos:>3}% {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let job = loop {
        let job = client.get_job(args.id).await.context("read job")?;
        bar.set_position(job.progress.percent.clamp(0.0, 100.0) as u64);
        let message = job.progress.message.clone().unwrap_or_default();
        bar.set_message(format!("{} {message}", state_name(job.state)));
        if matches!(
            job.state,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        ) {
            break job;
        }
        if args
            .timeout
            .is_some_and(|limit| started.elapsed() >= Duration::from_secs(limit))
        {
            bar.abandon_with_message(format!(
                "still {} after {} s",
                state_name(job.state),
                started.elapsed().as_secs()
            ));
            return Ok(2);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    bar.finish_and_clear();
    if args.json {
        print_json(&job)?;
    } else {
        match (&job.state, &job.error) {
            (JobState::Completed, _) => crate::output::note!("job {} completed", job.id),
            (_, Some(error)) => crate::output::note!(
                "job {} {}: {}",
                job.id,
                state_name(job.state),
                error.message
            ),
            _ => crate::output::note!("job {} {}", job.id, state_name(job.state)),
        }
    }
    Ok(if job.state == JobState::Completed {
        0
    } else {
        1
    })
}

/// Re-check a job's result signature; answers 0 when it verifies, 1 when it does not.
async fn verify(connect: &ConnectArgs, args: VerifyArgs) -> anyhow::Result<u8> {
    let job: serde_json::Value = match (&args.file, args.id) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?
        }
        (None, Some(id)) => {
            let job = connect.client()?.get_job(id).await.context("read job")?;
            serde_json::to_value(job).context("encode the job")?
        }
        (None, None) => anyhow::bail!("give a job id or --file"),
    };
    let public_key = match args.public_key {
        Some(key) => key,
        None => {
            let runner = job["runner_id"].as_str().context(
                "the job names no runner, so its key cannot be fetched; give --public-key",
            )?;
            let runner: Uuid = runner
                .parse()
                .context("the job's runner_id is not a UUID")?;
            let shown = connect
                .client()?
                .get_runner(runner)
                .await
                .context("read the job's runner")?;
            let shown = serde_json::to_value(shown).context("encode the runner")?;
            shown["public_key"]
                .as_str()
                .map(str::to_string)
                .context("the coordinator shows no public_key for the job's runner (created without a key, or an older coordinator); give --public-key")?
        }
    };
    match check_result_signature(&job, &public_key) {
        Ok(message) => {
            println!("signature verified: {message}");
            Ok(0)
        }
        Err(problem) => {
            eprintln!("signature does not verify: {problem}");
            Ok(1)
        }
    }
}

/// Whether `job`'s `result_signature` is `public_key`'s signature of its `result`; answers what
/// verified, or why not.
fn check_result_signature(job: &serde_json::Value, public_key: &str) -> Result<String, String> {
    use muster_core::identity::{ResultSignature, RunnerPublicKey, verify_result_signature};
    let signature = &job["result_signature"];
    if !signature.is_object() {
        return Err("the job has no result_signature (its result is unsigned)".to_string());
    }
    let text = |name: &str| {
        signature[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("result_signature.{name} is missing"))
    };
    let key = RunnerPublicKey::from_base64("--public-key", public_key)
        .map_err(|error| error.to_string())?;
    let recorded = text("key_fingerprint")?;
    if key.fingerprint() != recorded {
        return Err(format!(
            "the key given is {}, but the job was signed by {recorded}",
            key.fingerprint()
        ));
    }
    let sig = ResultSignature {
        sha256: text("sha256")?,
        signature: text("signature")?,
        runner_id: text("signer_runner_id")?,
        signed_at: text("signed_at")?,
    };
    let result = job
        .get("result")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    verify_result_signature(&key, &result, &sig).map_err(|error| error.to_string())?;
    Ok(format!(
        "result sha256 {} signed by {recorded} (signer {}, at {})",
        sig.sha256, sig.runner_id, sig.signed_at
    ))
}
