//! Reading a whole log: `GET /api/v1/jobs/{id}/logs/search` (text and level, a bounded window
//! per call) and `GET /api/v1/jobs/{id}/logs/raw` (the log as text, streamed). Each parses,
//! calls the coordinator, and converts.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use futures::StreamExt;
use muster_api as wire;
use muster_core::{JobId, LogEntry};
use muster_service::log_search::LogSearchQuery as SearchQuery;
use serde::Deserialize;

use crate::convert::{level_from_wire, log_entry_to_wire};
use crate::extract::{PathId, QueryParams, UserCaller, parse_id};
use crate::state::AppState;
use crate::{ApiError, Json};

/// A search, as `crate::openapi::LogSearchParameters` describes it.
#[derive(Debug, Deserialize)]
pub(crate) struct LogSearchQuery {
    q: Option<String>,
    level: Option<wire::LogLevel>,
    after_seq: Option<u64>,
    limit: Option<u32>,
}

/// Search a job's log on the server: entries after `after_seq` whose message contains `q` and
/// whose level is at least `level`, among the next 50,000 entries; go on from `next_seq` until
/// it reaches `log_next_seq`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/logs/search", tag = "jobs", params(crate::openapi::JobIdPath, crate::openapi::LogSearchParameters),
    responses(
        (status = 200, description = "the matches among the entries this call looked at", body = wire::LogSearchPage),
        crate::openapi::AuthErrors, crate::openapi::IdErrors, crate::openapi::QueryErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn search_logs(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
    QueryParams(query): QueryParams<LogSearchQuery>,
) -> Result<Json<wire::LogSearchPage>, ApiError> {
    let id = JobId(parse_id(&id, "job")?);
    let page = state
        .coordinator
        .search_logs(
            &caller,
            id,
            SearchQuery {
                after_seq: query.after_seq,
                text: query.q,
                min_level: query.level.map(level_from_wire),
                limit: query.limit,
            },
        )
        .await?;
    Ok(Json(wire::LogSearchPage {
        items: page.items.into_iter().map(log_entry_to_wire).collect(),
        next_seq: page.next_seq,
        log_next_seq: page.log_next_seq,
    }))
}

/// A job's whole log as text, one line per entry (`<time> <LEVEL> <message>`), streamed as it
/// is read, for a download.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/logs/raw", tag = "jobs", params(crate::openapi::JobIdPath),
    responses(
        (status = 200, description = "the log as text", body = inline(crate::openapi::RawLogText), content_type = "text/plain"),
        crate::openapi::AuthErrors, crate::openapi::IdErrors,
    ),
    security(("admin_token" = [])))]
pub(crate) async fn raw_log(
    State(state): State<AppState>,
    UserCaller(caller): UserCaller,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let id = JobId(parse_id(&id, "job")?);
    let pages = state.coordinator.raw_log(&caller, id).await?;
    let body = pages.map(move |page| match page {
        Ok(entries) => Ok(bytes::Bytes::from(raw_lines(entries))),
        Err(error) => {
            // The status is sent already: the download ends short, and the log says why.
            tracing::warn!(%error, job = %id, "failed to read a log for its raw download");
            Err(std::io::Error::other(error.to_string()))
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"job-{}.log\"", id.0),
        )
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(body))
        .map_err(|error| ApiError::internal(format!("build the raw log answer: {error}")))
}

fn raw_lines(entries: Vec<LogEntry>) -> String {
    let mut text = String::new();
    for entry in entries {
        let wire = log_entry_to_wire(entry);
        let ts = wire
            .ts
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let level = match wire.level {
            wire::LogLevel::Trace => "TRACE",
            wire::LogLevel::Debug => "DEBUG",
            wire::LogLevel::Info => "INFO",
            wire::LogLevel::Warn => "WARN",
            wire::LogLevel::Error => "ERROR",
        };
        text.push_str(&ts);
        text.push(' ');
        text.push_str(level);
        text.push(' ');
        text.push_str(&wire.message);
        text.push('\n');
    }
    text
}
