//! Replay logs (see src/replay.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasm86_fuzz::replay::run(data));
