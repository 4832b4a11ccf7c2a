//! Registering a runner by its Ed25519 key: no token, the signature over the request is the
//! proof. Signing happens here, over exactly the JSON this client sends, so what the
//! coordinator verifies is what was signed.

use std::collections::BTreeMap;
use std::time::Duration;

use muster_api::{RegisterRunner, RunnerRegistered};
use muster_core::identity::RunnerSigningKey;
use reqwest::StatusCode;
use time::OffsetDateTime;

use crate::tls::{ClientTls, http_client_builder};
use crate::{ClientError, Connection};

/// What a runner says about itself when it registers; its claims may narrow it, never widen it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunnerDescription {
    pub name: String,
    pub hostname: String,
    pub kinds: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub resources: BTreeMap<String, f64>,
    pub organization_id: Option<String>,
}

/// A coordinator's registration route, called without a token.
#[derive(Clone)]
pub struct Registrar {
    http: reqwest::Client,
    base_url: String,
}

impl Registrar {
    /// A registrar trusting what `tls` says for `https://` URLs.
    pub fn new(base_url: &str, tls: &ClientTls) -> Result<Registrar, ClientError> {
        let base_url = Connection::checked_base_url(base_url)?;
        let http = http_client_builder(&base_url, tls)?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|error| ClientError::Config(format!("build HTTP client: {error}")))?;
        Ok(Registrar { http, base_url })
    }

    /// Register (or register again, renewing the token) as `description`, signed by `key` now.
    /// Answers the runner with its new token, and whether the runner is new.
    pub async fn register(
        &self,
        key: &RunnerSigningKey,
        description: &RunnerDescription,
    ) -> Result<(RunnerRegistered, bool), ClientError> {
        self.register_signed_at(key, description, OffsetDateTime::now_utc())
            .await
    }

    /// Like [`Registrar::register`], with the registration's timestamp given (tests whose
    /// coordinator runs on a manual clock).
    pub async fn register_signed_at(
        &self,
        key: &RunnerSigningKey,
        description: &RunnerDescription,
        timestamp: OffsetDateTime,
    ) -> Result<(RunnerRegistered, bool), ClientError> {
        let body = signed_registration(key, description, timestamp)?;
        let response = self
            .http
            .post(format!("{}/api/v1/runners/register", self.base_url))
            .json(&body)
            .send()
            .await
            .map_err(|error| ClientError::Transport(crate::error_chain(&error)))?;
        let created = response.status() == StatusCode::CREATED;
        let response = crate::refuse_unsuccessful(response).await?;
        let registered: RunnerRegistered = crate::decode(response).await?;
        Ok((registered, created))
    }
}

/// The registration body for `description` at `timestamp`, with its signature: the key signs
/// the canonical JSON of the body it is about to send, without `signature`.
pub fn signed_registration(
    key: &RunnerSigningKey,
    description: &RunnerDescription,
    timestamp: OffsetDateTime,
) -> Result<serde_json::Value, ClientError> {
    let unsigned = RegisterRunner {
        name: description.name.clone(),
        hostname: description.hostname.clone(),
        public_key: key.public_key().to_base64(),
        kinds: description.kinds.clone(),
        labels: description.labels.clone(),
        tags: description.tags.clone(),
        resources: description.resources.clone(),
        organization_id: description.organization_id.clone(),
        timestamp,
        signature: String::new(),
    };
    let mut body = serde_json::to_value(&unsigned)
        .map_err(|error| ClientError::Config(format!("encode the registration: {error}")))?;
    let Some(members) = body.as_object_mut() else {
        return Err(ClientError::Config(
            "a registration encodes as an object".into(),
        ));
    };
    members.remove("signature");
    let signature = key.sign_registration(&body);
    if let Some(members) = body.as_object_mut() {
        members.insert("signature".into(), serde_json::Value::String(signature));
    }
    Ok(body)
}
