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

use super::atapi::{self, Cdrom, Reply, Sense, CD_SECTOR};
use super::pci::{self, PciBar, PciConfig};
use super::{all_ones, At, DevCtx, Device};
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

/// Guest memory as a DMA engine sees it.
pub trait DmaMemory {
    /// Copy from physical `addr`; false if the range is not RAM.
    fn dma_read(&mut self, addr: u32, buf: &mut [u8]) -> bool;
    /// Copy to physical `addr`; false if the range is not RAM.
    fn dma_write(&mut self, addr: u32, data: &[u8]) -> bool;
}

impl DmaMemory for crate::mem::Memory {
    fn dma_read(&mut self, addr: u32, buf: &mut [u8]) -> bool {
        let a = addr as usize;
        match a
            .checked_add(buf.len())
            .and_then(|end| self.ram.get(a..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
    fn dma_write(&mut self, addr: u32, data: &[u8]) -> bool {
        let a = addr as usize;
        if a.checked_add(data.len())
            .is_none_or(|end| end > self.ram.len())
        {
            return false;
        }
        // `load` also drops decoded code from the pages written.
        self.load(addr, data);
        true
    }
}

impl DmaMemory for Vec<u8> {
    fn dma_read(&mut self, addr: u32, buf: &mut [u8]) -> bool {
        let a = addr as usize;
        match a.checked_add(buf.len()).and_then(|end| self.get(a..end)) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
    fn dma_write(&mut self, addr: u32, data: &[u8]) -> bool {
        let a = addr as usize;
        match a
            .checked_add(data.len())
            .and_then(|end| self.get_mut(a..end))
        {
            Some(dst) => {
                dst.copy_from_slice(data);
                true
            }
            None => false,
        }
    }
}

/// Why an image cannot be a disk.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("the image is empty")]
    Empty,
    #[error("the image size ({0} bytes) is not a multiple of 512 bytes")]
    NotSectorMultiple(u64),
    #[error("the image is too large ({0} bytes; LBA48 ends at 2^48 sectors)")]
    TooLarge(u64),
}

/// An ATA hard disk.
#[derive(Debug, Serialize, Deserialize)]
pub struct AtaDisk {
    disk: Overlay,
    /// Capacity in 512-byte sectors.
    sectors: u64,
    /// Default CHS geometry reported by IDENTIFY.
    cyls: u16,
    heads: u8,
    spt: u8,
    /// Current CHS translation (INITIALIZE DEVICE PARAMETERS).
    cur_heads: u8,
    cur_spt: u8,
    /// READ/WRITE MULTIPLE block size in sectors (0 = disabled).
    multiple: u8,
    write_cache: bool,
    /// Selected transfer mode (SET FEATURES 03h value).
    xfer_mode: u8,
    serial: String,
}

impl AtaDisk {
    /// A disk over `image`. Its size must be a whole number of 512-byte sectors (a partial
    /// tail cannot be written back faithfully, so it is refused rather than padded).
    pub fn new(image: Box<dyn BlockBackend>) -> Result<AtaDisk, ImageError> {
        let len = image.len();
        if len == 0 {
            return Err(ImageError::Empty);
        }
        if !len.is_multiple_of(SECTOR as u64) {
            return Err(ImageError::NotSectorMultiple(len));
        }
        let sectors = len / SECTOR as u64;
        if sectors > 1 << 48 {
            return Err(ImageError::TooLarge(len));
        }
        let (heads, spt) = (16u8, 63u8);
        let cyls = (sectors / (16 * 63)).clamp(1, 16383) as u16;
        Ok(AtaDisk {
            disk: Overlay::new(image),
            sectors,
            cyls,
            heads,
            spt,
            cur_heads: heads,
            cur_spt: spt,
            multiple: 0,
            write_cache: true,
            xfer_mode: 0x0C, // PIO 4
            serial: "WASM86-0000000001".into(),
        })
    }

    /// Capacity in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// The copy-on-write overlay holding the guest's writes.
    pub fn overlay(&self) -> &Overlay {
        &self.disk
    }

    fn identify(&self) -> [u16; 256] {
        let mut w = [0u16; 256];
        let chs_cap = u32::from(self.cyls) * u32::from(self.cur_heads) * u32::from(self.cur_spt);
        let cur_cyls = if self.cur_heads == 0 || self.cur_spt == 0 {
            0
        } else {
            (self.sectors.min(chs_cap as u64)
                / (u64::from(self.cur_heads) * u64::from(self.cur_spt)))
            .min(65535) as u16
        };
        w[0] = 0x0040; // fixed disk
        w[1] = self.cyls;
        w[3] = self.heads.into();
        w[6] = self.spt.into();
        put_string(&mut w[10..20], &self.serial);
        put_string(&mut w[23..27], "1.0");
        put_string(&mut w[27..47], "WASM86 HARDDISK");
        w[47] = 0x8000 | u16::from(MAX_MULTIPLE);
        w[49] = 0x0300; // LBA, DMA
        w[50] = 0x4000;
        w[53] = 0x0007; // words 54-58, 64-70, 88 valid
        w[54] = cur_cyls;
        w[55] = self.cur_heads.into();
        w[56] = self.cur_spt.into();
        let cur_cap = u32::from(cur_cyls) * u32::from(self.cur_heads) * u32::from(self.cur_spt);
        w[57] = cur_cap as u16;
        w[58] = (cur_cap >> 16) as u16;
        if self.multiple != 0 {
            w[59] = 0x0100 | u16::from(self.multiple);
        }
        let lba28 = self.sectors.min(0x0FFF_FFFF) as u32;
        w[60] = lba28 as u16;
        w[61] = (lba28 >> 16) as u16;
        dma_mode_words(&mut w, self.xfer_mode);
        w[64] = 0x0003; // PIO 3 and 4
        w[65] = 120;
        w[66] = 120;
        w[67] = 120;
        w[68] = 120;
        w[80] = 0x007E; // ATA-1 to ATA-6
        w[82] = 0x0028; // write cache, power management
        w[83] = 0x7400; // FLUSH CACHE EXT, FLUSH CACHE, LBA48
        w[84] = 0x4000;
        w[85] = 0x0008 | if self.write_cache { 0x0020 } else { 0 };
        w[86] = 0x3400;
        w[87] = 0x4000;
        w[93] = 0x4000 | 0x2000 | 0x0001; // reset result, 80-wire cable
        for (i, word) in w[100..104].iter_mut().enumerate() {
            *word = (self.sectors >> (16 * i)) as u16;
        }
        w
    }
}

/// ATA strings: two characters per word, the first in the high byte, space padded.
fn put_string(words: &mut [u16], s: &str) {
    let mut bytes = s.bytes().chain(std::iter::repeat(b' '));
    for w in words {
        let hi = bytes.next().unwrap_or(b' ');
        let lo = bytes.next().unwrap_or(b' ');
        *w = u16::from(hi) << 8 | u16::from(lo);
    }
}

/// IDENTIFY words 63 and 88: multiword DMA 0-2 and Ultra DMA 0-5 supported, with the mode
/// selected by SET FEATURES (`xfer_mode`, its subcommand value) in the high byte.
fn dma_mode_words(w: &mut [u16; 256], xfer_mode: u8) {
    w[63] = 0x0007;
    if xfer_mode & 0xF8 == 0x20 {
        w[63] |= 0x100 << (xfer_mode & 7).min(2);
    }
    w[88] = 0x003F;
    if xfer_mode & 0xF8 == 0x40 {
        w[88] |= 0x100 << (xfer_mode & 7).min(5);
    }
}

/// IDENTIFY PACKET DEVICE. The DMA words are what libata reads to pick a transfer mode: word 49
/// bit 8 (DMA supported), word 63 (multiword DMA modes), word 53 bit 2 with word 88 (Ultra DMA
/// modes; ata_piix filters them out for the PIIX3, leaving multiword DMA 2). Word 62 stays 0: DMADIR (the
/// direction in the PACKET features) is for SATA bridges, and a PATA drive must not ask for it.
fn atapi_identify(xfer_mode: u8) -> [u16; 256] {
    let mut w = [0u16; 256];
    // ATAPI, CD-ROM, removable, accelerated DRQ (no interrupt for the packet), 12-byte packets.
    w[0] = 0x85C0;
    put_string(&mut w[10..20], "WASM86-CD-000000001");
    put_string(&mut w[23..27], "1.0");
    put_string(&mut w[27..47], "WASM86 CD-ROM");
    w[49] = 0x0300; // LBA, DMA
    w[53] = 0x0007;
    dma_mode_words(&mut w, xfer_mode);
    w[64] = 0x0003;
    w[65] = 120;
    w[66] = 120;
    w[67] = 120;
    w[68] = 120;
    w[71] = 30;
    w[72] = 30;
    w[80] = 0x007E;
    w
}

fn words_to_bytes(w: &[u16; 256]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A drive on a channel.
#[derive(Debug, Serialize, Deserialize)]
pub enum Drive {
    Ata(AtaDisk),
    Atapi(Cdrom),
}

impl Drive {
    /// The drive's image: the disk, or the CD-ROM's disc if one is in.
    pub fn image_mut(&mut self) -> Option<&mut Overlay> {
        match self {
            Drive::Ata(disk) => Some(&mut disk.disk),
            Drive::Atapi(cd) => cd.media_mut(),
        }
    }

    fn is_atapi(&self) -> bool {
        matches!(self, Drive::Atapi(_))
    }
}

/// One drive's copy of the task file registers (current and previous, for LBA48).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct TaskFile {
    feature: u8,
    nsect: u8,
    lbal: u8,
    lbam: u8,
    lbah: u8,
    hob_feature: u8,
    hob_nsect: u8,
    hob_lbal: u8,
    hob_lbam: u8,
    hob_lbah: u8,
}

impl TaskFile {
    fn lba28(&self, device: u8) -> u64 {
        u64::from(device & 0x0F) << 24
            | u64::from(self.lbah) << 16
            | u64::from(self.lbam) << 8
            | u64::from(self.lbal)
    }
    fn lba48(&self) -> u64 {
        u64::from(self.hob_lbah) << 40
            | u64::from(self.hob_lbam) << 32
            | u64::from(self.hob_lbal) << 24
            | u64::from(self.lbah) << 16
            | u64::from(self.lbam) << 8
            | u64::from(self.lbal)
    }
    fn set_signature(&mut self, atapi: bool) {
        self.nsect = 1;
        self.lbal = 1;
        (self.lbam, self.lbah) = if atapi { (0x14, 0xEB) } else { (0, 0) };
    }
}

/// A drive position with its registers.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Slot {
    drive: Option<Drive>,
    tf: TaskFile,
    status: u8,
    error: u8,
    /// Transfer mode an ATAPI drive was set to (SET FEATURES 03h value; 0 = PIO default).
    /// ATA disks keep theirs in [`AtaDisk`].
    #[serde(default)]
    atapi_xfer_mode: u8,
}

/// What happens when data has been loaded into the buffer.
#[allow(clippy::enum_variant_names)] // all three are data-in phases
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Then {
    /// ATA PIO in: `left` sectors follow this block, `per_block` at a time, from `next`.
    PioIn {
        next: u64,
        left: u64,
        per_block: u64,
    },
    /// DMA to memory (ATA or ATAPI).
    DmaIn { atapi: bool },
    /// ATAPI PIO in, in chunks of at most `limit` bytes.
    PacketIn { limit: u16 },
}

/// A backend read in progress (maybe waiting for the host).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Load {
    /// Which drive (0/1) of the channel.
    drive: usize,
    /// ATA sector or CD sector (by `cd`).
    lba: u64,
    bytes: usize,
    cd: bool,
    then: Then,
}

/// The data phase the channel is in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
enum Xfer {
    #[default]
    Idle,
    /// The buffer holds a block for the host; see [`Then::PioIn`].
    PioIn {
        next: u64,
        left: u64,
        per_block: u64,
    },
    /// The host fills the buffer, to be written at `lba`; `left` sectors follow.
    PioOut { lba: u64, left: u64, per_block: u64 },
    /// The host writes a 12-byte ATAPI packet.
    Packet,
    /// ATAPI data to the host, in chunks of `limit`.
    PacketIn { limit: u16 },
    /// DMA armed: to memory (buffer full) or from memory (to be written at `lba`).
    Dma {
        to_memory: bool,
        atapi: bool,
        lba: u64,
    },
}

/// Bus-master registers of one channel.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct BusMaster {
    cmd: u8,
    status: u8,
    prd: u32,
}

/// One IDE channel.
#[derive(Debug, Serialize, Deserialize)]
pub struct Channel {
    irq: u8,
    slots: [Slot; 2],
    /// Device/head register (shared).
    device: u8,
    /// Device control register.
    control: u8,
    /// INTRQ before masking.
    intrq: bool,
    /// Which drive the current transfer belongs to.
    active: usize,
    xfer: Xfer,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    pending: Option<Load>,
    bm: BusMaster,
    /// DMA transfers completed (for statistics and tests).
    dma_count: u64,
    /// Disk and CD read commands whose data went by PIO (for statistics and tests).
    #[serde(default)]
    pio_read_count: u64,
}

impl Channel {
    fn new(irq: u8) -> Channel {
        let mut c = Channel {
            irq,
            slots: Default::default(),
            device: 0xA0,
            control: 0,
            intrq: false,
            active: 0,
            xfer: Xfer::Idle,
            buf: Vec::new(),
            pos: 0,
            end: 0,
            pending: None,
            bm: BusMaster::default(),
            dma_count: 0,
            pio_read_count: 0,
        };
        c.reset_drives();
        c
    }

    fn sel(&self) -> usize {
        usize::from(self.device & DEV_DRV != 0)
    }

    fn present(&self) -> bool {
        self.slots.iter().any(|s| s.drive.is_some())
    }

    /// Power-on / soft reset of the drives: signatures, diagnostic code, idle.
    fn reset_drives(&mut self) {
        self.xfer = Xfer::Idle;
        self.pending = None;
        self.pos = 0;
        self.end = 0;
        self.device = 0xA0;
        for s in &mut self.slots {
            let atapi = s.drive.as_ref().is_some_and(Drive::is_atapi);
            s.tf.set_signature(atapi);
            s.error = 0x01;
            s.status = match &mut s.drive {
                Some(Drive::Ata(_)) => ST_DRDY | ST_DSC,
                Some(Drive::Atapi(cd)) => {
                    cd.reset();
                    0
                }
                None => 0,
            };
            if let Some(Drive::Ata(d)) = &mut s.drive {
                d.cur_heads = d.heads;
                d.cur_spt = d.spt;
            }
        }
    }

    fn update_irq(&self, ctx: &mut DevCtx) {
        ctx.irq
            .set(self.irq, self.intrq && self.control & CTL_NIEN == 0);
    }

    fn raise(&mut self, ctx: &mut DevCtx) {
        self.intrq = true;
        self.bm.status |= BM_ST_INTR;
        self.update_irq(ctx);
    }

    /// Command finished without data for drive `d`.
    fn done(&mut self, d: usize, ctx: &mut DevCtx) {
        self.xfer = Xfer::Idle;
        let s = &mut self.slots[d];
        s.status = ST_DRDY | ST_DSC;
        s.error = 0;
        self.raise(ctx);
    }

    /// Command failed with `err` for drive `d`.
    fn fail(&mut self, d: usize, err: u8, ctx: &mut DevCtx) {
        self.xfer = Xfer::Idle;
        self.pending = None;
        let s = &mut self.slots[d];
        s.status = ST_DRDY | ST_ERR;
        s.error = err;
        self.raise(ctx);
    }

    /// ATAPI command finished: status phase (interrupt reason I/O + C/D).
    fn packet_done(&mut self, d: usize, sense: Option<Sense>, ctx: &mut DevCtx) {
        self.xfer = Xfer::Idle;
        self.pending = None;
        let s = &mut self.slots[d];
        s.tf.nsect = IR_IO | IR_COD;
        match sense {
            None => {
                s.status = ST_DRDY | ST_DSC;
                s.error = 0;
            }
            Some(sense) => {
                // The sense key in the high nibble (Linux then asks REQUEST SENSE for the rest);
                // ABRT only when the command itself was refused.
                s.status = ST_DRDY | ST_ERR;
                s.error = sense.key << 4
                    | if sense.key == atapi::SK_ILLEGAL_REQUEST {
                        ER_ABRT
                    } else {
                        0
                    };
            }
        }
        if let Some(Drive::Atapi(cd)) = &mut s.drive {
            cd.set_sense(sense.unwrap_or_default());
        }
        self.raise(ctx);
    }

    // ---- register access ----------------------------------------------------------------

    fn read_reg(&mut self, reg: u16, size: u8, ctx: &mut DevCtx) -> u32 {
        if reg == REG_DATA {
            return self.data_read(size, ctx);
        }
        if !self.present() {
            return 0xFF;
        }
        let d = self.sel();
        let absent = self.slots[d].drive.is_none();
        let hob = self.control & CTL_HOB != 0;
        let s = &self.slots[d];
        let v = match reg {
            // Guest reads the error register.
            REG_ERROR if absent => 0,
            REG_ERROR if hob => s.tf.hob_feature,
            REG_ERROR => s.error,
            // Guest reads the sector count, LBA registers (current or previous by HOB).
            REG_NSECT if hob => s.tf.hob_nsect,
            REG_NSECT => s.tf.nsect,
            REG_LBAL if hob => s.tf.hob_lbal,
            REG_LBAL => s.tf.lbal,
            REG_LBAM if hob => s.tf.hob_lbam,
            REG_LBAM => s.tf.lbam,
            REG_LBAH if hob => s.tf.hob_lbah,
            REG_LBAH => s.tf.lbah,
            REG_DEVICE => self.device,
            // Guest reads the status: acknowledges the interrupt.
            _ => {
                self.intrq = false;
                self.update_irq(ctx);
                if absent {
                    0
                } else {
                    s.status
                }
            }
        };
        u32::from(v)
    }

    fn alt_status(&self) -> u8 {
        if !self.present() {
            return 0xFF;
        }
        let s = &self.slots[self.sel()];
        if s.drive.is_none() {
            0
        } else {
            s.status
        }
    }

    fn write_reg(&mut self, reg: u16, size: u8, v: u32, ctx: &mut DevCtx) {
        if reg == REG_DATA {
            self.data_write(size, v, ctx);
            return;
        }
        let b = v as u8;
        // Writing the task file clears HOB.
        self.control &= !CTL_HOB;
        match reg {
            REG_ERROR..=REG_LBAH => {
                for s in &mut self.slots {
                    let tf = &mut s.tf;
                    let (cur, prev) = match reg {
                        REG_ERROR => (&mut tf.feature, &mut tf.hob_feature),
                        REG_NSECT => (&mut tf.nsect, &mut tf.hob_nsect),
                        REG_LBAL => (&mut tf.lbal, &mut tf.hob_lbal),
                        REG_LBAM => (&mut tf.lbam, &mut tf.hob_lbam),
                        _ => (&mut tf.lbah, &mut tf.hob_lbah),
                    };
                    *prev = *cur;
                    *cur = b;
                }
            }
            // Guest selects a drive (and the LBA high bits / head).
            REG_DEVICE => self.device = b | 0xA0,
            // Guest issues a command to the selected drive.
            REG_STATUS => self.command(b, ctx),
            _ => {}
        }
    }

    fn write_control(&mut self, v: u8, ctx: &mut DevCtx) {
        let was = self.control;
        self.control = v & (CTL_HOB | CTL_SRST | CTL_NIEN);
        if v & CTL_SRST != 0 && was & CTL_SRST == 0 {
            // Guest starts a soft reset: both drives busy, transfers abandoned.
            self.xfer = Xfer::Idle;
            self.pending = None;
            for s in &mut self.slots {
                if s.drive.is_some() {
                    s.status = ST_BSY;
                }
            }
            self.intrq = false;
        } else if v & CTL_SRST == 0 && was & CTL_SRST != 0 {
            // Guest ends the soft reset: drives show their signatures.
            self.reset_drives();
        }
        self.update_irq(ctx);
    }

    fn data_read(&mut self, size: u8, ctx: &mut DevCtx) -> u32 {
        let pio_in = matches!(self.xfer, Xfer::PioIn { .. } | Xfer::PacketIn { .. });
        if !pio_in || self.slots[self.active].status & ST_DRQ == 0 {
            return u32::MAX >> (32 - 8 * u32::from(size.clamp(1, 4)));
        }
        let mut v = 0u32;
        for i in 0..usize::from(size.clamp(1, 4)) {
            if self.pos < self.end {
                v |= u32::from(self.buf.get(self.pos).copied().unwrap_or(0)) << (8 * i);
                self.pos += 1;
            }
        }
        if self.pos >= self.end {
            self.block_read_done(ctx);
        }
        v
    }

    fn data_write(&mut self, size: u8, v: u32, ctx: &mut DevCtx) {
        let out = matches!(self.xfer, Xfer::PioOut { .. } | Xfer::Packet);
        if !out || self.slots[self.active].status & ST_DRQ == 0 {
            return;
        }
        for i in 0..usize::from(size.clamp(1, 4)) {
            if self.pos < self.end {
                if let Some(b) = self.buf.get_mut(self.pos) {
                    *b = (v >> (8 * i)) as u8;
                }
                self.pos += 1;
            }
        }
        if self.pos >= self.end {
            self.block_written(ctx);
        }
    }

    /// The host has read the whole DRQ block.
    fn block_read_done(&mut self, ctx: &mut DevCtx) {
        let d = self.active;
        match self.xfer {
            Xfer::PioIn {
                next,
                left,
                per_block,
            } if left > 0 => {
                let n = left.min(per_block);
                self.load(
                    Load {
                        drive: d,
                        lba: next,
                        bytes: n as usize * SECTOR,
                        cd: false,
                        then: Then::PioIn {
                            next: next + n,
                            left: left - n,
                            per_block,
                        },
                    },
                    ctx,
                );
            }
            Xfer::PacketIn { limit } if self.end < self.buf.len() => {
                self.packet_chunk(limit, ctx);
            }
            Xfer::PacketIn { .. } => self.packet_done(d, None, ctx),
            _ => {
                // Last block of a PIO read: no interrupt.
                self.xfer = Xfer::Idle;
                let s = &mut self.slots[d];
                s.status = ST_DRDY | ST_DSC;
            }
        }
    }

    /// The host has written the whole DRQ block.
    fn block_written(&mut self, ctx: &mut DevCtx) {
        let d = self.active;
        match self.xfer {
            Xfer::Packet => {
                let mut cdb = [0u8; 12];
                cdb.copy_from_slice(&self.buf[..12]);
                self.packet(d, &cdb, ctx);
            }
            Xfer::PioOut {
                lba,
                left,
                per_block,
            } => {
                if let Some(Drive::Ata(disk)) = &mut self.slots[d].drive {
                    disk.disk.write(lba, &self.buf[..self.end]);
                }
                let written = (self.end / SECTOR) as u64;
                if left > 0 {
                    let n = left.min(per_block);
                    self.xfer = Xfer::PioOut {
                        lba: lba + written,
                        left: left - n,
                        per_block,
                    };
                    self.buf.clear();
                    self.buf.resize(n as usize * SECTOR, 0);
                    self.pos = 0;
                    self.end = self.buf.len();
                    self.slots[d].status = ST_DRDY | ST_DSC | ST_DRQ;
                    self.raise(ctx);
                } else {
                    self.done(d, ctx);
                }
            }
            _ => {}
        }
    }

    // ---- backend reads --------------------------------------------------------------------

    /// Start (or retry) a backend read; on success continue as `load.then` says.
    fn load(&mut self, load: Load, ctx: &mut DevCtx) {
        self.active = load.drive;
        self.buf.clear();
        self.buf.resize(load.bytes, 0);
        let r = match &mut self.slots[load.drive].drive {
            Some(Drive::Ata(d)) => d
                .disk
                .read(load.lba.saturating_mul(SECTOR as u64), &mut self.buf),
            Some(Drive::Atapi(cd)) => cd.read(load.lba, &mut self.buf),
            None => Err(BlockError::Io("no drive".into())),
        };
        match r {
            Ok(ReadStatus::Pending) => {
                self.pending = Some(load);
                self.slots[load.drive].status = ST_BSY;
            }
            Ok(ReadStatus::Ready) => {
                self.pending = None;
                self.loaded(load, ctx);
            }
            // The backend could not read (a file error, a fetch that failed after its
            // retries): the medium error a real drive reports for an unreadable sector.
            Err(_) if load.cd => {
                // The host may have ejected the disc while the read waited.
                let ejected = matches!(&self.slots[load.drive].drive,
                    Some(Drive::Atapi(cd)) if !cd.has_media());
                let sense = if ejected {
                    Sense::new(atapi::SK_NOT_READY, atapi::ASC_MEDIUM_NOT_PRESENT, 0)
                } else {
                    Sense::new(atapi::SK_MEDIUM_ERROR, atapi::ASC_READ_ERROR, 0)
                };
                self.packet_done(load.drive, Some(sense), ctx);
            }
            Err(_) => {
                self.report_lba(load.drive, load.lba);
                self.fail(load.drive, ER_UNC, ctx);
            }
        }
    }

    /// After an error, the task file holds the address of the first sector that failed (LBA,
    /// with bits 24-47 in the previous registers, or CHS as the command addressed it).
    fn report_lba(&mut self, d: usize, lba: u64) {
        let lba_mode = self.device & DEV_LBA != 0;
        let s = &mut self.slots[d];
        let Some(Drive::Ata(disk)) = &s.drive else {
            return;
        };
        let tf = &mut s.tf;
        if lba_mode {
            let b = lba.to_le_bytes();
            (tf.lbal, tf.lbam, tf.lbah) = (b[0], b[1], b[2]);
            (tf.hob_lbal, tf.hob_lbam, tf.hob_lbah) = (b[3], b[4], b[5]);
            self.device = self.device & 0xF0 | b[3] & 0x0F;
        } else {
            let (heads, spt) = (u64::from(disk.cur_heads), u64::from(disk.cur_spt));
            if heads == 0 || spt == 0 {
                return;
            }
            let cyl = lba / (heads * spt);
            tf.lbal = (lba % spt + 1) as u8;
            (tf.lbam, tf.lbah) = (cyl as u8, (cyl >> 8) as u8);
            self.device = self.device & 0xF0 | ((lba / spt) % heads) as u8 & 0x0F;
        }
    }

    fn loaded(&mut self, load: Load, ctx: &mut DevCtx) {
        let d = load.drive;
        match load.then {
            Then::PioIn {
                next,
                left,
                per_block,
            } => {
                self.xfer = Xfer::PioIn {
                    next,
                    left,
                    per_block,
                };
                self.pos = 0;
                self.end = self.buf.len();
                self.slots[d].status = ST_DRDY | ST_DSC | ST_DRQ;
                self.raise(ctx);
            }
            Then::DmaIn { atapi } => {
                self.xfer = Xfer::Dma {
                    to_memory: true,
                    atapi,
                    lba: load.lba,
                };
                self.slots[d].status = ST_DRDY | ST_DSC | ST_DRQ;
            }
            Then::PacketIn { limit } => {
                self.xfer = Xfer::PacketIn { limit };
                self.end = 0;
                self.packet_chunk(limit, ctx);
            }
        }
    }

    /// Retry a read the backend said was pending.
    fn wake(&mut self, ctx: &mut DevCtx) {
        if let Some(load) = self.pending.take() {
            self.load(load, ctx);
        }
    }

    // ---- ATA commands -----------------------------------------------------------------------

    fn command(&mut self, cmd: u8, ctx: &mut DevCtx) {
        let d = self.sel();
        let Some(drive) = &self.slots[d].drive else {
            // No drive answers: the command goes nowhere.
            return;
        };
        if self.slots[d].status & ST_BSY != 0 && cmd != CMD_DEVICE_RESET {
            return;
        }
        let atapi = drive.is_atapi();
        self.active = d;
        self.xfer = Xfer::Idle;
        self.pending = None;
        match cmd {
            // Guest asks who is there.
            CMD_IDENTIFY if atapi => {
                // ATAPI devices abort IDENTIFY DEVICE and show their signature.
                self.slots[d].tf.set_signature(true);
                self.fail(d, ER_ABRT, ctx);
            }
            CMD_IDENTIFY => {
                let Some(Drive::Ata(disk)) = &self.slots[d].drive else {
                    return;
                };
                let id = words_to_bytes(&disk.identify());
                self.pio_in_buffer(d, id, ctx);
            }
            CMD_IDENTIFY_PACKET if atapi => {
                let id = words_to_bytes(&atapi_identify(self.slots[d].atapi_xfer_mode));
                self.pio_in_buffer(d, id, ctx);
            }
            CMD_PACKET if atapi => {
                let s = &mut self.slots[d];
                s.tf.nsect = IR_COD;
                s.status = ST_DRDY | ST_DRQ;
                self.xfer = Xfer::Packet;
                self.buf.clear();
                self.buf.resize(12, 0);
                self.pos = 0;
                self.end = 12;
            }
            CMD_DEVICE_RESET if atapi => {
                let s = &mut self.slots[d];
                s.tf.set_signature(true);
                s.status = 0;
                s.error = 0x01;
                if let Some(Drive::Atapi(cd)) = &mut s.drive {
                    cd.reset();
                }
            }
            CMD_DIAGNOSTIC => {
                self.reset_drives();
                self.raise(ctx);
            }
            CMD_SET_FEATURES => {
                let tf = self.slots[d].tf;
                let ok = match tf.feature {
                    SF_XFER_MODE => {
                        let mode = tf.nsect;
                        let valid =
                            matches!(mode, 0x00 | 0x01 | 0x08..=0x0C | 0x20..=0x22 | 0x40..=0x45);
                        if valid {
                            match &mut self.slots[d].drive {
                                Some(Drive::Ata(disk)) => disk.xfer_mode = mode,
                                _ => self.slots[d].atapi_xfer_mode = mode,
                            }
                        }
                        valid
                    }
                    SF_WCACHE_ON | SF_WCACHE_OFF => {
                        if let Some(Drive::Ata(disk)) = &mut self.slots[d].drive {
                            disk.write_cache = tf.feature == SF_WCACHE_ON;
                        }
                        true
                    }
                    // Other features (look-ahead, reverting to defaults ...): accepted, no effect.
                    _ => true,
                };
                if ok {
                    self.done(d, ctx);
                } else {
                    self.fail(d, ER_ABRT, ctx);
                }
            }
            CMD_STANDBY_IMMEDIATE
            | CMD_IDLE_IMMEDIATE
            | CMD_STANDBY
            | CMD_IDLE
            | CMD_SLEEP
            | CMD_FLUSH_CACHE
            | CMD_FLUSH_CACHE_EXT => self.done(d, ctx),
            CMD_CHECK_POWER => {
                self.slots[d].tf.nsect = 0xFF; // active or idle
                self.done(d, ctx);
            }
            _ if atapi => self.fail(d, ER_ABRT, ctx),
            0x10..=0x1F | CMD_SEEK => self.done(d, ctx),
            CMD_INIT_PARAMS => {
                let (spt, heads) = (self.slots[d].tf.nsect, (self.device & 0x0F) + 1);
                if let (Some(Drive::Ata(disk)), true) = (&mut self.slots[d].drive, spt != 0) {
                    disk.cur_spt = spt;
                    disk.cur_heads = heads;
                    self.done(d, ctx);
                } else {
                    self.fail(d, ER_ABRT, ctx);
                }
            }
            CMD_SET_MULTIPLE => {
                let n = self.slots[d].tf.nsect;
                if let (Some(Drive::Ata(disk)), true) = (
                    &mut self.slots[d].drive,
                    n <= MAX_MULTIPLE && n.is_power_of_two() || n == 0,
                ) {
                    disk.multiple = n;
                    self.done(d, ctx);
                } else {
                    self.fail(d, ER_ABRT, ctx);
                }
            }
            CMD_NOP => self.fail(d, ER_ABRT, ctx),
            _ => self.rw_command(d, cmd, ctx),
        }
    }

    /// Present `data` (one block) to the host by PIO with an interrupt.
    fn pio_in_buffer(&mut self, d: usize, data: Vec<u8>, ctx: &mut DevCtx) {
        self.buf = data;
        self.pos = 0;
        self.end = self.buf.len();
        self.xfer = Xfer::PioIn {
            next: 0,
            left: 0,
            per_block: 1,
        };
        self.slots[d].status = ST_DRDY | ST_DSC | ST_DRQ;
        self.raise(ctx);
    }

    /// Reads, writes and verifies: address, count, range check, then the data phase.
    fn rw_command(&mut self, d: usize, cmd: u8, ctx: &mut DevCtx) {
        let ext = matches!(
            cmd,
            CMD_READ_SECTORS_EXT
                | CMD_READ_DMA_EXT
                | CMD_READ_MULTIPLE_EXT
                | CMD_WRITE_SECTORS_EXT
                | CMD_WRITE_DMA_EXT
                | CMD_WRITE_MULTIPLE_EXT
                | CMD_READ_VERIFY_EXT
        );
        #[derive(PartialEq)]
        enum Kind {
            PioRead,
            PioWrite,
            DmaRead,
            DmaWrite,
            Verify,
        }
        let (kind, multiple) = match cmd {
            CMD_READ_SECTORS | CMD_READ_SECTORS_NR | CMD_READ_SECTORS_EXT => (Kind::PioRead, false),
            CMD_READ_MULTIPLE | CMD_READ_MULTIPLE_EXT => (Kind::PioRead, true),
            CMD_WRITE_SECTORS | CMD_WRITE_SECTORS_NR | CMD_WRITE_SECTORS_EXT => {
                (Kind::PioWrite, false)
            }
            CMD_WRITE_MULTIPLE | CMD_WRITE_MULTIPLE_EXT => (Kind::PioWrite, true),
            CMD_READ_DMA | CMD_READ_DMA_NR | CMD_READ_DMA_EXT => (Kind::DmaRead, false),
            CMD_WRITE_DMA | CMD_WRITE_DMA_NR | CMD_WRITE_DMA_EXT => (Kind::DmaWrite, false),
            CMD_READ_VERIFY | CMD_READ_VERIFY_NR | CMD_READ_VERIFY_EXT => (Kind::Verify, false),
            // Anything else is not implemented: aborted.
            _ => return self.fail(d, ER_ABRT, ctx),
        };
        let Some(Drive::Ata(disk)) = &self.slots[d].drive else {
            return self.fail(d, ER_ABRT, ctx);
        };
        let tf = self.slots[d].tf;
        let count: u64 = if ext {
            match u64::from(tf.hob_nsect) << 8 | u64::from(tf.nsect) {
                0 => 65536,
                n => n,
            }
        } else {
            match tf.nsect {
                0 => 256,
                n => n.into(),
            }
        };
        let lba = if ext {
            Some(tf.lba48())
        } else if self.device & DEV_LBA != 0 {
            Some(tf.lba28(self.device))
        } else {
            // CHS: cylinder in LBA mid/high, head in the device register, sector from 1.
            let cyl = u64::from(tf.lbam) | u64::from(tf.lbah) << 8;
            let head = u64::from(self.device & 0x0F);
            let sect = u64::from(tf.lbal);
            let (heads, spt) = (u64::from(disk.cur_heads), u64::from(disk.cur_spt));
            (sect != 0 && sect <= spt && head < heads)
                .then(|| (cyl * heads + head) * spt + sect - 1)
        };
        let per_block = if multiple {
            u64::from(disk.multiple)
        } else {
            1
        };
        if per_block == 0 {
            // READ/WRITE MULTIPLE before SET MULTIPLE MODE.
            return self.fail(d, ER_ABRT, ctx);
        }
        let Some(lba) = lba.filter(|&l| l.checked_add(count).is_some_and(|e| e <= disk.sectors))
        else {
            return self.fail(d, ER_IDNF | ER_ABRT, ctx);
        };
        match kind {
            Kind::Verify => self.done(d, ctx),
            Kind::PioRead => {
                self.pio_read_count += 1;
                let n = count.min(per_block);
                self.load(
                    Load {
                        drive: d,
                        lba,
                        bytes: n as usize * SECTOR,
                        cd: false,
                        then: Then::PioIn {
                            next: lba + n,
                            left: count - n,
                            per_block,
                        },
                    },
                    ctx,
                );
            }
            Kind::PioWrite => {
                let n = count.min(per_block);
                self.xfer = Xfer::PioOut {
                    lba,
                    left: count - n,
                    per_block,
                };
                self.buf.clear();
                self.buf.resize(n as usize * SECTOR, 0);
                self.pos = 0;
                self.end = self.buf.len();
                self.slots[d].status = ST_DRDY | ST_DSC | ST_DRQ;
            }
            Kind::DmaRead => self.load(
                Load {
                    drive: d,
                    lba,
                    bytes: count as usize * SECTOR,
                    cd: false,
                    then: Then::DmaIn { atapi: false },
                },
                ctx,
            ),
            Kind::DmaWrite => {
                self.buf.clear();
                self.buf.resize(count as usize * SECTOR, 0);
                self.xfer = Xfer::Dma {
                    to_memory: false,
                    atapi: false,
                    lba,
                };
                self.slots[d].status = ST_DRDY | ST_DSC | ST_DRQ;
            }
        }
    }

    // ---- ATAPI ---------------------------------------------------------------------------------

    fn packet(&mut self, d: usize, cdb: &[u8; 12], ctx: &mut DevCtx) {
        let tf = self.slots[d].tf;
        let dma = tf.feature & 1 != 0;
        // PIO byte count limit: even, at most 0xFFFE; 0 is treated as the maximum.
        let limit = match u16::from(tf.lbam) | u16::from(tf.lbah) << 8 {
            0 | 0xFFFF => 0xFFFE,
            n => (n & !1).max(2),
        };
        let Some(Drive::Atapi(cd)) = &mut self.slots[d].drive else {
            return self.fail(d, ER_ABRT, ctx);
        };
        match cd.command(cdb) {
            Reply::Check(s) => self.packet_done(d, Some(s), ctx),
            Reply::Data(data) if data.is_empty() => self.packet_done(d, None, ctx),
            Reply::Data(data) => {
                self.buf = data;
                let load = Load {
                    drive: d,
                    lba: 0,
                    bytes: self.buf.len(),
                    cd: true,
                    then: if dma {
                        Then::DmaIn { atapi: true }
                    } else {
                        Then::PacketIn { limit }
                    },
                };
                self.loaded(load, ctx);
            }
            Reply::Read { lba, count } => {
                if !dma {
                    self.pio_read_count += 1;
                }
                self.load(
                    Load {
                        drive: d,
                        lba,
                        bytes: count as usize * CD_SECTOR,
                        cd: true,
                        then: if dma {
                            Then::DmaIn { atapi: true }
                        } else {
                            Then::PacketIn { limit }
                        },
                    },
                    ctx,
                )
            }
        }
    }

    /// Offer the next PIO chunk of ATAPI data (from `self.end`).
    fn packet_chunk(&mut self, limit: u16, ctx: &mut DevCtx) {
        let d = self.active;
        let start = self.end;
        let n = (self.buf.len() - start).min(usize::from(limit));
        self.pos = start;
        self.end = start + n;
        let s = &mut self.slots[d];
        s.tf.lbam = n as u8;
        s.tf.lbah = (n >> 8) as u8;
        s.tf.nsect = IR_IO;
        s.status = ST_DRDY | ST_DSC | ST_DRQ;
        self.raise(ctx);
    }

    // ---- bus master -----------------------------------------------------------------------------

    fn bm_read(&self, reg: u8) -> u8 {
        match reg {
            BM_CMD => self.bm.cmd,
            BM_STATUS => self.bm.status,
            4..=7 => (self.bm.prd >> (8 * (reg - BM_PRD))) as u8,
            _ => 0,
        }
    }

    fn bm_write(&mut self, reg: u8, v: u8) {
        match reg {
            // Guest starts or stops the engine and sets the direction.
            BM_CMD => {
                let start = v & BM_CMD_START != 0;
                if start && self.bm.cmd & BM_CMD_START == 0 {
                    self.bm.status |= BM_ST_ACTIVE;
                } else if !start {
                    self.bm.status &= !BM_ST_ACTIVE;
                }
                self.bm.cmd = v & (BM_CMD_START | BM_CMD_WRITE);
            }
            // Guest clears error/interrupt (write one) and sets the DMA-capable bits.
            BM_STATUS => {
                let s = self.bm.status;
                self.bm.status = (s & BM_ST_ACTIVE)
                    | (v & BM_ST_CAPABLE)
                    | (s & !v & (BM_ST_ERROR | BM_ST_INTR));
            }
            // Guest points at its PRD table.
            4..=7 => {
                let sh = 8 * u32::from(reg - BM_PRD);
                self.bm.prd = (self.bm.prd & !(0xFF << sh) | u32::from(v) << sh) & !3;
            }
            _ => {}
        }
    }

    fn dma_ready(&self) -> bool {
        matches!(self.xfer, Xfer::Dma { .. }) && self.bm.status & BM_ST_ACTIVE != 0
    }

    /// Run an armed DMA transfer through the guest's PRD table.
    fn run_dma(&mut self, mem: &mut dyn DmaMemory, ctx: &mut DevCtx) {
        let Xfer::Dma {
            to_memory,
            atapi,
            lba,
        } = self.xfer
        else {
            return;
        };
        let d = self.active;
        let total = self.buf.len();
        let mut done = 0usize;
        let mut addr = self.bm.prd;
        let mut eot = false;
        let mut fault = false;
        let mut entries = 0;
        while done < total && !eot && entries < PRD_MAX_ENTRIES {
            let mut e = [0u8; 8];
            if !mem.dma_read(addr, &mut e) {
                fault = true;
                break;
            }
            let base = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) & !1;
            let flags = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let len = match flags & 0xFFFE {
                0 => 0x10000,
                n => n as usize,
            };
            eot = flags & PRD_EOT != 0;
            let n = len.min(total - done);
            let chunk = &mut self.buf[done..done + n];
            let ok = if to_memory {
                mem.dma_write(base, chunk)
            } else {
                mem.dma_read(base, chunk)
            };
            if !ok {
                fault = true;
                break;
            }
            done += n;
            addr = addr.wrapping_add(8);
            entries += 1;
        }
        if fault || done < total {
            // A PRD table that points outside RAM or ends early: the engine stops with an error
            // and the drive aborts the command (rather than hanging the guest).
            self.bm.status = (self.bm.status & !BM_ST_ACTIVE) | BM_ST_ERROR;
            if atapi {
                self.packet_done(d, Some(Sense::new(atapi::SK_ILLEGAL_REQUEST, 0x00, 0)), ctx);
            } else {
                self.fail(d, ER_ABRT, ctx);
            }
            return;
        }
        // The engine goes idle when the table ended exactly with the data; a longer table leaves
        // it active (as the PIIX does), with the interrupt bit telling the driver it is done.
        if eot {
            self.bm.status &= !BM_ST_ACTIVE;
        }
        self.dma_count += 1;
        if !to_memory {
            if let Some(Drive::Ata(disk)) = &mut self.slots[d].drive {
                disk.disk.write(lba, &self.buf);
            }
        }
        if atapi {
            self.packet_done(d, None, ctx);
        } else {
            self.done(d, ctx);
        }
    }
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
#[derive(Debug, Serialize, Deserialize)]
pub struct Ide {
    channels: [Channel; 2],
    #[serde(default)]
    gate: PciGate,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemBackend;
    use crate::dev::{BoardSignals, IrqLines};

    struct H {
        ide: Ide,
        irq: IrqLines,
        sig: BoardSignals,
        mem: Vec<u8>,
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 512) as u8).collect()
    }

    impl H {
        fn new() -> H {
            H {
                ide: Ide::new(),
                irq: IrqLines::default(),
                sig: BoardSignals::default(),
                mem: vec![0; 1 << 20],
            }
        }
        fn with_disk(sectors: usize) -> H {
            let mut h = H::new();
            let d = AtaDisk::new(Box::new(MemBackend::new(pattern(sectors * 512)))).unwrap();
            h.ide.attach(0, Drive::Ata(d));
            h
        }
        /// Where `port` is: the range it is in (as the board maps them) and the offset.
        fn window(port: u16) -> At {
            let base = match port {
                0x1F0..=0x1F7 => 0x1F0,
                0x170..=0x177 => 0x170,
                0x3F6 | 0x376 => port,
                _ => BM_DEFAULT_BASE,
            };
            At::new(base.into(), (port - base).into())
        }
        fn out(&mut self, port: u16, size: u8, v: u32) {
            let mut ctx = DevCtx {
                now: 0,
                irq: &mut self.irq,
                board: &mut self.sig,
            };
            self.ide.write(Self::window(port), size, v, &mut ctx);
        }
        fn inp(&mut self, port: u16, size: u8) -> u32 {
            let mut ctx = DevCtx {
                now: 0,
                irq: &mut self.irq,
                board: &mut self.sig,
            };
            self.ide.read(Self::window(port), size, &mut ctx)
        }
        fn outb(&mut self, port: u16, v: u8) {
            self.out(port, 1, v.into());
        }
        fn inb(&mut self, port: u16) -> u8 {
            self.inp(port, 1) as u8
        }
        /// Issue an LBA28 command to the primary master.
        fn ata28(&mut self, cmd: u8, lba: u32, count: u8) {
            self.outb(0x1F6, 0xE0 | (lba >> 24) as u8 & 0x0F);
            self.outb(0x1F2, count);
            self.outb(0x1F3, lba as u8);
            self.outb(0x1F4, (lba >> 8) as u8);
            self.outb(0x1F5, (lba >> 16) as u8);
            self.outb(0x1F7, cmd);
        }
        fn read_words(&mut self, base: u16, n: usize) -> Vec<u8> {
            let mut v = Vec::new();
            for _ in 0..n {
                v.extend_from_slice(&(self.inp(base, 2) as u16).to_le_bytes());
            }
            v
        }
        fn dma(&mut self) {
            let mut ctx = DevCtx {
                now: 0,
                irq: &mut self.irq,
                board: &mut self.sig,
            };
            self.ide.run_dma(&mut self.mem, &mut ctx);
        }
    }

    #[test]
    fn identify_reports_capacity_lba48_and_dma_modes() {
        let mut h = H::with_disk(8192);
        h.outb(0x1F6, 0xA0);
        h.outb(0x1F7, CMD_IDENTIFY);
        assert!(h.irq.get(14));
        let st = h.inb(0x1F7);
        assert_eq!(st & (ST_BSY | ST_DRQ | ST_DRDY), ST_DRQ | ST_DRDY);
        assert!(!h.irq.get(14), "status read acknowledges");
        let id = h.read_words(0x1F0, 256);
        let w = |i: usize| u16::from_le_bytes([id[2 * i], id[2 * i + 1]]);
        assert_eq!(w(0), 0x0040);
        assert_eq!((w(60), w(61)), (8192, 0));
        assert_eq!(w(100), 8192);
        assert!(w(83) & 0x0400 != 0 && w(49) & 0x0300 == 0x0300);
        assert_eq!(w(63) & 7, 7);
        assert_eq!(&id[54..60], b"AWMS68");
        assert_eq!(h.inb(0x1F7) & ST_DRQ, 0);
    }

    #[test]
    fn pio_write_then_read_back_lba28_and_lba48() {
        let mut h = H::with_disk(1024);
        h.ata28(CMD_WRITE_SECTORS, 5, 2);
        assert!(!h.irq.get(14), "no interrupt before the first block");
        for i in 0..128u32 {
            h.out(0x1F0, 4, 0xA5A5_0000 | i);
        }
        assert!(h.irq.get(14) && h.inb(0x1F7) & ST_DRQ != 0);
        for i in 0..128u32 {
            h.out(0x1F0, 4, 0x5A5A_0000 | i);
        }
        assert_eq!(h.inb(0x1F7) & (ST_DRQ | ST_ERR | ST_BSY), 0);
        // READ SECTORS EXT: previous bytes first.
        h.outb(0x1F6, 0x40);
        for (port, v) in [
            (0x1F2, 0),
            (0x1F2, 3),
            (0x1F3, 0),
            (0x1F3, 4),
            (0x1F4, 0),
            (0x1F4, 0),
        ] {
            h.outb(port, v);
        }
        h.outb(0x1F5, 0);
        h.outb(0x1F5, 0);
        h.outb(0x1F7, CMD_READ_SECTORS_EXT);
        let mut data = Vec::new();
        for _ in 0..3 {
            assert!(h.inb(0x1F7) & ST_DRQ != 0);
            data.extend(h.read_words(0x1F0, 256));
        }
        assert_eq!(&data[..512], &pattern(1024 * 512)[4 * 512..5 * 512]);
        assert_eq!(&data[512..516], &[0, 0, 0xA5, 0xA5]);
        assert_eq!(&data[1024..1028], &[0, 0, 0x5A, 0x5A]);
        // The source image did not change.
        let Some(Drive::Ata(d)) = h.ide.drive(0) else {
            panic!()
        };
        assert_eq!(d.overlay().dirty_count(), 2);
    }

    #[test]
    fn lba_beyond_the_disk_is_idnf_and_bad_commands_abort() {
        let mut h = H::with_disk(100);
        h.ata28(CMD_READ_SECTORS, 99, 2);
        assert_eq!(h.inb(0x1F7) & ST_ERR, ST_ERR);
        assert!(h.inb(0x1F1) & ER_IDNF != 0);
        h.ata28(CMD_READ_MULTIPLE, 0, 1);
        assert_eq!(h.inb(0x1F1), ER_ABRT, "READ MULTIPLE before SET MULTIPLE");
        h.ata28(0xFF, 0, 1);
        assert_eq!(h.inb(0x1F1), ER_ABRT);
        // Data port reads with no transfer float.
        assert_eq!(h.inp(0x1F0, 2), 0xFFFF);
        // CHS: sector 0 does not exist.
        h.outb(0x1F6, 0xA0);
        h.outb(0x1F3, 0);
        h.outb(0x1F7, CMD_READ_SECTORS);
        assert!(h.inb(0x1F1) & ER_IDNF != 0);
    }

    #[test]
    fn read_multiple_gives_blocks_of_the_set_size() {
        let mut h = H::with_disk(64);
        h.ata28(CMD_SET_MULTIPLE, 0, 4);
        assert_eq!(h.inb(0x1F7) & ST_ERR, 0);
        h.ata28(CMD_READ_MULTIPLE, 0, 6);
        h.inb(0x1F7);
        let a = h.read_words(0x1F0, 4 * 256);
        assert!(h.irq.get(14), "second block interrupts");
        h.inb(0x1F7);
        let b = h.read_words(0x1F0, 2 * 256);
        assert_eq!([a, b].concat(), pattern(64 * 512)[..6 * 512].to_vec());
        assert_eq!(h.inb(0x1F7) & ST_DRQ, 0);
    }

    /// Write a PRD table at 0x1000 with `entries` (addr, len, eot).
    fn prd(h: &mut H, entries: &[(u32, u32, bool)]) {
        for (i, &(a, l, eot)) in entries.iter().enumerate() {
            let f = (l & 0xFFFF) | if eot { PRD_EOT } else { 0 };
            let at = 0x1000 + 8 * i;
            h.mem[at..at + 4].copy_from_slice(&a.to_le_bytes());
            h.mem[at + 4..at + 8].copy_from_slice(&f.to_le_bytes());
        }
        h.out(BM_DEFAULT_BASE + 4, 4, 0x1000);
    }

    #[test]
    fn dma_read_and_write_through_a_prd_table() {
        let mut h = H::with_disk(256);
        prd(&mut h, &[(0x2000, 512, false), (0x8000, 1024, true)]);
        h.outb(BM_DEFAULT_BASE + 2, BM_ST_ERROR | BM_ST_INTR);
        h.ata28(CMD_READ_DMA, 10, 3);
        h.outb(BM_DEFAULT_BASE, BM_CMD_START | BM_CMD_WRITE);
        assert!(h.ide.dma_ready());
        h.dma();
        let src = pattern(256 * 512);
        assert_eq!(&h.mem[0x2000..0x2200], &src[10 * 512..11 * 512]);
        assert_eq!(&h.mem[0x8000..0x8400], &src[11 * 512..13 * 512]);
        assert_eq!(h.inb(BM_DEFAULT_BASE + 2) & 7, BM_ST_INTR);
        assert!(h.irq.get(14));
        assert_eq!(h.inb(0x1F7) & (ST_BSY | ST_DRQ | ST_ERR), 0);
        h.outb(BM_DEFAULT_BASE, 0);
        // Write the same memory back two sectors further on.
        h.outb(BM_DEFAULT_BASE + 2, BM_ST_INTR);
        h.ata28(CMD_WRITE_DMA, 20, 3);
        h.outb(BM_DEFAULT_BASE, BM_CMD_START);
        h.dma();
        h.ata28(CMD_READ_SECTORS, 21, 1);
        h.inb(0x1F7);
        assert_eq!(h.read_words(0x1F0, 256), src[11 * 512..12 * 512].to_vec());
        assert_eq!(h.ide.dma_count()[0], 2);
    }

    #[test]
    fn bad_prd_tables_give_errors_not_hangs() {
        let mut h = H::with_disk(256);
        // Points outside RAM.
        prd(&mut h, &[(0xFFFF_0000, 512, true)]);
        h.ata28(CMD_READ_DMA, 0, 1);
        h.outb(BM_DEFAULT_BASE, BM_CMD_START | BM_CMD_WRITE);
        h.dma();
        assert!(h.inb(BM_DEFAULT_BASE + 2) & BM_ST_ERROR != 0);
        assert!(h.inb(0x1F7) & ST_ERR != 0);
        // Too short for the data.
        h.outb(BM_DEFAULT_BASE, 0);
        h.outb(BM_DEFAULT_BASE + 2, BM_ST_ERROR | BM_ST_INTR);
        prd(&mut h, &[(0x2000, 512, true)]);
        h.ata28(CMD_READ_DMA, 0, 2);
        h.outb(BM_DEFAULT_BASE, BM_CMD_START | BM_CMD_WRITE);
        h.dma();
        assert!(h.inb(BM_DEFAULT_BASE + 2) & BM_ST_ERROR != 0);
        assert!(h.inb(0x1F7) & ST_ERR != 0);
        // No EOT anywhere: the walk is bounded (zero entries mean 64 KiB each).
        h.outb(BM_DEFAULT_BASE, 0);
        h.mem[0x1000..0x11000].fill(0);
        h.out(BM_DEFAULT_BASE + 4, 4, 0x1000);
        h.ata28(CMD_READ_DMA, 0, 1);
        h.outb(BM_DEFAULT_BASE, BM_CMD_START | BM_CMD_WRITE);
        h.dma();
        assert_eq!(h.inb(0x1F7) & ST_ERR, 0);
    }

    #[test]
    fn soft_reset_shows_signatures_and_absent_slave_reads_zero() {
        let mut h = H::with_disk(64);
        let cd = Cdrom::with_disc(Box::new(MemBackend::new(vec![0; 4096])));
        h.ide.attach(3, Drive::Atapi(cd));
        h.outb(0x3F6, CTL_SRST);
        assert_eq!(h.inb(0x1F7) & ST_BSY, ST_BSY);
        h.outb(0x3F6, 0);
        assert_eq!(
            (h.inb(0x1F2), h.inb(0x1F3), h.inb(0x1F4), h.inb(0x1F5)),
            (1, 1, 0, 0)
        );
        assert_eq!(h.inb(0x1F1), 1);
        assert_eq!(h.inb(0x1F7), ST_DRDY | ST_DSC);
        // Slave absent on the primary channel.
        h.outb(0x1F6, 0xB0);
        assert_eq!((h.inb(0x1F7), h.inb(0x1F1)), (0, 0));
        // ATAPI signature on the secondary slave; master absent.
        h.outb(0x376, CTL_SRST);
        h.outb(0x376, 0);
        h.outb(0x176, 0xB0);
        assert_eq!((h.inb(0x174), h.inb(0x175)), (0x14, 0xEB));
        h.outb(0x176, 0xA0);
        assert_eq!(h.inb(0x177), 0);
        // IDENTIFY DEVICE to an ATAPI drive aborts.
        h.outb(0x176, 0xB0);
        h.outb(0x177, CMD_IDENTIFY);
        assert_eq!(h.inb(0x177) & ST_ERR, ST_ERR);
        // A channel with no drives floats.
        let mut e = H::new();
        assert_eq!(e.inb(0x1F7), 0xFF);
    }

    #[test]
    fn nien_masks_the_interrupt_line() {
        let mut h = H::with_disk(64);
        h.outb(0x3F6, CTL_NIEN);
        h.ata28(CMD_FLUSH_CACHE, 0, 0);
        assert!(!h.irq.get(14));
        h.outb(0x3F6, 0);
        assert!(h.irq.get(14), "INTRQ was pending");
        assert_eq!(h.inb(0x3F6) & ST_ERR, 0);
        assert!(h.irq.get(14), "alternate status does not acknowledge");
        h.inb(0x1F7);
        assert!(!h.irq.get(14));
    }

    fn packet(h: &mut H, cdb: &[u8], limit: u16, dma: bool) {
        h.outb(0x176, 0xA0);
        h.outb(0x171, u8::from(dma));
        h.outb(0x174, limit as u8);
        h.outb(0x175, (limit >> 8) as u8);
        h.outb(0x177, CMD_PACKET);
        assert_eq!(h.inb(0x177) & ST_DRQ, ST_DRQ);
        assert_eq!(h.inb(0x172), IR_COD);
        let mut c = [0u8; 12];
        c[..cdb.len()].copy_from_slice(cdb);
        for w in c.chunks(2) {
            h.out(0x170, 2, u16::from_le_bytes([w[0], w[1]]).into());
        }
    }

    #[test]
    fn atapi_inquiry_and_read10_by_pio_and_dma() {
        let mut h = H::new();
        let disc = pattern(10 * 2048);
        h.ide.attach(
            2,
            Drive::Atapi(Cdrom::with_disc(Box::new(MemBackend::new(disc.clone())))),
        );
        packet(&mut h, &[0x12, 0, 0, 0, 36], 0x1000, false);
        assert!(h.irq.get(15));
        assert_eq!(h.inb(0x177) & ST_DRQ, ST_DRQ);
        assert_eq!(h.inb(0x174) as u16 | (h.inb(0x175) as u16) << 8, 36);
        let inq = h.read_words(0x170, 18);
        assert_eq!(inq[0], 5);
        assert_eq!(&inq[8..14], b"WASM86");
        assert_eq!(h.inb(0x172), IR_IO | IR_COD);
        assert_eq!(h.inb(0x177) & (ST_DRQ | ST_ERR), 0);
        // READ(10) of 2 sectors at LBA 3 with a byte count limit of 1000: chunks of 1000.
        packet(&mut h, &[0x28, 0, 0, 0, 0, 3, 0, 0, 2], 1000, false);
        let mut got = Vec::new();
        while h.inb(0x177) & ST_DRQ != 0 {
            let n = h.inb(0x174) as usize | (h.inb(0x175) as usize) << 8;
            assert!(n <= 1000);
            got.extend(h.read_words(0x170, n / 2));
        }
        assert_eq!(got, disc[3 * 2048..5 * 2048].to_vec());
        // The same by DMA.
        prd(&mut h, &[(0x4000, 4096, true)]);
        h.out(BM_DEFAULT_BASE + 8 + 4, 4, 0x1000);
        packet(&mut h, &[0x28, 0, 0, 0, 0, 3, 0, 0, 2], 0, true);
        h.outb(BM_DEFAULT_BASE + 8, BM_CMD_START | BM_CMD_WRITE);
        h.dma();
        assert_eq!(&h.mem[0x4000..0x5000], &disc[3 * 2048..5 * 2048]);
        assert_eq!(h.inb(0x177) & ST_ERR, 0);
        // Out of range: CHECK CONDITION, ILLEGAL REQUEST in the error register.
        packet(&mut h, &[0x28, 0, 0, 0, 0, 9, 0, 0, 2], 0, false);
        assert_eq!(h.inb(0x177) & ST_ERR, ST_ERR);
        assert_eq!(h.inb(0x171) >> 4, atapi::SK_ILLEGAL_REQUEST);
    }

    /// A backend that answers "pending" until released.
    struct Slow {
        data: Vec<u8>,
        released: std::rc::Rc<std::cell::Cell<bool>>,
    }
    impl BlockBackend for Slow {
        fn len(&self) -> u64 {
            self.data.len() as u64
        }
        fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, BlockError> {
            if !self.released.get() {
                return Ok(ReadStatus::Pending);
            }
            let o = offset as usize;
            buf.copy_from_slice(&self.data[o..o + buf.len()]);
            Ok(ReadStatus::Ready)
        }
    }

    #[test]
    fn pending_reads_stay_busy_until_the_host_wakes_the_drive() {
        let mut h = H::new();
        let released = std::rc::Rc::new(std::cell::Cell::new(false));
        let slow = Slow {
            data: pattern(8 * 512),
            released: released.clone(),
        };
        h.ide
            .attach(0, Drive::Ata(AtaDisk::new(Box::new(slow)).unwrap()));
        h.ata28(CMD_READ_SECTORS, 1, 1);
        assert_eq!(h.inb(0x1F7) & ST_BSY, ST_BSY);
        assert!(!h.irq.get(14));
        released.set(true);
        let mut ctx = DevCtx {
            now: 0,
            irq: &mut h.irq,
            board: &mut h.sig,
        };
        h.ide.wake(&mut ctx);
        assert!(h.irq.get(14));
        assert_eq!(h.inb(0x1F7) & (ST_BSY | ST_DRQ), ST_DRQ);
        assert_eq!(
            h.read_words(0x1F0, 256),
            pattern(8 * 512)[512..1024].to_vec()
        );
    }

    #[test]
    fn images_of_bad_size_are_refused() {
        assert_eq!(
            AtaDisk::new(Box::new(MemBackend::new(vec![0; 1000]))).unwrap_err(),
            ImageError::NotSectorMultiple(1000)
        );
        assert_eq!(
            AtaDisk::new(Box::new(MemBackend::new(Vec::new()))).unwrap_err(),
            ImageError::Empty
        );
    }

    // ---- backends that answer "pending" or fail ---------------------------------------------

    /// What a [`Scripted`] backend answers to its next read.
    #[derive(Clone, Copy, Debug)]
    enum Answer {
        Pending,
        Ready,
        Fail,
    }

    type Plan = std::rc::Rc<std::cell::RefCell<std::collections::VecDeque<Answer>>>;

    /// A backend that answers each read from a plan (then Ready once the plan is used up).
    struct Scripted {
        data: Vec<u8>,
        plan: Plan,
    }
    impl BlockBackend for Scripted {
        fn len(&self) -> u64 {
            self.data.len() as u64
        }
        fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, BlockError> {
            match self.plan.borrow_mut().pop_front().unwrap_or(Answer::Ready) {
                Answer::Pending => Ok(ReadStatus::Pending),
                Answer::Fail => Err(BlockError::Io("scripted failure".into())),
                Answer::Ready => {
                    let o = offset as usize;
                    buf.copy_from_slice(&self.data[o..o + buf.len()]);
                    Ok(ReadStatus::Ready)
                }
            }
        }
    }

    fn scripted(data: Vec<u8>, plan: &[Answer]) -> (Box<dyn BlockBackend>, Plan) {
        let plan: Plan = std::rc::Rc::new(std::cell::RefCell::new(plan.iter().copied().collect()));
        (
            Box::new(Scripted {
                data,
                plan: plan.clone(),
            }),
            plan,
        )
    }

    impl H {
        /// A disk (primary master) over a scripted backend.
        fn with_scripted_disk(sectors: usize, plan: &[Answer]) -> (H, Plan) {
            let mut h = H::new();
            let (b, plan) = scripted(pattern(sectors * 512), plan);
            h.ide.attach(0, Drive::Ata(AtaDisk::new(b).unwrap()));
            (h, plan)
        }
        /// A CD (secondary master) over a scripted backend.
        fn with_scripted_cd(sectors: usize, plan: &[Answer]) -> (H, Plan) {
            let mut h = H::new();
            let (b, plan) = scripted(pattern(sectors * CD_SECTOR), plan);
            h.ide.attach(2, Drive::Atapi(Cdrom::with_disc(b)));
            (h, plan)
        }
        fn wake(&mut self) {
            let mut ctx = DevCtx {
                now: 0,
                irq: &mut self.irq,
                board: &mut self.sig,
            };
            self.ide.wake(&mut ctx);
        }
        fn pci(&mut self, command: u16, idetim_hi: [u8; 2]) {
            let mut c = pci_config();
            c.set16(pci::CFG_COMMAND, command);
            c.set8(0x41, idetim_hi[0]);
            c.set8(0x43, idetim_hi[1]);
            self.ide.sync_pci(&c);
        }
    }

    use Answer::{Fail, Pending, Ready};

    #[test]
    fn pending_pio_read_keeps_bsy_until_wake_then_interrupts_for_each_block() {
        let (mut h, plan) = H::with_scripted_disk(64, &[Pending, Ready, Pending, Ready]);
        h.ata28(CMD_READ_SECTORS, 3, 2);
        assert_eq!(h.inb(0x3F6), ST_BSY, "BSY alone while the backend fetches");
        assert!(!h.irq.get(14));
        assert_eq!(h.inp(0x1F0, 2), 0xFFFF, "no data before DRQ");
        // A command written while BSY is ignored.
        h.outb(0x1F7, CMD_IDENTIFY);
        assert_eq!(h.inb(0x3F6), ST_BSY);
        h.wake();
        assert!(h.irq.get(14), "the wake completes with an interrupt");
        assert_eq!(h.inb(0x1F7) & (ST_BSY | ST_DRQ | ST_ERR), ST_DRQ);
        let src = pattern(64 * 512);
        assert_eq!(h.read_words(0x1F0, 256), src[3 * 512..4 * 512].to_vec());
        // The second block is pending too: BSY again, no interrupt until it arrives.
        assert_eq!(h.inb(0x3F6), ST_BSY);
        assert!(!h.irq.get(14));
        h.wake();
        assert!(h.irq.get(14));
        assert_eq!(h.inb(0x1F7) & (ST_BSY | ST_DRQ), ST_DRQ);
        assert_eq!(h.read_words(0x1F0, 256), src[4 * 512..5 * 512].to_vec());
        assert_eq!(h.inb(0x1F7) & (ST_BSY | ST_DRQ | ST_ERR), 0);
        assert!(plan.borrow().is_empty());
    }

    #[test]
    fn pending_dma_read_moves_nothing_until_wake_then_completes() {
        let (mut h, _) = H::with_scripted_disk(64, &[Pending, Ready]);
        prd(&mut h, &[(0x2000, 1536, true)]);
        h.ata28(CMD_READ_DMA, 10, 3);
        h.outb(BM_DEFAULT_BASE, BM_CMD_START | BM_CMD_WRITE);
        assert!(!h.ide.dma_ready());
        h.dma();
        assert!(h.mem[0x2000..0x2600].iter().all(|&b| b == 0));
        assert_eq!(h.inb(0x3F6), ST_BSY);
        assert_eq!(h.inb(BM_DEFAULT_BASE + 2) & 7, BM_ST_ACTIVE);
        assert!(!h.irq.get(14));
        h.wake();
        // The data is in the drive; the engine moves it when the board next runs DMA.
        assert!(h.ide.dma_ready() && !h.irq.get(14));
        h.dma();
        let src = pattern(64 * 512);
        assert_eq!(&h.mem[0x2000..0x2600], &src[10 * 512..13 * 512]);
        assert!(h.irq.get(14));
        assert_eq!(h.inb(BM_DEFAULT_BASE + 2) & 7, BM_ST_INTR);
        assert_eq!(h.inb(0x1F7) & (ST_BSY | ST_DRQ | ST_ERR), 0);
        assert_eq!(h.ide.dma_count()[0], 1);
    }

    #[test]
    fn pending_atapi_reads_keep_bsy_until_wake_by_pio_and_by_dma() {
        let (mut h, _) = H::with_scripted_cd(16, &[Pending, Ready, Pending, Ready]);
        let src = pattern(16 * CD_SECTOR);
        // PIO: READ(10) of one sector at LBA 5.
        packet(&mut h, &[0x28, 0, 0, 0, 0, 5, 0, 0, 1], 0xFFFE, false);
        assert_eq!(h.inb(0x376), ST_BSY);
        assert!(!h.irq.get(15));
        h.wake();
        assert!(h.irq.get(15));
        assert_eq!(h.inb(0x177) & (ST_BSY | ST_DRQ), ST_DRQ);
        assert_eq!(h.inb(0x172), IR_IO, "data phase");
        assert_eq!(h.inb(0x174) as usize | (h.inb(0x175) as usize) << 8, 2048);
        assert_eq!(h.read_words(0x170, 1024), src[5 * 2048..6 * 2048].to_vec());
        assert!(h.irq.get(15), "status phase interrupts");
        assert_eq!(h.inb(0x177) & (ST_BSY | ST_DRQ | ST_ERR), 0);
        assert_eq!(h.inb(0x172), IR_IO | IR_COD);
        // DMA: two sectors at LBA 7.
        prd(&mut h, &[(0x4000, 4096, true)]);
        h.out(BM_DEFAULT_BASE + 8 + 4, 4, 0x1000);
        packet(&mut h, &[0x28, 0, 0, 0, 0, 7, 0, 0, 2], 0, true);
        h.outb(BM_DEFAULT_BASE + 8, BM_CMD_START | BM_CMD_WRITE);
        h.dma();
        assert!(h.mem[0x4000..0x5000].iter().all(|&b| b == 0));
        assert_eq!(h.inb(0x376), ST_BSY);
        assert!(!h.irq.get(15));
        h.wake();
        h.dma();
        assert_eq!(&h.mem[0x4000..0x5000], &src[7 * 2048..9 * 2048]);
        assert!(h.irq.get(15));
        assert_eq!(h.inb(0x177) & (ST_BSY | ST_DRQ | ST_ERR), 0);
        assert_eq!(h.inb(0x172), IR_IO | IR_COD);
        assert_eq!(h.inb(BM_DEFAULT_BASE + 8 + 2) & BM_ST_INTR, BM_ST_INTR);
        assert_eq!(h.ide.dma_count()[1], 1);
    }

    #[test]
    fn failed_ata_reads_are_unc_with_the_failing_lba_by_pio_and_dma() {
        // PIO, LBA28: the error, the interrupt, the address of the failed sector.
        let (mut h, _) = H::with_scripted_disk(0x20000, &[Fail]);
        h.ata28(CMD_READ_SECTORS, 0x12345, 1);
        assert!(h.irq.get(14));
        assert_eq!(h.inb(0x1F7), ST_DRDY | ST_ERR);
        assert_eq!(h.inb(0x1F1), ER_UNC);
        assert_eq!(
            (
                h.inb(0x1F3),
                h.inb(0x1F4),
                h.inb(0x1F5),
                h.inb(0x1F6) & 0x0F
            ),
            (0x45, 0x23, 0x01, 0)
        );
        assert_eq!(h.inp(0x1F0, 2), 0xFFFF, "no data phase");

        // PIO, the second block fails after the first was read.
        let (mut h, _) = H::with_scripted_disk(64, &[Ready, Fail]);
        h.ata28(CMD_READ_SECTORS, 8, 2);
        h.inb(0x1F7);
        h.read_words(0x1F0, 256);
        assert!(h.irq.get(14));
        assert_eq!((h.inb(0x1F7), h.inb(0x1F1)), (ST_DRDY | ST_ERR, ER_UNC));
        assert_eq!(h.inb(0x1F3), 9);

        // DMA: nothing reaches memory; the drive's interrupt shows in the bus-master status.
        let (mut h, _) = H::with_scripted_disk(64, &[Fail]);
        prd(&mut h, &[(0x2000, 512, true)]);
        h.ata28(CMD_READ_DMA, 4, 1);
        h.outb(BM_DEFAULT_BASE, BM_CMD_START | BM_CMD_WRITE);
        assert!(!h.ide.dma_ready());
        h.dma();
        assert!(h.mem[0x2000..0x2200].iter().all(|&b| b == 0));
        assert!(h.irq.get(14));
        assert_eq!(h.inb(BM_DEFAULT_BASE + 2) & BM_ST_INTR, BM_ST_INTR);
        assert_eq!((h.inb(0x1F7), h.inb(0x1F1)), (ST_DRDY | ST_ERR, ER_UNC));
        assert_eq!(h.ide.dma_count()[0], 0);

        // LBA48: the high address bytes in the previous registers (HOB).
        let (mut h, _) = H::with_scripted_disk(64, &[Fail]);
        h.outb(0x1F6, 0x40);
        for (port, v) in [(0x1F2, 0), (0x1F2, 1), (0x1F3, 0), (0x1F3, 33)] {
            h.outb(port, v);
        }
        for port in [0x1F4, 0x1F4, 0x1F5, 0x1F5] {
            h.outb(port, 0);
        }
        h.outb(0x1F7, CMD_READ_DMA_EXT);
        assert_eq!(h.inb(0x1F1), ER_UNC);
        assert_eq!(h.inb(0x1F3), 33);
        h.outb(0x3F6, CTL_HOB);
        assert_eq!((h.inb(0x1F3), h.inb(0x1F4), h.inb(0x1F5)), (0, 0, 0));
        h.outb(0x3F6, 0);

        // CHS: the failing sector as cylinder/head/sector (16 heads, 63 sectors per track).
        let (mut h, _) = H::with_scripted_disk(16 * 63 * 4, &[Fail]);
        h.outb(0x1F6, 0xA0 | 3); // head 3
        h.outb(0x1F2, 1);
        h.outb(0x1F3, 7); // sector 7
        h.outb(0x1F4, 2); // cylinder 2
        h.outb(0x1F5, 0);
        h.outb(0x1F7, CMD_READ_SECTORS);
        assert_eq!(h.inb(0x1F1), ER_UNC);
        assert_eq!(
            (
                h.inb(0x1F3),
                h.inb(0x1F4),
                h.inb(0x1F5),
                h.inb(0x1F6) & 0x0F
            ),
            (7, 2, 0, 3)
        );
    }

    #[test]
    fn a_pending_read_that_then_fails_ends_with_an_error_interrupt() {
        let (mut h, _) = H::with_scripted_disk(64, &[Pending, Fail]);
        prd(&mut h, &[(0x2000, 512, true)]);
        h.ata28(CMD_READ_DMA, 4, 1);
        h.outb(BM_DEFAULT_BASE, BM_CMD_START | BM_CMD_WRITE);
        assert_eq!(h.inb(0x3F6), ST_BSY);
        h.wake();
        assert!(h.irq.get(14));
        assert_eq!((h.inb(0x1F7), h.inb(0x1F1)), (ST_DRDY | ST_ERR, ER_UNC));
        h.dma();
        assert!(h.mem[0x2000..0x2200].iter().all(|&b| b == 0));

        let (mut h, _) = H::with_scripted_cd(4, &[Pending, Fail]);
        packet(&mut h, &[0x28, 0, 0, 0, 0, 1, 0, 0, 1], 0xFFFE, false);
        assert_eq!(h.inb(0x376), ST_BSY);
        h.wake();
        assert!(h.irq.get(15));
        assert_eq!(h.inb(0x177) & (ST_BSY | ST_DRQ | ST_ERR), ST_ERR);
        assert_eq!(h.inb(0x171) >> 4, atapi::SK_MEDIUM_ERROR);
    }

    #[test]
    fn a_disc_ejected_while_a_read_waits_ends_it_not_ready() {
        let (mut h, _) = H::with_scripted_cd(4, &[Pending]);
        packet(&mut h, &[0x28, 0, 0, 0, 0, 1, 0, 0, 1], 0xFFFE, false);
        assert_eq!(h.inb(0x376), ST_BSY);
        let Some(Drive::Atapi(cd)) = h.ide.drive_mut(2) else {
            panic!()
        };
        cd.eject();
        h.wake();
        assert!(h.irq.get(15));
        assert_eq!(h.inb(0x177), ST_DRDY | ST_ERR);
        assert_eq!(h.inb(0x171) >> 4, atapi::SK_NOT_READY);
    }

    #[test]
    fn failed_atapi_reads_are_check_condition_medium_error_by_pio_and_dma() {
        let (mut h, _) = H::with_scripted_cd(8, &[Fail, Fail]);
        packet(&mut h, &[0x28, 0, 0, 0, 0, 2, 0, 0, 1], 0xFFFE, false);
        assert!(h.irq.get(15));
        assert_eq!(h.inb(0x177), ST_DRDY | ST_ERR, "CHECK CONDITION");
        assert_eq!(h.inb(0x171), atapi::SK_MEDIUM_ERROR << 4);
        assert_eq!(h.inb(0x172), IR_IO | IR_COD, "status phase, no data");
        // REQUEST SENSE: MEDIUM ERROR, unrecovered read error (03h/11h).
        packet(&mut h, &[0x03, 0, 0, 0, 18], 0xFFFE, false);
        assert_eq!(h.inb(0x177) & (ST_DRQ | ST_ERR), ST_DRQ);
        let sense = h.read_words(0x170, 9);
        assert_eq!(
            (sense[0], sense[2] & 0x0F, sense[12], sense[13]),
            (0x70, 3, 0x11, 0)
        );
        assert_eq!(h.inb(0x177) & ST_ERR, 0);
        // By DMA: memory untouched, the same CHECK CONDITION.
        prd(&mut h, &[(0x4000, 2048, true)]);
        h.out(BM_DEFAULT_BASE + 8 + 4, 4, 0x1000);
        packet(&mut h, &[0x28, 0, 0, 0, 0, 2, 0, 0, 1], 0, true);
        h.outb(BM_DEFAULT_BASE + 8, BM_CMD_START | BM_CMD_WRITE);
        h.dma();
        assert!(h.mem[0x4000..0x4800].iter().all(|&b| b == 0));
        assert!(h.irq.get(15));
        assert_eq!(h.inb(0x177), ST_DRDY | ST_ERR);
        assert_eq!(h.inb(0x171) >> 4, atapi::SK_MEDIUM_ERROR);
        assert_eq!(h.inb(BM_DEFAULT_BASE + 8 + 2) & BM_ST_INTR, BM_ST_INTR);
        // An illegal request also sets ABRT.
        packet(&mut h, &[0xFF], 0xFFFE, false);
        assert_eq!(h.inb(0x171), atapi::SK_ILLEGAL_REQUEST << 4 | ER_ABRT);
    }

    // ---- PCI command register -----------------------------------------------------------------

    #[test]
    fn dma_waits_while_bus_mastering_is_disabled() {
        let mut h = H::with_disk(64);
        h.pci(pci::CMD_IO, [0x80, 0x80]);
        prd(&mut h, &[(0x2000, 512, true)]);
        h.ata28(CMD_READ_DMA, 1, 1);
        h.outb(BM_DEFAULT_BASE, BM_CMD_START | BM_CMD_WRITE);
        assert!(!h.ide.dma_ready(), "the bus master cannot get the bus");
        h.dma();
        assert!(h.mem[0x2000..0x2200].iter().all(|&b| b == 0));
        assert!(!h.irq.get(14));
        assert_eq!(
            h.inb(BM_DEFAULT_BASE + 2) & 7,
            BM_ST_ACTIVE,
            "still pending"
        );
        assert_eq!(h.inb(0x3F6) & (ST_BSY | ST_DRQ), ST_DRQ);
        // The guest turns bus mastering on: the transfer proceeds.
        h.pci(pci::CMD_IO | pci::CMD_MASTER, [0x80, 0x80]);
        assert!(h.ide.dma_ready());
        h.dma();
        assert_eq!(&h.mem[0x2000..0x2200], &pattern(64 * 512)[512..1024]);
        assert!(h.irq.get(14));
        assert_eq!(h.inb(BM_DEFAULT_BASE + 2) & 7, BM_ST_INTR);
        // Writes from memory wait too.
        h.pci(pci::CMD_IO, [0x80, 0x80]);
        h.mem[0x2000..0x2200].fill(0xAB);
        h.ata28(CMD_WRITE_DMA, 2, 1);
        h.outb(BM_DEFAULT_BASE, 0);
        h.outb(BM_DEFAULT_BASE + 2, BM_ST_INTR);
        h.outb(BM_DEFAULT_BASE, BM_CMD_START);
        h.dma();
        assert_eq!(h.ide.dma_count()[0], 1);
        h.pci(pci::CMD_IO | pci::CMD_MASTER, [0x80, 0x80]);
        h.dma();
        assert_eq!(h.ide.dma_count()[0], 2);
        h.ata28(CMD_READ_SECTORS, 2, 1);
        h.inb(0x1F7);
        assert_eq!(h.read_words(0x1F0, 256), vec![0xAB; 512]);
    }

    #[test]
    fn io_space_enable_and_idetim_decode_gate_the_ports() {
        let mut h = H::with_disk(64);
        h.out(BM_DEFAULT_BASE + 4, 4, 0x1000);
        // I/O space off: neither the legacy ports nor the bus-master registers answer.
        h.pci(pci::CMD_MASTER, [0x80, 0x80]);
        assert_eq!(h.inb(0x1F7), 0xFF);
        assert_eq!(h.inb(0x3F6), 0xFF);
        assert_eq!(h.inp(BM_DEFAULT_BASE + 4, 4), 0xFFFF_FFFF);
        h.out(BM_DEFAULT_BASE + 4, 4, 0x3000);
        h.ata28(CMD_IDENTIFY, 0, 0);
        assert!(!h.irq.get(14), "the command went nowhere");
        // On again: the earlier PRD address stands; the ignored command did nothing.
        h.pci(pci::CMD_IO | pci::CMD_MASTER, [0x80, 0x80]);
        assert_eq!(h.inp(BM_DEFAULT_BASE + 4, 4), 0x1000);
        assert_eq!(h.inb(0x1F7), ST_DRDY | ST_DSC);
        // IDETIM: the primary channel's decode off leaves the bus-master registers on.
        h.pci(pci::CMD_IO | pci::CMD_MASTER, [0x00, 0x80]);
        assert_eq!(h.inb(0x1F7), 0xFF);
        assert_eq!(h.inp(0x1F0, 2), 0xFFFF);
        assert_eq!(h.inp(BM_DEFAULT_BASE + 4, 4), 0x1000);
        // A controller reset turns everything back on, as the PCI function resets.
        h.ide.reset();
        assert_eq!(h.inb(0x1F7), ST_DRDY | ST_DSC);
    }

    #[test]
    fn atapi_identify_offers_dma_and_reports_the_selected_mode() {
        let mut h = H::new();
        h.ide.attach(
            2,
            Drive::Atapi(Cdrom::with_disc(Box::new(MemBackend::new(vec![0; 4096])))),
        );
        let identify = |h: &mut H| {
            h.outb(0x176, 0xA0);
            h.outb(0x177, CMD_IDENTIFY_PACKET);
            h.inb(0x177);
            let id = h.read_words(0x170, 256);
            (0..256)
                .map(|i| u16::from_le_bytes([id[2 * i], id[2 * i + 1]]))
                .collect::<Vec<_>>()
        };
        let w = identify(&mut h);
        assert_eq!(w[0] & 0xC000, 0x8000, "ATAPI");
        assert_ne!(w[49] & 0x0100, 0, "DMA supported");
        assert_ne!(w[53] & 0x0002, 0, "words 64-70 valid");
        assert_ne!(w[53] & 0x0004, 0, "word 88 valid");
        assert_eq!(w[62], 0, "DMADIR not required");
        assert_eq!(w[63], 0x0007, "MWDMA 0-2, none selected");
        // SET FEATURES: multiword DMA 2.
        h.outb(0x171, SF_XFER_MODE);
        h.outb(0x172, 0x22);
        h.outb(0x177, CMD_SET_FEATURES);
        assert_eq!(h.inb(0x177) & ST_ERR, 0);
        let w = identify(&mut h);
        assert_eq!(w[63], 0x0407);
        assert_eq!(w[88] & 0xFF00, 0);
    }
}
