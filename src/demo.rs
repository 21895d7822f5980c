//! `copanel demo`: a server with a ready-made company to click through in the console.
//!
//! Owns the demo's seed data (company `demo`: four operators, a coloured catalog with an
//! auto-tag rule and two templates, one open session owned by `op-anna` with `op-ben` invited)
//! and the background "customer" that posts a client message every 10 seconds (at most 100).
//! Everything is submitted through the writer like any other command, with fixed command ids,
//! so starting the demo again on the same data directory adds nothing twice.

use crate::auth::{now_secs, Claims};
use crate::domain::Principal;
use crate::server::{self, Config, Running};
use copanel_protocol::{Command, Role, StreamName};
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The demo's company id.
pub const COMPANY: &str = "demo";
/// The demo session's stream.
pub const SESSION: &str = "session/demo-1";
/// Most client messages the background customer posts.
pub const MAX_MESSAGES: u32 = 100;
/// Time between two client messages.
pub const MESSAGE_EVERY: Duration = Duration::from_secs(10);

/// The demo's people: (id, role, display name, groups).
const PEOPLE: [(&str, Role, &str, &[&str]); 4] = [
    ("op-anna", Role::Operator, "Anna", &["support"]),
    ("op-ben", Role::Operator, "Ben", &["support"]),
    ("sup-cleo", Role::Supervisor, "Cleo", &[]),
    ("adm-dan", Role::Admin, "Dan", &[]),
];

const CLIENT_LINES: [&str; 4] = [
    "Hello, I am still waiting for my parcel.",
    "Could someone call me back tomorrow?",
    "Chci podat stížnost, zásilka dorazila poškozená.",
    "Thanks, that helps.",
];

fn principal(id: &str, role: Role) -> Principal {
    Principal {
        id: id.to_owned(),
        role,
        groups: Vec::new(),
    }
}

/// Submits one command given as its wire JSON; any refusal is an error naming the command.
async fn submit(
    running: &Running,
    who: &Principal,
    stream: &str,
    command_id: &str,
    command: Value,
) -> Result<(), String> {
    let stream_name =
        StreamName::parse(stream).map_err(|e| format!("demo stream {stream}: {e}"))?;
    let command: Command =
        serde_json::from_value(command).map_err(|e| format!("demo command {command_id}: {e}"))?;
    running
        .command(COMPANY, who.clone(), stream_name, command_id, command)
        .await
        .map(|_| ())
        .map_err(|e| format!("demo command {command_id} on {stream}: {e}"))
}

/// Writes the demo company's catalog and its session (idempotent: fixed command ids).
pub async fn seed(running: &Running) -> Result<(), String> {
    let admin = principal("adm-dan", Role::Admin);
    let platform = principal("platform", Role::Service);
    let anna = principal("op-anna", Role::Operator);
    for (tag, bg, fg) in [
        ("VIP", "#f9a825", "#1f1f1f"),
        ("Complaint", "#d32f2f", "#ffffff"),
        ("Callback", "#1976d2", "#ffffff"),
    ] {
        let cmd = json!({"kind": "define_tag", "tag": tag, "background": bg, "text": fg});
        submit(running, &admin, "catalog", &format!("demo-tag-{tag}"), cmd).await?;
    }
    let rule = json!({"kind": "add_autotag_rule", "keywords": ["complaint", "stížnost"], "tag": "Complaint"});
    submit(running, &admin, "catalog", "demo-rule-complaint", rule).await?;
    let greeting = json!({"kind": "create_template", "title": "Greeting",
        "text": "Hello, thank you for contacting us. How can I help you?"});
    submit(
        running,
        &admin,
        "catalog",
        "demo-template-greeting",
        greeting,
    )
    .await?;
    let callback = json!({"kind": "create_template", "title": "Call back",
        "text": "We will call you back within one working day."});
    submit(
        running,
        &admin,
        "catalog",
        "demo-template-callback",
        callback,
    )
    .await?;
    let open = json!({"kind": "open_session", "channel": "chat",
        "client": {"name": "Jana Nováková", "phone": "+420 777 123 456", "email": "jana@example.com"},
        "parameters": {"crm_id": {"value": "C-1742", "read_only": true},
                       "lang": {"value": "cs"}},
        "owner": {"operator_id": "op-anna"}});
    submit(running, &platform, SESSION, "demo-open", open).await?;
    let invite = json!({"kind": "invite_collaborator", "operator_id": "op-ben"});
    submit(running, &anna, SESSION, "demo-invite-ben", invite).await?;
    Ok(())
}

/// A console link for one of the demo's people, valid for 12 hours.
pub fn link(running: &Running, id: &str) -> Result<String, String> {
    let (sub, role, name, groups) = PEOPLE
        .iter()
        .find(|p| p.0 == id)
        .ok_or_else(|| format!("no demo person {id}"))?;
    let token = running
        .auth
        .mint(&Claims {
            sub: (*sub).to_owned(),
            company: COMPANY.to_owned(),
            role: *role,
            name: Some((*name).to_owned()),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            exp: now_secs() + 12 * 3600,
        })
        .map_err(|e| e.to_string())?;
    Ok(format!("http://{}/?token={token}", running.addr))
}

/// Posts a client message every [`MESSAGE_EVERY`], [`MAX_MESSAGES`] at most; then idles.
async fn customer(running: &Running) {
    let platform = principal("platform", Role::Service);
    let run_id = now_secs();
    for n in 0..MAX_MESSAGES {
        tokio::time::sleep(MESSAGE_EVERY).await;
        let text = CLIENT_LINES[n as usize % CLIENT_LINES.len()];
        let cmd = json!({"kind": "post_message", "from": "client", "text": text});
        if let Err(e) = submit(
            running,
            &platform,
            SESSION,
            &format!("demo-msg-{run_id}-{n}"),
            cmd,
        )
        .await
        {
            tracing::warn!(error = %e, "demo customer message refused");
        }
    }
    std::future::pending::<()>().await
}

/// Runs the demo until `shutdown` completes: starts the server on `listen` with data in `data`
/// (a fresh temporary directory when `None`), seeds it, prints console links, and lets the
/// customer talk.
pub async fn run(
    listen: SocketAddr,
    data: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let data = data.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        std::env::temp_dir().join(format!("copanel-demo-{}-{nanos}", std::process::id()))
    });
    let running = server::start(Config::new(listen, data.clone()))
        .await
        .map_err(|e| e.to_string())?;
    if let Err(e) = seed(&running).await {
        running.shutdown().await;
        return Err(e);
    }
    println!(
        "copanel demo on http://{} (data {}, company {COMPANY})",
        running.addr,
        data.display()
    );
    for (id, role, _, _) in PEOPLE {
        match link(&running, id) {
            Ok(url) => println!("  {id} ({role:?}): {url}"),
            Err(e) => eprintln!("copanel: cannot mint a token for {id}: {e}"),
        }
    }
    println!(
        "A client message arrives in {SESSION} every {} s. Ctrl-C stops.",
        MESSAGE_EVERY.as_secs()
    );
    tokio::select! {
        _ = shutdown => {}
        _ = customer(&running) => {}
    }
    running.shutdown().await;
    Ok(())
}
