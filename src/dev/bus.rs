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
use std::cell::{Cell, RefCell};
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
    /// Where its accesses are counted in [`DeviceBus::counts`].
    counter: usize,
}

/// Guest accesses that reached one device (through any of its ranges) or nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AccessCount {
    pub reads: u64,
    pub writes: u64,
}

/// Address ranges routed to devices; the port bus ends at 0x10000, the MMIO bus at 4 GiB.
pub struct DeviceBus {
    /// Sorted by base, never overlapping.
    ranges: Vec<Mapping>,
    limit: u64,
    /// Accesses per device name, in the order the names were first mapped; then the accesses
    /// that reached nothing. Observations, not state: counted where an access is slow anyway
    /// (a dynamic call into a borrowed device).
    counts: Vec<(&'static str, Cell<AccessCount>)>,
    unclaimed: Cell<AccessCount>,
}

impl DeviceBus {
    /// The port-I/O bus: ports 0 to 0xFFFF.
    pub fn ports() -> Self {
        DeviceBus {
            ranges: Vec::new(),
            limit: 0x1_0000,
            counts: Vec::new(),
            unclaimed: Cell::default(),
        }
    }

    /// The MMIO bus: the 32-bit physical address space.
    pub fn memory() -> Self {
        DeviceBus {
            ranges: Vec::new(),
            limit: 1 << 32,
            counts: Vec::new(),
            unclaimed: Cell::default(),
        }
    }

    /// Route `[base, base + len)` to `device`, whose accesses are counted under `name` (a
    /// device mapped at several ranges, or moved, keeps one count). A range that is empty,
    /// runs past the end of the bus or overlaps a mapped one is refused, and nothing changes.
    pub fn map(
        &mut self,
        base: u32,
        len: u32,
        device: Rc<RefCell<dyn Device>>,
        name: &'static str,
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
        let counter = match self.counts.iter().position(|(n, _)| *n == name) {
            Some(i) => i,
            None => {
                self.counts.push((name, Cell::default()));
                self.counts.len() - 1
            }
        };
        let pos = self.ranges.partition_point(|m| m.base < base);
        self.ranges.insert(
            pos,
            Mapping {
                base,
                end,
                device,
                counter,
            },
        );
        Ok(())
    }

    /// Guest accesses per device name since the last [`DeviceBus::reset_counts`], in the
    /// order the devices were mapped, then `("nothing", ..)` for accesses nothing answered.
    pub fn access_counts(&self) -> Vec<(&'static str, AccessCount)> {
        self.counts
            .iter()
            .map(|(n, c)| (*n, c.get()))
            .chain(std::iter::once(("nothing", self.unclaimed.get())))
            .collect()
    }

    /// Add `other`'s access counts to this bus's, by device name (a board rebuilt at a guest
    /// reset keeps counting where the old one stopped).
    pub fn carry_counts_from(&mut self, other: &DeviceBus) {
        for (name, c) in &other.counts {
            let i = match self.counts.iter().position(|(n, _)| n == name) {
                Some(i) => i,
                None => {
                    self.counts.push((name, Cell::default()));
                    self.counts.len() - 1
                }
            };
            let (mine, theirs) = (self.counts[i].1.get(), c.get());
            self.counts[i].1.set(AccessCount {
                reads: mine.reads + theirs.reads,
                writes: mine.writes + theirs.writes,
            });
        }
        let (mine, theirs) = (self.unclaimed.get(), other.unclaimed.get());
        self.unclaimed.set(AccessCount {
            reads: mine.reads + theirs.reads,
            writes: mine.writes + theirs.writes,
        });
    }

    /// Zero the access counts.
    pub fn reset_counts(&self) {
        for (_, c) in &self.counts {
            c.set(AccessCount::default());
        }
        self.unclaimed.set(AccessCount::default());
    }

    /// Count `accesses` accesses through `mapping` (`None`: nothing answered).
    fn count(&self, mapping: Option<usize>, write: bool, accesses: u64) {
        let cell = match mapping {
            Some(i) => &self.counts[i].1,
            None => &self.unclaimed,
        };
        let mut c = cell.get();
        if write {
            c.writes += accesses;
        } else {
            c.reads += accesses;
        }
        cell.set(c);
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
        self.mapping(addr).map(|m| {
            (
                &m.device,
                At {
                    base: m.base,
                    offset: addr - m.base,
                },
            )
        })
    }

    /// The mapping `addr` falls in.
    fn mapping(&self, addr: u32) -> Option<&Mapping> {
        let pos = self.ranges.partition_point(|m| m.base <= addr);
        let m = self.ranges.get(pos.checked_sub(1)?)?;
        (u64::from(addr) < m.end).then_some(m)
    }

    /// The mapped ranges, as (base, length), in address order.
    pub fn ranges(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.ranges
            .iter()
            .map(|m| (m.base, (m.end - u64::from(m.base)) as u32))
    }

    /// A guest read of `size` bytes at `addr`; `None` where nothing is mapped.
    pub fn read(&self, addr: u32, size: u8, ctx: &mut DevCtx) -> Option<u32> {
        let Some(m) = self.mapping(addr) else {
            self.count(None, false, 1);
            return None;
        };
        self.count(Some(m.counter), false, 1);
        let at = At {
            base: m.base,
            offset: addr - m.base,
        };
        Some(m.device.borrow_mut().read(at, size, ctx))
    }

    /// `count` guest writes of `value` (`size` bytes each) at `addr` and the addresses after it
    /// (see [`Device::fill`]). A run that stays in one mapped range reaches its device at once;
    /// one that leaves it is written element by element, as [`DeviceBus::write`] would.
    pub fn fill(&self, addr: u32, size: u8, value: u32, count: u32, ctx: &mut DevCtx) {
        let bytes = u64::from(count) * u64::from(size);
        match self.mapping(addr) {
            Some(m) if u64::from(addr) + bytes <= m.end => {
                self.count(Some(m.counter), true, u64::from(count));
                let at = At {
                    base: m.base,
                    offset: addr - m.base,
                };
                m.device.borrow_mut().fill(at, size, value, count, ctx);
            }
            _ => {
                for k in 0..count {
                    let a = addr.wrapping_add(k.wrapping_mul(u32::from(size)));
                    self.write(a, size, value, ctx);
                }
            }
        }
    }

    /// A guest write of `size` bytes at `addr`; false where nothing is mapped (the write goes
    /// nowhere).
    pub fn write(&self, addr: u32, size: u8, value: u32, ctx: &mut DevCtx) -> bool {
        let Some(m) = self.mapping(addr) else {
            self.count(None, true, 1);
            return false;
        };
        self.count(Some(m.counter), true, 1);
        let at = At {
            base: m.base,
            offset: addr - m.base,
        };
        m.device.borrow_mut().write(at, size, value, ctx);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::testing::{at_power_on, Rig};

    /// Remembers every access it gets, and the runs it was given at once.
    #[derive(Default)]
    struct Recorder {
        seen: Vec<(At, u8, Option<u32>)>,
        runs: Vec<(At, u32)>,
    }

    impl Device for Recorder {
        fn read(&mut self, at: At, size: u8, _ctx: &mut DevCtx) -> u32 {
            self.seen.push((at, size, None));
            at.base ^ at.offset
        }
        fn write(&mut self, at: At, size: u8, value: u32, _ctx: &mut DevCtx) {
            self.seen.push((at, size, Some(value)));
        }
        fn fill(&mut self, at: At, size: u8, value: u32, count: u32, ctx: &mut DevCtx) {
            self.runs.push((at, count));
            crate::dev::fill_each(self, at, size, value, count, ctx);
        }
    }

    #[test]
    fn routes_by_range_with_base_and_offset_and_rejects_overlap() {
        let a = shared(Recorder::default());
        let b = shared(Recorder::default());
        let mut bus = DeviceBus::ports();
        bus.map(0x20, 2, a.clone(), "a").unwrap();
        bus.map(0xA0, 2, a.clone(), "a").unwrap();
        bus.map(0x40, 4, b.clone(), "b").unwrap();
        at_power_on(|ctx| {
            assert_eq!(bus.read(0x21, 1, ctx), Some(0x21));
            assert!(bus.write(0xA1, 2, 0x1234, ctx));
            assert_eq!(bus.read(0x43, 4, ctx), Some(0x43));
            assert_eq!(bus.read(0x22, 1, ctx), None);
            assert!(!bus.write(0x10, 1, 0, ctx));
        });
        // Counted per device, whichever of its ranges was used.
        let count = |reads, writes| AccessCount { reads, writes };
        assert_eq!(
            bus.access_counts(),
            vec![
                ("a", count(1, 1)),
                ("b", count(1, 0)),
                ("nothing", count(1, 1))
            ]
        );
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
                bus.map(base, len, b.clone(), "test"),
                Err(MapError::Overlap { .. })
            ));
        }
        assert_eq!(
            bus.map(0x50, 0, b.clone(), "test"),
            Err(MapError::Empty(0x50))
        );
        assert!(matches!(
            bus.map(0xFFFF, 2, b.clone(), "test"),
            Err(MapError::Beyond { .. })
        ));
        assert_eq!(
            bus.ranges().collect::<Vec<_>>(),
            vec![(0x20, 2), (0x40, 4), (0xA0, 2)]
        );
    }

    #[test]
    fn a_run_of_stores_reaches_its_device_at_once_only_inside_one_range() {
        let dev = shared(Recorder::default());
        let mut bus = DeviceBus::memory();
        bus.map(0xE000_0000, 0x10, dev.clone(), "test").unwrap();
        let at = |offset| At::new(0xE000_0000, offset);
        at_power_on(|ctx| {
            // Up to the range's last byte; then past its end.
            bus.fill(0xE000_0008, 2, 0xBEEF, 4, ctx);
            bus.fill(0xE000_000C, 4, 7, 3, ctx);
        });
        // The first: one run, four stores. The second: store by store (not a run), the ones
        // beyond the range answered by nothing.
        assert_eq!(dev.borrow().runs, vec![(at(8), 4)]);
        let stores: Vec<_> = (0..4).map(|k| (at(8 + 2 * k), 2, Some(0xBEEF))).collect();
        assert_eq!(dev.borrow().seen[..4], stores);
        assert_eq!(dev.borrow().seen[4..], [(at(0xC), 4, Some(7))]);
        let counts = bus.access_counts();
        assert_eq!(counts[0].1.writes, 5);
        assert_eq!(
            counts[1],
            (
                "nothing",
                AccessCount {
                    reads: 0,
                    writes: 2
                }
            )
        );
    }

    #[test]
    fn a_moved_range_answers_only_at_its_new_place() {
        let dev = shared(Recorder::default());
        let mut bus = DeviceBus::memory();
        bus.map(0xE000_0000, 0x1000, dev.clone(), "test").unwrap();
        assert!(bus.unmap(0xE000_1000).is_err());
        bus.unmap(0xE000_0000).unwrap();
        bus.map(0xF000_0000, 0x1000, dev.clone(), "test").unwrap();
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
        bus.map(0xFFFF_F000, 0x1000, dev, "test").unwrap();
        assert!(bus.route(0xFFFF_FFFF).is_some());
        // A moved device keeps one count.
        at_power_on(|ctx| {
            bus.read(0xF000_0000, 4, ctx);
            bus.write(0xFFFF_F000, 4, 0, ctx);
        });
        let counts = bus.access_counts();
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert_eq!((counts[0].1.reads, counts[0].1.writes), (1, 1));
        bus.reset_counts();
        assert!(bus
            .access_counts()
            .iter()
            .all(|(_, c)| c.reads + c.writes == 0));
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
