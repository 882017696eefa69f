//! Read-only memory that devices decode on the MMIO bus: the system BIOS at the top of the
//! 4 GiB space (where a 386 fetches its first instruction, 16 bytes below 4 GiB), and a PCI
//! expansion ROM (the display's VGA BIOS) where the guest's expansion-ROM BAR places it.
//!
//! The BIOS's copy below 1 MiB is not here: that is the ROM side of the BIOS area in
//! [`crate::mem::Memory`], which the chipset's shadow RAM can replace.

use super::{all_ones, At, DevCtx, Device};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::rc::Rc;

/// The largest system BIOS: it is mapped ending at 4 GiB, and its last 128 KiB (or all of it,
/// if smaller) also ending at 1 MiB.
pub const MAX_BIOS_LEN: usize = 256 << 10;
/// How much of the BIOS appears below 1 MiB (0xE0000-0xFFFFF for a 128 or 256 KiB image).
pub const LOW_BIOS_LEN: usize = 128 << 10;
/// The largest option ROM (the PCI expansion-ROM BAR decodes a power of two).
pub const MAX_OPTION_ROM_LEN: usize = 128 << 10;

/// A firmware image: shared, never written.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image(Rc<[u8]>);

impl Image {
    pub fn new(bytes: Vec<u8>) -> Image {
        Image(bytes.into())
    }
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Image({} bytes)", self.0.len())
    }
}

/// Why a firmware image cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("the {what} is empty")]
    Empty { what: &'static str },
    #[error("the {what} is {len} bytes; at most {max} fit")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("the option ROM does not start with the 55 AA signature of a PC expansion ROM")]
    NoSignature,
}

/// Check a system BIOS image: 1 byte to 256 KiB.
pub fn check_bios(bytes: &[u8]) -> Result<(), ImageError> {
    check_len("system BIOS", bytes.len(), MAX_BIOS_LEN)
}

/// Check an option ROM image: up to 128 KiB, with the 55 AA signature a BIOS looks for.
pub fn check_option_rom(bytes: &[u8]) -> Result<(), ImageError> {
    check_len("option ROM", bytes.len(), MAX_OPTION_ROM_LEN)?;
    if bytes.len() < 3 || bytes[0] != 0x55 || bytes[1] != 0xAA {
        return Err(ImageError::NoSignature);
    }
    Ok(())
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), ImageError> {
    if len == 0 {
        return Err(ImageError::Empty { what });
    }
    if len > max {
        return Err(ImageError::TooLarge { what, len, max });
    }
    Ok(())
}

/// A ROM on the MMIO bus: reads return its bytes (all ones past its end, where the decoded
/// window is larger than the image), writes are ignored, as a ROM's are.
pub struct Rom {
    image: Image,
}

impl Rom {
    pub fn new(image: Image) -> Rom {
        Rom { image }
    }
}

impl Device for Rom {
    fn read(&mut self, at: At, size: u8, _ctx: &mut DevCtx) -> u32 {
        let bytes = self.image.bytes();
        let mut v = all_ones(size);
        for k in 0..u32::from(size) {
            if let Some(&b) = bytes.get(at.offset.wrapping_add(k) as usize) {
                v = v & !(0xFF << (8 * k)) | u32::from(b) << (8 * k);
            }
        }
        v
    }

    fn write(&mut self, _at: At, _size: u8, _value: u32, _ctx: &mut DevCtx) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::testing::Rig;

    #[test]
    fn reads_are_the_image_little_endian_and_writes_change_nothing() {
        let mut rig = Rig::new(
            Rom::new(Image::new(vec![0x55, 0xAA, 0x10, 0x20, 0x30])),
            0xC0000,
        );
        assert_eq!(rig.read(0, 4), 0x2010_AA55);
        rig.write(0, 4, 0);
        assert_eq!(rig.read(1, 2), 0x10AA);
        assert_eq!(
            rig.read(3, 4),
            0xFFFF_3020,
            "past the image: an undriven bus"
        );
    }

    #[test]
    fn images_are_checked() {
        assert_eq!(
            check_bios(&[]),
            Err(ImageError::Empty {
                what: "system BIOS"
            })
        );
        assert!(check_bios(&vec![0; MAX_BIOS_LEN]).is_ok());
        assert!(matches!(
            check_bios(&vec![0; MAX_BIOS_LEN + 1]),
            Err(ImageError::TooLarge { .. })
        ));
        assert_eq!(check_option_rom(&[0, 0, 0]), Err(ImageError::NoSignature));
        assert!(check_option_rom(&[0x55, 0xAA, 1]).is_ok());
    }
}
