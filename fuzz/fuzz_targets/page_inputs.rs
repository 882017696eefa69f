//! What the page passes the core: keys, text, boot order, inspector requests (see src/page_inputs.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasm86_fuzz::page_inputs::run(data));
