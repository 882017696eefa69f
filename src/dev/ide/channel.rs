//! One IDE channel: its two drive slots with their task files, the shared device and control
//! registers, PIO transfers, and the ATA and ATAPI commands.

use super::*;
use busmaster::BusMaster;

/// One drive's copy of the task file registers (current and previous, for LBA48).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(super) struct TaskFile {
    pub(super) feature: u8,
    pub(super) nsect: u8,
    pub(super) lbal: u8,
    pub(super) lbam: u8,
    pub(super) lbah: u8,
    pub(super) hob_feature: u8,
    pub(super) hob_nsect: u8,
    pub(super) hob_lbal: u8,
    pub(super) hob_lbam: u8,
    pub(super) hob_lbah: u8,
}

impl TaskFile {
    pub(super) fn lba28(&self, device: u8) -> u64 {
        u64::from(device & 0x0F) << 24
            | u64::from(self.lbah) << 16
            | u64::from(self.lbam) << 8
            | u64::from(self.lbal)
    }
    pub(super) fn lba48(&self) -> u64 {
        u64::from(self.hob_lbah) << 40
            | u64::from(self.hob_lbam) << 32
            | u64::from(self.hob_lbal) << 24
            | u64::from(self.lbah) << 16
            | u64::from(self.lbam) << 8
            | u64::from(self.lbal)
    }
    pub(super) fn set_signature(&mut self, atapi: bool) {
        self.nsect = 1;
        self.lbal = 1;
        (self.lbam, self.lbah) = if atapi { (0x14, 0xEB) } else { (0, 0) };
    }
}

/// The largest transfer one command makes: 65536 sectors (an LBA48 count of 0).
const MAX_TRANSFER: usize = 65536 * SECTOR;

/// A drive position with its registers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Slot {
    pub(super) drive: Option<Drive>,
    pub(super) tf: TaskFile,
    pub(super) status: u8,
    pub(super) error: u8,
    /// Transfer mode an ATAPI drive was set to (SET FEATURES 03h value; 0 = PIO default).
    /// ATA disks keep theirs in [`AtaDisk`].
    #[serde(default)]
    pub(super) atapi_xfer_mode: u8,
}

/// What happens when data has been loaded into the buffer.
#[allow(clippy::enum_variant_names)] // all three are data-in phases
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Then {
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
pub(super) struct Load {
    /// Which drive (0/1) of the channel.
    pub(super) drive: usize,
    /// ATA sector or CD sector (by `cd`).
    pub(super) lba: u64,
    pub(super) bytes: usize,
    pub(super) cd: bool,
    pub(super) then: Then,
}

/// The data phase the channel is in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Xfer {
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

/// One IDE channel.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Channel {
    pub(super) irq: u8,
    pub(super) slots: [Slot; 2],
    /// Device/head register (shared).
    pub(super) device: u8,
    /// Device control register.
    pub(super) control: u8,
    /// INTRQ before masking.
    pub(super) intrq: bool,
    /// Which drive the current transfer belongs to.
    pub(super) active: usize,
    pub(super) xfer: Xfer,
    pub(super) buf: Vec<u8>,
    pub(super) pos: usize,
    pub(super) end: usize,
    pub(super) pending: Option<Load>,
    pub(super) bm: BusMaster,
    /// DMA transfers completed (for statistics and tests).
    pub(super) dma_count: u64,
    /// Disk and CD read commands whose data went by PIO (for statistics and tests).
    #[serde(default)]
    pub(super) pio_read_count: u64,
}

impl Channel {
    pub(super) fn new(irq: u8) -> Channel {
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

    /// Whether the channel is in a state a guest could have brought it to: its positions lie
    /// in its buffer, the drive numbers are 0 or 1, a pending read is not larger than any
    /// command transfers, and the drives' changed sectors are whole sectors.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.active > 1 || self.pending.is_some_and(|l| l.drive > 1) {
            return Err("a drive number other than 0 or 1".into());
        }
        if self.pos > self.end || self.end > self.buf.len() {
            return Err(format!(
                "transfer position {} and end {} beyond its {}-byte buffer",
                self.pos,
                self.end,
                self.buf.len()
            ));
        }
        if self.xfer == Xfer::Packet && self.buf.len() < 12 {
            return Err("a command packet buffer shorter than 12 bytes".into());
        }
        if self.pending.is_some_and(|l| l.bytes > MAX_TRANSFER) {
            return Err("a pending read larger than any command transfers".into());
        }
        for slot in &self.slots {
            if let Some(image) = slot.drive.as_ref().and_then(Drive::image) {
                image.check()?;
            }
        }
        Ok(())
    }

    pub(super) fn sel(&self) -> usize {
        usize::from(self.device & DEV_DRV != 0)
    }

    pub(super) fn present(&self) -> bool {
        self.slots.iter().any(|s| s.drive.is_some())
    }

    /// Power-on / soft reset of the drives: signatures, diagnostic code, idle.
    pub(super) fn reset_drives(&mut self) {
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

    pub(super) fn update_irq(&self, ctx: &mut DevCtx) {
        ctx.irq
            .set(self.irq, self.intrq && self.control & CTL_NIEN == 0);
    }

    pub(super) fn raise(&mut self, ctx: &mut DevCtx) {
        self.intrq = true;
        self.bm.status |= BM_ST_INTR;
        self.update_irq(ctx);
    }

    /// Command finished without data for drive `d`.
    pub(super) fn done(&mut self, d: usize, ctx: &mut DevCtx) {
        self.xfer = Xfer::Idle;
        let s = &mut self.slots[d];
        s.status = ST_DRDY | ST_DSC;
        s.error = 0;
        self.raise(ctx);
    }

    /// Command failed with `err` for drive `d`.
    pub(super) fn fail(&mut self, d: usize, err: u8, ctx: &mut DevCtx) {
        self.xfer = Xfer::Idle;
        self.pending = None;
        let s = &mut self.slots[d];
        s.status = ST_DRDY | ST_ERR;
        s.error = err;
        self.raise(ctx);
    }

    /// ATAPI command finished: status phase (interrupt reason I/O + C/D).
    pub(super) fn packet_done(&mut self, d: usize, sense: Option<Sense>, ctx: &mut DevCtx) {
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

    pub(super) fn read_reg(&mut self, reg: u16, size: u8, ctx: &mut DevCtx) -> u32 {
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

    pub(super) fn alt_status(&self) -> u8 {
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

    pub(super) fn write_reg(&mut self, reg: u16, size: u8, v: u32, ctx: &mut DevCtx) {
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

    pub(super) fn write_control(&mut self, v: u8, ctx: &mut DevCtx) {
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

    pub(super) fn data_read(&mut self, size: u8, ctx: &mut DevCtx) -> u32 {
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

    pub(super) fn data_write(&mut self, size: u8, v: u32, ctx: &mut DevCtx) {
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
    pub(super) fn block_read_done(&mut self, ctx: &mut DevCtx) {
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

    /// A PIO write of `count` sectors to `lba` waits for its next DRQ block from the host
    /// (at most `per_block` sectors).
    fn expect_pio_block(&mut self, d: usize, lba: u64, count: u64, per_block: u64) {
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

    /// The host has written the whole DRQ block.
    pub(super) fn block_written(&mut self, ctx: &mut DevCtx) {
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
                    self.expect_pio_block(d, lba + written, left, per_block);
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
    pub(super) fn load(&mut self, load: Load, ctx: &mut DevCtx) {
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
    pub(super) fn report_lba(&mut self, d: usize, lba: u64) {
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

    pub(super) fn loaded(&mut self, load: Load, ctx: &mut DevCtx) {
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
    pub(super) fn wake(&mut self, ctx: &mut DevCtx) {
        if let Some(load) = self.pending.take() {
            self.load(load, ctx);
        }
    }

    // ---- ATA commands -----------------------------------------------------------------------

    pub(super) fn command(&mut self, cmd: u8, ctx: &mut DevCtx) {
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
    pub(super) fn pio_in_buffer(&mut self, d: usize, data: Vec<u8>, ctx: &mut DevCtx) {
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
    pub(super) fn rw_command(&mut self, d: usize, cmd: u8, ctx: &mut DevCtx) {
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
            Kind::PioWrite => self.expect_pio_block(d, lba, count, per_block),
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

    pub(super) fn packet(&mut self, d: usize, cdb: &[u8; 12], ctx: &mut DevCtx) {
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
    pub(super) fn packet_chunk(&mut self, limit: u16, ctx: &mut DevCtx) {
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
}
