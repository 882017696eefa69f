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
#[inline(always)]
pub(crate) fn shift_cl<R: Rm, W: Width, const OP: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let count = cpu.regs[ECX] & COUNT_MASK;
    shift::<R, W, OP>(cpu, i, count)
}

/// Shift/rotate by an immediate (or by 1 for D0/D1).
#[inline(always)]
pub(crate) fn shift_imm<R: Rm, W: Width, const OP: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    shift::<R, W, OP>(cpu, i, i.imm & COUNT_MASK)
}

#[inline(always)]
fn shift<R: Rm, W: Width, const OP: u8>(cpu: &mut Cpu, i: &Instr, count: u32) -> Fault {
    if count == 0 {
        // Nothing changes, but the operand is still accessed for read-modify-write: on a
        // page the code may read but not write, or one not present, it is a write fault
        // (W in the #PF error code), as on hardware.
        return R::rmw::<W>(cpu, i, |_, a| a);
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
        // Nothing changes, but the operand is accessed for read-modify-write (see `shift`).
        return R::rmw::<W>(cpu, i, |_, a| a);
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

#[cfg(test)]
mod tests {
    use crate::cpu::arith::tests::exec;
    use crate::cpu::flags::{AF, ARITH, CF, OF};
    use crate::cpu::{EAX, EBX, ECX};

    /// (op, width, dest, src, CL, flags in, result, flags out).
    type Vector = (&'static str, u32, u32, u32, u32, u32, u32, u32);

    /// Recorded on an x86-64 host
    /// (AMD EPYC) with inline assembly. Only the flags the SDM defines are compared.
    #[rustfmt::skip]
    const VECTORS: &[Vector] = &[
        ("rcl", 16, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x3361391e, 0x2c6),
        ("rcl", 16, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0xb0510b0b, 0x202),
        ("rcl", 16, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0x4c5a17d7, 0x256),
        ("rcl", 32, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x66c2391e, 0x2c6),
        ("rcl", 32, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0xa2160bb0, 0xa02),
        ("rcl", 32, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0x2fae4c5a, 0x256),
        ("rcl", 8, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x33611c1e, 0xac7),
        ("rcl", 8, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0xb0510b05, 0xa03),
        ("rcl", 8, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0x4c5a176b, 0xa57),
        ("rcr", 16, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x33610e47, 0x2c7),
        ("rcr", 16, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0xb0510585, 0x203),
        ("rcr", 16, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0x4c5a17d7, 0x256),
        ("rcr", 32, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x19b08e47, 0x2c7),
        ("rcr", 32, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0x5d82885, 0x203),
        ("rcr", 32, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0x17d7262d, 0x256),
        ("rcr", 8, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x33611c47, 0xac7),
        ("rcr", 8, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0xb0510b05, 0x203),
        ("rcr", 8, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0x4c5a17ae, 0xa57),
        ("rol", 16, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x3361391e, 0x2c6),
        ("rol", 16, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0xb0510a16, 0x202),
        ("rol", 16, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0x4c5a2fae, 0x256),
        ("rol", 32, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x66c2391e, 0x2c6),
        ("rol", 32, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0xa2160b60, 0xa02),
        ("rol", 32, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0x2fae98b4, 0x256),
        ("rol", 8, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x33611c1f, 0xac7),
        ("rol", 8, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0xb0510b0a, 0x202),
        ("rol", 8, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0x4c5a17af, 0x257),
        ("ror", 16, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x33618e47, 0xac7),
        ("ror", 16, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0xb0518285, 0xa03),
        ("ror", 16, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0x4c5a8beb, 0xa57),
        ("ror", 32, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x99b08e47, 0xac7),
        ("ror", 32, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0x82d82885, 0xa03),
        ("ror", 32, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0xbeba62d, 0x256),
        ("sar", 16, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x33610e47, 0x217),
        ("sar", 16, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0xb0510005, 0x217),
        ("sar", 16, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0x4c5a0000, 0x256),
        ("sar", 32, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x19b08e47, 0x217),
        ("sar", 32, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0xffd82885, 0x293),
        ("sar", 32, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0x262d, 0x216),
        ("shl", 16, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x3361391e, 0x216),
        ("shl", 16, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0xb0510a00, 0x216),
        ("shl", 16, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0x4c5a0000, 0x256),
        ("shl", 32, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x66c2391e, 0x216),
        ("shl", 32, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0xa2160a00, 0xa96),
        ("shl", 32, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0x2fae0000, 0x216),
        ("shld", 16, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x3361391e, 0x216),
        ("shld", 16, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0xb0510b90, 0x216),
        ("shld", 32, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x66c2391f, 0x212),
        ("shld", 32, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0xa2160a39, 0xa96),
        ("shld", 32, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0x2fafc59b, 0x212),
        ("shr", 32, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x19b08e47, 0x217),
        ("shr", 32, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0x582885, 0x213),
        ("shr", 32, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0x262d, 0x216),
        ("shr", 8, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x33611c47, 0xa17),
        ("shr", 8, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0xb0510b00, 0x256),
        ("shr", 8, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0x4c5a1700, 0x256),
        ("shrd", 16, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x33610e47, 0x217),
        ("shrd", 16, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0xb0512985, 0x213),
        ("shrd", 32, 0x33611c8f, 0xfe3d1d76, 1, 0x8c6, 0x19b08e47, 0x217),
        ("shrd", 32, 0xb0510b05, 0x1cb5c853, 9, 0x3, 0x29d82885, 0x213),
        ("shrd", 32, 0x4c5a17d7, 0xe2cdb638, 17, 0x56, 0xdb1c262d, 0x296),
    ];

    #[test]
    fn shifts_match_hardware() {
        for &(name, w, a, b, c, fin, r, fout) in VECTORS {
            let mut code = if w == 32 { vec![0x66] } else { vec![] };
            // Destination EBX (rm 3), source EAX (reg 0), count CL.
            let grp = |k: u8| vec![if w == 8 { 0xD2 } else { 0xD3 }, 0xC3 | (k << 3)];
            code.extend(match name {
                "shld" => vec![0x0F, 0xA5, 0xC3],
                "shrd" => vec![0x0F, 0xAD, 0xC3],
                "rol" => grp(0),
                "ror" => grp(1),
                "rcl" => grp(2),
                "rcr" => grp(3),
                "shl" => grp(4),
                "shr" => grp(5),
                _ => grp(7),
            });
            let cpu = exec(&code, |cpu| {
                cpu.regs[EBX] = a;
                cpu.regs[EAX] = b;
                cpu.regs[ECX] = c;
                cpu.flags.set_word(fin);
            });
            let mut mask = ARITH;
            if c & 31 != 1 {
                mask &= !OF;
            }
            if !matches!(name, "rol" | "ror" | "rcl" | "rcr") {
                mask &= !AF;
                if c & 31 >= w {
                    mask &= !CF;
                }
            }
            let what = format!("{name}{w} {a:#x},{b:#x} by {c}");
            assert_eq!(cpu.regs[EBX], r, "{what}");
            assert_eq!(cpu.flags.word() & mask, fout & mask, "{what}");
        }
    }

    #[test]
    fn count_zero_changes_nothing() {
        // shl bx, cl with CL = 32 (masked to 0): flags and value unchanged.
        let cpu = exec(&[0xD3, 0xE3], |cpu| {
            cpu.regs[EBX] = 0x8001;
            cpu.regs[ECX] = 32;
            cpu.flags.set_word(0x8D7);
        });
        assert_eq!(cpu.regs[EBX], 0x8001);
        assert_eq!(cpu.flags.word() & ARITH, 0x8D7 & ARITH);
    }

    #[test]
    fn shift_by_immediate_and_by_one() {
        // shr ebx, 4 (66 C1 EB 04); sar bl, 1 (D0 FB)
        let cpu = exec(&[0x66, 0xC1, 0xEB, 0x04, 0xD0, 0xFB], |cpu| {
            cpu.regs[EBX] = 0x8000_0F08;
        });
        assert_eq!(cpu.regs[EBX], 0x0800_00F8);
        assert!(!cpu.flags.cf());
    }
}
