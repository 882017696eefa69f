//! bzImage setup headers and the Linux loader (see src/bzimage.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasm86_fuzz::bzimage::run(data));
