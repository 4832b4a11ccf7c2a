//! The dashboard: three files compiled into the binary (`src/dashboard/`), a page that talks to
//! the same `/api/v1` routes as every other client, signed in by a session cookie. It has no
//! rule of its own: what it shows and what it may do is what the API answers.
//!
//! Every page is `index.html` (the script reads the path); the assets are answered with an
//! `ETag` so a browser revalidates them cheaply. Every answer carries a Content-Security-Policy
//! that allows scripts and styles from this origin only (no inline script, no inline style, no
//! other origin), and may not be framed.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::state::AppState;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");

/// What the dashboard's pages may load and do: only this origin's script, style and API, no
/// inline script or style, no plugins, no framing, forms posting here only.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The paths that answer the dashboard's page.
pub(crate) const PAGE_PATHS: &[&str] = &[
    "/",
    "/sign-in",
    "/jobs",
    "/jobs/{id}",
    "/runners",
    "/workloads",
    "/workloads/{id}",
    "/keys",
    "/kinds",
    "/tokens",
    "/organizations",
    "/audit",
];

/// The dashboard's routes, to merge beside the API's.
pub(crate) fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for path in PAGE_PATHS {
        router = router.route(path, get(page));
    }
    router
        .route("/assets/app.js", get(script))
        .route("/assets/app.css", get(style))
}

fn etag_of(contents: &str) -> String {
    let digest = Sha256::digest(contents.as_bytes());
    let hex: String = digest[..12]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("\"{hex}\"")
}

/// An embedded file, with the dashboard's security headers; 304 when the browser's copy is
/// this one.
fn embedded(contents: &'static str, content_type: &'static str, request: &HeaderMap) -> Response {
    let etag = etag_of(contents);
    let fresh = request
        .get(IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|sent| sent.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        contents.into_response()
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(ETAG, value);
    }
    add_security_headers(headers);
    response
}

/// The headers every dashboard answer carries.
pub(crate) fn add_security_headers(headers: &mut HeaderMap) {
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
}

async fn page(request: HeaderMap) -> Response {
    embedded(INDEX_HTML, "text/html; charset=utf-8", &request)
}

async fn script(request: HeaderMap) -> Response {
    embedded(APP_JS, "text/javascript; charset=utf-8", &request)
}

async fn style(request: HeaderMap) -> Response {
    embedded(APP_CSS, "text/css; charset=utf-8", &request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_files_the_policy_allows() {
        // Inline scripts, inline handlers and style attributes would be refused by the policy.
        for (name, text) in [("index.html", INDEX_HTML), ("app.js", APP_JS)] {
            for forbidden in ["<script>", " onclick=", " style=\"", "javascript:"] {
                assert!(!text.contains(forbidden), "{name} contains {forbidden:?}");
            }
        }
        for external in ["http://", "https://", "//cdn", "@import"] {
            assert!(
                !INDEX_HTML.contains(external),
                "index.html loads {external}"
            );
            assert!(!APP_CSS.contains(external), "app.css loads {external}");
        }
        assert!(INDEX_HTML.contains("src=\"/assets/app.js\""));
        assert!(INDEX_HTML.contains("href=\"/assets/app.css\""));
    }
}
