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
//! Commands: READ DATA, WRITE DATA, READ ID, FORMAT TRACK, RECALIBRATE, SEEK, SENSE INTERRUPT
//! STATUS, SENSE DRIVE STATUS, SPECIFY, CONFIGURE, VERSION, DUMPREG, LOCK, PERPENDICULAR MODE;
//! anything else is an invalid command (one result byte, 0x80), as the 82077AA answers it.
//! Transfers go by DMA through the 8237A's channel 2 unless SPECIFY chose non-DMA mode, where
//! the data goes through the FIFO. Execution takes no virtual time: the interrupt is raised
//! when the command's last byte (or, in non-DMA mode, its last data byte) is written. A drive's
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
/// ST1: missing address mark, not writable, no data, end of cylinder.
const ST1_MA: u8 = 0x01;
const ST1_NW: u8 = 0x02;
const ST1_ND: u8 = 0x04;
const ST1_EN: u8 = 0x80;
/// ST3: ready, track 0, two-sided, write protected.
const ST3_READY: u8 = 0x20;
const ST3_TRACK0: u8 = 0x10;
const ST3_TWO_SIDE: u8 = 0x08;
const ST3_WP: u8 = 0x40;

/// The only sector size code PC diskettes use (2: 512 bytes).
const N_512: u8 = 2;

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

/// A READ, WRITE or FORMAT in execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Transfer {
    kind: Kind,
    drive: u8,
    head: u8,
    /// Where it is: cylinder, head, sector (READ/WRITE), or sectors formatted (FORMAT).
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Kind {
    Read,
    Write,
    Format,
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
    match cmd & 0x1F {
        0x03 => 3,        // SPECIFY
        0x04 => 2,        // SENSE DRIVE STATUS
        0x05 | 0x06 => 9, // WRITE DATA, READ DATA
        0x07 => 2,        // RECALIBRATE
        0x08 => 1,        // SENSE INTERRUPT STATUS
        0x0A => 2,        // READ ID
        0x0D => 6,        // FORMAT TRACK
        0x0E => 1,        // DUMPREG
        0x0F => 3,        // SEEK
        0x10 => 1,        // VERSION
        0x12 => 2,        // PERPENDICULAR MODE
        0x13 => 4,        // CONFIGURE
        0x14 => 1,        // LOCK
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
                let dio = if transfer.kind == Kind::Read {
                    MSR_DIO
                } else {
                    0
                };
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
        let op = cmd[0] & 0x1F;
        let drive = cmd.get(1).map_or(0, |b| b & 3);
        let head = cmd.get(1).map_or(0, |b| (b >> 2) & 1);
        match op {
            0x03 => {
                self.specify = [cmd[1], cmd[2]];
                self.phase = Phase::Command;
            }
            0x04 => {
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
            0x07 | 0x0F => {
                let target = if op == 0x07 { 0 } else { cmd[2] };
                let d = &mut self.drives[usize::from(drive)];
                let st0 = if d.connected {
                    if d.cylinder != target && d.disk.is_some() {
                        d.changed = false;
                    }
                    d.cylinder = target;
                    ST0_SEEK_END
                } else {
                    // No drive: no track 0 signal ever comes (equipment check).
                    ST0_ABNORMAL | ST0_SEEK_END | ST0_EQUIPMENT
                };
                self.seek_ends.push_back(st0 | head << 2 | drive);
                self.phase = Phase::Command;
                self.interrupt = true;
            }
            0x08 => {
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
            0x0A => {
                let d = &self.drives[usize::from(drive)];
                let st0 = head << 2 | drive;
                match &d.disk {
                    Some(_) => {
                        let c = d.cylinder;
                        self.finish(&[st0, 0, 0, c, head, 1, N_512]);
                    }
                    None => {
                        self.finish(&[st0 | ST0_ABNORMAL, ST1_MA, 0, d.cylinder, head, 1, N_512])
                    }
                }
                self.interrupt = true;
            }
            0x05 | 0x06 | 0x0D => {
                // FORMAT works on the track under the head and counts the sectors it
                // formatted in `r`.
                let transfer = if op == 0x0D {
                    Transfer {
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
                    }
                } else {
                    Transfer {
                        kind: if op == 0x06 { Kind::Read } else { Kind::Write },
                        drive,
                        head,
                        c: cmd[2],
                        h: cmd[3],
                        r: cmd[4],
                        eot: cmd[6],
                        multi_track: cmd[0] & 0x80 != 0,
                        sectors: 0,
                        fill: 0,
                        buf: Vec::new(),
                    }
                };
                let n = if op == 0x0D { cmd[2] } else { cmd[5] };
                self.start(transfer, n);
            }
            0x0E => {
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
            0x10 => self.finish(&[0x90]),
            0x12 => {
                // Bit 7 (OW) says whether the drive bits are written.
                if cmd[1] & 0x80 != 0 {
                    self.perpendicular = cmd[1] & 0x3F;
                } else {
                    self.perpendicular = (self.perpendicular & 0x3C) | (cmd[1] & 0x03);
                }
                self.phase = Phase::Command;
            }
            0x13 => {
                self.config = cmd[2];
                self.pretrk = cmd[3];
                self.phase = Phase::Command;
            }
            0x14 => {
                self.lock = cmd[0] & 0x80 != 0;
                self.finish(&[u8::from(self.lock) << 4]);
            }
            _ => self.finish(&[ST0_INVALID]),
        }
    }

    /// Begin a READ, WRITE or FORMAT; `n` is the sector size code it asked for.
    fn start(&mut self, t: Transfer, n: u8) {
        let d = &self.drives[usize::from(t.drive)];
        let Some(disk) = &d.disk else {
            self.end(&t, ST0_ABNORMAL, ST1_MA, 0);
            return;
        };
        if n != N_512 {
            self.end(&t, ST0_ABNORMAL, ST1_ND, 0);
            return;
        }
        if t.kind != Kind::Read && disk.write_protected {
            self.end(&t, ST0_ABNORMAL, ST1_NW, 0);
            return;
        }
        self.phase = if self.non_dma() {
            let mut pio = Phase::Pio {
                transfer: t,
                pos: 0,
            };
            self.load_pio(&mut pio);
            pio
        } else {
            Phase::Dma(t)
        };
    }

    /// The result phase of a transfer, and its interrupt.
    fn end(&mut self, t: &Transfer, st0: u8, st1: u8, st2: u8) {
        let st0 = st0 | t.head << 2 | t.drive;
        let n = N_512;
        self.finish(&[st0, st1, st2, t.c, t.h, t.r, n]);
        self.interrupt = true;
    }

    /// The next sector after `t`'s, as the result phase reports it; false past the end.
    fn advance(t: &mut Transfer, geometry: Geometry) -> bool {
        if t.r < t.eot {
            t.r += 1;
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

    /// Non-DMA: fill `buf` for the sector about to move (a read), or make room for it.
    fn load_pio(&mut self, phase: &mut Phase) {
        let Phase::Pio { transfer, pos } = phase else {
            return;
        };
        *pos = 0;
        let len = if transfer.kind == Kind::Format {
            4
        } else {
            SECTOR
        };
        transfer.buf = vec![0; len];
        if transfer.kind == Kind::Read {
            let drive = usize::from(transfer.drive);
            let ok = match self.drives[drive].disk.as_mut() {
                Some(disk) => match disk.offset(transfer.c, transfer.h, transfer.r) {
                    Some(at) => matches!(
                        disk.image.read(at, &mut transfer.buf),
                        Ok(ReadStatus::Ready)
                    ),
                    None => false,
                },
                None => false,
            };
            if !ok {
                let t = transfer.clone();
                *phase = Phase::Command;
                self.end(&t, ST0_ABNORMAL, ST1_ND, 0);
            }
        }
    }

    /// Carry out a DMA transfer the guest started, through channel 2 of `dma` against guest
    /// memory (the board calls this right after the OUT that started it).
    pub fn run_dma(&mut self, dma: &mut Dma, mem: &mut dyn DmaMemory, ctx: &mut DevCtx) {
        let Phase::Dma(mut t) = std::mem::take(&mut self.phase) else {
            return;
        };
        let drive = usize::from(t.drive);
        let (mut st0, mut st1) = (0, 0);
        loop {
            let Some(disk) = self.drives[drive].disk.as_mut() else {
                (st0, st1) = (ST0_ABNORMAL, ST1_MA);
                break;
            };
            let geometry = disk.geometry;
            if t.kind == Kind::Format {
                if t.r >= t.sectors {
                    break;
                }
                let mut id = [0u8; 4];
                let m = dma.transfer(DMA_CHANNEL, Direction::FromMemory, &mut id, mem);
                if m.bytes < 4 {
                    break;
                }
                let [c, h, r, _] = id;
                if let Some(at) = disk.offset(c, h, r) {
                    disk.image.write(at / SECTOR as u64, &vec![t.fill; SECTOR]);
                }
                (t.c, t.h) = (c, h);
                t.r += 1;
                if m.terminal_count {
                    break;
                }
                continue;
            }
            let Some(at) = disk.offset(t.c, t.h, t.r) else {
                (st0, st1) = (ST0_ABNORMAL, ST1_ND);
                break;
            };
            let mut buf = vec![0u8; SECTOR];
            let moved = match t.kind {
                Kind::Read => {
                    if !matches!(disk.image.read(at, &mut buf), Ok(ReadStatus::Ready)) {
                        (st0, st1) = (ST0_ABNORMAL, ST1_ND);
                        break;
                    }
                    dma.transfer(DMA_CHANNEL, Direction::ToMemory, &mut buf, mem)
                }
                _ => {
                    let m = dma.transfer(DMA_CHANNEL, Direction::FromMemory, &mut buf, mem);
                    if m.bytes > 0 {
                        disk.image.write(at / SECTOR as u64, &buf);
                    }
                    m
                }
            };
            if moved.bytes < SECTOR && !moved.terminal_count {
                // The DMA controller stopped (masked, not programmed): the 82077AA would wait
                // for it; it ends as an overrun would.
                (st0, st1) = (ST0_ABNORMAL, 0x10);
                break;
            }
            let more = Self::advance(&mut t, geometry);
            if moved.terminal_count {
                break;
            }
            if !more {
                (st0, st1) = (ST0_ABNORMAL, ST1_EN);
                break;
            }
        }
        if t.kind == Kind::Format {
            t.r = t.sectors;
        }
        self.end(&t, st0, st1, 0);
        self.sync_irq(ctx);
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
            Phase::Pio { transfer, pos } if transfer.kind == Kind::Read => {
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
            Phase::Pio { transfer, pos } if transfer.kind != Kind::Read => {
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

    /// Non-DMA: the sector (or FORMAT ID) in the FIFO buffer has moved; store it and go on, or
    /// end. There is no terminal count without DMA, so a read or write runs to the end of the
    /// track and ends as the 82077AA ends it there: abnormally, with EN (end of cylinder).
    fn pio_sector_done(&mut self) {
        let Phase::Pio { mut transfer, .. } = std::mem::take(&mut self.phase) else {
            return;
        };
        let drive = usize::from(transfer.drive);
        let Some(disk) = self.drives[drive].disk.as_mut() else {
            return self.end(&transfer, ST0_ABNORMAL, ST1_MA, 0);
        };
        let geometry = disk.geometry;
        let more = match transfer.kind {
            Kind::Format => {
                let [c, h, r, _] = [
                    transfer.buf[0],
                    transfer.buf[1],
                    transfer.buf[2],
                    transfer.buf[3],
                ];
                if let Some(at) = disk.offset(c, h, r) {
                    disk.image
                        .write(at / SECTOR as u64, &vec![transfer.fill; SECTOR]);
                }
                transfer.r += 1;
                transfer.r < transfer.sectors
            }
            Kind::Write => {
                if let Some(at) = disk.offset(transfer.c, transfer.h, transfer.r) {
                    disk.image.write(at / SECTOR as u64, &transfer.buf);
                }
                Self::advance(&mut transfer, geometry)
            }
            Kind::Read => Self::advance(&mut transfer, geometry),
        };
        if more {
            let mut phase = Phase::Pio { transfer, pos: 0 };
            self.load_pio(&mut phase);
            if matches!(phase, Phase::Pio { .. }) {
                self.phase = phase;
            }
        } else if transfer.kind == Kind::Format {
            self.end(&transfer, 0, 0, 0);
        } else {
            self.end(&transfer, ST0_ABNORMAL, ST1_EN, 0);
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
        let dir = |r: &mut Rig<Fdc>| r.read_at(DIR_PORT.into(), 0, 1) as u8 & 0x80;
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
        // A sector that does not exist, a size other than 512, and no diskette.
        program_dma(&mut dma, 0x46, 0x2_0000, 512);
        command(&mut r, &[0x66, 0x00, 90, 0, 1, 2, 18, 0x1B, 0xFF]);
        run_dma(&mut r, &mut dma, &mut mem);
        assert_eq!(results(&mut r)[..2], [0x40, ST1_ND]);
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
