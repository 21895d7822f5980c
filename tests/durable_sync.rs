//! What a `sync` ack waits for on disk (PRODUCT.md §2, guarantee 1; `vendor/sled/PATCHED.md`
//! change 5): the real binary, traced with `strace -f -p` while commands are acked one after
//! the other. Each ack must follow an `fdatasync` of sled's log file, and sled must never use
//! `sync_file_range`, which writes the pages but neither the metadata that makes newly
//! allocated blocks reachable nor the device's volatile cache, so what it calls stable can be
//! lost with the power. A `kill -9` cannot tell the two apart (the page cache survives it),
//! hence the trace.
//!
//! Needs `strace` and permission to ptrace the child (`.ci/run` installs strace; root has the
//! permission); without either it prints why and passes without checking anything.

#[path = "support/crashloop.rs"]
#[allow(dead_code)]
mod crashloop;
mod support;

use copanel_protocol::{Encoding, Role, ServerFrame};
use crashloop::ServerProcess;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{open_session, Client};

/// Commands acked, one at a time, once the trace is known to be live.
const TRACED: usize = 20;

fn token() -> String {
    crashloop::token("platform", Role::Service)
}

/// `strace` attached to `pid` and its threads, writing the three sync calls (with file paths)
/// to `out`. Stopped by SIGINT, which detaches it from the server.
struct Strace(Child);

impl Strace {
    fn attach(pid: u32, out: &Path) -> std::io::Result<Strace> {
        Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-y",
                "-e",
                "trace=fdatasync,fsync,sync_file_range",
                "-o",
            ])
            .arg(out)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map(Strace)
    }

    /// Whether it has exited (it cannot attach), with what it said.
    fn exited(&mut self) -> Option<String> {
        match self.0.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => {
                let mut said = String::new();
                if let Some(mut e) = self.0.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut said);
                }
                Some(format!("{status}: {}", said.trim()))
            }
            Err(e) => Some(e.to_string()),
        }
    }
}

impl Drop for Strace {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// The trace's calls on sled's log file (`…/log-NNNNNN/db`): (all, fdatasync, sync_file_range).
fn log_syncs(trace: &str) -> (usize, usize, usize) {
    let lines: Vec<&str> = trace.lines().filter(|l| l.contains("/db>")).collect();
    let count = |call: &str| lines.iter().filter(|l| l.contains(call)).count();
    (lines.len(), count("fdatasync("), count("sync_file_range("))
}

/// An acked (or refused) `add_note` on the traced session.
async fn note(c: &mut Client, n: usize) -> ServerFrame {
    let cmd = json!({"kind": "add_note", "text": format!("traced note {n}")});
    c.command("session/traced", &format!("n{n}"), cmd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ack_follows_an_fdatasync_of_the_log_never_sync_file_range() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipping: strace is missing (apt-get install strace)");
        return;
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_copanel"));
    let data = tempfile::tempdir().expect("temp dir");
    let logs = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(&bin, data.path(), logs.path(), "sync", 1000.0).await;
    let mut c = Client::connect(&server.url(), &token(), Encoding::Json).await;
    let f = c
        .command("session/traced", "open", open_session("op1"))
        .await;
    assert!(matches!(f, ServerFrame::Ack { seq: 1, .. }), "{f:?}");

    let out = logs.path().join("strace.out");
    let mut strace = match Strace::attach(server.pid(), &out) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping: strace does not run: {e}");
            return;
        }
    };
    let mut n = 0usize;
    // Acked commands until the trace shows a first sync of the log (sled's periodic flusher
    // fsyncs it every 200 ms whatever else happens): attached.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        n += 1;
        let f = note(&mut c, n).await;
        assert!(matches!(f, ServerFrame::Ack { .. }), "{f:?}");
        let trace = std::fs::read_to_string(&out).unwrap_or_default();
        if log_syncs(&trace).0 > 0 {
            break;
        }
        if let Some(why) = strace.exited() {
            eprintln!("skipping: strace cannot trace the server ({why})");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no sync of the log within 20 s of acked commands; trace:\n{trace}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = log_syncs(&std::fs::read_to_string(&out).unwrap_or_default()).1;
    // One at a time: each ack's batch is flushed before the next command is sent, so each
    // needs a buffer write of its own, and each buffer write must end in an fdatasync.
    for _ in 0..TRACED {
        n += 1;
        let f = note(&mut c, n).await;
        assert!(matches!(f, ServerFrame::Ack { .. }), "{f:?}");
    }
    drop(strace); // SIGINT: detaches and writes the rest.
    let trace = std::fs::read_to_string(&out).expect("the trace");
    let (_, fdatasyncs, ranges) = log_syncs(&trace);
    assert_eq!(
        ranges, 0,
        "sled synced its log with sync_file_range, which does not make writes durable:\n{trace}"
    );
    assert!(
        fdatasyncs >= before + TRACED,
        "{TRACED} acks one after the other, but only {} fdatasyncs of the log after the first:\n{trace}",
        fdatasyncs - before
    );
    drop(server);
}
