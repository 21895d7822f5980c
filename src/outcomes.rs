//! Which command ids may already have a stored outcome: a Bloom filter over every outcome key
//! in the store, so that the writer reads the store for an outcome only when a command might
//! be a retry (issue 6).
//!
//! Every command is checked for a stored outcome before it is decided (idempotency). Almost
//! every command is new, and that read was ≈ 17 % of the writer's time under fan-out load: a
//! B-tree walk that finds nothing. The filter answers "certainly new" for nearly all of them
//! without touching the store; "maybe" (a real retry, or a false positive, 1 % by design) still
//! reads the store, so the answer a command gets never depends on the filter.
//!
//! The filter must never miss a stored key. It is built on a thread of its own from a scan of
//! the store's outcome keys, started with the writer; every outcome the writer stages from its
//! start is also recorded, and those staged while the scan runs are added once it is done. A
//! key in the store was either there before the writer started (the scan finds it) or was
//! staged by this writer (recorded). Until the filter is ready, and while it is rebuilt larger
//! (past its planned size its false-positive rate would climb), every command reads the store,
//! as before. A store that cannot list its outcome keys never gets a filter, nor one with more
//! ids than half the largest filter (32M ids; the filter costs ≈ 1.2 bytes per planned id).
//! The scan reads the keys twice (count, then insert), so its memory is the filter's.

use crate::store::{Store, StoreError, StoreResult, StreamId};
use fastbloom::BloomFilter;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tokio::sync::oneshot;

/// False-positive rate the filter is sized for.
const FALSE_POSITIVE_RATE: f64 = 0.01;
/// The filter's hashing seed: fixed, so that what it answers does not vary from run to run.
const SEED: u128 = 0x636f_7061_6e65_6c5f_6f75_7463_6f6d_6573;
/// Largest planned size, keys (≈ 77 MB of filter at 1 %): a store with more command ids than
/// half of it gets no filter, and every command reads the store, as before.
const MAX_CAPACITY: usize = 1 << 26;
/// Smallest planned size, keys: a small store's filter still has room for its first months.
const MIN_CAPACITY: usize = 1 << 20;

/// The writer's filter of command ids that may have a stored outcome.
pub struct KnownOutcomes {
    store: Arc<dyn Store>,
    state: State,
}

enum State {
    /// The scan runs; hashes of the outcomes staged meanwhile wait to be added.
    Building {
        staged: Vec<u64>,
        done: oneshot::Receiver<StoreResult<Filter>>,
    },
    Ready(Filter),
    /// The store cannot list its outcomes (or the scan failed): always read the store.
    Off,
}

struct Filter {
    bloom: BloomFilter,
    /// Keys it was sized for.
    capacity: usize,
    /// Keys in it.
    len: usize,
}

impl Filter {
    fn insert(&mut self, h: u64) {
        self.bloom.insert(&h);
        self.len += 1;
    }
}

/// The filter's key for a command id on a stream. Stable within a process, which is all an
/// in-memory filter needs.
pub fn key_hash(company: &str, stream: &str, command_id: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    company.hash(&mut h);
    stream.hash(&mut h);
    command_id.hash(&mut h);
    h.finish()
}

impl KnownOutcomes {
    /// Starts the scan of `store`'s outcome keys on a thread of its own.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let state = Self::build(&store, 0);
        KnownOutcomes { store, state }
    }

    fn build(store: &Arc<dyn Store>, at_least: usize) -> State {
        let (tx, done) = oneshot::channel();
        let scan_store = store.clone();
        let spawned = std::thread::Builder::new()
            .name("copanel-outcomes".into())
            .spawn(move || {
                let _ = tx.send(scan(scan_store.as_ref(), at_least, MAX_CAPACITY));
            });
        match spawned {
            Ok(_) => State::Building {
                staged: Vec::new(),
                done,
            },
            Err(e) => {
                tracing::warn!(error = %e, "outcome filter not built: every command reads the store");
                State::Off
            }
        }
    }

    /// Whether `command_id` may have a stored outcome on `id`; `false` only if it certainly
    /// has none.
    pub fn may_exist(&mut self, id: &StreamId, command_id: &str) -> bool {
        self.poll();
        match &self.state {
            State::Ready(f) => {
                f.bloom
                    .contains(&key_hash(&id.company, id.stream.as_str(), command_id))
            }
            State::Building { .. } | State::Off => true,
        }
    }

    /// Records an outcome staged by the writer (before it is appended: a failed append leaves
    /// a key that is not stored, which only costs a read).
    pub fn add(&mut self, id: &StreamId, command_id: &str) {
        let h = key_hash(&id.company, id.stream.as_str(), command_id);
        match &mut self.state {
            State::Building { staged, .. } => staged.push(h),
            State::Ready(f) => f.insert(h),
            State::Off => {}
        }
    }

    /// Between batches (every outcome added so far is appended, or its batch failed): past its
    /// planned size, rebuilds the filter larger from a new scan, which then finds them all.
    pub fn maintain(&mut self) {
        self.poll();
        if let State::Ready(f) = &self.state {
            if f.len > f.capacity {
                tracing::info!(keys = f.len, "outcome filter full; rebuilding it larger");
                self.state = Self::build(&self.store, f.len.saturating_mul(2));
            }
        }
    }

    /// Whether the filter answers (for tests and metrics).
    pub fn ready(&mut self) -> bool {
        self.poll();
        matches!(self.state, State::Ready(_))
    }

    /// Takes the scan's result once it is there.
    fn poll(&mut self) {
        let State::Building { staged, done } = &mut self.state else {
            return;
        };
        match done.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => {}
            Ok(Ok(mut f)) => {
                for h in staged.drain(..) {
                    f.insert(h);
                }
                tracing::debug!(
                    keys = f.len,
                    "outcome filter ready (with the ids staged meanwhile)"
                );
                self.state = State::Ready(f);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "outcome filter not built: every command reads the store");
                self.state = State::Off;
            }
            Err(oneshot::error::TryRecvError::Closed) => {
                tracing::warn!(
                    "outcome filter scan ended without a result: every command reads the store"
                );
                self.state = State::Off;
            }
        }
    }
}

/// Two passes over the store's outcome keys, so that memory stays at the filter's size: one
/// counts them (to size the filter), one inserts them. Ids stored between the passes are
/// inserted by the second; ids the writer stages meanwhile wait in [`State::Building`].
fn scan(store: &dyn Store, at_least: usize, max_capacity: usize) -> StoreResult<Filter> {
    let started = std::time::Instant::now();
    let mut count = 0usize;
    store.outcome_ids(&mut |_, _, _| count += 1)?;
    let capacity = count
        .saturating_mul(2)
        .max(at_least)
        .max(MIN_CAPACITY.min(max_capacity));
    if capacity > max_capacity {
        return Err(StoreError::Backend(format!(
            "{count} stored command ids are more than the filter is sized for ({max_capacity} \
             at most, ~{} MB)",
            max_capacity / (1024 * 1024) * 12 / 10
        )));
    }
    let mut f = Filter {
        bloom: BloomFilter::with_false_pos(FALSE_POSITIVE_RATE)
            .seed(&SEED)
            .expected_items(capacity),
        capacity,
        len: 0,
    };
    store.outcome_ids(&mut |company, stream, command_id| {
        f.insert(key_hash(company, stream, command_id));
    })?;
    tracing::info!(
        keys = f.len,
        capacity,
        ms = started.elapsed().as_millis() as u64,
        "outcome filter built"
    );
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;
    use crate::store::{AppendBatch, CommandOutcome};
    use copanel_protocol::StreamName;
    use std::time::{Duration, Instant};

    fn sid(stream: &str) -> StreamId {
        StreamId::new(Arc::from("acme"), StreamName::parse(stream).unwrap())
    }

    fn outcome() -> CommandOutcome {
        CommandOutcome {
            seq: 1,
            created: None,
            actor: "op1".into(),
            fingerprint: 0,
        }
    }

    fn wait_ready(k: &mut KnownOutcomes) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !k.ready() {
            assert!(Instant::now() < deadline, "the filter never got ready");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn stored_and_staged_ids_are_maybe_and_new_ones_are_almost_all_certainly_new() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let s = sid("session/s1");
        let stored: Vec<String> = (0..500).map(|i| format!("stored-{i}")).collect();
        let batch = AppendBatch {
            outcomes: stored
                .iter()
                .map(|id| (s.clone(), id.clone(), outcome()))
                .collect(),
            ..Default::default()
        };
        store.append(&batch).unwrap();

        let mut k = KnownOutcomes::start(store.clone());
        // Staged while the scan may still run: kept for when it is done.
        k.add(&s, "staged-early");
        wait_ready(&mut k);
        k.add(&s, "staged-late");
        for id in stored
            .iter()
            .map(String::as_str)
            .chain(["staged-early", "staged-late"])
        {
            assert!(k.may_exist(&s, id), "{id} must never be reported new");
        }
        // The same id on another stream is another key.
        let fresh = (0..1000)
            .filter(|i| k.may_exist(&sid("session/s2"), &format!("stored-{i}")))
            .count();
        assert!(fresh <= 30, "{fresh} false positives in 1000 at a 1% rate");
    }

    #[test]
    fn a_full_filter_is_rebuilt_larger_and_keeps_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let s = sid("session/s1");
        let mut k = KnownOutcomes::start(store.clone());
        wait_ready(&mut k);
        // Past the planned size: the writer appends each batch before the next `maintain`.
        let State::Ready(f) = &mut k.state else {
            unreachable!()
        };
        f.len = f.capacity;
        let batch = AppendBatch {
            outcomes: vec![(s.clone(), "over".into(), outcome())],
            ..Default::default()
        };
        k.add(&s, "over");
        store.append(&batch).unwrap();
        k.maintain();
        assert!(matches!(k.state, State::Building { .. }), "rebuild started");
        assert!(
            k.may_exist(&s, "anything"),
            "while rebuilding, every id reads the store"
        );
        k.add(&s, "during");
        wait_ready(&mut k);
        let State::Ready(f) = &k.state else {
            unreachable!()
        };
        assert!(
            f.capacity >= MIN_CAPACITY * 2,
            "rebuilt larger: {}",
            f.capacity
        );
        assert!(k.may_exist(&s, "over"));
        assert!(k.may_exist(&s, "during"));
    }

    #[test]
    fn a_store_with_more_ids_than_the_largest_filter_gets_none() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let s = sid("session/s1");
        let batch = AppendBatch {
            outcomes: (0..10)
                .map(|i| (s.clone(), format!("c{i}"), outcome()))
                .collect(),
            ..Default::default()
        };
        store.append(&batch).unwrap();
        let f = scan(store.as_ref(), 0, 100).unwrap();
        assert_eq!(
            (f.len, f.capacity),
            (10, 100),
            "small stores: the smallest size that fits"
        );
        let err = scan(store.as_ref(), 0, 15)
            .err()
            .expect("10 ids need 20 keys of room");
        assert!(err.to_string().contains("10 stored command ids"), "{err}");
    }
}
