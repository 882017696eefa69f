//! Data movement: MOV (including segment registers and moffs), XCHG, LEA, MOVZX/MOVSX, every
//! PUSH and POP (registers, segments, immediates, memory, PUSHA/POPA, PUSHF/POPF), far-pointer
//! loads (LDS/LES/LSS/LFS/LGS), XLAT, ENTER/LEAVE and BOUND.

use super::decode::{undefined, Decoder, Handler, Instr};
use super::exception::{self, Exception, Fault};
use super::flags;
use super::operand::{MemRm, RegRm, Rm, Width, W16, W32, W8};
use super::seg::Segment;
use super::{Cpu, EAX, EBP, EBX, ESP};
use crate::{by_v, rm_b, rm_v};

/// Select `f::<RegRm>` or `f::<MemRm>` by the ModR/M form.
macro_rules! by_rm {
    ($d:expr, $f:ident) => {
        if $d.is_reg() {
            $f::<RegRm> as Handler
        } else {
            $f::<MemRm>
        }
    };
}

/// Decode the opcodes of this group.
pub fn decode(d: &mut Decoder, op: u16) -> Fault<Handler> {
    Ok(match op {
        // MOV r/m, reg and MOV reg, r/m
        0x88 => {
            d.modrm()?;
            rm_b!(d, mov_rm_r)
        }
        0x89 => {
            d.modrm()?;
            rm_v!(d, mov_rm_r)
        }
        0x8A => {
            d.modrm()?;
            rm_b!(d, mov_r_rm)
        }
        0x8B => {
            d.modrm()?;
            rm_v!(d, mov_r_rm)
        }
        // MOV r/m, Sreg
        0x8C => {
            d.modrm()?;
            if d.i.reg > Segment::GS as u8 {
                undefined()
            } else if !d.is_reg() {
                mov_m_sreg
            } else if d.i.op32 {
                mov_r32_sreg
            } else {
                mov_r16_sreg
            }
        }
        // MOV Sreg, r/m (MOV CS is invalid)
        0x8E => {
            d.modrm()?;
            match d.i.reg {
                r if r == Segment::CS as u8 || r > Segment::GS as u8 => undefined(),
                r if r == Segment::SS as u8 => by_rm!(d, mov_ss_rm),
                _ => by_rm!(d, mov_sreg_rm),
            }
        }
        // LEA: the register form is invalid
        0x8D => {
            d.modrm()?;
            if d.is_reg() {
                undefined()
            } else {
                by_v!(d, lea)
            }
        }
        // XCHG r/m, reg: with memory it is locked whether or not LOCK is given
        0x86 => {
            d.modrm()?;
            d.allow_lock();
            rm_b!(d, xchg_rm)
        }
        0x87 => {
            d.modrm()?;
            d.allow_lock();
            rm_v!(d, xchg_rm)
        }
        // NOP (XCHG eAX, eAX; also PAUSE with F3)
        0x90 => nop,
        0x91..=0x97 => {
            d.i.reg = (op & 7) as u8;
            by_v!(d, xchg_ax)
        }
        // MOV AL/eAX, moffs and MOV moffs, AL/eAX: the moffs form of the r/m operand
        0xA0..=0xA3 => {
            d.moffs()?;
            d.i.reg = EAX as u8;
            match (op, d.i.op32) {
                (0xA0, _) => mov_r_rm::<MemRm, W8>,
                (0xA1, false) => mov_r_rm::<MemRm, W16>,
                (0xA1, true) => mov_r_rm::<MemRm, W32>,
                (0xA2, _) => mov_rm_r::<MemRm, W8>,
                (_, false) => mov_rm_r::<MemRm, W16>,
                (_, true) => mov_rm_r::<MemRm, W32>,
            }
        }
        // MOV reg, imm
        0xB0..=0xB7 => {
            d.i.reg = (op & 7) as u8;
            d.imm8()?;
            mov_r_imm::<W8>
        }
        0xB8..=0xBF => {
            d.i.reg = (op & 7) as u8;
            d.imm_v()?;
            by_v!(d, mov_r_imm)
        }
        // MOV r/m, imm (only /0 exists)
        0xC6 => {
            d.modrm()?;
            if d.i.reg != 0 {
                return Ok(undefined());
            }
            d.imm8()?;
            rm_b!(d, mov_rm_imm)
        }
        0xC7 => {
            d.modrm()?;
            if d.i.reg != 0 {
                return Ok(undefined());
            }
            d.imm_v()?;
            rm_v!(d, mov_rm_imm)
        }
        // MOVZX / MOVSX
        0x0FB6 => {
            d.modrm()?;
            rm_v!(d, movzx_b)
        }
        0x0FB7 => {
            d.modrm()?;
            rm_v!(d, movzx_w)
        }
        0x0FBE => {
            d.modrm()?;
            rm_v!(d, movsx_b)
        }
        0x0FBF => {
            d.modrm()?;
            rm_v!(d, movsx_w)
        }
        // PUSH Sreg
        0x06 | 0x0E | 0x16 | 0x1E => {
            d.i.reg = (op >> 3) as u8;
            by_v!(d, push_sreg)
        }
        0x0FA0 => {
            d.i.reg = Segment::FS as u8;
            by_v!(d, push_sreg)
        }
        0x0FA8 => {
            d.i.reg = Segment::GS as u8;
            by_v!(d, push_sreg)
        }
        // POP Sreg (POP CS, 0F, does not exist)
        0x07 | 0x1F => {
            d.i.reg = (op >> 3) as u8;
            by_v!(d, pop_sreg)
        }
        0x17 => {
            d.i.reg = Segment::SS as u8;
            by_v!(d, pop_ss)
        }
        0x0FA1 => {
            d.i.reg = Segment::FS as u8;
            by_v!(d, pop_sreg)
        }
        0x0FA9 => {
            d.i.reg = Segment::GS as u8;
            by_v!(d, pop_sreg)
        }
        // PUSH reg, POP reg
        0x50..=0x57 => {
            d.i.reg = (op & 7) as u8;
            by_v!(d, push_reg)
        }
        0x58..=0x5F => {
            d.i.reg = (op & 7) as u8;
            by_v!(d, pop_reg)
        }
        // PUSH imm
        0x68 => {
            d.imm_v()?;
            by_v!(d, push_imm)
        }
        0x6A => {
            d.imm8s()?;
            by_v!(d, push_imm)
        }
        // POP r/m (only /0 exists)
        0x8F => {
            d.modrm()?;
            if d.i.reg != 0 {
                return Ok(undefined());
            }
            rm_v!(d, pop_rm)
        }
        0x60 => by_v!(d, pusha),
        0x61 => by_v!(d, popa),
        0x9C => by_v!(d, pushf),
        0x9D => by_v!(d, popf),
        // Far-pointer loads: memory operand only
        0xC4 | 0xC5 | 0x0FB2 | 0x0FB4 | 0x0FB5 => {
            d.modrm()?;
            if d.is_reg() {
                return Ok(undefined());
            }
            d.i.imm2 = match op {
                0xC4 => Segment::ES,
                0xC5 => Segment::DS,
                0x0FB2 => Segment::SS,
                0x0FB4 => Segment::FS,
                _ => Segment::GS,
            } as u32;
            by_v!(d, load_far_pointer)
        }
        // XLAT: address size picks BX or EBX
        0xD7 => {
            if d.i.addr32 {
                xlat::<W32>
            } else {
                xlat::<W16>
            }
        }
        // ENTER imm16, imm8
        0xC8 => {
            d.imm16()?;
            d.i.imm2 = d.byte()? as u32;
            by_v!(d, enter)
        }
        0xC9 => by_v!(d, leave),
        // BOUND: memory operand only
        0x62 => {
            d.modrm()?;
            if d.is_reg() {
                return Ok(undefined());
            }
            by_v!(d, bound)
        }
        _ => undefined(),
    })
}

// ---- Stack helpers by width ----

/// Push a value of width `W` (16 or 32 bits).
#[inline(always)]
pub(crate) fn push_w<W: Width>(cpu: &mut Cpu, v: u32) -> Fault {
    if W::BYTES == 4 {
        cpu.push::<4>(v)
    } else {
        cpu.push::<2>(v)
    }
}

/// Pop a value of width `W` (16 or 32 bits).
#[inline(always)]
pub(crate) fn pop_w<W: Width>(cpu: &mut Cpu) -> Fault<u32> {
    if W::BYTES == 4 {
        cpu.pop::<4>()
    } else {
        cpu.pop::<2>()
    }
}

/// (E)SP changed by `delta` at the stack's address size.
#[inline(always)]
fn sp_add(cpu: &mut Cpu, delta: u32) {
    let mask = cpu.stack_mask();
    cpu.regs[ESP] = (cpu.regs[ESP] & !mask) | (cpu.regs[ESP].wrapping_add(delta) & mask);
}

// ---- MOV ----

fn mov_rm_r<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = W::reg(cpu, i.reg);
    R::write::<W>(cpu, i, v)
}

fn mov_r_rm<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = R::read::<W>(cpu, i)?;
    W::set_reg(cpu, i.reg, v);
    Ok(())
}

fn mov_r_imm<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    W::set_reg(cpu, i.reg, i.imm);
    Ok(())
}

fn mov_rm_imm<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    R::write::<W>(cpu, i, i.imm)
}

/// MOV m16, Sreg: a memory destination is always 16 bits, whatever the operand size.
fn mov_m_sreg(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = cpu.segs[i.reg as usize].selector as u32;
    MemRm::write::<W16>(cpu, i, v)
}

fn mov_r16_sreg(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = cpu.segs[i.reg as usize].selector as u32;
    W16::set_reg(cpu, i.rm, v);
    Ok(())
}

/// MOV r32, Sreg: the P6 zero-extends the selector into the whole register.
fn mov_r32_sreg(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.regs[i.rm as usize] = cpu.segs[i.reg as usize].selector as u32;
    Ok(())
}

fn mov_sreg_rm<R: Rm>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = R::read::<W16>(cpu, i)?;
    cpu.load_seg(Segment::from_index(i.reg), v as u16)
}

/// MOV SS: interrupts (and single-step traps) are held off for one instruction so that a
/// following MOV (E)SP completes the stack switch atomically.
fn mov_ss_rm<R: Rm>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = R::read::<W16>(cpu, i)?;
    cpu.load_seg(Segment::SS, v as u16)?;
    cpu.irq_shadow = true;
    cpu.stop_block = true;
    Ok(())
}

/// LEA: the offset at address size, truncated or zero-extended to operand size.
fn lea<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let ea = i.ea(cpu);
    W::set_reg(cpu, i.reg, ea);
    Ok(())
}

fn movzx_b<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = R::read::<W8>(cpu, i)?;
    W::set_reg(cpu, i.reg, v);
    Ok(())
}

fn movzx_w<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = R::read::<W16>(cpu, i)?;
    W::set_reg(cpu, i.reg, v);
    Ok(())
}

fn movsx_b<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = R::read::<W8>(cpu, i)?;
    W::set_reg(cpu, i.reg, W8::sext(v));
    Ok(())
}

fn movsx_w<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = R::read::<W16>(cpu, i)?;
    W::set_reg(cpu, i.reg, W16::sext(v));
    Ok(())
}

// ---- XCHG ----

fn nop(_: &mut Cpu, _: &Instr) -> Fault {
    Ok(())
}

fn xchg_rm<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    R::rmw::<W>(cpu, i, |cpu, old| {
        let r = W::reg(cpu, i.reg);
        W::set_reg(cpu, i.reg, old);
        r
    })
}

fn xchg_ax<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let a = W::reg(cpu, EAX as u8);
    let r = W::reg(cpu, i.reg);
    W::set_reg(cpu, EAX as u8, r);
    W::set_reg(cpu, i.reg, a);
    Ok(())
}

// ---- PUSH / POP ----

/// PUSH Sreg. With a 32-bit operand the P6 writes a full dword, the selector zero-extended
/// (later CPUs write only the low word; both decrement ESP by 4).
fn push_sreg<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = cpu.segs[i.reg as usize].selector as u32;
    push_w::<W>(cpu, v)
}

fn pop_sreg<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    // If the load faults, the run loop puts (E)SP back.
    let v = pop_w::<W>(cpu)?;
    cpu.load_seg(Segment::from_index(i.reg), v as u16)
}

/// POP SS: like MOV SS, holds off interrupts for one instruction.
fn pop_ss<W: Width>(cpu: &mut Cpu, _: &Instr) -> Fault {
    let v = pop_w::<W>(cpu)?;
    cpu.load_seg(Segment::SS, v as u16)?;
    cpu.irq_shadow = true;
    cpu.stop_block = true;
    Ok(())
}

/// PUSH reg. PUSH (E)SP pushes the value it had before the push (286 and later).
fn push_reg<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = W::reg(cpu, i.reg);
    push_w::<W>(cpu, v)
}

/// POP reg. POP (E)SP loads the popped value, overriding the increment.
fn pop_reg<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = pop_w::<W>(cpu)?;
    W::set_reg(cpu, i.reg, v);
    Ok(())
}

fn push_imm<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    push_w::<W>(cpu, i.imm)
}

/// POP r/m: an (E)SP-based address is computed with the value (E)SP has after the pop.
fn pop_rm<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = pop_w::<W>(cpu)?;
    R::write::<W>(cpu, i, v)
}

/// PUSHA/PUSHAD: eAX, eCX, eDX, eBX, the original eSP, eBP, eSI, eDI.
fn pusha<W: Width>(cpu: &mut Cpu, _: &Instr) -> Fault {
    let sp = W::reg(cpu, ESP as u8);
    for r in 0..8u8 {
        let v = if r as usize == ESP {
            sp
        } else {
            W::reg(cpu, r)
        };
        push_w::<W>(cpu, v)?;
    }
    Ok(())
}

/// POPA/POPAD: the reverse of PUSHA; the saved eSP is skipped. Registers are written only
/// once every pop has succeeded.
fn popa<W: Width>(cpu: &mut Cpu, _: &Instr) -> Fault {
    let mut vals = [0u32; 8];
    for r in (0..8).rev() {
        vals[r] = pop_w::<W>(cpu)?;
    }
    for (r, v) in vals.iter().enumerate() {
        if r != ESP {
            W::set_reg(cpu, r as u8, *v);
        }
    }
    Ok(())
}

/// PUSHF/PUSHFD. VM and RF read as 0 in the pushed image. In V86 mode IOPL < 3 faults (no VME).
fn pushf<W: Width>(cpu: &mut Cpu, _: &Instr) -> Fault {
    if cpu.v86_mode() && cpu.flags.iopl() < 3 {
        return Err(Exception::gp(0));
    }
    let v = cpu.flags.word() & !(flags::VM | flags::RF);
    push_w::<W>(cpu, v)
}

/// POPF/POPFD. Real mode and CPL 0 may change everything except VM (and VIF/VIP); otherwise
/// IOPL changes only at CPL 0 and IF only when CPL <= IOPL, the other bits silently keeping
/// their values. RF is cleared. In V86 mode IOPL < 3 faults.
fn popf<W: Width>(cpu: &mut Cpu, _: &Instr) -> Fault {
    if cpu.v86_mode() && cpu.flags.iopl() < 3 {
        return Err(Exception::gp(0));
    }
    let v = pop_w::<W>(cpu)?;
    let mut mask = flags::ARITH
        | flags::TF
        | flags::IF
        | flags::DF
        | flags::IOPL
        | flags::NT
        | flags::AC
        | flags::ID;
    if cpu.protected_mode() {
        if cpu.cpl > 0 || cpu.v86_mode() {
            mask &= !flags::IOPL;
        }
        if cpu.cpl > cpu.flags.iopl() {
            mask &= !flags::IF;
        }
    }
    cpu.flags.set_masked(v, mask & W::MASK);
    cpu.flags.set(flags::RF, false);
    // TF or IF may have changed: let the run loop look at them.
    cpu.stop_block = true;
    Ok(())
}

// ---- Far pointers, XLAT ----

/// LDS/LES/LSS/LFS/LGS: offset (operand size) then selector from memory; the segment register
/// (`imm2`) is loaded first, so a faulting load leaves the general register unchanged.
fn load_far_pointer<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let off = i.ea(cpu);
    let seg = i.seg as usize;
    let v = W::read_mem(cpu, seg, off)?;
    let sel = cpu.read::<2>(seg, off.wrapping_add(W::BYTES))? as u16;
    let target = Segment::from_index(i.imm2 as u8);
    cpu.load_seg(target, sel)?;
    W::set_reg(cpu, i.reg, v);
    Ok(())
}

/// XLAT: AL = [seg : (E)BX + AL], at address size `A`.
fn xlat<A: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let off = cpu.regs[EBX].wrapping_add(cpu.regs[EAX] & 0xFF) & A::MASK;
    let v = cpu.read::<1>(i.seg as usize, off)?;
    W8::set_reg(cpu, EAX as u8, v);
    Ok(())
}

// ---- ENTER / LEAVE / BOUND ----

/// ENTER size, level. The nesting level is taken mod 32; (E)BP and (E)SP are used at the stack's
/// address size. (E)BP is written only after every push succeeded (the run loop restores ESP).
fn enter<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let size = i.imm & 0xFFFF;
    let level = i.imm2 & 31;
    let mask = cpu.stack_mask();
    let bp = cpu.regs[EBP];
    push_w::<W>(cpu, bp & W::MASK)?;
    let frame = cpu.regs[ESP] & mask;
    if level > 0 {
        let mut p = bp;
        for _ in 1..level {
            p = (p & !mask) | (p.wrapping_sub(W::BYTES) & mask);
            let v = if W::BYTES == 4 {
                cpu.read::<4>(Segment::SS as usize, p & mask)?
            } else {
                cpu.read::<2>(Segment::SS as usize, p & mask)?
            };
            push_w::<W>(cpu, v)?;
        }
        push_w::<W>(cpu, frame)?;
    }
    sp_add(cpu, size.wrapping_neg());
    // The CPU checks that the new top of stack is writable (nothing is written there).
    let top = cpu.regs[ESP] & mask;
    cpu.probe_write(Segment::SS as usize, top, W::BYTES)?;
    // The frame pointer is written at the smaller of operand and stack size.
    if mask == 0xFFFF {
        W16::set_reg(cpu, EBP as u8, frame);
    } else {
        W::set_reg(cpu, EBP as u8, frame);
    }
    Ok(())
}

/// LEAVE: (E)SP = (E)BP at stack size, then pop (E)BP at operand size.
fn leave<W: Width>(cpu: &mut Cpu, _: &Instr) -> Fault {
    let mask = cpu.stack_mask();
    cpu.regs[ESP] = (cpu.regs[ESP] & !mask) | (cpu.regs[EBP] & mask);
    let v = pop_w::<W>(cpu)?;
    W::set_reg(cpu, EBP as u8, v);
    Ok(())
}

/// BOUND: #BR unless lower <= reg <= upper (signed), the bounds being two operands in memory.
fn bound<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let off = i.ea(cpu);
    let seg = i.seg as usize;
    let lo = W::sext(W::read_mem(cpu, seg, off)?) as i32;
    let hi = W::sext(W::read_mem(cpu, seg, off.wrapping_add(W::BYTES))?) as i32;
    let v = W::sext(W::reg(cpu, i.reg)) as i32;
    if v < lo || v > hi {
        return Err(Exception::new(exception::BR));
    }
    Ok(())
}
