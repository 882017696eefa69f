//! Data movement: MOV (including segment registers and moffs), XCHG, LEA, MOVZX/MOVSX, every
//! PUSH and POP (registers, segments, immediates, memory, PUSHA/POPA, PUSHF/POPF), far-pointer
//! loads (LDS/LES/LSS/LFS/LGS), XLAT, ENTER/LEAVE and BOUND.

use super::counters::Insn;
use super::decode::{undefined, Decoder, Handler, Instr};
use super::exception::{self, Exception, Fault};
use super::flags;
use super::operand::{Address, MemRm, RegRm, Rm, Width, W16, W32, W8};
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
            } else if d.i.op32 {
                lea::<MemRm, W32>
            } else {
                lea::<MemRm, W16>
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

#[inline(always)]
pub(crate) fn mov_rm_r<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = W::reg(cpu, i.reg);
    R::write::<W>(cpu, i, v)
}

#[inline(always)]
pub(crate) fn mov_r_rm<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = R::read::<W>(cpu, i)?;
    W::set_reg(cpu, i.reg, v);
    Ok(())
}

#[inline(always)]
pub(crate) fn mov_r_imm<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    W::set_reg(cpu, i.reg, i.imm);
    Ok(())
}

#[inline(always)]
pub(crate) fn mov_rm_imm<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    R::write::<W>(cpu, i, i.imm)
}

/// MOV m16, Sreg: a memory destination is always 16 bits, whatever the operand size.
fn mov_m_sreg(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::MovFromSreg);
    let v = cpu.segs[i.reg as usize].selector as u32;
    MemRm::write::<W16>(cpu, i, v)
}

fn mov_r16_sreg(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::MovFromSreg);
    let v = cpu.segs[i.reg as usize].selector as u32;
    W16::set_reg(cpu, i.rm, v);
    Ok(())
}

/// MOV r32, Sreg: the P6 zero-extends the selector into the whole register.
fn mov_r32_sreg(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::MovFromSreg);
    cpu.regs[i.rm as usize] = cpu.segs[i.reg as usize].selector as u32;
    Ok(())
}

fn mov_sreg_rm<R: Rm>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::MovToSreg);
    let v = R::read::<W16>(cpu, i)?;
    cpu.load_seg(Segment::from_index(i.reg), v as u16)
}

/// MOV SS: interrupts (and single-step traps) are held off for one instruction so that a
/// following MOV (E)SP completes the stack switch atomically.
fn mov_ss_rm<R: Rm>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::MovToSreg);
    let v = R::read::<W16>(cpu, i)?;
    cpu.load_seg(Segment::SS, v as u16)?;
    cpu.irq_shadow = true;
    cpu.stop_block = true;
    Ok(())
}

/// LEA: the offset at address size, truncated or zero-extended to operand size.
#[inline(always)]
pub(crate) fn lea<M: Address, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let ea = M::offset(cpu, i);
    W::set_reg(cpu, i.reg, ea);
    Ok(())
}

#[inline(always)]
pub(crate) fn movzx_b<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = R::read::<W8>(cpu, i)?;
    W::set_reg(cpu, i.reg, v);
    Ok(())
}

#[inline(always)]
pub(crate) fn movzx_w<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = R::read::<W16>(cpu, i)?;
    W::set_reg(cpu, i.reg, v);
    Ok(())
}

#[inline(always)]
pub(crate) fn movsx_b<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = R::read::<W8>(cpu, i)?;
    W::set_reg(cpu, i.reg, W8::sext(v));
    Ok(())
}

#[inline(always)]
pub(crate) fn movsx_w<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
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
    cpu.count(Insn::PushSreg);
    let v = cpu.segs[i.reg as usize].selector as u32;
    push_w::<W>(cpu, v)
}

fn pop_sreg<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::PopSreg);
    // If the load faults, the run loop puts (E)SP back.
    let v = pop_w::<W>(cpu)?;
    cpu.load_seg(Segment::from_index(i.reg), v as u16)
}

/// POP SS: like MOV SS, holds off interrupts for one instruction.
fn pop_ss<W: Width>(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.count(Insn::PopSreg);
    let v = pop_w::<W>(cpu)?;
    cpu.load_seg(Segment::SS, v as u16)?;
    cpu.irq_shadow = true;
    cpu.stop_block = true;
    Ok(())
}

/// PUSH reg. PUSH (E)SP pushes the value it had before the push (286 and later).
#[inline(always)]
pub(crate) fn push_reg<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = W::reg(cpu, i.reg);
    push_w::<W>(cpu, v)
}

/// POP reg. POP (E)SP loads the popped value, overriding the increment.
#[inline(always)]
pub(crate) fn pop_reg<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
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
    cpu.count(Insn::Pushf);
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
    cpu.count(Insn::Popf);
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
            // The lecture's example: the guest asked to change IF and nothing happened, no
            // trap either.
            if (v ^ cpu.flags.word()) & flags::IF != 0 {
                cpu.counters.popf_if_ignored += 1;
            }
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

/// ENTER size, level. The nesting level is taken mod 32; the enclosing frames are read through
/// (E)BP at the stack's address size. The frame pointer is (E)SP after the first push at the
/// operand size, as the SDM says: a 32-bit ENTER on a 16-bit stack pushes and loads the whole
/// ESP (test386.asm's POST 1A, checked on hardware). (E)BP is written only after every push
/// succeeded (the run loop restores ESP).
fn enter<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let size = i.imm & 0xFFFF;
    let level = i.imm2 & 31;
    let mask = cpu.stack_mask();
    let bp = cpu.regs[EBP];
    push_w::<W>(cpu, bp & W::MASK)?;
    let frame = cpu.regs[ESP] & W::MASK;
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
    W::set_reg(cpu, EBP as u8, frame);
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
    let v = W::sext(W::reg(cpu, i.reg)) as i32;
    // An index below the lower bound is #BR before the upper bound is read (as on this
    // Intel host: an upper bound on a page that is not present does not fault then).
    let lo = W::sext(W::read_mem(cpu, seg, off)?) as i32;
    if v < lo {
        return Err(Exception::new(exception::BR));
    }
    let hi = W::sext(W::read_mem(cpu, seg, off.wrapping_add(W::BYTES))?) as i32;
    if v > hi {
        return Err(Exception::new(exception::BR));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{RunExit, SegCache, ECX, EDI, EDX, ESI};

    const CODE: u32 = 0x1000;
    const SS: usize = Segment::SS as usize;
    /// Physical base of the stack segment in these tests.
    const STACK: u32 = 0x8_0000;

    /// A real-mode CPU running `code` at 0100:0000 with SS at 8000:0000; `big_stack` gives SS a
    /// 32-bit stack pointer and a 4 GiB limit.
    fn cpu_with(code: &[u8], big_stack: bool) -> Cpu {
        let mut cpu = Cpu::with_ram(1 << 21);
        cpu.mem.load(CODE, code);
        cpu.segs[Segment::CS as usize] = SegCache::real((CODE >> 4) as u16);
        cpu.segs[SS] = SegCache::real((STACK >> 4) as u16);
        if big_stack {
            cpu.segs[SS].big = true;
            cpu.segs[SS].limit = u32::MAX;
            cpu.segs[SS].compute_ranges();
        }
        cpu.regs[ESP] = 0x1000;
        cpu.eip = 0;
        cpu
    }

    fn run(cpu: &mut Cpu) {
        assert_eq!(cpu.run(1000), RunExit::Halted);
    }

    fn stack_u32(cpu: &Cpu, off: u32) -> u32 {
        let a = (STACK + off) as usize;
        u32::from_le_bytes(cpu.mem.ram[a..a + 4].try_into().unwrap())
    }

    fn stack_u16(cpu: &Cpu, off: u32) -> u16 {
        let a = (STACK + off) as usize;
        u16::from_le_bytes(cpu.mem.ram[a..a + 2].try_into().unwrap())
    }

    #[test]
    fn pushad_popad_round_trip() {
        // pushad; (clobber) xor-free: mov eax,0 ; popad ; hlt
        let mut cpu = cpu_with(
            &[0x66, 0x60, 0x66, 0xB8, 0, 0, 0, 0, 0x66, 0x61, 0xF4],
            false,
        );
        let vals = [0x1111_1111, 0x2222_2222, 0x3333_3333, 0x4444_4444];
        cpu.regs[..4].copy_from_slice(&vals);
        cpu.regs[EBP] = 0x5555_5555;
        cpu.regs[ESI] = 0x6666_6666;
        cpu.regs[EDI] = 0x7777_7777;
        run(&mut cpu);
        // Saved order: EAX at the top of the frame, EDI at the bottom; ESP as before PUSHAD.
        assert_eq!(stack_u32(&cpu, 0x1000 - 4), 0x1111_1111);
        assert_eq!(stack_u32(&cpu, 0x1000 - 20), 0x1000);
        assert_eq!(stack_u32(&cpu, 0x1000 - 32), 0x7777_7777);
        assert_eq!(&cpu.regs[..4], &vals);
        assert_eq!(cpu.regs[ESP], 0x1000);
        assert_eq!(cpu.regs[EDI], 0x7777_7777);
    }

    #[test]
    fn popa_skips_saved_sp() {
        let mut cpu = cpu_with(&[0x61, 0xF4], false);
        for k in 0..8u32 {
            let a = (STACK + 0x1000 + 2 * k) as usize;
            cpu.mem.ram[a..a + 2].copy_from_slice(&(0x100 + k as u16).to_le_bytes());
        }
        run(&mut cpu);
        // DI SI BP (SP) BX DX CX AX from low to high addresses.
        assert_eq!(cpu.regs[EDI], 0x100);
        assert_eq!(cpu.regs[ESI], 0x101);
        assert_eq!(cpu.regs[EBP], 0x102);
        assert_eq!(cpu.regs[EBX], 0x104);
        assert_eq!(cpu.regs[EDX], 0x105);
        assert_eq!(cpu.regs[ECX], 0x106);
        assert_eq!(cpu.regs[EAX], 0x107);
        assert_eq!(cpu.regs[ESP], 0x1010);
    }

    #[test]
    fn enter_leave_32bit_nested() {
        // enter 0x10, 3 (o32) ; leave (o32) ; hlt, on a 32-bit stack
        let mut cpu = cpu_with(&[0x66, 0xC8, 0x10, 0x00, 0x03, 0x66, 0xC9, 0xF4], true);
        cpu.regs[ESP] = 0x2000;
        cpu.regs[EBP] = 0x3000;
        // The enclosing frames' pointers the CPU copies: [EBP-4], [EBP-8].
        let a = (STACK + 0x3000 - 8) as usize;
        cpu.mem.ram[a..a + 8].copy_from_slice(&[0xB2, 0, 0, 0, 0xA1, 0, 0, 0]);
        // Stop after ENTER to look at the frame.
        cpu.mem.load(CODE + 5, &[0xF4]);
        run(&mut cpu);
        let frame = 0x2000 - 4;
        assert_eq!(cpu.regs[EBP], frame);
        assert_eq!(stack_u32(&cpu, 0x2000 - 4), 0x3000);
        assert_eq!(stack_u32(&cpu, 0x2000 - 8), 0xA1);
        assert_eq!(stack_u32(&cpu, 0x2000 - 12), 0xB2);
        assert_eq!(stack_u32(&cpu, 0x2000 - 16), frame);
        assert_eq!(cpu.regs[ESP], 0x2000 - 16 - 0x10);
        // Now LEAVE.
        cpu.mem.load(CODE + 5, &[0x66]);
        cpu.eip = 5;
        cpu.halted = false;
        run(&mut cpu);
        assert_eq!(cpu.regs[EBP], 0x3000);
        assert_eq!(cpu.regs[ESP], 0x2000);
    }

    /// A 32-bit ENTER on a 16-bit stack: the enclosing frame is read at [BP-4], and the frame
    /// pointer pushed and loaded is the whole ESP, upper half included (test386.asm, POST 1A).
    #[test]
    fn enter_32bit_on_a_16bit_stack_uses_the_whole_esp_as_frame() {
        // enter 8, 2 (o32) ; hlt, on a 16-bit stack
        let mut cpu = cpu_with(&[0x66, 0xC8, 0x08, 0x00, 0x02, 0xF4], false);
        cpu.regs[ESP] = 0x0001_2000;
        cpu.regs[EBP] = 0x0005_3000;
        let a = (STACK + 0x3000 - 4) as usize;
        cpu.mem.ram[a..a + 4].copy_from_slice(&0xC3u32.to_le_bytes());
        run(&mut cpu);
        assert_eq!(stack_u32(&cpu, 0x2000 - 4), 0x0005_3000);
        assert_eq!(stack_u32(&cpu, 0x2000 - 8), 0xC3);
        assert_eq!(stack_u32(&cpu, 0x2000 - 12), 0x0001_1FFC);
        assert_eq!(cpu.regs[EBP], 0x0001_1FFC);
        assert_eq!(cpu.regs[ESP], 0x0001_1FEC);
    }

    #[test]
    fn enter_16bit_level0_and_leave() {
        let mut cpu = cpu_with(&[0xC8, 0x08, 0x00, 0x00, 0xC9, 0xF4], false);
        cpu.regs[EBP] = 0xABCD_1234;
        cpu.mem.load(CODE + 4, &[0xF4]);
        run(&mut cpu);
        assert_eq!(stack_u16(&cpu, 0xFFE), 0x1234);
        assert_eq!(cpu.regs[EBP], 0xABCD_0FFE);
        assert_eq!(cpu.regs[ESP], 0xFFE - 8);
        cpu.mem.load(CODE + 4, &[0xC9]);
        cpu.eip = 4;
        cpu.halted = false;
        run(&mut cpu);
        assert_eq!(cpu.regs[EBP], 0xABCD_1234);
        assert_eq!(cpu.regs[ESP], 0x1000);
    }

    #[test]
    fn push_esp_pushes_old_value_and_pop_esp_based_memory_uses_new_esp() {
        // push esp (o32) ; pop dword [esp] (o32, a32: 8F 04 24) ; hlt
        let mut cpu = cpu_with(&[0x66, 0x54, 0x66, 0x67, 0x8F, 0x04, 0x24, 0xF4], true);
        run(&mut cpu);
        assert_eq!(stack_u32(&cpu, 0x1000 - 4), 0x1000);
        // The popped value lands at the post-pop ESP (0x1000).
        assert_eq!(stack_u32(&cpu, 0x1000), 0x1000);
        assert_eq!(cpu.regs[ESP], 0x1000);
    }

    #[test]
    fn push_sreg_32bit_writes_zero_extended_dword() {
        let mut cpu = cpu_with(&[0x66, 0x0E, 0xF4], false);
        cpu.mem.load(STACK + 0x1000 - 4, &[0xFF; 4]);
        run(&mut cpu);
        assert_eq!(stack_u32(&cpu, 0x1000 - 4), 0x100);
        assert_eq!(cpu.regs[ESP], 0x1000 - 4);
    }

    #[test]
    fn popf_in_real_mode_sets_iopl_but_not_vm() {
        // popfd ; hlt
        let mut cpu = cpu_with(&[0x66, 0x9D, 0xF4], false);
        let img = flags::VM | flags::IOPL | flags::DF | flags::CF | flags::RF;
        cpu.mem.load(STACK + 0x1000, &img.to_le_bytes());
        run(&mut cpu);
        let w = cpu.flags.word();
        assert_eq!(w & flags::IOPL, flags::IOPL);
        assert!(w & flags::VM == 0 && w & flags::RF == 0);
        assert!(cpu.flags.cf() && cpu.flags.sys(flags::DF));
    }

    #[test]
    fn mov_sreg_to_r32_zero_extends_and_to_memory_writes_a_word() {
        // mov eax, ds (o32 8C D8) ; mov [0x10], ds (o32 8C 1E 10 00) ; hlt
        let mut cpu = cpu_with(
            &[0x66, 0x8C, 0xD8, 0x66, 0x8C, 0x1E, 0x10, 0x00, 0xF4],
            false,
        );
        cpu.segs[Segment::DS as usize] = SegCache::real(0x2345);
        cpu.regs[EAX] = 0xFFFF_FFFF;
        cpu.mem.load(0x23450 + 0x10, &[0xAA; 4]);
        run(&mut cpu);
        assert_eq!(cpu.regs[EAX], 0x2345);
        assert_eq!(&cpu.mem.ram[0x23460..0x23464], &[0x45, 0x23, 0xAA, 0xAA]);
    }

    #[test]
    fn lea_truncates_to_operand_size() {
        // lea ax, [ebx+ecx*4+0x10] (a32) ; lea eax16: lea edx, [bx+si] (o32) ; hlt
        let mut cpu = cpu_with(
            &[0x67, 0x8D, 0x44, 0x8B, 0x10, 0x66, 0x8D, 0x10, 0xF4],
            false,
        );
        cpu.regs[EAX] = 0xDEAD_0000;
        cpu.regs[EBX] = 0x0001_FFF0;
        cpu.regs[ECX] = 1;
        cpu.regs[ESI] = 0x20;
        run(&mut cpu);
        assert_eq!(cpu.regs[EAX], 0xDEAD_0004);
        // 16-bit address 0xFFF0 + 0x20 wraps to 0x10, zero-extended into EDX.
        assert_eq!(cpu.regs[EDX], 0x10);
    }

    #[test]
    fn movsx_movzx_and_xchg() {
        // movsx eax, bl ; movzx ecx, bx ; xchg dx, si ; hlt
        let mut cpu = cpu_with(
            &[
                0x66, 0x0F, 0xBE, 0xC3, 0x66, 0x0F, 0xB7, 0xCB, 0x87, 0xD6, 0xF4,
            ],
            false,
        );
        cpu.regs[EBX] = 0x1234_8081;
        cpu.regs[EDX] = 0xAAAA_0001;
        cpu.regs[ESI] = 0xBBBB_0002;
        run(&mut cpu);
        assert_eq!(cpu.regs[EAX], 0xFFFF_FF81);
        assert_eq!(cpu.regs[ECX], 0x8081);
        assert_eq!(cpu.regs[EDX], 0xAAAA_0002);
        assert_eq!(cpu.regs[ESI], 0xBBBB_0001);
    }

    #[test]
    fn lss_32bit_loads_offset_and_selector() {
        // lss esp, [0x20] (o32 0F B2 26 20 00) ; hlt
        let mut cpu = cpu_with(&[0x66, 0x0F, 0xB2, 0x26, 0x20, 0x00, 0xF4], false);
        cpu.mem.load(0x20, &[0x78, 0x56, 0x34, 0x12, 0x00, 0x30]);
        run(&mut cpu);
        assert_eq!(cpu.regs[ESP], 0x1234_5678);
        assert_eq!(cpu.segs[SS].selector, 0x3000);
    }
}
