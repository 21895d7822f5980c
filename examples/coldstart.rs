//! Cold start: time from spawning the real `copanel serve` to its first `/healthz` 200, on a
//! store holding `--events` events spread over `--sessions` sessions, and — the baseline, in
//! the same run — on an empty store and a small one.
//!
//! ```text
//! cargo build --release --bin copanel
//! cargo run --release --example coldstart -- [--events 1000000] [--sessions 1000] [--trials 3]
//! ```
//!
//! The stores are filled through the real writer (so they hold what production holds: events,
//! command outcomes, derived records, webhook outbox records, snapshots), closed, then the
//! binary is started `--trials` times on each (killed by its pid after each start). Then the
//! first join of one session on a just-started server is timed too. One line per store:
//!
//! ```text
//! store=empty events=0 ready_ms_median=... ready_ms_min=... size_mb=...
//! store=large events=1000000 sessions=1000 ready_ms_median=... ratio_to_empty=...
//! ```

#[path = "common/spawn.rs"]
mod spawn;

use clap::Parser;
use copanel::domain::{Limits, Principal};
use copanel::hub::Hub;
use copanel::store::{SledStore, Store};
use copanel::writer::{self, Durability, Tuning};
use copanel_protocol::{Command, Owner, Role, StreamName};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

const SECRET: &str = "coldstart-secret-coldstart-secret";
/// Commands submitted before awaiting their replies (the writer groups them).
const CHUNK: usize = 4000;

#[derive(Parser)]
struct Args {
    /// Events in the large store.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Sessions they are spread over.
    #[arg(long, default_value_t = 1000)]
    sessions: u64,
    /// Events in the small store.
    #[arg(long, default_value_t = 1000)]
    small: u64,
    /// Starts per store.
    #[arg(long, default_value_t = 3)]
    trials: usize,
    /// The copanel binary (default: the one built beside this example).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Keep the stores here instead of a temp dir (reused when already filled).
    #[arg(long)]
    keep: Option<PathBuf>,
}

fn main() -> ExitCode {
    spawn::main_with("coldstart", run(Args::parse()))
}

async fn run(args: Args) -> Result<(), String> {
    let bin = spawn::server_bin(args.bin.clone())?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = args
        .keep
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let stores = [
        ("empty", 0, 1),
        ("small", args.small, 10.min(args.sessions).max(1)),
        ("large", args.events, args.sessions.max(1)),
    ];
    let mut baseline = None;
    for (name, events, sessions) in stores {
        let data = root.join(name);
        if !data.join("CURRENT").exists() {
            let t = Instant::now();
            fill(&data, events, sessions).await?;
            eprintln!(
                "filled {name}: {events} events over {sessions} sessions in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
        let mut ready = Vec::new();
        for _ in 0..args.trials {
            let (server, took) = spawn::spawn(&bin, &data, SECRET).await?;
            ready.push(took.as_secs_f64() * 1000.0);
            drop(server);
        }
        let in_order: Vec<String> = ready.iter().map(|r| format!("{r:.0}")).collect();
        let r = spawn::median(&mut ready);
        let ratio = match baseline {
            Some(b) => format!(" ratio_to_empty={:.2}", r / b),
            None => String::new(),
        };
        println!(
            "store={name} events={events} sessions={sessions} ready_ms_median={r:.1} ready_ms_min={:.1} ready_ms_max={:.1} size_mb={:.0}{ratio} ready_ms_in_order={}",
            ready.first().copied().unwrap_or_default(),
            ready.last().copied().unwrap_or_default(),
            dir_size(&data) as f64 / 1e6,
            in_order.join(","),
        );
        if baseline.is_none() {
            baseline = Some(r);
        }
    }
    Ok(())
}

/// Bytes under a directory.
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => todo.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Opens `sessions` sessions and appends `events` commands round-robin over them through the
/// real writer (`sync`, default snapshot interval), then closes the store.
async fn fill(dir: &Path, events: u64, sessions: u64) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir).map_err(|e| e.to_string())?);
    let (w, task) = writer::spawn_tuned(
        store,
        Arc::new(Hub::new()),
        Arc::new(copanel::search::ContactIndex::new()),
        Durability::Sync,
        Limits::default(),
        copanel::webhooks::Outbox::new(),
        Tuning::default(),
    );
    let company: Arc<str> = Arc::from("acme");
    let who = |id: &str, role| Principal {
        id: id.into(),
        role,
        groups: vec![],
    };
    let opens = (0..sessions.min(events)).map(|s| {
        let cmd = Command::OpenSession {
            channel: "chat".into(),
            client: Default::default(),
            parameters: Default::default(),
            owner: Owner::Operator {
                operator_id: format!("op{}", s % 100),
            },
        };
        (s, who("platform", Role::Service), cmd)
    });
    let rest = (sessions.min(events)..events).map(|i| {
        let s = i % sessions;
        let cmd = spawn::filler_command(i, || format!("message number {i} in session {s}"));
        (s, who(&format!("op{}", s % 100), Role::Operator), cmd)
    });
    let names = (0..sessions)
        .map(|s| StreamName::session(&format!("s{s}")).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let commands = opens
        .chain(rest)
        .filter_map(|(s, p, c)| Some((names.get(s as usize)?.clone(), p, c)));
    spawn::submit_all(&w, &company, commands, CHUNK).await?;
    drop(w);
    task.await.map_err(|e| e.to_string())
}
