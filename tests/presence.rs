//! Presence and activity over real sockets: who views a stream is pushed to its viewers on
//! every change (subscribe, unsubscribe, disconnect, lost access, a silent peer's timeout);
//! activity hints reach the other viewers only, checked and rate-limited; a presence frame
//! dropped on a full queue is sent again once the viewer has caught up.
//!
//! Every test ends with a graceful `stop`: dropping a sled store with unflushed writes while
//! another test's store writes can deadlock on sled's process-wide lock.

mod support;

use copanel::domain::Principal;
use copanel::hub::{Hub, LagSignal, Outbound, Watcher};
use copanel::store::StreamId;
use copanel_protocol::{Encoding, Role, ServerFrame, StreamName, Viewer};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const S: &str = "session/s1";

// ---- helpers ---------------------------------------------------------------------------------

/// A client that sees presence and activity frames, with a display name in its token.
async fn viewer(server: &TestServer, sub: &str, role: Role, name: Option<&str>) -> Client {
    let mut claims = server.claims(sub, role);
    claims.name = name.map(str::to_owned);
    let mut c = server.connect(&server.mint(&claims), Encoding::Json).await;
    c.ambient = true;
    c
}

/// Subscribes (snapshot) and returns the first presence frame's viewer ids.
async fn join(c: &mut Client, stream: &str) -> Vec<String> {
    match c.subscribe(stream, None).await {
        ServerFrame::Subscribed { .. } => {}
        other => panic!("expected subscribed, got {other:?}"),
    }
    next_presence(c, stream).await
}

/// The next presence frame about `stream` (skipping events and acks), as viewer ids.
async fn next_presence(c: &mut Client, stream: &str) -> Vec<String> {
    ids(&next_presence_full(c, stream).await)
}

async fn next_presence_full(c: &mut Client, stream: &str) -> Vec<Viewer> {
    loop {
        match c.recv().await {
            ServerFrame::Presence { stream: s, viewers } if s.as_str() == stream => return viewers,
            ServerFrame::Presence { stream: s, .. } => panic!("presence of {s}, wanted {stream}"),
            ServerFrame::Activity { .. } => panic!("unexpected activity"),
            _ => {}
        }
    }
}

fn ids(viewers: &[Viewer]) -> Vec<String> {
    viewers.iter().map(|v| v.operator_id.clone()).collect()
}

fn list(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn activity(c: &mut Client, stream: &str, what: &str) {
    c.send(json!({"type": "activity", "stream": stream, "what": what}))
        .await;
}

/// Frames arriving until nothing more comes for a moment (for frames that sit in another
/// connection's queue, which a ping of this one does not order).
async fn drain(c: &mut Client) -> Vec<ServerFrame> {
    let mut out = Vec::new();
    while let Some(f) = c.try_recv(Duration::from_millis(300)).await {
        out.push(f);
    }
    out
}

/// The viewer ids of `f` if it is a presence frame about `stream`; `None` for events, pongs and
/// the like. Presence of another stream, or any activity frame, fails the test.
fn presence_in(f: &ServerFrame, stream: &str) -> Option<Vec<String>> {
    match f {
        ServerFrame::Presence { stream: s, viewers } if s.as_str() == stream => Some(ids(viewers)),
        ServerFrame::Presence { stream: s, .. } => panic!("presence of {s}, wanted {stream}"),
        ServerFrame::Activity { .. } => panic!("unexpected activity"),
        _ => None,
    }
}

/// The next presence frame about `stream` (skipping events and pongs), as viewer ids, while
/// pinging the server every 100 ms: `c` is never silent long enough to be idled out, however
/// long the wait.
async fn next_presence_pinging(c: &mut Client, stream: &str) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let id = c.send_request(json!({"type": "ping"})).await;
        loop {
            match c.recv().await {
                ServerFrame::Pong { id: Some(got) } if got == id => break,
                f => {
                    if let Some(viewers) = presence_in(&f, stream) {
                        return viewers;
                    }
                }
            }
        }
        assert!(Instant::now() < deadline, "no presence of {stream} in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `work` while `c` pings the server every 100 ms, so that `c` is never idled out however
/// long `work` takes; returns what `work` returned and the presence lists (viewer ids) `c`
/// received meanwhile about `stream`, in order.
async fn while_pinging<T>(
    c: &mut Client,
    stream: &str,
    work: impl std::future::Future<Output = T>,
) -> (T, Vec<Vec<String>>) {
    let mut seen = Vec::new();
    let keep_alive = async {
        loop {
            let id = c.send_request(json!({"type": "ping"})).await;
            loop {
                match c.recv().await {
                    ServerFrame::Pong { id: Some(got) } if got == id => break,
                    f => seen.extend(presence_in(&f, stream)),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let out = tokio::select! {
        out = work => out,
        _ = keep_alive => unreachable!("the keep-alive loop never ends"),
    };
    (out, seen)
}

/// Sends a ping and collects every frame that arrives before its pong.
async fn until_pong(c: &mut Client) -> Vec<ServerFrame> {
    let id = c.send_request(json!({"type": "ping"})).await;
    let mut out = Vec::new();
    loop {
        match c.recv().await {
            ServerFrame::Pong { id: Some(got) } if got == id => return out,
            f => out.push(f),
        }
    }
}

// ---- presence --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_see_each_other_come_and_go() {
    let server = TestServer::start().await;
    opened(&server, "s1", "op1").await;
    let mut op1 = viewer(&server, "op1", Role::Operator, Some("Ana Nová")).await;
    let mut sup = viewer(&server, "sup", Role::Supervisor, None).await;
    // Alone: op1 sees itself.
    assert_eq!(join(&mut op1, S).await, list(&["op1"]));
    // sup joins: both get the new list, sorted by operator id, with role and name.
    assert_eq!(join(&mut sup, S).await, list(&["op1", "sup"]));
    let viewers = next_presence_full(&mut op1, S).await;
    assert_eq!(
        viewers,
        vec![
            Viewer {
                operator_id: "op1".into(),
                role: Role::Operator,
                name: Some("Ana Nová".into()),
            },
            Viewer {
                operator_id: "sup".into(),
                role: Role::Supervisor,
                name: None,
            },
        ]
    );
    // A second connection of op1 (msgpack this time) adds no entry: one per operator.
    let mut claims = server.claims("op1", Role::Operator);
    claims.name = Some("Ana Nová".into());
    let mut op1b = server
        .connect(&server.mint(&claims), Encoding::Msgpack)
        .await;
    op1b.ambient = true;
    assert_eq!(join(&mut op1b, S).await, list(&["op1", "sup"]));
    assert_eq!(next_presence(&mut op1, S).await, list(&["op1", "sup"]));
    assert_eq!(next_presence(&mut sup, S).await, list(&["op1", "sup"]));
    // sup unsubscribes: the others see it go; sup hears no more about the stream.
    let f = sup
        .request(json!({"type": "unsubscribe", "stream": S}))
        .await;
    assert!(matches!(f, ServerFrame::Unsubscribed { .. }), "{f:?}");
    assert_eq!(next_presence(&mut op1, S).await, list(&["op1"]));
    assert_eq!(next_presence(&mut op1b, S).await, list(&["op1"]));
    sup.assert_quiet().await;
    // op1b disconnects: op1 is still there (its other connection), so op1 sees itself.
    drop(op1b);
    assert_eq!(next_presence(&mut op1, S).await, list(&["op1"]));
    // sup comes back with a resume (since = head): a viewer again.
    let f = sup.subscribe(S, Some(1)).await;
    assert!(matches!(f, ServerFrame::Subscribed { .. }), "{f:?}");
    assert_eq!(next_presence(&mut sup, S).await, list(&["op1", "sup"]));
    assert_eq!(next_presence(&mut op1, S).await, list(&["op1", "sup"]));
    // A repeated subscribe changes nothing for the others; the subscriber gets the list again.
    assert_eq!(join(&mut sup, S).await, list(&["op1", "sup"]));
    op1.assert_quiet().await;
    // sup's connection ends: op1 sees it go at once.
    drop(sup);
    assert_eq!(next_presence(&mut op1, S).await, list(&["op1"]));
    // Presence is per stream: a feed's presence is its own.
    assert_eq!(join(&mut op1, "operator/op1").await, list(&["op1"]));
    op1.assert_quiet().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_loses_access_leaves_the_presence() {
    let server = TestServer::start().await;
    opened(&server, "s1", "op1").await;
    let mut op1 = viewer(&server, "op1", Role::Operator, None).await;
    let mut cmd = server.client("op1", Role::Operator).await;
    ack_seq(
        &cmd.command(
            S,
            "i",
            json!({"kind": "invite_collaborator", "operator_id": "op2"}),
        )
        .await,
    );
    let mut op2 = viewer(&server, "op2", Role::Operator, None).await;
    ack_seq(
        &op2.command(S, "a", json!({"kind": "accept_invitation"}))
            .await,
    );
    assert_eq!(join(&mut op1, S).await, list(&["op1"]));
    assert_eq!(join(&mut op2, S).await, list(&["op1", "op2"]));
    assert_eq!(next_presence(&mut op1, S).await, list(&["op1", "op2"]));
    ack_seq(
        &cmd.command(
            S,
            "r",
            json!({"kind": "remove_collaborator", "operator_id": "op2"}),
        )
        .await,
    );
    // op2's subscription ends (forbidden), and op1 sees it leave.
    let f = op2
        .recv_until(|f| matches!(f, ServerFrame::Error { .. }))
        .await;
    assert_eq!(error_code(&f), "forbidden");
    assert_eq!(next_presence(&mut op1, S).await, list(&["op1"]));
    op2.assert_quiet().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_dead_viewer_disappears_after_the_idle_timeout() {
    const IDLE: Duration = Duration::from_secs(1);
    let server = TestServer::start_with(|c| {
        c.edge.ping_interval = Duration::from_millis(250);
        c.edge.idle_timeout = IDLE;
    })
    .await;
    opened(&server, "s1", "op1").await;
    let mut alive = viewer(&server, "op1", Role::Operator, None).await;
    assert_eq!(join(&mut alive, S).await, list(&["op1"]));
    // A peer that subscribes, then stops answering anything (its socket is never read again,
    // so no pong goes back), as a browser tab on a dead network would. `alive` keeps pinging
    // (and reading, so it answers the server's pings too) all along.
    let ((since, silent), seen) = while_pinging(&mut alive, S, async {
        let mut silent = viewer(&server, "sup", Role::Supervisor, None).await;
        // The server last hears from `silent` after this: its subscribe comes later.
        let since = Instant::now();
        assert_eq!(join(&mut silent, S).await, list(&["op1", "sup"]));
        (since, silent)
    })
    .await;
    // What `alive` saw meanwhile comes first, then what it sees next.
    let mut seen = seen.into_iter();
    let joined = match seen.next() {
        Some(viewers) => viewers,
        None => next_presence_pinging(&mut alive, S).await,
    };
    assert_eq!(joined, list(&["op1", "sup"]));
    // The silent one goes, not before the idle timeout, and not long after it.
    let left = match seen.next() {
        Some(viewers) => viewers,
        None => next_presence_pinging(&mut alive, S).await,
    };
    let took = since.elapsed();
    assert_eq!(left, list(&["op1"]));
    assert!(
        took >= IDLE,
        "dropped after {took:?}, before the idle timeout"
    );
    assert!(
        took < IDLE + Duration::from_secs(5),
        "dropped only after {took:?}"
    );
    assert_eq!(seen.next(), None, "no more presence changes");
    // Its connection is gone too (and `opened`'s); `alive`'s is the one left.
    let (_, more) = while_pinging(&mut alive, S, server.wait_connections(1)).await;
    assert!(more.is_empty(), "no more presence changes: {more:?}");
    alive.ping().await;
    drop(silent);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_keeps_no_presence() {
    let server = TestServer::start().await;
    let mut a = viewer(&server, "op1", Role::Operator, None).await;
    let mut b = viewer(&server, "op2", Role::Operator, None).await;
    for c in [&mut a, &mut b] {
        let f = c.subscribe("catalog", None).await;
        assert!(matches!(f, ServerFrame::Subscribed { .. }), "{f:?}");
    }
    let frames = drain(&mut a).await;
    assert!(
        frames
            .iter()
            .all(|f| matches!(f, ServerFrame::Snapshot { .. })),
        "{frames:?}"
    );
    activity(&mut a, "catalog", "editing").await;
    let (code, field, _) = error_parts(&a.recv().await);
    assert_eq!(code, "invalid");
    assert_eq!(field.as_deref(), Some("stream"));
    let frames = drain(&mut b).await;
    assert!(
        frames
            .iter()
            .all(|f| matches!(f, ServerFrame::Snapshot { .. })),
        "{frames:?}"
    );
    server.stop().await;
}

// ---- activity --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_reaches_the_other_viewers_only() {
    let server = TestServer::start().await;
    opened(&server, "s1", "op1").await;
    opened(&server, "s2", "op1").await;
    let mut op1 = viewer(&server, "op1", Role::Operator, None).await;
    let mut sup = viewer(&server, "sup", Role::Supervisor, None).await;
    let mut other = viewer(&server, "sup2", Role::Supervisor, None).await;
    join(&mut op1, S).await;
    join(&mut sup, S).await;
    join(&mut other, "session/s2").await;
    next_presence(&mut op1, S).await;
    activity(&mut op1, S, "typing in notes").await;
    match sup.recv().await {
        ServerFrame::Activity {
            stream,
            operator,
            what,
        } => {
            assert_eq!(stream.as_str(), S);
            assert_eq!(operator, "op1");
            assert_eq!(what, "typing in notes");
        }
        other => panic!("expected activity, got {other:?}"),
    }
    // No reply to the sender, and nothing to a viewer of another session.
    assert!(until_pong(&mut op1).await.is_empty());
    other.assert_quiet().await;
    // Once unsubscribed, sup neither gets hints nor may send them.
    sup.request(json!({"type": "unsubscribe", "stream": S}))
        .await;
    next_presence(&mut op1, S).await;
    activity(&mut op1, S, "typing").await;
    assert!(drain(&mut sup).await.is_empty());
    activity(&mut sup, S, "typing").await;
    let f = sup.recv().await;
    let (code, field, message) = error_parts(&f);
    assert_eq!(code, "not_found");
    assert_eq!(field.as_deref(), Some("stream"));
    assert_eq!(message, "not subscribed to session/s1");
    assert!(matches!(f, ServerFrame::Error { id: None, .. }));
    assert!(until_pong(&mut op1).await.is_empty(), "nothing relayed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_hints_are_checked() {
    let server = TestServer::start().await;
    opened(&server, "s1", "op1").await;
    let mut op1 = viewer(&server, "op1", Role::Operator, None).await;
    let mut sup = viewer(&server, "sup", Role::Supervisor, None).await;
    join(&mut op1, S).await;
    join(&mut sup, S).await;
    next_presence(&mut op1, S).await;
    for (what, code, message) in [
        ("", "invalid", "what is empty".to_string()),
        (
            &"x".repeat(65)[..],
            "too_large",
            "what is 65 characters; the limit is 64".to_string(),
        ),
        (
            "tab\there",
            "invalid",
            "what contains the control character '\\t'".to_string(),
        ),
    ] {
        activity(&mut op1, S, what).await;
        let (c, field, m) = error_parts(&op1.recv().await);
        assert_eq!((c.as_str(), field.as_deref()), (code, Some("what")));
        assert_eq!(m, message);
    }
    // 64 characters (not bytes) is fine.
    activity(&mut op1, S, &"č".repeat(64)).await;
    assert!(until_pong(&mut op1).await.is_empty());
    match sup.recv().await {
        ServerFrame::Activity { what, .. } => assert_eq!(what.chars().count(), 64),
        other => panic!("expected activity, got {other:?}"),
    }
    // The connection goes on.
    op1.ping().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_is_rate_limited_per_connection() {
    let server = TestServer::start().await;
    opened(&server, "s1", "op1").await;
    let mut op1 = viewer(&server, "op1", Role::Operator, None).await;
    let mut sup = viewer(&server, "sup", Role::Supervisor, None).await;
    join(&mut op1, S).await;
    join(&mut sup, S).await;
    next_presence(&mut op1, S).await;
    // Far more than the burst (10) plus what the bucket refills (5/s) in the time the server
    // takes to read them, even on a slow machine.
    const SENT: usize = 60;
    let started = Instant::now();
    for i in 0..SENT {
        activity(&mut op1, S, &format!("typing {i}")).await;
    }
    let refused = until_pong(&mut op1).await;
    let took = started.elapsed();
    for f in &refused {
        let (code, field, message) = error_parts(f);
        assert_eq!(code, "rate_limited");
        assert_eq!(field, None);
        assert!(message.contains("activity hints per second"), "{message}");
    }
    // The burst of 10 is accepted; beyond it, no more than the bucket refilled (5/s) while
    // the server read the hints, all within `took`; and so some are refused.
    let accepted = SENT - refused.len();
    assert!(accepted >= 10, "only {accepted} accepted, the burst is 10");
    assert!(
        accepted as f64 <= 10.0 + 5.0 * took.as_secs_f64(),
        "{accepted} accepted in {took:?}: more than a burst of 10 and 5/s"
    );
    assert!(!refused.is_empty(), "none refused in {took:?}");
    // The relayed hints are in `sup`'s queue before `op1`'s pong, so before `sup`'s ping is
    // read: they all come before its pong.
    let relayed = until_pong(&mut sup).await;
    assert_eq!(relayed.len(), accepted, "{relayed:?}");
    assert!(relayed
        .iter()
        .all(|f| matches!(f, ServerFrame::Activity { .. })));
    // Commands have their own budget: typing did not use it up.
    ack_seq(
        &op1.command(S, "t", json!({"kind": "add_tag", "tag": "x"}))
            .await,
    );
    // And the bucket refills: after a pause, hints flow again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    activity(&mut op1, S, "back").await;
    let late = until_pong(&mut op1).await;
    assert!(
        !late.iter().any(|f| matches!(f, ServerFrame::Error { .. })),
        "{late:?}"
    );
    let got = sup
        .recv_until(|f| matches!(f, ServerFrame::Activity { .. }))
        .await;
    assert!(matches!(got, ServerFrame::Activity { what, .. } if what == "back"));
    server.stop().await;
}

// ---- full queues -----------------------------------------------------------------------------

/// Each event carries a parameter value this long, so a few hundred overflow any socket buffer.
const VALUE_CHARS: usize = 15_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_dropped_on_a_full_queue_is_sent_after_catching_up() {
    let server = TestServer::start_with(|c| {
        c.edge.outbound_queue = 8;
        c.edge.command_burst = 1000.0;
        c.edge.commands_per_sec = 10_000.0;
        // The slow viewer answers no pings while it does not read; keep a slow machine from
        // closing it as idle (20 s by default) before it reads again.
        c.edge.idle_timeout = Duration::from_secs(300);
        c.limits.parameter_value_chars = VALUE_CHARS;
    })
    .await;
    opened(&server, "s1", "op1").await;
    // A viewer with a tiny receive buffer stops reading while big events pile up: its socket
    // blocks, its queue fills, its subscription falls back to the log.
    let mut claims = server.claims("sup1", Role::Supervisor);
    claims.name = None;
    let token = server.mint(&claims);
    let mut slow = Client::connect_small_buffer(&server.url(), &token, Encoding::Json, 4096).await;
    slow.ambient = true;
    assert_eq!(join(&mut slow, S).await, list(&["sup1"]));
    let mut w = server.client("op1", Role::Operator).await;
    let value = "v".repeat(VALUE_CHARS);
    let mut reqs = Vec::new();
    for i in 0..300 {
        let cmd = json!({"kind": "set_parameter", "key": format!("k{}", i % 50), "value": &value});
        reqs.push(w.send_command(S, &format!("w{i}"), cmd).await);
    }
    for id in reqs {
        assert!(matches!(w.recv().await, ServerFrame::Ack { id: Some(got), .. } if got == id));
    }
    // Wait until the hub gave up on the slow subscription (only then is its queue surely
    // full and staying so).
    let deadline = Instant::now() + WAIT;
    while server.healthz().await["subscriptions"].as_u64() != Some(0) {
        assert!(
            Instant::now() < deadline,
            "the slow subscription never lagged"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Another viewer joins now: its presence cannot be queued for the slow one.
    let mut fast = viewer(&server, "sup2", Role::Supervisor, None).await;
    assert_eq!(join(&mut fast, S).await, list(&["sup1", "sup2"]));
    // The slow one reads again: every event, then the current presence.
    let mut events = 0;
    let seen = loop {
        match slow.recv().await {
            ServerFrame::Event(_) => events += 1,
            ServerFrame::Presence { viewers, .. } if viewers.len() == 2 => break ids(&viewers),
            ServerFrame::Presence { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(seen, list(&["sup1", "sup2"]));
    assert!(events > 0);
    server.stop().await;
}

/// The hub itself: a full queue drops the presence frame and flags the connection.
#[test]
fn the_hub_flags_a_full_queue_instead_of_waiting() {
    let hub = Hub::new();
    let id = StreamId::new(Arc::from("acme"), StreamName::session("s1").unwrap());
    let watcher = |conn: u64, who: &str, queue: usize| {
        let (tx, rx) = tokio::sync::mpsc::channel::<Outbound>(queue);
        let lag = Arc::new(LagSignal::default());
        let w = Watcher {
            conn,
            principal: Arc::new(Principal {
                id: who.into(),
                role: Role::Operator,
                groups: Vec::new(),
            }),
            name: None,
            tx,
            lag: lag.clone(),
        };
        (w, rx, lag)
    };
    let (a, mut a_rx, a_lag) = watcher(1, "op1", 1);
    let (b, mut b_rx, b_lag) = watcher(2, "op2", 8);
    hub.join(&id, a);
    // a's queue (1) now holds its own presence; b's join finds it full.
    hub.join(&id, b);
    assert_eq!(a_lag.take_presence(), vec![id.clone()]);
    assert!(b_lag.take_presence().is_empty());
    let first = match a_rx.try_recv() {
        Ok(Outbound::Frame(f)) => f,
        other => panic!("expected a frame, got {other:?}"),
    };
    assert!(matches!(&first.frame, ServerFrame::Presence { viewers, .. } if viewers.len() == 1));
    assert!(a_rx.try_recv().is_err(), "the second presence was dropped");
    match b_rx.try_recv() {
        Ok(Outbound::Frame(f)) => {
            assert!(matches!(&f.frame, ServerFrame::Presence { viewers, .. } if viewers.len() == 2))
        }
        other => panic!("expected a frame, got {other:?}"),
    }
    // What the flagged connection sends later: the current list.
    assert_eq!(ids(&hub.presence(&id)), list(&["op1", "op2"]));
    // Leaving tells the rest; activity skips the sender and drops on a full queue.
    hub.leave(&id, 1);
    match b_rx.try_recv() {
        Ok(Outbound::Frame(f)) => {
            assert!(
                matches!(&f.frame, ServerFrame::Presence { viewers, .. } if ids(viewers) == list(&["op2"]))
            )
        }
        other => panic!("expected a frame, got {other:?}"),
    }
    hub.relay(&id, "op2", "typing");
    assert!(b_rx.try_recv().is_err(), "not relayed to the sender");
}
