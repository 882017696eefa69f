//! Guest memory access through segmentation and paging.
//!
//! Fast path: one range check against the segment cache, one TLB probe, a RAM read. Everything
//! else (TLB misses, page-crossing accesses, MMIO, ROM, writes to pages holding decoded code,
//! faults) goes to the `_slow` functions.

use super::exception::{self, Exception, Fault};
use super::seg::Segment;
use super::{Cpu, SegCache, ESP};
use crate::mem::tlb::{TLB_READ_SUPER, TLB_WRITE_SUPER};
use crate::mem::{Access, PageKind};

/// Whether `N` bytes from `p` lie within `ram`, computed in 64 bits: on wasm32 `p + N` in
/// `usize` could wrap, and slice indexing checks that too (a second compare and branch on every
/// guest memory access of the browser build).
#[inline(always)]
fn within<const N: usize>(ram: &[u8], p: usize) -> bool {
    p as u64 + N as u64 <= ram.len() as u64
}

/// Read `N` little-endian bytes from `ram[p..]` into a u32.
#[inline(always)]
fn ram_read<const N: usize>(ram: &[u8], p: usize) -> u32 {
    assert!(within::<N>(ram, p), "RAM read out of bounds");
    let mut v = 0u32;
    for i in 0..N {
        // SAFETY: p + i < p + N <= ram.len() (checked just above, without wrapping).
        v |= u32::from(unsafe { *ram.get_unchecked(p + i) }) << (8 * i);
    }
    v
}

#[inline(always)]
fn ram_write<const N: usize>(ram: &mut [u8], p: usize, v: u32) {
    assert!(within::<N>(ram, p), "RAM write out of bounds");
    for i in 0..N {
        // SAFETY: p + i < p + N <= ram.len() (checked just above, without wrapping).
        unsafe { *ram.get_unchecked_mut(p + i) = (v >> (8 * i)) as u8 };
    }
}

impl Cpu {
    /// The fault a segment-limit or access-rights violation raises for `seg`.
    #[inline]
    pub fn seg_fault(seg: usize) -> Exception {
        if seg == Segment::SS as usize {
            Exception::ss(0)
        } else {
            Exception::gp(0)
        }
    }

    /// `&self.segs[seg]`, addressed as one byte offset from the CPU (the offset of `segs` plus
    /// `seg` sizes of a cache). Indexed the plain way, the compiler computes `segs`' address
    /// (the CPU's plus a constant) once outside the run loop and keeps it as one more value
    /// live through it, which V8 reloads from the stack at every instruction of the wasm build
    /// (as for the register file, see [`Cpu`]); from one offset it adds the constant into each
    /// load instead. Measured with `make bench-ab`: isprime 1.035x.
    #[inline(always)]
    fn seg_cache(&self, seg: usize) -> &SegCache {
        // Out of range panics, as `self.segs[seg]` would.
        assert!(seg < self.segs.len());
        let offset = std::mem::offset_of!(Cpu, segs) + seg * std::mem::size_of::<SegCache>();
        // SAFETY: `offset` is where `self.segs[seg]` is within `*self` (the array's offset in
        // the struct plus `seg` whole elements, `seg` checked in range above), so the pointer
        // is in bounds of the allocation `self` points to, aligned for `SegCache` (the array is,
        // and each element starts a multiple of its size further on), and points to an
        // initialised `SegCache`. The reference borrows from `&self`, so nothing can write
        // to it while it lives.
        unsafe {
            &*(self as *const Cpu)
                .cast::<u8>()
                .add(offset)
                .cast::<SegCache>()
        }
    }

    /// Linear address of a read of `size` bytes at `seg:off`, after the limit and rights check.
    #[inline(always)]
    pub fn lin_for_read(&self, seg: usize, off: u32, size: u32) -> Fault<u32> {
        let s = self.seg_cache(seg);
        if s.can_read(off, size) {
            Ok(s.base.wrapping_add(off))
        } else {
            Err(Cpu::seg_fault(seg))
        }
    }

    /// Linear address of a write of `size` bytes at `seg:off`, after the limit and rights check.
    #[inline(always)]
    pub fn lin_for_write(&self, seg: usize, off: u32, size: u32) -> Fault<u32> {
        let s = self.seg_cache(seg);
        if s.can_write(off, size) {
            Ok(s.base.wrapping_add(off))
        } else {
            Err(Cpu::seg_fault(seg))
        }
    }

    /// Read `N` (1, 2, 4) bytes at `seg:off`.
    #[inline(always)]
    pub fn read<const N: usize>(&mut self, seg: usize, off: u32) -> Fault<u32> {
        let lin = self.lin_for_read(seg, off, N as u32)?;
        self.read_lin::<N>(lin)
    }

    /// Write `N` (1, 2, 4) bytes at `seg:off`.
    #[inline(always)]
    pub fn write<const N: usize>(&mut self, seg: usize, off: u32, v: u32) -> Fault {
        let lin = self.lin_for_write(seg, off, N as u32)?;
        self.write_lin::<N>(lin, v)
    }

    /// Read at a linear address with the current privilege.
    #[inline(always)]
    pub fn read_lin<const N: usize>(&mut self, lin: u32) -> Fault<u32> {
        if let Some(p) = self.mem.tlb.lookup_within::<N>(lin, self.tlb_read_perm) {
            return Ok(ram_read::<N>(&self.mem.ram, p as usize));
        }
        Exception::unpack_value(self.read_lin_missed(lin, N as u32, self.cpl == 3))
    }

    /// A read that missed the fast path ([`Cpu::read_lin_slow`]), its result packed into one
    /// word (see [`Exception::pack_value`]): the fast path inlined into the run loop then keeps
    /// its value in a register on wasm32 instead of going through the stack frame.
    #[inline(never)]
    fn read_lin_missed(&mut self, lin: u32, size: u32, user: bool) -> u64 {
        Exception::pack_value(self.read_lin_slow(lin, size, user))
    }

    /// Write at a linear address with the current privilege.
    #[inline(always)]
    pub fn write_lin<const N: usize>(&mut self, lin: u32, v: u32) -> Fault {
        if let Some(p) = self.mem.tlb.lookup_within::<N>(lin, self.tlb_write_perm) {
            ram_write::<N>(&mut self.mem.ram, p as usize, v);
            return Ok(());
        }
        self.write_lin_slow(lin, N as u32, v, self.cpl == 3)
    }

    /// Read-modify-write `N` bytes at `seg:off` (ALU operations on memory): the write is
    /// checked first (limit, rights, paging), so a fault leaves memory and the registers
    /// untouched, then `f` turns the old value into the new one. In the common case one TLB
    /// probe serves both the read and the write: a page the TLB lets this CPL write is RAM it may
    /// also read.
    #[inline(always)]
    pub fn rmw<const N: usize>(
        &mut self,
        seg: usize,
        off: u32,
        f: impl FnOnce(&mut Cpu, u32) -> u32,
    ) -> Fault {
        let lin = self.lin_for_write(seg, off, N as u32)?;
        if let Some(p) = self.mem.tlb.lookup_within::<N>(lin, self.tlb_write_perm) {
            let v = ram_read::<N>(&self.mem.ram, p as usize);
            let r = f(self, v);
            ram_write::<N>(&mut self.mem.ram, p as usize, r);
            return Ok(());
        }
        let lin = self.probe_write(seg, off, N as u32)?;
        let v = self.read_lin::<N>(lin)?;
        let r = f(self, v);
        self.write_lin::<N>(lin, r)
    }

    /// Read a system structure (descriptor tables, TSS, IDT): a supervisor access at any CPL.
    pub fn read_lin_system<const N: usize>(&mut self, lin: u32) -> Fault<u32> {
        if let Some(p) = self.mem.tlb.lookup_within::<N>(lin, TLB_READ_SUPER) {
            return Ok(ram_read::<N>(&self.mem.ram, p as usize));
        }
        self.read_lin_slow(lin, N as u32, false)
    }

    /// Write a system structure (accessed bits, busy bits, TSS fields): a supervisor access.
    pub fn write_lin_system<const N: usize>(&mut self, lin: u32, v: u32) -> Fault {
        if let Some(p) = self.mem.tlb.lookup_within::<N>(lin, TLB_WRITE_SUPER) {
            ram_write::<N>(&mut self.mem.ram, p as usize, v);
            return Ok(());
        }
        self.write_lin_slow(lin, N as u32, v, false)
    }

    /// Translate a linear address, raising #PF (and setting CR2) on failure.
    pub fn translate(&mut self, lin: u32, write: bool, user: bool) -> Fault<u32> {
        match self.mem.translate(lin, Access { write, user }) {
            Ok(p) => Ok(p),
            Err(pf) => {
                self.cr2 = pf.address;
                Err(Exception::with_code(exception::PF, pf.error_code))
            }
        }
    }

    /// Check alignment for #AC: CR0.AM, EFLAGS.AC and CPL 3 all set, and `lin` not a multiple
    /// of `align` (a power of two: the operand's alignment, SDM Vol. 3A Table 6-7).
    #[inline]
    fn check_alignment(&self, lin: u32, align: u32, user: bool) -> Fault {
        if user
            && align > 1
            && lin & (align - 1) != 0
            && self.cr0 & super::CR0_AM != 0
            && self.flags.sys(super::flags::AC)
        {
            return Err(Exception::with_code(exception::AC, 0));
        }
        Ok(())
    }

    /// Read that missed the fast path: translate each page touched, then read byte by byte if
    /// the access straddles a page boundary.
    pub fn read_lin_slow(&mut self, lin: u32, size: u32, user: bool) -> Fault<u32> {
        self.check_alignment(lin, size, user)?;
        self.read_lin_paged(lin, size, user)
    }

    /// [`Cpu::read_lin_slow`] without the alignment check.
    fn read_lin_paged(&mut self, lin: u32, size: u32, user: bool) -> Fault<u32> {
        let first = self.translate(lin, false, user)?;
        self.clock_mmio(first);
        if (lin & 0xFFF) + size <= 0x1000 {
            self.check_data_breakpoint(lin, size, false);
            return Ok(self.mem.read_phys(&mut *self.bus, first, size as u8));
        }
        let second_lin = (lin | 0xFFF).wrapping_add(1);
        let second = self.translate(second_lin, false, user)?;
        self.check_data_breakpoint(lin, size, false);
        let mut v = 0u32;
        for i in 0..size {
            let l = lin.wrapping_add(i);
            let p = if l & 0xFFFF_F000 == lin & 0xFFFF_F000 {
                first + i
            } else {
                second + (l & 0xFFF)
            };
            v |= self.mem.read_phys(&mut *self.bus, p, 1) << (8 * i);
        }
        Ok(v)
    }

    /// Write that missed the fast path. Both pages of a straddling write are translated (and may
    /// fault) before any byte is written.
    pub fn write_lin_slow(&mut self, lin: u32, size: u32, v: u32, user: bool) -> Fault {
        self.check_alignment(lin, size, user)?;
        self.write_lin_paged(lin, size, v, user)
    }

    /// [`Cpu::write_lin_slow`] without the alignment check.
    fn write_lin_paged(&mut self, lin: u32, size: u32, v: u32, user: bool) -> Fault {
        let first = self.translate(lin, true, user)?;
        let mmio = self.clock_mmio(first);
        let hit_code = if (lin & 0xFFF) + size <= 0x1000 {
            self.mem.write_phys(&mut *self.bus, first, size as u8, v)
        } else {
            let second_lin = (lin | 0xFFF).wrapping_add(1);
            let second = self.translate(second_lin, true, user)?;
            let mut hit = false;
            for i in 0..size {
                let l = lin.wrapping_add(i);
                let p = if l & 0xFFFF_F000 == lin & 0xFFFF_F000 {
                    first + i
                } else {
                    second + (l & 0xFFF)
                };
                hit |= self.mem.write_phys(&mut *self.bus, p, 1, v >> (8 * i));
            }
            hit
        };
        if hit_code {
            // The write changed code we decoded: the running block may now be stale.
            self.stop_block = true;
        }
        if mmio {
            self.refresh_intr();
            self.stop_block = true;
        }
        self.check_data_breakpoint(lin, size, true);
        Ok(())
    }

    /// `count` writes of `value` (`size` bytes each) from linear `lin` upward, all in one page,
    /// if that page is device memory: what [`Cpu::write_lin_slow`] does for each of them (the
    /// alignment check, the translation, the clock, the device, the interrupt line), done once
    /// for the run, as nothing in between could change the outcome: each element has the
    /// first one's alignment, the translation is of one page, a REP batch retires as one
    /// instruction, and a device store does not change the memory map or the page tables. Not
    /// with a data breakpoint armed (each element is checked against it). Returns false,
    /// having done nothing, where the run does not qualify or the first element would fault:
    /// the caller then writes one element the ordinary way, which raises the fault.
    pub(crate) fn fill_device_page(&mut self, lin: u32, size: u32, value: u32, count: u32) -> bool {
        debug_assert!((lin & 0xFFF) + count * size <= 0x1000);
        let user = self.cpl == 3;
        if self.dr[7] & 0xFF != 0 || self.check_alignment(lin, size, user).is_err() {
            return false;
        }
        let Ok(phys) = self.mem.translate(lin, Access { write: true, user }) else {
            return false;
        };
        if self.mem.kind(phys) != PageKind::Mmio {
            return false;
        }
        self.bus.set_instructions(self.instructions);
        self.mem
            .fill_mmio(&mut *self.bus, phys, size as u8, value, count);
        self.refresh_intr();
        self.stop_block = true;
        true
    }

    /// If physical `addr` is MMIO, a device register is about to be accessed: give the bus the
    /// exact virtual time of this instruction, as port I/O does. Returns whether it is MMIO.
    #[inline]
    fn clock_mmio(&mut self, addr: u32) -> bool {
        let mmio = self.mem.kind(addr) == PageKind::Mmio;
        if mmio {
            self.bus.set_instructions(self.instructions);
        }
        mmio
    }

    /// Read `N` (1, 2, 4) bytes at `seg:off` that are a part of a larger operand whose
    /// alignment was checked as a whole ([`Cpu::check_operand`]): the limit and paging checks,
    /// and no alignment check of the part.
    pub fn read_part<const N: usize>(&mut self, seg: usize, off: u32) -> Fault<u32> {
        let lin = self.lin_for_read(seg, off, N as u32)?;
        if let Some(p) = self.mem.tlb.lookup_within::<N>(lin, self.tlb_read_perm) {
            return Ok(ram_read::<N>(&self.mem.ram, p as usize));
        }
        self.read_lin_paged(lin, N as u32, self.cpl == 3)
    }

    /// Write `N` (1, 2, 4) bytes at `seg:off` as a part of a larger operand (see
    /// [`Cpu::read_part`]).
    pub fn write_part<const N: usize>(&mut self, seg: usize, off: u32, v: u32) -> Fault {
        let lin = self.lin_for_write(seg, off, N as u32)?;
        if let Some(p) = self.mem.tlb.lookup_within::<N>(lin, self.tlb_write_perm) {
            ram_write::<N>(&mut self.mem.ram, p as usize, v);
            return Ok(());
        }
        self.write_lin_paged(lin, N as u32, v, self.cpl == 3)
    }

    /// The linear address of an operand of `size` bytes at `seg:off` that is read (or
    /// written) in parts (x87 formats, save areas): the limit and rights check covers all of
    /// it, and the alignment check is the operand's (`align`, a power of two: SDM Vol. 3A
    /// Table 6-7), both before any part is accessed. The parts are checked again as they are
    /// accessed, which can then only fault in paging.
    pub fn check_operand(
        &self,
        seg: usize,
        off: u32,
        size: u32,
        align: u32,
        write: bool,
    ) -> Fault<u32> {
        let lin = if write {
            self.lin_for_write(seg, off, size)?
        } else {
            self.lin_for_read(seg, off, size)?
        };
        self.check_alignment(lin, align, self.cpl == 3)?;
        Ok(lin)
    }

    /// Probe that a write of `size` bytes at `seg:off` would succeed (rights, limit, paging)
    /// without writing; returns the linear address. Used by read-modify-write instructions and
    /// by instructions that must not leave partial state behind. An operand of a size that is
    /// a power of two must be aligned to it; others are checked by the caller
    /// ([`Cpu::check_operand`]).
    pub fn probe_write(&mut self, seg: usize, off: u32, size: u32) -> Fault<u32> {
        let lin = self.lin_for_write(seg, off, size)?;
        if (lin & 0xFFF) + size <= 0x1000 && self.mem.tlb.lookup(lin, self.tlb_write_perm).is_some()
        {
            return Ok(lin);
        }
        let user = self.cpl == 3;
        let align = if size.is_power_of_two() { size } else { 1 };
        self.check_alignment(lin, align, user)?;
        self.translate(lin, true, user)?;
        if (lin & 0xFFF) + size > 0x1000 {
            self.translate((lin | 0xFFF).wrapping_add(1), true, user)?;
        }
        Ok(lin)
    }

    // ---- Stack ----

    /// Push `N` bytes (2 or 4) on SS:(E)SP.
    #[inline(always)]
    pub fn push<const N: usize>(&mut self, v: u32) -> Fault {
        let mask = self.stack_mask();
        let sp = self.regs[ESP].wrapping_sub(N as u32) & mask;
        self.write::<N>(Segment::SS as usize, sp, v)?;
        self.regs[ESP] = (self.regs[ESP] & !mask) | sp;
        Ok(())
    }

    /// Pop `N` bytes (2 or 4) from SS:(E)SP.
    #[inline(always)]
    pub fn pop<const N: usize>(&mut self) -> Fault<u32> {
        let mask = self.stack_mask();
        let sp = self.regs[ESP] & mask;
        let v = self.read::<N>(Segment::SS as usize, sp)?;
        self.regs[ESP] = (self.regs[ESP] & !mask) | (sp.wrapping_add(N as u32) & mask);
        Ok(v)
    }

    /// Read `N` bytes at stack offset `(E)SP + delta` without popping.
    #[inline]
    pub fn stack_peek<const N: usize>(&mut self, delta: u32) -> Fault<u32> {
        let mask = self.stack_mask();
        let sp = self.regs[ESP].wrapping_add(delta) & mask;
        self.read::<N>(Segment::SS as usize, sp)
    }

    /// Push a word or dword chosen by the operand size.
    #[inline(always)]
    pub fn push_v(&mut self, op32: bool, v: u32) -> Fault {
        if op32 {
            self.push::<4>(v)
        } else {
            self.push::<2>(v)
        }
    }

    /// Pop a word or dword chosen by the operand size.
    #[inline(always)]
    pub fn pop_v(&mut self, op32: bool) -> Fault<u32> {
        if op32 {
            self.pop::<4>()
        } else {
            self.pop::<2>()
        }
    }

    // ---- Port I/O ----

    /// IN, after the caller's privilege check.
    pub fn port_in(&mut self, port: u16, size: u8) -> u32 {
        self.bus.set_instructions(self.instructions);
        let v = self.bus.io_read(port, size);
        // A device access may raise or drop the interrupt line: look again at the next block.
        self.refresh_intr();
        self.stop_block = true;
        self.end_run |= self.bus.take_deadline_moved();
        v
    }

    /// OUT, after the caller's privilege check.
    pub fn port_out(&mut self, port: u16, size: u8, v: u32) {
        self.bus.set_instructions(self.instructions);
        self.bus.io_write(port, size, v);
        self.bus.run_port_dma(&mut self.mem);
        for c in self.bus.take_mmio_changes() {
            c.apply(&mut self.mem);
        }
        if let Some(a20) = self.bus.take_a20() {
            self.set_a20(a20);
        }
        self.refresh_intr();
        self.stop_block = true;
        self.end_run |= self.bus.take_deadline_moved();
    }
}
