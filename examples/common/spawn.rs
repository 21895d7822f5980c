//! Shared by the `coldstart`, `idle` and `join` examples: a runtime for `main`, filling a store
//! through the real writer (and the commands to fill it with), connecting a JSON WebSocket,
//! waiting for a frame, spawning the real `copanel` binary on a data directory, timing it to
//! `/healthz`, reading its RSS, stopping it by its pid.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs an example's `run` on a 2-worker runtime and turns its error into a message and a
/// failing exit status, `name: error`.
pub fn main_with<F>(name: &str, run: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<(), String>>,
{
    use std::process::ExitCode;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How long a server may take to answer `/healthz`.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The `copanel` binary: `--bin` if given, else the one built beside this example
/// (`target/<profile>/copanel`, since examples live in `target/<profile>/examples/`).
pub fn server_bin(given: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(b) = given {
        return Ok(b);
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("copanel"))
        .ok_or("cannot locate the copanel binary; pass --bin")?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: build it (cargo build --release --bin copanel) or pass --bin",
            bin.display()
        ))
    }
}

/// A spawned server, killed (by its pid) and reaped on drop.
pub struct Spawned {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 (bound then released).
fn free_addr() -> Result<SocketAddr, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map_err(|e| e.to_string())
}

/// Spawns `bin serve` on `data`; returns it and the time from spawn to the first `/healthz`
/// that answers 200 (polled every millisecond).
pub async fn spawn(bin: &Path, data: &Path, secret: &str) -> Result<(Spawned, Duration), String> {
    let addr = free_addr()?;
    let log_path = data.with_extension("log");
    let log = std::fs::File::create(&log_path).map_err(|e| format!("log file: {e}"))?;
    let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
    let started = Instant::now();
    let child = Command::new(bin)
        .arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data")
        .arg(data)
        .arg("--secret")
        .arg(secret)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let mut server = Spawned { child, addr };
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("the server exited at start ({status}):\n{log}"));
        }
        if healthz(addr).await {
            return Ok((server, started.elapsed()));
        }
        if started.elapsed() > READY_WITHIN {
            return Err(format!("no /healthz on {addr} within {READY_WITHIN:?}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Whether `GET /healthz` answers 200.
pub async fn healthz(addr: SocketAddr) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let req = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if s.write_all(req).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    matches!(read, Ok(Ok(_))) && buf.starts_with(b"HTTP/1.1 200")
}

/// `VmRSS` of a process, KiB (Linux `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Sorts and returns the median.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// A client WebSocket.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a JSON WebSocket to `ws://addr/ws` with `token` as bearer, within `wait`.
pub async fn connect_json(addr: SocketAddr, token: &str, wait: Duration) -> Result<Ws, String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let mut req = format!("ws://{addr}/ws")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?,
    );
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(copanel_protocol::Encoding::Json.subprotocol()),
    );
    match tokio::time::timeout(wait, tokio_tungstenite::connect_async(req)).await {
        Err(_) => Err(format!("no connection to {addr} within {wait:?}")),
        Ok(Err(e)) => Err(format!("cannot connect to {addr}: {e}")),
        Ok(Ok((ws, _))) => Ok(ws),
    }
}

/// Reads JSON frames until one matches `want`; an `error` frame, a closed connection or nothing
/// within `within` fails the run.
pub async fn wait_for(
    ws: &mut Ws,
    within: Duration,
    want: impl Fn(&copanel_protocol::ServerFrame) -> bool,
) -> Result<(), String> {
    use copanel_protocol::{codec::decode_server, Encoding, ServerFrame};
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return Err(format!("no answer within {within:?}")),
            Ok(None) => return Err("the server closed the connection".into()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(m))) => m,
        };
        let Message::Text(text) = msg else { continue };
        let frame = decode_server(Encoding::Json, text.as_bytes()).map_err(|e| e.to_string())?;
        if want(&frame) {
            return Ok(());
        }
        if let ServerFrame::Error { .. } = frame {
            return Err(format!("error frame: {text}"));
        }
    }
}

/// Appends `commands` of `company` through the writer, `chunk` at a time: a chunk is submitted
/// at once (so it is group-committed) and every reply awaited; a refusal fails the run.
pub async fn submit_all(
    w: &copanel::writer::WriterHandle,
    company: &std::sync::Arc<str>,
    commands: impl Iterator<
        Item = (
            copanel_protocol::StreamName,
            copanel::domain::Principal,
            copanel_protocol::Command,
        ),
    >,
    chunk: usize,
) -> Result<(), String> {
    let mut commands = commands;
    let mut n = 0u64;
    loop {
        let mut replies = Vec::with_capacity(chunk);
        for (stream, principal, command) in commands.by_ref().take(chunk) {
            n += 1;
            let (tx, rx) = tokio::sync::oneshot::channel();
            w.submit(copanel::writer::CommandRequest {
                company: company.clone(),
                principal,
                stream,
                command_id: format!("c{n}"),
                expected_seq: None,
                command,
                reply: tx,
            })
            .await;
            replies.push(rx);
        }
        if replies.is_empty() {
            return Ok(());
        }
        for r in replies {
            r.await
                .map_err(|_| "the writer stopped".to_string())?
                .map_err(|e| format!("command refused: {e}"))?;
        }
    }
}

/// The `i`th command of a filled session: every tenth sets a parameter (50 keys), the others
/// post a message with `text()`, so states stay bounded while the log grows.
pub fn filler_command(i: u64, text: impl FnOnce() -> String) -> copanel_protocol::Command {
    use copanel_protocol::{Command, MessageFrom};
    if i % 10 == 0 {
        Command::SetParameter {
            key: format!("k{}", i % 50),
            value: format!("value {i}"),
            read_only: None,
        }
    } else {
        Command::PostMessage {
            from: MessageFrom::Operator,
            text: Some(text()),
            template_id: None,
        }
    }
}
