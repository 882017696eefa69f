//! Integer arithmetic: the eight ALU operations in all their forms, TEST, INC/DEC, NOT/NEG,
//! BCD adjustment, sign extension of the accumulator, direct flag operations, SETcc and CMOVcc.
//! Multiplication and division live in `muldiv.rs`, shifts and rotates in `shift.rs`; this file
//! decodes their opcodes too.
//!
//! Every handler is generic over its operand form ([`Rm`]) and width ([`Width`]) and, for the
//! ALU, over the operation (a const parameter), so the decoder picks a fully specialised
//! function and the hot path has no run-time switch on size, form or operation.

use super::decode::{undefined, Decoder, Handler, Instr};
use super::exception::{Exception, Fault};
use super::flags::{AF, CF, FIXED1, PF, SF, ZF};
use super::operand::{MemRm, RegRm, Rm, Width, W16, W32, W8};
use super::{muldiv, shift, Cpu, EAX, EDX};

// ALU operations, numbered as in the opcode (bits 3-5) and the /reg field of 80-83.
pub const ADD: u8 = 0;
pub const OR: u8 = 1;
pub const ADC: u8 = 2;
pub const SBB: u8 = 3;
pub const AND: u8 = 4;
pub const SUB: u8 = 5;
pub const XOR: u8 = 6;
pub const CMP: u8 = 7;
/// TEST: AND without writing the result.
pub const TEST: u8 = 8;

/// Instantiate `f::<R, W16|W32, K>` by operand form and size.
macro_rules! v_k {
    ($d:expr, $f:ident, $k:expr) => {
        match ($d.is_reg(), $d.i.op32) {
            (true, false) => $f::<RegRm, W16, { $k }> as Handler,
            (true, true) => $f::<RegRm, W32, { $k }> as Handler,
            (false, false) => $f::<MemRm, W16, { $k }> as Handler,
            (false, true) => $f::<MemRm, W32, { $k }> as Handler,
        }
    };
}
pub(crate) use v_k;

/// Instantiate `f::<R, W8, K>` by operand form.
macro_rules! b_k {
    ($d:expr, $f:ident, $k:expr) => {
        if $d.is_reg() {
            $f::<RegRm, W8, { $k }> as Handler
        } else {
            $f::<MemRm, W8, { $k }> as Handler
        }
    };
}
pub(crate) use b_k;

/// Instantiate `f::<W16|W32, K>` by operand size.
macro_rules! w_k {
    ($d:expr, $f:ident, $k:expr) => {
        if $d.i.op32 {
            $f::<W32, { $k }> as Handler
        } else {
            $f::<W16, { $k }> as Handler
        }
    };
}

/// Expand `m!(args, K)` with K the constant 0..=7 equal to `op & 7`.
macro_rules! for_op {
    ($op:expr, $m:ident!($($a:tt)*)) => {
        match $op & 7 {
            0 => $m!($($a)*, 0),
            1 => $m!($($a)*, 1),
            2 => $m!($($a)*, 2),
            3 => $m!($($a)*, 3),
            4 => $m!($($a)*, 4),
            5 => $m!($($a)*, 5),
            6 => $m!($($a)*, 6),
            _ => $m!($($a)*, 7),
        }
    };
}
pub(crate) use for_op;

/// `f::<W8, K>` (the byte accumulator forms).
macro_rules! a_b {
    ($f:ident, $k:expr) => {
        $f::<W8, { $k }> as Handler
    };
}

/// Decode the opcodes of this group.
pub fn decode(d: &mut Decoder, op: u16) -> Fault<Handler> {
    Ok(match op {
        // BCD adjustments sit among the ALU opcodes.
        0x27 => daa,
        0x2F => das,
        0x37 => aaa,
        0x3F => aas,
        0x00..=0x3F => {
            let k = (op >> 3) as u8 & 7;
            match op & 7 {
                0 => {
                    d.modrm()?;
                    if k != CMP {
                        d.allow_lock();
                    }
                    for_op!(k, b_k!(d, alu_rm_r))
                }
                1 => {
                    d.modrm()?;
                    if k != CMP {
                        d.allow_lock();
                    }
                    for_op!(k, v_k!(d, alu_rm_r))
                }
                2 => {
                    d.modrm()?;
                    for_op!(k, b_k!(d, alu_r_rm))
                }
                3 => {
                    d.modrm()?;
                    for_op!(k, v_k!(d, alu_r_rm))
                }
                4 => {
                    d.imm8()?;
                    for_op!(k, a_b!(alu_a_i))
                }
                5 => {
                    d.imm_v()?;
                    for_op!(k, w_k!(d, alu_a_i))
                }
                _ => undefined(),
            }
        }
        0x40..=0x4F => {
            d.i.reg = (op & 7) as u8;
            match (op >= 0x48, d.i.op32) {
                (false, false) => incdec_r::<W16, false>,
                (false, true) => incdec_r::<W32, false>,
                (true, false) => incdec_r::<W16, true>,
                (true, true) => incdec_r::<W32, true>,
            }
        }
        0x69 => {
            d.modrm()?;
            d.imm_v()?;
            crate::rm_v!(d, muldiv_imul_r_rm_i)
        }
        0x6B => {
            d.modrm()?;
            d.imm8s()?;
            crate::rm_v!(d, muldiv_imul_r_rm_i)
        }
        0x0FAF => {
            d.modrm()?;
            crate::rm_v!(d, muldiv_imul_r_rm)
        }
        0x80..=0x83 => {
            d.modrm()?;
            let k = d.i.reg;
            if k != CMP {
                d.allow_lock();
            }
            match op {
                0x81 => {
                    d.imm_v()?;
                    for_op!(k, v_k!(d, alu_rm_i))
                }
                0x83 => {
                    d.imm8s()?;
                    for_op!(k, v_k!(d, alu_rm_i))
                }
                // 82 is an alias of 80 outside 64-bit mode.
                _ => {
                    d.imm8()?;
                    for_op!(k, b_k!(d, alu_rm_i))
                }
            }
        }
        0x84 => {
            d.modrm()?;
            b_k!(d, alu_rm_r, TEST)
        }
        0x85 => {
            d.modrm()?;
            v_k!(d, alu_rm_r, TEST)
        }
        0xA8 => {
            d.imm8()?;
            alu_a_i::<W8, TEST>
        }
        0xA9 => {
            d.imm_v()?;
            w_k!(d, alu_a_i, TEST)
        }
        0x98 => by_op32(d, cbw, cwde),
        0x99 => by_op32(d, cwd, cdq),
        0x9E => sahf,
        0x9F => lahf,
        0xF5 => cmc,
        0xF8 => clc,
        0xF9 => stc,
        0xD6 => salc,
        0xD4 => {
            d.imm8()?;
            aam
        }
        0xD5 => {
            d.imm8()?;
            aad
        }
        0xC0 | 0xC1 | 0xD0..=0xD3 => shift::decode(d, op)?,
        0x0FA4 | 0x0FA5 | 0x0FAC | 0x0FAD => shift::decode(d, op)?,
        0xF6 => {
            d.modrm()?;
            match d.i.reg {
                // /1 is an undocumented alias of /0.
                0 | 1 => {
                    d.imm8()?;
                    b_k!(d, alu_rm_i, TEST)
                }
                2 => {
                    d.allow_lock();
                    crate::rm_b!(d, not)
                }
                3 => {
                    d.allow_lock();
                    crate::rm_b!(d, neg)
                }
                r => muldiv::select_b(d, r),
            }
        }
        0xF7 => {
            d.modrm()?;
            match d.i.reg {
                0 | 1 => {
                    d.imm_v()?;
                    v_k!(d, alu_rm_i, TEST)
                }
                2 => {
                    d.allow_lock();
                    crate::rm_v!(d, not)
                }
                3 => {
                    d.allow_lock();
                    crate::rm_v!(d, neg)
                }
                r => muldiv::select_v(d, r),
            }
        }
        0xFE => {
            d.modrm()?;
            match d.i.reg {
                0 => {
                    d.allow_lock();
                    b_k!(d, incdec_rm, false)
                }
                1 => {
                    d.allow_lock();
                    b_k!(d, incdec_rm, true)
                }
                _ => undefined(),
            }
        }
        0x0F40..=0x0F4F => {
            d.modrm()?;
            crate::rm_v!(d, cmov)
        }
        0x0F90..=0x0F9F => {
            d.modrm()?;
            crate::rm_b!(d, setcc)
        }
        _ => undefined(),
    })
}

fn by_op32(d: &Decoder, f16: Handler, f32: Handler) -> Handler {
    if d.i.op32 {
        f32
    } else {
        f16
    }
}

/// INC (reg 0) and DEC (reg 1) of opcode FF with ModR/M already read: the FF group is decoded
/// by control.rs, which calls this for its /0 and /1.
pub fn decode_ff_incdec(d: &mut Decoder, reg: u8) -> Handler {
    d.allow_lock();
    if reg == 0 {
        v_k!(d, incdec_rm, false)
    } else {
        v_k!(d, incdec_rm, true)
    }
}

// IMUL's decoding sits here (its opcodes are scattered); these name its handlers for rm_v!.
use muldiv::imul_r_rm as muldiv_imul_r_rm;
use muldiv::imul_r_rm_i as muldiv_imul_r_rm_i;

// ---- The ALU ----

/// Compute `a OP b` at width W, record the flags, return the result (masked to W).
#[inline(always)]
fn alu<W: Width, const OP: u8>(cpu: &mut Cpu, a: u32, b: u32) -> u32 {
    let b = b & W::MASK;
    let f = &mut cpu.flags;
    let r = match OP {
        ADD => {
            let r = a.wrapping_add(b);
            f.set_add(W::BITS, a, b, r);
            r
        }
        ADC => {
            let r = a.wrapping_add(b).wrapping_add(f.cf() as u32);
            f.set_add(W::BITS, a, b, r);
            r
        }
        SUB | CMP => {
            let r = a.wrapping_sub(b);
            f.set_sub(W::BITS, a, b, r);
            r
        }
        SBB => {
            let r = a.wrapping_sub(b).wrapping_sub(f.cf() as u32);
            f.set_sub(W::BITS, a, b, r);
            r
        }
        OR => {
            let r = a | b;
            f.set_logic(W::BITS, r);
            r
        }
        XOR => {
            let r = a ^ b;
            f.set_logic(W::BITS, r);
            r
        }
        _ => {
            let r = a & b;
            f.set_logic(W::BITS, r);
            r
        }
    };
    r & W::MASK
}

/// Whether the operation stores its result.
#[inline(always)]
const fn writes(op: u8) -> bool {
    op != CMP && op != TEST
}

/// OP r/m, reg
#[inline(always)]
pub(crate) fn alu_rm_r<R: Rm, W: Width, const OP: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let b = W::reg(cpu, i.reg);
    if writes(OP) {
        R::rmw::<W>(cpu, i, |cpu, a| alu::<W, OP>(cpu, a, b))
    } else {
        let a = R::read::<W>(cpu, i)?;
        alu::<W, OP>(cpu, a, b);
        Ok(())
    }
}

/// OP reg, r/m
#[inline(always)]
pub(crate) fn alu_r_rm<R: Rm, W: Width, const OP: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let b = R::read::<W>(cpu, i)?;
    let a = W::reg(cpu, i.reg);
    let r = alu::<W, OP>(cpu, a, b);
    if writes(OP) {
        W::set_reg(cpu, i.reg, r);
    }
    Ok(())
}

/// OP r/m, imm
#[inline(always)]
pub(crate) fn alu_rm_i<R: Rm, W: Width, const OP: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let b = i.imm;
    if writes(OP) {
        R::rmw::<W>(cpu, i, |cpu, a| alu::<W, OP>(cpu, a, b))
    } else {
        let a = R::read::<W>(cpu, i)?;
        alu::<W, OP>(cpu, a, b);
        Ok(())
    }
}

/// OP AL/AX/EAX, imm
#[inline(always)]
pub(crate) fn alu_a_i<W: Width, const OP: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let a = W::reg(cpu, EAX as u8);
    let r = alu::<W, OP>(cpu, a, i.imm);
    if writes(OP) {
        W::set_reg(cpu, EAX as u8, r);
    }
    Ok(())
}

// ---- INC, DEC, NOT, NEG ----

#[inline(always)]
fn incdec<W: Width, const DEC: bool>(cpu: &mut Cpu, a: u32) -> u32 {
    let r = if DEC {
        a.wrapping_sub(1)
    } else {
        a.wrapping_add(1)
    } & W::MASK;
    cpu.flags.set_incdec(W::BITS, a, r, !DEC);
    r
}

/// INC/DEC reg (40-4F)
#[inline(always)]
pub(crate) fn incdec_r<W: Width, const DEC: bool>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let a = W::reg(cpu, i.reg);
    let r = incdec::<W, DEC>(cpu, a);
    W::set_reg(cpu, i.reg, r);
    Ok(())
}

/// INC/DEC r/m (FE/FF /0 /1)
#[inline(always)]
pub(crate) fn incdec_rm<R: Rm, W: Width, const DEC: bool>(cpu: &mut Cpu, i: &Instr) -> Fault {
    R::rmw::<W>(cpu, i, incdec::<W, DEC>)
}

/// NOT r/m: no flags.
#[inline(always)]
pub(crate) fn not<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    R::rmw::<W>(cpu, i, |_, a| !a & W::MASK)
}

/// NEG r/m: flags of 0 - a (CF = a != 0).
#[inline(always)]
pub(crate) fn neg<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    R::rmw::<W>(cpu, i, |cpu, a| {
        let r = 0u32.wrapping_sub(a);
        cpu.flags.set_sub(W::BITS, 0, a, r);
        r & W::MASK
    })
}

// ---- Sign extension of the accumulator ----

/// CBW: AX = sign-extended AL.
fn cbw(cpu: &mut Cpu, _: &Instr) -> Fault {
    let v = W8::sext(cpu.regs[EAX] & 0xFF);
    W16::set_reg(cpu, EAX as u8, v);
    Ok(())
}

/// CWDE: EAX = sign-extended AX.
#[inline(always)]
pub(crate) fn cwde(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.regs[EAX] = W16::sext(cpu.regs[EAX] & 0xFFFF);
    Ok(())
}

/// CWD: DX = the sign of AX, repeated.
fn cwd(cpu: &mut Cpu, _: &Instr) -> Fault {
    let v = W16::sext(cpu.regs[EAX] & 0xFFFF) >> 16;
    W16::set_reg(cpu, EDX as u8, v);
    Ok(())
}

/// CDQ: EDX = the sign of EAX, repeated.
#[inline(always)]
pub(crate) fn cdq(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.regs[EDX] = ((cpu.regs[EAX] as i32) >> 31) as u32;
    Ok(())
}

// ---- Flag operations ----

/// The flags SAHF loads and LAHF stores.
const AH_FLAGS: u32 = SF | ZF | AF | PF | CF;

/// SAHF: SF ZF AF PF CF from AH.
fn sahf(cpu: &mut Cpu, _: &Instr) -> Fault {
    let ah = (cpu.regs[EAX] >> 8) & 0xFF;
    cpu.flags.set_masked(ah, AH_FLAGS);
    Ok(())
}

/// LAHF: AH = SF ZF 0 AF 0 PF 1 CF.
fn lahf(cpu: &mut Cpu, _: &Instr) -> Fault {
    let v = (cpu.flags.word() & AH_FLAGS) | FIXED1;
    W8::set_reg(cpu, 4, v); // AH
    Ok(())
}

fn cmc(cpu: &mut Cpu, _: &Instr) -> Fault {
    let c = cpu.flags.cf();
    cpu.flags.set(CF, !c);
    Ok(())
}

fn clc(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.flags.set(CF, false);
    Ok(())
}

fn stc(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.flags.set(CF, true);
    Ok(())
}

/// SALC (undocumented): AL = CF ? FF : 00, flags unchanged.
fn salc(cpu: &mut Cpu, _: &Instr) -> Fault {
    let v = if cpu.flags.cf() { 0xFF } else { 0 };
    W8::set_reg(cpu, EAX as u8, v);
    Ok(())
}

// ---- BCD ----

/// Set the flags of a BCD adjustment: SF ZF PF from `al`, CF and AF explicit, OF clear.
#[inline]
fn bcd_flags(cpu: &mut Cpu, al: u32, cf: bool, af: bool) {
    cpu.flags.set_explicit(8, al, cf, false, af);
}

/// AAA: ASCII adjust after addition: AX += 0x106 when the low digit overflowed (the +6 carries
/// into AH, as the SDM says and the 286 recordings confirm), then AL keeps its low digit.
fn aaa(cpu: &mut Cpu, _: &Instr) -> Fault {
    let ax = cpu.regs[EAX] & 0xFFFF;
    let (ax, adj) = if (ax & 0xF) > 9 || cpu.flags.af() {
        (ax.wrapping_add(0x106), true)
    } else {
        (ax, false)
    };
    let ax = ax & 0xFF0F;
    W16::set_reg(cpu, EAX as u8, ax);
    bcd_flags(cpu, ax & 0xFF, adj, adj);
    Ok(())
}

/// AAS: ASCII adjust after subtraction.
fn aas(cpu: &mut Cpu, _: &Instr) -> Fault {
    let ax = cpu.regs[EAX] & 0xFFFF;
    let (ax, adj) = if (ax & 0xF) > 9 || cpu.flags.af() {
        // AX - 6 borrows into AH; then AH - 1.
        (ax.wrapping_sub(6).wrapping_sub(0x100) & 0xFFFF, true)
    } else {
        (ax, false)
    };
    let ax = ax & 0xFF0F;
    W16::set_reg(cpu, EAX as u8, ax);
    bcd_flags(cpu, ax & 0xFF, adj, adj);
    Ok(())
}

/// DAA: decimal adjust AL after addition.
fn daa(cpu: &mut Cpu, _: &Instr) -> Fault {
    let old_al = cpu.regs[EAX] & 0xFF;
    let old_cf = cpu.flags.cf();
    let mut al = old_al;
    let mut af = false;
    let mut cf = false;
    if (al & 0xF) > 9 || cpu.flags.af() {
        al += 6;
        af = true;
    }
    if old_al > 0x99 || old_cf {
        al += 0x60;
        cf = true;
    }
    let al = al & 0xFF;
    W8::set_reg(cpu, EAX as u8, al);
    bcd_flags(cpu, al, cf, af);
    Ok(())
}

/// DAS: decimal adjust AL after subtraction.
fn das(cpu: &mut Cpu, _: &Instr) -> Fault {
    let old_al = cpu.regs[EAX] & 0xFF;
    let old_cf = cpu.flags.cf();
    let mut al = old_al;
    let mut af = false;
    let mut cf = false;
    if (al & 0xF) > 9 || cpu.flags.af() {
        cf = old_cf || al < 6;
        al = al.wrapping_sub(6);
        af = true;
    }
    // Unlike DAA, a second step not taken keeps the borrow of the first.
    if old_al > 0x99 || old_cf {
        al = al.wrapping_sub(0x60);
        cf = true;
    }
    let al = al & 0xFF;
    W8::set_reg(cpu, EAX as u8, al);
    bcd_flags(cpu, al, cf, af);
    Ok(())
}

/// AAM imm8: AH = AL / imm, AL = AL % imm; #DE when imm is 0.
fn aam(cpu: &mut Cpu, i: &Instr) -> Fault {
    let base = i.imm & 0xFF;
    if base == 0 {
        return Err(Exception::de());
    }
    let al = cpu.regs[EAX] & 0xFF;
    let (q, r) = (al / base, al % base);
    W16::set_reg(cpu, EAX as u8, (q << 8) | r);
    cpu.flags.set_logic(8, r);
    Ok(())
}

/// AAD imm8: AL = AL + AH * imm, AH = 0.
fn aad(cpu: &mut Cpu, i: &Instr) -> Fault {
    let base = i.imm & 0xFF;
    let ax = cpu.regs[EAX];
    let al = ax & 0xFF;
    let prod = ((ax >> 8) & 0xFF).wrapping_mul(base) & 0xFF;
    let r = (al + prod) & 0xFF;
    W16::set_reg(cpu, EAX as u8, r);
    // The flags are those of the byte addition the microcode performs.
    cpu.flags.set_add(8, al, prod, al + prod);
    Ok(())
}

// ---- SETcc, CMOVcc ----

/// SETcc r/m8: the condition is the opcode's low nibble.
#[inline(always)]
pub(crate) fn setcc<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = cpu.flags.cond((i.opcode & 0xF) as u8) as u32;
    R::write::<W>(cpu, i, v)
}

/// CMOVcc reg, r/m: the source is read (and may fault) whatever the condition.
#[inline(always)]
pub(crate) fn cmov<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = R::read::<W>(cpu, i)?;
    if cpu.flags.cond((i.opcode & 0xF) as u8) {
        W::set_reg(cpu, i.reg, v);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cpu::flags::{ARITH, OF};
    use crate::cpu::{SegCache, Segment, EBX, ECX};

    /// Where test code is loaded (CS = 0, IP = CODE); data segments are 0 as well.
    pub(crate) const CODE: u32 = 0x1000;

    /// Run `code` (followed by HLT) in real mode after `setup`; returns the CPU.
    pub(crate) fn exec(code: &[u8], setup: impl FnOnce(&mut Cpu)) -> Cpu {
        let mut cpu = Cpu::with_ram(1 << 20);
        for s in [Segment::ES, Segment::CS, Segment::SS, Segment::DS] {
            cpu.segs[s as usize] = SegCache::real(0);
        }
        cpu.eip = CODE;
        cpu.regs[crate::cpu::ESP] = 0x8000;
        let mut bytes = code.to_vec();
        bytes.push(0xF4);
        cpu.mem.load(CODE, &bytes);
        setup(&mut cpu);
        cpu.run(100);
        cpu
    }

    /// Read physical memory.
    pub(crate) fn peek(cpu: &mut Cpu, addr: u32, size: u8) -> u32 {
        let mut bus = crate::bus::EmptyBus;
        cpu.mem.read_phys(&mut bus, addr, size)
    }

    /// The arithmetic flags after running `code`.
    pub(crate) fn arith_flags(cpu: &Cpu) -> u32 {
        cpu.flags.word() & ARITH
    }

    #[test]
    fn add_32bit_sets_carry_and_zero() {
        // add eax, ebx (66 01 D8)
        let cpu = exec(&[0x66, 0x01, 0xD8], |c| {
            c.regs[EAX] = 0xFFFF_FFFF;
            c.regs[EBX] = 1;
        });
        assert_eq!(cpu.regs[EAX], 0);
        assert_eq!(arith_flags(&cpu), CF | ZF | PF | AF);
    }

    #[test]
    fn sub_imm8_sign_extended_32bit() {
        // sub ecx, -1 (66 83 E9 FF): ecx + 1 with a borrow
        let cpu = exec(&[0x66, 0x83, 0xE9, 0xFF], |c| c.regs[ECX] = 0x7FFF_FFFF);
        assert_eq!(cpu.regs[ECX], 0x8000_0000);
        assert_eq!(arith_flags(&cpu) & (CF | OF | SF), CF | OF | SF);
    }

    #[test]
    fn adc_sbb_use_carry_in() {
        // stc; adc eax, 0 (66 83 D0 00); stc; sbb ebx, 0 (66 83 DB 00)
        let cpu = exec(
            &[0xF9, 0x66, 0x83, 0xD0, 0x00, 0xF9, 0x66, 0x83, 0xDB, 0x00],
            |c| {
                c.regs[EAX] = 0xFFFF_FFFF;
                c.regs[EBX] = 0;
            },
        );
        assert_eq!(cpu.regs[EAX], 0);
        assert_eq!(cpu.regs[EBX], 0xFFFF_FFFF);
        assert!(cpu.flags.cf());
    }

    #[test]
    fn lock_on_register_destination_is_ud() {
        // lock add eax, ebx: #UD vectors through IVT entry 6 (0:0 here), so EIP leaves the code.
        let cpu = exec(&[0xF0, 0x66, 0x01, 0xD8], |c| {
            c.mem.load(6 * 4, &[0x00, 0x20, 0x00, 0x00]);
            c.mem.load(0x2000, &[0xF4]);
        });
        assert_eq!(cpu.eip, 0x2001);
    }

    #[test]
    fn lock_on_memory_destination_is_allowed() {
        // lock add [0x100], eax (F0 66 01 06 00 01)
        let mut cpu = exec(&[0xF0, 0x66, 0x01, 0x06, 0x00, 0x01], |c| {
            c.regs[EAX] = 0x1234_5678;
            c.mem.load(0x100, &[1, 0, 0, 0]);
        });
        assert_eq!(cpu.eip, CODE + 7);
        assert_eq!(peek(&mut cpu, 0x100, 4), 0x1234_5679);
    }

    #[test]
    fn inc_dec_32bit_preserve_carry() {
        // stc; inc eax (66 40); dec ebx (66 4B)
        let cpu = exec(&[0xF9, 0x66, 0x40, 0x66, 0x4B], |c| {
            c.regs[EAX] = 0x7FFF_FFFF;
            c.regs[EBX] = 0;
        });
        assert_eq!(cpu.regs[EAX], 0x8000_0000);
        assert_eq!(cpu.regs[EBX], 0xFFFF_FFFF);
        assert!(cpu.flags.cf() && cpu.flags.sf() && !cpu.flags.of());
    }

    #[test]
    fn cwde_cdq() {
        // cwde (66 98); cdq (66 99)
        let cpu = exec(&[0x66, 0x98, 0x66, 0x99], |c| c.regs[EAX] = 0x1234_8000);
        assert_eq!(cpu.regs[EAX], 0xFFFF_8000);
        assert_eq!(cpu.regs[EDX], 0xFFFF_FFFF);
    }

    #[test]
    fn setcc_and_cmovcc() {
        // cmp eax, ebx (66 39 D8); setb cl (0F 92 C1); cmovb edx, ebx (66 0F 42 D3);
        // cmova esi, ebx (66 0F 47 F3)
        let cpu = exec(
            &[
                0x66, 0x39, 0xD8, 0x0F, 0x92, 0xC1, 0x66, 0x0F, 0x42, 0xD3, 0x66, 0x0F, 0x47, 0xF3,
            ],
            |c| {
                c.regs[EAX] = 1;
                c.regs[EBX] = 0x8000_0000;
                c.regs[ECX] = 0xFFFF_FFFF;
                c.regs[6] = 0x5555_5555;
            },
        );
        assert_eq!(cpu.regs[ECX], 0xFFFF_FF01);
        assert_eq!(cpu.regs[EDX], 0x8000_0000);
        assert_eq!(cpu.regs[6], 0x5555_5555);
    }

    #[test]
    fn cmov_false_still_reads_memory() {
        // clc; cmovb eax, [0xFFFF] (66 0F 42 06 FF FF): the dword crosses the segment limit,
        // so #GP even though the condition is false.
        let cpu = exec(&[0xF8, 0x66, 0x0F, 0x42, 0x06, 0xFF, 0xFF], |c| {
            c.mem.load(13 * 4, &[0x00, 0x20, 0x00, 0x00]);
            c.mem.load(0x2000, &[0xF4]);
        });
        assert_eq!(cpu.eip, 0x2001);
    }

    #[test]
    fn mul_div_32bit() {
        // mul ebx (66 F7 E3); div ecx (66 F7 F1)
        let cpu = exec(&[0x66, 0xF7, 0xE3, 0x66, 0xF7, 0xF1], |c| {
            c.regs[EAX] = 0x8000_0001;
            c.regs[EBX] = 0x10;
            c.regs[ECX] = 0x11;
        });
        assert_eq!(cpu.regs[EAX], (0x8_0000_0010u64 / 0x11) as u32);
        assert_eq!(cpu.regs[EDX], (0x8_0000_0010u64 % 0x11) as u32);
    }

    #[test]
    fn idiv_32bit_overflow_faults_at_the_instruction() {
        // idiv ebx (66 F7 FB) with EDX:EAX = -2^63 / -1: #DE; the pushed IP is the IDIV's.
        let mut cpu = exec(&[0x66, 0xF7, 0xFB], |c| {
            c.regs[EAX] = 0;
            c.regs[EDX] = 0x8000_0000;
            c.regs[EBX] = 0xFFFF_FFFF;
            c.mem.load(0, &[0x00, 0x20, 0x00, 0x00]);
            c.mem.load(0x2000, &[0xF4]);
        });
        assert_eq!(cpu.eip, 0x2001);
        // IP, CS, FLAGS were pushed below SP 0x8000.
        assert_eq!(peek(&mut cpu, 0x7FFA, 2), CODE);
        assert_eq!(cpu.regs[EAX], 0);
    }

    #[test]
    fn imul_three_operand_32bit() {
        // imul eax, ebx, -3 (66 6B C3 FD); imul ecx, ebx (66 0F AF CB)
        let cpu = exec(&[0x66, 0x6B, 0xC3, 0xFD, 0x66, 0x0F, 0xAF, 0xCB], |c| {
            c.regs[EBX] = 0x4000_0000;
            c.regs[ECX] = 4;
        });
        assert_eq!(cpu.regs[EAX], 0x4000_0000);
        assert_eq!(cpu.regs[ECX], 0);
        assert!(cpu.flags.cf() && cpu.flags.of());
    }
}
