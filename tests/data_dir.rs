//! A data directory that cannot be opened or is damaged: `copanel serve --data X` exits
//! nonzero at start with a one-line error on stderr naming the path and the problem, never a
//! panic, and never starts over on top of a damaged store.
//!
//! Runs the real binary. Not covered: a directory without permission (the suite runs as root,
//! which ignores file modes).

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "data-dir-test-secret-0123456789abcdef";

fn serve(data: &Path) -> Command {
    serve_on(data, "127.0.0.1:0")
}

fn serve_on(data: &Path, listen: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_copanel"));
    c.arg("serve")
        .arg("--data")
        .arg(data)
        .arg("--listen")
        .arg(listen)
        .arg("--secret")
        .arg(SECRET)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Kills the child (by its handle) when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (up to 20 s) for the line `serve` prints on stdout once it listens ("copanel listening
/// on ws://ADDR/ws (…)") and returns it. The child's stdout must be piped; it is drained after
/// that line, so that the pipe stays open.
fn banner(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(stdout);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut r, &mut std::io::sink());
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("copanel did not start within 20 s");
    assert!(
        line.starts_with("copanel listening on ws://"),
        "copanel did not start: stdout {line:?}"
    );
    line
}

/// Runs `serve` on `data`, which must fail by itself within 20 s; returns its status and stderr.
fn refused(data: &Path) -> (ExitStatus, String) {
    let mut g = Guard(serve(data).spawn().expect("spawn copanel"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = g.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "copanel kept running on the bad data dir {}",
            data.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = g.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status, err)
}

/// Asserts a clean refusal: exit code 1, a `copanel: ` line naming `path` and containing
/// `problem`, no panic.
fn assert_refused(data: &Path, path: &Path, problem: &str) -> String {
    let (status, err) = refused(data);
    assert_eq!(
        status.code(),
        Some(1),
        "exit status {status}; stderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "a panic:\n{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("copanel: "))
        .unwrap_or_else(|| panic!("no `copanel: ` error line in:\n{err}"));
    assert!(
        line.contains(&path.display().to_string()),
        "the error names {}: {line}",
        path.display()
    );
    assert!(line.contains(problem), "the error says {problem:?}: {line}");
    line.to_owned()
}

/// A store made by the binary (it writes `CURRENT` once the store's epoch is durable); the
/// server is killed once it has.
fn made_store() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let g = Guard(serve(&data).spawn().expect("spawn copanel"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !data.join("CURRENT").exists() {
        assert!(Instant::now() < deadline, "no store made within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    drop(g);
    let log = data.join("log-000001");
    assert!(
        log.join("db").is_file(),
        "sled's db file in {}",
        log.display()
    );
    (dir, log)
}

fn garbage(path: &Path, len: usize) {
    let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
    std::fs::write(path, bytes).expect("overwrite");
}

#[test]
fn a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("file");
    std::fs::write(&f, b"not a dir").unwrap();
    assert_refused(&f, &f, "is not a directory");
    let under = f.join("sub");
    assert_refused(&under, &under, "cannot create it");
}

#[test]
fn current_naming_a_missing_log_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("CURRENT"), b"log-000007\n").unwrap();
    assert_refused(dir.path(), &dir.path().join("CURRENT"), "log-000007");
}

#[test]
fn a_garbage_current() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("CURRENT"),
        [0xff, 0xfe, 0x00, 0x9c, 0x80, 0x0a],
    )
    .unwrap();
    assert_refused(dir.path(), &dir.path().join("CURRENT"), "UTF-8");
    std::fs::write(dir.path().join("CURRENT"), b"../../etc\n").unwrap();
    assert_refused(
        dir.path(),
        &dir.path().join("CURRENT"),
        "expected a directory name",
    );
}

#[test]
fn garbage_in_sleds_files() {
    // conf
    let (_d, log) = made_store();
    garbage(&log.join("conf"), 64);
    assert_refused(log.parent().unwrap(), &log, "damaged");
    // db: random bytes, then empty
    let (_d, log) = made_store();
    garbage(&log.join("db"), 4096);
    assert_refused(log.parent().unwrap(), &log, "damaged");
    let (_d, log) = made_store();
    std::fs::write(log.join("db"), b"").unwrap();
    assert_refused(log.parent().unwrap(), &log, "damaged");
    // The sled files gone altogether: sled would start an empty store; the missing epoch
    // record gives it away.
    let (_d, log) = made_store();
    std::fs::remove_file(log.join("db")).unwrap();
    std::fs::remove_file(log.join("conf")).unwrap();
    let line = assert_refused(log.parent().unwrap(), &log, "damaged");
    assert!(line.contains("epoch"), "{line}");
}

#[test]
fn a_data_dir_in_use_by_another_copanel() {
    let (_d, log) = made_store();
    let data = log.parent().unwrap().to_path_buf();
    let mut first = Guard(
        serve(&data)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn copanel"),
    );
    // It listens (and says so) only after it has opened the store (and holds sled's lock).
    banner(&mut first.0);
    let line = assert_refused(&data, &log, "locked by another process");
    drop(first);
    assert!(line.contains("another copanel"), "{line}");
}
