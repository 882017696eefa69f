//! The machine's event counters as one table: the CPU's (crate::cpu::counters), the TLB's,
//! the interrupt lines' and every device's port and MMIO accesses, for `--counters`, the
//! page's inspector and the automation API.

use super::Machine;
use crate::cpu::counters::{
    Counters, INSN_KINDS, INSN_NAMES, MODE_SWITCH_KINDS, MODE_SWITCH_NAMES, SENSITIVE,
};
use crate::cpu::exception;
use serde::Serialize;
use std::fmt::Write as _;

/// A group of counters with named columns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CounterGroup {
    pub title: &'static str,
    pub columns: Vec<&'static str>,
    pub rows: Vec<CounterRow>,
}

/// One counted thing and its values, one per column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CounterRow {
    pub name: String,
    pub values: Vec<u64>,
}

/// Every counter of the machine since they were last reset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CounterTable {
    /// Instructions retired since the counters were reset.
    pub instructions: u64,
    pub groups: Vec<CounterGroup>,
}

/// Group titles, for lookups.
pub const SENSITIVE_GROUP: &str = "sensitive unprivileged instructions";
pub const PRIVILEGED_GROUP: &str = "privileged and intercepted instructions";
pub const EXCEPTIONS_GROUP: &str = "exceptions";
pub const INTERRUPTS_GROUP: &str = "interrupts";
pub const MEMORY_GROUP: &str = "memory management";
pub const MODES_GROUP: &str = "modes and tasks";
pub const CODE_GROUP: &str = "decoded and compiled code";
pub const PORTS_GROUP: &str = "port I/O per device";
pub const MMIO_GROUP: &str = "MMIO per device";

/// Exception mnemonics by vector.
const EXCEPTION_NAMES: [&str; 20] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "(reserved)",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD error",
];

/// What each ISA IRQ line serves on this board.
const IRQ_NAMES: [&str; 16] = [
    "timer (PIT)",
    "keyboard",
    "cascade",
    "COM2",
    "COM1",
    "(unused)",
    "floppy",
    "(unused)",
    "RTC",
    "(unused)",
    "(unused)",
    "(unused)",
    "mouse",
    "x87 FERR#",
    "IDE primary",
    "IDE secondary",
];

impl CounterTable {
    /// The group titled `title`.
    pub fn group(&self, title: &str) -> Option<&CounterGroup> {
        self.groups.iter().find(|g| g.title == title)
    }

    /// The values of row `name` in group `title`.
    pub fn row(&self, title: &str, name: &str) -> Option<&[u64]> {
        self.group(title)?
            .rows
            .iter()
            .find(|r| r.name == name)
            .map(|r| &r.values[..])
    }

    /// The first value (the total) of row `name` in group `title`; 0 for a row the table
    /// leaves out because it is 0 (per-vector and per-line rows).
    pub fn total(&self, title: &str, name: &str) -> u64 {
        self.row(title, name)
            .and_then(|v| v.first().copied())
            .unwrap_or(0)
    }

    /// The table as aligned text, one group after another.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "counters: {} instructions retired\n",
            group_digits(self.instructions)
        );
        for g in &self.groups {
            let width = g
                .rows
                .iter()
                .map(|r| r.name.chars().count() + 2)
                .max()
                .unwrap_or(0)
                .max(g.title.len());
            let _ = write!(out, "\n{:<width$}", g.title);
            for c in &g.columns {
                let _ = write!(out, " {c:>14}");
            }
            out.push('\n');
            if g.rows.is_empty() {
                out.push_str("  (none)\n");
            }
            for r in &g.rows {
                let _ = write!(out, "  {:<w$}", r.name, w = width.saturating_sub(2));
                for v in &r.values {
                    let _ = write!(out, " {:>14}", group_digits(*v));
                }
                out.push('\n');
            }
        }
        out
    }
}

/// 1234567 as "1,234,567".
pub fn group_digits(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn row(name: impl Into<String>, values: Vec<u64>) -> CounterRow {
    CounterRow {
        name: name.into(),
        values,
    }
}

/// Instruction rows `range` of [`Counters::insn`]: total, at CPL 0, at CPL 3.
fn insn_rows(c: &Counters, range: std::ops::Range<usize>) -> Vec<CounterRow> {
    range
        .map(|k| {
            let n = c.insn[k];
            row(INSN_NAMES[k], vec![n.iter().sum(), n[0], n[3]])
        })
        .collect()
}

impl Machine {
    /// Every counter since the last [`Machine::reset_counters`] (or power-on): the CPU's
    /// events, the TLB's, the interrupt lines', each device's accesses.
    pub fn counters(&self) -> CounterTable {
        let c = &*self.cpu.counters;
        let tlb = self.cpu.mem.tlb.counters;
        let board = self.board.borrow();
        let mut groups = Vec::new();

        let mut sensitive = insn_rows(c, 0..SENSITIVE);
        sensitive.push(row(
            "POPF that could not change IF (silently)",
            vec![c.popf_if_ignored],
        ));
        groups.push(CounterGroup {
            title: SENSITIVE_GROUP,
            columns: vec!["total", "at CPL 0", "at CPL 3"],
            rows: sensitive,
        });
        groups.push(CounterGroup {
            title: PRIVILEGED_GROUP,
            columns: vec!["total", "at CPL 0", "at CPL 3"],
            rows: insn_rows(c, SENSITIVE..INSN_KINDS),
        });

        let mut exceptions: Vec<CounterRow> = c
            .exceptions
            .iter()
            .enumerate()
            .filter(|(_, n)| n[0] != 0)
            .map(|(v, n)| {
                let name = EXCEPTION_NAMES.get(v).copied().unwrap_or("(reserved)");
                row(format!("{name} ({v})"), vec![n[0], n[1]])
            })
            .collect();
        if c.exceptions[usize::from(exception::PF)][0] != 0 {
            let pf = c.page_faults;
            for (name, n) in [
                ("page faults: page not present", pf.not_present),
                ("page faults: protection violation", pf.protection),
                ("page faults: on a write", pf.write),
                ("page faults: in user mode", pf.user),
            ] {
                exceptions.push(row(name, vec![n]));
            }
        }
        groups.push(CounterGroup {
            title: EXCEPTIONS_GROUP,
            columns: vec!["total", "at CPL 3"],
            rows: exceptions,
        });

        let mut interrupts = vec![row(
            "hardware interrupts taken by the CPU",
            vec![c.external],
        )];
        for (line, n) in board.irq_counts.iter().enumerate() {
            if *n != 0 {
                interrupts.push(row(format!("IRQ {line} {}", IRQ_NAMES[line]), vec![*n]));
            }
        }
        if board.spurious_irqs != 0 {
            interrupts.push(row("spurious (IRQ 7/15)", vec![board.spurious_irqs]));
        }
        for (v, n) in c.software.iter().enumerate() {
            if *n != 0 {
                interrupts.push(row(format!("software INT {v:#04x}"), vec![*n]));
            }
        }
        groups.push(CounterGroup {
            title: INTERRUPTS_GROUP,
            columns: vec!["total"],
            rows: interrupts,
        });

        groups.push(CounterGroup {
            title: MEMORY_GROUP,
            columns: vec!["total"],
            rows: vec![
                row("TLB misses (page walks)", vec![tlb.misses]),
                row("TLB flushes, whole", vec![tlb.full_flushes]),
                row("TLB flushes, non-global", vec![tlb.non_global_flushes]),
                row(
                    "INVLPG",
                    vec![c.insn_total(crate::cpu::counters::Insn::Invlpg)],
                ),
                row("CR3 loads (address-space switches)", vec![c.cr3_loads]),
            ],
        });

        let mut modes: Vec<CounterRow> = (0..MODE_SWITCH_KINDS)
            .map(|k| row(MODE_SWITCH_NAMES[k], vec![c.mode_switches[k]]))
            .collect();
        modes.push(row("hardware task switches", vec![c.task_switches]));
        groups.push(CounterGroup {
            title: MODES_GROUP,
            columns: vec!["total"],
            rows: modes,
        });

        let jit = self.cpu.jit_stats();
        let at = c.jit_at_reset;
        let instructions = self.cpu.instructions - c.instructions_at_reset;
        let compiled = jit
            .compiled_instructions
            .saturating_sub(at.compiled_instructions);
        groups.push(CounterGroup {
            title: CODE_GROUP,
            columns: vec!["total"],
            rows: vec![
                row("blocks decoded", vec![c.blocks_decoded]),
                row(
                    "of them an instruction across two pages",
                    vec![c.blocks_straddling],
                ),
                row(
                    "block cache cleared (its arena was full)",
                    vec![c.block_cache_clears],
                ),
                row(
                    "blocks made stale by writes to their code page",
                    vec![self.cpu.mem.code_invalidations],
                ),
                row(
                    "regions compiled to wasm",
                    vec![jit.regions_compiled.saturating_sub(at.regions_compiled)],
                ),
                row("instructions run compiled", vec![compiled]),
                row(
                    "instructions run compiled, per mille",
                    vec![(compiled * 1000).checked_div(instructions).unwrap_or(0)],
                ),
            ],
        });

        for (title, bus) in [(PORTS_GROUP, &board.ports), (MMIO_GROUP, &board.memory)] {
            let rows = bus
                .access_counts()
                .into_iter()
                .filter(|(_, n)| n.reads + n.writes != 0)
                .map(|(name, n)| row(name, vec![n.reads + n.writes, n.reads, n.writes]))
                .collect();
            groups.push(CounterGroup {
                title,
                columns: vec!["accesses", "reads", "writes"],
                rows,
            });
        }
        CounterTable {
            instructions,
            groups,
        }
    }

    /// Zero every counter.
    pub fn reset_counters(&mut self) {
        *self.cpu.counters = Counters {
            instructions_at_reset: self.cpu.instructions,
            jit_at_reset: self.cpu.jit_stats(),
            ..Counters::default()
        };
        self.cpu.mem.tlb.counters = Default::default();
        self.cpu.mem.code_invalidations = 0;
        let mut board = self.board.borrow_mut();
        board.ports.reset_counts();
        board.memory.reset_counts();
        board.irq_counts = [0; 16];
        board.spurious_irqs = 0;
    }
}
