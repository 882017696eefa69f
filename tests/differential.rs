//! Random differential testing against this machine's own CPU.
//!
//! Random sequences of user-mode integer and x87 instructions, with random registers, flags,
//! x87 state and data, run twice: on the host CPU, by a small static i386 Linux program
//! (`tests/host/diff_helper.c`, built here with `i686-linux-gnu-gcc`, which
//! `scripts/setup.sh` installs), and in wasm86, at CPL 3 under paging at the same linear
//! addresses. Both report how the sequence ended (the INT3 at its end, or a fault or trap on
//! the way: the signal and trap number, error code and CR2 on the host, the vector and error
//! code in wasm86), the registers, EFLAGS (all but RF), EIP, the x87 registers, status,
//! control and tag words, and the data pages. They must agree exactly, except for what the
//! SDM leaves undefined: the generator tracks, instruction by instruction, which arithmetic
//! flags and x87 condition codes are undefined (and never lets a later instruction read
//! them), and which registers hold an undefined result (BSF/BSR of a source that may be zero;
//! never read afterwards).
//!
//! What is generated: the integer ALU, shifts and rotates, SHLD/SHRD, MUL/IMUL/DIV/IDIV, BT,
//! BTS, BTR, BTC (memory bit strings with offsets anywhere in the register's range), BSF/BSR,
//! SETcc, CMOVcc, Jcc, JMP, JECXZ/JCXZ, LOOPcc (ECX or CX), LEA, MOVZX/MOVSX, XCHG, XADD,
//! CMPXCHG, CMPXCHG8B, BSWAP, CBW/CWDE/CWD/CDQ, CLC/STC/CMC/CLD/STD, LAHF/SAHF, PUSHF and
//! POPF (TF, AC, NT and ID included: a single-step trap, alignment checks), PUSH/POP of
//! registers, immediates and memory (an ESP-based POP destination too), PUSHA/POPA, the
//! string instructions with and without REP, XLAT, DAA/DAS/AAA/AAS/AAM/AAD, INTO, BOUND,
//! UD2, HLT and CLI (#GP), CALL rel/r/m, RET, RET imm16, JMP r/m (to later code, or outside
//! it: the fetch faults), functions (CALL, a body, RET), ENTER (any nesting level) and LEAVE;
//! the x87 loads, stores, arithmetic, compares, FCMOVcc, FCOMI, FPREM, FXTRACT, FSCALE,
//! constants, FNSTSW, FNSTCW, FLDCW, FNSTENV/FSTENV, FNSAVE/FSAVE, FLDENV, FRSTOR. Operands
//! take every 32-bit addressing form, and 16-bit ones (address-size prefix; the sums wrap at
//! 64 KiB), with segment overrides: CS, SS and DS are flat, ES is flat or the case's own
//! data segment, FS the case's own segment (a TLS descriptor on the host: any base, a limit
//! in pages or bytes, read-only or expand-down) or the null selector (#GP). LOCK goes on the
//! memory forms that take it (which then behave as without it), and rarely on register forms
//! and other instructions (#UD). The stack pointer starts anywhere in the data pages, near
//! their edges, or in the read-only page (pushes fault); EFLAGS.AC may be set from the start
//! (Linux runs user code with CR0.AM set: misaligned accesses raise #AC).
//!
//! `cargo test --release --test differential` runs the default number of cases (50,000, a
//! few seconds); the environment variables `WASM86_DIFF_SEED` (the seed; printed),
//! `WASM86_DIFF_CASES` (how many), `WASM86_DIFF_ONLY` (run only case N of the seed) and
//! `WASM86_DIFF_UNMASKED=1` (control words that unmask x87 exceptions; see
//! [`unmasked_x87_exceptions`]) change that; `WASM86_DIFF_DUMP=1` prints every case and how it
//! ended on the host. A mismatch prints the seed, the case number, the
//! disassembled sequence, the initial state, both final states, the fields that differ, and
//! the first instruction after which they differ (found by rerunning the case cut short).
//!
//! Masked besides what the SDM leaves undefined (each where it is decided, with the reason):
//! EFLAGS after a fault in the middle of a REP CMPS/SCAS (see `string`); the bytes of a split
//! 10-byte x87 store that faults (`InstrInfo::split_store`); the registers POPA has loaded
//! when it faults (`InstrInfo::fault_clobbers`); the I/D bit of a page fault's error code
//! (`differences`); RF. CR2 is compared only for page faults. The model-specific fields of a
//! stored x87 environment (FCS, FDS, FDP, FOP) are overwritten by the generated code itself
//! (see `x87_env`); FIP is compared. The split-lock penalty of this host's kernel makes locked
//! accesses that straddle a cache line rare (`split_line`).
//!
//! The transcendental x87 instructions (F2XM1, FYL2X, FYL2XP1, FPTAN, FPATAN, FSIN, FCOS,
//! FSINCOS) are approximations on both sides: they have a test of their own
//! (`transcendental_results_are_within_an_ulp_of_the_host`), one instruction per case, with
//! their results compared within an ulp, and are not in the random sequences, where a result
//! an ulp apart would spread.
//!
//! Not generated: GS overrides (the host's C library owns GS), loads of segment registers,
//! far transfers, INT n, port I/O, anything privileged but HLT and CLI, FXSAVE/FXRSTOR and
//! the SSE state.
// Native only: it runs host programs and the native engine (wasm-pack test builds every test).
#![cfg(not(target_arch = "wasm32"))]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
use wasm86::cpu::protected::{null_cache, Descriptor};
use wasm86::cpu::x87::float80::F80;
use wasm86::cpu::{Cpu, RunExit, SegCache, Segment, TableReg, CR0_ET, CR0_MP, CR0_NE, CR0_PE};
use wasm86::cpu::{CR0_AM, CR0_PG, CR0_WP, ESP};

// ---- The memory both sides share (keep in step with tests/host/diff_helper.c) ----

const PAGE: u32 = 4096;
/// The code page (read-only for the code in wasm86).
const CODE_BASE: u32 = 0x1000_0000;
/// The data pages: RW_PAGES writable ones, then one read-only page, with a page that is not
/// present on either side.
const DATA_BASE: u32 = 0x2000_0000;
const RW_PAGES: u32 = 3;
const RW_BYTES: u32 = RW_PAGES * PAGE;
const RO_PAGE: u32 = DATA_BASE + RW_BYTES;
/// The not-present guard pages (the nearest ones; on the host they extend 64 KiB below
/// DATA_BASE and up to DATA_BASE + 128 KiB, as far as a 16-bit offset from a segment based
/// near DATA_BASE or a RET imm16 from the data pages reaches; in wasm86 nothing else is
/// mapped there).
const GUARD_BELOW: u32 = DATA_BASE - PAGE;
const GUARD_ABOVE: u32 = RO_PAGE + PAGE;
/// The selector wasm86 gives the case's own segment (the host's TLS slot; not observable:
/// the code never reads a segment register).
const CASE_SEL: u16 = 0x6B;
/// What the read-only page is filled with (splitmix64 from this seed).
const RO_SEED: u64 = 0x5244_304e_4c59;
const MAGIC_CASE: u32 = 0x4553_4143;
const MAGIC_RESULT: u32 = 0x544c_5352;
/// The FSAVE image: control, status and tag words, the pointers (7 dwords), ST(0)..ST(7).
const FSAVE_BYTES: usize = 108;

/// Linux signals and the x86 trap numbers the host reports.
const SIGILL: u32 = 4;
const SIGTRAP: u32 = 5;
const SIGBUS: u32 = 7;
const SIGFPE: u32 = 8;
const SIGSEGV: u32 = 11;

// EFLAGS bits.
const CF: u32 = 1 << 0;
const TF: u32 = 1 << 8;
const NT: u32 = 1 << 14;
const RF: u32 = 1 << 16;
const AC: u32 = 1 << 18;
const ID: u32 = 1 << 21;
const PF: u32 = 1 << 2;
const AF: u32 = 1 << 4;
const ZF: u32 = 1 << 6;
const SF: u32 = 1 << 7;
const OF: u32 = 1 << 11;
const DF: u32 = 1 << 10;
const IF: u32 = 1 << 9;
const ARITH: u32 = CF | PF | AF | ZF | SF | OF;
/// The EFLAGS bits compared: all but RF, which this host sets in the image of a fault and
/// the kernel may change (wasm86's frames follow the SDM; the SDM leaves RF in a fault's image
/// to the processor: "the processor sets RF in the EFLAGS image on the stack" for faults,
/// which a debugger may then clear). IF and IOPL are what Linux gives user code (1 and 0) and
/// must stay so; TF, NT, AC and ID are the case's (POPF).
const COMPARED_FLAGS: u32 = !RF;

// x87 status word condition codes.
const C0: u16 = 1 << 8;
const C1: u16 = 1 << 9;
const C2: u16 = 1 << 10;
const C3: u16 = 1 << 14;
const CC: u16 = C0 | C1 | C2 | C3;

const EAX: u8 = 0;
const ECX: u8 = 1;
const EDX: u8 = 2;
const EBX: u8 = 3;
const EBP: u8 = 5;
const ESI: u8 = 6;
const EDI: u8 = 7;
const REG_ESP: u8 = 4;
const REG_NAMES: [&str; 8] = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];

// ---- Random numbers (splitmix64, the same generator the helper fills pages with) ----

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fill(bytes: &mut [u8], mut seed: u64) {
    for chunk in bytes.chunks_mut(8) {
        let v = splitmix(&mut seed).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        splitmix(&mut self.0)
    }
    fn u32(&mut self) -> u32 {
        self.next() as u32
    }
    fn below(&mut self, n: u32) -> u32 {
        (((self.next() >> 32) * n as u64) >> 32) as u32
    }
    fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u32) as usize]
    }
    /// An integer operand: edge values often, random bits otherwise.
    fn value(&mut self) -> u32 {
        match self.below(10) {
            0 => self.pick(&[0, 1, 2, 0xFFFF_FFFF, 0x7FFF_FFFF, 0x8000_0000, 0x80, 0x7F]),
            1 => self.pick(&[0xFF, 0x100, 0xFFFF, 0x1_0000, 0x8000, 0x7FFF, 0xFFFF_FF80]),
            2 => self.below(40),
            3 => 1 << self.below(32),
            4 => (self.u32() & 0x0F0F_0F0F) | (0x3030_3030 * self.below(2)), // BCD-ish digits
            5 => 0u32.wrapping_sub(self.below(40)),
            _ => self.u32(),
        }
    }
}

// ---- A case and what running it produced ----

/// One test case: the code (ending in INT3), the initial registers (EAX..EDI), EFLAGS, x87
/// state and data, and what the generator knows about every instruction.
#[derive(Clone)]
struct Case {
    code: Vec<u8>,
    regs: [u32; 8],
    eflags: u32,
    fpu: [u8; FSAVE_BYTES],
    /// The case's own data segment, and which of FS (bit 0) and ES (bit 1) hold it;
    /// otherwise FS holds the null selector and ES the flat data segment.
    seg: CaseSeg,
    seg_use: u32,
    fill_seed: u64,
    /// Bytes written over the filled writable pages: (offset from DATA_BASE, bytes).
    patches: Vec<(u32, Vec<u8>)>,
    /// Each instruction's offset in the code and what is undefined when it starts; the last
    /// entry is the INT3.
    instrs: Vec<InstrInfo>,
}

#[derive(Clone, Debug)]
struct InstrInfo {
    offset: u32,
    before: Track,
    /// Bytes (linear address, length) this instruction stores in more than one part: on a
    /// page fault or a segment-limit fault in the middle this host has written the first
    /// part already (FSTP m80 and FBSTP store 8 bytes, then 2), wasm86 nothing. Restarting
    /// the instruction writes them all; the SDM does not say which bytes of a faulting
    /// store reach memory.
    split_store: Option<(u32, u32)>,
    /// Registers this instruction writes before it can fault (POPA: EDI, ESI ... as it pops
    /// them): if it faults, this host has some of them written already, wasm86 none. The
    /// SDM asks only that a faulting instruction can be restarted, which either allows.
    fault_clobbers: u8,
    /// Memory (linear address, length) whose bytes are undefined while the case stops at
    /// this instruction (before it runs): the model-specific fields of an x87 environment
    /// just stored, which the MOVs after FNSTENV/FNSAVE (this one among them) overwrite.
    undefined_mem: Vec<(u32, u32)>,
}

/// A data segment of the case's own: a TLS descriptor (set_thread_area) on the host: 32-bit,
/// DPL 3, present, accessed.
#[derive(Clone, Copy, Debug, Default)]
struct CaseSeg {
    base: u32,
    /// The descriptor's 20-bit limit field.
    limit: u32,
    pages: bool,
    read_only: bool,
    expand_down: bool,
}

impl CaseSeg {
    fn byte_limit(&self) -> u32 {
        if self.pages {
            self.limit << 12 | 0xFFF
        } else {
            self.limit
        }
    }

    /// Whether `len` bytes at offset `off` pass the limit and rights checks.
    fn allows(&self, off: u32, len: u32, write: bool) -> bool {
        let last = off as u64 + len as u64 - 1;
        let limit = self.byte_limit();
        let inside = if self.expand_down {
            off > limit && last <= u32::MAX as u64
        } else {
            last <= limit as u64
        };
        inside && !(write && self.read_only)
    }

    fn descriptor(&self) -> Descriptor {
        let access = 0xF1 | (!self.read_only as u8) << 1 | (self.expand_down as u8) << 2;
        Descriptor::segment(self.base, self.limit, access, 4 | (self.pages as u8) << 3)
    }
}

impl Case {
    fn encode(&self, out: &mut Vec<u8>) {
        let u32s = |out: &mut Vec<u8>, vs: &[u32]| {
            for v in vs {
                out.extend_from_slice(&v.to_le_bytes());
            }
        };
        u32s(out, &[MAGIC_CASE, self.code.len() as u32]);
        out.extend_from_slice(&self.code);
        u32s(out, &self.regs);
        u32s(out, &[self.eflags]);
        out.extend_from_slice(&self.fpu);
        let s = &self.seg;
        let flags = s.pages as u32 | (s.read_only as u32) << 1 | (s.expand_down as u32) << 2;
        u32s(out, &[self.seg_use, s.base, s.limit, flags]);
        out.extend_from_slice(&self.fill_seed.to_le_bytes());
        u32s(out, &[self.patches.len() as u32]);
        for (offset, bytes) in &self.patches {
            u32s(out, &[*offset, bytes.len() as u32]);
            out.extend_from_slice(bytes);
        }
    }

    /// The writable pages as the code finds them.
    fn initial_data(&self) -> Vec<u8> {
        let mut data = vec![0; RW_BYTES as usize];
        fill(&mut data, self.fill_seed);
        for (offset, bytes) in &self.patches {
            let at = *offset as usize;
            data[at..at + bytes.len()].copy_from_slice(bytes);
        }
        data
    }

    /// What is undefined where the code stopped: at EIP, or for a breakpoint (a trap) at the
    /// INT3 before it.
    fn track_at(&self, eip: u32, trapno: u32) -> Option<&Track> {
        let at = eip.wrapping_sub(CODE_BASE) - (trapno == 3) as u32;
        self.instrs
            .iter()
            .find(|i| i.offset == at)
            .map(|i| &i.before)
    }

    /// The case cut short before its instruction `k`: INT3s from there on (a jump over the
    /// cut lands on one of them).
    fn truncated(&self, k: usize) -> Case {
        let mut case = self.clone();
        let from = self.instrs[k].offset as usize;
        case.code[from..].fill(0xCC);
        case
    }
}

/// How a run ended and the state it left.
#[derive(Clone, PartialEq, Eq)]
struct Outcome {
    signal: u32,
    trapno: u32,
    error: u32,
    cr2: u32,
    regs: [u32; 8],
    eip: u32,
    eflags: u32,
    fpu: FpuState,
    /// The writable pages and the read-only page.
    data: Vec<u8>,
}

#[derive(Clone, PartialEq, Eq)]
struct FpuState {
    cw: u16,
    sw: u16,
    tags: u16,
    /// ST(0)..ST(7).
    st: [[u8; 10]; 8],
}

impl FpuState {
    fn from_fsave(image: &[u8]) -> FpuState {
        let word = |at: usize| u16::from_le_bytes([image[at], image[at + 1]]);
        let mut st = [[0; 10]; 8];
        for (i, s) in st.iter_mut().enumerate() {
            s.copy_from_slice(&image[28 + 10 * i..38 + 10 * i]);
        }
        FpuState {
            cw: word(0),
            sw: word(4),
            tags: word(8),
            st,
        }
    }
}

fn f80_text(b: &[u8; 10]) -> String {
    let se = u16::from_le_bytes([b[8], b[9]]);
    let mant = u64::from_le_bytes(b[..8].try_into().unwrap());
    format!("{se:04x}:{mant:016x}")
}

fn signal_for_vector(vector: u8) -> u32 {
    match vector {
        0 | 16 => SIGFPE,
        1 | 3 => SIGTRAP,
        6 => SIGILL,
        12 | 17 => SIGBUS,
        _ => SIGSEGV,
    }
}

// ---- The host side ----

const HELPER_SOURCE: &str = include_str!("host/diff_helper.c");

/// The helper binary, built into the cargo target directory when its source changed (the
/// file name carries a hash of the source). Built once per test process: the tests run on
/// several threads of one process, which would otherwise all build it under the same
/// temporary name.
fn helper() -> PathBuf {
    static HELPER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    HELPER.get_or_init(build_helper).clone()
}

fn build_helper() -> PathBuf {
    let hash = HELPER_SOURCE
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let exe = dir.join(format!("diff_helper-{hash:016x}"));
    if exe.exists() {
        return exe;
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/diff_helper.c");
    // Built under a temporary name and renamed, so that test processes building it at the
    // same time never run a half-written file.
    let tmp = dir.join(format!("diff_helper-{hash:016x}.{}", std::process::id()));
    let status = Command::new("i686-linux-gnu-gcc")
        .args(["-O2", "-static", "-Wall", "-o"])
        .arg(&tmp)
        .arg(&source)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run i686-linux-gnu-gcc ({e}): the differential test builds a static \
                 i386 helper with it; scripts/setup.sh installs it (apt-get install \
                 gcc-i686-linux-gnu)"
            )
        });
    assert!(
        status.success(),
        "i686-linux-gnu-gcc failed to build {source:?}"
    );
    std::fs::rename(&tmp, &exe).expect("rename the built helper");
    exe
}

/// Run `cases` on the host CPU through the helper; returns one outcome per case.
fn run_on_host(cases: &[Case]) -> Vec<Outcome> {
    let exe = helper();
    let mut child = Command::new(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the static i386 helper {exe:?} ({e}): this host must run i386 \
                 Linux binaries (a 64-bit kernel with IA32 emulation)"
            )
        });
    let mut input = Vec::new();
    for c in cases {
        c.encode(&mut input);
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // An early exit of the helper shows up below as a short read.
        let _ = stdin.write_all(&input);
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    writer.join().unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the host helper {exe:?} failed ({status}); if it could not start, this host cannot \
         run i386 binaries"
    );
    let mut ro = vec![0; PAGE as usize];
    fill(&mut ro, RO_SEED);
    let mut at = 0;
    let word = |at: &mut usize| {
        let v = u32::from_le_bytes(out[*at..*at + 4].try_into().unwrap());
        *at += 4;
        v
    };
    let mut outcomes = Vec::with_capacity(cases.len());
    for c in cases {
        assert_eq!(word(&mut at), MAGIC_RESULT, "helper output out of step");
        let mut h = [0u32; 14];
        for v in &mut h {
            *v = word(&mut at);
        }
        let fpu = FpuState::from_fsave(&out[at..at + FSAVE_BYTES]);
        at += FSAVE_BYTES;
        let mut data = c.initial_data();
        let runs = word(&mut at);
        for _ in 0..runs {
            let offset = word(&mut at) as usize;
            let len = word(&mut at) as usize;
            data[offset..offset + len].copy_from_slice(&out[at..at + len]);
            at += len;
        }
        data.extend_from_slice(&ro);
        outcomes.push(Outcome {
            signal: h[0],
            trapno: h[1],
            error: h[2],
            cr2: h[3],
            regs: h[4..12].try_into().unwrap(),
            eip: h[12],
            eflags: h[13],
            fpu,
            data,
        });
    }
    assert_eq!(at, out.len(), "trailing helper output");
    outcomes
}

// ---- The wasm86 side ----

/// Physical layout of the wasm86 environment. The system structures are mapped at linear
/// KERNEL + physical address, supervisor-only, so that low linear addresses are as empty as
/// in the host process.
const KERNEL: u32 = 0xC000_0000;
const PAGE_DIR: u32 = 0x1000;
const PT_CODE: u32 = 0x2000;
const PT_DATA: u32 = 0x3000;
const PT_KERNEL: u32 = 0x4000;
const GDT: u32 = 0x5000;
const IDT: u32 = 0x6000;
const TSS: u32 = 0x7000;
/// A HLT for every vector at HANDLERS + vector.
const HANDLERS: u32 = 0x8000;
const KERNEL_STACK_TOP: u32 = 0xA000;
const CODE_PHYS: u32 = 0x10000;
const DATA_PHYS: u32 = 0x11000;
const RAM: usize = 0x20000;

const CODE0: u16 = 0x08;
const DATA0: u16 = 0x10;
const CODE3: u16 = 0x18 | 3;
const DATA3: u16 = 0x20 | 3;
const TSS_SEL: u16 = 0x28;

const PTE_P: u32 = 1;
const PTE_RW: u32 = 2;
const PTE_US: u32 = 4;

/// A reusable wasm86 CPU in the environment the cases run in: protected mode, paging, a
/// flat ring-3 code segment and data segments, an IDT whose every vector leads to a HLT of
/// its own at ring 0 (INT3 and INTO allowed from ring 3, as Linux sets them up).
struct Emulator {
    cpu: Cpu,
    code3: SegCache,
    data3: SegCache,
}

impl Emulator {
    fn new() -> Emulator {
        let mut cpu = Cpu::with_ram(RAM);
        let put = |cpu: &mut Cpu, addr: u32, v: u32| cpu.mem.load(addr, &v.to_le_bytes());
        put(
            &mut cpu,
            PAGE_DIR + 4 * (CODE_BASE >> 22),
            PT_CODE | PTE_P | PTE_RW | PTE_US,
        );
        put(
            &mut cpu,
            PAGE_DIR + 4 * (DATA_BASE >> 22),
            PT_DATA | PTE_P | PTE_RW | PTE_US,
        );
        put(
            &mut cpu,
            PAGE_DIR + 4 * (KERNEL >> 22),
            PT_KERNEL | PTE_P | PTE_RW,
        );
        put(
            &mut cpu,
            PT_CODE + 4 * ((CODE_BASE >> 12) & 0x3FF),
            CODE_PHYS | PTE_P | PTE_US,
        );
        for page in 0..RW_PAGES {
            let pte = (DATA_PHYS + page * PAGE) | PTE_P | PTE_RW | PTE_US;
            put(&mut cpu, PT_DATA + 4 * page, pte);
        }
        put(
            &mut cpu,
            PT_DATA + 4 * RW_PAGES,
            (DATA_PHYS + RW_BYTES) | PTE_P | PTE_US,
        );
        for page in 0..(RAM as u32 / PAGE) {
            put(
                &mut cpu,
                PT_KERNEL + 4 * page,
                (page * PAGE) | PTE_P | PTE_RW,
            );
        }
        let mut ro = vec![0; PAGE as usize];
        fill(&mut ro, RO_SEED);
        cpu.mem.load(DATA_PHYS + RW_BYTES, &ro);

        let entries = [
            (CODE0, Descriptor::segment(0, 0xF_FFFF, 0x9A, 0xC)),
            (DATA0, Descriptor::segment(0, 0xF_FFFF, 0x92, 0xC)),
            (CODE3, Descriptor::segment(0, 0xF_FFFF, 0xFA, 0xC)),
            (DATA3, Descriptor::segment(0, 0xF_FFFF, 0xF2, 0xC)),
            (TSS_SEL, Descriptor::segment(KERNEL + TSS, 0x67, 0x89, 0)),
        ];
        for (sel, d) in entries {
            let at = GDT + (sel & !7) as u32;
            put(&mut cpu, at, d.lo);
            put(&mut cpu, at + 4, d.hi);
        }
        cpu.gdtr = TableReg {
            base: KERNEL + GDT,
            limit: 6 * 8 - 1,
        };
        for v in 0..256u32 {
            let handler = KERNEL + HANDLERS + v;
            // INT3 and INTO are allowed at CPL 3 (Linux's IDT has them at DPL 3).
            let dpl = if v == 3 || v == 4 { 3 } else { 0 };
            let gate = Descriptor::interrupt_gate32(CODE0, handler, dpl);
            put(&mut cpu, IDT + v * 8, gate.lo);
            put(&mut cpu, IDT + v * 8 + 4, gate.hi);
        }
        cpu.idtr = TableReg {
            base: KERNEL + IDT,
            limit: 256 * 8 - 1,
        };
        cpu.mem.load(HANDLERS, &[0xF4; 256]);
        put(&mut cpu, TSS + 4, KERNEL + KERNEL_STACK_TOP);
        put(&mut cpu, TSS + 8, DATA0 as u32);
        cpu.write_cr3(PAGE_DIR);
        // As Linux runs user code: native x87 errors (NE), WAIT honours TS (MP), WP, and
        // alignment checks when user code sets EFLAGS.AC (AM).
        cpu.write_cr0(CR0_PE | CR0_PG | CR0_ET | CR0_NE | CR0_MP | CR0_WP | CR0_AM)
            .expect("paging turns on");
        cpu.load_task_register(TSS_SEL).expect("the TSS loads");
        let cache = |sel: u16| entries.iter().find(|e| e.0 == sel).unwrap().1.to_cache(sel);
        Emulator {
            code3: cache(CODE3),
            data3: cache(DATA3),
            cpu,
        }
    }

    fn word(&self, phys: u32) -> u32 {
        let a = phys as usize;
        u32::from_le_bytes(self.cpu.mem.ram[a..a + 4].try_into().unwrap())
    }

    fn run(&mut self, case: &Case) -> Result<Outcome, String> {
        let cpu = &mut self.cpu;
        let mut code = case.code.clone();
        code.resize(PAGE as usize, 0xCC);
        cpu.mem.load(CODE_PHYS, &code);
        cpu.mem.load(DATA_PHYS, &case.initial_data());
        cpu.segs[Segment::CS as usize] = self.code3;
        for s in [Segment::SS, Segment::DS, Segment::ES] {
            cpu.segs[s as usize] = self.data3;
        }
        for s in [Segment::FS, Segment::GS] {
            cpu.segs[s as usize] = null_cache(0);
        }
        let own = case.seg.descriptor().to_cache(CASE_SEL);
        if case.seg_use & 1 != 0 {
            cpu.segs[Segment::FS as usize] = own;
        }
        if case.seg_use & 2 != 0 {
            cpu.segs[Segment::ES as usize] = own;
        }
        cpu.set_cpl(3);
        cpu.regs[..8].copy_from_slice(&case.regs);
        cpu.eip = CODE_BASE;
        cpu.flags.set_word(case.eflags);
        // EFLAGS.AC decides whether the access fast path may be taken.
        cpu.update_fast_path_perms();
        cpu.halted = false;
        cpu.cr2 = 0;
        load_fpu(cpu, &case.fpu);

        let exit = cpu.run(1_000_000);
        if exit != RunExit::Halted {
            return Err(format!("wasm86 did not stop at a handler: {exit:?}"));
        }
        let vector = cpu.eip.wrapping_sub(KERNEL + HANDLERS + 1);
        if vector > 255 || cpu.cpl != 0 {
            return Err(format!("wasm86 halted at {:#x}, not in a handler", cpu.eip));
        }
        let vector = vector as u8;
        let mut frame = cpu.regs[ESP].wrapping_sub(KERNEL);
        let error = if wasm86::cpu::exception::has_error_code(vector) {
            frame += 4;
            self.word(frame - 4)
        } else {
            0
        };
        let cpu = &self.cpu;
        let mut regs: [u32; 8] = cpu.regs[..8].try_into().unwrap();
        regs[REG_ESP as usize] = self.word(frame + 12);
        let fpu = FpuState {
            cw: cpu.fpu.cw,
            sw: cpu.fpu.status_word(),
            tags: cpu.fpu.tag_word(),
            st: std::array::from_fn(|i| cpu.fpu.st(i as u8).to_bytes()),
        };
        let data_end = (DATA_PHYS + RW_BYTES + PAGE) as usize;
        Ok(Outcome {
            signal: signal_for_vector(vector),
            trapno: vector as u32,
            error,
            cr2: cpu.cr2,
            regs,
            eip: self.word(frame),
            eflags: self.word(frame + 8),
            fpu,
            data: cpu.mem.ram[DATA_PHYS as usize..data_end].to_vec(),
        })
    }
}

/// Load an FSAVE image as FRSTOR would (the tag word's non-empty tags follow the contents).
fn load_fpu(cpu: &mut Cpu, image: &[u8; FSAVE_BYTES]) {
    let state = FpuState::from_fsave(image);
    let fpu = &mut cpu.fpu;
    fpu.cw = state.cw;
    fpu.set_status_word(state.sw);
    // The pointers and opcode as the image has them (all zero), as FRSTOR loads them.
    let word = |at: usize| u16::from_le_bytes([image[at], image[at + 1]]);
    let dword = |at: usize| u32::from_le_bytes(image[at..at + 4].try_into().unwrap());
    fpu.fip = dword(12);
    fpu.fcs = word(16);
    fpu.fop = word(18) & 0x7FF;
    fpu.fdp = dword(20);
    fpu.fds = word(24);
    for (i, st) in state.st.iter().enumerate() {
        let phys = (fpu.top as usize + i) & 7;
        fpu.regs[phys] = F80::from_bytes(*st);
    }
    fpu.set_tag_word(state.tags);
}

// ---- Comparison ----

/// The fields in which `host` and `emu` differ, masking what the SDM leaves undefined where
/// the code stopped.
fn differences(case: &Case, host: &Outcome, emu: &Outcome) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            diffs.push(format!("{name}: host {a}, wasm86 {b}"));
        }
    };
    // I/D, bit 4 of a page fault's error code: this host's 64-bit kernel pages with PAE and
    // NXE, under which an instruction fetch sets it; wasm86 has 32-bit paging, under which
    // the SDM (Vol. 3A 4.7) has it 0.
    let error_mask = if host.trapno == 14 { !0x10 } else { !0 };
    field(
        "signal/trap/error",
        format!(
            "{}/{}/{:#x}",
            host.signal,
            host.trapno,
            host.error & error_mask
        ),
        format!(
            "{}/{}/{:#x}",
            emu.signal,
            emu.trapno,
            emu.error & error_mask
        ),
    );
    if host.trapno == 14 {
        field("cr2", format!("{:#x}", host.cr2), format!("{:#x}", emu.cr2));
    }
    field("eip", format!("{:#x}", host.eip), format!("{:#x}", emu.eip));
    // Where the two stopped decides what is undefined; with different EIPs, the host's.
    let track = case
        .track_at(host.eip, host.trapno)
        .cloned()
        .unwrap_or_else(Track::everything_undefined);
    let stopped_at = host.eip.wrapping_sub(CODE_BASE);
    let faulted = case.instrs.iter().find(|i| i.offset == stopped_at);
    let clobbered = match (host.trapno, faulted) {
        // Traps: #DB (single step), #BP, #OF stop after their instruction.
        (1 | 3 | 4, _) | (_, None) => 0,
        (_, Some(i)) => i.fault_clobbers,
    };
    for (r, name) in REG_NAMES.iter().enumerate() {
        if (track.tainted | clobbered) & (1 << r) == 0 {
            field(
                name,
                format!("{:#010x}", host.regs[r]),
                format!("{:#010x}", emu.regs[r]),
            );
        }
    }
    let flags_mask = COMPARED_FLAGS & !track.undefined_flags;
    field(
        &format!("eflags & {flags_mask:#x}"),
        format!("{:#x}", host.eflags & flags_mask),
        format!("{:#x}", emu.eflags & flags_mask),
    );
    field(
        "fpu cw",
        format!("{:#06x}", host.fpu.cw),
        format!("{:#06x}", emu.fpu.cw),
    );
    let sw_mask = !track.undefined_sw;
    field(
        &format!("fpu sw & {sw_mask:#06x}"),
        format!("{:#06x}", host.fpu.sw & sw_mask),
        format!("{:#06x}", emu.fpu.sw & sw_mask),
    );
    field(
        "fpu tags",
        format!("{:#06x}", host.fpu.tags),
        format!("{:#06x}", emu.fpu.tags),
    );
    for i in 0..8 {
        field(
            &format!("st({i})"),
            f80_text(&host.fpu.st[i]),
            f80_text(&emu.fpu.st[i]),
        );
    }
    let mut host_data = host.data.clone();
    let mut emu_data = emu.data.clone();
    let split = case
        .instrs
        .iter()
        .find(|i| i.offset == stopped_at)
        .and_then(|i| i.split_store);
    let mut undefined: Vec<(u32, u32)> = Vec::new();
    if let (13 | 14, Some(range)) = (host.trapno, split) {
        undefined.push(range);
    }
    let before = stopped_at.wrapping_sub((host.trapno == 3) as u32);
    if let Some(i) = case.instrs.iter().find(|i| i.offset == before) {
        undefined.extend_from_slice(&i.undefined_mem);
    }
    for (addr, len) in undefined {
        for a in addr..addr + len {
            let at = a.wrapping_sub(DATA_BASE) as usize;
            if at < host_data.len() {
                host_data[at] = 0;
                emu_data[at] = 0;
            }
        }
    }
    if let Some(n) = (0..host_data.len()).find(|&n| host_data[n] != emu_data[n]) {
        let last = (0..host_data.len())
            .rev()
            .find(|&n| host_data[n] != emu_data[n])
            .unwrap();
        let end = (last + 1).min(n + 32);
        field(
            &format!(
                "memory at {:#x}..{:#x}",
                DATA_BASE as usize + n,
                DATA_BASE as usize + end
            ),
            hex(&host_data[n..end]),
            hex(&emu_data[n..end]),
        );
    }
    diffs
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn disassemble(case: &Case, stop: u32) -> String {
    let mut decoder = Decoder::with_ip(32, &case.code, CODE_BASE as u64, DecoderOptions::NONE);
    let mut formatter = IntelFormatter::new();
    let mut out = String::new();
    let mut text = String::new();
    while decoder.can_decode() {
        let instr = decoder.decode();
        text.clear();
        formatter.format(&instr, &mut text);
        let at = instr.ip() as usize - CODE_BASE as usize;
        let bytes = &case.code[at..at + instr.len()];
        let marker = if instr.ip() as u32 == stop {
            "=>"
        } else {
            "  "
        };
        let track = case
            .instrs
            .iter()
            .find(|i| i.offset as usize == at)
            .map(|i| {
                format!(
                    "undefined before: flags {:#x} sw {:#06x} regs {:#04x}",
                    i.before.undefined_flags, i.before.undefined_sw, i.before.tainted
                )
            })
            .unwrap_or_default();
        out += &format!(
            "  {marker} {:08x}  {:<30} {:<36} {track}\n",
            instr.ip(),
            hex(bytes),
            text
        );
    }
    out
}

/// The disassembly of the instruction at `offset` in the code.
fn instruction_text(case: &Case, offset: u32) -> String {
    let code = &case.code[offset as usize..];
    let mut decoder = Decoder::with_ip(32, code, (CODE_BASE + offset) as u64, DecoderOptions::NONE);
    let mut text = String::new();
    IntelFormatter::new().format(&decoder.decode(), &mut text);
    text
}

fn describe(o: &Outcome) -> String {
    let mut s = format!(
        "    signal {} trap {} error {:#x} cr2 {:#x} eip {:#x} eflags {:#x}\n    ",
        o.signal, o.trapno, o.error, o.cr2, o.eip, o.eflags
    );
    for (name, v) in REG_NAMES.iter().zip(o.regs) {
        s += &format!("{name}={v:08x} ");
    }
    s += &format!(
        "\n    fpu cw {:#06x} sw {:#06x} tags {:#06x}\n",
        o.fpu.cw, o.fpu.sw, o.fpu.tags
    );
    for (i, st) in o.fpu.st.iter().enumerate() {
        s += &format!("    st({i}) {}\n", f80_text(st));
    }
    s
}

fn report(seed: u64, index: u64, case: &Case, host: &Outcome, emu: &Outcome, diffs: &[String]) {
    let init = FpuState::from_fsave(&case.fpu);
    let mut regs = String::new();
    for (name, v) in REG_NAMES.iter().zip(case.regs) {
        regs += &format!("{name}={v:08x} ");
    }
    let mut st = String::new();
    for (i, v) in init.st.iter().enumerate() {
        st += &format!("    st({i}) {}\n", f80_text(v));
    }
    eprintln!(
        "MISMATCH: seed {seed:#x} case {index} (rerun: WASM86_DIFF_SEED={seed:#x} \
         WASM86_DIFF_ONLY={index})\n\
         code:\n{}\
         initial state:\n    {regs}\n    eflags {:#x} data fill seed {:#x} patches {:x?}\n    \
         segment (FS: use & 1, ES: use & 2) use {} {:x?}\n    \
         fpu cw {:#06x} sw {:#06x} tags {:#06x}\n{st}\
         host:\n{}wasm86:\n{}differences:\n    {}\n",
        disassemble(case, host.eip),
        case.eflags,
        case.fill_seed,
        case.patches
            .iter()
            .map(|(o, b)| format!("{:#x}:{}", DATA_BASE + o, hex(b)))
            .collect::<Vec<_>>(),
        case.seg_use,
        case.seg,
        init.cw,
        init.sw,
        init.tags,
        describe(host),
        describe(emu),
        diffs.join("\n    ")
    );
}

// ---- The generator ----

/// What the generator knows at a point in the code: which flags, x87 condition codes and
/// registers are undefined (by the SDM), and the registers whose values it knows.
#[derive(Clone, Debug, PartialEq)]
struct Track {
    undefined_flags: u32,
    undefined_sw: u16,
    /// Registers (bit n: register n) holding an undefined result: never read again.
    tainted: u8,
    /// Known register values (ESP is always known).
    known: [Option<u32>; 8],
}

impl Track {
    fn everything_undefined() -> Track {
        Track {
            undefined_flags: ARITH,
            undefined_sw: CC,
            tainted: 0xFF,
            known: [None; 8],
        }
    }

    /// The state where two paths join.
    fn merge(&self, other: &Track) -> Track {
        Track {
            undefined_flags: self.undefined_flags | other.undefined_flags,
            undefined_sw: self.undefined_sw | other.undefined_sw,
            tainted: self.tainted | other.tainted,
            known: std::array::from_fn(|r| match (self.known[r], other.known[r]) {
                (Some(a), Some(b)) if a == b => Some(a),
                _ => None,
            }),
        }
    }
}

/// A ModR/M operand.
#[derive(Clone, Copy, Debug)]
enum Rm {
    Reg(u8),
    Mem(Mem),
}

#[derive(Clone, Copy, Debug)]
struct Mem {
    base: Option<u8>,
    /// Index register and scale (log2).
    index: Option<(u8, u8)>,
    disp: u32,
    /// 0, 1, 2 (16-bit addressing) or 4 bytes of displacement.
    disp_size: u8,
    /// A segment-override prefix: CS, SS and DS are flat on both sides, ES is flat or the
    /// case's segment, FS the case's segment or null (never GS: the host's C library owns it).
    seg: Option<u8>,
    /// The linear address it names.
    addr: u32,
    /// 16-bit addressing (address-size prefix): the ModR/M rm field, or 8 for [disp16]
    /// (base, index and scale are then unused).
    a16: Option<u8>,
    /// How many bytes the instruction accesses there.
    len: u32,
}

/// Whether `len` bytes at `addr` straddle two cache lines. A locked access that does (a
/// split lock) costs milliseconds on this host: Linux detects bus locks and slows down the
/// process that takes them. What the instruction does is the same as for one that does not
/// (atomicity cannot be seen by one thread), so the generator makes them rare.
fn split_line(addr: u32, len: u32) -> bool {
    addr % 64 + len > 64
}

/// The registers of the 16-bit addressing forms, by rm (8: none, [disp16]).
fn a16_regs(rm: u8) -> &'static [u8] {
    match rm {
        0 => &[EBX, ESI],
        1 => &[EBX, EDI],
        2 => &[EBP, ESI],
        3 => &[EBP, EDI],
        4 => &[ESI],
        5 => &[EDI],
        6 => &[EBP],
        7 => &[EBX],
        _ => &[],
    }
}

impl Mem {
    /// Whether the address uses register `r`.
    fn uses(&self, r: u8) -> bool {
        match self.a16 {
            Some(rm) => a16_regs(rm).contains(&r),
            None => self.base == Some(r) || self.index.is_some_and(|(i, _)| i == r),
        }
    }
}

/// How a forward jump names its target.
#[derive(Clone, Copy, PartialEq)]
enum JumpKind {
    Rel8,
    Rel32,
    /// The target's address, as an immediate (of a MOV that loads a register or memory
    /// for an indirect JMP or CALL, or of a PUSH for a RET).
    Abs32,
}

/// A forward jump waiting for its target.
struct PendingJump {
    /// Where its displacement (or target address) is, and what it is.
    patch_at: usize,
    kind: JumpKind,
    /// Units (instructions with their set-up) still to skip.
    units_left: u32,
    /// The state when it jumps.
    state: Track,
}

/// The longest a unit (an instruction and the MOVs that set up its operands) can be (a
/// function, several units long, is generated only while no jump is pending).
const MAX_UNIT_BYTES: usize = 64;

struct Gen {
    rng: Rng,
    code: Vec<u8>,
    instrs: Vec<InstrInfo>,
    st: Track,
    jumps: Vec<PendingJump>,
    patches: Vec<(u32, Vec<u8>)>,
    /// Control words may unmask x87 exceptions.
    unmasked: bool,
    /// The case's own segment and which of FS (bit 0) and ES (bit 1) hold it.
    seg: CaseSeg,
    seg_use: u32,
    /// The next instruction [`Gen::op`] emits gets a LOCK prefix.
    lock: bool,
    /// Inside a function's body: the linear range of its return address, which nothing
    /// may write, and ESP may not rise above (no pop may take it).
    ret_slot: Option<u32>,
}

/// The flags a condition code (Jcc, SETcc, CMOVcc) reads.
fn cond_reads(cc: u8) -> u32 {
    match cc >> 1 {
        0 => OF,
        1 => CF,
        2 => ZF,
        3 => CF | ZF,
        4 => SF,
        5 => PF,
        6 => SF | OF,
        _ => ZF | SF | OF,
    }
}

impl Gen {
    // -- bookkeeping --

    /// A new instruction starts here.
    fn start(&mut self) {
        self.instrs.push(InstrInfo {
            offset: self.code.len() as u32,
            before: self.st.clone(),
            split_store: None,
            fault_clobbers: 0,
            undefined_mem: Vec::new(),
        });
    }

    fn b(&mut self, bytes: &[u8]) {
        self.code.extend_from_slice(bytes);
    }

    fn d32(&mut self, v: u32) {
        self.code.extend_from_slice(&v.to_le_bytes());
    }

    fn imm(&mut self, v: u32, size: u8) {
        self.code
            .extend_from_slice(&v.to_le_bytes()[..size as usize]);
    }

    /// Flags written with defined values, and flags left undefined.
    fn flags(&mut self, defined: u32, undefined: u32) {
        self.st.undefined_flags = (self.st.undefined_flags & !defined) | undefined;
    }

    fn can_read(&self, flags: u32) -> bool {
        self.st.undefined_flags & flags == 0
    }

    fn sw(&mut self, defined: u16, undefined: u16) {
        self.st.undefined_sw = (self.st.undefined_sw & !defined) | undefined;
    }

    fn usable(&self, r: u8) -> bool {
        self.st.tainted & (1 << r) == 0
    }

    /// The full register behind operand register `r` of `size` bits (AH..BH are EAX..EBX).
    fn full(r: u8, size: u8) -> u8 {
        if size == 8 {
            r & 3
        } else {
            r
        }
    }

    /// A register operand of `size` bits that may be read; `dest`: also written (never ESP).
    fn reg(&mut self, size: u8, dest: bool) -> Option<u8> {
        for _ in 0..16 {
            let r = self.rng.below(8) as u8;
            if dest && size != 8 && r == REG_ESP {
                continue;
            }
            if self.usable(Self::full(r, size)) {
                return Some(r);
            }
        }
        None
    }

    /// Register `r` of `size` bits was written; with `value` when the generator knows it
    /// (32-bit writes only).
    fn wrote(&mut self, r: u8, size: u8, value: Option<u32>) {
        let full = Self::full(r, size);
        self.st.known[full as usize] = if size == 32 { value } else { None };
        if size == 32 {
            self.st.tainted &= !(1 << full);
        }
    }

    fn wrote_rm(&mut self, rm: Rm, size: u8) {
        if let Rm::Reg(r) = rm {
            self.wrote(r, size, None);
        }
    }

    fn taint(&mut self, r: u8, size: u8) {
        let full = Self::full(r, size);
        self.st.tainted |= 1 << full;
        self.st.known[full as usize] = None;
    }

    fn esp(&self) -> u32 {
        self.st.known[REG_ESP as usize].expect("ESP is always known")
    }

    fn set_esp(&mut self, v: u32) {
        self.st.known[REG_ESP as usize] = Some(v);
    }

    /// ESP may not change while a forward jump is pending (the paths would disagree on it).
    fn stack_allowed(&self) -> bool {
        self.jumps.is_empty()
    }

    /// Whether `n` bytes may be popped: not a function's return address.
    fn can_pop(&self, n: u32) -> bool {
        self.ret_slot
            .is_none_or(|s| self.esp().wrapping_add(n) <= s)
    }

    fn size(&mut self) -> u8 {
        self.rng.pick(&[8, 16, 32, 32])
    }

    /// Operand-size prefix for 16-bit operands.
    fn p66(&mut self, size: u8) {
        if size == 16 {
            self.b(&[0x66]);
        }
    }

    /// The byte-operation opcode or its word/dword twin.
    fn w(opcode: u8, size: u8) -> u8 {
        if size == 8 {
            opcode
        } else {
            opcode | 1
        }
    }

    fn isz(size: u8) -> u8 {
        if size == 8 {
            1
        } else if size == 16 {
            2
        } else {
            4
        }
    }

    // -- operands --

    /// A linear address for an access of `len` bytes: mostly inside the writable pages (often
    /// at a page edge), sometimes in the read-only page, and rarely straddling into or inside
    /// a page that is not present.
    fn address(&mut self, len: u32, write: bool) -> u32 {
        loop {
            let a = self.any_address(len, write);
            // Never over a function's return address.
            let hits_slot = self
                .ret_slot
                .is_some_and(|s| a < s.wrapping_add(4) && s < a.wrapping_add(len));
            if !(write && hits_slot) {
                return a;
            }
        }
    }

    fn any_address(&mut self, len: u32, write: bool) -> u32 {
        let edge =
            |g: &mut Gen, page_end: u32| page_end - len + g.rng.below(len.max(2) * 2) - len / 2;
        match self.rng.below(100) {
            0..=64 => DATA_BASE + self.rng.below(RW_BYTES - len + 1),
            65..=79 => {
                // Straddling (or touching) the edge between two writable pages.
                let page = DATA_BASE + PAGE * (1 + self.rng.below(RW_PAGES - 1));
                page - len + 1 + self.rng.below(2 * len - 1)
            }
            80..=89 => {
                // Near the stack pointer.
                let a = self.esp().wrapping_add(self.rng.below(64)).wrapping_sub(16);
                a.clamp(DATA_BASE, DATA_BASE + RW_BYTES - len)
            }
            90..=93 if !write => RO_PAGE + self.rng.below(PAGE - len + 1),
            90..=93 => DATA_BASE + self.rng.below(RW_BYTES - len + 1),
            94 if write => RO_PAGE - len + 1 + self.rng.below(len),
            94 => edge(self, GUARD_ABOVE),
            95 => DATA_BASE - len + self.rng.below(len + 1),
            96 => GUARD_BELOW + self.rng.below(PAGE - len + 1),
            97 => GUARD_ABOVE + self.rng.below(64),
            _ => DATA_BASE + self.rng.below(64),
        }
    }

    /// MOV reg, imm32 (flags unaffected), as a separate instruction.
    fn mov_imm(&mut self, r: u8, v: u32) {
        self.start();
        self.b(&[0xB8 + r]);
        self.d32(v);
        self.wrote(r, 32, Some(v));
    }

    /// A memory operand naming `len` bytes at a random address, in a random addressing form;
    /// registers in `keep` are not changed to set it up.
    fn mem(&mut self, len: u32, write: bool, keep: u8) -> Mem {
        let addr = self.address(len, write);
        self.mem_at(addr, len, write, keep)
    }

    /// The base of the segment a prefix selects (no prefix: DS or SS, flat), or None for
    /// FS holding the null selector.
    fn seg_base(&self, prefix: Option<u8>) -> Option<u32> {
        match prefix {
            Some(0x64) if self.seg_use & 1 != 0 => Some(self.seg.base),
            Some(0x64) => None,
            Some(0x26) if self.seg_use & 2 != 0 => Some(self.seg.base),
            _ => Some(0),
        }
    }

    /// Whether `len` bytes at offset `off` through the segment `prefix` selects pass its
    /// limit and rights checks.
    fn seg_allows(&self, prefix: Option<u8>, off: u32, len: u32, write: bool) -> bool {
        let own = match prefix {
            Some(0x64) => self.seg_use & 1 != 0,
            Some(0x26) => self.seg_use & 2 != 0,
            Some(0x2E) => return !write,
            _ => return true,
        };
        own && self.seg.allows(off, len, write)
    }

    /// A segment-override prefix for an access of `len` bytes at linear `addr`: mostly none;
    /// the case's own segment often when it has one (mostly where its limit allows the
    /// access); FS with the null selector rarely (#GP).
    fn pick_seg(&mut self, addr: u32, len: u32, write: bool) -> Option<u8> {
        let own: Vec<u8> = [(1, 0x64u8), (2, 0x26)]
            .into_iter()
            .filter(|&(bit, _)| self.seg_use & bit != 0)
            .map(|(_, p)| p)
            .collect();
        let r = self.rng.below(200);
        let seg = if r < 12 {
            Some(self.rng.pick(&[0x26, 0x36, 0x3E, 0x3E]))
        } else if r < 40 && !own.is_empty() {
            Some(self.rng.pick(&own))
        } else if r == 40 && self.seg_use & 1 == 0 {
            return Some(0x64);
        } else {
            None
        };
        let off = addr.wrapping_sub(self.seg_base(seg).unwrap_or(0));
        if !self.seg_allows(seg, off, len, write) && self.rng.chance(85) {
            return None;
        }
        seg
    }

    /// A memory operand for `len` bytes at linear `addr` (if an address-size prefix and a
    /// segment's base allow: 16-bit forms cannot reach every address; the operand's `addr`
    /// then says where it goes).
    fn mem_at(&mut self, addr: u32, len: u32, write: bool, keep: u8) -> Mem {
        let seg = self.pick_seg(addr, len, write);
        let seg_base = self.seg_base(seg).unwrap_or(0);
        let off = addr.wrapping_sub(seg_base);
        // 16-bit addressing: usually where the offset fits in 16 bits (through the case's
        // segment); rarely anywhere (an address below 64 KiB: #PF on both sides).
        let a16_per_mille = if off <= 0xFFFF { 300 } else { 5 };
        if self.rng.below(1000) < a16_per_mille {
            if let Some(m) = self.mem16(seg, seg_base, off, len, keep) {
                return m;
            }
        }
        let known: Vec<u8> = (0..8u8)
            .filter(|&r| r != REG_ESP && self.usable(r) && self.st.known[r as usize].is_some())
            .collect();
        let mut m = Mem {
            base: None,
            index: None,
            disp: off,
            disp_size: 4,
            seg,
            addr,
            a16: None,
            len,
        };
        let form = self.rng.below(10);
        if form == 0 || (known.is_empty() && form < 5) {
            return m; // [disp32]
        }
        if form == 9 {
            // [esp + disp]
            m.base = Some(REG_ESP);
        } else if known.is_empty() || self.rng.chance(25) {
            // Set up a base register next to the address.
            let free: Vec<u8> = (0..8u8)
                .filter(|&r| r != REG_ESP && keep & (1 << r) == 0)
                .collect();
            let r = self.rng.pick(&free);
            let near = off.wrapping_sub(self.rng.below(256)).wrapping_add(64);
            self.mov_imm(r, near);
            m.base = Some(r);
        } else {
            m.base = Some(self.rng.pick(&known));
        }
        if form >= 6 && !known.is_empty() {
            let i = self.rng.pick(&known);
            m.index = Some((i, self.rng.below(4) as u8));
            if form == 8 {
                m.base = None; // [index * scale + disp32]
            }
        }
        let base = m.base.map_or(0, |r| self.st.known[r as usize].unwrap());
        let index = m
            .index
            .map_or(0, |(r, s)| self.st.known[r as usize].unwrap() << s);
        m.disp = off.wrapping_sub(base).wrapping_sub(index);
        if m.base.is_some() {
            m.disp_size = if m.disp == 0 && m.base != Some(EBP) && self.rng.chance(70) {
                0
            } else if (m.disp as i32) >= -128 && (m.disp as i32) < 128 && self.rng.chance(80) {
                1
            } else {
                4
            };
        }
        m
    }

    /// A 16-bit addressing form (address-size prefix) for offset `off` (its low 16 bits) in
    /// the segment `seg` selects: the registers it adds are known ones or set up here with
    /// random upper halves (ignored: the sum wraps at 64 KiB), unless `keep` forbids.
    fn mem16(
        &mut self,
        seg: Option<u8>,
        seg_base: u32,
        off: u32,
        len: u32,
        keep: u8,
    ) -> Option<Mem> {
        let rm = self.rng.below(9) as u8;
        let mut sum = 0u32;
        for &r in a16_regs(rm) {
            let known = self.st.known[r as usize].filter(|_| self.usable(r));
            let v = match known {
                Some(v) if self.rng.chance(60) => v,
                _ if keep & (1 << r) != 0 => return None,
                _ => {
                    let v = self.rng.u32();
                    self.mov_imm(r, v);
                    v
                }
            };
            sum = sum.wrapping_add(v);
        }
        let disp = off.wrapping_sub(sum) & 0xFFFF;
        let disp_size = if rm == 8 {
            2
        } else if disp == 0 && rm != 6 && self.rng.chance(60) {
            0
        } else if (disp as u16 as i16) >= -128 && (disp as u16 as i16) < 128 && self.rng.chance(80)
        {
            1
        } else {
            2
        };
        let ea = off & 0xFFFF;
        Some(Mem {
            base: None,
            index: None,
            disp,
            disp_size,
            seg,
            addr: seg_base.wrapping_add(ea),
            a16: Some(rm),
            len,
        })
    }

    /// A register or (in `mem_percent` of cases) a memory operand of `size` bits.
    fn rm(&mut self, size: u8, write: bool, mem_percent: u32, keep: u8) -> Option<Rm> {
        if self.rng.chance(mem_percent) {
            Some(Rm::Mem(self.mem(size as u32 / 8, write, keep)))
        } else {
            self.reg(size, write).map(Rm::Reg)
        }
    }

    /// The ModR/M byte (and SIB and displacement) for `reg` and `rm`.
    fn modrm(&mut self, reg: u8, rm: Rm) {
        let reg = (reg & 7) << 3;
        let m = match rm {
            Rm::Reg(r) => {
                self.b(&[0xC0 | reg | r]);
                return;
            }
            Rm::Mem(m) => m,
        };
        let mode = match m.disp_size {
            0 => 0x00,
            1 => 0x40,
            _ => 0x80,
        };
        if let Some(rm16) = m.a16 {
            if rm16 == 8 {
                self.b(&[reg | 6]);
            } else {
                self.b(&[mode | reg | rm16]);
            }
            self.imm(m.disp, m.disp_size);
            return;
        }
        match (m.base, m.index) {
            (None, None) => {
                self.b(&[0x05 | reg]);
                self.d32(m.disp);
                return;
            }
            (Some(b), None) if b != REG_ESP => self.b(&[mode | reg | b]),
            (Some(b), None) => self.b(&[mode | reg | 4, 0x20 | b]),
            (Some(b), Some((i, s))) => self.b(&[mode | reg | 4, s << 6 | i << 3 | b]),
            (None, Some((i, s))) => {
                self.b(&[reg | 4, s << 6 | i << 3 | 5]);
                self.d32(m.disp);
                return;
            }
        }
        self.imm(m.disp, m.disp_size);
    }

    /// The prefixes of an instruction with operand `rm`: operand size, segment override,
    /// address size, and a LOCK asked for by `self.lock`, in a random order.
    fn prefixes(&mut self, size: u8, rm: Rm) {
        let mut p = Vec::new();
        if size == 16 {
            p.push(0x66);
        }
        if let Rm::Mem(m) = rm {
            if let Some(s) = m.seg {
                p.push(s);
            }
            if m.a16.is_some() {
                p.push(0x67);
            }
        }
        if std::mem::take(&mut self.lock) {
            p.push(0xF0);
        }
        for i in (1..p.len()).rev() {
            let j = self.rng.below(i as u32 + 1) as usize;
            p.swap(i, j);
        }
        self.b(&p);
    }

    /// Ask for a LOCK prefix on the next instruction [`Gen::op`] emits: often on the memory
    /// form of an instruction LOCK may go with (it then behaves as without), rarely on its
    /// register form or on any other instruction (#UD).
    fn maybe_lock(&mut self, lockable: bool, rm: Rm) {
        let per_mille = match rm {
            Rm::Mem(m) if lockable && split_line(m.addr, m.len) => 1,
            Rm::Mem(_) if lockable => 150,
            _ => 5,
        };
        self.lock = self.rng.below(1000) < per_mille;
    }

    /// An instruction: prefixes, opcode, ModR/M, immediate.
    fn op(&mut self, size: u8, opcode: &[u8], reg: u8, rm: Rm, imm: Option<(u32, u8)>) {
        self.start();
        self.prefixes(size, rm);
        self.b(opcode);
        self.modrm(reg, rm);
        if let Some((v, n)) = imm {
            self.imm(v, n);
        }
    }

    // -- jumps --

    /// Land the pending jumps that reach this point (before a unit starts).
    fn land_jumps(&mut self, force: bool) {
        let here = self.code.len();
        let mut i = 0;
        while i < self.jumps.len() {
            let j = &mut self.jumps[i];
            let rel8 = j.kind == JumpKind::Rel8;
            let far = rel8 && here + MAX_UNIT_BYTES - (j.patch_at + 1) > 127;
            if force || j.units_left == 0 || far {
                let j = self.jumps.remove(i);
                let (width, v) = match j.kind {
                    JumpKind::Rel8 => (1, (here - (j.patch_at + 1)) as u32),
                    JumpKind::Rel32 => (4, (here - (j.patch_at + 4)) as u32),
                    JumpKind::Abs32 => (4, CODE_BASE + here as u32),
                };
                assert!(!rel8 || v <= 127, "a short jump out of range");
                self.code[j.patch_at..j.patch_at + width]
                    .copy_from_slice(&v.to_le_bytes()[..width]);
                self.st = self.st.merge(&j.state);
            } else {
                j.units_left -= 1;
                i += 1;
            }
        }
    }

    /// The instruction just emitted jumps forward; its displacement is its last bytes.
    fn jump_here(&mut self, rel8: bool) {
        let (kind, width) = if rel8 {
            (JumpKind::Rel8, 1)
        } else {
            (JumpKind::Rel32, 4)
        };
        self.jump_at(kind, self.code.len() - width);
    }

    /// A forward jump whose target goes at `patch_at`, with the state as it is now.
    fn jump_at(&mut self, kind: JumpKind, patch_at: usize) {
        let units_left = self.rng.below(4);
        self.jumps.push(PendingJump {
            patch_at,
            kind,
            units_left,
            state: self.st.clone(),
        });
    }

    // -- the integer instructions --

    fn alu(&mut self) -> bool {
        let op = self.rng.below(8) as u8;
        if (op == 2 || op == 3) && !self.can_read(CF) {
            return false;
        }
        let size = self.size();
        let writes = op != 7;
        let (defined, undefined) = if matches!(op, 1 | 4 | 6) {
            (ARITH & !AF, AF)
        } else {
            (ARITH, 0)
        };
        match self.rng.below(4) {
            0 => {
                // r/m, reg
                let Some(rm) = self.rm(size, writes, 40, 0) else {
                    return false;
                };
                let Some(r) = self.reg(size, false) else {
                    return false;
                };
                self.maybe_lock(writes, rm);
                self.op(size, &[Self::w(op << 3, size)], r, rm, None);
                if writes {
                    self.wrote_rm(rm, size);
                }
            }
            1 => {
                // reg, r/m
                let Some(r) = self.reg(size, writes) else {
                    return false;
                };
                let Some(rm) = self.rm(size, false, 40, 0) else {
                    return false;
                };
                // The destination is a register: never lockable.
                self.maybe_lock(false, rm);
                self.op(size, &[Self::w(op << 3 | 2, size)], r, rm, None);
                if writes {
                    self.wrote(r, size, None);
                }
            }
            2 => {
                // r/m, imm (80, 81, 83)
                let Some(rm) = self.rm(size, writes, 40, 0) else {
                    return false;
                };
                let v = self.rng.value();
                self.maybe_lock(writes, rm);
                if size != 8 && self.rng.chance(40) {
                    self.op(size, &[0x83], op, rm, Some((v, 1)));
                } else {
                    // 82 is 80's alias outside 64-bit mode.
                    let opcode = if size == 8 && self.rng.chance(10) {
                        0x82
                    } else {
                        Self::w(0x80, size)
                    };
                    self.op(size, &[opcode], op, rm, Some((v, Self::isz(size))));
                }
                if writes {
                    self.wrote_rm(rm, size);
                }
            }
            _ => {
                // AL/AX/EAX, imm
                if !self.usable(EAX) {
                    return false;
                }
                self.start();
                self.p66(size);
                self.b(&[Self::w(op << 3 | 4, size)]);
                let v = self.rng.value();
                self.imm(v, Self::isz(size));
                if writes {
                    self.wrote(EAX, size, None);
                }
            }
        }
        self.flags(defined, undefined);
        true
    }

    fn mov(&mut self) -> bool {
        let size = self.size();
        match self.rng.below(5) {
            0 => {
                let Some(rm) = self.rm(size, true, 50, 0) else {
                    return false;
                };
                let Some(r) = self.reg(size, false) else {
                    return false;
                };
                self.maybe_lock(false, rm);
                self.op(size, &[Self::w(0x88, size)], r, rm, None);
                self.wrote_rm(rm, size);
            }
            1 => {
                let Some(r) = self.reg(size, true) else {
                    return false;
                };
                let Some(rm) = self.rm(size, false, 60, 0) else {
                    return false;
                };
                self.op(size, &[Self::w(0x8A, size)], r, rm, None);
                self.wrote(r, size, None);
            }
            2 => {
                let Some(rm) = self.rm(size, true, 50, 0) else {
                    return false;
                };
                let v = self.rng.value();
                self.op(
                    size,
                    &[Self::w(0xC6, size)],
                    0,
                    rm,
                    Some((v, Self::isz(size))),
                );
                self.wrote_rm(rm, size);
            }
            3 => {
                let r = self.rng.below(8) as u8;
                if size != 8 && r == REG_ESP {
                    return false;
                }
                let v = self.rng.value();
                self.start();
                self.p66(size);
                if size == 8 {
                    self.b(&[0xB0 + r]);
                } else {
                    self.b(&[0xB8 + r]);
                }
                self.imm(v, Self::isz(size));
                self.wrote(r, size, Some(v));
            }
            _ => {
                // moffs forms: A0-A3
                if !self.usable(EAX) {
                    return false;
                }
                let store = self.rng.chance(50);
                let mut m = self.mem(size as u32 / 8, store, 0);
                // The offset in its segment; 16 bits with an address-size prefix (where it
                // fits, mostly: else the access goes below 64 KiB).
                let off = m.addr.wrapping_sub(self.seg_base(m.seg).unwrap_or(0));
                let a16 = (off <= 0xFFFF && self.rng.chance(40)) || self.rng.chance(1);
                m.a16 = a16.then_some(8);
                self.start();
                self.prefixes(size, Rm::Mem(m));
                self.b(&[Self::w(if store { 0xA2 } else { 0xA0 }, size)]);
                self.imm(off, if a16 { 2 } else { 4 });
                if !store {
                    self.wrote(EAX, size, None);
                }
            }
        }
        true
    }

    fn inc_dec_not_neg(&mut self) -> bool {
        let size = self.size();
        let which = self.rng.below(5);
        if which == 4 {
            // 40-4F short forms
            if size == 8 {
                return false;
            }
            let Some(r) = self.reg(size, true) else {
                return false;
            };
            self.start();
            self.p66(size);
            let chosen = self.rng.below(2);
            self.b(&[0x40 + 8 * chosen as u8 + r]);
            self.wrote(r, size, None);
            self.flags(ARITH & !CF, 0);
            return true;
        }
        let Some(rm) = self.rm(size, true, 35, 0) else {
            return false;
        };
        self.maybe_lock(true, rm);
        match which {
            0 | 1 => {
                self.op(size, &[Self::w(0xFE, size)], which as u8, rm, None);
                self.flags(ARITH & !CF, 0);
            }
            2 => self.op(size, &[Self::w(0xF6, size)], 2, rm, None),
            _ => {
                self.op(size, &[Self::w(0xF6, size)], 3, rm, None);
                self.flags(ARITH, 0);
            }
        }
        self.wrote_rm(rm, size);
        true
    }

    fn test(&mut self) -> bool {
        let size = self.size();
        let Some(rm) = self.rm(size, false, 35, 0) else {
            return false;
        };
        self.maybe_lock(false, rm);
        if self.rng.chance(50) {
            let Some(r) = self.reg(size, false) else {
                return false;
            };
            self.op(size, &[Self::w(0x84, size)], r, rm, None);
        } else {
            let v = self.rng.value();
            self.op(
                size,
                &[Self::w(0xF6, size)],
                0,
                rm,
                Some((v, Self::isz(size))),
            );
        }
        self.flags(ARITH & !AF, AF);
        true
    }

    /// The count register's value, if known.
    fn cl(&self) -> Option<u32> {
        if self.usable(ECX) {
            self.st.known[ECX as usize].map(|v| v & 0xFF)
        } else {
            None
        }
    }

    fn shift(&mut self) -> bool {
        let size = self.size();
        let kind = self.rng.pick(&[0u8, 1, 2, 3, 4, 5, 7]);
        let how = self.rng.below(3); // by 1, by imm8, by CL
        if how == 2 && !self.usable(ECX) {
            return false;
        }
        if how == 2 && self.rng.chance(30) {
            let c = self.shift_count();
            self.mov_imm(ECX, c);
        }
        let count = match how {
            0 => Some(1),
            1 => Some(self.shift_count()),
            _ => self.cl(),
        };
        let masked = count.map(|c| c & 31);
        let rotate_through_carry = kind == 2 || kind == 3;
        if rotate_through_carry && masked != Some(0) && !self.can_read(CF) {
            return false;
        }
        let Some(rm) = self.rm(size, true, 35, if how == 2 { 1 << ECX } else { 0 }) else {
            return false;
        };
        self.maybe_lock(false, rm);
        match how {
            0 => self.op(size, &[Self::w(0xD0, size)], kind, rm, None),
            1 => {
                let c = count.unwrap();
                self.op(size, &[Self::w(0xC0, size)], kind, rm, Some((c, 1)));
            }
            _ => self.op(size, &[Self::w(0xD2, size)], kind, rm, None),
        }
        self.wrote_rm(rm, size);
        let width = size as u32;
        match masked {
            Some(0) => {}
            Some(m) => {
                let of = if m == 1 { (OF, 0) } else { (0, OF) };
                match kind {
                    0..=3 => self.flags(CF | of.0, of.1),
                    _ => {
                        // SHL/SHR: CF undefined for counts >= the width (SDM SAL/SAR/SHL/SHR).
                        let cf = if kind != 7 && m >= width {
                            (0, CF)
                        } else {
                            (CF, 0)
                        };
                        self.flags(cf.0 | of.0 | SF | ZF | PF, cf.1 | of.1 | AF);
                    }
                }
            }
            None => {
                // Unknown count: whatever may be undefined is.
                let cf = if (kind == 4 || kind == 5) && width < 32 {
                    CF
                } else {
                    0
                };
                let af = if kind >= 4 { AF } else { 0 };
                self.flags(0, OF | cf | af);
            }
        }
        true
    }

    fn shift_count(&mut self) -> u32 {
        match self.rng.below(4) {
            0 => self.rng.pick(&[0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33]),
            1 => self.rng.u32() & 0xFF,
            _ => self.rng.below(34),
        }
    }

    fn shld_shrd(&mut self) -> bool {
        let size = self.rng.pick(&[16, 32]);
        let by_cl = self.rng.chance(50);
        if by_cl && !self.usable(ECX) {
            return false;
        }
        if by_cl && self.rng.chance(40) {
            let c = self.shift_count();
            self.mov_imm(ECX, c);
        }
        let count = if by_cl {
            self.cl()
        } else {
            Some(self.shift_count())
        };
        let masked = count.map(|c| c & 31);
        // A count above the operand size leaves the result undefined (SDM SHLD/SHRD): only
        // into a register, which is then tainted.
        let may_be_undefined = size == 16 && masked.is_none_or(|m| m > 16);
        let mem_percent = if may_be_undefined { 0 } else { 35 };
        let keep = if by_cl { 1 << ECX } else { 0 };
        let Some(rm) = self.rm(size, true, mem_percent, keep) else {
            return false;
        };
        let Some(r) = self.reg(size, false) else {
            return false;
        };
        let base = if self.rng.chance(50) { 0xA4 } else { 0xAC };
        if by_cl {
            self.op(size, &[0x0F, base + 1], r, rm, None);
        } else {
            self.op(size, &[0x0F, base], r, rm, Some((count.unwrap(), 1)));
        }
        self.wrote_rm(rm, size);
        match masked {
            Some(0) => {}
            Some(m) if m > size as u32 => {
                self.flags(0, ARITH);
                if let Rm::Reg(d) = rm {
                    self.taint(d, size);
                }
            }
            Some(m) => {
                let of = if m == 1 { (OF, 0) } else { (0, OF) };
                self.flags(CF | SF | ZF | PF | of.0, AF | of.1);
            }
            None if may_be_undefined => {
                self.flags(0, ARITH);
                if let Rm::Reg(d) = rm {
                    self.taint(d, size);
                }
            }
            None => self.flags(0, OF | AF),
        }
        true
    }

    fn mul(&mut self) -> bool {
        let size = self.size();
        match self.rng.below(3) {
            0 => {
                // MUL/IMUL r/m: EDX:EAX (AX for bytes)
                if !self.usable(EAX) || (size != 8 && !self.usable(EDX)) {
                    return false;
                }
                let Some(rm) = self.rm(size, false, 35, 0) else {
                    return false;
                };
                let digit = 4 + self.rng.below(2) as u8;
                self.op(size, &[Self::w(0xF6, size)], digit, rm, None);
                if size == 8 {
                    self.wrote(EAX, 16, None);
                } else {
                    self.wrote(EAX, size, None);
                    self.wrote(EDX, size, None);
                }
            }
            1 => {
                if size == 8 {
                    return false;
                }
                let Some(r) = self.reg(size, true) else {
                    return false;
                };
                let Some(rm) = self.rm(size, false, 35, 0) else {
                    return false;
                };
                self.op(size, &[0x0F, 0xAF], r, rm, None);
                self.wrote(r, size, None);
            }
            _ => {
                if size == 8 {
                    return false;
                }
                let Some(r) = self.reg(size, true) else {
                    return false;
                };
                let Some(rm) = self.rm(size, false, 35, 0) else {
                    return false;
                };
                let v = self.rng.value();
                if self.rng.chance(50) {
                    self.op(size, &[0x6B], r, rm, Some((v, 1)));
                } else {
                    self.op(size, &[0x69], r, rm, Some((v, Self::isz(size))));
                }
                self.wrote(r, size, None);
            }
        }
        // SDM MUL/IMUL: SF, ZF, AF and PF are undefined.
        self.flags(CF | OF, SF | ZF | AF | PF);
        true
    }

    fn div(&mut self) -> bool {
        let size = self.size();
        if !self.usable(EAX) || !self.usable(EDX) {
            return false;
        }
        let signed = self.rng.chance(50);
        // Usually make the quotient fit (the rest are #DE).
        if self.rng.chance(75) {
            if signed {
                if size == 32 {
                    self.start();
                    self.b(&[0x99]); // cdq
                    self.wrote(EDX, 32, None);
                } else if size == 16 {
                    self.start();
                    self.b(&[0x66, 0x99]); // cwd
                    self.wrote(EDX, 16, None);
                } else {
                    self.start();
                    self.b(&[0x66, 0x98]); // cbw
                    self.wrote(EAX, 16, None);
                }
            } else if size == 8 {
                self.start();
                self.b(&[0xB4, 0x00]); // mov ah, 0
                self.wrote(EAX, 8, None);
            } else {
                let chosen = self.rng.below(3);
                self.mov_imm(EDX, chosen);
            }
        }
        let Some(rm) = self.rm(size, false, 35, 1 << EAX | 1 << EDX) else {
            return false;
        };
        self.op(size, &[Self::w(0xF6, size)], 6 + signed as u8, rm, None);
        if size == 8 {
            self.wrote(EAX, 16, None);
        } else {
            self.wrote(EAX, size, None);
            self.wrote(EDX, size, None);
        }
        // SDM DIV/IDIV: all six flags undefined.
        self.flags(0, ARITH);
        true
    }

    fn bit_test(&mut self) -> bool {
        let size = self.rng.pick(&[16, 32]);
        let op = self.rng.below(4) as u8; // BT BTS BTR BTC
        let writes = op != 0;
        if self.rng.chance(50) {
            // 0F BA /4-7 ib
            let Some(rm) = self.rm(size, writes, 35, 0) else {
                return false;
            };
            let bit = self.rng.u32() & 0xFF;
            self.maybe_lock(writes, rm);
            self.op(size, &[0x0F, 0xBA], 4 + op, rm, Some((bit, 1)));
            if writes {
                self.wrote_rm(rm, size);
            }
        } else {
            // 0F A3/AB/B3/BB with a register bit offset: a memory operand is addressed by
            // the offset too (signed, in operand-size units: the 16-bit form sign-extends
            // the word), so the offset register is set to a known value first, small or
            // anywhere in its range, and the operand's address moved back by as much.
            let Some(r) = self.reg(size, false) else {
                return false;
            };
            let opcode = [0xA3, 0xAB, 0xB3, 0xBB][op as usize];
            if self.rng.chance(40) {
                if r == REG_ESP {
                    return false;
                }
                let offset = match self.rng.below(4) {
                    0 | 1 => self.rng.below(160).wrapping_sub(64),
                    2 => self.rng.u32(),
                    _ => self.rng.value(),
                };
                self.mov_imm(r, offset);
                let unit = size as u32 / 8;
                let units = if size == 16 {
                    (offset as u16 as i16 as i32) >> 4
                } else {
                    (offset as i32) >> 5
                } as u32;
                let target = self.address(unit, writes);
                let at = target.wrapping_sub(units.wrapping_mul(unit));
                let m = self.mem_at(at, unit, writes, 1 << r);
                // The setup of the base register may have reused r: then skip.
                if m.uses(r) {
                    return false;
                }
                // The access is at the target (see split_line).
                self.maybe_lock(writes, Rm::Mem(Mem { addr: target, ..m }));
                self.op(size, &[0x0F, opcode], r, Rm::Mem(m), None);
            } else {
                let Some(d) = self.reg(size, writes) else {
                    return false;
                };
                self.op(size, &[0x0F, opcode], r, Rm::Reg(d), None);
                if writes {
                    self.wrote(d, size, None);
                }
            }
        }
        // SDM BT: CF is the bit; ZF unaffected; OF, SF, AF and PF undefined.
        self.flags(CF, OF | SF | AF | PF);
        true
    }

    fn bit_scan(&mut self) -> bool {
        let size = self.rng.pick(&[16, 32]);
        let Some(r) = self.reg(size, true) else {
            return false;
        };
        let Some(rm) = self.rm(size, false, 35, 0) else {
            return false;
        };
        let src_known = match rm {
            Rm::Reg(s) => self.st.known[s as usize].map(|v| v & (u32::MAX >> (32 - size))),
            Rm::Mem(_) => None,
        };
        let op = if self.rng.chance(50) { 0xBC } else { 0xBD };
        self.op(size, &[0x0F, op], r, rm, None);
        // SDM BSF/BSR: the destination is undefined when the source is 0; CF, OF, SF, AF
        // and PF are undefined.
        if src_known.is_none_or(|v| v == 0) {
            self.taint(r, size);
        } else {
            self.wrote(r, size, None);
        }
        self.flags(ZF, CF | OF | SF | AF | PF);
        true
    }

    fn setcc_cmov(&mut self) -> bool {
        let cc = self.rng.below(16) as u8;
        if !self.can_read(cond_reads(cc)) {
            return false;
        }
        if self.rng.chance(50) {
            let Some(rm) = self.rm(8, true, 35, 0) else {
                return false;
            };
            self.op(8, &[0x0F, 0x90 + cc], 0, rm, None);
            self.wrote_rm(rm, 8);
        } else {
            let size = self.rng.pick(&[16, 32]);
            let Some(r) = self.reg(size, true) else {
                return false;
            };
            let Some(rm) = self.rm(size, false, 35, 0) else {
                return false;
            };
            self.op(size, &[0x0F, 0x40 + cc], r, rm, None);
            self.wrote(r, size, None);
        }
        true
    }

    fn jcc(&mut self) -> bool {
        match self.rng.below(6) {
            0 | 1 => {
                let cc = self.rng.below(16) as u8;
                if !self.can_read(cond_reads(cc)) {
                    return false;
                }
                self.start();
                if self.rng.chance(50) {
                    self.b(&[0x70 + cc, 0]);
                    self.jump_here(true);
                } else {
                    self.b(&[0x0F, 0x80 + cc, 0, 0, 0, 0]);
                    self.jump_here(false);
                }
            }
            2 => {
                self.start();
                self.b(&[0xEB, 0]);
                self.jump_here(true);
            }
            3 => {
                // JECXZ; JCXZ with an address-size prefix (CX alone is tested)
                if !self.usable(ECX) {
                    return false;
                }
                self.start();
                if self.rng.chance(25) {
                    self.b(&[0x67]);
                }
                self.b(&[0xE3, 0]);
                self.jump_here(true);
            }
            _ => {
                // LOOP, LOOPE, LOOPNE (forward); with an address-size prefix they count
                // in CX (the upper half of ECX stays)
                if !self.usable(ECX) {
                    return false;
                }
                let op = self.rng.pick(&[0xE0u8, 0xE1, 0xE2]);
                if op != 0xE2 && !self.can_read(ZF) {
                    return false;
                }
                let cx = self.rng.chance(25);
                self.start();
                if cx {
                    self.b(&[0x67]);
                }
                self.b(&[op, 0]);
                let ecx = self.st.known[ECX as usize].map(|v| {
                    if cx {
                        v & 0xFFFF_0000 | v.wrapping_sub(1) & 0xFFFF
                    } else {
                        v.wrapping_sub(1)
                    }
                });
                self.st.known[ECX as usize] = ecx;
                self.jump_here(true);
            }
        }
        true
    }

    fn lea(&mut self) -> bool {
        let size = self.rng.pick(&[16, 32, 32]);
        let Some(r) = self.reg(size, true) else {
            return false;
        };
        // Any address: LEA does not access memory, so unknown registers may take part.
        let mut m = self.mem(1, false, 0);
        m.seg = None;
        if m.a16.is_some() && self.rng.chance(50) {
            // Any 16-bit form whose registers may be read, any displacement.
            let rm = self.rng.below(9) as u8;
            if a16_regs(rm).iter().all(|&x| self.usable(x)) {
                m.a16 = Some(rm);
                m.disp = self.rng.value() & 0xFFFF;
                m.disp_size = if rm == 8 {
                    2
                } else {
                    self.rng.pick(&[0, 1, 2])
                };
                if m.disp_size == 0 && rm == 6 {
                    m.disp_size = 1;
                }
                if m.disp_size == 1 {
                    m.disp &= 0xFF;
                }
            }
        } else if m.a16.is_none() && self.rng.chance(50) {
            let regs: Vec<u8> = (0..8).filter(|&x| self.usable(x)).collect();
            if !regs.is_empty() {
                let b = self.rng.pick(&regs);
                if b != REG_ESP || m.index.is_none() {
                    m.base = Some(b);
                }
                if m.disp_size == 0 && b == EBP {
                    m.disp_size = 1;
                }
                let i = self.rng.pick(&regs);
                if i != REG_ESP && self.rng.chance(50) {
                    m.index = Some((i, self.rng.below(4) as u8));
                }
                m.disp = self.rng.value();
                if m.disp_size == 0 {
                    m.disp_size = 4;
                }
                if m.disp_size == 1 {
                    m.disp &= 0xFF;
                }
            }
        }
        self.op(size, &[0x8D], r, Rm::Mem(m), None);
        self.wrote(r, size, None);
        true
    }

    fn movx(&mut self) -> bool {
        let size = self.rng.pick(&[16, 32]);
        let from = if size == 16 {
            8
        } else {
            self.rng.pick(&[8, 16])
        };
        let Some(r) = self.reg(size, true) else {
            return false;
        };
        let Some(rm) = self.rm(from, false, 40, 0) else {
            return false;
        };
        let signed = self.rng.chance(50);
        let op = 0xB6 + 8 * signed as u8 + (from == 16) as u8;
        self.op(size, &[0x0F, op], r, rm, None);
        self.wrote(r, size, None);
        true
    }

    fn xchg_xadd_cmpxchg(&mut self) -> bool {
        let size = self.size();
        let kind = self.rng.below(5);
        if kind == 4 {
            // BSWAP r32 (the 16-bit form is undefined)
            let Some(r) = self.reg(32, true) else {
                return false;
            };
            self.start();
            self.b(&[0x0F, 0xC8 + r]);
            self.wrote(r, 32, None);
            return true;
        }
        if kind == 3 && !self.usable(EAX) {
            return false;
        }
        let Some(rm) = self.rm(size, true, 40, 0) else {
            return false;
        };
        let Some(r) = self.reg(size, kind != 3) else {
            return false;
        };
        if let (0 | 1, Rm::Mem(m)) = (kind, rm) {
            // XCHG with memory is locked (see split_line).
            if split_line(m.addr, m.len) && !self.rng.chance(1) {
                return false;
            }
        }
        self.maybe_lock(true, rm);
        match kind {
            0 | 1 => {
                if let (Rm::Reg(d), true) = (rm, size == 32 && self.rng.chance(30)) {
                    if r == EAX {
                        // 90+r: XCHG EAX, r
                        self.lock = false;
                        self.start();
                        self.b(&[0x90 + d]);
                    } else {
                        self.op(size, &[Self::w(0x86, size)], r, rm, None);
                    }
                } else {
                    self.op(size, &[Self::w(0x86, size)], r, rm, None);
                }
                self.wrote(r, size, None);
                self.wrote_rm(rm, size);
            }
            2 => {
                self.op(size, &[0x0F, Self::w(0xC0, size)], r, rm, None);
                self.wrote(r, size, None);
                self.wrote_rm(rm, size);
                self.flags(ARITH, 0);
            }
            _ => {
                self.op(size, &[0x0F, Self::w(0xB0, size)], r, rm, None);
                self.wrote(EAX, size, None);
                self.wrote_rm(rm, size);
                self.flags(ARITH, 0);
            }
        }
        true
    }

    fn cmpxchg8b(&mut self) -> bool {
        if ![EAX, ECX, EDX, EBX].iter().all(|&r| self.usable(r)) {
            return false;
        }
        let m = self.mem(8, true, 0);
        self.maybe_lock(true, Rm::Mem(m));
        self.op(32, &[0x0F, 0xC7], 1, Rm::Mem(m), None);
        self.wrote(EAX, 32, None);
        self.wrote(EDX, 32, None);
        self.flags(ZF, 0);
        true
    }

    fn convert(&mut self) -> bool {
        if !self.usable(EAX) || !self.usable(EDX) {
            return false;
        }
        let size = self.rng.pick(&[16, 32]);
        let cwd = self.rng.chance(50);
        self.start();
        self.p66(size);
        self.b(&[if cwd { 0x99 } else { 0x98 }]);
        if cwd {
            self.wrote(EDX, size, None);
        } else {
            self.wrote(EAX, size, None);
        }
        true
    }

    fn flag_ops(&mut self) -> bool {
        match self.rng.below(9) {
            0 => {
                self.start();
                self.b(&[0xF8]);
                self.flags(CF, 0);
            }
            1 => {
                self.start();
                self.b(&[0xF9]);
                self.flags(CF, 0);
            }
            2 => {
                if !self.can_read(CF) {
                    return false;
                }
                self.start();
                self.b(&[0xF5]);
            }
            3 => {
                self.start();
                let chosen = self.rng.pick(&[0xFC, 0xFD]);
                self.b(&[chosen]);
            }
            4 => {
                // LAHF
                if !self.usable(EAX) || !self.can_read(SF | ZF | AF | PF | CF) {
                    return false;
                }
                self.start();
                self.b(&[0x9F]);
                self.wrote(EAX, 8, None);
            }
            5 => {
                // SAHF
                if !self.usable(EAX) {
                    return false;
                }
                self.start();
                self.b(&[0x9E]);
                self.flags(SF | ZF | AF | PF | CF, 0);
            }
            6 => {
                // PUSHF: every flag is stored
                if !self.stack_allowed() || !self.can_read(ARITH) {
                    return false;
                }
                let size = self.rng.pick(&[16, 32, 32]);
                self.start();
                self.p66(size);
                self.b(&[0x9C]);
                self.set_esp(self.esp().wrapping_sub(size as u32 / 8));
            }
            _ => {
                // POPF/POPFD at CPL 3 with IOPL 0: IF, IOPL (and VM, VIF, VIP) stay, RF is
                // cleared, the rest is the popped value's: TF (a single-step trap after the
                // next instruction; rarely), AC (then #AC on misaligned accesses), NT, ID.
                // Mostly a value pushed just before, sometimes what the stack holds.
                if !self.stack_allowed() {
                    return false;
                }
                let size = self.rng.pick(&[16, 32, 32, 32]);
                let n = size as u32 / 8;
                let pushed = self.rng.chance(85);
                if !pushed && !self.can_pop(n) {
                    return false;
                }
                if pushed {
                    let mut v = self.rng.u32();
                    if !self.rng.chance(4) {
                        v &= !TF;
                    }
                    if !self.rng.chance(15) {
                        v &= !AC;
                    }
                    self.start();
                    self.p66(size);
                    self.b(&[0x68]);
                    self.imm(v, n as u8);
                    self.set_esp(self.esp().wrapping_sub(n));
                }
                self.start();
                self.p66(size);
                self.b(&[0x9D]);
                self.set_esp(self.esp().wrapping_add(n));
                self.flags(ARITH, 0);
            }
        }
        true
    }

    fn push_pop(&mut self) -> bool {
        if !self.stack_allowed() {
            return false;
        }
        let size = self.rng.pick(&[16, 32, 32]);
        let n = size as u32 / 8;
        match self.rng.below(7) {
            0 => {
                let Some(r) = self.reg(size, false) else {
                    return false;
                };
                self.start();
                self.p66(size);
                self.b(&[0x50 + r]);
                self.set_esp(self.esp().wrapping_sub(n));
            }
            1 => {
                self.start();
                self.p66(size);
                let v = self.rng.value();
                if self.rng.chance(50) {
                    self.b(&[0x6A, v as u8]);
                } else {
                    self.b(&[0x68]);
                    self.imm(v, n as u8);
                }
                self.set_esp(self.esp().wrapping_sub(n));
            }
            2 => {
                let m = self.mem(n, false, 0);
                self.op(size, &[0xFF], 6, Rm::Mem(m), None);
                self.set_esp(self.esp().wrapping_sub(n));
            }
            3 | 4 => {
                if !self.can_pop(n) {
                    return false;
                }
                let Some(r) = self.reg(size, true) else {
                    return false;
                };
                self.start();
                self.p66(size);
                self.b(&[0x58 + r]);
                self.wrote(r, size, None);
                self.set_esp(self.esp().wrapping_add(n));
            }
            5 => {
                // POP r/m: an ESP-based address is computed with ESP as the pop left it
                // (SDM POP).
                if !self.can_pop(n) {
                    return false;
                }
                let mut m = self.mem(n, true, 0);
                if m.base == Some(REG_ESP) {
                    m.disp = m.disp.wrapping_sub(n);
                    if m.disp_size == 0 {
                        m.disp_size = 1;
                    }
                    if m.disp_size == 1 && (m.disp as i32) < -128 {
                        m.disp_size = 4;
                    }
                }
                self.op(size, &[0x8F], 0, Rm::Mem(m), None);
                self.set_esp(self.esp().wrapping_add(n));
            }
            _ => {
                // PUSHA / POPA
                if self.rng.chance(50) {
                    if self.st.tainted != 0 {
                        return false;
                    }
                    self.start();
                    self.p66(size);
                    self.b(&[0x60]);
                    self.set_esp(self.esp().wrapping_sub(8 * n));
                } else {
                    if !self.can_pop(8 * n) {
                        return false;
                    }
                    self.start();
                    self.instrs.last_mut().unwrap().fault_clobbers =
                        1 << EAX | 1 << ECX | 1 << EDX | 1 << EBX | 1 << EBP | 1 << ESI | 1 << EDI;
                    self.p66(size);
                    self.b(&[0x61]);
                    for r in [EAX, ECX, EDX, EBX, EBP, ESI, EDI] {
                        self.wrote(r, size, None);
                    }
                    self.set_esp(self.esp().wrapping_add(8 * n));
                }
            }
        }
        true
    }

    fn string(&mut self) -> bool {
        let size = self.size();
        let n = size as u32 / 8;
        // A4 MOVS, A6 CMPS, AA STOS, AC LODS, AE SCAS
        let op = self.rng.pick(&[0xA4u8, 0xA6, 0xAA, 0xAC, 0xAE]);
        let uses_esi = matches!(op, 0xA4 | 0xA6 | 0xAC);
        let uses_edi = matches!(op, 0xA4 | 0xA6 | 0xAA | 0xAE);
        let uses_eax = matches!(op, 0xAA | 0xAC | 0xAE);
        // In a function's body a store walks nowhere near its return address: no REP, and a
        // fresh destination (see Gen::address).
        let in_body = self.ret_slot.is_some() && (op == 0xA4 || op == 0xAA);
        let rep = if in_body { 0 } else { self.rng.below(3) }; // none, REP/REPE, REPNE
        let needs = (uses_esi as u8) << ESI
            | (uses_edi as u8) << EDI
            | (uses_eax as u8) << EAX
            | ((rep != 0) as u8) << ECX;
        if self.st.tainted & needs != 0 {
            return false;
        }
        // The source's segment (DS unless overridden; ES:EDI cannot be), and the address
        // size: 16 bits uses SI, DI and CX (the upper halves stay), which reach the data
        // pages only through the case's segment.
        let src_seg = if uses_esi && self.rng.chance(25) {
            let mut prefixes = vec![0x26, 0x2E, 0x36, 0x3E];
            if self.seg_use & 1 != 0 {
                prefixes.extend([0x64, 0x64, 0x64]);
            }
            Some(self.rng.pick(&prefixes))
        } else {
            None
        };
        let a16 = self.rng.chance(10);
        let mask = if a16 { 0xFFFF } else { u32::MAX };
        // Pointers into the data pages (a long REP walks off their end and faults).
        for (used, r) in [(uses_esi, ESI), (uses_edi, EDI)] {
            if used {
                let dest = r == EDI;
                let a = self.address(n, dest && op != 0xA6 && op != 0xAE);
                let seg = if dest { Some(0x26) } else { src_seg };
                let base = self.seg_base(seg).unwrap_or(0);
                let fine = self.st.known[r as usize].is_some_and(|v| {
                    let lin = base.wrapping_add(v & mask);
                    (GUARD_BELOW..GUARD_ABOVE + PAGE).contains(&lin)
                });
                if !fine || self.rng.chance(50) || (dest && in_body) {
                    let off = a.wrapping_sub(base);
                    let v = if a16 {
                        self.rng.u32() & !0xFFFF | off & 0xFFFF
                    } else {
                        off
                    };
                    self.mov_imm(r, v);
                }
            }
        }
        if rep != 0 && self.rng.chance(80) {
            let count = if self.rng.chance(90) {
                self.rng.below(24)
            } else {
                self.rng.value()
            };
            let count = if a16 {
                // CX alone counts: sometimes 0 with ECX not 0.
                self.rng.u32() & !0xFFFF | count & 0xFFFF
            } else {
                count
            };
            self.mov_imm(ECX, count);
        }
        let count = if rep != 0 {
            self.st.known[ECX as usize].map(|c| c & mask)
        } else {
            Some(1)
        };
        self.start();
        if rep != 0 && (op == 0xA6 || op == 0xAE) {
            // A fault in the middle of a REP CMPS/SCAS: the host leaves EFLAGS as they were
            // before the instruction, wasm86 has those of the last comparison done. The SDM
            // specifies only the registers that let the instruction resume (REP: "the state
            // of the registers is preserved to allow the string operation to be resumed"),
            // and either resumes correctly (each iteration sets the flags it tests).
            self.instrs.last_mut().unwrap().before.undefined_flags |= ARITH;
        }
        let mut prefixes = Vec::new();
        if size == 16 {
            prefixes.push(0x66);
        }
        if let Some(p) = src_seg {
            prefixes.push(p);
        }
        if a16 {
            prefixes.push(0x67);
        }
        for i in (1..prefixes.len()).rev() {
            let j = self.rng.below(i as u32 + 1) as usize;
            prefixes.swap(i, j);
        }
        self.b(&prefixes);
        match rep {
            0 => {}
            1 => self.b(&[0xF3]),
            _ => self.b(&[0xF2]),
        }
        self.b(&[Self::w(op, size)]);
        for r in [ESI, EDI, ECX, EAX] {
            self.st.known[r as usize] = None;
        }
        if op == 0xAC {
            self.wrote(EAX, size, None);
        }
        if op == 0xA6 || op == 0xAE {
            // Flags are written only if the count is not zero.
            if count.is_some_and(|c| c != 0) {
                self.flags(ARITH, 0);
            }
        }
        true
    }

    // -- calls, returns, indirect jumps, frames --

    /// A target outside the code whose fetch faults on both sides: a page that is not
    /// present (a guard page, the page after the code) or an address below 64 KiB. Never
    /// the data pages: this host cannot execute them (NX), wasm86 could.
    fn outside_target(&mut self) -> u32 {
        match self.rng.below(4) {
            0 => GUARD_BELOW + self.rng.below(PAGE),
            1 => GUARD_ABOVE + self.rng.below(PAGE),
            2 => CODE_BASE + PAGE + self.rng.below(64),
            _ => self.rng.below(0x1_0000),
        }
    }

    fn control(&mut self) -> bool {
        match self.rng.below(12) {
            0 => self.jmp_forward(),
            1..=3 => self.indirect(),
            4 => self.call_forward(),
            5 | 6 => self.ret_forward(),
            7 | 8 => self.function(),
            9 | 10 => self.enter(),
            _ => self.leave(),
        }
    }

    /// JMP rel32 forward; rarely a near branch with a 16-bit operand size, whose target is
    /// cut to 16 bits (EIP below 64 KiB: a fetch fault).
    fn jmp_forward(&mut self) -> bool {
        if !self.rng.chance(8) {
            self.start();
            self.b(&[0xE9, 0, 0, 0, 0]);
            self.jump_here(false);
            return true;
        }
        let rel = self.rng.u32();
        self.start();
        match self.rng.below(4) {
            0 => {
                self.b(&[0x66, 0xE9]);
                self.imm(rel, 2);
            }
            1 => self.b(&[0x66, 0xEB, rel as u8]),
            2 => {
                // Jcc rel16: taken or not.
                let cc = self.rng.below(16) as u8;
                if !self.can_read(cond_reads(cc)) {
                    self.b(&[0x90]);
                    return true;
                }
                self.b(&[0x66, 0x0F, 0x80 + cc]);
                self.imm(rel, 2);
            }
            _ => {
                // CALL rel16: pushes IP.
                if !self.stack_allowed() {
                    self.b(&[0x90]);
                    return true;
                }
                self.b(&[0x66, 0xE8]);
                self.imm(rel, 2);
                self.set_esp(self.esp().wrapping_sub(2));
            }
        }
        true
    }

    /// JMP or CALL r/m32 to a later unit (or outside the code), the target loaded into a
    /// register or stored in memory just before; with a 16-bit operand size the target is
    /// the low 16 bits (outside).
    fn indirect(&mut self) -> bool {
        let call = self.rng.chance(50);
        if call && !self.stack_allowed() {
            return false;
        }
        let outside = self.rng.chance(6);
        let size = if outside && self.rng.chance(30) {
            16
        } else {
            32
        };
        let target = if outside { self.outside_target() } else { 0 };
        let digit = if call { 2 } else { 4 };
        let patch_at;
        if self.rng.chance(50) {
            // mov dword [addr], target; jmp/call [addr] (in any addressing form)
            let addr = self.address(4, true);
            self.start();
            self.b(&[0xC7, 0x05]);
            self.d32(addr);
            patch_at = self.code.len();
            self.d32(target);
            let m = self.mem_at(addr, size as u32 / 8, false, 0);
            self.op(size, &[0xFF], digit, Rm::Mem(m), None);
        } else {
            let r = self.rng.pick(&[EAX, ECX, EDX, EBX, EBP, ESI, EDI]);
            self.start();
            self.b(&[0xB8 + r]);
            patch_at = self.code.len();
            self.d32(target);
            self.wrote(r, 32, None);
            self.op(size, &[0xFF], digit, Rm::Reg(r), None);
        }
        if call {
            self.set_esp(self.esp().wrapping_sub(size as u32 / 8));
        }
        if !outside {
            self.jump_at(JumpKind::Abs32, patch_at);
        }
        true
    }

    /// CALL rel32 forward, as a jump that pushes its return address.
    fn call_forward(&mut self) -> bool {
        if !self.stack_allowed() {
            return false;
        }
        self.start();
        self.b(&[0xE8, 0, 0, 0, 0]);
        self.set_esp(self.esp().wrapping_sub(4));
        self.jump_here(false);
        true
    }

    /// The bytes RET imm16 releases: mostly a few dwords, rarely anything.
    fn ret_release(&mut self) -> u32 {
        match self.rng.below(10) {
            0..=3 => 0,
            4..=8 => 4 * self.rng.below(8),
            _ => self.rng.u32() & 0xFFFF,
        }
    }

    /// PUSH target; RET [imm16]: a forward jump through the stack (rarely, a 16-bit RET,
    /// which pops IP alone: outside the code).
    fn ret_forward(&mut self) -> bool {
        if !self.stack_allowed() {
            return false;
        }
        let release = if self.rng.chance(50) {
            Some(self.ret_release())
        } else {
            None
        };
        if !self.can_pop(release.unwrap_or(0)) {
            return false;
        }
        let outside = self.rng.chance(5);
        let target = if outside { self.outside_target() } else { 0 };
        self.start();
        self.b(&[0x68]);
        let patch_at = self.code.len();
        self.d32(target);
        self.set_esp(self.esp().wrapping_sub(4));
        self.start();
        let n = if outside && self.rng.chance(40) {
            self.b(&[0x66]);
            2
        } else {
            4
        };
        match release {
            Some(imm) => {
                self.b(&[0xC2]);
                self.imm(imm, 2);
            }
            None => self.b(&[0xC3]),
        }
        self.set_esp(self.esp().wrapping_add(n + release.unwrap_or(0)));
        if !outside {
            self.jump_at(JumpKind::Abs32, patch_at);
        }
        true
    }

    /// A function: CALL F; JMP after; F: a few units; RET [imm16]; after: ... The body may
    /// use the stack (ESP is brought back to the return address before the RET) but never
    /// writes or pops the return address.
    fn function(&mut self) -> bool {
        if !self.stack_allowed() || self.ret_slot.is_some() {
            return false;
        }
        // CALL over the JMP that follows it.
        self.start();
        self.b(&[0xE8, 5, 0, 0, 0]);
        let slot = self.esp().wrapping_sub(4);
        self.set_esp(slot);
        let jmp = self.instrs.len();
        self.start();
        self.b(&[0xE9]);
        let jmp_patch = self.code.len();
        self.d32(0);
        self.ret_slot = Some(slot);
        for _ in 0..1 + self.rng.below(3) {
            self.land_jumps(false);
            self.unit();
        }
        self.land_jumps(true);
        if self.esp() != slot {
            // lea esp, [esp + pushed]
            let d = slot.wrapping_sub(self.esp());
            self.start();
            if d < 128 {
                self.b(&[0x8D, 0x64, 0x24, d as u8]);
            } else {
                self.b(&[0x8D, 0xA4, 0x24]);
                self.d32(d);
            }
            self.set_esp(slot);
        }
        self.ret_slot = None;
        let release = if self.rng.chance(50) {
            Some(self.ret_release())
        } else {
            None
        };
        self.start();
        match release {
            Some(imm) => {
                self.b(&[0xC2]);
                self.imm(imm, 2);
            }
            None => self.b(&[0xC3]),
        }
        self.set_esp(slot.wrapping_add(4 + release.unwrap_or(0)));
        // The JMP runs after the RET: this is its state, and it jumps here.
        self.instrs[jmp].before = self.st.clone();
        let disp = (self.code.len() - (jmp_patch + 4)) as u32;
        self.code[jmp_patch..jmp_patch + 4].copy_from_slice(&disp.to_le_bytes());
        true
    }

    /// ENTER imm16, imm8: push (E)BP, copy the enclosing frame pointers from [EBP - n],
    /// [EBP - 2n] ... (levels 2 and up; EBP is made to point into the data pages first), push
    /// the frame pointer, allocate.
    fn enter(&mut self) -> bool {
        if !self.stack_allowed() || !self.usable(EBP) {
            return false;
        }
        let size = self.rng.pick(&[16, 32, 32, 32]);
        let n = size as u32 / 8;
        let level = match self.rng.below(10) {
            0..=3 => 0,
            4 | 5 => 1,
            6..=8 => 2 + self.rng.below(3),
            // Only the low 5 bits count.
            _ => self.rng.below(256),
        };
        let depth = level & 31;
        let alloc = match self.rng.below(10) {
            0..=2 => 0,
            3..=8 => 4 * self.rng.below(16),
            _ => self.rng.u32() & 0xFFFF,
        };
        if depth >= 2 {
            let fine = self.st.known[EBP as usize]
                .is_some_and(|v| (GUARD_BELOW..GUARD_ABOVE + PAGE).contains(&v));
            if !fine || self.rng.chance(30) {
                let span = n * depth;
                let v = DATA_BASE + span + self.rng.below(RW_BYTES + PAGE - span);
                self.mov_imm(EBP, v);
            }
        }
        self.start();
        self.p66(size);
        self.b(&[0xC8]);
        self.imm(alloc, 2);
        self.b(&[level as u8]);
        let pushes = if depth == 0 { 1 } else { depth + 1 };
        let frame = self.esp().wrapping_sub(n);
        self.set_esp(self.esp().wrapping_sub(n * pushes + alloc));
        if size == 32 {
            self.wrote(EBP, 32, Some(frame));
        } else {
            self.wrote(EBP, 16, None);
        }
        true
    }

    /// LEAVE: ESP = EBP (EBP made to point near the stack or into the data pages), pop
    /// (E)BP.
    fn leave(&mut self) -> bool {
        if !self.stack_allowed() || self.ret_slot.is_some() {
            return false;
        }
        let size = self.rng.pick(&[16, 32, 32, 32]);
        let n = size as u32 / 8;
        let fine = self.usable(EBP)
            && self.st.known[EBP as usize]
                .is_some_and(|v| (GUARD_BELOW..GUARD_ABOVE + PAGE).contains(&v));
        if !fine || self.rng.chance(40) {
            let v = if self.rng.chance(60) {
                self.esp().wrapping_add(4 * self.rng.below(16))
            } else {
                self.address(n, false)
            };
            self.mov_imm(EBP, v);
        }
        let ebp = self.st.known[EBP as usize].unwrap();
        self.start();
        self.p66(size);
        self.b(&[0xC9]);
        self.set_esp(ebp.wrapping_add(n));
        self.wrote(EBP, size, None);
        true
    }

    /// XLAT: AL = [seg:(E)BX + AL] (with an address-size prefix, BX + AL wraps at 64 KiB).
    fn xlat(&mut self) -> bool {
        if !self.usable(EAX) {
            return false;
        }
        let addr = self.address(1, false);
        let seg = self.pick_seg(addr, 1, false);
        let base = self.seg_base(seg).unwrap_or(0);
        let off = addr.wrapping_sub(base);
        // EBX such that EBX + AL is the address; when AL is unknown, within 255 bytes of it.
        let al = self.st.known[EAX as usize].map_or(self.rng.below(256), |v| v & 0xFF);
        let a16 = self.rng.chance(15);
        let bx = off.wrapping_sub(al);
        let bx = if a16 {
            self.rng.u32() & !0xFFFF | bx & 0xFFFF
        } else {
            bx
        };
        self.mov_imm(EBX, bx);
        let m = Mem {
            base: None,
            index: None,
            disp: 0,
            disp_size: 0,
            seg,
            addr,
            a16: a16.then_some(7),
            len: 1,
        };
        self.start();
        self.prefixes(32, Rm::Mem(m));
        self.b(&[0xD7]);
        self.wrote(EAX, 8, None);
        true
    }

    fn bcd(&mut self) -> bool {
        if !self.usable(EAX) {
            return false;
        }
        match self.rng.below(4) {
            0 => {
                // DAA / DAS
                if !self.can_read(AF | CF) {
                    return false;
                }
                self.start();
                let chosen = self.rng.pick(&[0x27, 0x2F]);
                self.b(&[chosen]);
                self.wrote(EAX, 8, None);
                self.flags(CF | AF | SF | ZF | PF, OF);
            }
            1 => {
                // AAA / AAS
                if !self.can_read(AF) {
                    return false;
                }
                self.start();
                let chosen = self.rng.pick(&[0x37, 0x3F]);
                self.b(&[chosen]);
                self.wrote(EAX, 16, None);
                self.flags(AF | CF, OF | SF | ZF | PF);
            }
            _ => {
                // AAM / AAD imm8 (AAM 0 is #DE)
                let aam = self.rng.chance(50);
                let imm = self.rng.pick(&[10u8, 10, 0, 1, 16, 0xFF, 7]);
                let imm = if self.rng.chance(20) {
                    self.rng.u32() as u8
                } else {
                    imm
                };
                self.start();
                self.b(&[if aam { 0xD4 } else { 0xD5 }, imm]);
                self.wrote(EAX, 16, None);
                self.flags(SF | ZF | PF, OF | AF | CF);
            }
        }
        true
    }

    fn rare(&mut self) -> bool {
        match self.rng.below(6) {
            0 => {
                // INTO: #OF when OF is set
                if !self.can_read(OF) {
                    return false;
                }
                self.start();
                self.b(&[0xCE]);
            }
            1 => {
                // BOUND r, m32&32: #BR when out of range
                let size = self.rng.pick(&[16, 32]);
                let Some(r) = self.reg(size, false) else {
                    return false;
                };
                let m = self.mem(2 * size as u32 / 8, false, 0);
                self.op(size, &[0x62], r, Rm::Mem(m), None);
            }
            2 => {
                // UD2
                self.start();
                self.b(&[0x0F, 0x0B]);
            }
            3 => {
                // HLT and CLI at CPL 3: #GP(0)
                self.start();
                let chosen = self.rng.pick(&[0xF4, 0xFA]);
                self.b(&[chosen]);
            }
            4 => {
                // A write through CS: #GP(0)
                let size = self.size();
                let Some(r) = self.reg(size, false) else {
                    return false;
                };
                let mut m = self.mem(size as u32 / 8, true, 0);
                m.seg = Some(0x2E);
                self.op(size, &[Self::w(0x88, size)], r, Rm::Mem(m), None);
            }
            _ => {
                self.start();
                self.b(&[0x90]);
            }
        }
        true
    }

    // -- x87 --

    /// An x87 value of one of the memory formats (2, 4, 8 or 10 bytes): specials often.
    fn x87_value(&mut self, len: usize) -> Vec<u8> {
        match len {
            2 => {
                let v = self.rng.pick(&[0u16, 1, 0xFFFF, 0x8000, 0x7FFF, 2, 10]);
                let v = if self.rng.chance(50) {
                    v
                } else {
                    self.rng.u32() as u16
                };
                v.to_le_bytes().to_vec()
            }
            4 => {
                let v = self.rng.pick(&[
                    0u32,
                    0x8000_0000,
                    0x0000_0001,
                    0x007F_FFFF,
                    0x0080_0000,
                    0x7F80_0000,
                    0xFF80_0000,
                    0x7FC0_0000,
                    0x7F80_0001,
                    0xFFC0_0000,
                    0x3F80_0000,
                    0x4000_0000,
                    0x3F00_0000,
                    0x7F7F_FFFF,
                    0x8000_0001,
                    0x7FFF_FFFF,
                    0x4B00_0001,
                    1,
                ]);
                let v = if self.rng.chance(60) {
                    v
                } else {
                    self.rng.u32()
                };
                v.to_le_bytes().to_vec()
            }
            8 => {
                let v = self.rng.pick(&[
                    0u64,
                    0x8000_0000_0000_0000,
                    1,
                    0x000F_FFFF_FFFF_FFFF,
                    0x0010_0000_0000_0000,
                    0x7FF0_0000_0000_0000,
                    0xFFF0_0000_0000_0000,
                    0x7FF8_0000_0000_0000,
                    0x7FF0_0000_0000_0001,
                    0x3FF0_0000_0000_0000,
                    0x3FE0_0000_0000_0000,
                    0x4330_0000_0000_0001,
                    0x7FEF_FFFF_FFFF_FFFF,
                    0x7FFF_FFFF_FFFF_FFFF,
                    0x0000_0000_7FFF_FFFF,
                ]);
                let v = if self.rng.chance(60) {
                    v
                } else {
                    self.rng.next()
                };
                v.to_le_bytes().to_vec()
            }
            _ => {
                if self.rng.chance(30) {
                    // Packed BCD: 9 bytes of digit pairs and a sign byte (sometimes invalid).
                    let mut b: Vec<u8> = (0..9)
                        .map(|_| {
                            let hi = self.rng.below(10) as u8;
                            let lo = self.rng.below(10) as u8;
                            hi << 4 | lo
                        })
                        .collect();
                    if self.rng.chance(20) {
                        b[self.rng.below(9) as usize] |= 0xA0;
                    }
                    b.push(if self.rng.chance(50) { 0x80 } else { 0 });
                    b
                } else {
                    self.f80().to_vec()
                }
            }
        }
    }

    /// An 80-bit value: normals near 1 and across the range, zeros, denormals, pseudo-
    /// denormals, infinities, NaNs, unnormals and the other pseudo-values, integers.
    fn f80(&mut self) -> [u8; 10] {
        let sign = (self.rng.below(2) as u16) << 15;
        let random = self.rng.next();
        let (exp, mant): (u16, u64) = match self.rng.below(16) {
            0 => (0, 0),
            1 => (0, random >> 1 >> self.rng.below(63)), // denormal
            2 => (0, random | 1 << 63),                  // pseudo-denormal
            3 => (0x7FFF, 1 << 63),                      // infinity
            4 => (0x7FFF, (random | 1 << 63) & !(1 << 62)), // signalling NaN
            5 => (0x7FFF, random | 3 << 62),             // quiet NaN
            6 => (0x7FFF, random & !(1 << 63)),          // pseudo-NaN/infinity
            7 => (1 + self.rng.below(0x7FFE) as u16, random >> 1), // unnormal
            8 => (0x3FFF + self.rng.below(64) as u16, random | 1 << 63),
            9 => {
                // A small integer, exactly.
                let v = (self.rng.below(2000) as u64) + 1;
                let shift = v.leading_zeros();
                (0x3FFF + 63 - shift as u16, v << shift)
            }
            10 => (
                self.rng.pick(&[1, 2, 0x7FFE, 0x7FFD, 0x3FFF, 0x3FFE]),
                random | 1 << 63,
            ),
            11 => (0x3FFF, 1 << 63), // 1.0
            12 => (0x3FBF + self.rng.below(0x80) as u16, random | 1 << 63),
            _ => (1 + self.rng.below(0x7FFE) as u16, random | 1 << 63),
        };
        let mut b = [0u8; 10];
        b[..8].copy_from_slice(&mant.to_le_bytes());
        b[8..].copy_from_slice(&(sign | exp).to_le_bytes());
        b
    }

    /// A memory operand of `len` bytes for an x87 load, often holding a special value.
    fn x87_mem(&mut self, len: u32, write: bool) -> Mem {
        let m = self.mem(len, write, 0);
        if !write && self.rng.chance(70) {
            self.patch(m.addr, len as usize);
        }
        m
    }

    /// Write a random x87 value of `len` bytes over the initial data at `addr` (if that is in
    /// the writable pages).
    fn patch(&mut self, addr: u32, len: usize) {
        let offset = addr.wrapping_sub(DATA_BASE);
        if offset as usize + len <= RW_BYTES as usize {
            let bytes = self.x87_value(len);
            self.patches.push((offset, bytes));
        }
    }

    /// An x87 instruction with a register operand: `op` then `base + i`.
    fn x87_reg(&mut self, op: u8, base: u8) {
        self.start();
        let i = self.rng.below(8) as u8;
        self.b(&[op, base + i]);
    }

    fn x87_load_store(&mut self) -> bool {
        // (opcode, /digit, memory bytes, store)
        const FORMS: [(u8, u8, u32, bool); 17] = [
            (0xD9, 0, 4, false),  // FLD m32
            (0xDD, 0, 8, false),  // FLD m64
            (0xDB, 5, 10, false), // FLD m80
            (0xDF, 0, 2, false),  // FILD m16
            (0xDB, 0, 4, false),  // FILD m32
            (0xDF, 5, 8, false),  // FILD m64
            (0xDF, 4, 10, false), // FBLD
            (0xD9, 2, 4, true),   // FST m32
            (0xD9, 3, 4, true),   // FSTP m32
            (0xDD, 2, 8, true),   // FST m64
            (0xDD, 3, 8, true),   // FSTP m64
            (0xDB, 7, 10, true),  // FSTP m80
            (0xDF, 2, 2, true),   // FIST m16
            (0xDF, 3, 2, true),   // FISTP m16
            (0xDB, 2, 4, true),   // FIST m32
            (0xDB, 3, 4, true),   // FISTP m32
            (0xDF, 7, 8, true),   // FISTP m64
        ];
        if self.rng.chance(10) {
            // FBSTP m80
            let m = self.x87_mem(10, true);
            self.op(32, &[0xDF], 6, Rm::Mem(m), None);
            self.instrs.last_mut().unwrap().split_store = Some((m.addr, 10));
        } else {
            let (op, digit, len, store) = self.rng.pick(&FORMS);
            let m = self.x87_mem(len, store);
            self.op(32, &[op], digit, Rm::Mem(m), None);
            if store && len == 10 {
                self.instrs.last_mut().unwrap().split_store = Some((m.addr, 10));
            }
        }
        // SDM: C1 is defined (stack fault or rounding); C0, C2 and C3 are undefined.
        self.sw(C1, C0 | C2 | C3);
        true
    }

    fn x87_arith(&mut self) -> bool {
        let digit = self.rng.below(8) as u8;
        let compare = digit == 2 || digit == 3;
        match self.rng.below(5) {
            0 => {
                let m = self.x87_mem(4, false);
                self.op(32, &[0xD8], digit, Rm::Mem(m), None);
            }
            1 => {
                let m = self.x87_mem(8, false);
                self.op(32, &[0xDC], digit, Rm::Mem(m), None);
            }
            2 => {
                let (op, len) = self.rng.pick(&[(0xDAu8, 4u32), (0xDE, 2)]);
                let m = self.x87_mem(len, false);
                self.op(32, &[op], digit, Rm::Mem(m), None);
            }
            3 => self.x87_reg(0xD8, 0xC0 + 8 * digit),
            _ => {
                // DC and DE register forms (their /2 and /3 are aliases: left out, but FCOMPP)
                if compare {
                    self.start();
                    self.b(&[0xDE, 0xD9]);
                } else {
                    let op = self.rng.pick(&[0xDC, 0xDE]);
                    self.x87_reg(op, 0xC0 + 8 * digit);
                }
            }
        }
        if compare {
            self.sw(CC, 0);
        } else {
            self.sw(C1, C0 | C2 | C3);
        }
        true
    }

    /// FNSTENV, FNSAVE (or, after a WAIT, FSTENV and FSAVE), FLDENV and FRSTOR, with 16-
    /// and 32-bit operand sizes.
    ///
    /// The stored images are compared byte for byte but for the fields the SDM makes
    /// model-specific, which the instructions after overwrite with zeros (so that both
    /// sides agree on what later loads or reads find): FCS and FDS (zero on processors that
    /// deprecate them, CPUID.(EAX=7,ECX=0):EBX[13], as this host does; the selectors in
    /// wasm86), FDP (updated only for unmasked exceptions on some processors,
    /// CPUID.(EAX=7,ECX=0):EBX[6], as on this host; always in wasm86) and FOP (likewise
    /// stored only for an unmasked exception unless the Pentium 4's fopcode compatibility
    /// mode is on, SDM Vol. 1 8.1.9). FIP, the last non-control instruction's address
    /// (its first prefix), is compared, as are the reserved upper halves.
    fn x87_env(&mut self) -> bool {
        let op32 = self.rng.chance(75);
        let size = if op32 { 32 } else { 16 };
        let env_len = if op32 { 28 } else { 14 };
        let full = self.rng.chance(50);
        let len = env_len + if full { 80 } else { 0 };
        let opcode = if full { 0xDD } else { 0xD9 };
        if self.rng.chance(50) {
            let m = self.mem(len, true, 0);
            if self.rng.chance(25) {
                self.start();
                self.b(&[0x9B]);
            }
            let undefined_sw = self.st.undefined_sw;
            self.op(size, &[opcode], 6, Rm::Mem(m), None);
            self.instrs.last_mut().unwrap().split_store = Some((m.addr, len));
            // (offset, width) of FCS(+FOP), FDP, FDS, and the status word if some of its
            // condition codes are undefined (cleared by an AND, the rest by MOVs).
            let mut fields: Vec<(u32, u32)> = if op32 {
                vec![(16, 4), (20, 4), (24, 2)]
            } else {
                vec![(8, 2), (10, 2), (12, 2)]
            };
            let sw_at = if op32 { 4 } else { 2 };
            if undefined_sw != 0 {
                fields.insert(0, (sw_at, 2));
            }
            for k in 0..fields.len() {
                self.start();
                self.instrs.last_mut().unwrap().undefined_mem = fields[k..]
                    .iter()
                    .map(|&(o, w)| (m.addr.wrapping_add(o), w))
                    .collect();
                let (o, w) = fields[k];
                if o == sw_at && w == 2 {
                    // and word [sw], ~undefined
                    self.b(&[0x66, 0x81, 0x25]);
                    self.d32(m.addr.wrapping_add(o));
                    self.imm(!undefined_sw as u32, 2);
                    self.flags(ARITH & !AF, AF);
                    continue;
                }
                if w == 2 {
                    self.b(&[0x66]);
                }
                self.b(&[0xC7, 0x05]);
                self.d32(m.addr.wrapping_add(o));
                self.imm(0, w as u8);
            }
            if full {
                // FNSAVE initialises the FPU.
                self.sw(CC, 0);
            }
        } else {
            // An image with the control word chosen (stored just before, as for FLDCW) and
            // the rest random, or made of interesting values.
            let addr = self.address(len, false);
            let m = self.mem_at(addr, len, false, 0);
            let offset = m.addr.wrapping_sub(DATA_BASE);
            // The control word is stored: never over a function's return address.
            if self
                .ret_slot
                .is_some_and(|s| m.addr < s.wrapping_add(4) && s < m.addr.wrapping_add(2))
            {
                return false;
            }
            if offset <= RW_BYTES - 2 {
                if offset <= RW_BYTES - len && self.rng.chance(70) {
                    let mut image = Vec::new();
                    let sw = self.rng.u32() as u16;
                    let tw = self.rng.u32() as u16;
                    if op32 {
                        for v in [0, sw as u32 | 0xFFFF_0000, tw as u32 | 0xFFFF_0000] {
                            image.extend_from_slice(&v.to_le_bytes());
                        }
                        for _ in 0..4 {
                            image.extend_from_slice(&self.rng.u32().to_le_bytes());
                        }
                    } else {
                        for v in [0, sw, tw] {
                            image.extend_from_slice(&v.to_le_bytes());
                        }
                        for _ in 0..4 {
                            image.extend_from_slice(&(self.rng.u32() as u16).to_le_bytes());
                        }
                    }
                    if full {
                        for _ in 0..8 {
                            let v = self.f80();
                            image.extend_from_slice(&v);
                        }
                    }
                    self.patches.push((offset, image));
                }
                let cw = self.control_word();
                self.start();
                self.b(&[0x66, 0xC7, 0x05]);
                self.d32(m.addr);
                self.imm(cw as u32, 2);
            } else if m.addr >= DATA_BASE && m.addr + 2 <= GUARD_ABOVE {
                // Readable, not (all) writable: a random control word.
                return false;
            }
            self.op(size, &[opcode], 4, Rm::Mem(m), None);
            self.sw(CC, 0);
        }
        true
    }

    fn x87_other(&mut self) -> bool {
        match self.rng.below(14) {
            0 => {
                // FLD ST(i), FXCH, FST ST(i), FSTP ST(i)
                let (op, base) =
                    self.rng
                        .pick(&[(0xD9u8, 0xC0u8), (0xD9, 0xC8), (0xDD, 0xD0), (0xDD, 0xD8)]);
                self.x87_reg(op, base);
                self.sw(C1, C0 | C2 | C3);
            }
            1 => {
                // FUCOM, FUCOMP, FUCOMPP, FTST, FXAM
                match self.rng.below(4) {
                    0 => self.x87_reg(0xDD, 0xE0),
                    1 => self.x87_reg(0xDD, 0xE8),
                    2 => {
                        self.start();
                        self.b(&[0xDA, 0xE9]);
                    }
                    _ => {
                        self.start();
                        let chosen = self.rng.pick(&[0xE4, 0xE5]);
                        self.b(&[0xD9, chosen]);
                    }
                }
                self.sw(CC, 0);
            }
            2 => {
                // FCOMI, FCOMIP, FUCOMI, FUCOMIP: ZF, PF, CF; OF, SF and AF cleared
                let (op, base) =
                    self.rng
                        .pick(&[(0xDBu8, 0xF0u8), (0xDF, 0xF0), (0xDB, 0xE8), (0xDF, 0xE8)]);
                self.x87_reg(op, base);
                self.flags(ARITH, 0);
                // C1: the SDM says "set to 0", Intel hardware (and wasm86) keeps it unless
                // the stack underflows: its status is unchanged. C0, C2, C3 unaffected.
            }
            3 => {
                // FCMOVcc
                let (op, base) = self.rng.pick(&[
                    (0xDAu8, 0xC0u8),
                    (0xDA, 0xC8),
                    (0xDA, 0xD0),
                    (0xDA, 0xD8),
                    (0xDB, 0xC0),
                    (0xDB, 0xC8),
                    (0xDB, 0xD0),
                    (0xDB, 0xD8),
                ]);
                let reads = match base {
                    0xC0 => CF,
                    0xC8 => ZF,
                    0xD0 => CF | ZF,
                    _ => PF,
                };
                if !self.can_read(reads) {
                    return false;
                }
                self.x87_reg(op, base);
                // C1 changes only on a stack underflow (SDM FCMOVcc): its status is unchanged.
                self.sw(0, C0 | C2 | C3);
            }
            4 => {
                // FCHS FABS FXTRACT FSQRT FRNDINT FSCALE FDECSTP FINCSTP and the constants
                let op = self.rng.pick(&[
                    0xE0u8, 0xE1, 0xF4, 0xFA, 0xFC, 0xFD, 0xF6, 0xF7, 0xE8, 0xE9, 0xEA, 0xEB, 0xEC,
                    0xED, 0xEE,
                ]);
                self.start();
                self.b(&[0xD9, op]);
                if op == 0xF4 {
                    // FXTRACT sets C1 only on a stack fault (SDM FXTRACT).
                    self.sw(0, C0 | C2 | C3);
                } else {
                    self.sw(C1, C0 | C2 | C3);
                }
            }
            5 => {
                // FPREM, FPREM1: all four condition codes defined
                self.start();
                let chosen = self.rng.pick(&[0xF8, 0xF5]);
                self.b(&[0xD9, chosen]);
                self.sw(CC, 0);
            }
            6 => {
                // FNSTSW AX / m16 (or, after a WAIT, FSTSW): the condition codes that are
                // undefined are cleared in the stored word by an AND right after (while the
                // case stops at the AND, they are undefined there); afterwards all four are
                // undefined (SDM FSTSW).
                let undefined = self.st.undefined_sw;
                if self.rng.chance(20) {
                    self.start();
                    self.b(&[0x9B]);
                }
                if self.rng.chance(60) && self.usable(EAX) {
                    self.start();
                    self.b(&[0xDF, 0xE0]);
                    self.wrote(EAX, 16, None);
                    if undefined != 0 {
                        // and ax, ~undefined
                        self.start();
                        self.instrs.last_mut().unwrap().before.tainted |= 1 << EAX;
                        self.b(&[0x66, 0x25]);
                        self.imm(!undefined as u32, 2);
                        self.wrote(EAX, 16, None);
                        self.flags(ARITH & !AF, AF);
                    }
                } else {
                    let m = self.mem(2, true, 0);
                    self.op(32, &[0xDD], 7, Rm::Mem(m), None);
                    if undefined != 0 {
                        // and word [m], ~undefined (where the store went, if it did)
                        self.start();
                        self.instrs.last_mut().unwrap().undefined_mem = vec![(m.addr, 2)];
                        self.b(&[0x66, 0x81, 0x25]);
                        self.d32(m.addr);
                        self.imm(!undefined as u32, 2);
                        self.flags(ARITH & !AF, AF);
                    }
                }
                self.sw(0, CC);
            }
            7 => {
                // FNSTCW m16 (or FSTCW)
                let m = self.mem(2, true, 0);
                if self.rng.chance(20) {
                    self.start();
                    self.b(&[0x9B]);
                }
                self.op(32, &[0xD9], 7, Rm::Mem(m), None);
                self.sw(0, CC);
            }
            8 => {
                // FLDCW m16 with a chosen control word, stored there just before (a patch
                // of the initial data could be overwritten on the way by another patch or
                // store, and a random control word may unmask exceptions); none in the
                // read-only page.
                let m = self.mem(2, true, 0);
                let offset = m.addr.wrapping_sub(DATA_BASE);
                if offset <= RW_BYTES - 2 {
                    let cw = self.control_word();
                    self.start();
                    self.b(&[0x66, 0xC7, 0x05]);
                    self.d32(m.addr);
                    self.imm(cw as u32, 2);
                } else if m.addr >= DATA_BASE && m.addr + 2 <= GUARD_ABOVE {
                    // Readable, not (all) writable.
                    return false;
                }
                self.op(32, &[0xD9], 5, Rm::Mem(m), None);
                self.sw(0, CC);
            }
            9 => {
                // FFREE ST(i), FNCLEX, FNOP
                match self.rng.below(3) {
                    0 => self.x87_reg(0xDD, 0xC0),
                    1 => {
                        self.start();
                        self.b(&[0xDB, 0xE2]);
                    }
                    _ => {
                        self.start();
                        self.b(&[0xD9, 0xD0]);
                    }
                }
                self.sw(0, CC);
            }
            10 => {
                // FWAIT
                self.start();
                self.b(&[0x9B]);
            }
            11 => {
                // FNINIT
                if !self.rng.chance(20) {
                    return false;
                }
                self.start();
                self.b(&[0xDB, 0xE3]);
                self.sw(CC, 0);
            }
            _ => {
                // FCOM/FCOMP ST(i)
                let base = self.rng.pick(&[0xD0u8, 0xD8]);
                self.x87_reg(0xD8, base);
                self.sw(CC, 0);
            }
        }
        true
    }

    /// A control word: all exceptions masked mostly, any precision but the reserved one, any
    /// rounding.
    fn control_word(&mut self) -> u16 {
        let masks = if !self.unmasked || self.rng.chance(80) {
            0x3F
        } else {
            self.rng.u32() as u16 & 0x3F
        };
        let precision = self.rng.pick(&[0u16, 2, 3, 3]) << 8;
        let rounding = (self.rng.below(4) as u16) << 10;
        let infinity = (self.rng.below(2) as u16) << 12;
        masks | 0x40 | precision | rounding | infinity
    }

    // -- a whole case --

    fn unit(&mut self) {
        loop {
            let emitted = match self.rng.below(108) {
                0..=9 => self.alu(),
                10..=15 => self.mov(),
                16..=20 => self.inc_dec_not_neg(),
                21..=23 => self.test(),
                24..=31 => self.shift(),
                32..=34 => self.shld_shrd(),
                35..=39 => self.mul(),
                40..=43 => self.div(),
                44..=46 => self.bit_test(),
                47..=48 => self.bit_scan(),
                49..=52 => self.setcc_cmov(),
                53..=57 => self.jcc(),
                58..=59 => self.lea(),
                60..=61 => self.movx(),
                62..=64 => self.xchg_xadd_cmpxchg(),
                65 => self.cmpxchg8b(),
                66..=67 => self.convert(),
                68..=70 => self.flag_ops(),
                71..=74 => self.push_pop(),
                75..=78 => self.string(),
                79..=80 => self.bcd(),
                81 => self.rare(),
                82..=88 => self.x87_load_store(),
                89..=94 => self.x87_arith(),
                95..=98 => self.x87_other(),
                99 => self.x87_env(),
                100..=106 => self.control(),
                _ => self.xlat(),
            };
            if emitted {
                return;
            }
        }
    }

    fn initial_fpu(&mut self) -> [u8; FSAVE_BYTES] {
        let mut image = [0u8; FSAVE_BYTES];
        let cw = self.control_word();
        let top = self.rng.below(8) as u16;
        // Sticky exception flags only where masked (nothing pending), random condition codes.
        let mut flags = self.rng.u32() as u16 & cw & 0x3F;
        if flags & 1 == 0 {
            flags &= !0x40;
        } else if self.rng.chance(30) {
            flags |= 0x40; // SF
        }
        let sw = flags | (self.rng.u32() as u16 & CC) | top << 11;
        // Non-empty registers: a random stack depth, sometimes holes.
        let depth = self.rng.below(9);
        let mut tags = 0xFFFFu16;
        for i in 0..depth {
            let phys = (top + i as u16) & 7;
            tags &= !(3 << (2 * phys));
        }
        if self.rng.chance(20) {
            tags ^= 3 << (2 * self.rng.below(8));
        }
        image[0..2].copy_from_slice(&cw.to_le_bytes());
        image[4..6].copy_from_slice(&sw.to_le_bytes());
        image[8..10].copy_from_slice(&tags.to_le_bytes());
        for i in 0..8 {
            let v = self.f80();
            image[28 + 10 * i..38 + 10 * i].copy_from_slice(&v);
        }
        image
    }
}

/// Whether control words may unmask x87 exceptions (`WASM86_DIFF_UNMASKED=1`). Off by
/// default: with unmasked exceptions this host sets the condition codes of compares, and
/// computes those of FPREM/FPREM1 and the flags of stores, differently from wasm86 (see the
/// list in the test's report); on once those are settled.
fn unmasked_x87_exceptions() -> bool {
    env_u64("WASM86_DIFF_UNMASKED").is_some_and(|v| v != 0)
}

/// The case's own data segment and where it is used (FS: bit 0, ES: bit 1), or none. Based
/// so that 16-bit offsets reach the data pages (DATA_BASE - 44 KiB ..= DATA_BASE) or, when
/// expand-down, so that its top pages are the data pages; sometimes with a byte-granular
/// limit among the data pages, sometimes read-only.
fn case_segment(rng: &mut Rng) -> (CaseSeg, u32) {
    let kind = rng.below(10);
    if kind < 4 {
        return (CaseSeg::default(), 0);
    }
    let use_ = rng.pick(&[1, 1, 1, 2, 3, 3, 3]);
    let low_base = if rng.chance(50) {
        DATA_BASE - PAGE * rng.below(12)
    } else {
        DATA_BASE - rng.below(0xB001)
    };
    let mut seg = CaseSeg {
        base: low_base,
        limit: 0xF_FFFF,
        pages: true,
        read_only: false,
        expand_down: false,
    };
    match kind {
        4..=6 => {}
        7 => {
            seg.pages = false;
            seg.limit = DATA_BASE - low_base + rng.below(RW_BYTES + PAGE);
        }
        8 => seg.read_only = true,
        _ => {
            seg.expand_down = true;
            seg.limit = 0xF_FFFF - (1 + rng.below(6));
            seg.base = DATA_BASE + PAGE * (1 + rng.below(5)) + rng.below(PAGE);
        }
    }
    (seg, use_)
}

/// The case `index` of `seed`.
fn generate(seed: u64, index: u64) -> Case {
    let mut state = seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut rng = Rng(splitmix(&mut state));
    let mut regs = [0u32; 8];
    for r in &mut regs {
        *r = if rng.chance(35) {
            DATA_BASE + rng.below(RW_BYTES)
        } else {
            rng.value()
        };
    }
    regs[REG_ESP as usize] = match rng.below(20) {
        0 | 1 => DATA_BASE + rng.below(24),
        2 | 3 => RO_PAGE - rng.below(24),
        4 | 5 => DATA_BASE + rng.below(RW_BYTES),
        // In the read-only page: pushes fault.
        6 => RO_PAGE + rng.below(PAGE),
        _ => DATA_BASE + 0x400 + 4 * rng.below((RW_BYTES - 0x800) / 4),
    };
    // Never TF: the host would trap in its own code before the case starts. AC rarely: a
    // misaligned access then raises #AC (Linux runs user code with CR0.AM set).
    let mut eflags = 0x2 | IF | (rng.u32() & ARITH);
    for (flag, percent) in [(DF, 20), (NT, 10), (ID, 30), (AC, 4)] {
        if rng.chance(percent) {
            eflags |= flag;
        }
    }
    let (seg, seg_use) = case_segment(&mut rng);
    let fill_seed = rng.next();
    let mut g = Gen {
        rng,
        code: Vec::new(),
        instrs: Vec::new(),
        st: Track {
            undefined_flags: 0,
            undefined_sw: 0,
            tainted: 0,
            known: regs.map(Some),
        },
        jumps: Vec::new(),
        patches: Vec::new(),
        unmasked: unmasked_x87_exceptions(),
        seg,
        seg_use,
        lock: false,
        ret_slot: None,
    };
    let fpu = g.initial_fpu();
    let units = 1 + g.rng.below(16);
    for _ in 0..units {
        g.land_jumps(false);
        g.unit();
        assert!(g.code.len() < PAGE as usize - 64);
    }
    g.land_jumps(true);
    g.start();
    g.b(&[0xCC]);
    Case {
        code: g.code,
        regs,
        eflags,
        fpu,
        seg,
        seg_use,
        fill_seed,
        patches: g.patches,
        instrs: g.instrs,
    }
}

// ---- Running ----

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

/// Find the first instruction after which the two sides differ, by running the case cut
/// short before each of its instructions; a line for the report.
fn first_divergence(case: &Case, emu: &mut Emulator) -> String {
    let cuts: Vec<Case> = (0..case.instrs.len()).map(|k| case.truncated(k)).collect();
    let host_outcomes = run_on_host(&cuts);
    for (k, (cut, host)) in cuts.iter().zip(&host_outcomes).enumerate() {
        let diffs = match emu.run(cut) {
            Ok(out) => differences(cut, host, &out),
            Err(e) => vec![e],
        };
        if !diffs.is_empty() {
            return match k.checked_sub(1) {
                None => format!("the states differ before the first instruction: {diffs:?}"),
                Some(i) => format!(
                    "the states first differ after the instruction at {:#x} ({}): {}\n    \
                     the host's state before it:\n{}",
                    CODE_BASE + case.instrs[i].offset,
                    instruction_text(case, case.instrs[i].offset),
                    diffs.join("; "),
                    describe(&host_outcomes[i])
                ),
            };
        }
    }
    "every cut-short run agrees".to_string()
}

/// Run `cases` (numbered from `first`) on both sides; returns the number of mismatches, of
/// which the first few (counting the `earlier` ones) are reported in full.
fn run_cases(
    seed: u64,
    first: u64,
    cases: &[Case],
    emu: &mut Emulator,
    earlier: usize,
    stats: &mut [u64; 32],
) -> usize {
    let host = run_on_host(cases);
    let mut mismatches = earlier;
    for (n, (case, host)) in cases.iter().zip(&host).enumerate() {
        let index = first + n as u64;
        stats[host.trapno.min(31) as usize] += 1;
        if env_u64("WASM86_DIFF_DUMP").is_some_and(|v| v != 0) {
            eprintln!(
                "case {index}:\n{}host:\n{}",
                disassemble(case, host.eip),
                describe(host)
            );
        }
        let diffs = match emu.run(case) {
            Ok(emu_out) => {
                let diffs = differences(case, host, &emu_out);
                if !diffs.is_empty() && mismatches < REPORTED {
                    report(seed, index, case, host, &emu_out, &diffs);
                }
                diffs
            }
            Err(e) => {
                if mismatches < REPORTED {
                    eprintln!(
                        "MISMATCH: seed {seed:#x} case {index}: {e}\ncode:\n{}host:\n{}",
                        disassemble(case, host.eip),
                        describe(host)
                    );
                }
                vec![e]
            }
        };
        if !diffs.is_empty() {
            if mismatches < REPORTED {
                eprintln!("    {}\n", first_divergence(case, emu));
            } else if mismatches < SUMMARISED {
                eprintln!("case {index}: {}", first_divergence(case, emu));
            }
            mismatches += 1;
        }
    }
    mismatches
}

/// How many mismatches are reported in full, and in a line each.
const REPORTED: usize = 5;
const SUMMARISED: usize = 100;

#[test]
fn random_sequences_match_the_host_cpu() {
    let seed = env_u64("WASM86_DIFF_SEED").unwrap_or(0x005E_ED0F_D1FF);
    let count = env_u64("WASM86_DIFF_CASES").unwrap_or(50_000);
    let only = env_u64("WASM86_DIFF_ONLY");
    let (first, count) = match only {
        Some(n) => (n, 1),
        None => (0, count),
    };
    eprintln!("differential: seed {seed:#x}, {count} cases from {first}");
    let start = Instant::now();
    let mut emu = Emulator::new();
    let mut mismatches = 0;
    // How the cases ended on the host, by vector.
    let mut stats = [0u64; 32];
    let batch = 5_000;
    let mut done = 0;
    while done < count {
        let n = batch.min(count - done);
        let cases: Vec<Case> = (0..n).map(|i| generate(seed, first + done + i)).collect();
        mismatches = run_cases(seed, first + done, &cases, &mut emu, mismatches, &mut stats);
        done += n;
    }
    eprintln!(
        "differential: {count} cases, {mismatches} mismatches, {:.1} s",
        start.elapsed().as_secs_f64()
    );
    const NAMES: [&str; 18] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "", "#TS", "#NP", "#SS",
        "#GP", "#PF", "", "#MF", "#AC",
    ];
    let ends: Vec<String> = (0..32)
        .filter(|&v| stats[v] != 0)
        .map(|v| format!("{} {}", NAMES.get(v).copied().unwrap_or("?"), stats[v]))
        .collect();
    eprintln!("differential: the cases ended in {}", ends.join(", "));
    assert_eq!(
        mismatches, 0,
        "seed {seed:#x}: {mismatches} of {count} cases differ"
    );
}

// ---- Regression tests: fixed cases for the bugs the random cases found ----

/// An FSAVE image: control, status and tag words, ST(0)..ST(7).
fn fsave(cw: u16, sw: u16, tags: u16, st: &[[u8; 10]]) -> [u8; FSAVE_BYTES] {
    let mut image = [0u8; FSAVE_BYTES];
    image[0..2].copy_from_slice(&cw.to_le_bytes());
    image[4..6].copy_from_slice(&sw.to_le_bytes());
    image[8..10].copy_from_slice(&tags.to_le_bytes());
    for (i, v) in st.iter().enumerate() {
        image[28 + 10 * i..38 + 10 * i].copy_from_slice(v);
    }
    image
}

fn f80(sign_exp: u16, mant: u64) -> [u8; 10] {
    F80::new(sign_exp & 0x8000 != 0, sign_exp & 0x7FFF, mant).to_bytes()
}

const ONE: [u8; 10] = [0, 0, 0, 0, 0, 0, 0, 0x80, 0xFF, 0x3F];
/// ST0 and ST1 in use with TOP = 0 (tags of R0 and R1 valid, the rest empty).
const TWO_VALID: u16 = 0xFFF0;
/// Exceptions masked, 64-bit precision, round to nearest.
const CW: u16 = 0x037F;
const REGS: [u32; 8] = [0, 0, 0, 0, DATA_BASE + 0x1000, 0, 0, 0];

/// A hand-written case (ending in INT3) in which nothing is undefined: every field compared.
fn fixed_case(code: &[u8], regs: [u32; 8], eflags: u32, fpu: [u8; FSAVE_BYTES]) -> Case {
    let mut code = code.to_vec();
    code.push(0xCC);
    let mut decoder = Decoder::with_ip(32, &code, CODE_BASE as u64, DecoderOptions::NONE);
    let known = Track {
        undefined_flags: 0,
        undefined_sw: 0,
        tainted: 0,
        known: regs.map(Some),
    };
    let mut instrs = Vec::new();
    while decoder.can_decode() {
        let offset = decoder.position() as u32;
        let _ = decoder.decode();
        instrs.push(InstrInfo {
            offset,
            before: known.clone(),
            split_store: None,
            fault_clobbers: 0,
            undefined_mem: Vec::new(),
        });
    }
    Case {
        code,
        regs,
        eflags,
        fpu,
        seg: CaseSeg::default(),
        seg_use: 0,
        fill_seed: 1,
        patches: Vec::new(),
        instrs,
    }
}

/// Run `case` on both sides, require them to agree, and return the host's outcome.
fn agree(case: &Case) -> Outcome {
    let host = run_on_host(std::slice::from_ref(case)).remove(0);
    let emu = Emulator::new().run(case).expect("wasm86 reaches a handler");
    let diffs = differences(case, &host, &emu);
    if !diffs.is_empty() {
        report(0, 0, case, &host, &emu, &diffs);
        panic!("host and wasm86 differ: {diffs:?}");
    }
    host
}

#[test]
fn a_shift_by_zero_of_a_read_only_page_is_a_write_fault() {
    // shl dword [RO_PAGE], 0 and shrd [RO_PAGE], eax, 0: nothing to change, but the operand
    // is accessed for read-modify-write (#PF error code P | W | U).
    let ro = RO_PAGE.to_le_bytes();
    for code in [
        [&[0xC1, 0x25][..], &ro, &[0x00]].concat(),
        [&[0x0F, 0xAC, 0x05][..], &ro, &[0x00]].concat(),
    ] {
        let host = agree(&fixed_case(&code, REGS, 0x202, fsave(CW, 0, 0xFFFF, &[])));
        assert_eq!((host.trapno, host.error, host.cr2), (14, 7, RO_PAGE));
    }
}

#[test]
fn a_denormal_memory_operand_gives_way_to_nan_and_zero_divide() {
    let mut zero_divide = fixed_case(
        // fdivr dword [DATA_BASE]: denormal / 0.0 in ST0
        &[&[0xD8, 0x3D][..], &DATA_BASE.to_le_bytes()].concat(),
        REGS,
        0x202,
        fsave(CW, 0, 0xFFFD, &[f80(0, 0)]),
    );
    zero_divide.patches.push((0, 1u32.to_le_bytes().to_vec()));
    let host = agree(&zero_divide);
    assert_eq!(host.fpu.sw & 0x3F, 0x04, "ZE, not DE");

    let mut nan = zero_divide.clone();
    nan.code[1] = 0x05; // fadd dword [DATA_BASE], with an unsupported ST0
    nan.fpu = fsave(CW, 0, 0xFFFE, &[f80(0x7FFF, 0x1234)]);
    let host = agree(&nan);
    assert_eq!(host.fpu.sw & 0x3F, 0x01, "IE, not DE");
}

#[test]
fn fcmov_and_fcomi_leave_c1_alone() {
    // fcmovb st, st(1) with CF set; fcomi st, st(1)
    for code in [[0xDA, 0xC1], [0xDB, 0xF1]] {
        let fpu = fsave(CW, 0x0200, TWO_VALID, &[ONE, ONE]);
        let host = agree(&fixed_case(&code, REGS, 0x203, fpu));
        assert_eq!(host.fpu.sw & 0x0200, 0x0200, "C1 kept by {code:02x?}");
    }
}

#[test]
fn fprem_without_a_quotient_keeps_c0_and_c3() {
    let all_cc = 0x4700;
    // A signalling NaN in ST0 (IE, masked: the result is a NaN): C1 and C2 cleared.
    let nan = fsave(
        CW,
        all_cc,
        TWO_VALID,
        &[f80(0x7FFF, 0x8000_0000_0000_0001), ONE],
    );
    for code in [[0xD9, 0xF8], [0xD9, 0xF5]] {
        let host = agree(&fixed_case(&code, REGS, 0x202, nan));
        assert_eq!(host.fpu.sw & 0x4700, 0x4100, "{code:02x?}");
    }
    // An empty stack: a stack underflow, C2 cleared too.
    let empty = fsave(CW, all_cc, 0xFFFF, &[]);
    let host = agree(&fixed_case(&[0xD9, 0xF8], REGS, 0x202, empty));
    assert_eq!(host.fpu.sw & 0x4700, 0x4100);
}

#[test]
fn fld_of_an_empty_register_onto_a_full_stack_is_an_underflow() {
    // ST(7) in use, ST(1) empty: fld st(1) underflows (C1 = 0), it does not overflow.
    // With TOP = 0, ST(i) is R(i): tags 0x3FFF leave R7 valid and the rest empty.
    let fpu = fsave(CW, 0, 0x3FFF, &[ONE; 8]);
    let host = agree(&fixed_case(&[0xD9, 0xC1], REGS, 0x202, fpu));
    assert_eq!(host.fpu.sw & 0x0241, 0x0041, "IE and SF, C1 = 0");
}

#[test]
fn cmps_with_both_operands_missing_faults_on_the_destination() {
    let mut regs = REGS;
    regs[ESI as usize] = GUARD_BELOW + 0xFFC;
    regs[EDI as usize] = GUARD_BELOW + 0x804;
    let host = agree(&fixed_case(&[0xA7], regs, 0x202, fsave(CW, 0, 0xFFFF, &[])));
    assert_eq!((host.trapno, host.cr2), (14, GUARD_BELOW + 0x804));
}

#[test]
fn bound_below_the_lower_bound_does_not_read_the_upper_one() {
    // bound ax, [GUARD_ABOVE - 2]: the lower bound ends the read-only page (its fill), the
    // upper one is on the page that is not present.
    let mut ro = vec![0; PAGE as usize];
    fill(&mut ro, RO_SEED);
    let lower = i16::from_le_bytes([ro[4094], ro[4095]]);
    let mut regs = REGS;
    regs[EAX as usize] = (lower as i32 - 1) as u32;
    let code = [&[0x66, 0x62, 0x05][..], &(GUARD_ABOVE - 2).to_le_bytes()].concat();
    let host = agree(&fixed_case(&code, regs, 0x202, fsave(CW, 0, 0xFFFF, &[])));
    assert_eq!(host.trapno, 5, "#BR");
}

#[test]
fn fxtract_of_an_empty_st0_onto_a_full_stack_is_an_underflow() {
    // ST0 empty, ST(7) in use: a stack underflow (C1 = 0), not an overflow; and with ST0 in
    // use too, an overflow (C1 = 1).
    let fpu = fsave(CW, 0x0200, 0x3FFF | 3, &[ONE; 8]);
    let host = agree(&fixed_case(&[0xD9, 0xF4], REGS, 0x202, fpu));
    assert_eq!(host.fpu.sw & 0x0241, 0x0041);
    let fpu = fsave(CW, 0, 0x3FFC, &[ONE; 8]);
    let host = agree(&fixed_case(&[0xD9, 0xF4], REGS, 0x202, fpu));
    assert_eq!(host.fpu.sw & 0x0241, 0x0241);
}

#[test]
fn an_unmasked_overflow_of_a_store_raises_no_precision_exception() {
    // fst dword [DATA_BASE] of 2^16000 with OE unmasked: nothing is stored; OE (and ES),
    // but no PE and no round-up C1.
    let code = [&[0xD9, 0x15][..], &DATA_BASE.to_le_bytes()].concat();
    let fpu = fsave(
        CW & !0x08,
        0,
        0xFFFC,
        &[f80(0x3FFF + 16000, 0xC000_0000_0000_0001)],
    );
    let host = agree(&fixed_case(&code, REGS, 0x202, fpu));
    assert_eq!(host.fpu.sw & 0x02BF, 0x0088);
}

#[test]
fn x87_operands_are_alignment_checked_as_a_whole() {
    // With EFLAGS.AC (and CR0.AM, as Linux sets it) at CPL 3: a qword x87 operand must be
    // 8-byte aligned (SDM Vol. 3A Table 6-7), and #AC comes before the page fault of its
    // first half; fld qword [DATA_BASE - 4] is #AC, not #PF.
    let code = [&[0xDD, 0x05][..], &(DATA_BASE - 4).to_le_bytes()].concat();
    let fpu = fsave(CW, 0, 0xFFFF, &[]);
    let host = agree(&fixed_case(&code, REGS, 0x202 | AC, fpu));
    assert_eq!((host.trapno, host.error), (17, 0), "#AC");
    // fld qword [DATA_BASE + 4]: two aligned dwords, a misaligned qword.
    let code = [&[0xDD, 0x05][..], &(DATA_BASE + 4).to_le_bytes()].concat();
    let host = agree(&fixed_case(&code, REGS, 0x202 | AC, fpu));
    assert_eq!(host.trapno, 17, "#AC");
    // fbstp and fstp tbyte [DATA_BASE + 8]: 8-byte aligned 10-byte operands are fine (the
    // write check of 10 bytes is no alignment check by 10).
    for digit in [6, 7] {
        let op = if digit == 6 { 0xDF } else { 0xDB };
        let code = [&[op, 0x05 | digit << 3][..], &(DATA_BASE + 8).to_le_bytes()].concat();
        let fpu = fsave(CW, 0, 0xFFFC, &[ONE]);
        let host = agree(&fixed_case(&code, REGS, 0x202 | AC, fpu));
        assert_eq!(host.trapno, 3, "no #AC for {op:02x} /{digit}");
    }
}

#[test]
fn a_ten_byte_load_at_the_end_of_a_4_gib_segment_faults_in_its_first_part() {
    // fbld and fld tbyte fs:[0xFFFFFFF8] with FS based at DATA_BASE and a 4 GiB limit: the
    // whole operand would end past the limit (#GP), but its first 8 bytes are read first and
    // page-fault (at DATA_BASE - 8, not present).
    for (op, digit) in [(0xDFu8, 4u8), (0xDB, 5)] {
        let code = [
            &[0x64, op, 0x05 | digit << 3][..],
            &0xFFFF_FFF8u32.to_le_bytes(),
        ]
        .concat();
        let mut case = fixed_case(&code, REGS, 0x202, fsave(CW, 0, 0xFFFF, &[]));
        case.seg = CaseSeg {
            base: DATA_BASE,
            limit: 0xF_FFFF,
            pages: true,
            ..CaseSeg::default()
        };
        case.seg_use = 1;
        let host = agree(&case);
        assert_eq!((host.trapno, host.cr2), (14, DATA_BASE - 8));
    }
}

#[test]
fn an_int3_executed_with_tf_set_is_not_single_stepped() {
    // push 0x302 (TF, IF); popfd; int3: TF is on for the INT3 after the POPF, which delivers
    // #BP and clears TF on its way into the handler; no single-step #DB follows.
    let code = [0x68, 0x02, 0x03, 0x00, 0x00, 0x9D];
    let host = agree(&fixed_case(&code, REGS, 0x202, fsave(CW, 0, 0xFFFF, &[])));
    assert_eq!((host.trapno, host.eip), (3, CODE_BASE + 7));
    assert_eq!(host.eflags & TF, TF, "TF set in the frame");
}

#[test]
fn fsincos_c1_says_how_the_cosine_was_rounded() {
    // sin and cos of -0.000134 (bit-exact on both sides): the sine rounds up, the cosine
    // does not, and C1 follows the cosine (the new ST0).
    let fpu = fsave(0x177F, 0, 0xFFFC, &[f80(0xBFF2, 0x8C92_D216_6DC4_3445)]);
    let host = agree(&fixed_case(&[0xD9, 0xFB], REGS, 0x202, fpu));
    assert_eq!(host.fpu.sw & C1, 0);
}

#[test]
fn trigonometric_stack_faults_and_out_of_range_arguments_set_c1_and_c2() {
    // fptan and fsincos onto a full stack: an overflow (C1 = 1), and C2 = 0 (the argument,
    // out of range here, is not looked at).
    let huge = f80(0x7CA6, 0xFB30_308B_865D_E423);
    for op in [0xF2, 0xFB] {
        let fpu = fsave(CW, C2, 0x0000, &[huge; 8]);
        let host = agree(&fixed_case(&[0xD9, op], REGS, 0x202, fpu));
        assert_eq!(host.fpu.sw & (C1 | C2), C1, "{op:02x}");
    }
    // fsin, fcos, fptan and fsincos of an out-of-range argument: C2 = 1, C1 = 0 (nothing
    // rounded).
    for op in [0xFE, 0xFF, 0xF2, 0xFB] {
        let fpu = fsave(CW, C1, 0xFFFC, &[huge]);
        let host = agree(&fixed_case(&[0xD9, op], REGS, 0x202, fpu));
        assert_eq!(host.fpu.sw & (C1 | C2), C2, "{op:02x}");
    }
    // fsin and fptan of an empty ST0: an underflow (C1 = 0), and C2 = 0.
    for op in [0xFE, 0xF2] {
        let fpu = fsave(CW, C1 | C2, 0xFFFF, &[]);
        let host = agree(&fixed_case(&[0xD9, op], REGS, 0x202, fpu));
        assert_eq!(host.fpu.sw & (C1 | C2), 0, "{op:02x}");
    }
}

#[test]
fn fyl2x_and_fyl2xp1_raise_no_denormal_exception_with_a_zero_divide_or_invalid() {
    let denormal = f80(0x8000, 0x0000_0000_03EB_A83A);
    // fyl2x: y (denormal) * log2(+0): -inf... +inf, a zero-divide, no DE.
    let fpu = fsave(CW, 0, TWO_VALID, &[f80(0, 0), denormal]);
    let host = agree(&fixed_case(&[0xD9, 0xF1], REGS, 0x202, fpu));
    assert_eq!(host.fpu.sw & 0x3F, 0x04, "ZE alone");
    // fyl2xp1: y (denormal) * log2(1 - inf): invalid, no DE.
    let fpu = fsave(CW, 0, TWO_VALID, &[f80(0xFFFF, 1 << 63), denormal]);
    let host = agree(&fixed_case(&[0xD9, 0xF9], REGS, 0x202, fpu));
    assert_eq!(host.fpu.sw & 0x3F, 0x01, "IE alone");
}

#[test]
fn fnstenv_fnsave_fldenv_and_frstor_check_the_first_and_last_bytes_first() {
    // An area from the end of the last writable page into the read-only page: nothing is
    // written, and the fault names the area's last byte (its first dword is checked first,
    // then its last byte), not the first byte of the read-only page.
    for (op, len) in [(0xD9u8, 28u32), (0xDD, 108)] {
        let at = RO_PAGE - 8;
        let code = [&[op, 0x35][..], &at.to_le_bytes()].concat();
        let host = agree(&fixed_case(&code, REGS, 0x202, fsave(CW, 0, 0xFFFF, &[])));
        assert_eq!((host.trapno, host.cr2), (14, at + len - 1), "{op:02x} /6");
    }
    // Loads from the end of the read-only page into the page that is not present.
    for (op, len) in [(0xD9u8, 28u32), (0xDD, 108)] {
        let at = GUARD_ABOVE - 8;
        let code = [&[op, 0x25][..], &at.to_le_bytes()].concat();
        let host = agree(&fixed_case(&code, REGS, 0x202, fsave(CW, 0, 0xFFFF, &[])));
        assert_eq!((host.trapno, host.cr2), (14, at + len - 1), "{op:02x} /4");
    }
}

#[test]
fn the_parts_of_an_x87_save_area_are_not_alignment_checked() {
    // With EFLAGS.AC: a 16-bit FNSAVE area needs 2-byte alignment, a 32-bit one 4-byte
    // alignment (SDM Vol. 3A Table 6-7), however its fields and registers fall.
    let fpu = fsave(CW, 0, 0xFFFC, &[ONE]);
    let at = DATA_BASE + 0x102;
    // fnsave (16-bit) [at]; frstor (16-bit) [at]
    let code = [
        &[0x66, 0xDD, 0x35][..],
        &at.to_le_bytes(),
        &[0x66, 0xDD, 0x25],
        &at.to_le_bytes(),
    ]
    .concat();
    let host = agree(&fixed_case(&code, REGS, 0x202 | AC, fpu));
    assert_eq!(host.trapno, 3, "no #AC");
    // fnsave, frstor (32-bit) [DATA_BASE + 0x104]: the registers are at 2 mod 4.
    let at = DATA_BASE + 0x104;
    let code = [
        &[0xDD, 0x35][..],
        &at.to_le_bytes(),
        &[0xDD, 0x25],
        &at.to_le_bytes(),
    ]
    .concat();
    let host = agree(&fixed_case(&code, REGS, 0x202 | AC, fpu));
    assert_eq!(host.trapno, 3, "no #AC");
    // But a 32-bit area at 2 mod 4 is misaligned.
    let at = DATA_BASE + 0x102;
    let code = [&[0xDD, 0x35][..], &at.to_le_bytes()].concat();
    let host = agree(&fixed_case(&code, REGS, 0x202 | AC, fpu));
    assert_eq!(host.trapno, 17, "#AC");
}

#[test]
fn fnstenv_masking_every_exception_clears_es_and_b() {
    // A pending invalid operation (IE with IM clear: ES and B set); fnstenv [DATA_BASE]
    // stores that, then masks all exceptions: nothing is pending any more.
    let code = [&[0xD9, 0x35][..], &DATA_BASE.to_le_bytes()].concat();
    let fpu = fsave(CW & !1, 0x8081, 0xFFFF, &[]);
    let host = agree(&fixed_case(&code, REGS, 0x202, fpu));
    assert_eq!(host.fpu.sw & 0x8080, 0);
    assert_eq!(
        &host.data[4..6],
        &0x8081u16.to_le_bytes(),
        "stored as it was"
    );
}

// ---- The transcendental instructions, within a tolerance ----

/// How far (in units in the last place of the 64-bit significand) a transcendental result
/// of wasm86 may be from this host's: both are approximations (the SDM promises an error
/// below 1 ulp for most arguments, "Intel 64 and IA-32 processors do not guarantee correctly
/// rounded results"), and each rounds its own way.
const TRANSCENDENTAL_ULPS: u128 = 1;

/// The distance in ulps between two finite extended values of the same sign (None for
/// different signs, NaNs, infinities, unnormals).
fn ulps_apart(a: &[u8; 10], b: &[u8; 10]) -> Option<u128> {
    let (sa, sb) = (
        u16::from_le_bytes([a[8], a[9]]),
        u16::from_le_bytes([b[8], b[9]]),
    );
    let (ma, mb) = (
        u64::from_le_bytes(a[..8].try_into().unwrap()),
        u64::from_le_bytes(b[..8].try_into().unwrap()),
    );
    // Zeros, denormals and normals, in order of magnitude: a denormal's significand, and
    // a normal's after all of those with smaller exponents.
    let ordinal = |se: u16, m: u64| -> Option<u128> {
        match se & 0x7FFF {
            0 => Some(m as u128),
            0x7FFF => None,
            _ if m >> 63 == 0 => None,
            e => Some((((e - 1) as u128) << 63) + m as u128),
        }
    };
    if sa >> 15 != sb >> 15 {
        return None;
    }
    Some(ordinal(sa, ma)?.abs_diff(ordinal(sb, mb)?))
}

#[test]
fn transcendental_results_are_within_an_ulp_of_the_host() {
    // One instruction on a random stack: F2XM1, FYL2X, FPTAN, FPATAN, FYL2XP1, FSINCOS,
    // FSIN, FCOS. Everything is compared exactly (exceptions, tags, the condition codes the
    // SDM defines, the other registers) but the registers the instruction wrote, which may
    // differ by TRANSCENDENTAL_ULPS when both sides hold normals of one sign, and C1, which
    // says which way the result was rounded and so is as approximate as its last bit: both
    // are counted and printed, not failed on. F2XM1 and FYL2XP1 get only arguments in their
    // domains (|x| <= 1, |x| < 1 - sqrt(2)/2) or special ones: the SDM leaves their results
    // undefined elsewhere.
    // (opcode, name, the condition codes the SDM leaves undefined)
    const OPS: [(u8, &str, u16); 8] = [
        (0xF0, "f2xm1", C0 | C2 | C3),
        (0xF1, "fyl2x", C0 | C2 | C3),
        (0xF2, "fptan", C0 | C3),
        (0xF3, "fpatan", C0 | C2 | C3),
        (0xF9, "fyl2xp1", C0 | C2 | C3),
        (0xFB, "fsincos", C0 | C3),
        (0xFE, "fsin", C0 | C3),
        (0xFF, "fcos", C0 | C3),
    ];
    let count = env_u64("WASM86_DIFF_TRANSCENDENTAL_CASES").unwrap_or(8_000);
    let mut cases = Vec::new();
    for n in 0..count {
        let mut g = Gen {
            rng: Rng(splitmix(&mut (n ^ 0x7A4C_5E11))),
            code: Vec::new(),
            instrs: Vec::new(),
            st: Track::everything_undefined(),
            jumps: Vec::new(),
            patches: Vec::new(),
            unmasked: false,
            seg: CaseSeg::default(),
            seg_use: 0,
            lock: false,
            ret_slot: None,
        };
        let (op, _, undefined) = OPS[n as usize % OPS.len()];
        let mut fpu = g.initial_fpu();
        let top = (u16::from_le_bytes([fpu[4], fpu[5]]) >> 11) & 7;
        for i in 0..2usize {
            let sign = (g.rng.below(2) as u16) << 15;
            let mant = g.rng.next() | 1 << 63;
            // The largest exponent in the domain, and the smallest tried.
            let (high, low): (u16, u16) = match (op, i) {
                (0xF0, 0) => (0x3FFE, 0x3FC0),
                (0xF9, 0) => (0x3FFC, 0x3FC0),
                _ => (0x3FFF + 4, 0x3FFF - 40),
            };
            let exp = low + g.rng.below((high - low + 1) as u32) as u16;
            let mut v = f80(sign | exp, mant);
            let bytes = &mut fpu[28 + 10 * i..38 + 10 * i];
            let old = F80::from_bytes(bytes.try_into().unwrap());
            let special = old.exp == 0 || old.exp == 0x7FFF;
            let domain = matches!((op, i), (0xF0 | 0xF9, 0));
            if (op, i) == (0xF0, 0) && g.rng.chance(3) {
                v = f80(sign | 0x3FFF, 1 << 63); // F2XM1 of +-1
            }
            if g.rng.chance(75) || (domain && !special) {
                bytes.copy_from_slice(&v);
            }
            if g.rng.chance(95) {
                // In use.
                let phys = (top + i as u16) & 7;
                let tags = u16::from_le_bytes([fpu[8], fpu[9]]) & !(3 << (2 * phys));
                fpu[8..10].copy_from_slice(&tags.to_le_bytes());
            }
        }
        let mut case = fixed_case(&[0xD9, op], REGS, 0x202, fpu);
        case.instrs[1].before.undefined_sw = undefined;
        cases.push(case);
    }
    let host = run_on_host(&cases);
    let mut emu = Emulator::new();
    let (mut exact, mut c1, mut within) = ([0u32; 8], [0u32; 8], [0u32; 8]);
    let mut failures = Vec::new();
    for (n, (case, host)) in cases.iter().zip(&host).enumerate() {
        let k = n % OPS.len();
        let mut out = emu.run(case).expect("wasm86 reaches a handler");
        if differences(case, host, &out).is_empty() {
            exact[k] += 1;
            continue;
        }
        let mut close = false;
        for i in 0..8 {
            if let Some(d) = ulps_apart(&host.fpu.st[i], &out.fpu.st[i]) {
                if d != 0 && d <= TRANSCENDENTAL_ULPS {
                    out.fpu.st[i] = host.fpu.st[i];
                    close = true;
                }
            }
        }
        let c1_differs = (out.fpu.sw ^ host.fpu.sw) & C1 != 0;
        out.fpu.sw = (out.fpu.sw & !C1) | (host.fpu.sw & C1);
        let diffs = differences(case, host, &out);
        if !diffs.is_empty() {
            if failures.len() < 5 {
                report(0, n as u64, case, host, &out, &diffs);
            }
            failures.push((OPS[k].1, n));
        } else if close {
            within[k] += 1;
        } else if c1_differs {
            c1[k] += 1;
        }
    }
    for (k, (_, name, _)) in OPS.iter().enumerate() {
        eprintln!(
            "{name}: of {}, {} equal, {} within {TRANSCENDENTAL_ULPS} ulp, {} with only C1 \
             different",
            cases.len() / OPS.len(),
            exact[k],
            within[k],
            c1[k]
        );
    }
    assert!(
        failures.is_empty(),
        "{} cases differ: {failures:?}",
        failures.len()
    );
}
