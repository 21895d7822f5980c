//! The patched sled (`vendor/sled/PATCHED.md`): a write batch's updates share the io buffer of
//! its manifest, which cannot go to disk until the batch ends. A page the batch updated, paged
//! out and read back during the same batch would wait on that buffer forever, so page-outs wait
//! for the batch to end. This drives sled itself into that corner: a cache so small that every
//! page access pages out the other pages of its LRU shard, batches that update several keys of
//! one leaf (sled walks from the root for each key, and the root pages out the leaves that share
//! its shard), a flush after every batch as copanel's writer does. Without the deferral the
//! first such batch hangs; with it every batch lands, and everything reads back after a reopen.
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

fn open(dir: &std::path::Path) -> sled::Db {
    sled::Config::new()
        .path(dir)
        // 256 KiB over sled's 256 LRU shards: 1 KiB a shard, less than any leaf here, so
        // each access pages out everything else in its shard.
        .cache_capacity(256 * 1024)
        .flush_every_ms(None)
        .open()
        .expect("open sled")
}

/// What each key was last written with, by the same schedule as `write_all`.
fn last_round(i: usize, rounds: usize) -> Option<usize> {
    (0..rounds).rev().find(|r| {
        let start = (r * 997) % KEYS;
        (0..RUN).any(|j| (start + j) % KEYS == i)
    })
}

#[test]
fn batches_under_cache_pressure_neither_hang_nor_lose_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_owned();
    let rounds = 150;
    let (done, finished) = mpsc::channel();
    // On a thread, so that a hang fails the test instead of stalling the suite.
    std::thread::spawn(move || {
        let db = open(&path);
        // Fill in batches of RUN, each flushed.
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(RUN) {
            let mut b = sled::Batch::default();
            for &i in chunk {
                b.insert(key(i), value(i, usize::MAX));
            }
            db.apply_batch(b).expect("fill batch");
            db.flush().expect("fill flush");
        }
        // Overwrite runs of consecutive keys across the whole key space.
        for r in 0..rounds {
            let start = (r * 997) % KEYS;
            let mut b = sled::Batch::default();
            for j in 0..RUN {
                let i = (start + j) % KEYS;
                b.insert(key(i), value(i, r));
            }
            db.apply_batch(b).expect("batch");
            db.flush().expect("flush");
        }
        drop(db);
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(300))
        .expect("the batches hung (or the writing thread panicked)");

    let db = open(dir.path());
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
