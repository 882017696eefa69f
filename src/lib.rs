//! wasm86: an x86 PC emulator whose core builds natively and for WebAssembly.
//!
//! The core (`cpu`, `mem`, `bus`) has no OS or browser dependency: time, disks, input and the
//! screen come in and go out through plain method calls and small traits that each host
//! (the browser glue, the native CLI, the tests) implements.

pub mod block;
pub mod boot;
pub mod bus;
pub mod cpu;
pub mod dev;
pub mod input;
pub mod inspect;
pub mod jit;
pub mod keymap;
pub mod machine;
pub mod mem;
pub mod state;
#[cfg(target_arch = "wasm32")]
pub mod web;
