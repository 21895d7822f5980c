//! Load tool: acknowledged commands per second and ack latency against a copanel server.
//!
//! ```text
//! # against a running server
//! cargo run --release --example load -- --url ws://127.0.0.1:7700/ws --secret S \
//!     [--sessions 50] [--connections 50] [--duration 10] [--inflight 16]
//! # or start the server itself (a temp data dir, a free 127.0.0.1 port), once per durability
//! cargo run --release --example load -- --spawn target/release/copanel --durability sync,relaxed
//! ```
//!
//! It opens `--sessions` sessions with a service token, then every connection (an operator
//! token of its session's owner, or `--role service`) pipelines up to `--inflight` `add_note` /
//! `set_parameter` commands for `--duration` seconds, and prints one summary line per run:
//!
//! ```text
//! durability=sync connections=50 acked=22400 acked_per_s=2240.0 p50_ms=3.1 p99_ms=9.8 errors=0 rate_limited=0
//! ```
//!
//! `acked` counts acks received inside the window; the latencies are theirs (send to ack).
//! Details (error codes, the pacing ceiling) go to stderr.
//!
//! The server limits each connection to 50 commands/s (burst 100). The tool paces each
//! connection at `--rate-per-conn` (default 45/s) so that limit is not what gets measured: the
//! offered load is at most `connections x rate-per-conn`, so raise `--connections` to push the
//! server harder. `--rate-per-conn 0` removes the pacing; `rate_limited` refusals are then
//! counted apart from the other errors (a refused connection pauses 20 ms). Everything is
//! bounded: connection and open timeouts, the window, and a grace period for the last acks.

use clap::Parser;
use copanel::auth::{now_secs, Auth, Claims};
use copanel_protocol::codec::decode_server;
use copanel_protocol::{Encoding, ErrorCode, Role, ServerFrame};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Notes per session the tool adds at most (the server's limit is 500); then only parameters.
const NOTE_BUDGET: u32 = 450;
/// Distinct parameter keys per session (the server's limit is 100).
const PARAMETER_KEYS: u64 = 50;
/// How long the last commands get to be acked after the window.
const GRACE: Duration = Duration::from_secs(5);
/// How long a connection stops sending after a `rate_limited` refusal (one token at 50/s).
const RATE_LIMITED_PAUSE: Duration = Duration::from_millis(20);
/// Connection attempts in progress at once.
const CONNECT_PARALLEL: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Commands sent per opening connection (under the server's burst of 100).
const OPEN_CHUNK: usize = 90;

#[derive(Parser, Clone)]
#[command(
    name = "load",
    about = "Measure acked commands/s and ack latency of a copanel server"
)]
struct Args {
    /// WebSocket URL of a running server (ignored with --spawn).
    #[arg(long, default_value = "ws://127.0.0.1:7700/ws")]
    url: String,
    /// The server's token secret (with --spawn: passed to the server; default: generated).
    #[arg(long, env = "COPANEL_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Company of the sessions and tokens.
    #[arg(long, default_value = "load")]
    company: String,
    /// Sessions opened for the run.
    #[arg(long, default_value_t = 50)]
    sessions: usize,
    /// WebSocket connections sending commands; connection i writes to session i % sessions.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Measurement window, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Commands each connection keeps in flight.
    #[arg(long, default_value_t = 16)]
    inflight: usize,
    /// Commands per second each connection sends at most (the server allows 50, burst 100);
    /// 0 sends as fast as acks allow.
    #[arg(long, default_value_t = 45.0)]
    rate_per_conn: f64,
    /// Who the writing connections are: the session's owner operator, or the platform.
    #[arg(long, value_enum, default_value = "owner")]
    role: Writer,
    /// Encoding of the writing connections.
    #[arg(long, value_enum, default_value = "msgpack")]
    encoding: Enc,
    /// Start this copanel binary on a temp data dir and a free 127.0.0.1 port, and kill it at
    /// the end.
    #[arg(long)]
    spawn: Option<PathBuf>,
    /// With --spawn: `sync`, `relaxed`, or a comma list run one after the other (each on a fresh
    /// server). Without --spawn: only the label printed.
    #[arg(long)]
    durability: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Writer {
    Owner,
    Service,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Enc {
    Msgpack,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.sessions == 0 || args.connections == 0 || args.inflight == 0 {
        eprintln!("load: --sessions, --connections and --inflight must be at least 1");
        return ExitCode::FAILURE;
    }
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        eprintln!("load: --duration must be more than 0 and at most 3600 seconds");
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(run(args));
    rt.shutdown_timeout(Duration::from_secs(1));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    match args.spawn.clone() {
        None => {
            let secret = args
                .secret
                .clone()
                .ok_or("--secret (or COPANEL_SECRET) is needed to mint tokens")?;
            let label = args.durability.clone().unwrap_or_else(|| "unknown".into());
            let summary = measure(&args, &args.url, &secret).await?;
            println!("{}", summary.line(&label, args.connections));
            Ok(())
        }
        Some(bin) => {
            let modes = args.durability.clone().unwrap_or_else(|| "sync".into());
            let secret = args
                .secret
                .clone()
                .unwrap_or_else(|| format!("load-{:032x}", rand::random::<u128>()));
            for mode in modes.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                if mode != "sync" && mode != "relaxed" {
                    return Err(format!(
                        "--durability {mode:?}: use sync, relaxed or both, comma-separated"
                    ));
                }
                let server = Spawned::start(&bin, mode, &secret).await?;
                let res = measure(&args, &server.url(), &secret).await;
                drop(server); // kills the child
                println!("{}", res?.line(mode, args.connections));
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A server of our own.
// ---------------------------------------------------------------------------------------------

/// `copanel serve` started by this tool; dropping it kills the child by its handle and removes
/// its temp dir.
struct Spawned {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Spawned {
    async fn start(bin: &PathBuf, durability: &str, secret: &str) -> Result<Spawned, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("log file: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data")
            .arg(dir.path().join("data"))
            .arg("--durability")
            .arg(durability)
            .arg("--secret")
            .arg(secret)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut server = Spawned { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("the server exited at start ({status}):\n{log}"));
            }
            if healthz(addr).await {
                eprintln!(
                    "load: started {} (durability {durability}) on {addr}, data in {}",
                    bin.display(),
                    server.dir.path().display()
                );
                return Ok(server);
            }
            if Instant::now() > deadline {
                let _ = server.child.kill();
                return Err(format!(
                    "the server did not answer /healthz on {addr} within 10 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

async fn healthz(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
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

// ---------------------------------------------------------------------------------------------
// The measurement.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Summary {
    acked: u64,
    window: f64,
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
    rate_limited: u64,
    unanswered: u64,
    failed_connections: u64,
}

impl Summary {
    fn error_total(&self) -> u64 {
        self.errors.values().sum::<u64>() + self.unanswered + self.failed_connections
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.latencies_us.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.latencies_us.len()) - 1;
        f64::from(self.latencies_us[i]) / 1000.0
    }

    fn line(&self, durability: &str, connections: usize) -> String {
        format!(
            "durability={durability} connections={connections} acked={} acked_per_s={:.1} p50_ms={:.2} p99_ms={:.2} errors={} rate_limited={}",
            self.acked,
            self.acked as f64 / self.window,
            self.percentile_ms(50.0),
            self.percentile_ms(99.0),
            self.error_total(),
            self.rate_limited
        )
    }
}

fn mint(auth: &Auth, company: &str, sub: &str, role: Role) -> Result<String, String> {
    auth.mint(&Claims {
        sub: sub.into(),
        company: company.into(),
        role,
        name: None,
        groups: Vec::new(),
        exp: now_secs() + 3600,
    })
    .map_err(|e| format!("cannot mint a token: {e}"))
}

async fn connect(url: &str, token: &str, enc: Encoding) -> Result<Ws, String> {
    let mut req = url
        .into_client_request()
        .map_err(|e| format!("bad url {url:?}: {e}"))?;
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?,
    );
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(enc.subprotocol()),
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(req)).await {
        Err(_) => Err(format!("no connection to {url} within {CONNECT_TIMEOUT:?}")),
        Ok(Err(e)) => Err(format!("cannot connect to {url}: {e}")),
        Ok(Ok((ws, _))) => Ok(ws),
    }
}

fn encode(enc: Encoding, frame: &Value) -> Message {
    match enc {
        Encoding::Json => Message::Text(frame.to_string().into()),
        Encoding::Msgpack => {
            Message::Binary(rmp_serde::to_vec_named(frame).unwrap_or_default().into())
        }
    }
}

fn decode(enc: Encoding, msg: Message) -> Option<ServerFrame> {
    let bytes = match msg {
        Message::Text(t) => t.as_bytes().to_vec(),
        Message::Binary(b) => b.to_vec(),
        _ => return None,
    };
    decode_server(enc, &bytes).ok()
}

/// Opens the sessions, `OPEN_CHUNK` per service connection, all chunks at once.
async fn open_sessions(
    url: &str,
    token: &str,
    sessions: &[String],
    owners: &[String],
) -> Result<(), String> {
    let mut tasks = Vec::new();
    let chunks: Vec<Vec<(String, String)>> = sessions
        .iter()
        .cloned()
        .zip(owners.iter().cloned())
        .collect::<Vec<_>>()
        .chunks(OPEN_CHUNK)
        .map(<[_]>::to_vec)
        .collect();
    for chunk in chunks {
        let url = url.to_owned();
        let token = token.to_owned();
        tasks.push(tokio::spawn(async move {
            let enc = Encoding::Msgpack;
            let mut ws = connect(&url, &token, enc).await?;
            for (i, (stream, owner)) in chunk.iter().enumerate() {
                let frame = json!({"type": "command", "id": i as u64, "stream": stream,
                    "command_id": format!("open-{stream}"),
                    "command": {"kind": "open_session", "channel": "chat",
                        "client": {"name": "Load Test", "email": "load@example.com"},
                        "owner": {"operator_id": owner}}});
                ws.feed(encode(enc, &frame))
                    .await
                    .map_err(|e| format!("send: {e}"))?;
            }
            ws.flush().await.map_err(|e| format!("send: {e}"))?;
            let mut left = chunk.len();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while left > 0 {
                let msg = tokio::time::timeout_at(deadline, ws.next())
                    .await
                    .map_err(|_| "opening the sessions took more than 30 s".to_string())?;
                let msg = match msg {
                    Some(Ok(m)) => m,
                    _ => {
                        return Err("the server closed the connection while opening sessions".into())
                    }
                };
                match decode(enc, msg) {
                    Some(ServerFrame::Ack { .. }) => left -= 1,
                    Some(ServerFrame::Error {
                        code,
                        message,
                        stream,
                        ..
                    }) => {
                        return Err(format!(
                            "open_session on {stream:?} refused: {code}: {message}"
                        ))
                    }
                    _ => {}
                }
            }
            let _ = ws.close(None).await;
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| format!("open task: {e}"))??;
    }
    Ok(())
}

/// What one connection measured.
#[derive(Default)]
struct ConnStats {
    acked: u64,
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
    rate_limited: u64,
    unanswered: u64,
    failed: bool,
}

/// A client-side token bucket. `rate == 0` never limits.
struct Pace {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Pace {
    fn new(rate: f64, burst: f64) -> Self {
        Pace {
            rate,
            burst,
            // A random start spreads the connections' first commands over one interval.
            tokens: rand::random::<f64>(),
            at: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
    }

    fn take(&mut self) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn until_next(&mut self) -> Duration {
        if self.rate <= 0.0 {
            return Duration::from_secs(3600);
        }
        self.refill();
        Duration::from_secs_f64(((1.0 - self.tokens) / self.rate).max(0.0005))
    }
}

struct Job {
    ws: Ws,
    enc: Encoding,
    stream: String,
    /// Notes issued on the session so far, shared by its connections.
    notes: Arc<AtomicU32>,
    conn: usize,
    inflight: usize,
    rate: f64,
    start: Instant,
    deadline: Instant,
}

/// One connection's run: pipelined commands until the deadline, then the last acks.
async fn drive(job: Job) -> ConnStats {
    let Job {
        ws,
        enc,
        stream: session,
        notes,
        conn,
        inflight: window,
        rate,
        start,
        deadline,
    } = job;
    let mut stats = ConnStats::default();
    let (mut sink, mut stream) = ws.split();
    let mut pace = Pace::new(rate, (window as f64).clamp(1.0, 10.0));
    let mut sent_at: HashMap<u64, Instant> = HashMap::new();
    let mut n: u64 = 0;
    let end = deadline + GRACE;
    // After a `rate_limited` refusal the connection pauses briefly instead of spinning.
    let mut paused_until = start;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let sending = now < deadline;
        let paused = now < paused_until;
        if !sending && sent_at.is_empty() {
            break;
        }
        if sending && !paused {
            let mut fed = false;
            while sent_at.len() < window && pace.take() {
                n += 1;
                let command = if n % 2 == 1 && notes.fetch_add(1, Ordering::Relaxed) < NOTE_BUDGET {
                    json!({"kind": "add_note", "text": format!("load note {conn}-{n}")})
                } else {
                    json!({"kind": "set_parameter", "key": format!("k{}", n % PARAMETER_KEYS),
                        "value": format!("v{conn}-{n}")})
                };
                let frame = json!({"type": "command", "id": n, "stream": session,
                    "command_id": format!("c{conn}-{n}"), "command": command});
                sent_at.insert(n, Instant::now());
                if sink.feed(encode(enc, &frame)).await.is_err() {
                    stats.failed = true;
                    break;
                }
                fed = true;
            }
            if stats.failed || (fed && sink.flush().await.is_err()) {
                stats.failed = true;
                break;
            }
        }
        let now = Instant::now();
        let wait = if sending && paused {
            paused_until.saturating_duration_since(now)
        } else if sending && sent_at.len() < window {
            pace.until_next()
                .min(deadline.saturating_duration_since(now))
        } else if sending {
            deadline.saturating_duration_since(now)
        } else {
            end.saturating_duration_since(now)
        };
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = tokio::time::sleep(wait) => continue,
        };
        let frame = match msg {
            Some(Ok(m)) => match decode(enc, m) {
                Some(f) => f,
                None => continue,
            },
            _ => {
                stats.failed = true;
                break;
            }
        };
        let received = Instant::now();
        match frame {
            ServerFrame::Ack { id: Some(id), .. } => {
                if let Some(at) = sent_at.remove(&id) {
                    if received <= deadline && at >= start {
                        stats.acked += 1;
                        let us = received.duration_since(at).as_micros();
                        stats
                            .latencies_us
                            .push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                }
            }
            ServerFrame::Error {
                id: Some(id), code, ..
            } => {
                sent_at.remove(&id);
                if code == ErrorCode::RateLimited {
                    stats.rate_limited += 1;
                    paused_until = received + RATE_LIMITED_PAUSE;
                } else {
                    *stats.errors.entry(code.as_str().to_owned()).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    stats.unanswered = sent_at.len() as u64;
    let _ = sink.close().await;
    stats
}

async fn measure(args: &Args, url: &str, secret: &str) -> Result<Summary, String> {
    let auth = Auth::new(secret.as_bytes());
    let run_id = format!("{:08x}", rand::random::<u32>());
    let sessions: Vec<String> = (0..args.sessions)
        .map(|i| format!("session/load-{run_id}-{i}"))
        .collect();
    let owners: Vec<String> = (0..args.sessions)
        .map(|i| format!("op-{run_id}-{i}"))
        .collect();
    let service = mint(&auth, &args.company, "load-platform", Role::Service)?;
    let opened = Instant::now();
    open_sessions(url, &service, &sessions, &owners).await?;
    eprintln!(
        "load: opened {} sessions in {:.2} s",
        sessions.len(),
        opened.elapsed().as_secs_f64()
    );

    let enc = match args.encoding {
        Enc::Msgpack => Encoding::Msgpack,
        Enc::Json => Encoding::Json,
    };
    let notes: Vec<Arc<AtomicU32>> = (0..args.sessions)
        .map(|_| Arc::new(AtomicU32::new(0)))
        .collect();
    // Connect everything first, a bounded number at a time, so the window measures commands.
    let mut conns: Vec<Option<Ws>> = Vec::with_capacity(args.connections);
    let mut failed_connections = 0u64;
    let mut first_error = None;
    for batch in (0..args.connections)
        .collect::<Vec<_>>()
        .chunks(CONNECT_PARALLEL)
    {
        let mut tasks = Vec::new();
        for &c in batch {
            let s = c % args.sessions;
            let token = match args.role {
                Writer::Owner => mint(&auth, &args.company, &owners[s], Role::Operator)?,
                Writer::Service => service.clone(),
            };
            let url = url.to_owned();
            tasks.push(tokio::spawn(
                async move { connect(&url, &token, enc).await },
            ));
        }
        for t in tasks {
            match t.await.map_err(|e| format!("connect task: {e}"))? {
                Ok(ws) => conns.push(Some(ws)),
                Err(e) => {
                    failed_connections += 1;
                    first_error.get_or_insert(e);
                    conns.push(None);
                }
            }
        }
    }
    if let Some(e) = &first_error {
        eprintln!("load: {failed_connections} connections failed, the first: {e}");
    }
    if failed_connections as usize == args.connections {
        return Err(first_error.unwrap_or_default());
    }
    let offered = if args.rate_per_conn > 0.0 {
        format!(
            "at most {:.0} commands/s ({} connections x {}/s)",
            args.rate_per_conn * (args.connections as f64 - failed_connections as f64),
            args.connections as u64 - failed_connections,
            args.rate_per_conn
        )
    } else {
        "unpaced".to_owned()
    };
    eprintln!(
        "load: {} connections, {} in flight each, {offered}, for {} s",
        args.connections as u64 - failed_connections,
        args.inflight,
        args.duration
    );

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let mut tasks = Vec::new();
    for (c, ws) in conns.into_iter().enumerate() {
        let Some(ws) = ws else { continue };
        let s = c % args.sessions;
        tasks.push(tokio::spawn(drive(Job {
            ws,
            enc,
            stream: sessions[s].clone(),
            notes: notes[s].clone(),
            conn: c,
            inflight: args.inflight,
            rate: args.rate_per_conn,
            start,
            deadline,
        })));
    }
    let mut sum = Summary {
        window: args.duration,
        failed_connections,
        ..Summary::default()
    };
    for t in tasks {
        let s = t.await.map_err(|e| format!("connection task: {e}"))?;
        sum.acked += s.acked;
        sum.latencies_us.extend(s.latencies_us);
        sum.rate_limited += s.rate_limited;
        sum.unanswered += s.unanswered;
        if s.failed {
            *sum.errors.entry("connection_lost".into()).or_default() += 1;
        }
        for (k, v) in s.errors {
            *sum.errors.entry(k).or_default() += v;
        }
    }
    sum.latencies_us.sort_unstable();
    if sum.error_total() > 0 {
        eprintln!(
            "load: errors by kind: {:?}, unanswered at the end: {}, failed connections: {}",
            sum.errors, sum.unanswered, sum.failed_connections
        );
    }
    Ok(sum)
}
