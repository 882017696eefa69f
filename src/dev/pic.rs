//! The two cascaded 8259A programmable interrupt controllers of a PC/AT, plus the PIIX edge/level
//! control registers (ELCR).
//!
//! Master at 0x20-0x21, slave at 0xA0-0xA1 cascaded on master IR2, ELCR at 0x4D0-0x4D1.
//!
//! # Wiring for the board
//!
//! The pair answers at three separate port windows ([`PicPair::RANGES`]); the board maps each
//! of them to the one [`PicPair`], which implements [`Device`] and finds the port from the base
//! and offset of the access. The board also keeps a handle on it for the CPU's INTR/INTA
//! ([`PicPair::interrupt_pending`], [`PicPair::acknowledge`]).
//!
//! After every device access or time step the board feeds `irq.levels()` to
//! [`PicPair::set_irq_levels`] (the port view also does so itself before each access), then asks
//! [`PicPair::interrupt_pending`]; when the CPU takes the interrupt it calls
//! [`PicPair::acknowledge`] and vectors through the number returned.
//!
//! # Triggering
//!
//! Edge-triggered lines (the ELCR bit clear) latch a request into IRR on a rising edge; as on the
//! real 8259A the request is withdrawn if the line falls again before the CPU acknowledges it
//! (which then gets the spurious vector IR7). Level-triggered lines make IRR follow the line.
//! Devices should therefore hold a line high until the guest services it (as ISA hardware does)
//! rather than pulse it within one access. ISA IRQ2 (bit 2 of the levels) is not an input: master
//! IR2 is the slave's INT output.

use serde::{Deserialize, Serialize};

use super::{At, DevCtx, Device};

/// First port of the master's command/data pair.
pub const MASTER_BASE: u16 = 0x20;
/// First port of the slave's command/data pair.
pub const SLAVE_BASE: u16 = 0xA0;
/// First port of the two ELCR bytes (master lines, then slave lines).
pub const ELCR_BASE: u16 = 0x4D0;

/// Offset of the command port (ICW1, OCW2, OCW3 on write; IRR, ISR or poll on read).
const REG_COMMAND: u16 = 0;
/// Offset of the data port (ICW2-4 and OCW1 on write; IMR on read).
const REG_DATA: u16 = 1;

/// Command byte bit 4: the byte is ICW1 (start the initialisation sequence).
const ICW1_INIT: u8 = 0x10;
/// ICW1 bit 0: an ICW4 follows.
const ICW1_IC4: u8 = 0x01;
/// ICW1 bit 1: single controller, no ICW3.
const ICW1_SNGL: u8 = 0x02;
/// ICW1 bit 3: level-triggered mode (disabled on PIIX: the ELCR decides; stored only).
const ICW1_LTIM: u8 = 0x08;
/// ICW2: the vector base (bits 7-3; the low three bits are the IR number).
const ICW2_VECTOR_MASK: u8 = 0xF8;
/// ICW4 bit 0: 8086 mode (8080 mode is accepted and treated alike).
const ICW4_UPM: u8 = 0x01;
/// ICW4 bit 1: automatic EOI at the end of INTA.
const ICW4_AEOI: u8 = 0x02;
/// ICW4 bit 2: in buffered mode, this is the master (stored only).
const ICW4_MS: u8 = 0x04;
/// ICW4 bit 3: buffered mode (stored only; no bus transceivers to drive).
const ICW4_BUF: u8 = 0x08;
/// ICW4 bit 4: special fully nested mode (master: IR2 may nest over itself).
const ICW4_SFNM: u8 = 0x10;
/// Command byte bit 3 (with bit 4 clear): the byte is OCW3, else OCW2.
const OCW3_SELECT: u8 = 0x08;
/// OCW3 bit 0: read ISR (1) or IRR (0) on the next command-port read, if RR is set.
const OCW3_RIS: u8 = 0x01;
/// OCW3 bit 1: act on RIS.
const OCW3_RR: u8 = 0x02;
/// OCW3 bit 2: poll command (the next read acknowledges and returns the highest request).
const OCW3_POLL: u8 = 0x04;
/// OCW3 bit 5: special mask mode on (1) or off (0), if ESMM is set.
const OCW3_SMM: u8 = 0x20;
/// OCW3 bit 6: act on SMM.
const OCW3_ESMM: u8 = 0x40;
/// OCW2 bits 2-0: the IR level for specific commands.
const OCW2_LEVEL: u8 = 0x07;
/// OCW2 command (bits 7-5): clear rotate-in-automatic-EOI.
const OCW2_CLEAR_ROTATE_AEOI: u8 = 0;
/// OCW2 command: non-specific EOI.
const OCW2_EOI: u8 = 1;
/// OCW2 command: no operation.
const OCW2_NOP: u8 = 2;
/// OCW2 command: specific EOI.
const OCW2_SPECIFIC_EOI: u8 = 3;
/// OCW2 command: set rotate-in-automatic-EOI.
const OCW2_SET_ROTATE_AEOI: u8 = 4;
/// OCW2 command: rotate on non-specific EOI.
const OCW2_ROTATE_EOI: u8 = 5;
/// OCW2 command: set priority (the given level becomes the lowest).
const OCW2_SET_PRIORITY: u8 = 6;
/// OCW2 command: rotate on specific EOI.
const OCW2_ROTATE_SPECIFIC_EOI: u8 = 7;
/// Poll-mode read: bit 7 says an interrupt was pending, bits 2-0 its level.
const POLL_INT: u8 = 0x80;
/// The master input the slave's INT output is wired to.
const CASCADE_IR: u8 = 2;
/// The IR level reported for a spurious interrupt.
const SPURIOUS_IR: u8 = 7;
/// ELCR bits the master honours: IRQ0, IRQ1 and IRQ2 are always edge-triggered on PIIX.
const ELCR_MASTER_MASK: u8 = 0xF8;
/// ELCR bits the slave honours: IRQ8 and IRQ13 are always edge-triggered on PIIX.
const ELCR_SLAVE_MASK: u8 = 0xDE;

/// One 8259A.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pic8259 {
    /// Interrupt request register.
    pub irr: u8,
    /// In-service register.
    pub isr: u8,
    /// Interrupt mask register (OCW1).
    pub imr: u8,
    /// Current input line levels (for edge detection).
    pub lines: u8,
    /// Edge (0) / level (1) per input, from the ELCR.
    pub elcr: u8,
    /// ELCR bits that may be set on this chip.
    pub elcr_mask: u8,
    /// The IR level that currently has the highest priority (rotation).
    pub highest_priority: u8,
    /// Vector base from ICW2 (low three bits zero).
    pub vector_base: u8,
    /// Initialisation: 0 = done, 1 = expect ICW2, 2 = expect ICW3, 3 = expect ICW4.
    pub init_step: u8,
    /// Last ICW1.
    pub icw1: u8,
    /// Last ICW3 (master: which inputs have slaves; slave: its cascade id).
    pub icw3: u8,
    /// Last ICW4 (zero if ICW1 said none follows).
    pub icw4: u8,
    /// Command-port reads return ISR (true) or IRR (false).
    pub read_isr: bool,
    /// The next read is a poll.
    pub poll: bool,
    /// Special mask mode.
    pub special_mask: bool,
    /// Rotate priorities on automatic EOI.
    pub rotate_on_aeoi: bool,
    /// This chip is the master (special fully nested mode applies to IR2).
    pub is_master: bool,
}

impl Pic8259 {
    fn new(is_master: bool, elcr_mask: u8) -> Self {
        Pic8259 {
            elcr_mask,
            is_master,
            ..Default::default()
        }
    }

    fn auto_eoi(&self) -> bool {
        self.icw4 & ICW4_AEOI != 0
    }

    /// Whether ICW1 asked for level-triggered mode (ignored: on PIIX the ELCR decides).
    pub fn ltim_requested(&self) -> bool {
        self.icw1 & ICW1_LTIM != 0
    }

    fn single(&self) -> bool {
        self.icw1 & ICW1_SNGL != 0
    }

    /// Drive input `ir` to `high`.
    fn set_line(&mut self, ir: u8, high: bool) {
        let m = 1u8 << (ir & 7);
        if high {
            if self.elcr & m != 0 || self.lines & m == 0 {
                self.irr |= m;
            }
            self.lines |= m;
        } else {
            // A request that goes away before INTA is withdrawn (both modes).
            self.irr &= !m;
            self.lines &= !m;
        }
    }

    fn set_lines(&mut self, levels: u8) {
        for ir in 0..8 {
            self.set_line(ir, levels & (1 << ir) != 0);
        }
    }

    /// The level with the highest priority among `mask`, if any.
    fn highest(&self, mask: u8) -> Option<u8> {
        (0..8)
            .map(|p| (p + self.highest_priority) & 7)
            .find(|&ir| mask & (1 << ir) != 0)
    }

    /// Priority rank of `ir` (0 = highest).
    fn rank(&self, ir: u8) -> u8 {
        ir.wrapping_sub(self.highest_priority) & 7
    }

    /// The request this chip would present to the CPU now (its INT output), if any.
    pub fn pending_ir(&self) -> Option<u8> {
        let req = self.irr & !self.imr;
        if self.special_mask {
            // Special mask mode: every unmasked level not in service may interrupt.
            return self.highest(req & !self.isr);
        }
        let ir = self.highest(req)?;
        let mut in_service = self.isr;
        if self.is_master && self.icw4 & ICW4_SFNM != 0 {
            in_service &= !(1 << CASCADE_IR);
        }
        match self.highest(in_service) {
            Some(cur) if self.rank(cur) <= self.rank(ir) => None,
            _ => Some(ir),
        }
    }

    /// INTA for level `ir`: set ISR (unless auto-EOI), clear an edge request.
    fn intack(&mut self, ir: u8) {
        let m = 1u8 << ir;
        if self.auto_eoi() {
            if self.rotate_on_aeoi {
                self.highest_priority = (ir + 1) & 7;
            }
        } else {
            self.isr |= m;
        }
        if self.elcr & m == 0 {
            self.irr &= !m;
        }
    }

    /// A poll-mode read: acknowledge and report the highest request.
    fn poll_read(&mut self) -> u8 {
        self.poll = false;
        match self.pending_ir() {
            Some(ir) => {
                self.intack(ir);
                POLL_INT | ir
            }
            None => 0,
        }
    }

    fn read(&mut self, reg: u16) -> u8 {
        if self.poll {
            return self.poll_read();
        }
        match reg {
            // Guest reads the register OCW3 selected.
            REG_COMMAND if self.read_isr => self.isr,
            REG_COMMAND => self.irr,
            // Guest reads the interrupt mask.
            REG_DATA => self.imr,
            _ => 0xFF,
        }
    }

    fn write(&mut self, reg: u16, v: u8) {
        match reg {
            // Guest starts initialisation (ICW1).
            REG_COMMAND if v & ICW1_INIT != 0 => {
                self.icw1 = v;
                self.init_step = 1;
                self.imr = 0;
                self.isr = 0;
                // Edge-sense latches reset: an edge line must go low then high again.
                self.irr = self.lines & self.elcr;
                self.highest_priority = 0;
                self.read_isr = false;
                self.poll = false;
                self.special_mask = false;
                self.rotate_on_aeoi = false;
                if v & ICW1_IC4 == 0 {
                    self.icw4 = 0;
                }
            }
            // Guest writes OCW3 (register select, poll, special mask mode).
            REG_COMMAND if v & OCW3_SELECT != 0 => {
                if v & OCW3_RR != 0 {
                    self.read_isr = v & OCW3_RIS != 0;
                }
                self.poll = v & OCW3_POLL != 0;
                if v & OCW3_ESMM != 0 {
                    self.special_mask = v & OCW3_SMM != 0;
                }
            }
            // Guest writes OCW2 (EOI and priority rotation).
            REG_COMMAND => self.ocw2(v),
            // Guest writes the vector base (ICW2).
            REG_DATA if self.init_step == 1 => {
                self.vector_base = v & ICW2_VECTOR_MASK;
                self.init_step = match (self.single(), self.icw1 & ICW1_IC4 != 0) {
                    (false, _) => 2,
                    (true, true) => 3,
                    (true, false) => 0,
                };
            }
            // Guest writes the cascade configuration (ICW3).
            REG_DATA if self.init_step == 2 => {
                self.icw3 = v;
                self.init_step = if self.icw1 & ICW1_IC4 != 0 { 3 } else { 0 };
            }
            // Guest writes the mode (ICW4: 8086, auto-EOI, buffered, fully nested).
            REG_DATA if self.init_step == 3 => {
                self.icw4 = v & (ICW4_UPM | ICW4_AEOI | ICW4_MS | ICW4_BUF | ICW4_SFNM);
                self.init_step = 0;
            }
            // Guest masks/unmasks lines (OCW1).
            REG_DATA => self.imr = v,
            _ => {}
        }
    }

    fn ocw2(&mut self, v: u8) {
        let level = v & OCW2_LEVEL;
        match v >> 5 {
            // Guest turns rotation in automatic-EOI mode off or on.
            OCW2_CLEAR_ROTATE_AEOI => self.rotate_on_aeoi = false,
            OCW2_SET_ROTATE_AEOI => self.rotate_on_aeoi = true,
            // Guest ends the highest-priority in-service interrupt (optionally rotating).
            cmd @ (OCW2_EOI | OCW2_ROTATE_EOI) => {
                if let Some(ir) = self.highest(self.isr) {
                    self.isr &= !(1 << ir);
                    if cmd == OCW2_ROTATE_EOI {
                        self.highest_priority = (ir + 1) & 7;
                    }
                }
            }
            // Guest ends a named in-service interrupt.
            OCW2_SPECIFIC_EOI => self.isr &= !(1 << level),
            // Guest ends a named interrupt and makes it the lowest priority.
            OCW2_ROTATE_SPECIFIC_EOI => {
                self.isr &= !(1 << level);
                self.highest_priority = (level + 1) & 7;
            }
            // Guest makes a level the lowest priority.
            OCW2_SET_PRIORITY => self.highest_priority = (level + 1) & 7,
            // Guest sends the no-operation command.
            OCW2_NOP => {}
            _ => {}
        }
    }

    fn write_elcr(&mut self, v: u8) {
        self.elcr = v & self.elcr_mask;
        // Lines that became level-triggered request while they are high.
        self.irr |= self.lines & self.elcr;
    }
}

/// The master/slave 8259A pair with the ELCR, as wired on a PC/AT with a PIIX south bridge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicPair {
    /// The master (IRQ0-7).
    pub master: Pic8259,
    /// The slave (IRQ8-15), on master IR2.
    pub slave: Pic8259,
}

impl Default for PicPair {
    fn default() -> Self {
        Self::new()
    }
}

impl PicPair {
    /// The port windows the pair answers at, as (first port, length).
    pub const RANGES: [(u16, u32); 3] = [(MASTER_BASE, 2), (SLAVE_BASE, 2), (ELCR_BASE, 2)];

    /// Both chips at power-on: uninitialised, all lines edge-triggered.
    pub fn new() -> Self {
        PicPair {
            master: Pic8259::new(true, ELCR_MASTER_MASK),
            slave: Pic8259::new(false, ELCR_SLAVE_MASK),
        }
    }

    /// Feed the slave's INT output into master IR2 (or ISA IRQ2 if the master is single).
    fn cascade(&mut self) {
        if !self.master.single() {
            let int = self.slave.pending_ir().is_some();
            self.master.set_line(CASCADE_IR, int);
        }
    }

    /// New levels of the 16 ISA IRQ lines (bit n = IRQ n), from [`super::IrqLines`].
    pub fn set_irq_levels(&mut self, levels: u16) {
        let [lo, hi] = levels.to_le_bytes();
        self.slave.set_lines(hi);
        if self.master.single() {
            self.master.set_lines(lo);
        } else {
            for ir in (0..8).filter(|&ir| ir != CASCADE_IR) {
                self.master.set_line(ir, lo & (1 << ir) != 0);
            }
        }
        self.cascade();
    }

    /// Whether an unmasked request is latched that the CPU has not taken yet (INTR may be low
    /// meanwhile: a request of the same or higher priority is in service).
    pub fn request_waiting(&self) -> bool {
        let cascade_open = self.master.imr & (1 << 2) == 0;
        let slave = cascade_open && self.slave.irr & !self.slave.imr != 0;
        self.master.irr & !self.master.imr & !(1 << 2) != 0 || slave
    }

    /// The INTR output to the CPU.
    pub fn interrupt_pending(&self) -> bool {
        self.master.pending_ir().is_some()
    }

    /// The CPU's INTA cycle: returns the vector and updates ISR/IRR. With nothing pending (the
    /// request went away) this is a spurious IRQ7 (or IRQ15, with master IR2 in service).
    pub fn acknowledge(&mut self) -> u8 {
        self.acknowledge_line().0
    }

    /// [`PicPair::acknowledge`], also saying which IRQ line (0-15) the vector serves, or
    /// `None` for a spurious interrupt (the request went away before the INTA cycle).
    pub fn acknowledge_line(&mut self) -> (u8, Option<u8>) {
        let taken = match self.master.pending_ir() {
            Some(CASCADE_IR) if !self.master.single() => {
                self.master.intack(CASCADE_IR);
                match self.slave.pending_ir() {
                    Some(ir) => {
                        self.slave.intack(ir);
                        (self.slave.vector_base | ir, Some(8 + ir))
                    }
                    None => (self.slave.vector_base | SPURIOUS_IR, None),
                }
            }
            Some(ir) => {
                self.master.intack(ir);
                (self.master.vector_base | ir, Some(ir))
            }
            None => (self.master.vector_base | SPURIOUS_IR, None),
        };
        self.cascade();
        taken
    }

    /// A guest byte read at absolute port `port` (0xFF outside the pair's windows).
    pub fn read_port(&mut self, port: u16) -> u8 {
        let v = match port {
            0x20..=0x21 => self.master.read(port - MASTER_BASE),
            0xA0..=0xA1 => self.slave.read(port - SLAVE_BASE),
            // Guest reads the edge/level control of IRQ0-7 or IRQ8-15.
            0x4D0 => self.master.elcr,
            0x4D1 => self.slave.elcr,
            _ => 0xFF,
        };
        self.cascade();
        v
    }

    /// A guest byte write at absolute port `port` (ignored outside the pair's windows).
    pub fn write_port(&mut self, port: u16, v: u8) {
        match port {
            0x20..=0x21 => self.master.write(port - MASTER_BASE, v),
            0xA0..=0xA1 => self.slave.write(port - SLAVE_BASE, v),
            // Guest sets which of IRQ0-7 / IRQ8-15 are level-triggered.
            0x4D0 => self.master.write_elcr(v),
            0x4D1 => self.slave.write_elcr(v),
            _ => {}
        }
        self.cascade();
    }
}

/// The pair on the port bus, mapped at each of [`PicPair::RANGES`]; an access reaches the port
/// its range's base and offset name. Wider accesses read or write consecutive ports, low byte
/// first.
impl Device for PicPair {
    fn read(&mut self, at: At, size: u8, ctx: &mut DevCtx) -> u32 {
        self.set_irq_levels(ctx.irq.levels());
        let port = at.addr() as u16;
        (0..size.min(4)).fold(0, |acc, i| {
            acc | u32::from(self.read_port(port.wrapping_add(i.into()))) << (8 * i)
        })
    }

    fn write(&mut self, at: At, size: u8, value: u32, ctx: &mut DevCtx) {
        self.set_irq_levels(ctx.irq.levels());
        let port = at.addr() as u16;
        for (i, byte) in value
            .to_le_bytes()
            .into_iter()
            .take(size.into())
            .enumerate()
        {
            self.write_port(port.wrapping_add(i as u16), byte);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::testing::Rig;

    /// Linux's init_8259A(): mask all, ICW1-4 on both chips (vectors 0x30/0x38), restore masks.
    fn linux_init(pic: &mut PicPair, auto_eoi: bool) {
        pic.write_port(0x21, 0xFF);
        pic.write_port(0xA1, 0xFF);
        pic.write_port(0x20, 0x11);
        pic.write_port(0x21, 0x30);
        pic.write_port(0x21, 1 << 2);
        pic.write_port(0x21, if auto_eoi { 0x03 } else { 0x01 });
        pic.write_port(0xA0, 0x11);
        pic.write_port(0xA1, 0x38);
        pic.write_port(0xA1, 0x02);
        pic.write_port(0xA1, 0x01);
        pic.write_port(0x21, 0x00);
        pic.write_port(0xA1, 0x00);
    }

    fn isr(pic: &mut PicPair, port: u16) -> u8 {
        pic.write_port(port, 0x0B);
        pic.read_port(port)
    }

    fn irr(pic: &mut PicPair, port: u16) -> u8 {
        pic.write_port(port, 0x0A);
        pic.read_port(port)
    }

    #[test]
    fn linux_init_timer_interrupt_and_specific_eoi() {
        let mut pic = PicPair::new();
        linux_init(&mut pic, false);
        assert_eq!(pic.master.vector_base, 0x30);
        assert_eq!(pic.slave.vector_base, 0x38);
        assert_eq!(pic.master.init_step, 0);
        assert!(!pic.interrupt_pending());

        pic.set_irq_levels(0x0001);
        assert!(pic.interrupt_pending());
        assert_eq!(irr(&mut pic, 0x20), 0x01);
        assert_eq!(pic.acknowledge(), 0x30);
        assert_eq!(isr(&mut pic, 0x20), 0x01);
        assert_eq!(irr(&mut pic, 0x20), 0x00);
        assert!(!pic.interrupt_pending());

        // mask_and_ack_8259A: read IMR, write it back, specific EOI.
        let imr = pic.read_port(0x21);
        pic.write_port(0x21, imr);
        pic.write_port(0x20, 0x60);
        assert_eq!(isr(&mut pic, 0x20), 0x00);
        // The line is still high: no new edge, no new interrupt.
        assert!(!pic.interrupt_pending());
        pic.set_irq_levels(0);
        pic.set_irq_levels(1);
        assert_eq!(pic.acknowledge(), 0x30);
    }

    #[test]
    fn slave_interrupt_goes_through_the_cascade() {
        let mut pic = PicPair::new();
        linux_init(&mut pic, false);
        pic.set_irq_levels(1 << 12);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), 0x3C);
        assert_eq!(isr(&mut pic, 0x20), 0x04);
        assert_eq!(isr(&mut pic, 0xA0), 0x10);
        pic.write_port(0xA0, 0x64);
        pic.write_port(0x20, 0x62);
        assert_eq!(isr(&mut pic, 0x20), 0);
        assert_eq!(isr(&mut pic, 0xA0), 0);
        assert!(!pic.interrupt_pending());
    }

    #[test]
    fn higher_priority_nests_lower_waits_for_eoi() {
        let mut pic = PicPair::new();
        linux_init(&mut pic, false);
        pic.set_irq_levels(1 << 1);
        assert_eq!(pic.acknowledge(), 0x31);
        pic.set_irq_levels((1 << 1) | (1 << 3));
        assert!(!pic.interrupt_pending(), "IRQ3 must wait behind IRQ1");
        pic.set_irq_levels((1 << 1) | (1 << 3) | 1);
        assert_eq!(pic.acknowledge(), 0x30, "IRQ0 nests over IRQ1");
        assert_eq!(isr(&mut pic, 0x20), 0x03);
        pic.write_port(0x20, 0x20); // non-specific EOI ends IRQ0
        assert!(!pic.interrupt_pending());
        pic.write_port(0x20, 0x20); // ends IRQ1
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), 0x33);
    }

    #[test]
    fn elcr_level_lines_follow_level_and_forced_edge_bits() {
        let mut pic = PicPair::new();
        linux_init(&mut pic, false);
        pic.write_port(0x4D0, 0xFF);
        pic.write_port(0x4D1, 0xFF);
        assert_eq!(pic.read_port(0x4D0), 0xF8);
        assert_eq!(pic.read_port(0x4D1), 0xDE);
        // IRQ11 level-triggered: still high after EOI, so it interrupts again.
        pic.set_irq_levels(1 << 11);
        assert_eq!(pic.acknowledge(), 0x3B);
        pic.write_port(0xA0, 0x20);
        pic.write_port(0x20, 0x20);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), 0x3B);
        pic.write_port(0xA0, 0x20);
        pic.write_port(0x20, 0x20);
        pic.set_irq_levels(0);
        assert!(!pic.interrupt_pending());
        // IRQ4 back to edge: one interrupt per rising edge.
        pic.write_port(0x4D0, 0x00);
        pic.set_irq_levels(1 << 4);
        assert_eq!(pic.acknowledge(), 0x34);
        pic.write_port(0x20, 0x20);
        assert!(!pic.interrupt_pending());
    }

    #[test]
    fn vanished_request_gives_spurious_irq7_without_isr() {
        let mut pic = PicPair::new();
        linux_init(&mut pic, false);
        pic.set_irq_levels(1 << 5);
        assert!(pic.interrupt_pending());
        pic.set_irq_levels(0);
        assert_eq!(pic.acknowledge(), 0x37);
        assert_eq!(isr(&mut pic, 0x20), 0);
    }

    #[test]
    fn spurious_slave_irq15_sets_master_cascade_isr() {
        let mut pic = PicPair::new();
        linux_init(&mut pic, false);
        // The master has latched IR2 but the slave's request has gone.
        pic.master.irr |= 1 << 2;
        assert_eq!(pic.acknowledge(), 0x3F);
        assert_eq!(pic.master.isr, 0x04);
        assert_eq!(pic.slave.isr, 0x00);
    }

    #[test]
    fn poll_mode_acknowledges_and_reports() {
        let mut pic = PicPair::new();
        linux_init(&mut pic, false);
        pic.write_port(0x20, 0x0C);
        assert_eq!(pic.read_port(0x20), 0x00);
        pic.set_irq_levels(1 << 6);
        pic.write_port(0x20, 0x0C);
        assert_eq!(pic.read_port(0x20), 0x86);
        assert_eq!(isr(&mut pic, 0x20), 0x40);
        assert!(!pic.interrupt_pending());
    }

    #[test]
    fn auto_eoi_leaves_isr_clear() {
        let mut pic = PicPair::new();
        linux_init(&mut pic, true);
        pic.set_irq_levels(1);
        assert_eq!(pic.acknowledge(), 0x30);
        assert_eq!(isr(&mut pic, 0x20), 0);
    }

    #[test]
    fn rotation_and_set_priority() {
        let mut pic = PicPair::new();
        linux_init(&mut pic, false);
        // IRQ3 lowest priority: IRQ4 now beats IRQ0.
        pic.write_port(0x20, 0xC3);
        pic.set_irq_levels((1 << 4) | 1);
        assert_eq!(pic.acknowledge(), 0x34);
        // Rotate on non-specific EOI: IRQ4 becomes lowest, IRQ5 highest.
        pic.write_port(0x20, 0xA0);
        assert_eq!(pic.master.highest_priority, 5);
        assert_eq!(pic.acknowledge(), 0x30);
        // Rotate on specific EOI of IRQ0.
        pic.write_port(0x20, 0xE0);
        assert_eq!(pic.master.highest_priority, 1);
        assert_eq!(isr(&mut pic, 0x20), 0);
    }

    #[test]
    fn special_mask_mode_lets_lower_levels_in() {
        let mut pic = PicPair::new();
        linux_init(&mut pic, false);
        pic.set_irq_levels(1);
        assert_eq!(pic.acknowledge(), 0x30);
        pic.write_port(0x21, 0x01); // mask IRQ0 (in service)
        pic.write_port(0x20, 0x68); // special mask mode on
        pic.set_irq_levels(1 | (1 << 3));
        assert_eq!(pic.acknowledge(), 0x33);
        assert_eq!(isr(&mut pic, 0x20), 0x09);
        pic.write_port(0x20, 0x48); // special mask mode off
        assert!(!pic.master.special_mask);
    }

    #[test]
    fn icw1_resets_mask_and_requires_new_edge() {
        let mut pic = PicPair::new();
        pic.set_irq_levels(1);
        linux_init(&mut pic, false);
        assert!(
            !pic.interrupt_pending(),
            "line high through init is not an edge"
        );
        pic.write_port(0x21, 0x5A);
        pic.write_port(0x20, 0x11);
        assert_eq!(pic.read_port(0x21), 0x00);
        assert_eq!(pic.master.init_step, 1);
    }

    #[test]
    fn each_window_reaches_its_ports_and_syncs_lines() {
        let master = u32::from(MASTER_BASE);
        let slave = u32::from(SLAVE_BASE);
        let elcr = u32::from(ELCR_BASE);
        let mut r = Rig::new(PicPair::new(), master);
        for (port, v) in [(0x20, 0x11), (0x21, 0x08), (0x21, 0x04), (0x21, 0x01)] {
            r.write_at(master, port - master, 1, v);
        }
        r.write_at(slave, 1, 1, 0xA5);
        r.write_at(master, 1, 1, 0x3C);
        assert_eq!(r.read_at(slave, 1, 1), 0xA5);
        // A word read at 0x20 gives IRR then IMR.
        r.irq.set(1, true);
        assert_eq!(r.read_at(master, 0, 2), 0x3C02);
        r.write_at(elcr, 1, 1, 0xFF);
        assert_eq!(r.read_at(elcr, 0, 2), 0xDE00);
        assert_eq!(r.dev.acknowledge(), 0x09);
    }

    #[test]
    fn any_guest_input_is_harmless() {
        let mut pic = PicPair::new();
        for port in [0x20u16, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1, 0x22, 0xFFFF] {
            for v in 0..=255u8 {
                pic.write_port(port, v);
                pic.read_port(port);
                pic.set_irq_levels(u16::from(v) * 0x0101);
                if pic.interrupt_pending() {
                    pic.acknowledge();
                }
            }
        }
        let mut r = Rig::new(pic, 0xFFFF);
        for size in 0..=8 {
            r.write(0xFFFF, size, u32::MAX);
            r.read(0xFFFF, size);
        }
    }
}
