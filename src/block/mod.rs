//! Block backends: where a drive's bytes come from.
//!
//! A drive reads through a [`BlockBackend`]. A read either completes at once
//! ([`ReadStatus::Ready`]) or starts a fetch and answers [`ReadStatus::Pending`]: the drive then
//! stays busy (BSY), virtual time keeps running, and when the host has the bytes (an HTTP Range
//! response arrived, say) it calls [`crate::machine::Machine::storage_wake`]; the drive asks again,
//! gets `Ready`, and raises its interrupt. A backend that cannot deliver (after its own bounded
//! retries) answers `Err`, which the drive reports to the guest as a medium error.
//!
//! Guest writes never reach a backend: they go to an [`Overlay`] of changed sectors on top of it,
//! so a source image is never modified. A host that wants the changes (the CLI's
//! `--write-back`) reads them from [`Overlay::dirty`] and writes them itself.
//!
//! The core has the in-memory backend ([`MemBackend`]) and the streamed one ([`Stream`]), which
//! decides what to fetch while a host does the fetching (HTTP `Range` requests from the browser
//! or the CLI). The file backend lives in the native CLI (the core never touches `std::fs`).

pub mod ranged;
mod stream;

pub use stream::{FetchRequest, Stream, StreamConfig, StreamStats, DEFAULT_MAX_CACHED_BYTES};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The outcome of a read that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadStatus {
    /// The buffer holds the data.
    Ready,
    /// The data is being fetched; ask again after the host's wake-up call.
    Pending,
}

/// A read that cannot be satisfied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum BlockError {
    /// The range lies (partly) beyond the end of the image.
    #[error("read of {len} bytes at {offset} beyond the end of the image")]
    OutOfRange { offset: u64, len: usize },
    /// The host could not read the bytes (I/O error, network failure after retries).
    #[error("{0}")]
    Io(String),
}

/// A source of image bytes (read-only).
pub trait BlockBackend {
    /// The image size in bytes.
    fn len(&self) -> u64;
    /// Whether the image is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fill `buf` from byte `offset`, or start fetching it (see the module comment).
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, BlockError>;
}

/// An image held in memory.
#[derive(Clone, Debug, Default)]
pub struct MemBackend {
    data: Vec<u8>,
}

impl MemBackend {
    pub fn new(data: Vec<u8>) -> Self {
        MemBackend { data }
    }
}

impl BlockBackend for MemBackend {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, BlockError> {
        let oob = BlockError::OutOfRange {
            offset,
            len: buf.len(),
        };
        let start = usize::try_from(offset).map_err(|_| oob.clone())?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.data.get(start..end))
            .ok_or(oob)?;
        buf.copy_from_slice(src);
        Ok(ReadStatus::Ready)
    }
}

/// Sees every answer an overlay's source image gives, and may change it: a recorded run logs
/// the answers that depend on the host (a streamed read still pending, a fetch that failed),
/// and its replay gives them again at the same reads (see [`crate::state::replay`]).
pub trait ReadTap {
    /// The image answered `answer` to the overlay's next read; the drive gets what this returns.
    fn answer(&mut self, answer: Result<ReadStatus, BlockError>) -> Result<ReadStatus, BlockError>;
}

/// Size of an overlay sector (the ATA logical sector).
pub const SECTOR: usize = 512;

/// Copy-on-write overlay: changed 512-byte sectors on top of a read-only backend.
#[derive(Default, Serialize, Deserialize)]
pub struct Overlay {
    /// The source image (not serialised: a host re-attaches it).
    #[serde(skip)]
    base: Option<Box<dyn BlockBackend>>,
    /// Size of the base image in bytes, kept for snapshots.
    len: u64,
    /// Sectors the guest wrote, by sector number.
    sectors: BTreeMap<u64, Vec<u8>>,
    /// A recorder or a replay watching the image's answers (host-side, not serialised).
    #[serde(skip)]
    tap: Option<Box<dyn ReadTap>>,
}

/// A copy of the guest's changes without the image or a tap (host handles): the overlay as
/// plain state, which a snapshot holds and a host re-attaches an image to.
impl Clone for Overlay {
    fn clone(&self) -> Overlay {
        Overlay {
            base: None,
            len: self.len,
            sectors: self.sectors.clone(),
            tap: None,
        }
    }
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("len", &self.len)
            .field("dirty_sectors", &self.sectors.len())
            .field("tapped", &self.tap.is_some())
            .finish()
    }
}

impl Overlay {
    pub fn new(base: Box<dyn BlockBackend>) -> Self {
        let len = base.len();
        Overlay {
            base: Some(base),
            len,
            sectors: BTreeMap::new(),
            tap: None,
        }
    }

    /// Image size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the image is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Read `buf.len()` bytes at `offset`. Bytes past the end of the base image read as zero
    /// (a CD image whose size is not a multiple of 2048 gets a zero-padded last sector); the
    /// caller checks ranges against the capacity it reports.
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, BlockError> {
        let end = offset.saturating_add(buf.len() as u64);
        let first = offset / SECTOR as u64;
        let last = end.div_ceil(SECTOR as u64);
        let all_dirty = offset.is_multiple_of(SECTOR as u64)
            && buf.len().is_multiple_of(SECTOR)
            && (first..last).all(|s| self.sectors.contains_key(&s));
        if !all_dirty {
            let avail = self.len.saturating_sub(offset).min(buf.len() as u64) as usize;
            let Some(base) = self.base.as_mut() else {
                return Err(BlockError::Io("image detached".into()));
            };
            if avail > 0 {
                let mut answer = base.read(offset, &mut buf[..avail]);
                if let Some(tap) = self.tap.as_mut() {
                    answer = tap.answer(answer);
                }
                if let ReadStatus::Pending = answer? {
                    return Ok(ReadStatus::Pending);
                }
            }
            buf[avail..].fill(0);
        }
        for (&s, data) in self.sectors.range(first..last) {
            let s_start = s * SECTOR as u64;
            let from = s_start.max(offset);
            let to = (s_start + SECTOR as u64).min(end);
            if from < to {
                let dst = (from - offset) as usize..(to - offset) as usize;
                let src = (from - s_start) as usize..(to - s_start) as usize;
                buf[dst].copy_from_slice(&data[src]);
            }
        }
        Ok(ReadStatus::Ready)
    }

    /// Record a guest write of whole sectors starting at `sector`.
    pub fn write(&mut self, sector: u64, data: &[u8]) {
        for (i, chunk) in data.chunks(SECTOR).enumerate() {
            let mut s = chunk.to_vec();
            s.resize(SECTOR, 0);
            self.sectors.insert(sector + i as u64, s);
        }
    }

    /// The sectors the guest changed, in order: (sector number, 512 bytes).
    pub fn dirty(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.sectors.iter().map(|(&s, d)| (s, d.as_slice()))
    }

    /// Number of changed sectors.
    pub fn dirty_count(&self) -> usize {
        self.sectors.len()
    }

    /// Whether every changed sector is a whole sector inside the image (a state file that says
    /// otherwise is corrupt).
    pub fn check(&self) -> Result<(), String> {
        let sectors = self.len.div_ceil(SECTOR as u64);
        match self
            .sectors
            .iter()
            .find(|(&s, d)| d.len() != SECTOR || s >= sectors)
        {
            Some((s, d)) => Err(format!(
                "changed sector {s} of {} bytes in an image of {sectors} sectors",
                d.len()
            )),
            None => Ok(()),
        }
    }

    /// Whether the source image is attached.
    pub fn has_base(&self) -> bool {
        self.base.is_some()
    }

    /// The source image, while attached.
    pub fn base_mut(&mut self) -> Option<&mut (dyn BlockBackend + 'static)> {
        self.base.as_deref_mut()
    }

    /// Put `tap` between the image and the drive (`None` takes it away); returns the one that
    /// was there.
    pub fn set_tap(&mut self, tap: Option<Box<dyn ReadTap>>) -> Option<Box<dyn ReadTap>> {
        std::mem::replace(&mut self.tap, tap)
    }

    /// Attach the source image again (an overlay restored from a snapshot has none). It must
    /// be as large as the image the overlay was made over; if not, it is handed back.
    pub fn reattach(&mut self, base: Box<dyn BlockBackend>) -> Result<(), Box<dyn BlockBackend>> {
        if base.len() != self.len {
            return Err(base);
        }
        self.base = Some(base);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_keeps_the_base_unchanged_and_merges_writes() {
        let base: Vec<u8> = (0..2048u32).map(|i| i as u8).collect();
        let mut o = Overlay::new(Box::new(MemBackend::new(base.clone())));
        o.write(1, &[0xAA; 512]);
        let mut buf = vec![0; 1536];
        assert_eq!(o.read(0, &mut buf), Ok(ReadStatus::Ready));
        assert_eq!(&buf[..512], &base[..512]);
        assert!(buf[512..1024].iter().all(|&b| b == 0xAA));
        assert_eq!(&buf[1024..], &base[1024..1536]);
        // A partial-sector read across a dirty sector.
        let mut small = [0u8; 4];
        o.read(510, &mut small).unwrap();
        assert_eq!(small, [base[510], base[511], 0xAA, 0xAA]);
        assert_eq!(o.dirty().count(), 1);
    }

    #[test]
    fn reads_past_the_end_are_zero_padded() {
        let mut o = Overlay::new(Box::new(MemBackend::new(vec![7; 100])));
        let mut buf = vec![1; 512];
        o.read(0, &mut buf).unwrap();
        assert!(buf[..100].iter().all(|&b| b == 7) && buf[100..].iter().all(|&b| b == 0));
    }

    #[test]
    fn mem_backend_rejects_out_of_range() {
        let mut m = MemBackend::new(vec![0; 10]);
        let mut buf = [0u8; 4];
        assert!(m.read(8, &mut buf).is_err());
        assert!(m.read(u64::MAX, &mut buf).is_err());
    }
}
