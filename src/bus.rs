//! The CPU's view of everything that is not RAM: I/O ports, memory-mapped devices, the interrupt
//! line. The machine (or a test) implements [`Bus`]; the CPU never knows which devices exist.

/// Port I/O, MMIO and the INTR line as seen from the CPU.
pub trait Bus {
    /// IN from `port`; `size` is 1, 2 or 4 bytes.
    fn io_read(&mut self, port: u16, size: u8) -> u32;
    /// OUT to `port`.
    fn io_write(&mut self, port: u16, size: u8, value: u32);
    /// Right after an OUT: carry out what a device started that works on guest memory at once
    /// (fw_cfg's DMA, which the guest polls for in a loop).
    fn run_port_dma(&mut self, _mem: &mut crate::mem::Memory) {}
    /// Read from a physical address the memory map marks as MMIO.
    fn mmio_read(&mut self, addr: u32, size: u8) -> u32;
    /// Write to a physical address the memory map marks as MMIO.
    fn mmio_write(&mut self, addr: u32, size: u8, value: u32);
    /// `count` writes of `value` (`size` bytes each) at `addr` and the addresses after it, all
    /// in MMIO: a REP STOS into device memory, at one virtual time (a REP batch retires as one
    /// instruction). The default is those writes one by one.
    fn mmio_fill(&mut self, addr: u32, size: u8, value: u32, count: u32) {
        for k in 0..count {
            self.mmio_write(
                addr.wrapping_add(k.wrapping_mul(u32::from(size))),
                size,
                value,
            );
        }
    }
    /// Level of the INTR line (a maskable interrupt is waiting at the interrupt controller).
    fn interrupt_pending(&self) -> bool {
        false
    }
    /// INTA cycle: the interrupt controller hands over the vector.
    fn acknowledge_interrupt(&mut self) -> u8 {
        0
    }
    /// The CPU's retired-instruction count (its virtual clock), reported just before each port
    /// or MMIO access so that the machine can give devices the virtual time of the access: the
    /// count of instructions retired before the one making the access.
    fn set_instructions(&mut self, _instructions: u64) {}
    /// The time-stamp counter's base at `instructions` retired, when the bus keeps a virtual
    /// clock (a machine: the TSC counts virtual time, whatever its rate per instruction); `None`
    /// makes the CPU count retired instructions.
    fn tsc(&mut self, _instructions: u64) -> Option<u64> {
        None
    }
    /// The legacy FERR#/IRQ13 output of the x87 changed (used when CR0.NE is clear).
    fn fpu_error(&mut self, _asserted: bool) {}
    /// Changes of the physical memory map made by device accesses since the last call (a PCI
    /// BAR moved, the chipset's shadow RAM switched), in order. The CPU asks after every OUT and applies them to its page map
    /// before the next instruction, so an access right after the BAR write reaches the new
    /// place.
    fn take_mmio_changes(&mut self) -> Vec<MmioChange> {
        Vec::new()
    }
    /// The A20 gate, if a device access since the last call moved it (port 0x92, the keyboard
    /// controller's output port). The CPU asks after every OUT: code that opens the gate tests
    /// it at once by writing above 1 MiB, and copies itself there right after.
    fn take_a20(&mut self) -> Option<bool> {
        None
    }
    /// Right after a port access: whether it brought a device's deadline (a timer the guest
    /// programmed, a byte a UART will receive) before the end of the CPU's current run, so
    /// that the CPU ends the run there and the deadline is met.
    fn take_deadline_moved(&mut self) -> bool {
        false
    }
}

/// A change of the physical memory map that a device access made, for the CPU's page map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioChange {
    pub start: u32,
    pub len: u32,
    pub to: MapTo,
}

/// What a range of the physical memory map becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapTo {
    /// Served by the MMIO bus (device registers, a ROM a BAR placed).
    Mmio,
    /// Plain memory again: RAM where there is RAM, nothing above it.
    Memory,
    /// BIOS-area shadowing with these attributes ([`crate::mem::Memory::set_shadow`]).
    Shadow(u8),
}

impl MmioChange {
    /// Make the change in `mem`'s page map.
    pub fn apply(self, mem: &mut crate::mem::Memory) {
        use crate::mem::PageKind;
        match self.to {
            MapTo::Mmio => mem.map(self.start, self.len, PageKind::Mmio),
            MapTo::Memory => mem.map(self.start, self.len, PageKind::Ram),
            MapTo::Shadow(attr) => mem.set_shadow(self.start, self.len, attr),
        }
    }
}

/// A bus with nothing on it: ports read as all ones (an undriven ISA bus), writes are ignored,
/// no interrupts. Used by tests that run bare CPU + RAM.
#[derive(Default, Debug, Clone)]
pub struct EmptyBus;

impl Bus for EmptyBus {
    fn io_read(&mut self, _port: u16, size: u8) -> u32 {
        u32::MAX >> (32 - 8 * size as u32)
    }
    fn io_write(&mut self, _port: u16, _size: u8, _value: u32) {}
    fn mmio_read(&mut self, _addr: u32, size: u8) -> u32 {
        u32::MAX >> (32 - 8 * size as u32)
    }
    fn mmio_write(&mut self, _addr: u32, _size: u8, _value: u32) {}
}
