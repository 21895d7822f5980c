//! The network edge: HTTP routes, the WebSocket upgrade with authentication, start and graceful
//! shutdown.
//!
//! # Layout
//! - this file: [`Config`], [`start`], [`Running`] (the started server), `/healthz`, `/ws`'s
//!   upgrade (token check before the upgrade, subprotocol choice, connection cap).
//! - `conn`: one WebSocket connection: frames in, replies and live events out; `http` the
//!   platform API, `console` the embedded console, `prom` `/metrics`, `query` the queries.
//!
//! Never: let a panic or an error of one connection reach another or the writer.

mod conn;
mod console;
mod http;
mod prom;
mod query;

use crate::auth::{Auth, AuthError, Claims};
use crate::domain::Limits;
use crate::hub::Hub;
use crate::search::ContactIndex;
use crate::store::{SledStore, Store, StoreError};
use crate::writer::{self, Durability, WriterHandle};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use copanel_protocol::Encoding;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// Limits of the network edge (the domain's are in [`Limits`]).
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    /// Largest client frame, bytes; larger ones get `too_large` and the connection goes on.
    pub frame_bytes: usize,
    /// Frames above this many bytes make the WebSocket layer drop the connection (no close
    /// status is sent; clients see 1005 or 1006).
    pub hard_frame_bytes: usize,
    /// Subscriptions per connection.
    pub subscriptions: usize,
    /// Sustained commands per second per connection.
    pub commands_per_sec: f64,
    /// Command burst per connection.
    pub command_burst: f64,
    /// Largest `history` page.
    pub history_page: u64,
    /// Open WebSocket connections at once; more are refused with 503.
    pub connections: usize,
    /// Live events queued for one connection before its subscriptions fall back to the log.
    pub outbound_queue: usize,
    /// How often the server pings an idle connection.
    pub ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed. Checked at each
    /// ping, so a dead peer is gone within `idle_timeout + ping_interval` (30 s by default).
    pub idle_timeout: Duration,
    /// Sustained HTTP API requests per second per token subject (company and `sub`).
    pub http_requests_per_sec: f64,
    /// HTTP API request burst per token subject.
    pub http_burst: f64,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            frame_bytes: 64 * 1024,
            hard_frame_bytes: 1024 * 1024,
            subscriptions: 100,
            commands_per_sec: 50.0,
            command_burst: 100.0,
            history_page: 1000,
            connections: 20_000,
            outbound_queue: 1024,
            ping_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(20),
            http_requests_per_sec: 200.0,
            http_burst: 400.0,
        }
    }
}

/// Everything `copanel serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The data directory (sled store and generated secret).
    pub data: PathBuf,
    /// When acks are sent.
    pub durability: Durability,
    /// The token secret; `None` reads or creates `DATA/secret`.
    pub secret: Option<String>,
    /// Domain limits.
    pub limits: Limits,
    /// Edge limits.
    pub edge: EdgeLimits,
    /// Webhook delivery settings (backoff, polling, timeouts).
    pub webhooks: crate::webhooks::WebhookConfig,
    /// Store a stream's state every this many events (`0`: never), see [`crate::snapshot`].
    pub snapshot_every: u64,
    /// Capacity of the writer's request queue (commands beyond it wait in their connection).
    pub writer_queue: usize,
}

impl Config {
    /// The embedded default: `./copanel-data`, 127.0.0.1:7700, `sync`.
    pub fn new(listen: SocketAddr, data: PathBuf) -> Self {
        Config {
            listen,
            data,
            durability: Durability::Sync,
            secret: None,
            limits: Limits::default(),
            edge: EdgeLimits::default(),
            webhooks: crate::webhooks::WebhookConfig::default(),
            snapshot_every: crate::snapshot::DEFAULT_EVERY,
            writer_queue: 4096,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The data directory is not a directory or cannot be created.
    #[error("cannot use the data directory {dir}: {why}")]
    DataDir {
        /// The data directory.
        dir: String,
        /// What is wrong.
        why: String,
    },
    /// The secret could not be read or created.
    #[error("cannot read or create the secret in {dir}: {err}")]
    Secret {
        /// The data directory.
        dir: String,
        /// The I/O error.
        err: std::io::Error,
    },
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {err}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        err: std::io::Error,
    },
}

/// State shared by every request and connection.
pub(crate) struct App {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) hub: Arc<Hub>,
    /// The contact search index, kept current by the writer.
    pub(crate) contacts: Arc<ContactIndex>,
    pub(crate) writer: WriterHandle,
    /// The webhook registrations and delivery tasks.
    pub(crate) webhooks: Arc<crate::webhooks::Webhooks>,
    pub(crate) auth: Auth,
    pub(crate) edge: EdgeLimits,
    /// Connection ids, for hub registrations.
    pub(crate) next_conn: AtomicU64,
    /// Caps open connections; a permit lives as long as its connection.
    pub(crate) conn_permits: Arc<Semaphore>,
    /// Live connections, so shutdown can wait for them to close.
    pub(crate) live: AtomicUsize,
    /// Flips to `true` once on shutdown; every connection watches it.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The HTTP API's per-caller request budget.
    pub(crate) http_limiter: http::RateLimiter,
}

/// A started server.
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The store's epoch.
    pub epoch: String,
    /// The secret tokens must be signed with.
    pub auth: Auth,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Stopped>,
    /// A handle on the writer, for [`Running::command`] (the demo's seeding).
    writer: WriterHandle,
}

/// How a server stopped ([`Running::shutdown`], [`Running::wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every writer handle was released: the writer drained its queue, flushed and ended.
    Drained,
    /// A writer handle was still held after the grace period (an idle keep-alive HTTP
    /// connection can hold one); the store was flushed once more and the writer left behind.
    WriterStillReferenced,
    /// The server's task panicked or was cancelled.
    Aborted,
}

impl Running {
    /// Stops accepting, closes every connection with 1001, lets the writer drain and flush, and
    /// returns when all of that is done, saying how.
    pub async fn shutdown(self) -> Stopped {
        // The writer stops only once every handle is gone, this one included.
        let Running {
            stop, task, writer, ..
        } = self;
        drop(writer);
        let _ = stop.send(true);
        task.await.unwrap_or(Stopped::Aborted)
    }

    /// Waits until the server stops (after [`Running::shutdown`] from elsewhere, or a signal
    /// when started with one).
    pub async fn wait(self) -> Stopped {
        let Running { task, writer, .. } = self;
        drop(writer);
        task.await.unwrap_or(Stopped::Aborted)
    }

    /// A sender that triggers shutdown; for signal handlers.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }

    /// Submits a command as `principal` of `company` straight to the writer (no connection, no
    /// rate limit; the domain's rules still apply). For in-process callers such as `copanel demo`.
    pub async fn command(
        &self,
        company: &str,
        principal: crate::domain::Principal,
        stream: copanel_protocol::StreamName,
        command_id: &str,
        command: copanel_protocol::Command,
    ) -> Result<crate::store::CommandOutcome, writer::CommandError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.writer
            .submit(writer::CommandRequest {
                company: Arc::from(company),
                principal,
                stream,
                command_id: command_id.to_owned(),
                expected_seq: None,
                command,
                reply,
            })
            .await;
        rx.await.unwrap_or_else(|_| {
            Err(writer::CommandError::Unavailable(
                "the writer stopped".into(),
            ))
        })
    }
}

/// Opens the store, starts the writer and the listener. Returns once the server accepts
/// connections.
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_wrapped(config, |store| store).await
}

/// [`start`], with the opened store passed through `wrap` before anything uses it (tests wrap
/// it to inject storage faults: a full disk, an I/O error).
pub async fn start_wrapped(
    config: Config,
    wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
) -> Result<Running, StartError> {
    if config.data.exists() && !config.data.is_dir() {
        return Err(StartError::DataDir {
            dir: config.data.display().to_string(),
            why: "it exists and is not a directory".into(),
        });
    }
    std::fs::create_dir_all(&config.data).map_err(|err| StartError::DataDir {
        dir: config.data.display().to_string(),
        why: format!("cannot create it: {err}"),
    })?;
    let secret = match &config.secret {
        Some(s) => s.as_bytes().to_vec(),
        None => {
            crate::auth::load_or_create_secret(&config.data).map_err(|err| StartError::Secret {
                dir: config.data.display().to_string(),
                err,
            })?
        }
    };
    let auth = Auth::new(&secret);
    let store: Arc<dyn Store> = wrap(Arc::new(SledStore::open(&config.data)?));
    let epoch = store.epoch().to_owned();
    let hub = Arc::new(Hub::new());
    let contacts = Arc::new(ContactIndex::new());
    let outbox = crate::webhooks::Outbox::new();
    let webhooks =
        crate::webhooks::Webhooks::start(store.clone(), outbox.shared(), config.webhooks.clone())?;
    let (writer, writer_task) = writer::spawn_tuned(
        store.clone(),
        hub.clone(),
        contacts.clone(),
        config.durability,
        config.limits.clone(),
        outbox,
        writer::Tuning {
            queue: config.writer_queue.max(1),
            snapshot_every: config.snapshot_every,
        },
    );
    webhooks.attach_writer(writer.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|err| StartError::Bind {
            addr: config.listen,
            err,
        })?;
    let addr = listener.local_addr().map_err(|err| StartError::Bind {
        addr: config.listen,
        err,
    })?;
    let (stop, stop_rx) = watch::channel(false);
    let running_writer = writer.clone();
    let app = Arc::new(App {
        store,
        hub: hub.clone(),
        contacts,
        writer,
        webhooks: webhooks.clone(),
        auth: auth.clone(),
        edge: config.edge.clone(),
        next_conn: AtomicU64::new(1),
        conn_permits: Arc::new(Semaphore::new(config.edge.connections)),
        live: AtomicUsize::new(0),
        shutdown: stop_rx.clone(),
        http_limiter: http::RateLimiter::new(
            config.edge.http_requests_per_sec,
            config.edge.http_burst,
        ),
    });
    let router = Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/healthz", get(healthz))
        .merge(http::routes())
        .merge(crate::webhooks::routes())
        .merge(console::routes())
        .merge(prom::routes())
        .with_state(app.clone());

    let durability = config.durability;
    let task = tokio::spawn(async move {
        let mut stop_rx2 = stop_rx.clone();
        // No Nagle delay: frames are small and each write is already batched and flushed once
        // (see `conn`); without it a reply of two frames (`subscribed`, `snapshot`) waits for
        // the peer's delayed ACK, ~40 ms on Linux.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set");
            }
        });
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = stop_rx2.wait_for(|s| *s).await;
        });
        // Background upkeep: drop idle projections so memory follows the live working set.
        let upkeep_hub = hub.clone();
        let mut upkeep_stop = stop_rx.clone();
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = tick.tick() => { upkeep_hub.evict_idle(10_000); }
                    _ = async { upkeep_stop.wait_for(|s| *s).await.is_ok() } => break,
                }
            }
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "server error");
        }
        // Upgraded WebSockets are not tracked by axum: wait for them to close (each got 1001).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while app.live.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = upkeep.await;
        // Webhook deliveries stop (positions flushed) before the writer's last flush.
        webhooks.shutdown().await;
        let store = app.store.clone();
        drop(app); // the last writer handle: the writer drains, flushes and stops
                   // An idle keep-alive HTTP connection can hold a clone of the state (and so a writer
                   // handle) past shutdown; every batch is already flushed, so after a grace period flush
                   // once more and stop without it.
        let stopped = if tokio::time::timeout(Duration::from_secs(5), writer_task)
            .await
            .is_err()
        {
            tracing::warn!("writer still referenced after shutdown; flushing and stopping");
            if let Err(e) = store.flush().await {
                tracing::error!(error = %e, "final flush failed");
            }
            Stopped::WriterStillReferenced
        } else {
            Stopped::Drained
        };
        tracing::info!(?stopped, "stopped");
        stopped
    });
    tracing::info!(%addr, ?durability, %epoch, "copanel listening");
    Ok(Running {
        addr,
        epoch,
        auth,
        stop,
        task,
        writer: running_writer,
    })
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    use crate::metrics::*;
    let (streams, subscriptions) = app.hub.counts();
    let store_error = app.writer.health().last_error();
    let status = if *app.shutdown.borrow() {
        "stopping"
    } else if store_error.is_some() {
        // Still 200: the process is alive and serves reads; writes fail with `unavailable`.
        "degraded"
    } else {
        "ok"
    };
    Json(serde_json::json!({
        "status": status,
        "store_error": store_error,
        "store_failures": app.writer.health().failures(),
        "epoch": app.store.epoch(),
        "connections": app.live.load(Ordering::Relaxed),
        "loaded_streams": streams,
        "subscriptions": subscriptions,
        "events_appended": EVENTS_APPENDED.get(),
        "commands_acked": COMMANDS_ACKED.get(),
        "commands_refused": COMMANDS_REFUSED.get(),
        "batches": BATCHES.get(),
        "slow_consumer_fallbacks": SLOW_CONSUMER_FALLBACKS.get(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
}

fn http_error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(serde_json::json!({ "code": code, "message": message })),
    )
        .into_response()
}

/// An `/api/v1` caller: a valid service or admin token within its request budget, or the
/// API's JSON error answer (401, 403 or 429). Shared by the HTTP API and webhook management.
pub(crate) fn api_caller(
    app: &App,
    headers: &HeaderMap,
) -> Result<crate::auth::Claims, Box<axum::response::Response>> {
    use axum::response::IntoResponse;
    http::caller(app, headers).map_err(|e| Box::new(e.into_response()))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Picks the encoding from the offered subprotocols: JSON if offered (and msgpack not offered
/// before it), msgpack if offered or nothing is offered; `Err` if only unknown ones are offered.
fn choose_encoding(headers: &HeaderMap) -> Result<Encoding, String> {
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(Encoding::Msgpack);
    }
    for p in &offered {
        if p == copanel_protocol::SUBPROTOCOL_MSGPACK {
            return Ok(Encoding::Msgpack);
        }
        if p == copanel_protocol::SUBPROTOCOL_JSON {
            return Ok(Encoding::Json);
        }
    }
    Err(format!(
        "no supported subprotocol in {offered:?}; use {} or {}",
        copanel_protocol::SUBPROTOCOL_MSGPACK,
        copanel_protocol::SUBPROTOCOL_JSON
    ))
}

/// Bytes the WebSocket layer reads per call. tungstenite's default (128 KiB) is resident for
/// every connection, idle or not (2,000 idle connections cost 280 MB: 140 KiB each, 15 KiB with
/// this), and zero-filled before every read, which made `memset` a third of the server's CPU
/// under fan-out load (perf, examples/load.rs); see BENCHMARKS.md. Client frames are small
/// (64 KiB at most); a larger one is read in several calls.
const WS_READ_BUFFER: usize = 4 * 1024;
/// Bytes queued before the WebSocket layer writes without waiting for a flush (the connection
/// flushes after each batch anyway). Bounds the capacity a busy connection's buffer keeps.
const WS_WRITE_BUFFER: usize = 16 * 1024;

async fn ws_upgrade(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let token = bearer(&headers).map(str::to_owned).or(q.token);
    let claims: Claims = match token {
        None => {
            return http_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                AuthError::Missing.to_string(),
            )
        }
        Some(t) => match app.auth.verify(&t) {
            Ok(c) => c,
            Err(e) => return http_error(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()),
        },
    };
    let enc = match choose_encoding(&headers) {
        Ok(e) => e,
        Err(m) => return http_error(StatusCode::BAD_REQUEST, "bad_frame", m),
    };
    if *app.shutdown.borrow() {
        return http_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is shutting down".into(),
        );
    }
    let Ok(permit) = app.conn_permits.clone().try_acquire_owned() else {
        return http_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "the server holds its maximum of {} connections",
                app.edge.connections
            ),
        );
    };
    let offered = headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL);
    let ws = if offered {
        ws.protocols([enc.subprotocol()])
    } else {
        ws
    };
    ws.max_message_size(app.edge.hard_frame_bytes)
        .max_frame_size(app.edge.hard_frame_bytes)
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .on_upgrade(move |socket| conn::run(app, socket, claims, enc, permit))
}
