//! The catalog domain, given / when / then: tag definitions and colours, auto-tag rules,
//! templates; and the session and feed rules that read the catalog (tags entering the catalog,
//! auto-tags on transcript messages, posting a template, starring templates).

use copanel::domain::catalog::{DEFAULT_BACKGROUND, DEFAULT_TEXT};
use copanel::domain::{self, Ctx, Decision, EmptyWorld, Limits, Principal, Rejection, World};
use copanel_protocol::{
    CatalogState, Command, Envelope, Event, MessageFrom, OperatorState, Owner, StreamKind,
    StreamName, StreamState, TagDefinition, TagSource,
};
use std::collections::BTreeMap;

#[path = "common/given.rs"]
mod given;
use given::*;

const NOW: u64 = 1_700_000_000_000;

// ---- principals ------------------------------------------------------------------------------

// ---- streams and worlds ----------------------------------------------------------------------

fn catalog_stream() -> StreamName {
    StreamName::parse("catalog").unwrap()
}
fn session_stream() -> StreamName {
    StreamName::session("s1").unwrap()
}
fn feed(id: &str) -> StreamName {
    StreamName::operator(id).unwrap()
}

/// A world holding only the company catalog, as the writer loads it for tag and message
/// commands.
struct CatalogWorld(StreamState);

impl World for CatalogWorld {
    fn state(&self, stream: &StreamName) -> Option<&StreamState> {
        (stream.as_str() == "catalog").then_some(&self.0)
    }
    fn group_members(&self, _group: &str) -> Vec<String> {
        Vec::new()
    }
}

/// Folds `events` into `kind`'s initial state, event `i` at seq `i + 1`; returns the state
/// and the head.
fn fold(
    kind: StreamKind,
    stream: &StreamName,
    events: &[(Principal, Event)],
) -> (StreamState, u64) {
    let mut state = domain::initial(kind);
    for (i, (who, event)) in events.iter().enumerate() {
        let seq = i as u64 + 1;
        let env = Envelope {
            stream: stream.clone(),
            seq,
            at: NOW + seq,
            actor: who.actor(),
            command_id: None,
            event: event.clone(),
        };
        domain::apply(&mut state, &env);
    }
    (state, events.len() as u64)
}

/// A stream after some events.
struct Given {
    stream: StreamName,
    state: StreamState,
    head: u64,
}

/// The catalog after these events (all by the admin).
fn catalog(events: &[Event]) -> Given {
    let by_admin: Vec<_> = events.iter().map(|e| (admin(), e.clone())).collect();
    let (state, head) = fold(StreamKind::Catalog, &catalog_stream(), &by_admin);
    Given {
        stream: catalog_stream(),
        state,
        head,
    }
}

/// Session `s1`, opened by the platform and owned by op1, after these further events.
fn session(events: &[(Principal, Event)]) -> Given {
    let mut all = vec![(
        svc(),
        Event::SessionOpened {
            channel: "chat".into(),
            name: "Jana".into(),
            phone: String::new(),
            email: String::new(),
            parameters: BTreeMap::new(),
            owner: Owner::Operator {
                operator_id: "op1".into(),
            },
        },
    )];
    all.extend_from_slice(events);
    let (state, head) = fold(StreamKind::Session, &session_stream(), &all);
    Given {
        stream: session_stream(),
        state,
        head,
    }
}

/// Operator `id`'s feed after these events.
fn feed_of(id: &str, events: &[Event]) -> Given {
    let own: Vec<_> = events.iter().map(|e| (op(id), e.clone())).collect();
    let (state, head) = fold(StreamKind::Operator, &feed(id), &own);
    Given {
        stream: feed(id),
        state,
        head,
    }
}

fn catalog_state(g: &Given) -> &CatalogState {
    match &g.state {
        StreamState::Catalog(c) => c,
        other => panic!("not a catalog: {other:?}"),
    }
}

// ---- when ------------------------------------------------------------------------------------

fn decide_in(
    g: &Given,
    world: &dyn World,
    who: &Principal,
    cmd: Command,
    limits: &Limits,
) -> Result<Decision, Rejection> {
    let ctx = Ctx {
        principal: who,
        stream: &g.stream,
        now: NOW + 1000,
        next_seq: g.head + 1,
        limits,
        world,
        fresh_id: "fresh",
    };
    domain::decide(&g.state, &ctx, &cmd)
}

/// A command on the catalog (which reads no other stream).
fn when(g: &Given, who: &Principal, cmd: Command) -> Result<Decision, Rejection> {
    decide_in(g, &EmptyWorld, who, cmd, &Limits::default())
}

/// A command on a session or a feed, with the company catalog `cat` loaded.
fn when_with(g: &Given, cat: &Given, who: &Principal, cmd: Command) -> Result<Decision, Rejection> {
    when_limited(g, cat, who, cmd, &Limits::default())
}

fn when_limited(
    g: &Given,
    cat: &Given,
    who: &Principal,
    cmd: Command,
    limits: &Limits,
) -> Result<Decision, Rejection> {
    let world = CatalogWorld(cat.state.clone());
    decide_in(g, &world, who, cmd, limits)
}

/// The stream's state after an accepted decision's own events.
fn then_state(g: &Given, who: &Principal, d: &Decision) -> StreamState {
    let mut state = g.state.clone();
    for (i, event) in d.events.iter().enumerate() {
        let seq = g.head + 1 + i as u64;
        let env = Envelope {
            stream: g.stream.clone(),
            seq,
            at: NOW + seq,
            actor: who.actor(),
            command_id: Some("c".into()),
            event: event.clone(),
        };
        domain::apply(&mut state, &env);
    }
    state
}

fn then_catalog(g: &Given, d: &Decision) -> CatalogState {
    match then_state(g, &admin(), d) {
        StreamState::Catalog(c) => c,
        other => panic!("not a catalog: {other:?}"),
    }
}

// ---- then ------------------------------------------------------------------------------------

/// Accepted, with no side events; returns the events.
#[track_caller]
fn events(r: Result<Decision, Rejection>) -> Vec<Event> {
    let d = accepted(r);
    assert!(d.others.is_empty(), "unexpected side events {:?}", d.others);
    d.events
}

// ---- building blocks -------------------------------------------------------------------------

fn define(tag: &str, background: &str, text: &str) -> Command {
    Command::DefineTag {
        tag: tag.into(),
        background: background.into(),
        text: text.into(),
    }
}
fn defined(tag: &str, background: &str, text: &str) -> Event {
    Event::TagDefined {
        tag: tag.into(),
        background: background.into(),
        text: text.into(),
    }
}
fn defined_default(tag: &str) -> Event {
    defined(tag, DEFAULT_BACKGROUND, DEFAULT_TEXT)
}
fn add_rule(keywords: &[&str], tag: &str) -> Command {
    Command::AddAutotagRule {
        keywords: keywords.iter().map(|k| k.to_string()).collect(),
        tag: tag.into(),
    }
}
fn rule_added(rule_id: &str, keywords: &[&str], tag: &str) -> Event {
    Event::AutotagRuleAdded {
        rule_id: rule_id.into(),
        keywords: keywords.iter().map(|k| k.to_string()).collect(),
        tag: tag.into(),
    }
}
fn create_template(title: &str, text: &str) -> Command {
    Command::CreateTemplate {
        title: title.into(),
        text: text.into(),
    }
}
fn template_created(id: &str, title: &str, text: &str) -> Event {
    Event::TemplateCreated {
        template_id: id.into(),
        title: title.into(),
        text: text.into(),
    }
}
fn update_template(id: &str, title: Option<&str>, text: Option<&str>) -> Command {
    Command::UpdateTemplate {
        template_id: id.into(),
        title: title.map(Into::into),
        text: text.map(Into::into),
    }
}
fn say(from: MessageFrom, text: &str) -> Command {
    Command::PostMessage {
        from,
        text: Some(text.into()),
        template_id: None,
    }
}
fn client_says(text: &str) -> Command {
    say(MessageFrom::Client, text)
}
fn posted(from: MessageFrom, text: &str) -> Event {
    Event::MessagePosted {
        from,
        text: text.into(),
        template_id: None,
    }
}
fn by_rule(tag: &str, rule_id: &str) -> Event {
    Event::TagAdded {
        tag: tag.into(),
        source: TagSource::Rule,
        rule_id: Some(rule_id.into()),
    }
}
fn tag_added(who: Principal, tag: &str) -> (Principal, Event) {
    (
        who,
        Event::TagAdded {
            tag: tag.into(),
            source: TagSource::Manual,
            rule_id: None,
        },
    )
}
fn star(id: &str) -> Command {
    Command::StarTemplate {
        template_id: id.into(),
    }
}
fn unstar(id: &str) -> Command {
    Command::UnstarTemplate {
        template_id: id.into(),
    }
}

/// Every catalog command, valid against [`rich_catalog`].
fn every_catalog_command() -> Vec<Command> {
    vec![
        define("vip", "#ff0000", "#ffffff"),
        add_rule(&["reklamace"], "Reklamace"),
        Command::RemoveAutotagRule {
            rule_id: "r2".into(),
        },
        create_template("Pozdrav", "Dobrý den"),
        update_template("t3", Some("Nový"), None),
        Command::DeleteTemplate {
            template_id: "t3".into(),
        },
    ]
}

/// A catalog with one coloured tag, a rule (`r2`) and a template (`t3`).
fn rich_catalog() -> Given {
    catalog(&[
        defined("Stížnost", "#ff0000", "#ffffff"),
        rule_added("r2", &["stížnost"], "Stížnost"),
        template_created("t3", "Omluva", "Omlouváme se za potíže."),
    ])
}

// ---- catalog: who may change it --------------------------------------------------------------

#[test]
fn only_admins_and_the_platform_change_the_catalog() {
    let g = rich_catalog();
    for cmd in every_catalog_command() {
        for who in [op("op1"), sup()] {
            let e = forbidden(when(&g, &who, cmd.clone()));
            assert_eq!(
                e.message,
                format!(
                    "only admins and the platform may change the catalog ({})",
                    cmd.kind()
                )
            );
        }
        for who in [admin(), svc()] {
            let d = accepted(when(&g, &who, cmd.clone()));
            assert!(!d.events.is_empty(), "{} appends", cmd.kind());
            assert!(d.others.is_empty());
        }
    }
}

#[test]
fn everyone_of_the_company_reads_the_catalog() {
    let g = catalog(&[]);
    for who in [op("op1"), sup(), admin(), svc()] {
        assert_eq!(domain::can_read(&g.stream, &g.state, &who), Ok(()));
    }
}

#[test]
fn session_and_feed_commands_are_not_catalog_commands() {
    let g = catalog(&[]);
    for cmd in [
        Command::AddTag { tag: "x".into() },
        client_says("hi"),
        star("t1"),
    ] {
        let e = invalid(when(&g, &admin(), cmd.clone()), "kind");
        assert_eq!(
            e.message,
            format!("{} is not a command for catalog streams", cmd.kind())
        );
    }
}

// ---- define_tag ------------------------------------------------------------------------------

#[test]
fn define_tag_defines_with_lowercased_colours() {
    let g = catalog(&[]);
    let d = accepted(when(&g, &admin(), define("  VIP  ", "#FF8800", "#00aAbB")));
    assert_eq!(d.events, vec![defined("VIP", "#ff8800", "#00aabb")]);
    assert_eq!(d.created, None);
    let s = then_catalog(&g, &d);
    assert_eq!(
        s.tag_definitions,
        vec![TagDefinition {
            tag: "VIP".into(),
            background: "#ff8800".into(),
            text: "#00aabb".into(),
        }]
    );
}

#[test]
fn define_tag_recolours_under_the_first_spelling() {
    let g = catalog(&[defined("Stížnost", "#ff0000", "#ffffff")]);
    // Any case and diacritics name the same tag; the event keeps the catalog's spelling.
    let d = accepted(when(&g, &admin(), define("STIZNOST", "#000000", "#ffffff")));
    assert_eq!(d.events, vec![defined("Stížnost", "#000000", "#ffffff")]);
    let s = then_catalog(&g, &d);
    assert_eq!(s.tag_definitions.len(), 1);
    assert_eq!(s.tag_definitions[0].tag, "Stížnost");
    assert_eq!(s.tag_definitions[0].background, "#000000");
    // The same colours again (in any case): accepted, nothing appended.
    no_op(when(&g, &admin(), define("stížnost", "#FF0000", "#FFFFFF")));
}

#[test]
fn define_tag_checks_tag_and_colours() {
    let g = catalog(&[]);
    let ok = "#e0e0e0";
    let w = |cmd| when(&g, &admin(), cmd);
    let e = invalid(w(define("   ", ok, ok)), "tag");
    assert_eq!(e.message, "tag is empty");
    let e = too_large(w(define(&"t".repeat(65), ok, ok)), "tag");
    assert_eq!(e.message, "tag is 65 characters; the limit is 64");
    invalid(w(define("a\u{7}b", ok, ok)), "tag");
    for bad in [
        "red", "#12345", "#1234567", "#12345g", "e0e0e0f", "", "#é0e0e0",
    ] {
        let e = invalid(w(define("vip", bad, ok)), "background");
        assert!(
            e.message
                .starts_with("background must be a colour written #rrggbb"),
            "{e:?}"
        );
        invalid(w(define("vip", ok, bad)), "text");
    }
    // 64 characters is within the limit.
    accepted(w(define(&"t".repeat(64), ok, ok)));
}

// ---- auto-tag rules --------------------------------------------------------------------------

#[test]
fn a_rule_for_a_new_tag_defines_it_first_and_is_named_by_seq() {
    let g = catalog(&[template_created("t1", "a", "b")]);
    let d = accepted(when(
        &g,
        &admin(),
        add_rule(&[" stížnost ", "zpětné volání"], "Stížnost"),
    ));
    assert_eq!(
        d.events,
        vec![
            defined_default("Stížnost"),
            rule_added("r2", &["stížnost", "zpětné volání"], "Stížnost"),
        ]
    );
    assert_eq!(d.created.as_deref(), Some("r2"));
    let s = then_catalog(&g, &d);
    assert_eq!(s.rules.len(), 1);
    assert_eq!(s.rules[0].rule_id, "r2");
    assert_eq!(s.tag_definitions[0].background, DEFAULT_BACKGROUND);
    assert_eq!(s.tag_definitions[0].text, DEFAULT_TEXT);
}

#[test]
fn a_rule_for_a_known_tag_uses_its_spelling_and_keeps_its_colours() {
    let g = catalog(&[defined("Stížnost", "#ff0000", "#ffffff")]);
    let d = accepted(when(&g, &admin(), add_rule(&["reklamace"], "STIZNOST")));
    assert_eq!(d.events, vec![rule_added("r2", &["reklamace"], "Stížnost")]);
    assert_eq!(d.created.as_deref(), Some("r2"));
    let s = then_catalog(&g, &d);
    assert_eq!(s.tag_definitions[0].background, "#ff0000");
}

#[test]
fn rule_keywords_are_checked() {
    let g = catalog(&[]);
    let w = |keywords: Vec<String>, tag: &str| {
        when(
            &g,
            &admin(),
            Command::AddAutotagRule {
                keywords,
                tag: tag.into(),
            },
        )
    };
    let e = invalid(w(vec![], "x"), "keywords");
    assert_eq!(e.message, "an auto-tag rule needs at least one keyword");
    let many: Vec<String> = (0..21).map(|i| format!("k{i}")).collect();
    let e = too_large(w(many.clone(), "x"), "keywords");
    assert_eq!(
        e.message,
        "an auto-tag rule has 21 keywords; the limit is 20"
    );
    accepted(w(many[..20].to_vec(), "x"));
    let e = too_large(w(vec!["ok".into(), "k".repeat(65)], "x"), "keywords");
    assert_eq!(e.message, "keyword 2 is 65 characters; the limit is 64");
    accepted(w(vec!["k".repeat(64)], "x"));
    let e = invalid(w(vec!["  ".into()], "x"), "keywords");
    assert_eq!(e.message, "keyword 1 has no letters or digits");
    invalid(w(vec!["?!".into()], "x"), "keywords");
    invalid(w(vec!["a\u{0}b".into()], "x"), "keywords");
    // The tag is checked like any tag.
    invalid(w(vec!["a".into()], " "), "tag");
    too_large(w(vec!["a".into()], &"t".repeat(65)), "tag");
}

#[test]
fn rules_are_removed_by_id() {
    let g = rich_catalog();
    let e = not_found(when(
        &g,
        &admin(),
        Command::RemoveAutotagRule {
            rule_id: "r9".into(),
        },
    ));
    assert_eq!(e.message, "auto-tag rule \"r9\" does not exist");
    let d = accepted(when(
        &g,
        &admin(),
        Command::RemoveAutotagRule {
            rule_id: "r2".into(),
        },
    ));
    assert_eq!(
        d.events,
        vec![Event::AutotagRuleRemoved {
            rule_id: "r2".into()
        }]
    );
    let s = then_catalog(&g, &d);
    assert!(s.rules.is_empty());
    // The tag's definition stays.
    assert_eq!(s.tag_definitions.len(), 1);
}

// ---- templates -------------------------------------------------------------------------------

#[test]
fn templates_are_created_with_seq_ids() {
    let g = catalog(&[defined("vip", "#000000", "#ffffff")]);
    let d = accepted(when(
        &g,
        &admin(),
        create_template("Pozdrav", "Dobrý den,\nvítejte."),
    ));
    assert_eq!(
        d.events,
        vec![template_created("t2", "Pozdrav", "Dobrý den,\nvítejte.")]
    );
    assert_eq!(d.created.as_deref(), Some("t2"));
    let s = then_catalog(&g, &d);
    assert_eq!(s.templates.len(), 1);
    assert_eq!(s.templates[0].template_id, "t2");
    assert_eq!(s.templates[0].text, "Dobrý den,\nvítejte.");
}

#[test]
fn template_fields_are_checked() {
    let g = rich_catalog();
    let limits = Limits {
        message_chars: 10,
        ..Limits::default()
    };
    let w = |cmd| decide_in(&g, &EmptyWorld, &admin(), cmd, &limits);
    let e = invalid(w(create_template(" ", "x")), "title");
    assert_eq!(e.message, "template title is empty");
    let e = too_large(w(create_template(&"t".repeat(201), "x")), "title");
    assert_eq!(
        e.message,
        "template title is 201 characters; the limit is 200"
    );
    accepted(w(create_template(&"t".repeat(200), "x")));
    invalid(w(create_template("a\nb", "x")), "title");
    let e = invalid(w(create_template("a", " \n ")), "text");
    assert_eq!(e.message, "template text is empty");
    let e = too_large(w(create_template("a", "0123456789x")), "text");
    assert_eq!(e.message, "template text is 11 characters; the limit is 10");
    invalid(w(create_template("a", "x\u{1b}")), "text");
    // update_template: the same checks, and at least one of title and text.
    let e = invalid(w(update_template("t3", None, None)), "title");
    assert_eq!(e.message, "update_template needs title or text");
    invalid(w(update_template("t3", Some(""), None)), "title");
    too_large(w(update_template("t3", None, Some("0123456789x"))), "text");
}

#[test]
fn templates_are_updated_and_deleted() {
    let g = rich_catalog();
    let e = not_found(when(&g, &admin(), update_template("t9", Some("x"), None)));
    assert_eq!(e.message, "template \"t9\" does not exist");
    let d = accepted(when(
        &g,
        &admin(),
        update_template("t3", Some("Omluva"), Some("Pardon.")),
    ));
    // Only what changes is recorded.
    assert_eq!(
        d.events,
        vec![Event::TemplateUpdated {
            template_id: "t3".into(),
            title: None,
            text: Some("Pardon.".into()),
        }]
    );
    let s = then_catalog(&g, &d);
    assert_eq!(s.templates[0].title, "Omluva");
    assert_eq!(s.templates[0].text, "Pardon.");
    no_op(when(
        &g,
        &admin(),
        update_template("t3", Some("Omluva"), None),
    ));

    not_found(when(
        &g,
        &admin(),
        Command::DeleteTemplate {
            template_id: "t9".into(),
        },
    ));
    let d = accepted(when(
        &g,
        &admin(),
        Command::DeleteTemplate {
            template_id: "t3".into(),
        },
    ));
    assert_eq!(
        d.events,
        vec![Event::TemplateDeleted {
            template_id: "t3".into()
        }]
    );
    assert!(then_catalog(&g, &d).templates.is_empty());
}

#[test]
fn the_catalog_fold_is_a_replay_of_its_events() {
    let g = catalog(&[
        defined("vip", "#000000", "#ffffff"),
        defined("VIP", "#111111", "#222222"),
        rule_added("r3", &["a"], "vip"),
        rule_added("r4", &["b"], "x"),
        template_created("t5", "A", "a"),
        Event::TemplateUpdated {
            template_id: "t5".into(),
            title: Some("B".into()),
            text: None,
        },
        template_created("t7", "C", "c"),
        Event::AutotagRuleRemoved {
            rule_id: "r3".into(),
        },
        Event::TemplateDeleted {
            template_id: "t7".into(),
        },
        // Events of other kinds and about missing things are ignored.
        Event::SessionClosed,
        Event::TemplateDeleted {
            template_id: "t99".into(),
        },
    ]);
    let s = catalog_state(&g);
    assert_eq!(
        s.tag_definitions,
        vec![TagDefinition {
            tag: "vip".into(),
            background: "#111111".into(),
            text: "#222222".into(),
        }]
    );
    assert_eq!(s.rules.len(), 1);
    assert_eq!(s.rules[0].rule_id, "r4");
    assert_eq!(s.templates.len(), 1);
    assert_eq!(s.templates[0].title, "B");
    assert_eq!(s.templates[0].text, "a");
}

// ---- add_tag: new tags enter the catalog -----------------------------------------------------

#[test]
fn a_tag_new_to_the_company_enters_the_catalog_with_default_colours() {
    let g = session(&[]);
    let cat = catalog(&[defined("Stížnost", "#ff0000", "#ffffff")]);
    let d = accepted(when_with(
        &g,
        &cat,
        &op("op1"),
        Command::AddTag {
            tag: " VIP ".into(),
        },
    ));
    assert_eq!(
        d.events,
        vec![Event::TagAdded {
            tag: "VIP".into(),
            source: TagSource::Manual,
            rule_id: None,
        }]
    );
    assert_eq!(d.others, vec![(catalog_stream(), defined_default("VIP"))]);
    // A tag the catalog knows, in any case and diacritics: no catalog event.
    let d = accepted(when_with(
        &g,
        &cat,
        &op("op1"),
        Command::AddTag {
            tag: "STIZNOST".into(),
        },
    ));
    assert_eq!(d.events.len(), 1);
    assert!(d.others.is_empty());
    // A tag already on the session: nothing at all.
    let tagged = session(&[tag_added(op("op1"), "vip")]);
    no_op(when_with(
        &tagged,
        &cat,
        &op("op1"),
        Command::AddTag { tag: "VIP".into() },
    ));
    // Refused add_tag: no catalog event either.
    forbidden(when_with(
        &g,
        &cat,
        &op("op9"),
        Command::AddTag { tag: "new".into() },
    ));
}

// ---- auto-tags -------------------------------------------------------------------------------

/// A catalog with rules: r1 stížnost → Stížnost, r2 "zpětné volání" → Callback, r3 faktura →
/// Faktura, r4 REKLAMACE → Stížnost (same tag as r1).
fn rules_catalog() -> Given {
    catalog(&[
        rule_added("r1", &["stížnost"], "Stížnost"),
        rule_added("r2", &["zpětné volání"], "Callback"),
        rule_added("r3", &["faktura", "účet"], "Faktura"),
        rule_added("r4", &["REKLAMACE"], "Stížnost"),
    ])
}

#[test]
fn keywords_match_ignoring_case_and_diacritics_both_ways() {
    let g = session(&[]);
    let cat = rules_catalog();
    // Keyword with diacritics, message without and in capitals.
    let d = accepted(when_with(&g, &cat, &svc(), client_says("Mam STIZNOST!")));
    assert_eq!(
        d.events,
        vec![
            posted(MessageFrom::Client, "Mam STIZNOST!"),
            by_rule("Stížnost", "r1")
        ]
    );
    assert!(d.others.is_empty());
    // Keyword in capitals without diacritics, message with them.
    let d = accepted(when_with(
        &g,
        &cat,
        &svc(),
        client_says("podávám reklamáci… ne, reklamace."),
    ));
    assert_eq!(d.events[1..], [by_rule("Stížnost", "r4")]);
    // The tag lands on the session with its source and rule.
    let s = match then_state(&g, &svc(), &d) {
        StreamState::Session(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(s.tags.len(), 1);
    assert_eq!(s.tags[0].source, TagSource::Rule);
    assert_eq!(s.tags[0].rule_id.as_deref(), Some("r4"));
    assert_eq!(s.messages, 1);
}

#[test]
fn keywords_match_whole_words_only() {
    let g = session(&[]);
    let cat = rules_catalog();
    for text in ["Kde je fakturace?", "refaktura", "stížnosti", "účetní"] {
        let d = accepted(when_with(&g, &cat, &svc(), client_says(text)));
        assert_eq!(d.events, vec![posted(MessageFrom::Client, text)], "{text}");
    }
    let d = accepted(when_with(&g, &cat, &svc(), client_says("(faktura)")));
    assert_eq!(d.events[1..], [by_rule("Faktura", "r3")]);
    // Any keyword of a rule is enough.
    let d = accepted(when_with(&g, &cat, &svc(), client_says("Ucet prosim")));
    assert_eq!(d.events[1..], [by_rule("Faktura", "r3")]);
}

#[test]
fn phrases_match_as_consecutive_words() {
    let g = session(&[]);
    let cat = rules_catalog();
    let d = accepted(when_with(
        &g,
        &cat,
        &svc(),
        client_says("Prosím o ZPETNE   volani, díky"),
    ));
    assert_eq!(d.events[1..], [by_rule("Callback", "r2")]);
    for text in ["volání zpětné", "zpětné, ne, volání později", "zpětné"] {
        let d = accepted(when_with(&g, &cat, &svc(), client_says(text)));
        assert_eq!(d.events.len(), 1, "{text}: {:?}", d.events);
    }
}

#[test]
fn each_tag_is_added_once_per_message() {
    let g = session(&[]);
    let cat = rules_catalog();
    // r1 and r4 both match and both add Stížnost: once, from the first rule.
    let text = "stížnost a reklamace, zpětné volání, faktura";
    let d = accepted(when_with(&g, &cat, &svc(), client_says(text)));
    assert_eq!(
        d.events,
        vec![
            posted(MessageFrom::Client, text),
            by_rule("Stížnost", "r1"),
            by_rule("Callback", "r2"),
            by_rule("Faktura", "r3"),
        ]
    );
}

#[test]
fn a_tag_already_on_the_session_is_not_added_again() {
    // Any spelling of the tag counts, whoever added it.
    let g = session(&[tag_added(op("op1"), "STIZNOST")]);
    let cat = rules_catalog();
    let d = accepted(when_with(
        &g,
        &cat,
        &svc(),
        client_says("stížnost, faktura"),
    ));
    assert_eq!(
        d.events,
        vec![
            posted(MessageFrom::Client, "stížnost, faktura"),
            by_rule("Faktura", "r3"),
        ]
    );
}

#[test]
fn auto_tags_stop_at_the_tag_limit_without_refusing_the_message() {
    let limits = Limits {
        tags_per_session: 2,
        ..Limits::default()
    };
    let cat = rules_catalog();
    let text = "stížnost, zpětné volání, faktura";
    let one_free = session(&[tag_added(op("op1"), "vip")]);
    let d = accepted(when_limited(
        &one_free,
        &cat,
        &svc(),
        client_says(text),
        &limits,
    ));
    assert_eq!(
        d.events,
        vec![posted(MessageFrom::Client, text), by_rule("Stížnost", "r1")]
    );
    let full = session(&[tag_added(op("op1"), "vip"), tag_added(op("op1"), "b")]);
    let d = accepted(when_limited(
        &full,
        &cat,
        &svc(),
        client_says(text),
        &limits,
    ));
    assert_eq!(d.events, vec![posted(MessageFrom::Client, text)]);
}

#[test]
fn operator_messages_are_auto_tagged_too() {
    let g = session(&[]);
    let cat = rules_catalog();
    let d = accepted(when_with(
        &g,
        &cat,
        &op("op1"),
        say(MessageFrom::Operator, "Posílám fakturu? Ne: faktura."),
    ));
    assert_eq!(d.events[1..], [by_rule("Faktura", "r3")]);
    // Without rules nothing but the message.
    let d = accepted(when_with(
        &g,
        &catalog(&[]),
        &op("op1"),
        say(MessageFrom::Operator, "faktura"),
    ));
    assert_eq!(d.events, vec![posted(MessageFrom::Operator, "faktura")]);
    // A removed rule no longer applies.
    let removed = catalog(&[
        rule_added("r1", &["faktura"], "Faktura"),
        Event::AutotagRuleRemoved {
            rule_id: "r1".into(),
        },
    ]);
    let d = accepted(when_with(
        &g,
        &removed,
        &op("op1"),
        say(MessageFrom::Operator, "faktura"),
    ));
    assert_eq!(d.events.len(), 1);
}

// ---- post_message {template_id} --------------------------------------------------------------

#[test]
fn a_template_is_posted_with_its_text_and_auto_tags() {
    let g = session(&[]);
    let cat = catalog(&[
        template_created("t1", "Faktura", "Vaše faktura je na cestě."),
        rule_added("r2", &["faktura"], "Faktura"),
    ]);
    let post = |id: &str| Command::PostMessage {
        from: MessageFrom::Operator,
        text: None,
        template_id: Some(id.into()),
    };
    let d = accepted(when_with(&g, &cat, &op("op1"), post("t1")));
    assert_eq!(
        d.events,
        vec![
            Event::MessagePosted {
                from: MessageFrom::Operator,
                text: "Vaše faktura je na cestě.".into(),
                template_id: Some("t1".into()),
            },
            by_rule("Faktura", "r2"),
        ]
    );
    let e = not_found(when_with(&g, &cat, &op("op1"), post("t9")));
    assert_eq!(e.message, "template \"t9\" does not exist");
    let deleted = catalog(&[
        template_created("t1", "a", "b"),
        Event::TemplateDeleted {
            template_id: "t1".into(),
        },
    ]);
    not_found(when_with(&g, &deleted, &op("op1"), post("t1")));
    // Permission comes before the lookup.
    forbidden(when_with(&g, &cat, &op("op9"), post("t1")));
}

// ---- starred templates -----------------------------------------------------------------------

#[test]
fn an_operator_stars_and_unstars_on_its_own_feed() {
    let cat = catalog(&[
        template_created("t1", "a", "b"),
        template_created("t2", "c", "d"),
    ]);
    let g = feed_of("op2", &[]);
    let d = accepted(when_with(&g, &cat, &op("op2"), star("t1")));
    assert_eq!(
        d.events,
        vec![Event::TemplateStarred {
            template_id: "t1".into()
        }]
    );
    assert!(d.others.is_empty());
    let starred = feed_of(
        "op2",
        &[Event::TemplateStarred {
            template_id: "t1".into(),
        }],
    );
    match &starred.state {
        StreamState::Operator(OperatorState { starred, .. }) => assert_eq!(starred, &["t1"]),
        other => panic!("{other:?}"),
    }
    // Starring again: accepted, nothing appended.
    no_op(when_with(&starred, &cat, &op("op2"), star("t1")));
    let d = accepted(when_with(&starred, &cat, &op("op2"), unstar("t1")));
    assert_eq!(
        d.events,
        vec![Event::TemplateUnstarred {
            template_id: "t1".into()
        }]
    );
    match then_state(&starred, &op("op2"), &d) {
        StreamState::Operator(s) => assert!(s.starred.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn starring_needs_the_template_and_unstarring_needs_the_star() {
    let cat = catalog(&[template_created("t1", "a", "b")]);
    let g = feed_of("op2", &[]);
    let e = not_found(when_with(&g, &cat, &op("op2"), star("t9")));
    assert_eq!(e.message, "template \"t9\" does not exist");
    let e = not_found(when_with(&g, &cat, &op("op2"), unstar("t1")));
    assert_eq!(e.message, "template \"t1\" is not starred");
    // A starred template deleted from the catalog can still be unstarred, not starred.
    let gone = catalog(&[
        template_created("t1", "a", "b"),
        Event::TemplateDeleted {
            template_id: "t1".into(),
        },
    ]);
    let starred = feed_of(
        "op2",
        &[Event::TemplateStarred {
            template_id: "t1".into(),
        }],
    );
    events(when_with(&starred, &gone, &op("op2"), unstar("t1")));
    not_found(when_with(&g, &gone, &op("op2"), star("t1")));
}

#[test]
fn only_the_feeds_own_operator_stars_on_it() {
    let cat = catalog(&[template_created("t1", "a", "b")]);
    let starred = feed_of(
        "op2",
        &[Event::TemplateStarred {
            template_id: "t1".into(),
        }],
    );
    for who in [op("op1"), sup(), admin(), svc()] {
        let e = forbidden(when_with(&starred, &cat, &who, star("t1")));
        assert_eq!(
            e.message,
            "only operator \"op2\" stars templates on operator/op2"
        );
        forbidden(when_with(&starred, &cat, &who, unstar("t1")));
    }
}
