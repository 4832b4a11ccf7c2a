//! The coordinator's sockets: accepting connections, serving HTTP/1.1 on them, and keeping
//! anyone who can reach the port from exhausting the process.
//!
//! Every connection is in one of two phases. *Waiting*: no request is being handled, either
//! because none has arrived yet or because the last answer was sent (keep-alive). *In flight*:
//! a request's head was read and its answer is not finished. A waiting connection is closed when
//! it does not deliver a complete request head within `--header-read-timeout` of its first byte
//! (or of being accepted, for a new connection), or when it delivers nothing at all within
//! `--idle-timeout` of its last answer. An in-flight connection has no idle deadline, so long
//! polls and live log streams stay open as long as they mean to; their request bodies, if any,
//! must arrive at `--body-min-rate` after `--body-read-timeout` (see [`DeadlineBody`]).
//!
//! At most `--max-connections` are open at once, never more than the process's open-file limit
//! allows after a reserve for the store, artifact files and logs. When a new connection arrives
//! at the limit, the waiting connection that has waited longest is closed to make room: idle
//! sockets cannot lock out runners and users, only delay each other. When every connection has a
//! request in flight, new connections wait in the listen queue until one ends.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::ApiError;
use muster_service::Coordinator;

/// The connection limits the coordinator serves with (checked; see `config.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionLimits {
    /// A request head must be complete this long after its first byte (or after the connection
    /// was accepted, for its first request).
    pub header_read_timeout: Duration,
    /// A kept-alive connection that sends nothing this long after its last answer is closed.
    pub idle_timeout: Duration,
    /// How long a request body may take before [`ConnectionLimits::body_min_rate`] applies.
    pub body_read_timeout: Duration,
    /// Bytes per second a request body must average once `body_read_timeout` has passed.
    pub body_min_rate: u64,
    /// Connections open at once, at most; lowered at start to what the open-file limit allows.
    pub max_connections: usize,
}

/// Open files the process keeps beside its connections whatever the store: standard streams,
/// the listening socket, the runtime's own descriptors, certificate reloads, a margin.
const BASE_RESERVED_FILES: u64 = 64;
/// The fewest connections served, however low the open-file limit.
const MINIMUM_CONNECTIONS: usize = 16;
/// How long a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a shutdown waits for requests in flight before closing their connections.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(30);
/// Repeated warnings about the same condition (the limit reached, accepting failing) are
/// logged at most this often, with a count of how often it happened meanwhile.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// Accepting that fails for want of resources is tried again after this, doubling up to
/// [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_START: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How many connections can be served with `open_file_limit` descriptors when the store and
/// the rest of the process need `store_files`: the configured maximum, lowered to what is left
/// after [`BASE_RESERVED_FILES`], the store's files and an eighth of the limit for artifact
/// files and other transient descriptors.
pub fn connection_limit(configured: usize, open_file_limit: u64, store_files: u64) -> usize {
    let reserved = BASE_RESERVED_FILES + store_files + open_file_limit / 8;
    let available = open_file_limit.saturating_sub(reserved);
    let available = usize::try_from(available).unwrap_or(usize::MAX);
    configured
        .min(available)
        .max(MINIMUM_CONNECTIONS.min(configured))
}

/// The process's open-file limit (soft), raised to the hard limit first: the default soft limit
/// of many systems (1,024) is far below what a coordinator with thousands of runners needs,
/// and raising it to the hard limit needs no privilege. Answers `(before, now)`.
pub fn raise_open_file_limit() -> std::io::Result<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft >= hard {
        return Ok((soft, soft));
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Ok((soft, hard)),
        Err(error) => {
            tracing::warn!(%error, soft, hard, "could not raise the open-file limit to its hard limit");
            Ok((soft, soft))
        }
    }
}

fn open_file_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

/// Where a connection is in its life; see the module documentation.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Waiting {
        /// Accepted, or last answer finished.
        since: Instant,
        /// No request has been served on it yet.
        first_request: bool,
        /// When the first byte of the next request head arrived.
        first_byte_at: Option<Instant>,
    },
    InFlight,
}

/// Which timeout closes a waiting connection.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    HeaderRead,
    Idle,
}

impl Deadline {
    fn explanation(self) -> &'static str {
        match self {
            Deadline::HeaderRead => "no complete request head within --header-read-timeout",
            Deadline::Idle => "idle for --idle-timeout after its last answer",
        }
    }

    fn metric_label(self) -> &'static str {
        match self {
            Deadline::HeaderRead => "header_timeout",
            Deadline::Idle => "idle_timeout",
        }
    }
}

/// What one connection's task and its socket share: the phase, and the signals that close it.
struct Activity {
    phase: Mutex<Phase>,
    /// Set while waiting for the first byte of a request, so reads need not lock to find out.
    awaiting_first_byte: AtomicBool,
    /// Wakes the connection's task to look at its deadline again.
    changed: Notify,
    /// Closes the connection now (evicted to make room).
    evict: CancellationToken,
    /// Requests being answered: one at a time over HTTP/1.1, any number at once over HTTP/2.
    /// Changed under the phase's lock, so the connection is waiting only when none is.
    requests_in_flight: std::sync::atomic::AtomicUsize,
}

impl Activity {
    fn new(now: Instant) -> Activity {
        Activity {
            phase: Mutex::new(Phase::Waiting {
                since: now,
                first_request: true,
                first_byte_at: None,
            }),
            awaiting_first_byte: AtomicBool::new(true),
            changed: Notify::new(),
            evict: CancellationToken::new(),
            requests_in_flight: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn phase(&self) -> Phase {
        match self.phase.lock() {
            Ok(phase) => *phase,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    fn bytes_arrived(&self) {
        if !self.awaiting_first_byte.swap(false, Ordering::AcqRel) {
            return;
        }
        if let Ok(mut phase) = self.phase.lock()
            && let Phase::Waiting { first_byte_at, .. } = &mut *phase
            && first_byte_at.is_none()
        {
            *first_byte_at = Some(Instant::now());
        }
        self.changed.notify_one();
    }

    fn request_started(&self) {
        if let Ok(mut phase) = self.phase.lock() {
            self.requests_in_flight.fetch_add(1, Ordering::AcqRel);
            *phase = Phase::InFlight;
        }
        self.awaiting_first_byte.store(false, Ordering::Release);
        self.changed.notify_one();
    }

    fn answer_finished(&self) {
        let mut now_waiting = false;
        if let Ok(mut phase) = self.phase.lock()
            && self.requests_in_flight.fetch_sub(1, Ordering::AcqRel) == 1
        {
            *phase = Phase::Waiting {
                since: Instant::now(),
                first_request: false,
                first_byte_at: None,
            };
            now_waiting = true;
        }
        if now_waiting {
            self.awaiting_first_byte.store(true, Ordering::Release);
        }
        self.changed.notify_one();
    }

    /// When the connection must be closed unless something happens first, and why.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Deadline)> {
        match self.phase() {
            Phase::InFlight => None,
            Phase::Waiting {
                since,
                first_request,
                first_byte_at,
            } => {
                let header_deadline =
                    first_byte_at.map(|first_byte| first_byte + limits.header_read_timeout);
                if first_request {
                    let from_accept = since + limits.header_read_timeout;
                    Some((
                        header_deadline.map_or(from_accept, |deadline| deadline.min(from_accept)),
                        Deadline::HeaderRead,
                    ))
                } else {
                    match header_deadline {
                        Some(deadline) => Some((deadline, Deadline::HeaderRead)),
                        None => Some((since + limits.idle_timeout, Deadline::Idle)),
                    }
                }
            }
        }
    }

    /// Since when the connection has been waiting, when it is (the longest waiting is closed
    /// first to make room).
    fn waiting_since(&self) -> Option<Instant> {
        match self.phase() {
            Phase::InFlight => None,
            Phase::Waiting { since, .. } => Some(since),
        }
    }
}

/// The open connections, to find one to close when the limit is reached.
struct OpenConnections {
    permits: Arc<Semaphore>,
    limit: usize,
    by_id: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
}

/// A connection's place among the open ones; leaving it (dropping) frees the place.
struct ConnectionSlot {
    id: u64,
    open: Arc<OpenConnections>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Ok(mut by_id) = self.open.by_id.lock() {
            by_id.remove(&self.id);
        }
    }
}

impl OpenConnections {
    fn new(limit: usize) -> Arc<OpenConnections> {
        Arc::new(OpenConnections {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            by_id: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    fn register(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> (ConnectionSlot, Arc<Activity>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new(Instant::now()));
        if let Ok(mut by_id) = self.by_id.lock() {
            by_id.insert(id, Arc::clone(&activity));
        }
        let slot = ConnectionSlot {
            id,
            open: Arc::clone(self),
            _permit: permit,
        };
        (slot, activity)
    }

    /// Close the connection that has been waiting (without a request in flight) the longest;
    /// false when every connection has a request in flight.
    fn evict_longest_waiting(&self) -> bool {
        let victim = match self.by_id.lock() {
            Ok(by_id) => by_id
                .values()
                .filter(|activity| !activity.evict.is_cancelled())
                .filter_map(|activity| activity.waiting_since().map(|since| (since, activity)))
                .min_by_key(|(since, _)| *since)
                .map(|(_, activity)| Arc::clone(activity)),
            Err(_) => None,
        };
        match victim {
            Some(activity) => {
                activity.evict.cancel();
                true
            }
            None => false,
        }
    }

    fn open_count(&self) -> usize {
        self.limit - self.permits.available_permits()
    }
}

/// Logs a recurring condition at most every [`WARNING_INTERVAL`], counting what it skipped.
struct RecurringWarning {
    last: Option<Instant>,
    skipped: u64,
}

impl RecurringWarning {
    fn new() -> RecurringWarning {
        RecurringWarning {
            last: None,
            skipped: 0,
        }
    }

    /// Whether to log now; answers how many occurrences since the last log line went unlogged.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now < last + WARNING_INTERVAL => {
                self.skipped += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.skipped))
            }
        }
    }
}

/// Accept errors that concern one connection only (it was reset before we took it): take the
/// next one at once. Anything else (out of descriptors or memory) needs a pause.
fn concerns_one_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionRefused
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
    )
}

/// What the connection tasks share.
struct Shared {
    router: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    coordinator: Coordinator,
}

/// Serve `router` on `listener` until `shutdown`, with the limits of the module documentation;
/// `store_files` is how many descriptors the store may hold open (see [`connection_limit`]).
/// On shutdown, stops accepting, lets requests in flight finish for up to [`SHUTDOWN_DRAIN`]
/// (long polls and live streams end on the same signal), then returns.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: ConnectionLimits,
    store_files: u64,
    coordinator: Coordinator,
    shutdown: CancellationToken,
) {
    let file_limit = open_file_limit();
    let limit = connection_limit(limits.max_connections, file_limit, store_files);
    if limit < limits.max_connections {
        tracing::info!(
            connections = limit,
            configured = limits.max_connections,
            open_file_limit = file_limit,
            "serving at most {limit} connections at once: the open-file limit ({file_limit}) allows no more beside the store's files (raise it with `ulimit -n` or LimitNOFILE= to serve more)"
        );
    }
    let open = OpenConnections::new(limit);
    let shared = Arc::new(Shared {
        router,
        limits,
        tls,
        shutdown: shutdown.clone(),
        coordinator,
    });
    let mut limit_warning = RecurringWarning::new();
    let mut accept_warning = RecurringWarning::new();
    let mut backoff = ACCEPT_BACKOFF_START;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF_START;
                accepted
            }
            Err(error) if concerns_one_connection(&error) => continue,
            Err(error) => {
                // Out of descriptors: a waiting connection closed frees one.
                open.evict_longest_waiting();
                if let Some(skipped) = accept_warning.due() {
                    tracing::warn!(
                        %error,
                        open_connections = open.open_count(),
                        failures_not_logged = skipped,
                        "accepting a connection failed; trying again in {backoff:?}"
                    );
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let permit = match Arc::clone(&open.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let evicted = open.evict_longest_waiting();
                if let Some(skipped) = limit_warning.due() {
                    if evicted {
                        tracing::warn!(
                            limit,
                            times_not_logged = skipped,
                            "connection limit reached ({limit}, --max-connections or the open-file limit): closing the connection that has waited longest without a request to make room"
                        );
                    } else {
                        tracing::warn!(
                            limit,
                            times_not_logged = skipped,
                            "connection limit reached ({limit}, --max-connections or the open-file limit) and every connection has a request in flight: new connections wait until one ends"
                        );
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    permit = Arc::clone(&open.permits).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                }
            }
        };
        let (slot, activity) = open.register(permit);
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "could not turn off Nagle's algorithm");
        }
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _slot = slot;
            shared.coordinator.connection_opened();
            serve_connection(stream, peer, activity, Arc::clone(&shared)).await;
            shared.coordinator.connection_ended();
        });
    }
    drop(listener);
    drain(&open, limit).await;
}

/// Wait until every connection has closed, for at most [`SHUTDOWN_DRAIN`].
async fn drain(open: &OpenConnections, limit: usize) {
    let busy = open.open_count();
    if busy == 0 {
        return;
    }
    tracing::info!(
        connections = busy,
        "waiting for requests in flight to finish (at most {SHUTDOWN_DRAIN:?})"
    );
    let permits = u32::try_from(limit).unwrap_or(u32::MAX);
    match tokio::time::timeout(SHUTDOWN_DRAIN, open.permits.acquire_many(permits)).await {
        Ok(_) => {}
        Err(_) => tracing::warn!(
            connections = open.open_count(),
            "requests still in flight after {SHUTDOWN_DRAIN:?}; closing their connections"
        ),
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    activity: Arc<Activity>,
    shared: Arc<Shared>,
) {
    match shared.tls.clone() {
        None => serve_http(TrackedIo::new(stream, &activity), peer, activity, shared).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let outcome = tokio::select! {
                outcome = handshake => outcome,
                _ = activity.evict.cancelled() => {
                    shared.coordinator.connection_closed("evicted");
                    return;
                }
                _ = shared.shutdown.cancelled() => return,
            };
            match outcome {
                Ok(Ok(stream)) => {
                    serve_http(TrackedIo::new(stream, &activity), peer, activity, shared).await
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve_http<S>(
    io: TrackedIo<S>,
    peer: SocketAddr,
    activity: Arc<Activity>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let shared = Arc::clone(&shared);
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request| {
            handle(request, peer, Arc::clone(&activity), Arc::clone(&shared))
        })
    };
    // HTTP/1.1 for the API and the dashboard, HTTP/2 (h2c in the clear, `h2` by ALPN under
    // TLS) for gRPC and any client that prefers it; the connection says which by its first
    // bytes.
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.http1().keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut shutting_down = false;
    loop {
        let deadline = activity.deadline(&shared.limits);
        let sleep = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            outcome = connection.as_mut() => {
                if let Err(error) = outcome {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            _ = activity.changed.notified() => {}
            _ = sleep => {
                if let Some((at, why)) = activity.deadline(&shared.limits)
                    && at <= Instant::now()
                {
                    tracing::debug!(%peer, "closing a connection: {}", why.explanation());
                    shared.coordinator.connection_closed(why.metric_label());
                    return;
                }
            }
            _ = activity.evict.cancelled() => {
                tracing::debug!(%peer, "closing a waiting connection to make room for a new one");
                shared.coordinator.connection_closed("evicted");
                return;
            }
            _ = shared.shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Serve one request through the router: the connection is in flight until the answer's body
/// is finished (or dropped), the request body is held to the minimum rate, and an answer sent
/// before its request body was read to the end says `Connection: close`, since the unread rest
/// would otherwise be taken for the next request.
async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    activity: Arc<Activity>,
    shared: Arc<Shared>,
) -> Result<Response<AnswerBody>, Infallible> {
    activity.request_started();
    let in_flight = InFlight(activity);
    let watch = Arc::new(BodyWatch::default());
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    parts.extensions.insert(muster_grpc::PeerAddress(peer.ip()));
    let mut body = DeadlineBody::new(body, &shared.limits, Arc::clone(&watch));
    // A runner's push stream is a request body that lasts for minutes and carries a heartbeat
    // every few seconds: far below any byte rate. Its liveness is the runner protocol's own
    // (a Hello within 30 s, then nothing silent for two heartbeat intervals, checked by the
    // stream's handler), and it is authenticated before its body is read.
    if is_runner_stream(&parts) {
        body.enforced = false;
    }
    let request = Request::from_parts(parts, axum::body::Body::new(body));
    let answer = match shared.router.clone().oneshot(request).await {
        Ok(answer) => answer,
        Err(never) => match never {},
    };
    let mut answer = if watch.timed_out.load(Ordering::Acquire) {
        shared.coordinator.connection_closed("body_too_slow");
        ApiError::new(muster_core::ErrorCode::RequestTimeout, format!(
            "the request body arrived too slowly: at least {} bytes a second are expected after the first {}s (--body-min-rate, --body-read-timeout)",
            shared.limits.body_min_rate,
            shared.limits.body_read_timeout.as_secs()
        ))
        .into_response()
    } else {
        answer
    };
    if !watch.finished.load(Ordering::Acquire) {
        answer
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(answer.map(|body| AnswerBody {
        body,
        _in_flight: in_flight,
    }))
}

/// Whether a request opens a runner's gRPC push stream (`RunnerProtocolService/Attach`).
fn is_runner_stream(parts: &axum::http::request::Parts) -> bool {
    parts.uri.path() == "/muster.runner.v1.RunnerProtocolService/Attach"
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/grpc"))
}

/// Marks the connection waiting again once the answer is finished or abandoned.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.answer_finished();
    }
}

/// An answer's body, holding the connection in flight until hyper is done with it.
pub(crate) struct AnswerBody {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl HttpBody for AnswerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What became of a request's body, for the answer.
#[derive(Default)]
struct BodyWatch {
    /// Read to its end (or it had none).
    finished: AtomicBool,
    /// Refused for arriving too slowly.
    timed_out: AtomicBool,
}

/// A request body arrived too slowly (see [`DeadlineBody`]).
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly: {received} bytes in {elapsed:?}")]
pub(crate) struct BodyTooSlow {
    received: u64,
    elapsed: Duration,
}

/// A request body that must keep up: once `body_read_timeout` has passed since the request
/// head, at least `body_min_rate` bytes a second on average must have arrived, that is byte `n`
/// is due by `head + body_read_timeout + n / body_min_rate`. A body that falls behind fails with
/// [`BodyTooSlow`], and its request is answered 408. The deadline moves with every byte, so an
/// honest large upload at any rate above the minimum completes however long it takes.
struct DeadlineBody {
    inner: Incoming,
    /// False for the bodies the rate does not apply to (runner push streams).
    enforced: bool,
    started: Instant,
    grace: Duration,
    min_rate: u64,
    received: u64,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    watch: Arc<BodyWatch>,
}

impl DeadlineBody {
    fn new(inner: Incoming, limits: &ConnectionLimits, watch: Arc<BodyWatch>) -> DeadlineBody {
        if inner.is_end_stream() {
            watch.finished.store(true, Ordering::Release);
        }
        DeadlineBody {
            inner,
            enforced: true,
            started: Instant::now(),
            grace: limits.body_read_timeout,
            min_rate: limits.body_min_rate.max(1),
            received: 0,
            sleep: None,
            watch,
        }
    }

    fn due(&self) -> Instant {
        let allowance = Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        self.started + self.grace + allowance
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(context) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    let due = this.due();
                    if let Some(sleep) = this.sleep.as_mut() {
                        sleep.as_mut().reset(due);
                    }
                }
                if this.inner.is_end_stream() {
                    this.watch.finished.store(true, Ordering::Release);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(Box::new(error)))),
            Poll::Ready(None) => {
                this.watch.finished.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Pending if !this.enforced => Poll::Pending,
            Poll::Pending => {
                let due = this.due();
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                if sleep.as_mut().poll(context).is_ready() {
                    this.watch.timed_out.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow {
                        received: this.received,
                        elapsed: this.started.elapsed(),
                    }))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's byte stream, telling its [`Activity`] when a request's first byte arrives.
struct TrackedIo<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> TrackedIo<S> {
    fn new(inner: S, activity: &Arc<Activity>) -> TrackedIo<S> {
        TrackedIo {
            inner,
            activity: Arc::clone(activity),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buffer.filled().len();
        let outcome = Pin::new(&mut self.inner).poll_read(context, buffer);
        if matches!(outcome, Poll::Ready(Ok(()))) && buffer.filled().len() > before {
            self.activity.bytes_arrived();
        }
        outcome
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(context, bytes)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::connection_limit;

    #[test]
    fn the_connection_limit_leaves_room_for_the_store_and_transient_files() {
        // Plenty of descriptors: the configured maximum.
        assert_eq!(connection_limit(10_000, 1_048_576, 27), 10_000);
        // 1,024: the reserve is 64 + the store + 128.
        assert_eq!(connection_limit(10_000, 1024, 27), 1024 - 64 - 27 - 128);
        // 256 with PostgreSQL's 21 connections.
        assert_eq!(connection_limit(10_000, 256, 21), 256 - 64 - 21 - 32);
        // Absurdly low limits still serve a few.
        assert_eq!(connection_limit(10_000, 64, 27), 16);
        // A configured maximum below the floor is kept.
        assert_eq!(connection_limit(4, 64, 27), 4);
    }
}
