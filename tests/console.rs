//! The operator console in a real browser: `tests/browser/console.mjs` drives two headless
//! Chromium contexts (playwright-core) against a real server. Skipped, with the reason printed,
//! when node, chromium or playwright-core is missing (`.ci/run` installs them).
//! Also checks that the console's assets are served by the binary.

mod support;

use copanel_protocol::Role;
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use support::*;

#[tokio::test]
async fn console_assets_are_served() {
    let server = TestServer::start().await;
    let (status, body) = server.http_get("/").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("/console/app.js"),
        "index names its module: {body}"
    );
    let (status, body) = server.http_get("/console/app.js").await;
    assert_eq!(status, 200);
    assert!(body.contains("copanel.v1.json"));
    let (status, _) = server.http_get("/console/style.css").await;
    assert_eq!(status, 200);
    server.stop().await;
}

fn missing_browser_tools(dir: &Path) -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!("{chromium} is missing (apt-get install chromium)"));
    }
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.map(|o| o.status.success()).unwrap_or(false) {
        return Some("node is missing".into());
    }
    if !dir.join("node_modules/playwright-core").exists() {
        return Some(format!(
            "playwright-core is missing (cd {} && npm ci)",
            dir.display()
        ));
    }
    None
}

#[tokio::test]
async fn two_operators_edit_live_and_see_history_in_a_browser() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if let Some(why) = missing_browser_tools(&dir) {
        eprintln!("skipping the browser test: {why}");
        return;
    }
    let server = TestServer::start().await;
    opened(&server, "web", "op1").await;
    let mut op1 = server.client("op1", Role::Operator).await;
    let f = op1
        .command(
            "session/web",
            "inv-op2",
            json!({"kind": "invite_collaborator", "operator_id": "op2"}),
        )
        .await;
    assert_eq!(ack_seq(&f), 2);
    let mut op2 = server.client("op2", Role::Operator).await;
    let f = op2
        .command(
            "session/web",
            "acc-op2",
            json!({"kind": "accept_invitation"}),
        )
        .await;
    assert_eq!(ack_seq(&f), 3);

    let base = format!("http://{}", server.addr);
    let run = tokio::process::Command::new("node")
        .current_dir(&dir)
        .arg("console.mjs")
        .arg(&base)
        .arg(server.token("op1", Role::Operator))
        .arg(server.token("op2", Role::Operator))
        .arg("web")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(110), run)
        .await
        .expect("the browser script finishes within 110 s")
        .expect("node starts");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "browser script failed: {}",
        out.status
    );

    // What the browser did is in the log: tag, note, parameter after the three seeded events.
    // The log holds what the pages did, gapless, ending with B's close.
    let events = op2.full_history("session/web").await;
    let n = events.len() as u64;
    assert_eq!(seqs(&events), (1..=n).collect::<Vec<_>>());
    assert!(n >= 12, "{n} events");
    assert!(
        matches!(
            events.last().map(|e| &e.event),
            Some(copanel_protocol::Event::SessionClosed)
        ),
        "{:?}",
        events.last()
    );
    server.stop().await;
}
