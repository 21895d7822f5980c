//! `copanel verify`, `export` and `import` (issue 5, item 5), run as the real binary against
//! stores built by a real server over real sockets.
//!
//! - a healthy store verifies clean; a running server's store is refused as "in use";
//! - export → import → export is byte-identical, the imported store holds exactly the same
//!   records, verifies clean, and a server started on it serves the same state, history and
//!   epoch, and answers a retried command with its original ack;
//! - a store damaged on purpose (a middle event deleted, garbage bytes as an event, a stale and
//!   a wrong derived record, an outcome past the head) fails verify with status 1 and each
//!   problem named (and what follows from it); its export still round-trips exactly (it is a backup of what is there);
//! - import refuses a non-empty target, malformed lines (naming the line) and truncated or
//!   mangled files, leaves nothing behind, and never panics;
//! - the store of a real `copanel serve` killed with SIGKILL while commands are in flight
//!   verifies clean, holding at least every acknowledged event.

mod support;

use copanel::backup;
use copanel::store::sled_store::raw::RawRecord;
use copanel::store::{SledStore, StreamId};
use copanel_protocol::{Envelope, Role, StreamName, StreamState};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use support::{ack_seq, open_session, opened, TestServer};

const SESSIONS: [&str; 2] = ["session/s1", "session/s2"];

fn copanel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_copanel"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("runs copanel")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// Panel work through the real server: two sessions, tags (one removed), a note, client info,
/// an invitation, a catalog tag, a closed and anonymised session (which compacts the store
/// into a second sled generation).
async fn populate(server: &TestServer) {
    opened(server, "s1", "op1").await;
    opened(server, "s2", "op1").await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let mut adm = server.client("adm", Role::Admin).await;
    let steps = [
        ("session/s1", "t1", json!({"kind": "add_tag", "tag": "VIP"})),
        (
            "session/s1",
            "t2",
            json!({"kind": "add_tag", "tag": "Urgent"}),
        ),
        (
            "session/s1",
            "n1",
            json!({"kind": "add_note", "text": "Volat zpět ve středu"}),
        ),
        (
            "session/s1",
            "ci",
            json!({"kind": "set_client_info", "name": "Jana N."}),
        ),
        (
            "session/s1",
            "inv",
            json!({"kind": "invite_collaborator", "operator_id": "op2"}),
        ),
        (
            "session/s1",
            "t3",
            json!({"kind": "remove_tag", "tag": "Urgent"}),
        ),
        ("session/s2", "t4", json!({"kind": "add_tag", "tag": "vip"})),
        ("session/s2", "close", json!({"kind": "close_session"})),
    ];
    for (stream, id, cmd) in steps {
        let f = op1.command(stream, id, cmd).await;
        ack_seq(&f);
    }
    let f = adm
        .command(
            "catalog",
            "def",
            json!({"kind": "define_tag", "tag": "VIP", "background": "#FF0000", "text": "#ffffff"}),
        )
        .await;
    ack_seq(&f);
    let f = adm
        .command("session/s2", "anon", json!({"kind": "anonymize"}))
        .await;
    ack_seq(&f);
}

/// What a client sees of the sessions: (head, epoch, state, history) each.
async fn observe(server: &TestServer) -> Vec<(u64, String, StreamState, Vec<Envelope>)> {
    let mut adm = server.client("adm", Role::Admin).await;
    let mut out = Vec::new();
    for s in SESSIONS {
        let (head, epoch, state) = adm.subscribe_snapshot(s).await;
        let history = adm.full_history(s).await;
        out.push((head, epoch, state, history));
    }
    out
}

fn records(dir: &Path) -> Vec<RawRecord> {
    let store = SledStore::open(dir).expect("opens");
    store
        .raw_records()
        .collect::<Result<Vec<_>, _>>()
        .expect("reads")
}

/// export DIR → FILE with the binary; returns the file's bytes.
fn export(dir: &Path, out: &Path) -> Vec<u8> {
    let o = copanel(&["export", "--data", path(dir), "--out", path(out)]);
    assert!(o.status.success(), "export: {}", text(&o));
    std::fs::read(out).expect("export written")
}

fn import(dir: &Path, input: &Path) -> Output {
    copanel(&["import", "--data", path(dir), "--in", path(input)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_store_verifies_and_round_trips_exactly() {
    let server = TestServer::start().await;
    populate(&server).await;
    let before = observe(&server).await;
    assert!(
        before[0].0 >= 7 && before[1].0 >= 4,
        "the commands were applied"
    );

    // The server holds the store: the tools say so instead of waiting or corrupting it.
    let o = copanel(&["verify", "--data", path(&server.data())]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("in use by another process"),
        "{}",
        text(&o)
    );

    let dir = server.stop().await;
    let work = tempfile::tempdir().expect("temp dir");

    let o = copanel(&["verify", "--data", path(dir.path())]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("no problems"), "{}", text(&o));

    let first = work.path().join("first.ndjson");
    let a = export(dir.path(), &first);
    let header: serde_json::Value =
        serde_json::from_slice(a.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(header["type"], "header");
    assert_eq!(
        header["epoch"],
        before[0].1.as_str(),
        "the header carries the epoch"
    );
    assert!(
        !String::from_utf8_lossy(&a).contains("\"secret\""),
        "no secret by default"
    );

    let restored = tempfile::tempdir().expect("temp dir");
    let o = import(restored.path(), &first);
    assert!(o.status.success(), "import: {}", text(&o));
    let second = work.path().join("second.ndjson");
    let b = export(restored.path(), &second);
    assert!(a == b, "export(import(export(X))) differs from export(X)");
    assert_eq!(
        records(dir.path()),
        records(restored.path()),
        "the imported store holds exactly the same records"
    );

    let o = copanel(&["verify", "--data", path(restored.path())]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // A server on the imported store serves the same sessions, and remembers outcomes.
    let server = TestServer::start_in(restored, |_| {}).await;
    let after = observe(&server).await;
    assert_eq!(before, after, "same heads, epoch, state and history");
    let mut svc = server.client("platform", Role::Service).await;
    let f = svc
        .command("session/s1", "open-s1", open_session("op1"))
        .await;
    assert_eq!(ack_seq(&f), 1, "a retried command gets its original ack");
    let mut op1 = server.client("op1", Role::Operator).await;
    let f = op1
        .command(
            "session/s1",
            "after",
            json!({"kind": "add_tag", "tag": "Again"}),
        )
        .await;
    assert_eq!(
        ack_seq(&f),
        before[0].0 + 1,
        "appends continue after the head"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_store_is_reported_with_each_problem() {
    let server = TestServer::start().await;
    populate(&server).await;
    let dir = server.stop().await;

    {
        let store = SledStore::open(dir.path()).expect("opens");
        let s1 = SledStore::raw_event_key("acme", "session/s1", 3);
        assert!(store.raw_get(&s1).unwrap().is_some(), "s1 has a seq 3");
        let s2 = SledStore::raw_event_key("acme", "session/s2", 2);
        let stale = copanel::store::sled_store::raw::RecordKey::Index {
            kind: copanel::store::IndexKind::Sessions,
            company: "acme".into(),
            key: "ghost".into(),
        };
        let wrong = copanel::store::sled_store::raw::RecordKey::Index {
            kind: copanel::store::IndexKind::TagUsage,
            company: "acme".into(),
            key: "vip".into(),
        };
        let s1_summary = copanel::store::sled_store::raw::RecordKey::Index {
            kind: copanel::store::IndexKind::Sessions,
            company: "acme".into(),
            key: "s1".into(),
        };
        let summary = store
            .raw_get(&s1_summary.encode().unwrap())
            .unwrap()
            .expect("s1 has a summary");
        let miscount = rmp_serde::to_vec_named(&copanel::derived::tags::TagUsage {
            tag: "VIP".into(),
            uses: 7,
        })
        .unwrap();
        let id = StreamId::new(Arc::from("acme"), StreamName::parse("session/s1").unwrap());
        let future = rmp_serde::to_vec_named(&copanel::store::CommandOutcome {
            seq: 99,
            created: None,
            actor: "op1".into(),
            fingerprint: 1,
        })
        .unwrap();
        store
            .raw_write(
                copanel::store::sled_store::raw::DEFAULT_TREE,
                vec![
                    (s1, None),
                    (s2, Some(b"\xc1 not msgpack".to_vec())),
                    (stale.encode().unwrap(), Some(summary)),
                    (wrong.encode().unwrap(), Some(miscount)),
                    (SledStore::raw_outcome_key(&id, "forged"), Some(future)),
                ],
            )
            .unwrap();
        store.raw_flush().unwrap();
    }

    let o = copanel(&["verify", "--data", path(dir.path())]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    for expected in [
        "acme:session/s1 seq 3: seq 3 is missing (the next stored event is 4)",
        "acme:session/s2 seq 2: the event does not decode",
        "sessions acme/ghost: stale: the log has no such session",
        "tag_usage acme/vip: stored 7 uses, the log says 1",
        "acme:session/s1 command \"forged\": the outcome points at seq 99",
        // Deleting `add_tag Urgent` leaves op1's recent tags naming a tag the log lacks.
        "recent_tags acme/op1: \"Urgent\" was never added by hand by this operator",
        "6 problems",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }

    // A backup of a damaged store carries the damage exactly (garbage verbatim).
    let work = tempfile::tempdir().expect("temp dir");
    let first = work.path().join("first.ndjson");
    let a = export(dir.path(), &first);
    assert!(
        String::from_utf8_lossy(&a).contains("raw_b64"),
        "garbage kept verbatim"
    );
    let restored = tempfile::tempdir().expect("temp dir");
    let o = import(restored.path(), &first);
    assert!(o.status.success(), "import: {}", text(&o));
    let b = export(restored.path(), &work.path().join("second.ndjson"));
    assert!(a == b, "the damaged store round-trips exactly");
    let o = copanel(&["verify", "--data", path(restored.path())]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("6 problems"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_refuses_bad_input_and_never_panics() {
    let server = TestServer::start().await;
    opened(&server, "s1", "op1").await;
    let dir = server.stop().await;
    // The test server takes its secret from the config; give the directory one to export.
    std::fs::write(
        dir.path().join("secret"),
        "0123456789abcdef0123456789abcdef",
    )
    .unwrap();
    let store = backup::open_existing(dir.path()).expect("opens");
    let mut good = Vec::new();
    let summary = backup::export(&store, dir.path(), true, &mut good).expect("exports");
    drop(store);
    assert!(summary.secret && summary.events == 1, "{summary}");
    let good = String::from_utf8(good).expect("NDJSON is UTF-8");
    let lines: Vec<&str> = good.lines().collect();
    let work = tempfile::tempdir().expect("temp dir");
    let fresh = |n: &str| -> PathBuf { work.path().join(n) };

    // The export is good, secret included.
    let ok = fresh("ok");
    backup::import(&mut good.as_bytes(), &ok).expect("imports");
    assert_eq!(
        std::fs::read(ok.join("secret")).unwrap(),
        std::fs::read(dir.path().join("secret")).unwrap(),
        "the secret comes along when asked for"
    );
    // Not into a directory that holds anything.
    let err = backup::import(&mut good.as_bytes(), &ok).unwrap_err();
    assert!(err.to_string().contains("is not empty"), "{err}");

    let cases: Vec<(String, &str)> = vec![
        (String::new(), "line 1: the file is empty"),
        ("{\"type\":\"end\",\"records\":0}\n".into(), "line 1: the first line must be the header"),
        (
            good.replacen("copanel-export", "other-format", 1),
            "line 1: format \"other-format\"",
        ),
        (
            format!("{}\n{{\"type\":\"event\",\"company\":\"acme\"\n", lines[0]),
            "line 2: not a valid line",
        ),
        (
            format!("{}\n{{\"type\":\"index\",\"kind\":\"nope\",\"company\":\"acme\",\"key\":\"k\",\"value_b64\":\"\"}}\n", lines[0]),
            "line 2: unknown index kind \"nope\"",
        ),
        (
            format!("{}\n{{\"type\":\"event\",\"company\":\"acme\",\"stream\":\"bad stream\",\"seq\":1,\"raw_b64\":\"AA==\"}}\n", lines[0]),
            "line 2: stream \"bad stream\" is not a valid stream name",
        ),
        (
            format!("{}\n{{\"type\":\"meta\",\"name\":\"x\",\"value_b64\":\"!!\"}}\n", lines[0]),
            "line 2: value_b64 is not valid base64",
        ),
        (lines[..lines.len() - 1].join("\n"), "without an end line"),
        (format!("{good}{}\n", lines[1]), "a line after the end line"),
        (
            good.replace("\"records\":", "\"records\":1"),
            "the end line counts",
        ),
        (format!("{}\n\u{0}\u{1}\n", lines[0]), "line 2: not a valid line"),
    ];
    for (i, (input, expected)) in cases.iter().enumerate() {
        let target = fresh(&format!("bad{i}"));
        let err = backup::import(&mut input.as_bytes(), &target).unwrap_err();
        assert!(
            err.to_string().contains(expected),
            "case {i}: expected {expected:?}, got {err}"
        );
        assert!(!target.exists(), "case {i}: a failed import leaves nothing");
    }
    // Invalid UTF-8.
    let target = fresh("utf8");
    let mut bytes = format!("{}\n", lines[0]).into_bytes();
    bytes.extend_from_slice(b"{\"type\":\xff}\n");
    let err = backup::import(&mut bytes.as_slice(), &target).unwrap_err();
    assert!(err.to_string().contains("line 2: not valid UTF-8"), "{err}");

    // Mangled copies: cut anywhere or with a byte changed, import fails cleanly or succeeds;
    // it never panics. Bounded and deterministic.
    let raw = good.as_bytes();
    for i in 0..24usize {
        let mut input = raw.to_vec();
        let at = (i * 7919) % input.len();
        if i % 2 == 0 {
            input.truncate(at);
        } else {
            input[at] = input[at].wrapping_add(1 + i as u8);
        }
        let target = fresh(&format!("mangled{i}"));
        let result = std::panic::catch_unwind(|| backup::import(&mut input.as_slice(), &target));
        assert!(result.is_ok(), "mangled copy {i} panicked");
    }
}

/// A `copanel serve` child, killed (SIGKILL, by its own handle) and reaped when dropped, so a
/// failing assertion never leaves it running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_after_sigkill_verifies_clean() {
    use copanel::auth::{now_secs, Auth, Claims};
    use copanel_protocol::{Encoding, ServerFrame};
    use std::io::BufRead;
    use std::process::Stdio;

    const SECRET: &str = "backup-test-secret-0123456789";
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_copanel"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data",
                path(dir.path()),
            ])
            .args(["--secret", SECRET])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts copanel serve"),
    );
    // "copanel listening on ws://ADDR/ws (…)": the first line it prints.
    let stdout = child.0.stdout.take().expect("piped stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reads the banner");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .unwrap_or_else(|| panic!("no ws:// address in {line:?}"))
        .to_owned();
    let auth = Auth::new(SECRET.as_bytes());
    let token = |sub: &str, role: Role| {
        auth.mint(&Claims {
            sub: sub.into(),
            company: "acme".into(),
            role,
            name: None,
            groups: vec![],
            exp: now_secs() + 600,
        })
        .expect("mints")
    };
    let mut svc =
        support::Client::connect(&url, &token("platform", Role::Service), Encoding::Json).await;
    for i in 0..3 {
        let f = svc
            .command(
                &format!("session/k{i}"),
                &format!("open-k{i}"),
                open_session("op1"),
            )
            .await;
        assert_eq!(ack_seq(&f), 1);
    }
    // 90 commands in flight (under the per-connection burst of 100); SIGKILL after 40 acks.
    let mut op1 =
        support::Client::connect(&url, &token("op1", Role::Operator), Encoding::Msgpack).await;
    for i in 0..90 {
        let cmd = if i % 3 == 0 {
            json!({"kind": "add_tag", "tag": format!("t{}", i % 7)})
        } else {
            json!({"kind": "add_note", "text": format!("note {i}")})
        };
        op1.send_command(&format!("session/k{}", i % 3), &format!("c{i}"), cmd)
            .await;
    }
    let mut acked = 0;
    while acked < 40 {
        match op1.recv().await {
            ServerFrame::Ack { .. } => acked += 1,
            ServerFrame::Error { code, message, .. } => panic!("refused: {code:?} {message}"),
            _ => {}
        }
    }
    child.0.kill().expect("SIGKILL");
    child.0.wait().expect("reaped");
    drop(op1);
    drop(svc);

    let o = copanel(&["verify", "--data", path(dir.path())]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let events: u64 = out
        .split(" streams, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event count in {out}"));
    assert!(events >= 3 + 40, "every acknowledged event is there: {out}");
    assert!(out.contains("no problems"), "{out}");
}

/// `copanel history` prints, offline, exactly the events and states the server served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_history_prints_what_the_server_served() {
    let server = TestServer::start().await;
    populate(&server).await;
    let served = observe(&server).await;
    let mut adm = server.client("adm", Role::Admin).await;
    let (head, _, _) = adm.subscribe_snapshot("session/s1").await;
    let mid = head / 2;
    let state_mid = match adm.state_at("session/s1", mid).await {
        copanel_protocol::ServerFrame::State { state, .. } => state,
        other => panic!("state_at: {other:?}"),
    };
    drop(adm);
    let dir = server.stop().await;
    let d = path(dir.path());

    for (s, (_, _, _, history)) in SESSIONS.iter().zip(&served) {
        let o = copanel(&["history", "--data", d, "--company", "acme", "--stream", s]);
        assert!(o.status.success(), "{}", text(&o));
        let printed: Vec<Envelope> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("one envelope a line"))
            .collect();
        assert_eq!(&printed, history, "{s}");
    }
    // --from / --limit page; --at is the state after that seq.
    let o = copanel(&[
        "history",
        "--data",
        d,
        "--company",
        "acme",
        "--stream",
        "session/s1",
        "--from",
        "2",
        "--limit",
        "2",
    ]);
    let seqs: Vec<u64> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Envelope>(l).unwrap().seq)
        .collect();
    assert_eq!(seqs, vec![2, 3]);
    let o = copanel(&[
        "history",
        "--data",
        d,
        "--company",
        "acme",
        "--stream",
        "session/s1",
        "--at",
        &mid.to_string(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON line");
    assert_eq!(v["seq"], mid);
    assert_eq!(v["state"], serde_json::to_value(&state_mid).unwrap());
    // Refusals name the problem.
    for (args, want) in [
        (vec!["--stream", "session/nope"], "has no events"),
        (vec!["--stream", "bogus/x"], "--stream"),
        (
            vec!["--stream", "session/s1", "--at", "999999"],
            "beyond the stream's head",
        ),
    ] {
        let mut all = vec!["history", "--data", d, "--company", "acme"];
        all.extend(args);
        let o = copanel(&all);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains(want), "{want}: {}", text(&o));
    }
}
