//! The catalog over real sockets, with several operators: coloured tags and auto-tag rules
//! defined by an admin, auto-tags fanned out with the message that caused them, tags entering
//! the catalog live, tag suggestions from the derived records, starred templates and posting a
//! template.

mod support;

use copanel_protocol::{
    Envelope, Event, MessageFrom, Role, ServerFrame, StreamState, TagSource, TagSuggestion,
};
use serde_json::json;
use support::*;

const S1: &str = "session/s1";

/// `tag_suggestions {prefix}` as `(company, mine)`; panics on an error.
async fn suggestions(c: &mut Client, prefix: &str) -> (Vec<TagSuggestion>, Vec<TagSuggestion>) {
    match query(c, json!({"what": "tag_suggestions", "prefix": prefix})).await {
        ServerFrame::Result {
            company: Some(company),
            mine: Some(mine),
            ..
        } => (company, mine),
        other => panic!("expected tag suggestions, got {other:?}"),
    }
}

/// `(tag, uses)` of each suggestion, in order.
fn names(list: &[TagSuggestion]) -> Vec<(&str, u64)> {
    list.iter().map(|s| (s.tag.as_str(), s.uses)).collect()
}

/// The next event of `stream` (other frames are skipped).
async fn next_event(c: &mut Client, stream: &str) -> Envelope {
    match c
        .recv_until(|f| matches!(f, ServerFrame::Event(e) if e.stream.as_str() == stream))
        .await
    {
        ServerFrame::Event(e) => e,
        _ => unreachable!(),
    }
}

async fn subscribed(c: &mut Client, stream: &str) {
    let f = c.subscribe(stream, None).await;
    assert!(
        matches!(f, ServerFrame::Subscribed { .. }),
        "subscribe {stream}: {f:?}"
    );
    let snap = c.recv().await;
    assert!(matches!(snap, ServerFrame::Snapshot { .. }), "{snap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_tags_reach_every_subscriber_with_their_message() {
    let server = TestServer::start().await;
    let mut adm = server.client("adm", Role::Admin).await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let mut sup = server.client("sup", Role::Supervisor).await;
    let mut svc = server.client("platform", Role::Service).await;

    // Operators watch the catalog while the admin edits it.
    subscribed(&mut op1, "catalog").await;
    subscribed(&mut sup, "catalog").await;
    let f = adm
        .command(
            "catalog",
            "d1",
            json!({"kind": "define_tag", "tag": "Stížnost", "background": "#FF0000", "text": "#ffffff"}),
        )
        .await;
    assert_eq!(ack_seq(&f), 1);
    let f = adm
        .command(
            "catalog",
            "r1",
            json!({"kind": "add_autotag_rule", "keywords": ["stížnost", "zpětné volání"], "tag": "stiznost"}),
        )
        .await;
    assert_eq!(ack_seq(&f), 2);
    let rule_id = created(&f);
    assert_eq!(rule_id, "r2");
    for c in [&mut op1, &mut sup] {
        let e = next_event(c, "catalog").await;
        assert_eq!(
            e.event,
            Event::TagDefined {
                tag: "Stížnost".into(),
                background: "#ff0000".into(),
                text: "#ffffff".into(),
            }
        );
        let e = next_event(c, "catalog").await;
        assert_eq!(e.seq, 2);
        assert_eq!(
            e.event,
            Event::AutotagRuleAdded {
                rule_id: "r2".into(),
                keywords: vec!["stížnost".into(), "zpětné volání".into()],
                tag: "Stížnost".into(),
            }
        );
    }
    // Only admins edit it.
    let f = op1
        .command(
            "catalog",
            "x",
            json!({"kind": "define_tag", "tag": "x", "background": "#000000", "text": "#ffffff"}),
        )
        .await;
    assert_eq!(error_code(&f), "forbidden");

    opened(&server, "s1", "op1").await;
    for c in [&mut op1, &mut sup, &mut adm] {
        subscribed(c, S1).await;
    }
    let f = svc
        .command(
            S1,
            "m1",
            json!({"kind": "post_message", "from": "client", "text": "Dobrý den, mám STIZNOST na fakturu."}),
        )
        .await;
    assert_eq!(ack_seq(&f), 3, "the ack names the last seq: the auto-tag's");
    for c in [&mut op1, &mut sup, &mut adm] {
        let msg = next_event(c, S1).await;
        let tag = next_event(c, S1).await;
        assert_eq!(msg.seq, 2);
        assert_eq!(tag.seq, 3);
        assert_eq!(msg.command_id.as_deref(), Some("m1"));
        assert_eq!(tag.command_id.as_deref(), Some("m1"));
        assert_eq!(msg.actor.id, "platform");
        assert!(matches!(
            &msg.event,
            Event::MessagePosted { from: MessageFrom::Client, text, template_id: None }
                if text == "Dobrý den, mám STIZNOST na fakturu."
        ));
        assert_eq!(
            tag.event,
            Event::TagAdded {
                tag: "Stížnost".into(),
                source: TagSource::Rule,
                rule_id: Some(rule_id.clone()),
            }
        );
    }
    // Not a whole word: no tag. Already tagged: not again.
    let f = svc
        .command(
            S1,
            "m2",
            json!({"kind": "post_message", "from": "client", "text": "stížnosti a stížnost"}),
        )
        .await;
    assert_eq!(ack_seq(&f), 4);
    let s = op1.session_at(S1, 4).await;
    assert_eq!(s.tags.len(), 1);
    assert_eq!(s.tags[0].source, TagSource::Rule);
    assert_eq!(s.tags[0].rule_id.as_deref(), Some("r2"));
    assert_eq!(s.messages, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_tags_enter_the_catalog_and_suggestions_follow_usage() {
    let server = TestServer::start().await;
    let mut adm = server.client("adm", Role::Admin).await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let mut sup = server.client("sup", Role::Supervisor).await;
    let mut svc = server.client("platform", Role::Service).await;
    // Watches the catalog and sends nothing, so no reply-wait drops its events.
    let mut op3 = server.client("op3", Role::Operator).await;

    for (cid, tag, bg) in [
        ("d1", "Stížnost", "#ff0000"),
        ("d2", "Věrnostní", "#00ff00"),
        ("d3", "Zpětné volání", "#0000ff"),
    ] {
        let f = adm
            .command(
                "catalog",
                cid,
                json!({"kind": "define_tag", "tag": tag, "background": bg, "text": "#ffffff"}),
            )
            .await;
        ack_seq(&f);
    }
    let f = adm
        .command(
            "catalog",
            "r",
            json!({"kind": "add_autotag_rule", "keywords": ["reklamace"], "tag": "Stížnost"}),
        )
        .await;
    ack_seq(&f);
    subscribed(&mut op3, "catalog").await;

    for s in ["s1", "s2", "s3"] {
        opened(&server, s, "op1").await;
    }
    // op1 tags VIP on three sessions: the first one brings VIP into the catalog, live.
    for s in ["s1", "s2", "s3"] {
        let f = op1
            .command(
                &format!("session/{s}"),
                &format!("vip-{s}"),
                json!({"kind": "add_tag", "tag": "VIP"}),
            )
            .await;
        ack_seq(&f);
    }
    let e = next_event(&mut op3, "catalog").await;
    assert_eq!(e.seq, 5);
    assert_eq!(e.actor.id, "op1");
    assert_eq!(e.command_id.as_deref(), Some("vip-s1"));
    assert_eq!(
        e.event,
        Event::TagDefined {
            tag: "VIP".into(),
            background: "#e0e0e0".into(),
            text: "#1f1f1f".into(),
        }
    );
    // The same tag again, in other spellings, does not redefine it.
    let f = sup
        .command(S1, "vip-again", json!({"kind": "add_tag", "tag": "vip"}))
        .await;
    ack_seq(&f);
    op1.command(
        "session/s2",
        "vr",
        json!({"kind": "add_tag", "tag": "Vrácení"}),
    )
    .await;
    for s in ["s1", "s2"] {
        let f = sup
            .command(
                &format!("session/{s}"),
                &format!("vo-{s}"),
                json!({"kind": "add_tag", "tag": "Velkoobchod"}),
            )
            .await;
        ack_seq(&f);
    }
    // An auto-tag counts in usage but is nobody's recent tag.
    let f = svc
        .command(
            "session/s3",
            "m",
            json!({"kind": "post_message", "from": "client", "text": "Reklamace!"}),
        )
        .await;
    assert_eq!(ack_seq(&f), 4);
    let e = next_event(&mut op3, "catalog").await;
    assert_eq!(e.seq, 6);
    assert!(matches!(&e.event, Event::TagDefined { tag, .. } if tag == "Vrácení"));
    let e = next_event(&mut op3, "catalog").await;
    assert!(matches!(&e.event, Event::TagDefined { tag, .. } if tag == "Velkoobchod"));
    op3.assert_quiet().await;

    // Company tags by usage then name; the operator's own, most recent first.
    let (company, mine) = suggestions(&mut op1, "v").await;
    assert_eq!(
        names(&company),
        vec![
            ("VIP", 3),
            ("Velkoobchod", 2),
            ("Vrácení", 1),
            ("Věrnostní", 0),
            ("Zpětné volání", 0),
        ]
    );
    assert_eq!(names(&mine), vec![("Vrácení", 1), ("VIP", 3)]);
    assert_eq!(company[0].background, "#e0e0e0");
    assert_eq!(company[0].text, "#1f1f1f");
    assert_eq!(company[3].background, "#00ff00");
    let (_, sup_mine) = suggestions(&mut sup, "").await;
    // sup's "vip" was already on s1: an accepted no-op, so not one of its recent tags.
    assert_eq!(names(&sup_mine), vec![("Velkoobchod", 2)]);

    // Removing a tag counts down; ties are ordered by name.
    let f = op1
        .command(
            "session/s3",
            "unvip",
            json!({"kind": "remove_tag", "tag": "vip"}),
        )
        .await;
    ack_seq(&f);
    let (company, _) = suggestions(&mut op1, "").await;
    assert_eq!(
        names(&company),
        vec![
            ("Velkoobchod", 2),
            ("VIP", 2),
            ("Stížnost", 1),
            ("Vrácení", 1),
            ("Věrnostní", 0),
            ("Zpětné volání", 0),
        ]
    );
    assert_eq!(company[2].background, "#ff0000");
    // Diacritics and case do not matter; a word inside the tag matches.
    let (company, mine) = suggestions(&mut op1, "STIZ").await;
    assert_eq!(names(&company), vec![("Stížnost", 1)]);
    assert!(mine.is_empty());
    let (company, _) = suggestions(&mut op1, "vol").await;
    assert_eq!(names(&company), vec![("Zpětné volání", 0)]);
    let (company, _) = suggestions(&mut op1, "obchod").await;
    assert!(company.is_empty(), "{company:?}");

    let long = "x".repeat(65);
    let f = query(&mut op1, json!({"what": "tag_suggestions", "prefix": long})).await;
    let (code, field, message) = error_parts(&f);
    assert_eq!(code, "too_large");
    assert_eq!(field.as_deref(), Some("prefix"));
    assert_eq!(message, "prefix is 65 characters; the limit is 64");

    // Another company sees none of it.
    let mut other = server
        .client_of(
            "globex",
            "op1",
            Role::Operator,
            copanel_protocol::Encoding::Msgpack,
        )
        .await;
    let (company, mine) = suggestions(&mut other, "").await;
    assert!(
        company.is_empty() && mine.is_empty(),
        "{company:?} {mine:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggestions_survive_a_restart() {
    let server = TestServer::start().await;
    let mut op1 = server.client("op1", Role::Operator).await;
    opened(&server, "s1", "op1").await;
    for tag in ["alpha", "beta"] {
        let f = op1
            .command(S1, tag, json!({"kind": "add_tag", "tag": tag}))
            .await;
        ack_seq(&f);
    }
    drop(op1);
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    let mut op1 = server.client("op1", Role::Operator).await;
    // The writer's cache is empty after the restart: it reloads the records it updates.
    opened(&server, "s2", "op1").await;
    let f = op1
        .command(
            "session/s2",
            "a2",
            json!({"kind": "add_tag", "tag": "ALPHA"}),
        )
        .await;
    ack_seq(&f);
    let (company, mine) = suggestions(&mut op1, "").await;
    assert_eq!(names(&company), vec![("alpha", 2), ("beta", 1)]);
    assert_eq!(names(&mine), vec![("alpha", 2), ("beta", 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_stars_a_template_and_posts_it() {
    let server = TestServer::start().await;
    let mut adm = server.client("adm", Role::Admin).await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let mut op2 = server.client("op2", Role::Operator).await;
    let mut sup = server.client("sup", Role::Supervisor).await;

    let f = adm
        .command(
            "catalog",
            "t",
            json!({"kind": "create_template", "title": "Omluva", "text": "Omlouváme se, řešíme vaši stížnost."}),
        )
        .await;
    let template_id = created(&f);
    assert_eq!(template_id, "t1");
    let f = adm
        .command(
            "catalog",
            "r",
            json!({"kind": "add_autotag_rule", "keywords": ["stížnost"], "tag": "Stížnost"}),
        )
        .await;
    ack_seq(&f);

    // op1's feed watched from a second connection of op1's, which sends nothing: a reply-wait
    // on the commanding connection would drop events that arrive before the ack.
    let mut op1_feed = server.client("op1", Role::Operator).await;
    subscribed(&mut op1_feed, "operator/op1").await;
    let f = op1
        .command(
            "operator/op1",
            "star",
            json!({"kind": "star_template", "template_id": template_id}),
        )
        .await;
    assert_eq!(ack_seq(&f), 1);
    let e = next_event(&mut op1_feed, "operator/op1").await;
    assert_eq!(
        e.event,
        Event::TemplateStarred {
            template_id: "t1".into()
        }
    );
    // Starring again appends nothing; a missing template is not found.
    let f = op1
        .command(
            "operator/op1",
            "star2",
            json!({"kind": "star_template", "template_id": "t1"}),
        )
        .await;
    assert_eq!(ack_seq(&f), 1);
    let f = op1
        .command(
            "operator/op1",
            "star3",
            json!({"kind": "star_template", "template_id": "t9"}),
        )
        .await;
    assert_eq!(error_code(&f), "not_found");
    // Nobody else stars on op1's feed.
    let f = op2
        .command(
            "operator/op1",
            "steal",
            json!({"kind": "star_template", "template_id": "t1"}),
        )
        .await;
    assert_eq!(error_code(&f), "forbidden");
    let f = op2
        .command(
            "operator/op2",
            "own",
            json!({"kind": "star_template", "template_id": "t1"}),
        )
        .await;
    assert_eq!(ack_seq(&f), 1);
    match op1.state_at("operator/op1", 1).await {
        ServerFrame::State {
            state: StreamState::Operator(s),
            ..
        } => assert_eq!(s.starred, vec!["t1".to_string()]),
        other => panic!("expected a feed, got {other:?}"),
    }

    opened(&server, "s1", "op1").await;
    subscribed(&mut sup, S1).await;
    let f = op1
        .command(
            S1,
            "tpl",
            json!({"kind": "post_message", "from": "operator", "template_id": "t1"}),
        )
        .await;
    assert_eq!(ack_seq(&f), 3);
    let msg = next_event(&mut sup, S1).await;
    assert_eq!(
        msg.event,
        Event::MessagePosted {
            from: MessageFrom::Operator,
            text: "Omlouváme se, řešíme vaši stížnost.".into(),
            template_id: Some("t1".into()),
        }
    );
    assert_eq!(msg.actor.id, "op1");
    let tag = next_event(&mut sup, S1).await;
    assert_eq!(tag.seq, msg.seq + 1);
    assert_eq!(tag.command_id.as_deref(), Some("tpl"));
    assert!(matches!(
        &tag.event,
        Event::TagAdded {
            source: TagSource::Rule,
            ..
        }
    ));

    // A deleted template can no longer be posted, but can still be unstarred.
    let f = adm
        .command(
            "catalog",
            "del",
            json!({"kind": "delete_template", "template_id": "t1"}),
        )
        .await;
    ack_seq(&f);
    let f = op1
        .command(
            S1,
            "tpl2",
            json!({"kind": "post_message", "from": "operator", "template_id": "t1"}),
        )
        .await;
    let (code, _, message) = error_parts(&f);
    assert_eq!(code, "not_found");
    assert_eq!(message, "template \"t1\" does not exist");
    let f = op1
        .command(
            "operator/op1",
            "unstar",
            json!({"kind": "unstar_template", "template_id": "t1"}),
        )
        .await;
    assert_eq!(ack_seq(&f), 2);
    let e = next_event(&mut op1_feed, "operator/op1").await;
    assert_eq!(e.seq, 2);
    assert_eq!(
        e.event,
        Event::TemplateUnstarred {
            template_id: "t1".into()
        }
    );
    server.stop().await;
}
