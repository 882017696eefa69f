//! Paging through the CPU: 4 KiB and 4 MiB pages, global pages, CR0.WP, accessed and dirty
//! bits, INVLPG, page-fault error codes and CR2, and self-modifying code under paging. Memory
//! accesses go through `Cpu::read`/`write`/`write_lin` (the same paths instructions use);
//! guest code uses only instructions of the system group plus HLT.

use wasm86::cpu::exception::PF;
use wasm86::cpu::protected::Descriptor;
use wasm86::cpu::{Cpu, Exception, RunExit, Segment, EAX, ESP};
use wasm86::cpu::{CR0_ET, CR0_PE, CR0_PG, CR0_WP, CR4_PGE, CR4_PSE};

/// Page-table entry bits.
const P: u32 = 1 << 0;
const RW: u32 = 1 << 1;
const US: u32 = 1 << 2;
const A: u32 = 1 << 5;
const D: u32 = 1 << 6;
const PS: u32 = 1 << 7;
const G: u32 = 1 << 8;

/// Page-fault error code bits.
const ERR_P: u32 = 1;
const ERR_W: u32 = 2;
const ERR_U: u32 = 4;

const PAGE_DIR: u32 = 0x1000;
/// Identity map of the first 4 MiB.
const PT_LOW: u32 = 0x2000;
/// A second page table for tests to fill (mapped at linear 4 MiB .. 8 MiB).
const PT_TEST: u32 = 0x3000;
const CODE: u32 = 0x10000;
const DS: usize = Segment::DS as usize;

fn flat(code: bool) -> Descriptor {
    let access: u32 = if code { 0x9A } else { 0x92 };
    Descriptor {
        lo: 0x0000_FFFF,
        hi: 0x00CF_0000 | access << 8,
    }
}

fn pde(cpu: &Cpu, index: u32) -> u32 {
    word(cpu, PAGE_DIR + 4 * index)
}

fn word(cpu: &Cpu, addr: u32) -> u32 {
    let a = addr as usize;
    u32::from_le_bytes(cpu.mem.ram[a..a + 4].try_into().unwrap())
}

fn set_word(cpu: &mut Cpu, addr: u32, v: u32) {
    cpu.mem.load(addr, &v.to_le_bytes());
}

/// Protected mode, CPL 0, flat segments, paging on: linear 0..4 MiB identity-mapped (user,
/// writable); PDE 1 points at the empty page table PT_TEST.
fn paged_cpu() -> Cpu {
    let mut cpu = Cpu::with_ram(16 << 20);
    set_word(&mut cpu, PAGE_DIR, PT_LOW | P | RW | US);
    set_word(&mut cpu, PAGE_DIR + 4, PT_TEST | P | RW | US);
    for page in 0..1024 {
        set_word(&mut cpu, PT_LOW + 4 * page, (page << 12) | P | RW | US);
    }
    cpu.write_cr3(PAGE_DIR);
    cpu.write_cr0(CR0_PE | CR0_PG | CR0_ET).unwrap();
    cpu.segs[Segment::CS as usize] = flat(true).to_cache(0x08);
    for s in [
        Segment::DS,
        Segment::ES,
        Segment::SS,
        Segment::FS,
        Segment::GS,
    ] {
        cpu.segs[s as usize] = flat(false).to_cache(0x10);
    }
    cpu.set_cpl(0);
    cpu.regs[ESP] = 0x8000;
    cpu
}

/// Map linear page 0x400000 + n * 4 KiB (n < 1024) to `phys` with `flags`.
fn map(cpu: &mut Cpu, n: u32, phys: u32, flags: u32) {
    set_word(cpu, PT_TEST + 4 * n, phys | flags);
}

fn lin(n: u32) -> u32 {
    0x40_0000 + n * 4096
}

fn page_fault(code: u32) -> Exception {
    Exception::with_code(PF, code)
}

/// Run guest code placed at CODE until HLT.
fn run_code(cpu: &mut Cpu, code: &[u8]) {
    cpu.mem.load(CODE, code);
    cpu.eip = CODE;
    cpu.halted = false;
    assert_eq!(cpu.run(1000), RunExit::Halted, "guest reached HLT");
}

#[test]
fn four_kib_pages_translate_and_set_accessed_and_dirty() {
    let mut cpu = paged_cpu();
    map(&mut cpu, 0, 0x9000, P | RW);
    cpu.mem.load(0x9010, &[0x78, 0x56, 0x34, 0x12]);
    assert_eq!(cpu.read::<4>(DS, lin(0) + 0x10), Ok(0x1234_5678));
    let pte = word(&cpu, PT_TEST);
    assert_eq!(pte & (A | D), A, "a read sets accessed only");
    assert_ne!(pde(&cpu, 1) & A, 0, "the directory entry is accessed too");
    // The first write to a clean page comes back through the walk to set the dirty bit, even
    // though the page is already in the TLB.
    cpu.write::<2>(DS, lin(0) + 0x20, 0xBEEF).unwrap();
    assert_eq!(word(&cpu, PT_TEST) & (A | D), A | D);
    assert_eq!(&cpu.mem.ram[0x9020..0x9022], &[0xEF, 0xBE]);
    assert_eq!(cpu.translate(lin(0) + 0x123, false, false), Ok(0x9123));
}

#[test]
fn four_mib_pages_need_cr4_pse() {
    let mut cpu = paged_cpu();
    // PDE 3 (linear 12 MiB) is a 4 MiB page at physical 8 MiB.
    set_word(&mut cpu, PAGE_DIR + 12, 0x80_0000 | P | RW | PS);
    cpu.mem.load(0x80_1234, &[0xAA]);
    cpu.write_cr4(CR4_PSE).unwrap();
    assert_eq!(cpu.read::<1>(DS, 0xC0_1234), Ok(0xAA));
    cpu.write::<1>(DS, 0xC0_2000, 0x55).unwrap();
    assert_eq!(cpu.mem.ram[0x80_2000], 0x55);
    assert_eq!(
        pde(&cpu, 3) & (A | D),
        A | D,
        "a large page keeps A and D in the PDE"
    );
    // Without PSE the PS bit is ignored: the PDE names a page table at 8 MiB (all zeros), so
    // the access is to a not-present page.
    cpu.write_cr4(0).unwrap();
    assert_eq!(cpu.read::<1>(DS, 0xC0_1234), Err(page_fault(0)));
    assert_eq!(cpu.cr2, 0xC0_1234);
}

#[test]
fn global_pages_survive_cr3_reload_only_with_pge() {
    let mut cpu = paged_cpu();
    cpu.mem.load(0x9000, &[1]);
    cpu.mem.load(0xA000, &[2]);
    cpu.mem.load(0xB000, &[3]);
    cpu.write_cr4(CR4_PGE).unwrap();
    map(&mut cpu, 0, 0x9000, P | RW | G);
    map(&mut cpu, 1, 0xA000, P | RW);
    assert_eq!(cpu.read::<1>(DS, lin(0)), Ok(1));
    assert_eq!(cpu.read::<1>(DS, lin(1)), Ok(2));
    // Remap both pages to 0xB000 in memory, then reload CR3.
    map(&mut cpu, 0, 0xB000, P | RW | G);
    map(&mut cpu, 1, 0xB000, P | RW);
    cpu.write_cr3(PAGE_DIR);
    assert_eq!(
        cpu.read::<1>(DS, lin(0)),
        Ok(1),
        "global entry kept its stale mapping"
    );
    assert_eq!(
        cpu.read::<1>(DS, lin(1)),
        Ok(3),
        "non-global entry was flushed"
    );
    // Clearing CR4.PGE flushes global entries too.
    cpu.write_cr4(0).unwrap();
    assert_eq!(cpu.read::<1>(DS, lin(0)), Ok(3));
}

#[test]
fn global_bit_is_ignored_without_pge() {
    let mut cpu = paged_cpu();
    cpu.mem.load(0x9000, &[1]);
    cpu.mem.load(0xB000, &[3]);
    map(&mut cpu, 0, 0x9000, P | RW | G);
    assert_eq!(cpu.read::<1>(DS, lin(0)), Ok(1));
    map(&mut cpu, 0, 0xB000, P | RW | G);
    cpu.write_cr3(PAGE_DIR);
    assert_eq!(cpu.read::<1>(DS, lin(0)), Ok(3));
}

#[test]
fn invlpg_instruction_drops_one_translation() {
    let mut cpu = paged_cpu();
    cpu.mem.load(0x9000, &[1]);
    cpu.mem.load(0xA000, &[2]);
    cpu.mem.load(0xB000, &[3]);
    map(&mut cpu, 0, 0x9000, P | RW);
    map(&mut cpu, 1, 0xA000, P | RW);
    assert_eq!(cpu.read::<1>(DS, lin(0)), Ok(1));
    assert_eq!(cpu.read::<1>(DS, lin(1)), Ok(2));
    map(&mut cpu, 0, 0xB000, P | RW);
    map(&mut cpu, 1, 0xB000, P | RW);
    // invlpg [eax] ; hlt
    cpu.regs[EAX] = lin(0) + 0x800;
    run_code(&mut cpu, &[0x0F, 0x01, 0x38, 0xF4]);
    assert_eq!(
        cpu.read::<1>(DS, lin(0)),
        Ok(3),
        "invalidated page sees the new PTE"
    );
    assert_eq!(
        cpu.read::<1>(DS, lin(1)),
        Ok(2),
        "other pages keep their TLB entry"
    );
}

#[test]
fn invlpg_drops_all_of_a_large_page() {
    let mut cpu = paged_cpu();
    cpu.write_cr4(CR4_PSE).unwrap();
    set_word(&mut cpu, PAGE_DIR + 12, 0x80_0000 | P | RW | PS);
    cpu.mem.load(0x80_5000, &[7]);
    assert_eq!(cpu.read::<1>(DS, 0xC0_5000), Ok(7));
    set_word(&mut cpu, PAGE_DIR + 12, 0);
    cpu.regs[EAX] = 0xC0_0000;
    run_code(&mut cpu, &[0x0F, 0x01, 0x38, 0xF4]);
    assert_eq!(cpu.read::<1>(DS, 0xC0_5000), Err(page_fault(0)));
}

#[test]
fn cr0_wp_makes_read_only_pages_read_only_for_the_supervisor() {
    let mut cpu = paged_cpu();
    map(&mut cpu, 0, 0x9000, P | US);
    cpu.write::<4>(DS, lin(0), 0x1111).unwrap();
    assert_eq!(
        word(&cpu, 0x9000),
        0x1111,
        "WP clear: supervisor writes anything"
    );
    cpu.write_cr0(cpu.cr0 | CR0_WP).unwrap();
    assert_eq!(
        cpu.write::<4>(DS, lin(0) + 8, 0x2222),
        Err(page_fault(ERR_P | ERR_W))
    );
    assert_eq!(cpu.cr2, lin(0) + 8);
    assert_eq!(word(&cpu, 0x9008), 0);
}

#[test]
fn page_fault_error_codes_and_cr2() {
    let mut cpu = paged_cpu();
    map(&mut cpu, 0, 0x9000, P | RW); // supervisor only
    map(&mut cpu, 1, 0xA000, P | US); // user read-only
    map(&mut cpu, 2, 0xB000, P | RW | US); // user writable
                                           // page 3 not present
    assert_eq!(cpu.read::<1>(DS, lin(3) + 5), Err(page_fault(0)));
    assert_eq!(cpu.cr2, lin(3) + 5);
    assert_eq!(cpu.write::<1>(DS, lin(3) + 6, 0), Err(page_fault(ERR_W)));
    assert_eq!(cpu.cr2, lin(3) + 6);
    cpu.set_cpl(3);
    assert_eq!(cpu.read::<4>(DS, lin(0)), Err(page_fault(ERR_U | ERR_P)));
    assert_eq!(
        cpu.write::<4>(DS, lin(1) + 4, 0),
        Err(page_fault(ERR_U | ERR_W | ERR_P))
    );
    assert_eq!(cpu.cr2, lin(1) + 4);
    assert_eq!(
        cpu.write::<1>(DS, lin(3), 0),
        Err(page_fault(ERR_U | ERR_W))
    );
    assert!(cpu.read::<4>(DS, lin(1)).is_ok());
    assert!(cpu.write::<4>(DS, lin(2), 9).is_ok());
    // A user-mode fault after the supervisor filled the TLB: permissions are per privilege.
    cpu.set_cpl(0);
    assert!(cpu.read::<4>(DS, lin(0) + 0x10).is_ok());
    cpu.set_cpl(3);
    assert_eq!(
        cpu.read::<4>(DS, lin(0) + 0x10),
        Err(page_fault(ERR_U | ERR_P))
    );
}

#[test]
fn a_write_straddling_into_a_missing_page_writes_nothing() {
    let mut cpu = paged_cpu();
    map(&mut cpu, 0, 0x9000, P | RW);
    assert_eq!(
        cpu.write::<4>(DS, lin(1) - 2, 0xAABB_CCDD),
        Err(page_fault(ERR_W))
    );
    assert_eq!(
        cpu.cr2,
        lin(1),
        "CR2 names the first byte of the missing page"
    );
    assert_eq!(&cpu.mem.ram[0x9FFE..0xA000], &[0, 0]);
}

#[test]
fn self_modifying_code_through_another_linear_alias() {
    let mut cpu = paged_cpu();
    // The code page is also visible at linear 4 MiB (page 0 of PT_TEST).
    map(&mut cpu, 0, CODE, P | RW);
    // cpuid ; hlt -> EAX = highest leaf.
    cpu.regs[EAX] = 0;
    run_code(&mut cpu, &[0x0F, 0xA2, 0xF4]);
    assert_eq!(cpu.regs[EAX], 2);
    // Rewrite it through the alias as: mov eax, cr0 ; hlt
    cpu.write_lin::<4>(lin(0), u32::from_le_bytes([0x0F, 0x20, 0xC0, 0xF4]))
        .unwrap();
    cpu.eip = CODE;
    cpu.halted = false;
    assert_eq!(cpu.run(100), RunExit::Halted);
    assert_eq!(
        cpu.regs[EAX], cpu.cr0,
        "the new code ran, not the cached block"
    );
}

#[test]
fn code_that_overwrites_the_rest_of_its_own_block() {
    let mut cpu = paged_cpu();
    // sgdt [CODE + 7] writes the GDTR's limit and base over the next instruction: limit 0xA20F
    // is "cpuid", base 0xF4F4F4F4 four HLTs. The original next instruction is
    // "mov eax, cr0 ; hlt". With EAX = 0, CPUID leaves 2 in EAX; the stale block would
    // leave CR0.
    cpu.gdtr = wasm86::cpu::TableReg {
        base: 0xF4F4_F4F4,
        limit: 0xA20F,
    };
    let target = (CODE + 7).to_le_bytes();
    let mut code = vec![0x0F, 0x01, 0x05];
    code.extend_from_slice(&target);
    code.extend_from_slice(&[0x0F, 0x20, 0xC0, 0xF4, 0xF4, 0xF4]);
    cpu.regs[EAX] = 0;
    run_code(&mut cpu, &code);
    assert_eq!(cpu.regs[EAX], 2);
    assert_eq!(
        cpu.eip,
        CODE + 10,
        "stopped at the first of the written HLTs"
    );
}

/// An instruction across two pages is decoded once and cached like any block, and still sees
/// a write to its second page, the second page mapped elsewhere, and the second page unmapped.
#[test]
fn an_instruction_across_two_pages_is_cached_and_follows_its_second_page() {
    let mut cpu = paged_cpu();
    map(&mut cpu, 0, 0x9000, P | RW);
    map(&mut cpu, 1, 0xA000, P | RW);
    // mov eax, 0x44332211 across lin(0)+0xFFE .. lin(1)+2; then hlt.
    cpu.mem.load(0x9FFE, &[0xB8, 0x11]);
    cpu.mem.load(0xA000, &[0x22, 0x33, 0x44, 0xF4]);
    let run_it = |cpu: &mut Cpu| {
        cpu.eip = lin(0) + 0xFFE;
        cpu.halted = false;
        let exit = cpu.run(100);
        (exit, cpu.regs[EAX])
    };
    assert_eq!(run_it(&mut cpu), (RunExit::Halted, 0x4433_2211));
    let decoded = cpu.counters.blocks_decoded;
    assert_eq!(cpu.counters.blocks_straddling, 1);
    for _ in 0..3 {
        assert_eq!(run_it(&mut cpu), (RunExit::Halted, 0x4433_2211));
    }
    assert_eq!(
        cpu.counters.blocks_decoded, decoded,
        "ran from the cache three more times"
    );

    // The guest writes the immediate's third byte, in the second page.
    cpu.write::<1>(DS, lin(1) + 1, 0x55).unwrap();
    assert_eq!(run_it(&mut cpu), (RunExit::Halted, 0x4455_2211));

    // The second page mapped to another physical page (and the TLB flushed, as the guest must).
    cpu.mem.load(0xB000, &[0x66, 0x77, 0x88, 0xF4]);
    map(&mut cpu, 1, 0xB000, P | RW);
    cpu.write_cr3(PAGE_DIR);
    assert_eq!(run_it(&mut cpu), (RunExit::Halted, 0x8877_6611));
    // A write to the old second page changes nothing now.
    cpu.mem.load(0xA001, &[0x99]);
    assert_eq!(run_it(&mut cpu), (RunExit::Halted, 0x8877_6611));

    // The second page gone: the fetch faults there (no IDT here, so the fault shuts down).
    map(&mut cpu, 1, 0xB000, 0);
    cpu.write_cr3(PAGE_DIR);
    cpu.regs[EAX] = 0;
    assert_eq!(run_it(&mut cpu), (RunExit::Shutdown, 0));
    assert_eq!(cpu.cr2, lin(1), "the fault is at the second page");
}
