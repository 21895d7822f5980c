//! The single writer: the only code that appends to the log.
//!
//! One task owns the write side, on a thread and runtime of its own ([`spawn_tuned`]). It
//! takes requests from a bounded channel, and for each batch of whatever has queued up (group
//! commit): checks idempotency, loads the streams' states,
//! checks `expected_seq`, runs the domain's `decide`, assigns gapless seqs, then writes the
//! whole batch atomically, flushes once (`sync`), publishes to the hub, and acknowledges (in
//! that order, so a client reading right after its ack finds its own write).
//! Because it is alone, seqs need no locking and a multi-stream command is trivially
//! all-or-nothing: it is one atomic batch write.
//!
//! The writer also installs streams into the hub on request, between batches, so the hub never
//! sees a state that is not durable or misses an event published after the install.
//!
//! Anonymisation: once a batch holding `session_anonymized` is durable, the writer has the store
//! erase that session's earlier personal data from disk ([`Store::redact`], a compaction during
//! which appends wait) before it publishes and acks, so whoever learns of the event finds the
//! data gone. A durable marker written with the event makes the next start finish a redaction
//! that a crash or an error interrupted.
//!
//! Snapshots: every `snapshot_every` events of a stream (see [`Tuning`]), the batch also carries
//! the stream's state ([`crate::snapshot`]), so a load after a cache miss folds only the tail.
//!
//! Storage faults (a full disk, an I/O error): a batch whose append or flush fails is refused
//! as a whole (`unavailable` to every command in it; the outcome is unknown to the client, which
//! retries with the same `command_id`), nothing of it is published, and the cached states,
//! derived records and outbox heads it touched are dropped and reloaded from the store. A batch
//! whose *append* succeeded but whose *flush* failed is in the store (sled cannot take it back)
//! without being durable: the writer keeps it aside ([`Unflushed`]) and, before it acks or
//! installs anything else, flushes again; once a flush succeeds, those events are published
//! first, in order, so the hub never skips a seq, and a retry finds the stored outcome and gets
//! it (exactly once). [`StoreHealth`] tells `/healthz` about the last failure.
//!
//! Never: hand the hub or a client anything before the batch that holds it is durable (in
//! `sync` mode).

use crate::derived::Derived;
use crate::domain::{self, Ctx, Limits, Principal, Rejection, World};
use crate::hub::{Hub, SharedEvent};
use crate::metrics;
use crate::outcomes::KnownOutcomes;
use crate::search::ContactIndex;
use crate::store::{
    AppendBatch, CommandOutcome, IndexKind, IndexWrite, Store, StoreError, StoreResult, StreamId,
};
use copanel_protocol::{Command, Envelope, StreamKind, StreamName, StreamState};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// When an ack is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After the batch is flushed to disk (default). A crash loses no acknowledged event.
    #[default]
    Sync,
    /// As soon as the batch is written to the store, before its flush (lower ack latency). The
    /// events are still published to subscribers only after the flush, so a crash may lose the
    /// last acknowledged events but never one that a subscriber has seen.
    Relaxed,
}

/// Most requests taken into one batch.
const MAX_BATCH: usize = 512;
/// Streams whose state the writer keeps in memory; beyond it an arbitrary one is dropped and
/// reloaded from the log on next use.
const MAX_CACHED_STREAMS: usize = 100_000;

/// Settings of the writer beyond durability and the domain limits.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Capacity of the request queue.
    pub queue: usize,
    /// Store a stream's state every this many events (`0`: never; loads replay the whole log).
    pub snapshot_every: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            queue: 4096,
            snapshot_every: crate::snapshot::DEFAULT_EVERY,
        }
    }
}

/// A command to append.
#[derive(Debug)]
pub struct CommandRequest {
    /// The caller's company: every stream is scoped to it.
    pub company: Arc<str>,
    /// Who sends it.
    pub principal: Principal,
    /// The stream it is addressed to.
    pub stream: StreamName,
    /// Its id, for idempotency.
    pub command_id: String,
    /// Refuse unless the head is this.
    pub expected_seq: Option<u64>,
    /// The command.
    pub command: Command,
    /// Where the result goes.
    pub reply: oneshot::Sender<Result<CommandOutcome, CommandError>>,
}

/// Why a command was not applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommandError {
    /// The domain refused it.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// `expected_seq` did not match.
    #[error("expected seq {expected} but the stream's head is {head}")]
    Conflict {
        /// What the client expected.
        expected: u64,
        /// The stream's head.
        head: u64,
    },
    /// The store failed or the server is shutting down. Outcome unknown: retry with the same id.
    #[error("{0}")]
    Unavailable(String),
}

enum Msg {
    /// Boxed: a request is large and the channel holds many messages. With the moment it
    /// entered the queue, for [`metrics::WRITER_ACK`].
    Command(Box<CommandRequest>, Instant),
    /// Answered once every batch staged before it was received is finished (see
    /// [`WriterHandle::barrier`]).
    Barrier(oneshot::Sender<Result<(), String>>),
    /// An operator connected with these groups (kept in the roster for group redirects).
    Roster {
        company: Arc<str>,
        operator: String,
        groups: Vec<String>,
    },
    Load {
        id: StreamId,
        reply: oneshot::Sender<StoreResult<()>>,
    },
}

/// Room for one command in the writer's queue, from [`WriterHandle::reserve`].
pub struct SubmitPermit<'a>(mpsc::Permit<'a, Msg>);

impl SubmitPermit<'_> {
    /// Queues the command in the reserved slot.
    pub fn submit(self, req: Box<CommandRequest>) {
        self.0.send(Msg::Command(req, Instant::now()));
    }
}

/// Sends work to the writer. Cloneable; the writer stops once every handle is dropped and the
/// queue is drained.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Msg>,
    health: Arc<StoreHealth>,
}

/// What the writer last saw of the store: whether its last write failed, and how often writes
/// failed since the start. Read by `/healthz`.
#[derive(Debug, Default)]
pub struct StoreHealth {
    /// The error of the last failed append or flush; cleared by the next successful flush.
    last_error: parking_lot::Mutex<Option<String>>,
    /// Failed appends and flushes since the start.
    failures: std::sync::atomic::AtomicU64,
}

impl StoreHealth {
    /// The error of the last write, if it failed (`None` once a later flush succeeded).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// Failed appends and flushes since the start.
    pub fn failures(&self) -> u64 {
        self.failures.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn failed(&self, e: &StoreError) {
        self.failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.last_error.lock() = Some(e.to_string());
    }

    fn ok(&self) {
        let mut last = self.last_error.lock();
        if last.is_some() {
            tracing::info!("the store takes writes again");
            *last = None;
        }
    }
}

impl WriterHandle {
    /// The store's health as the writer last saw it.
    pub fn health(&self) -> &StoreHealth {
        &self.health
    }

    /// Queues a command; waits for room in the queue (backpressure), not for the result.
    pub async fn submit(&self, req: CommandRequest) {
        match self.tx.reserve().await {
            // Stamped once there is room: the wait for it is the caller's, not the writer's.
            Ok(permit) => permit.send(Msg::Command(Box::new(req), Instant::now())),
            Err(_) => {
                let _ = req.reply.send(Err(CommandError::Unavailable(
                    "the server is shutting down".into(),
                )));
            }
        }
    }

    /// Waits until the writer has finished every batch it received before this call: each is
    /// durable and published, or failed. `Err` if the writer has stopped, or if a batch is
    /// appended but its flush failed (neither durable nor failed yet).
    pub async fn barrier(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Barrier(tx))
            .await
            .map_err(|_| "the server is shutting down".to_owned())?;
        rx.await
            .map_err(|_| "the server is shutting down".to_owned())?
    }

    /// Queues a command if the queue has room now; `Err` gives it back when the queue is full.
    /// If the writer has stopped, the command is answered `unavailable` (and `Ok`).
    /// Boxed as the queue holds it: handing it back and forth copies no request.
    pub fn try_submit(&self, req: Box<CommandRequest>) -> Result<(), Box<CommandRequest>> {
        match self.tx.try_send(Msg::Command(req, Instant::now())) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(Msg::Command(req, _))) => Err(req),
            Err(mpsc::error::TrySendError::Closed(Msg::Command(req, _))) => {
                let _ = req.reply.send(Err(CommandError::Unavailable(
                    "the server is shutting down".into(),
                )));
                Ok(())
            }
            // Only commands are sent here.
            Err(_) => Ok(()),
        }
    }

    /// Waits for room for one command in the queue, without taking it from other senders
    /// (cancel-safe: dropping the future gives nothing up). `None`: the writer has stopped.
    pub async fn reserve(&self) -> Option<SubmitPermit<'_>> {
        self.tx.reserve().await.ok().map(SubmitPermit)
    }

    /// Records that `operator` of `company` belongs to `groups` (from its token). Best effort:
    /// dropped if the writer's queue is full; the next connection records it again.
    pub fn roster(&self, company: Arc<str>, operator: String, groups: Vec<String>) {
        let _ = self.tx.try_send(Msg::Roster {
            company,
            operator,
            groups,
        });
    }

    /// Asks the writer to install a stream's durable state in the hub; returns once it has.
    pub async fn load(&self, id: StreamId) -> StoreResult<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Load { id, reply })
            .await
            .map_err(|_| StoreError::Backend("the server is shutting down".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("the writer stopped".into()))?
    }
}

struct Cached {
    head: u64,
    state: StreamState,
    /// The seq of the stream's latest stored snapshot (0: none known).
    snap: u64,
}

struct Writer {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    contacts: Arc<ContactIndex>,
    durability: Durability,
    limits: Limits,
    cache: HashMap<StreamId, Cached>,
    derived: Derived,
    /// Company → operator → groups, loaded from the store on first use per company.
    roster: HashMap<Arc<str>, BTreeMap<String, Vec<String>>>,
    /// The webhook outbox: one record per committed event, in the same batch.
    outbox: crate::webhooks::Outbox,
    /// Events between stored snapshots of a stream (0: none).
    snapshot_every: u64,
    /// Batches appended but not flushed (their flush failed): published at the next good flush.
    unflushed: Option<Unflushed>,
    /// A write failed and no flush has succeeded since: ask the store to recover first.
    broken: bool,
    health: Arc<StoreHealth>,
    /// Runs on a thread of its own ([`run_on_own_thread`]): flushes block it rather than go
    /// through another thread ([`Store::flush_blocking`]).
    own_thread: bool,
    /// Command ids that may have a stored outcome: the others skip the store read.
    outcomes: KnownOutcomes,
}

/// Batches whose append succeeded and whose flush failed: in the store (readable, perhaps on
/// disk) but neither published nor acked. Published, in order, once a flush succeeds.
#[derive(Default)]
struct Unflushed {
    events: Vec<(Arc<str>, Arc<Envelope>)>,
    outboxed: Vec<(Arc<str>, u64)>,
    redactions: Vec<(StreamId, u64)>,
}

/// What `decide` sees of other streams: the writer's cache (everything `needs` named is loaded)
/// and the company's roster.
struct CacheWorld<'a> {
    cache: &'a HashMap<StreamId, Cached>,
    company: &'a Arc<str>,
    roster: Option<&'a BTreeMap<String, Vec<String>>>,
}

impl World for CacheWorld<'_> {
    fn state(&self, stream: &StreamName) -> Option<&StreamState> {
        self.cache
            .get(&StreamId::new(self.company.clone(), stream.clone()))
            .map(|c| &c.state)
    }

    fn group_members(&self, group: &str) -> Vec<String> {
        self.roster
            .map(|r| {
                r.iter()
                    .filter(|(_, groups)| groups.iter().any(|g| g == group))
                    .map(|(op, _)| op.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Starts the writer task. It ends when every [`WriterHandle`] is dropped, after a last flush.
pub fn spawn(
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    contacts: Arc<ContactIndex>,
    durability: Durability,
    limits: Limits,
    queue: usize,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let tuning = Tuning {
        queue,
        ..Tuning::default()
    };
    let outbox = crate::webhooks::Outbox::new();
    spawn_tuned(store, hub, contacts, durability, limits, outbox, tuning)
}

/// [`spawn`], with the webhook outbox the dispatchers watch (see [`crate::webhooks`]) and every
/// setting of [`Tuning`].
pub fn spawn_tuned(
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    contacts: Arc<ContactIndex>,
    durability: Durability,
    limits: Limits,
    outbox: crate::webhooks::Outbox,
    tuning: Tuning,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(tuning.queue);
    let health = Arc::new(StoreHealth::default());
    let writer = Writer {
        store: store.clone(),
        hub,
        contacts,
        durability,
        limits,
        cache: HashMap::new(),
        derived: Derived::default(),
        roster: HashMap::new(),
        outbox,
        snapshot_every: tuning.snapshot_every,
        unflushed: None,
        broken: false,
        health: health.clone(),
        own_thread: false,
        outcomes: KnownOutcomes::start(store.clone()),
    };
    let task = run_on_own_thread(writer, rx);
    (WriterHandle { tx, health }, task)
}

/// Runs the writer on a thread of its own (from the blocking pool of the caller's runtime) with
/// a current-thread runtime, so its appends, flushes and publishes do not queue behind the
/// connection tasks on the shared worker threads: under fan-out load (5000 connections) the
/// writer, as one task among them, spent ≈ 200 µs per command instead of ≈ 40 µs, and acks had
/// a 10–50 ms tail (see BENCHMARKS.md). Channels, `oneshot` replies and the hub's wake-ups work
/// across runtimes; `spawn_blocking` inside the writer (redaction, recovery) uses its own
/// runtime's pool. The returned handle completes once the writer's last flush is done (a panic
/// in the writer is its `JoinError`), and the caller's runtime waits for the thread when it
/// shuts down. On Linux the thread is named `copanel-writer` while the writer runs, so `top -H`,
/// `perf` and `scripts/threads.sh` tell it from the connection workers. If the runtime cannot
/// be built, the writer runs as an ordinary task.
fn run_on_own_thread(mut writer: Writer, rx: mpsc::Receiver<Msg>) -> tokio::task::JoinHandle<()> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("copanel-wpool")
        .build()
    {
        Ok(rt) => {
            writer.own_thread = true;
            tokio::task::spawn_blocking(move || {
                let _name = ThreadName::set(c"copanel-writer");
                rt.block_on(writer.run(rx))
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, "writer runtime not built; the writer shares the server's");
            tokio::spawn(writer.run(rx))
        }
    }
}

/// The name of the current thread as the kernel shows it (`/proc/self/task/*/comm`), set for as
/// long as this guard lives and then given back: the writer borrows a thread of tokio's blocking
/// pool, which may run other work after it. Only on Linux, and best effort: a failure to read or
/// set the name leaves it as it was.
struct ThreadName {
    #[cfg(target_os = "linux")]
    old: Option<std::ffi::CString>,
}

impl ThreadName {
    fn set(name: &std::ffi::CStr) -> ThreadName {
        #[cfg(target_os = "linux")]
        {
            let old = rustix::thread::name().ok();
            if rustix::thread::set_name(name).is_err() {
                return ThreadName { old: None };
            }
            ThreadName { old }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            ThreadName {}
        }
    }
}

impl Drop for ThreadName {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(old) = self.old.take() {
            let _ = rustix::thread::set_name(&old);
        }
    }
}

/// FNV-1a over the command's MessagePack encoding: stable across builds, unlike `std`'s
/// hasher, because it is stored.
/// The encoding is hashed as it is written, never collected: this runs for every command.
fn fingerprint(cmd: &Command) -> u64 {
    let mut h = Fnv1a(0xcbf2_9ce4_8422_2325);
    match rmp_serde::encode::write_named(&mut h, cmd) {
        Ok(()) => h.0,
        // Writing to a hasher cannot fail; this is the hash of an empty encoding, as before.
        Err(_) => 0xcbf2_9ce4_8422_2325,
    }
}

/// FNV-1a as an `io::Write` sink.
struct Fnv1a(u64);

impl std::io::Write for Fnv1a {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for b in buf {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An accepted command waiting for its batch to be durable.
struct Pending {
    /// When the command entered the writer's queue.
    queued: Instant,
    reply: oneshot::Sender<Result<CommandOutcome, CommandError>>,
    outcome: CommandOutcome,
}

impl Writer {
    /// Makes everything appended durable: on the writer's own thread when it has one (one
    /// thread hop less per batch), else through the store's async flush.
    async fn flush(&self) -> StoreResult<()> {
        if self.own_thread {
            if let Some(res) = self.store.flush_blocking() {
                return res;
            }
        }
        self.store.flush().await
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        // Anonymisations whose redaction a crash or an error interrupted: finish them before
        // anything else, so personal data does not outlive a restart on disk.
        self.finish_redactions().await;
        let mut msgs = Vec::with_capacity(MAX_BATCH);
        let mut barriers = Vec::new();
        while rx.recv_many(&mut msgs, MAX_BATCH).await > 0 {
            let mut batch = std::mem::take(&mut msgs);
            if batch.iter().any(|m| matches!(m, Msg::Barrier(_))) {
                let (b, rest): (Vec<Msg>, Vec<Msg>) = batch
                    .into_iter()
                    .partition(|m| matches!(m, Msg::Barrier(_)));
                barriers.extend(b.into_iter().filter_map(|m| match m {
                    Msg::Barrier(tx) => Some(tx),
                    _ => None,
                }));
                batch = rest;
            }
            self.batch(batch).await;
            // Every batch received before the barriers is finished: durable and published, or
            // failed. A batch whose flush failed is neither yet: say so.
            for tx in barriers.drain(..) {
                let res = match self.unflushed {
                    Some(_) => Err("the store is failing writes; retry later".to_owned()),
                    None => Ok(()),
                };
                let _ = tx.send(res);
            }
        }
        if let Err(e) = self.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
        tracing::debug!("writer stopped");
    }

    /// The state of a stream, loaded from the log on first use.
    fn entry(&mut self, id: &StreamId) -> StoreResult<&mut Cached> {
        if !self.cache.contains_key(id) {
            if self.cache.len() >= MAX_CACHED_STREAMS {
                if let Some(k) = self.cache.keys().next().cloned() {
                    self.cache.remove(&k);
                }
            }
            let loaded = self.load(id)?;
            self.cache.insert(id.clone(), loaded);
        }
        self.cache
            .get_mut(id)
            .ok_or_else(|| StoreError::Backend("cache entry vanished".into()))
    }

    /// The latest snapshot plus the events after it (see [`crate::snapshot::load`]).
    fn load(&self, id: &StreamId) -> StoreResult<Cached> {
        let loaded = crate::snapshot::load(self.store.as_ref(), id, None)?;
        Ok(Cached {
            head: loaded.head,
            state: loaded.state,
            snap: loaded.from_snapshot,
        })
    }

    /// Stages a snapshot of every touched stream that is `snapshot_every` events or more past
    /// its last one. A state that cannot be encoded is logged and skipped: loads replay more.
    fn stage_snapshots(&mut self, touched: &[StreamId], batch: &mut AppendBatch) {
        if self.snapshot_every == 0 {
            return;
        }
        for id in touched {
            let Some(c) = self.cache.get_mut(id) else {
                continue;
            };
            if c.head < c.snap.saturating_add(self.snapshot_every) {
                continue;
            }
            match crate::snapshot::encode(&c.state) {
                Ok(bytes) => {
                    batch.snapshots.push((id.clone(), c.head, bytes));
                    c.snap = c.head;
                }
                Err(e) => tracing::warn!(stream = %id, error = %e, "snapshot not stored"),
            }
        }
    }

    async fn batch(&mut self, msgs: Vec<Msg>) {
        if self.broken {
            self.recover().await;
        }
        self.outcomes.maintain();
        let now = now_ms();
        let started = Instant::now();
        let mut batch = AppendBatch::default();
        let mut pending: Vec<Pending> = Vec::new();
        let mut loads = Vec::new();
        let mut touched: Vec<StreamId> = Vec::new();
        // Outcomes decided earlier in this batch, for a retry that arrives in the same batch.
        let mut seen: HashMap<(StreamId, String), CommandOutcome> = HashMap::new();

        for msg in msgs {
            match msg {
                Msg::Load { id, reply } => loads.push((id, reply)),
                // Taken out by `run` before the batch.
                Msg::Barrier(tx) => {
                    let _ = tx.send(Ok(()));
                }
                Msg::Roster {
                    company,
                    operator,
                    groups,
                } => self.note_roster(company, operator, groups, &mut batch),
                Msg::Command(req, queued) => {
                    let req = *req;
                    match self.command(&req, now, &mut batch, &mut touched, &mut seen) {
                        Ok(outcome) => pending.push(Pending {
                            queued,
                            reply: req.reply,
                            outcome,
                        }),
                        Err(e) => {
                            metrics::COMMANDS_REFUSED.inc();
                            let _ = req.reply.send(Err(e));
                        }
                    }
                }
            }
        }

        self.stage_snapshots(&touched, &mut batch);
        let redactions = note_redactions(&mut batch);
        // Webhook outbox records, in the same atomic write as their events.
        let outboxed = match self.outbox.stage(self.store.as_ref(), &mut batch) {
            Ok(o) => o,
            Err(e) => {
                self.failed(&e, &batch, &touched, pending, loads);
                return;
            }
        };
        // After a failed flush, nothing is acked (an idempotent retry of an unflushed command
        // included) or installed before a flush succeeds.
        let must_flush = self.unflushed.is_some() && (!pending.is_empty() || !loads.is_empty());
        let flushed = !batch.is_empty() || must_flush;
        if flushed {
            if !batch.is_empty() {
                if let Err(e) = self.store.append(&batch) {
                    self.failed(&e, &batch, &touched, pending, loads);
                    return;
                }
            }
            if self.durability == Durability::Relaxed {
                // Acked before the flush; published only after it, so no subscriber ever sees
                // an event that a crash could take back.
                pending = self.ack(pending);
            }
            metrics::WRITER_APPEND.observe(started.elapsed());
            let flush_started = Instant::now();
            if let Err(e) = self.flush().await {
                self.failed(&e, &batch, &touched, pending, loads);
                // Appended, so in the store: publish it once a flush makes it durable.
                let carry = self.unflushed.get_or_insert_with(Unflushed::default);
                carry.events.extend(batch.events);
                carry.outboxed.extend(outboxed);
                carry.redactions.extend(redactions);
                return;
            }
            metrics::WRITER_FLUSH.observe(flush_started.elapsed());
            self.health.ok();
            self.broken = false;
            metrics::BATCHES.inc();
            metrics::EVENTS_APPENDED.add(batch.events.len() as u64);
        }
        // What earlier failed flushes left goes first, in append order, once a flush succeeded.
        let (mut events, mut outboxed, mut redactions) = (batch.events, outboxed, redactions);
        if let Some(carry) = self.unflushed.take_if(|_| flushed) {
            tracing::info!(
                events = carry.events.len(),
                "events of a batch whose flush had failed are durable now"
            );
            metrics::EVENTS_APPENDED.add(carry.events.len() as u64);
            events.splice(0..0, carry.events);
            outboxed.splice(0..0, carry.outboxed);
            redactions.splice(0..0, carry.redactions);
        }
        let publish_started = Instant::now();
        // Erase before publishing and acking: whoever learns of `session_anonymized` (the
        // admin's ack, a subscriber) and then reads the history finds the data gone.
        for (id, upto) in redactions {
            self.redact(id, upto).await;
        }
        // Publish before acking: a client that reads right after its ack (history, state_at,
        // a query) must find its own write. Publishing is in-memory and never blocks.
        for (company, env) in events {
            if env.stream.kind() == StreamKind::Contact {
                self.contacts.on_committed(&company, &env);
            }
            let id = StreamId::new(company, env.stream.clone());
            self.hub.publish(&id, &Arc::new(SharedEvent::new(env)));
        }
        // Durable: the webhook dispatchers may deliver up to here.
        self.outbox.committed(outboxed);
        self.ack(pending);
        self.answer_loads(loads);
        if flushed {
            metrics::WRITER_PUBLISH.observe(publish_started.elapsed());
        }
    }

    /// After a failed write: lets the store recover (sled must be reopened after an I/O error).
    /// If it was reopened, it holds what was durable, which may be less than what the writer
    /// appended: every cached state, derived record, roster and outbox head is dropped, and of
    /// the batches kept aside after a failed flush, the prefix that is in the store is published
    /// (it is durable now) and the rest forgotten (never acked, never published: lost by the
    /// disk, and their commands get a fresh decision when retried).
    async fn recover(&mut self) {
        let store = self.store.clone();
        let reopened = match tokio::task::spawn_blocking(move || store.recover()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the store could not recover yet");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the store's recovery task failed");
                return;
            }
        };
        if !reopened {
            return;
        }
        self.cache.clear();
        self.derived.clear();
        self.roster.clear();
        self.outbox.reset();
        let Some(carry) = self.unflushed.take() else {
            return;
        };
        let total = carry.events.len();
        let mut durable = Vec::new();
        for (company, env) in carry.events {
            let id = StreamId::new(company.clone(), env.stream.clone());
            let found = self.store.read(&id, env.seq, 1);
            let same = matches!(&found, Ok(v) if v.first().is_some_and(|e| e.seq == env.seq && e.command_id == env.command_id));
            if !same {
                break;
            }
            durable.push((company, env));
        }
        tracing::warn!(
            durable = durable.len(),
            lost = total - durable.len(),
            "events of batches whose flush had failed, after reopening the store"
        );
        metrics::EVENTS_APPENDED.add(durable.len() as u64);
        for (company, env) in durable {
            if env.stream.kind() == StreamKind::Contact {
                self.contacts.on_committed(&company, &env);
            }
            let id = StreamId::new(company, env.stream.clone());
            self.hub.publish(&id, &Arc::new(SharedEvent::new(env)));
        }
        // Redactions of the carried batches: their markers are in the store if their events
        // are, and the next start finishes them. The webhook dispatchers catch up with the
        // outbox at the next committed batch (its heads are reloaded from the store).
    }

    /// Sends the acks; returns nothing left to ack.
    fn ack(&self, pending: Vec<Pending>) -> Vec<Pending> {
        for p in pending {
            metrics::COMMANDS_ACKED.inc();
            metrics::WRITER_ACK.observe(p.queued.elapsed());
            let _ = p.reply.send(Ok(p.outcome));
        }
        Vec::new()
    }

    /// A batch could not be written or flushed: nothing is acked, published or installed, and
    /// the cached states, derived records and outbox heads that include it are dropped so they
    /// reload from the log.
    fn failed(
        &mut self,
        e: &StoreError,
        batch: &AppendBatch,
        touched: &[StreamId],
        pending: Vec<Pending>,
        loads: Vec<(StreamId, oneshot::Sender<StoreResult<()>>)>,
    ) {
        tracing::error!(error = %e, events = batch.events.len(), "batch not written");
        self.health.failed(e);
        self.broken = true;
        metrics::STORE_FAILURES.inc();
        for id in touched {
            self.cache.remove(id);
        }
        self.derived.clear();
        self.roster.clear();
        self.outbox.reset();
        for p in pending {
            metrics::COMMANDS_REFUSED.inc();
            let _ = p.reply.send(Err(CommandError::Unavailable(format!(
                "the store could not take the write ({e}); retry with the same command_id"
            ))));
        }
        // Not installed: the store may hold events not yet durable (a failed flush), which the
        // hub must not see before they are.
        for (_, reply) in loads {
            let _ = reply.send(Err(e.clone()));
        }
    }

    /// One command: access, idempotency, then decide. Stages accepted events into `batch`.
    fn command(
        &mut self,
        req: &CommandRequest,
        now: u64,
        batch: &mut AppendBatch,
        touched: &mut Vec<StreamId>,
        seen: &mut HashMap<(StreamId, String), CommandOutcome>,
    ) -> Result<CommandOutcome, CommandError> {
        let unavailable = |e: StoreError| CommandError::Unavailable(e.to_string());
        let id = StreamId::new(req.company.clone(), req.stream.clone());
        // Access first: nothing below (a stored ack, the head in a conflict) may reach someone
        // who cannot read the stream.
        let entry = self.entry(&id).map_err(unavailable)?;
        domain::can_read(&req.stream, &entry.state, &req.principal)?;
        let fingerprint = fingerprint(&req.command);
        let key = (id, req.command_id.clone());
        let prior = match seen.get(&key) {
            Some(o) => Some(o.clone()),
            None if self.outcomes.may_exist(&key.0, &key.1) => {
                self.store.outcome(&key.0, &key.1).map_err(unavailable)?
            }
            None => None, // certainly never stored
        };
        if let Some(outcome) = prior {
            if outcome.actor != req.principal.id || outcome.fingerprint != fingerprint {
                return Err(CommandError::Rejected(Rejection {
                    code: copanel_protocol::ErrorCode::Invalid,
                    message: format!(
                        "command_id {:?} was already used on {} for a different command; use a new id",
                        req.command_id, req.stream
                    ),
                    field: Some("command_id".into()),
                }));
            }
            // Idempotent retry: the first result, nothing appended. Acked after this batch's
            // flush, in case the first is in this very batch.
            return Ok(outcome);
        }
        let mut outcome = self.decide(&key.0, req, now, batch, touched)?;
        outcome.actor = req.principal.id.clone();
        outcome.fingerprint = fingerprint;
        self.outcomes.add(&key.0, &key.1);
        batch
            .outcomes
            .push((key.0.clone(), key.1.clone(), outcome.clone()));
        seen.insert(key, outcome.clone());
        Ok(outcome)
    }

    fn load_roster(&mut self, company: &Arc<str>) -> StoreResult<()> {
        if self.roster.contains_key(company) {
            return Ok(());
        }
        let mut roster = BTreeMap::new();
        for (operator, v) in self.store.index_scan(company, IndexKind::Roster)? {
            let groups: Vec<String> = rmp_serde::from_slice(&v).unwrap_or_default();
            roster.insert(operator, groups);
        }
        self.roster.insert(company.clone(), roster);
        Ok(())
    }

    /// Stages a roster change, if it is one.
    fn note_roster(
        &mut self,
        company: Arc<str>,
        operator: String,
        mut groups: Vec<String>,
        batch: &mut AppendBatch,
    ) {
        if let Err(e) = self.load_roster(&company) {
            tracing::warn!(error = %e, "roster not loaded");
            return;
        }
        groups.sort();
        groups.dedup();
        let Some(roster) = self.roster.get_mut(&company) else {
            return;
        };
        if roster.get(&operator) == Some(&groups) {
            return;
        }
        let value = rmp_serde::to_vec(&groups).ok();
        roster.insert(operator.clone(), groups);
        batch.index.push(IndexWrite {
            company,
            kind: IndexKind::Roster,
            key: operator,
            value,
        });
    }

    fn answer_loads(&mut self, loads: Vec<(StreamId, oneshot::Sender<StoreResult<()>>)>) {
        for (id, reply) in loads {
            let res = self.entry(&id).map(|c| (c.head, c.state.clone()));
            let res = res.map(|(head, state)| self.hub.install(&id, head, state));
            let _ = reply.send(res);
        }
    }

    /// Decides one command and stages its events into the batch; updates cached states.
    fn decide(
        &mut self,
        id: &StreamId,
        req: &CommandRequest,
        now: u64,
        batch: &mut AppendBatch,
        touched: &mut Vec<StreamId>,
    ) -> Result<CommandOutcome, CommandError> {
        let unavailable = |e: StoreError| CommandError::Unavailable(e.to_string());
        let limits = self.limits.clone();
        let entry = self.entry(id).map_err(unavailable)?;
        let head = entry.head;
        if let Some(expected) = req.expected_seq {
            if expected != head {
                return Err(CommandError::Conflict { expected, head });
            }
        }
        // Load what the rules read of other streams, then decide against immutable views.
        for other in domain::needs(&req.stream, &entry.state, &req.command) {
            self.entry(&StreamId::new(id.company.clone(), other))
                .map_err(unavailable)?;
        }
        // Group members are told of opens, redirects, claims and closes on their feeds.
        if matches!(
            req.command,
            Command::OpenSession { .. }
                | Command::Redirect { .. }
                | Command::Claim {}
                | Command::CloseSession {}
        ) {
            self.load_roster(&id.company).map_err(unavailable)?;
        }
        let fresh_id = format!("{:016x}", rand::random::<u64>());
        let decision = {
            let world = CacheWorld {
                cache: &self.cache,
                company: &id.company,
                roster: self.roster.get(&id.company),
            };
            let state = &self
                .cache
                .get(id)
                .ok_or_else(|| unavailable(StoreError::Backend("cache entry vanished".into())))?
                .state;
            let ctx = Ctx {
                principal: &req.principal,
                stream: &req.stream,
                now,
                next_seq: head + 1,
                limits: &limits,
                world: &world,
                fresh_id: &fresh_id,
            };
            domain::decide(state, &ctx, &req.command)?
        };
        // Load side streams before changing anything, so a load failure leaves no trace.
        for (stream, _) in &decision.others {
            let side = StreamId::new(id.company.clone(), stream.clone());
            self.entry(&side).map_err(unavailable)?;
        }
        let actor = req.principal.actor();
        let mut stage = |this: &mut Self, sid: StreamId, event| -> u64 {
            let Some(c) = this.cache.get_mut(&sid) else {
                return 0; // loaded just above
            };
            let env = Arc::new(Envelope {
                stream: sid.stream.clone(),
                seq: c.head + 1,
                at: now,
                actor: actor.clone(),
                command_id: Some(req.command_id.clone()),
                event,
            });
            domain::apply(&mut c.state, &env);
            c.head = env.seq;
            if let Err(e) =
                this.derived
                    .on_event(this.store.as_ref(), &sid.company, &env, &mut batch.index)
            {
                // Derived records are rebuildable hints; a failure to read one must not lose
                // the event. Logged, and the cache is reset so the next event reloads it.
                tracing::warn!(error = %e, "derived records not updated");
                this.derived.clear();
            }
            batch.events.push((sid.company.clone(), env));
            if !touched.contains(&sid) {
                touched.push(sid);
            }
            c.head
        };
        let mut seq = head;
        for event in decision.events {
            seq = stage(self, id.clone(), event);
        }
        for (stream, event) in decision.others {
            stage(self, StreamId::new(id.company.clone(), stream), event);
        }
        Ok(CommandOutcome {
            seq,
            created: decision.created,
            actor: String::new(),
            fingerprint: 0,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Anonymisation: erasing a session's personal data from the log.
// ---------------------------------------------------------------------------------------------

/// The store-wide key of a pending redaction: `<company>/<stream>` (company ids hold no `/`).
fn redaction_marker(id: &StreamId, upto: Option<u64>) -> IndexWrite {
    IndexWrite {
        company: Arc::from(""),
        kind: IndexKind::Redactions,
        key: format!("{}/{}", id.company, id.stream),
        value: upto.map(|u| u.to_be_bytes().to_vec()),
    }
}

/// For every `session_anonymized` staged in `batch`: the stream and the last seq to redact
/// (the one before it). Stages a durable marker for each in the same atomic write, so that a
/// crash between the commit and the redaction is finished at the next start.
fn note_redactions(batch: &mut AppendBatch) -> Vec<(StreamId, u64)> {
    let found: Vec<(StreamId, u64)> = batch
        .events
        .iter()
        .filter(|(_, env)| {
            env.stream.kind() == StreamKind::Session
                && matches!(env.event, copanel_protocol::Event::SessionAnonymized)
                && env.seq > 1
        })
        .map(|(company, env)| {
            let id = StreamId::new(company.clone(), env.stream.clone());
            (id, env.seq - 1)
        })
        .collect();
    for (id, upto) in &found {
        batch.index.push(redaction_marker(id, Some(*upto)));
    }
    found
}

impl Writer {
    /// Redacts events `1..=upto` of `id` in the store (a compaction, off the async threads),
    /// then drops the marker. A failure is logged and leaves the marker: the event is durable
    /// and the state already redacted, and the next start tries again.
    async fn redact(&self, id: StreamId, upto: u64) {
        let store = self.store.clone();
        let sid = id.clone();
        let done = tokio::task::spawn_blocking(move || {
            store.redact(&sid, upto, &domain::anonymize::redact_event)
        })
        .await;
        let err = match done {
            Ok(Ok(())) => {
                let batch = AppendBatch {
                    index: vec![redaction_marker(&id, None)],
                    ..AppendBatch::default()
                };
                // Not flushed on its own: if it is lost, the next start redacts once more,
                // which changes nothing.
                match self.store.append(&batch) {
                    Ok(()) => return,
                    Err(e) => e.to_string(),
                }
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the redaction task failed: {e}"),
        };
        tracing::error!(
            stream = %id,
            upto,
            error = %err,
            "personal data of an anonymised session not yet erased from disk; retried at next start"
        );
    }

    /// Finishes the redactions whose markers are still in the store.
    async fn finish_redactions(&mut self) {
        let pending = match self.store.index_scan("", IndexKind::Redactions) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "pending redactions not read");
                return;
            }
        };
        for (key, value) in pending {
            let parsed = key.split_once('/').and_then(|(company, stream)| {
                let stream = StreamName::parse(stream).ok()?;
                let upto = u64::from_be_bytes(value.as_slice().try_into().ok()?);
                Some((StreamId::new(Arc::from(company), stream), upto))
            });
            match parsed {
                Some((id, upto)) => {
                    tracing::warn!(stream = %id, upto, "finishing an interrupted redaction");
                    self.redact(id, upto).await;
                }
                None => {
                    tracing::warn!(key = %key, "dropping a malformed redaction marker");
                    let marker = IndexWrite {
                        company: Arc::from(""),
                        kind: IndexKind::Redactions,
                        key,
                        value: None,
                    };
                    let batch = AppendBatch {
                        index: vec![marker],
                        ..AppendBatch::default()
                    };
                    if let Err(e) = self.store.append(&batch) {
                        tracing::error!(error = %e, "malformed redaction marker not dropped");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fingerprints are stored with outcomes: hashing while encoding must give exactly the hash
    /// of the collected encoding, as stores written before it have.
    #[test]
    fn fingerprint_is_fnv1a_of_the_named_msgpack_encoding() {
        let cmds = [
            Command::SetParameter {
                key: "k".into(),
                value: "v".into(),
                read_only: Some(true),
            },
            Command::Claim {},
            Command::CloseSession {},
        ];
        for cmd in cmds {
            let bytes = rmp_serde::to_vec_named(&cmd).unwrap();
            let expected = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
            assert_eq!(fingerprint(&cmd), expected, "{cmd:?}");
        }
        assert_ne!(
            fingerprint(&Command::Claim {}),
            fingerprint(&Command::CloseSession {})
        );
    }
}
