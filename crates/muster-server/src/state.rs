//! What every request handler shares: the coordinator, and what only the HTTP front end needs.

use std::sync::Arc;

use muster_service::Coordinator;

#[derive(Clone)]
pub struct AppState {
    /// Every rule, every decision about who may do what.
    pub coordinator: Coordinator,
    /// The largest JSON request body (`--max-body-bytes`).
    pub(crate) max_body_bytes: usize,
    /// The served OpenAPI document, rendered once.
    pub(crate) openapi_json: Arc<String>,
    /// Whether cookies are marked `Secure` (served over HTTPS).
    pub(crate) secure_cookies: bool,
}
