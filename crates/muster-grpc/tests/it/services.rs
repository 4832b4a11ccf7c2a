//! Every RPC, and the refusals a caller can meet.

use muster_grpc::runners_pb::{
    Container, ContainerRole, ContainerStatus, CreateWorkloadRequest, DeleteRunnerRequest,
    DeleteWorkloadRequest, GetRunnerRequest, GetWorkloadRequest, ListRunnersRequest,
    ListWorkloadsByThreadRequest, ListWorkloadsRequest, RegisterRunnerRequest, RunnerEnrollment,
    RunnerStatus, UpdateWorkloadStatusRequest, ValidateServiceTokenRequest, WorkloadStatus,
};
use muster_test_support::TestServer;
use sha2::Digest;
use tonic::Code;

use crate::support::{assert_status, gateway, runners, user_token};

fn container(id: &str, status: ContainerStatus) -> Container {
    Container {
        container_id: id.into(),
        name: "agent".into(),
        role: ContainerRole::Main.into(),
        image: "registry.example/agent:1".into(),
        status: status.into(),
    }
}

fn create(id: &str, runner: &str, thread: &str) -> CreateWorkloadRequest {
    CreateWorkloadRequest {
        id: id.into(),
        runner_id: runner.into(),
        thread_id: thread.into(),
        agent_id: "agent-1".into(),
        organization_id: String::new(),
        status: WorkloadStatus::Starting.into(),
        containers: vec![container("c1", ContainerStatus::Waiting)],
        ziti_identity_id: "ziti-7".into(),
        status_reason: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_of_runners_service_round_trips_over_the_api_port() {
    let server = TestServer::start().await.expect("a coordinator");
    let operator = user_token(&server, "operator", None).await;
    let mut client = runners(&server, &operator).await;

    let registered = client
        .register_runner(RegisterRunnerRequest {
            name: "grpc-runner".into(),
            organization_id: None,
            labels: [("gpu".to_string(), "a100".to_string())].into(),
            ..RegisterRunnerRequest::default()
        })
        .await
        .expect("register a runner")
        .into_inner();
    let runner = registered.runner.expect("the runner");
    let runner_id = runner.meta.as_ref().expect("meta").id.clone();
    assert_eq!(runner.name, "grpc-runner");
    assert_eq!(runner.labels.get("gpu").map(String::as_str), Some("a100"));
    assert_eq!(runner.enrollment, i32::from(RunnerEnrollment::Enrolled));
    assert_eq!(
        runner.status,
        i32::from(RunnerStatus::Offline),
        "never heard from yet"
    );
    assert!(
        runner.identity_id.is_empty(),
        "an operator's runner has no key"
    );
    assert!(registered.service_token.starts_with("muster_runner_"));

    // The service token is an ordinary runner token: the HTTP runner routes take it.
    let over_http = muster_client::RunnerClient::new(&server.base_url, &registered.service_token)
        .expect("a runner client");
    over_http
        .heartbeat(&muster_api::RunnerHeartbeat::default())
        .await
        .expect("heartbeat over HTTP with the gRPC-issued token");
    let fetched = client
        .get_runner(GetRunnerRequest {
            id: runner_id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .runner
        .expect("runner");
    assert_eq!(
        fetched.status,
        i32::from(RunnerStatus::Enrolled),
        "heard from now"
    );

    let hash = hex::encode(sha2::Sha256::digest(registered.service_token.as_bytes()));
    let validated = client
        .validate_service_token(ValidateServiceTokenRequest { token_hash: hash })
        .await
        .expect("validate the token's hash")
        .into_inner()
        .runner
        .expect("runner");
    assert_eq!(validated.meta.expect("meta").id, runner_id);

    for n in 0..3 {
        client
            .register_runner(RegisterRunnerRequest {
                name: format!("extra-{n}"),
                ..RegisterRunnerRequest::default()
            })
            .await
            .expect("register");
    }
    let first = client
        .list_runners(ListRunnersRequest {
            page_size: 3,
            ..ListRunnersRequest::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(first.runners.len(), 3);
    assert!(!first.next_page_token.is_empty());
    let rest = client
        .list_runners(ListRunnersRequest {
            page_size: 3,
            page_token: first.next_page_token,
            ..ListRunnersRequest::default()
        })
        .await
        .expect("list the next page")
        .into_inner();
    assert_eq!(rest.runners.len(), 1);
    assert!(rest.next_page_token.is_empty(), "the last page");

    // Workloads.
    let workload = client
        .create_workload(create("wl-grpc", &runner_id, "thread-g"))
        .await
        .expect("create a workload")
        .into_inner()
        .workload
        .expect("workload");
    assert_eq!(workload.meta.as_ref().expect("meta").id, "wl-grpc");
    assert_eq!(workload.organization_id, "default");
    assert_eq!(workload.ziti_identity_id, "ziti-7");
    assert!(!workload.stale, "its runner is online");
    client
        .create_workload(create("wl-grpc-2", &runner_id, "thread-g"))
        .await
        .expect("a second workload");
    let running = client
        .update_workload_status(UpdateWorkloadStatusRequest {
            id: "wl-grpc".into(),
            status: WorkloadStatus::Running.into(),
            containers: vec![
                container("c1", ContainerStatus::Running),
                container("c2", ContainerStatus::Running),
            ],
            status_reason: None,
            clear_containers: false,
        })
        .await
        .expect("report running")
        .into_inner()
        .workload
        .expect("workload");
    assert_eq!(running.status, i32::from(WorkloadStatus::Running));
    assert_eq!(running.containers.len(), 2);
    // Empty containers keep the recorded ones.
    let kept = client
        .update_workload_status(UpdateWorkloadStatusRequest {
            id: "wl-grpc".into(),
            status: WorkloadStatus::Running.into(),
            ..UpdateWorkloadStatusRequest::default()
        })
        .await
        .expect("the same status again")
        .into_inner()
        .workload
        .expect("workload");
    assert_eq!(kept.containers.len(), 2);
    let got = client
        .get_workload(GetWorkloadRequest {
            id: "wl-grpc".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .workload
        .expect("workload");
    assert_eq!(got, kept);
    let of_thread = client
        .list_workloads_by_thread(ListWorkloadsByThreadRequest {
            thread_id: "thread-g".into(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .expect("by thread")
        .into_inner();
    assert_eq!(of_thread.workloads.len(), 1);
    assert_eq!(
        of_thread.workloads[0].meta.as_ref().expect("meta").id,
        "wl-grpc-2",
        "newest first"
    );
    assert!(!of_thread.next_page_token.is_empty());
    let by_status = client
        .list_workloads(ListWorkloadsRequest {
            statuses: vec![WorkloadStatus::Running.into()],
            ..ListWorkloadsRequest::default()
        })
        .await
        .expect("by status")
        .into_inner();
    let ids: Vec<_> = by_status
        .workloads
        .iter()
        .filter_map(|w| w.meta.as_ref().map(|m| m.id.clone()))
        .collect();
    assert_eq!(ids, ["wl-grpc"]);
    client
        .delete_workload(DeleteWorkloadRequest {
            id: "wl-grpc-2".into(),
        })
        .await
        .expect("delete a workload");
    assert_status(
        client
            .get_workload(GetWorkloadRequest {
                id: "wl-grpc-2".into(),
            })
            .await,
        Code::NotFound,
        "not_found",
    );

    client
        .delete_runner(DeleteRunnerRequest {
            id: runner_id.clone(),
        })
        .await
        .expect("delete the runner");
    let orphaned = client
        .get_workload(GetWorkloadRequest {
            id: "wl-grpc".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .workload
        .expect("workload");
    assert_eq!(orphaned.status, i32::from(WorkloadStatus::Failed));
    assert_eq!(orphaned.status_reason, "runner_deleted");
    assert_status(
        client.get_runner(GetRunnerRequest { id: runner_id }).await,
        Code::NotFound,
        "not_found",
    );

    // The gateway reads the same records.
    let mut gate = gateway(&server, &operator).await;
    let through_gateway = gate
        .get_workload(GetWorkloadRequest {
            id: "wl-grpc".into(),
        })
        .await
        .expect("the gateway's GetWorkload")
        .into_inner()
        .workload
        .expect("workload");
    assert_eq!(through_gateway, orphaned);
    let thread = gate
        .list_workloads_by_thread(ListWorkloadsByThreadRequest {
            thread_id: "thread-g".into(),
            ..ListWorkloadsByThreadRequest::default()
        })
        .await
        .expect("the gateway's ListWorkloadsByThread")
        .into_inner();
    assert_eq!(thread.workloads.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_has_its_code_and_changes_nothing() {
    let server = TestServer::start().await.expect("a coordinator");
    let operator = user_token(&server, "operator", None).await;
    let viewer = user_token(&server, "viewer", None).await;
    let mut client = runners(&server, &operator).await;
    let runner = client
        .register_runner(RegisterRunnerRequest {
            name: "r".into(),
            ..RegisterRunnerRequest::default()
        })
        .await
        .expect("register")
        .into_inner();
    let runner_id = runner.runner.expect("runner").meta.expect("meta").id;

    // UNAUTHENTICATED: no token, an unknown one.
    let mut anonymous = runners(&server, "").await;
    assert_status(
        anonymous
            .get_runner(GetRunnerRequest {
                id: runner_id.clone(),
            })
            .await,
        Code::Unauthenticated,
        "unauthorized",
    );
    let mut stranger = runners(&server, &format!("muster_user_{}", "x".repeat(43))).await;
    assert_status(
        stranger
            .get_runner(GetRunnerRequest {
                id: runner_id.clone(),
            })
            .await,
        Code::Unauthenticated,
        "unauthorized",
    );
    // PERMISSION_DENIED: a viewer writing, a runner token on the user service.
    let mut reader = runners(&server, &viewer).await;
    reader
        .get_runner(GetRunnerRequest {
            id: runner_id.clone(),
        })
        .await
        .expect("a viewer reads");
    let denied = assert_status(
        reader
            .create_workload(create("wl-x", &runner_id, "t"))
            .await,
        Code::PermissionDenied,
        "forbidden",
    );
    assert!(denied.message().contains("operator"), "{denied:?}");
    assert_status(
        reader
            .validate_service_token(ValidateServiceTokenRequest {
                token_hash: "0".repeat(64),
            })
            .await,
        Code::PermissionDenied,
        "forbidden",
    );
    let mut as_runner = runners(&server, &runner.service_token).await;
    assert_status(
        as_runner
            .get_runner(GetRunnerRequest {
                id: runner_id.clone(),
            })
            .await,
        Code::PermissionDenied,
        "forbidden",
    );
    // INVALID_ARGUMENT: a malformed id, an unspecified status, a bad hash, a negative page.
    assert_status(
        client
            .get_runner(GetRunnerRequest {
                id: "not-a-uuid".into(),
            })
            .await,
        Code::InvalidArgument,
        "invalid_input",
    );
    let mut unspecified = create("wl-y", &runner_id, "t");
    unspecified.status = WorkloadStatus::Unspecified.into();
    assert_status(
        client.create_workload(unspecified).await,
        Code::InvalidArgument,
        "invalid_input",
    );
    assert_status(
        client
            .create_workload(create("has/slash", &runner_id, "t"))
            .await,
        Code::InvalidArgument,
        "invalid_input",
    );
    assert_status(
        client
            .validate_service_token(ValidateServiceTokenRequest {
                token_hash: "XYZ".into(),
            })
            .await,
        Code::InvalidArgument,
        "invalid_input",
    );
    assert_status(
        client
            .list_runners(ListRunnersRequest {
                page_size: -1,
                ..ListRunnersRequest::default()
            })
            .await,
        Code::InvalidArgument,
        "invalid_input",
    );
    assert_status(
        client
            .list_workloads_by_thread(ListWorkloadsByThreadRequest::default())
            .await,
        Code::InvalidArgument,
        "invalid_input",
    );
    // NOT_FOUND: an unknown runner, workload, token hash.
    assert_status(
        client
            .create_workload(create("wl-z", "01900000-0000-7000-8000-000000000000", "t"))
            .await,
        Code::NotFound,
        "not_found",
    );
    assert_status(
        client
            .validate_service_token(ValidateServiceTokenRequest {
                token_hash: "0".repeat(64),
            })
            .await,
        Code::NotFound,
        "not_found",
    );
    // ALREADY_EXISTS and FAILED_PRECONDITION.
    client
        .create_workload(create("wl-1", &runner_id, "t"))
        .await
        .expect("create");
    assert_status(
        client
            .create_workload(create("wl-1", &runner_id, "other"))
            .await,
        Code::AlreadyExists,
        "conflict",
    );
    client
        .update_workload_status(UpdateWorkloadStatusRequest {
            id: "wl-1".into(),
            status: WorkloadStatus::Stopped.into(),
            ..UpdateWorkloadStatusRequest::default()
        })
        .await
        .expect("stop");
    assert_status(
        client
            .update_workload_status(UpdateWorkloadStatusRequest {
                id: "wl-1".into(),
                status: WorkloadStatus::Running.into(),
                ..UpdateWorkloadStatusRequest::default()
            })
            .await,
        Code::FailedPrecondition,
        "invalid_state",
    );
    assert_status(
        client
            .update_workload_status(UpdateWorkloadStatusRequest {
                id: "wl-1".into(),
                status: WorkloadStatus::Stopped.into(),
                containers: vec![container("c", ContainerStatus::Running)],
                clear_containers: true,
                status_reason: None,
            })
            .await,
        Code::InvalidArgument,
        "invalid_input",
    );
    let unchanged = client
        .get_workload(GetWorkloadRequest { id: "wl-1".into() })
        .await
        .expect("get")
        .into_inner()
        .workload
        .expect("workload");
    assert_eq!(
        unchanged.status,
        i32::from(WorkloadStatus::Stopped),
        "refusals changed nothing"
    );
    assert_eq!(unchanged.containers.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organizations_stay_apart_over_grpc() {
    let server = TestServer::start().await.expect("a coordinator");
    for name in ["grpc-a", "grpc-b"] {
        server
            .client()
            .create_organization(&muster_api::CreateOrganization {
                name: name.into(),
                ..muster_api::CreateOrganization::default()
            })
            .await
            .expect("create an organization");
    }
    let operator_a = user_token(&server, "operator", Some("grpc-a")).await;
    let operator_b = user_token(&server, "operator", Some("grpc-b")).await;
    let mut a = runners(&server, &operator_a).await;
    let mut b = runners(&server, &operator_b).await;
    let runner = a
        .register_runner(RegisterRunnerRequest {
            name: "of-a".into(),
            ..RegisterRunnerRequest::default()
        })
        .await
        .expect("register")
        .into_inner();
    let runner = runner.runner.expect("runner");
    assert_eq!(runner.organization_id.as_deref(), Some("grpc-a"));
    let runner_id = runner.meta.expect("meta").id;
    a.create_workload(create("wl-a", &runner_id, "t"))
        .await
        .expect("create in a");
    assert_status(
        b.get_runner(GetRunnerRequest {
            id: runner_id.clone(),
        })
        .await,
        Code::NotFound,
        "not_found",
    );
    assert_status(
        b.get_workload(GetWorkloadRequest { id: "wl-a".into() })
            .await,
        Code::NotFound,
        "not_found",
    );
    let listed = b
        .list_workloads(ListWorkloadsRequest::default())
        .await
        .expect("list in b")
        .into_inner();
    assert!(listed.workloads.is_empty(), "{listed:?}");
    assert_status(
        b.list_runners(ListRunnersRequest {
            organization_id: Some("grpc-a".into()),
            ..ListRunnersRequest::default()
        })
        .await,
        Code::NotFound,
        "organization_not_found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_exposes_only_its_two_reads_and_reflection_lists_the_services() {
    let server = TestServer::start().await.expect("a coordinator");
    let operator = user_token(&server, "operator", None).await;
    // Calling a method the gateway does not have, with the internal service's message: the
    // server does not know the method.
    let channel = crate::support::channel(&server).await;
    let mut raw = tonic::client::Grpc::new(channel.clone());
    raw.ready().await.expect("ready");
    let mut request =
        tonic::Request::new(create("wl-gw", "01900000-0000-7000-8000-000000000000", "t"));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {operator}")
            .parse()
            .expect("a header value"),
    );
    let codec: tonic_prost::ProstCodec<
        CreateWorkloadRequest,
        muster_grpc::runners_pb::CreateWorkloadResponse,
    > = tonic_prost::ProstCodec::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/muster.gateway.v1.RunnersGateway/CreateWorkload",
    );
    let outcome = raw.unary(request, path, codec).await;
    let status = outcome.expect_err("the gateway has no CreateWorkload");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // Reflection names every service.
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let asked = tokio_stream::iter([ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }]);
    let mut answers = reflection
        .server_reflection_info(asked)
        .await
        .expect("reflection answers")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("a reflection message")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(listed)) = answer.message_response else {
        panic!("expected the list of services, got {answer:?}");
    };
    let names: Vec<String> = listed
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for expected in [
        "muster.runners.v1.RunnersService",
        "muster.gateway.v1.RunnersGateway",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} in {names:?}"
        );
    }
}
