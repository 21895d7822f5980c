//! Anonymisation over real sockets and the real data directory: an admin anonymises a closed
//! session; subscribers are told; history and `state_at` show the redaction marker in place of
//! the personal data with every seq and kind kept; and the personal data is gone from every
//! file under the data directory (grepped as bytes after a graceful stop), while the contact
//! directory keeps its own copy. A restart finds everything readable with the same epoch.
//!
//! What must vanish and what stays: the client information the session was *opened* with, the
//! transcript texts and the parameter values exist only in the session's events, so they must
//! not be found anywhere on disk. The client information at the time of `add_to_directory` was
//! copied into `contact/<id>` (`contact_created`): that is directory data, it stays, and the test
//! uses it as the positive control that the grep does find what is still stored.

mod support;

use copanel::domain::anonymize::{redact_event, REDACTED};
use copanel_protocol::{Envelope, Event, Role, ServerFrame, SessionState, StreamState};
use serde_json::json;
use std::path::Path;
use support::*;

/// Only in the session's events: must vanish.
const OPEN_NAME: &str = "Xenofon Quagmirevic";
const OPEN_PHONE: &str = "+420 611 482 937";
const OPEN_EMAIL: &str = "xenofon.quagmirevic@example.org";
const PRESET_VALUE: &str = "CRM-SECRET-4471";
const SET_VALUE: &str = "ORDER-SECRET-9902";
const CLIENT_TEXT: &str = "TRANSCRIPT-alpha-7731 my card is 4111";
const OPERATOR_TEXT: &str = "TRANSCRIPT-beta-2209 thank you";
/// Copied into the contact by `add_to_directory`: directory data, stays on disk.
const KEPT_NAME: &str = "Yolanda Directorykeep";
const KEPT_EMAIL: &str = "yolanda.directorykeep@example.org";
const KEPT_PHONE: &str = "+421 905 316 284";
/// An operator note: not personal data of the client, stays.
const NOTE_TEXT: &str = "NOTE-stays-5530";

const MUST_VANISH: [&str; 7] = [
    OPEN_NAME,
    OPEN_PHONE,
    OPEN_EMAIL,
    PRESET_VALUE,
    SET_VALUE,
    CLIENT_TEXT,
    OPERATOR_TEXT,
];

/// Every file under `dir`, recursively, as (path, bytes).
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("list data dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read a data file");
                out.push((path, bytes));
            }
        }
    }
    out
}

/// The files under `dir` that contain `needle`.
fn found_in(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    let needle = needle.as_bytes();
    files(dir)
        .into_iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(p, _)| p)
        .collect()
}

fn ack(f: &ServerFrame) -> (u64, Option<String>) {
    match f {
        ServerFrame::Ack { seq, created, .. } => (*seq, created.clone()),
        other => panic!("expected ack, got {other:?}"),
    }
}

/// Opens `session/<id>` with the distinctive data above and fills the panel; returns the contact
/// id and the head after closing.
async fn filled_session(server: &TestServer, id: &str) -> (String, u64) {
    let stream = format!("session/{id}");
    let mut svc = server.client("platform", Role::Service).await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let open = json!({"kind": "open_session", "channel": "chat",
        "client": {"name": OPEN_NAME, "phone": OPEN_PHONE, "email": OPEN_EMAIL},
        "parameters": {"crm_id": {"value": PRESET_VALUE, "read_only": true}},
        "owner": {"operator_id": "op1"}});
    ack_seq(&svc.command(&stream, "open", open).await);
    let f = svc
        .command(
            &stream,
            "m1",
            json!({"kind": "post_message", "from": "client", "text": CLIENT_TEXT}),
        )
        .await;
    ack_seq(&f);
    let f = op1
        .command(
            &stream,
            "m2",
            json!({"kind": "post_message", "from": "operator", "text": OPERATOR_TEXT}),
        )
        .await;
    ack_seq(&f);
    let f = op1
        .command(
            &stream,
            "p1",
            json!({"kind": "set_parameter", "key": "order", "value": SET_VALUE}),
        )
        .await;
    ack_seq(&f);
    let f = op1
        .command(
            &stream,
            "ci",
            json!({"kind": "set_client_info", "name": KEPT_NAME, "phone": KEPT_PHONE,
                "email": KEPT_EMAIL}),
        )
        .await;
    ack_seq(&f);
    let (_, contact) = ack(&op1
        .command(&stream, "dir", json!({"kind": "add_to_directory"}))
        .await);
    let contact = contact.expect("add_to_directory returns the contact id");
    let f = op1
        .command(
            &stream,
            "n1",
            json!({"kind": "add_note", "text": NOTE_TEXT}),
        )
        .await;
    ack_seq(&f);
    let f = op1
        .command(&stream, "t1", json!({"kind": "add_tag", "tag": "vip"}))
        .await;
    ack_seq(&f);
    let head = ack_seq(
        &op1.command(&stream, "close", json!({"kind": "close_session"}))
            .await,
    );
    (contact, head)
}

fn kinds(events: &[Envelope]) -> Vec<&'static str> {
    events.iter().map(|e| e.event.kind()).collect()
}

/// No distinctive personal string in a state (checked on its JSON form).
#[track_caller]
fn clean(state: &SessionState) {
    let text = serde_json::to_string(state).unwrap();
    for s in MUST_VANISH
        .iter()
        .chain([KEPT_NAME, KEPT_PHONE, KEPT_EMAIL].iter())
    {
        assert!(!text.contains(s), "{s:?} still in state {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymise_erases_personal_data_from_disk_and_survives_restart() {
    let server = TestServer::start().await;
    let stream = "session/anon1";
    let (contact, closed_head) = filled_session(&server, "anon1").await;
    let contact_stream = format!("contact/{contact}");

    let mut op1 = server.client("op1", Role::Operator).await;
    let mut sup = server.client("sup", Role::Supervisor).await;
    let mut adm = server.client("adm", Role::Admin).await;
    let mut op2 = server.client("op2", Role::Operator).await;
    let before = op1.full_history(stream).await;
    assert_eq!(before.len() as u64, closed_head);

    // Positive control: while the session is not anonymised, the grep finds its data on disk
    // (acks are durable, `sync` mode).
    for s in MUST_VANISH {
        assert!(
            !found_in(&server.data(), s).is_empty(),
            "{s:?} should be on disk before anonymising"
        );
    }

    // Who may not, and when not.
    let f = op1
        .command(stream, "anon-op", json!({"kind": "anonymize"}))
        .await;
    assert_eq!(error_code(&f), "forbidden");
    let f = sup
        .command(stream, "anon-sup", json!({"kind": "anonymize"}))
        .await;
    assert_eq!(error_code(&f), "forbidden");
    opened(&server, "open2", "op1").await;
    let f = adm
        .command("session/open2", "anon", json!({"kind": "anonymize"}))
        .await;
    let (code, field, message) = error_parts(&f);
    assert_eq!(code, "invalid");
    assert_eq!(field.as_deref(), Some("command.kind"));
    assert_eq!(
        message,
        "only a closed session can be anonymised; close it first"
    );

    // Subscribers: the owner and a supervisor on the session, an operator on the contact.
    op1.subscribe_snapshot(stream).await;
    sup.subscribe(stream, Some(closed_head)).await;
    let (contact_head, _, contact_state) = op2.subscribe_snapshot(&contact_stream).await;
    match &contact_state {
        StreamState::Contact(c) => assert_eq!(c.sessions, vec!["anon1".to_string()]),
        other => panic!("{other:?}"),
    }

    let f = adm
        .command(stream, "anon", json!({"kind": "anonymize"}))
        .await;
    let anon_seq = ack_seq(&f);
    assert_eq!(anon_seq, closed_head + 1);

    for c in [&mut op1, &mut sup] {
        let e = c.recv_event().await;
        assert_eq!(
            (e.seq, e.event.clone()),
            (anon_seq, Event::SessionAnonymized)
        );
        assert_eq!(e.actor.id, "adm");
    }
    let e = op2.recv_event().await;
    assert_eq!(e.seq, contact_head + 1);
    assert_eq!(
        e.event,
        Event::SessionUnlinked {
            session_id: "anon1".into()
        }
    );

    // History: the same seqs and kinds, each event redacted, then session_anonymized.
    let after = adm.full_history(stream).await;
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(kinds(&after[..before.len()]), kinds(&before));
    for (b, a) in before.iter().zip(&after) {
        let mut want = b.clone();
        redact_event(&mut want);
        assert_eq!(a, &want, "seq {} is the redacted original", b.seq);
    }
    assert_eq!(after.last().unwrap().event, Event::SessionAnonymized);
    let texts: Vec<&str> = after
        .iter()
        .filter_map(|e| match &e.event {
            Event::MessagePosted { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, vec![REDACTED, REDACTED]);
    assert!(after.iter().any(|e| matches!(&e.event,
        Event::NoteAdded { text, .. } if text == NOTE_TEXT)));

    // state_at any seq shows redacted data; the head's state is anonymised.
    for n in 1..=anon_seq {
        let s = adm.session_at(stream, n).await;
        clean(&s);
        assert_eq!(s.anonymized, n == anon_seq, "anonymized flag at seq {n}");
    }
    let (head, epoch, snap) = adm.subscribe_snapshot(stream).await;
    assert_eq!(head, anon_seq);
    let snap = session(&snap).clone();
    clean(&snap);
    assert!(snap.anonymized);
    assert_eq!(snap.client.name, REDACTED);
    assert_eq!(snap.client.phone, REDACTED);
    assert_eq!(snap.client.email, REDACTED);
    assert_eq!(snap.contact_id, None);
    assert_eq!(snap.messages, 2);
    assert_eq!(snap.parameters["crm_id"].value, REDACTED);
    assert_eq!(snap.parameters["order"].value, REDACTED);
    assert_eq!(snap.notes.len(), 1);
    assert_eq!(snap.tags.len(), 1);

    // The contact stays in the directory but no longer lists the session.
    let (_, _, contact_state) = adm.subscribe_snapshot(&contact_stream).await;
    match &contact_state {
        StreamState::Contact(c) => {
            assert!(c.sessions.is_empty(), "{:?}", c.sessions);
            assert_eq!(c.name, KEPT_NAME);
        }
        other => panic!("{other:?}"),
    }

    // The owner's sessions list shows the redaction marker as the client's name.
    let id = op1
        .send_request(json!({"type": "query", "what": "sessions", "status": "closed"}))
        .await;
    let listed = op1
        .recv_until(|f| matches!(f, ServerFrame::Result { id: got, .. } if *got == Some(id)))
        .await;
    match &listed {
        ServerFrame::Result {
            sessions: Some(list),
            ..
        } => {
            let mine = list
                .iter()
                .find(|s| s.session_id == "anon1")
                .expect("anon1 listed");
            assert_eq!(mine.client_name, REDACTED);
        }
        other => panic!("expected sessions, got {other:?}"),
    }

    // Again: an accepted no-op.
    let f = adm
        .command(stream, "anon-again", json!({"kind": "anonymize"}))
        .await;
    assert_eq!(ack_seq(&f), anon_seq);
    assert_eq!(adm.head(stream).await, anon_seq);

    drop((op1, sup, adm, op2));
    let dir = server.stop().await;

    // Nothing of the session's personal data anywhere under the data directory.
    for s in MUST_VANISH {
        let hits = found_in(dir.path(), s);
        assert!(hits.is_empty(), "{s:?} still on disk in {hits:?}");
    }
    // The directory's copy and the note stay: the grep does find what is still stored.
    for s in [KEPT_NAME, KEPT_PHONE, KEPT_EMAIL, NOTE_TEXT] {
        assert!(
            !found_in(dir.path(), s).is_empty(),
            "{s:?} should still be on disk"
        );
    }
    // One live sled directory, named by CURRENT.
    let current = std::fs::read_to_string(dir.path().join("CURRENT")).unwrap();
    let logs: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("log-"))
        .collect();
    assert_eq!(logs, vec![current.trim().to_string()]);

    // Restart on the same directory: same epoch, same head, same redacted history.
    let server = TestServer::start_in(dir, |_| {}).await;
    assert_eq!(server.epoch(), epoch);
    let mut adm = server.client("adm", Role::Admin).await;
    assert_eq!(adm.full_history(stream).await, after);
    let (head, _, snap2) = adm.subscribe_snapshot(stream).await;
    assert_eq!(head, anon_seq);
    assert_eq!(session(&snap2), &snap);
    // New commands on other sessions work, and the other session kept its data.
    let mut op1 = server.client("op1", Role::Operator).await;
    let f = op1
        .command(
            "session/open2",
            "after",
            json!({"kind": "post_message", "from": "operator", "text": "still here"}),
        )
        .await;
    assert_eq!(ack_seq(&f), 2);
    opened(&server, "fresh", "op1").await;
    let s = adm.session_at("session/open2", 1).await;
    assert_eq!(s.client.name, "Jana Nováková");
    server.stop().await;
}

/// A crash between the commit of `session_anonymized` and the end of the redaction leaves the
/// event and the writer's marker (both in one atomic write) and the data still on disk: the
/// next start finishes the redaction before it takes commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_redaction_is_finished_at_the_next_start() {
    use copanel::store::{AppendBatch, IndexKind, IndexWrite, SledStore, Store};
    use copanel_protocol::{Actor, MessageFrom, Owner, StreamName};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let stream = StreamName::parse("session/crashed").unwrap();
    let env = |seq: u64, event: Event| {
        Arc::new(Envelope {
            stream: stream.clone(),
            seq,
            at: 1_700_000_000_000 + seq,
            actor: Actor {
                id: "platform".into(),
                role: Role::Service,
            },
            command_id: Some(format!("c{seq}")),
            event,
        })
    };
    let events = vec![
        env(
            1,
            Event::SessionOpened {
                channel: "chat".into(),
                name: OPEN_NAME.into(),
                phone: OPEN_PHONE.into(),
                email: OPEN_EMAIL.into(),
                parameters: Default::default(),
                owner: Owner::Operator {
                    operator_id: "op1".into(),
                },
            },
        ),
        env(
            2,
            Event::MessagePosted {
                from: MessageFrom::Client,
                text: CLIENT_TEXT.into(),
                template_id: None,
            },
        ),
        env(3, Event::SessionClosed),
        env(4, Event::SessionAnonymized),
    ];
    let epoch = {
        let store = SledStore::open(dir.path()).unwrap();
        let batch = AppendBatch {
            events: events.into_iter().map(|e| (Arc::from("acme"), e)).collect(),
            outcomes: Vec::new(),
            index: vec![IndexWrite {
                company: Arc::from(""),
                kind: IndexKind::Redactions,
                key: "acme/session/crashed".into(),
                value: Some(3u64.to_be_bytes().to_vec()),
            }],
            ..AppendBatch::default()
        };
        store.append(&batch).unwrap();
        store.flush().await.unwrap();
        store.epoch().to_owned()
    };
    assert!(!found_in(dir.path(), OPEN_NAME).is_empty());

    let server = TestServer::start_in(dir, |_| {}).await;
    assert_eq!(server.epoch(), epoch);
    let mut adm = server.client("adm", Role::Admin).await;
    let history = adm.full_history("session/crashed").await;
    assert_eq!(
        kinds(&history),
        vec![
            "session_opened",
            "message_posted",
            "session_closed",
            "session_anonymized"
        ]
    );
    match &history[1].event {
        Event::MessagePosted { text, .. } => assert_eq!(text, REDACTED),
        other => panic!("{other:?}"),
    }
    let s = adm.session_at("session/crashed", 1).await;
    assert_eq!(s.client.name, REDACTED);
    drop(adm);
    let dir = server.stop().await;
    for s in [OPEN_NAME, OPEN_PHONE, OPEN_EMAIL, CLIENT_TEXT] {
        let hits = found_in(dir.path(), s);
        assert!(hits.is_empty(), "{s:?} still on disk in {hits:?}");
    }
    // The marker is gone: a further start does not compact again.
    let store = SledStore::open(dir.path()).unwrap();
    assert!(store
        .index_scan("", IndexKind::Redactions)
        .unwrap()
        .is_empty());
}
