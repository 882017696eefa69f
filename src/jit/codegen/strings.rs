//! The REP string instructions inline: REP MOVS and REP STOS as whole runs within a page,
//! copied with `memory.copy` and filled with `memory.fill` (or a store loop for a word pattern
//! whose bytes differ), and REPE/REPNE CMPS and SCAS as an element loop within each run, page
//! after page through the TLB fast path; everything else is the interpreter's handler.
//!
//! The generated loop keeps the interpreter's accounting exactly (crate::cpu::string): one
//! retired instruction per batch of `REP_BATCH` elements, after which the instruction restarts
//! itself (EIP at it, the block ends, interrupts get in). When the loop cannot go on (DF = 1, a
//! page whose TLB entry does not allow the access, a code page, MMIO, an element across a
//! page, a copy whose destination overlaps the source ahead of it) it hands the rest to the
//! handler through `step`, with the elements it already did in this batch in
//! `Cpu::rep_done`, so the handler's batch ends where the interpreter's own would (and a
//! compare's flags stored, in case the handler's first element faults).
//!
//! Only 32-bit addresses through segments the region runs flat (the usual case in a 32-bit
//! kernel and user space) are inlined: the offset is the linear address, so a page is the
//! only limit on a run. REP LODS (which hardly occurs) stays with the handler.

use super::*;
use crate::cpu::decode::{REP_NONE, REP_NZ};
use crate::cpu::string::REP_BATCH;
use crate::cpu::{EDI, ESI};

const REP_DONE: u64 = offset_of!(Cpu, rep_done) as u64;

/// The REP string instructions this module inlines.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Movs,
    Stos,
    /// REPE (`repe`) or REPNE CMPS (`cmps`) or SCAS.
    Compare {
        cmps: bool,
        repe: bool,
    },
}

/// One of them, with elements of 2^`size_log2` bytes.
#[derive(Clone, Copy)]
struct Frame {
    kind: Kind,
    size_log2: u32,
}

impl Frame {
    /// It reads seg:ESI (MOVS, CMPS).
    fn reads_esi(&self) -> bool {
        matches!(self.kind, Kind::Movs | Kind::Compare { cmps: true, .. })
    }

    /// The width of its compare (CMPS, SCAS), whose flags the frame stores.
    fn compare(&self) -> Option<u32> {
        matches!(self.kind, Kind::Compare { .. }).then_some(8 << self.size_log2)
    }
}

impl Gen {
    /// Emit `i` at `eip` if it is a REP string instruction this module inlines; false if not
    /// (nothing emitted).
    pub(super) fn rep_string(&mut self, i: &Instr, eip: u32) -> bool {
        if i.rep == REP_NONE || !i.addr32 {
            return false;
        }
        let repe = i.rep != REP_NZ;
        let kind = match i.opcode {
            0xA4 | 0xA5 => Kind::Movs,
            0xAA | 0xAB => Kind::Stos,
            0xA6 | 0xA7 => Kind::Compare { cmps: true, repe },
            0xAE | 0xAF => Kind::Compare { cmps: false, repe },
            _ => return false,
        };
        let size_log2 = match (i.opcode & 1, i.op32) {
            (0, _) => 0,
            (_, false) => 1,
            (_, true) => 2,
        };
        let frame = Frame { kind, size_log2 };
        let reads_esi = frame.reads_esi();
        let flat = |seg: u8| self.flat & (1 << (seg % 6)) != 0;
        if !flat(Segment::ES as u8) || (reads_esi && !flat(i.seg as u8)) {
            return false;
        }
        // The loop changes ECX and EDI (and ESI), possibly before it hands the rest to the
        // slow arm: that arm must store them, so they count as newer than the Cpu's from here.
        for r in [EAX, ECX, ESI, EDI] {
            self.load_if_stale(r as u8);
        }
        let moved = 1 << ECX | 1 << EDI | if reads_esi { 1 << ESI } else { 0 };
        self.sync.dirty |= moved;
        self.with_memory(i, eip, |g| {
            // Moved in place, not through set_reg.
            g.written |= moved;
            g.rep_frame(i, eip, frame, |g| match kind {
                Kind::Movs => g.copy_run(size_log2),
                Kind::Stos => {
                    g.run_bytes(size_log2);
                    g.fill(size_log2);
                    g.advance(R0 + EDI as u32);
                    g.count_run();
                }
                Kind::Compare { cmps, repe } => g.compare_run(cmps, repe, size_log2),
            })
        });
        true
    }

    /// The fast arm (`br 0` here is the slow arm), around `run`, which does one run of T4
    /// elements (at least one) from T3 (the source, if the instruction reads one) and ADDR (the
    /// destination), moves ESI/EDI/ECX/CNT past them, and branches to depth 2 if the
    /// instruction ends there (a compare that stops), to depth 0 if it cannot do the run. Runs
    /// go on until ECX is 0 (then the arm falls through, retired), the batch is full (then it
    /// exits with EIP at the instruction, retired once), or a run cannot be done here (the
    /// slow arm, with `rep_done` set, and a compare's flags stored).
    fn rep_frame(&mut self, i: &Instr, eip: u32, frame: Frame, run: impl FnOnce(&mut Gen)) {
        let (ecx, esi, edi) = (R0 + ECX as u32, R0 + ESI as u32, R0 + EDI as u32);
        // Backwards (DF) or single-stepping (TF): the handler.
        self.slow_arm_if_flags(flags::DF | flags::TF);
        self.ins().i32_const(0).local_set(CNT);
        // block $complete / loop $run / block $cannot
        self.ins()
            .block(BlockType::Empty)
            .loop_(BlockType::Empty)
            .block(BlockType::Empty);
        self.depth += 3;
        // Count exhausted: done (a count of 0 at the start does nothing and retires).
        self.ins().local_get(ecx).i32_eqz().br_if(2);
        // A full batch: retired once, EIP stays at the instruction, the block ends.
        self.ins()
            .local_get(CNT)
            .i32_const(REP_BATCH as i32)
            .i32_ge_u();
        self.if_unlikely();
        self.depth += 1;
        let saved = self.sync;
        if let Some(width) = frame.compare() {
            self.compare_flags(width, true);
        }
        self.ins()
            .local_get(ICOUNT)
            .i64_const(1)
            .i64_add()
            .local_set(ICOUNT);
        self.exit(eip);
        self.sync = saved;
        self.ins().end();
        self.depth -= 1;
        // T4 = elements in this run: min(ECX, what is left of the batch, what fits in the
        // destination's page and the source's).
        self.ins()
            .local_get(ecx)
            .local_set(T4)
            .i32_const(REP_BATCH as i32)
            .local_get(CNT)
            .i32_sub();
        self.min_into_t4();
        self.page_room(edi, frame.size_log2);
        if frame.reads_esi() {
            self.page_room(esi, frame.size_log2);
        }
        self.ins().local_get(T4).i32_eqz();
        self.br_if_unlikely(0);
        // The source's and the destination's RAM addresses (T3, ADDR), or the slow arm.
        if frame.reads_esi() {
            self.ins().local_get(esi);
            self.access(i.seg as u8, 1, false);
            self.ins().local_get(ADDR).local_set(T3);
        }
        self.ins().local_get(edi);
        // Only MOVS and STOS write ES:EDI.
        self.access(Segment::ES as u8, 1, frame.compare().is_none());
        run(self);
        self.ins()
            .br(1)
            // $cannot: the handler does the rest of the batch.
            .end();
        if let Some(width) = frame.compare() {
            self.compare_flags(width, true);
        }
        self.ins()
            .local_get(CPU)
            .local_get(CNT)
            .i32_store(mem32(REP_DONE))
            .br(2)
            .end()
            .end();
        self.depth -= 3;
        // $complete: a compare's flags, if there was one.
        if let Some(width) = frame.compare() {
            self.compare_flags(width, false);
        }
    }

    /// MOVS's run: T4 elements from T3 to ADDR, or the slow arm (`br 0`) if the destination
    /// overlaps the run ahead of the source (the elements then replicate, which `memory.copy`,
    /// a memmove, would not do; the handler does).
    fn copy_run(&mut self, size_log2: u32) {
        let ram = self.mem_ram;
        self.run_bytes(size_log2);
        self.ins()
            .local_get(ADDR)
            .local_get(T3)
            .i32_sub()
            .i32_const(1)
            .i32_sub()
            .local_get(T1)
            .i32_const(1)
            .i32_sub()
            .i32_lt_u()
            .br_if(0)
            .local_get(ADDR)
            .local_get(T3)
            .local_get(T1)
            .memory_copy(ram, ram);
        self.advance(R0 + ESI as u32);
        self.advance(R0 + EDI as u32);
        self.count_run();
    }

    /// T1 = the bytes in the run (T4 elements).
    fn run_bytes(&mut self, size_log2: u32) {
        self.ins()
            .local_get(T4)
            .i32_const(size_log2 as i32)
            .i32_shl()
            .local_set(T1);
    }

    /// Register local `reg` += T1: past the run.
    fn advance(&mut self, reg: u32) {
        self.ins()
            .local_get(reg)
            .local_get(T1)
            .i32_add()
            .local_set(reg);
    }

    /// ECX -= T4, CNT += T4: the run's elements are done.
    fn count_run(&mut self) {
        let ecx = R0 + ECX as u32;
        self.ins()
            .local_get(ecx)
            .local_get(T4)
            .i32_sub()
            .local_set(ecx)
            .local_get(CNT)
            .local_get(T4)
            .i32_add()
            .local_set(CNT);
    }

    /// CMPS's or SCAS's run: element by element, VAL the source element (or the accumulator)
    /// and LIN ES:EDI's, until the first whose ZF is not `repe` (then to the frame's depth 2,
    /// the instruction done) or the end of the run. Only the addresses and T4 move per
    /// element; the registers and CNT move by the elements done afterwards.
    fn compare_run(&mut self, cmps: bool, repe: bool, size_log2: u32) {
        let size = 1u32 << size_log2;
        let width = 8u32 << size_log2;
        // T1 = the run's length; block $stop / loop $element
        self.ins()
            .local_get(T4)
            .local_set(T1)
            .block(BlockType::Empty)
            .loop_(BlockType::Empty);
        self.depth += 2;
        if cmps {
            self.next_element(T3, size);
        } else {
            self.ins()
                .local_get(R0 + EAX as u32)
                .i32_const((u32::MAX >> (32 - width)) as i32)
                .i32_and();
        }
        self.ins().local_set(VAL);
        self.next_element(ADDR, size);
        self.ins()
            .local_set(LIN)
            .local_get(T4)
            .i32_const(1)
            .i32_sub()
            .local_set(T4);
        self.element_stops(repe);
        self.ins().br_if(1).local_get(T4).br_if(0).end().end();
        self.depth -= 2;
        // T4 := the elements done; ECX, CNT, EDI and ESI past them.
        self.ins()
            .local_get(T1)
            .local_get(T4)
            .i32_sub()
            .local_set(T4)
            .local_get(T4)
            .i32_const(size_log2 as i32)
            .i32_shl()
            .local_set(T1);
        self.count_run();
        self.advance(R0 + EDI as u32);
        if cmps {
            self.advance(R0 + ESI as u32);
        }
        self.element_stops(repe);
        self.ins().br_if(2);
    }

    /// Push the element at the RAM address in `local` and move `local` past it (`size` bytes).
    fn next_element(&mut self, local: u32, size: u32) {
        self.ins().local_get(local);
        self.load_from(size);
        self.ins()
            .local_get(local)
            .i32_const(size as i32)
            .i32_add()
            .local_set(local);
    }

    /// Push whether the last compare (VAL, LIN) ends the instruction: ZF is not `repe`.
    fn element_stops(&mut self, repe: bool) {
        self.ins().local_get(VAL).local_get(LIN);
        if repe {
            self.ins().i32_ne();
        } else {
            self.ins().i32_eq();
        }
    }

    /// The flags of CMP VAL, LIN at `width` bits, if any element was compared (CNT > 0);
    /// stored even where nothing in the block reads them if `always`.
    fn compare_flags(&mut self, width: u32, always: bool) {
        let store = self.store_flags;
        self.store_flags |= always;
        if self.store_flags {
            self.ins().local_get(CNT).if_(BlockType::Empty);
            self.depth += 1;
            self.alu_values_w(CMP, Src::Local(VAL), Src::Local(LIN), width);
            self.ins().end();
            self.depth -= 1;
        }
        self.store_flags = store;
    }

    /// T4 = min(T4, the value on the stack).
    fn min_into_t4(&mut self) {
        self.ins()
            .local_tee(T2)
            .local_get(T4)
            .local_get(T2)
            .local_get(T4)
            .i32_lt_u()
            .select()
            .local_set(T4);
    }

    /// T4 = min(T4, whole elements from the address in `reg` to the end of its page).
    fn page_room(&mut self, reg: u32, size_log2: u32) {
        self.ins()
            .i32_const(0x1000)
            .local_get(reg)
            .i32_const(0xFFF)
            .i32_and()
            .i32_sub()
            .i32_const(size_log2 as i32)
            .i32_shr_u();
        self.min_into_t4();
    }

    /// STOS's run: T1 bytes at ADDR, each element AL/AX/EAX.
    fn fill(&mut self, size_log2: u32) {
        let ram = self.mem_ram;
        let eax = R0 + EAX as u32;
        if size_log2 == 0 {
            self.ins()
                .local_get(ADDR)
                .local_get(eax)
                .local_get(T1)
                .memory_fill(ram);
            return;
        }
        let mask = if size_log2 == 1 { 0xFFFF } else { u32::MAX };
        let repeat = if size_log2 == 1 { 0x0101 } else { 0x0101_0101 };
        // One byte repeated (zeros, above all): memory.fill; else the elements one by one.
        self.ins()
            .local_get(eax)
            .i32_const(0xFF)
            .i32_and()
            .i32_const(repeat)
            .i32_mul()
            .local_get(eax)
            .i32_const(mask as i32)
            .i32_and()
            .i32_eq()
            .if_(BlockType::Empty)
            .local_get(ADDR)
            .local_get(eax)
            .local_get(T1)
            .memory_fill(ram)
            .else_()
            // T2 walks from ADDR to ADDR + T1 (T1 > 0: a run has at least one element).
            .local_get(ADDR)
            .local_tee(T2)
            .local_get(T1)
            .i32_add()
            .local_set(T1)
            .loop_(BlockType::Empty)
            .local_get(T2)
            .local_get(eax);
        if size_log2 == 1 {
            self.ins().i32_store16(mem_at(ram, 0, 0));
        } else {
            self.ins().i32_store(mem_at(ram, 0, 0));
        }
        self.ins()
            .local_get(T2)
            .i32_const(1 << size_log2)
            .i32_add()
            .local_tee(T2)
            .local_get(T1)
            .i32_lt_u()
            .br_if(0)
            .end()
            // T1 back to the run's length.
            .local_get(T1)
            .local_get(ADDR)
            .i32_sub()
            .local_set(T1)
            .end();
    }
}
