//! The crash loop, long: kill -9 the real `copanel` binary at seeded random moments under
//! concurrent writers on many sessions, restart, verify every acknowledged event (see
//! `tests/support/crashloop.rs`, shared with the short CI run in `tests/crash.rs`).
//!
//! ```text
//! cargo build --release --bin copanel
//! cargo run --release --example crashloop -- --rounds 50 --sessions 200 --writers 16
//! ```
//!
//! Prints the seed, one line per round, and a summary; exits nonzero on any violation (a lost
//! or changed acknowledged event, a gap, a command id applied twice, a snapshot that is not the
//! replay of the log). `--seed N` replays the same kill timing.

#[path = "../tests/support/crashloop.rs"]
#[allow(dead_code)]
mod crashloop;
#[path = "../tests/support/mod.rs"]
mod support;

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Kill -9 / restart / verify rounds against the real binary.
#[derive(Parser, Debug)]
struct Args {
    /// Kill/restart rounds.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Sessions written to, shared out among the writers and kept across rounds.
    #[arg(long, default_value_t = 200)]
    sessions: usize,
    /// Concurrent writers (one WebSocket connection each).
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// Commands a writer sends in a round at most (the kill comes before).
    #[arg(long, default_value_t = 600)]
    max_commands: usize,
    /// The server's command rate limit per connection (commands/s); writers pace at 90% of it.
    #[arg(long, default_value_t = 400.0)]
    rate: f64,
    /// Seed of the kill timing (random if not given; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Earlier acked commands re-sent after each restart, besides all of the last round's.
    #[arg(long, default_value_t = 500)]
    resend_sample: usize,
    /// The `copanel` binary (default: `copanel` beside this example's directory, i.e.
    /// `target/<profile>/copanel`).
    #[arg(long)]
    bin: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let bin = match args.bin.clone().or_else(default_bin) {
        Some(b) if b.is_file() => b,
        other => {
            eprintln!(
                "crashloop: the copanel binary was not found ({other:?}); build it first: \
                 cargo build --release --bin copanel (or pass --bin PATH)"
            );
            return ExitCode::from(2);
        }
    };
    if args.writers == 0 || args.sessions < args.writers || args.rate <= 0.0 {
        eprintln!("crashloop: need --writers > 0, --sessions >= --writers, --rate > 0");
        return ExitCode::from(2);
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    println!(
        "crashloop: seed {seed}, {} rounds, {} sessions, {} writers, {} commands/writer/round max, binary {}",
        args.rounds,
        args.sessions,
        args.writers,
        args.max_commands,
        bin.display()
    );
    let cfg = crashloop::LoopConfig {
        bin,
        rounds: args.rounds,
        sessions: args.sessions,
        writers: args.writers,
        max_commands: args.max_commands,
        rate: args.rate,
        seed,
        resend_all: false,
        resend_sample: args.resend_sample,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("crashloop: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A violation panics (in the loop or a writer task); catch it to exit nonzero with the seed.
    let result = runtime
        .block_on(async move { tokio::spawn(async move { crashloop::run(&cfg).await }).await });
    match result {
        Ok(s) => {
            println!(
                "crashloop OK (seed {seed}): {} rounds, {} acknowledged commands verified after every restart, \
                 {} events verified (summed over the post-restart checks), {} events in the store, \
                 {} acked commands re-sent (original ack, nothing appended), \
                 {} unanswered commands resolved by retry ({} already logged, {} appended), {:.1} s",
                s.rounds,
                s.acked,
                s.events_verified,
                s.final_events,
                s.resent,
                s.unknown_in_log + s.unknown_appended,
                s.unknown_in_log,
                s.unknown_appended,
                s.elapsed.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crashloop FAILED (seed {seed}): {e}");
            ExitCode::FAILURE
        }
    }
}

/// `target/<profile>/copanel`, from `target/<profile>/examples/crashloop`.
fn default_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.join("copanel"))
}
