//! The gRPC runner protocol, measured from outside as runners meet it: enqueue → assignment
//! received by an idle attached runner, cancel → runner told, and a burn-down by attached
//! runners completing with unary calls. The runners are raw tonic clients of
//! `RunnerProtocolService` (what `muster runner --transport grpc` speaks), so the figures are
//! the protocol's, not the daemon's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use muster_api::{CreateRunner, SubmitJob};
use muster_client::MusterClient;
use muster_proto::protocol_pb as pb;
use muster_proto::protocol_pb::attach_request::Body as RunnerBody;
use muster_proto::protocol_pb::attach_response::Body as ServerBody;
use muster_proto::protocol_pb::runner_protocol_service_client::RunnerProtocolServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{Args, admin, percentile, preload};

/// An attached runner: its token, the sender of its stream, what the coordinator pushes.
pub(crate) struct Attached {
    pub(crate) token: String,
    pub(crate) client: RunnerProtocolServiceClient<Channel>,
    pub(crate) sender: mpsc::Sender<pb::AttachRequest>,
    pub(crate) inbound: tonic::Streaming<pb::AttachResponse>,
}

pub(crate) fn authorized<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

pub(crate) async fn channel(base_url: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(base_url.to_string())
        .context("the coordinator's URL")?
        .tcp_nodelay(true)
        .connect()
        .await
        .context("connect over h2c")
}

pub(crate) async fn register_token(admin: &MusterClient, name: String) -> anyhow::Result<String> {
    Ok(admin
        .create_runner(&CreateRunner {
            name,
            ..Default::default()
        })
        .await
        .context("register a runner")?
        .token)
}

/// Attach a runner with `token` on `channel`, taking `kind`, up to `max_jobs` at once.
pub(crate) async fn attach(
    channel: Channel,
    token: String,
    kind: &str,
    max_jobs: u32,
) -> anyhow::Result<Attached> {
    let mut client = RunnerProtocolServiceClient::new(channel);
    let (sender, receiver) = mpsc::channel(1024);
    sender
        .send(pb::AttachRequest {
            request_id: String::new(),
            body: Some(RunnerBody::Hello(pb::Hello {
                protocol_version: 1,
                features: vec!["resume".into()],
                kinds: vec![kind.to_string()],
                max_jobs,
                hostname: "bench".into(),
                version: "bench".into(),
                ..pb::Hello::default()
            })),
        })
        .await
        .context("queue the hello")?;
    let mut inbound = client
        .attach(authorized(&token, ReceiverStream::new(receiver)))
        .await
        .context("attach")?
        .into_inner();
    match inbound
        .message()
        .await
        .context("read the answer to Hello")?
    {
        Some(pb::AttachResponse {
            body: Some(ServerBody::Accepted(_)),
            ..
        }) => {}
        other => bail!("the first message was not Accepted: {other:?}"),
    }
    Ok(Attached {
        token,
        client,
        sender,
        inbound,
    })
}

async fn ready(sender: &mpsc::Sender<pb::AttachRequest>, credit: u32) -> anyhow::Result<()> {
    sender
        .send(pb::AttachRequest {
            request_id: String::new(),
            body: Some(RunnerBody::Ready(pb::Ready {
                additional_credit: credit,
            })),
        })
        .await
        .context("send credit")
}

async fn complete(
    client: &mut RunnerProtocolServiceClient<Channel>,
    token: &str,
    job_id: String,
    epoch: u64,
) -> anyhow::Result<()> {
    client
        .complete_job(authorized(
            token,
            pb::CompleteJobRequest {
                job_id,
                lease_epoch: epoch,
                result_json: "null".into(),
                ..pb::CompleteJobRequest::default()
            },
        ))
        .await
        .context("complete a job")?;
    Ok(())
}

/// What the push scenario measured, in milliseconds and jobs per second.
pub(crate) struct PushRun {
    pub(crate) assignment_p50: f64,
    pub(crate) assignment_p99: f64,
    pub(crate) cancel_p50: f64,
    pub(crate) cancel_p99: f64,
}

/// Enqueue → assignment received, over `--latency-runners` idle attached runners with one
/// credit each, `--latency-samples` jobs submitted one at a time; then cancel → Cancel received
/// for a job an attached runner holds.
pub(crate) async fn latencies(base_url: &str, args: &Args) -> anyhow::Result<PushRun> {
    eprintln!(
        "push latency: {} samples, {} attached runners",
        args.latency_samples, args.latency_runners
    );
    let admin = admin(base_url).await?;
    let (assigned_sender, mut assigned) = mpsc::unbounded_channel::<(String, Instant)>();
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for index in 0..args.latency_runners {
        let token = register_token(&admin, format!("push-{index}")).await?;
        let mut runner = attach(channel(base_url).await?, token, "ping", 1).await?;
        let assigned_sender = assigned_sender.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    message = runner.inbound.message() => message?,
                    _ = stop.cancelled() => return anyhow::Ok(()),
                };
                let received_at = Instant::now();
                let Some(message) = message else {
                    return anyhow::Ok(());
                };
                if let Some(ServerBody::Assignment(assignment)) = message.body {
                    let epoch = assignment.lease.as_ref().map_or(0, |lease| lease.epoch);
                    let _ = assigned_sender.send((assignment.job_id.clone(), received_at));
                    complete(&mut runner.client, &runner.token, assignment.job_id, epoch).await?;
                    ready(&runner.sender, 1).await?;
                }
            }
        }));
    }
    drop(assigned_sender);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut latencies = Vec::with_capacity(args.latency_samples);
    for _ in 0..args.latency_samples {
        let job = SubmitJob {
            kind: "ping".into(),
            ..Default::default()
        };
        let sent = Instant::now();
        let (submitted, _) = admin.submit_job(&job).await?;
        let (job_id, received_at) = tokio::time::timeout(Duration::from_secs(5), assigned.recv())
            .await
            .ok()
            .flatten()
            .ok_or_else(|| anyhow::format_err!("a submitted job was not assigned within 5 s"))?;
        if job_id != submitted.id.to_string() {
            bail!("assigned {job_id}, expected {}", submitted.id);
        }
        latencies.push(received_at.duration_since(sent).as_secs_f64() * 1000.0);
    }
    stop.cancel();
    for task in tasks {
        task.await??;
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let (assignment_p50, assignment_p99) =
        (percentile(&latencies, 0.50), percentile(&latencies, 0.99));

    // Cancels: one runner holds one job at a time; each is cancelled by a user over HTTP.
    let samples = args.latency_samples.min(500);
    eprintln!("push cancel: {samples} samples");
    let token = register_token(&admin, "push-cancel".into()).await?;
    let mut runner = attach(channel(base_url).await?, token, "hold", 1).await?;
    let mut cancels = Vec::with_capacity(samples);
    for _ in 0..samples {
        let (submitted, _) = admin
            .submit_job(&SubmitJob {
                kind: "hold".into(),
                ..Default::default()
            })
            .await?;
        let epoch = loop {
            let message = next(&mut runner.inbound).await?;
            if let Some(ServerBody::Assignment(assignment)) = message.body {
                break assignment.lease.map_or(0, |lease| lease.epoch);
            }
        };
        let sent = Instant::now();
        admin.cancel_job(submitted.id).await?;
        loop {
            let message = next(&mut runner.inbound).await?;
            if let Some(ServerBody::Cancel(cancel)) = message.body
                && cancel.job_id == submitted.id.to_string()
            {
                break;
            }
        }
        cancels.push(sent.elapsed().as_secs_f64() * 1000.0);
        runner
            .client
            .fail_job(authorized(
                &runner.token,
                pb::FailJobRequest {
                    job_id: submitted.id.to_string(),
                    lease_epoch: epoch,
                    error_message: "cancelled".into(),
                    reason: pb::FailureReason::Cancelled.into(),
                    retryable: None,
                },
            ))
            .await
            .context("fail the cancelled job")?;
        ready(&runner.sender, 1).await?;
    }
    cancels.sort_by(|a, b| a.total_cmp(b));
    Ok(PushRun {
        assignment_p50,
        assignment_p99,
        cancel_p50: percentile(&cancels, 0.50),
        cancel_p99: percentile(&cancels, 0.99),
    })
}

async fn next(
    inbound: &mut tonic::Streaming<pb::AttachResponse>,
) -> anyhow::Result<pb::AttachResponse> {
    tokio::time::timeout(Duration::from_secs(5), inbound.message())
        .await
        .context("nothing pushed within 5 s")??
        .ok_or_else(|| anyhow::format_err!("the stream ended"))
}

/// `--jobs` no-op jobs preloaded, then `--runners` attached runners with `--batch` credit each
/// complete every assignment with a unary call (all of them in flight at once) and give the
/// credit back, until the queue is empty. Answers jobs per second.
pub(crate) async fn burn_down(base_url: &str, args: &Args) -> anyhow::Result<f64> {
    eprintln!("push burn-down: preloading {} jobs", args.jobs);
    let admin = admin(base_url).await?;
    preload(&admin, "noop", args.jobs).await?;
    let mut runners = Vec::new();
    for index in 0..args.runners {
        runners.push(register_token(&admin, format!("push-burn-{index}")).await?);
    }
    let completed = Arc::new(AtomicU64::new(0));
    let total = args.jobs as u64;
    let done = CancellationToken::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for token in runners {
        let channel = channel(base_url).await?;
        let completed = Arc::clone(&completed);
        let done = done.clone();
        let batch = args.batch;
        tasks.push(tokio::spawn(async move {
            let mut runner = attach(channel, token, "noop", batch).await?;
            let mut in_flight = futures::stream::FuturesUnordered::new();
            loop {
                tokio::select! {
                    message = runner.inbound.message() => {
                        let Some(message) = message? else { return anyhow::Ok(()) };
                        if let Some(ServerBody::Assignment(assignment)) = message.body {
                            let epoch = assignment.lease.as_ref().map_or(0, |lease| lease.epoch);
                            let mut client = runner.client.clone();
                            let token = runner.token.clone();
                            in_flight.push(async move {
                                complete(&mut client, &token, assignment.job_id, epoch).await
                            });
                        }
                    }
                    Some(outcome) = futures::StreamExt::next(&mut in_flight) => {
                        outcome?;
                        if completed.fetch_add(1, Ordering::Relaxed) + 1 >= total {
                            done.cancel();
                        }
                        ready(&runner.sender, 1).await?;
                    }
                    _ = done.cancelled() => return anyhow::Ok(()),
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total_done = completed.load(Ordering::Relaxed);
    if total_done != total {
        bail!("completed {total_done} jobs, expected {total}");
    }
    eprintln!("  burned down {total_done} jobs over gRPC in {elapsed:.2} s");
    Ok(total_done as f64 / elapsed)
}

/// What the idle scenario measured.
pub(crate) struct IdleRun {
    pub(crate) runners: usize,
    pub(crate) connections: usize,
    /// Growth of this process's resident memory per attached runner, in KiB: the coordinator's
    /// side and the simulated runners' side of each stream together (an upper bound for the
    /// coordinator's share).
    pub(crate) kib_per_runner: f64,
    /// The coordinator's threads' CPU while every runner heartbeats at the default interval,
    /// in percent of one core.
    pub(crate) coordinator_cpu_percent: f64,
    pub(crate) window: Duration,
}

fn resident_kib() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .context("no VmRSS in /proc/self/status")
}

/// `--idle-runners` runners attached over `--idle-connections` HTTP/2 connections, each
/// heartbeating every 10 s (the default interval) with nothing to do; after they settle, the
/// coordinator's CPU over `--idle-window` seconds and the memory each stream costs.
pub(crate) async fn idle(base_url: &str, args: &Args) -> anyhow::Result<IdleRun> {
    let runners = args.idle_runners;
    let connections = args.idle_connections.max(1);
    eprintln!("idle: registering {runners} runners");
    let admin = admin(base_url).await?;
    let mut tokens = Vec::with_capacity(runners);
    let mut registering = futures::stream::FuturesOrdered::new();
    for index in 0..runners {
        let admin = admin.clone();
        registering.push_back(async move { register_token(&admin, format!("idle-{index}")).await });
        if registering.len() >= 32
            && let Some(token) = futures::StreamExt::next(&mut registering).await
        {
            tokens.push(token?);
        }
    }
    while let Some(token) = futures::StreamExt::next(&mut registering).await {
        tokens.push(token?);
    }
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(channel(base_url).await?);
    }
    let memory_before = resident_kib()?;
    eprintln!("idle: attaching {runners} runners over {connections} connections");
    let stop = CancellationToken::new();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(runners);
    let mut attaching = futures::stream::FuturesUnordered::new();
    let mut pending_tokens = tokens.into_iter().enumerate();
    loop {
        while attaching.len() < 32 {
            let Some((index, token)) = pending_tokens.next() else {
                break;
            };
            let channel = channels[index % connections].clone();
            attaching.push(async move { attach(channel, token, "idle", 1).await });
        }
        let Some(attached) = futures::StreamExt::next(&mut attaching).await else {
            break;
        };
        let mut runner = attached?;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            // Spread the beats over the interval, as independently started runners are.
            let first = Duration::from_millis(rand::random_range(0..10_000));
            let mut beat = tokio::time::interval_at(
                tokio::time::Instant::now() + first,
                Duration::from_secs(10),
            );
            loop {
                tokio::select! {
                    _ = beat.tick() => {
                        let sent = runner.sender.send(pb::AttachRequest {
                            request_id: String::new(),
                            body: Some(RunnerBody::Heartbeat(pb::Heartbeat::default())),
                        }).await;
                        if sent.is_err() {
                            return anyhow::Ok(());
                        }
                    }
                    message = runner.inbound.message() => {
                        if message?.is_none() {
                            bail!("an idle runner's stream ended");
                        }
                    }
                    _ = stop.cancelled() => return anyhow::Ok(()),
                }
            }
        }));
        if tasks.len().is_multiple_of(2_000) {
            eprintln!(
                "  {} attached after {:.1} s",
                tasks.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!(
        "idle: {} attached in {:.1} s; settling for 15 s",
        tasks.len(),
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(15)).await;
    let memory_after = resident_kib()?;
    let window = Duration::from_secs(args.idle_window);
    let cpu_before = crate::cpu::coordinator_cpu_seconds()?;
    tokio::time::sleep(window).await;
    let cpu_used = crate::cpu::coordinator_cpu_seconds()? - cpu_before;
    stop.cancel();
    for task in tasks {
        task.await??;
    }
    Ok(IdleRun {
        runners,
        connections,
        kib_per_runner: (memory_after - memory_before) / runners.max(1) as f64,
        coordinator_cpu_percent: cpu_used / window.as_secs_f64() * 100.0,
        window,
    })
}
