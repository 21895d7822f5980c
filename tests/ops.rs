//! Operations: `/metrics` over real HTTP, the config file (parse + merge, and the real binary).
mod support;

use copanel::config::{self, Overrides};
use copanel_protocol::Role;
use std::path::Path;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reflect_commands_and_parse() {
    let server = TestServer::start().await;
    let mut c = server.client("platform", Role::Service).await;
    for i in 0..3 {
        let f = c
            .command(
                &format!("session/m{i}"),
                &format!("open-m{i}"),
                open_session("op1"),
            )
            .await;
        ack_seq(&f);
    }
    // Other tests in this binary ack commands too (the counters are process-wide): retry until
    // a scrape falls between two of their commands.
    let mut tries = 0;
    let (body, m) = loop {
        tries += 1;
        let (status, body) = server.http_get("/metrics").await;
        assert_eq!(status, 200);
        let m = scrape(&body);
        let acked = m.get("copanel_commands_acked_total");
        // A histogram's sum is read before its count: an ack landing in between shows in one
        // sum and in no count, so the sums are compared only once all three counts agree.
        if (acked == m.get("copanel_ack_latency_seconds_count")
            && acked == m.get("copanel_writer_ack_seconds_count")
            && m.get("copanel_writer_ack_seconds_sum") <= m.get("copanel_ack_latency_seconds_sum"))
            || tries == 20
        {
            break (body, m);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let acked = m.get("copanel_commands_acked_total");
    assert!(acked >= 3.0, "{body}");
    assert_eq!(
        acked,
        m.get("copanel_ack_latency_seconds_count"),
        "histogram count equals acked commands"
    );
    // The writer's part of each ack: every acked command, and within the connection's interval
    // (the command enters the writer's queue after the connection takes it, and the writer sends
    // the ack before the connection's task takes it).
    assert_eq!(acked, m.get("copanel_writer_ack_seconds_count"), "{body}");
    let (writer, conn) = (
        m.get("copanel_writer_ack_seconds_sum"),
        m.get("copanel_ack_latency_seconds_sum"),
    );
    assert!(
        writer > 0.0 && writer <= conn,
        "writer {writer} s, connection {conn} s"
    );
    assert!(body.contains("copanel_connections 1"), "{body}");
    assert!(body.contains("# TYPE copanel_ack_latency_seconds histogram"));
    // The writer's per-batch stages: each acked command was in a batch that went through them.
    for stage in ["append", "flush", "publish"] {
        let name = format!("copanel_writer_{stage}_seconds");
        assert!(body.contains(&format!("# TYPE {name} histogram")), "{body}");
        let count = body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name}_count in {body}"));
        assert!(count >= 1.0, "{name}_count {count}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_limits_take_effect() {
    let file = config::parse(
        "[limits]\nsubscriptions = 1\nnote_chars = 10\n",
        Path::new("t.toml"),
    )
    .unwrap();
    let s = config::merge(Overrides::default(), file).unwrap();
    assert_eq!(s.server.edge.subscriptions, 1);
    assert_eq!(s.server.limits.note_chars, 10);
    let err = config::parse(
        "listen = \"127.0.0.1:1\"\n[limits]\nsubscriptionz = 1\n",
        Path::new("bad.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("subscriptionz") && err.contains("bad.toml") && err.contains("line 3"),
        "{err}"
    );
    let edge = s.server.edge.clone();
    let server = TestServer::start_with(|c| c.edge = edge).await;
    opened(&server, "a", "op1").await;
    opened(&server, "b", "op1").await;
    let mut c = server.client("op1", Role::Operator).await;
    assert!(matches!(
        c.subscribe("session/a", None).await,
        copanel_protocol::ServerFrame::Subscribed { .. }
    ));
    assert_eq!(
        error_code(&c.subscribe("session/b", None).await),
        "too_large"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_runs_with_config_file_and_refuses_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("copanel.toml");
    // Port 0: the system picks a free one, which the server prints.
    std::fs::write(&cfg, format!("listen = \"127.0.0.1:0\"\ndata = \"{}\"\nsecret = \"s3cret-s3cret-s3cret\"\n[limits]\nsubscriptions = 2\n", dir.path().join("data").display())).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_copanel"));
    cmd.args(["serve", "--config"]).arg(&cfg);
    // "copanel listening on ws://ADDR/ws (…)": the first line it prints, once it listens.
    let (mut child, line) = first_stdout_line(&mut cmd).await;
    let addr: std::net::SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ws://")?.strip_suffix("/ws"))
        .unwrap_or_else(|| panic!("no ws://ADDR/ws in {line:?}"))
        .parse()
        .expect("an address");
    // The file's `listen` took effect (the default is 127.0.0.1:7700).
    assert!(
        addr.ip().is_loopback() && addr.port() != 7700 && addr.port() != 0,
        "{addr}"
    );
    let (status, body) = http_get(addr, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    child.kill().await.unwrap();

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits]\nframe_bytez = 1\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_copanel"))
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("frame_bytez") && err.contains("bad.toml"),
        "{err}"
    );
}

/// Checks every sample line is `name{labels} value`; returns the samples by name and labels.
fn scrape(body: &str) -> Samples {
    let mut samples = std::collections::HashMap::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line.rsplit_once(' ').expect("name value");
        assert!(name.starts_with("copanel_"), "{line}");
        let v: f64 = value.parse().expect("numeric value");
        assert!(
            samples.insert(name.to_owned(), v).is_none(),
            "duplicate sample {line}"
        );
    }
    Samples(samples)
}

/// The samples of one `/metrics` scrape.
struct Samples(std::collections::HashMap<String, f64>);

impl Samples {
    /// The value of `name` (with its labels, if any); panics if the scrape has no such sample.
    fn get(&self, name: &str) -> f64 {
        *self
            .0
            .get(name)
            .unwrap_or_else(|| panic!("no sample {name} in the scrape"))
    }
}

/// `serve` disables transparent huge pages for itself unless told not to (a huge-page fault
/// stalls the faulting thread for milliseconds: BENCHMARKS.md, seventh pass). Read back from
/// the kernel: `THP_enabled` in `/proc/PID/status` is 0 once `PR_SET_THP_DISABLE` is set.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_disables_transparent_huge_pages_unless_told_not_to() {
    if !Path::new("/sys/kernel/mm/transparent_hugepage").is_dir() {
        eprintln!("SKIPPED: this kernel has no transparent huge pages");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("thp.toml");
    std::fs::write(&cfg, "transparent_huge_pages = true\n").unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&[], "0"),
        (&["--transparent-huge-pages", "false"], "0"),
        (&["--transparent-huge-pages", "true"], "1"),
        (&["--config", cfg.to_str().unwrap()], "1"),
    ];
    for (i, (extra, want)) in cases.into_iter().enumerate() {
        // Once it prints its address, it has long applied the setting.
        let (mut child, pid) =
            serve_until_listening(&dir.path().join(format!("data-{i}")), extra).await;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        child.kill().await.unwrap();
        let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) else {
            eprintln!(
                "SKIPPED: this kernel's /proc/PID/status has no THP_enabled line (before 5.0)"
            );
            return;
        };
        assert_eq!(
            line.split_whitespace().nth(1),
            Some(want),
            "serve {extra:?}: {line}"
        );
    }
}

/// The writer runs on a thread the kernel knows as `copanel-writer`, apart from the connection
/// workers (`tokio-rt-worker`): `scripts/threads.sh`, `scripts/flamegraph.sh` and
/// `examples/stacks` find it by that name. Read back from `/proc/PID/task/*/comm`.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_names_the_writer_thread() {
    let dir = tempfile::tempdir().unwrap();
    // Once it prints its address, the writer has started (the store opens before it listens).
    let (mut child, pid) = serve_until_listening(&dir.path().join("data"), &[]).await;
    // The thread names itself when it begins to run, which may be a moment after the address
    // line: look again for up to 5 s.
    let mut names = Vec::new();
    for _ in 0..50 {
        names.clear();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let comm = task.unwrap().path().join("comm");
            if let Ok(name) = std::fs::read_to_string(comm) {
                names.push(name.trim_end().to_owned());
            }
        }
        if names.iter().any(|n| n == "copanel-writer") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    child.kill().await.unwrap();
    assert_eq!(
        names.iter().filter(|n| *n == "copanel-writer").count(),
        1,
        "threads: {names:?}"
    );
    assert!(
        names.iter().any(|n| n == "tokio-rt-worker"),
        "threads: {names:?}"
    );
}

/// Starts `copanel serve` on `data` with `extra` arguments (and without the THP environment
/// variable) and waits for the address line on its stdout. Returns the child, killed on drop,
/// and its pid.
#[cfg(target_os = "linux")]
async fn serve_until_listening(data: &Path, extra: &[&str]) -> (tokio::process::Child, u32) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_copanel"));
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--secret",
        "s3cret-s3cret-s3cret",
    ])
    .arg("--data")
    .arg(data)
    .args(extra)
    .env_remove("COPANEL_TRANSPARENT_HUGE_PAGES");
    let (child, _) = first_stdout_line(&mut cmd).await;
    let pid = child.id().expect("running");
    (child, pid)
}

/// Spawns `cmd` (stdout piped, stderr dropped, killed on drop) and waits up to 20 s for the
/// first line on its stdout, which `serve` prints once it listens. The pipe goes back into the
/// child, so it stays open until the child is killed.
async fn first_stdout_line(cmd: &mut tokio::process::Command) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(20), stdout.next_line())
        .await
        .expect("server did not start")
        .expect("stdout readable")
        .expect("a line on stdout");
    child.stdout = Some(stdout.into_inner().into_inner());
    (child, line)
}
