//! The page-table walk of one linear address, step by step and read-only, for teaching.
//!
//! It follows the same path as the MMU's walk (`crate::mem::tlb`): 32-bit two-level paging,
//! 4 MiB pages where CR4.PSE and a directory entry's PS bit say so (this CPU has no PAE), the
//! A20 gate applied to every physical address. Unlike the MMU it sets no accessed or dirty bit,
//! raises no fault and neither reads nor fills the TLB: it shows what the page tables in RAM
//! say now (a guest that changed an entry without INVLPG may still run through an older
//! translation cached in the TLB). The paging controls are the architectural registers (CR0,
//! CR3, CR4) the MMU copies on every write to them.

use crate::cpu::{Cpu, CR0_PE, CR0_PG, CR0_WP, CR4_PSE};
use serde::Serialize;
use std::fmt;

/// Page-table entry bits (the same in directory and table entries unless said otherwise).
/// Present.
pub const PTE_P: u32 = 1 << 0;
/// Writable (read/write).
pub const PTE_RW: u32 = 1 << 1;
/// User (user/supervisor): CPL 3 may use the mapping.
pub const PTE_US: u32 = 1 << 2;
/// Page write-through.
pub const PTE_PWT: u32 = 1 << 3;
/// Page cache disable.
pub const PTE_PCD: u32 = 1 << 4;
/// Accessed: the CPU sets it on the first use of the entry.
pub const PTE_A: u32 = 1 << 5;
/// Dirty (final level only): the CPU sets it on the first write to the page.
pub const PTE_D: u32 = 1 << 6;
/// Page size (directory entries only): a 4 MiB page when CR4.PSE is set.
pub const PDE_PS: u32 = 1 << 7;
/// Global: the translation survives CR3 reloads while CR4.PGE is set.
pub const PTE_G: u32 = 1 << 8;

/// A 4 KiB page.
pub const PAGE_4K: u32 = 4 << 10;
/// A 4 MiB page (PSE).
pub const PAGE_4M: u32 = 4 << 20;

/// The bits of a page-directory or page-table entry, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryBits {
    pub present: bool,
    pub writable: bool,
    pub user: bool,
    pub write_through: bool,
    pub cache_disable: bool,
    pub accessed: bool,
    pub dirty: bool,
    /// PS: in a directory entry, a 4 MiB page (only used when CR4.PSE is set).
    pub page_size: bool,
    pub global: bool,
}

impl EntryBits {
    /// Decode the low bits of an entry.
    pub fn of(value: u32) -> EntryBits {
        let bit = |b: u32| value & b != 0;
        EntryBits {
            present: bit(PTE_P),
            writable: bit(PTE_RW),
            user: bit(PTE_US),
            write_through: bit(PTE_PWT),
            cache_disable: bit(PTE_PCD),
            accessed: bit(PTE_A),
            dirty: bit(PTE_D),
            page_size: bit(PDE_PS),
            global: bit(PTE_G),
        }
    }

    /// The names of the set bits, as a manual lists them: `P RW US A D PS G`.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.present, "P"),
            (self.writable, "RW"),
            (self.user, "US"),
            (self.write_through, "PWT"),
            (self.cache_disable, "PCD"),
            (self.accessed, "A"),
            (self.dirty, "D"),
            (self.page_size, "PS"),
            (self.global, "G"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// One entry the walk read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Which entry of its table: bits 31-22 of the linear address for the directory, bits
    /// 21-12 for a page table.
    pub index: u32,
    /// The physical address the CPU reads the entry from (A20 applied).
    pub address: u32,
    /// The entry as it is in memory (all ones if that address is not RAM, as the MMU reads it).
    pub value: u32,
    pub bits: EntryBits,
    /// What the entry points to: the page table (a directory entry), the 4 KiB page (a table
    /// entry) or the 4 MiB page (a directory entry with PS).
    pub frame: u32,
}

/// One step of the walk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(
    tag = "step",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum Step {
    /// Paging is off: the linear address is the physical address.
    Identity { address: u32 },
    /// CR3 holds the physical address of the page directory (its bits 31-12).
    Cr3 { cr3: u32, directory: u32 },
    /// The page-directory entry for the linear address.
    Pde(Entry),
    /// The page-table entry for the linear address.
    Pte(Entry),
    /// The page's base plus the linear address's offset within the page.
    Page {
        base: u32,
        size: u32,
        offset: u32,
        address: u32,
    },
    /// The A20 gate is closed: bit 20 of the physical address is forced to 0.
    A20 { before: u32, after: u32 },
}

/// Where a walk stopped without a physical address: the entry at that level is not present
/// (the CPU would raise a page fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotPresent {
    Pde,
    Pte,
}

/// What the mapping allows, from both levels' RW and US bits and CR0.WP. The supervisor may
/// always read a present mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    /// CPL 3 may read (US set at both levels).
    pub user_read: bool,
    /// CPL 3 may write (US and RW set at both levels).
    pub user_write: bool,
    /// CPL 0-2 may write (RW set at both levels, or CR0.WP clear).
    pub supervisor_write: bool,
}

/// The translation of one linear address, step by step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Walk {
    pub linear: u32,
    /// Paging is on (CR0.PG, in protected mode).
    pub paging: bool,
    /// CR4.PSE: directory entries with PS map 4 MiB pages.
    pub pse: bool,
    /// CR0.WP: the supervisor cannot write read-only pages.
    pub write_protect: bool,
    /// The A20 gate is open (closed: physical bit 20 is always 0).
    pub a20: bool,
    pub steps: Vec<Step>,
    /// The physical address, if the walk reached one.
    pub physical: Option<u32>,
    /// The size of the page that maps it (4 KiB or 4 MiB; none with paging off or no mapping).
    pub page_size: Option<u32>,
    /// Where the walk stopped, if an entry was not present.
    pub not_present: Option<NotPresent>,
    /// What the mapping allows (none with paging off, where everything is allowed, or no
    /// mapping).
    pub permissions: Option<Permissions>,
}

/// Walk the page tables for `linear` as the MMU would, without changing anything.
pub fn translate(cpu: &Cpu, linear: u32) -> Walk {
    let mem = &cpu.mem;
    let a20_mask = mem.a20_mask;
    let paging = cpu.cr0 & CR0_PG != 0 && cpu.cr0 & CR0_PE != 0;
    let mut walk = Walk {
        linear,
        paging,
        pse: cpu.cr4 & CR4_PSE != 0,
        write_protect: cpu.cr0 & CR0_WP != 0,
        a20: a20_mask == u32::MAX,
        steps: Vec::new(),
        physical: None,
        page_size: None,
        not_present: None,
        permissions: None,
    };
    // The A20 gate on a physical address, as a step when it changes the address.
    let gate = |steps: &mut Vec<Step>, before: u32| {
        let after = before & a20_mask;
        if after != before {
            steps.push(Step::A20 { before, after });
        }
        after
    };
    if !paging {
        walk.steps.push(Step::Identity { address: linear });
        walk.physical = Some(gate(&mut walk.steps, linear));
        return walk;
    }
    let directory = cpu.cr3 & 0xFFFF_F000;
    walk.steps.push(Step::Cr3 {
        cr3: cpu.cr3,
        directory,
    });
    let pde_index = linear >> 22;
    let pde_address = (directory | (pde_index << 2)) & a20_mask;
    let pde = mem.read_phys_u32_ram(pde_address);
    let big = walk.pse && pde & PDE_PS != 0;
    walk.steps.push(Step::Pde(Entry {
        index: pde_index,
        address: pde_address,
        value: pde,
        bits: EntryBits::of(pde),
        frame: if big {
            pde & 0xFFC0_0000
        } else {
            pde & 0xFFFF_F000
        },
    }));
    if pde & PTE_P == 0 {
        walk.not_present = Some(NotPresent::Pde);
        return walk;
    }
    let (base, size, combined) = if big {
        (pde & 0xFFC0_0000, PAGE_4M, pde)
    } else {
        let pte_index = (linear >> 12) & 0x3FF;
        let pte_address = ((pde & 0xFFFF_F000) | (pte_index << 2)) & a20_mask;
        let pte = mem.read_phys_u32_ram(pte_address);
        walk.steps.push(Step::Pte(Entry {
            index: pte_index,
            address: pte_address,
            value: pte,
            bits: EntryBits::of(pte),
            frame: pte & 0xFFFF_F000,
        }));
        if pte & PTE_P == 0 {
            walk.not_present = Some(NotPresent::Pte);
            return walk;
        }
        (pte & 0xFFFF_F000, PAGE_4K, pde & pte)
    };
    let offset = linear & (size - 1);
    let address = base | offset;
    walk.steps.push(Step::Page {
        base,
        size,
        offset,
        address,
    });
    walk.physical = Some(gate(&mut walk.steps, address));
    walk.page_size = Some(size);
    let user_read = combined & PTE_US != 0;
    walk.permissions = Some(Permissions {
        user_read,
        user_write: user_read && combined & PTE_RW != 0,
        supervisor_write: !walk.write_protect || combined & PTE_RW != 0,
    });
    walk
}

/// The walk as a few lines of text, one per step, e.g.
///
/// ```text
/// linear 0xc0101234: paging on (PSE on, WP off)
///   CR3 0x00123000: page directory at 0x00123000
///   PDE[768] at 0x00123c00 = 0x00456067 (P RW US A D): page table at 0x00456000
///   PTE[257] at 0x00456404 = 0x00101063 (P RW A D): page at 0x00101000
///   0x00101000 + offset 0x234 = physical 0x00101234 (4 KiB page)
///   supervisor read/write, user none
/// ```
impl fmt::Display for Walk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        if self.paging {
            write!(
                f,
                "linear {:#010x}: paging on (PSE {}, WP {})",
                self.linear,
                on(self.pse),
                on(self.write_protect)
            )?;
        } else {
            write!(f, "linear {:#010x}: paging off", self.linear)?;
        }
        if !self.a20 {
            write!(f, ", A20 gate closed")?;
        }
        for step in &self.steps {
            match step {
                Step::Identity { address } => write!(f, "\n  physical = linear = {address:#010x}")?,
                Step::Cr3 { cr3, directory } => write!(
                    f,
                    "\n  CR3 {cr3:#010x}: page directory at {directory:#010x}"
                )?,
                Step::Pde(e) | Step::Pte(e) => {
                    let (name, points_to) = match step {
                        Step::Pde(_) if e.bits.page_size && self.pse => ("PDE", "4 MiB page"),
                        Step::Pde(_) => ("PDE", "page table"),
                        _ => ("PTE", "page"),
                    };
                    write!(
                        f,
                        "\n  {name}[{}] at {:#010x} = {:#010x} ({})",
                        e.index,
                        e.address,
                        e.value,
                        e.bits.names().join(" ")
                    )?;
                    if e.bits.present {
                        write!(f, ": {points_to} at {:#010x}", e.frame)?;
                    } else {
                        write!(f, ": not present (a page fault)")?;
                    }
                }
                Step::Page {
                    base,
                    size,
                    offset,
                    address,
                } => write!(
                    f,
                    "\n  {base:#010x} + offset {offset:#x} = physical {address:#010x} ({} page)",
                    if *size == PAGE_4M { "4 MiB" } else { "4 KiB" }
                )?,
                Step::A20 { before, after } => write!(
                    f,
                    "\n  A20 gate closed: {before:#010x} becomes {after:#010x}"
                )?,
            }
        }
        if let Some(p) = self.permissions {
            let user = match (p.user_read, p.user_write) {
                (true, true) => "read/write",
                (true, false) => "read only",
                _ => "none",
            };
            let supervisor = if p.supervisor_write {
                "read/write"
            } else {
                "read only"
            };
            write!(f, "\n  supervisor {supervisor}, user {user}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{Cpu, CR0_PE, CR0_PG, CR0_WP, CR4_PSE};

    /// A CPU with 8 MiB of RAM, paging on with the page directory at 0x1000 (PSE as given), and
    /// a pattern in RAM to see that nothing else changes.
    fn paged(pse: bool) -> Cpu {
        let mut cpu = Cpu::with_ram(8 << 20);
        cpu.cr0 = CR0_PE | CR0_PG;
        cpu.cr3 = 0x1000;
        cpu.cr4 = if pse { CR4_PSE } else { 0 };
        cpu.sync_paging();
        cpu
    }

    fn put(cpu: &mut Cpu, addr: u32, value: u32) {
        cpu.mem.load(addr, &value.to_le_bytes());
    }

    #[test]
    fn a_4k_mapping_walks_both_levels_and_changes_nothing() {
        let mut cpu = paged(false);
        // Linear 0x00C0_5123: PDE 3 -> table at 0x2000 (user, writable); PTE 5 -> page 0x9000
        // (user, read-only, accessed).
        put(&mut cpu, 0x1000 + 3 * 4, 0x2000 | PTE_P | PTE_RW | PTE_US);
        put(&mut cpu, 0x2000 + 5 * 4, 0x9000 | PTE_P | PTE_US | PTE_A);
        let ram_before = cpu.mem.ram.clone();
        let w = translate(&cpu, 0x00C0_5123);
        assert_eq!(
            w.steps,
            vec![
                Step::Cr3 {
                    cr3: 0x1000,
                    directory: 0x1000
                },
                Step::Pde(Entry {
                    index: 3,
                    address: 0x100C,
                    value: 0x2007,
                    bits: EntryBits::of(0x2007),
                    frame: 0x2000,
                }),
                Step::Pte(Entry {
                    index: 5,
                    address: 0x2014,
                    value: 0x9025,
                    bits: EntryBits::of(0x9025),
                    frame: 0x9000,
                }),
                Step::Page {
                    base: 0x9000,
                    size: PAGE_4K,
                    offset: 0x123,
                    address: 0x9123
                },
            ]
        );
        assert_eq!(w.physical, Some(0x9123));
        assert_eq!(w.page_size, Some(PAGE_4K));
        assert_eq!(w.not_present, None);
        assert_eq!(
            w.permissions,
            Some(Permissions {
                user_read: true,
                user_write: false,
                supervisor_write: true
            }),
            "the PTE is read-only: the user may not write; the supervisor may, WP being off"
        );
        assert_eq!(
            EntryBits::of(0x2007).names(),
            vec!["P", "RW", "US"],
            "the directory entry's bits"
        );
        assert!(
            cpu.mem.ram == ram_before,
            "no accessed or dirty bit was set"
        );
        assert_eq!(
            cpu.mem
                .tlb
                .lookup(0x00C0_5123, crate::mem::tlb::TLB_READ_SUPER),
            None,
            "the TLB was not filled"
        );
        // With CR0.WP the supervisor may not write the read-only page either.
        cpu.cr0 |= CR0_WP;
        let w = translate(&cpu, 0x00C0_5123);
        assert!(!w.permissions.unwrap().supervisor_write);
        assert!(w.write_protect);
        let text = w.to_string();
        assert!(
            text.contains("PTE[5] at 0x00002014 = 0x00009025 (P US A): page at 0x00009000"),
            "{text}"
        );
        assert!(
            text.contains("supervisor read only, user read only"),
            "{text}"
        );
    }

    #[test]
    fn a_4m_mapping_stops_at_the_directory_when_pse_is_on() {
        let mut cpu = paged(true);
        // Linear 0x0045_6789: PDE 1 maps the 4 MiB page at 0x0040_0000, global, supervisor.
        let pde = 0x0040_0000 | PTE_P | PTE_RW | PDE_PS | PTE_G | PTE_A | PTE_D;
        put(&mut cpu, 0x1004, pde);
        let w = translate(&cpu, 0x0045_6789);
        assert_eq!(
            w.steps,
            vec![
                Step::Cr3 {
                    cr3: 0x1000,
                    directory: 0x1000
                },
                Step::Pde(Entry {
                    index: 1,
                    address: 0x1004,
                    value: 0x0040_01E3,
                    bits: EntryBits::of(0x0040_01E3),
                    frame: 0x0040_0000,
                }),
                Step::Page {
                    base: 0x0040_0000,
                    size: PAGE_4M,
                    offset: 0x5_6789,
                    address: 0x0045_6789
                },
            ]
        );
        assert_eq!(w.physical, Some(0x0045_6789));
        assert_eq!(w.page_size, Some(PAGE_4M));
        assert_eq!(
            w.permissions,
            Some(Permissions {
                user_read: false,
                user_write: false,
                supervisor_write: true
            })
        );
        let bits = EntryBits::of(pde);
        assert!(bits.page_size && bits.global && bits.dirty && !bits.user);
        // Without CR4.PSE the same entry points to a page table (at 0x0040_0000, zeros there:
        // the PTE is not present).
        cpu.cr4 = 0;
        let w = translate(&cpu, 0x0045_6789);
        assert_eq!(w.not_present, Some(NotPresent::Pte));
        match &w.steps[2] {
            Step::Pte(e) => assert_eq!(
                (e.index, e.address, e.value),
                (0x56, 0x0040_0158, 0),
                "PTE 0x56 of the table at 0x0040_0000"
            ),
            other => panic!("expected the PTE, got {other:?}"),
        }
    }

    #[test]
    fn a_not_present_directory_entry_stops_the_walk() {
        let cpu = paged(false);
        let w = translate(&cpu, 0x8000_1000);
        assert_eq!(
            w.steps,
            vec![
                Step::Cr3 {
                    cr3: 0x1000,
                    directory: 0x1000
                },
                Step::Pde(Entry {
                    index: 0x200,
                    address: 0x1800,
                    value: 0,
                    bits: EntryBits::of(0),
                    frame: 0,
                }),
            ]
        );
        assert_eq!(w.not_present, Some(NotPresent::Pde));
        assert_eq!((w.physical, w.page_size, w.permissions), (None, None, None));
        assert!(w.to_string().contains("not present (a page fault)"));
    }

    #[test]
    fn a_not_present_table_entry_stops_the_walk() {
        let mut cpu = paged(false);
        put(&mut cpu, 0x1000, 0x3000 | PTE_P | PTE_RW);
        // PTE 7 has its frame but not P.
        put(&mut cpu, 0x3000 + 7 * 4, 0x0012_3000 | PTE_RW);
        let w = translate(&cpu, 0x7ABC);
        assert_eq!(
            w.steps[2],
            Step::Pte(Entry {
                index: 7,
                address: 0x301C,
                value: 0x0012_3002,
                bits: EntryBits::of(0x0012_3002),
                frame: 0x0012_3000,
            })
        );
        assert_eq!(w.steps.len(), 3);
        assert_eq!(w.not_present, Some(NotPresent::Pte));
        assert_eq!(w.physical, None);
    }

    #[test]
    fn paging_off_is_the_identity_with_the_a20_gate() {
        let mut cpu = Cpu::with_ram(2 << 20);
        let w = translate(&cpu, 0x0012_3456);
        assert!(!w.paging && w.a20);
        assert_eq!(
            w.steps,
            vec![Step::Identity {
                address: 0x0012_3456
            }]
        );
        assert_eq!(w.physical, Some(0x0012_3456));
        assert_eq!((w.page_size, w.permissions), (None, None));
        cpu.set_a20(false);
        let w = translate(&cpu, 0x0012_3456);
        assert_eq!(
            w.steps,
            vec![
                Step::Identity {
                    address: 0x0012_3456
                },
                Step::A20 {
                    before: 0x0012_3456,
                    after: 0x0002_3456
                }
            ]
        );
        assert_eq!(w.physical, Some(0x0002_3456));
        // Protected mode without PG is still unpaged.
        cpu.cr0 = CR0_PE;
        assert!(!translate(&cpu, 0).paging);
    }

    #[test]
    fn the_walk_serialises_with_named_steps() {
        let cpu = paged(false);
        let json = serde_json::to_value(translate(&cpu, 0x1234)).unwrap();
        assert_eq!(json["steps"][0]["step"], "cr3");
        assert_eq!(json["steps"][1]["step"], "pde");
        assert_eq!(json["steps"][1]["index"], 0);
        assert_eq!(json["notPresent"], "pde");
    }
}
