//! The blob stores: content addressing, the size limit, and that no way an upload can end early
//! leaves anything behind. The local store's tests look at its files; the PostgreSQL store's
//! (in `postgres`, on a real server) count its rows.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use futures::StreamExt;
use muster_core::ArtifactId;
use muster_store::blobs::{BlobError, BlobStore, ByteStream, LocalBlobStore};
use sha2::{Digest, Sha256};

fn id_of(bytes: &[u8]) -> ArtifactId {
    ArtifactId::from_digest(Sha256::digest(bytes).into())
}

/// `bytes` as a stream of chunks of `chunk` bytes.
fn chunked(bytes: &[u8], chunk: usize) -> ByteStream {
    let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(chunk.max(1))
        .map(|part| Ok(Bytes::copy_from_slice(part)))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

/// Every file under `root`, recursively.
fn files_under(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        let entries = match std::fs::read_dir(&directory) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error).context(format!("list {}", directory.display())),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    Ok(files)
}

async fn read_all(store: &dyn BlobStore, id: &ArtifactId) -> anyhow::Result<(u64, Vec<u8>)> {
    let mut reader = store.open(id).await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = reader.stream.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    Ok((reader.size, bytes))
}

fn pattern(length: usize) -> Vec<u8> {
    (0..length).map(|index| (index * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn an_artifact_is_stored_under_the_sha256_of_its_bytes_and_read_back() -> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let store = LocalBlobStore::new(directory.path());
    let bytes = pattern(300_000);
    let stored = store.put(&mut chunked(&bytes, 7_000), 1 << 20).await?;
    ensure!(stored.id == id_of(&bytes));
    ensure!(stored.size == bytes.len() as u64 && stored.created);
    ensure!(store.exists(&stored.id).await?);
    let (size, read) = read_all(&store, &stored.id).await?;
    ensure!(
        size == bytes.len() as u64 && read == bytes,
        "the bytes come back unchanged"
    );

    let empty = store.put(&mut chunked(&[], 1), 10).await?;
    ensure!(
        empty.id == id_of(&[]) && empty.size == 0,
        "an empty artifact is an artifact"
    );
    ensure!(read_all(&store, &empty.id).await? == (0, Vec::new()));
    Ok(())
}

#[tokio::test]
async fn the_same_bytes_are_stored_once() -> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let store = LocalBlobStore::new(directory.path());
    let bytes = pattern(50_000);
    let first = store.put(&mut chunked(&bytes, 4_096), 1 << 20).await?;
    // Chunked differently: the id depends on the bytes alone.
    let second = store.put(&mut chunked(&bytes, 999), 1 << 20).await?;
    ensure!(first.id == second.id && first.size == second.size);
    ensure!(
        first.created && !second.created,
        "the second upload found the first"
    );
    let files = files_under(directory.path())?;
    ensure!(files.len() == 1, "one file for one content, got {files:?}");
    ensure!(
        files[0].ends_with(&first.id.hex()[2..]),
        "the file is named by its hash: {files:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_upload_past_the_limit_is_refused_and_leaves_no_file() -> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let store = LocalBlobStore::new(directory.path());
    let bytes = pattern(10_001);
    match store.put(&mut chunked(&bytes, 1_000), 10_000).await {
        Err(BlobError::TooLarge { limit: 10_000 }) => {}
        other => bail!("expected TooLarge, got {other:?}"),
    }
    ensure!(
        files_under(directory.path())?.is_empty(),
        "nothing stays, not even the upload file: {:?}",
        files_under(directory.path())?
    );
    ensure!(!store.exists(&id_of(&bytes)).await?);
    let at_limit = store
        .put(&mut chunked(&bytes[..10_000], 1_000), 10_000)
        .await?;
    ensure!(at_limit.size == 10_000, "exactly the limit is allowed");
    Ok(())
}

#[tokio::test]
async fn an_upload_whose_stream_fails_leaves_no_file() -> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let store = LocalBlobStore::new(directory.path());
    let parts: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from(pattern(5_000))),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ];
    let mut body: ByteStream = Box::pin(futures::stream::iter(parts));
    match store.put(&mut body, 1 << 20).await {
        Err(BlobError::Upload(message)) => {
            ensure!(message.contains("client went away"), "{message}")
        }
        other => bail!("expected Upload, got {other:?}"),
    }
    ensure!(files_under(directory.path())?.is_empty());
    Ok(())
}

#[tokio::test]
async fn an_upload_abandoned_half_way_leaves_no_file() -> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let store = LocalBlobStore::new(directory.path());
    // One chunk, then nothing ever again: the upload waits until its future is dropped, as
    // when a client disconnects and the server drops the request.
    let first = futures::stream::iter(vec![Ok(Bytes::from(pattern(2 << 20)))]);
    let mut body: ByteStream = Box::pin(first.chain(futures::stream::pending()));
    let put = store.put(&mut body, 1 << 30);
    ensure!(
        tokio::time::timeout(Duration::from_millis(300), put)
            .await
            .is_err(),
        "the upload cannot finish"
    );
    ensure!(
        files_under(directory.path())?.is_empty(),
        "dropping the upload removes its file: {:?}",
        files_under(directory.path())?
    );
    Ok(())
}

#[tokio::test]
async fn unknown_artifacts_are_not_found() -> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let store = LocalBlobStore::new(directory.path());
    let unknown = id_of(b"never stored");
    ensure!(!store.exists(&unknown).await?);
    match store.open(&unknown).await {
        Err(BlobError::NotFound(id)) if id == unknown => Ok(()),
        other => bail!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn upload_files_left_by_a_crash_are_removed_on_start() -> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let uploads = directory.path().join("uploads");
    std::fs::create_dir_all(&uploads)?;
    let stale = uploads.join("upload-1-2-3");
    let fresh = uploads.join("upload-4-5-6");
    std::fs::write(&stale, b"half an upload")?;
    std::fs::write(&fresh, b"an upload in progress elsewhere")?;
    std::fs::File::options()
        .write(true)
        .open(&stale)?
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 3600))?;
    let _store = LocalBlobStore::new(directory.path());
    ensure!(!stale.exists(), "an upload untouched for hours is gone");
    ensure!(
        fresh.exists(),
        "an upload written just now may be live; it stays"
    );
    Ok(())
}

/// The file holding `id` in a local store rooted at `root`.
fn content_file(root: &Path, id: &ArtifactId) -> PathBuf {
    let hex = id.hex();
    root.join("sha256").join(&hex[..2]).join(&hex[2..])
}

/// Make the artifact look last used `age` ago.
fn age_file(root: &Path, id: &ArtifactId, age: Duration) -> anyhow::Result<()> {
    std::fs::File::open(content_file(root, id))?.set_modified(SystemTime::now() - age)?;
    Ok(())
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn artifacts_unused_for_the_retention_are_listed_and_deleted_unless_kept_meanwhile()
-> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let root = directory.path();
    let store = LocalBlobStore::new(root);
    let kept = store.put(&mut chunked(b"kept", 2), 100).await?;
    let unused = store
        .put(&mut chunked(&pattern(5_000), 1_000), 1 << 20)
        .await?;
    let fresh = store.put(&mut chunked(b"fresh", 2), 100).await?;
    ensure!(
        store.unused_for(HOUR).await?.is_empty(),
        "nothing stored just now is unused"
    );
    age_file(root, &kept.id, 2 * HOUR)?;
    age_file(root, &unused.id, 2 * HOUR)?;

    let mut listed = store.unused_for(HOUR).await?;
    listed.sort_by_key(ArtifactId::hex);
    let mut expected = vec![kept.id, unused.id];
    expected.sort_by_key(ArtifactId::hex);
    ensure!(listed == expected, "the two aged artifacts: {listed:?}");

    // A job names it between the listing and the deletion.
    ensure!(store.keep(&kept.id).await?, "keep finds a stored artifact");
    ensure!(
        store.delete_unused(&kept.id, HOUR).await?.is_none(),
        "an artifact kept after the listing stays"
    );
    ensure!(read_all(&store, &kept.id).await?.1 == b"kept");
    ensure!(
        store.delete_unused(&unused.id, HOUR).await? == Some(5_000),
        "the unused one is deleted, freeing its bytes"
    );
    ensure!(!store.exists(&unused.id).await? && !store.keep(&unused.id).await?);
    ensure!(matches!(
        store.open(&unused.id).await,
        Err(BlobError::NotFound(_))
    ));
    ensure!(
        store.delete_unused(&unused.id, HOUR).await?.is_none(),
        "deleting twice is harmless"
    );
    ensure!(store.delete_unused(&fresh.id, HOUR).await?.is_none());
    ensure!(store.unused_for(HOUR).await?.is_empty());
    let mut left: Vec<_> = files_under(root)?;
    left.sort();
    let mut expected = vec![content_file(root, &kept.id), content_file(root, &fresh.id)];
    expected.sort();
    ensure!(left == expected, "no other file stays: {left:?}");
    Ok(())
}

#[tokio::test]
async fn storing_the_same_bytes_again_counts_as_a_use() -> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let store = LocalBlobStore::new(directory.path());
    let first = store.put(&mut chunked(b"again", 2), 100).await?;
    age_file(directory.path(), &first.id, 2 * HOUR)?;
    ensure!(store.unused_for(HOUR).await? == vec![first.id]);
    let second = store.put(&mut chunked(b"again", 3), 100).await?;
    ensure!(!second.created);
    ensure!(
        store.unused_for(HOUR).await?.is_empty(),
        "uploaded again just now"
    );
    Ok(())
}

#[tokio::test]
async fn an_artifact_a_crashed_collection_set_aside_is_put_back_on_start() -> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let root = directory.path();
    let store = LocalBlobStore::new(root);
    let stored = store.put(&mut chunked(b"set aside", 4), 100).await?;
    // What a collection does first; a crash before it decides leaves this.
    let set_aside = root.join("collecting").join(stored.id.hex());
    std::fs::create_dir_all(root.join("collecting"))?;
    std::fs::rename(content_file(root, &stored.id), &set_aside)?;
    ensure!(!store.exists(&stored.id).await?);

    let restarted = LocalBlobStore::new(root);
    ensure!(
        !set_aside.exists(),
        "the file left the collection directory"
    );
    ensure!(read_all(&restarted, &stored.id).await?.1 == b"set aside");
    Ok(())
}

#[tokio::test]
async fn the_local_store_reports_the_room_on_its_file_system_before_and_after_its_first_upload()
-> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    // Not made yet: the room is that of the file system it will be made on.
    let store = LocalBlobStore::new(directory.path().join("not").join("yet"));
    let before = store
        .storage_space()
        .await?
        .context("a local store measures its file system")?;
    ensure!(
        before.total > 0 && before.available <= before.total,
        "{before:?}"
    );
    store
        .put(&mut chunked(&pattern(10_000), 1_000), 1 << 20)
        .await?;
    let after = store
        .storage_space()
        .await?
        .context("measured again once its directory exists")?;
    ensure!(
        after.total == before.total,
        "the same file system: {before:?} then {after:?}"
    );
    Ok(())
}

mod postgres {
    use std::time::Duration;

    use anyhow::{Context, bail, ensure};
    use bytes::Bytes;
    use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
    use futures::StreamExt;
    use muster_core::ArtifactId;
    use muster_store::blobs::{BlobError, BlobStore, ByteStream, PostgresBlobStore};

    use super::{chunked, id_of, pattern, read_all};

    const MIB: usize = PostgresBlobStore::CHUNK_SIZE;

    fn pool_for(url: &str) -> anyhow::Result<Pool> {
        let config: tokio_postgres::Config = url.parse().context("parse the database URL")?;
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(4)
            .build()
            .context("build a connection pool")
    }

    /// A blob store on a fresh database of the shared test cluster, and that database's URL.
    async fn fresh_store() -> anyhow::Result<(String, Pool, PostgresBlobStore)> {
        let url = muster_test_support::temp_postgres_database().await?;
        let pool = pool_for(&url)?;
        let store = PostgresBlobStore::open(pool.clone())
            .await
            .context("open a PostgreSQL blob store")?;
        Ok((url, pool, store))
    }

    /// Rows in (blob_chunks, blob_uploads, blobs).
    async fn row_counts(pool: &Pool) -> anyhow::Result<(i64, i64, i64)> {
        let client = pool.get().await.context("connect to count rows")?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM blob_chunks), (SELECT count(*) FROM blob_uploads), \
                 (SELECT count(*) FROM blobs)",
                &[],
            )
            .await
            .context("count the blob rows")?;
        Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
    }

    #[tokio::test]
    async fn an_artifact_is_stored_in_chunks_and_read_back_through_another_coordinator()
    -> anyhow::Result<()> {
        let (url, pool, store) = fresh_store().await?;
        let bytes = pattern(2 * MIB + MIB / 2 + 123);
        let stored = store.put(&mut chunked(&bytes, 7_000), 1 << 30).await?;
        ensure!(stored.id == id_of(&bytes));
        ensure!(stored.size == bytes.len() as u64 && stored.created);
        ensure!(
            row_counts(&pool).await? == (3, 0, 1),
            "three chunks of at most 1 MiB, no upload left open: {:?}",
            row_counts(&pool).await?
        );

        // A second coordinator: its own pool on the same database.
        let other = PostgresBlobStore::open(pool_for(&url)?).await?;
        ensure!(other.exists(&stored.id).await?);
        let mut reader = other.open(&stored.id).await?;
        ensure!(reader.size == bytes.len() as u64);
        let mut chunk_sizes = Vec::new();
        let mut read = Vec::new();
        while let Some(chunk) = reader.stream.next().await {
            let chunk = chunk?;
            chunk_sizes.push(chunk.len());
            read.extend_from_slice(&chunk);
        }
        ensure!(read == bytes, "the bytes come back unchanged");
        ensure!(
            chunk_sizes.iter().all(|size| *size <= MIB) && chunk_sizes.len() == 3,
            "the download streams chunk by chunk: {chunk_sizes:?}"
        );

        let empty = store.put(&mut chunked(&[], 1), 10).await?;
        ensure!(
            empty.id == id_of(&[]) && empty.size == 0,
            "an empty artifact is an artifact"
        );
        ensure!(read_all(&other, &empty.id).await? == (0, Vec::new()));
        Ok(())
    }

    #[tokio::test]
    async fn the_same_bytes_are_stored_once() -> anyhow::Result<()> {
        let (_url, pool, store) = fresh_store().await?;
        let bytes = pattern(MIB + 50_000);
        let first = store.put(&mut chunked(&bytes, 4_096), 1 << 30).await?;
        let second = store.put(&mut chunked(&bytes, 999_999), 1 << 30).await?;
        ensure!(first.id == second.id && first.size == second.size);
        ensure!(
            first.created && !second.created,
            "the second upload found the first"
        );
        ensure!(
            row_counts(&pool).await? == (2, 0, 1),
            "one copy of the chunks: {:?}",
            row_counts(&pool).await?
        );
        ensure!(read_all(&store, &first.id).await?.1 == bytes);
        Ok(())
    }

    #[tokio::test]
    async fn concurrent_uploads_of_the_same_bytes_store_them_once() -> anyhow::Result<()> {
        let (_url, pool, store) = fresh_store().await?;
        let bytes = pattern(MIB + 1);
        let uploads = (0..4).map(|_| {
            let store = store.clone();
            let bytes = bytes.clone();
            tokio::spawn(async move { store.put(&mut chunked(&bytes, 65_536), 1 << 30).await })
        });
        let mut created = 0;
        for upload in futures::future::join_all(uploads).await {
            let stored = upload.context("join an upload")??;
            ensure!(stored.id == id_of(&bytes));
            created += usize::from(stored.created);
        }
        ensure!(
            created == 1,
            "exactly one upload created the artifact, not {created}"
        );
        ensure!(
            row_counts(&pool).await? == (2, 0, 1),
            "{:?}",
            row_counts(&pool).await?
        );
        ensure!(read_all(&store, &id_of(&bytes)).await?.1 == bytes);
        Ok(())
    }

    #[tokio::test]
    async fn an_upload_past_the_limit_is_refused_and_leaves_no_rows() -> anyhow::Result<()> {
        let (_url, pool, store) = fresh_store().await?;
        // Past two full chunks, so some were written before the limit passed.
        let limit = 2 * MIB as u64 + 10;
        let bytes = pattern(2 * MIB + 11);
        match store.put(&mut chunked(&bytes, 100_000), limit).await {
            Err(BlobError::TooLarge { limit: refused }) if refused == limit => {}
            other => bail!("expected TooLarge, got {other:?}"),
        }
        ensure!(
            row_counts(&pool).await? == (0, 0, 0),
            "nothing stays, not even the staged chunks: {:?}",
            row_counts(&pool).await?
        );
        ensure!(!store.exists(&id_of(&bytes)).await?);
        let at_limit = store
            .put(&mut chunked(&bytes[..bytes.len() - 1], 100_000), limit)
            .await?;
        ensure!(at_limit.size == limit, "exactly the limit is allowed");
        Ok(())
    }

    #[tokio::test]
    async fn an_upload_whose_stream_fails_half_way_leaves_no_rows() -> anyhow::Result<()> {
        let (_url, pool, store) = fresh_store().await?;
        let parts: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from(pattern(MIB + MIB / 2))),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "client went away",
            )),
        ];
        let mut body: ByteStream = Box::pin(futures::stream::iter(parts));
        match store.put(&mut body, 1 << 30).await {
            Err(BlobError::Upload(message)) => {
                ensure!(message.contains("client went away"), "{message}")
            }
            other => bail!("expected Upload, got {other:?}"),
        }
        ensure!(
            row_counts(&pool).await? == (0, 0, 0),
            "{:?}",
            row_counts(&pool).await?
        );
        Ok(())
    }

    #[tokio::test]
    async fn an_upload_abandoned_half_way_leaves_no_rows() -> anyhow::Result<()> {
        let (_url, pool, store) = fresh_store().await?;
        let first = futures::stream::iter(vec![Ok(Bytes::from(pattern(2 * MIB)))]);
        let mut body: ByteStream = Box::pin(first.chain(futures::stream::pending()));
        let put = store.put(&mut body, 1 << 30);
        ensure!(
            tokio::time::timeout(Duration::from_millis(500), put)
                .await
                .is_err(),
            "the upload cannot finish"
        );
        // The removal runs on its own once the upload is dropped; give it a moment.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let counts = row_counts(&pool).await?;
            if counts == (0, 0, 0) {
                return Ok(());
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "dropping the upload removes its rows; still there: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn the_database_store_leaves_its_room_to_the_database() -> anyhow::Result<()> {
        let (_url, _pool, store) = fresh_store().await?;
        ensure!(store.storage_space().await?.is_none());
        Ok(())
    }

    #[tokio::test]
    async fn unknown_artifacts_are_not_found() -> anyhow::Result<()> {
        let (_url, _pool, store) = fresh_store().await?;
        let unknown = id_of(b"never stored");
        ensure!(!store.exists(&unknown).await?);
        match store.open(&unknown).await {
            Err(BlobError::NotFound(id)) if id == unknown => Ok(()),
            other => bail!("expected NotFound, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn uploads_left_by_a_crash_are_removed_on_open() -> anyhow::Result<()> {
        let (url, pool, _store) = fresh_store().await?;
        let client = pool.get().await.context("connect")?;
        // Two uploads a crashed coordinator left: one untouched for hours, one written just now.
        let stale: i64 = client
            .query_one(
                "INSERT INTO blob_uploads (started_at, touched_at) \
                 VALUES (now() - interval '3 hours', now() - interval '2 hours') RETURNING upload_id",
                &[],
            )
            .await
            .context("stage a stale upload")?
            .try_get(0)?;
        let fresh: i64 = client
            .query_one(
                "INSERT INTO blob_uploads DEFAULT VALUES RETURNING upload_id",
                &[],
            )
            .await
            .context("stage a fresh upload")?
            .try_get(0)?;
        for upload in [stale, fresh] {
            client
                .execute(
                    "INSERT INTO blob_chunks (upload_id, chunk_index, bytes) VALUES ($1, 0, $2)",
                    &[&upload, &b"half an upload".as_slice()],
                )
                .await
                .context("stage a chunk")?;
        }
        drop(client);

        let _restarted = PostgresBlobStore::open(pool_for(&url)?).await?;
        let client = pool.get().await.context("connect")?;
        let uploads: Vec<i64> = client
            .query("SELECT upload_id FROM blob_uploads", &[])
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        let chunk_owners: Vec<i64> = client
            .query("SELECT upload_id FROM blob_chunks", &[])
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        ensure!(
            uploads == vec![fresh] && chunk_owners == vec![fresh],
            "the upload untouched for hours is gone, the live one stays: uploads {uploads:?}, chunks {chunk_owners:?}"
        );
        Ok(())
    }

    /// Make the artifact look last used `age` ago.
    async fn age_row(pool: &Pool, id: &ArtifactId, age: Duration) -> anyhow::Result<()> {
        let client = pool.get().await.context("connect to age an artifact")?;
        let aged = client
            .execute(
                "UPDATE blobs SET touched_at = now() - make_interval(secs => $2) WHERE id = $1",
                &[&id.digest().as_slice(), &age.as_secs_f64()],
            )
            .await
            .context("age an artifact")?;
        ensure!(aged == 1, "no artifact {id} to age");
        Ok(())
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn artifacts_unused_for_the_retention_are_listed_and_deleted_unless_kept_meanwhile()
    -> anyhow::Result<()> {
        let (url, pool, store) = fresh_store().await?;
        let kept = store.put(&mut chunked(b"kept", 2), 100).await?;
        let unused_bytes = pattern(MIB + 5);
        let unused = store
            .put(&mut chunked(&unused_bytes, 100_000), 1 << 30)
            .await?;
        let fresh = store.put(&mut chunked(b"fresh", 2), 100).await?;
        ensure!(store.unused_for(HOUR).await?.is_empty());
        age_row(&pool, &kept.id, 2 * HOUR).await?;
        age_row(&pool, &unused.id, 2 * HOUR).await?;

        let mut listed = store.unused_for(HOUR).await?;
        listed.sort_by_key(ArtifactId::hex);
        let mut expected = vec![kept.id, unused.id];
        expected.sort_by_key(ArtifactId::hex);
        ensure!(listed == expected, "the two aged artifacts: {listed:?}");

        // Another coordinator names it between the listing and the deletion.
        let other = PostgresBlobStore::open(pool_for(&url)?).await?;
        ensure!(other.keep(&kept.id).await?);
        ensure!(
            store.delete_unused(&kept.id, HOUR).await?.is_none(),
            "an artifact kept after the listing stays"
        );
        ensure!(read_all(&store, &kept.id).await?.1 == b"kept");
        ensure!(
            store.delete_unused(&unused.id, HOUR).await? == Some(unused_bytes.len() as u64),
            "the unused one is deleted, freeing its bytes"
        );
        ensure!(!other.exists(&unused.id).await? && !other.keep(&unused.id).await?);
        ensure!(store.delete_unused(&unused.id, HOUR).await?.is_none());
        ensure!(store.delete_unused(&fresh.id, HOUR).await?.is_none());
        ensure!(
            row_counts(&pool).await? == (2, 0, 2),
            "the deleted artifact's two chunks went with it: {:?}",
            row_counts(&pool).await?
        );
        Ok(())
    }

    #[tokio::test]
    async fn storing_the_same_bytes_again_counts_as_a_use() -> anyhow::Result<()> {
        let (_url, pool, store) = fresh_store().await?;
        let first = store.put(&mut chunked(b"again", 2), 100).await?;
        age_row(&pool, &first.id, 2 * HOUR).await?;
        ensure!(store.unused_for(HOUR).await? == vec![first.id]);
        let second = store.put(&mut chunked(b"again", 3), 100).await?;
        ensure!(!second.created);
        ensure!(store.unused_for(HOUR).await?.is_empty());
        ensure!(
            row_counts(&pool).await? == (1, 0, 1),
            "{:?}",
            row_counts(&pool).await?
        );
        // Deleted, then stored again: a new artifact.
        ensure!(store.delete_unused(&first.id, Duration::ZERO).await == Ok(Some(5)));
        let third = store.put(&mut chunked(b"again", 1), 100).await?;
        ensure!(third.created && read_all(&store, &third.id).await?.1 == b"again");
        Ok(())
    }
}
