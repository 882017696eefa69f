//! Segment registers and their descriptor caches, and loading them in real and V86 mode.
//! Protected-mode loads (descriptor fetch and every privilege check) are in `protected.rs`.

use super::exception::Fault;
use super::Cpu;
use serde::{Deserialize, Serialize};

/// Segment register numbers, as encoded in instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Segment {
    ES = 0,
    CS = 1,
    SS = 2,
    DS = 3,
    FS = 4,
    GS = 5,
}

impl Segment {
    pub fn from_index(i: u8) -> Segment {
        match i {
            0 => Segment::ES,
            1 => Segment::CS,
            2 => Segment::SS,
            3 => Segment::DS,
            4 => Segment::FS,
            _ => Segment::GS,
        }
    }
}

/// Descriptor access byte bits.
pub const ACC_ACCESSED: u8 = 1 << 0;
/// Data: writable. Code: readable.
pub const ACC_RW: u8 = 1 << 1;
/// Data: expand-down. Code: conforming.
pub const ACC_DC: u8 = 1 << 2;
/// Code (1) or data (0) segment.
pub const ACC_CODE: u8 = 1 << 3;
/// Code/data (1) or system (0) descriptor.
pub const ACC_S: u8 = 1 << 4;
/// Present.
pub const ACC_P: u8 = 1 << 7;

/// A segment register: the visible selector and the hidden descriptor cache.
///
/// Besides the architectural fields it keeps the valid offset ranges for reads and writes,
/// computed when the register is loaded, so the access fast path is one range check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegCache {
    pub selector: u16,
    pub base: u32,
    /// Byte-granular limit (already scaled by the G bit).
    pub limit: u32,
    /// Access byte: P, DPL, S, type.
    pub access: u8,
    /// D/B bit: 32-bit code, 32-bit stack pointer, expand-down upper bound 4 GiB.
    pub big: bool,
    /// G bit as loaded (kept for SGDT-style reconstruction of the descriptor).
    pub granular: bool,
    /// AVL bit as loaded.
    pub avl: bool,
    /// Lowest and highest offsets a read may touch (lo > hi: every read faults).
    pub read_lo: u32,
    pub read_hi: u32,
    /// Lowest and highest offsets a write may touch (lo > hi: every write faults).
    pub write_lo: u32,
    pub write_hi: u32,
}

impl Default for SegCache {
    fn default() -> Self {
        SegCache::real(0)
    }
}

impl SegCache {
    /// A real-mode segment: base = selector * 16, 64 KiB, readable and writable, present, DPL 0.
    pub fn real(selector: u16) -> SegCache {
        let mut s = SegCache {
            selector,
            base: (selector as u32) << 4,
            limit: 0xFFFF,
            access: ACC_P | ACC_S | ACC_RW | ACC_ACCESSED,
            big: false,
            granular: false,
            avl: false,
            read_lo: 0,
            read_hi: 0,
            write_lo: 0,
            write_hi: 0,
        };
        s.compute_ranges();
        s
    }

    /// The descriptor privilege level.
    #[inline]
    pub fn dpl(&self) -> u8 {
        (self.access >> 5) & 3
    }

    /// Whether the descriptor is present (false after loading a null selector).
    #[inline]
    pub fn present(&self) -> bool {
        self.access & ACC_P != 0
    }

    /// A code segment.
    #[inline]
    pub fn is_code(&self) -> bool {
        self.access & (ACC_S | ACC_CODE) == ACC_S | ACC_CODE
    }

    /// Recompute the fast-path offset ranges from access byte, limit and D/B.
    pub fn compute_ranges(&mut self) {
        let (lo, hi) = if self.access & (ACC_S | ACC_CODE | ACC_DC) == ACC_S | ACC_DC {
            // Expand-down data: valid offsets are limit+1 ..= 0xFFFF or 0xFFFFFFFF.
            let top = if self.big { u32::MAX } else { 0xFFFF };
            (self.limit.wrapping_add(1), top)
        } else {
            (0, self.limit)
        };
        let usable = self.present() && self.access & ACC_S != 0;
        let readable = usable && (self.access & ACC_CODE == 0 || self.access & ACC_RW != 0);
        let writable = usable && self.access & ACC_CODE == 0 && self.access & ACC_RW != 0;
        // An empty range (lo = 1, hi = 0) makes every access take the faulting slow path.
        let empty = (1, 0);
        (self.read_lo, self.read_hi) = if readable && lo <= hi {
            (lo, hi)
        } else {
            empty
        };
        (self.write_lo, self.write_hi) = if writable && lo <= hi {
            (lo, hi)
        } else {
            empty
        };
    }

    /// Whether `size` bytes at `off` are inside the readable range.
    #[inline(always)]
    pub fn can_read(&self, off: u32, size: u32) -> bool {
        off >= self.read_lo && (off as u64 + size as u64 - 1) <= self.read_hi as u64
    }

    /// Whether `size` bytes at `off` are inside the writable range.
    #[inline(always)]
    pub fn can_write(&self, off: u32, size: u32) -> bool {
        off >= self.write_lo && (off as u64 + size as u64 - 1) <= self.write_hi as u64
    }
}

impl Cpu {
    /// MOV/POP/LxS to a segment register, in any mode.
    pub fn load_seg(&mut self, seg: Segment, selector: u16) -> Fault {
        if self.protected_mode() && !self.v86_mode() {
            return self.load_seg_protected(seg, selector);
        }
        let v86 = self.v86_mode();
        let s = &mut self.segs[seg as usize];
        s.selector = selector;
        s.base = (selector as u32) << 4;
        if v86 {
            // V86 mode reloads the whole cache: 64 KiB, writable, DPL 3.
            *s = SegCache::real(selector);
            s.access |= 3 << 5;
            s.compute_ranges();
        }
        // Real mode changes the selector and base, and makes the segment a present, writable
        // data segment (as Bochs does, and real CPUs behave: code that returned from protected
        // mode writes through CS, as ISOLINUX does); the limit stays ("unreal mode").
        if !v86 {
            s.access = ACC_P | ACC_S | ACC_RW | ACC_ACCESSED;
            s.compute_ranges();
        }
        if seg == Segment::CS {
            self.stop_block = true;
        }
        Ok(())
    }
}
