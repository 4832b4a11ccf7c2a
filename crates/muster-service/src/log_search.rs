//! Reading a whole log without holding it: a search on the server (text and level, a bounded
//! window per call, so a million-line log costs each call the same) and the raw log as a stream
//! of pages for a download.

use futures::Stream;
use muster_core::{Action, JobId, LogEntry, LogLevel, Principal, authorize};
use muster_store::{LogSearch, LogSearchPage};

use crate::{Coordinator, ServiceError};

/// How many entries one search call looks at, at most: a call answers within tens of
/// milliseconds however long the log, and the caller goes on from its `next_seq`.
pub const LOG_SEARCH_WINDOW: u64 = 50_000;

/// How many matches one search call answers when the caller does not say; at most
/// [`MAX_LOG_SEARCH_LIMIT`].
pub const DEFAULT_LOG_SEARCH_LIMIT: u32 = 100;
pub const MAX_LOG_SEARCH_LIMIT: u32 = 1_000;

/// The longest text a search looks for, in characters.
pub const MAX_LOG_SEARCH_TEXT: usize = 200;

/// How many entries the raw log reads per store call.
const RAW_LOG_PAGE: u32 = 5_000;

/// What a caller searches a log for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogSearchQuery {
    pub after_seq: Option<u64>,
    /// Entries whose message contains this (ASCII letters without case); none: any message.
    pub text: Option<String>,
    /// Entries of at least this level; none: any level.
    pub min_level: Option<LogLevel>,
    pub limit: Option<u32>,
}

impl Coordinator {
    /// Search job `id`'s log: matches after `after_seq` among the next [`LOG_SEARCH_WINDOW`]
    /// entries, and where the next call goes on (`next_seq`; the whole log is searched when it
    /// reaches `log_next_seq`).
    pub async fn search_logs(
        &self,
        principal: &Principal,
        id: JobId,
        query: LogSearchQuery,
    ) -> Result<LogSearchPage, ServiceError> {
        authorize(principal, Action::ReadJobs)?;
        let limit = query.limit.unwrap_or(DEFAULT_LOG_SEARCH_LIMIT);
        if limit == 0 || limit > MAX_LOG_SEARCH_LIMIT {
            return Err(ServiceError::invalid_input(format!(
                "query parameter 'limit': must be between 1 and {MAX_LOG_SEARCH_LIMIT}"
            )));
        }
        let text = query.text.filter(|text| !text.is_empty());
        if let Some(text) = &text {
            if text.chars().count() > MAX_LOG_SEARCH_TEXT {
                return Err(ServiceError::invalid_input(format!(
                    "query parameter 'q': at most {MAX_LOG_SEARCH_TEXT} characters"
                )));
            }
            if text.chars().any(char::is_control) {
                return Err(ServiceError::invalid_input(
                    "query parameter 'q': no control characters",
                ));
            }
        }
        self.check_job_exists_in_scope(principal, id).await?;
        let search = LogSearch {
            after_seq: query.after_seq,
            text,
            min_level: query.min_level,
            window: LOG_SEARCH_WINDOW,
            limit,
        };
        Ok(self.store.search_logs(id, search).await?)
    }

    /// Job `id`'s whole log as it stands, a page of entries at a time, for a download. A read
    /// that fails midway ends the stream with the error (the caller has sent part of it).
    pub async fn raw_log(
        &self,
        principal: &Principal,
        id: JobId,
    ) -> Result<
        impl Stream<Item = Result<Vec<LogEntry>, ServiceError>> + Send + 'static,
        ServiceError,
    > {
        authorize(principal, Action::ReadJobs)?;
        self.check_job_exists_in_scope(principal, id).await?;
        let store = self.store.clone();
        Ok(futures::stream::unfold(
            Some(None::<u64>),
            move |after: Option<Option<u64>>| {
                let store = store.clone();
                async move {
                    let after = after?;
                    match store.read_logs(id, after, RAW_LOG_PAGE).await {
                        Ok(page) if page.items.is_empty() => None,
                        Ok(page) => {
                            let next = page.items.last().map(|entry| entry.seq);
                            let full = page.items.len() >= RAW_LOG_PAGE as usize;
                            let resume = if full { Some(next) } else { None };
                            Some((Ok(page.items), resume))
                        }
                        Err(error) => Some((Err(ServiceError::from(error)), None)),
                    }
                }
            },
        ))
    }
}
