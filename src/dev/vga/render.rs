//! Rendering the display into an RGBA frame.
//!
//! Each [`Vga::render`] works out the display layout from the registers (mode, size, start
//! address, line offset, line compare, panning, cursor, blink phase). If the layout, the
//! palette or (in text modes) the font changed, the whole frame is redrawn; otherwise only the
//! lines (text rows) whose video memory pages were written since the last render.

use super::*;

/// What the display shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DisplayMode {
    /// Nothing (screen off, or the palette is owned by the CPU).
    #[default]
    Blank,
    /// Character cells with a font from plane 2.
    Text,
    /// 16 colours from four bit planes (modes 0Dh-12h).
    Planar16,
    /// 256 colours, one byte per pixel across the planes (mode 13h, chained or unchained).
    Color256,
    /// A Bochs VBE mode at `bpp` bits per pixel.
    Vbe { bpp: u16 },
}

/// Everything that decides what the frame looks like apart from memory and palette contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Layout {
    mode: DisplayMode,
    width: usize,
    height: usize,
    /// First plane offset (VBE: byte offset) shown.
    start: usize,
    /// Plane offsets (VBE: bytes) per row of characters or pixels.
    stride: usize,
    /// Text: cell size, grid, cursor (row, column, first line, last line) and blink phases.
    char_w: usize,
    char_h: usize,
    cols: usize,
    rows: usize,
    cursor: Option<(usize, usize, usize, usize)>,
    blink_on: bool,
    /// Graphics: raw scan lines per output line, line compare (in output lines), pixel pan.
    line_compare: usize,
    pan: usize,
    pan_reset_at_compare: bool,
}

/// The rendered frame and what it was rendered from.
#[derive(Clone, Debug, Default)]
pub(crate) struct Output {
    fb: Vec<u8>,
    width: usize,
    height: usize,
    last: Option<Layout>,
}

/// The text grid for the screen reader.
pub(crate) struct TextLayout {
    pub start: usize,
    pub stride: usize,
    pub cols: usize,
    pub rows: usize,
}

fn vertical_display_end(v: &Vga) -> usize {
    let c = &v.regs.crtc;
    usize::from(c[0x12]) | usize::from(c[7] & 0x02) << 7 | usize::from(c[7] & 0x40) << 3
}

fn start_address(v: &Vga) -> usize {
    usize::from(v.regs.crtc[0x0C]) << 8 | usize::from(v.regs.crtc[0x0D])
}

/// The text grid, if the adapter is in a text mode.
pub(crate) fn text_layout(v: &Vga) -> Option<TextLayout> {
    if v.vbe_enabled() || v.regs.gc[GR_MISC] & 1 != 0 {
        return None;
    }
    let char_h = usize::from(v.regs.crtc[9] & 0x1F) + 1;
    Some(TextLayout {
        start: start_address(v),
        stride: usize::from(v.regs.crtc[0x13]) * 2,
        cols: usize::from(v.regs.crtc[1]) + 1,
        rows: (vertical_display_end(v) + 1) / char_h,
    })
}

fn layout(v: &Vga) -> Layout {
    let mut l = Layout::default();
    if v.vbe_enabled() {
        let bpp = v.regs.dispi[DISPI_BPP];
        let bytes = usize::from(bpp).div_ceil(8);
        l.mode = DisplayMode::Vbe { bpp };
        l.width = usize::from(v.regs.dispi[DISPI_XRES]);
        l.height = usize::from(v.regs.dispi[DISPI_YRES]);
        l.stride = v.vbe_stride();
        l.start = usize::from(v.regs.dispi[DISPI_Y_OFFSET]) * l.stride
            + usize::from(v.regs.dispi[DISPI_X_OFFSET]) * bytes;
        return l;
    }
    if v.regs.ac_index & AC_INDEX_PAS == 0 || v.regs.seq[SR_CLOCK] & 0x20 != 0 {
        return l;
    }
    let raw_height = vertical_display_end(v) + 1;
    let chars = usize::from(v.regs.crtc[1]) + 1;
    l.start = start_address(v);
    l.stride = usize::from(v.regs.crtc[0x13]) * 2;
    if let Some(t) = text_layout(v) {
        l.mode = DisplayMode::Text;
        l.char_w = if v.regs.seq[SR_CLOCK] & 1 != 0 { 8 } else { 9 };
        l.char_h = usize::from(v.regs.crtc[9] & 0x1F) + 1;
        l.cols = t.cols;
        l.rows = t.rows;
        l.width = l.cols * l.char_w;
        l.height = l.rows * l.char_h;
        l.blink_on = (v.regs.frame / 16).is_multiple_of(2);
        let cursor_on = (v.regs.frame / 8).is_multiple_of(2);
        let loc = usize::from(v.regs.crtc[0x0E]) << 8 | usize::from(v.regs.crtc[0x0F]);
        let (first, last) = (
            usize::from(v.regs.crtc[0x0A] & 0x1F),
            usize::from(v.regs.crtc[0x0B] & 0x1F),
        );
        if cursor_on && v.regs.crtc[0x0A] & 0x20 == 0 && first <= last && l.stride > 0 {
            let rel = loc.wrapping_sub(l.start);
            let (r, c) = (rel / l.stride, rel % l.stride);
            if r < l.rows && c < l.cols {
                l.cursor = Some((r, c, first, last.min(l.char_h - 1)));
            }
        }
        return l;
    }
    let rep =
        (usize::from(v.regs.crtc[9] & 0x1F) + 1) * if v.regs.crtc[9] & 0x80 != 0 { 2 } else { 1 };
    l.height = raw_height / rep;
    let lc_raw = usize::from(v.regs.crtc[0x18])
        | usize::from(v.regs.crtc[7] & 0x10) << 4
        | usize::from(v.regs.crtc[9] & 0x40) << 3;
    l.line_compare = lc_raw.div_ceil(rep);
    l.pan_reset_at_compare = v.regs.ac[0x10] & 0x20 != 0;
    if v.regs.gc[GR_MODE] & 0x40 != 0 || v.regs.ac[0x10] & 0x40 != 0 {
        l.mode = DisplayMode::Color256;
        l.width = chars * 4;
        l.pan = usize::from(v.regs.ac[0x13] >> 1 & 3);
    } else {
        l.mode = DisplayMode::Planar16;
        l.width = chars * 8;
        l.pan = usize::from(v.regs.ac[0x13] & 7);
    }
    l
}

/// 8-bit RGBA of DAC entry `i`.
fn dac_rgba(v: &Vga, i: u8) -> [u8; 4] {
    let i = usize::from(i & v.regs.dac_mask) * 3;
    let c = |x: u8| (x << 2) | (x >> 4);
    [
        c(v.regs.dac[i]),
        c(v.regs.dac[i + 1]),
        c(v.regs.dac[i + 2]),
        0xFF,
    ]
}

/// The DAC index a 4-bit colour goes to through the attribute palette.
fn attr_color(v: &Vga, color: u8) -> u8 {
    let p = v.regs.ac[usize::from(color & v.regs.ac[0x12] & 0x0F)];
    let sel = v.regs.ac[0x14];
    let low = if v.regs.ac[0x10] & 0x80 != 0 {
        (p & 0x0F) | (sel & 3) << 4
    } else {
        p & 0x3F
    };
    low | (sel & 0x0C) << 4
}

fn put(fb: &mut [u8], i: usize, c: [u8; 4]) {
    if let Some(px) = fb.get_mut(i * 4..i * 4 + 4) {
        px.copy_from_slice(&c);
    }
}

impl Vga {
    /// Width of the rendered frame in pixels.
    pub fn width(&self) -> usize {
        self.out.width
    }

    /// Height of the rendered frame in pixels.
    pub fn height(&self) -> usize {
        self.out.height
    }

    /// The rendered frame: `width * height` RGBA pixels, row by row.
    pub fn framebuffer(&self) -> &[u8] {
        &self.out.fb
    }

    /// What the display currently shows.
    pub fn display_mode(&self) -> DisplayMode {
        layout(self).mode
    }

    /// Bring the frame up to date. Returns whether any pixel may have changed.
    pub fn render(&mut self) -> bool {
        let mut l = layout(self);
        // Cap the frame at what the VBE limits allow, so no guest setting allocates more.
        l.width = l.width.min(usize::from(DISPI_MAX_XRES));
        l.height = l.height.min(usize::from(DISPI_MAX_YRES));
        // Blinking alone (the cursor, blinking text) redraws only the rows it changes: a text
        // screen would otherwise be drawn whole eight times a second.
        let last = self.out.last;
        let blinking_apart = last.map(|p| Layout {
            cursor: l.cursor,
            blink_on: l.blink_on,
            ..p
        });
        let mut full = blinking_apart != Some(l) || self.palette_dirty;
        if l.mode == DisplayMode::Text && self.font_dirty {
            full = true;
        }
        if self.out.width != l.width || self.out.height != l.height {
            self.out.width = l.width;
            self.out.height = l.height;
            self.out.fb = vec![0; l.width * l.height * 4];
            full = true;
        }
        let mut fb = std::mem::take(&mut self.out.fb);
        let changed = match l.mode {
            DisplayMode::Blank => {
                if full {
                    fb.chunks_exact_mut(4)
                        .for_each(|p| p.copy_from_slice(&[0, 0, 0, 0xFF]));
                }
                full
            }
            DisplayMode::Text => self.render_text(&l, last.as_ref(), &mut fb, full),
            DisplayMode::Planar16 | DisplayMode::Color256 => {
                self.render_graphics(&l, &mut fb, full)
            }
            DisplayMode::Vbe { bpp } => self.render_vbe(&l, bpp, &mut fb, full),
        };
        self.out.fb = fb;
        self.out.last = Some(l);
        self.dirty.fill(0);
        self.font_dirty = false;
        self.palette_dirty = false;
        changed
    }

    /// Draw the rows of text whose memory changed (all of them if `full`), and the rows where
    /// blinking changed since `last` (the frame drawn before, of the same layout but for its
    /// blink phases).
    fn render_text(&self, l: &Layout, last: Option<&Layout>, fb: &mut [u8], full: bool) -> bool {
        let pal: Vec<[u8; 4]> = (0..16)
            .map(|c| dac_rgba(self, attr_color(self, c)))
            .collect();
        let blink_enabled = self.regs.ac[0x10] & 0x08 != 0;
        let line_graphics = self.regs.ac[0x10] & 0x04 != 0;
        let cm = self.regs.seq[SR_CHARMAP];
        let map_off = |n: u8| (usize::from(n & 3) * 2 + usize::from(n >> 2)) * 0x2000;
        let map_a = map_off((cm >> 2 & 3) | (cm >> 3 & 4));
        let map_b = map_off((cm & 3) | (cm >> 2 & 4));
        let cursor_row = |l: &Layout| l.cursor.map(|(r, ..)| r);
        let cursor_moved = last.is_some_and(|p| p.cursor != l.cursor);
        let blink_flipped = blink_enabled && last.is_some_and(|p| p.blink_on != l.blink_on);
        let mut changed = false;
        for r in 0..l.rows {
            let first = l.start + r * l.stride;
            let wraps = (first & 0xFFFF) + l.cols > 0x10000;
            let blinks = || {
                cursor_moved && (cursor_row(l) == Some(r) || last.and_then(cursor_row) == Some(r))
                    || blink_flipped
                        && (0..l.cols)
                            .any(|c| self.vram[((first + c) & 0xFFFF) * 4 + 1] & 0x80 != 0)
            };
            if !full
                && !wraps
                && !self.range_dirty((first & 0xFFFF) * 4, ((first & 0xFFFF) + l.cols) * 4)
                && !blinks()
            {
                continue;
            }
            changed = true;
            for c in 0..l.cols {
                let o = (first + c) & 0xFFFF;
                let ch = self.vram[o * 4];
                let attr = self.vram[o * 4 + 1];
                let mut fg = pal[usize::from(attr & 0x0F)];
                let bg = if blink_enabled {
                    if attr & 0x80 != 0 && !l.blink_on {
                        fg = pal[usize::from(attr >> 4 & 7)];
                    }
                    pal[usize::from(attr >> 4 & 7)]
                } else {
                    pal[usize::from(attr >> 4)]
                };
                let map = if attr & 0x08 != 0 { map_a } else { map_b };
                let glyph = map + usize::from(ch) * 32;
                let cursor = l.cursor.filter(|&(cr, cc, _, _)| cr == r && cc == c);
                for y in 0..l.char_h {
                    let mut bits = u16::from(self.vram[((glyph + y) & 0xFFFF) * 4 + 2]) << 1;
                    if l.char_w == 9 && line_graphics && (0xC0..=0xDF).contains(&ch) {
                        bits |= bits >> 1 & 1;
                    }
                    if cursor.is_some_and(|(_, _, a, b)| (a..=b).contains(&y)) {
                        bits = 0x1FF;
                    }
                    let row = (r * l.char_h + y) * l.width + c * l.char_w;
                    for x in 0..l.char_w {
                        let on = bits & (0x100 >> x) != 0;
                        put(fb, row + x, if on { fg } else { bg });
                    }
                }
            }
        }
        changed
    }

    fn render_graphics(&self, l: &Layout, fb: &mut [u8], full: bool) -> bool {
        let color256 = l.mode == DisplayMode::Color256;
        let pal: Vec<[u8; 4]> = if color256 {
            (0..=255).map(|c| dac_rgba(self, c)).collect()
        } else {
            (0..16)
                .map(|c| dac_rgba(self, attr_color(self, c)))
                .collect()
        };
        let mut changed = false;
        for y in 0..l.height {
            let (addr, pan) = if y >= l.line_compare {
                let pan = if l.pan_reset_at_compare { 0 } else { l.pan };
                ((y - l.line_compare) * l.stride, pan)
            } else {
                (l.start + y * l.stride, l.pan)
            };
            // Plane offsets this line reads (one more for panning).
            let n = if color256 { l.width / 4 } else { l.width / 8 } + 1;
            let a0 = addr & 0xFFFF;
            if !full && a0 + n <= 0x10000 && !self.range_dirty(a0 * 4, (a0 + n) * 4) {
                continue;
            }
            changed = true;
            let row = y * l.width;
            for x in 0..l.width {
                let px = x + pan;
                let c = if color256 {
                    let o = (addr + px / 4) & 0xFFFF;
                    pal[usize::from(self.vram[o * 4 + px % 4])]
                } else {
                    let o = (addr + px / 8) & 0xFFFF;
                    let bit = 7 - px % 8;
                    let mut idx = 0;
                    for p in 0..4 {
                        idx |= (self.vram[o * 4 + p] >> bit & 1) << p;
                    }
                    pal[usize::from(idx)]
                };
                put(fb, row + x, c);
            }
        }
        changed
    }

    fn render_vbe(&self, l: &Layout, bpp: u16, fb: &mut [u8], full: bool) -> bool {
        let bytes = usize::from(bpp).div_ceil(8).max(1);
        let pal: Vec<[u8; 4]> = if bytes == 1 {
            (0..=255).map(|c| dac_rgba(self, c)).collect()
        } else {
            Vec::new()
        };
        let mut changed = false;
        for y in 0..l.height {
            let line = l.start + y * l.stride;
            let end = line + l.width * bytes;
            if !full && !self.range_dirty(line, end) {
                continue;
            }
            changed = true;
            let src = self.vram.get(line..end.min(VRAM_SIZE)).unwrap_or(&[]);
            let row = &mut fb[y * l.width * 4..(y + 1) * l.width * 4];
            for (x, px) in row.chunks_exact_mut(4).enumerate() {
                let Some(s) = src.get(x * bytes..x * bytes + bytes) else {
                    px.copy_from_slice(&[0, 0, 0, 0xFF]);
                    continue;
                };
                let c = match bpp {
                    32 | 24 => [s[2], s[1], s[0], 0xFF],
                    16 => {
                        let w = u16::from_le_bytes([s[0], s[1]]);
                        let (r, g, b) = ((w >> 11) as u8, (w >> 5 & 0x3F) as u8, (w & 0x1F) as u8);
                        [r << 3 | r >> 2, g << 2 | g >> 4, b << 3 | b >> 2, 0xFF]
                    }
                    15 => {
                        let w = u16::from_le_bytes([s[0], s[1]]);
                        let (r, g, b) = (
                            (w >> 10 & 0x1F) as u8,
                            (w >> 5 & 0x1F) as u8,
                            (w & 0x1F) as u8,
                        );
                        [r << 3 | r >> 2, g << 3 | g >> 2, b << 3 | b >> 2, 0xFF]
                    }
                    _ => pal[usize::from(s[0])],
                };
                px.copy_from_slice(&c);
            }
        }
        changed
    }
}
