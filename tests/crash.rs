//! Crash safety of the real binary (PRODUCT.md §2, guarantees 1, 3, 4 and 7): a short run of
//! the crash-loop harness ([`crashloop`], shared with `examples/crashloop.rs`, which runs it
//! longer). Three kill -9/restart rounds, 8 writers on 32 sessions; every acked command of every
//! round is re-sent after each restart.

#[path = "support/crashloop.rs"]
#[allow(dead_code)]
mod crashloop;
mod support;

use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_acknowledged_event() {
    let seed = rand::random::<u64>();
    println!("crash test seed {seed}");
    let cfg = crashloop::LoopConfig {
        bin: PathBuf::from(env!("CARGO_BIN_EXE_copanel")),
        rounds: 3,
        sessions: 32,
        writers: 8,
        max_commands: 400,
        rate: 400.0,
        seed,
        resend_all: true,
        resend_sample: 0,
    };
    let s = crashloop::run(&cfg).await;
    assert_eq!(s.rounds, 3);
    assert!(s.acked > 0 && s.events_verified > 0);
    println!(
        "crash test (seed {seed}): {} kill -9 rounds, {} acknowledged commands verified, {} events verified (summed over the post-restart checks), {} in the store, {} acked commands re-sent, {:.1} s",
        s.rounds,
        s.acked,
        s.events_verified,
        s.final_events,
        s.resent,
        s.elapsed.as_secs_f64()
    );
}
