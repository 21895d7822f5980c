//! Lifecycle: graceful shutdown closes every connection with 1001 and keeps every acked event;
//! a token that expires mid-connection ends it with `unauthorized` and close 4001; a silent
//! peer is dropped after the idle timeout; `/healthz` reports the server's state.

mod support;

use copanel::auth::now_secs;
use copanel_protocol::{Encoding, Role, ServerFrame};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::*;

const S: &str = "session/life";

fn close_code(c: &Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> u16 {
    u16::from(c.as_ref().expect("a close frame with a code").code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_with_1001_and_keeps_acked_events() {
    let server = TestServer::start().await;
    opened(&server, "life", "op1").await;
    // Given: subscribers in both encodings and a writer with commands in flight.
    let token = server.token("sup1", Role::Supervisor);
    let mut subs = Vec::new();
    for enc in [Encoding::Json, Encoding::Msgpack] {
        let mut c = server.connect(&token, enc).await;
        c.subscribe_snapshot(S).await;
        subs.push(c);
    }
    let mut w = server.client("op1", Role::Operator).await;
    let mut ids = BTreeMap::new();
    for i in 0..60 {
        let id = w
            .send_command(
                S,
                &format!("g{i}"),
                json!({"kind": "add_note", "text": format!("note {i}")}),
            )
            .await;
        ids.insert(id, format!("g{i}"));
    }
    // Wait for the first ack so that shutdown surely overlaps acknowledged work.
    let mut acked: Vec<(String, u64)> = Vec::new();
    match w.recv().await {
        ServerFrame::Ack {
            id: Some(id), seq, ..
        } => acked.push((ids[&id].clone(), seq)),
        other => panic!("{other:?}"),
    }
    // When: the server shuts down gracefully.
    let stopping = tokio::spawn(server.stop());
    // Then: every connection gets a Close frame with 1001 (after whatever was already sent).
    let (frames, close) = w.recv_close(WAIT).await;
    assert_eq!(close_code(&close), 1001);
    for f in frames {
        match f {
            ServerFrame::Ack {
                id: Some(id), seq, ..
            } => acked.push((ids[&id].clone(), seq)),
            ServerFrame::Error { code, .. } => assert_eq!(code.as_str(), "unavailable"),
            other => panic!("unexpected before close: {other:?}"),
        }
    }
    for c in &mut subs {
        let (frames, close) = c.recv_close(WAIT).await;
        assert_eq!(close_code(&close), 1001);
        assert!(frames.iter().all(|f| matches!(f, ServerFrame::Event(_))));
    }
    let dir = tokio::time::timeout(WAIT, stopping)
        .await
        .expect("shutdown finishes")
        .unwrap();
    // Then: after a restart, every acked command is in the log at its acked seq.
    let server = TestServer::start_in(dir, |_| {}).await;
    let mut r = server.client("sup1", Role::Supervisor).await;
    let log = r.full_history(S).await;
    assert!(!acked.is_empty());
    for (command_id, seq) in &acked {
        let e = &log[(*seq - 1) as usize];
        assert_eq!(
            e.command_id.as_deref(),
            Some(command_id.as_str()),
            "acked at {seq}"
        );
    }
    assert_eq!(
        seqs(&log),
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "gapless"
    );
    // Then: the restarted server goes on from the head.
    let mut w = server.client("op1", Role::Operator).await;
    let head = log.len() as u64;
    assert_eq!(
        ack_seq(
            &w.command(S, "after", json!({"kind": "add_tag", "tag": "t"}))
                .await
        ),
        head + 1
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_ends_the_connection_with_4001() {
    let server = TestServer::start().await;
    opened(&server, "life", "op1").await;
    // Given: a token valid for 2 more seconds, subscribed to the session.
    let token = server.mint(&copanel::auth::Claims {
        exp: now_secs() + 2,
        ..server.claims("op1", Role::Operator)
    });
    let mut c = server.connect(&token, Encoding::Msgpack).await;
    c.subscribe_snapshot(S).await;
    let started = Instant::now();
    // When: time passes.
    let (frames, close) = c.recv_close(Duration::from_secs(4)).await;
    // Then: an `unauthorized` error frame, then close code 4001, within ~3 s.
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(close_code(&close), 4001);
    let last = frames.last().expect("an error frame before the close");
    let (code, _, message) = error_parts(last);
    assert_eq!(code, "unauthorized");
    assert!(message.contains("expired"), "{message}");
    // Then: the server goes on (the closed connection, and `opened`'s, are let go).
    server.wait_connections(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_closed_as_expired_cannot_reconnect() {
    let server = TestServer::start().await;
    // A token valid for 1 to 2 more seconds (`now_secs` is rounded down): long enough for the
    // handshake, short enough for the test.
    let token = server.mint(&copanel::auth::Claims {
        exp: now_secs() + 2,
        ..server.claims("op1", Role::Operator)
    });
    let mut c = server.connect(&token, Encoding::Json).await;
    // Given: the server closed the connection because the token expired.
    let (_, close) = c.recv_close(WAIT).await;
    assert_eq!(close_code(&close), 4001);
    // When: the client reconnects at once with the same token.
    let r = connect_with(
        &server.url(),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    // Then: 401, as for any expired token (RFC 7519: not accepted on or after `exp`).
    let (status, _) = refused(r);
    assert_eq!(status, 401);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_dropped_after_the_idle_timeout() {
    let server = TestServer::start_with(|c| {
        c.edge.ping_interval = Duration::from_millis(250);
        c.edge.idle_timeout = Duration::from_secs(1);
    })
    .await;
    opened(&server, "life", "op1").await;
    let mut silent = server.client("sup1", Role::Supervisor).await;
    silent.subscribe_snapshot(S).await;
    let mut alive = server.client("sup2", Role::Supervisor).await;
    alive.subscribe_snapshot(S).await;
    // When: `silent` stops reading (so it answers no pings) while `alive` keeps pinging and
    // reading (so it also answers the server's pings), however long the wait takes.
    let keep_alive = async {
        loop {
            alive.ping().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // Then: the server drops the silent one (and `opened`'s); the other is still there.
    tokio::select! {
        _ = server.wait_connections(1) => {}
        _ = keep_alive => unreachable!("the keep-alive loop never ends"),
    }
    alive.ping().await;
    // Then: the silent one's socket ends: with close 4002 if the frame can still be read
    // (the client may instead fail first, writing its late pongs to the closed socket).
    let ended = tokio::time::timeout(WAIT, async {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match silent.ws.next().await {
                Some(Ok(Message::Close(c))) => return c.map(|c| u16::from(c.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the silent socket ends");
    if let Some(code) = ended {
        assert_eq!(code, 4002);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_reports_ok_and_the_epoch() {
    let server = TestServer::start().await;
    // Then: 200, JSON, status ok, the store's epoch.
    let h = server.healthz().await;
    assert_eq!(h["status"], "ok");
    assert_eq!(h["epoch"], server.epoch().as_str());
    assert_eq!(h["connections"], 0);
    // Then: it follows what happens.
    opened(&server, "life", "op1").await;
    let mut c = server.client("sup1", Role::Supervisor).await;
    c.subscribe_snapshot(S).await;
    // (`opened`'s connection is counted until the server has seen it go.)
    let h = server.wait_connections(1).await;
    assert_eq!(h["subscriptions"], 1);
    assert!(h["events_appended"].as_u64().unwrap() >= 1);
    // Then: the epoch survives a restart.
    let epoch = server.epoch();
    drop(c);
    let server = TestServer::start_in(server.stop().await, |_| {}).await;
    assert_eq!(server.healthz().await["epoch"], epoch.as_str());
    // Then: an unknown path is 404, not a crash.
    assert_eq!(server.http_get("/nope").await.0, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused_with_503() {
    let server = TestServer::start_with(|c| c.edge.connections = 2).await;
    let token = server.token("sup1", Role::Supervisor);
    let mut a = server.connect(&token, Encoding::Json).await;
    let b = server.connect(&token, Encoding::Json).await;
    // When: a third connection while two are open.
    let r = connect_with(
        &server.url(),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    // Then: 503 unavailable naming the cap; the open ones go on.
    let (status, body) = refused(r);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "unavailable");
    assert!(body["message"].as_str().unwrap().contains('2'), "{body}");
    a.ping().await;
    // Then: once one closes, a new one is accepted.
    drop(b);
    server.wait_connections(1).await;
    server.connect(&token, Encoding::Msgpack).await.ping().await;
    server.stop().await;
}
