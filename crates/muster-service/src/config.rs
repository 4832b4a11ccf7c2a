//! What the application layer runs with: the transport-neutral settings, checked by whichever
//! front end read them (the `muster server` flags, say).

use std::time::Duration;

/// The checked settings the coordinator's rules use.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The largest artifact upload. Uploads are streamed to disk, never held in memory, so this
    /// bounds disk use per upload, not memory.
    pub max_artifact_bytes: u64,
    /// How often runners are asked to heartbeat; a runner silent for three is offline.
    pub heartbeat_interval: Duration,
    /// How long a cancelled job waits for its runner to confirm before it ends anyway.
    pub cancel_grace: Duration,
    /// How often the reaper looks for passed deadlines.
    pub reap_interval: Duration,
    /// How long a finished job (with its logs and DAG) is kept after it finished; `None` keeps
    /// every job forever.
    pub retain_finished_jobs: Option<Duration>,
    /// How long an artifact no job names is kept after it was last uploaded or named; `None`
    /// keeps every artifact.
    pub retain_unused_artifacts: Option<Duration>,
    /// Limits on what artifact uploads may make the coordinator store.
    pub artifact_quotas: ArtifactQuotas,
    /// Failed authentications (unknown, revoked or expired tokens, missing credentials) one
    /// address may have per minute; past it, its requests get 429 until the minute ends, before
    /// any token is looked up. IPv6 addresses count by their /64. `None` (or 0) turns throttling
    /// off.
    pub auth_failure_limit: Option<u32>,
    /// What happens to a registration by a key the coordinator does not trust yet.
    pub enrollment_gate: muster_core::EnrollmentGate,
    /// How long a token of a runner that registered by its key works.
    pub runner_token_ttl: Duration,
    /// How long a dashboard session lasts after sign-in (never past its user token's expiry).
    pub session_ttl: Duration,
    /// How long a runner's push stream (gRPC `Attach`) lasts before the coordinator asks the
    /// runner to move to a new one, give or take a tenth: shorter than the idle timeouts of the
    /// proxies in between, so none of them cuts a stream silently.
    pub runner_stream_lifetime: Duration,
}

impl ServiceConfig {
    /// A runner unheard of for three heartbeat intervals is offline.
    pub fn runner_offline_after_ms(&self) -> i64 {
        self.heartbeat_interval.as_millis() as i64 * 3
    }
}

/// Limits on what artifact uploads may make the coordinator store; `None` is unlimited. A
/// runner is charged the artifacts its uploads stored anew while they stay stored; the totals
/// count every stored artifact, users' uploads included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactQuotas {
    pub runner_bytes: Option<u64>,
    pub runner_count: Option<u64>,
    pub total_bytes: Option<u64>,
    pub total_count: Option<u64>,
    /// Room the file system holding the artifact directory keeps free (local artifacts only).
    pub disk_reserve: DiskReserve,
}

/// How much room uploads leave free on the artifact directory's file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskReserve {
    Bytes(u64),
    /// Hundredths of a percent of the file system's size (`5%` is 500).
    Share {
        hundredths_of_percent: u32,
    },
}

impl DiskReserve {
    /// Whether no room is kept at all (`0`, `0%`).
    pub fn is_zero(&self) -> bool {
        matches!(
            self,
            DiskReserve::Bytes(0)
                | DiskReserve::Share {
                    hundredths_of_percent: 0
                }
        )
    }

    /// The reserve in bytes on a file system of `total` bytes.
    pub fn bytes_of(&self, total: u64) -> u64 {
        match *self {
            DiskReserve::Bytes(bytes) => bytes,
            DiskReserve::Share {
                hundredths_of_percent,
            } => {
                let reserve = u128::from(total) * u128::from(hundredths_of_percent) / 10_000;
                u64::try_from(reserve).unwrap_or(u64::MAX)
            }
        }
    }
}

impl std::fmt::Display for DiskReserve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            DiskReserve::Bytes(bytes) => write!(f, "{bytes} bytes"),
            DiskReserve::Share {
                hundredths_of_percent,
            } => {
                let whole = hundredths_of_percent / 100;
                match hundredths_of_percent % 100 {
                    0 => write!(f, "{whole}%"),
                    part if part % 10 == 0 => write!(f, "{whole}.{}%", part / 10),
                    part => write!(f, "{whole}.{part:02}%"),
                }
            }
        }
    }
}
