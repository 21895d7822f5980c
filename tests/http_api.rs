//! The HTTP integration API (`/api/v1/…`) over real HTTP/1.1 on 127.0.0.1: commands through the
//! writer (seen live by WebSocket subscribers), idempotency, validation errors, roles, tenant
//! isolation, event pages (JSON and NDJSON), state at a seq, the catalog, contact search and the
//! OpenAPI document.

mod support;

use copanel_protocol::{Event, Role};
use serde_json::{json, Value};
use support::*;

/// One HTTP answer.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("JSON body ({e}): {} {}", self.status, self.body))
    }

    /// Asserts an error answer: status, code and (when given) field.
    fn error(&self, status: u16, code: &str, field: Option<&str>) -> Value {
        assert_eq!(self.status, status, "status; body {}", self.body);
        let v = self.json();
        assert_eq!(v["code"], code, "code; body {}", self.body);
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        if let Some(f) = field {
            assert_eq!(v["field"], f, "field; body {}", self.body);
        }
        v
    }

    fn header(&self, name: &str) -> Option<String> {
        let want = format!("{}:", name.to_ascii_lowercase());
        self.head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with(&want)
                .then(|| l[want.len()..].trim().to_owned())
        })
    }
}

/// A raw HTTP/1.1 request with `Connection: close`, bounded by [`WAIT`].
async fn http(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Answer {
    let (status, head, body) = http_request(server.addr, method, path, headers, body).await;
    Answer { status, head, body }
}

/// A client with one token.
struct Api<'a> {
    server: &'a TestServer,
    auth: String,
}

impl<'a> Api<'a> {
    fn new(server: &'a TestServer, token: &str) -> Self {
        Api {
            server,
            auth: format!("Bearer {token}"),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        http(
            self.server,
            "GET",
            path,
            &[("Authorization", &self.auth)],
            None,
        )
        .await
    }

    async fn get_with(&self, path: &str, extra: (&str, &str)) -> Answer {
        http(
            self.server,
            "GET",
            path,
            &[("Authorization", &self.auth), extra],
            None,
        )
        .await
    }

    async fn send(&self, method: &str, path: &str, key: Option<&str>, body: Value) -> Answer {
        let mut h = vec![("Authorization", self.auth.as_str())];
        if let Some(k) = key {
            h.push(("Idempotency-Key", k));
        }
        let b = serde_json::to_vec(&body).unwrap();
        http(self.server, method, path, &h, Some(&b)).await
    }

    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> Answer {
        self.send("POST", path, key, body).await
    }
}

fn open_body(id: &str) -> Value {
    json!({"session_id": id, "channel": "chat",
        "client": {"name": "Jana Nováková", "phone": "+420 777 123 456", "email": "jana@example.com"},
        "owner": {"operator_id": "op1"}})
}

#[tokio::test]
async fn open_post_close_is_seen_live_on_the_websocket() {
    let server = TestServer::start().await;
    let api = Api::new(&server, &server.token("platform", Role::Service));
    // Given a supervisor subscribed to session/h1 before it opens.
    let mut sup = server.client("sup1", Role::Supervisor).await;
    sup.subscribe("session/h1", None).await;
    // The snapshot of the not-yet-opened session comes first.
    assert!(matches!(
        sup.recv().await,
        copanel_protocol::ServerFrame::Snapshot { seq: 0, .. }
    ));

    let a = api
        .post("/api/v1/sessions", Some("open-h1"), open_body("h1"))
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.json(), json!({"session_id": "h1", "seq": 1}));
    let a = api
        .post(
            "/api/v1/sessions/h1/messages",
            Some("m1"),
            json!({"from": "client", "text": "Dobrý den"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["seq"], 2);
    // An empty body is fine for close.
    let a = http(
        &server,
        "POST",
        "/api/v1/sessions/h1/close",
        &[("Authorization", &api.auth), ("Idempotency-Key", "close")],
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["seq"], 3);

    // Then the subscriber saw the three events live, with the HTTP command ids.
    let evs = sup.recv_events(3).await;
    assert_eq!(seqs(&evs), vec![1, 2, 3]);
    assert!(matches!(evs[0].event, Event::SessionOpened { .. }));
    assert!(matches!(evs[1].event, Event::MessagePosted { .. }));
    assert!(matches!(evs[2].event, Event::SessionClosed));
    assert_eq!(evs[1].command_id.as_deref(), Some("m1"));

    // And the committed state is readable over HTTP.
    let a = api.get("/api/v1/sessions/h1").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["seq"], 3);
    assert_eq!(v["state"]["status"], "closed", "{v}");
    // Posting after close: the domain's `closed` → 409.
    api.post(
        "/api/v1/sessions/h1/messages",
        None,
        json!({"from": "client", "text": "late"}),
    )
    .await
    .error(409, "closed", None);

    // Without a session_id an id of 16 hex digits is made.
    let mut body = open_body("x");
    body.as_object_mut().unwrap().remove("session_id");
    let a = api.post("/api/v1/sessions", None, body).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.json()["session_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 16);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    server.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_retry_returns_the_same_seq_and_appends_nothing() {
    let server = TestServer::start().await;
    let api = Api::new(&server, &server.token("platform", Role::Service));
    let a = api
        .post("/api/v1/sessions", Some("k-open"), open_body("i1"))
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let msg = json!({"from": "client", "text": "hello"});
    let first = api
        .post("/api/v1/sessions/i1/messages", Some("k-msg"), msg.clone())
        .await;
    let again = api
        .post("/api/v1/sessions/i1/messages", Some("k-msg"), msg.clone())
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(first.json()["seq"], 2);
    assert_eq!(again.json()["seq"], 2);
    // The open retried without session_id lands on the same (derived) session.
    let mut body = open_body("x");
    body.as_object_mut().unwrap().remove("session_id");
    let a1 = api
        .post("/api/v1/sessions", Some("k-anon"), body.clone())
        .await;
    let a2 = api.post("/api/v1/sessions", Some("k-anon"), body).await;
    assert_eq!(a1.status, 201, "{}", a1.body);
    assert_eq!(a1.json(), a2.json());
    assert_eq!(a1.json()["seq"], 1);

    let v = api.get("/api/v1/sessions/i1/events").await.json();
    assert_eq!(v["events"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(api.get("/api/v1/sessions/i1").await.json()["seq"], 2);
    server.stop().await;
}

#[tokio::test]
async fn validation_errors_name_the_field_with_a_fitting_status() {
    let server = TestServer::start().await;
    let api = Api::new(&server, &server.token("platform", Role::Service));
    // Missing field, as decoded by the protocol (no `command.` prefix here).
    api.post(
        "/api/v1/sessions",
        None,
        json!({"session_id": "v1", "owner": {"operator_id": "op1"}}),
    )
    .await
    .error(400, "invalid", Some("channel"));
    // Unknown field.
    api.post(
        "/api/v1/sessions",
        None,
        json!({"session_id": "v1", "channel": "chat", "owner": {"operator_id": "op1"}, "colour": 1}),
    )
    .await
    .error(400, "invalid", Some("colour"));
    // The endpoint decides the kind.
    api.post(
        "/api/v1/sessions/v1/close",
        None,
        json!({"kind": "anonymize"}),
    )
    .await
    .error(400, "invalid", Some("kind"));
    // Bad session id.
    api.post(
        "/api/v1/sessions",
        None,
        json!({"session_id": "a b", "channel": "c", "owner": {"group": "g"}}),
    )
    .await
    .error(400, "invalid", Some("session_id"));
    // Not JSON; not an object.
    let h = [("Authorization", api.auth.as_str())];
    let a = http(&server, "POST", "/api/v1/sessions", &h, Some(b"{nope")).await;
    let v = a.error(400, "bad_frame", None);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("not a JSON document"),
        "{v}"
    );
    http(&server, "POST", "/api/v1/sessions", &h, Some(b"[1]"))
        .await
        .error(400, "bad_frame", None);
    // Over 64 KiB.
    let big = vec![b' '; 70 * 1024];
    http(&server, "POST", "/api/v1/sessions", &h, Some(&big))
        .await
        .error(413, "too_large", None);
    // A bad Idempotency-Key.
    let long = "k".repeat(200);
    api.post("/api/v1/sessions", Some(&long), open_body("v2"))
        .await
        .error(400, "invalid", Some("Idempotency-Key"));
    // Domain validation: the session must be open for a message; then the message text limit.
    api.post(
        "/api/v1/sessions/nosuch/messages",
        None,
        json!({"from": "client", "text": "hi"}),
    )
    .await
    .error(404, "not_found", None);
    assert_eq!(
        api.post("/api/v1/sessions", None, open_body("v3"))
            .await
            .status,
        201
    );
    api.post(
        "/api/v1/sessions/v3/messages",
        None,
        json!({"from": "sometimes", "text": "hi"}),
    )
    .await
    .error(400, "invalid", Some("from"));
    // Opening twice: the stream is not empty.
    let a = api.post("/api/v1/sessions", None, open_body("v3")).await;
    assert!(
        a.status == 409 || a.status == 400,
        "{} {}",
        a.status,
        a.body
    );
    // Query parameters.
    api.get("/api/v1/sessions/v3/events?limit=abc")
        .await
        .error(400, "invalid", Some("limit"));
    api.get("/api/v1/sessions/v3/events?limit=5000")
        .await
        .error(413, "too_large", Some("limit"));
    server.stop().await;
}

#[tokio::test]
async fn only_service_and_admin_tokens_are_let_in() {
    let server = TestServer::start().await;
    // No token, a forged token: 401.
    http(&server, "GET", "/api/v1/contacts?q=a", &[], None)
        .await
        .error(401, "unauthorized", None);
    http(
        &server,
        "GET",
        "/api/v1/contacts?q=a",
        &[("Authorization", "Bearer not.a.token")],
        None,
    )
    .await
    .error(401, "unauthorized", None);
    // Operator and supervisor: 403, before anything is read or written.
    for role in [Role::Operator, Role::Supervisor] {
        let api = Api::new(&server, &server.token("op1", role));
        api.post("/api/v1/sessions", None, open_body("r1"))
            .await
            .error(403, "forbidden", None);
        api.get("/api/v1/sessions/r1")
            .await
            .error(403, "forbidden", None);
    }
    // Admin may.
    let admin = Api::new(&server, &server.token("adm", Role::Admin));
    let a = admin.post("/api/v1/sessions", None, open_body("r1")).await;
    assert_eq!(a.status, 201, "{}", a.body);
    server.stop().await;
}

#[tokio::test]
async fn another_company_sees_not_found() {
    let server = TestServer::start().await;
    let acme = Api::new(&server, &server.token("platform", Role::Service));
    let other = Api::new(
        &server,
        &server.token_for("globex", "platform", Role::Service, &[]),
    );
    assert_eq!(
        acme.post("/api/v1/sessions", None, open_body("t1"))
            .await
            .status,
        201
    );
    other
        .get("/api/v1/sessions/t1")
        .await
        .error(404, "not_found", None);
    other
        .get("/api/v1/sessions/t1/events")
        .await
        .error(404, "not_found", None);
    other
        .get("/api/v1/sessions/t1/state?at=1")
        .await
        .error(404, "not_found", None);
    other
        .post(
            "/api/v1/sessions/t1/messages",
            None,
            json!({"from": "client", "text": "hi"}),
        )
        .await
        .error(404, "not_found", None);
    // And acme's session is untouched.
    assert_eq!(acme.get("/api/v1/sessions/t1").await.json()["seq"], 1);
    server.stop().await;
}

#[tokio::test]
async fn events_page_as_json_and_ndjson_and_state_at_folds() {
    let server = TestServer::start().await;
    let api = Api::new(&server, &server.token("platform", Role::Service));
    assert_eq!(
        api.post("/api/v1/sessions", None, open_body("e1"))
            .await
            .status,
        201
    );
    for i in 0..5 {
        let a = api
            .post(
                "/api/v1/sessions/e1/messages",
                None,
                json!({"from": "client", "text": format!("m{i}")}),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    // Head is 6: pages of 4 from 1, then the rest.
    let v = api
        .get("/api/v1/sessions/e1/events?from=1&limit=4")
        .await
        .json();
    let s: Vec<u64> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(s, vec![1, 2, 3, 4]);
    assert_eq!(v["next"], 5);
    assert_eq!(v["events"][0]["stream"], "session/e1");
    assert_eq!(v["events"][0]["event"]["kind"], "session_opened", "{v}");
    let v = api
        .get("/api/v1/sessions/e1/events?from=5&limit=4")
        .await
        .json();
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    assert_eq!(v["next"], Value::Null);
    let v = api.get("/api/v1/sessions/e1/events?from=99").await.json();
    assert_eq!(v, json!({"events": [], "next": null}));

    // NDJSON: one envelope per line.
    let a = api
        .get_with(
            "/api/v1/sessions/e1/events?from=2&limit=3",
            ("Accept", "application/x-ndjson"),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/x-ndjson")
    );
    assert_eq!(a.header("x-next-from").as_deref(), Some("5"));
    let lines: Vec<Value> = a
        .body
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let s: Vec<u64> = lines.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(s, vec![2, 3, 4]);
    assert_eq!(lines[0]["event"]["kind"], "message_posted");

    // State at 3 holds two messages; at 6 five; at 0 nothing; beyond the head is refused.
    let v = api.get("/api/v1/sessions/e1/state?at=3").await.json();
    assert_eq!(v["seq"], 3);
    assert_eq!(v["state"]["messages"], 2, "{v}");
    let v = api.get("/api/v1/sessions/e1/state?at=6").await.json();
    assert_eq!(v["state"]["messages"], 5, "{v}");
    assert_eq!(
        v["state"],
        api.get("/api/v1/sessions/e1").await.json()["state"]
    );
    api.get("/api/v1/sessions/e1/state?at=7")
        .await
        .error(400, "invalid", Some("at"));
    api.get("/api/v1/sessions/e1/state")
        .await
        .error(400, "invalid", Some("at"));
    server.stop().await;
}

#[tokio::test]
async fn catalog_endpoints_change_the_catalog() {
    let server = TestServer::start().await;
    let api = Api::new(&server, &server.token("platform", Role::Service));
    let mut admin = server.client("adm", Role::Admin).await;
    admin.subscribe("catalog", None).await;
    assert!(matches!(
        admin.recv().await,
        copanel_protocol::ServerFrame::Snapshot { seq: 0, .. }
    ));

    let a = api
        .send(
            "PUT",
            "/api/v1/catalog/tags/vip",
            Some("tag-vip"),
            json!({"background": "#ff0000", "text": "#ffffff"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["seq"], 1);
    api.send(
        "PUT",
        "/api/v1/catalog/tags/vip",
        None,
        json!({"background": "red", "text": "#ffffff"}),
    )
    .await
    .error(400, "invalid", Some("background"));

    let a = api
        .post(
            "/api/v1/catalog/autotag-rules",
            None,
            json!({"keywords": ["refund"], "tag": "billing"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let v = a.json();
    // The new tag enters the catalog first (seq 2), then the rule (seq 3).
    assert_eq!(v["seq"], 3);
    assert!(v["rule_id"].as_str().is_some_and(|s| !s.is_empty()), "{v}");

    let a = api
        .post(
            "/api/v1/catalog/templates",
            None,
            json!({"title": "Hello", "text": "Dobrý den, jak mohu pomoci?"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let v = a.json();
    assert_eq!(v["seq"], 4);
    let template_id = v["template_id"].as_str().unwrap().to_owned();
    api.post("/api/v1/catalog/templates", None, json!({"title": "x"}))
        .await
        .error(400, "invalid", Some("text"));

    // The WebSocket subscriber saw the four changes.
    let evs = admin.recv_events(4).await;
    assert_eq!(seqs(&evs), vec![1, 2, 3, 4]);
    assert!(matches!(evs[3].event, Event::TemplateCreated { .. }));

    // The template can be posted by id over HTTP.
    assert_eq!(
        api.post("/api/v1/sessions", None, open_body("c1"))
            .await
            .status,
        201
    );
    let a = api
        .post(
            "/api/v1/sessions/c1/messages",
            None,
            json!({"from": "operator", "template_id": template_id}),
        )
        .await;
    // The platform is not an operator of the session; either it may post or the domain says
    // why not, in JSON.
    assert!(
        a.status == 200 || a.status == 403,
        "{} {}",
        a.status,
        a.body
    );
    server.stop().await;
}

#[tokio::test]
async fn contacts_search_the_company_directory() {
    let server = TestServer::start().await;
    let api = Api::new(&server, &server.token("platform", Role::Service));
    assert_eq!(
        api.post("/api/v1/sessions", None, open_body("d1"))
            .await
            .status,
        201
    );
    let mut op1 = server.client("op1", Role::Operator).await;
    let f = op1
        .command("session/d1", "add", json!({"kind": "add_to_directory"}))
        .await;
    assert_eq!(ack_seq(&f), 2);

    let a = api.get("/api/v1/contacts?q=jana&limit=5").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    let hits = v["contacts"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{v}");
    assert_eq!(hits[0]["name"], "Jana Nováková");
    // Diacritics and case ignored, percent-encoded query.
    let v = api.get("/api/v1/contacts?q=NOVAKOVA").await.json();
    assert_eq!(v["contacts"].as_array().unwrap().len(), 1);
    let v = api.get("/api/v1/contacts?q=nobody").await.json();
    assert_eq!(v, json!({"contacts": []}));
    // Another company's directory is empty.
    let other = Api::new(
        &server,
        &server.token_for("globex", "platform", Role::Service, &[]),
    );
    assert_eq!(
        other.get("/api/v1/contacts?q=jana").await.json(),
        json!({"contacts": []})
    );
    api.get("/api/v1/contacts")
        .await
        .error(400, "invalid", Some("q"));
    api.get("/api/v1/contacts?q=jana&limit=0")
        .await
        .error(400, "invalid", Some("limit"));
    server.stop().await;
}

#[tokio::test]
async fn openapi_document_lists_every_endpoint() {
    let server = TestServer::start().await;
    let (status, body) = server.http_get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).expect("OpenAPI is JSON");
    assert!(v["openapi"].as_str().unwrap().starts_with("3.0"));
    let paths = v["paths"].as_object().unwrap();
    for (p, method) in [
        ("/api/v1/sessions", "post"),
        ("/api/v1/sessions/{id}", "get"),
        ("/api/v1/sessions/{id}/messages", "post"),
        ("/api/v1/sessions/{id}/close", "post"),
        ("/api/v1/sessions/{id}/state", "get"),
        ("/api/v1/sessions/{id}/events", "get"),
        ("/api/v1/catalog/tags/{tag}", "put"),
        ("/api/v1/catalog/autotag-rules", "post"),
        ("/api/v1/catalog/templates", "post"),
        ("/api/v1/contacts", "get"),
        ("/api/v1/webhooks", "post"),
        ("/api/v1/webhooks", "get"),
        ("/api/v1/webhooks/{id}", "delete"),
        ("/api/v1/openapi.json", "get"),
    ] {
        assert!(paths[p][method].is_object(), "{p} {method} documented");
    }
    // Every $ref resolves.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "$ref" {
                        out.extend(x.as_str().map(str::to_owned));
                    }
                    refs(x, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&v, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let ptr = r.trim_start_matches('#');
        assert!(v.pointer(ptr).is_some(), "{r} resolves");
    }
    server.stop().await;
}

#[tokio::test]
async fn if_match_is_the_expected_seq() {
    let server = TestServer::start().await;
    let api = Api::new(&server, &server.token("platform", Role::Service));
    let post = |key: &'static str, if_match: &'static str| {
        let auth = api.auth.clone();
        let server = &server;
        async move {
            let b = serde_json::to_vec(&json!({"from": "client", "text": key})).unwrap();
            http(
                server,
                "POST",
                "/api/v1/sessions/e1/messages",
                &[
                    ("Authorization", &auth),
                    ("Idempotency-Key", key),
                    ("If-Match", if_match),
                ],
                Some(&b),
            )
            .await
        }
    };
    let a = api.post("/api/v1/sessions", None, open_body("e1")).await;
    assert_eq!(a.status, 201, "{}", a.body);
    // The head is 1: a write that expects 1 lands at 2 (quoted, as an ETag, or bare).
    let a = post("m-a", "\"1\"").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["seq"], 2);
    let a = post("m-b", "2").await;
    assert_eq!(a.json()["seq"], 3, "{}", a.body);
    // A stale expectation is a 409 conflict that names the head, and appends nothing.
    let v = post("m-c", "\"1\"")
        .await
        .error(409, "conflict", Some("If-Match"));
    assert_eq!(v["head"], 3, "{v}");
    // Garbage is refused, naming the header.
    post("m-d", "*")
        .await
        .error(400, "invalid", Some("If-Match"));
    post("m-e", "\"-4\"")
        .await
        .error(400, "invalid", Some("If-Match"));
    assert_eq!(api.get("/api/v1/sessions/e1").await.json()["seq"], 3);
    server.stop().await;
}

#[tokio::test]
async fn a_token_over_its_request_rate_gets_429_with_retry_after() {
    let server = TestServer::start_with(|c| {
        c.edge.http_requests_per_sec = 0.5;
        c.edge.http_burst = 3.0;
    })
    .await;
    let api = Api::new(&server, &server.token("platform", Role::Service));
    let other = Api::new(&server, &server.token("platform-2", Role::Service));
    // The burst of three passes (an open, a message, a read)...
    let a = api.post("/api/v1/sessions", None, open_body("r1")).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let a = api
        .post(
            "/api/v1/sessions/r1/messages",
            None,
            json!({"from": "client", "text": "one"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(api.get("/api/v1/sessions/r1").await.status, 200);
    // ...the fourth is refused before it reaches the writer, with a Retry-After.
    let a = api
        .post(
            "/api/v1/sessions/r1/messages",
            None,
            json!({"from": "client", "text": "two"}),
        )
        .await;
    a.error(429, "rate_limited", None);
    let wait: u64 = a
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    // Webhook management shares the budget.
    api.get("/api/v1/webhooks")
        .await
        .error(429, "rate_limited", None);
    // Another token of the same company has its own budget, and nothing was appended.
    let v = other.get("/api/v1/sessions/r1").await;
    assert_eq!(v.status, 200, "{}", v.body);
    assert_eq!(v.json()["seq"], 2);
    server.stop().await;
}
