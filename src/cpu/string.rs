//! String instructions: MOVS, CMPS, STOS, LODS, SCAS, INS, OUTS, with and without REP.
//!
//! Handlers are generic over the element width `W` and the address size `A` (a [`Width`] used
//! only for its mask: W16 means SI/DI/CX, W32 means ESI/EDI/ECX). The source is `seg:(E)SI`
//! with `seg` = DS or the override; the destination is always ES:(E)DI.
//!
//! A REP instruction runs at most [`REP_BATCH`] iterations per call; if the count is not
//! exhausted it points EIP back at itself and returns, so the run loop can take interrupts and
//! the instruction resumes where it stopped. A fault leaves the registers as the completed
//! iterations left them, with EIP at the instruction, exactly like the hardware. The hot
//! forward REP MOVS and REP STOS copy whole runs within a page through the TLB; REP STOS into
//! device memory hands the device a page's run at once.

use super::counters::Insn;
use super::decode::{Decoder, Handler, Instr, REP_NONE, REP_NZ};
use super::exception::Fault;
use super::flags;
use super::operand::{Width, W16, W32, W8};
use super::seg::Segment;
use super::{Cpu, EAX, ECX, EDI, EDX, ESI};

/// Iterations a REP instruction performs before yielding to the run loop.
pub const REP_BATCH: u32 = 16384;

const ES: usize = Segment::ES as usize;

/// Pick `f::<W, A>` by the opcode's byte/word bit, operand size and address size.
macro_rules! string_op {
    ($d:expr, $op:expr, $f:ident $(, $extra:tt)*) => {{
        let byte = $op & 1 == 0;
        match (byte, $d.i.op32, $d.i.addr32) {
            (true, _, false) => $f::<W8, W16 $(, $extra)*> as Handler,
            (true, _, true) => $f::<W8, W32 $(, $extra)*>,
            (false, false, false) => $f::<W16, W16 $(, $extra)*>,
            (false, false, true) => $f::<W16, W32 $(, $extra)*>,
            (false, true, false) => $f::<W32, W16 $(, $extra)*>,
            (false, true, true) => $f::<W32, W32 $(, $extra)*>,
        }
    }};
}

/// Decode the opcodes of this group. REPE/REPNE differ only for CMPS and SCAS; the other string
/// instructions treat F2 like F3.
pub fn decode(d: &mut Decoder, op: u16) -> Fault<Handler> {
    let rep = d.i.rep != REP_NONE;
    let repne = d.i.rep == REP_NZ;
    Ok(match (op, rep) {
        (0x6C | 0x6D, false) => string_op!(d, op, ins),
        (0x6C | 0x6D, true) => string_op!(d, op, rep_ins),
        (0x6E | 0x6F, false) => string_op!(d, op, outs),
        (0x6E | 0x6F, true) => string_op!(d, op, rep_outs),
        (0xA4 | 0xA5, false) => string_op!(d, op, movs),
        (0xA4 | 0xA5, true) => string_op!(d, op, rep_movs),
        (0xA6 | 0xA7, false) => string_op!(d, op, cmps),
        (0xA6 | 0xA7, true) if repne => string_op!(d, op, rep_cmps, false),
        (0xA6 | 0xA7, true) => string_op!(d, op, rep_cmps, true),
        (0xAA | 0xAB, false) => string_op!(d, op, stos),
        (0xAA | 0xAB, true) => string_op!(d, op, rep_stos),
        (0xAC | 0xAD, false) => string_op!(d, op, lods),
        (0xAC | 0xAD, true) => string_op!(d, op, rep_lods),
        (_, false) => string_op!(d, op, scas),
        (_, true) if repne => string_op!(d, op, rep_scas, false),
        (_, true) => string_op!(d, op, rep_scas, true),
    })
}

// ---- Register helpers ----

/// Register `r` at address size `A`.
#[inline(always)]
fn areg<A: Width>(cpu: &Cpu, r: usize) -> u32 {
    cpu.regs[r] & A::MASK
}

/// Add `delta` to register `r` at address size `A` (a 16-bit index wraps within 64 KiB).
#[inline(always)]
fn advance<A: Width>(cpu: &mut Cpu, r: usize, delta: u32) {
    let v = cpu.regs[r].wrapping_add(delta);
    A::set_reg(cpu, r as u8, v);
}

/// The per-element step: +size, or -size when DF is set.
#[inline(always)]
fn step<W: Width>(cpu: &Cpu) -> u32 {
    if cpu.flags.sys(flags::DF) {
        W::BYTES.wrapping_neg()
    } else {
        W::BYTES
    }
}

/// How many iterations this call may run: one under single-step (TF traps after each
/// iteration), otherwise a batch.
#[inline(always)]
fn batch(cpu: &Cpu) -> u32 {
    if cpu.flags.sys(flags::TF) {
        1
    } else {
        REP_BATCH
    }
}

/// Run a REP loop: `once` performs one iteration and says whether to go on (REPE/REPNE).
/// The count register is decremented after every completed iteration.
#[inline(always)]
fn rep_loop<A: Width>(
    cpu: &mut Cpu,
    i: &Instr,
    mut once: impl FnMut(&mut Cpu, &Instr) -> Fault<bool>,
) -> Fault {
    // Compiled code may have done part of this batch already (then TF is clear).
    let mut n = std::mem::take(&mut cpu.rep_done);
    let mut count = areg::<A>(cpu, ECX);
    if count == 0 {
        return Ok(());
    }
    let limit = batch(cpu);
    loop {
        let go_on = once(cpu, i)?;
        count = count.wrapping_sub(1);
        A::set_reg(cpu, ECX as u8, count);
        if count == 0 || !go_on {
            return Ok(());
        }
        n += 1;
        if n >= limit {
            // Not finished: execute this instruction again after the run loop had its look.
            cpu.eip = cpu.instr_eip(i);
            return Ok(());
        }
    }
}

// ---- One iteration of each instruction ----

#[inline(always)]
fn movs_once<W: Width, A: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = W::read_mem(cpu, i.seg as usize, areg::<A>(cpu, ESI))?;
    W::write_mem(cpu, ES, areg::<A>(cpu, EDI), v)?;
    let d = step::<W>(cpu);
    advance::<A>(cpu, ESI, d);
    advance::<A>(cpu, EDI, d);
    Ok(())
}

#[inline(always)]
fn stos_once<W: Width, A: Width>(cpu: &mut Cpu) -> Fault {
    let v = W::reg(cpu, EAX as u8);
    W::write_mem(cpu, ES, areg::<A>(cpu, EDI), v)?;
    advance::<A>(cpu, EDI, step::<W>(cpu));
    Ok(())
}

#[inline(always)]
fn lods_once<W: Width, A: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = W::read_mem(cpu, i.seg as usize, areg::<A>(cpu, ESI))?;
    W::set_reg(cpu, EAX as u8, v);
    advance::<A>(cpu, ESI, step::<W>(cpu));
    Ok(())
}

/// CMPS compares [seg:SI] - [ES:DI].
#[inline(always)]
fn cmps_once<W: Width, A: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    // ES:EDI is read first, as this Intel host does: when both operands fault, the fault
    // (and CR2) is the destination's. The SDM leaves the order of the two reads open.
    let b = W::read_mem(cpu, ES, areg::<A>(cpu, EDI))?;
    let a = W::read_mem(cpu, i.seg as usize, areg::<A>(cpu, ESI))?;
    cpu.flags.set_sub(W::BITS, a, b, a.wrapping_sub(b));
    let d = step::<W>(cpu);
    advance::<A>(cpu, ESI, d);
    advance::<A>(cpu, EDI, d);
    Ok(())
}

/// SCAS compares eAX - [ES:DI].
#[inline(always)]
fn scas_once<W: Width, A: Width>(cpu: &mut Cpu) -> Fault {
    let a = W::reg(cpu, EAX as u8);
    let b = W::read_mem(cpu, ES, areg::<A>(cpu, EDI))?;
    cpu.flags.set_sub(W::BITS, a, b, a.wrapping_sub(b));
    advance::<A>(cpu, EDI, step::<W>(cpu));
    Ok(())
}

/// INS: the destination is probed before the port is read, so a faulting write does not
/// consume device data.
#[inline(always)]
fn ins_once<W: Width, A: Width>(cpu: &mut Cpu) -> Fault {
    cpu.count(Insn::Ins);
    let lin = cpu.probe_write(ES, areg::<A>(cpu, EDI), W::BYTES)?;
    let v = cpu.port_in(cpu.regs[EDX] as u16, W::BYTES as u8);
    W::write_lin(cpu, lin, v)?;
    advance::<A>(cpu, EDI, step::<W>(cpu));
    Ok(())
}

#[inline(always)]
fn outs_once<W: Width, A: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::Outs);
    let v = W::read_mem(cpu, i.seg as usize, areg::<A>(cpu, ESI))?;
    cpu.port_out(cpu.regs[EDX] as u16, W::BYTES as u8, v);
    advance::<A>(cpu, ESI, step::<W>(cpu));
    Ok(())
}

// ---- Handlers ----

fn movs<W: Width, A: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    movs_once::<W, A>(cpu, i)
}

fn stos<W: Width, A: Width>(cpu: &mut Cpu, _: &Instr) -> Fault {
    stos_once::<W, A>(cpu)
}

fn lods<W: Width, A: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    lods_once::<W, A>(cpu, i)
}

fn cmps<W: Width, A: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cmps_once::<W, A>(cpu, i)
}

fn scas<W: Width, A: Width>(cpu: &mut Cpu, _: &Instr) -> Fault {
    scas_once::<W, A>(cpu)
}

fn ins<W: Width, A: Width>(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.check_io_permission(cpu.regs[EDX] as u16, W::BYTES as u8)?;
    ins_once::<W, A>(cpu)
}

fn outs<W: Width, A: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.check_io_permission(cpu.regs[EDX] as u16, W::BYTES as u8)?;
    outs_once::<W, A>(cpu, i)
}

fn rep_lods<W: Width, A: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    rep_loop::<A>(cpu, i, |cpu, i| lods_once::<W, A>(cpu, i).map(|_| true))
}

/// REPE (`Z` = true) or REPNE CMPS: stops when ZF differs from `Z`.
fn rep_cmps<W: Width, A: Width, const Z: bool>(cpu: &mut Cpu, i: &Instr) -> Fault {
    rep_loop::<A>(cpu, i, |cpu, i| {
        cmps_once::<W, A>(cpu, i)?;
        Ok(cpu.flags.zf() == Z)
    })
}

fn rep_scas<W: Width, A: Width, const Z: bool>(cpu: &mut Cpu, i: &Instr) -> Fault {
    rep_loop::<A>(cpu, i, |cpu, _| {
        scas_once::<W, A>(cpu)?;
        Ok(cpu.flags.zf() == Z)
    })
}

fn rep_ins<W: Width, A: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    if areg::<A>(cpu, ECX) == 0 {
        return Ok(());
    }
    cpu.check_io_permission(cpu.regs[EDX] as u16, W::BYTES as u8)?;
    rep_loop::<A>(cpu, i, |cpu, _| ins_once::<W, A>(cpu).map(|_| true))
}

fn rep_outs<W: Width, A: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    if areg::<A>(cpu, ECX) == 0 {
        return Ok(());
    }
    cpu.check_io_permission(cpu.regs[EDX] as u16, W::BYTES as u8)?;
    rep_loop::<A>(cpu, i, |cpu, i| outs_once::<W, A>(cpu, i).map(|_| true))
}

// ---- REP MOVS / REP STOS with a fast path ----

/// Bytes that an access run starting at `off` in a segment whose valid offsets are `lo..=hi`
/// can cover without leaving the segment, the page of `lin`, or the address-size range.
#[inline(always)]
fn run_room<A: Width>(off: u32, lin: u32, lo: u32, hi: u32) -> u32 {
    if off < lo || off > hi {
        return 0;
    }
    let seg = (hi as u64 - off as u64 + 1).min(A::MASK as u64 - off as u64 + 1);
    let page = 0x1000 - (lin & 0xFFF) as u64;
    seg.min(page) as u32
}

/// A run of forward MOVS iterations within one page of source and destination, copied in host
/// memory. Returns how many iterations were done (0: take the ordinary path for one).
#[inline(always)]
fn movs_fast<W: Width, A: Width>(cpu: &mut Cpu, i: &Instr, count: u32) -> u32 {
    let si = areg::<A>(cpu, ESI);
    let di = areg::<A>(cpu, EDI);
    let src = &cpu.segs[i.seg as usize];
    let dst = &cpu.segs[ES];
    let src_lin = src.base.wrapping_add(si);
    let dst_lin = dst.base.wrapping_add(di);
    let src_room = run_room::<A>(si, src_lin, src.read_lo, src.read_hi);
    let dst_room = run_room::<A>(di, dst_lin, dst.write_lo, dst.write_hi);
    let n = (src_room.min(dst_room) / W::BYTES).min(count);
    if n == 0 {
        return 0;
    }
    let (Some(sp), Some(dp)) = (
        cpu.mem.tlb.lookup(src_lin, cpu.tlb_read_perm),
        cpu.mem.tlb.lookup(dst_lin, cpu.tlb_write_perm),
    ) else {
        return 0;
    };
    let (sp, dp) = (sp as usize, dp as usize);
    let bytes = (n * W::BYTES) as usize;
    let ram = &mut cpu.mem.ram;
    if sp + bytes > ram.len() || dp + bytes > ram.len() {
        return 0;
    }
    if dp > sp && dp < sp + bytes {
        // Overlap with the destination ahead of the source: the result depends on the order
        // of the element copies. A forward byte copy reproduces it when the distance is at
        // least one element; closer overlaps take the ordinary path.
        if dp - sp < W::BYTES as usize {
            return 0;
        }
        for k in 0..bytes {
            ram[dp + k] = ram[sp + k];
        }
    } else {
        ram.copy_within(sp..sp + bytes, dp);
    }
    let moved = n * W::BYTES;
    advance::<A>(cpu, ESI, moved);
    advance::<A>(cpu, EDI, moved);
    n
}

/// A run of forward STOS iterations within one page, filled in host memory.
#[inline(always)]
fn stos_fast<W: Width, A: Width>(cpu: &mut Cpu, count: u32) -> u32 {
    let di = areg::<A>(cpu, EDI);
    let dst = &cpu.segs[ES];
    let dst_lin = dst.base.wrapping_add(di);
    let n = (run_room::<A>(di, dst_lin, dst.write_lo, dst.write_hi) / W::BYTES).min(count);
    if n == 0 {
        return 0;
    }
    let Some(dp) = cpu.mem.tlb.lookup(dst_lin, cpu.tlb_write_perm) else {
        return 0;
    };
    let dp = dp as usize;
    let bytes = (n * W::BYTES) as usize;
    let v = W::reg(cpu, EAX as u8);
    let Some(region) = cpu.mem.ram.get_mut(dp..dp + bytes) else {
        return 0;
    };
    let width = W::BYTES as usize;
    let pattern = v.to_le_bytes();
    if pattern[..width].iter().all(|&b| b == pattern[0]) {
        // One repeated byte (a kernel clearing a page with zeros): a plain memset.
        region.fill(pattern[0]);
    } else {
        // Write the element once, then double the filled prefix with block copies.
        region[..width].copy_from_slice(&pattern[..width]);
        let mut filled = width;
        while filled < bytes {
            let n = filled.min(bytes - filled);
            region.copy_within(..n, filled);
            filled += n;
        }
    }
    advance::<A>(cpu, EDI, n * W::BYTES);
    n
}

/// A run of forward STOS iterations within one page of device memory, given to the device at
/// once ([`Cpu::fill_device_page`]): the kernel clearing a framebuffer. Returns how many were
/// done (0: not device memory, or the ordinary path must raise a fault).
#[inline(always)]
fn stos_device<W: Width, A: Width>(cpu: &mut Cpu, count: u32) -> u32 {
    let di = areg::<A>(cpu, EDI);
    let dst = &cpu.segs[ES];
    let dst_lin = dst.base.wrapping_add(di);
    let n = (run_room::<A>(di, dst_lin, dst.write_lo, dst.write_hi) / W::BYTES).min(count);
    let v = W::reg(cpu, EAX as u8);
    if n == 0 || !cpu.fill_device_page(dst_lin, W::BYTES, v, n) {
        return 0;
    }
    advance::<A>(cpu, EDI, n * W::BYTES);
    n
}

/// The shared REP driver for MOVS and STOS: `fast(cpu, max)` copies a run of up to `max`
/// elements within a page and returns how many it did (0 when it cannot), `once(cpu)` does one
/// element the architectural way. ECX is updated after every step so a fault leaves it counting
/// the completed elements; after a batch the instruction restarts itself so interrupts get in.
#[inline(always)]
fn rep_batched<A: Width>(
    cpu: &mut Cpu,
    i: &Instr,
    mut fast: impl FnMut(&mut Cpu, u32) -> u32,
    mut once: impl FnMut(&mut Cpu) -> Fault,
) -> Fault {
    // Compiled code may have done part of this batch already (then TF and DF are clear).
    let mut n = std::mem::take(&mut cpu.rep_done);
    let mut count = areg::<A>(cpu, ECX);
    if count == 0 {
        return Ok(());
    }
    let limit = batch(cpu);
    let use_fast = limit > 1 && !cpu.flags.sys(flags::DF);
    loop {
        let k = match if use_fast {
            fast(cpu, count.min(limit - n))
        } else {
            0
        } {
            0 => {
                once(cpu)?;
                1
            }
            k => k,
        };
        count = count.wrapping_sub(k);
        A::set_reg(cpu, ECX as u8, count);
        if count == 0 {
            return Ok(());
        }
        n += k;
        if n >= limit {
            cpu.eip = cpu.instr_eip(i);
            return Ok(());
        }
    }
}

/// REP MOVS: runs within a page go through [`movs_fast`], everything else (page crossings,
/// TLB misses, MMIO, code pages, DF = 1, segment ends) one element at a time.
fn rep_movs<W: Width, A: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    rep_batched::<A>(
        cpu,
        i,
        |cpu, max| movs_fast::<W, A>(cpu, i, max),
        |cpu| movs_once::<W, A>(cpu, i),
    )
}

/// REP STOS, with the same fast path as REP MOVS; a run into device memory goes to the device
/// at once ([`stos_device`]).
fn rep_stos<W: Width, A: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    rep_batched::<A>(
        cpu,
        i,
        |cpu, max| match stos_fast::<W, A>(cpu, max) {
            0 => stos_device::<W, A>(cpu, max),
            n => n,
        },
        stos_once::<W, A>,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Bus;
    use crate::cpu::{RunExit, SegCache, ESP};
    use crate::mem::PageKind;
    use std::cell::RefCell;
    use std::rc::Rc;

    const CODE: u32 = 0x1000;
    const CS: usize = Segment::CS as usize;
    const DS: usize = Segment::DS as usize;

    /// A real-mode CPU running `code` at 0100:0000, with DS and ES flat 4 GiB ("unreal mode")
    /// so that 32-bit addresses reach past 64 KiB.
    fn cpu_with(code: &[u8]) -> Cpu {
        set_up(Cpu::with_ram(1 << 21), code)
    }

    /// [`cpu_with`] for a CPU made elsewhere (on another bus).
    fn set_up(mut cpu: Cpu, code: &[u8]) -> Cpu {
        cpu.mem.load(CODE, code);
        cpu.segs[CS] = SegCache::real((CODE >> 4) as u16);
        cpu.segs[Segment::SS as usize] = SegCache::real(0x8000);
        cpu.regs[ESP] = 0xFFF0;
        for s in [DS, ES] {
            cpu.segs[s] = SegCache::real(0);
            cpu.segs[s].limit = u32::MAX;
            cpu.segs[s].compute_ranges();
        }
        cpu.eip = 0;
        cpu
    }

    fn run(cpu: &mut Cpu) {
        assert_eq!(cpu.run(1_000_000), RunExit::Halted);
    }

    /// Point interrupt `vector` (real mode) at a HLT at 0000:0500: EIP 0x501 after delivery.
    fn halt_on(cpu: &mut Cpu, vector: u32) {
        cpu.mem.load(vector * 4, &[0x00, 0x05, 0x00, 0x00]);
        cpu.mem.load(0x500, &[0xF4]);
    }

    fn fill_pattern(cpu: &mut Cpu, at: u32, len: usize) {
        let bytes: Vec<u8> = (0..len).map(|k| (k * 7 + 3) as u8).collect();
        cpu.mem.load(at, &bytes);
    }

    #[test]
    fn rep_movsd_32bit_addressing_crosses_pages_and_64k() {
        // rep movsd (a32, o32); hlt
        let mut cpu = cpu_with(&[0x66, 0x67, 0xF3, 0xA5, 0xF4]);
        fill_pattern(&mut cpu, 0x10_0FF0, 12_000);
        cpu.regs[ESI] = 0x10_0FF0;
        cpu.regs[EDI] = 0x18_0001;
        cpu.regs[ECX] = 3000;
        run(&mut cpu);
        assert_eq!(cpu.regs[ECX], 0);
        assert_eq!(cpu.regs[ESI], 0x10_0FF0 + 12_000);
        assert_eq!(cpu.regs[EDI], 0x18_0001 + 12_000);
        assert_eq!(
            &cpu.mem.ram[0x18_0001..0x18_0001 + 12_000],
            &cpu.mem.ram[0x10_0FF0..0x10_0FF0 + 12_000].to_vec()[..]
        );
    }

    #[test]
    fn rep_movsb_longer_than_a_batch_restarts_and_finishes() {
        let mut cpu = cpu_with(&[0x67, 0xF3, 0xA4, 0xF4]);
        let n = (REP_BATCH * 3 + 5) as usize;
        fill_pattern(&mut cpu, 0x2_0000, n);
        cpu.regs[ESI] = 0x2_0000;
        cpu.regs[EDI] = 0x10_0000;
        cpu.regs[ECX] = n as u32;
        run(&mut cpu);
        assert_eq!(cpu.regs[ECX], 0);
        assert_eq!(cpu.eip, 4);
        assert_eq!(
            &cpu.mem.ram[0x10_0000..0x10_0000 + n],
            &cpu.mem.ram[0x2_0000..0x2_0000 + n].to_vec()[..]
        );
        // Each batch counts as one retired instruction: three restarts, the last batch, HLT.
        assert_eq!(cpu.instructions, 5);
    }

    #[test]
    fn rep_movsb_overlapping_forward_replicates_like_hardware() {
        // The classic fill idiom: dst = src + 1 copies the first byte forward.
        let mut cpu = cpu_with(&[0x67, 0xF3, 0xA4, 0xF4]);
        cpu.mem.load(0x3_0000, &[0xAB, 1, 2, 3, 4, 5, 6, 7, 8]);
        cpu.regs[ESI] = 0x3_0000;
        cpu.regs[EDI] = 0x3_0001;
        cpu.regs[ECX] = 8;
        run(&mut cpu);
        assert_eq!(&cpu.mem.ram[0x3_0000..0x3_0009], &[0xAB; 9]);
    }

    #[test]
    fn rep_movsd_overlap_closer_than_an_element_copies_element_by_element() {
        let mut cpu = cpu_with(&[0x66, 0x67, 0xF3, 0xA5, 0xF4]);
        let init: Vec<u8> = (0..20).collect();
        cpu.mem.load(0x3_0000, &init);
        cpu.regs[ESI] = 0x3_0000;
        cpu.regs[EDI] = 0x3_0002;
        cpu.regs[ECX] = 4;
        run(&mut cpu);
        let mut want = init.clone();
        for k in 0..4 {
            let e: Vec<u8> = want[k * 4..k * 4 + 4].to_vec();
            want[k * 4 + 2..k * 4 + 6].copy_from_slice(&e);
        }
        assert_eq!(&cpu.mem.ram[0x3_0000..0x3_0014], &want[..]);
    }

    #[test]
    fn rep_stosd_32bit_backwards() {
        // std; rep stosd (a32, o32); hlt
        let mut cpu = cpu_with(&[0xFD, 0x66, 0x67, 0xF3, 0xAB, 0xF4]);
        cpu.regs[EAX] = 0x1122_3344;
        cpu.regs[EDI] = 0x12_0008;
        cpu.regs[ECX] = 3;
        run(&mut cpu);
        assert_eq!(cpu.regs[EDI], 0x12_0008 - 12);
        assert_eq!(cpu.regs[ECX], 0);
        for k in 0..3 {
            let a = 0x12_0000 + 8 - 4 * k;
            assert_eq!(&cpu.mem.ram[a..a + 4], &[0x44, 0x33, 0x22, 0x11]);
        }
    }

    #[test]
    fn rep_stosw_16bit_addressing_wraps_di() {
        let mut cpu = cpu_with(&[0xF3, 0xAB, 0xF4]);
        cpu.regs[EAX] = 0xBEEF;
        cpu.regs[EDI] = 0x1234_FFFC;
        cpu.regs[ECX] = 0xABCD_0004;
        run(&mut cpu);
        // DI wraps within 64 KiB, the upper halves of EDI and ECX stay.
        assert_eq!(cpu.regs[EDI], 0x1234_0004);
        assert_eq!(cpu.regs[ECX], 0xABCD_0000);
        assert_eq!(&cpu.mem.ram[0xFFFC..0x10000], &[0xEF, 0xBE, 0xEF, 0xBE]);
        assert_eq!(&cpu.mem.ram[0..4], &[0xEF, 0xBE, 0xEF, 0xBE]);
    }

    #[test]
    fn repne_scasb_32bit_finds_byte() {
        let mut cpu = cpu_with(&[0x67, 0xF2, 0xAE, 0xF4]);
        cpu.mem.load(0x15_0000, b"hello, world\0");
        cpu.regs[EAX] = 0;
        cpu.regs[EDI] = 0x15_0000;
        cpu.regs[ECX] = u32::MAX;
        run(&mut cpu);
        assert_eq!(cpu.regs[EDI], 0x15_0000 + 13);
        assert_eq!(cpu.regs[ECX], u32::MAX - 13);
        assert!(cpu.flags.zf());
    }

    #[test]
    fn repe_cmpsd_stops_at_first_difference() {
        let mut cpu = cpu_with(&[0x66, 0x67, 0xF3, 0xA7, 0xF4]);
        cpu.mem
            .load(0x4_0000, &[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
        cpu.mem
            .load(0x5_0000, &[1, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0]);
        cpu.regs[ESI] = 0x4_0000;
        cpu.regs[EDI] = 0x5_0000;
        cpu.regs[ECX] = 10;
        run(&mut cpu);
        assert_eq!(cpu.regs[ECX], 7);
        assert_eq!(cpu.regs[ESI], 0x4_000C);
        assert!(!cpu.flags.zf());
        assert!(cpu.flags.cf()); // 3 < 4
    }

    #[test]
    fn lodsd_with_segment_override_and_32bit_address() {
        // fs lodsd (o32, a32); hlt
        let mut cpu = cpu_with(&[0x66, 0x67, 0x64, 0xAD, 0xF4]);
        cpu.segs[Segment::FS as usize] = SegCache::real(0x1000);
        cpu.mem.load(0x1_0010, &[0x78, 0x56, 0x34, 0x12]);
        cpu.regs[ESI] = 0x10;
        run(&mut cpu);
        assert_eq!(cpu.regs[EAX], 0x1234_5678);
        assert_eq!(cpu.regs[ESI], 0x14);
    }

    #[test]
    fn fault_midway_keeps_completed_iterations_and_restarts() {
        // rep movsb whose destination runs past the ES limit: #GP after 4 bytes.
        let mut cpu = cpu_with(&[0xF3, 0xA4, 0xF4]);
        halt_on(&mut cpu, 13); // #GP
        cpu.segs[ES] = SegCache::real(0x6000);
        cpu.segs[ES].limit = 0x103;
        cpu.segs[ES].compute_ranges();
        cpu.regs[ESI] = 0x200;
        cpu.regs[EDI] = 0x100;
        cpu.regs[ECX] = 10;
        run(&mut cpu);
        assert_eq!(cpu.regs[ECX], 6);
        assert_eq!(cpu.regs[ESI], 0x204);
        assert_eq!(cpu.regs[EDI], 0x104);
        // The pushed return address is the REP instruction itself.
        let sp = (cpu.regs[ESP] & 0xFFFF) as usize;
        assert_eq!(cpu.mem.ram[0x8_0000 + sp], 0);
        assert_eq!(cpu.segs[CS].selector, 0);
        assert_eq!(cpu.eip, 0x501);
    }

    /// What a [`RecordingBus`] saw: each MMIO store with the clock it was told, and each run it
    /// was handed at once (address, count).
    #[derive(Default)]
    struct StoreLog {
        now: u64,
        stores: Vec<(u32, u8, u32, u64)>,
        runs: Vec<(u32, u32)>,
    }

    struct RecordingBus(Rc<RefCell<StoreLog>>);

    impl Bus for RecordingBus {
        fn io_read(&mut self, _: u16, _: u8) -> u32 {
            u32::MAX
        }
        fn io_write(&mut self, _: u16, _: u8, _: u32) {}
        fn mmio_read(&mut self, _: u32, _: u8) -> u32 {
            0
        }
        fn mmio_write(&mut self, addr: u32, size: u8, value: u32) {
            let mut log = self.0.borrow_mut();
            let now = log.now;
            log.stores.push((addr, size, value, now));
        }
        fn mmio_fill(&mut self, addr: u32, size: u8, value: u32, count: u32) {
            self.0.borrow_mut().runs.push((addr, count));
            for k in 0..count {
                self.mmio_write(addr + k * u32::from(size), size, value);
            }
        }
        fn set_instructions(&mut self, instructions: u64) {
            self.0.borrow_mut().now = instructions;
        }
    }

    /// [`cpu_with`] on a [`RecordingBus`], with device memory at 0x80000-0x81FFF (RAM after it).
    fn cpu_on_devices(code: &[u8]) -> (Cpu, Rc<RefCell<StoreLog>>) {
        let log = Rc::new(RefCell::new(StoreLog::default()));
        let mut cpu = set_up(Cpu::new(1 << 21, Box::new(RecordingBus(log.clone()))), code);
        cpu.mem.map(0x8_0000, 0x2000, PageKind::Mmio);
        (cpu, log)
    }

    #[test]
    fn rep_stos_into_device_memory_reaches_the_device_a_page_at_a_time() {
        // nop; rep stosb (a32); hlt: from the middle of the first device page, through the
        // second, into RAM.
        let (mut cpu, log) = cpu_on_devices(&[0x90, 0x67, 0xF3, 0xAA, 0xF4]);
        cpu.regs[EAX] = 0x5A;
        cpu.regs[EDI] = 0x8_0F00;
        cpu.regs[ECX] = 0x2100;
        run(&mut cpu);
        assert_eq!((cpu.regs[ECX], cpu.regs[EDI]), (0, 0x8_3000));
        let log = log.borrow();
        // Every byte the device's own, in order, at the time of the REP (one NOP before it).
        let expected: Vec<_> = (0x8_0F00..0x8_2000).map(|a| (a, 1, 0x5A, 1)).collect();
        assert_eq!(log.stores, expected);
        assert_eq!(log.runs, vec![(0x8_0F00, 0x100), (0x8_1000, 0x1000)]);
        assert!(cpu.mem.ram[0x8_0F00..0x8_2000].iter().all(|&b| b == 0));
        assert!(cpu.mem.ram[0x8_2000..0x8_3000].iter().all(|&b| b == 0x5A));
        assert_eq!(cpu.instructions, 3, "nop, the REP in one batch, hlt");
    }

    #[test]
    fn rep_stos_into_device_memory_stops_at_the_segment_limit_with_its_elements_done() {
        // rep stosd (o32, a32) past the ES limit, inside device memory: #GP after 32 elements.
        let (mut cpu, log) = cpu_on_devices(&[0x66, 0x67, 0xF3, 0xAB, 0xF4]);
        halt_on(&mut cpu, 13); // #GP
        cpu.segs[ES].limit = 0x8_0F7F;
        cpu.segs[ES].compute_ranges();
        cpu.regs[EAX] = 0x1122_3344;
        cpu.regs[EDI] = 0x8_0F00;
        cpu.regs[ECX] = 0x100;
        run(&mut cpu);
        assert_eq!((cpu.regs[ECX], cpu.regs[EDI]), (0x100 - 32, 0x8_0F80));
        assert_eq!(cpu.eip, 0x501, "#GP delivered");
        let log = log.borrow();
        let expected: Vec<_> = (0..32)
            .map(|k| (0x8_0F00 + 4 * k, 4, 0x1122_3344, 0))
            .collect();
        assert_eq!(log.stores, expected);
        assert_eq!(log.runs, vec![(0x8_0F00, 32)]);
    }

    #[test]
    fn rep_stos_elements_across_device_and_ram_or_under_a_data_breakpoint_go_one_by_one() {
        // rep stosd (o32, a32) whose first element straddles device memory and RAM.
        let (mut cpu, log) = cpu_on_devices(&[0x66, 0x67, 0xF3, 0xAB, 0xF4]);
        cpu.regs[EAX] = 0x1122_3344;
        cpu.regs[EDI] = 0x8_1FFE;
        cpu.regs[ECX] = 2;
        run(&mut cpu);
        assert_eq!(cpu.regs[EDI], 0x8_2006);
        // Byte stores (the bus takes a value's low `size` bytes).
        let stores: Vec<_> = log
            .borrow()
            .stores
            .iter()
            .map(|&(a, n, v, t)| (a, n, v as u8, t))
            .collect();
        assert_eq!(stores, vec![(0x8_1FFE, 1, 0x44, 0), (0x8_1FFF, 1, 0x33, 0)]);
        assert_eq!(
            &cpu.mem.ram[0x8_2000..0x8_2006],
            &[0x22, 0x11, 0x44, 0x33, 0x22, 0x11]
        );
        assert!(log.borrow().runs.is_empty());

        // With a data breakpoint armed (a write to 0x80010), each element is checked against
        // it: no run, and the hit is reported after the instruction.
        let (mut cpu, log) = cpu_on_devices(&[0x67, 0xF3, 0xAA, 0xF4]);
        halt_on(&mut cpu, 1); // #DB
        cpu.dr[0] = 0x8_0010;
        cpu.dr[7] = 0b01 << 16 | 1;
        cpu.regs[EDI] = 0x8_0000;
        cpu.regs[ECX] = 0x20;
        run(&mut cpu);
        assert_eq!(cpu.regs[ECX], 0);
        assert_eq!(log.borrow().stores.len(), 0x20);
        assert!(log.borrow().runs.is_empty());
        assert_eq!(cpu.dr[6] & 0xF, 1, "B0");
        assert_eq!(cpu.eip, 0x501, "#DB delivered");
    }

    #[test]
    fn rep_with_zero_count_does_nothing() {
        let mut cpu = cpu_with(&[0xF3, 0xA4, 0xF4]);
        cpu.regs[ESI] = 5;
        cpu.regs[EDI] = 6;
        run(&mut cpu);
        assert_eq!((cpu.regs[ESI], cpu.regs[EDI], cpu.regs[ECX]), (5, 6, 0));
    }

    #[test]
    fn rep_insb_reads_ports() {
        let mut cpu = cpu_with(&[0x67, 0xF3, 0x6C, 0xF4]);
        cpu.regs[EDX] = 0x60;
        cpu.regs[EDI] = 0x7_0000;
        cpu.regs[ECX] = 3;
        run(&mut cpu);
        // The empty bus floats high.
        assert_eq!(&cpu.mem.ram[0x7_0000..0x7_0004], &[0xFF, 0xFF, 0xFF, 0]);
        assert_eq!(cpu.regs[EDI], 0x7_0003);
    }
}
