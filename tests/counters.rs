//! The machine's event counters against guests whose counts are known: a ring-3 program that
//! runs each sensitive unprivileged instruction a known number of times, writes a port and
//! takes page faults (tests/data/counters/ring3.asm), and the bundled Linux.

use wasm86::machine::counters::{
    CODE_GROUP, EXCEPTIONS_GROUP, INTERRUPTS_GROUP, MEMORY_GROUP, MODES_GROUP, PORTS_GROUP,
    PRIVILEGED_GROUP, SENSITIVE_GROUP,
};
use wasm86::machine::{Machine, MachineConfig, Stop};

const RING3: &[u8] = include_bytes!("data/counters/ring3.bin");

/// The ring-3 guest at 0x1000, the CPU sent there from its reset vector, run until it first
/// reaches CPL 3 (the counters then reset), then until it halts.
fn ring3_guest() -> Machine {
    let mut m = Machine::new(MachineConfig {
        ram_bytes: 16 << 20,
        ..MachineConfig::default()
    });
    m.cpu.mem.load(0x1000, RING3);
    // At the reset vector (RAM here: a machine without firmware): JMP FAR 0000:1000.
    m.cpu.mem.load(0xF_FFF0, &[0xEA, 0x00, 0x10, 0x00, 0x00]);
    let mut steps = 0;
    while m.cpu.cpl != 3 {
        m.run(1);
        steps += 1;
        assert!(steps < 100_000, "the guest never reached ring 3");
    }
    m.reset_counters();
    for _ in 0..1000 {
        if let Stop::Idle { .. } = m.run(10_000) {
            if m.cpu.halted {
                break;
            }
        }
    }
    assert!(m.cpu.halted, "the guest did not halt");
    assert!(
        m.debug_output().is_empty(),
        "the guest took an unexpected exception"
    );
    m
}

#[test]
fn sensitive_instructions_at_cpl_3_are_counted_and_not_trapped() {
    let m = ring3_guest();
    let t = m.counters();
    // (name, total, at CPL 0, at CPL 3): what ring3.asm runs after its first instruction at
    // CPL 3 (DS and ES are reloaded there: MOV Sreg twice; PUSHF twice: once for POPF, once
    // for the IRET; the five page-fault handlers each end in an IRET at CPL 0).
    let expected: &[(&str, u64, u64, u64)] = &[
        ("PUSHF", 2, 0, 2),
        ("POPF", 1, 0, 1),
        ("IRET", 6, 5, 1),
        ("LAR", 1, 0, 1),
        ("LSL", 1, 0, 1),
        ("VERR", 1, 0, 1),
        ("VERW", 1, 0, 1),
        ("PUSH Sreg", 1, 0, 1),
        ("POP Sreg", 1, 0, 1),
        ("MOV r/m, Sreg", 1, 0, 1),
        ("MOV Sreg, r/m", 2, 0, 2),
        ("SGDT", 1, 0, 1),
        ("SIDT", 1, 0, 1),
        ("SLDT", 1, 0, 1),
        ("STR", 1, 0, 1),
        ("SMSW", 1, 0, 1),
        ("CALL far", 1, 0, 1),
        ("JMP far", 1, 0, 1),
        ("RET far", 1, 0, 1),
        ("INT n", 1, 0, 1),
    ];
    for &(name, total, cpl0, cpl3) in expected {
        assert_eq!(
            t.row(SENSITIVE_GROUP, name),
            Some(&[total, cpl0, cpl3][..]),
            "{name}\n{}",
            t.to_text()
        );
    }
    assert_eq!(
        t.total(SENSITIVE_GROUP, "POPF that could not change IF (silently)"),
        1
    );
    // None of them trapped: the only exceptions are the five page faults.
    let exceptions = t.group(EXCEPTIONS_GROUP).unwrap();
    assert_eq!(exceptions.rows[0].name, "#PF page fault (14)");
    assert_eq!(exceptions.rows[0].values, vec![5, 5]);
    for (cause, n) in [
        ("page faults: page not present", 5),
        ("page faults: protection violation", 0),
        ("page faults: on a write", 5),
        ("page faults: in user mode", 5),
    ] {
        assert_eq!(t.total(EXCEPTIONS_GROUP, cause), n, "{cause}");
    }
    assert_eq!(exceptions.rows.len(), 5, "{}", t.to_text());
}

#[test]
fn port_writes_privileged_instructions_and_ring_changes_are_counted() {
    let m = ring3_guest();
    let t = m.counters();
    assert_eq!(t.row(PRIVILEGED_GROUP, "OUT"), Some(&[7, 0, 7][..]));
    assert_eq!(t.row(PRIVILEGED_GROUP, "IN"), Some(&[0, 0, 0][..]));
    // The page-fault handler reads CR2 five times; INT 0x30's handler runs CLI and HLT.
    assert_eq!(t.row(PRIVILEGED_GROUP, "MOV r, CRn"), Some(&[5, 5, 0][..]));
    assert_eq!(t.row(PRIVILEGED_GROUP, "CLI"), Some(&[1, 1, 0][..]));
    assert_eq!(t.row(PRIVILEGED_GROUP, "HLT"), Some(&[1, 1, 0][..]));
    assert_eq!(t.row(PRIVILEGED_GROUP, "LGDT"), Some(&[0, 0, 0][..]));
    // Each OUT reached the POST code port, and nothing else was touched.
    let ports = t.group(PORTS_GROUP).unwrap();
    assert_eq!(ports.rows.len(), 1, "{}", t.to_text());
    assert_eq!(ports.rows[0].name, "POST code port");
    assert_eq!(ports.rows[0].values, vec![7, 0, 7]);
    assert_eq!(m.board().post.borrow().last, 1, "the last OUT wrote CL = 1");
    // Six entries to ring 0 (five faults, INT 0x30), five returns.
    assert_eq!(
        t.total(MODES_GROUP, "to a more privileged ring (CPL down)"),
        6
    );
    assert_eq!(
        t.total(MODES_GROUP, "to a less privileged ring (CPL up)"),
        5
    );
    assert_eq!(t.total(INTERRUPTS_GROUP, "software INT 0x30"), 1);
    assert_eq!(
        t.total(INTERRUPTS_GROUP, "hardware interrupts taken by the CPU"),
        0
    );
    // The five faulting writes each walked the page tables (and again after the fault); no
    // CR3 load after the reset.
    assert!(t.total(MEMORY_GROUP, "TLB misses (page walks)") >= 5);
    assert_eq!(
        t.total(MEMORY_GROUP, "CR3 loads (address-space switches)"),
        0
    );
    assert!(t.total(CODE_GROUP, "blocks decoded") > 0);
    assert!(
        t.instructions > 40 && t.instructions < 200,
        "{}",
        t.instructions
    );
}

#[test]
fn counters_reset_to_zero_and_the_setup_shows_before_a_reset() {
    let mut m = Machine::new(MachineConfig {
        ram_bytes: 16 << 20,
        ..MachineConfig::default()
    });
    m.cpu.mem.load(0x1000, RING3);
    m.cpu.mem.load(0xF_FFF0, &[0xEA, 0x00, 0x10, 0x00, 0x00]);
    while m.cpu.cpl != 3 {
        m.run(1);
    }
    // Ring 0's setup, counted from power-on.
    let t = m.counters();
    for (name, n) in [("LGDT", 1), ("LIDT", 1), ("LTR", 1), ("MOV CRn, r", 3)] {
        assert_eq!(t.total(PRIVILEGED_GROUP, name), n, "{name}");
    }
    assert_eq!(
        t.total(MODES_GROUP, "real to protected mode (CR0.PE set)"),
        1
    );
    assert_eq!(t.total(MODES_GROUP, "paging on (CR0.PG set)"), 1);
    assert_eq!(
        t.total(MEMORY_GROUP, "CR3 loads (address-space switches)"),
        1
    );
    assert_eq!(t.row(SENSITIVE_GROUP, "IRET"), Some(&[1, 1, 0][..]));
    m.reset_counters();
    let t = m.counters();
    assert_eq!(t.instructions, 0);
    for g in &t.groups {
        for r in &g.rows {
            assert!(
                r.values.iter().all(|&v| v == 0),
                "{} / {}: {:?}",
                g.title,
                r.name,
                r.values
            );
        }
    }
}
