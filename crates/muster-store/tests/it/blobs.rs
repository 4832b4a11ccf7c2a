//! The local blob store: content addressing, the size limit, and that no way an upload can end
//! early leaves a file behind.

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
