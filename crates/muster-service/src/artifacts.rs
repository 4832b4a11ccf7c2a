//! Artifacts: storing an upload's bytes within the quotas (see `quota.rs`), reading them back,
//! and the rule that an artifact is *kept* (marked used) before a job names it, so the collection
//! of unused artifacts can never take the bytes of a job being written.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use muster_core::{Action, ArtifactId, Principal, authorize};
use muster_store::blobs::BlobError;
pub use muster_store::blobs::{BlobReader, ByteStream};
use muster_store::{ArtifactRecord, ArtifactUploader};

use crate::quota::{self, Admission};
use crate::{Coordinator, ServiceError};

/// An artifact just stored (or found stored already).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredArtifact {
    pub id: ArtifactId,
    pub size: u64,
    /// False when the same bytes were already stored: nothing new was written.
    pub created: bool,
}

/// An upload let in by [`Coordinator::admit_upload`]: its size and quotas were checked before a
/// byte was read, and its reservation lasts until it is stored or dropped.
pub struct UploadPermit {
    uploader: ArtifactUploader,
    /// The organization of a scoped user token: what it uploads, it may read back.
    granted_to: Option<String>,
    admission: Arc<Mutex<Admission>>,
}

/// An upload refused while its bytes were being read; nothing of it was stored. `rest` is what
/// the body has left, for a front end that reads it off before answering (so the client, still
/// sending, reads the answer instead of a reset).
pub struct UploadRefused {
    pub error: ServiceError,
    pub rest: ByteStream,
}

fn lock(admission: &Mutex<Admission>) -> std::sync::MutexGuard<'_, Admission> {
    admission.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Coordinator {
    /// Fail with `unknown_artifact` naming the first artifact that is not stored, marking each
    /// one that is as used, so a collection of unused artifacts cannot take it from the job
    /// about to name it. Each item is `(field, id)`, the field naming where the request put it.
    pub(crate) async fn keep_artifacts(
        &self,
        artifacts: Vec<(String, ArtifactId)>,
    ) -> Result<(), ServiceError> {
        let mut checked = HashSet::new();
        for (field, id) in artifacts {
            if !checked.insert(id) {
                continue;
            }
            if !self.blobs.keep(&id).await? {
                return Err(ServiceError::unknown_artifact(format!(
                    "{field}: artifact {id} is not stored; upload it first (POST /api/v1/artifacts or /api/v1/runner/artifacts)"
                )));
            }
        }
        Ok(())
    }

    /// Let an upload by `principal` announcing `declared` bytes (when it did) begin, or refuse
    /// it before a byte is read: larger than `--max-artifact-bytes` (413), or past a quota or
    /// the disk reserve (507). A runner is charged its uploads; a user's count towards the
    /// totals only.
    pub async fn admit_upload(
        &self,
        principal: &Principal,
        declared: Option<u64>,
    ) -> Result<UploadPermit, ServiceError> {
        let uploader = match principal {
            Principal::Runner(runner) | Principal::PendingRunner(runner) => {
                authorize(principal, Action::RunnerProtocol)?;
                ArtifactUploader::Runner(*runner)
            }
            Principal::BootstrapAdmin | Principal::User(_) => {
                authorize(principal, Action::UploadArtifacts)?;
                // Charged to the totals only: quotas are per runner, a person's uploads are
                // bounded by the totals and the disk reserve.
                ArtifactUploader::User
            }
        };
        let limit = self.config.max_artifact_bytes;
        if declared.is_some_and(|declared| declared > limit) {
            return Err(self.too_large());
        }
        let admission = quota::admit(self, uploader, declared).await?;
        Ok(UploadPermit {
            uploader,
            granted_to: principal
                .scoped_organization()
                .map(|organization| organization.as_str().to_string()),
            admission: Arc::new(Mutex::new(admission)),
        })
    }

    fn too_large(&self) -> ServiceError {
        ServiceError::payload_too_large(format!(
            "the artifact is larger than the limit of {} bytes (--max-artifact-bytes); nothing was stored",
            self.config.max_artifact_bytes
        ))
    }

    /// Store the bytes of an admitted upload. Each chunk is counted against the quotas before
    /// the artifact store sees it, so nothing past a quota is written.
    pub async fn store_upload(
        &self,
        permit: UploadPermit,
        body: ByteStream,
    ) -> Result<StoredArtifact, UploadRefused> {
        let metered = Arc::clone(&permit.admission);
        let mut refused = false;
        let mut stream: ByteStream = Box::pin(body.map(move |chunk| {
            let chunk = chunk?;
            // Once refused, the artifact store has stopped reading: what follows is only read
            // off by the front end, and passes through.
            if !refused && lock(&metered).receive(chunk.len() as u64).is_err() {
                refused = true;
                return Err(std::io::Error::other("the upload passed an artifact quota"));
            }
            Ok(chunk)
        }));
        let limit = self.config.max_artifact_bytes;
        match self.blobs.put(&mut stream, limit).await {
            Ok(stored) => {
                if stored.created {
                    let record = ArtifactRecord {
                        id: stored.id,
                        size: stored.size,
                        uploader: permit.uploader,
                        created_at: self.clock.now(),
                    };
                    // Unrecorded, the bytes are stored but charged to nobody until collected.
                    if let Err(error) = self.store.record_artifact(record).await {
                        return Err(UploadRefused {
                            error: error.into(),
                            rest: stream,
                        });
                    }
                    lock(&permit.admission).finish(Some(stored.size));
                } else {
                    lock(&permit.admission).finish(None);
                }
                // Bytes stored before are granted too: the uploader holds them.
                if let Some(organization) = permit.granted_to
                    && let Err(error) = self
                        .store
                        .grant_artifacts(organization, vec![stored.id])
                        .await
                {
                    return Err(UploadRefused {
                        error: error.into(),
                        rest: stream,
                    });
                }
                Ok(StoredArtifact {
                    id: stored.id,
                    size: stored.size,
                    created: stored.created,
                })
            }
            Err(BlobError::TooLarge { .. }) => Err(UploadRefused {
                error: self.too_large(),
                rest: stream,
            }),
            Err(error) => {
                let refusal = lock(&permit.admission).refusal();
                let error = match refusal {
                    Some(refusal) => {
                        self.metrics
                            .record_artifact_upload_refused(refusal.reason());
                        ServiceError::from(refusal)
                    }
                    None => ServiceError::from(error),
                };
                Err(UploadRefused {
                    error,
                    rest: stream,
                })
            }
        }
    }

    /// Let the job's organization read the artifacts its job names. The job is stored already,
    /// so a failure here is logged, not answered: tokens of every organization still read
    /// them, the organization's own tokens do not (the failure closes access, never opens it).
    pub(crate) async fn grant_to_job_organization(
        &self,
        organization: &str,
        named: Vec<ArtifactId>,
    ) {
        if named.is_empty() {
            return;
        }
        if let Err(error) = self
            .store
            .grant_artifacts(organization.to_string(), named)
            .await
        {
            tracing::warn!(%error, organization, "grant the artifacts a job names to its organization");
        }
    }

    /// What artifacts are stored and charged: in all, and to `runner` when one is named (what
    /// the quotas count).
    pub async fn artifact_usage(
        &self,
        principal: &Principal,
        runner: Option<muster_core::RunnerId>,
    ) -> Result<muster_store::ArtifactUsageReport, ServiceError> {
        authorize(principal, Action::ReadArtifacts)?;
        Ok(self.store.artifact_usage(runner).await?)
    }

    /// Read an artifact; `not_found` for an id that is not stored or not well-formed.
    pub async fn open_artifact(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<(ArtifactId, BlobReader), ServiceError> {
        match principal {
            Principal::Runner(_) | Principal::PendingRunner(_) => {
                authorize(principal, Action::RunnerProtocol)?
            }
            Principal::BootstrapAdmin | Principal::User(_) => {
                authorize(principal, Action::ReadArtifacts)?
            }
        }
        let id: ArtifactId = id.parse().map_err(|_| {
            let shown: String = id.chars().take(100).collect();
            ServiceError::not_found(format!(
                "artifact '{shown}' not found (ids are sha256: followed by 64 lowercase hex digits)"
            ))
        })?;
        // What a caller may not read answers exactly as what is not stored.
        let readable = match principal {
            Principal::Runner(runner) | Principal::PendingRunner(runner) => {
                self.store.runner_may_read_artifact(*runner, id).await?
            }
            _ => match principal.scoped_organization() {
                Some(organization) => {
                    self.store
                        .artifact_granted(organization.as_str().to_string(), id)
                        .await?
                }
                None => true,
            },
        };
        if !readable {
            return Err(ServiceError::from(BlobError::NotFound(id)));
        }
        let reader = self.blobs.open(&id).await?;
        Ok((id, reader))
    }
}
