//! Resume and replay: `subscribe {since}` delivers exactly what follows `since` and then live
//! events, with no gap or duplicate across the catch-up/live switch and across a restart;
//! `history` pages through the log; `state_at` is the fold of the log up to a seq.

mod support;

use copanel_protocol::{Role, ServerFrame, SessionState, SessionStatus};
use serde_json::json;
use std::sync::Arc;
use support::*;
use tokio::sync::Notify;

/// Appends `n` parameter changes (one event each) as op1 and waits for every ack.
async fn append(server: &TestServer, s: &str, prefix: &str, n: usize) {
    let mut w = server.client("op1", Role::Operator).await;
    for i in 0..n {
        ack_seq(
            &w.command(
                s,
                &format!("{prefix}{i}"),
                json!({"kind": "set_parameter", "key": "k", "value": format!("{prefix}{i}")}),
            )
            .await,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_n_delivers_the_rest_then_live_while_others_append() {
    let server = TestServer::start().await;
    opened(&server, "res", "op1").await;
    let s = "session/res";
    append(&server, s, "pre", 49).await; // head 50
                                         // Given: an appender that keeps writing (80 more, one at a time) during the catch-up.
    let started = Arc::new(Notify::new());
    let mut w = server.client("op1", Role::Operator).await;
    let go = started.clone();
    let appender = tokio::spawn(async move {
        for i in 0..80 {
            ack_seq(
                &w.command(
                    "session/res",
                    &format!("live{i}"),
                    json!({"kind": "add_note", "text": format!("n{i}")}),
                )
                .await,
            );
            if i == 5 {
                go.notify_one();
            }
        }
    });
    started.notified().await;
    // When: a reader resumes from 20 while appends are in flight.
    let mut r = server.client("sup1", Role::Supervisor).await;
    let f = r.subscribe(s, Some(20)).await;
    let head = match f {
        ServerFrame::Subscribed {
            head, ref epoch, ..
        } => {
            assert_eq!(epoch, &server.epoch());
            head
        }
        other => panic!("{other:?}"),
    };
    assert!(
        head > 50,
        "appends were under way when it subscribed (head {head})"
    );
    // Then: 21..=130 exactly, in order, the catch-up and live parts joined seamlessly.
    let events = r.recv_events(110).await;
    appender.await.unwrap();
    assert_eq!(seqs(&events), (21..=130).collect::<Vec<_>>());
    r.assert_quiet().await;
    // Then: what it got is the log itself.
    let log = r.full_history(s).await;
    assert_eq!(&log[20..], &events[..]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_zero_replays_everything_and_since_head_gives_only_live() {
    let server = TestServer::start().await;
    opened(&server, "hd", "op1").await;
    let s = "session/hd";
    append(&server, s, "x", 4).await; // head 5
    let mut a = server.client("sup1", Role::Supervisor).await;
    let f = a.subscribe(s, Some(0)).await;
    assert!(
        matches!(f, ServerFrame::Subscribed { head: 5, .. }),
        "{f:?}"
    );
    // Then: since 0 replays 1..=5 and no snapshot.
    assert_eq!(seqs(&a.recv_events(5).await), [1, 2, 3, 4, 5]);
    let mut b = server.client("op1", Role::Operator).await;
    let f = b.subscribe(s, Some(5)).await;
    assert!(
        matches!(f, ServerFrame::Subscribed { head: 5, .. }),
        "{f:?}"
    );
    // Then: since = head sends nothing until something happens.
    b.assert_quiet().await;
    append(&server, s, "y", 1).await;
    assert_eq!(b.recv_event().await.seq, 6);
    assert_eq!(a.recv_event().await.seq, 6);
    b.assert_quiet().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_beyond_head_is_invalid() {
    let server = TestServer::start().await;
    opened(&server, "bey", "op1").await;
    let s = "session/bey";
    let mut c = server.client("op1", Role::Operator).await;
    let f = c.subscribe(s, Some(2)).await;
    let (code, field, message) = error_parts(&f);
    assert_eq!(
        (code.as_str(), field.as_deref()),
        ("invalid", Some("since")),
        "{message}"
    );
    assert!(message.contains('1'), "names the head: {message}");
    // Then: the connection goes on, and nothing arrives for the refused subscription.
    c.ping().await;
    append(&server, s, "z", 1).await;
    c.assert_quiet().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_works_across_a_graceful_restart() {
    let server = TestServer::start().await;
    opened(&server, "rst", "op1").await;
    let s = "session/rst";
    append(&server, s, "a", 9).await; // head 10
    let epoch = server.epoch();
    let mut r = server.client("sup1", Role::Supervisor).await;
    r.subscribe(s, Some(0)).await;
    let before = r.recv_events(10).await;
    // When: the server restarts on the same data dir.
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    // Then: the epoch is unchanged.
    assert_eq!(server.epoch(), epoch);
    append(&server, s, "b", 5).await; // head 15
                                      // Then: resuming with since 7 gives 8..=15, then live events.
    let mut r = server.client("sup1", Role::Supervisor).await;
    let f = r.subscribe(s, Some(7)).await;
    match f {
        ServerFrame::Subscribed { head, epoch: e, .. } => {
            assert_eq!(head, 15);
            assert_eq!(e, epoch, "epoch survives the restart");
        }
        other => panic!("{other:?}"),
    }
    let after = r.recv_events(8).await;
    assert_eq!(seqs(&after), (8..=15).collect::<Vec<_>>());
    // Then: events written before the restart are byte-for-byte the same after it.
    assert_eq!(&after[..3], &before[7..10]);
    append(&server, s, "c", 1).await;
    assert_eq!(r.recv_event().await.seq, 16);
    r.assert_quiet().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_chain_with_next() {
    let server = TestServer::start().await;
    opened(&server, "his", "op1").await;
    let s = "session/his";
    append(&server, s, "h", 24).await; // head 25
    let mut c = server.client("op1", Role::Operator).await;
    let mut from = 1;
    let mut pages = Vec::new();
    let mut all = Vec::new();
    loop {
        match c.history(s, from, Some(10)).await {
            ServerFrame::History {
                events,
                next,
                stream,
                ..
            } => {
                assert_eq!(stream.as_str(), s);
                pages.push((from, events.len(), next));
                all.extend(events);
                match next {
                    Some(n) => from = n,
                    None => break,
                }
            }
            other => panic!("{other:?}"),
        }
    }
    // Then: 1..10 next 11, 11..20 next 21, 21..25 and no next.
    assert_eq!(
        pages,
        [(1, 10, Some(11)), (11, 10, Some(21)), (21, 5, None)]
    );
    assert_eq!(seqs(&all), (1..=25).collect::<Vec<_>>());
    // Then: no limit means the whole log (up to 1000) in one page.
    match c.history(s, 1, None).await {
        ServerFrame::History { events, next, .. } => {
            assert_eq!(events, all);
            assert_eq!(next, None);
        }
        other => panic!("{other:?}"),
    }
    // Then: a page from the middle with an exact end.
    match c.history(s, 16, Some(10)).await {
        ServerFrame::History { events, next, .. } => {
            assert_eq!(seqs(&events), (16..=25).collect::<Vec<_>>());
            assert_eq!(next, None, "the page reached the head");
        }
        other => panic!("{other:?}"),
    }
    // Then: from beyond the head is an empty last page.
    match c.history(s, 26, Some(10)).await {
        ServerFrame::History { events, next, .. } => {
            assert!(events.is_empty());
            assert_eq!(next, None);
        }
        other => panic!("{other:?}"),
    }
    // Then: limit 0 is invalid, limit over 1000 is too_large, both naming `limit`.
    let (code, field, _) = error_parts(&c.history(s, 1, Some(0)).await);
    assert_eq!(
        (code.as_str(), field.as_deref()),
        ("invalid", Some("limit"))
    );
    let (code, field, _) = error_parts(&c.history(s, 1, Some(1001)).await);
    assert_eq!(
        (code.as_str(), field.as_deref()),
        ("too_large", Some("limit"))
    );
    let f = c.history(s, 1, Some(1000)).await;
    assert!(
        matches!(f, ServerFrame::History { .. }),
        "1000 is allowed: {f:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_at_is_the_fold_of_the_log() {
    let server = TestServer::start().await;
    opened(&server, "sat", "op1").await;
    let s = "session/sat";
    let mut op1 = server.client("op1", Role::Operator).await;
    let cmds = [
        json!({"kind": "set_client_info", "name": "A"}),
        json!({"kind": "add_tag", "tag": "one"}),
        json!({"kind": "add_note", "text": "note"}),
        json!({"kind": "set_parameter", "key": "p", "value": "1"}),
        json!({"kind": "edit_note", "note_id": "n4", "text": "edited"}),
        json!({"kind": "remove_tag", "tag": "one"}),
        json!({"kind": "set_client_info", "name": "B", "email": ""}),
        json!({"kind": "close_session"}),
    ];
    // Given: after each step, the live state as a fresh subscriber's snapshot.
    let mut live: Vec<SessionState> = Vec::new();
    let mut sup = server.client("sup1", Role::Supervisor).await;
    let (_, _, st) = sup.subscribe_snapshot(s).await;
    live.push(session(&st).clone()); // at seq 1
    for (i, c) in cmds.iter().enumerate() {
        let seq = ack_seq(&op1.command(s, &format!("s{i}"), c.clone()).await);
        assert_eq!(seq, i as u64 + 2);
        let mut fresh = server.client("sup1", Role::Supervisor).await;
        let (head, _, st) = fresh.subscribe_snapshot(s).await;
        assert_eq!(head, seq);
        live.push(session(&st).clone());
    }
    // Then: state_at(k) equals the live state at k for every k.
    for (i, want) in live.iter().enumerate() {
        let k = i as u64 + 1;
        assert_eq!(&op1.session_at(s, k).await, want, "state at {k}");
    }
    assert_eq!(live[0].status, SessionStatus::Open);
    assert_eq!(live[5].notes[0].text, "edited");
    assert!(live[6].tags.is_empty());
    assert_eq!(
        (live[7].client.name.as_str(), live[7].client.email.as_str()),
        ("B", "")
    );
    assert_eq!(live[8].status, SessionStatus::Closed);
    // Then: seq 0 is the empty state.
    let empty = op1.session_at(s, 0).await;
    assert_eq!(empty, SessionState::default());
    // Then: beyond the head is invalid with field `seq`.
    let (code, field, _) = error_parts(&op1.state_at(s, 10).await);
    assert_eq!((code.as_str(), field.as_deref()), ("invalid", Some("seq")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_subscribes_on_one_connection_restart_cleanly_under_load() {
    let server = TestServer::start_with(|c| {
        c.edge.command_burst = 1000.0;
        c.edge.commands_per_sec = 10_000.0;
    })
    .await;
    opened(&server, "rep", "op1").await;
    let s = "session/rep";
    const ROUNDS: u64 = 10;
    const PER_ROUND: u64 = 30;
    let round_end = |k: u64| 1 + PER_ROUND * (k + 1);
    // Given: a writer appending rounds of 30 events without waiting; it starts the next round
    // once the reader has caught up with the previous one.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut w = server.client("op1", Role::Operator).await;
    let writer = tokio::spawn(async move {
        for k in 0..ROUNDS {
            let mut ids = Vec::new();
            for i in 0..PER_ROUND {
                let cmd = json!({"kind": "set_parameter", "key": "k", "value": format!("{k}.{i}")});
                ids.push(
                    w.send_command("session/rep", &format!("w{k}.{i}"), cmd)
                        .await,
                );
            }
            for id in ids {
                assert!(
                    matches!(w.recv().await, ServerFrame::Ack { id: Some(got), .. } if got == id)
                );
            }
            done_rx.recv().await.expect("the reader finished the round");
        }
    });
    // When: at the first event of each round, while the rest of the round is in flight, the
    // reader re-subscribes on the same connection: from an earlier seq or for a snapshot.
    let mut r = server.client("sup1", Role::Supervisor).await;
    let first = r
        .send_request(json!({"type": "subscribe", "stream": s, "since": 0}))
        .await;
    let mut pending: Option<(u64, Option<u64>)> = Some((first, Some(0)));
    let mut next: u64 = 1; // the seq the current subscription must deliver next
    let mut round = 0;
    let mut resubscribed_in_round = false;
    while round < ROUNDS {
        match r.recv().await {
            ServerFrame::Subscribed {
                id: Some(id), head, ..
            } => {
                let (want, since) = pending.take().expect("a subscribe was pending");
                assert_eq!(id, want);
                next = match since {
                    Some(since) => since + 1,
                    None => match r.recv().await {
                        ServerFrame::Snapshot { seq, .. } => {
                            assert_eq!(seq, head, "snapshot at the subscribed head");
                            head + 1
                        }
                        other => panic!("expected snapshot, got {other:?}"),
                    },
                };
            }
            ServerFrame::Event(e) => {
                // Then: every subscription delivers a contiguous run from where it started,
                // never an event queued for an earlier one.
                assert_eq!(e.seq, next, "round {round}");
                next += 1;
                if pending.is_none()
                    && !resubscribed_in_round
                    && e.seq > round_end(round) - PER_ROUND
                {
                    resubscribed_in_round = true;
                    let mut f = json!({"type": "subscribe", "stream": s});
                    let since = (round % 2 == 0).then(|| e.seq.saturating_sub(5));
                    if let Some(v) = since {
                        f["since"] = json!(v);
                    }
                    pending = Some((r.send_request(f).await, since));
                }
            }
            other => panic!("unexpected {other:?}"),
        }
        if pending.is_none() && resubscribed_in_round && next > round_end(round) {
            round += 1;
            resubscribed_in_round = false;
            if round < ROUNDS {
                done_tx.send(()).await.unwrap();
            }
        }
    }
    done_tx.send(()).await.unwrap();
    writer.await.unwrap();
    assert_eq!(next, round_end(ROUNDS - 1) + 1);
    r.assert_quiet().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubscribe_after_a_slow_request_never_replays_queued_events() {
    let server = TestServer::start_with(|c| {
        c.edge.command_burst = 2000.0;
        c.edge.commands_per_sec = 10_000.0;
        // Acks before flushing: this test is about the connection, and it needs speed.
        c.durability = copanel::writer::Durability::Relaxed;
    })
    .await;
    opened(&server, "qa", "op1").await;
    opened(&server, "qb", "op1").await;
    let (a, b) = ("session/qa", "session/qb");
    // Given: stream B with 400 heavy events, so that reading its history keeps the
    // connection busy for a while.
    let mut w = server.client("op1", Role::Operator).await;
    let big = "b".repeat(1000);
    let mut ids = Vec::new();
    for i in 0..400 {
        ids.push(
            w.send_command(
                b,
                &format!("b{i}"),
                json!({"kind": "set_parameter", "key": "k", "value": big}),
            )
            .await,
        );
    }
    for id in ids {
        assert!(matches!(w.recv().await, ServerFrame::Ack { id: Some(got), .. } if got == id));
    }
    // Given: a writer appending to A steadily (about one event a millisecond).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_w = stop.clone();
    let writer = tokio::spawn(async move {
        let mut n = 0u64;
        while !stop_w.load(std::sync::atomic::Ordering::Relaxed) {
            ack_seq(
                &w.command(
                    "session/qa",
                    &format!("a{n}"),
                    json!({"kind": "set_parameter", "key": "k", "value": format!("{n}")}),
                )
                .await,
            );
            n += 1;
        }
        n
    });
    let mut r = server.client("sup1", Role::Supervisor).await;
    let id = r
        .send_request(json!({"type": "subscribe", "stream": a, "since": 0}))
        .await;
    let mut pending = Some((id, 0u64));
    let mut next = 1u64;
    let mut iterations = 0;
    let mut histories_pending = 0;
    while iterations < 12 || pending.is_some() || histories_pending > 0 {
        match r.recv().await {
            ServerFrame::Subscribed { id: Some(id), .. } => {
                let (want, since) = pending.take().expect("pending");
                assert_eq!(id, want);
                next = since + 1;
            }
            ServerFrame::History { .. } => histories_pending -= 1,
            ServerFrame::Event(e) => {
                assert_eq!(e.stream.as_str(), a);
                // Then: after `subscribed`, the run restarts at since + 1 and never repeats.
                assert_eq!(e.seq, next, "iteration {iterations}");
                next += 1;
                if pending.is_none() && histories_pending == 0 && iterations < 12 && e.seq % 10 == 0
                {
                    iterations += 1;
                    // When: a slow request (live events of A queue meanwhile), then at once a
                    // re-subscribe to A from a little earlier.
                    r.send_request(
                        json!({"type": "history", "stream": b, "from": 1, "limit": 400}),
                    )
                    .await;
                    histories_pending += 1;
                    let since = e.seq - 3;
                    let id = r
                        .send_request(json!({"type": "subscribe", "stream": a, "since": since}))
                        .await;
                    pending = Some((id, since));
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = writer.await.unwrap();
    assert!(n > 0);
    server.stop().await;
}
