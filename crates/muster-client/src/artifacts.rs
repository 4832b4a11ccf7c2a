//! Artifact transfers, shared by [`crate::MusterClient`] and [`crate::RunnerClient`] (they
//! differ only in the route prefix and the token). Bodies are streamed both ways.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use muster_api::Artifact;
use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{ClientError, Connection, error_chain};

pub(crate) const USER_PATH: &str = "/api/v1/artifacts";
pub(crate) const RUNNER_PATH: &str = "/api/v1/runner/artifacts";

/// Bytes read from disk per chunk of an upload.
const FILE_CHUNK: usize = 256 * 1024;

/// What an upload stream may fail with.
pub type UploadError = Box<dyn std::error::Error + Send + Sync>;

/// An artifact's bytes as they arrive.
pub type ArtifactStream = Pin<Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send>>;

/// A download under way.
pub struct ArtifactDownload {
    /// The size the coordinator announced (`Content-Length`).
    pub size: Option<u64>,
    pub stream: ArtifactStream,
}

impl std::fmt::Debug for ArtifactDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactDownload")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// `id` as one path segment: ids are `sha256:<hex>`, but whatever a caller passes must not be
/// able to reach another route.
fn path_segment(id: &str) -> String {
    let mut segment = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b':' | b'.' | b'_' | b'-') {
            segment.push(char::from(byte));
        } else {
            segment.push_str(&format!("%{byte:02X}"));
        }
    }
    segment
}

/// Check downloaded bytes against the id that names them.
fn verify(
    id: &str,
    digest: [u8; 32],
    size: u64,
    announced: Option<u64>,
) -> Result<(), ClientError> {
    let computed = format!("sha256:{}", hex::encode(digest));
    if computed != id {
        return Err(ClientError::Decode(format!(
            "artifact {id}: the downloaded bytes hash to {computed}; the transfer was corrupted"
        )));
    }
    if announced.is_some_and(|announced| announced != size) {
        return Err(ClientError::Decode(format!(
            "artifact {id}: {size} bytes arrived, {announced:?} were announced"
        )));
    }
    Ok(())
}

pub(crate) async fn upload_stream<S>(
    connection: &Connection,
    prefix: &str,
    chunks: S,
    size: Option<u64>,
) -> Result<Artifact, ClientError>
where
    S: futures::TryStream + Send + 'static,
    S::Error: Into<UploadError>,
    Bytes: From<S::Ok>,
{
    let mut request = connection
        .request(Method::POST, prefix)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::Body::wrap_stream(chunks));
    if let Some(size) = size {
        // A known size lets the coordinator refuse an oversize upload before it travels.
        request = request.header(CONTENT_LENGTH, size);
    }
    connection.json(request).await
}

pub(crate) async fn upload_bytes(
    connection: &Connection,
    prefix: &str,
    bytes: Bytes,
) -> Result<Artifact, ClientError> {
    let request = connection
        .request(Method::POST, prefix)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(bytes);
    connection.json(request).await
}

pub(crate) async fn upload_file(
    connection: &Connection,
    prefix: &str,
    path: &Path,
) -> Result<Artifact, ClientError> {
    let local = |what: &str| {
        let context = format!("{what} {}", path.display());
        move |error: std::io::Error| ClientError::Io(format!("{context}: {error}"))
    };
    let file = tokio::fs::File::open(path).await.map_err(local("open"))?;
    let size = file.metadata().await.map_err(local("inspect"))?.len();
    let chunks = futures::stream::try_unfold(file.take(size), |mut file| async move {
        let mut chunk = BytesMut::with_capacity(FILE_CHUNK);
        let read = file.read_buf(&mut chunk).await?;
        Ok::<_, std::io::Error>(if read == 0 {
            None
        } else {
            Some((chunk.freeze(), file))
        })
    });
    upload_stream(connection, prefix, chunks, Some(size)).await
}

pub(crate) async fn download(
    connection: &Connection,
    prefix: &str,
    id: &str,
) -> Result<ArtifactDownload, ClientError> {
    let response = connection
        .send(connection.request(Method::GET, &format!("{prefix}/{}", path_segment(id))))
        .await?;
    let size = response.content_length();
    let stream = response
        .bytes_stream()
        .map(|chunk| chunk.map_err(|error| ClientError::Transport(error_chain(&error))));
    Ok(ArtifactDownload {
        size,
        stream: Box::pin(stream),
    })
}

pub(crate) async fn download_bytes(
    connection: &Connection,
    prefix: &str,
    id: &str,
) -> Result<Bytes, ClientError> {
    let mut download = download(connection, prefix, id).await?;
    let mut bytes = BytesMut::new();
    let mut hasher = Sha256::new();
    while let Some(chunk) = download.stream.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        bytes.extend_from_slice(&chunk);
    }
    verify(
        id,
        hasher.finalize().into(),
        bytes.len() as u64,
        download.size,
    )?;
    Ok(bytes.freeze())
}

/// A download's file beside its target, removed unless it was renamed into place: a failed,
/// corrupt or abandoned download leaves nothing.
struct PartFile {
    path: PathBuf,
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub(crate) async fn download_to_file(
    connection: &Connection,
    prefix: &str,
    id: &str,
    path: &Path,
) -> Result<u64, ClientError> {
    let mut download = download(connection, prefix, id).await?;
    let name = path
        .file_name()
        .ok_or_else(|| ClientError::Io(format!("{} names no file", path.display())))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let mut part = PartFile {
        path: path.with_file_name(format!(
            ".{}.part-{}-{nanos}",
            name.to_string_lossy(),
            std::process::id()
        )),
    };
    let local = |what: &str, file: &Path| {
        let context = format!("{what} {}", file.display());
        move |error: std::io::Error| ClientError::Io(format!("{context}: {error}"))
    };
    let file = tokio::fs::File::create(&part.path)
        .await
        .map_err(local("create", &part.path))?;
    let mut writer = tokio::io::BufWriter::with_capacity(1024 * 1024, file);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = download.stream.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        writer
            .write_all(&chunk)
            .await
            .map_err(local("write", &part.path))?;
    }
    verify(id, hasher.finalize().into(), size, download.size)?;
    writer.flush().await.map_err(local("write", &part.path))?;
    writer
        .get_mut()
        .sync_all()
        .await
        .map_err(local("sync", &part.path))?;
    drop(writer);
    tokio::fs::rename(&part.path, path)
        .await
        .map_err(local("move into place", path))?;
    part.path = PathBuf::new();
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_one_path_segment() {
        let id = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(path_segment(&id), id);
        assert_eq!(path_segment("../jobs?x=1"), "..%2Fjobs%3Fx%3D1");
    }
}
