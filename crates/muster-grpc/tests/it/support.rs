//! A coordinator to call, user tokens of each role, and tonic clients carrying a token.

use muster_api::CreateUserToken;
use muster_grpc::gateway_pb::runners_gateway_client::RunnersGatewayClient;
use muster_grpc::runners_pb::runners_service_client::RunnersServiceClient;
use muster_test_support::TestServer;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub(crate) type Runners = RunnersServiceClient<InterceptedService<Channel, Bearer>>;
pub(crate) type Gateway = RunnersGatewayClient<InterceptedService<Channel, Bearer>>;

/// Puts `authorization: Bearer <token>` on every call (none when the token is empty).
#[derive(Clone)]
pub(crate) struct Bearer(pub(crate) String);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if !self.0.is_empty() {
            let value = format!("Bearer {}", self.0)
                .parse()
                .map_err(|_| tonic::Status::internal("a token that is not a header value"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

pub(crate) async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(server.base_url.clone())
        .expect("the server's URL")
        .connect()
        .await
        .expect("connect over h2c")
}

pub(crate) async fn runners(server: &TestServer, token: &str) -> Runners {
    RunnersServiceClient::with_interceptor(channel(server).await, Bearer(token.to_string()))
}

pub(crate) async fn gateway(server: &TestServer, token: &str) -> Gateway {
    RunnersGatewayClient::with_interceptor(channel(server).await, Bearer(token.to_string()))
}

/// A user token of `role` (in `organization`, or every one).
pub(crate) async fn user_token(
    server: &TestServer,
    role: &str,
    organization: Option<&str>,
) -> String {
    server
        .client()
        .create_user_token(&CreateUserToken {
            name: format!("grpc-{role}"),
            role: role.into(),
            organization_id: organization.map(str::to_string),
            ..CreateUserToken::default()
        })
        .await
        .expect("mint a user token")
        .token
}

/// `outcome` failed with `code` and the contract's `error_code` in the metadata.
pub(crate) fn assert_status<T: std::fmt::Debug>(
    outcome: Result<T, tonic::Status>,
    code: tonic::Code,
    error_code: &str,
) -> tonic::Status {
    let status = outcome.expect_err("the call is refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get(muster_grpc::ERROR_CODE_METADATA)
            .and_then(|value| value.to_str().ok()),
        Some(error_code),
        "{status:?}"
    );
    status
}
