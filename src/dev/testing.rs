//! The rig the devices' unit tests drive a device through: the device alone, given on every
//! access and time step what the board would give it (the interrupt lines, the board signals
//! and the virtual time), with the lines and signals left for the test to look at.

use super::{At, BoardSignals, DevCtx, Device, IrqLines, Nanos, Timed};

/// One device on its own, mapped at `base`, at virtual time `now`.
pub(crate) struct Rig<D> {
    pub dev: D,
    /// Where the device's (first) range starts: offsets in [`Rig::read`] and
    /// [`Rig::write`] are relative to it.
    pub base: u32,
    pub irq: IrqLines,
    pub board: BoardSignals,
    pub now: Nanos,
}

/// Run `f` with what an access at time 0 sees of a machine whose lines are all low, for tests
/// that keep their device themselves (and look only at what it returns or holds).
pub(crate) fn at_power_on<R>(f: impl FnOnce(&mut DevCtx) -> R) -> R {
    let (mut irq, mut board) = (IrqLines::default(), BoardSignals::default());
    f(&mut DevCtx {
        now: 0,
        irq: &mut irq,
        board: &mut board,
    })
}

impl<D> Rig<D> {
    /// `dev` mapped at `base`, at time 0, every line low.
    pub fn new(dev: D, base: u32) -> Self {
        Rig {
            dev,
            base,
            irq: IrqLines::default(),
            board: BoardSignals::default(),
            now: 0,
        }
    }

    /// Call `f` on the device with what the machine gives it at `now` (a host event: a key, a
    /// modem line, a wake-up).
    pub fn with<R>(&mut self, f: impl FnOnce(&mut D, &mut DevCtx) -> R) -> R {
        let (dev, mut ctx) = self.ctx();
        f(dev, &mut ctx)
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
}

impl<D: Device> Rig<D> {
    /// A guest read of `size` bytes at `offset` in the range at `base`.
    pub fn read_at(&mut self, base: u32, offset: u32, size: u8) -> u32 {
        let (dev, mut ctx) = self.ctx();
        dev.read(At::new(base, offset), size, &mut ctx)
    }

    /// A guest write of `size` bytes at `offset` in the range at `base`.
    pub fn write_at(&mut self, base: u32, offset: u32, size: u8, value: u32) {
        let (dev, mut ctx) = self.ctx();
        dev.write(At::new(base, offset), size, value, &mut ctx);
    }

    /// A guest read of `size` bytes at `offset` in the device's range.
    pub fn read(&mut self, offset: u16, size: u8) -> u32 {
        self.read_at(self.base, offset.into(), size)
    }

    /// A guest write of `size` bytes at `offset` in the device's range.
    pub fn write(&mut self, offset: u16, size: u8, value: u32) {
        self.write_at(self.base, offset.into(), size, value);
    }

    /// A byte IN at `offset`.
    pub fn inb(&mut self, offset: u16) -> u8 {
        self.read(offset, 1) as u8
    }

    /// A byte OUT at `offset`.
    pub fn outb(&mut self, offset: u16, value: u8) {
        self.write(offset, 1, value.into());
    }
}

impl<D: Timed> Rig<D> {
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
