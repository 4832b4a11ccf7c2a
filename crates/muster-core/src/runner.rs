use crate::{Capabilities, Enrollment, RunnerId, Timestamp};

/// A runner's health as the coordinator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerStatus {
    Online,
    Offline,
    Draining,
}

impl RunnerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerStatus::Online => "online",
            RunnerStatus::Offline => "offline",
            RunnerStatus::Draining => "draining",
        }
    }
}

/// `offline` once nothing was heard for `offline_after_ms`; otherwise what the runner last said.
pub fn runner_status(
    last_seen_at: Option<Timestamp>,
    declared_draining: bool,
    offline_after_ms: i64,
    now: Timestamp,
) -> RunnerStatus {
    match last_seen_at {
        Some(seen) if now.millis_since(seen) <= offline_after_ms => {
            if declared_draining {
                RunnerStatus::Draining
            } else {
                RunnerStatus::Online
            }
        }
        _ => RunnerStatus::Offline,
    }
}

/// A registered runner as a store holds it (never with its token).
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerRecord {
    pub id: RunnerId,
    pub name: String,
    pub organization_id: Option<String>,
    /// Labels given at registration, merged with those declared at claim time.
    pub labels: std::collections::BTreeMap<String, String>,
    /// What the runner last declared when it claimed.
    pub offer: Capabilities,
    pub kinds: Vec<String>,
    pub hostname: Option<String>,
    pub version: Option<String>,
    pub draining: bool,
    pub last_heartbeat_at: Option<Timestamp>,
    pub last_seen_at: Option<Timestamp>,
    pub running_jobs: u32,
    pub created_at: Timestamp,
    /// Where it stands with the coordinator; runners an operator created are enrolled.
    pub enrollment: Enrollment,
    /// The fingerprint of the key it registered itself with; `None` for runners an operator
    /// created.
    pub key_fingerprint: Option<String>,
    /// That key, standard base64 of its 32 bytes: what its result signatures verify against.
    pub public_key: Option<String>,
    /// What it may claim with: the capabilities of its signed registration, or those an operator
    /// fixed when creating it. A claim may narrow them, never widen them. `None`: it declares
    /// its capabilities at each claim and is trusted to tell the truth.
    pub bound_capabilities: Option<Capabilities>,
    /// The kinds its signed registration named (a claim names some of them); `None`: any kind.
    pub bound_kinds: Option<Vec<String>>,
    /// When its current token stops working; `None` for the non-expiring tokens of runners an
    /// operator created.
    pub token_expires_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_from_last_seen() {
        let now = Timestamp(100_000);
        assert_eq!(
            runner_status(None, false, 30_000, now),
            RunnerStatus::Offline
        );
        assert_eq!(
            runner_status(Some(Timestamp(90_000)), false, 30_000, now),
            RunnerStatus::Online
        );
        assert_eq!(
            runner_status(Some(Timestamp(90_000)), true, 30_000, now),
            RunnerStatus::Draining
        );
        assert_eq!(
            runner_status(Some(Timestamp(60_000)), true, 30_000, now),
            RunnerStatus::Offline
        );
        assert_eq!(
            runner_status(Some(Timestamp(70_000)), false, 30_000, now),
            RunnerStatus::Online
        );
    }
}
