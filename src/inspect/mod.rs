//! The teaching inspector's core: the CPU's registers ([`registers`]), disassembly of guest
//! code ([`disasm`]) and the page-table walk of any linear address ([`walk`]), all read without
//! side effects, so looking never changes what the guest sees. Stepping, breakpoints and the
//! machine's ROMs are in `crate::machine` (its `inspect.rs`), which owns the run loop.

pub mod disasm;
pub mod registers;
pub mod walk;

pub use disasm::{disassemble, disassemble_around, Line, Unreadable};
pub use registers::{format_table, Registers};
pub use walk::{translate, Walk};
