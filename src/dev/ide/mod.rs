//! The PIIX3 IDE controller (PCI 00:01.1, 8086:7010): two channels at the legacy ports
//! (primary 0x1F0-0x1F7 + 0x3F6 on IRQ 14, secondary 0x170-0x177 + 0x376 on IRQ 15) with
//! bus-master DMA (BAR4: 16 I/O ports, 8 per channel), and up to two drives per channel: ATA
//! disks and ATAPI CD-ROMs (the SCSI side of those is [`super::atapi`]).
//!
//! # Register model
//!
//! As on real drives, each drive has its own copy of the task file: writes go to both drives
//! of a channel, reads come from the selected one. A selected drive that is absent reads status
//! and error 0 (so Linux classifies it "none"); a channel without drives floats high (0xFF).
//! The interrupt request (INTRQ) is a level, held until the guest reads the status register,
//! and masked by nIEN in the device control register.
//!
//! The function's PCI configuration gates it, as on the PIIX3: with I/O space (PCICMD bit 0)
//! off no port answers; IDETIM bit 15 turns a channel's legacy ports off; with bus mastering
//! (PCICMD bit 2) off a started DMA transfer waits and touches no memory. The board passes the
//! configuration in with [`Ide::sync_pci`].
//!
//! # Data
//!
//! PIO data moves through a channel buffer, one DRQ block at a time. DMA cannot happen inside a
//! port access (the CPU owns guest RAM while it runs), so the channel arms the transfer and the
//! board calls [`Ide::run_dma`] with RAM between CPU slices; a guest waiting for a DMA interrupt
//! halts, which ends the slice at once.
//!
//! Reads go through [`crate::block`] backends, which may answer "pending": the drive then stays
//! BSY until the host calls [`Ide::wake`] (through the board) and the read is asked again. A read
//! the backend fails is a medium error: UNC with the failing sector's address for a disk, CHECK
//! CONDITION with MEDIUM ERROR / unrecovered read error (03h/11h) for the CD-ROM.
//!
//! Every guest input is checked: an LBA beyond the disk gives IDNF, a bad command ABRT, a bad
//! PRD table a bus-master error; nothing panics.
//!
//! The files: the controller and its PCI function (here), the drives (`ata.rs`: the ATA disk and
//! what a drive is), a channel's task file and commands (`channel.rs`), and bus-master DMA
//! (`busmaster.rs`).

mod ata;
mod busmaster;
mod channel;
#[cfg(test)]
mod tests;

pub use ata::*;
use busmaster::BusMaster;
pub use busmaster::DmaMemory;
pub use channel::Channel;

use super::atapi::{self, Cdrom, Reply, Sense, CD_SECTOR};
use super::pci::{self, PciBar, PciConfig};
use super::{all_ones, At, DevCtx, Device, Snapshot};
use crate::block::{BlockBackend, BlockError, Overlay, ReadStatus, SECTOR};
use serde::{Deserialize, Serialize};

/// Command-block base and control port of the primary channel.
pub const PRIMARY_BASE: u16 = 0x1F0;
pub const PRIMARY_CTL: u16 = 0x3F6;
/// Command-block base and control port of the secondary channel.
pub const SECONDARY_BASE: u16 = 0x170;
pub const SECONDARY_CTL: u16 = 0x376;
/// ISA IRQs of the channels in legacy (compatibility) mode.
pub const PRIMARY_IRQ: u8 = 14;
pub const SECONDARY_IRQ: u8 = 15;
/// Where the IDE function sits on PCI bus 0.
pub const IDE_DEVFN: u8 = 1 << 3 | 1;
/// The bus-master BAR (BAR4) and its size.
pub const BM_BAR: u8 = 4;
pub const BM_SIZE: u32 = 16;
/// Where the board places BAR4 at reset (the firmware's job; Linux keeps an assigned BAR).
pub const BM_DEFAULT_BASE: u16 = 0xC000;

// Command-block register offsets.
/// Data (16/32-bit PIO).
const REG_DATA: u16 = 0;
/// Error (read) / features (write).
const REG_ERROR: u16 = 1;
/// Sector count (ATAPI: interrupt reason).
const REG_NSECT: u16 = 2;
/// LBA bits 0-7 (CHS: sector number).
const REG_LBAL: u16 = 3;
/// LBA bits 8-15 (CHS: cylinder low; ATAPI: byte count low).
const REG_LBAM: u16 = 4;
/// LBA bits 16-23 (CHS: cylinder high; ATAPI: byte count high).
const REG_LBAH: u16 = 5;
/// Device/head: drive select (bit 4), LBA mode (bit 6), LBA 24-27 or head.
const REG_DEVICE: u16 = 6;
/// Status (read) / command (write).
const REG_STATUS: u16 = 7;

// Status bits.
/// Busy: the drive owns the registers.
pub const ST_BSY: u8 = 0x80;
/// Drive ready.
pub const ST_DRDY: u8 = 0x40;
/// Device fault.
pub const ST_DF: u8 = 0x20;
/// Seek complete (obsolete, still set by drives).
pub const ST_DSC: u8 = 0x10;
/// Data request: the data port has (or wants) data.
pub const ST_DRQ: u8 = 0x08;
/// Error: see the error register.
pub const ST_ERR: u8 = 0x01;

// Error bits.
/// Uncorrectable data error.
pub const ER_UNC: u8 = 0x40;
/// ID not found (address beyond the disk).
pub const ER_IDNF: u8 = 0x10;
/// Command aborted.
pub const ER_ABRT: u8 = 0x04;

// Device control bits.
/// High-order byte: reads return the previous (LBA48) register values.
const CTL_HOB: u8 = 0x80;
/// Software reset of both drives.
const CTL_SRST: u8 = 0x04;
/// Interrupts disabled.
const CTL_NIEN: u8 = 0x02;

// Device register bits.
/// Drive 1 selected.
const DEV_DRV: u8 = 0x10;
/// LBA addressing.
const DEV_LBA: u8 = 0x40;

// ATAPI interrupt reason (sector count register).
/// Command/data: a packet is wanted (1) or data moves (0).
const IR_COD: u8 = 0x01;
/// Direction: to the host.
const IR_IO: u8 = 0x02;

// Bus-master registers (offset within a channel's 8 ports) and bits.
/// Command: start (bit 0), direction (bit 3: 1 = the device writes memory).
const BM_CMD: u8 = 0;
/// Status: active, error, interrupt, drive DMA capable, simplex.
const BM_STATUS: u8 = 2;
/// PRD table address (dword, bits 1:0 zero).
const BM_PRD: u8 = 4;
const BM_CMD_START: u8 = 0x01;
const BM_CMD_WRITE: u8 = 0x08;
/// Transfer active (read-only).
const BM_ST_ACTIVE: u8 = 0x01;
/// Error (write one to clear).
const BM_ST_ERROR: u8 = 0x02;
/// Interrupt: the drive raised INTRQ (write one to clear).
const BM_ST_INTR: u8 = 0x04;
/// Drive 0/1 DMA capable (software-set).
const BM_ST_CAPABLE: u8 = 0x60;
/// PRD entry flag: end of table.
const PRD_EOT: u32 = 0x8000_0000;
/// A PRD table lives in one 64 KiB region: at most this many entries.
const PRD_MAX_ENTRIES: usize = 8192;

// ATA commands.
const CMD_NOP: u8 = 0x00;
const CMD_DEVICE_RESET: u8 = 0x08;
const CMD_READ_SECTORS: u8 = 0x20;
const CMD_READ_SECTORS_NR: u8 = 0x21;
const CMD_READ_SECTORS_EXT: u8 = 0x24;
const CMD_READ_DMA_EXT: u8 = 0x25;
const CMD_READ_MULTIPLE_EXT: u8 = 0x29;
const CMD_WRITE_SECTORS: u8 = 0x30;
const CMD_WRITE_SECTORS_NR: u8 = 0x31;
const CMD_WRITE_SECTORS_EXT: u8 = 0x34;
const CMD_WRITE_DMA_EXT: u8 = 0x35;
const CMD_WRITE_MULTIPLE_EXT: u8 = 0x39;
const CMD_READ_VERIFY: u8 = 0x40;
const CMD_READ_VERIFY_NR: u8 = 0x41;
const CMD_READ_VERIFY_EXT: u8 = 0x42;
const CMD_SEEK: u8 = 0x70;
const CMD_DIAGNOSTIC: u8 = 0x90;
const CMD_INIT_PARAMS: u8 = 0x91;
const CMD_PACKET: u8 = 0xA0;
const CMD_IDENTIFY_PACKET: u8 = 0xA1;
const CMD_READ_MULTIPLE: u8 = 0xC4;
const CMD_WRITE_MULTIPLE: u8 = 0xC5;
const CMD_SET_MULTIPLE: u8 = 0xC6;
const CMD_READ_DMA: u8 = 0xC8;
const CMD_READ_DMA_NR: u8 = 0xC9;
const CMD_WRITE_DMA: u8 = 0xCA;
const CMD_WRITE_DMA_NR: u8 = 0xCB;
const CMD_STANDBY_IMMEDIATE: u8 = 0xE0;
const CMD_IDLE_IMMEDIATE: u8 = 0xE1;
const CMD_STANDBY: u8 = 0xE2;
const CMD_IDLE: u8 = 0xE3;
const CMD_CHECK_POWER: u8 = 0xE5;
const CMD_SLEEP: u8 = 0xE6;
const CMD_FLUSH_CACHE: u8 = 0xE7;
const CMD_FLUSH_CACHE_EXT: u8 = 0xEA;
const CMD_IDENTIFY: u8 = 0xEC;
const CMD_SET_FEATURES: u8 = 0xEF;

// SET FEATURES subcommands.
const SF_WCACHE_ON: u8 = 0x02;
const SF_XFER_MODE: u8 = 0x03;
const SF_WCACHE_OFF: u8 = 0x82;

/// Largest READ/WRITE MULTIPLE block the disks offer.
const MAX_MULTIPLE: u8 = 16;

/// IDETIM (primary at 0x40, secondary at 0x42) high byte, bit 7: IDE decode enable of the
/// channel's legacy ports.
const CFG_IDETIM_HI: [u8; 2] = [0x41, 0x43];
const IDETIM_DECODE: u8 = 0x80;

/// The PCI configuration space of the IDE function: legacy mode on both channels with
/// bus-master DMA (prog-if 0x80), BAR4 preassigned, IDE decode enabled in IDETIM.
pub fn pci_config() -> PciConfig {
    let mut c = PciConfig::new(IDE_DEVFN, 0x8086, 0x7010, 0x0101, 0x80, 0x00);
    c.set_bar(BM_BAR, PciBar::Io { size: BM_SIZE });
    c.set32(
        pci::CFG_BAR0 + 4 * BM_BAR,
        u32::from(BM_DEFAULT_BASE) | pci::BAR_IO,
    );
    c.set16(pci::CFG_COMMAND, pci::CMD_IO | pci::CMD_MASTER);
    c.set16(pci::CFG_STATUS, pci::STS_DEVSEL_MEDIUM | pci::STS_FAST_B2B);
    // IDETIM (0x40 primary, 0x42 secondary): bit 15 enables the channel's decode; SIDETIM
    // (0x44): slave timings. All guest-writable (Linux programs timings there).
    for r in 0x40..=0x44 {
        c.set_wmask8(r, 0xFF);
    }
    c.set8(0x41, 0x80);
    c.set8(0x43, 0x80);
    c
}

/// What the function's PCI configuration lets the controller do; the board copies it in with
/// [`Ide::sync_pci`] after the guest writes configuration space. All on at reset, as
/// [`pci_config`] starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PciGate {
    /// PCICMD bit 0 (IOSE): the legacy ports and the bus-master registers answer.
    io: bool,
    /// PCICMD bit 2 (BME): the bus master may request the bus. While it is off a started
    /// transfer stays pending (ACTIVE set, nothing moved) until the guest turns it back on.
    master: bool,
    /// IDETIM bit 15 per channel: the channel's legacy command and control ports decode.
    decode: [bool; 2],
}

impl Default for PciGate {
    fn default() -> Self {
        PciGate {
            io: true,
            master: true,
            decode: [true; 2],
        }
    }
}

/// The controller: two channels.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ide {
    channels: [Channel; 2],
    #[serde(default)]
    gate: PciGate,
}

/// The controller holds no caches. Its state is a copy without the drives' images (host
/// handles; a host re-attaches them), checked on the way in.
impl Snapshot for Ide {
    type State = Ide;
    fn state(&self) -> Ide {
        self.clone()
    }
    fn from_state(ide: Ide) -> Result<Ide, String> {
        for (n, channel) in ide.channels.iter().enumerate() {
            channel
                .check()
                .map_err(|e| format!("IDE channel {n}: {e}"))?;
        }
        Ok(ide)
    }
}

impl Default for Ide {
    fn default() -> Self {
        Self::new()
    }
}

/// Which of the controller's port windows an access hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdeWindow {
    /// Command block of channel n (8 ports).
    Command(usize),
    /// Device control / alternate status of channel n (1 port).
    Control(usize),
    /// Bus-master registers (16 ports, BAR4).
    BusMaster,
}

impl IdeWindow {
    /// The window a range starting at port `base` is: the legacy channels' fixed ports, or
    /// else the bus-master registers (wherever the guest put BAR4).
    pub fn at(base: u32) -> IdeWindow {
        match base {
            b if b == u32::from(PRIMARY_BASE) => IdeWindow::Command(0),
            b if b == u32::from(PRIMARY_CTL) => IdeWindow::Control(0),
            b if b == u32::from(SECONDARY_BASE) => IdeWindow::Command(1),
            b if b == u32::from(SECONDARY_CTL) => IdeWindow::Control(1),
            _ => IdeWindow::BusMaster,
        }
    }
}

impl Ide {
    /// A controller with no drives.
    pub fn new() -> Ide {
        Ide {
            channels: [Channel::new(PRIMARY_IRQ), Channel::new(SECONDARY_IRQ)],
            gate: PciGate::default(),
        }
    }

    /// Follow the function's PCI configuration (the board calls this after every guest write
    /// to configuration space): I/O decode, bus mastering, and the channels' decode enables.
    pub fn sync_pci(&mut self, cfg: &PciConfig) {
        let cmd = cfg.command();
        self.gate = PciGate {
            io: cmd & pci::CMD_IO != 0,
            master: cmd & pci::CMD_MASTER != 0,
            decode: CFG_IDETIM_HI.map(|r| cfg.get8(r) & IDETIM_DECODE != 0),
        };
    }

    /// Put `drive` at position `slot` (0 = primary master, 1 = primary slave, 2 = secondary
    /// master, 3 = secondary slave), replacing what was there; the drive starts reset.
    pub fn attach(&mut self, slot: usize, drive: Drive) {
        let Some(ch) = self.channels.get_mut(slot / 2) else {
            return;
        };
        ch.slots[slot % 2].drive = Some(drive);
        ch.reset_drives();
    }

    /// The drive at `slot`.
    pub fn drive(&self, slot: usize) -> Option<&Drive> {
        self.channels.get(slot / 2)?.slots[slot % 2].drive.as_ref()
    }

    /// The drive at `slot`, mutably (to insert or eject a CD).
    pub fn drive_mut(&mut self, slot: usize) -> Option<&mut Drive> {
        self.channels.get_mut(slot / 2)?.slots[slot % 2]
            .drive
            .as_mut()
    }

    /// DMA transfers completed since power-on, per channel.
    pub fn dma_count(&self) -> [u64; 2] {
        [self.channels[0].dma_count, self.channels[1].dma_count]
    }

    /// Disk and CD read commands whose data went by PIO since power-on, per channel.
    pub fn pio_read_count(&self) -> [u64; 2] {
        [
            self.channels[0].pio_read_count,
            self.channels[1].pio_read_count,
        ]
    }

    /// Hardware reset of the controller; drives and their media stay.
    pub fn reset(&mut self) {
        for ch in &mut self.channels {
            ch.control = 0;
            ch.intrq = false;
            ch.bm = BusMaster::default();
            ch.reset_drives();
        }
        self.gate = PciGate::default();
    }

    /// The host delivered data a backend was fetching: pending reads are asked again.
    pub fn wake(&mut self, ctx: &mut DevCtx) {
        for ch in &mut self.channels {
            ch.wake(ctx);
        }
    }

    /// Whether a drive waits for bytes its backend is still fetching (it answered "pending").
    pub fn waiting_for_host(&self) -> bool {
        self.channels.iter().any(|ch| ch.pending.is_some())
    }

    /// Whether channel `n`'s selected drive is in the middle of a command (BSY or DRQ in its
    /// status, as the guest would read it).
    pub fn busy(&self, n: usize) -> bool {
        self.channels
            .get(n)
            .is_some_and(|ch| ch.alt_status() & (ST_BSY | ST_DRQ) != 0)
    }

    /// Whether a DMA transfer is armed, started, and allowed on the bus (the board then calls
    /// [`Ide::run_dma`]).
    pub fn dma_ready(&self) -> bool {
        self.gate.master && self.channels.iter().any(Channel::dma_ready)
    }

    /// Perform armed DMA transfers against guest memory. Nothing moves while PCI bus
    /// mastering is off.
    pub fn run_dma(&mut self, mem: &mut dyn DmaMemory, ctx: &mut DevCtx) {
        if !self.gate.master {
            return;
        }
        for ch in &mut self.channels {
            if ch.dma_ready() {
                ch.run_dma(mem, ctx);
            }
        }
    }
}

impl Ide {
    /// Whether the function answers `window` under its PCI configuration.
    fn decodes(&self, window: IdeWindow) -> bool {
        let g = self.gate;
        g.io && match window {
            IdeWindow::Command(n) | IdeWindow::Control(n) => {
                g.decode.get(n).copied().unwrap_or(false)
            }
            IdeWindow::BusMaster => true,
        }
    }
}

/// The controller on the port bus, at its four legacy windows and the bus-master window (see
/// [`IdeWindow::at`]).
impl Device for Ide {
    fn read(&mut self, at: At, size: u8, ctx: &mut DevCtx) -> u32 {
        let window = IdeWindow::at(at.base);
        if !self.decodes(window) {
            // Nobody claims the cycle: the bus floats.
            return all_ones(size);
        }
        let offset = at.offset as u16;
        match window {
            IdeWindow::Command(n) => match self.channels.get_mut(n) {
                Some(ch) if offset < 8 => {
                    let v = ch.read_reg(offset, size, ctx);
                    if offset == REG_DATA {
                        v
                    } else {
                        // A wide read of a byte register: the neighbours float.
                        v | (u32::MAX << 8) & (u32::MAX >> (32 - 8 * u32::from(size.clamp(1, 4))))
                    }
                }
                _ => 0xFFFF_FFFF,
            },
            // Guest reads the alternate status (no interrupt acknowledge).
            IdeWindow::Control(n) => self.channels.get(n).map_or(0xFF, |c| c.alt_status()).into(),
            IdeWindow::BusMaster => {
                let mut v = 0u32;
                for i in 0..u16::from(size.clamp(1, 4)) {
                    let off = offset.wrapping_add(i);
                    let b = match self.channels.get((off / 8) as usize) {
                        Some(ch) => ch.bm_read((off % 8) as u8),
                        None => 0xFF,
                    };
                    v |= u32::from(b) << (8 * i);
                }
                v
            }
        }
    }

    fn write(&mut self, at: At, size: u8, value: u32, ctx: &mut DevCtx) {
        let window = IdeWindow::at(at.base);
        if !self.decodes(window) {
            return;
        }
        let offset = at.offset as u16;
        match window {
            IdeWindow::Command(n) => {
                if let Some(ch) = self.channels.get_mut(n) {
                    if offset < 8 {
                        ch.write_reg(offset, size, value, ctx);
                    }
                }
            }
            // Guest writes the device control register.
            IdeWindow::Control(n) => {
                if let Some(ch) = self.channels.get_mut(n) {
                    ch.write_control(value as u8, ctx);
                }
            }
            IdeWindow::BusMaster => {
                for i in 0..u16::from(size.clamp(1, 4)) {
                    let off = offset.wrapping_add(i);
                    if let Some(ch) = self.channels.get_mut((off / 8) as usize) {
                        ch.bm_write((off % 8) as u8, (value >> (8 * i)) as u8);
                    }
                }
            }
        }
    }
}
