//! Files and directories that hold job data (payloads, results, logs, artifacts) are created
//! readable by their owner only: the data directory 0700, its files 0600. Existing ones are
//! left as they are, so an operator who granted a backup group read access keeps it; one
//! readable by everyone is reported.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Create `path` and any missing parents with mode 0700 (existing ones are not changed).
pub fn create_private_directory(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// [`create_private_directory`] for async callers.
pub async fn create_private_directory_async(path: &Path) -> std::io::Result<()> {
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .await
}

/// Create an empty file with mode 0600 unless it exists (an existing file is not changed).
pub fn create_private_file(path: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

/// Log a warning when `path` can be read by every user of the machine.
pub fn warn_if_readable_by_others(path: &Path) {
    if let Ok(metadata) = std::fs::metadata(path)
        && metadata.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", metadata.permissions().mode() & 0o777),
            "this file holds job payloads, results and logs and every user of the machine can read it; `chmod 600` it (and `chmod 700` its directory) unless that is meant"
        );
    }
}
