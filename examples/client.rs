//! An interactive command-line client for copanel's WebSocket protocol.
//!
//! Reads one JSON frame per line from stdin and sends it; prints every frame the server sends as
//! one line of JSON on stdout (MessagePack frames are decoded for printing). Diagnostics go to
//! stderr, so stdout can be piped to `jq`.
//!
//! ```text
//! cargo run --example client -- [--url ws://127.0.0.1:7700/ws] --token TOKEN [--msgpack]
//! {"type":"subscribe","id":1,"stream":"session/s1"}
//! {"type":"command","id":2,"stream":"session/s1","command_id":"c1","command":{"kind":"add_tag","tag":"vip"}}
//! ```
//!
//! Without `--msgpack` it speaks `copanel.v1.json` (text frames); with it `copanel.v1.msgpack`
//! (each input line is converted to MessagePack). It exits when stdin ends (after waiting
//! `--linger-ms` for the last replies) or when the server closes the connection. It never
//! reconnects.

use clap::Parser;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

#[derive(Parser)]
#[command(
    name = "client",
    about = "Send JSON frames from stdin to a copanel server; print the server's frames as JSON lines"
)]
struct Args {
    /// WebSocket URL of the server.
    #[arg(long, default_value = "ws://127.0.0.1:7700/ws")]
    url: String,
    /// Token (from `copanel token`); sent as `Authorization: Bearer`.
    #[arg(long, env = "COPANEL_TOKEN", hide_env_values = true)]
    token: String,
    /// Speak MessagePack (`copanel.v1.msgpack`) instead of JSON.
    #[arg(long)]
    msgpack: bool,
    /// After stdin ends, how long to keep printing replies before closing, milliseconds.
    #[arg(long, default_value_t = 500)]
    linger_ms: u64,
    /// How long to wait for the connection, seconds.
    #[arg(long, default_value_t = 10)]
    connect_timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("client: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(run(args));
    // tokio reads stdin on a blocking thread that cannot be cancelled: do not wait for it (an
    // interactive user would have to press Enter after the server closed).
    rt.shutdown_background();
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("client: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let subprotocol = if args.msgpack {
        "copanel.v1.msgpack"
    } else {
        "copanel.v1.json"
    };
    let mut req = args
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad --url {:?}: {e}", args.url))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", args.token.trim()))
        .map_err(|_| "the token holds characters not allowed in a header".to_string())?;
    req.headers_mut().insert("authorization", bearer);
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(subprotocol),
    );

    let connect = tokio_tungstenite::connect_async(req);
    let (ws, _) =
        match tokio::time::timeout(Duration::from_secs(args.connect_timeout), connect).await {
            Err(_) => {
                return Err(format!(
                    "no connection to {} within {}s",
                    args.url, args.connect_timeout
                ))
            }
            Ok(Err(WsError::Http(resp))) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                return Err(format!(
                    "the server refused the upgrade: {} {body}",
                    resp.status()
                ));
            }
            Ok(Err(e)) => return Err(format!("cannot connect to {}: {e}", args.url)),
            Ok(Ok(c)) => c,
        };
    eprintln!("client: connected to {} ({subprotocol})", args.url);

    let (mut sink, mut stream) = ws.split();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let mut stdin_open = true;
    // Armed once stdin ends: how long we keep printing replies.
    let linger = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(linger);

    loop {
        tokio::select! {
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let value: Value = match serde_json::from_str(line) {
                        Ok(v) => v,
                        Err(e) => {
                            eprintln!("client: not sent, not JSON: {e}");
                            continue;
                        }
                    };
                    let msg = if args.msgpack {
                        match rmp_serde::to_vec_named(&value) {
                            Ok(b) => Message::Binary(b.into()),
                            Err(e) => {
                                eprintln!("client: not sent, cannot encode as MessagePack: {e}");
                                continue;
                            }
                        }
                    } else {
                        Message::Text(value.to_string().into())
                    };
                    if let Err(e) = sink.send(msg).await {
                        return Err(format!("send failed: {e}"));
                    }
                }
                Ok(None) | Err(_) => {
                    stdin_open = false;
                    linger
                        .as_mut()
                        .reset(tokio::time::Instant::now() + Duration::from_millis(args.linger_ms));
                }
            },
            _ = &mut linger, if !stdin_open => {
                let _ = sink.send(Message::Close(None)).await;
                // Give the close handshake a moment; the server's reply is not needed.
                let _ = tokio::time::timeout(Duration::from_millis(200), async {
                    while let Some(Ok(_)) = stream.next().await {}
                })
                .await;
                return Ok(());
            }
            msg = stream.next() => match msg {
                None => {
                    eprintln!("client: the server closed the connection");
                    return Ok(());
                }
                Some(Err(e)) => return Err(format!("connection lost: {e}")),
                Some(Ok(Message::Close(frame))) => {
                    match frame {
                        Some(f) => eprintln!("client: the server closed the connection: {} {}", f.code, f.reason),
                        None => eprintln!("client: the server closed the connection"),
                    }
                    return Ok(());
                }
                Some(Ok(Message::Text(t))) => {
                    let line = match serde_json::from_str::<Value>(t.as_str()) {
                        Ok(v) => v.to_string(),
                        // Not JSON (should not happen): print it as a JSON string.
                        Err(_) => Value::String(t.as_str().to_owned()).to_string(),
                    };
                    print_line(&mut stdout, &line).await?;
                }
                Some(Ok(Message::Binary(b))) => {
                    let line = match rmp_serde::from_slice::<Value>(&b) {
                        Ok(v) => v.to_string(),
                        Err(e) => {
                            eprintln!("client: a binary frame that is not MessagePack ({e}), {} bytes", b.len());
                            continue;
                        }
                    };
                    print_line(&mut stdout, &line).await?;
                }
                // Pings are answered by the WebSocket layer.
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn print_line(out: &mut tokio::io::Stdout, line: &str) -> Result<(), String> {
    let err = |e: std::io::Error| format!("stdout: {e}");
    out.write_all(line.as_bytes()).await.map_err(err)?;
    out.write_all(b"\n").await.map_err(err)?;
    out.flush().await.map_err(err)
}
