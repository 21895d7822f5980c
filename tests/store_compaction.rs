//! The sled store's directory layout and its redaction by compaction (`Store::redact`): what
//! is rewritten and what is kept byte for byte, that old bytes leave the disk, that leftovers of
//! an interrupted compaction are deleted at open, that readers keep working meanwhile, clear
//! errors for a broken `CURRENT`, the move of a store from before `CURRENT`, and how long a
//! compaction of 10,000 events takes.

use copanel::store::{
    AppendBatch, CommandOutcome, IndexKind, IndexWrite, SledStore, Store, StreamId,
};
use copanel_protocol::{Actor, Envelope, Event, MessageFrom, Role, StreamName};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

const MARK: &str = "[gone]";

fn sid(stream: &str) -> StreamId {
    StreamId::new(Arc::from("acme"), StreamName::parse(stream).unwrap())
}

fn message(stream: &str, seq: u64, text: &str) -> Envelope {
    Envelope {
        stream: StreamName::parse(stream).unwrap(),
        seq,
        at: 1_700_000_000_000 + seq,
        actor: Actor {
            id: "op1".into(),
            role: Role::Operator,
        },
        command_id: Some(format!("cmd-{seq}")),
        event: Event::MessagePosted {
            from: MessageFrom::Client,
            text: text.into(),
            template_id: None,
        },
    }
}

/// Appends messages `texts` to `stream` (seqs from `first`), with an outcome per message.
fn append(store: &SledStore, stream: &str, first: u64, texts: &[&str]) {
    let mut batch = AppendBatch::default();
    for (i, t) in texts.iter().enumerate() {
        let seq = first + i as u64;
        batch
            .events
            .push((Arc::from("acme"), Arc::new(message(stream, seq, t))));
        batch.outcomes.push((
            sid(stream),
            format!("cmd-{seq}"),
            CommandOutcome {
                seq,
                created: None,
                actor: "op1".into(),
                fingerprint: seq,
            },
        ));
    }
    store.append(&batch).unwrap();
}

fn redact_text(env: &mut Envelope) {
    if let Event::MessagePosted { text, .. } = &mut env.event {
        *text = MARK.into();
    }
}

fn texts(store: &SledStore, stream: &str) -> Vec<String> {
    store
        .read(&sid(stream), 1, 100_000)
        .unwrap()
        .into_iter()
        .map(|e| match e.event {
            Event::MessagePosted { text, .. } => text,
            other => panic!("{other:?}"),
        })
        .collect()
}

/// Whether any file under `dir` contains `needle`.
fn on_disk(dir: &Path, needle: &str) -> bool {
    let needle = needle.as_bytes();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                return true;
            }
        }
    }
    false
}

fn log_dirs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("log-"))
        .collect();
    v.sort();
    v
}

fn flush(store: &SledStore) {
    futures::executor::block_on(store.flush()).unwrap();
}

#[test]
fn a_new_store_lives_in_log_000001_named_by_current() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.live_dir(), "log-000001");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("CURRENT")).unwrap(),
        "log-000001\n"
    );
    assert_eq!(log_dirs(dir.path()), vec!["log-000001"]);
    assert!(!dir.path().join("CURRENT.tmp").exists());
}

/// The reason for compaction: sled keeps an overwritten value's bytes in its files. If this
/// ever stops being true, `redact` could rewrite in place instead.
#[test]
fn sled_keeps_overwritten_bytes_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    db.insert(b"k", b"OVERWRITTEN-VALUE-8812".as_slice())
        .unwrap();
    db.flush().unwrap();
    db.insert(b"k", b"new".as_slice()).unwrap();
    db.flush().unwrap();
    drop(db);
    assert!(on_disk(dir.path(), "OVERWRITTEN-VALUE-8812"));
}

#[test]
fn redact_rewrites_one_stream_up_to_a_seq_and_keeps_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let epoch = store.epoch().to_owned();
    append(
        &store,
        "session/a",
        1,
        &["SECRET-A1-1029", "SECRET-A2-3847", "KEPT-A3-5561"],
    );
    append(&store, "session/b", 1, &["KEPT-B1-7720"]);
    store
        .append(&AppendBatch {
            index: vec![IndexWrite {
                company: Arc::from("acme"),
                kind: IndexKind::Roster,
                key: "op1".into(),
                value: Some(b"KEPT-INDEX-4410".to_vec()),
            }],
            ..AppendBatch::default()
        })
        .unwrap();
    flush(&store);
    let before_a = store.read(&sid("session/a"), 1, 10).unwrap();
    let before_b = store.read(&sid("session/b"), 1, 10).unwrap();
    assert!(on_disk(dir.path(), "SECRET-A1-1029"));

    store.redact(&sid("session/a"), 2, &redact_text).unwrap();

    assert_eq!(texts(&store, "session/a"), vec![MARK, MARK, "KEPT-A3-5561"]);
    let after_a = store.read(&sid("session/a"), 1, 10).unwrap();
    for (b, a) in before_a.iter().zip(&after_a).take(2) {
        let mut want = b.clone();
        redact_text(&mut want);
        assert_eq!(a, &want, "only the text changes");
    }
    assert_eq!(after_a[2], before_a[2]);
    assert_eq!(store.read(&sid("session/b"), 1, 10).unwrap(), before_b);
    assert_eq!(store.head(&sid("session/a")).unwrap(), 3);
    assert_eq!(store.epoch(), epoch);
    assert_eq!(
        store
            .outcome(&sid("session/a"), "cmd-2")
            .unwrap()
            .unwrap()
            .seq,
        2
    );
    assert_eq!(
        store.index_get("acme", IndexKind::Roster, "op1").unwrap(),
        Some(b"KEPT-INDEX-4410".to_vec())
    );
    assert_eq!(store.streams().unwrap().len(), 2);
    assert_eq!(store.live_dir(), "log-000002");
    assert_eq!(log_dirs(dir.path()), vec!["log-000002"]);

    // Appends after the switch land in the new generation.
    append(&store, "session/a", 4, &["KEPT-A4-9031"]);
    flush(&store);
    drop(store);
    for gone in ["SECRET-A1-1029", "SECRET-A2-3847"] {
        assert!(!on_disk(dir.path(), gone), "{gone} still on disk");
    }
    for kept in [
        "KEPT-A3-5561",
        "KEPT-B1-7720",
        "KEPT-INDEX-4410",
        "KEPT-A4-9031",
    ] {
        assert!(on_disk(dir.path(), kept), "{kept} lost");
    }

    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.epoch(), epoch);
    assert_eq!(
        texts(&store, "session/a"),
        vec![MARK, MARK, "KEPT-A3-5561", "KEPT-A4-9031"]
    );
    // A second redaction moves on to the next generation, and is idempotent.
    store.redact(&sid("session/a"), 2, &redact_text).unwrap();
    assert_eq!(store.live_dir(), "log-000003");
    assert_eq!(
        texts(&store, "session/a"),
        vec![MARK, MARK, "KEPT-A3-5561", "KEPT-A4-9031"]
    );
}

#[test]
fn leftovers_of_an_interrupted_compaction_are_deleted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        append(&store, "session/a", 1, &["KEPT-1"]);
        flush(&store);
    }
    // A half-made copy and a pointer that was never renamed into place.
    let stale = dir.path().join("log-000002");
    std::fs::create_dir_all(stale.join("blobs")).unwrap();
    std::fs::write(stale.join("db"), b"LEFTOVER-SECRET-6650").unwrap();
    std::fs::write(dir.path().join("CURRENT.tmp"), b"log-000002\n").unwrap();
    // Files that are not the store's are left alone.
    std::fs::write(dir.path().join("secret"), b"s").unwrap();

    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.live_dir(), "log-000001");
    assert_eq!(texts(&store, "session/a"), vec!["KEPT-1"]);
    assert_eq!(log_dirs(dir.path()), vec!["log-000001"]);
    assert!(!dir.path().join("CURRENT.tmp").exists());
    assert!(dir.path().join("secret").exists());
    assert!(!on_disk(dir.path(), "LEFTOVER-SECRET-6650"));
}

#[test]
fn a_broken_current_is_a_clear_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("CURRENT"), b"not a log\n").unwrap();
    let err = SledStore::open(dir.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("CURRENT"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    assert!(err.contains("not a log"), "{err}");

    std::fs::write(dir.path().join("CURRENT"), b"log-000007\n").unwrap();
    let err = SledStore::open(dir.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("log-000007"), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    // Nothing was created in its place.
    assert!(log_dirs(dir.path()).is_empty());
}

#[test]
fn a_store_from_before_current_is_moved_into_log_000001() {
    let old = tempfile::tempdir().unwrap();
    let epoch = {
        let store = SledStore::open(old.path()).unwrap();
        append(&store, "session/a", 1, &["LEGACY-1", "LEGACY-2"]);
        flush(&store);
        store.epoch().to_owned()
    };
    // The same sled files at the top of a data directory, as the store kept them before.
    let legacy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(old.path().join("log-000001")).unwrap() {
        let entry = entry.unwrap();
        std::fs::rename(entry.path(), legacy.path().join(entry.file_name())).unwrap();
    }
    assert!(legacy.path().join("db").exists());

    let store = SledStore::open(legacy.path()).unwrap();
    assert_eq!(store.epoch(), epoch);
    assert_eq!(texts(&store, "session/a"), vec!["LEGACY-1", "LEGACY-2"]);
    assert_eq!(store.live_dir(), "log-000001");
    assert!(!legacy.path().join("db").exists());
    assert!(legacy.path().join("log-000001").join("db").exists());
}

#[test]
fn readers_keep_working_during_a_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let texts_in: Vec<String> = (0..2000).map(|i| format!("message number {i}")).collect();
    let refs: Vec<&str> = texts_in.iter().map(String::as_str).collect();
    append(&store, "session/a", 1, &refs);
    flush(&store);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let page = store.read(&sid("session/a"), 1, 2000).expect("read");
                    assert_eq!(page.len(), 2000, "a read sees the whole stream");
                    assert_eq!(store.head(&sid("session/a")).expect("head"), 2000);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    store.redact(&sid("session/a"), 2000, &redact_text).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().expect("reader ok") > 0);
    }
    assert!(texts(&store, "session/a").iter().all(|t| t == MARK));
    assert_eq!(log_dirs(dir.path()), vec!["log-000002"]);
}

/// Reports how long a compaction of a 10,000-event store takes (one redacted stream of 100
/// events among 100 streams); bounded so that a pathological slowdown fails.
/// `COPANEL_COMPACTION_STREAMS` (default 100) scales the store for a measurement by hand.
#[test]
fn compaction_time_10k_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let text =
        "a typical customer message of about a hundred characters, with a question about an order";
    let streams: usize = std::env::var("COPANEL_COMPACTION_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    for s in 0..streams {
        let stream = format!("session/s{s}");
        let texts: Vec<&str> = vec![text; 100];
        append(&store, &stream, 1, &texts);
    }
    flush(&store);
    let started = Instant::now();
    store
        .redact(&sid("session/s42"), 100, &redact_text)
        .unwrap();
    let took = started.elapsed();
    eprintln!(
        "compaction of {} events (+as many outcomes) took {} ms",
        streams * 100,
        took.as_millis()
    );
    assert!(took.as_secs() < 60, "compaction took {took:?}");
    assert!(texts(&store, "session/s42").iter().all(|t| t == MARK));
    assert!(texts(&store, "session/s41").iter().all(|t| t == text));
}
