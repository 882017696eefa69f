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
#[inline(always)]
pub(crate) fn div<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let b = R::read::<W>(cpu, i)? as u64;
    if b == 0 {
        return Err(Exception::de());
    }
    let n = dividend::<W>(cpu);
    let q = n / b;
    if q > W::MASK as u64 {
        return Err(Exception::de());
    }
    store_wide::<W>(cpu, q as u32, (n % b) as u32);
    Ok(())
}

/// IDIV r/m: signed, quotient truncated toward zero, remainder has the dividend's sign.
#[inline(always)]
pub(crate) fn idiv<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let b = W::sext(R::read::<W>(cpu, i)?) as i32 as i64;
    let raw = dividend::<W>(cpu);
    // Sign-extend the 2W-bit dividend to 64 bits.
    let shift = 64 - 2 * W::BITS;
    let n = ((raw << shift) as i64) >> shift;
    let (q, r) = match (n.checked_div(b), n.checked_rem(b)) {
        (Some(q), Some(r)) => (q, r),
        _ => return Err(Exception::de()),
    };
    let max = (W::SIGN - 1) as i64;
    if q > max || q < -max - 1 {
        return Err(Exception::de());
    }
    store_wide::<W>(cpu, q as u32 & W::MASK, r as u32 & W::MASK);
    Ok(())
}
