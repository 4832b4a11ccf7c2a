//! [`PostgresBlobStore`]: artifacts as rows in PostgreSQL, so every coordinator sharing the
//! database serves every artifact.
//!
//! Layout: an artifact is a run of `blob_chunks` rows of at most [`CHUNK_SIZE`] bytes, keyed by
//! the id of the upload that wrote them; `blobs` names, for each artifact id, its size and the
//! upload whose chunks hold it. An upload first registers itself in `blob_uploads`, then writes
//! each chunk in its own short statement (one transaction spanning a slow upload would hold back
//! vacuum for the whole database, the job queue included), and finally, in one short transaction,
//! removes its `blob_uploads` row and either inserts the `blobs` row or, when the same bytes are
//! already stored, deletes its own chunks. Readers look only at `blobs`, so they see a whole
//! artifact or none of it.
//!
//! An upload that fails or is abandoned deletes its chunks at once; one whose process died is
//! swept once its `blob_uploads` row has not been touched for [`STALE_UPLOAD_AGE`] (every chunk
//! written touches it), at open and then at most every [`SWEEP_INTERVAL`] during uploads.
//! A chunk is only ever written while its upload's row exists (the write and the touch are one
//! statement), and a discard or sweep removes that row before the chunks, so no chunk can slip in
//! after the cleanup.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use deadpool_postgres::Pool;
use futures::StreamExt;
use muster_core::ArtifactId;
use sha2::{Digest, Sha256};

use super::{BlobError, BlobReader, BlobStore, ByteStream, KEEP_GRANULARITY, StoredBlob};

/// The most bytes one row holds, and so the most bytes of an artifact in memory at once (plus
/// one incoming chunk) on the way in or out.
const CHUNK_SIZE: usize = 1024 * 1024;
/// A staged upload untouched for this long belongs to a process that died mid-upload: a live
/// upload touches its row with every chunk it writes.
const STALE_UPLOAD_AGE: Duration = Duration::from_secs(3600);
/// How often uploads look for stale ones to sweep.
const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// The blob store's tables, as numbered migrations of the `blobs` component. Applied in order,
/// each once; never edit one that has shipped.
const BLOB_MIGRATIONS: &[&str] = &[
    r#"
-- Uploads in progress; a row disappears when its upload is published or discarded.
CREATE TABLE blob_uploads (
    upload_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    touched_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The bytes, by the upload that wrote them. Stored out of line without compression: artifacts
-- are mostly compressed already, and trying again costs CPU on every chunk.
CREATE TABLE blob_chunks (
    upload_id BIGINT NOT NULL,
    chunk_index INTEGER NOT NULL,
    bytes BYTEA NOT NULL,
    PRIMARY KEY (upload_id, chunk_index)
);
ALTER TABLE blob_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;

-- The stored artifacts: what readers see. The id is the SHA-256 digest of the bytes.
CREATE TABLE blobs (
    id BYTEA PRIMARY KEY,
    size BIGINT NOT NULL,
    chunk_count INTEGER NOT NULL,
    upload_id BIGINT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
"#,
    // 2: when each artifact was last stored or kept, for the collection of unused ones. Artifacts
    // stored before this count as used now.
    r#"
ALTER TABLE blobs ADD COLUMN touched_at TIMESTAMPTZ NOT NULL DEFAULT now();
"#,
];

/// Artifacts in PostgreSQL. Any number of coordinators may share the database: uploads never
/// share chunks, and publishing an artifact is one transaction.
#[derive(Clone)]
pub struct PostgresBlobStore {
    pool: Pool,
    /// When uploads last swept stale ones, in seconds since the Unix epoch.
    last_sweep: Arc<AtomicU64>,
}

impl std::fmt::Debug for PostgresBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBlobStore").finish_non_exhaustive()
    }
}

impl PostgresBlobStore {
    /// The most bytes one `blob_chunks` row holds.
    pub const CHUNK_SIZE: usize = CHUNK_SIZE;

    /// A store on `pool`'s database: applies the blob tables' missing migrations, then removes
    /// uploads left by crashed processes (best effort, logged).
    pub async fn open(pool: Pool) -> Result<PostgresBlobStore, BlobError> {
        let mut client = pool.get().await.map_err(pool_unavailable)?;
        crate::postgres::migrate_component(&mut client, "blobs", BLOB_MIGRATIONS)
            .await
            .map_err(|error| BlobError::Unavailable(format!("migrate the blob tables: {error}")))?;
        drop(client);
        let store = PostgresBlobStore {
            pool,
            last_sweep: Arc::new(AtomicU64::new(0)),
        };
        store.sweep_if_due().await;
        Ok(store)
    }

    /// Sweep stale uploads unless that was done less than [`SWEEP_INTERVAL`] ago.
    async fn sweep_if_due(&self) {
        let now = unix_seconds();
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP_INTERVAL.as_secs()
            // Only the caller that moves the mark sweeps; the others go on with their upload.
            || self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        match sweep_stale_uploads(&self.pool).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "removed uploads abandoned by a crashed process"),
            Err(error) => {
                tracing::warn!(%error, "cannot sweep abandoned uploads; they stay for now")
            }
        }
    }

    /// Hash and write `body` as chunks of `upload`; answers the digest, size and chunk count.
    async fn stage(
        &self,
        upload: &StagedUpload,
        body: &mut ByteStream,
        max_bytes: u64,
    ) -> Result<([u8; 32], u64, i32), BlobError> {
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut chunk_count: i32 = 0;
        let mut buffer = BytesMut::with_capacity(CHUNK_SIZE);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| BlobError::Upload(error.to_string()))?;
            size = size.saturating_add(chunk.len() as u64);
            if size > max_bytes {
                return Err(BlobError::TooLarge { limit: max_bytes });
            }
            hasher.update(&chunk);
            buffer.extend_from_slice(&chunk);
            while buffer.len() >= CHUNK_SIZE {
                let full = buffer.split_to(CHUNK_SIZE).freeze();
                upload.write_chunk(chunk_count, &full).await?;
                chunk_count = next_chunk_index(chunk_count)?;
            }
        }
        if !buffer.is_empty() {
            upload.write_chunk(chunk_count, &buffer.freeze()).await?;
            chunk_count = next_chunk_index(chunk_count)?;
        }
        Ok((hasher.finalize().into(), size, chunk_count))
    }
}

fn next_chunk_index(index: i32) -> Result<i32, BlobError> {
    index
        .checked_add(1)
        .ok_or_else(|| BlobError::Unavailable("the artifact has too many chunks".into()))
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn pool_unavailable(error: deadpool_postgres::PoolError) -> BlobError {
    BlobError::Unavailable(format!("connect to PostgreSQL: {error}"))
}

fn unavailable(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> BlobError {
    move |error| BlobError::Unavailable(format!("{what}: {error}"))
}

/// Remove the uploads untouched for [`STALE_UPLOAD_AGE`] and their chunks; answers how many.
async fn sweep_stale_uploads(pool: &Pool) -> Result<usize, BlobError> {
    let mut client = pool.get().await.map_err(pool_unavailable)?;
    let transaction = client
        .transaction()
        .await
        .map_err(unavailable("begin a sweep of abandoned uploads"))?;
    let stale: Vec<i64> = transaction
        .query(
            "DELETE FROM blob_uploads WHERE touched_at < now() - make_interval(secs => $1) \
             RETURNING upload_id",
            &[&STALE_UPLOAD_AGE.as_secs_f64()],
        )
        .await
        .map_err(unavailable("remove abandoned uploads"))?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(unavailable("read abandoned uploads"))?;
    if !stale.is_empty() {
        transaction
            .execute(
                "DELETE FROM blob_chunks WHERE upload_id = ANY($1)",
                &[&stale],
            )
            .await
            .map_err(unavailable("remove the chunks of abandoned uploads"))?;
    }
    transaction
        .commit()
        .await
        .map_err(unavailable("commit a sweep of abandoned uploads"))?;
    Ok(stale.len())
}

/// Remove an unpublished upload and its chunks. Its row goes first, in its own statement: a
/// chunk write racing with this either finished before (and its chunk is deleted next) or finds
/// the row gone and writes nothing. Chunks a published artifact uses are never touched, in case
/// the upload was published after all (its commit's answer lost with the connection).
async fn discard_upload(pool: &Pool, upload_id: i64) -> Result<(), BlobError> {
    let client = pool.get().await.map_err(pool_unavailable)?;
    client
        .execute(
            "DELETE FROM blob_uploads WHERE upload_id = $1",
            &[&upload_id],
        )
        .await
        .map_err(unavailable("remove an abandoned upload"))?;
    client
        .execute(
            "DELETE FROM blob_chunks WHERE upload_id = $1 \
             AND NOT EXISTS (SELECT 1 FROM blobs WHERE blobs.upload_id = $1)",
            &[&upload_id],
        )
        .await
        .map_err(unavailable("remove the chunks of an abandoned upload"))?;
    Ok(())
}

/// An upload in progress that removes itself unless it was published: whichever way an upload
/// ends early (an error, the limit, the caller's future dropped because the client went away),
/// no chunk stays.
struct StagedUpload {
    pool: Pool,
    upload_id: i64,
    /// Published or discarded already: nothing left for Drop to do.
    settled: bool,
}

impl StagedUpload {
    async fn begin(pool: &Pool) -> Result<StagedUpload, BlobError> {
        let client = pool.get().await.map_err(pool_unavailable)?;
        let row = client
            .query_one(
                "INSERT INTO blob_uploads DEFAULT VALUES RETURNING upload_id",
                &[],
            )
            .await
            .map_err(unavailable("register an upload"))?;
        let upload_id = row
            .try_get(0)
            .map_err(unavailable("read the new upload's id"))?;
        Ok(StagedUpload {
            pool: pool.clone(),
            upload_id,
            settled: false,
        })
    }

    /// Write one chunk, touching the upload's row in the same statement so the sweep sees it
    /// alive, and refusing when the row is gone (swept or discarded).
    async fn write_chunk(&self, chunk_index: i32, bytes: &Bytes) -> Result<(), BlobError> {
        let client = self.pool.get().await.map_err(pool_unavailable)?;
        let statement = client
            .prepare_cached(
                "WITH touched AS (UPDATE blob_uploads SET touched_at = now() \
                     WHERE upload_id = $1 RETURNING upload_id) \
                 INSERT INTO blob_chunks (upload_id, chunk_index, bytes) \
                 SELECT upload_id, $2, $3 FROM touched",
            )
            .await
            .map_err(unavailable("prepare a chunk write"))?;
        let written = client
            .execute(
                &statement,
                &[&self.upload_id, &chunk_index, &bytes.as_ref()],
            )
            .await
            .map_err(unavailable("write a chunk"))?;
        if written == 0 {
            return Err(BlobError::Unavailable(
                "the upload was removed while in progress (untouched for too long)".into(),
            ));
        }
        Ok(())
    }

    /// Make the staged chunks the artifact `digest`, or drop them when it is already stored.
    /// Answers whether this upload created it.
    async fn publish(
        &mut self,
        digest: &[u8; 32],
        size: u64,
        chunk_count: i32,
    ) -> Result<bool, BlobError> {
        let size = i64::try_from(size)
            .map_err(|_| BlobError::Unavailable("the artifact is too large to record".into()))?;
        let mut client = self.pool.get().await.map_err(pool_unavailable)?;
        let transaction = client
            .transaction()
            .await
            .map_err(unavailable("begin publishing an upload"))?;
        let removed = transaction
            .execute(
                "DELETE FROM blob_uploads WHERE upload_id = $1",
                &[&self.upload_id],
            )
            .await
            .map_err(unavailable("close an upload"))?;
        if removed == 0 {
            return Err(BlobError::Unavailable(
                "the upload was removed before it finished (untouched for too long)".into(),
            ));
        }
        // Stored already: the existing row is marked used, as storing it anew would have, and
        // keeps its chunks. One statement, so a collection deleting that row meanwhile makes
        // this an insert instead.
        let owner: i64 = transaction
            .query_one(
                "INSERT INTO blobs (id, size, chunk_count, upload_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET touched_at = now() RETURNING upload_id",
                &[&digest.as_slice(), &size, &chunk_count, &self.upload_id],
            )
            .await
            .map_err(unavailable("record an artifact"))?
            .try_get(0)
            .map_err(unavailable("read a recorded artifact"))?;
        let created = owner == self.upload_id;
        if !created {
            // The same bytes are already stored under another upload's chunks; keep those,
            // they may be being read right now.
            transaction
                .execute(
                    "DELETE FROM blob_chunks WHERE upload_id = $1",
                    &[&self.upload_id],
                )
                .await
                .map_err(unavailable("remove the chunks of a duplicate upload"))?;
        }
        transaction
            .commit()
            .await
            .map_err(unavailable("commit an artifact"))?;
        self.settled = true;
        Ok(created)
    }

    /// Remove the upload now (rather than when dropped), so the caller answers only once it is
    /// gone.
    async fn discard(mut self) {
        self.settled = true;
        if let Err(error) = discard_upload(&self.pool, self.upload_id).await {
            tracing::warn!(%error, upload = self.upload_id, "cannot remove an abandoned upload; the sweep will");
        }
    }
}

impl Drop for StagedUpload {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Runs when an upload's future is dropped mid-way; a destructor cannot wait for the
        // database, so the removal runs on its own, and the sweep catches it if it cannot.
        let pool = self.pool.clone();
        let upload_id = self.upload_id;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(error) = discard_upload(&pool, upload_id).await {
                        tracing::warn!(%error, upload = upload_id, "cannot remove an abandoned upload; the sweep will");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(
                    upload = upload_id,
                    "an upload was abandoned outside a runtime; the sweep will remove it"
                );
            }
        }
    }
}

/// The artifact's chunks, fetched one at a time as the reader asks for them; a fresh pooled
/// connection each, so a slow download holds no connection between chunks.
struct ChunkReader {
    pool: Pool,
    id: ArtifactId,
    upload_id: i64,
    chunk_count: i32,
    next_index: i32,
    size: u64,
    delivered: u64,
}

impl ChunkReader {
    async fn next_chunk(mut self) -> Result<Option<(Bytes, ChunkReader)>, std::io::Error> {
        if self.next_index >= self.chunk_count {
            if self.delivered != self.size {
                return Err(std::io::Error::other(format!(
                    "artifact {} holds {} bytes, not the {} recorded",
                    self.id, self.delivered, self.size
                )));
            }
            return Ok(None);
        }
        let client =
            self.pool.get().await.map_err(|error| {
                std::io::Error::other(format!("connect to PostgreSQL: {error}"))
            })?;
        let statement = client
            .prepare_cached(
                "SELECT bytes FROM blob_chunks WHERE upload_id = $1 AND chunk_index = $2",
            )
            .await
            .map_err(|error| std::io::Error::other(format!("prepare a chunk read: {error}")))?;
        let row = client
            .query_opt(&statement, &[&self.upload_id, &self.next_index])
            .await
            .map_err(|error| std::io::Error::other(format!("read a chunk: {error}")))?
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "chunk {} of artifact {} is missing",
                    self.next_index, self.id
                ))
            })?;
        let bytes: Vec<u8> = row
            .try_get(0)
            .map_err(|error| std::io::Error::other(format!("read a chunk: {error}")))?;
        self.next_index += 1;
        self.delivered = self.delivered.saturating_add(bytes.len() as u64);
        Ok(Some((Bytes::from(bytes), self)))
    }
}

#[async_trait]
impl BlobStore for PostgresBlobStore {
    async fn put(&self, body: &mut ByteStream, max_bytes: u64) -> Result<StoredBlob, BlobError> {
        self.sweep_if_due().await;
        let mut upload = StagedUpload::begin(&self.pool).await?;
        let (digest, size, chunk_count) = match self.stage(&upload, body, max_bytes).await {
            Ok(staged) => staged,
            Err(error) => {
                upload.discard().await;
                return Err(error);
            }
        };
        let created = match upload.publish(&digest, size, chunk_count).await {
            Ok(created) => created,
            Err(error) => {
                upload.discard().await;
                return Err(error);
            }
        };
        Ok(StoredBlob {
            id: ArtifactId::from_digest(digest),
            size,
            created,
        })
    }

    async fn open(&self, id: &ArtifactId) -> Result<BlobReader, BlobError> {
        let client = self.pool.get().await.map_err(pool_unavailable)?;
        let Some(row) = client
            .query_opt(
                "SELECT size, chunk_count, upload_id FROM blobs WHERE id = $1",
                &[&id.digest().as_slice()],
            )
            .await
            .map_err(unavailable("look up an artifact"))?
        else {
            return Err(BlobError::NotFound(*id));
        };
        let size: i64 = row.try_get(0).map_err(unavailable("read an artifact"))?;
        let chunk_count: i32 = row.try_get(1).map_err(unavailable("read an artifact"))?;
        let upload_id: i64 = row.try_get(2).map_err(unavailable("read an artifact"))?;
        let size = u64::try_from(size).map_err(|_| {
            BlobError::Unavailable(format!("artifact {id} has a negative recorded size"))
        })?;
        let reader = ChunkReader {
            pool: self.pool.clone(),
            id: *id,
            upload_id,
            chunk_count,
            next_index: 0,
            size,
            delivered: 0,
        };
        Ok(BlobReader {
            size,
            stream: Box::pin(futures::stream::try_unfold(reader, ChunkReader::next_chunk)),
        })
    }

    async fn exists(&self, id: &ArtifactId) -> Result<bool, BlobError> {
        let client = self.pool.get().await.map_err(pool_unavailable)?;
        let row = client
            .query_opt(
                "SELECT 1 FROM blobs WHERE id = $1",
                &[&id.digest().as_slice()],
            )
            .await
            .map_err(unavailable("look up an artifact"))?;
        Ok(row.is_some())
    }

    async fn keep(&self, id: &ArtifactId) -> Result<bool, BlobError> {
        let client = self.pool.get().await.map_err(pool_unavailable)?;
        let used_lately: Option<bool> = client
            .query_opt(
                "SELECT touched_at >= now() - make_interval(secs => $2) FROM blobs WHERE id = $1",
                &[&id.digest().as_slice(), &KEEP_GRANULARITY.as_secs_f64()],
            )
            .await
            .map_err(unavailable("look up an artifact"))?
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(unavailable("read an artifact"))?;
        match used_lately {
            None => Ok(false),
            Some(true) => Ok(true),
            // Waits for a collection deleting the row, and then finds nothing.
            Some(false) => {
                let marked = client
                    .execute(
                        "UPDATE blobs SET touched_at = now() WHERE id = $1",
                        &[&id.digest().as_slice()],
                    )
                    .await
                    .map_err(unavailable("mark an artifact used"))?;
                Ok(marked == 1)
            }
        }
    }

    async fn unused_for(&self, unused_for: Duration) -> Result<Vec<ArtifactId>, BlobError> {
        let client = self.pool.get().await.map_err(pool_unavailable)?;
        let rows = client
            .query(
                "SELECT id FROM blobs WHERE touched_at < now() - make_interval(secs => $1)",
                &[&unused_for.as_secs_f64()],
            )
            .await
            .map_err(unavailable("list unused artifacts"))?;
        rows.iter()
            .map(|row| {
                let digest: Vec<u8> = row.try_get(0).map_err(unavailable("read an artifact"))?;
                let digest: [u8; 32] = digest.try_into().map_err(|_| {
                    BlobError::Unavailable("an artifact id in the database is not 32 bytes".into())
                })?;
                Ok(ArtifactId::from_digest(digest))
            })
            .collect()
    }

    async fn delete_unused(
        &self,
        id: &ArtifactId,
        unused_for: Duration,
    ) -> Result<Option<u64>, BlobError> {
        let mut client = self.pool.get().await.map_err(pool_unavailable)?;
        let transaction = client
            .transaction()
            .await
            .map_err(unavailable("begin deleting an artifact"))?;
        // The condition is checked again on the locked row: a keep committed first wins.
        let Some(row) = transaction
            .query_opt(
                "DELETE FROM blobs WHERE id = $1 \
                 AND touched_at < now() - make_interval(secs => $2) RETURNING upload_id, size",
                &[&id.digest().as_slice(), &unused_for.as_secs_f64()],
            )
            .await
            .map_err(unavailable("delete an artifact"))?
        else {
            return Ok(None);
        };
        let upload_id: i64 = row
            .try_get(0)
            .map_err(unavailable("read a deleted artifact"))?;
        let size: i64 = row
            .try_get(1)
            .map_err(unavailable("read a deleted artifact"))?;
        transaction
            .execute(
                "DELETE FROM blob_chunks WHERE upload_id = $1",
                &[&upload_id],
            )
            .await
            .map_err(unavailable("delete an artifact's chunks"))?;
        transaction
            .commit()
            .await
            .map_err(unavailable("commit deleting an artifact"))?;
        Ok(Some(u64::try_from(size).unwrap_or(0)))
    }
}
