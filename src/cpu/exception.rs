//! CPU exceptions as values. A handler that faults returns `Err(Exception)`; the run loop rolls
//! the instruction back and delivers it. Nothing a guest does can panic the host.

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
/// Kept to 8 bytes so that `Result<(), Exception>`, which every handler returns, travels in a
/// register instead of through memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    pub vector: u8,
    /// Whether the exception pushes `code`.
    has_code: bool,
    code: u32,
}

/// The result type of everything that can fault.
pub type Fault<T = ()> = Result<T, Exception>;

impl Exception {
    /// An exception without an error code.
    #[inline]
    pub const fn new(vector: u8) -> Exception {
        Exception {
            vector,
            has_code: false,
            code: 0,
        }
    }

    /// An exception with an error code.
    #[inline]
    pub const fn with_code(vector: u8, code: u32) -> Exception {
        Exception {
            vector,
            has_code: true,
            code,
        }
    }

    /// The error code pushed with the exception, for vectors that have one.
    #[inline]
    pub const fn error_code(&self) -> Option<u32> {
        if self.has_code {
            Some(self.code)
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

    /// Whether this is a "contributory" exception for double-fault classification.
    pub fn is_contributory(&self) -> bool {
        matches!(self.vector, DE | TS | NP | SS | GP)
    }
}

/// The vectors that push an error code in protected mode.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, DF | TS | NP | SS | GP | PF | AC)
}
