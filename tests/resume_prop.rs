//! Property (issue 5, item 2): through a real server on 127.0.0.1, whatever the interleaving of
//! appends from several writers (sent without waiting for acks, so they really race) and of
//! subscribes with any `since` (0, the middle, the head as last seen, beyond the head) or for a
//! snapshot, every subscriber receives exactly the events it is missing: `since + 1` (or the
//! snapshot's seq + 1) up to the final head, no gaps, no duplicates, in order, identical to the
//! log, and then live events. `since` beyond the head is refused as `invalid` on `since`.
//!
//! One server serves all cases; each case works on a fresh session. Bounded to 24 cases.

mod support;

use copanel_protocol::{Envelope, Role, ServerFrame};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use support::*;

const WRITERS: [(&str, Role); 3] = [
    ("op1", Role::Operator),
    ("sup1", Role::Supervisor),
    ("sup2", Role::Supervisor),
];

#[derive(Debug, Clone)]
enum Since {
    Zero,
    Middle,
    Head,
    Beyond(u64),
    Snapshot,
}

#[derive(Debug, Clone)]
enum Op {
    /// `n` commands from writer `w`, sent without waiting for the acks.
    Append { w: usize, n: u64 },
    /// A new subscriber.
    Subscribe(Since),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..WRITERS.len(), 1u64..5).prop_map(|(w, n)| Op::Append { w, n }),
        2 => prop_oneof![
            Just(Since::Zero),
            Just(Since::Middle),
            Just(Since::Head),
            (1u64..5).prop_map(Since::Beyond),
            Just(Since::Snapshot),
        ]
        .prop_map(Op::Subscribe),
    ]
}

/// A subscriber and the first seq it must receive next.
struct Sub {
    client: Client,
    next: u64,
    what: Since,
}

async fn run_case(server: &TestServer, case: u64, ops: Vec<Op>) {
    let id = format!("resume{case}");
    let stream = format!("session/{id}");
    opened(server, &id, "op1").await;
    let mut writers = Vec::new();
    for (sub, role) in WRITERS {
        writers.push((server.client(sub, role).await, Vec::new()));
    }
    let appends: u64 = ops
        .iter()
        .map(|o| match o {
            Op::Append { n, .. } => *n,
            Op::Subscribe(_) => 0,
        })
        .sum();
    let max_head = 1 + appends;
    let mut subs: Vec<Sub> = Vec::new();
    let mut sent = 0u64;
    for op in ops {
        match op {
            Op::Append { w, n } => {
                let (c, ids) = &mut writers[w];
                for _ in 0..n {
                    sent += 1;
                    let cmd = json!({"kind": "add_note", "text": format!("note {sent}")});
                    ids.push(c.send_command(&stream, &format!("c{sent}"), cmd).await);
                }
            }
            Op::Subscribe(what) => {
                let mut client = server.client("sup9", Role::Supervisor).await;
                let seen = client.head(&stream).await;
                let since = match what {
                    Since::Zero => Some(0),
                    Since::Middle => Some(seen / 2),
                    Since::Head => Some(seen),
                    Since::Beyond(k) => Some(max_head + k),
                    Since::Snapshot => None,
                };
                let next = match (&what, since) {
                    (Since::Snapshot, _) => client.subscribe_snapshot(&stream).await.0 + 1,
                    (Since::Beyond(_), Some(s)) => {
                        let f = client.subscribe(&stream, Some(s)).await;
                        let (code, field, _) = error_parts(&f);
                        assert_eq!(
                            (code.as_str(), field.as_deref()),
                            ("invalid", Some("since"))
                        );
                        continue;
                    }
                    (_, Some(s)) => match client.subscribe(&stream, Some(s)).await {
                        ServerFrame::Subscribed { head, .. } => {
                            assert!(head >= s, "head {head} below since {s}");
                            s + 1
                        }
                        other => panic!("since {s}: {other:?}"),
                    },
                    (_, None) => unreachable!("only snapshots have no since"),
                };
                subs.push(Sub { client, next, what });
            }
        }
    }
    // Every command is acked, in the order each writer sent them.
    let mut head = 1;
    for (c, ids) in &mut writers {
        for want in ids.iter() {
            match c.recv().await {
                ServerFrame::Ack { id, seq, .. } => {
                    assert_eq!(id, Some(*want));
                    head = head.max(seq);
                }
                other => panic!("expected ack, got {other:?}"),
            }
        }
    }
    assert_eq!(head, max_head, "every append acked");
    let log = writers[0].0.full_history(&stream).await;
    assert_eq!(seqs(&log), (1..=head).collect::<Vec<_>>());
    // Each subscriber: exactly the missing events, identical to the log, then live.
    let live = ack_seq(
        &writers[0]
            .0
            .command(&stream, "live", json!({"kind": "add_tag", "tag": "live"}))
            .await,
    );
    for s in &mut subs {
        let got: Vec<Envelope> = s.client.recv_events((live + 1 - s.next) as usize).await;
        let want: Vec<u64> = (s.next..=live).collect();
        assert_eq!(seqs(&got), want, "{:?}", s.what);
        let (logged, last) = got.split_at(got.len() - 1);
        let from = (s.next - 1) as usize;
        assert_eq!(
            logged,
            &log[from..],
            "{:?}: events differ from the log",
            s.what
        );
        assert_eq!(last[0].seq, live);
        s.client.assert_quiet().await;
    }
}

#[test]
fn resume_gives_exactly_the_missing_events() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(TestServer::start_with(|c| {
        c.edge.command_burst = 10_000.0;
        c.edge.commands_per_sec = 100_000.0;
    }));
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let case = AtomicU64::new(0);
    let outcome = runner.run(&prop::collection::vec(op(), 1..16), |ops| {
        rt.block_on(run_case(&server, case.fetch_add(1, Ordering::Relaxed), ops));
        Ok(())
    });
    println!("resume property: {} cases", case.load(Ordering::Relaxed));
    rt.block_on(server.stop());
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
