//! The code generator: a region of decoded blocks to the bytes of one WebAssembly module.
//!
//! The module imports the memory that holds the [`Cpu`] (natively also one over the TLB's
//! entries and one over guest RAM) and one helper, `step`, and exports one function,
//! `run(cpu, limit, entry, tlb, ram) -> status`:
//!
//! - `cpu`, `tlb` and `ram` are the addresses of the `Cpu`, the TLB's entries and guest RAM in
//!   their memories (in the browser all three are in the core's own memory, at their real
//!   addresses; natively each has a memory laid over it, starting at 0). The code is compiled
//!   for the addresses they have (see [`CpuMemory`]) and has them built in as constants, so
//!   that every field is reached at a constant address and none of them takes a register.
//! - `limit` is the retired-instruction count the run must not pass: a block runs only if all
//!   of it fits, exactly as the interpreter's run loop decides (a block that does not fit is
//!   left to the interpreter, which runs part of it).
//! - `entry` is the index of the block to start at.
//!
//! The eight general registers live in wasm locals, written back only where the interpreter
//! may look and loaded again only when needed ([`Sync`]). The forms the generator knows run
//! inline, with the lazy flags written exactly as the interpreter's handlers write them (and
//! only where something may read them, [`flags_needed`]): register moves, LEA, the ALU group,
//! INC/DEC, CDQ, IMUL, IDIV, shifts by an immediate, Jcc, JMP, fused compare-and-branch pairs,
//! the generic forms of every width (`forms`), REP MOVS/STOS/CMPS/SCAS (`strings`), and the memory
//! forms (moves, ALU with memory, PUSH/POP, CALL/RET), whose accesses go
//! through the segment check and the TLB inline with the whole instruction handed to the
//! interpreter when that fast path does not apply. Every other instruction is handed back to
//! the interpreter through `step`, so the semantics are the interpreter's by construction.
//! Direct jumps to blocks of the region are branches: straight to a block placed later in the
//! function (or to the block's own start), else to the dispatch loop, so a loop runs inside
//! one function. A jump anywhere else, and every place where the interpreter's run loop
//! would stop chaining blocks, is an exit with EIP stored.
//!
//! `run` returns [`RAN`] (state is in the `Cpu`, EIP at a block boundary) or [`FAULTED`] (an
//! instruction run by `step` raised an exception, already delivered).

mod forms;
mod strings;

use std::collections::HashMap;
use std::mem::offset_of;

use wasm_encoder::{
    BlockType, BranchHint, BranchHints, CodeSection, EntityType, ExportKind, ExportSection,
    Function, FunctionSection, ImportSection, InstructionSink, MemArg, MemArgTarget, MemoryType,
    Module, TypeSection, ValType,
};

use crate::cpu::decode::Instr;
use crate::cpu::fast as k;
use crate::cpu::flags;
use crate::cpu::{Cpu, SegCache, Segment, EAX, ECX, EDX, ESP, ZERO_REG};
use crate::mem::tlb::{TlbEntry, TLB_ENTRIES};

/// `run` returned normally: the state is in the `Cpu`.
pub const RAN: u32 = 0;
/// An instruction faulted and its exception was delivered.
pub const FAULTED: u32 = 1;

/// What `step` returns to the generated code.
/// The instruction retired; the block may go on, and at its end the next block may be chained.
pub const STEP_CONTINUE: u32 = 0;
/// The instruction retired; the block goes on, but at its end the run loop must take over
/// (an interrupt became due, IF or a debug register changed ...).
pub const STEP_CONTINUE_THEN_STOP: u32 = 1;
/// The instruction retired but left the straight path (a branch taken, a mode change): exit.
pub const STEP_LEAVE: u32 = 2;
/// The instruction faulted (its exception is delivered): exit with [`FAULTED`].
pub const STEP_FAULTED: u32 = 3;

/// Where the generated code finds the `Cpu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMemory {
    /// The importer's memory holds the `Cpu`, the TLB's entries and guest RAM at these
    /// addresses (the browser: the core's own linear memory). The code is compiled for them:
    /// the run loop drops every region if one of them moves (`Jit::layout`).
    Shared { cpu: u32, tlb: u32, ram: u32 },
    /// Memories of exactly the right size (page size 1) laid over the `Cpu`, the TLB's entries
    /// and guest RAM, each starting at address 0 (native hosts).
    Exact {
        bytes: u32,
        tlb_bytes: u32,
        ram_bytes: u32,
    },
}

/// One block of the region: its first instruction's EIP and its decoded instructions, exactly
/// as the interpreter's block cache holds them.
pub struct RegionBlock {
    pub eip: u32,
    pub instrs: Vec<Instr>,
    pub byte_len: u32,
    /// The index of its page in the region's pages.
    pub page: u8,
}

/// A generated module and the instructions its `step` calls refer to by index.
pub struct RegionCode {
    pub wasm: Vec<u8>,
    pub fallback: Vec<Instr>,
    /// Instructions inline and through `step` (for the statistics).
    pub inline_count: u32,
    pub step_count: u32,
}

// Offsets of the fields the generated code touches.
const REGS: u64 = offset_of!(Cpu, regs) as u64;
const EIP: u64 = offset_of!(Cpu, eip) as u64;
const INSTRUCTIONS: u64 = offset_of!(Cpu, instructions) as u64;
const FLAGS: usize = offset_of!(Cpu, flags);
const RES: u64 = (FLAGS + flags::RES_OFFSET) as u64;
const CV: u64 = (FLAGS + flags::CV_OFFSET) as u64;
const LOW: u64 = (FLAGS + flags::LOW_OFFSET) as u64;
const FLAG_BITS: u64 = (FLAGS + flags::BITS_OFFSET) as u64;
const SEGS: u64 = offset_of!(Cpu, segs) as u64;
const SEG_SIZE: u64 = std::mem::size_of::<SegCache>() as u64;
const SEG_BASE: u64 = offset_of!(SegCache, base) as u64;
const SEG_BIG: u64 = offset_of!(SegCache, big) as u64;
const SEG_READ_LO: u64 = offset_of!(SegCache, read_lo) as u64;
const SEG_READ_HI: u64 = offset_of!(SegCache, read_hi) as u64;
const SEG_WRITE_LO: u64 = offset_of!(SegCache, write_lo) as u64;
const SEG_WRITE_HI: u64 = offset_of!(SegCache, write_hi) as u64;
const TLB_ENTRY_SIZE: i32 = std::mem::size_of::<TlbEntry>() as i32;
const TLB_TAG: u64 = offset_of!(TlbEntry, tag) as u64;
const TLB_DELTA: u64 = offset_of!(TlbEntry, delta) as u64;
const TLB_INDEX_MASK: i32 = (TLB_ENTRIES - 1) as i32;

// Locals. Parameters first: run(cpu, limit, entry, tlb, ram).
const CPU: u32 = 0;
const LIMIT: u32 = 1;
const ENTRY: u32 = 2;
/// Where the TLB's entries and guest RAM start in their memories.
const TLB: u32 = 3;
const RAM: u32 = 4;
/// EAX..EDI: 5..=12.
const R0: u32 = 5;
const ICOUNT: u32 = 13;
const STATE: u32 = 14;
/// Scratch i32 locals.
const T0: u32 = 15;
const T1: u32 = 16;
const T2: u32 = 17;
/// A memory access: its linear address, its host address, the value read.
const LIN: u32 = 18;
const ADDR: u32 = 19;
const VAL: u32 = 20;
/// Scratch i64 locals.
const W0: u32 = 21;
const W1: u32 = 22;
/// More scratch i32 locals (the generic forms), and a shift's count.
const T3: u32 = 23;
const T4: u32 = 24;
const CNT: u32 = 25;
/// The TLB permission bits reads and writes need at this privilege level (Cpu::tlb_read_perm,
/// Cpu::tlb_write_perm), constants of the region: they change only with CPL, EFLAGS.AC, CR0.AM
/// or DR7, every instruction that changes those ends the run of compiled code (`step` sees
/// `stop_block`), and a region is entered only with the ones it was compiled for. A 0 (no
/// fast path at all) is [`NO_PERM`].
const PERM_R: u32 = 26;
const PERM_W: u32 = 27;
/// A bit no TLB tag has (tags hold the page and bits 0-4): a permission nothing passes.
const NO_PERM: i32 = 0x800;

/// Import index of `step`, and the function index of `run`.
const STEP_FN: u32 = 0;
/// Where `step` leaves whether the block must end where it is (see `Gen::goto`).
const STOP_AT_BLOCK_END: u64 = offset_of!(Cpu, jit_stop_at_block_end) as u64;

/// Generate the module for `blocks` (entry `n` is `blocks[n]`), whose code comes from `pages`.
/// `slot` identifies the region to `step`; `cs` is the code segment the region was compiled
/// for (a jump past its limit faults, which is left to the interpreter); `flat` the data
/// segments it may treat as flat.
pub fn compile(
    blocks: &[RegionBlock],
    pages: &[super::RegionPage],
    memory: CpuMemory,
    slot: u32,
    cs: &SegCache,
    flat: u8,
    perms: [u32; 2],
) -> RegionCode {
    let index_of = blocks
        .iter()
        .enumerate()
        .map(|(n, b)| (b.eip, n as u32))
        .collect::<HashMap<u32, u32>>();
    let (mem_tlb, mem_ram) = match memory {
        CpuMemory::Shared { .. } => (0, 0),
        CpuMemory::Exact { .. } => (1, 2),
    };
    // Each memory laid over its structure starts at it: the addresses are 0 there.
    let addresses = match memory {
        CpuMemory::Shared { cpu, tlb, ram } => [cpu, tlb, ram],
        CpuMemory::Exact { .. } => [0; 3],
    };
    let mut g = Gen {
        mem_tlb,
        mem_ram,
        f: Function::new([
            // EAX..EDI
            (8, ValType::I32),
            // ICOUNT
            (1, ValType::I64),
            // STATE, T0..T2, LIN, ADDR, VAL
            (7, ValType::I32),
            // W0, W1
            (2, ValType::I64),
            // T3, T4, CNT, PERM_R, PERM_W
            (5, ValType::I32),
        ]),
        n: blocks.len() as u32,
        return_points: blocks
            .iter()
            .filter(|b| {
                b.instrs
                    .last()
                    .is_some_and(|i| i.opcode == 0xE8 || (i.opcode == 0xFF && i.reg == 2))
            })
            .map(|b| b.eip.wrapping_add(b.byte_len))
            .filter(|e| index_of.contains_key(e))
            .collect(),
        index_of,
        block_page: blocks.iter().map(|b| b.page).collect(),
        pages: pages.iter().map(|p| (p.lin_page, p.phys_page)).collect(),
        slot,
        addresses,
        perms,
        cs_base: cs.base,
        cs_limit: cs.limit,
        flat,
        sync: Sync::ENTRY,
        has_step: false,
        store_flags: true,
        depth: 0,
        fallback: Vec::new(),
        inline_count: 0,
        step_count: 0,
        hints: Vec::new(),
        written: 0,
        flags_live_after: true,
        entry_reads_flags: blocks
            .iter()
            .map(|b| flags_needed(&b.instrs).at_entry)
            .collect(),
        block_retires: blocks
            .iter()
            .map(|b| b.instrs.iter().map(k::retires).sum())
            .collect(),
        deferred_flags: None,
    };
    g.function(blocks);
    let mut f = g.f;
    f.instructions().end();

    let mut module = Module::new();
    let mut types = TypeSection::new();
    // 0: run(cpu, limit, entry, tlb, ram) -> status
    types.ty().function(
        [
            ValType::I32,
            ValType::I64,
            ValType::I32,
            ValType::I32,
            ValType::I32,
        ],
        [ValType::I32],
    );
    // 1: step(cpu, slot, index) -> step status
    types
        .ty()
        .function([ValType::I32, ValType::I32, ValType::I32], [ValType::I32]);
    module.section(&types);
    let mut imports = ImportSection::new();
    let mem = match memory {
        CpuMemory::Shared { .. } => MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        },
        CpuMemory::Exact { bytes, .. } => MemoryType {
            minimum: bytes as u64,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: Some(0),
        },
    };
    imports.import("core", "memory", EntityType::Memory(mem));
    if let CpuMemory::Exact {
        tlb_bytes,
        ram_bytes,
        ..
    } = memory
    {
        for (name, bytes) in [("tlb", tlb_bytes), ("ram", ram_bytes)] {
            let ty = MemoryType {
                minimum: bytes as u64,
                maximum: None,
                memory64: false,
                shared: false,
                page_size_log2: Some(0),
            };
            imports.import("core", name, EntityType::Memory(ty));
        }
    }
    imports.import("core", "step", EntityType::Function(1));
    module.section(&imports);
    let mut functions = FunctionSection::new();
    functions.function(0);
    module.section(&functions);
    let mut exports = ExportSection::new();
    exports.export("run", ExportKind::Func, STEP_FN + 1);
    module.section(&exports);
    // The hints go before the code they describe.
    let mut hints = BranchHints::new();
    hints.function_hints(STEP_FN + 1, g.hints.iter().copied());
    module.section(&hints);
    let mut code = CodeSection::new();
    code.function(&f);
    module.section(&code);
    RegionCode {
        wasm: module.finish(),
        fallback: g.fallback,
        inline_count: g.inline_count,
        step_count: g.step_count,
    }
}

fn mem_at(memory: u32, offset: u64, align: u32) -> MemArg {
    MemArg {
        offset,
        align,
        target: MemArgTarget::Memory(memory),
        ordering: None,
    }
}

fn mem32(offset: u64) -> MemArg {
    MemArg {
        offset,
        align: 2,
        target: MemArgTarget::Memory(0),
        ordering: None,
    }
}

fn mem64(offset: u64) -> MemArg {
    MemArg {
        offset,
        align: 3,
        target: MemArgTarget::Memory(0),
        ordering: None,
    }
}

/// The generator's state while it writes one function.
struct Gen {
    f: Function,
    /// The memory indices of the TLB's entries and of guest RAM.
    mem_tlb: u32,
    mem_ram: u32,
    n: u32,
    index_of: HashMap<u32, u32>,
    /// Blocks of the region that follow a CALL in the region: where its RETs may go.
    return_points: Vec<u32>,
    /// Each block's page, and each page's linear and physical page numbers.
    block_page: Vec<u8>,
    pages: Vec<(u32, u32)>,
    slot: u32,
    /// The addresses of the `Cpu`, the TLB's entries and RAM in their memories.
    addresses: [u32; 3],
    /// The TLB permission bits reads and writes need (Cpu::tlb_read_perm/tlb_write_perm) when
    /// the region was compiled; it runs only while they are the same (`Region::same_code`).
    perms: [u32; 2],
    cs_base: u32,
    cs_limit: u32,
    /// The segments (bit n: segment n) the region was compiled flat for (see
    /// `jit::flat_segments`): their accesses need no segment check.
    flat: u8,
    /// Where the registers and the count are newest (see [`Sync`]).
    sync: Sync,
    /// The current block has called `step` (so its end must look at
    /// `Cpu::jit_stop_at_block_end`).
    has_step: bool,
    /// Whether the flags the instruction being emitted computes must be stored (someone may
    /// read them: see [`flags_needed`]).
    store_flags: bool,
    /// Structured-control depth opened inside the current block's code.
    depth: u32,
    fallback: Vec<Instr>,
    inline_count: u32,
    step_count: u32,
    /// Branches hinted not taken (the slow arms and exits), by offset in the function body.
    hints: Vec<BranchHint>,
    /// The registers written by the code emitted since the innermost `with_memory` began.
    written: u8,
    /// Whether the flags the instruction being emitted computes are read on the straight path
    /// after it (see [`flags_needed`]).
    flags_live_after: bool,
    /// For each block, whether it may read the flags it is entered with
    /// ([`FlagLiveness::at_entry`]), and how many instructions it retires when it runs whole.
    entry_reads_flags: Vec<bool>,
    block_retires: Vec<u32>,
    /// The width of lazy flags that a fused compare left in T0/T1 without storing them: each
    /// way out of its branch stores them only if it needs them (see `defer_flags`).
    deferred_flags: Option<u32>,
}

/// Where the newest register values and instruction count are while code is generated: in the
/// wasm locals, in the `Cpu`, or both. Registers are stored only when the interpreter is about
/// to see them (`step`, an exit) and loaded again only when generated code needs them.
#[derive(Clone, Copy)]
struct Sync {
    /// Registers whose local is newer than the Cpu's copy (bit n: register n).
    dirty: u8,
    /// Registers whose Cpu copy is newer than the local (after `step`).
    stale: u8,
    /// The Cpu's instruction count is newer than ICOUNT.
    count_stale: bool,
    /// Instructions retired inline and not yet added to ICOUNT.
    pending: u32,
}

impl Sync {
    /// At the start of every block: the locals hold everything (and may be newer).
    const ENTRY: Sync = Sync {
        dirty: 0xFF,
        stale: 0,
        count_stale: false,
        pending: 0,
    };
}

/// Where an exit finds the EIP it stores.
#[derive(Clone, Copy)]
enum Eip {
    At(u32),
    /// A wasm local.
    In(u32),
}

/// An operand of an inline ALU operation.
#[derive(Clone, Copy)]
enum Src {
    Reg(u8),
    Imm(u32),
    /// A wasm local (a value read from memory).
    Local(u32),
}

/// The ALU operations the generator runs inline (the interpreter's numbering).
const ADD: u8 = crate::cpu::arith::ADD;
const OR: u8 = crate::cpu::arith::OR;
const AND: u8 = crate::cpu::arith::AND;
const SUB: u8 = crate::cpu::arith::SUB;
const XOR: u8 = crate::cpu::arith::XOR;
const CMP: u8 = crate::cpu::arith::CMP;
const TEST: u8 = crate::cpu::arith::TEST;

impl Gen {
    fn ins(&mut self) -> InstructionSink<'_> {
        self.f.instructions()
    }

    /// The whole function: prologue, then the dispatch loop over the blocks.
    fn function(&mut self, blocks: &[RegionBlock]) {
        // The parameters `cpu`, `tlb` and `ram`, and the permissions, are constants the region
        // was compiled for. Set once from constants and never again, the locals are
        // constants to V8's optimizing compiler too: every field access becomes one
        // instruction with the address in its displacement, and none of them takes a register.
        let [cpu, tlb, ram] = self.addresses;
        let [read, write] = self.perms.map(|p| if p == 0 { NO_PERM } else { p as i32 });
        for (local, value) in [
            (CPU, cpu as i32),
            (TLB, tlb as i32),
            (RAM, ram as i32),
            (PERM_R, read),
            (PERM_W, write),
        ] {
            self.ins().i32_const(value).local_set(local);
        }
        for r in 0..8u32 {
            self.ins()
                .local_get(CPU)
                .i32_load(mem32(REGS + 4 * r as u64))
                .local_set(R0 + r);
        }
        self.ins()
            .local_get(CPU)
            .i64_load(mem64(INSTRUCTIONS))
            .local_set(ICOUNT)
            .local_get(ENTRY)
            .local_set(STATE);
        // loop $dispatch / block $b(n-1) ... block $b0 / br_table
        self.ins().loop_(BlockType::Empty);
        for _ in 0..self.n {
            self.ins().block(BlockType::Empty);
        }
        let targets: Vec<u32> = (0..self.n).collect();
        let default = self.n.saturating_sub(1);
        self.ins().local_get(STATE).br_table(targets, default);
        for (n, b) in blocks.iter().enumerate() {
            // Here block $b(n) has just ended: its code follows, inside $b(n+1)..$b(last).
            self.ins().end();
            self.block(n as u32, b);
        }
        // Every block ends in a branch or a return: the end of the loop is never reached.
        self.ins().end().unreachable();
    }

    /// Branch depth of the dispatch loop from block `k`'s code. (Block `k`'s code follows the
    /// end of the dispatch's `k`-th innermost block and lies inside the `n - 1 - k` blocks
    /// around that one: ending the `m`-th of those goes to block `k + 1 + m`'s code.)
    fn depth_dispatch(&self, k: u32) -> u32 {
        self.n - 1 - k + self.depth
    }

    fn block(&mut self, k: u32, b: &RegionBlock) {
        self.has_step = false;
        // The block's code is a wasm loop of its own, so that a branch back to its start (the
        // innermost loops of a program) is a direct branch, not a trip through the dispatch
        // loop's br_table. Its code always ends in a branch or a return.
        self.ins().loop_(BlockType::Empty);
        self.depth = 1;
        // Every way into a block (the prologue, a jump from another block) leaves the
        // registers and the count in their locals, possibly newer than the Cpu's.
        self.sync = Sync::ENTRY;
        debug_assert!(self.deferred_flags.is_none());
        // The whole block must fit in the budget, as the interpreter's run loop decides.
        self.exit_unless_it_fits(k, b.eip);
        let liveness = flags_needed(&b.instrs);
        let mut eip = b.eip;
        for (n, i) in b.instrs.iter().enumerate() {
            let next = eip.wrapping_add(i.len as u32);
            let last = n + 1 == b.instrs.len();
            self.store_flags = liveness.needed[n];
            self.flags_live_after = liveness.live_after[n];
            if self.instr(k, i, eip, next, last) {
                // An unconditional branch, or the block's last conditional one: it went
                // wherever the block goes next itself.
                self.ins().end();
                return;
            }
            eip = next;
        }
        // Fell off the end of the block (64 instructions, the page end, or an instruction
        // through `step` that went on to the next one).
        self.goto(k, eip);
        self.ins().end();
    }

    /// Exit at `eip`, the start of block `k`, unless all of that block fits in the budget
    /// (ICOUNT current): every instruction it retires, a fused pair counting two.
    fn exit_unless_it_fits(&mut self, k: u32, eip: u32) {
        let retires = self.block_retires[k as usize] as i64;
        self.ins()
            .local_get(ICOUNT)
            .i64_const(retires)
            .i64_add()
            .local_get(LIMIT)
            .i64_gt_u();
        self.exit_if(eip);
    }

    /// Exit at `eip` if the condition on the stack holds (hinted not to); otherwise go on with
    /// what is known about the locals as it was.
    fn exit_if(&mut self, eip: u32) {
        self.if_unlikely();
        self.depth += 1;
        let saved = self.sync;
        self.exit(eip);
        self.sync = saved;
        self.ins().end();
        self.depth -= 1;
    }

    /// Leave the function with EIP = `eip`: whatever the locals hold that the Cpu does not
    /// is stored first.
    fn exit(&mut self, eip: u32) {
        self.leave(Eip::At(eip));
    }

    /// [`exit`](Self::exit) with EIP from a constant or a local (a return address).
    fn leave(&mut self, eip: Eip) {
        self.write_back();
        self.ins().local_get(CPU);
        match eip {
            Eip::At(e) => self.ins().i32_const(e as i32),
            Eip::In(local) => self.ins().local_get(local),
        };
        self.ins()
            .i32_store(mem32(EIP))
            .i32_const(RAN as i32)
            .return_();
    }

    /// Bring the Cpu up to date: the registers the locals hold newer values of, and the count
    /// (the instructions retired inline added first).
    fn write_back(&mut self) {
        if let Some(width) = self.deferred_flags {
            self.store_deferred_flags(width);
        }
        self.flush_count();
        for r in 0..8u8 {
            if self.sync.dirty & (1 << r) != 0 {
                self.ins()
                    .local_get(CPU)
                    .local_get(R0 + r as u32)
                    .i32_store(mem32(REGS + 4 * r as u64));
            }
        }
        self.sync.dirty = 0;
        if !self.sync.count_stale {
            self.ins()
                .local_get(CPU)
                .local_get(ICOUNT)
                .i64_store(mem64(INSTRUCTIONS));
        }
    }

    /// Go on at `eip`: the next block of the region if there is one and the run loop would
    /// chain to it, else exit.
    fn goto(&mut self, k: u32, eip: u32) {
        let deferred = self.deferred_flags;
        if let Some(width) = deferred {
            // Stored now unless the way goes to a block of the region that computes its own
            // flags before anything can see them.
            let target_reads = self
                .index_of
                .get(&eip)
                .is_none_or(|&t| self.entry_reads_flags[t as usize]);
            if target_reads {
                self.store_deferred_flags(width);
                self.deferred_flags = None;
            }
        }
        self.goto_stored(k, eip);
        self.deferred_flags = deferred;
    }

    /// [`goto`](Self::goto) once the flags are where the way needs them.
    fn goto_stored(&mut self, k: u32, eip: u32) {
        if self.has_step {
            self.ins().local_get(CPU).i32_load(mem32(STOP_AT_BLOCK_END));
            self.exit_if(eip);
        }
        match self.index_of.get(&eip) {
            Some(&target) => {
                // Blocks start with everything in the locals.
                self.flush_count();
                for r in 0..8u8 {
                    self.load_if_stale(r);
                }
                self.count_fresh();
                if self.deferred_flags.is_some() {
                    // Flags not stored, for a block that computes its own before anything
                    // can see them; but one that does not fit in the budget exits at its
                    // start, where the run loop may deliver an interrupt (which pushes
                    // EFLAGS): that exit is taken here, with the flags stored.
                    self.exit_unless_it_fits(target, eip);
                }
                if target == k {
                    // Back to this block's start: its own loop (the outermost construct of
                    // its code).
                    let depth = self.depth - 1;
                    self.ins().br(depth);
                    return;
                }
                let page = self.block_page[target as usize];
                if page != self.block_page[k as usize] {
                    self.same_page_mapping(page, eip);
                }
                if target > k {
                    // A later block: its code starts where the label of the dispatch
                    // loop's block for it ends, which encloses this code: a direct branch.
                    let depth = self.depth + target - k - 1;
                    self.ins().br(depth);
                    return;
                }
                let depth = self.depth_dispatch(k);
                self.ins()
                    .i32_const(target as i32)
                    .local_set(STATE)
                    .br(depth);
            }
            None => self.exit(eip),
        }
    }

    /// On the way to code on another of the region's pages (`page`, at `eip`): exit to the
    /// interpreter unless the TLB maps its linear page to the physical page the code was
    /// compiled from, for this privilege level, as the run loop's lookup would (the mapping
    /// may have changed since; the region's page generations are checked when it is entered).
    fn same_page_mapping(&mut self, page: u8, eip: u32) {
        let (lin_page, phys_page) = self.pages[page as usize];
        let lin = self.cs_base.wrapping_add(eip);
        debug_assert_eq!(lin >> 12, lin_page);
        let entry = ((lin >> 12) as i32 & TLB_INDEX_MASK) * TLB_ENTRY_SIZE;
        let tlb = self.mem_tlb;
        // block $mapped / block $other / checks / br $mapped / end / exit / end
        self.ins().block(BlockType::Empty).block(BlockType::Empty);
        self.depth += 2;
        self.ins()
            // the tag names the page ...
            .local_get(TLB)
            .i32_load(mem_at(tlb, TLB_TAG + entry as u64, 2))
            .i32_const((lin_page << 12) as i32)
            .i32_xor()
            .i32_const(0xFFFF_F000u32 as i32)
            .i32_and();
        self.br_if_unlikely(0);
        self.ins()
            // ... allows a read at this privilege level ...
            .local_get(TLB)
            .i32_load(mem_at(tlb, TLB_TAG + entry as u64, 2))
            .local_get(PERM_R)
            .i32_and()
            .i32_eqz();
        self.br_if_unlikely(0);
        self.ins()
            // ... and maps it to the same physical page.
            .local_get(TLB)
            .i32_load(mem_at(tlb, TLB_DELTA + entry as u64, 2))
            .i32_const(((phys_page << 12).wrapping_sub(lin_page << 12)) as i32)
            .i32_ne();
        self.br_if_unlikely(0);
        self.ins().br(1).end();
        self.depth -= 1;
        let saved = self.sync;
        self.exit(eip);
        self.sync = saved;
        self.ins().end();
        self.depth -= 1;
    }

    /// Make the ICOUNT local current (the Cpu's count is newer after `step`).
    fn count_fresh(&mut self) {
        if self.sync.count_stale {
            self.ins()
                .local_get(CPU)
                .i64_load(mem64(INSTRUCTIONS))
                .local_set(ICOUNT);
            self.sync.count_stale = false;
        }
    }

    /// Add the instructions retired inline since the last time to the ICOUNT local.
    fn flush_count(&mut self) {
        if self.sync.pending != 0 {
            self.count_fresh();
            let p = self.sync.pending as i64;
            self.ins()
                .local_get(ICOUNT)
                .i64_const(p)
                .i64_add()
                .local_set(ICOUNT);
            self.sync.pending = 0;
        }
    }

    fn load_if_stale(&mut self, r: u8) {
        if self.sync.stale & (1 << r) != 0 {
            self.ins()
                .local_get(CPU)
                .i32_load(mem32(REGS + 4 * r as u64))
                .local_set(R0 + r as u32);
            self.sync.stale &= !(1 << r);
        }
    }

    /// Hand instruction `i` (at `eip`) to the interpreter: the registers the locals hold newer
    /// values of, the count and EIP are stored first; afterwards the Cpu holds the newest
    /// values of all of them (loaded again only when needed).
    fn step(&mut self, i: &Instr, eip: u32) {
        self.step_count += 1;
        self.has_step = true;
        let index = self.fallback.len() as i32;
        let slot = self.slot as i32;
        self.fallback.push(*i);
        self.write_back();
        self.ins()
            .local_get(CPU)
            .i32_const(eip as i32)
            .i32_store(mem32(EIP))
            .local_get(CPU)
            .i32_const(slot)
            .i32_const(index)
            .call(STEP_FN)
            .local_tee(T0)
            .i32_const(STEP_LEAVE as i32)
            .i32_ge_u();
        self.if_unlikely();
        self.ins()
            .local_get(T0)
            .i32_const(STEP_LEAVE as i32)
            .i32_sub()
            .return_()
            .end();
        self.sync.dirty = 0;
        self.sync.stale = 0xFF;
        self.sync.count_stale = true;
    }

    /// Emit instruction `i` at `eip` (`next` after it; `last` in its block). Returns true if
    /// it ended the block with a branch of its own. A conditional branch in the middle of a
    /// block (the interpreter's blocks go on past a Jcc not taken) leaves the block only when
    /// taken, as the interpreter does.
    fn instr(&mut self, k: u32, i: &Instr, eip: u32, next: u32, last: bool) -> bool {
        if !branch_within_limit(i, next, self.cs_limit) {
            self.step(i, eip);
            return false;
        }
        if self.rep_string(i, eip) {
            return false;
        }
        if let Some(ended) = self.memory_form(k, i, eip, next) {
            return ended;
        }
        let fused = k::is_fused(i);
        let deferred = fused && inline_kind(i) && self.defer_flags(i);
        if !inline_kind(i) {
            let emitted = forms::classify(i).and_then(|f| self.generic(k, i, eip, next, &f));
            match emitted {
                Some(forms::Emitted::Whole) => return false,
                // A fused pair's compare: its branch half follows, below.
                Some(forms::Emitted::CompareOnly) => {}
                None => {
                    self.step(i, eip);
                    return false;
                }
            }
        } else if !self.inline_kind_form(i, eip) {
            return false;
        }
        if deferred {
            // Every fused kind `inline_kind` lists is 32-bit.
            self.flags_deferred(32);
        }
        // Branches: the Jcc alone, or the Jcc half of a fused pair.
        let (cc, disp) = match i.fast {
            k::JCC => (Some(i.reg), i.imm),
            k::JMP_REL => (None, i.imm),
            _ if fused => (Some(i.cc), i.imm2),
            _ => {
                self.sync.pending += 1;
                return false;
            }
        };
        self.sync.pending += if fused { 2 } else { 1 };
        let target = next.wrapping_add(disp);
        match cc {
            None => self.goto(k, target),
            // A branch to the next instruction: the interpreter's block goes on either way.
            Some(_) if !last && target == next => {
                self.settle_deferred_flags();
                return false;
            }
            Some(cc) if !last => {
                self.branch_cond(i, cc);
                self.goto_if(k, target);
                self.settle_deferred_flags();
                return false;
            }
            Some(cc) => {
                self.branch_cond(i, cc);
                self.ins().if_(BlockType::Empty);
                self.depth += 1;
                let saved = self.sync;
                self.goto(k, target);
                self.sync = saved;
                self.ins().else_();
                self.goto(k, next);
                self.ins().end();
                self.depth -= 1;
                self.deferred_flags = None;
                // Both arms branched away; what follows the `if` is unreachable.
                self.ins().unreachable();
            }
        }
        true
    }

    /// Emit one of the forms [`inline_kind`] lists (a Jcc or JMP emits nothing here: its
    /// branch is the caller's). Returns false if it handed the instruction to `step` instead,
    /// or emitted all of it itself (IDIV).
    fn inline_kind_form(&mut self, i: &Instr, eip: u32) -> bool {
        self.inline_count += 1;
        match i.fast {
            k::MOV_RM_R_REG => self.set_reg_from(i.rm, Src::Reg(i.reg)),
            k::MOV_R_IMM => self.set_reg_from(i.reg, Src::Imm(i.imm)),
            k::MOVZX_B_REG => {
                self.get8(i.rm);
                self.set_reg(i.reg);
            }
            k::MOV_RM_R8_REG => {
                self.get8(i.reg);
                self.set8(i.rm);
            }
            k::LEA => {
                self.ea(i);
                self.set_reg(i.reg);
            }
            k::INC_R => self.incdec(i.reg, false),
            k::DEC_R => self.incdec(i.reg, true),
            k::CDQ => {
                self.get(EAX as u8);
                self.ins().i32_const(31).i32_shr_s();
                self.set_reg(EDX as u8);
            }
            k::IMUL_R_RM_REG => self.imul(i.reg, i.rm),
            k::SHIFT_I_R_SHL | k::SHIFT_I_R_SHR | k::SHIFT_I_R_SAR => {
                self.shift(i.fast, i.rm, i.imm & 0x1F)
            }
            k::IDIV_R => {
                // Counts itself retired (its slow arms go through `step`).
                self.idiv(i, eip);
                return false;
            }
            k::TEST_R_I => self.alu(TEST, i.rm, Src::Imm(i.imm)),
            k::ALU_RR_ADD => self.alu(ADD, i.rm, Src::Reg(i.reg)),
            k::ALU_RR_AND => self.alu(AND, i.rm, Src::Reg(i.reg)),
            k::ALU_RR_SUB => self.alu(SUB, i.rm, Src::Reg(i.reg)),
            k::ALU_RR_XOR => self.alu(XOR, i.rm, Src::Reg(i.reg)),
            k::ALU_RR_CMP => self.alu(CMP, i.rm, Src::Reg(i.reg)),
            k::ALU_RR_TEST => self.alu(TEST, i.rm, Src::Reg(i.reg)),
            k::ALU_R_I_ADD => self.alu(ADD, i.rm, Src::Imm(i.imm)),
            k::ALU_R_I_OR => self.alu(OR, i.rm, Src::Imm(i.imm)),
            k::ALU_R_I_AND => self.alu(AND, i.rm, Src::Imm(i.imm)),
            k::ALU_R_I_SUB => self.alu(SUB, i.rm, Src::Imm(i.imm)),
            k::ALU_R_I_CMP => self.alu(CMP, i.rm, Src::Imm(i.imm)),
            k::ALU_A_I_ADD => self.alu(ADD, EAX as u8, Src::Imm(i.imm)),
            k::ALU_A_I_AND => self.alu(AND, EAX as u8, Src::Imm(i.imm)),
            k::ALU_A_I_CMP => self.alu(CMP, EAX as u8, Src::Imm(i.imm)),
            k::ALU_A_I_TEST => self.alu(TEST, EAX as u8, Src::Imm(i.imm)),
            k::FUSED_ALU_RR_CMP => self.alu(CMP, i.rm, Src::Reg(i.reg)),
            k::FUSED_ALU_RR_TEST => self.alu(TEST, i.rm, Src::Reg(i.reg)),
            k::FUSED_ALU_R_I_CMP => self.alu(CMP, i.rm, Src::Imm(i.imm)),
            k::FUSED_ALU_A_I_CMP => self.alu(CMP, EAX as u8, Src::Imm(i.imm)),
            k::FUSED_ALU_R_I_AND => self.alu(AND, i.rm, Src::Imm(i.imm)),
            k::FUSED_TEST_R_I => self.alu(TEST, i.rm, Src::Imm(i.imm)),
            k::FUSED_DEC_R => self.incdec(i.reg, true),
            k::JCC | k::JMP_REL => {}
            _ => {
                // inline_kind lists exactly the forms above; anything else is the
                // interpreter's, whatever happens to these lists later.
                self.inline_count -= 1;
                self.step(i, eip);
                return false;
            }
        }
        true
    }

    /// The forms with a memory operand that run inline (32-bit operands and addresses): the
    /// access goes through the segment check and the TLB as the interpreter's fast path does,
    /// and whatever that path would not take (a TLB miss, a page-crossing access, MMIO, a
    /// write to a page with code, a fault) runs the whole instruction through `step`.
    /// Returns None for any other instruction, else whether it ended the block.
    fn memory_form(&mut self, k: u32, i: &Instr, eip: u32, next: u32) -> Option<bool> {
        let mem_operand = !matches!(i.fast, k::PUSH_R | k::POP_R | k::CALL_REL | k::RET);
        if mem_operand && !i.addr32 {
            return None;
        }
        let seg = i.seg as u8;
        let ss = Segment::SS as u8;
        match i.fast {
            k::MOV_R_RM_MEM | k::MOVZX_B_MEM | k::MOVZX_W_MEM => {
                let size = match i.fast {
                    k::MOVZX_B_MEM => 1,
                    k::MOVZX_W_MEM => 2,
                    _ => 4,
                };
                self.with_memory(i, eip, |g| {
                    g.ea(i);
                    g.access(seg, size, false);
                    g.load(size);
                    g.set_reg(i.reg);
                });
            }
            k::MOV_RM_R_MEM | k::MOV_RM_IMM_MEM => {
                let src = if i.fast == k::MOV_RM_R_MEM {
                    Src::Reg(i.reg)
                } else {
                    Src::Imm(i.imm)
                };
                self.with_memory(i, eip, |g| {
                    g.ea(i);
                    g.access(seg, 4, true);
                    g.ins().local_get(ADDR);
                    g.push(src);
                    g.store(4);
                });
            }
            k::ALU_R_M_ADD | k::ALU_R_M_OR | k::ALU_R_M_SUB | k::ALU_R_M_XOR | k::ALU_R_M_CMP => {
                let op = match i.fast {
                    k::ALU_R_M_ADD => ADD,
                    k::ALU_R_M_OR => OR,
                    k::ALU_R_M_SUB => SUB,
                    k::ALU_R_M_XOR => XOR,
                    _ => CMP,
                };
                self.with_memory(i, eip, |g| {
                    g.ea(i);
                    g.access(seg, 4, false);
                    g.load(4);
                    g.ins().local_set(VAL);
                    g.alu(op, i.reg, Src::Local(VAL));
                });
            }
            k::CMP_M_R | k::CMP_M_I => {
                let src = if i.fast == k::CMP_M_R {
                    Src::Reg(i.reg)
                } else {
                    Src::Imm(i.imm)
                };
                self.with_memory(i, eip, |g| {
                    g.ea(i);
                    g.access(seg, 4, false);
                    g.load(4);
                    g.ins().local_set(VAL);
                    g.alu_values(CMP, Src::Local(VAL), src);
                });
            }
            k::ALU_M_R_ADD | k::ALU_M_R_SUB | k::ALU_M_I_ADD | k::INC_M | k::DEC_M => {
                self.with_memory(i, eip, |g| {
                    // Read-modify-write: the write permission covers the read (Cpu::rmw).
                    g.ea(i);
                    g.access(seg, 4, true);
                    g.load(4);
                    g.ins().local_set(VAL);
                    match i.fast {
                        k::ALU_M_R_ADD => g.alu_values(ADD, Src::Local(VAL), Src::Reg(i.reg)),
                        k::ALU_M_R_SUB => g.alu_values(SUB, Src::Local(VAL), Src::Reg(i.reg)),
                        k::ALU_M_I_ADD => g.alu_values(ADD, Src::Local(VAL), Src::Imm(i.imm)),
                        k::INC_M => g.incdec_value(Src::Local(VAL), false, 32),
                        _ => g.incdec_value(Src::Local(VAL), true, 32),
                    }
                    g.ins().local_get(ADDR).local_get(T0);
                    g.store(4);
                });
            }
            k::MOV_R_RM8_MEM => {
                self.with_memory(i, eip, |g| {
                    g.ea(i);
                    g.access(seg, 1, false);
                    g.load(1);
                    g.set8(i.reg);
                });
            }
            k::MOV_RM_R8_MEM => {
                self.with_memory(i, eip, |g| {
                    g.ea(i);
                    g.access(seg, 1, true);
                    g.ins().local_get(ADDR);
                    g.get8(i.reg);
                    g.store(1);
                });
            }
            k::MOV_R_RM16_MEM => {
                self.with_memory(i, eip, |g| {
                    g.ea(i);
                    g.access(seg, 2, false);
                    g.get(i.reg);
                    g.ins().i32_const(0xFFFF_0000u32 as i32).i32_and();
                    g.load(2);
                    g.ins().i32_or();
                    g.set_reg(i.reg);
                });
            }
            k::MOV_RM_R16_MEM => {
                self.with_memory(i, eip, |g| {
                    g.ea(i);
                    g.access(seg, 2, true);
                    g.ins().local_get(ADDR);
                    g.get(i.reg);
                    g.store(2);
                });
            }
            k::FUSED_CMP_M_R
            | k::FUSED_CMP_M_I
            | k::FUSED_ALU_R_M_CMP
            | k::FUSED_ALU8_M_R_CMP
            | k::FUSED_CMP_RM8_I_MEM => {
                // A compare with memory and the Jcc after it: the fast arm compares and takes
                // the branch itself; not taken, both arms retire the pair and go on.
                let target = next.wrapping_add(i.imm2);
                let byte = matches!(i.fast, k::FUSED_ALU8_M_R_CMP | k::FUSED_CMP_RM8_I_MEM);
                let size = if byte { 1 } else { 4 };
                self.with_memory_retiring(i, eip, 2, |g| {
                    g.ea(i);
                    g.access(seg, size, false);
                    g.load(size);
                    g.ins().local_set(VAL);
                    let deferred = g.defer_flags(i);
                    match i.fast {
                        k::FUSED_CMP_M_R => g.alu_values(CMP, Src::Local(VAL), Src::Reg(i.reg)),
                        k::FUSED_CMP_M_I => g.alu_values(CMP, Src::Local(VAL), Src::Imm(i.imm)),
                        k::FUSED_ALU_R_M_CMP => g.alu_values(CMP, Src::Reg(i.reg), Src::Local(VAL)),
                        k::FUSED_ALU8_M_R_CMP => g.cmp8(Src::Local(VAL), Some(i.reg), 0),
                        _ => g.cmp8(Src::Local(VAL), None, i.imm & 0xFF),
                    }
                    if deferred {
                        g.flags_deferred(size * 8);
                    }
                    g.take_branch(k, i, target, next);
                    g.settle_deferred_flags();
                });
            }
            k::PUSH_R => {
                self.with_memory(i, eip, |g| {
                    g.stack_is_32bit();
                    g.get(ESP as u8);
                    g.ins().i32_const(4).i32_sub();
                    g.access(ss, 4, true);
                    g.ins().local_get(ADDR);
                    g.get(i.reg);
                    g.store(4);
                    g.get(ESP as u8);
                    g.ins().i32_const(4).i32_sub();
                    g.set_reg(ESP as u8);
                });
            }
            k::POP_R => {
                self.with_memory(i, eip, |g| {
                    g.stack_is_32bit();
                    g.get(ESP as u8);
                    g.access(ss, 4, false);
                    g.load(4);
                    g.ins().local_set(VAL);
                    // POP ESP loads the popped value over the increment.
                    g.get(ESP as u8);
                    g.ins().i32_const(4).i32_add();
                    g.set_reg(ESP as u8);
                    g.ins().local_get(VAL);
                    g.set_reg(i.reg);
                });
            }
            k::CALL_REL => {
                let target = next.wrapping_add(i.imm);
                self.with_memory(i, eip, |g| {
                    g.stack_is_32bit();
                    g.get(ESP as u8);
                    g.ins().i32_const(4).i32_sub();
                    g.access(ss, 4, true);
                    g.ins().local_get(ADDR).i32_const(next as i32);
                    g.store(4);
                    g.get(ESP as u8);
                    g.ins().i32_const(4).i32_sub();
                    g.set_reg(ESP as u8);
                });
                // Only the fast arm gets here (through `step` the call leaves the region).
                self.goto(k, target);
                return Some(true);
            }
            k::RET => {
                let limit = self.cs_limit;
                self.with_memory(i, eip, |g| {
                    g.stack_is_32bit();
                    g.get(ESP as u8);
                    g.access(ss, 4, false);
                    g.load(4);
                    // A return address past the CS limit faults (#GP): the slow arm.
                    g.ins().local_tee(VAL).i32_const(limit as i32).i32_gt_u();
                    g.br_if_unlikely(0);
                    g.get(ESP as u8);
                    g.ins().i32_const(4).i32_add();
                    g.set_reg(ESP as u8);
                });
                // Back into a caller in this region: its return point is a block here.
                for target in self.return_points.clone() {
                    self.ins().local_get(VAL).i32_const(target as i32).i32_eq();
                    self.goto_if(k, target);
                }
                self.leave(Eip::In(VAL));
                return Some(true);
            }
            _ => return None,
        }
        Some(false)
    }

    /// In the fast arm of a fused compare with memory, after the compare: take the branch to
    /// `target` if its condition holds (the pair retired). Not taken, or a branch to the next
    /// instruction, the block goes on, as the interpreter's does.
    fn take_branch(&mut self, k: u32, i: &Instr, target: u32, next: u32) {
        if target == next {
            return;
        }
        self.branch_cond(i, i.cc);
        let saved = self.sync;
        self.sync.pending += 2;
        self.goto_if(k, target);
        self.sync = saved;
    }

    /// Go to `target` ([`goto`](Self::goto)) if the condition on the stack holds; otherwise go
    /// on, with what is known about the locals as it was before.
    fn goto_if(&mut self, k: u32, target: u32) {
        self.ins().if_(BlockType::Empty);
        self.depth += 1;
        let saved = self.sync;
        self.goto(k, target);
        self.sync = saved;
        self.ins().end();
        self.depth -= 1;
    }

    /// Run `fast` (which branches to depth 0 when its fast path does not apply) as the
    /// instruction `i` at `eip`, with `step` as the slow arm. Both arms retire it and leave
    /// the registers in the same places, so code after them does not care which ran.
    fn with_memory(&mut self, i: &Instr, eip: u32, fast: impl FnOnce(&mut Gen)) {
        self.with_memory_retiring(i, eip, 1, fast)
    }

    /// [`with_memory`](Self::with_memory) for an instruction that counts `retire` retired
    /// instructions (2: a fused compare and branch whose branch is not taken).
    fn with_memory_retiring(
        &mut self,
        i: &Instr,
        eip: u32,
        retire: u32,
        fast: impl FnOnce(&mut Gen),
    ) {
        self.inline_count += 1;
        // The count stays pending in both arms: the fast arm adds nothing at run time, and
        // the slow arm, after `step` counted for the interpreter, sets ICOUNT back by what is
        // pending, so that after the merge the count is ICOUNT + pending either way.
        self.count_fresh();
        let before = self.sync;
        // block $done / block $slow / fast arm / br $done / end $slow / slow arm / end $done
        self.ins().block(BlockType::Empty).block(BlockType::Empty);
        self.depth += 2;
        let outer_written = std::mem::take(&mut self.written);
        fast(self);
        let written = self.written;
        self.written |= outer_written;
        self.sync.pending += retire;
        self.ins().br(1).end();
        self.depth -= 1;
        let after_fast = self.sync;
        debug_assert!(!after_fast.count_stale);
        self.sync = before;
        self.step(i, eip);
        // Counted as inline (above): this `step` is only its slow arm.
        self.step_count -= 1;
        // Back from `step`, the instruction has completed (a fault or a jump away returned
        // from the function): it changed only the registers it writes, which are the ones
        // the fast arm writes. The others are where they were before (in their locals unless
        // stale then), so they need no load here and, the same value on both arms, no merge
        // (a move) after them.
        self.sync.stale = before.stale | written;
        // What the fast arm left in locals, load here too.
        for r in 0..8u8 {
            if after_fast.stale & (1 << r) == 0 {
                self.load_if_stale(r);
            }
        }
        self.ins()
            .local_get(CPU)
            .i64_load(mem64(INSTRUCTIONS))
            .i64_const(after_fast.pending as i64)
            .i64_sub()
            .local_set(ICOUNT);
        self.sync = after_fast;
        self.ins().end();
        self.depth -= 1;
    }

    /// Start a fused compare whose branch is decided from its operands: if its flags would be
    /// stored, they are computed into T0/T1 only, and stored on each way out that needs them
    /// (`goto`, and `settle_deferred_flags` on the straight path). Returns whether it did.
    fn defer_flags(&mut self, i: &Instr) -> bool {
        let defer = self.store_flags && operand_condition(i, i.cc);
        if defer {
            self.store_flags = false;
        }
        defer
    }

    /// After the compare of a fused pair that `defer_flags` started: its flags (of `width`
    /// bits) are now in T0/T1 only.
    fn flags_deferred(&mut self, width: u32) {
        self.store_flags = true;
        self.deferred_flags = Some(width);
    }

    /// After the branch of a fused pair whose flags were deferred: on the straight path they
    /// are stored if something after may read them.
    fn settle_deferred_flags(&mut self) {
        if let Some(width) = self.deferred_flags.take() {
            if self.flags_live_after {
                self.store_deferred_flags(width);
            }
        }
    }

    /// Store the lazy flags in T0/T1 (`width` bits), whatever `store_flags` says.
    fn store_deferred_flags(&mut self, width: u32) {
        let store = std::mem::replace(&mut self.store_flags, true);
        self.store_flags_w(width);
        self.store_flags = store;
    }

    /// `br_if depth` to a slow arm or an exit, hinted as not taken: V8 then lays the target
    /// out of line and keeps the registers for the path taken (the branch-hinting proposal,
    /// in Chromium since 137).
    fn br_if_unlikely(&mut self, depth: u32) {
        self.hint_unlikely();
        self.ins().br_if(depth);
    }

    /// `if` into a slow arm or an exit, hinted as not taken (see `br_if_unlikely`).
    fn if_unlikely(&mut self) {
        self.hint_unlikely();
        self.ins().if_(BlockType::Empty);
    }

    /// The branch instruction emitted next is hinted not taken.
    fn hint_unlikely(&mut self) {
        self.hints.push(BranchHint {
            branch_func_offset: self.f.byte_len() as u32,
            branch_hint_value: 0,
        });
    }

    /// Fall to the slow arm (depth 0) if any of the system flags `bits` (DF, TF ...) is set.
    fn slow_arm_if_flags(&mut self, bits: u32) {
        self.ins()
            .local_get(CPU)
            .i32_load(mem32(FLAG_BITS))
            .i32_const(bits as i32)
            .i32_and();
        self.br_if_unlikely(0);
    }

    /// Fall to the slow arm unless SS is a 32-bit stack segment (ESP, not SP).
    fn stack_is_32bit(&mut self) {
        let ss = SEGS + Segment::SS as u64 * SEG_SIZE;
        self.ins()
            .local_get(CPU)
            .i32_load8_u(mem_at(0, ss + SEG_BIG, 0))
            .i32_eqz();
        self.br_if_unlikely(0);
    }

    /// The offset on the stack is checked against segment `seg` for an access of `size` bytes
    /// (a write if `write`), turned into a linear address (LIN) and looked up in the TLB; the
    /// RAM address goes to ADDR. Branches to depth 0 (the slow arm) wherever the interpreter's
    /// fast path would not be taken: outside the segment's range, across a page (or past 4
    /// GiB), a TLB entry that is not there or does not give this access.
    fn access(&mut self, seg: u8, size: u32, write: bool) {
        let flat = self.flat & (1 << (seg % 6)) != 0;
        let seg = SEGS + (seg as u64 % 6) * SEG_SIZE;
        let (lo, hi, perm) = if write {
            (SEG_WRITE_LO, SEG_WRITE_HI, PERM_W)
        } else {
            (SEG_READ_LO, SEG_READ_HI, PERM_R)
        };
        let tlb = self.mem_tlb;
        if flat {
            // A flat segment (the region is entered, and stays, only while it is one): the
            // offset is the linear address and every offset is allowed; an access that
            // would wrap past 4 GiB crosses a page, which takes the slow arm below.
            self.ins().local_set(LIN);
        } else {
            self.segment_check(seg, lo, hi, size);
        }
        self.ins()
            // the TLB entry of the first byte's page: ADDR = tlb + index * size
            .local_get(TLB)
            .local_get(LIN)
            .i32_const(12)
            .i32_shr_u()
            .i32_const(TLB_INDEX_MASK)
            .i32_and()
            .i32_const(TLB_ENTRY_SIZE)
            .i32_mul()
            .i32_add()
            .local_tee(ADDR)
            // One test: the tag names the page of the *last* byte and has the permission bit,
            // (tag ^ (last | perm)) & (0xFFFFF000 | perm) == 0. An access that crosses into the
            // next page fails it too: that page's entry is the next one, so this entry's tag
            // cannot name it.
            .i32_load(mem_at(tlb, TLB_TAG, 2))
            .local_get(LIN);
        if size > 1 {
            self.ins().i32_const(size as i32 - 1).i32_add();
        }
        self.ins()
            .local_get(perm)
            .i32_or()
            .i32_xor()
            .local_get(perm)
            .i32_const(0xFFFF_F000u32 as i32)
            .i32_or()
            .i32_and();
        self.br_if_unlikely(0);
        self.ins()
            // ADDR = ram + lin + delta (the physical address in RAM)
            .local_get(RAM)
            .local_get(LIN)
            .local_get(ADDR)
            .i32_load(mem_at(tlb, TLB_DELTA, 2))
            .i32_add()
            .i32_add()
            .local_set(ADDR);
    }

    /// The offset on the stack against the segment (at `seg` in the Cpu) for an access of
    /// `size` bytes with the range fields `lo`/`hi`, then LIN = base + offset; branches to
    /// depth 0 outside the range.
    fn segment_check(&mut self, seg: u64, lo: u64, hi: u64, size: u32) {
        self.ins()
            .local_tee(T0)
            // off < lo
            .local_get(CPU)
            .i32_load(mem32(seg + lo))
            .i32_lt_u();
        self.br_if_unlikely(0);
        self.ins()
            // off + size - 1 > hi, without wrapping
            .local_get(T0)
            .i64_extend_i32_u()
            .i64_const(size as i64 - 1)
            .i64_add()
            .local_get(CPU)
            .i32_load(mem32(seg + hi))
            .i64_extend_i32_u()
            .i64_gt_u();
        self.br_if_unlikely(0);
        self.ins()
            .local_get(CPU)
            .i32_load(mem32(seg + SEG_BASE))
            .local_get(T0)
            .i32_add()
            .local_set(LIN);
    }

    /// Push the `size`-byte value at ADDR in RAM (zero-extended).
    fn load(&mut self, size: u32) {
        self.ins().local_get(ADDR);
        self.load_from(size);
    }

    /// Push the `size`-byte value in RAM at the address on the stack (zero-extended).
    fn load_from(&mut self, size: u32) {
        let ram = self.mem_ram;
        match size {
            1 => self.ins().i32_load8_u(mem_at(ram, 0, 0)),
            2 => self.ins().i32_load16_u(mem_at(ram, 0, 0)),
            _ => self.ins().i32_load(mem_at(ram, 0, 0)),
        };
    }

    /// Store the value on the stack at the address under it (ADDR pushed first).
    fn store(&mut self, size: u32) {
        let ram = self.mem_ram;
        match size {
            1 => self.ins().i32_store8(mem_at(ram, 0, 0)),
            2 => self.ins().i32_store16(mem_at(ram, 0, 0)),
            _ => self.ins().i32_store(mem_at(ram, 0, 0)),
        };
    }

    /// Push byte register `r` (AL, CL, DL, BL, AH, CH, DH, BH), zero-extended.
    fn get8(&mut self, r: u8) {
        let r = r & 7;
        if r < 4 {
            self.get(r);
        } else {
            self.get(r - 4);
            self.ins().i32_const(8).i32_shr_u();
        }
        self.ins().i32_const(0xFF).i32_and();
    }

    /// Set byte register `r` to the byte on the stack (the rest of its register kept).
    fn set8(&mut self, r: u8) {
        let r = r & 7;
        let (full, shift) = if r < 4 { (r, 0) } else { (r - 4, 8) };
        self.ins().i32_const(0xFF).i32_and().local_set(T1);
        self.get(full);
        self.ins()
            .i32_const(!(0xFF << shift))
            .i32_and()
            .local_get(T1)
            .i32_const(shift)
            .i32_shl()
            .i32_or();
        self.set_reg(full);
    }

    /// CMP a, b at 8 bits (b: byte register `reg`, else the immediate `imm`): the flags of
    /// a - b stored as Flags::set_sub(8, ...) does.
    fn cmp8(&mut self, a: Src, reg: Option<u8>, imm: u32) {
        let push_b = |g: &mut Gen| match reg {
            Some(r) => g.get8(r),
            None => {
                g.ins().i32_const(imm as i32);
            }
        };
        self.push(a);
        self.ins().local_set(T2).local_get(T2);
        push_b(self);
        // T0 = a - b; T1 = (!a & b) | (!(a ^ b) & r)
        self.ins()
            .i32_sub()
            .local_set(T0)
            .local_get(T2)
            .i32_const(-1)
            .i32_xor();
        push_b(self);
        self.ins().i32_and().local_get(T2);
        push_b(self);
        self.ins()
            .i32_xor()
            .i32_const(-1)
            .i32_xor()
            .local_get(T0)
            .i32_and()
            .i32_or()
            .local_set(T1);
        self.store_flags_w(8);
    }

    fn get(&mut self, r: u8) {
        if r as usize >= ZERO_REG {
            self.ins().i32_const(0);
        } else {
            self.load_if_stale(r & 7);
            self.ins().local_get(R0 + (r & 7) as u32);
        }
    }

    fn set_reg(&mut self, r: u8) {
        let r = r & 7;
        self.ins().local_set(R0 + r as u32);
        self.sync.stale &= !(1 << r);
        self.sync.dirty |= 1 << r;
        self.written |= 1 << r;
    }

    fn set_reg_from(&mut self, r: u8, src: Src) {
        self.push(src);
        self.set_reg(r);
    }

    fn push(&mut self, src: Src) {
        match src {
            Src::Reg(r) => self.get(r),
            Src::Imm(v) => {
                self.ins().i32_const(v as i32);
            }
            Src::Local(l) => {
                self.ins().local_get(l);
            }
        }
    }

    /// The effective address of a 32-bit address-size memory operand (LEA).
    fn ea(&mut self, i: &Instr) {
        self.get(i.base);
        self.get(i.index);
        self.ins()
            .i32_const((i.scale & 3) as i32)
            .i32_shl()
            .i32_add()
            .i32_const(i.disp as i32)
            .i32_add();
    }

    /// Store lazy flags from T0 (result) and T1 (carry vector), 32-bit width.
    fn store_flags(&mut self) {
        if !self.store_flags {
            return;
        }
        self.ins()
            .local_get(CPU)
            .local_get(T0)
            .i32_store(mem32(RES))
            .local_get(CPU)
            .local_get(T1)
            .i32_store(mem32(CV));
        self.store_low(32);
    }

    /// Store the `low` word of the lazy flags of a `width`-bit result in T0 with its carry
    /// vector in T1 (Flags::set_lazy): the result's low byte, AF from carry bit 3, SF.
    fn store_low(&mut self, width: i32) {
        self.ins()
            .local_get(CPU)
            .local_get(T0)
            .i32_const(0xFF)
            .i32_and()
            .local_get(T1)
            .i32_const(8)
            .i32_and()
            .i32_const(5)
            .i32_shl()
            .i32_or()
            .local_get(T0)
            .i32_const(width - 1)
            .i32_shr_u()
            .i32_const(1)
            .i32_and()
            .i32_const(9)
            .i32_shl()
            .i32_or()
            .i32_store(mem32(LOW));
    }

    /// OP dst, src at 32 bits: the result in T0, its carry vector in T1, the flags stored, and
    /// the destination written unless the operation is CMP or TEST.
    fn alu(&mut self, op: u8, dst: u8, src: Src) {
        self.alu_values(op, Src::Reg(dst), src);
        if op != CMP && op != TEST {
            self.ins().local_get(T0);
            self.set_reg(dst);
        }
    }

    /// OP a, b at 32 bits: the result in T0, its carry vector in T1, the flags stored.
    fn alu_values(&mut self, op: u8, a: Src, src: Src) {
        self.alu_values_w(op, a, src, 32);
    }

    /// OP a, b at `width` bits (a and b zero-extended): the result in T0 and its carry vector
    /// in T1 (both exact in their low `width` bits), the flags stored for that width.
    fn alu_values_w(&mut self, op: u8, a: Src, src: Src, width: u32) {
        // T2 = a, the source pushed where needed.
        self.push(a);
        self.ins().local_set(T2);
        // ADC and SBB add or subtract CF too (crate::cpu::arith::alu); the carry-vector
        // formulas are the same with the carry in the result.
        let carry_in = |g: &mut Gen| {
            g.ins()
                .local_get(CPU)
                .i32_load(mem32(CV))
                .i32_const(31)
                .i32_shr_u();
        };
        match op {
            ADD | crate::cpu::arith::ADC => {
                // r = a + b (+ CF); cv = (a & b) | ((a | b) & !r)
                self.ins().local_get(T2);
                self.push(src);
                self.ins().i32_add();
                if op != ADD {
                    carry_in(self);
                    self.ins().i32_add();
                }
                self.ins().local_set(T0).local_get(T2);
                self.push(src);
                self.ins().i32_and().local_get(T2);
                self.push(src);
                self.ins()
                    .i32_or()
                    .local_get(T0)
                    .i32_const(-1)
                    .i32_xor()
                    .i32_and()
                    .i32_or()
                    .local_set(T1);
            }
            SUB | CMP | crate::cpu::arith::SBB => {
                // r = a - b (- CF); cv = (!a & b) | (!(a ^ b) & r)
                self.ins().local_get(T2);
                self.push(src);
                self.ins().i32_sub();
                if op == crate::cpu::arith::SBB {
                    carry_in(self);
                    self.ins().i32_sub();
                }
                self.ins()
                    .local_set(T0)
                    .local_get(T2)
                    .i32_const(-1)
                    .i32_xor();
                self.push(src);
                self.ins().i32_and().local_get(T2);
                self.push(src);
                self.ins()
                    .i32_xor()
                    .i32_const(-1)
                    .i32_xor()
                    .local_get(T0)
                    .i32_and()
                    .i32_or()
                    .local_set(T1);
            }
            _ => {
                self.ins().local_get(T2);
                self.push(src);
                match op {
                    OR => self.ins().i32_or(),
                    XOR => self.ins().i32_xor(),
                    _ => self.ins().i32_and(),
                };
                self.ins().local_set(T0).i32_const(0).local_set(T1);
            }
        }
        self.store_flags_w(width);
    }

    /// INC/DEC r32: like ADD/SUB of 1, CF kept (Flags::set_incdec).
    fn incdec(&mut self, r: u8, dec: bool) {
        self.incdec_value(Src::Reg(r), dec, 32);
        self.ins().local_get(T0);
        self.set_reg(r);
    }

    /// INC/DEC of `a` at `width` bits: the result in T0, the flags stored (if needed).
    fn incdec_value(&mut self, a: Src, dec: bool, width: u32) {
        self.push(a);
        self.ins().local_set(T2).local_get(T2).i32_const(1);
        if dec {
            self.ins().i32_sub();
        } else {
            self.ins().i32_add();
        }
        self.ins().local_set(T0);
        if !self.store_flags {
            return;
        }
        if dec {
            // cv = (!a & 1) | (!(a ^ 1) & r)
            self.ins()
                .local_get(T2)
                .i32_const(-1)
                .i32_xor()
                .i32_const(1)
                .i32_and()
                .local_get(T2)
                .i32_const(1)
                .i32_xor()
                .i32_const(-1)
                .i32_xor()
                .local_get(T0)
                .i32_and()
                .i32_or();
        } else {
            // cv = (a & 1) | ((a | 1) & !r)
            self.ins()
                .local_get(T2)
                .i32_const(1)
                .i32_and()
                .local_get(T2)
                .i32_const(1)
                .i32_or()
                .local_get(T0)
                .i32_const(-1)
                .i32_xor()
                .i32_and()
                .i32_or();
        }
        self.ins().local_set(T1);
        let sh = 32 - width as i32;
        // Stored cv: CF (bit 31) kept; bit 30 = old CF ^ new OF, where new OF = bit 31 of
        // (top ^ (top << 1)) with top = cv << (32 - width). low from the new carry vector.
        self.ins()
            .local_get(CPU)
            .local_get(CPU)
            .i32_load(mem32(CV))
            .local_tee(T2);
        self.ins()
            .i32_const(i32::MIN)
            .i32_and()
            .local_get(T2)
            .local_get(T1);
        if sh != 0 {
            self.ins().i32_const(sh).i32_shl();
        }
        self.ins().local_get(T1);
        if sh != 0 {
            self.ins().i32_const(sh).i32_shl();
        }
        self.ins()
            .i32_const(1)
            .i32_shl()
            .i32_xor()
            .i32_const(i32::MIN)
            .i32_and()
            .i32_xor()
            .i32_const(1)
            .i32_shr_u()
            .i32_const(1 << 30)
            .i32_and()
            .i32_or()
            .i32_store(mem32(CV))
            .local_get(CPU)
            .local_get(T0);
        if sh != 0 {
            self.ins().i32_const(sh).i32_shl();
        }
        self.ins().i32_store(mem32(RES));
        self.store_low(width as i32);
    }

    /// SHL/SHR/SAR r32, `count` (1-31; 0 changes nothing), with the flags the interpreter's
    /// shift sets (Flags::set_explicit: CF the last bit out; OF for SHL the top bit of the
    /// result XOR CF, for SHR the operand's top bit, for SAR 0; AF 0).
    fn shift(&mut self, kind: k::Kind, r: u8, count: u32) {
        if count == 0 {
            return;
        }
        let c = count as i32;
        self.get(r);
        self.ins().local_set(T2);
        // T0 = result; T1 = CF << 31
        self.ins().local_get(T2).i32_const(c);
        match kind {
            k::SHIFT_I_R_SHL => self.ins().i32_shl(),
            k::SHIFT_I_R_SHR => self.ins().i32_shr_u(),
            _ => self.ins().i32_shr_s(),
        };
        self.ins().local_set(T0).local_get(T2);
        match kind {
            // The last bit out: bit 32 - c of a, moved to bit 31.
            k::SHIFT_I_R_SHL => self.ins().i32_const(c - 1).i32_shl(),
            // Bit c - 1 of a, moved to bit 31.
            _ => self.ins().i32_const(32 - c).i32_shl(),
        };
        self.ins()
            .i32_const(i32::MIN)
            .i32_and()
            .local_set(T1)
            // cv = CF << 31 | (CF ^ OF) << 30
            .local_get(T1)
            .local_get(T1);
        match kind {
            // CF ^ OF = the result's top bit.
            k::SHIFT_I_R_SHL => {
                self.ins().drop().local_get(T0);
            }
            // OF = a's top bit.
            k::SHIFT_I_R_SHR => {
                self.ins().local_get(T2).i32_xor();
            }
            // OF = 0.
            _ => {}
        }
        self.ins()
            .i32_const(i32::MIN)
            .i32_and()
            .i32_const(1)
            .i32_shr_u()
            .i32_or()
            .local_set(T1);
        self.store_flags();
        self.ins().local_get(T0);
        self.set_reg(r);
    }

    /// IMUL r32, r32: the signed product's low half; CF = OF = the high half is significant.
    fn imul(&mut self, dst: u8, src: u8) {
        self.get(dst);
        self.ins().i64_extend_i32_s();
        self.get(src);
        self.ins()
            .i64_extend_i32_s()
            .i64_mul()
            .local_tee(W0)
            .i32_wrap_i64()
            .local_set(T0)
            // overflow = p != sext(lo); cv = overflow << 31
            .local_get(W0)
            .local_get(T0)
            .i64_extend_i32_s()
            .i64_ne()
            .i32_const(31)
            .i32_shl()
            .local_set(T1);
        // set_explicit: low has AF = 0, which the generic store gives only if cv & 8 == 0: it is.
        self.store_flags();
        self.ins().local_get(T0);
        self.set_reg(dst);
    }

    /// IDIV r32: EDX:EAX / r, quotient to EAX, remainder to EDX; a zero divisor or a quotient
    /// that does not fit goes through `step`, which raises #DE exactly as the interpreter does.
    fn idiv(&mut self, i: &Instr, eip: u32) {
        // The good arms count their own retirement in ICOUNT, so that must be current.
        self.flush_count();
        self.count_fresh();
        // A dividend in the i32 range (EDX holds EAX's sign, as after CDQ), the usual case:
        // one 32-bit division, the remainder from it by a multiply (a 64-bit division, and a
        // second one for the remainder, are several times slower on the host). Each arm then
        // finds the registers it reads in their locals, as the other does.
        if (i.rm as usize) < ZERO_REG {
            self.load_if_stale(i.rm & 7);
        }
        self.get(EDX as u8);
        self.get(EAX as u8);
        self.ins()
            .i32_const(31)
            .i32_shr_s()
            .i32_eq()
            .if_(BlockType::Empty);
        self.depth += 1;
        // #DE: divisor 0, or the smallest dividend by -1 (the only quotient that does not fit).
        self.get(i.rm);
        self.ins().local_tee(T1).i32_eqz();
        self.get(EAX as u8);
        self.ins()
            .i32_const(i32::MIN)
            .i32_eq()
            .local_get(T1)
            .i32_const(-1)
            .i32_eq()
            .i32_and()
            .i32_or();
        self.divide_error_if(i, eip);
        self.get(EAX as u8);
        self.ins().local_get(T1).i32_div_s().local_set(T0);
        self.get(EAX as u8);
        self.ins()
            .local_get(T0)
            .local_get(T1)
            .i32_mul()
            .i32_sub()
            .local_set(T3);
        self.division_retires();
        let fits = self.sync;
        self.ins().else_();
        self.idiv64(i, eip);
        self.ins().end();
        self.depth -= 1;
        // Both good arms leave EAX and EDX in their locals; the rest is as before either.
        debug_assert!(fits.stale == self.sync.stale && fits.dirty == self.sync.dirty);
    }

    /// With a #DE condition on the stack: if it holds, the instruction goes through `step`,
    /// which raises and delivers the exception as the interpreter does (the function returns
    /// there, so that arm never ends); the `else` arm, for the division, is left open (the
    /// caller ends it and takes 1 from `depth`).
    fn divide_error_if(&mut self, i: &Instr, eip: u32) {
        self.if_unlikely();
        self.depth += 1;
        let saved = self.sync;
        self.step(i, eip);
        self.ins().unreachable();
        self.sync = saved;
        self.ins().else_();
    }

    /// The good arm of IDIV r32 ends: the quotient (T0) to EAX, the remainder (T3) to EDX,
    /// the instruction retired.
    fn division_retires(&mut self) {
        self.ins().local_get(T0);
        self.set_reg(EAX as u8);
        self.ins().local_get(T3);
        self.set_reg(EDX as u8);
        self.ins()
            .local_get(ICOUNT)
            .i64_const(1)
            .i64_add()
            .local_set(ICOUNT)
            .end();
        self.depth -= 1;
    }

    /// IDIV r32 with a dividend of any size: a 64-bit division.
    fn idiv64(&mut self, i: &Instr, eip: u32) {
        // W0 = dividend, W1 = divisor.
        self.get(EDX as u8);
        self.ins().i64_extend_i32_u().i64_const(32).i64_shl();
        self.get(EAX as u8);
        self.ins().i64_extend_i32_u().i64_or().local_set(W0);
        self.get(i.rm);
        self.ins()
            .i64_extend_i32_s()
            .local_tee(W1)
            // Bad: divisor 0, or -1 with the smallest dividend (the only i64 overflow); the
            // quotient range is checked after the division.
            .i64_eqz()
            .local_get(W1)
            .i64_const(-1)
            .i64_eq()
            .local_get(W0)
            .i64_const(i64::MIN)
            .i64_eq()
            .i32_and()
            .i32_or();
        self.divide_error_if(i, eip);
        self.ins()
            .local_get(W0)
            .local_get(W1)
            .i64_div_s()
            .local_tee(W0)
            // Quotient out of the i32 range: #DE too.
            .local_get(W0)
            .i32_wrap_i64()
            .i64_extend_i32_s()
            .i64_ne();
        self.divide_error_if(i, eip);
        // The quotient fits; the remainder is recomputed from the registers.
        self.get(EDX as u8);
        self.ins().i64_extend_i32_u().i64_const(32).i64_shl();
        self.get(EAX as u8);
        self.ins()
            .i64_extend_i32_u()
            .i64_or()
            .local_get(W1)
            .i64_rem_s()
            .i32_wrap_i64()
            .local_set(T3)
            .local_get(W0)
            .i32_wrap_i64()
            .local_set(T0);
        self.division_retires();
        self.ins().end();
        self.depth -= 1;
    }

    /// Push the condition `cc` of the branch `i` (a Jcc, or the branch half of a fused pair).
    /// A fused compare or TEST leaves its operands in T2 (a) and the source, and its result in
    /// T0, so most conditions are one comparison of those; anything else reads the stored flags.
    fn branch_cond(&mut self, i: &Instr, cc: u8) {
        if !operand_condition(i, cc) {
            // The flags are in memory: whoever wrote them stored them (they are live).
            self.cond(cc);
            return;
        }
        // `operand_condition` admits CMP with below, equal, below or equal, less, less or
        // equal, and TEST/AND with any condition but parity.
        match i.fast {
            k::FUSED_ALU8_M_R_CMP | k::FUSED_CMP_RM8_I_MEM => {
                // CMP m8, r8/imm8 (cmp8): a, zero-extended, in T2; signed conditions compare
                // the bytes sign-extended.
                let signed = cc >> 1 >= 6;
                self.ins().local_get(T2);
                if signed {
                    self.ins().i32_extend8_s();
                }
                if i.fast == k::FUSED_ALU8_M_R_CMP {
                    self.get8(i.reg);
                } else {
                    self.ins().i32_const((i.imm & 0xFF) as i32);
                }
                if signed {
                    self.ins().i32_extend8_s();
                }
                self.compare_for(cc);
            }
            // TEST/AND: CF = OF = 0, so these depend on the result alone.
            k::FUSED_ALU_RR_TEST | k::FUSED_ALU_R_I_AND | k::FUSED_TEST_R_I => {
                match cc >> 1 {
                    2 | 3 => self.ins().local_get(T0).i32_eqz(),
                    4 | 6 => self.ins().local_get(T0).i32_const(0).i32_lt_s(),
                    7 => self.ins().local_get(T0).i32_const(0).i32_le_s(),
                    _ => self.ins().i32_const(0),
                };
            }
            // CMP a, b at 32 bits: a in T2.
            _ => {
                let b = match i.fast {
                    k::FUSED_ALU_RR_CMP | k::FUSED_CMP_M_R => Src::Reg(i.reg),
                    k::FUSED_ALU_R_M_CMP => Src::Local(VAL),
                    _ => Src::Imm(i.imm),
                };
                self.ins().local_get(T2);
                self.push(b);
                self.compare_for(cc);
            }
        }
        if cc & 1 != 0 {
            self.ins().i32_eqz();
        }
    }

    /// The comparison of the two values on the stack that decides condition `cc` (below, equal,
    /// below or equal, less, less or equal; its negation is the caller's) after CMP of them.
    fn compare_for(&mut self, cc: u8) {
        match cc >> 1 {
            1 => self.ins().i32_lt_u(),
            2 => self.ins().i32_eq(),
            3 => self.ins().i32_le_u(),
            6 => self.ins().i32_lt_s(),
            _ => self.ins().i32_le_s(),
        };
    }

    /// Push condition `cc` (0/1) from the stored lazy flags (Flags::cond).
    fn cond(&mut self, cc: u8) {
        let of = |g: &mut Gen| {
            g.ins()
                .local_get(CPU)
                .i32_load(mem32(CV))
                .local_tee(T1)
                .local_get(T1)
                .i32_const(1)
                .i32_shl()
                .i32_xor()
                .i32_const(31)
                .i32_shr_u();
        };
        let cf = |g: &mut Gen| {
            g.ins()
                .local_get(CPU)
                .i32_load(mem32(CV))
                .i32_const(31)
                .i32_shr_u();
        };
        let zf = |g: &mut Gen| {
            g.ins().local_get(CPU).i32_load(mem32(RES)).i32_eqz();
        };
        let sf = |g: &mut Gen| {
            g.ins()
                .local_get(CPU)
                .i32_load(mem32(LOW))
                .i32_const(9)
                .i32_shr_u()
                .i32_const(1)
                .i32_and();
        };
        match cc >> 1 {
            0 => of(self),
            1 => cf(self),
            2 => zf(self),
            3 => {
                cf(self);
                zf(self);
                self.ins().i32_or();
            }
            4 => sf(self),
            5 => {
                self.ins()
                    .local_get(CPU)
                    .i32_load(mem32(LOW))
                    .i32_const(0xFF)
                    .i32_and()
                    .i32_popcnt()
                    .i32_const(1)
                    .i32_and()
                    .i32_eqz();
            }
            6 => {
                sf(self);
                of(self);
                self.ins().i32_xor();
            }
            _ => {
                zf(self);
                sf(self);
                of(self);
                self.ins().i32_xor().i32_or();
            }
        }
        if cc & 1 != 0 {
            self.ins().i32_const(1).i32_xor();
        }
    }
}

/// Whether the generator runs `i` inline (else through `step`). Only 32-bit forms are listed;
/// every kind here is one the decoder classifies for 32-bit operands only. A jump whose target
/// could pass the code segment limit is left to the interpreter (it faults there).
fn inline_kind(i: &Instr) -> bool {
    matches!(
        i.fast,
        k::MOV_RM_R_REG
            | k::MOV_R_IMM
            | k::MOVZX_B_REG
            | k::MOV_RM_R8_REG
            | k::SHIFT_I_R_SHL
            | k::SHIFT_I_R_SHR
            | k::SHIFT_I_R_SAR
            | k::INC_R
            | k::DEC_R
            | k::CDQ
            | k::IMUL_R_RM_REG
            | k::IDIV_R
            | k::TEST_R_I
            | k::ALU_RR_ADD
            | k::ALU_RR_AND
            | k::ALU_RR_SUB
            | k::ALU_RR_XOR
            | k::ALU_RR_CMP
            | k::ALU_RR_TEST
            | k::ALU_R_I_ADD
            | k::ALU_R_I_OR
            | k::ALU_R_I_AND
            | k::ALU_R_I_SUB
            | k::ALU_R_I_CMP
            | k::ALU_A_I_ADD
            | k::ALU_A_I_AND
            | k::ALU_A_I_CMP
            | k::ALU_A_I_TEST
            | k::FUSED_ALU_RR_CMP
            | k::FUSED_ALU_RR_TEST
            | k::FUSED_ALU_R_I_CMP
            | k::FUSED_ALU_A_I_CMP
            | k::FUSED_ALU_R_I_AND
            | k::FUSED_TEST_R_I
            | k::FUSED_DEC_R
            | k::JCC
            | k::JMP_REL
    ) || (i.fast == k::LEA && i.addr32)
}

/// Whether a branch of `i` at `next` (the address after it) stays within `cs_limit`; the
/// region builder sends branches that may not to the interpreter.
fn branch_within_limit(i: &Instr, next: u32, cs_limit: u32) -> bool {
    let disp = match i.fast {
        k::JCC | k::JMP_REL | k::CALL_REL => i.imm,
        _ if k::is_fused(i) => i.imm2,
        _ => return true,
    };
    next.wrapping_add(disp) <= cs_limit
}

/// How an instruction of a block treats the arithmetic flags, for [`flags_needed`].
enum FlagUse {
    /// Neither reads nor writes them, and cannot fault.
    None,
    /// Computes all six from its operands, and cannot fault.
    Writes,
    /// Anything else: reads them (a Jcc, INC/DEC keeping CF), or may fault or run through the
    /// interpreter, where the guest can see them (a fault pushes EFLAGS).
    Reads,
}

fn flag_use(i: &Instr) -> FlagUse {
    match i.fast {
        k::MOV_RM_R_REG | k::MOV_R_IMM | k::CDQ | k::MOVZX_B_REG | k::MOV_RM_R8_REG => {
            FlagUse::None
        }
        k::LEA if i.addr32 => FlagUse::None,
        // A shift by 0 changes nothing.
        k::SHIFT_I_R_SHL | k::SHIFT_I_R_SHR | k::SHIFT_I_R_SAR if i.imm & 0x1F == 0 => {
            FlagUse::None
        }
        k::SHIFT_I_R_SHL | k::SHIFT_I_R_SHR | k::SHIFT_I_R_SAR => FlagUse::Writes,
        k::IMUL_R_RM_REG
        | k::TEST_R_I
        | k::ALU_RR_ADD
        | k::ALU_RR_AND
        | k::ALU_RR_SUB
        | k::ALU_RR_XOR
        | k::ALU_RR_CMP
        | k::ALU_RR_TEST
        | k::ALU_R_I_ADD
        | k::ALU_R_I_OR
        | k::ALU_R_I_AND
        | k::ALU_R_I_SUB
        | k::ALU_R_I_CMP
        | k::ALU_A_I_ADD
        | k::ALU_A_I_AND
        | k::ALU_A_I_CMP
        | k::ALU_A_I_TEST
        // A fused pair's branch reads the flags from its operands, not from memory.
        | k::FUSED_ALU_RR_CMP
        | k::FUSED_ALU_RR_TEST
        | k::FUSED_ALU_R_I_CMP
        | k::FUSED_ALU_A_I_CMP
        | k::FUSED_ALU_R_I_AND
        | k::FUSED_TEST_R_I => FlagUse::Writes,
        // The generic forms (forms.rs) say themselves; anything else may read them.
        _ => forms::classify(i).map_or(FlagUse::Reads, |f| f.flag_use()),
    }
}

/// For each instruction of a block, whether the flags it computes must be stored: only if an
/// instruction after it may read them before another one computes them all again. Wherever
/// the code may leave the block (its end, a branch taken) they are live: the next block may
/// exit to the interpreter before it computes any.
///
/// Also, for each instruction, whether they are read on the straight path after it (the rest of
/// the block, then wherever it goes): a fused compare and branch whose condition comes from its
/// operands stores them on each way out only where that way needs them (`Gen::deferred_flags`).
fn flags_needed(instrs: &[Instr]) -> FlagLiveness {
    let mut live = true;
    let mut needed = vec![true; instrs.len()];
    let mut live_after = vec![true; instrs.len()];
    for (n, i) in instrs.iter().enumerate().rev() {
        // A branch (a fused pair's too) may leave the block, and a fused pair whose
        // condition is not one comparison reads the stored flags itself.
        let branches = k::is_fused(i) || matches!(i.fast, k::JCC | k::JMP_REL);
        needed[n] = live || branches;
        live_after[n] = live;
        live = match flag_use(i) {
            FlagUse::None => live,
            FlagUse::Writes => false,
            FlagUse::Reads => true,
        };
    }
    FlagLiveness {
        needed,
        live_after,
        at_entry: live,
    }
}

/// What [`flags_needed`] finds for a block.
struct FlagLiveness {
    /// Per instruction: its flags must be stored where it computes them.
    needed: Vec<bool>,
    /// Per instruction: its flags are read on the straight path after it.
    live_after: Vec<bool>,
    /// The block may read the flags it is entered with, or let the guest see them (a fault,
    /// an instruction through the interpreter), before it computes them all itself.
    at_entry: bool,
}

/// Whether the branch of fused pair `i` with condition `cc` is decided from the compare's
/// operands or result in locals (`Gen::branch_cond`), not from the stored flags.
fn operand_condition(i: &Instr, cc: u8) -> bool {
    match i.fast {
        k::FUSED_ALU_RR_CMP
        | k::FUSED_CMP_M_R
        | k::FUSED_ALU_R_I_CMP
        | k::FUSED_ALU_A_I_CMP
        | k::FUSED_CMP_M_I
        | k::FUSED_ALU_R_M_CMP
        | k::FUSED_ALU8_M_R_CMP
        | k::FUSED_CMP_RM8_I_MEM => matches!(cc >> 1, 1 | 2 | 3 | 6 | 7),
        k::FUSED_ALU_RR_TEST | k::FUSED_ALU_R_I_AND | k::FUSED_TEST_R_I => cc >> 1 != 5,
        _ => false,
    }
}
