//! The processor's state as a plain struct, for snapshots: everything a running guest can
//! observe or that decides what it does next (registers, descriptor caches, control and debug
//! registers, the x87, MSRs, the retired-instruction count, HLT and pending events), and
//! nothing that is a cache (decoded blocks, the TLB, compiled code) or a host handle (the bus).
//! RAM is saved by the machine (see `crate::state`).

use super::flags::Flags;
use super::seg::SegCache;
use super::{x87, Cpu, Msrs, TableReg, REG_SLOTS};
use serde::{Deserialize, Serialize};

/// See the module comment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CpuState {
    pub regs: [u32; REG_SLOTS],
    pub eip: u32,
    pub flags: Flags,
    pub segs: [SegCache; 6],
    pub gdtr: TableReg,
    pub idtr: TableReg,
    pub ldtr: SegCache,
    pub tr: SegCache,
    pub cr0: u32,
    pub cr2: u32,
    pub cr3: u32,
    pub cr4: u32,
    pub dr: [u32; 8],
    pub msr: Msrs,
    pub fpu: x87::Fpu,
    pub cpl: u8,
    pub instructions: u64,
    pub halted: bool,
    pub shutdown: bool,
    /// Interrupts inhibited for one instruction (after MOV SS, POP SS, STI).
    pub irq_shadow: bool,
    /// Data breakpoints hit and not yet delivered as #DB.
    pub pending_db: u32,
    /// The A20 gate is open.
    pub a20: bool,
}

impl Cpu {
    /// The processor's state (see [`CpuState`]).
    pub fn state(&self) -> CpuState {
        CpuState {
            regs: self.regs,
            eip: self.eip,
            flags: self.flags.clone(),
            segs: self.segs,
            gdtr: self.gdtr,
            idtr: self.idtr,
            ldtr: self.ldtr,
            tr: self.tr,
            cr0: self.cr0,
            cr2: self.cr2,
            cr3: self.cr3,
            cr4: self.cr4,
            dr: self.dr,
            msr: self.msr.clone(),
            fpu: self.fpu.clone(),
            cpl: self.cpl,
            instructions: self.instructions,
            halted: self.halted,
            shutdown: self.shutdown,
            irq_shadow: self.irq_shadow,
            pending_db: self.pending_db,
            a20: self.mem.a20_mask == u32::MAX,
        }
    }

    /// Take on `state`: the caches start empty (no decoded blocks, an empty TLB, no compiled
    /// code), and the INTR line is sampled afresh from the bus, which must already be in the
    /// state that goes with this one.
    pub fn set_state(&mut self, state: &CpuState) {
        self.regs = state.regs;
        self.eip = state.eip;
        self.flags = state.flags.clone();
        self.segs = state.segs;
        self.gdtr = state.gdtr;
        self.idtr = state.idtr;
        self.ldtr = state.ldtr;
        self.tr = state.tr;
        self.cr0 = state.cr0;
        self.cr2 = state.cr2;
        self.cr3 = state.cr3;
        self.cr4 = state.cr4;
        self.dr = state.dr;
        self.msr = state.msr.clone();
        self.fpu = state.fpu.clone();
        self.instructions = state.instructions;
        self.halted = state.halted;
        self.shutdown = state.shutdown;
        self.irq_shadow = state.irq_shadow;
        self.pending_db = state.pending_db;
        self.delivering = None;
        self.rep_done = 0;
        self.jit_stop_at_block_end = 0;
        self.stop_block = false;
        self.mem.set_a20(state.a20);
        self.sync_paging();
        // A restore is not a privilege change the guest made: not counted.
        self.cpl = state.cpl;
        self.set_cpl(state.cpl);
        self.mem.tlb.flush_all();
        self.mem.forget_code();
        self.icache.flush();
        self.drop_regions();
        self.refresh_intr();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Segment;

    #[test]
    fn a_cpu_given_another_s_state_runs_on_exactly_as_the_other_would() {
        // A loop that sums into EAX and counts on the x87 (FLDZ once, then FLD1 and FADDP).
        let code = [
            0xD9, 0xEE, // fldz
            0x66, 0x01, 0xC8, // add eax, ecx
            0x66, 0x41, // inc ecx
            0xD9, 0xE8, // fld1
            0xDE, 0xC1, // faddp st1, st0
            0xEB, 0xF5, // jmp to the add
        ];
        let mut a = Cpu::with_ram(1 << 20);
        a.mem.load(0x1000, &code);
        a.segs[Segment::CS as usize] = SegCache::real(0);
        a.eip = 0x1000;
        a.regs[crate::cpu::ECX] = 7;
        a.run(1000);
        let state = a.state();
        let mut b = Cpu::with_ram(1 << 20);
        b.mem.ram.copy_from_slice(&a.mem.ram);
        b.set_state(&state);
        a.run(5000);
        b.run(5000);
        assert_eq!(a.regs, b.regs);
        assert_eq!((a.eip, a.instructions), (b.eip, b.instructions));
        assert_eq!(a.flags.word(), b.flags.word());
        assert_eq!(format!("{:?}", a.fpu), format!("{:?}", b.fpu));
        // And the state survives serialisation.
        let json = serde_json::to_string(&state).unwrap();
        let back: CpuState = serde_json::from_str(&json).unwrap();
        assert_eq!(format!("{back:?}"), format!("{state:?}"));
    }
}
