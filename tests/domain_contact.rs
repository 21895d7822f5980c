//! The contact directory's domain, given / when / then: given a session (and the contacts it
//! may link to), when a contact-directory command, then these events on the session and these
//! side events on other streams (or this rejection).

use copanel::domain::{self, Ctx, Decision, Limits, Principal, Rejection, World};
use copanel_protocol::{
    Command, ContactDetail, ContactDetailEntry, ContactState, ContactStatus, Envelope, ErrorCode,
    Event, Owner, Role, SessionState, StreamKind, StreamName, StreamState,
};
use std::collections::{BTreeMap, HashMap};

#[path = "common/given.rs"]
mod given;
use given::*;

const NOW: u64 = 1_700_000_000_000;
/// The id the writer hands `decide` for what it creates.
const FRESH: &str = "00c0ffee12345678";

// ---- principals ------------------------------------------------------------------------------

/// The owner of the default session.
fn op1() -> Principal {
    principal("op1", Role::Operator)
}
fn op2() -> Principal {
    principal("op2", Role::Operator)
}
fn op3() -> Principal {
    principal("op3", Role::Operator)
}
// ---- the world: other streams' states ---------------------------------------------------------

/// The streams the writer would have loaded for `decide`.
#[derive(Default, Clone)]
struct Streams(HashMap<StreamName, StreamState>);

impl World for Streams {
    fn state(&self, stream: &StreamName) -> Option<&StreamState> {
        self.0.get(stream)
    }
    fn group_members(&self, _group: &str) -> Vec<String> {
        Vec::new()
    }
}

fn contact_stream(id: &str) -> StreamName {
    StreamName::parse(&format!("contact/{id}")).unwrap()
}
fn session_stream(id: &str) -> StreamName {
    StreamName::session(id).unwrap()
}

/// Folds `events` into `stream`'s state through the public dispatch, as a replay would.
/// Event `i` is appended at `NOW + i`.
fn fold(stream: &StreamName, events: &[(Principal, Event)]) -> StreamState {
    let mut state = domain::initial(stream.kind());
    for (i, (who, event)) in events.iter().enumerate() {
        let seq = i as u64 + 1;
        domain::apply(&mut state, &envelope(stream, seq, who, event));
    }
    state
}

fn envelope(stream: &StreamName, seq: u64, who: &Principal, event: &Event) -> Envelope {
    Envelope {
        stream: stream.clone(),
        seq,
        at: NOW + seq,
        actor: who.actor(),
        command_id: None,
        event: event.clone(),
    }
}

fn contact_of(state: StreamState) -> ContactState {
    match state {
        StreamState::Contact(c) => c,
        other => panic!("not a contact state: {other:?}"),
    }
}

fn session_of(state: StreamState) -> SessionState {
    match state {
        StreamState::Session(s) => s,
        other => panic!("not a session state: {other:?}"),
    }
}

// ---- given / when ----------------------------------------------------------------------------

/// `session/s1` after some events, plus the contacts the writer would have loaded.
struct Given {
    session: SessionState,
    head: u64,
    world: Streams,
}

fn given(events: &[(Principal, Event)]) -> Given {
    Given {
        session: session_of(fold(&session_stream("s1"), events)),
        head: events.len() as u64,
        world: Streams::default(),
    }
}

impl Given {
    /// Adds `contact/<id>` with these events to the world.
    fn contact(mut self, id: &str, events: &[(Principal, Event)]) -> Self {
        let stream = contact_stream(id);
        let state = fold(&stream, events);
        self.world.0.insert(stream, state);
        self
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
    let stream = session_stream("s1");
    let ctx = Ctx {
        principal: who,
        stream: &stream,
        now: NOW + 1000,
        next_seq: g.head + 1,
        limits,
        world: &g.world,
        fresh_id: FRESH,
    };
    domain::decide(&StreamState::Session(g.session.clone()), &ctx, &cmd)
}

// ---- then ------------------------------------------------------------------------------------

#[track_caller]
fn rejected(r: Result<Decision, Rejection>, code: ErrorCode, field: Option<&str>) -> Rejection {
    match r {
        Ok(d) => panic!("accepted, expected {code}: {d:?}"),
        Err(e) => {
            assert_eq!(e.code, code, "{e:?}");
            assert_eq!(e.field.as_deref(), field, "{e:?}");
            assert!(!e.message.is_empty());
            e
        }
    }
}

// ---- building blocks -------------------------------------------------------------------------

fn opened() -> (Principal, Event) {
    (
        svc(),
        Event::SessionOpened {
            channel: "chat".into(),
            name: "Jana Nováková".into(),
            phone: "+420 777 123 456".into(),
            email: "jana@example.com".into(),
            parameters: BTreeMap::new(),
            owner: Owner::Operator {
                operator_id: "op1".into(),
            },
        },
    )
}
fn linked_to(id: &str) -> (Principal, Event) {
    (
        op1(),
        Event::ContactLinked {
            contact_id: id.into(),
        },
    )
}
fn invited(id: &str) -> (Principal, Event) {
    (
        op1(),
        Event::CollaboratorInvited {
            operator_id: id.into(),
        },
    )
}
fn joined(id: &str) -> (Principal, Event) {
    (
        principal(id, Role::Operator),
        Event::InvitationAccepted {
            operator_id: id.into(),
        },
    )
}
fn created_from(session: &str) -> (Principal, Event) {
    (
        op1(),
        Event::ContactCreated {
            session_id: session.into(),
            name: "Jana Nováková".into(),
            phone: "+420 777 123 456".into(),
            email: "jana@example.com".into(),
        },
    )
}
fn session_linked(session: &str) -> (Principal, Event) {
    (
        op2(),
        Event::SessionLinked {
            session_id: session.into(),
        },
    )
}
fn detail_added(detail: ContactDetail, value: &str) -> (Principal, Event) {
    (
        op1(),
        Event::ContactDetailAdded {
            detail,
            value: value.into(),
        },
    )
}

/// `session/s1` opened and linked to `contact/c1`, which it created.
fn linked_session() -> Given {
    given(&[opened(), linked_to("c1")]).contact("c1", &[created_from("s1")])
}

fn add_detail(detail: ContactDetail, value: &str) -> Command {
    Command::AddContactDetail {
        detail,
        value: value.into(),
    }
}

fn set_info(name: Option<&str>, phone: Option<&str>, email: Option<&str>) -> Command {
    Command::SetClientInfo {
        name: name.map(Into::into),
        phone: phone.map(Into::into),
        email: email.map(Into::into),
    }
}

// ---- the contact stream itself ---------------------------------------------------------------

#[test]
fn contact_stream_folds_its_events() {
    let c1 = contact_stream("c1");
    // Given the whole life of a contact.
    let events = vec![
        created_from("s1"),
        (
            op1(),
            Event::ContactUpdated {
                name: Some("Jana Dvořáková".into()),
                phone: None,
                email: Some("jana@dvorak.cz".into()),
            },
        ),
        detail_added(ContactDetail::Phone, "+420 603 000 111"),
        session_linked("s2"),
        session_linked("s2"),
        session_linked("s3"),
        (
            op2(),
            Event::ContactDetailAdded {
                detail: ContactDetail::Identifier,
                value: "CRM-17".into(),
            },
        ),
        (
            op1(),
            Event::SessionUnlinked {
                session_id: "s2".into(),
            },
        ),
    ];
    // Then each step folds as the rules say.
    let c = contact_of(fold(&c1, &events[..1]));
    assert_eq!(c.status, ContactStatus::Active);
    assert_eq!(
        (c.name.as_str(), c.phone.as_str(), c.email.as_str()),
        ("Jana Nováková", "+420 777 123 456", "jana@example.com")
    );
    assert_eq!(c.sessions, vec!["s1".to_string()]);
    assert!(c.details.is_empty());

    let c = contact_of(fold(&c1, &events));
    assert_eq!(c.name, "Jana Dvořáková", "updated name");
    assert_eq!(c.phone, "+420 777 123 456", "absent field unchanged");
    assert_eq!(c.email, "jana@dvorak.cz");
    assert_eq!(
        c.details,
        vec![
            ContactDetailEntry {
                detail: ContactDetail::Phone,
                value: "+420 603 000 111".into(),
                added_by: "op1".into(),
                at: NOW + 3,
            },
            ContactDetailEntry {
                detail: ContactDetail::Identifier,
                value: "CRM-17".into(),
                added_by: "op2".into(),
                at: NOW + 7,
            },
        ]
    );
    assert_eq!(
        c.sessions,
        vec!["s1".to_string(), "s3".to_string()],
        "linked twice counts once; unlinked leaves"
    );

    // When removed: gone from the directory, no session linked.
    let mut all = events.clone();
    all.push((op1(), Event::ContactRemoved));
    let c = contact_of(fold(&c1, &all));
    assert_eq!(c.status, ContactStatus::Removed);
    assert!(c.sessions.is_empty());
}

#[test]
fn contact_fold_ignores_foreign_events() {
    let c1 = contact_stream("c1");
    let c = fold(&c1, &[created_from("s1"), (op1(), Event::SessionClosed)]);
    assert_eq!(c, fold(&c1, &[created_from("s1")]));
}

#[test]
fn every_role_reads_an_active_contact() {
    let c1 = contact_stream("c1");
    let active = fold(&c1, &[created_from("s1")]);
    for who in [op1(), op3(), sup(), admin(), svc()] {
        assert_eq!(domain::can_read(&c1, &active, &who), Ok(()), "{who:?}");
    }
}

#[test]
fn a_contact_never_created_or_removed_is_not_found() {
    let c1 = contact_stream("c1");
    let new = domain::initial(StreamKind::Contact);
    let removed = fold(&c1, &[created_from("s1"), (op1(), Event::ContactRemoved)]);
    for state in [new, removed] {
        for who in [op1(), admin(), svc()] {
            let e = domain::can_read(&c1, &state, &who).unwrap_err();
            assert_eq!(e.code, ErrorCode::NotFound, "{who:?}");
            assert_eq!(e.field, None);
        }
    }
}

#[test]
fn a_contact_stream_takes_no_command() {
    let c1 = contact_stream("c1");
    let state = fold(&c1, &[created_from("s1")]);
    let limits = Limits::default();
    let who = admin();
    let ctx = Ctx {
        principal: &who,
        stream: &c1,
        now: NOW,
        next_seq: 2,
        limits: &limits,
        world: &domain::EmptyWorld,
        fresh_id: FRESH,
    };
    for cmd in [
        Command::AddToDirectory {},
        Command::RemoveContact {},
        add_detail(ContactDetail::Email, "a@b.cz"),
    ] {
        let kind = cmd.kind();
        let e = invalid(domain::decide(&state, &ctx, &cmd), "kind");
        assert_eq!(
            e.message,
            format!("{kind} is not a command for contact streams")
        );
    }
}

// ---- add_to_directory ------------------------------------------------------------------------

#[test]
fn add_to_directory_creates_a_contact_from_the_client_info_and_links_it() {
    // Given an open session with client information.
    let g = given(&[opened()]);
    // When the owner adds the client to the directory.
    let d = accepted(when(&g, &op1(), Command::AddToDirectory {}));
    // Then the session links the fresh contact, which is created from the client info.
    assert_eq!(
        d.events,
        vec![Event::ContactLinked {
            contact_id: FRESH.into()
        }]
    );
    assert_eq!(
        d.others,
        vec![(
            contact_stream(FRESH),
            Event::ContactCreated {
                session_id: "s1".into(),
                name: "Jana Nováková".into(),
                phone: "+420 777 123 456".into(),
                email: "jana@example.com".into(),
            }
        )]
    );
    assert_eq!(d.created.as_deref(), Some(FRESH));
}

#[test]
fn add_to_directory_takes_the_latest_client_info() {
    let g = given(&[
        opened(),
        (
            op1(),
            Event::ClientInfoChanged {
                name: Some("Jana N.".into()),
                phone: Some(String::new()),
                email: None,
            },
        ),
    ]);
    let d = accepted(when(&g, &op1(), Command::AddToDirectory {}));
    assert_eq!(
        d.others[0].1,
        Event::ContactCreated {
            session_id: "s1".into(),
            name: "Jana N.".into(),
            phone: String::new(),
            email: "jana@example.com".into(),
        }
    );
}

#[test]
fn add_to_directory_is_refused_while_linked() {
    let g = linked_session();
    let e = invalid(when(&g, &op1(), Command::AddToDirectory {}), "kind");
    assert_eq!(e.message, "session is already linked to contact \"c1\"");
}

#[test]
fn writers_of_the_session_may_use_the_directory_and_others_may_not() {
    let g = given(&[opened(), invited("op2"), joined("op2"), invited("op3")]);
    // Then the owner, a joined collaborator, supervisors, admins and the platform may.
    for who in [op1(), op2(), sup(), admin(), svc()] {
        accepted(when(&g, &who, Command::AddToDirectory {}));
    }
    // An invited collaborator and an outsider may not: every command is refused alike.
    let outsider = principal("op9", Role::Operator);
    for who in [op3(), outsider] {
        forbidden(when(&g, &who, Command::AddToDirectory {}));
        forbidden(when(
            &g,
            &who,
            Command::LinkContact {
                contact_id: "c1".into(),
            },
        ));
    }
    let g = linked_session().contact("c1", &[created_from("s1")]);
    let outsider = principal("op9", Role::Operator);
    for cmd in [
        Command::DisconnectContact {},
        Command::RemoveContact {},
        add_detail(ContactDetail::Email, "x@y.cz"),
        set_info(Some("X"), None, None),
    ] {
        forbidden(when(&g, &outsider, cmd));
    }
}

#[test]
fn directory_commands_need_an_open_session() {
    // Given a session never opened: not_found; given a closed one: closed.
    let new = given(&[]);
    let closed = given(&[opened(), linked_to("c1"), (op1(), Event::SessionClosed)])
        .contact("c1", &[created_from("s1")]);
    let cmds = || {
        vec![
            Command::AddToDirectory {},
            Command::LinkContact {
                contact_id: "c1".into(),
            },
            Command::DisconnectContact {},
            add_detail(ContactDetail::Phone, "123 456"),
            Command::RemoveContact {},
        ]
    };
    for cmd in cmds() {
        not_found(when(&new, &admin(), cmd));
    }
    for cmd in cmds() {
        let e = rejected(when(&closed, &admin(), cmd), ErrorCode::Closed, None);
        assert_eq!(
            e.message,
            "session is closed; only parameters, tags and notes may change"
        );
    }
}

// ---- link_contact ----------------------------------------------------------------------------

#[test]
fn link_contact_links_an_existing_contact_on_both_sides() {
    // Given session s1 and contact c7 created from another session.
    let g = given(&[opened()]).contact("c7", &[created_from("s0")]);
    // When linked.
    let d = accepted(when(
        &g,
        &op1(),
        Command::LinkContact {
            contact_id: "c7".into(),
        },
    ));
    // Then both sides record the link, in one decision.
    assert_eq!(
        d.events,
        vec![Event::ContactLinked {
            contact_id: "c7".into()
        }]
    );
    assert_eq!(
        d.others,
        vec![(
            contact_stream("c7"),
            Event::SessionLinked {
                session_id: "s1".into()
            }
        )]
    );
    assert_eq!(d.created, None);
}

#[test]
fn link_contact_refusals() {
    let g = given(&[opened()])
        .contact("c7", &[created_from("s0")])
        .contact(
            "gone",
            &[created_from("s0"), (op1(), Event::ContactRemoved)],
        );
    let link = |id: &str| Command::LinkContact {
        contact_id: id.into(),
    };
    // A contact id that cannot name a stream.
    for bad in ["", "a b", "c/1", &"x".repeat(129)] {
        invalid(when(&g, &op1(), link(bad)), "contact_id");
    }
    // A contact never created, or removed.
    let e = not_found(when(&g, &op1(), link("c8")));
    assert_eq!(e.message, "contact \"c8\" does not exist");
    let e = not_found(when(&g, &op1(), link("gone")));
    assert_eq!(e.message, "contact \"gone\" does not exist");
    // Already linked (even to the same contact): disconnect first.
    let g = linked_session().contact("c7", &[created_from("s0")]);
    for id in ["c7", "c1"] {
        let e = invalid(when(&g, &op1(), link(id)), "contact_id");
        assert_eq!(
            e.message,
            "session is already linked to contact \"c1\"; disconnect it first"
        );
    }
}

// ---- disconnect_contact ----------------------------------------------------------------------

#[test]
fn disconnect_unlinks_both_sides_and_keeps_the_contact() {
    let g = linked_session();
    let d = accepted(when(&g, &op1(), Command::DisconnectContact {}));
    assert_eq!(
        d.events,
        vec![Event::ContactUnlinked {
            contact_id: "c1".into(),
            removed: false
        }]
    );
    assert_eq!(
        d.others,
        vec![(
            contact_stream("c1"),
            Event::SessionUnlinked {
                session_id: "s1".into()
            }
        )]
    );
}

#[test]
fn disconnect_needs_a_link() {
    let e = not_found(when(
        &given(&[opened()]),
        &op1(),
        Command::DisconnectContact {},
    ));
    assert_eq!(e.message, "session is not linked to a contact");
}

// ---- add_contact_detail ----------------------------------------------------------------------

#[test]
fn add_contact_detail_adds_to_the_contact_only() {
    // Given op2 joined s1, which is linked to c1.
    let g = given(&[opened(), invited("op2"), joined("op2"), linked_to("c1")])
        .contact("c1", &[created_from("s1")]);
    for (detail, value) in [
        (ContactDetail::Phone, "+420 (603) 000-111/2"),
        (ContactDetail::Email, "jana.novakova@firma.cz"),
        (ContactDetail::Identifier, "CRM 17 / Ω"),
    ] {
        let d = accepted(when(&g, &op2(), add_detail(detail, value)));
        // Then no session event (the ack's seq is the session's head) and one contact event.
        assert!(d.events.is_empty());
        assert_eq!(
            d.others,
            vec![(
                contact_stream("c1"),
                Event::ContactDetailAdded {
                    detail,
                    value: value.into()
                }
            )]
        );
    }
}

#[test]
fn add_contact_detail_accepts_what_the_contact_already_has() {
    // Given the contact already holds the email, as main email and as a detail.
    let g = given(&[opened(), linked_to("c1")]).contact(
        "c1",
        &[
            created_from("s1"),
            detail_added(ContactDetail::Email, "jana@example.com"),
        ],
    );
    let d = accepted(when(
        &g,
        &op1(),
        add_detail(ContactDetail::Email, "jana@example.com"),
    ));
    assert_eq!(d.others.len(), 1);
}

#[test]
fn add_contact_detail_checks_the_value_by_kind() {
    let g = linked_session();
    let when_detail = |detail, value: &str| when(&g, &op1(), add_detail(detail, value));
    // Phones have set_client_info's shape.
    for bad in ["12", "call me", "+420+777", "777\u{0}123"] {
        invalid(when_detail(ContactDetail::Phone, bad), "value");
    }
    // Emails too.
    for bad in ["jana", "jana@", "@x.cz", "a b@x.cz", "a@b@c.cz", "a@nodot"] {
        invalid(when_detail(ContactDetail::Email, bad), "value");
    }
    // Every kind needs a value.
    for detail in [
        ContactDetail::Phone,
        ContactDetail::Email,
        ContactDetail::Identifier,
    ] {
        let e = invalid(when_detail(detail, "  "), "value");
        assert!(e.message.ends_with("is empty"), "{e:?}");
    }
    // Identifiers: no control characters, at most 128 characters.
    invalid(when_detail(ContactDetail::Identifier, "a\tb"), "value");
    accepted(when_detail(ContactDetail::Identifier, &"é".repeat(128)));
    let e = too_large(
        when_detail(ContactDetail::Identifier, &"é".repeat(129)),
        "value",
    );
    assert_eq!(e.message, "identifier is 129 characters; the limit is 128");
    // Phones and emails: at most client_field_chars.
    let long_email = format!("{}@example.com", "a".repeat(250));
    let e = too_large(when_detail(ContactDetail::Email, &long_email), "value");
    assert_eq!(e.message, "email is 262 characters; the limit is 256");
    let limits = Limits {
        client_field_chars: 10,
        ..Limits::default()
    };
    too_large(
        when_limited(
            &g,
            &op1(),
            add_detail(ContactDetail::Phone, "+420 777 123"),
            &limits,
        ),
        "value",
    );
}

#[test]
fn a_contact_holds_at_most_fifty_details() {
    let mut contact = vec![created_from("s1")];
    for i in 0..49 {
        contact.push(detail_added(ContactDetail::Identifier, &format!("id-{i}")));
    }
    let g = given(&[opened(), linked_to("c1")]).contact("c1", &contact);
    accepted(when(
        &g,
        &op1(),
        add_detail(ContactDetail::Identifier, "50th"),
    ));
    contact.push(detail_added(ContactDetail::Identifier, "50th"));
    let g = given(&[opened(), linked_to("c1")]).contact("c1", &contact);
    let e = too_large(
        when(&g, &op1(), add_detail(ContactDetail::Identifier, "51st")),
        "value",
    );
    assert_eq!(e.message, "a contact holds at most 50 extra details");
}

#[test]
fn add_contact_detail_needs_a_linked_contact() {
    let e = not_found(when(
        &given(&[opened()]),
        &op1(),
        add_detail(ContactDetail::Phone, "777 123 456"),
    ));
    assert_eq!(e.message, "session is not linked to a contact");
    // Field errors come before the state: a bad value on an unlinked session is invalid.
    invalid(
        when(
            &given(&[opened()]),
            &op1(),
            add_detail(ContactDetail::Phone, "x"),
        ),
        "value",
    );
}

// ---- remove_contact --------------------------------------------------------------------------

#[test]
fn remove_contact_unlinks_every_linked_session_in_one_decision() {
    // Given contact c1 linked to s1 (this one), s2 and s3.
    let g = given(&[opened(), linked_to("c1")]).contact(
        "c1",
        &[
            created_from("s1"),
            session_linked("s2"),
            session_linked("s3"),
        ],
    );
    // When removed from s1.
    let d = accepted(when(&g, &op1(), Command::RemoveContact {}));
    // Then s1 unlinks as its own event, the contact is removed and s2, s3 are unlinked.
    let unlinked = Event::ContactUnlinked {
        contact_id: "c1".into(),
        removed: true,
    };
    assert_eq!(d.events, vec![unlinked.clone()]);
    assert_eq!(
        d.others,
        vec![
            (contact_stream("c1"), Event::ContactRemoved),
            (session_stream("s2"), unlinked.clone()),
            (session_stream("s3"), unlinked.clone()),
        ]
    );
    // And applied, each session ends unlinked and the contact removed.
    let c = contact_of(fold(
        &contact_stream("c1"),
        &[created_from("s1"), (op1(), Event::ContactRemoved)],
    ));
    assert_eq!(c.status, ContactStatus::Removed);
    let s2 = session_of(fold(
        &session_stream("s2"),
        &[opened(), linked_to("c1"), (op1(), unlinked)],
    ));
    assert_eq!(s2.contact_id, None);
}

#[test]
fn remove_contact_refusals() {
    let e = not_found(when(&given(&[opened()]), &op1(), Command::RemoveContact {}));
    assert_eq!(e.message, "session is not linked to a contact");
    // A link to a contact the writer found no trace of.
    let g = given(&[opened(), linked_to("c1")]);
    let e = not_found(when(&g, &op1(), Command::RemoveContact {}));
    assert_eq!(e.message, "contact \"c1\" does not exist");
}

// ---- set_client_info while linked ------------------------------------------------------------

#[test]
fn set_client_info_while_linked_updates_the_contact_with_what_differs() {
    let g = linked_session();
    // When the name and email change.
    let d = accepted(when(
        &g,
        &op1(),
        set_info(
            Some("Jana Dvořáková"),
            Some("+420 777 123 456"),
            Some("j@d.cz"),
        ),
    ));
    // Then the session records the real changes and the contact follows in the same decision.
    assert_eq!(
        d.events,
        vec![Event::ClientInfoChanged {
            name: Some("Jana Dvořáková".into()),
            phone: None,
            email: Some("j@d.cz".into()),
        }]
    );
    assert_eq!(
        d.others,
        vec![(
            contact_stream("c1"),
            Event::ContactUpdated {
                name: Some("Jana Dvořáková".into()),
                phone: None,
                email: Some("j@d.cz".into()),
            }
        )]
    );
}

#[test]
fn set_client_info_updates_only_contact_fields_that_differ() {
    // Given s1 linked to a contact whose name is already the new one (set from another session).
    let g = given(&[opened(), linked_to("c1")]).contact(
        "c1",
        &[
            created_from("s0"),
            (
                op2(),
                Event::ContactUpdated {
                    name: Some("Jana D.".into()),
                    phone: None,
                    email: None,
                },
            ),
        ],
    );
    let d = accepted(when(
        &g,
        &op1(),
        set_info(Some("Jana D."), Some("123 456"), None),
    ));
    assert_eq!(
        d.others,
        vec![(
            contact_stream("c1"),
            Event::ContactUpdated {
                name: None,
                phone: Some("123 456".into()),
                email: None,
            }
        )]
    );
    // When only the name changes and the contact already has it: no contact event.
    let d = accepted(when(&g, &op1(), set_info(Some("Jana D."), None, None)));
    assert_eq!(d.events.len(), 1);
    assert!(d.others.is_empty());
}

#[test]
fn set_client_info_unlinked_or_unchanged_touches_no_contact() {
    let d = accepted(when(
        &given(&[opened()]),
        &op1(),
        set_info(Some("Other"), None, None),
    ));
    assert_eq!(d.events.len(), 1);
    assert!(d.others.is_empty());
    // Nothing changes on the session: an accepted no-op, also for the contact.
    let d = accepted(when(
        &linked_session(),
        &op1(),
        set_info(Some("Jana Nováková"), None, None),
    ));
    assert_eq!(d, Decision::default());
    // Field errors stay as they were.
    invalid(
        when(&linked_session(), &op1(), set_info(None, Some("x"), None)),
        "phone",
    );
}

// ---- a whole story, replayed ------------------------------------------------------------------

#[test]
fn decisions_replay_into_consistent_session_and_contact_states() {
    // Apply each decision to a shared world, as the writer would, and check both sides agree.
    let mut streams: HashMap<StreamName, (u64, StreamState)> = HashMap::new();
    let s1 = session_stream("s1");
    let s2 = session_stream("s2");
    let append = |streams: &mut HashMap<StreamName, (u64, StreamState)>,
                  stream: &StreamName,
                  who: &Principal,
                  event: &Event| {
        let entry = streams
            .entry(stream.clone())
            .or_insert_with(|| (0, domain::initial(stream.kind())));
        entry.0 += 1;
        domain::apply(&mut entry.1, &envelope(stream, entry.0, who, event));
    };
    for s in [&s1, &s2] {
        append(&mut streams, s, &svc(), &opened().1);
    }
    let run = |streams: &mut HashMap<StreamName, (u64, StreamState)>,
               stream: &StreamName,
               who: &Principal,
               cmd: Command|
     -> Decision {
        let world = Streams(
            streams
                .iter()
                .map(|(k, (_, v))| (k.clone(), v.clone()))
                .collect(),
        );
        let (head, state) = streams[stream].clone();
        let limits = Limits::default();
        let ctx = Ctx {
            principal: who,
            stream,
            now: NOW,
            next_seq: head + 1,
            limits: &limits,
            world: &world,
            fresh_id: FRESH,
        };
        let d = accepted(domain::decide(&state, &ctx, &cmd));
        for e in &d.events {
            append(streams, stream, who, e);
        }
        for (other, e) in &d.others {
            append(streams, other, who, e);
        }
        d
    };
    let c = contact_stream(FRESH);
    run(&mut streams, &s1, &op1(), Command::AddToDirectory {});
    run(
        &mut streams,
        &s2,
        &op1(),
        Command::LinkContact {
            contact_id: FRESH.into(),
        },
    );
    run(
        &mut streams,
        &s2,
        &op1(),
        set_info(Some("Jana X"), None, None),
    );
    run(
        &mut streams,
        &s1,
        &op1(),
        add_detail(ContactDetail::Identifier, "VIP-1"),
    );
    let contact = contact_of(streams[&c].1.clone());
    assert_eq!(contact.status, ContactStatus::Active);
    assert_eq!(contact.name, "Jana X");
    assert_eq!(contact.sessions, vec!["s1".to_string(), "s2".to_string()]);
    assert_eq!(contact.details.len(), 1);
    assert_eq!(streams[&c].0, 4, "created, linked, updated, detail");

    run(&mut streams, &s2, &op1(), Command::RemoveContact {});
    let contact = contact_of(streams[&c].1.clone());
    assert_eq!(contact.status, ContactStatus::Removed);
    for s in [&s1, &s2] {
        assert_eq!(session_of(streams[s].1.clone()).contact_id, None, "{s}");
    }
    // And the removed contact cannot be linked again.
    let world = Streams(
        streams
            .iter()
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect(),
    );
    let g = Given {
        session: session_of(streams[&s1].1.clone()),
        head: streams[&s1].0,
        world,
    };
    not_found(when(
        &g,
        &op1(),
        Command::LinkContact {
            contact_id: FRESH.into(),
        },
    ));
}
