//! The patched sled (`vendor/sled/PATCHED.md`): a write batch's updates share the io buffer of
//! its manifest, which cannot go to disk until the batch ends. A page the batch updated, paged
//! out and read back during the same batch would wait on that buffer forever, so page-outs wait
//! for the batch to end. These tests drive sled itself into that corner: a cache so small that
//! a full LRU shard pages out its other pages (sled applies accesses to a shard in blocks of up
//! to 64), batches that update several keys of one leaf (sled walks from the root for each key,
//! and the root pages out the leaves that share its shard). The first flushes after every batch,
//! as copanel's writer does; the second flushes rarely (as compaction and import do) with sled's
//! periodic flusher on and a reader thread. Without the deferral the first hangs on the first
//! such batch; with it every batch lands, and everything reads back after a reopen.
use std::sync::mpsc;
use std::time::Duration;

/// Keys in the tree: a few hundred leaves, so several share the root's LRU shard.
const KEYS: usize = 6_000;
/// Consecutive keys per batch: each batch updates several keys of every leaf it touches.
const RUN: usize = 120;
const VALUE: usize = 1024;

fn key(i: usize) -> Vec<u8> {
    format!("key/{i:08}").into_bytes()
}

fn value(i: usize, round: usize) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; VALUE];
    v[..8].copy_from_slice(&(round as u64).to_be_bytes());
    v
}

fn open(dir: &std::path::Path, flush_every_ms: Option<u64>) -> sled::Db {
    let config = sled::Config::new()
        .path(dir)
        // 256 KiB over sled's 256 LRU shards: 1 KiB a shard, less than any leaf here, so a
        // shard never holds more than the page it last admitted.
        .cache_capacity(256 * 1024)
        .flush_every_ms(flush_every_ms);
    // The check's reopen comes right after the writing thread's drop: wait for the lock.
    copanel::store::sled_store::open_when_unlocked(&config).expect("open sled")
}

/// What each key was last written with, by the same schedule as `write_all`.
fn last_round(i: usize, rounds: usize) -> Option<usize> {
    (0..rounds).rev().find(|r| {
        let start = (r * 997) % KEYS;
        (0..RUN).any(|j| (start + j) % KEYS == i)
    })
}

/// Fills the tree, then overwrites `rounds` runs of consecutive keys, one batch each, flushing
/// after every `flush_every`-th batch; on a thread, so a hang fails instead of stalling the
/// suite. Then checks every key after a reopen.
fn batches_land(flush_every: usize, sled_flusher_ms: Option<u64>, reader: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_owned();
    let rounds = 150;
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let db = open(&path, sled_flusher_ms);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Reads of random keys between and around the batches (sled lets them run between
        // batches, not during one), paging leaves in and out.
        let reading = reader.then(|| {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i = (i * 7919 + 13) % KEYS;
                    let _ = db.get(key(i)).expect("concurrent read");
                }
            })
        });
        let mut batches = 0;
        let mut apply = |b: sled::Batch| {
            db.apply_batch(b).expect("batch");
            batches += 1;
            if batches % flush_every == 0 {
                db.flush().expect("flush");
            }
        };
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(RUN) {
            let mut b = sled::Batch::default();
            for &i in chunk {
                b.insert(key(i), value(i, usize::MAX));
            }
            apply(b);
        }
        for r in 0..rounds {
            let start = (r * 997) % KEYS;
            let mut b = sled::Batch::default();
            for j in 0..RUN {
                let i = (start + j) % KEYS;
                b.insert(key(i), value(i, r));
            }
            apply(b);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = reading {
            t.join().expect("reader");
        }
        db.flush().expect("last flush");
        drop(db);
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(300))
        .expect("the batches hung (or the writing thread panicked)");

    let db = open(dir.path(), None);
    assert_eq!(db.len(), KEYS, "every key is there after a reopen");
    for i in 0..KEYS {
        let want = value(i, last_round(i, rounds).unwrap_or(usize::MAX));
        let got = db.get(key(i)).expect("read").expect("present");
        assert!(
            got.as_ref() == want.as_slice(),
            "key {i} holds its last write"
        );
    }
}

#[test]
fn batches_under_cache_pressure_neither_hang_nor_lose_writes() {
    // copanel's writer: a flush after every batch, no reader.
    batches_land(1, None, false);
}

#[test]
fn unflushed_batches_with_sled_flusher_and_a_reader_neither_hang_nor_lose_writes() {
    // Compaction and import: many batches between flushes; sled's own flusher every 5 ms.
    batches_land(25, Some(5), true);
}
