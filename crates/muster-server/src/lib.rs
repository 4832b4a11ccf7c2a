//! The muster coordinator's HTTP front end: the API of `shared/api-v1.md` over a
//! [`muster_service::Coordinator`], which holds every rule. Handlers parse, call the
//! coordinator, and convert; `convert.rs` is where wire and domain types meet, `error.rs` where
//! error codes become statuses, `connections.rs` what the listening socket allows.
//!
//! [`run`] serves until its shutdown token is cancelled; [`build`] makes the router and the
//! coordinator without a socket, for embedding and tests.

pub mod access;
pub mod config;
mod connections;
mod convert;
mod dashboard;
mod error;
mod extract;
pub mod logging;
mod openapi;
mod routes;
mod state;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use muster_core::{Clock, SystemClock};
use muster_store::blobs::{BlobStore, LocalBlobStore};
use muster_store::postgres::{PostgresConfig, PostgresStore};
use muster_store::sqlite::{SqliteConfig, SqliteStore};
use muster_store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub(crate) use axum::Json;
pub use config::{DatabaseConfig, RawServerConfig, ServerConfig};
pub use connections::{connection_limit, raise_open_file_limit};
pub use error::{ApiError, http_status};
pub use muster_service::{
    CollectionError, CollectionReport, Coordinator, RETENTION_PAUSE, delete_finished_before,
    hash_token, load_or_create_admin_token,
};
pub use state::AppState;

/// The store a coordinator runs on, shared by its tasks.
pub type SharedStore = Arc<dyn Store>;

/// Open the store the configuration names (for PostgreSQL: connect and apply migrations). A
/// PostgreSQL database that cannot be reached yet is tried again, with the wait logged, for up
/// to `--database-wait`, so coordinators may start before their database; anything else (a
/// refused password, a missing database) fails at once.
pub async fn open_store(config: &ServerConfig) -> anyhow::Result<Arc<dyn Store>> {
    tracing::info!(store = %config.database.describe(), "opening the store");
    match &config.database {
        DatabaseConfig::Sqlite { path } => {
            let store = SqliteStore::open(&SqliteConfig {
                path: path.clone(),
                log_cap_bytes: config.log_cap_bytes,
            })
            .with_context(|| format!("open SQLite store {}", path.display()))?;
            Ok(Arc::new(store))
        }
        DatabaseConfig::Postgres {
            url,
            max_connections,
            wait,
        } => {
            let postgres_config = PostgresConfig {
                url: url.clone(),
                log_cap_bytes: config.log_cap_bytes,
                max_connections: *max_connections,
            };
            let context = || format!("open the store (--database {})", config.database.describe());
            let started = tokio::time::Instant::now();
            let mut delay = Duration::from_millis(250);
            loop {
                match PostgresStore::open(&postgres_config).await {
                    Ok(store) => {
                        if started.elapsed() > delay {
                            tracing::info!(
                                waited = ?started.elapsed(),
                                "the database answers; starting"
                            );
                        }
                        return Ok(Arc::new(store));
                    }
                    Err(StoreError::Unavailable(message)) => {
                        let waited = started.elapsed();
                        if waited >= *wait {
                            return Err(anyhow::anyhow!(
                                "store unavailable: {message} (gave up after {}; --database-wait sets how long to keep trying)",
                                humantime::format_duration(round_to_seconds(waited))
                            ))
                            .with_context(context);
                        }
                        let left = wait.saturating_sub(waited);
                        let pause = delay.min(left);
                        tracing::warn!(
                            "the database cannot be reached yet ({message}); trying again in {}, for up to {} more (--database-wait)",
                            humantime::format_duration(Duration::from_millis(
                                u64::try_from(pause.as_millis()).unwrap_or(u64::MAX)
                            )),
                            humantime::format_duration(round_to_seconds(left))
                        );
                        tokio::time::sleep(pause).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                    Err(error) => return Err(error).with_context(context),
                }
            }
        }
    }
}

fn round_to_seconds(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs_f64().round() as u64)
}

/// Connections the artifact store of a PostgreSQL coordinator opens at most, beside the job
/// store's: uploads and downloads stream for a long time and must not starve job operations.
pub(crate) const BLOB_MAX_CONNECTIONS: usize = 4;

/// Open the artifact store the configuration names: with SQLite, `<data-dir>/blobs/`; with
/// PostgreSQL, the same database, so every coordinator sharing it serves every artifact.
pub async fn open_blobs(config: &ServerConfig) -> anyhow::Result<Arc<dyn BlobStore>> {
    match &config.database {
        DatabaseConfig::Sqlite { .. } => Ok(local_blobs(config)),
        DatabaseConfig::Postgres { url, .. } => {
            let blobs = muster_store::postgres::open_blob_store(url, BLOB_MAX_CONNECTIONS)
                .await
                .with_context(|| {
                    format!(
                        "open the artifact store (--database {})",
                        config.database.describe()
                    )
                })?;
            Ok(Arc::new(blobs))
        }
    }
}

fn local_blobs(config: &ServerConfig) -> Arc<dyn BlobStore> {
    Arc::new(LocalBlobStore::new(config.data_dir.join("blobs")))
}

/// A coordinator ready to serve over HTTP: its router, and the coordinator behind it.
pub struct HttpServer {
    pub router: Router,
    pub coordinator: Coordinator,
    config: Arc<ServerConfig>,
}

/// Build the router over `store`, with artifacts in `<data-dir>/blobs/` and `clock` as the source
/// of "now" (for embedding and tests; [`run`] uses the artifact store the configuration names).
pub fn build(
    config: ServerConfig,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    admin_token: &str,
    shutdown: CancellationToken,
) -> HttpServer {
    let blobs = local_blobs(&config);
    build_with_blobs(config, store, blobs, clock, admin_token, shutdown)
}

/// [`build`] with an artifact store chosen by the caller.
pub fn build_with_blobs(
    config: ServerConfig,
    store: Arc<dyn Store>,
    blobs: Arc<dyn BlobStore>,
    clock: Arc<dyn Clock>,
    admin_token: &str,
    shutdown: CancellationToken,
) -> HttpServer {
    let (routes, openapi) = routes::routes();
    let coordinator = Coordinator::new(muster_service::CoordinatorParts {
        store,
        blobs,
        clock,
        config: config.service.clone(),
        admin_token: admin_token.to_string(),
        shutdown,
    });
    let state = AppState {
        coordinator: coordinator.clone(),
        max_body_bytes: config.max_body_bytes,
        openapi_json: Arc::new(openapi::render(&openapi)),
        secure_cookies: config.tls.is_some(),
    };
    // gRPC on the same port: its requests (`content-type: application/grpc`, over HTTP/2) go
    // to the services' own paths (`/muster.runners.v1.RunnersService/...`), which no API route
    // has, so they reach the fallback and are handed to tonic there.
    let grpc = match muster_grpc::services(coordinator.clone()) {
        Ok(grpc) => Some(grpc),
        Err(error) => {
            tracing::error!(%error, "serving without gRPC");
            None
        }
    };
    let router = routes
        .merge(dashboard::routes())
        .fallback(move |request: axum::extract::Request| grpc_or_not_found(grpc.clone(), request))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        // Bounds the extractors that buffer a body (JSON). The artifact routes take the raw
        // body stream instead, which this limit does not touch, and the coordinator counts its
        // bytes against --max-artifact-bytes while streaming them to the artifact store.
        .layer(axum::extract::DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state);
    HttpServer {
        router,
        coordinator,
        config: Arc::new(config),
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {}", uri.path()))
}

/// A gRPC request to the gRPC services; anything else is a path no route has.
async fn grpc_or_not_found(
    grpc: Option<tonic::service::Routes>,
    request: axum::extract::Request,
) -> Response {
    let is_grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"));
    match grpc {
        Some(grpc) if is_grpc => {
            use tower::ServiceExt;
            match grpc.oneshot(request).await {
                Ok(answer) => answer.map(axum::body::Body::new),
                Err(never) => match never {},
            }
        }
        _ => not_found(request.uri().clone()).await.into_response(),
    }
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        muster_core::ErrorCode::MethodNotAllowed,
        format!("{} is not allowed on {}", method, uri.path()),
    )
}

fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    let body = ApiError::internal("panic").body();
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
}

/// Serve on `listener` until `shutdown` is cancelled, with the system clock, running the reaper
/// and retention beside it. Prints `listening on http://HOST:PORT` once ready.
pub async fn run(
    config: ServerConfig,
    store: Arc<dyn Store>,
    admin_token: &str,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let blobs = open_blobs(&config).await?;
    let coordinator = build_with_blobs(
        config,
        store,
        blobs,
        Arc::new(SystemClock),
        admin_token,
        shutdown.clone(),
    );
    serve(coordinator, listener, shutdown).await
}

/// Serve a built coordinator on `listener` until `shutdown` is cancelled, running the reaper
/// and retention beside it. Prints `listening on SCHEME://HOST:PORT` once ready.
pub async fn serve(
    server: HttpServer,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = server.config;
    // Loaded before saying "listening", so a broken certificate is an error, not a silent port.
    let tls = match &config.tls {
        None => None,
        Some(files) => Some(
            tls::ServerTls::load(files)
                .context("load the TLS certificate")?
                .start(&shutdown),
        ),
    };
    let address = listener
        .local_addr()
        .context("read the listening address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let background = {
        let coordinator = server.coordinator.clone();
        tokio::spawn(async move { coordinator.run_background_tasks().await })
    };
    // Printed on stdout for scripts and tests that wait for it, whatever the log settings.
    logging::print_line(format_args!(
        "muster coordinator listening on {scheme}://{address}"
    ));
    tracing::info!(%address, scheme, "listening");
    connections::serve(
        listener,
        tls,
        server.router,
        config.connections.clone(),
        config.database.open_files(),
        server.coordinator,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    let _ = background.await;
    Ok(())
}
