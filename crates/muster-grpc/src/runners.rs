//! `RunnersService` and `RunnersGateway`: each method authenticates the caller from its
//! `authorization` metadata, parses, calls the coordinator, and converts.

use muster_core::{Audience, ErrorCode, Principal};
use muster_service::runners::RunnerRegistration;
use muster_service::workloads::{NewWorkload, WorkloadQuery, WorkloadStatusReport};
use muster_service::{Coordinator, ServiceError};
use tonic::{Request, Response, Status};

use crate::convert::{
    containers_from_pb, invalid_argument, page_size, page_token, runner_id, runner_to_pb,
    status_of, workload_status_from_pb, workload_to_pb,
};
use crate::gateway_pb;
use crate::runners_pb as pb;
use crate::runners_pb::runners_service_server::RunnersService;

/// Where a request came from, put in its extensions by the server that accepted the
/// connection: what failed authentications are counted by.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddress(pub std::net::IpAddr);

/// The token of `authorization: Bearer <token>` metadata, if the request has one.
pub(crate) fn bearer_token<T>(request: &Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Where `request` came from, for counting failed authentications.
pub(crate) fn peer_of<T>(request: &Request<T>) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<PeerAddress>()
        .map(|peer| peer.0)
        .or_else(|| request.remote_addr().map(|address| address.ip()))
}

/// The gRPC front end over one coordinator.
#[derive(Clone)]
pub struct RunnersApi {
    coordinator: Coordinator,
}

impl RunnersApi {
    pub fn new(coordinator: Coordinator) -> RunnersApi {
        RunnersApi { coordinator }
    }

    /// The caller of `request`, from its `authorization: Bearer ...` metadata (a user token or
    /// the bootstrap admin token).
    async fn caller<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let peer = peer_of(request);
        let Some(token) = bearer_token(request) else {
            // Counted as a failed authentication, as over HTTP; a throttled address hears so.
            let refused = self
                .coordinator
                .authenticate("", Audience::Users, peer)
                .await
                .err();
            return Err(status_of(match refused {
                Some(error) if error.code() == ErrorCode::TooManyRequests => error,
                _ => ServiceError::new(
                    ErrorCode::Unauthorized,
                    "no token: send `authorization: Bearer <token>` metadata",
                ),
            }));
        };
        self.coordinator
            .authenticate(token, Audience::Users, peer)
            .await
            .map_err(status_of)
    }

    async fn get_workload_answer(
        &self,
        request: Request<pb::GetWorkloadRequest>,
    ) -> Result<Response<pb::GetWorkloadResponse>, Status> {
        let caller = self.caller(&request).await?;
        let view = self
            .coordinator
            .get_workload(&caller, &request.into_inner().id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::GetWorkloadResponse {
            workload: Some(workload_to_pb(view)),
        }))
    }

    async fn workloads_of_thread(
        &self,
        request: Request<pb::ListWorkloadsByThreadRequest>,
    ) -> Result<Response<pb::ListWorkloadsByThreadResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        if request.thread_id.is_empty() {
            return Err(invalid_argument("thread_id", "required"));
        }
        let page = self
            .coordinator
            .list_workloads(
                &caller,
                WorkloadQuery {
                    thread_id: Some(request.thread_id),
                    limit: page_size(request.page_size)?,
                    cursor: page_token(request.page_token),
                    ..WorkloadQuery::default()
                },
            )
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ListWorkloadsByThreadResponse {
            workloads: page.items.into_iter().map(workload_to_pb).collect(),
            next_page_token: page.next_cursor.unwrap_or_default(),
        }))
    }
}

#[tonic::async_trait]
impl RunnersService for RunnersApi {
    async fn register_runner(
        &self,
        request: Request<pb::RegisterRunnerRequest>,
    ) -> Result<Response<pb::RegisterRunnerResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let binds = !request.tags.is_empty() || !request.resources.is_empty();
        let registered = self
            .coordinator
            .create_runner(
                &caller,
                RunnerRegistration {
                    name: request.name,
                    labels: request.labels.into_iter().collect(),
                    tags: binds.then_some(request.tags),
                    resources: binds.then(|| request.resources.into_iter().collect()),
                    organization_id: request.organization_id,
                },
            )
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::RegisterRunnerResponse {
            runner: Some(runner_to_pb(registered.view)),
            service_token: registered.token,
        }))
    }

    async fn get_runner(
        &self,
        request: Request<pb::GetRunnerRequest>,
    ) -> Result<Response<pb::GetRunnerResponse>, Status> {
        let caller = self.caller(&request).await?;
        let id = runner_id("id", &request.into_inner().id)?;
        let view = self
            .coordinator
            .get_runner(&caller, id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::GetRunnerResponse {
            runner: Some(runner_to_pb(view)),
        }))
    }

    async fn list_runners(
        &self,
        request: Request<pb::ListRunnersRequest>,
    ) -> Result<Response<pb::ListRunnersResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let page = self
            .coordinator
            .list_runners(
                &caller,
                muster_service::runners::RunnerFilter {
                    organization_id: request.organization_id.filter(|id| !id.is_empty()),
                },
                page_size(request.page_size)?,
                page_token(request.page_token),
            )
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ListRunnersResponse {
            runners: page.items.into_iter().map(runner_to_pb).collect(),
            next_page_token: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn delete_runner(
        &self,
        request: Request<pb::DeleteRunnerRequest>,
    ) -> Result<Response<pb::DeleteRunnerResponse>, Status> {
        let caller = self.caller(&request).await?;
        let id = runner_id("id", &request.into_inner().id)?;
        self.coordinator
            .delete_runner(&caller, id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::DeleteRunnerResponse {}))
    }

    async fn validate_service_token(
        &self,
        request: Request<pb::ValidateServiceTokenRequest>,
    ) -> Result<Response<pb::ValidateServiceTokenResponse>, Status> {
        let caller = self.caller(&request).await?;
        let view = self
            .coordinator
            .runner_by_token_hash(&caller, &request.into_inner().token_hash)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ValidateServiceTokenResponse {
            runner: Some(runner_to_pb(view)),
        }))
    }

    async fn create_workload(
        &self,
        request: Request<pb::CreateWorkloadRequest>,
    ) -> Result<Response<pb::CreateWorkloadResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let new = NewWorkload {
            runner_id: Some(runner_id("runner_id", &request.runner_id)?),
            status: workload_status_from_pb("status", request.status)?,
            containers: containers_from_pb(request.containers)?,
            id: request.id,
            thread_id: request.thread_id,
            agent_id: request.agent_id,
            organization_id: (!request.organization_id.is_empty())
                .then_some(request.organization_id),
            status_reason: request.status_reason,
            ziti_identity_id: request.ziti_identity_id,
        };
        let view = self
            .coordinator
            .create_workload(&caller, new)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::CreateWorkloadResponse {
            workload: Some(workload_to_pb(view)),
        }))
    }

    async fn update_workload_status(
        &self,
        request: Request<pb::UpdateWorkloadStatusRequest>,
    ) -> Result<Response<pb::UpdateWorkloadStatusResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        if request.clear_containers && !request.containers.is_empty() {
            return Err(invalid_argument(
                "clear_containers",
                "only with an empty containers field",
            ));
        }
        // proto3 cannot tell an empty list from none: empty keeps the recorded containers,
        // unless the caller says there are none now.
        let containers = if request.clear_containers {
            Some(Vec::new())
        } else if request.containers.is_empty() {
            None
        } else {
            Some(containers_from_pb(request.containers)?)
        };
        let report = WorkloadStatusReport {
            status: workload_status_from_pb("status", request.status)?,
            id: request.id,
            containers,
            reason: request.status_reason,
        };
        let view = self
            .coordinator
            .report_workload(&caller, report)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::UpdateWorkloadStatusResponse {
            workload: Some(workload_to_pb(view)),
        }))
    }

    async fn delete_workload(
        &self,
        request: Request<pb::DeleteWorkloadRequest>,
    ) -> Result<Response<pb::DeleteWorkloadResponse>, Status> {
        let caller = self.caller(&request).await?;
        self.coordinator
            .delete_workload(&caller, &request.into_inner().id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::DeleteWorkloadResponse {}))
    }

    async fn get_workload(
        &self,
        request: Request<pb::GetWorkloadRequest>,
    ) -> Result<Response<pb::GetWorkloadResponse>, Status> {
        self.get_workload_answer(request).await
    }

    async fn list_workloads_by_thread(
        &self,
        request: Request<pb::ListWorkloadsByThreadRequest>,
    ) -> Result<Response<pb::ListWorkloadsByThreadResponse>, Status> {
        self.workloads_of_thread(request).await
    }

    async fn list_workloads(
        &self,
        request: Request<pb::ListWorkloadsRequest>,
    ) -> Result<Response<pb::ListWorkloadsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let statuses = request
            .statuses
            .iter()
            .enumerate()
            .map(|(index, status)| workload_status_from_pb(&format!("statuses[{index}]"), *status))
            .collect::<Result<Vec<_>, _>>()?;
        let page = self
            .coordinator
            .list_workloads(
                &caller,
                WorkloadQuery {
                    thread_id: (!request.thread_id.is_empty()).then_some(request.thread_id),
                    runner_id: if request.runner_id.is_empty() {
                        None
                    } else {
                        Some(runner_id("runner_id", &request.runner_id)?)
                    },
                    statuses,
                    organization_id: request.organization_id.filter(|id| !id.is_empty()),
                    limit: page_size(request.page_size)?,
                    cursor: page_token(request.page_token),
                },
            )
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ListWorkloadsResponse {
            workloads: page.items.into_iter().map(workload_to_pb).collect(),
            next_page_token: page.next_cursor.unwrap_or_default(),
        }))
    }
}

/// The gateway: only what may face the outside (reading a thread's workloads, one workload),
/// answering exactly as `RunnersService` does.
#[tonic::async_trait]
impl gateway_pb::runners_gateway_server::RunnersGateway for RunnersApi {
    async fn list_workloads_by_thread(
        &self,
        request: Request<pb::ListWorkloadsByThreadRequest>,
    ) -> Result<Response<pb::ListWorkloadsByThreadResponse>, Status> {
        self.workloads_of_thread(request).await
    }

    async fn get_workload(
        &self,
        request: Request<pb::GetWorkloadRequest>,
    ) -> Result<Response<pb::GetWorkloadResponse>, Status> {
        self.get_workload_answer(request).await
    }
}
