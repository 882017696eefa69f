//! The PC/AT's two Intel 8237A DMA controllers and their page registers (as in the PIIX3): the
//! first does byte transfers on channels 0-3 (ports 0x00-0x0F), the second word transfers on
//! channels 4-7 (ports 0xC0-0xDF, every other address) with channel 4 the cascade from the
//! first. The ISA devices that use DMA (the floppy controller on channel 2) move their data
//! through [`Dma::transfer`], which follows the channel's mode as the 8237A would: the address
//! counts up or down, the count down to terminal count (TC), and an auto-initialised channel
//! reloads its base registers at TC.
//!
//! Register map of each controller (datasheet numbering; the second controller's register `r`
//! is at 0xC0 + 2r):
//!
//! | reg | read | write |
//! |---|---|---|
//! | 0-7 | channel r/2 current address (even r) or count (odd r), low byte then high | base and current address or count |
//! | 8 | status: TC reached (bits 0-3, cleared by the read), request (bits 4-7) | command |
//! | 9 | - | request |
//! | 10 | - | single mask bit |
//! | 11 | - | mode |
//! | 12 | - | clear the byte pointer flip-flop |
//! | 13 | temporary register | master clear |
//! | 14 | - | clear all mask bits |
//! | 15 | mask bits (as the PIIX reads them back) | write all mask bits |
//!
//! Page registers (0x81-0x8F; 0x80 is the POST code port): channel 2 at 0x81, 3 at 0x82, 1 at
//! 0x83, 0 at 0x87, 6 at 0x89, 7 at 0x8A, 5 at 0x8B; the rest are scratch registers that read
//! back what was written. A byte channel's address is page << 16 | address; a word channel's
//! is (page & 0xFE) << 16 | address << 1 (its address and count count words).

use super::ide::DmaMemory;
use super::{At, DevCtx, Device, Snapshot};
use serde::{Deserialize, Serialize};

/// The first controller's ports.
pub const DMA1_BASE: u16 = 0x00;
pub const DMA1_LEN: u32 = 16;
/// The second controller's ports.
pub const DMA2_BASE: u16 = 0xC0;
pub const DMA2_LEN: u32 = 32;
/// The page registers (0x80, the POST code port, is not one of them here).
pub const PAGE_BASE: u16 = 0x81;
pub const PAGE_LEN: u32 = 15;

/// Page register offset (from 0x80) of each channel.
const PAGE_OF_CHANNEL: [usize; 8] = [0x7, 0x3, 0x1, 0x2, 0xF, 0xB, 0x9, 0xA];

/// Mode register fields.
const MODE_TYPE: u8 = 0x0C;
const TYPE_VERIFY: u8 = 0x00;
const TYPE_WRITE: u8 = 0x04;
const TYPE_READ: u8 = 0x08;
const MODE_AUTOINIT: u8 = 0x10;
const MODE_DECREMENT: u8 = 0x20;
const MODE_SELECT: u8 = 0xC0;
const SELECT_CASCADE: u8 = 0xC0;
/// Command register: the controller is disabled.
const COMMAND_DISABLE: u8 = 0x04;

/// Which way a transfer goes, as the device sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The device reads memory (the channel must be in a "read" transfer mode).
    FromMemory,
    /// The device writes memory (a "write" transfer mode).
    ToMemory,
}

/// What [`Dma::transfer`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moved {
    /// Bytes moved (a verify transfer counts without touching memory).
    pub bytes: usize,
    /// The channel reached terminal count.
    pub terminal_count: bool,
}

/// One channel's registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Channel {
    base_address: u16,
    base_count: u16,
    address: u16,
    count: u16,
    mode: u8,
}

/// One 8237A.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Controller {
    channels: [Channel; 4],
    command: u8,
    /// TC reached (bits 0-3) since the status was last read.
    status: u8,
    /// Software requests (bits 0-3).
    request: u8,
    /// Masked channels (bits 0-3).
    mask: u8,
    temporary: u8,
    /// The byte pointer flip-flop: the next access to a 16-bit register is its high byte.
    high_byte: bool,
}

impl Controller {
    /// Power-on and master clear: every channel masked, registers cleared.
    fn new() -> Controller {
        Controller {
            mask: 0x0F,
            ..Controller::default()
        }
    }

    fn read(&mut self, reg: u8) -> u8 {
        match reg {
            0..=7 => {
                let ch = &self.channels[usize::from(reg / 2)];
                let value = if reg.is_multiple_of(2) {
                    ch.address
                } else {
                    ch.count
                };
                let byte = if self.high_byte {
                    value >> 8
                } else {
                    value & 0xFF
                };
                self.high_byte = !self.high_byte;
                byte as u8
            }
            8 => {
                let status = self.status | (self.request << 4);
                self.status = 0;
                status
            }
            13 => self.temporary,
            15 => 0xF0 | self.mask,
            _ => 0xFF,
        }
    }

    fn write(&mut self, reg: u8, value: u8) {
        match reg {
            0..=7 => {
                let high = self.high_byte;
                self.high_byte = !high;
                let ch = &mut self.channels[usize::from(reg / 2)];
                let (base, current) = if reg.is_multiple_of(2) {
                    (&mut ch.base_address, &mut ch.address)
                } else {
                    (&mut ch.base_count, &mut ch.count)
                };
                *base = if high {
                    (*base & 0x00FF) | (u16::from(value) << 8)
                } else {
                    (*base & 0xFF00) | u16::from(value)
                };
                *current = *base;
            }
            8 => self.command = value,
            9 => {
                let bit = 1 << (value & 3);
                if value & 4 != 0 {
                    self.request |= bit;
                } else {
                    self.request &= !bit;
                }
            }
            10 => {
                let bit = 1 << (value & 3);
                if value & 4 != 0 {
                    self.mask |= bit;
                } else {
                    self.mask &= !bit;
                }
            }
            11 => self.channels[usize::from(value & 3)].mode = value & !3,
            12 => self.high_byte = false,
            13 => *self = Controller::new(),
            14 => self.mask = 0,
            15 => self.mask = value & 0x0F,
            _ => {}
        }
    }
}

/// Both controllers and the page registers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dma {
    controllers: [Controller; 2],
    /// The page registers 0x80-0x8F (0x80 is not mapped here: the POST code port has it).
    pages: [u8; 16],
}

impl Default for Dma {
    fn default() -> Self {
        Self::new()
    }
}

impl Dma {
    /// Power-on: every channel masked.
    pub fn new() -> Dma {
        Dma {
            controllers: [Controller::new(), Controller::new()],
            pages: [0; 16],
        }
    }

    /// Whether channel `channel` (0-7) would move data now: its controller is enabled (and, for
    /// the first, the cascade channel 4 is unmasked), it is unmasked and not in cascade mode.
    pub fn ready(&self, channel: usize) -> bool {
        let (c, n) = (channel / 4, channel % 4);
        let Some(ctrl) = self.controllers.get(c) else {
            return false;
        };
        let on = |ctrl: &Controller, n: usize| {
            ctrl.command & COMMAND_DISABLE == 0 && ctrl.mask & (1 << n) == 0
        };
        let cascade = c == 0 && !on(&self.controllers[1], 0);
        on(ctrl, n) && !cascade && ctrl.channels[n].mode & MODE_SELECT != SELECT_CASCADE
    }

    /// A device on `channel` moves up to `buf.len()` bytes (`ToMemory`: from `buf`; `FromMemory`:
    /// into `buf`) as the channel is programmed, stopping at terminal count, at the end of
    /// `buf`, or where memory is not RAM. Word channels move whole words. Nothing moves on a
    /// channel that is not [`Dma::ready`], or whose transfer type does not match `direction`
    /// (a verify transfer counts its bytes without touching memory).
    pub fn transfer(
        &mut self,
        channel: usize,
        direction: Direction,
        buf: &mut [u8],
        mem: &mut dyn DmaMemory,
    ) -> Moved {
        let none = Moved {
            bytes: 0,
            terminal_count: false,
        };
        if !self.ready(channel) {
            return none;
        }
        let (c, n) = (channel / 4, channel % 4);
        let page = self.pages[PAGE_OF_CHANNEL[channel]];
        let ctrl = &mut self.controllers[c];
        let ch = &mut ctrl.channels[n];
        let kind = ch.mode & MODE_TYPE;
        let verify = kind == TYPE_VERIFY;
        let matches = match direction {
            Direction::ToMemory => kind == TYPE_WRITE,
            Direction::FromMemory => kind == TYPE_READ,
        };
        if !matches && !verify {
            return none;
        }
        let unit = if c == 0 { 1 } else { 2 };
        let mut moved = 0;
        let mut terminal_count = false;
        while moved + unit <= buf.len() {
            let addr = if c == 0 {
                u32::from(page) << 16 | u32::from(ch.address)
            } else {
                u32::from(page & 0xFE) << 16 | u32::from(ch.address) << 1
            };
            let chunk = &mut buf[moved..moved + unit];
            let ok = verify
                || match direction {
                    Direction::ToMemory => mem.dma_write(addr, chunk),
                    Direction::FromMemory => mem.dma_read(addr, chunk),
                };
            if !ok {
                break;
            }
            moved += unit;
            ch.address = if ch.mode & MODE_DECREMENT != 0 {
                ch.address.wrapping_sub(1)
            } else {
                ch.address.wrapping_add(1)
            };
            // The count runs from N down through 0 to 0xFFFF: N+1 transfers.
            ch.count = ch.count.wrapping_sub(1);
            if ch.count == 0xFFFF {
                terminal_count = true;
                ctrl.status |= 1 << n;
                ctrl.request &= !(1 << n);
                if ch.mode & MODE_AUTOINIT != 0 {
                    ch.address = ch.base_address;
                    ch.count = ch.base_count;
                } else {
                    ctrl.mask |= 1 << n;
                }
                break;
            }
        }
        Moved {
            bytes: moved,
            terminal_count,
        }
    }
}

impl Device for Dma {
    fn read(&mut self, at: At, _size: u8, _ctx: &mut DevCtx) -> u32 {
        match at.base as u16 {
            DMA1_BASE => self.controllers[0].read(at.offset as u8).into(),
            DMA2_BASE if at.offset.is_multiple_of(2) => {
                self.controllers[1].read((at.offset / 2) as u8).into()
            }
            PAGE_BASE => self
                .pages
                .get(at.offset as usize + 1)
                .copied()
                .unwrap_or(0xFF)
                .into(),
            _ => 0xFF,
        }
    }

    fn write(&mut self, at: At, _size: u8, value: u32, _ctx: &mut DevCtx) {
        let value = value as u8;
        match at.base as u16 {
            DMA1_BASE => self.controllers[0].write(at.offset as u8, value),
            DMA2_BASE if at.offset.is_multiple_of(2) => {
                self.controllers[1].write((at.offset / 2) as u8, value)
            }
            PAGE_BASE => {
                if let Some(p) = self.pages.get_mut(at.offset as usize + 1) {
                    *p = value;
                }
            }
            _ => {}
        }
    }
}

/// The controllers hold only registers.
impl Snapshot for Dma {
    type State = Dma;
    fn state(&self) -> Dma {
        self.clone()
    }
    fn from_state(state: Dma) -> Result<Dma, String> {
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::testing::Rig;

    fn rig() -> Rig<Dma> {
        Rig::new(Dma::new(), DMA1_BASE.into())
    }

    /// Program channel `ch` (0-7) as a BIOS or driver does: mask it, clear the flip-flop, set
    /// the mode, address, count and page, unmask it.
    fn program(r: &mut Rig<Dma>, ch: u8, mode: u8, address: u16, count: u16, page: u8) {
        let (base, stride) = if ch < 4 {
            (u32::from(DMA1_BASE), 1)
        } else {
            (u32::from(DMA2_BASE), 2)
        };
        let n = ch % 4;
        let out = |r: &mut Rig<Dma>, reg: u32, v: u8| r.write_at(base, reg * stride, 1, v.into());
        out(r, 10, 4 | n);
        out(r, 12, 0);
        out(r, 11, mode | n);
        out(r, u32::from(n) * 2, address as u8);
        out(r, u32::from(n) * 2, (address >> 8) as u8);
        out(r, u32::from(n) * 2 + 1, count as u8);
        out(r, u32::from(n) * 2 + 1, (count >> 8) as u8);
        let page_port = PAGE_OF_CHANNEL[usize::from(ch)] as u32 - 1;
        r.write_at(PAGE_BASE.into(), page_port, 1, page.into());
        out(r, 10, n);
    }

    #[test]
    fn registers_read_back_through_the_flip_flop_and_reset_masks_everything() {
        let mut r = rig();
        assert_eq!(r.inb(15), 0xFF, "all masked at power-on");
        r.outb(12, 0);
        r.outb(4, 0x34);
        r.outb(4, 0x12);
        r.outb(12, 0);
        assert_eq!((r.inb(4), r.inb(4)), (0x34, 0x12));
        r.outb(14, 0);
        assert_eq!(r.inb(15) & 0x0F, 0);
        r.outb(13, 0); // master clear
        assert_eq!(r.inb(15) & 0x0F, 0x0F);
        // The page registers latch what is written (0x84 is a scratch register).
        r.write_at(PAGE_BASE.into(), 0x84 - 0x81, 1, 0x5A);
        assert_eq!(r.read_at(PAGE_BASE.into(), 0x84 - 0x81, 1), 0x5A);
        // The second controller's registers are at even addresses.
        r.write_at(DMA2_BASE.into(), 2 * 14, 1, 0);
        assert_eq!(r.read_at(DMA2_BASE.into(), 2 * 15, 1) & 0x0F, 0);
        assert_eq!(r.read_at(DMA2_BASE.into(), 1, 1), 0xFF);
    }

    #[test]
    fn a_byte_channel_writes_memory_up_to_terminal_count_and_masks_itself() {
        let mut r = rig();
        // Unmask the cascade channel 4 on the second controller, as the BIOS does.
        r.write_at(DMA2_BASE.into(), 2 * 11, 1, 0xC0);
        r.write_at(DMA2_BASE.into(), 2 * 10, 1, 0);
        // Channel 2, write to memory, single mode, 0x1_2340, count 9 (10 bytes).
        program(&mut r, 2, 0x44, 0x2340, 9, 0x01);
        let mut mem = vec![0u8; 0x2_0000];
        let mut data: Vec<u8> = (1..=16).collect();
        let m = r.dev.transfer(2, Direction::ToMemory, &mut data, &mut mem);
        assert_eq!(
            m,
            Moved {
                bytes: 10,
                terminal_count: true
            }
        );
        assert_eq!(&mem[0x1_2340..0x1_234A], &data[..10]);
        assert_eq!(mem[0x1_234A], 0);
        // TC in the status (once), the channel masked, the registers where they stopped.
        assert_eq!(r.inb(8) & 0x0F, 0x04);
        assert_eq!(r.inb(8) & 0x0F, 0);
        assert_eq!(r.inb(15) & 0x04, 0x04);
        r.outb(12, 0);
        assert_eq!((r.inb(4), r.inb(4)), (0x4A, 0x23));
        assert_eq!((r.inb(5), r.inb(5)), (0xFF, 0xFF));
        // Masked: nothing more moves.
        assert_eq!(
            r.dev
                .transfer(2, Direction::ToMemory, &mut data, &mut mem)
                .bytes,
            0
        );
    }

    #[test]
    fn auto_init_decrement_word_channels_and_wrong_directions() {
        let mut r = rig();
        r.write_at(DMA2_BASE.into(), 2 * 11, 1, 0xC0);
        r.write_at(DMA2_BASE.into(), 2 * 10, 1, 0);
        let mut mem: Vec<u8> = (0..0x4_0000u32).map(|i| (i * 3) as u8).collect();
        // Channel 1: read from memory, auto-init, decrement, from 0x0105 for 4 bytes.
        program(&mut r, 1, 0x78, 0x0105, 3, 0x00);
        let mut buf = [0u8; 6];
        let m = r.dev.transfer(1, Direction::FromMemory, &mut buf, &mut mem);
        assert_eq!((m.bytes, m.terminal_count), (4, true));
        assert_eq!(buf[..4], [mem[0x105], mem[0x104], mem[0x103], mem[0x102]]);
        // Reloaded and still unmasked: it goes again from the start.
        let m = r
            .dev
            .transfer(1, Direction::FromMemory, &mut buf[..2], &mut mem);
        assert_eq!((m.bytes, m.terminal_count), (2, false));
        assert_eq!(buf[..2], [mem[0x105], mem[0x104]]);
        // A device writing memory on a read channel moves nothing.
        assert_eq!(
            r.dev
                .transfer(1, Direction::ToMemory, &mut buf, &mut mem)
                .bytes,
            0
        );
        // Channel 5 (words): word address 0x8000 in page 0x02 is byte 0x3_0000; 2 words.
        program(&mut r, 5, 0x44, 0x8000, 1, 0x02);
        let mut words = [0xA1, 0xA2, 0xA3, 0xA4, 0xA5];
        let m = r.dev.transfer(5, Direction::ToMemory, &mut words, &mut mem);
        assert_eq!((m.bytes, m.terminal_count), (4, true));
        assert_eq!(mem[0x3_0000..0x3_0004], [0xA1, 0xA2, 0xA3, 0xA4]);
        // The first controller's channels stop when the cascade channel is masked.
        program(&mut r, 3, 0x44, 0, 10, 0);
        r.write_at(DMA2_BASE.into(), 2 * 10, 1, 4);
        assert!(!r.dev.ready(3));
        assert_eq!(
            r.dev
                .transfer(3, Direction::ToMemory, &mut buf, &mut mem)
                .bytes,
            0
        );
    }

    #[test]
    fn any_guest_input_is_harmless() {
        let mut r = rig();
        let mut x: u32 = 0x2468_ACE1;
        let mut mem = vec![0u8; 1 << 16];
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let (base, len) = match x % 3 {
                0 => (DMA1_BASE, DMA1_LEN),
                1 => (DMA2_BASE, DMA2_LEN),
                _ => (PAGE_BASE, PAGE_LEN),
            };
            let offset = (x >> 8) % len;
            r.write_at(base.into(), offset, 1, x >> 16);
            r.read_at(base.into(), offset, 1);
            let mut buf = [0u8; 64];
            let dir = if x & 1 == 0 {
                Direction::ToMemory
            } else {
                Direction::FromMemory
            };
            r.dev
                .transfer((x >> 24) as usize % 9, dir, &mut buf, &mut mem);
        }
    }
}
