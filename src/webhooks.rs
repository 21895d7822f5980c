//! Webhooks: the platform registers HTTP endpoints and the event kinds it wants; every matching
//! committed event is POSTed to it as a full change (the envelope: `stream`, `seq`, `at`,
//! `actor`, `command_id`, `event`), in commit order (so in stream order), signed with
//! HMAC-SHA256, retried with exponential backoff until the endpoint answers 2xx, never skipped.
//!
//! This module owns:
//! - the **outbox** ([`Outbox`]): the writer gives every committed event of an *armed* company
//!   a per-company outbox sequence `oseq` and writes `company, oseq → (stream, seq)`
//!   ([`IndexKind::Outbox`]) in the same atomic batch as the event, so the outbox is exactly
//!   the commit order and is as durable as the events. After the batch is durable, the writer
//!   raises the company's committed `oseq` and wakes the dispatchers; they never read past it.
//!   A company is armed when it has a webhook in the store at start, or once one is registered
//!   (it stays armed until a restart after its last webhook is deleted): the others' records
//!   would only be written to be trimmed. A registration arms the company, then waits for the
//!   writer to finish the batch it may be staging ([`crate::writer::WriterHandle::barrier`]),
//!   so every batch after its start position has records.
//! - the **registrations** ([`IndexKind::Webhooks`]) and **delivery positions**
//!   ([`IndexKind::WebhookPositions`], the last `oseq` delivered), both in the store, so a
//!   restart neither loses nor re-sends acknowledged deliveries (at-least-once: a delivery
//!   acknowledged just before a crash may be sent again; `X-Copanel-Delivery` identifies it).
//! - the **trimmer**: every `trim_interval` (30 s) it deletes a company's outbox records that
//!   all its webhooks have delivered (all but the last when it has none), so the outbox holds
//!   only what the slowest endpoint still owes.
//! - the **dispatcher** ([`Webhooks`]): one task per endpoint reads the outbox after its position
//!   a page at a time (bounded memory), loads each envelope from the log, filters by kind,
//!   POSTs it and waits for 2xx before it moves on.
//! - the routes `POST /api/v1/webhooks`, `GET /api/v1/webhooks`, `DELETE /api/v1/webhooks/{id}`
//!   (service or admin tokens, scoped to the token's company).
//!
//! Each delivery is `POST <url>` with `Content-Type: application/json`, the envelope as body,
//! `X-Copanel-Signature: sha256=<hex HMAC-SHA256 of the body keyed by the webhook's secret>`,
//! `X-Copanel-Delivery: <company>:<oseq>` and `X-Copanel-Webhook: <webhook id>`.
//!
//! Never: deliver an event before the batch that holds it is durable, skip one, or hold a lock
//! across an `.await`.

use crate::server::App;
use crate::store::{AppendBatch, IndexKind, IndexWrite, Store, StoreError, StoreResult, StreamId};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use copanel_protocol::{Envelope, StreamName};
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Every event kind a webhook may ask for (the wire spelling of [`copanel_protocol::Event`]).
pub const EVENT_KINDS: &[&str] = &[
    "session_opened",
    "client_info_changed",
    "collaborator_invited",
    "invitation_accepted",
    "invitation_declined",
    "invitation_cancelled",
    "collaborator_left",
    "collaborator_removed",
    "parameter_set",
    "parameter_removed",
    "tag_added",
    "tag_removed",
    "note_added",
    "note_edited",
    "note_deleted",
    "message_posted",
    "session_closed",
    "invitation_received",
    "invitation_ended",
    "contact_linked",
    "contact_unlinked",
    "session_redirected",
    "session_claimed",
    "session_anonymized",
    "contact_created",
    "contact_updated",
    "contact_detail_added",
    "session_linked",
    "session_unlinked",
    "contact_removed",
    "assignment_received",
    "assignment_ended",
    "template_starred",
    "template_unstarred",
    "tag_defined",
    "autotag_rule_added",
    "autotag_rule_removed",
    "template_created",
    "template_updated",
    "template_deleted",
];

/// Outbox records read per page by a dispatcher.
const PAGE: usize = 64;
/// Outbox records deleted per batch by the trimmer.
const TRIM_PAGE: usize = 1024;
/// Longest webhook URL, bytes.
const MAX_URL: usize = 2048;
/// Secret length bounds, bytes.
const MIN_SECRET: usize = 16;
const MAX_SECRET: usize = 256;

/// Webhook delivery settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// First retry delay after a failed delivery; doubles on each further failure.
    pub backoff_min: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// How often an idle dispatcher looks at the outbox even without a wake-up.
    pub poll_interval: Duration,
    /// How long one delivery attempt may take before it counts as failed.
    pub request_timeout: Duration,
    /// Most webhooks one company may register.
    pub max_per_company: usize,
    /// How often outbox records that every webhook of a company has passed are deleted.
    pub trim_interval: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            max_per_company: 20,
            trim_interval: Duration::from_secs(30),
        }
    }
}

/// `HMAC-SHA256(secret, body)` as `sha256=<lowercase hex>`: the `X-Copanel-Signature` value.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail; an empty tag would never verify.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The outbox (written by the writer).
// ---------------------------------------------------------------------------------------------

fn outbox_key(oseq: u64) -> String {
    format!("{oseq:020}")
}

#[derive(Serialize, Deserialize)]
struct OutboxRecord {
    stream: String,
    seq: u64,
}

fn last_oseq(store: &dyn Store, company: &str) -> StoreResult<u64> {
    match store.index_last(company, IndexKind::Outbox)? {
        None => Ok(0),
        Some((k, _)) => k.parse().map_err(|_| StoreError::Corrupt {
            key: format!("outbox {company}/{k}"),
            why: "not an outbox sequence".into(),
        }),
    }
}

/// What the writer and the dispatchers share: the committed (durable) outbox head per company
/// and the wake-up signal.
#[derive(Debug)]
pub struct OutboxShared {
    /// Company → the last `oseq` whose batch is durable. Absent: nothing was written for that
    /// company since start, so whatever the store holds is durable.
    committed: DashMap<Arc<str>, u64>,
    /// Bumped after every durable batch that wrote outbox records.
    signal: watch::Sender<u64>,
    /// Companies whose events get outbox records: those with a webhook in the store at start
    /// or registered since. The others' events would only be written to be trimmed away (at
    /// 10,000 events/s, as many record writes and deletions per second as events).
    armed: DashMap<Arc<str>, ()>,
}

impl OutboxShared {
    /// From now on, `company`'s events get outbox records. Until the writer has finished the
    /// batch it may be staging meanwhile ([`crate::writer::WriterHandle::barrier`]), some
    /// may still be staged without one.
    pub fn arm(&self, company: &str) {
        if !self.armed.contains_key(company) {
            self.armed.insert(Arc::from(company), ());
        }
    }

    /// Whether `company`'s events get outbox records.
    pub fn armed(&self, company: &str) -> bool {
        self.armed.contains_key(company)
    }

    /// The last durable `oseq` of a company.
    fn durable_head(&self, store: &dyn Store, company: &str) -> StoreResult<u64> {
        // Read the store first: if the map has no entry afterwards, the writer had not touched
        // the company yet (it inserts before appending), so what was read is durable.
        let stored = last_oseq(store, company)?;
        Ok(self.committed.get(company).map(|v| *v).unwrap_or(stored))
    }
}

/// The writer's side of the outbox: assigns `oseq`s and stages outbox records.
#[derive(Debug)]
pub struct Outbox {
    /// Company → the last `oseq` assigned (possibly not yet durable).
    heads: HashMap<Arc<str>, u64>,
    shared: Arc<OutboxShared>,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Outbox {
    /// A fresh outbox (heads are loaded from the store on first use per company).
    pub fn new() -> Self {
        Outbox {
            heads: HashMap::new(),
            shared: Arc::new(OutboxShared {
                committed: DashMap::new(),
                signal: watch::channel(0).0,
                armed: DashMap::new(),
            }),
        }
    }

    /// The part the dispatchers read.
    pub fn shared(&self) -> Arc<OutboxShared> {
        self.shared.clone()
    }

    /// Stages one outbox record per event of `batch`, in order. Returns the companies' new heads,
    /// to hand to [`Outbox::committed`] once the batch is durable.
    pub fn stage(
        &mut self,
        store: &dyn Store,
        batch: &mut AppendBatch,
    ) -> StoreResult<Vec<(Arc<str>, u64)>> {
        let mut touched: Vec<(Arc<str>, u64)> = Vec::new();
        let mut writes = Vec::with_capacity(batch.events.len());
        for (company, env) in &batch.events {
            if !self.shared.armed(company) {
                continue; // no webhook: nobody would ever read the record
            }
            let head = match self.heads.get(company) {
                Some(h) => *h,
                None => {
                    let h = last_oseq(store, company)?;
                    // Before anything for this company is appended (see `durable_head`).
                    self.shared.committed.entry(company.clone()).or_insert(h);
                    self.heads.insert(company.clone(), h);
                    h
                }
            };
            let oseq = head + 1;
            self.heads.insert(company.clone(), oseq);
            let value = rmp_serde::to_vec_named(&OutboxRecord {
                stream: env.stream.as_str().to_owned(),
                seq: env.seq,
            })
            .map_err(|e| StoreError::Backend(e.to_string()))?;
            writes.push(IndexWrite {
                company: company.clone(),
                kind: IndexKind::Outbox,
                key: outbox_key(oseq),
                value: Some(value),
            });
            match touched.iter_mut().find(|(c, _)| c == company) {
                Some(t) => t.1 = oseq,
                None => touched.push((company.clone(), oseq)),
            }
        }
        batch.index.extend(writes);
        Ok(touched)
    }

    /// The batch that [`Outbox::stage`] returned `heads` for is durable: let the dispatchers
    /// read up to them, and wake them.
    pub fn committed(&self, heads: Vec<(Arc<str>, u64)>) {
        if heads.is_empty() {
            return;
        }
        for (company, oseq) in heads {
            self.shared.committed.insert(company, oseq);
        }
        self.shared.signal.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A batch failed: forget the assigned heads so they are reloaded from the store.
    pub fn reset(&mut self) {
        self.heads.clear();
    }
}

// ---------------------------------------------------------------------------------------------
// Registrations and the dispatcher.
// ---------------------------------------------------------------------------------------------

/// Deletes up to [`TRIM_PAGE`] of `company`'s outbox records at or below `floor`, the oldest
/// first; returns how many.
fn trim_page(store: &dyn Store, company: Arc<str>, floor: u64) -> StoreResult<usize> {
    let index: Vec<IndexWrite> = store
        .index_after(&company, IndexKind::Outbox, None, TRIM_PAGE)?
        .into_iter()
        .take_while(|(k, _)| k.parse::<u64>().is_ok_and(|o| o <= floor))
        .map(|(key, _)| IndexWrite {
            company: company.clone(),
            kind: IndexKind::Outbox,
            key,
            value: None,
        })
        .collect();
    let n = index.len();
    if n > 0 {
        store.append(&AppendBatch {
            index,
            ..AppendBatch::default()
        })?;
    }
    Ok(n)
}

/// A stored webhook registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registration {
    company: String,
    id: String,
    url: String,
    /// Empty: every kind.
    kinds: Vec<String>,
    secret: String,
}

impl Registration {
    fn key(&self) -> String {
        reg_key(&self.company, &self.id)
    }
}

fn reg_key(company: &str, id: &str) -> String {
    format!("{company}/{id}")
}

/// A registration refused: the field and why.
#[derive(Debug, Clone)]
pub struct Invalid {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

/// Checks a webhook URL: `http://host[:port]/path`, no TLS (deliveries go to the platform's
/// internal network).
pub fn check_url(url: &str) -> Result<Uri, Invalid> {
    if url.len() > MAX_URL {
        return Err(invalid(
            "url",
            format!("the url is longer than {MAX_URL} bytes"),
        ));
    }
    let uri: Uri = url
        .parse()
        .map_err(|e| invalid("url", format!("{url:?} is not a valid URL: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid(
            "url",
            format!("{url:?} must be an absolute http:// URL (https and other schemes are not supported)"),
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("url", format!("{url:?} has no host")));
    }
    Ok(uri)
}

/// A running delivery task: its cancel switch and handle.
type Task = (watch::Sender<bool>, tokio::task::JoinHandle<()>);

/// The dispatcher: one delivery task per registered webhook.
pub struct Webhooks {
    store: Arc<dyn Store>,
    outbox: Arc<OutboxShared>,
    config: WebhookConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Registration key → (cancel, task). Locked only briefly, never across an `.await`.
    tasks: parking_lot::Mutex<HashMap<String, Task>>,
    /// The outbox trimmer's task.
    trimmer: parking_lot::Mutex<Option<Task>>,
    /// Held by a registration from reading the outbox head to storing its position, and by a
    /// trim pass, so a trim never deletes records a webhook registered meanwhile still needs.
    admin: tokio::sync::Mutex<()>,
    /// The writer, for a registration to wait until every batch staged before its company
    /// was armed is finished ([`Webhooks::attach_writer`]). Released by
    /// [`Webhooks::shutdown`]: the writer stops only once every handle is gone.
    writer: parking_lot::Mutex<Option<crate::writer::WriterHandle>>,
}

/// A registration as listed (without its secret).
#[derive(Debug, Clone, Serialize)]
pub struct WebhookInfo {
    /// Its id.
    pub webhook_id: String,
    /// Where deliveries go.
    pub url: String,
    /// The kinds it receives (empty: all).
    pub kinds: Vec<String>,
    /// The last outbox sequence delivered.
    pub position: u64,
}

impl Webhooks {
    /// Loads every registration from the store and starts its delivery task.
    pub fn start(
        store: Arc<dyn Store>,
        outbox: Arc<OutboxShared>,
        config: WebhookConfig,
    ) -> StoreResult<Arc<Self>> {
        let client = Client::builder(TokioExecutor::new()).build_http();
        let this = Arc::new(Webhooks {
            store,
            outbox,
            config,
            client,
            tasks: parking_lot::Mutex::new(HashMap::new()),
            trimmer: parking_lot::Mutex::new(None),
            admin: tokio::sync::Mutex::new(()),
            writer: parking_lot::Mutex::new(None),
        });
        // Before the writer starts: a company with a stored webhook gets outbox records from
        // the first batch on.
        for (key, value) in this.store.index_scan("", IndexKind::Webhooks)? {
            match serde_json::from_slice::<Registration>(&value) {
                Ok(reg) => {
                    this.outbox.arm(&reg.company);
                    this.spawn(reg)
                }
                Err(e) => tracing::warn!(key = %key, error = %e, "skipping a malformed webhook"),
            }
        }
        let (cancel, cancel_rx) = watch::channel(false);
        let task = tokio::spawn(this.clone().trim_loop(cancel_rx));
        *this.trimmer.lock() = Some((cancel, task));
        Ok(this)
    }

    /// Gives registrations the writer (see [`Webhooks::register`]); once, at start.
    pub fn attach_writer(&self, writer: crate::writer::WriterHandle) {
        *self.writer.lock() = Some(writer);
    }

    /// Trims the outbox every [`WebhookConfig::trim_interval`] until cancelled. The first pass
    /// also covers companies the writer has not touched since the start.
    async fn trim_loop(self: Arc<Self>, mut cancel: watch::Receiver<bool>) {
        let mut known: Option<Vec<Arc<str>>> = None;
        loop {
            if !self.pause(&mut cancel, self.config.trim_interval).await {
                return;
            }
            if known.is_none() {
                let store = self.store.clone();
                let found = tokio::task::spawn_blocking(move || store.streams()).await;
                match found {
                    Ok(Ok(streams)) => {
                        let mut cs: Vec<Arc<str>> =
                            streams.into_iter().map(|(id, _)| id.company).collect();
                        cs.sort();
                        cs.dedup();
                        known = Some(cs);
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "outbox trim: companies not listed"),
                    Err(e) => tracing::warn!(error = %e, "outbox trim: listing task failed"),
                }
            }
            let mut companies: Vec<Arc<str>> = known.clone().unwrap_or_default();
            companies.extend(self.outbox.committed.iter().map(|e| e.key().clone()));
            companies.sort();
            companies.dedup();
            for company in companies {
                if *cancel.borrow() {
                    return;
                }
                match self.trim(&company).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(company = %company, deleted = n, "outbox trimmed"),
                    Err(e) => tracing::warn!(company = %company, error = %e, "outbox not trimmed"),
                }
            }
        }
    }

    /// Deletes `company`'s outbox records that every one of its webhooks has delivered (all but
    /// the last when it has none: a new webhook starts at the head, and the last record keeps
    /// the head). Returns how many were deleted. Deletions need no flush: one lost to a crash is
    /// deleted by the next pass.
    pub async fn trim(&self, company: &str) -> StoreResult<usize> {
        let _admin = self.admin.lock().await;
        let head = self.outbox.durable_head(self.store.as_ref(), company)?;
        let mut floor = head.saturating_sub(1);
        for (key, value) in self.store.index_scan("", IndexKind::Webhooks)? {
            let Ok(reg) = serde_json::from_slice::<Registration>(&value) else {
                continue;
            };
            if reg.company == company {
                floor = floor.min(self.position(&key)?);
            }
        }
        let mut deleted = 0;
        let company: Arc<str> = Arc::from(company);
        loop {
            // A page is a store scan and a batch of deletions: blocking work, kept off the
            // async workers, which serve the connections (at 10,000 events/s a pass deletes
            // ~300,000 records).
            let store = self.store.clone();
            let c = company.clone();
            let page = tokio::task::spawn_blocking(move || trim_page(store.as_ref(), c, floor))
                .await
                .map_err(|e| StoreError::Backend(format!("the outbox trim task failed: {e}")))??;
            deleted += page;
            if page < TRIM_PAGE {
                return Ok(deleted);
            }
        }
    }

    fn spawn(self: &Arc<Self>, reg: Registration) {
        let (cancel, cancel_rx) = watch::channel(false);
        let key = reg.key();
        let task = tokio::spawn(self.clone().deliver_loop(reg, cancel_rx));
        let old = self.tasks.lock().insert(key, (cancel, task));
        if let Some((c, t)) = old {
            let _ = c.send(true);
            t.abort();
        }
    }

    /// Registers a webhook for `company`; deliveries start with the next committed event.
    pub async fn register(
        self: &Arc<Self>,
        company: &str,
        url: String,
        kinds: Vec<String>,
        secret: String,
    ) -> Result<Result<String, Invalid>, StoreError> {
        if let Err(e) = check_url(&url) {
            return Ok(Err(e));
        }
        let mut kinds = kinds;
        if kinds.len() > EVENT_KINDS.len() {
            return Ok(Err(invalid(
                "kinds",
                format!("at most {} kinds", EVENT_KINDS.len()),
            )));
        }
        if let Some(k) = kinds.iter().find(|k| !EVENT_KINDS.contains(&k.as_str())) {
            return Ok(Err(invalid(
                "kinds",
                format!("{k:?} is not an event kind (for example \"tag_added\")"),
            )));
        }
        kinds.sort();
        kinds.dedup();
        if secret.len() < MIN_SECRET || secret.len() > MAX_SECRET {
            return Ok(Err(invalid(
                "secret",
                format!("the secret must be {MIN_SECRET} to {MAX_SECRET} bytes long"),
            )));
        }
        let existing = self.list(company)?.len();
        if existing >= self.config.max_per_company {
            return Ok(Err(invalid(
                "url",
                format!(
                    "the company already has the maximum of {} webhooks; delete one first",
                    self.config.max_per_company
                ),
            )));
        }
        let reg = Registration {
            company: company.to_owned(),
            id: format!("{:016x}", rand::random::<u64>()),
            url,
            kinds,
            secret,
        };
        let _admin = self.admin.lock().await;
        // Arm the company, then let the writer finish whatever batch it was staging: a batch
        // staged before the arming has no outbox records, and must be durable (so before
        // `start`) by the time this registration answers. Every later batch has them.
        self.outbox.arm(company);
        // Cloned out of the lock: it is not held across the wait.
        let writer = self.writer.lock().clone().ok_or_else(|| {
            StoreError::Backend("the server is stopping: webhooks have no writer".into())
        })?;
        writer.barrier().await.map_err(StoreError::Backend)?;
        let start = self.outbox.durable_head(self.store.as_ref(), company)?;
        let value = serde_json::to_vec(&reg).map_err(|e| StoreError::Backend(e.to_string()))?;
        let batch = AppendBatch {
            index: vec![
                IndexWrite {
                    company: Arc::from(""),
                    kind: IndexKind::Webhooks,
                    key: reg.key(),
                    value: Some(value),
                },
                IndexWrite {
                    company: Arc::from(""),
                    kind: IndexKind::WebhookPositions,
                    key: reg.key(),
                    value: Some(start.to_be_bytes().to_vec()),
                },
            ],
            ..AppendBatch::default()
        };
        self.store.append(&batch)?;
        self.store.flush().await?;
        let id = reg.id.clone();
        tracing::info!(company, webhook = %id, url = %reg.url, start, "webhook registered");
        self.spawn(reg);
        Ok(Ok(id))
    }

    /// The company's webhooks.
    pub fn list(&self, company: &str) -> StoreResult<Vec<WebhookInfo>> {
        let mut out = Vec::new();
        for (_, value) in self.store.index_scan("", IndexKind::Webhooks)? {
            let Ok(reg) = serde_json::from_slice::<Registration>(&value) else {
                continue;
            };
            if reg.company != company {
                continue;
            }
            let position = self.position(&reg.key())?;
            out.push(WebhookInfo {
                webhook_id: reg.id,
                url: reg.url,
                kinds: reg.kinds,
                position,
            });
        }
        Ok(out)
    }

    /// Deletes a webhook of `company`; `false` if it has none with that id.
    pub async fn delete(&self, company: &str, id: &str) -> StoreResult<bool> {
        let key = reg_key(company, id);
        if self
            .store
            .index_get("", IndexKind::Webhooks, &key)?
            .is_none()
        {
            return Ok(false);
        }
        let task = self.tasks.lock().remove(&key);
        if let Some((cancel, task)) = task {
            let _ = cancel.send(true);
            let _ = task.await;
        }
        let batch = AppendBatch {
            index: [IndexKind::Webhooks, IndexKind::WebhookPositions]
                .into_iter()
                .map(|kind| IndexWrite {
                    company: Arc::from(""),
                    kind,
                    key: key.clone(),
                    value: None,
                })
                .collect(),
            ..AppendBatch::default()
        };
        self.store.append(&batch)?;
        self.store.flush().await?;
        Ok(true)
    }

    /// Releases the writer handle, stops every delivery task (an attempt in flight is abandoned
    /// and re-sent after a restart) and flushes the positions.
    pub async fn shutdown(&self) {
        // Without this handle the writer could not stop: shutdown would wait out its grace
        // period for the writer on every stop.
        drop(self.writer.lock().take());
        let mut tasks: Vec<_> = self.tasks.lock().drain().map(|(_, t)| t).collect();
        tasks.extend(self.trimmer.lock().take());
        for (cancel, _) in &tasks {
            let _ = cancel.send(true);
        }
        for (_, task) in tasks {
            let _ = task.await;
        }
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "webhook positions not flushed");
        }
    }

    fn position(&self, key: &str) -> StoreResult<u64> {
        Ok(self
            .store
            .index_get("", IndexKind::WebhookPositions, key)?
            .and_then(|v| v.as_slice().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    fn save_position(&self, key: &str, oseq: u64) -> StoreResult<()> {
        self.store.append(&AppendBatch {
            index: vec![IndexWrite {
                company: Arc::from(""),
                kind: IndexKind::WebhookPositions,
                key: key.to_owned(),
                value: Some(oseq.to_be_bytes().to_vec()),
            }],
            ..AppendBatch::default()
        })
    }

    /// One webhook's delivery loop: runs until cancelled.
    async fn deliver_loop(self: Arc<Self>, reg: Registration, mut cancel: watch::Receiver<bool>) {
        let key = reg.key();
        let mut signal = self.outbox.signal.subscribe();
        let secret = reg.secret.as_bytes().to_vec();
        let mut error_backoff = self.config.backoff_min;
        loop {
            if *cancel.borrow() {
                return;
            }
            match self.deliver_page(&reg, &key, &secret, &mut cancel).await {
                Ok(Some(_)) => {
                    error_backoff = self.config.backoff_min;
                    continue; // there may be more
                }
                Ok(None) => {
                    error_backoff = self.config.backoff_min;
                    // Caught up: wait for a commit, a poll tick or cancellation.
                    tokio::select! {
                        _ = signal.changed() => {}
                        _ = tokio::time::sleep(self.config.poll_interval) => {}
                        _ = cancel.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::error!(webhook = %key, error = %e, "webhook outbox not read; retrying");
                    if !self.pause(&mut cancel, error_backoff).await {
                        return;
                    }
                    error_backoff = (error_backoff * 2).min(self.config.backoff_max);
                }
            }
        }
    }

    /// Sleeps `d` unless cancelled first; `false` if cancelled.
    async fn pause(&self, cancel: &mut watch::Receiver<bool>, d: Duration) -> bool {
        let cancelled = tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = cancel.wait_for(|c| *c) => true,
        };
        !cancelled && !*cancel.borrow()
    }

    /// Delivers one page of the outbox after the stored position. `Ok(None)`: nothing new;
    /// `Ok(Some(pos))`: moved to `pos`. Returns early (position saved) when cancelled.
    async fn deliver_page(
        &self,
        reg: &Registration,
        key: &str,
        secret: &[u8],
        cancel: &mut watch::Receiver<bool>,
    ) -> StoreResult<Option<u64>> {
        let start = self.position(key)?;
        let limit = self
            .outbox
            .durable_head(self.store.as_ref(), &reg.company)?;
        if limit <= start {
            return Ok(None);
        }
        let page = self.store.index_after(
            &reg.company,
            IndexKind::Outbox,
            Some(&outbox_key(start)),
            PAGE,
        )?;
        let mut pos = start;
        for (k, v) in page {
            let oseq: u64 = k.parse().map_err(|_| StoreError::Corrupt {
                key: format!("outbox {}/{k}", reg.company),
                why: "not an outbox sequence".into(),
            })?;
            if oseq > limit {
                break;
            }
            let env = self.load(&reg.company, &k, &v)?;
            if let Some(env) = env
                .filter(|e| reg.kinds.is_empty() || reg.kinds.iter().any(|k| k == e.event.kind()))
            {
                let body = Bytes::from(
                    serde_json::to_vec(&env).map_err(|e| StoreError::Backend(e.to_string()))?,
                );
                let delivery = format!("{}:{oseq}", reg.company);
                if !self.deliver(reg, &delivery, secret, body, cancel).await {
                    break; // cancelled: keep what was delivered
                }
            }
            pos = oseq;
            // Saved after each delivery, flushed per page: a crash re-sends at most one page.
            self.save_position(key, pos)?;
        }
        self.store.flush().await?;
        Ok((pos > start).then_some(pos))
    }

    /// The envelope an outbox record points at; `None` (logged) if the record is unreadable or
    /// the event is missing, which only a damaged store can cause.
    fn load(&self, company: &str, key: &str, value: &[u8]) -> StoreResult<Option<Envelope>> {
        let rec: OutboxRecord = match rmp_serde::from_slice(value) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(company, oseq = key, error = %e, "skipping a malformed outbox record");
                return Ok(None);
            }
        };
        let Ok(stream) = StreamName::parse(&rec.stream) else {
            tracing::error!(company, oseq = key, stream = %rec.stream, "skipping an outbox record with a bad stream");
            return Ok(None);
        };
        let id = StreamId::new(Arc::from(company), stream);
        let env = self.store.read(&id, rec.seq, 1)?.into_iter().next();
        match env {
            Some(e) if e.seq == rec.seq => Ok(Some(e)),
            _ => {
                tracing::error!(company, oseq = key, stream = %id, seq = rec.seq, "skipping an outbox record whose event is missing");
                Ok(None)
            }
        }
    }

    /// POSTs one delivery until the endpoint answers 2xx, with backoff. `false` if cancelled.
    async fn deliver(
        &self,
        reg: &Registration,
        delivery: &str,
        secret: &[u8],
        body: Bytes,
        cancel: &mut watch::Receiver<bool>,
    ) -> bool {
        let signature = sign(secret, &body);
        let mut backoff = self.config.backoff_min;
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let req = Request::post(reg.url.as_str())
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-copanel-signature", signature.as_str())
                .header("x-copanel-delivery", delivery)
                .header("x-copanel-webhook", reg.id.as_str())
                .body(Full::new(body.clone()));
            let failure = match req {
                Err(e) => format!("request not built: {e}"),
                Ok(req) => {
                    let sent = tokio::select! {
                        r = tokio::time::timeout(self.config.request_timeout, self.client.request(req)) => r,
                        _ = cancel.wait_for(|c| *c) => return false,
                    };
                    match sent {
                        Ok(Ok(resp)) if resp.status().is_success() => return true,
                        Ok(Ok(resp)) => format!("answered {}", resp.status()),
                        Ok(Err(e)) => format!("request failed: {e}"),
                        Err(_) => format!("no answer within {:?}", self.config.request_timeout),
                    }
                }
            };
            tracing::warn!(webhook = %reg.id, url = %reg.url, delivery, attempt, retry_in = ?backoff, "webhook delivery failed: {failure}");
            if !self.pause(cancel, backoff).await {
                return false;
            }
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP routes.
// ---------------------------------------------------------------------------------------------

/// `POST/GET /api/v1/webhooks`, `DELETE /api/v1/webhooks/{id}`.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/webhooks", get(list_route).post(register_route))
        .route("/api/v1/webhooks/{id}", delete(delete_route))
}

fn error(status: StatusCode, code: &str, field: Option<&str>, message: String) -> Response {
    (
        status,
        Json(serde_json::json!({ "code": code, "field": field, "message": message })),
    )
        .into_response()
}

fn store_error(e: StoreError) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        None,
        format!("the store failed ({e}); retry"),
    )
}

/// The caller's company, if its bearer token is a valid service or admin token within its
/// request budget: the HTTP API's own check ([`crate::server::api_caller`]).
fn authorize(app: &App, headers: &HeaderMap) -> Result<String, Box<Response>> {
    crate::server::api_caller(app, headers).map(|claims| claims.company)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    url: String,
    #[serde(default)]
    kinds: Vec<String>,
    secret: String,
}

async fn register_route(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let company = match authorize(&app, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let body: RegisterBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                Some("body"),
                format!("expected JSON {{\"url\", \"kinds\", \"secret\"}}: {e}"),
            )
        }
    };
    match app
        .webhooks
        .register(&company, body.url, body.kinds, body.secret)
        .await
    {
        Ok(Ok(id)) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "webhook_id": id })),
        )
            .into_response(),
        Ok(Err(inv)) => error(
            StatusCode::BAD_REQUEST,
            "invalid",
            Some(inv.field),
            inv.message,
        ),
        Err(e) => store_error(e),
    }
}

async fn list_route(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let company = match authorize(&app, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match app.webhooks.list(&company) {
        Ok(list) => Json(serde_json::json!({ "webhooks": list })).into_response(),
        Err(e) => store_error(e),
    }
}

async fn delete_route(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let company = match authorize(&app, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match app.webhooks.delete(&company, &id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            Some("id"),
            format!("the company has no webhook {id:?}"),
        ),
        Err(e) => store_error(e),
    }
}
