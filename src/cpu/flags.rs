//! EFLAGS with lazy evaluation of the six arithmetic flags.
//!
//! An arithmetic instruction records its result and a "carry vector" (the carry or borrow out of
//! every bit position) instead of computing CF, PF, AF, ZF, SF and OF. A flag is computed only when
//! something reads it. From the carry vector `cv` of an `n`-bit operation:
//! CF = cv[n-1], OF = cv[n-1] ^ cv[n-2], AF = cv[3]; ZF, SF and PF come from the result.
//! Instructions that set flags to explicit values (POPF, SAHF, shifts) build a matching carry
//! vector with [`Flags::set_explicit`] or materialise all flags with [`Flags::set_word`].

use serde::{Deserialize, Serialize};

/// Carry flag.
pub const CF: u32 = 1 << 0;
/// Bit 1 reads as 1 on every x86.
pub const FIXED1: u32 = 1 << 1;
/// Parity flag (even parity of the low result byte).
pub const PF: u32 = 1 << 2;
/// Auxiliary (BCD half-) carry flag.
pub const AF: u32 = 1 << 4;
/// Zero flag.
pub const ZF: u32 = 1 << 6;
/// Sign flag.
pub const SF: u32 = 1 << 7;
/// Trap flag: single-step.
pub const TF: u32 = 1 << 8;
/// Interrupt enable flag.
pub const IF: u32 = 1 << 9;
/// Direction flag for string instructions.
pub const DF: u32 = 1 << 10;
/// Overflow flag.
pub const OF: u32 = 1 << 11;
/// I/O privilege level (two bits).
pub const IOPL: u32 = 3 << 12;
/// Nested task.
pub const NT: u32 = 1 << 14;
/// Resume flag: suppresses instruction breakpoints for one instruction.
pub const RF: u32 = 1 << 16;
/// Virtual-8086 mode.
pub const VM: u32 = 1 << 17;
/// Alignment check.
pub const AC: u32 = 1 << 18;
/// Virtual interrupt flag (VME).
pub const VIF: u32 = 1 << 19;
/// Virtual interrupt pending (VME).
pub const VIP: u32 = 1 << 20;
/// CPUID-available flag: software can toggle it to detect CPUID.
pub const ID: u32 = 1 << 21;

/// The six flags that arithmetic computes lazily.
pub const ARITH: u32 = CF | PF | AF | ZF | SF | OF;
/// Every bit that exists in EFLAGS on this CPU.
pub const ALL_VALID: u32 =
    ARITH | TF | IF | DF | IOPL | NT | RF | VM | AC | VIF | VIP | ID | FIXED1;

/// EFLAGS, with the arithmetic flags always in lazy form.
///
/// The six arithmetic flags are kept as three words from which each flag is one or two bit
/// operations, whatever the width of the operation that set them, so reading a flag never
/// branches: the result and the carry vector are stored shifted left so that the operation's top
/// bit is bit 31. Explicit values (POPF, SAHF) are stored in the same form.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Flags {
    /// Every flag bit except the ARITH ones (which are always 0 here).
    bits: u32,
    /// The result, top bit at bit 31: ZF is `res == 0`.
    res: u32,
    /// The carry vector, top bit at bit 31: CF is bit 31, OF is bit 31 ^ bit 30.
    cv: u32,
    /// Bits 0-7: the result's low byte (PF is its even parity); bit 8: AF; bit 9: SF.
    low: u32,
}

/// Byte offsets of the lazy words inside [`Flags`], for code generated at run time (see
/// `crate::jit`), which reads and writes them the way the methods below do.
pub(crate) const RES_OFFSET: usize = std::mem::offset_of!(Flags, res);
pub(crate) const CV_OFFSET: usize = std::mem::offset_of!(Flags, cv);
pub(crate) const LOW_OFFSET: usize = std::mem::offset_of!(Flags, low);
/// The offset of the word holding the other flags (DF, IF ...).
pub(crate) const BITS_OFFSET: usize = std::mem::offset_of!(Flags, bits);

/// Where AF and SF live in `Flags::low`.
const LOW_AF: u32 = 1 << 8;
const LOW_SF: u32 = 1 << 9;

impl Default for Flags {
    fn default() -> Self {
        let mut f = Flags {
            bits: FIXED1,
            res: 0,
            cv: 0,
            low: 0,
        };
        f.set_word(FIXED1);
        f
    }
}

impl Flags {
    /// Record a flag-setting result with its carry vector (the carry out of every bit).
    #[inline(always)]
    pub fn set_lazy(&mut self, width: u32, res: u32, cv: u32) {
        let shift = 32 - width;
        self.res = res << shift;
        self.cv = cv << shift;
        self.low = (res & 0xFF) | ((cv & 8) << 5) | (((res >> (width - 1)) & 1) << 9);
    }

    /// Record the flags of `a + b (+ carry-in) = r`.
    #[inline(always)]
    pub fn set_add(&mut self, width: u32, a: u32, b: u32, r: u32) {
        let cv = (a & b) | ((a | b) & !r);
        self.set_lazy(width, r, cv);
    }

    /// Record the flags of `a - b (- borrow-in) = r`.
    #[inline(always)]
    pub fn set_sub(&mut self, width: u32, a: u32, b: u32, r: u32) {
        let cv = (!a & b) | (!(a ^ b) & r);
        self.set_lazy(width, r, cv);
    }

    /// Record the flags of a logical operation: CF = OF = 0 (AF is undefined; it reads as 0).
    #[inline(always)]
    pub fn set_logic(&mut self, width: u32, r: u32) {
        self.set_lazy(width, r, 0);
    }

    /// Record a result whose CF, OF and AF are given explicitly (ZF, SF, PF follow the result).
    #[inline(always)]
    pub fn set_explicit(&mut self, width: u32, r: u32, cf: bool, of: bool, af: bool) {
        self.res = r << (32 - width);
        self.cv = ((cf as u32) << 31) | (((cf ^ of) as u32) << 30);
        self.low = (r & 0xFF) | ((af as u32) << 8) | (((r >> (width - 1)) & 1) << 9);
    }

    /// INC/DEC: like ADD/SUB of 1 but CF is preserved.
    #[inline(always)]
    pub fn set_incdec(&mut self, width: u32, a: u32, r: u32, inc: bool) {
        let cv = if inc {
            (a & 1) | ((a | 1) & !r)
        } else {
            (!a & 1) | (!(a ^ 1) & r)
        };
        let shift = 32 - width;
        let cv_top = cv << shift;
        // CF (bit 31) stays; bit 30 must make bit 31 ^ bit 30 the new OF.
        let of = (cv_top ^ (cv_top << 1)) & (1 << 31);
        self.cv = (self.cv & (1 << 31)) | (((self.cv ^ of) >> 1) & (1 << 30));
        self.res = r << shift;
        self.low = (r & 0xFF) | ((cv & 8) << 5) | (((r >> (width - 1)) & 1) << 9);
    }

    #[inline(always)]
    pub fn cf(&self) -> bool {
        self.cv >> 31 != 0
    }

    #[inline(always)]
    pub fn zf(&self) -> bool {
        self.res == 0
    }

    #[inline(always)]
    pub fn sf(&self) -> bool {
        self.low & LOW_SF != 0
    }

    #[inline(always)]
    pub fn of(&self) -> bool {
        (self.cv ^ (self.cv << 1)) >> 31 != 0
    }

    #[inline(always)]
    pub fn af(&self) -> bool {
        self.low & LOW_AF != 0
    }

    #[inline(always)]
    pub fn pf(&self) -> bool {
        (self.low as u8).count_ones() & 1 == 0
    }

    /// Evaluate condition code `cc` (the low nibble of Jcc/SETcc/CMOVcc).
    #[inline(always)]
    pub fn cond(&self, cc: u8) -> bool {
        let r = match cc >> 1 {
            0 => self.of(),
            1 => self.cf(),
            2 => self.zf(),
            3 => self.cf() || self.zf(),
            4 => self.sf(),
            5 => self.pf(),
            6 => self.sf() != self.of(),
            _ => self.zf() || (self.sf() != self.of()),
        };
        r ^ (cc & 1 != 0)
    }

    /// The architectural EFLAGS value.
    pub fn word(&self) -> u32 {
        let mut w = self.bits;
        w |= (self.cf() as u32) * CF;
        w |= (self.pf() as u32) * PF;
        w |= (self.af() as u32) * AF;
        w |= (self.zf() as u32) * ZF;
        w |= (self.sf() as u32) * SF;
        w |= (self.of() as u32) * OF;
        w
    }

    /// Replace every flag (the caller has already applied privilege rules to `w`).
    pub fn set_word(&mut self, w: u32) {
        self.bits = (w & ALL_VALID & !ARITH) | FIXED1;
        let cf = w & CF != 0;
        let of = w & OF != 0;
        self.res = (w & ZF == 0) as u32;
        self.cv = ((cf as u32) << 31) | (((cf ^ of) as u32) << 30);
        // A low byte of 0 has even parity (PF = 1), 1 has odd parity.
        self.low = (w & PF == 0) as u32
            | if w & AF != 0 { LOW_AF } else { 0 }
            | if w & SF != 0 { LOW_SF } else { 0 };
    }

    /// Replace only the bits in `mask`.
    pub fn set_masked(&mut self, w: u32, mask: u32) {
        let cur = self.word();
        self.set_word((cur & !mask) | (w & mask));
    }

    /// Set or clear one flag (any flag, arithmetic or not).
    pub fn set(&mut self, flag: u32, on: bool) {
        if flag & ARITH != 0 {
            let w = self.word();
            self.set_word(if on { w | flag } else { w & !flag });
        } else if on {
            self.bits |= flag;
        } else {
            self.bits &= !flag;
        }
    }

    /// Read a non-arithmetic flag (IF, DF, TF, VM, ...) without evaluating lazy state.
    #[inline(always)]
    pub fn sys(&self, flag: u32) -> bool {
        debug_assert!(flag & ARITH == 0);
        self.bits & flag != 0
    }

    /// The I/O privilege level.
    #[inline(always)]
    pub fn iopl(&self) -> u8 {
        ((self.bits >> 12) & 3) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_sets_carry_overflow_and_aux() {
        let mut f = Flags::default();
        f.set_add(8, 0x7f, 1, 0x80);
        assert!(!f.cf() && f.of() && f.af() && f.sf() && !f.zf());
        f.set_add(8, 0xff, 1, 0x100);
        assert!(f.cf() && !f.of() && f.zf() && f.pf());
    }

    #[test]
    fn sub_borrow_and_conditions() {
        let mut f = Flags::default();
        f.set_sub(16, 1, 2, 1u32.wrapping_sub(2));
        assert!(f.cf() && f.sf() && !f.of());
        assert!(f.cond(0x2)); // JB
        assert!(f.cond(0xC)); // JL
        f.set_sub(32, 0x8000_0000, 1, 0x7fff_ffff);
        assert!(f.of() && !f.cf());
    }

    #[test]
    fn incdec_preserves_carry() {
        let mut f = Flags::default();
        f.set(CF, true);
        f.set_incdec(16, 0x7fff, 0x8000, true);
        assert!(f.cf() && f.of() && f.sf());
        f.set(CF, false);
        f.set_incdec(8, 0, 0xff, false);
        assert!(!f.cf() && f.sf() && f.af());
    }

    #[test]
    fn every_combination_of_arithmetic_flags_survives_set_word() {
        for combo in 0..64u32 {
            let mut w = FIXED1;
            for (i, flag) in [CF, PF, AF, ZF, SF, OF].iter().enumerate() {
                if combo & (1 << i) != 0 {
                    w |= flag;
                }
            }
            let mut f = Flags::default();
            f.set_word(w);
            assert_eq!(f.word(), w, "flags {w:#x}");
            f.set(CF, true);
            assert_eq!(f.word(), w | CF);
        }
    }

    #[test]
    fn incdec_overflow_at_every_width() {
        let mut f = Flags::default();
        f.set(CF, false);
        f.set_incdec(8, 0x7F, 0x80, true);
        assert!(f.of() && !f.cf() && f.sf());
        f.set_incdec(32, 0x8000_0000, 0x7FFF_FFFF, false);
        assert!(f.of() && !f.cf() && !f.sf());
        f.set(CF, true);
        f.set_incdec(16, 5, 6, true);
        assert!(!f.of() && f.cf() && !f.zf());
        f.set_incdec(16, 1, 0, false);
        assert!(!f.of() && f.cf() && f.zf() && f.pf());
    }

    #[test]
    fn word_roundtrip() {
        let mut f = Flags::default();
        f.set_word(0x0ed5);
        assert_eq!(f.word(), 0x0ed7);
        f.set_explicit(8, 0, true, true, false);
        assert_eq!(f.word() & ARITH, CF | OF | ZF | PF);
    }
}
