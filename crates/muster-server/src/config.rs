//! Server configuration in two stages: [`RawServerConfig`] is what flags, environment and files
//! gave (every field optional), [`ServerConfig`] is the checked result the server runs with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::connections::ConnectionLimits;
pub use crate::tls::TlsFiles;
pub use muster_service::{ArtifactQuotas, DiskReserve, ServiceConfig};

/// Configuration as given, before defaults and checks.
#[derive(Debug, Clone, Default)]
pub struct RawServerConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database: Option<String>,
    /// `--database-max-connections` / `MUSTER_DATABASE_MAX_CONNECTIONS` (PostgreSQL only).
    pub database_max_connections: Option<usize>,
    /// `--database-wait` / `MUSTER_DATABASE_WAIT` (PostgreSQL only): a duration, `0` to fail
    /// at once.
    pub database_wait: Option<String>,
    pub admin_token: Option<String>,
    pub max_body_bytes: Option<usize>,
    /// `--max-artifact-bytes` / `MUSTER_MAX_ARTIFACT_BYTES`.
    pub max_artifact_bytes: Option<u64>,
    pub log_cap_bytes: Option<u64>,
    pub heartbeat_interval_ms: Option<u64>,
    pub cancel_grace_s: Option<u64>,
    pub reap_interval_ms: Option<u64>,
    /// `--retain-finished-jobs` / `MUSTER_RETAIN_FINISHED_JOBS`: a duration such as `30d` or
    /// `12h`, or `forever` (also `0`) to keep every job.
    pub retain_finished_jobs: Option<String>,
    /// `--retain-unused-artifacts` / `MUSTER_RETAIN_UNUSED_ARTIFACTS`: how long an artifact no
    /// job names is kept after it was last uploaded or named, or `forever` (also `0`).
    pub retain_unused_artifacts: Option<String>,
    /// `--runner-artifact-quota-bytes` / `MUSTER_RUNNER_ARTIFACT_QUOTA_BYTES`: a size (`50GiB`,
    /// `500MB`, bytes) or `unlimited`. The other quotas read the same way, counts as integers.
    pub runner_artifact_quota_bytes: Option<String>,
    /// `--runner-artifact-quota-count` / `MUSTER_RUNNER_ARTIFACT_QUOTA_COUNT`.
    pub runner_artifact_quota_count: Option<String>,
    /// `--artifact-quota-bytes` / `MUSTER_ARTIFACT_QUOTA_BYTES`.
    pub artifact_quota_bytes: Option<String>,
    /// `--artifact-quota-count` / `MUSTER_ARTIFACT_QUOTA_COUNT`.
    pub artifact_quota_count: Option<String>,
    /// `--disk-reserve` / `MUSTER_DISK_RESERVE`: a share of the file system (`5%`) or a size.
    pub disk_reserve: Option<String>,
    /// `--tls-cert` / `MUSTER_TLS_CERT`: the certificate chain to serve HTTPS with (PEM).
    pub tls_certificate: Option<PathBuf>,
    /// `--tls-key` / `MUSTER_TLS_KEY`: its private key (PEM).
    pub tls_private_key: Option<PathBuf>,
    /// `--header-read-timeout` / `MUSTER_HEADER_READ_TIMEOUT`: a duration.
    pub header_read_timeout: Option<String>,
    /// `--idle-timeout` / `MUSTER_IDLE_TIMEOUT`: a duration.
    pub idle_timeout: Option<String>,
    /// `--body-read-timeout` / `MUSTER_BODY_READ_TIMEOUT`: a duration.
    pub body_read_timeout: Option<String>,
    /// `--body-min-rate` / `MUSTER_BODY_MIN_RATE`: bytes per second.
    pub body_min_rate: Option<u64>,
    /// `--max-connections` / `MUSTER_MAX_CONNECTIONS`.
    pub max_connections: Option<usize>,
    /// `--auth-failure-limit` / `MUSTER_AUTH_FAILURE_LIMIT`: failed authentications per address
    /// per minute before 429; `0` turns throttling off.
    pub auth_failure_limit: Option<u32>,
    /// `--enrollment` / `MUSTER_ENROLLMENT`: `allowlist`, `approval` or `closed`.
    pub enrollment: Option<String>,
    /// `--runner-token-ttl` / `MUSTER_RUNNER_TOKEN_TTL`: how long a token of a runner that
    /// registered itself with its key works (a duration).
    pub runner_token_ttl: Option<String>,
    /// `--session-ttl` / `MUSTER_SESSION_TTL`: how long a dashboard sign-in lasts (a duration).
    pub session_ttl: Option<String>,
    /// `--stream-lifetime` / `MUSTER_STREAM_LIFETIME`: how long a runner's gRPC push stream
    /// lasts before it is asked to move to a new one (a duration).
    pub stream_lifetime: Option<String>,
}

/// Where jobs are stored.
#[derive(Debug, Clone, PartialEq)]
pub enum DatabaseConfig {
    /// The embedded SQLite file.
    Sqlite { path: PathBuf },
    /// A PostgreSQL database, which several coordinators may share.
    Postgres {
        url: String,
        /// Connections this coordinator opens at most.
        max_connections: usize,
        /// How long to keep trying at start while the database cannot be reached.
        wait: Duration,
    },
}

impl DatabaseConfig {
    /// How many file descriptors the store (and the artifact store beside it) may hold open:
    /// SQLite's writer and readers each hold the database, its WAL and its shared-memory file;
    /// PostgreSQL holds a socket per connection, the wake-up listener's and the artifact pool's.
    pub fn open_files(&self) -> u64 {
        match self {
            DatabaseConfig::Sqlite { .. } => {
                3 * (1 + muster_store::sqlite::MAX_READER_CONNECTIONS as u64)
            }
            DatabaseConfig::Postgres {
                max_connections, ..
            } => *max_connections as u64 + 1 + crate::BLOB_MAX_CONNECTIONS as u64,
        }
    }

    /// Where the store is, for people: a PostgreSQL URL's password is masked.
    pub fn describe(&self) -> String {
        match self {
            DatabaseConfig::Sqlite { path } => format!("SQLite file {}", path.display()),
            DatabaseConfig::Postgres { url, .. } => {
                format!("PostgreSQL {}", mask_password(url))
            }
        }
    }
}

/// `postgres://user:secret@host/db` as `postgres://user:***@host/db`.
fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Checked configuration the server runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    /// From `MUSTER_ADMIN_TOKEN`; when `None`, the token in `<data-dir>/admin.token` is used or
    /// made.
    pub admin_token: Option<String>,
    /// The largest JSON request body; bodies are read whole, so this bounds memory per request.
    pub max_body_bytes: usize,
    /// Log bytes kept per job (the store applies it).
    pub log_cap_bytes: u64,
    /// What the application layer runs with: heartbeats, cancel grace, the reaper, retention,
    /// artifact limits and quotas.
    pub service: ServiceConfig,
    /// Serve HTTPS with these files; plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
    /// Timeouts and the connection cap of the listening socket.
    pub connections: ConnectionLimits,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
pub const DEFAULT_DATA_DIR: &str = ".muster";
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 1024 * 1024 * 1024;
pub const DEFAULT_LOG_CAP_BYTES: u64 = 4 * 1024 * 1024;
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 10_000;
pub const DEFAULT_CANCEL_GRACE_S: u64 = 30;
pub const DEFAULT_REAP_INTERVAL_MS: u64 = 250;
pub const DEFAULT_DATABASE_MAX_CONNECTIONS: usize = 16;
pub const DEFAULT_RETAIN_FINISHED_JOBS: &str = "30d";
pub const DEFAULT_DATABASE_WAIT: Duration = Duration::from_secs(60);
/// Shorter retentions would delete results before a person or script waiting for them could
/// read them.
pub const MINIMUM_RETAIN_FINISHED_JOBS: Duration = Duration::from_secs(60);
pub const DEFAULT_RETAIN_UNUSED_ARTIFACTS: &str = "24h";
/// An artifact is uploaded before the job that names it is submitted; shorter retentions would
/// delete inputs of jobs that are still being put together. It must also stay well above
/// `muster_store::blobs::KEEP_GRANULARITY` (10 minutes), how stale a use mark may be.
pub const MINIMUM_RETAIN_UNUSED_ARTIFACTS: Duration = Duration::from_secs(3600);
/// 50 uploads at the default --max-artifact-bytes: a runner producing 1.6 GiB a day that jobs
/// keep naming for the default 30 days fits, a runaway one stops long before a large disk fills.
pub const DEFAULT_RUNNER_ARTIFACT_QUOTA_BYTES: &str = "50GiB";
/// A job with one output every 30 s, kept the default 30 days, is 86,400 artifacts; a runaway
/// uploading small distinct files stops here instead of at the file system's last inode.
pub const DEFAULT_RUNNER_ARTIFACT_QUOTA_COUNT: &str = "100000";
/// Unlimited: the disk reserve keeps the file system from filling whatever the fleet does, and
/// how much a whole fleet may store depends on the disk, which only the operator knows.
pub const DEFAULT_ARTIFACT_QUOTA_BYTES: &str = "unlimited";
pub const DEFAULT_ARTIFACT_QUOTA_COUNT: &str = "unlimited";
/// What the database, logs and uploads in progress need to go on when artifacts are refused.
pub const DEFAULT_DISK_RESERVE: &str = "5%";

pub const DEFAULT_HEADER_READ_TIMEOUT: &str = "10s";
pub const DEFAULT_IDLE_TIMEOUT: &str = "60s";
pub const DEFAULT_BODY_READ_TIMEOUT: &str = "30s";
pub const DEFAULT_BODY_MIN_RATE: u64 = 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Failed authentications one address may have per minute. Far above what an honest client
/// sends (a misconfigured runner retrying a revoked token every few seconds stays under it),
/// far below what guessing or a flood of unknown tokens needs.
pub const DEFAULT_AUTH_FAILURE_LIMIT: u32 = 100;

/// A setting that cannot be used; names the setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
}

fn config_error(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        problem: problem.into(),
    }
}

impl ServerConfig {
    pub fn from_raw(raw: RawServerConfig) -> Result<ServerConfig, ConfigError> {
        let listen_text = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = resolve_listen(&listen_text)?;
        let data_dir = raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let database = match raw.database.as_deref().map(str::trim) {
            None | Some("") => DatabaseConfig::Sqlite {
                path: data_dir.join("muster.db"),
            },
            Some(url) if url.starts_with("sqlite:") => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                if path.is_empty() {
                    return Err(config_error(
                        "--database",
                        "sqlite: URL without a file path",
                    ));
                }
                DatabaseConfig::Sqlite {
                    path: PathBuf::from(path),
                }
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let max_connections = raw
                    .database_max_connections
                    .unwrap_or(DEFAULT_DATABASE_MAX_CONNECTIONS);
                if !(2..=1000).contains(&max_connections) {
                    return Err(config_error(
                        "--database-max-connections",
                        "must be between 2 and 1000",
                    ));
                }
                // Coordinators sharing a database must accept the same admin token; a token
                // each made for itself would work on one coordinator and not the next.
                if raw.admin_token.is_none() {
                    return Err(config_error(
                        "MUSTER_ADMIN_TOKEN",
                        "required with a PostgreSQL database: every coordinator sharing it must be given the same admin token (at least 16 characters, e.g. `openssl rand -hex 24`)",
                    ));
                }
                let wait = match raw.database_wait.as_deref().map(str::trim) {
                    None => DEFAULT_DATABASE_WAIT,
                    Some("0") => Duration::ZERO,
                    Some(text) => humantime::parse_duration(text).map_err(|error| {
                        config_error(
                            "--database-wait",
                            format!(
                                "'{text}' is not a duration ({error}); write e.g. 60s or 5m, or 0 to fail at once"
                            ),
                        )
                    })?,
                };
                DatabaseConfig::Postgres {
                    url: url.to_string(),
                    max_connections,
                    wait,
                }
            }
            Some(other) => {
                return Err(config_error(
                    "--database",
                    format!(
                        "unsupported URL '{}': use postgres://..., sqlite:PATH, or omit it for the embedded SQLite file",
                        mask_password(other)
                    ),
                ));
            }
        };
        if let Some(token) = &raw.admin_token {
            if token.trim().len() < 16 {
                return Err(config_error(
                    "MUSTER_ADMIN_TOKEN",
                    "must be at least 16 characters",
                ));
            }
            if token.starts_with(muster_core::RUNNER_TOKEN_PREFIX) {
                return Err(config_error(
                    "MUSTER_ADMIN_TOKEN",
                    "must not look like a runner token",
                ));
            }
        }
        let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes < 1024 {
            return Err(config_error("--max-body-bytes", "must be at least 1024"));
        }
        let max_artifact_bytes = raw.max_artifact_bytes.unwrap_or(DEFAULT_MAX_ARTIFACT_BYTES);
        if max_artifact_bytes < 1024 {
            return Err(config_error(
                "--max-artifact-bytes",
                "must be at least 1024",
            ));
        }
        let heartbeat_interval_ms = raw
            .heartbeat_interval_ms
            .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL_MS);
        if !(100..=600_000).contains(&heartbeat_interval_ms) {
            return Err(config_error(
                "--heartbeat-interval-ms",
                "must be between 100 and 600000",
            ));
        }
        let reap_interval_ms = raw.reap_interval_ms.unwrap_or(DEFAULT_REAP_INTERVAL_MS);
        if !(10..=60_000).contains(&reap_interval_ms) {
            return Err(config_error(
                "--reap-interval-ms",
                "must be between 10 and 60000",
            ));
        }
        let retain_finished_jobs = parse_retention(
            raw.retain_finished_jobs
                .as_deref()
                .unwrap_or(DEFAULT_RETAIN_FINISHED_JOBS),
            &FINISHED_JOBS_RETENTION,
        )?;
        let retain_unused_artifacts = parse_retention(
            raw.retain_unused_artifacts
                .as_deref()
                .unwrap_or(DEFAULT_RETAIN_UNUSED_ARTIFACTS),
            &UNUSED_ARTIFACTS_RETENTION,
        )?;
        let artifact_quotas = ArtifactQuotas {
            runner_bytes: parse_quota(
                "--runner-artifact-quota-bytes",
                raw.runner_artifact_quota_bytes.as_deref(),
                DEFAULT_RUNNER_ARTIFACT_QUOTA_BYTES,
                parse_size,
                SIZE_EXAMPLE,
            )?,
            runner_count: parse_quota(
                "--runner-artifact-quota-count",
                raw.runner_artifact_quota_count.as_deref(),
                DEFAULT_RUNNER_ARTIFACT_QUOTA_COUNT,
                parse_count,
                COUNT_EXAMPLE,
            )?,
            total_bytes: parse_quota(
                "--artifact-quota-bytes",
                raw.artifact_quota_bytes.as_deref(),
                DEFAULT_ARTIFACT_QUOTA_BYTES,
                parse_size,
                SIZE_EXAMPLE,
            )?,
            total_count: parse_quota(
                "--artifact-quota-count",
                raw.artifact_quota_count.as_deref(),
                DEFAULT_ARTIFACT_QUOTA_COUNT,
                parse_count,
                COUNT_EXAMPLE,
            )?,
            disk_reserve: parse_disk_reserve(
                raw.disk_reserve.as_deref().unwrap_or(DEFAULT_DISK_RESERVE),
            )?,
        };
        let tls = match (raw.tls_certificate, raw.tls_private_key) {
            (None, None) => None,
            (Some(certificate), Some(private_key)) => Some(TlsFiles {
                certificate,
                private_key,
            }),
            (Some(_), None) => {
                return Err(config_error(
                    "--tls-key",
                    "required with --tls-cert: the private key of the certificate (PEM)",
                ));
            }
            (None, Some(_)) => {
                return Err(config_error(
                    "--tls-cert",
                    "required with --tls-key: the certificate chain to serve (PEM)",
                ));
            }
        };
        let connections = connection_limits(
            raw.header_read_timeout.as_deref(),
            raw.idle_timeout.as_deref(),
            raw.body_read_timeout.as_deref(),
            raw.body_min_rate,
            raw.max_connections,
        )?;
        let enrollment_gate = match raw.enrollment.as_deref().map(str::trim) {
            None => muster_core::EnrollmentGate::default(),
            Some(text) => muster_core::EnrollmentGate::parse(text).ok_or_else(|| {
                config_error(
                    "enrollment",
                    format!("'{text}' is not a gate; write allowlist, approval or closed"),
                )
            })?,
        };
        // At least 30 seconds, so a runner renewing at 75 % of the lifetime has a few seconds
        // of slack; at most a day, so a stolen token is not good for long.
        let runner_token_ttl = bounded_duration(
            "runner-token-ttl",
            raw.runner_token_ttl.as_deref(),
            "1h",
            Duration::from_secs(30),
            Duration::from_secs(86_400),
        )?;
        // Long enough for a working day, short enough that a forgotten browser signs itself out.
        let session_ttl = bounded_duration(
            "session-ttl",
            raw.session_ttl.as_deref(),
            "12h",
            Duration::from_secs(60),
            Duration::from_secs(30 * 86_400),
        )?;
        // Under the idle and age limits of common proxies and load balancers (minutes to an
        // hour), so none of them cuts a stream silently; at least a few seconds, for tests.
        let runner_stream_lifetime = bounded_duration(
            "stream-lifetime",
            raw.stream_lifetime.as_deref(),
            "30m",
            Duration::from_secs(2),
            Duration::from_secs(86_400),
        )?;
        Ok(ServerConfig {
            listen,
            data_dir,
            database,
            admin_token: raw.admin_token.map(|token| token.trim().to_string()),
            max_body_bytes,
            log_cap_bytes: raw.log_cap_bytes.unwrap_or(DEFAULT_LOG_CAP_BYTES),
            service: ServiceConfig {
                max_artifact_bytes,
                heartbeat_interval: Duration::from_millis(heartbeat_interval_ms),
                cancel_grace: Duration::from_secs(
                    raw.cancel_grace_s.unwrap_or(DEFAULT_CANCEL_GRACE_S),
                ),
                reap_interval: Duration::from_millis(reap_interval_ms),
                retain_finished_jobs,
                retain_unused_artifacts,
                artifact_quotas,
                auth_failure_limit: Some(
                    raw.auth_failure_limit.unwrap_or(DEFAULT_AUTH_FAILURE_LIMIT),
                )
                .filter(|limit| *limit > 0),
                enrollment_gate,
                runner_token_ttl,
                session_ttl,
                runner_stream_lifetime,
            },
            tls,
            connections,
        })
    }
}

/// A duration setting between `minimum` and `maximum`, `default` when not given.
fn bounded_duration(
    setting: &'static str,
    text: Option<&str>,
    default: &str,
    minimum: Duration,
    maximum: Duration,
) -> Result<Duration, ConfigError> {
    let text = text.unwrap_or(default).trim();
    let duration = humantime::parse_duration(text).map_err(|error| {
        config_error(
            setting,
            format!("'{text}' is not a duration ({error}); write e.g. {default}"),
        )
    })?;
    if duration < minimum || duration > maximum {
        return Err(config_error(
            setting,
            format!(
                "'{text}' is outside {} to {}",
                humantime::format_duration(minimum),
                humantime::format_duration(maximum)
            ),
        ));
    }
    Ok(duration)
}

fn connection_limits(
    header_read_timeout: Option<&str>,
    idle_timeout: Option<&str>,
    body_read_timeout: Option<&str>,
    body_min_rate: Option<u64>,
    max_connections: Option<usize>,
) -> Result<ConnectionLimits, ConfigError> {
    let second = Duration::from_secs(1);
    let hour = Duration::from_secs(3600);
    let header_read_timeout = bounded_duration(
        "--header-read-timeout",
        header_read_timeout,
        DEFAULT_HEADER_READ_TIMEOUT,
        second,
        Duration::from_secs(600),
    )?;
    let idle_timeout = bounded_duration(
        "--idle-timeout",
        idle_timeout,
        DEFAULT_IDLE_TIMEOUT,
        second,
        hour,
    )?;
    let body_read_timeout = bounded_duration(
        "--body-read-timeout",
        body_read_timeout,
        DEFAULT_BODY_READ_TIMEOUT,
        second,
        hour,
    )?;
    let body_min_rate = body_min_rate.unwrap_or(DEFAULT_BODY_MIN_RATE);
    if body_min_rate == 0 {
        return Err(config_error(
            "--body-min-rate",
            "must be at least 1 (bytes a second); without a minimum a body that never arrives would hold its connection forever",
        ));
    }
    let max_connections = max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if !(1..=1_000_000).contains(&max_connections) {
        return Err(config_error(
            "--max-connections",
            "must be between 1 and 1000000",
        ));
    }
    Ok(ConnectionLimits {
        header_read_timeout,
        idle_timeout,
        body_read_timeout,
        body_min_rate,
        max_connections,
    })
}

/// What one retention setting is called and allows.
struct RetentionSetting {
    flag: &'static str,
    minimum: Duration,
    minimum_text: &'static str,
    /// What `forever` keeps, for the error messages.
    kept: &'static str,
    example: &'static str,
}

const FINISHED_JOBS_RETENTION: RetentionSetting = RetentionSetting {
    flag: "--retain-finished-jobs",
    minimum: MINIMUM_RETAIN_FINISHED_JOBS,
    minimum_text: "1m",
    kept: "every job",
    example: "30d, 12h or 90m",
};

const UNUSED_ARTIFACTS_RETENTION: RetentionSetting = RetentionSetting {
    flag: "--retain-unused-artifacts",
    minimum: MINIMUM_RETAIN_UNUSED_ARTIFACTS,
    minimum_text: "1h",
    kept: "every artifact",
    example: "24h, 7d or 2h",
};

/// `30d`, `12h`, `1h 30m`, ... as a duration; `forever` or `0` as `None` (keep everything).
fn parse_retention(
    text: &str,
    setting: &RetentionSetting,
) -> Result<Option<Duration>, ConfigError> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("forever") || text == "0" {
        return Ok(None);
    }
    let retention = humantime::parse_duration(text).map_err(|error| {
        config_error(
            setting.flag,
            format!(
                "'{text}' is not a duration ({error}); write e.g. {}, or forever to keep {}",
                setting.example, setting.kept
            ),
        )
    })?;
    if retention < setting.minimum {
        return Err(config_error(
            setting.flag,
            format!(
                "'{text}' is shorter than the minimum of {}; write forever (or 0) to keep {}",
                setting.minimum_text, setting.kept
            ),
        ));
    }
    Ok(Some(retention))
}

/// A size: bytes, or a number with a unit (`500MB` is 500×1000², `10GiB` is 10×1024³; `1.5GiB`
/// works too, units in any case, a space allowed before them). `None` when it is not one.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|character: char| !(character.is_ascii_digit() || character == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return None,
    };
    scaled_decimal(number, multiplier)
}

/// `number` (digits, maybe with a fraction: `1.5`) times `multiplier`, rounded down; `None`
/// when it is not such a number or the product passes 64 bits.
fn scaled_decimal(number: &str, multiplier: u64) -> Option<u64> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |text: &str| text.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || number.ends_with('.') {
        return None;
    }
    let whole = whole.parse::<u64>().ok()?.checked_mul(multiplier)?;
    if fraction.is_empty() {
        return Some(whole);
    }
    // Digits past the eighteenth cannot change a count that fits in 64 bits.
    let fraction = &fraction[..fraction.len().min(18)];
    let scale = 10u128.pow(u32::try_from(fraction.len()).ok()?);
    let part = u128::from(fraction.parse::<u64>().ok()?) * u128::from(multiplier) / scale;
    whole.checked_add(u64::try_from(part).ok()?)
}

/// A whole number, `_` allowed between digits (`100_000`).
fn parse_count(text: &str) -> Option<u64> {
    let digits: String = text.trim().chars().filter(|c| *c != '_').collect();
    digits.parse().ok()
}

/// A quota setting, `given` or else `default`: `unlimited` (`None`) or what `parse` reads,
/// refused with `example` of what it takes.
fn parse_quota(
    flag: &'static str,
    given: Option<&str>,
    default: &str,
    parse: fn(&str) -> Option<u64>,
    example: &str,
) -> Result<Option<u64>, ConfigError> {
    let text = given.unwrap_or(default);
    if text.trim().eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    parse(text).map(Some).ok_or_else(|| {
        config_error(
            flag,
            format!("'{}' is not {example}, or unlimited", text.trim()),
        )
    })
}

const SIZE_EXAMPLE: &str = "a size; write e.g. 50GiB, 500MB or 1048576 (bytes)";
const COUNT_EXAMPLE: &str = "a number of artifacts; write e.g. 100000";

/// `5%`, `2.5%` (of the file system's size) or a size such as `20GiB`; `0` keeps no reserve.
fn parse_disk_reserve(text: &str) -> Result<DiskReserve, ConfigError> {
    let text = text.trim();
    let refused = || {
        config_error(
            "--disk-reserve",
            format!(
                "'{text}' is neither a share of the file system (5%, 2.5%, at most 100%) nor a size (20GiB, 500MB); write 0 to keep no reserve"
            ),
        )
    };
    match text.strip_suffix('%') {
        Some(share) => {
            let hundredths = scaled_decimal(share.trim(), 100).ok_or_else(refused)?;
            match u32::try_from(hundredths) {
                Ok(hundredths_of_percent) if hundredths_of_percent <= 10_000 => {
                    Ok(DiskReserve::Share {
                        hundredths_of_percent,
                    })
                }
                _ => Err(refused()),
            }
        }
        None => parse_size(text).map(DiskReserve::Bytes).ok_or_else(refused),
    }
}

fn resolve_listen(text: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    let text = text.trim().trim_start_matches("http://");
    text.to_socket_addrs()
        .map_err(|error| config_error("--listen", format!("'{text}' is not HOST:PORT: {error}")))?
        .next()
        .ok_or_else(|| config_error("--listen", format!("'{text}' resolves to no address")))
}

#[cfg(test)]
mod tests {
    use super::{ArtifactQuotas, DiskReserve, RawServerConfig, ServerConfig, parse_size};
    use std::time::Duration;

    fn retention(text: Option<&str>) -> Result<Option<Duration>, String> {
        ServerConfig::from_raw(RawServerConfig {
            retain_finished_jobs: text.map(str::to_string),
            ..RawServerConfig::default()
        })
        .map(|config| config.service.retain_finished_jobs)
        .map_err(|error| error.to_string())
    }

    #[test]
    fn retention_defaults_to_thirty_days_and_reads_durations() {
        let day = Duration::from_secs(86_400);
        assert_eq!(retention(None), Ok(Some(30 * day)));
        assert_eq!(retention(Some("7d")), Ok(Some(7 * day)));
        assert_eq!(
            retention(Some(" 12h ")),
            Ok(Some(Duration::from_secs(12 * 3600)))
        );
        assert_eq!(
            retention(Some("1h 30m")),
            Ok(Some(Duration::from_secs(5400)))
        );
        assert_eq!(retention(Some("1m")), Ok(Some(Duration::from_secs(60))));
    }

    #[test]
    fn forever_or_zero_keeps_every_job() {
        assert_eq!(retention(Some("forever")), Ok(None));
        assert_eq!(retention(Some("Forever")), Ok(None));
        assert_eq!(retention(Some("0")), Ok(None));
    }

    #[test]
    fn retention_that_is_not_a_duration_or_too_short_is_refused_with_the_flag_named() {
        for text in ["thirty days", "30", "-1d", ""] {
            let error = retention(Some(text)).expect_err(text);
            assert!(
                error.starts_with("--retain-finished-jobs:") && error.contains("forever"),
                "{text:?}: {error}"
            );
        }
        let error = retention(Some("30s")).expect_err("too short");
        assert!(error.contains("minimum of 1m"), "{error}");
    }

    fn artifact_retention(text: Option<&str>) -> Result<Option<Duration>, String> {
        ServerConfig::from_raw(RawServerConfig {
            retain_unused_artifacts: text.map(str::to_string),
            ..RawServerConfig::default()
        })
        .map(|config| config.service.retain_unused_artifacts)
        .map_err(|error| error.to_string())
    }

    #[test]
    fn unused_artifacts_are_kept_a_day_by_default_at_least_an_hour_or_forever() {
        let hour = Duration::from_secs(3600);
        assert_eq!(artifact_retention(None), Ok(Some(24 * hour)));
        assert_eq!(artifact_retention(Some("7d")), Ok(Some(7 * 24 * hour)));
        assert_eq!(artifact_retention(Some("1h")), Ok(Some(hour)));
        assert_eq!(artifact_retention(Some("forever")), Ok(None));
        assert_eq!(artifact_retention(Some("0")), Ok(None));
        let error = artifact_retention(Some("30m")).expect_err("too short");
        assert!(
            error.starts_with("--retain-unused-artifacts:")
                && error.contains("minimum of 1h")
                && error.contains("every artifact"),
            "{error}"
        );
        let error = artifact_retention(Some("a while")).expect_err("not a duration");
        assert!(error.starts_with("--retain-unused-artifacts:"), "{error}");
    }

    #[test]
    fn sizes_read_bytes_and_decimal_and_binary_units() {
        assert_eq!(parse_size("1048576"), Some(1_048_576));
        assert_eq!(parse_size("500MB"), Some(500_000_000));
        assert_eq!(parse_size("10GiB"), Some(10 << 30));
        assert_eq!(parse_size(" 10 gib "), Some(10 << 30));
        assert_eq!(parse_size("1.5KiB"), Some(1536));
        assert_eq!(parse_size("64kib"), Some(65_536));
        assert_eq!(parse_size("2TB"), Some(2_000_000_000_000));
        assert_eq!(parse_size("0"), Some(0));
        for bad in [
            "",
            "GiB",
            "-1",
            "1.",
            ".5GiB",
            "1.2.3MB",
            "10 apples",
            "99999999999TiB",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    fn quotas(adjust: impl FnOnce(&mut RawServerConfig)) -> Result<ArtifactQuotas, String> {
        let mut raw = RawServerConfig::default();
        adjust(&mut raw);
        ServerConfig::from_raw(raw)
            .map(|config| config.service.artifact_quotas)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn runner_tokens_live_an_hour_by_default_between_thirty_seconds_and_a_day() {
        let ttl = |text: Option<&str>| {
            let raw = RawServerConfig {
                runner_token_ttl: text.map(str::to_string),
                ..RawServerConfig::default()
            };
            ServerConfig::from_raw(raw)
                .map(|config| config.service.runner_token_ttl)
                .map_err(|error| error.to_string())
        };
        assert_eq!(ttl(None), Ok(Duration::from_secs(3600)));
        assert_eq!(ttl(Some("30s")), Ok(Duration::from_secs(30)));
        assert_eq!(ttl(Some("24h")), Ok(Duration::from_secs(86_400)));
        for text in ["29s", "25h", "soon"] {
            let error = ttl(Some(text)).expect_err(text);
            assert!(error.contains("runner-token-ttl"), "{text}: {error}");
        }
    }

    #[test]
    fn artifact_quotas_default_to_a_per_runner_bound_and_a_five_percent_reserve() {
        assert_eq!(
            quotas(|_| {}),
            Ok(ArtifactQuotas {
                runner_bytes: Some(50 << 30),
                runner_count: Some(100_000),
                total_bytes: None,
                total_count: None,
                disk_reserve: DiskReserve::Share {
                    hundredths_of_percent: 500
                },
            })
        );
    }

    #[test]
    fn artifact_quotas_read_sizes_counts_unlimited_and_shares_or_sizes_of_reserve() {
        let read = quotas(|raw| {
            raw.runner_artifact_quota_bytes = Some("unlimited".into());
            raw.runner_artifact_quota_count = Some("1_000".into());
            raw.artifact_quota_bytes = Some("2 TiB".into());
            raw.artifact_quota_count = Some("Unlimited".into());
            raw.disk_reserve = Some("2.5%".into());
        })
        .expect("valid settings");
        assert_eq!(read.runner_bytes, None);
        assert_eq!(read.runner_count, Some(1_000));
        assert_eq!(read.total_bytes, Some(2 << 40));
        assert_eq!(read.total_count, None);
        assert_eq!(
            read.disk_reserve,
            DiskReserve::Share {
                hundredths_of_percent: 250
            }
        );
        assert_eq!(read.disk_reserve.to_string(), "2.5%");
        assert_eq!(read.disk_reserve.bytes_of(1_000_000), 25_000);
        let absolute = quotas(|raw| raw.disk_reserve = Some("20GiB".into())).expect("a size");
        assert_eq!(absolute.disk_reserve, DiskReserve::Bytes(20 << 30));
        assert_eq!(absolute.disk_reserve.bytes_of(1), 20 << 30);
        let none = quotas(|raw| raw.disk_reserve = Some("0".into())).expect("no reserve");
        assert_eq!(none.disk_reserve.bytes_of(u64::MAX), 0);
        let all = quotas(|raw| raw.disk_reserve = Some("100%".into())).expect("everything");
        assert_eq!(all.disk_reserve.bytes_of(123_456), 123_456);
    }

    #[test]
    fn bad_artifact_quotas_are_refused_with_the_flag_named() {
        type Adjust = fn(&mut RawServerConfig);
        let cases: [(Adjust, &str); 5] = [
            (
                |raw| raw.runner_artifact_quota_bytes = Some("lots".into()),
                "--runner-artifact-quota-bytes:",
            ),
            (
                |raw| raw.runner_artifact_quota_count = Some("1.5".into()),
                "--runner-artifact-quota-count:",
            ),
            (
                |raw| raw.artifact_quota_bytes = Some("-5GiB".into()),
                "--artifact-quota-bytes:",
            ),
            (
                |raw| raw.artifact_quota_count = Some("10k".into()),
                "--artifact-quota-count:",
            ),
            (
                |raw| raw.disk_reserve = Some("101%".into()),
                "--disk-reserve:",
            ),
        ];
        for (adjust, flag) in cases {
            let error = quotas(adjust).expect_err(flag);
            assert!(error.starts_with(flag), "{error}");
        }
        let error = quotas(|raw| raw.disk_reserve = Some("unlimited".into())).expect_err("no");
        assert!(error.starts_with("--disk-reserve:"), "{error}");
    }

    fn auth_failure_limit(given: Option<u32>) -> Option<u32> {
        ServerConfig::from_raw(RawServerConfig {
            auth_failure_limit: given,
            ..RawServerConfig::default()
        })
        .map(|config| config.service.auth_failure_limit)
        .expect("any limit is valid")
    }

    #[test]
    fn auth_failures_are_throttled_at_a_hundred_a_minute_unless_zero_turns_it_off() {
        assert_eq!(auth_failure_limit(None), Some(100));
        assert_eq!(auth_failure_limit(Some(5)), Some(5));
        assert_eq!(auth_failure_limit(Some(0)), None);
    }
}
