//! `muster runner --key`: registering with the runner's key until the coordinator answers, and
//! renewing the short-lived token in the background before it expires. The token lives in
//! memory only; the key is the identity, so a runner that lost its coordinator for longer than
//! a token lives registers again when it is back.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use muster_client::api::RunnerRegistered;
use muster_client::{ClientError, Registrar, RunnerDescription};
use muster_core::identity::RunnerSigningKey;
use muster_runner::{HttpTransport, StopSignals};
use time::OffsetDateTime;
use tokio::sync::Notify;

/// The share of a token's lifetime after which it is renewed.
const RENEW_AT: f64 = 0.75;

/// How long to wait before asking again when the coordinator cannot be reached.
fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis((500u64 << attempt.min(6)).min(30_000))
}

/// Whether a registration refused with `error` may succeed when sent again later unchanged
/// (the coordinator unreachable or unavailable, or throttling).
fn worth_retrying(error: &ClientError) -> bool {
    error.is_transient() || error.status() == Some(429)
}

/// What an operator must do about a registration the coordinator refused.
fn refusal_hint(error: &ClientError, key: &RunnerSigningKey) -> String {
    let public_key = key.public_key();
    match error.code_text() {
        Some("key_not_allowed") => format!(
            "the coordinator does not trust key {}: an operator runs `muster runners keys add {}` (or starts the coordinator with --enrollment approval)",
            public_key.fingerprint(),
            public_key.to_base64()
        ),
        Some("key_rejected") => format!(
            "an operator rejected this runner's key {}; it may register again once an operator adds the key with `muster runners keys add {}`",
            public_key.fingerprint(),
            public_key.to_base64()
        ),
        Some("registration_closed") => "the coordinator accepts no registrations (--enrollment closed): ask an operator for a token from `muster runners create`".to_string(),
        _ => format!("registration refused: {error}"),
    }
}

/// Register until the coordinator answers, showing each wait; `None` when stopped first.
pub(crate) async fn register_until_answered(
    registrar: &Registrar,
    key: &RunnerSigningKey,
    description: &RunnerDescription,
    stop: &StopSignals,
) -> anyhow::Result<Option<RunnerRegistered>> {
    let mut attempt = 0u32;
    loop {
        match registrar.register(key, description).await {
            Ok((registered, _)) => {
                crate::output::note!(
                    "registered as runner {} ({}) with key {}; its token expires at {} UTC",
                    registered.runner.name,
                    registered.runner.id,
                    key.public_key().fingerprint(),
                    crate::output::short_time(Some(registered.token_expires_at))
                );
                return Ok(Some(registered));
            }
            Err(error) if worth_retrying(&error) => {
                attempt += 1;
                let delay = retry_delay(attempt);
                crate::output::note!(
                    "cannot register yet ({error}); trying again in {} s",
                    delay.as_secs_f64().ceil()
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.drain.cancelled() => return Ok(None),
                }
            }
            Err(error) => bail!("{}", refusal_hint(&error, key)),
        }
    }
}

/// How long to wait from now before renewing a token that expires at `expires_at`: 75 % of
/// what is left of it, at least a second.
fn renewal_delay(expires_at: OffsetDateTime, now: OffsetDateTime) -> Duration {
    let left = (expires_at - now).as_seconds_f64().max(0.0);
    Duration::from_secs_f64((left * RENEW_AT).max(1.0))
}

/// Renew the token of `transport` by registering again at 75 % of each token's life, for as
/// long as the runner runs, and at once when `expired` is woken (the transport saw the token
/// refused as expired: the coordinator was away for longer than the token lives). A refused
/// renewal is retried (the coordinator may be away); one the coordinator refuses for good (the
/// key removed) is logged, and the runner's calls then fail with the coordinator's answer.
pub(crate) async fn renew_tokens(
    registrar: Registrar,
    key: Arc<RunnerSigningKey>,
    description: RunnerDescription,
    transport: Arc<HttpTransport>,
    mut expires_at: OffsetDateTime,
    expired: Arc<Notify>,
) {
    let mut attempt = 0u32;
    loop {
        let delay = if attempt == 0 {
            renewal_delay(expires_at, OffsetDateTime::now_utc())
        } else {
            retry_delay(attempt)
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = expired.notified() => {
                tracing::info!("the runner token expired; registering again with the key");
            }
        }
        match registrar.register(&key, &description).await {
            Ok((registered, _)) => match transport.replace_token(&registered.token) {
                Ok(()) => {
                    attempt = 0;
                    expires_at = registered.token_expires_at;
                    tracing::info!(expires_at = %expires_at, "renewed the runner token");
                }
                Err(error) => {
                    tracing::error!(%error, "use the renewed runner token");
                    attempt += 1;
                }
            },
            Err(error) if worth_retrying(&error) => {
                attempt += 1;
                tracing::warn!(%error, "could not renew the runner token; retrying");
            }
            Err(error) => {
                tracing::error!("{}", refusal_hint(&error, &key));
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_renewed_at_three_quarters_of_what_is_left_of_it() {
        let now = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(
            renewal_delay(now + time::Duration::hours(1), now),
            Duration::from_secs(2700)
        );
        assert_eq!(
            renewal_delay(now + time::Duration::seconds(2), now),
            Duration::from_millis(1500)
        );
        assert_eq!(
            renewal_delay(now + time::Duration::seconds(1), now),
            Duration::from_secs(1),
            "at least a second"
        );
        assert_eq!(
            renewal_delay(now, now + time::Duration::hours(1)),
            Duration::from_secs(1)
        );
        assert_eq!(retry_delay(1), Duration::from_millis(1000));
        assert_eq!(retry_delay(20), Duration::from_secs(30));
    }
}
