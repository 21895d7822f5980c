//! Property: through the real writer and a real sled store, whatever commands arrive (accepted or
//! refused, in batches of any size), the committed state the hub serves equals a replay of the
//! log, the log is gapless, and the state at every seq N is the fold of events 1..N. Also across
//! a reopen of the store.

use copanel::domain::{self, Limits, Principal};
use copanel::hub::Hub;
use copanel::store::{SledStore, Store, StreamId};
use copanel::writer::{self, CommandRequest, Durability};
use copanel_protocol::{Command, Envelope, MessageFrom, Owner, Role, StreamName, StreamState};
use proptest::prelude::*;
use std::sync::Arc;
use tokio::sync::oneshot;

fn principal(i: u8) -> Principal {
    let (id, role) = match i % 5 {
        0 => ("op1", Role::Operator),
        1 => ("op2", Role::Operator),
        2 => ("op3", Role::Operator),
        3 => ("sup", Role::Supervisor),
        _ => ("svc", Role::Service),
    };
    Principal {
        id: id.into(),
        role,
        groups: vec![],
    }
}

fn command() -> impl Strategy<Value = Command> {
    let word = prop_oneof![
        Just(String::new()),
        "[a-z]{1,6}",
        "[A-Za-zÀ-ž ]{1,12}",
        Just("x".repeat(70)),
    ];
    let op = prop_oneof![Just("op1"), Just("op2"), Just("op3")].prop_map(String::from);
    prop_oneof![
        Just(Command::OpenSession {
            channel: "chat".into(),
            client: Default::default(),
            parameters: Default::default(),
            owner: Owner::Operator {
                operator_id: "op1".into()
            },
        }),
        (word.clone(), word.clone()).prop_map(|(k, v)| Command::SetParameter {
            key: k,
            value: v,
            read_only: None
        }),
        word.clone()
            .prop_map(|k| Command::RemoveParameter { key: k }),
        word.clone().prop_map(|t| Command::AddTag { tag: t }),
        word.clone().prop_map(|t| Command::RemoveTag { tag: t }),
        word.clone().prop_map(|t| Command::AddNote { text: t }),
        (0u64..8, word.clone()).prop_map(|(n, t)| Command::EditNote {
            note_id: format!("n{n}"),
            text: t
        }),
        (0u64..8).prop_map(|n| Command::DeleteNote {
            note_id: format!("n{n}")
        }),
        word.clone().prop_map(|n| Command::SetClientInfo {
            name: Some(n),
            phone: None,
            email: None
        }),
        op.clone()
            .prop_map(|o| Command::InviteCollaborator { operator_id: o }),
        Just(Command::AcceptInvitation {}),
        Just(Command::DeclineInvitation {}),
        op.clone()
            .prop_map(|o| Command::CancelInvitation { operator_id: o }),
        Just(Command::Leave {}),
        op.prop_map(|o| Command::RemoveCollaborator { operator_id: o }),
        word.prop_map(|t| Command::PostMessage {
            from: MessageFrom::Operator,
            text: Some(t),
            template_id: None
        }),
        Just(Command::CloseSession {}),
    ]
}

fn replay(store: &dyn Store, id: &StreamId) -> (Vec<Envelope>, Vec<StreamState>) {
    let events = store.read(id, 1, usize::MAX).unwrap();
    let mut state = domain::initial(id.stream.kind());
    let mut states = vec![state.clone()];
    for (i, env) in events.iter().enumerate() {
        assert_eq!(env.seq, i as u64 + 1, "gapless log");
        domain::apply(&mut state, env);
        states.push(state.clone());
    }
    (events, states)
}

async fn run_case(batches: Vec<Vec<(u8, Option<bool>, Command)>>) {
    let dir = tempfile::tempdir().unwrap();
    let company: Arc<str> = Arc::from("acme");
    let stream = StreamName::parse("session/p1").unwrap();
    let sid = StreamId::new(company.clone(), stream.clone());
    let feeds: Vec<StreamId> = ["op1", "op2", "op3"]
        .iter()
        .map(|o| StreamId::new(company.clone(), StreamName::operator(o).unwrap()))
        .collect();
    let mut n = 0u64;
    for round in 0..2 {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let hub = Arc::new(Hub::new());
        let (w, task) = writer::spawn(
            store.clone(),
            hub.clone(),
            Arc::new(copanel::search::ContactIndex::new()),
            Durability::Sync,
            Limits::default(),
            1024,
        );
        // Install the streams in the hub first, so every event goes through the publish path.
        for id in std::iter::once(&sid).chain(feeds.iter()) {
            w.load(id.clone()).await.unwrap();
        }
        for batch in batches.iter().skip(round).step_by(2) {
            // Submit a whole batch before awaiting any reply, so the writer groups them.
            let mut replies = Vec::new();
            for (who, stale, cmd) in batch {
                n += 1;
                let (tx, rx) = oneshot::channel();
                let expected_seq = stale.map(|s| if s { 0 } else { u64::MAX });
                w.submit(CommandRequest {
                    company: company.clone(),
                    principal: principal(*who),
                    stream: stream.clone(),
                    command_id: format!("c{n}"),
                    expected_seq,
                    command: cmd.clone(),
                    reply: tx,
                })
                .await;
                replies.push(rx);
            }
            for r in replies {
                let _ = r.await.unwrap();
            }
        }
        // A load is answered at the end of the writer's batch: a barrier after the last publish.
        for id in std::iter::once(&sid).chain(feeds.iter()) {
            w.load(id.clone()).await.unwrap();
        }
        for id in std::iter::once(&sid).chain(feeds.iter()) {
            let (events, states) = replay(store.as_ref(), id);
            let head = events.len() as u64;
            let live = hub.read(id, |c| (c.head, c.state.clone())).unwrap();
            // Then: the committed state served to subscribers is the replay of the log.
            assert_eq!(live.0, head, "hub head of {id} in round {round}");
            assert_eq!(&live.1, states.last().unwrap());
            // Then: state at N is the fold of 1..N, for every N.
            for (k, s) in states.iter().enumerate() {
                let mut fold = domain::initial(id.stream.kind());
                for env in events.iter().take(k) {
                    domain::apply(&mut fold, env);
                }
                assert_eq!(&fold, s);
            }
        }
        drop(w);
        task.await.unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn committed_state_equals_replay(
        batches in prop::collection::vec(
            prop::collection::vec((0u8..5, prop::option::of(any::<bool>()), command()), 1..12),
            1..6,
        )
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run_case(batches));
    }
}
