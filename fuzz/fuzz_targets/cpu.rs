//! Random instruction streams from random CPU states in every mode (see src/cpu.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasm86_fuzz::cpu::run(data));
