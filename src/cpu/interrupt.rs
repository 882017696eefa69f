//! Interrupt and exception delivery: the real-mode IVT path here, the protected-mode IDT path
//! (gates, privilege changes, V86, task gates) in `protected.rs`; double and triple faults.

use super::exception::{self, Exception, Fault};
use super::flags;
use super::seg::Segment;
use super::Cpu;

/// What raised an interrupt; decides privilege checks and what EIP the frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntKind {
    /// A hardware interrupt from the interrupt controller (or NMI).
    External,
    /// A processor exception (fault or trap).
    Exception,
    /// INT n: the gate's DPL is checked against CPL; IOPL-sensitive in V86 mode.
    Software,
    /// INT3 and INTO: software interrupts with the DPL check but not IOPL-sensitive.
    SoftwareTrap,
}

/// DR6 bit set by a single-step trap.
pub const DR6_BS: u32 = 1 << 14;

impl Cpu {
    /// Deliver an exception raised by an instruction, escalating to #DF and to shutdown
    /// (triple fault) as the CPU does.
    pub fn deliver_exception(&mut self, e: Exception) {
        let mut e = e;
        loop {
            if let Some(prev) = self.delivering {
                let benign_pair = !((prev == exception::PF
                    && (e.is_contributory() || e.vector() == exception::PF))
                    || (Exception::new(prev).is_contributory() && e.is_contributory()));
                if prev == exception::DF {
                    self.delivering = None;
                    self.shutdown = true;
                    return;
                }
                if !benign_pair {
                    e = Exception::with_code(exception::DF, 0);
                }
            }
            self.delivering = Some(e.vector());
            let code = if self.protected_mode() {
                e.error_code()
            } else {
                None
            };
            self.count_exception(e.vector(), code);
            match self.interrupt(e.vector(), IntKind::Exception, code) {
                Ok(()) => {
                    self.delivering = None;
                    return;
                }
                Err(next) => e = next,
            }
        }
    }

    /// An interrupt from the interrupt controller.
    pub fn external_interrupt(&mut self, vector: u8) {
        self.halted = false;
        self.counters.external += 1;
        if let Err(e) = self.interrupt(vector, IntKind::External, None) {
            self.deliver_exception(e);
        }
    }

    /// The single-step (TF) trap after an instruction.
    pub(crate) fn single_step_trap(&mut self) {
        self.dr[6] |= DR6_BS;
        self.deliver_exception(Exception::new(exception::DB));
    }

    /// Transfer control through vector `vector` of the IVT or IDT. EIP must already hold the
    /// return address (the faulting instruction for faults, the next one for traps and INT).
    pub fn interrupt(&mut self, vector: u8, kind: IntKind, error_code: Option<u32>) -> Fault {
        self.stop_block = true;
        self.soft_int |= matches!(kind, IntKind::Software | IntKind::SoftwareTrap);
        if self.protected_mode() {
            return self.interrupt_protected(vector, kind, error_code);
        }
        // Real mode: the IVT holds 4-byte offset:segment pairs.
        let entry = vector as u32 * 4;
        if entry + 3 > self.idtr.limit {
            return Err(Exception::gp(0));
        }
        let lin = self.idtr.base.wrapping_add(entry);
        let offset = self.read_lin_system::<2>(lin)?;
        let selector = self.read_lin_system::<2>(lin.wrapping_add(2))? as u16;
        let fl = self.flags.word();
        let cs = self.segs[Segment::CS as usize].selector as u32;
        let ip = self.eip;
        self.push::<2>(fl)?;
        self.push::<2>(cs)?;
        self.push::<2>(ip)?;
        self.flags.set(flags::IF, false);
        self.flags.set(flags::TF, false);
        self.flags.set(flags::AC, false);
        self.flags.set(flags::RF, false);
        self.load_seg(Segment::CS, selector)?;
        self.eip = offset;
        Ok(())
    }
}
