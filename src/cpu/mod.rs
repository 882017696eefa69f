//! The x86 CPU: registers and modes, the decoded-block cache and the run loop.
//!
//! Instructions are decoded once into [`Instr`] records whose handler was chosen at decode time
//! (operand size, register or memory form), grouped into blocks keyed by the physical address
//! of their first byte (icache.rs; their instructions live in one arena). The run loop looks a
//! block up, checks that the page it came from was not written since, and runs its
//! instructions: the hottest forms inline through one `match` (fast.rs), the rest through their
//! handler pointer. A compare and the conditional jump after it are fused into one instruction.
//! The retired-instruction count, the unit of virtual time, advances per instruction, so a
//! device or RDTSC sees the exact time of the instruction that touches it. Flags are lazy
//! ([`flags`]), memory goes through a software TLB ([`crate::mem::tlb`]), a fault is a
//! one-word value ([`Exception`]).

pub mod access;
pub mod counters;
pub mod debug;
pub mod decode;
pub mod exception;
pub mod fast;
pub mod flags;
pub mod icache;
pub mod interrupt;
pub mod operand;
pub mod protected;
pub mod seg;
pub mod task;

// Instruction groups: each file decodes and executes its own opcodes.
pub mod arith;
pub mod bits;
pub mod control;
pub mod data;
pub mod muldiv;
pub mod shift;
pub mod state;
pub mod string;
pub mod system;
pub mod x87;

use crate::bus::{Bus, EmptyBus};
use crate::mem::Memory;
pub use decode::Instr;
pub use exception::{Exception, Fault};
use flags::Flags;
use icache::{ICache, InstrArena};
pub use seg::{SegCache, Segment};

/// General register numbers, as encoded in instructions.
pub const EAX: usize = 0;
pub const ECX: usize = 1;
pub const EDX: usize = 2;
pub const EBX: usize = 3;
pub const ESP: usize = 4;
pub const EBP: usize = 5;
pub const ESI: usize = 6;
pub const EDI: usize = 7;
/// A register slot that always reads 0: effective-address forms without a base or index use it.
pub const ZERO_REG: usize = 8;
/// Slots in [`Cpu::regs`]: the eight registers, [`ZERO_REG`], and zeros up to a power of two so
/// that an index masked with `REG_SLOTS - 1` needs no bounds check.
pub const REG_SLOTS: usize = 16;

/// CR0 bits.
pub const CR0_PE: u32 = 1 << 0;
pub const CR0_MP: u32 = 1 << 1;
pub const CR0_EM: u32 = 1 << 2;
pub const CR0_TS: u32 = 1 << 3;
pub const CR0_ET: u32 = 1 << 4;
pub const CR0_NE: u32 = 1 << 5;
pub const CR0_WP: u32 = 1 << 16;
pub const CR0_AM: u32 = 1 << 18;
pub const CR0_NW: u32 = 1 << 29;
pub const CR0_CD: u32 = 1 << 30;
pub const CR0_PG: u32 = 1 << 31;

/// CR4 bits.
pub const CR4_VME: u32 = 1 << 0;
pub const CR4_PVI: u32 = 1 << 1;
pub const CR4_TSD: u32 = 1 << 2;
pub const CR4_DE: u32 = 1 << 3;
pub const CR4_PSE: u32 = 1 << 4;
pub const CR4_PGE: u32 = 1 << 7;
pub const CR4_OSFXSR: u32 = 1 << 9;

/// Why [`Cpu::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunExit {
    /// The instruction budget was used up.
    Budget,
    /// The CPU executed HLT and waits for an interrupt.
    Halted,
    /// A triple fault (or a fault the CPU cannot deliver): the machine must reset.
    Shutdown,
}

/// A descriptor-table register (GDTR, IDTR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableReg {
    pub base: u32,
    pub limit: u32,
}

/// Model-specific registers the CPU implements.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Msrs {
    pub sysenter_cs: u32,
    pub sysenter_esp: u32,
    pub sysenter_eip: u32,
    pub apic_base: u64,
    /// Added to the retired-instruction count to form the TSC (WRMSR to the TSC sets it).
    pub tsc_offset: u64,
}

/// The processor.
///
/// `repr(C)` to keep the register file at offset 0: a register picked by a decoded field is then
/// at the CPU's address plus four times its number, where at any other offset the compiler keeps
/// the register file's address as one more value live through the whole run loop (on wasm32,
/// where loads take no scaled index, V8 spills it and reloads it at every instruction).
#[repr(C)]
pub struct Cpu {
    /// EAX..EDI, then slots that stay 0 (see [`ZERO_REG`] and [`REG_SLOTS`]).
    pub regs: [u32; REG_SLOTS],
    pub eip: u32,
    pub flags: Flags,
    /// ES, CS, SS, DS, FS, GS (see [`Segment`]).
    pub segs: [SegCache; 6],
    pub gdtr: TableReg,
    pub idtr: TableReg,
    pub ldtr: SegCache,
    pub tr: SegCache,
    pub cr0: u32,
    pub cr2: u32,
    pub cr3: u32,
    pub cr4: u32,
    /// DR0..DR7 (DR4/DR5 alias DR6/DR7).
    pub dr: [u32; 8],
    pub msr: Msrs,
    /// The x87 FPU.
    pub fpu: x87::Fpu,
    /// Current privilege level.
    pub cpl: u8,
    /// Physical memory, paging and the TLB.
    pub mem: Memory,
    /// Everything that is not RAM.
    pub bus: Box<dyn Bus>,
    /// Retired instructions since reset: the unit of virtual time.
    pub instructions: u64,
    /// HLT executed; waiting for an interrupt.
    pub halted: bool,
    /// Triple fault: the machine must reset.
    pub shutdown: bool,
    /// The TLB permission bit that reads at the current CPL need.
    pub(crate) tlb_read_perm: u32,
    /// The TLB permission bit that writes at the current CPL need.
    pub(crate) tlb_write_perm: u32,
    /// The INTR line as last sampled from the bus. It can only change when the guest touches a
    /// device or when the host advances devices between `run` calls, so it is re-read then
    /// instead of asking the bus on every block.
    pub(crate) intr: bool,
    /// Interrupts are inhibited for one instruction (after MOV SS, POP SS, STI).
    pub(crate) irq_shadow: bool,
    /// Set by anything that invalidates assumptions of the running block (mode or CS changes,
    /// self-modifying code, HLT); the block ends after the current instruction.
    pub(crate) stop_block: bool,
    /// Interrupt delivery in progress (for double-fault detection).
    pub(crate) delivering: Option<u8>,
    pub(crate) icache: ICache,
    /// Data breakpoints (DR6 B0-B3 bits) hit by the current instruction, delivered as a #DB
    /// trap when it completes (see debug.rs).
    pub(crate) pending_db: u32,
    /// The current instruction delivered a software interrupt (INT n, INT3, INTO): it is not
    /// single-stepped (see run_block). Meaningful only after a single-stepped instruction,
    /// whose run_block clears it first.
    pub(crate) soft_int: bool,
    /// Elements of a REP string instruction's batch that compiled code already did before
    /// handing the rest of the instruction to its handler, which counts them into the batch
    /// (0 otherwise; see crate::jit::codegen::strings).
    pub(crate) rep_done: u32,
    /// Set by `crate::jit::step` when the instruction it ran leaves the run loop something to
    /// do at the end of the block (an interrupt became due, ...): compiled code then ends the
    /// block there instead of going on to the next. 0 whenever compiled code is entered.
    pub(crate) jit_stop_at_block_end: u32,
    /// The compiling tier's regions and counters (a cache; see crate::jit).
    pub(crate) jit: crate::jit::Jit,
    /// The host's engine for compiled code, while the tier is on. Taken out while compiled
    /// code runs.
    pub(crate) jit_engine: Option<Box<dyn crate::jit::Engine>>,
    /// Event counters (observations, not state; see counters.rs).
    pub counters: Box<counters::Counters>,
    /// A port access brought a device's deadline before the end of this run: `run` returns
    /// after the current block (the instruction that made the access ended it).
    pub(crate) end_run: bool,
    /// [`fast::run_repeating`]'s `repeat_below`, kept here rather than in a local: only its
    /// branches read it, and as a local V8 kept it in a register it reloaded from the stack at
    /// every instruction.
    pub(crate) repeat_below: u64,
}

impl Cpu {
    /// A CPU in its power-on state with `ram_bytes` of RAM and the given bus.
    pub fn new(ram_bytes: usize, bus: Box<dyn Bus>) -> Cpu {
        let mut cpu = Cpu {
            regs: [0; REG_SLOTS],
            eip: 0,
            flags: Flags::default(),
            segs: Default::default(),
            gdtr: TableReg {
                base: 0,
                limit: 0xFFFF,
            },
            idtr: TableReg {
                base: 0,
                limit: 0x3FF,
            },
            ldtr: SegCache::default(),
            tr: SegCache::default(),
            cr0: 0,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            dr: [0; 8],
            msr: Msrs::default(),
            fpu: x87::Fpu::new(),
            cpl: 0,
            mem: Memory::new(ram_bytes),
            bus,
            instructions: 0,
            halted: false,
            shutdown: false,
            tlb_read_perm: 0,
            tlb_write_perm: 0,
            intr: false,
            irq_shadow: false,
            stop_block: false,
            delivering: None,
            icache: ICache::new(),
            jit: crate::jit::Jit::default(),
            jit_engine: None,
            pending_db: 0,
            soft_int: false,
            rep_done: 0,
            jit_stop_at_block_end: 0,
            counters: Box::default(),
            end_run: false,
            repeat_below: 0,
        };
        cpu.reset();
        cpu
    }

    /// A CPU with RAM and nothing else on its bus (for tests and benchmarks).
    pub fn with_ram(ram_bytes: usize) -> Cpu {
        Cpu::new(ram_bytes, Box::new(EmptyBus))
    }

    /// The RESET state: real mode, CS:IP = F000:FFF0 with CS base FFFF0000.
    pub fn reset(&mut self) {
        self.regs = [0; REG_SLOTS];
        // EDX holds the processor signature after reset (the one CPUID reports).
        self.regs[EDX] = system::CPU_SIGNATURE;
        self.eip = 0xFFF0;
        self.flags = Flags::default();
        for (i, s) in self.segs.iter_mut().enumerate() {
            *s = SegCache::real(0);
            if i == Segment::CS as usize {
                s.selector = 0xF000;
                s.base = 0xFFFF_0000;
            }
        }
        self.gdtr = TableReg {
            base: 0,
            limit: 0xFFFF,
        };
        self.idtr = TableReg {
            base: 0,
            limit: 0x3FF,
        };
        self.ldtr = SegCache::default();
        self.tr = SegCache::default();
        self.cr0 = CR0_ET | CR0_CD | CR0_NW;
        self.cr2 = 0;
        self.cr3 = 0;
        self.cr4 = 0;
        self.dr = [0; 8];
        self.dr[6] = 0xFFFF_0FF0;
        self.dr[7] = 0x0000_0400;
        self.msr = Msrs {
            apic_base: 0xFEE0_0900,
            ..Msrs::default()
        };
        self.fpu = x87::Fpu::new();
        self.halted = false;
        self.shutdown = false;
        self.irq_shadow = false;
        self.delivering = None;
        self.pending_db = 0;
        // Not a privilege change the guest made: not counted.
        self.cpl = 0;
        self.set_cpl(0);
        self.sync_paging();
        self.mem.tlb.flush_all();
        self.icache.flush();
    }

    /// Protected mode enabled (CR0.PE).
    #[inline(always)]
    pub fn protected_mode(&self) -> bool {
        self.cr0 & CR0_PE != 0
    }

    /// Virtual-8086 mode (EFLAGS.VM in protected mode).
    #[inline(always)]
    pub fn v86_mode(&self) -> bool {
        self.flags.sys(flags::VM)
    }

    /// Real mode (not protected).
    #[inline(always)]
    pub fn real_mode(&self) -> bool {
        self.cr0 & CR0_PE == 0
    }

    /// Set the current privilege level and the TLB permissions that go with it.
    pub fn set_cpl(&mut self, cpl: u8) {
        if cpl != self.cpl {
            self.count_mode(if cpl < self.cpl {
                counters::ModeSwitch::ToInnerRing
            } else {
                counters::ModeSwitch::ToOuterRing
            });
        }
        self.cpl = cpl;
        self.update_fast_path_perms();
    }

    /// Copy the paging controls from CR0/CR3/CR4 into the MMU.
    pub fn sync_paging(&mut self) {
        let t = &mut self.mem.tlb;
        t.paging = self.cr0 & CR0_PG != 0 && self.cr0 & CR0_PE != 0;
        t.write_protect = self.cr0 & CR0_WP != 0;
        t.cr3 = self.cr3;
        t.pse = self.cr4 & CR4_PSE != 0;
        t.pge = self.cr4 & CR4_PGE != 0;
    }

    /// Open or close the A20 gate (an input from the machine).
    pub fn set_a20(&mut self, enabled: bool) {
        self.mem.set_a20(enabled);
        self.icache.flush();
    }

    /// The stack pointer width of the current stack segment: 0xFFFF or 0xFFFFFFFF.
    #[inline(always)]
    pub fn stack_mask(&self) -> u32 {
        if self.segs[Segment::SS as usize].big {
            u32::MAX
        } else {
            0xFFFF
        }
    }

    /// Run until `budget` more instructions have retired, the CPU halts, or it shuts down.
    /// The count may overshoot by less than one block.
    pub fn run(&mut self, budget: u64) -> RunExit {
        // The instruction arena is taken out for the whole call: handlers get `&mut self` and
        // run straight from it (see icache.rs).
        let mut arena = std::mem::take(&mut self.icache.arena);
        let exit = self.run_from(&mut arena, budget);
        self.icache.arena = arena;
        exit
    }

    fn run_from(&mut self, arena: &mut InstrArena, budget: u64) -> RunExit {
        let end = self.instructions.saturating_add(budget);
        // Delivered exceptions count against the budget too, so a guest stuck in a fault loop
        // still returns control to the host.
        let mut faults = 0u64;
        self.refresh_intr();
        self.end_run = false;
        while self.instructions + faults < end {
            if self.shutdown {
                return RunExit::Shutdown;
            }
            if std::mem::take(&mut self.end_run) {
                break;
            }
            if self.intr && self.flags.sys(flags::IF) && !self.irq_shadow {
                self.halted = false;
                let vector = self.bus.acknowledge_interrupt();
                self.refresh_intr();
                self.external_interrupt(vector);
                // The machine may want the run to end at the INTA (its clock changes rate).
                self.end_run |= self.bus.take_deadline_moved();
                continue;
            }
            if self.halted {
                return RunExit::Halted;
            }
            if !self.run_block(arena, end - faults) {
                faults += 1;
            }
        }
        if self.shutdown {
            RunExit::Shutdown
        } else {
            RunExit::Budget
        }
    }

    /// Look up (or decode) the block at CS:EIP and run it. Returns false if it ended in an
    /// exception.
    fn run_block(&mut self, arena: &mut InstrArena, end: u64) -> bool {
        if self.stop_block {
            // Something changed EFLAGS.AC, CPL or the debug registers (POPF, IRET, interrupt
            // delivery, task switch): the fast-path permissions may have to change with it.
            self.stop_block = false;
            self.update_fast_path_perms();
        }
        let single_step = self.single_stepping();
        self.irq_shadow = false;
        // Instruction breakpoints and RF (debug.rs): checked before the fetch, which they
        // take priority over. `rf` remembers RF so a faulting instruction can restore it.
        let mut rf = false;
        if single_step {
            // Only read after a single-stepped instruction: cleared here, not on every block.
            self.soft_int = false;
            match self.debug_before_instruction() {
                Ok(r) => rf = r,
                Err(e) => {
                    self.deliver_exception(e);
                    return false;
                }
            }
        }
        let cs = self.segs[Segment::CS as usize];
        let lin = cs.base.wrapping_add(self.eip);
        let phys = match self.mem.tlb.lookup(lin, self.tlb_read_perm) {
            Some(p) => p,
            None => match self.translate(lin, false, self.cpl == 3) {
                Ok(p) => p,
                Err(e) => {
                    self.debug_instruction_faulted(rf);
                    self.deliver_exception(e);
                    return false;
                }
            },
        };
        let key = icache::key(cs.big);
        let mut uncacheable = false;
        let (mut slot, mut start, mut len) = if let Some(found) = self.cached_block(phys, &cs) {
            found
        } else {
            let idx = self.victim_slot(phys, key);
            match self.decode_block(arena, phys) {
                Ok(d) => {
                    if d.uncacheable {
                        self.icache.blocks[idx].phys = icache::NO_BLOCK;
                        uncacheable = true;
                    } else {
                        let gen = self.mem.page_generation((phys >> 12) as usize);
                        let block = icache::Block::new(phys, cs.big, gen, &d);
                        let second = icache::SecondPage {
                            page: d.next_page,
                            gen: self.mem.page_generation(d.next_page as usize),
                        };
                        self.icache.insert(idx, block, second);
                    }
                    (idx, d.start, d.len)
                }
                Err(e) => {
                    self.icache.blocks[idx].phys = icache::NO_BLOCK;
                    self.debug_instruction_faulted(rf);
                    self.deliver_exception(e);
                    return false;
                }
            }
        };
        let tf = self.flags.sys(flags::TF);
        // The linear and physical page of the block about to run (see chained_block).
        let mut code_page = (lin & !0xFFF, phys & !0xFFF);
        let mut ok = true;
        let retired_before = self.instructions;
        // Nothing needs the run loop before the block about to run (see must_stop_chaining):
        // what lets a block that loops to itself repeat at once. Known of every chained block.
        let mut chainable = !single_step && !uncacheable && !self.must_stop_chaining();
        loop {
            let budget = end.saturating_sub(self.instructions).max(1);
            // How many decoded instructions fit in the budget: all of them unless it is nearly
            // used up (each retires at most MAX_RETIRES guest instructions), so that a slice
            // ends exactly at its budget.
            let max = if single_step {
                0
            } else if budget >= (fast::MAX_RETIRES * len) as u64 {
                len
            } else {
                fast::fitting(&arena[start..start + len], budget)
            };
            // A run that stops inside the block needs every flag set wherever it stops: the
            // block's forms that skip flags rely on an instruction after them
            // (fast::drop_dead_flags), so they set them again for this run.
            let cut = max < len;
            if cut {
                fast::restore_flags(&mut arena[start..start + len]);
            }
            // Less than the first one: single-stepping, or the budget ends inside a folded
            // move or CDQ and its instruction or a fused compare and branch. Run its first
            // part alone: the folded move or CDQ, or the compare.
            let first_part;
            let instrs = if max > 0 {
                &arena[start..start + max]
            } else if let Some(part) = fast::first_part(&arena[start]) {
                first_part = [part];
                &first_part[..]
            } else {
                &arena[start..start + 1]
            };
            // The compiling tier, when it is on, runs or counts the block first.
            // Not a block across two pages: compiled regions check only the pages where
            // their blocks start (see icache.rs).
            let compiled = if self.jit.threshold != 0
                && !single_step
                && !uncacheable
                && !self.icache.blocks[slot].straddles()
            {
                self.run_compiled(arena, slot, end)
            } else {
                None
            };
            // The block ran as the interpreter's inline forms alone (see chained_block).
            let only_fast = compiled.is_none() && self.icache.blocks[slot].fast_only();
            match compiled {
                Some(true) => {}
                Some(false) => ok = false,
                None => {
                    // A block that loops to itself repeats without the trip back here, while
                    // the run loop would take it again whole (see fast::run_repeating). Not
                    // with the compiling tier on: it counts every start of a block to find the
                    // hot ones.
                    let repeat = chainable
                        && instrs.len() == len
                        && self.jit.threshold == 0
                        && self.icache.blocks[slot].fast_only();
                    // Again while the whole block surely fits in the budget (as above):
                    // instructions + MAX_RETIRES * len <= end.
                    let most = (fast::MAX_RETIRES * len) as u64;
                    let repeat_below = if repeat && end >= most {
                        end - most + 1
                    } else {
                        0
                    };
                    if let Err(e) = fast::run_repeating(self, instrs, repeat_below) {
                        self.debug_instruction_faulted(rf);
                        self.deliver_exception(e);
                        ok = false;
                    }
                }
            }
            if cut {
                fast::drop_dead_flags(&mut arena[start..start + len]);
            }
            if !ok || single_step || uncacheable {
                break;
            }
            // Chain into the block that follows, if it is decoded and nothing needs the run
            // loop first: one TLB probe and one cache probe instead of a trip through it.
            match self.chained_block(end, only_fast, &mut code_page) {
                Some((i, s, l)) => {
                    (slot, start, len) = (i, s, l);
                    chainable = true;
                }
                None => break,
            }
        }
        if uncacheable {
            arena.truncate(start);
        }
        if !ok {
            return false;
        }
        if self.stop_block {
            self.stop_block = false;
            self.update_fast_path_perms();
        }
        // Debug traps after the instruction: TF single step and data breakpoints (a data
        // breakpoint hit sets stop_block, so its instruction is the last one run). A software
        // interrupt (INT n, INT3, INTO) is not single-stepped: it clears TF as it enters its
        // handler (SDM INT n pseudo-code), and no single-step trap follows it (SDM Vol. 3B
        // 17.3.1.4; Intel hardware delivers the #BP of an INT3 executed with TF set, and no
        // #DB).
        let step = single_step && tf && self.instructions == retired_before + 1 && !self.soft_int;
        if step || self.pending_db != 0 {
            self.debug_trap(step);
        }
        true
    }

    /// The decoded block at physical `phys`, if the cache holds one that is still good for the
    /// code segment `cs`: decoded in the same mode, from the page as it is now (no write since),
    /// and within the segment limit. Returns where its instructions are in the arena.
    #[inline(always)]
    fn cached_block(&self, phys: u32, cs: &SegCache) -> Option<(usize, usize, usize)> {
        self.cached_block_at(phys, self.eip, cs)
    }

    /// The way a newly decoded block at `phys` for code size `key` goes into (see icache.rs):
    /// the one holding that block already (stale, or beyond a new CS limit), else an empty or
    /// stale one, else the second.
    fn victim_slot(&self, phys: u32, key: u8) -> usize {
        let first = self.icache.index(phys);
        let ways = [first, first + 1];
        let holds = |slot: usize| {
            let b = &self.icache.blocks[slot];
            b.phys == phys && b.key() == key
        };
        let free = |slot: usize| {
            let b = &self.icache.blocks[slot];
            b.phys == icache::NO_BLOCK || b.gen != self.mem.page_generation((b.phys >> 12) as usize)
        };
        ways.into_iter()
            .find(|&w| holds(w))
            .or_else(|| ways.into_iter().find(|&w| free(w)))
            .unwrap_or(first + 1)
    }

    /// [`cached_block`](Self::cached_block) for the block at `eip` (physical `phys`), with its
    /// slot in the cache.
    #[inline(always)]
    pub(crate) fn cached_block_at(
        &self,
        phys: u32,
        eip: u32,
        cs: &SegCache,
    ) -> Option<(usize, usize, usize)> {
        let first = self.icache.index(phys);
        let key = icache::key(cs.big);
        let slot =
            if self.icache.blocks[first].phys == phys && self.icache.blocks[first].key() == key {
                first
            } else {
                first + 1
            };
        let block = &self.icache.blocks[slot];
        let within_limit = eip.wrapping_add(u32::from(block.byte_len)).wrapping_sub(1) <= cs.limit
            || block.byte_len == 0;
        let good = block.phys == phys
            && block.key() == key
            && within_limit
            && block.gen == self.mem.page_generation((phys >> 12) as usize)
            && (!block.straddles() || self.second_page_unchanged(slot, eip, cs));
        good.then_some((slot, block.start as usize, block.len as usize))
    }

    /// For a block that straddles into a second page: the TLB still maps the linear page of its
    /// last byte to the physical page it was decoded from, and nothing wrote that page since.
    #[inline(never)]
    fn second_page_unchanged(&self, slot: usize, eip: u32, cs: &SegCache) -> bool {
        let block = &self.icache.blocks[slot];
        let second = self.icache.second_pages[slot];
        let last = cs
            .base
            .wrapping_add(eip)
            .wrapping_add(u32::from(block.byte_len))
            .wrapping_sub(1);
        self.mem.tlb.lookup(last, self.tlb_read_perm) == Some((second.page << 12) | (last & 0xFFF))
            && second.gen == self.mem.page_generation(second.page as usize)
    }

    /// After a block ran to its end: the next block, if it can run at once without a trip
    /// through the run loop: nothing happened that the loop between blocks would act on (an
    /// interrupt to take, a stop, HLT, a debug event, single-stepping, the budget used up), the
    /// code at CS:EIP is in the TLB and its block is decoded and good (see
    /// [`cached_block`](Self::cached_block)). The code segment is read afresh, so a far jump
    /// is followed correctly. `code_page` is the linear and physical page of the block that
    /// ran, and becomes the next one's.
    ///
    /// When the block that ran was inline forms only (`only_fast`), less is asked, for what
    /// they cannot change (the reasoning of [`super::fast::run_repeating`], which repeats such
    /// a block): of what [`Cpu::must_stop_chaining`] asks, only `stop_block` (none of them
    /// changes IF, TF, RF, CPL, the debug registers or the interrupt shadow, halts or takes an
    /// interrupt, and a device access that may raise one is a write, which sets `stop_block`; a
    /// fault ends the chain before this); and the next block in the same linear page is in the
    /// same physical page, without a TLB probe (they flush no TLB entry and change neither CS
    /// nor CR3).
    #[inline(always)]
    fn chained_block(
        &self,
        end: u64,
        only_fast: bool,
        code_page: &mut (u32, u32),
    ) -> Option<(usize, usize, usize)> {
        if self.instructions >= end || self.stop_block || (!only_fast && self.must_stop_chaining())
        {
            return None;
        }
        let cs = &self.segs[Segment::CS as usize];
        let lin = cs.base.wrapping_add(self.eip);
        let phys = if only_fast && lin & !0xFFF == code_page.0 {
            code_page.1 | (lin & 0xFFF)
        } else {
            let phys = self.mem.tlb.lookup(lin, self.tlb_read_perm)?;
            *code_page = (lin & !0xFFF, phys & !0xFFF);
            phys
        };
        self.cached_block_at(phys, self.eip, cs)
    }

    /// Something happened that the run loop acts on between blocks (an interrupt to take, a
    /// stop, HLT, a debug event, single-stepping): the next block must not be chained. The
    /// compiled tier asks the same before it goes on to another block.
    #[inline(always)]
    pub(crate) fn must_stop_chaining(&self) -> bool {
        let interrupt_due = self.intr && self.flags.sys(flags::IF);
        self.stop_block
            || interrupt_due
            || self.halted
            || self.shutdown
            || self.single_stepping()
            || self.pending_db != 0
    }

    /// One instruction per block while an interrupt shadow, TF, RF or a breakpoint is active.
    #[inline(always)]
    fn single_stepping(&self) -> bool {
        self.irq_shadow || self.flags.sys(flags::TF | flags::RF) || self.dr[7] & 0xFF != 0
    }

    /// Where the instruction being executed starts: handlers run with EIP already past it.
    #[inline(always)]
    pub(crate) fn instr_eip(&self, i: &Instr) -> u32 {
        self.eip.wrapping_sub(i.len as u32)
    }

    /// Sample the INTR line from the bus.
    #[inline]
    pub(crate) fn refresh_intr(&mut self) {
        self.intr = self.bus.interrupt_pending();
    }

    /// Read the time-stamp counter: the bus's virtual clock, or retired instructions on a bare
    /// bus (deterministic either way), plus the offset WRMSR set.
    pub fn tsc(&mut self) -> u64 {
        self.tsc_base().wrapping_add(self.msr.tsc_offset)
    }

    /// The TSC before the WRMSR offset.
    pub(crate) fn tsc_base(&mut self) -> u64 {
        let instructions = self.instructions;
        self.bus.tsc(instructions).unwrap_or(instructions)
    }
}

#[cfg(test)]
mod tests {
    use super::decode::PRE_MOV;
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// The IP an exception pushed on `jit::sample::cpu_running`'s stack (ESP 0xF000, real mode:
    /// IP is the last of the three words).
    fn pushed_ip(cpu: &Cpu) -> u16 {
        u16::from_le_bytes([cpu.mem.ram[0xEFFA], cpu.mem.ram[0xEFFB]])
    }

    /// The block decoded at 0x1000 of `jit::sample::cpu_running(code)`.
    fn decoded(code: &[u8]) -> Vec<Instr> {
        let mut arena = InstrArena::default();
        let block = crate::jit::sample::cpu_running(code)
            .decode_block(&mut arena, 0x1000)
            .expect("decodes");
        arena[block.start..block.start + block.len].to_vec()
    }

    /// What the folded-instruction tests compare: registers, EIP, EFLAGS, retired count.
    type Snapshot = ([u32; REG_SLOTS], u32, u32, u64);

    fn snapshot(c: &Cpu) -> Snapshot {
        (c.regs, c.eip, c.flags.word(), c.instructions)
    }

    /// Run `code` (set up by `start`) one instruction at a time to its HLT; the state before
    /// each step and at the end. Then require that a run with each budget from 0 stops at
    /// exactly that step's state: no folded or fused instruction overshoots a budget. Steps of
    /// the run loop are themselves checked against the handlers: each instruction decoded
    /// alone and run through its handler pointer, which sets every flag it sets (the run
    /// loop's forms may leave flags nothing reads uncomputed, see fast::drop_dead_flags).
    fn budgets_end_where_single_steps_do(code: &[u8], start: impl Fn(&mut Cpu)) -> Vec<Snapshot> {
        let running = || {
            let mut c = crate::jit::sample::cpu_running(code);
            start(&mut c);
            c
        };
        let mut reference = running();
        let mut handled = vec![snapshot(&reference)];
        while !reference.halted {
            let (i, _) = reference.decode_one(reference.eip).expect("decodes");
            reference.eip += u32::from(i.len);
            (i.exec)(&mut reference, &i).expect("runs");
            reference.instructions += 1;
            handled.push(snapshot(&reference));
        }
        let mut one_by_one = running();
        let mut trace = vec![snapshot(&one_by_one)];
        while one_by_one.run(1) == RunExit::Budget {
            trace.push(snapshot(&one_by_one));
        }
        assert_eq!(trace, handled, "single steps stop where the handlers do");
        for (budget, expected) in trace.iter().enumerate() {
            let mut c = running();
            c.run(budget as u64);
            assert_eq!(&snapshot(&c), expected, "budget {budget}");
        }
        trace
    }

    /// `code` (set up by `start`) after one step with TF set, its #DB going to the HLT at
    /// 0:0F00.
    fn single_stepped(code: &[u8], start: impl Fn(&mut Cpu)) -> Cpu {
        let mut c = crate::jit::sample::cpu_running(code);
        start(&mut c);
        c.mem.load(4, &[0x00, 0x0F, 0x00, 0x00]);
        c.flags.set_word(c.flags.word() | flags::TF);
        c.run(1);
        c
    }

    /// A bus that records the retired-instruction count it was told before each port access.
    struct ClockedBus {
        now: u64,
        accesses: Rc<RefCell<Vec<(u16, u64)>>>,
    }

    impl Bus for ClockedBus {
        fn io_read(&mut self, port: u16, _size: u8) -> u32 {
            self.accesses.borrow_mut().push((port, self.now));
            0
        }
        fn io_write(&mut self, port: u16, _size: u8, _value: u32) {
            self.accesses.borrow_mut().push((port, self.now));
        }
        fn mmio_read(&mut self, addr: u32, _size: u8) -> u32 {
            self.accesses.borrow_mut().push((addr as u16, self.now));
            0
        }
        fn mmio_write(&mut self, addr: u32, _size: u8, _value: u32) {
            self.accesses.borrow_mut().push((addr as u16, self.now));
        }
        fn set_instructions(&mut self, instructions: u64) {
            self.now = instructions;
        }
    }

    /// Port or MMIO accesses as a [`ClockedBus`] records them: address and time.
    type Accesses = Rc<RefCell<Vec<(u16, u64)>>>;

    /// A CPU with 1 MiB of RAM on a [`ClockedBus`], and the record of its port and MMIO
    /// accesses with the time each saw.
    fn clocked_cpu() -> (Cpu, Accesses) {
        let accesses = Rc::new(RefCell::new(Vec::new()));
        let bus = ClockedBus {
            now: u64::MAX,
            accesses: accesses.clone(),
        };
        (Cpu::new(1 << 20, Box::new(bus)), accesses)
    }

    /// Two blocks whose addresses share a cache set, run in turn: each is decoded once (a
    /// direct-mapped cache decoded one of them at every turn), and a third one in the same set
    /// takes the second way without evicting the first.
    #[test]
    fn blocks_that_share_a_cache_set_are_both_kept() {
        let mut cpu = Cpu::with_ram(4 << 20);
        let a = 0x1000u32;
        let set = cpu.icache.index(a);
        let mut colliding = (0x2000..0x40_0000u32)
            .step_by(16)
            .filter(|&p| cpu.icache.index(p) == set && p & 0xFFF < 0xFF0);
        let (b, c) = (colliding.next().unwrap(), colliding.next().unwrap());
        // a: inc eax; jmp b      b: inc ebx; jmp a      (32-bit flat code)
        let jmp = |from: u32, to: u32| to.wrapping_sub(from + 5).to_le_bytes();
        cpu.mem.load(a, &[0x40, 0xE9]);
        cpu.mem.load(a + 2, &jmp(a + 1, b));
        cpu.mem.load(b, &[0x43, 0xE9]);
        cpu.mem.load(b + 2, &jmp(b + 1, a));
        for seg in cpu.segs.iter_mut() {
            let mut flat = SegCache::real(0);
            flat.big = true;
            flat.limit = u32::MAX;
            flat.compute_ranges();
            *seg = flat;
        }
        cpu.eip = a;
        cpu.run(1000);
        assert_eq!(
            cpu.regs[EAX] + cpu.regs[EBX],
            500,
            "1000 instructions, two per block"
        );
        assert_eq!(cpu.counters.blocks_decoded, 2);
        // A third block in the set replaces the second way, and the first stays.
        cpu.mem.load(c, &[0xF4]);
        cpu.eip = c;
        cpu.run(1);
        assert_eq!(cpu.counters.blocks_decoded, 3);
        let cs = cpu.segs[Segment::CS as usize];
        assert!(
            cpu.cached_block_at(a, a, &cs).is_some(),
            "the first way kept a"
        );
        assert!(cpu.cached_block_at(c, c, &cs).is_some());
        assert!(
            cpu.cached_block_at(b, b, &cs).is_none(),
            "b was in the second way"
        );
    }

    #[test]
    fn port_access_and_rdtsc_see_the_time_of_their_own_instruction() {
        let (mut cpu, accesses) = clocked_cpu();
        #[rustfmt::skip]
        let code = [
            0x90, 0x90, 0x90,       // 0-2: nop x3
            0x0F, 0x31,             // 3: rdtsc (a bare bus: the TSC counts instructions)
            0x89, 0xC3,             // 4: mov ebx, eax
            0xE6, 0x80,             // 5: out 0x80, al (a port access ends the block)
            0x90,                   // 6: nop
            0xE4, 0x71,             // 7: in al, 0x71
            0xF4,                   // 8: hlt
        ];
        cpu.mem.load(0x1000, &code);
        cpu.segs[Segment::CS as usize] = SegCache::real(0);
        cpu.eip = 0x1000;
        assert_eq!(cpu.run(100), RunExit::Halted);
        assert_eq!(cpu.regs[EBX] & 0xFFFF, 3, "RDTSC at instruction 3");
        assert_eq!(*accesses.borrow(), vec![(0x80, 5), (0x71, 7)]);
        assert_eq!(cpu.instructions, 9);
    }

    #[test]
    fn mmio_accesses_see_the_time_of_their_own_instruction() {
        let (mut cpu, accesses) = clocked_cpu();
        cpu.mem.map(0x8_0000, 0x1000, crate::mem::PageKind::Mmio);
        #[rustfmt::skip]
        let code = [
            0x90, 0x90,             // 0-1: nop x2
            0xA0, 0x10, 0x00,       // 2: mov al, [0x0010] (DS = 0x8000: MMIO at 0x80010)
            0x90,                   // 3: nop
            0xA2, 0x20, 0x00,       // 4: mov [0x0020], al (an MMIO write ends the block)
            0xF4,                   // 5: hlt
        ];
        cpu.mem.load(0x1000, &code);
        cpu.segs[Segment::CS as usize] = SegCache::real(0);
        cpu.segs[Segment::DS as usize] = SegCache::real(0x8000);
        cpu.eip = 0x1000;
        assert_eq!(cpu.run(100), RunExit::Halted);
        assert_eq!(*accesses.borrow(), vec![(0x0010, 2), (0x0020, 4)]);
    }

    /// 32-bit code, where register-only instructions are fast forms that count themselves in
    /// the run loop's local (fast::run_repeating): an MMIO access and RDTSC after them still see
    /// the time of their own instruction, and so does the fault of one of them.
    #[test]
    fn accesses_after_register_only_instructions_see_the_time_of_their_own_instruction() {
        let (mut cpu, accesses) = clocked_cpu();
        cpu.mem.map(0x8_0000, 0x1000, crate::mem::PageKind::Mmio);
        #[rustfmt::skip]
        let code = [
            0x41,                               // 0: inc ecx
            0xB8, 0x05, 0x00, 0x00, 0x00,       // 1: mov eax, 5
            0x01, 0xC8,                         // 2: add eax, ecx
            0x8A, 0x1D, 0x10, 0x00, 0x08, 0x00, // 3: mov bl, [0x80010] (MMIO read)
            0x41,                               // 4: inc ecx
            0x89, 0xD6,                         // 5: mov esi, edx
            0xA3, 0x20, 0x00, 0x08, 0x00,       // 6: mov [0x80020], eax (MMIO write)
            0x41,                               // 7: inc ecx
            0x0F, 0x31,                         // 8: rdtsc (a bare bus: the TSC counts)
            0x89, 0xC7,                         // 9: mov edi, eax
            0x41,                               // 10: inc ecx
            0x31, 0xD2,                         // 11: xor edx, edx
            0xF7, 0xF2,                         // 12: div edx (#DE: by zero)
        ];
        let sample = crate::jit::sample::cpu_running(&code);
        cpu.mem.load(0x1000, &code);
        cpu.mem.load(0x0F00, &[0xF4]);
        cpu.mem.load(0, &[0x00, 0x0F, 0x00, 0x00]);
        cpu.segs = sample.segs;
        cpu.eip = 0x1000;
        cpu.regs[ESP] = 0xF000;
        assert_eq!(
            cpu.run(100),
            RunExit::Halted,
            "#DE went to the HLT at 0:0F00"
        );
        assert_eq!(*accesses.borrow(), vec![(0x0010, 3), (0x0020, 6)]);
        assert_eq!(cpu.regs[EDI], 8, "RDTSC at instruction 8");
        assert_eq!(pushed_ip(&cpu), 0x1000 + 30, "the fault is the DIV's");
        assert_eq!(
            cpu.instructions,
            12 + 1,
            "12 retired before the DIV, and the HLT"
        );
    }

    #[test]
    fn a_jump_back_to_the_same_offset_in_another_code_segment_runs_that_segment_s_code() {
        let mut cpu = Cpu::with_ram(1 << 20);
        #[rustfmt::skip]
        let code = [
            0x41,                         // 0x1000: inc cx
            0xEA, 0x00, 0x10, 0x10, 0x00, // jmp far 0x0010:0x1000 (linear 0x1100)
        ];
        cpu.mem.load(0x1000, &code);
        cpu.mem.load(0x1100, &[0xF4]); // hlt
        cpu.segs[Segment::CS as usize] = SegCache::real(0);
        cpu.eip = 0x1000;
        assert_eq!(
            cpu.run(1000),
            RunExit::Halted,
            "the block is not repeated: EIP is its start, but CS is not"
        );
        assert_eq!((cpu.regs[ECX], cpu.instructions), (1, 3));
    }

    #[test]
    fn a_block_that_loops_to_itself_stops_at_the_budget_and_sees_its_own_writes() {
        // 32-bit code, so that every instruction of the loop is a fast form and the run loop
        // repeats the block itself (fast::run_repeating).
        #[rustfmt::skip]
        let code = [
            0x41,                                     // 0x1000: inc ecx
            0xC7, 0x05, 0x00, 0x20, 0x00, 0x00,       // 0x1001: mov dword [0x2000],
            0x90, 0x90, 0x90, 0x90,                   //         0x90909090
            0xEB, 0xF3,                               // 0x100B: jmp 0x1000
            0xF4,                                     // 0x100D: hlt
        ];
        let mut cpu = crate::jit::sample::cpu_running(&code);
        assert_eq!(cpu.run(1001), RunExit::Budget);
        assert_eq!(
            cpu.instructions, 1001,
            "stopped exactly at the budget, mid-loop"
        );
        assert_eq!(cpu.regs[ECX], 334);
        // Now the loop stores over its own jump (four NOPs at 0x100B) and runs on to the HLT.
        cpu.mem.load(0x1003, &[0x0B, 0x10]);
        cpu.mem.load(0x100F, &[0xF4]);
        cpu.eip = 0x1000;
        assert_eq!(
            cpu.run(1000),
            RunExit::Halted,
            "the modified loop ran out to its HLT"
        );
        assert_eq!(cpu.regs[ECX], 335);
    }

    /// A loop with register moves folded into the instruction after them (one a compare fused
    /// with its branch): run with every budget, it stops exactly there, in the state that
    /// running one instruction at a time reaches, and a TF single step stops after each move.
    #[test]
    fn folded_moves_retire_one_by_one_and_budgets_end_exactly() {
        #[rustfmt::skip]
        let code = [
            0x89, 0xD8,             // 0x1000: mov eax, ebx
            0x40,                   // 0x1002: inc eax          (the move folded in)
            0x89, 0xC3,             // 0x1003: mov ebx, eax
            0x8B, 0xC8,             // 0x1005: mov ecx, eax (8B form)
            0x83, 0xF9, 0x09,       // 0x1007: cmp ecx, 9       (folded, fused with the jne)
            0x75, 0xF4,             // 0x100A: jne 0x1000
            0xF4,                   // 0x100C: hlt
        ];
        let folded: Vec<u8> = decoded(&code).iter().map(|i| i.pre_mov).collect();
        assert_eq!(
            folded,
            vec![
                PRE_MOV | (EAX as u8) << 3 | EBX as u8,
                0,
                PRE_MOV | (ECX as u8) << 3 | EAX as u8,
                0
            ],
            "the first move folds into the INC; the second stays alone (a move takes none); the \
             third folds into the fused compare and branch; then the HLT"
        );

        let trace = budgets_end_where_single_steps_do(&code, |_| {});
        assert_eq!(
            trace.len(),
            1 + 9 * 6 + 1,
            "the start, nine turns of six instructions, the HLT"
        );
        assert_eq!(trace.last().unwrap().0[ECX], 9);

        let stepped = single_stepped(&code, |c| c.regs[EBX] = 5);
        assert_eq!(
            (pushed_ip(&stepped), stepped.regs[EAX], stepped.instructions),
            (0x1002, 5, 1),
            "one step ran the move alone and trapped before the INC"
        );
    }

    /// Trial division's loop: the flags of its `add ecx, 1` and of its IMUL are set again by
    /// the compare before anything reads them, so the block computes neither; yet every budget,
    /// which stops inside the block, stops in the state single steps reach, flags and all, and
    /// the loop still finds that 97 is prime.
    #[test]
    fn flags_nothing_reads_are_not_computed_and_budgets_still_end_exactly() {
        #[rustfmt::skip]
        let code = [
            0x89, 0xD8,             // 0x1000: mov eax, ebx
            0x99,                   // 0x1002: cdq
            0xF7, 0xF9,             // 0x1003: idiv ecx
            0x85, 0xD2,             // 0x1005: test edx, edx
            0x74, 0x0C,             // 0x1007: je 0x1015
            0x83, 0xC1, 0x01,       // 0x1009: add ecx, 1     (flags set again by the CMP)
            0x89, 0xC8,             // 0x100C: mov eax, ecx
            0x0F, 0xAF, 0xC1,       // 0x100E: imul eax, ecx  (the same)
            0x39, 0xD8,             // 0x1011: cmp eax, ebx
            0x7E, 0xEB,             // 0x1013: jle 0x1000
            0xF4,                   // 0x1015: hlt
        ];
        let start = |c: &mut Cpu| {
            c.regs[EBX] = 97;
            c.regs[ECX] = 2;
        };
        let kinds: Vec<_> = decoded(&code).iter().map(|i| i.fast).collect();
        assert_eq!(
            kinds,
            vec![
                fast::CDQ_IDIV_R,
                fast::FUSED_ALU_RR_TEST,
                fast::ALU_R_I_ADD_NF,
                fast::IMUL_R_RM_REG_NF,
                fast::FUSED_ALU_RR_CMP,
                fast::NONE
            ]
        );
        let trace = budgets_end_where_single_steps_do(&code, start);
        let last = trace.last().unwrap();
        assert_eq!(last.0[ECX], 10, "no divisor up to the square root");
        assert_eq!(last.0[EDX], 97 % 9, "the last remainder");

        // The block whole, as the run loop takes it: the same end state.
        let mut c = crate::jit::sample::cpu_running(&code);
        start(&mut c);
        assert_eq!(c.run(10_000), RunExit::Halted);
        assert_eq!(&snapshot(&c), last);
    }

    /// A CDQ and the IDIV after it (C's signed division) decode as one instruction, with the
    /// move before them folded in too, and still retire one by one: every budget stops where
    /// single steps do, and a single step runs the move alone.
    #[test]
    fn a_folded_cdq_and_idiv_retire_one_by_one_and_budgets_end_exactly() {
        #[rustfmt::skip]
        let code = [
            0x89, 0xD8,             // 0x1000: mov eax, ebx
            0x99,                   // 0x1002: cdq
            0xF7, 0xF9,             // 0x1003: idiv ecx     (the move and the CDQ folded in)
            0x01, 0xC6,             // 0x1005: add esi, eax
            0x49,                   // 0x1007: dec ecx      (fused with the jnz)
            0x75, 0xF6,             // 0x1008: jnz 0x1000
            0xF4,                   // 0x100A: hlt
        ];
        let start = |c: &mut Cpu| {
            c.regs[EBX] = -1000i32 as u32;
            c.regs[ECX] = 7;
            c.regs[ESI] = 0;
        };
        let kinds: Vec<_> = decoded(&code).iter().map(|i| (i.fast, i.pre_mov)).collect();
        assert_eq!(
            kinds,
            vec![
                (fast::CDQ_IDIV_R, PRE_MOV | (EAX as u8) << 3 | EBX as u8),
                (fast::ALU_RR_ADD, 0),
                (fast::FUSED_DEC_R, 0),
                (fast::NONE, 0)
            ]
        );

        // A CDQ with a prefix (here DS:, which changes nothing) stays an instruction of its own.
        let prefixed: Vec<_> = decoded(&[0x3E, 0x99, 0xF7, 0xF9, 0xF4])
            .iter()
            .map(|i| i.fast)
            .collect();
        assert_eq!(prefixed, vec![fast::CDQ, fast::IDIV_R, fast::NONE]);

        let trace = budgets_end_where_single_steps_do(&code, start);
        assert_eq!(trace.len(), 1 + 7 * 6 + 1, "seven turns of six, the HLT");
        let (regs, ..) = trace.last().unwrap();
        // -1000 / 7, / 6, ... / 1, truncated toward zero.
        let quotients: i32 = (1..=7).map(|d| -1000 / d).sum();
        assert_eq!(regs[ESI] as i32, quotients);
        assert_eq!(regs[EDX], 0, "the last remainder (by 1)");
        let mut whole = crate::jit::sample::cpu_running(&code);
        start(&mut whole);
        assert_eq!(whole.run(1000), RunExit::Halted);
        assert_eq!(Some(&snapshot(&whole)), trace.last());

        let stepped = single_stepped(&code, start);
        assert_eq!(
            (pushed_ip(&stepped), stepped.regs[EAX], stepped.instructions),
            (0x1002, -1000i32 as u32, 1),
            "one step ran the move alone and trapped before the CDQ"
        );
    }

    /// A #DE of an IDIV with a CDQ folded in: the CDQ retired, the IDIV did not, and the
    /// exception reports the IDIV's address.
    #[test]
    fn a_division_fault_after_a_folded_cdq_leaves_the_cdq_retired() {
        for (eax, ecx) in [(5u32, 0u32), (0x8000_0000, u32::MAX)] {
            #[rustfmt::skip]
            let code = [
                0x99,               // 0x1000: cdq
                0xF7, 0xF9,         // 0x1001: idiv ecx (#DE: by zero, or -2^31 / -1)
            ];
            let mut c = crate::jit::sample::cpu_running(&code);
            c.regs[EAX] = eax;
            c.regs[ECX] = ecx;
            c.regs[EDX] = 0x1234_5678;
            assert_eq!(c.run(100), RunExit::Halted, "#DE went to the HLT at 0:0F00");
            assert_eq!(c.regs[EDX], ((eax as i32) >> 31) as u32, "the CDQ retired");
            assert_eq!(pushed_ip(&c), 0x1001, "the fault is the IDIV's");
            assert_eq!((c.regs[EAX], c.instructions), (eax, 2), "CDQ and the HLT");
        }
    }

    /// A fault in the instruction a move is folded into: the move retired, the instruction
    /// did not, and the exception reports the instruction's own address.
    #[test]
    fn a_fault_after_a_folded_move_leaves_the_move_retired() {
        #[rustfmt::skip]
        let code = [
            0x89, 0xD9,             // 0x1000: mov ecx, ebx
            0xF7, 0xF1,             // 0x1002: div ecx (#DE: ECX is 0)
        ];
        let mut c = crate::jit::sample::cpu_running(&code);
        c.regs[ECX] = 7;
        c.regs[EAX] = 5;
        assert_eq!(c.run(100), RunExit::Halted, "#DE went to the HLT at 0:0F00");
        assert_eq!(c.regs[ECX], 0, "the move retired");
        assert_eq!(pushed_ip(&c), 0x1002, "the fault is the DIV's");
        assert_eq!(c.regs[EAX], 5);
    }
}
