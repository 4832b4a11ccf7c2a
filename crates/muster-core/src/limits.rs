//! Limits of the protocol (page sizes, batch sizes, the longest long poll, a DAG's size), which
//! the coordinator enforces whatever the front end and the OpenAPI document states. Limits of a
//! job or a name (a kind's length, a job's attempts, ...) are beside the rules they bound.

/// A list's page size when the caller names none.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;
/// The largest page of jobs or runners one call returns.
pub const MAX_PAGE_LIMIT: u32 = 1000;
/// A log page's size when the caller names none.
pub const DEFAULT_LOG_PAGE_LIMIT: u32 = 1000;
/// The largest page of log entries one call returns.
pub const MAX_LOG_PAGE_LIMIT: u32 = 10_000;
/// Jobs one batch submit may hold.
pub const MAX_BATCH_SUBMIT: usize = 1000;
/// Kinds one claim may name.
pub const MAX_CLAIM_KINDS: usize = 64;
/// Jobs one claim may take.
pub const MAX_CLAIM_JOBS: u32 = 1000;
/// The longest a claim may long-poll, in milliseconds.
pub const MAX_CLAIM_WAIT_MS: u64 = 60_000;
/// Completions one batch completion may hold.
pub const MAX_BATCH_COMPLETIONS: usize = 10_000;
/// Log entries one log call, or events one job heartbeat, may carry.
pub const MAX_LOG_ENTRIES: usize = 10_000;
/// Job ids one runner heartbeat may list.
pub const MAX_HEARTBEAT_JOBS: usize = 10_000;
/// The longest progress message, in characters.
pub const MAX_PROGRESS_MESSAGE_LEN: usize = 4096;
/// Nodes, and separately edges, one DAG may have.
pub const MAX_DAG_NODES: usize = 100_000;
/// The longest failure message kept, in characters; longer ones are cut.
pub const MAX_FAILURE_MESSAGE_LEN: usize = 16 * 1024;
