//! The store going away: a call that needs it answers UNAVAILABLE (worth a retry) with the
//! contract's `unavailable` code, promptly, and the same client is served again once the store
//! is back, with no restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_core::SystemClock;
use muster_grpc::runners_pb::ListWorkloadsRequest;
use muster_test_support::TestServer;
use muster_test_support::postgres::PostgresCluster;
use tonic::Code;

use crate::support::runners;

const WITHIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_answers_unavailable_while_postgres_is_down_and_is_served_again_after() {
    let cluster = tokio::task::spawn_blocking(PostgresCluster::start)
        .await
        .expect("join")
        .expect("a private PostgreSQL cluster");
    let url = cluster.create_database().expect("a database");
    let server = TestServer::start_with(Arc::new(SystemClock), |raw| raw.database = Some(url))
        .await
        .expect("a coordinator on PostgreSQL");
    // The bootstrap admin token is checked without the store, so what fails is the call's own
    // read.
    let mut client = runners(&server, &server.admin_token).await;
    client
        .list_workloads(ListWorkloadsRequest::default())
        .await
        .expect("served while the store is up");

    let cluster = Arc::new(cluster);
    let stopping = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .expect("join")
        .expect("stop PostgreSQL");
    let started = Instant::now();
    let status = loop {
        let call = tokio::time::timeout(
            Duration::from_secs(15),
            client.list_workloads(ListWorkloadsRequest::default()),
        )
        .await
        .expect("an answer, not a hang");
        match call {
            Err(status) => break status,
            Ok(_) if started.elapsed() < WITHIN => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(_) => panic!("still served {WITHIN:?} after PostgreSQL stopped"),
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get(muster_grpc::ERROR_CODE_METADATA)
            .and_then(|value| value.to_str().ok()),
        Some("unavailable"),
        "{status:?}"
    );

    let starting = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .expect("join")
        .expect("start PostgreSQL again");
    let back = Instant::now();
    loop {
        match client.list_workloads(ListWorkloadsRequest::default()).await {
            Ok(_) => break,
            Err(status) if back.elapsed() < WITHIN => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("not served {WITHIN:?} after PostgreSQL came back: {status:?}"),
        }
    }
}
