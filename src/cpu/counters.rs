//! Event counters: what the guest made the CPU do, for the virtualization lecture's questions
//! (which sensitive instructions ran in user mode, what traps and page faults a program costs)
//! and for finding where an emulator's time goes.
//!
//! Every count is taken where the work is already slow: in the handlers of system instructions
//! (none of them is a fast form of the run loop, and the compiling tier hands them to the same
//! handlers), at exception and interrupt delivery, at page walks, block decoding and code-page
//! invalidation. The hot paths (the run loop's inline forms, TLB hits) count nothing beyond the
//! retired-instruction count they always kept.
//!
//! Counters are observations, not machine state: a snapshot does not save them, a guest reset
//! keeps them, and [`crate::machine::Machine::reset_counters`] zeroes them.

/// The instructions counted one by one, with the privilege level they ran at.
///
/// The first [`SENSITIVE`] are the sensitive but unprivileged instructions of Robin and Irvine
/// (2000): at CPL 3 they run without a trap, yet read or change state a virtual machine monitor
/// must control, which is why x86 is not classically virtualizable. The rest are privileged
/// (they fault at CPL > 0, or above IOPL for CLI/STI and port I/O) or otherwise what a monitor
/// must intercept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Insn {
    Pushf,
    Popf,
    Iret,
    Lar,
    Lsl,
    Verr,
    Verw,
    PushSreg,
    PopSreg,
    MovFromSreg,
    MovToSreg,
    Sgdt,
    Sidt,
    Sldt,
    Str,
    Smsw,
    CallFar,
    JmpFar,
    RetFar,
    IntN,
    // Privileged, or intercepted by every monitor.
    Cli,
    Sti,
    Hlt,
    Lgdt,
    Lidt,
    Lldt,
    Ltr,
    Lmsw,
    Clts,
    MovToCr,
    MovFromCr,
    MovToDr,
    MovFromDr,
    Invlpg,
    Invd,
    In,
    Out,
    Ins,
    Outs,
    Rdmsr,
    Wrmsr,
    Rdtsc,
    Cpuid,
    Sysenter,
    Sysexit,
}

/// How many [`Insn`] kinds there are.
pub const INSN_KINDS: usize = Insn::Sysexit as usize + 1;
/// The first `SENSITIVE` kinds are the sensitive unprivileged instructions.
pub const SENSITIVE: usize = Insn::IntN as usize + 1;

/// Each [`Insn`]'s name as the table shows it, in order.
pub const INSN_NAMES: [&str; INSN_KINDS] = [
    "PUSHF",
    "POPF",
    "IRET",
    "LAR",
    "LSL",
    "VERR",
    "VERW",
    "PUSH Sreg",
    "POP Sreg",
    "MOV r/m, Sreg",
    "MOV Sreg, r/m",
    "SGDT",
    "SIDT",
    "SLDT",
    "STR",
    "SMSW",
    "CALL far",
    "JMP far",
    "RET far",
    "INT n",
    "CLI",
    "STI",
    "HLT",
    "LGDT",
    "LIDT",
    "LLDT",
    "LTR",
    "LMSW",
    "CLTS",
    "MOV CRn, r",
    "MOV r, CRn",
    "MOV DRn, r",
    "MOV r, DRn",
    "INVLPG",
    "INVD/WBINVD",
    "IN",
    "OUT",
    "INS (each element)",
    "OUTS (each element)",
    "RDMSR",
    "WRMSR",
    "RDTSC",
    "CPUID",
    "SYSENTER",
    "SYSEXIT",
];

/// Changes of processor mode and privilege.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ModeSwitch {
    /// CR0.PE set: real to protected mode.
    ProtectedOn,
    /// CR0.PE cleared: back to real mode.
    ProtectedOff,
    /// CR0.PG set.
    PagingOn,
    /// CR0.PG cleared.
    PagingOff,
    /// EFLAGS.VM set by IRET or a task switch: into virtual-8086 mode.
    EnterV86,
    /// An interrupt or exception out of virtual-8086 mode (or a task switch).
    LeaveV86,
    /// CPL went down (user to kernel: a system call, an interrupt, a fault).
    ToInnerRing,
    /// CPL went up (kernel to user: IRET, SYSEXIT, a far return).
    ToOuterRing,
}

/// How many [`ModeSwitch`] kinds there are.
pub const MODE_SWITCH_KINDS: usize = ModeSwitch::ToOuterRing as usize + 1;

/// Each [`ModeSwitch`]'s name as the table shows it, in order.
pub const MODE_SWITCH_NAMES: [&str; MODE_SWITCH_KINDS] = [
    "real to protected mode (CR0.PE set)",
    "protected to real mode (CR0.PE cleared)",
    "paging on (CR0.PG set)",
    "paging off (CR0.PG cleared)",
    "into virtual-8086 mode",
    "out of virtual-8086 mode",
    "to a more privileged ring (CPL down)",
    "to a less privileged ring (CPL up)",
];

/// Page faults by cause; one fault counts under each cause that applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PageFaultCauses {
    /// The page (or its page table) was not present.
    pub not_present: u64,
    /// Present, but the access was not allowed (a write to a read-only page, a user access to
    /// a supervisor page).
    pub protection: u64,
    /// Raised by a write.
    pub write: u64,
    /// Raised by a user-mode (CPL 3) access.
    pub user: u64,
}

/// The CPU's event counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters {
    /// Per [`Insn`], executions at each CPL (0 to 3; real mode counts as CPL 0, virtual-8086
    /// mode as 3). An execution counts when its handler starts, so one that faults counts too.
    pub insn: [[u64; 4]; INSN_KINDS],
    /// Exceptions raised, per vector: all of them, and those raised at CPL 3. A fault that
    /// escalates to #DF counts as both.
    pub exceptions: [[u64; 2]; 32],
    /// Page faults (vector 14) by cause.
    pub page_faults: PageFaultCauses,
    /// Hardware interrupts the CPU took (the board counts them per IRQ line).
    pub external: u64,
    /// Software interrupts (INT n, INT3, INTO) executed, per vector.
    pub software: [u64; 256],
    /// Per [`ModeSwitch`].
    pub mode_switches: [u64; MODE_SWITCH_KINDS],
    /// CR3 loads (MOV to CR3 and task switches): address-space switches.
    pub cr3_loads: u64,
    /// Hardware task switches (JMP, CALL, INT or IRET through a TSS or task gate).
    pub task_switches: u64,
    /// POPF executions that would have changed IF but could not (CPL above IOPL), so that
    /// the change was silently dropped: what a trap-and-emulate monitor never sees.
    pub popf_if_ignored: u64,
    /// Basic blocks decoded (each decoded once until its page is written or the cache is full).
    pub blocks_decoded: u64,
    /// Times the decoded instructions filled their arena and every block was dropped.
    pub block_cache_clears: u64,
    /// Decoded blocks that were one instruction straddling two pages (cached like any other
    /// block, unless the TLB did not hold the second page).
    pub blocks_straddling: u64,
    /// The retired-instruction count and the compiling tier's counters when these counters
    /// were last reset, to count from there.
    pub instructions_at_reset: u64,
    pub jit_at_reset: crate::jit::JitStats,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            insn: [[0; 4]; INSN_KINDS],
            exceptions: [[0; 2]; 32],
            page_faults: PageFaultCauses::default(),
            external: 0,
            software: [0; 256],
            mode_switches: [0; MODE_SWITCH_KINDS],
            cr3_loads: 0,
            task_switches: 0,
            popf_if_ignored: 0,
            blocks_decoded: 0,
            block_cache_clears: 0,
            blocks_straddling: 0,
            instructions_at_reset: 0,
            jit_at_reset: crate::jit::JitStats::default(),
        }
    }
}

impl Counters {
    /// The total of `insn` at all privilege levels.
    pub fn insn_total(&self, insn: Insn) -> u64 {
        self.insn[insn as usize].iter().sum()
    }
}

impl super::Cpu {
    /// Count one execution of `insn` at the current CPL (3 in virtual-8086 mode).
    #[inline]
    pub(crate) fn count(&mut self, insn: Insn) {
        let cpl = usize::from(self.cpl & 3);
        self.counters.insn[insn as usize][cpl] += 1;
    }

    /// Count a change of mode or privilege.
    #[inline]
    pub(crate) fn count_mode(&mut self, switch: ModeSwitch) {
        self.counters.mode_switches[switch as usize] += 1;
    }

    /// Count an exception about to be delivered.
    pub(crate) fn count_exception(&mut self, vector: u8, error_code: Option<u32>) {
        let Some(slot) = self.counters.exceptions.get_mut(usize::from(vector)) else {
            return;
        };
        slot[0] += 1;
        if self.cpl == 3 {
            slot[1] += 1;
        }
        if vector == super::exception::PF {
            let code = error_code.unwrap_or(0);
            let c = &mut self.counters.page_faults;
            if code & crate::mem::tlb::PF_PRESENT == 0 {
                c.not_present += 1;
            } else {
                c.protection += 1;
            }
            if code & crate::mem::tlb::PF_WRITE != 0 {
                c.write += 1;
            }
            if code & crate::mem::tlb::PF_USER != 0 {
                c.user += 1;
            }
        }
    }
}
