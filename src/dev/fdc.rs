//! The Intel 82077AA floppy disk controller in PC/AT mode, with up to two drives (A: and B:):
//! IRQ 6, DMA channel 2, ports 0x3F0-0x3F5 and 0x3F7 (0x3F6 belongs to the IDE controller).
//!
//! | port | read | write |
//! |---|---|---|
//! | 0x3F2 | DOR | DOR: drive select (bits 0-1), /RESET (bit 2), DMA and IRQ gate (bit 3), motors (4-7) |
//! | 0x3F3 | TDR | TDR |
//! | 0x3F4 | MSR: RQM 0x80, DIO 0x40, NDMA 0x20, busy 0x10, drives seeking (bits 0-3) | DSR: software reset (bit 7), data rate |
//! | 0x3F5 | FIFO: result bytes, non-DMA data | FIFO: command and parameter bytes, non-DMA data |
//! | 0x3F7 | DIR: disk changed (bit 7) | CCR: data rate |
//!
//! Commands: READ DATA, READ DELETED DATA, WRITE DATA, WRITE DELETED DATA, READ TRACK, VERIFY,
//! READ ID, FORMAT TRACK, SCAN EQUAL, SCAN LOW OR EQUAL, SCAN HIGH OR EQUAL, RECALIBRATE, SEEK,
//! RELATIVE SEEK, SENSE INTERRUPT STATUS, SENSE DRIVE STATUS, SPECIFY, CONFIGURE, VERSION,
//! DUMPREG, LOCK, PERPENDICULAR MODE; anything else is an invalid command (one result byte,
//! 0x80), as the 82077AA answers it. Transfers go by DMA through the 8237A's channel 2 unless
//! SPECIFY chose non-DMA mode, where the data goes through the FIFO. Execution takes no virtual
//! time: the interrupt is raised when the command's last byte (or, in non-DMA mode, its last
//! data byte) is written.
//!
//! A diskette is a raw image: data fields only, in sector order on each track. So there are no
//! deleted data marks (READ DELETED DATA sees every sector as normal, and WRITE DELETED DATA's
//! mark is lost), no CRC errors, and no ID fields apart from the sectors' own. The encoding and
//! the data rate are not checked (an FM command, or a rate that does not suit the diskette,
//! reads it all the same), there is no implied seek (CONFIGURE's EIS), and a data command's
//! cylinder C picks the track without being checked against where the head is. A drive's
//! geometry comes from its image's size (360 KB, 720 KB, 1.2 MB, 1.44 MB or 2.88 MB); guest
//! writes go to a copy-on-write overlay, never to the image.

use super::dma::{Direction, Dma};
use super::ide::DmaMemory;
use super::{At, DevCtx, Device, Snapshot};
use crate::block::{BlockBackend, Overlay, ReadStatus, SECTOR};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Ports 0x3F0-0x3F5.
pub const BASE: u16 = 0x3F0;
pub const LEN: u32 = 6;
/// Port 0x3F7 (DIR/CCR).
pub const DIR_PORT: u16 = 0x3F7;
/// The interrupt line and the DMA channel.
pub const IRQ: u8 = 6;
pub const DMA_CHANNEL: usize = 2;

const DOR: u32 = 2;
const TDR: u32 = 3;
const MSR: u32 = 4;
const FIFO: u32 = 5;

const DOR_RESET_OFF: u8 = 0x04;
const DOR_DMA_GATE: u8 = 0x08;
const MSR_RQM: u8 = 0x80;
const MSR_DIO: u8 = 0x40;
const MSR_NDMA: u8 = 0x20;
const MSR_BUSY: u8 = 0x10;

/// ST0 interrupt codes and bits.
const ST0_ABNORMAL: u8 = 0x40;
const ST0_INVALID: u8 = 0x80;
const ST0_POLLED: u8 = 0xC0;
const ST0_SEEK_END: u8 = 0x20;
const ST0_EQUIPMENT: u8 = 0x10;
/// ST1: missing address mark, not writable, no data, overrun, end of cylinder.
const ST1_MA: u8 = 0x01;
const ST1_NW: u8 = 0x02;
const ST1_ND: u8 = 0x04;
const ST1_OR: u8 = 0x10;
const ST1_EN: u8 = 0x80;
/// ST2: control mark (a data mark of the other kind than the command reads), scan hit (an
/// equal sector), scan not satisfied.
const ST2_CM: u8 = 0x40;
const ST2_SH: u8 = 0x08;
const ST2_SN: u8 = 0x04;
/// ST3: ready, track 0, two-sided, write protected.
const ST3_READY: u8 = 0x20;
const ST3_TRACK0: u8 = 0x10;
const ST3_TWO_SIDE: u8 = 0x08;
const ST3_WP: u8 = 0x40;

/// The only sector size code PC diskettes use (2: 512 bytes).
const N_512: u8 = 2;

/// Command codes: the first byte's low 5 bits (the high 3 are MT, MFM and SK where the command
/// has them).
const OP_MASK: u8 = 0x1F;
const OP_READ_TRACK: u8 = 0x02;
const OP_SPECIFY: u8 = 0x03;
const OP_SENSE_DRIVE: u8 = 0x04;
const OP_WRITE: u8 = 0x05;
const OP_READ: u8 = 0x06;
const OP_RECALIBRATE: u8 = 0x07;
const OP_SENSE_INTERRUPT: u8 = 0x08;
const OP_WRITE_DELETED: u8 = 0x09;
const OP_READ_ID: u8 = 0x0A;
const OP_READ_DELETED: u8 = 0x0C;
const OP_FORMAT: u8 = 0x0D;
const OP_DUMPREG: u8 = 0x0E;
/// SEEK, and RELATIVE SEEK when the first byte's bit 7 is set.
const OP_SEEK: u8 = 0x0F;
const OP_VERSION: u8 = 0x10;
const OP_SCAN_EQUAL: u8 = 0x11;
const OP_PERPENDICULAR: u8 = 0x12;
const OP_CONFIGURE: u8 = 0x13;
const OP_LOCK: u8 = 0x14;
const OP_VERIFY: u8 = 0x16;
const OP_SCAN_LOW: u8 = 0x19;
const OP_SCAN_HIGH: u8 = 0x1D;

/// First command byte: multi-track (go on to head 1 after EOT on head 0) and skip (SK: pass
/// over sectors whose data mark is of the other kind).
const CMD_MT: u8 = 0x80;
const CMD_SK: u8 = 0x20;
/// RELATIVE SEEK's first byte: bit 7 marks it, bit 6 (DIR) steps in (toward the spindle,
/// higher cylinders) rather than out.
const CMD_RELATIVE: u8 = 0x80;
const CMD_DIR_IN: u8 = 0x40;
/// VERIFY's second byte, bit 7 (EC): the last byte (DTL/SC) counts the sectors to verify.
const VERIFY_EC: u8 = 0x80;
/// What SCAN compares with every byte: FF, from either side, is a mask byte that always meets
/// the condition.
const SCAN_MASK: u8 = 0xFF;

/// A diskette geometry: cylinders, heads, sectors per track.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    pub cylinders: u8,
    pub heads: u8,
    pub sectors: u8,
}

impl Geometry {
    /// The geometry of a standard PC diskette image of `bytes` bytes.
    pub fn of_size(bytes: u64) -> Option<Geometry> {
        let (cylinders, sectors) = match bytes {
            368_640 => (40, 9),
            737_280 => (80, 9),
            1_228_800 => (80, 15),
            1_474_560 => (80, 18),
            2_949_120 => (80, 36),
            _ => return None,
        };
        Some(Geometry {
            cylinders,
            heads: 2,
            sectors,
        })
    }
}

/// Why an image cannot be a diskette.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "a floppy image must be 360 KB, 720 KB, 1.2 MB, 1.44 MB or 2.88 MB (368,640, 737,280, \
     1,228,800, 1,474,560 or 2,949,120 bytes), not {0} bytes"
)]
pub struct BadFloppySize(pub u64);

/// A diskette in a drive.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Diskette {
    pub geometry: Geometry,
    image: Overlay,
    write_protected: bool,
}

impl Diskette {
    /// A diskette of `image`, whose size says its geometry.
    pub fn new(image: Box<dyn BlockBackend>, write_protected: bool) -> Result<Self, BadFloppySize> {
        let geometry = Geometry::of_size(image.len()).ok_or(BadFloppySize(image.len()))?;
        Ok(Diskette {
            geometry,
            image: Overlay::new(image),
            write_protected,
        })
    }

    /// The image under the guest's changes.
    pub fn image_mut(&mut self) -> &mut Overlay {
        &mut self.image
    }

    /// FORMAT TRACK writing the sector with ID `c`, `h`, `r`: its data field filled with
    /// `fill`. A raw image keeps no IDs, so one that is not its own sector's is dropped.
    fn format_sector(&mut self, c: u8, h: u8, r: u8, fill: u8) {
        if let Some(at) = self.offset(c, h, r) {
            self.image.write(at / SECTOR as u64, &[fill; SECTOR]);
        }
    }

    /// Byte offset of sector `r` (from 1) of cylinder `c`, head `h`, if it exists.
    fn offset(&self, c: u8, h: u8, r: u8) -> Option<u64> {
        let g = self.geometry;
        (c < g.cylinders && h < g.heads && (1..=g.sectors).contains(&r)).then(|| {
            ((u64::from(c) * u64::from(g.heads) + u64::from(h)) * u64::from(g.sectors)
                + u64::from(r - 1))
                * SECTOR as u64
        })
    }
}

/// One drive position (the controller addresses four; A: and B: have drives).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Drive {
    /// A drive is cabled here.
    connected: bool,
    disk: Option<Diskette>,
    /// The cylinder the head is over.
    cylinder: u8,
    /// The disk-change line: set when the diskette is changed, cleared by a step with a
    /// diskette in.
    changed: bool,
}

/// What the controller is doing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    /// Waiting for a command byte (or the rest of one).
    #[default]
    Command,
    /// A transfer waits for the DMA controller (carried out right after the OUT that started
    /// it, see [`Fdc::run_dma`]).
    Dma(Transfer),
    /// Non-DMA data through the FIFO: `buf` from `pos`.
    Pio { transfer: Transfer, pos: usize },
    /// Result bytes to read.
    Result,
}

/// A data command in execution (READ/WRITE DATA and their DELETED forms, READ TRACK, VERIFY,
/// the SCANs, FORMAT TRACK).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Transfer {
    kind: Kind,
    drive: u8,
    head: u8,
    /// The ID register: cylinder, head, sector (the sector to work on next, as the result
    /// phase reports it), or for FORMAT the sectors formatted in `r`.
    c: u8,
    h: u8,
    r: u8,
    eot: u8,
    multi_track: bool,
    /// FORMAT: sectors per track and the fill byte.
    sectors: u8,
    fill: u8,
    /// Non-DMA: the sector (or FORMAT's 4-byte ID) being moved.
    buf: Vec<u8>,
}

/// Which data command, with what it keeps from sector to sector. New variants go at the end:
/// a state saved in the middle of a transfer names its variant by position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Kind {
    Read,
    /// WRITE DATA, and WRITE DELETED DATA (see [`Fdc::kind_of`]).
    Write,
    Format,
    /// READ TRACK: `read` sectors read so far (the next is the one after them in the order
    /// they pass the head from the index), `nd` an ID that did not match the ID register.
    ReadTrack {
        read: u8,
        nd: bool,
    },
    /// READ DELETED DATA, skipping (SK) the sectors with a normal data mark or not.
    ReadDeleted {
        skip: bool,
    },
    /// VERIFY: with EC, the sectors left to verify (0 in SC meaning 256); without, it runs to
    /// EOT.
    Verify {
        left: Option<u16>,
    },
    /// SCAN EQUAL, LOW OR EQUAL or HIGH OR EQUAL: `step` (STP) added to R after each sector.
    Scan {
        test: ScanTest,
        step: u8,
    },
}

impl Kind {
    /// Data goes from the diskette to the host (in non-DMA mode MSR's DIO says so).
    fn to_host(self) -> bool {
        matches!(
            self,
            Kind::Read | Kind::ReadTrack { .. } | Kind::ReadDeleted { .. }
        )
    }

    /// The command changes the diskette (so a write-protected one refuses it).
    fn writes(self) -> bool {
        matches!(self, Kind::Write | Kind::Format)
    }

    /// Bytes pass between the host and the controller. VERIFY moves none, and READ DELETED
    /// DATA with SK moves none either here: an image has no deleted sectors for it to read.
    fn moves_data(self) -> bool {
        !matches!(self, Kind::Verify { .. } | Kind::ReadDeleted { skip: true })
    }
}

/// The condition a SCAN looks for, between a diskette byte and the host's byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum ScanTest {
    Equal,
    LowOrEqual,
    HighOrEqual,
}

impl ScanTest {
    /// Compare a sector from the diskette with the host's bytes for it (fewer than a sector if
    /// the terminal count cut them short): ST2 for a sector that meets the condition (SH if
    /// every byte compared was equal, 0 if some were only lower or higher), None if one does
    /// not. Mask bytes (FF on either side) meet it and do not spoil an equal sector.
    fn compare(self, disk: &[u8], host: &[u8]) -> Option<u8> {
        let mut equal = true;
        for (&d, &h) in disk.iter().zip(host) {
            if d == SCAN_MASK || h == SCAN_MASK {
                continue;
            }
            let meets = match self {
                ScanTest::Equal => d == h,
                ScanTest::LowOrEqual => d <= h,
                ScanTest::HighOrEqual => d >= h,
            };
            if !meets {
                return None;
            }
            equal &= d == h;
        }
        Some(if equal { ST2_SH } else { 0 })
    }
}

/// How a data command ended: the status registers of its result phase (ST0 without the
/// head and drive bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Status {
    st0: u8,
    st1: u8,
    st2: u8,
}

impl Status {
    const NORMAL: Status = Status {
        st0: 0,
        st1: 0,
        st2: 0,
    };

    /// Abnormal termination, for the reason in `st1`.
    fn abnormal(st1: u8) -> Status {
        Status {
            st0: ST0_ABNORMAL,
            st1,
            st2: 0,
        }
    }
}

/// The controller.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fdc {
    dor: u8,
    tdr: u8,
    drives: [Drive; 4],
    phase: Phase,
    /// The command being received.
    command: Vec<u8>,
    results: VecDeque<u8>,
    /// SPECIFY's bytes; bit 0 of the second is ND (non-DMA mode).
    specify: [u8; 2],
    /// CONFIGURE's second and third bytes, LOCK, PERPENDICULAR MODE.
    config: u8,
    pretrk: u8,
    lock: bool,
    perpendicular: u8,
    /// Seeks that ended, for SENSE INTERRUPT STATUS (ST0 per drive).
    seek_ends: VecDeque<u8>,
    /// Polling-change interrupts left after a reset (one per drive position, 4 in all).
    reset_polls: u8,
    /// The interrupt request (before the DOR's gate).
    interrupt: bool,
}

impl Default for Fdc {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes a command takes, counting its first, by its low 5 bits (0: invalid).
fn command_len(cmd: u8) -> usize {
    match cmd & OP_MASK {
        OP_SPECIFY => 3,
        OP_SENSE_DRIVE | OP_RECALIBRATE | OP_READ_ID | OP_PERPENDICULAR => 2,
        OP_READ_TRACK | OP_WRITE | OP_READ | OP_WRITE_DELETED | OP_READ_DELETED | OP_SCAN_EQUAL
        | OP_VERIFY | OP_SCAN_LOW | OP_SCAN_HIGH => 9,
        OP_SENSE_INTERRUPT | OP_DUMPREG | OP_VERSION | OP_LOCK => 1,
        OP_FORMAT => 6,
        // RELATIVE SEEK too: the same 3 bytes.
        OP_SEEK => 3,
        OP_CONFIGURE => 4,
        _ => 0,
    }
}

impl Fdc {
    /// A controller at power-on (held in reset until the DOR releases it), no diskettes.
    pub fn new() -> Fdc {
        Fdc {
            dor: 0,
            tdr: 0,
            drives: std::array::from_fn(|n| Drive {
                connected: n < 2,
                changed: true,
                ..Drive::default()
            }),
            phase: Phase::Command,
            command: Vec::new(),
            results: VecDeque::new(),
            specify: [0, 0],
            config: 0x20, // FIFO disabled, threshold 1
            pretrk: 0,
            lock: false,
            perpendicular: 0,
            seek_ends: VecDeque::new(),
            reset_polls: 0,
            interrupt: false,
        }
    }

    /// The controller at power-on with the same drives and diskettes (a machine reset).
    pub fn power_on(&mut self) {
        let drives = std::mem::take(&mut self.drives);
        *self = Fdc::new();
        for (mine, d) in self.drives.iter_mut().zip(drives) {
            mine.disk = d.disk;
        }
    }

    /// Put `disk` into drive `n` (0 = A:, 1 = B:), or take it out (`None`).
    pub fn insert(&mut self, n: usize, disk: Option<Diskette>) {
        if let Some(d) = self.drives.get_mut(n).filter(|d| d.connected) {
            d.disk = disk;
            d.changed = true;
        }
    }

    /// Drive `n`'s diskette.
    pub fn diskette_mut(&mut self, n: usize) -> Option<&mut Diskette> {
        self.drives.get_mut(n)?.disk.as_mut()
    }

    /// The CMOS drive type of drive `n` (register 0x10's nibble): 1.44 MB unless the diskette
    /// in it says otherwise; 0 with no diskette.
    pub fn cmos_type(&self, n: usize) -> u8 {
        match self.drives.get(n).and_then(|d| d.disk.as_ref()) {
            None => 0,
            Some(d) => match d.geometry.sectors {
                9 if d.geometry.cylinders == 40 => 1,
                9 => 3,
                15 => 2,
                36 => 5,
                _ => 4,
            },
        }
    }

    fn gate(&self) -> bool {
        self.dor & DOR_DMA_GATE != 0
    }

    fn non_dma(&self) -> bool {
        self.specify[1] & 1 != 0
    }

    fn sync_irq(&self, ctx: &mut DevCtx) {
        ctx.irq.set(IRQ, self.interrupt && self.gate());
    }

    /// Controller reset (DOR bit 2 low, or DSR bit 7): the command and result phases are
    /// dropped; SPECIFY's and CONFIGURE's settings stay (and LOCK keeps the FIFO settings).
    fn reset(&mut self) {
        self.phase = Phase::Command;
        self.command.clear();
        self.results.clear();
        self.seek_ends.clear();
        self.interrupt = false;
        if !self.lock {
            self.config = 0x20;
            self.pretrk = 0;
        }
    }

    /// Leaving reset: the 82077AA interrupts and reports a polling change for each drive.
    fn end_reset(&mut self) {
        self.reset_polls = 4;
        self.interrupt = true;
    }

    fn msr(&self) -> u8 {
        if self.dor & DOR_RESET_OFF == 0 {
            return 0;
        }
        match &self.phase {
            Phase::Command if self.command.is_empty() => MSR_RQM,
            Phase::Command => MSR_RQM | MSR_BUSY,
            Phase::Dma(_) => MSR_BUSY,
            Phase::Pio { transfer, .. } => {
                let dio = if transfer.kind.to_host() { MSR_DIO } else { 0 };
                MSR_RQM | dio | MSR_NDMA | MSR_BUSY
            }
            Phase::Result => MSR_RQM | MSR_DIO | MSR_BUSY,
        }
    }

    fn finish(&mut self, results: &[u8]) {
        self.results = results.iter().copied().collect();
        self.phase = Phase::Result;
    }

    /// A command's last byte arrived: run it.
    fn execute(&mut self) {
        let cmd = std::mem::take(&mut self.command);
        let op = cmd[0] & OP_MASK;
        let drive = cmd.get(1).map_or(0, |b| b & 3);
        let head = cmd.get(1).map_or(0, |b| (b >> 2) & 1);
        match op {
            OP_SPECIFY => {
                self.specify = [cmd[1], cmd[2]];
                self.phase = Phase::Command;
            }
            OP_SENSE_DRIVE => {
                let d = &self.drives[usize::from(drive)];
                let mut st3 = drive | head << 2;
                if d.connected {
                    st3 |= ST3_READY | ST3_TWO_SIDE;
                    if d.cylinder == 0 {
                        st3 |= ST3_TRACK0;
                    }
                }
                if d.disk.as_ref().is_some_and(|k| k.write_protected) {
                    st3 |= ST3_WP;
                }
                self.finish(&[st3]);
            }
            OP_RECALIBRATE | OP_SEEK => self.seek(&cmd, drive, head),
            OP_SENSE_INTERRUPT => {
                if self.reset_polls > 0 {
                    let n = 4 - self.reset_polls;
                    self.reset_polls -= 1;
                    let pcn = self.drives.get(usize::from(n)).map_or(0, |d| d.cylinder);
                    self.finish(&[ST0_POLLED | n, pcn]);
                } else if let Some(st0) = self.seek_ends.pop_front() {
                    let pcn = self.drives[usize::from(st0 & 3)].cylinder;
                    self.finish(&[st0, pcn]);
                } else {
                    self.finish(&[ST0_INVALID]);
                }
                self.interrupt = false;
            }
            OP_READ_ID => {
                let d = &self.drives[usize::from(drive)];
                let st0 = head << 2 | drive;
                let c = d.cylinder;
                // Past the diskette's last cylinder the head is over no formatted track: no
                // ID address mark comes round, as with no diskette at all.
                match &d.disk {
                    Some(disk) if c < disk.geometry.cylinders => {
                        self.finish(&[st0, 0, 0, c, head, 1, N_512]);
                    }
                    _ => self.finish(&[st0 | ST0_ABNORMAL, ST1_MA, 0, c, head, 1, N_512]),
                }
                self.interrupt = true;
            }
            OP_FORMAT => {
                // FORMAT works on the track under the head and counts the sectors it
                // formatted in `r`.
                let transfer = Transfer {
                    kind: Kind::Format,
                    drive,
                    head,
                    c: self.drives[usize::from(drive)].cylinder,
                    h: head,
                    r: 0,
                    eot: 0,
                    multi_track: false,
                    sectors: cmd[3],
                    fill: cmd[5],
                    buf: Vec::new(),
                };
                self.start(transfer, cmd[2]);
            }
            OP_READ_TRACK | OP_WRITE | OP_READ | OP_WRITE_DELETED | OP_READ_DELETED
            | OP_SCAN_EQUAL | OP_VERIFY | OP_SCAN_LOW | OP_SCAN_HIGH => {
                let transfer = Transfer {
                    kind: Self::kind_of(&cmd),
                    drive,
                    head,
                    c: cmd[2],
                    h: cmd[3],
                    r: cmd[4],
                    eot: cmd[6],
                    // READ TRACK stays on one side: the datasheet has MT clear for it.
                    multi_track: cmd[0] & CMD_MT != 0 && op != OP_READ_TRACK,
                    sectors: 0,
                    fill: 0,
                    buf: Vec::new(),
                };
                self.start(transfer, cmd[5]);
            }
            OP_DUMPREG => {
                let pcn: Vec<u8> = (0..4)
                    .map(|n| self.drives.get(n).map_or(0, |d| d.cylinder))
                    .collect();
                let lock = u8::from(self.lock) << 7;
                self.finish(&[
                    pcn[0],
                    pcn[1],
                    pcn[2],
                    pcn[3],
                    self.specify[0],
                    self.specify[1],
                    0,
                    lock | self.perpendicular,
                    self.config,
                    self.pretrk,
                ]);
            }
            OP_VERSION => self.finish(&[0x90]),
            OP_PERPENDICULAR => {
                // Bit 7 (OW) says whether the drive bits are written.
                if cmd[1] & 0x80 != 0 {
                    self.perpendicular = cmd[1] & 0x3F;
                } else {
                    self.perpendicular = (self.perpendicular & 0x3C) | (cmd[1] & 0x03);
                }
                self.phase = Phase::Command;
            }
            OP_CONFIGURE => {
                self.config = cmd[2];
                self.pretrk = cmd[3];
                self.phase = Phase::Command;
            }
            OP_LOCK => {
                self.lock = cmd[0] & 0x80 != 0;
                self.finish(&[u8::from(self.lock) << 4]);
            }
            _ => self.finish(&[ST0_INVALID]),
        }
    }

    /// What a 9-byte data command `cmd` does in its execution phase. SK matters only where a
    /// sector's data mark is of the other kind than the command reads, and every sector of an
    /// image has a normal one: READ DATA, VERIFY and the SCANs never meet a deleted sector.
    fn kind_of(cmd: &[u8]) -> Kind {
        match cmd[0] & OP_MASK {
            OP_READ_TRACK => Kind::ReadTrack { read: 0, nd: false },
            OP_READ => Kind::Read,
            // WRITE DELETED DATA writes the sector's data as WRITE DATA does. The deleted data
            // address mark it writes in front of the data cannot be kept: a raw image holds
            // the data fields alone, so the sector reads back with a normal mark.
            OP_WRITE | OP_WRITE_DELETED => Kind::Write,
            OP_READ_DELETED => Kind::ReadDeleted {
                skip: cmd[0] & CMD_SK != 0,
            },
            OP_VERIFY => Kind::Verify {
                left: (cmd[1] & VERIFY_EC != 0).then(|| match cmd[8] {
                    0 => 256,
                    n => u16::from(n),
                }),
            },
            op => Kind::Scan {
                test: match op {
                    OP_SCAN_EQUAL => ScanTest::Equal,
                    OP_SCAN_LOW => ScanTest::LowOrEqual,
                    _ => ScanTest::HighOrEqual,
                },
                step: cmd[8],
            },
        }
    }

    /// RECALIBRATE, SEEK and RELATIVE SEEK: the head gets there at once, and the seek-end
    /// interrupt waits for SENSE INTERRUPT STATUS. The disk-change line is reset by a step
    /// pulse with a diskette in, so only by a move that issues one.
    fn seek(&mut self, cmd: &[u8], drive: u8, head: u8) {
        let d = &mut self.drives[usize::from(drive)];
        let st0 = if d.connected {
            let (target, pulses, st0) = if cmd[0] & OP_MASK == OP_RECALIBRATE {
                (0, d.cylinder != 0, ST0_SEEK_END)
            } else if cmd[0] & CMD_RELATIVE == 0 {
                (cmd[2], d.cylinder != cmd[2], ST0_SEEK_END)
            } else if cmd[0] & CMD_DIR_IN != 0 {
                // RELATIVE SEEK in: RCN steps; the present cylinder number counts them modulo
                // 256, as the datasheet says it overflows past 255.
                (d.cylinder.wrapping_add(cmd[2]), cmd[2] != 0, ST0_SEEK_END)
            } else {
                // RELATIVE SEEK out: the head stops at track 0, and a seek that asked to go
                // past it sets EC.
                match d.cylinder.checked_sub(cmd[2]) {
                    Some(c) => (c, cmd[2] != 0, ST0_SEEK_END),
                    None => (0, true, ST0_SEEK_END | ST0_EQUIPMENT),
                }
            };
            if pulses && d.disk.is_some() {
                d.changed = false;
            }
            d.cylinder = target;
            st0
        } else {
            // No drive: no track 0 signal ever comes (equipment check).
            ST0_ABNORMAL | ST0_SEEK_END | ST0_EQUIPMENT
        };
        self.seek_ends.push_back(st0 | head << 2 | drive);
        self.phase = Phase::Command;
        self.interrupt = true;
    }

    /// Begin a data command; `n` is the sector size code it asked for. A command that moves
    /// no data runs to its end here.
    fn start(&mut self, mut t: Transfer, n: u8) {
        let Some(disk) = &self.drives[usize::from(t.drive)].disk else {
            // A drive without a diskette sends no index pulses, and the 82077AA would wait
            // for them until the host resets it; ending as "no address mark found" gives the
            // guest's retry and timeout logic the same outcome without the wait.
            return self.end(&t, Status::abnormal(ST1_MA));
        };
        if n != N_512 {
            return self.end(&t, Status::abnormal(ST1_ND));
        }
        if t.kind.writes() && disk.write_protected {
            return self.end(&t, Status::abnormal(ST1_NW));
        }
        if !t.kind.moves_data() {
            let status = self.run_without_data(&mut t);
            return self.end(&t, status);
        }
        if self.non_dma() {
            let mut phase = Phase::Pio {
                transfer: t,
                pos: 0,
            };
            self.load_pio(&mut phase);
            // A first sector that is not there has ended the command already.
            if matches!(phase, Phase::Pio { .. }) {
                self.phase = phase;
            }
        } else {
            self.phase = Phase::Dma(t);
        }
    }

    /// The result phase of a data command, and its interrupt.
    fn end(&mut self, t: &Transfer, s: Status) {
        let st0 = s.st0 | t.head << 2 | t.drive;
        self.finish(&[st0, s.st1, s.st2, t.c, t.h, t.r, N_512]);
        self.interrupt = true;
    }

    /// The next sector after `t`'s, `step` sectors on (SCAN's STP; at least 1), as the result
    /// phase reports it; false past the end (EOT, on the last head with MT).
    fn advance(t: &mut Transfer, geometry: Geometry, step: u8) -> bool {
        if t.r < t.eot {
            t.r = t.r.saturating_add(step.max(1));
            return true;
        }
        t.r = 1;
        if t.multi_track && t.h == 0 && geometry.heads > 1 {
            t.h = 1;
            return true;
        }
        if t.multi_track {
            t.h = 0;
        }
        t.c = t.c.wrapping_add(1);
        false
    }

    /// The sector `t` works on now: the ID register's, or for READ TRACK the next one to pass
    /// the head (an image's tracks hold their sectors in order from the index, 1 first).
    fn sector_of(t: &Transfer, geometry: Geometry) -> u8 {
        match t.kind {
            Kind::ReadTrack { read, .. } => read % geometry.sectors.max(1) + 1,
            _ => t.r,
        }
    }

    /// Where `t`'s sector is in `disk`'s image, or how the search for it ends: past the last
    /// cylinder there is no formatted track and so no ID field at all (MA); on a track, an ID
    /// that is not there is "no data" (ND).
    fn locate(disk: &Diskette, t: &Transfer) -> Result<u64, Status> {
        let g = disk.geometry;
        if t.c >= g.cylinders {
            return Err(Status::abnormal(ST1_MA));
        }
        disk.offset(t.c, t.h, Self::sector_of(t, g))
            .ok_or(Status::abnormal(ST1_ND))
    }

    /// Read `t`'s sector from `disk` into `buf`. Bytes the image cannot give (an I/O error, or
    /// a stream still fetching them) make the sector unreadable.
    fn read_sector(disk: &mut Diskette, t: &Transfer, buf: &mut [u8]) -> Result<(), Status> {
        let at = Self::locate(disk, t)?;
        Self::read_at(disk, at, buf)
    }

    /// Read the sector at byte `at` of `disk`'s image into `buf` (see [`Fdc::read_sector`]).
    fn read_at(disk: &mut Diskette, at: u64, buf: &mut [u8]) -> Result<(), Status> {
        match disk.image.read(at, buf) {
            Ok(ReadStatus::Ready) => Ok(()),
            _ => Err(Status::abnormal(ST1_ND)),
        }
    }

    /// A sector of `t` went through (`tc`: the DMA controller's terminal count came with it):
    /// step the ID register on, and say how the command ends if it ends here. Without a
    /// terminal count, a command that runs past its last sector ends abnormally with EN (end
    /// of cylinder), as the 82077AA ends it.
    fn sector_done(t: &mut Transfer, geometry: Geometry, tc: bool) -> Option<Status> {
        match t.kind {
            // READ DELETED DATA without SK on a normal data mark: the sector is read, CM says
            // what it was, and the command ends on it without incrementing R.
            Kind::ReadDeleted { skip: false } => Some(Status {
                st2: ST2_CM,
                ..Status::NORMAL
            }),
            Kind::ReadTrack { read, nd } => {
                // Each ID read is compared with the ID register, which counts on from the
                // command's R; a mismatch is reported (ND) but the data is read all the same.
                let nd = nd || t.r != Self::sector_of(t, geometry);
                let read = read.wrapping_add(1);
                t.kind = Kind::ReadTrack { read, nd };
                t.r = t.r.wrapping_add(1);
                let st1 = if nd { ST1_ND } else { 0 };
                if tc {
                    Some(Status {
                        st1,
                        ..Status::NORMAL
                    })
                } else {
                    // EOT counts the sectors to read.
                    (read == t.eot).then(|| Status::abnormal(ST1_EN | st1))
                }
            }
            Kind::Verify { left } => {
                let left = left.map(|n| n.saturating_sub(1));
                t.kind = Kind::Verify { left };
                let more = Self::advance(t, geometry, 1);
                if left == Some(0) {
                    // EC: the count ran out, an implicit terminal count.
                    Some(Status::NORMAL)
                } else if !more {
                    // Without EC, EOT is where VERIFY is meant to end; with EC, the count
                    // asked for more sectors than there were.
                    Some(match left {
                        None => Status::NORMAL,
                        Some(_) => Status::abnormal(ST1_EN),
                    })
                } else {
                    None
                }
            }
            _ => {
                let more = Self::advance(t, geometry, 1);
                if tc {
                    Some(Status::NORMAL)
                } else if !more {
                    Some(Status::abnormal(ST1_EN))
                } else {
                    None
                }
            }
        }
    }

    /// A SCAN compared sector `disk` with the host's bytes `host`: the command ends when the
    /// condition is met (SH if the sector was equal), at the terminal count or at the last
    /// sector (SN: not satisfied); otherwise R goes on by STP. A step that jumps over EOT
    /// goes on looking for a sector past it, and ends with ND where that is not found, as
    /// the datasheet's STP example says.
    fn scan_done(
        t: &mut Transfer,
        geometry: Geometry,
        disk: &[u8],
        host: &[u8],
        tc: bool,
    ) -> Option<Status> {
        let Kind::Scan { test, step } = t.kind else {
            return Some(Status::NORMAL);
        };
        let met = test.compare(disk, host);
        let more = Self::advance(t, geometry, step);
        match met {
            Some(st2) => Some(Status {
                st2,
                ..Status::NORMAL
            }),
            None if tc || !more => Some(Status {
                st2: ST2_SN,
                ..Status::NORMAL
            }),
            None => None,
        }
    }

    /// VERIFY, and READ DELETED DATA with SK: each sector is found and read off the diskette
    /// (so one that is not there ends the command as it would a read), and nothing moves to
    /// or from the host. READ DELETED DATA skips every sector it finds (all have normal data
    /// marks) and says so with CM.
    fn run_without_data(&mut self, t: &mut Transfer) -> Status {
        let Some(disk) = self.drives[usize::from(t.drive)].disk.as_mut() else {
            return Status::abnormal(ST1_MA);
        };
        let geometry = disk.geometry;
        let mut st2 = 0;
        let mut buf = vec![0u8; SECTOR];
        loop {
            if let Err(s) = Self::read_sector(disk, t, &mut buf) {
                return Status {
                    st2: s.st2 | st2,
                    ..s
                };
            }
            if matches!(t.kind, Kind::ReadDeleted { .. }) {
                st2 |= ST2_CM;
            }
            if let Some(s) = Self::sector_done(t, geometry, false) {
                return Status {
                    st2: s.st2 | st2,
                    ..s
                };
            }
        }
    }

    /// Non-DMA: make the FIFO buffer ready for the next sector: read from the diskette when
    /// the data goes to the host, else empty for the host's bytes once the sector is found
    /// (a write or a scan), or FORMAT's 4-byte ID. A sector not found ends the command.
    fn load_pio(&mut self, phase: &mut Phase) {
        let Phase::Pio { transfer, pos } = phase else {
            return;
        };
        *pos = 0;
        if transfer.kind == Kind::Format {
            transfer.buf = vec![0; 4];
            return;
        }
        let mut buf = vec![0; SECTOR];
        let found = match self.drives[usize::from(transfer.drive)].disk.as_mut() {
            None => Err(Status::abnormal(ST1_MA)),
            Some(disk) if transfer.kind.to_host() => Self::read_sector(disk, transfer, &mut buf),
            Some(disk) => Self::locate(disk, transfer).map(drop),
        };
        transfer.buf = buf;
        if let Err(s) = found {
            let t = transfer.clone();
            *phase = Phase::Command;
            self.end(&t, s);
        }
    }

    /// Carry out a DMA transfer the guest started, through channel 2 of `dma` against guest
    /// memory (the board calls this right after the OUT that started it).
    pub fn run_dma(&mut self, dma: &mut Dma, mem: &mut dyn DmaMemory, ctx: &mut DevCtx) {
        let Phase::Dma(mut t) = std::mem::take(&mut self.phase) else {
            return;
        };
        let status = loop {
            if let Some(s) = self.dma_sector(&mut t, dma, mem) {
                break s;
            }
        };
        if t.kind == Kind::Format {
            t.r = t.sectors;
        }
        self.end(&t, status);
        self.sync_irq(ctx);
    }

    /// One sector of a DMA transfer (one sector ID for FORMAT), and how the command ends if
    /// it ends with it.
    fn dma_sector(
        &mut self,
        t: &mut Transfer,
        dma: &mut Dma,
        mem: &mut dyn DmaMemory,
    ) -> Option<Status> {
        let Some(disk) = self.drives[usize::from(t.drive)].disk.as_mut() else {
            return Some(Status::abnormal(ST1_MA));
        };
        let geometry = disk.geometry;
        if t.kind == Kind::Format {
            if t.r >= t.sectors {
                return Some(Status::NORMAL);
            }
            let mut id = [0u8; 4];
            let m = dma.transfer(DMA_CHANNEL, Direction::FromMemory, &mut id, mem);
            if m.bytes < id.len() {
                return Some(Status::NORMAL);
            }
            let [c, h, r, _] = id;
            disk.format_sector(c, h, r, t.fill);
            (t.c, t.h) = (c, h);
            t.r += 1;
            return m.terminal_count.then_some(Status::NORMAL);
        }
        let at = match Self::locate(disk, t) {
            Ok(at) => at,
            Err(s) => return Some(s),
        };
        // The sector off the diskette (all but WRITE read it), and the host's bytes (WRITE
        // and SCAN take some).
        let mut sector = vec![0u8; SECTOR];
        if t.kind != Kind::Write {
            if let Err(s) = Self::read_at(disk, at, &mut sector) {
                return Some(s);
            }
        }
        let mut host = vec![0u8; SECTOR];
        let moved = if t.kind.to_host() {
            dma.transfer(DMA_CHANNEL, Direction::ToMemory, &mut sector, mem)
        } else {
            dma.transfer(DMA_CHANNEL, Direction::FromMemory, &mut host, mem)
        };
        if t.kind == Kind::Write && moved.bytes > 0 {
            // A sector cut short is written out with zeros after the bytes that came.
            disk.image.write(at / SECTOR as u64, &host);
        }
        if moved.bytes < SECTOR && !moved.terminal_count {
            // The DMA controller stopped (masked, not programmed): the 82077AA would wait
            // for it; it ends as an overrun would.
            return Some(Status::abnormal(ST1_OR));
        }
        match t.kind {
            Kind::Scan { .. } => Self::scan_done(
                t,
                geometry,
                &sector,
                &host[..moved.bytes],
                moved.terminal_count,
            ),
            _ => Self::sector_done(t, geometry, moved.terminal_count),
        }
    }

    /// Whether a DMA transfer waits for the board (see [`Fdc::run_dma`]).
    pub fn dma_pending(&self) -> bool {
        matches!(self.phase, Phase::Dma(_))
    }

    fn read_fifo(&mut self) -> u8 {
        match &mut self.phase {
            Phase::Result => {
                let b = self.results.pop_front().unwrap_or(0);
                // Reading the result clears the interrupt of a read/write/format.
                self.interrupt = false;
                if self.results.is_empty() {
                    self.phase = Phase::Command;
                }
                b
            }
            Phase::Pio { transfer, pos } if transfer.kind.to_host() => {
                let b = transfer.buf.get(*pos).copied().unwrap_or(0);
                *pos += 1;
                if *pos >= transfer.buf.len() {
                    self.pio_sector_done();
                }
                b
            }
            _ => 0xFF,
        }
    }

    fn write_fifo(&mut self, value: u8) {
        match &mut self.phase {
            Phase::Command => {
                if self.command.is_empty() && command_len(value) == 0 {
                    self.finish(&[ST0_INVALID]);
                    return;
                }
                self.command.push(value);
                if self.command.len() == command_len(self.command[0]) {
                    self.execute();
                }
            }
            Phase::Pio { transfer, pos } if !transfer.kind.to_host() => {
                if let Some(b) = transfer.buf.get_mut(*pos) {
                    *b = value;
                }
                *pos += 1;
                if *pos >= transfer.buf.len() {
                    self.pio_sector_done();
                }
            }
            _ => {}
        }
    }

    /// Non-DMA: the sector (or FORMAT ID) in the FIFO buffer has moved; store or compare it
    /// and go on, or end. There is no terminal count without DMA, so a command runs to the
    /// end of the track unless it ends itself (a scan's hit, READ DELETED's control mark).
    fn pio_sector_done(&mut self) {
        let Phase::Pio { mut transfer, .. } = std::mem::take(&mut self.phase) else {
            return;
        };
        match self.pio_sector(&mut transfer) {
            Some(s) => self.end(&transfer, s),
            None => {
                let mut phase = Phase::Pio { transfer, pos: 0 };
                self.load_pio(&mut phase);
                if matches!(phase, Phase::Pio { .. }) {
                    self.phase = phase;
                }
            }
        }
    }

    /// Non-DMA: what the sector that moved does, and how the command ends if it ends here.
    fn pio_sector(&mut self, t: &mut Transfer) -> Option<Status> {
        let Some(disk) = self.drives[usize::from(t.drive)].disk.as_mut() else {
            return Some(Status::abnormal(ST1_MA));
        };
        let geometry = disk.geometry;
        match t.kind {
            Kind::Format => {
                if let [c, h, r, _] = t.buf[..] {
                    disk.format_sector(c, h, r, t.fill);
                    (t.c, t.h) = (c, h);
                }
                t.r = t.r.saturating_add(1);
                (t.r >= t.sectors).then_some(Status::NORMAL)
            }
            Kind::Write => {
                if let Ok(at) = Self::locate(disk, t) {
                    disk.image.write(at / SECTOR as u64, &t.buf);
                }
                Self::sector_done(t, geometry, false)
            }
            Kind::Scan { .. } => {
                let mut sector = vec![0u8; SECTOR];
                if let Err(s) = Self::read_sector(disk, t, &mut sector) {
                    return Some(s);
                }
                let host = std::mem::take(&mut t.buf);
                Self::scan_done(t, geometry, &sector, &host, false)
            }
            _ => Self::sector_done(t, geometry, false),
        }
    }
}

impl Device for Fdc {
    fn read(&mut self, at: At, _size: u8, ctx: &mut DevCtx) -> u32 {
        let v = if at.base == u32::from(DIR_PORT) {
            let d = &self.drives[usize::from(self.dor & 3)];
            u8::from(d.changed || !d.connected) << 7
        } else {
            match at.offset {
                DOR => self.dor,
                TDR => self.tdr,
                MSR => self.msr(),
                FIFO => self.read_fifo(),
                _ => 0xFF,
            }
        };
        self.sync_irq(ctx);
        v.into()
    }

    fn write(&mut self, at: At, _size: u8, value: u32, ctx: &mut DevCtx) {
        let value = value as u8;
        if at.base == u32::from(DIR_PORT) {
            return; // CCR: the data rate, which an emulated drive does not need.
        }
        match at.offset {
            DOR => {
                let was_reset = self.dor & DOR_RESET_OFF == 0;
                self.dor = value;
                if value & DOR_RESET_OFF == 0 {
                    self.reset();
                } else if was_reset {
                    self.end_reset();
                }
            }
            TDR => self.tdr = value & 3,
            // DSR: a software reset resets and releases at once (the data rate needs nothing).
            MSR if value & 0x80 != 0 => {
                self.reset();
                self.end_reset();
            }
            FIFO if self.dor & DOR_RESET_OFF != 0 => self.write_fifo(value),
            _ => {}
        }
        self.sync_irq(ctx);
    }
}

/// The controller holds no caches; its state is a copy without the images (host handles),
/// checked on the way in.
impl Snapshot for Fdc {
    type State = Fdc;
    fn state(&self) -> Fdc {
        self.clone()
    }
    fn from_state(fdc: Fdc) -> Result<Fdc, String> {
        for d in fdc.drives.iter().filter_map(|d| d.disk.as_ref()) {
            d.image.check()?;
            if Geometry::of_size(d.image.len()) != Some(d.geometry) {
                return Err("a diskette whose geometry is not its size's".into());
            }
        }
        if fdc.command.len() > 9 {
            return Err("a command longer than any".into());
        }
        let transfer = match &fdc.phase {
            Phase::Dma(t) | Phase::Pio { transfer: t, .. } => Some(t),
            _ => None,
        };
        if transfer.is_some_and(|t| t.drive > 3) {
            return Err("a transfer on a drive number above 3".into());
        }
        Ok(fdc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemBackend;
    use crate::dev::dma::{DMA1_BASE, DMA2_BASE, PAGE_BASE};
    use crate::dev::testing::Rig;

    /// A 1.44 MB image whose sector at LBA `s` starts with `s` (u32 LE), then `s * 7 + i`.
    fn image() -> Vec<u8> {
        let mut v = vec![0u8; 1_474_560];
        for (s, sector) in v.chunks_mut(SECTOR).enumerate() {
            sector[..4].copy_from_slice(&(s as u32).to_le_bytes());
            for (i, b) in sector[4..].iter_mut().enumerate() {
                *b = (s * 7 + i) as u8;
            }
        }
        v
    }

    fn lba(c: u64, h: u64, r: u64) -> usize {
        (((c * 2 + h) * 18 + r - 1) * SECTOR as u64) as usize
    }

    /// The controller out of reset with the DMA and IRQ gate on, drive A: selected and its motor
    /// on, a 1.44 MB diskette in A:, and the reset's interrupts taken.
    fn rig() -> Rig<Fdc> {
        let mut r = Rig::new(Fdc::new(), BASE.into());
        let disk = Diskette::new(Box::new(MemBackend::new(image())), false).unwrap();
        r.dev.insert(0, Some(disk));
        r.outb(DOR as u16, 0x1C);
        for _ in 0..4 {
            command(&mut r, &[0x08]);
        }
        r
    }

    /// Write a command's bytes.
    fn send(r: &mut Rig<Fdc>, bytes: &[u8]) {
        for &b in bytes {
            assert_eq!(
                r.inb(MSR as u16) & (MSR_RQM | MSR_DIO),
                MSR_RQM,
                "ready for {b:#x}"
            );
            r.outb(FIFO as u16, b);
        }
    }

    /// A command and its result bytes.
    fn command(r: &mut Rig<Fdc>, bytes: &[u8]) -> Vec<u8> {
        send(r, bytes);
        results(r)
    }

    fn results(r: &mut Rig<Fdc>) -> Vec<u8> {
        let mut out = Vec::new();
        while r.inb(MSR as u16) & (MSR_RQM | MSR_DIO) == MSR_RQM | MSR_DIO {
            out.push(r.inb(FIFO as u16));
        }
        out
    }

    /// Channel 2 of `dma` set up as a driver does: `mode` (0x46 write to memory, 0x4A read from
    /// memory), `len` bytes at `addr` (below 16 MiB).
    fn program_dma(dma: &mut Rig<Dma>, mode: u8, addr: u32, len: u16) {
        dma.write_at(DMA2_BASE.into(), 2 * 11, 1, 0xC0); // channel 4: cascade
        dma.write_at(DMA2_BASE.into(), 2 * 10, 1, 0);
        let out = |d: &mut Rig<Dma>, reg: u32, v: u32| d.write_at(DMA1_BASE.into(), reg, 1, v);
        out(dma, 10, 0x06);
        out(dma, 12, 0);
        out(dma, 11, u32::from(mode));
        out(dma, 4, addr & 0xFF);
        out(dma, 4, (addr >> 8) & 0xFF);
        out(dma, 5, u32::from(len - 1) & 0xFF);
        out(dma, 5, u32::from(len - 1) >> 8);
        dma.write_at(PAGE_BASE.into(), 0, 1, addr >> 16);
        out(dma, 10, 0x02);
    }

    fn run_dma(r: &mut Rig<Fdc>, dma: &mut Rig<Dma>, mem: &mut Vec<u8>) {
        assert!(r.dev.dma_pending());
        let (fdc, mut ctx) = r.ctx();
        fdc.run_dma(&mut dma.dev, mem, &mut ctx);
    }

    /// Sector C/H/R of [`image`].
    fn sector(c: u64, h: u64, r: u64) -> Vec<u8> {
        image()[lba(c, h, r)..lba(c, h, r) + SECTOR].to_vec()
    }

    /// The selected drive's disk-change line (DIR bit 7).
    fn dir(r: &mut Rig<Fdc>) -> u8 {
        r.read_at(DIR_PORT.into(), 0, 1) as u8 & 0x80
    }

    /// Non-DMA: the data bytes the controller offers, until it leaves the data phase.
    fn pio_read(r: &mut Rig<Fdc>) -> Vec<u8> {
        let mut got = Vec::new();
        while r.inb(MSR as u16) & MSR_NDMA != 0 {
            assert_eq!(r.inb(MSR as u16) & MSR_DIO, MSR_DIO, "data for the host");
            got.push(r.inb(FIFO as u16));
        }
        got
    }

    /// Non-DMA: the host's data bytes, each asked for (RQM and NDMA, DIO clear).
    fn pio_write(r: &mut Rig<Fdc>, bytes: &[u8]) {
        for &b in bytes {
            assert_eq!(
                r.inb(MSR as u16) & (MSR_RQM | MSR_NDMA | MSR_DIO),
                MSR_RQM | MSR_NDMA
            );
            r.outb(FIFO as u16, b);
        }
    }

    /// A SCAN command with `host` as the host's bytes, by DMA from 0x1_0000: its results.
    fn scan(r: &mut Rig<Fdc>, dma: &mut Rig<Dma>, cmd: &[u8], host: &[u8]) -> Vec<u8> {
        let mut mem = vec![0u8; 0x2_0000];
        mem[0x1_0000..0x1_0000 + host.len()].copy_from_slice(host);
        program_dma(dma, 0x4A, 0x1_0000, host.len() as u16);
        send(r, cmd);
        run_dma(r, dma, &mut mem);
        assert!(r.irq.get(IRQ));
        let out = results(r);
        assert_eq!(
            mem[0x1_0000..0x1_0000 + host.len()],
            *host,
            "memory untouched"
        );
        out
    }

    #[test]
    fn a_reset_reports_four_polling_changes_and_the_housekeeping_commands_answer() {
        let mut r = Rig::new(Fdc::new(), BASE.into());
        assert_eq!(r.inb(MSR as u16), 0, "held in reset");
        r.outb(DOR as u16, 0x0C);
        assert!(r.irq.get(IRQ));
        for n in 0..4u8 {
            assert_eq!(command(&mut r, &[0x08]), [0xC0 | n, 0]);
            assert!(!r.irq.get(IRQ));
        }
        assert_eq!(command(&mut r, &[0x08]), [0x80], "nothing to report");
        assert_eq!(command(&mut r, &[0x10]), [0x90], "VERSION: an 82077AA");
        assert_eq!(command(&mut r, &[0x1F]), [0x80], "invalid");
        assert!(command(&mut r, &[0x03, 0xAF, 0x02]).is_empty(), "SPECIFY");
        assert!(command(&mut r, &[0x13, 0, 0x57, 3]).is_empty(), "CONFIGURE");
        assert_eq!(command(&mut r, &[0x94]), [0x10], "LOCK");
        assert_eq!(
            command(&mut r, &[0x0E]),
            [0, 0, 0, 0, 0xAF, 0x02, 0, 0x80, 0x57, 3],
            "DUMPREG"
        );
        // A locked configuration survives a software reset through the DSR.
        r.outb(MSR as u16, 0x80);
        for _ in 0..4 {
            command(&mut r, &[0x08]);
        }
        assert_eq!(command(&mut r, &[0x0E])[8..], [0x57, 3]);
    }

    #[test]
    fn seeks_interrupt_sense_reports_them_and_a_step_clears_the_change_line() {
        let mut r = rig();
        assert_eq!(dir(&mut r), 0x80, "a new diskette");
        assert!(command(&mut r, &[0x0F, 0x00, 5]).is_empty());
        assert!(r.irq.get(IRQ));
        assert_eq!(command(&mut r, &[0x08]), [0x20, 5]);
        assert!(!r.irq.get(IRQ));
        assert_eq!(dir(&mut r), 0, "stepped with a diskette in");
        assert_eq!(command(&mut r, &[0x04, 0x00])[0] & ST3_TRACK0, 0);
        command(&mut r, &[0x07, 0x00]);
        assert_eq!(command(&mut r, &[0x08]), [0x20, 0]);
        assert_eq!(
            command(&mut r, &[0x04, 0x04])[0],
            0x04 | ST3_READY | ST3_TWO_SIDE | ST3_TRACK0
        );
        assert_eq!(
            command(&mut r, &[0x0A, 0x04]),
            [0x04, 0, 0, 0, 1, 1, 2],
            "READ ID"
        );
        r.dev.insert(0, None);
        assert_eq!(dir(&mut r), 0x80, "taken out");
        assert_eq!(command(&mut r, &[0x0A, 0x00])[..2], [0x40, ST1_MA]);
        // Drive positions 2 and 3 have no drive: a recalibrate fails with an equipment check
        // and the drive reports neither ready nor track 0.
        command(&mut r, &[0x07, 0x02]);
        assert_eq!(command(&mut r, &[0x08]), [0x72, 0]);
        assert_eq!(command(&mut r, &[0x04, 0x03]), [0x03]);
        r.outb(DOR as u16, 0x1E);
        assert_eq!(dir(&mut r), 0x80);
    }

    #[test]
    fn dma_reads_follow_the_sectors_heads_and_terminal_count() {
        let mut r = rig();
        let img = image();
        let mut dma = Rig::new(Dma::new(), DMA1_BASE.into());
        let mut mem = vec![0u8; 0x4_0000];
        // Two sectors from C1 H0 R17 with MT: R17, R18, then head 1 (TC after the second).
        program_dma(&mut dma, 0x46, 0x1_0000, 2 * 512);
        command(&mut r, &[0xE6, 0x00, 1, 0, 17, 2, 18, 0x1B, 0xFF]);
        run_dma(&mut r, &mut dma, &mut mem);
        assert!(r.irq.get(IRQ));
        assert_eq!(
            results(&mut r),
            [0x00, 0, 0, 1, 1, 1, 2],
            "normal end; next: C1 H1 R1"
        );
        assert_eq!(
            mem[0x1_0000..0x1_0400],
            img[lba(1, 0, 17)..lba(1, 0, 17) + 1024]
        );
        // Without MT, a read past EOT with the DMA count left ends abnormally (end of cylinder).
        program_dma(&mut dma, 0x46, 0x2_0000, 4 * 512);
        command(&mut r, &[0x66, 0x00, 3, 0, 17, 2, 18, 0x1B, 0xFF]);
        run_dma(&mut r, &mut dma, &mut mem);
        assert_eq!(results(&mut r), [0x40, ST1_EN, 0, 4, 0, 1, 2]);
        assert_eq!(
            mem[0x2_0000..0x2_0400],
            img[lba(3, 0, 17)..lba(3, 0, 17) + 1024]
        );
        // A cylinder past the diskette's (no ID fields there), a size other than 512, and no
        // diskette.
        program_dma(&mut dma, 0x46, 0x2_0000, 512);
        command(&mut r, &[0x66, 0x00, 90, 0, 1, 2, 18, 0x1B, 0xFF]);
        run_dma(&mut r, &mut dma, &mut mem);
        assert_eq!(results(&mut r)[..2], [0x40, ST1_MA]);
        send(&mut r, &[0x66, 0x00, 0, 0, 1, 3, 18, 0x1B, 0xFF]);
        assert!(r.irq.get(IRQ), "the result phase interrupts");
        assert_eq!(results(&mut r)[..2], [0x40, ST1_ND]);
        assert!(!r.irq.get(IRQ), "reading the result clears it");
        r.dev.insert(0, None);
        assert_eq!(
            command(&mut r, &[0x66, 0x00, 0, 0, 1, 2, 18, 0x1B, 0xFF])[..2],
            [0x40, ST1_MA]
        );
    }

    #[test]
    fn writes_go_to_the_overlay_and_read_back_without_dma_and_format_fills_a_track() {
        let mut r = rig();
        let mut dma = Rig::new(Dma::new(), DMA1_BASE.into());
        let mut mem: Vec<u8> = (0..0x2_0000u32).map(|i| (i * 13) as u8).collect();
        program_dma(&mut dma, 0x4A, 0x1000, 512);
        command(&mut r, &[0x45, 0x04, 2, 1, 5, 2, 18, 0x1B, 0xFF]);
        run_dma(&mut r, &mut dma, &mut mem);
        assert_eq!(results(&mut r), [0x04, 0, 0, 2, 1, 6, 2]);
        // Non-DMA mode: the sector comes through the FIFO.
        command(&mut r, &[0x03, 0xAF, 0x03]);
        send(&mut r, &[0x46, 0x04, 2, 1, 5, 2, 5, 0x1B, 0xFF]);
        let mut got = Vec::new();
        while r.inb(MSR as u16) & MSR_NDMA != 0 {
            got.push(r.inb(FIFO as u16));
        }
        assert_eq!(got, mem[0x1000..0x1200]);
        assert_eq!(
            results(&mut r),
            [0x44, ST1_EN, 0, 3, 1, 1, 2],
            "end of track, no TC"
        );
        // The image itself is untouched.
        let disk = r.dev.diskette_mut(0).unwrap();
        assert_eq!(disk.image_mut().dirty_count(), 1);
        // FORMAT TRACK of C2 H1 without DMA: 18 sector IDs, filled with 0xF6.
        send(&mut r, &[0x4D, 0x04, 2, 18, 0x54, 0xF6]);
        for s in 1..=18u8 {
            for b in [2, 1, s, 2] {
                assert_eq!(
                    r.inb(MSR as u16) & (MSR_RQM | MSR_NDMA | MSR_DIO),
                    MSR_RQM | MSR_NDMA
                );
                r.outb(FIFO as u16, b);
            }
        }
        assert_eq!(results(&mut r)[..3], [0x04, 0, 0]);
        send(&mut r, &[0x46, 0x04, 2, 1, 5, 2, 5, 0x1B, 0xFF]);
        let mut got = Vec::new();
        while r.inb(MSR as u16) & MSR_NDMA != 0 {
            got.push(r.inb(FIFO as u16));
        }
        assert!(got.len() == 512 && got.iter().all(|&b| b == 0xF6));
        results(&mut r);
        // A write-protected diskette refuses writes.
        let wp = Diskette::new(Box::new(MemBackend::new(image())), true).unwrap();
        r.dev.insert(1, Some(wp));
        assert_eq!(
            command(&mut r, &[0x45, 0x01, 0, 0, 1, 2, 18, 0x1B, 0xFF])[..2],
            [0x41, ST1_NW]
        );
        assert_eq!(command(&mut r, &[0x04, 0x01])[0] & ST3_WP, ST3_WP);
    }

    #[test]
    fn read_track_reads_sectors_from_the_index_and_flags_ids_that_do_not_match() {
        let mut r = rig();
        let img = image();
        let mut dma = Rig::new(Dma::new(), DMA1_BASE.into());
        let mut mem = vec![0u8; 0x4_0000];
        // Three sectors from the index of C2 H0 (terminal count after the third): their IDs
        // 1, 2, 3 match the ID register counting on from R1.
        program_dma(&mut dma, 0x46, 0x1_0000, 3 * 512);
        command(&mut r, &[0x42, 0x00, 2, 0, 1, 2, 18, 0x1B, 0xFF]);
        run_dma(&mut r, &mut dma, &mut mem);
        assert!(r.irq.get(IRQ));
        assert_eq!(results(&mut r), [0x00, 0, 0, 2, 0, 4, 2]);
        assert_eq!(
            mem[0x1_0000..0x1_0600],
            img[lba(2, 0, 1)..lba(2, 0, 1) + 3 * 512]
        );
        // R5 in the command: the data still comes from the index (sectors 1 and 2: EOT counts
        // them), the IDs do not match (ND), and without a terminal count it ends with EN.
        program_dma(&mut dma, 0x46, 0x2_0000, 4 * 512);
        command(&mut r, &[0x42, 0x00, 2, 0, 5, 2, 2, 0x1B, 0xFF]);
        run_dma(&mut r, &mut dma, &mut mem);
        assert_eq!(results(&mut r), [0x40, ST1_EN | ST1_ND, 0, 2, 0, 7, 2]);
        assert_eq!(
            mem[0x2_0000..0x2_0400],
            img[lba(2, 0, 1)..lba(2, 0, 1) + 1024]
        );
        assert!(mem[0x2_0400..0x2_0800].iter().all(|&b| b == 0));
        // MT is ignored: the whole of C3 H0, and the read stays on that side.
        program_dma(&mut dma, 0x46, 0x2_0000, 19 * 512);
        command(&mut r, &[0xC2, 0x00, 3, 0, 1, 2, 18, 0x1B, 0xFF]);
        run_dma(&mut r, &mut dma, &mut mem);
        assert_eq!(results(&mut r), [0x40, ST1_EN, 0, 3, 0, 19, 2]);
        assert_eq!(mem[0x2_0000..0x2_2400], img[lba(3, 0, 1)..lba(3, 1, 1)]);
        assert!(mem[0x2_2400..0x2_2600].iter().all(|&b| b == 0));
        // Without DMA, through the FIFO: two sectors of C3 H1.
        command(&mut r, &[0x03, 0xAF, 0x03]);
        send(&mut r, &[0x42, 0x04, 3, 1, 1, 2, 2, 0x1B, 0xFF]);
        assert_eq!(pio_read(&mut r), img[lba(3, 1, 1)..lba(3, 1, 1) + 1024]);
        assert_eq!(results(&mut r), [0x44, ST1_EN, 0, 3, 1, 3, 2]);
    }

    #[test]
    fn verify_finds_sectors_without_moving_data_up_to_eot_or_for_a_count() {
        let mut r = rig();
        let mut dma = Rig::new(Dma::new(), DMA1_BASE.into());
        let mut mem = vec![0u8; 0x2_0000];
        // A DMA channel ready to take a sector, which VERIFY leaves alone.
        program_dma(&mut dma, 0x46, 0x1_0000, 512);
        // EC clear: to EOT, where VERIFY is meant to end (a normal termination), the result
        // pointing past the track as READ DATA's does. It ends at once, with its interrupt.
        send(&mut r, &[0x56, 0x00, 1, 0, 16, 2, 18, 0x1B, 0xFF]);
        assert!(!r.dev.dma_pending());
        assert!(r.irq.get(IRQ));
        assert_eq!(results(&mut r), [0x00, 0, 0, 2, 0, 1, 2]);
        // EC with MT: SC 3 from C1 H0 R17 verifies R17, R18, then H1 R1 (an implicit TC).
        assert_eq!(
            command(&mut r, &[0xD6, 0x80, 1, 0, 17, 2, 18, 0x1B, 3]),
            [0x00, 0, 0, 1, 1, 2, 2]
        );
        // EC, more sectors than the side has, no MT: end of cylinder.
        assert_eq!(
            command(&mut r, &[0x56, 0x80, 1, 0, 17, 2, 18, 0x1B, 5]),
            [0x40, ST1_EN, 0, 2, 0, 1, 2]
        );
        // SC 0 is 256 sectors: more than both sides of a cylinder hold.
        assert_eq!(
            command(&mut r, &[0xD6, 0x80, 1, 0, 1, 2, 18, 0x1B, 0]),
            [0x40, ST1_EN, 0, 2, 0, 1, 2]
        );
        // EOT past the sectors of a side: sector 19 is not found.
        assert_eq!(
            command(&mut r, &[0x56, 0x00, 1, 0, 17, 2, 20, 0x1B, 0xFF]),
            [0x40, ST1_ND, 0, 1, 0, 19, 2]
        );
        // Nothing moved: memory is untouched and the channel still holds its count.
        assert!(mem.iter().all(|&b| b == 0));
        command(&mut r, &[0x46, 0x00, 0, 0, 1, 2, 18, 0x1B, 0xFF]);
        run_dma(&mut r, &mut dma, &mut mem);
        assert_eq!(results(&mut r), [0x00, 0, 0, 0, 0, 2, 2]);
        assert_eq!(mem[0x1_0000..0x1_0200], sector(0, 0, 1));
        // Without DMA there is no data phase either: the result comes at once.
        command(&mut r, &[0x03, 0xAF, 0x03]);
        send(&mut r, &[0x56, 0x84, 0, 1, 1, 2, 18, 0x1B, 1]);
        assert_eq!(r.inb(MSR as u16), MSR_RQM | MSR_DIO | MSR_BUSY);
        assert_eq!(results(&mut r), [0x04, 0, 0, 0, 1, 2, 2]);
    }

    #[test]
    fn deleted_data_commands_meet_only_normal_data_marks() {
        let mut r = rig();
        let mut dma = Rig::new(Dma::new(), DMA1_BASE.into());
        let mut mem = vec![0u8; 0x4_0000];
        // READ DELETED DATA without SK: the first sector (a normal one) is read, CM says so,
        // and the command ends on it with R unchanged, though DMA would take two.
        program_dma(&mut dma, 0x46, 0x1_0000, 2 * 512);
        command(&mut r, &[0x4C, 0x00, 0, 0, 3, 2, 18, 0x1B, 0xFF]);
        run_dma(&mut r, &mut dma, &mut mem);
        assert_eq!(results(&mut r), [0x00, 0, ST2_CM, 0, 0, 3, 2]);
        assert_eq!(mem[0x1_0000..0x1_0200], sector(0, 0, 3));
        assert!(mem[0x1_0200..0x1_0400].iter().all(|&b| b == 0));
        // With SK every sector is skipped: no data moves and the command runs off EOT.
        program_dma(&mut dma, 0x46, 0x2_0000, 512);
        send(&mut r, &[0x6C, 0x00, 0, 0, 3, 2, 5, 0x1B, 0xFF]);
        assert!(!r.dev.dma_pending());
        assert_eq!(results(&mut r), [0x40, ST1_EN, ST2_CM, 1, 0, 1, 2]);
        // EOT past the track's sectors: ND, and CM for the sectors skipped on the way.
        assert_eq!(
            command(&mut r, &[0x6C, 0x00, 0, 0, 17, 2, 20, 0x1B, 0xFF]),
            [0x40, ST1_ND, ST2_CM, 0, 0, 19, 2]
        );
        assert!(mem[0x2_0000..0x2_0200].iter().all(|&b| b == 0));
        // WRITE DELETED DATA writes the data, which reads back as written, with a normal
        // mark (the image has no place for the deleted one).
        let data: Vec<u8> = (0..512u32).map(|i| (i * 13 + 5) as u8).collect();
        mem[0x3_0000..0x3_0200].copy_from_slice(&data);
        program_dma(&mut dma, 0x4A, 0x3_0000, 512);
        command(&mut r, &[0x49, 0x04, 5, 1, 7, 2, 18, 0x1B, 0xFF]);
        run_dma(&mut r, &mut dma, &mut mem);
        assert_eq!(results(&mut r), [0x04, 0, 0, 5, 1, 8, 2]);
        program_dma(&mut dma, 0x46, 0x1_0000, 512);
        command(&mut r, &[0x46, 0x04, 5, 1, 7, 2, 18, 0x1B, 0xFF]);
        run_dma(&mut r, &mut dma, &mut mem);
        assert_eq!(results(&mut r), [0x04, 0, 0, 5, 1, 8, 2]);
        assert_eq!(mem[0x1_0000..0x1_0200], data);
        program_dma(&mut dma, 0x46, 0x1_0000, 512);
        command(&mut r, &[0x4C, 0x04, 5, 1, 7, 2, 18, 0x1B, 0xFF]);
        run_dma(&mut r, &mut dma, &mut mem);
        assert_eq!(results(&mut r), [0x04, 0, ST2_CM, 5, 1, 7, 2]);
        // Without DMA: one sector through the FIFO, then the result.
        command(&mut r, &[0x03, 0xAF, 0x03]);
        send(&mut r, &[0x4C, 0x00, 0, 0, 9, 2, 18, 0x1B, 0xFF]);
        assert_eq!(pio_read(&mut r), sector(0, 0, 9));
        assert_eq!(results(&mut r), [0x00, 0, ST2_CM, 0, 0, 9, 2]);
    }

    #[test]
    fn scan_equal_stops_at_an_equal_sector_with_mask_bytes_and_steps_by_stp() {
        let mut r = rig();
        let mut dma = Rig::new(Dma::new(), DMA1_BASE.into());
        // A hit at R2 (of R1-R3): R1's bytes differ in one place; R2's match where the host
        // has no mask bytes (FF) and where the diskette has none (byte 252 is an FF there).
        let mut r1 = sector(0, 0, 1);
        r1[100] ^= 1;
        let mut r2 = sector(0, 0, 2);
        r2[10..20].fill(0xFF);
        assert_eq!(r2[252], 0xFF);
        r2[252] = 0;
        let host = [r1.clone(), r2, vec![0; 512]].concat();
        let cmd = [0x51, 0x00, 0, 0, 1, 2, 3, 0x1B, 1];
        assert_eq!(
            scan(&mut r, &mut dma, &cmd, &host),
            [0x00, 0, ST2_SH, 0, 0, 3, 2]
        );
        // A miss: no sector up to EOT is equal (SN), the DMA count not used up.
        let mut r3 = sector(0, 0, 3);
        r3[511] ^= 0x80;
        let mut r2 = sector(0, 0, 2);
        r2[0] = 0x7E;
        let host = [r1.clone(), r2, r3.clone(), vec![0; 512]].concat();
        assert_eq!(
            scan(&mut r, &mut dma, &cmd, &host),
            [0x00, 0, ST2_SN, 1, 0, 1, 2]
        );
        // STP 2 scans R1, R3, R5: the match is R3's, and R goes on by 2.
        let host = [r1, sector(0, 0, 3), vec![0; 512]].concat();
        let cmd = [0x51, 0x00, 0, 0, 1, 2, 5, 0x1B, 2];
        assert_eq!(
            scan(&mut r, &mut dma, &cmd, &host),
            [0x00, 0, ST2_SH, 0, 0, 5, 2]
        );
        // A step over EOT: R17 misses, R19 is not there.
        let cmd = [0x51, 0x00, 0, 0, 17, 2, 18, 0x1B, 2];
        assert_eq!(
            scan(&mut r, &mut dma, &cmd, &[0; 1024]),
            [0x40, ST1_ND, 0, 0, 0, 19, 2]
        );
    }

    #[test]
    fn scan_low_or_equal_is_met_by_a_sector_no_byte_of_which_is_higher() {
        let mut r = rig();
        let mut dma = Rig::new(Dma::new(), DMA1_BASE.into());
        let cmd = [0x59, 0x00, 1, 0, 1, 2, 3, 0x1B, 1];
        // Equal, the host's first bytes masks: a hit.
        let mut equal = sector(1, 0, 1);
        equal[..4].fill(0xFF);
        let host = [equal, vec![0; 512]].concat();
        assert_eq!(
            scan(&mut r, &mut dma, &cmd, &host),
            [0x00, 0, ST2_SH, 1, 0, 2, 2]
        );
        // Every byte FE: the diskette's are lower or equal (and its FFs masks), so the
        // condition is met without SH.
        let host = [0xFE; 1024];
        assert_eq!(
            scan(&mut r, &mut dma, &cmd, &host),
            [0x00, 0, 0, 1, 0, 2, 2]
        );
        // One byte of the host lower than the diskette's spoils a sector; zeros spoil all:
        // not satisfied by EOT (SN).
        let disk = sector(1, 0, 1);
        let mut one_low = vec![0xFE; 512];
        assert!(disk[300] > 0);
        one_low[300] = disk[300] - 1;
        let host = [one_low, vec![0; 3 * 512]].concat();
        assert_eq!(
            scan(&mut r, &mut dma, &cmd, &host),
            [0x00, 0, ST2_SN, 2, 0, 1, 2]
        );
        // The terminal count before EOT ends it too, unsatisfied.
        let cmd = [0x59, 0x00, 1, 0, 1, 2, 18, 0x1B, 1];
        assert_eq!(
            scan(&mut r, &mut dma, &cmd, &[0; 512]),
            [0x00, 0, ST2_SN, 1, 0, 2, 2]
        );
    }

    #[test]
    fn scan_high_or_equal_is_met_by_a_sector_no_byte_of_which_is_lower() {
        let mut r = rig();
        let mut dma = Rig::new(Dma::new(), DMA1_BASE.into());
        let cmd = [0xDD, 0x00, 4, 0, 18, 2, 18, 0x1B, 1];
        // Zeros: every byte of the diskette is higher or equal. MT: R goes on to head 1.
        assert_eq!(
            scan(&mut r, &mut dma, &cmd, &[0; 1024]),
            [0x00, 0, 0, 4, 1, 1, 2]
        );
        // Equal but for mask bytes: a hit.
        let mut equal = sector(4, 0, 18);
        equal[200..300].fill(0xFF);
        let host = [equal, vec![0; 512]].concat();
        assert_eq!(
            scan(&mut r, &mut dma, &cmd, &host),
            [0x00, 0, ST2_SH, 4, 1, 1, 2]
        );
        // FE: every sector has lower bytes, R17 and R18 of head 0 and then (MT) all of head
        // 1: not satisfied by the end of the cylinder (SN), a sector of the DMA count left.
        let cmd = [0xDD, 0x00, 4, 0, 17, 2, 18, 0x1B, 1];
        assert_eq!(
            scan(&mut r, &mut dma, &cmd, &[0xFE; 21 * 512]),
            [0x00, 0, ST2_SN, 5, 0, 1, 2]
        );
        // Without DMA the host writes each sector's bytes to the FIFO: a miss, then a hit.
        command(&mut r, &[0x03, 0xAF, 0x03]);
        send(&mut r, &[0x5D, 0x04, 2, 1, 1, 2, 18, 0x1B, 1]);
        pio_write(&mut r, &[0xFE; 512]);
        let mut equal = sector(2, 1, 2);
        equal[0] = 0xFF;
        pio_write(&mut r, &equal);
        assert_eq!(results(&mut r), [0x04, 0, ST2_SH, 2, 1, 3, 2]);
    }

    #[test]
    fn relative_seek_steps_in_and_out_and_ends_as_seek_does() {
        let mut r = rig();
        assert_eq!(dir(&mut r), 0x80, "a new diskette");
        // In (DIR set) by 10: no result phase, a seek-end interrupt, and the step pulses reset
        // the disk-change line.
        assert!(command(&mut r, &[0xCF, 0x00, 10]).is_empty());
        assert!(r.irq.get(IRQ));
        assert_eq!(command(&mut r, &[0x08]), [0x20, 10]);
        assert!(!r.irq.get(IRQ));
        assert_eq!(dir(&mut r), 0);
        // Out by 3, and READ ID finds the head there.
        command(&mut r, &[0x8F, 0x00, 3]);
        assert_eq!(command(&mut r, &[0x08]), [0x20, 7]);
        assert_eq!(command(&mut r, &[0x4A, 0x00]), [0x00, 0, 0, 7, 0, 1, 2]);
        // Out past track 0: the head stops there, with EC.
        command(&mut r, &[0x8F, 0x00, 20]);
        assert_eq!(command(&mut r, &[0x08]), [0x30, 0]);
        assert_eq!(
            command(&mut r, &[0x04, 0x00]),
            [ST3_READY | ST3_TWO_SIDE | ST3_TRACK0]
        );
        // In past cylinder 255: the cylinder number counts modulo 256.
        command(&mut r, &[0x0F, 0x00, 250]);
        command(&mut r, &[0x08]);
        command(&mut r, &[0xCF, 0x00, 10]);
        assert_eq!(command(&mut r, &[0x08]), [0x20, 4]);
        // By 0: no step pulse, so a new diskette's change line stays set.
        let disk = Diskette::new(Box::new(MemBackend::new(image())), false).unwrap();
        r.dev.insert(0, Some(disk));
        command(&mut r, &[0xCF, 0x00, 0]);
        assert_eq!(command(&mut r, &[0x08]), [0x20, 4]);
        assert_eq!(dir(&mut r), 0x80);
        // Drive B: moves on its own (head bit in ST0 as SEEK reports it).
        command(&mut r, &[0xCF, 0x05, 5]);
        assert_eq!(command(&mut r, &[0x08]), [0x25, 5]);
        assert_eq!(command(&mut r, &[0x0E])[..4], [4, 5, 0, 0]);
    }

    #[test]
    fn data_commands_report_the_errors_guests_handle() {
        let mut r = rig();
        let mut dma = Rig::new(Dma::new(), DMA1_BASE.into());
        let mut mem = vec![0u8; 0x2_0000];
        // No diskette in B:: no address mark, for READ, VERIFY and READ ID alike.
        assert_eq!(
            command(&mut r, &[0x46, 0x01, 0, 0, 1, 2, 18, 0x1B, 0xFF]),
            [0x41, ST1_MA, 0, 0, 0, 1, 2]
        );
        assert_eq!(
            command(&mut r, &[0x56, 0x81, 0, 0, 1, 2, 18, 0x1B, 1]),
            [0x41, ST1_MA, 0, 0, 0, 1, 2]
        );
        assert_eq!(
            command(&mut r, &[0x4A, 0x01]),
            [0x41, ST1_MA, 0, 0, 0, 1, 2]
        );
        assert!(!r.dev.dma_pending());
        // Sector not found: past the track's 18, or 0.
        for s in [19, 0] {
            program_dma(&mut dma, 0x46, 0x1_0000, 512);
            command(&mut r, &[0x46, 0x00, 0, 0, s, 2, 19, 0x1B, 0xFF]);
            run_dma(&mut r, &mut dma, &mut mem);
            assert_eq!(results(&mut r), [0x40, ST1_ND, 0, 0, 0, s, 2]);
        }
        assert!(mem.iter().all(|&b| b == 0));
        // Without DMA a missing sector ends the command before any data phase, for a write
        // as for a read.
        command(&mut r, &[0x03, 0xAF, 0x03]);
        for op in [0x46, 0x45] {
            send(&mut r, &[op, 0x00, 0, 0, 19, 2, 19, 0x1B, 0xFF]);
            assert_eq!(r.inb(MSR as u16), MSR_RQM | MSR_DIO | MSR_BUSY);
            assert_eq!(results(&mut r), [0x40, ST1_ND, 0, 0, 0, 19, 2]);
        }
        command(&mut r, &[0x03, 0xAF, 0x02]);
        // A cylinder beyond the diskette's 80: no ID fields there (MA), for READ ID after a
        // seek there too.
        program_dma(&mut dma, 0x46, 0x1_0000, 512);
        command(&mut r, &[0x46, 0x00, 80, 0, 1, 2, 18, 0x1B, 0xFF]);
        run_dma(&mut r, &mut dma, &mut mem);
        assert_eq!(results(&mut r), [0x40, ST1_MA, 0, 80, 0, 1, 2]);
        assert_eq!(dir(&mut r), 0x80, "no step yet");
        command(&mut r, &[0x0F, 0x00, 83]);
        assert_eq!(command(&mut r, &[0x08]), [0x20, 83]);
        assert_eq!(
            command(&mut r, &[0x4A, 0x00]),
            [0x40, ST1_MA, 0, 83, 0, 1, 2]
        );
        assert!(mem.iter().all(|&b| b == 0));
        // End of cylinder: a read from R18 with DMA wanting two sectors and no MT.
        program_dma(&mut dma, 0x46, 0x1_0000, 2 * 512);
        command(&mut r, &[0x46, 0x00, 0, 0, 18, 2, 18, 0x1B, 0xFF]);
        run_dma(&mut r, &mut dma, &mut mem);
        assert_eq!(results(&mut r), [0x40, ST1_EN, 0, 1, 0, 1, 2]);
        assert_eq!(mem[0x1_0000..0x1_0200], sector(0, 0, 18));
        assert!(mem[0x1_0200..0x1_0400].iter().all(|&b| b == 0));
        // Write-protected: WRITE, WRITE DELETED and FORMAT are refused before any data moves;
        // reading is fine, and SENSE DRIVE STATUS shows WP.
        let wp = Diskette::new(Box::new(MemBackend::new(image())), true).unwrap();
        r.dev.insert(1, Some(wp));
        program_dma(&mut dma, 0x4A, 0x1_0000, 512);
        for op in [0x45, 0x49] {
            assert_eq!(
                command(&mut r, &[op, 0x01, 0, 0, 1, 2, 18, 0x1B, 0xFF]),
                [0x41, ST1_NW, 0, 0, 0, 1, 2]
            );
        }
        assert_eq!(
            command(&mut r, &[0x4D, 0x01, 2, 18, 0x54, 0xF6]),
            [0x41, ST1_NW, 0, 0, 0, 0, 2]
        );
        assert!(!r.dev.dma_pending());
        assert_eq!(r.dev.diskette_mut(1).unwrap().image_mut().dirty_count(), 0);
        assert_eq!(
            command(&mut r, &[0x56, 0x81, 0, 0, 1, 2, 18, 0x1B, 1]),
            [0x01, 0, 0, 0, 0, 2, 2]
        );
        assert_eq!(
            command(&mut r, &[0x04, 0x01]),
            [0x01 | ST3_WP | ST3_READY | ST3_TRACK0 | ST3_TWO_SIDE]
        );
        assert_eq!(command(&mut r, &[0x04, 0x00]), [ST3_READY | ST3_TWO_SIDE]);
        // The disk-change line of the drive the DOR selects: A: stepped (to 83) with its
        // diskette in, so clear; set by taking the diskette out, kept by a step without one,
        // set again by putting one in, and cleared by the next step.
        assert_eq!(dir(&mut r), 0);
        r.dev.insert(0, None);
        assert_eq!(dir(&mut r), 0x80);
        command(&mut r, &[0x0F, 0x00, 5]);
        command(&mut r, &[0x08]);
        assert_eq!(dir(&mut r), 0x80);
        let disk = Diskette::new(Box::new(MemBackend::new(image())), false).unwrap();
        r.dev.insert(0, Some(disk));
        command(&mut r, &[0x0F, 0x00, 5]);
        command(&mut r, &[0x08]);
        assert_eq!(dir(&mut r), 0x80, "no step to the same cylinder");
        command(&mut r, &[0x0F, 0x00, 6]);
        command(&mut r, &[0x08]);
        assert_eq!(dir(&mut r), 0);
        // B: (selected by the DOR) has its new write-protected diskette: set until it steps.
        r.outb(DOR as u16, 0x2D);
        assert_eq!(dir(&mut r), 0x80);
        command(&mut r, &[0x0F, 0x01, 1]);
        command(&mut r, &[0x08]);
        assert_eq!(dir(&mut r), 0);
    }

    #[test]
    fn only_standard_diskette_sizes_are_accepted() {
        for (size, sectors) in [(368_640, 9), (737_280, 9), (1_228_800, 15), (2_949_120, 36)] {
            let d = Diskette::new(Box::new(MemBackend::new(vec![0; size])), false).unwrap();
            assert_eq!(d.geometry.sectors, sectors);
        }
        let e = Diskette::new(Box::new(MemBackend::new(vec![0; 1000])), false).unwrap_err();
        assert_eq!(e, BadFloppySize(1000));
        assert!(e.to_string().contains("1.44 MB"));
    }

    #[test]
    fn any_guest_input_is_harmless() {
        let mut r = rig();
        let mut dma = Rig::new(Dma::new(), DMA1_BASE.into());
        let mut mem = vec![0u8; 1 << 20];
        program_dma(&mut dma, 0x46, 0x1000, 0x8000);
        let mut x: u32 = 0xACE1_2345;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match x % 5 {
                0 => r.outb(DOR as u16, (x >> 8) as u8 | 0x04),
                1 | 2 => r.outb(FIFO as u16, (x >> 8) as u8),
                3 => {
                    r.inb(((x >> 8) % 6) as u16);
                    r.read_at(DIR_PORT.into(), 0, 1);
                }
                _ => {
                    if r.dev.dma_pending() {
                        let (fdc, mut ctx) = r.ctx();
                        fdc.run_dma(&mut dma.dev, &mut mem, &mut ctx);
                    }
                }
            }
        }
        assert!(Fdc::from_state(r.dev.state()).is_ok());
    }
}
