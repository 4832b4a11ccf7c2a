//! How values without a column type of their own (capabilities, label maps, artifact lists, log
//! levels) are written to and read from the database. Shared by every backend, so
//! a database written by one reads the same in any.

use std::collections::BTreeMap;

use muster_core::identity::VerifiedResultSignature;
use muster_core::{ArtifactId, Capabilities, LogLevel};
use serde_json::{Map, Value};

use crate::StoreError;

/// A job's inputs as stored: a JSON list of ids, `None` (NULL) when there are none.
pub(crate) fn inputs_to_json(inputs: &[ArtifactId]) -> Option<String> {
    (!inputs.is_empty()).then(|| {
        Value::Array(
            inputs
                .iter()
                .map(|id| Value::String(id.to_string()))
                .collect(),
        )
        .to_string()
    })
}

pub(crate) fn inputs_from_json(value: &Value) -> Result<Vec<ArtifactId>, String> {
    value
        .as_array()
        .ok_or("inputs: expected a list")?
        .iter()
        .map(|id| {
            id.as_str()
                .ok_or_else(|| "inputs: expected strings".to_string())?
                .parse::<ArtifactId>()
                .map_err(|error| format!("inputs: {error}"))
        })
        .collect()
}

/// A job's outputs as stored: a JSON object from name to id, `None` (NULL) when there are none.
pub(crate) fn outputs_to_json(outputs: &BTreeMap<String, ArtifactId>) -> Option<String> {
    (!outputs.is_empty()).then(|| {
        Value::Object(
            outputs
                .iter()
                .map(|(name, id)| (name.clone(), Value::String(id.to_string())))
                .collect(),
        )
        .to_string()
    })
}

pub(crate) fn outputs_from_json(value: &Value) -> Result<BTreeMap<String, ArtifactId>, String> {
    string_map_from_json(value)
        .map_err(|problem| format!("outputs: {problem}"))?
        .into_iter()
        .map(|(name, id)| {
            let id = id
                .parse::<ArtifactId>()
                .map_err(|error| format!("outputs.{name}: {error}"))?;
            Ok((name, id))
        })
        .collect()
}

/// A job's verified result signature as stored: a JSON object of its fields by their wire names.
pub(crate) fn result_signature_to_json(signature: &VerifiedResultSignature) -> String {
    serde_json::json!({
        "key_fingerprint": signature.key_fingerprint,
        "sha256": signature.sha256,
        "signature": signature.signature,
        "signed_at": signature.signed_at,
        "signer_runner_id": signature.signer_runner_id,
    })
    .to_string()
}

pub(crate) fn result_signature_from_json(value: &Value) -> Result<VerifiedResultSignature, String> {
    let field = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("result_signature.{name}: missing or not a string"))
    };
    Ok(VerifiedResultSignature {
        key_fingerprint: field("key_fingerprint")?,
        sha256: field("sha256")?,
        signature: field("signature")?,
        signed_at: field("signed_at")?,
        signer_runner_id: field("signer_runner_id")?,
    })
}

/// A job's requirements as stored: JSON text, `None` (NULL) when any runner of the kind may take
/// the job (such jobs are claimed through an index of their own).
pub(crate) fn requirements_to_json(requirements: &Capabilities) -> Option<String> {
    (!requirements.is_empty()).then(|| capabilities_to_json(requirements).to_string())
}

pub(crate) fn capabilities_to_json(capabilities: &Capabilities) -> Value {
    let mut object = Map::new();
    if !capabilities.labels.is_empty() {
        let labels = capabilities
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        object.insert("labels".into(), Value::Object(labels));
    }
    if !capabilities.tags.is_empty() {
        object.insert(
            "tags".into(),
            Value::Array(
                capabilities
                    .tags
                    .iter()
                    .cloned()
                    .map(Value::String)
                    .collect(),
            ),
        );
    }
    if !capabilities.resources.is_empty() {
        let resources = capabilities
            .resources
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(*v)))
            .collect();
        object.insert("resources".into(), Value::Object(resources));
    }
    Value::Object(object)
}

pub(crate) fn capabilities_from_json(value: &Value) -> Result<Capabilities, String> {
    let mut capabilities = Capabilities::default();
    if let Some(labels) = value.get("labels") {
        capabilities.labels = string_map_from_json(labels)?;
    }
    if let Some(tags) = value.get("tags").and_then(Value::as_array) {
        capabilities.tags = tags
            .iter()
            .map(|tag| {
                tag.as_str()
                    .map(str::to_string)
                    .ok_or("tag is not a string")
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(resources) = value.get("resources").and_then(Value::as_object) {
        for (name, amount) in resources {
            let amount = amount
                .as_f64()
                .ok_or_else(|| format!("resource {name} is not a number"))?;
            capabilities.resources.insert(name.clone(), amount);
        }
    }
    Ok(capabilities)
}

pub(crate) fn string_map_from_json(value: &Value) -> Result<BTreeMap<String, String>, String> {
    let object = value.as_object().ok_or("expected an object of strings")?;
    object
        .iter()
        .map(|(key, value)| match value.as_str() {
            Some(text) => Ok((key.clone(), text.to_string())),
            None => Err(format!("value of {key} is not a string")),
        })
        .collect()
}

pub(crate) fn string_map_to_json(map: &BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

pub(crate) fn level_code(level: LogLevel) -> i64 {
    match level {
        LogLevel::Trace => 0,
        LogLevel::Debug => 1,
        LogLevel::Info => 2,
        LogLevel::Warn => 3,
        LogLevel::Error => 4,
    }
}

pub(crate) fn level_from_code(code: i64) -> LogLevel {
    match code {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        3 => LogLevel::Warn,
        4 => LogLevel::Error,
        _ => LogLevel::Info,
    }
}

/// Parse stored labels.
pub(crate) fn labels_from_text(text: &str) -> Result<BTreeMap<String, String>, StoreError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|error| StoreError::Internal(format!("stored labels: {error}")))?;
    string_map_from_json(&value).map_err(StoreError::Internal)
}

/// Parse a stored offer (`None` when the runner never declared one).
pub(crate) fn offer_from_text(text: Option<&str>) -> Result<Capabilities, StoreError> {
    match text {
        None => Ok(Capabilities::default()),
        Some(text) => {
            let value: Value = serde_json::from_str(text)
                .map_err(|error| StoreError::Internal(format!("stored offer: {error}")))?;
            capabilities_from_json(&value).map_err(StoreError::Internal)
        }
    }
}
