mod support;
use copanel_protocol::{Role, ServerFrame};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let s = TestServer::start().await;
    let mut svc = s.client("platform", Role::Service).await;
    let f = svc.command("session/s1", "c1", open_session("op1")).await;
    println!("{f:?}");
    let mut op1 = s.client("op1", Role::Operator).await;
    let f = op1.subscribe("session/s1", None).await;
    println!("{f:?}");
    let snap = op1.recv().await;
    println!("{snap:?}");
    let f = svc
        .command(
            "session/s1",
            "c2",
            serde_json::json!({"kind":"add_tag","tag":"vip"}),
        )
        .await;
    println!("{f:?}");
    let ev = op1.recv().await;
    println!("{ev:?}");
    assert!(matches!(
        ev,
        ServerFrame::Event(_) | ServerFrame::Error { .. }
    ));
    s.stop().await;
}
