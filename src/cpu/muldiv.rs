//! Multiplication and division: MUL, IMUL (one, two and three operands), DIV, IDIV.
//! Decoded from arith.rs (F6/F7 /4-/7, 69, 6B, 0F AF).
//!
//! The double-width accumulator is AX (bytes), DX:AX (words) or EDX:EAX (dwords). Products and
//! quotients are computed in 64 bits, which holds every case without overflow.

use super::decode::{Decoder, Handler, Instr};
use super::exception::{Exception, Fault};
use super::operand::{Rm, Width, W16};
use super::{Cpu, EAX, EDX};

/// F6 /4-/7 (byte forms), ModR/M already read.
pub fn select_b(d: &Decoder, reg: u8) -> Handler {
    match reg {
        4 => crate::rm_b!(d, mul),
        5 => crate::rm_b!(d, imul),
        6 => crate::rm_b!(d, div),
        _ => crate::rm_b!(d, idiv),
    }
}

/// F7 /4-/7, ModR/M already read.
pub fn select_v(d: &Decoder, reg: u8) -> Handler {
    match reg {
        4 => crate::rm_v!(d, mul),
        5 => crate::rm_v!(d, imul),
        6 => crate::rm_v!(d, div),
        _ => crate::rm_v!(d, idiv),
    }
}

/// Store a double-width result: AX for bytes, else (E)DX:(E)AX.
#[inline(always)]
fn store_wide<W: Width>(cpu: &mut Cpu, lo: u32, hi: u32) {
    if W::BITS == 8 {
        W16::set_reg(cpu, EAX as u8, (hi << 8) | lo);
    } else {
        W::set_reg(cpu, EAX as u8, lo);
        W::set_reg(cpu, EDX as u8, hi);
    }
}

/// The double-width dividend: AX for bytes, else (E)DX:(E)AX.
#[inline(always)]
fn dividend<W: Width>(cpu: &Cpu) -> u64 {
    if W::BITS == 8 {
        (cpu.regs[EAX] & 0xFFFF) as u64
    } else {
        ((W::reg(cpu, EDX as u8) as u64) << W::BITS) | W::reg(cpu, EAX as u8) as u64
    }
}

/// Record the flags of a multiplication: CF = OF = `overflow` (the high half is significant);
/// SF, ZF, PF follow the low half (they are undefined), AF is cleared (undefined).
#[inline(always)]
fn mul_flags<W: Width>(cpu: &mut Cpu, lo: u32, overflow: bool) {
    cpu.flags
        .set_explicit(W::BITS, lo, overflow, overflow, false);
}

/// MUL r/m: unsigned accumulator * r/m.
#[inline(always)]
pub(crate) fn mul<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let b = R::read::<W>(cpu, i)? as u64;
    let p = W::reg(cpu, EAX as u8) as u64 * b;
    let lo = p as u32 & W::MASK;
    let hi = (p >> W::BITS) as u32 & W::MASK;
    store_wide::<W>(cpu, lo, hi);
    mul_flags::<W>(cpu, lo, hi != 0);
    Ok(())
}

/// Signed product at width W; returns (low, high, overflow).
#[inline(always)]
fn imul_wide<W: Width>(a: u32, b: u32) -> (u32, u32, bool) {
    let p = (W::sext(a) as i32 as i64) * (W::sext(b) as i32 as i64);
    let lo = p as u32 & W::MASK;
    let hi = (p >> W::BITS) as u32 & W::MASK;
    (lo, hi, p != W::sext(lo) as i32 as i64)
}

/// IMUL r/m: signed accumulator * r/m.
#[inline(always)]
pub(crate) fn imul<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let b = R::read::<W>(cpu, i)?;
    let (lo, hi, ov) = imul_wide::<W>(W::reg(cpu, EAX as u8), b);
    store_wide::<W>(cpu, lo, hi);
    mul_flags::<W>(cpu, lo, ov);
    Ok(())
}

/// IMUL reg, r/m, imm (69, 6B).
pub fn imul_r_rm_i<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let a = R::read::<W>(cpu, i)?;
    let (lo, _, ov) = imul_wide::<W>(a, i.imm);
    W::set_reg(cpu, i.reg, lo);
    mul_flags::<W>(cpu, lo, ov);
    Ok(())
}

/// IMUL reg, r/m (0F AF).
#[inline(always)]
pub fn imul_r_rm<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let b = R::read::<W>(cpu, i)?;
    let (lo, _, ov) = imul_wide::<W>(W::reg(cpu, i.reg), b);
    W::set_reg(cpu, i.reg, lo);
    mul_flags::<W>(cpu, lo, ov);
    Ok(())
}

/// DIV r/m: unsigned; #DE (a fault) on a zero divisor or a quotient wider than W. Flags are
/// undefined and left unchanged.
///
/// A dividend that fits 32 bits (always for bytes and words; for doublewords when EDX is 0, as
/// compiled code leaves it) is divided with one 32-bit division: a 64-bit one costs twice as
/// much on x86-64, and in wasm a remainder is a second division, so the remainder is computed
/// from the quotient.
#[inline(always)]
pub(crate) fn div<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let b = R::read::<W>(cpu, i)?;
    if b == 0 {
        return Err(Exception::de());
    }
    let n = dividend::<W>(cpu);
    // The remainder is below the divisor, so it fits 32 bits either way.
    let (q, r) = match u32::try_from(n) {
        Ok(n) => {
            let q = n / b;
            (u64::from(q), n - q * b)
        }
        Err(_) => {
            let q = n / u64::from(b);
            (q, (n - q * u64::from(b)) as u32)
        }
    };
    if q > u64::from(W::MASK) {
        return Err(Exception::de());
    }
    store_wide::<W>(cpu, q as u32, r);
    Ok(())
}

/// IDIV r/m: signed, quotient truncated toward zero, remainder has the dividend's sign. As for
/// DIV, a dividend that fits 32 bits (the high half only repeats the sign: after CDQ) takes
/// one 32-bit division.
#[inline(always)]
pub(crate) fn idiv<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let b = W::sext(R::read::<W>(cpu, i)?) as i32;
    if b == 0 {
        return Err(Exception::de());
    }
    let raw = dividend::<W>(cpu);
    // Sign-extend the 2W-bit dividend to 64 bits.
    let shift = 64 - 2 * W::BITS;
    let n = ((raw << shift) as i64) >> shift;
    let (q, r) = if let (Ok(n), Ok(d)) = (u32::try_from(n), u32::try_from(b)) {
        // Both non-negative (C's `n / d` and `n % d` on non-negative ints, the usual case): an
        // unsigned division, which cannot overflow. In WebAssembly a signed division carries
        // a trap check for i32::MIN / -1 of its own, which V8 emits on top of Rust's check
        // below (make bench-ab: isprime 1.017x in Chromium; natively 0.99x, within the noise).
        // Both builds take this path, so the hardware-recorded tests check the browser's.
        (i64::from(n / d), i64::from(n % d))
    } else if let Ok(n32) = i32::try_from(n) {
        // i32::MIN / -1 is the one quotient that does not fit: #DE at every width.
        let Some(q) = n32.checked_div(b) else {
            return Err(Exception::de());
        };
        (i64::from(q), i64::from(n32.wrapping_sub(q.wrapping_mul(b))))
    } else {
        let Some(q) = n.checked_div(i64::from(b)) else {
            return Err(Exception::de());
        };
        (q, n - q * i64::from(b))
    };
    let max = (W::SIGN - 1) as i64;
    if q > max || q < -max - 1 {
        return Err(Exception::de());
    }
    store_wide::<W>(cpu, q as u32 & W::MASK, r as u32 & W::MASK);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::cpu::{Cpu, RunExit, SegCache, Segment, EAX, EBX, EDX, ESI, ESP};

    /// Run `op ebx` (o32, in 16-bit real-mode code) on EDX:EAX; the quotient and remainder, or
    /// None for #DE (its handler marks ESI).
    fn divide(op: u8, edx: u32, eax: u32, ebx: u32) -> Option<(u32, u32)> {
        let mut cpu = Cpu::with_ram(1 << 20);
        cpu.mem.load(0x1000, &[0x66, 0xF7, op, 0xF4]);
        // #DE's handler at 0000:2000: mov esi, 0xDE ; hlt.
        cpu.mem.load(0, &[0x00, 0x20, 0x00, 0x00]);
        cpu.mem.load(0x2000, &[0x66, 0xBE, 0xDE, 0, 0, 0, 0xF4]);
        cpu.segs[Segment::CS as usize] = SegCache::real(0);
        cpu.eip = 0x1000;
        cpu.regs[ESP] = 0x8000;
        (cpu.regs[EDX], cpu.regs[EAX], cpu.regs[EBX]) = (edx, eax, ebx);
        assert_eq!(cpu.run(100), RunExit::Halted);
        if cpu.regs[ESI] == 0xDE {
            assert_eq!(
                (cpu.regs[EDX], cpu.regs[EAX]),
                (edx, eax),
                "#DE changed EDX:EAX"
            );
            return None;
        }
        Some((cpu.regs[EAX], cpu.regs[EDX]))
    }

    #[test]
    fn div32_by_32_and_by_64_bit_dividends() {
        const DIV: u8 = 0xF3; // F7 /6, ebx
        assert_eq!(divide(DIV, 0, 100, 7), Some((14, 2)));
        assert_eq!(divide(DIV, 1, 0, 2), Some((0x8000_0000, 0)));
        assert_eq!(
            divide(DIV, 0xFFFF_FFFE, 0xFFFF_FFFF, 0xFFFF_FFFF),
            Some((0xFFFF_FFFF, 0xFFFF_FFFE))
        );
        assert_eq!(divide(DIV, 5, 0, 5), None, "a quotient of 2^32");
        assert_eq!(divide(DIV, 0, 5, 0), None, "a zero divisor");
    }

    #[test]
    fn idiv32_by_32_and_by_64_bit_dividends() {
        const IDIV: u8 = 0xFB; // F7 /7, ebx
        let neg = |v: i32| v as u32;
        assert_eq!(divide(IDIV, !0, neg(-100), 7), Some((neg(-14), neg(-2))));
        assert_eq!(divide(IDIV, 0, 100, neg(-7)), Some((neg(-14), 2)));
        assert_eq!(divide(IDIV, !0, 0, 2), Some((0x8000_0000, 0)), "-2^32 / 2");
        assert_eq!(divide(IDIV, 0, 0x8000_0000, 1), None, "2^31 does not fit");
        assert_eq!(divide(IDIV, !0, 0x8000_0000, neg(-1)), None, "-2^31 / -1");
        assert_eq!(divide(IDIV, 0x8000_0000, 0, neg(-1)), None, "-2^63 / -1");
        assert_eq!(divide(IDIV, 0, 7, 0), None, "a zero divisor");
        // Both operands non-negative (an unsigned division), up to where the quotient no
        // longer fits.
        assert_eq!(divide(IDIV, 0, 0x7FFF_FFFF, 1), Some((0x7FFF_FFFF, 0)));
        assert_eq!(divide(IDIV, 0, 0xFFFF_FFFF, 2), Some((0x7FFF_FFFF, 1)));
        assert_eq!(
            divide(IDIV, 0, 0xFFFF_FFFF, 1),
            None,
            "2^32 - 1 does not fit"
        );
        assert_eq!(divide(IDIV, 0, 5, 0x7FFF_FFFF), Some((0, 5)));
        assert_eq!(divide(IDIV, 0, 0, 3), Some((0, 0)));
    }
}
