//! Concurrency hammer (issue 5, item 4): 24 connections (the owner, five collaborators and
//! supervisors) send mixed commands to ONE session at once (tags, notes, parameters, client info,
//! some with `expected_seq`), while subscribers join at the start and mid-way (snapshot, since 0,
//! since the middle). At the end every subscriber's folded state is identical, equals the server's
//! `state_at` the head, a fresh snapshot, and a replay of the full history.

mod support;

use copanel::domain;
use copanel_protocol::{Envelope, Role, ServerFrame, StreamKind, StreamState};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use support::*;

const ID: &str = "hammer";
const S: &str = "session/hammer";
const PER_CONNECTION: u64 = 40;

/// The identities of the 24 hammering connections.
fn hammerers() -> Vec<(String, Role)> {
    let mut out = Vec::new();
    for _ in 0..4 {
        out.push(("op1".to_owned(), Role::Operator));
    }
    for i in 2..=6 {
        for _ in 0..2 {
            out.push((format!("op{i}"), Role::Operator));
        }
    }
    for i in 1..=10 {
        out.push((format!("sup{i}"), Role::Supervisor));
    }
    out
}

/// A deterministic mix of commands, from connection `c`'s `i`th step.
fn mixed(c: u64, i: u64) -> Value {
    let r = c.wrapping_mul(7919).wrapping_add(i.wrapping_mul(104_729));
    match r % 7 {
        0 => json!({"kind": "add_tag", "tag": format!("t{}", r % 10)}),
        1 => json!({"kind": "remove_tag", "tag": format!("t{}", (r / 7) % 10)}),
        2 => json!({"kind": "add_note", "text": format!("note {c}/{i}")}),
        3 => {
            json!({"kind": "set_parameter", "key": format!("k{}", r % 8), "value": format!("{c}/{i}")})
        }
        4 => json!({"kind": "remove_parameter", "key": format!("k{}", (r / 7) % 8)}),
        5 => json!({"kind": "set_client_info", "name": format!("Client {c}/{i}")}),
        _ => json!({"kind": "set_client_info", "email": format!("c{c}i{i}@example.com")}),
    }
}

/// Reads events, folding them into `state`, until the event of command `done`.
async fn fold_until_done(
    mut c: Client,
    mut state: StreamState,
    mut next: u64,
) -> (StreamState, u64) {
    loop {
        let e: Envelope = c.recv_event().await;
        assert_eq!(e.seq, next, "gapless, in order, no duplicates");
        domain::apply(&mut state, &e);
        next += 1;
        if e.command_id.as_deref() == Some("done") {
            return (state, e.seq);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_operators_on_one_session_end_in_one_state() {
    let server = TestServer::start_with(|c| {
        c.edge.command_burst = 10_000.0;
        c.edge.commands_per_sec = 100_000.0;
    })
    .await;
    opened(&server, ID, "op1").await;
    // Given: five collaborators invited by the owner, who accept.
    let mut owner = server.client("op1", Role::Operator).await;
    for i in 2..=6 {
        let op = format!("op{i}");
        ack_seq(
            &owner
                .command(
                    S,
                    &format!("inv{i}"),
                    json!({"kind": "invite_collaborator", "operator_id": op}),
                )
                .await,
        );
        let mut c = server.client(&op, Role::Operator).await;
        ack_seq(
            &c.command(S, &format!("acc{i}"), json!({"kind": "accept_invitation"}))
                .await,
        );
    }
    // Given: two subscribers from the start.
    let mut readers = Vec::new();
    let mut c = server.client("sup20", Role::Supervisor).await;
    let (head, _, state) = c.subscribe_snapshot(S).await;
    readers.push(tokio::spawn(fold_until_done(c, state, head + 1)));
    let mut c = server.client("op3", Role::Operator).await;
    assert!(matches!(
        c.subscribe(S, Some(0)).await,
        ServerFrame::Subscribed { .. }
    ));
    readers.push(tokio::spawn(fold_until_done(
        c,
        domain::initial(StreamKind::Session),
        1,
    )));

    // When: 24 connections hammer the session at once.
    let acked = Arc::new(AtomicU64::new(0));
    let mut hammers = Vec::new();
    for (n, (sub, role)) in hammerers().into_iter().enumerate() {
        let mut c = server.client(&sub, role).await;
        let acked = acked.clone();
        hammers.push(tokio::spawn(async move {
            let (mut ok, mut conflicts, mut last) = (0u64, 0u64, 0u64);
            for i in 0..PER_CONNECTION {
                let cmd = mixed(n as u64, i);
                let id = format!("h{n}-{i}");
                // Every third command claims the head this connection last saw.
                let f = if i % 3 == 2 {
                    c.command_at(S, &id, last, cmd).await
                } else {
                    c.command(S, &id, cmd).await
                };
                match &f {
                    ServerFrame::Ack { seq, .. } => {
                        ok += 1;
                        last = last.max(*seq);
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    ServerFrame::Error { code, .. } => {
                        let code = code.as_str();
                        assert!(
                            matches!(code, "conflict" | "invalid" | "not_found"),
                            "{sub} {i}: {f:?}"
                        );
                        if code == "conflict" {
                            conflicts += 1;
                        }
                    }
                    other => panic!("{sub} {i}: {other:?}"),
                }
            }
            (ok, conflicts)
        }));
    }
    // When: four more subscribers join mid-way.
    let total = hammerers().len() as u64 * PER_CONNECTION;
    while acked.load(Ordering::Relaxed) < total / 3 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    for k in 0..4 {
        let mut c = server
            .client(&format!("sup{}", 30 + k), Role::Supervisor)
            .await;
        let reader = match k {
            0 | 1 => {
                let (head, _, state) = c.subscribe_snapshot(S).await;
                tokio::spawn(fold_until_done(c, state, head + 1))
            }
            2 => {
                assert!(matches!(
                    c.subscribe(S, Some(0)).await,
                    ServerFrame::Subscribed { .. }
                ));
                tokio::spawn(fold_until_done(c, domain::initial(StreamKind::Session), 1))
            }
            _ => {
                let mid = c.head(S).await / 2;
                let state = match c.state_at(S, mid).await {
                    ServerFrame::State { state, .. } => state,
                    other => panic!("state_at: {other:?}"),
                };
                assert!(matches!(
                    c.subscribe(S, Some(mid)).await,
                    ServerFrame::Subscribed { .. }
                ));
                tokio::spawn(fold_until_done(c, state, mid + 1))
            }
        };
        readers.push(reader);
    }
    let (mut ok, mut conflicts) = (0, 0);
    for h in hammers {
        let (o, c) = h.await.expect("hammer");
        ok += o;
        conflicts += c;
    }
    let head = ack_seq(
        &owner
            .command(S, "done", json!({"kind": "add_tag", "tag": "done"}))
            .await,
    );
    // Then: every subscriber folded the same state, up to the same head.
    let mut states = Vec::new();
    for r in readers {
        let (state, seq) = r.await.expect("reader");
        assert_eq!(seq, head);
        states.push(state);
    }
    // Then: which is the server's state at the head, a fresh snapshot, and a replay of the log.
    let at_head = match owner.state_at(S, head).await {
        ServerFrame::State { state, .. } => state,
        other => panic!("state_at: {other:?}"),
    };
    let mut fresh = server.client("sup40", Role::Supervisor).await;
    let (snap_head, _, snapshot) = fresh.subscribe_snapshot(S).await;
    assert_eq!(snap_head, head);
    let log = fresh.full_history(S).await;
    assert_eq!(seqs(&log), (1..=head).collect::<Vec<_>>());
    let mut replay = domain::initial(StreamKind::Session);
    for e in &log {
        domain::apply(&mut replay, e);
    }
    for (i, s) in states.iter().enumerate() {
        assert_eq!(s, &replay, "subscriber {i} differs from the replay");
    }
    assert_eq!(at_head, replay, "state_at(head) differs from the replay");
    assert_eq!(snapshot, replay, "snapshot differs from the replay");
    println!(
        "hammer: {} connections, {ok} commands acked, {conflicts} expected_seq conflicts, head {head}, {} subscribers agree",
        hammerers().len(),
        states.len()
    );
    assert!(
        ok > total / 2,
        "most commands were accepted ({ok} of {total})"
    );
    server.stop().await;
}
