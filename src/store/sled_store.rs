//! The embedded store: one sled tree, records told apart by a one-byte prefix.
//!
//! Keys (company ids and stream names never contain a NUL byte, command ids no control
//! character, so the separators are unambiguous and a stream's events sort by seq):
//! - `e` company `\0` stream `\0` seq (u64 big-endian) → the event envelope (MessagePack)
//! - `c` company `\0` stream `\0` command_id → the command's outcome (MessagePack)
//! - `m` name → store metadata (`epoch`)
//!
//! One tree and `apply_batch` make a whole batch atomic across streams without a transaction.

use super::{
    AppendBatch, CommandOutcome, FlushFuture, IndexKind, Store, StoreError, StoreResult, StreamId,
};
use copanel_protocol::{Envelope, StreamName};
use std::path::Path;
use std::sync::Arc;

const EVENT: u8 = b'e';
const OUTCOME: u8 = b'c';
const META: u8 = b'm';
const INDEX: u8 = b'x';

/// sled-backed [`Store`].
pub struct SledStore {
    /// sled handles are reference-counted; cloning one for `flush` is cheap.
    db: sled::Db,
    /// Read once at open; it never changes while the store is open.
    epoch: String,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn stream_prefix(kind: u8, company: &str, stream: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + company.len() + stream.len() + 8);
    k.push(kind);
    k.extend_from_slice(company.as_bytes());
    k.push(0);
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k
}

fn event_key(company: &str, stream: &str, seq: u64) -> Vec<u8> {
    let mut k = stream_prefix(EVENT, company, stream);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn outcome_key(id: &StreamId, command_id: &str) -> Vec<u8> {
    let mut k = stream_prefix(OUTCOME, &id.company, id.stream.as_str());
    k.extend_from_slice(command_id.as_bytes());
    k
}

fn index_prefix(company: &str, kind: IndexKind) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + company.len());
    k.push(INDEX);
    k.push(kind.tag());
    k.extend_from_slice(company.as_bytes());
    k.push(0);
    k
}

fn printable(key: &[u8]) -> String {
    String::from_utf8_lossy(key).replace('\0', "/")
}

fn seq_of(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. Fails with a message naming the directory when it
    /// cannot be opened: locked by another process, not writable, or not a sled store.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        let db = sled::Config::new()
            .path(dir)
            // Group commit flushes explicitly; this only bounds how much `relaxed` mode can lose.
            .flush_every_ms(Some(200))
            .cache_capacity(512 * 1024 * 1024)
            .open()
            .map_err(|e| {
                StoreError::Backend(format!(
                    "cannot open the data directory {}: {e}",
                    dir.display()
                ))
            })?;
        let epoch = match db.get([META].iter().chain(b"epoch").copied().collect::<Vec<u8>>()) {
            Ok(Some(v)) => String::from_utf8(v.to_vec()).map_err(|e| StoreError::Corrupt {
                key: "m/epoch".into(),
                why: e.to_string(),
            })?,
            Ok(None) => {
                let epoch = format!("{:016x}", rand::random::<u64>());
                let key: Vec<u8> = [META].iter().chain(b"epoch").copied().collect();
                db.insert(key, epoch.as_bytes()).map_err(backend)?;
                db.flush().map_err(backend)?;
                epoch
            }
            Err(e) => return Err(backend(e)),
        };
        Ok(SledStore { db, epoch })
    }
}

impl Store for SledStore {
    fn epoch(&self) -> &str {
        &self.epoch
    }

    fn head(&self, id: &StreamId) -> StoreResult<u64> {
        let prefix = stream_prefix(EVENT, &id.company, id.stream.as_str());
        match self.db.scan_prefix(&prefix).next_back() {
            None => Ok(0),
            Some(Ok((k, _))) => seq_of(&k).ok_or_else(|| StoreError::Corrupt {
                key: printable(&k),
                why: "event key without a seq".into(),
            }),
            Some(Err(e)) => Err(backend(e)),
        }
    }

    fn read(&self, id: &StreamId, from: u64, limit: usize) -> StoreResult<Vec<Envelope>> {
        let from = from.max(1);
        let start = event_key(&id.company, id.stream.as_str(), from);
        let end = stream_prefix(EVENT, &id.company, id.stream.as_str());
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in self.db.range(start..) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(&end) {
                break;
            }
            let env: Envelope = rmp_serde::from_slice(&v).map_err(|e| StoreError::Corrupt {
                key: printable(&k),
                why: e.to_string(),
            })?;
            out.push(env);
        }
        Ok(out)
    }

    fn outcome(&self, id: &StreamId, command_id: &str) -> StoreResult<Option<CommandOutcome>> {
        let key = outcome_key(id, command_id);
        match self.db.get(&key).map_err(backend)? {
            None => Ok(None),
            Some(v) => rmp_serde::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    key: printable(&key),
                    why: e.to_string(),
                }),
        }
    }

    fn append(&self, batch: &AppendBatch) -> StoreResult<()> {
        let mut b = sled::Batch::default();
        for (company, env) in &batch.events {
            let v = rmp_serde::to_vec_named(env.as_ref()).map_err(backend)?;
            b.insert(event_key(company, env.stream.as_str(), env.seq), v);
        }
        for (id, command_id, outcome) in &batch.outcomes {
            let v = rmp_serde::to_vec_named(outcome).map_err(backend)?;
            b.insert(outcome_key(id, command_id), v);
        }
        for w in &batch.index {
            let mut k = index_prefix(&w.company, w.kind);
            k.extend_from_slice(w.key.as_bytes());
            match &w.value {
                Some(v) => b.insert(k, v.as_slice()),
                None => b.remove(k),
            }
        }
        self.db.apply_batch(b).map_err(backend)
    }

    fn flush(&self) -> FlushFuture {
        let db = self.db.clone();
        Box::pin(async move { db.flush_async().await.map(|_| ()).map_err(backend) })
    }

    fn index_scan(&self, company: &str, kind: IndexKind) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let prefix = index_prefix(company, kind);
        let mut out = Vec::new();
        for item in self.db.scan_prefix(&prefix) {
            let (k, v) = item.map_err(backend)?;
            let key = k.get(prefix.len()..).unwrap_or_default();
            out.push((String::from_utf8_lossy(key).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    fn index_get(&self, company: &str, kind: IndexKind, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let mut k = index_prefix(company, kind);
        k.extend_from_slice(key.as_bytes());
        Ok(self.db.get(k).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn company_streams(&self, company: &str, prefix: &str) -> StoreResult<Vec<(StreamId, u64)>> {
        let mut start = vec![EVENT];
        start.extend_from_slice(company.as_bytes());
        start.push(0);
        start.extend_from_slice(prefix.as_bytes());
        self.scan_streams(&start)
    }

    fn streams(&self) -> StoreResult<Vec<(StreamId, u64)>> {
        self.scan_streams(&[EVENT])
    }
}

impl SledStore {
    /// Streams (with heads) whose event keys start with `prefix`. Jumps from one stream to the
    /// next instead of reading every event.
    fn scan_streams(&self, prefix: &[u8]) -> StoreResult<Vec<(StreamId, u64)>> {
        let mut out: Vec<(StreamId, u64)> = Vec::new();
        let mut from = prefix.to_vec();
        loop {
            let Some(item) = self.db.range(from.clone()..).next() else {
                break;
            };
            let (k, _) = item.map_err(backend)?;
            if !k.starts_with(prefix) {
                break;
            }
            let corrupt = || StoreError::Corrupt {
                key: printable(&k),
                why: "malformed event key".into(),
            };
            let body = k.get(1..k.len().saturating_sub(9)).ok_or_else(corrupt)?;
            let mut parts = body.splitn(2, |b| *b == 0);
            let company =
                std::str::from_utf8(parts.next().ok_or_else(corrupt)?).map_err(|_| corrupt())?;
            let stream =
                std::str::from_utf8(parts.next().ok_or_else(corrupt)?).map_err(|_| corrupt())?;
            let name = StreamName::parse(stream).map_err(|_| corrupt())?;
            let sprefix = stream_prefix(EVENT, company, stream);
            let head = match self.db.scan_prefix(&sprefix).next_back() {
                Some(Ok((last, _))) => seq_of(&last).ok_or_else(corrupt)?,
                Some(Err(e)) => return Err(backend(e)),
                None => 0,
            };
            out.push((StreamId::new(Arc::from(company), name), head));
            // The smallest key after every event of this stream.
            from = sprefix;
            from.extend_from_slice(&[0xff; 9]);
        }
        Ok(out)
    }
}
