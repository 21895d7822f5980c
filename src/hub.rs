//! The fan-out hub: per stream, the committed state and the live subscribers.
//!
//! The hub only ever sees what the writer has made durable (in `sync` mode): the writer is the
//! one that installs a stream's state ([`Hub::install`]) and publishes each committed event
//! ([`Hub::publish`]), always in seq order. Subscribers register under the same lock that
//! publishing takes, at an exact head, so nothing falls between a catch-up read from the log and
//! the live feed, and nothing arrives twice.
//!
//! Backpressure: every connection has one bounded queue. When a publish finds it full, that
//! subscription is dropped from the live set and its connection is told the last seq it was
//! given ([`LagSignal`]); the connection then catches up from the log at its own pace and
//! registers again. A slow reader never blocks the writer or other readers, and its memory is
//! bounded by its queue.
//!
//! Presence: each slot also keeps its viewers, the connections subscribed to the stream (live
//! or catching up from the log), registered by the connection ([`Hub::join`], [`Hub::leave`]).
//! Every change sends a `presence` frame to each viewer through the same bounded queue as
//! events, without waiting: when a queue is full the frame is dropped and the connection is
//! told to send the current presence itself once it has caught up ([`LagSignal`]). Activity
//! hints ([`Hub::relay`]) go the same way, best effort. The catalog keeps no presence (every
//! operator reads it: each connection would make every other one receive a list of all).
//!
//! Never: block or await while holding a slot lock (all work under it is in-memory).

use crate::domain::{self, Principal};
use crate::store::StreamId;
use bytes::Bytes;
use copanel_protocol::{
    Encoding, Envelope, ServerFrame, StreamKind, StreamName, StreamState, Viewer,
};
use dashmap::DashMap;
use parking_lot::Mutex;
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, Notify};

/// A committed event, encoded at most once per encoding however many subscribers get it.
#[derive(Debug)]
pub struct SharedEvent {
    /// The event.
    pub env: Arc<Envelope>,
    /// `event` frame in MessagePack, made on first use.
    msgpack: OnceLock<Bytes>,
    /// `event` frame in JSON, made on first use.
    json: OnceLock<Bytes>,
}

impl SharedEvent {
    /// Wraps a committed envelope.
    pub fn new(env: Arc<Envelope>) -> Self {
        SharedEvent {
            env,
            msgpack: OnceLock::new(),
            json: OnceLock::new(),
        }
    }

    /// The `event` frame in `enc`; the bytes are shared, not copied.
    pub fn bytes(&self, enc: Encoding) -> Bytes {
        let cell = match enc {
            Encoding::Msgpack => &self.msgpack,
            Encoding::Json => &self.json,
        };
        cell.get_or_init(|| enc.encode_event(&self.env)).clone()
    }
}

/// A frame that is not an event (`presence`, `activity`), for one stream's viewers; encoded at
/// most once per encoding however many connections get it.
#[derive(Debug)]
pub struct SharedFrame {
    /// The stream it is about: a connection drops it if it no longer subscribes.
    pub stream: StreamName,
    /// The frame.
    pub frame: ServerFrame,
    /// The frame in MessagePack, made on first use.
    msgpack: OnceLock<Bytes>,
    /// The frame in JSON, made on first use.
    json: OnceLock<Bytes>,
}

impl SharedFrame {
    /// Wraps a frame about `stream`.
    pub fn new(stream: StreamName, frame: ServerFrame) -> Self {
        SharedFrame {
            stream,
            frame,
            msgpack: OnceLock::new(),
            json: OnceLock::new(),
        }
    }

    /// The frame in `enc`; the bytes are shared, not copied.
    pub fn bytes(&self, enc: Encoding) -> Bytes {
        let cell = match enc {
            Encoding::Msgpack => &self.msgpack,
            Encoding::Json => &self.json,
        };
        cell.get_or_init(|| enc.encode_frame(&self.frame)).clone()
    }
}

/// What a connection's bounded outbound queue carries.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A committed event of a subscribed stream.
    Event(Arc<SharedEvent>),
    /// A presence or activity frame about a subscribed stream.
    Frame(Arc<SharedFrame>),
}

/// Tells a connection which of its subscriptions fell behind (and from where to catch up) or
/// lost read access.
#[derive(Debug, Default)]
pub struct LagSignal {
    /// (stream, last seq handed to the connection's queue) for each lagged subscription.
    lagged: Mutex<Vec<(StreamId, u64)>>,
    /// Subscriptions ended because the subscriber may no longer read the stream.
    revoked: Mutex<Vec<StreamId>>,
    /// Streams whose `presence` frame was dropped on a full queue: the connection sends the
    /// current one itself after catching up.
    presence: Mutex<Vec<StreamId>>,
    /// Wakes the connection's task.
    pub notify: Notify,
}

impl LagSignal {
    /// Takes the lagged subscriptions reported so far.
    pub fn take(&self) -> Vec<(StreamId, u64)> {
        std::mem::take(&mut *self.lagged.lock())
    }

    /// Takes the subscriptions whose access was withdrawn.
    pub fn take_revoked(&self) -> Vec<StreamId> {
        std::mem::take(&mut *self.revoked.lock())
    }

    /// Takes the streams whose presence must be sent again.
    pub fn take_presence(&self) -> Vec<StreamId> {
        std::mem::take(&mut *self.presence.lock())
    }

    fn stale_presence(&self, id: &StreamId) {
        let mut stale = self.presence.lock();
        if !stale.contains(id) {
            stale.push(id.clone());
        }
        drop(stale);
        self.notify.notify_one();
    }

    fn push(&self, id: StreamId, last: u64) {
        self.lagged.lock().push((id, last));
        self.notify.notify_one();
    }

    fn revoke(&self, id: StreamId) {
        self.revoked.lock().push(id);
        self.notify.notify_one();
    }
}

/// A connection's registration on one stream.
#[derive(Debug)]
pub struct Subscriber {
    /// The connection, to unregister it.
    pub conn: u64,
    /// The connection's bounded queue of live events.
    pub tx: mpsc::Sender<Outbound>,
    /// Where to report that this subscription fell behind or lost access.
    pub lag: Arc<LagSignal>,
    /// Who subscribed: read access is checked again after every event, so a removed
    /// collaborator stops receiving the panel at once.
    pub principal: Arc<Principal>,
}

struct Registered {
    sub: Subscriber,
    /// Last seq put in the connection's queue: where its catch-up resumes.
    last: u64,
}

/// A stream's committed state.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The last durable seq.
    pub head: u64,
    /// The state after `head`.
    pub state: StreamState,
}

#[derive(Default)]
struct SlotInner {
    /// `None` until the writer installs the stream, and again after eviction.
    loaded: Option<Committed>,
    subs: Vec<Registered>,
    /// Connections subscribed to the stream, live or catching up (for presence).
    viewers: Vec<Watcher>,
    /// Set when the slot is evicted: a caller still holding it goes back through the map.
    gone: bool,
}

/// One stream's entry in the hub.
#[derive(Default)]
struct Slot {
    /// A plain mutex: held only for in-memory work, never across an await.
    inner: Mutex<SlotInner>,
}

/// Result of trying to register a subscriber.
#[derive(Debug)]
pub enum Register<R> {
    /// Registered; the closure's result.
    Live(R),
    /// The stream's head has moved past the caller's position: read up to this head first.
    Behind(u64),
    /// The stream is not loaded: ask the writer to install it, then retry.
    NotLoaded,
}

/// The hub. Cheap to share behind an `Arc`.
#[derive(Default)]
pub struct Hub {
    /// DashMap shards the map so unrelated streams do not contend; guards are dropped before
    /// any slot lock is taken, by cloning the `Arc` out.
    slots: DashMap<StreamId, Arc<Slot>>,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&self, id: &StreamId) -> Arc<Slot> {
        if let Some(s) = self.slots.get(id) {
            return s.value().clone();
        }
        self.slots.entry(id.clone()).or_default().value().clone()
    }

    fn existing(&self, id: &StreamId) -> Option<Arc<Slot>> {
        self.slots.get(id).map(|s| s.value().clone())
    }

    /// Installs a stream's committed state (writer only, between batches). Keeps an existing
    /// installation: it is at least as new.
    pub fn install(&self, id: &StreamId, head: u64, state: StreamState) {
        let slot = self.slot(id);
        let mut inner = slot.inner.lock();
        if inner.loaded.is_none() {
            inner.loaded = Some(Committed { head, state });
        }
    }

    /// Publishes one committed event (writer only, in seq order).
    pub fn publish(&self, id: &StreamId, ev: &Arc<SharedEvent>) {
        let Some(slot) = self.existing(id) else {
            return; // nobody has loaded this stream: nobody listens
        };
        let mut inner = slot.inner.lock();
        let inner = &mut *inner;
        let Some(c) = inner.loaded.as_mut() else {
            return;
        };
        let seq = ev.env.seq;
        if seq <= c.head {
            return; // installed after this event was committed: already included
        }
        if seq != c.head + 1 {
            // Cannot happen with one writer publishing in order; if it ever does, drop the
            // projection and send every subscriber back to the log rather than skip events.
            tracing::error!(stream = %id, head = c.head, seq, "gap in published events; reloading");
            inner.loaded = None;
            for r in inner.subs.drain(..) {
                r.sub.lag.push(id.clone(), r.last);
            }
            return;
        }
        domain::apply(&mut c.state, &ev.env);
        c.head = seq;
        let state = &c.state;
        let stream = &id.stream;
        let mut deepest = 0;
        inner
            .subs
            .retain_mut(|r| match r.sub.tx.try_send(Outbound::Event(ev.clone())) {
                Ok(()) => {
                    r.last = seq;
                    // Queue depth for /metrics: two atomic loads, no lock.
                    deepest =
                        deepest.max(r.sub.tx.max_capacity().saturating_sub(r.sub.tx.capacity()));
                    // The event that withdrew access is still delivered (the removed collaborator
                    // sees its removal); nothing after it is.
                    if domain::may_revoke(&ev.env.event, &r.sub.principal.id)
                        && domain::can_read(stream, state, &r.sub.principal).is_err()
                    {
                        r.sub.lag.revoke(id.clone());
                        return false;
                    }
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    crate::metrics::SLOW_CONSUMER_FALLBACKS.inc();
                    r.sub.lag.push(id.clone(), r.last);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        if !inner.subs.is_empty() {
            crate::metrics::FANOUT_QUEUE_DEPTH.set(deepest as u64);
            crate::metrics::FANOUT_QUEUE_DEPTH_PEAK.raise(deepest as u64);
        }
    }

    /// Reads the committed state of a stream, if loaded.
    pub fn read<R>(&self, id: &StreamId, f: impl FnOnce(&Committed) -> R) -> Option<R> {
        let slot = self.existing(id)?;
        let inner = slot.inner.lock();
        inner.loaded.as_ref().map(f)
    }

    /// Registers `sub` if the stream's head is exactly `last`, so that it receives seq
    /// `last + 1` onwards live. `f` runs under the same lock (to check access or encode a
    /// snapshot consistent with the head).
    pub fn register_at<R, E>(
        &self,
        id: &StreamId,
        last: Option<u64>,
        sub: Subscriber,
        f: impl FnOnce(&Committed) -> Result<R, E>,
    ) -> Register<Result<R, E>> {
        let slot = self.slot(id);
        let mut inner = slot.inner.lock();
        let inner = &mut *inner;
        let Some(c) = inner.loaded.as_ref() else {
            return Register::NotLoaded;
        };
        let head = c.head;
        if let Some(last) = last {
            if last != head {
                return Register::Behind(head);
            }
        }
        let out = f(c);
        if out.is_ok() {
            inner.subs.retain(|r| r.sub.conn != sub.conn);
            inner.subs.push(Registered { sub, last: head });
        }
        Register::Live(out)
    }

    /// Removes a connection's subscription to a stream.
    pub fn unregister(&self, id: &StreamId, conn: u64) {
        if let Some(slot) = self.existing(id) {
            slot.inner.lock().subs.retain(|r| r.sub.conn != conn);
        }
    }

    /// How many streams are loaded, and how many subscriptions they have (for metrics).
    pub fn counts(&self) -> (usize, usize) {
        let slots: Vec<Arc<Slot>> = self.slots.iter().map(|s| s.value().clone()).collect();
        let subs = slots.iter().map(|s| s.inner.lock().subs.len()).sum();
        (slots.len(), subs)
    }

    /// Drops the projections of streams nobody subscribes to, once more than `keep` are loaded.
    /// They are reloaded through the writer on next use.
    pub fn evict_idle(&self, keep: usize) -> usize {
        if self.slots.len() <= keep {
            return 0;
        }
        let idle: Vec<(StreamId, Arc<Slot>)> = self
            .slots
            .iter()
            .map(|s| (s.key().clone(), s.value().clone()))
            .collect();
        let mut evicted = 0;
        for (id, slot) in idle {
            let mut inner = slot.inner.lock();
            if inner.subs.is_empty() && inner.viewers.is_empty() {
                // Mark first, under the lock: a caller still holding this slot sees NotLoaded
                // (or `gone`) and goes back through the map, so nobody registers on an orphan.
                inner.loaded = None;
                inner.gone = true;
                drop(inner);
                self.slots.remove_if(&id, |_, s| Arc::ptr_eq(s, &slot));
                evicted += 1;
            }
        }
        evicted
    }
}

// ---------------------------------------------------------------------------------------------
// Presence and activity.
// ---------------------------------------------------------------------------------------------

/// A connection viewing a stream (subscribed, live or catching up), for presence.
#[derive(Debug, Clone)]
pub struct Watcher {
    /// The connection.
    pub conn: u64,
    /// Who it is (its id and role are shown to the other viewers).
    pub principal: Arc<Principal>,
    /// The token's display name, shown to the other viewers.
    pub name: Option<String>,
    /// The connection's bounded outbound queue.
    pub tx: mpsc::Sender<Outbound>,
    /// Where to report a presence frame dropped on a full queue.
    pub lag: Arc<LagSignal>,
}

/// Whether the hub keeps presence (and relays activity) on `stream`: every stream but the
/// catalog.
pub fn keeps_presence(stream: &StreamName) -> bool {
    stream.kind() != StreamKind::Catalog
}

/// The viewers as the `presence` frame lists them: one entry per operator (the first name any
/// of its connections gave), sorted by operator id.
fn viewer_list(viewers: &[Watcher]) -> Vec<Viewer> {
    let mut out: Vec<Viewer> = Vec::with_capacity(viewers.len());
    for w in viewers {
        match out.iter_mut().find(|v| v.operator_id == w.principal.id) {
            Some(v) => {
                if v.name.is_none() {
                    v.name = w.name.clone();
                }
            }
            None => out.push(Viewer {
                operator_id: w.principal.id.clone(),
                role: w.principal.role,
                name: w.name.clone(),
            }),
        }
    }
    out.sort_by(|a, b| a.operator_id.cmp(&b.operator_id));
    out
}

/// Sends the current presence to `to` (all viewers, or one connection). Never waits: a full
/// queue drops the frame and flags the connection to send it itself later.
fn tell_presence(id: &StreamId, viewers: &[Watcher], to: Option<u64>) {
    let frame = Arc::new(SharedFrame::new(
        id.stream.clone(),
        ServerFrame::Presence {
            stream: id.stream.clone(),
            viewers: viewer_list(viewers),
        },
    ));
    for w in viewers.iter().filter(|w| to.is_none_or(|c| c == w.conn)) {
        if let Err(mpsc::error::TrySendError::Full(_)) =
            w.tx.try_send(Outbound::Frame(frame.clone()))
        {
            w.lag.stale_presence(id);
        }
    }
}

impl Hub {
    /// Adds (or refreshes) a connection as a viewer of a stream. A new viewer makes every
    /// viewer receive the new presence; a known one (a repeated subscribe) receives it alone.
    pub fn join(&self, id: &StreamId, w: Watcher) {
        if !keeps_presence(&id.stream) {
            return;
        }
        loop {
            let slot = self.slot(id);
            let mut inner = slot.inner.lock();
            if inner.gone {
                continue; // evicted meanwhile: the map holds (or will hold) a fresh slot
            }
            let conn = w.conn;
            match inner.viewers.iter_mut().find(|v| v.conn == conn) {
                Some(v) => {
                    *v = w;
                    tell_presence(id, &inner.viewers, Some(conn));
                }
                None => {
                    inner.viewers.push(w);
                    tell_presence(id, &inner.viewers, None);
                }
            }
            return;
        }
    }

    /// Removes a connection from a stream's viewers; the others receive the new presence.
    pub fn leave(&self, id: &StreamId, conn: u64) {
        let Some(slot) = self.existing(id) else {
            return;
        };
        let mut inner = slot.inner.lock();
        let before = inner.viewers.len();
        inner.viewers.retain(|v| v.conn != conn);
        if inner.viewers.len() != before {
            tell_presence(id, &inner.viewers, None);
        }
    }

    /// The current viewers of a stream, as a `presence` frame lists them.
    pub fn presence(&self, id: &StreamId) -> Vec<Viewer> {
        self.existing(id)
            .map(|slot| viewer_list(&slot.inner.lock().viewers))
            .unwrap_or_default()
    }

    /// Relays an activity hint from `operator` to the stream's viewers that are not that
    /// operator. Best effort: a full queue drops it.
    pub fn relay(&self, id: &StreamId, operator: &str, what: &str) {
        let Some(slot) = self.existing(id) else {
            return;
        };
        let inner = slot.inner.lock();
        let mut others = inner
            .viewers
            .iter()
            .filter(|v| v.principal.id != operator)
            .peekable();
        if others.peek().is_none() {
            return;
        }
        let frame = Arc::new(SharedFrame::new(
            id.stream.clone(),
            ServerFrame::Activity {
                stream: id.stream.clone(),
                operator: operator.to_owned(),
                what: what.to_owned(),
            },
        ));
        for v in others {
            let _ = v.tx.try_send(Outbound::Frame(frame.clone()));
        }
    }
}
