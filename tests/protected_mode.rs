//! Protected-mode mechanics driven through the `Cpu` API: segment loads, far transfers through
//! call gates, IDT delivery with privilege changes, V86 entry and exit, hardware task switches,
//! the I/O bitmap, #DF through a task gate and triple faults.

use wasm86::cpu::exception::{self, Exception};
use wasm86::cpu::flags;
use wasm86::cpu::interrupt::IntKind;
use wasm86::cpu::protected::Descriptor;
use wasm86::cpu::{Cpu, RunExit, Segment, TableReg, CR0_PE, CR0_PG, CR0_TS, EAX, EBX, ESP};

const GDT: u32 = 0x1000;
const IDT: u32 = 0x2000;
const LDT: u32 = 0x2800;
const TSS_A: u32 = 0x3000;
const TSS_B: u32 = 0x3800;
const TSS_16: u32 = 0x3C00;
const STACK0_TOP: u32 = 0x9000;
const STACK3_TOP: u32 = 0x8000;
const STACK_B_TOP: u32 = 0xA000;

// GDT selectors.
const CODE0: u16 = 0x08;
const DATA0: u16 = 0x10;
const CODE3: u16 = 0x18 | 3;
const DATA3: u16 = 0x20 | 3;
const TSS_A_SEL: u16 = 0x28;
const TSS_B_SEL: u16 = 0x30;
const CALL_GATE: u16 = 0x38;
const CODE16_0: u16 = 0x40;
const DATA_ABSENT: u16 = 0x48;
const CONFORMING: u16 = 0x50;
const LDT_SEL: u16 = 0x58;
const TASK_GATE: u16 = 0x60;
const TSS_16_SEL: u16 = 0x68;
const XONLY_CODE0: u16 = 0x70;
const CALL_GATE16: u16 = 0x78;
const GDT_ENTRIES: u32 = 16;

/// A code/data descriptor: `access` is the P/DPL/S/type byte, `gran` the G/D/L/AVL nibble.
fn seg(base: u32, limit: u32, access: u8, gran: u8) -> u64 {
    wasm86::cpu::protected::Descriptor::segment(base, limit, access, gran).to_u64()
}

/// A gate: `access` is P/DPL/type, `params` the call-gate parameter count.
fn gate(sel: u16, offset: u32, access: u8, params: u8) -> u64 {
    let lo = (offset & 0xFFFF) | ((sel as u32) << 16);
    let hi = (offset & 0xFFFF_0000) | ((access as u32) << 8) | (params as u32 & 0x1F);
    lo as u64 | ((hi as u64) << 32)
}

fn put64(cpu: &mut Cpu, addr: u32, v: u64) {
    cpu.mem.load(addr, &v.to_le_bytes());
}
fn put32(cpu: &mut Cpu, addr: u32, v: u32) {
    cpu.mem.load(addr, &v.to_le_bytes());
}
fn put16(cpu: &mut Cpu, addr: u32, v: u16) {
    cpu.mem.load(addr, &v.to_le_bytes());
}
fn get32(cpu: &Cpu, addr: u32) -> u32 {
    let a = addr as usize;
    u32::from_le_bytes(cpu.mem.ram[a..a + 4].try_into().unwrap())
}
fn get16(cpu: &Cpu, addr: u32) -> u16 {
    let a = addr as usize;
    u16::from_le_bytes(cpu.mem.ram[a..a + 2].try_into().unwrap())
}
fn desc_hi(cpu: &Cpu, sel: u16) -> u32 {
    get32(cpu, GDT + (sel & !7) as u32 + 4)
}
fn set_idt(cpu: &mut Cpu, vector: u8, g: u64) {
    put64(cpu, IDT + vector as u32 * 8, g);
}

/// A flat protected-mode machine at CPL 0 with TR = TSS A (ring-0 stack at STACK0_TOP).
fn machine() -> Cpu {
    let mut cpu = Cpu::with_ram(1 << 20);
    let entries: [(u16, u64); 15] = [
        (CODE0, seg(0, 0xFFFFF, 0x9A, 0xC)),
        (DATA0, seg(0, 0xFFFFF, 0x92, 0xC)),
        (CODE3, seg(0, 0xFFFFF, 0xFA, 0xC)),
        (DATA3, seg(0, 0xFFFFF, 0xF2, 0xC)),
        (TSS_A_SEL, seg(TSS_A, 0x67 + 0x2000 / 8, 0x89, 0)),
        (TSS_B_SEL, seg(TSS_B, 0x67, 0x89, 0)),
        (CALL_GATE, gate(CODE0, 0x5000, 0xEC, 2)),
        (CODE16_0, seg(0x10000, 0xFFFF, 0x9A, 0)),
        (DATA_ABSENT, seg(0, 0xFFFF, 0x12, 0)),
        (CONFORMING, seg(0, 0xFFFFF, 0x9E, 0xC)),
        (LDT_SEL, seg(LDT, 0xF, 0x82, 0)),
        (TASK_GATE, gate(TSS_B_SEL, 0, 0xE5, 0)),
        (TSS_16_SEL, seg(TSS_16, 0x2B, 0x81, 0)),
        (XONLY_CODE0, seg(0, 0xFFFFF, 0x98, 0xC)),
        (CALL_GATE16, gate(CODE16_0, 0x1234, 0xE4, 1)),
    ];
    for (sel, d) in entries {
        put64(&mut cpu, GDT + (sel & !7) as u32, d);
    }
    // LDT: one ring-3 data segment at index 1 (selector 0x0F).
    put64(&mut cpu, LDT + 8, seg(0x20000, 0xFFFF, 0xF2, 0));
    cpu.gdtr = TableReg {
        base: GDT,
        limit: GDT_ENTRIES * 8 - 1,
    };
    cpu.idtr = TableReg {
        base: IDT,
        limit: 256 * 8 - 1,
    };
    cpu.cr0 |= CR0_PE;
    cpu.sync_paging();
    for (s, sel) in [
        (Segment::CS, CODE0),
        (Segment::SS, DATA0),
        (Segment::DS, DATA0),
        (Segment::ES, DATA0),
        (Segment::FS, 0),
        (Segment::GS, 0),
    ] {
        let d = read_desc(&cpu, sel);
        cpu.segs[s as usize] = if sel == 0 {
            wasm86::cpu::protected::null_cache(0)
        } else {
            d.to_cache(sel)
        };
    }
    cpu.set_cpl(0);
    cpu.regs[ESP] = STACK0_TOP;
    cpu.eip = 0x4000;
    // TSS A: ring-0 stack, I/O bitmap at 0x68 (all ports allowed but 0x60..0x67 and 0x3F9).
    put32(&mut cpu, TSS_A + 4, STACK0_TOP);
    put16(&mut cpu, TSS_A + 8, DATA0);
    put16(&mut cpu, TSS_A + 0x66, 0x68);
    cpu.mem.load(TSS_A + 0x68 + 0x60 / 8, &[0xFF]);
    cpu.mem.load(TSS_A + 0x68 + 0x3F8 / 8, &[0x02]);
    cpu.load_task_register(TSS_A_SEL).unwrap();
    // TSS B: a ring-0 task at 0x6000 with its own stack.
    put32(&mut cpu, TSS_B + 4, STACK_B_TOP);
    put16(&mut cpu, TSS_B + 8, DATA0);
    put32(&mut cpu, TSS_B + 0x20, 0x6000);
    put32(&mut cpu, TSS_B + 0x24, flags::FIXED1);
    put32(&mut cpu, TSS_B + 0x28, 0xB0B0_0001); // EAX
    put32(&mut cpu, TSS_B + 0x38, STACK_B_TOP); // ESP
    for (off, sel) in [(0x48, DATA0), (0x4C, CODE0), (0x50, DATA0), (0x54, DATA0)] {
        put16(&mut cpu, TSS_B + off, sel);
    }
    cpu
}

fn read_desc(cpu: &Cpu, sel: u16) -> Descriptor {
    let a = GDT + (sel & !7) as u32;
    Descriptor {
        lo: get32(cpu, a),
        hi: get32(cpu, a + 4),
    }
}

/// Drop to ring 3 with a flat user stack at STACK3_TOP.
fn to_ring3(cpu: &mut Cpu) {
    cpu.segs[Segment::CS as usize] = read_desc(cpu, CODE3).to_cache(CODE3);
    cpu.segs[Segment::SS as usize] = read_desc(cpu, DATA3).to_cache(DATA3);
    cpu.segs[Segment::DS as usize] = read_desc(cpu, DATA3).to_cache(DATA3);
    cpu.segs[Segment::ES as usize] = read_desc(cpu, DATA0).to_cache(DATA0);
    cpu.set_cpl(3);
    cpu.regs[ESP] = STACK3_TOP;
}

fn sel(cpu: &Cpu, s: Segment) -> u16 {
    cpu.segs[s as usize].selector
}

// ---- Segment loads ----

#[test]
fn null_selector_loads_into_data_registers_and_faults_on_use() {
    let mut cpu = machine();
    cpu.load_seg(Segment::DS, 0).unwrap();
    cpu.load_seg(Segment::GS, 3).unwrap();
    assert_eq!(sel(&cpu, Segment::GS), 3);
    assert_eq!(
        cpu.read::<4>(Segment::DS as usize, 0),
        Err(Exception::gp(0))
    );
    assert_eq!(cpu.load_seg(Segment::SS, 0), Err(Exception::gp(0)));
}

#[test]
fn segment_load_checks_type_privilege_presence_and_limit() {
    let mut cpu = machine();
    // Ring-3 data into SS at CPL 0: RPL/DPL mismatch.
    assert_eq!(cpu.load_seg(Segment::SS, DATA3), Err(Exception::gp(0x20)));
    // Code into SS.
    assert_eq!(cpu.load_seg(Segment::SS, CODE0), Err(Exception::gp(0x08)));
    // Execute-only code into DS.
    assert_eq!(
        cpu.load_seg(Segment::DS, XONLY_CODE0),
        Err(Exception::gp(0x70))
    );
    // Not present: #NP for DS, #SS for SS.
    assert_eq!(
        cpu.load_seg(Segment::DS, DATA_ABSENT),
        Err(Exception::np(0x48))
    );
    // A system descriptor into ES.
    assert_eq!(
        cpu.load_seg(Segment::ES, TSS_B_SEL),
        Err(Exception::gp(0x30))
    );
    // Beyond the GDT limit: #GP(selector with TI, without RPL).
    assert_eq!(cpu.load_seg(Segment::FS, 0x203), Err(Exception::gp(0x200)));
    // LDT selector with no LDT loaded.
    assert_eq!(cpu.load_seg(Segment::FS, 0x0F), Err(Exception::gp(0x0C)));
    // Readable code and data load; the accessed bit is set in the GDT.
    assert_eq!(desc_hi(&cpu, CONFORMING) & 0x100, 0);
    cpu.load_seg(Segment::FS, CONFORMING).unwrap();
    assert_ne!(desc_hi(&cpu, CONFORMING) & 0x100, 0);
    cpu.load_seg(Segment::SS, DATA0).unwrap();
}

#[test]
fn segment_load_privilege_at_cpl3() {
    let mut cpu = machine();
    to_ring3(&mut cpu);
    assert_eq!(cpu.load_seg(Segment::DS, DATA0), Err(Exception::gp(0x10)));
    assert_eq!(
        cpu.load_seg(Segment::SS, DATA0 | 3),
        Err(Exception::gp(0x10))
    );
    // Conforming readable code is readable from any level.
    cpu.load_seg(Segment::DS, CONFORMING | 3).unwrap();
    cpu.load_seg(Segment::SS, DATA3).unwrap();
    // RPL 3 selector for ring-0 data at CPL 0.
    let mut cpu = machine();
    assert_eq!(
        cpu.load_seg(Segment::ES, DATA0 | 3),
        Err(Exception::gp(0x10))
    );
}

#[test]
fn ldt_and_task_register_loads() {
    let mut cpu = machine();
    assert_eq!(cpu.load_ldt(DATA0), Err(Exception::gp(0x10)));
    assert_eq!(cpu.load_ldt(0x0C), Err(Exception::gp(0x0C)));
    cpu.load_ldt(LDT_SEL).unwrap();
    cpu.load_seg(Segment::ES, 0x0F).unwrap();
    assert_eq!(cpu.segs[Segment::ES as usize].base, 0x20000);
    cpu.load_ldt(0).unwrap();
    assert_eq!(cpu.load_seg(Segment::ES, 0x0F), Err(Exception::gp(0x0C)));
    // TSS A is busy after LTR: loading it again faults; TSS B loads and becomes busy.
    assert_eq!(desc_hi(&cpu, TSS_A_SEL) >> 8 & 0xF, 0xB);
    assert_eq!(cpu.load_task_register(TSS_A_SEL), Err(Exception::gp(0x28)));
    assert_eq!(cpu.load_task_register(DATA0), Err(Exception::gp(0x10)));
    assert_eq!(cpu.load_task_register(0), Err(Exception::gp(0)));
    cpu.load_task_register(TSS_B_SEL).unwrap();
    assert_eq!(cpu.tr.selector, TSS_B_SEL);
    assert_eq!(desc_hi(&cpu, TSS_B_SEL) >> 8 & 0xF, 0xB);
    to_ring3(&mut cpu);
    assert_eq!(cpu.load_ldt(LDT_SEL), Err(Exception::gp(0)));
}

// ---- Far transfers ----

#[test]
fn far_jump_and_call_to_code_segments() {
    let mut cpu = machine();
    cpu.far_jump_protected(CONFORMING, 0x1234, true).unwrap();
    assert_eq!(
        (sel(&cpu, Segment::CS), cpu.eip, cpu.cpl),
        (CONFORMING, 0x1234, 0)
    );
    // A 16-bit code segment: offset beyond the limit faults.
    assert_eq!(
        cpu.far_jump_protected(CODE16_0, 0x1_0000, true),
        Err(Exception::gp(0))
    );
    // Ring 3 code from ring 0 directly: not allowed.
    assert_eq!(
        cpu.far_jump_protected(CODE3, 0, true),
        Err(Exception::gp(0x18))
    );
    assert_eq!(cpu.far_jump_protected(0, 0, true), Err(Exception::gp(0)));
    // CALL pushes CS:EIP at the operand size.
    cpu.eip = 0x4321;
    cpu.far_call_protected(CODE16_0, 0x100, false).unwrap();
    assert_eq!(cpu.regs[ESP], STACK0_TOP - 4);
    assert_eq!(get16(&cpu, STACK0_TOP - 2), CONFORMING);
    assert_eq!(get16(&cpu, STACK0_TOP - 4), 0x4321);
    assert!(!cpu.segs[Segment::CS as usize].big);
    cpu.far_return_protected(false, 0).unwrap();
    assert_eq!((sel(&cpu, Segment::CS), cpu.eip), (CONFORMING, 0x4321));
    assert_eq!(cpu.regs[ESP], STACK0_TOP);
}

#[test]
fn call_gate_to_ring0_copies_parameters_and_returns() {
    let mut cpu = machine();
    to_ring3(&mut cpu);
    // The caller pushed two parameters.
    cpu.regs[ESP] = STACK3_TOP - 8;
    put32(&mut cpu, STACK3_TOP - 8, 0x1111_1111);
    put32(&mut cpu, STACK3_TOP - 4, 0x2222_2222);
    cpu.eip = 0x7777;
    cpu.far_call_protected(CALL_GATE | 3, 0xDEAD, true).unwrap();
    assert_eq!(cpu.cpl, 0);
    assert_eq!((sel(&cpu, Segment::CS), cpu.eip), (CODE0, 0x5000));
    assert_eq!(sel(&cpu, Segment::SS), DATA0);
    let sp = STACK0_TOP - 24;
    assert_eq!(cpu.regs[ESP], sp);
    let frame: Vec<u32> = (0..6).map(|i| get32(&cpu, sp + 4 * i)).collect();
    assert_eq!(
        frame,
        [
            0x7777,
            CODE3 as u32,
            0x1111_1111,
            0x2222_2222,
            STACK3_TOP - 8,
            DATA3 as u32
        ]
    );
    // Ring-0 data in ES must not survive the return to ring 3; ring-3 DS stays.
    cpu.load_seg(Segment::ES, DATA0).unwrap();
    cpu.far_return_protected(true, 8).unwrap();
    assert_eq!(cpu.cpl, 3);
    assert_eq!((sel(&cpu, Segment::CS), cpu.eip), (CODE3, 0x7777));
    assert_eq!((sel(&cpu, Segment::SS), cpu.regs[ESP]), (DATA3, STACK3_TOP));
    assert_eq!(sel(&cpu, Segment::ES), 0);
    assert_eq!(sel(&cpu, Segment::DS), DATA3);
}

#[test]
fn call_gate16_pushes_words() {
    let mut cpu = machine();
    to_ring3(&mut cpu);
    cpu.regs[ESP] = STACK3_TOP - 2;
    put16(&mut cpu, STACK3_TOP - 2, 0xABCD);
    cpu.eip = 0x55;
    cpu.far_call_protected(CALL_GATE16 | 3, 0, false).unwrap();
    assert_eq!(
        (sel(&cpu, Segment::CS), cpu.eip, cpu.cpl),
        (CODE16_0, 0x1234, 0)
    );
    let sp = STACK0_TOP - 10;
    assert_eq!(cpu.regs[ESP], sp);
    let frame: Vec<u16> = (0..5).map(|i| get16(&cpu, sp + 2 * i)).collect();
    assert_eq!(frame, [0x55, CODE3, 0xABCD, (STACK3_TOP - 2) as u16, DATA3]);
}

#[test]
fn call_gate_checks() {
    let mut cpu = machine();
    to_ring3(&mut cpu);
    // RPL above the gate DPL... gate DPL 3 allows RPL 3; a DPL-0 gate does not.
    put64(&mut cpu, GDT + 0x38, gate(CODE0, 0x5000, 0x8C, 0));
    assert_eq!(
        cpu.far_call_protected(CALL_GATE | 3, 0, true),
        Err(Exception::gp(0x38))
    );
    // Not present gate.
    put64(&mut cpu, GDT + 0x38, gate(CODE0, 0x5000, 0x6C, 0));
    assert_eq!(
        cpu.far_call_protected(CALL_GATE | 3, 0, true),
        Err(Exception::np(0x38))
    );
    // JMP through a gate to more privileged code: #GP(target).
    put64(&mut cpu, GDT + 0x38, gate(CODE0, 0x5000, 0xEC, 0));
    assert_eq!(
        cpu.far_jump_protected(CALL_GATE | 3, 0, true),
        Err(Exception::gp(0x08))
    );
    // Bad ring-0 stack in the TSS: #TS(SS selector).
    put16(&mut cpu, TSS_A + 8, DATA3);
    assert_eq!(
        cpu.far_call_protected(CALL_GATE | 3, 0, true),
        Err(Exception::ts(0x20))
    );
    // Nothing changed on failure.
    assert_eq!((cpu.cpl, sel(&cpu, Segment::SS)), (3, DATA3));
}

#[test]
fn far_return_checks() {
    let mut cpu = machine();
    to_ring3(&mut cpu);
    // Return to ring 0 from ring 3: RPL < CPL.
    cpu.regs[ESP] = STACK3_TOP - 8;
    put32(&mut cpu, STACK3_TOP - 8, 0x10);
    put32(&mut cpu, STACK3_TOP - 4, CODE0 as u32);
    assert_eq!(cpu.far_return_protected(true, 0), Err(Exception::gp(0x08)));
}

// ---- Interrupts ----

#[test]
fn software_interrupt_from_ring3_switches_stack_and_iret_returns() {
    let mut cpu = machine();
    set_idt(&mut cpu, 0x80, gate(CODE0, 0x6000, 0xEE, 0));
    to_ring3(&mut cpu);
    cpu.flags
        .set_word(flags::IF | flags::TF | flags::FIXED1 | flags::CF);
    cpu.eip = 0x1000;
    cpu.interrupt(0x80, IntKind::Software, None).unwrap();
    assert_eq!(cpu.cpl, 0);
    assert_eq!((sel(&cpu, Segment::CS), cpu.eip), (CODE0, 0x6000));
    assert!(!cpu.flags.sys(flags::IF) && !cpu.flags.sys(flags::TF));
    let sp = STACK0_TOP - 20;
    assert_eq!(cpu.regs[ESP], sp);
    let frame: Vec<u32> = (0..5).map(|i| get32(&cpu, sp + 4 * i)).collect();
    assert_eq!(
        frame,
        [
            0x1000,
            CODE3 as u32,
            flags::IF | flags::TF | flags::FIXED1 | flags::CF,
            STACK3_TOP,
            DATA3 as u32
        ]
    );
    cpu.iret_protected(true).unwrap();
    assert_eq!(cpu.cpl, 3);
    assert_eq!((sel(&cpu, Segment::CS), cpu.eip), (CODE3, 0x1000));
    assert_eq!((sel(&cpu, Segment::SS), cpu.regs[ESP]), (DATA3, STACK3_TOP));
    assert_eq!(
        cpu.flags.word(),
        flags::IF | flags::TF | flags::FIXED1 | flags::CF
    );
}

#[test]
fn gate_dpl_applies_to_software_interrupts_only() {
    let mut cpu = machine();
    set_idt(&mut cpu, 0x30, gate(CODE0, 0x6000, 0x8E, 0));
    to_ring3(&mut cpu);
    assert_eq!(
        cpu.interrupt(0x30, IntKind::Software, None),
        Err(Exception::gp(0x30 * 8 + 2))
    );
    assert_eq!(
        cpu.interrupt(0x30, IntKind::SoftwareTrap, None),
        Err(Exception::gp(0x30 * 8 + 2))
    );
    cpu.interrupt(0x30, IntKind::External, None).unwrap();
    assert_eq!(cpu.cpl, 0);
}

#[test]
fn idt_errors_carry_the_ext_bit() {
    let mut cpu = machine();
    cpu.idtr.limit = 0x40 * 8 - 1;
    assert_eq!(
        cpu.interrupt(0x40, IntKind::External, None),
        Err(Exception::gp(0x40 * 8 + 3))
    );
    assert_eq!(
        cpu.interrupt(0x40, IntKind::Software, None),
        Err(Exception::gp(0x40 * 8 + 2))
    );
    // Not-present gate.
    set_idt(&mut cpu, 0x21, gate(CODE0, 0x6000, 0x0E, 0));
    assert_eq!(
        cpu.interrupt(0x21, IntKind::External, None),
        Err(Exception::np(0x21 * 8 + 3))
    );
    // A data segment as the gate target.
    set_idt(&mut cpu, 0x22, gate(DATA0, 0x6000, 0x8E, 0));
    assert_eq!(
        cpu.interrupt(0x22, IntKind::Exception, None),
        Err(Exception::gp(0x11))
    );
    // A call gate in the IDT is not a valid gate.
    set_idt(&mut cpu, 0x23, gate(CODE0, 0x6000, 0x8C, 0));
    assert_eq!(
        cpu.interrupt(0x23, IntKind::Software, None),
        Err(Exception::gp(0x23 * 8 + 2))
    );
}

#[test]
fn exception_pushes_error_code_same_level_trap_gate_keeps_if() {
    let mut cpu = machine();
    set_idt(&mut cpu, exception::GP, gate(CODE0, 0x6100, 0x8F, 0));
    cpu.flags.set(flags::IF, true);
    cpu.eip = 0x4444;
    cpu.deliver_exception(Exception::gp(0x28));
    assert_eq!(cpu.eip, 0x6100);
    assert!(cpu.flags.sys(flags::IF));
    let sp = STACK0_TOP - 16;
    assert_eq!(cpu.regs[ESP], sp);
    assert_eq!(get32(&cpu, sp), 0x28);
    assert_eq!(get32(&cpu, sp + 4), 0x4444);
    assert_eq!(get32(&cpu, sp + 8), CODE0 as u32);
    // Software INT 13 through the same gate pushes no error code.
    cpu.regs[ESP] = STACK0_TOP;
    cpu.interrupt(exception::GP, IntKind::Software, Some(5))
        .unwrap();
    assert_eq!(cpu.regs[ESP], STACK0_TOP - 12);
}

#[test]
fn sixteen_bit_interrupt_gate_pushes_words() {
    let mut cpu = machine();
    set_idt(&mut cpu, exception::NP, gate(CODE16_0, 0x20, 0x86, 0));
    cpu.eip = 0x4444;
    cpu.deliver_exception(Exception::np(0x48));
    let sp = STACK0_TOP - 8;
    assert_eq!(cpu.regs[ESP], sp);
    assert_eq!(get16(&cpu, sp), 0x48);
    assert_eq!(get16(&cpu, sp + 2), 0x4444);
    assert_eq!(get16(&cpu, sp + 4), CODE0);
    assert_eq!((sel(&cpu, Segment::CS), cpu.eip), (CODE16_0, 0x20));
}

#[test]
fn iret_flag_rules_by_cpl_and_iopl() {
    // At CPL 3 with IOPL 0, IRET can change neither IOPL nor IF.
    let mut cpu = machine();
    to_ring3(&mut cpu);
    cpu.flags.set_word(flags::FIXED1);
    cpu.regs[ESP] = STACK3_TOP - 12;
    put32(&mut cpu, STACK3_TOP - 12, 0x99);
    put32(&mut cpu, STACK3_TOP - 8, CODE3 as u32);
    put32(
        &mut cpu,
        STACK3_TOP - 4,
        flags::IOPL | flags::IF | flags::CF | flags::VM | flags::FIXED1,
    );
    cpu.iret_protected(true).unwrap();
    assert_eq!(cpu.eip, 0x99);
    assert_eq!(cpu.flags.word(), flags::CF | flags::FIXED1);
    assert!(!cpu.v86_mode());
    // At CPL 0 both change.
    let mut cpu = machine();
    cpu.regs[ESP] = STACK0_TOP - 12;
    put32(&mut cpu, STACK0_TOP - 12, 0x99);
    put32(&mut cpu, STACK0_TOP - 8, CODE0 as u32);
    put32(
        &mut cpu,
        STACK0_TOP - 4,
        flags::IOPL | flags::IF | flags::FIXED1,
    );
    cpu.iret_protected(true).unwrap();
    assert_eq!(cpu.flags.word(), flags::IOPL | flags::IF | flags::FIXED1);
}

#[test]
fn v86_entry_interrupt_and_return() {
    let mut cpu = machine();
    set_idt(&mut cpu, 0x20, gate(CODE0, 0x6200, 0x8E, 0));
    // IRET frame to V86: EIP CS EFLAGS ESP SS ES DS FS GS.
    let frame = [
        0x0100,
        0x1000,
        flags::VM | flags::IF | flags::FIXED1,
        0xFFFE,
        0x2000,
        0x3000,
        0x4000,
        0x5000,
        0x6000,
    ];
    let sp = STACK0_TOP - 36;
    for (i, v) in frame.iter().enumerate() {
        put32(&mut cpu, sp + 4 * i as u32, *v);
    }
    cpu.regs[ESP] = sp;
    cpu.iret_protected(true).unwrap();
    assert!(cpu.v86_mode());
    assert_eq!(cpu.cpl, 3);
    assert_eq!((cpu.eip, cpu.regs[ESP]), (0x100, 0xFFFE));
    assert_eq!(cpu.segs[Segment::CS as usize].base, 0x10000);
    assert_eq!(cpu.segs[Segment::SS as usize].base, 0x20000);
    assert_eq!(cpu.segs[Segment::GS as usize].base, 0x60000);
    assert_eq!(cpu.segs[Segment::DS as usize].dpl(), 3);
    // Real-mode style segment loads in V86.
    cpu.load_seg(Segment::ES, 0x1234).unwrap();
    assert_eq!(cpu.segs[Segment::ES as usize].base, 0x12340);
    // IN at IOPL 0 consults the bitmap.
    assert_eq!(cpu.check_io_permission(0x60, 1), Err(Exception::gp(0)));
    cpu.check_io_permission(0x70, 1).unwrap();
    // INT n at IOPL < 3 faults; an external interrupt enters ring 0.
    assert_eq!(
        cpu.interrupt(0x20, IntKind::Software, None),
        Err(Exception::gp(0))
    );
    cpu.interrupt(0x20, IntKind::External, None).unwrap();
    assert!(!cpu.v86_mode());
    assert_eq!(cpu.cpl, 0);
    assert_eq!((sel(&cpu, Segment::CS), cpu.eip), (CODE0, 0x6200));
    for s in [Segment::DS, Segment::ES, Segment::FS, Segment::GS] {
        assert_eq!(sel(&cpu, s), 0);
    }
    let sp = STACK0_TOP - 36;
    assert_eq!(cpu.regs[ESP], sp);
    let pushed: Vec<u32> = (0..9).map(|i| get32(&cpu, sp + 4 * i)).collect();
    assert_eq!(
        pushed,
        [
            0x100,
            0x1000,
            flags::VM | flags::IF | flags::FIXED1,
            0xFFFE,
            0x2000,
            0x1234,
            0x4000,
            0x5000,
            0x6000
        ]
    );
    // And back.
    cpu.iret_protected(true).unwrap();
    assert!(cpu.v86_mode());
    assert_eq!(cpu.segs[Segment::ES as usize].base, 0x12340);
    assert_eq!(cpu.regs[ESP], 0xFFFE);
}

#[test]
fn v86_interrupt_to_ring3_handler_faults() {
    let mut cpu = machine();
    set_idt(&mut cpu, 0x20, gate(CODE3, 0x6200, 0xEE, 0));
    cpu.flags.set_word(flags::VM | flags::FIXED1);
    for i in 0..6 {
        cpu.segs[i] = wasm86::cpu::protected::v86_cache(0);
    }
    cpu.set_cpl(3);
    assert_eq!(
        cpu.interrupt(0x20, IntKind::External, None),
        Err(Exception::gp(0x18 | 1))
    );
}

// ---- Task switches ----

#[test]
fn jump_to_tss_switches_task() {
    let mut cpu = machine();
    cpu.regs[EAX] = 0xA;
    cpu.regs[EBX] = 0xB;
    cpu.eip = 0x4100;
    cpu.far_jump_protected(TSS_B_SEL, 0, true).unwrap();
    assert_eq!(cpu.tr.selector, TSS_B_SEL);
    assert_eq!(cpu.eip, 0x6000);
    assert_eq!(cpu.regs[EAX], 0xB0B0_0001);
    assert_eq!(cpu.regs[ESP], STACK_B_TOP);
    assert_ne!(cpu.cr0 & CR0_TS, 0);
    // Old TSS saved and no longer busy; new one busy; no link, NT clear.
    assert_eq!(get32(&cpu, TSS_A + 0x20), 0x4100);
    assert_eq!(get32(&cpu, TSS_A + 0x28), 0xA);
    assert_eq!(get32(&cpu, TSS_A + 0x34), 0xB);
    assert_eq!(get16(&cpu, TSS_A + 0x4C), CODE0);
    assert_eq!(desc_hi(&cpu, TSS_A_SEL) >> 8 & 0xF, 0x9);
    assert_eq!(desc_hi(&cpu, TSS_B_SEL) >> 8 & 0xF, 0xB);
    assert!(!cpu.flags.sys(flags::NT));
    // Jumping to a busy TSS faults.
    assert_eq!(
        cpu.far_jump_protected(TSS_B_SEL, 0, true),
        Err(Exception::gp(TSS_B_SEL as u32))
    );
}

#[test]
fn call_through_task_gate_nests_and_iret_returns() {
    let mut cpu = machine();
    cpu.eip = 0x4100;
    cpu.regs[EBX] = 0x1234;
    cpu.far_call_protected(TASK_GATE, 0, true).unwrap();
    assert_eq!(cpu.tr.selector, TSS_B_SEL);
    assert!(cpu.flags.sys(flags::NT));
    assert_eq!(get16(&cpu, TSS_B), TSS_A_SEL);
    assert_eq!(desc_hi(&cpu, TSS_A_SEL) >> 8 & 0xF, 0xB);
    cpu.regs[EBX] = 0;
    cpu.eip = 0x6010;
    cpu.iret_protected(true).unwrap();
    assert_eq!(cpu.tr.selector, TSS_A_SEL);
    assert_eq!(cpu.eip, 0x4100);
    assert_eq!(cpu.regs[EBX], 0x1234);
    assert_eq!(desc_hi(&cpu, TSS_B_SEL) >> 8 & 0xF, 0x9);
    assert_eq!(get32(&cpu, TSS_B + 0x20), 0x6010);
    assert_eq!(get32(&cpu, TSS_B + 0x24) & flags::NT, 0);
}

#[test]
fn task_switch_loads_cr3_and_flushes() {
    let mut cpu = machine();
    // Two page directories identity-mapping the first 4 MiB, differing at 0x400000.
    let (pd_a, pd_b, pt) = (0x20000u32, 0x21000u32, 0x22000u32);
    for i in 0..256u32 {
        put32(&mut cpu, pt + 4 * i, (i << 12) | 3);
    }
    put32(&mut cpu, pd_a, pt | 3);
    put32(&mut cpu, pd_b, pt | 3);
    put32(&mut cpu, TSS_B + 0x1C, pd_b);
    cpu.cr3 = pd_a;
    cpu.cr0 |= CR0_PG;
    cpu.sync_paging();
    cpu.far_jump_protected(TSS_B_SEL, 0, true).unwrap();
    assert_eq!(cpu.cr3, pd_b);
    assert_eq!(cpu.mem.tlb.cr3, pd_b);
    // The old CR3 is not saved.
    assert_eq!(get32(&cpu, TSS_A + 0x1C), 0);
}

#[test]
fn task_switch_into_bad_segments_raises_ts_in_new_task() {
    let mut cpu = machine();
    set_idt(&mut cpu, exception::TS, gate(CODE0, 0x6300, 0x8E, 0));
    put16(&mut cpu, TSS_B + 0x54, XONLY_CODE0);
    cpu.far_jump_protected(TSS_B_SEL, 0, true).unwrap();
    // The switch completed; #TS was delivered on the new task's stack.
    assert_eq!(cpu.tr.selector, TSS_B_SEL);
    assert_eq!(cpu.eip, 0x6300);
    assert_eq!(cpu.regs[ESP], STACK_B_TOP - 16);
    assert_eq!(get32(&cpu, STACK_B_TOP - 16), XONLY_CODE0 as u32);
    assert_eq!(get32(&cpu, STACK_B_TOP - 12), 0x6000);
}

#[test]
fn task_switch_limit_check() {
    let mut cpu = machine();
    put64(&mut cpu, GDT + 0x30, seg(TSS_B, 0x50, 0x89, 0));
    assert_eq!(
        cpu.far_jump_protected(TSS_B_SEL, 0, true),
        Err(Exception::ts(TSS_B_SEL as u32))
    );
    assert_eq!(cpu.tr.selector, TSS_A_SEL);
}

#[test]
fn switch_to_16bit_task_and_back() {
    let mut cpu = machine();
    put16(&mut cpu, TSS_16 + 0x0E, 0x0042); // IP
    put16(&mut cpu, TSS_16 + 0x10, 0x0002); // FLAGS
    put16(&mut cpu, TSS_16 + 0x12, 0x5555); // AX
    put16(&mut cpu, TSS_16 + 0x1A, 0x0800); // SP
    put16(&mut cpu, TSS_16 + 0x22, DATA0); // ES
    put16(&mut cpu, TSS_16 + 0x24, CODE16_0); // CS
    put16(&mut cpu, TSS_16 + 0x26, DATA0); // SS
    put16(&mut cpu, TSS_16 + 0x28, 0); // DS
    cpu.eip = 0x4100;
    cpu.far_call_protected(TSS_16_SEL, 0, true).unwrap();
    assert_eq!(cpu.tr.selector, TSS_16_SEL);
    assert_eq!((sel(&cpu, Segment::CS), cpu.eip), (CODE16_0, 0x42));
    assert_eq!(cpu.regs[EAX] & 0xFFFF, 0x5555);
    assert_eq!(cpu.regs[ESP] & 0xFFFF, 0x800);
    assert_eq!(sel(&cpu, Segment::DS), 0);
    assert_eq!(get16(&cpu, TSS_16), TSS_A_SEL);
    // 16-bit TSS: no I/O bitmap, so CPL > IOPL means #GP.
    cpu.eip = 0x50;
    cpu.iret_protected(false).unwrap();
    assert_eq!(cpu.tr.selector, TSS_A_SEL);
    assert_eq!(cpu.eip, 0x4100);
    assert_eq!(get16(&cpu, TSS_16 + 0x0E), 0x50);
}

// ---- Double and triple faults ----

#[test]
fn contributory_pair_escalates_to_double_fault_through_task_gate() {
    let mut cpu = machine();
    // #GP's gate is not present (delivering it raises #NP): #DF, whose gate is a task gate
    // (as Linux i386 sets it up).
    set_idt(&mut cpu, exception::GP, gate(CODE0, 0x6000, 0x0E, 0));
    set_idt(&mut cpu, exception::DF, gate(TSS_B_SEL, 0, 0x85, 0));
    cpu.eip = 0x4100;
    cpu.deliver_exception(Exception::gp(0));
    assert!(!cpu.shutdown);
    assert_eq!(cpu.tr.selector, TSS_B_SEL);
    assert_eq!(cpu.eip, 0x6000);
    // Error code 0 on the double-fault task's stack; back link to the faulting task.
    assert_eq!(cpu.regs[ESP], STACK_B_TOP - 4);
    assert_eq!(get32(&cpu, STACK_B_TOP - 4), 0);
    assert_eq!(get16(&cpu, TSS_B), TSS_A_SEL);
    assert_eq!(get32(&cpu, TSS_A + 0x20), 0x4100);
}

#[test]
fn page_fault_during_page_fault_is_double_fault() {
    let mut cpu = machine();
    set_idt(&mut cpu, exception::PF, gate(CODE0, 0x6000, 0x0E, 0));
    set_idt(&mut cpu, exception::DF, gate(CODE0, 0x6400, 0x8E, 0));
    // #PF with a not-present gate -> #NP: #PF then contributory is #DF.
    cpu.deliver_exception(Exception::with_code(exception::PF, 2));
    assert_eq!(cpu.eip, 0x6400);
    assert_eq!(get32(&cpu, cpu.regs[ESP]), 0);
    // A benign exception whose delivery faults is delivered as that fault.
    let mut cpu = machine();
    set_idt(&mut cpu, exception::UD, gate(CODE0, 0x6000, 0x0E, 0));
    set_idt(&mut cpu, exception::NP, gate(CODE0, 0x6500, 0x8E, 0));
    cpu.deliver_exception(Exception::ud());
    assert_eq!(cpu.eip, 0x6500);
    assert_eq!(get32(&cpu, cpu.regs[ESP]), exception::UD as u32 * 8 + 3);
}

#[test]
fn triple_fault_shuts_down() {
    let mut cpu = machine();
    cpu.idtr.limit = 0;
    cpu.deliver_exception(Exception::gp(0));
    assert!(cpu.shutdown);
    // Through the run loop: HLT at CPL 3 faults, nothing can be delivered.
    let mut cpu = machine();
    cpu.idtr.limit = 0;
    cpu.mem.load(0x7000, &[0xF4]);
    to_ring3(&mut cpu);
    cpu.eip = 0x7000;
    assert_eq!(cpu.run(100), RunExit::Shutdown);
}

// ---- Guest code ----

#[test]
fn hlt_at_ring3_faults_into_ring0_handler() {
    let mut cpu = machine();
    set_idt(&mut cpu, exception::GP, gate(CODE0, 0x6000, 0x8E, 0));
    cpu.mem.load(0x6000, &[0xF4]);
    cpu.mem.load(0x7000, &[0xF4]);
    to_ring3(&mut cpu);
    cpu.eip = 0x7000;
    assert_eq!(cpu.run(100), RunExit::Halted);
    assert_eq!(cpu.cpl, 0);
    assert_eq!(cpu.eip, 0x6001);
    let sp = STACK0_TOP - 24;
    assert_eq!(cpu.regs[ESP], sp);
    assert_eq!(get32(&cpu, sp), 0); // error code
    assert_eq!(get32(&cpu, sp + 4), 0x7000); // faulting HLT
    assert_eq!(get32(&cpu, sp + 8), CODE3 as u32);
    assert_eq!(get32(&cpu, sp + 20), DATA3 as u32);
}

// ---- I/O permission ----

#[test]
fn io_bitmap() {
    let mut cpu = machine();
    cpu.check_io_permission(0x60, 1).unwrap(); // CPL 0 <= IOPL 0
    to_ring3(&mut cpu);
    assert_eq!(cpu.check_io_permission(0x60, 1), Err(Exception::gp(0)));
    assert_eq!(cpu.check_io_permission(0x67, 1), Err(Exception::gp(0)));
    cpu.check_io_permission(0x68, 4).unwrap();
    // A word access crossing into a denied byte.
    assert_eq!(cpu.check_io_permission(0x5F, 2), Err(Exception::gp(0)));
    cpu.check_io_permission(0x3F8, 1).unwrap();
    assert_eq!(cpu.check_io_permission(0x3F8, 2), Err(Exception::gp(0)));
    // Ports whose bit lies beyond the TSS limit are denied.
    assert_eq!(cpu.check_io_permission(0xFFFF, 1), Err(Exception::gp(0)));
    // IOPL 3 allows everything.
    cpu.flags.set_word(flags::IOPL | flags::FIXED1);
    cpu.check_io_permission(0x60, 1).unwrap();
}

#[test]
fn inner_stack_overflow_is_ss_fault_with_no_state_change() {
    let mut cpu = machine();
    set_idt(&mut cpu, 0x20, gate(CODE0, 0x6000, 0x8E, 0));
    // Ring-0 stack segment with limit 0x0F: a 20-byte frame does not fit under ESP 0x10.
    put64(&mut cpu, GDT + 0x48, seg(0, 0xF, 0x92, 0x4));
    put16(&mut cpu, TSS_A + 8, DATA_ABSENT);
    put32(&mut cpu, TSS_A + 4, 0x10);
    to_ring3(&mut cpu);
    cpu.eip = 0x1000;
    assert_eq!(
        cpu.interrupt(0x20, IntKind::External, None),
        Err(Exception::ss(0x48 | 1))
    );
    assert_eq!((cpu.cpl, cpu.eip, cpu.regs[ESP]), (3, 0x1000, STACK3_TOP));
    assert_eq!(sel(&cpu, Segment::SS), DATA3);
    // Not present: #SS too; a null SS0: #TS(EXT).
    put64(&mut cpu, GDT + 0x48, seg(0, 0xFFFF, 0x12, 0x4));
    assert_eq!(
        cpu.interrupt(0x20, IntKind::External, None),
        Err(Exception::ss(0x48 | 1))
    );
    put16(&mut cpu, TSS_A + 8, 0);
    assert_eq!(
        cpu.interrupt(0x20, IntKind::External, None),
        Err(Exception::ts(1))
    );
}

#[test]
fn software_interrupt_through_task_gate_and_tss_debug_trap() {
    let mut cpu = machine();
    set_idt(&mut cpu, 0x50, gate(TSS_B_SEL, 0, 0xE5, 0));
    set_idt(&mut cpu, exception::DB, gate(CODE0, 0x6600, 0x8E, 0));
    put16(&mut cpu, TSS_B + 0x64, 1);
    cpu.eip = 0x4100;
    cpu.interrupt(0x50, IntKind::Software, None).unwrap();
    assert_eq!(cpu.tr.selector, TSS_B_SEL);
    // The T bit raised #DB in the new task before its first instruction.
    assert_eq!(cpu.eip, 0x6600);
    assert_eq!(get32(&cpu, cpu.regs[ESP]), 0x6000);
    // The new task is nested (NT in the EFLAGS image the #DB handler got).
    assert_ne!(get32(&cpu, cpu.regs[ESP] + 8) & flags::NT, 0);
    assert_ne!(cpu.dr[6] & (1 << 15), 0);
}

#[test]
fn io_permission_with_16bit_tss_is_denied() {
    let mut cpu = machine();
    cpu.load_task_register(TSS_16_SEL).unwrap();
    to_ring3(&mut cpu);
    assert_eq!(cpu.check_io_permission(0x70, 1), Err(Exception::gp(0)));
}

#[test]
fn iret16_to_outer_level() {
    let mut cpu = machine();
    let sp = STACK0_TOP - 10;
    let frame: [u16; 5] = [0x0123, CODE3, 0x0202, 0x7000, DATA3];
    for (i, v) in frame.iter().enumerate() {
        put16(&mut cpu, sp + 2 * i as u32, *v);
    }
    cpu.regs[ESP] = sp;
    cpu.iret_protected(false).unwrap();
    assert_eq!(cpu.cpl, 3);
    assert_eq!((cpu.eip, cpu.regs[ESP]), (0x123, 0x7000));
    assert!(cpu.flags.sys(flags::IF));
    // DS held ring-0 data: nulled.
    assert_eq!(sel(&cpu, Segment::DS), 0);
}

#[test]
fn ltr_on_absent_tss_is_np() {
    let mut cpu = machine();
    put64(&mut cpu, GDT + 0x30, seg(TSS_B, 0x67, 0x09, 0));
    assert_eq!(cpu.load_task_register(TSS_B_SEL), Err(Exception::np(0x30)));
}
