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
        let mut config = Config::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        config.secret = Some("test-secret-test-secret".into());
        tune(&mut config);
        let running = server::start(config).await.expect("server starts");
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
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.dir
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub enc: Encoding,
    next_id: u64,
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
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
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
            return decode_server(self.enc, &bytes).expect("decodable server frame");
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

/// Whether `f` is the reply to request `id`.
pub fn reply_to(f: &ServerFrame, want: u64) -> bool {
    let id = match f {
        ServerFrame::Subscribed { id, .. }
        | ServerFrame::Unsubscribed { id, .. }
        | ServerFrame::Ack { id, .. }
        | ServerFrame::History { id, .. }
        | ServerFrame::State { id, .. }
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
