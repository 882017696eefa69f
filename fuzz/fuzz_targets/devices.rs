//! Every device through ports, MMIO, DMA descriptors and host events (see src/devices.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasm86_fuzz::devices::run(data));
