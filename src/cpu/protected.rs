//! Protected-mode mechanics: descriptors, segment loads with privilege checks, far control
//! transfers through call gates and task gates, IDT delivery, IRET, I/O permission.
//!
//! The functions whose body is `todo_protected` are being written; each returns #GP(0) until
//! then so a guest sees a fault, never a host panic.

use super::exception::{Exception, Fault};
use super::interrupt::IntKind;
use super::seg::{SegCache, Segment, ACC_S};
use super::Cpu;

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
        let addr = self
            .descriptor_address(selector)
            .ok_or(fault((selector & !3) as u32))?;
        let lo = self.read_lin_system::<4>(addr)?;
        let hi = self.read_lin_system::<4>(addr.wrapping_add(4))?;
        Ok(Descriptor { lo, hi })
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

    /// Load a segment register in protected mode.
    pub(crate) fn load_seg_protected(&mut self, _seg: Segment, _selector: u16) -> Fault {
        todo_protected()
    }

    /// Deliver an interrupt through the IDT.
    pub(crate) fn interrupt_protected(
        &mut self,
        _vector: u8,
        _kind: IntKind,
        _code: Option<u32>,
    ) -> Fault {
        todo_protected()
    }

    /// JMP FAR in protected mode (code segment, call gate, task gate, TSS).
    pub(crate) fn far_jump_protected(
        &mut self,
        _selector: u16,
        _offset: u32,
        _op32: bool,
    ) -> Fault {
        todo_protected()
    }

    /// CALL FAR in protected mode (code segment, call gate with stack switch, task gate, TSS).
    /// EIP holds the return address.
    pub(crate) fn far_call_protected(
        &mut self,
        _selector: u16,
        _offset: u32,
        _op32: bool,
    ) -> Fault {
        todo_protected()
    }

    /// RETF [imm16] in protected mode, including returns to an outer privilege level.
    pub(crate) fn far_return_protected(&mut self, _op32: bool, _pop_bytes: u32) -> Fault {
        todo_protected()
    }

    /// IRET in protected mode (same level, outer level, to V86, nested task return).
    pub(crate) fn iret_protected(&mut self, _op32: bool) -> Fault {
        todo_protected()
    }

    /// IN/OUT/INS/OUTS permission: allowed when CPL <= IOPL (and not V86), else the TSS I/O
    /// bitmap decides; #GP(0) when denied.
    pub fn check_io_permission(&mut self, _port: u16, _size: u8) -> Fault {
        if self.real_mode() || (!self.v86_mode() && self.cpl <= self.flags.iopl()) {
            return Ok(());
        }
        todo_protected()
    }
}

fn todo_protected() -> Fault {
    Err(Exception::gp(0))
}

// LLDT/LTR (system branch)
impl Cpu {
    /// LLDT: load the LDT register from a GDT descriptor. A null selector leaves LDTR unusable
    /// (later LDT references fault). #GP(selector) for a selector in the LDT or outside the GDT,
    /// or a descriptor that is not an LDT; #NP(selector) if it is not present.
    pub fn load_ldt(&mut self, selector: u16) -> Fault {
        if selector & 0xFFFC == 0 {
            self.ldtr = null_cache(selector);
            return Ok(());
        }
        let code = (selector & 0xFFFC) as u32;
        if selector & 4 != 0 {
            return Err(Exception::gp(code));
        }
        let d = self.read_descriptor(selector, Exception::gp)?;
        if d.is_segment() || d.kind() != SYS_LDT {
            return Err(Exception::gp(code));
        }
        if !d.present() {
            return Err(Exception::np(code));
        }
        self.ldtr = d.to_cache(selector);
        Ok(())
    }

    /// LTR: load the task register from an available TSS descriptor in the GDT and mark that
    /// descriptor busy. #GP(0) for a null selector, #GP(selector) for an LDT selector, a
    /// selector outside the GDT or a descriptor that is not an available TSS; #NP(selector) if
    /// it is not present.
    pub fn load_task_register(&mut self, selector: u16) -> Fault {
        if selector & 0xFFFC == 0 {
            return Err(Exception::gp(0));
        }
        let code = (selector & 0xFFFC) as u32;
        if selector & 4 != 0 {
            return Err(Exception::gp(code));
        }
        let mut d = self.read_descriptor(selector, Exception::gp)?;
        if d.is_segment() || !matches!(d.kind(), SYS_TSS16_AVAIL | SYS_TSS32_AVAIL) {
            return Err(Exception::gp(code));
        }
        if !d.present() {
            return Err(Exception::np(code));
        }
        // Available (type 1/9) to busy (3/B): set bit 1 of the type.
        d.hi |= 2 << 8;
        if let Some(addr) = self.descriptor_address(selector) {
            self.write_lin_system::<4>(addr.wrapping_add(4), d.hi)?;
        }
        self.tr = d.to_cache(selector);
        Ok(())
    }
}
