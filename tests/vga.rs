//! VGA tests: small real-mode guest programs (assembled with nasm at test time) program the
//! registers the way a BIOS or a demo does and draw known patterns; the rendered RGBA frame
//! must match the expected pixels exactly. And the bundled Linux on the VGA text console
//! (vgacon): the screen shows what the serial console shows.
//!
//! nasm is required (as for tests/guest_programs.rs). The Linux test runs about a billion
//! instructions: run it with `cargo test --release --test vga`.

#![cfg(not(target_arch = "wasm32"))]

use std::path::{Path, PathBuf};
use std::process::Command;
use wasm86::cpu::{SegCache, Segment, ESP};
use wasm86::dev::vga::DisplayMode;
use wasm86::machine::{Machine, MachineConfig, Stop};

/// Register-setting prologue shared by the programs: loads misc output, sequencer, CRTC
/// (after clearing the CR11 protect bit), graphics controller and attribute controller from
/// tables `misc`, `seq` (5), `crtc` (25), `gc` (9), `ac` (21) that the program defines.
const PROLOGUE: &str = r"
bits 16
org 0x7C00
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7000
    mov dx, 0x3C2
    mov al, [misc]
    out dx, al
    mov dx, 0x3C4
    mov si, seq
    mov cx, 5
    xor bl, bl
.seq:
    mov al, bl
    mov ah, [si]
    out dx, ax
    inc si
    inc bl
    loop .seq
    mov dx, 0x3D4
    mov ax, 0x0E11          ; CR11: clear the protect bit
    out dx, ax
    mov si, crtc
    mov cx, 25
    xor bl, bl
.crtc:
    mov al, bl
    mov ah, [si]
    out dx, ax
    inc si
    inc bl
    loop .crtc
    mov dx, 0x3CE
    mov si, gc
    mov cx, 9
    xor bl, bl
.gc:
    mov al, bl
    mov ah, [si]
    out dx, ax
    inc si
    inc bl
    loop .gc
    mov dx, 0x3DA
    in al, dx               ; reset the attribute flip-flop
    mov dx, 0x3C0
    mov si, ac
    mov cx, 21
    xor bl, bl
.ac:
    mov al, bl
    out dx, al
    mov al, [si]
    out dx, al
    inc si
    inc bl
    loop .ac
    mov al, 0x20            ; palette address source: the display owns the palette again
    out dx, al
";

const MODE13_TABLES: &str = r"
misc: db 0x63
seq:  db 0x03, 0x01, 0x0F, 0x00, 0x0E
crtc: db 0x5F, 0x4F, 0x50, 0x82, 0x54, 0x80, 0xBF, 0x1F, 0x00, 0x41, 0x00, 0x00, 0x00
      db 0x00, 0x00, 0x00, 0x9C, 0x0E, 0x8F, 0x28, 0x40, 0x96, 0xB9, 0xA3, 0xFF
gc:   db 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x05, 0x0F, 0xFF
ac:   db 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C
      db 0x0D, 0x0E, 0x0F, 0x41, 0x00, 0x0F, 0x00, 0x00
";

const MODE12_TABLES: &str = r"
misc: db 0xE3
seq:  db 0x03, 0x01, 0x0F, 0x00, 0x06
crtc: db 0x5F, 0x4F, 0x50, 0x82, 0x54, 0x80, 0x0B, 0x3E, 0x00, 0x40, 0x00, 0x00, 0x00
      db 0x00, 0x00, 0x00, 0xEA, 0x0C, 0xDF, 0x28, 0x00, 0xE7, 0x04, 0xE3, 0xFF
gc:   db 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x0F, 0xFF
ac:   db 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3A, 0x3B, 0x3C
      db 0x3D, 0x3E, 0x3F, 0x01, 0x00, 0x0F, 0x00, 0x00
";

/// Assemble `source` with nasm into a flat binary.
fn assemble(name: &str, source: &str) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vga");
    std::fs::create_dir_all(&dir).expect("create the output directory");
    let src = dir.join(format!("{name}.asm"));
    let bin = dir.join(format!("{name}.bin"));
    std::fs::write(&src, source).expect("write the source");
    let out = Command::new("nasm")
        .args(["-f", "bin", "-Werror", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run nasm ({e}); `apt-get install -y nasm`"));
    assert!(
        out.status.success(),
        "nasm failed on {name}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&bin).expect("read the binary")
}

/// Run a program at 0000:7C00 on a fresh machine until it halts (with interrupts off).
fn run(name: &str, source: &str) -> Machine {
    let code = assemble(name, source);
    let mut m = Machine::new(MachineConfig {
        ram_bytes: 2 << 20,
        ..MachineConfig::default()
    });
    m.cpu.mem.load(0x7C00, &code);
    m.cpu.segs[Segment::CS as usize] = SegCache::real(0);
    m.cpu.eip = 0x7C00;
    m.cpu.regs[ESP] = 0x7000;
    let stop = m.run(5_000_000);
    assert!(
        matches!(stop, Stop::Idle { .. }),
        "{name} did not halt: {stop:?} at eip {:#x}",
        m.cpu.eip
    );
    m
}

/// What the display shows and the frame's size.
fn frame(m: &Machine) -> (DisplayMode, usize, usize) {
    let vga = m.board().vga.clone();
    let vga = vga.borrow();
    (vga.display_mode(), vga.width(), vga.height())
}

/// Read guest physical memory.
fn phys(m: &mut Machine, addr: u32, size: u8) -> u32 {
    let cpu = &mut m.cpu;
    cpu.mem.read_phys(&mut *cpu.bus, addr, size)
}

/// The RGBA pixel at (x, y) of the rendered frame.
fn pixel(m: &Machine, x: usize, y: usize) -> [u8; 4] {
    let vga = m.board().vga.clone();
    let vga = vga.borrow();
    let i = (y * vga.width() + x) * 4;
    vga.framebuffer()[i..i + 4].try_into().unwrap()
}

const RED: [u8; 4] = [255, 0, 0, 255];
const GREEN: [u8; 4] = [0, 255, 0, 255];
const BLUE: [u8; 4] = [0, 0, 255, 255];
const WHITE: [u8; 4] = [255, 255, 255, 255];
const BLACK: [u8; 4] = [0, 0, 0, 255];

#[test]
fn mode_13h_draws_256_colour_pixels_through_the_dac() {
    let src = format!(
        r"{PROLOGUE}
    mov dx, 0x3C8           ; DAC entries 0x10-0x13: red, green, blue, white
    mov al, 0x10
    out dx, al
    inc dx
    mov si, colours
    mov cx, 12
.dac:
    lodsb
    out dx, al
    loop .dac
    mov ax, 0xA000
    mov es, ax
    xor di, di
    xor bx, bx              ; row
.row:
    mov al, bl
    and al, 3
    add al, 0x10
    mov cx, 320
    rep stosb
    inc bx
    cmp bx, 200
    jb .row
    mov byte [es:7*320+5], 0x13
    hlt
colours: db 63,0,0, 0,63,0, 0,0,63, 63,63,63
{MODE13_TABLES}"
    );
    let m = run("mode13", &src);
    assert!(m.board().vga.borrow_mut().render());
    assert_eq!(frame(&m), (DisplayMode::Color256, 320, 200));
    assert_eq!(pixel(&m, 0, 0), RED);
    assert_eq!(pixel(&m, 319, 1), GREEN);
    assert_eq!(pixel(&m, 100, 2), BLUE);
    assert_eq!(pixel(&m, 5, 7), WHITE);
    assert_eq!(pixel(&m, 6, 7), WHITE);
    assert_eq!(pixel(&m, 4, 6), BLUE);
    assert_eq!(pixel(&m, 10, 199), WHITE);
    // Nothing changed since: nothing to redraw.
    assert!(!m.board().vga.borrow_mut().render());
}

#[test]
fn planar_mode_12h_write_modes_map_mask_and_bit_mask() {
    let src = format!(
        r"{PROLOGUE}
    mov ax, 0xA000
    mov es, ax
    xor di, di              ; clear all planes (as the BIOS does when it sets the mode)
    xor ax, ax
    mov cx, 640*480/8/2
    rep stosw
    mov dx, 0x3CE
    ; Write mode 2, bit mask 0x80: colour 12 into pixel (0,0) only.
    mov ax, 0x0205
    out dx, ax
    mov ax, 0x8008
    out dx, ax
    mov al, [es:0]          ; load the latches
    mov byte [es:0], 12
    ; Write mode 0, bit mask 0xFF, map mask plane 0: 0xF0 → pixels 0-3 of row 1 colour 1.
    mov ax, 0x0005
    out dx, ax
    mov ax, 0xFF08
    out dx, ax
    mov dx, 0x3C4
    mov ax, 0x0102
    out dx, ax
    mov byte [es:80], 0xF0
    ; Set/reset colour 14 on all planes, bit mask 0x0F, all planes: row 2 pixels 4-7 yellow.
    mov ax, 0x0F02
    out dx, ax
    mov dx, 0x3CE
    mov ax, 0x0E00
    out dx, ax
    mov ax, 0x0F01
    out dx, ax
    mov ax, 0x0F08
    out dx, ax
    mov al, [es:160]
    mov byte [es:160], 0
    ; Write mode 3 (set/reset colour 14, data rotated is the bit mask): row 3, pixels 0-1.
    mov ax, 0x0001
    out dx, ax
    mov ax, 0x0305
    out dx, ax
    mov ax, 0xFF08
    out dx, ax
    mov al, [es:240]
    mov byte [es:240], 0xC0
    ; Read mode 1: compare colour 14 against pixels 0-7 of row 2 → 0x0F.
    mov ax, 0x0805
    out dx, ax
    mov ax, 0x0E02
    out dx, ax
    mov ax, 0x0F07
    out dx, ax
    mov al, [es:160]
    mov [0x500], al
    hlt
{MODE12_TABLES}"
    );
    let mut m = run("mode12", &src);
    m.board().vga.borrow_mut().render();
    assert_eq!(frame(&m), (DisplayMode::Planar16, 640, 480));
    let light_red = [255, 85, 85, 255];
    let blue = [0, 0, 170, 255];
    let yellow = [255, 255, 85, 255];
    assert_eq!(pixel(&m, 0, 0), light_red);
    assert_eq!(pixel(&m, 1, 0), BLACK);
    for x in 0..4 {
        assert_eq!(pixel(&m, x, 1), blue, "row 1 pixel {x}");
        assert_eq!(pixel(&m, x + 4, 1), BLACK, "row 1 pixel {}", x + 4);
        assert_eq!(pixel(&m, x, 2), BLACK, "row 2 pixel {x}");
        assert_eq!(pixel(&m, x + 4, 2), yellow, "row 2 pixel {}", x + 4);
    }
    assert_eq!(pixel(&m, 0, 3), yellow);
    assert_eq!(pixel(&m, 1, 3), yellow);
    assert_eq!(pixel(&m, 2, 3), BLACK);
    assert_eq!(phys(&mut m, 0x500, 1), 0x0F, "read mode 1 colour compare");
}

#[test]
fn bochs_vbe_32bpp_through_the_bank_window_and_the_lfb() {
    // 320x240x32 through DISPI; pixel (0,0) red via bank 0, pixel (0,52) green via bank 1
    // (offset 52*1280 = 0x10400).
    let src = r"
bits 16
org 0x7C00
    cli
    xor ax, ax
    mov ds, ax
    mov dx, 0x1CE
    mov ax, 0
    out dx, ax
    inc dx
    in ax, dx
    mov [0x500], ax         ; the DISPI ID
    mov bx, 1               ; XRES
    mov cx, 320
    call dispi
    mov bx, 2
    mov cx, 240
    call dispi
    mov bx, 3
    mov cx, 32
    call dispi
    mov bx, 4
    mov cx, 0x41            ; enabled, LFB
    call dispi
    mov ax, 0xA000
    mov es, ax
    mov dword [es:0], 0x00FF0000
    mov bx, 5
    mov cx, 1
    call dispi
    mov dword [es:0x0400], 0x0000FF00
    hlt
dispi:
    mov dx, 0x1CE
    mov ax, bx
    out dx, ax
    inc dx
    mov ax, cx
    out dx, ax
    ret
";
    let mut m = run("vbe", src);
    assert_eq!(phys(&mut m, 0x500, 2), 0xB0C5);
    // The LFB at PCI BAR0: pixel (1,0) blue.
    m.cpu.bus.mmio_write(0xE000_0004, 4, 0x0000_00FF);
    assert!(m.board().vga.borrow_mut().render());
    assert_eq!(frame(&m), (DisplayMode::Vbe { bpp: 32 }, 320, 240));
    assert_eq!(pixel(&m, 0, 0), RED);
    assert_eq!(pixel(&m, 1, 0), BLUE);
    assert_eq!(pixel(&m, 0, 52), GREEN);
    assert_eq!(pixel(&m, 2, 0), BLACK);
    // Only the touched line is redrawn: a write elsewhere leaves the frame correct.
    m.cpu
        .bus
        .mmio_write(0xE000_0000 + 100 * 1280 + 8, 2, 0xFFFF);
    m.cpu
        .bus
        .mmio_write(0xE000_0000 + 100 * 1280 + 10, 2, 0x00FF);
    assert!(m.board().vga.borrow_mut().render());
    assert_eq!(pixel(&m, 2, 100), WHITE);
    assert_eq!(pixel(&m, 0, 0), RED);
}

fn image(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("images")
        .join(name)
}

#[test]
fn linux_vgacon_shows_the_boot_messages_on_the_text_screen() {
    let kernel = std::fs::read(image("bzImage")).expect("images/bzImage");
    let initrd = std::fs::read(image("initramfs.cpio.gz")).expect("images/initramfs.cpio.gz");
    let mut m = Machine::new(MachineConfig::default());
    wasm86::boot::linux::load(
        &mut m.cpu,
        &kernel,
        Some(&initrd),
        "console=ttyS0 console=tty0 nomodeset",
    )
    .expect("load the kernel");
    let mut serial = Vec::new();
    let start = m.cpu.instructions;
    while !String::from_utf8_lossy(&serial).contains("Run /init as init process") {
        m.run(5_000_000);
        serial.extend(m.serial_output(0));
        assert!(
            m.cpu.instructions - start < 3_000_000_000,
            "Linux did not reach init; serial:\n{}",
            String::from_utf8_lossy(&serial)
        );
    }
    let serial = String::from_utf8_lossy(&serial).replace('\r', "");
    let screen = m.board().vga.borrow_mut().screen_text();
    assert_eq!(screen.len(), 25, "80x25 text mode");
    let screen_joined = screen.join("\n");
    // The last kernel lines on the serial console are on the screen too.
    let lines: Vec<&str> = serial
        .lines()
        .filter(|l| l.starts_with('[') && l.len() < 80)
        .collect();
    let last: Vec<&str> = lines.iter().rev().take(3).copied().collect();
    assert!(last.len() == 3, "serial:\n{serial}");
    for l in last {
        assert!(
            screen.iter().any(|s| s == l),
            "{l:?} not on the screen:\n{screen_joined}"
        );
    }
    let vga = m.board().vga.clone();
    let mut vga = vga.borrow_mut();
    vga.render();
    assert_eq!((vga.width(), vga.height()), (720, 400));
}
