//! The operator feed domain, given / when / then, and how session commands feed it.

use copanel::domain::{self, Ctx, Decision, Limits, Principal, Rejection};
use copanel_protocol::event::InvitationOutcome;
use copanel_protocol::{
    Command, Envelope, ErrorCode, Event, Invitation, MessageFrom, OperatorState, Owner, Role,
    StreamKind, StreamName, StreamState,
};
use std::collections::BTreeMap;

#[path = "common/given.rs"]
mod given;
use given::*;

const NOW: u64 = 1_700_000_000_000;

fn feed(id: &str) -> StreamName {
    StreamName::operator(id).unwrap()
}

fn envelope(stream: &StreamName, seq: u64, who: &Principal, event: Event) -> Envelope {
    Envelope {
        stream: stream.clone(),
        seq,
        at: NOW + seq,
        actor: who.actor(),
        command_id: None,
        event,
    }
}

/// Folds events into op2's feed; event `i` is appended at `NOW + i`.
fn given(events: &[Event]) -> OperatorState {
    let stream = feed("op2");
    let mut state = domain::initial(StreamKind::Operator);
    for (i, event) in events.iter().enumerate() {
        domain::apply(
            &mut state,
            &envelope(&stream, i as u64 + 1, &op("op1"), event.clone()),
        );
    }
    match state {
        StreamState::Operator(s) => s,
        other => panic!("not an operator state: {other:?}"),
    }
}

fn when(s: &OperatorState, who: &Principal, cmd: &Command) -> Result<Decision, Rejection> {
    let stream = feed("op2");
    let limits = Limits::default();
    let ctx = Ctx {
        principal: who,
        stream: &stream,
        now: NOW,
        next_seq: 1,
        limits: &limits,
        world: &copanel::domain::EmptyWorld,
        fresh_id: "fresh",
    };
    domain::decide(&StreamState::Operator(s.clone()), &ctx, cmd)
}

fn received(session: &str, by: &str) -> Event {
    Event::InvitationReceived {
        session_id: session.into(),
        by: by.into(),
    }
}
fn ended(session: &str, outcome: InvitationOutcome) -> Event {
    Event::InvitationEnded {
        session_id: session.into(),
        outcome,
    }
}
fn pending(session: &str, by: &str, at: u64) -> Invitation {
    Invitation {
        session_id: session.into(),
        by: by.into(),
        at,
    }
}

#[test]
fn an_invitation_is_pending_until_it_ends() {
    let s = given(&[received("s1", "op1"), received("s2", "op3")]);
    assert_eq!(
        s.invitations,
        vec![pending("s1", "op1", NOW + 1), pending("s2", "op3", NOW + 2)]
    );
    for outcome in [
        InvitationOutcome::Accepted,
        InvitationOutcome::Declined,
        InvitationOutcome::Cancelled,
    ] {
        let s = given(&[
            received("s1", "op1"),
            received("s2", "op3"),
            ended("s1", outcome),
        ]);
        assert_eq!(s.invitations, vec![pending("s2", "op3", NOW + 2)]);
    }
}

#[test]
fn a_repeated_invitation_replaces_the_pending_one() {
    let s = given(&[
        received("s1", "op1"),
        received("s2", "op3"),
        received("s1", "op4"),
    ]);
    assert_eq!(
        s.invitations,
        vec![pending("s2", "op3", NOW + 2), pending("s1", "op4", NOW + 3)]
    );
}

#[test]
fn events_that_do_not_fit_are_ignored() {
    let s = given(&[
        received("s1", "op1"),
        ended("s9", InvitationOutcome::Declined),
        Event::SessionClosed,
        Event::NoteAdded {
            note_id: "n1".into(),
            text: "x".into(),
        },
    ]);
    assert_eq!(s.invitations, vec![pending("s1", "op1", NOW + 1)]);
}

#[test]
fn no_client_command_targets_a_feed() {
    let s = given(&[received("s1", "op1")]);
    let commands = [
        Command::AddTag { tag: "vip".into() },
        Command::AcceptInvitation {},
        Command::PostMessage {
            from: MessageFrom::Operator,
            text: Some("hi".into()),
            template_id: None,
        },
        Command::OpenSession {
            channel: "chat".into(),
            client: Default::default(),
            parameters: BTreeMap::new(),
            owner: Owner::Operator {
                operator_id: "op2".into(),
            },
        },
    ];
    for cmd in &commands {
        for who in [op("op2"), svc()] {
            let e = when(&s, &who, cmd).unwrap_err();
            assert_eq!(e.code, ErrorCode::Invalid);
            assert_eq!(e.field.as_deref(), Some("command.kind"));
            assert_eq!(
                e.message,
                format!("{} is not a command for operator streams", cmd.kind())
            );
        }
    }
}

#[test]
fn a_feed_is_read_by_its_operator_and_the_platform_only() {
    let s = StreamState::Operator(given(&[received("s1", "op1")]));
    let read = |who: &Principal| domain::can_read(&feed("op2"), &s, who);
    assert_eq!(read(&op("op2")), Ok(()));
    assert_eq!(read(&svc()), Ok(()));
    // A supervisor who happens to be op2 reads its own feed.
    assert_eq!(read(&principal("op2", Role::Supervisor)), Ok(()));
    for who in [
        op("op1"),
        principal("sup", Role::Supervisor),
        principal("adm", Role::Admin),
    ] {
        let e = read(&who).unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden, "{who:?}");
        assert_eq!(e.message, "operator/op2 is another operator's feed");
    }
}

/// A session and the operator feeds its commands write to.
struct World {
    session: StreamName,
    state: StreamState,
    head: u64,
    feeds: BTreeMap<StreamName, (u64, StreamState)>,
}

impl World {
    fn new() -> Self {
        World {
            session: StreamName::session("s1").unwrap(),
            state: domain::initial(StreamKind::Session),
            head: 0,
            feeds: BTreeMap::new(),
        }
    }

    /// Decides and appends, the way the writer does: own events, then side events.
    fn run(&mut self, who: &Principal, cmd: Command) {
        let limits = Limits::default();
        let ctx = Ctx {
            principal: who,
            stream: &self.session,
            now: NOW,
            next_seq: self.head + 1,
            limits: &limits,
            world: &copanel::domain::EmptyWorld,
            fresh_id: "fresh",
        };
        let d =
            domain::decide(&self.state, &ctx, &cmd).unwrap_or_else(|e| panic!("{cmd:?}: {e:?}"));
        for event in d.events {
            self.head += 1;
            let env = envelope(&self.session, self.head, who, event);
            domain::apply(&mut self.state, &env);
        }
        for (stream, event) in d.others {
            let (head, f) = self
                .feeds
                .entry(stream.clone())
                .or_insert_with(|| (0, domain::initial(StreamKind::Operator)));
            *head += 1;
            domain::apply(f, &envelope(&stream, *head, who, event));
        }
    }

    fn pending(&self, id: &str) -> Vec<(String, String)> {
        match self.feeds.get(&feed(id)) {
            Some((_, StreamState::Operator(s))) => s
                .invitations
                .iter()
                .map(|i| (i.session_id.clone(), i.by.clone()))
                .collect(),
            Some(other) => panic!("{other:?}"),
            None => Vec::new(),
        }
    }
}

fn invite(id: &str) -> Command {
    Command::InviteCollaborator {
        operator_id: id.into(),
    }
}

/// The whole round: session commands write to the invitee's feed, and the feed folds them.
#[test]
fn session_commands_drive_the_invitees_feed() {
    let mut w = World::new();
    w.run(
        &svc(),
        Command::OpenSession {
            channel: "chat".into(),
            client: Default::default(),
            parameters: BTreeMap::new(),
            owner: Owner::Operator {
                operator_id: "op1".into(),
            },
        },
    );
    for id in ["op2", "op3", "op4"] {
        w.run(&op("op1"), invite(id));
    }
    for id in ["op2", "op3", "op4"] {
        assert_eq!(w.pending(id), vec![("s1".to_string(), "op1".to_string())]);
    }
    w.run(&op("op2"), Command::AcceptInvitation {});
    w.run(&op("op3"), Command::DeclineInvitation {});
    w.run(
        &op("op1"),
        Command::CancelInvitation {
            operator_id: "op4".into(),
        },
    );
    for id in ["op2", "op3", "op4"] {
        assert_eq!(w.pending(id), Vec::new(), "{id}");
    }
    // The declined one may be invited again, by a joined collaborator this time.
    w.run(&op("op2"), invite("op3"));
    assert_eq!(
        w.pending("op3"),
        vec![("s1".to_string(), "op2".to_string())]
    );
    // Removing a still-invited collaborator clears its feed too.
    w.run(&op("op1"), invite("op5"));
    assert_eq!(w.pending("op5").len(), 1);
    w.run(
        &op("op1"),
        Command::RemoveCollaborator {
            operator_id: "op5".into(),
        },
    );
    assert_eq!(w.pending("op5"), Vec::new());
    // So does closing the session.
    w.run(&op("op1"), Command::CloseSession {});
    assert_eq!(w.pending("op3"), Vec::new());
    assert_eq!(w.feeds.len(), 4);
}
