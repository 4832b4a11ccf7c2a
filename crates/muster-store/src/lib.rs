//! muster's durable store.
//!
//! [`Store`] is the one interface the coordinator uses for state, made of one trait per
//! capability ([`JobStore`], [`LeaseStore`], [`RunnerStore`], [`ArtifactRecords`],
//! [`IdentityRecords`], [`KindSettingsStore`], [`OrganizationStore`], [`Maintenance`]); every backend implements them with the same observable behaviour, which the
//! conformance suite in this crate's tests checks.
//! Each method is one atomic unit: it either commits entirely or changes nothing, and a method
//! that answers `Ok` has made its change durable. State changes are decided by
//! [`muster_core::JobLifecycle`]; a backend only loads, asks and writes back. What a store decides
//! beyond that (log caps, claim order, the heartbeat's stop list, paging, ...) is written once,
//! in the private `rules` module, for every backend: a backend holds its SQL and the shape of its
//! transactions.
//!
//! This crate holds all of muster's SQL and no other crate does. It also owns the other half of
//! persistence, artifact bytes ([`blobs`]), which live outside the database; the database
//! records which artifacts jobs name and who made the coordinator store each one
//! ([`ArtifactRecords::record_artifact`], what the upload quotas charge).

pub mod blobs;
mod capabilities;
mod columns;
mod encoding;
mod error;
pub mod files;
mod model;
pub mod postgres;
mod rules;
pub mod sqlite;

pub use capabilities::{
    ArtifactRecords, IdentityRecords, JobStore, KindSettingsStore, LeaseStore, Maintenance,
    OrganizationStore, RunnerStore, Store, WorkloadStore,
};
pub use error::StoreError;
pub use model::{
    Activity, ArtifactRecord, ArtifactUploader, ArtifactUsage, ArtifactUsageReport, AuditEntry,
    AuditFilter, ClaimRequest, ClaimedJob, CompletionItem, EnrollmentChange,
    EnrollmentChangeOutcome, JobAck, JobCall, JobFilter, KeyRegistration, KindSettingsRecord,
    LogPage, LogPosition, LogSearch, LogSearchPage, NewAuditEntry, NewRunner, NewUserToken,
    OrganizationContents, OrganizationRecord, OutcomeCount, Page, PageRequest, PruneCursor,
    PruneReport, QueueDepth, ReapReport, RecordedActivity, RecordedOutputs, RegistrationOutcome,
    RemovedRunnerKey, RunnerBeat, RunnerCredentials, RunnerFilter, RunnerKeyRecord, SessionHolder,
    SessionRecord, Submitted, UserTokenRecord, WorkloadFilter, WorkloadReport,
};
pub use rules::enrollment::RUNNER_REVOKED as RUNNER_REVOKED_ACTION;
