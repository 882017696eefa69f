//! The VGA adapter with the Bochs VBE extensions ("std VGA", PCI 1234:1111).
//!
//! - Registers: sequencer, CRTC, graphics controller, attribute controller, DAC, misc output and
//!   the input status registers at 0x3B0-0x3DF (the CRTC and input status 1 answer at 0x3Dx or
//!   0x3Bx as misc output bit 0 says); the Bochs DISPI registers at 0x1CE/0x1CF.
//! - Memory: 16 MiB of video RAM. The 256 KiB of planar memory is its first 256 KiB, stored
//!   interleaved: plane `p` at plane offset `o` is byte `4 * o + p` (as QEMU does), so chain-4
//!   (mode 13h) and the VBE modes see the same bytes linearly. In that model an odd/even access
//!   at host offset `a` reaches plane `a & 1` at offset `a >> 1` and a chain-4 access reaches
//!   plane `a & 3` at offset `a >> 2`; the CRTC scans plane offsets.
//! - The legacy window 0xA0000-0xBFFFF and the linear framebuffer (PCI BAR0) are MMIO pages;
//!   the board routes them to [`Vga::mem_read`]/[`Vga::mem_write`] and [`Vga::lfb_read`]/
//!   [`Vga::lfb_write`]. Every LFB access is one MMIO call through the CPU's bus: simple, and
//!   fast enough for Linux's framebuffer console (a RAM-backed LFB is a later optimisation).
//! - Display: [`Vga::render`] turns the current mode into an RGBA frame ([`render`]), redrawing
//!   only lines whose video memory changed unless the display setup changed.
//!
//! The device keeps no clock: cursor and text blinking follow the frame the display shows,
//! which the host sets from virtual time when it asks for a picture ([`Vga::show_frame_at`]),
//! and the retrace bit of input status 1 toggles on every read.

mod font;
mod render;
mod text;

use crate::dev::pci::{devfn, PciBar, PciConfig};
use crate::dev::{At, DevCtx, Device, Snapshot};
use serde::{Deserialize, Serialize};

/// One frame of the display: 70 Hz, the refresh rate of the VGA's text modes (and of 320x200
/// and 640x400; 640x480 refreshes at 60 Hz, a difference no blinking shows).
pub const FRAME_NS: u64 = 1_000_000_000 / 70;

pub use render::DisplayMode;

/// Total video memory (planar memory is its first 256 KiB).
pub const VRAM_SIZE: usize = 16 << 20;
/// Bytes of the DAC palette: 256 entries of three components.
const DAC_BYTES: usize = 256 * 3;
/// The planar memory: 4 planes of 64 KiB, interleaved.
const PLANAR_SIZE: usize = 256 << 10;
/// The legacy memory window.
pub const LEGACY_BASE: u32 = 0xA0000;
pub const LEGACY_LEN: u32 = 0x20000;
/// The linear framebuffer's default address (PCI BAR0 as the board assigns it at reset).
pub const LFB_DEFAULT: u32 = 0xE000_0000;
/// The legacy register ports: 0x3B0-0x3DF.
pub const PORT_BASE: u16 = 0x3B0;
pub const PORT_LEN: u32 = 0x30;
/// The Bochs DISPI index/data ports: 0x1CE, 0x1CF.
pub const DISPI_BASE: u16 = 0x1CE;
pub const DISPI_LEN: u32 = 2;
/// Where the display function sits on PCI bus 0.
pub const PCI_DEVFN: u8 = 2 << 3;

// Register ports (absolute).
/// Attribute controller index/data write (and its flip-flop).
const AC_WRITE: u16 = 0x3C0;
/// Attribute controller data read.
const AC_READ: u16 = 0x3C1;
/// Misc output write / input status 0 read.
const MISC_WRITE: u16 = 0x3C2;
/// Sequencer index and data.
const SEQ_INDEX: u16 = 0x3C4;
const SEQ_DATA: u16 = 0x3C5;
/// DAC pixel mask.
const DAC_MASK: u16 = 0x3C6;
/// DAC read index (write) / DAC state (read).
const DAC_READ_INDEX: u16 = 0x3C7;
/// DAC write index.
const DAC_WRITE_INDEX: u16 = 0x3C8;
/// DAC data (three 6-bit components per entry).
const DAC_DATA: u16 = 0x3C9;
/// Feature control read.
const FEATURE_READ: u16 = 0x3CA;
/// Misc output read.
const MISC_READ: u16 = 0x3CC;
/// Graphics controller index and data.
const GC_INDEX: u16 = 0x3CE;
const GC_DATA: u16 = 0x3CF;
/// CRTC index/data and input status 1 in colour (0x3Dx) and mono (0x3Bx) addressing.
const CRTC_INDEX_COLOR: u16 = 0x3D4;
const CRTC_DATA_COLOR: u16 = 0x3D5;
const STATUS1_COLOR: u16 = 0x3DA;
const CRTC_INDEX_MONO: u16 = 0x3B4;
const CRTC_DATA_MONO: u16 = 0x3B5;
const STATUS1_MONO: u16 = 0x3BA;

// Misc output bits.
/// I/O address select: CRTC at 0x3Dx (colour) instead of 0x3Bx.
const MISC_COLOR: u8 = 0x01;

// Sequencer registers.
/// Clocking mode (bit 0: 8-dot characters; bit 5: screen off).
pub(crate) const SR_CLOCK: usize = 1;
/// Map mask: planes a CPU write reaches.
const SR_MAP_MASK: usize = 2;
/// Character map select.
pub(crate) const SR_CHARMAP: usize = 3;
/// Memory mode (bit 2: not odd/even; bit 3: chain-4).
const SR_MEM_MODE: usize = 4;
const SR_MEM_ODD_EVEN_OFF: u8 = 0x04;
const SR_MEM_CHAIN4: u8 = 0x08;

// Graphics controller registers.
const GR_SET_RESET: usize = 0;
const GR_ENABLE_SET_RESET: usize = 1;
const GR_COLOR_COMPARE: usize = 2;
/// Data rotate (bits 0-2) and function select (bits 3-4).
const GR_ROTATE: usize = 3;
const GR_READ_MAP: usize = 4;
/// Graphics mode (bits 0-1 write mode, bit 3 read mode, bit 4 odd/even, bits 5-6 shift mode).
pub(crate) const GR_MODE: usize = 5;
/// Miscellaneous graphics (bit 0 graphics mode, bits 2-3 memory map select).
pub(crate) const GR_MISC: usize = 6;
const GR_COLOR_DONT_CARE: usize = 7;
const GR_BIT_MASK: usize = 8;

// Attribute controller.
/// Index bit 5: palette address source (0 = the CPU owns the palette, the screen is blank).
const AC_INDEX_PAS: u8 = 0x20;

// DISPI registers.
const DISPI_ID: usize = 0;
const DISPI_XRES: usize = 1;
const DISPI_YRES: usize = 2;
const DISPI_BPP: usize = 3;
const DISPI_ENABLE: usize = 4;
const DISPI_BANK: usize = 5;
const DISPI_VIRT_WIDTH: usize = 6;
const DISPI_VIRT_HEIGHT: usize = 7;
const DISPI_X_OFFSET: usize = 8;
const DISPI_Y_OFFSET: usize = 9;
const DISPI_VIDEO_MEMORY_64K: usize = 10;
const DISPI_REGS: usize = 11;
/// The newest interface version (0xB0C0-0xB0C5 are accepted).
const DISPI_ID5: u16 = 0xB0C5;
/// ENABLE bits (bit 6, LFB enabled, changes nothing here: the LFB always decodes).
const DISPI_ENABLED: u16 = 0x01;
const DISPI_GETCAPS: u16 = 0x02;
const DISPI_NOCLEARMEM: u16 = 0x80;
/// The largest mode (the 16 MiB of VRAM hold 1600x1200x32 too; this is what GETCAPS reports).
const DISPI_MAX_XRES: u16 = 2560;
const DISPI_MAX_YRES: u16 = 1600;
const DISPI_MAX_BPP: u16 = 32;

/// Pages (4 KiB of VRAM) tracked for redraw.
const DIRTY_PAGE_SHIFT: usize = 12;
const DIRTY_WORDS: usize = (VRAM_SIZE >> DIRTY_PAGE_SHIFT) / 64;

/// Replicate the low 4 bits as byte masks: bit p set → byte p = 0xFF.
fn expand4(bits: u8) -> u32 {
    let mut v = 0;
    for p in 0..4 {
        if bits & (1 << p) != 0 {
            v |= 0xFF << (8 * p);
        }
    }
    v
}

/// The VGA adapter: its registers ([`VgaState`]), video memory, and what the renderer keeps
/// between frames.
pub struct Vga {
    /// Everything a guest set but video memory: the state a snapshot holds.
    pub(crate) regs: VgaState,
    /// Video memory.
    pub(crate) vram: Vec<u8>,
    /// Dirty 4 KiB pages of VRAM since the last render (one bit per page).
    pub(crate) dirty: Vec<u64>,
    /// Plane 2 (the font) was written since the last render. Like the dirty pages, a cache of
    /// the renderer's, not state: a restored adapter draws everything afresh.
    pub(crate) font_dirty: bool,
    /// The palette or attribute registers changed since the last render (a cache, as above).
    pub(crate) palette_dirty: bool,
    /// Rendering state (the frame and what it was drawn from).
    pub(crate) out: render::Output,
}

/// The adapter's registers and DAC (everything but video memory, which a state file holds in
/// its own section): plain data, apart from the renderer's caches.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VgaState {
    pub(crate) misc: u8,
    pub(crate) seq_index: u8,
    pub(crate) seq: [u8; 8],
    pub(crate) crtc_index: u8,
    pub(crate) crtc: [u8; 0x20],
    pub(crate) gc_index: u8,
    pub(crate) gc: [u8; 16],
    /// Attribute controller index (with the palette address source bit).
    pub(crate) ac_index: u8,
    /// The attribute flip-flop: true when the next 0x3C0 write is data.
    ac_data_next: bool,
    pub(crate) ac: [u8; 0x15],
    pub(crate) dac_mask: u8,
    dac_read_index: u8,
    dac_write_index: u8,
    /// Which component (0-2) of the current entry comes next.
    dac_component: u8,
    /// Whether the last index written was the read index (the DAC state register).
    dac_reading: bool,
    /// The palette: 256 entries of three 6-bit components.
    pub(crate) dac: Vec<u8>,
    feature: u8,
    /// Toggles on every input status 1 read so retrace-wait loops finish.
    retrace: bool,
    /// The four plane bytes read by the last CPU read (plane p in byte p).
    latch: u32,
    pub(crate) dispi_index: u16,
    pub(crate) dispi: [u16; DISPI_REGS],
    /// The frame the display shows (drives blinking): frames since power-on, at
    /// [`FRAME_NS`] each.
    pub(crate) frame: u64,
}

fn new_vram() -> Vec<u8> {
    vec![0; VRAM_SIZE]
}

fn new_dirty() -> Vec<u64> {
    vec![u64::MAX; DIRTY_WORDS]
}

/// The adapter's state is its registers; video memory travels apart (a state file compresses
/// it page by page), and the renderer's caches start over (everything is drawn afresh).
impl Snapshot for Vga {
    type State = VgaState;
    fn state(&self) -> VgaState {
        self.regs.clone()
    }
    fn from_state(regs: VgaState) -> Result<Vga, String> {
        if regs.dac.len() != DAC_BYTES || regs.dac_component > 2 {
            return Err(format!(
                "a palette of {} bytes, at component {}",
                regs.dac.len(),
                regs.dac_component
            ));
        }
        // Video memory is as at power-on until the host gives the saved one (`set_vram`).
        let mut vga = Vga::new();
        vga.regs = regs;
        Ok(vga)
    }
}

impl Default for Vga {
    fn default() -> Self {
        Self::new()
    }
}

impl Vga {
    /// Video memory (for snapshots: serialising a `Vga` leaves it out).
    pub fn vram(&self) -> &[u8] {
        &self.vram
    }

    /// Replace video memory (a snapshot restored); the next frame is drawn afresh. `vram` must
    /// be [`VRAM_SIZE`] bytes; other sizes are cut or zero-filled to it.
    pub fn set_vram(&mut self, mut vram: Vec<u8>) {
        vram.resize(VRAM_SIZE, 0);
        self.vram = vram;
        self.dirty.fill(u64::MAX);
        self.font_dirty = true;
        self.palette_dirty = true;
        self.out = render::Output::default();
    }

    /// The adapter as a BIOS leaves it after setting mode 3 (80x25 colour text, 9x16 cells),
    /// with the 8x16 CP437 font in plane 2, so a directly booted kernel has a text console.
    pub fn new() -> Vga {
        let mut v = Vga {
            regs: VgaState {
                misc: 0x67,
                seq_index: 0,
                seq: [0x03, 0x00, 0x03, 0x00, 0x02, 0, 0, 0],
                crtc_index: 0,
                crtc: [0; 0x20],
                gc_index: 0,
                gc: [0; 16],
                ac_index: AC_INDEX_PAS,
                ac_data_next: false,
                ac: [0; 0x15],
                dac_mask: 0xFF,
                dac_read_index: 0,
                dac_write_index: 0,
                dac_component: 0,
                dac_reading: false,
                dac: vec![0; DAC_BYTES],
                feature: 0,
                retrace: false,
                latch: 0,
                dispi_index: 0,
                dispi: [0; DISPI_REGS],
                frame: 0,
            },
            vram: new_vram(),
            dirty: new_dirty(),
            font_dirty: true,
            palette_dirty: true,
            out: render::Output::default(),
        };
        // Mode 3 CRTC: 80 columns, 400 scan lines of 16-line characters, cursor lines 14-15.
        const CRTC3: [u8; 25] = [
            0x5F, 0x4F, 0x50, 0x82, 0x55, 0x81, 0xBF, 0x1F, 0x00, 0x4F, 0x0D, 0x0E, 0x00, 0x00,
            0x00, 0x00, 0x9C, 0x8E, 0x8F, 0x28, 0x1F, 0x96, 0xB9, 0xA3, 0xFF,
        ];
        v.regs.crtc[..25].copy_from_slice(&CRTC3);
        const GC3: [u8; 9] = [0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x0E, 0x0F, 0xFF];
        v.regs.gc[..9].copy_from_slice(&GC3);
        const AC3: [u8; 0x15] = [
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D,
            0x3E, 0x3F, 0x0C, 0x00, 0x0F, 0x08, 0x00,
        ];
        v.regs.ac = AC3;
        // The standard 64-colour EGA palette in the first 64 DAC entries (what the attribute
        // palette above indexes), as the BIOS loads it for mode 3.
        for i in 0..64usize {
            let c = |hi: usize, lo: usize| -> u8 {
                (((i >> hi) & 1) * 0x2A + ((i >> lo) & 1) * 0x15) as u8
            };
            v.regs.dac[i * 3] = c(2, 5);
            v.regs.dac[i * 3 + 1] = c(1, 4);
            v.regs.dac[i * 3 + 2] = c(0, 3);
        }
        // The font in plane 2, 32 bytes per glyph.
        for ch in 0..256 {
            for line in 0..font::FONT_HEIGHT {
                let o = ch * 32 + line;
                v.vram[o * 4 + 2] = font::FONT_8X16[ch * font::FONT_HEIGHT + line];
            }
        }
        // Blank cells: space on light grey.
        for cell in 0..0x4000 {
            v.vram[cell * 4] = b' ';
            v.vram[cell * 4 + 1] = 0x07;
        }
        v.regs.dispi[DISPI_ID] = DISPI_ID5;
        v.regs.dispi[DISPI_XRES] = 640;
        v.regs.dispi[DISPI_YRES] = 480;
        v.regs.dispi[DISPI_BPP] = 8;
        v.regs.dispi[DISPI_VIDEO_MEMORY_64K] = (VRAM_SIZE >> 16) as u16;
        v
    }

    /// The PCI function of the adapter: 1234:1111, class 0300 (VGA compatible), BAR0 the
    /// linear framebuffer (prefetchable memory) at [`LFB_DEFAULT`], I/O and memory decoding on.
    pub fn pci_config() -> PciConfig {
        let mut f = PciConfig::new(PCI_DEVFN, 0x1234, 0x1111, 0x0300, 0, 2);
        f.set_bar(
            0,
            PciBar::Mem32 {
                size: VRAM_SIZE as u32,
                prefetchable: true,
            },
        );
        f.set32(crate::dev::pci::CFG_BAR0, LFB_DEFAULT | 0x8);
        // Command: I/O space and memory space on, as firmware leaves the boot display.
        f.set16(0x04, 0x0003);
        debug_assert_eq!(f.devfn, devfn(2, 0));
        f
    }

    // ----- video memory -----

    fn mark_dirty(&mut self, index: usize) {
        let page = index >> DIRTY_PAGE_SHIFT;
        if let Some(w) = self.dirty.get_mut(page / 64) {
            *w |= 1 << (page % 64);
        }
    }

    /// Whether any VRAM page in `[start, end)` changed since the last render.
    pub(crate) fn range_dirty(&self, start: usize, end: usize) -> bool {
        if end <= start {
            return false;
        }
        let first = start >> DIRTY_PAGE_SHIFT;
        let last = (end - 1) >> DIRTY_PAGE_SHIFT;
        (first..=last).any(|p| {
            self.dirty
                .get(p / 64)
                .is_some_and(|w| w & (1 << (p % 64)) != 0)
        })
    }

    fn vbe_enabled(&self) -> bool {
        self.regs.dispi[DISPI_ENABLE] & DISPI_ENABLED != 0
    }

    /// The window offset of legacy address `addr` under the GR6 memory map, if it decodes.
    fn window_offset(&self, addr: u32) -> Option<u32> {
        let a = addr.wrapping_sub(LEGACY_BASE);
        if a >= LEGACY_LEN {
            return None;
        }
        match (self.regs.gc[GR_MISC] >> 2) & 3 {
            0 => Some(a),
            1 => (a < 0x10000).then_some(a),
            2 => (0x10000..0x18000).contains(&a).then(|| a - 0x10000),
            _ => (0x18000..0x20000).contains(&a).then(|| a - 0x18000),
        }
    }

    /// A CPU read of one byte in the legacy window.
    pub fn mem_read_byte(&mut self, addr: u32) -> u8 {
        let Some(off) = self.window_offset(addr) else {
            return 0xFF;
        };
        if self.vbe_enabled() {
            // Banked VBE window: 64 KiB of linear VRAM.
            let i = (usize::from(self.regs.dispi[DISPI_BANK]) << 16) + (off as usize & 0xFFFF);
            return self.vram.get(i).copied().unwrap_or(0xFF);
        }
        if self.regs.seq[SR_MEM_MODE] & SR_MEM_CHAIN4 != 0 {
            return self.vram[off as usize % PLANAR_SIZE];
        }
        let (offset, odd_even) = if self.regs.gc[GR_MODE] & 0x10 != 0 {
            ((off >> 1) as usize & 0xFFFF, Some(off & 1))
        } else {
            (off as usize & 0xFFFF, None)
        };
        let b = &self.vram[offset * 4..offset * 4 + 4];
        self.regs.latch = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if let Some(lsb) = odd_even {
            let plane = (self.regs.gc[GR_READ_MAP] & 2) as u32 | lsb;
            return (self.regs.latch >> (8 * plane)) as u8;
        }
        if self.regs.gc[GR_MODE] & 0x08 == 0 {
            // Read mode 0: the plane that the read map select names.
            (self.regs.latch >> (8 * (self.regs.gc[GR_READ_MAP] & 3))) as u8
        } else {
            // Read mode 1: a bit is set where all planes that "care" match the colour compare.
            let cmp = (self.regs.latch ^ expand4(self.regs.gc[GR_COLOR_COMPARE]))
                & expand4(self.regs.gc[GR_COLOR_DONT_CARE]);
            let r = cmp | cmp >> 16;
            !((r | r >> 8) as u8)
        }
    }

    /// A CPU write of one byte in the legacy window.
    pub fn mem_write_byte(&mut self, addr: u32, value: u8) {
        let Some(off) = self.window_offset(addr) else {
            return;
        };
        if self.vbe_enabled() {
            let i = (usize::from(self.regs.dispi[DISPI_BANK]) << 16) + (off as usize & 0xFFFF);
            if let Some(b) = self.vram.get_mut(i) {
                *b = value;
                self.mark_dirty(i);
            }
            return;
        }
        let map_mask = self.regs.seq[SR_MAP_MASK] & 0x0F;
        if self.regs.seq[SR_MEM_MODE] & SR_MEM_CHAIN4 != 0 {
            let i = off as usize % PLANAR_SIZE;
            if map_mask & (1 << (i & 3)) != 0 {
                self.vram[i] = value;
                self.mark_dirty(i);
                if i & 3 == 2 {
                    self.font_dirty = true;
                }
            }
            return;
        }
        if self.regs.seq[SR_MEM_MODE] & SR_MEM_ODD_EVEN_OFF == 0 {
            // Odd/even: even addresses reach plane 0 (or 2), odd ones plane 1 (or 3).
            let plane = (off & 1) as usize;
            let offset = (off >> 1) as usize & 0xFFFF;
            for p in [plane, plane + 2] {
                if map_mask & (1 << p) != 0 {
                    let i = offset * 4 + p;
                    self.vram[i] = value;
                    self.mark_dirty(i);
                    if p == 2 {
                        self.font_dirty = true;
                    }
                }
            }
            return;
        }
        let offset = off as usize & 0xFFFF;
        let gr = &self.regs.gc;
        let rotate = |v: u8| v.rotate_right(u32::from(gr[GR_ROTATE] & 7));
        let mut bit_mask = gr[GR_BIT_MASK];
        let val: u32 = match gr[GR_MODE] & 3 {
            0 => {
                // Write mode 0: rotated data, planes with set/reset enabled take set/reset.
                let v = u32::from(rotate(value)) * 0x0101_0101;
                let en = expand4(gr[GR_ENABLE_SET_RESET]);
                (v & !en) | (expand4(gr[GR_SET_RESET]) & en)
            }
            // Write mode 1: the latches, unchanged.
            1 => self.regs.latch,
            // Write mode 2: the data's low 4 bits are a colour, one bit per plane.
            2 => expand4(value),
            _ => {
                // Write mode 3: the rotated data ANDed with the bit mask; set/reset is the colour.
                bit_mask &= rotate(value);
                expand4(gr[GR_SET_RESET])
            }
        };
        let val = if gr[GR_MODE] & 3 == 1 {
            val
        } else {
            let v = match (gr[GR_ROTATE] >> 3) & 3 {
                0 => val,
                1 => val & self.regs.latch,
                2 => val | self.regs.latch,
                _ => val ^ self.regs.latch,
            };
            let bm = u32::from(bit_mask) * 0x0101_0101;
            (v & bm) | (self.regs.latch & !bm)
        };
        let wm = expand4(map_mask);
        let i = offset * 4;
        let b = &mut self.vram[i..i + 4];
        let old = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        b.copy_from_slice(&((old & !wm) | (val & wm)).to_le_bytes());
        self.mark_dirty(i);
        if map_mask & 4 != 0 {
            self.font_dirty = true;
        }
    }

    /// An MMIO read in the legacy window (little endian, byte by byte as the VGA's 8-bit path).
    pub fn mem_read(&mut self, addr: u32, size: u8) -> u32 {
        (0..u32::from(size.clamp(1, 4))).fold(0, |v, i| {
            v | u32::from(self.mem_read_byte(addr.wrapping_add(i))) << (8 * i)
        })
    }

    /// An MMIO write in the legacy window.
    pub fn mem_write(&mut self, addr: u32, size: u8, value: u32) {
        for i in 0..u32::from(size.clamp(1, 4)) {
            self.mem_write_byte(addr.wrapping_add(i), (value >> (8 * i)) as u8);
        }
    }

    /// A read at `offset` into the linear framebuffer.
    pub fn lfb_read(&mut self, offset: u32, size: u8) -> u32 {
        let o = offset as usize;
        (0..usize::from(size.clamp(1, 4))).fold(0, |v, i| {
            v | u32::from(self.vram.get(o + i).copied().unwrap_or(0xFF)) << (8 * i)
        })
    }

    /// A write at `offset` into the linear framebuffer.
    pub fn lfb_write(&mut self, offset: u32, size: u8, value: u32) {
        let o = offset as usize;
        for i in 0..usize::from(size.clamp(1, 4)) {
            if let Some(b) = self.vram.get_mut(o + i) {
                *b = (value >> (8 * i)) as u8;
            }
        }
        self.mark_dirty(o);
        self.mark_dirty(o + 3);
    }

    /// `count` writes of `value`'s low `size` bytes into the linear framebuffer from `offset`
    /// on, as [`Vga::lfb_write`] each (bytes past the end of VRAM go nowhere).
    pub fn lfb_fill(&mut self, offset: u32, size: u8, value: u32, count: u32) {
        let size = usize::from(size.clamp(1, 4));
        let start = offset as usize;
        let end = start
            .saturating_add(size.saturating_mul(count as usize))
            .min(self.vram.len());
        if start >= end {
            return;
        }
        let pattern = value.to_le_bytes();
        for element in self.vram[start..end].chunks_mut(size) {
            element.copy_from_slice(&pattern[..element.len()]);
        }
        for page in (start >> DIRTY_PAGE_SHIFT)..=((end - 1) >> DIRTY_PAGE_SHIFT) {
            self.mark_dirty(page << DIRTY_PAGE_SHIFT);
        }
    }

    // ----- registers -----

    fn color_addressing(&self) -> bool {
        self.regs.misc & MISC_COLOR != 0
    }

    /// Read one legacy register port.
    fn reg_read(&mut self, port: u16) -> u8 {
        let color = self.color_addressing();
        match port {
            AC_WRITE => self.regs.ac_index,
            AC_READ => self
                .regs
                .ac
                .get(usize::from(self.regs.ac_index & 0x1F))
                .copied()
                .unwrap_or(0),
            // Input status 0: the switch sense bit reads as a colour monitor.
            MISC_WRITE => 0x10,
            SEQ_INDEX => self.regs.seq_index,
            SEQ_DATA => self
                .regs
                .seq
                .get(usize::from(self.regs.seq_index))
                .copied()
                .unwrap_or(0xFF),
            DAC_MASK => self.regs.dac_mask,
            // DAC state: 3 after a read index was written, 0 after a write index.
            DAC_READ_INDEX => {
                if self.regs.dac_reading {
                    3
                } else {
                    0
                }
            }
            DAC_WRITE_INDEX => self.regs.dac_write_index,
            DAC_DATA => {
                // The guest reads the palette: one component at a time, then the next entry.
                let i = usize::from(self.regs.dac_read_index) * 3
                    + usize::from(self.regs.dac_component);
                let v = self.regs.dac[i];
                self.regs.dac_component += 1;
                if self.regs.dac_component == 3 {
                    self.regs.dac_component = 0;
                    self.regs.dac_read_index = self.regs.dac_read_index.wrapping_add(1);
                }
                v
            }
            FEATURE_READ => self.regs.feature,
            MISC_READ => self.regs.misc,
            GC_INDEX => self.regs.gc_index,
            GC_DATA => self
                .regs
                .gc
                .get(usize::from(self.regs.gc_index))
                .copied()
                .unwrap_or(0xFF),
            CRTC_INDEX_COLOR if color => self.regs.crtc_index,
            CRTC_DATA_COLOR if color => self.crtc_read(),
            CRTC_INDEX_MONO if !color => self.regs.crtc_index,
            CRTC_DATA_MONO if !color => self.crtc_read(),
            STATUS1_COLOR if color => self.status1(),
            STATUS1_MONO if !color => self.status1(),
            _ => 0xFF,
        }
    }

    fn crtc_read(&self) -> u8 {
        self.regs
            .crtc
            .get(usize::from(self.regs.crtc_index))
            .copied()
            .unwrap_or(0xFF)
    }

    /// Input status 1: the guest polls retrace; reading also resets the attribute flip-flop.
    fn status1(&mut self) -> u8 {
        self.regs.ac_data_next = false;
        self.regs.retrace = !self.regs.retrace;
        // Bit 3: vertical retrace; bit 0: display disabled (true during retrace too).
        if self.regs.retrace {
            0x09
        } else {
            0x00
        }
    }

    /// Write one legacy register port.
    fn reg_write(&mut self, port: u16, v: u8) {
        let color = self.color_addressing();
        match port {
            AC_WRITE => {
                if !self.regs.ac_data_next {
                    // Guest selects an attribute register (and the palette address source).
                    if (self.regs.ac_index ^ v) & AC_INDEX_PAS != 0 {
                        self.palette_dirty = true;
                    }
                    self.regs.ac_index = v & 0x3F;
                } else if let Some(r) = self.regs.ac.get_mut(usize::from(self.regs.ac_index & 0x1F))
                {
                    *r = v;
                    self.palette_dirty = true;
                }
                self.regs.ac_data_next = !self.regs.ac_data_next;
            }
            MISC_WRITE => self.regs.misc = v,
            SEQ_INDEX => self.regs.seq_index = v & 7,
            SEQ_DATA => {
                if let Some(r) = self.regs.seq.get_mut(usize::from(self.regs.seq_index)) {
                    *r = v;
                }
            }
            DAC_MASK => {
                self.regs.dac_mask = v;
                self.palette_dirty = true;
            }
            DAC_READ_INDEX => {
                self.regs.dac_read_index = v;
                self.regs.dac_component = 0;
                self.regs.dac_reading = true;
            }
            DAC_WRITE_INDEX => {
                self.regs.dac_write_index = v;
                self.regs.dac_component = 0;
                self.regs.dac_reading = false;
            }
            DAC_DATA => {
                // The guest loads the palette: 6-bit red, green, blue, then the next entry.
                let i = usize::from(self.regs.dac_write_index) * 3
                    + usize::from(self.regs.dac_component);
                self.regs.dac[i] = v & 0x3F;
                self.palette_dirty = true;
                self.regs.dac_component += 1;
                if self.regs.dac_component == 3 {
                    self.regs.dac_component = 0;
                    self.regs.dac_write_index = self.regs.dac_write_index.wrapping_add(1);
                }
            }
            GC_INDEX => self.regs.gc_index = v & 0x0F,
            GC_DATA => {
                if let Some(r) = self.regs.gc.get_mut(usize::from(self.regs.gc_index)) {
                    *r = v;
                }
            }
            CRTC_INDEX_COLOR if color => self.regs.crtc_index = v & 0x1F,
            CRTC_DATA_COLOR if color => self.crtc_write(v),
            CRTC_INDEX_MONO if !color => self.regs.crtc_index = v & 0x1F,
            CRTC_DATA_MONO if !color => self.crtc_write(v),
            STATUS1_COLOR if color => self.regs.feature = v,
            STATUS1_MONO if !color => self.regs.feature = v,
            _ => {}
        }
    }

    fn crtc_write(&mut self, v: u8) {
        let i = usize::from(self.regs.crtc_index);
        // CR7 bit 7 (protect) locks registers 0-7 except CR7's line compare bit 4.
        if i <= 7 && self.regs.crtc[0x11] & 0x80 != 0 {
            if i == 7 {
                self.regs.crtc[7] = (self.regs.crtc[7] & !0x10) | (v & 0x10);
            }
            return;
        }
        if let Some(r) = self.regs.crtc.get_mut(i) {
            *r = v;
        }
    }

    // ----- DISPI -----

    fn dispi_read(&self) -> u16 {
        let i = usize::from(self.regs.dispi_index);
        let caps = self.regs.dispi[DISPI_ENABLE] & DISPI_GETCAPS != 0;
        match i {
            DISPI_XRES if caps => DISPI_MAX_XRES,
            DISPI_YRES if caps => DISPI_MAX_YRES,
            DISPI_BPP if caps => DISPI_MAX_BPP,
            _ => self.regs.dispi.get(i).copied().unwrap_or(0),
        }
    }

    /// Bytes per scan line of the VBE mode.
    pub(crate) fn vbe_stride(&self) -> usize {
        let bpp = usize::from(self.regs.dispi[DISPI_BPP]);
        (usize::from(self.regs.dispi[DISPI_VIRT_WIDTH]) * bpp).div_ceil(8)
    }

    fn dispi_write(&mut self, v: u16) {
        let i = usize::from(self.regs.dispi_index);
        match i {
            // Guest negotiates the interface version.
            DISPI_ID if (0xB0C0..=DISPI_ID5).contains(&v) => self.regs.dispi[DISPI_ID] = v,
            DISPI_XRES | DISPI_YRES => {
                self.regs.dispi[i] = v.min(if i == DISPI_XRES {
                    DISPI_MAX_XRES
                } else {
                    DISPI_MAX_YRES
                })
            }
            DISPI_BPP => {
                self.regs.dispi[i] = match v {
                    0 => 8,
                    4 | 8 | 15 | 16 | 24 | 32 => v,
                    _ => self.regs.dispi[i],
                }
            }
            DISPI_ENABLE => {
                let was = self.vbe_enabled();
                self.regs.dispi[DISPI_ENABLE] = v;
                if v & DISPI_ENABLED != 0 && !was {
                    // Guest switches the mode on: the virtual screen is the visible one.
                    self.regs.dispi[DISPI_VIRT_WIDTH] = self.regs.dispi[DISPI_XRES];
                    self.regs.dispi[DISPI_X_OFFSET] = 0;
                    self.regs.dispi[DISPI_Y_OFFSET] = 0;
                    self.update_virt_height();
                    if v & DISPI_NOCLEARMEM == 0 {
                        self.vram.fill(0);
                    }
                    self.dirty.fill(u64::MAX);
                    // The bank window at 0xA0000 (64 KiB, graphics), as the VBE BIOS sets it.
                    self.regs.gc[GR_MISC] = (self.regs.gc[GR_MISC] & !0x0C) | 0x05;
                }
                self.palette_dirty = true;
            }
            DISPI_BANK => {
                // Banks of 64 KiB; out-of-range banks are kept and read as all ones.
                self.regs.dispi[i] = v;
            }
            DISPI_VIRT_WIDTH => {
                self.regs.dispi[i] = v;
                self.update_virt_height();
            }
            DISPI_X_OFFSET | DISPI_Y_OFFSET => self.regs.dispi[i] = v,
            _ => {}
        }
    }

    fn update_virt_height(&mut self) {
        let stride = self.vbe_stride().max(1);
        self.regs.dispi[DISPI_VIRT_HEIGHT] = (VRAM_SIZE / stride).min(0xFFFF) as u16;
    }

    // ----- host side -----

    /// The host shows the frame of virtual time `now_ns`: the cursor blinks every 16 frames and
    /// blinking text every 32, as the CRTC counts them (at about 70 frames a second), however
    /// often the host asks for a picture. A page that asked ~120 times a second, each ask
    /// counted as a frame, blinked the cursor 4 times too fast and sent ~15 whole frames a
    /// second of a screen that did not otherwise change.
    pub fn show_frame_at(&mut self, now_ns: u64) {
        self.regs.frame = now_ns / FRAME_NS;
    }

    /// The visible text of a text mode, one string per row (trailing blanks trimmed); empty in
    /// graphics modes.
    pub fn screen_text(&self) -> Vec<String> {
        let Some(t) = render::text_layout(self) else {
            return Vec::new();
        };
        (0..t.rows)
            .map(|r| {
                let row: String = (0..t.cols)
                    .map(|c| {
                        let o = (t.start + r * t.stride + c) & 0xFFFF;
                        text::CP437[usize::from(self.vram[o * 4])]
                    })
                    .collect();
                row.trim_end().to_string()
            })
            .collect()
    }
}

/// The VGA on both buses, told apart by the base of the access: the legacy register ports at
/// [`PORT_BASE`], the DISPI index (offset 0) and data (offset 1) ports at [`DISPI_BASE`], the
/// legacy memory window at [`LEGACY_BASE`], and the linear framebuffer wherever the guest put
/// PCI BAR0. The BAR is aligned to the framebuffer's 16 MiB size and never decoded at 0, so it
/// cannot start at any of the other three.
impl Device for Vga {
    fn read(&mut self, at: At, size: u8, _ctx: &mut DevCtx) -> u32 {
        match at.base {
            PORT_WINDOW => (0..u16::from(size.clamp(1, 4))).fold(0, |v, i| {
                let port = (at.addr() as u16).wrapping_add(i);
                v | u32::from(self.reg_read(port)) << (8 * i)
            }),
            DISPI_WINDOW => match at.offset {
                0 => u32::from(self.regs.dispi_index),
                _ => u32::from(self.dispi_read()),
            },
            LEGACY_BASE => self.mem_read(at.addr(), size),
            _ => self.lfb_read(at.offset, size),
        }
    }

    fn write(&mut self, at: At, size: u8, value: u32, _ctx: &mut DevCtx) {
        match at.base {
            // A word OUT to an index port writes the index, then the data port.
            PORT_WINDOW => {
                for i in 0..u16::from(size.clamp(1, 4)) {
                    let port = (at.addr() as u16).wrapping_add(i);
                    self.reg_write(port, (value >> (8 * i)) as u8);
                }
            }
            DISPI_WINDOW => match at.offset {
                0 => self.regs.dispi_index = value as u16,
                _ => self.dispi_write(value as u16),
            },
            LEGACY_BASE => self.mem_write(at.addr(), size, value),
            _ => self.lfb_write(at.offset, size, value),
        }
    }

    /// The linear framebuffer is plain memory: a run is stored at once. The register windows
    /// and the legacy window (planes, write modes) take the writes one by one.
    fn fill(&mut self, at: At, size: u8, value: u32, count: u32, ctx: &mut DevCtx) {
        match at.base {
            PORT_WINDOW | DISPI_WINDOW | LEGACY_BASE => {
                crate::dev::fill_each(self, at, size, value, count, ctx)
            }
            _ => self.lfb_fill(at.offset, size, value, count),
        }
    }
}

/// [`PORT_BASE`] and [`DISPI_BASE`] as bus addresses.
const PORT_WINDOW: u32 = PORT_BASE as u32;
const DISPI_WINDOW: u32 = DISPI_BASE as u32;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::testing::at_power_on;

    #[test]
    fn a_run_into_the_framebuffer_stores_what_its_writes_one_by_one_would() {
        let end = VRAM_SIZE as u32;
        let value = 0xA1B2_C3D4;
        for (offset, size, count) in [
            (0x1001, 1u8, 5000u32),
            (0x3FFE, 2, 3),
            (0x10, 4, 0x800),
            (end - 6, 4, 4),
            (end + 8, 4, 2),
            (0x2000, 4, 0),
        ] {
            let (mut run, mut stores) = (Vga::new(), Vga::new());
            run.dirty.fill(0);
            stores.dirty.fill(0);
            run.lfb_fill(offset, size, value, count);
            for k in 0..count {
                stores.lfb_write(offset + k * u32::from(size), size, value);
            }
            let case = format!("{count} x {size} bytes at {offset:#x}");
            assert!(run.vram == stores.vram, "{case}");
            // Every page written is dirty, and none the stores would not have marked.
            let written = (offset as usize)
                ..(offset as usize + usize::from(size) * count as usize).min(VRAM_SIZE);
            for page in written
                .clone()
                .step_by(1 << DIRTY_PAGE_SHIFT)
                .chain(written.clone().last())
            {
                assert!(run.range_dirty(page, page + 1), "{case}: {page:#x}");
            }
            for (r, s) in run.dirty.iter().zip(&stores.dirty) {
                assert_eq!(r & !s, 0, "{case}");
            }
        }
    }

    #[test]
    fn the_state_is_the_registers_and_a_palette_of_another_size_is_refused() {
        let mut v = Vga::new();
        out(&mut v, 0x3C8, 1, 5);
        out(&mut v, 0x3C9, 1, 0x2A);
        let state = v.state();
        let back = Vga::from_state(state.clone()).unwrap();
        assert_eq!(back.regs.dac[15], 0x2A);
        assert_eq!(back.regs.dac_component, 1);
        let mut short = state.clone();
        short.dac.truncate(700);
        assert!(Vga::from_state(short).is_err());
        let mut component = state;
        component.dac_component = 3;
        assert!(Vga::from_state(component).is_err());
    }

    fn out(v: &mut Vga, port: u16, size: u8, value: u32) {
        let base = if port >= PORT_BASE {
            PORT_BASE
        } else {
            DISPI_BASE
        };
        let at = At::new(base.into(), (port - base).into());
        at_power_on(|ctx| v.write(at, size, value, ctx));
    }

    fn inp(v: &mut Vga, port: u16) -> u32 {
        let at = At::new(PORT_WINDOW, (port - PORT_BASE).into());
        at_power_on(|ctx| v.read(at, 1, ctx))
    }

    #[test]
    fn power_on_is_80x25_colour_text_with_a_font() {
        let mut v = Vga::new();
        v.mem_write(0xB8000, 2, 0x1F00 | u32::from(b'A'));
        v.mem_write(0xB8002, 1, 0xC9);
        let text = v.screen_text();
        assert_eq!(text.len(), 25);
        assert_eq!(text[0], "A╔");
        assert!(v.render());
        assert_eq!((v.width(), v.height()), (720, 400));
        // Row 4 of the glyph 'A' (0x6C: .XX.XX..), in white on blue.
        let px = |v: &Vga, x: usize, y: usize| {
            let i = (y * 720 + x) * 4;
            <[u8; 4]>::try_from(&v.framebuffer()[i..i + 4]).unwrap()
        };
        assert_eq!(px(&v, 0, 4), [0, 0, 170, 255]);
        assert_eq!(px(&v, 1, 4), [255, 255, 255, 255]);
        // 0xC9 is a line-graphics character: its 9th column repeats the 8th, and some rows of
        // it reach the right edge.
        assert!((0..16).all(|y| px(&v, 9 + 8, y) == px(&v, 9 + 7, y)));
        assert!((0..16).any(|y| px(&v, 9 + 8, y) == [170, 170, 170, 255]));
        assert!(!v.render(), "nothing changed");
        v.mem_write(0xB8000 + 160 * 3, 1, u32::from(b'x'));
        assert!(v.render(), "a written row is redrawn");
    }

    #[test]
    fn the_cursor_blinks_with_virtual_time_not_with_how_often_the_host_asks() {
        let mut v = Vga::new();
        v.show_frame_at(0);
        assert!(v.render());
        let shown = v.framebuffer().to_vec();
        // Asked 100 times within the first 8 frames (the cursor's on phase): nothing changes.
        for k in 1..100 {
            v.show_frame_at(k * FRAME_NS * 8 / 100);
            assert!(!v.render(), "ask {k}");
        }
        // The off phase: the cursor's cell is drawn without it.
        v.show_frame_at(8 * FRAME_NS);
        assert!(v.render());
        let hidden = v.framebuffer().to_vec();
        assert_ne!(shown, hidden);
        // 16 frames (229 ms) after power-on it shows again.
        v.show_frame_at(16 * FRAME_NS + 1);
        assert!(v.render());
        assert_eq!(v.framebuffer(), &shown[..]);
        // What blinking redraws (only the rows it changes) is what a whole new picture shows:
        // the cursor moved to row 7 and blinking text on row 12, in both blink phases.
        let cursor_and_blinking_text = |v: &mut Vga| {
            v.mem_write(0xB8000 + 160 * 12 + 20, 2, 0x9E00 | u32::from(b'B'));
            out(v, 0x3D4, 1, 0x0E);
            out(v, 0x3D5, 1, 0x02);
            out(v, 0x3D4, 1, 0x0F);
            out(v, 0x3D5, 1, 0x3A);
        };
        cursor_and_blinking_text(&mut v);
        for frame in [16, 24, 32, 40, 48] {
            let now = frame * FRAME_NS;
            v.show_frame_at(now);
            v.render();
            let mut whole = Vga::new();
            cursor_and_blinking_text(&mut whole);
            whole.show_frame_at(now);
            whole.render();
            assert!(v.framebuffer() == whole.framebuffer(), "frame {frame}");
        }
    }

    #[test]
    fn attribute_flip_flop_resets_on_status_read() {
        let mut v = Vga::new();
        out(&mut v, 0x3C0, 1, 0x01); // index 1
        inp(&mut v, 0x3DA); // reset: next write is an index again
        out(&mut v, 0x3C0, 1, 0x32); // index 0x12 with PAS
        out(&mut v, 0x3C0, 1, 0x05); // data
        assert_eq!(v.regs.ac[0x12], 0x05);
        assert_eq!(v.regs.ac[1], 0x01);
        assert_eq!(inp(&mut v, 0x3C0), 0x32);
    }

    #[test]
    fn dac_reads_and_writes_through_separate_indices() {
        let mut v = Vga::new();
        out(&mut v, 0x3C8, 1, 0x40);
        for c in [1, 2, 3, 4, 5, 0xFF] {
            out(&mut v, 0x3C9, 1, c);
        }
        out(&mut v, 0x3C7, 1, 0x40);
        assert_eq!(inp(&mut v, 0x3C7), 3);
        let got: Vec<u32> = (0..6).map(|_| inp(&mut v, 0x3C9)).collect();
        assert_eq!(got, [1, 2, 3, 4, 5, 0x3F]);
        assert_eq!(inp(&mut v, 0x3C8), 0x42);
    }

    #[test]
    fn crtc_follows_misc_output_addressing() {
        let mut v = Vga::new();
        out(&mut v, 0x3D4, 2, 0x120E); // cursor high = 0x12 (colour addressing)
        assert_eq!(v.regs.crtc[0x0E], 0x12);
        out(&mut v, 0x3B4, 2, 0x340E); // mono port: ignored
        assert_eq!(v.regs.crtc[0x0E], 0x12);
        out(&mut v, 0x3C2, 1, 0x66); // mono addressing
        out(&mut v, 0x3B4, 2, 0x340E);
        assert_eq!(v.regs.crtc[0x0E], 0x34);
    }

    #[test]
    fn any_guest_input_is_harmless() {
        let mut v = Vga::new();
        let mut x: u32 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for i in 0..200_000u32 {
            let r = next();
            let size = [1, 2, 4][(r % 3) as usize];
            match r >> 28 {
                0..=7 => {
                    let port = if r & 0x100 != 0 {
                        DISPI_BASE + (r as u16 & 1)
                    } else {
                        PORT_BASE + (next() % PORT_LEN) as u16
                    };
                    out(&mut v, port, size, next());
                    if port >= PORT_BASE {
                        inp(&mut v, port);
                    }
                }
                8..=11 => {
                    let a = LEGACY_BASE.wrapping_add(next() % 0x2_0010).wrapping_sub(8);
                    v.mem_write(a, size, next());
                    v.mem_read(a, size);
                }
                _ => {
                    let o = next();
                    v.lfb_write(o, size, next());
                    v.lfb_read(o, size);
                }
            }
            if i % 5000 == 0 {
                v.render();
                v.screen_text();
                v.show_frame_at(u64::from(i) * 1_000_000);
            }
        }
        v.render();
    }
}
