//! Two-level 32-bit paging (4 KiB and 4 MiB pages, global pages, CR0.WP) and the software TLB.
//!
//! The TLB is direct-mapped on the virtual page number. Each entry holds the virtual page in its
//! high 20 bits and, in the low bits, which kinds of access may use it without a page walk:
//! supervisor read, user read, supervisor write, user write. The CPU's fast path tests one of
//! those bits; anything else (a miss, a dirty bit still to set, a write to a page holding decoded
//! code, ROM, MMIO) takes the slow path, which walks the page tables and refills the entry.
//! With paging off the same TLB caches identity mappings, so the fast path is the same in every
//! mode.

use super::{Memory, PageKind};
use serde::{Deserialize, Serialize};

/// Supervisor may read through this entry.
pub const TLB_READ_SUPER: u32 = 1 << 0;
/// User (CPL 3) may read.
pub const TLB_READ_USER: u32 = 1 << 1;
/// Supervisor may write.
pub const TLB_WRITE_SUPER: u32 = 1 << 2;
/// User may write.
pub const TLB_WRITE_USER: u32 = 1 << 3;
/// The mapping came from a global page (survives CR3 reloads while CR4.PGE is set).
const TLB_GLOBAL: u32 = 1 << 4;
const TLB_PERMS: u32 = TLB_READ_SUPER | TLB_READ_USER | TLB_WRITE_SUPER | TLB_WRITE_USER;

const TLB_BITS: u32 = 12;
/// Entries in the direct-mapped TLB.
pub const TLB_ENTRIES: usize = 1 << TLB_BITS;
const TLB_MASK: u32 = (1 << TLB_BITS) - 1;

/// Page-table entry bits.
const PTE_P: u32 = 1 << 0;
const PTE_RW: u32 = 1 << 1;
const PTE_US: u32 = 1 << 2;
const PTE_A: u32 = 1 << 5;
const PTE_D: u32 = 1 << 6;
const PDE_PS: u32 = 1 << 7;
const PTE_G: u32 = 1 << 8;

/// Page-fault error code bits.
pub const PF_PRESENT: u32 = 1 << 0;
pub const PF_WRITE: u32 = 1 << 1;
pub const PF_USER: u32 = 1 << 2;

/// One cached translation. `repr(C)`: code generated at run time (crate::jit) reads the
/// fields at fixed offsets.
#[derive(Clone, Copy, Default, Debug, Serialize, Deserialize)]
#[repr(C)]
pub struct TlbEntry {
    /// Virtual page (bits 12..31) and permission bits (bits 0..4).
    pub tag: u32,
    /// The physical page's base address minus the virtual page's (wrapping): a linear address
    /// in the page plus `delta` is its physical address, in one addition.
    pub delta: u32,
}

impl TlbEntry {
    /// The physical page's base address.
    fn phys_page(&self) -> u32 {
        (self.tag & 0xFFFF_F000).wrapping_add(self.delta)
    }
}

/// The kind of memory access being translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub write: bool,
    /// Made at CPL 3 (system-structure accesses are supervisor accesses even at CPL 3).
    pub user: bool,
}

/// A page fault: the faulting linear address (for CR2) and the error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFault {
    pub address: u32,
    pub error_code: u32,
}

/// The software TLB and the paging controls (copies of CR0.PG/WP, CR3, CR4.PSE/PGE).
#[derive(Clone, Serialize, Deserialize)]
pub struct Tlb {
    /// A cache, not state: a restored machine starts with an empty TLB. Fixed-size, so the
    /// masked index needs no bounds check on the fast path.
    #[serde(skip, default = "empty_entries")]
    pub entries: Box<[TlbEntry; TLB_ENTRIES]>,
    pub paging: bool,
    pub write_protect: bool,
    pub cr3: u32,
    pub pse: bool,
    pub pge: bool,
    /// What the TLB did (observations, not state; see `crate::cpu::counters`).
    #[serde(skip)]
    pub counters: TlbCounters,
}

/// TLB events, counted where the work is slow already (a walk, a flush).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TlbCounters {
    /// With paging on, translations of a page its TLB entry did not hold: page walks a real
    /// TLB would do too (a walk that only upgrades an entry's permissions, as for setting a
    /// dirty bit or for the emulator's own MMIO and code-page checks, is not counted).
    pub misses: u64,
    /// Every entry dropped (CR0.PG/WP/PE or CR4.PSE/PGE changes, the A20 gate, the memory map).
    pub full_flushes: u64,
    /// Non-global entries dropped (CR3 loads, task switches).
    pub non_global_flushes: u64,
}

/// A TLB with no translations.
fn empty_entries() -> Box<[TlbEntry; TLB_ENTRIES]> {
    super::boxed_table(TlbEntry::default())
}

impl Tlb {
    pub fn new() -> Tlb {
        Tlb {
            entries: empty_entries(),
            paging: false,
            write_protect: false,
            cr3: 0,
            pse: false,
            pge: false,
            counters: TlbCounters::default(),
        }
    }

    /// The entry that would hold `lin`.
    #[inline(always)]
    pub fn entry(&self, lin: u32) -> &TlbEntry {
        &self.entries[((lin >> 12) & TLB_MASK) as usize]
    }

    /// Fast-path lookup: the physical address of `lin` if the entry allows access kind `perm`
    /// (one of the TLB_* bits).
    #[inline(always)]
    pub fn lookup(&self, lin: u32, perm: u32) -> Option<u32> {
        self.lookup_within::<1>(lin, perm)
    }

    /// The fast-path lookup of an access of `N` bytes at `lin`: the physical address of `lin`
    /// if all `N` bytes are in the page of an entry that allows `perm`. One comparison does both:
    /// the tag is compared with the page of the access's last byte, in the entry of its first
    /// byte's page. An access that crosses into the next page finds no match there, since
    /// that entry can only hold a page whose number has the same low bits as the first page's,
    /// which the next page's has not (the TLB has more than one entry).
    #[inline(always)]
    pub fn lookup_within<const N: usize>(&self, lin: u32, perm: u32) -> Option<u32> {
        const { assert!(TLB_ENTRIES > 1 && N <= 4) };
        let e = self.entry(lin);
        let last = lin.wrapping_add(N as u32 - 1);
        if (e.tag ^ last) & 0xFFFF_F000 == 0 && e.tag & perm != 0 {
            Some(lin.wrapping_add(e.delta))
        } else {
            None
        }
    }

    /// Drop every translation (CR0/CR4 paging changes, A20 changes, memory map changes).
    pub fn flush_all(&mut self) {
        self.counters.full_flushes += 1;
        self.entries.fill(TlbEntry::default());
    }

    /// A CR3 load: drop every non-global translation.
    pub fn flush_non_global(&mut self) {
        self.counters.non_global_flushes += 1;
        let keep_global = self.pge;
        for e in self.entries.iter_mut() {
            if !(keep_global && e.tag & TLB_GLOBAL != 0) {
                *e = TlbEntry::default();
            }
        }
    }

    /// INVLPG: drop the translation of one page.
    pub fn flush_page(&mut self, lin: u32) {
        let e = &mut self.entries[((lin >> 12) & TLB_MASK) as usize];
        if (e.tag ^ lin) & 0xFFFF_F000 == 0 {
            *e = TlbEntry::default();
        }
    }

    /// Physical page `page` now holds code: writes to it must take the slow path.
    pub fn revoke_writes_to(&mut self, page: u32) {
        for e in self.entries.iter_mut() {
            if e.phys_page() >> 12 == page {
                e.tag &= !(TLB_WRITE_SUPER | TLB_WRITE_USER);
            }
        }
    }
}

impl Default for Tlb {
    fn default() -> Self {
        Tlb::new()
    }
}

impl Memory {
    /// Translate a linear address for `access`, walking the page tables (setting accessed and
    /// dirty bits) and refilling the TLB. Returns the physical address (A20 applied).
    pub fn translate(&mut self, lin: u32, access: Access) -> Result<u32, PageFault> {
        let (phys_page, perms, global) = if self.tlb.paging {
            if (self.tlb.entry(lin).tag ^ lin) & 0xFFFF_F000 != 0 {
                self.tlb.counters.misses += 1;
            }
            self.walk(lin, access)?
        } else {
            (lin & 0xFFFF_F000, TLB_PERMS, false)
        };
        let phys_page = phys_page & self.a20_mask;
        self.fill(lin, phys_page, perms, global);
        Ok(phys_page | (lin & 0xFFF))
    }

    fn fill(&mut self, lin: u32, phys_page: u32, mut perms: u32, global: bool) {
        match self.kind(phys_page) {
            PageKind::Ram => {
                if self.is_code_page((phys_page >> 12) as usize) {
                    perms &= !(TLB_WRITE_SUPER | TLB_WRITE_USER);
                }
            }
            PageKind::Rom | PageKind::RomWritesShadow => perms &= TLB_READ_SUPER | TLB_READ_USER,
            // MMIO and holes are never accessed through the fast path.
            PageKind::Mmio | PageKind::Unmapped => perms = 0,
        }
        let tag = (lin & 0xFFFF_F000) | perms | if global { TLB_GLOBAL } else { 0 };
        self.tlb.entries[((lin >> 12) & TLB_MASK) as usize] = TlbEntry {
            tag,
            delta: phys_page.wrapping_sub(lin & 0xFFFF_F000),
        };
    }

    /// The two-level walk. Returns (physical page, TLB permission bits, global).
    fn walk(&mut self, lin: u32, access: Access) -> Result<(u32, u32, bool), PageFault> {
        let fault = |present: bool| PageFault {
            address: lin,
            error_code: ((present as u32) * PF_PRESENT)
                | ((access.write as u32) * PF_WRITE)
                | ((access.user as u32) * PF_USER),
        };
        let pde_addr = (self.tlb.cr3 & 0xFFFF_F000) | ((lin >> 20) & 0xFFC);
        let pde = self.read_phys_u32_ram(pde_addr);
        if pde & PTE_P == 0 {
            return Err(fault(false));
        }
        let big = pde & PDE_PS != 0 && self.tlb.pse;
        let (entry_addr, entry, combined) = if big {
            (pde_addr, pde, pde)
        } else {
            let pte_addr = (pde & 0xFFFF_F000) | ((lin >> 10) & 0xFFC);
            let pte = self.read_phys_u32_ram(pte_addr);
            if pte & PTE_P == 0 {
                return Err(fault(false));
            }
            (pte_addr, pte, pde & pte)
        };
        let user_ok = combined & PTE_US != 0;
        let user_write_ok = user_ok && combined & PTE_RW != 0;
        let super_write_ok = !self.tlb.write_protect || combined & PTE_RW != 0;
        let allowed = if access.user {
            user_ok && (!access.write || user_write_ok)
        } else {
            !access.write || super_write_ok
        };
        if !allowed {
            return Err(fault(true));
        }
        // Accessed bits on both levels, dirty on the final level for writes.
        if !big && pde & PTE_A == 0 {
            self.write_phys_u32_ram(pde_addr, pde | PTE_A);
        }
        let mut new_entry = entry | PTE_A;
        if access.write {
            new_entry |= PTE_D;
        }
        if new_entry != entry {
            self.write_phys_u32_ram(entry_addr, new_entry);
        }
        let mut perms = TLB_READ_SUPER | if user_ok { TLB_READ_USER } else { 0 };
        // Write permission is cached only once the dirty bit is set, so the first write to a
        // clean page comes back here to set it.
        if new_entry & PTE_D != 0 {
            if super_write_ok {
                perms |= TLB_WRITE_SUPER;
            }
            if user_write_ok {
                perms |= TLB_WRITE_USER;
            }
        }
        let phys_page = if big {
            (entry & 0xFFC0_0000) | (lin & 0x003F_F000)
        } else {
            entry & 0xFFFF_F000
        };
        Ok((phys_page, perms, entry & PTE_G != 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A supervisor read.
    const SUPER_READ: Access = Access {
        write: false,
        user: false,
    };

    fn paged_memory() -> Memory {
        let mut m = Memory::new(4 << 20);
        m.tlb.paging = true;
        m.tlb.cr3 = 0x1000;
        // PDE 0 -> page table at 0x2000, user, writable.
        m.write_phys_u32_ram(0x1000, 0x2000 | PTE_P | PTE_RW | PTE_US);
        // Virtual page 5 -> physical 0x9000, user read-only.
        m.write_phys_u32_ram(0x2000 + 5 * 4, 0x9000 | PTE_P | PTE_US);
        // Virtual page 6 -> physical 0xA000, supervisor writable.
        m.write_phys_u32_ram(0x2000 + 6 * 4, 0xA000 | PTE_P | PTE_RW);
        m
    }

    #[test]
    fn walk_sets_accessed_and_dirty() {
        let mut m = paged_memory();
        assert_eq!(m.translate(0x5123, SUPER_READ), Ok(0x9123));
        assert_ne!(m.read_phys_u32_ram(0x2014) & PTE_A, 0);
        assert_eq!(m.read_phys_u32_ram(0x2014) & PTE_D, 0);
        let w = Access {
            write: true,
            user: false,
        };
        assert_eq!(m.translate(0x6000, w), Ok(0xA000));
        assert_ne!(m.read_phys_u32_ram(0x2018) & PTE_D, 0);
    }

    #[test]
    fn user_and_write_protection_faults() {
        let mut m = paged_memory();
        let uw = Access {
            write: true,
            user: true,
        };
        assert_eq!(
            m.translate(0x5000, uw),
            Err(PageFault {
                address: 0x5000,
                error_code: PF_PRESENT | PF_WRITE | PF_USER
            })
        );
        let ur = Access {
            write: false,
            user: true,
        };
        assert_eq!(
            m.translate(0x6000, ur).unwrap_err().error_code,
            PF_PRESENT | PF_USER
        );
        assert_eq!(m.translate(0x7000, ur).unwrap_err().error_code, PF_USER);
        // CR0.WP clear: the supervisor may write a read-only page; set, it may not.
        let sw = Access {
            write: true,
            user: false,
        };
        assert!(m.translate(0x5000, sw).is_ok());
        m.tlb.write_protect = true;
        assert!(m.translate(0x5000, sw).is_err());
    }

    #[test]
    fn four_megabyte_pages_need_pse() {
        let mut m = paged_memory();
        m.write_phys_u32_ram(0x1004, 0x0040_0000 | PTE_P | PTE_RW | PDE_PS);
        m.tlb.pse = true;
        assert_eq!(m.translate(0x0045_6789, SUPER_READ), Ok(0x0045_6789));
    }

    #[test]
    fn fast_path_permissions() {
        let mut m = paged_memory();
        m.translate(0x5000, SUPER_READ).unwrap();
        assert_eq!(m.tlb.lookup(0x5010, TLB_READ_USER), Some(0x9010));
        assert_eq!(m.tlb.lookup(0x5010, TLB_WRITE_USER), None);
        m.tlb.flush_page(0x5000);
        assert_eq!(m.tlb.lookup(0x5010, TLB_READ_SUPER), None);
    }

    #[test]
    fn a_sized_lookup_misses_an_access_that_crosses_into_the_next_page() {
        let mut m = paged_memory();
        // Both pages are in the TLB (5 -> 0x9000, 6 -> 0xA000), but not contiguous physically.
        m.translate(0x5000, SUPER_READ).unwrap();
        m.translate(0x6000, SUPER_READ).unwrap();
        assert_eq!(
            m.tlb.lookup_within::<4>(0x5FFC, TLB_READ_SUPER),
            Some(0x9FFC)
        );
        assert_eq!(
            m.tlb.lookup_within::<1>(0x5FFF, TLB_READ_SUPER),
            Some(0x9FFF)
        );
        for lin in [0x5FFD, 0x5FFE, 0x5FFF] {
            assert_eq!(
                m.tlb.lookup_within::<4>(lin, TLB_READ_SUPER),
                None,
                "{lin:#x}"
            );
        }
        assert_eq!(m.tlb.lookup_within::<2>(0x5FFF, TLB_READ_SUPER), None);
        assert_eq!(
            m.tlb.lookup_within::<2>(0x6000, TLB_READ_SUPER),
            Some(0xA000)
        );
        // The top of the address space wraps to page 0, which is another entry's.
        assert_eq!(m.tlb.lookup_within::<4>(0xFFFF_FFFE, TLB_READ_SUPER), None);
        assert_eq!(m.tlb.lookup_within::<4>(0x5FFC, TLB_WRITE_SUPER), None);
    }
}
