//! One WebSocket connection.
//!
//! A single task owns the socket and runs one `select!` over: frames from the client, command
//! results from the writer (in request order), room in the writer's queue for commands that
//! found it full, live events from the hub's bounded queue, lag signals (a subscription that
//! overflowed the queue catches up from the log), server pings and the idle timeout, token
//! expiry, and shutdown. No turn waits for the writer: a command goes into its queue at once or
//! waits here, in order, while events and replies keep flowing; at `MAX_IN_FLIGHT` unanswered
//! commands the socket is not read. Writes to the socket are batched: everything ready (events
//! and command replies together) is fed, then flushed once.
//!
//! Never: hold a hub lock or a DashMap guard across an `.await` (the hub API makes that
//! impossible: it takes closures), or let bad input end the connection — a bad frame gets an
//! `error` frame and the loop goes on.

use super::App;
use crate::auth::Claims;
use crate::domain::{self, Principal};
use crate::hub::{LagSignal, Outbound, Register, Subscriber, Watcher};
use crate::store::{StoreError, StreamId};
use crate::writer::{CommandError, CommandRequest};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use copanel_protocol::{ClientFrame, Encoding, ErrorCode, ServerFrame, StreamName};
use futures::stream::{FuturesOrdered, SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

/// Close code sent when a text frame is not valid UTF-8 (RFC 6455 "invalid frame payload data").
pub const CLOSE_INVALID_UTF8: u16 = 1007;
/// Close code sent when the token expires during the connection.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// Close code sent when the client has been silent past the idle timeout.
pub const CLOSE_IDLE: u16 = 4002;
/// Events read from the log per page during catch-up.
const CATCH_UP_PAGE: usize = 256;
/// Live events (or command replies) written per socket flush.
const WRITE_BATCH: usize = 128;
/// Commands a connection may have in flight (received, not yet answered). At the cap the
/// connection stops reading its socket until a reply is sent: that is its backpressure, and
/// it bounds the replies and the not-yet-submitted commands it holds.
const MAX_IN_FLIGHT: usize = 128;
/// Sustained activity hints per second per connection.
const ACTIVITY_PER_SEC: f64 = 5.0;
/// Activity hint burst per connection.
const ACTIVITY_BURST: f64 = 10.0;
/// Longest activity hint, characters.
const ACTIVITY_CHARS: usize = 64;

type Reply = Pin<Box<dyn Future<Output = ServerFrame> + Send>>;

/// Why the loop ends.
enum End {
    /// The client went away or the socket failed.
    Gone,
    /// We close with this code and reason.
    Close(u16, &'static str),
}

struct Conn {
    app: Arc<App>,
    id: u64,
    enc: Encoding,
    company: Arc<str>,
    principal: Arc<Principal>,
    sink: SplitSink<WebSocket, Message>,
    /// Streams this connection is subscribed to (live or catching up), with the last seq sent
    /// to the client on each. Anything at or below it is never sent again: that covers events
    /// still queued from before an unsubscribe or a repeated subscribe.
    subs: HashMap<StreamName, u64>,
    /// The sending half handed to the hub with each subscription.
    events_tx: mpsc::Sender<Outbound>,
    lag: Arc<LagSignal>,
    /// Token bucket for commands: (tokens, last refill).
    bucket: (f64, Instant),
    /// The token's display name, shown to other viewers in presence.
    name: Option<String>,
    /// Token bucket for activity hints, apart from commands: typing must not eat the command
    /// budget, nor a flood of hints reach the other viewers.
    activity_bucket: (f64, Instant),
    /// Commands received while the writer's queue was full, in order, waiting for room; their
    /// replies are already in the ordered reply set. At most `MAX_IN_FLIGHT`.
    pending: VecDeque<Box<CommandRequest>>,
}

pub(super) async fn run(
    app: Arc<App>,
    socket: WebSocket,
    claims: Claims,
    enc: Encoding,
    _permit: OwnedSemaphorePermit,
) {
    app.live.fetch_add(1, Ordering::SeqCst);
    crate::metrics::CONNECTIONS_OPENED.inc();
    let id = app.next_conn.fetch_add(1, Ordering::Relaxed);
    let (sink, stream) = socket.split();
    let (events_tx, events_rx) = mpsc::channel(app.edge.outbound_queue);
    let burst = app.edge.command_burst;
    let mut conn = Conn {
        app: app.clone(),
        id,
        enc,
        company: Arc::from(claims.company.as_str()),
        principal: Arc::new(claims.principal()),
        sink,
        subs: HashMap::new(),
        events_tx,
        lag: Arc::new(LagSignal::default()),
        bucket: (burst, Instant::now()),
        name: claims.name.clone(),
        activity_bucket: (ACTIVITY_BURST, Instant::now()),
        pending: VecDeque::new(),
    };
    tracing::info!(conn = id, operator = %claims.sub, company = %claims.company, role = ?claims.role, ?enc, "connection opened");
    if claims.role != copanel_protocol::Role::Service {
        // The roster is how a redirect to a group reaches the group's members.
        app.writer.roster(
            conn.company.clone(),
            claims.sub.clone(),
            claims.groups.clone(),
        );
    }
    let end = conn.serve(stream, events_rx, claims.exp).await;
    let why = match &end {
        End::Gone => "client gone",
        End::Close(_, reason) => reason,
    };
    if let End::Close(code, reason) = end {
        let _ = conn
            .sink
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            })))
            .await;
    }
    let _ = conn.sink.close().await;
    for (s, _) in conn.subs.drain() {
        let sid = StreamId::new(conn.company.clone(), s);
        app.hub.unregister(&sid, id);
        // The other viewers see this one go as soon as its connection ends (at the latest
        // at the idle timeout for a peer that died silently).
        app.hub.leave(&sid, id);
    }
    tracing::info!(conn = id, operator = %claims.sub, company = %claims.company, reason = why, "connection closed");
    crate::metrics::CONNECTIONS_CLOSED.inc();
    app.live.fetch_sub(1, Ordering::SeqCst);
}

fn error_frame(
    id: Option<u64>,
    code: ErrorCode,
    message: impl Into<String>,
    field: Option<String>,
    stream: Option<StreamName>,
) -> ServerFrame {
    ServerFrame::Error {
        id,
        code,
        message: message.into(),
        field,
        head: None,
        stream,
    }
}

pub(super) fn store_error(id: Option<u64>, stream: &StreamName, e: StoreError) -> ServerFrame {
    match e {
        StoreError::Backend(m) => {
            tracing::warn!(%stream, error = %m, "store unavailable");
            error_frame(
                id,
                ErrorCode::Unavailable,
                format!("the store is unavailable: {m}"),
                None,
                Some(stream.clone()),
            )
        }
        StoreError::Corrupt { .. } => {
            tracing::error!(%stream, error = %e, "corrupt record");
            error_frame(
                id,
                ErrorCode::Internal,
                "a stored record could not be read; the operator has been told in the logs",
                None,
                Some(stream.clone()),
            )
        }
    }
}

impl Conn {
    async fn serve(
        &mut self,
        mut stream: SplitStream<WebSocket>,
        mut events_rx: mpsc::Receiver<Outbound>,
        exp: u64,
    ) -> End {
        let mut replies: FuturesOrdered<Reply> = FuturesOrdered::new();
        let mut shutdown = self.app.shutdown.clone();
        // The first ping comes at a random point of the first period: connections opened
        // together (a reconnect storm, a load test) would otherwise all ping in the same
        // millisecond every period, and 5000 pings and pongs at once were a 50-100 ms stall
        // for every connection on the same workers.
        let period = self.app.edge.ping_interval;
        let first = tokio::time::Instant::now() + period.mul_f64(rand::random::<f64>());
        let mut ping = tokio::time::interval_at(first, period);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let expires_at = std::time::UNIX_EPOCH + Duration::from_secs(exp);
        let expires_in = expires_at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        let expiry = tokio::time::sleep(expires_in);
        tokio::pin!(expiry);
        let lag = self.lag.clone();
        let writer = self.app.writer.clone();
        // The shutdown and lag futures live across turns: made anew each turn, they would
        // register with (and leave) the watch channel shared by every connection and the
        // connection's `Notify` on every wake-up, which is one per delivered event.
        let stopping = async move { shutdown.wait_for(|s| *s).await.is_ok() };
        tokio::pin!(stopping);
        let lagged = lag.notify.notified();
        tokio::pin!(lagged);

        loop {
            // `biased`: branches are polled in this order, and a wake-up for a live event (the
            // common one: one per delivered event) writes it without first polling the socket
            // for client frames, which costs a lock and a read attempt each time. The timers
            // come first so that a busy connection still pings, times out and expires.
            let step: Result<(), End> = tokio::select! {
                biased;
                _ = &mut stopping => {
                    Err(End::Close(1001, "server shutting down"))
                }
                _ = &mut expiry => {
                    let f = error_frame(None, ErrorCode::Unauthorized, "the token has expired", None, None);
                    let _ = self.send(&f).await;
                    Err(End::Close(CLOSE_TOKEN_EXPIRED, "token expired"))
                }
                _ = ping.tick() => {
                    if replies.len() >= MAX_IN_FLIGHT {
                        // Not reading the socket is our choice, not the client's silence.
                        last_heard = Instant::now();
                    }
                    if last_heard.elapsed() > self.app.edge.idle_timeout {
                        Err(End::Close(CLOSE_IDLE, "idle timeout"))
                    } else {
                        self.sink.send(Message::Ping(Bytes::new())).await.map_err(|_| End::Gone)
                    }
                }
                Some(ev) = events_rx.recv() => match self.feed_outbound(ev).await {
                    Ok(()) => self.write_ready(&mut events_rx, &mut replies).await,
                    Err(end) => Err(end),
                },
                Some(frame) = replies.next(), if !replies.is_empty() => match self.feed_reply(frame).await {
                    Ok(()) => self.write_ready(&mut events_rx, &mut replies).await,
                    Err(end) => Err(end),
                },
                // At the in-flight cap the socket is not read: the client waits for replies.
                msg = stream.next(), if replies.len() < MAX_IN_FLIGHT => {
                    last_heard = Instant::now();
                    match msg {
                        Some(Err(e)) if invalid_utf8(&e) => {
                            Err(End::Close(CLOSE_INVALID_UTF8, "invalid UTF-8 in a text frame"))
                        }
                        None | Some(Err(_)) => Err(End::Gone),
                        Some(Ok(Message::Close(_))) => Err(End::Gone),
                        Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => Ok(()),
                        Some(Ok(Message::Text(t))) => self.on_frame(Bytes::from(t), &mut replies).await,
                        Some(Ok(Message::Binary(b))) => self.on_frame(b, &mut replies).await,
                    }
                }
                _ = &mut lagged => {
                    lagged.set(lag.notify.notified());
                    self.on_lag(&mut events_rx, &mut replies).await
                }
                // Commands the writer had no room for, submitted in the order received as soon as
                // it has: the loop goes on writing events and replies meanwhile.
                permit = writer.reserve(), if !self.pending.is_empty() => {
                    // `None`: the writer stopped; `submit_pending` answers what waits.
                    if let Some(p) = permit {
                        if let Some(req) = self.pending.pop_front() {
                            p.submit(req);
                        }
                    }
                    self.submit_pending();
                    Ok(())
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn send(&mut self, frame: &ServerFrame) -> Result<(), End> {
        let bytes = self.enc.encode_frame(frame);
        self.sink
            .send(self.message(bytes))
            .await
            .map_err(|_| End::Gone)
    }

    /// After the frame that woke the loop was fed, feeds what else is ready, then flushes
    /// once: queued live events and finished command replies (each kind in its own order), up
    /// to `WRITE_BATCH` frames in all. The sender of a command usually has its `event` and its
    /// `ack` ready at the same moment (the writer publishes, then acks): one flush, so one
    /// `sendto`, carries both (the protocol lets either come first).
    async fn write_ready(
        &mut self,
        rx: &mut mpsc::Receiver<Outbound>,
        replies: &mut FuturesOrdered<Reply>,
    ) -> Result<(), End> {
        for _ in 1..WRITE_BATCH {
            if let Ok(out) = rx.try_recv() {
                self.feed_outbound(out).await?;
                continue;
            }
            if replies.is_empty() {
                break;
            }
            match futures::poll!(replies.next()) {
                std::task::Poll::Ready(Some(frame)) => self.feed_reply(frame).await?,
                _ => break,
            }
        }
        self.sink.flush().await.map_err(|_| End::Gone)
    }

    /// Feeds one command reply to the socket. Not flushed.
    async fn feed_reply(&mut self, frame: ServerFrame) -> Result<(), End> {
        let msg = self.message(self.enc.encode_frame(&frame));
        self.sink.feed(msg).await.map_err(|_| End::Gone)
    }

    /// Hands the writer the waiting commands, in order, while its queue has room. If the
    /// writer has stopped, `try_submit` answers each `unavailable`.
    fn submit_pending(&mut self) {
        while let Some(req) = self.pending.pop_front() {
            if let Err(req) = self.app.writer.try_submit(req) {
                self.pending.push_front(req);
                break;
            }
        }
    }

    fn message(&self, bytes: Bytes) -> Message {
        match self.enc {
            Encoding::Msgpack => Message::Binary(bytes),
            // Our JSON encoder only writes UTF-8; the check is cheap insurance.
            Encoding::Json => match Utf8Bytes::try_from(bytes) {
                Ok(t) => Message::Text(t),
                Err(_) => Message::Text(Utf8Bytes::from(
                    r#"{"type":"error","code":"internal","message":"non-UTF-8 JSON"}"#,
                )),
            },
        }
    }

    /// Feeds one live event (or presence/activity frame) to the socket, unless it no longer
    /// applies: events queued before an unsubscribe or already sent, frames about a stream no
    /// longer subscribed. Not flushed.
    async fn feed_outbound(&mut self, out: Outbound) -> Result<(), End> {
        match out {
            Outbound::Event(ev) => {
                if let Some(sent) = self.subs.get_mut(&ev.env.stream) {
                    if ev.env.seq > *sent {
                        *sent = ev.env.seq;
                        let msg = self.message(ev.bytes(self.enc));
                        self.sink.feed(msg).await.map_err(|_| End::Gone)?;
                    }
                }
            }
            Outbound::Frame(f) => {
                if self.subs.contains_key(&f.stream) {
                    let msg = self.message(f.bytes(self.enc));
                    self.sink.feed(msg).await.map_err(|_| End::Gone)?;
                }
            }
        }
        Ok(())
    }

    /// Some subscriptions overflowed the queue: send what is queued (it precedes the gap), then
    /// catch each lagged stream up from the log and put it back live.
    async fn on_lag(
        &mut self,
        rx: &mut mpsc::Receiver<Outbound>,
        replies: &mut FuturesOrdered<Reply>,
    ) -> Result<(), End> {
        while let Ok(ev) = rx.try_recv() {
            self.feed_outbound(ev).await?;
            self.write_ready(rx, replies).await?;
        }
        for sid in self.lag.take_revoked() {
            if self.subs.remove(&sid.stream).is_some() {
                self.app.hub.leave(&sid, self.id);
                let f = error_frame(
                    None,
                    ErrorCode::Forbidden,
                    format!(
                        "read access to {} was withdrawn; the subscription has ended",
                        sid.stream
                    ),
                    None,
                    Some(sid.stream.clone()),
                );
                self.send(&f).await?;
            }
        }
        for (sid, last) in self.lag.take() {
            let Some(&sent) = self.subs.get(&sid.stream) else {
                continue;
            };
            // What was queued is sent by now, so `sent` >= `last`; resume after the later.
            let last = last.max(sent);
            tracing::debug!(conn = self.id, stream = %sid, last, "slow consumer: catching up from the log");
            if let Err(f) = self.catch_up(&sid, last).await? {
                self.subs.remove(&sid.stream);
                self.app.hub.leave(&sid, self.id);
                self.send(&f).await?;
            }
        }
        // Presence frames dropped on the full queue: the current presence, now caught up.
        for sid in self.lag.take_presence() {
            if self.subs.contains_key(&sid.stream) {
                let f = ServerFrame::Presence {
                    stream: sid.stream.clone(),
                    viewers: self.app.hub.presence(&sid),
                };
                self.send(&f).await?;
            }
        }
        Ok(())
    }

    /// This connection as a viewer, for presence.
    fn watcher(&self) -> Watcher {
        Watcher {
            conn: self.id,
            principal: self.principal.clone(),
            name: self.name.clone(),
            tx: self.events_tx.clone(),
            lag: self.lag.clone(),
        }
    }

    fn subscriber(&self) -> Subscriber {
        Subscriber {
            conn: self.id,
            tx: self.events_tx.clone(),
            lag: self.lag.clone(),
            principal: self.principal.clone(),
        }
    }

    /// Makes sure the hub holds the stream's committed state.
    async fn ensure_loaded(&self, sid: &StreamId) -> Result<(), StoreError> {
        if self.app.hub.read(sid, |_| ()).is_some() {
            return Ok(());
        }
        self.app.writer.load(sid.clone()).await
    }

    /// Sends events after `last` from the log until the stream's head is reached, then
    /// registers live. Inner `Err` is an error frame for the client (the subscription is over).
    async fn catch_up(
        &mut self,
        sid: &StreamId,
        mut last: u64,
    ) -> Result<Result<(), ServerFrame>, End> {
        loop {
            let principal = self.principal.clone();
            let reg = self
                .app
                .hub
                .register_at(sid, Some(last), self.subscriber(), |c| {
                    domain::can_read(&sid.stream, &c.state, &principal)
                });
            let head = match reg {
                Register::Live(Ok(())) => return Ok(Ok(())),
                Register::Live(Err(_)) => return Ok(Err(withdrawn(&sid.stream))),
                Register::NotLoaded => {
                    if let Err(e) = self.app.writer.load(sid.clone()).await {
                        return Ok(Err(store_error(None, &sid.stream, e)));
                    }
                    continue;
                }
                Register::Behind(head) => head,
            };
            if head < last {
                // The client claims more than exists (can only be a client bug or a replaced
                // store: the epoch tells the client which).
                return Ok(Err(error_frame(
                    None,
                    ErrorCode::Invalid,
                    format!("since {last} is beyond the stream's head {head}"),
                    Some("since".into()),
                    Some(sid.stream.clone()),
                )));
            }
            while last < head {
                let want = ((head - last) as usize).min(CATCH_UP_PAGE);
                let page = match self.app.store.read(sid, last + 1, want) {
                    Ok(p) => p,
                    Err(e) => return Ok(Err(store_error(None, &sid.stream, e))),
                };
                if page.is_empty() {
                    return Ok(Err(store_error(
                        None,
                        &sid.stream,
                        StoreError::Backend(format!("events {}..={head} missing", last + 1)),
                    )));
                }
                for env in page {
                    if env.seq != last + 1 {
                        return Ok(Err(store_error(
                            None,
                            &sid.stream,
                            StoreError::Corrupt {
                                key: format!("{sid}#{}", env.seq),
                                why: format!("expected seq {}", last + 1),
                            },
                        )));
                    }
                    last = env.seq;
                    if let Some(sent) = self.subs.get_mut(&sid.stream) {
                        *sent = last;
                    }
                    let msg = self.message(self.enc.encode_event(&env));
                    self.sink.feed(msg).await.map_err(|_| End::Gone)?;
                    // An event that may have withdrawn this reader's access is the last one
                    // it gets, unless the stream as it stands now still lets it read.
                    if domain::may_revoke(&env.event, &self.principal.id) {
                        let still = self.app.hub.read(sid, |c| {
                            domain::can_read(&sid.stream, &c.state, &self.principal).is_ok()
                        });
                        if still != Some(true) {
                            self.sink.flush().await.map_err(|_| End::Gone)?;
                            return Ok(Err(withdrawn(&sid.stream)));
                        }
                    }
                }
                self.sink.flush().await.map_err(|_| End::Gone)?;
            }
        }
    }

    fn sid(&self, stream: &StreamName) -> StreamId {
        StreamId::new(self.company.clone(), stream.clone())
    }

    /// Checks read access on the committed state. `Ok(head)`.
    async fn readable(&self, id: Option<u64>, stream: &StreamName) -> Result<u64, ServerFrame> {
        let sid = self.sid(stream);
        self.ensure_loaded(&sid)
            .await
            .map_err(|e| store_error(id, stream, e))?;
        let checked = self.app.hub.read(&sid, |c| {
            domain::can_read(stream, &c.state, &self.principal).map(|()| c.head)
        });
        match checked {
            Some(Ok(head)) => Ok(head),
            Some(Err(r)) => Err(error_frame(
                id,
                r.code,
                r.message,
                r.field,
                Some(stream.clone()),
            )),
            // Evicted between load and read: vanishingly rare; the client may retry.
            None => Err(error_frame(
                id,
                ErrorCode::Unavailable,
                "the stream was being reloaded; retry",
                None,
                Some(stream.clone()),
            )),
        }
    }

    async fn on_frame(
        &mut self,
        bytes: Bytes,
        replies: &mut FuturesOrdered<Reply>,
    ) -> Result<(), End> {
        let limit = self.app.edge.frame_bytes;
        if bytes.len() > limit {
            let f = error_frame(
                None,
                ErrorCode::TooLarge,
                format!("the frame is {} bytes; the limit is {limit}", bytes.len()),
                None,
                None,
            );
            return self.send(&f).await;
        }
        let frame = match self.enc.decode_client(&bytes) {
            Ok(f) => f,
            Err(e) => {
                let f = error_frame(e.id, e.code, e.message, e.field, None);
                return self.send(&f).await;
            }
        };
        match frame {
            ClientFrame::Ping { id } => self.send(&ServerFrame::Pong { id }).await,
            ClientFrame::Subscribe { id, stream, since } => self.subscribe(id, stream, since).await,
            ClientFrame::Unsubscribe { id, stream } => {
                let reply = if self.subs.remove(&stream).is_some() {
                    let sid = self.sid(&stream);
                    self.app.hub.unregister(&sid, self.id);
                    self.app.hub.leave(&sid, self.id);
                    ServerFrame::Unsubscribed { id, stream }
                } else {
                    error_frame(
                        id,
                        ErrorCode::NotFound,
                        format!("not subscribed to {stream}"),
                        Some("stream".into()),
                        Some(stream),
                    )
                };
                self.send(&reply).await
            }
            ClientFrame::Command {
                id,
                stream,
                command_id,
                expected_seq,
                command,
            } => {
                if let Some(f) = self.check_command(id, &stream, &command_id) {
                    crate::metrics::COMMANDS_REFUSED.inc();
                    if let ServerFrame::Error { code, message, .. } = &f {
                        tracing::debug!(conn = self.id, %stream, ?code, %message, "command refused at the edge");
                    }
                    replies.push_back(Box::pin(async move { f }));
                    return Ok(());
                }
                let (tx, rx) = oneshot::channel();
                let kind = command.kind();
                let submitted = Instant::now();
                // Never waits: a full writer queue keeps the command here (in order) and the
                // loop submits it when there is room. The in-flight cap bounds what is kept.
                self.pending.push_back(Box::new(CommandRequest {
                    company: self.company.clone(),
                    principal: (*self.principal).clone(),
                    stream: stream.clone(),
                    command_id: command_id.clone(),
                    expected_seq,
                    command,
                    reply: tx,
                }));
                self.submit_pending();
                let conn = self.id;
                replies.push_back(Box::pin(async move {
                    let res = rx.await.unwrap_or_else(|_| {
                        Err(CommandError::Unavailable("the writer stopped".into()))
                    });
                    if res.is_ok() {
                        crate::metrics::ACK_LATENCY.observe(submitted.elapsed());
                    }
                    command_reply(conn, id, stream, command_id, kind, res)
                }));
                Ok(())
            }
            ClientFrame::History {
                id,
                stream,
                from,
                limit,
            } => {
                let f = self.history(id, stream, from, limit).await;
                self.send(&f).await
            }
            ClientFrame::StateAt { id, stream, seq } => {
                let f = self.state_at(id, stream, seq).await;
                self.send(&f).await
            }
            ClientFrame::Query {
                id,
                what,
                q,
                limit,
                prefix,
                status,
            } => {
                let query = super::query::Query {
                    id,
                    what,
                    q,
                    limit,
                    prefix,
                    status,
                };
                let f =
                    super::query::answer(&self.app, &self.company, &self.principal, query).await;
                self.send(&f).await
            }
            ClientFrame::Activity { stream, what } => self.activity(stream, what).await,
        }
    }

    /// Relays an activity hint to the stream's other viewers. Nothing is sent back on
    /// success; refusals are error frames without an id (the frame has none).
    async fn activity(&mut self, stream: StreamName, what: String) -> Result<(), End> {
        match self.check_activity(&stream, &what) {
            None => {
                self.app
                    .hub
                    .relay(&self.sid(&stream), &self.principal.id, &what);
                Ok(())
            }
            Some(f) => self.send(&f).await,
        }
    }

    /// Rate limit, subscription and `what` checks of an activity hint; `Some` is the refusal.
    fn check_activity(&mut self, stream: &StreamName, what: &str) -> Option<ServerFrame> {
        let refuse = |code, message: String, field: &str| {
            error_frame(
                None,
                code,
                message,
                Some(field.to_owned()),
                Some(stream.clone()),
            )
        };
        let (tokens, at) = self.activity_bucket;
        let now = Instant::now();
        let tokens =
            (tokens + now.duration_since(at).as_secs_f64() * ACTIVITY_PER_SEC).min(ACTIVITY_BURST);
        if tokens < 1.0 {
            self.activity_bucket = (tokens, now);
            return Some(error_frame(
                None,
                ErrorCode::RateLimited,
                format!(
                    "more than {ACTIVITY_PER_SEC} activity hints per second (burst {ACTIVITY_BURST}); slow down"
                ),
                None,
                Some(stream.clone()),
            ));
        }
        self.activity_bucket = (tokens - 1.0, now);
        if !self.subs.contains_key(stream) {
            return Some(refuse(
                ErrorCode::NotFound,
                format!("not subscribed to {stream}"),
                "stream",
            ));
        }
        if !crate::hub::keeps_presence(stream) {
            return Some(refuse(
                ErrorCode::Invalid,
                format!("activity hints are not relayed on {stream}"),
                "stream",
            ));
        }
        let n = what.chars().count();
        if n == 0 {
            return Some(refuse(ErrorCode::Invalid, "what is empty".into(), "what"));
        }
        if n > ACTIVITY_CHARS {
            return Some(refuse(
                ErrorCode::TooLarge,
                format!("what is {n} characters; the limit is {ACTIVITY_CHARS}"),
                "what",
            ));
        }
        if let Some(c) = what.chars().find(|c| c.is_control()) {
            return Some(refuse(
                ErrorCode::Invalid,
                format!("what contains the control character {c:?}"),
                "what",
            ));
        }
        None
    }

    /// Rate limit and command id checks; `Some` is the refusal.
    fn check_command(
        &mut self,
        id: Option<u64>,
        stream: &StreamName,
        command_id: &str,
    ) -> Option<ServerFrame> {
        let edge = &self.app.edge;
        let (tokens, at) = self.bucket;
        let now = Instant::now();
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * edge.commands_per_sec)
            .min(edge.command_burst);
        if tokens < 1.0 {
            self.bucket = (tokens, now);
            return Some(error_frame(
                id,
                ErrorCode::RateLimited,
                format!(
                    "more than {} commands per second (burst {}); slow down and retry",
                    edge.commands_per_sec, edge.command_burst
                ),
                None,
                Some(stream.clone()),
            ));
        }
        self.bucket = (tokens - 1.0, now);
        let n = command_id.chars().count();
        if n == 0 || n > 128 || command_id.chars().any(char::is_control) {
            return Some(error_frame(
                id,
                ErrorCode::Invalid,
                "command_id must be 1 to 128 characters without control characters",
                Some("command_id".into()),
                Some(stream.clone()),
            ));
        }
        None
    }

    /// `subscribe`, then presence: a connection subscribed at the end is a viewer (a new one
    /// is announced to all, a repeated subscribe gets the presence again), one that is not
    /// (refused, or its catch-up failed) is no viewer any more.
    async fn subscribe(
        &mut self,
        id: Option<u64>,
        stream: StreamName,
        since: Option<u64>,
    ) -> Result<(), End> {
        let res = self.subscribe_stream(id, stream.clone(), since).await;
        let sid = self.sid(&stream);
        if self.subs.contains_key(&stream) {
            self.app.hub.join(&sid, self.watcher());
        } else {
            self.app.hub.leave(&sid, self.id);
        }
        res
    }

    async fn subscribe_stream(
        &mut self,
        id: Option<u64>,
        stream: StreamName,
        since: Option<u64>,
    ) -> Result<(), End> {
        if !self.subs.contains_key(&stream) && self.subs.len() >= self.app.edge.subscriptions {
            let f = error_frame(
                id,
                ErrorCode::TooLarge,
                format!(
                    "a connection may hold at most {} subscriptions",
                    self.app.edge.subscriptions
                ),
                Some("stream".into()),
                Some(stream),
            );
            return self.send(&f).await;
        }
        let sid = self.sid(&stream);
        // A repeated subscribe restarts the subscription from what the client now asks.
        if self.subs.remove(&stream).is_some() {
            self.app.hub.unregister(&sid, self.id);
        }
        let epoch = self.app.store.epoch().to_owned();
        match since {
            None => loop {
                let principal = &self.principal;
                let enc = self.enc;
                let reg = self
                    .app
                    .hub
                    .register_at(&sid, None, self.subscriber(), |c| {
                        domain::can_read(&stream, &c.state, principal)?;
                        let snap = ServerFrame::Snapshot {
                            id,
                            stream: stream.clone(),
                            seq: c.head,
                            state: c.state.clone(),
                        };
                        Ok::<_, domain::Rejection>((c.head, enc.encode_frame(&snap)))
                    });
                match reg {
                    Register::NotLoaded => {
                        if let Err(e) = self.app.writer.load(sid.clone()).await {
                            let f = store_error(id, &stream, e);
                            return self.send(&f).await;
                        }
                    }
                    Register::Behind(_) => unreachable_behind(),
                    Register::Live(Err(r)) => {
                        let f = error_frame(id, r.code, r.message, r.field, Some(stream));
                        return self.send(&f).await;
                    }
                    Register::Live(Ok((head, snapshot))) => {
                        self.subs.insert(stream.clone(), head);
                        let f = ServerFrame::Subscribed {
                            id,
                            stream,
                            head,
                            epoch,
                        };
                        self.send(&f).await?;
                        let msg = self.message(snapshot);
                        return self.sink.send(msg).await.map_err(|_| End::Gone);
                    }
                }
            },
            Some(since) => {
                let head = match self.readable(id, &stream).await {
                    Ok(h) => h,
                    Err(f) => return self.send(&f).await,
                };
                if since > head {
                    let f = error_frame(
                        id,
                        ErrorCode::Invalid,
                        format!("since {since} is beyond the stream's head {head}; if the epoch changed, reset instead of resuming"),
                        Some("since".into()),
                        Some(stream),
                    );
                    return self.send(&f).await;
                }
                self.subs.insert(stream.clone(), since);
                let f = ServerFrame::Subscribed {
                    id,
                    stream: stream.clone(),
                    head,
                    epoch,
                };
                self.send(&f).await?;
                if let Err(f) = self.catch_up(&sid, since).await? {
                    self.subs.remove(&stream);
                    self.send(&f).await?;
                }
                Ok(())
            }
        }
    }

    async fn history(
        &self,
        id: Option<u64>,
        stream: StreamName,
        from: u64,
        limit: Option<u64>,
    ) -> ServerFrame {
        let max = self.app.edge.history_page;
        let limit = limit.unwrap_or(max);
        if limit == 0 || limit > max {
            return error_frame(
                id,
                if limit == 0 {
                    ErrorCode::Invalid
                } else {
                    ErrorCode::TooLarge
                },
                format!("limit must be 1 to {max}"),
                Some("limit".into()),
                Some(stream),
            );
        }
        let head = match self.readable(id, &stream).await {
            Ok(h) => h,
            Err(f) => return f,
        };
        let from = from.max(1);
        if from > head {
            return ServerFrame::History {
                id,
                stream,
                events: Vec::new(),
                next: None,
            };
        }
        // Never past the committed head: the log may already hold a batch that is not durable.
        let want = (head - from + 1).min(limit) as usize;
        match self.app.store.read(&self.sid(&stream), from, want) {
            Ok(events) => {
                let last = events.last().map(|e| e.seq).unwrap_or(head);
                ServerFrame::History {
                    id,
                    stream,
                    events,
                    next: (last < head).then_some(last + 1),
                }
            }
            Err(e) => store_error(id, &stream, e),
        }
    }

    async fn state_at(&self, id: Option<u64>, stream: StreamName, seq: u64) -> ServerFrame {
        let head = match self.readable(id, &stream).await {
            Ok(h) => h,
            Err(f) => return f,
        };
        if seq > head {
            return error_frame(
                id,
                ErrorCode::Invalid,
                format!("seq {seq} is beyond the stream's head {head}"),
                Some("seq".into()),
                Some(stream),
            );
        }
        let sid = self.sid(&stream);
        // The latest snapshot at or before `seq`, then the events after it.
        let state = match crate::snapshot::load(self.app.store.as_ref(), &sid, Some(seq)) {
            Ok(l) => l.state,
            Err(e) => return store_error(id, &stream, e),
        };
        ServerFrame::State {
            id,
            stream,
            seq,
            state,
        }
    }
}

/// The error that ends a subscription whose reader lost access.
fn withdrawn(stream: &StreamName) -> ServerFrame {
    error_frame(
        None,
        ErrorCode::Forbidden,
        format!("read access to {stream} was withdrawn; the subscription has ended"),
        None,
        Some(stream.clone()),
    )
}

/// `register_at` with `last = None` never answers `Behind`.
fn unreachable_behind() {
    tracing::error!("hub answered Behind to a snapshot subscription");
}

pub(super) fn command_reply(
    conn: u64,
    id: Option<u64>,
    stream: StreamName,
    command_id: String,
    kind: &'static str,
    res: Result<crate::store::CommandOutcome, CommandError>,
) -> ServerFrame {
    match res {
        Ok(o) => ServerFrame::Ack {
            id,
            stream,
            command_id,
            seq: o.seq,
            created: o.created,
        },
        Err(e) => {
            tracing::debug!(conn, %stream, command = kind, error = %e, "command refused");
            match e {
                CommandError::Rejected(r) => {
                    error_frame(id, r.code, r.message, r.field, Some(stream))
                }
                CommandError::Conflict { head, .. } => ServerFrame::Error {
                    id,
                    code: ErrorCode::Conflict,
                    message: e.to_string(),
                    field: Some("expected_seq".into()),
                    head: Some(head),
                    stream: Some(stream),
                },
                CommandError::Unavailable(m) => {
                    error_frame(id, ErrorCode::Unavailable, m, None, Some(stream))
                }
            }
        }
    }
}

/// Whether a read failed because a text frame was not valid UTF-8 (the client is told with
/// close 1007; every other read error means the socket is gone).
fn invalid_utf8(e: &axum::Error) -> bool {
    use std::error::Error as _;
    matches!(
        e.source()
            .and_then(|s| s.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Utf8(_))
    )
}
