//! State files (see src/snapshot.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasm86_fuzz::snapshot::run(data));
