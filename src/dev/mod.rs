//! PC devices. Each device is a plain serde-serialisable struct in its own file (or folder),
//! reached through the port-I/O bus or the MMIO bus ([`bus::DeviceBus`]), which tells it the
//! base and offset of every access ([`At`]), and driven by virtual time: a device that needs
//! time implements [`Timed`], says when it next needs to be called
//! ([`Timed::next_deadline`]), and the board's run loop calls [`Timed::advance`] at that virtual
//! time. Devices never poll and never read a clock.
//!
//! Interrupt requests are explicit lines: a device raises or lowers an ISA IRQ line in
//! [`IrqLines`], and the board feeds those levels into the 8259 PIC pair.

pub mod atapi;
pub mod bus;
pub mod debugcon;
pub mod dma;
pub mod fdc;
pub mod fw_cfg;
pub mod ide;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod ps2;
pub mod rom;
pub mod rtc;
pub mod sysctl;
pub mod uart;
pub mod vga;

#[cfg(test)]
pub(crate) mod testing;

use serde::{Deserialize, Serialize};

/// A device's state as plain data, apart from its caches and the host's handles (the rust-vmm
/// `vm-superio` shape): what a saved state holds of it, and all it is rebuilt from.
pub trait Snapshot: Sized {
    /// The state: plain data, no caches, no host handles.
    type State: Clone + Serialize + for<'de> Deserialize<'de>;
    /// The device's state now.
    fn state(&self) -> Self::State;
    /// The device in `state`. A state no guest could have brought it to (a corrupt or forged
    /// file) is an error saying what is wrong, so that nothing indexes out of range later.
    fn from_state(state: Self::State) -> Result<Self, String>;
}

/// Devices that hold nothing but their registers (no caches, no host handles, no value that
/// is an index into something of another size) are their own state.
macro_rules! registers_are_state {
    ($($device:ty),* $(,)?) => {$(
        impl Snapshot for $device {
            type State = $device;
            fn state(&self) -> $device {
                self.clone()
            }
            fn from_state(state: $device) -> Result<$device, String> {
                Ok(state)
            }
        }
    )*};
}

registers_are_state!(
    pic::PicPair,
    pit::Pit,
    rtc::Rtc,
    uart::Uart,
    ps2::I8042,
    sysctl::PortA,
    sysctl::PostCode,
    sysctl::CoprocessorLatch,
);

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
    /// The guest wrote PCI configuration space: a BAR may have moved (the board maps the
    /// windows again before the next instruction). Never set between accesses, so not state.
    #[serde(skip)]
    pub pci_config_written: bool,
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

/// Where an access landed: the first address of the bus range it was routed through (a port,
/// or a physical address on the MMIO bus) and its offset in that range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At {
    pub base: u32,
    pub offset: u32,
}

impl At {
    /// The access at `offset` in the range that starts at `base`.
    pub fn new(base: u32, offset: u32) -> At {
        At { base, offset }
    }

    /// The address accessed.
    pub fn addr(self) -> u32 {
        self.base.wrapping_add(self.offset)
    }
}

/// A device on a bus; `size` is 1, 2 or 4 bytes.
pub trait Device {
    /// A guest read (IN, or a load from MMIO).
    fn read(&mut self, at: At, size: u8, ctx: &mut DevCtx) -> u32;
    /// A guest write (OUT, or a store to MMIO).
    fn write(&mut self, at: At, size: u8, value: u32, ctx: &mut DevCtx);
    /// `count` guest writes of `value`, `size` bytes each, at `at` and the addresses after it
    /// in order (a REP STOS into device memory: a driver clearing a framebuffer). A device
    /// whose writes have side effects beyond storing the value keeps this default, which is
    /// exactly those writes one by one; a plain memory window may store the run at once.
    fn fill(&mut self, at: At, size: u8, value: u32, count: u32, ctx: &mut DevCtx) {
        fill_each(self, at, size, value, count, ctx);
    }
}

/// [`Device::fill`] as the writes one by one: its default, and what a device that stores
/// some of its windows at once does for the others.
pub fn fill_each<D: Device + ?Sized>(
    dev: &mut D,
    at: At,
    size: u8,
    value: u32,
    count: u32,
    ctx: &mut DevCtx,
) {
    for k in 0..count {
        let offset = at.offset.wrapping_add(k.wrapping_mul(u32::from(size)));
        dev.write(At { offset, ..at }, size, value, ctx);
    }
}

/// A device driven by virtual time (the `Steppable` shape): the board asks each for its next
/// deadline and advances it there.
pub trait Timed {
    /// The next virtual time at which the device must be advanced, if any.
    fn next_deadline(&self) -> Option<Nanos>;
    /// Bring the device's state up to `ctx.now` (timers fire, interrupts are raised).
    fn advance(&mut self, ctx: &mut DevCtx);
}

/// All ones on an access of `size` bytes: what a bus nothing drives reads.
pub fn all_ones(size: u8) -> u32 {
    u32::MAX >> (32 - 8 * u32::from(size.clamp(1, 4)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
