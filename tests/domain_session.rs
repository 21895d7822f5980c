//! The session domain, given / when / then: given these events, when this command, then these
//! events (or this rejection).

use copanel::domain::{self, Ctx, Decision, Limits, Principal, Rejection};
use copanel_protocol::event::InvitationOutcome;
use copanel_protocol::{
    Actor, CollaboratorStatus, Command, Envelope, ErrorCode, Event, MessageFrom, Owner,
    ParameterSource, PresetParameter, Role, SessionState, SessionStatus, StreamKind, StreamName,
    StreamState, TagSource,
};
use std::collections::BTreeMap;

#[path = "common/given.rs"]
mod given;
use given::*;

const NOW: u64 = 1_700_000_000_000;

// ---- principals ------------------------------------------------------------------------------

/// The owner of the default session.
fn op1() -> Principal {
    op("op1")
}
fn op2() -> Principal {
    op("op2")
}
fn op3() -> Principal {
    op("op3")
}

// ---- given / when ----------------------------------------------------------------------------

fn stream() -> StreamName {
    StreamName::session("s1").unwrap()
}

/// A session after some events, and the head seq they reached.
struct Given {
    state: SessionState,
    head: u64,
}

/// Folds the events through the public dispatch, as the server would on replay. Event `i` is
/// appended at `NOW + i` so times can be told apart.
fn given(events: &[(Principal, Event)]) -> Given {
    let mut state = domain::initial(StreamKind::Session);
    for (i, (who, event)) in events.iter().enumerate() {
        let seq = i as u64 + 1;
        let env = Envelope {
            stream: stream(),
            seq,
            at: NOW + seq,
            actor: who.actor(),
            command_id: None,
            event: event.clone(),
        };
        domain::apply(&mut state, &env);
    }
    match state {
        StreamState::Session(state) => Given {
            state,
            head: events.len() as u64,
        },
        other => panic!("not a session state: {other:?}"),
    }
}

fn when(g: &Given, who: &Principal, cmd: Command) -> Result<Decision, Rejection> {
    when_limited(g, who, cmd, &Limits::default())
}

fn when_limited(
    g: &Given,
    who: &Principal,
    cmd: Command,
    limits: &Limits,
) -> Result<Decision, Rejection> {
    let stream = stream();
    let ctx = Ctx {
        principal: who,
        stream: &stream,
        now: NOW + 1000,
        next_seq: g.head + 1,
        limits,
        world: &copanel::domain::EmptyWorld,
        fresh_id: "fresh",
    };
    domain::decide(&StreamState::Session(g.state.clone()), &ctx, &cmd)
}

/// Applies an accepted decision's own events to the given state, as the next events.
fn then_state(g: &Given, who: &Principal, d: &Decision) -> SessionState {
    let mut state = StreamState::Session(g.state.clone());
    for (i, event) in d.events.iter().enumerate() {
        let seq = g.head + 1 + i as u64;
        let env = Envelope {
            stream: stream(),
            seq,
            at: NOW + seq,
            actor: who.actor(),
            command_id: Some("c".into()),
            event: event.clone(),
        };
        domain::apply(&mut state, &env);
    }
    match state {
        StreamState::Session(s) => s,
        other => panic!("not a session state: {other:?}"),
    }
}

// ---- then ------------------------------------------------------------------------------------

#[track_caller]
fn events(r: Result<Decision, Rejection>) -> Vec<Event> {
    let d = r.unwrap_or_else(|e| panic!("refused: {e:?}"));
    assert!(d.others.is_empty(), "unexpected side events {:?}", d.others);
    d.events
}

#[track_caller]
fn closed(r: Result<Decision, Rejection>) {
    let e = rejected(r, ErrorCode::Closed);
    assert_eq!(
        e.message,
        "session is closed; only parameters, tags and notes may change"
    );
}

// ---- events and commands used as building blocks --------------------------------------------

fn opened_by(owner: Owner) -> (Principal, Event) {
    (
        svc(),
        Event::SessionOpened {
            channel: "chat".into(),
            name: "Ana".into(),
            phone: "+33 1 23".into(),
            email: "ana@example.com".into(),
            parameters: BTreeMap::new(),
            owner,
        },
    )
}
/// Opened by the platform, owned by op1.
fn opened() -> (Principal, Event) {
    opened_by(Owner::Operator {
        operator_id: "op1".into(),
    })
}
fn invited(by: Principal, id: &str) -> (Principal, Event) {
    (
        by,
        Event::CollaboratorInvited {
            operator_id: id.into(),
        },
    )
}
fn accepted_by(id: &str) -> (Principal, Event) {
    (
        op(id),
        Event::InvitationAccepted {
            operator_id: id.into(),
        },
    )
}
fn closed_by(who: Principal) -> (Principal, Event) {
    (who, Event::SessionClosed)
}
fn note_added(author: Principal, id: &str, text: &str) -> (Principal, Event) {
    (
        author,
        Event::NoteAdded {
            note_id: id.into(),
            text: text.into(),
        },
    )
}
fn param_set(who: Principal, key: &str, value: &str, read_only: bool) -> (Principal, Event) {
    let source = if who.role == Role::Service {
        ParameterSource::Preset
    } else {
        ParameterSource::Operator
    };
    (
        who,
        Event::ParameterSet {
            key: key.into(),
            value: value.into(),
            source,
            read_only,
        },
    )
}
fn tag_added(who: Principal, tag: &str) -> (Principal, Event) {
    (
        who,
        Event::TagAdded {
            tag: tag.into(),
            source: TagSource::Manual,
            rule_id: None,
        },
    )
}

fn open_cmd() -> Command {
    Command::OpenSession {
        channel: "chat".into(),
        client: Default::default(),
        parameters: BTreeMap::new(),
        owner: Owner::Operator {
            operator_id: "op1".into(),
        },
    }
}
fn client_info(name: Option<&str>, phone: Option<&str>, email: Option<&str>) -> Command {
    Command::SetClientInfo {
        name: name.map(Into::into),
        phone: phone.map(Into::into),
        email: email.map(Into::into),
    }
}
fn invite(id: &str) -> Command {
    Command::InviteCollaborator {
        operator_id: id.into(),
    }
}
fn set_param(key: &str, value: &str, read_only: Option<bool>) -> Command {
    Command::SetParameter {
        key: key.into(),
        value: value.into(),
        read_only,
    }
}
fn remove_param(key: &str) -> Command {
    Command::RemoveParameter { key: key.into() }
}
fn add_tag(tag: &str) -> Command {
    Command::AddTag { tag: tag.into() }
}
fn remove_tag(tag: &str) -> Command {
    Command::RemoveTag { tag: tag.into() }
}
fn add_note(text: &str) -> Command {
    Command::AddNote { text: text.into() }
}
fn edit_note(id: &str, text: &str) -> Command {
    Command::EditNote {
        note_id: id.into(),
        text: text.into(),
    }
}
fn delete_note(id: &str) -> Command {
    Command::DeleteNote { note_id: id.into() }
}
fn say(from: MessageFrom, text: &str) -> Command {
    Command::PostMessage {
        from,
        text: Some(text.into()),
        template_id: None,
    }
}
fn feed(id: &str) -> StreamName {
    StreamName::operator(id).unwrap()
}

// ---- status: before open, after close --------------------------------------------------------

/// One command of every kind but `open_session`.
fn every_other_command() -> Vec<Command> {
    vec![
        client_info(Some("Bo"), None, None),
        invite("op2"),
        Command::AcceptInvitation {},
        Command::DeclineInvitation {},
        Command::CancelInvitation {
            operator_id: "op2".into(),
        },
        Command::Leave {},
        Command::RemoveCollaborator {
            operator_id: "op2".into(),
        },
        set_param("k", "v", None),
        remove_param("k"),
        add_tag("vip"),
        remove_tag("vip"),
        add_note("hello"),
        edit_note("n1", "x"),
        delete_note("n1"),
        say(MessageFrom::Client, "hi"),
        Command::CloseSession {},
    ]
}

#[test]
fn every_command_but_open_is_not_found_before_open() {
    let g = given(&[]);
    for cmd in every_other_command() {
        for who in [svc(), admin(), op1()] {
            let e = not_found(when(&g, &who, cmd.clone()));
            assert_eq!(e.message, "session/s1 is not open", "{cmd:?}");
        }
    }
}

#[test]
fn after_close_only_parameters_tags_and_notes_change() {
    let g = given(&[
        opened(),
        invited(op1(), "op2"),
        note_added(op1(), "n3", "first"),
        param_set(op1(), "k", "v", false),
        tag_added(op1(), "vip"),
        closed_by(op1()),
    ]);
    let allowed = |c: &Command| {
        matches!(
            c,
            Command::SetParameter { .. }
                | Command::RemoveParameter { .. }
                | Command::AddTag { .. }
                | Command::RemoveTag { .. }
                | Command::AddNote { .. }
                | Command::EditNote { .. }
                | Command::DeleteNote { .. }
        )
    };
    for cmd in every_other_command() {
        if allowed(&cmd) {
            continue;
        }
        for who in [svc(), op1(), op2()] {
            closed(when(&g, &who, cmd.clone()));
        }
    }
    // The owner still edits what survives a close.
    assert_eq!(events(when(&g, &op1(), set_param("k", "w", None))).len(), 1);
    assert_eq!(events(when(&g, &op1(), remove_param("k"))).len(), 1);
    assert_eq!(events(when(&g, &op1(), add_tag("late"))).len(), 1);
    assert_eq!(events(when(&g, &op1(), remove_tag("vip"))).len(), 1);
    assert_eq!(events(when(&g, &op1(), add_note("after"))).len(), 1);
    assert_eq!(events(when(&g, &op1(), edit_note("n3", "edited"))).len(), 1);
    assert_eq!(events(when(&g, &op1(), delete_note("n3"))).len(), 1);
    // Closing does not open the panel to outsiders.
    forbidden(when(&g, &op3(), add_note("sneaky")));
}

// ---- open_session ----------------------------------------------------------------------------

#[test]
fn the_platform_opens_a_session_with_presets() {
    let g = given(&[]);
    let mut parameters = BTreeMap::new();
    parameters.insert(
        "crm_id".to_string(),
        PresetParameter {
            value: "42".into(),
            read_only: true,
        },
    );
    parameters.insert(
        "lang".to_string(),
        PresetParameter {
            value: "fr".into(),
            read_only: false,
        },
    );
    let cmd = Command::OpenSession {
        channel: "video".into(),
        client: copanel_protocol::command::ClientInfoInput {
            name: "Zoë Ünal".into(),
            phone: "+49 (30) 123-45".into(),
            email: "zoe@example.de".into(),
        },
        parameters: parameters.clone(),
        owner: Owner::Group {
            group: "billing".into(),
        },
    };
    let d = accepted(when(&g, &svc(), cmd));
    assert_eq!(
        d.events,
        vec![Event::SessionOpened {
            channel: "video".into(),
            name: "Zoë Ünal".into(),
            phone: "+49 (30) 123-45".into(),
            email: "zoe@example.de".into(),
            parameters,
            owner: Owner::Group {
                group: "billing".into()
            },
        }]
    );
    assert!(d.others.is_empty());
    assert_eq!(d.created, None);

    let s = then_state(&g, &svc(), &d);
    assert_eq!(s.status, SessionStatus::Open);
    assert_eq!(s.channel, "video");
    assert_eq!(s.client.name, "Zoë Ünal");
    assert_eq!(s.client.phone, "+49 (30) 123-45");
    assert_eq!(s.client.email, "zoe@example.de");
    let crm = &s.parameters["crm_id"];
    assert_eq!(crm.value, "42");
    assert_eq!(crm.source, ParameterSource::Preset);
    assert!(crm.read_only);
    assert_eq!(crm.changed_by, "platform");
    assert_eq!(crm.changed_at, NOW + 1);
    assert!(!s.parameters["lang"].read_only);
}

#[test]
fn only_the_platform_and_admins_open_sessions() {
    let g = given(&[]);
    assert_eq!(events(when(&g, &admin(), open_cmd())).len(), 1);
    for who in [op1(), sup()] {
        forbidden(when(&g, &who, open_cmd()));
    }
}

#[test]
fn a_session_opens_once() {
    let e = invalid(when(&given(&[opened()]), &svc(), open_cmd()), "kind");
    assert_eq!(e.message, "session/s1 is already open");
    invalid(
        when(&given(&[opened(), closed_by(op1())]), &svc(), open_cmd()),
        "kind",
    );
    // Permission comes before status.
    forbidden(when(&given(&[opened()]), &op1(), open_cmd()));
}

#[test]
fn open_session_validates_its_fields() {
    let g = given(&[]);
    let with = |f: &dyn Fn(&mut Command)| {
        let mut cmd = open_cmd();
        f(&mut cmd);
        when_limited(
            &g,
            &svc(),
            cmd,
            &Limits {
                id_chars: 8,
                parameters_per_session: 1,
                client_field_chars: 10,
                ..Limits::default()
            },
        )
    };
    fn fields(
        cmd: &mut Command,
    ) -> (
        &mut String,
        &mut copanel_protocol::command::ClientInfoInput,
        &mut BTreeMap<String, PresetParameter>,
        &mut Owner,
    ) {
        match cmd {
            Command::OpenSession {
                channel,
                client,
                parameters,
                owner,
            } => (channel, client, parameters, owner),
            _ => unreachable!(),
        }
    }
    let preset = |v: &str| PresetParameter {
        value: v.into(),
        read_only: false,
    };
    invalid(with(&|c| *fields(c).0 = String::new()), "channel");
    invalid(with(&|c| *fields(c).0 = "a\u{7}b".into()), "channel");
    let e = too_large(with(&|c| *fields(c).0 = "channel-9".into()), "channel");
    assert_eq!(e.message, "channel is 9 characters; the limit is 8");
    too_large(with(&|c| fields(c).1.name = "x".repeat(11)), "client.name");
    invalid(with(&|c| fields(c).1.email = "nope".into()), "client.email");
    invalid(with(&|c| fields(c).1.phone = "12".into()), "client.phone");
    let e = too_large(
        with(&|c| {
            let p = fields(c).2;
            p.insert("a".into(), preset("1"));
            p.insert("b".into(), preset("2"));
        }),
        "parameters",
    );
    assert!(e.message.contains("at most 1"), "{}", e.message);
    invalid(
        with(&|c| {
            fields(c).2.insert("  ".into(), preset("1"));
        }),
        "parameters",
    );
    invalid(
        with(&|c| {
            fields(c).2.insert("k".into(), preset("a\u{0}"));
        }),
        "parameters.k.value",
    );
    invalid(
        with(&|c| {
            *fields(c).3 = Owner::Operator {
                operator_id: "a b".into(),
            }
        }),
        "owner",
    );
    too_large(
        with(&|c| {
            *fields(c).3 = Owner::Operator {
                operator_id: "op-123456".into(),
            }
        }),
        "owner",
    );
    invalid(
        with(&|c| {
            *fields(c).3 = Owner::Group {
                group: String::new(),
            }
        }),
        "owner",
    );
    // All fields at their limits are fine.
    assert_eq!(
        events(with(&|c| {
            let (channel, client, params, owner) = fields(c);
            *channel = "chan-678".into();
            client.name = "é".repeat(10);
            params.insert("k".into(), preset("v"));
            *owner = Owner::Group {
                group: "sales-78".into(),
            };
        }))
        .len(),
        1
    );
}

// ---- set_client_info -------------------------------------------------------------------------

#[test]
fn the_owner_changes_client_info_and_only_changes_are_recorded() {
    let g = given(&[opened()]);
    let d = accepted(when(
        &g,
        &op1(),
        client_info(Some("Ana"), Some("+33 1 23"), Some("ana.b@example.org")),
    ));
    assert_eq!(
        d.events,
        vec![Event::ClientInfoChanged {
            name: None,
            phone: None,
            email: Some("ana.b@example.org".into()),
        }]
    );
    let s = then_state(&g, &op1(), &d);
    assert_eq!(s.client.email, "ana.b@example.org");
    assert_eq!(s.client.name, "Ana");

    // Same values: accepted, nothing appended.
    no_op(when(&g, &op1(), client_info(Some("Ana"), None, None)));

    // "" clears.
    assert_eq!(
        events(when(&g, &op1(), client_info(None, Some(""), None))),
        vec![Event::ClientInfoChanged {
            name: None,
            phone: Some(String::new()),
            email: None,
        }]
    );
}

#[test]
fn set_client_info_needs_a_field() {
    let e = invalid(
        when(&given(&[opened()]), &op1(), client_info(None, None, None)),
        "name",
    );
    assert_eq!(
        e.message,
        "set_client_info needs at least one of name, phone, email"
    );
}

#[test]
fn client_fields_have_a_length_limit_in_characters() {
    let g = given(&[opened()]);
    let limits = Limits {
        client_field_chars: 5,
        ..Limits::default()
    };
    // Five two-byte characters fit; six do not.
    assert_eq!(
        events(when_limited(
            &g,
            &op1(),
            client_info(Some("ééééé"), None, None),
            &limits
        ))
        .len(),
        1
    );
    let e = too_large(
        when_limited(&g, &op1(), client_info(Some("éééééé"), None, None), &limits),
        "name",
    );
    assert_eq!(e.message, "name is 6 characters; the limit is 5");
    too_large(
        when_limited(
            &g,
            &op1(),
            client_info(None, Some("1234567"), None),
            &limits,
        ),
        "phone",
    );
    too_large(
        when_limited(
            &g,
            &op1(),
            client_info(None, None, Some("a@b.cde")),
            &limits,
        ),
        "email",
    );
    invalid(
        when(&g, &op1(), client_info(Some("Ana\nBob"), None, None)),
        "name",
    );
}

#[test]
fn email_shape() {
    let g = given(&[opened()]);
    for ok in ["a@b.co", "first.last+tag@mail.example.org", "ü@exämple.de"] {
        assert_eq!(
            events(when(&g, &op1(), client_info(None, None, Some(ok)))),
            vec![Event::ClientInfoChanged {
                name: None,
                phone: None,
                email: Some(ok.into()),
            }],
            "{ok}"
        );
    }
    for bad in [
        "ab", "a@@b.co", "a@b@c.co", "@b.co", "a@b", "a@.bco", "a@bco.", "a@", "a b@c.co",
        "a@b.co ",
    ] {
        invalid(
            when(&g, &op1(), client_info(None, None, Some(bad))),
            "email",
        );
    }
}

#[test]
fn phone_shape() {
    let g = given(&[opened()]);
    for ok in ["+33 1 23 45 67 89", "(030) 123-45.67/8", "123", " 555"] {
        assert_eq!(
            events(when(&g, &op1(), client_info(None, Some(ok), None))),
            vec![Event::ClientInfoChanged {
                name: None,
                phone: Some(ok.into()),
                email: None,
            }],
            "{ok}"
        );
    }
    for bad in ["12", "+", "1+23", "++123", "123 ext 4", "١٢٣", "12\t3"] {
        invalid(
            when(&g, &op1(), client_info(None, Some(bad), None)),
            "phone",
        );
    }
}

#[test]
fn who_may_edit_client_info() {
    let g = given(&[
        opened(),
        invited(op1(), "op2"),
        invited(op1(), "op3"),
        accepted_by("op3"),
    ]);
    let cmd = || client_info(Some("Bo"), None, None);
    for who in [op1(), op3(), sup(), admin(), svc()] {
        assert_eq!(events(when(&g, &who, cmd())).len(), 1, "{who:?}");
    }
    // Invited but not joined: reads, does not write.
    let e = forbidden(when(&g, &op2(), cmd()));
    assert!(e.message.contains("not accepted"), "{}", e.message);
    forbidden(when(&g, &op("op4"), cmd()));

    // A member of the owning group reads but does not edit before claiming.
    let grouped = given(&[opened_by(Owner::Group {
        group: "sales".into(),
    })]);
    forbidden(when(
        &grouped,
        &member_of("op5", Role::Operator, &["sales"]),
        cmd(),
    ));
}

// ---- collaborators ---------------------------------------------------------------------------

#[test]
fn the_owner_invites_and_the_invitee_hears_of_it_on_its_feed() {
    let g = given(&[opened()]);
    let d = accepted(when(&g, &op1(), invite("op2")));
    assert_eq!(
        d.events,
        vec![Event::CollaboratorInvited {
            operator_id: "op2".into()
        }]
    );
    assert_eq!(
        d.others,
        vec![(
            feed("op2"),
            Event::InvitationReceived {
                session_id: "s1".into(),
                by: "op1".into(),
            }
        )]
    );
    let s = then_state(&g, &op1(), &d);
    assert_eq!(s.collaborators.len(), 1);
    assert_eq!(s.collaborators[0].operator_id, "op2");
    assert_eq!(s.collaborators[0].status, CollaboratorStatus::Invited);
    assert_eq!(s.collaborators[0].invited_by, "op1");
}

#[test]
fn invitations_are_checked() {
    let g = given(&[
        opened(),
        invited(op1(), "op2"),
        invited(op1(), "op3"),
        accepted_by("op3"),
    ]);
    invalid(when(&g, &op1(), invite("a b")), "operator_id");
    invalid(when(&g, &op1(), invite("")), "operator_id");
    too_large(when(&g, &op1(), invite(&"x".repeat(129))), "operator_id");
    let e = invalid(when(&g, &op1(), invite("op1")), "operator_id");
    assert_eq!(e.message, "operator \"op1\" owns this session");
    let e = invalid(when(&g, &op1(), invite("op2")), "operator_id");
    assert!(e.message.contains("already invited"), "{}", e.message);
    let e = invalid(when(&g, &op1(), invite("op3")), "operator_id");
    assert!(
        e.message.contains("already a collaborator"),
        "{}",
        e.message
    );
    let limits = Limits {
        collaborators_per_session: 2,
        ..Limits::default()
    };
    let e = too_large(
        when_limited(&g, &op1(), invite("op4"), &limits),
        "operator_id",
    );
    assert!(e.message.contains("at most 2"), "{}", e.message);
    // A joined collaborator may invite; an invited one may not.
    assert_eq!(accepted(when(&g, &op3(), invite("op4"))).events.len(), 1);
    forbidden(when(&g, &op2(), invite("op4")));
    forbidden(when(&g, &op("op9"), invite("op4")));
}

#[test]
fn the_invitee_accepts_and_then_edits() {
    let g = given(&[opened(), invited(op1(), "op2")]);
    let d = accepted(when(&g, &op2(), Command::AcceptInvitation {}));
    assert_eq!(
        d.events,
        vec![Event::InvitationAccepted {
            operator_id: "op2".into()
        }]
    );
    assert_eq!(
        d.others,
        vec![(
            feed("op2"),
            Event::InvitationEnded {
                session_id: "s1".into(),
                outcome: InvitationOutcome::Accepted,
            }
        )]
    );
    let s = then_state(&g, &op2(), &d);
    assert_eq!(s.collaborators[0].status, CollaboratorStatus::Joined);

    let joined = given(&[opened(), invited(op1(), "op2"), accepted_by("op2")]);
    assert_eq!(events(when(&joined, &op2(), add_tag("vip"))).len(), 1);
    // Nothing left to answer.
    not_found(when(&joined, &op2(), Command::AcceptInvitation {}));
    not_found(when(&joined, &op2(), Command::DeclineInvitation {}));
}

#[test]
fn the_invitee_declines() {
    let g = given(&[opened(), invited(op1(), "op2")]);
    let d = accepted(when(&g, &op2(), Command::DeclineInvitation {}));
    assert_eq!(
        d.events,
        vec![Event::InvitationDeclined {
            operator_id: "op2".into()
        }]
    );
    assert_eq!(
        d.others,
        vec![(
            feed("op2"),
            Event::InvitationEnded {
                session_id: "s1".into(),
                outcome: InvitationOutcome::Declined,
            }
        )]
    );
    assert!(then_state(&g, &op2(), &d).collaborators.is_empty());
}

#[test]
fn only_the_invitee_answers() {
    let g = given(&[opened(), invited(op1(), "op2")]);
    for who in [op1(), op3(), sup(), svc()] {
        let e = not_found(when(&g, &who, Command::AcceptInvitation {}));
        assert!(e.message.starts_with("no pending invitation for"));
        not_found(when(&g, &who, Command::DeclineInvitation {}));
    }
}

#[test]
fn a_pending_invitation_is_cancelled_by_inviter_owner_or_supervisor() {
    let g = given(&[
        opened(),
        invited(op1(), "op2"),
        accepted_by("op2"),
        invited(op2(), "op3"),
    ]);
    let cancel = || Command::CancelInvitation {
        operator_id: "op3".into(),
    };
    for who in [op2(), op1(), sup(), admin(), svc()] {
        let d = accepted(when(&g, &who, cancel()));
        assert_eq!(
            d.events,
            vec![Event::InvitationCancelled {
                operator_id: "op3".into()
            }]
        );
        assert_eq!(
            d.others,
            vec![(
                feed("op3"),
                Event::InvitationEnded {
                    session_id: "s1".into(),
                    outcome: InvitationOutcome::Cancelled,
                }
            )]
        );
        assert_eq!(then_state(&g, &who, &d).collaborators.len(), 1);
    }
    // The invitee itself declines rather than cancels; an outsider may do neither.
    forbidden(when(&g, &op3(), cancel()));
    forbidden(when(&g, &op("op9"), cancel()));
    // Nothing pending for a joined collaborator or a stranger.
    let none = |id: &str| Command::CancelInvitation {
        operator_id: id.into(),
    };
    not_found(when(&g, &op1(), none("op2")));
    not_found(when(&g, &op1(), none("op9")));
}

#[test]
fn a_joined_collaborator_cannot_cancel_someone_elses_invitation() {
    let g = given(&[
        opened(),
        invited(op1(), "op2"),
        accepted_by("op2"),
        invited(op1(), "op3"),
    ]);
    forbidden(when(
        &g,
        &op2(),
        Command::CancelInvitation {
            operator_id: "op3".into(),
        },
    ));
}

#[test]
fn an_inviter_that_left_can_no_longer_cancel() {
    let g = given(&[
        opened(),
        invited(op1(), "op2"),
        accepted_by("op2"),
        invited(op2(), "op3"),
        (
            op2(),
            Event::CollaboratorLeft {
                operator_id: "op2".into(),
            },
        ),
    ]);
    forbidden(when(
        &g,
        &op2(),
        Command::CancelInvitation {
            operator_id: "op3".into(),
        },
    ));
}

#[test]
fn a_joined_collaborator_leaves() {
    let g = given(&[
        opened(),
        invited(op1(), "op2"),
        accepted_by("op2"),
        invited(op1(), "op3"),
    ]);
    let d = events(when(&g, &op2(), Command::Leave {}));
    assert_eq!(
        d,
        vec![Event::CollaboratorLeft {
            operator_id: "op2".into()
        }]
    );
    for who in [op3(), op1(), op("op9"), sup()] {
        let e = not_found(when(&g, &who, Command::Leave {}));
        assert_eq!(e.message, "you are not a collaborator of this session");
    }
    let after = given(&[
        opened(),
        invited(op1(), "op2"),
        accepted_by("op2"),
        (
            op2(),
            Event::CollaboratorLeft {
                operator_id: "op2".into(),
            },
        ),
    ]);
    assert!(after.state.collaborators.is_empty());
    forbidden(when(&after, &op2(), add_note("still here?")));
}

#[test]
fn the_owner_removes_collaborators() {
    let g = given(&[
        opened(),
        invited(op1(), "op2"),
        accepted_by("op2"),
        invited(op1(), "op3"),
    ]);
    let remove = |id: &str| Command::RemoveCollaborator {
        operator_id: id.into(),
    };
    // A joined one: nothing pending on its feed.
    let d = accepted(when(&g, &op1(), remove("op2")));
    assert_eq!(
        d.events,
        vec![Event::CollaboratorRemoved {
            operator_id: "op2".into()
        }]
    );
    assert!(d.others.is_empty());
    assert_eq!(then_state(&g, &op1(), &d).collaborators.len(), 1);
    // An invited one: its pending invitation ends on its feed.
    let d = accepted(when(&g, &sup(), remove("op3")));
    assert_eq!(
        d.events,
        vec![Event::CollaboratorRemoved {
            operator_id: "op3".into()
        }]
    );
    assert_eq!(
        d.others,
        vec![(
            feed("op3"),
            Event::InvitationEnded {
                session_id: "s1".into(),
                outcome: InvitationOutcome::Cancelled,
            }
        )]
    );
    assert_eq!(accepted(when(&g, &svc(), remove("op2"))).events.len(), 1);
    forbidden(when(&g, &op2(), remove("op3")));
    not_found(when(&g, &op1(), remove("op9")));
}

// ---- parameters ------------------------------------------------------------------------------

#[test]
fn an_operator_sets_a_custom_parameter() {
    let g = given(&[opened()]);
    let d = accepted(when(&g, &op1(), set_param("order", "A-17 ✓", None)));
    assert_eq!(
        d.events,
        vec![Event::ParameterSet {
            key: "order".into(),
            value: "A-17 ✓".into(),
            source: ParameterSource::Operator,
            read_only: false,
        }]
    );
    let s = then_state(&g, &op1(), &d);
    let p = &s.parameters["order"];
    assert_eq!(p.value, "A-17 ✓");
    assert_eq!(p.source, ParameterSource::Operator);
    assert_eq!(p.changed_by, "op1");
    assert_eq!(p.changed_at, NOW + 2);
}

#[test]
fn read_only_is_the_platforms() {
    let g = given(&[opened(), param_set(svc(), "crm", "42", true)]);
    let e = forbidden(when(&g, &op1(), set_param("x", "1", Some(false))));
    assert_eq!(e.message, "read_only is set by the platform only");
    forbidden(when(&g, &admin(), set_param("x", "1", Some(true))));
    let e = forbidden(when(&g, &op1(), set_param("crm", "43", None)));
    assert_eq!(e.message, "parameter \"crm\" is read-only");
    forbidden(when(&g, &sup(), set_param("crm", "43", None)));
    forbidden(when(&g, &op1(), remove_param("crm")));
    // The platform changes it; without read_only it stays read-only.
    assert_eq!(
        events(when(&g, &svc(), set_param("crm", "43", None))),
        vec![Event::ParameterSet {
            key: "crm".into(),
            value: "43".into(),
            source: ParameterSource::Preset,
            read_only: true,
        }]
    );
    assert_eq!(
        events(when(&g, &svc(), set_param("crm", "43", Some(false)))),
        vec![Event::ParameterSet {
            key: "crm".into(),
            value: "43".into(),
            source: ParameterSource::Preset,
            read_only: false,
        }]
    );
    assert_eq!(
        events(when(&g, &svc(), remove_param("crm"))),
        vec![Event::ParameterRemoved { key: "crm".into() }]
    );
}

#[test]
fn parameter_fields_are_checked() {
    let g = given(&[opened()]);
    let limits = Limits {
        parameter_key_chars: 4,
        parameter_value_chars: 3,
        ..Limits::default()
    };
    let w = |cmd| when_limited(&g, &op1(), cmd, &limits);
    invalid(w(set_param("", "v", None)), "key");
    invalid(w(set_param(" \t", "v", None)), "key");
    invalid(w(set_param("   ", "v", None)), "key");
    let e = too_large(w(set_param("keyss", "v", None)), "key");
    assert_eq!(e.message, "parameter key is 5 characters; the limit is 4");
    let e = too_large(w(set_param("k", "vvvv", None)), "value");
    assert_eq!(e.message, "parameter value is 4 characters; the limit is 3");
    invalid(w(set_param("k", "a\nb", None)), "value");
    // A tab is fine in a value; an empty value too; sizes count characters, not bytes.
    assert_eq!(events(w(set_param("ключ", "a\tb", None))).len(), 1);
    assert_eq!(events(w(set_param("k", "", None))).len(), 1);
}

#[test]
fn a_session_holds_a_bounded_number_of_parameters() {
    let g = given(&[
        opened(),
        param_set(op1(), "a", "1", false),
        param_set(op1(), "b", "2", false),
    ]);
    let limits = Limits {
        parameters_per_session: 2,
        ..Limits::default()
    };
    let e = too_large(
        when_limited(&g, &op1(), set_param("c", "3", None), &limits),
        "key",
    );
    assert_eq!(e.message, "a session holds at most 2 parameters");
    // Changing an existing one is still fine at the limit.
    assert_eq!(
        events(when_limited(&g, &op1(), set_param("a", "9", None), &limits)).len(),
        1
    );
}

#[test]
fn parameters_are_removed() {
    let g = given(&[opened(), param_set(op1(), "a", "1", false)]);
    let d = accepted(when(&g, &op1(), remove_param("a")));
    assert_eq!(d.events, vec![Event::ParameterRemoved { key: "a".into() }]);
    assert!(then_state(&g, &op1(), &d).parameters.is_empty());
    not_found(when(&g, &op1(), remove_param("zz")));
    forbidden(when(&g, &op3(), remove_param("a")));
}

// ---- tags ------------------------------------------------------------------------------------

#[test]
fn tags_are_added_trimmed_and_once() {
    let g = given(&[opened(), tag_added(op1(), "VIP")]);
    let d = accepted(when(&g, &op1(), add_tag("  Café  ")));
    assert_eq!(
        d.events,
        vec![Event::TagAdded {
            tag: "Café".into(),
            source: TagSource::Manual,
            rule_id: None,
        }]
    );
    let s = then_state(&g, &op1(), &d);
    assert_eq!(s.tags.len(), 2);
    assert_eq!(s.tags[1].tag, "Café");
    assert_eq!(s.tags[1].added_by, "op1");
    // Already there, whatever the case: accepted, nothing appended.
    no_op(when(&g, &op1(), add_tag("vip")));
    no_op(when(&g, &op1(), add_tag(" VIP ")));
}

#[test]
fn tag_fields_and_count_are_checked() {
    let g = given(&[opened(), tag_added(op1(), "a"), tag_added(op1(), "b")]);
    let limits = Limits {
        tag_chars: 3,
        tags_per_session: 2,
        ..Limits::default()
    };
    let w = |cmd| when_limited(&g, &op1(), cmd, &limits);
    invalid(w(add_tag("")), "tag");
    invalid(w(add_tag("   ")), "tag");
    invalid(w(add_tag("a\u{1b}")), "tag");
    let e = too_large(w(add_tag("abcd")), "tag");
    assert_eq!(e.message, "tag is 4 characters; the limit is 3");
    let e = too_large(w(add_tag("c")), "tag");
    assert_eq!(e.message, "a session holds at most 2 tags");
    // A duplicate at the limit is still an accepted no-op.
    no_op(w(add_tag("A")));
}

#[test]
fn tags_are_removed_by_any_spelling() {
    let g = given(&[opened(), tag_added(op1(), "Café"), tag_added(op1(), "b")]);
    let d = accepted(when(&g, &op1(), remove_tag("CAFÉ")));
    assert_eq!(
        d.events,
        vec![Event::TagRemoved {
            tag: "Café".into()
        }]
    );
    let s = then_state(&g, &op1(), &d);
    assert_eq!(s.tags.len(), 1);
    assert_eq!(s.tags[0].tag, "b");
    not_found(when(&g, &op1(), remove_tag("nope")));
    forbidden(when(&g, &op2(), remove_tag("b")));
}

// ---- notes -----------------------------------------------------------------------------------

#[test]
fn a_note_gets_its_id_from_the_seq() {
    let g = given(&[opened(), tag_added(op1(), "a")]);
    let d = accepted(when(&g, &op1(), add_note("line 1\nline 2\ttab")));
    assert_eq!(d.created.as_deref(), Some("n3"));
    assert_eq!(
        d.events,
        vec![Event::NoteAdded {
            note_id: "n3".into(),
            text: "line 1\nline 2\ttab".into(),
        }]
    );
    let s = then_state(&g, &op1(), &d);
    assert_eq!(s.notes.len(), 1);
    assert_eq!(s.notes[0].note_id, "n3");
    assert_eq!(s.notes[0].author, "op1");
    assert_eq!(s.notes[0].at, NOW + 3);
}

#[test]
fn note_text_and_count_are_checked() {
    let g = given(&[opened(), note_added(op1(), "n2", "x")]);
    let limits = Limits {
        note_chars: 10,
        notes_per_session: 1,
        ..Limits::default()
    };
    let w = |cmd| when_limited(&g, &op1(), cmd, &limits);
    invalid(w(add_note("")), "text");
    invalid(w(add_note(" \n\t ")), "text");
    invalid(w(add_note("a\u{0}b")), "text");
    let e = too_large(w(add_note("ééééééééééé")), "text");
    assert_eq!(e.message, "note text is 11 characters; the limit is 10");
    let e = too_large(w(add_note("ok")), "text");
    assert_eq!(e.message, "a session holds at most 1 notes");
    // The edit path checks the text the same way.
    invalid(w(edit_note("n2", " ")), "text");
    too_large(w(edit_note("n2", "ééééééééééé")), "text");
    assert_eq!(events(w(edit_note("n2", "éééééééééé"))).len(), 1);
}

#[test]
fn the_author_edits_and_deletes_its_note() {
    let g = given(&[
        opened(),
        invited(op1(), "op2"),
        accepted_by("op2"),
        invited(op1(), "op3"),
        accepted_by("op3"),
        note_added(op2(), "n6", "mine"),
    ]);
    let d = accepted(when(&g, &op2(), edit_note("n6", "still mine")));
    assert_eq!(
        d.events,
        vec![Event::NoteEdited {
            note_id: "n6".into(),
            text: "still mine".into(),
        }]
    );
    let s = then_state(&g, &op2(), &d);
    assert_eq!(s.notes[0].text, "still mine");
    assert_eq!(s.notes[0].author, "op2");
    assert_eq!(s.notes[0].at, NOW + 7);

    let d = accepted(when(&g, &op2(), delete_note("n6")));
    assert_eq!(
        d.events,
        vec![Event::NoteDeleted {
            note_id: "n6".into()
        }]
    );
    assert!(then_state(&g, &op2(), &d).notes.is_empty());

    // Supervisors and the platform change any note; other writers, even the owner, do not.
    for who in [sup(), admin(), svc()] {
        assert_eq!(events(when(&g, &who, edit_note("n6", "fixed"))).len(), 1);
        assert_eq!(events(when(&g, &who, delete_note("n6"))).len(), 1);
    }
    for who in [op1(), op3()] {
        forbidden(when(&g, &who, edit_note("n6", "theirs")));
        forbidden(when(&g, &who, delete_note("n6")));
    }
    not_found(when(&g, &op2(), edit_note("n99", "x")));
    not_found(when(&g, &op2(), delete_note("n99")));
    forbidden(when(&g, &op("op9"), delete_note("n6")));
}

#[test]
fn an_author_that_left_no_longer_edits_its_notes() {
    let g = given(&[
        opened(),
        invited(op1(), "op2"),
        accepted_by("op2"),
        note_added(op2(), "n4", "mine"),
        (
            op2(),
            Event::CollaboratorLeft {
                operator_id: "op2".into(),
            },
        ),
    ]);
    forbidden(when(&g, &op2(), edit_note("n4", "x")));
    forbidden(when(&g, &op2(), delete_note("n4")));
}

// ---- messages --------------------------------------------------------------------------------

#[test]
fn messages_are_posted_by_the_platform_and_operators() {
    let g = given(&[opened()]);
    let d = accepted(when(&g, &svc(), say(MessageFrom::Client, "Bonjour\n?")));
    assert_eq!(
        d.events,
        vec![Event::MessagePosted {
            from: MessageFrom::Client,
            text: "Bonjour\n?".into(),
            template_id: None,
        }]
    );
    assert_eq!(then_state(&g, &svc(), &d).messages, 1);
    assert_eq!(
        events(when(&g, &op1(), say(MessageFrom::Operator, "Hello"))),
        vec![Event::MessagePosted {
            from: MessageFrom::Operator,
            text: "Hello".into(),
            template_id: None,
        }]
    );
    // Only the platform speaks for the client.
    for who in [op1(), sup(), admin()] {
        forbidden(when(&g, &who, say(MessageFrom::Client, "fake")));
    }
    forbidden(when(&g, &op2(), say(MessageFrom::Operator, "hi")));
}

#[test]
fn message_fields_are_checked() {
    let g = given(&[opened()]);
    let post = |text: Option<&str>, template: Option<&str>| Command::PostMessage {
        from: MessageFrom::Operator,
        text: text.map(Into::into),
        template_id: template.map(Into::into),
    };
    let e = invalid(when(&g, &op1(), post(Some("a"), Some("t1"))), "text");
    assert_eq!(e.message, "give text or template_id, not both");
    let e = invalid(when(&g, &op1(), post(None, None)), "text");
    assert_eq!(e.message, "give text or template_id");
    let e = not_found(when(&g, &op1(), post(None, Some("t1"))));
    assert_eq!(e.message, "template \"t1\" does not exist");
    invalid(when(&g, &op1(), post(Some(" \r\n"), None)), "text");
    invalid(when(&g, &op1(), post(Some("a\u{7f}"), None)), "text");
    let limits = Limits {
        message_chars: 5,
        ..Limits::default()
    };
    let e = too_large(
        when_limited(&g, &op1(), post(Some("123456"), None), &limits),
        "text",
    );
    assert_eq!(e.message, "message text is 6 characters; the limit is 5");
    assert_eq!(
        events(when_limited(&g, &op1(), post(Some("12345"), None), &limits)).len(),
        1
    );
}

// ---- close -----------------------------------------------------------------------------------

#[test]
fn the_owner_closes_the_session() {
    let g = given(&[opened(), invited(op1(), "op2"), accepted_by("op2")]);
    let d = accepted(when(&g, &op1(), Command::CloseSession {}));
    assert_eq!(d.events, vec![Event::SessionClosed]);
    assert!(d.others.is_empty());
    assert_eq!(then_state(&g, &op1(), &d).status, SessionStatus::Closed);
    for who in [sup(), admin(), svc()] {
        assert_eq!(
            events(when(&g, &who, Command::CloseSession {})),
            vec![Event::SessionClosed]
        );
    }
    // A joined collaborator edits but does not close.
    forbidden(when(&g, &op2(), Command::CloseSession {}));
    closed(when(
        &given(&[opened(), closed_by(op1())]),
        &op1(),
        Command::CloseSession {},
    ));
}

#[test]
fn closing_withdraws_pending_invitations() {
    let g = given(&[
        opened(),
        invited(op1(), "op2"),
        invited(op1(), "op3"),
        accepted_by("op3"),
    ]);
    let d = accepted(when(&g, &op1(), Command::CloseSession {}));
    assert_eq!(
        d.events,
        vec![
            Event::InvitationCancelled {
                operator_id: "op2".into()
            },
            Event::SessionClosed,
        ]
    );
    assert_eq!(
        d.others,
        vec![(
            feed("op2"),
            Event::InvitationEnded {
                session_id: "s1".into(),
                outcome: InvitationOutcome::Cancelled,
            }
        )]
    );
    let s = then_state(&g, &op1(), &d);
    assert_eq!(s.status, SessionStatus::Closed);
    assert_eq!(s.collaborators.len(), 1);
    assert_eq!(s.collaborators[0].operator_id, "op3");
}

// ---- read access -----------------------------------------------------------------------------

fn read(s: &SessionState, who: &Principal) -> Result<(), Rejection> {
    domain::can_read(&stream(), &StreamState::Session(s.clone()), who)
}

#[test]
fn who_reads_a_session() {
    let g = given(&[
        opened(),
        invited(op1(), "op2"),
        invited(op1(), "op3"),
        accepted_by("op3"),
    ]);
    for who in [op1(), op2(), op3(), sup(), admin(), svc()] {
        assert_eq!(read(&g.state, &who), Ok(()), "{who:?}");
    }
    let e = read(&g.state, &op("op9")).unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert!(
        e.message.contains("is not the owner or a collaborator"),
        "{}",
        e.message
    );
    // Closing changes nothing about reading.
    let c = given(&[opened(), closed_by(op1())]);
    assert_eq!(read(&c.state, &op1()), Ok(()));
    assert_eq!(
        read(&c.state, &op("op9")).unwrap_err().code,
        ErrorCode::Forbidden
    );
}

#[test]
fn group_members_read_a_group_session() {
    let g = given(&[opened_by(Owner::Group {
        group: "sales".into(),
    })]);
    let member = member_of("op5", Role::Operator, &["support", "sales"]);
    assert_eq!(read(&g.state, &member), Ok(()));
    let outsider = member_of("op6", Role::Operator, &["support"]);
    assert_eq!(
        read(&g.state, &outsider).unwrap_err().code,
        ErrorCode::Forbidden
    );
}

#[test]
fn an_unopened_session_does_not_exist_for_operators() {
    let g = given(&[]);
    for who in [sup(), admin(), svc()] {
        assert_eq!(read(&g.state, &who), Ok(()), "{who:?}");
    }
    let e = read(&g.state, &op1()).unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    assert_eq!(e.message, "session does not exist");
}

// ---- apply -----------------------------------------------------------------------------------

#[test]
fn apply_ignores_events_that_do_not_fit() {
    let g = given(&[
        opened(),
        (
            op1(),
            Event::NoteEdited {
                note_id: "n404".into(),
                text: "x".into(),
            },
        ),
        (
            op1(),
            Event::InvitationAccepted {
                operator_id: "ghost".into(),
            },
        ),
        (
            op1(),
            Event::InvitationReceived {
                session_id: "s1".into(),
                by: "op1".into(),
            },
        ),
        (
            op1(),
            Event::ParameterRemoved {
                key: "missing".into(),
            },
        ),
    ]);
    let clean = given(&[opened()]);
    assert_eq!(g.state, clean.state);
}

#[test]
fn the_actor_is_recorded_as_who_changed_things() {
    let who = Actor {
        id: "op1".into(),
        role: Role::Operator,
    };
    assert_eq!(op1().actor(), who);
    let g = given(&[opened(), param_set(sup(), "k", "v", false)]);
    assert_eq!(g.state.parameters["k"].changed_by, "sup");
    assert_eq!(g.state.parameters["k"].changed_at, NOW + 2);
}
