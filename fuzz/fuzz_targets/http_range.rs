//! HTTP Range answers and streamed images (see src/http_range.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasm86_fuzz::http_range::run(data));
