//! Access and isolation: tokens are checked before the upgrade; another company cannot tell a
//! session exists; operators read and write only what the contract allows; feeds are personal.

mod support;

use copanel::auth::{now_secs, Auth, Claims};
use copanel_protocol::{CollaboratorStatus, Encoding, Role, ServerFrame, StreamState};
use serde_json::{json, Value};
use support::*;

const S: &str = "session/acc";

/// Given session `acc` of company acme, owned by op1, with a few events.
async fn given_session(server: &TestServer) {
    opened(server, "acc", "op1").await;
    let mut op1 = server.client("op1", Role::Operator).await;
    ack_seq(
        &op1.command(S, "t", json!({"kind": "add_tag", "tag": "secret-tag"}))
            .await,
    );
    ack_seq(
        &op1.command(S, "n", json!({"kind": "add_note", "text": "secret note"}))
            .await,
    );
}

/// Every read and write path on `stream`; returns the replies.
async fn every_request(c: &mut Client, stream: &str) -> Vec<ServerFrame> {
    let mut out = vec![
        c.subscribe(stream, None).await,
        c.subscribe(stream, Some(0)).await,
    ];
    out.push(c.history(stream, 1, Some(10)).await);
    out.push(c.state_at(stream, 0).await);
    out.push(c.state_at(stream, 1).await);
    out.push(
        c.command(stream, "x1", json!({"kind": "add_tag", "tag": "mine"}))
            .await,
    );
    out.push(
        c.command(stream, "x2", json!({"kind": "accept_invitation"}))
            .await,
    );
    out
}

/// `(code, field, message with the stream id replaced)` of each error.
fn refusals(frames: &[ServerFrame], stream_id: &str) -> Vec<(String, Option<String>, String)> {
    frames
        .iter()
        .map(|f| {
            let (code, field, message) = error_parts(f);
            (code, field, message.replace(stream_id, "<ID>"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_company_cannot_tell_the_session_exists() {
    let server = TestServer::start().await;
    given_session(&server).await;
    // Given: op1 of globex, same operator id as acme's owner, in both encodings.
    for enc in [Encoding::Json, Encoding::Msgpack] {
        let mut g = server.client_of("globex", "op1", Role::Operator, enc).await;
        // When: it tries every request on acme's session and on one that exists nowhere.
        let existing = every_request(&mut g, S).await;
        let never = every_request(&mut g, "session/never").await;
        // Then: every one is not_found, worded exactly as for a session that never existed.
        let a = refusals(&existing, "acc");
        let b = refusals(&never, "never");
        for (code, _, message) in &a {
            assert_eq!(code, "not_found", "{message}");
            assert!(
                !message.contains("acme") && !message.contains("op1 "),
                "{message}"
            );
        }
        assert_eq!(
            a, b,
            "refusals do not depend on the session existing elsewhere"
        );
        g.ping().await;
    }
    // Then: even globex's supervisor sees only an empty, unopened stream: no acme data.
    let mut gs = server
        .client_of("globex", "sup", Role::Supervisor, Encoding::Json)
        .await;
    let (head, _, state) = gs.subscribe_snapshot(S).await;
    assert_eq!(head, 0);
    assert_eq!(session(&state), &Default::default());
    match gs.history(S, 1, None).await {
        ServerFrame::History { events, .. } => assert!(events.is_empty()),
        other => panic!("{other:?}"),
    }
    let f = gs
        .command(S, "g", json!({"kind": "add_tag", "tag": "x"}))
        .await;
    assert_eq!(error_code(&f), "not_found");
    // Then: acme's session is untouched by all of that.
    let mut op1 = server.client("op1", Role::Operator).await;
    assert_eq!(op1.head(S).await, 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uninvited_operator_is_forbidden_on_an_open_session_and_not_found_otherwise() {
    let server = TestServer::start().await;
    given_session(&server).await;
    let mut op9 = server.client("op9", Role::Operator).await;
    // When: op9 tries every request on the open session.
    let open = every_request(&mut op9, S).await;
    // Then: every read and write is forbidden, even answering an invitation it never got.
    let codes: Vec<String> = open.iter().map(error_code).collect();
    assert_eq!(codes, ["forbidden"; 7]);
    for f in &open {
        let (_, _, m) = error_parts(f);
        assert!(!m.contains("secret"), "no data in the message: {m}");
    }
    // Then: on a session that does not exist, everything is not_found.
    let none = every_request(&mut op9, "session/nope").await;
    for f in &none {
        assert_eq!(error_code(f), "not_found", "{f:?}");
    }
    // Then: nothing was appended, and op9 receives nothing from the session.
    let mut op1 = server.client("op1", Role::Operator).await;
    ack_seq(
        &op1.command(S, "later", json!({"kind": "add_tag", "tag": "later"}))
            .await,
    );
    op9.assert_quiet().await;
    assert_eq!(op1.head(S).await, 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invited_operator_reads_and_writes_only_after_accepting() {
    let server = TestServer::start().await;
    given_session(&server).await;
    let mut op1 = server.client("op1", Role::Operator).await;
    ack_seq(
        &op1.command(
            S,
            "inv",
            json!({"kind": "invite_collaborator", "operator_id": "op2"}),
        )
        .await,
    );
    let mut op2 = server.client("op2", Role::Operator).await;
    // Then: invited op2 may read: snapshot, history, state_at.
    let (head, _, st) = op2.subscribe_snapshot(S).await;
    assert_eq!(head, 4);
    assert_eq!(
        session(&st).collaborators[0].status,
        CollaboratorStatus::Invited
    );
    assert!(
        matches!(op2.history(S, 1, None).await, ServerFrame::History { ref events, .. } if events.len() == 4)
    );
    assert_eq!(op2.session_at(S, 4).await.tags[0].tag, "secret-tag");
    // Then: but not write.
    let f = op2
        .command(S, "w1", json!({"kind": "add_note", "text": "mine"}))
        .await;
    assert_eq!(error_code(&f), "forbidden");
    let f = op2
        .command(S, "w2", json!({"kind": "set_client_info", "name": "x"}))
        .await;
    assert_eq!(error_code(&f), "forbidden");
    // When: op2 accepts.
    assert_eq!(
        ack_seq(
            &op2.command(S, "acc", json!({"kind": "accept_invitation"}))
                .await
        ),
        5
    );
    // Then: it may write; the earlier refused command id is not poisoned.
    let f = op2
        .command(S, "w1", json!({"kind": "add_note", "text": "mine"}))
        .await;
    assert!(
        matches!(&f, ServerFrame::Ack { seq: 6, created: Some(n), .. } if n == "n6"),
        "{f:?}"
    );
    let log = op2.full_history(S).await;
    assert_eq!(seqs(&log), [1, 2, 3, 4, 5, 6]);
    assert_eq!(
        (log[5].actor.id.as_str(), log[5].command_id.as_deref()),
        ("op2", Some("w1"))
    );
    // When: op2 leaves; Then: it can no longer read.
    ack_seq(&op2.command(S, "leave", json!({"kind": "leave"})).await);
    let f = op2.state_at(S, 1).await;
    assert_eq!(error_code(&f), "forbidden");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_feeds_are_personal() {
    let server = TestServer::start().await;
    let mut op1 = server.client("op1", Role::Operator).await;
    // Then: op1 reads its own feed.
    let (head, _, st) = op1.subscribe_snapshot("operator/op1").await;
    assert_eq!(head, 0);
    assert!(matches!(st, StreamState::Operator(_)));
    // Then: not another operator's feed, in any way; not even a supervisor or an admin.
    for (who, role) in [
        ("op1", Role::Operator),
        ("sup1", Role::Supervisor),
        ("adm", Role::Admin),
    ] {
        let mut c = server.client(who, role).await;
        for f in [
            c.subscribe("operator/op2", None).await,
            c.subscribe("operator/op2", Some(0)).await,
            c.history("operator/op2", 1, None).await,
            c.state_at("operator/op2", 0).await,
        ] {
            let (code, _, message) = error_parts(&f);
            assert_eq!(code, "forbidden", "{who}: {message}");
        }
        // No command targets a feed yet: refused (as an `invalid` kind), never acked.
        let f = c
            .command("operator/op2", "x", json!({"kind": "add_tag", "tag": "x"}))
            .await;
        assert!(matches!(f, ServerFrame::Error { .. }), "{who}: {f:?}");
    }
    // Then: the platform may read any feed, and nothing was appended to it.
    let mut svc = server.client("platform", Role::Service).await;
    assert_eq!(svc.subscribe_snapshot("operator/op2").await.0, 0);
    svc.assert_quiet().await;
    server.stop().await;
}

/// The token in a header, plus a subprotocol.
fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_401_before_the_upgrade() {
    let server = TestServer::start().await;
    let url = server.url();
    let json_proto = ("sec-websocket-protocol", "copanel.v1.json");
    let expired = server.mint(&Claims {
        exp: now_secs() - 5,
        ..server.claims("op1", Role::Operator)
    });
    let forged = Auth::new(b"another-secret-another-secret")
        .mint(&server.claims("op1", Role::Operator))
        .unwrap();
    // Same claims, signature of the right token grafted on a tampered payload.
    let good = server.token("op1", Role::Operator);
    let tampered = {
        let parts: Vec<&str> = good.split('.').collect();
        let admin = server.token("op1", Role::Admin);
        let admin_payload = admin.split('.').nth(1).unwrap();
        format!("{}.{}.{}", parts[0], admin_payload, parts[2])
    };
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("missing", vec![]),
        ("expired", vec![("authorization", bearer(&expired))]),
        ("forged", vec![("authorization", bearer(&forged))]),
        ("tampered", vec![("authorization", bearer(&tampered))]),
        ("garbage", vec![("authorization", bearer("not.a.jwt"))]),
        (
            "wrong scheme",
            vec![("authorization", format!("Basic {good}"))],
        ),
    ];
    for (name, headers) in cases {
        let mut h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        h.push(json_proto);
        // Then: HTTP 401 with a JSON body naming the problem.
        let (status, body) = refused(connect_with(&url, &h).await);
        assert_eq!(status, 401, "{name}");
        assert_eq!(body["code"], "unauthorized", "{name}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}"
        );
    }
    // Then: expired says so.
    let (_, body) = refused(connect_with(&url, &[("authorization", &bearer(&expired))]).await);
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    // Then: the query-string token is checked the same way, and a good one is accepted.
    let (status, _) = refused(connect_with(&format!("{url}?token={forged}"), &[]).await);
    assert_eq!(status, 401);
    let ws = connect_with(&format!("{url}?token={good}"), &[json_proto]).await;
    let mut c = Client::from_ws(ws.expect("a good query token is accepted"), Encoding::Json);
    c.ping().await;
    // Then: the server is fine after all of that.
    assert_eq!(server.healthz().await["status"], "ok");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_negotiation() {
    let server = TestServer::start().await;
    let url = server.url();
    let token = bearer(&server.token("op1", Role::Operator));
    // Then: only unknown subprotocols → 400.
    let (status, body) = refused(
        connect_with(
            &url,
            &[
                ("authorization", &token),
                ("sec-websocket-protocol", "chat.v2, graphql-ws"),
            ],
        )
        .await,
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("copanel.v1.json"),
        "{body}"
    );
    // Then: an unknown one next to JSON picks JSON; with none, frames are MessagePack.
    let ws = connect_with(
        &url,
        &[
            ("authorization", &token),
            ("sec-websocket-protocol", "chat.v2, copanel.v1.json"),
        ],
    )
    .await
    .expect("accepted");
    Client::from_ws(ws, Encoding::Json).ping().await;
    let ws = connect_with(&url, &[("authorization", &token)])
        .await
        .expect("accepted");
    Client::from_ws(ws, Encoding::Msgpack).ping().await;
    // Then: a bad token is refused before the subprotocol is even looked at.
    let (status, _) = refused(
        connect_with(
            &url,
            &[
                ("authorization", "Bearer nope"),
                ("sec-websocket-protocol", "chat.v2"),
            ],
        )
        .await,
    );
    assert_eq!(status, 401);
    server.stop().await;
}

// ---- isolation of stored results, heads and live events from callers who may not read ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_expected_seq_from_an_outsider_does_not_reveal_the_head() {
    let server = TestServer::start().await;
    given_session(&server).await; // head 3
    let mut op9 = server.client("op9", Role::Operator).await;
    // When: an operator who may not read the session sends a command with expected_seq.
    let id = op9
        .send_request(
            json!({"type": "command", "stream": S, "command_id": "probe",
            "expected_seq": 0, "command": {"kind": "add_tag", "tag": "x"}}),
        )
        .await;
    let f = op9.recv_until(|f| reply_to(f, id)).await;
    // Then: forbidden, like any other request of its; no head.
    let head: Option<u64> = match &f {
        ServerFrame::Error { head, .. } => *head,
        _ => None,
    };
    assert_eq!(error_code(&f), "forbidden", "{f:?}");
    assert_eq!(head, None);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_reusing_a_command_id_gets_no_ack() {
    let server = TestServer::start().await;
    given_session(&server).await; // op1 added note n3 with command_id "n"
    let mut op9 = server.client("op9", Role::Operator).await;
    // When: an operator who may not read the session sends a command with a used id.
    let f = op9
        .command(S, "n", json!({"kind": "add_note", "text": "x"}))
        .await;
    // Then: refused like any other command of its, not acked with the owner's note id.
    let shown: Value = match &f {
        ServerFrame::Ack { seq, created, .. } => json!({"seq": seq, "created": created}),
        _ => Value::Null,
    };
    assert_eq!(error_code(&f), "forbidden", "got {shown}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_collaborator_stops_receiving_the_session() {
    let server = TestServer::start().await;
    given_session(&server).await;
    let mut op1 = server.client("op1", Role::Operator).await;
    ack_seq(
        &op1.command(
            S,
            "inv",
            json!({"kind": "invite_collaborator", "operator_id": "op2"}),
        )
        .await,
    );
    let mut op2 = server.client("op2", Role::Operator).await;
    ack_seq(
        &op2.command(S, "acc", json!({"kind": "accept_invitation"}))
            .await,
    );
    // Given: joined op2 watches the session.
    let mut watch = server.client("op2", Role::Operator).await;
    watch.subscribe_snapshot(S).await;
    // When: the owner removes op2, then writes something new.
    ack_seq(
        &op1.command(
            S,
            "rm",
            json!({"kind": "remove_collaborator", "operator_id": "op2"}),
        )
        .await,
    );
    ack_seq(
        &op1.command(
            S,
            "after",
            json!({"kind": "add_note", "text": "written after op2 left"}),
        )
        .await,
    );
    // Then: op2 can no longer read the session …
    assert_eq!(error_code(&op2.state_at(S, 1).await), "forbidden");
    // … and its live subscription delivers its own removal (seq 6), then ends with
    // `forbidden` naming the stream: nothing written after the removal reaches it.
    let e = watch.recv_event().await;
    assert_eq!(e.seq, 6);
    let f = watch.recv().await;
    let (code, _, message) = error_parts(&f);
    assert_eq!(code, "forbidden", "{message}");
    assert!(matches!(&f, ServerFrame::Error { stream: Some(s), .. } if s.as_str() == S));
    watch.assert_quiet().await;
    // Then: it may not subscribe again.
    assert_eq!(error_code(&watch.subscribe(S, Some(6)).await), "forbidden");
    server.stop().await;
}

/// base64url without padding, for hand-made tokens.
fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_made_tokens_are_refused() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let server = TestServer::start().await;
    let secret = EncodingKey::from_secret(b"test-secret-test-secret");
    let exp = now_secs() + 600;
    let good_claims = json!({"sub": "op1", "company": "acme", "role": "operator", "exp": exp});
    let hs = |alg: Algorithm, claims: &Value| encode(&Header::new(alg), claims, &secret).unwrap();
    // Given: tokens that are signed with the right secret, or not signed at all, but wrong.
    let unsigned = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(good_claims.to_string().as_bytes())
    );
    let cases = [
        ("alg none", unsigned),
        ("HS512", hs(Algorithm::HS512, &good_claims)),
        (
            "no exp",
            hs(
                Algorithm::HS256,
                &json!({"sub": "op1", "company": "acme", "role": "operator"}),
            ),
        ),
        (
            "no sub",
            hs(
                Algorithm::HS256,
                &json!({"company": "acme", "role": "operator", "exp": exp}),
            ),
        ),
        (
            "no company",
            hs(
                Algorithm::HS256,
                &json!({"sub": "op1", "role": "operator", "exp": exp}),
            ),
        ),
        (
            "unknown role",
            hs(
                Algorithm::HS256,
                &json!({"sub": "op1", "company": "acme", "role": "root", "exp": exp}),
            ),
        ),
        (
            "bad sub",
            hs(
                Algorithm::HS256,
                &json!({"sub": "op 1", "company": "acme", "role": "operator", "exp": exp}),
            ),
        ),
        (
            "bad company",
            hs(
                Algorithm::HS256,
                &json!({"sub": "op1", "company": "acme/x", "role": "operator", "exp": exp}),
            ),
        ),
        (
            "with aud",
            hs(
                Algorithm::HS256,
                &json!({"sub": "op1", "company": "acme", "role": "operator", "exp": exp, "aud": "x"}),
            ),
        ),
        (
            "101 groups",
            hs(
                Algorithm::HS256,
                &json!({"sub": "op1", "company": "acme", "role": "operator", "exp": exp, "groups": vec!["g"; 101]}),
            ),
        ),
    ];
    for (name, token) in cases {
        // Then: each is refused with 401 before the upgrade.
        let (status, body) =
            refused(connect_with(&server.url(), &[("authorization", &bearer(&token))]).await);
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["code"], "unauthorized", "{name}");
    }
    // Then: the same construction with good claims is accepted (the cases fail for their
    // defect, not for the construction).
    let ok = hs(Algorithm::HS256, &good_claims);
    let ws = connect_with(&server.url(), &[("authorization", &bearer(&ok))]).await;
    Client::from_ws(ws.expect("accepted"), Encoding::Msgpack)
        .ping()
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_an_owning_group_read_but_do_not_write() {
    let server = TestServer::start().await;
    let mut svc = server.client("platform", Role::Service).await;
    let open = json!({"kind": "open_session", "channel": "video", "owner": {"group": "sales"}});
    ack_seq(&svc.command("session/grp", "open", open).await);
    let member = server.token_for("acme", "op5", Role::Operator, &["support", "sales"]);
    let outsider = server.token_for("acme", "op6", Role::Operator, &["support"]);
    let mut m = server.connect(&member, Encoding::Json).await;
    let mut o = server.connect(&outsider, Encoding::Msgpack).await;
    // Then: a member of the group reads the session …
    let (head, _, st) = m.subscribe_snapshot("session/grp").await;
    assert_eq!(head, 1);
    assert!(session(&st).owner.is_some());
    // … but may not edit it (it would have to claim it first).
    let f = m
        .command("session/grp", "t", json!({"kind": "add_tag", "tag": "x"}))
        .await;
    assert_eq!(error_code(&f), "forbidden");
    // Then: an operator outside the group may not even read it.
    assert_eq!(
        error_code(&o.subscribe("session/grp", None).await),
        "forbidden"
    );
    assert_eq!(error_code(&o.state_at("session/grp", 1).await), "forbidden");
    // Then: nothing was appended.
    m.assert_quiet().await;
    assert_eq!(m.head("session/grp").await, 1);
    server.stop().await;
}
