//! PC devices. Each device is one file, a plain serde-serialisable struct, reached through the
//! port-I/O bus ([`PortBus`]) by offset, and driven by virtual time: a device that needs time
//! says when it next needs to be called ([`Device::next_deadline`]) and the board's run loop
//! calls [`Device::advance`] at that virtual time. Devices never poll and never read a clock.
//!
//! Interrupt requests are explicit lines: a device raises or lowers an ISA IRQ line in
//! [`IrqLines`], and the board feeds those levels into the 8259 PIC pair.

pub mod atapi;
pub mod ide;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod ps2;
pub mod rtc;
pub mod sysctl;
pub mod uart;
pub mod vga;

#[cfg(test)]
pub(crate) mod testing;

use serde::{Deserialize, Serialize};

/// Virtual time in nanoseconds since machine reset.
pub type Nanos = u64;

/// The 16 ISA interrupt request lines as levels (bit n = IRQ n asserted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IrqLines {
    levels: u16,
}

impl IrqLines {
    /// Drive line `irq` to `high`.
    pub fn set(&mut self, irq: u8, high: bool) {
        if high {
            self.levels |= 1 << irq;
        } else {
            self.levels &= !(1 << irq);
        }
    }
    /// Whether line `irq` is asserted.
    pub fn get(&self, irq: u8) -> bool {
        self.levels & (1 << irq) != 0
    }
    /// All levels (bit n = IRQ n).
    pub fn levels(&self) -> u16 {
        self.levels
    }
}

/// Requests a device makes of the board (acted on after the access returns).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardSignals {
    /// Pulse the CPU reset line (i8042 command 0xFE, port 0x92 bit 0, port 0xCF9).
    pub reset: bool,
    /// New state of the A20 gate, if a device changed it (i8042 output port, port 0x92 bit 1).
    pub a20: Option<bool>,
}

/// What a device sees of the machine during an access or a time step.
pub struct DevCtx<'a> {
    /// The current virtual time.
    pub now: Nanos,
    /// The ISA interrupt lines.
    pub irq: &'a mut IrqLines,
    /// Requests to the board.
    pub board: &'a mut BoardSignals,
}

/// A device on the port-I/O bus. Offsets are relative to the start of the range the device was
/// mapped at; `size` is 1, 2 or 4 bytes.
pub trait Device {
    /// A guest IN.
    fn port_read(&mut self, offset: u16, size: u8, ctx: &mut DevCtx) -> u32;
    /// A guest OUT.
    fn port_write(&mut self, offset: u16, size: u8, value: u32, ctx: &mut DevCtx);
    /// The next virtual time at which the device must be advanced, if any.
    fn next_deadline(&self) -> Option<Nanos> {
        None
    }
    /// Bring the device's state up to `ctx.now` (timers fire, interrupts are raised).
    fn advance(&mut self, _ctx: &mut DevCtx) {}
}

/// Error when mapping a port range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    #[error("port range {start:#06x}..{end:#06x} overlaps a range already mapped")]
    Overlap { start: u16, end: u32 },
    #[error("empty port range at {0:#06x}")]
    Empty(u16),
}

/// Maps port ranges to device indices (the board owns the devices; the bus only routes).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PortBus {
    /// (first port, one past the last port, device id), sorted by first port.
    ranges: Vec<(u16, u32, usize)>,
}

impl PortBus {
    /// Route `[start, start+len)` to device `id`; overlapping ranges are rejected.
    pub fn map(&mut self, start: u16, len: u32, id: usize) -> Result<(), MapError> {
        if len == 0 {
            return Err(MapError::Empty(start));
        }
        let end = start as u32 + len;
        if self
            .ranges
            .iter()
            .any(|&(s, e, _)| (start as u32) < e && (s as u32) < end)
        {
            return Err(MapError::Overlap { start, end });
        }
        let pos = self.ranges.partition_point(|&(s, _, _)| s < start);
        self.ranges.insert(pos, (start, end, id));
        Ok(())
    }

    /// Remove every range routed to device `id` (a PCI BAR moved).
    pub fn unmap(&mut self, id: usize) {
        self.ranges.retain(|&(_, _, d)| d != id);
    }

    /// The device and offset that port `port` reaches, if any.
    pub fn route(&self, port: u16) -> Option<(usize, u16)> {
        let pos = self.ranges.partition_point(|&(s, _, _)| s <= port);
        let &(s, e, id) = self.ranges.get(pos.checked_sub(1)?)?;
        ((port as u32) < e).then_some((id, port - s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_routes_by_range_and_rejects_overlap() {
        let mut bus = PortBus::default();
        bus.map(0x20, 2, 0).unwrap();
        bus.map(0x40, 4, 1).unwrap();
        assert_eq!(bus.route(0x21), Some((0, 1)));
        assert_eq!(bus.route(0x43), Some((1, 3)));
        assert_eq!(bus.route(0x22), None);
        assert_eq!(bus.route(0x10), None);
        assert!(matches!(bus.map(0x41, 1, 2), Err(MapError::Overlap { .. })));
    }

    #[test]
    fn irq_lines_hold_levels() {
        let mut l = IrqLines::default();
        l.set(4, true);
        l.set(12, true);
        l.set(4, false);
        assert!(!l.get(4) && l.get(12));
        assert_eq!(l.levels(), 1 << 12);
    }
}
