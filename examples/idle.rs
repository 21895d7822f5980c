//! Memory per idle connection: spawns the real `copanel serve`, opens `--connections`
//! authenticated WebSocket connections (each subscribed, with a snapshot, to one of
//! `--sessions` sessions), and prints the server's RSS (`/proc/PID/status` `VmRSS`) before and
//! after, and the difference per connection.
//!
//! ```text
//! cargo build --release --bin copanel
//! cargo run --release --example idle -- [--connections 2000] [--sessions 100]
//! ```
//!
//! The baseline is the same server before the connections (sessions opened, their projections
//! loaded by one subscriber each, so what is measured is the connections, not the streams).
//! One line:
//!
//! ```text
//! connections=2000 rss_before_kib=... rss_after_kib=... kib_per_connection=...
//! ```

#[path = "common/spawn.rs"]
mod spawn;

use clap::Parser;
use copanel::auth::{now_secs, Auth, Claims};
use copanel_protocol::{Role, ServerFrame};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

use spawn::Ws;

const SECRET: &str = "idle-bench-secret-idle-bench-secret";
/// Connections opened at once.
const PARALLEL: usize = 64;
/// How long one frame may take.
const WAIT: Duration = Duration::from_secs(30);
/// Pause before reading the RSS, so the last allocations settle.
const SETTLE: Duration = Duration::from_secs(2);

#[derive(Parser)]
struct Args {
    /// Idle connections to open.
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    /// Sessions they subscribe to (round-robin).
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    /// The copanel binary (default: the one built beside this example).
    #[arg(long)]
    bin: Option<PathBuf>,
}

fn main() -> ExitCode {
    spawn::main_with("idle", run(Args::parse()))
}

async fn run(args: Args) -> Result<(), String> {
    let bin = spawn::server_bin(args.bin.clone())?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (server, _) = spawn::spawn(&bin, &tmp.path().join("data"), SECRET).await?;
    let pid = server.child.id();
    let auth = Auth::new(SECRET.as_bytes());
    let sessions = args.sessions.max(1);

    // The sessions, and one subscriber each so their projections are loaded before the baseline.
    let mut svc = connect(server.addr, &token(&auth, "platform", Role::Service)?).await?;
    for s in 0..sessions {
        let open = json!({"type": "command", "id": s, "stream": format!("session/s{s}"),
            "command_id": format!("open{s}"), "command": {"kind": "open_session",
            "channel": "chat", "client": {}, "parameters": {},
            "owner": {"operator_id": format!("op{s}")}}});
        send(&mut svc, &open).await?;
        spawn::wait_for(&mut svc, WAIT, |f| matches!(f, ServerFrame::Ack { .. })).await?;
    }
    let mut warm = connect(server.addr, &token(&auth, "sup", Role::Supervisor)?).await?;
    for s in 0..sessions {
        subscribe(&mut warm, s).await?;
    }
    tokio::time::sleep(SETTLE).await;
    let before = spawn::rss_kib(pid).ok_or("cannot read the server's RSS")?;

    let t = Instant::now();
    let mut open: Vec<Ws> = Vec::with_capacity(args.connections);
    let mut i = 0;
    while i < args.connections {
        let n = PARALLEL.min(args.connections - i);
        let batch = futures::future::join_all((i..i + n).map(|k| {
            let auth = auth.clone();
            let addr = server.addr;
            async move {
                let mut ws =
                    connect(addr, &token(&auth, &format!("sup{k}"), Role::Supervisor)?).await?;
                subscribe(&mut ws, k % sessions).await?;
                Ok::<Ws, String>(ws)
            }
        }))
        .await;
        for ws in batch {
            open.push(ws?);
        }
        i += n;
    }
    let opened = t.elapsed();
    // Keep answering the server's pings while idle.
    let readers: Vec<_> = open
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }))
        .collect();
    tokio::time::sleep(SETTLE).await;
    let after = spawn::rss_kib(pid).ok_or("cannot read the server's RSS")?;
    let per = (after.saturating_sub(before)) as f64 / args.connections.max(1) as f64;
    println!(
        "connections={} sessions={sessions} rss_before_kib={before} rss_after_kib={after} kib_per_connection={per:.1} open_s={:.1}",
        args.connections,
        opened.as_secs_f64()
    );
    for r in readers {
        r.abort();
    }
    drop(server);
    Ok(())
}

fn token(auth: &Auth, sub: &str, role: Role) -> Result<String, String> {
    auth.mint(&Claims {
        sub: sub.into(),
        company: "acme".into(),
        role,
        name: None,
        groups: Vec::new(),
        exp: now_secs() + 3600,
    })
    .map_err(|e| format!("cannot mint a token: {e}"))
}

async fn connect(addr: SocketAddr, token: &str) -> Result<Ws, String> {
    spawn::connect_json(addr, token, WAIT).await
}

async fn send(ws: &mut Ws, frame: &serde_json::Value) -> Result<(), String> {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .map_err(|e| e.to_string())
}

/// Subscribes to `session/s<s>` with a snapshot and waits for it.
async fn subscribe(ws: &mut Ws, s: usize) -> Result<(), String> {
    let f = json!({"type": "subscribe", "id": 1, "stream": format!("session/s{s}")});
    send(ws, &f).await?;
    spawn::wait_for(ws, WAIT, |f| matches!(f, ServerFrame::Snapshot { .. })).await
}
