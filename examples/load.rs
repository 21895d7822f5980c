//! Load tool: fan-out throughput and command-to-delivery latency of copanel, and of a bare
//! fan-out baseline (`examples/bare.rs`) and a Socket.IO server (`examples/socketio/server.js`)
//! driven the same way, in the same run.
//!
//! ```text
//! # copanel, then the bare baseline, at three offered rates, 3 runs each, with ratios:
//! cargo build --release --bin copanel --examples
//! target/release/examples/load --spawn target/release/copanel --bare target/release/examples/bare \
//!     --compare --rates 2000,10000,40000 --repeats 3 --csv bench.csv
//! # the same, and the Socket.IO peer third (`npm ci` in examples/socketio first):
//! target/release/examples/load --spawn target/release/copanel --bare target/release/examples/bare \
//!     --socketio examples/socketio/server.js --compare --rates 2000,10000 --repeats 3
//! # one target against a server that is already running (its limits apply):
//! target/release/examples/load --url ws://127.0.0.1:7700/ws --secret S --rates 5000
//! ```
//!
//! The shape (issue 6): `--sessions` S (default 1000) sessions of `--members` R (default 5)
//! WebSocket connections each, so S x R connections (5000). Member 0 is the session's owner
//! (an operator token); the others are supervisors (who may read every session). Every member
//! subscribes to its session. Each owner sends commands at a fixed pace — `set_parameter`, and
//! every `--note-every`th an `add_note` while the session has room for notes — so the offered
//! load is `rate` commands/s in total (`rate / S` per session), and each command becomes one
//! event delivered to R members. The send time (microseconds since the tool started) is the
//! parameter value / the start of the note text; every member reads it back from the event and
//! records the command-to-delivery latency in an HDR histogram.
//!
//! Each run has a warm-up (`--warmup` s) and a measured window (`--duration` s); only what
//! happens inside the window counts (commands sent, acks received, events delivered). After the
//! window every connection keeps reading until nothing arrives for 0.5 s (at most 60 s), and
//! events of commands sent before a run started are not counted in it (`stale`), so a saturated
//! run's backlog does not flatter the next one. One summary line per run on stdout (these
//! figures are from the run recorded in BENCHMARKS.md):
//!
//! ```text
//! target=copanel durability=sync conns=5000 offered=2000 sent_per_s=2000 acked_per_s=2000 delivered_per_s=10002 p50_ms=1.55 p99_ms=29.25 p999_ms=42.59 ack_p99_ms=29.25 frame_bytes=216 errors=0 stale=0 load=2.71 cpu_busy=38.2 steal=0.4
//! ```
//!
//! `cpu_busy` and `steal` are the whole machine's, in percent of all its CPUs, over the window
//! (from `/proc/stat`; `?` where there is none): busy is everything but idle and IO wait, and
//! steal is time the hypervisor gave this VM's CPUs to someone else. On a VM a run with much
//! steal measured the host, not the server (BENCHMARKS.md, sixth pass).
//!
//! Latencies are kept as samples per connection task and put in one histogram per run: a
//! histogram per task was 1.7 GB of counters per run at 5000 connections, which made the first
//! run of every tool process too slow to keep its pace (BENCHMARKS.md, seventh pass).
//!
//! `--target bare` drives `examples/bare.rs` instead: the same rooms and members; the owner's
//! message (a binary frame of the same size as copanel's event frames, measured in the copanel
//! run of `--compare`, else `--bare-bytes`) is broadcast by the server to every member of the
//! room, the owner included; the owner receiving its own message counts as its "ack".
//! `--target socketio` drives the Socket.IO peer (`--socketio SCRIPT` starts it with `--node`;
//! else `--url ws://H:P`) the same way: each connection joins its room through the Engine.IO
//! and Socket.IO handshakes (`room` query parameter), the owner emits an `m` event whose
//! payload is a string of the same size budget (the whole text frame, `42["m","t<µs> <id> x…"]`,
//! is as long as bare's), the server broadcasts it to the room, owner included, and the
//! tool answers the server's heartbeat pings.
//! `--compare` (with `--spawn` and `--bare`) runs copanel first, then bare, then the Socket.IO
//! peer if `--socketio` is given, at the same rates, and prints for each peer a line of copanel's
//! medians as ratios to that peer's, with the median steal of each side.
//! `--csv FILE` appends one row per run (the input of `examples/plot.rs`).
//!
//! For copanel the summary line also gives the server's own view of the acks in the window,
//! from two scrapes of its `/metrics` (one as the window opens, one as it closes):
//! `server_ack_mean_ms` (`copanel_ack_latency_seconds`: from the connection taking a command to
//! its task taking the ack), `writer_ack_mean_ms` (`copanel_writer_ack_seconds`: the writer's
//! part of it, from its queue to its ack) and `server_ack_10ms_pct` (acks within 10 ms, of
//! the server's histogram); `?` where a scrape failed. The tool's own latencies include what
//! lies outside the ack's path: reading the command, the other members' deliveries and the
//! tool's own scheduling (BENCHMARKS.md, ninth pass).
//!
//! With `--spawn BIN` the tool starts `BIN serve` itself on a temp data dir and a free port, with
//! a config file that lifts the per-connection command rate limit (the owner of a session sends
//! `rate / S` commands/s, which passes the default 50/s at high rates); the connection cap
//! (20,000) already fits 5000. Against a running server (`--url`), its limits apply. The tool
//! raises its own open-files soft limit to the hard limit.
//!
//! Everything is bounded: connect and subscribe timeouts, the window, a drain after it.

use clap::Parser;
use copanel::auth::{now_secs, Auth, Claims};
use copanel_protocol::Role;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The servers' allocator: the tool shares the machine's cores with the server it measures.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Notes per session the tool adds at most (the server's limit is 500); then only parameters.
const NOTE_BUDGET: u32 = 450;
/// Distinct parameter keys per session (the server's limit is 100).
const PARAMETER_KEYS: u64 = 50;
/// Connection attempts in progress at once.
const CONNECT_PARALLEL: usize = 100;
/// Bound of one connect + subscribe.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Sessions opened per service connection (under the default burst of 100 commands).
const OPEN_CHUNK: usize = 90;
/// After the window, how long the connections keep reading (and ignoring) what is in flight at
/// least; then until nothing arrives for `QUIET`, at most `DRAIN_MAX` — so that a saturated run's
/// backlog does not spill into the next run.
const DRAIN: Duration = Duration::from_secs(2);
const QUIET: Duration = Duration::from_millis(500);
const DRAIN_MAX: Duration = Duration::from_secs(60);
/// Latencies above this are clamped into the histogram's top bucket.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Frame size for `--target bare` when no copanel run measured it.
const DEFAULT_BARE_BYTES: usize = 200;

#[derive(Parser, Clone)]
#[command(
    name = "load",
    about = "Fan-out load: delivered events/s and command-to-delivery latency, copanel vs a bare baseline and a Socket.IO server"
)]
struct Args {
    /// Which server to drive (ignored with --compare, which runs copanel, bare and, with
    /// --socketio, the Socket.IO peer).
    #[arg(long, value_enum, default_value = "copanel")]
    target: Target,
    /// WebSocket URL of a running copanel server (`ws://H:P/ws`), or bare or Socket.IO server
    /// (`ws://H:P`); ignored when the tool spawns the server.
    #[arg(long, default_value = "ws://127.0.0.1:7700/ws")]
    url: String,
    /// copanel's token secret (with --spawn: passed to the server; default: generated).
    #[arg(long, env = "COPANEL_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Company of the sessions and tokens.
    #[arg(long, default_value = "load")]
    company: String,
    /// Start this copanel binary (`serve`) on a temp dir and a free port; killed at the end.
    #[arg(long)]
    spawn: Option<PathBuf>,
    /// Start this bare baseline binary (`examples/bare`) for `--target bare` / `--compare`.
    #[arg(long)]
    bare: Option<PathBuf>,
    /// Start this Socket.IO peer (`examples/socketio/server.js`, after `npm ci` there) with
    /// `--node` for `--target socketio`; with `--compare`, it runs third.
    #[arg(long)]
    socketio: Option<PathBuf>,
    /// The Node.js binary that runs `--socketio`.
    #[arg(long, default_value = "node")]
    node: PathBuf,
    /// Run copanel then bare (then the Socket.IO peer, with `--socketio`) at the same rates and
    /// print copanel's figures as ratios to each peer's.
    #[arg(long)]
    compare: bool,
    /// copanel durability of the spawned server: sync or relaxed.
    #[arg(long, default_value = "sync")]
    durability: String,
    /// Sessions (rooms).
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Members per session (connections); member 0 sends the commands.
    #[arg(long, default_value_t = 5)]
    members: usize,
    /// Offered commands per second, in total over all sessions; a comma list sweeps.
    #[arg(long, default_value = "10000", value_delimiter = ',')]
    rates: Vec<f64>,
    /// Runs per rate (the comparison uses the median).
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// Warm-up before each window, seconds.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Every Nth command is an `add_note` (while the session has note budget); 0: never.
    #[arg(long, default_value_t = 10)]
    note_every: u64,
    /// Size of the bare and Socket.IO targets' frames, bytes (0: copanel's measured mean event
    /// frame, else 200).
    #[arg(long, default_value_t = 0)]
    bare_bytes: usize,
    /// Append one CSV row per run to this file (header written when the file is new).
    #[arg(long)]
    csv: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum Target {
    Copanel,
    Bare,
    Socketio,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Copanel => "copanel",
            Target::Bare => "bare",
            Target::Socketio => "socketio",
        }
    }

    /// A peer: a server that broadcasts the owner's frame as is (bare, Socket.IO).
    fn is_peer(self) -> bool {
        self != Target::Copanel
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = check(&args) {
        eprintln!("load: {e}");
        return ExitCode::FAILURE;
    }
    raise_fd_limit();
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
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: &Args) -> Result<(), String> {
    if args.sessions == 0 || args.members == 0 || args.repeats == 0 {
        return Err("--sessions, --members and --repeats must be at least 1".into());
    }
    if args.rates.is_empty() || args.rates.iter().any(|r| !(*r > 0.0 && *r <= 10_000_000.0)) {
        return Err("--rates: every rate must be more than 0 and at most 10,000,000".into());
    }
    for (name, v) in [("--warmup", args.warmup), ("--duration", args.duration)] {
        if !(0.0..=3600.0).contains(&v) {
            return Err(format!("{name} must be between 0 and 3600 seconds"));
        }
    }
    if args.duration <= 0.0 {
        return Err("--duration must be more than 0".into());
    }
    if args.durability != "sync" && args.durability != "relaxed" {
        return Err(format!(
            "--durability {:?}: use sync or relaxed",
            args.durability
        ));
    }
    if args.compare && (args.spawn.is_none() || args.bare.is_none()) {
        return Err("--compare needs --spawn COPANEL_BIN and --bare BARE_BIN".into());
    }
    Ok(())
}

/// 5000 client sockets need more than the usual 1024 descriptors.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => eprintln!("load: open-files limit {n}"),
        Err(e) => eprintln!("load: cannot raise the open-files limit: {e}"),
    }
}

/// Microseconds since the tool started: the timestamps carried in the payloads.
fn now_us() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The machine's CPU time so far, from the `cpu` line of `/proc/stat`: (busy, steal, total), in
/// clock ticks. Busy is user, nice, system, irq and softirq; `None` where there is no such file.
fn cpu_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    let busy = field(0) + field(1) + field(2) + field(5) + field(6);
    let steal = field(7);
    let total = busy + field(3) + field(4) + steal;
    Some((busy, steal, total))
}

/// Busy and steal percentages between two [`cpu_ticks`] readings; `None` if either is missing
/// or no time passed between them.
fn cpu_share(from: Option<(u64, u64, u64)>, to: Option<(u64, u64, u64)>) -> Option<(f64, f64)> {
    let ((b0, s0, t0), (b1, s1, t1)) = (from?, to?);
    let total = t1.checked_sub(t0).filter(|&t| t > 0)? as f64;
    Some((
        100.0 * b1.saturating_sub(b0) as f64 / total,
        100.0 * s1.saturating_sub(s0) as f64 / total,
    ))
}

/// A percentage for the summary line and the CSV: one decimal, or `?` when unknown.
fn pct(p: Option<f64>) -> String {
    p.filter(|p| p.is_finite())
        .map_or_else(|| "?".into(), |p| format!("{p:.1}"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Every run of every target, in order; each summary line is printed as its run ends.
async fn run(args: Args) -> Result<Vec<Summary>, String> {
    now_us();
    if let Some(path) = &args.csv {
        check_csv(path)?;
    }
    let targets = if args.compare {
        let mut t = vec![Target::Copanel, Target::Bare];
        if args.socketio.is_some() {
            t.push(Target::Socketio);
        }
        t
    } else {
        vec![args.target]
    };
    let mut results: Vec<Summary> = Vec::new();
    let mut frame_bytes = args.bare_bytes;
    for target in targets {
        let server = match target {
            Target::Copanel => match &args.spawn {
                Some(bin) => Some(Spawned::copanel(bin, &args).await?),
                None => None,
            },
            Target::Bare => match &args.bare {
                Some(bin) => Some(Spawned::bare(bin).await?),
                None => None,
            },
            Target::Socketio => match &args.socketio {
                Some(script) => Some(Spawned::socketio(&args.node, script).await?),
                None => None,
            },
        };
        let url = match &server {
            Some(s) => s.url.clone(),
            None => args.url.clone(),
        };
        let secret = server
            .as_ref()
            .and_then(|s| s.secret.clone())
            .or_else(|| args.secret.clone());
        let mut fleet = Fleet::connect(target, &args, &url, secret.as_deref()).await?;
        if target.is_peer() && frame_bytes == 0 {
            frame_bytes = DEFAULT_BARE_BYTES;
        }
        fleet.bare_bytes = frame_bytes.max(16);
        for &rate in &args.rates {
            for rep in 1..=args.repeats {
                let s = fleet.run(&args, rate, rep).await;
                println!("{}", s.line());
                if let Some(path) = &args.csv {
                    if let Err(e) = append_csv(path, &s) {
                        eprintln!("load: cannot write {}: {e}", path.display());
                    }
                }
                if target == Target::Copanel && frame_bytes == 0 && s.mean_event_bytes > 0 {
                    frame_bytes = s.mean_event_bytes;
                    eprintln!("load: copanel's event frames are {frame_bytes} bytes on average; the peers' frames have that size");
                }
                results.push(s);
            }
        }
        fleet.close().await;
        drop(server);
    }
    if args.compare {
        for &rate in &args.rates {
            let pick = |t: Target| -> Vec<&Summary> {
                results
                    .iter()
                    .filter(|s| s.target == t && s.offered == rate)
                    .collect()
            };
            let c = pick(Target::Copanel);
            let med = |v: &[&Summary], f: fn(&Summary) -> f64| median(v.iter().map(|s| f(s)));
            let cd = med(&c, |s| s.delivered_per_s());
            let c99 = med(&c, |s| s.p99_ms);
            // The steal each side's runs had: ratios of runs made on a busier host mislead.
            let steal = |v: &[&Summary]| pct(Some(median(v.iter().filter_map(|s| s.steal))));
            for peer in [Target::Bare, Target::Socketio] {
                let p = pick(peer);
                if p.is_empty() {
                    continue;
                }
                let pd = med(&p, |s| s.delivered_per_s());
                let p99 = med(&p, |s| s.p99_ms);
                let name = peer.name();
                println!(
                    "compare offered={rate:.0} runs={} copanel_delivered_per_s={cd:.0} {name}_delivered_per_s={pd:.0} delivered_ratio={:.3} copanel_p99_ms={c99:.2} {name}_p99_ms={p99:.2} p99_ratio={:.2} copanel_steal={} {name}_steal={}",
                    c.len().min(p.len()),
                    ratio(cd, pd),
                    ratio(c99, p99),
                    steal(&c),
                    steal(&p),
                );
            }
        }
    }
    Ok(results)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

fn median(it: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = it.collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

// ---------------------------------------------------------------------------------------------
// Servers of our own.
// ---------------------------------------------------------------------------------------------

/// A server started by this tool; dropping it kills the child by its handle (and removes the
/// temp dir).
struct Spawned {
    child: Child,
    url: String,
    secret: Option<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> Result<SocketAddr, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    Ok(([127, 0, 0, 1], port).into())
}

impl Spawned {
    async fn copanel(bin: &PathBuf, args: &Args) -> Result<Spawned, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let addr = free_addr()?;
        let secret = args
            .secret
            .clone()
            .unwrap_or_else(|| format!("load-{:032x}", rand::random::<u128>()));
        // The owner of a session sends `rate / sessions` commands/s: lift the per-connection
        // limit (default 50/s, burst 100) so that it is not what gets measured.
        let config = dir.path().join("load.toml");
        std::fs::write(
            &config,
            "[limits]\ncommands_per_sec = 1000000.0\ncommand_burst = 1000000.0\n",
        )
        .map_err(|e| format!("config file: {e}"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data")
            .arg(dir.path().join("data"))
            .arg("--durability")
            .arg(&args.durability)
            .arg("--secret")
            .arg(&secret)
            .env("RUST_LOG", "warn");
        let url = format!("ws://{addr}/ws");
        Spawned::start(cmd, dir, addr, url, Some(secret), "copanel").await
    }

    async fn bare(bin: &PathBuf) -> Result<Spawned, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let addr = free_addr()?;
        let mut cmd = Command::new(bin);
        cmd.arg("--listen").arg(addr.to_string());
        let url = format!("ws://{addr}");
        Spawned::start(cmd, dir, addr, url, None, "bare").await
    }

    async fn socketio(node: &PathBuf, script: &PathBuf) -> Result<Spawned, String> {
        let modules = script
            .parent()
            .map(|d| d.join("node_modules").join("socket.io"));
        if !modules.is_some_and(|m| m.is_dir()) {
            return Err(format!(
                "{} has no node_modules/socket.io next to it: run `npm ci` in its directory",
                script.display()
            ));
        }
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let addr = free_addr()?;
        let mut cmd = Command::new(node);
        // Socket.IO's ping every 25 s, but 90 s for the pong instead of 20: between runs (and
        // while other rooms drain, up to `DRAIN_MAX`) a socket is not read.
        cmd.arg(script)
            .arg("--listen")
            .arg(addr.to_string())
            .args(["--ping-timeout", "90000"]);
        let url = format!("ws://{addr}");
        Spawned::start(cmd, dir, addr, url, None, "socketio").await
    }

    async fn start(
        mut cmd: Command,
        dir: tempfile::TempDir,
        addr: SocketAddr,
        url: String,
        secret: Option<String>,
        what: &str,
    ) -> Result<Spawned, String> {
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("log file: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot start the {what} server: {e}"))?;
        let mut server = Spawned {
            child,
            url,
            secret,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!(
                    "the {what} server exited at start ({status}):\n{log}"
                ));
            }
            if TcpStream::connect(addr).await.is_ok() {
                eprintln!(
                    "load: started the {what} server (pid {}) on {addr}",
                    server.child.id()
                );
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the {what} server did not listen on {addr} within 15 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Wire helpers.
// ---------------------------------------------------------------------------------------------

/// Small read buffers: tungstenite zero-fills its whole read buffer (128 KiB by default) before
/// each socket read; 8 KiB, as in copanel's server and the bare baseline.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
}

async fn connect(url: &str, token: Option<&str>) -> Result<Ws, String> {
    let mut req = url
        .into_client_request()
        .map_err(|e| format!("bad url {url:?}: {e}"))?;
    if let Some(token) = token {
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?,
        );
        req.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("copanel.v1.msgpack"),
        );
    }
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(req, Some(ws_config()), true),
    )
    .await
    {
        Err(_) => Err(format!("no connection to {url} within {CONNECT_TIMEOUT:?}")),
        Ok(Err(e)) => Err(format!("cannot connect to {url}: {e}")),
        Ok(Ok((ws, _))) => Ok(ws),
    }
}

fn mint(auth: &Auth, company: &str, sub: &str, role: Role) -> Result<String, String> {
    auth.mint(&Claims {
        sub: sub.into(),
        company: company.into(),
        role,
        name: None,
        groups: Vec::new(),
        exp: now_secs() + 24 * 3600,
    })
    .map_err(|e| format!("cannot mint a token: {e}"))
}

fn packed<T: Serialize>(v: &T) -> Message {
    Message::Binary(rmp_serde::to_vec_named(v).unwrap_or_default().into())
}

#[derive(Serialize)]
struct OutCommand<'a, C> {
    #[serde(rename = "type")]
    ty: &'static str,
    id: u64,
    stream: &'a str,
    command_id: &'a str,
    command: C,
}

#[derive(Serialize)]
struct SetParameter<'a> {
    kind: &'static str,
    key: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct AddNote<'a> {
    kind: &'static str,
    text: &'a str,
}

/// The fields of a server frame the tool looks at, borrowed from the frame's bytes (no
/// allocation per delivered event).
#[derive(Deserialize)]
struct InFrame<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, borrow)]
    code: Option<&'a str>,
    #[serde(default, borrow)]
    event: Option<InEvent<'a>>,
}

#[derive(Deserialize)]
struct InEvent<'a> {
    #[serde(default, borrow)]
    value: Option<&'a str>,
    #[serde(default, borrow)]
    text: Option<&'a str>,
}

/// The send time in `t<micros>…`.
fn stamp(s: &str) -> Option<u64> {
    let digits = s.strip_prefix('t')?;
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

// ---------------------------------------------------------------------------------------------
// The fleet: every connection, kept across the runs of one target.
// ---------------------------------------------------------------------------------------------

struct Room {
    stream: String,
    /// Member 0 is the owner, the sender.
    members: Vec<Ws>,
    notes: u32,
}

struct Fleet {
    target: Target,
    durability: String,
    rooms: Vec<Room>,
    connections: usize,
    bare_bytes: usize,
    run_id: String,
    /// Runs so far: command ids of run k start at k << 32, so a late ack of an earlier run never
    /// matches a command of this one.
    runs: u64,
    /// copanel's HTTP address (`host:port`, from the WebSocket URL), for its `/metrics`.
    metrics_addr: Option<String>,
}

impl Fleet {
    async fn connect(
        target: Target,
        args: &Args,
        url: &str,
        secret: Option<&str>,
    ) -> Result<Fleet, String> {
        let run_id = format!("{:08x}", rand::random::<u32>());
        let streams: Vec<String> = (0..args.sessions)
            .map(|i| match target {
                Target::Copanel => format!("session/load-{run_id}-{i}"),
                Target::Bare | Target::Socketio => format!("{i}"),
            })
            .collect();
        let auth = match target {
            Target::Copanel => {
                let secret = secret.ok_or("--secret (or COPANEL_SECRET) is needed for copanel")?;
                Some(Auth::new(secret.as_bytes()))
            }
            Target::Bare | Target::Socketio => None,
        };
        let owner = |s: usize| format!("op-{run_id}-{s}");
        if let Some(auth) = &auth {
            let service = mint(auth, &args.company, "load-platform", Role::Service)?;
            let t = Instant::now();
            let owners: Vec<String> = (0..args.sessions).map(owner).collect();
            open_sessions(url, &service, &streams, &owners).await?;
            eprintln!(
                "load: opened {} sessions in {:.2} s",
                streams.len(),
                t.elapsed().as_secs_f64()
            );
        }
        let t = Instant::now();
        let total = args.sessions * args.members;
        let mut slots: Vec<Vec<Option<Ws>>> = (0..args.sessions)
            .map(|_| (0..args.members).map(|_| None).collect())
            .collect();
        let jobs: Vec<(usize, usize)> = (0..args.sessions)
            .flat_map(|s| (0..args.members).map(move |m| (s, m)))
            .collect();
        for batch in jobs.chunks(CONNECT_PARALLEL) {
            let mut tasks = Vec::new();
            for &(s, m) in batch {
                let (conn_url, token) = match &auth {
                    Some(auth) => {
                        let token = if m == 0 {
                            mint(auth, &args.company, &owner(s), Role::Operator)?
                        } else {
                            let sub = format!("sup-{run_id}-{s}-{m}");
                            mint(auth, &args.company, &sub, Role::Supervisor)?
                        };
                        (url.to_owned(), Some(token))
                    }
                    None => (peer_url(target, url, &streams[s]), None),
                };
                let stream = streams[s].clone();
                tasks.push(tokio::spawn(async move {
                    let mut ws = connect(&conn_url, token.as_deref()).await?;
                    match target {
                        Target::Copanel => subscribe(&mut ws, &stream).await?,
                        Target::Socketio => sio_join(&mut ws).await?,
                        Target::Bare => {}
                    }
                    Ok::<_, String>((s, m, ws))
                }));
            }
            for task in tasks {
                let (s, m, ws) = task.await.map_err(|e| format!("connect task: {e}"))??;
                slots[s][m] = Some(ws);
            }
        }
        let rooms = slots
            .into_iter()
            .zip(streams)
            .map(|(members, stream)| Room {
                stream,
                members: members.into_iter().flatten().collect(),
                notes: 0,
            })
            .collect();
        eprintln!(
            "load: {} {total} connections ({} sessions x {} members) connected and subscribed in {:.2} s",
            target.name(),
            args.sessions,
            args.members,
            t.elapsed().as_secs_f64()
        );
        Ok(Fleet {
            target,
            durability: if target == Target::Copanel {
                args.durability.clone()
            } else {
                "none".into()
            },
            rooms,
            connections: total,
            bare_bytes: DEFAULT_BARE_BYTES,
            run_id,
            runs: 0,
            metrics_addr: (target == Target::Copanel)
                .then(|| http_addr(url))
                .flatten(),
        })
    }

    /// One warm-up and window at `rate` commands/s in total.
    async fn run(&mut self, args: &Args, rate: f64, rep: usize) -> Summary {
        let per_session = rate / self.rooms.len() as f64;
        let start = now_us();
        let window_from = start + (args.warmup * 1e6) as u64;
        let window_to = window_from + (args.duration * 1e6) as u64;
        self.runs += 1;
        let plan = Plan {
            target: self.target,
            run_start: start,
            id_base: self.runs << 32,
            period: Duration::from_secs_f64(1.0 / per_session),
            window_from,
            window_to,
            note_every: args.note_every,
            bare_bytes: self.bare_bytes,
            tag: format!("{}-{rate}-{rep}", self.run_id),
        };
        eprintln!(
            "load: {} offered {rate:.0} commands/s ({per_session:.2}/s per session), warm-up {} s, window {} s",
            self.target.name(),
            args.warmup,
            args.duration
        );
        // The machine's CPU over the window, and copanel's own view of its acks, read when the
        // window opens and when it closes.
        let metrics_addr = self.metrics_addr.clone();
        let window_figures = tokio::spawn(async move {
            let at =
                |us: u64| tokio::time::sleep(Duration::from_micros(us.saturating_sub(now_us())));
            let read_at = |when: u64| {
                let addr = metrics_addr.clone();
                async move {
                    at(when).await;
                    let cpu = cpu_ticks();
                    let acks = match &addr {
                        Some(addr) => Some(scrape_acks(addr).await),
                        None => None,
                    };
                    (cpu, acks)
                }
            };
            let (cpu_from, acks_from) = read_at(window_from).await;
            let (cpu_to, acks_to) = read_at(window_to).await;
            let server = acks_from
                .zip(acks_to)
                .map(|(from, to)| Some(ServerAcks::between(from?, to?)));
            (cpu_share(cpu_from, cpu_to), server)
        });
        let mut tasks = Vec::new();
        for room in std::mem::take(&mut self.rooms) {
            let plan = plan.clone();
            tasks.push(tokio::spawn(drive_room(room, plan)));
        }
        let mut stats = Stats::new();
        for task in tasks {
            match task.await {
                Ok((room, s)) => {
                    stats.merge(s);
                    self.rooms.push(room);
                }
                Err(e) => {
                    stats.errors.entry(format!("task: {e}")).or_insert(1);
                }
            }
        }
        let lost: usize =
            self.connections - self.rooms.iter().map(|r| r.members.len()).sum::<usize>();
        if !stats.errors.is_empty() {
            eprintln!("load: errors by kind: {:?}", stats.errors);
        }
        let window = args.duration;
        let (cpu, server) = match window_figures.await {
            Ok(figures) => figures,
            // Not copanel: no view of its own; copanel: unknown.
            Err(_) => (None, self.metrics_addr.as_ref().map(|_| None)),
        };
        let (cpu_busy, steal) = cpu.unzip();
        let (latency, ack_latency) = (histogram(&stats.latency), histogram(&stats.ack_latency));
        Summary {
            target: self.target,
            durability: self.durability.clone(),
            connections: self.connections - lost,
            offered: rate,
            rep,
            window,
            sent: stats.sent,
            acked: stats.acked,
            delivered: stats.delivered,
            p50_ms: latency.value_at_quantile(0.50) as f64 / 1000.0,
            p99_ms: latency.value_at_quantile(0.99) as f64 / 1000.0,
            p999_ms: latency.value_at_quantile(0.999) as f64 / 1000.0,
            ack_p99_ms: ack_latency.value_at_quantile(0.99) as f64 / 1000.0,
            errors: stats.errors.values().sum(),
            stale: stats.stale,
            mean_event_bytes: stats
                .event_bytes
                .checked_div(stats.events_seen)
                .unwrap_or(0) as usize,
            load: loadavg(),
            cpu_busy,
            steal,
            server,
        }
    }

    async fn close(self) {
        let mut tasks = Vec::new();
        for room in self.rooms {
            tasks.push(tokio::spawn(async move {
                for mut ws in room.members {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// A peer's WebSocket URL for one room, from its base URL (`ws://H:P`).
fn peer_url(target: Target, base: &str, room: &str) -> String {
    let base = base.trim_end_matches('/');
    match target {
        Target::Socketio => {
            format!("{base}/socket.io/?EIO=4&transport=websocket&room={room}")
        }
        _ => format!("{base}/r/{room}"),
    }
}

/// Joins Socket.IO's default namespace over a WebSocket just opened: the server's Engine.IO
/// `open` packet (`0{…}`), the client's namespace `connect` (`40`), the server's answer
/// (`40{"sid":…}`). The server puts the socket in its room before it answers.
async fn sio_join(ws: &mut Ws) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    let open = sio_text(ws, deadline, "open packet").await?;
    if !open.starts_with("0{") {
        return Err(format!("expected the Engine.IO open packet, got {open:?}"));
    }
    ws.send(Message::text("40"))
        .await
        .map_err(|e| format!("Socket.IO connect: {e}"))?;
    let answer = sio_text(ws, deadline, "connect answer").await?;
    if answer.starts_with("40") {
        Ok(())
    } else {
        Err(format!("Socket.IO connect refused: {answer:?}"))
    }
}

/// The next text frame but a heartbeat ping (answered), by `deadline`.
async fn sio_text(
    ws: &mut Ws,
    deadline: tokio::time::Instant,
    what: &str,
) -> Result<String, String> {
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err(format!("no Socket.IO {what} within {CONNECT_TIMEOUT:?}")),
            Ok(Some(Ok(msg))) if sio_ping(&msg) => ws
                .send(Message::text("3"))
                .await
                .map_err(|e| format!("Socket.IO pong: {e}"))?,
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.as_str().to_owned()),
            Ok(Some(Ok(_))) => continue,
            Ok(_) => return Err(format!("connection closed before the Socket.IO {what}")),
        }
    }
}

/// Engine.IO's heartbeat: the server sends `2` (ping), the client answers `3` (pong).
fn sio_ping(msg: &Message) -> bool {
    matches!(msg, Message::Text(t) if t.as_str() == "2")
}

/// The Socket.IO frame of an `m` event whose payload is the string `t<micros> <id> ` padded
/// with `x` to `bytes` bytes in all (at least the header's).
fn sio_frame(t: u64, id: u64, bytes: usize) -> Message {
    let mut f = format!("42[\"m\",\"t{t} {id} ");
    let pad = bytes.saturating_sub(f.len() + 2);
    f.extend(std::iter::repeat_n('x', pad));
    f.push_str("\"]");
    Message::text(f)
}

/// The send time and id of an `m` event's frame (see [`sio_frame`]).
fn sio_event(frame: &str) -> Option<(u64, u64)> {
    let rest = frame.strip_prefix("42[\"m\",\"t")?;
    let mut it = rest.splitn(3, ' ');
    let t = it.next()?.parse().ok()?;
    let id = it.next()?.parse().ok()?;
    Some((t, id))
}

async fn subscribe(ws: &mut Ws, stream: &str) -> Result<(), String> {
    #[derive(Serialize)]
    struct Sub<'a> {
        #[serde(rename = "type")]
        ty: &'static str,
        id: u64,
        stream: &'a str,
    }
    ws.send(packed(&Sub {
        ty: "subscribe",
        id: 0,
        stream,
    }))
    .await
    .map_err(|e| format!("subscribe: {e}"))?;
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| format!("no `subscribed` for {stream} within {CONNECT_TIMEOUT:?}"))?;
        let Some(Ok(Message::Binary(b))) = msg else {
            if matches!(msg, Some(Ok(_))) {
                continue;
            }
            return Err(format!("connection closed while subscribing to {stream}"));
        };
        if let Ok(f) = rmp_serde::from_slice::<InFrame>(&b) {
            match f.ty {
                "subscribed" => return Ok(()),
                "error" => {
                    return Err(format!(
                        "subscribe {stream} refused: {}",
                        f.code.unwrap_or("?")
                    ))
                }
                _ => {}
            }
        }
    }
}

/// Opens the sessions, `OPEN_CHUNK` per service connection, all chunks at once.
async fn open_sessions(
    url: &str,
    token: &str,
    streams: &[String],
    owners: &[String],
) -> Result<(), String> {
    #[derive(Serialize)]
    struct Client {
        name: &'static str,
        email: &'static str,
    }
    #[derive(Serialize)]
    struct OwnerOp<'a> {
        operator_id: &'a str,
    }
    #[derive(Serialize)]
    struct Open<'a> {
        kind: &'static str,
        channel: &'static str,
        client: Client,
        owner: OwnerOp<'a>,
    }
    let pairs: Vec<(String, String)> = streams
        .iter()
        .cloned()
        .zip(owners.iter().cloned())
        .collect();
    let mut tasks = Vec::new();
    for chunk in pairs.chunks(OPEN_CHUNK) {
        let chunk = chunk.to_vec();
        let url = url.to_owned();
        let token = token.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut ws = connect(&url, Some(&token)).await?;
            for (i, (stream, owner)) in chunk.iter().enumerate() {
                let command_id = format!("open-{stream}");
                ws.feed(packed(&OutCommand {
                    ty: "command",
                    id: i as u64,
                    stream,
                    command_id: &command_id,
                    command: Open {
                        kind: "open_session",
                        channel: "chat",
                        client: Client {
                            name: "Load Test",
                            email: "load@example.com",
                        },
                        owner: OwnerOp { operator_id: owner },
                    },
                }))
                .await
                .map_err(|e| format!("send: {e}"))?;
            }
            ws.flush().await.map_err(|e| format!("send: {e}"))?;
            let mut left = chunk.len();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while left > 0 {
                let msg = tokio::time::timeout_at(deadline, ws.next())
                    .await
                    .map_err(|_| "opening the sessions took more than 60 s".to_string())?;
                let Some(Ok(msg)) = msg else {
                    return Err("the server closed the connection while opening sessions".into());
                };
                let Message::Binary(b) = msg else { continue };
                let Ok(f) = rmp_serde::from_slice::<InFrame>(&b) else {
                    continue;
                };
                match f.ty {
                    "ack" => left -= 1,
                    "error" => {
                        return Err(format!("open_session refused: {}", f.code.unwrap_or("?")))
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

// ---------------------------------------------------------------------------------------------
// One run.
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Plan {
    target: Target,
    /// When this run started (µs); an event sent before it is an earlier run's backlog.
    run_start: u64,
    /// The first command id of this run.
    id_base: u64,
    /// Between two commands of one owner.
    period: Duration,
    window_from: u64,
    window_to: u64,
    note_every: u64,
    bare_bytes: usize,
    /// Makes command ids unique across runs.
    tag: String,
}

/// What a room (or the whole run) measured.
struct Stats {
    sent: u64,
    acked: u64,
    delivered: u64,
    /// Command-to-delivery latencies, µs, in arrival order; one histogram is made of a whole
    /// run's (see [`histogram`]). A histogram per connection task would be 139 KiB of counters
    /// each, 1.7 GB allocated, zeroed and merged per run at 5000 connections, in the warm-up.
    latency: Vec<u32>,
    /// Command-to-ack latencies, µs.
    ack_latency: Vec<u32>,
    errors: BTreeMap<String, u64>,
    event_bytes: u64,
    events_seen: u64,
    /// Deliveries of commands sent before this run (an earlier run's backlog), not counted.
    stale: u64,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            sent: 0,
            acked: 0,
            delivered: 0,
            latency: Vec::new(),
            ack_latency: Vec::new(),
            errors: BTreeMap::new(),
            event_bytes: 0,
            events_seen: 0,
            stale: 0,
        }
    }

    /// Takes `o`'s counts and samples (moved, not copied).
    fn merge(&mut self, mut o: Stats) {
        self.sent += o.sent;
        self.acked += o.acked;
        self.delivered += o.delivered;
        self.latency.append(&mut o.latency);
        self.ack_latency.append(&mut o.ack_latency);
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.event_bytes += o.event_bytes;
        self.events_seen += o.events_seen;
        self.stale += o.stale;
    }

    fn error(&mut self, what: &str) {
        *self.errors.entry(what.to_owned()).or_default() += 1;
    }

    fn in_window(plan: &Plan, t: u64) -> bool {
        t >= plan.window_from && t < plan.window_to
    }

    fn delivered_at(&mut self, plan: &Plan, sent_us: u64, bytes: usize) {
        let now = now_us();
        self.event_bytes += bytes as u64;
        self.events_seen += 1;
        if sent_us < plan.run_start {
            self.stale += 1;
            return;
        }
        if Stats::in_window(plan, now) {
            self.delivered += 1;
            self.latency.push(clamp_us(now.saturating_sub(sent_us)));
        }
    }

    fn acked_at(&mut self, plan: &Plan, sent_us: u64) {
        let now = now_us();
        if Stats::in_window(plan, now) {
            self.acked += 1;
            self.ack_latency.push(clamp_us(now.saturating_sub(sent_us)));
        }
    }
}

/// A latency for the histogram: at least 1 µs, at most `MAX_LATENCY_US`.
fn clamp_us(us: u64) -> u32 {
    u32::try_from(us.clamp(1, MAX_LATENCY_US)).unwrap_or(u32::MAX)
}

/// The HDR histogram (3 significant digits) of a run's latencies.
fn histogram(samples: &[u32]) -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static bounds");
    for &us in samples {
        h.saturating_record(u64::from(us));
    }
    h
}

/// One room for one run: the owner sends on its pace until the window ends while every member
/// reads; then everyone drains for `DRAIN`. Returns the room (its sockets) for the next run.
async fn drive_room(mut room: Room, plan: Plan) -> (Room, Stats) {
    let mut stats = Stats::new();
    let stop_sending = tokio::time::Instant::now()
        + Duration::from_micros(plan.window_to.saturating_sub(now_us()));
    let end = stop_sending + DRAIN;
    let members = std::mem::take(&mut room.members);
    let mut iter = members.into_iter();
    let Some(owner) = iter.next() else {
        return (room, stats);
    };
    let readers: Vec<_> = iter
        .map(|ws| {
            let plan = plan.clone();
            tokio::spawn(read_member(ws, plan, end))
        })
        .collect();
    let (owner, notes, owner_stats) =
        drive_owner(owner, &room.stream, room.notes, &plan, stop_sending, end).await;
    room.notes = notes;
    stats.merge(owner_stats);
    let mut members = Vec::new();
    if let Some(ws) = owner {
        members.push(ws);
    } else {
        stats.error("owner_connection_lost");
    }
    for r in readers {
        match r.await {
            Ok((Some(ws), s)) => {
                stats.merge(s);
                members.push(ws);
            }
            Ok((None, s)) => {
                stats.merge(s);
                stats.error("member_connection_lost");
            }
            Err(_) => stats.error("member_task"),
        }
    }
    room.members = members;
    (room, stats)
}

/// Reads one frame's worth of measurement into `stats`; `Some(id)` for the owner's acks.
fn observe(plan: &Plan, stats: &mut Stats, msg: &Message, sent: &mut HashMap<u64, u64>) {
    match (plan.target, msg) {
        (Target::Copanel, Message::Binary(b)) => {
            let Ok(f) = rmp_serde::from_slice::<InFrame>(b) else {
                stats.error("undecodable_frame");
                return;
            };
            match f.ty {
                "event" => {
                    let t = f
                        .event
                        .as_ref()
                        .and_then(|e| e.value.or(e.text))
                        .and_then(stamp);
                    if let Some(t) = t {
                        stats.delivered_at(plan, t, b.len());
                    }
                }
                "ack" => {
                    if let Some(t) = f.id.and_then(|id| sent.remove(&id)) {
                        stats.acked_at(plan, t);
                    }
                }
                "error" => {
                    if let Some(id) = f.id {
                        sent.remove(&id);
                    }
                    stats.error(f.code.unwrap_or("error"));
                }
                _ => {}
            }
        }
        (Target::Bare, Message::Binary(b)) => {
            let word = |at: usize| {
                b.get(at..at + 8)
                    .and_then(|w| <[u8; 8]>::try_from(w).ok())
                    .map(u64::from_le_bytes)
            };
            if let (Some(t), Some(id)) = (word(0), word(8)) {
                echoed(plan, stats, sent, t, id, b.len());
            }
        }
        (Target::Socketio, Message::Text(f)) => {
            let f = f.as_str();
            if let Some((t, id)) = sio_event(f) {
                echoed(plan, stats, sent, t, id, f.len());
            } else if f.starts_with("42") {
                stats.error("undecodable_frame");
            }
        }
        _ => {}
    }
}

/// A peer's broadcast (bare, Socket.IO) of a message sent at `t` with `id`: a delivery, and
/// for the owner, whose own message comes back, its "ack".
fn echoed(
    plan: &Plan,
    stats: &mut Stats,
    sent: &mut HashMap<u64, u64>,
    t: u64,
    id: u64,
    bytes: usize,
) {
    stats.delivered_at(plan, t, bytes);
    if sent.remove(&id).is_some() {
        stats.acked_at(plan, t);
    }
}

/// How long the next read may wait: until `end`, then `QUIET` at a time up to `end + DRAIN_MAX`.
/// `None`: stop reading.
fn read_deadline(end: tokio::time::Instant, idle_since_end: bool) -> Option<tokio::time::Instant> {
    let now = tokio::time::Instant::now();
    if now < end {
        Some(end)
    } else if idle_since_end || now >= end + DRAIN_MAX {
        None
    } else {
        Some((now + QUIET).min(end + DRAIN_MAX))
    }
}

async fn read_member(mut ws: Ws, plan: Plan, end: tokio::time::Instant) -> (Option<Ws>, Stats) {
    let mut stats = Stats::new();
    let mut none = HashMap::new();
    let mut idle = false;
    let mut next = read_deadline(end, idle);
    while let Some(deadline) = next {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => idle = deadline > end,
            // A heartbeat is not traffic: the drain's quiet deadline stays where it was.
            Ok(Some(Ok(msg))) if sio_ping(&msg) => {
                if ws.send(Message::text("3")).await.is_err() {
                    return (None, stats);
                }
                continue;
            }
            Ok(Some(Ok(msg))) => observe(&plan, &mut stats, &msg, &mut none),
            Ok(_) => return (None, stats),
        }
        next = read_deadline(end, idle);
    }
    (Some(ws), stats)
}

async fn drive_owner(
    mut ws: Ws,
    stream: &str,
    mut notes: u32,
    plan: &Plan,
    stop_sending: tokio::time::Instant,
    end: tokio::time::Instant,
) -> (Option<Ws>, u32, Stats) {
    let mut stats = Stats::new();
    // id -> send time, for the acks.
    let mut sent: HashMap<u64, u64> = HashMap::new();
    // A random phase spreads the owners' commands over one period.
    let phase = plan.period.mul_f64(rand::random::<f64>());
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, plan.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n: u64 = plan.id_base;
    let mut pad = Vec::new();
    let mut idle = false;
    let mut next = read_deadline(end, idle);
    while let Some(deadline) = next {
        tokio::select! {
            m = tokio::time::timeout_at(deadline, ws.next()) => match m {
                Err(_) => idle = deadline > end,
                // A heartbeat is not traffic: the drain's quiet deadline stays where it was.
                Ok(Some(Ok(msg))) if sio_ping(&msg) => {
                    if ws.send(Message::text("3")).await.is_err() {
                        return (None, notes, stats);
                    }
                    continue;
                }
                Ok(Some(Ok(msg))) => observe(plan, &mut stats, &msg, &mut sent),
                Ok(_) => return (None, notes, stats),
            },
            at = tick.tick(), if tokio::time::Instant::now() < stop_sending => {
                if at >= stop_sending {
                    continue;
                }
                n += 1;
                let t = now_us();
                let msg = match plan.target {
                    Target::Copanel => {
                        let command_id = format!("c{}-{n}", plan.tag);
                        let note = plan.note_every > 0 && n % plan.note_every == 0 && notes < NOTE_BUDGET;
                        if note {
                            notes += 1;
                            let text = format!("t{t} load note");
                            packed(&OutCommand { ty: "command", id: n, stream, command_id: &command_id,
                                command: AddNote { kind: "add_note", text: &text } })
                        } else {
                            let key = format!("k{}", n % PARAMETER_KEYS);
                            let value = format!("t{t}");
                            packed(&OutCommand { ty: "command", id: n, stream, command_id: &command_id,
                                command: SetParameter { kind: "set_parameter", key: &key, value: &value } })
                        }
                    }
                    Target::Bare => {
                        pad.clear();
                        pad.extend_from_slice(&t.to_le_bytes());
                        pad.extend_from_slice(&n.to_le_bytes());
                        pad.resize(plan.bare_bytes, b'x');
                        Message::Binary(pad.clone().into())
                    }
                    Target::Socketio => sio_frame(t, n, plan.bare_bytes),
                };
                sent.insert(n, t);
                if Stats::in_window(plan, t) {
                    stats.sent += 1;
                }
                if ws.send(msg).await.is_err() {
                    return (None, notes, stats);
                }
            }
        }
        next = read_deadline(end, idle);
    }
    (Some(ws), notes, stats)
}

// ---------------------------------------------------------------------------------------------
// Results.
// ---------------------------------------------------------------------------------------------

struct Summary {
    target: Target,
    durability: String,
    connections: usize,
    offered: f64,
    rep: usize,
    window: f64,
    sent: u64,
    acked: u64,
    delivered: u64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    ack_p99_ms: f64,
    errors: u64,
    stale: u64,
    mean_event_bytes: usize,
    load: String,
    /// The machine's busy CPU over the window, percent of all CPUs (`None`: unknown).
    cpu_busy: Option<f64>,
    /// CPU time stolen by the hypervisor over the window, percent of all CPUs (`None`: unknown).
    steal: Option<f64>,
    /// copanel's own view of its acks over the window (`None`: not copanel, or a copanel URL
    /// that is not `ws://host:port/…`; `Some(None)`: a scrape of its `/metrics` failed).
    server: Option<Option<ServerAcks>>,
}

impl Summary {
    fn delivered_per_s(&self) -> f64 {
        self.delivered as f64 / self.window
    }

    fn line(&self) -> String {
        format!(
            "target={} durability={} conns={} offered={:.0} sent_per_s={:.0} acked_per_s={:.0} delivered_per_s={:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} ack_p99_ms={:.2} frame_bytes={} errors={} stale={} load={} cpu_busy={} steal={}",
            self.target.name(),
            self.durability,
            self.connections,
            self.offered,
            self.sent as f64 / self.window,
            self.acked as f64 / self.window,
            self.delivered_per_s(),
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.ack_p99_ms,
            self.mean_event_bytes,
            self.errors,
            self.stale,
            self.load,
            pct(self.cpu_busy),
            pct(self.steal),
        ) + &self.server.map(server_fields).unwrap_or_default()
    }
}

/// The summary line's fields for copanel's own view of its acks (`?` where unknown).
fn server_fields(s: Option<ServerAcks>) -> String {
    let ms = |v: Option<f64>| {
        v.filter(|v| v.is_finite())
            .map_or_else(|| "?".into(), |v| format!("{v:.2}"))
    };
    format!(
        " server_ack_mean_ms={} writer_ack_mean_ms={} server_ack_10ms_pct={}",
        ms(s.and_then(|s| s.conn.mean_ms())),
        ms(s.and_then(|s| s.writer.mean_ms())),
        pct(s.and_then(|s| s.conn.within_10ms_pct())),
    )
}

/// `host:port` of a `ws://host:port/…` URL: where copanel also serves `/metrics`.
fn http_addr(ws_url: &str) -> Option<String> {
    let rest = ws_url.strip_prefix("ws://")?;
    let hostport = rest.split('/').next()?;
    (!hostport.is_empty()).then(|| hostport.to_owned())
}

/// Count, sum (seconds) and count within 10 ms of one of copanel's latency histograms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Hist {
    count: f64,
    sum_s: f64,
    within_10ms: f64,
}

impl Hist {
    fn minus(self, earlier: Hist) -> Hist {
        Hist {
            count: self.count - earlier.count,
            sum_s: self.sum_s - earlier.sum_s,
            within_10ms: self.within_10ms - earlier.within_10ms,
        }
    }

    /// A difference of two scrapes that went backwards (the server restarted between them)
    /// says nothing about the window.
    fn valid(self) -> bool {
        self.count > 0.0 && self.sum_s >= 0.0 && self.within_10ms >= 0.0
    }

    fn mean_ms(self) -> Option<f64> {
        self.valid().then(|| 1000.0 * self.sum_s / self.count)
    }

    fn within_10ms_pct(self) -> Option<f64> {
        self.valid().then(|| 100.0 * self.within_10ms / self.count)
    }
}

/// copanel's ack histograms: the connection's (`copanel_ack_latency_seconds`) and the writer's
/// part of it (`copanel_writer_ack_seconds`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct ServerAcks {
    conn: Hist,
    writer: Hist,
}

impl ServerAcks {
    /// Reads both histograms from a `/metrics` body; `None` if a figure is missing.
    fn parse(body: &str) -> Option<ServerAcks> {
        let value = |name: &str| {
            body.lines().find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        };
        let hist = |base: &str| {
            Some(Hist {
                count: value(&format!("{base}_count"))?,
                sum_s: value(&format!("{base}_sum"))?,
                within_10ms: value(&format!("{base}_bucket{{le=\"0.01\"}}"))?,
            })
        };
        Some(ServerAcks {
            conn: hist("copanel_ack_latency_seconds")?,
            writer: hist("copanel_writer_ack_seconds")?,
        })
    }

    /// What happened between two scrapes.
    fn between(from: ServerAcks, to: ServerAcks) -> ServerAcks {
        ServerAcks {
            conn: to.conn.minus(from.conn),
            writer: to.writer.minus(from.writer),
        }
    }
}

/// `GET /metrics` from copanel at `addr` (plain HTTP/1.1, 2 s in all); `None` on any failure,
/// said on stderr.
async fn scrape_acks(addr: &str) -> Option<ServerAcks> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let get = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        if !text.starts_with("HTTP/1.1 200") {
            return Err(text.lines().next().unwrap_or("no status line").to_owned());
        }
        ServerAcks::parse(&text).ok_or_else(|| "no ack histograms in the body".to_owned())
    };
    match tokio::time::timeout(Duration::from_secs(2), get).await {
        Ok(Ok(acks)) => Some(acks),
        Ok(Err(e)) => {
            eprintln!("load: /metrics of {addr}: {e}");
            None
        }
        Err(_) => {
            eprintln!("load: /metrics of {addr}: no answer within 2 s");
            None
        }
    }
}

const CSV_HEADER: &str = "target,durability,connections,offered_cmd_s,rep,sent_cmd_s,acked_cmd_s,delivered_ev_s,p50_ms,p99_ms,p999_ms,ack_p99_ms,frame_bytes,errors,loadavg,stale,cpu_busy_pct,steal_pct";

/// Refuses, before any run, a CSV file whose header is not this tool's: rows under an older
/// tool's columns would be read as the wrong fields.
fn check_csv(path: &PathBuf) -> Result<(), String> {
    use std::io::BufRead as _;
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(()); // absent: created with the header on the first row
    };
    let mut header = String::new();
    let _ = std::io::BufReader::new(file).read_line(&mut header);
    let header = header.trim_end();
    if header.is_empty() || header == CSV_HEADER {
        return Ok(()); // empty: as absent
    }
    Err(format!(
        "{} has other columns than this tool writes (an older tool's?); use a new file",
        path.display()
    ))
}

fn append_csv(path: &PathBuf, s: &Summary) -> std::io::Result<()> {
    // Missing or empty: the header goes first.
    let new = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if new {
        writeln!(f, "{CSV_HEADER}")?;
    }
    writeln!(
        f,
        "{},{},{},{:.0},{},{:.1},{:.1},{:.1},{:.3},{:.3},{:.3},{:.3},{},{},{},{},{},{}",
        s.target.name(),
        s.durability,
        s.connections,
        s.offered,
        s.rep,
        s.sent as f64 / s.window,
        s.acked as f64 / s.window,
        s.delivered_per_s(),
        s.p50_ms,
        s.p99_ms,
        s.p999_ms,
        s.ack_p99_ms,
        s.mean_event_bytes,
        s.errors,
        s.load,
        s.stale,
        pct(s.cpu_busy),
        pct(s.steal)
    )
}

#[cfg(test)]
mod tests {
    //! The tool end to end, at a small scale: copanel, the bare baseline and (when Node.js and
    //! `examples/socketio/node_modules` are there) the Socket.IO peer, each spawned as a real
    //! process on 127.0.0.1 and driven by `--compare`. It checks that every target's figures
    //! add up, not how fast anything is.
    use super::*;
    use std::path::Path;

    /// `cargo test` builds the binaries next to this test binary (`target/<profile>/examples/`).
    fn built(name: &str, up: usize) -> PathBuf {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut dir = exe.parent().expect("a directory").to_path_buf();
        for _ in 0..up {
            dir = dir.parent().expect("a parent directory").to_path_buf();
        }
        let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.is_file(),
            "{} is not built: run `cargo test` (it builds the binary and the examples)",
            bin.display()
        );
        bin
    }

    /// The Socket.IO peer's script, if Node.js and its modules are installed (`npm ci`).
    fn socketio() -> Option<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/socketio");
        let node = Command::new("node").arg("--version").output();
        if !node.is_ok_and(|o| o.status.success()) {
            eprintln!("SKIPPED the Socket.IO peer: no `node` on PATH");
            return None;
        }
        if !dir.join("node_modules/socket.io").is_dir() {
            eprintln!(
                "SKIPPED the Socket.IO peer: run `npm ci` in {} (.ci/run does)",
                dir.display()
            );
            return None;
        }
        Some(dir.join("server.js"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_target_delivers_what_its_owners_send() {
        let (sessions, members) = (4u64, 3u64);
        let mut argv: Vec<String> = [
            "load",
            "--compare",
            "--sessions",
            "4",
            "--members",
            "3",
            "--rates",
            "40",
            "--warmup",
            "0.5",
            "--duration",
            "1.5",
        ]
        .map(String::from)
        .to_vec();
        argv.push("--spawn".into());
        argv.push(built("copanel", 1).display().to_string());
        argv.push("--bare".into());
        argv.push(built("bare", 0).display().to_string());
        let sio = socketio();
        if let Some(script) = &sio {
            argv.push("--socketio".into());
            argv.push(script.display().to_string());
        }
        let args = Args::try_parse_from(argv).expect("valid arguments");
        let results = run(args).await.expect("the runs");

        let mut want = vec![Target::Copanel, Target::Bare];
        if sio.is_some() {
            want.push(Target::Socketio);
        }
        let got: Vec<Target> = results.iter().map(|s| s.target).collect();
        assert_eq!(got, want, "one run per target, in order");
        let copanel_frame = results[0].mean_event_bytes;
        assert!(
            copanel_frame > 100,
            "copanel's event frames: {copanel_frame} bytes"
        );
        for s in &results {
            let line = s.line();
            assert_eq!(s.errors, 0, "{line}");
            assert_eq!(s.stale, 0, "{line}");
            assert_eq!(s.connections as u64, sessions * members, "{line}");
            // 40 commands/s for 1.5 s; commands in flight at the window's edges count on one
            // side only: at most one per session at this pace.
            assert!(s.sent >= 40, "{line}");
            assert!(s.acked.abs_diff(s.sent) <= sessions, "{line}");
            assert!(
                s.delivered.abs_diff(members * s.acked) <= members * sessions,
                "{line}"
            );
            assert!(s.p50_ms > 0.0 && s.p50_ms <= s.p99_ms, "{line}");
            if s.target.is_peer() {
                // The peers' frames are copanel's size, so the ratio compares like with like.
                assert_eq!(s.mean_event_bytes, copanel_frame, "{line}");
                assert_eq!(s.server, None, "{line}");
                assert!(!line.contains("server_ack"), "{line}");
            } else {
                // copanel's own view of the window, from its /metrics.
                let acks = s.server.flatten().unwrap_or_else(|| panic!("{line}"));
                assert!(acks.conn.count >= 1.0 && acks.writer.count >= 1.0, "{line}");
                assert!(acks.conn.mean_ms().is_some_and(|ms| ms > 0.0), "{line}");
                let fields = server_fields(s.server.flatten());
                assert!(line.ends_with(&fields) && !fields.contains('?'), "{line}");
            }
        }
    }

    #[test]
    fn server_acks_are_read_from_metrics_and_differenced() {
        let body = |n: u64, sum: f64, fast: u64, wn: u64, wsum: f64, wfast: u64| {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n\
                 # TYPE copanel_ack_latency_seconds histogram\n\
                 copanel_ack_latency_seconds_bucket{{le=\"0.005\"}} {fast}\n\
                 copanel_ack_latency_seconds_bucket{{le=\"0.01\"}} {fast}\n\
                 copanel_ack_latency_seconds_bucket{{le=\"+Inf\"}} {n}\n\
                 copanel_ack_latency_seconds_sum {sum}\n\
                 copanel_ack_latency_seconds_count {n}\n\
                 copanel_writer_ack_seconds_bucket{{le=\"0.01\"}} {wfast}\n\
                 copanel_writer_ack_seconds_sum {wsum}\n\
                 copanel_writer_ack_seconds_count {wn}\n"
            )
        };
        let from = ServerAcks::parse(&body(10, 0.5, 9, 10, 0.25, 10)).expect("parsed");
        assert_eq!(
            from.conn,
            Hist {
                count: 10.0,
                sum_s: 0.5,
                within_10ms: 9.0
            }
        );
        let to = ServerAcks::parse(&body(110, 0.7, 99, 110, 0.35, 110)).expect("parsed");
        let d = ServerAcks::between(from, to);
        // 100 acks in the window, 0.2 s in all: 2 ms each; 90 of them within 10 ms.
        assert!((d.conn.mean_ms().unwrap() - 2.0).abs() < 1e-9, "{d:?}");
        assert!((d.writer.mean_ms().unwrap() - 1.0).abs() < 1e-9, "{d:?}");
        assert!(
            (d.conn.within_10ms_pct().unwrap() - 90.0).abs() < 1e-9,
            "{d:?}"
        );
        assert_eq!(
            server_fields(Some(d)),
            " server_ack_mean_ms=2.00 writer_ack_mean_ms=1.00 server_ack_10ms_pct=90.0"
        );
        // No acks in the window, or no scrape: unknown, not zero.
        assert_eq!(
            server_fields(Some(ServerAcks::between(to, to))),
            " server_ack_mean_ms=? writer_ack_mean_ms=? server_ack_10ms_pct=?"
        );
        assert_eq!(
            server_fields(None),
            " server_ack_mean_ms=? writer_ack_mean_ms=? server_ack_10ms_pct=?"
        );
        // A server restarted between the scrapes: counters went backwards.
        assert_eq!(
            server_fields(Some(ServerAcks::between(to, from))),
            " server_ack_mean_ms=? writer_ack_mean_ms=? server_ack_10ms_pct=?"
        );
        // A body without the writer's histogram (an older server) is not read as zeros.
        assert_eq!(
            ServerAcks::parse("copanel_ack_latency_seconds_count 3\n"),
            None
        );
        assert_eq!(
            http_addr("ws://127.0.0.1:7700/ws").as_deref(),
            Some("127.0.0.1:7700")
        );
        assert_eq!(http_addr("wss://example.com/ws"), None);
    }

    /// Socket.IO closes a socket that does not answer its pings: with a ping every 200 ms and
    /// 2 s for each answer, a run of the tool loses no connection only if it answers them. And
    /// a connection without a room is refused at the handshake, which the tool reports.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn socketio_heartbeats_are_answered() {
        let Some(script) = socketio() else { return };
        let addr = free_addr().expect("a free port");
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut cmd = Command::new("node");
        cmd.arg(&script)
            .args(["--listen", &addr.to_string()])
            .args(["--ping-interval", "200", "--ping-timeout", "2000"]);
        let url = format!("ws://{addr}");
        let _server = Spawned::start(cmd, dir, addr, url.clone(), None, "socketio")
            .await
            .expect("the Socket.IO peer starts");
        let args = Args::try_parse_from([
            "load",
            "--target",
            "socketio",
            "--url",
            &url,
            "--sessions",
            "2",
            "--members",
            "2",
            "--rates",
            "10,10",
            "--warmup",
            "0.5",
            "--duration",
            "1",
        ])
        .expect("valid arguments");
        let mut roomless = connect(&format!("{url}/socket.io/?EIO=4&transport=websocket"), None)
            .await
            .expect("the WebSocket opens");
        let refused = sio_join(&mut roomless).await.expect_err("no room, no join");
        assert!(
            refused.contains("refused") && refused.contains("room"),
            "{refused}"
        );
        // Two runs of 3.5 s or more (the drain included): dozens of pings per connection.
        let results = run(args).await.expect("the runs");
        assert_eq!(results.len(), 2);
        for s in &results {
            let line = s.line();
            assert_eq!(s.errors, 0, "{line}");
            assert_eq!(s.connections, 4, "{line}");
            assert!(s.delivered > 0, "{line}");
        }
    }

    #[test]
    fn socketio_frames_carry_time_and_id_at_the_asked_size() {
        let Message::Text(f) = sio_frame(1_234_567, 42, 213) else {
            panic!("a text frame");
        };
        assert_eq!(f.len(), 213);
        assert_eq!(sio_event(f.as_str()), Some((1_234_567, 42)));
        // Smaller than its header: the header whole, no padding.
        let Message::Text(short) = sio_frame(7, 8, 4) else {
            panic!("a text frame");
        };
        assert_eq!(short.as_str(), "42[\"m\",\"t7 8 \"]");
        assert_eq!(sio_event(short.as_str()), Some((7, 8)));
        for other in [
            "2",
            "40{\"sid\":\"x\"}",
            "42[\"m\",\"tx 1 \"]",
            "42[\"other\",\"t1 2 \"]",
        ] {
            assert_eq!(sio_event(other), None, "{other}");
        }
        assert!(sio_ping(&Message::text("2")));
        assert!(!sio_ping(&Message::text("3")));
    }
}
