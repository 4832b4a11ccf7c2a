//! `muster server --tls-cert --tls-key` end to end: the CLI and a `muster runner` reach it with
//! `--ca-cert` (or `MUSTER_CA_CERT`) and run a job; without the authority they are refused with
//! a line that says why.

use std::time::Duration;

use muster_test_support::TestCertificateAuthority;

use crate::process::{ADMIN_TOKEN, CliOutput, RunnerProcess, ServerProcess, muster, run_bounded};

const COMMAND_BOUND: Duration = Duration::from_secs(60);

fn run(args: &[&str], environment: &[(&str, &str)]) -> CliOutput {
    let mut command = muster();
    command
        .args(args)
        .env("MUSTER_TOKEN", ADMIN_TOKEN)
        .env_remove("MUSTER_CA_CERT")
        .envs(environment.iter().copied());
    run_bounded(&mut command, COMMAND_BOUND)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clis_and_runners_that_trust_the_authority_run_jobs_over_https() {
    let files = tempfile::tempdir().expect("a directory for certificates");
    let authority = TestCertificateAuthority::new("muster e2e authority").expect("authority");
    let authority_path = files.path().join("authority.crt");
    authority
        .write_certificate(&authority_path)
        .expect("write the authority");
    let written = authority
        .issue_server_certificate(&["localhost", "127.0.0.1"])
        .expect("server certificate")
        .write_to(files.path(), "coordinator")
        .expect("write the certificate");
    let data_dir = tempfile::tempdir().expect("a data directory");
    let certificate = written.certificate.to_string_lossy().into_owned();
    let private_key = written.private_key.to_string_lossy().into_owned();
    let authority_arg = authority_path.to_string_lossy().into_owned();
    let server = ServerProcess::start_with_args(
        data_dir.path(),
        Some(ADMIN_TOKEN),
        "127.0.0.1:0",
        &["--tls-cert", &certificate, "--tls-key", &private_key],
    );
    let url = server.base_url.clone();
    assert!(url.starts_with("https://"), "{url}");

    tokio::task::block_in_place(|| {
        // Without the authority: refused, and the line says it is the certificate and what to do.
        let untrusted = run(&["job", "list", "--server", &url], &[]);
        assert!(!untrusted.status.success(), "{untrusted:?}");
        assert!(
            untrusted.stderr.contains("certificate") && untrusted.stderr.contains("--ca-cert"),
            "{untrusted:?}"
        );

        let created = run(
            &[
                "runners",
                "create",
                "tls-runner",
                "--json",
                "--server",
                &url,
                "--ca-cert",
                &authority_arg,
            ],
            &[],
        );
        assert!(created.status.success(), "{created:?}");
        let created: serde_json::Value =
            serde_json::from_str(&created.stdout).expect("runners create --json prints JSON");
        let token = created["token"]
            .as_str()
            .expect("a runner token")
            .to_string();
        let mut runner = RunnerProcess::start(&url, &token, 1, &["--ca-cert", &authority_arg]);

        // The environment variable works as the flag does.
        let environment = [
            ("MUSTER_SERVER", url.as_str()),
            ("MUSTER_CA_CERT", authority_arg.as_str()),
        ];
        let submitted = run(&["job", "submit", "--", "echo", "over-tls"], &environment);
        assert!(submitted.status.success(), "{submitted:?}");
        let id = submitted.stdout.trim().to_string();
        let waited = run(&["job", "wait", &id, "--timeout", "45"], &environment);
        assert!(
            waited.status.success(),
            "{waited:?}\nrunner:\n{}",
            runner.output()
        );
        let logs = run(&["job", "logs", &id], &environment);
        assert!(logs.stdout.contains("over-tls"), "{logs:?}");
        assert!(
            runner.terminate(Duration::from_secs(20)).is_some(),
            "the runner stops on SIGTERM:\n{}",
            runner.output()
        );
    });
}

#[test]
fn a_certificate_without_its_key_and_muster_up_with_tls_are_refused_with_one_line() {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let output = muster()
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path())
        .args(["--tls-cert", "/nonexistent/server.crt"])
        .env("MUSTER_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run muster server");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tls-key"), "{stderr}");

    let output = muster()
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path())
        .args([
            "--tls-cert",
            "/nonexistent/server.crt",
            "--tls-key",
            "/nonexistent/server.key",
        ])
        .env("MUSTER_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run muster server");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("listening on"), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("/nonexistent/server.crt"), "{stderr}");

    let output = muster()
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path())
        .args(["--tls-cert", "a.crt", "--tls-key", "a.key"])
        .output()
        .expect("run muster up");
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("muster server --tls-cert"), "{stderr}");
}
