//! The display at exit: `--screen-text` prints the VGA text screen, `--screenshot` writes a PNG.

use std::io::Write;
use std::path::Path;
use wasm86::machine::Machine;

/// Print the text-mode screen on stdout (nothing in graphics modes), framed by marker lines.
pub fn print_text(machine: &Machine) {
    let rows = machine.board().vga.borrow().screen_text();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\r\n----- screen -----\r");
    for r in rows {
        let _ = writeln!(out, "{r}\r");
    }
    let _ = writeln!(out, "------------------\r");
}

/// Render the display and write it to `path` as an RGBA PNG.
pub fn write_png(machine: &Machine, path: &Path) -> Result<(), String> {
    let vga = machine.board().vga.clone();
    let mut vga = vga.borrow_mut();
    vga.render();
    let (w, h) = (vga.width() as u32, vga.height() as u32);
    let err = |e: &dyn std::fmt::Display| format!("screenshot {}: {e}", path.display());
    if w == 0 || h == 0 {
        return Err(err(&"the display is blank (no mode set)"));
    }
    let file = std::fs::File::create(path).map_err(|e| err(&e))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(|e| err(&e))?;
    writer
        .write_image_data(vga.framebuffer())
        .map_err(|e| err(&e))?;
    writer.finish().map_err(|e| err(&e))
}
