//! Micro-benchmarks of the hot paths: event encoding, client frame decoding, decide/apply, and
//! durable appends with group commit against a flush-per-append loop (same store, same run).
//!
//! `cargo bench --bench core`

use copanel::domain::{self, Ctx, Limits, Principal};
use copanel::store::{AppendBatch, SledStore, Store};
use copanel_protocol::{
    Actor, Command, Encoding, Envelope, Event, Owner, Role, SessionState, StreamName, StreamState,
};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The allocator the `copanel` binary uses (`src/main.rs`), so the figures are the server's:
/// under glibc's malloc the writer bench's batched rate was about a fifth lower (BENCHMARKS.md,
/// sixth pass).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn envelope(seq: u64) -> Envelope {
    Envelope {
        stream: StreamName::parse("session/bench-1").unwrap(),
        seq,
        at: 1_700_000_000_000 + seq,
        actor: Actor {
            id: "op1".into(),
            role: Role::Operator,
        },
        command_id: Some(format!("cmd-{seq}")),
        event: Event::NoteAdded {
            note_id: format!("n{seq}"),
            text: "Client asked for a call back after 3 pm about the invoice.".into(),
        },
    }
}

fn encode(c: &mut Criterion) {
    let env = envelope(42);
    let mut g = c.benchmark_group("encode_event");
    g.throughput(Throughput::Elements(1));
    for enc in [Encoding::Msgpack, Encoding::Json] {
        g.bench_function(format!("{enc:?}"), |b| {
            b.iter(|| enc.encode_event(black_box(&env)))
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let frame = serde_json::json!({"type": "command", "id": 9, "stream": "session/bench-1",
        "command_id": "c-9", "expected_seq": 41,
        "command": {"kind": "add_note", "text": "Client asked for a call back after 3 pm."}});
    let json = serde_json::to_vec(&frame).unwrap();
    let packed = rmp_serde::to_vec_named(&frame).unwrap();
    let mut g = c.benchmark_group("decode_client_frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("Json", |b| {
        b.iter(|| Encoding::Json.decode_client(black_box(&json)).unwrap())
    });
    g.bench_function("Msgpack", |b| {
        b.iter(|| Encoding::Msgpack.decode_client(black_box(&packed)).unwrap())
    });
    g.finish();
}

fn decide_apply(c: &mut Criterion) {
    let stream = StreamName::parse("session/bench-1").unwrap();
    let owner = Principal {
        id: "op1".into(),
        role: Role::Operator,
        groups: vec![],
    };
    let service = Principal {
        id: "platform".into(),
        role: Role::Service,
        groups: vec![],
    };
    let limits = Limits::default();
    let open = Envelope {
        stream: stream.clone(),
        seq: 1,
        at: 1,
        actor: service.actor(),
        command_id: None,
        event: Event::SessionOpened {
            channel: "chat".into(),
            name: "Jana".into(),
            phone: String::new(),
            email: String::new(),
            parameters: Default::default(),
            owner: Owner::Operator {
                operator_id: "op1".into(),
            },
        },
    };
    let mut state = StreamState::Session(SessionState::default());
    domain::apply(&mut state, &open);
    let cmd = Command::SetParameter {
        key: "order".into(),
        value: "A-1234".into(),
        read_only: None,
    };
    c.bench_function("decide_apply/set_parameter", |b| {
        b.iter_batched(
            || state.clone(),
            |mut st| {
                let ctx = Ctx {
                    principal: &owner,
                    stream: &stream,
                    now: 2,
                    next_seq: 2,
                    limits: &limits,
                    world: &copanel::domain::EmptyWorld,
                    fresh_id: "fresh",
                };
                let d = domain::decide(&st, &ctx, &cmd).unwrap();
                for (i, event) in d.events.into_iter().enumerate() {
                    let env = Envelope {
                        stream: stream.clone(),
                        seq: 2 + i as u64,
                        at: 2,
                        actor: owner.actor(),
                        command_id: None,
                        event,
                    };
                    domain::apply(&mut st, &env);
                }
                st
            },
            BatchSize::SmallInput,
        )
    });
}

/// Durable appends: `BATCH` events in one atomic write and one flush, against `BATCH` separate
/// write+flush pairs. Both on the same sled store, in the same run.
fn durable_append(c: &mut Criterion) {
    const BATCH: u64 = 64;
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let company: Arc<str> = Arc::from("bench");
    let mut next = 1u64;
    let mut g = c.benchmark_group("durable_append");
    g.throughput(Throughput::Elements(BATCH));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("group_commit_64", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let mut batch = AppendBatch::default();
                for _ in 0..BATCH {
                    batch
                        .events
                        .push((company.clone(), Arc::new(envelope(next))));
                    next += 1;
                }
                store.append(&batch).unwrap();
                rt.block_on(store.flush()).unwrap();
            }
            start.elapsed()
        })
    });
    g.bench_function("flush_per_append_64", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                for _ in 0..BATCH {
                    let mut batch = AppendBatch::default();
                    batch
                        .events
                        .push((company.clone(), Arc::new(envelope(next))));
                    next += 1;
                    store.append(&batch).unwrap();
                    rt.block_on(store.flush()).unwrap();
                }
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, encode, decode, decide_apply, durable_append);
criterion_main!(benches);
