//! The crash-loop harness: the real `copanel` binary, SIGKILLed at random moments under load
//! (PRODUCT.md §2, guarantees 1, 3, 4 and 7). Used by `tests/crash.rs` (a short CI run) and
//! `examples/crashloop.rs` (a long run with flags); both include this file with `#[path]`.
//!
//! Each round starts `copanel serve` as a child process on the same temp data dir (default
//! durability `sync`), runs concurrent writers over WebSockets, each on its own share of MANY
//! long-lived sessions, that record every ack; `SIGKILL`s the child after a seeded random number
//! of acks plus a seeded random delay while commands are in flight; restarts it and checks, for
//! everything acknowledged in every round so far:
//! - the acked event is in the history at the acked seq, with the acked `command_id`;
//! - every stream's history is gapless `1..=head`, decodable, holds each `command_id` once and
//!   nothing the harness did not send;
//! - `state_at(head)` equals a fresh snapshot, and both equal a local fold of the history;
//! - re-sending acked commands gets the original ack (same seq, same `created`) and appends
//!   nothing (heads unchanged);
//! - re-sending a command whose outcome was unknown at the kill resolves it: the seq it already
//!   had in the log, or a fresh append if it never got there.
//!
//! A violation panics with a message naming the stream, command id and seq. The children are
//! killed by their own handle (also on a panic: see [`ServerProcess`]'s `Drop`).

use crate::support::Client;
use copanel::auth::{now_secs, Auth, Claims};
use copanel_protocol::codec::decode_server;
use copanel_protocol::{Encoding, Envelope, Role, ServerFrame, StreamName, StreamState};
use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "crash-test-secret-0123456789abcdef";
/// Commands a writer keeps in flight.
const WINDOW: usize = 16;
/// Notes sent to one session, at most (the server allows 500 a session); beyond it the
/// writers send `set_parameter` there instead.
const MAX_NOTES: usize = 450;
/// The writers pace themselves at this share of the server's rate limit (which the harness
/// sets with a config file: `LoopConfig::rate` commands/s, burst twice that).
const PACE_SHARE: f64 = 0.9;
/// Commands re-sent per connection during verification (under the burst of 100).
const RESEND_CHUNK: usize = 90;
/// How long the server gets to accept connections.
const READY: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The child process.
// ---------------------------------------------------------------------------------------------

/// A running `copanel serve`. Dropping it kills the child (by its handle) and reaps it, so a
/// failing assertion never leaves a server behind.
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- server log {} (tail) ---", self.log.display());
            eprintln!("{}", log_tail(&self.log, 40));
        }
    }
}

impl ServerProcess {
    /// Starts the binary on `data` and waits until `/healthz` answers 200.
    pub async fn start(
        bin: &Path,
        data: &Path,
        logs: &Path,
        name: &str,
        rate: f64,
    ) -> ServerProcess {
        Self::start_with_limits(bin, data, logs, name, rate, "").await
    }

    /// [`ServerProcess::start`] with more `[limits]` keys: `extra_limits` is TOML lines, e.g.
    /// `"idle_timeout_secs = 300\n"`.
    pub async fn start_with_limits(
        bin: &Path,
        data: &Path,
        logs: &Path,
        name: &str,
        rate: f64,
        extra_limits: &str,
    ) -> ServerProcess {
        let config = logs.join("copanel.toml");
        std::fs::write(
            &config,
            format!(
                "[limits]\ncommands_per_sec = {rate:.1}\ncommand_burst = {:.1}\n{extra_limits}",
                2.0 * rate
            ),
        )
        .expect("config file");
        let mut last_err = String::new();
        // The free port is found by binding and releasing it; another process could take it in
        // between, so a start that dies early is retried on a new port (bounded).
        for attempt in 0..3 {
            let port = free_port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let log = logs.join(format!("{name}-{attempt}.log"));
            let out = std::fs::File::create(&log).expect("log file");
            let err = out.try_clone().expect("log file");
            let child = Command::new(bin)
                .arg("serve")
                .arg("--config")
                .arg(&config)
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--data")
                .arg(data)
                .arg("--secret")
                .arg(SECRET)
                .env("RUST_LOG", "info")
                .env_remove("COPANEL_DURABILITY")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("spawn copanel");
            let mut server = ServerProcess { child, addr, log };
            match server.wait_ready().await {
                Ok(()) => return server,
                Err(e) => {
                    last_err = format!("{e}\n{}", log_tail(&server.log, 20));
                    // Dropping kills and reaps it.
                }
            }
        }
        panic!("copanel did not start: {last_err}");
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("copanel exited early: {status}"));
            }
            if healthz(self.addr).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no 200 from /healthz on {} within {READY:?}",
                    self.addr
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `kill -9` (std's `Child::kill` sends SIGKILL on Unix) and reap.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill the child");
        let status = self.child.wait().expect("reap the child");
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(9), "the child died of SIGKILL");
        }
        #[cfg(not(unix))]
        let _ = status;
    }

    /// The child's process id (the server itself: it is spawned directly, not through a shell).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// One bounded `GET /healthz`; true on a 200.
async fn healthz(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(buf.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(true))
    )
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A token of company `acme` signed with the harness's secret, valid for an hour.
pub fn token(sub: &str, role: Role) -> String {
    Auth::new(SECRET.as_bytes())
        .mint(&Claims {
            sub: sub.into(),
            company: "acme".into(),
            role,
            name: None,
            groups: Vec::new(),
            exp: now_secs() + 3600,
        })
        .expect("mint")
}

// ---------------------------------------------------------------------------------------------
// Writers.
// ---------------------------------------------------------------------------------------------

/// A command as sent.
#[derive(Debug, Clone)]
struct Sent {
    stream: String,
    command_id: String,
    command: Value,
}

/// A command the server acknowledged.
#[derive(Debug, Clone)]
struct Acked {
    sent: Sent,
    seq: u64,
    created: Option<String>,
}

#[derive(Default)]
struct WriterOut {
    acked: Vec<Acked>,
    /// Sent (or being sent) when the server died: outcome unknown.
    unknown: Vec<Sent>,
    rate_limited: usize,
    /// Error frames other than `rate_limited`: none are expected.
    errors: Vec<String>,
}

fn open_command(owner: &str) -> Value {
    json!({"kind": "open_session", "channel": "chat",
        "client": {"name": "Crash Test", "phone": "+420 777 000 111", "email": "crash@example.com"},
        "owner": {"operator_id": owner}})
}

/// Opens (or, from the second round on, idempotently re-opens) a session; the ack is seq 1.
async fn open(c: &mut Client, stream: &str, command_id: &str, owner: &str) -> Acked {
    let command = open_command(owner);
    let f = c.command(stream, command_id, command.clone()).await;
    match f {
        ServerFrame::Ack { seq, created, .. } => {
            assert_eq!(seq, 1, "{stream}: open_session acked at seq 1");
            Acked {
                sent: Sent {
                    stream: stream.into(),
                    command_id: command_id.into(),
                    command,
                },
                seq,
                created,
            }
        }
        other => panic!("{stream}: open_session refused: {other:?}"),
    }
}

/// A client-side token bucket that keeps a connection under the server's rate limit.
struct Pace {
    tokens: f64,
    at: Instant,
    per_sec: f64,
    burst: f64,
}

impl Pace {
    fn new(rate: f64) -> Self {
        let burst = (2.0 * rate * PACE_SHARE).max(1.0);
        Pace {
            tokens: burst,
            at: Instant::now(),
            per_sec: rate * PACE_SHARE,
            burst,
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.per_sec)
            .min(self.burst);
        self.at = now;
    }

    fn take(&mut self) -> bool {
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn until_next(&mut self) -> Duration {
        self.refill();
        Duration::from_secs_f64(((1.0 - self.tokens) / self.per_sec).max(0.001))
    }
}

fn encode(enc: Encoding, frame: &Value) -> Message {
    match enc {
        Encoding::Json => Message::Text(frame.to_string().into()),
        Encoding::Msgpack => Message::Binary(rmp_serde::to_vec_named(frame).unwrap().into()),
    }
}

/// One writer's share of the work in a round.
struct WriterJob {
    url: String,
    round: usize,
    w: usize,
    /// The sessions it writes to (its share of all of them), with the notes sent to each so far.
    sessions: Vec<(String, usize)>,
    max_commands: usize,
    rate: f64,
    acks: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    /// Writers done opening their sessions: the harness kills only after all are.
    opened: Arc<AtomicUsize>,
}

/// One writer: its own connection (service token), its own sessions (kept across rounds and
/// opened idempotently at each round's start). Pipelines `add_note` and `set_parameter`
/// round-robin over its sessions until the socket dies (the kill) or it has sent
/// `max_commands`. Returns its results and the sessions with updated note counts.
async fn writer(job: WriterJob) -> (WriterOut, Vec<(String, usize)>) {
    let WriterJob {
        url,
        round,
        w,
        mut sessions,
        max_commands,
        rate,
        acks,
        in_flight,
        opened,
    } = job;
    let enc = if w % 2 == 0 {
        Encoding::Json
    } else {
        Encoding::Msgpack
    };
    let mut out = WriterOut::default();
    let mut c = Client::connect(&url, &token("platform", Role::Service), enc).await;
    let owner = format!("op{w}");
    let mut pace = Pace::new(rate);
    for (stream, _) in &sessions {
        while !pace.take() {
            tokio::time::sleep(pace.until_next()).await;
        }
        let id = format!("open-{}", stream.trim_start_matches("session/"));
        out.acked.push(open(&mut c, stream, &id, &owner).await);
        acks.fetch_add(1, Ordering::SeqCst);
    }
    opened.fetch_add(1, Ordering::SeqCst);

    let (mut sink, mut stream) = c.ws.split();
    let mut inflight: HashMap<u64, Sent> = HashMap::new();
    let mut next_id: u64 = 1_000;
    let mut i = 0usize;
    'run: loop {
        let mut fed = false;
        while inflight.len() < WINDOW && i < max_commands && pace.take() {
            let n = sessions.len();
            let (stream_name, notes) = &mut sessions[i % n];
            let command = if (i / n) % 2 == 0 && *notes < MAX_NOTES {
                *notes += 1;
                json!({"kind": "add_note", "text": format!("note r{round} w{w} #{i}")})
            } else {
                json!({"kind": "set_parameter", "key": format!("k{}", (i / 4) % 40),
                    "value": format!("v-r{round}-w{w}-{i}")})
            };
            let sent = Sent {
                stream: stream_name.clone(),
                command_id: format!("r{round}-w{w}-{i}"),
                command,
            };
            next_id += 1;
            let frame = json!({"type": "command", "id": next_id, "stream": sent.stream,
                "command_id": sent.command_id, "command": sent.command});
            // In flight from before the send: a write that fails may still have reached the
            // server, so its outcome is unknown.
            inflight.insert(next_id, sent);
            in_flight.fetch_add(1, Ordering::SeqCst);
            i += 1;
            if sink.feed(encode(enc, &frame)).await.is_err() {
                break 'run;
            }
            fed = true;
        }
        if fed && sink.flush().await.is_err() {
            break;
        }
        if i >= max_commands && inflight.is_empty() {
            break;
        }
        let wait = if inflight.len() < WINDOW && i < max_commands {
            pace.until_next()
        } else {
            Duration::from_secs(5)
        };
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = tokio::time::sleep(wait) => continue,
        };
        let bytes = match msg {
            None | Some(Err(_)) => break,
            Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
            Some(Ok(Message::Binary(b))) => b.to_vec(),
            Some(Ok(Message::Close(_))) => break,
            Some(Ok(_)) => continue,
        };
        let frame = decode_server(enc, &bytes).expect("decodable server frame");
        match frame {
            ServerFrame::Ack {
                id: Some(id),
                stream: s,
                command_id,
                seq,
                created,
            } => {
                let sent = inflight
                    .remove(&id)
                    .expect("an ack for a request in flight");
                in_flight.fetch_sub(1, Ordering::SeqCst);
                assert_eq!(
                    (s.as_str(), command_id.as_str()),
                    (sent.stream.as_str(), sent.command_id.as_str()),
                    "the ack names its command"
                );
                out.acked.push(Acked { sent, seq, created });
                acks.fetch_add(1, Ordering::SeqCst);
            }
            ServerFrame::Error {
                id: Some(id),
                code,
                message,
                ..
            } => {
                let sent = inflight.remove(&id);
                if sent.is_some() {
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                }
                if code == copanel_protocol::ErrorCode::RateLimited {
                    out.rate_limited += 1;
                } else {
                    out.errors.push(format!("{code}: {message} ({sent:?})"));
                }
            }
            _ => {}
        }
    }
    out.unknown = inflight.into_values().collect();
    (out, sessions)
}

// ---------------------------------------------------------------------------------------------
// Verification after a restart.
// ---------------------------------------------------------------------------------------------

struct Verified {
    /// Events in the checked logs (every event of every stream written so far).
    events: usize,
    streams: usize,
    resent: usize,
    resolved_in_log: usize,
    resolved_appended: usize,
}

async fn history(c: &mut Client, stream: &str) -> Vec<Envelope> {
    let mut out: Vec<Envelope> = Vec::new();
    let mut from = 1u64;
    loop {
        let f = c
            .request(json!({"type": "history", "stream": stream, "from": from, "limit": 1000}))
            .await;
        match f {
            ServerFrame::History { events, next, .. } => {
                out.extend(events);
                match next {
                    Some(n) => {
                        assert!(n > from, "{stream}: history's next {n} moves forward");
                        from = n;
                    }
                    None => return out,
                }
            }
            other => panic!("{stream}: history refused: {other:?}"),
        }
    }
}

/// Checks every stream's log and state; returns the logs by stream.
async fn check_logs(
    c: &mut Client,
    streams: &[String],
    sent_ids: &HashSet<(String, String)>,
) -> BTreeMap<String, Vec<Envelope>> {
    let mut logs = BTreeMap::new();
    for stream in streams {
        let events = history(c, stream).await;
        let mut ids = HashSet::new();
        for (i, env) in events.iter().enumerate() {
            assert_eq!(env.seq, i as u64 + 1, "{stream}: gapless history");
            assert_eq!(
                env.stream.as_str(),
                stream,
                "{stream}: event names its stream"
            );
            let cid = env
                .command_id
                .clone()
                .expect("every event carries its command_id");
            assert!(
                sent_ids.contains(&(stream.clone(), cid.clone())),
                "{stream}: event {} has command_id {cid:?}, which this test never sent",
                env.seq
            );
            assert!(
                ids.insert(cid.clone()),
                "{stream}: command_id {cid:?} appended twice"
            );
        }
        let head = events.len() as u64;

        // A fresh snapshot, state_at(head) and a local fold all agree.
        let f = c.subscribe(stream, None).await;
        let ServerFrame::Subscribed { head: sub_head, .. } = f else {
            panic!("{stream}: subscribe refused: {f:?}");
        };
        assert_eq!(
            sub_head, head,
            "{stream}: subscribed head = history's last seq"
        );
        let snap = c
            .recv_until(
                |f| matches!(f, ServerFrame::Snapshot { stream: s, .. } if s.as_str() == stream),
            )
            .await;
        let ServerFrame::Snapshot {
            seq: snap_seq,
            state: snap_state,
            ..
        } = snap
        else {
            unreachable!()
        };
        assert_eq!(snap_seq, head, "{stream}: snapshot at the head");
        let f = c
            .request(json!({"type": "unsubscribe", "stream": stream}))
            .await;
        assert!(matches!(f, ServerFrame::Unsubscribed { .. }), "{f:?}");
        let f = c
            .request(json!({"type": "state_at", "stream": stream, "seq": head}))
            .await;
        let ServerFrame::State { seq, state, .. } = f else {
            panic!("{stream}: state_at refused: {f:?}");
        };
        assert_eq!(seq, head);
        assert_eq!(
            state, snap_state,
            "{stream}: state_at(head) = fresh snapshot"
        );
        let name = StreamName::parse(stream).unwrap();
        let mut folded: StreamState = copanel::domain::initial(name.kind());
        for env in &events {
            copanel::domain::apply(&mut folded, env);
        }
        assert_eq!(
            folded, snap_state,
            "{stream}: snapshot = fold of the history"
        );
        logs.insert(stream.clone(), events);
    }
    logs
}

fn check_acked(logs: &BTreeMap<String, Vec<Envelope>>, acked: &[Acked]) {
    for a in acked {
        let log = &logs[&a.sent.stream];
        let env = a
            .seq
            .checked_sub(1)
            .and_then(|i| log.get(i as usize))
            .unwrap_or_else(|| {
                panic!(
                    "LOST ACKED EVENT: {} {} acked at seq {} but the log ends at {}",
                    a.sent.stream,
                    a.sent.command_id,
                    a.seq,
                    log.len()
                )
            });
        assert_eq!(
            env.command_id.as_deref(),
            Some(a.sent.command_id.as_str()),
            "{}: seq {} holds the acked command",
            a.sent.stream,
            a.seq
        );
        if a.sent.command["kind"] == "add_note" {
            assert_eq!(
                a.created,
                Some(format!("n{}", a.seq)),
                "note id from its seq"
            );
        }
    }
}

/// Sends commands in chunks, one fresh connection per chunk (each connection's rate limit
/// allows a burst of 100), all chunks at once. Returns each command's reply, in order.
async fn resend(url: &str, cmds: &[Sent]) -> Vec<ServerFrame> {
    let mut tasks = Vec::new();
    for (n, chunk) in cmds.chunks(RESEND_CHUNK).enumerate() {
        let url = url.to_owned();
        let chunk = chunk.to_vec();
        let enc = if n % 2 == 0 {
            Encoding::Msgpack
        } else {
            Encoding::Json
        };
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&url, &token("platform", Role::Service), enc).await;
            for (i, s) in chunk.iter().enumerate() {
                c.send(
                    json!({"type": "command", "id": i as u64 + 1, "stream": s.stream,
                    "command_id": s.command_id, "command": s.command}),
                )
                .await;
            }
            let mut replies: Vec<Option<ServerFrame>> = vec![None; chunk.len()];
            for _ in 0..chunk.len() {
                let f = c
                    .recv_until(|f| {
                        matches!(f, ServerFrame::Ack { .. } | ServerFrame::Error { .. })
                    })
                    .await;
                let id = match &f {
                    ServerFrame::Ack { id, .. } | ServerFrame::Error { id, .. } => {
                        id.expect("reply carries the request id")
                    }
                    _ => unreachable!(),
                };
                replies[id as usize - 1] = Some(f);
            }
            replies
                .into_iter()
                .map(|r| r.expect("one reply per command"))
                .collect::<Vec<_>>()
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.extend(t.await.expect("resend task"));
    }
    out
}

fn heads(logs: &BTreeMap<String, Vec<Envelope>>) -> BTreeMap<String, u64> {
    logs.iter()
        .map(|(s, l)| (s.clone(), l.len() as u64))
        .collect()
}

/// Asserts that each stream's head is exactly `want` (the event at the head exists, nothing
/// after it).
async fn assert_heads(c: &mut Client, want: &BTreeMap<String, u64>) {
    for (stream, &head) in want {
        let f = c
            .request(json!({"type": "history", "stream": stream, "from": head + 1, "limit": 10}))
            .await;
        match f {
            ServerFrame::History { events, next, .. } => assert!(
                events.is_empty() && next.is_none(),
                "{stream}: nothing after head {head}, got {:?}",
                events.iter().map(|e| e.seq).collect::<Vec<_>>()
            ),
            other => panic!("{stream}: history refused: {other:?}"),
        }
        let f = c
            .request(json!({"type": "history", "stream": stream, "from": head, "limit": 10}))
            .await;
        match f {
            ServerFrame::History { events, .. } => assert_eq!(
                events.iter().map(|e| e.seq).collect::<Vec<_>>(),
                vec![head],
                "{stream}: head is still {head}"
            ),
            other => panic!("{stream}: history refused: {other:?}"),
        }
    }
}

/// Checks everything after a restart. `resend` is which acked commands to re-send (indexes
/// into `acked`); every acked command is checked against the logs regardless.
async fn verify(
    url: &str,
    acked: &mut Vec<Acked>,
    resend_idx: &[usize],
    unknown: Vec<Sent>,
    sent_ids: &HashSet<(String, String)>,
) -> Verified {
    let mut c = Client::connect(url, &token("platform", Role::Service), Encoding::Json).await;
    let streams: Vec<String> = acked
        .iter()
        .map(|a| a.sent.stream.clone())
        .chain(unknown.iter().map(|s| s.stream.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();

    // 1. Every acked command is in the log at its seq; the logs are whole and replay.
    let logs = check_logs(&mut c, &streams, sent_ids).await;
    check_acked(&logs, acked);
    let mut events = logs.values().map(Vec::len).sum::<usize>();

    // 2. Re-sending every acked command gets the original ack and appends nothing.
    let before = heads(&logs);
    let cmds: Vec<Sent> = resend_idx.iter().map(|&i| acked[i].sent.clone()).collect();
    let replies = resend(url, &cmds).await;
    for (a, f) in resend_idx.iter().map(|&i| &acked[i]).zip(&replies) {
        match f {
            ServerFrame::Ack { seq, created, .. } => assert_eq!(
                (*seq, created),
                (a.seq, &a.created),
                "{} {}: a retry gets the original ack",
                a.sent.stream,
                a.sent.command_id
            ),
            other => panic!(
                "{} {}: a retry was refused: {other:?}",
                a.sent.stream, a.sent.command_id
            ),
        }
    }
    assert_heads(&mut c, &before).await;

    // 3. Commands whose outcome was unknown at the kill: a retry resolves them.
    let where_in_log: HashMap<(String, String), u64> = logs
        .iter()
        .flat_map(|(s, l)| {
            l.iter()
                .map(move |e| ((s.clone(), e.command_id.clone().unwrap_or_default()), e.seq))
        })
        .collect();
    let replies = resend(url, &unknown).await;
    let (mut in_log, mut appended) = (0, 0);
    for (s, f) in unknown.into_iter().zip(replies) {
        let ServerFrame::Ack { seq, created, .. } = f else {
            panic!("{} {}: a retry was refused: {f:?}", s.stream, s.command_id);
        };
        match where_in_log.get(&(s.stream.clone(), s.command_id.clone())) {
            Some(&at) => {
                assert_eq!(
                    seq, at,
                    "{} {}: the retry names the logged seq",
                    s.stream, s.command_id
                );
                in_log += 1;
            }
            None => {
                assert!(
                    seq > before[&s.stream],
                    "{} {}: appended now",
                    s.stream,
                    s.command_id
                );
                appended += 1;
            }
        }
        acked.push(Acked {
            sent: s,
            seq,
            created,
        });
    }
    if appended > 0 {
        // The retries appended: check the logs again, now holding them.
        let logs = check_logs(&mut c, &streams, sent_ids).await;
        check_acked(&logs, acked);
        events = logs.values().map(Vec::len).sum::<usize>();
    }
    Verified {
        events,
        streams: streams.len(),
        resent: cmds.len(),
        resolved_in_log: in_log,
        resolved_appended: appended,
    }
}

// ---------------------------------------------------------------------------------------------
// The loop.
// ---------------------------------------------------------------------------------------------

/// What to run.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// The `copanel` binary.
    pub bin: PathBuf,
    /// Kill/restart rounds.
    pub rounds: usize,
    /// Sessions written to (shared out among the writers; kept across rounds).
    pub sessions: usize,
    /// Concurrent writers, one connection each.
    pub writers: usize,
    /// Commands a writer sends in a round at most (it is killed before it sends them all).
    pub max_commands: usize,
    /// The server's command rate limit per connection (commands/s; the burst is twice it).
    pub rate: f64,
    /// Seed of the kill timing.
    pub seed: u64,
    /// Re-send every acked command of every round after each restart (`true`), or this
    /// round's acked commands plus this many earlier ones, picked at random (`false`).
    pub resend_all: bool,
    /// Earlier acked commands re-sent per round when `resend_all` is off.
    pub resend_sample: usize,
}

/// What a run checked.
#[derive(Debug, Clone, Default)]
pub struct LoopSummary {
    /// Rounds run (each one kill -9 and restart).
    pub rounds: usize,
    /// Acknowledged commands, all rounds (each checked against the log after every restart).
    pub acked: usize,
    /// Events checked, summed over the post-restart checks.
    pub events_verified: usize,
    /// Events in the store at the end.
    pub final_events: usize,
    /// Acked commands re-sent (each got its original ack and appended nothing).
    pub resent: usize,
    /// Commands unanswered at a kill, resolved by a retry: already in the log / appended then.
    pub unknown_in_log: usize,
    /// See `unknown_in_log`.
    pub unknown_appended: usize,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs the crash loop; panics on any violation (see the module docs).
pub async fn run(cfg: &LoopConfig) -> LoopSummary {
    assert!(
        cfg.writers > 0 && cfg.sessions >= cfg.writers,
        "sessions >= writers > 0"
    );
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let data = tempfile::tempdir().expect("data dir");
    let logs = tempfile::tempdir().expect("log dir");
    let mut server =
        ServerProcess::start(&cfg.bin, data.path(), logs.path(), "start", cfg.rate).await;
    let mut acked: Vec<Acked> = Vec::new();
    let mut sent_ids: HashSet<(String, String)> = HashSet::new();
    let mut sum = LoopSummary::default();
    // Writer w owns sessions w, w + writers, …
    let mut shares: Vec<Vec<(String, usize)>> = (0..cfg.writers)
        .map(|w| {
            (w..cfg.sessions)
                .step_by(cfg.writers)
                .map(|s| (format!("session/crash-s{s}"), 0))
                .collect()
        })
        .collect();

    for round in 0..cfg.rounds {
        let round_started = Instant::now();
        let acks = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let opened = Arc::new(AtomicUsize::new(0));
        // Kill after a random number of acks (at most 60% of what the writers would send), then
        // a random 0-30 ms more, while commands are in flight.
        let most = cfg.writers * cfg.max_commands * 6 / 10;
        let kill_at =
            cfg.sessions + rng.random_range(cfg.writers * 10..most.max(cfg.writers * 10 + 1));
        let extra = Duration::from_millis(rng.random_range(0..30));
        let writers: Vec<_> = shares
            .drain(..)
            .enumerate()
            .map(|(w, sessions)| {
                tokio::spawn(writer(WriterJob {
                    url: server.url(),
                    round,
                    w,
                    sessions,
                    max_commands: cfg.max_commands,
                    rate: cfg.rate,
                    acks: acks.clone(),
                    in_flight: in_flight.clone(),
                    opened: opened.clone(),
                }))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut waited_extra = false;
        loop {
            let ready = acks.load(Ordering::SeqCst) >= kill_at
                && opened.load(Ordering::SeqCst) == cfg.writers;
            if ready && !waited_extra {
                tokio::time::sleep(extra).await;
                waited_extra = true;
            }
            if ready && in_flight.load(Ordering::SeqCst) > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: only {} acks in 60 s",
                acks.load(Ordering::SeqCst)
            );
            assert!(
                !writers.iter().any(|w| w.is_finished()),
                "round {round}: a writer ended before the kill"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The writers are still sending: kill -9 now.
        let acked_at_kill = acks.load(Ordering::SeqCst);
        let in_flight_at_kill = in_flight.load(Ordering::SeqCst);
        server.kill9();
        let mut unknown = Vec::new();
        let first_of_round = acked.len();
        let mut rate_limited = 0;
        for w in writers {
            let (out, sessions) = tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("writer ends after the kill")
                .expect("writer task");
            assert!(out.errors.is_empty(), "unexpected errors: {:?}", out.errors);
            rate_limited += out.rate_limited;
            for a in &out.acked {
                sent_ids.insert((a.sent.stream.clone(), a.sent.command_id.clone()));
            }
            for s in &out.unknown {
                sent_ids.insert((s.stream.clone(), s.command_id.clone()));
            }
            acked.extend(out.acked);
            unknown.extend(out.unknown);
            shares.push(sessions);
        }
        assert_eq!(rate_limited, 0, "the writers stay under the rate limit");
        let round_acked = acked.len() - first_of_round;
        drop(server);

        server = ServerProcess::start(
            &cfg.bin,
            data.path(),
            logs.path(),
            &format!("restart-{round}"),
            cfg.rate,
        )
        .await;
        let unknown_n = unknown.len();
        let resend_idx: Vec<usize> = if cfg.resend_all {
            (0..acked.len()).collect()
        } else {
            let mut idx: Vec<usize> = (first_of_round..acked.len()).collect();
            for _ in 0..cfg.resend_sample.min(first_of_round) {
                idx.push(rng.random_range(0..first_of_round));
            }
            idx.sort_unstable();
            idx.dedup();
            idx
        };
        let v = verify(&server.url(), &mut acked, &resend_idx, unknown, &sent_ids).await;
        sum.rounds += 1;
        sum.events_verified += v.events;
        sum.final_events = v.events;
        sum.resent += v.resent;
        sum.unknown_in_log += v.resolved_in_log;
        sum.unknown_appended += v.resolved_appended;
        println!(
            "round {}: killed at {acked_at_kill} acks with {in_flight_at_kill} commands in flight \
             ({round_acked} acked this round, {unknown_n} unanswered); \
             after restart: {} streams, {} events verified, {} acked commands re-sent (same seq, nothing appended), \
             in-flight retries: {} already logged, {} appended; {:.1} s",
            round + 1,
            v.streams,
            v.events,
            v.resent,
            v.resolved_in_log,
            v.resolved_appended,
            round_started.elapsed().as_secs_f64()
        );
    }
    drop(server);
    sum.acked = acked.len();
    sum.elapsed = started.elapsed();
    sum
}
