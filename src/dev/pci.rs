//! PCI configuration mechanism #1 (ports 0xCF8 address, 0xCFC-0xCFF data) with bus 0 holding
//! an Intel 440FX host bridge (00:00.0) and a PIIX3 PCI-to-ISA bridge (00:01.0), plus the
//! PIIX3 reset control register at port 0xCF9.
//!
//! The board maps one [`PciBus`] at 0xCF8..0xD00 (offset 0 = 0xCF8, 1 = 0xCF9, 4-7 = data).
//!
//! Configuration spaces are data: each function is a [`PciConfig`] (256 bytes of registers plus
//! a per-bit write mask and a per-bit write-one-to-clear mask), so the whole bus is a plain
//! serialisable struct. A BAR is expressed through the write mask (the size bits read back as
//! zero), which gives the standard sizing probe (write all ones, read back the size mask) for
//! free. Devices added later (IDE, the display) build a `PciConfig`, add it with
//! [`PciBus::add`], and learn about guest changes to their command register or BARs through
//! [`PciBus::take_changed`]. Behaviour beyond masks goes through the [`PciFunction`] trait,
//! whose default methods implement the standard semantics.

use super::{At, DevCtx, Device, Snapshot};
use serde::{Deserialize, Serialize};

// Port offsets from 0xCF8.
/// CONFIG_ADDRESS (0xCF8), dword access only.
pub const PORT_ADDRESS: u16 = 0;
/// PIIX3 reset control register (0xCF9), byte access.
pub const PORT_RESET_CONTROL: u16 = 1;
/// CONFIG_DATA (0xCFC-0xCFF).
pub const PORT_DATA: u16 = 4;

/// CONFIG_ADDRESS enable bit.
pub const ADDR_ENABLE: u32 = 0x8000_0000;

// Reset control register bits.
/// System reset: a hard reset when the CPU reset is issued.
pub const RC_SYS_RST: u8 = 0x02;
/// Reset CPU: writing 1 issues the reset.
pub const RC_RST_CPU: u8 = 0x04;
/// Full reset (power cycle).
pub const RC_FULL_RST: u8 = 0x08;

// Standard configuration header offsets.
/// Vendor ID (16 bits, read-only).
pub const CFG_VENDOR: u8 = 0x00;
/// Device ID (16 bits, read-only).
pub const CFG_DEVICE: u8 = 0x02;
/// Command register (16 bits).
pub const CFG_COMMAND: u8 = 0x04;
/// Status register (16 bits, error bits write-one-to-clear).
pub const CFG_STATUS: u8 = 0x06;
/// Revision ID.
pub const CFG_REVISION: u8 = 0x08;
/// Programming interface.
pub const CFG_PROG_IF: u8 = 0x09;
/// Sub-class code.
pub const CFG_SUBCLASS: u8 = 0x0A;
/// Base class code.
pub const CFG_CLASS: u8 = 0x0B;
/// Cache line size.
pub const CFG_CACHE_LINE: u8 = 0x0C;
/// Latency timer.
pub const CFG_LATENCY: u8 = 0x0D;
/// Header type (bit 7: multi-function device).
pub const CFG_HEADER_TYPE: u8 = 0x0E;
/// First base address register.
pub const CFG_BAR0: u8 = 0x10;
/// Subsystem vendor ID.
pub const CFG_SUBSYS_VENDOR: u8 = 0x2C;
/// Expansion ROM base address.
pub const CFG_ROM: u8 = 0x30;
/// Interrupt line (written by firmware, informational).
pub const CFG_INT_LINE: u8 = 0x3C;
/// Interrupt pin (1 = INTA# ... 4 = INTD#, 0 = none; read-only).
pub const CFG_INT_PIN: u8 = 0x3D;

// Command register bits.
/// Respond to I/O space accesses.
pub const CMD_IO: u16 = 0x0001;
/// Respond to memory space accesses.
pub const CMD_MEMORY: u16 = 0x0002;
/// Bus master.
pub const CMD_MASTER: u16 = 0x0004;
/// Parity error response.
pub const CMD_PARITY: u16 = 0x0040;
/// SERR# enable.
pub const CMD_SERR: u16 = 0x0100;
/// INTx# disable.
pub const CMD_INTX_DISABLE: u16 = 0x0400;

// Status register bits.
/// DEVSEL timing: medium.
pub const STS_DEVSEL_MEDIUM: u16 = 0x0200;
/// Fast back-to-back capable.
pub const STS_FAST_B2B: u16 = 0x0080;
/// Master data parity error (RW1C).
pub const STS_DATA_PARITY: u16 = 0x0100;
/// Signaled target abort (RW1C).
pub const STS_SIG_TARGET_ABORT: u16 = 0x0800;
/// Received target abort (RW1C).
pub const STS_RCV_TARGET_ABORT: u16 = 0x1000;
/// Received master abort (RW1C).
pub const STS_RCV_MASTER_ABORT: u16 = 0x2000;
/// Signaled system error (RW1C).
pub const STS_SIG_SYSTEM_ERROR: u16 = 0x4000;
/// Detected parity error (RW1C).
pub const STS_PARITY_ERROR: u16 = 0x8000;
/// All write-one-to-clear status bits.
pub const STS_RW1C: u16 = 0xF900;

// BAR flag bits.
/// BAR bit 0: I/O space.
pub const BAR_IO: u32 = 0x1;
/// Memory BAR bit 3: prefetchable.
pub const BAR_PREFETCH: u32 = 0x8;

// Class codes.
/// Bridge class, host bridge subclass.
pub const CLASS_HOST_BRIDGE: u16 = 0x0600;
/// Bridge class, ISA bridge subclass.
pub const CLASS_ISA_BRIDGE: u16 = 0x0601;

// PIIX3 registers.
/// PIRQA# route control (0x60-0x63 for PIRQA-D; bit 7 disables, bits 0-3 the ISA IRQ).
pub const PIIX3_PIRQRC: u8 = 0x60;
/// i440FX PAM0 (programmable attribute map for the BIOS area), PAM1-6 follow.
pub const I440FX_PAM0: u8 = 0x59;

/// The 13 parts of the BIOS area the PAM registers govern, as (start, length, attributes):
/// PAM0's high nibble the 64 KiB at 0xF0000, then the low and high nibbles of PAM1-PAM6 the
/// 16 KiB parts from 0xC0000 up. Each attribute is a nibble's bits 0-1: reads from RAM, writes
/// to RAM (see [`crate::mem::SHADOW_READ`]).
pub fn pam_segments(pam: [u8; 7]) -> [(u32, u32, u8); 13] {
    let mut out = [(0xF0000, 0x10000, (pam[0] >> 4) & 3); 13];
    for (n, seg) in out.iter_mut().enumerate().skip(1) {
        let k = n - 1;
        let nibble = if k % 2 == 0 {
            pam[1 + k / 2]
        } else {
            pam[1 + k / 2] >> 4
        };
        *seg = (0xC0000 + 0x4000 * k as u32, 0x4000, nibble & 3);
    }
    out
}

/// PAM0-PAM6 as a BIOS leaves them after shadowing itself: the whole area RAM, read and write.
pub const PAM_ALL_RAM: [u8; 7] = [0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33];

/// A base address register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PciBar {
    /// I/O space, `size` bytes (a power of two, at least 4).
    Io { size: u32 },
    /// 32-bit memory space, `size` bytes (a power of two, at least 16).
    Mem32 { size: u32, prefetchable: bool },
}

/// Where a function sits: bus 0, `device` 0-31, `function` 0-7.
pub fn devfn(device: u8, function: u8) -> u8 {
    (device & 0x1F) << 3 | (function & 7)
}

/// 256 bytes of configuration space, as 8 rows of 32 (serde handles arrays up to 32), indexed
/// by a `u8` register number so no index can fall outside, whatever a state file holds.
type Space = [[u8; 32]; 8];

fn at(s: &Space, reg: u8) -> u8 {
    s[(reg >> 5) as usize][(reg & 31) as usize]
}

fn at_mut(s: &mut Space, reg: u8) -> &mut u8 {
    &mut s[(reg >> 5) as usize][(reg & 31) as usize]
}

/// One function's configuration space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciConfig {
    /// Device and function number on bus 0 (device << 3 | function).
    pub devfn: u8,
    /// The 256 register bytes.
    regs: Space,
    /// Bits the guest may write.
    wmask: Space,
    /// Bits the guest clears by writing 1.
    w1cmask: Space,
}

impl PciConfig {
    /// A type-0 header with read-only IDs and class, a writable command register (I/O, memory,
    /// master, parity, SERR, INTx disable), RW1C status error bits, writable cache line size,
    /// latency timer and interrupt line.
    pub fn new(devfn: u8, vendor: u16, device: u16, class: u16, prog_if: u8, revision: u8) -> Self {
        let mut c = PciConfig {
            devfn,
            regs: [[0; 32]; 8],
            wmask: [[0; 32]; 8],
            w1cmask: [[0; 32]; 8],
        };
        c.set16(CFG_VENDOR, vendor);
        c.set16(CFG_DEVICE, device);
        c.set8(CFG_REVISION, revision);
        c.set8(CFG_PROG_IF, prog_if);
        c.set16(CFG_SUBCLASS, class);
        c.set_wmask16(
            CFG_COMMAND,
            CMD_IO | CMD_MEMORY | CMD_MASTER | CMD_PARITY | CMD_SERR | CMD_INTX_DISABLE,
        );
        *at_mut(&mut c.w1cmask, CFG_STATUS) = STS_RW1C as u8;
        *at_mut(&mut c.w1cmask, CFG_STATUS + 1) = (STS_RW1C >> 8) as u8;
        c.set_wmask8(CFG_CACHE_LINE, 0xFF);
        c.set_wmask8(CFG_LATENCY, 0xFF);
        c.set_wmask8(CFG_INT_LINE, 0xFF);
        c
    }

    /// Set a register byte (device side; ignores the write mask).
    pub fn set8(&mut self, reg: u8, v: u8) {
        *at_mut(&mut self.regs, reg) = v;
    }
    /// Set a 16-bit register (device side).
    pub fn set16(&mut self, reg: u8, v: u16) {
        for (i, b) in v.to_le_bytes().into_iter().enumerate() {
            *at_mut(&mut self.regs, reg.wrapping_add(i as u8)) = b;
        }
    }
    /// Set a 32-bit register (device side).
    pub fn set32(&mut self, reg: u8, v: u32) {
        for (i, b) in v.to_le_bytes().into_iter().enumerate() {
            *at_mut(&mut self.regs, reg.wrapping_add(i as u8)) = b;
        }
    }
    /// Make `mask` bits of a byte register guest-writable.
    pub fn set_wmask8(&mut self, reg: u8, mask: u8) {
        *at_mut(&mut self.wmask, reg) = mask;
    }
    /// Make `mask` bits of a 16-bit register guest-writable.
    pub fn set_wmask16(&mut self, reg: u8, mask: u16) {
        for (i, b) in mask.to_le_bytes().into_iter().enumerate() {
            *at_mut(&mut self.wmask, reg.wrapping_add(i as u8)) = b;
        }
    }
    /// Make `mask` bits of a 32-bit register guest-writable.
    pub fn set_wmask32(&mut self, reg: u8, mask: u32) {
        for (i, b) in mask.to_le_bytes().into_iter().enumerate() {
            *at_mut(&mut self.wmask, reg.wrapping_add(i as u8)) = b;
        }
    }
    /// Read a byte.
    pub fn get8(&self, reg: u8) -> u8 {
        at(&self.regs, reg)
    }
    /// Read a 16-bit register.
    pub fn get16(&self, reg: u8) -> u16 {
        u16::from_le_bytes([self.get8(reg), self.get8(reg.wrapping_add(1))])
    }
    /// Read a 32-bit register.
    pub fn get32(&self, reg: u8) -> u32 {
        u32::from_le_bytes([
            self.get8(reg),
            self.get8(reg.wrapping_add(1)),
            self.get8(reg.wrapping_add(2)),
            self.get8(reg.wrapping_add(3)),
        ])
    }

    /// Mark the header as multi-function (bit 7 of the header type).
    pub fn set_multifunction(&mut self) {
        *at_mut(&mut self.regs, CFG_HEADER_TYPE) |= 0x80;
    }

    /// Declare BAR `n` (0-5). Its size bits read back as zero after a sizing write.
    pub fn set_bar(&mut self, n: u8, bar: PciBar) {
        if n > 5 {
            return;
        }
        let reg = CFG_BAR0 + 4 * n;
        let (flags, mask) = match bar {
            PciBar::Io { size } => {
                let size = size.max(4).next_power_of_two();
                (BAR_IO, !(size - 1) & 0xFFFF_FFFC)
            }
            PciBar::Mem32 { size, prefetchable } => {
                let size = size.max(16).next_power_of_two();
                let flags = if prefetchable { BAR_PREFETCH } else { 0 };
                (flags, !(size - 1) & 0xFFFF_FFF0)
            }
        };
        self.set32(reg, flags);
        self.set_wmask32(reg, mask);
    }

    /// Declare an expansion ROM of `size` bytes (the enable bit 0 is writable).
    pub fn set_rom(&mut self, size: u32) {
        let size = size.max(2048).next_power_of_two();
        self.set_wmask32(CFG_ROM, !(size - 1) | 1);
    }

    /// The address BAR `n` decodes (flags masked off), or `None` for an unimplemented BAR.
    pub fn bar_address(&self, n: u8) -> Option<u32> {
        if n > 5 {
            return None;
        }
        let reg = CFG_BAR0 + 4 * n;
        let mask = u32::from_le_bytes([
            at(&self.wmask, reg),
            at(&self.wmask, reg + 1),
            at(&self.wmask, reg + 2),
            at(&self.wmask, reg + 3),
        ]);
        (mask != 0).then(|| self.get32(reg) & mask)
    }

    /// Where the expansion ROM is decoded: its BAR's address while the BAR's enable bit and
    /// memory decoding are both on (and the BAR is not at 0, being sized).
    pub fn rom_address(&self) -> Option<u32> {
        let mask = u32::from_le_bytes([
            at(&self.wmask, CFG_ROM),
            at(&self.wmask, CFG_ROM + 1),
            at(&self.wmask, CFG_ROM + 2),
            at(&self.wmask, CFG_ROM + 3),
        ]) & !1;
        let bar = self.get32(CFG_ROM);
        let on = bar & 1 != 0 && self.command() & CMD_MEMORY != 0;
        (on && bar & mask != 0).then_some(bar & mask)
    }

    /// Set the interrupt pin (1 = INTA# ... 4 = INTD#).
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        *at_mut(&mut self.regs, CFG_INT_PIN) = pin;
    }
    /// The interrupt pin.
    pub fn interrupt_pin(&self) -> u8 {
        self.get8(CFG_INT_PIN)
    }
    /// The interrupt line the firmware wrote.
    pub fn interrupt_line(&self) -> u8 {
        self.get8(CFG_INT_LINE)
    }
    /// The command register.
    pub fn command(&self) -> u16 {
        self.get16(CFG_COMMAND)
    }
    /// Device side: set status bits (e.g. a received master abort); the guest clears them by
    /// writing ones.
    pub fn raise_status(&mut self, bits: u16) {
        let s = self.get16(CFG_STATUS) | bits;
        self.set16(CFG_STATUS, s);
    }
}

/// A PCI function's configuration-space behaviour. The defaults implement the standard
/// semantics (write masks, RW1C bits) on the function's [`PciConfig`]; a device with
/// side-effecting registers overrides them.
pub trait PciFunction {
    /// The function's configuration space.
    fn config(&self) -> &PciConfig;
    /// The function's configuration space, mutably.
    fn config_mut(&mut self) -> &mut PciConfig;
    /// Read the dword at `reg` (4-byte aligned).
    fn config_read(&mut self, reg: u8) -> u32 {
        self.config().get32(reg & 0xFC)
    }
    /// Write the bytes of `value` selected by `byte_enable` (bit i = byte i) into the dword at
    /// `reg` (4-byte aligned), honouring the write and write-one-to-clear masks.
    fn config_write(&mut self, reg: u8, value: u32, byte_enable: u8) {
        let c = self.config_mut();
        let base = reg & 0xFC;
        for i in 0..4u8 {
            if byte_enable & (1 << i) == 0 {
                continue;
            }
            let r = base + i;
            let v = (value >> (8 * i)) as u8;
            let w = at(&c.wmask, r);
            let w1c = at(&c.w1cmask, r);
            let old = at(&c.regs, r);
            *at_mut(&mut c.regs, r) = ((old & !w) | (v & w)) & !(v & w1c);
        }
    }
}

impl PciFunction for PciConfig {
    fn config(&self) -> &PciConfig {
        self
    }
    fn config_mut(&mut self) -> &mut PciConfig {
        self
    }
}

/// The i440FX host bridge at 00:00.0: PMC registers 0x50-0x7F (PAM, DRB, SMRAM) writable.
pub fn i440fx() -> PciConfig {
    let mut c = PciConfig::new(devfn(0, 0), 0x8086, 0x1237, CLASS_HOST_BRIDGE, 0, 0x02);
    c.set16(CFG_COMMAND, CMD_MEMORY | CMD_MASTER);
    c.set16(CFG_STATUS, STS_DEVSEL_MEDIUM | STS_FAST_B2B);
    for r in 0x50..=0x7F {
        c.set_wmask8(r, 0xFF);
    }
    c
}

/// The PIIX3 PCI-to-ISA bridge at 00:01.0 (function 0 of a multi-function device).
pub fn piix3() -> PciConfig {
    let mut c = PciConfig::new(devfn(1, 0), 0x8086, 0x7000, CLASS_ISA_BRIDGE, 0, 0x00);
    c.set16(CFG_COMMAND, CMD_IO | CMD_MEMORY | CMD_MASTER);
    c.set16(CFG_STATUS, STS_DEVSEL_MEDIUM);
    c.set_multifunction();
    // ISA I/O recovery timer, X-bus chip select, top of memory, misc status: defaults from the
    // PIIX3 data sheet, guest-writable.
    for (r, v) in [
        (0x4C, 0x4D),
        (0x4E, 0x03),
        (0x4F, 0x00),
        (0x69, 0x02),
        (0x6A, 0x04),
        (0x6B, 0x00),
        (0x70, 0x80),
        (0x76, 0x0C),
        (0x77, 0x0C),
        (0x78, 0x02),
        (0x79, 0x00),
        (0x80, 0x00),
        (0x82, 0x00),
        (0xA0, 0x08),
    ] {
        c.set8(r, v);
        c.set_wmask8(r, 0xFF);
    }
    // PIRQA-D route control: routing disabled (bit 7) at reset.
    for r in PIIX3_PIRQRC..PIIX3_PIRQRC + 4 {
        c.set8(r, 0x80);
        c.set_wmask8(r, 0x8F);
    }
    c
}

/// PCI bus 0 behind configuration mechanism #1, with the reset control register.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PciBus {
    /// CONFIG_ADDRESS as last written.
    address: u32,
    /// Reset control register (bits 1 and 3; bit 2 self-clears).
    reset_control: u8,
    /// The functions on bus 0, sorted by devfn.
    functions: Vec<PciConfig>,
    /// Functions whose command register or BARs the guest wrote since the last
    /// [`PciBus::take_changed`].
    changed: Vec<u8>,
}

/// The bus holds only registers; on the way in, its functions must be in devfn order, once
/// each (lookups search them).
impl Snapshot for PciBus {
    type State = PciBus;
    fn state(&self) -> PciBus {
        self.clone()
    }
    fn from_state(bus: PciBus) -> Result<PciBus, String> {
        if bus.functions.windows(2).any(|w| w[0].devfn >= w[1].devfn) {
            return Err("PCI functions out of order or repeated".into());
        }
        Ok(bus)
    }
}

impl Default for PciBus {
    fn default() -> Self {
        Self::new()
    }
}

/// Error when adding a function.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("PCI function 00:{:02x}.{} already present", .0 >> 3, .0 & 7)]
pub struct SlotTaken(pub u8);

impl PciBus {
    /// Bus 0 with the i440FX host bridge and the PIIX3 ISA bridge.
    pub fn new() -> Self {
        PciBus {
            address: 0,
            reset_control: 0,
            functions: vec![i440fx(), piix3()],
            changed: Vec::new(),
        }
    }

    /// Add a function at its `devfn`; a second function at the same place is rejected.
    pub fn add(&mut self, f: PciConfig) -> Result<(), SlotTaken> {
        match self.functions.binary_search_by_key(&f.devfn, |c| c.devfn) {
            Ok(_) => Err(SlotTaken(f.devfn)),
            Err(pos) => {
                self.functions.insert(pos, f);
                Ok(())
            }
        }
    }

    /// The function at `devfn`, if present.
    pub fn function(&self, devfn: u8) -> Option<&PciConfig> {
        self.functions.iter().find(|c| c.devfn == devfn)
    }

    /// The function at `devfn`, mutably (device side: raise status bits and so on).
    pub fn function_mut(&mut self, devfn: u8) -> Option<&mut PciConfig> {
        self.functions.iter_mut().find(|c| c.devfn == devfn)
    }

    /// The functions whose command register or BARs changed since the last call (the board
    /// remaps their I/O and memory ranges).
    pub fn take_changed(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.changed)
    }

    /// The ISA IRQ that PIIX3 routes PIRQ `n` (0-3 for A-D) to, if routing is enabled.
    pub fn pirq_route(&self, n: u8) -> Option<u8> {
        let r = self.function(devfn(1, 0))?.get8(PIIX3_PIRQRC + (n & 3));
        let irq = r & 0x0F;
        (r & 0x80 == 0 && matches!(irq, 3..=7 | 9..=12 | 14 | 15)).then_some(irq)
    }

    /// The i440FX PAM registers (PAM0-PAM6), for the board's BIOS-area mapping.
    pub fn pam(&self) -> [u8; 7] {
        let mut p = [0; 7];
        if let Some(h) = self.function(devfn(0, 0)) {
            for (i, v) in p.iter_mut().enumerate() {
                *v = h.get8(I440FX_PAM0 + i as u8);
            }
        }
        p
    }

    /// Set the i440FX PAM registers (PAM0-PAM6) as firmware would.
    pub fn set_pam(&mut self, pam: [u8; 7]) {
        if let Some(h) = self.function_mut(devfn(0, 0)) {
            for (i, v) in pam.iter().enumerate() {
                h.set8(I440FX_PAM0 + i as u8, *v);
            }
        }
    }

    /// The function CONFIG_ADDRESS selects and the dword register, if enabled and on bus 0.
    fn target(&self) -> Option<(usize, u8)> {
        if self.address & ADDR_ENABLE == 0 {
            return None;
        }
        let bus = (self.address >> 16) as u8;
        let dfn = (self.address >> 8) as u8;
        let reg = (self.address as u8) & 0xFC;
        if bus != 0 {
            return None;
        }
        let idx = self.functions.iter().position(|c| c.devfn == dfn)?;
        Some((idx, reg))
    }

    /// Guest reads CONFIG_DATA: `size` bytes at byte `lane` (0-3) of the selected dword.
    fn data_read(&mut self, lane: u16, size: u8) -> u32 {
        let Some((idx, reg)) = self.target() else {
            return size_mask(size);
        };
        let Some(f) = self.functions.get_mut(idx) else {
            return size_mask(size);
        };
        let dword = f.config_read(reg);
        let lane = (lane & 3) as u32;
        // Bytes past the end of the data window (a wide access at 0xCFD-0xCFF) float high.
        let v = if lane == 0 {
            dword
        } else {
            dword >> (8 * lane) | !0u32 << (8 * (4 - lane))
        };
        v & size_mask(size)
    }

    /// Guest writes CONFIG_DATA.
    fn data_write(&mut self, lane: u16, size: u8, value: u32) {
        let Some((idx, reg)) = self.target() else {
            return;
        };
        let mut be = 0u8;
        for i in 0..size.min(4) as u16 {
            if lane + i < 4 {
                be |= 1 << (lane + i);
            }
        }
        let value = value << (8 * lane);
        let Some(f) = self.functions.get_mut(idx) else {
            return;
        };
        f.config_write(reg, value, be);
        let touches =
            |lo: u8, hi: u8| (0..4u8).any(|i| be & (1 << i) != 0 && (lo..hi).contains(&(reg + i)));
        if touches(CFG_COMMAND, CFG_COMMAND + 2)
            || touches(CFG_BAR0, 0x28)
            || touches(CFG_ROM, 0x34)
        {
            let d = f.devfn;
            if !self.changed.contains(&d) {
                self.changed.push(d);
            }
        }
    }
}

fn size_mask(size: u8) -> u32 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    }
}

impl Device for PciBus {
    fn read(&mut self, at: At, size: u8, _ctx: &mut DevCtx) -> u32 {
        let offset = at.offset as u16;
        match (offset, size) {
            // Guest reads back CONFIG_ADDRESS.
            (PORT_ADDRESS, 4) => self.address,
            // Guest reads the reset control register.
            (PORT_RESET_CONTROL, 1) => self.reset_control as u32,
            // Guest reads configuration data.
            (4..=7, _) => self.data_read(offset - PORT_DATA, size),
            // Other accesses to 0xCF8-0xCFB reach nothing.
            _ => size_mask(size),
        }
    }

    fn write(&mut self, at: At, size: u8, value: u32, ctx: &mut DevCtx) {
        let offset = at.offset as u16;
        match (offset, size) {
            // Guest selects a function and register.
            (PORT_ADDRESS, 4) => self.address = value & 0x80FF_FFFC,
            // Guest writes reset control: a 1 in bit 2 resets the CPU (bit 1 makes it a hard
            // reset; both reset the CPU here).
            (PORT_RESET_CONTROL, 1) => {
                let v = value as u8;
                if v & RC_RST_CPU != 0 {
                    ctx.board.reset = true;
                }
                self.reset_control = v & (RC_SYS_RST | RC_FULL_RST);
            }
            // Guest writes configuration data.
            (4..=7, _) => {
                self.data_write(offset - PORT_DATA, size, value);
                ctx.board.pci_config_written = true;
            }
            // Other accesses to 0xCF8-0xCFB are ignored.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Rig = crate::dev::testing::Rig<PciBus>;

    #[test]
    fn a_bus_state_with_functions_out_of_order_is_refused() {
        let mut bus = PciBus::new();
        bus.add(PciConfig::new(devfn(3, 0), 0x8086, 0x7010, 0x0101, 0x80, 0))
            .unwrap();
        bus.add(PciConfig::new(devfn(4, 0), 0x1234, 0x1111, 0x0300, 0, 0))
            .unwrap();
        assert!(PciBus::from_state(bus.state()).is_ok());
        let mut swapped = bus.state();
        let last = swapped.functions.len() - 1;
        swapped.functions.swap(last - 1, last);
        assert!(PciBus::from_state(swapped).is_err());
    }

    fn rig() -> Rig {
        Rig::new(PciBus::new(), 0xCF8)
    }

    impl Rig {
        fn io_in(&mut self, port: u16, size: u8) -> u32 {
            self.read(port - 0xCF8, size)
        }
        fn io_out(&mut self, port: u16, size: u8, v: u32) {
            self.write(port - 0xCF8, size, v)
        }
        fn addr(dev: u8, func: u8, reg: u8) -> u32 {
            ADDR_ENABLE | (dev as u32) << 11 | (func as u32) << 8 | (reg as u32 & 0xFC)
        }
        /// Read a function's configuration register through CONFIG_ADDRESS/CONFIG_DATA.
        fn config_read(&mut self, dev: u8, func: u8, reg: u8, size: u8) -> u32 {
            self.io_out(0xCF8, 4, Self::addr(dev, func, reg));
            self.io_in(0xCFC + (reg & 3) as u16, size)
        }
        /// Write a function's configuration register.
        fn config_write(&mut self, dev: u8, func: u8, reg: u8, size: u8, v: u32) {
            self.io_out(0xCF8, 4, Self::addr(dev, func, reg));
            self.io_out(0xCFC + (reg & 3) as u16, size, v)
        }
    }

    #[test]
    fn linux_style_scan_of_bus_0() {
        let mut r = rig();
        // pci_direct_probe: CONFIG_ADDRESS reads back what was written.
        r.io_out(0xCF8, 4, 0x8000_0000);
        assert_eq!(r.io_in(0xCF8, 4), 0x8000_0000);
        let mut found = Vec::new();
        for dev in 0..32u8 {
            for func in 0..8u8 {
                let id = r.config_read(dev, func, 0, 4);
                if id == 0xFFFF_FFFF {
                    if func == 0 {
                        break;
                    }
                    continue;
                }
                let class = r.config_read(dev, func, 0x08, 4) >> 8;
                let hdr = r.config_read(dev, func, 0x0E, 1) as u8;
                found.push((dev, func, id, class, hdr));
                if func == 0 && hdr & 0x80 == 0 {
                    break;
                }
            }
        }
        assert_eq!(
            found,
            [
                (0, 0, 0x1237_8086, 0x060000, 0x00),
                (1, 0, 0x7000_8086, 0x060100, 0x80),
            ]
        );
        // Word and byte reads at every offset agree with the dword.
        let d = r.config_read(0, 0, 0, 4);
        assert_eq!(r.config_read(0, 0, 2, 2), d >> 16);
        assert_eq!(r.config_read(0, 0, 3, 1), d >> 24);
        assert_eq!(r.config_read(0, 0, 1, 2), (d >> 8) & 0xFFFF);
        assert_eq!(r.config_read(0, 0, 8, 1), 0x02); // 440FX revision
                                                     // Other buses and a disabled address read all ones.

        r.io_out(0xCF8, 4, ADDR_ENABLE | 1 << 16);
        assert_eq!(r.io_in(0xCFC, 4), 0xFFFF_FFFF);
        r.io_out(0xCF8, 4, 0);
        assert_eq!(r.io_in(0xCFC, 2), 0xFFFF);
    }

    #[test]
    fn read_only_ids_and_writable_registers() {
        let mut r = rig();
        r.config_write(0, 0, 0, 4, 0);
        r.config_write(0, 0, 8, 4, 0);
        r.config_write(1, 0, 0x0E, 1, 0);
        assert_eq!(r.config_read(0, 0, 0, 4), 0x1237_8086);
        assert_eq!(r.config_read(0, 0, 8, 4), 0x0600_0002);
        assert_eq!(r.config_read(1, 0, 0x0E, 1), 0x80);
        // Interrupt line is writable, pin is not.
        r.config_write(1, 0, 0x3C, 2, 0xFF0B);
        assert_eq!(r.config_read(1, 0, 0x3C, 2), 0x000B);
        // PIIX3 PIRQ routing: default disabled; route PIRQB to IRQ 11.
        assert_eq!(r.config_read(1, 0, 0x60, 4), 0x8080_8080);
        assert_eq!(r.dev.pirq_route(1), None);
        r.config_write(1, 0, 0x61, 1, 0x0B);
        assert_eq!(r.config_read(1, 0, 0x60, 4), 0x8080_0B80);
        assert_eq!(r.dev.pirq_route(1), Some(11));
        // i440FX PAM registers.
        r.config_write(0, 0, 0x59, 1, 0x30);
        assert_eq!(r.dev.pam()[0], 0x30);
        // Writes to a missing function go nowhere.
        r.config_write(5, 0, 0x3C, 1, 0x0A);
        assert_eq!(r.config_read(5, 0, 0, 4), 0xFFFF_FFFF);
    }

    #[test]
    fn status_error_bits_are_write_one_to_clear() {
        let mut r = rig();
        r.dev
            .function_mut(0)
            .unwrap()
            .raise_status(STS_RCV_MASTER_ABORT | STS_PARITY_ERROR);
        assert_eq!(r.config_read(0, 0, 6, 2), 0xA280);
        // Writing 0 changes nothing; writing the DEVSEL bits changes nothing.
        r.config_write(0, 0, 6, 2, 0x0000);
        r.config_write(0, 0, 6, 2, 0x0200);
        assert_eq!(r.config_read(0, 0, 6, 2), 0xA280);
        // A dword write of command with status 0x2000 clears only that bit.
        r.config_write(0, 0, 4, 4, 0x2000_0006);
        assert_eq!(r.config_read(0, 0, 4, 4), 0x8280_0006);
        r.config_write(0, 0, 7, 1, 0x80);
        assert_eq!(r.config_read(0, 0, 6, 2), 0x0280);
    }

    #[test]
    fn bar_sizing_on_an_added_function() {
        let mut r = rig();
        let mut f = PciConfig::new(devfn(3, 0), 0x1234, 0x1111, 0x0300, 0, 2);
        f.set_bar(
            0,
            PciBar::Mem32 {
                size: 16 << 20,
                prefetchable: true,
            },
        );
        f.set_bar(2, PciBar::Io { size: 32 });
        f.set_interrupt_pin(1);
        r.dev.add(f.clone()).unwrap();
        assert_eq!(r.dev.add(f), Err(SlotTaken(devfn(3, 0))));
        assert_eq!(r.config_read(3, 0, 0, 4), 0x1111_1234);
        assert_eq!(r.config_read(3, 0, 0x3D, 1), 1);
        // Size probe as Linux's __pci_read_base: save, write ~0, read, restore.
        let orig = r.config_read(3, 0, 0x10, 4);
        assert_eq!(orig, 0x8);
        r.config_write(3, 0, 0x10, 4, 0xFFFF_FFFF);
        assert_eq!(r.config_read(3, 0, 0x10, 4), 0xFF00_0008);
        r.config_write(3, 0, 0x10, 4, 0xE000_0000);
        assert_eq!(r.config_read(3, 0, 0x10, 4), 0xE000_0008);
        assert_eq!(
            r.dev.function(devfn(3, 0)).unwrap().bar_address(0),
            Some(0xE000_0000)
        );
        r.config_write(3, 0, 0x18, 4, 0xFFFF_FFFF);
        assert_eq!(r.config_read(3, 0, 0x18, 4), 0xFFFF_FFE1);
        r.config_write(3, 0, 0x18, 2, 0xC041);
        assert_eq!(r.config_read(3, 0, 0x18, 4), 0xFFFF_C041 & 0xFFFF_FFE1);
        // Unimplemented BAR 1 reads zero even after all ones.
        r.config_write(3, 0, 0x14, 4, 0xFFFF_FFFF);
        assert_eq!(r.config_read(3, 0, 0x14, 4), 0);
        assert_eq!(r.dev.take_changed(), [devfn(3, 0)]);
        assert!(r.dev.take_changed().is_empty());
        r.config_write(3, 0, 4, 2, CMD_IO as u32 | CMD_MEMORY as u32);
        assert_eq!(r.dev.function(devfn(3, 0)).unwrap().command(), 3);
        assert_eq!(r.dev.take_changed(), [devfn(3, 0)]);
    }

    #[test]
    fn cf9_reset_control() {
        let mut r = rig();
        r.io_out(0xCF9, 1, RC_SYS_RST as u32);
        assert!(!r.board.reset);
        assert_eq!(r.io_in(0xCF9, 1), 0x02);
        r.io_out(0xCF9, 1, (RC_SYS_RST | RC_RST_CPU) as u32);
        assert!(r.board.reset);
        assert_eq!(r.io_in(0xCF9, 1), 0x02);
        // CONFIG_ADDRESS is not disturbed by byte accesses in its range.
        r.io_out(0xCF8, 4, 0x8000_0810);
        r.io_out(0xCFA, 1, 0xFF);
        assert_eq!(r.io_in(0xCF8, 4), 0x8000_0810);
    }

    #[test]
    fn every_offset_and_size_is_safe() {
        let mut r = rig();
        for reg in 0..=255u8 {
            for size in [1u8, 2, 4, 3, 0] {
                for lane in 0..8u16 {
                    r.io_out(0xCF8, 4, Rig::addr(1, 0, reg));
                    r.io_out(0xCF8 + lane, size, 0xFFFF_FFFF);
                    r.io_in(0xCF8 + lane, size);
                }
            }
        }
        // IDs survived.
        assert_eq!(r.config_read(1, 0, 0, 4), 0x7000_8086);
        // The state round-trips through serde.
        let json = serde_json::to_string(&r.dev).unwrap();
        let back: PciBus = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }

    #[test]
    fn pam_segments_follow_the_i440fx_register_layout() {
        let segs = pam_segments([0x10, 0x32, 0, 0, 0, 0, 0x03]);
        assert_eq!(segs[0], (0xF0000, 0x10000, 1), "PAM0 high nibble: 0xF0000");
        assert_eq!(segs[1], (0xC0000, 0x4000, 2), "PAM1 low nibble: 0xC0000");
        assert_eq!(segs[2], (0xC4000, 0x4000, 3), "PAM1 high nibble: 0xC4000");
        assert_eq!(segs[11], (0xE8000, 0x4000, 3), "PAM6 low nibble: 0xE8000");
        assert_eq!(segs[12], (0xEC000, 0x4000, 0), "PAM6 high nibble: 0xEC000");
        assert!(pam_segments(PAM_ALL_RAM).iter().all(|s| s.2 == 3));
    }
}
