//! Disk images for the CLI: a file-backed [`BlockBackend`] (the core never touches `std::fs`),
//! images streamed over HTTP (see [`crate::remote`]), and `--write-back` of the guest's changes
//! at exit.
//!
//! Images are opened read-only: guest writes go to the copy-on-write overlay in the core and
//! are lost at exit unless `--write-back` is given, which then writes the changed sectors into
//! the image file.

use crate::http;
use crate::remote::Remotes;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use wasm86::block::{BlockBackend, BlockError, ReadStatus};
use wasm86::dev::atapi::Cdrom;
use wasm86::dev::fdc::Diskette;
use wasm86::dev::ide::{AtaDisk, Drive};
use wasm86::machine::Machine;

/// A read-only image file.
pub struct FileBackend {
    file: File,
    len: u64,
}

impl FileBackend {
    /// Open `path` read-only; an empty file is an error.
    pub fn open(what: &str, path: &Path) -> Result<FileBackend, String> {
        let file = File::open(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("{what} {}: {e}", path.display()))?;
        if meta.is_dir() {
            return Err(format!("{what} {}: is a directory", path.display()));
        }
        if meta.len() == 0 {
            return Err(format!("{what} {}: the image is empty", path.display()));
        }
        Ok(FileBackend {
            file,
            len: meta.len(),
        })
    }
}

impl BlockBackend for FileBackend {
    fn len(&self) -> u64 {
        self.len
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, BlockError> {
        if offset.saturating_add(buf.len() as u64) > self.len {
            return Err(BlockError::OutOfRange {
                offset,
                len: buf.len(),
            });
        }
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(buf))
            .map_err(|e| BlockError::Io(e.to_string()))?;
        Ok(ReadStatus::Ready)
    }
}

/// An image an option names, opened: the drive slot it goes to, the option, its path or URL,
/// and its bytes.
pub struct Image {
    pub slot: usize,
    pub what: &'static str,
    pub path: PathBuf,
    pub backend: Box<dyn BlockBackend>,
}

/// The image slot of floppy drive A: (the IDE slots are 0-3; see `Machine::restore_state`).
pub const FDA_SLOT: usize = 4;

/// Open `--hda`, `--hdb` (primary master/slave, /dev/sda, /dev/sdb), `--cdrom` (secondary
/// master, /dev/sr0) and `--fda` (floppy drive A:). Each is a file, or (not the floppy) an
/// `http://` URL streamed by the returned [`Remotes`] (which the run loop must service), each
/// keeping at most `max_cached_bytes` of fetched chunks in memory.
pub fn open(
    hda: &Option<PathBuf>,
    hdb: &Option<PathBuf>,
    cdrom: &Option<PathBuf>,
    fda: &Option<PathBuf>,
    max_cached_bytes: u64,
) -> Result<(Remotes, Vec<Image>), String> {
    let mut remotes = Remotes::new(max_cached_bytes);
    let mut images = Vec::new();
    for (slot, what, path) in [
        (0, "--hda", hda),
        (1, "--hdb", hdb),
        (2, "--cdrom", cdrom),
        (FDA_SLOT, "--fda", fda),
    ] {
        if let Some(p) = path {
            let backend = match url_of(p) {
                Some(_) if slot == FDA_SLOT => {
                    return Err(format!(
                        "--fda {}: a floppy image must be a file (it is small: download it)",
                        p.display()
                    ))
                }
                Some(url) => remotes.open(what, url)?,
                None => Box::new(FileBackend::open(what, p)?),
            };
            images.push(Image {
                slot,
                what,
                path: p.clone(),
                backend,
            });
        }
    }
    Ok((remotes, images))
}

/// Put `images` (from [`open`]) into a new machine's drives: disks in slots 0 and 1, the
/// CD-ROM in slot 2, the floppy in drive A:.
pub fn attach(machine: &mut Machine, images: Vec<Image>) -> Result<(), String> {
    for image in images {
        machine.set_disk_name(image.slot, &image.path.display().to_string());
        if image.slot == FDA_SLOT {
            let disk = Diskette::new(image.backend, false)
                .map_err(|e| format!("{} {}: {e}", image.what, image.path.display()))?;
            machine.insert_floppy(0, Some(disk));
            continue;
        }
        let drive = if image.slot == 2 {
            Drive::Atapi(Cdrom::with_disc(image.backend))
        } else {
            let disk = AtaDisk::new(image.backend)
                .map_err(|e| format!("{} {}: {e}", image.what, image.path.display()))?;
            Drive::Ata(disk)
        };
        machine.attach_drive(image.slot, drive);
    }
    Ok(())
}

/// The URL an image option names, if it is one (`scheme://...`) rather than a file.
pub fn url_of(p: &Path) -> Option<&str> {
    p.to_str().filter(|s| http::looks_like_url(s))
}

/// Write the guest's changes to the disk at `slot` into `path`; returns the sectors written.
pub fn write_back(machine: &Machine, slot: usize, path: &Path) -> Result<usize, String> {
    let ide = machine.board().ide.clone();
    let ide = ide.borrow();
    let Some(Drive::Ata(disk)) = ide.drive(slot) else {
        return Ok(0);
    };
    let overlay = disk.overlay();
    if overlay.dirty_count() == 0 {
        return Ok(0);
    }
    let err = |e: std::io::Error| format!("--write-back {}: {e}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(err)?;
    for (sector, data) in overlay.dirty() {
        f.seek(SeekFrom::Start(sector * 512)).map_err(err)?;
        f.write_all(data).map_err(err)?;
    }
    f.sync_all().map_err(err)?;
    Ok(overlay.dirty_count())
}
