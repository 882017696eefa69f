//! The inspector's machine side: registers, disassembly and page walks of the running machine
//! (its ROMs readable too), stepping, breakpoints and stepping over calls.
//!
//! # What a step is
//!
//! [`Machine::step`] retires exactly `n` instructions, as [`Machine::run`] does with a small
//! budget: an interrupt or exception delivered on the way retires nothing (as the CPU counts),
//! so a step that took one ends one instruction into its handler. A REP string instruction
//! retires once per batch of elements (it restarts itself so that interrupts get in), so it may
//! take several steps.
//!
//! [`Machine::step_event`] is finer: one thing the CPU does, either deliver an interrupt (EIP is
//! then the handler's first instruction, nothing retired), or execute one instruction, which
//! retires it or faults (the exception delivered, EIP at the handler). Breakpoints and stepping
//! over are built on it, so they stop before the first instruction of an interrupt handler too.
//! It drives the devices as the run loop does (serviced at the current virtual time, idle time
//! skipped deadline by deadline while the CPU halts), so a machine driven event by event goes
//! through the same states as one that runs (a test below checks it with timer interrupts),
//! with one difference: the run loop learns of device deadlines only between its slices, so a
//! timer the guest programs inside a slice first ticks at the slice's end, while event by event
//! the devices are serviced before every instruction and it ticks on time. It ends a recording
//! that is being made: a replay repeats whole runs.
//!
//! # Breakpoints
//!
//! The machine's state is what a snapshot saves; breakpoints are the host's, so they live in a
//! [`Breakpoints`] set the host keeps beside the machine and passes in.

use super::{Machine, ResetCause, Stop, MAX_IDLE_SKIP_PER_RUN_NS};
use crate::cpu::{flags, RunExit, Segment, ESP};
use crate::inspect::disasm::{
    self, CodeAt, Decoded, Line, LinearReader, PhysicalMemory, Unreadable,
};
use crate::inspect::registers::Registers;
use crate::inspect::walk::{self, Walk};
use crate::mem::Memory;
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};
use serde::{Deserialize, Serialize};

/// Where the inspector stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Breakpoint {
    /// Before the instruction at this linear address (CS base + EIP).
    Linear(u32),
    /// Before an instruction that reads or writes this I/O port (IN, OUT, INS, OUTS; an access
    /// of 2 or 4 bytes covers the ports from its address up).
    Port(u16),
}

/// A host's breakpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Breakpoints {
    list: Vec<Breakpoint>,
}

impl Breakpoints {
    pub fn new() -> Breakpoints {
        Breakpoints::default()
    }

    /// Add `bp`; false if it was there already.
    pub fn add(&mut self, bp: Breakpoint) -> bool {
        if self.list.contains(&bp) {
            return false;
        }
        self.list.push(bp);
        true
    }

    /// Remove `bp`; false if it was not there.
    pub fn remove(&mut self, bp: Breakpoint) -> bool {
        let before = self.list.len();
        self.list.retain(|b| *b != bp);
        self.list.len() != before
    }

    pub fn clear(&mut self) {
        self.list.clear();
    }

    /// The breakpoints, in the order they were added.
    pub fn list(&self) -> &[Breakpoint] {
        &self.list
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn has_ports(&self) -> bool {
        self.list.iter().any(|b| matches!(b, Breakpoint::Port(_)))
    }
}

/// What one [`Machine::step_event`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// An instruction executed and retired (a REP string instruction: one batch of it).
    Retired,
    /// An external interrupt with this vector was delivered (nothing retired).
    Interrupt(u8),
    /// The instruction faulted: the exception was delivered, nothing retired.
    Exception,
}

/// Why [`Machine::run_to_breakpoint`] or [`Machine::step_over`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pause {
    /// Before an instruction that would hit this breakpoint.
    Breakpoint(Breakpoint),
    /// [`Machine::step_over`] reached the instruction after the one it stepped over.
    Stepped,
    /// The machine stopped first: the instruction budget ran out (`Stop::Budget`, also after
    /// a while of idle time with nothing executed, so the host regains control), the CPU
    /// halted with nothing to wake it, or the machine reset.
    Stop(Stop),
}

/// Physical memory with the machine's ROMs readable: the system BIOS at the top of 4 GiB and
/// the VGA BIOS where its BAR maps it are device memory to the CPU's page map, but reading a
/// ROM changes nothing.
struct WithRoms<'a> {
    mem: &'a Memory,
    /// Physical start and bytes of each ROM.
    roms: Vec<(u32, &'a [u8])>,
}

impl PhysicalMemory for WithRoms<'_> {
    fn byte(&self, physical: u32) -> Result<u8, Unreadable> {
        match self.mem.byte(physical) {
            Err(Unreadable::Device) => self
                .roms
                .iter()
                .find_map(|&(start, bytes)| {
                    bytes.get(physical.wrapping_sub(start) as usize).copied()
                })
                .ok_or(Unreadable::Device),
            other => other,
        }
    }
}

impl Machine {
    /// Run `f` with the machine's physical memory, ROMs included.
    fn with_memory<R>(&self, f: impl FnOnce(&dyn PhysicalMemory) -> R) -> R {
        let board = self.board.borrow();
        let mut roms = Vec::new();
        if let Some(fw) = board.firmware() {
            let bios = fw.bios.bytes();
            roms.push(((bios.len() as u32).wrapping_neg(), bios));
            if let (Some(at), Some(vga)) = (board.vga_rom_at, fw.vga_bios.as_ref()) {
                roms.push((at, vga.bytes()));
            }
        }
        f(&WithRoms {
            mem: &self.cpu.mem,
            roms,
        })
    }

    /// The CPU's registers now.
    pub fn registers(&self) -> Registers {
        Registers::of(&self.cpu)
    }

    /// `count` instructions from linear address `linear`, as code of the current code size
    /// (CS's D bit). An address inside CS is decoded as CS:offset (IPs and branch targets are
    /// offsets, as EIP is), any other with the linear address as IP.
    pub fn disassemble(&self, linear: u32, count: usize) -> Vec<Line> {
        let cs = &self.cpu.segs[Segment::CS as usize];
        let bitness = if cs.big { 32 } else { 16 };
        let offset = linear.wrapping_sub(cs.base);
        let at = if offset <= cs.limit && (cs.big || offset <= 0xFFFF) {
            CodeAt::segment(cs.base, offset, bitness)
        } else {
            CodeAt::linear(linear, bitness)
        };
        self.with_memory(|mem| disasm::disassemble_with(&self.cpu, mem, at, count))
    }

    /// The code around CS:EIP: up to `before` lines before it (a guess: see
    /// [`crate::inspect::disasm`]), the instruction at EIP, `after` lines after it.
    pub fn disassemble_around(&self, before: usize, after: usize) -> Vec<Line> {
        self.with_memory(|mem| disasm::disassemble_around_with(&self.cpu, mem, before, after))
    }

    /// The page-table walk of `linear`, step by step (read-only).
    pub fn translate(&self, linear: u32) -> Walk {
        walk::translate(&self.cpu, linear)
    }

    /// The instruction at CS:EIP, if its bytes can be read.
    fn instruction_at_eip(&self) -> Option<Instruction> {
        self.with_memory(|mem| {
            let mut reader = LinearReader::new(&self.cpu, mem);
            match disasm::decode_at(&mut reader, CodeAt::eip(&self.cpu)) {
                Decoded::Instruction(i, _) if !i.is_invalid() => Some(i),
                _ => None,
            }
        })
    }

    /// `len` bytes of guest memory from linear address `linear`, read as the disassembler reads
    /// code (a read-only page walk: no accessed bits set, no fault, no device read): `None`
    /// for a byte that cannot be read so.
    pub fn read_linear(&self, linear: u32, len: usize) -> Vec<Option<u8>> {
        self.with_memory(|mem| {
            let mut reader = LinearReader::new(&self.cpu, mem);
            (0..len)
                .map(|i| reader.byte(linear.wrapping_add(i as u32)).ok())
                .collect()
        })
    }

    /// Retire exactly `n` instructions (see the module's notes on what a step is): a
    /// [`Machine::run`] of `n`. Returns early as a run does: when the CPU halted with nothing
    /// to wake it (`Stop::Idle`), the machine reset, or idle time passed for a while with the
    /// CPU halted (`Stop::Budget` with fewer instructions retired; step again to wait on).
    pub fn step(&mut self, n: u64) -> Stop {
        self.run(n)
    }

    /// One thing the CPU does: deliver an interrupt, or execute one instruction (see the
    /// module's notes). `Err` when nothing happened: the CPU halted with nothing to wake it
    /// (`Stop::Idle`), idle time passed for a while without an interrupt (`Stop::Budget`;
    /// call again to wait on), or the machine reset.
    pub fn step_event(&mut self) -> Result<Event, Stop> {
        self.end_recording();
        // As the run loop does before each slice: the devices at the current time, then what
        // they signalled (A20, reset).
        self.service_devices()?;
        if self.cpu.halted {
            self.wait_while_halted()?;
        }
        // The CPU's run loop would take a pending interrupt and then run an instruction in the
        // same call: take it here alone.
        if self.cpu.shutdown {
            self.reset();
            return Err(Stop::Reset(ResetCause::TripleFault));
        }
        self.cpu.refresh_intr();
        if self.cpu.intr && self.cpu.flags.sys(flags::IF) && !self.cpu.irq_shadow {
            self.cpu.halted = false;
            let vector = self.cpu.bus.acknowledge_interrupt();
            self.cpu.refresh_intr();
            self.cpu.external_interrupt(vector);
            if self.cpu.shutdown {
                self.reset();
                return Err(Stop::Reset(ResetCause::TripleFault));
            }
            return Ok(Event::Interrupt(vector));
        }
        let before = self.cpu.instructions;
        match self.cpu.run(1) {
            RunExit::Shutdown => {
                self.reset();
                Err(Stop::Reset(ResetCause::TripleFault))
            }
            RunExit::Halted => Err(Stop::Idle {
                next_deadline: None,
            }),
            RunExit::Budget if self.cpu.instructions > before => Ok(Event::Retired),
            RunExit::Budget => Ok(Event::Exception),
        }
    }

    /// The devices serviced at the current virtual time and their signals acted on.
    fn service_devices(&mut self) -> Result<(), Stop> {
        let now = self.now();
        {
            let mut b = self.board.borrow_mut();
            b.service(now);
            b.run_ide_dma(&mut self.cpu.mem);
        }
        match self.handle_signals() {
            Some(stop) => Err(stop),
            None => Ok(()),
        }
    }

    /// The CPU is halted: skip idle time, deadline by deadline, until an interrupt can wake
    /// it (as the run loop does in deterministic mode).
    fn wait_while_halted(&mut self) -> Result<(), Stop> {
        let started = self.now();
        loop {
            let can_wake = self.cpu.flags.sys(flags::IF);
            if can_wake && self.cpu.bus.interrupt_pending() {
                return Ok(());
            }
            let now = self.now();
            let next = self.board.borrow().next_deadline();
            let waiting = self.board.borrow().ide.borrow().waiting_for_host();
            match next {
                Some(d) if can_wake && !waiting => {
                    if now.saturating_sub(started) >= MAX_IDLE_SKIP_PER_RUN_NS {
                        return Err(Stop::Budget);
                    }
                    self.skip_to(d.max(now.saturating_add(1)));
                    self.service_devices()?;
                }
                _ => {
                    return Err(Stop::Idle {
                        next_deadline: if can_wake { next } else { None },
                    })
                }
            }
        }
    }

    /// The breakpoint the instruction at CS:EIP hits, if any.
    pub fn breakpoint_at_eip(&self, breakpoints: &Breakpoints) -> Option<Breakpoint> {
        if breakpoints.is_empty() {
            return None;
        }
        let cs = &self.cpu.segs[Segment::CS as usize];
        let linear = cs.base.wrapping_add(self.cpu.eip);
        if let Some(bp) = breakpoints
            .list()
            .iter()
            .find(|b| **b == Breakpoint::Linear(linear))
        {
            return Some(*bp);
        }
        if !breakpoints.has_ports() {
            return None;
        }
        let (port, size) = self.port_access(&self.instruction_at_eip()?)?;
        breakpoints.list().iter().copied().find(|b| match *b {
            Breakpoint::Port(p) => (port..port + size).contains(&u32::from(p)),
            Breakpoint::Linear(_) => false,
        })
    }

    /// The first port and the size of the access `i` makes, if it is a port instruction that
    /// accesses one (a REP INS/OUTS with a zero count does not).
    fn port_access(&self, i: &Instruction) -> Option<(u32, u32)> {
        let dx = self.cpu.regs[crate::cpu::EDX] & 0xFFFF;
        let port_of = |kind: OpKind| match kind {
            OpKind::Immediate8 => Some(u32::from(i.immediate8())),
            OpKind::Register
                if i.op_register(0) == Register::DX || i.op_register(1) == Register::DX =>
            {
                Some(dx)
            }
            _ => None,
        };
        let size_of = |r: Register| match r {
            Register::AL => 1,
            Register::AX => 2,
            _ => 4,
        };
        match i.mnemonic() {
            Mnemonic::In => Some((port_of(i.op1_kind())?, size_of(i.op0_register()))),
            Mnemonic::Out => Some((port_of(i.op0_kind())?, size_of(i.op1_register()))),
            Mnemonic::Insb
            | Mnemonic::Insw
            | Mnemonic::Insd
            | Mnemonic::Outsb
            | Mnemonic::Outsw
            | Mnemonic::Outsd => {
                if i.has_rep_prefix() || i.has_repne_prefix() {
                    let wide = matches!(
                        (i.op0_kind(), i.op1_kind()),
                        (OpKind::MemoryESEDI, _) | (_, OpKind::MemorySegESI)
                    );
                    let count =
                        self.cpu.regs[crate::cpu::ECX] & if wide { u32::MAX } else { 0xFFFF };
                    if count == 0 {
                        return None;
                    }
                }
                let size = match i.mnemonic() {
                    Mnemonic::Insb | Mnemonic::Outsb => 1,
                    Mnemonic::Insw | Mnemonic::Outsw => 2,
                    _ => 4,
                };
                Some((dx, size))
            }
            _ => None,
        }
    }

    /// Run event by event (see [`Machine::step_event`]) until the instruction at CS:EIP hits a
    /// breakpoint (stopping before it), `max_instructions` retired, or the machine stops. The
    /// instruction at CS:EIP when called runs even if it is at a breakpoint: a run steps off
    /// the breakpoint it sits on.
    pub fn run_to_breakpoint(&mut self, breakpoints: &Breakpoints, max_instructions: u64) -> Pause {
        self.run_events_until(breakpoints, max_instructions, |_| false)
    }

    /// Step over the instruction at CS:EIP: a CALL (near or far), INT n (INT3, INTO, INT1), a
    /// REP string instruction or a LOOP runs until CS:EIP is the next instruction again with
    /// the stack back where it was (so a recursive call's inner return does not count), a
    /// breakpoint is hit on the way, or `max_instructions` retired. Anything else is one
    /// [`Machine::step`].
    pub fn step_over(&mut self, breakpoints: &Breakpoints, max_instructions: u64) -> Pause {
        let Some(instr) = self.instruction_at_eip().filter(steps_over) else {
            return match self.step(1) {
                Stop::Budget => Pause::Stepped,
                stop => Pause::Stop(stop),
            };
        };
        let cs = self.cpu.segs[Segment::CS as usize];
        let mask = if cs.big { u32::MAX } else { 0xFFFF };
        let next = self.cpu.eip.wrapping_add(instr.len() as u32) & mask;
        let ss = self.cpu.segs[Segment::SS as usize].selector;
        let sp_mask = self.cpu.stack_mask();
        let sp = self.cpu.regs[ESP] & sp_mask;
        self.run_events_until(breakpoints, max_instructions, |m| {
            m.cpu.segs[Segment::CS as usize].selector == cs.selector
                && m.cpu.eip == next
                && m.cpu.segs[Segment::SS as usize].selector == ss
                && m.cpu.regs[ESP] & sp_mask >= sp
        })
    }

    /// Run event by event (see [`Machine::step_event`]) until `arrived` says so before an
    /// instruction (`Pause::Stepped`), the instruction at CS:EIP hits a breakpoint (stopping
    /// before it), `max_instructions` retired, or the machine stops. Neither is checked before
    /// the first event: a run steps off the breakpoint it sits on.
    fn run_events_until(
        &mut self,
        breakpoints: &Breakpoints,
        max_instructions: u64,
        arrived: impl Fn(&Machine) -> bool,
    ) -> Pause {
        let end = self.cpu.instructions.saturating_add(max_instructions);
        let mut started = false;
        loop {
            if started {
                if arrived(self) {
                    return Pause::Stepped;
                }
                if let Some(bp) = self.breakpoint_at_eip(breakpoints) {
                    return Pause::Breakpoint(bp);
                }
            }
            if self.cpu.instructions >= end {
                return Pause::Stop(Stop::Budget);
            }
            match self.step_event() {
                Ok(_) => started = true,
                Err(stop) => return Pause::Stop(stop),
            }
        }
    }
}

/// Whether step-over runs `i` to the instruction after it. (iced-x86's own predicates need its
/// instruction-info tables, which this crate leaves out: mnemonics and codes do.)
fn steps_over(i: &Instruction) -> bool {
    let string = matches!(
        i.mnemonic(),
        Mnemonic::Insb
            | Mnemonic::Insw
            | Mnemonic::Insd
            | Mnemonic::Outsb
            | Mnemonic::Outsw
            | Mnemonic::Outsd
            | Mnemonic::Movsb
            | Mnemonic::Movsw
            | Mnemonic::Cmpsb
            | Mnemonic::Cmpsw
            | Mnemonic::Stosb
            | Mnemonic::Stosw
            | Mnemonic::Stosd
            | Mnemonic::Lodsb
            | Mnemonic::Lodsw
            | Mnemonic::Lodsd
            | Mnemonic::Scasb
            | Mnemonic::Scasw
            | Mnemonic::Scasd
    ) || matches!(i.code(), Code::Movsd_m32_m32 | Code::Cmpsd_m32_m32);
    matches!(
        i.mnemonic(),
        Mnemonic::Call
            | Mnemonic::Int
            | Mnemonic::Int1
            | Mnemonic::Int3
            | Mnemonic::Into
            | Mnemonic::Loop
            | Mnemonic::Loope
            | Mnemonic::Loopne
    ) || (string && (i.has_rep_prefix() || i.has_repne_prefix()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{SegCache, EAX, ECX, EDX};
    use crate::machine::MachineConfig;

    /// A machine in real mode at 0000:1000 with `code` there, SS:SP = 0000:F000.
    fn with_code(code: &[u8]) -> Machine {
        let mut m = Machine::new(MachineConfig {
            ram_bytes: 1 << 20,
            ..MachineConfig::default()
        });
        m.cpu.mem.load(0x1000, code);
        m.cpu.segs[Segment::CS as usize] = SegCache::real(0);
        m.cpu.eip = 0x1000;
        m.cpu.regs[ESP] = 0xF000;
        m.cpu.regs[EDX] = 0;
        m
    }

    /// Real-mode code that programs the PIC (IRQ0 at vector 8, only it unmasked) and the PIT
    /// (channel 0, rate generator, count 100: an interrupt every ~84 µs, 8,400 instructions),
    /// then waits in HLT (or a NOP: busy) in a loop; the handler at 0000:2000 counts in DX.
    fn timer_machine(halt: bool) -> Machine {
        #[rustfmt::skip]
        let code = [
            0xFA,                         // 0x1000: cli
            0xB0, 0x11, 0xE6, 0x20,       // ICW1
            0xB0, 0x08, 0xE6, 0x21,       // ICW2: vectors 8-15
            0xB0, 0x04, 0xE6, 0x21,       // ICW3
            0xB0, 0x01, 0xE6, 0x21,       // ICW4: 8086 mode
            0xB0, 0xFE, 0xE6, 0x21,       // OCW1: only IRQ0
            0xC7, 0x06, 0x20, 0x00, 0x00, 0x20, // mov word [0x20], 0x2000
            0xC7, 0x06, 0x22, 0x00, 0x00, 0x00, // mov word [0x22], 0
            0xB0, 0x34, 0xE6, 0x43,       // PIT: channel 0, lobyte/hibyte, mode 2
            0xB0, 0x64, 0xE6, 0x40,       // count 100
            0xB0, 0x00, 0xE6, 0x40,
            0xFB,                         // sti
            if halt { 0xF4 } else { 0x90 }, // 0x102E: hlt (or nop)
            0x41,                         // inc cx
            0xEB, 0xFC,                   // jmp hlt
        ];
        let mut m = with_code(&code);
        // The handler: inc dx; mov al, 0x20; out 0x20, al (EOI); iret.
        m.cpu
            .mem
            .load(0x2000, &[0x42, 0xB0, 0x20, 0xE6, 0x20, 0xCF]);
        m
    }

    /// What the guest can see of a machine: registers, flags, the count, the clock.
    fn seen(m: &Machine) -> (Vec<u32>, u32, u32, u64, u64, bool) {
        (
            m.cpu.regs[..8].to_vec(),
            m.cpu.eip,
            m.cpu.flags.word(),
            m.cpu.instructions,
            m.now(),
            m.cpu.halted,
        )
    }

    #[test]
    fn machine_run_with_a_small_budget_runs_exactly_that_many_instructions() {
        #[rustfmt::skip]
        let code = [
            0xB8, 0x34, 0x12,       // 0x1000: mov ax, 0x1234
            0x89, 0xC3,             // 0x1003: mov bx, ax
            0x40,                   // 0x1005: inc ax
            0x01, 0xD8,             // 0x1006: add ax, bx
            0x66, 0x41,             // 0x1008: inc ecx
            0xF4,                   // 0x100A: hlt
        ];
        for n in 1..=5 {
            let mut m = with_code(&code);
            assert_eq!(m.run(n), Stop::Budget);
            assert_eq!(m.cpu.instructions, n, "Machine::run({n})");
        }
        let mut m = with_code(&code);
        let lengths = [3, 2, 1, 2, 2];
        for len in lengths {
            let eip = m.cpu.eip;
            let count = m.cpu.instructions;
            assert_eq!(m.step(1), Stop::Budget);
            assert_eq!(m.cpu.eip, eip + len, "one instruction of {len} bytes");
            assert_eq!(m.cpu.instructions, count + 1);
        }
        assert_eq!(m.cpu.regs[EAX] & 0xFFFF, 0x1235 + 0x1234);
        assert_eq!(m.registers().eip, 0x100A);
        assert_eq!(m.disassemble_around(0, 0)[0].text, "hlt");
    }

    /// Run the timer program to `n` instructions with `Machine::run` (one call, whose run
    /// ends early when the guest programs the timer) and event by event: the same state.
    /// Returns the number of interrupts taken.
    fn run_both_ways(halt: bool, n: u64) -> u32 {
        let mut run = timer_machine(halt);
        let mut stepped = timer_machine(halt);
        while run.cpu.instructions < n {
            run.run(n - run.cpu.instructions);
        }
        let before = stepped.cpu.regs[EDX];
        let mut interrupts = 0;
        while stepped.cpu.instructions < n {
            match stepped.step_event() {
                Ok(Event::Interrupt(vector)) => {
                    assert_eq!(vector, 8);
                    interrupts += 1;
                }
                Ok(_) | Err(Stop::Budget) => {}
                Err(stop) => panic!("stopped: {stop:?}"),
            }
        }
        assert_eq!(
            stepped.cpu.regs[EDX] - before,
            interrupts,
            "each one counted once"
        );
        assert_eq!(seen(&stepped), seen(&run));
        interrupts
    }

    #[test]
    fn event_by_event_the_guest_sees_what_a_run_shows_it() {
        // Halted between interrupts: idle time skipped to each timer deadline.
        let taken = run_both_ways(true, 3_000);
        assert!(taken > 100, "{taken} timer interrupts");
        // Busy: each interrupt comes between two instructions of the loop (one every 8,400).
        let taken = run_both_ways(false, 50_000);
        // 50,000 instructions at one tick per 8,400, the first once the timer is programmed:
        // six, in the one long run too (before runs ended early at a port access that moves a
        // deadline, that run got its first tick only at its end, and one in all).
        assert_eq!(taken, 6, "one every 8,400 instructions");
    }

    #[test]
    fn a_breakpoint_in_an_interrupt_handler_stops_before_its_first_instruction() {
        let mut m = timer_machine(true);
        let mut bps = Breakpoints::new();
        assert!(bps.add(Breakpoint::Linear(0x2000)));
        assert!(!bps.add(Breakpoint::Linear(0x2000)), "already there");
        assert_eq!(
            m.run_to_breakpoint(&bps, 100_000),
            Pause::Breakpoint(Breakpoint::Linear(0x2000))
        );
        assert_eq!((m.cpu.eip, m.cpu.regs[EDX]), (0x2000, 0), "before its INC");
        assert!(!m.cpu.halted);
        let first = m.cpu.instructions;
        // The next run steps off it and stops at the next interrupt: one HLT, INC CX and JMP
        // later, after the handler's four instructions.
        assert_eq!(
            m.run_to_breakpoint(&bps, 100_000),
            Pause::Breakpoint(Breakpoint::Linear(0x2000))
        );
        assert_eq!(m.cpu.regs[EDX], 1);
        assert_eq!(m.cpu.instructions, first + 4 + 3);
        assert!(bps.remove(Breakpoint::Linear(0x2000)));
        assert!(!bps.remove(Breakpoint::Linear(0x2000)));
        assert_eq!(m.run_to_breakpoint(&bps, 10), Pause::Stop(Stop::Budget));
    }

    #[test]
    fn a_linear_breakpoint_stops_before_its_instruction() {
        #[rustfmt::skip]
        let code = [
            0x31, 0xC9,             // 0x1000: xor cx, cx
            0x41,                   // 0x1002: loop: inc cx
            0x90,                   // 0x1003: nop
            0x40,                   // 0x1004: inc ax
            0xEB, 0xFB,             // 0x1005: jmp loop
        ];
        let mut m = with_code(&code);
        let mut bps = Breakpoints::new();
        bps.add(Breakpoint::Linear(0x1004));
        assert_eq!(bps.list(), &[Breakpoint::Linear(0x1004)]);
        assert_eq!(
            m.run_to_breakpoint(&bps, 1000),
            Pause::Breakpoint(Breakpoint::Linear(0x1004))
        );
        assert_eq!((m.cpu.eip, m.cpu.instructions), (0x1004, 3));
        assert_eq!(m.cpu.regs[EAX], 0, "the INC AX has not run");
        // Again: one turn of the loop (four instructions) later.
        assert_eq!(
            m.run_to_breakpoint(&bps, 1000),
            Pause::Breakpoint(Breakpoint::Linear(0x1004))
        );
        assert_eq!((m.cpu.eip, m.cpu.instructions), (0x1004, 7));
        assert_eq!(m.cpu.regs[ECX] & 0xFFFF, 2);
        // A budget smaller than the way there.
        assert_eq!(m.run_to_breakpoint(&bps, 2), Pause::Stop(Stop::Budget));
        assert_eq!(m.cpu.instructions, 9);
        bps.clear();
        assert!(bps.is_empty());
    }

    #[test]
    fn a_port_breakpoint_stops_before_an_access_of_that_port_only() {
        #[rustfmt::skip]
        let code = [
            0xBA, 0x80, 0x03,       // 0x1000: mov dx, 0x380
            0xB0, 0x41,             // 0x1003: mov al, 'A'
            0xEE,                   // 0x1005: out dx, al (0x380)
            0xBA, 0x80, 0x00,       // 0x1006: mov dx, 0x80
            0xEE,                   // 0x1009: out dx, al (0x80)
            0xBA, 0x7F, 0x00,       // 0x100A: mov dx, 0x7f
            0xEF,                   // 0x100D: out dx, ax (0x7f and 0x80)
            0xE6, 0x81,             // 0x100E: out 0x81, al
            0xE4, 0x80,             // 0x1010: in al, 0x80
            0x66, 0xE5, 0x7E,       // 0x1012: in eax, 0x7e (0x7e-0x81)
            0xE6, 0x7C,             // 0x1015: out 0x7c, al
            0xF4,                   // 0x1017: hlt
        ];
        let mut m = with_code(&code);
        let mut bps = Breakpoints::new();
        bps.add(Breakpoint::Port(0x80));
        let mut stops = Vec::new();
        while let Pause::Breakpoint(bp) = m.run_to_breakpoint(&bps, 100) {
            assert_eq!(bp, Breakpoint::Port(0x80));
            stops.push((m.cpu.eip, m.cpu.instructions));
        }
        assert_eq!(
            stops,
            vec![(0x1009, 4), (0x100D, 6), (0x1010, 8), (0x1012, 9)],
            "not before the OUT to 0x380, the OUT to 0x81 or the one to 0x7c"
        );
        assert!(m.cpu.halted);
    }

    #[test]
    fn step_over_a_call_lands_after_it_with_the_callee_retired() {
        #[rustfmt::skip]
        let code = [
            0xE8, 0x05, 0x00,       // 0x1000: call 0x1008
            0x90,                   // 0x1003: nop
            0xF4,                   // 0x1004: hlt
            0x90, 0x90, 0x90,       // 0x1005: (padding)
            0x40,                   // 0x1008: inc ax
            0x40,                   // 0x1009: inc ax
            0xC3,                   // 0x100A: ret
        ];
        let mut m = with_code(&code);
        let bps = Breakpoints::new();
        assert_eq!(m.step_over(&bps, 1000), Pause::Stepped);
        assert_eq!(m.cpu.eip, 0x1003);
        assert_eq!(m.cpu.instructions, 4, "the CALL, two INCs and the RET");
        assert_eq!(m.cpu.regs[EAX] & 0xFFFF, 2);
        assert_eq!(m.cpu.regs[ESP], 0xF000, "the stack is back");
        // Anything else is one step.
        assert_eq!(m.step_over(&bps, 1000), Pause::Stepped);
        assert_eq!((m.cpu.eip, m.cpu.instructions), (0x1004, 5));
        // A breakpoint inside the callee stops the step over there.
        let mut m = with_code(&code);
        let mut bps = Breakpoints::new();
        bps.add(Breakpoint::Linear(0x1009));
        assert_eq!(
            m.step_over(&bps, 1000),
            Pause::Breakpoint(Breakpoint::Linear(0x1009))
        );
        assert_eq!(m.cpu.instructions, 2);
    }

    #[test]
    fn step_over_a_rep_string_instruction_and_a_loop_runs_them_out() {
        #[rustfmt::skip]
        let code = [
            0xB9, 0x00, 0x10,       // 0x1000: mov cx, 0x1000
            0xBF, 0x00, 0x30,       // 0x1003: mov di, 0x3000
            0xB0, 0xAA,             // 0x1006: mov al, 0xaa
            0xF3, 0xAA,             // 0x1008: rep stosb
            0xB9, 0x05, 0x00,       // 0x100A: mov cx, 5
            0x40,                   // 0x100D: inc ax
            0xE2, 0xFD,             // 0x100E: loop 0x100d
            0xF4,                   // 0x1010: hlt
        ];
        let mut m = with_code(&code);
        let bps = Breakpoints::new();
        m.step(3);
        assert_eq!(m.step_over(&bps, 100_000), Pause::Stepped);
        assert_eq!((m.cpu.eip, m.cpu.regs[ECX] & 0xFFFF), (0x100A, 0));
        assert!(m.cpu.mem.ram[0x3000..0x4000].iter().all(|&b| b == 0xAA));
        m.step(2);
        assert_eq!(m.cpu.eip, 0x100E, "at the LOOP");
        assert_eq!(m.step_over(&bps, 100_000), Pause::Stepped);
        assert_eq!(m.cpu.eip, 0x1010);
        assert_eq!(m.cpu.regs[EAX] & 0xFF, 0xAA + 5);
    }

    #[test]
    fn a_halted_cpu_with_interrupts_off_is_idle() {
        let mut m = with_code(&[0xFA, 0xF4]); // cli; hlt
        assert_eq!(m.step_event(), Ok(Event::Retired));
        assert_eq!(m.step_event(), Ok(Event::Retired));
        assert!(m.cpu.halted);
        assert_eq!(
            m.step_event(),
            Err(Stop::Idle {
                next_deadline: None
            })
        );
        let bps = Breakpoints::new();
        assert!(matches!(
            m.run_to_breakpoint(&bps, 10),
            Pause::Stop(Stop::Idle { .. })
        ));
    }

    #[test]
    fn a_fault_is_an_event_of_its_own() {
        // DIV by zero: #DE through the IVT to a HLT at 0000:0F00.
        let mut m = with_code(&[0x31, 0xC9, 0xF7, 0xF1]); // xor cx, cx; div cx
        m.cpu.mem.load(0, &[0x00, 0x0F, 0x00, 0x00]);
        m.cpu.mem.load(0x0F00, &[0xF4]);
        assert_eq!(m.step_event(), Ok(Event::Retired));
        assert_eq!(m.step_event(), Ok(Event::Exception));
        assert_eq!((m.cpu.eip, m.cpu.instructions), (0x0F00, 1));
        assert_eq!(m.disassemble(0x0F00, 1)[0].text, "hlt");
    }

    #[test]
    fn the_bios_rom_is_readable_at_the_reset_vector() {
        let bios = {
            let mut b = vec![0x90u8; 64 << 10];
            let n = b.len();
            b[n - 16..n - 11].copy_from_slice(&[0xEA, 0x5B, 0xE0, 0x00, 0xF0]);
            b
        };
        let firmware = crate::machine::Firmware::new(
            bios,
            None,
            crate::machine::BootOrder::parse("c").unwrap(),
        )
        .unwrap();
        let m = Machine::new(MachineConfig {
            ram_bytes: 2 << 20,
            firmware: Some(firmware),
            ..MachineConfig::default()
        });
        let lines = m.disassemble_around(0, 1);
        assert_eq!(lines[0].text, "jmp 0xf000:0xe05b");
        assert_eq!((lines[0].linear, lines[0].ip), (0xFFFF_FFF0, 0xFFF0));
        assert_eq!(lines[1].text, "nop");
        // The same ROM below 1 MiB (the BIOS area's ROM side), through a linear address.
        assert_eq!(m.disassemble(0xF_FFF0, 1)[0].text, "jmp 0xf000:0xe05b");
        // A page walk with paging off.
        assert_eq!(m.translate(0xF_FFF0).physical, Some(0xF_FFF0));
    }
}
