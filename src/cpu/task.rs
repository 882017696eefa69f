//! Hardware task switching (SDM Vol 3 ch. 7): JMP/CALL to a TSS or task gate, interrupts and
//! exceptions through task gates, IRET with NT set. 16-bit (types 1/3) and 32-bit (types 9/B)
//! TSSes.
//!
//! The switch has a commit point, as on the CPU: everything up to saving the old state and
//! flipping the busy bits faults in the old task (the caller rolls back). After TR, the general
//! registers, EFLAGS, EIP and CR3 are loaded, the segment registers and LDTR are checked; those
//! faults belong to the new task, so they are delivered here and the switch itself succeeds.

use super::counters::ModeSwitch;
use super::exception::{self, Exception, Fault};
use super::flags;
use super::protected::{
    null_cache, sel_err, v86_cache, Descriptor, DESC_BUSY, SYS_LDT, SYS_TSS16_AVAIL,
    SYS_TSS16_BUSY, SYS_TSS32_AVAIL, SYS_TSS32_BUSY,
};
use super::seg::Segment;
use super::{Cpu, CR0_PG, CR0_TS};

/// What started a task switch: decides busy bits, NT and the back link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskSource {
    /// JMP: the old task becomes available, no link.
    Jump,
    /// CALL: the new task is nested (NT set, back link to the old task).
    Call,
    /// Interrupt or exception through a task gate: nested like CALL.
    Int,
    /// IRET with NT: back to the linked task, which stays busy; the old one becomes available.
    Iret,
}

/// DR6 bit reported for the TSS debug trap.
const DR6_BT: u32 = 1 << 15;

/// Minimum TSS limits: a 32-bit TSS holds 0x68 bytes, a 16-bit one 0x2C.
const TSS32_MIN_LIMIT: u32 = 0x67;
const TSS16_MIN_LIMIT: u32 = 0x2B;

/// 32-bit TSS field offsets.
const TSS32_CR3: u32 = 0x1C;
const TSS32_EIP: u32 = 0x20;
const TSS32_EFLAGS: u32 = 0x24;
const TSS32_EAX: u32 = 0x28;
const TSS32_ES: u32 = 0x48;
const TSS32_LDT: u32 = 0x60;
const TSS32_TRAP: u32 = 0x64;

/// 16-bit TSS field offsets.
const TSS16_IP: u32 = 0x0E;
const TSS16_FLAGS: u32 = 0x10;
const TSS16_AX: u32 = 0x12;
const TSS16_ES: u32 = 0x22;
const TSS16_LDT: u32 = 0x2A;

/// Segment registers in TSS order (ES, CS, SS, DS, FS, GS) match [`Segment`] numbering.
const SEG_COUNT_32: usize = 6;
const SEG_COUNT_16: usize = 4;

/// A task's state as read from its TSS.
struct TaskState {
    eip: u32,
    eflags: u32,
    regs: [u32; 8],
    segs: [u16; 6],
    ldt: u16,
    cr3: u32,
    /// The debug trap bit (32-bit TSS offset 0x64): #DB once the new task is loaded.
    trap: bool,
}

impl Cpu {
    /// Switch through a task gate (JMP/CALL/INT): the gate names a TSS that must be an
    /// available TSS in the GDT.
    pub(crate) fn task_gate_switch(&mut self, tss_sel: u16, src: TaskSource, ext: u32) -> Fault {
        self.task_gate_switch_code(tss_sel, src, ext, None)
    }

    /// [`Cpu::task_gate_switch`] that pushes an exception's error code on the new task's stack.
    pub(crate) fn task_gate_switch_code(
        &mut self,
        tss_sel: u16,
        src: TaskSource,
        ext: u32,
        error_code: Option<u32>,
    ) -> Fault {
        let err = sel_err(tss_sel) | ext;
        if tss_sel & 4 != 0 {
            return Err(Exception::gp(err));
        }
        let d = self.read_descriptor_ext(tss_sel, Exception::gp, ext)?;
        if d.is_segment() || !matches!(d.kind(), SYS_TSS16_AVAIL | SYS_TSS32_AVAIL) {
            return Err(Exception::gp(err));
        }
        if !d.present() {
            return Err(Exception::np(err));
        }
        self.task_switch_code(tss_sel, d, src, ext, error_code)
    }

    /// Switch to the task whose TSS descriptor `d` was read for `sel` (privilege checks done by
    /// the caller).
    pub(crate) fn task_switch(
        &mut self,
        sel: u16,
        d: Descriptor,
        src: TaskSource,
        ext: u32,
    ) -> Fault {
        self.task_switch_code(sel, d, src, ext, None)
    }

    fn task_switch_code(
        &mut self,
        sel: u16,
        mut d: Descriptor,
        src: TaskSource,
        ext: u32,
        error_code: Option<u32>,
    ) -> Fault {
        let err = sel_err(sel) | ext;
        if sel & 4 != 0 || d.is_segment() {
            return Err(Exception::gp(err));
        }
        let busy = matches!(d.kind(), SYS_TSS16_BUSY | SYS_TSS32_BUSY);
        let avail = matches!(d.kind(), SYS_TSS16_AVAIL | SYS_TSS32_AVAIL);
        if src == TaskSource::Iret {
            if !busy {
                return Err(Exception::ts(err));
            }
        } else if !avail {
            return Err(Exception::gp(err));
        }
        if !d.present() {
            return Err(Exception::np(err));
        }
        let new32 = d.kind() & 8 != 0;
        let min = if new32 {
            TSS32_MIN_LIMIT
        } else {
            TSS16_MIN_LIMIT
        };
        if d.limit() < min {
            return Err(Exception::ts(err));
        }
        let old32 = self.tr.access & 8 != 0;
        let old_min = if old32 { 0x5F } else { 0x29 };
        if !self.tr.present() || self.tr.limit < old_min {
            return Err(Exception::ts(sel_err(self.tr.selector) | ext));
        }

        // Read the new task's state (still in the old task's address space).
        let st = self.read_task_state(d.base(), new32)?;

        // Save the old task.
        let mut eflags = self.flags.word();
        if src == TaskSource::Iret {
            eflags &= !flags::NT;
        }
        self.save_task_state(self.tr.base, old32, eflags)?;

        // Busy bits and the back link.
        let old_sel = self.tr.selector;
        if matches!(src, TaskSource::Jump | TaskSource::Iret) {
            self.set_tss_busy(old_sel, false)?;
        }
        if matches!(src, TaskSource::Call | TaskSource::Int) {
            self.write_lin_system::<2>(d.base(), old_sel as u32)?;
        }
        if src != TaskSource::Iret {
            self.set_tss_busy(sel, true)?;
            d.hi |= DESC_BUSY;
        }

        // Commit: from here on the CPU runs the new task.
        self.counters.task_switches += 1;
        let was_v86 = self.flags.sys(flags::VM);
        self.tr = d.to_cache(sel);
        self.cr0 |= CR0_TS;
        if new32 && self.cr0 & CR0_PG != 0 {
            self.cr3 = st.cr3;
            self.counters.cr3_loads += 1;
            self.sync_paging();
            self.mem.tlb.flush_non_global();
        }
        let mut eflags = st.eflags;
        if matches!(src, TaskSource::Call | TaskSource::Int) {
            eflags |= flags::NT;
        }
        self.flags.set_word(eflags);
        match (was_v86, eflags & flags::VM != 0) {
            (false, true) => self.count_mode(ModeSwitch::EnterV86),
            (true, false) => self.count_mode(ModeSwitch::LeaveV86),
            _ => {}
        }
        self.eip = st.eip;
        self.regs[..8].copy_from_slice(&st.regs);
        self.stop_block = true;
        let result = self.load_task_segments(&st).and_then(|_| match error_code {
            Some(c) => self.push_v(new32, c),
            None => Ok(()),
        });
        match result {
            // A fault of the new task: delivered with the new task's state.
            Err(e) => self.deliver_exception(e),
            Ok(()) if st.trap => {
                self.dr[6] |= DR6_BT;
                self.deliver_exception(Exception::new(exception::DB));
            }
            Ok(()) => {}
        }
        Ok(())
    }

    /// Read EIP, EFLAGS, the general and segment registers, LDT and CR3 from a TSS.
    fn read_task_state(&mut self, base: u32, wide: bool) -> Fault<TaskState> {
        let mut st = TaskState {
            eip: 0,
            eflags: 0,
            regs: [0; 8],
            segs: [0; 6],
            ldt: 0,
            cr3: 0,
            trap: false,
        };
        if wide {
            st.cr3 = self.read_lin_system::<4>(base.wrapping_add(TSS32_CR3))?;
            st.eip = self.read_lin_system::<4>(base.wrapping_add(TSS32_EIP))?;
            st.eflags = self.read_lin_system::<4>(base.wrapping_add(TSS32_EFLAGS))?;
            for i in 0..8u32 {
                st.regs[i as usize] =
                    self.read_lin_system::<4>(base.wrapping_add(TSS32_EAX + 4 * i))?;
            }
            for i in 0..SEG_COUNT_32 as u32 {
                st.segs[i as usize] =
                    self.read_lin_system::<2>(base.wrapping_add(TSS32_ES + 4 * i))? as u16;
            }
            st.ldt = self.read_lin_system::<2>(base.wrapping_add(TSS32_LDT))? as u16;
            st.trap = self.read_lin_system::<2>(base.wrapping_add(TSS32_TRAP))? & 1 != 0;
        } else {
            st.eip = self.read_lin_system::<2>(base.wrapping_add(TSS16_IP))?;
            st.eflags = self.read_lin_system::<2>(base.wrapping_add(TSS16_FLAGS))?;
            for i in 0..8u32 {
                // The upper halves read as ones after a switch to a 16-bit task.
                st.regs[i as usize] =
                    0xFFFF_0000 | self.read_lin_system::<2>(base.wrapping_add(TSS16_AX + 2 * i))?;
            }
            for i in 0..SEG_COUNT_16 as u32 {
                st.segs[i as usize] =
                    self.read_lin_system::<2>(base.wrapping_add(TSS16_ES + 2 * i))? as u16;
            }
            st.ldt = self.read_lin_system::<2>(base.wrapping_add(TSS16_LDT))? as u16;
        }
        Ok(st)
    }

    /// Save the dynamic state into the current TSS (CR3 and LDT are not saved).
    fn save_task_state(&mut self, base: u32, wide: bool, eflags: u32) -> Fault {
        if wide {
            self.write_lin_system::<4>(base.wrapping_add(TSS32_EIP), self.eip)?;
            self.write_lin_system::<4>(base.wrapping_add(TSS32_EFLAGS), eflags)?;
            for i in 0..8u32 {
                let v = self.regs[i as usize];
                self.write_lin_system::<4>(base.wrapping_add(TSS32_EAX + 4 * i), v)?;
            }
            for i in 0..SEG_COUNT_32 as u32 {
                let v = self.segs[i as usize].selector as u32;
                self.write_lin_system::<2>(base.wrapping_add(TSS32_ES + 4 * i), v)?;
            }
        } else {
            self.write_lin_system::<2>(base.wrapping_add(TSS16_IP), self.eip)?;
            self.write_lin_system::<2>(base.wrapping_add(TSS16_FLAGS), eflags)?;
            for i in 0..8u32 {
                let v = self.regs[i as usize];
                self.write_lin_system::<2>(base.wrapping_add(TSS16_AX + 2 * i), v)?;
            }
            for i in 0..SEG_COUNT_16 as u32 {
                let v = self.segs[i as usize].selector as u32;
                self.write_lin_system::<2>(base.wrapping_add(TSS16_ES + 2 * i), v)?;
            }
        }
        Ok(())
    }

    /// Set or clear the busy bit of the TSS descriptor for `sel` in the GDT.
    fn set_tss_busy(&mut self, sel: u16, busy: bool) -> Fault {
        let Some(addr) = self.descriptor_address(sel & !4) else {
            return Ok(());
        };
        let hi = self.read_lin_system::<4>(addr.wrapping_add(4))?;
        let hi = if busy {
            hi | DESC_BUSY
        } else {
            hi & !DESC_BUSY
        };
        self.write_lin_system::<4>(addr.wrapping_add(4), hi)
    }

    /// Load LDTR and the segment registers of the new task, with the checks of the task
    /// switch (#TS for bad selectors, #NP/#SS for absent segments).
    fn load_task_segments(&mut self, st: &TaskState) -> Fault {
        // Selectors first, with unusable caches, so a fault leaves them visible to the handler.
        self.ldtr = null_cache(st.ldt);
        let v86 = self.flags.sys(flags::VM);
        for (i, &sel) in st.segs.iter().enumerate() {
            self.segs[i] = if v86 { v86_cache(sel) } else { null_cache(sel) };
        }
        let cpl = if v86 {
            3
        } else {
            (st.segs[Segment::CS as usize] & 3) as u8
        };
        self.set_cpl(cpl);

        if st.ldt & !3 != 0 {
            let err = sel_err(st.ldt);
            if st.ldt & 4 != 0 {
                return Err(Exception::ts(err));
            }
            let d = self.read_descriptor(st.ldt, Exception::ts)?;
            if d.is_segment() || d.kind() != SYS_LDT || !d.present() {
                return Err(Exception::ts(err));
            }
            self.ldtr = d.to_cache(st.ldt);
        }
        if v86 {
            return Ok(());
        }

        let cs = st.segs[Segment::CS as usize];
        let err = sel_err(cs);
        if cs & !3 == 0 {
            return Err(Exception::ts(err));
        }
        let mut d = self.read_descriptor(cs, Exception::ts)?;
        let dpl_bad = if d.conforming() {
            d.dpl() > cpl
        } else {
            d.dpl() != cpl
        };
        if !d.is_code() || dpl_bad {
            return Err(Exception::ts(err));
        }
        if !d.present() {
            return Err(Exception::np(err));
        }
        self.mark_descriptor_accessed(cs, &mut d)?;
        self.segs[Segment::CS as usize] = d.to_cache(cs);

        let ss = st.segs[Segment::SS as usize];
        let err = sel_err(ss);
        if ss & !3 == 0 {
            return Err(Exception::ts(err));
        }
        let mut d = self.read_descriptor(ss, Exception::ts)?;
        if (ss & 3) as u8 != cpl || !d.writable_data() || d.dpl() != cpl {
            return Err(Exception::ts(err));
        }
        if !d.present() {
            return Err(Exception::ss(err));
        }
        self.mark_descriptor_accessed(ss, &mut d)?;
        self.segs[Segment::SS as usize] = d.to_cache(ss);

        for seg in [Segment::ES, Segment::DS, Segment::FS, Segment::GS] {
            let sel = st.segs[seg as usize];
            if sel & !3 == 0 {
                continue;
            }
            let err = sel_err(sel);
            let mut d = self.read_descriptor(sel, Exception::ts)?;
            if !d.loadable_data()
                || (!d.conforming() && (d.dpl() < cpl || d.dpl() < (sel & 3) as u8))
            {
                return Err(Exception::ts(err));
            }
            if !d.present() {
                return Err(Exception::np(err));
            }
            self.mark_descriptor_accessed(sel, &mut d)?;
            self.segs[seg as usize] = d.to_cache(sel);
        }
        Ok(())
    }
}
