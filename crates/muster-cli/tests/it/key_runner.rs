//! `muster runner --key` against a real coordinator in `approval` mode, all as processes: the
//! runner registers and waits visibly, an operator approves it with the CLI, it runs a job of a
//! kind that requires signed results and the signature verifies; then its key is removed while
//! it runs a job, the job goes back to the queue, and another key's runner runs it again.

use std::path::Path;
use std::time::Duration;

use muster_api::{JobState, RunnerEnrollment};

use crate::fleet::{describe, exec_job, wait_for};
use crate::process::{
    ADMIN_TOKEN, COMMAND_BOUND, RunnerProcess, ServerProcess, admin_ok, muster, run_bounded,
};

/// `muster runner keygen PATH`; answers the public key it printed.
fn keygen(path: &Path) -> String {
    let output = run_bounded(muster().args(["runner", "keygen"]).arg(path), COMMAND_BOUND);
    assert!(output.status.success(), "keygen failed: {output:?}");
    output
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("public key:"))
        .map(|key| key.trim().to_string())
        .unwrap_or_else(|| panic!("keygen printed no public key: {output:?}"))
}

async fn wait_for_output(runner: &RunnerProcess, text: &str) {
    wait_for(
        &format!("the runner to print {text:?}"),
        Duration::from_secs(30),
        || async move {
            let output = runner.output();
            if output.contains(text) {
                Ok(())
            } else {
                Err(output)
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_key_runner_waits_for_approval_runs_signed_jobs_and_loses_its_key_mid_job() {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let server = ServerProcess::start_with_args(
        data_dir.path(),
        Some(ADMIN_TOKEN),
        "127.0.0.1:0",
        &["--enrollment", "approval"],
    );
    let url = server.base_url.clone();
    let client = server.client(ADMIN_TOKEN);
    let keys = tempfile::tempdir().expect("a key directory");
    let first_key = keys.path().join("first.pem");
    keygen(&first_key);
    admin_ok(&url, &["kinds", "set", "exec", "--require-signed-results"]);

    let mut first = RunnerProcess::start_with_key(&url, &first_key, &["--name", "first"]);
    wait_for_output(&first, "waiting for approval of key sha256:").await;
    let runners = client.list_runners(None, None).await.expect("list runners");
    assert_eq!(runners.items.len(), 1, "{runners:?}");
    let pending = &runners.items[0];
    assert_eq!(pending.enrollment, RunnerEnrollment::Pending);
    assert_eq!(pending.name, "first");
    let fingerprint = pending.key_fingerprint.clone().expect("a key runner");
    assert!(
        first.output().contains(&fingerprint),
        "the wait names the key: {}",
        first.output()
    );
    let listed = admin_ok(&url, &["runners", "list"]);
    assert!(listed.stdout.contains("pending"), "{listed:?}");

    let hello = client
        .submit_job(&exec_job(&["echo", "hello"]))
        .await
        .expect("submit")
        .0;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        client.get_job(hello.id).await.expect("job").state,
        JobState::Pending,
        "a pending runner claims nothing"
    );
    admin_ok(&url, &["runners", "approve", &pending.id.to_string()]);
    let done = wait_for(
        "the signed job to complete",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            async move {
                let job = client.get_job(hello.id).await.map_err(|e| e.to_string())?;
                if job.state == JobState::Completed {
                    Ok(job)
                } else {
                    Err(describe(&job))
                }
            }
        },
    )
    .await;
    let signature = done.result_signature.clone().expect("the result is signed");
    assert_eq!(signature.key_fingerprint, fingerprint);
    assert_eq!(signature.signer_runner_id, pending.id.to_string());
    let verified = admin_ok(
        &url,
        &[
            "job",
            "verify",
            &hello.id.to_string(),
            "--runner-key-from-coordinator",
        ],
    );
    assert!(
        verified.stdout.contains("signature verified"),
        "{verified:?}"
    );

    // Its key removed while it runs a job: the job goes back to the queue at once, the runner
    // stops (its token is refused), and a runner with another key runs the job again.
    let long = client
        .submit_job(&exec_job(&["sleep", "4"]))
        .await
        .expect("submit")
        .0;
    let running = wait_for("the long job to run", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let job = client.get_job(long.id).await.map_err(|e| e.to_string())?;
            match job.state {
                JobState::Running | JobState::Claimed => Ok(job),
                _ => Err(describe(&job)),
            }
        }
    })
    .await;
    assert_eq!(running.runner_id, Some(pending.id));
    admin_ok(&url, &["runners", "keys", "remove", &fingerprint]);
    let released = client.get_job(long.id).await.expect("job");
    assert_eq!(released.state, JobState::Pending, "{}", describe(&released));
    assert!(
        first.wait(Duration::from_secs(30)).is_some(),
        "a runner whose key was removed stops:\n{}",
        first.output()
    );

    let second_key = keys.path().join("second.pem");
    let second_public = keygen(&second_key);
    admin_ok(
        &url,
        &["runners", "keys", "add", &second_public, "--note", "second"],
    );
    let _second = RunnerProcess::start_with_key(&url, &second_key, &["--name", "second"]);
    let again = wait_for(
        "the job to run again elsewhere",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            async move {
                let job = client.get_job(long.id).await.map_err(|e| e.to_string())?;
                if job.state == JobState::Completed {
                    Ok(job)
                } else {
                    Err(describe(&job))
                }
            }
        },
    )
    .await;
    assert_ne!(again.runner_id, Some(pending.id), "{}", describe(&again));
    assert_ne!(
        again
            .result_signature
            .map(|signature| signature.key_fingerprint),
        Some(fingerprint.clone()),
        "no result of the removed key counts"
    );
    let audit = admin_ok(&url, &["audit", "--json"]);
    for action in [
        "runner.registered",
        "runner.approved",
        "runner.revoked",
        "runner_key.removed",
    ] {
        assert!(
            audit.stdout.contains(action),
            "no {action} in the audit: {audit:?}"
        );
    }
}

/// The shortest token lifetime the coordinator accepts, so the outage outlives the token.
const SHORT_TOKEN_TTL: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_runner_keeps_its_identity_through_an_outage_longer_than_its_token_lives() {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let ttl = format!("{}s", SHORT_TOKEN_TTL.as_secs());
    let server_args = ["--runner-token-ttl", ttl.as_str()];
    let mut server = ServerProcess::start_with_args(
        data_dir.path(),
        Some(ADMIN_TOKEN),
        "127.0.0.1:0",
        &server_args,
    );
    let url = server.base_url.clone();
    let address = server.listen_address().to_string();
    let client = server.client(ADMIN_TOKEN);
    let keys = tempfile::tempdir().expect("a key directory");
    let key = keys.path().join("steady.pem");
    let public_key = keygen(&key);
    admin_ok(&url, &["runners", "keys", "add", &public_key]);
    admin_ok(&url, &["kinds", "set", "exec", "--require-signed-results"]);
    let mut runner = RunnerProcess::start_with_key(&url, &key, &["--name", "steady"]);

    let completed = |client: muster_client::MusterClient, id| async move {
        let job = client.get_job(id).await.map_err(|e| e.to_string())?;
        if job.state == JobState::Completed {
            Ok(job)
        } else {
            Err(describe(&job))
        }
    };
    let before = client
        .submit_job(&exec_job(&["echo", "before"]))
        .await
        .expect("submit")
        .0;
    let before = wait_for("the first job to complete", Duration::from_secs(30), || {
        completed(client.clone(), before.id)
    })
    .await;
    let runner_id = before.runner_id.expect("a runner ran it");
    let fingerprint = before
        .result_signature
        .as_ref()
        .map(|signature| signature.key_fingerprint.clone())
        .expect("the result is signed");

    // Every token issued before the kill has expired by the time the coordinator is back
    // (the previous token's overlap ends with its own expiry).
    server.kill();
    let killed_at = time::OffsetDateTime::now_utc();
    let printed_before_the_outage = runner.output().len();
    tokio::time::sleep(SHORT_TOKEN_TTL + Duration::from_secs(2)).await;
    assert!(
        runner.try_wait().is_none(),
        "the runner waits out the outage:\n{}",
        runner.output()
    );
    let server =
        ServerProcess::start_with_args(data_dir.path(), Some(ADMIN_TOKEN), &address, &server_args);
    let client = server.client(ADMIN_TOKEN);
    let after = client
        .submit_job(&exec_job(&["echo", "after"]))
        .await
        .expect("submit")
        .0;
    let after = wait_for(
        "the job after the outage to complete",
        Duration::from_secs(60),
        || completed(client.clone(), after.id),
    )
    .await;
    assert_eq!(
        after.runner_id,
        Some(runner_id),
        "the same runner, not a new one: {}",
        describe(&after)
    );
    assert_eq!(
        after
            .result_signature
            .as_ref()
            .map(|signature| signature.key_fingerprint.clone()),
        Some(fingerprint),
        "signed by the same key"
    );
    let runners = client.list_runners(None, None).await.expect("list runners");
    assert_eq!(runners.items.len(), 1, "one identity: {runners:?}");
    let renewed = runners.items[0]
        .token_expires_at
        .expect("a key runner's token expires");
    assert!(
        renewed > killed_at + SHORT_TOKEN_TTL,
        "a token issued after the outage: {renewed} vs killed at {killed_at}"
    );
    let output = runner.output();
    assert!(
        output
            .get(printed_before_the_outage..)
            .is_some_and(|since| since.contains("renewed the runner token")),
        "the runner registered again with its key after the outage:\n{output}"
    );
    assert!(
        runner.try_wait().is_none(),
        "the runner is still serving:\n{}",
        runner.output()
    );
}
