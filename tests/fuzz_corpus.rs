//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same checks the fuzz
//! targets run (`tests/fuzzing/mod.rs`), so CI re-runs every interesting and every once-crashing
//! input with stable `cargo test`, no fuzzer needed.

mod fuzzing;

use copanel_protocol::Encoding;
use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("corpus file");
            (p, bytes)
        })
        .collect()
}

fn replay(target: &str, run: impl Fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&bytes)));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
    }
}

#[test]
fn decode_json_corpus() {
    replay("decode_json", |b| fuzzing::decode_frame(Encoding::Json, b));
}

#[test]
fn decode_msgpack_corpus() {
    replay("decode_msgpack", |b| {
        fuzzing::decode_frame(Encoding::Msgpack, b)
    });
}

#[test]
fn decide_corpus() {
    replay("decide", |b| {
        fuzzing::decide_script(b);
    });
    // The hand-written seed scripts must get past validation, or the fuzzer would only ever
    // explore refusals.
    for seed in ["seed-session", "seed-contacts", "seed-catalog"] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus/decide")
            .join(seed);
        let bytes = std::fs::read(&path).expect("seed script");
        let accepted = fuzzing::decide_script(&bytes);
        assert!(accepted >= 5, "{seed}: only {accepted} events accepted");
    }
}
