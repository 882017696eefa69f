//! Protected-mode mechanics (SDM Vol 3 ch. 5-6 and the instruction pseudo-code): descriptors,
//! segment loads with privilege checks, far control transfers through call gates and task gates,
//! IDT delivery, RETF and IRET, the I/O permission bitmap, LLDT/LTR helpers. Hardware task
//! switches are in `task.rs`.
//!
//! Every transfer checks everything and writes its stack frame through linear addresses first,
//! and only then commits CS, SS, ESP, EIP, CPL and EFLAGS: a fault part-way leaves the registers
//! as they were, both for the run loop's roll-back and for interrupt delivery (where nothing is
//! rolled back before the #DF retry).

use super::counters::ModeSwitch;
use super::exception::{Exception, Fault};
use super::flags;
use super::interrupt::IntKind;
use super::seg::{SegCache, Segment, ACC_CODE, ACC_DC, ACC_RW, ACC_S};
use super::task::TaskSource;
use super::{Cpu, ESP};

/// System descriptor types (access byte bits 0-3 with S = 0).
pub const SYS_TSS16_AVAIL: u8 = 0x1;
pub const SYS_LDT: u8 = 0x2;
pub const SYS_TSS16_BUSY: u8 = 0x3;
pub const SYS_CALL_GATE16: u8 = 0x4;
pub const SYS_TASK_GATE: u8 = 0x5;
pub const SYS_INT_GATE16: u8 = 0x6;
pub const SYS_TRAP_GATE16: u8 = 0x7;
pub const SYS_TSS32_AVAIL: u8 = 0x9;
pub const SYS_TSS32_BUSY: u8 = 0xB;
pub const SYS_CALL_GATE32: u8 = 0xC;
pub const SYS_INT_GATE32: u8 = 0xE;
pub const SYS_TRAP_GATE32: u8 = 0xF;

/// A raw 8-byte descriptor, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// The two dwords as stored.
    pub lo: u32,
    pub hi: u32,
}

impl Descriptor {
    /// A code or data segment descriptor: `access` is the P/DPL/S/type byte, `flags` the
    /// G/D/L/AVL nibble, `limit` the 20-bit limit field.
    pub fn segment(base: u32, limit: u32, access: u8, flags: u8) -> Descriptor {
        Descriptor {
            lo: (limit & 0xFFFF) | base << 16,
            hi: ((base >> 16) & 0xFF)
                | u32::from(access) << 8
                | (limit & 0xF_0000)
                | u32::from(flags & 0xF) << 20
                | (base & 0xFF00_0000),
        }
    }

    /// The descriptor as the 8 bytes stored in a table, read as a little-endian u64.
    pub fn to_u64(self) -> u64 {
        u64::from(self.lo) | u64::from(self.hi) << 32
    }

    /// A present 32-bit interrupt gate to `selector:offset`, callable by INT n from `dpl`.
    pub fn interrupt_gate32(selector: u16, offset: u32, dpl: u8) -> Descriptor {
        let access = 0x80 | u32::from(dpl & 3) << 5 | u32::from(SYS_INT_GATE32);
        Descriptor {
            lo: (offset & 0xFFFF) | u32::from(selector) << 16,
            hi: (offset & 0xFFFF_0000) | access << 8,
        }
    }

    /// Access byte: P, DPL, S, type.
    pub fn access(&self) -> u8 {
        (self.hi >> 8) as u8
    }
    pub fn present(&self) -> bool {
        self.hi & (1 << 15) != 0
    }
    pub fn dpl(&self) -> u8 {
        ((self.hi >> 13) & 3) as u8
    }
    /// Code or data (S = 1) rather than a system descriptor.
    pub fn is_segment(&self) -> bool {
        self.access() & ACC_S != 0
    }
    /// The 4-bit type field.
    pub fn kind(&self) -> u8 {
        self.access() & 0xF
    }
    pub fn base(&self) -> u32 {
        (self.lo >> 16) | ((self.hi & 0xFF) << 16) | (self.hi & 0xFF00_0000)
    }
    /// Byte-granular limit (scaled when G is set).
    pub fn limit(&self) -> u32 {
        let raw = (self.lo & 0xFFFF) | (self.hi & 0x000F_0000);
        if self.hi & (1 << 23) != 0 {
            (raw << 12) | 0xFFF
        } else {
            raw
        }
    }
    /// D/B bit.
    pub fn big(&self) -> bool {
        self.hi & (1 << 22) != 0
    }
    /// A code segment.
    pub fn is_code(&self) -> bool {
        self.is_segment() && self.access() & ACC_CODE != 0
    }
    /// A conforming code segment.
    pub fn conforming(&self) -> bool {
        self.is_code() && self.access() & ACC_DC != 0
    }
    /// A writable data segment (the only kind SS may hold).
    pub fn writable_data(&self) -> bool {
        self.is_segment() && self.access() & (ACC_CODE | ACC_RW) == ACC_RW
    }
    /// Data or readable code: what DS, ES, FS and GS may hold.
    pub fn loadable_data(&self) -> bool {
        self.is_segment() && (self.access() & ACC_CODE == 0 || self.access() & ACC_RW != 0)
    }
    /// Gate fields: target selector and offset (16-bit gates use only the low offset word).
    pub fn gate_selector(&self) -> u16 {
        (self.lo >> 16) as u16
    }
    pub fn gate_offset(&self) -> u32 {
        (self.lo & 0xFFFF) | (self.hi & 0xFFFF_0000)
    }
    /// Call-gate parameter count.
    pub fn gate_param_count(&self) -> u32 {
        self.hi & 0x1F
    }
    /// The segment cache this descriptor loads, with `selector`.
    pub fn to_cache(&self, selector: u16) -> SegCache {
        let mut s = SegCache {
            selector,
            base: self.base(),
            limit: self.limit(),
            access: self.access(),
            big: self.big(),
            granular: self.hi & (1 << 23) != 0,
            avl: self.hi & (1 << 20) != 0,
            read_lo: 0,
            read_hi: 0,
            write_lo: 0,
            write_hi: 0,
        };
        s.compute_ranges();
        s
    }
}

/// The cache of a segment register after loading a null selector: every access faults.
pub fn null_cache(selector: u16) -> SegCache {
    let mut s = SegCache {
        selector,
        base: 0,
        limit: 0,
        access: 0,
        ..SegCache::default()
    };
    s.compute_ranges();
    s
}

impl Cpu {
    /// Linear address of the descriptor for `selector` in the GDT or LDT, or the #GP/#TS
    /// error (selector with RPL cleared) if it lies outside the table limit.
    pub fn descriptor_address(&self, selector: u16) -> Option<u32> {
        let index = (selector & !7) as u32;
        let (base, limit) = if selector & 4 != 0 {
            if !self.ldtr.present() {
                return None;
            }
            (self.ldtr.base, self.ldtr.limit)
        } else {
            (self.gdtr.base, self.gdtr.limit)
        };
        if index + 7 > limit {
            return None;
        }
        Some(base.wrapping_add(index))
    }

    /// Read the descriptor for `selector`; `fault` is raised (with the selector's index as error
    /// code) if it is outside its table.
    pub fn read_descriptor(
        &mut self,
        selector: u16,
        fault: fn(u32) -> Exception,
    ) -> Fault<Descriptor> {
        self.read_descriptor_ext(selector, fault, 0)
    }

    /// Set the accessed bit of a code/data descriptor in memory if it is clear.
    pub fn mark_descriptor_accessed(&mut self, selector: u16, d: &mut Descriptor) -> Fault {
        if d.hi & (1 << 8) == 0 {
            d.hi |= 1 << 8;
            if let Some(addr) = self.descriptor_address(selector) {
                self.write_lin_system::<4>(addr.wrapping_add(4), d.hi)?;
            }
        }
        Ok(())
    }

    /// Load a segment register in protected mode (MOV/POP Sreg, LDS..LGS). A CS load (only
    /// reachable from far-transfer code that has no offset) gets the checks of a direct JMP.
    pub fn load_seg_protected(&mut self, seg: Segment, selector: u16) -> Fault {
        let rpl = selector & 3;
        let err = sel_err(selector);
        match seg {
            Segment::CS => {
                if selector & !3 == 0 {
                    return Err(Exception::gp(0));
                }
                let mut d = self.read_descriptor(selector, Exception::gp)?;
                self.check_code_direct(&d, selector)?;
                self.mark_descriptor_accessed(selector, &mut d)?;
                let cpl = self.cpl;
                self.set_cs(&d, selector, cpl);
                Ok(())
            }
            Segment::SS => {
                if selector & !3 == 0 {
                    return Err(Exception::gp(0));
                }
                let mut d = self.read_descriptor(selector, Exception::gp)?;
                if rpl as u8 != self.cpl || !d.writable_data() || d.dpl() != self.cpl {
                    return Err(Exception::gp(err));
                }
                if !d.present() {
                    return Err(Exception::ss(err));
                }
                self.mark_descriptor_accessed(selector, &mut d)?;
                self.segs[Segment::SS as usize] = d.to_cache(selector);
                Ok(())
            }
            _ => {
                if selector & !3 == 0 {
                    // A null selector may sit in a data segment register; using it faults.
                    self.segs[seg as usize] = null_cache(selector);
                    return Ok(());
                }
                let mut d = self.read_descriptor(selector, Exception::gp)?;
                if !d.loadable_data() {
                    return Err(Exception::gp(err));
                }
                // Data and non-conforming code need DPL >= max(CPL, RPL); conforming code
                // may be read from any level.
                if !d.conforming() && (rpl as u8 > d.dpl() || self.cpl > d.dpl()) {
                    return Err(Exception::gp(err));
                }
                if !d.present() {
                    return Err(Exception::np(err));
                }
                self.mark_descriptor_accessed(selector, &mut d)?;
                self.segs[seg as usize] = d.to_cache(selector);
                Ok(())
            }
        }
    }

    /// Read a descriptor; outside its table raises `fault(selector | ext)`.
    pub(crate) fn read_descriptor_ext(
        &mut self,
        selector: u16,
        fault: fn(u32) -> Exception,
        ext: u32,
    ) -> Fault<Descriptor> {
        let addr = self
            .descriptor_address(selector)
            .ok_or(fault(sel_err(selector) | ext))?;
        let lo = self.read_lin_system::<4>(addr)?;
        let hi = self.read_lin_system::<4>(addr.wrapping_add(4))?;
        Ok(Descriptor { lo, hi })
    }

    /// The checks of a JMP/CALL directly to a code segment (no gate), at the current CPL.
    fn check_code_direct(&self, d: &Descriptor, selector: u16) -> Fault {
        let err = sel_err(selector);
        if !d.is_code() {
            return Err(Exception::gp(err));
        }
        if d.conforming() {
            if d.dpl() > self.cpl {
                return Err(Exception::gp(err));
            }
        } else if (selector & 3) as u8 > self.cpl || d.dpl() != self.cpl {
            return Err(Exception::gp(err));
        }
        if !d.present() {
            return Err(Exception::np(err));
        }
        Ok(())
    }

    /// Load CS from a checked descriptor and run at `cpl` (the selector's RPL becomes `cpl`).
    pub(crate) fn set_cs(&mut self, d: &Descriptor, selector: u16, cpl: u8) {
        self.segs[Segment::CS as usize] = d.to_cache((selector & !3) | cpl as u16);
        if cpl != self.cpl {
            self.set_cpl(cpl);
        }
        self.stop_block = true;
    }

    /// A write at linear address `lin` with user or supervisor privilege (pushes onto a stack of
    /// a privilege level other than the current one).
    fn write_lin_as<const N: usize>(&mut self, lin: u32, v: u32, user: bool) -> Fault {
        if !user {
            self.write_lin_system::<N>(lin, v)
        } else if self.cpl == 3 {
            self.write_lin::<N>(lin, v)
        } else {
            self.write_lin_slow(lin, N as u32, v, true)
        }
    }

    /// Push onto a stack that is not (yet) SS:ESP. Registers are untouched, so a fault leaves
    /// the CPU state as it was.
    fn frame_push(&mut self, st: &mut NewStack, wide: bool, v: u32) -> Fault {
        let n = if wide { 4 } else { 2 };
        let mask = if st.seg.big { u32::MAX } else { 0xFFFF };
        let sp = st.sp.wrapping_sub(n) & mask;
        if !st.seg.can_write(sp, n) {
            return Err(st.fault);
        }
        let lin = st.seg.base.wrapping_add(sp);
        if wide {
            self.write_lin_as::<4>(lin, v, st.user)?;
        } else {
            self.write_lin_as::<2>(lin, v, st.user)?;
        }
        st.sp = (st.sp & !mask) | sp;
        Ok(())
    }

    /// The current stack as a [`NewStack`] (same-privilege transfers).
    fn current_stack(&self, fault: Exception) -> NewStack {
        NewStack {
            seg: self.segs[Segment::SS as usize],
            sp: self.regs[ESP],
            user: self.cpl == 3,
            fault,
        }
    }

    /// Read the stack pointer for privilege level `dpl` from the current TSS, and check and
    /// fetch the stack segment it names (#TS/#SS with `ext`).
    fn inner_stack(&mut self, dpl: u8, ext: u32) -> Fault<NewStack> {
        let tr_err = Exception::ts(sel_err(self.tr.selector) | ext);
        let base = self.tr.base;
        let (ss, sp) = if self.tr.access & 0x8 != 0 {
            let off = 4 + dpl as u32 * 8;
            if off + 5 > self.tr.limit {
                return Err(tr_err);
            }
            let sp = self.read_lin_system::<4>(base.wrapping_add(off))?;
            let ss = self.read_lin_system::<2>(base.wrapping_add(off + 4))? as u16;
            (ss, sp)
        } else {
            let off = 2 + dpl as u32 * 4;
            if off + 3 > self.tr.limit {
                return Err(tr_err);
            }
            let sp = self.read_lin_system::<2>(base.wrapping_add(off))?;
            let ss = self.read_lin_system::<2>(base.wrapping_add(off + 2))? as u16;
            (ss, sp)
        };
        let err = sel_err(ss) | ext;
        if ss & !3 == 0 {
            return Err(Exception::ts(ext));
        }
        let mut d = self.read_descriptor_ext(ss, Exception::ts, ext)?;
        if (ss & 3) as u8 != dpl || d.dpl() != dpl || !d.writable_data() {
            return Err(Exception::ts(err));
        }
        if !d.present() {
            return Err(Exception::ss(err));
        }
        self.mark_descriptor_accessed(ss, &mut d)?;
        Ok(NewStack {
            seg: d.to_cache(ss),
            sp,
            user: dpl == 3,
            fault: Exception::ss(err),
        })
    }

    /// Make a prepared stack the current SS:ESP.
    fn commit_stack(&mut self, st: &NewStack) {
        self.segs[Segment::SS as usize] = st.seg;
        self.regs[ESP] = st.sp;
    }

    /// Deliver an interrupt or exception through the IDT. EIP holds the return address.
    pub fn interrupt_protected(&mut self, vector: u8, kind: IntKind, code: Option<u32>) -> Fault {
        let soft = matches!(kind, IntKind::Software | IntKind::SoftwareTrap);
        // EXT: the event came from outside the program (an interrupt or an earlier exception).
        let ext = if soft { 0 } else { 1 };
        let v86 = self.v86_mode();
        if v86 && kind == IntKind::Software && self.flags.iopl() < 3 {
            // INT n in V86 mode is IOPL-sensitive (VME redirection is not modelled).
            return Err(Exception::gp(0));
        }
        let index = vector as u32 * 8;
        let idt_err = index | 2 | ext;
        if index + 7 > self.idtr.limit {
            return Err(Exception::gp(idt_err));
        }
        let lin = self.idtr.base.wrapping_add(index);
        let gate = Descriptor {
            lo: self.read_lin_system::<4>(lin)?,
            hi: self.read_lin_system::<4>(lin.wrapping_add(4))?,
        };
        let gate_kind = gate.kind();
        if gate.is_segment()
            || !matches!(
                gate_kind,
                SYS_TASK_GATE | SYS_INT_GATE16 | SYS_TRAP_GATE16 | SYS_INT_GATE32 | SYS_TRAP_GATE32
            )
        {
            return Err(Exception::gp(idt_err));
        }
        if soft && gate.dpl() < self.cpl {
            return Err(Exception::gp(index | 2));
        }
        if !gate.present() {
            return Err(Exception::np(idt_err));
        }
        // The error code goes with exceptions that define one.
        let error_code = if kind == IntKind::Exception {
            code
        } else {
            None
        };

        if gate_kind == SYS_TASK_GATE {
            let tss_sel = gate.gate_selector();
            // The error code goes on the new task's stack, sized by the new TSS type.
            return self.task_gate_switch_code(tss_sel, TaskSource::Int, ext, error_code);
        }

        let wide = gate_kind & 0x8 != 0;
        let sel = gate.gate_selector();
        if sel & !3 == 0 {
            return Err(Exception::gp(ext));
        }
        let err = sel_err(sel) | ext;
        let mut d = self.read_descriptor_ext(sel, Exception::gp, ext)?;
        if !d.is_code() || d.dpl() > self.cpl {
            return Err(Exception::gp(err));
        }
        if !d.present() {
            return Err(Exception::np(err));
        }
        let offset = if wide {
            gate.gate_offset()
        } else {
            gate.gate_offset() & 0xFFFF
        };
        if offset > d.limit() {
            return Err(Exception::gp(ext));
        }
        let flags_image = self.flags.word();
        let old_cs = self.segs[Segment::CS as usize].selector as u32;
        let old_ss = self.segs[Segment::SS as usize].selector as u32;
        let old_esp = self.regs[ESP];
        let new_cpl;
        let mut st;
        if !d.conforming() && d.dpl() < self.cpl {
            // Inner privilege: switch to the stack for the handler's level from the TSS.
            new_cpl = d.dpl();
            if v86 && new_cpl != 0 {
                return Err(Exception::gp(err));
            }
            st = self.inner_stack(new_cpl, ext)?;
            if v86 {
                for seg in [Segment::GS, Segment::FS, Segment::DS, Segment::ES] {
                    let s = self.segs[seg as usize].selector as u32;
                    self.frame_push(&mut st, wide, s)?;
                }
            }
            self.frame_push(&mut st, wide, old_ss)?;
            self.frame_push(&mut st, wide, old_esp)?;
        } else {
            if v86 {
                // A V86 task can only enter a ring-0 non-conforming handler.
                return Err(Exception::gp(err));
            }
            new_cpl = self.cpl;
            st = self.current_stack(Exception::ss(ext));
        }
        self.frame_push(&mut st, wide, flags_image)?;
        self.frame_push(&mut st, wide, old_cs)?;
        self.frame_push(&mut st, wide, self.eip)?;
        if let Some(c) = error_code {
            self.frame_push(&mut st, wide, c)?;
        }
        self.mark_descriptor_accessed(sel, &mut d)?;

        // Commit: nothing below can fault.
        self.commit_stack(&st);
        if v86 {
            for seg in [Segment::ES, Segment::DS, Segment::FS, Segment::GS] {
                self.segs[seg as usize] = null_cache(0);
            }
        }
        self.set_cs(&d, sel, new_cpl);
        self.eip = offset;
        self.flags.set(flags::TF, false);
        self.flags.set(flags::NT, false);
        self.flags.set(flags::RF, false);
        if v86 {
            self.count_mode(ModeSwitch::LeaveV86);
        }
        self.flags.set(flags::VM, false);
        if gate_kind == SYS_INT_GATE16 || gate_kind == SYS_INT_GATE32 {
            self.flags.set(flags::IF, false);
        }
        Ok(())
    }

    /// JMP/CALL FAR to a system descriptor: only call gates, task gates and available TSSes
    /// qualify (#GP(sel) otherwise), their DPL must admit both CPL and RPL (#GP(sel)), and they
    /// must be present (#NP(sel)).
    fn check_far_system_target(&self, d: &Descriptor, selector: u16) -> Fault {
        let err = sel_err(selector);
        let rpl = (selector & 3) as u8;
        match d.kind() {
            SYS_CALL_GATE16 | SYS_CALL_GATE32 | SYS_TASK_GATE | SYS_TSS16_AVAIL
            | SYS_TSS32_AVAIL => {}
            _ => return Err(Exception::gp(err)),
        }
        if d.dpl() < self.cpl || d.dpl() < rpl {
            return Err(Exception::gp(err));
        }
        if !d.present() {
            return Err(Exception::np(err));
        }
        Ok(())
    }

    /// JMP FAR in protected mode (code segment, call gate, task gate, TSS).
    pub fn far_jump_protected(&mut self, selector: u16, offset: u32, op32: bool) -> Fault {
        if self.v86_mode() {
            self.load_seg(Segment::CS, selector)?;
            self.eip = offset & 0xFFFF;
            return Ok(());
        }
        let offset = if op32 { offset } else { offset & 0xFFFF };
        if selector & !3 == 0 {
            return Err(Exception::gp(0));
        }
        let mut d = self.read_descriptor(selector, Exception::gp)?;
        if d.is_segment() {
            self.check_code_direct(&d, selector)?;
            if offset > d.limit() {
                return Err(Exception::gp(0));
            }
            self.mark_descriptor_accessed(selector, &mut d)?;
            let cpl = self.cpl;
            self.set_cs(&d, selector, cpl);
            self.eip = offset;
            return Ok(());
        }
        let kind = d.kind();
        self.check_far_system_target(&d, selector)?;
        match kind {
            SYS_TASK_GATE => self.task_gate_switch(d.gate_selector(), TaskSource::Jump, 0),
            SYS_TSS16_AVAIL | SYS_TSS32_AVAIL => self.task_switch(selector, d, TaskSource::Jump, 0),
            _ => {
                let (tsel, mut td, toff) = self.call_gate_target(&d)?;
                // JMP through a gate never changes privilege.
                if !td.conforming() && td.dpl() != self.cpl {
                    return Err(Exception::gp(sel_err(tsel)));
                }
                if toff > td.limit() {
                    return Err(Exception::gp(0));
                }
                self.mark_descriptor_accessed(tsel, &mut td)?;
                let cpl = self.cpl;
                self.set_cs(&td, tsel, cpl);
                self.eip = toff;
                Ok(())
            }
        }
    }

    /// The code segment a call gate leads to: selector, descriptor and entry offset, after the
    /// checks common to JMP and CALL.
    fn call_gate_target(&mut self, gate: &Descriptor) -> Fault<(u16, Descriptor, u32)> {
        let tsel = gate.gate_selector();
        if tsel & !3 == 0 {
            return Err(Exception::gp(0));
        }
        let td = self.read_descriptor(tsel, Exception::gp)?;
        if !td.is_code() || td.dpl() > self.cpl {
            return Err(Exception::gp(sel_err(tsel)));
        }
        if !td.present() {
            return Err(Exception::np(sel_err(tsel)));
        }
        let off = if gate.kind() == SYS_CALL_GATE32 {
            gate.gate_offset()
        } else {
            gate.gate_offset() & 0xFFFF
        };
        Ok((tsel, td, off))
    }

    /// CALL FAR in protected mode (code segment, call gate with stack switch, task gate, TSS).
    /// EIP holds the return address.
    pub fn far_call_protected(&mut self, selector: u16, offset: u32, op32: bool) -> Fault {
        if self.v86_mode() {
            let cs = self.segs[Segment::CS as usize].selector as u32;
            let ip = self.eip;
            self.push_v(op32, cs)?;
            self.push_v(op32, ip)?;
            self.load_seg(Segment::CS, selector)?;
            self.eip = offset & 0xFFFF;
            return Ok(());
        }
        let offset = if op32 { offset } else { offset & 0xFFFF };
        if selector & !3 == 0 {
            return Err(Exception::gp(0));
        }
        let mut d = self.read_descriptor(selector, Exception::gp)?;
        let old_cs = self.segs[Segment::CS as usize].selector as u32;
        let ret = self.eip;
        if d.is_segment() {
            self.check_code_direct(&d, selector)?;
            if offset > d.limit() {
                return Err(Exception::gp(0));
            }
            let mut st = self.current_stack(Exception::ss(0));
            self.frame_push(&mut st, op32, old_cs)?;
            self.frame_push(&mut st, op32, ret)?;
            self.mark_descriptor_accessed(selector, &mut d)?;
            self.commit_stack(&st);
            let cpl = self.cpl;
            self.set_cs(&d, selector, cpl);
            self.eip = offset;
            return Ok(());
        }
        let kind = d.kind();
        self.check_far_system_target(&d, selector)?;
        match kind {
            SYS_TASK_GATE => {
                return self.task_gate_switch(d.gate_selector(), TaskSource::Call, 0);
            }
            SYS_TSS16_AVAIL | SYS_TSS32_AVAIL => {
                return self.task_switch(selector, d, TaskSource::Call, 0);
            }
            _ => {}
        }
        let (tsel, mut td, toff) = self.call_gate_target(&d)?;
        let wide = kind == SYS_CALL_GATE32;
        if toff > td.limit() {
            return Err(Exception::gp(0));
        }
        let mut st;
        let new_cpl;
        if !td.conforming() && td.dpl() < self.cpl {
            // More privileged: new stack from the TSS, old SS:ESP and the parameters on it.
            new_cpl = td.dpl();
            st = self.inner_stack(new_cpl, 0)?;
            let old_ss = self.segs[Segment::SS as usize].selector as u32;
            let old_esp = self.regs[ESP];
            self.frame_push(&mut st, wide, old_ss)?;
            self.frame_push(&mut st, wide, old_esp)?;
            let count = d.gate_param_count();
            let size = if wide { 4 } else { 2 };
            for i in (0..count).rev() {
                let v = if wide {
                    self.stack_peek::<4>(i * size)?
                } else {
                    self.stack_peek::<2>(i * size)?
                };
                self.frame_push(&mut st, wide, v)?;
            }
        } else {
            new_cpl = self.cpl;
            st = self.current_stack(Exception::ss(0));
        }
        self.frame_push(&mut st, wide, old_cs)?;
        self.frame_push(&mut st, wide, ret)?;
        self.mark_descriptor_accessed(tsel, &mut td)?;
        self.commit_stack(&st);
        self.set_cs(&td, tsel, new_cpl);
        self.eip = toff;
        Ok(())
    }

    /// Check the CS selector of a far return / IRET frame (RPL >= CPL, code, DPL rules).
    fn check_return_cs(&mut self, cs: u16) -> Fault<Descriptor> {
        if cs & !3 == 0 {
            return Err(Exception::gp(0));
        }
        let err = sel_err(cs);
        let rpl = (cs & 3) as u8;
        if rpl < self.cpl {
            return Err(Exception::gp(err));
        }
        let d = self.read_descriptor(cs, Exception::gp)?;
        if !d.is_code() {
            return Err(Exception::gp(err));
        }
        if d.conforming() {
            if d.dpl() > rpl {
                return Err(Exception::gp(err));
            }
        } else if d.dpl() != rpl {
            return Err(Exception::gp(err));
        }
        if !d.present() {
            return Err(Exception::np(err));
        }
        Ok(d)
    }

    /// Check the SS selector popped by a return to an outer level `rpl`.
    fn check_return_ss(&mut self, ss: u16, rpl: u8) -> Fault<Descriptor> {
        if ss & !3 == 0 {
            return Err(Exception::gp(0));
        }
        let err = sel_err(ss);
        let d = self.read_descriptor(ss, Exception::gp)?;
        if (ss & 3) as u8 != rpl || !d.writable_data() || d.dpl() != rpl {
            return Err(Exception::gp(err));
        }
        if !d.present() {
            return Err(Exception::ss(err));
        }
        Ok(d)
    }

    /// After a return to an outer level: data segment registers the new level may not use
    /// are nulled.
    fn null_inaccessible_segments(&mut self) {
        for seg in [Segment::ES, Segment::DS, Segment::FS, Segment::GS] {
            let s = &self.segs[seg as usize];
            let data_or_nonconforming =
                s.access & ACC_CODE == 0 || s.access & ACC_DC == 0 || s.access & ACC_S == 0;
            if data_or_nonconforming && s.dpl() < self.cpl {
                self.segs[seg as usize] = null_cache(0);
            }
        }
    }

    /// Set SS:ESP after a return to an outer level: a 16-bit stack keeps the upper ESP bits.
    fn load_outer_stack(&mut self, ss: u16, d: &Descriptor, sp: u32, pop_bytes: u32) {
        let cache = d.to_cache(ss);
        let mask = if cache.big { u32::MAX } else { 0xFFFF };
        self.segs[Segment::SS as usize] = cache;
        let sp = sp.wrapping_add(pop_bytes);
        self.regs[ESP] = (self.regs[ESP] & !mask) | (sp & mask);
    }

    /// Add `n` to (E)SP within the stack-pointer width.
    fn release_stack(&mut self, n: u32) {
        let mask = self.stack_mask();
        let sp = self.regs[ESP].wrapping_add(n) & mask;
        self.regs[ESP] = (self.regs[ESP] & !mask) | sp;
    }

    /// RETF [imm16] in protected mode, including returns to an outer privilege level.
    pub fn far_return_protected(&mut self, op32: bool, pop_bytes: u32) -> Fault {
        let w = if op32 { 4 } else { 2 };
        let (eip, cs) = if op32 {
            (self.stack_peek::<4>(0)?, self.stack_peek::<4>(4)? as u16)
        } else {
            (self.stack_peek::<2>(0)?, self.stack_peek::<2>(2)? as u16)
        };
        if self.v86_mode() {
            self.load_seg(Segment::CS, cs)?;
            self.release_stack(2 * w + pop_bytes);
            self.eip = eip & 0xFFFF;
            return Ok(());
        }
        let mut d = self.check_return_cs(cs)?;
        let rpl = (cs & 3) as u8;
        if eip > d.limit() {
            return Err(Exception::gp(0));
        }
        if rpl == self.cpl {
            self.mark_descriptor_accessed(cs, &mut d)?;
            self.release_stack(2 * w + pop_bytes);
            self.set_cs(&d, cs, rpl);
            self.eip = eip;
            return Ok(());
        }
        // Outer level: SS:ESP follow the parameters that imm16 releases.
        let (sp, ss) = if op32 {
            (
                self.stack_peek::<4>(2 * w + pop_bytes)?,
                self.stack_peek::<4>(3 * w + pop_bytes)? as u16,
            )
        } else {
            (
                self.stack_peek::<2>(2 * w + pop_bytes)?,
                self.stack_peek::<2>(3 * w + pop_bytes)? as u16,
            )
        };
        let mut sd = self.check_return_ss(ss, rpl)?;
        self.mark_descriptor_accessed(cs, &mut d)?;
        self.mark_descriptor_accessed(ss, &mut sd)?;
        self.set_cs(&d, cs, rpl);
        self.load_outer_stack(ss, &sd, sp, pop_bytes);
        self.eip = eip;
        self.null_inaccessible_segments();
        Ok(())
    }

    /// IRET in protected mode (same level, outer level, to V86, nested task return), and in
    /// V86 mode (IOPL 3 only).
    pub fn iret_protected(&mut self, op32: bool) -> Fault {
        let w = if op32 { 4 } else { 2 };
        let peek = |cpu: &mut Cpu, delta: u32| -> Fault<u32> {
            if op32 {
                cpu.stack_peek::<4>(delta)
            } else {
                cpu.stack_peek::<2>(delta)
            }
        };
        if self.v86_mode() {
            if self.flags.iopl() < 3 {
                return Err(Exception::gp(0));
            }
            let eip = peek(self, 0)?;
            let cs = peek(self, w)? as u16;
            let fl = peek(self, 2 * w)?;
            if eip > 0xFFFF {
                return Err(Exception::gp(0));
            }
            // V86 code cannot change IOPL, VM, VIF or VIP.
            let mask = if op32 {
                flags::ALL_VALID & !(flags::IOPL | flags::VM | flags::VIF | flags::VIP)
            } else {
                0xFFFF & !flags::IOPL
            };
            self.load_seg(Segment::CS, cs)?;
            self.release_stack(3 * w);
            self.eip = eip;
            self.flags.set_masked(fl, mask);
            self.stop_block = true;
            return Ok(());
        }
        if self.flags.sys(flags::NT) {
            // Nested task: return to the task named by the back link of the current TSS.
            let link = self.read_lin_system::<2>(self.tr.base)? as u16;
            if link & 4 != 0 {
                return Err(Exception::ts(sel_err(link)));
            }
            let d = self.read_descriptor(link, Exception::ts)?;
            if d.is_segment() || !matches!(d.kind(), SYS_TSS16_BUSY | SYS_TSS32_BUSY) {
                return Err(Exception::ts(sel_err(link)));
            }
            if !d.present() {
                return Err(Exception::np(sel_err(link)));
            }
            return self.task_switch(link, d, TaskSource::Iret, 0);
        }
        let eip = peek(self, 0)?;
        let cs = peek(self, w)? as u16;
        let fl = peek(self, 2 * w)?;
        let old_cpl = self.cpl;
        if op32 && fl & flags::VM != 0 && old_cpl == 0 {
            return self.iret_to_v86(eip, cs, fl);
        }
        let mut d = self.check_return_cs(cs)?;
        let rpl = (cs & 3) as u8;
        if eip > d.limit() {
            return Err(Exception::gp(0));
        }
        if rpl == old_cpl {
            self.mark_descriptor_accessed(cs, &mut d)?;
            self.release_stack(3 * w);
            self.set_cs(&d, cs, rpl);
            self.eip = eip;
            self.iret_flags(fl, op32, old_cpl);
            return Ok(());
        }
        let sp = peek(self, 3 * w)?;
        let ss = peek(self, 4 * w)? as u16;
        let mut sd = self.check_return_ss(ss, rpl)?;
        self.mark_descriptor_accessed(cs, &mut d)?;
        self.mark_descriptor_accessed(ss, &mut sd)?;
        self.set_cs(&d, cs, rpl);
        self.load_outer_stack(ss, &sd, sp, 0);
        self.eip = eip;
        self.iret_flags(fl, op32, old_cpl);
        self.null_inaccessible_segments();
        Ok(())
    }

    /// EFLAGS from an IRET frame: IOPL (and VIF/VIP) change only at CPL 0, IF only when
    /// CPL <= IOPL; VM is never set here.
    fn iret_flags(&mut self, fl: u32, op32: bool, cpl: u8) {
        let mut mask =
            flags::ARITH | flags::TF | flags::DF | flags::NT | flags::RF | flags::AC | flags::ID;
        if cpl == 0 {
            mask |= flags::IOPL | flags::VIF | flags::VIP;
        }
        if cpl <= self.flags.iopl() {
            mask |= flags::IF;
        }
        if !op32 {
            mask &= 0xFFFF;
        }
        self.flags.set_masked(fl, mask);
        self.stop_block = true;
    }

    /// IRET at CPL 0 with VM set in the popped EFLAGS: the frame continues with ESP, SS, ES,
    /// DS, FS, GS, all loaded real-mode style.
    fn iret_to_v86(&mut self, eip: u32, cs: u16, fl: u32) -> Fault {
        let mut v = [0u32; 6];
        for (i, slot) in v.iter_mut().enumerate() {
            *slot = self.stack_peek::<4>(12 + 4 * i as u32)?;
        }
        let [esp, ss, es, ds, fs, gs] = v;
        if eip > 0xFFFF {
            return Err(Exception::gp(0));
        }
        self.count_mode(ModeSwitch::EnterV86);
        self.flags.set_word(fl);
        for (seg, sel) in [
            (Segment::CS, cs),
            (Segment::SS, ss as u16),
            (Segment::ES, es as u16),
            (Segment::DS, ds as u16),
            (Segment::FS, fs as u16),
            (Segment::GS, gs as u16),
        ] {
            self.segs[seg as usize] = v86_cache(sel);
        }
        self.regs[ESP] = esp;
        self.eip = eip;
        self.set_cpl(3);
        self.stop_block = true;
        Ok(())
    }

    /// IN/OUT/INS/OUTS permission: allowed when CPL <= IOPL (and not V86), else the TSS I/O
    /// bitmap decides; #GP(0) when denied.
    pub fn check_io_permission(&mut self, port: u16, size: u8) -> Fault {
        if self.real_mode() || (!self.v86_mode() && self.cpl <= self.flags.iopl()) {
            return Ok(());
        }
        // Only a 32-bit TSS has an I/O permission bitmap.
        if !self.tr.present() || self.tr.access & 0xF != SYS_TSS32_BUSY || self.tr.limit < 0x67 {
            return Err(Exception::gp(0));
        }
        let base = self.tr.base;
        let map = self.read_lin_system::<2>(base.wrapping_add(0x66))?;
        let byte = map + (port as u32 >> 3);
        // Two bytes are read so accesses that cross a byte boundary are covered; both must lie
        // inside the TSS limit.
        if byte + 1 > self.tr.limit {
            return Err(Exception::gp(0));
        }
        let bits = self.read_lin_system::<2>(base.wrapping_add(byte))?;
        let mask = ((1u32 << size) - 1) << (port & 7);
        if bits & mask != 0 {
            return Err(Exception::gp(0));
        }
        Ok(())
    }

    /// LLDT: load the LDT register (checks of the instruction; CPL 0 required).
    pub fn load_ldt(&mut self, selector: u16) -> Fault {
        if self.cpl != 0 {
            return Err(Exception::gp(0));
        }
        if selector & !3 == 0 {
            self.ldtr = null_cache(selector);
            return Ok(());
        }
        let err = sel_err(selector);
        if selector & 4 != 0 {
            return Err(Exception::gp(err));
        }
        let d = self.read_descriptor(selector, Exception::gp)?;
        if d.is_segment() || d.kind() != SYS_LDT {
            return Err(Exception::gp(err));
        }
        if !d.present() {
            return Err(Exception::np(err));
        }
        self.ldtr = d.to_cache(selector);
        Ok(())
    }

    /// LTR: load the task register and mark the TSS busy (CPL 0 required).
    pub fn load_task_register(&mut self, selector: u16) -> Fault {
        if self.cpl != 0 {
            return Err(Exception::gp(0));
        }
        if selector & !3 == 0 {
            return Err(Exception::gp(0));
        }
        let err = sel_err(selector);
        if selector & 4 != 0 {
            return Err(Exception::gp(err));
        }
        let mut d = self.read_descriptor(selector, Exception::gp)?;
        if d.is_segment() || !matches!(d.kind(), SYS_TSS16_AVAIL | SYS_TSS32_AVAIL) {
            return Err(Exception::gp(err));
        }
        if !d.present() {
            return Err(Exception::np(err));
        }
        d.hi |= DESC_BUSY;
        if let Some(addr) = self.descriptor_address(selector) {
            self.write_lin_system::<4>(addr.wrapping_add(4), d.hi)?;
        }
        self.tr = d.to_cache(selector);
        Ok(())
    }
}

/// A stack being built before it becomes SS:ESP (privilege changes, atomic frames).
pub(crate) struct NewStack {
    pub seg: SegCache,
    pub sp: u32,
    /// Pushes are user-mode accesses (the stack belongs to CPL 3).
    pub user: bool,
    /// The fault a limit violation raises.
    pub fault: Exception,
}

/// The busy bit of a TSS descriptor (type bit 1), in the high dword.
pub const DESC_BUSY: u32 = 1 << 9;

/// A selector as an error code: RPL cleared, TI kept.
#[inline]
pub fn sel_err(selector: u16) -> u32 {
    (selector & 0xFFFC) as u32
}

/// A segment cache for V86 mode: base = selector * 16, 64 KiB, writable, DPL 3.
pub fn v86_cache(selector: u16) -> SegCache {
    let mut s = SegCache::real(selector);
    s.access |= 3 << 5;
    s.compute_ranges();
    s
}
