//! Runner identity against the published bakeoff format: vectors made by Python's
//! `cryptography` package (tools/bakeoff-vectors/generate.py) must verify here byte for byte, and
//! a vector with one byte changed must not. Then the bad inputs, the registration window and the
//! replay guard's bounds.

use muster_core::Timestamp;
use muster_core::identity::{
    FreshnessError, IdentityError, REGISTRATION_WINDOW_MS, ReplayGuard, ResultSignature,
    RunnerPublicKey, RunnerSigningKey, canonical_json, check_registration_time,
    registration_message, verify_result_signature,
};
use serde_json::{Value, json};

fn vectors() -> Value {
    serde_json::from_str(include_str!("bakeoff_vectors.json")).expect("the committed vectors")
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("vector field {pointer}"))
}

fn signature_of(envelope: &Value) -> ResultSignature {
    ResultSignature {
        sha256: text(envelope, "/sig/sha256").to_string(),
        signature: text(envelope, "/sig/signature").to_string(),
        runner_id: text(envelope, "/sig/runner_id").to_string(),
        signed_at: text(envelope, "/sig/signed_at").to_string(),
    }
}

fn signer_key(vectors: &Value) -> RunnerPublicKey {
    RunnerPublicKey::from_base64("public_key", text(vectors, "/public_key")).expect("the key")
}

#[test]
fn canonical_json_is_byte_for_byte_what_python_writes() {
    let vectors = vectors();
    let results = vectors["results"].as_array().expect("results");
    assert!(results.len() >= 10, "the vectors cover the tricky cases");
    for vector in results {
        let canonical = canonical_json(&vector["envelope"]["result"]);
        assert_eq!(
            String::from_utf8(canonical).expect("ascii"),
            text(vector, "/canonical"),
        );
    }
}

#[test]
fn every_bakeoff_signed_result_verifies_and_none_with_another_key() {
    let vectors = vectors();
    let key = signer_key(&vectors);
    let other = RunnerPublicKey::from_base64("public_key", text(&vectors, "/other_public_key"))
        .expect("the other key");
    for vector in vectors["results"].as_array().expect("results") {
        let envelope = &vector["envelope"];
        let sig = signature_of(envelope);
        verify_result_signature(&key, &envelope["result"], &sig)
            .unwrap_or_else(|error| panic!("{envelope}: {error}"));
        assert_eq!(
            verify_result_signature(&other, &envelope["result"], &sig),
            Err(IdentityError::SignatureMismatch {
                field: "sig.signature"
            })
        );
    }
}

#[test]
fn a_vector_with_one_byte_changed_fails() {
    let vectors = vectors();
    let key = signer_key(&vectors);
    let envelope = &vectors["results"][0]["envelope"];
    let sig = signature_of(envelope);

    // One byte of the result: its digest no longer matches.
    let mut result_text = serde_json::to_string(&envelope["result"]).expect("text");
    result_text = result_text.replacen("llama", "llamb", 1);
    let changed_result: Value = serde_json::from_str(&result_text).expect("json");
    assert!(matches!(
        verify_result_signature(&key, &changed_result, &sig),
        Err(IdentityError::DigestMismatch { .. })
    ));

    // One byte of the signature.
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut signature = engine.decode(&sig.signature).expect("base64");
    signature[10] ^= 1;
    let changed = ResultSignature {
        signature: engine.encode(&signature),
        ..sig.clone()
    };
    assert_eq!(
        verify_result_signature(&key, &envelope["result"], &changed),
        Err(IdentityError::SignatureMismatch {
            field: "sig.signature"
        })
    );

    // One digit of the digest, with the result left as it was.
    let mut digest = sig.sha256.clone().into_bytes();
    digest[0] = if digest[0] == b'0' { b'1' } else { b'0' };
    let changed = ResultSignature {
        sha256: String::from_utf8(digest).expect("hex"),
        ..sig
    };
    assert!(matches!(
        verify_result_signature(&key, &envelope["result"], &changed),
        Err(IdentityError::DigestMismatch { .. })
    ));
}

#[test]
fn a_bakeoff_pem_key_loads_and_signs_exactly_as_bakeoff_does() {
    let vectors = vectors();
    let key = RunnerSigningKey::from_pkcs8_pem(text(&vectors, "/private_key_pem")).expect("pem");
    assert_eq!(key.public_key().to_base64(), text(&vectors, "/public_key"));
    // Ed25519 is deterministic: the same key signs the same result into the same envelope.
    for vector in vectors["results"].as_array().expect("results") {
        let envelope = &vector["envelope"];
        let signed = key.sign_result(
            &envelope["result"],
            text(envelope, "/sig/runner_id"),
            text(envelope, "/sig/signed_at"),
        );
        assert_eq!(&signed, envelope);
    }
    // Its own PEM is byte for byte what Python's `cryptography` writes for the same key (which
    // is what bakeoff reads), and reads back as the same key.
    let pem = key.to_pkcs8_pem().expect("encode");
    assert_eq!(pem, text(&vectors, "/private_key_pem"));
    let again = RunnerSigningKey::from_pkcs8_pem(&pem).expect("decode");
    assert_eq!(again.public_key(), key.public_key());
    assert!(
        !format!("{key:?}").contains(&pem),
        "Debug never shows the secret"
    );
}

#[test]
fn a_registration_signed_in_python_verifies_and_a_changed_one_does_not() {
    let vectors = vectors();
    let key = signer_key(&vectors);
    let body = &vectors["registration"]["body"];
    let message = registration_message(body);
    assert_eq!(
        String::from_utf8(message.clone()).expect("ascii"),
        text(&vectors, "/registration/message")
    );
    let signature = text(body, "/signature");
    key.verify("signature", &message, signature)
        .expect("the Python registration verifies");

    let mut changed = body.clone();
    changed["labels"]["gpu"] = json!("h100");
    assert_eq!(
        key.verify("signature", &registration_message(&changed), signature),
        Err(IdentityError::SignatureMismatch { field: "signature" })
    );

    // What Rust signs verifies the same way.
    let signer = RunnerSigningKey::from_pkcs8_pem(text(&vectors, "/private_key_pem")).expect("pem");
    assert_eq!(signer.sign_registration(body), signature);
}

#[test]
fn the_fingerprint_is_sha256_of_the_raw_key_bytes() {
    let vectors = vectors();
    let key = signer_key(&vectors);
    use base64::Engine;
    use sha2::Digest;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text(&vectors, "/public_key"))
        .expect("base64");
    let expected = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw)));
    assert_eq!(key.fingerprint(), expected);
    assert_eq!(key.fingerprint().len(), "sha256:".len() + 64);
}

#[test]
fn malformed_keys_and_signatures_are_refused_naming_the_cause() {
    let vectors = vectors();
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    assert_eq!(
        RunnerPublicKey::from_base64("public_key", "not base64!"),
        Err(IdentityError::NotBase64 {
            field: "public_key"
        })
    );
    assert_eq!(
        RunnerPublicKey::from_base64("public_key", &engine.encode([1u8; 31])),
        Err(IdentityError::PublicKeyLength {
            field: "public_key",
            length: 31
        })
    );
    assert_eq!(
        RunnerPublicKey::from_base64("public_key", &engine.encode([1u8; 33])),
        Err(IdentityError::PublicKeyLength {
            field: "public_key",
            length: 33
        })
    );
    // The identity point: a small-order key that would accept forged signatures.
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    assert_eq!(
        RunnerPublicKey::from_base64("public_key", &engine.encode(identity_point)),
        Err(IdentityError::PublicKeyInvalid {
            field: "public_key"
        })
    );
    let error = RunnerSigningKey::from_pkcs8_pem(text(&vectors, "/p256_private_key_pem"))
        .expect_err("a P-256 key is not an Ed25519 key");
    assert!(error.to_string().contains("Ed25519"), "{error}");
    assert!(RunnerSigningKey::from_pkcs8_pem("-----BEGIN PRIVATE KEY-----\nxx\n").is_err());

    let key = signer_key(&vectors);
    assert_eq!(
        key.verify("signature", b"message", &engine.encode([0u8; 63])),
        Err(IdentityError::SignatureLength {
            field: "signature",
            length: 63
        })
    );
    assert_eq!(
        key.verify("signature", b"message", "@@@"),
        Err(IdentityError::NotBase64 { field: "signature" })
    );
    let sig = ResultSignature {
        sha256: "ABC".into(),
        signature: String::new(),
        runner_id: String::new(),
        signed_at: String::new(),
    };
    assert_eq!(
        verify_result_signature(&key, &json!(1), &sig),
        Err(IdentityError::DigestMalformed {
            field: "sig.sha256"
        })
    );
}

#[test]
fn floats_are_written_as_python_repr_writes_them() {
    // Python 3: repr() of each.
    let cases: &[(f64, &str)] = &[
        (100.0, "100.0"),
        (0.5, "0.5"),
        (123.456, "123.456"),
        (1e22, "1e+22"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (5e-324, "5e-324"),
        (-1e-5, "-1e-05"),
        (0.00012, "0.00012"),
        (9999999999999998.0, "9999999999999998.0"),
        (1.2345678901234567e16, "1.2345678901234568e+16"),
    ];
    for (float, expected) in cases {
        let canonical = canonical_json(&json!(float));
        assert_eq!(String::from_utf8(canonical).expect("ascii"), *expected);
    }
}

#[test]
fn a_registration_is_accepted_within_five_minutes_of_the_clock_either_way() {
    let now = Timestamp(1_800_000_000_000);
    for offset in [0, REGISTRATION_WINDOW_MS, -REGISTRATION_WINDOW_MS, 1, -1] {
        check_registration_time(now.plus_millis(offset), now).expect("inside the window");
    }
    for offset in [
        REGISTRATION_WINDOW_MS + 1,
        -REGISTRATION_WINDOW_MS - 1,
        86_400_000,
    ] {
        let error = check_registration_time(now.plus_millis(offset), now).expect_err("outside");
        assert!(matches!(error, FreshnessError::OutsideWindow { .. }));
        assert!(error.to_string().contains("clock"), "{error}");
    }
}

#[test]
fn the_replay_guard_accepts_a_signature_once_while_it_could_be_fresh() {
    let now = Timestamp(1_800_000_000_000);
    let mut guard = ReplayGuard::new(4);
    guard.accept_once(b"first", now, now).expect("new");
    assert_eq!(
        guard.accept_once(b"first", now, now.plus_millis(1000)),
        Err(FreshnessError::Replayed)
    );
    // Still refused at the very end of the window, when the timestamp check would pass.
    let last_fresh_moment = now.plus_millis(REGISTRATION_WINDOW_MS);
    check_registration_time(now, last_fresh_moment).expect("still fresh");
    assert_eq!(
        guard.accept_once(b"first", now, last_fresh_moment),
        Err(FreshnessError::Replayed)
    );
    // Forgotten only once the time check refuses it anyway.
    let later = last_fresh_moment.plus_millis(1);
    assert!(check_registration_time(now, later).is_err());
    guard.accept_once(b"second", later, later).expect("new");
    assert_eq!(guard.len(), 1, "the expired entry is gone");
}

#[test]
fn the_replay_guard_is_bounded_and_refuses_rather_than_forgets_early() {
    let now = Timestamp(1_800_000_000_000);
    let mut guard = ReplayGuard::new(3);
    for signature in [b"a", b"b", b"c"] {
        guard.accept_once(signature, now, now).expect("room");
    }
    assert_eq!(
        guard.accept_once(b"d", now, now),
        Err(FreshnessError::ReplayGuardFull { capacity: 3 })
    );
    assert_eq!(guard.len(), 3);
    // Every earlier signature is still refused: none was dropped to make room.
    for signature in [b"a", b"b", b"c"] {
        assert_eq!(
            guard.accept_once(signature, now, now),
            Err(FreshnessError::Replayed)
        );
    }
    // Once they leave the window there is room again.
    let later = now.plus_millis(REGISTRATION_WINDOW_MS + 1);
    guard.accept_once(b"d", later, later).expect("room again");
    assert_eq!(guard.len(), 1);
}

/// The committed vectors are what Python's `cryptography` makes today: the generator runs again
/// and must write the same bytes (Ed25519 is deterministic and the keys come from fixed seeds).
/// Needs the test venv (`bash .ci/run` makes it; `MUSTER_PYTHON_VENV` names another).
#[test]
fn the_committed_vectors_are_what_the_python_generator_writes() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = std::env::var_os("MUSTER_PYTHON_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace.join("target/python-venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no Python venv at {}: make it with `python3 -m venv target/python-venv && \
         target/python-venv/bin/pip install -r tools/python-requirements.txt` (bash .ci/run does \
         this), or point MUSTER_PYTHON_VENV at one with the `cryptography` package",
        venv.display()
    );
    let output = std::process::Command::new(&python)
        .arg(workspace.join("tools/bakeoff-vectors/generate.py"))
        .output()
        .expect("run the vector generator");
    assert!(
        output.status.success(),
        "the generator failed (is `cryptography` installed in {}? pip install -r \
         tools/python-requirements.txt): {}",
        venv.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        include_str!("bakeoff_vectors.json"),
        "regenerate with: target/python-venv/bin/python tools/bakeoff-vectors/generate.py > \
         crates/muster-core/tests/it/bakeoff_vectors.json"
    );
}
