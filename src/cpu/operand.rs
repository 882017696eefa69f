//! Operand access specialised at decode time.
//!
//! Handlers are generic over a [`Width`] (8, 16 or 32 bits) and an [`Rm`] form (register or
//! memory); the decoder picks the instantiation (see the `rm_v!`/`rm_b!`/`by_v!` macros), so
//! the hot path never asks "is this a register?" or "which size?" at run time.

use super::decode::Instr;
use super::exception::Fault;
use super::{Cpu, REG_SLOTS};

/// An operand width.
pub trait Width: 'static {
    const BITS: u32;
    const BYTES: u32;
    /// All ones at this width.
    const MASK: u32;
    /// The sign bit at this width.
    const SIGN: u32;
    /// Read general register `r` at this width (for bytes: AL,CL,DL,BL,AH,CH,DH,BH).
    fn reg(cpu: &Cpu, r: u8) -> u32;
    /// Write general register `r` at this width (upper bits of the 32-bit register are kept).
    /// `r` is masked to the eight registers, which also spares the bounds check; the zero slots
    /// past them are never written.
    fn set_reg(cpu: &mut Cpu, r: u8, v: u32);
    /// Read memory at `seg:off`.
    fn read_mem(cpu: &mut Cpu, seg: usize, off: u32) -> Fault<u32>;
    /// Write memory at `seg:off`.
    fn write_mem(cpu: &mut Cpu, seg: usize, off: u32, v: u32) -> Fault;
    /// Read-modify-write memory at `seg:off` (see [`Cpu::rmw`]).
    fn rmw_mem(cpu: &mut Cpu, seg: usize, off: u32, f: impl FnOnce(&mut Cpu, u32) -> u32) -> Fault;
    /// Read at a linear address.
    fn read_lin(cpu: &mut Cpu, lin: u32) -> Fault<u32>;
    /// Write at a linear address.
    fn write_lin(cpu: &mut Cpu, lin: u32, v: u32) -> Fault;
    /// Sign-extend a value of this width to 32 bits.
    #[inline(always)]
    fn sext(v: u32) -> u32 {
        (((v << (32 - Self::BITS)) as i32) >> (32 - Self::BITS)) as u32
    }
}

/// 8-bit operands.
pub enum W8 {}
/// 16-bit operands.
pub enum W16 {}
/// 32-bit operands.
pub enum W32 {}

impl Width for W8 {
    const BITS: u32 = 8;
    const BYTES: u32 = 1;
    const MASK: u32 = 0xFF;
    const SIGN: u32 = 0x80;
    // AL..BL are bits 0-7 of EAX..EBX, AH..BH bits 8-15: register `r & 3`, shifted by 8 when
    // bit 2 is set. Without a branch, and indexed from the register file itself (an index of
    // `r - 4` has the compiler keep a second base address live through the run loop).
    #[inline(always)]
    fn reg(cpu: &Cpu, r: u8) -> u32 {
        let shift = u32::from(r & 4) << 1;
        (cpu.regs[usize::from(r & 3)] >> shift) & 0xFF
    }
    #[inline(always)]
    fn set_reg(cpu: &mut Cpu, r: u8, v: u32) {
        let shift = u32::from(r & 4) << 1;
        let reg = &mut cpu.regs[usize::from(r & 3)];
        *reg = (*reg & !(0xFF << shift)) | ((v & 0xFF) << shift);
    }
    #[inline(always)]
    fn read_mem(cpu: &mut Cpu, seg: usize, off: u32) -> Fault<u32> {
        cpu.read::<1>(seg, off)
    }
    #[inline(always)]
    fn write_mem(cpu: &mut Cpu, seg: usize, off: u32, v: u32) -> Fault {
        cpu.write::<1>(seg, off, v)
    }
    #[inline(always)]
    fn rmw_mem(cpu: &mut Cpu, seg: usize, off: u32, f: impl FnOnce(&mut Cpu, u32) -> u32) -> Fault {
        cpu.rmw::<1>(seg, off, f)
    }
    #[inline(always)]
    fn read_lin(cpu: &mut Cpu, lin: u32) -> Fault<u32> {
        cpu.read_lin::<1>(lin)
    }
    #[inline(always)]
    fn write_lin(cpu: &mut Cpu, lin: u32, v: u32) -> Fault {
        cpu.write_lin::<1>(lin, v)
    }
}

impl Width for W16 {
    const BITS: u32 = 16;
    const BYTES: u32 = 2;
    const MASK: u32 = 0xFFFF;
    const SIGN: u32 = 0x8000;
    #[inline(always)]
    fn reg(cpu: &Cpu, r: u8) -> u32 {
        cpu.regs[r as usize & (REG_SLOTS - 1)] & 0xFFFF
    }
    #[inline(always)]
    fn set_reg(cpu: &mut Cpu, r: u8, v: u32) {
        let r = r as usize & 7;
        cpu.regs[r] = (cpu.regs[r] & 0xFFFF_0000) | (v & 0xFFFF);
    }
    #[inline(always)]
    fn read_mem(cpu: &mut Cpu, seg: usize, off: u32) -> Fault<u32> {
        cpu.read::<2>(seg, off)
    }
    #[inline(always)]
    fn write_mem(cpu: &mut Cpu, seg: usize, off: u32, v: u32) -> Fault {
        cpu.write::<2>(seg, off, v)
    }
    #[inline(always)]
    fn rmw_mem(cpu: &mut Cpu, seg: usize, off: u32, f: impl FnOnce(&mut Cpu, u32) -> u32) -> Fault {
        cpu.rmw::<2>(seg, off, f)
    }
    #[inline(always)]
    fn read_lin(cpu: &mut Cpu, lin: u32) -> Fault<u32> {
        cpu.read_lin::<2>(lin)
    }
    #[inline(always)]
    fn write_lin(cpu: &mut Cpu, lin: u32, v: u32) -> Fault {
        cpu.write_lin::<2>(lin, v)
    }
}

impl Width for W32 {
    const BITS: u32 = 32;
    const BYTES: u32 = 4;
    const MASK: u32 = 0xFFFF_FFFF;
    const SIGN: u32 = 0x8000_0000;
    #[inline(always)]
    fn reg(cpu: &Cpu, r: u8) -> u32 {
        cpu.regs[r as usize & (REG_SLOTS - 1)]
    }
    #[inline(always)]
    fn set_reg(cpu: &mut Cpu, r: u8, v: u32) {
        cpu.regs[r as usize & 7] = v;
    }
    #[inline(always)]
    fn read_mem(cpu: &mut Cpu, seg: usize, off: u32) -> Fault<u32> {
        cpu.read::<4>(seg, off)
    }
    #[inline(always)]
    fn write_mem(cpu: &mut Cpu, seg: usize, off: u32, v: u32) -> Fault {
        cpu.write::<4>(seg, off, v)
    }
    #[inline(always)]
    fn rmw_mem(cpu: &mut Cpu, seg: usize, off: u32, f: impl FnOnce(&mut Cpu, u32) -> u32) -> Fault {
        cpu.rmw::<4>(seg, off, f)
    }
    #[inline(always)]
    fn read_lin(cpu: &mut Cpu, lin: u32) -> Fault<u32> {
        cpu.read_lin::<4>(lin)
    }
    #[inline(always)]
    fn write_lin(cpu: &mut Cpu, lin: u32, v: u32) -> Fault {
        cpu.write_lin::<4>(lin, v)
    }
}

/// Where the ModR/M r/m operand lives.
pub trait Rm: 'static {
    /// Read the r/m operand.
    fn read<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault<u32>;
    /// Write the r/m operand.
    fn write<W: Width>(cpu: &mut Cpu, i: &Instr, v: u32) -> Fault;
    /// Read-modify-write: `f` maps the old value to the new one. For memory the write access is
    /// checked before `f` runs, so a fault leaves nothing changed.
    fn rmw<W: Width>(cpu: &mut Cpu, i: &Instr, f: impl FnOnce(&mut Cpu, u32) -> u32) -> Fault;
}

/// The r/m operand is register `i.rm`.
pub enum RegRm {}
/// The r/m operand is memory at `i.seg : i.ea()`.
pub enum MemRm {}
/// The r/m operand is memory at `i.seg : i.ea32()`: a 32-bit address, which needs no wrap.
/// Only the run loop's inline forms use it (the decoder gives them only to instructions with
/// 32-bit addresses); every handler pointer uses [`MemRm`].
pub enum Mem32Rm {}

/// How a memory r/m operand's offset is computed.
pub trait Address: Rm {
    fn offset(cpu: &Cpu, i: &Instr) -> u32;
}

impl Address for MemRm {
    #[inline(always)]
    fn offset(cpu: &Cpu, i: &Instr) -> u32 {
        i.ea(cpu)
    }
}

impl Address for Mem32Rm {
    #[inline(always)]
    fn offset(cpu: &Cpu, i: &Instr) -> u32 {
        i.ea32(cpu)
    }
}

impl Rm for RegRm {
    #[inline(always)]
    fn read<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault<u32> {
        Ok(W::reg(cpu, i.rm))
    }
    #[inline(always)]
    fn write<W: Width>(cpu: &mut Cpu, i: &Instr, v: u32) -> Fault {
        W::set_reg(cpu, i.rm, v);
        Ok(())
    }
    #[inline(always)]
    fn rmw<W: Width>(cpu: &mut Cpu, i: &Instr, f: impl FnOnce(&mut Cpu, u32) -> u32) -> Fault {
        let v = W::reg(cpu, i.rm);
        let r = f(cpu, v);
        W::set_reg(cpu, i.rm, r);
        Ok(())
    }
}

impl<M: Address> Rm for M {
    #[inline(always)]
    fn read<W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault<u32> {
        let off = M::offset(cpu, i);
        W::read_mem(cpu, i.seg as usize, off)
    }
    #[inline(always)]
    fn write<W: Width>(cpu: &mut Cpu, i: &Instr, v: u32) -> Fault {
        let off = M::offset(cpu, i);
        W::write_mem(cpu, i.seg as usize, off, v)
    }
    #[inline(always)]
    fn rmw<W: Width>(cpu: &mut Cpu, i: &Instr, f: impl FnOnce(&mut Cpu, u32) -> u32) -> Fault {
        let off = M::offset(cpu, i);
        W::rmw_mem(cpu, i.seg as usize, off, f)
    }
}
