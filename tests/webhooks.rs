//! Webhooks: registered endpoints receive full, signed change events in order, retried until
//! acknowledged, with the delivery position surviving a restart. A real receiver on 127.0.0.1.
mod support;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use copanel_protocol::Role;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

const SECRET: &str = "a-webhook-secret-of-some-length";

#[derive(Default)]
struct Receiver {
    /// (delivery id, body) of every acknowledged delivery, in arrival order.
    got: Mutex<Vec<(String, Value)>>,
    /// Attempts answered 500 before the receiver starts acknowledging.
    fail_first: AtomicUsize,
    attempts: AtomicUsize,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let n = r.attempts.fetch_add(1, Ordering::SeqCst);
    if n < r.fail_first.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let sig = headers["x-copanel-signature"].to_str().unwrap().to_owned();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sig, format!("sha256={hex}"), "valid HMAC");
    let delivery = headers["x-copanel-delivery"].to_str().unwrap().to_owned();
    let v: Value = serde_json::from_slice(&body).unwrap();
    r.got.lock().unwrap().push((delivery, v));
    StatusCode::OK
}

async fn receiver(fail_first: usize) -> (String, Arc<Receiver>) {
    let r = Arc::new(Receiver::default());
    r.fail_first.store(fail_first, Ordering::SeqCst);
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(r.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, r)
}

async fn post(server: &TestServer, token: &str, body: Value) -> (u16, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::post(format!("http://{}/api/v1/webhooks", server.addr))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("connection", "close")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn fast(c: &mut copanel::server::Config) {
    c.webhooks.backoff_min = Duration::from_millis(10);
    c.webhooks.backoff_max = Duration::from_millis(80);
    c.webhooks.poll_interval = Duration::from_millis(100);
}

async fn register(server: &TestServer, url: &str, kinds: Value) -> String {
    let token = server.token("platform", Role::Service);
    let (status, body) = post(
        server,
        &token,
        json!({"url": url, "kinds": kinds, "secret": SECRET}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["webhook_id"].as_str().unwrap().to_owned()
}

/// Waits until the receiver holds `n` deliveries of `stream` (panics after [`WAIT`]).
async fn wait_for(r: &Receiver, stream: &str, n: usize) -> Vec<(String, Value)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = r.got.lock().unwrap().clone();
        if seqs_of(&got, stream).len() >= n {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} deliveries",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the receiver holds `n` deliveries in all, whatever their streams (panics after
/// [`WAIT`]).
async fn wait_for_all(r: &Receiver, n: usize) -> Vec<(String, Value)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = r.got.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} deliveries: {got:?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The delivery positions of acme's webhooks (`GET /api/v1/webhooks`).
async fn positions(server: &TestServer) -> Vec<u64> {
    let auth = format!("Bearer {}", server.token("platform", Role::Service));
    let (status, _, body) = http_request(
        server.addr,
        "GET",
        "/api/v1/webhooks",
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["webhooks"]
        .as_array()
        .expect("a list of webhooks")
        .iter()
        .map(|w| w["position"].as_u64().expect("a position"))
        .collect()
}

/// Waits until acme's only webhook has stored a delivery position of at least `oseq` (panics
/// after [`WAIT`]).
async fn wait_position(server: &TestServer, oseq: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let p = positions(server).await;
        if p.len() == 1 && p[0] >= oseq {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "positions {p:?}, not [{oseq}]"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The seqs delivered for `stream`, in arrival order (other streams' events interleave).
fn seqs_of(got: &[(String, Value)], stream: &str) -> Vec<u64> {
    got.iter()
        .filter(|(_, e)| e["stream"] == stream)
        .map(|(_, e)| e["seq"].as_u64().unwrap())
        .collect()
}

/// No delivery id was acknowledged twice.
fn assert_unique(got: &[(String, Value)]) {
    let mut ids: Vec<&str> = got.iter().map(|(d, _)| d.as_str()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a delivery was sent twice: {got:?}");
}

async fn tag(c: &mut support::Client, s: &str, id: &str, t: &str) {
    let f = c.command(s, id, json!({"kind": "add_tag", "tag": t})).await;
    assert!(format!("{f:?}").contains("Ack"), "{f:?}");
}

#[tokio::test]
async fn full_signed_events_in_order_only_requested_kinds() {
    let server = TestServer::start_with(fast).await;
    let (url, rx) = receiver(0).await;
    let (all_url, all) = receiver(0).await;
    register(&server, &url, json!(["tag_added"])).await;
    register(&server, &all_url, json!([])).await;
    opened(&server, "s1", "alice").await;
    let mut alice = server.client("alice", Role::Operator).await;
    for i in 0..5 {
        tag(
            &mut alice,
            "session/s1",
            &format!("t{i}"),
            &format!("tag{i}"),
        )
        .await;
    }
    let got = wait_for(&rx, "session/s1", 5).await;
    for (i, (_, env)) in got.iter().enumerate() {
        assert_eq!(env["stream"], "session/s1");
        assert_eq!(env["seq"], i as u64 + 2, "stream order");
        assert_eq!(env["event"]["kind"], "tag_added");
        assert_eq!(env["event"]["tag"], format!("tag{i}"));
        assert_eq!(env["command_id"], format!("t{i}"));
        assert!(
            env["at"].as_u64().unwrap() > 0 && env["actor"].is_object(),
            "{env}"
        );
    }
    let every = wait_for(&all, "session/s1", 6).await;
    let first = every
        .iter()
        .find(|(_, e)| e["stream"] == "session/s1")
        .unwrap();
    assert_eq!(first.1["event"]["kind"], "session_opened");
    assert_eq!(seqs_of(&every, "session/s1"), (1..=6).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.got.lock().unwrap().len(), 5, "nothing else delivered");

    // Bad registrations.
    let token = server.token("platform", Role::Service);
    let (s, b) = post(
        &server,
        &token,
        json!({"url": "https://x/y", "secret": SECRET}),
    )
    .await;
    assert_eq!((s, b["field"].as_str()), (400, Some("url")), "{b}");
    let (s, b) = post(
        &server,
        &token,
        json!({"url": url, "kinds": ["nope"], "secret": SECRET}),
    )
    .await;
    assert_eq!((s, b["field"].as_str()), (400, Some("kinds")), "{b}");
    let op = server.token("bob", Role::Operator);
    let (s, _) = post(&server, &op, json!({"url": url, "secret": SECRET})).await;
    assert_eq!(s, 403);
    server.stop().await;
}

#[tokio::test]
async fn failing_receiver_gets_everything_once_in_order() {
    let server = TestServer::start_with(fast).await;
    let (url, rx) = receiver(4).await;
    register(&server, &url, json!([])).await;
    opened(&server, "s2", "alice").await;
    let mut alice = server.client("alice", Role::Operator).await;
    for i in 0..3 {
        tag(&mut alice, "session/s2", &format!("t{i}"), &format!("x{i}")).await;
    }
    // Each new tag also defines it in the company's catalog, after the session's event: the
    // outbox holds 7 records, so wait for the last stream to be complete before the quiet check.
    wait_for(&rx, "session/s2", 4).await;
    let got = wait_for(&rx, "catalog", 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got2 = rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 7, "{got:?}");
    assert_eq!(got2.len(), 7, "nothing more after the outbox: {got2:?}");
    assert_eq!(
        seqs_of(&got2, "session/s2"),
        vec![1, 2, 3, 4],
        "each once, in order"
    );
    assert_eq!(
        seqs_of(&got2, "catalog"),
        vec![1, 2, 3],
        "each once, in order"
    );
    let ids: Vec<&str> = got2.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(
        ids,
        (1..=7).map(|i| format!("acme:{i}")).collect::<Vec<_>>(),
        "outbox order"
    );
    assert_unique(&got2);
    assert!(
        rx.attempts.load(Ordering::SeqCst) >= 8,
        "retried after failures"
    );
    server.stop().await;
}

#[tokio::test]
async fn restart_delivers_pending_without_resending() {
    let server = TestServer::start_with(fast).await;
    let (url, rx) = receiver(0).await;
    register(&server, &url, json!([])).await;
    opened(&server, "s3", "alice").await;
    wait_for(&rx, "session/s3", 1).await;
    // The receiver now refuses everything: the next events stay pending across the restart.
    rx.fail_first.store(usize::MAX, Ordering::SeqCst);
    // What it acknowledged until now has its position stored, so none of it is in flight (to
    // be sent again) at the stop. (The receiver runs on this thread: none is half-answered.)
    let acknowledged = rx.got.lock().unwrap().len() as u64;
    wait_position(&server, acknowledged).await;
    let mut alice = server.client("alice", Role::Operator).await;
    for i in 0..3 {
        tag(&mut alice, "session/s3", &format!("t{i}"), &format!("y{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(alice);
    let dir = server.stop().await;
    assert_eq!(seqs_of(&rx.got.lock().unwrap(), "session/s3"), vec![1]);
    rx.fail_first.store(0, Ordering::SeqCst);
    let server = TestServer::start_in(dir, fast).await;
    let got = wait_for(&rx, "session/s3", 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = rx.got.lock().unwrap().clone();
    assert_unique(&all);
    let seqs = seqs_of(&all, "session/s3");
    assert_eq!(
        seqs,
        vec![1, 2, 3, 4],
        "pending delivered once, delivered not re-sent: {got:?}"
    );
    server.stop().await;
}

/// The outbox sequences a company holds, read from the stopped server's data dir.
fn outbox(dir: &std::path::Path, company: &str) -> Vec<u64> {
    use copanel::store::{IndexKind, Store};
    let store = copanel::store::sled_store::SledStore::open(dir).expect("store opens");
    store
        .index_scan(company, IndexKind::Outbox)
        .expect("outbox scan")
        .into_iter()
        .map(|(k, _)| k.parse().expect("an outbox sequence"))
        .collect()
}

#[tokio::test]
async fn the_outbox_is_trimmed_behind_the_slowest_webhook() {
    let trimmed = |c: &mut copanel::server::Config| {
        fast(c);
        c.webhooks.trim_interval = Duration::from_millis(50);
    };
    let server = TestServer::start_with(trimmed).await;
    let (url, rx) = receiver(usize::MAX).await;
    register(&server, &url, json!([])).await;
    opened(&server, "s4", "alice").await;
    let mut alice = server.client("alice", Role::Operator).await;
    for i in 0..5 {
        tag(&mut alice, "session/s4", &format!("t{i}"), &format!("z{i}")).await;
    }
    // Another company with no webhook: its outbox is of no use to anyone.
    let other = server.token_for("globex", "platform", Role::Service, &[]);
    let mut svc = server
        .connect(&other, copanel_protocol::Encoding::Json)
        .await;
    for i in 0..4 {
        let f = svc
            .command(
                &format!("session/g{i}"),
                &format!("g{i}"),
                open_session("bob"),
            )
            .await;
        assert_eq!(ack_seq(&f), 1);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    drop((alice, svc));
    let dir = server.stop().await;
    // Nothing was delivered, so acme keeps every record (the session's six events and the
    // operator feeds'); globex, without a webhook, never wrote one.
    assert!(rx.got.lock().unwrap().is_empty());
    let acme = outbox(dir.path(), "acme");
    let n = acme.len() as u64;
    assert!(n >= 6, "{acme:?}");
    assert_eq!(acme, (1..=n).collect::<Vec<_>>());
    let globex = outbox(dir.path(), "globex");
    assert!(globex.is_empty(), "{globex:?}");

    // The receiver recovers: everything is delivered, in order, then the outbox shrinks. The
    // webhook takes every kind, so it gets all n records: the session's events and, after them,
    // what they caused elsewhere (each new tag is defined in the company's `catalog`).
    rx.fail_first.store(0, Ordering::SeqCst);
    let mut server = TestServer::start_in(dir, trimmed).await;
    let got = wait_for_all(&rx, n as usize).await;
    assert_eq!(seqs_of(&got, "session/s4"), vec![1, 2, 3, 4, 5, 6]);
    let ids: Vec<&str> = got.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(
        ids,
        (1..=n).map(|i| format!("acme:{i}")).collect::<Vec<_>>(),
        "outbox order, each once"
    );
    // The server has stored its position past all of them, so none is in flight (to be sent
    // again) when it stops.
    wait_position(&server, n).await;
    // The outbox can only be read with the server stopped: give the trimmer (every 50 ms)
    // a moment, look, and if it has not run yet, start again and give it another.
    let deadline = tokio::time::Instant::now() + WAIT;
    let dir = loop {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let dir = server.stop().await;
        if outbox(dir.path(), "acme") == vec![n] || tokio::time::Instant::now() > deadline {
            break dir;
        }
        server = TestServer::start_in(dir, trimmed).await;
    };
    assert_eq!(
        outbox(dir.path(), "acme"),
        vec![n],
        "all delivered: only the head stays"
    );
    assert_eq!(rx.got.lock().unwrap().len(), n as usize, "nothing re-sent");

    // And a new event after the trim still reaches the webhook (oseqs go on from the head).
    let server = TestServer::start_in(dir, trimmed).await;
    let mut alice = server.client("alice", Role::Operator).await;
    tag(&mut alice, "session/s4", "t-late", "late").await;
    let got = wait_for(&rx, "session/s4", 7).await;
    assert_eq!(seqs_of(&got, "session/s4"), vec![1, 2, 3, 4, 5, 6, 7]);
    assert_unique(&got);
    drop(alice);
    server.stop().await;
}

/// A company gets outbox records only once it has a webhook, so a registration races the
/// writer: every event committed after the registration answered must still be delivered,
/// and the deliveries are one gapless run up to the last event. (The race itself is a window
/// of microseconds, between the writer reading whether the company is armed and appending;
/// the registration's barrier through the writer closes it. This checks the property under
/// load, not that window.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_registered_while_commands_flow_gets_every_later_event() {
    let server = TestServer::start_with(|c| {
        fast(c);
        c.edge.commands_per_sec = 100_000.0;
        c.edge.command_burst = 100_000.0;
    })
    .await;
    let (url, rx) = receiver(0).await;
    opened(&server, "race", "alice").await;
    let s = "session/race";
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let mut c = server.client("alice", Role::Operator).await;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 2000 {
                let f = c
                    .command(
                        s,
                        &format!("w{w}-{n}"),
                        json!({"kind": "set_parameter", "key": format!("k{w}"), "value": format!("v{n}")}),
                    )
                    .await;
                assert!(format!("{f:?}").contains("Ack"), "{f:?}");
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    register(&server, &url, json!([])).await;
    let mut reader = server.client("alice", Role::Operator).await;
    let head_after = reader.head(s).await;
    // Commands go on flowing after the registration answered: at least ten more commits.
    let deadline = tokio::time::Instant::now() + WAIT;
    while reader.head(s).await <= head_after + 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "commands stopped flowing after {head_after}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let last = reader.head(s).await;
    assert!(
        last > head_after + 10,
        "commands kept flowing: {head_after} then {last}"
    );
    wait_for(&rx, s, 1).await;
    // Every delivery up to the last event, however many: fails only if they stop coming.
    let mut deadline = tokio::time::Instant::now() + WAIT;
    let mut delivered = 0;
    let got = loop {
        let got = rx.got.lock().unwrap().clone();
        if seqs_of(&got, s).last() == Some(&last) {
            break got;
        }
        if got.len() > delivered {
            delivered = got.len();
            deadline = tokio::time::Instant::now() + WAIT;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries stopped before the last event {last}: {:?}",
            seqs_of(&got, s).last()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seqs = seqs_of(&got, s);
    let first = *seqs.first().unwrap();
    assert!(first <= head_after + 1, "event {} committed after the registration answered was not delivered (first delivered {first})", head_after + 1);
    assert_eq!(seqs, (first..=last).collect::<Vec<_>>(), "one gapless run");
    assert_unique(&got);
    drop(reader);
    server.stop().await;
}
