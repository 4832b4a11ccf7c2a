//! A foreign client: Python's grpcio, with stubs generated from `proto/` by grpcio-tools during
//! the test, drives the seed's round trip against a real coordinator.

use muster_test_support::{TestServer, test_python, workspace_file};

use crate::support::user_token;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_registers_records_reports_lists_and_deletes() {
    let server = TestServer::start().await.expect("a coordinator");
    let operator = user_token(&server, "operator", None).await;
    let target = server
        .base_url
        .strip_prefix("http://")
        .expect("a plain HTTP coordinator")
        .to_string();
    let script = workspace_file("crates/muster-grpc/tests/python/runners_client.py");
    let output = tokio::process::Command::new(test_python())
        .arg(&script)
        .env("MUSTER_GRPC_TARGET", target)
        .env("MUSTER_OPERATOR_TOKEN", &operator)
        .env("MUSTER_PROTO_DIR", workspace_file("proto"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), output)
        .await
        .expect("the Python client finishes within two minutes")
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python client failed ({}):\n{stdout}\n{stderr}\n(does the venv have grpcio and \
         grpcio-tools? `bash .ci/run` installs tools/python-requirements.txt)",
        output.status
    );
    assert!(
        stdout.contains("ok: the Python gRPC client round trip passed"),
        "{stdout}"
    );
}
