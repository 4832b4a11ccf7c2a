//! Content-addressed artifact bytes, behind [`BlobStore`].
//!
//! Artifacts are files a job reads or produces: often far larger than anything the database
//! holds, and immutable once written. They live outside the database, named by the SHA-256 of
//! their bytes ([`ArtifactId`]), so storing the same bytes twice stores them once and any reader
//! can check what it got. The database only records which artifacts a job names.
//!
//! [`LocalBlobStore`] keeps them in a directory; [`PostgresBlobStore`] in PostgreSQL, for
//! coordinators that share a database and must serve each other's artifacts. The trait is shaped
//! so an object store (S3 and compatible, through the `object_store` crate) can implement it too:
//! `put` streams to a temporary object while hashing and moves it under its id once complete;
//! `open` streams it back; nothing needs the whole artifact in memory.
//!
//! Artifacts no job names are collected once unused for a while (`--retain-unused-artifacts`,
//! run by the coordinator's retention task). Every store records when an artifact was last
//! stored or *kept*: a caller about to name an artifact on a job calls [`BlobStore::keep`]
//! instead of [`BlobStore::exists`], which both answers whether it is stored and marks it used.
//! The collector lists artifacts unused for the retention, then reads which artifacts jobs name,
//! then deletes each listed one that no job names with [`BlobStore::delete_unused`], which checks
//! "unused" again atomically with the deletion. So an artifact named by a job written after
//! that read was kept just before, and survives; one deleted before the keep is reported as not
//! stored, and the job is refused. No job can end up naming deleted bytes.

mod local;
mod postgres;

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use muster_core::ArtifactId;

pub use local::LocalBlobStore;
pub use postgres::PostgresBlobStore;

/// Bytes arriving (an upload) or leaving (a download) in chunks.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static>>;

/// An artifact just stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBlob {
    pub id: ArtifactId,
    pub size: u64,
    /// False when the same bytes were already stored (nothing new was written).
    pub created: bool,
}

/// An artifact being read: its size, known before the first byte, and its bytes.
pub struct BlobReader {
    pub size: u64,
    pub stream: ByteStream,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Room on the file system a store writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageSpace {
    /// Bytes an unprivileged process may still write.
    pub available: u64,
    /// The file system's size.
    pub total: u64,
}

/// Why a blob operation did not do what was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    #[error("artifact {0} not found")]
    NotFound(ArtifactId),
    /// The upload passed `limit` bytes; nothing was stored.
    #[error("the artifact is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The upload's byte stream failed (the sender went away, the body was malformed); nothing
    /// was stored.
    #[error("the upload broke off: {0}")]
    Upload(String),
    /// The storage cannot be read or written (disk full, I/O error, permissions).
    #[error("artifact storage unavailable: {0}")]
    Unavailable(String),
}

/// Where artifact bytes live. Every method is all or nothing: a failed or abandoned `put`
/// (including one whose future is dropped half-way) leaves nothing behind, and an artifact is
/// visible to `open` and `exists` only once all of it is durable.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Store the bytes `body` yields until it ends, refusing with [`BlobError::TooLarge`] as
    /// soon as they pass `max_bytes`. Answers their id (SHA-256) and size once they are durable.
    /// `body` is borrowed so a caller can still drain what the store did not read.
    async fn put(&self, body: &mut ByteStream, max_bytes: u64) -> Result<StoredBlob, BlobError>;

    /// Read an artifact; [`BlobError::NotFound`] when it is not stored.
    async fn open(&self, id: &ArtifactId) -> Result<BlobReader, BlobError>;

    /// Whether the artifact is stored; does not count as a use.
    async fn exists(&self, id: &ArtifactId) -> Result<bool, BlobError>;

    /// Whether the artifact is stored, marking it used now when it is, so the collector leaves
    /// it for at least its retention. Call it before naming an artifact on a job. The mark may
    /// be skipped when the artifact was used less than [`KEEP_GRANULARITY`] ago, so a retention
    /// must be longer than that.
    async fn keep(&self, id: &ArtifactId) -> Result<bool, BlobError>;

    /// The artifacts neither stored nor kept within the last `unused_for`: the candidates for
    /// collection. Nothing is deleted.
    async fn unused_for(&self, unused_for: Duration) -> Result<Vec<ArtifactId>, BlobError>;

    /// Room left on the file system the bytes are written to, when this store writes to one
    /// (a local directory); `None` where that is watched elsewhere (a database, an object store).
    async fn storage_space(&self) -> Result<Option<StorageSpace>, BlobError> {
        Ok(None)
    }

    /// Delete the artifact unless it was stored or kept within the last `unused_for`, checked
    /// atomically with the deletion. Answers the bytes freed, `None` when it stays or was not
    /// stored. A download of it already under way may break off.
    async fn delete_unused(
        &self,
        id: &ArtifactId,
        unused_for: Duration,
    ) -> Result<Option<u64>, BlobError>;
}

/// How stale an artifact's last-used mark may be before [`BlobStore::keep`] writes it again:
/// jobs naming the same input thousands of times a second should not write its mark each time.
pub const KEEP_GRANULARITY: Duration = Duration::from_secs(600);
