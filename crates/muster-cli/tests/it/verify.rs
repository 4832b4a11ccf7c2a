//! `muster job verify --file`: a job's result signature checked offline, with no coordinator;
//! a good job verifies (exit 0), a job whose result was changed after signing does not.

use muster_core::identity::RunnerSigningKey;
use serde_json::json;

use crate::process::muster;

/// A completed job's JSON as the coordinator shows it, with the recorded signature of `result`.
fn signed_job(key: &RunnerSigningKey) -> serde_json::Value {
    let result = json!({"score": 0.5, "name": "caf\u{e9}"});
    let envelope = key.sign_result(&result, "bench-runner", "2026-12-02T10:00:00Z");
    json!({
        "id": "0192f0e0-0000-7000-8000-000000000001",
        "state": "completed",
        "result": result,
        "result_signature": {
            "key_fingerprint": key.public_key().fingerprint(),
            "sha256": envelope["sig"]["sha256"],
            "signature": envelope["sig"]["signature"],
            "signed_at": "2026-12-02T10:00:00Z",
            "signer_runner_id": "bench-runner",
        },
    })
}

fn verify_file(job: &serde_json::Value, public_key: &str) -> std::process::Output {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("job.json");
    std::fs::write(&path, job.to_string()).expect("write the job");
    muster()
        .args(["job", "verify", "--file"])
        .arg(&path)
        .args(["--public-key", public_key])
        .output()
        .expect("run muster job verify")
}

#[test]
fn a_good_signature_verifies_offline_and_a_tampered_result_does_not() {
    let key = RunnerSigningKey::from_secret_bytes([9; 32]);
    let public_key = key.public_key().to_base64();
    let job = signed_job(&key);

    let good = verify_file(&job, &public_key);
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{good:?}");
    assert!(stdout.contains("signature verified"), "{stdout}");

    let mut tampered = job.clone();
    tampered["result"]["score"] = json!(0.6);
    let refused = verify_file(&tampered, &public_key);
    assert!(
        !refused.status.success(),
        "a changed result must not verify"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("does not verify"), "{stderr}");

    let other_key = RunnerSigningKey::from_secret_bytes([10; 32])
        .public_key()
        .to_base64();
    let wrong_key = verify_file(&job, &other_key);
    assert!(!wrong_key.status.success());
    let stderr = String::from_utf8_lossy(&wrong_key.stderr);
    assert!(stderr.contains("signed by"), "{stderr}");
}
