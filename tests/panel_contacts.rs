//! The contact directory over real sockets with several operators: adding a client, live
//! contact changes in the same atomic append as the session's, linking from another session,
//! removal unlinking every session, and search (diacritics, phone fragments, emails,
//! identifiers, company isolation, restart). Plus a scale check of the search index through the
//! domain and index API directly.

mod support;

use copanel::domain::{self, Ctx, Limits, Principal, World};
use copanel::search::ContactIndex;
use copanel::store::SledStore;
use copanel_protocol::{
    Command, ContactDetail, ContactHit, ContactState, ContactStatus, Encoding, Envelope, Event,
    Owner, Role, ServerFrame, StreamName, StreamState,
};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use support::*;

// ---- helpers ---------------------------------------------------------------------------------

/// `query contacts {q}` → the hits (asserts a result).
async fn search(c: &mut Client, q: &str) -> Vec<ContactHit> {
    match query(c, json!({"what": "contacts", "q": q})).await {
        ServerFrame::Result {
            contacts: Some(hits),
            ..
        } => hits,
        other => panic!("expected contacts for {q:?}, got {other:?}"),
    }
}

/// The ids of the hits of `q`.
async fn found(c: &mut Client, q: &str) -> Vec<String> {
    search(c, q)
        .await
        .into_iter()
        .map(|h| h.contact_id)
        .collect()
}

/// Opens `session/<id>` as the platform with this client, owned by `owner`.
async fn open_with(server: &TestServer, id: &str, owner: &str, name: &str, phone: &str) {
    let mut svc = server.client("platform", Role::Service).await;
    let f = svc
        .command(
            &format!("session/{id}"),
            &format!("open-{id}"),
            json!({"kind": "open_session", "channel": "chat",
                "client": {"name": name, "phone": phone, "email": ""},
                "owner": {"operator_id": owner}}),
        )
        .await;
    assert_eq!(ack_seq(&f), 1);
}

/// The next `n` events, in arrival order, skipping acks and pongs.
async fn events(c: &mut Client, n: usize) -> Vec<Envelope> {
    c.recv_events(n).await
}

fn contact(s: &StreamState) -> &ContactState {
    match s {
        StreamState::Contact(c) => c,
        other => panic!("expected a contact state, got {other:?}"),
    }
}

// ---- the directory over sockets ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_share_a_contact_across_sessions_live() {
    let server = TestServer::start().await;
    // Given session a (Jana Nováková, +420 777 123 456) owned by op1 with op2 joined.
    opened(&server, "a", "op1").await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let f = op1
        .command(
            "session/a",
            "inv",
            json!({"kind": "invite_collaborator", "operator_id": "op2"}),
        )
        .await;
    assert_eq!(ack_seq(&f), 2);
    let mut op2 = server
        .connect(&server.token("op2", Role::Operator), Encoding::Msgpack)
        .await;
    let f = op2
        .command("session/a", "acc", json!({"kind": "accept_invitation"}))
        .await;
    assert_eq!(ack_seq(&f), 3);
    let (head, _, _) = op2.subscribe_snapshot("session/a").await;
    assert_eq!(head, 3);
    // A search before any contact exists builds the company's (empty) index.
    let mut op4 = server.client("op4", Role::Operator).await;
    assert!(found(&mut op4, "jana").await.is_empty());

    // When op1 adds the client to the directory.
    let f = op1
        .command("session/a", "add", json!({"kind": "add_to_directory"}))
        .await;
    assert_eq!(ack_seq(&f), 4);
    let cid = created(&f);
    let cs = format!("contact/{cid}");
    // Then op2 sees the link live, and the contact's log starts with its creation by the same
    // command.
    let e = op2.recv_event().await;
    assert_eq!(e.stream.as_str(), "session/a");
    assert_eq!(
        e.event,
        Event::ContactLinked {
            contact_id: cid.clone()
        }
    );
    assert_eq!(e.command_id.as_deref(), Some("add"));
    let (head, _, state) = op2.subscribe_snapshot(&cs).await;
    assert_eq!(head, 1);
    let c = contact(&state);
    assert_eq!(c.status, ContactStatus::Active);
    assert_eq!(c.name, "Jana Nováková");
    assert_eq!(c.phone, "+420 777 123 456");
    assert_eq!(c.sessions, vec!["a".to_string()]);
    let log = op2.full_history(&cs).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].command_id.as_deref(), Some("add"));
    assert_eq!(log[0].actor.id, "op1");

    // When op1 changes the client's name: the session and the contact change in one append.
    let f = op1
        .command(
            "session/a",
            "info",
            json!({"kind": "set_client_info", "name": "Jana Dvořáková", "email": "jana@example.com"}),
        )
        .await;
    assert_eq!(ack_seq(&f), 5);
    let got = events(&mut op2, 2).await;
    let mut by_stream: HashMap<String, Event> = HashMap::new();
    for e in &got {
        assert_eq!(e.command_id.as_deref(), Some("info"), "{e:?}");
        by_stream.insert(e.stream.as_str().to_owned(), e.event.clone());
    }
    assert_eq!(
        by_stream["session/a"],
        Event::ClientInfoChanged {
            name: Some("Jana Dvořáková".into()),
            phone: None,
            email: None,
        }
    );
    assert_eq!(
        by_stream[&cs],
        Event::ContactUpdated {
            name: Some("Jana Dvořáková".into()),
            phone: None,
            email: None,
        }
    );

    // When details are added, one of them twice: each lands on the contact, the session stays.
    for (i, (detail, value)) in [
        ("identifier", "CRM-17"),
        ("identifier", "CRM-17"),
        ("email", "jana.work@firma.cz"),
        ("phone", "+420 603 111 222"),
    ]
    .into_iter()
    .enumerate()
    {
        let f = op1
            .command(
                "session/a",
                &format!("det-{i}"),
                json!({"kind": "add_contact_detail", "detail": detail, "value": value}),
            )
            .await;
        assert_eq!(ack_seq(&f), 5, "ack seq is the session's head");
        let e = op2.recv_event().await;
        assert_eq!(e.stream.as_str(), cs);
        assert_eq!(e.seq, 3 + i as u64);
    }
    let snap = op2.full_history(&cs).await;
    assert_eq!(snap.len(), 6);
    let f = op1
        .command(
            "session/a",
            "bad-det",
            json!({"kind": "add_contact_detail", "detail": "phone", "value": "call me"}),
        )
        .await;
    let (code, field, _) = error_parts(&f);
    assert_eq!(
        (code.as_str(), field.as_deref()),
        ("invalid", Some("command.value"))
    );

    // When op3 links its own session b to the contact.
    open_with(&server, "b", "op3", "J. Dvořáková", "").await;
    let mut op3 = server.client("op3", Role::Operator).await;
    let f = op3
        .command(
            "session/b",
            "link",
            json!({"kind": "link_contact", "contact_id": cid}),
        )
        .await;
    assert_eq!(ack_seq(&f), 2);
    let e = op2.recv_event().await;
    assert_eq!(e.stream.as_str(), cs);
    assert_eq!(
        e.event,
        Event::SessionLinked {
            session_id: "b".into()
        }
    );
    assert_eq!(e.command_id.as_deref(), Some("link"));
    let f = op3
        .command(
            "session/b",
            "link-ghost",
            json!({"kind": "link_contact", "contact_id": "nope"}),
        )
        .await;
    assert_eq!(error_code(&f), "invalid", "already linked comes first");

    // Then search finds it by diacritics-free name, phone fragments, emails and identifiers,
    // for any operator of the company, even one with no session of it.
    open_with(&server, "c", "op1", "Dvořák Petr", "+421 900 000 001").await;
    let f = op1
        .command("session/c", "add-c", json!({"kind": "add_to_directory"}))
        .await;
    let petr = created(&f);
    for q in [
        "dvorakova",
        "DVOŘÁKOVÁ",
        "jana d",
        "777 123",
        "777123456",
        "603-111",
        "firma.cz",
        "JANA@EXAMPLE",
        "crm-17",
    ] {
        assert_eq!(found(&mut op4, q).await, vec![cid.clone()], "q = {q:?}");
    }
    // Name-prefix matches first: "Dvořák Petr" starts with "dvor", "Jana Dvořáková" does not.
    assert_eq!(
        found(&mut op4, "dvor").await,
        vec![petr.clone(), cid.clone()]
    );
    let hits = search(&mut op4, "crm").await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].name, "Jana Dvořáková");
    assert_eq!(hits[0].phone, "+420 777 123 456");
    assert_eq!(hits[0].details.len(), 4);
    assert_eq!(hits[0].details[0].added_by, "op1");
    // Fewer than 3 digits never match phones; unrelated text finds nothing.
    assert!(found(&mut op4, "77").await.is_empty());
    assert!(found(&mut op4, "novak petr").await.is_empty());
    // A supervisor and the platform search too; another company finds nothing.
    let mut sup = server.client("sup1", Role::Supervisor).await;
    assert_eq!(found(&mut sup, "novakova").await.len(), 0, "name changed");
    assert_eq!(found(&mut sup, "dvorakova").await, vec![cid.clone()]);
    let mut other = server
        .client_of("globex", "op1", Role::Admin, Encoding::Json)
        .await;
    for q in ["dvorakova", "777 123", "crm", "dvor"] {
        assert!(found(&mut other, q).await.is_empty(), "globex found {q:?}");
    }
    let f = other.subscribe(&cs, None).await;
    assert_eq!(
        error_code(&f),
        "not_found",
        "another company cannot read it"
    );

    // When op3 removes the contact from session b, while a supervisor watches session b.
    let mut watcher = server.client("sup2", Role::Supervisor).await;
    watcher.subscribe_snapshot("session/b").await;
    let f = op3
        .command("session/b", "rm", json!({"kind": "remove_contact"}))
        .await;
    assert_eq!(ack_seq(&f), 3);
    // Then both sessions are unlinked (removed: true) and the contact removed, in one append.
    let unlinked = Event::ContactUnlinked {
        contact_id: cid.clone(),
        removed: true,
    };
    let e = watcher.recv_event().await;
    assert_eq!(
        (e.stream.as_str(), &e.event, e.command_id.as_deref()),
        ("session/b", &unlinked, Some("rm"))
    );
    // op2 gets both events and, the contact being gone, the end of its contact subscription
    // (that frame may come before or after the session's event).
    let mut by_stream: HashMap<String, (Event, Option<String>)> = HashMap::new();
    let mut ended = None;
    while by_stream.len() < 2 || ended.is_none() {
        match op2.recv().await {
            ServerFrame::Event(e) => {
                by_stream.insert(e.stream.as_str().to_owned(), (e.event, e.command_id));
            }
            ServerFrame::Error { stream, .. } => ended = stream,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        by_stream["session/a"],
        (unlinked.clone(), Some("rm".into()))
    );
    assert_eq!(by_stream[&cs], (Event::ContactRemoved, Some("rm".into())));
    assert_eq!(ended.map(|s| s.to_string()), Some(cs.clone()));
    let f = op4.subscribe(&cs, None).await;
    assert_eq!(error_code(&f), "not_found");
    for s in ["session/a", "session/b"] {
        let state = current_session(&mut sup, s).await;
        assert_eq!(state.contact_id, None, "{s} unlinked");
    }
    // And search no longer finds it; the other contact stays.
    assert!(found(&mut op4, "dvorakova").await.is_empty());
    assert!(found(&mut op4, "crm-17").await.is_empty());
    assert_eq!(found(&mut op4, "dvor").await, vec![petr.clone()]);
    // And it can be neither linked nor changed any more.
    let f = op1
        .command(
            "session/a",
            "relink",
            json!({"kind": "link_contact", "contact_id": cid}),
        )
        .await;
    assert_eq!(error_code(&f), "not_found");
    let f = op1
        .command("session/a", "disc", json!({"kind": "disconnect_contact"}))
        .await;
    assert_eq!(error_code(&f), "not_found");
    server.stop().await;
}

/// The current session state, read by a supervisor.
async fn current_session(sup: &mut Client, stream: &str) -> copanel_protocol::SessionState {
    let head = sup.head(stream).await;
    sup.session_at(stream, head).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_keeps_the_contact_and_a_joined_collaborator_may_relink() {
    let server = TestServer::start().await;
    opened(&server, "d", "op1").await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let f = op1
        .command("session/d", "add", json!({"kind": "add_to_directory"}))
        .await;
    let cid = created(&f);
    let cs = format!("contact/{cid}");
    // A second add is refused while linked.
    let f = op1
        .command("session/d", "add-2", json!({"kind": "add_to_directory"}))
        .await;
    let (code, field, _) = error_parts(&f);
    assert_eq!(
        (code.as_str(), field.as_deref()),
        ("invalid", Some("command.kind"))
    );
    let mut op2 = server.client("op2", Role::Operator).await;
    op2.subscribe_snapshot(&cs).await;
    // When disconnected.
    let f = op1
        .command("session/d", "disc", json!({"kind": "disconnect_contact"}))
        .await;
    assert_eq!(ack_seq(&f), 3);
    let e = op2.recv_event().await;
    assert_eq!(
        e.event,
        Event::SessionUnlinked {
            session_id: "d".into()
        }
    );
    // Then the contact stays searchable and readable; the session is free to link again.
    assert_eq!(found(&mut op2, "novakova").await, vec![cid.clone()]);
    // An outsider may not link the session; the owner may.
    let f = op2
        .command(
            "session/d",
            "link-x",
            json!({"kind": "link_contact", "contact_id": cid}),
        )
        .await;
    assert_eq!(error_code(&f), "forbidden");
    let f = op1
        .command(
            "session/d",
            "link",
            json!({"kind": "link_contact", "contact_id": cid}),
        )
        .await;
    assert_eq!(ack_seq(&f), 4);
    let e = op2.recv_event().await;
    assert_eq!(
        e.event,
        Event::SessionLinked {
            session_id: "d".into()
        }
    );
    // A command sent to the contact stream itself is refused.
    let f = op1
        .command(&cs, "direct", json!({"kind": "remove_contact"}))
        .await;
    let (code, field, message) = error_parts(&f);
    assert_eq!(
        (code.as_str(), field.as_deref()),
        ("invalid", Some("command.kind"))
    );
    assert_eq!(
        message,
        "remove_contact is not a command for contact streams"
    );
    // After close, directory commands are refused.
    let mut svc = server.client("platform", Role::Service).await;
    let f = svc
        .command("session/d", "close", json!({"kind": "close_session"}))
        .await;
    ack_seq(&f);
    let f = op1
        .command("session/d", "rm", json!({"kind": "remove_contact"}))
        .await;
    assert_eq!(error_code(&f), "closed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_contacts_checks_its_fields() {
    let server = TestServer::start().await;
    let mut op = server.client("op1", Role::Operator).await;
    let cases = [
        (json!({"what": "contacts"}), "invalid", "q"),
        (json!({"what": "contacts", "q": "  \t"}), "invalid", "q"),
        (
            json!({"what": "contacts", "q": "é".repeat(257)}),
            "too_large",
            "q",
        ),
        (
            json!({"what": "contacts", "q": "jana", "limit": 0}),
            "invalid",
            "limit",
        ),
        (
            json!({"what": "contacts", "q": "jana", "limit": 101}),
            "too_large",
            "limit",
        ),
    ];
    for (frame, code, field) in cases {
        let f = query(&mut op, frame.clone()).await;
        let (got, got_field, message) = error_parts(&f);
        assert_eq!(
            (got.as_str(), got_field.as_deref()),
            (code, Some(field)),
            "{frame}: {message}"
        );
    }
    // The edges are accepted.
    let q256 = "é".repeat(256);
    for frame in [
        json!({"what": "contacts", "q": q256}),
        json!({"what": "contacts", "q": "x", "limit": 1}),
        json!({"what": "contacts", "q": "x", "limit": 100}),
    ] {
        let f = query(&mut op, frame.clone()).await;
        assert!(
            matches!(
                f,
                ServerFrame::Result {
                    contacts: Some(_),
                    ..
                }
            ),
            "{frame}: {f:?}"
        );
    }
    // The connection goes on.
    op.ping().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_caps_the_hits_in_order() {
    let server = TestServer::start().await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let names = [
        "Eva Malá",
        "Malá Eva",
        "Adam Malý",
        "Malík Jan",
        "Zora Malinová",
    ];
    let mut ids = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let sid = format!("m{i}");
        open_with(&server, &sid, "op1", name, "").await;
        let f = op1
            .command(
                &format!("session/{sid}"),
                "add",
                json!({"kind": "add_to_directory"}),
            )
            .await;
        ids.insert(*name, created(&f));
    }
    let all = found(&mut op1, "MAL").await;
    // Name-prefix matches first (by name), then the rest by name.
    let want: Vec<String> = [
        "Malá Eva",
        "Malík Jan",
        "Adam Malý",
        "Eva Malá",
        "Zora Malinová",
    ]
    .iter()
    .map(|n| ids[n].clone())
    .collect();
    assert_eq!(all, want);
    let f = query(
        &mut op1,
        json!({"what": "contacts", "q": "mal", "limit": 2}),
    )
    .await;
    match f {
        ServerFrame::Result {
            contacts: Some(hits),
            ..
        } => {
            let got: Vec<String> = hits.into_iter().map(|h| h.contact_id).collect();
            assert_eq!(got, want[..2].to_vec());
        }
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_is_rebuilt_from_the_log_after_a_restart() {
    let server = TestServer::start().await;
    opened(&server, "r1", "op1").await;
    opened(&server, "r2", "op1").await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let f = op1
        .command("session/r1", "add", json!({"kind": "add_to_directory"}))
        .await;
    let kept = created(&f);
    let f = op1
        .command(
            "session/r1",
            "det",
            json!({"kind": "add_contact_detail", "detail": "identifier", "value": "LOYAL-9"}),
        )
        .await;
    assert_eq!(ack_seq(&f), 2);
    let f = op1
        .command("session/r2", "add", json!({"kind": "add_to_directory"}))
        .await;
    created(&f);
    let f = op1
        .command("session/r2", "rm", json!({"kind": "remove_contact"}))
        .await;
    ack_seq(&f);
    drop(op1);
    let dir = server.stop().await;
    // Given a restarted server whose index starts empty.
    let server = TestServer::start_in(dir, |_| {}).await;
    let mut op2 = server.client("op2", Role::Operator).await;
    // Then the first search reads the log: the kept contact with its detail, not the removed.
    assert_eq!(found(&mut op2, "novakova").await, vec![kept.clone()]);
    assert_eq!(found(&mut op2, "loyal").await, vec![kept.clone()]);
    // And later changes reach the rebuilt index live.
    let mut op1 = server.client("op1", Role::Operator).await;
    let f = op1
        .command("session/r1", "rm", json!({"kind": "remove_contact"}))
        .await;
    ack_seq(&f);
    assert!(found(&mut op2, "novakova").await.is_empty());
}

// ---- scale: the index through the domain and index API ---------------------------------------

/// The streams a decision reads, as the writer would have them loaded.
struct Loaded<'a>(&'a HashMap<StreamName, StreamState>);

impl World for Loaded<'_> {
    fn state(&self, stream: &StreamName) -> Option<&StreamState> {
        self.0.get(stream)
    }
    fn group_members(&self, _group: &str) -> Vec<String> {
        Vec::new()
    }
}

/// One generated client: (name, phone, email, identifier).
fn person(i: usize) -> (String, String, String, String) {
    const FIRST: [&str; 10] = [
        "Jana",
        "Petr",
        "Tomáš",
        "Lucie",
        "Jiří",
        "Eva",
        "Martin",
        "Kateřina",
        "Zdeněk",
        "Šárka",
    ];
    const LAST: [&str; 12] = [
        "Nováková",
        "Dvořák",
        "Černý",
        "Procházková",
        "Kučera",
        "Veselá",
        "Horák",
        "Němcová",
        "Pokorný",
        "Marková",
        "Růžička",
        "Štěpánková",
    ];
    let first = FIRST[i % FIRST.len()];
    let last = LAST[(i / FIRST.len()) % LAST.len()];
    let name = if i % 2 == 0 {
        format!("{first} {last} {i}")
    } else {
        format!("{last} {first} {i}")
    };
    let phone = format!("+420 7{:02} {:03} {:03}", i % 100, (i * 7) % 1000, i % 1000);
    let email = format!("{}.{}{i}@example.com", first.to_lowercase(), i % 13);
    let identifier = format!("CRM-{:05}", i * 3);
    (name, phone, email, identifier)
}

/// Appends to `stream`'s head: the seq the next event gets.
fn next_seq(heads: &mut HashMap<StreamName, u64>, stream: &StreamName) -> u64 {
    let h = heads.entry(stream.clone()).or_insert(0);
    *h += 1;
    *h
}

/// One contact in the forms the reference matches: (id, folded name, folded texts, phone
/// digits).
type Reference = (String, String, Vec<String>, Vec<String>);

/// The reference forms of every active contact, computed once.
fn reference(contacts: &BTreeMap<String, ContactState>) -> Vec<Reference> {
    contacts
        .iter()
        .filter(|(_, c)| c.status == ContactStatus::Active)
        .map(|(id, c)| {
            let mut texts = vec![domain::text::fold(&c.email)];
            let mut phones = vec![domain::text::digits(&c.phone)];
            for d in &c.details {
                match d.detail {
                    ContactDetail::Phone => phones.push(domain::text::digits(&d.value)),
                    _ => texts.push(domain::text::fold(&d.value)),
                }
            }
            (id.clone(), domain::text::fold(&c.name), texts, phones)
        })
        .collect()
}

/// The reference: every contact checked naively, ordered as the contract says.
fn naive(contacts: &[Reference], q: &str, limit: usize) -> Vec<String> {
    let fq = domain::text::fold(q.trim());
    let dq = domain::text::digits(q);
    let mut hits: Vec<(bool, &str, &str)> = contacts
        .iter()
        .filter(|(_, name, texts, phones)| {
            name.contains(&fq)
                || texts.iter().any(|t| t.contains(&fq))
                || (dq.len() >= 3 && phones.iter().any(|p| !p.is_empty() && p.contains(&dq)))
        })
        .map(|(id, name, _, _)| (!name.starts_with(&fq), name.as_str(), id.as_str()))
        .collect();
    hits.sort();
    hits.into_iter()
        .take(limit)
        .map(|(_, _, id)| id.to_owned())
        .collect()
}

#[test]
fn search_stays_correct_and_fast_over_five_thousand_contacts() {
    const N: usize = 5000;
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let index = ContactIndex::new();
    // The company is built from an empty log, then fed as the writer would feed it.
    index.ensure_loaded(&store, "acme").unwrap();
    index.ensure_loaded(&store, "globex").unwrap();
    let limits = Limits::default();
    let who = Principal {
        id: "op1".into(),
        role: Role::Operator,
        groups: Vec::new(),
    };
    let mut streams: HashMap<StreamName, StreamState> = HashMap::new();
    let mut heads: HashMap<StreamName, u64> = HashMap::new();
    let mut contacts: BTreeMap<String, ContactState> = BTreeMap::new();

    let started = Instant::now();
    for i in 0..N {
        let (name, phone, email, identifier) = person(i);
        let session = StreamName::session(&format!("s{i}")).unwrap();
        let mut state = domain::initial(session.kind());
        let open = Envelope {
            stream: session.clone(),
            seq: next_seq(&mut heads, &session),
            at: 1,
            actor: who.actor(),
            command_id: None,
            event: Event::SessionOpened {
                channel: "chat".into(),
                name,
                phone,
                email,
                parameters: BTreeMap::new(),
                owner: Owner::Operator {
                    operator_id: "op1".into(),
                },
            },
        };
        domain::apply(&mut state, &open);
        streams.insert(session.clone(), state);
        let fresh = format!("{i:016x}");
        let mut cmds = vec![Command::AddToDirectory {}];
        if i % 3 == 0 {
            cmds.push(Command::AddContactDetail {
                detail: ContactDetail::Identifier,
                value: identifier,
            });
        }
        if i % 5 == 0 {
            cmds.push(Command::AddContactDetail {
                detail: ContactDetail::Phone,
                value: format!("+420 60{} {:03} {:03}", i % 10, i % 997, (i * 13) % 1000),
            });
        }
        if i % 97 == 0 {
            cmds.push(Command::RemoveContact {});
        }
        for cmd in cmds {
            let world = Loaded(&streams);
            let ctx = Ctx {
                principal: &who,
                stream: &session,
                now: 2,
                next_seq: heads[&session] + 1,
                limits: &limits,
                world: &world,
                fresh_id: &fresh,
            };
            let d = domain::decide(&streams[&session], &ctx, &cmd).expect("accepted");
            let all = d
                .events
                .into_iter()
                .map(|e| (session.clone(), e))
                .chain(d.others);
            for (stream, event) in all {
                let env = Envelope {
                    stream: stream.clone(),
                    seq: next_seq(&mut heads, &stream),
                    at: 3,
                    actor: who.actor(),
                    command_id: Some(format!("c{i}")),
                    event,
                };
                let state = streams
                    .entry(stream.clone())
                    .or_insert_with(|| domain::initial(stream.kind()));
                domain::apply(state, &env);
                if let StreamState::Contact(c) = state {
                    contacts.insert(stream.id().to_owned(), c.clone());
                    index.on_committed("acme", &env);
                    // A replayed delivery is ignored (the seq is already known).
                    index.on_committed("acme", &env);
                }
            }
        }
    }
    eprintln!(
        "built {N} contacts through decide + on_committed in {:?}",
        started.elapsed()
    );
    let active = contacts
        .values()
        .filter(|c| c.status == ContactStatus::Active)
        .count();
    assert_eq!(index.contact_count("acme"), active);
    assert!(active < N && active > N - 60, "some were removed: {active}");
    assert_eq!(index.contact_count("globex"), 0);

    // Queries: names with and without diacritics, phone fragments, emails, identifiers.
    let mut queries: Vec<String> = Vec::new();
    let reference = reference(&contacts);
    for i in (0..N).step_by(50) {
        let (name, phone, email, identifier) = person(i);
        let surname = name.split(' ').nth(1).unwrap_or("x").to_owned();
        queries.push(domain::text::fold(&surname).to_uppercase());
        queries.push(name.clone());
        queries.push(phone.chars().skip(5).take(7).collect());
        queries.push(email.split('@').next().unwrap_or("x").to_owned());
        queries.push(identifier.to_lowercase());
    }
    queries.extend(["a", "ová", "777", "99", "zdenek 4", "@example"].map(String::from));
    let mut total = Duration::ZERO;
    let mut nonempty = 0;
    for q in &queries {
        for limit in [20, 100] {
            let t = Instant::now();
            let hits = index.search("acme", q, limit);
            total += t.elapsed();
            let got: Vec<String> = hits.into_iter().map(|h| h.contact_id).collect();
            assert_eq!(got, naive(&reference, q, limit), "q = {q:?}, limit {limit}");
            if !got.is_empty() {
                nonempty += 1;
            }
            assert!(index.search("globex", q, limit).is_empty());
        }
    }
    let n = queries.len() * 2;
    assert!(
        nonempty > n / 2,
        "most queries find something: {nonempty}/{n}"
    );
    // Changes reach the next search at once (the change re-segments one contact).
    let c1 = StreamName::parse(&format!("contact/{:016x}", 1)).unwrap();
    let mut rebuilt = Duration::ZERO;
    for k in 0..20 {
        let env = Envelope {
            stream: c1.clone(),
            seq: next_seq(&mut heads, &c1),
            at: 4,
            actor: who.actor(),
            command_id: None,
            event: Event::ContactDetailAdded {
                detail: ContactDetail::Identifier,
                value: format!("LATE-{k}"),
            },
        };
        index.on_committed("acme", &env);
        let t = Instant::now();
        let hits = index.search("acme", &format!("late-{k}"), 20);
        rebuilt += t.elapsed();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].contact_id, c1.id());
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    eprintln!(
        "{n} searches over {active} contacts: {:?} per search ({profile} build)",
        total / n as u32
    );
    eprintln!(
        "search right after a change: {:?} ({profile} build)",
        rebuilt / 20
    );
}

#[test]
fn a_build_from_the_log_and_live_reports_meet_without_loss_or_double_apply() {
    use copanel::store::{AppendBatch, Store, StreamId};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let company: Arc<str> = Arc::from("acme");
    let who = Principal {
        id: "op1".into(),
        role: Role::Operator,
        groups: Vec::new(),
    };
    let env = |id: &str, seq: u64, event: Event| Envelope {
        stream: StreamName::parse(&format!("contact/{id}")).unwrap(),
        seq,
        at: seq,
        actor: who.actor(),
        command_id: None,
        event,
    };
    let created = |name: &str| Event::ContactCreated {
        session_id: "s".into(),
        name: name.into(),
        phone: String::new(),
        email: String::new(),
    };
    let detail = |v: &str| Event::ContactDetailAdded {
        detail: ContactDetail::Identifier,
        value: v.into(),
    };
    let append = |events: Vec<Envelope>| {
        let mut batch = AppendBatch::default();
        for e in events {
            batch.events.push((company.clone(), Arc::new(e)));
        }
        store.append(&batch).unwrap();
    };
    let index = ContactIndex::new();
    // Given events committed before the company is loaded: reports are ignored…
    let early = vec![
        env("c1", 1, created("Alena")),
        env("c2", 1, created("Bohdan")),
        env("c2", 2, Event::ContactRemoved),
    ];
    append(early.clone());
    for e in &early {
        index.on_committed(&company, e);
    }
    assert!(!index.is_loaded(&company));
    // …and read by the build.
    index.ensure_loaded(&store, &company).unwrap();
    assert_eq!(found_ids(&index, "alena"), vec!["c1"]);
    assert!(found_ids(&index, "bohdan").is_empty());
    // When the writer then reports events the build already read (the race), nothing doubles,
    // and a removed contact does not come back.
    for e in &early {
        index.on_committed(&company, e);
    }
    let hits = index.search(&company, "alena", 10);
    assert!(hits[0].details.is_empty());
    assert!(found_ids(&index, "bohdan").is_empty());
    // And later events apply once each.
    let later = env("c1", 2, detail("VIP"));
    append(vec![later.clone()]);
    index.on_committed(&company, &later);
    index.on_committed(&company, &later);
    let hits = index.search(&company, "vip", 10);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].details.len(), 1);
    // A head read by the stream's log agrees.
    let id = StreamId::new(company.clone(), later.stream.clone());
    assert_eq!(store.head(&id).unwrap(), 2);
}

fn found_ids(index: &ContactIndex, q: &str) -> Vec<String> {
    index
        .search("acme", q, 100)
        .into_iter()
        .map(|h| h.contact_id)
        .collect()
}
