//! QEMU's firmware configuration device (fw_cfg), as on its i440FX PC: how SeaBIOS (and Linux's
//! `qemu_fw_cfg` driver) learn the machine's RAM size, memory map and boot order. Items are
//! numbered blobs the host fills in; item 0x19 is a directory of named files (selectors from
//! 0x20 on). The specification is QEMU's `docs/specs/fw_cfg.rst`.
//!
//! Ports (x86):
//!
//! | port | size | |
//! |---|---|---|
//! | 0x510 | 16-bit write | selector: picks an item and rewinds to its first byte |
//! | 0x511 | 8-bit read | data: the item's next byte (0 past its end) |
//! | 0x514 | 32-bit write | DMA address, high half, big-endian |
//! | 0x518 | 32-bit write | DMA address, low half, big-endian: starts the transfer |
//! | 0x514 | 32-bit reads | the DMA signature "QEMU CFG" |
//!
//! A DMA transfer is described in guest memory by `{control: u32, length: u32, address: u64}`,
//! all big-endian. Control bits: 0x01 error, 0x02 read, 0x04 skip, 0x08 select (the item in
//! the high 16 bits), 0x10 write. The device carries it out at once (the guest polls the
//! control word, which it clears, or leaves with the error bit, when done). No item is
//! writable, so a write transfer ends in error, as on QEMU for read-only items.

use super::ide::DmaMemory;
use super::{At, DevCtx, Device, Snapshot};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The selector and data ports.
pub const PORT_BASE: u16 = 0x510;
pub const PORT_LEN: u32 = 2;
/// The DMA address register.
pub const DMA_BASE: u16 = 0x514;
pub const DMA_LEN: u32 = 8;

/// Item keys (QEMU's `FW_CFG_*`).
pub const SIGNATURE: u16 = 0x00;
pub const ID: u16 = 0x01;
pub const UUID: u16 = 0x02;
pub const RAM_SIZE: u16 = 0x03;
pub const NOGRAPHIC: u16 = 0x04;
pub const NB_CPUS: u16 = 0x05;
pub const BOOT_MENU: u16 = 0x0E;
pub const MAX_CPUS: u16 = 0x0F;
pub const FILE_DIR: u16 = 0x19;
/// The first selector of a named file.
pub const FILE_FIRST: u16 = 0x20;

/// ID bits: the port interface, the DMA interface.
const ID_TRADITIONAL: u32 = 1;
const ID_DMA: u32 = 2;
/// DMA control bits.
const DMA_ERROR: u32 = 0x01;
const DMA_READ: u32 = 0x02;
const DMA_SKIP: u32 = 0x04;
const DMA_SELECT: u32 = 0x08;
const DMA_WRITE: u32 = 0x10;
/// The largest length a transfer may ask for in one go (larger ones are an error, not a
/// host allocation of gigabytes).
const MAX_DMA: u32 = 16 << 20;
/// A file name's room in a directory entry.
const FILE_NAME_LEN: usize = 56;
/// E820 memory type: usable RAM.
pub const E820_RAM: u32 = 1;

/// The device: its items, and where the guest is in the selected one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwCfg {
    items: BTreeMap<u16, Vec<u8>>,
    /// Named files: (name, selector), in the order they were added.
    files: Vec<(String, u16)>,
    selected: u16,
    offset: u32,
    /// The DMA address's high half, as last written.
    dma_high: u32,
    /// A transfer the guest started and the board has not carried out yet.
    dma_pending: Option<u64>,
}

impl FwCfg {
    /// A device with the signature and ID items and an empty file directory.
    pub fn new() -> FwCfg {
        let mut f = FwCfg::default();
        f.set(SIGNATURE, b"QEMU".to_vec());
        f.set(ID, (ID_TRADITIONAL | ID_DMA).to_le_bytes().to_vec());
        f.set(UUID, vec![0; 16]);
        f.update_directory();
        f
    }

    /// The device QEMU's i440FX PC would have for a one-CPU machine with `ram_bytes` of RAM
    /// (all of it below 4 GiB) and `boot_order` (SeaBIOS's `bootorder` file: device paths, one
    /// per line; empty for its default order).
    pub fn for_pc(ram_bytes: u64, boot_order: &str) -> FwCfg {
        let mut f = FwCfg::new();
        f.set(RAM_SIZE, ram_bytes.to_le_bytes().to_vec());
        f.set(NOGRAPHIC, 0u16.to_le_bytes().to_vec());
        f.set(NB_CPUS, 1u16.to_le_bytes().to_vec());
        f.set(MAX_CPUS, 1u16.to_le_bytes().to_vec());
        f.set(BOOT_MENU, 0u16.to_le_bytes().to_vec());
        // The memory map: all RAM from 0 (SeaBIOS marks its own reservations in it).
        let mut e820 = 0u64.to_le_bytes().to_vec();
        e820.extend_from_slice(&ram_bytes.to_le_bytes());
        e820.extend_from_slice(&E820_RAM.to_le_bytes());
        f.add_file("etc/e820", e820);
        f.add_file("bootorder", boot_order.as_bytes().to_vec());
        f
    }

    /// SeaBIOS's boot menu ("Press ESC for boot menu."), waiting `wait_ms` for the key, as
    /// QEMU's `-boot menu=on,splash-time=N` asks for it ([`FwCfg::for_pc`] has no menu, QEMU's
    /// default).
    pub fn set_boot_menu(&mut self, wait_ms: u16) {
        self.set(BOOT_MENU, 1u16.to_le_bytes().to_vec());
        self.add_file("etc/boot-menu-wait", wait_ms.to_le_bytes().to_vec());
    }

    /// Set item `key` to `data`.
    pub fn set(&mut self, key: u16, data: Vec<u8>) {
        self.items.insert(key, data);
    }

    /// Add (or replace) the named file `name` (at most 55 bytes); returns its selector.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> u16 {
        let name: String = name.chars().take(FILE_NAME_LEN - 1).collect();
        let selector = match self.files.iter().find(|(n, _)| *n == name) {
            Some(&(_, s)) => s,
            None => {
                let s = FILE_FIRST + self.files.len() as u16;
                self.files.push((name, s));
                s
            }
        };
        self.items.insert(selector, data);
        self.update_directory();
        selector
    }

    /// Item 0x19: the count, then per file its size, selector and name, all big-endian.
    fn update_directory(&mut self) {
        let mut dir = (self.files.len() as u32).to_be_bytes().to_vec();
        for (name, selector) in &self.files {
            let size = self.items.get(selector).map_or(0, Vec::len) as u32;
            dir.extend_from_slice(&size.to_be_bytes());
            dir.extend_from_slice(&selector.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut field = [0u8; FILE_NAME_LEN];
            field[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&field);
        }
        self.items.insert(FILE_DIR, dir);
    }

    /// The selected item's bytes from the current offset.
    fn rest(&self) -> &[u8] {
        self.items
            .get(&self.selected)
            .and_then(|d| d.get(self.offset as usize..))
            .unwrap_or(&[])
    }

    fn select(&mut self, key: u16) {
        // Bits 14 (write) and 15 (architecture-specific) are part of the key; no item here
        // has them, so such a selection reads as an absent item.
        self.selected = key;
        self.offset = 0;
    }

    fn next_byte(&mut self) -> u8 {
        let b = self.rest().first().copied().unwrap_or(0);
        self.offset = self.offset.saturating_add(1);
        b
    }

    /// Whether the guest started a DMA transfer the board must carry out (see
    /// [`FwCfg::run_dma`]).
    pub fn dma_pending(&self) -> bool {
        self.dma_pending.is_some()
    }

    /// Carry out the transfer the guest started, against guest memory.
    pub fn run_dma(&mut self, mem: &mut dyn DmaMemory) {
        let Some(at) = self.dma_pending.take() else {
            return;
        };
        let Ok(at) = u32::try_from(at) else {
            return; // Above 4 GiB: nothing this machine has.
        };
        let mut desc = [0u8; 16];
        if !mem.dma_read(at, &mut desc) {
            return;
        }
        let word = |i: usize| u32::from_be_bytes([desc[i], desc[i + 1], desc[i + 2], desc[i + 3]]);
        let control = word(0);
        let length = word(4);
        let address = u64::from(word(8)) << 32 | u64::from(word(12));
        if control & DMA_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let mut error = false;
        if control & DMA_WRITE != 0 {
            error = true;
        } else if control & DMA_READ != 0 {
            match u32::try_from(address) {
                Ok(to) if length <= MAX_DMA => {
                    let have = self.rest().len().min(length as usize);
                    let mut data = self.rest()[..have].to_vec();
                    // Past the item's end a read gives zeros.
                    data.resize(length as usize, 0);
                    error = !mem.dma_write(to, &data);
                }
                _ => error = true,
            }
        }
        if !error && control & (DMA_READ | DMA_SKIP) != 0 {
            self.offset = self.offset.saturating_add(length);
        }
        let status = if error { DMA_ERROR } else { 0 };
        mem.dma_write(at, &status.to_be_bytes());
    }
}

impl Device for FwCfg {
    fn read(&mut self, at: At, size: u8, _ctx: &mut DevCtx) -> u32 {
        match (at.base as u16, at.offset) {
            (PORT_BASE, 1) => {
                let mut v = 0u32;
                for i in 0..u32::from(size.min(4)) {
                    v |= u32::from(self.next_byte()) << (8 * i);
                }
                v
            }
            (DMA_BASE, 0) => u32::from_le_bytes(*b"QEMU"),
            (DMA_BASE, 4) => u32::from_le_bytes(*b" CFG"),
            _ => u32::MAX >> (32 - 8 * u32::from(size.clamp(1, 4))),
        }
    }

    fn write(&mut self, at: At, size: u8, value: u32, _ctx: &mut DevCtx) {
        match (at.base as u16, at.offset, size) {
            (PORT_BASE, 0, 2) => self.select(value as u16),
            // The register is big-endian: the bytes the guest stored, in order.
            (DMA_BASE, 0, 4) => self.dma_high = value.swap_bytes(),
            (DMA_BASE, 4, 4) => {
                self.dma_pending =
                    Some(u64::from(self.dma_high) << 32 | u64::from(value.swap_bytes()));
            }
            _ => {}
        }
    }
}

/// The items are the machine's configuration and the rest is registers.
impl Snapshot for FwCfg {
    type State = FwCfg;
    fn state(&self) -> FwCfg {
        self.clone()
    }
    fn from_state(state: FwCfg) -> Result<FwCfg, String> {
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::testing::Rig;

    fn rig() -> Rig<FwCfg> {
        Rig::new(
            FwCfg::for_pc(64 << 20, "/pci@i0cf8/ide@1,1/drive@0/disk@0\n"),
            PORT_BASE.into(),
        )
    }

    /// Read `n` bytes of item `key` through the ports.
    fn item(r: &mut Rig<FwCfg>, key: u16, n: usize) -> Vec<u8> {
        r.write(0, 2, key.into());
        (0..n).map(|_| r.inb(1)).collect()
    }

    /// The files of the directory: (name, selector, size).
    fn directory(r: &mut Rig<FwCfg>) -> Vec<(String, u16, u32)> {
        let count = u32::from_be_bytes(item(r, FILE_DIR, 4).try_into().unwrap()) as usize;
        let all = item(r, FILE_DIR, 4 + 64 * count);
        all[4..]
            .chunks(64)
            .map(|e| {
                let name = String::from_utf8_lossy(&e[8..])
                    .trim_end_matches('\0')
                    .to_string();
                let size = u32::from_be_bytes(e[..4].try_into().unwrap());
                (name, u16::from_be_bytes([e[4], e[5]]), size)
            })
            .collect()
    }

    #[test]
    fn the_port_interface_gives_the_signature_ram_size_and_files() {
        let mut r = rig();
        assert_eq!(item(&mut r, SIGNATURE, 4), b"QEMU");
        assert_eq!(item(&mut r, ID, 4), [3, 0, 0, 0]);
        assert_eq!(item(&mut r, RAM_SIZE, 8), (64u64 << 20).to_le_bytes());
        // Past the end, zeros; a new selection starts over.
        assert_eq!(item(&mut r, SIGNATURE, 6), b"QEMU\0\0");
        assert_eq!(item(&mut r, 0x7777, 2), [0, 0]);
        let dir = directory(&mut r);
        assert_eq!(
            dir,
            [
                ("etc/e820".to_string(), 0x20, 20),
                ("bootorder".to_string(), 0x21, 34)
            ]
        );
        let e820 = item(&mut r, 0x20, 20);
        assert_eq!(e820[..8], 0u64.to_le_bytes());
        assert_eq!(e820[8..16], (64u64 << 20).to_le_bytes());
        assert_eq!(e820[16..], E820_RAM.to_le_bytes());
        // The DMA register's signature.
        assert_eq!(
            r.read_at(DMA_BASE.into(), 0, 4),
            u32::from_le_bytes(*b"QEMU")
        );
        assert_eq!(
            r.read_at(DMA_BASE.into(), 4, 4),
            u32::from_le_bytes(*b" CFG")
        );
    }

    /// Start a DMA transfer described at `desc` in `mem` (as a guest does: the descriptor, then
    /// the address, high half then low, big-endian) and let the board carry it out.
    fn dma(r: &mut Rig<FwCfg>, mem: &mut Vec<u8>, desc: u32, control: u32, len: u32, to: u64) {
        mem[desc as usize..desc as usize + 4].copy_from_slice(&control.to_be_bytes());
        mem[desc as usize + 4..desc as usize + 8].copy_from_slice(&len.to_be_bytes());
        mem[desc as usize + 8..desc as usize + 16].copy_from_slice(&to.to_be_bytes());
        r.write_at(DMA_BASE.into(), 0, 4, 0);
        r.write_at(DMA_BASE.into(), 4, 4, desc.swap_bytes());
        assert!(r.dev.dma_pending());
        r.dev.run_dma(mem);
        assert!(!r.dev.dma_pending());
    }

    #[test]
    fn dma_selects_reads_skips_and_reports_errors_in_the_control_word() {
        let mut r = rig();
        let mut mem = vec![0xEEu8; 0x4000];
        // Select the RAM size and read 8 bytes of it to 0x2000.
        dma(
            &mut r,
            &mut mem,
            0x1000,
            (u32::from(RAM_SIZE) << 16) | DMA_SELECT | DMA_READ,
            8,
            0x2000,
        );
        assert_eq!(mem[0x1000..0x1004], [0, 0, 0, 0], "done, no error");
        assert_eq!(mem[0x2000..0x2008], (64u64 << 20).to_le_bytes());
        // Select the signature, skip 2 bytes, read 4: "MU" then zeros past the end.
        dma(
            &mut r,
            &mut mem,
            0x1000,
            (u32::from(SIGNATURE) << 16) | DMA_SELECT | DMA_SKIP,
            2,
            0,
        );
        dma(&mut r, &mut mem, 0x1000, DMA_READ, 4, 0x2100);
        assert_eq!(mem[0x2100..0x2104], *b"MU\0\0");
        // The port interface goes on from where DMA left the offset.
        assert_eq!(r.inb(1), 0);
        // A write (no item is writable), and a read into memory that is not there: errors.
        dma(&mut r, &mut mem, 0x1000, DMA_WRITE, 4, 0x2200);
        assert_eq!(mem[0x1003], DMA_ERROR as u8);
        dma(
            &mut r,
            &mut mem,
            0x1000,
            (u32::from(SIGNATURE) << 16) | DMA_SELECT | DMA_READ,
            4,
            0x10_0000,
        );
        assert_eq!(mem[0x1003], DMA_ERROR as u8);
        // A descriptor outside memory is ignored.
        r.write_at(DMA_BASE.into(), 0, 4, 0);
        r.write_at(DMA_BASE.into(), 4, 4, 0x0F00_0000u32.swap_bytes());
        r.dev.run_dma(&mut mem);
    }

    #[test]
    fn any_guest_input_is_harmless() {
        let mut r = rig();
        let mut mem = vec![0u8; 1 << 16];
        let mut x: u32 = 0x1357_9BDF;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let (base, len) = if x & 1 == 0 {
                (PORT_BASE, PORT_LEN)
            } else {
                (DMA_BASE, DMA_LEN)
            };
            let size = [1u8, 2, 4][(x >> 1) as usize % 3];
            r.write_at(base.into(), (x >> 4) % len, size, x.rotate_left(7) & 0xFFFF);
            r.read_at(base.into(), (x >> 8) % len, size);
            mem[(x as usize >> 3) % 0xFF00..][..16].copy_from_slice(&x.to_be_bytes().repeat(4));
            r.dev.run_dma(&mut mem);
        }
    }
}
