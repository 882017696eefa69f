//! The two buses devices sit on: port I/O and memory-mapped I/O. Each maps address ranges to
//! devices (the rust-vmm `vm-device` shape): a range is mapped whole, overlaps are rejected, and
//! an access reaches its device with the base of the range it went through and the offset in
//! it ([`At`]), so a device mapped at several ranges (the PIC pair, the IDE channels) knows which
//! one was used without a wrapper per window. Moving a PCI BAR is an unmap and a map.
//!
//! Devices are shared (`Rc<RefCell<_>>`) between the bus, which routes guest accesses, and the
//! board, which keeps a typed handle for the host (serial output, keys, the screen). Everything
//! runs on one thread and a device never calls back into a bus, so a borrow never overlaps
//! another.

use super::{At, DevCtx, Device};
use std::cell::RefCell;
use std::rc::Rc;

/// A device the board and a bus share.
pub type Shared<T> = Rc<RefCell<T>>;

/// Wrap a device for sharing between the board and the buses.
pub fn shared<T>(device: T) -> Shared<T> {
    Rc::new(RefCell::new(device))
}

/// Why a range could not be mapped or unmapped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    #[error("range {base:#x}..{end:#x} overlaps a range already mapped")]
    Overlap { base: u32, end: u64 },
    #[error("empty range at {0:#x}")]
    Empty(u32),
    #[error("range {base:#x}..{end:#x} does not fit the bus (which ends at {limit:#x})")]
    Beyond { base: u32, end: u64, limit: u64 },
    #[error("nothing is mapped at {0:#x}")]
    NotMapped(u32),
}

struct Mapping {
    base: u32,
    /// One past the last address.
    end: u64,
    device: Rc<RefCell<dyn Device>>,
}

/// Address ranges routed to devices; the port bus ends at 0x10000, the MMIO bus at 4 GiB.
pub struct DeviceBus {
    /// Sorted by base, never overlapping.
    ranges: Vec<Mapping>,
    limit: u64,
}

impl DeviceBus {
    /// The port-I/O bus: ports 0 to 0xFFFF.
    pub fn ports() -> Self {
        DeviceBus {
            ranges: Vec::new(),
            limit: 0x1_0000,
        }
    }

    /// The MMIO bus: the 32-bit physical address space.
    pub fn memory() -> Self {
        DeviceBus {
            ranges: Vec::new(),
            limit: 1 << 32,
        }
    }

    /// Route `[base, base + len)` to `device`. A range that is empty, runs past the end of the
    /// bus or overlaps a mapped one is refused, and nothing changes.
    pub fn map(
        &mut self,
        base: u32,
        len: u32,
        device: Rc<RefCell<dyn Device>>,
    ) -> Result<(), MapError> {
        if len == 0 {
            return Err(MapError::Empty(base));
        }
        let end = u64::from(base) + u64::from(len);
        if end > self.limit {
            return Err(MapError::Beyond {
                base,
                end,
                limit: self.limit,
            });
        }
        if self
            .ranges
            .iter()
            .any(|m| u64::from(base) < m.end && u64::from(m.base) < end)
        {
            return Err(MapError::Overlap { base, end });
        }
        let pos = self.ranges.partition_point(|m| m.base < base);
        self.ranges.insert(pos, Mapping { base, end, device });
        Ok(())
    }

    /// Remove the range that starts at `base`, returning its device.
    pub fn unmap(&mut self, base: u32) -> Result<Rc<RefCell<dyn Device>>, MapError> {
        let pos = self
            .ranges
            .iter()
            .position(|m| m.base == base)
            .ok_or(MapError::NotMapped(base))?;
        Ok(self.ranges.remove(pos).device)
    }

    /// The device that `addr` reaches, and where in which range.
    pub fn route(&self, addr: u32) -> Option<(&Rc<RefCell<dyn Device>>, At)> {
        let pos = self.ranges.partition_point(|m| m.base <= addr);
        let m = self.ranges.get(pos.checked_sub(1)?)?;
        (u64::from(addr) < m.end).then(|| {
            (
                &m.device,
                At {
                    base: m.base,
                    offset: addr - m.base,
                },
            )
        })
    }

    /// The mapped ranges, as (base, length), in address order.
    pub fn ranges(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.ranges
            .iter()
            .map(|m| (m.base, (m.end - u64::from(m.base)) as u32))
    }

    /// A guest read of `size` bytes at `addr`; `None` where nothing is mapped.
    pub fn read(&self, addr: u32, size: u8, ctx: &mut DevCtx) -> Option<u32> {
        let (device, at) = self.route(addr)?;
        Some(device.borrow_mut().read(at, size, ctx))
    }

    /// A guest write of `size` bytes at `addr`; false where nothing is mapped (the write goes
    /// nowhere).
    pub fn write(&self, addr: u32, size: u8, value: u32, ctx: &mut DevCtx) -> bool {
        match self.route(addr) {
            Some((device, at)) => {
                device.borrow_mut().write(at, size, value, ctx);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::testing::Rig;
    use crate::dev::{BoardSignals, IrqLines};

    /// Remembers every access it gets.
    #[derive(Default)]
    struct Recorder {
        seen: Vec<(At, u8, Option<u32>)>,
    }

    impl Device for Recorder {
        fn read(&mut self, at: At, size: u8, _ctx: &mut DevCtx) -> u32 {
            self.seen.push((at, size, None));
            at.base ^ at.offset
        }
        fn write(&mut self, at: At, size: u8, value: u32, _ctx: &mut DevCtx) {
            self.seen.push((at, size, Some(value)));
        }
    }

    fn ctx_parts() -> (IrqLines, BoardSignals) {
        (IrqLines::default(), BoardSignals::default())
    }

    #[test]
    fn routes_by_range_with_base_and_offset_and_rejects_overlap() {
        let a = shared(Recorder::default());
        let b = shared(Recorder::default());
        let mut bus = DeviceBus::ports();
        bus.map(0x20, 2, a.clone()).unwrap();
        bus.map(0xA0, 2, a.clone()).unwrap();
        bus.map(0x40, 4, b.clone()).unwrap();
        let (mut irq, mut board) = ctx_parts();
        let mut ctx = DevCtx {
            now: 0,
            irq: &mut irq,
            board: &mut board,
        };
        assert_eq!(bus.read(0x21, 1, &mut ctx), Some(0x21));
        assert!(bus.write(0xA1, 2, 0x1234, &mut ctx));
        assert_eq!(bus.read(0x43, 4, &mut ctx), Some(0x43));
        assert_eq!(bus.read(0x22, 1, &mut ctx), None);
        assert!(!bus.write(0x10, 1, 0, &mut ctx));
        assert_eq!(
            a.borrow().seen,
            vec![
                (
                    At {
                        base: 0x20,
                        offset: 1
                    },
                    1,
                    None
                ),
                (
                    At {
                        base: 0xA0,
                        offset: 1
                    },
                    2,
                    Some(0x1234)
                ),
            ]
        );
        assert_eq!(
            b.borrow().seen,
            vec![(
                At {
                    base: 0x40,
                    offset: 3
                },
                4,
                None
            )]
        );
        for (base, len) in [(0x41, 1), (0x3F, 2), (0x00, 0x100)] {
            assert!(matches!(
                bus.map(base, len, b.clone()),
                Err(MapError::Overlap { .. })
            ));
        }
        assert_eq!(bus.map(0x50, 0, b.clone()), Err(MapError::Empty(0x50)));
        assert!(matches!(
            bus.map(0xFFFF, 2, b.clone()),
            Err(MapError::Beyond { .. })
        ));
        assert_eq!(
            bus.ranges().collect::<Vec<_>>(),
            vec![(0x20, 2), (0x40, 4), (0xA0, 2)]
        );
    }

    #[test]
    fn a_moved_range_answers_only_at_its_new_place() {
        let dev = shared(Recorder::default());
        let mut bus = DeviceBus::memory();
        bus.map(0xE000_0000, 0x1000, dev.clone()).unwrap();
        assert!(bus.unmap(0xE000_1000).is_err());
        bus.unmap(0xE000_0000).unwrap();
        bus.map(0xF000_0000, 0x1000, dev.clone()).unwrap();
        assert!(bus.route(0xE000_0010).is_none());
        let (_, at) = bus.route(0xF000_0FFF).unwrap();
        assert_eq!(
            at,
            At {
                base: 0xF000_0000,
                offset: 0xFFF
            }
        );
        // The very top of the address space can be mapped.
        bus.map(0xFFFF_F000, 0x1000, dev).unwrap();
        assert!(bus.route(0xFFFF_FFFF).is_some());
    }

    #[test]
    fn the_rig_reaches_a_device_at_its_base() {
        let mut rig = Rig::new(Recorder::default(), 0x3F8);
        assert_eq!(rig.read(5, 1), 0x3F8 ^ 5);
        assert_eq!(
            rig.dev.seen[0].0,
            At {
                base: 0x3F8,
                offset: 5
            }
        );
    }
}
