//! Booting through firmware: the system BIOS and the display's option ROM a machine is built
//! with, and the boot order the BIOS reads from CMOS.
//!
//! A machine with [`Firmware`] starts as a PC does: the CPU at its reset vector 16 bytes below
//! 4 GiB, in the BIOS, which is mapped ending at 4 GiB and (its last 128 KiB) ending at 1 MiB,
//! behind the i440FX's shadow-RAM switches (the PAM registers, see [`crate::mem::set_shadow`]).
//! The display's VGA BIOS is its PCI expansion ROM. A machine without firmware is booted by its
//! host (a Linux kernel loaded directly, see [`crate::boot`]) and has RAM in the whole BIOS area,
//! as a BIOS that shadowed itself leaves it.

use crate::dev::rom::{self, Image, ImageError};
use crate::dev::rtc::Rtc;
use serde::{Deserialize, Serialize};

/// What a machine boots through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firmware {
    /// The system BIOS (at most 256 KiB).
    pub bios: Image,
    /// The display's VGA BIOS, its PCI expansion ROM (none: the display has no ROM BAR).
    pub vga_bios: Option<Image>,
    /// The devices the BIOS tries, in order.
    pub boot_order: BootOrder,
}

impl Firmware {
    /// Firmware from ROM images, checked.
    pub fn new(
        bios: Vec<u8>,
        vga_bios: Option<Vec<u8>>,
        boot_order: BootOrder,
    ) -> Result<Firmware, ImageError> {
        rom::check_bios(&bios)?;
        if let Some(v) = &vga_bios {
            rom::check_option_rom(v)?;
        }
        Ok(Firmware {
            bios: Image::new(bios),
            vga_bios: vga_bios.map(Image::new),
            boot_order,
        })
    }
}

/// A device class the BIOS can boot from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BootDevice {
    Floppy,
    HardDisk,
    Cdrom,
}

impl BootDevice {
    /// The code in the CMOS boot-order nibbles (QEMU's, which SeaBIOS reads).
    fn cmos_code(self) -> u8 {
        match self {
            BootDevice::Floppy => 1,
            BootDevice::HardDisk => 2,
            BootDevice::Cdrom => 3,
        }
    }
}

/// Up to three boot devices, tried in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootOrder(Vec<BootDevice>);

/// A boot order that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootOrderError {
    #[error("the boot order is empty")]
    Empty,
    #[error("'{0}' is not a boot device (a: floppy, c: hard disk, d: CD-ROM)")]
    Unknown(char),
    #[error("'{0}' appears twice in the boot order")]
    Repeated(char),
}

impl BootOrder {
    /// Parse QEMU's `-boot order=` letters: `a` floppy, `c` hard disk, `d` CD-ROM, e.g. `dc`.
    pub fn parse(letters: &str) -> Result<BootOrder, BootOrderError> {
        let mut order = Vec::new();
        for c in letters.chars() {
            let d = match c.to_ascii_lowercase() {
                'a' => BootDevice::Floppy,
                'c' => BootDevice::HardDisk,
                'd' => BootDevice::Cdrom,
                _ => return Err(BootOrderError::Unknown(c)),
            };
            if order.contains(&d) {
                return Err(BootOrderError::Repeated(c));
            }
            order.push(d);
        }
        if order.is_empty() {
            return Err(BootOrderError::Empty);
        }
        Ok(BootOrder(order))
    }

    /// The devices, in order.
    pub fn devices(&self) -> &[BootDevice] {
        &self.0
    }

    /// Write the order into CMOS where SeaBIOS reads it on QEMU's machines: register 0x3D holds
    /// the first device (low nibble) and the second (high), register 0x38 the third (high
    /// nibble); its bit 0 clear keeps the boot-sector signature check for floppies.
    pub fn write_cmos(&self, rtc: &mut Rtc) {
        let code = |n: usize| self.0.get(n).map_or(0, |d| d.cmos_code());
        rtc.set_nvram(0x3D, code(0) | code(1) << 4);
        rtc.set_nvram(0x38, code(2) << 4);
    }
}

impl Default for BootOrder {
    /// Hard disk, then CD-ROM, then floppy.
    fn default() -> Self {
        BootOrder(vec![
            BootDevice::HardDisk,
            BootDevice::Cdrom,
            BootDevice::Floppy,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_orders_parse_like_qemu_s_and_land_in_cmos() {
        let o = BootOrder::parse("dca").unwrap();
        assert_eq!(
            o.devices(),
            [BootDevice::Cdrom, BootDevice::HardDisk, BootDevice::Floppy]
        );
        let mut rtc = Rtc::new(0);
        o.write_cmos(&mut rtc);
        assert_eq!((rtc.nvram(0x3D), rtc.nvram(0x38)), (0x23, 0x10));
        assert_eq!(BootOrder::parse("x"), Err(BootOrderError::Unknown('x')));
        assert_eq!(BootOrder::parse("cc"), Err(BootOrderError::Repeated('c')));
        assert_eq!(BootOrder::parse(""), Err(BootOrderError::Empty));
    }

    #[test]
    fn firmware_images_are_checked() {
        assert!(Firmware::new(vec![], None, BootOrder::default()).is_err());
        assert!(Firmware::new(vec![0; 4096], Some(vec![1, 2, 3]), BootOrder::default()).is_err());
        assert!(Firmware::new(
            vec![0; 4096],
            Some(vec![0x55, 0xAA, 1]),
            BootOrder::default()
        )
        .is_ok());
    }
}
