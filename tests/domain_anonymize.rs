//! Anonymisation in the domain, given / when / then: who may anonymise, when, what it appends,
//! what `redact_event` erases from each stored event, and that replaying the redacted log gives
//! the same state as the live fold (`redact_state`).

use copanel::domain::anonymize::{redact_event, redact_state, REDACTED};
use copanel::domain::{self, Ctx, Decision, Limits, Principal, Rejection, World};
use copanel_protocol::{
    Command, ContactState, ContactStatus, Envelope, ErrorCode, Event, MessageFrom, Owner,
    ParameterSource, PresetParameter, Role, SessionState, SessionStatus, StreamKind, StreamName,
    StreamState, TagSource,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

const NOW: u64 = 1_700_000_000_000;

fn who(id: &str, role: Role) -> Principal {
    Principal {
        id: id.into(),
        role,
        groups: Vec::new(),
    }
}
fn admin() -> Principal {
    who("adm", Role::Admin)
}
fn svc() -> Principal {
    who("platform", Role::Service)
}
fn op1() -> Principal {
    who("op1", Role::Operator)
}

fn stream() -> StreamName {
    StreamName::session("s1").unwrap()
}

fn env(seq: u64, by: &Principal, event: Event) -> Envelope {
    Envelope {
        stream: stream(),
        seq,
        at: NOW + seq,
        actor: by.actor(),
        command_id: Some(format!("c{seq}")),
        event,
    }
}

/// Envelopes for `events`, seqs 1.., all by the platform except where given.
fn log(events: &[(Principal, Event)]) -> Vec<Envelope> {
    events
        .iter()
        .enumerate()
        .map(|(i, (p, e))| env(i as u64 + 1, p, e.clone()))
        .collect()
}

fn fold(envs: &[Envelope]) -> SessionState {
    let mut state = domain::initial(StreamKind::Session);
    for e in envs {
        domain::apply(&mut state, e);
    }
    match state {
        StreamState::Session(s) => s,
        other => panic!("not a session state: {other:?}"),
    }
}

/// A world holding only the given contact states.
#[derive(Default)]
struct Contacts(BTreeMap<StreamName, StreamState>);

impl Contacts {
    fn with(mut self, id: &str, status: ContactStatus, sessions: &[&str]) -> Self {
        let c = ContactState {
            status,
            name: "Directory Name".into(),
            sessions: sessions.iter().map(|s| s.to_string()).collect(),
            ..ContactState::default()
        };
        self.0.insert(
            StreamName::parse(&format!("contact/{id}")).unwrap(),
            StreamState::Contact(c),
        );
        self
    }
}

impl World for Contacts {
    fn state(&self, stream: &StreamName) -> Option<&StreamState> {
        self.0.get(stream)
    }
    fn group_members(&self, _group: &str) -> Vec<String> {
        Vec::new()
    }
}

fn when(state: &SessionState, by: &Principal, world: &dyn World) -> Result<Decision, Rejection> {
    let stream = stream();
    let limits = Limits::default();
    let ctx = Ctx {
        principal: by,
        stream: &stream,
        now: NOW + 1000,
        next_seq: 100,
        limits: &limits,
        world,
        fresh_id: "fresh",
    };
    domain::decide(
        &StreamState::Session(state.clone()),
        &ctx,
        &Command::Anonymize {},
    )
}

fn opened() -> Event {
    let mut parameters = BTreeMap::new();
    parameters.insert(
        "crm_id".to_string(),
        PresetParameter {
            value: "C-17".into(),
            read_only: true,
        },
    );
    parameters.insert(
        "empty".to_string(),
        PresetParameter {
            value: String::new(),
            read_only: false,
        },
    );
    Event::SessionOpened {
        channel: "chat".into(),
        name: "Jana Nováková".into(),
        phone: "+420 777 123 456".into(),
        email: String::new(),
        parameters,
        owner: Owner::Operator {
            operator_id: "op1".into(),
        },
    }
}

/// A closed session with client data, parameters, messages, a note, a tag and a contact link.
fn rich_history() -> Vec<(Principal, Event)> {
    vec![
        (svc(), opened()),
        (
            op1(),
            Event::ClientInfoChanged {
                name: None,
                phone: None,
                email: Some("jana@example.com".into()),
            },
        ),
        (
            svc(),
            Event::MessagePosted {
                from: MessageFrom::Client,
                text: "my card number is 4111".into(),
                template_id: None,
            },
        ),
        (
            op1(),
            Event::MessagePosted {
                from: MessageFrom::Operator,
                text: "thanks".into(),
                template_id: None,
            },
        ),
        (
            op1(),
            Event::ParameterSet {
                key: "order".into(),
                value: "ORD-991".into(),
                source: ParameterSource::Operator,
                read_only: false,
            },
        ),
        (
            op1(),
            Event::TagAdded {
                tag: "vip".into(),
                source: TagSource::Manual,
                rule_id: None,
            },
        ),
        (
            op1(),
            Event::NoteAdded {
                note_id: "n7".into(),
                text: "call back".into(),
            },
        ),
        (
            op1(),
            Event::ContactLinked {
                contact_id: "c1".into(),
            },
        ),
        (op1(), Event::SessionClosed),
    ]
}

fn rich_state() -> SessionState {
    fold(&log(&rich_history()))
}

// ---- who and when ----------------------------------------------------------------------------

#[test]
fn admin_anonymises_a_closed_unlinked_session() {
    let mut h = rich_history();
    h.retain(|(_, e)| !matches!(e, Event::ContactLinked { .. }));
    let state = fold(&log(&h));
    let d = when(&state, &admin(), &Contacts::default()).expect("accepted");
    assert_eq!(d.events, vec![Event::SessionAnonymized]);
    assert!(
        d.others.is_empty(),
        "no contact, no side event: {:?}",
        d.others
    );
    assert_eq!(d.created, None);
}

#[test]
fn anonymising_a_linked_session_unlinks_it_from_the_contact() {
    let world = Contacts::default().with("c1", ContactStatus::Active, &["s0", "s1"]);
    let d = when(&rich_state(), &admin(), &world).expect("accepted");
    assert_eq!(d.events, vec![Event::SessionAnonymized]);
    assert_eq!(
        d.others,
        vec![(
            StreamName::parse("contact/c1").unwrap(),
            Event::SessionUnlinked {
                session_id: "s1".into()
            }
        )]
    );
}

#[test]
fn a_contact_that_no_longer_lists_the_session_gets_no_event() {
    for world in [
        Contacts::default().with("c1", ContactStatus::Active, &["s0"]),
        Contacts::default().with("c1", ContactStatus::Removed, &[]),
        Contacts::default(),
    ] {
        let d = when(&rich_state(), &admin(), &world).expect("accepted");
        assert_eq!(d.events, vec![Event::SessionAnonymized]);
        assert!(d.others.is_empty(), "{:?}", d.others);
    }
}

#[test]
fn only_admins_may_anonymise() {
    for p in [
        op1(),
        who("sup", Role::Supervisor),
        svc(),
        who("op2", Role::Operator),
    ] {
        let r = when(&rich_state(), &p, &Contacts::default()).expect_err("refused");
        assert_eq!(r.code, ErrorCode::Forbidden, "{p:?}");
        assert_eq!(r.message, "only admins may anonymise a session");
        assert_eq!(r.field, None);
    }
}

#[test]
fn an_open_session_must_be_closed_first() {
    let mut h = rich_history();
    h.pop(); // not closed
    let r = when(&fold(&log(&h)), &admin(), &Contacts::default()).expect_err("refused");
    assert_eq!(r.code, ErrorCode::Invalid);
    assert_eq!(r.field.as_deref(), Some("command.kind"));
    assert_eq!(
        r.message,
        "only a closed session can be anonymised; close it first"
    );
}

#[test]
fn permission_is_checked_before_the_status() {
    let mut h = rich_history();
    h.pop();
    let r = when(&fold(&log(&h)), &op1(), &Contacts::default()).expect_err("refused");
    assert_eq!(r.code, ErrorCode::Forbidden);
}

#[test]
fn a_session_never_opened_is_not_found() {
    let r = when(&SessionState::default(), &admin(), &Contacts::default()).expect_err("refused");
    assert_eq!(r.code, ErrorCode::NotFound);
}

#[test]
fn anonymising_twice_is_an_accepted_no_op() {
    let mut envs = log(&rich_history());
    envs.push(env(10, &admin(), Event::SessionAnonymized));
    let state = fold(&envs);
    assert!(state.anonymized);
    let d = when(&state, &admin(), &Contacts::default()).expect("accepted");
    assert_eq!(d, Decision::default());
}

// ---- the fold --------------------------------------------------------------------------------

#[test]
fn the_anonymised_state_keeps_no_personal_data() {
    let before = rich_state();
    let mut envs = log(&rich_history());
    envs.push(env(10, &admin(), Event::SessionAnonymized));
    let s = fold(&envs);
    assert!(s.anonymized);
    assert_eq!(s.status, SessionStatus::Closed);
    assert_eq!(s.client.name, REDACTED);
    assert_eq!(s.client.phone, REDACTED);
    assert_eq!(s.client.email, REDACTED);
    assert_eq!(s.contact_id, None);
    for (key, p) in &s.parameters {
        assert_eq!(p.value, REDACTED, "parameter {key}");
    }
    // The rest of the panel is unchanged.
    assert_eq!(s.messages, before.messages);
    assert_eq!(s.tags, before.tags);
    assert_eq!(s.notes, before.notes);
    assert_eq!(s.owner, before.owner);
    assert_eq!(s.channel, before.channel);
    assert_eq!(
        s.parameters.keys().collect::<Vec<_>>(),
        before.parameters.keys().collect::<Vec<_>>()
    );
    for (key, p) in &s.parameters {
        let b = &before.parameters[key];
        assert_eq!(
            (p.source, p.read_only, &p.changed_by, p.changed_at),
            (b.source, b.read_only, &b.changed_by, b.changed_at),
            "parameter {key} keeps everything but its value"
        );
    }
}

#[test]
fn an_unknown_client_field_stays_empty() {
    let mut s = rich_state();
    s.client.email = String::new();
    redact_state(&mut s);
    assert_eq!(s.client.email, "");
    assert_eq!(s.client.name, REDACTED);
}

// ---- redact_event ----------------------------------------------------------------------------

#[test]
fn redact_event_erases_the_personal_fields_of_each_kind() {
    let envs = log(&rich_history());
    let mut red = envs.clone();
    red.iter_mut().for_each(redact_event);
    // Seqs, kinds, actors, times and command ids are kept on every event.
    for (a, b) in envs.iter().zip(&red) {
        assert_eq!(
            (a.seq, a.event.kind(), &a.actor, a.at, &a.command_id),
            (b.seq, b.event.kind(), &b.actor, b.at, &b.command_id)
        );
    }
    match &red[0].event {
        Event::SessionOpened {
            channel,
            name,
            phone,
            email,
            parameters,
            owner,
        } => {
            assert_eq!(channel, "chat");
            assert_eq!(name, REDACTED);
            assert_eq!(phone, REDACTED);
            assert_eq!(email, "", "an empty value says 'unknown' and stays");
            assert_eq!(parameters["crm_id"].value, REDACTED);
            assert!(parameters["crm_id"].read_only);
            assert_eq!(
                parameters["empty"].value, REDACTED,
                "parameter values always"
            );
            assert_eq!(
                owner,
                &Owner::Operator {
                    operator_id: "op1".into()
                }
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        red[1].event,
        Event::ClientInfoChanged {
            name: None,
            phone: None,
            email: Some(REDACTED.into())
        }
    );
    assert_eq!(
        red[2].event,
        Event::MessagePosted {
            from: MessageFrom::Client,
            text: REDACTED.into(),
            template_id: None
        }
    );
    assert_eq!(
        red[4].event,
        Event::ParameterSet {
            key: "order".into(),
            value: REDACTED.into(),
            source: ParameterSource::Operator,
            read_only: false
        }
    );
    // Tags and notes are not personal data of the client: untouched.
    assert_eq!(red[5], envs[5]);
    assert_eq!(red[6], envs[6]);
    assert_eq!(
        red[7].event,
        Event::ContactLinked {
            contact_id: REDACTED.into()
        }
    );
    assert_eq!(red[8], envs[8]);
}

#[test]
fn redact_event_covers_contact_unlinked_and_is_idempotent() {
    let mut e = env(
        3,
        &op1(),
        Event::ContactUnlinked {
            contact_id: "c9".into(),
            removed: true,
        },
    );
    redact_event(&mut e);
    assert_eq!(
        e.event,
        Event::ContactUnlinked {
            contact_id: REDACTED.into(),
            removed: true
        }
    );
    let mut all = log(&rich_history());
    all.iter_mut().for_each(redact_event);
    let mut twice = all.clone();
    twice.iter_mut().for_each(redact_event);
    assert_eq!(all, twice);
}

#[test]
fn redact_event_leaves_other_streams_events_alone() {
    let created = Envelope {
        stream: StreamName::parse("contact/c1").unwrap(),
        ..env(
            1,
            &op1(),
            Event::ContactCreated {
                session_id: "s1".into(),
                name: "Jana".into(),
                phone: "1".into(),
                email: "j@x.cz".into(),
            },
        )
    };
    let mut e = created.clone();
    redact_event(&mut e);
    assert_eq!(e, created);
}

// ---- replaying the redacted log equals the live fold ------------------------------------------

#[test]
fn replaying_the_redacted_log_gives_the_live_state() {
    let envs = log(&rich_history());
    let anon = env(envs.len() as u64 + 1, &admin(), Event::SessionAnonymized);
    let mut live: Vec<Envelope> = envs.clone();
    live.push(anon.clone());
    let mut stored: Vec<Envelope> = envs;
    stored.iter_mut().for_each(redact_event);
    stored.push(anon);
    assert_eq!(fold(&stored), fold(&live));
}

/// Random session histories: client info with empty and non-empty values, parameters set and
/// removed, messages, links and unlinks, in any order.
fn arb_event() -> impl Strategy<Value = Event> {
    let text = prop_oneof![Just(String::new()), "[a-z]{1,6}"];
    let opt = proptest::option::of(text.clone());
    prop_oneof![
        (opt.clone(), opt.clone(), opt)
            .prop_map(|(name, phone, email)| { Event::ClientInfoChanged { name, phone, email } }),
        ("[a-c]", text.clone(), any::<bool>()).prop_map(|(key, value, ro)| {
            Event::ParameterSet {
                key,
                value,
                source: if ro {
                    ParameterSource::Preset
                } else {
                    ParameterSource::Operator
                },
                read_only: ro,
            }
        }),
        "[a-c]".prop_map(|key| Event::ParameterRemoved { key }),
        text.clone().prop_map(|text| Event::MessagePosted {
            from: MessageFrom::Client,
            text,
            template_id: None
        }),
        "c[0-9]".prop_map(|contact_id| Event::ContactLinked { contact_id }),
        ("c[0-9]", any::<bool>()).prop_map(|(contact_id, removed)| Event::ContactUnlinked {
            contact_id,
            removed
        }),
        text.prop_map(|text| Event::NoteAdded {
            note_id: "n1".into(),
            text
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// For every history and every point of it: the live fold with `session_anonymized` there
    /// equals the fold of the redacted events with `session_anonymized` there.
    #[test]
    fn redaction_commutes_with_the_fold(
        events in proptest::collection::vec(arb_event(), 0..24),
        cut in 0usize..24,
    ) {
        let mut history = vec![(svc(), opened())];
        history.extend(events.into_iter().map(|e| (op1(), e)));
        history.push((op1(), Event::SessionClosed));
        let envs = log(&history);
        let cut = cut.min(envs.len());
        let anon = env(cut as u64 + 1, &admin(), Event::SessionAnonymized);
        let mut live: Vec<Envelope> = envs[..cut].to_vec();
        live.push(anon.clone());
        let mut stored: Vec<Envelope> = envs[..cut].to_vec();
        stored.iter_mut().for_each(redact_event);
        stored.push(anon);
        prop_assert_eq!(fold(&stored), fold(&live));
    }
}

#[test]
fn an_anonymised_session_no_longer_changes() {
    use copanel::domain::{self, Ctx, EmptyWorld, Limits, Principal};
    use copanel_protocol::{Command, Role, SessionState, SessionStatus, StreamName, StreamState};
    let state = SessionState {
        status: SessionStatus::Closed,
        anonymized: true,
        ..SessionState::default()
    };
    let admin = Principal {
        id: "adm".into(),
        role: Role::Admin,
        groups: vec![],
    };
    let stream = StreamName::parse("session/s1").unwrap();
    let limits = Limits::default();
    let ctx = Ctx {
        principal: &admin,
        stream: &stream,
        now: 1,
        next_seq: 9,
        limits: &limits,
        world: &EmptyWorld,
        fresh_id: "f",
    };
    let st = StreamState::Session(state);
    for cmd in [
        Command::SetParameter {
            key: "k".into(),
            value: "v".into(),
            read_only: None,
        },
        Command::AddTag { tag: "t".into() },
        Command::AddNote { text: "n".into() },
    ] {
        let e = domain::decide(&st, &ctx, &cmd).unwrap_err();
        assert_eq!(e.code.as_str(), "closed", "{cmd:?}");
    }
    // Then: a second anonymize is still an accepted no-op.
    let d = domain::decide(&st, &ctx, &Command::Anonymize {}).unwrap();
    assert!(d.events.is_empty());
}
