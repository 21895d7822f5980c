//! Concurrency: several connections firing commands at one stream without waiting for acks.
//! The stream keeps one total order (gapless seqs, no duplicates) that every subscriber sees
//! identically, each connection's acks come back in request order, and the live state equals a
//! replay of the log.

mod support;

use copanel_protocol::{Encoding, Envelope, Role, ServerFrame};
use serde_json::json;
use std::collections::BTreeSet;
use support::*;

const S: &str = "session/conc";
/// Commands per writer connection: within the default burst of 100.
const PER_WRITER: usize = 90;

/// Fires `PER_WRITER` commands without awaiting, then collects the replies: returns the acked
/// seqs in request order.
async fn fire(mut c: Client, tag: &'static str) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..PER_WRITER {
        let cmd = if i % 3 == 0 {
            json!({"kind": "set_parameter", "key": format!("{tag}{}", i % 7), "value": format!("v{i}")})
        } else {
            json!({"kind": "add_note", "text": format!("{tag} note {i}")})
        };
        ids.push(c.send_command(S, &format!("{tag}-{i}"), cmd).await);
    }
    let mut seqs = Vec::new();
    for id in ids {
        // Replies to one connection come in request order.
        let f = c.recv().await;
        match f {
            ServerFrame::Ack {
                id: Some(got), seq, ..
            } => {
                assert_eq!(got, id, "{tag}: replies in request order");
                seqs.push(seq);
            }
            other => panic!("{tag}: expected an ack, got {other:?}"),
        }
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_produce_one_gapless_order_seen_by_all() {
    let server = TestServer::start().await;
    opened(&server, "conc", "op1").await;
    // Given: three subscribers, one per encoding mix, all at head 1.
    let mut subs = vec![
        server.client("sup1", Role::Supervisor).await,
        server
            .connect(&server.token("op1", Role::Operator), Encoding::Msgpack)
            .await,
        server.client("platform", Role::Service).await,
    ];
    for c in &mut subs {
        assert_eq!(c.subscribe_snapshot(S).await.0, 1);
    }
    // When: three writers (owner, supervisor, platform) fire concurrently.
    let w1 = server.client("op1", Role::Operator).await;
    let w2 = server
        .connect(&server.token("sup2", Role::Supervisor), Encoding::Msgpack)
        .await;
    let w3 = server.client("platform", Role::Service).await;
    let (a, b, c) = tokio::join!(
        tokio::spawn(fire(w1, "a")),
        tokio::spawn(fire(w2, "b")),
        tokio::spawn(fire(w3, "c"))
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let n = 1 + 3 * PER_WRITER as u64;
    // Then: each writer's acks increase strictly, and together they are exactly 2..=n.
    for (name, s) in [("a", &a), ("b", &b), ("c", &c)] {
        assert!(
            s.windows(2).all(|w| w[0] < w[1]),
            "{name}: acks increase: {s:?}"
        );
    }
    let all: BTreeSet<u64> = a.iter().chain(&b).chain(&c).copied().collect();
    assert_eq!(all.len(), 3 * PER_WRITER, "no two commands share a seq");
    assert_eq!(all, (2..=n).collect::<BTreeSet<_>>(), "acks cover 2..=n");

    // Then: every subscriber sees seqs 2..=n, identically.
    let mut seen: Vec<Vec<Envelope>> = Vec::new();
    for c in &mut subs {
        let events = c.recv_events(3 * PER_WRITER).await;
        assert_eq!(
            seqs(&events),
            (2..=n).collect::<Vec<_>>(),
            "gapless, no duplicate"
        );
        seen.push(events);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], seen[2]);
    // Then: the event at each acked seq is that writer's command (per-writer order kept).
    for (tag, acked) in [("a", &a), ("b", &b), ("c", &c)] {
        for (i, seq) in acked.iter().enumerate() {
            let e = &seen[0][(*seq - 2) as usize];
            assert_eq!(e.command_id.as_deref(), Some(format!("{tag}-{i}").as_str()));
        }
    }
    // Then: the log agrees with what was streamed.
    let mut reader = server.client("sup1", Role::Supervisor).await;
    let log = reader.full_history(S).await;
    assert_eq!(log.len() as u64, n);
    assert_eq!(&log[1..], &seen[0][..]);
    // Then: the replayed state at head equals a fresh snapshot (live state == replay).
    let replayed = reader.session_at(S, n).await;
    let (head, _, snap) = reader.subscribe_snapshot(S).await;
    assert_eq!(head, n);
    assert_eq!(session(&snap), &replayed);
    assert_eq!(replayed.notes.len(), 3 * (PER_WRITER - PER_WRITER / 3));
    for c in &mut subs {
        c.assert_quiet().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_expected_seq_lets_exactly_one_win() {
    let server = TestServer::start().await;
    opened(&server, "race", "op1").await;
    let s = "session/race";
    // Given: five writers that all believe the head is 1.
    let mut writers = Vec::new();
    for i in 0..5 {
        writers.push(server.client(&format!("sup{i}"), Role::Supervisor).await);
    }
    let mut sent = Vec::new();
    for (i, w) in writers.iter_mut().enumerate() {
        let id = w
            .send_request(
                json!({"type": "command", "stream": s, "command_id": format!("r{i}"),
                "expected_seq": 1, "command": {"kind": "add_tag", "tag": format!("t{i}")}}),
            )
            .await;
        sent.push(id);
    }
    // Then: exactly one ack (seq 2); the others are conflicts naming head 2.
    let mut wins = 0;
    for (w, id) in writers.iter_mut().zip(sent) {
        match w.recv_until(|f| reply_to(f, id)).await {
            ServerFrame::Ack { seq, .. } => {
                assert_eq!(seq, 2);
                wins += 1;
            }
            ServerFrame::Error { code, head, .. } => {
                assert_eq!(code.as_str(), "conflict");
                assert_eq!(head, Some(2));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(writers[0].head(s).await, 2, "nothing else appended");
    server.stop().await;
}

/// Commands fired past the writer's queue (one slot here) and past a connection's in-flight
/// cap: the connection keeps them in order while the writer has no room and stops reading at
/// the cap; every command is answered, in request order, with increasing seqs, and the log
/// holds each connection's commands in the order sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_writer_queue_keeps_each_connections_order() {
    const N: usize = 300;
    let server = TestServer::start_with(|c| {
        c.writer_queue = 1;
        c.edge.commands_per_sec = 1e6;
        c.edge.command_burst = 1e6;
    })
    .await;
    opened(&server, "full", "op1").await;
    let s = "session/full";
    async fn fire_n(mut c: Client, s: &'static str, tag: &'static str) -> Vec<u64> {
        let mut ids = Vec::new();
        for i in 0..N {
            let cmd = json!({"kind": "set_parameter", "key": format!("{tag}{}", i % 5), "value": format!("v{i}")});
            ids.push(c.send_command(s, &format!("{tag}-{i}"), cmd).await);
        }
        let mut seqs = Vec::new();
        for id in ids {
            match c.recv().await {
                ServerFrame::Ack {
                    id: Some(got), seq, ..
                } => {
                    assert_eq!(got, id, "{tag}: replies in request order");
                    seqs.push(seq);
                }
                other => panic!("{tag}: expected an ack, got {other:?}"),
            }
        }
        seqs
    }
    let w1 = server.client("op1", Role::Operator).await;
    let w2 = server.client("platform", Role::Service).await;
    let (a, b) = tokio::join!(
        tokio::spawn(fire_n(w1, s, "a")),
        tokio::spawn(fire_n(w2, s, "b"))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    for (name, acked) in [("a", &a), ("b", &b)] {
        assert!(
            acked.windows(2).all(|w| w[0] < w[1]),
            "{name}: acks increase: {acked:?}"
        );
    }
    let all: BTreeSet<u64> = a.iter().chain(&b).copied().collect();
    let n = 1 + 2 * N as u64;
    assert_eq!(
        all,
        (2..=n).collect::<BTreeSet<_>>(),
        "acks cover 2..=n once"
    );
    let mut reader = server.client("sup1", Role::Supervisor).await;
    let log = reader.full_history(s).await;
    assert_eq!(log.len() as u64, n);
    for (tag, acked) in [("a", &a), ("b", &b)] {
        for (i, seq) in acked.iter().enumerate() {
            let e = &log[(*seq - 1) as usize];
            assert_eq!(e.command_id.as_deref(), Some(format!("{tag}-{i}").as_str()));
        }
    }
    server.stop().await;
}
