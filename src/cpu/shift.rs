//! Shifts and rotates (C0, C1, D0-D3: ROL ROR RCL RCR SHL SHR SAL SAR) and the double shifts
//! SHLD/SHRD (0F A4/A5/AC/AD). Decoded from arith.rs.
//!
//! The count is masked to 5 bits; a masked count of 0 changes nothing, flags included. RCL/RCR
//! rotate through CF, i.e. over W+1 bits, so 8- and 16-bit counts are taken mod 9 and 17.
//! Rotates change only CF and OF; shifts set SF ZF PF from the result, CF from the last bit
//! shifted out, OF as defined for a count of 1 (and the same formula otherwise), AF cleared.

use super::arith::{b_k, for_op, v_k};
use super::decode::{undefined, Decoder, Handler, Instr};
use super::exception::Fault;
use super::flags::{CF, OF};
use super::operand::{MemRm, RegRm, Rm, Width, W16, W32, W8};
use super::{Cpu, ECX};

/// The shift counts are masked to this.
const COUNT_MASK: u32 = 0x1F;

pub const ROL: u8 = 0;
pub const ROR: u8 = 1;
pub const RCL: u8 = 2;
pub const RCR: u8 = 3;
pub const SHL: u8 = 4;
pub const SHR: u8 = 5;
/// SAL: /6, an alias of SHL.
pub const SAL: u8 = 6;
pub const SAR: u8 = 7;

/// Instantiate `f::<R, W, K, CL>` for the byte (`b`) or word/dword (`v`) forms.
macro_rules! sh_b {
    ($d:expr, $cl:expr, $k:expr) => {
        if $cl {
            b_k!($d, shift_cl, $k)
        } else {
            b_k!($d, shift_imm, $k)
        }
    };
}
macro_rules! sh_v {
    ($d:expr, $cl:expr, $k:expr) => {
        if $cl {
            v_k!($d, shift_cl, $k)
        } else {
            v_k!($d, shift_imm, $k)
        }
    };
}

/// Decode C0, C1, D0-D3 and SHLD/SHRD.
pub fn decode(d: &mut Decoder, op: u16) -> Fault<Handler> {
    d.modrm()?;
    let k = d.i.reg;
    Ok(match op {
        0xC0 | 0xC1 | 0xD0..=0xD3 => {
            match op {
                0xC0 | 0xC1 => d.imm8()?,
                0xD0 | 0xD1 => d.i.imm = 1,
                _ => {}
            }
            let cl = op >= 0xD2;
            if op & 1 == 0 {
                for_op!(k, sh_b!(d, cl))
            } else {
                for_op!(k, sh_v!(d, cl))
            }
        }
        0x0FA4 => {
            d.imm8()?;
            v_k!(d, double_shift, DS_LEFT)
        }
        0x0FA5 => v_k!(d, double_shift, DS_LEFT | DS_CL),
        0x0FAC => {
            d.imm8()?;
            v_k!(d, double_shift, 0)
        }
        0x0FAD => v_k!(d, double_shift, DS_CL),
        _ => undefined(),
    })
}

/// Shift/rotate by CL.
fn shift_cl<R: Rm, W: Width, const OP: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let count = cpu.regs[ECX] & COUNT_MASK;
    shift::<R, W, OP>(cpu, i, count)
}

/// Shift/rotate by an immediate (or by 1 for D0/D1).
fn shift_imm<R: Rm, W: Width, const OP: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    shift::<R, W, OP>(cpu, i, i.imm & COUNT_MASK)
}

#[inline(always)]
fn shift<R: Rm, W: Width, const OP: u8>(cpu: &mut Cpu, i: &Instr, count: u32) -> Fault {
    if count == 0 {
        // The operand is still read (and may fault); nothing changes.
        R::read::<W>(cpu, i)?;
        return Ok(());
    }
    R::rmw::<W>(cpu, i, |cpu, a| shift_op::<W, OP>(cpu, a, count))
}

/// Set CF and OF only (rotates leave the other flags alone).
#[inline]
fn set_cf_of(cpu: &mut Cpu, cf: bool, of: bool) {
    let w = cpu.flags.word() & !(CF | OF);
    cpu.flags
        .set_word(w | if cf { CF } else { 0 } | if of { OF } else { 0 });
}

#[inline(always)]
fn bit(v: u32, n: u32) -> bool {
    (v >> n) & 1 != 0
}

/// Shift or rotate `a` by `c` (1..=31) at width W; records the flags, returns the result.
#[inline(always)]
fn shift_op<W: Width, const OP: u8>(cpu: &mut Cpu, a: u32, c: u32) -> u32 {
    let bits = W::BITS;
    let top = bits - 1;
    match OP {
        ROL => {
            let k = c % bits;
            let r = if k == 0 {
                a
            } else {
                ((a << k) | (a >> (bits - k))) & W::MASK
            };
            let cf = bit(r, 0);
            set_cf_of(cpu, cf, bit(r, top) ^ cf);
            r
        }
        ROR => {
            let k = c % bits;
            let r = if k == 0 {
                a
            } else {
                ((a >> k) | (a << (bits - k))) & W::MASK
            };
            set_cf_of(cpu, bit(r, top), bit(r, top) ^ bit(r, top - 1));
            r
        }
        RCL | RCR => {
            let k = if bits == 32 { c } else { c % (bits + 1) };
            if k == 0 {
                return a;
            }
            // Rotate the (W+1)-bit value CF:a.
            let n = bits + 1;
            let v = ((cpu.flags.cf() as u64) << bits) | a as u64;
            let all = (1u64 << n) - 1;
            let rot = if OP == RCL {
                ((v << k) | (v >> (n - k))) & all
            } else {
                ((v >> k) | (v << (n - k))) & all
            };
            let r = rot as u32 & W::MASK;
            let cf = (rot >> bits) & 1 != 0;
            let of = if OP == RCL {
                bit(r, top) ^ cf
            } else {
                bit(r, top) ^ bit(r, top - 1)
            };
            set_cf_of(cpu, cf, of);
            r
        }
        SHL | SAL => {
            let r = ((a as u64) << c) as u32 & W::MASK;
            let cf = c <= bits && bit(a, bits - c);
            cpu.flags.set_explicit(bits, r, cf, bit(r, top) ^ cf, false);
            r
        }
        SHR => {
            let r = a >> c;
            let cf = bit(a, c - 1);
            cpu.flags.set_explicit(bits, r, cf, bit(a, top), false);
            r
        }
        _ => {
            // SAR
            let s = W::sext(a) as i32;
            let r = (s >> c) as u32 & W::MASK;
            let cf = (s >> (c - 1)) & 1 != 0;
            cpu.flags.set_explicit(bits, r, cf, false, false);
            r
        }
    }
}

/// SHLD rather than SHRD.
const DS_LEFT: u8 = 1;
/// The count is CL rather than an immediate.
const DS_CL: u8 = 2;

/// SHLD/SHRD r/m, reg, imm8/CL: shift r/m, filling from reg.
fn double_shift<R: Rm, W: Width, const K: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let c = if K & DS_CL != 0 { cpu.regs[ECX] } else { i.imm } & COUNT_MASK;
    if c == 0 {
        R::read::<W>(cpu, i)?;
        return Ok(());
    }
    let src = W::reg(cpu, i.reg);
    R::rmw::<W>(cpu, i, |cpu, dst| {
        let (r, cf, of) = if W::BITS == 16 {
            // A 16-bit count above 16 is undefined; P6-family CPUs shift the 48-bit
            // dst:src:dst (left) or dst:src:dst (right), which is what this computes.
            let v = ((dst as u64) << 32) | ((src as u64) << 16) | dst as u64;
            if K & DS_LEFT != 0 {
                let r = ((v << c) >> 32) as u32 & 0xFFFF;
                let cf = (v >> (48 - c)) & 1 != 0;
                (r, cf, cf ^ bit(r, 15))
            } else {
                let r = (v >> c) as u32 & 0xFFFF;
                let cf = (v >> (c - 1)) & 1 != 0;
                (r, cf, bit(r, 15) ^ bit(r, 14))
            }
        } else if K & DS_LEFT != 0 {
            let r = (dst << c) | (src >> (32 - c));
            let cf = bit(dst, 32 - c);
            (r, cf, cf ^ bit(r, 31))
        } else {
            let r = (dst >> c) | (src << (32 - c));
            let cf = bit(dst, c - 1);
            (r, cf, bit(r, 31) ^ bit(r, 30))
        };
        cpu.flags.set_explicit(W::BITS, r, cf, of, false);
        r
    })
}
