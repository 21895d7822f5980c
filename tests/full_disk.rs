//! A real full disk: the real binary on a small tmpfs, filled up by another file while
//! writers send commands. Commands fail with `unavailable` (never an ack for a write that did
//! not reach the disk, never a crash); `/healthz` says `degraded`; once space returns, retries
//! with the same `command_id` apply exactly once, the log is gapless and every acked event is
//! there, also after a `kill -9` and a restart.
//!
//! Needs `mount -t tmpfs` (root); where mounting is not permitted it prints why and passes
//! without checking anything (the injected-fault tests in `tests/storage_fault.rs` always run).

#[path = "support/crashloop.rs"]
#[allow(dead_code)]
mod crashloop;
mod support;

use copanel_protocol::{Encoding, Role, ServerFrame};
use crashloop::ServerProcess;
use serde_json::json;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{http_get, open_session, Client};

/// The watcher reads nothing (so answers no pings) until the end: keep a slow machine from
/// closing it as idle (20 s by default) before then.
const LIMITS: &str = "idle_timeout_secs = 300\n";

/// An unmounts-on-drop tmpfs.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fills the filesystem of `path` with a file; returns its size.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("filler file");
    let chunk = vec![0u8; 16 * 1024];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k as u64,
        }
    }
    // What is left below a chunk.
    for _ in 0..64 {
        match f.write(&chunk[..256]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k as u64,
        }
    }
    let _ = f.sync_all();
    n
}

fn token() -> String {
    crashloop::token("platform", Role::Service)
}

async fn health(server: &ServerProcess) -> serde_json::Value {
    let (status, body) = http_get(server.addr(), "/healthz").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

fn note(i: usize) -> serde_json::Value {
    // Large notes, so that the disk fills in a few commands.
    json!({"kind": "add_note", "text": format!("{i:05} {}", "x".repeat(3500))})
}

/// Checks the log of `stream`: gapless, each command id once, each acked `(id, seq)` there.
async fn check(c: &mut Client, stream: &str, acked: &[(String, u64)]) -> usize {
    let events = c.full_history(stream).await;
    let mut ids = HashSet::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "gapless");
        let id = e.command_id.clone().unwrap_or_default();
        assert!(ids.insert(id.clone()), "{id} applied twice");
    }
    for (id, seq) in acked {
        let e = events
            .get(*seq as usize - 1)
            .unwrap_or_else(|| panic!("LOST ACKED EVENT {id} at seq {seq}"));
        assert_eq!(e.command_id.as_deref(), Some(id.as_str()), "seq {seq}");
    }
    events.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_unavailable_and_the_server_recovers() {
    let fs = match Tmpfs::mount("24m") {
        Ok(fs) => fs,
        Err(why) => {
            println!("SKIPPED: no tmpfs to fill ({why})");
            return;
        }
    };
    let data: PathBuf = fs.path().join("data");
    let logs = tempfile::tempdir().unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_copanel"));
    let mut server =
        ServerProcess::start_with_limits(&bin, &data, logs.path(), "full", 1000.0, LIMITS).await;
    let mut c = Client::connect(&server.url(), &token(), Encoding::Json).await;
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut sessions = Vec::new();
    let mut next = 0usize;
    for k in 0..40 {
        let s = format!("session/full-{k}");
        let f = c.command(&s, "open", open_session("op1")).await;
        assert!(matches!(f, ServerFrame::Ack { seq: 1, .. }), "{f:?}");
        sessions.push((s, vec![("open".to_string(), 1u64)]));
    }
    for _ in 0..40 {
        let (s, a) = &mut sessions[next % 40];
        let id = format!("n{next}");
        match c.command(s, &id, note(next)).await {
            ServerFrame::Ack { seq, .. } => a.push((id, seq)),
            other => panic!("before the disk is full: {other:?}"),
        }
        next += 1;
    }
    assert_eq!(health(&server).await["status"], "ok");
    // A subscriber on every session: it must end with exactly the log, each event once.
    let mut watcher = Client::connect(&server.url(), &token(), Encoding::Msgpack).await;
    let mut watched = std::collections::BTreeMap::new();
    for (s, _) in &sessions {
        let (head, _, _) = watcher.subscribe_snapshot(s).await;
        watched.insert(s.clone(), (head, Vec::new()));
    }

    // The disk fills up.
    let filler = fs.path().join("filler");
    let filled = fill(&filler);
    let mut refused: Vec<(usize, String)> = Vec::new();
    let mut acked_while_full = 0;
    for _ in 0..2000 {
        let k = next % 40;
        let id = format!("n{next}");
        match c.command(&sessions[k].0, &id, note(next)).await {
            ServerFrame::Ack { seq, .. } => {
                sessions[k].1.push((id, seq));
                acked_while_full += 1;
            }
            ServerFrame::Error { code, message, .. } => {
                assert_eq!(code.as_str(), "unavailable", "{message}");
                refused.push((next, message));
            }
            other => panic!("{other:?}"),
        }
        next += 1;
        if refused.len() >= 5 {
            break;
        }
    }
    assert!(
        !refused.is_empty(),
        "no command refused on a full disk ({filled} bytes of filler, {acked_while_full} acked)"
    );
    let h = health(&server).await;
    assert_eq!(h["status"], "degraded", "{h}");
    println!(
        "full disk: filler {filled} B; {acked_while_full} commands acked before the first refusal \
         (space sled had reserved), then `unavailable`: {}; healthz: {h}",
        refused[0].1
    );

    // Space returns: the refused commands, retried with the same ids, apply once.
    std::fs::remove_file(&filler).unwrap();
    for (n, _) in &refused {
        let k = n % 40;
        let id = format!("n{n}");
        let mut applied = false;
        for _attempt in 0..2 {
            match c.command(&sessions[k].0, &id, note(*n)).await {
                ServerFrame::Ack { seq, .. } => {
                    sessions[k].1.push((id.clone(), seq));
                    applied = true;
                    break;
                }
                ServerFrame::Error { code, message, .. } => {
                    // The first write after the space returns may still meet the old error.
                    assert_eq!(code.as_str(), "unavailable", "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(applied, "{id}: a retry applies once space returns");
    }
    for _ in 0..10 {
        let k = next % 40;
        let id = format!("n{next}");
        match c.command(&sessions[k].0, &id, note(next)).await {
            ServerFrame::Ack { seq, .. } => sessions[k].1.push((id, seq)),
            other => panic!("after the space returned: {other:?}"),
        }
        next += 1;
    }
    assert_eq!(health(&server).await["status"], "ok");
    let mut events = 0;
    for (s, a) in &sessions {
        events += check(&mut c, s, a).await;
        acked.extend(a.iter().cloned());
    }
    // The subscriber saw exactly the events after its snapshot, in order, each once: it reads
    // as many events as the logs hold after its snapshots (each frame within `WAIT`), then
    // compares.
    let mut wanted = std::collections::BTreeMap::new();
    for (s, (head, _)) in &watched {
        let log = c.full_history(s).await;
        let want: Vec<_> = log.into_iter().filter(|e| e.seq > *head).collect();
        wanted.insert(s.clone(), want);
    }
    let total: usize = wanted.values().map(Vec::len).sum();
    let mut received = 0;
    while received < total {
        if let ServerFrame::Event(e) = watcher.recv().await {
            if let Some((_, got)) = watched.get_mut(e.stream.as_str()) {
                got.push(e);
                received += 1;
            }
        }
    }
    watcher.assert_quiet().await;
    for (s, (_, got)) in &watched {
        assert_eq!(
            got, &wanted[s],
            "{s}: the subscriber's events = the log after its snapshot"
        );
    }

    // kill -9 and restart: every acked event is there.
    server.kill9();
    drop(server);
    let server =
        ServerProcess::start_with_limits(&bin, &data, logs.path(), "full-restart", 1000.0, LIMITS)
            .await;
    let mut c = Client::connect(&server.url(), &token(), Encoding::Json).await;
    let mut after = 0;
    for (s, a) in &sessions {
        after += check(&mut c, s, a).await;
    }
    assert_eq!(after, events, "the same log after a kill -9");
    println!(
        "full disk: {} acked commands verified after recovery and after kill -9 + restart ({events} events)",
        acked.len()
    );
    drop(server);
}
