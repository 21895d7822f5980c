//! The operator console: a small web app served at `/`, its assets embedded in the binary.
use super::App;
use axum::Router;
use std::sync::Arc;

/// The console's routes.
pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
}
