//! CPU exceptions as values. A handler that faults returns `Err(Exception)`; the run loop rolls
//! the instruction back and delivers it. Nothing a guest does can panic the host.

use std::fmt;
use std::num::NonZeroU64;

/// Divide error.
pub const DE: u8 = 0;
/// Debug.
pub const DB: u8 = 1;
/// Non-maskable interrupt.
pub const NMI: u8 = 2;
/// Breakpoint (INT3).
pub const BP: u8 = 3;
/// Overflow (INTO).
pub const OF: u8 = 4;
/// BOUND range exceeded.
pub const BR: u8 = 5;
/// Invalid opcode.
pub const UD: u8 = 6;
/// Device (FPU) not available.
pub const NM: u8 = 7;
/// Double fault.
pub const DF: u8 = 8;
/// Invalid TSS.
pub const TS: u8 = 10;
/// Segment not present.
pub const NP: u8 = 11;
/// Stack-segment fault.
pub const SS: u8 = 12;
/// General protection.
pub const GP: u8 = 13;
/// Page fault.
pub const PF: u8 = 14;
/// x87 floating-point error.
pub const MF: u8 = 16;
/// Alignment check.
pub const AC: u8 = 17;

/// An exception raised by an instruction (or by interrupt delivery).
///
/// Packed into one non-zero 64-bit word (vector, whether an error code is pushed, the code) so
/// that `Result<(), Exception>`, which every handler returns, is a plain `i64` on wasm32 (0 is
/// `Ok`) and travels in a register. A struct of fields would make every handler return through
/// a pointer to the caller's stack frame on wasm32, with a stack-pointer adjustment around
/// every call (Rust does not use wasm's multi-value returns).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Exception(NonZeroU64);

/// Bits 0-7: the vector. Bit 8: an error code is pushed. Bit 9: always set, so the word is never
/// zero (#DE is vector 0 without a code). Bits 32-63: the error code.
const HAS_CODE: u64 = 1 << 8;
const NONZERO: u64 = 1 << 9;

/// The result type of everything that can fault.
pub type Fault<T = ()> = Result<T, Exception>;

impl Exception {
    /// An exception without an error code.
    #[inline]
    pub const fn new(vector: u8) -> Exception {
        Exception::pack(vector as u64 | NONZERO)
    }

    /// An exception with an error code.
    #[inline]
    pub const fn with_code(vector: u8, code: u32) -> Exception {
        Exception::pack(vector as u64 | HAS_CODE | NONZERO | (code as u64) << 32)
    }

    #[inline(always)]
    const fn pack(word: u64) -> Exception {
        match NonZeroU64::new(word) {
            Some(w) => Exception(w),
            // Unreachable: every packed word has NONZERO set.
            None => Exception(NonZeroU64::MIN),
        }
    }

    /// The exception's vector.
    #[inline]
    pub const fn vector(&self) -> u8 {
        self.0.get() as u8
    }

    /// The error code pushed with the exception, for vectors that have one.
    #[inline]
    pub const fn error_code(&self) -> Option<u32> {
        if self.0.get() & HAS_CODE != 0 {
            Some((self.0.get() >> 32) as u32)
        } else {
            None
        }
    }

    /// #UD
    pub const fn ud() -> Exception {
        Exception::new(UD)
    }

    /// #GP(code)
    pub const fn gp(code: u32) -> Exception {
        Exception::with_code(GP, code)
    }

    /// #SS(code)
    pub const fn ss(code: u32) -> Exception {
        Exception::with_code(SS, code)
    }

    /// #NP(code)
    pub const fn np(code: u32) -> Exception {
        Exception::with_code(NP, code)
    }

    /// #TS(code)
    pub const fn ts(code: u32) -> Exception {
        Exception::with_code(TS, code)
    }

    /// #DE
    pub const fn de() -> Exception {
        Exception::new(DE)
    }

    /// A `Fault<u32>` as one word, for slow paths that are not inlined: on wasm32 a
    /// `Result<u32, Exception>` (two words) returns through memory in the caller's stack frame,
    /// which the caller's fast path then also stores its value through. `Ok(v)` is `v` (the
    /// high half zero); an exception keeps its error code in the low half and its vector and
    /// flags (bits 0-9, [`NONZERO`] among them) in the high half, which is never zero.
    #[inline(always)]
    pub(crate) fn pack_value(r: Fault<u32>) -> u64 {
        match r {
            Ok(v) => u64::from(v),
            Err(e) => (e.0.get() & 0x3FF) << 32 | e.0.get() >> 32,
        }
    }

    /// The `Fault<u32>` that [`Exception::pack_value`] packed.
    #[inline(always)]
    pub(crate) fn unpack_value(w: u64) -> Fault<u32> {
        if w >> 32 == 0 {
            Ok(w as u32)
        } else {
            Err(Exception::pack(w.rotate_left(32)))
        }
    }

    /// Whether this is a "contributory" exception for double-fault classification.
    pub fn is_contributory(&self) -> bool {
        matches!(self.vector(), DE | TS | NP | SS | GP)
    }
}

/// The vectors that push an error code in protected mode.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, DF | TS | NP | SS | GP | PF | AC)
}

impl fmt::Debug for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error_code() {
            Some(code) => write!(f, "Exception({}, code {:#x})", self.vector(), code),
            None => write!(f, "Exception({})", self.vector()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_vector_and_code() {
        let e = Exception::with_code(PF, 0xFFFF_FFFF);
        assert_eq!(e.vector(), PF);
        assert_eq!(e.error_code(), Some(0xFFFF_FFFF));
        let de = Exception::de();
        assert_eq!(de.vector(), DE);
        assert_eq!(de.error_code(), None);
        assert_eq!(Exception::gp(0).error_code(), Some(0));
        assert_ne!(Exception::gp(0), Exception::new(GP));
    }

    #[test]
    fn a_value_or_a_fault_packs_into_one_word() {
        for r in [
            Ok(0),
            Ok(0xFFFF_FFFF),
            Ok(0x8000_0200),
            Err(Exception::de()),
            Err(Exception::ud()),
            Err(Exception::gp(0)),
            Err(Exception::with_code(PF, 0xFFFF_FFFF)),
            Err(Exception::with_code(AC, 0)),
        ] {
            assert_eq!(Exception::unpack_value(Exception::pack_value(r)), r);
        }
    }

    #[test]
    fn a_fault_result_is_one_word() {
        assert_eq!(std::mem::size_of::<Fault>(), 8);
    }
}
