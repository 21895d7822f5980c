//! Test support: a real server on 127.0.0.1 with a real sled store in a temp dir, and a real
//! WebSocket client speaking either encoding.
#![allow(dead_code)]

use copanel::auth::{Auth, Claims};
use copanel::server::{self, Config, Running};
use copanel_protocol::codec::decode_server;
use copanel_protocol::{Encoding, Role, ServerFrame};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for any one frame.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub running: Option<Running>,
    pub addr: SocketAddr,
    pub auth: Auth,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, tune).await
    }

    /// Starts on an existing data dir (for restart tests).
    pub async fn start_in(dir: tempfile::TempDir, tune: impl FnOnce(&mut Config)) -> Self {
        Self::start_wrapped(dir, tune, |s| s).await
    }

    /// [`TestServer::start_in`] with the store passed through `wrap` (to inject storage faults).
    pub async fn start_wrapped(
        dir: tempfile::TempDir,
        tune: impl FnOnce(&mut Config),
        wrap: impl FnOnce(
            std::sync::Arc<dyn copanel::store::Store>,
        ) -> std::sync::Arc<dyn copanel::store::Store>,
    ) -> Self {
        let mut config = Config::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        config.secret = Some("test-secret-test-secret".into());
        tune(&mut config);
        let running = server::start_wrapped(config, wrap)
            .await
            .expect("server starts");
        TestServer {
            addr: running.addr,
            auth: running.auth.clone(),
            running: Some(running),
            dir,
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn token_for(&self, company: &str, sub: &str, role: Role, groups: &[&str]) -> String {
        self.auth
            .mint(&Claims {
                sub: sub.into(),
                company: company.into(),
                role,
                name: None,
                groups: groups.iter().map(|g| g.to_string()).collect(),
                exp: copanel::auth::now_secs() + 3600,
            })
            .unwrap()
    }

    /// An operator of company `acme`.
    pub fn token(&self, sub: &str, role: Role) -> String {
        self.token_for("acme", sub, role, &[])
    }

    pub async fn connect(&self, token: &str, enc: Encoding) -> Client {
        Client::connect(&self.url(), token, enc).await
    }

    pub async fn client(&self, sub: &str, role: Role) -> Client {
        self.connect(&self.token(sub, role), Encoding::Json).await
    }

    /// Graceful shutdown; returns the data dir for a restart.
    /// Shuts the server down and checks that the writer drained and stopped on its own (every
    /// writer handle released; nothing kept it waiting for the grace period).
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            let stopped = r.shutdown().await;
            assert_eq!(
                stopped,
                copanel::server::Stopped::Drained,
                "the writer did not stop on its own"
            );
        }
        self.dir
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub enc: Encoding,
    next_id: u64,
    /// Whether `recv` returns `presence` and `activity` frames. Off by default: they arrive
    /// whenever anyone subscribes, leaves or types, so tests about events skip them like pings.
    pub ambient: bool,
}

impl Client {
    pub async fn connect(url: &str, token: &str, enc: Encoding) -> Self {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        req.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(enc.subprotocol()),
        );
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect in time")
            .expect("connect");
        Client {
            ws,
            enc,
            next_id: 1,
            ambient: false,
        }
    }

    /// Sends a frame given as JSON, in the connection's encoding.
    pub async fn send(&mut self, frame: Value) {
        let msg = match self.enc {
            Encoding::Json => Message::Text(frame.to_string().into()),
            Encoding::Msgpack => Message::Binary(rmp_serde::to_vec_named(&frame).unwrap().into()),
        };
        self.ws.send(msg).await.expect("send");
    }

    /// Sends raw bytes as a frame of the connection's kind.
    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        let msg = match self.enc {
            Encoding::Json => Message::Text(String::from_utf8_lossy(&bytes).into_owned().into()),
            Encoding::Msgpack => Message::Binary(bytes.into()),
        };
        self.ws.send(msg).await.expect("send");
    }

    /// Next protocol frame (skips pings), or panics after [`WAIT`].
    pub async fn recv(&mut self) -> ServerFrame {
        // One deadline for the whole call: the server's pings must not extend the wait.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("socket open")
                .expect("socket ok");
            let bytes = match msg {
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Binary(b) => b.to_vec(),
                Message::Close(c) => panic!("closed by server: {c:?}"),
                _ => continue,
            };
            let frame = decode_server(self.enc, &bytes).expect("decodable server frame");
            if !self.ambient && is_ambient(&frame) {
                continue;
            }
            return frame;
        }
    }

    /// Next frame, or `None` if nothing arrives within `d`.
    pub async fn try_recv(&mut self, d: Duration) -> Option<ServerFrame> {
        tokio::time::timeout(d, self.recv()).await.ok()
    }

    /// Receives until `pred` matches; returns the match (earlier frames are dropped).
    pub async fn recv_until(&mut self, mut pred: impl FnMut(&ServerFrame) -> bool) -> ServerFrame {
        loop {
            let f = self.recv().await;
            if pred(&f) {
                return f;
            }
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Subscribes (snapshot when `since` is None); returns `subscribed` (or the error).
    pub async fn subscribe(&mut self, stream: &str, since: Option<u64>) -> ServerFrame {
        let id = self.id();
        let mut f = json!({"type": "subscribe", "id": id, "stream": stream});
        if let Some(s) = since {
            f["since"] = json!(s);
        }
        self.send(f).await;
        self.recv_until(|f| reply_to(f, id)).await
    }

    /// Sends a command and waits for its ack or error.
    pub async fn command(&mut self, stream: &str, command_id: &str, command: Value) -> ServerFrame {
        let id = self.id();
        self.send(json!({"type": "command", "id": id, "stream": stream,
            "command_id": command_id, "command": command}))
            .await;
        self.recv_until(|f| reply_to(f, id)).await
    }

    /// Sends a command with `expected_seq`.
    pub async fn command_at(
        &mut self,
        stream: &str,
        command_id: &str,
        expected_seq: u64,
        command: Value,
    ) -> ServerFrame {
        let id = self.id();
        self.send(json!({"type": "command", "id": id, "stream": stream,
            "command_id": command_id, "expected_seq": expected_seq, "command": command}))
            .await;
        self.recv_until(|f| reply_to(f, id)).await
    }

    /// Sends any request frame with a fresh id and waits for its reply.
    pub async fn request(&mut self, mut frame: Value) -> ServerFrame {
        let id = self.id();
        frame["id"] = json!(id);
        self.send(frame).await;
        self.recv_until(|f| reply_to(f, id)).await
    }
}

/// Presence and activity frames: pushed by others' comings and goings, not replies or events.
pub fn is_ambient(f: &ServerFrame) -> bool {
    matches!(
        f,
        ServerFrame::Presence { .. } | ServerFrame::Activity { .. }
    )
}

/// Whether `f` is the reply to request `id`.
pub fn reply_to(f: &ServerFrame, want: u64) -> bool {
    let id = match f {
        ServerFrame::Subscribed { id, .. }
        | ServerFrame::Unsubscribed { id, .. }
        | ServerFrame::Ack { id, .. }
        | ServerFrame::History { id, .. }
        | ServerFrame::State { id, .. }
        | ServerFrame::Result { id, .. }
        | ServerFrame::Pong { id }
        | ServerFrame::Error { id, .. } => *id,
        _ => None,
    };
    id == Some(want)
}

/// Asserts an ack and returns its seq.
pub fn ack_seq(f: &ServerFrame) -> u64 {
    match f {
        ServerFrame::Ack { seq, .. } => *seq,
        other => panic!("expected ack, got {other:?}"),
    }
}

/// Asserts an error and returns its code as a string.
pub fn error_code(f: &ServerFrame) -> String {
    match f {
        ServerFrame::Error { code, .. } => code.as_str().to_owned(),
        other => panic!("expected error, got {other:?}"),
    }
}

/// The `open_session` command used by most tests: owner op1, chat channel.
pub fn open_session(owner: &str) -> Value {
    json!({"kind": "open_session", "channel": "chat",
        "client": {"name": "Jana Nováková", "phone": "+420 777 123 456", "email": "jana@example.com"},
        "parameters": {"crm_id": {"value": "C-17", "read_only": true}},
        "owner": {"operator_id": owner}})
}

/// Opens `session/<id>` as the platform, owned by `owner`.
pub async fn opened(server: &TestServer, id: &str, owner: &str) {
    let mut svc = server.client("platform", Role::Service).await;
    let f = svc
        .command(
            &format!("session/{id}"),
            &format!("open-{id}"),
            open_session(owner),
        )
        .await;
    assert_eq!(ack_seq(&f), 1, "open_session acked at seq 1");
}

// ---------------------------------------------------------------------------------------------
// Additions for the integration suite (one file per concern under tests/).
// ---------------------------------------------------------------------------------------------

use copanel::auth::now_secs;
use copanel_protocol::{Envelope, SessionState, StreamState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// A short wait, for "nothing more arrives" checks.
pub const QUIET: Duration = Duration::from_millis(150);

impl TestServer {
    /// The store's epoch as the server reported it at start.
    pub fn epoch(&self) -> String {
        self.running.as_ref().expect("running").epoch.clone()
    }

    /// Mints a token for arbitrary claims (expired ones, other companies, …).
    pub fn mint(&self, claims: &Claims) -> String {
        self.auth.mint(claims).expect("mint")
    }

    /// Claims for an `acme` principal valid for an hour.
    pub fn claims(&self, sub: &str, role: Role) -> Claims {
        Claims {
            sub: sub.into(),
            company: "acme".into(),
            role,
            name: None,
            groups: Vec::new(),
            exp: now_secs() + 3600,
        }
    }

    /// A client of company `company` speaking `enc`.
    pub async fn client_of(&self, company: &str, sub: &str, role: Role, enc: Encoding) -> Client {
        self.connect(&self.token_for(company, sub, role, &[]), enc)
            .await
    }

    /// `GET path` over plain HTTP/1.1 on 127.0.0.1; returns the status and the body.
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }

    /// `/healthz` as JSON (asserts 200).
    pub async fn healthz(&self) -> Value {
        let (status, body) = self.http_get("/healthz").await;
        assert_eq!(status, 200, "healthz status; body {body}");
        serde_json::from_str(&body).expect("healthz is JSON")
    }

    /// Polls `/healthz` until it counts `n` open connections (panics after [`WAIT`]); returns
    /// that `/healthz`. A connection the client dropped or the server closed is counted until
    /// the server's connection task has cleaned up, which can be after the client saw the end.
    pub async fn wait_connections(&self, n: u64) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let h = self.healthz().await;
            if h["connections"].as_u64() == Some(n) {
                return h;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/healthz never counted {n} connections: {h}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A raw HTTP/1.1 GET with `Connection: close`, bounded by [`WAIT`].
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http_request(addr, "GET", path, &[], None).await;
    (status, body)
}

/// A raw HTTP/1.1 request with `Connection: close` (and a JSON body when given), bounded by
/// [`WAIT`]: `(status, head, body)`, the body de-chunked.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (u16, String, String) {
    let run = async {
        let mut s = TcpStream::connect(addr).await.expect("tcp connect");
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        s.write_all(&bytes).await.expect("write request");
        let mut buf = Vec::new();
        // The server may answer (413) before reading the whole body and close; take what came.
        let _ = s.read_to_end(&mut buf).await;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head and body");
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let chunked = head.lines().any(|l| {
            l.to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked")
        });
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        };
        (status, head.to_owned(), body)
    };
    tokio::time::timeout(WAIT, run)
        .await
        .expect("HTTP answer in time")
}

/// Joins the chunks of a `Transfer-Encoding: chunked` body.
pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Opens a WebSocket with the given headers (no defaults added); for handshake refusals.
pub async fn connect_with(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, tokio_tungstenite::tungstenite::Error> {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake in time")
        .map(|(ws, _)| ws)
}

/// The HTTP status and JSON body of a refused handshake (panics if it was accepted).
pub fn refused(
    r: Result<WebSocketStream<MaybeTlsStream<TcpStream>>, tokio_tungstenite::tungstenite::Error>,
) -> (u16, Value) {
    match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
            (resp.status().as_u16(), json)
        }
        Err(e) => panic!("expected an HTTP refusal, got {e:?}"),
        Ok(_) => panic!("expected an HTTP refusal, the upgrade was accepted"),
    }
}

impl Client {
    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_owned().into()))
            .await
            .expect("send");
    }

    /// Sends a binary frame as is.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send");
    }

    /// Sends a command without waiting for its reply; returns the request id.
    pub async fn send_command(&mut self, stream: &str, command_id: &str, command: Value) -> u64 {
        let id = self.id();
        self.send(json!({"type": "command", "id": id, "stream": stream,
            "command_id": command_id, "command": command}))
            .await;
        id
    }

    /// Sends any request with a fresh id without waiting; returns the id.
    pub async fn send_request(&mut self, mut frame: Value) -> u64 {
        let id = self.id();
        frame["id"] = json!(id);
        self.send(frame).await;
        id
    }

    /// `ping` → asserts `pong` with the same id comes back next (after any events/acks).
    pub async fn ping(&mut self) {
        let f = self.request(json!({"type": "ping"})).await;
        assert!(
            matches!(f, ServerFrame::Pong { .. }),
            "expected pong, got {f:?}"
        );
    }

    /// Next frame that must be an event.
    pub async fn recv_event(&mut self) -> Envelope {
        match self.recv().await {
            ServerFrame::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// The next `n` events; acks and pongs in between are skipped, anything else fails.
    pub async fn recv_events(&mut self, n: usize) -> Vec<Envelope> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.recv().await {
                ServerFrame::Event(e) => out.push(e),
                ServerFrame::Ack { .. } | ServerFrame::Pong { .. } => {}
                other => panic!("expected events, got {other:?} after {} events", out.len()),
            }
        }
        out
    }

    /// Asserts nothing arrives for [`QUIET`].
    pub async fn assert_quiet(&mut self) {
        if let Some(f) = self.try_recv(QUIET).await {
            panic!("expected no frame, got {f:?}");
        }
    }

    /// Subscribes for a snapshot; returns `(head, epoch, state)` after checking the pair of
    /// frames (`subscribed` then `snapshot` at `head`).
    pub async fn subscribe_snapshot(&mut self, stream: &str) -> (u64, String, StreamState) {
        let (head, epoch) = match self.subscribe(stream, None).await {
            ServerFrame::Subscribed { head, epoch, .. } => (head, epoch),
            other => panic!("expected subscribed, got {other:?}"),
        };
        match self.recv().await {
            ServerFrame::Snapshot {
                stream: s,
                seq,
                state,
                ..
            } => {
                assert_eq!(s.as_str(), stream, "snapshot of the subscribed stream");
                assert_eq!(seq, head, "snapshot taken at the subscribed head");
                (head, epoch, state)
            }
            other => panic!("expected snapshot, got {other:?}"),
        }
    }

    /// `state_at` reply (state or error).
    pub async fn state_at(&mut self, stream: &str, seq: u64) -> ServerFrame {
        self.request(json!({"type": "state_at", "stream": stream, "seq": seq}))
            .await
    }

    /// The session state at `seq` (asserts success).
    pub async fn session_at(&mut self, stream: &str, seq: u64) -> SessionState {
        match self.state_at(stream, seq).await {
            ServerFrame::State {
                state: StreamState::Session(s),
                seq: got,
                ..
            } => {
                assert_eq!(got, seq, "state at the asked seq");
                s
            }
            other => panic!("expected a session state, got {other:?}"),
        }
    }

    /// `history` reply.
    pub async fn history(&mut self, stream: &str, from: u64, limit: Option<u64>) -> ServerFrame {
        let mut f = json!({"type": "history", "stream": stream, "from": from});
        if let Some(l) = limit {
            f["limit"] = json!(l);
        }
        self.request(f).await
    }

    /// The whole log of a stream, following `next`.
    pub async fn full_history(&mut self, stream: &str) -> Vec<Envelope> {
        let mut out = Vec::new();
        let mut from = 1;
        loop {
            match self.history(stream, from, Some(1000)).await {
                ServerFrame::History { events, next, .. } => {
                    out.extend(events);
                    match next {
                        Some(n) => from = n,
                        None => return out,
                    }
                }
                other => panic!("expected history, got {other:?}"),
            }
        }
    }

    /// The stream's head as the log shows it.
    pub async fn head(&mut self, stream: &str) -> u64 {
        self.full_history(stream).await.last().map_or(0, |e| e.seq)
    }

    /// Reads until the server closes; returns the frames before the close and the close frame.
    pub async fn recv_close(&mut self, within: Duration) -> (Vec<ServerFrame>, Option<CloseFrame>) {
        let mut frames = Vec::new();
        let run = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(c))) => return c,
                    Some(Ok(Message::Text(t))) => frames.push(
                        decode_server(self.enc, t.as_bytes()).expect("decodable server frame"),
                    ),
                    Some(Ok(Message::Binary(b))) => {
                        frames.push(decode_server(self.enc, &b).expect("decodable server frame"))
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("socket error before a close frame: {e}"),
                    None => panic!("socket ended without a close frame"),
                }
            }
        };
        let close = tokio::time::timeout(within, run)
            .await
            .expect("a close frame in time");
        if !self.ambient {
            frames.retain(|f| !is_ambient(f));
        }
        (frames, close)
    }
}

/// The error frame's fields `(code, field, message)`; panics on anything else.
pub fn error_parts(f: &ServerFrame) -> (String, Option<String>, String) {
    match f {
        ServerFrame::Error {
            code,
            field,
            message,
            ..
        } => (code.as_str().to_owned(), field.clone(), message.clone()),
        other => panic!("expected error, got {other:?}"),
    }
}

/// The session state inside a snapshot/state value.
pub fn session(s: &StreamState) -> &SessionState {
    match s {
        StreamState::Session(s) => s,
        other => panic!("expected a session state, got {other:?}"),
    }
}

/// Each event's seq.
pub fn seqs(events: &[Envelope]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

impl Client {
    /// Wraps an already open socket (e.g. from [`connect_with`]).
    pub fn from_ws(ws: WebSocketStream<MaybeTlsStream<TcpStream>>, enc: Encoding) -> Self {
        Client {
            ws,
            enc,
            next_id: 1,
            ambient: false,
        }
    }
}

impl Client {
    /// Connects with a small kernel receive buffer (`SO_RCVBUF`), so that a client that stops
    /// reading makes the server's writes block quickly instead of filling megabytes of
    /// auto-tuned socket buffers.
    pub async fn connect_small_buffer(url: &str, token: &str, enc: Encoding, rcvbuf: u32) -> Self {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        req.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(enc.subprotocol()),
        );
        let host = req
            .uri()
            .authority()
            .expect("authority")
            .as_str()
            .to_owned();
        let addr: SocketAddr = host.parse().expect("a numeric 127.0.0.1 address");
        let run = async {
            let sock = tokio::net::TcpSocket::new_v4().expect("socket");
            sock.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
            let tcp = sock.connect(addr).await.expect("tcp connect");
            tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp))
                .await
                .expect("handshake")
                .0
        };
        let ws = tokio::time::timeout(WAIT, run)
            .await
            .expect("connect in time");
        Client::from_ws(ws, enc)
    }
}

/// Sends a `query` frame (`frame` without its `type`) and waits for its `result` or `error`.
pub async fn query(c: &mut Client, mut frame: Value) -> ServerFrame {
    frame["type"] = json!("query");
    let id = c.send_request(frame).await;
    c.recv_until(|f| match f {
        ServerFrame::Result { id: got, .. } | ServerFrame::Error { id: got, .. } => {
            *got == Some(id)
        }
        _ => false,
    })
    .await
}

/// The `created` id of an ack (panics on anything else).
#[track_caller]
pub fn created(f: &ServerFrame) -> String {
    match f {
        ServerFrame::Ack {
            created: Some(c), ..
        } => c.clone(),
        other => panic!("expected an ack with created, got {other:?}"),
    }
}
