//! Debug registers: instruction and data breakpoints (DR0-DR3, DR6, DR7) and the resume flag.
//!
//! Breakpoints cost nothing while DR7 enables none:
//! - Instruction breakpoints: while DR7 enables any breakpoint (or TF or RF is set) the run loop
//!   executes one instruction per block and calls [`Cpu::debug_before_instruction`] first, which
//!   compares CS.base + EIP with the enabled execute breakpoints and raises #DB as a fault.
//!   EFLAGS.RF suppresses that check for one instruction and is cleared when it completes.
//! - Data breakpoints: [`Cpu::update_fast_path_perms`] zeroes the TLB permissions the fast path
//!   tests, so every access goes through the slow path in access.rs, which calls
//!   [`Cpu::check_data_breakpoint`]. A hit is recorded in `pending_db` and ends the block; the run
//!   loop then delivers #DB as a trap after the instruction ([`Cpu::debug_trap`]).
//!
//! I/O breakpoints (R/W = 10b with CR4.DE) are not implemented: they never match.

use super::exception::{self, Exception, Fault};
use super::flags;
use super::interrupt::DR6_BS;
use super::seg::Segment;
use super::{Cpu, CR0_AM};
use crate::mem::tlb::{TLB_READ_SUPER, TLB_READ_USER, TLB_WRITE_SUPER, TLB_WRITE_USER};

/// DR6 B0-B3: which breakpoint conditions were met.
pub const DR6_BREAKPOINTS: u32 = 0xF;

/// DR7 R/W field values.
const RW_EXECUTE: u32 = 0b00;
const RW_WRITE: u32 = 0b01;
const RW_READ_WRITE: u32 = 0b11;

/// Whether DR7 enables breakpoint `n` (local or global enable bit).
#[inline]
fn enabled(dr7: u32, n: usize) -> bool {
    (dr7 >> (2 * n)) & 3 != 0
}

/// The R/W field of breakpoint `n`.
#[inline]
fn rw(dr7: u32, n: usize) -> u32 {
    (dr7 >> (16 + 4 * n)) & 3
}

/// The length of breakpoint `n` in bytes (LEN 00 = 1, 01 = 2, 11 = 4; 10 is undefined on a
/// P6 and treated as 8 as later CPUs do).
#[inline]
fn len(dr7: u32, n: usize) -> u32 {
    match (dr7 >> (18 + 4 * n)) & 3 {
        0 => 1,
        1 => 2,
        2 => 8,
        _ => 4,
    }
}

impl Cpu {
    /// Whether DR7 enables a data (read or write) breakpoint.
    pub fn data_breakpoints_enabled(&self) -> bool {
        let dr7 = self.dr[7];
        (0..4).any(|n| enabled(dr7, n) && matches!(rw(dr7, n), RW_WRITE | RW_READ_WRITE))
    }

    /// Recompute the TLB permission bits the access fast path tests. They are zero (every
    /// access takes the slow path) while a data breakpoint is enabled, or while alignment
    /// checking is on at CPL 3 (CR0.AM and EFLAGS.AC: the slow path checks alignment).
    /// Called after CPL changes (set_cpl), DR7 writes and CR0.AM changes; code that changes
    /// EFLAGS.AC (POPF, IRET, interrupt delivery) should call it too.
    pub fn update_fast_path_perms(&mut self) {
        let user = self.cpl == 3;
        let align_check = user && self.cr0 & CR0_AM != 0 && self.flags.sys(flags::AC);
        if align_check || (self.dr[7] & 0xFF != 0 && self.data_breakpoints_enabled()) {
            self.tlb_read_perm = 0;
            self.tlb_write_perm = 0;
        } else if user {
            self.tlb_read_perm = TLB_READ_USER;
            self.tlb_write_perm = TLB_WRITE_USER;
        } else {
            self.tlb_read_perm = TLB_READ_SUPER;
            self.tlb_write_perm = TLB_WRITE_SUPER;
        }
    }

    /// Before an instruction in single-step mode: check the execute breakpoints at
    /// CS.base + EIP unless EFLAGS.RF suppresses them, then clear RF (it covers one
    /// instruction). Returns whether RF was set, so the run loop can restore it if the
    /// instruction faults. A hit is an #DB fault with DR6 B0-B3 naming the breakpoints.
    pub(crate) fn debug_before_instruction(&mut self) -> Fault<bool> {
        if self.flags.sys(flags::RF) {
            self.flags.set(flags::RF, false);
            return Ok(true);
        }
        let dr7 = self.dr[7];
        if dr7 & 0xFF == 0 {
            return Ok(false);
        }
        let lin = self.segs[Segment::CS as usize].base.wrapping_add(self.eip);
        let mut hits = 0;
        for n in 0..4 {
            if enabled(dr7, n) && rw(dr7, n) == RW_EXECUTE && self.dr[n] == lin {
                hits |= 1 << n;
            }
        }
        if hits != 0 {
            self.dr[6] = (self.dr[6] & !DR6_BREAKPOINTS) | hits;
            return Err(Exception::new(exception::DB));
        }
        Ok(false)
    }

    /// An instruction faulted: undo what [`Cpu::debug_before_instruction`] did (RF stays as it
    /// was: the instruction did not complete) and forget data breakpoints it hit.
    pub(crate) fn debug_instruction_faulted(&mut self, rf: bool) {
        if rf {
            self.flags.set(flags::RF, true);
        }
        self.pending_db = 0;
    }

    /// Check a data access against the enabled data breakpoints (called from the slow memory
    /// paths, which every access takes while one is enabled). A hit is delivered as a trap
    /// after the instruction.
    #[inline]
    pub(crate) fn check_data_breakpoint(&mut self, lin: u32, size: u32, write: bool) {
        let dr7 = self.dr[7];
        if dr7 & 0xFF == 0 {
            return;
        }
        let first = lin as u64;
        let last = first + size.max(1) as u64 - 1;
        for n in 0..4 {
            if !enabled(dr7, n) {
                continue;
            }
            let matches_kind = match rw(dr7, n) {
                RW_WRITE => write,
                RW_READ_WRITE => true,
                _ => false,
            };
            if !matches_kind {
                continue;
            }
            let l = len(dr7, n);
            let bp_first = (self.dr[n] & !(l - 1)) as u64;
            let bp_last = bp_first + l as u64 - 1;
            if first <= bp_last && bp_first <= last {
                self.pending_db |= 1 << n;
                // End the block so the run loop delivers the trap after this instruction.
                self.stop_block = true;
            }
        }
    }

    /// After an instruction completed: deliver the debug trap for a data breakpoint hit and/or
    /// a TF single step (`single_step`), as one #DB with DR6 B0-B3 and BS set accordingly.
    pub(crate) fn debug_trap(&mut self, single_step: bool) {
        let hits = std::mem::take(&mut self.pending_db);
        if hits == 0 {
            // Only the single step (sets DR6.BS).
            self.single_step_trap();
            return;
        }
        self.dr[6] = (self.dr[6] & !DR6_BREAKPOINTS) | hits;
        if single_step {
            self.dr[6] |= DR6_BS;
        }
        self.deliver_exception(Exception::new(exception::DB));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::seg::SegCache;
    use crate::cpu::ESP;

    /// Real-mode CPU: `code` at 0:1000, a HLT at 0:2000 that IVT[1] (#DB) points to.
    fn cpu_with(code: &[u8]) -> Cpu {
        let mut cpu = Cpu::with_ram(1 << 20);
        cpu.mem.load(0x1000, code);
        cpu.mem.load(4, &[0x00, 0x20, 0x00, 0x00]);
        cpu.mem.load(0x2000, &[0xF4]);
        cpu.segs[Segment::CS as usize] = SegCache::real(0);
        cpu.eip = 0x1000;
        cpu.regs[ESP] = 0x8000;
        cpu
    }

    /// The IP pushed by the last real-mode interrupt.
    fn pushed_ip(cpu: &mut Cpu) -> u32 {
        cpu.read::<2>(Segment::SS as usize, cpu.regs[ESP]).unwrap()
    }

    const CPUID: [u8; 2] = [0x0F, 0xA2];

    #[test]
    fn instruction_breakpoint_faults_before_the_instruction() {
        let mut cpu = cpu_with(&[0x0F, 0xA2, 0x0F, 0xA2, 0xF4]);
        cpu.dr[0] = 0x1002;
        cpu.dr[7] = 0x401; // L0, execute, length 1
        cpu.run(10);
        assert_eq!(cpu.eip, 0x2001, "the #DB handler ran");
        assert_eq!(
            pushed_ip(&mut cpu),
            0x1002,
            "fault: IP of the breakpoint instruction"
        );
        assert_eq!(cpu.dr[6] & DR6_BREAKPOINTS, 1);
        assert_eq!(
            cpu.instructions, 2,
            "first CPUID and the handler's HLT retired"
        );
    }

    #[test]
    fn resume_flag_suppresses_one_breakpoint_and_clears() {
        let mut cpu = cpu_with(&[0x0F, 0xA2, 0xF4]);
        cpu.dr[0] = 0x1000;
        cpu.dr[7] = 0x401;
        cpu.flags.set(flags::RF, true);
        cpu.run(10);
        assert_eq!(cpu.eip, 0x1003, "CPUID and HLT ran without #DB");
        assert!(!cpu.flags.sys(flags::RF));
        assert_eq!(cpu.dr[6] & DR6_BREAKPOINTS, 0);
    }

    #[test]
    fn data_write_breakpoint_traps_after_the_instruction() {
        // sgdt [0x500] ; cpuid ; hlt
        let mut code = vec![0x0F, 0x01, 0x06, 0x00, 0x05];
        code.extend_from_slice(&CPUID);
        code.push(0xF4);
        let mut cpu = cpu_with(&code);
        cpu.dr[1] = 0x504;
        // L1 (bit 2), R/W1 = 01 (write), LEN1 = 11 (4 bytes).
        cpu.dr[7] = 0x400 | (1 << 2) | (0b01 << 20) | (0b11 << 22);
        cpu.update_fast_path_perms();
        cpu.run(10);
        assert_eq!(cpu.eip, 0x2001);
        assert_eq!(
            pushed_ip(&mut cpu),
            0x1005,
            "trap: IP of the next instruction"
        );
        assert_eq!(cpu.dr[6] & DR6_BREAKPOINTS, 0b10);
    }

    #[test]
    fn read_breakpoints_ignore_writes_of_write_only_breakpoints() {
        let mut cpu = cpu_with(&[0xF4]);
        cpu.dr[2] = 0x600;
        cpu.dr[7] = 0x400 | (1 << 4) | (0b01 << 24); // write-only, 1 byte
        cpu.update_fast_path_perms();
        assert_eq!(cpu.tlb_read_perm, 0, "data breakpoints force the slow path");
        cpu.read::<4>(Segment::DS as usize, 0x600).unwrap();
        assert_eq!(cpu.pending_db, 0);
        cpu.write::<2>(Segment::DS as usize, 0x5FF, 0).unwrap();
        assert_eq!(cpu.pending_db, 0b100);
    }

    #[test]
    fn alignment_checking_at_cpl3_forces_the_slow_path() {
        let mut cpu = cpu_with(&[0xF4]);
        cpu.cr0 |= CR0_AM;
        cpu.flags.set(flags::AC, true);
        cpu.set_cpl(3);
        assert_eq!(cpu.tlb_read_perm, 0);
        cpu.set_cpl(0);
        assert_eq!(cpu.tlb_read_perm, TLB_READ_SUPER);
    }
}
