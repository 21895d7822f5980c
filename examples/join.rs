//! Cold join of a long session: subscribe (with snapshot) to the first `snapshot` frame, over a
//! real socket, against a freshly started server (empty writer cache and hub), with persisted
//! snapshots and — the baseline, in the same run — without them (a full replay of the log).
//!
//! ```text
//! cargo run --release --example join -- [--events 100000] [--every 1000] [--trials 5]
//! ```
//!
//! For each mode it fills one session of a temp store with `--events` events through the real
//! writer (mostly `post_message`, some `set_parameter`), then `--trials` times: starts the
//! server on that store, connects, subscribes, times until the `snapshot` frame, also times a
//! `state_at` in the middle of the log, and stops the server. One line per mode:
//!
//! ```text
//! mode=replay events=100001 join_ms_median=... join_ms_min=... state_at_ms_median=...
//! mode=snapshots every=1000 events=100001 join_ms_median=... ... speedup=...
//! ```

#[path = "common/spawn.rs"]
mod spawn;

use clap::Parser;
use copanel::auth::{now_secs, Claims};
use copanel::domain::{Limits, Principal};
use copanel::hub::Hub;
use copanel::server::{self, Config};
use copanel::store::{SledStore, Store};
use copanel::writer::{self, Durability, Tuning};
use copanel_protocol::{Command, Owner, Role, ServerFrame, StreamName};
use futures::SinkExt;
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "join-bench-secret-join-bench-secret";
const SESSION: &str = "bench1";
/// Commands submitted before awaiting their replies (the writer groups them).
const CHUNK: usize = 2000;
/// How long one frame may take before the run is declared failed.
const WAIT: Duration = Duration::from_secs(60);

#[derive(Parser)]
struct Args {
    /// Events in the session (plus the `session_opened`).
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Snapshot interval of the snapshot mode.
    #[arg(long, default_value_t = copanel::snapshot::DEFAULT_EVERY)]
    every: u64,
    /// Cold joins per mode (each on a freshly started server).
    #[arg(long, default_value_t = 5)]
    trials: usize,
}

fn main() -> ExitCode {
    spawn::main_with("join", run(Args::parse()))
}

async fn run(args: Args) -> Result<(), String> {
    let mut baseline = None;
    for every in [0, args.every] {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let started = Instant::now();
        fill(dir.path(), every, args.events).await?;
        eprintln!(
            "filled {} events (snapshot_every={every}) in {:.1} s",
            args.events + 1,
            started.elapsed().as_secs_f64()
        );
        let mut joins = Vec::new();
        let mut states = Vec::new();
        for _ in 0..args.trials {
            let (j, s) = cold_join(dir.path(), every, args.events / 2 + 1).await?;
            joins.push(j);
            states.push(s);
        }
        let join = spawn::median(&mut joins);
        let mode = if every == 0 {
            "mode=replay".to_string()
        } else {
            format!("mode=snapshots every={every}")
        };
        let ratio = match baseline {
            Some(b) => format!(" speedup={:.1}x", b / join),
            None => String::new(),
        };
        println!(
            "{mode} events={} join_ms_median={:.2} join_ms_min={:.2} join_ms_max={:.2} state_at_mid_ms_median={:.2}{ratio}",
            args.events + 1,
            join,
            joins.first().copied().unwrap_or_default(),
            joins.last().copied().unwrap_or_default(),
            spawn::median(&mut states),
        );
        if every == 0 {
            baseline = Some(join);
        }
    }
    Ok(())
}

/// Opens the session and appends `events` commands through the real writer.
async fn fill(dir: &Path, every: u64, events: u64) -> Result<(), String> {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir).map_err(|e| e.to_string())?);
    let (w, task) = writer::spawn_tuned(
        store,
        Arc::new(Hub::new()),
        Arc::new(copanel::search::ContactIndex::new()),
        Durability::Sync,
        Limits::default(),
        copanel::webhooks::Outbox::new(),
        Tuning {
            queue: 4096,
            snapshot_every: every,
        },
    );
    let company: Arc<str> = Arc::from("acme");
    let stream = StreamName::session(SESSION).map_err(|e| e.to_string())?;
    let who = |id: &str, role| Principal {
        id: id.into(),
        role,
        groups: vec![],
    };
    let open = Command::OpenSession {
        channel: "chat".into(),
        client: Default::default(),
        parameters: Default::default(),
        owner: Owner::Operator {
            operator_id: "op1".into(),
        },
    };
    let commands =
        std::iter::once((who("platform", Role::Service), open)).chain((0..events).map(|i| {
            let cmd =
                spawn::filler_command(i, || format!("message number {i} of the long session"));
            (who("op1", Role::Operator), cmd)
        }));
    let commands = commands.map(|(p, c)| (stream.clone(), p, c));
    spawn::submit_all(&w, &company, commands, CHUNK).await?;
    drop(w);
    task.await.map_err(|e| e.to_string())
}

/// Starts a server on `dir`, joins the session once (ms to the snapshot frame), asks for the
/// state at `mid` (ms to the state frame), stops the server.
async fn cold_join(dir: &Path, every: u64, mid: u64) -> Result<(f64, f64), String> {
    let mut config = Config::new(
        "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
        dir.to_path_buf(),
    );
    config.secret = Some(SECRET.into());
    config.snapshot_every = every;
    let running = server::start(config).await.map_err(|e| e.to_string())?;
    let token = running
        .auth
        .mint(&Claims {
            sub: "op1".into(),
            company: "acme".into(),
            role: Role::Operator,
            name: None,
            groups: Vec::new(),
            exp: now_secs() + 3600,
        })
        .map_err(|e| e.to_string())?;
    let mut ws = spawn::connect_json(running.addr, &token, Duration::from_secs(30)).await?;
    let stream = format!("session/{SESSION}");
    let t = Instant::now();
    let sub = json!({"type": "subscribe", "id": 1, "stream": stream});
    ws.send(Message::Text(sub.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    spawn::wait_for(&mut ws, WAIT, |f| matches!(f, ServerFrame::Snapshot { .. })).await?;
    let join = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let at = json!({"type": "state_at", "id": 2, "stream": stream, "seq": mid});
    ws.send(Message::Text(at.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    spawn::wait_for(&mut ws, WAIT, |f| matches!(f, ServerFrame::State { .. })).await?;
    let state_at = t.elapsed().as_secs_f64() * 1000.0;
    let _ = ws.close(None).await;
    running.shutdown().await;
    Ok((join, state_at))
}
