//! The ATAPI CD-ROM's SCSI/MMC command set: a CDB in, a [`Reply`] out. The IDE channel
//! ([`super::ide`]) moves the packet and the data (PIO or DMA); this file knows only what the
//! commands mean. 2048-byte sectors; media can be inserted and ejected by the host.

use crate::block::{BlockBackend, BlockError, Overlay, ReadStatus};
use serde::{Deserialize, Serialize};

/// CD sector size.
pub const CD_SECTOR: usize = 2048;

// Sense keys.
/// No error.
pub const SK_NO_SENSE: u8 = 0x0;
/// The drive is not ready (no medium).
pub const SK_NOT_READY: u8 = 0x2;
/// The medium could not be read.
pub const SK_MEDIUM_ERROR: u8 = 0x3;
/// The command or a field of it is invalid.
pub const SK_ILLEGAL_REQUEST: u8 = 0x5;
/// The medium changed (or the drive was reset) since the host last looked.
pub const SK_UNIT_ATTENTION: u8 = 0x6;

// Additional sense codes.
/// Invalid command operation code.
pub const ASC_INVALID_OPCODE: u8 = 0x20;
/// Logical block address out of range.
pub const ASC_LBA_OUT_OF_RANGE: u8 = 0x21;
/// Invalid field in CDB.
pub const ASC_INVALID_FIELD: u8 = 0x24;
/// Not ready to ready change, medium may have changed.
pub const ASC_MEDIUM_CHANGED: u8 = 0x28;
/// Unrecovered read error.
pub const ASC_READ_ERROR: u8 = 0x11;
/// Medium not present.
pub const ASC_MEDIUM_NOT_PRESENT: u8 = 0x3A;
/// Medium removal prevented (ASCQ 2).
pub const ASC_REMOVAL_PREVENTED: u8 = 0x53;

// Operation codes.
const TEST_UNIT_READY: u8 = 0x00;
const REQUEST_SENSE: u8 = 0x03;
const INQUIRY: u8 = 0x12;
const MODE_SENSE_6: u8 = 0x1A;
const START_STOP_UNIT: u8 = 0x1B;
const PREVENT_ALLOW: u8 = 0x1E;
const READ_CAPACITY: u8 = 0x25;
const READ_10: u8 = 0x28;
const SEEK_10: u8 = 0x2B;
const READ_TOC: u8 = 0x43;
const GET_CONFIGURATION: u8 = 0x46;
const GET_EVENT_STATUS: u8 = 0x4A;
const MODE_SENSE_10: u8 = 0x5A;
const READ_12: u8 = 0xA8;
const SET_CD_SPEED: u8 = 0xBB;
const MECHANISM_STATUS: u8 = 0xBD;

/// Mode page: CD capabilities and mechanical status.
const PAGE_CAPABILITIES: u8 = 0x2A;
/// Mode page: read/write error recovery.
const PAGE_ERROR_RECOVERY: u8 = 0x01;
/// Mode page code: all pages.
const PAGE_ALL: u8 = 0x3F;

/// Sense data: key, additional sense code and qualifier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

impl Sense {
    pub const fn new(key: u8, asc: u8, ascq: u8) -> Sense {
        Sense { key, asc, ascq }
    }
}

const NOT_PRESENT: Sense = Sense::new(SK_NOT_READY, ASC_MEDIUM_NOT_PRESENT, 0);
const BAD_FIELD: Sense = Sense::new(SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD, 0);

/// What a command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Success with these bytes for the host (possibly none).
    Data(Vec<u8>),
    /// Success: read `count` sectors from `lba` (the channel fetches them, maybe later).
    Read { lba: u64, count: u32 },
    /// CHECK CONDITION with this sense.
    Check(Sense),
}

/// Media event reported by GET EVENT STATUS NOTIFICATION.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
enum MediaEvent {
    #[default]
    None,
    NewMedia,
    Removed,
}

/// An ATAPI CD-ROM drive.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Cdrom {
    /// The disc (read-only; the overlay stays empty).
    media: Option<Overlay>,
    /// Sense of the last command (REQUEST SENSE reports it).
    sense: Sense,
    /// A media change the host has not been told about yet.
    unit_attention: bool,
    /// PREVENT MEDIUM REMOVAL is in force.
    locked: bool,
    media_event: MediaEvent,
}

fn be16(v: u16) -> [u8; 2] {
    v.to_be_bytes()
}
fn be32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

/// LBA to MSF (with the 2-second lead-in), as READ TOC reports it with MSF=1.
fn msf(lba: u32) -> [u8; 4] {
    let f = lba.saturating_add(150);
    [0, (f / 75 / 60) as u8, (f / 75 % 60) as u8, (f % 75) as u8]
}

impl Cdrom {
    /// A drive with no disc.
    pub fn empty() -> Cdrom {
        Cdrom::default()
    }

    /// A drive with `disc` inserted.
    pub fn with_disc(disc: Box<dyn BlockBackend>) -> Cdrom {
        Cdrom {
            media: Some(Overlay::new(disc)),
            ..Cdrom::default()
        }
    }

    /// Insert a disc (replacing any): the host sees UNIT ATTENTION and a new-media event.
    pub fn insert(&mut self, disc: Box<dyn BlockBackend>) {
        self.media = Some(Overlay::new(disc));
        self.unit_attention = true;
        self.media_event = MediaEvent::NewMedia;
    }

    /// Remove the disc (the host's eject button; ignores the guest's lock, as a paperclip would).
    pub fn eject(&mut self) {
        if self.media.take().is_some() {
            self.unit_attention = true;
            self.media_event = MediaEvent::Removed;
        }
    }

    /// The disc, if one is in the drive.
    pub fn media(&self) -> Option<&Overlay> {
        self.media.as_ref()
    }

    /// The disc, mutably.
    pub fn media_mut(&mut self) -> Option<&mut Overlay> {
        self.media.as_mut()
    }

    /// Whether a disc is in the drive.
    pub fn has_media(&self) -> bool {
        self.media.is_some()
    }

    /// Whether the guest locked the tray.
    pub fn locked(&self) -> bool {
        self.locked
    }

    /// Capacity in 2048-byte sectors (a partial last sector counts, zero padded).
    pub fn sectors(&self) -> u64 {
        self.media
            .as_ref()
            .map_or(0, |m| m.len().div_ceil(CD_SECTOR as u64))
    }

    /// Read `buf.len() / 2048` sectors at `lba`.
    pub fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<ReadStatus, BlockError> {
        match self.media.as_mut() {
            Some(m) => m.read(lba.saturating_mul(CD_SECTOR as u64), buf),
            None => Err(BlockError::Io("no medium".into())),
        }
    }

    /// Note the outcome of a command for REQUEST SENSE.
    pub fn set_sense(&mut self, s: Sense) {
        self.sense = s;
    }

    /// A device reset: the host must be told the medium may have changed.
    pub fn reset(&mut self) {
        self.locked = false;
    }

    /// Execute a 12-byte command.
    pub fn command(&mut self, cdb: &[u8; 12]) -> Reply {
        let op = cdb[0];
        // UNIT ATTENTION is reported once, by the first command that is not exempt.
        if self.unit_attention && !matches!(op, INQUIRY | REQUEST_SENSE | GET_EVENT_STATUS) {
            self.unit_attention = false;
            return self.check(Sense::new(SK_UNIT_ATTENTION, ASC_MEDIUM_CHANGED, 0));
        }
        let reply = match op {
            TEST_UNIT_READY => self.need_media(Vec::new()),
            REQUEST_SENSE => {
                let mut b = vec![0u8; 18];
                b[0] = 0x70;
                b[2] = self.sense.key;
                b[7] = 10;
                b[12] = self.sense.asc;
                b[13] = self.sense.ascq;
                self.sense = Sense::default();
                return Reply::Data(truncate(b, cdb[4] as usize));
            }
            INQUIRY => {
                let mut b = vec![0u8; 36];
                b[0] = 0x05; // CD/DVD device
                b[1] = 0x80; // removable
                b[2] = 0x00;
                b[3] = 0x21; // ATAPI, response format 1
                b[4] = 31; // additional length
                b[8..16].copy_from_slice(b"WASM86  ");
                b[16..32].copy_from_slice(b"CD-ROM          ");
                b[32..36].copy_from_slice(b"1.0 ");
                Reply::Data(truncate(b, u16::from_be_bytes([cdb[3], cdb[4]]) as usize))
            }
            READ_CAPACITY => {
                let n = self.sectors();
                let last = n.saturating_sub(1).min(u32::MAX as u64) as u32;
                let mut b = be32(last).to_vec();
                b.extend_from_slice(&be32(CD_SECTOR as u32));
                self.need_media(b)
            }
            READ_10 | READ_12 => {
                let lba = u32::from_be_bytes([cdb[2], cdb[3], cdb[4], cdb[5]]) as u64;
                let count = if op == READ_10 {
                    u16::from_be_bytes([cdb[7], cdb[8]]) as u32
                } else {
                    u32::from_be_bytes([cdb[6], cdb[7], cdb[8], cdb[9]])
                };
                if self.media.is_none() {
                    Reply::Check(NOT_PRESENT)
                } else if lba + count as u64 > self.sectors() {
                    Reply::Check(Sense::new(SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE, 0))
                } else if count == 0 {
                    Reply::Data(Vec::new())
                } else {
                    Reply::Read { lba, count }
                }
            }
            SEEK_10 | SET_CD_SPEED => Reply::Data(Vec::new()),
            MODE_SENSE_6 | MODE_SENSE_10 => self.mode_sense(cdb),
            READ_TOC => self.read_toc(cdb),
            GET_CONFIGURATION => {
                let profile: u16 = if self.media.is_some() { 0x0008 } else { 0 };
                let mut b = vec![0u8; 8];
                b[6..8].copy_from_slice(&be16(profile));
                // Feature 0: profile list, with the CD-ROM profile.
                b.extend_from_slice(&[0, 0, 0x03, 4]);
                b.extend_from_slice(&be16(0x0008));
                b.extend_from_slice(&[u8::from(profile != 0), 0]);
                let len = (b.len() - 4) as u32;
                b[0..4].copy_from_slice(&be32(len));
                Reply::Data(truncate(b, u16::from_be_bytes([cdb[7], cdb[8]]) as usize))
            }
            GET_EVENT_STATUS => {
                // Only polled operation is supported.
                if cdb[1] & 1 == 0 {
                    return self.check(BAD_FIELD);
                }
                let alloc = u16::from_be_bytes([cdb[7], cdb[8]]) as usize;
                let b = if cdb[4] & 0x10 != 0 {
                    let code = match std::mem::take(&mut self.media_event) {
                        MediaEvent::None => 0,
                        MediaEvent::NewMedia => 2,
                        MediaEvent::Removed => 3,
                    };
                    let status = if self.media.is_some() { 0x02 } else { 0 };
                    vec![0, 6, 0x04, 0x10, code, status, 0, 0]
                } else {
                    // No event of a requested class: NEA, the supported classes.
                    vec![0, 2, 0x80, 0x10]
                };
                Reply::Data(truncate(b, alloc))
            }
            START_STOP_UNIT => {
                let loej = cdb[4] & 2 != 0;
                let start = cdb[4] & 1 != 0;
                if loej && !start {
                    if self.locked {
                        return self.check(Sense::new(
                            SK_ILLEGAL_REQUEST,
                            ASC_REMOVAL_PREVENTED,
                            0x02,
                        ));
                    }
                    if self.media.take().is_some() {
                        self.media_event = MediaEvent::Removed;
                    }
                }
                Reply::Data(Vec::new())
            }
            PREVENT_ALLOW => {
                self.locked = cdb[4] & 1 != 0;
                Reply::Data(Vec::new())
            }
            MECHANISM_STATUS => {
                let b = vec![0, 0, 0, 0, 0, 1, 0, 0];
                Reply::Data(truncate(b, u16::from_be_bytes([cdb[8], cdb[9]]) as usize))
            }
            _ => Reply::Check(Sense::new(SK_ILLEGAL_REQUEST, ASC_INVALID_OPCODE, 0)),
        };
        match reply {
            Reply::Check(s) => self.check(s),
            r => {
                self.sense = Sense::default();
                r
            }
        }
    }

    fn check(&mut self, s: Sense) -> Reply {
        self.sense = s;
        Reply::Check(s)
    }

    fn need_media(&self, data: Vec<u8>) -> Reply {
        if self.media.is_some() {
            Reply::Data(data)
        } else {
            Reply::Check(NOT_PRESENT)
        }
    }

    fn mode_sense(&mut self, cdb: &[u8; 12]) -> Reply {
        let ten = cdb[0] == MODE_SENSE_10;
        let page = cdb[2] & 0x3F;
        let alloc = if ten {
            u16::from_be_bytes([cdb[7], cdb[8]]) as usize
        } else {
            cdb[4] as usize
        };
        let mut pages = Vec::new();
        if matches!(page, PAGE_ERROR_RECOVERY | PAGE_ALL) {
            pages.extend_from_slice(&[PAGE_ERROR_RECOVERY, 6, 0, 5, 0, 0, 0, 0]);
        }
        if matches!(page, PAGE_CAPABILITIES | PAGE_ALL) {
            let mut p = vec![0u8; 20];
            p[0] = PAGE_CAPABILITIES;
            p[1] = 18;
            p[2] = 0x03; // reads CD-R and CD-RW
            p[4] = 0x71; // multi-session, mode 2 form 1/2, audio play
            p[5] = 0xFF; // CD-DA commands, accurate stream ...
            p[6] = 0x2D | if self.locked { 0x02 } else { 0 }; // tray, eject, lock
            p[7] = 0x03; // separate volume, separate mute
            p[8..10].copy_from_slice(&be16(706)); // max speed (4x) in kB/s
            p[10..12].copy_from_slice(&be16(256)); // volume levels
            p[12..14].copy_from_slice(&be16(512)); // buffer size in kB
            p[14..16].copy_from_slice(&be16(706)); // current speed
            pages.extend_from_slice(&p);
        }
        if pages.is_empty() {
            return self.check(BAD_FIELD);
        }
        let medium = if self.media.is_some() { 0x01 } else { 0x70 };
        let mut b = if ten {
            let len = (pages.len() + 6) as u16;
            let mut h = be16(len).to_vec();
            h.extend_from_slice(&[medium, 0, 0, 0, 0, 0]);
            h
        } else {
            vec![(pages.len() + 3) as u8, medium, 0, 0]
        };
        b.extend_from_slice(&pages);
        self.sense = Sense::default();
        Reply::Data(truncate(b, alloc))
    }

    fn read_toc(&mut self, cdb: &[u8; 12]) -> Reply {
        if self.media.is_none() {
            return self.check(NOT_PRESENT);
        }
        let use_msf = cdb[1] & 2 != 0;
        let mut format = cdb[2] & 0x0F;
        if format == 0 {
            // Older hosts put the format in the top bits of the control byte.
            format = cdb[9] >> 6;
        }
        let track = cdb[6];
        let alloc = u16::from_be_bytes([cdb[7], cdb[8]]) as usize;
        let addr = |lba: u32| if use_msf { msf(lba) } else { be32(lba) };
        let leadout = self.sectors().min(u32::MAX as u64) as u32;
        let mut b = vec![0, 0, 1, 1];
        match format {
            0 => {
                if track > 1 && track != 0xAA {
                    return self.check(BAD_FIELD);
                }
                if track <= 1 {
                    b.extend_from_slice(&[0, 0x14, 1, 0]);
                    b.extend_from_slice(&addr(0));
                }
                b.extend_from_slice(&[0, 0x16, 0xAA, 0]);
                b.extend_from_slice(&addr(leadout));
            }
            1 => {
                // Multi-session information: one session, first track at 0.
                b.extend_from_slice(&[0, 0x14, 1, 0]);
                b.extend_from_slice(&addr(0));
            }
            _ => return self.check(BAD_FIELD),
        }
        let len = (b.len() - 2) as u16;
        b[0..2].copy_from_slice(&be16(len));
        self.sense = Sense::default();
        Reply::Data(truncate(b, alloc))
    }
}

fn truncate(mut b: Vec<u8>, alloc: usize) -> Vec<u8> {
    b.truncate(alloc);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemBackend;

    fn cdb(bytes: &[u8]) -> [u8; 12] {
        let mut c = [0u8; 12];
        c[..bytes.len()].copy_from_slice(bytes);
        c
    }

    #[test]
    fn empty_drive_is_not_ready() {
        let mut c = Cdrom::empty();
        assert_eq!(
            c.command(&cdb(&[TEST_UNIT_READY])),
            Reply::Check(NOT_PRESENT)
        );
        let Reply::Data(s) = c.command(&cdb(&[REQUEST_SENSE, 0, 0, 0, 18])) else {
            panic!()
        };
        assert_eq!((s[2], s[12]), (SK_NOT_READY, ASC_MEDIUM_NOT_PRESENT));
    }

    #[test]
    fn media_change_gives_unit_attention_once() {
        let mut c = Cdrom::empty();
        c.insert(Box::new(MemBackend::new(vec![0; 4096])));
        assert!(matches!(
            c.command(&cdb(&[TEST_UNIT_READY])),
            Reply::Check(Sense {
                key: SK_UNIT_ATTENTION,
                ..
            })
        ));
        assert_eq!(c.command(&cdb(&[TEST_UNIT_READY])), Reply::Data(vec![]));
        assert_eq!(
            c.command(&cdb(&[READ_CAPACITY])),
            Reply::Data(vec![0, 0, 0, 1, 0, 0, 8, 0])
        );
    }

    #[test]
    fn read_toc_lba_and_msf() {
        let mut c = Cdrom::with_disc(Box::new(MemBackend::new(vec![0; 2048 * 100])));
        let Reply::Data(t) = c.command(&cdb(&[READ_TOC, 0, 0, 0, 0, 0, 0, 0, 0xFF])) else {
            panic!()
        };
        assert_eq!(t.len(), 20);
        assert_eq!(&t[16..20], &[0, 0, 0, 100]);
        let Reply::Data(t) = c.command(&cdb(&[READ_TOC, 2, 0, 0, 0, 0, 0, 0, 0xFF])) else {
            panic!()
        };
        assert_eq!(&t[8..12], &[0, 0, 2, 0]);
        let Reply::Data(t) = c.command(&cdb(&[READ_TOC, 0, 1, 0, 0, 0, 0, 0, 0xFF])) else {
            panic!()
        };
        assert_eq!(t.len(), 12);
    }

    #[test]
    fn request_sense_reports_a_read_error_once() {
        let mut c = Cdrom::with_disc(Box::new(MemBackend::new(vec![0; 2048])));
        // The channel records the medium error of a read the backend failed.
        c.set_sense(Sense::new(SK_MEDIUM_ERROR, ASC_READ_ERROR, 0));
        let Reply::Data(s) = c.command(&cdb(&[REQUEST_SENSE, 0, 0, 0, 18])) else {
            panic!()
        };
        assert_eq!((s[0], s[2], s[7], s[12], s[13]), (0x70, 3, 10, 0x11, 0));
        let Reply::Data(s) = c.command(&cdb(&[REQUEST_SENSE, 0, 0, 0, 18])) else {
            panic!()
        };
        assert_eq!((s[2], s[12]), (SK_NO_SENSE, 0));
    }

    #[test]
    fn locked_tray_refuses_eject() {
        let mut c = Cdrom::with_disc(Box::new(MemBackend::new(vec![0; 2048])));
        c.command(&cdb(&[PREVENT_ALLOW, 0, 0, 0, 1]));
        assert!(matches!(
            c.command(&cdb(&[START_STOP_UNIT, 0, 0, 0, 2])),
            Reply::Check(_)
        ));
        c.command(&cdb(&[PREVENT_ALLOW, 0, 0, 0, 0]));
        assert_eq!(
            c.command(&cdb(&[START_STOP_UNIT, 0, 0, 0, 2])),
            Reply::Data(vec![])
        );
        assert!(!c.has_media());
    }
}
