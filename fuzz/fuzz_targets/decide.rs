//! Command validation: scripts of command frames decided and applied on an in-memory world.
#![no_main]

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::decide_script(data);
});
