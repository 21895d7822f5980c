//! The operator console: a small web app served at `/`, its assets (`console/` at the repository
//! root: plain HTML, one ES module, CSS; no build step) embedded in the binary at compile time.
//!
//! The console holds no server-side state: it reads its token from `?token=` in its URL and
//! speaks the `copanel.v1.json` subprotocol over `/ws` like any other client.
use super::App;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

const INDEX_HTML: &str = include_str!("../../console/index.html");
const APP_JS: &str = include_str!("../../console/app.js");
const STYLE_CSS: &str = include_str!("../../console/style.css");

/// One embedded asset with its content type; never cached, so a new binary's console shows at
/// once.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The console's routes: `/`, `/console/app.js`, `/console/style.css`.
pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/console/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
}
