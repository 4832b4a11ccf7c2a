//! Runner identity: Ed25519 keys, the canonical JSON every signature covers, the bakeoff result
//! envelope, the registration proof, its time window and the replay guard.
//!
//! Everything here is pure: keys, bytes and `now` come in as arguments. The wire formats are the
//! contract's ("Runner identity" in `shared/api-v1.md`): a public key is standard base64 of its
//! 32 raw bytes, its fingerprint `sha256:` and the lowercase hex SHA-256 of those bytes, and a
//! signature standard base64 of its 64 bytes.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Timestamp;

/// What a registration signature covers: this prefix, then the canonical JSON of the request
/// body without its `signature` member. The prefix keeps a registration signature from ever
/// being mistaken for a result signature (which covers a bare 32-byte digest).
pub const REGISTRATION_SIGNATURE_PREFIX: &[u8] = b"muster-register-v1\n";

/// How far a registration's `timestamp` may be from the coordinator's clock, either way.
pub const REGISTRATION_WINDOW_MS: i64 = 300_000;

/// Why a key, a signature or an envelope was refused; each message names the field and cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("{field}: not standard base64 (with padding)")]
    NotBase64 { field: &'static str },
    #[error("{field}: an Ed25519 public key is 32 bytes, this one is {length}")]
    PublicKeyLength { field: &'static str, length: usize },
    #[error("{field}: not a usable Ed25519 public key (a weak or malformed point)")]
    PublicKeyInvalid { field: &'static str },
    #[error("{field}: an Ed25519 signature is 64 bytes, this one is {length}")]
    SignatureLength { field: &'static str, length: usize },
    #[error("{field}: the signature does not verify against the runner's key")]
    SignatureMismatch { field: &'static str },
    #[error("{field}: not 64 lowercase hex digits")]
    DigestMalformed { field: &'static str },
    #[error("sig.sha256 is {claimed}, but the canonical JSON of result hashes to {actual}")]
    DigestMismatch { claimed: String, actual: String },
    #[error("{field}: at most {max_chars} characters")]
    SignerTextTooLong {
        field: &'static str,
        max_chars: usize,
    },
    #[error("private key: {0}")]
    PrivateKey(String),
}

/// An Ed25519 public key a runner registered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerPublicKey(VerifyingKey);

impl RunnerPublicKey {
    /// Parse the wire form (standard base64 of the 32 raw bytes). `field` names it in errors.
    pub fn from_base64(field: &'static str, text: &str) -> Result<RunnerPublicKey, IdentityError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| IdentityError::NotBase64 { field })?;
        let raw: [u8; 32] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| IdentityError::PublicKeyLength {
                    field,
                    length: bytes.len(),
                })?;
        let key = VerifyingKey::from_bytes(&raw)
            .map_err(|_| IdentityError::PublicKeyInvalid { field })?;
        // A small-order point verifies signatures an attacker can forge without a private key.
        if key.is_weak() {
            return Err(IdentityError::PublicKeyInvalid { field });
        }
        Ok(RunnerPublicKey(key))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.as_bytes())
    }

    /// `sha256:` and the lowercase hex SHA-256 of the 32 raw bytes.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(self.0.as_bytes())))
    }

    /// Check `signature` (standard base64 of 64 bytes) over `message`. Strict: a signature
    /// with a non-canonical scalar, which another verifier might refuse, is refused here too.
    pub fn verify(
        &self,
        field: &'static str,
        message: &[u8],
        signature: &str,
    ) -> Result<(), IdentityError> {
        let signature = parse_signature(field, signature)?;
        self.0
            .verify_strict(message, &signature)
            .map_err(|_| IdentityError::SignatureMismatch { field })
    }
}

fn parse_signature(
    field: &'static str,
    text: &str,
) -> Result<ed25519_dalek::Signature, IdentityError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| IdentityError::NotBase64 { field })?;
    let raw: [u8; 64] =
        bytes
            .as_slice()
            .try_into()
            .map_err(|_| IdentityError::SignatureLength {
                field,
                length: bytes.len(),
            })?;
    Ok(ed25519_dalek::Signature::from_bytes(&raw))
}

/// A runner's private key, as kept in its PEM PKCS#8 file (the format bakeoff writes).
pub struct RunnerSigningKey(SigningKey);

impl std::fmt::Debug for RunnerSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret: only which key it is.
        write!(f, "RunnerSigningKey({})", self.public_key().fingerprint())
    }
}

impl RunnerSigningKey {
    /// A key from 32 secret bytes (the caller draws them from a secure random source).
    pub fn from_secret_bytes(secret: [u8; 32]) -> RunnerSigningKey {
        RunnerSigningKey(SigningKey::from_bytes(&secret))
    }

    /// Read a PEM PKCS#8 private key; a PEM of another algorithm or a damaged one is refused
    /// with the reason.
    pub fn from_pkcs8_pem(pem: &str) -> Result<RunnerSigningKey, IdentityError> {
        SigningKey::from_pkcs8_pem(pem)
            .map(RunnerSigningKey)
            .map_err(|error| {
                IdentityError::PrivateKey(format!("not a PEM PKCS#8 Ed25519 private key ({error})"))
            })
    }

    /// The PEM PKCS#8 form, to write to a file only its owner can read. Version 1 (the secret
    /// alone, as Python's `cryptography` writes it): its parser refuses the version 2 form with
    /// the public key inside, which is what the signing key would write by default.
    pub fn to_pkcs8_pem(&self) -> Result<String, IdentityError> {
        let secret_only = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.0.to_bytes(),
            public_key: None,
        };
        secret_only
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|error| IdentityError::PrivateKey(format!("encode as PEM: {error}")))
    }

    pub fn public_key(&self) -> RunnerPublicKey {
        RunnerPublicKey(self.0.verifying_key())
    }

    /// Standard base64 of the signature over `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        STANDARD.encode(self.0.sign(message).to_bytes())
    }

    /// The bakeoff envelope of `result`: `{"result", "sig": {"sha256", "signature",
    /// "runner_id", "signed_at"}}`, signed over the raw SHA-256 of its canonical JSON.
    pub fn sign_result(&self, result: &Value, runner_id: &str, signed_at: &str) -> Value {
        let digest = result_digest(result);
        serde_json::json!({
            "result": result,
            "sig": {
                "sha256": hex::encode(digest),
                "signature": self.sign(&digest),
                "runner_id": runner_id,
                "signed_at": signed_at,
            }
        })
    }

    /// The registration proof over `body` (the request without `signature`).
    pub fn sign_registration(&self, body: &Value) -> String {
        self.sign(&registration_message(body))
    }
}

/// The canonical JSON of `value`: exactly the bytes of Python's
/// `json.dumps(value, sort_keys=True, separators=(",", ":"))`, which is what bakeoff signs.
///
/// Object keys sorted by code point (UTF-8 byte order is the same order), every character
/// outside printable ASCII escaped as `\uXXXX` (lowercase hex, surrogate pairs above U+FFFF),
/// integers as written, other numbers as Python's `repr` of a float. Integers beyond 64 bits
/// arrive here as floats (the JSON parser's limit) and are written as Python would write that
/// float, not as Python would write the integer: such a result cannot be signed portably.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out.into_bytes()
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => {
            if let Some(integer) = number.as_i64() {
                let _ = write!(out, "{integer}");
            } else if let Some(integer) = number.as_u64() {
                let _ = write!(out, "{integer}");
            } else if let Some(float) = number.as_f64() {
                write_python_float(float, out);
            } else {
                out.push_str(&number.to_string());
            }
        }
        Value::String(text) => write_python_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            let mut keys: Vec<&String> = members.keys().collect();
            keys.sort();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_python_string(key, out);
                out.push(':');
                if let Some(member) = members.get(key) {
                    write_canonical(member, out);
                }
            }
            out.push('}');
        }
    }
}

/// A string as Python's `json.dumps` writes it with `ensure_ascii` (its default).
fn write_python_string(text: &str, out: &mut String) {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(character),
            other => {
                let mut units = [0u16; 2];
                for unit in other.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// A float as Python's `repr` writes it: the shortest digits that read back to the same value,
/// in positional notation when the decimal exponent is in -4..16 (with `.0` when there is no
/// fraction), otherwise as `d.ddde+XX` with at least two exponent digits.
fn write_python_float(float: f64, out: &mut String) {
    if float == 0.0 {
        out.push_str(if float.is_sign_negative() {
            "-0.0"
        } else {
            "0.0"
        });
        return;
    }
    // JSON has no NaN or infinity; a parsed value never is one, but say what Python would.
    if float.is_nan() {
        out.push_str("NaN");
        return;
    }
    if float.is_infinite() {
        out.push_str(if float > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7", "1e16".
    let scientific = format!("{float:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .unwrap_or((scientific.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if negative {
        out.push('-');
    }
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        if point <= 0 {
            out.push_str("0.");
            for _ in 0..-point {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let point = point as usize;
            if digits.len() <= point {
                out.push_str(&digits);
                for _ in digits.len()..point {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exponent.unsigned_abs());
    }
}

/// The SHA-256 of the canonical JSON of `result`: what a result signature covers.
pub fn result_digest(result: &Value) -> [u8; 32] {
    Sha256::digest(canonical_json(result)).into()
}

/// The bytes a registration signature covers: [`REGISTRATION_SIGNATURE_PREFIX`] and the
/// canonical JSON of `body` with its `signature` member left out.
pub fn registration_message(body: &Value) -> Vec<u8> {
    let mut message = REGISTRATION_SIGNATURE_PREFIX.to_vec();
    match body {
        Value::Object(members) => {
            let mut unsigned = members.clone();
            unsigned.remove("signature");
            message.extend(canonical_json(&Value::Object(unsigned)));
        }
        other => message.extend(canonical_json(other)),
    }
    message
}

/// The `sig` of a bakeoff envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultSignature {
    /// Lowercase hex SHA-256 of the canonical JSON of the result.
    pub sha256: String,
    /// Standard base64 Ed25519 signature over the 32 raw digest bytes.
    pub signature: String,
    /// The signer's own name for itself: recorded, not matched.
    pub runner_id: String,
    /// When the signer says it signed: recorded, not matched.
    pub signed_at: String,
}

/// Check that `sig` is `key`'s signature of `result`: the digest must be the canonical JSON's,
/// and the signature must verify over its raw bytes.
pub fn verify_result_signature(
    key: &RunnerPublicKey,
    result: &Value,
    sig: &ResultSignature,
) -> Result<(), IdentityError> {
    let checked = check_digest(result, sig)?;
    key.0
        .verify_strict(&checked.digest, &checked.signature)
        .map_err(|_| IdentityError::SignatureMismatch {
            field: "sig.signature",
        })
}

/// A result signature whose digest matched its result, waiting for the Ed25519 check.
struct DigestChecked {
    digest: [u8; 32],
    signature: ed25519_dalek::Signature,
}

/// Everything but the Ed25519 check: the digest's form, the digest against the result, the
/// signature's form.
fn check_digest(result: &Value, sig: &ResultSignature) -> Result<DigestChecked, IdentityError> {
    let claimed = sig.sha256.as_str();
    if claimed.len() != 64
        || !claimed
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    {
        return Err(IdentityError::DigestMalformed {
            field: "sig.sha256",
        });
    }
    let digest = result_digest(result);
    let actual = hex::encode(digest);
    if actual != claimed {
        return Err(IdentityError::DigestMismatch {
            claimed: claimed.to_string(),
            actual,
        });
    }
    let signature = parse_signature("sig.signature", &sig.signature)?;
    Ok(DigestChecked { digest, signature })
}

/// The longest `sig.runner_id` and `sig.signed_at` a job records, in characters: they are the
/// signer's own free text, kept on the job for as long as the job is.
pub const MAX_SIGNER_TEXT_LEN: usize = 200;

/// What a job records of a result signature that verified: the key it verified against (by
/// fingerprint) and the envelope's own fields, so anyone holding the key can check it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedResultSignature {
    /// The fingerprint of the key the signature verified against.
    pub key_fingerprint: String,
    /// Lowercase hex SHA-256 of the canonical JSON of the result.
    pub sha256: String,
    /// Standard base64 Ed25519 signature over the 32 raw digest bytes.
    pub signature: String,
    /// The signer's `signed_at`, as sent.
    pub signed_at: String,
    /// The signer's `runner_id`, as sent.
    pub signer_runner_id: String,
}

/// Verify `sig` as [`verify_result_signature`] does and answer what the job records of it. The
/// signer's free-text fields are refused past [`MAX_SIGNER_TEXT_LEN`] characters.
pub fn verified_result_signature(
    key: &RunnerPublicKey,
    result: &Value,
    sig: ResultSignature,
) -> Result<VerifiedResultSignature, IdentityError> {
    check_signer_text(&sig)?;
    verify_result_signature(key, result, &sig)?;
    Ok(recorded(key.fingerprint(), sig))
}

/// Verify many result signatures of one runner's `key` (a batch completion), answering each
/// one's outcome in order, as [`verified_result_signature`] would. Those that pass the cheap
/// checks are verified together by Ed25519 batch verification, which costs well under half as
/// much per signature in batches of a hundred; when the batch does not verify, each is checked
/// on its own, strictly, to tell which failed. The batch equation is RFC 8032's cofactored
/// one: it also accepts a signature its key's holder crafted with a small-order component,
/// which the strict single check refuses. Such a signature proves possession of the key all the
/// same (nobody else can make one), so the difference decides nothing about who signed.
pub fn verified_result_signatures(
    key: &RunnerPublicKey,
    items: Vec<(&Value, ResultSignature)>,
) -> Vec<Result<VerifiedResultSignature, IdentityError>> {
    let mut checked = Vec::with_capacity(items.len());
    let mut outcomes = Vec::with_capacity(items.len());
    for (result, sig) in items {
        match check_signer_text(&sig).and_then(|()| check_digest(result, &sig)) {
            Ok(digest_checked) => {
                checked.push(digest_checked);
                outcomes.push(Ok(sig));
            }
            Err(error) => outcomes.push(Err(error)),
        }
    }
    let batch_verified = checked.len() > 1 && {
        let messages: Vec<&[u8]> = checked.iter().map(|item| &item.digest[..]).collect();
        let signatures: Vec<ed25519_dalek::Signature> =
            checked.iter().map(|item| item.signature).collect();
        let keys = vec![key.0; checked.len()];
        ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
    };
    let fingerprint = key.fingerprint();
    let mut checked = checked.into_iter();
    outcomes
        .into_iter()
        .map(|outcome| {
            let sig = outcome?;
            let item = checked.next().ok_or(IdentityError::SignatureMismatch {
                field: "sig.signature",
            })?;
            if !batch_verified {
                key.0
                    .verify_strict(&item.digest, &item.signature)
                    .map_err(|_| IdentityError::SignatureMismatch {
                        field: "sig.signature",
                    })?;
            }
            Ok(recorded(fingerprint.clone(), sig))
        })
        .collect()
}

fn check_signer_text(sig: &ResultSignature) -> Result<(), IdentityError> {
    for (field, text) in [
        ("sig.runner_id", &sig.runner_id),
        ("sig.signed_at", &sig.signed_at),
    ] {
        if text.chars().nth(MAX_SIGNER_TEXT_LEN).is_some() {
            return Err(IdentityError::SignerTextTooLong {
                field,
                max_chars: MAX_SIGNER_TEXT_LEN,
            });
        }
    }
    Ok(())
}

fn recorded(key_fingerprint: String, sig: ResultSignature) -> VerifiedResultSignature {
    VerifiedResultSignature {
        key_fingerprint,
        sha256: sig.sha256,
        signature: sig.signature,
        signed_at: sig.signed_at,
        signer_runner_id: sig.runner_id,
    }
}

/// Why a registration's time or signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FreshnessError {
    #[error(
        "timestamp: {difference_s} s from the coordinator's clock; a registration must be signed within {window_s} s of it (check the runner's clock)"
    )]
    OutsideWindow { difference_s: i64, window_s: i64 },
    #[error("signature: this registration was already accepted once; sign a new one")]
    Replayed,
    #[error(
        "the coordinator is remembering {capacity} recent registrations, its limit; try again in a few seconds"
    )]
    ReplayGuardFull { capacity: usize },
}

/// Whether a registration signed at `signed_at` may be accepted `now`.
pub fn check_registration_time(signed_at: Timestamp, now: Timestamp) -> Result<(), FreshnessError> {
    let difference = now.millis_since(signed_at);
    if difference.abs() > REGISTRATION_WINDOW_MS {
        return Err(FreshnessError::OutsideWindow {
            difference_s: difference / 1000,
            window_s: REGISTRATION_WINDOW_MS / 1000,
        });
    }
    Ok(())
}

/// The signatures of registrations accepted while their timestamp is still inside the window,
/// so each is accepted once. Bounded: at most `capacity` entries; an entry is forgotten once its
/// timestamp has left the window (after which [`check_registration_time`] refuses it anyway).
/// When full of live entries, new registrations are refused rather than an entry forgotten
/// early, which would let that registration be replayed.
#[derive(Debug)]
pub struct ReplayGuard {
    capacity: usize,
    /// Signature digest → when it may be forgotten.
    seen: HashMap<[u8; 32], Timestamp>,
    /// The same entries by when they may be forgotten.
    by_expiry: BTreeSet<(Timestamp, [u8; 32])>,
}

impl ReplayGuard {
    pub fn new(capacity: usize) -> ReplayGuard {
        ReplayGuard {
            capacity,
            seen: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Accept `signature` (of a registration signed at `signed_at`) once.
    pub fn accept_once(
        &mut self,
        signature: &[u8],
        signed_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), FreshnessError> {
        self.forget_expired(now);
        let digest: [u8; 32] = Sha256::digest(signature).into();
        if self.seen.contains_key(&digest) {
            return Err(FreshnessError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(FreshnessError::ReplayGuardFull {
                capacity: self.capacity,
            });
        }
        let forget_at = signed_at.plus_millis(REGISTRATION_WINDOW_MS);
        self.seen.insert(digest, forget_at);
        self.by_expiry.insert((forget_at, digest));
        Ok(())
    }

    fn forget_expired(&mut self, now: Timestamp) {
        while let Some(&(forget_at, digest)) = self.by_expiry.first() {
            if forget_at >= now {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn signing_key(seed: u8) -> RunnerSigningKey {
        RunnerSigningKey::from_secret_bytes([seed; 32])
    }

    fn sig_of(envelope: &Value) -> ResultSignature {
        let text = |name: &str| {
            envelope["sig"][name]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        ResultSignature {
            sha256: text("sha256"),
            signature: text("signature"),
            runner_id: text("runner_id"),
            signed_at: text("signed_at"),
        }
    }

    #[test]
    fn a_verified_signature_records_the_keys_fingerprint_and_the_signers_fields() {
        let key = signing_key(7);
        let result = json!({"answer": 42, "name": "caf\u{e9}"});
        let envelope = key.sign_result(&result, "bakeoff-7", "2026-12-02T10:00:00Z");
        let verified = verified_result_signature(&key.public_key(), &result, sig_of(&envelope))
            .expect("the key's own signature verifies");
        assert_eq!(verified.key_fingerprint, key.public_key().fingerprint());
        assert_eq!(verified.sha256, hex::encode(result_digest(&result)));
        assert_eq!(verified.signature, envelope["sig"]["signature"]);
        assert_eq!(verified.signer_runner_id, "bakeoff-7");
        assert_eq!(verified.signed_at, "2026-12-02T10:00:00Z");
    }

    #[test]
    fn another_keys_signature_or_a_changed_result_is_refused() {
        let key = signing_key(7);
        let result = json!({"answer": 42});
        let envelope = key.sign_result(&result, "r", "t");
        assert!(matches!(
            verified_result_signature(&signing_key(8).public_key(), &result, sig_of(&envelope)),
            Err(IdentityError::SignatureMismatch { .. })
        ));
        assert!(matches!(
            verified_result_signature(&key.public_key(), &json!({"answer": 43}), sig_of(&envelope)),
            Err(IdentityError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn overlong_signer_text_is_refused_before_verifying() {
        let key = signing_key(7);
        let result = json!(null);
        let long = "x".repeat(MAX_SIGNER_TEXT_LEN + 1);
        let envelope = key.sign_result(&result, &long, "t");
        assert_eq!(
            verified_result_signature(&key.public_key(), &result, sig_of(&envelope)),
            Err(IdentityError::SignerTextTooLong {
                field: "sig.runner_id",
                max_chars: MAX_SIGNER_TEXT_LEN
            })
        );
        let at_limit = "x".repeat(MAX_SIGNER_TEXT_LEN);
        let envelope = key.sign_result(&result, "r", &at_limit);
        assert!(verified_result_signature(&key.public_key(), &result, sig_of(&envelope)).is_ok());
    }

    #[test]
    fn a_batch_answers_each_signature_as_verifying_it_alone_would() {
        let key = signing_key(7);
        let public_key = key.public_key();
        let results: Vec<Value> = (0..7).map(|n| json!({"n": n})).collect();
        let mut sigs: Vec<ResultSignature> = results
            .iter()
            .map(|result| sig_of(&key.sign_result(result, "r", "t")))
            .collect();
        sigs[2] = sig_of(&signing_key(8).sign_result(&results[2], "r", "t"));
        sigs[3].sha256 = hex::encode(result_digest(&json!({"n": "other"})));
        sigs[4] = sig_of(&key.sign_result(&results[4], &"x".repeat(MAX_SIGNER_TEXT_LEN + 1), "t"));
        let mut tampered = STANDARD.decode(&sigs[5].signature).expect("base64");
        tampered[3] ^= 1;
        sigs[5].signature = STANDARD.encode(tampered);
        let alone: Vec<_> = results
            .iter()
            .zip(&sigs)
            .map(|(result, sig)| verified_result_signature(&public_key, result, sig.clone()))
            .collect();
        let together = verified_result_signatures(
            &public_key,
            results.iter().zip(sigs.iter().cloned()).collect(),
        );
        assert_eq!(together, alone);
        let refused: Vec<usize> = (0..7).filter(|index| together[*index].is_err()).collect();
        assert_eq!(refused, vec![2, 3, 4, 5], "{together:?}");

        let good: Vec<(&Value, ResultSignature)> = results
            .iter()
            .map(|result| (result, sig_of(&key.sign_result(result, "r", "t"))))
            .collect();
        let verified = verified_result_signatures(&public_key, good);
        assert!(verified.iter().all(Result::is_ok), "{verified:?}");
        assert!(verified_result_signatures(&public_key, Vec::new()).is_empty());
    }
}
