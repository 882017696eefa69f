//! `wasm86 sst DIR`: run hardware-recorded single-step CPU tests (the SingleStepTests format
//! described in shared/cpu-tests/README.md) and report what differs.
//!
//! The recordings come from an 80286; this CPU is a 386-P6. The documented differences are
//! applied as named rules, and every rule reports how many tests it changed from failing to
//! passing, so nothing is skipped silently.

use anyhow_lite::{Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use wasm86::cpu::flags::{AF, CF, OF, PF, SF, ZF};
use wasm86::cpu::{Cpu, RunExit, SegCache, Segment};

/// Small error helper so this file needs no extra crate.
mod anyhow_lite {
    pub type Result<T> = std::result::Result<T, String>;
    pub trait Context<T> {
        fn context(self, what: impl FnOnce() -> String) -> Result<T>;
    }
    impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
        fn context(self, what: impl FnOnce() -> String) -> Result<T> {
            self.map_err(|e| format!("{}: {e}", what()))
        }
    }
}

#[derive(Deserialize)]
struct TestCase {
    name: String,
    bytes: Vec<u8>,
    initial: State,
    #[serde(rename = "final")]
    final_state: State,
    exception: Option<ExceptionInfo>,
}

#[derive(Deserialize)]
struct State {
    regs: BTreeMap<String, u32>,
    ram: Vec<(u32, u8)>,
}

#[derive(Deserialize)]
struct ExceptionInfo {
    number: u8,
    flag_address: u32,
}

/// The register file in the order the tests name it.
const REG_NAMES: [&str; 14] = [
    "ax", "bx", "cx", "dx", "cs", "ss", "ds", "es", "sp", "bp", "si", "di", "ip", "flags",
];

/// A 286 in real mode keeps FLAGS bits 12-15 clear; a 386 lets POPF/IRET set IOPL and NT.
const RULE_FLAGS_HIGH: &str = "flags-bits-12-15";
/// Flags the SDM documents as undefined after this instruction.
const RULE_UNDEFINED_FLAGS: &str = "undefined-flags";
/// A 286 faults (#UD) past 10 bytes of prefixes and opcode; a 386 allows 15.
const RULE_LENGTH_LIMIT: &str = "instruction-length-limit";
/// A 286 accepts LOCK on any instruction; a 386 and later raise #UD when LOCK precedes an
/// instruction that is not a read-modify-write of memory (Intel SDM Vol. 2, LOCK).
const RULE_LOCK_UD: &str = "lock-prefix-undefined-opcode";
/// In real mode a 286 raises #GP(13) for a stack-segment overrun; a 386 raises #SS(12).
const RULE_STACK_FAULT: &str = "real-mode-stack-fault-is-ss";
/// A 286 steps SI/DI/CX before a string access overruns its segment; a 386 restarts cleanly.
const RULE_STRING_RESTART: &str = "string-fault-restartable";
/// The 286 has no FS and GS: MOV Sreg naming them is #UD there.
const RULE_FS_GS: &str = "no-fs-gs-on-286";
const RULES: [&str; 7] = [
    RULE_FLAGS_HIGH,
    RULE_UNDEFINED_FLAGS,
    RULE_LENGTH_LIMIT,
    RULE_LOCK_UD,
    RULE_STACK_FAULT,
    RULE_STRING_RESTART,
    RULE_FS_GS,
];

/// MOVS, CMPS, STOS, LODS, SCAS, INS, OUTS.
fn is_string_op(op: u8) -> bool {
    matches!(op, 0x6C..=0x6F | 0xA4..=0xA7 | 0xAA..=0xAF)
}

/// The SI, DI and CX a 386 would show for a string fault the 286 recorded: one element back
/// on the registers the instruction steps, and CX higher under REP.
fn string_restart_values(t: &TestCase, op: u8) -> BTreeMap<&'static str, Vec<u32>> {
    let fin = |n: &str| {
        t.final_state
            .regs
            .get(n)
            .or_else(|| t.initial.regs.get(n))
            .copied()
            .unwrap_or(0)
    };
    let size = if op & 1 == 0 { 1 } else { 2 };
    let down = t.initial.regs.get("flags").copied().unwrap_or(0) & 0x400 != 0;
    let back = |v: u32| {
        if down {
            v.wrapping_add(size) & 0xFFFF
        } else {
            v.wrapping_sub(size) & 0xFFFF
        }
    };
    let uses_si = matches!(op, 0x6E | 0x6F | 0xA4..=0xA7 | 0xAC | 0xAD);
    let uses_di = matches!(op, 0x6C | 0x6D | 0xA4..=0xA7 | 0xAA | 0xAB | 0xAE | 0xAF);
    let mut alt = BTreeMap::new();
    if uses_si {
        alt.insert("si", vec![back(fin("si"))]);
    }
    if uses_di {
        alt.insert("di", vec![back(fin("di"))]);
    }
    let p = prefix_count(&t.bytes);
    if t.bytes[..p].iter().any(|b| matches!(b, 0xF2 | 0xF3)) {
        // Under REP the 286 has also counted the faulting element, sometimes twice for a
        // word that straddles the segment end.
        let cx = fin("cx");
        alt.insert(
            "cx",
            vec![cx.wrapping_add(1) & 0xFFFF, cx.wrapping_add(2) & 0xFFFF],
        );
    }
    alt
}

/// Whether the SDM allows LOCK on this instruction (one-byte opcodes of the 286 suite): a
/// read-modify-write with a memory destination.
fn lock_is_legal(bytes: &[u8]) -> bool {
    let p = prefix_count(bytes);
    let (Some(&op), Some(&modrm)) = (bytes.get(p), bytes.get(p + 1)) else {
        return false;
    };
    let memory = modrm >> 6 != 3;
    let reg = (modrm >> 3) & 7;
    memory
        && match op {
            // ADD, OR, ADC, SBB, AND, SUB, XOR with a memory destination (not CMP).
            0x00 | 0x01 | 0x08 | 0x09 | 0x10 | 0x11 | 0x18 | 0x19 | 0x20 | 0x21 | 0x28 | 0x29
            | 0x30 | 0x31 => true,
            0x80..=0x83 => reg != 7,
            0x86 | 0x87 => true,
            0xF6 | 0xF7 => reg == 2 || reg == 3,
            0xFE => reg <= 1,
            0xFF => reg <= 1,
            _ => false,
        }
}

/// Options of the `sst` subcommand.
pub struct SstOptions {
    pub dir: PathBuf,
    /// Only files whose name starts with this.
    pub filter: Option<String>,
    /// Print every failing test, not only the first per file.
    pub verbose: bool,
}

/// Flags undefined (per the SDM) after the instruction, given the opcode form and the count
/// operand of shifts.
fn undefined_flags(form: &str, t: &TestCase) -> u32 {
    let base = form.split('.').next().unwrap_or("");
    let reg = form.split('.').nth(1).and_then(|r| r.parse::<u8>().ok());
    let all = CF | PF | AF | ZF | SF | OF;
    match (base, reg) {
        // MUL/IMUL: only CF and OF are defined.
        ("F6" | "F7", Some(4 | 5)) | ("69" | "6B", _) => SF | ZF | AF | PF,
        // DIV/IDIV: all six undefined.
        ("F6" | "F7", Some(6 | 7)) => all,
        // Shifts and rotates: AF undefined for nonzero counts; OF undefined unless the count
        // is 1; shifts by at least the operand width leave CF undefined.
        ("C0" | "C1" | "D0" | "D1" | "D2" | "D3", Some(r)) => {
            let width = if matches!(base, "C0" | "D0" | "D2") {
                8
            } else {
                16
            };
            let count = shift_count(base, t) & 31;
            if count == 0 {
                0
            } else {
                let mut u = if r >= 4 { AF } else { 0 };
                if count != 1 {
                    u |= OF;
                }
                if r >= 4 && count >= width {
                    u |= CF;
                }
                u
            }
        }
        // AAA/AAS: OF SF ZF PF undefined. AAM/AAD: OF AF CF. DAA/DAS: OF.
        ("37" | "3F", _) => OF | SF | ZF | PF,
        ("D4" | "D5", _) => OF | AF | CF,
        ("27" | "2F", _) => OF,
        _ => 0,
    }
}

/// The count operand of a shift or rotate test.
fn shift_count(base: &str, t: &TestCase) -> u32 {
    match base {
        "D0" | "D1" => 1,
        "D2" | "D3" => t.initial.regs.get("cx").copied().unwrap_or(0) & 0xFF,
        // C0/C1: the immediate is the last byte before the HLT.
        _ => {
            let n = t.bytes.len();
            if n >= 2 {
                t.bytes[n - 2] as u32
            } else {
                0
            }
        }
    }
}

/// Prefix bytes of the instruction.
fn prefix_count(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take_while(|b| {
            matches!(
                b,
                0x26 | 0x2E | 0x36 | 0x3E | 0xF0 | 0xF2 | 0xF3 | 0x64 | 0x65 | 0x66 | 0x67
            )
        })
        .count()
}

/// Whether a LOCK prefix precedes the opcode.
fn bytes_have_lock(bytes: &[u8]) -> bool {
    bytes[..prefix_count(bytes)].contains(&0xF0)
}

/// Set up the CPU for one test.
fn load(cpu: &mut Cpu, t: &TestCase) {
    cpu.reset();
    let r = |n: &str| t.initial.regs.get(n).copied().unwrap_or(0);
    cpu.regs[0] = r("ax");
    cpu.regs[1] = r("cx");
    cpu.regs[2] = r("dx");
    cpu.regs[3] = r("bx");
    cpu.regs[4] = r("sp");
    cpu.regs[5] = r("bp");
    cpu.regs[6] = r("si");
    cpu.regs[7] = r("di");
    for (seg, name) in [
        (Segment::ES, "es"),
        (Segment::CS, "cs"),
        (Segment::SS, "ss"),
        (Segment::DS, "ds"),
    ] {
        cpu.segs[seg as usize] = SegCache::real(r(name) as u16);
    }
    cpu.eip = r("ip");
    cpu.flags.set_word(r("flags"));
    for &(addr, byte) in &t.initial.ram {
        cpu.mem.load(addr, &[byte]);
    }
}

/// The register values the CPU holds, in REG_NAMES order.
fn snapshot(cpu: &Cpu) -> [u32; 14] {
    [
        cpu.regs[0] & 0xFFFF,
        cpu.regs[3] & 0xFFFF,
        cpu.regs[1] & 0xFFFF,
        cpu.regs[2] & 0xFFFF,
        cpu.segs[Segment::CS as usize].selector as u32,
        cpu.segs[Segment::SS as usize].selector as u32,
        cpu.segs[Segment::DS as usize].selector as u32,
        cpu.segs[Segment::ES as usize].selector as u32,
        cpu.regs[4] & 0xFFFF,
        cpu.regs[5] & 0xFFFF,
        cpu.regs[6] & 0xFFFF,
        cpu.regs[7] & 0xFFFF,
        cpu.eip & 0xFFFF,
        cpu.flags.word() & 0xFFFF,
    ]
}

/// What a comparison tolerates.
struct Tolerance<'a> {
    /// FLAGS bits compared (in the register and in FLAGS images pushed on the stack).
    flag_mask: u32,
    /// Registers for which other expected values are also accepted.
    alternatives: &'a BTreeMap<&'static str, Vec<u32>>,
}

/// Where the instruction pushed a FLAGS image, if it did: (low byte, high byte) physical
/// addresses. An exception, INT n/INT3/INTO and PUSHF push it at SS:SP-2.
fn pushed_flags_bytes(t: &TestCase) -> Vec<u32> {
    let op = t.bytes.get(prefix_count(&t.bytes)).copied().unwrap_or(0);
    if t.exception.is_none() && !matches!(op, 0x9C | 0xCC | 0xCD | 0xCE) {
        return Vec::new();
    }
    let r = |n: &str| t.initial.regs.get(n).copied().unwrap_or(0);
    let ss_base = r("ss") << 4;
    let sp = r("sp");
    let mut at = vec![
        ss_base + (sp.wrapping_sub(2) & 0xFFFF),
        ss_base + (sp.wrapping_sub(1) & 0xFFFF),
    ];
    // The recording's own idea of where the image is (it is rounded down for an odd SP).
    if let Some(x) = &t.exception {
        at.extend([x.flag_address, x.flag_address + 1]);
    }
    at
}

/// Compare the CPU with the expected final state under `tol`.
/// Returns a description of the first differences, or None if equal.
fn compare(cpu: &mut Cpu, t: &TestCase, tol: &Tolerance) -> Option<String> {
    let flag_mask = tol.flag_mask;
    let got = snapshot(cpu);
    let mut diff = String::new();
    for (k, name) in REG_NAMES.iter().enumerate() {
        let expected = t
            .final_state
            .regs
            .get(*name)
            .or_else(|| t.initial.regs.get(*name))
            .copied()
            .unwrap_or(0);
        let (e, g) = if *name == "flags" {
            (expected & flag_mask, got[k] & flag_mask)
        } else {
            (expected, got[k])
        };
        if e != g
            && !tol
                .alternatives
                .get(name)
                .is_some_and(|alt| alt.contains(&g))
        {
            let _ = write!(diff, "{name}: expected {e:#06x} got {g:#06x}; ");
        }
    }
    // FLAGS images pushed on the stack are compared under the same mask.
    let pushed = pushed_flags_bytes(t);
    let mut expected_ram: BTreeMap<u32, u8> = t.initial.ram.iter().copied().collect();
    for &(a, b) in &t.final_state.ram {
        expected_ram.insert(a, b);
    }
    let mut bus = wasm86::bus::EmptyBus;
    for (&addr, &byte) in &expected_ram {
        let mut got = cpu.mem.read_phys(&mut bus, addr, 1) as u8;
        let mut want = byte;
        if let Some(k) = pushed.iter().position(|&a| a == addr) {
            // Even positions hold the low byte of an image, odd ones the high byte.
            let m = if k % 2 == 0 {
                flag_mask as u8
            } else {
                (flag_mask >> 8) as u8
            };
            got &= m;
            want &= m;
        }
        if got != want {
            let _ = write!(
                diff,
                "ram[{addr:#x}]: expected {want:#04x} got {got:#04x}; "
            );
        }
    }
    if cpu.shutdown {
        diff.push_str("CPU shut down; ");
    }
    if diff.is_empty() {
        None
    } else {
        Some(diff)
    }
}

/// Execute until HLT. A test retires a handful of instructions (a REP string instruction may
/// restart itself many times); a CPU that runs away is stopped and the test fails.
fn execute(cpu: &mut Cpu) {
    let _: RunExit = cpu.run(100_000);
}

fn read_tests(path: &Path) -> Result<Vec<TestCase>> {
    let file = std::fs::File::open(path).context(|| format!("cannot open {}", path.display()))?;
    let mut json = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut json)
        .context(|| format!("{} is not a gzip'd text file", path.display()))?;
    serde_json::from_str(&json)
        .context(|| format!("{} is not in the single-step test format", path.display()))
}

/// Run every `*.json.gz` in the directory; returns (passed, failed).
pub fn run(opts: &SstOptions) -> Result<(u64, u64)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&opts.dir)
        .context(|| format!("cannot read test directory {}", opts.dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".json.gz"))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            opts.filter
                .as_ref()
                .is_none_or(|f| name.starts_with(f.as_str()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no *.json.gz test files in {}", opts.dir.display()));
    }
    let mut cpu = Cpu::with_ram(2 << 20);
    let (mut passed, mut failed) = (0u64, 0u64);
    let mut excluded: BTreeMap<&str, u64> = RULES.iter().map(|r| (*r, 0)).collect();
    for path in &files {
        let fname = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let form = fname.trim_end_matches(".json.gz").to_string();
        let tests = read_tests(path)?;
        let mut file_failed = 0u64;
        let mut first_failure: Option<String> = None;
        for t in &tests {
            // Over-long instructions: the 286 faults (#UD or #GP) past 10 bytes, a 386 executes
            // them.
            let len_without_hlt = t.bytes.len().saturating_sub(1);
            if t.exception
                .as_ref()
                .is_some_and(|x| x.number == 6 || x.number == 13)
                && len_without_hlt > 10
                && prefix_count(&t.bytes) > 0
            {
                *excluded.get_mut(RULE_LENGTH_LIMIT).unwrap() += 1;
                continue;
            }
            let illegal_lock = bytes_have_lock(&t.bytes) && !lock_is_legal(&t.bytes);
            let op = t.bytes.get(prefix_count(&t.bytes)).copied().unwrap_or(0);
            let modrm_reg = t
                .bytes
                .get(prefix_count(&t.bytes) + 1)
                .map(|m| (m >> 3) & 7);
            load(&mut cpu, t);
            execute(&mut cpu);
            let undefined = undefined_flags(&form, t);
            let none = BTreeMap::new();
            let tol = |flag_mask| Tolerance {
                flag_mask,
                alternatives: &none,
            };
            let mut verdict = None;
            if let Some(d) = compare(&mut cpu, t, &tol(0xFFFF)) {
                verdict = Some(d);
                for (rule, mask) in [
                    (RULE_FLAGS_HIGH, 0x0FFF),
                    (RULE_UNDEFINED_FLAGS, 0x0FFF & !undefined),
                ] {
                    if compare(&mut cpu, t, &tol(mask)).is_none() {
                        *excluded.get_mut(rule).unwrap() += 1;
                        verdict = None;
                        break;
                    }
                }
            }
            let relaxed = tol(0x0FFF & !undefined);
            if verdict.is_some() && t.exception.as_ref().is_some_and(|x| x.number == 13) {
                // Real mode: a 286 raises #GP(13) for a stack-segment overrun, a 386 #SS(12).
                // Run again with vector 12 sharing vector 13's handler: everything else must match.
                load(&mut cpu, t);
                let gp_vector = [
                    cpu.mem.ram[13 * 4],
                    cpu.mem.ram[13 * 4 + 1],
                    cpu.mem.ram[13 * 4 + 2],
                    cpu.mem.ram[13 * 4 + 3],
                ];
                cpu.mem.load(12 * 4, &gp_vector);
                execute(&mut cpu);
                let ivt12_untouched = t.initial.ram.iter().all(|&(a, _)| !(48..52).contains(&a));
                if ivt12_untouched && compare(&mut cpu, t, &relaxed).is_none() {
                    *excluded.get_mut(RULE_STACK_FAULT).unwrap() += 1;
                    verdict = None;
                } else {
                    load(&mut cpu, t);
                    execute(&mut cpu);
                }
            }
            if verdict.is_some()
                && t.exception.as_ref().is_some_and(|x| x.number == 13)
                && is_string_op(op)
            {
                // A 286 has already stepped SI/DI (and CX) when a string access overruns the
                // segment; a 386 restarts the instruction, so they hold the values before it.
                let alternatives = string_restart_values(t, op);
                let tol = Tolerance {
                    flag_mask: relaxed.flag_mask,
                    alternatives: &alternatives,
                };
                if compare(&mut cpu, t, &tol).is_none() {
                    *excluded.get_mut(RULE_STRING_RESTART).unwrap() += 1;
                    verdict = None;
                }
            }
            if verdict.is_some() && matches!(op, 0x8C | 0x8E) && matches!(modrm_reg, Some(4 | 5)) {
                // MOV to or from FS/GS: #UD on a 286, which has no FS and GS.
                *excluded.get_mut(RULE_FS_GS).unwrap() += 1;
                verdict = None;
            }
            match verdict {
                None => passed += 1,
                Some(_) if illegal_lock => {
                    *excluded.get_mut(RULE_LOCK_UD).unwrap() += 1;
                }
                Some(d) => {
                    failed += 1;
                    file_failed += 1;
                    let line = format!("{} (bytes {:02x?}): {d}", t.name, t.bytes);
                    if opts.verbose {
                        println!("  {form}: {line}");
                    }
                    first_failure.get_or_insert(line);
                }
            }
        }
        if let Some(first) = first_failure {
            println!(
                "{form}: {file_failed} of {} failed; first: {first}",
                tests.len()
            );
        }
    }
    for (rule, n) in &excluded {
        println!("excluded by {rule}: {n}");
    }
    println!("{passed} passed, {failed} failed");
    Ok((passed, failed))
}
