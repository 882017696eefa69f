//! Guest physical memory: RAM, ROM and MMIO pages, the A20 gate, and the bookkeeping that lets
//! the CPU cache decoded code (which pages hold code, and a generation counter per page that
//! moves when such a page is written).

pub mod tlb;

use crate::bus::Bus;
use serde::{Deserialize, Serialize};
pub use tlb::{Access, PageFault, Tlb};

/// A fixed-size table filled with `fill`, built on the heap (a 4096-entry array would not fit
/// the stack of every host). Fixed-size, so an index masked to its size needs no bounds check.
pub(crate) fn boxed_table<T: Clone, const N: usize>(fill: T) -> Box<[T; N]> {
    match vec![fill; N].into_boxed_slice().try_into() {
        Ok(table) => table,
        Err(_) => unreachable!("the vector has N entries"),
    }
}

/// Page size of the MMU and of the physical memory map.
pub const PAGE_SIZE: u32 = 4096;
/// Number of 4 KiB pages in the 4 GiB physical address space.
const PHYS_PAGES: usize = 1 << 20;

/// What backs one physical page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum PageKind {
    /// Ordinary RAM.
    Ram = 0,
    /// Read-only memory stored in the RAM array; guest writes are ignored.
    Rom = 1,
    /// Memory-mapped device registers, served by the bus.
    Mmio = 2,
    /// Nothing decodes this address: reads float high, writes vanish.
    Unmapped = 3,
    /// A page of the BIOS area that reads ROM (in the RAM array) while writes go to the shadow
    /// RAM behind it (the chipset's write-only shadowing, see [`Memory::set_shadow`]).
    RomWritesShadow = 4,
}

/// The BIOS area, 0xC0000-0xFFFFF: the chipset (i440FX PAM registers) decides for each part of
/// it whether reads and writes reach ROM (or the PCI bus) or the RAM beneath, the "shadow RAM"
/// a BIOS copies itself into to run faster and to have writable data.
pub const BIOS_AREA: u32 = 0xC0000;
pub const BIOS_AREA_LEN: u32 = 0x40000;
const BIOS_AREA_PAGES: usize = (BIOS_AREA_LEN / PAGE_SIZE) as usize;
/// Shadow attribute bits of a BIOS-area page, as in a PAM field: reads come from RAM (else
/// from ROM), writes go to RAM (else they are dropped).
pub const SHADOW_READ: u8 = 1;
pub const SHADOW_WRITE: u8 = 2;

/// The BIOS area's shadowing in a state file (see [`Memory::shadow_state`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowState {
    attrs: Vec<u8>,
    hidden: Vec<u8>,
}

/// What backs a BIOS-area page with shadow attributes `attr`.
fn shadow_kind(attr: u8) -> PageKind {
    match (attr & SHADOW_READ != 0, attr & SHADOW_WRITE != 0) {
        (true, true) => PageKind::Ram,
        (_, false) => PageKind::Rom,
        (false, true) => PageKind::RomWritesShadow,
    }
}

/// Physical memory and the MMU state that depends only on memory (paging control bits, TLB).
#[derive(Clone, Serialize, Deserialize)]
pub struct Memory {
    /// Guest RAM (also backs ROM pages).
    pub ram: Vec<u8>,
    /// What backs each 4 KiB physical page.
    kinds: Vec<PageKind>,
    /// Pages from which code has been decoded since they were last written.
    code_page: Vec<bool>,
    /// Bumped whenever a code page is written; decoded blocks remember the value they saw.
    page_gen: Vec<u32>,
    /// AND-mask applied to every physical address: bit 20 clear while the A20 gate is closed.
    pub a20_mask: u32,
    /// The software TLB and the paging controls it depends on.
    pub tlb: Tlb,
    /// The side of the BIOS area not in `ram` ([`BIOS_AREA`]): for each page, its ROM where it
    /// reads RAM, its shadow RAM where it reads ROM. Switching a page's reads swaps the two.
    bios_hidden: Vec<u8>,
    /// Each BIOS-area page's shadow attributes ([`SHADOW_READ`], [`SHADOW_WRITE`]).
    bios_shadow: Vec<u8>,
    /// Writes that hit a page holding decoded code, making its blocks stale (self-modifying
    /// code, or a page reused for data). An observation, not state.
    #[serde(skip)]
    pub code_invalidations: u64,
}

impl Memory {
    /// `ram_bytes` of RAM at physical address 0 (rounded up to a page); everything above is
    /// unmapped until the machine maps ROM or MMIO there.
    pub fn new(ram_bytes: usize) -> Memory {
        let ram_bytes = ram_bytes.div_ceil(PAGE_SIZE as usize) * PAGE_SIZE as usize;
        let ram_pages = ram_bytes / PAGE_SIZE as usize;
        let mut kinds = vec![PageKind::Unmapped; PHYS_PAGES];
        kinds[..ram_pages.min(PHYS_PAGES)].fill(PageKind::Ram);
        Memory {
            ram: vec![0; ram_bytes],
            kinds,
            code_page: vec![false; ram_pages],
            page_gen: vec![0; ram_pages],
            a20_mask: u32::MAX,
            tlb: Tlb::new(),
            // All RAM: what a machine without firmware has (its ROM side is an empty bus).
            bios_hidden: vec![0xFF; BIOS_AREA_LEN as usize],
            bios_shadow: vec![SHADOW_READ | SHADOW_WRITE; BIOS_AREA_PAGES],
            code_invalidations: 0,
        }
    }

    /// Give `[start, start+len)` of the BIOS area (page aligned) the shadow attributes `attr`
    /// ([`SHADOW_READ`] | [`SHADOW_WRITE`]): a page whose reads move between ROM and RAM
    /// swaps its contents with the side that was hidden, and what was decoded from it is stale.
    /// Pages outside the area, or beyond RAM, are left alone.
    pub fn set_shadow(&mut self, start: u32, len: u32, attr: u8) {
        let first = start.max(BIOS_AREA) / PAGE_SIZE;
        let last = start.saturating_add(len).min(BIOS_AREA + BIOS_AREA_LEN) / PAGE_SIZE;
        for page in first..last {
            let n = (page - BIOS_AREA / PAGE_SIZE) as usize;
            let at = page as usize * PAGE_SIZE as usize;
            let Some(visible) = self.ram.get_mut(at..at + PAGE_SIZE as usize) else {
                continue;
            };
            let old = self.bios_shadow[n];
            if (old ^ attr) & SHADOW_READ != 0 {
                let hidden = &mut self.bios_hidden[n * PAGE_SIZE as usize..][..PAGE_SIZE as usize];
                visible.swap_with_slice(hidden);
                self.invalidate_code_page(page as usize);
            }
            self.bios_shadow[n] = attr & (SHADOW_READ | SHADOW_WRITE);
            self.kinds[page as usize] = shadow_kind(attr);
        }
        self.tlb.flush_all();
    }

    /// The BIOS area's shadowing and its hidden side, for a state file.
    pub fn shadow_state(&self) -> ShadowState {
        ShadowState {
            attrs: self.bios_shadow.clone(),
            hidden: self.bios_hidden.clone(),
        }
    }

    /// Take the BIOS area's shadowing from a state file, with RAM (the visible side) restored
    /// separately. A state of the wrong shape is refused and changes nothing.
    pub fn set_shadow_state(&mut self, state: ShadowState) -> Result<(), String> {
        if state.attrs.len() != BIOS_AREA_PAGES
            || state.hidden.len() != BIOS_AREA_LEN as usize
            || state
                .attrs
                .iter()
                .any(|&a| a > (SHADOW_READ | SHADOW_WRITE))
        {
            return Err("the BIOS area's shadow RAM".into());
        }
        self.bios_hidden = state.hidden;
        self.bios_shadow = state.attrs;
        for n in 0..BIOS_AREA_PAGES {
            let page = (BIOS_AREA / PAGE_SIZE) as usize + n;
            if page < self.code_page.len() {
                self.kinds[page] = shadow_kind(self.bios_shadow[n]);
            }
        }
        self.tlb.flush_all();
        Ok(())
    }

    /// Put `bytes` into the ROM side of the BIOS area at `addr` (firmware images), whichever
    /// side that page shows now. Bytes outside the area are dropped.
    pub fn load_bios_rom(&mut self, addr: u32, bytes: &[u8]) {
        for (k, &b) in bytes.iter().enumerate() {
            let Some(a) = addr.checked_add(k as u32) else {
                break;
            };
            if !(BIOS_AREA..BIOS_AREA + BIOS_AREA_LEN).contains(&a) {
                continue;
            }
            let off = (a - BIOS_AREA) as usize;
            let reads_ram = self.bios_shadow[off / PAGE_SIZE as usize] & SHADOW_READ != 0;
            match (reads_ram, self.ram.get_mut(a as usize)) {
                (false, Some(r)) => *r = b,
                _ => self.bios_hidden[off] = b,
            }
        }
        let pages = BIOS_AREA / PAGE_SIZE..(BIOS_AREA + BIOS_AREA_LEN) / PAGE_SIZE;
        for page in pages {
            self.invalidate_code_page(page as usize);
        }
    }

    /// Mark `[start, start+len)` (page aligned) as backed by `kind`. ROM and RAM must lie in RAM.
    pub fn map(&mut self, start: u32, len: u32, kind: PageKind) {
        let first = (start / PAGE_SIZE) as usize;
        let last =
            ((start as u64 + len as u64).div_ceil(PAGE_SIZE as u64) as usize).min(PHYS_PAGES);
        for page in first..last {
            let in_ram = page < self.code_page.len();
            self.kinds[page] = match kind {
                PageKind::Ram | PageKind::Rom | PageKind::RomWritesShadow if !in_ram => {
                    PageKind::Unmapped
                }
                k => k,
            };
        }
        self.tlb.flush_all();
    }

    /// What backs physical address `addr`.
    #[inline]
    pub fn kind(&self, addr: u32) -> PageKind {
        self.kinds[(addr >> 12) as usize]
    }

    /// Open or close the A20 gate (an input from the keyboard controller or port 0x92).
    pub fn set_a20(&mut self, enabled: bool) {
        let mask = if enabled { u32::MAX } else { !(1 << 20) };
        if mask != self.a20_mask {
            self.a20_mask = mask;
            self.tlb.flush_all();
        }
    }

    /// Copy bytes into RAM or ROM (for loaders and tests); bytes past the end of RAM are dropped.
    pub fn load(&mut self, addr: u32, bytes: &[u8]) {
        let start = addr as usize;
        if start >= self.ram.len() {
            return;
        }
        let end = (start + bytes.len()).min(self.ram.len());
        self.ram[start..end].copy_from_slice(&bytes[..end - start]);
        for page in start / 4096..=(end.max(start + 1) - 1) / 4096 {
            self.invalidate_code_page(page);
        }
    }

    /// Treat every page as written: what was decoded from RAM (blocks, compiled code) is stale.
    /// For RAM replaced wholesale (a snapshot restored).
    pub fn forget_code(&mut self) {
        for page in 0..self.code_page.len() {
            self.invalidate_code_page(page);
        }
    }

    /// Whether page `page` holds decoded code.
    #[inline]
    pub fn is_code_page(&self, page: usize) -> bool {
        self.code_page.get(page).copied().unwrap_or(false)
    }

    /// Note that code is being decoded from physical page `page`: writes to it must now take the
    /// slow path so that the decoded copy can be dropped.
    pub fn mark_code_page(&mut self, page: usize) {
        if let Some(c) = self.code_page.get_mut(page) {
            if !*c {
                *c = true;
                self.tlb.revoke_writes_to(page as u32);
            }
        }
    }

    /// The generation counter of RAM page `page` (0 for pages outside RAM).
    #[inline]
    pub fn page_generation(&self, page: usize) -> u32 {
        self.page_gen.get(page).copied().unwrap_or(0)
    }

    /// A write hit a code page: every block decoded from it becomes stale.
    fn invalidate_code_page(&mut self, page: usize) -> bool {
        match self.code_page.get_mut(page) {
            Some(c) if *c => {
                *c = false;
                self.code_invalidations += 1;
                self.page_gen[page] = self.page_gen[page].wrapping_add(1);
                true
            }
            _ => false,
        }
    }

    /// Read `size` bytes (1, 2 or 4, not crossing a page) at physical `addr` through the memory map.
    pub fn read_phys(&mut self, bus: &mut dyn Bus, addr: u32, size: u8) -> u32 {
        let addr = addr & self.a20_mask;
        match self.kind(addr) {
            PageKind::Ram | PageKind::Rom | PageKind::RomWritesShadow => {
                let a = addr as usize;
                let mut v = 0u32;
                for i in 0..size as usize {
                    v |= (self.ram[a + i] as u32) << (8 * i);
                }
                v
            }
            PageKind::Mmio => bus.mmio_read(addr, size),
            PageKind::Unmapped => u32::MAX >> (32 - 8 * size as u32),
        }
    }

    /// Where physical `addr` is in RAM if reading it is a plain read of RAM (RAM or ROM, not a
    /// device): what instruction fetch may read directly for the rest of its page.
    #[inline]
    pub(crate) fn fetchable(&self, addr: u32) -> Option<u32> {
        let addr = addr & self.a20_mask;
        match self.kind(addr) {
            PageKind::Ram | PageKind::Rom | PageKind::RomWritesShadow => Some(addr),
            PageKind::Mmio | PageKind::Unmapped => None,
        }
    }

    /// Write through the memory map. Returns true if the write hit a page holding decoded code.
    pub fn write_phys(&mut self, bus: &mut dyn Bus, addr: u32, size: u8, value: u32) -> bool {
        let addr = addr & self.a20_mask;
        match self.kind(addr) {
            PageKind::Ram => {
                let a = addr as usize;
                for i in 0..size as usize {
                    self.ram[a + i] = (value >> (8 * i)) as u8;
                }
                self.invalidate_code_page(a >> 12)
            }
            PageKind::Mmio => {
                bus.mmio_write(addr, size, value);
                false
            }
            PageKind::RomWritesShadow => {
                let off = (addr - BIOS_AREA) as usize;
                for i in 0..size as usize {
                    self.bios_hidden[off + i] = (value >> (8 * i)) as u8;
                }
                false
            }
            PageKind::Rom | PageKind::Unmapped => false,
        }
    }

    /// `count` writes of `value` (`size` bytes each) from physical `addr` on, if the page there
    /// is MMIO: the bus gets them as one run ([`Bus::mmio_fill`]). The run must stay in the
    /// page (the memory map is per page). Returns false, having written nothing, for any other
    /// kind of page.
    pub fn fill_mmio(
        &mut self,
        bus: &mut dyn Bus,
        addr: u32,
        size: u8,
        value: u32,
        count: u32,
    ) -> bool {
        let addr = addr & self.a20_mask;
        debug_assert!((addr & 0xFFF) + count * u32::from(size) <= 0x1000);
        if self.kind(addr) != PageKind::Mmio {
            return false;
        }
        bus.mmio_fill(addr, size, value, count);
        true
    }

    /// Read a 32-bit value from physical memory for the MMU (page tables live in RAM).
    pub(crate) fn read_phys_u32_ram(&self, addr: u32) -> u32 {
        let a = (addr & self.a20_mask) as usize;
        match self.ram.get(a..a + 4) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => u32::MAX,
        }
    }

    /// Write a 32-bit value for the MMU (accessed and dirty bits).
    pub(crate) fn write_phys_u32_ram(&mut self, addr: u32, value: u32) {
        let a = (addr & self.a20_mask) as usize;
        if let Some(b) = self.ram.get_mut(a..a + 4) {
            b.copy_from_slice(&value.to_le_bytes());
            self.invalidate_code_page(a >> 12);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::EmptyBus;

    #[test]
    fn a20_gate_wraps_at_one_megabyte() {
        let mut m = Memory::new(2 << 20);
        let mut bus = EmptyBus;
        m.write_phys(&mut bus, 0x100000, 1, 0xAB);
        assert_eq!(m.read_phys(&mut bus, 0x100000, 1), 0xAB);
        m.set_a20(false);
        assert_eq!(m.read_phys(&mut bus, 0x100000, 1), m.ram[0] as u32);
    }

    #[test]
    fn rom_ignores_writes_and_unmapped_floats_high() {
        let mut m = Memory::new(1 << 20);
        let mut bus = EmptyBus;
        m.load(0xF0000, &[1, 2, 3, 4]);
        m.map(0xF0000, 0x10000, PageKind::Rom);
        m.write_phys(&mut bus, 0xF0000, 4, 0);
        assert_eq!(m.read_phys(&mut bus, 0xF0000, 4), 0x04030201);
        assert_eq!(m.read_phys(&mut bus, 0x200000, 2), 0xFFFF);
    }

    #[test]
    fn writing_a_code_page_bumps_its_generation() {
        let mut m = Memory::new(1 << 20);
        let mut bus = EmptyBus;
        m.mark_code_page(3);
        let g = m.page_generation(3);
        assert!(m.write_phys(&mut bus, 0x3004, 1, 0x90));
        assert_ne!(m.page_generation(3), g);
        assert!(!m.write_phys(&mut bus, 0x3004, 1, 0x90));
    }

    #[test]
    fn the_bios_area_switches_between_rom_and_shadow_ram() {
        let mut m = Memory::new(1 << 20);
        let mut bus = EmptyBus;
        // Power-on RAM everywhere; a ROM image goes to the hidden side.
        m.load_bios_rom(0xF0000, &[0xEA, 0x5B]);
        assert_eq!(m.read_phys(&mut bus, 0xF0000, 1), 0, "RAM still shows");
        m.set_shadow(0xF0000, 0x10000, 0);
        assert_eq!(m.read_phys(&mut bus, 0xF0000, 2), 0x5BEA, "the ROM shows");
        m.write_phys(&mut bus, 0xF0000, 1, 0x11);
        assert_eq!(
            m.read_phys(&mut bus, 0xF0000, 1),
            0xEA,
            "ROM ignores writes"
        );
        // Write-only shadowing: reads still ROM, writes reach the RAM behind.
        m.set_shadow(0xF0000, 0x10000, SHADOW_WRITE);
        m.write_phys(&mut bus, 0xF0001, 1, 0x77);
        assert_eq!(m.read_phys(&mut bus, 0xF0001, 1), 0x5B);
        m.set_shadow(0xF0000, 0x10000, SHADOW_READ | SHADOW_WRITE);
        assert_eq!(
            m.read_phys(&mut bus, 0xF0000, 2),
            0x7700,
            "the shadow RAM, as written"
        );
        m.write_phys(&mut bus, 0xF0000, 1, 0x22);
        assert_eq!(m.read_phys(&mut bus, 0xF0000, 1), 0x22);
        // Read-only shadow RAM (what a BIOS sets once it has copied itself).
        m.set_shadow(0xF0000, 0x10000, SHADOW_READ);
        m.write_phys(&mut bus, 0xF0000, 1, 0x33);
        assert_eq!(m.read_phys(&mut bus, 0xF0000, 1), 0x22);
        // Back to ROM: the ROM's bytes again; the other 16 KiB parts were never touched.
        m.set_shadow(0xF0000, 0x10000, 0);
        assert_eq!(m.read_phys(&mut bus, 0xF0000, 2), 0x5BEA);
        assert_eq!(m.kind(0xEC000), PageKind::Ram);
        // The state round-trips and is checked.
        let state = m.shadow_state();
        let mut n = Memory::new(1 << 20);
        n.set_shadow_state(state.clone()).unwrap();
        assert_eq!(n.kind(0xF0000), PageKind::Rom);
        assert_eq!(n.shadow_state(), state);
        let mut bad = state;
        bad.attrs[0] = 9;
        assert!(n.set_shadow_state(bad).is_err());
    }
}
