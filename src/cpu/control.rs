//! Control transfer: jumps, calls, returns, loops, INT/INTO/INT3/IRET, HLT, CLI/STI/CLD/STD,
//! IN/OUT and the FF group (indirect calls and jumps, PUSH r/m).
//!
//! Near transfers check the target against the CS limit before changing anything (#GP(0)).
//! Far transfers in real and V86 mode are done here; in protected mode they go to the
//! descriptor machinery in `protected.rs`.

use super::counters::Insn;
use super::data::{pop_w, push_w};
use super::decode::{undefined, Decoder, Handler, Instr};
use super::exception::{self, Exception, Fault};
use super::flags;
use super::interrupt::IntKind;
use super::operand::{MemRm, Rm, Width, W16, W32, W8};
use super::seg::Segment;
use super::{Cpu, EAX, ECX, EDX, ESP};
use crate::{by_v, rm_v};

const CS: usize = Segment::CS as usize;

/// Pick `f::<W, A>` by operand size (W) and address size (A).
macro_rules! by_va {
    ($d:expr, $f:ident $(, $extra:tt)*) => {
        match ($d.i.op32, $d.i.addr32) {
            (false, false) => $f::<W16, W16 $(, $extra)*> as Handler,
            (false, true) => $f::<W16, W32 $(, $extra)*>,
            (true, false) => $f::<W32, W16 $(, $extra)*>,
            (true, true) => $f::<W32, W32 $(, $extra)*>,
        }
    };
}

/// LOOP variants (the low two bits of E0-E3).
const LOOPNE: u8 = 0;
const LOOPE: u8 = 1;
const LOOP: u8 = 2;
const JCXZ: u8 = 3;

/// Decode the opcodes of this group.
pub fn decode(d: &mut Decoder, op: u16) -> Fault<Handler> {
    Ok(match op {
        // Jcc rel8 / rel16/32: conditional, so the block need not end here
        0x70..=0x7F => {
            d.i.reg = (op & 0xF) as u8;
            d.imm8s()?;
            by_v!(d, jcc)
        }
        0x0F80..=0x0F8F => {
            d.i.reg = (op & 0xF) as u8;
            d.rel_v()?;
            by_v!(d, jcc)
        }
        0xEB => {
            d.imm8s()?;
            d.end_block();
            by_v!(d, jmp_rel)
        }
        0xE9 => {
            d.rel_v()?;
            d.end_block();
            by_v!(d, jmp_rel)
        }
        0xE8 => {
            d.rel_v()?;
            d.end_block();
            by_v!(d, call_rel)
        }
        // JMP/CALL ptr16:16/32
        0xEA | 0x9A => {
            d.imm_v()?;
            d.i.imm2 = d.u16()? as u32;
            d.end_block();
            match (op, d.i.op32) {
                (0xEA, false) => jmp_far_imm::<W16> as Handler,
                (0xEA, true) => jmp_far_imm::<W32>,
                (_, false) => call_far_imm::<W16>,
                (_, true) => call_far_imm::<W32>,
            }
        }
        0xC3 => {
            d.end_block();
            by_v!(d, ret_near)
        }
        0xC2 => {
            d.imm16()?;
            d.end_block();
            by_v!(d, ret_near)
        }
        0xCB => {
            d.end_block();
            by_v!(d, ret_far)
        }
        0xCA => {
            d.imm16()?;
            d.end_block();
            by_v!(d, ret_far)
        }
        // LOOPNE, LOOPE, LOOP, JCXZ/JECXZ: the count register follows the address size
        0xE0..=0xE3 => {
            d.imm8s()?;
            match (op & 3) as u8 {
                LOOPNE => by_va!(d, loop_cc, LOOPNE),
                LOOPE => by_va!(d, loop_cc, LOOPE),
                LOOP => by_va!(d, loop_cc, LOOP),
                _ => by_va!(d, loop_cc, JCXZ),
            }
        }
        0xCC => {
            d.end_block();
            int3
        }
        0xCD => {
            d.imm8()?;
            d.end_block();
            int_n
        }
        0xCE => into,
        0xCF => {
            d.end_block();
            by_v!(d, iret)
        }
        // IN/OUT with an immediate port or DX
        0xE4 => {
            d.imm8()?;
            in_imm::<W8>
        }
        0xE5 => {
            d.imm8()?;
            by_v!(d, in_imm)
        }
        0xE6 => {
            d.imm8()?;
            out_imm::<W8>
        }
        0xE7 => {
            d.imm8()?;
            by_v!(d, out_imm)
        }
        0xEC => in_dx::<W8>,
        0xED => by_v!(d, in_dx),
        0xEE => out_dx::<W8>,
        0xEF => by_v!(d, out_dx),
        0xF4 => {
            d.end_block();
            hlt
        }
        0xFA => cli,
        0xFB => sti,
        0xFC => clear_df,
        0xFD => set_df,
        0xFF => {
            d.modrm()?;
            match d.i.reg {
                // INC/DEC Ev belong with the ALU.
                0 | 1 => super::arith::decode_ff_incdec(d, d.i.reg),
                2 => {
                    d.end_block();
                    rm_v!(d, call_ind)
                }
                3 if d.is_reg() => undefined(),
                3 => {
                    d.end_block();
                    by_v!(d, call_far_ind)
                }
                4 => {
                    d.end_block();
                    rm_v!(d, jmp_ind)
                }
                5 if d.is_reg() => undefined(),
                5 => {
                    d.end_block();
                    by_v!(d, jmp_far_ind)
                }
                6 => rm_v!(d, push_rm),
                _ => undefined(),
            }
        }
        _ => undefined(),
    })
}

// ---- Near transfers ----

/// Jump to `target` (truncated to the operand size) if it lies within CS.
#[inline(always)]
fn jump_near<W: Width>(cpu: &mut Cpu, target: u32) -> Fault {
    let t = target & W::MASK;
    if t > cpu.segs[CS].limit {
        return Err(Exception::gp(0));
    }
    cpu.eip = t;
    Ok(())
}

#[inline(always)]
pub(crate) fn jcc<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    if cpu.flags.cond(i.reg) {
        jump_near::<W>(cpu, cpu.eip.wrapping_add(i.imm))
    } else {
        Ok(())
    }
}

#[inline(always)]
pub(crate) fn jmp_rel<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    jump_near::<W>(cpu, cpu.eip.wrapping_add(i.imm))
}

/// Push the return address, then jump; the target is checked first so a bad target leaves the
/// stack untouched.
#[inline(always)]
fn call_near<W: Width>(cpu: &mut Cpu, target: u32) -> Fault {
    let t = target & W::MASK;
    if t > cpu.segs[CS].limit {
        return Err(Exception::gp(0));
    }
    let ret = cpu.eip;
    push_w::<W>(cpu, ret)?;
    cpu.eip = t;
    Ok(())
}

#[inline(always)]
pub(crate) fn call_rel<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    call_near::<W>(cpu, cpu.eip.wrapping_add(i.imm))
}

fn call_ind<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let t = R::read::<W>(cpu, i)?;
    call_near::<W>(cpu, t)
}

fn jmp_ind<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let t = R::read::<W>(cpu, i)?;
    jump_near::<W>(cpu, t)
}

/// RET [imm16]: pop the return address, then release imm16 bytes of parameters.
#[inline(always)]
pub(crate) fn ret_near<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let t = pop_w::<W>(cpu)?;
    if t > cpu.segs[CS].limit {
        return Err(Exception::gp(0));
    }
    sp_add(cpu, i.imm);
    cpu.eip = t;
    Ok(())
}

/// (E)SP changed by `delta` at the stack's address size.
#[inline(always)]
fn sp_add(cpu: &mut Cpu, delta: u32) {
    let mask = cpu.stack_mask();
    cpu.regs[ESP] = (cpu.regs[ESP] & !mask) | (cpu.regs[ESP].wrapping_add(delta) & mask);
}

/// PUSH r/m: an (E)SP-based operand is read before the push.
fn push_rm<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = R::read::<W>(cpu, i)?;
    push_w::<W>(cpu, v)
}

/// LOOP/LOOPE/LOOPNE/JCXZ: `A` is the address size (CX or ECX), `W` the operand size (the
/// width of the new EIP).
fn loop_cc<W: Width, A: Width, const KIND: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let take = if KIND == JCXZ {
        cpu.regs[ECX] & A::MASK == 0
    } else {
        let count = cpu.regs[ECX].wrapping_sub(1) & A::MASK;
        A::set_reg(cpu, ECX as u8, count);
        count != 0
            && match KIND {
                LOOPNE => !cpu.flags.zf(),
                LOOPE => cpu.flags.zf(),
                _ => true,
            }
    };
    if take {
        jump_near::<W>(cpu, cpu.eip.wrapping_add(i.imm))
    } else {
        Ok(())
    }
}

// ---- Far transfers ----

/// Real or V86 mode far jump: CS keeps its limit (unreal mode survives), so the offset is checked
/// against it before anything changes.
fn far_jump_real(cpu: &mut Cpu, selector: u16, offset: u32) -> Fault {
    if offset > cpu.segs[CS].limit {
        return Err(Exception::gp(0));
    }
    cpu.load_seg(Segment::CS, selector)?;
    cpu.eip = offset;
    Ok(())
}

/// JMP/CALL to `selector:offset` in any mode. EIP holds the return address.
#[inline(always)]
fn far_transfer<W: Width>(cpu: &mut Cpu, selector: u16, offset: u32, call: bool) -> Fault {
    let op32 = W::BYTES == 4;
    if cpu.protected_mode() && !cpu.v86_mode() {
        return if call {
            cpu.far_call_protected(selector, offset, op32)
        } else {
            cpu.far_jump_protected(selector, offset, op32)
        };
    }
    if offset > cpu.segs[CS].limit {
        return Err(Exception::gp(0));
    }
    if call {
        let cs = cpu.segs[CS].selector as u32;
        let ret = cpu.eip;
        push_w::<W>(cpu, cs)?;
        push_w::<W>(cpu, ret)?;
    }
    far_jump_real(cpu, selector, offset)
}

fn jmp_far_imm<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::JmpFar);
    far_transfer::<W>(cpu, i.imm2 as u16, i.imm, false)
}

fn call_far_imm<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::CallFar);
    far_transfer::<W>(cpu, i.imm2 as u16, i.imm, true)
}

/// Read an m16:16 / m16:32 far pointer: (offset, selector).
#[inline(always)]
fn read_far_pointer<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault<(u32, u16)> {
    let off = i.ea(cpu);
    let seg = i.seg as usize;
    let o = MemRm::read::<W>(cpu, i)?;
    let s = cpu.read::<2>(seg, off.wrapping_add(W::BYTES))? as u16;
    Ok((o, s))
}

fn call_far_ind<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::CallFar);
    let (o, s) = read_far_pointer::<W>(cpu, i)?;
    far_transfer::<W>(cpu, s, o, true)
}

fn jmp_far_ind<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::JmpFar);
    let (o, s) = read_far_pointer::<W>(cpu, i)?;
    far_transfer::<W>(cpu, s, o, false)
}

/// RETF [imm16].
fn ret_far<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::RetFar);
    if cpu.protected_mode() && !cpu.v86_mode() {
        return cpu.far_return_protected(W::BYTES == 4, i.imm);
    }
    let offset = pop_w::<W>(cpu)?;
    let selector = pop_w::<W>(cpu)? as u16;
    if offset > cpu.segs[CS].limit {
        return Err(Exception::gp(0));
    }
    sp_add(cpu, i.imm);
    cpu.load_seg(Segment::CS, selector)?;
    cpu.eip = offset;
    Ok(())
}

// ---- Interrupts ----

/// INT3: a trap; not IOPL-sensitive in V86 mode.
fn int3(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.counters.software[usize::from(exception::BP)] += 1;
    cpu.interrupt(exception::BP, IntKind::SoftwareTrap, None)
}

/// INT n: in V86 mode without VME, IOPL < 3 faults.
fn int_n(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::IntN);
    if cpu.v86_mode() && cpu.flags.iopl() < 3 {
        return Err(Exception::gp(0));
    }
    cpu.counters.software[usize::from(i.imm as u8)] += 1;
    cpu.interrupt(i.imm as u8, IntKind::Software, None)
}

/// INTO: INT 4 if OF is set.
fn into(cpu: &mut Cpu, _: &Instr) -> Fault {
    if cpu.flags.of() {
        cpu.counters.software[usize::from(exception::OF)] += 1;
        cpu.interrupt(exception::OF, IntKind::SoftwareTrap, None)
    } else {
        Ok(())
    }
}

/// Flags a real-mode IRETD takes from the stack (VM, VIF, VIP stay).
const IRET32_REAL_MASK: u32 = flags::ARITH
    | flags::TF
    | flags::IF
    | flags::DF
    | flags::IOPL
    | flags::NT
    | flags::RF
    | flags::AC
    | flags::ID;

/// IRET/IRETD. Real mode: pop (E)IP, CS, (E)FLAGS; every flag in the popped word is taken
/// (IOPL and NT included, as on the 386). V86 mode: IOPL < 3 faults; otherwise the same but IOPL
/// is kept. Protected mode: `iret_protected`.
fn iret<W: Width>(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.count(Insn::Iret);
    let v86 = cpu.v86_mode();
    if cpu.protected_mode() && !v86 {
        return cpu.iret_protected(W::BYTES == 4);
    }
    if v86 && cpu.flags.iopl() < 3 {
        return Err(Exception::gp(0));
    }
    let offset = pop_w::<W>(cpu)?;
    let selector = pop_w::<W>(cpu)? as u16;
    let fl = pop_w::<W>(cpu)?;
    if offset > cpu.segs[CS].limit {
        return Err(Exception::gp(0));
    }
    cpu.load_seg(Segment::CS, selector)?;
    cpu.eip = offset;
    let mut mask = IRET32_REAL_MASK & W::MASK;
    if v86 {
        mask &= !flags::IOPL;
    }
    cpu.flags.set_masked(fl, mask);
    cpu.stop_block = true;
    Ok(())
}

// ---- Port I/O ----

#[inline(always)]
fn port_read<W: Width>(cpu: &mut Cpu, port: u16) -> Fault {
    cpu.count(Insn::In);
    cpu.check_io_permission(port, W::BYTES as u8)?;
    let v = cpu.port_in(port, W::BYTES as u8);
    W::set_reg(cpu, EAX as u8, v);
    Ok(())
}

#[inline(always)]
fn port_write<W: Width>(cpu: &mut Cpu, port: u16) -> Fault {
    cpu.count(Insn::Out);
    cpu.check_io_permission(port, W::BYTES as u8)?;
    let v = W::reg(cpu, EAX as u8);
    cpu.port_out(port, W::BYTES as u8, v);
    Ok(())
}

fn in_imm<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    port_read::<W>(cpu, i.imm as u16)
}

fn out_imm<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    port_write::<W>(cpu, i.imm as u16)
}

fn in_dx<W: Width>(cpu: &mut Cpu, _: &Instr) -> Fault {
    port_read::<W>(cpu, cpu.regs[EDX] as u16)
}

fn out_dx<W: Width>(cpu: &mut Cpu, _: &Instr) -> Fault {
    port_write::<W>(cpu, cpu.regs[EDX] as u16)
}

// ---- HLT and flag control ----

/// HLT: privileged; stops until an interrupt.
fn hlt(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.count(Insn::Hlt);
    if cpu.protected_mode() && cpu.cpl != 0 {
        return Err(Exception::gp(0));
    }
    cpu.halted = true;
    cpu.stop_block = true;
    Ok(())
}

/// May CLI/STI change IF? Real mode: yes. V86 (no VME): IOPL must be 3. Protected: CPL <= IOPL.
#[inline(always)]
fn if_writable(cpu: &Cpu) -> bool {
    if cpu.real_mode() {
        true
    } else if cpu.v86_mode() {
        cpu.flags.iopl() == 3
    } else {
        cpu.cpl <= cpu.flags.iopl()
    }
}

fn cli(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.count(Insn::Cli);
    if !if_writable(cpu) {
        return Err(Exception::gp(0));
    }
    cpu.flags.set(flags::IF, false);
    Ok(())
}

/// STI: when it enables interrupts, they are recognised only after the next instruction.
fn sti(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.count(Insn::Sti);
    if !if_writable(cpu) {
        return Err(Exception::gp(0));
    }
    if !cpu.flags.sys(flags::IF) {
        cpu.flags.set(flags::IF, true);
        cpu.irq_shadow = true;
        cpu.stop_block = true;
    }
    Ok(())
}

fn clear_df(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.flags.set(flags::DF, false);
    Ok(())
}

fn set_df(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.flags.set(flags::DF, true);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::seg::{ACC_ACCESSED, ACC_CODE, ACC_P, ACC_RW, ACC_S};
    use crate::cpu::{RunExit, SegCache};

    const CODE: u32 = 0x1000;
    const SS: usize = Segment::SS as usize;
    const STACK: u32 = 0x8_0000;

    fn cpu_with(code: &[u8]) -> Cpu {
        let mut cpu = Cpu::with_ram(1 << 21);
        cpu.mem.load(CODE, code);
        cpu.segs[CS] = SegCache::real((CODE >> 4) as u16);
        cpu.segs[SS] = SegCache::real((STACK >> 4) as u16);
        cpu.regs[ESP] = 0x1000;
        cpu.eip = 0;
        cpu
    }

    fn run(cpu: &mut Cpu) {
        assert_eq!(cpu.run(10_000), RunExit::Halted);
    }

    fn stack_u32(cpu: &Cpu, off: u32) -> u32 {
        let a = (STACK + off) as usize;
        u32::from_le_bytes(cpu.mem.ram[a..a + 4].try_into().unwrap())
    }

    /// Real mode after protected mode: CS's cache still says "code" until a real-mode far jump
    /// reloads it, which makes it a writable data segment (its limit kept), so a store through
    /// CS works, as boot loaders (ISOLINUX) expect.
    #[test]
    fn a_real_mode_far_jump_makes_cs_writable_again() {
        #[rustfmt::skip]
        let mut cpu = cpu_with(&[
            0xEA, 0x05, 0x00, 0x00, 0x01,   // 0000: jmp 0100:0005 (linear 0x1005)
            0x2E, 0xA3, 0x00, 0x02,         // 0005: mov cs:[0x200], ax
            0xF4,                           // 0009: hlt
        ]);
        cpu.segs[CS].access = ACC_P | ACC_S | ACC_CODE | ACC_RW | ACC_ACCESSED;
        cpu.segs[CS].compute_ranges();
        assert!(!cpu.segs[CS].can_write(0x200, 2), "a code segment first");
        cpu.regs[EAX] = 0xBEEF;
        run(&mut cpu);
        assert_eq!(cpu.mem.ram[0x1200..0x1202], [0xEF, 0xBE]);
        assert_eq!(cpu.segs[CS].limit, 0xFFFF);
    }

    #[test]
    fn call_ret_32bit_operand() {
        // call rel32 (o32) to 0x20 ; hlt ; ... 0x20: ret (o32)
        let mut cpu = cpu_with(&[0x66, 0xE8, 0x19, 0, 0, 0, 0xF4]);
        cpu.mem.load(CODE + 0x20, &[0x66, 0xC3]);
        cpu.mem.load(CODE + 0x20 - 1, &[0x90]);
        cpu.regs[ESP] = 0x1000;
        // Stop at the callee to look at the pushed dword.
        cpu.mem.load(CODE + 0x1F, &[0x90]);
        run(&mut cpu);
        assert_eq!(cpu.eip, 7);
        assert_eq!(stack_u32(&cpu, 0x1000 - 4), 6);
        assert_eq!(cpu.regs[ESP], 0x1000);
    }

    #[test]
    fn near_jump_past_cs_limit_faults_before_pushing() {
        // call 0x9000 with CS limit 0x1FFF: #GP, handled by a HLT at 0000:0500.
        let mut cpu = cpu_with(&[0xE8, 0xFD, 0x8F, 0xF4]);
        cpu.mem.load(13 * 4, &[0x00, 0x05, 0x00, 0x00]);
        cpu.mem.load(0x500, &[0xF4]);
        cpu.segs[CS].limit = 0x1FFF;
        cpu.segs[CS].compute_ranges();
        run(&mut cpu);
        assert_eq!(cpu.segs[CS].selector, 0);
        // Only the exception frame (6 bytes) was pushed; its IP is the CALL.
        assert_eq!(cpu.regs[ESP], 0x1000 - 6);
        assert_eq!(stack_u32(&cpu, 0x1000 - 6) & 0xFFFF, 0);
    }

    #[test]
    fn loop_with_32bit_address_size_uses_ecx() {
        // l: inc-free loop: loop l (a32) ; hlt
        let mut cpu = cpu_with(&[0x67, 0xE2, 0xFD, 0xF4]);
        cpu.regs[ECX] = 0x1_0003;
        assert_eq!(cpu.run(1_000_000), RunExit::Halted);
        assert_eq!(cpu.regs[ECX], 0);
        assert_eq!(cpu.instructions, 0x1_0003 + 1);
    }

    #[test]
    fn loop_with_16bit_address_size_uses_cx_only() {
        let mut cpu = cpu_with(&[0xE2, 0xFE, 0xF4]);
        cpu.regs[ECX] = 0x5_0003;
        run(&mut cpu);
        assert_eq!(cpu.regs[ECX], 0x5_0000);
    }

    #[test]
    fn jecxz_tests_the_whole_register() {
        // jecxz +1 (a32) ; hlt ; hlt
        let mut cpu = cpu_with(&[0x67, 0xE3, 0x01, 0xF4, 0xF4]);
        cpu.regs[ECX] = 0x1_0000;
        run(&mut cpu);
        assert_eq!(cpu.eip, 4);
        let mut cpu = cpu_with(&[0xE3, 0x01, 0xF4, 0xF4]);
        cpu.regs[ECX] = 0x1_0000;
        run(&mut cpu);
        assert_eq!(cpu.eip, 4);
    }

    #[test]
    fn int_and_iretd_round_trip_in_real_mode() {
        // int 0x21 ; hlt   with the handler: iretd frame built by hand is not needed: the
        // handler does a 16-bit IRET.
        let mut cpu = cpu_with(&[0xCD, 0x21, 0xF4]);
        cpu.mem.load(0x21 * 4, &[0x00, 0x06, 0x00, 0x00]);
        cpu.mem.load(0x600, &[0xCF]);
        cpu.flags.set(flags::IF, true);
        cpu.flags.set(flags::CF, true);
        run(&mut cpu);
        assert_eq!(cpu.eip, 3);
        assert_eq!(cpu.segs[CS].selector, 0x100);
        assert!(cpu.flags.sys(flags::IF) && cpu.flags.cf());
        assert_eq!(cpu.regs[ESP], 0x1000);
    }

    #[test]
    fn iretd_in_real_mode_pops_32bit_frame_and_sets_iopl() {
        let mut cpu = cpu_with(&[0x66, 0xCF]);
        cpu.mem.load(0x2000, &[0xF4]);
        let frame: [u32; 3] = [0x10, 0x100, flags::IOPL | flags::NT | flags::VM | 0x2];
        for (k, v) in frame.iter().enumerate() {
            cpu.mem
                .load(STACK + 0x1000 + 4 * k as u32, &v.to_le_bytes());
        }
        // CS 0x100 : 0x10 is linear 0x1010; put a HLT there.
        cpu.mem.load(0x1010, &[0xF4]);
        run(&mut cpu);
        assert_eq!(cpu.eip, 0x11);
        assert_eq!(cpu.flags.iopl(), 3);
        assert!(cpu.flags.sys(flags::NT) && !cpu.v86_mode());
        assert_eq!(cpu.regs[ESP], 0x100C);
    }

    #[test]
    fn far_call_and_retf_32bit_real_mode() {
        // call far 0x0200:0x0004 (o32) ; hlt ; at 0x2004: retf (o32)
        let mut cpu = cpu_with(&[0x66, 0x9A, 0x04, 0, 0, 0, 0x00, 0x02, 0xF4]);
        cpu.mem.load(0x2004, &[0x66, 0xCB]);
        run(&mut cpu);
        assert_eq!(cpu.eip, 9);
        assert_eq!(cpu.segs[CS].selector, 0x100);
        assert_eq!(stack_u32(&cpu, 0x1000 - 4), 0x100);
        assert_eq!(stack_u32(&cpu, 0x1000 - 8), 8);
        assert_eq!(cpu.regs[ESP], 0x1000);
    }

    #[test]
    fn ret_imm_releases_parameters() {
        let mut cpu = cpu_with(&[0xC2, 0x06, 0x00]);
        cpu.mem.load(STACK + 0x1000, &[0x10, 0x00]);
        cpu.mem.load(CODE + 0x10, &[0xF4]);
        run(&mut cpu);
        assert_eq!(cpu.regs[ESP], 0x1008);
        assert_eq!(cpu.eip, 0x11);
    }

    #[test]
    fn sti_sets_if() {
        let mut cpu = cpu_with(&[0xFB, 0xFA, 0xFB, 0xF4]);
        run(&mut cpu);
        assert!(cpu.flags.sys(flags::IF));
    }

    #[test]
    fn jmp_far_indirect_m16_32() {
        // jmp far [0x40] (o32: FF 2E 40 00)
        let mut cpu = cpu_with(&[0x66, 0xFF, 0x2E, 0x40, 0x00]);
        cpu.mem.load(0x40, &[0x08, 0, 0, 0, 0x00, 0x03]);
        cpu.mem.load(0x3008, &[0xF4]);
        run(&mut cpu);
        assert_eq!(cpu.segs[CS].selector, 0x300);
        assert_eq!(cpu.eip, 9);
    }
}
