//! Artifact upload quotas: how much a runner, and everyone together, may make the coordinator
//! store (bytes and number of artifacts), and the room uploads leave free on the file system of
//! a local artifact directory (`--disk-reserve`).
//!
//! What is stored comes from the store's running totals of artifact records (see
//! [`muster_store::Store::artifact_usage`]): a runner is charged what its uploads stored anew,
//! while it stays stored, on every coordinator sharing the store. Uploads in progress are not in
//! the store yet, so each coordinator also counts its own here, in [`UploadsInFlight`]: an upload
//! reserves the bytes its `Content-Length` announces (or, without one, the bytes as they arrive,
//! a little ahead) before they reach the artifact store, and is refused as soon as a reservation
//! would pass a limit; so nothing past a quota is ever written, and uploads of one runner
//! running at once cannot together pass its quota. Uploads in progress on *other* coordinators
//! are not seen: on PostgreSQL, uploads running at once through several coordinators can pass a
//! quota by what each was allowed when it started (documented in `docs/configuration.md`).
//!
//! An upload's own reservation ends when it does. One that stored new bytes is then counted as
//! *settled* until no upload that started before it is still running: those read the store's
//! totals before these bytes were recorded, and add what settled since they started.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use muster_core::RunnerId;
use muster_store::ArtifactUploader;

use crate::Coordinator;
use crate::ServiceError;
use crate::config::DiskReserve;

/// Without a `Content-Length`, an upload reserves this much ahead of the bytes it has received,
/// so a gigabyte does not take the lock for every network chunk.
const RESERVE_AHEAD: u64 = 1024 * 1024;

/// A limit one upload would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quota {
    RunnerBytes,
    RunnerCount,
    TotalBytes,
    TotalCount,
}

impl Quota {
    pub(crate) fn flag(self) -> &'static str {
        match self {
            Quota::RunnerBytes => "--runner-artifact-quota-bytes",
            Quota::RunnerCount => "--runner-artifact-quota-count",
            Quota::TotalBytes => "--artifact-quota-bytes",
            Quota::TotalCount => "--artifact-quota-count",
        }
    }
}

/// Why an upload is refused; nothing of it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QuotaRefusal {
    Quota {
        quota: Quota,
        runner: Option<RunnerId>,
        /// Bytes or artifacts stored, or reserved by uploads in progress here.
        used: u64,
        limit: u64,
    },
    /// The artifact directory's file system would keep less than `--disk-reserve` free.
    DiskReserve {
        available: u64,
        /// Bytes uploads in progress here (this one included) may still write.
        in_flight: u64,
        reserve: u64,
        setting: DiskReserve,
    },
}

impl QuotaRefusal {
    /// The `reason` label of `muster_artifact_uploads_refused_total`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            QuotaRefusal::Quota { quota, .. } => match quota {
                Quota::RunnerBytes => "runner_bytes",
                Quota::RunnerCount => "runner_count",
                Quota::TotalBytes => "total_bytes",
                Quota::TotalCount => "total_count",
            },
            QuotaRefusal::DiskReserve { .. } => "disk_reserve",
        }
    }

    /// What the caller is told: which limit, how much is used, the limit, and what sets it.
    pub(crate) fn message(&self) -> String {
        const AFTER: &str = "nothing was stored. Artifacts stay charged until they are collected: \
             once no job names them and nobody used them for --retain-unused-artifacts";
        match *self {
            QuotaRefusal::Quota {
                quota,
                runner,
                used,
                limit,
            } => {
                let whose = match runner {
                    Some(runner) => format!("runner {runner}'s artifact quota is used up"),
                    None => "the artifact quota of all artifacts together is used up".into(),
                };
                let flag = quota.flag();
                let (used, limit) = match quota {
                    Quota::RunnerBytes | Quota::TotalBytes => {
                        (describe_bytes(used), describe_bytes(limit))
                    }
                    Quota::RunnerCount | Quota::TotalCount => {
                        (format!("{used} artifacts"), format!("{limit} artifacts"))
                    }
                };
                format!(
                    "{whose}: {used} already stored or being uploaded, and this upload would pass the limit of {limit} ({flag}); {AFTER}"
                )
            }
            QuotaRefusal::DiskReserve {
                available,
                in_flight,
                reserve,
                setting,
            } => format!(
                "insufficient storage: the file system holding the artifacts has {} free ({} of it promised to uploads in progress), and this upload would leave less than the reserve of {} ({setting}, --disk-reserve); nothing was stored",
                describe_bytes(available),
                describe_bytes(in_flight),
                describe_bytes(reserve),
            ),
        }
    }
}

/// `1610612736 bytes (1.5 GiB)`: exact for a script, readable for a person.
fn describe_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{bytes} bytes ({value:.1} {})", UNITS[unit])
}

/// Whose uploads one tally counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TallyKey {
    All,
    Runner(RunnerId),
}

/// This coordinator's uploads in progress for one key, and what they stored since the oldest of
/// them started.
#[derive(Debug, Default)]
struct Tally {
    uploads: u64,
    reserved_bytes: u64,
    settled_bytes: u64,
    settled_count: u64,
}

/// The uploads in progress in this coordinator, per runner and all together.
#[derive(Debug, Default)]
pub(crate) struct UploadsInFlight {
    tallies: Mutex<HashMap<TallyKey, Tally>>,
}

impl UploadsInFlight {
    fn tallies(&self) -> std::sync::MutexGuard<'_, HashMap<TallyKey, Tally>> {
        // A panic elsewhere while holding the lock leaves counts, not broken invariants.
        self.tallies.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One byte limit an upload is held to: `baseline` (the store's total when it started) plus
/// what settled here since, plus what uploads in progress here reserved, stays within `limit`.
#[derive(Debug, Clone, Copy)]
struct ByteLimit {
    key: TallyKey,
    baseline: u64,
    settled_at_start: u64,
    limit: u64,
    refusal: ByteRefusal,
}

#[derive(Debug, Clone, Copy)]
enum ByteRefusal {
    Quota(Quota, Option<RunnerId>),
    DiskReserve {
        available: u64,
        reserve: u64,
        setting: DiskReserve,
    },
}

impl ByteLimit {
    /// Bytes this limit counts as used now.
    fn used(&self, tallies: &HashMap<TallyKey, Tally>) -> u64 {
        let tally = tallies.get(&self.key);
        let settled = tally.map_or(0, |tally| tally.settled_bytes);
        let reserved = tally.map_or(0, |tally| tally.reserved_bytes);
        self.baseline
            .saturating_add(settled.saturating_sub(self.settled_at_start))
            .saturating_add(reserved)
    }

    fn refuse(&self, used: u64) -> QuotaRefusal {
        match self.refusal {
            ByteRefusal::Quota(quota, runner) => QuotaRefusal::Quota {
                quota,
                runner,
                used,
                limit: self.limit,
            },
            ByteRefusal::DiskReserve {
                available,
                reserve,
                setting,
            } => QuotaRefusal::DiskReserve {
                available,
                in_flight: used,
                reserve,
                setting,
            },
        }
    }
}

/// One count limit: `stored` (the store's count when the upload started) plus what settled here
/// since, plus every other upload in progress here, stays below `limit` for one more.
#[derive(Debug, Clone, Copy)]
struct CountLimit {
    key: TallyKey,
    stored: u64,
    limit: u64,
    quota: Quota,
    runner: Option<RunnerId>,
}

/// What one tally had settled when an upload joined it.
#[derive(Debug, Clone, Copy)]
struct Joined {
    key: TallyKey,
    settled_bytes: u64,
    settled_count: u64,
}

/// One upload's standing with the quotas, from before its first byte is read until it ends.
/// Dropped without [`Admission::finish`], it stored nothing.
pub(crate) struct Admission {
    uploads: Arc<UploadsInFlight>,
    joined: Vec<Joined>,
    limits: Vec<ByteLimit>,
    reserved: u64,
    received: u64,
    refusal: Option<QuotaRefusal>,
    finished: bool,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("reserved", &self.reserved)
            .field("received", &self.received)
            .field("refusal", &self.refusal)
            .finish_non_exhaustive()
    }
}

/// Let an upload by `uploader` announcing `declared` bytes (when it did) begin, or refuse it
/// with the quota it would pass. Reads the store's totals and, for a local artifact directory,
/// its free space; reserves `declared` bytes.
pub(crate) async fn admit(
    coordinator: &Coordinator,
    uploader: ArtifactUploader,
    declared: Option<u64>,
) -> Result<Admission, ServiceError> {
    let quotas = coordinator.config.artifact_quotas;
    let runner = uploader.runner();
    let mut admission = Admission::join(&coordinator.uploads_in_flight, runner);
    // Read after joining: an upload settling meanwhile is then either in what the store
    // answers or in what settled since, never in neither.
    let runner_limited =
        runner.is_some() && (quotas.runner_bytes.is_some() || quotas.runner_count.is_some());
    let usage = if runner_limited || quotas.total_bytes.is_some() || quotas.total_count.is_some() {
        coordinator.store.artifact_usage(runner).await?
    } else {
        muster_store::ArtifactUsageReport::default()
    };
    let space = if quotas.disk_reserve.is_zero() {
        None
    } else {
        coordinator.blobs.storage_space().await?
    };

    let mut counts = Vec::new();
    if let Some(runner) = runner {
        let key = TallyKey::Runner(runner);
        if let Some(limit) = quotas.runner_bytes {
            admission.limit_bytes(
                key,
                usage.runner.bytes,
                limit,
                ByteRefusal::Quota(Quota::RunnerBytes, Some(runner)),
            );
        }
        if let Some(limit) = quotas.runner_count {
            counts.push(CountLimit {
                key,
                stored: usage.runner.count,
                limit,
                quota: Quota::RunnerCount,
                runner: Some(runner),
            });
        }
    }
    if let Some(limit) = quotas.total_bytes {
        admission.limit_bytes(
            TallyKey::All,
            usage.all.bytes,
            limit,
            ByteRefusal::Quota(Quota::TotalBytes, None),
        );
    }
    if let Some(limit) = quotas.total_count {
        counts.push(CountLimit {
            key: TallyKey::All,
            stored: usage.all.count,
            limit,
            quota: Quota::TotalCount,
            runner: None,
        });
    }
    if let Some(space) = space {
        // Bytes uploads in progress here have already written are both in their reservations
        // and missing from the free space measured: counted twice, which errs on the side of
        // the reserve.
        let reserve = quotas.disk_reserve.bytes_of(space.total);
        admission.limit_bytes(
            TallyKey::All,
            0,
            space.available.saturating_sub(reserve),
            ByteRefusal::DiskReserve {
                available: space.available,
                reserve,
                setting: quotas.disk_reserve,
            },
        );
    }
    match admission.check_and_reserve(&counts, declared.unwrap_or(0)) {
        Some(refusal) => {
            coordinator
                .metrics
                .record_artifact_upload_refused(refusal.reason());
            Err(ServiceError::from(refusal))
        }
        None => Ok(admission),
    }
}

impl Admission {
    /// Count an upload by `runner` (none for a user) in progress, before anything is read.
    fn join(uploads: &Arc<UploadsInFlight>, runner: Option<RunnerId>) -> Admission {
        let mut keys = vec![TallyKey::All];
        keys.extend(runner.map(TallyKey::Runner));
        let mut tallies = uploads.tallies();
        let joined = keys
            .into_iter()
            .map(|key| {
                let tally = tallies.entry(key).or_default();
                tally.uploads += 1;
                Joined {
                    key,
                    settled_bytes: tally.settled_bytes,
                    settled_count: tally.settled_count,
                }
            })
            .collect();
        Admission {
            uploads: Arc::clone(uploads),
            joined,
            limits: Vec::new(),
            reserved: 0,
            received: 0,
            refusal: None,
            finished: false,
        }
    }

    fn joined(&self, key: TallyKey) -> Option<Joined> {
        self.joined.iter().find(|joined| joined.key == key).copied()
    }

    fn limit_bytes(&mut self, key: TallyKey, baseline: u64, limit: u64, refusal: ByteRefusal) {
        let settled_at_start = self.joined(key).map_or(0, |joined| joined.settled_bytes);
        self.limits.push(ByteLimit {
            key,
            baseline,
            settled_at_start,
            limit,
            refusal,
        });
    }

    /// The first limit this upload may not start under: already reached, or passed by the
    /// `wanted` bytes announced. Otherwise reserves those and answers `None`.
    fn check_and_reserve(&mut self, counts: &[CountLimit], wanted: u64) -> Option<QuotaRefusal> {
        let uploads = Arc::clone(&self.uploads);
        let mut tallies = uploads.tallies();
        for count in counts {
            let tally = tallies.get(&count.key);
            let settled = tally.map_or(0, |tally| tally.settled_count);
            let settled_at_start = self
                .joined(count.key)
                .map_or(0, |joined| joined.settled_count);
            // Every other upload in progress may store a new artifact.
            let others = tally.map_or(0, |tally| tally.uploads.saturating_sub(1));
            let used = count
                .stored
                .saturating_add(settled.saturating_sub(settled_at_start))
                .saturating_add(others);
            if used >= count.limit {
                return Some(QuotaRefusal::Quota {
                    quota: count.quota,
                    runner: count.runner,
                    used,
                    limit: count.limit,
                });
            }
        }
        for limit in &self.limits {
            let used = limit.used(&tallies);
            if used >= limit.limit || used.saturating_add(wanted) > limit.limit {
                return Some(limit.refuse(used));
            }
        }
        self.reserve(&mut tallies, wanted);
        None
    }

    fn reserve(&mut self, tallies: &mut HashMap<TallyKey, Tally>, bytes: u64) {
        if bytes == 0 {
            return;
        }
        for joined in &self.joined {
            let tally = tallies.entry(joined.key).or_default();
            tally.reserved_bytes = tally.reserved_bytes.saturating_add(bytes);
        }
        self.reserved = self.reserved.saturating_add(bytes);
    }

    /// Count `bytes` more received, before they go to the artifact store: refused (and the
    /// refusal kept for [`Admission::refusal`]) when their reservation would pass a limit. Once
    /// refused, later bytes pass uncounted: they are only being drained.
    pub(crate) fn receive(&mut self, bytes: u64) -> Result<(), QuotaRefusal> {
        if self.refusal.is_some() || self.finished {
            return Ok(());
        }
        self.received = self.received.saturating_add(bytes);
        if self.received <= self.reserved {
            return Ok(());
        }
        let needed = self.received - self.reserved;
        let uploads = Arc::clone(&self.uploads);
        let mut tallies = uploads.tallies();
        let mut room = u64::MAX;
        for limit in &self.limits {
            let used = limit.used(&tallies);
            let left = limit.limit.saturating_sub(used);
            if left < needed {
                // Told what was there besides this upload, which is what the caller can act on.
                let refusal = limit.refuse(used.saturating_sub(self.reserved));
                self.refusal = Some(refusal.clone());
                return Err(refusal);
            }
            room = room.min(left);
        }
        self.reserve(&mut tallies, needed.max(RESERVE_AHEAD).min(room));
        Ok(())
    }

    /// The quota the upload was refused by while streaming, if it was.
    pub(crate) fn refusal(&self) -> Option<QuotaRefusal> {
        self.refusal.clone()
    }

    /// The upload ended: its reservation goes, and `stored_anew` (the size of bytes it stored
    /// that were not stored before, now recorded in the store) settles.
    pub(crate) fn finish(&mut self, stored_anew: Option<u64>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let uploads = Arc::clone(&self.uploads);
        let mut tallies = uploads.tallies();
        for joined in &self.joined {
            let Some(tally) = tallies.get_mut(&joined.key) else {
                continue;
            };
            tally.uploads = tally.uploads.saturating_sub(1);
            tally.reserved_bytes = tally.reserved_bytes.saturating_sub(self.reserved);
            if let Some(size) = stored_anew {
                tally.settled_bytes = tally.settled_bytes.saturating_add(size);
                tally.settled_count = tally.settled_count.saturating_add(1);
            }
            // No upload that could have read the store before these settled is left.
            if tally.uploads == 0 {
                tallies.remove(&joined.key);
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.finish(None);
    }
}

impl From<QuotaRefusal> for ServiceError {
    fn from(refusal: QuotaRefusal) -> ServiceError {
        let code = match refusal {
            QuotaRefusal::Quota { .. } => muster_core::ErrorCode::ArtifactQuotaExceeded,
            QuotaRefusal::DiskReserve { .. } => muster_core::ErrorCode::InsufficientStorage,
        };
        ServiceError::new(code, refusal.message())
    }
}
