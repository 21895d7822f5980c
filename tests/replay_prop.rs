//! Deterministic replay, as a property: random command sequences from several principals run
//! through `decide` against the live state; every accepted event is applied as an envelope.
//! Then the live state must equal a fresh fold of the log, the state at every seq must equal
//! the fold of its prefix, and the invitees' feeds must mirror the session's pending
//! invitations. `decide` must never panic, whatever the input.

use copanel::domain::{self, Ctx, Limits, Principal, Rejection};
use copanel_protocol::command::ClientInfoInput;
use copanel_protocol::{
    CollaboratorStatus, Command, Envelope, ErrorCode, MessageFrom, Owner, PresetParameter, Role,
    SessionState, SessionStatus, StreamKind, StreamName, StreamState,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const NOW: u64 = 1_700_000_000_000;

/// Small limits, so random sequences run into every one of them.
fn limits() -> Limits {
    Limits {
        client_field_chars: 12,
        tag_chars: 6,
        tags_per_session: 3,
        parameter_key_chars: 6,
        parameter_value_chars: 10,
        parameters_per_session: 3,
        note_chars: 20,
        notes_per_session: 3,
        message_chars: 20,
        id_chars: 8,
        collaborators_per_session: 2,
    }
}

fn principals() -> Vec<Principal> {
    let p = |id: &str, role: Role, groups: &[&str]| Principal {
        id: id.into(),
        role,
        groups: groups.iter().map(|g| g.to_string()).collect(),
    };
    vec![
        p("op1", Role::Operator, &[]),
        p("op2", Role::Operator, &["g"]),
        p("op3", Role::Operator, &["g"]),
        p("sup", Role::Supervisor, &[]),
        p("platform", Role::Service, &[]),
        p("adm", Role::Admin, &[]),
    ]
}

// ---- command vocabulary ----------------------------------------------------------------------

/// Short strings: empty, blank, plain, unicode, oversize, with control characters, plus
/// arbitrary ones.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".to_string()),
        "[a-cA-C]{1,3}",
        "[a-z@.+ 0-9]{0,8}",
        Just("Ünï ✓ é".to_string()),
        Just("x".repeat(25)),
        Just("a\u{0}b".to_string()),
        Just("line\nnext\tx".to_string()),
        Just("a@b.co".to_string()),
        any::<String>().prop_map(|s| s.chars().take(10).collect()),
    ]
    .boxed()
}

/// Strings that pass most checks, so that enough commands are accepted to build real state.
fn clean_text() -> BoxedStrategy<String> {
    prop_oneof![
        "[a-cA-C]{1,3}",
        Just("Ünï ✓ é".to_string()),
        Just("a b".to_string())
    ]
    .boxed()
}

/// Mostly well-formed client info, sometimes anything.
fn phone() -> BoxedStrategy<String> {
    prop_oneof![
        Just("".to_string()),
        Just("+33 1 23".to_string()),
        Just("(030) 12-3".to_string()),
        Just("12".to_string()),
        text()
    ]
    .boxed()
}

fn email() -> BoxedStrategy<String> {
    prop_oneof![
        Just("".to_string()),
        Just("a@b.co".to_string()),
        Just("Ü@b.co".to_string()),
        Just("a@b".to_string()),
        text()
    ]
    .boxed()
}

fn operator_id() -> BoxedStrategy<String> {
    prop_oneof![
        1 => Just("op1"),
        4 => Just("op2"),
        4 => Just("op3"),
        1 => Just("op4"),
        1 => Just("sup"),
        1 => Just("bad id"),
        1 => Just(""),
        1 => Just("op-123456789"),
    ]
    .prop_map(String::from)
    .boxed()
}

/// `#k` stands for the k-th note of the live state (see [`resolve`]), so edits and deletes
/// usually hit a note that exists; the others usually miss.
fn note_id() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (0usize..4).prop_map(|k| format!("#{k}")),
        1 => (1u64..16).prop_map(|n| format!("n{n}")),
        1 => Just("nx".to_string()),
    ]
    .boxed()
}

/// Replaces a `#k` note reference by the id of the k-th note (modulo the count), if any.
fn resolve(cmd: &Command, s: &SessionState) -> Command {
    let pick = |id: &str| -> String {
        match id.strip_prefix('#').and_then(|k| k.parse::<usize>().ok()) {
            Some(k) if !s.notes.is_empty() => s.notes[k % s.notes.len()].note_id.clone(),
            _ => id.to_string(),
        }
    };
    match cmd {
        Command::EditNote { note_id, text } => Command::EditNote {
            note_id: pick(note_id),
            text: text.clone(),
        },
        Command::DeleteNote { note_id } => Command::DeleteNote {
            note_id: pick(note_id),
        },
        other => other.clone(),
    }
}

fn tag() -> BoxedStrategy<String> {
    prop_oneof![
        Just("vip"),
        Just("VIP "),
        Just("café"),
        Just("CAFÉ"),
        Just("a"),
        Just("b"),
        Just("  "),
        Just("toolongtag"),
    ]
    .prop_map(String::from)
    .boxed()
}

fn key() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop_oneof![Just("k1"), Just("k2"), Just("k3"), Just("k4"), Just("ключ")]
            .prop_map(String::from),
        1 => text(),
    ]
    .boxed()
}

fn owner() -> BoxedStrategy<Owner> {
    prop_oneof![
        3 => Just(Owner::Operator {
            operator_id: "op1".into()
        }),
        1 => Just(Owner::Group { group: "g".into() }),
        1 => operator_id().prop_map(|operator_id| Owner::Operator { operator_id }),
        1 => text().prop_map(|group| Owner::Group { group }),
    ]
    .boxed()
}

fn open_session() -> BoxedStrategy<Command> {
    (
        prop_oneof![3 => Just("chat".to_string()), 1 => text()],
        (text(), phone(), email()),
        prop::collection::btree_map(key(), (text(), any::<bool>()), 0..4),
        owner(),
    )
        .prop_map(
            |(channel, (name, phone, email), params, owner)| Command::OpenSession {
                channel,
                client: ClientInfoInput { name, phone, email },
                parameters: params
                    .into_iter()
                    .map(|(k, (value, read_only))| (k, PresetParameter { value, read_only }))
                    .collect(),
                owner,
            },
        )
        .boxed()
}

fn collaborator_command() -> BoxedStrategy<Command> {
    prop_oneof![
        3 => operator_id().prop_map(|operator_id| Command::InviteCollaborator { operator_id }),
        2 => Just(Command::AcceptInvitation {}),
        1 => Just(Command::DeclineInvitation {}),
        1 => operator_id().prop_map(|operator_id| Command::CancelInvitation { operator_id }),
        1 => Just(Command::Leave {}),
        1 => operator_id().prop_map(|operator_id| Command::RemoveCollaborator { operator_id }),
    ]
    .boxed()
}

fn panel_command() -> BoxedStrategy<Command> {
    prop_oneof![
        (
            prop::option::of(text()),
            prop::option::of(phone()),
            prop::option::of(email())
        )
            .prop_map(|(name, phone, email)| Command::SetClientInfo { name, phone, email }),
        (key(), text(), prop::option::weighted(0.2, any::<bool>())).prop_map(
            |(key, value, read_only)| Command::SetParameter {
                key,
                value,
                read_only
            }
        ),
        key().prop_map(|key| Command::RemoveParameter { key }),
        tag().prop_map(|tag| Command::AddTag { tag }),
        tag().prop_map(|tag| Command::RemoveTag { tag }),
        text().prop_map(|text| Command::AddNote { text }),
        (note_id(), text()).prop_map(|(note_id, text)| Command::EditNote { note_id, text }),
        note_id().prop_map(|note_id| Command::DeleteNote { note_id }),
        (
            prop_oneof![Just(MessageFrom::Client), Just(MessageFrom::Operator)],
            prop::option::weighted(0.9, text()),
            prop::option::weighted(0.1, text()),
        )
            .prop_map(|(from, text, template_id)| Command::PostMessage {
                from,
                text,
                template_id
            }),
    ]
    .boxed()
}

fn command() -> BoxedStrategy<Command> {
    prop_oneof![
        1 => open_session(),
        10 => collaborator_command(),
        20 => panel_command(),
        1 => Just(Command::CloseSession {}),
    ]
    .boxed()
}

/// An `open_session` that passes validation, apart from the odd bad parameter.
fn valid_open_session() -> BoxedStrategy<Command> {
    (
        prop_oneof![Just(""), Just("Ana"), Just("Zoë Ünal")],
        prop_oneof![Just(""), Just("+33 1 23")],
        prop_oneof![Just(""), Just("ana@ex.com")],
        prop::collection::btree_map(
            prop_oneof![Just("k1"), Just("k2"), Just("ключ")].prop_map(String::from),
            (clean_text(), any::<bool>()),
            0..3,
        ),
        prop_oneof![
            3 => Just(Owner::Operator {
                operator_id: "op1".into()
            }),
            1 => Just(Owner::Group { group: "g".into() }),
        ],
    )
        .prop_map(|(name, phone, email, params, owner)| Command::OpenSession {
            channel: "chat".into(),
            client: ClientInfoInput {
                name: name.into(),
                phone: phone.into(),
                email: email.into(),
            },
            parameters: params
                .into_iter()
                .map(|(k, (value, read_only))| (k, PresetParameter { value, read_only }))
                .collect(),
            owner,
        })
        .boxed()
}

/// Who sends what. Most sequences start with the platform opening the session, so the rest of
/// the sequence has something to work on.
fn steps() -> impl Strategy<Value = Vec<(usize, Command)>> {
    // The invitees act more often, so invitations get answered.
    let who = prop_oneof![
        2 => Just(0usize),
        3 => Just(1usize),
        3 => Just(2usize),
        1 => Just(3usize),
        1 => Just(4usize),
        1 => Just(5usize),
    ];
    (
        prop::option::weighted(0.9, valid_open_session()),
        prop::collection::vec((who, command()), 0..60),
    )
        .prop_map(|(open, mut rest)| {
            if let Some(cmd) = open {
                // Index 4 is the platform.
                rest.insert(0, (4, cmd));
            }
            rest
        })
}

// ---- the model run ---------------------------------------------------------------------------

/// One operator feed: its live state and its log.
struct Feed {
    state: StreamState,
    log: Vec<Envelope>,
}

fn fold(kind: StreamKind, log: &[Envelope]) -> StreamState {
    let mut state = domain::initial(kind);
    for env in log {
        domain::apply(&mut state, env);
    }
    state
}

fn session(state: &StreamState) -> &SessionState {
    match state {
        StreamState::Session(s) => s,
        other => panic!("not a session: {other:?}"),
    }
}

fn check_rejection(e: &Rejection) -> Result<(), TestCaseError> {
    prop_assert!(!e.message.is_empty());
    match e.code {
        ErrorCode::Invalid | ErrorCode::TooLarge => {
            let field = e.field.as_deref().unwrap_or("");
            prop_assert!(field.starts_with("command."), "{:?}", e);
        }
        ErrorCode::Forbidden | ErrorCode::NotFound | ErrorCode::Closed => {
            prop_assert_eq!(&e.field, &None, "{:?}", e);
        }
        other => prop_assert!(false, "unexpected code {} in {:?}", other, e),
    }
    Ok(())
}

/// What must hold of the session after every command.
fn check_invariants(s: &SessionState, l: &Limits) -> Result<(), TestCaseError> {
    prop_assert!(s.tags.len() <= l.tags_per_session);
    let lower: BTreeSet<String> = s.tags.iter().map(|t| t.tag.to_lowercase()).collect();
    prop_assert_eq!(lower.len(), s.tags.len(), "duplicate tags {:?}", s.tags);
    prop_assert!(s.notes.len() <= l.notes_per_session);
    let ids: BTreeSet<&str> = s.notes.iter().map(|n| n.note_id.as_str()).collect();
    prop_assert_eq!(ids.len(), s.notes.len());
    prop_assert!(s.parameters.len() <= l.parameters_per_session);
    prop_assert!(s.collaborators.len() <= l.collaborators_per_session);
    let collaborators: BTreeSet<&str> = s
        .collaborators
        .iter()
        .map(|c| c.operator_id.as_str())
        .collect();
    prop_assert_eq!(collaborators.len(), s.collaborators.len());
    if let Some(Owner::Operator { operator_id }) = &s.owner {
        prop_assert!(!collaborators.contains(operator_id.as_str()));
    }
    prop_assert_eq!(s.status == SessionStatus::New, s.owner.is_none());
    Ok(())
}

/// (d): every invitee's feed shows exactly this session's pending invitations.
fn check_feeds(
    s: &SessionState,
    feeds: &BTreeMap<StreamName, Feed>,
    session_id: &str,
) -> Result<(), TestCaseError> {
    let invited: BTreeMap<String, String> = s
        .collaborators
        .iter()
        .filter(|c| c.status == CollaboratorStatus::Invited)
        .map(|c| (c.operator_id.clone(), c.invited_by.clone()))
        .collect();
    let mut on_feeds = BTreeMap::new();
    for (name, feed) in feeds {
        prop_assert_eq!(name.kind(), StreamKind::Operator);
        prop_assert_eq!(&fold(StreamKind::Operator, &feed.log), &feed.state);
        let StreamState::Operator(f) = &feed.state else {
            return Err(TestCaseError::fail(format!("{name} is not a feed")));
        };
        for inv in &f.invitations {
            prop_assert_eq!(&inv.session_id, session_id);
            let fresh = on_feeds.insert(name.id().to_string(), inv.by.clone());
            prop_assert!(fresh.is_none(), "two invitations on {}", name);
        }
    }
    prop_assert_eq!(invited, on_feeds);
    Ok(())
}

fn run(steps: &[(usize, Command)]) -> Result<(), TestCaseError> {
    let people = principals();
    let limits = limits();
    let stream = StreamName::session("s1").expect("valid name");
    let mut live = domain::initial(StreamKind::Session);
    let mut log: Vec<Envelope> = Vec::new();
    // The state right after each event: after[n - 1] is the state at seq n.
    let mut after: Vec<StreamState> = Vec::new();
    let mut feeds: BTreeMap<StreamName, Feed> = BTreeMap::new();

    for (i, (who, cmd)) in steps.iter().enumerate() {
        let who = &people[*who];
        let cmd = &resolve(cmd, session(&live));
        let at = NOW + i as u64;
        let next_seq = log.len() as u64 + 1;
        let ctx = Ctx {
            principal: who,
            stream: &stream,
            now: at,
            next_seq,
            limits: &limits,
            world: &copanel::domain::EmptyWorld,
            fresh_id: "fresh",
        };
        let decided = domain::decide(&live, &ctx, cmd);
        // Deciding is pure: the same inputs give the same answer.
        prop_assert_eq!(&decided, &domain::decide(&live, &ctx, cmd));
        match decided {
            Err(e) => check_rejection(&e)?,
            Ok(d) => {
                if let Command::AddNote { .. } = cmd {
                    prop_assert_eq!(d.created, Some(format!("n{next_seq}")));
                } else {
                    prop_assert_eq!(d.created, None);
                }
                let command_id = Some(format!("c{i}"));
                for event in d.events {
                    let env = Envelope {
                        stream: stream.clone(),
                        seq: log.len() as u64 + 1,
                        at,
                        actor: who.actor(),
                        command_id: command_id.clone(),
                        event,
                    };
                    domain::apply(&mut live, &env);
                    log.push(env);
                    after.push(live.clone());
                }
                for (name, event) in d.others {
                    let feed = feeds.entry(name.clone()).or_insert_with(|| Feed {
                        state: domain::initial(StreamKind::Operator),
                        log: Vec::new(),
                    });
                    let env = Envelope {
                        stream: name,
                        seq: feed.log.len() as u64 + 1,
                        at,
                        actor: who.actor(),
                        command_id: command_id.clone(),
                        event,
                    };
                    domain::apply(&mut feed.state, &env);
                    feed.log.push(env);
                }
            }
        }
        check_invariants(session(&live), &limits)?;
        check_feeds(session(&live), &feeds, stream.id())?;
    }

    // (a) the live state is a replay of the log.
    prop_assert_eq!(&fold(StreamKind::Session, &log), &live);
    // (b) the state at every seq is the fold of events 1..=seq.
    for n in 1..=log.len() {
        prop_assert_eq!(
            &fold(StreamKind::Session, &log[..n]),
            &after[n - 1],
            "seq {}",
            n
        );
    }
    // Seqs are gapless, on every stream.
    for (i, env) in log.iter().enumerate() {
        prop_assert_eq!(env.seq, i as u64 + 1);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn live_state_is_a_replay_of_the_log(steps in steps()) {
        run(&steps)?;
    }
}

/// A fixed sequence through the same harness, so a regression shows up even with few cases
/// and the harness itself is known to see accepted events.
#[test]
fn the_harness_sees_a_busy_session() {
    let open = Command::OpenSession {
        channel: "chat".into(),
        client: ClientInfoInput::default(),
        parameters: BTreeMap::new(),
        owner: Owner::Operator {
            operator_id: "op1".into(),
        },
    };
    let steps = vec![
        (4, open),
        (
            0,
            Command::InviteCollaborator {
                operator_id: "op2".into(),
            },
        ),
        (
            0,
            Command::InviteCollaborator {
                operator_id: "op3".into(),
            },
        ),
        (1, Command::AcceptInvitation {}),
        (1, Command::AddNote { text: "hi".into() }),
        (1, Command::AddTag { tag: "vip".into() }),
        (0, Command::CloseSession {}),
        (
            3,
            Command::EditNote {
                note_id: "n5".into(),
                text: "ok".into(),
            },
        ),
    ];
    if let Err(e) = run(&steps) {
        panic!("{e}");
    }
}
