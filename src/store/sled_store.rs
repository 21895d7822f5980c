//! The embedded store: one sled tree, records told apart by a one-byte prefix.
//!
//! Keys (company ids and stream names never contain a NUL byte, command ids no control
//! character, so the separators are unambiguous and a stream's events sort by seq):
//! - `e` company `\0` stream `\0` seq (u64 big-endian) → the event envelope (MessagePack)
//! - `c` company `\0` stream `\0` command_id → the command's outcome (MessagePack)
//! - `x` kind company `\0` key → a derived record ([`IndexKind`])
//! - `s` company `\0` stream `\0` seq (u64 big-endian) → the stream's state after that event
//!   ([`crate::snapshot`]); deleted for a stream by [`Store::redact`]
//! - `m` name → store metadata (`epoch`)
//!
//! One tree and `apply_batch` make a whole batch atomic across streams without a transaction.
//!
//! # Directory layout and compaction
//! The data directory holds `secret` (see [`crate::auth`]), a pointer file `CURRENT` naming the
//! live sled directory, and that directory (`log-000001`, `log-000002`, …).
//!
//! sled is log-structured: overwriting or removing a value leaves the old bytes in its segment
//! files until sled happens to reuse the segment, and sled 0.34 offers no way to force that. So
//! [`Store::redact`], which must erase personal data *from disk*, cannot just overwrite the
//! events: it compacts. It copies every live record (events, with the redaction applied, command
//! outcomes, derived records, metadata including the epoch) into a fresh directory `log-<n+1>`,
//! flushes it, switches `CURRENT` atomically (write `CURRENT.tmp`, fsync, rename, fsync the
//! directory), swaps the live handle, waits for readers still using the old handle to finish,
//! drops it and deletes the old directory. Only the new directory's files ever see the redacted
//! values, so no old bytes survive.
//!
//! Cost: O(size of the store) per redaction, and appends wait meanwhile (the single writer is
//! the one that asks for it); readers go on against the old handle until the switch. It also
//! needs the store's size again in free disk space while both generations exist. Measured on
//! the 2-core development machine (release build, `tests/store_compaction.rs`,
//! `compaction_time_10k_events`): about 0.2 s for 10,000 events and as many outcomes, about
//! 2 s for 100,000, i.e. roughly 10 µs per record.
//!
//! Crash safety: `CURRENT` names a complete, flushed directory at every instant. A crash before
//! the rename leaves a `log-*` directory that `CURRENT` does not name (a half-made copy, or the
//! old directory after the switch): [`SledStore::open`] deletes it. Whoever asked for the
//! redaction must ask again after a crash (the writer keeps a durable marker for that).
//!
//! Never: write a record to the old handle after the copy has started, or name a directory in
//! `CURRENT` before it is flushed.

pub mod raw;

use super::{
    AppendBatch, CommandOutcome, FlushFuture, IndexKind, Store, StoreError, StoreResult, StreamId,
};
use copanel_protocol::{Envelope, StreamName};
use parking_lot::{Mutex, RwLock};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EVENT: u8 = b'e';
const OUTCOME: u8 = b'c';
const META: u8 = b'm';
const INDEX: u8 = b'x';
const SNAPSHOT: u8 = b's';

/// The pointer file naming the live sled directory.
const CURRENT: &str = "CURRENT";
/// Where `CURRENT` is written before it is renamed into place.
const CURRENT_TMP: &str = "CURRENT.tmp";
/// Live sled directories are `log-` followed by a zero-padded generation number.
const LOG_PREFIX: &str = "log-";
/// Records copied per `apply_batch` while compacting: large enough to amortise sled's batch
/// overhead, small enough to keep the batch's memory bounded.
const COPY_BATCH: usize = 4096;
/// How long a compaction waits for readers to let go of the old handle before it gives up
/// deleting the old directory (the next open deletes it).
const OLD_HANDLE_WAIT: Duration = Duration::from_secs(30);
/// Files sled keeps directly in its directory; found at the top of a data directory they mean
/// a store from before `CURRENT` existed, which [`SledStore::open`] moves into `log-000001`.
const LEGACY_SLED_FILES: [&str; 3] = ["conf", "db", "blobs"];

/// sled-backed [`Store`].
pub struct SledStore {
    /// The live sled handle. Every operation clones the `Arc` under a short read lock and works
    /// on the clone, so a compaction can swap in a new database (write lock, an instant) while
    /// readers finish on the old one; the `Arc` count tells the compaction when they have.
    /// `None` only while [`Store::recover`] reopens it (operations then fail as unavailable).
    db: RwLock<Option<Arc<sled::Db>>>,
    /// Appends hold it shared while they write; a compaction holds it exclusively from the start
    /// of its copy to the swap, so no append lands in a database that is being abandoned.
    gate: RwLock<()>,
    /// One compaction at a time (the writer is the only caller, but the trait is shared).
    compacting: Mutex<()>,
    /// The data directory (holds `CURRENT` and the `log-*` directories).
    dir: PathBuf,
    /// The name of the live sled directory, as `CURRENT` has it.
    live: Mutex<String>,
    /// Read once at open; it never changes while the store is open (compaction copies it).
    epoch: String,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A backend error that names the path it concerns.
fn at_path(what: &str, path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{what} {}: {e}", path.display()))
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

fn snapshot_key(id: &StreamId, seq: u64) -> Vec<u8> {
    let mut k = stream_prefix(SNAPSHOT, &id.company, id.stream.as_str());
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

fn epoch_key() -> Vec<u8> {
    [META].iter().chain(b"epoch").copied().collect()
}

fn printable(key: &[u8]) -> String {
    String::from_utf8_lossy(key).replace('\0', "/")
}

fn seq_of(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// `log-000042` → 42; anything else is not a log directory name.
fn generation(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(LOG_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn log_name(generation: u64) -> String {
    format!("{LOG_PREFIX}{generation:06}")
}

/// The sled settings of every generation.
fn open_sled(path: &Path) -> StoreResult<sled::Db> {
    let config = sled::Config::new()
        .path(path)
        // Group commit flushes explicitly; this bounds how long a write sits unflushed when
        // nothing else flushes it.
        .flush_every_ms(Some(200))
        .cache_capacity(512 * 1024 * 1024);
    match open_when_unlocked(&config) {
        Ok(db) => Ok(db),
        Err(e) if is_lock_held(&e) => Err(at_path(
            "cannot open the data directory",
            path,
            "it is locked by another process (is another copanel serving it?); stop that one first",
        )),
        Err(e @ (sled::Error::Corruption { .. } | sled::Error::Unsupported(_))) => Err(at_path(
            "cannot open the data directory",
            path,
            format!("its files are damaged or not a copanel store ({e}); restore a backup"),
        )),
        Err(e) => Err(at_path("cannot open the data directory", path, e)),
    }
}

/// Opens a sled database, waiting up to two seconds while its file lock is held. sled
/// releases that lock from a background thread after the last handle drops, so a reopen in
/// the same process right after a close can find it still held. A lock that another live
/// process holds is still an error, after the wait.
pub fn open_when_unlocked(config: &sled::Config) -> sled::Result<sled::Db> {
    let mut tries = 0;
    loop {
        match config.open() {
            Err(e) if tries < 40 && is_lock_held(&e) => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

fn is_lock_held(e: &sled::Error) -> bool {
    e.to_string().contains("could not acquire lock")
}

/// fsyncs a directory, so that a rename or removal in it is durable.
fn sync_dir(dir: &Path) -> StoreResult<()> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| at_path("cannot sync the directory", dir, e))
}

/// Points `CURRENT` at `name` atomically: a crash leaves either the old or the new pointer.
fn write_current(dir: &Path, name: &str) -> StoreResult<()> {
    let tmp = dir.join(CURRENT_TMP);
    let cur = dir.join(CURRENT);
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(name.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()
    };
    write().map_err(|e| at_path("cannot write", &tmp, e))?;
    fs::rename(&tmp, &cur).map_err(|e| at_path("cannot replace", &cur, e))?;
    sync_dir(dir)
}

/// Reads `CURRENT`: `None` if it does not exist.
fn read_current(dir: &Path) -> StoreResult<Option<String>> {
    let cur = dir.join(CURRENT);
    let text = match fs::read_to_string(&cur) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(at_path("cannot read", &cur, e)),
    };
    let name = text.trim();
    if generation(name).is_none() {
        return Err(StoreError::Corrupt {
            key: cur.display().to_string(),
            why: format!("expected a directory name like log-000001, found {name:?}"),
        });
    }
    Ok(Some(name.to_owned()))
}

/// Removes a directory tree if it exists.
fn remove_dir(path: &Path) -> StoreResult<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(at_path("cannot delete", path, e)),
    }
}

/// Decides which sled directory is live, creating or migrating as needed, and deletes what an
/// interrupted compaction left. Returns the live directory's name, and whether the store is
/// new (no `CURRENT` yet: the caller writes it once the new store's epoch is durable, so that a
/// `CURRENT` always names a store that has an epoch record).
fn prepare_dir(dir: &Path) -> StoreResult<(String, bool)> {
    fs::create_dir_all(dir).map_err(|e| at_path("cannot create the data directory", dir, e))?;
    let mut fresh = false;
    let live = match read_current(dir)? {
        Some(name) => {
            if !dir.join(&name).is_dir() {
                return Err(StoreError::Corrupt {
                    key: dir.join(CURRENT).display().to_string(),
                    why: format!("it names {name}, which does not exist in {}", dir.display()),
                });
            }
            name
        }
        None => {
            // No pointer yet: a new store, or one from before `CURRENT` (sled files at the top
            // level), possibly half moved by an interrupted migration. Nothing is deleted here:
            // a `log-000001` without `CURRENT` can only come from such a migration.
            let name = log_name(1);
            let target = dir.join(&name);
            let legacy = legacy_entries(dir)?;
            fs::create_dir_all(&target).map_err(|e| at_path("cannot create", &target, e))?;
            let moved = !legacy.is_empty();
            for entry in legacy {
                let to = target.join(entry.file_name().unwrap_or_default());
                fs::rename(&entry, &to).map_err(|e| at_path("cannot move", &entry, e))?;
            }
            sync_dir(&target)?;
            if moved {
                tracing::info!(dir = %dir.display(), "moved the store into {name}");
            }
            // `CURRENT` is written by `SledStore::open` once the epoch is durable.
            fresh = true;
            name
        }
    };
    // Anything else named like a log directory is an interrupted compaction's copy, or the old
    // generation it had switched away from: either way not live, and possibly holding data that
    // was meant to be erased.
    let entries = fs::read_dir(dir).map_err(|e| at_path("cannot list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| at_path("cannot list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if generation(&name).is_some() && name != live {
            tracing::warn!(dir = %dir.display(), stale = %name, "deleting an unfinished compaction");
            remove_dir(&entry.path())?;
        }
    }
    let tmp = dir.join(CURRENT_TMP);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(at_path("cannot delete", &tmp, e))
        }
        _ => {}
    }
    Ok((live, fresh))
}

/// Top-level sled files of a store from before `CURRENT`.
fn legacy_entries(dir: &Path) -> StoreResult<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| at_path("cannot list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| at_path("cannot list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if LEGACY_SLED_FILES.contains(&name.as_str()) || name.starts_with("snap.") {
            out.push(entry.path());
        }
    }
    Ok(out)
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. Fails with a message naming the path when it
    /// cannot be opened: locked by another process, not writable, `CURRENT` unreadable or naming
    /// a missing directory, or not a sled store.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        let (live, fresh) = prepare_dir(dir)?;
        let db = open_sled(&dir.join(&live))?;
        let epoch = match db.get(epoch_key()) {
            Ok(Some(v)) => String::from_utf8(v.to_vec()).map_err(|e| StoreError::Corrupt {
                key: "m/epoch".into(),
                why: e.to_string(),
            })?,
            Ok(None) if !fresh => {
                // `CURRENT` is written only after the epoch is flushed: an existing store
                // without one has lost its records (sled files overwritten or truncated; sled
                // reads a damaged log as empty). Refuse rather than start over on top of it.
                return Err(at_path(
                    "cannot open the data directory",
                    &dir.join(&live),
                    "its files are damaged: the store's epoch record is missing, so its log \
                     cannot be trusted; restore a backup (or move the directory away to start empty)",
                ));
            }
            Ok(None) => {
                let epoch = format!("{:016x}", rand::random::<u64>());
                db.insert(epoch_key(), epoch.as_bytes()).map_err(backend)?;
                db.flush().map_err(backend)?;
                epoch
            }
            Err(e) => return Err(at_path("cannot read the store in", &dir.join(&live), e)),
        };
        if fresh {
            // Also makes the new directory's entry durable before `CURRENT` names it.
            sync_dir(&dir.join(&live))?;
            write_current(dir, &live)?;
        }
        Ok(SledStore {
            db: RwLock::new(Some(Arc::new(db))),
            gate: RwLock::new(()),
            compacting: Mutex::new(()),
            dir: dir.to_path_buf(),
            live: Mutex::new(live),
            epoch,
        })
    }

    /// The live handle (a clone: the lock is held only for the copy).
    fn db(&self) -> StoreResult<Arc<sled::Db>> {
        self.db.read().clone().ok_or_else(|| {
            StoreError::Backend("the store is being reopened after a write error".into())
        })
    }

    /// The name of the live sled directory (`log-000001`, …), as `CURRENT` has it.
    pub fn live_dir(&self) -> String {
        self.live.lock().clone()
    }

    /// Copies every record of `old` into `new`, rewriting the events of `id` up to `upto` with
    /// `f`. Returns how many records were copied.
    fn copy_into(
        old: &sled::Db,
        new: &sled::Db,
        id: &StreamId,
        upto: u64,
        f: &dyn Fn(&mut Envelope),
    ) -> StoreResult<usize> {
        let events = stream_prefix(EVENT, &id.company, id.stream.as_str());
        // The stream's snapshots fold the unredacted events: not copied (loads replay instead).
        let snapshots = stream_prefix(SNAPSHOT, &id.company, id.stream.as_str());
        let mut copied = 0;
        for name in old.tree_names() {
            let from = old.open_tree(&name).map_err(backend)?;
            let to: sled::Tree = if name.as_ref() == b"__sled__default" {
                (**new).clone()
            } else {
                new.open_tree(&name).map_err(backend)?
            };
            let mut batch = sled::Batch::default();
            let mut in_batch = 0;
            for item in from.iter() {
                let (k, v) = item.map_err(backend)?;
                if k.starts_with(&snapshots) {
                    continue;
                }
                let redact = k.starts_with(&events) && seq_of(&k).is_some_and(|s| s <= upto);
                if redact {
                    let mut env: Envelope =
                        rmp_serde::from_slice(&v).map_err(|e| StoreError::Corrupt {
                            key: printable(&k),
                            why: e.to_string(),
                        })?;
                    f(&mut env);
                    let v = rmp_serde::to_vec_named(&env).map_err(backend)?;
                    batch.insert(k, v);
                } else {
                    batch.insert(k, v);
                }
                in_batch += 1;
                copied += 1;
                if in_batch == COPY_BATCH {
                    to.apply_batch(std::mem::take(&mut batch))
                        .map_err(backend)?;
                    in_batch = 0;
                }
            }
            to.apply_batch(batch).map_err(backend)?;
        }
        new.flush().map_err(backend)?;
        Ok(copied)
    }

    /// Waits (bounded) until nobody but us holds `old`, drops it, and deletes its directory.
    fn retire(&self, old: Arc<sled::Db>, path: &Path) -> StoreResult<()> {
        let deadline = Instant::now() + OLD_HANDLE_WAIT;
        while Arc::strong_count(&old) > 1 {
            if Instant::now() >= deadline {
                return Err(StoreError::Backend(format!(
                    "{} is still in use after {:?}; it will be deleted at the next start",
                    path.display(),
                    OLD_HANDLE_WAIT
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // The last handle: dropping it stops sled's flusher thread and closes its files.
        drop(old);
        remove_dir(path)?;
        sync_dir(&self.dir)
    }
}

impl Store for SledStore {
    fn epoch(&self) -> &str {
        &self.epoch
    }

    /// sled keeps returning the first I/O error of a handle (a full disk) for the life of that
    /// handle, even once space returns. If a flush still fails, the handle is dropped (once
    /// readers let go of it, bounded) and the live directory reopened: sled recovers what is on
    /// disk, which is every flushed batch and perhaps some appended ones. If the open fails, the
    /// store stays closed (every operation is `unavailable`) and the next call tries again.
    fn recover(&self) -> StoreResult<bool> {
        if let Ok(db) = self.db() {
            if db.flush().is_ok() {
                return Ok(false);
            }
        }
        let _one = self.compacting.lock();
        let _gate = self.gate.write();
        let old = self.db.write().take();
        if let Some(old) = old {
            let deadline = Instant::now() + OLD_HANDLE_WAIT;
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            // The last handle (or, past the deadline, ours): dropping it stops sled's flusher
            // and releases its lock, which `open_sled` waits for.
            drop(old);
        }
        let path = self.dir.join(self.live.lock().as_str());
        let db = open_sled(&path)?;
        tracing::warn!(dir = %path.display(), "reopened the store after a write error");
        *self.db.write() = Some(Arc::new(db));
        Ok(true)
    }

    fn head(&self, id: &StreamId) -> StoreResult<u64> {
        let prefix = stream_prefix(EVENT, &id.company, id.stream.as_str());
        match self.db()?.scan_prefix(&prefix).next_back() {
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
        for item in self.db()?.range(start..) {
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
        match self.db()?.get(&key).map_err(backend)? {
            None => Ok(None),
            Some(v) => rmp_serde::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    key: printable(&key),
                    why: e.to_string(),
                }),
        }
    }

    fn outcome_ids(&self, f: &mut dyn FnMut(&str, &str, &str)) -> StoreResult<()> {
        for item in self.db()?.scan_prefix([OUTCOME]) {
            let (k, _) = item.map_err(backend)?;
            // `c` company 0 stream 0 command_id (see `outcome_key`).
            let mut parts = k.get(1..).unwrap_or_default().splitn(3, |b| *b == 0);
            let (Some(company), Some(stream), Some(command_id)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(StoreError::Corrupt {
                    key: printable(&k),
                    why: "outcome key without company, stream and command id".into(),
                });
            };
            match (
                std::str::from_utf8(company),
                std::str::from_utf8(stream),
                std::str::from_utf8(command_id),
            ) {
                (Ok(company), Ok(stream), Ok(command_id)) => f(company, stream, command_id),
                _ => {
                    return Err(StoreError::Corrupt {
                        key: printable(&k),
                        why: "outcome key is not UTF-8".into(),
                    })
                }
            }
        }
        Ok(())
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
        for (id, seq, v) in &batch.snapshots {
            b.insert(snapshot_key(id, *seq), v.as_slice());
        }
        for w in &batch.index {
            let mut k = index_prefix(&w.company, w.kind);
            k.extend_from_slice(w.key.as_bytes());
            match &w.value {
                Some(v) => b.insert(k, v.as_slice()),
                None => b.remove(k),
            }
        }
        let _gate = self.gate.read();
        self.db()?.apply_batch(b).map_err(backend)
    }

    fn flush(&self) -> FlushFuture {
        let db = self.db();
        Box::pin(async move { db?.flush_async().await.map(|_| ()).map_err(backend) })
    }

    fn flush_blocking(&self) -> Option<StoreResult<()>> {
        // `flush_async` is this same call on sled's thread pool.
        Some(
            self.db()
                .and_then(|db| db.flush().map(|_| ()).map_err(backend)),
        )
    }

    fn snapshot(&self, id: &StreamId, at_most: u64) -> StoreResult<Option<(u64, Vec<u8>)>> {
        let start = stream_prefix(SNAPSHOT, &id.company, id.stream.as_str());
        let end = snapshot_key(id, at_most);
        match self.db()?.range(start..=end).next_back() {
            None => Ok(None),
            Some(Ok((k, v))) => {
                let seq = seq_of(&k).ok_or_else(|| StoreError::Corrupt {
                    key: printable(&k),
                    why: "snapshot key without a seq".into(),
                })?;
                Ok(Some((seq, v.to_vec())))
            }
            Some(Err(e)) => Err(backend(e)),
        }
    }

    fn index_scan(&self, company: &str, kind: IndexKind) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let prefix = index_prefix(company, kind);
        let mut out = Vec::new();
        for item in self.db()?.scan_prefix(&prefix) {
            let (k, v) = item.map_err(backend)?;
            let key = k.get(prefix.len()..).unwrap_or_default();
            out.push((String::from_utf8_lossy(key).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    fn index_get(&self, company: &str, kind: IndexKind, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let mut k = index_prefix(company, kind);
        k.extend_from_slice(key.as_bytes());
        Ok(self.db()?.get(k).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn index_after(
        &self,
        company: &str,
        kind: IndexKind,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let prefix = index_prefix(company, kind);
        let mut start = prefix.clone();
        if let Some(a) = after {
            start.extend_from_slice(a.as_bytes());
            start.push(0); // the first key after `a`
        }
        let mut out = Vec::new();
        for item in self.db()?.range(start..) {
            let (k, v) = item.map_err(backend)?;
            let Some(key) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            out.push((String::from_utf8_lossy(key).into_owned(), v.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn index_last(&self, company: &str, kind: IndexKind) -> StoreResult<Option<(String, Vec<u8>)>> {
        let prefix = index_prefix(company, kind);
        match self.db()?.scan_prefix(&prefix).next_back() {
            None => Ok(None),
            Some(item) => {
                let (k, v) = item.map_err(backend)?;
                let key = k.get(prefix.len()..).unwrap_or_default();
                Ok(Some((
                    String::from_utf8_lossy(key).into_owned(),
                    v.to_vec(),
                )))
            }
        }
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

    fn redact(&self, id: &StreamId, upto: u64, f: &dyn Fn(&mut Envelope)) -> StoreResult<()> {
        let _one = self.compacting.lock();
        let started = Instant::now();
        let old_name = self.live_dir();
        let next = generation(&old_name)
            .and_then(|g| g.checked_add(1))
            .ok_or_else(|| StoreError::Corrupt {
                key: self.dir.join(CURRENT).display().to_string(),
                why: format!("{old_name:?} is not a log directory name"),
            })?;
        let new_name = log_name(next);
        let new_path = self.dir.join(&new_name);
        let old_path = self.dir.join(&old_name);
        // A directory of that name can only be a failed earlier attempt.
        remove_dir(&new_path)?;
        let (old, copied) = {
            // No append may land in the old database from here to the swap.
            let _gate = self.gate.write();
            let old = self.db()?;
            let new = open_sled(&new_path)?;
            let copied = match Self::copy_into(&old, &new, id, upto, f) {
                Ok(n) => n,
                Err(e) => {
                    drop(new);
                    let _ = remove_dir(&new_path);
                    return Err(e);
                }
            };
            let switched = sync_dir(&new_path).and_then(|()| write_current(&self.dir, &new_name));
            if let Err(e) = switched {
                // `CURRENT` may or may not have been replaced; whichever it names is complete,
                // and that is the one to use from now on (a restart will).
                if read_current(&self.dir).ok().flatten().as_deref() != Some(new_name.as_str()) {
                    drop(new);
                    let _ = remove_dir(&new_path);
                    return Err(e);
                }
                tracing::warn!(error = %e, "CURRENT switched despite an error");
            }
            *self.db.write() = Some(Arc::new(new));
            *self.live.lock() = new_name.clone();
            (old, copied)
        };
        tracing::info!(
            stream = %id,
            upto,
            records = copied,
            ms = started.elapsed().as_millis() as u64,
            from = %old_name,
            to = %new_name,
            "store compacted after redaction"
        );
        self.retire(old, &old_path)
    }
}

impl SledStore {
    /// Streams (with heads) whose event keys start with `prefix`. Jumps from one stream to the
    /// next instead of reading every event.
    fn scan_streams(&self, prefix: &[u8]) -> StoreResult<Vec<(StreamId, u64)>> {
        let db = self.db()?;
        let mut out: Vec<(StreamId, u64)> = Vec::new();
        let mut from = prefix.to_vec();
        loop {
            let Some(item) = db.range(from.clone()..).next() else {
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
            let head = match db.scan_prefix(&sprefix).next_back() {
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
