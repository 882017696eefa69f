//! The rig the devices' unit tests drive a device through: the device alone, given on every
//! access and time step what the board would give it (the interrupt lines, the board signals
//! and the virtual time), with the lines and signals left for the test to look at.

use super::{BoardSignals, DevCtx, Device, IrqLines, Nanos};

/// One device on its own, at virtual time `now`.
pub(crate) struct Rig<D> {
    pub dev: D,
    pub irq: IrqLines,
    pub board: BoardSignals,
    pub now: Nanos,
}

impl<D: Device> Rig<D> {
    /// `dev` at time 0, every line low.
    pub fn new(dev: D) -> Self {
        Rig {
            dev,
            irq: IrqLines::default(),
            board: BoardSignals::default(),
            now: 0,
        }
    }

    /// The device and what an access or a time step at `now` sees of the machine.
    pub fn ctx(&mut self) -> (&mut D, DevCtx<'_>) {
        let ctx = DevCtx {
            now: self.now,
            irq: &mut self.irq,
            board: &mut self.board,
        };
        (&mut self.dev, ctx)
    }

    /// A guest IN of `size` bytes at `offset` in the device's range.
    pub fn read(&mut self, offset: u16, size: u8) -> u32 {
        let (dev, mut ctx) = self.ctx();
        dev.port_read(offset, size, &mut ctx)
    }

    /// A guest OUT of `size` bytes at `offset` in the device's range.
    pub fn write(&mut self, offset: u16, size: u8, value: u32) {
        let (dev, mut ctx) = self.ctx();
        dev.port_write(offset, size, value, &mut ctx);
    }

    /// A byte IN at `offset`.
    pub fn inb(&mut self, offset: u16) -> u8 {
        self.read(offset, 1) as u8
    }

    /// A byte OUT at `offset`.
    pub fn outb(&mut self, offset: u16, value: u8) {
        self.write(offset, 1, value.into());
    }

    /// Set the clock to `t` and bring the device up to it (one call of `advance`).
    pub fn advance_to(&mut self, t: Nanos) {
        self.now = t;
        let (dev, mut ctx) = self.ctx();
        dev.advance(&mut ctx);
    }

    /// Run to `t` as the board's run loop does: the device advanced at each of its deadlines
    /// up to `t` (one already past is taken now: time never runs backwards), then at `t`.
    pub fn run_to(&mut self, t: Nanos) {
        while let Some(d) = self.dev.next_deadline() {
            if d > t {
                break;
            }
            self.advance_to(d.max(self.now));
        }
        self.advance_to(t);
    }

    /// Advance to the device's next deadline (which must exist and not be in the past) and
    /// return it.
    pub fn step(&mut self) -> Nanos {
        let d = self.dev.next_deadline().expect("a deadline");
        assert!(d >= self.now, "a deadline in the past");
        self.advance_to(d);
        d
    }
}
