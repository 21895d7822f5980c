//! The bare fan-out baseline of `examples/load.rs` (issue 6): what a WebSocket fan-out costs on
//! this machine with nothing else — no log, no disk, no auth, no decoding, no per-stream order
//! beyond the broadcast's.
//!
//! ```text
//! target/release/examples/bare --listen 127.0.0.1:7800
//! ```
//!
//! A client connects to `ws://ADDR/r/<room>`; every binary or text frame it sends is broadcast
//! as is (the same `Bytes`, shared, never re-encoded) to every connection of that room, the
//! sender included, through one `tokio::sync::broadcast` channel per room. A connection that
//! falls more than `QUEUE` messages behind skips what it missed (the broadcast's lag), so a slow
//! reader never slows the others. Rooms are never removed: the baseline lives as long as a
//! benchmark.

use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// The same allocator as copanel's server, so the ratio compares servers, not allocators.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Messages buffered per room (the broadcast's capacity).
const QUEUE: usize = 1024;

type Rooms = Arc<Mutex<HashMap<String, broadcast::Sender<Message>>>>;

fn main() -> ExitCode {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 7800).into();
    let mut argv = std::env::args().skip(1);
    while let Some(a) = argv.next() {
        match (a.as_str(), argv.next()) {
            ("--listen", Some(v)) => match v.parse() {
                Ok(addr) => listen = addr,
                Err(e) => {
                    eprintln!("bare: --listen {v:?}: {e}");
                    return ExitCode::FAILURE;
                }
            },
            _ => {
                eprintln!("usage: bare [--listen ADDR]   (default 127.0.0.1:7800)");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("bare: cannot raise the open-files limit: {e}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bare: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(listen: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    eprintln!("bare: listening on ws://{listen}/r/<room>");
    let rooms: Rooms = Arc::default();
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait a little rather than spin.
                eprintln!("bare: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(tcp, rooms.clone()));
    }
}

async fn connection(tcp: TcpStream, rooms: Rooms) {
    let mut path = String::new();
    // The signature (and its large error type) is tungstenite's `Callback`.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_owned();
        Ok(resp)
    };
    // 8 KiB reads, as copanel's server (tungstenite zero-fills the whole read buffer per read).
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0);
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config)).await
    else {
        return;
    };
    let room = path.strip_prefix("/r/").unwrap_or(&path).to_owned();
    let tx = {
        let mut rooms = rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms
            .entry(room)
            .or_insert_with(|| broadcast::channel(QUEUE).0)
            .clone()
    };
    let mut rx = tx.subscribe();
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(m @ (Message::Binary(_) | Message::Text(_)))) => {
                    let _ = tx.send(m);
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            out = rx.recv() => match out {
                Ok(m) => {
                    if sink.send(m).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    let _ = sink.send(Message::Close(None)).await;
}
