//! Persisted snapshots (`copanel::snapshot`): through the real writer and a real sled store,
//! every stored snapshot is the fold of the events up to its seq, and a state loaded from a
//! snapshot plus the tail equals a full replay at any seq — also when the latest snapshot has
//! another format, is garbage, is of another stream kind or claims a seq the log does not have
//! (then it falls back). Over real sockets: joins and `state_at` after a restart agree with the
//! history, and anonymisation leaves no snapshot with personal data on disk.

mod support;

use copanel::domain::{self, Limits, Principal};
use copanel::hub::Hub;
use copanel::snapshot;
use copanel::store::{AppendBatch, SledStore, Store, StreamId};
use copanel::writer::{self, CommandRequest, Durability, Tuning};
use copanel_protocol::{Command, Envelope, MessageFrom, Owner, Role, StreamName, StreamState};
use proptest::prelude::*;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use support::*;
use tokio::sync::oneshot;

fn principal(i: u8) -> Principal {
    let (id, role) = match i {
        0 => ("op1", Role::Operator),
        1 => ("op2", Role::Operator),
        2 => ("sup", Role::Supervisor),
        _ => ("platform", Role::Service),
    };
    Principal {
        id: id.into(),
        role,
        groups: vec![],
    }
}

fn command() -> impl Strategy<Value = Command> {
    let word = prop_oneof![Just(String::new()), "[a-z]{1,6}", "[A-Za-zÀ-ž ]{1,12}"];
    let op = prop_oneof![Just("op1"), Just("op2")].prop_map(String::from);
    prop_oneof![
        3 => (word.clone(), word.clone()).prop_map(|(k, v)| Command::SetParameter {
            key: k,
            value: v,
            read_only: None
        }),
        1 => word.clone()
            .prop_map(|k| Command::RemoveParameter { key: k }),
        1 => word.clone().prop_map(|t| Command::AddTag { tag: t }),
        1 => word.clone().prop_map(|t| Command::RemoveTag { tag: t }),
        2 => word.clone().prop_map(|t| Command::AddNote { text: t }),
        1 => (0u64..6, word.clone()).prop_map(|(n, t)| Command::EditNote {
            note_id: format!("n{n}"),
            text: t
        }),
        1 => (0u64..6).prop_map(|n| Command::DeleteNote {
            note_id: format!("n{n}")
        }),
        1 => word.clone().prop_map(|n| Command::SetClientInfo {
            name: Some(n),
            phone: None,
            email: None
        }),
        1 => op.clone()
            .prop_map(|o| Command::InviteCollaborator { operator_id: o }),
        1 => Just(Command::AcceptInvitation {}),
        2 => word.prop_map(|t| Command::PostMessage {
            from: MessageFrom::Operator,
            text: Some(t),
            template_id: None
        }),
        1 => Just(Command::CloseSession {}),
    ]
}

/// The log of `id` and the full fold at every seq (`states[k]` = events 1..k folded).
fn replay(store: &dyn Store, id: &StreamId) -> (Vec<Envelope>, Vec<StreamState>) {
    let events = store.read(id, 1, usize::MAX).unwrap();
    let mut state = domain::initial(id.stream.kind());
    let mut states = vec![state.clone()];
    for env in &events {
        domain::apply(&mut state, env);
        states.push(state.clone());
    }
    (events, states)
}

fn start_writer(
    store: &Arc<dyn Store>,
    hub: &Arc<Hub>,
    every: u64,
) -> (writer::WriterHandle, tokio::task::JoinHandle<()>) {
    writer::spawn_tuned(
        store.clone(),
        hub.clone(),
        Arc::new(copanel::search::ContactIndex::new()),
        Durability::Sync,
        Limits::default(),
        copanel::webhooks::Outbox::new(),
        Tuning {
            queue: 1024,
            snapshot_every: every,
        },
    )
}

/// Checks every stored snapshot and a load at every seq against the full fold.
fn check_against_replay(store: &dyn Store, id: &StreamId, every: u64) {
    let (events, states) = replay(store, id);
    let head = events.len() as u64;
    let mut snapshots = 0;
    for k in 0..=head {
        let loaded = snapshot::load(store, id, Some(k)).unwrap();
        assert_eq!(loaded.head, k);
        assert_eq!(&loaded.state, &states[k as usize], "state at {k} of {head}");
        assert!(loaded.from_snapshot <= k);
        if let Some((seq, bytes)) = store.snapshot(id, k).unwrap() {
            if seq == k {
                snapshots += 1;
                let s = snapshot::decode(id, &bytes).expect("a stored snapshot decodes");
                assert_eq!(
                    &s, &states[k as usize],
                    "the snapshot at {k} is the fold of 1..{k}"
                );
            }
        }
    }
    // Snapshots are actually written: one at least once the head is `every` past zero.
    assert_eq!(
        snapshots > 0,
        head >= every,
        "{snapshots} snapshots at head {head}"
    );
    let latest = snapshot::load(store, id, None).unwrap();
    assert_eq!(latest.head, head);
    assert_eq!(&latest.state, &states[head as usize]);
    if head >= every {
        assert!(
            latest.from_snapshot > 0,
            "the latest load starts from a snapshot"
        );
    }
}

async fn run_case(every: u64, batches: Vec<Vec<(u8, Command)>>) {
    let dir = tempfile::tempdir().unwrap();
    let company: Arc<str> = Arc::from("acme");
    let stream = StreamName::parse("session/p1").unwrap();
    let sid = StreamId::new(company.clone(), stream.clone());
    let mut n = 0u64;
    {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let hub = Arc::new(Hub::new());
        let (w, task) = start_writer(&store, &hub, every);
        let open = Command::OpenSession {
            channel: "chat".into(),
            client: Default::default(),
            parameters: Default::default(),
            owner: Owner::Operator {
                operator_id: "op1".into(),
            },
        };
        for batch in std::iter::once(vec![(3u8, open)]).chain(batches) {
            // Submit a whole batch before awaiting any reply, so the writer groups them.
            let mut replies = Vec::new();
            for (who, cmd) in batch {
                n += 1;
                let (tx, rx) = oneshot::channel();
                w.submit(CommandRequest {
                    company: company.clone(),
                    principal: principal(who),
                    stream: stream.clone(),
                    command_id: format!("c{n}"),
                    expected_seq: None,
                    command: cmd,
                    reply: tx,
                })
                .await;
                replies.push(rx);
            }
            for r in replies {
                let _ = r.await.unwrap();
            }
        }
        drop(w);
        task.await.unwrap();
        check_against_replay(store.as_ref(), &sid, every);
    }

    // Reopened, with unusable snapshots stored on top: another format, garbage, another stream
    // kind, and a seq beyond the log. Each must be ignored, never trusted.
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let (events, states) = replay(store.as_ref(), &sid);
    let head = events.len() as u64;
    assert!(head >= 1, "the session was opened");
    let good = snapshot::encode(&states[head as usize]).unwrap();
    let mut other_format = good.clone();
    other_format[1] = snapshot::FORMAT.wrapping_add(1);
    let other_kind = snapshot::encode(&domain::initial(copanel_protocol::StreamKind::Operator));
    let beyond = (sid.clone(), head + 5, good);
    for bad in [
        (sid.clone(), head, other_format),
        (sid.clone(), head, vec![b'S', snapshot::FORMAT, 0xc1, 0xff]),
        (sid.clone(), head, other_kind.unwrap()),
        beyond,
    ] {
        let seq = bad.1;
        store
            .append(&AppendBatch {
                snapshots: vec![bad],
                ..AppendBatch::default()
            })
            .unwrap();
        let loaded = snapshot::load(store.as_ref(), &sid, None).unwrap();
        assert_eq!(loaded.head, head, "a snapshot at {seq} is not a head");
        assert_eq!(&loaded.state, &states[head as usize]);
        assert_ne!(
            loaded.from_snapshot, seq,
            "the unusable snapshot at {seq} was ignored"
        );
    }
    // Through a fresh writer (cache miss) into the hub: the replayed state, and new events.
    let hub = Arc::new(Hub::new());
    let (w, task) = start_writer(&store, &hub, every);
    w.load(sid.clone()).await.unwrap();
    let live = hub.read(&sid, |c| (c.head, c.state.clone())).unwrap();
    assert_eq!(live, (head, states[head as usize].clone()));
    for i in 0..every + 1 {
        let (tx, rx) = oneshot::channel();
        w.submit(CommandRequest {
            company: company.clone(),
            principal: principal(0),
            stream: stream.clone(),
            command_id: format!("after{i}"),
            expected_seq: None,
            command: Command::PostMessage {
                from: MessageFrom::Client,
                text: Some(format!("m{i}")),
                template_id: None,
            },
            reply: tx,
        })
        .await;
        let _ = rx.await.unwrap();
    }
    drop(w);
    task.await.unwrap();
    let (_, states) = replay(store.as_ref(), &sid);
    let loaded = snapshot::load(store.as_ref(), &sid, None).unwrap();
    assert_eq!(&loaded.state, states.last().unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn snapshot_plus_tail_equals_full_replay(
        every in 1u64..6,
        batches in prop::collection::vec(
            prop::collection::vec((0u8..3, command()), 1..6), 1..8),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_case(every, batches));
    }
}

/// Every file under `dir` that contains `needle`.
fn found_in(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("list data dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read a data file");
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    out.push(path);
                }
            }
        }
    }
    out
}

/// A distinctive name that only the session's events and snapshots hold.
const NAME: &str = "Quirinus Snapshotson";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_state_at_agree_with_the_history_after_a_restart() {
    let server = TestServer::start_with(|c| c.snapshot_every = 3).await;
    opened(&server, "j1", "op1").await;
    let mut op1 = server.client("op1", Role::Operator).await;
    for i in 0..10 {
        let f = op1
            .command(
                "session/j1",
                &format!("p{i}"),
                json!({"kind": "set_parameter", "key": format!("k{}", i % 4), "value": format!("v{i}")}),
            )
            .await;
        ack_seq(&f);
    }
    let dir = server.stop().await;
    // A fresh process state: the writer cache and the hub are empty, the snapshots are on disk.
    let server = TestServer::start_in(dir, |c| c.snapshot_every = 3).await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let history = op1.full_history("session/j1").await;
    assert_eq!(history.len(), 11);
    let mut fold = domain::initial(copanel_protocol::StreamKind::Session);
    let mut states = vec![fold.clone()];
    for env in &history {
        domain::apply(&mut fold, env);
        states.push(fold.clone());
    }
    for seq in 1..=11u64 {
        let s = op1.session_at("session/j1", seq).await;
        assert_eq!(
            StreamState::Session(s),
            states[seq as usize],
            "state_at {seq}"
        );
    }
    let (head, _, state) = op1.subscribe_snapshot("session/j1").await;
    assert_eq!(head, 11);
    assert_eq!(state, states[11]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymisation_leaves_no_snapshot_with_personal_data_on_disk() {
    let server = TestServer::start_with(|c| c.snapshot_every = 2).await;
    opened(&server, "a1", "op1").await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let f = op1
        .command(
            "session/a1",
            "ci",
            json!({"kind": "set_client_info", "name": NAME}),
        )
        .await;
    ack_seq(&f);
    for i in 0..6 {
        let f = op1
            .command(
                "session/a1",
                &format!("p{i}"),
                json!({"kind": "set_parameter", "key": "k", "value": format!("v{i}")}),
            )
            .await;
        ack_seq(&f);
    }
    // Positive control: the name is on disk (events and snapshots) before anonymising.
    assert!(!found_in(&server.data(), NAME).is_empty());
    ack_seq(
        &op1.command("session/a1", "close", json!({"kind": "close_session"}))
            .await,
    );
    let mut adm = server.client("adm", Role::Admin).await;
    ack_seq(
        &adm.command("session/a1", "anon", json!({"kind": "anonymize"}))
            .await,
    );
    // Loads after the redaction (a state_at within the redacted range) see no name either.
    let s = adm.session_at("session/a1", 6).await;
    assert!(!serde_json::to_string(&s).unwrap().contains(NAME));
    let dir = server.stop().await;
    let left = found_in(dir.path(), NAME);
    assert!(left.is_empty(), "{NAME:?} still on disk in {left:?}");
    // And after a restart the joined state is the replay of the redacted log.
    let server = TestServer::start_in(dir, |c| c.snapshot_every = 2).await;
    let mut adm = server.client("adm", Role::Admin).await;
    let history = adm.full_history("session/a1").await;
    let mut fold = domain::initial(copanel_protocol::StreamKind::Session);
    for env in &history {
        domain::apply(&mut fold, env);
    }
    let (head, _, state) = adm.subscribe_snapshot("session/a1").await;
    assert_eq!(head, history.len() as u64);
    assert_eq!(state, fold);
    server.stop().await;
}
