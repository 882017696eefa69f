//! System control ports: port B (0x61), port A (0x92) and the POST code port (0x80).
//!
//! # Port B lives with the PIT
//!
//! Port 0x61 gates PIT channel 2 (bit 0) and reads its output (bit 5), so its state is part of
//! the [`Pit`]: channel 2's gate is the PIT's, and the other latched bits are the [`PortB`]
//! stored in [`Pit::port_b`]. One snapshot of the PIT holds the whole timer/speaker path and no
//! device reaches into another. The board maps [`super::pit::PORT_B`] to the PIT, which serves
//! it with [`Pit::port_b_read`] and [`Pit::port_b_write`].
//!
//! # Port A and the POST port
//!
//! [`PortA`] (0x92, `bus.map(0x92, 1, ..)`) and [`PostCode`] (0x80, `bus.map(0x80, 1, ..)`) are
//! ordinary single-port devices. Port A reports A20 through [`BoardSignals::a20`] on every write
//! (so it can re-enable A20 after the i8042 turned it off) and pulses [`BoardSignals::reset`] when
//! bit 0 goes from 0 to 1.
//!
//! [`BoardSignals::a20`]: super::BoardSignals::a20
//! [`BoardSignals::reset`]: super::BoardSignals::reset

use serde::{Deserialize, Serialize};

use super::pit::Pit;
use super::{all_ones, At, DevCtx, Device, Nanos};

/// Port B bit 0: PIT channel 2 gate.
pub const PORTB_TIMER2_GATE: u8 = 0x01;
/// Port B bit 1: speaker data enable (speaker sounds channel 2's output when set).
pub const PORTB_SPEAKER_DATA: u8 = 0x02;
/// Port B bit 2: parity (SERR#) check disable.
pub const PORTB_PARITY_CHECK_DISABLE: u8 = 0x04;
/// Port B bit 3: I/O channel check (IOCHK#) disable.
pub const PORTB_IOCHK_DISABLE: u8 = 0x08;
/// Port B bit 4 (read-only): refresh request toggle.
pub const PORTB_REFRESH_TOGGLE: u8 = 0x10;
/// Port B bit 5 (read-only): PIT channel 2 output.
pub const PORTB_TIMER2_OUT: u8 = 0x20;
/// Port B bit 6 (read-only): I/O channel check occurred (never, here).
pub const PORTB_IOCHK: u8 = 0x40;
/// Port B bit 7 (read-only): parity error occurred (never, here).
pub const PORTB_PARITY_ERROR: u8 = 0x80;
/// Port B bits kept by [`PortB`] (bit 0 is the PIT's channel 2 gate).
const PORTB_LATCHED: u8 = PORTB_SPEAKER_DATA | PORTB_PARITY_CHECK_DISABLE | PORTB_IOCHK_DISABLE;
/// The refresh toggle flips once per DRAM refresh request, every 15.085 µs (18 PIT clocks).
pub const REFRESH_TOGGLE_NS: Nanos = 15_085;

/// Port A bit 0: fast reset (a 0 to 1 transition resets the CPU).
pub const PORTA_FAST_RESET: u8 = 0x01;
/// Port A bit 1: fast A20 gate.
pub const PORTA_A20: u8 = 0x02;

/// Port B's latched bits other than the channel 2 gate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortB {
    /// Bits 1-3 as last written.
    pub latched: u8,
}

impl PortB {
    /// Whether the guest has enabled the speaker data path (bit 1).
    pub fn speaker_data(&self) -> bool {
        self.latched & PORTB_SPEAKER_DATA != 0
    }
}

/// The level of the refresh toggle (port B bit 4) at virtual time `now`.
pub fn refresh_toggle(now: Nanos) -> bool {
    (now / REFRESH_TOGGLE_NS) & 1 != 0
}

/// Port 0x61, served by the [`Pit`] that owns its state.
impl Pit {
    /// The port's value at virtual time `now`.
    pub fn port_b_value(&self, now: Nanos) -> u8 {
        let mut v = self.port_b.latched & PORTB_LATCHED;
        if self.gate2() {
            v |= PORTB_TIMER2_GATE;
        }
        if refresh_toggle(now) {
            v |= PORTB_REFRESH_TOGGLE;
        }
        if self.out2(now) {
            v |= PORTB_TIMER2_OUT;
        }
        v
    }

    /// A guest read at `offset` in port B's one-port range.
    pub fn port_b_read(&mut self, offset: u32, ctx: &mut DevCtx) -> u32 {
        match offset {
            // Guest polls the channel 2 output or the refresh toggle (delay loops, calibration).
            0 => self.port_b_value(ctx.now).into(),
            _ => 0xFF,
        }
    }

    /// A guest write at `offset` in port B's one-port range.
    pub fn port_b_write(&mut self, offset: u32, value: u32, ctx: &mut DevCtx) {
        if offset != 0 {
            return;
        }
        // Guest sets the channel 2 gate, the speaker enable and the check disables.
        let v = value as u8;
        self.port_b.latched = v & PORTB_LATCHED;
        self.set_gate2(v & PORTB_TIMER2_GATE != 0, ctx.now);
    }
}

/// PS/2 system control port A (0x92).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortA {
    /// The value last written.
    pub value: u8,
}

impl Device for PortA {
    fn read(&mut self, at: At, _size: u8, _ctx: &mut DevCtx) -> u32 {
        match at.offset {
            // Guest reads the A20/reset bits back (before a read-modify-write).
            0 => self.value.into(),
            _ => 0xFF,
        }
    }

    fn write(&mut self, at: At, _size: u8, value: u32, ctx: &mut DevCtx) {
        if at.offset != 0 {
            return;
        }
        // Guest switches A20 and/or requests a fast reset.
        let v = value as u8;
        let old = self.value;
        self.value = v;
        ctx.board.a20 = Some(v & PORTA_A20 != 0);
        if v & PORTA_FAST_RESET != 0 && old & PORTA_FAST_RESET == 0 {
            ctx.board.reset = true;
        }
    }
}

/// The POST diagnostic port (0x80): keeps the last code written, which reads back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostCode {
    /// The last code written.
    pub last: u8,
}

impl Device for PostCode {
    fn read(&mut self, at: At, _size: u8, _ctx: &mut DevCtx) -> u32 {
        match at.offset {
            // Guest reads the last POST code back.
            0 => self.last.into(),
            _ => 0xFF,
        }
    }

    fn write(&mut self, at: At, _size: u8, value: u32, _ctx: &mut DevCtx) {
        // Firmware reports progress (or Linux's outb_p delays).
        if at.offset == 0 {
            self.last = value as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::pit::{ticks_to_ns, PORT_B};
    use super::*;

    type Rig = crate::dev::testing::Rig<Pit>;

    fn rig() -> Rig {
        Rig::new(Pit::new(), 0x40)
    }

    impl Rig {
        /// OUT to port `port`: 0x61 (port B), else the PIT's 0x40-0x43.
        fn port_out(&mut self, port: u16, v: u8) {
            match port {
                PORT_B => self.write_at(PORT_B.into(), 0, 1, v.into()),
                p => self.write_at(0x40, u32::from(p) - 0x40, 1, v.into()),
            }
        }
        /// IN from port `port`: 0x61 (port B), else the PIT's 0x40-0x43.
        fn port_in(&mut self, port: u16) -> u8 {
            (match port {
                PORT_B => self.read_at(PORT_B.into(), 0, 1),
                p => self.read_at(0x40, u32::from(p) - 0x40, 1),
            }) as u8
        }
    }

    #[test]
    fn linux_pit_calibration_polls_channel2_output() {
        let mut r = rig();
        r.now = 5_000;
        // pit_calibrate_tsc(): gate high, speaker off, mode 0, 50 ms.
        let v = (r.port_in(0x61) & !PORTB_SPEAKER_DATA) | PORTB_TIMER2_GATE;
        r.port_out(0x61, v);
        r.port_out(0x43, 0xB0);
        let latch: u16 = 59659;
        r.port_out(0x42, latch as u8);
        r.port_out(0x42, (latch >> 8) as u8);
        let t0 = 5; // tick of the write; loaded at t0 + 1
        r.now = ticks_to_ns(t0 + latch as u64);
        assert_eq!(r.port_in(0x61) & PORTB_TIMER2_OUT, 0);
        assert_eq!(r.port_in(0x61) & PORTB_TIMER2_GATE, PORTB_TIMER2_GATE);
        r.now = ticks_to_ns(t0 + 1 + latch as u64);
        assert_eq!(r.port_in(0x61) & PORTB_TIMER2_OUT, PORTB_TIMER2_OUT);
        // About 50 ms of virtual time.
        assert_eq!(r.now / 1_000_000, 50);
        // Channel 2 never touches IRQ0.
        assert!(!r.irq.get(0));
    }

    #[test]
    fn quick_pit_calibrate_reads_the_msb_going_down() {
        let mut r = rig();
        r.port_out(0x61, PORTB_TIMER2_GATE);
        r.port_out(0x43, 0xB0);
        r.port_out(0x42, 0xFF);
        r.port_out(0x42, 0xFF);
        for k in [1u64, 256, 512, 10_000] {
            r.now = ticks_to_ns(k + 1);
            r.port_in(0x42); // LSB
            let msb = r.port_in(0x42);
            assert_eq!(u64::from(msb), (0xFFFF - k) >> 8);
        }
    }

    #[test]
    fn gate_low_holds_channel2() {
        let mut r = rig();
        r.port_out(0x43, 0xB0);
        r.port_out(0x42, 100);
        r.port_out(0x42, 0);
        r.now = ticks_to_ns(500);
        assert_eq!(
            r.port_in(0x61) & PORTB_TIMER2_OUT,
            0,
            "gate low: no counting"
        );
        r.port_out(0x61, PORTB_TIMER2_GATE); // counting resumes at tick 501
        r.now = ticks_to_ns(600);
        assert_eq!(r.port_in(0x61) & PORTB_TIMER2_OUT, 0);
        r.now = ticks_to_ns(601);
        assert_eq!(r.port_in(0x61) & PORTB_TIMER2_OUT, PORTB_TIMER2_OUT);
    }

    #[test]
    fn port_b_bits_and_refresh_toggle() {
        let mut r = rig();
        r.port_out(0x61, 0xFF);
        assert_eq!(r.port_in(0x61) & 0xCF, 0x0F);
        assert!(r.dev.port_b.speaker_data());
        let a = r.port_in(0x61) & PORTB_REFRESH_TOGGLE;
        r.now += REFRESH_TOGGLE_NS;
        let b = r.port_in(0x61) & PORTB_REFRESH_TOGGLE;
        r.now += REFRESH_TOGGLE_NS;
        let c = r.port_in(0x61) & PORTB_REFRESH_TOGGLE;
        assert_ne!(a, b);
        assert_eq!(a, c);
        r.port_out(0x61, 0x00);
        assert_eq!(r.port_in(0x61) & 0x0F, 0);
    }

    #[test]
    fn port_a_drives_a20_and_reset() {
        let mut pa = crate::dev::testing::Rig::new(PortA::default(), 0x92);
        let v = pa.read(0, 1);
        pa.write(0, 1, v | 0x02);
        assert_eq!(pa.board.a20, Some(true));
        assert!(!pa.board.reset);
        assert_eq!(pa.read(0, 1), 0x02);
        pa.write(0, 1, 0x03);
        assert!(pa.board.reset);
        pa.board = Default::default();
        pa.write(0, 1, 0x01); // bit 0 already set: no new reset
        assert!(!pa.board.reset);
        assert_eq!(pa.board.a20, Some(false));
        pa.write(0, 1, 0x00);
        pa.write(0, 1, 0x01);
        assert!(pa.board.reset);
    }

    #[test]
    fn post_code_reads_back() {
        let mut p = crate::dev::testing::Rig::new(PostCode::default(), 0x80);
        p.write(0, 1, 0x55);
        assert_eq!(p.read(0, 1), 0x55);
        p.write(0, 2, 0x1234);
        assert_eq!(p.read(0, 1), 0x34);
        assert_eq!(p.dev.last, 0x34);
        assert_eq!(p.read(3, 1), 0xFF);
    }
}

/// The ISA line the AT wires the x87's FERR# output to.
pub const FERR_IRQ: u8 = 13;

/// Port 0xF0 and the AT's coprocessor error latch. With CR0.NE clear the x87 reports an unmasked
/// exception on FERR#, which the latch turns into IRQ13; the handler's write to port 0xF0 clears
/// the latch (and, on real boards, asserts IGNNE#) so the request goes away until the next error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoprocessorLatch {
    /// The latch is set: IRQ13 is asserted.
    pub latched: bool,
}

impl CoprocessorLatch {
    /// FERR# from the CPU. Asserting it sets the latch; deasserting it (FNINIT, FNCLEX) leaves
    /// the latch to the port write, as on the AT.
    pub fn ferr(&mut self, asserted: bool, ctx: &mut DevCtx) {
        if asserted {
            self.latched = true;
            ctx.irq.set(FERR_IRQ, true);
        }
    }
}

impl Device for CoprocessorLatch {
    fn read(&mut self, _at: At, size: u8, _ctx: &mut DevCtx) -> u32 {
        // Write-only: nothing drives the bus on a read.
        all_ones(size)
    }

    fn write(&mut self, _at: At, _size: u8, _value: u32, ctx: &mut DevCtx) {
        // The IRQ13 handler acknowledges the coprocessor error: clear the latch.
        self.latched = false;
        ctx.irq.set(FERR_IRQ, false);
    }
}

#[cfg(test)]
mod coprocessor_latch_tests {
    use super::*;
    use crate::dev::testing::Rig;

    #[test]
    fn ferr_raises_irq13_until_port_f0_is_written() {
        let mut r = Rig::new(CoprocessorLatch::default(), 0xF0);
        r.with(|latch, ctx| latch.ferr(true, ctx));
        assert!(r.irq.get(FERR_IRQ));
        // FNCLEX drops FERR#, but the latch holds the request.
        r.with(|latch, ctx| latch.ferr(false, ctx));
        assert!(r.irq.get(FERR_IRQ));
        r.outb(0, 0);
        assert!(!r.irq.get(FERR_IRQ) && !r.dev.latched);
        assert_eq!(r.inb(0), 0xFF);
    }
}
