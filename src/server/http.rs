//! The HTTP integration API (`/api/v1/…`) for the platform: JSON, service/admin tokens, the
//! same command path and validation as the WebSocket.
use super::App;
use axum::Router;
use std::sync::Arc;

/// The API's routes.
pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
}
