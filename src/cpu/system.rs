//! System instructions: descriptor-table registers (LGDT/SGDT/LIDT/SIDT/LLDT/SLDT/LTR/STR),
//! the machine status word (SMSW/LMSW), INVLPG, the protected-mode checks (ARPL, LAR, LSL, VERR,
//! VERW), control and debug registers (MOV CRn/DRn), MSRs, the time-stamp counter, CPUID,
//! SYSENTER/SYSEXIT, CLTS, INVD/WBINVD, UD2 and the long NOP (0F 1F).
//!
//! None of these is hot, so handlers check the mode at run time: a decoded block is keyed by its
//! physical address and CS.D only, and the same bytes may run in real and in protected mode.

use super::counters::{Insn, ModeSwitch};
use super::decode::{undefined, Decoder, Handler, Instr};
use super::exception::{self, Exception, Fault};
use super::flags;
use super::operand::{MemRm, RegRm, Rm, Width, W16, W32};
use super::protected::{
    SYS_CALL_GATE16, SYS_CALL_GATE32, SYS_LDT, SYS_TASK_GATE, SYS_TSS16_AVAIL, SYS_TSS16_BUSY,
    SYS_TSS32_AVAIL, SYS_TSS32_BUSY,
};
use super::seg::{SegCache, Segment, ACC_ACCESSED, ACC_CODE, ACC_DC, ACC_P, ACC_RW, ACC_S};
use super::{Cpu, CR0_AM, CR0_CD, CR0_EM, CR0_ET, CR0_MP, CR0_NE, CR0_NW, CR0_PE, CR0_PG};
use super::{CR0_TS, CR0_WP, CR4_DE, CR4_OSFXSR, CR4_PGE, CR4_PSE, CR4_TSD};
use super::{EAX, EBX, ECX, EDX, ESP};

/// The processor signature (CPUID.1:EAX and EDX after reset): family 6, model 3, stepping 3, a
/// Pentium II. Model 3 stepping 3 rather than the Pentium Pro (model 1) because Linux clears
/// SEP below 0x633 (the Pentium Pro reports SYSENTER without supporting it).
pub const CPU_SIGNATURE: u32 = 0x0000_0633;

/// The CR0 bits a P6 implements; MOV to CR0 ignores the others (32-bit mode does not fault on
/// them). ET is hardwired to 1.
const CR0_VALID: u32 = CR0_PE
    | CR0_MP
    | CR0_EM
    | CR0_TS
    | CR0_ET
    | CR0_NE
    | CR0_WP
    | CR0_AM
    | CR0_NW
    | CR0_CD
    | CR0_PG;
/// CR4 bits of the features CPUID reports; setting any other bit raises #GP(0).
/// (VME/PVI, PAE, MCE, PCE and OSXMMEXCPT are not implemented.)
const CR4_VALID: u32 = CR4_TSD | CR4_DE | CR4_PSE | CR4_PGE | CR4_OSFXSR;
/// CR3 bits that are stored: the page-directory base, PCD and PWT.
const CR3_VALID: u32 = 0xFFFF_F018;

/// DR7: general detect (MOV DRn raises #DB).
pub const DR7_GD: u32 = 1 << 13;
/// DR7 bits that always read 0 (11, 12, 14, 15) and 1 (10) on a P6.
const DR7_ZERO: u32 = (1 << 11) | (1 << 12) | (1 << 14) | (1 << 15);
const DR7_ONE: u32 = 1 << 10;
/// DR6: the bits a MOV can change (B0-B3, BD, BS, BT); the rest read as 1 (bit 12 as 0).
const DR6_WRITABLE: u32 = 0x0000_E00F;
const DR6_FIXED: u32 = 0xFFFF_0FF0;
/// DR6: debug-register access detected (DR7.GD).
pub const DR6_BD: u32 = 1 << 13;

/// Model-specific register numbers.
pub const MSR_TSC: u32 = 0x10;
pub const MSR_APIC_BASE: u32 = 0x1B;
/// IA32_BIOS_SIGN_ID: the microcode revision (EDX). Linux writes 0 to it and reads it back with
/// the non-`_safe` accessors on every family-6 CPU, so it must not fault; we report revision 0.
pub const MSR_BIOS_SIGN_ID: u32 = 0x8B;
pub const MSR_SYSENTER_CS: u32 = 0x174;
pub const MSR_SYSENTER_ESP: u32 = 0x175;
pub const MSR_SYSENTER_EIP: u32 = 0x176;
/// IA32_APIC_BASE bits that may be written: BSP (8), global enable (11), base (12-31).
const APIC_BASE_VALID: u64 = 0xFFFF_F900;

/// CPUID.1:EDX feature bits: exactly what this CPU implements.
const FEAT_FPU: u32 = 1 << 0;
/// Debug extensions: CR4.DE (DR4/DR5 #UD instead of aliasing DR6/DR7).
const FEAT_DE: u32 = 1 << 2;
const FEAT_PSE: u32 = 1 << 3;
const FEAT_TSC: u32 = 1 << 4;
const FEAT_MSR: u32 = 1 << 5;
const FEAT_CX8: u32 = 1 << 8;
/// SYSENTER/SYSEXIT.
const FEAT_SEP: u32 = 1 << 11;
const FEAT_PGE: u32 = 1 << 13;
const FEAT_CMOV: u32 = 1 << 15;
const FEAT_FXSR: u32 = 1 << 24;
const FEATURES: u32 = FEAT_FPU
    | FEAT_DE
    | FEAT_PSE
    | FEAT_TSC
    | FEAT_MSR
    | FEAT_CX8
    | FEAT_SEP
    | FEAT_PGE
    | FEAT_CMOV
    | FEAT_FXSR;
/// The highest basic CPUID leaf.
const CPUID_MAX_LEAF: u32 = 2;
/// CPUID.2 cache and TLB descriptors of a Pentium II with 512 KiB L2: AL = 1 (one call
/// suffices); 01h/02h/03h/04h instruction and data TLBs, 08h/0Ch 16 KiB L1 instruction and
/// data caches, 43h 512 KiB L2.
const CPUID_2: [u32; 4] = [0x0302_0101, 0, 0, 0x0C04_0843];

/// Decode the opcodes of this group.
pub fn decode(d: &mut Decoder, op: u16) -> Fault<Handler> {
    Ok(match op {
        0x63 => {
            d.modrm()?;
            if d.is_reg() {
                arpl::<RegRm>
            } else {
                arpl::<MemRm>
            }
        }
        0x0F00 => {
            d.modrm()?;
            decode_group6(d)
        }
        0x0F01 => {
            d.modrm()?;
            decode_group7(d)
        }
        0x0F02 => {
            d.modrm()?;
            rm_v_sel(
                d,
                lar::<RegRm, W16>,
                lar::<RegRm, W32>,
                lar::<MemRm, W16>,
                lar::<MemRm, W32>,
            )
        }
        0x0F03 => {
            d.modrm()?;
            rm_v_sel(
                d,
                lsl::<RegRm, W16>,
                lsl::<RegRm, W32>,
                lsl::<MemRm, W16>,
                lsl::<MemRm, W32>,
            )
        }
        0x0F06 => clts,
        0x0F08 | 0x0F09 => invd,
        0x0F1F => {
            d.modrm()?;
            nop
        }
        0x0F20..=0x0F23 => {
            // The mod field is ignored: the operand is always a register, and no displacement
            // or SIB byte follows.
            let m = d.byte()?;
            d.i.reg = (m >> 3) & 7;
            d.i.rm = m & 7;
            match op {
                0x0F20 => match d.i.reg {
                    0 | 2 | 3 | 4 => mov_from_cr,
                    _ => undefined(),
                },
                0x0F22 => {
                    d.end_block();
                    match d.i.reg {
                        0 => mov_to_cr0,
                        2 => mov_to_cr2,
                        3 => mov_to_cr3,
                        4 => mov_to_cr4,
                        _ => undefined(),
                    }
                }
                0x0F21 => mov_from_dr,
                _ => {
                    d.end_block();
                    mov_to_dr
                }
            }
        }
        0x0F30 => wrmsr,
        0x0F31 => rdtsc,
        0x0F32 => rdmsr,
        0x0F34 => {
            d.end_block();
            sysenter
        }
        0x0F35 => {
            d.end_block();
            sysexit
        }
        0x0FA2 => cpuid,
        // 0F 0B is UD2; 0F 04/05/07/0A (LOADALL and friends) and 0F 33 (RDPMC, not
        // implemented: CR4.PCE is reserved) do not exist on this CPU.
        _ => undefined(),
    })
}

/// Pick one of four handlers by register/memory form and operand size.
fn rm_v_sel(d: &Decoder, r16: Handler, r32: Handler, m16: Handler, m32: Handler) -> Handler {
    match (d.is_reg(), d.i.op32) {
        (true, false) => r16,
        (true, true) => r32,
        (false, false) => m16,
        (false, true) => m32,
    }
}

/// 0F 00 /reg: SLDT, STR, LLDT, LTR, VERR, VERW.
fn decode_group6(d: &mut Decoder) -> Handler {
    let reg = d.is_reg();
    match (d.i.reg, reg) {
        (0, true) => store_selector_reg::<LDTR>,
        (0, false) => store_selector_mem::<LDTR>,
        (1, true) => store_selector_reg::<TR>,
        (1, false) => store_selector_mem::<TR>,
        (2, true) => lldt::<RegRm>,
        (2, false) => lldt::<MemRm>,
        (3, true) => ltr::<RegRm>,
        (3, false) => ltr::<MemRm>,
        (4, true) => verify::<RegRm, false>,
        (4, false) => verify::<MemRm, false>,
        (5, true) => verify::<RegRm, true>,
        (5, false) => verify::<MemRm, true>,
        _ => undefined(),
    }
}

/// 0F 01 /reg: SGDT, SIDT, LGDT, LIDT, SMSW, LMSW, INVLPG. The table and INVLPG forms need a
/// memory operand (#UD otherwise).
fn decode_group7(d: &mut Decoder) -> Handler {
    let reg = d.is_reg();
    match (d.i.reg, reg) {
        (0, false) => store_table::<false>,
        (1, false) => store_table::<true>,
        (2, false) => load_table::<false>,
        (3, false) => load_table::<true>,
        (4, true) => smsw_reg,
        (4, false) => smsw_mem,
        (6, true) => lmsw::<RegRm>,
        (6, false) => lmsw::<MemRm>,
        (7, false) => invlpg,
        _ => undefined(),
    }
}

// ---- Privilege helpers ----

/// Instructions that exist only in protected mode (not real, not V86) raise #UD elsewhere.
#[inline]
fn require_protected(cpu: &Cpu) -> Fault {
    if cpu.real_mode() || cpu.v86_mode() {
        Err(Exception::ud())
    } else {
        Ok(())
    }
}

/// Privileged instructions: CPL 0 (real mode counts as CPL 0; V86 mode runs at CPL 3).
#[inline]
fn require_cpl0(cpu: &Cpu) -> Fault {
    if cpu.protected_mode() && (cpu.cpl != 0 || cpu.v86_mode()) {
        Err(Exception::gp(0))
    } else {
        Ok(())
    }
}

/// Offset of the memory operand, for the 6-byte pseudo-descriptor forms.
#[inline]
fn ea(cpu: &Cpu, i: &Instr) -> u32 {
    i.ea(cpu)
}

// ---- ARPL, LAR, LSL, VERR, VERW ----

/// ARPL Ew, Gw: raise the destination selector's RPL to the source's; ZF says whether it changed.
/// The destination is written only when it changes: a 386 does not check that a memory operand
/// is writable when its RPL is already high enough (test386.asm's POST 17 checks this with a
/// read-only data segment), unlike a read-modify-write instruction.
fn arpl<R: Rm>(cpu: &mut Cpu, i: &Instr) -> Fault {
    require_protected(cpu)?;
    let src_rpl = W16::reg(cpu, i.reg) & 3;
    let dest = R::read::<W16>(cpu, i)?;
    let raise = dest & 3 < src_rpl;
    if raise {
        R::write::<W16>(cpu, i, (dest & !3) | src_rpl)?;
    }
    cpu.flags.set(flags::ZF, raise);
    Ok(())
}

/// The descriptor a LAR/LSL/VERR/VERW selector names, if it lies inside its table and passes
/// the privilege check (DPL >= CPL and DPL >= RPL, except for conforming code segments).
/// `None` means "ZF = 0"; memory faults while reading the table are real faults.
fn visible_descriptor(cpu: &mut Cpu, sel: u16) -> Fault<Option<super::protected::Descriptor>> {
    if sel & 0xFFFC == 0 || cpu.descriptor_address(sel).is_none() {
        return Ok(None);
    }
    let d = cpu.read_descriptor(sel, Exception::gp)?;
    let conforming_code = d.is_segment() && d.access() & (ACC_CODE | ACC_DC) == ACC_CODE | ACC_DC;
    let rpl = (sel & 3) as u8;
    if !conforming_code && (d.dpl() < cpu.cpl || d.dpl() < rpl) {
        return Ok(None);
    }
    Ok(Some(d))
}

/// LAR Gv, Ew: load the access rights of a descriptor (ZF = 1) if it is visible and of a type
/// LAR accepts: any code or data segment, LDT, TSS (16/32, available or busy), call gates and
/// task gates. Interrupt and trap gates and the reserved types are refused (ZF = 0).
fn lar<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::Lar);
    require_protected(cpu)?;
    let sel = R::read::<W16>(cpu, i)? as u16;
    let d = match visible_descriptor(cpu, sel)? {
        Some(d)
            if d.is_segment()
                || matches!(
                    d.kind(),
                    SYS_TSS16_AVAIL
                        | SYS_LDT
                        | SYS_TSS16_BUSY
                        | SYS_CALL_GATE16
                        | SYS_TASK_GATE
                        | SYS_TSS32_AVAIL
                        | SYS_TSS32_BUSY
                        | SYS_CALL_GATE32
                ) =>
        {
            d
        }
        _ => {
            cpu.flags.set(flags::ZF, false);
            return Ok(());
        }
    };
    // 32-bit: type, S, DPL, P (8-15) and AVL, D/B, G (20-23); 16-bit: bits 8-15 only.
    let rights = if W::BITS == 32 {
        d.hi & 0x00F0_FF00
    } else {
        d.hi & 0xFF00
    };
    W::set_reg(cpu, i.reg, rights);
    cpu.flags.set(flags::ZF, true);
    Ok(())
}

/// LSL Gv, Ew: load a segment limit (scaled by G) if the descriptor is visible and has a limit:
/// code and data segments, LDT and TSS descriptors. Gates have no limit (ZF = 0).
fn lsl<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::Lsl);
    require_protected(cpu)?;
    let sel = R::read::<W16>(cpu, i)? as u16;
    let d = match visible_descriptor(cpu, sel)? {
        Some(d)
            if d.is_segment()
                || matches!(
                    d.kind(),
                    SYS_TSS16_AVAIL | SYS_LDT | SYS_TSS16_BUSY | SYS_TSS32_AVAIL | SYS_TSS32_BUSY
                ) =>
        {
            d
        }
        _ => {
            cpu.flags.set(flags::ZF, false);
            return Ok(());
        }
    };
    W::set_reg(cpu, i.reg, d.limit() & W::MASK);
    cpu.flags.set(flags::ZF, true);
    Ok(())
}

/// VERR (`WRITE` = false) / VERW (true) Ew: ZF = 1 if the segment is visible at CPL and RPL and
/// readable (data, or readable code) / writable (writable data).
fn verify<R: Rm, const WRITE: bool>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(if WRITE { Insn::Verw } else { Insn::Verr });
    require_protected(cpu)?;
    let sel = R::read::<W16>(cpu, i)? as u16;
    let ok = match visible_descriptor(cpu, sel)? {
        Some(d) if d.is_segment() => {
            let code = d.access() & ACC_CODE != 0;
            let rw = d.access() & ACC_RW != 0;
            if WRITE {
                !code && rw
            } else {
                !code || rw
            }
        }
        _ => false,
    };
    cpu.flags.set(flags::ZF, ok);
    Ok(())
}

// ---- SLDT, STR, LLDT, LTR ----

/// Which selector SLDT/STR store.
const LDTR: bool = false;
const TR: bool = true;

fn system_selector<const WHICH: bool>(cpu: &Cpu) -> u16 {
    if WHICH == TR {
        cpu.tr.selector
    } else {
        cpu.ldtr.selector
    }
}

/// SLDT/STR to a register: with a 32-bit operand the selector is zero-extended (P6 behaviour;
/// the SDM leaves the upper half undefined on older CPUs).
fn store_selector_reg<const WHICH: bool>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(if WHICH == TR { Insn::Str } else { Insn::Sldt });
    require_protected(cpu)?;
    let sel = system_selector::<WHICH>(cpu) as u32;
    if i.op32 {
        W32::set_reg(cpu, i.rm, sel);
    } else {
        W16::set_reg(cpu, i.rm, sel);
    }
    Ok(())
}

/// SLDT/STR to memory: always 16 bits.
fn store_selector_mem<const WHICH: bool>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(if WHICH == TR { Insn::Str } else { Insn::Sldt });
    require_protected(cpu)?;
    let sel = system_selector::<WHICH>(cpu) as u32;
    MemRm::write::<W16>(cpu, i, sel)
}

fn lldt<R: Rm>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::Lldt);
    require_protected(cpu)?;
    require_cpl0(cpu)?;
    let sel = R::read::<W16>(cpu, i)? as u16;
    cpu.load_ldt(sel)
}

fn ltr<R: Rm>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::Ltr);
    require_protected(cpu)?;
    require_cpl0(cpu)?;
    let sel = R::read::<W16>(cpu, i)? as u16;
    cpu.load_task_register(sel)
}

// ---- SGDT, SIDT, LGDT, LIDT ----

/// SGDT (`IDT` = false) / SIDT (true) m: the 16-bit limit, then the base. Both operand sizes
/// store the full 32-bit base: the SDM's current pseudo-code and P6 hardware do so (only the 286
/// stored 24 bits with 0FFh above; older SDMs described a zeroed top byte for 16-bit operands).
/// Not privileged (no UMIP on this CPU).
fn store_table<const IDT: bool>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(if IDT { Insn::Sidt } else { Insn::Sgdt });
    let t = if IDT { cpu.idtr } else { cpu.gdtr };
    let seg = i.seg as usize;
    let off = ea(cpu, i);
    // Check the whole 6 bytes first so a fault leaves memory untouched.
    cpu.probe_write(seg, off, 6)?;
    cpu.write::<2>(seg, off, t.limit & 0xFFFF)?;
    cpu.write::<4>(seg, off.wrapping_add(2), t.base)
}

/// LGDT (`IDT` = false) / LIDT (true) m: load limit and base; a 16-bit operand loads only a
/// 24-bit base.
fn load_table<const IDT: bool>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(if IDT { Insn::Lidt } else { Insn::Lgdt });
    require_cpl0(cpu)?;
    let seg = i.seg as usize;
    let off = ea(cpu, i);
    let limit = cpu.read::<2>(seg, off)?;
    let mut base = cpu.read::<4>(seg, off.wrapping_add(2))?;
    if !i.op32 {
        base &= 0x00FF_FFFF;
    }
    let t = super::TableReg { base, limit };
    if IDT {
        cpu.idtr = t;
    } else {
        cpu.gdtr = t;
    }
    Ok(())
}

// ---- SMSW, LMSW, CLTS, INVLPG, INVD/WBINVD, NOP ----

/// SMSW to a register: a 32-bit operand stores the whole of CR0 (the SDM calls the upper half
/// undefined; P6 hardware returns CR0), a 16-bit one the low word with the upper half kept.
fn smsw_reg(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::Smsw);
    let cr0 = cpu.cr0;
    if i.op32 {
        W32::set_reg(cpu, i.rm, cr0);
    } else {
        W16::set_reg(cpu, i.rm, cr0);
    }
    Ok(())
}

/// SMSW to memory: always 16 bits.
fn smsw_mem(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::Smsw);
    let cr0 = cpu.cr0 & 0xFFFF;
    MemRm::write::<W16>(cpu, i, cr0)
}

/// LMSW Ew: load PE, MP, EM, TS. PE can be set but not cleared.
fn lmsw<R: Rm>(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::Lmsw);
    require_cpl0(cpu)?;
    let msw = R::read::<W16>(cpu, i)?;
    const MSW: u32 = CR0_PE | CR0_MP | CR0_EM | CR0_TS;
    let v = (cpu.cr0 & !MSW) | (msw & MSW) | (cpu.cr0 & CR0_PE);
    cpu.write_cr0(v)
}

/// CLTS: clear CR0.TS (the FPU context is current again).
fn clts(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.count(Insn::Clts);
    require_cpl0(cpu)?;
    cpu.cr0 &= !CR0_TS;
    Ok(())
}

/// INVLPG m: drop the TLB entry for the page holding the operand's linear address. With PSE on
/// the page may be a 4 MiB one whose 4 KiB pieces sit in separate TLB slots, so every piece of
/// the surrounding 4 MiB region is dropped. Decoded blocks are keyed by physical address and
/// need no flush.
fn invlpg(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::Invlpg);
    require_cpl0(cpu)?;
    let lin = cpu.segs[i.seg as usize].base.wrapping_add(ea(cpu, i));
    if cpu.mem.tlb.pse {
        let region = lin & 0xFFC0_0000;
        for page in 0..1024u32 {
            cpu.mem.tlb.flush_page(region | page << 12);
        }
    } else {
        cpu.mem.tlb.flush_page(lin);
    }
    Ok(())
}

/// INVD/WBINVD: privileged; there is no cache to write back or discard.
fn invd(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.count(Insn::Invd);
    require_cpl0(cpu)
}

/// NOP Ev (0F 1F): the operand is decoded but never accessed.
fn nop(_: &mut Cpu, _: &Instr) -> Fault {
    Ok(())
}

// ---- Control registers ----

impl Cpu {
    /// Load CR0 (MOV CR0, LMSW): #GP(0) for PG without PE and for NW without CD. Changes to PG,
    /// WP or PE flush the TLB; a change of PE also drops decoded blocks (handlers may be chosen
    /// by mode).
    pub fn write_cr0(&mut self, v: u32) -> Fault {
        let v = (v & CR0_VALID) | CR0_ET;
        if (v & CR0_PG != 0 && v & CR0_PE == 0) || (v & CR0_NW != 0 && v & CR0_CD == 0) {
            return Err(Exception::gp(0));
        }
        let changed = self.cr0 ^ v;
        self.cr0 = v;
        for (bit, on, off) in [
            (CR0_PE, ModeSwitch::ProtectedOn, ModeSwitch::ProtectedOff),
            (CR0_PG, ModeSwitch::PagingOn, ModeSwitch::PagingOff),
        ] {
            if changed & bit != 0 {
                self.count_mode(if v & bit != 0 { on } else { off });
            }
        }
        if changed & (CR0_PG | CR0_WP | CR0_PE) != 0 {
            self.mem.tlb.flush_all();
            self.sync_paging();
        }
        if changed & CR0_PE != 0 {
            self.icache.flush();
            if v & CR0_PE == 0 {
                // Real mode runs at privilege 0.
                self.set_cpl(0);
            }
        }
        if changed & CR0_AM != 0 {
            self.update_fast_path_perms();
        }
        self.stop_block = true;
        Ok(())
    }

    /// Load CR3: the new page directory; non-global TLB entries are dropped.
    pub fn write_cr3(&mut self, v: u32) {
        self.cr3 = v & CR3_VALID;
        self.counters.cr3_loads += 1;
        self.sync_paging();
        self.mem.tlb.flush_non_global();
        self.stop_block = true;
    }

    /// Load CR4: #GP(0) for bits of features this CPU lacks; PSE/PGE changes flush the TLB
    /// (clearing PGE drops global entries too).
    pub fn write_cr4(&mut self, v: u32) -> Fault {
        if v & !CR4_VALID != 0 {
            return Err(Exception::gp(0));
        }
        let changed = self.cr4 ^ v;
        self.cr4 = v;
        self.sync_paging();
        if changed & (CR4_PSE | CR4_PGE) != 0 {
            self.mem.tlb.flush_all();
        }
        self.stop_block = true;
        Ok(())
    }
}

/// MOV r32, CRn (n = 0, 2, 3, 4; the others were refused at decode time).
fn mov_from_cr(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::MovFromCr);
    require_cpl0(cpu)?;
    let v = match i.reg {
        0 => cpu.cr0,
        2 => cpu.cr2,
        3 => cpu.cr3,
        _ => cpu.cr4,
    };
    cpu.regs[i.rm as usize] = v;
    Ok(())
}

fn mov_to_cr0(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::MovToCr);
    require_cpl0(cpu)?;
    cpu.write_cr0(cpu.regs[i.rm as usize])
}

fn mov_to_cr2(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::MovToCr);
    require_cpl0(cpu)?;
    cpu.cr2 = cpu.regs[i.rm as usize];
    Ok(())
}

fn mov_to_cr3(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::MovToCr);
    require_cpl0(cpu)?;
    cpu.write_cr3(cpu.regs[i.rm as usize]);
    Ok(())
}

fn mov_to_cr4(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::MovToCr);
    require_cpl0(cpu)?;
    cpu.write_cr4(cpu.regs[i.rm as usize])
}

// ---- Debug registers ----

/// Checks common to MOV from/to DRn, in the order the CPU applies them: privilege, general
/// detect (#DB fault with DR6.BD; GD is cleared so the handler may use the registers), then
/// DR4/DR5, which alias DR6/DR7 unless CR4.DE makes them #UD. Returns the register index.
fn debug_register(cpu: &mut Cpu, n: u8) -> Fault<usize> {
    require_cpl0(cpu)?;
    if cpu.dr[7] & DR7_GD != 0 {
        cpu.dr[7] &= !DR7_GD;
        cpu.dr[6] |= DR6_BD;
        return Err(Exception::new(exception::DB));
    }
    match n {
        4 | 5 if cpu.cr4 & CR4_DE != 0 => Err(Exception::ud()),
        4 | 5 => Ok(n as usize + 2),
        _ => Ok(n as usize),
    }
}

fn mov_from_dr(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::MovFromDr);
    let n = debug_register(cpu, i.reg)?;
    cpu.regs[i.rm as usize] = cpu.dr[n];
    Ok(())
}

fn mov_to_dr(cpu: &mut Cpu, i: &Instr) -> Fault {
    cpu.count(Insn::MovToDr);
    let n = debug_register(cpu, i.reg)?;
    let v = cpu.regs[i.rm as usize];
    match n {
        6 => cpu.dr[6] = (v & DR6_WRITABLE) | DR6_FIXED,
        7 => {
            cpu.dr[7] = (v & !DR7_ZERO) | DR7_ONE;
            // Data breakpoints need every access on the slow path; the run loop re-reads DR7
            // at the next block.
            cpu.update_fast_path_perms();
            cpu.stop_block = true;
        }
        _ => cpu.dr[n] = v,
    }
    Ok(())
}

// ---- MSRs and the TSC ----

impl Cpu {
    /// RDMSR: the value of MSR `index`, or None for an MSR this CPU does not have.
    pub fn read_msr(&mut self, index: u32) -> Option<u64> {
        Some(match index {
            MSR_TSC => self.tsc(),
            MSR_APIC_BASE => self.msr.apic_base,
            MSR_BIOS_SIGN_ID => 0,
            MSR_SYSENTER_CS => self.msr.sysenter_cs as u64,
            MSR_SYSENTER_ESP => self.msr.sysenter_esp as u64,
            MSR_SYSENTER_EIP => self.msr.sysenter_eip as u64,
            _ => return None,
        })
    }

    /// WRMSR: #GP(0) for unknown MSRs and reserved bits.
    pub fn write_msr(&mut self, index: u32, v: u64) -> Fault {
        match index {
            MSR_TSC => {
                // P6: only the low 32 bits are written; the upper half is cleared.
                self.msr.tsc_offset = (v & 0xFFFF_FFFF).wrapping_sub(self.tsc_base());
            }
            MSR_APIC_BASE => {
                if v & !APIC_BASE_VALID != 0 {
                    return Err(Exception::gp(0));
                }
                self.msr.apic_base = v;
            }
            // Writing 0 before CPUID.1 primes the revision read; there is no microcode.
            MSR_BIOS_SIGN_ID => {}
            MSR_SYSENTER_CS => self.msr.sysenter_cs = v as u32 & 0xFFFF,
            MSR_SYSENTER_ESP => self.msr.sysenter_esp = v as u32,
            MSR_SYSENTER_EIP => self.msr.sysenter_eip = v as u32,
            _ => return Err(Exception::gp(0)),
        }
        Ok(())
    }
}

fn rdmsr(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.count(Insn::Rdmsr);
    require_cpl0(cpu)?;
    let v = cpu.read_msr(cpu.regs[ECX]).ok_or(Exception::gp(0))?;
    cpu.regs[EAX] = v as u32;
    cpu.regs[EDX] = (v >> 32) as u32;
    Ok(())
}

fn wrmsr(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.count(Insn::Wrmsr);
    require_cpl0(cpu)?;
    let v = (cpu.regs[EDX] as u64) << 32 | cpu.regs[EAX] as u64;
    cpu.write_msr(cpu.regs[ECX], v)
}

/// RDTSC: EDX:EAX = TSC; #GP(0) above CPL 0 when CR4.TSD is set (V86 mode runs at CPL 3).
fn rdtsc(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.count(Insn::Rdtsc);
    if cpu.cr4 & CR4_TSD != 0 && cpu.protected_mode() && (cpu.cpl != 0 || cpu.v86_mode()) {
        return Err(Exception::gp(0));
    }
    let t = cpu.tsc();
    cpu.regs[EAX] = t as u32;
    cpu.regs[EDX] = (t >> 32) as u32;
    Ok(())
}

// ---- SYSENTER / SYSEXIT ----

/// A flat 4 GiB 32-bit segment as SYSENTER/SYSEXIT load it (the descriptor tables are not read).
fn flat_segment(selector: u16, code: bool, dpl: u8) -> SegCache {
    let kind = if code { ACC_CODE | ACC_RW } else { ACC_RW };
    let mut s = SegCache {
        selector,
        base: 0,
        limit: 0xFFFF_FFFF,
        access: ACC_P | ACC_S | ACC_ACCESSED | kind | (dpl << 5),
        big: true,
        granular: true,
        avl: false,
        read_lo: 0,
        read_hi: 0,
        write_lo: 0,
        write_hi: 0,
    };
    s.compute_ranges();
    s
}

/// SYSENTER: to CPL 0 at SYSENTER_CS:SYSENTER_EIP with SS = SYSENTER_CS + 8 and
/// ESP = SYSENTER_ESP; clears VM, IF and RF. #GP(0) in real mode or with a null SYSENTER_CS.
fn sysenter(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.count(Insn::Sysenter);
    let cs = cpu.msr.sysenter_cs as u16 & 0xFFFC;
    if cpu.real_mode() || cs == 0 {
        return Err(Exception::gp(0));
    }
    cpu.flags.set(flags::VM | flags::IF | flags::RF, false);
    cpu.segs[Segment::CS as usize] = flat_segment(cs, true, 0);
    cpu.segs[Segment::SS as usize] = flat_segment(cs.wrapping_add(8), false, 0);
    cpu.set_cpl(0);
    cpu.regs[ESP] = cpu.msr.sysenter_esp;
    cpu.eip = cpu.msr.sysenter_eip;
    cpu.stop_block = true;
    Ok(())
}

/// SYSEXIT: to CPL 3 at (SYSENTER_CS + 16) | 3 : EDX with SS = (SYSENTER_CS + 24) | 3 and
/// ESP = ECX. #GP(0) unless protected mode at CPL 0 with a non-null SYSENTER_CS.
fn sysexit(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.count(Insn::Sysexit);
    let base = cpu.msr.sysenter_cs as u16 & 0xFFFC;
    if cpu.real_mode() || cpu.v86_mode() || cpu.cpl != 0 || base == 0 {
        return Err(Exception::gp(0));
    }
    cpu.segs[Segment::CS as usize] = flat_segment(base.wrapping_add(16) | 3, true, 3);
    cpu.segs[Segment::SS as usize] = flat_segment(base.wrapping_add(24) | 3, false, 3);
    cpu.set_cpl(3);
    cpu.regs[ESP] = cpu.regs[ECX];
    cpu.eip = cpu.regs[EDX];
    cpu.stop_block = true;
    Ok(())
}

// ---- CPUID ----

/// CPUID leaf `leaf`: EAX, EBX, ECX, EDX. Leaves above the maximum (extended leaves included:
/// this CPU has none) return the highest basic leaf, as Intel CPUs do.
pub fn cpuid_leaf(leaf: u32) -> [u32; 4] {
    let leaf = if leaf > CPUID_MAX_LEAF {
        CPUID_MAX_LEAF
    } else {
        leaf
    };
    match leaf {
        // "GenuineIntel" in EBX, EDX, ECX.
        0 => [CPUID_MAX_LEAF, 0x756E_6547, 0x6C65_746E, 0x4965_6E69],
        1 => [CPU_SIGNATURE, 0, 0, FEATURES],
        _ => CPUID_2,
    }
}

fn cpuid(cpu: &mut Cpu, _: &Instr) -> Fault {
    cpu.count(Insn::Cpuid);
    let [a, b, c, d] = cpuid_leaf(cpu.regs[EAX]);
    cpu.regs[EAX] = a;
    cpu.regs[EBX] = b;
    cpu.regs[ECX] = c;
    cpu.regs[EDX] = d;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::RunExit;

    /// A real-mode CPU with `code` at 0:0x1000 followed by HLT.
    fn real_cpu(code: &[u8]) -> Cpu {
        let mut cpu = Cpu::with_ram(1 << 20);
        let mut bytes = code.to_vec();
        bytes.push(0xF4);
        cpu.mem.load(0x1000, &bytes);
        cpu.segs[Segment::CS as usize] = SegCache::real(0);
        cpu.eip = 0x1000;
        cpu
    }

    fn run(cpu: &mut Cpu) {
        cpu.halted = false;
        assert_eq!(cpu.run(100), RunExit::Halted);
    }

    #[test]
    fn cpuid_vendor_and_features() {
        let mut cpu = real_cpu(&[0x0F, 0xA2]);
        run(&mut cpu);
        assert_eq!(cpu.regs[EAX], 2);
        let mut v = Vec::new();
        for r in [EBX, EDX, ECX] {
            v.extend_from_slice(&cpu.regs[r].to_le_bytes());
        }
        assert_eq!(&v, b"GenuineIntel");
        assert_eq!(cpuid_leaf(1)[0], CPU_SIGNATURE);
        assert_eq!(cpuid_leaf(1)[3] & (1 << 23), 0, "no MMX");
        assert_eq!(cpuid_leaf(0x8000_0000), cpuid_leaf(2));
    }

    #[test]
    fn mov_cr0_sets_pe_and_checks_combinations() {
        let mut cpu = real_cpu(&[]);
        assert!(cpu.write_cr0(CR0_PG).is_err());
        assert!(cpu.write_cr0(CR0_NW).is_err());
        cpu.write_cr0(CR0_PE | 0x0000_FF00).unwrap();
        assert_eq!(cpu.cr0, CR0_PE | CR0_ET);
        // MOV EAX, CR0 ; OR AL? (not available here) -> just read it back.
        cpu.eip = 0x1000;
        cpu.mem.load(0x1000, &[0x0F, 0x20, 0xC3, 0xF4]); // mov ebx, cr0
        run(&mut cpu);
        assert_eq!(cpu.regs[EBX], CR0_PE | CR0_ET);
    }

    #[test]
    fn lmsw_cannot_clear_pe() {
        // LMSW AX with AX = 0 after PE was set.
        let mut cpu = real_cpu(&[0x0F, 0x01, 0xF0]);
        cpu.write_cr0(CR0_PE | CR0_TS).unwrap();
        // Stay in "protected mode at CPL 0" with the real-mode CS cache: fine for this test.
        run(&mut cpu);
        assert_eq!(cpu.cr0 & (CR0_PE | CR0_TS), CR0_PE);
    }

    #[test]
    fn cr4_reserved_bits_fault() {
        let mut cpu = real_cpu(&[]);
        assert_eq!(cpu.write_cr4(1 << 5), Err(Exception::gp(0)), "PAE");
        assert_eq!(cpu.write_cr4(1), Err(Exception::gp(0)), "VME");
        cpu.write_cr4(CR4_PSE | CR4_PGE).unwrap();
        assert!(cpu.mem.tlb.pse && cpu.mem.tlb.pge);
    }

    #[test]
    fn rdtsc_and_wrmsr_tsc() {
        // mov ecx, 0x10 needs data.rs; set ECX directly. wrmsr ; rdtsc ; hlt
        let mut cpu = real_cpu(&[0x0F, 0x30, 0x0F, 0x31]);
        cpu.regs[ECX] = MSR_TSC;
        cpu.regs[EAX] = 1000;
        cpu.regs[EDX] = 5; // ignored: P6 clears the upper half
        run(&mut cpu);
        assert_eq!(cpu.regs[EDX], 0);
        // RDTSC runs one retired instruction after WRMSR set the counter.
        assert_eq!(cpu.regs[EAX], 1001);
    }

    #[test]
    fn unknown_msr_faults() {
        let mut cpu = real_cpu(&[]);
        assert!(cpu.read_msr(0x1234).is_none());
        assert_eq!(cpu.write_msr(0x1234, 0), Err(Exception::gp(0)));
        cpu.write_msr(MSR_SYSENTER_CS, 0x10).unwrap();
        assert_eq!(cpu.read_msr(MSR_SYSENTER_CS), Some(0x10));
    }

    #[test]
    fn debug_register_aliases_and_general_detect() {
        // mov dr7, eax ; mov ebx, dr5 ; hlt
        let mut cpu = real_cpu(&[0x0F, 0x23, 0xF8, 0x0F, 0x21, 0xEB]);
        cpu.regs[EAX] = 0xF800; // bits 11, 12, 14, 15 read as 0; bit 13 (GD) stays
        cpu.dr[7] = 0x400;
        cpu.run(1);
        assert_eq!(cpu.dr[7], DR7_GD | DR7_ONE);
        // The second MOV DR faults with #DB (vector 1 via the IVT at 0): BD set, GD cleared.
        cpu.mem.load(4, &[0x00, 0x20, 0x00, 0x00]); // IVT[1] = 0000:2000
        cpu.mem.load(0x2000, &[0xF4]);
        cpu.regs[ESP] = 0x8000;
        cpu.run(10);
        assert_eq!(cpu.dr[6] & DR6_BD, DR6_BD);
        assert_eq!(cpu.dr[7] & DR7_GD, 0);
        assert_eq!(cpu.eip, 0x2001);
        // Aliasing: DR5 reads DR7 when CR4.DE is clear.
        let mut cpu = real_cpu(&[0x0F, 0x21, 0xEB]);
        run(&mut cpu);
        assert_eq!(cpu.regs[EBX], 0x400);
    }

    #[test]
    fn sysenter_requires_protected_mode_and_cs() {
        let mut cpu = real_cpu(&[0x0F, 0x34]);
        cpu.mem.load(0, &[0xF4]);
        cpu.regs[ESP] = 0x8000;
        cpu.msr.sysenter_cs = 0x10;
        // Real mode: #GP(0) -> IVT vector 13 -> HLT at 0:0.
        cpu.run(5);
        assert_eq!(cpu.eip, 1, "delivered #GP through IVT[13] = 0000:0000");
        let mut cpu = real_cpu(&[0x0F, 0x34]);
        cpu.write_cr0(CR0_PE).unwrap();
        cpu.msr.sysenter_cs = 0x10;
        cpu.msr.sysenter_eip = 0x3000;
        cpu.msr.sysenter_esp = 0x9000;
        cpu.mem.load(0x3000, &[0xF4]);
        run(&mut cpu);
        assert_eq!(cpu.segs[Segment::CS as usize].selector, 0x10);
        assert_eq!(cpu.segs[Segment::SS as usize].selector, 0x18);
        assert!(cpu.segs[Segment::CS as usize].big);
        assert_eq!(cpu.regs[ESP], 0x9000);
        assert_eq!(cpu.eip, 0x3001);
    }

    #[test]
    fn sgdt_stores_limit_and_32_bit_base() {
        // sgdt [0x500] (16-bit addressing, 16-bit operand)
        let mut cpu = real_cpu(&[0x0F, 0x01, 0x06, 0x00, 0x05]);
        cpu.gdtr = super::super::TableReg {
            base: 0x12345678,
            limit: 0x1F,
        };
        run(&mut cpu);
        assert_eq!(
            &cpu.mem.ram[0x500..0x506],
            &[0x1F, 0, 0x78, 0x56, 0x34, 0x12]
        );
        // lgdt [0x500] with a 16-bit operand keeps 24 bits of the base.
        cpu.eip = 0x1000;
        cpu.mem.load(0x1000, &[0x0F, 0x01, 0x16, 0x00, 0x05, 0xF4]);
        run(&mut cpu);
        assert_eq!(cpu.gdtr.base, 0x0034_5678);
        // 66 prefix: all 32 bits.
        cpu.eip = 0x1000;
        cpu.mem
            .load(0x1000, &[0x66, 0x0F, 0x01, 0x16, 0x00, 0x05, 0xF4]);
        run(&mut cpu);
        assert_eq!(cpu.gdtr.base, 0x1234_5678);
    }

    #[test]
    fn protected_only_instructions_are_undefined_in_real_mode() {
        // sldt ax in real mode -> #UD (vector 6 via IVT[6] = 0000:0000 where a HLT waits).
        let mut cpu = real_cpu(&[0x0F, 0x00, 0xC0]);
        cpu.mem.load(0, &[0xF4]);
        cpu.regs[ESP] = 0x8000;
        cpu.run(5);
        assert_eq!(cpu.eip, 1);
        let ip = cpu.read::<2>(Segment::SS as usize, 0x7FFA).unwrap();
        assert_eq!(ip, 0x1000);
    }

    #[test]
    fn mov_cr_with_memory_mod_reads_no_displacement() {
        // 0F 20 00: mod = 0 is still "mov eax, cr0" with no displacement; then hlt.
        let mut cpu = real_cpu(&[0x0F, 0x20, 0x00]);
        run(&mut cpu);
        assert_eq!(cpu.regs[EAX], cpu.cr0);
        assert_eq!(cpu.eip, 0x1004);
    }

    /// Protected mode at CPL 0 (with the real-mode CS cache, which is enough to run code) and
    /// a GDT at 0x800: 08 = data DPL 3 (G, limit 0xFFFFF), 10 = code execute-only DPL 0,
    /// 18 = LDT, 20 = 32-bit TSS (available), 28 = 32-bit interrupt gate.
    fn protected_cpu(code: &[u8]) -> Cpu {
        let mut cpu = real_cpu(code);
        let gdt: [u64; 6] = [
            0,
            0x008F_F200_0000_FFFF,
            0x0000_9800_0000_1234,
            0x0000_8200_0000_0FFF,
            0x0000_8900_0000_0067,
            0x0000_8E00_0008_0000,
        ];
        for (n, d) in gdt.iter().enumerate() {
            cpu.mem.load(0x800 + 8 * n as u32, &d.to_le_bytes());
        }
        cpu.gdtr = super::super::TableReg {
            base: 0x800,
            limit: 6 * 8 - 1,
        };
        cpu.write_cr0(CR0_PE).unwrap();
        cpu
    }

    /// Run `lar eax, ebx ; lsl ecx, ebx ; verr bx ; (ZF of VERR into the result)` for one
    /// selector and return (ZF after LAR, EAX, ZF after LSL, ECX, VERR ZF, VERW ZF).
    fn check_selector(sel: u16) -> (bool, u32, bool, u32, bool, bool) {
        let run_one = |code: &[u8]| {
            let mut cpu = protected_cpu(code);
            cpu.regs[EBX] = sel as u32;
            cpu.regs[EAX] = 0xAAAA_AAAA;
            cpu.regs[ECX] = 0xCCCC_CCCC;
            run(&mut cpu);
            (cpu.flags.zf(), cpu.regs[EAX], cpu.regs[ECX])
        };
        let (lar_zf, eax, _) = run_one(&[0x66, 0x0F, 0x02, 0xC3]);
        let (lsl_zf, _, ecx) = run_one(&[0x66, 0x0F, 0x03, 0xCB]);
        let (verr, _, _) = run_one(&[0x0F, 0x00, 0xE3]);
        let (verw, _, _) = run_one(&[0x0F, 0x00, 0xEB]);
        (lar_zf, eax, lsl_zf, ecx, verr, verw)
    }

    #[test]
    fn lar_lsl_verr_verw_by_descriptor_type() {
        // Data segment, DPL 3, page-granular limit.
        assert_eq!(
            check_selector(0x0B),
            (true, 0x0080_F200, true, 0xFFFF_FFFF, true, true)
        );
        // Execute-only code: neither readable nor writable.
        assert_eq!(
            check_selector(0x10),
            (true, 0x0000_9800, true, 0x1234, false, false)
        );
        // RPL 3 > DPL 0: invisible.
        assert_eq!(
            check_selector(0x13),
            (false, 0xAAAA_AAAA, false, 0xCCCC_CCCC, false, false)
        );
        // LDT and TSS: LAR and LSL accept them, VERR/VERW do not.
        assert_eq!(
            check_selector(0x18),
            (true, 0x0000_8200, true, 0xFFF, false, false)
        );
        assert_eq!(
            check_selector(0x20),
            (true, 0x0000_8900, true, 0x67, false, false)
        );
        // Interrupt gate: refused by all; null and out-of-table selectors too.
        for sel in [0x28, 0x00, 0x30, 0x04] {
            assert_eq!(
                check_selector(sel),
                (false, 0xAAAA_AAAA, false, 0xCCCC_CCCC, false, false),
                "selector {sel:#x}"
            );
        }
    }

    #[test]
    fn lldt_ltr_and_the_stores() {
        // lldt bx ; ltr cx ; sldt dx ; str si ; hlt   (0F 00 /2, /3, /0, /1)
        let mut cpu = protected_cpu(&[
            0x0F, 0x00, 0xD3, 0x0F, 0x00, 0xD9, 0x0F, 0x00, 0xC2, 0x0F, 0x00, 0xCE,
        ]);
        cpu.regs[EBX] = 0x18;
        cpu.regs[ECX] = 0x20;
        cpu.regs[EDX] = 0xFFFF_FFFF;
        run(&mut cpu);
        assert_eq!(cpu.ldtr.limit, 0xFFF);
        assert_eq!(cpu.tr.limit, 0x67);
        assert_eq!(
            cpu.regs[EDX], 0xFFFF_0018,
            "16-bit SLDT keeps the upper half"
        );
        assert_eq!(cpu.regs[super::super::ESI] & 0xFFFF, 0x20);
        // The TSS descriptor is now busy (type 0xB).
        assert_eq!(cpu.mem.ram[0x800 + 0x20 + 5] & 0xF, 0xB);
    }

    #[test]
    fn arpl_raises_rpl() {
        // arpl bx, cx
        let mut cpu = protected_cpu(&[0x63, 0xCB]);
        cpu.regs[EBX] = 0x0010;
        cpu.regs[ECX] = 0x0003;
        run(&mut cpu);
        assert_eq!(cpu.regs[EBX], 0x0013);
        assert!(cpu.flags.zf());
    }

    /// ARPL writes its memory operand only when the RPL changes: with the RPL already high
    /// enough, a read-only data segment is no fault (test386.asm's POST 17, checked on a 386).
    #[test]
    fn arpl_writes_memory_only_when_the_rpl_changes() {
        // arpl [0x2000], bx
        let code = [0x63, 0x1E, 0x00, 0x20];
        for (old, new, zf) in [(0xFFF0u16, 0xFFF2u16, true), (0xFFF3, 0xFFF3, false)] {
            let mut cpu = protected_cpu(&code);
            cpu.mem.load(0x2000, &old.to_le_bytes());
            cpu.regs[EBX] = 0x0002;
            if !zf {
                // A read-only data segment.
                cpu.segs[Segment::DS as usize].access = 0x91;
            }
            run(&mut cpu);
            assert_eq!(&cpu.mem.ram[0x2000..0x2002], &new.to_le_bytes());
            assert_eq!(cpu.flags.zf(), zf);
        }
    }
}
