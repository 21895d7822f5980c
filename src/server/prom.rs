//! Prometheus metrics at `/metrics`.
use super::App;
use axum::Router;
use std::sync::Arc;

/// The metrics route.
pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
}
