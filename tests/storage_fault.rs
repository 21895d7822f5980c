//! Storage faults (a full disk, an I/O error) in the writer's path: commands fail with
//! `unavailable`, nothing unflushed is acked or published, and the server recovers once the
//! store takes writes again (PRODUCT.md §2, guarantees 1, 2, 4 and 7).
//!
//! The fault is injected: [`FaultStore`] wraps the real sled store of an in-process server and,
//! while a switch is on, fails `append` (nothing reaches the store, as when sled cannot take the
//! write) or `flush` (the write is in the store but not durable, as when the disk fills between
//! the two). The writer, hub and edge under test are the real ones. A real full filesystem is
//! exercised by `tests/full_disk.rs` where mounting a tmpfs is permitted.

mod support;

use copanel::store::{
    AppendBatch, CommandOutcome, FlushFuture, IndexKind, Store, StoreError, StoreResult, StreamId,
};
use copanel_protocol::{Envelope, Role, ServerFrame, StreamState};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use support::{ack_seq, error_code, open_session, seqs, TestServer};

/// The real store, with switches that make writes fail like a full disk.
struct FaultStore {
    inner: Arc<dyn Store>,
    fail_append: Arc<AtomicBool>,
    fail_flush: Arc<AtomicBool>,
}

fn enospc() -> StoreError {
    StoreError::Backend("No space left on device (os error 28) [injected]".into())
}

impl Store for FaultStore {
    fn epoch(&self) -> &str {
        self.inner.epoch()
    }
    fn head(&self, id: &StreamId) -> StoreResult<u64> {
        self.inner.head(id)
    }
    fn read(&self, id: &StreamId, from: u64, limit: usize) -> StoreResult<Vec<Envelope>> {
        self.inner.read(id, from, limit)
    }
    fn outcome(&self, id: &StreamId, command_id: &str) -> StoreResult<Option<CommandOutcome>> {
        self.inner.outcome(id, command_id)
    }
    fn append(&self, batch: &AppendBatch) -> StoreResult<()> {
        if self.fail_append.load(Ordering::SeqCst) {
            return Err(enospc());
        }
        self.inner.append(batch)
    }
    fn flush(&self) -> FlushFuture {
        if self.fail_flush.load(Ordering::SeqCst) {
            return Box::pin(async { Err(enospc()) });
        }
        self.inner.flush()
    }
    fn streams(&self) -> StoreResult<Vec<(StreamId, u64)>> {
        self.inner.streams()
    }
    fn company_streams(&self, company: &str, prefix: &str) -> StoreResult<Vec<(StreamId, u64)>> {
        self.inner.company_streams(company, prefix)
    }
    fn index_scan(&self, company: &str, kind: IndexKind) -> StoreResult<Vec<(String, Vec<u8>)>> {
        self.inner.index_scan(company, kind)
    }
    fn index_get(&self, company: &str, kind: IndexKind, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.inner.index_get(company, kind, key)
    }
    fn redact(&self, id: &StreamId, upto: u64, f: &dyn Fn(&mut Envelope)) -> StoreResult<()> {
        self.inner.redact(id, upto, f)
    }
}

struct Switches {
    fail_append: Arc<AtomicBool>,
    fail_flush: Arc<AtomicBool>,
}

async fn start_faulty() -> (TestServer, Switches) {
    let sw = Switches {
        fail_append: Arc::new(AtomicBool::new(false)),
        fail_flush: Arc::new(AtomicBool::new(false)),
    };
    let (a, f) = (sw.fail_append.clone(), sw.fail_flush.clone());
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_wrapped(
        dir,
        |_| {},
        move |inner| {
            Arc::new(FaultStore {
                inner,
                fail_append: a,
                fail_flush: f,
            })
        },
    )
    .await;
    (server, sw)
}

fn note(text: &str) -> serde_json::Value {
    json!({"kind": "add_note", "text": text})
}

fn unavailable_message(f: &ServerFrame) -> String {
    assert_eq!(error_code(f), "unavailable", "{f:?}");
    match f {
        ServerFrame::Error { message, .. } => message.clone(),
        _ => unreachable!(),
    }
}

/// The live state a fresh subscriber gets equals a fold of the history, which is gapless and
/// holds each command id once.
async fn assert_replay_agrees(server: &TestServer, stream: &str, want_ids: &[&str]) -> u64 {
    let mut c = server.client("platform", Role::Service).await;
    let events = c.full_history(stream).await;
    let n = events.len() as u64;
    assert_eq!(seqs(&events), (1..=n).collect::<Vec<_>>(), "gapless");
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e.command_id.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(ids, want_ids, "each command applied once, in order");
    let (head, _, state) = c.subscribe_snapshot(stream).await;
    assert_eq!(head, n);
    let mut folded: StreamState = copanel::domain::initial(copanel_protocol::StreamKind::Session);
    for e in &events {
        copanel::domain::apply(&mut folded, e);
    }
    assert_eq!(state, folded, "live state = replay of the log");
    n
}

#[tokio::test]
async fn a_failed_append_is_unavailable_and_a_retry_applies_once() {
    let (server, sw) = start_faulty().await;
    let s = "session/f1";
    let mut svc = server.client("platform", Role::Service).await;
    assert_eq!(
        ack_seq(&svc.command(s, "open", open_session("op1")).await),
        1
    );
    let mut watcher = server.client("platform", Role::Service).await;
    let (head, _, _) = watcher.subscribe_snapshot(s).await;
    assert_eq!(head, 1);
    assert_eq!(server.healthz().await["status"], "ok");

    sw.fail_append.store(true, Ordering::SeqCst);
    let f = svc.command(s, "c1", note("one")).await;
    let msg = unavailable_message(&f);
    assert!(msg.contains("No space left"), "names the cause: {msg}");
    // A retry while the disk is still full: the same.
    assert_eq!(
        error_code(&svc.command(s, "c1", note("one")).await),
        "unavailable"
    );
    watcher.assert_quiet().await;
    let h = server.healthz().await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(
        h["store_error"]
            .as_str()
            .unwrap_or("")
            .contains("No space left"),
        "{h}"
    );
    assert!(h["store_failures"].as_u64().unwrap_or(0) >= 2, "{h}");

    sw.fail_append.store(false, Ordering::SeqCst);
    assert_eq!(ack_seq(&svc.command(s, "c1", note("one")).await), 2);
    assert_eq!(ack_seq(&svc.command(s, "c1", note("one")).await), 2, "once");
    assert_eq!(ack_seq(&svc.command(s, "c2", note("two")).await), 3);
    let got = watcher.recv_events(2).await;
    assert_eq!(
        seqs(&got),
        vec![2, 3],
        "the subscriber sees each event once"
    );
    watcher.assert_quiet().await;
    assert_eq!(server.healthz().await["status"], "ok");
    assert_replay_agrees(&server, s, &["open", "c1", "c2"]).await;
    server.stop().await;
}

#[tokio::test]
async fn a_failed_flush_acks_and_publishes_nothing_until_a_flush_succeeds() {
    let (server, sw) = start_faulty().await;
    let s = "session/f2";
    let mut svc = server.client("platform", Role::Service).await;
    assert_eq!(
        ack_seq(&svc.command(s, "open", open_session("op1")).await),
        1
    );
    let mut watcher = server.client("platform", Role::Service).await;
    watcher.subscribe_snapshot(s).await;

    // The disk fills between the append and the flush: the writes are in the store, not
    // durable. Neither is acked nor published.
    sw.fail_flush.store(true, Ordering::SeqCst);
    unavailable_message(&svc.command(s, "c1", note("one")).await);
    unavailable_message(&svc.command(s, "c2", note("two")).await);
    // A retry of c1 finds its stored outcome, but it is not durable: still unavailable.
    unavailable_message(&svc.command(s, "c1", note("one")).await);
    // A batch that writes nothing (a refused command) publishes nothing either.
    let f = svc.command_at(s, "c9", 0, note("stale")).await;
    assert_eq!(error_code(&f), "conflict", "{f:?}");
    watcher.assert_quiet().await;
    assert_eq!(server.healthz().await["status"], "degraded");
    // The log holds the unflushed events, but reads stop at the durable head.
    assert_eq!(seqs(&watcher.full_history(s).await), vec![1]);
    let f = watcher.state_at(s, 2).await;
    assert_eq!(
        error_code(&f),
        "invalid",
        "state_at past the durable head: {f:?}"
    );

    // Space is back. The retry gets the original seq; the subscriber gets both events, in
    // order, once; the next command follows them.
    sw.fail_flush.store(false, Ordering::SeqCst);
    assert_eq!(ack_seq(&svc.command(s, "c1", note("one")).await), 2);
    let got = watcher.recv_events(2).await;
    assert_eq!(seqs(&got), vec![2, 3]);
    assert_eq!(ack_seq(&svc.command(s, "c2", note("two")).await), 3, "once");
    assert_eq!(ack_seq(&svc.command(s, "c3", note("three")).await), 4);
    assert_eq!(seqs(&watcher.recv_events(1).await), vec![4]);
    watcher.assert_quiet().await;
    assert_eq!(server.healthz().await["status"], "ok");
    assert_replay_agrees(&server, s, &["open", "c1", "c2", "c3"]).await;

    // Durable: a restart has the same log.
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    assert_replay_agrees(&server, s, &["open", "c1", "c2", "c3"]).await;
    server.stop().await;
}

#[tokio::test]
async fn a_new_subscriber_during_a_failed_flush_sees_only_durable_events() {
    let (server, sw) = start_faulty().await;
    let s = "session/f3";
    let mut svc = server.client("platform", Role::Service).await;
    assert_eq!(
        ack_seq(&svc.command(s, "open", open_session("op1")).await),
        1
    );
    sw.fail_flush.store(true, Ordering::SeqCst);
    unavailable_message(&svc.command(s, "c1", note("one")).await);
    // Nobody had the stream loaded in the hub: a subscribe now must not install the
    // unflushed event as if it were committed.
    let mut late = server.client("op1", Role::Operator).await;
    let f = late.subscribe(s, None).await;
    match &f {
        ServerFrame::Error { code, .. } => assert_eq!(code.as_str(), "unavailable", "{f:?}"),
        ServerFrame::Subscribed { head, .. } => assert_eq!(*head, 1, "only the durable head"),
        other => panic!("unexpected {other:?}"),
    }
    sw.fail_flush.store(false, Ordering::SeqCst);
    assert_eq!(ack_seq(&svc.command(s, "c1", note("one")).await), 2);
    assert_replay_agrees(&server, s, &["open", "c1"]).await;
    server.stop().await;
}
