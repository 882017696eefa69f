//! The compiling tier: hot guest code becomes WebAssembly at run time.
//!
//! The interpreter (crate::cpu) stays the first tier and the reference. It counts how often
//! each cached block starts; when a block reaches the threshold, the blocks of its page that
//! the interpreter has already decoded and that are reachable from it by direct jumps become
//! one *region*: one wasm module (codegen.rs) whose function runs them with the registers in
//! wasm locals and direct jumps as branches. The host's [`Engine`] compiles and instantiates
//! the module (the browser's `WebAssembly.Module` in the worker; natively the wasmi crate), and
//! from then on the run loop calls it whenever that block comes up, instead of interpreting.
//!
//! A region is keyed by everything its code assumes: the physical page and its write
//! generation, the linear page it runs at (the jump targets are linear addresses), the code
//! segment's base, limit and default size, and the TLB permissions its accesses need (they
//! follow CPL, EFLAGS.AC, CR0.AM and DR7), which its code has built in. A write to the page
//! (by the CPU or by DMA) bumps the generation, so the blocks, and with them the link to the
//! region, are dropped; the region's slot is reused later. Regions live in a fixed number of
//! slots, replaced in order, so a long-running guest's compiled code stays bounded.
//!
//! The generated code hands every instruction it does not inline to [`step`], which runs it
//! through the interpreter's own run loop ([`crate::cpu::fast::run`]), so coverage is complete
//! and the semantics are the interpreter's: the same exceptions at the same EIP, interrupts at
//! the same block boundaries, the same retired-instruction count.

pub mod codegen;
pub mod random_program;
pub mod sample;
#[cfg(not(target_arch = "wasm32"))]
pub mod wasmi_engine;

use crate::cpu::decode::Instr;
use crate::cpu::icache::InstrArena;
use crate::cpu::{fast, Cpu, SegCache, Segment};
pub use codegen::CpuMemory;
use codegen::RegionBlock;

/// A host's way of turning generated modules into running code.
pub trait Engine {
    /// Whether generated code reaches the `Cpu`, the TLB and RAM in one memory at their real
    /// addresses (the browser: the core's own memory), or in three memories laid over them,
    /// each from address 0 (native).
    fn shared_memory(&self) -> bool;

    /// Compile and instantiate `wasm` for running on `cpu`; returns a handle for
    /// [`call`](Self::call).
    fn load(&mut self, cpu: *mut Cpu, wasm: &[u8]) -> Result<u32, String>;

    /// Run the module's `run(cpu, limit, entry)`; returns its status ([`codegen::RAN`] or
    /// [`codegen::FAULTED`]), or an error if the engine failed (a trap: a bug).
    ///
    /// # Safety
    ///
    /// `cpu` must point to the live `Cpu` this engine belongs to, and nothing else may access
    /// that `Cpu` for the length of the call: the generated code reads and writes it, and
    /// [`step`] makes a `&mut Cpu` from the same pointer.
    unsafe fn call(
        &mut self,
        handle: u32,
        cpu: *mut Cpu,
        limit: u64,
        entry: u32,
    ) -> Result<u32, String>;

    /// Free a module.
    fn unload(&mut self, handle: u32);

    /// Host time spent compiling and instantiating modules so far, in milliseconds, if the
    /// host measures it (the core has no clock).
    fn compile_ms(&self) -> Option<f64> {
        None
    }
}

/// Regions alive at once (at most; the oldest is replaced). Must stay below `1 << SLOT_BITS`.
const MAX_REGIONS: usize = 4096;
const SLOT_BITS: u32 = 12;
/// Most blocks in one region.
const MAX_REGION_BLOCKS: usize = 64;
/// Most pages one region's blocks come from (the page of the hot block and the pages its
/// direct jumps and calls reach, as v86 does).
const MAX_REGION_PAGES: usize = 4;
/// The lowest threshold at which regions follow calls and span pages (see compile_region).
const FAR_THRESHOLD: u32 = 100;
/// Block starts before a block is compiled, unless the host chooses another threshold.
pub const DEFAULT_THRESHOLD: u32 = 20_000;

/// Counters for the status line and the benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct JitStats {
    /// Regions compiled since the tier was turned on.
    pub regions_compiled: u64,
    /// Regions alive now.
    pub regions_live: u64,
    /// Guest code bytes compiled, and the wasm bytes generated for them.
    pub guest_bytes: u64,
    pub wasm_bytes: u64,
    /// Instructions retired inside compiled code (including those it handed to the
    /// interpreter through `step`).
    pub compiled_instructions: u64,
    /// Calls into compiled code (compiled instructions per call: how long it runs each time).
    pub entries: u64,
    /// Compiled instructions that run inline, and those that go through `step` (static counts).
    pub inline_instructions: u64,
    pub step_instructions: u64,
    /// Modules the engine refused, or runs that trapped (each a bug; the tier turns itself
    /// off after a trap).
    pub failures: u64,
}

/// A page a region's code comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionPage {
    /// The linear page the code runs at, and the physical page it was read from.
    pub lin_page: u32,
    pub phys_page: u32,
    /// The page's write generation when compiled: a write since makes the region dead.
    pub gen: u32,
}

/// One compiled region.
struct Region {
    id: u32,
    handle: u32,
    /// Its pages; the first is the page of the block it was compiled for.
    pages: Vec<RegionPage>,
    cs_base: u32,
    cs_limit: u32,
    cs_big: bool,
    /// The segments it was compiled flat for ([`flat_segments`]); it runs only while they are.
    flat: u8,
    /// The TLB permissions it was compiled for (`Cpu::tlb_read_perm`, `tlb_write_perm`); it
    /// runs only while they are the same.
    perms: [u32; 2],
    /// The first instruction of each block (entry n is `entries[n]`), and the index of its
    /// page in `pages`.
    entries: Vec<u32>,
    entry_pages: Vec<u8>,
    /// The instructions `step` runs, by the index the generated code passes.
    fallback: Vec<Instr>,
}

/// The tier's state inside the CPU (a cache: nothing here is machine state).
pub struct Jit {
    /// Block starts before compiling; 0 while the tier is off.
    pub(crate) threshold: u32,
    /// Compile every block at its first start instead (tests: code that runs once compiled).
    first_start: bool,
    regions: Vec<Option<Region>>,
    /// The slots of the regions compiled from each physical page.
    by_page: std::collections::HashMap<u32, Vec<usize>>,
    next_slot: usize,
    next_serial: u32,
    /// Whether the engine runs generated code in the core's own memory (Engine::shared_memory).
    shared: bool,
    /// Where the `Cpu`, the TLB's entries and RAM were in that memory when the live regions
    /// were compiled: their code has these addresses built in.
    layout: [u32; 3],
    pub stats: JitStats,
    /// Why the tier turned itself off, if it did.
    pub error: Option<String>,
}

impl Default for Jit {
    fn default() -> Self {
        Jit {
            threshold: 0,
            first_start: false,
            regions: (0..MAX_REGIONS).map(|_| None).collect(),
            by_page: std::collections::HashMap::new(),
            next_slot: 0,
            next_serial: 1,
            shared: false,
            layout: [0; 3],
            stats: JitStats::default(),
            error: None,
        }
    }
}

/// The segments (bit n: segment n) that are flat for data: base 0 and every offset readable
/// and writable. Generated code reaches memory through them with no segment check.
pub(crate) fn flat_segments(cpu: &Cpu) -> u8 {
    let mut mask = 0;
    for (n, s) in cpu.segs.iter().enumerate() {
        let full = s.read_lo == 0 && s.write_lo == 0 && s.read_hi == u32::MAX;
        if s.base == 0 && full && s.write_hi == u32::MAX {
            mask |= 1 << n;
        }
    }
    mask
}

impl Region {
    /// Whether no page of the region has been written since it was compiled.
    fn current(&self, mem: &crate::mem::Memory) -> bool {
        self.pages
            .iter()
            .all(|p| mem.page_generation(p.phys_page as usize) == p.gen)
    }

    /// Whether the region's entry `entry` is the block at linear `lin`, compiled for code
    /// segment `cs`, the data segments that are flat now (`flat`) and the TLB permissions
    /// `perms`.
    fn same_code(&self, entry: usize, lin: u32, cs: &SegCache, flat: u8, perms: [u32; 2]) -> bool {
        let page = self.entry_pages.get(entry).map(|&p| self.pages[p as usize]);
        page.is_some_and(|p| p.lin_page == lin >> 12)
            && self.cs_base == cs.base
            && self.cs_limit == cs.limit
            && self.cs_big == cs.big
            && flat & self.flat == self.flat
            && perms == self.perms
    }
}

impl Jit {
    /// The slot of region `id` if it is alive, no page of it has been written since it was
    /// compiled, and its entry `entry` is the block at `lin` compiled for this code segment.
    fn check(&self, id: u32, entry: u32, lin: u32, cs: &SegCache, cpu: &Cpu) -> Option<usize> {
        let slot = (id & ((1 << SLOT_BITS) - 1)) as usize;
        let r = self.regions.get(slot)?.as_ref()?;
        let good = r.id == id
            && r.same_code(entry as usize, lin, cs, flat_segments(cpu), cpu.tlb_perms())
            && r.current(&cpu.mem);
        good.then_some(slot)
    }

    /// The instruction `step` is asked to run, and the segments its region assumes flat.
    fn fallback(&self, slot: u32, index: u32) -> Option<(Instr, u8)> {
        let r = self.regions.get(slot as usize)?.as_ref()?;
        r.fallback.get(index as usize).map(|&i| (i, r.flat))
    }
}

impl Cpu {
    /// Turn the compiling tier on with `engine`, compiling a block once it has started
    /// `threshold` times (at least 1; it runs compiled from its next start), or off (`None`).
    pub fn set_jit(&mut self, engine: Option<Box<dyn Engine>>, threshold: u32) {
        self.drop_regions();
        self.jit.threshold = if engine.is_some() {
            threshold.max(1)
        } else {
            0
        };
        self.jit.shared = engine.as_ref().is_some_and(|e| e.shared_memory());
        self.jit.layout = self.jit_layout();
        self.jit_engine = engine;
        self.jit.error = None;
        // Blocks start counting afresh.
        self.icache.flush();
    }

    /// Compile every block the first time it starts, not after `threshold` starts: for tests
    /// that must run even code that runs only once compiled.
    pub fn set_jit_first_start(&mut self, on: bool) {
        self.jit.first_start = on;
    }

    /// The tier's counters.
    pub fn jit_stats(&self) -> JitStats {
        self.jit.stats
    }

    /// The engine's compile time so far (ms), if the host measures it.
    pub fn jit_compile_ms(&self) -> Option<f64> {
        self.jit_engine.as_ref().and_then(|e| e.compile_ms())
    }

    /// Why the tier turned itself off, if it did.
    pub fn jit_error(&self) -> Option<&str> {
        self.jit.error.as_deref()
    }

    /// The TLB permissions reads and writes need now.
    fn tlb_perms(&self) -> [u32; 2] {
        [self.tlb_read_perm, self.tlb_write_perm]
    }

    /// Where generated code finds the `Cpu`, the TLB's entries and RAM: their addresses in the
    /// core's memory with a shared engine, else 0 (each has a memory of its own).
    fn jit_layout(&self) -> [u32; 3] {
        if self.jit.shared {
            // A shared engine runs in wasm32, where these pointers are the addresses.
            [
                self as *const Cpu as usize as u32,
                self.mem.tlb.entries.as_ptr() as usize as u32,
                self.mem.ram.as_ptr() as usize as u32,
            ]
        } else {
            [0; 3]
        }
    }

    pub(crate) fn drop_regions(&mut self) {
        for slot in 0..self.jit.regions.len() {
            self.free_region(slot);
        }
    }

    fn free_region(&mut self, slot: usize) {
        if let Some(r) = self.jit.regions[slot].take() {
            if let Some(engine) = self.jit_engine.as_mut() {
                engine.unload(r.handle);
            }
            for p in &r.pages {
                if let Some(slots) = self.jit.by_page.get_mut(&p.phys_page) {
                    slots.retain(|&s| s != slot);
                    if slots.is_empty() {
                        self.jit.by_page.remove(&p.phys_page);
                    }
                }
            }
            self.jit.stats.regions_live -= 1;
        }
    }

    /// A live region that has a block at CS:EIP (physical `phys`, linear `lin`) compiled for
    /// this code segment: its slot and that block's entry. Regions of the page that a write
    /// has made dead are freed on the way.
    fn find_region(&mut self, phys: u32, lin: u32, cs: &SegCache) -> Option<(usize, u32)> {
        let page = phys >> 12;
        let slots = self.jit.by_page.get(&page)?.clone();
        for slot in slots {
            let Some(r) = &self.jit.regions[slot] else {
                continue;
            };
            if !r.current(&self.mem) {
                self.free_region(slot);
                continue;
            }
            let flat = flat_segments(self);
            let perms = self.tlb_perms();
            let found = (0..r.entries.len()).find(|&n| {
                r.entries[n] == self.eip
                    && r.pages[r.entry_pages[n] as usize].phys_page == page
                    && r.same_code(n, lin, cs, flat, perms)
            });
            if let Some(n) = found {
                return Some((slot, n as u32));
            }
        }
        None
    }

    /// Called by the run loop for the cached block in icache slot `idx` at CS:EIP before it
    /// interprets it. Runs compiled code if the block has some, or counts the block and
    /// compiles its region when it is hot. Returns `None` if nothing ran (interpret the block),
    /// `Some(true)` if compiled code ran, `Some(false)` if it ended in a delivered exception.
    pub(crate) fn run_compiled(
        &mut self,
        arena: &InstrArena,
        idx: usize,
        end: u64,
    ) -> Option<bool> {
        let layout = self.jit_layout();
        if layout != self.jit.layout {
            // The Cpu (or RAM) moved: code compiled with the old addresses must not run.
            self.drop_regions();
            self.jit.layout = layout;
        }
        let cs = self.segs[Segment::CS as usize];
        let lin = cs.base.wrapping_add(self.eip);
        let block_phys = self.icache.blocks[idx].phys;
        let link = self.icache.compiled[idx];
        let slot_entry = if link.region != 0 {
            self.jit
                .check(link.region, link.entry, lin, &cs, self)
                .map(|slot| (slot, link.entry))
        } else {
            None
        };
        let (slot, entry) = match slot_entry {
            Some(x) => x,
            None => {
                let b = &mut self.icache.compiled[idx];
                b.region = 0;
                b.hits += 1;
                let first = b.hits == 1;
                // Compiled once it has started `threshold` times, and run compiled from the
                // next start: code that only ever runs once (most of a boot) is never compiled.
                let hot = b.hits > self.jit.threshold || self.jit.first_start;
                // The first time a (newly decoded) block starts, it may already be part of a
                // region compiled before: link it instead of counting.
                let found = if first {
                    self.find_region(block_phys, lin, &cs)
                } else {
                    None
                };
                match found {
                    Some((slot, entry)) => {
                        let b = &mut self.icache.compiled[idx];
                        b.region = self.jit.regions[slot].as_ref()?.id;
                        b.entry = entry;
                        (slot, entry)
                    }
                    None if hot => {
                        self.icache.compiled[idx].hits = 0;
                        let slot = self.compile_region(arena, block_phys, lin, &cs)?;
                        (slot, 0)
                    }
                    None => return None,
                }
            }
        };
        let handle = self.jit.regions[slot].as_ref()?.handle;
        let mut engine = self.jit_engine.take()?;
        let before = self.instructions;
        self.jit_stop_at_block_end = 0;
        // SAFETY: `self` is live and not otherwise used until `call` returns: the pointer is
        // the only access to it meanwhile (see Engine::call).
        let status = unsafe { engine.call(handle, self as *mut Cpu, end, entry) };
        self.jit_engine = Some(engine);
        self.jit.stats.compiled_instructions += self.instructions - before;
        self.jit.stats.entries += 1;
        match status {
            // Nothing ran (the first block did not fit in the budget): interpret it.
            Ok(codegen::RAN) if self.instructions == before => None,
            Ok(codegen::RAN) => Some(true),
            Ok(_) => Some(false),
            Err(e) => {
                // A trap in generated code is a bug in the generator; the tier turns itself
                // off so the interpreter carries on (from the last state the code stored).
                self.jit.stats.failures += 1;
                self.jit.error = Some(e);
                self.jit.threshold = 0;
                Some(true)
            }
        }
    }

    /// Build, compile and install the region that starts with the cached block at physical
    /// `phys` (CS:EIP, linear `lin`). Returns its slot.
    fn compile_region(
        &mut self,
        arena: &InstrArena,
        phys: u32,
        lin: u32,
        cs: &SegCache,
    ) -> Option<usize> {
        let mut blocks: Vec<RegionBlock> = Vec::new();
        let mut queue = std::collections::VecDeque::from([self.eip]);
        let mut seen = std::collections::HashSet::from([self.eip]);
        let mut called = std::collections::HashSet::new();
        let mut pages = vec![RegionPage {
            lin_page: lin >> 12,
            phys_page: phys >> 12,
            gen: self.mem.page_generation((phys >> 12) as usize),
        }];
        while let Some(eip) = queue.pop_front() {
            if blocks.len() == MAX_REGION_BLOCKS {
                break;
            }
            // The block's page: one of the region's, or a new one while there is room (its
            // physical page as the TLB has it now; the generated code checks the TLB again
            // whenever it goes from one page to another).
            let l = cs.base.wrapping_add(eip);
            let page = match pages.iter().position(|p| p.lin_page == l >> 12) {
                Some(n) => n,
                None if pages.len() < MAX_REGION_PAGES => {
                    let Some(p) = self.mem.tlb.lookup(l, self.tlb_read_perm) else {
                        continue;
                    };
                    pages.push(RegionPage {
                        lin_page: l >> 12,
                        phys_page: p >> 12,
                        gen: self.mem.page_generation((p >> 12) as usize),
                    });
                    pages.len() - 1
                }
                None => continue,
            };
            let p = (pages[page].phys_page << 12) | (l & 0xFFF);
            let Some((slot, start, len)) = self.cached_block_at(p, eip, cs) else {
                continue;
            };
            // A block across two pages stays with the interpreter (see icache.rs).
            if self.icache.blocks[slot].straddles() {
                continue;
            }
            // Across a call or onto another page only at thresholds that mean hot code: at the
            // most eager ones every block is compiled the first time it runs, and following
            // calls out of cold code would compile the same shared functions into thousands of
            // overlapping regions, more than the cache holds, over and over.
            let far = page != 0 || called.contains(&eip);
            if far && self.jit.threshold < FAR_THRESHOLD {
                continue;
            }
            // Folded moves are compiled as the instructions they are.
            let instrs = fast::unfold(&arena[start..start + len]);
            let byte_len: u32 = instrs.iter().map(|i| i.len as u32).sum();
            let next = eip.wrapping_add(byte_len);
            // Where the block can go: the targets of its direct jumps and calls (conditional
            // jumps may be anywhere in it), and the address after it unless it ends in a JMP
            // (after a CALL: where the callee returns).
            let mut successors = Vec::with_capacity(4);
            let mut at = eip;
            for i in &instrs {
                at = at.wrapping_add(i.len as u32);
                match i.fast {
                    fast::JMP_REL | fast::JCC => successors.push(at.wrapping_add(i.imm)),
                    fast::CALL_REL => {
                        called.insert(at.wrapping_add(i.imm));
                        successors.push(at.wrapping_add(i.imm));
                    }
                    _ if fast::is_fused(i) => successors.push(at.wrapping_add(i.imm2)),
                    _ => {}
                }
            }
            if instrs.last()?.fast != fast::JMP_REL {
                successors.push(next);
            }
            for s in successors {
                if seen.insert(s) {
                    queue.push_back(s);
                }
            }
            blocks.push(RegionBlock {
                eip,
                instrs,
                byte_len,
                page: page as u8,
            });
        }
        if blocks.is_empty() {
            return None;
        }

        let engine = self.jit_engine.as_mut()?;
        let slot = self.jit.next_slot;
        self.jit.next_slot = (slot + 1) % MAX_REGIONS;
        let memory = if engine.shared_memory() {
            let [cpu, tlb, ram] = self.jit.layout;
            CpuMemory::Shared { cpu, tlb, ram }
        } else {
            CpuMemory::Exact {
                bytes: std::mem::size_of::<Cpu>() as u32,
                tlb_bytes: std::mem::size_of_val(&*self.mem.tlb.entries) as u32,
                ram_bytes: self.mem.ram.len() as u32,
            }
        };
        // Pages no block came from (their blocks were not decoded) are dropped.
        let used: Vec<usize> = (0..pages.len())
            .filter(|&n| blocks.iter().any(|b| b.page as usize == n))
            .collect();
        for b in blocks.iter_mut() {
            b.page = used.iter().position(|&n| n == b.page as usize)? as u8;
        }
        let pages: Vec<RegionPage> = used.iter().map(|&n| pages[n]).collect();
        let flat = flat_segments(self);
        let perms = self.tlb_perms();
        let code = codegen::compile(&blocks, &pages, memory, slot as u32, cs, flat, perms);
        let cpu_ptr = self as *mut Cpu;
        // `load` only compiles; it does not run code or touch the Cpu.
        let loaded = self.jit_engine.as_mut()?.load(cpu_ptr, &code.wasm);
        let handle = match loaded {
            Ok(h) => h,
            Err(e) => {
                self.jit.stats.failures += 1;
                self.jit.error = Some(e);
                return None;
            }
        };
        self.free_region(slot);
        let id = (self.jit.next_serial << SLOT_BITS) | slot as u32;
        self.jit.next_serial = self.jit.next_serial.wrapping_add(1).max(1);
        let stats = &mut self.jit.stats;
        stats.regions_compiled += 1;
        stats.regions_live += 1;
        stats.guest_bytes += blocks.iter().map(|b| b.byte_len as u64).sum::<u64>();
        stats.wasm_bytes += code.wasm.len() as u64;
        stats.inline_instructions += code.inline_count as u64;
        stats.step_instructions += code.step_count as u64;
        // Link every block of the region that the cache holds to its entry.
        for (n, b) in blocks.iter().enumerate() {
            let page = pages[b.page as usize].phys_page << 12;
            let p = page | (cs.base.wrapping_add(b.eip) & 0xFFF);
            if let Some((idx, _, _)) = self.cached_block_at(p, b.eip, cs) {
                let cached = &mut self.icache.compiled[idx];
                cached.region = id;
                cached.entry = n as u32;
            }
        }
        for p in &pages {
            let slots = self.jit.by_page.entry(p.phys_page).or_default();
            if !slots.contains(&slot) {
                slots.push(slot);
            }
        }
        self.jit.regions[slot] = Some(Region {
            id,
            handle,
            pages,
            cs_base: cs.base,
            cs_limit: cs.limit,
            cs_big: cs.big,
            flat,
            perms,
            entries: blocks.iter().map(|b| b.eip).collect(),
            entry_pages: blocks.iter().map(|b| b.page).collect(),
            fallback: code.fallback,
        });
        Some(slot)
    }
}

/// Run one instruction of a compiled region through the interpreter: instruction `index` of
/// the region in `slot`, at `cpu.eip` (the generated code has stored the registers, EIP and
/// the instruction count). Returns a `codegen::STEP_*` status.
pub fn step(cpu: &mut Cpu, slot: u32, index: u32) -> u32 {
    let status = step_status(cpu, slot, index);
    cpu.jit_stop_at_block_end = (status == codegen::STEP_CONTINUE_THEN_STOP) as u32;
    status
}

fn step_status(cpu: &mut Cpu, slot: u32, index: u32) -> u32 {
    let Some((instr, flat)) = cpu.jit.fallback(slot, index) else {
        // Cannot happen (a region is never replaced while it runs); leaving without running
        // the instruction is always correct: the interpreter runs it next, from the start
        // of a batch if it is a REP instruction.
        cpu.rep_done = 0;
        return codegen::STEP_LEAVE;
    };
    let next = cpu.eip.wrapping_add(instr.len as u32);
    match fast::run(cpu, std::slice::from_ref(&instr)) {
        Err(e) => {
            cpu.debug_instruction_faulted(false);
            cpu.deliver_exception(e);
            codegen::STEP_FAULTED
        }
        Ok(()) if cpu.eip != next || cpu.stop_block => codegen::STEP_LEAVE,
        // A segment the region treats as flat is not any more (a segment load): leave.
        Ok(()) if flat_segments(cpu) & flat != flat => codegen::STEP_LEAVE,
        Ok(()) if cpu.must_stop_chaining() => codegen::STEP_CONTINUE_THEN_STOP,
        Ok(()) => codegen::STEP_CONTINUE,
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::sample::{self, same_with_and_without};
    use super::wasmi_engine::WasmiEngine;

    /// `code` run compiled (the wasmi engine, at `threshold`) and interpreted, in slices of
    /// `slice` instructions, matching at the end of each: the compiled CPU.
    fn compiled_like_interpreted(code: &[u8], slice: u64, threshold: u32) -> super::Cpu {
        same_with_and_without(code, slice, Box::new(WasmiEngine::new()), threshold)
            .unwrap_or_else(|e| panic!("slice {slice}, threshold {threshold}: {e}"))
    }

    #[test]
    fn compiled_primes_match_the_interpreter_slice_by_slice() {
        for (slice, threshold) in [(100_000, 1), (1000, 1), (37, 5), (1, 1), (5000, 50)] {
            let cpu = compiled_like_interpreted(sample::PRIMES, slice, threshold);
            assert_eq!(cpu.mem.ram[0x8000], sample::PRIMES_BELOW_300);
            // #DE was delivered: the HLT at 0x0F00 ran.
            assert_eq!(cpu.eip, 0x0F01);
            let stats = cpu.jit_stats();
            assert!(stats.regions_compiled > 0, "{stats:?}");
            if slice > 1 {
                assert!(
                    stats.compiled_instructions > cpu.instructions / 2,
                    "slice {slice}: {stats:?} of {}",
                    cpu.instructions
                );
            }
        }
    }

    #[test]
    fn compiled_shifts_bytes_and_memory_compares_match_the_interpreter() {
        for (slice, threshold) in [(100_000, 1), (29, 1), (1, 1), (3000, 20)] {
            let cpu = compiled_like_interpreted(sample::SHIFTS_AND_BYTES, slice, threshold);
            assert!(
                cpu.jit_stats().inline_instructions > 20,
                "{:?}",
                cpu.jit_stats()
            );
        }
    }

    /// REP MOVS and REP STOS, inline where they can be: every slice ends as the interpreter's
    /// (the batch boundaries, so the retired count, included), and so does all of RAM.
    #[test]
    fn compiled_rep_strings_match_the_interpreter() {
        let code = sample::rep_strings();
        let mut plain = sample::cpu_running(&code);
        while plain.run(1_000_000) != crate::cpu::RunExit::Halted {}
        for (slice, threshold) in [
            (100_000, 1),
            (1000, 1),
            (3, 1),
            (1, 1),
            (5, 1),
            (11, 2),
            (500, 3),
        ] {
            let cpu = compiled_like_interpreted(&code, slice, threshold);
            assert!(cpu.mem.ram == plain.mem.ram, "RAM differs (slice {slice})");
            assert_eq!(cpu.instructions, plain.instructions);
            // Short slices cut most blocks, which then run in the interpreter.
            let stats = cpu.jit_stats();
            assert!(
                slice < 1000 || stats.compiled_instructions > cpu.instructions / 2,
                "slice {slice}: {stats:?} of {}",
                cpu.instructions
            );
        }
    }

    /// REPE/REPNE CMPS and SCAS, inline where they can be, with their flags logged after each.
    #[test]
    fn compiled_rep_compares_match_the_interpreter() {
        let code = sample::rep_compares();
        let mut plain = sample::cpu_running(&code);
        while plain.run(1_000_000) != crate::cpu::RunExit::Halted {}
        for (slice, threshold) in [(100_000, 1), (1000, 1), (1, 1), (5, 1), (13, 2), (500, 3)] {
            let cpu = compiled_like_interpreted(&code, slice, threshold);
            assert!(cpu.mem.ram == plain.mem.ram, "RAM differs (slice {slice})");
        }
    }

    /// REP STOSD and REPNE SCASD whose batches end in the generated code (aligned) or in the
    /// handler it hands over to partway (misaligned): each batch still ends where the
    /// interpreter's does, with its flags, which a slice ending right after it shows.
    #[test]
    fn rep_batches_end_where_the_interpreter_ends_them() {
        for (prefix, opcode) in [(0xF3, 0xAB), (0xF2, 0xAF)] {
            for edi in [0x3C800, 0x3C001] {
                let code = sample::rep_batches(prefix, opcode, edi);
                for slice in 1..=40 {
                    same_with_and_without(&code, slice, Box::new(WasmiEngine::new()), 1)
                        .unwrap_or_else(|e| panic!("{opcode:#x} at {edi:#x}: {e}"));
                }
            }
        }
    }

    /// A data breakpoint set while a loop runs compiled: the MOV to DR7 leaves the compiled
    /// code (built for the TLB permissions without breakpoints), the run loop then goes
    /// instruction by instruction, and the next write traps (#DB) as without the tier.
    ///
    /// ```text
    ///   mov dword [4], 0x0f00             ; #DB to the HLT at 0x0F00
    ///   mov ecx, 100
    /// top:
    ///   mov [0x8000], ecx
    ///   cmp ecx, 50 ; jne skip
    ///   mov eax, 0x8000 ; mov dr0, eax
    ///   mov eax, 0x000d0002 ; mov dr7, eax  ; DR0: 4-byte data writes, G0
    ///   jmp skip
    /// skip:
    ///   dec ecx ; jnz top
    ///   hlt
    /// ```
    #[test]
    fn a_data_breakpoint_set_during_a_compiled_loop_traps() {
        let code = [
            0xc7, 0x05, 0x04, 0x00, 0x00, 0x00, 0x00, 0x0f, 0x00, 0x00, 0xb9, 0x64, 0x00, 0x00,
            0x00, 0x89, 0x0d, 0x00, 0x80, 0x00, 0x00, 0x83, 0xf9, 0x32, 0x75, 0x12, 0xb8, 0x00,
            0x80, 0x00, 0x00, 0x0f, 0x23, 0xc0, 0xb8, 0x02, 0x00, 0x0d, 0x00, 0x0f, 0x23, 0xf8,
            0xeb, 0x00, 0x49, 0x75, 0xe0, 0xf4,
        ];
        for (slice, threshold) in [(100_000, 1), (7, 1), (1000, 3)] {
            let cpu = compiled_like_interpreted(&code, slice, threshold);
            assert_eq!((cpu.eip, cpu.regs[crate::cpu::ECX]), (0x0F01, 49));
            assert!(cpu.jit_stats().compiled_instructions > 0);
        }
    }

    /// IDIV r32 compiled: a dividend in the i32 range (after CDQ), one that needs 64 bits
    /// (EDX not EAX's sign), negative remainders, and #DE for the smallest dividend by -1,
    /// as the interpreter does them.
    ///
    /// ```text
    ///   mov esi, 6
    /// top:
    ///   mov eax, -7 ; cdq ; mov ecx, 2 ; idiv ecx             ; -3, -1
    ///   mov [0x8000], eax ; mov [0x8004], edx
    ///   mov eax, 100 ; mov edx, 5 ; mov ecx, 1000 ; idiv ecx  ; 64-bit dividend
    ///   mov [0x8008], eax ; mov [0x800c], edx
    ///   mov eax, 0x7fffffff ; cdq ; mov ecx, -1 ; idiv ecx
    ///   mov [0x8010], eax ; mov [0x8014], edx
    ///   mov edx, -5 ; mov eax, 0 ; mov ecx, 0x10000 ; idiv ecx ; negative 64-bit dividend
    ///   mov [0x8018], eax ; mov [0x801c], edx
    ///   dec esi ; jnz top
    ///   mov eax, 0x80000000 ; cdq ; mov ecx, -1 ; idiv ecx    ; #DE
    ///   hlt
    /// ```
    #[test]
    fn compiled_idiv_matches_the_interpreter() {
        let code = [
            0xbe, 0x06, 0x00, 0x00, 0x00, 0xb8, 0xf9, 0xff, 0xff, 0xff, 0x99, 0xb9, 0x02, 0x00,
            0x00, 0x00, 0xf7, 0xf9, 0xa3, 0x00, 0x80, 0x00, 0x00, 0x89, 0x15, 0x04, 0x80, 0x00,
            0x00, 0xb8, 0x64, 0x00, 0x00, 0x00, 0xba, 0x05, 0x00, 0x00, 0x00, 0xb9, 0xe8, 0x03,
            0x00, 0x00, 0xf7, 0xf9, 0xa3, 0x08, 0x80, 0x00, 0x00, 0x89, 0x15, 0x0c, 0x80, 0x00,
            0x00, 0xb8, 0xff, 0xff, 0xff, 0x7f, 0x99, 0xb9, 0xff, 0xff, 0xff, 0xff, 0xf7, 0xf9,
            0xa3, 0x10, 0x80, 0x00, 0x00, 0x89, 0x15, 0x14, 0x80, 0x00, 0x00, 0xba, 0xfb, 0xff,
            0xff, 0xff, 0xb8, 0x00, 0x00, 0x00, 0x00, 0xb9, 0x00, 0x00, 0x01, 0x00, 0xf7, 0xf9,
            0xa3, 0x18, 0x80, 0x00, 0x00, 0x89, 0x15, 0x1c, 0x80, 0x00, 0x00, 0x4e, 0x75, 0x95,
            0xb8, 0x00, 0x00, 0x00, 0x80, 0x99, 0xb9, 0xff, 0xff, 0xff, 0xff, 0xf7, 0xf9, 0xf4,
        ];
        for (slice, threshold) in [(100_000, 1), (97, 1), (1000, 2)] {
            let cpu = compiled_like_interpreted(&code, slice, threshold);
            let word = |a: usize| u32::from_le_bytes(cpu.mem.ram[a..a + 4].try_into().unwrap());
            let results: Vec<u32> = (0..8).map(|n| word(0x8000 + 4 * n)).collect();
            assert_eq!(
                results,
                [
                    -3i32 as u32,
                    -1i32 as u32,
                    21_474_836,
                    580,
                    0x8000_0001,
                    0,
                    -327_680i32 as u32,
                    0
                ]
            );
            // #DE delivered, with EDX:EAX as they were.
            assert_eq!(cpu.eip, 0x0F01);
            assert_eq!(cpu.regs[crate::cpu::EAX], 0x8000_0000);
            assert!(
                cpu.jit_stats().compiled_instructions > 0,
                "slice {slice}, threshold {threshold}: {:?}",
                cpu.jit_stats()
            );
        }
    }

    /// Loops closed by a fused compare and branch back to a block that computes its own flags
    /// first: the compare's flags are not stored on that way, so every way out of compiled
    /// code there (the budget running out at the loop's start, in slices of every size) must
    /// store them, as the interpreter has them.
    ///
    /// ```text
    ///   mov ecx, 0 ; mov ebx, 3000
    /// top:
    ///   add ecx, 1 ; cmp ecx, ebx ; jne top
    ///   mov esi, 0x8000 ; mov byte [0x8bb7], 1 ; mov dl, 1
    /// loop2:
    ///   add esi, 1 ; cmp [esi-1], dl ; jne loop2
    ///   hlt
    /// ```
    #[test]
    fn flags_left_unstored_by_a_loop_branch_are_stored_where_compiled_code_exits() {
        let code = [
            0xb9, 0x00, 0x00, 0x00, 0x00, 0xbb, 0xb8, 0x0b, 0x00, 0x00, 0x83, 0xc1, 0x01, 0x39,
            0xd9, 0x75, 0xf9, 0xbe, 0x00, 0x80, 0x00, 0x00, 0xc6, 0x05, 0xb7, 0x8b, 0x00, 0x00,
            0x01, 0xb2, 0x01, 0x83, 0xc6, 0x01, 0x38, 0x56, 0xff, 0x75, 0xf8, 0xf4,
        ];
        for slice in [4, 5, 6, 7, 11, 100_000] {
            let cpu = compiled_like_interpreted(&code, slice, 1);
            assert_eq!(cpu.regs[crate::cpu::ESI], 0x8bb8);
            assert!(cpu.jit_stats().compiled_instructions > 1000);
        }
    }

    /// An engine that takes modules but, called, runs nothing (so the interpreter runs every
    /// block), and counts the modules it was given and freed.
    struct Recorder {
        shared: bool,
        loads: std::rc::Rc<std::cell::Cell<u32>>,
        unloads: std::rc::Rc<std::cell::Cell<u32>>,
    }

    impl Recorder {
        fn new(shared: bool) -> Self {
            Recorder {
                shared,
                loads: Default::default(),
                unloads: Default::default(),
            }
        }
    }

    impl super::Engine for Recorder {
        fn shared_memory(&self) -> bool {
            self.shared
        }
        fn load(&mut self, _cpu: *mut super::Cpu, _wasm: &[u8]) -> Result<u32, String> {
            self.loads.set(self.loads.get() + 1);
            Ok(self.loads.get())
        }
        unsafe fn call(
            &mut self,
            _handle: u32,
            _cpu: *mut super::Cpu,
            _limit: u64,
            _entry: u32,
        ) -> Result<u32, String> {
            Ok(super::codegen::RAN)
        }
        fn unload(&mut self, _handle: u32) {
            self.unloads.set(self.unloads.get() + 1);
        }
    }

    /// The TLB permissions are built into a region's code: with other ones (another privilege
    /// level, EFLAGS.AC) it is not entered, and the code is compiled again for them.
    #[test]
    fn a_region_runs_only_with_the_tlb_permissions_it_was_compiled_for() {
        use crate::mem::tlb::{TLB_READ_USER, TLB_WRITE_USER};
        let engine = Recorder::new(false);
        let loads = engine.loads.clone();
        let mut cpu = sample::cpu_running(sample::PRIMES);
        cpu.set_jit(Some(Box::new(engine)), 1);
        cpu.run(5000);
        let compiled = loads.get();
        assert!(compiled > 0);
        cpu.run(5000);
        assert_eq!(loads.get(), compiled, "the same code compiled again");
        assert_ne!(cpu.tlb_perms(), [TLB_READ_USER, TLB_WRITE_USER]);
        cpu.tlb_read_perm = TLB_READ_USER;
        cpu.tlb_write_perm = TLB_WRITE_USER;
        cpu.run(5000);
        assert!(
            loads.get() > compiled,
            "no region compiled for the new permissions"
        );
    }

    /// With an engine that runs generated code in the core's own memory, the addresses of the
    /// Cpu, the TLB and RAM are built into the code: a Cpu that moves drops every region.
    #[test]
    fn regions_compiled_at_other_addresses_are_dropped() {
        let engine = Recorder::new(true);
        let (loads, unloads) = (engine.loads.clone(), engine.unloads.clone());
        let mut cpu = Box::new(sample::cpu_running(sample::PRIMES));
        cpu.set_jit(Some(Box::new(engine)), 1);
        cpu.run(5000);
        let compiled = loads.get();
        assert!(compiled > 0);
        assert_eq!(unloads.get(), 0);
        // The old box keeps a Cpu of its own, so the moved one is at another address.
        let mut moved = Box::new(std::mem::replace(&mut *cpu, super::Cpu::with_ram(4096)));
        moved.run(5000);
        assert_eq!(
            unloads.get(),
            compiled,
            "regions of the old address still live"
        );
        assert!(loads.get() > compiled);
        assert_eq!(
            moved.jit_stats().regions_live,
            (loads.get() - compiled) as u64
        );
    }

    /// A compiled loop whose code is rewritten from another page while it runs.
    #[test]
    fn a_loop_rewritten_from_another_page_runs_the_new_code() {
        for (slice, threshold) in [(100_000, 1), (7, 1), (1000, 20)] {
            let cpu = compiled_like_interpreted(&sample::cross_page_rewriter(), slice, threshold);
            assert_eq!(cpu.regs[crate::cpu::ESI], sample::CROSS_PAGE_SUM);
            assert!(
                cpu.jit_stats().regions_compiled > 1,
                "{:?}",
                cpu.jit_stats()
            );
        }
    }

    /// The compiled region must be dropped when its code is rewritten, and the new code run.
    #[test]
    fn self_modifying_loop_runs_the_new_code() {
        let cpu = compiled_like_interpreted(sample::SELF_MODIFYING, 1000, 1);
        assert_eq!(cpu.regs[crate::cpu::ESI], (0..200).sum::<u32>());
    }
}
