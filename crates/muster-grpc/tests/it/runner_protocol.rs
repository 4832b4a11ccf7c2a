//! The runner job protocol (`RunnerProtocolService`) against a real coordinator: assignments
//! pushed on the stream, cancels pushed as they happen, lease_lost as FAILED_PRECONDITION with
//! its LeaseLost detail, resume after a dropped stream (kept leases, exactly the missed
//! events), the zombie rule, recycling, and the refusals of a malformed stream.

use std::time::Duration;

use muster_api::{JobState, SubmitJob};
use muster_grpc::protocol_pb::attach_request::Body as RunnerBody;
use muster_grpc::protocol_pb::attach_response::Body as ServerBody;
use muster_grpc::protocol_pb::runner_protocol_service_client::RunnerProtocolServiceClient;
use muster_grpc::protocol_pb::{
    Accepted, AttachRequest, AttachResponse, CancelReason, CompleteJobRequest, FailJobRequest,
    FailOutcome, FailureReason, Heartbeat, HeldJob, Hello, Ready, ReportProgressRequest,
};
use muster_test_support::TestServer;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::support::{Bearer, assert_status, channel};

type Protocol = RunnerProtocolServiceClient<InterceptedService<Channel, Bearer>>;

async fn protocol(server: &TestServer, token: &str) -> Protocol {
    RunnerProtocolServiceClient::with_interceptor(channel(server).await, Bearer(token.to_string()))
}

/// One attached stream: what to send on it, and what came.
#[derive(Debug)]
struct Stream {
    sender: mpsc::Sender<AttachRequest>,
    inbound: tonic::Streaming<AttachResponse>,
    accepted: Accepted,
}

fn hello(kinds: &[&str], max_jobs: u32) -> Hello {
    Hello {
        protocol_version: 1,
        features: vec!["resume".into()],
        kinds: kinds.iter().map(|kind| kind.to_string()).collect(),
        max_jobs,
        hostname: "protocol-test".into(),
        version: "test".into(),
        ..Hello::default()
    }
}

fn message(body: RunnerBody) -> AttachRequest {
    AttachRequest {
        request_id: String::new(),
        body: Some(body),
    }
}

async fn open(client: &mut Protocol, hello: Hello) -> Result<Stream, tonic::Status> {
    let (sender, receiver) = mpsc::channel(16);
    sender
        .send(message(RunnerBody::Hello(hello)))
        .await
        .expect("queue the hello");
    let mut inbound = client
        .attach(ReceiverStream::new(receiver))
        .await?
        .into_inner();
    let first = next(&mut inbound).await?;
    let Some(ServerBody::Accepted(accepted)) = first.body else {
        panic!("the first message is Accepted, got {first:?}");
    };
    assert_eq!(first.sequence, 0, "Accepted carries sequence 0");
    Ok(Stream {
        sender,
        inbound,
        accepted,
    })
}

async fn next(
    inbound: &mut tonic::Streaming<AttachResponse>,
) -> Result<AttachResponse, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("a message within 10 s")?
        .ok_or_else(|| tonic::Status::ok("the stream ended"))
}

/// The next message that is not a heartbeat ack.
async fn next_event(stream: &mut Stream) -> AttachResponse {
    loop {
        let message = next(&mut stream.inbound).await.expect("the stream goes on");
        if !matches!(message.body, Some(ServerBody::HeartbeatAck(_))) {
            return message;
        }
    }
}

async fn submit(server: &TestServer, kind: &str) -> uuid::Uuid {
    let (job, _) = server
        .client()
        .submit_job(&SubmitJob {
            kind: kind.into(),
            payload: Some(json!({"n": 1})),
            ..SubmitJob::default()
        })
        .await
        .expect("submit a job");
    job.id
}

async fn job_state(server: &TestServer, id: uuid::Uuid) -> muster_api::Job {
    server.client().get_job(id).await.expect("read the job")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attached_runner_is_pushed_its_job_and_completes_it_with_a_unary_call() {
    let server = TestServer::start().await.expect("a coordinator");
    let (runner, _) = server.runner("pushed").await.expect("a runner");
    let mut client = protocol(&server, &runner.token).await;
    let mut stream = open(&mut client, hello(&["render"], 2))
        .await
        .expect("attach");
    assert_eq!(stream.accepted.protocol_version, 1);
    assert_eq!(stream.accepted.features, vec!["resume".to_string()]);
    assert!(!stream.accepted.resumed);
    assert_eq!(stream.accepted.credit, 2);
    assert_eq!(stream.accepted.runner_id, runner.runner.id.to_string());
    assert!(stream.accepted.enrolled);
    assert!(stream.accepted.heartbeat_interval.is_some());

    let id = submit(&server, "render").await;
    let pushed = next_event(&mut stream).await;
    assert!(pushed.sequence >= 1, "{pushed:?}");
    let Some(ServerBody::Assignment(assignment)) = pushed.body else {
        panic!("an assignment, got {pushed:?}");
    };
    assert_eq!(assignment.job_id, id.to_string());
    assert_eq!(assignment.kind, "render");
    assert_eq!(assignment.payload_json, r#"{"n":1}"#);
    assert_eq!(assignment.attempt, 1);
    let lease = assignment.lease.expect("a lease");
    assert_eq!(lease.epoch, 1);
    assert_eq!(assignment.organization_id, "default");

    // Progress makes it running; the completion ends it.
    client
        .report_progress(ReportProgressRequest {
            job_id: id.to_string(),
            lease_epoch: 1,
            percent: Some(50.0),
            message: Some("half".into()),
        })
        .await
        .expect("report progress");
    assert_eq!(job_state(&server, id).await.state, JobState::Running);
    client
        .complete_job(CompleteJobRequest {
            job_id: id.to_string(),
            lease_epoch: 1,
            result_json: r#"{"frames": 24}"#.into(),
            ..CompleteJobRequest::default()
        })
        .await
        .expect("complete");
    let job = job_state(&server, id).await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.result, Some(json!({"frames": 24})));
    assert_eq!(job.runner_id, Some(runner.runner.id));

    // A stale epoch is lease_lost: FAILED_PRECONDITION with the current epoch in a LeaseLost.
    let refused = client
        .fail_job(FailJobRequest {
            job_id: id.to_string(),
            lease_epoch: 7,
            error_message: "late".into(),
            ..FailJobRequest::default()
        })
        .await;
    let status = assert_status(refused, Code::FailedPrecondition, "lease_lost");
    let detail = muster_grpc::lease_lost_detail(&status).expect("a LeaseLost detail");
    assert_eq!(detail.job_id, id.to_string());
    assert_eq!(detail.current_epoch, 1);
    assert_eq!(detail.sent_epoch, 7);
    // An epoch of 0 is malformed, not lost.
    let refused = client
        .complete_job(CompleteJobRequest {
            job_id: id.to_string(),
            lease_epoch: 0,
            result_json: "1".into(),
            ..CompleteJobRequest::default()
        })
        .await;
    assert_status(refused, Code::InvalidArgument, "invalid_input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_bounds_the_assignments_and_ready_asks_for_more() {
    let server = TestServer::start().await.expect("a coordinator");
    let (runner, _) = server.runner("credited").await.expect("a runner");
    let mut client = protocol(&server, &runner.token).await;
    let mut stream = open(&mut client, hello(&["batch"], 1))
        .await
        .expect("attach");
    let first = submit(&server, "batch").await;
    let second = submit(&server, "batch").await;
    let pushed = next_event(&mut stream).await;
    let Some(ServerBody::Assignment(assignment)) = pushed.body else {
        panic!("an assignment, got {pushed:?}");
    };
    assert_eq!(assignment.job_id, first.to_string(), "oldest first");
    // One credit, one assignment: the second job waits.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(job_state(&server, second).await.state, JobState::Pending);
    // Finishing the job and asking for one more brings the second.
    client
        .complete_job(CompleteJobRequest {
            job_id: first.to_string(),
            lease_epoch: 1,
            result_json: "true".into(),
            ..CompleteJobRequest::default()
        })
        .await
        .expect("complete");
    stream
        .sender
        .send(message(RunnerBody::Ready(Ready {
            additional_credit: 1,
        })))
        .await
        .expect("send ready");
    let pushed = next_event(&mut stream).await;
    let Some(ServerBody::Assignment(assignment)) = pushed.body else {
        panic!("an assignment, got {pushed:?}");
    };
    assert_eq!(assignment.job_id, second.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_is_pushed_at_once_and_a_cancelled_failure_ends_the_job() {
    let server = TestServer::start().await.expect("a coordinator");
    let (runner, _) = server.runner("cancelled").await.expect("a runner");
    let mut client = protocol(&server, &runner.token).await;
    let mut stream = open(&mut client, hello(&["long"], 1))
        .await
        .expect("attach");
    let id = submit(&server, "long").await;
    let pushed = next_event(&mut stream).await;
    assert!(
        matches!(pushed.body, Some(ServerBody::Assignment(_))),
        "{pushed:?}"
    );
    let assigned_at = pushed.sequence;

    server.client().cancel_job(id).await.expect("cancel");
    // Pushed, not left for the next heartbeat (none is sent in this test).
    let pushed = next_event(&mut stream).await;
    let Some(ServerBody::Cancel(cancel)) = pushed.body else {
        panic!("a cancel, got {pushed:?}");
    };
    assert!(pushed.sequence > assigned_at, "sequences grow");
    assert_eq!(cancel.job_id, id.to_string());
    assert_eq!(cancel.lease_epoch, 1);
    assert_eq!(cancel.reason, i32::from(CancelReason::Requested));
    let answer = client
        .fail_job(FailJobRequest {
            job_id: id.to_string(),
            lease_epoch: 1,
            error_message: "stopped on request".into(),
            reason: FailureReason::Cancelled.into(),
            retryable: None,
        })
        .await
        .expect("fail as cancelled")
        .into_inner();
    assert_eq!(answer.outcome, i32::from(FailOutcome::Cancelled));
    assert_eq!(job_state(&server, id).await.state, JobState::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_reattaches_keeps_its_lease_and_gets_exactly_what_it_missed() {
    let server = TestServer::start().await.expect("a coordinator");
    let (runner, _) = server.runner("resumer").await.expect("a runner");
    let mut client = protocol(&server, &runner.token).await;
    let mut stream = open(&mut client, hello(&["resumable"], 3))
        .await
        .expect("attach");
    let session = stream.accepted.session_id.clone();
    let held = submit(&server, "resumable").await;
    let first = next_event(&mut stream).await;
    let Some(ServerBody::Assignment(_)) = first.body else {
        panic!("an assignment, got {first:?}");
    };
    let handled = first.sequence;
    // A second assignment arrives, but the runner "crashes" before handling it: it drops the
    // stream and says it handled only the first.
    let missed = submit(&server, "resumable").await;
    let unhandled = next_event(&mut stream).await;
    let Some(ServerBody::Assignment(unhandled_assignment)) = unhandled.body else {
        panic!("an assignment, got {unhandled:?}");
    };
    assert_eq!(unhandled_assignment.job_id, missed.to_string());
    drop(stream);

    let mut resumed = hello(&["resumable"], 3);
    resumed.resume_session_id = session.clone();
    resumed.resume_after_sequence = handled;
    resumed.held_jobs = vec![HeldJob {
        job_id: held.to_string(),
        lease_epoch: 1,
    }];
    let mut stream = open(&mut client, resumed).await.expect("reattach");
    assert!(stream.accepted.resumed, "the session continues");
    assert_eq!(stream.accepted.session_id, session);
    let kept: Vec<&str> = stream
        .accepted
        .leases
        .iter()
        .map(|lease| lease.job_id.as_str())
        .collect();
    assert_eq!(
        kept,
        vec![held.to_string().as_str()],
        "the held job's lease is kept"
    );
    // Exactly the missed assignment, with its original sequence number.
    let replayed = next_event(&mut stream).await;
    assert_eq!(replayed.sequence, unhandled.sequence);
    let Some(ServerBody::Assignment(assignment)) = replayed.body else {
        panic!("the replayed assignment, got {replayed:?}");
    };
    assert_eq!(assignment.job_id, missed.to_string());
    // Nobody else got either job: both are still leased to this runner at epoch 1.
    for id in [held, missed] {
        let job = job_state(&server, id).await;
        assert_eq!(job.runner_id, Some(runner.runner.id));
        assert_eq!(job.lease_epoch, 1, "leased once: {job:?}");
    }
    // A held job the runner names at a wrong epoch is cancelled as lost on reattach.
    drop(stream);
    let mut wrong = hello(&["resumable"], 3);
    wrong.resume_session_id = session;
    wrong.resume_after_sequence = replayed.sequence;
    wrong.held_jobs = vec![HeldJob {
        job_id: held.to_string(),
        lease_epoch: 5,
    }];
    let mut stream = open(&mut client, wrong).await.expect("reattach again");
    assert!(stream.accepted.leases.is_empty());
    let pushed = next_event(&mut stream).await;
    let Some(ServerBody::Cancel(cancel)) = pushed.body else {
        panic!("a cancel, got {pushed:?}");
    };
    assert_eq!(cancel.job_id, held.to_string());
    assert_eq!(cancel.reason, i32::from(CancelReason::LeaseLost));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_is_sent_again_the_jobs_leased_to_it_that_never_started() {
    let server = TestServer::start().await.expect("a coordinator");
    let (runner, _) = server.runner("forgetful").await.expect("a runner");
    let mut client = protocol(&server, &runner.token).await;
    let mut stream = open(&mut client, hello(&["lost"], 1))
        .await
        .expect("attach");
    let id = submit(&server, "lost").await;
    let pushed = next_event(&mut stream).await;
    assert!(
        matches!(pushed.body, Some(ServerBody::Assignment(_))),
        "{pushed:?}"
    );
    drop(stream);
    // A session the coordinator does not know (as after a restart): the claimed job comes
    // again on the new session, under the same lease.
    let mut fresh = hello(&["lost"], 1);
    fresh.resume_session_id = "no-such-session".into();
    let mut stream = open(&mut client, fresh).await.expect("attach anew");
    assert!(!stream.accepted.resumed);
    let pushed = next_event(&mut stream).await;
    let Some(ServerBody::Assignment(assignment)) = pushed.body else {
        panic!("the job again, got {pushed:?}");
    };
    assert_eq!(assignment.job_id, id.to_string());
    assert_eq!(
        assignment.lease.expect("a lease").epoch,
        1,
        "the same lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_is_ended_as_unavailable_within_two_heartbeat_intervals() {
    let server = TestServer::start_with(std::sync::Arc::new(muster_core::SystemClock), |raw| {
        raw.heartbeat_interval_ms = Some(300);
    })
    .await
    .expect("a coordinator");
    let (runner, _) = server.runner("zombie").await.expect("a runner");
    let mut client = protocol(&server, &runner.token).await;
    let mut stream = open(&mut client, hello(&["quiet"], 1))
        .await
        .expect("attach");
    let interval = stream.accepted.heartbeat_interval.expect("an interval");
    assert_eq!((interval.seconds, interval.nanos), (0, 300_000_000));
    // A heartbeat is answered...
    stream
        .sender
        .send(message(RunnerBody::Heartbeat(Heartbeat::default())))
        .await
        .expect("send a heartbeat");
    let answer = next(&mut stream.inbound).await.expect("an answer");
    assert!(
        matches!(answer.body, Some(ServerBody::HeartbeatAck(_))),
        "{answer:?}"
    );
    // ...and then silence ends the stream (the sender stays open: the stream is alive but
    // the runner says nothing).
    let started = std::time::Instant::now();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.inbound.message()).await {
            Err(_) => panic!("the silent stream was not ended within 5 s"),
            Ok(Err(status)) => break status,
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the stream ended with OK, not UNAVAILABLE"),
        }
    };
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(stream.sender);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_recycled_after_its_lifetime_and_its_job_carries_over() {
    let server = TestServer::start_with(std::sync::Arc::new(muster_core::SystemClock), |raw| {
        raw.stream_lifetime = Some("2s".into());
    })
    .await
    .expect("a coordinator");
    let (runner, _) = server.runner("recycled").await.expect("a runner");
    let mut client = protocol(&server, &runner.token).await;
    let mut stream = open(&mut client, hello(&["carried"], 1))
        .await
        .expect("attach");
    let lifetime = stream.accepted.stream_lifetime.expect("a lifetime");
    let millis = lifetime.seconds * 1000 + i64::from(lifetime.nanos) / 1_000_000;
    assert!(
        (1800..=2200).contains(&millis),
        "2 s give or take a tenth: {millis} ms"
    );
    let id = submit(&server, "carried").await;
    let assigned = next_event(&mut stream).await;
    assert!(
        matches!(assigned.body, Some(ServerBody::Assignment(_))),
        "{assigned:?}"
    );
    let recycle = next_event(&mut stream).await;
    let Some(ServerBody::Recycle(recycle_message)) = recycle.body else {
        panic!("a recycle, got {recycle:?}");
    };
    assert!(recycle.sequence > assigned.sequence);
    assert!(recycle_message.reconnect_by.is_some());
    let mut again = hello(&["carried"], 1);
    again.resume_session_id = stream.accepted.session_id.clone();
    again.resume_after_sequence = recycle.sequence;
    again.held_jobs = vec![HeldJob {
        job_id: id.to_string(),
        lease_epoch: 1,
    }];
    let moved = open(&mut client, again)
        .await
        .expect("attach the next stream");
    assert!(moved.accepted.resumed);
    assert_eq!(
        moved.accepted.leases.len(),
        1,
        "the job's lease carried over"
    );
    // The old stream ends with OK once the new one took over.
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.inbound.message())
        .await
        .expect("the old stream ends");
    assert!(matches!(ended, Ok(None)), "{ended:?}");
    client
        .complete_job(CompleteJobRequest {
            job_id: id.to_string(),
            lease_epoch: 1,
            result_json: "\"done\"".into(),
            ..CompleteJobRequest::default()
        })
        .await
        .expect("complete after the recycle");
    assert_eq!(job_state(&server, id).await.state, JobState::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_streams_and_wrong_tokens_are_refused() {
    let server = TestServer::start().await.expect("a coordinator");
    let (runner, _) = server.runner("strict").await.expect("a runner");
    let mut client = protocol(&server, &runner.token).await;

    // The first message must be a Hello.
    let (sender, receiver) = mpsc::channel(4);
    sender
        .send(message(RunnerBody::Heartbeat(Heartbeat::default())))
        .await
        .expect("queue");
    let refused = client.attach(ReceiverStream::new(receiver)).await;
    assert_status(refused, Code::InvalidArgument, "protocol_violation");

    // A Hello with no kinds, or no version both speak.
    let refused = open(&mut client, hello(&[], 1)).await;
    assert_status(refused, Code::InvalidArgument, "invalid_input");
    let mut old = hello(&["k"], 1);
    old.protocol_version = 0;
    let refused = open(&mut client, old).await;
    let status = assert_status(refused, Code::InvalidArgument, "invalid_input");
    assert!(status.message().contains("protocol_version"), "{status:?}");
    // A newer runner is answered in the version both speak.
    let mut newer = hello(&["k"], 1);
    newer.protocol_version = 9;
    newer.features = vec!["resume".into(), "teleport".into()];
    let stream = open(&mut client, newer).await.expect("attach");
    assert_eq!(stream.accepted.protocol_version, 1);
    assert_eq!(
        stream.accepted.features,
        vec!["resume".to_string()],
        "unknown features are ignored"
    );
    drop(stream);

    // A user token is not a runner's; no token is unauthenticated.
    let mut as_user = protocol(&server, muster_test_support::TEST_ADMIN_TOKEN).await;
    assert_status(
        open(&mut as_user, hello(&["k"], 1)).await,
        Code::PermissionDenied,
        "forbidden",
    );
    let mut anonymous = protocol(&server, "").await;
    assert_status(
        open(&mut anonymous, hello(&["k"], 1)).await,
        Code::Unauthenticated,
        "unauthorized",
    );
    assert_status(
        anonymous
            .complete_job(CompleteJobRequest {
                job_id: uuid::Uuid::now_v7().to_string(),
                lease_epoch: 1,
                result_json: "1".into(),
                ..CompleteJobRequest::default()
            })
            .await,
        Code::Unauthenticated,
        "unauthorized",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_is_handed_to_a_waiting_attached_runner_in_its_own_commit() {
    let server = TestServer::start().await.expect("a coordinator");
    let (runner, _) = server.runner("waiting").await.expect("a runner");
    let mut client = protocol(&server, &runner.token).await;
    let mut stream = open(&mut client, hello(&["handed"], 1))
        .await
        .expect("attach");
    // The submit's own answer already shows the job leased to the waiting runner: the claim
    // was made in the submit's commit, not after it.
    let (job, created) = server
        .client()
        .submit_job(&SubmitJob {
            kind: "handed".into(),
            ..SubmitJob::default()
        })
        .await
        .expect("submit");
    assert!(created);
    assert_eq!(job.state, JobState::Claimed, "{job:?}");
    assert_eq!(job.runner_id, Some(runner.runner.id));
    let pushed = next_event(&mut stream).await;
    let Some(ServerBody::Assignment(assignment)) = pushed.body else {
        panic!("the assignment, got {pushed:?}");
    };
    assert_eq!(assignment.job_id, job.id.to_string());
    // With its one credit used, the next job waits for it.
    let (next, _) = server
        .client()
        .submit_job(&SubmitJob {
            kind: "handed".into(),
            ..SubmitJob::default()
        })
        .await
        .expect("submit");
    assert_eq!(next.state, JobState::Pending, "{next:?}");
}

/// A push stream carries a heartbeat every interval, far below the request-body byte rate the
/// connection layer demands of other bodies: it must outlive `--body-read-timeout` for as long
/// as the runner heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeating_stream_outlives_the_body_read_timeout() {
    let server = TestServer::start_with(std::sync::Arc::new(muster_core::SystemClock), |raw| {
        raw.heartbeat_interval_ms = Some(300);
        raw.body_read_timeout = Some("1s".into());
        raw.body_min_rate = Some(100_000);
    })
    .await
    .expect("a coordinator");
    let (runner, _) = server.runner("slow-body").await.expect("a runner");
    let mut client = protocol(&server, &runner.token).await;
    let mut stream = open(&mut client, hello(&["patient"], 1))
        .await
        .expect("attach");
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        stream
            .sender
            .send(message(RunnerBody::Heartbeat(Heartbeat::default())))
            .await
            .expect("send a heartbeat");
        let answer = next(&mut stream.inbound).await.unwrap_or_else(|status| {
            panic!("the stream ended after {:?}: {status:?}", started.elapsed())
        });
        assert!(
            matches!(answer.body, Some(ServerBody::HeartbeatAck(_))),
            "{answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // And it still gets work.
    let id = submit(&server, "patient").await;
    let pushed = next_event(&mut stream).await;
    let Some(ServerBody::Assignment(assignment)) = pushed.body else {
        panic!("an assignment, got {pushed:?}");
    };
    assert_eq!(assignment.job_id, id.to_string());
}
