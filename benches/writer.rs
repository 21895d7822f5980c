//! Group commit through the real writer task (decide, append, flush, publish, ack), against
//! the same commands sent one after the other, each waiting for its ack — i.e. one flush per
//! command. Same store, same run, `sync` durability.
//!
//! `cargo bench --bench writer`

use copanel::domain::{Limits, Principal};
use copanel::hub::Hub;
use copanel::search::ContactIndex;
use copanel::store::{CommandOutcome, SledStore, Store};
use copanel::writer::{self, CommandRequest, Durability, WriterHandle};
use copanel_protocol::{Command, Role, StreamName};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The allocator the `copanel` binary uses (`src/main.rs`), so the figures are the server's:
/// under glibc's malloc the writer bench's batched rate was about a fifth lower (BENCHMARKS.md,
/// sixth pass).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Commands per iteration.
const N: u64 = 64;

fn request(
    stream: &StreamName,
    who: &Principal,
    id: u64,
    command: Command,
) -> (
    CommandRequest,
    oneshot::Receiver<Result<CommandOutcome, writer::CommandError>>,
) {
    let (reply, rx) = oneshot::channel();
    (
        CommandRequest {
            company: Arc::from("bench"),
            principal: who.clone(),
            stream: stream.clone(),
            command_id: format!("c{id}"),
            expected_seq: None,
            command,
            reply,
        },
        rx,
    )
}

fn set_parameter(i: u64) -> Command {
    serde_json::from_value(serde_json::json!({
        "kind": "set_parameter", "key": format!("k{}", i % 50), "value": format!("value {i}")
    }))
    .unwrap()
}

async fn submit(w: &WriterHandle, stream: &StreamName, who: &Principal, id: u64, cmd: Command) {
    let (req, rx) = request(stream, who, id, cmd);
    w.submit(req).await;
    rx.await.unwrap().unwrap();
}

fn writer_commit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let (w, _task) = rt.block_on(async {
        writer::spawn(
            store,
            Arc::new(Hub::new()),
            Arc::new(ContactIndex::new()),
            Durability::Sync,
            Limits::default(),
            4096,
        )
    });
    let stream = StreamName::parse("session/bench-w").unwrap();
    let service = Principal {
        id: "platform".into(),
        role: Role::Service,
        groups: vec![],
    };
    let owner = Principal {
        id: "op1".into(),
        role: Role::Operator,
        groups: vec![],
    };
    let open: Command = serde_json::from_value(serde_json::json!({
        "kind": "open_session", "channel": "chat", "client": {"name": "Jana"},
        "owner": {"operator_id": "op1"}
    }))
    .unwrap();
    rt.block_on(submit(&w, &stream, &service, 0, open));
    let next = AtomicU64::new(1);

    let mut g = c.benchmark_group("writer_sync_commit");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("concurrent_64", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                rt.block_on(async {
                    let mut waits = Vec::with_capacity(N as usize);
                    for _ in 0..N {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let (req, rx) = request(&stream, &owner, i, set_parameter(i));
                        w.submit(req).await;
                        waits.push(rx);
                    }
                    for rx in waits {
                        rx.await.unwrap().unwrap();
                    }
                });
            }
            start.elapsed()
        })
    });
    g.bench_function("one_at_a_time_64", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                rt.block_on(async {
                    for _ in 0..N {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        submit(&w, &stream, &owner, i, set_parameter(i)).await;
                    }
                });
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, writer_commit);
criterion_main!(benches);
