//! Disk, floppy and CD images and ATAPI commands (see src/disk_images.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasm86_fuzz::disk_images::run(data));
