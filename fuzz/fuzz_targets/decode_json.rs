//! Client frame decoding, `copanel.v1.json`: any bytes, no panic, round trips hold.
#![no_main]

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzzing::decode_frame(copanel_protocol::Encoding::Json, data);
});
