//! Bad input, in both encodings: every malformed or refused frame gets an error frame naming
//! the problem, the same connection goes on (`ping` → `pong`), and nothing stored changes.

mod support;

use copanel_protocol::{Encoding, Role, ServerFrame, SessionState};
use serde_json::{json, Value};
use support::*;

const S: &str = "session/bad";

/// What one bad frame should get back.
struct Want {
    code: &'static str,
    field: Option<&'static str>,
    /// The request id echoed, when the frame had a readable one.
    id: Option<u64>,
}

fn want(code: &'static str, field: Option<&'static str>, id: Option<u64>) -> Want {
    Want { code, field, id }
}

/// How to send one bad frame.
enum Bad {
    /// Raw bytes in the connection's own frame kind.
    Raw(Vec<u8>),
    /// A text frame, whatever the encoding.
    Text(String),
    /// A binary frame, whatever the encoding.
    Binary(Vec<u8>),
    /// A JSON value encoded in the connection's encoding.
    Value(Value),
}

fn encode(enc: Encoding, v: &Value) -> Vec<u8> {
    match enc {
        Encoding::Json => v.to_string().into_bytes(),
        Encoding::Msgpack => rmp_serde::to_vec_named(v).unwrap(),
    }
}

fn cmd(id: u64, command_id: &str, command: Value) -> Value {
    json!({"type": "command", "id": id, "stream": S, "command_id": command_id, "command": command})
}

/// The cases common to both encodings.
fn cases(enc: Encoding) -> Vec<(&'static str, Bad, Want)> {
    let garbage = match enc {
        Encoding::Json => b"}{ this is not json".to_vec(),
        Encoding::Msgpack => vec![0xc1, 0xff, 0x00, 0x13],
    };
    let nested = {
        let mut v = json!(1);
        for _ in 0..40 {
            v = json!([v]);
        }
        json!({"type": "ping", "id": 5, "x": v})
    };
    let very_deep = match enc {
        // 30 000 levels: well under the frame limit, far over any recursion the server allows.
        Encoding::Json => format!("{}{}", "[".repeat(30_000), "]".repeat(30_000)).into_bytes(),
        Encoding::Msgpack => {
            let mut b = vec![0x91u8; 60_000];
            b.push(0xc0);
            b
        }
    };
    let big_note = "x".repeat(70 * 1024);
    vec![
        (
            "garbage bytes",
            Bad::Raw(garbage),
            want("bad_frame", None, None),
        ),
        (
            "an array",
            Bad::Value(json!([1, 2, 3])),
            want("bad_frame", None, None),
        ),
        (
            "a string",
            Bad::Value(json!("ping")),
            want("bad_frame", None, None),
        ),
        (
            "no type",
            Bad::Value(json!({"id": 3, "stream": S})),
            want("bad_frame", Some("type"), Some(3)),
        ),
        (
            "type not a string",
            Bad::Value(json!({"type": 7, "id": 4})),
            want("bad_frame", Some("type"), Some(4)),
        ),
        (
            "unknown type",
            Bad::Value(json!({"type": "dance", "id": 77})),
            want("unknown_type", Some("type"), Some(77)),
        ),
        (
            "missing stream",
            Bad::Value(json!({"type": "subscribe", "id": 8})),
            want("invalid", Some("stream"), Some(8)),
        ),
        (
            "missing seq",
            Bad::Value(json!({"type": "state_at", "id": 9, "stream": S})),
            want("invalid", Some("seq"), Some(9)),
        ),
        (
            "missing command.tag",
            Bad::Value(cmd(10, "c", json!({"kind": "add_tag"}))),
            want("invalid", Some("command.tag"), Some(10)),
        ),
        (
            "missing command_id",
            Bad::Value(
                json!({"type": "command", "id": 11, "stream": S, "command": {"kind": "leave"}}),
            ),
            want("invalid", Some("command_id"), Some(11)),
        ),
        (
            "missing command",
            Bad::Value(json!({"type": "command", "id": 12, "stream": S, "command_id": "c"})),
            want("invalid", Some("command"), Some(12)),
        ),
        (
            "command not a map",
            Bad::Value(
                json!({"type": "command", "id": 13, "stream": S, "command_id": "c", "command": "leave"}),
            ),
            want("invalid", Some("command"), Some(13)),
        ),
        (
            "command without kind",
            Bad::Value(cmd(14, "c", json!({"tag": "x"}))),
            want("invalid", Some("command.kind"), Some(14)),
        ),
        (
            "wrong type: tag",
            Bad::Value(cmd(15, "c", json!({"kind": "add_tag", "tag": 5}))),
            want("invalid", Some("command.tag"), Some(15)),
        ),
        (
            "wrong type: from",
            Bad::Value(json!({"type": "history", "id": 16, "stream": S, "from": "x"})),
            want("invalid", Some("from"), Some(16)),
        ),
        (
            "wrong type: since",
            Bad::Value(json!({"type": "subscribe", "id": 17, "stream": S, "since": -1})),
            want("invalid", Some("since"), Some(17)),
        ),
        (
            "wrong type: stream",
            Bad::Value(json!({"type": "subscribe", "id": 18, "stream": 42})),
            want("invalid", Some("stream"), Some(18)),
        ),
        (
            "negative id",
            Bad::Value(json!({"type": "ping", "id": -1})),
            want("invalid", Some("id"), None),
        ),
        (
            "unknown field",
            Bad::Value(json!({"type": "ping", "id": 19, "extra": true})),
            want("invalid", Some("extra"), Some(19)),
        ),
        (
            "bad stream kind",
            Bad::Value(json!({"type": "subscribe", "id": 20, "stream": "bogus/1"})),
            want("invalid", Some("stream"), Some(20)),
        ),
        (
            "bad stream id",
            Bad::Value(json!({"type": "history", "id": 21, "stream": "session/a b"})),
            want("invalid", Some("stream"), Some(21)),
        ),
        (
            "stream id too long",
            Bad::Value(
                json!({"type": "state_at", "id": 22, "seq": 0, "stream": format!("session/{}", "a".repeat(129))}),
            ),
            want("invalid", Some("stream"), Some(22)),
        ),
        (
            "unknown command kind",
            Bad::Value(cmd(23, "c", json!({"kind": "fly"}))),
            want("invalid", Some("command.kind"), Some(23)),
        ),
        (
            "unknown command field",
            Bad::Value(cmd(
                24,
                "c",
                json!({"kind": "add_tag", "tag": "x", "colour": "red"}),
            )),
            want("invalid", Some("command.colour"), Some(24)),
        ),
        (
            "empty command_id",
            Bad::Value(cmd(25, "", json!({"kind": "add_tag", "tag": "x"}))),
            want("invalid", Some("command_id"), Some(25)),
        ),
        (
            "command_id too long",
            Bad::Value(cmd(
                26,
                &"c".repeat(129),
                json!({"kind": "add_tag", "tag": "x"}),
            )),
            want("invalid", Some("command_id"), Some(26)),
        ),
        (
            "frame over 64 KiB",
            Bad::Value(cmd(
                27,
                "big",
                json!({"kind": "add_note", "text": big_note}),
            )),
            want("too_large", None, None),
        ),
        (
            "nested 40 deep",
            Bad::Value(nested),
            want("bad_frame", None, None),
        ),
        (
            "nested 30 000 deep",
            Bad::Raw(very_deep),
            want("bad_frame", None, None),
        ),
        // Domain validation: decoded fine, refused by the rules, naming the field.
        (
            "note over 4000 chars",
            Bad::Value(cmd(
                30,
                "d1",
                json!({"kind": "add_note", "text": "n".repeat(4001)}),
            )),
            want("too_large", Some("command.text"), Some(30)),
        ),
        (
            "blank note",
            Bad::Value(cmd(31, "d2", json!({"kind": "add_note", "text": "  \n "}))),
            want("invalid", Some("command.text"), Some(31)),
        ),
        (
            "bad email",
            Bad::Value(cmd(
                32,
                "d3",
                json!({"kind": "set_client_info", "email": "jana@@example"}),
            )),
            want("invalid", Some("command.email"), Some(32)),
        ),
        (
            "bad phone",
            Bad::Value(cmd(
                33,
                "d4",
                json!({"kind": "set_client_info", "phone": "call me"}),
            )),
            want("invalid", Some("command.phone"), Some(33)),
        ),
        (
            "name too long",
            Bad::Value(cmd(
                34,
                "d5",
                json!({"kind": "set_client_info", "name": "N".repeat(257)}),
            )),
            want("too_large", Some("command.name"), Some(34)),
        ),
        (
            "tag too long",
            Bad::Value(cmd(
                35,
                "d6",
                json!({"kind": "add_tag", "tag": "t".repeat(65)}),
            )),
            want("too_large", Some("command.tag"), Some(35)),
        ),
        (
            "control char in tag",
            Bad::Value(cmd(
                36,
                "d7",
                json!({"kind": "add_tag", "tag": "a\u{0007}b"}),
            )),
            want("invalid", Some("command.tag"), Some(36)),
        ),
        (
            "parameter value too long",
            Bad::Value(cmd(
                37,
                "d8",
                json!({"kind": "set_parameter", "key": "k", "value": "v".repeat(1025)}),
            )),
            want("too_large", Some("command.value"), Some(37)),
        ),
        (
            "read-only preset",
            Bad::Value(cmd(
                38,
                "d9",
                json!({"kind": "set_parameter", "key": "crm_id", "value": "hacked"}),
            )),
            want("forbidden", None, Some(38)),
        ),
        (
            "note that does not exist",
            Bad::Value(cmd(
                39,
                "d10",
                json!({"kind": "edit_note", "note_id": "n999", "text": "x"}),
            )),
            want("not_found", None, Some(39)),
        ),
        (
            "open_session by an operator",
            Bad::Value(cmd(40, "d11", open_session("op1"))),
            want("forbidden", None, Some(40)),
        ),
        (
            "client message from an operator",
            Bad::Value(cmd(
                41,
                "d12",
                json!({"kind": "post_message", "from": "client", "text": "hi"}),
            )),
            want("forbidden", None, Some(41)),
        ),
    ]
}

async fn send_bad(c: &mut Client, bad: &Bad) {
    match bad {
        Bad::Raw(b) => match c.enc {
            Encoding::Json => c.send_text(&String::from_utf8_lossy(b)).await,
            Encoding::Msgpack => c.send_binary(b.clone()).await,
        },
        Bad::Text(t) => c.send_text(t).await,
        Bad::Binary(b) => c.send_binary(b.clone()).await,
        Bad::Value(v) => {
            let bytes = encode(c.enc, v);
            match c.enc {
                Encoding::Json => c.send_text(std::str::from_utf8(&bytes).unwrap()).await,
                Encoding::Msgpack => c.send_binary(bytes).await,
            }
        }
    }
}

/// The state and head the bad frames must not touch.
async fn stored(c: &mut Client) -> (u64, SessionState) {
    let head = c.head(S).await;
    (head, c.session_at(S, head).await)
}

async fn run_cases(enc: Encoding, extra: Vec<(&'static str, Bad, Want)>) {
    let server = TestServer::start().await;
    opened(&server, "bad", "op1").await;
    let mut c = server
        .connect(&server.token("op1", Role::Operator), enc)
        .await;
    ack_seq(
        &c.command(S, "ok", json!({"kind": "add_note", "text": "kept"}))
            .await,
    );
    let before = stored(&mut c).await;
    let mut all = cases(enc);
    all.extend(extra);
    for (name, bad, w) in &all {
        // When: the bad frame is sent.
        send_bad(&mut c, bad).await;
        // Then: one error frame with the expected code, field and id, and a message.
        let f = c.recv().await;
        match &f {
            ServerFrame::Error {
                id,
                code,
                field,
                message,
                ..
            } => {
                assert_eq!(code.as_str(), w.code, "{enc:?} {name}: {message}");
                if w.field.is_some() {
                    assert_eq!(field.as_deref(), w.field, "{enc:?} {name}: {message}");
                }
                assert_eq!(*id, w.id, "{enc:?} {name}: id echoed");
                assert!(!message.is_empty(), "{enc:?} {name}: a message");
                assert!(message.len() < 1000, "{enc:?} {name}: a short message");
            }
            other => panic!("{enc:?} {name}: expected an error, got {other:?}"),
        }
        // Then: the connection goes on.
        c.ping().await;
    }
    // Then: nothing stored was touched.
    assert_eq!(stored(&mut c).await, before, "{enc:?}: state unchanged");
    // Then: the connection still works for real commands.
    let seq = ack_seq(
        &c.command(S, "after", json!({"kind": "add_tag", "tag": "fine"}))
            .await,
    );
    assert_eq!(seq, before.0 + 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_on_a_json_connection() {
    run_cases(
        Encoding::Json,
        vec![
            // Invalid UTF-8 cannot be sent as text: a binary frame of garbage instead.
            (
                "binary garbage on JSON",
                Bad::Binary(vec![0xff, 0xfe, 0x00, 0x80]),
                want("bad_frame", None, None),
            ),
            (
                "empty text",
                Bad::Text(String::new()),
                want("bad_frame", None, None),
            ),
            (
                "trailing junk",
                Bad::Text(r#"{"type":"ping"} x"#.into()),
                want("bad_frame", None, None),
            ),
            (
                "float id",
                Bad::Text(r#"{"type":"ping","id":1.5}"#.into()),
                want("invalid", Some("id"), None),
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_on_a_msgpack_connection() {
    let mut trailing = encode(Encoding::Msgpack, &json!({"type": "ping", "id": 1}));
    trailing.push(0x01);
    // A map with an integer key.
    let int_key = vec![0x81, 0x01, 0x02];
    run_cases(
        Encoding::Msgpack,
        vec![
            (
                "text on msgpack",
                Bad::Text("hello".into()),
                want("bad_frame", None, None),
            ),
            (
                "trailing bytes",
                Bad::Binary(trailing),
                want("bad_frame", None, None),
            ),
            (
                "integer key",
                Bad::Binary(int_key),
                want("bad_frame", None, None),
            ),
            (
                "empty binary",
                Bad::Binary(Vec::new()),
                want("bad_frame", None, None),
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_commands_are_rate_limited_and_the_connection_goes_on() {
    let server = TestServer::start().await;
    opened(&server, "bad", "op1").await;
    let mut c = server.client("op1", Role::Operator).await;
    ack_seq(
        &c.command(S, "t", json!({"kind": "add_tag", "tag": "vip"}))
            .await,
    );
    let before = stored(&mut c).await;
    // When: on a fresh connection, 160 commands (accepted no-ops: the tag is already there)
    // without waiting.
    let mut c = server.client("op1", Role::Operator).await;
    let mut ids = Vec::new();
    for i in 0..160 {
        ids.push(
            c.send_command(
                S,
                &format!("r{i}"),
                json!({"kind": "add_tag", "tag": "VIP"}),
            )
            .await,
        );
    }
    let (mut acked, mut limited) = (0, 0);
    for id in ids {
        match c.recv().await {
            ServerFrame::Ack { id: Some(got), .. } => {
                assert_eq!(got, id);
                acked += 1;
            }
            ServerFrame::Error {
                id: Some(got),
                code,
                message,
                ..
            } => {
                assert_eq!(got, id, "the refusal names the request");
                assert_eq!(code.as_str(), "rate_limited", "{message}");
                limited += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    // Then: at least the burst went through and some were rate limited.
    assert!(acked >= 100, "the burst of 100 is allowed, got {acked}");
    assert!(limited >= 1, "some were rate limited ({acked} acked)");
    // Then: the connection goes on; reads are not rate limited; after a pause commands pass.
    c.ping().await;
    assert_eq!(stored(&mut c).await, before);
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    let f = c
        .command(S, "after", json!({"kind": "add_tag", "tag": "later"}))
        .await;
    assert_eq!(ack_seq(&f), before.0 + 1);
    // Then: the limit is per connection: another connection was never limited.
    let mut other = server.client("op1", Role::Operator).await;
    ack_seq(
        &other
            .command(S, "other", json!({"kind": "add_tag", "tag": "other"}))
            .await,
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_subscriptions_are_too_large() {
    let server = TestServer::start_with(|c| c.edge.subscriptions = 3).await;
    opened(&server, "bad", "op1").await;
    let mut c = server.client("op1", Role::Operator).await;
    // Given: three subscriptions.
    c.subscribe_snapshot(S).await;
    c.subscribe_snapshot("operator/op1").await;
    assert!(matches!(
        c.subscribe("session/other", None).await,
        ServerFrame::Error { .. }
    ));
    c.subscribe_snapshot("operator/op1").await; // repeated: still three
                                                // A failed subscribe does not count: the third slot is still free.
    opened(&server, "third", "op1").await;
    c.subscribe_snapshot("session/third").await;
    // When: a fourth.
    opened(&server, "fourth", "op1").await;
    let f = c.subscribe("session/fourth", None).await;
    // Then: too_large on `stream`, and the connection goes on.
    let (code, field, _) = error_parts(&f);
    assert_eq!(
        (code.as_str(), field.as_deref()),
        ("too_large", Some("stream"))
    );
    c.ping().await;
    // Then: re-subscribing to a held stream is fine; after an unsubscribe the fourth fits.
    let f = c.subscribe(S, Some(1)).await;
    assert!(matches!(f, ServerFrame::Subscribed { .. }), "{f:?}");
    let f = c
        .request(json!({"type": "unsubscribe", "stream": "operator/op1"}))
        .await;
    assert!(matches!(f, ServerFrame::Unsubscribed { .. }), "{f:?}");
    c.subscribe_snapshot("session/fourth").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_hard_limit_ends_only_that_connection() {
    let server = TestServer::start().await;
    opened(&server, "bad", "op1").await;
    let mut victim = server.client("op1", Role::Operator).await;
    let mut bystander = server.client("sup1", Role::Supervisor).await;
    bystander.subscribe_snapshot(S).await;
    // When: a 2 MiB frame (over the 1 MiB WebSocket limit).
    // (The send itself may fail: the server can close before the frame is fully written.)
    {
        use futures::SinkExt;
        let huge =
            tokio_tungstenite::tungstenite::Message::Text("x".repeat(2 * 1024 * 1024).into());
        let _ = victim.ws.send(huge).await;
    }
    // Then: that connection is closed (1009, message too big) or dropped …
    let ended = tokio::time::timeout(WAIT, async {
        use futures::StreamExt;
        loop {
            match victim.ws.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(c))) => {
                    return c.map(|c| u16::from(c.code))
                }
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the connection ends");
    if let Some(code) = ended {
        assert_eq!(code, 1009, "closed as too big");
    }
    // … while the server and the other connections go on.
    let mut w = server.client("op1", Role::Operator).await;
    ack_seq(
        &w.command(S, "after", json!({"kind": "add_tag", "tag": "t"}))
            .await,
    );
    assert_eq!(bystander.recv_event().await.seq, 2);
    server.stop().await;
}
