//! Optimistic concurrency: `expected_seq` equal to the head succeeds; any other value is
//! refused with `conflict` and the current head, and nothing is appended.

mod support;

use copanel_protocol::{Role, ServerFrame};
use serde_json::json;
use support::*;

const S: &str = "session/cf";

fn conflict_head(f: &ServerFrame) -> u64 {
    match f {
        ServerFrame::Error {
            code, head, stream, ..
        } => {
            assert_eq!(code.as_str(), "conflict", "{f:?}");
            assert_eq!(
                stream.as_ref().map(|s| s.as_str()),
                Some(S),
                "names the stream"
            );
            head.expect("a conflict carries the head")
        }
        other => panic!("expected conflict, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_seq_at_head_succeeds_and_stale_is_refused() {
    let server = TestServer::start().await;
    let mut svc = server.client("platform", Role::Service).await;
    // Given: open_session with expected_seq 0 on an empty stream succeeds.
    let f = svc.command_at(S, "open", 0, open_session("op1")).await;
    assert_eq!(ack_seq(&f), 1);
    let mut watcher = server.client("sup1", Role::Supervisor).await;
    watcher.subscribe_snapshot(S).await;
    let mut op1 = server.client("op1", Role::Operator).await;
    // When: expected_seq = head (1).
    let f = op1
        .command_at(S, "a", 1, json!({"kind": "add_tag", "tag": "a"}))
        .await;
    // Then: accepted at 2.
    assert_eq!(ack_seq(&f), 2);
    assert_eq!(watcher.recv_event().await.seq, 2);
    // When: a stale expected_seq (1), then one ahead of the head (7), then 0.
    for (i, stale) in [1u64, 7, 0].into_iter().enumerate() {
        let f = op1
            .command_at(
                S,
                &format!("stale{i}"),
                stale,
                json!({"kind": "add_tag", "tag": format!("s{i}")}),
            )
            .await;
        // Then: conflict with the current head, 2.
        assert_eq!(conflict_head(&f), 2, "expected_seq {stale}");
    }
    // Then: nothing was appended.
    watcher.assert_quiet().await;
    assert_eq!(op1.head(S).await, 2);
    assert_eq!(op1.session_at(S, 2).await.tags.len(), 1);
    // Then: a conflict is not remembered as the command's result: the same id, retried with
    // the right expected_seq, is applied.
    let f = op1
        .command_at(S, "stale0", 2, json!({"kind": "add_tag", "tag": "s0"}))
        .await;
    assert_eq!(ack_seq(&f), 3);
    assert_eq!(watcher.recv_event().await.seq, 3);
    // Then: opening again with expected_seq 0 is a conflict at head 3.
    let f = svc
        .command_at(S, "open-again", 0, open_session("op1"))
        .await;
    assert_eq!(conflict_head(&f), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_writer_is_refused_after_another_moved_the_head() {
    let server = TestServer::start().await;
    opened(&server, "cf", "op1").await;
    let mut a = server.client("op1", Role::Operator).await;
    let mut b = server.client("sup1", Role::Supervisor).await;
    // Given: both read the state at head 1.
    let (ha, _, _) = a.subscribe_snapshot(S).await;
    let (hb, _, _) = b.subscribe_snapshot(S).await;
    assert_eq!((ha, hb), (1, 1));
    // When: a writes at 1, then b writes at 1.
    let f = a
        .command_at(
            S,
            "a1",
            ha,
            json!({"kind": "set_client_info", "name": "From A"}),
        )
        .await;
    assert_eq!(ack_seq(&f), 2);
    assert_eq!(b.recv_event().await.seq, 2, "b is told of a's change");
    let f = b
        .command_at(
            S,
            "b1",
            hb,
            json!({"kind": "set_client_info", "name": "From B"}),
        )
        .await;
    // Then: b, still writing at 1, gets a conflict at 2 and A's name stands.
    let head = conflict_head(&f);
    assert_eq!(head, 2);
    b.assert_quiet().await;
    // Then: b retries at the head the conflict named.
    let f = b
        .command_at(
            S,
            "b2",
            head,
            json!({"kind": "set_client_info", "name": "From B"}),
        )
        .await;
    assert_eq!(ack_seq(&f), 3);
    assert_eq!(a.session_at(S, 2).await.client.name, "From A");
    assert_eq!(a.session_at(S, 3).await.client.name, "From B");
    server.stop().await;
}
