//! Disk, CD and floppy images a user gives the machine: what inspects them (an ATA disk's size
//! and geometry, a diskette's size to geometry, a state's identity of an image) and the CD-ROM
//! drive's ATAPI command set over a disc of any size, with reads at whatever block the command
//! names.
//!
//! Input: the image (its length and bytes), then 12-byte ATAPI commands.

use super::Input;
use wasm86::block::{BlockBackend, MemBackend, Overlay};
use wasm86::dev::atapi::{Cdrom, Reply};
use wasm86::dev::fdc::{Diskette, Geometry};
use wasm86::dev::ide::AtaDisk;
use wasm86::state::DiskIdentity;

/// Sizes an image may be given (the fuzzer's bytes fill its start): small ones, one sector
/// off from a sector multiple, and every standard diskette size.
const SIZES: &[u64] = &[
    0, 1, 511, 512, 513, 2047, 2048, 4096, 32768, 368_640, 737_280, 1_228_800, 1_474_560,
    2_949_120, 1_474_561,
];
const MAX_COMMANDS: usize = 64;

fn image(size: u64, contents: &[u8]) -> Box<dyn BlockBackend> {
    let mut bytes = vec![0u8; size as usize];
    let n = contents.len().min(bytes.len());
    bytes[..n].copy_from_slice(&contents[..n]);
    Box::new(MemBackend::new(bytes))
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let size = if input.bool() {
        SIZES[usize::from(input.u8()) % SIZES.len()]
    } else {
        u64::from(input.u16()) * 4
    };
    let contents_len = input.length(1 << 16);
    let contents = input.bytes(contents_len).to_vec();

    // An ATA disk takes whole sectors only; its geometry comes from the size.
    match AtaDisk::new(image(size, &contents)) {
        Ok(disk) => assert_eq!(disk.sectors(), size / 512),
        Err(_) => assert!(size == 0 || size % 512 != 0),
    }
    // A diskette is one of the standard sizes.
    let geometry = Geometry::of_size(size);
    let diskette = Diskette::new(image(size, &contents), input.bool());
    assert_eq!(geometry.is_some(), diskette.is_ok());
    if let Some(g) = geometry {
        assert_eq!(
            u64::from(g.cylinders) * u64::from(g.heads) * u64::from(g.sectors) * 512,
            size
        );
    }
    // A saved state names an image by its identity: the same image matches it.
    let mut backend = image(size, &contents);
    let identity = DiskIdentity::of(0, "fuzz.img", backend.as_mut());
    assert_eq!(identity.check(image(size, &contents).as_mut()), Ok(()));
    let mut overlay = Overlay::new(image(size, &contents));
    let mut buf = vec![0u8; input.length(8192)];
    let _ = overlay.read(input.u64() % (size + 4096), &mut buf);

    // The CD-ROM drive: a disc of this image and commands from the input.
    let mut cd = Cdrom::with_disc(image(size, &contents));
    for _ in 0..MAX_COMMANDS {
        if input.is_empty() {
            break;
        }
        let mut cdb = [0u8; 12];
        cdb.copy_from_slice(&{
            let mut b = input.bytes(12).to_vec();
            b.resize(12, 0);
            b
        });
        if let Reply::Read { lba, count } = cd.command(&cdb) {
            // The drive said the blocks are on the disc: reading them must work.
            assert!(
                lba + u64::from(count) <= cd.sectors(),
                "READ of {count} blocks at {lba} accepted on a disc of {} blocks",
                cd.sectors()
            );
            let mut sector = vec![0u8; 2048];
            for n in 0..u64::from(count).min(4) {
                let _ = cd.read(lba + n, &mut sector);
            }
        }
        match input.u8() % 8 {
            0 => cd.eject(),
            1 => cd.insert(image(size, &contents)),
            _ => {}
        }
    }
}
