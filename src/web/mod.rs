//! The browser's view of the emulator: the `wasm-bindgen` API the page uses (a `Machine`, the
//! `Disk`s it attaches, and `scancodes` for tests). It is a thin host over the core: the
//! machine, keyboard mapping ([`crate::keymap`]) and input pacing ([`crate::input`]) are plain
//! Rust with native tests; this module adds what only a browser has: `fetch` for streamed disks
//! and JavaScript types.
//!
//! Errors reach JavaScript as `Error` objects with plain messages. Numbers that may exceed 2^32
//! (instruction and byte counts) are `f64`, which JavaScript reads as ordinary numbers (exact up
//! to 2^53); a `u64` would be a BigInt.

mod disk;
mod http;
mod inspect;
mod jit;
mod machine;

pub use disk::Disk;
pub use machine::Machine;

/// The PS/2 scan code set 2 make bytes of the key `code` (a `KeyboardEvent.code`); empty if a PC
/// keyboard has no such key.
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn scancodes(code: &str) -> Vec<u8> {
    crate::keymap::scancode(code).unwrap_or_default().to_vec()
}

/// The compiling tier's default threshold: a block is compiled once it has started this many
/// times.
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn jit_default_threshold() -> u32 {
    crate::jit::DEFAULT_THRESHOLD
}

/// The browser's engine for the compiling tier (for `Cpu::set_jit`; the page turns the tier on
/// through `Machine::set_jit`). Fails if the module's function table cannot be reached.
pub fn jit_engine() -> Result<Box<dyn crate::jit::Engine>, String> {
    Ok(Box::new(jit::BrowserEngine::new()?))
}
