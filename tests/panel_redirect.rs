//! Redirect, claim and the sessions list over real sockets with several operators: a redirect
//! with a note reaches the receiver's feed live and moves write access; the previous owner's
//! live subscription ends; a group redirect reaches the members the roster knows; a member
//! claims; `query sessions` lists each operator's sessions with its role.
//!
//! Every test ends with a graceful `stop`: dropping a sled store with unflushed writes while
//! another test's store writes can deadlock on sled's process-wide lock.

mod support;

use copanel_protocol::{
    Encoding, Event, Owner, Role, ServerFrame, SessionStatus, SessionSummary, StreamState,
};
use serde_json::json;
use support::*;

// ---- helpers ---------------------------------------------------------------------------------

/// `query sessions {status}` → (session id, role) pairs, asserting a result.
async fn sessions(c: &mut Client, status: Option<&str>) -> Vec<(String, String)> {
    summaries(c, status)
        .await
        .into_iter()
        .map(|s| (s.session_id, s.role))
        .collect()
}

async fn summaries(c: &mut Client, status: Option<&str>) -> Vec<SessionSummary> {
    let mut f = json!({"what": "sessions"});
    if let Some(s) = status {
        f["status"] = json!(s);
    }
    match query(c, f).await {
        ServerFrame::Result {
            sessions: Some(list),
            ..
        } => list,
        other => panic!("expected sessions, got {other:?}"),
    }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// An operator of `acme` in `groups`.
async fn member(server: &TestServer, sub: &str, groups: &[&str]) -> Client {
    let token = server.token_for("acme", sub, Role::Operator, groups);
    server.connect(&token, Encoding::Json).await
}

/// Opens `session/<id>` as the platform, waiting in `group`.
async fn opened_in(server: &TestServer, id: &str, group: &str) {
    let mut svc = server.client("platform", Role::Service).await;
    let mut cmd = open_session("x");
    cmd["owner"] = json!({ "group": group });
    let f = svc
        .command(&format!("session/{id}"), &format!("open-{id}"), cmd)
        .await;
    assert_eq!(ack_seq(&f), 1, "open_session acked at seq 1");
}

/// The next event on a feed (skipping acks/pongs).
async fn next_event(c: &mut Client) -> copanel_protocol::Envelope {
    c.recv_events(1).await.remove(0)
}

// ---- redirect to an operator -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_with_a_note_hands_the_session_over_live() {
    let server = TestServer::start().await;
    opened(&server, "s1", "op1").await;
    // op1 watches the panel on one connection and acts on another, so the watcher sees every
    // frame that reaches it.
    let mut watcher = server.client("op1", Role::Operator).await;
    watcher.subscribe_snapshot("session/s1").await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let mut op2 = server.client("op2", Role::Operator).await;
    op2.subscribe_snapshot("operator/op2").await;
    // Before the redirect op2 is an outsider.
    let f = op2.subscribe("session/s1", None).await;
    assert_eq!(error_code(&f), "forbidden");

    let f = op1
        .command(
            "session/s1",
            "r1",
            json!({"kind": "redirect", "operator_id": "op2", "note": "VIP – call back at 3"}),
        )
        .await;
    match &f {
        ServerFrame::Ack { seq, created, .. } => {
            assert_eq!(*seq, 3, "note_added at 2, session_redirected at 3");
            assert_eq!(created.as_deref(), Some("n2"));
        }
        other => panic!("expected ack, got {other:?}"),
    }

    // op2's feed: the assignment, live, with the note and who sent it.
    let e = next_event(&mut op2).await;
    assert_eq!(e.stream.as_str(), "operator/op2");
    assert_eq!(e.actor.id, "op1");
    assert_eq!(
        e.event,
        Event::AssignmentReceived {
            session_id: "s1".into(),
            by: "op1".into(),
            note: Some("VIP – call back at 3".into()),
            group: None,
        }
    );

    // op1's watcher: both events, then the end of its subscription.
    let events = watcher.recv_events(2).await;
    assert_eq!(seqs(&events), vec![2, 3]);
    assert!(matches!(events[0].event, Event::NoteAdded { .. }));
    assert_eq!(
        events[1].event,
        Event::SessionRedirected {
            to: Owner::Operator {
                operator_id: "op2".into()
            },
            note_id: Some("n2".into()),
        }
    );
    let (code, _, message) = error_parts(&watcher.recv().await);
    assert_eq!(code, "forbidden");
    assert!(message.contains("withdrawn"), "{message}");
    // Nothing more reaches it, whatever happens on the session.
    let f = op2
        .command("session/s1", "t1", json!({"kind": "add_tag", "tag": "vip"}))
        .await;
    ack_seq(&f);
    watcher.assert_quiet().await;

    // op2 now reads and writes; op1 does neither.
    let (_, _, state) = op2.subscribe_snapshot("session/s1").await;
    let s = session(&state);
    assert_eq!(
        s.owner,
        Some(Owner::Operator {
            operator_id: "op2".into()
        })
    );
    assert_eq!(s.notes.len(), 1);
    assert_eq!(s.notes[0].author, "op1");
    assert_eq!(s.notes[0].text, "VIP – call back at 3");
    let f = op1
        .command(
            "session/s1",
            "n1",
            json!({"kind": "add_note", "text": "hi"}),
        )
        .await;
    assert_eq!(error_code(&f), "forbidden");
    let f = op1.subscribe("session/s1", None).await;
    assert_eq!(error_code(&f), "forbidden");
    // Redirecting back to op2 itself is refused, naming the field.
    let f = op2
        .command(
            "session/s1",
            "r2",
            json!({"kind": "redirect", "operator_id": "op2"}),
        )
        .await;
    let (code, field, _) = error_parts(&f);
    assert_eq!(code, "invalid");
    assert_eq!(field.as_deref(), Some("command.operator_id"));
    // A retry of op1's redirect (same command_id) does not get the old ack: access is
    // checked before idempotency, and op1 no longer reads the session.
    let f = op1
        .command(
            "session/s1",
            "r1",
            json!({"kind": "redirect", "operator_id": "op2", "note": "VIP – call back at 3"}),
        )
        .await;
    assert_eq!(error_code(&f), "forbidden");
    server.stop().await;
}

// ---- redirect to a group and claim -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_redirect_reaches_known_members_and_one_claims() {
    let server = TestServer::start().await;
    opened(&server, "s1", "op1").await;
    // Members connect before the redirect, so the roster knows their groups. Each watches its
    // feed on the connection below; commands go through other connections, whose replies
    // would otherwise make the helpers skip the events.
    let mut op3 = member(&server, "op3", &["billing"]).await;
    let mut op4 = member(&server, "op4", &["billing", "sales"]).await;
    let mut op5 = member(&server, "op5", &["sales"]).await;
    let mut op1 = server.client("op1", Role::Operator).await;
    for (c, feed) in [
        (&mut op3, "operator/op3"),
        (&mut op4, "operator/op4"),
        (&mut op5, "operator/op5"),
        (&mut op1, "operator/op1"),
    ] {
        c.subscribe_snapshot(feed).await;
    }
    let mut op1_cmd = server.client("op1", Role::Operator).await;
    let f = op1_cmd
        .command(
            "session/s1",
            "r1",
            json!({"kind": "redirect", "group": "billing", "note": "invoice dispute"}),
        )
        .await;
    ack_seq(&f);
    for c in [&mut op3, &mut op4] {
        let e = next_event(c).await;
        assert_eq!(
            e.event,
            Event::AssignmentReceived {
                session_id: "s1".into(),
                by: "op1".into(),
                note: Some("invoice dispute".into()),
                group: Some("billing".into()),
            }
        );
    }
    // op1's own feed: the session left it; op5 (sales) hears nothing.
    let e = next_event(&mut op1).await;
    assert_eq!(
        e.event,
        Event::AssignmentEnded {
            session_id: "s1".into()
        }
    );
    op5.assert_quiet().await;

    // Members read the waiting session but may not edit it before claiming.
    let (_, _, state) = op4.subscribe_snapshot("session/s1").await;
    assert_eq!(
        session(&state).owner,
        Some(Owner::Group {
            group: "billing".into()
        })
    );
    let mut op4_cmd = member(&server, "op4", &["billing", "sales"]).await;
    let f = op4_cmd
        .command("session/s1", "t1", json!({"kind": "add_tag", "tag": "x"}))
        .await;
    assert_eq!(error_code(&f), "forbidden");
    let f = op5
        .command("session/s1", "c0", json!({"kind": "claim"}))
        .await;
    assert_eq!(error_code(&f), "forbidden");
    let mut op3_cmd = member(&server, "op3", &["billing"]).await;
    assert_eq!(
        sessions(&mut op3_cmd, None).await,
        pairs(&[("s1", "group")])
    );
    assert_eq!(
        sessions(&mut op4_cmd, None).await,
        pairs(&[("s1", "group")])
    );
    assert_eq!(sessions(&mut op1_cmd, None).await, Vec::new());

    // op3 claims: every member's feed drops the assignment; the session is op3's.
    let f = op3_cmd
        .command("session/s1", "c1", json!({"kind": "claim"}))
        .await;
    ack_seq(&f);
    let ended = Event::AssignmentEnded {
        session_id: "s1".into(),
    };
    assert_eq!(next_event(&mut op3).await.event, ended);
    // op4 sees the claim on the panel, its subscription end, and the end on its feed.
    let (mut claimed, mut revoked, mut feed_ended) = (false, false, false);
    while !(claimed && revoked && feed_ended) {
        match op4.recv().await {
            ServerFrame::Event(e) if e.stream.as_str() == "session/s1" => {
                assert_eq!(
                    e.event,
                    Event::SessionClaimed {
                        operator_id: "op3".into()
                    }
                );
                claimed = true;
            }
            ServerFrame::Event(e) => {
                assert_eq!(e.stream.as_str(), "operator/op4");
                assert_eq!(e.event, ended);
                feed_ended = true;
            }
            f => {
                assert_eq!(error_code(&f), "forbidden", "{f:?}");
                revoked = true;
            }
        }
    }
    let f = op4_cmd
        .command("session/s1", "c2", json!({"kind": "claim"}))
        .await;
    assert_eq!(error_code(&f), "forbidden");
    let f = op3_cmd
        .command("session/s1", "t2", json!({"kind": "add_tag", "tag": "vip"}))
        .await;
    ack_seq(&f);
    assert_eq!(
        sessions(&mut op3_cmd, None).await,
        pairs(&[("s1", "owner")])
    );
    assert_eq!(sessions(&mut op4_cmd, None).await, Vec::new());
    // Both feeds are empty again.
    for (c, feed) in [(&mut op3, "operator/op3"), (&mut op4, "operator/op4")] {
        match c.subscribe_snapshot(feed).await.2 {
            StreamState::Operator(s) => assert!(s.assignments.is_empty(), "{feed}: {s:?}"),
            other => panic!("expected a feed, got {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_waiting_session_clears_the_members_feeds() {
    let server = TestServer::start().await;
    let mut op3 = member(&server, "op3", &["billing"]).await;
    op3.subscribe_snapshot("operator/op3").await;
    opened_in(&server, "s9", "billing").await;
    let mut sup = server.client("sup", Role::Supervisor).await;
    let f = sup
        .command(
            "session/s9",
            "r",
            json!({"kind": "redirect", "group": "billing2"}),
        )
        .await;
    ack_seq(&f);
    // Opened in billing: the known member is told; redirected away: ended.
    let e = next_event(&mut op3).await;
    assert_eq!(
        e.event,
        Event::AssignmentReceived {
            session_id: "s9".into(),
            by: "platform".into(),
            note: None,
            group: Some("billing".into()),
        }
    );
    let e = next_event(&mut op3).await;
    assert_eq!(
        e.event,
        Event::AssignmentEnded {
            session_id: "s9".into()
        }
    );
    let f = sup
        .command(
            "session/s9",
            "r2",
            json!({"kind": "redirect", "group": "billing"}),
        )
        .await;
    ack_seq(&f);
    let e = next_event(&mut op3).await;
    assert!(matches!(e.event, Event::AssignmentReceived { .. }), "{e:?}");
    let f = sup
        .command("session/s9", "close", json!({"kind": "close_session"}))
        .await;
    ack_seq(&f);
    let e = next_event(&mut op3).await;
    assert_eq!(
        e.event,
        Event::AssignmentEnded {
            session_id: "s9".into()
        }
    );
    // The closed session is listed under `closed`, not `open`.
    assert_eq!(sessions(&mut op3, None).await, Vec::new());
    assert_eq!(
        sessions(&mut op3, Some("closed")).await,
        pairs(&[("s9", "group")])
    );
    server.stop().await;
}

// ---- the sessions list -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_sessions_lists_each_operators_sessions_with_its_role() {
    let server = TestServer::start().await;
    for id in ["s1", "s2", "s3"] {
        opened(&server, id, "op1").await;
    }
    opened_in(&server, "s4", "billing").await;
    opened(&server, "s5", "op2").await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let mut op2 = member(&server, "op2", &["billing"]).await;
    let mut op3 = server.client("op3", Role::Operator).await;
    // s1: op2 joined; s2: op2 invited; s3: closed; s1's client renamed.
    for (sid, cid, cmd) in [
        (
            "s1",
            "i1",
            json!({"kind": "invite_collaborator", "operator_id": "op2"}),
        ),
        (
            "s2",
            "i2",
            json!({"kind": "invite_collaborator", "operator_id": "op2"}),
        ),
        (
            "s2",
            "i3",
            json!({"kind": "invite_collaborator", "operator_id": "op3"}),
        ),
        ("s3", "c3", json!({"kind": "close_session"})),
        (
            "s1",
            "n1",
            json!({"kind": "set_client_info", "name": "Petr Svoboda"}),
        ),
    ] {
        ack_seq(&op1.command(&format!("session/{sid}"), cid, cmd).await);
    }
    ack_seq(
        &op2.command("session/s1", "a1", json!({"kind": "accept_invitation"}))
            .await,
    );
    ack_seq(
        &op3.command("session/s2", "d1", json!({"kind": "decline_invitation"}))
            .await,
    );

    assert_eq!(
        sessions(&mut op1, None).await,
        pairs(&[("s1", "owner"), ("s2", "owner")])
    );
    assert_eq!(
        sessions(&mut op1, Some("closed")).await,
        pairs(&[("s3", "owner")])
    );
    assert_eq!(
        sessions(&mut op2, Some("open")).await,
        pairs(&[
            ("s1", "collaborator"),
            ("s2", "invited"),
            ("s4", "group"),
            ("s5", "owner")
        ])
    );
    // op3 declined its only invitation.
    assert_eq!(sessions(&mut op3, None).await, Vec::new());
    // A supervisor sees every session of the company.
    let mut sup = server.client("sup", Role::Supervisor).await;
    let all = summaries(&mut sup, None).await;
    assert_eq!(
        all.iter()
            .map(|s| s.session_id.as_str())
            .collect::<Vec<_>>(),
        vec!["s1", "s2", "s4", "s5"]
    );
    assert!(all.iter().all(|s| s.role == "supervisor"));
    // The summary carries what the list shows.
    let s1 = &all[0];
    assert_eq!(s1.status, SessionStatus::Open);
    assert_eq!(s1.channel, "chat");
    assert_eq!(s1.client_name, "Petr Svoboda");
    assert_eq!(
        s1.owner,
        Some(Owner::Operator {
            operator_id: "op1".into()
        })
    );
    assert_eq!(
        all[2].owner,
        Some(Owner::Group {
            group: "billing".into()
        })
    );
    // Leaving drops a session from the collaborator's list.
    ack_seq(
        &op2.command("session/s1", "l1", json!({"kind": "leave"}))
            .await,
    );
    assert_eq!(
        sessions(&mut op2, None).await,
        pairs(&[("s2", "invited"), ("s4", "group"), ("s5", "owner")])
    );
    // Another company's supervisor sees none of it.
    let mut other = server
        .client_of("globex", "sup", Role::Supervisor, Encoding::Msgpack)
        .await;
    assert_eq!(sessions(&mut other, None).await, Vec::new());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_list_survives_a_restart() {
    let server = TestServer::start().await;
    opened(&server, "s1", "op1").await;
    opened(&server, "s2", "op1").await;
    let mut op1 = server.client("op1", Role::Operator).await;
    ack_seq(
        &op1.command(
            "session/s2",
            "r",
            json!({"kind": "redirect", "operator_id": "op2"}),
        )
        .await,
    );
    drop(op1);
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let mut op2 = server.client("op2", Role::Operator).await;
    assert_eq!(sessions(&mut op1, None).await, pairs(&[("s1", "owner")]));
    assert_eq!(sessions(&mut op2, None).await, pairs(&[("s2", "owner")]));
    // Later events build on the stored summary, not on an empty one.
    ack_seq(
        &op2.command("session/s2", "c", json!({"kind": "close_session"}))
            .await,
    );
    assert_eq!(
        sessions(&mut op2, Some("closed")).await,
        pairs(&[("s2", "owner")])
    );
    let all = summaries(&mut op2, Some("closed")).await;
    assert_eq!(all[0].client_name, "Jana Nováková", "name kept from open");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_sessions_refuses_an_unknown_status() {
    let server = TestServer::start().await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let f = query(&mut op1, json!({"what": "sessions", "status": "pending"})).await;
    let (code, field, message) = error_parts(&f);
    assert_eq!(code, "invalid");
    assert_eq!(field.as_deref(), Some("status"));
    assert!(message.contains("\"pending\""), "{message}");
    // The connection goes on.
    op1.ping().await;
    server.stop().await;
}
