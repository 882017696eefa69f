//! The drives: an ATA hard disk over a copy-on-write overlay of its image, its IDENTIFY data,
//! and [`Drive`], a disk or a CD-ROM in a channel's slot.

use super::*;

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
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AtaDisk {
    pub(super) disk: Overlay,
    /// Capacity in 512-byte sectors.
    pub(super) sectors: u64,
    /// Default CHS geometry reported by IDENTIFY.
    pub(super) cyls: u16,
    pub(super) heads: u8,
    pub(super) spt: u8,
    /// Current CHS translation (INITIALIZE DEVICE PARAMETERS).
    pub(super) cur_heads: u8,
    pub(super) cur_spt: u8,
    /// READ/WRITE MULTIPLE block size in sectors (0 = disabled).
    pub(super) multiple: u8,
    pub(super) write_cache: bool,
    /// Selected transfer mode (SET FEATURES 03h value).
    pub(super) xfer_mode: u8,
    pub(super) serial: String,
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

    pub(super) fn identify(&self) -> [u16; 256] {
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
pub(super) fn put_string(words: &mut [u16], s: &str) {
    let mut bytes = s.bytes().chain(std::iter::repeat(b' '));
    for w in words {
        let hi = bytes.next().unwrap_or(b' ');
        let lo = bytes.next().unwrap_or(b' ');
        *w = u16::from(hi) << 8 | u16::from(lo);
    }
}

/// IDENTIFY words 63 and 88: multiword DMA 0-2 and Ultra DMA 0-5 supported, with the mode
/// selected by SET FEATURES (`xfer_mode`, its subcommand value) in the high byte.
pub(super) fn dma_mode_words(w: &mut [u16; 256], xfer_mode: u8) {
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
pub(super) fn atapi_identify(xfer_mode: u8) -> [u16; 256] {
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

pub(super) fn words_to_bytes(w: &[u16; 256]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A drive on a channel.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Drive {
    Ata(AtaDisk),
    Atapi(Cdrom),
}

impl Drive {
    /// The drive's image: the disk, or the CD-ROM's disc if one is in.
    pub fn image(&self) -> Option<&Overlay> {
        match self {
            Drive::Ata(disk) => Some(&disk.disk),
            Drive::Atapi(cd) => cd.media(),
        }
    }

    /// The drive's image, mutably.
    pub fn image_mut(&mut self) -> Option<&mut Overlay> {
        match self {
            Drive::Ata(disk) => Some(&mut disk.disk),
            Drive::Atapi(cd) => cd.media_mut(),
        }
    }

    pub(super) fn is_atapi(&self) -> bool {
        matches!(self, Drive::Atapi(_))
    }
}
