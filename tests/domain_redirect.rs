//! Redirect and claim, given / when / then: given these session events and this roster, when
//! this command, then these events on the session and on the operators' feeds (or this
//! rejection).

use copanel::domain::{self, Ctx, Decision, Limits, Principal, Rejection, World};
use copanel_protocol::{
    Command, Envelope, ErrorCode, Event, OperatorState, Owner, Role, SessionState, SessionStatus,
    StreamKind, StreamName, StreamState,
};
use std::collections::BTreeMap;

#[path = "common/given.rs"]
mod given;
use given::*;

const NOW: u64 = 1_700_000_000_000;

// ---- principals ------------------------------------------------------------------------------

/// A member of group `billing`.
fn member(id: &str) -> Principal {
    member_of(id, Role::Operator, &["billing"])
}

// ---- the world: a roster of group members ----------------------------------------------------

/// A company roster: operator → groups, as the writer keeps it from connecting tokens.
#[derive(Default)]
struct Roster(BTreeMap<String, Vec<String>>);

impl Roster {
    fn with(entries: &[(&str, &[&str])]) -> Self {
        Roster(
            entries
                .iter()
                .map(|(op, groups)| {
                    (
                        op.to_string(),
                        groups.iter().map(|g| g.to_string()).collect(),
                    )
                })
                .collect(),
        )
    }
}

impl World for Roster {
    fn state(&self, _stream: &StreamName) -> Option<&StreamState> {
        None
    }
    fn group_members(&self, group: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, groups)| groups.iter().any(|g| g == group))
            .map(|(op, _)| op.clone())
            .collect()
    }
}

/// op2 and op3 are in `billing`, op4 in `billing` and `sales`, op5 in `sales` only.
fn roster() -> Roster {
    Roster::with(&[
        ("op1", &[]),
        ("op2", &["billing"]),
        ("op3", &["billing"]),
        ("op4", &["billing", "sales"]),
        ("op5", &["sales"]),
    ])
}

// ---- given / when / then ---------------------------------------------------------------------

fn stream() -> StreamName {
    StreamName::session("s1").unwrap()
}

fn feed(id: &str) -> StreamName {
    StreamName::operator(id).unwrap()
}

struct Given {
    state: SessionState,
    head: u64,
}

fn envelope(stream: StreamName, seq: u64, who: &Principal, event: Event) -> Envelope {
    Envelope {
        stream,
        seq,
        at: NOW + seq,
        actor: who.actor(),
        command_id: None,
        event,
    }
}

fn given(events: &[(Principal, Event)]) -> Given {
    let mut state = domain::initial(StreamKind::Session);
    for (i, (who, event)) in events.iter().enumerate() {
        domain::apply(
            &mut state,
            &envelope(stream(), i as u64 + 1, who, event.clone()),
        );
    }
    match state {
        StreamState::Session(state) => Given {
            state,
            head: events.len() as u64,
        },
        other => panic!("not a session state: {other:?}"),
    }
}

fn opened_by(owner: Owner) -> (Principal, Event) {
    (
        svc(),
        Event::SessionOpened {
            channel: "chat".into(),
            name: "Jana".into(),
            phone: String::new(),
            email: String::new(),
            parameters: BTreeMap::new(),
            owner,
        },
    )
}
/// Open, owned by op1.
fn opened() -> (Principal, Event) {
    opened_by(Owner::Operator {
        operator_id: "op1".into(),
    })
}
/// Open, waiting in group `billing`.
fn opened_in_billing() -> (Principal, Event) {
    opened_by(Owner::Group {
        group: "billing".into(),
    })
}
fn invited(id: &str) -> (Principal, Event) {
    (
        op("op1"),
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
fn closed() -> (Principal, Event) {
    (op("op1"), Event::SessionClosed)
}

fn when_in(
    g: &Given,
    world: &dyn World,
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
        world,
        fresh_id: "fresh",
    };
    domain::decide(&StreamState::Session(g.state.clone()), &ctx, &cmd)
}

fn when(g: &Given, who: &Principal, cmd: Command) -> Result<Decision, Rejection> {
    when_in(g, &roster(), who, cmd, &Limits::default())
}

fn to_operator(id: &str, note: Option<&str>) -> Command {
    Command::Redirect {
        operator_id: Some(id.into()),
        group: None,
        note: note.map(str::to_owned),
    }
}
fn to_group(group: &str, note: Option<&str>) -> Command {
    Command::Redirect {
        operator_id: None,
        group: Some(group.into()),
        note: note.map(str::to_owned),
    }
}

/// The session after the decision's own events, appended by `who`.
fn then_state(g: &Given, who: &Principal, d: &Decision) -> SessionState {
    let mut state = StreamState::Session(g.state.clone());
    for (i, event) in d.events.iter().enumerate() {
        domain::apply(
            &mut state,
            &envelope(stream(), g.head + 1 + i as u64, who, event.clone()),
        );
    }
    match state {
        StreamState::Session(s) => s,
        other => panic!("not a session state: {other:?}"),
    }
}

/// One operator's feed after folding the decision's side events addressed to it.
fn then_feed(id: &str, who: &Principal, d: &Decision) -> OperatorState {
    let mut state = domain::initial(StreamKind::Operator);
    let mine = d.others.iter().filter(|(s, _)| s == &feed(id));
    for (i, (s, event)) in mine.enumerate() {
        domain::apply(
            &mut state,
            &envelope(s.clone(), i as u64 + 1, who, event.clone()),
        );
    }
    match state {
        StreamState::Operator(s) => s,
        other => panic!("not an operator state: {other:?}"),
    }
}

#[track_caller]
fn rejected(r: Result<Decision, Rejection>, code: ErrorCode) -> Rejection {
    match r {
        Ok(d) => panic!("accepted, expected {code}: {d:?}"),
        Err(e) => {
            assert_eq!(e.code, code, "{e:?}");
            e
        }
    }
}

#[track_caller]
fn with_field(r: Result<Decision, Rejection>, code: ErrorCode, field: &str) -> Rejection {
    let e = rejected(r, code);
    assert_eq!(
        e.field.as_deref(),
        Some(format!("command.{field}").as_str()),
        "{e:?}"
    );
    e
}

fn assignment(session: &str, by: &str, note: Option<&str>, group: Option<&str>) -> Event {
    Event::AssignmentReceived {
        session_id: session.into(),
        by: by.into(),
        note: note.map(str::to_owned),
        group: group.map(str::to_owned),
    }
}
fn ended(session: &str) -> Event {
    Event::AssignmentEnded {
        session_id: session.into(),
    }
}

// ---- redirect to an operator -----------------------------------------------------------------

#[test]
fn the_owner_redirects_to_an_operator_without_a_note() {
    let g = given(&[opened()]);
    let d = accepted(when(&g, &op("op1"), to_operator("op2", None)));
    assert_eq!(
        d.events,
        vec![Event::SessionRedirected {
            to: Owner::Operator {
                operator_id: "op2".into()
            },
            note_id: None,
        }]
    );
    assert_eq!(
        d.others,
        vec![
            (feed("op1"), ended("s1")),
            (feed("op2"), assignment("s1", "op1", None, None)),
        ]
    );
    assert_eq!(d.created, None);
    let s = then_state(&g, &op("op1"), &d);
    assert_eq!(
        s.owner,
        Some(Owner::Operator {
            operator_id: "op2".into()
        })
    );
    // The receiver reads and writes; the previous owner does neither any more.
    assert!(domain::session::can_read(&s, &op("op2")).is_ok());
    let e = domain::session::can_read(&s, &op("op1")).unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    let after = given(&[opened(), (op("op1"), d.events[0].clone())]);
    accepted(when(
        &after,
        &op("op2"),
        Command::AddNote {
            text: "mine now".into(),
        },
    ));
    rejected(
        when(
            &after,
            &op("op1"),
            Command::AddNote {
                text: "still?".into(),
            },
        ),
        ErrorCode::Forbidden,
    );
}

#[test]
fn a_redirect_note_becomes_a_session_note_and_travels_with_the_assignment() {
    let g = given(&[opened(), invited("op3")]);
    let d = accepted(when(
        &g,
        &op("op1"),
        to_operator("op2", Some("VIP, wants a callback")),
    ));
    // The note's id is derived from the seq it gets: the session is at seq 2, so n3.
    assert_eq!(
        d.events,
        vec![
            Event::NoteAdded {
                note_id: "n3".into(),
                text: "VIP, wants a callback".into()
            },
            Event::SessionRedirected {
                to: Owner::Operator {
                    operator_id: "op2".into()
                },
                note_id: Some("n3".into()),
            },
        ]
    );
    assert_eq!(d.created.as_deref(), Some("n3"));
    let s = then_state(&g, &op("op1"), &d);
    assert_eq!(s.notes.len(), 1);
    assert_eq!(s.notes[0].author, "op1");
    assert_eq!(s.notes[0].text, "VIP, wants a callback");
    let f = then_feed("op2", &op("op1"), &d);
    assert_eq!(f.assignments.len(), 1);
    assert_eq!(f.assignments[0].session_id, "s1");
    assert_eq!(f.assignments[0].by, "op1");
    assert_eq!(
        f.assignments[0].note.as_deref(),
        Some("VIP, wants a callback")
    );
    assert_eq!(f.assignments[0].group, None);
}

#[test]
fn writers_may_redirect_and_readers_may_not() {
    let g = given(&[opened(), invited("op2"), accepted_by("op2"), invited("op3")]);
    for who in [op("op1"), op("op2"), sup(), admin(), svc()] {
        let d = accepted(when(&g, &who, to_operator("op9", None)));
        assert!(d
            .others
            .contains(&(feed("op9"), assignment("s1", &who.id, None, None))));
    }
    // An invitee only reads; an outsider not even that (the writer refuses it earlier, but
    // decide refuses it too).
    for who in [op("op3"), op("op7")] {
        let e = rejected(
            when(&g, &who, to_operator("op9", None)),
            ErrorCode::Forbidden,
        );
        assert_eq!(e.field, None);
    }
    // Members of a waiting group read but must claim before they hand it on.
    let g = given(&[opened_in_billing()]);
    rejected(
        when(&g, &member("op2"), to_operator("op9", None)),
        ErrorCode::Forbidden,
    );
}

#[test]
fn the_previous_owner_keeps_access_only_as_a_collaborator() {
    // op2 joined as a collaborator, then op1 handed the session to it.
    let mut log = vec![opened(), invited("op2"), accepted_by("op2")];
    let d = accepted(when(&given(&log), &op("op1"), to_operator("op2", None)));
    log.push((op("op1"), d.events[0].clone()));
    let s = given(&log).state;
    assert!(
        domain::session::can_read(&s, &op("op1")).is_err(),
        "op1 was never a collaborator"
    );
    // Now op2, owner and still a collaborator, hands it to op3: op2 keeps reading and editing
    // as a collaborator.
    let d = accepted(when(&given(&log), &op("op2"), to_operator("op3", None)));
    log.push((op("op2"), d.events[0].clone()));
    let g = given(&log);
    assert!(domain::session::can_read(&g.state, &op("op2")).is_ok());
    assert!(domain::session::can_read(&g.state, &op("op3")).is_ok());
    accepted(when(
        &g,
        &op("op2"),
        Command::AddNote {
            text: "still here".into(),
        },
    ));
    // op2's feed drops the assignment it had received: the session went on to op3.
    assert_eq!(
        d.others,
        vec![
            (feed("op2"), ended("s1")),
            (feed("op3"), assignment("s1", "op2", None, None)),
        ]
    );
}

// ---- redirect to a group ---------------------------------------------------------------------

#[test]
fn a_group_redirect_tells_every_known_member_but_the_sender() {
    // op4 is in billing and redirects, as a joined collaborator.
    let g = given(&[opened(), invited("op4"), accepted_by("op4")]);
    let who = member_of("op4", Role::Operator, &["billing", "sales"]);
    let d = accepted(when(
        &g,
        &who,
        to_group("billing", Some("billing question")),
    ));
    assert_eq!(
        d.events,
        vec![
            Event::NoteAdded {
                note_id: "n4".into(),
                text: "billing question".into()
            },
            Event::SessionRedirected {
                to: Owner::Group {
                    group: "billing".into()
                },
                note_id: Some("n4".into()),
            },
        ]
    );
    let note = Some("billing question");
    assert_eq!(
        d.others,
        vec![
            (feed("op1"), ended("s1")),
            (feed("op2"), assignment("s1", "op4", note, Some("billing"))),
            (feed("op3"), assignment("s1", "op4", note, Some("billing"))),
        ]
    );
    let s = then_state(&g, &who, &d);
    // Members read (and may claim); op1 is out; op5 (sales only) never was in.
    assert!(domain::session::can_read(&s, &member("op2")).is_ok());
    assert!(domain::session::can_read(&s, &op("op1")).is_err());
    assert!(domain::session::can_read(&s, &member_of("op5", Role::Operator, &["sales"])).is_err());
    let f = then_feed("op3", &who, &d);
    assert_eq!(f.assignments[0].group.as_deref(), Some("billing"));
}

#[test]
fn a_group_redirect_with_no_known_member_still_redirects() {
    let g = given(&[opened()]);
    let d = accepted(when(&g, &op("op1"), to_group("night-shift", None)));
    assert_eq!(d.events.len(), 1);
    assert_eq!(d.others, vec![(feed("op1"), ended("s1"))]);
    let d = accepted(when_in(
        &g,
        &domain::EmptyWorld,
        &op("op1"),
        to_group("billing", None),
        &Limits::default(),
    ));
    assert_eq!(d.others, vec![(feed("op1"), ended("s1"))]);
}

#[test]
fn leaving_a_group_ends_its_members_assignments_before_the_new_ones() {
    let g = given(&[opened_in_billing()]);
    let d = accepted(when(&g, &sup(), to_group("sales", None)));
    assert_eq!(
        d.others,
        vec![
            (feed("op2"), ended("s1")),
            (feed("op3"), ended("s1")),
            (feed("op4"), ended("s1")),
            (feed("op4"), assignment("s1", "sup", None, Some("sales"))),
            (feed("op5"), assignment("s1", "sup", None, Some("sales"))),
        ]
    );
    // op4 is in both groups: its feed ends up with the sales assignment.
    let f = then_feed("op4", &sup(), &d);
    assert_eq!(f.assignments.len(), 1);
    assert_eq!(f.assignments[0].group.as_deref(), Some("sales"));
    assert!(then_feed("op2", &sup(), &d).assignments.is_empty());
}

// ---- redirect refusals -----------------------------------------------------------------------

#[test]
fn redirect_needs_exactly_one_target() {
    let g = given(&[opened()]);
    let e = with_field(
        when(
            &g,
            &op("op1"),
            Command::Redirect {
                operator_id: None,
                group: None,
                note: Some("hi".into()),
            },
        ),
        ErrorCode::Invalid,
        "operator_id",
    );
    assert_eq!(e.message, "give operator_id or group");
    let e = with_field(
        when(
            &g,
            &op("op1"),
            Command::Redirect {
                operator_id: Some("op2".into()),
                group: Some("billing".into()),
                note: None,
            },
        ),
        ErrorCode::Invalid,
        "operator_id",
    );
    assert_eq!(e.message, "give operator_id or group, not both");
}

#[test]
fn redirect_targets_are_validated() {
    let g = given(&[opened()]);
    for bad in ["", "op 2", "op/2", "ópé"] {
        with_field(
            when(&g, &op("op1"), to_operator(bad, None)),
            ErrorCode::Invalid,
            "operator_id",
        );
    }
    let e = with_field(
        when(&g, &op("op1"), to_operator(&"o".repeat(129), None)),
        ErrorCode::TooLarge,
        "operator_id",
    );
    assert_eq!(e.message, "operator id is 129 characters; the limit is 128");
    let e = with_field(
        when(&g, &op("op1"), to_group("", None)),
        ErrorCode::Invalid,
        "group",
    );
    assert_eq!(e.message, "group is empty");
    with_field(
        when(&g, &op("op1"), to_group("bill\ning", None)),
        ErrorCode::Invalid,
        "group",
    );
    let e = with_field(
        when(&g, &op("op1"), to_group(&"g".repeat(129), None)),
        ErrorCode::TooLarge,
        "group",
    );
    assert_eq!(e.message, "group is 129 characters; the limit is 128");
    // Group names are free text otherwise (spaces, accents).
    accepted(when(&g, &op("op1"), to_group("Fakturace – VIP", None)));
}

#[test]
fn redirecting_to_the_current_owner_is_refused() {
    let g = given(&[opened()]);
    let e = with_field(
        when(&g, &op("op1"), to_operator("op1", None)),
        ErrorCode::Invalid,
        "operator_id",
    );
    assert_eq!(e.message, "operator \"op1\" already owns this session");
    let g = given(&[opened_in_billing()]);
    let e = with_field(
        when(&g, &sup(), to_group("billing", None)),
        ErrorCode::Invalid,
        "group",
    );
    assert_eq!(
        e.message,
        "the session is already waiting in group \"billing\""
    );
}

#[test]
fn a_redirect_note_follows_the_note_rules() {
    let g = given(&[opened()]);
    let e = with_field(
        when(&g, &op("op1"), to_operator("op2", Some("  \n "))),
        ErrorCode::Invalid,
        "note",
    );
    assert_eq!(e.message, "note text is empty");
    with_field(
        when(&g, &op("op1"), to_operator("op2", Some("bell\u{7}"))),
        ErrorCode::Invalid,
        "note",
    );
    let limits = Limits {
        note_chars: 5,
        notes_per_session: 1,
        ..Limits::default()
    };
    let e = with_field(
        when_in(
            &g,
            &roster(),
            &op("op1"),
            to_operator("op2", Some("123456")),
            &limits,
        ),
        ErrorCode::TooLarge,
        "note",
    );
    assert_eq!(e.message, "note text is 6 characters; the limit is 5");
    // Multi-line notes are fine.
    accepted(when_in(
        &g,
        &roster(),
        &op("op1"),
        to_operator("op2", Some("a\nb")),
        &limits,
    ));
    // The note count limit applies to a redirect's note, not to a redirect without one.
    let full = given(&[
        opened(),
        (
            op("op1"),
            Event::NoteAdded {
                note_id: "n2".into(),
                text: "first".into(),
            },
        ),
    ]);
    let e = with_field(
        when_in(
            &full,
            &roster(),
            &op("op1"),
            to_operator("op2", Some("more")),
            &limits,
        ),
        ErrorCode::TooLarge,
        "note",
    );
    assert_eq!(e.message, "a session holds at most 1 notes");
    accepted(when_in(
        &full,
        &roster(),
        &op("op1"),
        to_operator("op2", None),
        &limits,
    ));
}

#[test]
fn redirect_needs_an_open_session() {
    let new = given(&[]);
    rejected(
        when(&new, &sup(), to_operator("op2", None)),
        ErrorCode::NotFound,
    );
    let done = given(&[opened(), closed()]);
    rejected(
        when(&done, &sup(), to_operator("op2", None)),
        ErrorCode::Closed,
    );
    rejected(
        when(&done, &member("op2"), Command::Claim {}),
        ErrorCode::Closed,
    );
}

// ---- claim -----------------------------------------------------------------------------------

#[test]
fn a_member_claims_a_waiting_session_and_every_member_drops_it() {
    let g = given(&[opened_in_billing()]);
    let d = accepted(when(&g, &member("op3"), Command::Claim {}));
    assert_eq!(
        d.events,
        vec![Event::SessionClaimed {
            operator_id: "op3".into()
        }]
    );
    assert_eq!(
        d.others,
        vec![
            (feed("op2"), ended("s1")),
            (feed("op3"), ended("s1")),
            (feed("op4"), ended("s1")),
        ]
    );
    assert_eq!(d.created, None);
    let s = then_state(&g, &member("op3"), &d);
    assert_eq!(
        s.owner,
        Some(Owner::Operator {
            operator_id: "op3".into()
        })
    );
    // The claimer now edits; the other members no longer even read.
    let after = given(&[opened_in_billing(), (member("op3"), d.events[0].clone())]);
    accepted(when(
        &after,
        &member("op3"),
        Command::AddTag { tag: "vip".into() },
    ));
    assert!(domain::session::can_read(&s, &member("op2")).is_err());
    // Nobody can claim it twice.
    let e = with_field(
        when(&after, &member("op2"), Command::Claim {}),
        ErrorCode::Invalid,
        "kind",
    );
    assert_eq!(e.message, "session is not waiting in a group");
}

#[test]
fn a_claimer_missing_from_the_roster_still_drops_its_assignment() {
    let g = given(&[opened_in_billing()]);
    let d = accepted(when_in(
        &g,
        &domain::EmptyWorld,
        &member("op8"),
        Command::Claim {},
        &Limits::default(),
    ));
    assert_eq!(d.others, vec![(feed("op8"), ended("s1"))]);
}

#[test]
fn only_members_of_the_waiting_group_claim() {
    let g = given(&[opened_in_billing()]);
    for who in [
        op("op1"),
        member_of("op5", Role::Operator, &["sales"]),
        sup(),
        admin(),
        svc(),
    ] {
        let e = rejected(when(&g, &who, Command::Claim {}), ErrorCode::Forbidden);
        assert_eq!(e.field, None);
    }
    // A session owned by an operator is not waiting anywhere.
    let g = given(&[opened()]);
    with_field(
        when(&g, &op("op1"), Command::Claim {}),
        ErrorCode::Invalid,
        "kind",
    );
}

// ---- close -----------------------------------------------------------------------------------

#[test]
fn closing_a_waiting_session_ends_the_members_assignments() {
    let g = given(&[opened_in_billing()]);
    let d = accepted(when(&g, &sup(), Command::CloseSession {}));
    assert_eq!(d.events, vec![Event::SessionClosed]);
    assert_eq!(
        d.others,
        vec![
            (feed("op2"), ended("s1")),
            (feed("op3"), ended("s1")),
            (feed("op4"), ended("s1")),
        ]
    );
    let s = then_state(&g, &sup(), &d);
    assert_eq!(s.status, SessionStatus::Closed);
    // An operator-owned session's close touches no feed.
    let d = accepted(when(
        &given(&[opened()]),
        &op("op1"),
        Command::CloseSession {},
    ));
    assert!(d.others.is_empty());
}

// ---- replay ----------------------------------------------------------------------------------

#[test]
fn redirects_and_claims_replay_to_the_same_owner() {
    // A chain of decisions, each applied as the server would, then compared with a fresh fold
    // of the resulting log.
    let mut log: Vec<(Principal, Event)> = vec![opened()];
    let steps: Vec<(Principal, Command)> = vec![
        (op("op1"), to_group("billing", Some("please"))),
        (member("op2"), Command::Claim {}),
        (member("op2"), to_operator("op5", None)),
        (op("op5"), to_group("billing", None)),
        (member("op4"), Command::Claim {}),
    ];
    for (who, cmd) in steps {
        let g = given(&log);
        let d = accepted(when(&g, &who, cmd));
        for e in d.events {
            log.push((who.clone(), e));
        }
    }
    let s = given(&log).state;
    assert_eq!(
        s.owner,
        Some(Owner::Operator {
            operator_id: "op4".into()
        })
    );
    assert_eq!(s.notes.len(), 1);
    assert_eq!(s.notes[0].note_id, "n2");
}
