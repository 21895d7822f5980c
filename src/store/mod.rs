//! The durable event log, behind a small trait so that a clustered backend can follow.
//!
//! The log owns three kinds of records: events (per stream, keyed by a gapless `seq` from 1),
//! command outcomes (for idempotent retries) and the store's `epoch`. It does no validation and
//! assigns no seqs: the single writer ([`crate::writer`]) decides everything and hands the log
//! finished batches. The log must never expose a batch partially.
//!
//! # Layout
//! - this file: [`Store`], [`StreamId`], [`AppendBatch`], [`CommandOutcome`], [`StoreError`].
//! - [`sled_store`]: the embedded sled implementation.

pub mod sled_store;

use copanel_protocol::{Envelope, StreamName};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use sled_store::SledStore;

/// A stream within a company. The company never appears on the wire; it comes from the token,
/// which is what keeps tenants apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    /// The company (the token's `company` claim, validated like a stream id).
    pub company: Arc<str>,
    /// The stream within it.
    pub stream: StreamName,
}

impl StreamId {
    /// Builds a stream id.
    pub fn new(company: Arc<str>, stream: StreamName) -> Self {
        StreamId { company, stream }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.company, self.stream)
    }
}

/// What a command produced; stored so that a retry with the same `command_id` gets it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutcome {
    /// The last seq the command appended on its stream (the head then, if it appended nothing).
    pub seq: u64,
    /// The id of what it created, if anything.
    pub created: Option<String>,
    /// Who sent it: a retry must come from the same sender to get this outcome.
    #[serde(default)]
    pub actor: String,
    /// FNV-1a of the command's MessagePack encoding: a retry must be the same command.
    #[serde(default)]
    pub fingerprint: u64,
}

/// One atomic write: events (possibly on several streams) and command outcomes.
#[derive(Debug, Default)]
pub struct AppendBatch {
    /// Events with their company, in append order. Seqs are already assigned and gapless.
    pub events: Vec<(Arc<str>, Arc<Envelope>)>,
    /// Outcomes to remember, keyed by the command's stream and id.
    pub outcomes: Vec<(StreamId, String, CommandOutcome)>,
    /// Derived records to write or delete with the events (see [`IndexKind`]).
    pub index: Vec<IndexWrite>,
    /// Stream snapshots to store with the events: the stream, the seq the state reflects and
    /// the encoded state (see [`crate::snapshot`]).
    pub snapshots: Vec<(StreamId, u64, Vec<u8>)>,
}

impl AppendBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.outcomes.is_empty()
            && self.index.is_empty()
            && self.snapshots.is_empty()
    }
}

/// Kinds of derived records kept beside the log. They are projections that queries need
/// without replaying every stream; all of them can be rebuilt from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexKind {
    /// Operator id → the groups it belonged to when it last connected (MessagePack list).
    Roster,
    /// Tag (folded) → how many sessions carry it now, and its spelling.
    TagUsage,
    /// Operator id → the tags it added most recently.
    RecentTags,
    /// Session id → a summary for `query sessions` (owner, status, collaborators).
    Sessions,
    /// Store-wide (company `""`): `<company>/<stream>` → the seq (u64 big-endian) up to which
    /// that stream's events still wait for [`Store::redact`]. Written with the
    /// `session_anonymized` event, deleted once the redaction is done; the writer finishes
    /// what it finds here at start.
    Redactions,
    /// Webhook outbox (see [`crate::webhooks`]): per company, the commit order of its events,
    /// `oseq` (20 decimal digits, so key order is numeric order) → the event's stream and seq.
    /// Written by the writer in the same atomic batch as the events.
    Outbox,
    /// Store-wide (company `""`): `<company>/<webhook id>` → a webhook registration (JSON).
    Webhooks,
    /// Store-wide (company `""`): `<company>/<webhook id>` → the last outbox `oseq` delivered to
    /// that webhook (u64 big-endian).
    WebhookPositions,
}

impl IndexKind {
    /// The byte that tells the kinds apart in storage keys.
    pub fn tag(self) -> u8 {
        match self {
            IndexKind::Roster => b'g',
            IndexKind::TagUsage => b't',
            IndexKind::RecentTags => b'r',
            IndexKind::Sessions => b's',
            IndexKind::Redactions => b'a',
            IndexKind::Outbox => b'o',
            IndexKind::Webhooks => b'w',
            IndexKind::WebhookPositions => b'p',
        }
    }
}

/// One derived record to write (`Some`) or delete (`None`).
#[derive(Debug, Clone)]
pub struct IndexWrite {
    /// The company it belongs to.
    pub company: Arc<str>,
    /// Which index.
    pub kind: IndexKind,
    /// The key within the company's index.
    pub key: String,
    /// The value, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

/// A storage failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, disk full, …).
    #[error("storage error: {0}")]
    Backend(String),
    /// A record could not be decoded.
    #[error("corrupt record {key}: {why}")]
    Corrupt {
        /// The record's key, printable.
        key: String,
        /// What was wrong.
        why: String,
    },
}

/// Shorthand for storage results.
pub type StoreResult<T> = Result<T, StoreError>;

/// A boxed future returned by [`Store::flush`].
pub type FlushFuture = Pin<Box<dyn Future<Output = StoreResult<()>> + Send + 'static>>;

/// The log. Implementations are shared between the writer (appends) and readers (catch-up,
/// history); reads may run concurrently with an append and must see either none or all of it.
pub trait Store: Send + Sync + 'static {
    /// The store's id, made when it was created. It changes only if the data is replaced.
    fn epoch(&self) -> &str;

    /// The last seq of a stream (0 if it has no events).
    fn head(&self, id: &StreamId) -> StoreResult<u64>;

    /// Up to `limit` events of a stream, from seq `from` on, in order.
    fn read(&self, id: &StreamId, from: u64, limit: usize) -> StoreResult<Vec<Envelope>>;

    /// The stored outcome of a command, if it was applied before.
    fn outcome(&self, id: &StreamId, command_id: &str) -> StoreResult<Option<CommandOutcome>>;

    /// Calls `f(company, stream, command_id)` for every stored command outcome, in any order
    /// (what [`crate::outcomes`] builds its filter from). The default lists nothing and says
    /// so: a store without it never gets a filter, and every command reads [`Store::outcome`].
    fn outcome_ids(&self, f: &mut dyn FnMut(&str, &str, &str)) -> StoreResult<()> {
        let _ = f;
        Err(StoreError::Backend(
            "this store cannot list its command outcomes".into(),
        ))
    }

    /// Writes a batch atomically (all or nothing). Not necessarily durable until [`Store::flush`].
    fn append(&self, batch: &AppendBatch) -> StoreResult<()>;

    /// Makes everything appended so far durable.
    fn flush(&self) -> FlushFuture;

    /// [`Store::flush`] on the caller's thread, for a caller that owns its thread (the writer):
    /// it saves handing the flush to another thread and waking the caller back. `None` when the
    /// store has no blocking flush (the default); the caller then awaits [`Store::flush`].
    fn flush_blocking(&self) -> Option<StoreResult<()>> {
        None
    }

    /// After a failed append or flush: makes the store usable again if it can. `Ok(true)` if it
    /// was reopened, so that it now holds only what was durable (every flushed batch, perhaps
    /// some appended after); `Ok(false)` if nothing was done and its contents are as they were.
    /// Blocking. The default does nothing.
    fn recover(&self) -> StoreResult<bool> {
        Ok(false)
    }

    /// Every stream in the store with its head, in key order (for offline tools).
    fn streams(&self) -> StoreResult<Vec<(StreamId, u64)>>;

    /// The streams of one company whose names start with `prefix` (e.g. `contact/`), with heads.
    fn company_streams(&self, company: &str, prefix: &str) -> StoreResult<Vec<(StreamId, u64)>>;

    /// All records of one derived index of a company, as (key, value), in key order.
    fn index_scan(&self, company: &str, kind: IndexKind) -> StoreResult<Vec<(String, Vec<u8>)>>;

    /// One derived record.
    fn index_get(&self, company: &str, kind: IndexKind, key: &str) -> StoreResult<Option<Vec<u8>>>;

    /// Up to `limit` records of one derived index of a company whose keys sort after `after`
    /// (all of them if `None`), in key order. The default filters [`Store::index_scan`].
    fn index_after(
        &self,
        company: &str,
        kind: IndexKind,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<(String, Vec<u8>)>> {
        Ok(self
            .index_scan(company, kind)?
            .into_iter()
            .filter(|(k, _)| after.is_none_or(|a| k.as_str() > a))
            .take(limit)
            .collect())
    }

    /// The record of one derived index of a company with the greatest key. The default scans.
    fn index_last(&self, company: &str, kind: IndexKind) -> StoreResult<Option<(String, Vec<u8>)>> {
        Ok(self.index_scan(company, kind)?.pop())
    }

    /// The stored snapshot of `id` with the greatest seq at or before `at_most`, as (seq, value).
    /// The default (a store that keeps none) has none.
    fn snapshot(&self, id: &StreamId, at_most: u64) -> StoreResult<Option<(u64, Vec<u8>)>> {
        let _ = (id, at_most);
        Ok(None)
    }

    /// Rewrites events `1..=upto` of stream `id` with `f` applied, so that what `f` removes is
    /// gone *from disk*, not only from later reads (anonymisation). Everything else, and every
    /// other record, stays as it is, except the stream's snapshots, which are deleted (they
    /// hold the same personal data; loads replay the redacted log). May be slow (the sled store
    /// copies itself: O(store size), appends wait meanwhile); idempotent when `f` is.
    fn redact(&self, id: &StreamId, upto: u64, f: &dyn Fn(&mut Envelope)) -> StoreResult<()>;
}
