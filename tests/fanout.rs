//! Fan-out: everyone subscribed to a stream receives the same events in the same order, in
//! either encoding; invitations reach the invitee's feed in the same atomic append; a snapshot
//! subscription starts from a state that reflects every prior event.

mod support;

use copanel_protocol::{
    CollaboratorStatus, Encoding, Envelope, Event, ParameterSource, Role, ServerFrame,
    SessionStatus, StreamState,
};
use serde_json::json;
use support::*;

const S: &str = "session/fan";

/// Given session `fan` owned by op1 with op2 invited and joined, subscribers op1 (JSON), op2
/// (MessagePack), sup1 (JSON) and the platform (MessagePack).
async fn four_subscribers(server: &TestServer) -> (Client, Vec<Client>) {
    opened(server, "fan", "op1").await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let f = op1
        .command(
            S,
            "inv-op2",
            json!({"kind": "invite_collaborator", "operator_id": "op2"}),
        )
        .await;
    assert_eq!(ack_seq(&f), 2);
    let mut op2 = server
        .connect(&server.token("op2", Role::Operator), Encoding::Msgpack)
        .await;
    let f = op2
        .command(S, "acc-op2", json!({"kind": "accept_invitation"}))
        .await;
    assert_eq!(ack_seq(&f), 3);
    let sup1 = server.client("sup1", Role::Supervisor).await;
    let svc = server
        .connect(&server.token("platform", Role::Service), Encoding::Msgpack)
        .await;
    let writer = server.client("op1", Role::Operator).await;
    let mut subs = vec![op1, op2, sup1, svc];
    for c in &mut subs {
        let (head, _, _) = c.subscribe_snapshot(S).await;
        assert_eq!(head, 3, "every subscriber starts at the same head");
    }
    (writer, subs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_sees_the_same_events_in_the_same_order() {
    let server = TestServer::start().await;
    let (writer, mut subs) = four_subscribers(&server).await;
    let op2 = server.client("op2", Role::Operator).await;
    let sup1 = server.client("sup1", Role::Supervisor).await;
    let svc = server.client("platform", Role::Service).await;
    let mut actors = [writer, op2, sup1, svc];

    // When: a series of commands by the four actors.
    let commands = [
        (
            0,
            json!({"kind": "set_client_info", "name": "Jana Dvořáková"}),
        ),
        (
            1,
            json!({"kind": "set_parameter", "key": "topic", "value": "billing"}),
        ),
        (2, json!({"kind": "add_tag", "tag": "vip"})),
        (3, json!({"kind": "add_note", "text": "called twice"})),
        (1, json!({"kind": "add_note", "text": "wants a refund"})),
        (
            0,
            json!({"kind": "set_client_info", "email": "jana.d@example.com"}),
        ),
        (2, json!({"kind": "remove_tag", "tag": "VIP"})),
        (
            3,
            json!({"kind": "set_parameter", "key": "topic", "value": "refund"}),
        ),
        (
            0,
            json!({"kind": "post_message", "from": "operator", "text": "Hello"}),
        ),
        (1, json!({"kind": "remove_parameter", "key": "topic"})),
    ];
    let mut acked = Vec::new();
    for (i, (who, cmd)) in commands.iter().enumerate() {
        let f = actors[*who].command(S, &format!("c{i}"), cmd.clone()).await;
        acked.push(ack_seq(&f));
    }
    // Then: acks are 4..=13, one event each.
    assert_eq!(acked, (4..=13).collect::<Vec<_>>());

    // Then: every subscriber receives exactly those ten events, identical, in order.
    let mut seen: Vec<Vec<Envelope>> = Vec::new();
    for c in &mut subs {
        seen.push(c.recv_events(commands.len()).await);
    }
    for (i, events) in seen.iter().enumerate() {
        assert_eq!(seqs(events), (4..=13).collect::<Vec<_>>(), "subscriber {i}");
        assert_eq!(events, &seen[0], "subscriber {i} saw what subscriber 0 saw");
    }
    // Then: the events carry their command ids and actors, in command order.
    for (i, e) in seen[0].iter().enumerate() {
        assert_eq!(e.command_id.as_deref(), Some(format!("c{i}").as_str()));
    }
    assert_eq!(seen[0][0].actor.id, "op1");
    assert_eq!(seen[0][1].actor.id, "op2");
    assert_eq!(seen[0][2].actor.role, Role::Supervisor);
    assert_eq!(seen[0][3].actor.role, Role::Service);
    assert!(matches!(&seen[0][2].event, Event::TagAdded { tag, .. } if tag == "vip"));
    assert!(matches!(&seen[0][6].event, Event::TagRemoved { tag } if tag == "vip"));
    assert!(matches!(
        &seen[0][7].event,
        Event::ParameterSet { source: ParameterSource::Preset, value, .. } if value == "refund"
    ));
    // And nobody got anything extra.
    for c in &mut subs {
        c.assert_quiet().await;
    }
    actors[0].ping().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitation_reaches_the_invitee_feed_in_the_same_append() {
    let server = TestServer::start().await;
    opened(&server, "inv", "op1").await;
    let s = "session/inv";
    // Given: op2 watches its own feed, op1 and a supervisor watch the session.
    let mut op2 = server.client("op2", Role::Operator).await;
    let (feed_head, _, feed_state) = op2.subscribe_snapshot("operator/op2").await;
    assert_eq!(feed_head, 0);
    assert!(matches!(feed_state, StreamState::Operator(ref o) if o.invitations.is_empty()));
    let mut watcher = server.client("sup1", Role::Supervisor).await;
    watcher.subscribe_snapshot(s).await;

    // When: op1 invites op2.
    let mut op1 = server.client("op1", Role::Operator).await;
    let f = op1
        .command(
            s,
            "invite-1",
            json!({"kind": "invite_collaborator", "operator_id": "op2"}),
        )
        .await;
    // Then: the ack names the session seq.
    assert!(
        matches!(&f, ServerFrame::Ack { seq: 2, command_id, stream, .. }
            if command_id == "invite-1" && stream.as_str() == s),
        "{f:?}"
    );
    // Then: the session event and the feed event both exist, with the same command id.
    let on_session = watcher.recv_event().await;
    assert_eq!(on_session.seq, 2);
    assert!(
        matches!(&on_session.event, Event::CollaboratorInvited { operator_id } if operator_id == "op2")
    );
    let on_feed = op2.recv_event().await;
    assert_eq!(on_feed.stream.as_str(), "operator/op2");
    assert_eq!(on_feed.seq, 1);
    assert!(
        matches!(&on_feed.event, Event::InvitationReceived { session_id, by }
            if session_id == "inv" && by == "op1"),
        "{on_feed:?}"
    );
    assert_eq!(on_feed.command_id.as_deref(), Some("invite-1"));
    assert_eq!(on_feed.command_id, on_session.command_id);
    assert_eq!(on_feed.at, on_session.at, "one append, one timestamp");

    // When: op2 accepts (from another connection: the feed watcher only reads, since an ack
    // and the events of its command may come in either order); Then: both streams move again,
    // with the same command id.
    let mut op2_cmd = server.client("op2", Role::Operator).await;
    let f = op2_cmd
        .command(s, "accept-1", json!({"kind": "accept_invitation"}))
        .await;
    assert_eq!(ack_seq(&f), 3);
    let e = op2.recv_event().await;
    assert_eq!((e.stream.as_str(), e.seq), ("operator/op2", 2));
    assert!(matches!(e.event, Event::InvitationEnded { .. }));
    assert_eq!(e.command_id.as_deref(), Some("accept-1"));
    let e = watcher.recv_event().await;
    assert!(matches!(&e.event, Event::InvitationAccepted { operator_id } if operator_id == "op2"));
    // Then: the feed's state is empty again and the session lists op2 as joined.
    let f = op2.state_at("operator/op2", 1).await;
    assert!(
        matches!(&f, ServerFrame::State { state: StreamState::Operator(o), .. }
            if o.invitations.len() == 1 && o.invitations[0].session_id == "inv"),
        "{f:?}"
    );
    let st = op1.session_at(s, 3).await;
    assert_eq!(st.collaborators.len(), 1);
    assert_eq!(st.collaborators[0].status, CollaboratorStatus::Joined);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_subscription_reflects_prior_events() {
    let server = TestServer::start().await;
    opened(&server, "snap", "op1").await;
    let s = "session/snap";
    let mut op1 = server.client("op1", Role::Operator).await;
    ack_seq(
        &op1.command(
            s,
            "a",
            json!({"kind": "set_client_info", "phone": "+420 111 222 333"}),
        )
        .await,
    );
    ack_seq(
        &op1.command(s, "b", json!({"kind": "add_tag", "tag": "urgent"}))
            .await,
    );
    let note = op1
        .command(s, "c", json!({"kind": "add_note", "text": "first note"}))
        .await;
    assert!(
        matches!(&note, ServerFrame::Ack { seq: 4, created: Some(n), .. } if n == "n4"),
        "{note:?}"
    );
    ack_seq(
        &op1.command(
            s,
            "d",
            json!({"kind": "set_parameter", "key": "lang", "value": "cs"}),
        )
        .await,
    );

    // When: a new subscriber asks for a snapshot.
    let mut sup = server.client("sup1", Role::Supervisor).await;
    let (head, epoch, state) = sup.subscribe_snapshot(s).await;
    // Then: subscribed{head: 5, epoch} and snapshot{seq: 5} with every prior change.
    assert_eq!(head, 5);
    assert_eq!(epoch, server.epoch());
    assert!(!epoch.is_empty());
    let st = session(&state);
    assert_eq!(st.status, SessionStatus::Open);
    assert_eq!(st.client.name, "Jana Nováková");
    assert_eq!(st.client.phone, "+420 111 222 333");
    assert_eq!(
        st.tags.iter().map(|t| t.tag.as_str()).collect::<Vec<_>>(),
        ["urgent"]
    );
    assert_eq!(st.notes.len(), 1);
    assert_eq!(
        (st.notes[0].note_id.as_str(), st.notes[0].author.as_str()),
        ("n4", "op1")
    );
    assert_eq!(st.parameters["lang"].value, "cs");
    assert_eq!(st.parameters["lang"].source, ParameterSource::Operator);
    assert!(st.parameters["crm_id"].read_only);
    // Then: the snapshot is the replay of the log at that seq.
    assert_eq!(&sup.session_at(s, 5).await, st);
    // Then: live events follow from head + 1.
    ack_seq(
        &op1.command(s, "e", json!({"kind": "add_tag", "tag": "later"}))
            .await,
    );
    assert_eq!(sup.recv_event().await.seq, 6);
    server.stop().await;
}

/// The next text or binary message off the socket as it came, past the server's pings (and any
/// pong); panics after [`WAIT`].
async fn next_data(c: &mut Client) -> tokio_tungstenite::tungstenite::Message {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, c.ws.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("socket ok");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_msgpack_subscribers_receive_the_same_events() {
    let server = TestServer::start().await;
    opened(&server, "enc", "op1").await;
    let s = "session/enc";
    let token = server.token("sup1", Role::Supervisor);
    let mut j = server.connect(&token, Encoding::Json).await;
    let mut m = server.connect(&token, Encoding::Msgpack).await;
    let (_, _, js) = j.subscribe_snapshot(s).await;
    let (_, _, ms) = m.subscribe_snapshot(s).await;
    assert_eq!(js, ms, "same snapshot in both encodings");
    // When: commands from a MessagePack writer (with unicode and a multi-line note).
    let mut w = server
        .connect(&server.token("op1", Role::Operator), Encoding::Msgpack)
        .await;
    let cmds = [
        json!({"kind": "set_client_info", "name": "Žluťoučký kůň 🐴"}),
        json!({"kind": "add_note", "text": "line 1\nline 2\t\"quoted\""}),
        json!({"kind": "set_parameter", "key": "k", "value": ""}),
    ];
    for (i, c) in cmds.iter().enumerate() {
        ack_seq(&w.command(s, &format!("m{i}"), c.clone()).await);
    }
    // Then: both connections decode to identical events.
    let a = j.recv_events(3).await;
    let b = m.recv_events(3).await;
    assert_eq!(seqs(&a), [2, 3, 4]);
    assert_eq!(a, b);
    assert!(
        matches!(&a[0].event, Event::ClientInfoChanged { name: Some(n), .. } if n == "Žluťoučký kůň 🐴")
    );
    // Then: the raw frames really are text for JSON and binary for MessagePack.
    ack_seq(
        &w.command(s, "m3", json!({"kind": "add_tag", "tag": "x"}))
            .await,
    );
    use tokio_tungstenite::tungstenite::Message;
    let raw_j = next_data(&mut j).await;
    let raw_m = next_data(&mut m).await;
    assert!(
        matches!(raw_j, Message::Text(ref t) if t.as_str().contains("\"tag_added\"")),
        "{raw_j:?}"
    );
    assert!(matches!(raw_m, Message::Binary(_)), "{raw_m:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_the_feed() {
    let server = TestServer::start().await;
    opened(&server, "uns", "op1").await;
    let s = "session/uns";
    let mut a = server.client("sup1", Role::Supervisor).await;
    let mut b = server.client("sup2", Role::Supervisor).await;
    a.subscribe_snapshot(s).await;
    b.subscribe_snapshot(s).await;
    // When: a unsubscribes, then a command is appended.
    let f = a.request(json!({"type": "unsubscribe", "stream": s})).await;
    assert!(matches!(f, ServerFrame::Unsubscribed { .. }), "{f:?}");
    let mut w = server.client("op1", Role::Operator).await;
    ack_seq(
        &w.command(s, "x", json!({"kind": "add_tag", "tag": "t"}))
            .await,
    );
    // Then: b gets it, a does not; unsubscribing twice is not_found on stream.
    assert_eq!(b.recv_event().await.seq, 2);
    a.assert_quiet().await;
    let f = a.request(json!({"type": "unsubscribe", "stream": s})).await;
    let (code, field, _) = error_parts(&f);
    assert_eq!(
        (code.as_str(), field.as_deref()),
        ("not_found", Some("stream"))
    );
    server.stop().await;
}
