//! [`LocalBlobStore`]: artifacts as files in a directory (by default `<data-dir>/blobs/`).
//!
//! Layout: `sha256/ab/cdef…` holds the artifact whose id is `sha256:abcdef…` (the first two hex
//! digits make a subdirectory, so no directory grows past a few thousand entries);
//! `uploads/` holds uploads in progress. An upload is written to a fresh file in `uploads/`
//! while it is hashed, synced to disk, and only then renamed under its id: a rename within one
//! file system is atomic, so a reader sees the whole artifact or none of it, and a crash leaves
//! at most a stray file in `uploads/`, which the next start removes.
//!
//! A file's modification time is when its artifact was last stored or kept (see
//! [`BlobStore::keep`]); the bytes never change after the rename, so nothing else moves it.
//! Collecting an artifact first renames its file into `collecting/`, then looks at the time
//! again: a keep that reached the file before the rename shows there, and the file goes back;
//! one after it finds no file. A crash between the two leaves the file in `collecting/`, and the
//! next start puts it back.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::BytesMut;
use futures::StreamExt;
use muster_core::ArtifactId;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufWriter};

use super::{
    BlobError, BlobReader, BlobStore, ByteStream, KEEP_GRANULARITY, StorageSpace, StoredBlob,
};

const CONTENT_DIR: &str = "sha256";
const UPLOADS_DIR: &str = "uploads";
const COLLECTING_DIR: &str = "collecting";
/// Writes are gathered into this much memory before each trip to the blocking pool: tokio
/// files write on a thread pool, and small chunks from the network would cost one trip each.
const WRITE_BUFFER: usize = 1024 * 1024;
/// The most bytes one chunk of a download holds in memory.
const READ_CHUNK: usize = 128 * 1024;
/// An upload file untouched for this long belongs to a process that died mid-upload: a live
/// upload writes to its file continuously.
const STALE_UPLOAD_AGE: Duration = Duration::from_secs(3600);

/// Distinguishes the upload files of one process.
static UPLOAD_SEQ: AtomicU64 = AtomicU64::new(0);

/// Artifacts in a local directory. Several processes may share the directory: uploads never
/// share a file, and a finished artifact is only ever replaced by the same bytes.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    root: PathBuf,
}

impl LocalBlobStore {
    /// A store rooted at `root`. Directories are made on the first upload, so this does not
    /// fail; upload files left by a crashed process are removed now, and artifacts a crashed
    /// collection had set aside are put back (best effort, logged).
    pub fn new(root: impl Into<PathBuf>) -> LocalBlobStore {
        let store = LocalBlobStore { root: root.into() };
        store.remove_stale_uploads();
        store.restore_set_aside();
        store
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn content_path(&self, id: &ArtifactId) -> PathBuf {
        let hex = id.hex();
        self.root.join(CONTENT_DIR).join(&hex[..2]).join(&hex[2..])
    }

    /// Where a collection moves the artifact's file before deciding.
    fn set_aside_path(&self, id: &ArtifactId) -> PathBuf {
        self.root.join(COLLECTING_DIR).join(id.hex())
    }

    /// The artifact whose hex digest is `shard` followed by `name` (a file `shard/name` under
    /// `sha256/`, or `name` alone in `collecting/`), when the names are those of one.
    fn id_from_names(shard: &str, name: &str) -> Option<ArtifactId> {
        format!("sha256:{shard}{name}").parse().ok()
    }

    fn restore_set_aside(&self) {
        let directory = self.root.join(COLLECTING_DIR);
        let entries = match std::fs::read_dir(&directory) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
            Err(error) => {
                tracing::warn!(%error, directory = %directory.display(), "cannot list artifacts set aside by an interrupted collection; they stay there");
                return;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|name| LocalBlobStore::id_from_names("", name))
            else {
                tracing::warn!(file = %path.display(), "a file in the collection directory is not an artifact; left alone");
                continue;
            };
            let target = self.content_path(&id);
            let restored = match target.parent() {
                Some(parent) => crate::files::create_private_directory(parent)
                    .and_then(|()| std::fs::rename(&path, &target)),
                None => Err(std::io::Error::other("the artifact path has no directory")),
            };
            match restored {
                Ok(()) => {
                    tracing::info!(artifact = %id, "put back an artifact an interrupted collection had set aside")
                }
                Err(error) => {
                    tracing::warn!(%error, file = %path.display(), "cannot put back an artifact an interrupted collection had set aside")
                }
            }
        }
    }

    fn remove_stale_uploads(&self) {
        let directory = self.root.join(UPLOADS_DIR);
        let entries = match std::fs::read_dir(&directory) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
            Err(error) => {
                tracing::warn!(%error, directory = %directory.display(), "cannot list unfinished uploads; they stay");
                return;
            }
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|metadata| metadata.modified())
                .ok()
                .and_then(|modified| now.duration_since(modified).ok())
                .is_some_and(|age| age > STALE_UPLOAD_AGE);
            if stale {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {
                        tracing::info!(file = %entry.path().display(), "removed an unfinished upload")
                    }
                    Err(error) => {
                        tracing::warn!(%error, file = %entry.path().display(), "cannot remove an unfinished upload")
                    }
                }
            }
        }
    }
}

fn unavailable(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> BlobError {
    let context = format!("{what} {}", path.display());
    move |error| BlobError::Unavailable(format!("{context}: {error}"))
}

/// An upload file that removes itself unless it was moved into place: whichever way an upload
/// ends early (an error, the limit, the caller's future dropped because the client went away),
/// no partial file stays.
struct UploadFile {
    path: PathBuf,
    writer: Option<BufWriter<tokio::fs::File>>,
}

impl UploadFile {
    async fn create(directory: &Path) -> Result<UploadFile, BlobError> {
        crate::files::create_private_directory_async(directory)
            .await
            .map_err(unavailable("create directory", directory))?;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        loop {
            let sequence = UPLOAD_SEQ.fetch_add(1, Ordering::Relaxed);
            let path = directory.join(format!("upload-{}-{nanos}-{sequence}", std::process::id()));
            // create_new: never write into a file another upload (or a stale one) owns.
            // Readable by the coordinator's user only, like the rest of the data directory.
            match tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .await
            {
                Ok(file) => {
                    return Ok(UploadFile {
                        path,
                        writer: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
                    });
                }
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(unavailable("create upload file", &path)(error)),
            }
        }
    }

    fn writer(&mut self) -> Result<&mut BufWriter<tokio::fs::File>, BlobError> {
        self.writer
            .as_mut()
            .ok_or_else(|| BlobError::Unavailable("the upload file is already closed".into()))
    }

    /// Write out the buffer and sync the file to disk.
    async fn finish(&mut self) -> Result<(), BlobError> {
        let path = self.path.clone();
        let writer = self.writer()?;
        writer
            .flush()
            .await
            .map_err(unavailable("write upload file", &path))?;
        writer
            .get_mut()
            .sync_all()
            .await
            .map_err(unavailable("sync upload file", &path))
    }

    /// Remove the file now (rather than when dropped), so the caller answers only once it is gone.
    async fn discard(mut self) {
        self.writer = None;
        match tokio::fs::remove_file(&self.path).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(%error, file = %self.path.display(), "cannot remove an abandoned upload")
            }
        }
        // Already handled; nothing left for Drop to do.
        self.path = PathBuf::new();
    }

    /// Move the finished file to `target`; from then on it is no longer this guard's to remove.
    async fn persist(mut self, target: &Path) -> Result<(), BlobError> {
        self.writer = None;
        tokio::fs::rename(&self.path, target)
            .await
            .map_err(unavailable("move upload into place as", target))?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for UploadFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            // Runs when an upload's future is dropped mid-way; an unlink is quick enough to do
            // in place, and there is no runtime to hand it to in a destructor.
            if let Err(error) = std::fs::remove_file(&self.path)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(%error, file = %self.path.display(), "cannot remove an abandoned upload");
            }
        }
    }
}

/// Sync a directory so a rename into it survives a crash.
async fn sync_directory(directory: &Path) -> Result<(), BlobError> {
    let path = directory.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&path)?.sync_all())
        .await
        .map_err(|error| BlobError::Unavailable(format!("sync directory task: {error}")))?
        .map_err(unavailable("sync directory", directory))
}

/// A reader's bytes as a stream of chunks of at most [`READ_CHUNK`] bytes.
fn read_stream<R: AsyncRead + Unpin + Send + 'static>(reader: R) -> ByteStream {
    Box::pin(futures::stream::try_unfold(
        reader,
        |mut reader| async move {
            let mut chunk = BytesMut::with_capacity(READ_CHUNK);
            let read = reader.read_buf(&mut chunk).await?;
            Ok(if read == 0 {
                None
            } else {
                Some((chunk.freeze(), reader))
            })
        },
    ))
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn put(&self, body: &mut ByteStream, max_bytes: u64) -> Result<StoredBlob, BlobError> {
        let mut upload = UploadFile::create(&self.root.join(UPLOADS_DIR)).await?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let written: Result<(), BlobError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|error| BlobError::Upload(error.to_string()))?;
                size = size.saturating_add(chunk.len() as u64);
                if size > max_bytes {
                    return Err(BlobError::TooLarge { limit: max_bytes });
                }
                hasher.update(&chunk);
                let path = upload.path.clone();
                upload
                    .writer()?
                    .write_all(&chunk)
                    .await
                    .map_err(unavailable("write upload file", &path))?;
            }
            upload.finish().await
        }
        .await;
        if let Err(error) = written {
            upload.discard().await;
            return Err(error);
        }
        let id = ArtifactId::from_digest(hasher.finalize().into());
        let target = self.content_path(&id);
        match tokio::fs::metadata(&target).await {
            // Same id, same size: the same bytes are already stored (a SHA-256 collision is not
            // a practical concern). Keep the stored file; it may be being read right now. It is
            // marked used, as storing it anew would have; if a collection took it meanwhile,
            // the upload is stored after all.
            Ok(existing) if existing.is_file() && existing.len() == size => {
                match mark_used(&target).await {
                    Ok(true) => {
                        upload.discard().await;
                        return Ok(StoredBlob {
                            id,
                            size,
                            created: false,
                        });
                    }
                    Ok(false) => {}
                    Err(error) => {
                        upload.discard().await;
                        return Err(error);
                    }
                }
            }
            Ok(_) => {
                tracing::warn!(artifact = %id, file = %target.display(), "a stored artifact has the wrong size; replacing it with the upload");
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                upload.discard().await;
                return Err(unavailable("inspect", &target)(error));
            }
        }
        let Some(directory) = target.parent() else {
            upload.discard().await;
            return Err(BlobError::Unavailable(format!(
                "artifact path {} has no directory",
                target.display()
            )));
        };
        let directory_existed = tokio::fs::try_exists(directory).await.unwrap_or(false);
        if let Err(error) = crate::files::create_private_directory_async(directory).await {
            upload.discard().await;
            return Err(unavailable("create directory", directory)(error));
        }
        upload.persist(&target).await?;
        // The rename is durable once the directory holding it is synced (and, for a directory
        // made just now, the one holding that).
        sync_directory(directory).await?;
        if !directory_existed && let Some(parent) = directory.parent() {
            sync_directory(parent).await?;
        }
        Ok(StoredBlob {
            id,
            size,
            created: true,
        })
    }

    async fn open(&self, id: &ArtifactId) -> Result<BlobReader, BlobError> {
        let path = self.content_path(id);
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(*id));
            }
            Err(error) => return Err(unavailable("open", &path)(error)),
        };
        let size = file
            .metadata()
            .await
            .map_err(unavailable("inspect", &path))?
            .len();
        // Read exactly the size announced, so the length a caller was told holds.
        Ok(BlobReader {
            size,
            stream: read_stream(file.take(size)),
        })
    }

    async fn exists(&self, id: &ArtifactId) -> Result<bool, BlobError> {
        let path = self.content_path(id);
        match tokio::fs::metadata(&path).await {
            Ok(metadata) => Ok(metadata.is_file()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(unavailable("inspect", &path)(error)),
        }
    }

    async fn keep(&self, id: &ArtifactId) -> Result<bool, BlobError> {
        let path = self.content_path(id);
        let metadata = match tokio::fs::metadata(&path).await {
            Ok(metadata) if metadata.is_file() => metadata,
            Ok(_) => return Ok(false),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(unavailable("inspect", &path)(error)),
        };
        let used_lately = metadata
            .modified()
            .ok()
            .and_then(|modified| SystemTime::now().duration_since(modified).ok())
            .is_some_and(|age| age < KEEP_GRANULARITY);
        if used_lately {
            return Ok(true);
        }
        mark_used(&path).await
    }

    async fn unused_for(&self, unused_for: Duration) -> Result<Vec<ArtifactId>, BlobError> {
        let content = self.root.join(CONTENT_DIR);
        tokio::task::spawn_blocking(move || list_unused(&content, unused_for))
            .await
            .map_err(|error| BlobError::Unavailable(format!("list artifacts task: {error}")))?
    }

    async fn storage_space(&self) -> Result<Option<StorageSpace>, BlobError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || file_system_space(&root))
            .await
            .map_err(|error| BlobError::Unavailable(format!("measure free space task: {error}")))?
            .map(Some)
    }

    async fn delete_unused(
        &self,
        id: &ArtifactId,
        unused_for: Duration,
    ) -> Result<Option<u64>, BlobError> {
        let path = self.content_path(id);
        let set_aside = self.set_aside_path(id);
        let directory = self.root.join(COLLECTING_DIR);
        crate::files::create_private_directory_async(&directory)
            .await
            .map_err(unavailable("create directory", &directory))?;
        match tokio::fs::rename(&path, &set_aside).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(unavailable("set aside", &path)(error)),
        }
        // From here no keep can reach the file: any that did is in its time now.
        let metadata = tokio::fs::metadata(&set_aside).await;
        let unused = metadata
            .as_ref()
            .ok()
            .and_then(|metadata| metadata.modified().ok())
            .and_then(|modified| SystemTime::now().duration_since(modified).ok())
            .is_some_and(|age| age >= unused_for);
        if !unused {
            // Put back; a store of the same bytes meanwhile is replaced by the same bytes.
            tokio::fs::rename(&set_aside, &path)
                .await
                .map_err(unavailable("put back", &set_aside))?;
            return Ok(None);
        }
        let size = metadata.map_or(0, |metadata| metadata.len());
        tokio::fs::remove_file(&set_aside)
            .await
            .map_err(unavailable("delete", &set_aside))?;
        Ok(Some(size))
    }
}

/// Set the file's modification time to now: the artifact was just used. Answers false when the
/// file is gone (a collection took it).
async fn mark_used(path: &Path) -> Result<bool, BlobError> {
    let owned = path.to_path_buf();
    let outcome = tokio::task::spawn_blocking(move || {
        // The time is set through the open file, so a collection renaming it in between still
        // sees the mark.
        std::fs::File::open(&owned)?.set_modified(SystemTime::now())
    })
    .await
    .map_err(|error| BlobError::Unavailable(format!("mark an artifact used task: {error}")))?;
    match outcome {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(unavailable("mark used", path)(error)),
    }
}

/// The artifacts under `content` (the `sha256/` directory) whose files were last modified at
/// least `unused_for` ago.
fn list_unused(content: &Path, unused_for: Duration) -> Result<Vec<ArtifactId>, BlobError> {
    let now = SystemTime::now();
    let mut unused = Vec::new();
    let shards = match std::fs::read_dir(content) {
        Ok(shards) => shards,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(unused),
        Err(error) => return Err(unavailable("list", content)(error)),
    };
    for shard in shards {
        let shard = shard.map_err(unavailable("list", content))?;
        let shard_path = shard.path();
        let Some(shard_name) = shard.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let files = match std::fs::read_dir(&shard_path) {
            Ok(files) => files,
            // Not a directory, or removed meanwhile: nothing of ours in it.
            Err(_) => continue,
        };
        for file in files {
            let file = file.map_err(unavailable("list", &shard_path))?;
            let Some(id) = file
                .file_name()
                .to_str()
                .and_then(|name| LocalBlobStore::id_from_names(&shard_name, name))
            else {
                continue;
            };
            let old_enough = file
                .metadata()
                .ok()
                .filter(std::fs::Metadata::is_file)
                .and_then(|metadata| metadata.modified().ok())
                .and_then(|modified| now.duration_since(modified).ok())
                .is_some_and(|age| age >= unused_for);
            if old_enough {
                unused.push(id);
            }
        }
    }
    Ok(unused)
}

/// The room on the file system holding `root`, or holding its nearest existing ancestor while
/// the directory is not made yet (it is made on the first upload, on that file system).
fn file_system_space(root: &Path) -> Result<StorageSpace, BlobError> {
    for candidate in root.ancestors() {
        // A relative root ends in the empty path: the working directory.
        let candidate = if candidate.as_os_str().is_empty() {
            Path::new(".")
        } else {
            candidate
        };
        match nix::sys::statvfs::statvfs(candidate) {
            Ok(stats) => {
                let block = widen(stats.fragment_size());
                return Ok(StorageSpace {
                    available: widen(stats.blocks_available()).saturating_mul(block),
                    total: widen(stats.blocks()).saturating_mul(block),
                });
            }
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(error) => {
                return Err(BlobError::Unavailable(format!(
                    "measure free space on {}: {error}",
                    candidate.display()
                )));
            }
        }
    }
    Err(BlobError::Unavailable(format!(
        "measure free space: no directory of {} exists",
        root.display()
    )))
}

/// `statvfs` counts are `u64` or narrower, by platform.
fn widen(count: impl TryInto<u64>) -> u64 {
    count.try_into().unwrap_or(u64::MAX)
}
