//! The x87 FPU: register stack, control/status/tag words, the instruction and data pointers,
//! and every D8-DF instruction plus WAIT and FXSAVE/FXRSTOR.
//!
//! Arithmetic is done by [`float80`] (exact, checked against a real x87) and [`trans`]
//! (transcendentals, within an ulp). This file is the architectural layer: stack faults,
//! masked/unmasked exception delivery (#MF or FERR#/IRQ13 on the next waiting instruction),
//! memory formats, and the environment/save images.

pub mod float80;
pub mod trans;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vector_tests;

use super::decode::{undefined, Decoder, Handler, Instr};
use super::exception::{self, Exception, Fault};
use super::flags;
use super::seg::Segment;
use super::{Cpu, CR0_EM, CR0_MP, CR0_NE, CR0_TS, EAX};
use float80::{Class, Cmp, Ctx, C0, C1, C2, C3, DE, EXC_MASK, F80, IE, OE, PE, UE, ZE};
use serde::{Deserialize, Serialize};

/// Status word: stack fault (with IE; C1 tells overflow from underflow).
pub const SW_SF: u16 = 1 << 6;
/// Status word: error summary (an unmasked exception is pending).
pub const SW_ES: u16 = 1 << 7;
/// Status word: TOP field shift (bits 11-13).
pub const SW_TOP_SHIFT: u16 = 11;
/// Status word: busy (mirrors ES on the 387 and later).
pub const SW_B: u16 = 1 << 15;
/// Control word after FINIT: everything masked, 64-bit precision, round to nearest.
pub const CW_FINIT: u16 = 0x037F;
/// Control word at power-on (Intel SDM Vol. 3 Table 9-1).
pub const CW_POWER_ON: u16 = 0x0040;

/// Tag values (two bits per physical register).
pub const TAG_VALID: u16 = 0;
pub const TAG_ZERO: u16 = 1;
pub const TAG_SPECIAL: u16 = 2;
pub const TAG_EMPTY: u16 = 3;

/// The FPU state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fpu {
    /// Physical registers R0..R7; ST(i) is R((TOP + i) mod 8).
    pub regs: [F80; 8],
    /// Top-of-stack pointer (the TOP field of the status word).
    pub top: u8,
    pub cw: u16,
    /// Status word without the TOP field (see [`Fpu::status_word`]).
    pub sw: u16,
    /// Full tag word, two bits per physical register.
    pub tags: u16,
    /// Last non-control instruction: offset, CS selector and 11-bit opcode.
    pub fip: u32,
    pub fcs: u16,
    pub fop: u16,
    /// Last memory operand: offset and segment selector.
    pub fdp: u32,
    pub fds: u16,
}

impl Default for Fpu {
    fn default() -> Self {
        Fpu::new()
    }
}

/// The tag a value gets when written to a register.
fn tag_of(v: F80) -> u16 {
    match v.class() {
        Class::Zero => TAG_ZERO,
        Class::Normal => TAG_VALID,
        _ => TAG_SPECIAL,
    }
}

impl Fpu {
    /// The power-on state.
    pub fn new() -> Fpu {
        Fpu {
            regs: [F80::ZERO; 8],
            top: 0,
            cw: CW_POWER_ON,
            sw: 0,
            tags: 0x5555,
            fip: 0,
            fcs: 0,
            fop: 0,
            fdp: 0,
            fds: 0,
        }
    }

    /// FNINIT.
    pub fn init(&mut self) {
        self.cw = CW_FINIT;
        self.sw = 0;
        self.top = 0;
        self.tags = 0xFFFF;
        self.fip = 0;
        self.fcs = 0;
        self.fop = 0;
        self.fdp = 0;
        self.fds = 0;
    }

    /// The architectural status word (TOP included).
    pub fn status_word(&self) -> u16 {
        (self.sw & !(7 << SW_TOP_SHIFT)) | (self.top as u16) << SW_TOP_SHIFT
    }

    /// Load the status word (TOP included).
    pub fn set_status_word(&mut self, w: u16) {
        self.top = ((w >> SW_TOP_SHIFT) & 7) as u8;
        self.sw = w & !(7 << SW_TOP_SHIFT);
    }

    fn phys(&self, i: u8) -> usize {
        ((self.top + i) & 7) as usize
    }

    fn tag(&self, phys: usize) -> u16 {
        (self.tags >> (2 * phys)) & 3
    }

    fn set_tag(&mut self, phys: usize, t: u16) {
        self.tags = (self.tags & !(3 << (2 * phys))) | t << (2 * phys);
    }

    /// ST(i) holds no value.
    pub fn empty(&self, i: u8) -> bool {
        self.tag(self.phys(i)) == TAG_EMPTY
    }

    /// ST(i).
    pub fn st(&self, i: u8) -> F80 {
        self.regs[self.phys(i)]
    }

    /// Write ST(i) (and its tag).
    pub fn set_st(&mut self, i: u8, v: F80) {
        let p = self.phys(i);
        self.regs[p] = v;
        self.set_tag(p, tag_of(v));
    }

    /// Push a value (the caller checked for overflow).
    pub fn push(&mut self, v: F80) {
        self.top = (self.top + 7) & 7;
        self.set_st(0, v);
    }

    /// Mark ST0 empty and pop.
    pub fn pop(&mut self) {
        let p = self.phys(0);
        self.set_tag(p, TAG_EMPTY);
        self.top = (self.top + 1) & 7;
    }

    /// The tag word as FSTENV/FSAVE store it: recomputed from the register contents.
    pub fn tag_word(&self) -> u16 {
        let mut t = 0;
        for p in 0..8 {
            let tag = if self.tag(p) == TAG_EMPTY {
                TAG_EMPTY
            } else {
                tag_of(self.regs[p])
            };
            t |= tag << (2 * p);
        }
        t
    }

    /// Load a tag word: only "empty" is taken from it; other tags follow the contents.
    pub fn set_tag_word(&mut self, t: u16) {
        for p in 0..8 {
            let tag = if (t >> (2 * p)) & 3 == TAG_EMPTY {
                TAG_EMPTY
            } else {
                tag_of(self.regs[p])
            };
            self.set_tag(p, tag);
        }
    }

    /// Record exception flags raised by an operation (C1 is handled by the caller). Returns
    /// false when an unmasked IE, DE or ZE forbids writing the result.
    fn raise(&mut self, flags: u16) -> bool {
        let unmasked = flags & !self.cw & EXC_MASK;
        self.sw |= flags & EXC_MASK;
        if unmasked != 0 {
            self.sw |= SW_ES | SW_B;
        }
        unmasked & (IE | DE | ZE) == 0
    }

    /// Record an operation's flags and its C1 (round-up) bit; true when the result may be
    /// written.
    fn finish(&mut self, c: &Ctx) -> bool {
        self.sw = (self.sw & !C1) | (c.flags & C1);
        self.raise(c.flags)
    }

    /// Stack underflow (an operand register is empty): IE + SF, C1 = 0. True when IE is
    /// masked, so the caller continues with the indefinite.
    fn underflow(&mut self) -> bool {
        self.sw = (self.sw & !C1) | SW_SF;
        self.raise(IE)
    }

    /// Stack overflow (a push onto a full register): IE + SF, C1 = 1. True when masked.
    fn overflow(&mut self) -> bool {
        self.sw |= SW_SF | C1;
        self.raise(IE)
    }

    /// Recompute ES/B after the control or status word was loaded.
    fn update_es(&mut self) {
        if self.sw & !self.cw & EXC_MASK != 0 {
            self.sw |= SW_ES | SW_B;
        } else {
            self.sw &= !(SW_ES | SW_B);
        }
    }

    fn ctx(&self) -> Ctx {
        Ctx::new(self.cw)
    }

    /// Set C3, C2, C0 from a comparison (C1 cleared).
    fn set_cc(&mut self, r: Cmp) {
        let cc = match r {
            Cmp::Greater => 0,
            Cmp::Less => C0,
            Cmp::Equal => C3,
            Cmp::Unordered => C3 | C2 | C0,
        };
        self.sw = (self.sw & !(C0 | C1 | C2 | C3)) | cc;
    }

    /// Push `v` with the overflow check; a masked overflow pushes the indefinite.
    fn push_checked(&mut self, v: F80) {
        if !self.empty(7) {
            if self.overflow() {
                self.push(F80::INDEFINITE);
            }
            return;
        }
        self.push(v);
    }
}

// ---- Instruction prologue and memory helpers ----

/// #NM checks and delivery of a pending unmasked exception for waiting instructions.
#[inline]
fn check_avail(cpu: &mut Cpu, wait: bool) -> Fault {
    if cpu.cr0 & (CR0_EM | CR0_TS) != 0 {
        return Err(Exception::new(exception::NM));
    }
    if wait && cpu.fpu.sw & SW_ES != 0 {
        signal_error(cpu)?;
    }
    Ok(())
}

/// A pending unmasked exception reaches a waiting instruction: #MF with CR0.NE, otherwise
/// the legacy FERR# line (IRQ13 through the PIC) and execution continues.
fn signal_error(cpu: &mut Cpu) -> Fault {
    if cpu.cr0 & CR0_NE != 0 {
        return Err(Exception::new(exception::MF));
    }
    cpu.bus.fpu_error(true);
    // FERR# may have raised IRQ13 at the interrupt controller.
    cpu.refresh_intr();
    Ok(())
}

/// Prologue of a non-control instruction: availability, pending errors, and the
/// instruction pointer/opcode it leaves for an exception handler.
#[inline]
fn begin(cpu: &mut Cpu, i: &Instr) -> Fault {
    check_avail(cpu, true)?;
    cpu.fpu.fip = cpu.instr_eip(i);
    cpu.fpu.fcs = cpu.segs[Segment::CS as usize].selector;
    cpu.fpu.fop = i.imm as u16;
    Ok(())
}

/// Prologue of a non-control instruction with a memory operand: also the data pointer.
#[inline]
fn begin_mem(cpu: &mut Cpu, i: &Instr) -> Fault<(usize, u32)> {
    begin(cpu, i)?;
    let off = i.ea(cpu);
    let seg = i.seg as usize;
    cpu.fpu.fdp = off;
    cpu.fpu.fds = cpu.segs[seg].selector;
    Ok((seg, off))
}

/// How much of an operand Intel hardware accesses first: a 10-byte operand is read or
/// written as 8 bytes, then 2 (the limit and paging checks of the second part come after the
/// first part's: at the end of a segment whose limit wraps at 4 GiB, the first part can
/// page-fault where the whole would be beyond the limit).
fn first_part(len: usize) -> u32 {
    len.min(8) as u32
}

/// Read an operand of `N` bytes that must be aligned to `align` (SDM Vol. 3A Table 6-7:
/// 8 for the 64- and 80-bit formats; a save area's parts pass 1, its start being checked).
fn read_bytes<const N: usize>(cpu: &mut Cpu, seg: usize, off: u32, align: u32) -> Fault<[u8; N]> {
    cpu.check_operand(seg, off, first_part(N), align, false)?;
    let mut b = [0u8; N];
    read_parts(cpu, seg, off, &mut b)?;
    Ok(b)
}

/// Read `b.len()` (even) bytes at `seg:off` in dwords and words, parts of an operand whose
/// alignment was checked (no alignment check of the parts).
fn read_parts(cpu: &mut Cpu, seg: usize, off: u32, b: &mut [u8]) -> Fault {
    let mut k = 0;
    while k < b.len() {
        let o = off.wrapping_add(k as u32);
        if b.len() - k >= 4 {
            let v = cpu.read_part::<4>(seg, o)?;
            b[k..k + 4].copy_from_slice(&v.to_le_bytes());
            k += 4;
        } else {
            let v = cpu.read_part::<2>(seg, o)?;
            b[k..k + 2].copy_from_slice(&(v as u16).to_le_bytes());
            k += 2;
        }
    }
    Ok(())
}

/// Write bytes (even length) after checking the whole destination, so a fault leaves
/// nothing half-written; `align` is the operand's alignment (see [`read_bytes`]).
fn write_bytes(cpu: &mut Cpu, seg: usize, off: u32, b: &[u8], align: u32) -> Fault {
    let first = first_part(b.len());
    cpu.check_operand(seg, off, first, align, true)?;
    cpu.probe_write(seg, off, first)?;
    cpu.probe_write(seg, off, b.len() as u32)?;
    write_parts(cpu, seg, off, b)
}

/// Write `b` (even length) at `seg:off` in dwords and words (see [`read_parts`]).
fn write_parts(cpu: &mut Cpu, seg: usize, off: u32, b: &[u8]) -> Fault {
    let mut k = 0;
    while k < b.len() {
        let o = off.wrapping_add(k as u32);
        if b.len() - k >= 4 {
            let v = u32::from_le_bytes([b[k], b[k + 1], b[k + 2], b[k + 3]]);
            cpu.write_part::<4>(seg, o, v)?;
            k += 4;
        } else {
            cpu.write_part::<2>(seg, o, u16::from_le_bytes([b[k], b[k + 1]]) as u32)?;
            k += 2;
        }
    }
    Ok(())
}

/// Check an FSTENV/FSAVE area of `len` bytes in the `op32` format before anything in it is
/// accessed, in the order Intel hardware does: its first dword (word, for the 16-bit
/// formats: limit, the area's alignment (SDM Vol. 3A Table 6-7), paging), then its last byte
/// (limit, paging). A fault then names the first or the last byte's page, and leaves memory
/// and the FPU as they were.
fn probe_area(cpu: &mut Cpu, seg: usize, off: u32, len: u32, op32: bool, write: bool) -> Fault {
    let elem = area_align(op32);
    let last = off.wrapping_add(len - 1);
    cpu.check_operand(seg, off, elem, elem, write)?;
    if write {
        cpu.probe_write(seg, off, elem)?;
        cpu.probe_write(seg, last, 1)?;
    } else {
        if op32 {
            cpu.read_part::<4>(seg, off)?;
        } else {
            cpu.read_part::<2>(seg, off)?;
        }
        cpu.read_part::<1>(seg, last)?;
    }
    Ok(())
}

// ---- Memory operand kinds ----

/// m32fp.
const M_F32: u8 = 0;
/// m64fp.
const M_F64: u8 = 1;
/// m16int.
const M_I16: u8 = 2;
/// m32int.
const M_I32: u8 = 3;
/// m64int.
const M_I64: u8 = 4;
/// m80fp.
const M_F80: u8 = 5;
/// m80bcd.
const M_BCD: u8 = 6;

/// Read a memory operand of kind `K` as an arithmetic operand (SNaNs kept signalling).
fn load_operand<const K: u8>(cpu: &mut Cpu, seg: usize, off: u32, c: &mut Ctx) -> Fault<F80> {
    Ok(match K {
        M_F32 => c.f32_operand(cpu.read::<4>(seg, off)?),
        M_F64 => c.f64_operand(u64::from_le_bytes(read_bytes::<8>(cpu, seg, off, 8)?)),
        M_I16 => float80::from_i64(cpu.read::<2>(seg, off)? as u16 as i16 as i64),
        M_I32 => float80::from_i64(cpu.read::<4>(seg, off)? as i32 as i64),
        M_I64 => float80::from_i64(i64::from_le_bytes(read_bytes::<8>(cpu, seg, off, 8)?)),
        M_F80 => F80::from_bytes(read_bytes::<10>(cpu, seg, off, 8)?),
        // Packed BCD is not in the SDM's table; Intel hardware wants it 8-byte aligned too.
        _ => c.from_bcd(read_bytes::<10>(cpu, seg, off, 8)?),
    })
}

/// Arithmetic selected by the ModR/M reg field of D8/DC/DA/DE: `x` is the destination,
/// `y` the other operand.
fn arith(c: &mut Ctx, op: u8, x: F80, y: F80) -> F80 {
    match op {
        0 => c.add(x, y),
        1 => c.mul(x, y),
        4 => c.sub(x, y),
        5 => c.sub(y, x),
        6 => c.div(x, y),
        _ => c.div(y, x),
    }
}

// ---- Arithmetic and comparisons ----

/// FADD/FMUL/FSUB/FSUBR/FDIV/FDIVR ST0, mem (and the FIxxx integer forms).
fn arith_mem<const K: u8, const OP: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let (seg, off) = begin_mem(cpu, i)?;
    let mut c = cpu.fpu.ctx();
    let y = load_operand::<K>(cpu, seg, off, &mut c)?;
    let fpu = &mut cpu.fpu;
    if fpu.empty(0) {
        if fpu.underflow() {
            fpu.set_st(0, F80::INDEFINITE);
        }
        return Ok(());
    }
    // A denormal memory operand (DE, raised when it was converted) is reported only if the
    // operation raises nothing of higher priority: invalid operands and operations, QNaN
    // operands and division by zero come first (SDM Vol. 1 8.7, "Handling Multiple x87 FPU
    // Exceptions"). The register forms get this order from float80 itself.
    let denormal_operand = c.flags & DE != 0;
    c.flags &= !DE;
    let r = arith(&mut c, OP, fpu.st(0), y);
    let st0_nan = matches!(
        fpu.st(0).class(),
        Class::QNaN | Class::SNaN | Class::Unsupported
    );
    if denormal_operand && !st0_nan && c.flags & (IE | ZE) == 0 {
        if fpu.cw & DE == 0 {
            fpu.raise(DE);
            return Ok(());
        }
        c.flags |= DE;
    }
    if fpu.finish(&c) {
        fpu.set_st(0, r);
    }
    Ok(())
}

/// Forget the denormal-operand exception that converting a memory operand raised when ST0 is
/// a NaN or of an unsupported format: invalid operands and QNaN operands take precedence over
/// denormal operands (SDM Vol. 1 8.7, "Handling Multiple x87 FPU Exceptions"), as for two
/// register operands.
fn drop_denormal_behind_nan(c: &mut Ctx, st0: F80) {
    if matches!(st0.class(), Class::QNaN | Class::SNaN | Class::Unsupported) {
        c.flags &= !DE;
    }
}

/// Register forms: ST(dst) = ST(dst) op ST(src), with `dst`/`src` being 0/i (D8) or i/0
/// (DC, DE); POP for the DE forms.
fn arith_reg<const OP: u8, const TO_STI: bool, const POP: bool>(cpu: &mut Cpu, i: &Instr) -> Fault {
    begin(cpu, i)?;
    let fpu = &mut cpu.fpu;
    let (d, s) = if TO_STI { (i.rm, 0) } else { (0, i.rm) };
    if fpu.empty(d) || fpu.empty(s) {
        if fpu.underflow() {
            fpu.set_st(d, F80::INDEFINITE);
            if POP {
                fpu.pop();
            }
        }
        return Ok(());
    }
    let mut c = fpu.ctx();
    let r = arith(&mut c, OP, fpu.st(d), fpu.st(s));
    if fpu.finish(&c) {
        fpu.set_st(d, r);
        if POP {
            fpu.pop();
        }
    }
    Ok(())
}

/// Compare ST0 with `y`, set the condition codes, pop `pops` times.
fn compare_cc(fpu: &mut Fpu, y: Option<F80>, c: &mut Ctx, quiet: bool, pops: u8) {
    let y = match y {
        Some(y) if !fpu.empty(0) => y,
        _ => {
            if fpu.underflow() {
                fpu.set_cc(Cmp::Unordered);
                for _ in 0..pops {
                    fpu.pop();
                }
            }
            return;
        }
    };
    let r = c.compare(fpu.st(0), y, quiet);
    if fpu.raise(c.flags) {
        fpu.set_cc(r);
        for _ in 0..pops {
            fpu.pop();
        }
    }
}

/// FCOM/FCOMP/FICOM/FICOMP with a memory operand.
fn fcom_mem<const K: u8, const POP: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let (seg, off) = begin_mem(cpu, i)?;
    let mut c = cpu.fpu.ctx();
    let y = load_operand::<K>(cpu, seg, off, &mut c)?;
    if !cpu.fpu.empty(0) {
        drop_denormal_behind_nan(&mut c, cpu.fpu.st(0));
    }
    compare_cc(&mut cpu.fpu, Some(y), &mut c, false, POP);
    Ok(())
}

/// FCOM/FCOMP/FUCOM/FUCOMP ST(i), FCOMPP, FUCOMPP.
fn fcom_reg<const QUIET: bool, const POP: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    begin(cpu, i)?;
    let fpu = &mut cpu.fpu;
    let y = (!fpu.empty(i.rm)).then(|| fpu.st(i.rm));
    let mut c = fpu.ctx();
    compare_cc(fpu, y, &mut c, QUIET, POP);
    Ok(())
}

/// FCOMI/FCOMIP/FUCOMI/FUCOMIP: the result goes to ZF, PF, CF (OF, SF, AF cleared).
fn fcomi<const QUIET: bool, const POP: bool>(cpu: &mut Cpu, i: &Instr) -> Fault {
    begin(cpu, i)?;
    let fpu = &mut cpu.fpu;
    let r = if fpu.empty(0) || fpu.empty(i.rm) {
        if !fpu.underflow() {
            return Ok(());
        }
        Cmp::Unordered
    } else {
        let mut c = fpu.ctx();
        let r = c.compare(fpu.st(0), fpu.st(i.rm), QUIET);
        if !fpu.raise(c.flags) {
            return Ok(());
        }
        r
    };
    // C1 is left alone (cleared only by a stack underflow, in `underflow`): the SDM's FCOMI
    // page says "C1 set to 0", but the Intel CPU tests/differential.rs compares with keeps it.
    if POP {
        fpu.pop();
    }
    let (zf, pf, cf) = match r {
        Cmp::Greater => (false, false, false),
        Cmp::Less => (false, false, true),
        Cmp::Equal => (true, false, false),
        Cmp::Unordered => (true, true, true),
    };
    cpu.flags.set(flags::ZF, zf);
    cpu.flags.set(flags::PF, pf);
    cpu.flags.set(flags::CF, cf);
    cpu.flags.set(flags::OF, false);
    cpu.flags.set(flags::SF, false);
    cpu.flags.set(flags::AF, false);
    Ok(())
}

/// FCMOVcc ST0, ST(i): CC is the condition (B, E, BE, U) and NOT its negation.
fn fcmov<const CC: u8, const NOT: bool>(cpu: &mut Cpu, i: &Instr) -> Fault {
    begin(cpu, i)?;
    let cond = match CC {
        0 => cpu.flags.cf(),
        1 => cpu.flags.zf(),
        2 => cpu.flags.cf() || cpu.flags.zf(),
        _ => cpu.flags.pf(),
    } != NOT;
    let fpu = &mut cpu.fpu;
    // C1 changes only on a stack underflow (cleared there, by `underflow`); otherwise it
    // keeps its value (SDM FCMOVcc, "FPU Flags Affected"; C0, C2 and C3 are undefined).
    if fpu.empty(0) || fpu.empty(i.rm) {
        if fpu.underflow() {
            fpu.set_st(0, F80::INDEFINITE);
        }
        return Ok(());
    }
    if cond {
        let v = fpu.st(i.rm);
        fpu.set_st(0, v);
    }
    Ok(())
}

// ---- Loads and stores ----

/// FLD m32fp/m64fp/m80fp, FILD, FBLD.
fn fld_mem<const K: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let (seg, off) = begin_mem(cpu, i)?;
    let mut c = cpu.fpu.ctx();
    let v = match K {
        M_F32 => c.from_f32(cpu.read::<4>(seg, off)?),
        M_F64 => c.from_f64(u64::from_le_bytes(read_bytes::<8>(cpu, seg, off, 8)?)),
        _ => load_operand::<K>(cpu, seg, off, &mut c)?,
    };
    let fpu = &mut cpu.fpu;
    fpu.sw &= !C1;
    if !fpu.empty(7) {
        if fpu.overflow() {
            fpu.push(F80::INDEFINITE);
        }
        return Ok(());
    }
    if fpu.raise(c.flags) {
        fpu.push(v);
    }
    Ok(())
}

/// FST/FSTP m32fp/m64fp/m80fp, FIST/FISTP m16/m32/m64int, FBSTP.
fn fst_mem<const K: u8, const POP: bool>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let (seg, off) = begin_mem(cpu, i)?;
    let fpu = &cpu.fpu;
    let mut c = fpu.ctx();
    let empty = fpu.empty(0);
    let x = if empty { F80::INDEFINITE } else { fpu.st(0) };
    let mut buf = [0u8; 10];
    let len = match K {
        M_F32 => {
            buf[..4].copy_from_slice(&c.to_f32(x).to_le_bytes());
            4
        }
        M_F64 => {
            buf[..8].copy_from_slice(&c.to_f64(x).to_le_bytes());
            8
        }
        M_F80 => {
            buf = x.to_bytes();
            10
        }
        M_I16 => {
            let v = c.to_int(x, 16).unwrap_or(i16::MIN as i64) as i16;
            buf[..2].copy_from_slice(&v.to_le_bytes());
            2
        }
        M_I32 => {
            let v = c.to_int(x, 32).unwrap_or(i32::MIN as i64) as i32;
            buf[..4].copy_from_slice(&v.to_le_bytes());
            4
        }
        M_I64 => {
            buf[..8].copy_from_slice(&c.to_int(x, 64).unwrap_or(i64::MIN).to_le_bytes());
            8
        }
        _ => {
            buf = c.to_bcd(x);
            10
        }
    };
    if empty {
        // Stack underflow: a masked one stores the indefinite of the format.
        if cpu.fpu.cw & IE == 0 {
            cpu.fpu.underflow();
            return Ok(());
        }
        write_bytes(cpu, seg, off, &buf[..len], len.min(8) as u32)?;
        cpu.fpu.underflow();
        if POP {
            cpu.fpu.pop();
        }
        return Ok(());
    }
    // Unmasked invalid, overflow or underflow: memory is left unchanged.
    let blocked = c.flags & !cpu.fpu.cw & (IE | OE | UE) != 0;
    if !blocked {
        write_bytes(cpu, seg, off, &buf[..len], len.min(8) as u32)?;
    } else if c.flags & !cpu.fpu.cw & (OE | UE) != 0 {
        // Nothing stored, nothing rounded: no PE and no round-up C1, as on Intel hardware
        // (the SDM's unmasked overflow/underflow response for a memory destination stores
        // nothing and says nothing of PE).
        c.flags &= !(PE | C1);
    }
    let fpu = &mut cpu.fpu;
    fpu.finish(&c);
    if !blocked && POP {
        fpu.pop();
    }
    Ok(())
}

/// FLD ST(i).
fn fld_reg(cpu: &mut Cpu, i: &Instr) -> Fault {
    begin(cpu, i)?;
    let fpu = &mut cpu.fpu;
    fpu.sw &= !C1;
    if fpu.empty(i.rm) {
        // An empty source is a stack underflow (C1 = 0) even when the push would also
        // overflow: underflow comes first (SDM Vol. 1 8.7), as on Intel hardware.
        if fpu.underflow() {
            fpu.push(F80::INDEFINITE);
        }
        return Ok(());
    }
    let v = fpu.st(i.rm);
    fpu.push_checked(v);
    Ok(())
}

/// FST/FSTP ST(i) (and the undocumented FSTP1 aliases).
fn fst_reg<const POP: bool>(cpu: &mut Cpu, i: &Instr) -> Fault {
    begin(cpu, i)?;
    let fpu = &mut cpu.fpu;
    fpu.sw &= !C1;
    if fpu.empty(0) {
        if fpu.underflow() {
            fpu.set_st(i.rm, F80::INDEFINITE);
            if POP {
                fpu.pop();
            }
        }
        return Ok(());
    }
    let v = fpu.st(0);
    fpu.set_st(i.rm, v);
    if POP {
        fpu.pop();
    }
    Ok(())
}

/// FXCH ST(i).
fn fxch(cpu: &mut Cpu, i: &Instr) -> Fault {
    begin(cpu, i)?;
    let fpu = &mut cpu.fpu;
    fpu.sw &= !C1;
    let (mut a, mut b) = (fpu.st(0), fpu.st(i.rm));
    if fpu.empty(0) || fpu.empty(i.rm) {
        if !fpu.underflow() {
            return Ok(());
        }
        if fpu.empty(0) {
            a = F80::INDEFINITE;
        }
        if fpu.empty(i.rm) {
            b = F80::INDEFINITE;
        }
    }
    fpu.set_st(0, b);
    fpu.set_st(i.rm, a);
    Ok(())
}

/// FFREE ST(i) and the undocumented FFREEP.
fn ffree<const POP: bool>(cpu: &mut Cpu, i: &Instr) -> Fault {
    begin(cpu, i)?;
    let fpu = &mut cpu.fpu;
    let p = fpu.phys(i.rm);
    fpu.set_tag(p, TAG_EMPTY);
    if POP {
        fpu.pop();
    }
    Ok(())
}

/// FLD1, FLDL2T, FLDL2E, FLDPI, FLDLG2, FLDLN2, FLDZ.
fn fld_const<const K: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    begin(cpu, i)?;
    let fpu = &mut cpu.fpu;
    fpu.sw &= !C1;
    let v = constant(K, fpu.ctx().rc());
    fpu.push_checked(v);
    Ok(())
}

// ---- One-operand instructions on ST0 ----

/// Operations that replace ST0 with a function of it.
const U_CHS: u8 = 0;
const U_ABS: u8 = 1;
const U_SQRT: u8 = 2;
const U_RNDINT: u8 = 3;
const U_F2XM1: u8 = 4;
const U_SIN: u8 = 5;
const U_COS: u8 = 6;

fn unary<const OP: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    begin(cpu, i)?;
    let fpu = &mut cpu.fpu;
    if fpu.empty(0) {
        if OP == U_SIN || OP == U_COS {
            // The operand is not looked at: not out of range (C2 = 0), as on Intel hardware.
            fpu.sw &= !C2;
        }
        if fpu.underflow() {
            fpu.set_st(0, F80::INDEFINITE);
        }
        return Ok(());
    }
    let x = fpu.st(0);
    let mut c = fpu.ctx();
    let r = match OP {
        U_CHS => Some(x.chs()),
        U_ABS => Some(x.abs()),
        U_SQRT => Some(c.sqrt(x)),
        U_RNDINT => Some(c.round_int(x)),
        U_F2XM1 => Some(trans::f2xm1(&mut c, x)),
        U_SIN => trans::sin(&mut c, x),
        _ => trans::cos(&mut c, x),
    };
    fpu.sw &= !C2;
    match r {
        Some(r) => {
            if fpu.finish(&c) {
                fpu.set_st(0, r);
            }
        }
        // Out of range (|x| >= 2^63): C2 set, operand left alone, nothing rounded (C1
        // cleared: SDM FSIN/FCOS "set if result was rounded up; cleared otherwise", as on
        // Intel hardware).
        None => fpu.sw = (fpu.sw & !C1) | C2,
    }
    Ok(())
}

/// FTST.
fn ftst(cpu: &mut Cpu, i: &Instr) -> Fault {
    begin(cpu, i)?;
    let fpu = &mut cpu.fpu;
    let y = Some(F80::ZERO);
    let mut c = fpu.ctx();
    compare_cc(fpu, y, &mut c, false, 0);
    Ok(())
}

/// FXAM: classify ST0 into C3, C2, C0 with the sign in C1.
fn fxam(cpu: &mut Cpu, i: &Instr) -> Fault {
    begin(cpu, i)?;
    let fpu = &mut cpu.fpu;
    let x = fpu.st(0);
    let cc = if fpu.empty(0) {
        C3 | C0
    } else {
        match x.class() {
            Class::Unsupported => 0,
            Class::QNaN | Class::SNaN => C0,
            Class::Normal => C2,
            Class::Infinity => C2 | C0,
            Class::Zero => C3,
            Class::Denormal => C3 | C2,
        }
    };
    let c1 = if x.sign { C1 } else { 0 };
    fpu.sw = (fpu.sw & !(C0 | C1 | C2 | C3)) | cc | c1;
    Ok(())
}

/// Two-operand operations on ST0 and ST1.
const B_PREM: u8 = 0;
const B_PREM1: u8 = 1;
const B_SCALE: u8 = 2;
const B_ATAN: u8 = 3;
const B_YL2X: u8 = 4;
const B_YL2XP1: u8 = 5;

fn binary_st01<const OP: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    begin(cpu, i)?;
    let fpu = &mut cpu.fpu;
    // FPATAN, FYL2X, FYL2XP1 write ST1 and pop; the others write ST0.
    let pops = matches!(OP, B_ATAN | B_YL2X | B_YL2XP1);
    let dst = if pops { 1 } else { 0 };
    if fpu.empty(0) || fpu.empty(1) {
        if matches!(OP, B_PREM | B_PREM1) {
            // Nothing left to reduce: C2 = 0 (complete); C0 and C3 keep their values.
            fpu.sw &= !C2;
        }
        if fpu.underflow() {
            fpu.set_st(dst, F80::INDEFINITE);
            if pops {
                fpu.pop();
            }
        }
        return Ok(());
    }
    let (x, y) = (fpu.st(0), fpu.st(1));
    let mut c = fpu.ctx();
    let mut cc = None;
    let r = match OP {
        B_PREM | B_PREM1 => {
            let (r, bits) = c.prem(x, y, OP == B_PREM1);
            cc = Some(bits);
            r
        }
        B_SCALE => c.scale(x, y),
        B_ATAN => trans::atan(&mut c, y, x),
        B_YL2X => trans::yl2x(&mut c, x, y),
        _ => trans::yl2xp1(&mut c, x, y),
    };
    if let Some(bits) = cc {
        // The quotient bits replace C0, C3, C1; C2 says whether the reduction is complete.
        if fpu.raise(c.flags) {
            // A NaN result (invalid or NaN operands) has no quotient: C1 and C2 are cleared
            // and C0 and C3 keep their values, as on Intel hardware (the SDM defines them
            // only as quotient bits).
            let kept = if r.is_nan() { C0 | C3 } else { 0 };
            fpu.sw = (fpu.sw & kept) | (fpu.sw & !(C0 | C1 | C2 | C3)) | bits;
            fpu.set_st(0, r);
        }
        return Ok(());
    }
    if fpu.finish(&c) {
        fpu.set_st(dst, r);
        if pops {
            fpu.pop();
        }
    }
    Ok(())
}

/// FXTRACT, FPTAN, FSINCOS: replace ST0 and push a second result.
const P_XTRACT: u8 = 0;
const P_TAN: u8 = 1;
const P_SINCOS: u8 = 2;

fn unary_push<const OP: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    begin(cpu, i)?;
    let fpu = &mut cpu.fpu;
    if fpu.empty(0) {
        // A stack underflow (C1 = 0), even when the push would also overflow: underflow
        // comes first (SDM Vol. 1 8.7), as on Intel hardware. Not out of range (C2 = 0).
        fpu.sw &= !C2;
        if fpu.underflow() {
            fpu.set_st(0, F80::INDEFINITE);
            fpu.push(F80::INDEFINITE);
        }
        return Ok(());
    }
    if !fpu.empty(7) {
        // A stack overflow: the operand is not looked at, so C2 (out of range, for FPTAN
        // and FSINCOS; undefined for FXTRACT) is 0, as on Intel hardware.
        fpu.sw &= !C2;
        if fpu.overflow() {
            fpu.set_st(0, F80::INDEFINITE);
            fpu.push(F80::INDEFINITE);
        }
        return Ok(());
    }
    let x = fpu.st(0);
    let mut c = fpu.ctx();
    // (new ST1, new ST0)
    let r = match OP {
        P_XTRACT => {
            let (sig, exp) = c.xtract(x);
            Some((exp, sig))
        }
        P_TAN => trans::tan(&mut c, x).map(|t| {
            // A NaN result is pushed twice rather than over a 1.0.
            let one = if t.is_nan() { t } else { F80::ONE };
            (t, one)
        }),
        _ => trans::sincos(&mut c, x),
    };
    fpu.sw &= !C2;
    match r {
        Some((st1, st0)) => {
            if fpu.finish(&c) {
                fpu.set_st(0, st1);
                fpu.push(st0);
            }
        }
        // Out of range: as for FSIN (C1 cleared).
        None => fpu.sw = (fpu.sw & !C1) | C2,
    }
    Ok(())
}

/// FINCSTP / FDECSTP.
fn fincdec<const INC: bool>(cpu: &mut Cpu, i: &Instr) -> Fault {
    begin(cpu, i)?;
    let fpu = &mut cpu.fpu;
    fpu.top = if INC { fpu.top + 1 } else { fpu.top + 7 } & 7;
    fpu.sw &= !C1;
    Ok(())
}

fn fnop(cpu: &mut Cpu, i: &Instr) -> Fault {
    begin(cpu, i)
}

// ---- Control instructions ----

/// FNINIT.
fn fninit(cpu: &mut Cpu, _: &Instr) -> Fault {
    check_avail(cpu, false)?;
    cpu.fpu.init();
    cpu.bus.fpu_error(false);
    Ok(())
}

/// FNCLEX.
fn fnclex(cpu: &mut Cpu, _: &Instr) -> Fault {
    check_avail(cpu, false)?;
    cpu.fpu.sw &= !(EXC_MASK | SW_SF | SW_ES | SW_B);
    cpu.bus.fpu_error(false);
    Ok(())
}

/// FENI, FDISI, FSETPM: no-ops since the 387.
fn fnop_control(cpu: &mut Cpu, _: &Instr) -> Fault {
    check_avail(cpu, false)
}

/// FLDCW m16.
fn fldcw(cpu: &mut Cpu, i: &Instr) -> Fault {
    check_avail(cpu, true)?;
    let off = i.ea(cpu);
    let v = cpu.read::<2>(i.seg as usize, off)? as u16;
    // Bit 6 reads as one; bits 13-15 are reserved.
    cpu.fpu.cw = (v & 0x1F3F) | 0x0040;
    cpu.fpu.update_es();
    Ok(())
}

/// FNSTCW m16.
fn fnstcw(cpu: &mut Cpu, i: &Instr) -> Fault {
    check_avail(cpu, false)?;
    let off = i.ea(cpu);
    cpu.write::<2>(i.seg as usize, off, cpu.fpu.cw as u32)
}

/// FNSTSW m16.
fn fnstsw_mem(cpu: &mut Cpu, i: &Instr) -> Fault {
    check_avail(cpu, false)?;
    let off = i.ea(cpu);
    cpu.write::<2>(i.seg as usize, off, cpu.fpu.status_word() as u32)
}

/// FNSTSW AX.
fn fnstsw_ax(cpu: &mut Cpu, _: &Instr) -> Fault {
    check_avail(cpu, false)?;
    cpu.regs[EAX] = (cpu.regs[EAX] & 0xFFFF_0000) | cpu.fpu.status_word() as u32;
    Ok(())
}

/// WAIT/FWAIT: #NM when CR0.TS and CR0.MP, then any pending unmasked exception.
fn fwait(cpu: &mut Cpu, _: &Instr) -> Fault {
    if cpu.cr0 & (CR0_TS | CR0_MP) == CR0_TS | CR0_MP {
        return Err(Exception::new(exception::NM));
    }
    if cpu.fpu.sw & SW_ES != 0 {
        signal_error(cpu)?;
    }
    Ok(())
}

/// Real-address or virtual-8086 mode: the environment holds linear pointers.
fn real_format(cpu: &Cpu) -> bool {
    cpu.real_mode() || cpu.v86_mode()
}

/// The FSTENV image (14 or 28 bytes).
fn env_image(cpu: &Cpu, op32: bool) -> Vec<u8> {
    let f = &cpu.fpu;
    let (cw, sw, tw) = (f.cw, f.status_word(), f.tag_word());
    let mut b = Vec::with_capacity(28);
    let put16 = |b: &mut Vec<u8>, v: u16| b.extend_from_slice(&v.to_le_bytes());
    if op32 {
        let put32 = |b: &mut Vec<u8>, v: u32| b.extend_from_slice(&v.to_le_bytes());
        // Reserved upper halves read as ones on the P6 family.
        put32(&mut b, 0xFFFF_0000 | cw as u32);
        put32(&mut b, 0xFFFF_0000 | sw as u32);
        put32(&mut b, 0xFFFF_0000 | tw as u32);
        if real_format(cpu) {
            let ip = ((f.fcs as u32) << 4).wrapping_add(f.fip);
            let dp = ((f.fds as u32) << 4).wrapping_add(f.fdp);
            put32(&mut b, 0xFFFF_0000 | (ip & 0xFFFF));
            put32(&mut b, ((ip & 0xFFFF_0000) >> 4) | (f.fop & 0x7FF) as u32);
            put32(&mut b, 0xFFFF_0000 | (dp & 0xFFFF));
            put32(&mut b, (dp & 0xFFFF_0000) >> 4);
        } else {
            put32(&mut b, f.fip);
            put32(&mut b, f.fcs as u32 | ((f.fop & 0x7FF) as u32) << 16);
            put32(&mut b, f.fdp);
            put32(&mut b, 0xFFFF_0000 | f.fds as u32);
        }
    } else {
        put16(&mut b, cw);
        put16(&mut b, sw);
        put16(&mut b, tw);
        if real_format(cpu) {
            let ip = ((f.fcs as u32) << 4).wrapping_add(f.fip);
            let dp = ((f.fds as u32) << 4).wrapping_add(f.fdp);
            put16(&mut b, ip as u16);
            put16(&mut b, ((ip >> 4) & 0xF000) as u16 | (f.fop & 0x7FF));
            put16(&mut b, dp as u16);
            put16(&mut b, ((dp >> 4) & 0xF000) as u16);
        } else {
            put16(&mut b, f.fip as u16);
            put16(&mut b, f.fcs);
            put16(&mut b, f.fdp as u16);
            put16(&mut b, f.fds);
        }
    }
    b
}

/// Load an environment image (14 or 28 bytes).
fn load_env(cpu: &mut Cpu, b: &[u8], op32: bool) {
    let real = real_format(cpu);
    let w = |k: usize| u16::from_le_bytes([b[k], b[k + 1]]);
    let d = |k: usize| u32::from_le_bytes([b[k], b[k + 1], b[k + 2], b[k + 3]]);
    let f = &mut cpu.fpu;
    let (cw, sw, tw) = if op32 {
        (w(0), w(4), w(8))
    } else {
        (w(0), w(2), w(4))
    };
    if op32 {
        if real {
            f.fip = (d(12) & 0xFFFF) | (d(16) << 4 & 0xFFFF_0000);
            f.fop = (d(16) & 0x7FF) as u16;
            f.fdp = (d(20) & 0xFFFF) | (d(24) << 4 & 0xFFFF_0000);
            f.fcs = 0;
            f.fds = 0;
        } else {
            f.fip = d(12);
            f.fcs = w(16);
            f.fop = w(18) & 0x7FF;
            f.fdp = d(20);
            f.fds = w(24);
        }
    } else if real {
        f.fip = w(6) as u32 | ((w(8) as u32 & 0xF000) << 4);
        f.fop = w(8) & 0x7FF;
        f.fdp = w(10) as u32 | ((w(12) as u32 & 0xF000) << 4);
        f.fcs = 0;
        f.fds = 0;
    } else {
        f.fip = w(6) as u32;
        f.fcs = w(8);
        f.fdp = w(10) as u32;
        f.fds = w(12);
    }
    f.cw = (cw & 0x1F3F) | 0x0040;
    f.set_status_word(sw);
    f.set_tag_word(tw);
    f.update_es();
}

fn env_len(op32: bool) -> u32 {
    if op32 {
        28
    } else {
        14
    }
}

/// FNSTENV: store the environment, then mask all exceptions.
fn fnstenv(cpu: &mut Cpu, i: &Instr) -> Fault {
    check_avail(cpu, false)?;
    let off = i.ea(cpu);
    let img = env_image(cpu, i.op32);
    probe_area(cpu, i.seg as usize, off, img.len() as u32, i.op32, true)?;
    write_parts(cpu, i.seg as usize, off, &img)?;
    cpu.fpu.cw |= EXC_MASK;
    // Nothing is unmasked now: ES and B clear, as after FLDCW (and on Intel hardware).
    cpu.fpu.update_es();
    Ok(())
}

/// FLDENV.
fn fldenv(cpu: &mut Cpu, i: &Instr) -> Fault {
    check_avail(cpu, true)?;
    let off = i.ea(cpu);
    let img = read_env(cpu, i, off, env_len(i.op32))?;
    load_env(cpu, &img, i.op32);
    Ok(())
}

/// The alignment of an FSTENV/FSAVE area (SDM Vol. 3A Table 6-7): 4 or 2 by operand size.
fn area_align(op32: bool) -> u32 {
    if op32 {
        4
    } else {
        2
    }
}

/// Read the environment of FLDENV or FRSTOR, after checking the whole area (`len` bytes:
/// see [`probe_area`]).
fn read_env(cpu: &mut Cpu, i: &Instr, off: u32, len: u32) -> Fault<Vec<u8>> {
    let seg = i.seg as usize;
    probe_area(cpu, seg, off, len, i.op32, false)?;
    let mut v = vec![0; env_len(i.op32) as usize];
    read_parts(cpu, seg, off, &mut v)?;
    Ok(v)
}

/// FNSAVE: environment and the eight registers in stack order, then FNINIT.
fn fnsave(cpu: &mut Cpu, i: &Instr) -> Fault {
    check_avail(cpu, false)?;
    let off = i.ea(cpu);
    let mut img = env_image(cpu, i.op32);
    for k in 0..8 {
        img.extend_from_slice(&cpu.fpu.st(k).to_bytes());
    }
    probe_area(cpu, i.seg as usize, off, img.len() as u32, i.op32, true)?;
    write_parts(cpu, i.seg as usize, off, &img)?;
    cpu.fpu.init();
    Ok(())
}

/// FRSTOR.
fn frstor(cpu: &mut Cpu, i: &Instr) -> Fault {
    check_avail(cpu, true)?;
    let off = i.ea(cpu);
    let seg = i.seg as usize;
    let env = read_env(cpu, i, off, env_len(i.op32) + 80)?;
    let base = off.wrapping_add(env_len(i.op32));
    let mut regs = [F80::ZERO; 8];
    for (k, r) in regs.iter_mut().enumerate() {
        *r = F80::from_bytes(read_bytes::<10>(
            cpu,
            seg,
            base.wrapping_add(10 * k as u32),
            1,
        )?);
    }
    // Registers first (stack order needs TOP from the environment), then tags from contents.
    let top = ((u16::from_le_bytes([
        env[if i.op32 { 4 } else { 2 }],
        env[if i.op32 { 5 } else { 3 }],
    ]) >> SW_TOP_SHIFT)
        & 7) as u8;
    for (k, r) in regs.iter().enumerate() {
        cpu.fpu.regs[((top as usize) + k) & 7] = *r;
    }
    load_env(cpu, &env, i.op32);
    Ok(())
}

/// Offsets in the FXSAVE image.
const FX_FCW: usize = 0;
const FX_FSW: usize = 2;
const FX_FTW: usize = 4;
const FX_FOP: usize = 6;
const FX_FIP: usize = 8;
const FX_FCS: usize = 12;
const FX_FDP: usize = 16;
const FX_FDS: usize = 20;
const FX_ST0: usize = 32;
/// The part of the 512-byte image this CPU (no SSE) defines: header and ST0-ST7.
const FX_LEN: usize = 160;

/// The linear address of a FXSAVE/FXRSTOR operand, which must be 16-byte aligned.
fn fx_check(cpu: &mut Cpu, i: &Instr) -> Fault<u32> {
    if cpu.cr0 & CR0_EM != 0 {
        return Err(Exception::ud());
    }
    if cpu.cr0 & CR0_TS != 0 {
        return Err(Exception::new(exception::NM));
    }
    let off = i.ea(cpu);
    if cpu.segs[i.seg as usize].base.wrapping_add(off) & 15 != 0 {
        return Err(Exception::gp(0));
    }
    Ok(off)
}

/// FXSAVE m512.
fn fxsave(cpu: &mut Cpu, i: &Instr) -> Fault {
    let off = fx_check(cpu, i)?;
    let f = &cpu.fpu;
    let mut b = [0u8; FX_LEN];
    b[FX_FCW..FX_FCW + 2].copy_from_slice(&f.cw.to_le_bytes());
    b[FX_FSW..FX_FSW + 2].copy_from_slice(&f.status_word().to_le_bytes());
    // Abridged tag word: one bit per physical register, set when not empty.
    b[FX_FTW] = (0..8).fold(0u8, |t, p| t | ((f.tag(p) != TAG_EMPTY) as u8) << p);
    b[FX_FOP..FX_FOP + 2].copy_from_slice(&(f.fop & 0x7FF).to_le_bytes());
    b[FX_FIP..FX_FIP + 4].copy_from_slice(&f.fip.to_le_bytes());
    b[FX_FCS..FX_FCS + 2].copy_from_slice(&f.fcs.to_le_bytes());
    b[FX_FDP..FX_FDP + 4].copy_from_slice(&f.fdp.to_le_bytes());
    b[FX_FDS..FX_FDS + 2].copy_from_slice(&f.fds.to_le_bytes());
    for k in 0..8 {
        let o = FX_ST0 + 16 * k;
        b[o..o + 10].copy_from_slice(&f.st(k as u8).to_bytes());
    }
    write_bytes(cpu, i.seg as usize, off, &b, 16)
}

/// FXRSTOR m512.
fn fxrstor(cpu: &mut Cpu, i: &Instr) -> Fault {
    let off = fx_check(cpu, i)?;
    let b = read_bytes::<FX_LEN>(cpu, i.seg as usize, off, 16)?;
    let w = |k: usize| u16::from_le_bytes([b[k], b[k + 1]]);
    let d = |k: usize| u32::from_le_bytes([b[k], b[k + 1], b[k + 2], b[k + 3]]);
    let f = &mut cpu.fpu;
    f.cw = (w(FX_FCW) & 0x1F3F) | 0x0040;
    f.set_status_word(w(FX_FSW));
    f.fop = w(FX_FOP) & 0x7FF;
    f.fip = d(FX_FIP);
    f.fcs = w(FX_FCS);
    f.fdp = d(FX_FDP);
    f.fds = w(FX_FDS);
    for k in 0..8 {
        let o = FX_ST0 + 16 * k;
        let mut r = [0u8; 10];
        r.copy_from_slice(&b[o..o + 10]);
        let p = f.phys(k as u8);
        f.regs[p] = F80::from_bytes(r);
    }
    let abridged = b[FX_FTW];
    let mut tw = 0u16;
    for p in 0..8 {
        if abridged & (1 << p) == 0 {
            tw |= TAG_EMPTY << (2 * p);
        }
    }
    f.set_tag_word(tw);
    f.update_es();
    Ok(())
}

// ---- Constants ----

/// The constants of FLD1, FLDL2T, FLDL2E, FLDPI, FLDLG2, FLDLN2, FLDZ as (exponent, top 64
/// significand bits, next 64 bits): the hardware keeps more bits than the register holds
/// and rounds them under the rounding control.
const CONSTANTS: [(u16, u64, u64); 7] = [
    (0x3FFF, 0x8000_0000_0000_0000, 0),
    (0x4000, 0xD49A_784B_CD1B_8AFE, 0x492B_F6FF_4DAF_DB4C),
    (0x3FFF, 0xB8AA_3B29_5C17_F0BB, 0xBE87_FED0_691D_3E88),
    (0x4000, 0xC90F_DAA2_2168_C234, 0xC4C6_628B_80DC_1CD1),
    (0x3FFD, 0x9A20_9A84_FBCF_F798, 0x8F89_59AC_0B7C_9178),
    (0x3FFE, 0xB172_17F7_D1CF_79AB, 0xC9E3_B398_03F2_F6AF),
    (0, 0, 0),
];

/// Constant `k` (index into [`CONSTANTS`]) rounded under rounding control `rc`.
pub fn constant(k: u8, rc: u16) -> F80 {
    let (e, hi, lo) = CONSTANTS[k as usize];
    if hi == 0 {
        return F80::ZERO;
    }
    // A scratch context: constant loads report no precision exception.
    let mut c = Ctx::new(CW_FINIT | rc << float80::CW_RC_SHIFT);
    c.round64(false, e as i32, (hi as u128) << 64 | lo as u128)
}

// ---- Decoding ----

/// Decode the opcodes of this group.
pub fn decode(d: &mut Decoder, op: u16) -> Fault<Handler> {
    match op {
        0x9B => return Ok(fwait),
        0x0FAE => {
            d.modrm()?;
            if d.is_reg() {
                return Ok(undefined());
            }
            return Ok(match d.i.reg {
                0 => fxsave,
                1 => fxrstor,
                _ => undefined(),
            });
        }
        _ => {}
    }
    d.modrm()?;
    let (reg, rm) = (d.i.reg, d.i.rm);
    // FOP: low three opcode bits and the ModR/M byte, kept for FSTENV/FXSAVE.
    let modrm = (d.mode << 6) | (reg << 3) | rm;
    d.i.imm = ((op as u32 & 7) << 8) | modrm as u32;
    let esc = (op & 7) as u8;
    Ok(if d.is_reg() {
        decode_reg(esc, reg, rm)
    } else {
        decode_mem(esc, reg)
    })
}

macro_rules! by_op {
    ($reg:expr, $f:ident, $($extra:tt)*) => {
        match $reg {
            0 => $f::<0, $($extra)*> as Handler,
            1 => $f::<1, $($extra)*>,
            4 => $f::<4, $($extra)*>,
            5 => $f::<5, $($extra)*>,
            6 => $f::<6, $($extra)*>,
            _ => $f::<7, $($extra)*>,
        }
    };
}

macro_rules! mem_arith {
    ($k:expr, $reg:expr) => {
        match $reg {
            0 => arith_mem::<$k, 0> as Handler,
            1 => arith_mem::<$k, 1>,
            2 => fcom_mem::<$k, 0>,
            3 => fcom_mem::<$k, 1>,
            4 => arith_mem::<$k, 4>,
            5 => arith_mem::<$k, 5>,
            6 => arith_mem::<$k, 6>,
            _ => arith_mem::<$k, 7>,
        }
    };
}

fn decode_mem(esc: u8, reg: u8) -> Handler {
    match esc {
        0 => mem_arith!(M_F32, reg),
        4 => mem_arith!(M_F64, reg),
        2 => mem_arith!(M_I32, reg),
        6 => mem_arith!(M_I16, reg),
        1 => match reg {
            0 => fld_mem::<M_F32>,
            2 => fst_mem::<M_F32, false>,
            3 => fst_mem::<M_F32, true>,
            4 => fldenv,
            5 => fldcw,
            6 => fnstenv,
            7 => fnstcw,
            _ => undefined(),
        },
        3 => match reg {
            0 => fld_mem::<M_I32>,
            2 => fst_mem::<M_I32, false>,
            3 => fst_mem::<M_I32, true>,
            5 => fld_mem::<M_F80>,
            7 => fst_mem::<M_F80, true>,
            // FISTTP is SSE3.
            _ => undefined(),
        },
        5 => match reg {
            0 => fld_mem::<M_F64>,
            2 => fst_mem::<M_F64, false>,
            3 => fst_mem::<M_F64, true>,
            4 => frstor,
            6 => fnsave,
            7 => fnstsw_mem,
            _ => undefined(),
        },
        _ => match reg {
            0 => fld_mem::<M_I16>,
            2 => fst_mem::<M_I16, false>,
            3 => fst_mem::<M_I16, true>,
            4 => fld_mem::<M_BCD>,
            5 => fld_mem::<M_I64>,
            6 => fst_mem::<M_BCD, true>,
            7 => fst_mem::<M_I64, true>,
            _ => undefined(),
        },
    }
}

fn decode_reg(esc: u8, reg: u8, rm: u8) -> Handler {
    match (esc, reg) {
        (0, 2) => fcom_reg::<false, 0>,
        (0, 3) => fcom_reg::<false, 1>,
        (0, r) => by_op!(r, arith_reg, false, false),
        // DC and DE reverse the sense of SUB/SUBR and DIV/DIVR (ST(i) is the destination).
        (4, 2) => fcom_reg::<false, 0>,
        (4, 3) => fcom_reg::<false, 1>,
        (4, r) => by_op!(if r >= 4 { r ^ 1 } else { r }, arith_reg, true, false),
        (6, 2) => fcom_reg::<false, 1>,
        (6, 3) if rm == 1 => fcom_reg::<false, 2>,
        (6, 3) => undefined(),
        (6, r) => by_op!(if r >= 4 { r ^ 1 } else { r }, arith_reg, true, true),
        (1, 0) => fld_reg,
        (1, 1) => fxch,
        (1, 2) if rm == 0 => fnop,
        (1, 3) => fst_reg::<true>,
        (1, 4) => match rm {
            0 => unary::<U_CHS>,
            1 => unary::<U_ABS>,
            4 => ftst,
            5 => fxam,
            _ => undefined(),
        },
        (1, 5) => match rm {
            0 => fld_const::<0>,
            1 => fld_const::<1>,
            2 => fld_const::<2>,
            3 => fld_const::<3>,
            4 => fld_const::<4>,
            5 => fld_const::<5>,
            6 => fld_const::<6>,
            _ => undefined(),
        },
        (1, 6) => match rm {
            0 => unary::<U_F2XM1>,
            1 => binary_st01::<B_YL2X>,
            2 => unary_push::<P_TAN>,
            3 => binary_st01::<B_ATAN>,
            4 => unary_push::<P_XTRACT>,
            5 => binary_st01::<B_PREM1>,
            6 => fincdec::<false>,
            _ => fincdec::<true>,
        },
        (1, 7) => match rm {
            0 => binary_st01::<B_PREM>,
            1 => binary_st01::<B_YL2XP1>,
            2 => unary::<U_SQRT>,
            3 => unary_push::<P_SINCOS>,
            4 => unary::<U_RNDINT>,
            5 => binary_st01::<B_SCALE>,
            6 => unary::<U_SIN>,
            _ => unary::<U_COS>,
        },
        (2, 0) => fcmov::<0, false>,
        (2, 1) => fcmov::<1, false>,
        (2, 2) => fcmov::<2, false>,
        (2, 3) => fcmov::<3, false>,
        (2, 5) if rm == 1 => fcom_reg::<true, 2>,
        (3, 0) => fcmov::<0, true>,
        (3, 1) => fcmov::<1, true>,
        (3, 2) => fcmov::<2, true>,
        (3, 3) => fcmov::<3, true>,
        (3, 4) => match rm {
            0 | 1 | 4 => fnop_control,
            2 => fnclex,
            3 => fninit,
            _ => undefined(),
        },
        (3, 5) => fcomi::<true, false>,
        (3, 6) => fcomi::<false, false>,
        (5, 0) => ffree::<false>,
        (5, 1) => fxch,
        (5, 2) => fst_reg::<false>,
        (5, 3) => fst_reg::<true>,
        (5, 4) => fcom_reg::<true, 0>,
        (5, 5) => fcom_reg::<true, 1>,
        (7, 0) => ffree::<true>,
        (7, 1) => fxch,
        (7, 2) | (7, 3) => fst_reg::<true>,
        (7, 4) if rm == 0 => fnstsw_ax,
        (7, 5) => fcomi::<true, true>,
        (7, 6) => fcomi::<false, true>,
        _ => undefined(),
    }
}
