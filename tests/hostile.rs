//! Slow and hostile clients (issue 5, item 3), beyond what bad_input.rs (malformed, oversize and
//! deeply nested frames, rate and subscription limits), access.rs (forged, tampered, `alg: none`
//! and other companies' tokens), lifecycle.rs (expiry mid-connection, close 4001; one connection
//! over the cap) and slow_consumer.rs (one stalled reader) already prove:
//! - several clients that never read a byte while others receive thousands of events: the
//!   server's per-connection queues never exceed their capacity, process memory stays bounded
//!   (the figure is printed), the readers get every event in order, and a never-reading client
//!   that starts reading gets exactly the events it missed, then live ones;
//! - a flood of concurrent connections beyond the cap: every one refused with 503
//!   `unavailable`, the open connections and new ones after the flood are served;
//! - invalid UTF-8 inside a text frame: only that connection ends, with close 1007.

mod support;

use copanel_protocol::{Encoding, Role, ServerFrame};
use futures::future::join_all;
use serde_json::json;
use std::time::Duration;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::MaybeTlsStream;

/// The process's resident set size in KiB (the server runs in this process).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One gauge or counter from `/metrics`.
async fn metric(server: &TestServer, name: &str) -> u64 {
    let (status, body) = server.http_get("/metrics").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
        .round() as u64
}

const S: &str = "session/hostile";
const EVENTS: u64 = 3000;
const VALUE_CHARS: usize = 4000;
const STALLED: usize = 6;
const QUEUE: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_reading_clients_hold_no_memory_and_catch_up_later() {
    let server = TestServer::start_with(|c| {
        c.edge.outbound_queue = QUEUE;
        // Never-reading clients do not answer pings either; keep a slow CI machine from
        // closing them as idle before they start reading.
        c.edge.idle_timeout = Duration::from_secs(300);
        c.edge.command_burst = 10_000.0;
        c.edge.commands_per_sec = 100_000.0;
        c.limits.parameter_value_chars = VALUE_CHARS;
    })
    .await;
    opened(&server, "hostile", "op1").await;
    let token = server.token("sup1", Role::Supervisor);
    // Given: six clients that subscribe and then never read, and two readers.
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let enc = [Encoding::Json, Encoding::Msgpack][i % 2];
        // A small receive buffer, so the kernel cannot absorb what the server sends.
        let mut c = Client::connect_small_buffer(&server.url(), &token, enc, 4096).await;
        assert_eq!(c.subscribe_snapshot(S).await.0, 1);
        stalled.push(c);
    }
    let readers: Vec<_> = [Encoding::Json, Encoding::Msgpack]
        .into_iter()
        .map(|enc| {
            let url = server.url();
            let token = token.clone();
            async move {
                let mut c = Client::connect(&url, &token, enc).await;
                assert_eq!(c.subscribe_snapshot(S).await.0, 1);
                c
            }
        })
        .collect();
    let readers = join_all(readers).await;
    let readers: Vec<_> = readers
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                // Checks order as it goes and keeps nothing, so this process's memory is the
                // server's.
                for want in 2..=EVENTS + 1 {
                    assert_eq!(c.recv_event().await.seq, want);
                }
                c
            })
        })
        .collect();
    let rss_before = rss_kib();

    // When: 3000 events of ~4 KB (12 MB, 72 MB across the six stalled clients) are appended.
    let mut w = server.client("op1", Role::Operator).await;
    let value = "v".repeat(VALUE_CHARS - 8);
    let mut peak_rss = rss_before;
    for chunk in 0..EVENTS / 100 {
        let mut ids = Vec::new();
        for i in chunk * 100..(chunk + 1) * 100 {
            let cmd = json!({"kind": "set_parameter", "key": format!("k{}", i % 50), "value": format!("{i:08}{value}")});
            ids.push(w.send_command(S, &format!("w{i}"), cmd).await);
        }
        for id in ids {
            let f = w.recv().await;
            assert!(
                matches!(f, ServerFrame::Ack { id: Some(got), .. } if got == id),
                "{f:?}"
            );
        }
        peak_rss = peak_rss.max(rss_kib());
    }
    // Then: the readers got every event, in order.
    let mut readers_done = Vec::new();
    for r in readers {
        readers_done.push(r.await.expect("reader"));
    }
    // Then: no connection queue ever held more than its capacity, and the stalled
    // subscriptions fell back to the log.
    let peak_queue = metric(&server, "copanel_fanout_queue_depth_peak").await;
    let capacity = metric(&server, "copanel_fanout_queue_capacity").await;
    assert_eq!(capacity, QUEUE as u64);
    assert!(
        peak_queue <= capacity,
        "queue peak {peak_queue} > {capacity}"
    );
    let fallbacks = metric(&server, "copanel_slow_consumer_fallbacks_total").await;
    assert!(fallbacks > 0, "no subscription fell back to the log");
    let growth_mib = peak_rss.saturating_sub(rss_before) / 1024;
    println!(
        "memory: rss before {} MiB, peak {} MiB (+{growth_mib} MiB) with {STALLED} never-reading \
         clients over {EVENTS} events of {VALUE_CHARS} B; fan-out queue peak {peak_queue}/{capacity}, \
         {fallbacks} fallbacks to the log",
        rss_before / 1024,
        peak_rss / 1024
    );
    // Generous: buffering for the stalled clients alone would be 72 MB; the log itself (12 MB)
    // and sled's page cache account for what grows.
    assert!(growth_mib < 64, "rss grew {growth_mib} MiB");

    // When: the stalled clients start reading.
    for c in &mut stalled {
        // Then: each gets exactly the events it missed, in order, then live ones.
        for want in 2..=EVENTS + 1 {
            assert_eq!(c.recv_event().await.seq, want);
        }
    }
    ack_seq(
        &w.command(S, "live", json!({"kind": "add_tag", "tag": "live"}))
            .await,
    );
    for c in stalled.iter_mut().chain(readers_done.iter_mut()) {
        assert_eq!(c.recv_event().await.seq, EVENTS + 2);
        c.assert_quiet().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_refused_and_the_server_keeps_serving() {
    const CAP: usize = 8;
    const FLOOD: usize = 64;
    let server = TestServer::start_with(|c| c.edge.connections = CAP).await;
    opened(&server, "flood", "op1").await;
    // `opened`'s connection holds one of the CAP permits until the server has seen it go.
    server.wait_connections(0).await;
    let token = server.token("sup1", Role::Supervisor);
    let mut open = Vec::new();
    for _ in 0..CAP {
        open.push(server.connect(&token, Encoding::Msgpack).await);
    }
    // When: 64 more connect at once.
    let auth = format!("Bearer {token}");
    let url = server.url();
    let headers = [("authorization", auth.as_str())];
    let attempts = (0..FLOOD).map(|_| connect_with(&url, &headers));
    let results = join_all(attempts).await;
    // Then: every one is refused with 503 `unavailable`, naming the cap.
    for r in results {
        let (status, body) = refused(r);
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "unavailable");
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains('8')),
            "{body}"
        );
    }
    // Then: the open connections are served.
    for c in &mut open {
        c.ping().await;
    }
    let mut w = open.pop().expect("a connection");
    ack_seq(
        &w.command("session/flood", "t", json!({"kind": "add_tag", "tag": "x"}))
            .await,
    );
    // Then: once they close, new connections are accepted and work.
    drop(open);
    drop(w);
    server.wait_connections(0).await;
    let mut c = server.connect(&token, Encoding::Json).await;
    let (head, _, _) = c.subscribe_snapshot("session/flood").await;
    assert_eq!(head, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_frame_ends_only_that_connection() {
    let server = TestServer::start().await;
    opened(&server, "utf", "op1").await;
    let token = server.token("sup1", Role::Supervisor);
    let mut healthy = server.connect(&token, Encoding::Json).await;
    healthy.subscribe_snapshot("session/utf").await;
    let mut bad = server.connect(&token, Encoding::Json).await;
    bad.ping().await;
    // When: a masked text frame whose payload is not UTF-8, written to the socket by hand (the
    // WebSocket client library refuses to build one).
    let payload: &[u8] = b"{\"type\":\"ping\",\"x\":\"\xff\xfe\xc3\x28\"}";
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    match bad.ws.get_mut() {
        MaybeTlsStream::Plain(tcp) => tcp.write_all(&frame).await.expect("raw write"),
        _ => panic!("plain TCP expected"),
    }
    // Then: that connection is closed with 1007 (invalid payload data).
    let (_, close) = bad.recv_close(WAIT).await;
    let code = close.map(|c| u16::from(c.code));
    assert_eq!(code, Some(1007), "close frame");
    // Then: the others are served as before.
    healthy.ping().await;
    let mut w = server.client("op1", Role::Operator).await;
    let seq = ack_seq(
        &w.command("session/utf", "t", json!({"kind": "add_tag", "tag": "ok"}))
            .await,
    );
    assert_eq!(healthy.recv_event().await.seq, seq);
    server.stop().await;
}
