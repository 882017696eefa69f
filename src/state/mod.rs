//! The saved-state file: a whole machine (CPU, devices, RAM, video memory, the guest's disk
//! writes) in one versioned binary file, and the checks that make a bad file an error rather
//! than a wrong machine.
//!
//! # Layout (format version [`VERSION`], all integers little-endian)
//!
//! ```text
//! "WASM86ST"                    magic (8 bytes)
//! u32 version
//! sections, each:  [u8; 4] tag, u32 length, payload
//!   "MACH"  deflate(postcard(MachineState)): configuration, CPU, board and device registers,
//!           each drive's copy-on-write overlay
//!   "RAM "  guest RAM as pages (see below)
//!   "VRAM"  the display's video memory as pages
//!   "DISK"  postcard(Vec<DiskIdentity>): the source image of every drive with media
//!   "END "  u32 CRC-32 of every byte before this section
//! ```
//!
//! Pages: u32 page count, a bitmap with one bit per 4 KiB page (set: the page is not all
//! zeros), then deflate of the set pages in order. A booted Linux leaves most of its RAM zero,
//! so a state is a few MB, not the RAM size.
//!
//! Source images are never in the file: a drive's image is named by its [`DiskIdentity`] (its
//! size, a CRC of its first and last 64 KiB, and the name the host gave it), and the host
//! passes the images again on restore, where they are checked.
//!
//! Reading never trusts the file: every length is checked against what is left, the checksum
//! is checked before anything is decoded, and a decoded state that is impossible (a size that
//! does not match the configuration) is refused with a [`StateError`].

pub mod replay;

use crate::block::BlockBackend;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"WASM86ST";
/// The format this build writes and reads (2: the VGA's renderer flags are no longer saved;
/// 3: the DMA controllers and fw_cfg; 4: firmware, the BIOS area's shadow RAM).
pub const VERSION: u32 = 4;

/// Section tags.
const MACH: [u8; 4] = *b"MACH";
const RAM: [u8; 4] = *b"RAM ";
const VRAM: [u8; 4] = *b"VRAM";
const DISK: [u8; 4] = *b"DISK";
const END: [u8; 4] = *b"END ";

const PAGE: usize = 4096;
/// How much of each end of an image its identity covers.
const IDENTITY_EDGE: u64 = 64 << 10;

/// Why a state could not be restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("not a wasm86 state file (it does not start with \"WASM86ST\")")]
    NotAState,
    #[error("not a wasm86 recording (it does not start with \"WASM86RP\")")]
    NotARecording,
    #[error("the state file is truncated ({0})")]
    Truncated(&'static str),
    #[error(
        "the state file is format version {found}, newer than this build's {supported}: \
         restore it with a newer wasm86"
    )]
    NewerVersion { found: u32, supported: u32 },
    #[error("the state file is format version {0}, which this build cannot read")]
    UnknownVersion(u32),
    #[error(
        "the recording was made in real time by an older wasm86, whose clock adapted its rate \
         differently: this build cannot replay it exactly (replay it with the wasm86 that made it)"
    )]
    OlderRealtimeRecording,
    #[error("the state file is corrupt: its checksum does not match its contents")]
    Checksum,
    #[error("the state file is corrupt: {0}")]
    Corrupt(String),
    #[error("the state needs the disk image {0} (pass it again, as when the state was saved)")]
    DiskMissing(DiskIdentity),
    #[error("the disk image given for {expected} does not match it: {found}")]
    DiskMismatch {
        expected: DiskIdentity,
        found: String,
    },
    #[error("a disk image was given for slot {0}, where the saved machine has no drive")]
    DiskUnexpected(usize),
}

/// Which image a drive had: enough to tell the same image from another one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskIdentity {
    /// The drive's slot (0 primary master, 1 primary slave, 2 secondary master, 3 secondary
    /// slave).
    pub slot: usize,
    /// Size in bytes.
    pub size: u64,
    /// CRC-32 of the first and last 64 KiB (`None` when they were not at hand when the state
    /// was saved: a streamed image whose ends had not been fetched).
    pub edges_crc: Option<u32>,
    /// The name or URL the host gave the image.
    pub name: String,
}

impl std::fmt::Display for DiskIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = if self.name.is_empty() {
            "(unnamed)"
        } else {
            &self.name
        };
        let drive = match self.slot {
            0 => "hda",
            1 => "hdb",
            2 => "cdrom",
            3 => "the secondary IDE slave",
            4 => "fda",
            5 => "fdb",
            _ => "an unknown drive",
        };
        write!(
            f,
            "slot {} ({drive}): {name}, {} bytes",
            self.slot, self.size
        )?;
        if let Some(c) = self.edges_crc {
            write!(f, ", edges CRC {c:08x}")?;
        }
        Ok(())
    }
}

impl DiskIdentity {
    /// The identity of `image` at `slot`, named `name`.
    pub fn of(slot: usize, name: &str, image: &mut dyn BlockBackend) -> DiskIdentity {
        DiskIdentity {
            slot,
            size: image.len(),
            edges_crc: edges_crc(image),
            name: name.to_string(),
        }
    }

    /// Whether `image` is this identity's image; the reason if not.
    pub fn check(&self, image: &mut dyn BlockBackend) -> Result<(), String> {
        if image.len() != self.size {
            return Err(format!("it is {} bytes, not {}", image.len(), self.size));
        }
        match (self.edges_crc, edges_crc(image)) {
            (Some(want), Some(got)) if want != got => Err(format!(
                "its first and last 64 KiB differ (CRC {got:08x}, not {want:08x})"
            )),
            _ => Ok(()),
        }
    }
}

/// CRC-32 of the first and last [`IDENTITY_EDGE`] bytes of `image`, if it has them at hand.
fn edges_crc(image: &mut dyn BlockBackend) -> Option<u32> {
    let len = image.len();
    let edge = IDENTITY_EDGE.min(len);
    let mut crc = flate2::Crc::new();
    let mut buf = vec![0; edge as usize];
    for offset in [0, len - edge] {
        match image.read(offset, &mut buf) {
            Ok(crate::block::ReadStatus::Ready) => crc.update(&buf),
            _ => return None,
        }
    }
    Some(crc.sum())
}

/// The parts of a state file, in the order they are written.
pub struct StateFile<'a> {
    /// postcard of the machine's state (the caller's type).
    pub machine: Vec<u8>,
    pub ram: &'a [u8],
    pub vram: &'a [u8],
    pub disks: Vec<DiskIdentity>,
}

/// What [`read`] found in a file: the machine's part still encoded (postcard), memory still in
/// pages (see [`decode_memory`]).
pub struct ParsedState<'a> {
    pub machine: Vec<u8>,
    pub ram_pages: &'a [u8],
    pub vram_pages: &'a [u8],
    pub disks: Vec<DiskIdentity>,
}

/// Write `state` in the file format.
pub fn write(state: &StateFile) -> Vec<u8> {
    let mut out = Vec::with_capacity(state.machine.len() + (1 << 20));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    section(&mut out, MACH, &deflate(&state.machine));
    section(&mut out, RAM, &encode_pages(state.ram));
    section(&mut out, VRAM, &encode_pages(state.vram));
    let disks = postcard::to_stdvec(&state.disks).unwrap_or_default();
    section(&mut out, DISK, &disks);
    let crc = crc32(&out);
    section(&mut out, END, &crc.to_le_bytes());
    out
}

/// Read a file written by [`write`], checking its header, its sections' lengths and its
/// checksum.
pub fn read(file: &[u8]) -> Result<ParsedState<'_>, StateError> {
    check_header(file, MAGIC, VERSION..=VERSION, StateError::NotAState)?;
    let mut r = Reader {
        data: file,
        at: MAGIC.len() + 4,
    };
    let mut sections: Vec<([u8; 4], &[u8])> = Vec::new();
    loop {
        let start = r.at;
        let tag = r.take(4, "before its end marker")?;
        let tag = [tag[0], tag[1], tag[2], tag[3]];
        let len = r.u32("in a section header")? as usize;
        let body = r.take(len, "inside a section")?;
        if tag == END {
            let Ok(want) = <[u8; 4]>::try_from(body) else {
                return Err(StateError::Corrupt("the end marker is malformed".into()));
            };
            if crc32(&file[..start]) != u32::from_le_bytes(want) {
                return Err(StateError::Checksum);
            }
            if r.at != file.len() {
                return Err(StateError::Corrupt(format!(
                    "{} bytes after the end marker",
                    file.len() - r.at
                )));
            }
            break;
        }
        sections.push((tag, body));
    }
    let get = |tag: [u8; 4]| {
        sections
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, b)| *b)
            .ok_or_else(|| {
                StateError::Corrupt(format!(
                    "the {} section is missing",
                    String::from_utf8_lossy(&tag).trim_end()
                ))
            })
    };
    let machine = inflate(get(MACH)?, 64 << 20)
        .map_err(|e| StateError::Corrupt(format!("the machine section: {e}")))?;
    let disks = postcard::from_bytes(get(DISK)?)
        .map_err(|e| StateError::Corrupt(format!("the disk list: {e}")))?;
    Ok(ParsedState {
        machine,
        ram_pages: get(RAM)?,
        vram_pages: get(VRAM)?,
        disks,
    })
}

/// Memory of `len` bytes from its pages in a file (`what` names it in errors).
pub fn decode_memory(what: &str, pages: &[u8], len: usize) -> Result<Vec<u8>, StateError> {
    let mut out = vec![0; len];
    decode_memory_into(what, pages, &mut out)?;
    Ok(out)
}

/// [`decode_memory`] into `out` (all of it is written: pages left out are zeroed).
pub fn decode_memory_into(what: &str, pages: &[u8], out: &mut [u8]) -> Result<(), StateError> {
    decode_pages(pages, out).map_err(|e| StateError::Corrupt(format!("{what}: {e}")))
}

fn section(out: &mut Vec<u8>, tag: [u8; 4], body: &[u8]) {
    out.extend_from_slice(&tag);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
}

/// Check that `file` starts with `magic` and then a version (a u32) in `versions`, and return
/// it: a prefix of the magic is a truncated file, other bytes `foreign`, another version says
/// which.
fn check_header(
    file: &[u8],
    magic: &[u8; 8],
    versions: std::ops::RangeInclusive<u32>,
    foreign: StateError,
) -> Result<u32, StateError> {
    if file.len() < magic.len() || &file[..magic.len()] != magic {
        return Err(if magic.starts_with(file) {
            StateError::Truncated("in the header")
        } else {
            foreign
        });
    }
    let found = file
        .get(magic.len()..magic.len() + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(StateError::Truncated("in the header"))?;
    if found > *versions.end() {
        return Err(StateError::NewerVersion {
            found,
            supported: *versions.end(),
        });
    }
    if !versions.contains(&found) {
        return Err(StateError::UnknownVersion(found));
    }
    Ok(found)
}

/// CRC-32 of `bytes` (the files' checksums, and the fingerprint of a recorded run's output).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

/// Inflate `bytes`, refusing output larger than `limit` (a corrupt stream must not make the
/// host allocate without bound).
fn inflate(bytes: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    DeflateDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() > limit {
        return Err(format!("it inflates to more than {limit} bytes"));
    }
    Ok(out)
}

/// Pages of `bytes` (a whole number of pages), zero pages left out (see the module comment).
fn encode_pages(bytes: &[u8]) -> Vec<u8> {
    let pages = bytes.len().div_ceil(PAGE);
    let mut bitmap = vec![0u8; pages.div_ceil(8)];
    let mut e = DeflateEncoder::new(Vec::new(), Compression::fast());
    for (i, page) in bytes.chunks(PAGE).enumerate() {
        if page.iter().any(|&b| b != 0) {
            bitmap[i / 8] |= 1 << (i % 8);
            let _ = e.write_all(page);
        }
    }
    let mut out = (pages as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&bitmap);
    out.extend_from_slice(&e.finish().unwrap_or_default());
    out
}

/// The inverse of [`encode_pages`], into `out`.
fn decode_pages(body: &[u8], out: &mut [u8]) -> Result<(), String> {
    let pages = out.len().div_ceil(PAGE);
    let mut r = Reader { data: body, at: 0 };
    let count = r.u32("").map_err(|_| "no page count".to_string())? as usize;
    if count != pages {
        return Err(format!("{count} pages where the machine has {pages}"));
    }
    let bitmap = r
        .take(pages.div_ceil(8), "")
        .map_err(|_| "the page map is cut short".to_string())?;
    let present = (0..pages)
        .filter(|i| bitmap[i / 8] & (1 << (i % 8)) != 0)
        .count();
    let data = inflate(&body[r.at..], present * PAGE)?;
    if data.len() != present * PAGE {
        return Err(format!(
            "{} bytes of pages where the page map says {}",
            data.len(),
            present * PAGE
        ));
    }
    let mut src = data.chunks(PAGE);
    for (i, page) in out.chunks_mut(PAGE).enumerate() {
        let present = bitmap[i / 8] & (1 << (i % 8)) != 0;
        match if present { src.next() } else { None } {
            Some(p) => page.copy_from_slice(&p[..page.len()]),
            None => page.fill(0),
        }
    }
    Ok(())
}

/// Reads a file front to back, checking every length against what is left.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], StateError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(StateError::Truncated(what))?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, StateError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemBackend;

    fn sample() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut ram = vec![0u8; 64 * PAGE];
        ram[5 * PAGE + 7] = 0xAB;
        ram[63 * PAGE..].fill(0x5A);
        let mut vram = vec![0u8; 16 * PAGE];
        vram[3] = 1;
        (b"the machine".to_vec(), ram, vram)
    }

    fn file() -> Vec<u8> {
        let (machine, ram, vram) = sample();
        write(&StateFile {
            machine,
            ram: &ram,
            vram: &vram,
            disks: vec![DiskIdentity {
                slot: 0,
                size: 1 << 20,
                edges_crc: Some(7),
                name: "disk.img".into(),
            }],
        })
    }

    /// The machine part, RAM, video memory and disks of a file.
    type Parts = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<DiskIdentity>);

    /// Read `f` whole: memory decoded for a machine of 64 pages with 16 of video memory.
    fn parse(f: &[u8]) -> Result<Parts, StateError> {
        let p = read(f)?;
        let ram = decode_memory("RAM", p.ram_pages, 64 * PAGE)?;
        let vram = decode_memory("video memory", p.vram_pages, 16 * PAGE)?;
        Ok((p.machine, ram, vram, p.disks))
    }

    #[test]
    fn a_state_reads_back_as_written_and_zero_pages_cost_nothing() {
        let f = file();
        let (m, r, v, disks) = parse(&f).unwrap();
        assert_eq!((m, r, v), sample());
        assert_eq!(disks[0].name, "disk.img");
        assert!(f.len() < 2000, "{} bytes for two non-zero pages", f.len());
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_an_error() {
        let f = file();
        for n in 0..f.len() {
            assert!(parse(&f[..n]).is_err(), "cut at {n}");
        }
        assert_eq!(
            parse(&f[..4]).err(),
            Some(StateError::Truncated("in the header"))
        );
        // Two bytes into the first section's body.
        let n = MAGIC.len() + 4 + 8 + 2;
        assert_eq!(
            parse(&f[..n]).err(),
            Some(StateError::Truncated("inside a section"))
        );
        for byte in 0..f.len() {
            for bit in [0, 3, 7] {
                let mut g = f.clone();
                g[byte] ^= 1 << bit;
                assert!(parse(&g).is_err(), "bit {bit} of byte {byte}");
            }
        }
        let mut g = f.clone();
        g[MAGIC.len() + 20] ^= 0x10;
        assert_eq!(parse(&g).err(), Some(StateError::Checksum));
    }

    #[test]
    fn foreign_and_newer_files_say_so() {
        assert_eq!(
            parse(b"\x7fELF\x01\x01\x01\0rest").err(),
            Some(StateError::NotAState)
        );
        assert_eq!(
            parse(b"").err(),
            Some(StateError::Truncated("in the header"))
        );
        let mut f = file();
        f[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
        assert_eq!(
            parse(&f).err(),
            Some(StateError::NewerVersion {
                found: VERSION + 1,
                supported: VERSION
            })
        );
        f[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(parse(&f).err(), Some(StateError::UnknownVersion(0)));
    }

    #[test]
    fn pages_that_do_not_fit_the_machine_are_refused() {
        let f = file();
        let p = read(&f).unwrap();
        let e = decode_memory("RAM", p.ram_pages, 32 * PAGE).unwrap_err();
        assert!(
            matches!(e, StateError::Corrupt(ref m) if m.contains("64 pages")),
            "{e}"
        );
    }

    #[test]
    fn a_disk_is_known_by_its_size_and_its_ends() {
        let mut image = MemBackend::new((0..300_000u32).map(|i| (i % 251) as u8).collect());
        let id = DiskIdentity::of(2, "cd.iso", &mut image);
        assert_eq!((id.slot, id.size), (2, 300_000));
        assert!(id.check(&mut image).is_ok());
        let mut other = MemBackend::new(vec![0; 300_000]);
        assert!(id.check(&mut other).unwrap_err().contains("differ"));
        let mut shorter = MemBackend::new(vec![0; 1000]);
        assert!(id.check(&mut shorter).unwrap_err().contains("1000 bytes"));
        // A small image is covered whole.
        let mut tiny = MemBackend::new(vec![9; 100]);
        assert!(DiskIdentity::of(0, "", &mut tiny).edges_crc.is_some());
    }
}
