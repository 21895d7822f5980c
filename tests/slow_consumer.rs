//! Backpressure: a subscriber that stops reading neither slows the others nor holds server
//! memory; its subscription falls back to catching up from the log, and once it reads again it
//! gets every event exactly once, in order, and rejoins the live feed.

mod support;

use copanel_protocol::{Encoding, Role, ServerFrame};
use serde_json::json;
use std::time::{Duration, Instant};
use support::*;

const S: &str = "session/slow";
const EVENTS: u64 = 500;
/// Each event carries a parameter value this long: 500 of them (~7.5 MB) are far more than
/// the stalled client's socket buffers hold, so the server really cannot deliver them.
const VALUE_CHARS: usize = 15_000;

/// The idle timeout of these servers: a stalled client answers no pings either, and must not be
/// closed as idle (20 s by default) before it reads again, however slow the machine.
const IDLE: Duration = Duration::from_secs(300);

/// How long the fast subscribers may take for all the events, from the first command sent:
/// generous for a debug build on a loaded machine (1.6 s idle), and far below [`IDLE`], the
/// only timeout that would end the stalled subscriber and so free a server that waited for it.
const FAST_ENOUGH: Duration = Duration::from_secs(60);

/// Polls `/healthz` until `subscriptions` equals `want` (within [`WAIT`]).
async fn wait_subscriptions(server: &TestServer, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let h = server.healthz().await;
        if h["subscriptions"].as_u64() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "subscriptions never became {want}: {h}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_falls_back_to_the_log_and_rejoins_live() {
    let server = TestServer::start_with(|c| {
        c.edge.outbound_queue = 8;
        c.edge.command_burst = 1000.0;
        c.edge.commands_per_sec = 10_000.0;
        c.edge.idle_timeout = IDLE;
        c.limits.parameter_value_chars = VALUE_CHARS;
    })
    .await;
    opened(&server, "slow", "op1").await;
    let fallbacks_before = server.healthz().await["slow_consumer_fallbacks"]
        .as_u64()
        .unwrap();
    // Given: a slow subscriber (tiny receive buffer) and two fast ones, one per encoding.
    let token = server.token("sup1", Role::Supervisor);
    let mut slow = Client::connect_small_buffer(&server.url(), &token, Encoding::Json, 4096).await;
    assert_eq!(slow.subscribe_snapshot(S).await.0, 1);
    let mut fast = Vec::new();
    for enc in [Encoding::Json, Encoding::Msgpack] {
        let mut c = server.connect(&token, enc).await;
        assert_eq!(c.subscribe_snapshot(S).await.0, 1);
        fast.push(c);
    }
    wait_subscriptions(&server, 3).await;
    let readers: Vec<_> = fast
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let events = c.recv_events(EVENTS as usize).await;
                (c, events, Instant::now())
            })
        })
        .collect();

    // When: the slow client stops reading while a writer appends 500 big events.
    let started = Instant::now();
    let mut w = server.client("op1", Role::Operator).await;
    let value = "v".repeat(VALUE_CHARS);
    let mut ids = Vec::new();
    for i in 0..EVENTS {
        let v = format!("{i}{value}");
        let cmd = json!({"kind": "set_parameter", "key": format!("k{}", i % 50), "value": &v[..VALUE_CHARS]});
        ids.push(w.send_command(S, &format!("w{i}"), cmd).await);
    }
    for id in ids {
        assert!(matches!(w.recv().await, ServerFrame::Ack { id: Some(got), .. } if got == id));
    }
    // Then: the fast subscribers get all of them, in order, promptly: not held back until the
    // stalled one is gone.
    let mut fast = Vec::new();
    for r in readers {
        let (c, events, done) = r.await.unwrap();
        assert_eq!(seqs(&events), (2..=EVENTS + 1).collect::<Vec<_>>());
        let took = done - started;
        assert!(took < FAST_ENOUGH, "fast subscriber took {took:?}");
        fast.push(c);
    }
    // Then: the stalled subscription was dropped from the live set (only the two fast ones are
    // live) and counted as a fallback.
    wait_subscriptions(&server, 2).await;
    let h = server.healthz().await;
    assert!(
        h["slow_consumer_fallbacks"].as_u64().unwrap() > fallbacks_before,
        "a fallback was counted: {h}"
    );

    // When: the slow client reads again.
    let events = slow.recv_events(EVENTS as usize).await;
    // Then: every event 2..=501 exactly once, in order, identical to what the others got.
    assert_eq!(seqs(&events), (2..=EVENTS + 1).collect::<Vec<_>>());
    let log = slow.full_history(S).await;
    assert_eq!(&log[1..], &events[..]);
    // Then: it is live again and receives new events like everyone else.
    wait_subscriptions(&server, 3).await;
    ack_seq(
        &w.command(S, "after", json!({"kind": "add_tag", "tag": "after"}))
            .await,
    );
    assert_eq!(slow.recv_event().await.seq, EVENTS + 2);
    for c in &mut fast {
        assert_eq!(c.recv_event().await.seq, EVENTS + 2);
    }
    slow.assert_quiet().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_subscriber_that_loses_access_gets_nothing_after_it() {
    let server = TestServer::start_with(|c| {
        c.edge.outbound_queue = 8;
        c.edge.command_burst = 1000.0;
        c.edge.commands_per_sec = 10_000.0;
        c.edge.idle_timeout = IDLE;
        c.limits.parameter_value_chars = VALUE_CHARS;
    })
    .await;
    opened(&server, "slow", "op1").await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let invite = json!({"kind": "invite_collaborator", "operator_id": "op2"});
    ack_seq(&op1.command(S, "inv", invite).await);
    let op2_token = server.token("op2", Role::Operator);
    let mut op2 = server.connect(&op2_token, Encoding::Json).await;
    ack_seq(
        &op2.command(S, "acc", json!({"kind": "accept_invitation"}))
            .await,
    );
    // Given: joined op2 subscribed on a connection it stops reading.
    let mut slow =
        Client::connect_small_buffer(&server.url(), &op2_token, Encoding::Json, 4096).await;
    assert_eq!(slow.subscribe_snapshot(S).await.0, 3);
    // When: 300 big events make it fall behind, then op2 is removed and more is written.
    let value = "v".repeat(VALUE_CHARS);
    let mut ids = Vec::new();
    for i in 0..300 {
        let cmd = json!({"kind": "set_parameter", "key": format!("k{}", i % 50), "value": value});
        ids.push(op1.send_command(S, &format!("w{i}"), cmd).await);
    }
    for id in ids {
        assert!(matches!(op1.recv().await, ServerFrame::Ack { id: Some(got), .. } if got == id));
    }
    let remove = json!({"kind": "remove_collaborator", "operator_id": "op2"});
    let removed_at = ack_seq(&op1.command(S, "rm", remove).await);
    assert_eq!(removed_at, 304);
    let secret = json!({"kind": "add_note", "text": "written after op2 was removed"});
    ack_seq(&op1.command(S, "secret", secret).await);
    // Then: when it reads again it gets events up to its removal and then `forbidden`; nothing
    // after the removal, whether it arrives live or from the catch-up.
    let mut last = 3;
    loop {
        match slow.recv().await {
            ServerFrame::Event(e) => {
                assert_eq!(e.seq, last + 1);
                assert!(e.seq <= removed_at, "delivered after losing access: {e:?}");
                last = e.seq;
            }
            ServerFrame::Error { code, stream, .. } => {
                assert_eq!(code.as_str(), "forbidden");
                assert_eq!(stream.map(|s| s.as_str().to_owned()).as_deref(), Some(S));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    slow.assert_quiet().await;
    server.stop().await;
}
