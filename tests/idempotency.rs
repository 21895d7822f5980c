//! Idempotency: a command re-sent with the same `command_id` on the same stream appends nothing
//! and gets the original result, also after a restart and also when both copies arrive in one
//! write batch; the same id on another stream is a different command.

mod support;

use copanel_protocol::{Role, ServerFrame};
use serde_json::json;
use support::*;

fn ack(f: &ServerFrame) -> (u64, Option<String>) {
    match f {
        ServerFrame::Ack { seq, created, .. } => (*seq, created.clone()),
        other => panic!("expected ack, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_gets_the_original_ack_and_appends_nothing() {
    let server = TestServer::start().await;
    opened(&server, "idem", "op1").await;
    let s = "session/idem";
    let mut watcher = server.client("sup1", Role::Supervisor).await;
    watcher.subscribe_snapshot(s).await;
    let mut op1 = server.client("op1", Role::Operator).await;
    // When: add_note, then the same command again with the same command_id, on the same and
    // on another connection of the same operator.
    let note = json!({"kind": "add_note", "text": "hello"});
    let first = ack(&op1.command(s, "note-1", note.clone()).await);
    assert_eq!(first, (2, Some("n2".into())));
    let again = ack(&op1.command(s, "note-1", note.clone()).await);
    let mut other = server.client("op1", Role::Operator).await;
    let third = ack(&other.command(s, "note-1", note.clone()).await);
    // Then: the same seq and the same created id each time.
    assert_eq!(again, first);
    assert_eq!(third, first);
    // Then: the id cannot be reused for a different command, nor by another sender: refused
    // on `command_id`, nothing appended.
    let changed = json!({"kind": "add_note", "text": "changed"});
    let (code, field, _) = error_parts(&other.command(s, "note-1", changed).await);
    assert_eq!(
        (code.as_str(), field.as_deref()),
        ("invalid", Some("command_id"))
    );
    let mut sup = server.client("sup1", Role::Supervisor).await;
    let (code, field, _) = error_parts(&sup.command(s, "note-1", note.clone()).await);
    assert_eq!(
        (code.as_str(), field.as_deref()),
        ("invalid", Some("command_id"))
    );
    // Then: one event only; the next distinct command is seq 3.
    let e = watcher.recv_event().await;
    assert_eq!((e.seq, e.command_id.as_deref()), (2, Some("note-1")));
    let next = ack(&op1
        .command(s, "note-2", json!({"kind": "add_tag", "tag": "t"}))
        .await);
    assert_eq!(next.0, 3);
    assert_eq!(
        watcher.recv_event().await.seq,
        3,
        "nothing between the note and the tag"
    );
    let st = op1.session_at(s, 3).await;
    assert_eq!(st.notes.len(), 1);
    assert_eq!(st.notes[0].text, "hello");
    // Then: a retry of an accepted no-op (tag already there) also gets the head it saw.
    let noop = ack(&op1
        .command(s, "noop", json!({"kind": "add_tag", "tag": "T"}))
        .await);
    assert_eq!(noop, (3, None));
    ack(&op1
        .command(s, "note-3", json!({"kind": "add_tag", "tag": "u"}))
        .await);
    let noop_again = ack(&op1
        .command(s, "noop", json!({"kind": "add_tag", "tag": "T"}))
        .await);
    assert_eq!(
        noop_again,
        (3, None),
        "the original result, not the current head"
    );
    assert_eq!(watcher.recv_event().await.seq, 4);
    watcher.assert_quiet().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_restart_gets_the_original_ack() {
    let server = TestServer::start().await;
    opened(&server, "idr", "op1").await;
    let s = "session/idr";
    let mut op1 = server.client("op1", Role::Operator).await;
    let first = ack(&op1
        .command(s, "n", json!({"kind": "add_note", "text": "kept"}))
        .await);
    ack(&op1
        .command(s, "t", json!({"kind": "add_tag", "tag": "t"}))
        .await);
    let dir = server.stop().await;
    // When: the server restarts and the client retries both.
    let server = TestServer::start_in(dir, |_| {}).await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let mut watcher = server.client("sup1", Role::Supervisor).await;
    assert_eq!(watcher.subscribe_snapshot(s).await.0, 3);
    let again = ack(&op1
        .command(s, "n", json!({"kind": "add_note", "text": "kept"}))
        .await);
    // Then: same ack, nothing appended (open_session's id also still known).
    assert_eq!(again, first);
    assert_eq!(
        ack(&op1
            .command(s, "t", json!({"kind": "add_tag", "tag": "t"}))
            .await)
        .0,
        3
    );
    let mut svc = server.client("platform", Role::Service).await;
    assert_eq!(
        ack(&svc.command(s, "open-idr", open_session("op1")).await).0,
        1
    );
    ack(&op1
        .command(s, "after", json!({"kind": "add_tag", "tag": "after"}))
        .await);
    assert_eq!(watcher.recv_event().await.seq, 4);
    assert_eq!(op1.head(s).await, 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_ids_back_to_back_append_once() {
    let server = TestServer::start().await;
    opened(&server, "b2b", "op1").await;
    let s = "session/b2b";
    let mut op1 = server.client("op1", Role::Operator).await;
    let mut op1b = server.client("op1", Role::Operator).await;
    // When: the same command is sent several times without waiting, from two connections
    // (most land in the same write batch).
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            op1.send_command(s, "dup", json!({"kind": "add_note", "text": "once"}))
                .await,
        );
    }
    let idb = op1b
        .send_command(s, "dup", json!({"kind": "add_note", "text": "once"}))
        .await;
    let mut acks = Vec::new();
    for id in ids {
        acks.push(ack(&op1.recv_until(|f| reply_to(f, id)).await));
    }
    acks.push(ack(&op1b.recv_until(|f| reply_to(f, idb)).await));
    // Then: every copy gets seq 2 / n2, and the log holds one note.
    assert!(
        acks.iter().all(|a| a == &(2, Some("n2".into()))),
        "{acks:?}"
    );
    assert_eq!(op1.head(s).await, 2);
    assert_eq!(op1.session_at(s, 2).await.notes.len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_on_another_stream_is_independent() {
    let server = TestServer::start().await;
    opened(&server, "ia", "op1").await;
    opened(&server, "ib", "op1").await;
    let mut op1 = server.client("op1", Role::Operator).await;
    // When: the same command_id is used on two sessions.
    let a = ack(&op1
        .command(
            "session/ia",
            "same",
            json!({"kind": "add_note", "text": "a"}),
        )
        .await);
    let b = ack(&op1
        .command(
            "session/ib",
            "same",
            json!({"kind": "add_note", "text": "b"}),
        )
        .await);
    // Then: both are applied.
    assert_eq!(a, (2, Some("n2".into())));
    assert_eq!(b, (2, Some("n2".into())));
    assert_eq!(op1.session_at("session/ia", 2).await.notes[0].text, "a");
    assert_eq!(op1.session_at("session/ib", 2).await.notes[0].text, "b");
    // Then: the same id in another company on the same stream name is independent too.
    let mut svc = server
        .client_of(
            "globex",
            "platform",
            Role::Service,
            copanel_protocol::Encoding::Json,
        )
        .await;
    assert_eq!(
        ack(&svc
            .command("session/ia", "open-ia", open_session("op1"))
            .await)
        .0,
        1
    );
    let mut g = server
        .client_of(
            "globex",
            "op1",
            Role::Operator,
            copanel_protocol::Encoding::Json,
        )
        .await;
    let c = ack(&g
        .command(
            "session/ia",
            "same",
            json!({"kind": "add_note", "text": "globex"}),
        )
        .await);
    assert_eq!(c, (2, Some("n2".into())));
    assert_eq!(g.session_at("session/ia", 2).await.notes[0].text, "globex");
    assert_eq!(op1.session_at("session/ia", 2).await.notes[0].text, "a");
    server.stop().await;
}
