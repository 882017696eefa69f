//! Browser tests of the wasm-bindgen API (`src/web`), run in headless Chromium by
//! `wasm-pack test --headless --chrome` (set WASM_BINDGEN_TEST_TIMEOUT=300: one test boots
//! Linux). Native `cargo test` skips this file.
//!
//! Small real-mode programs are loaded straight into RAM through the Rust-side
//! `Machine::core_mut` (no kernel needed); the boot test uses the bundled Linux.
#![cfg(target_arch = "wasm32")]

use js_sys::{Array, Promise, Uint8Array};
use wasm86::cpu::{SegCache, Segment};
use wasm86::web::{scancodes, Disk, Machine};
use wasm_bindgen::prelude::*;
use wasm_bindgen::{Clamped, JsCast};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;
use web_sys::{Blob, CanvasRenderingContext2d, HtmlCanvasElement, ImageData, Url};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = log)]
    fn console_log(s: &str);
}

const KERNEL: &[u8] = include_bytes!("../images/bzImage");
const INITRD: &[u8] = include_bytes!("../images/initramfs.cpio.gz");

/// Where programs are loaded and started (0000:1000).
const ORIGIN: u32 = 0x1000;

fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Yield to the event loop for `ms` milliseconds (fetches complete meanwhile).
async fn sleep(ms: i32) {
    let p = Promise::new(&mut |resolve, _| {
        web_sys::window()
            .unwrap()
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .unwrap();
    });
    JsFuture::from(p).await.unwrap();
}

/// The message of an Error thrown or rejected by the API.
fn message(e: JsError) -> String {
    let v = JsValue::from(e);
    v.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .unwrap_or_else(|| format!("{v:?}"))
}

/// A 4 MiB machine running `code` in real mode at 0000:1000.
fn with_program(code: &[u8]) -> Machine {
    let mut m = Machine::new(4.0).expect("a 4 MiB machine");
    let core = m.core_mut();
    core.cpu.mem.load(ORIGIN, code);
    core.cpu.segs[Segment::CS as usize] = SegCache::real(0);
    core.cpu.eip = ORIGIN;
    m
}

/// Run until the program halts with interrupts off (it ends with cli; hlt), yielding between
/// slices; panics after `timeout_ms`.
async fn run_until_halted(m: &mut Machine, timeout_ms: f64) {
    let start = now_ms();
    loop {
        m.run(now_ms(), 1_000_000.0);
        if m.core().cpu.halted {
            return;
        }
        assert!(now_ms() - start < timeout_ms, "the program did not finish");
        sleep(1).await;
    }
}

fn ram(m: &Machine, at: usize, len: usize) -> Vec<u8> {
    m.core().cpu.mem.ram[at..at + len].to_vec()
}

// ---- framebuffer to canvas ----

#[wasm_bindgen_test]
fn framebuffer_reaches_a_canvas() {
    // mov ax,0xB800 ; mov es,ax ; xor di,di ; mov ax,0x1F41 ('A', white on blue) ;
    // mov cx,80 ; cld ; rep stosw ; cli ; hlt
    let mut m = with_program(&[
        0xB8, 0x00, 0xB8, 0x8E, 0xC0, 0x31, 0xFF, 0xB8, 0x41, 0x1F, 0xB9, 0x50, 0x00, 0xFC, 0xF3,
        0xAB, 0xFA, 0xF4,
    ]);
    assert_eq!(m.run(now_ms(), 10_000.0), "idle");
    let text = m.screen_text();
    assert_eq!(text.lines().next(), Some("A".repeat(80).as_str()));
    assert_eq!(text.split('\n').count(), 25, "{text:?}");

    assert!(m.render(), "the first frame is new");
    let (w, h) = (m.width(), m.height());
    assert!(w >= 640 && h >= 350, "{w}x{h}");
    let fb = m.framebuffer();
    assert_eq!(fb.len(), (w * h * 4) as usize);

    let document = web_sys::window().unwrap().document().unwrap();
    let canvas: HtmlCanvasElement = document
        .create_element("canvas")
        .unwrap()
        .dyn_into()
        .unwrap();
    canvas.set_width(w);
    canvas.set_height(h);
    document.body().unwrap().append_child(&canvas).unwrap();
    let ctx: CanvasRenderingContext2d = canvas
        .get_context("2d")
        .unwrap()
        .unwrap()
        .dyn_into()
        .unwrap();
    let image = ImageData::new_with_u8_clamped_array_and_sh(Clamped(&fb), w, h).unwrap();
    ctx.put_image_data(&image, 0.0, 0.0).unwrap();
    let back = ctx
        .get_image_data(0.0, 0.0, f64::from(w), f64::from(h))
        .unwrap()
        .data()
        .0;
    canvas.remove();
    assert!(
        back == fb,
        "the canvas holds the frame exactly (opaque pixels)"
    );

    // The first text row (16 pixels) is blue with white glyph pixels; the next rows are black.
    let px = |x: u32, y: u32| {
        let i = ((y * w + x) * 4) as usize;
        [back[i], back[i + 1], back[i + 2], back[i + 3]]
    };
    let row_h = h / 25;
    let first_row: Vec<[u8; 4]> = (0..row_h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| px(x, y))
        .collect();
    let blue = first_row
        .iter()
        .filter(|p| **p == [0, 0, 0xAA, 0xFF])
        .count();
    let white = first_row
        .iter()
        .filter(|p| **p == [0xFF, 0xFF, 0xFF, 0xFF])
        .count();
    assert!(blue > first_row.len() / 2, "{blue} blue pixels");
    assert!(white > 80 * 10, "{white} white pixels (80 A glyphs)");
    assert_eq!(px(w / 2, h / 2), [0, 0, 0, 0xFF], "blank rows are black");
    assert!(!m.render(), "nothing changed since");
}

// ---- key events to scancodes ----

#[wasm_bindgen_test]
fn key_codes_map_to_set2_scancodes() {
    assert_eq!(scancodes("KeyA"), [0x1C]);
    assert_eq!(scancodes("ArrowUp"), [0xE0, 0x75]);
    assert_eq!(scancodes("IntlBackslash"), [0x61]);
    assert_eq!(scancodes("Pause").len(), 8);
    assert!(scancodes("Fn").is_empty());
    assert!(scancodes("").is_empty());
}

#[wasm_bindgen_test]
async fn a_key_reaches_the_guest_as_set1() {
    // Poll port 0x64, store each byte from port 0x60 at 0x2000.., four bytes, then stop.
    #[rustfmt::skip]
    let mut m = with_program(&[
        0xFA,                   // cli
        0xBF, 0x00, 0x20,       // mov di, 0x2000
        0xE4, 0x64,             // l: in al, 0x64
        0xA8, 0x01,             // test al, 1
        0x74, 0xFA,             // jz l
        0xE4, 0x60,             // in al, 0x60
        0xAA,                   // stosb
        0x81, 0xFF, 0x04, 0x20, // cmp di, 0x2004
        0x75, 0xF1,             // jne l
        0xFA, 0xF4,             // cli ; hlt
    ]);
    assert!(m.key("KeyA", true));
    assert!(m.key("KeyA", false));
    assert!(!m.key("Fn", true), "no such PC key");
    assert!(m.key("ArrowUp", true));
    run_until_halted(&mut m, 5_000.0).await;
    // Translation is on (as a BIOS leaves it): set 1, make 0x1E, break 0x9E, E0 48.
    assert_eq!(ram(&m, 0x2000, 4), [0x1E, 0x9E, 0xE0, 0x48]);
    assert!(m.take_messages().is_empty());
}

/// A program that reads `keys` bytes from the keyboard controller to 0x2000, then `serial`
/// bytes from COM1 (8N1) to 0x2100, then halts.
fn keys_then_serial(keys: u8, serial: u8) -> Vec<u8> {
    #[rustfmt::skip]
    let code = vec![
        0xFA,                   // cli
        0xBA, 0xFB, 0x03,       // mov dx, 0x3FB (LCR)
        0xB0, 0x03, 0xEE,       // mov al, 3 ; out dx, al (8 bits)
        0xBF, 0x00, 0x20,       // mov di, 0x2000
        0xE4, 0x64,             // k: in al, 0x64
        0xA8, 0x01,             // test al, 1
        0x74, 0xFA,             // jz k
        0xE4, 0x60,             // in al, 0x60
        0xAA,                   // stosb
        0x81, 0xFF, keys, 0x20, // cmp di, 0x2000 + keys
        0x75, 0xF1,             // jne k
        0xBF, 0x00, 0x21,       // mov di, 0x2100
        0xBA, 0xFD, 0x03,       // s: mov dx, 0x3FD (LSR)
        0xEC,                   // in al, dx
        0xA8, 0x01,             // test al, 1 (data ready)
        0x74, 0xF8,             // jz s
        0xBA, 0xF8, 0x03,       // mov dx, 0x3F8
        0xEC,                   // in al, dx
        0xAA,                   // stosb
        0x81, 0xFF, serial, 0x21, // cmp di, 0x2100 + serial
        0x75, 0xED,             // jne s
        0xFA, 0xF4,             // cli ; hlt
    ];
    code
}

#[wasm_bindgen_test]
async fn typed_text_and_serial_input_reach_the_guest() {
    // Read 6 keyboard bytes to 0x2000, then 3 serial bytes (COM1, 8N1) to 0x2100.
    let mut m = with_program(&keys_then_serial(6, 3));
    m.type_text("Ab");
    m.type_text("é");
    // Serial bytes sent before the guest set 8-bit characters would arrive cut to 5 bits (the
    // UART's reset setting), as on a real line: let the program set up the UART first.
    m.run(now_ms(), 100.0);
    m.send_serial(b"xyz");
    run_until_halted(&mut m, 5_000.0).await;
    assert_eq!(ram(&m, 0x2000, 6), [0x2A, 0x1E, 0x9E, 0xAA, 0x30, 0xB0]);
    assert_eq!(ram(&m, 0x2100, 3), b"xyz");
    let msgs = m.take_messages();
    assert!(
        msgs.len() == 1 && msgs[0].contains("1 characters were skipped"),
        "{msgs:?}"
    );
}

// ---- ranged fetch through the streaming backend ----

/// A test image: sector `s` starts with `s` (u32 LE) and continues with `s*7 + i`.
fn test_image(sectors: u32) -> Vec<u8> {
    (0..sectors)
        .flat_map(|s| {
            (0..512u32).map(move |i| {
                if i < 4 {
                    s.to_le_bytes()[i as usize]
                } else {
                    (s.wrapping_mul(7) + i) as u8
                }
            })
        })
        .collect()
}

fn blob_url(bytes: &[u8]) -> String {
    let parts = Array::of1(&Uint8Array::from(bytes));
    let blob = Blob::new_with_u8_array_sequence(&parts).unwrap();
    Url::create_object_url_with_blob(&blob).unwrap()
}

/// A program that reads sector `lba` of the primary master with ATA PIO (polling, interrupts
/// off) to 0x3000 and stores the final status at 0x2FFF.
fn ata_read_program(lba: u32) -> Vec<u8> {
    let mut c = vec![0xFA]; // cli
    let wait_not_busy = |c: &mut Vec<u8>| {
        c.extend([0xBA, 0xF7, 0x01]); // mov dx, 0x1F7
        let top = c.len();
        c.extend([0xEC, 0xA8, 0x80, 0x75]); // in al,dx ; test al,0x80 ; jnz top
        let rel = top as i32 - (c.len() as i32 + 1);
        c.push(rel as u8);
    };
    let out = |c: &mut Vec<u8>, port: u16, v: u8| {
        c.extend([0xBA, port as u8, (port >> 8) as u8, 0xB0, v, 0xEE]); // mov dx ; mov al ; out
    };
    wait_not_busy(&mut c);
    out(&mut c, 0x1F6, 0xE0 | ((lba >> 24) as u8 & 0x0F)); // LBA mode, master
    out(&mut c, 0x1F2, 1); // one sector
    out(&mut c, 0x1F3, lba as u8);
    out(&mut c, 0x1F4, (lba >> 8) as u8);
    out(&mut c, 0x1F5, (lba >> 16) as u8);
    out(&mut c, 0x1F7, 0x20); // READ SECTORS
    wait_not_busy(&mut c);
    c.extend([0xA2, 0xFF, 0x2F]); // mov [0x2FFF], al
    c.extend([0xA8, 0x08, 0x74, 0x0C]); // test al, 8 (DRQ) ; jz done
    c.extend([0xBA, 0xF0, 0x01]); // mov dx, 0x1F0
    c.extend([0xBF, 0x00, 0x30]); // mov di, 0x3000
    c.extend([0xB9, 0x00, 0x01]); // mov cx, 256
    c.extend([0xFC, 0xF3, 0x6D]); // cld ; rep insw
    c.extend([0xFA, 0xF4]); // done: cli ; hlt
    c
}

#[wasm_bindgen_test]
async fn a_streamed_disk_fetches_only_what_the_guest_reads() {
    const SECTORS: u32 = 8192; // 4 MiB
    let image = test_image(SECTORS);
    let url = blob_url(&image);
    let disk = Disk::open_url(url.clone(), None)
        .await
        .map_err(message)
        .expect("open the blob URL");
    assert!(disk.streamed(), "Chromium honours Range on blob: URLs");
    assert_eq!(disk.size(), image.len() as f64);
    assert_eq!(disk.bytes_fetched(), 256.0 * 1024.0, "the probe: one chunk");
    assert_eq!(disk.warning(), None);

    // Sector 4096 lies 2 MiB in: not fetched yet, so the read waits for a fetch.
    let lba = 4096;
    let mut m = with_program(&ata_read_program(lba));
    m.attach_disk(0, disk).map_err(message).unwrap();
    run_until_halted(&mut m, 10_000.0).await;
    let status = ram(&m, 0x2FFF, 1)[0];
    assert_eq!(status & 0x89, 0x08, "DRQ, no error: status {status:#x}");
    let want = &image[lba as usize * 512..(lba as usize + 1) * 512];
    assert!(ram(&m, 0x3000, 512) == want, "the sector's bytes");
    // The probe's chunk and the one holding the sector (with at most a few read ahead).
    let fetched = m.downloaded_bytes();
    let chunk = 256.0 * 1024.0;
    assert!(
        fetched >= 2.0 * chunk && fetched <= 6.0 * chunk && fetched % chunk == 0.0,
        "fetched {fetched} of {} bytes",
        image.len()
    );
    assert!(m.take_messages().is_empty());
    Url::revoke_object_url(&url).unwrap();
}

#[wasm_bindgen_test]
async fn a_chunk_that_cannot_be_fetched_is_retried_then_a_medium_error() {
    let image = test_image(2048); // 1 MiB
    let url = blob_url(&image);
    let disk = Disk::open_url(url.clone(), None)
        .await
        .map_err(message)
        .unwrap();
    // The server goes away after the probe: every chunk fetch fails (network error).
    Url::revoke_object_url(&url).unwrap();
    let mut m = with_program(&ata_read_program(1024));
    m.attach_disk(0, disk).map_err(message).unwrap();
    let start = now_ms();
    // Four attempts with 250, 500 and 1000 ms between them, then the guest sees the error.
    run_until_halted(&mut m, 15_000.0).await;
    let waited = now_ms() - start;
    assert!(waited >= 1700.0, "retried with back-off: {waited} ms");
    let status = ram(&m, 0x2FFF, 1)[0];
    assert_eq!(status & 0x09, 0x01, "ERR, no DRQ: status {status:#x}");
    let msgs = m.take_messages();
    assert!(
        msgs.len() == 1
            && msgs[0].starts_with("hda: read of bytes 524288-")
            && msgs[0].contains("failed after 4 attempts")
            && msgs[0].contains(&url),
        "{msgs:?}"
    );
}

#[wasm_bindgen_test]
async fn a_server_that_ignores_range_is_downloaded_whole() {
    // `data:` URLs ignore Range (200 with the whole body), as a server without Range support.
    let image = test_image(4);
    let latin1: String = image.iter().map(|&b| char::from(b)).collect();
    let base64 = web_sys::window().unwrap().btoa(&latin1).unwrap();
    let url = format!("data:application/octet-stream;base64,{base64}");
    let disk = Disk::open_url(url, None)
        .await
        .map_err(message)
        .expect("open the data: URL");
    assert!(!disk.streamed());
    assert_eq!(disk.size(), 2048.0);
    assert_eq!(disk.bytes_fetched(), 2048.0);
    let w = disk.warning().expect("a warning");
    assert_eq!(
        w,
        "data: URL: the server ignores Range requests, so the whole image (2 KiB) was downloaded"
    );
    let mut m = Machine::new(4.0).unwrap();
    m.insert_cdrom(disk).map_err(message).unwrap();
    assert_eq!(m.take_messages(), [w]);
    assert_eq!(m.downloaded_bytes(), 2048.0);
}

// ---- error paths ----

#[wasm_bindgen_test]
async fn bad_urls_reject_with_plain_messages() {
    let e = message(
        Disk::open_url("no-such-image.img".into(), None)
            .await
            .err()
            .expect("a 404 rejects"),
    );
    assert_eq!(e, "no-such-image.img: HTTP 404 Not Found");

    let url = blob_url(&[1, 2, 3]);
    Url::revoke_object_url(&url).unwrap();
    let e = message(
        Disk::open_url(url.clone(), None)
            .await
            .err()
            .expect("a revoked blob rejects"),
    );
    assert!(e.starts_with(&format!("{url}: ")), "{e}");

    let e = message(
        Disk::open_url("http://[::1".into(), None)
            .await
            .err()
            .expect("a malformed URL rejects"),
    );
    assert!(e.contains("http://[::1"), "{e}");

    let url = blob_url(&test_image(8));
    let e = message(
        Disk::open_url(url.clone(), Some(0))
            .await
            .err()
            .expect("a cache of 0 MiB rejects"),
    );
    assert_eq!(
        e,
        format!("{url}: a disk cache of 0 MiB cannot hold a read: give at least 1")
    );
    Url::revoke_object_url(&url).unwrap();
}

#[wasm_bindgen_test]
fn bad_machines_kernels_and_disks_throw() {
    for mib in [0.0, 1.0, 2.5, -4.0, 3073.0, f64::NAN, f64::INFINITY] {
        let e = message(Machine::new(mib).err().expect("rejected"));
        assert!(e.starts_with("memory: "), "{mib}: {e}");
    }
    let mut m = Machine::new(2.0).unwrap();
    let noise: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let e = message(m.load_linux(noise, None, String::new()).unwrap_err());
    assert!(e.starts_with("kernel: not a bzImage"), "{e}");
    let e = message(m.load_linux(Vec::new(), None, String::new()).unwrap_err());
    assert!(e.starts_with("kernel: "), "{e}");
    let e = message(
        m.load_linux(KERNEL[..4096].to_vec(), None, String::new())
            .unwrap_err(),
    );
    assert!(e.starts_with("kernel: truncated"), "{e}");
    let e = message(
        m.load_linux(KERNEL.to_vec(), None, String::new())
            .unwrap_err(),
    );
    assert!(e.contains("RAM"), "2 MiB is too little for the kernel: {e}");

    let e = message(
        m.attach_disk(0, Disk::from_bytes("one.img".into(), vec![0]))
            .unwrap_err(),
    );
    assert_eq!(
        e,
        "hda one.img: the image size (1 bytes) is not a multiple of 512 bytes"
    );
    let e = message(
        m.attach_disk(2, Disk::from_bytes("x".into(), vec![0; 512]))
            .unwrap_err(),
    );
    assert!(e.contains("no hard disk position 2"), "{e}");
    let e = message(
        m.insert_cdrom(Disk::from_bytes("empty.iso".into(), Vec::new()))
            .unwrap_err(),
    );
    assert_eq!(e, "cdrom empty.iso: the image is empty");
    // The machine still works after all that.
    assert!(["budget", "idle", "reset"].contains(&m.run(now_ms(), 1000.0).as_str()));
    m.run(f64::NAN, f64::NAN);
    m.run(-1.0, -5.0);
    m.mouse(i32::MAX, i32::MIN, 7, 0xFF);
}

// ---- saved states and recordings across platforms ----

#[path = "programs/ticker.rs"]
mod ticker;

/// The ticker program saved natively at `ticker::SAVE_AT` (tests/snapshot.rs checks it).
const TICKER_STATE: &[u8] = include_bytes!("data/ticker.state");

#[wasm_bindgen_test]
fn a_state_saved_in_chromium_is_the_native_file_and_the_native_file_restores_here() {
    use wasm86::machine::{Machine as Core, TimeMode};
    let mut a = ticker::machine();
    ticker::run_to(&mut a, ticker::SAVE_AT);
    let state = a.save_state();
    // The very bytes the native build saved: so a state saved here restores natively (where
    // that file is restored), and the other way round.
    assert!(
        state == TICKER_STATE,
        "Chromium saved {} bytes, natively {}",
        state.len(),
        TICKER_STATE.len()
    );
    let mut b = Core::restore_state(TICKER_STATE, TimeMode::Deterministic, vec![]).unwrap();
    let rest_a = ticker::run_to(&mut a, ticker::END_AT);
    let rest_b = ticker::run_to(&mut b, ticker::END_AT);
    assert_eq!(rest_a, rest_b);
    assert_eq!(a.cpu.instructions, b.cpu.instructions);
    assert!(a.cpu.mem.ram == b.cpu.mem.ram, "RAM differs");
    assert_eq!(ticker::counters(&a), ticker::counters(&b));
}

#[wasm_bindgen_test]
async fn a_run_recorded_in_the_browser_replays_exactly() {
    use wasm86::machine::{Machine as Core, TimeMode};
    use wasm86::state::replay::{Event, Recording};
    // Wait for 4 keyboard bytes, then 2 serial bytes, storing them at 0x2000 and 0x2100.
    let mut m = with_program(&keys_then_serial(4, 2));
    m.run(now_ms(), 100.0);
    m.start_recording();
    assert!(m.is_recording());
    m.type_text("Ab");
    // Real time: the inputs land wherever the host's clock puts them.
    sleep(3).await;
    m.send_serial(b"ok");
    run_until_halted(&mut m, 5_000.0).await;
    let file = m.stop_recording().expect("a recording");
    assert!(m.stop_recording().is_none(), "the recording was taken");
    let rec = Recording::from_bytes(&file).unwrap();
    assert!(rec.realtime);
    let keys = rec.events.iter().filter(|e| matches!(e, Event::Key { .. }));
    // Shift, A, A up, Shift up, B, B up.
    assert_eq!(keys.count(), 6, "{:?}", rec.events);

    let mut b = Core::restore_state(&rec.start, TimeMode::Realtime, vec![]).unwrap();
    assert_eq!(b.replay(&rec, |_| {}), Ok(()));
    assert_eq!(b.cpu.instructions, m.core().cpu.instructions);
    assert_eq!(ram(&m, 0x2000, 4), [0x2A, 0x1E, 0x9E, 0xAA]);
    assert_eq!(b.cpu.mem.ram[0x2000..0x2004], ram(&m, 0x2000, 4));
    assert_eq!(&b.cpu.mem.ram[0x2100..0x2102], b"ok");
}

// ---- Linux in the browser ----

/// Run `m` until `done` says so; returns the serial output collected meanwhile.
async fn run_until(
    m: &mut Machine,
    serial: &mut String,
    what: &str,
    timeout_ms: f64,
    done: impl Fn(&Machine, &str) -> bool,
) {
    let start = now_ms();
    let mut last_yield = start;
    loop {
        let state = m.run(now_ms(), 2_000_000.0);
        assert_ne!(state, "reset", "the guest reset; serial so far:\n{serial}");
        serial.push_str(&String::from_utf8_lossy(&m.serial_output()));
        if done(m, serial) {
            return;
        }
        assert!(
            now_ms() - start < timeout_ms,
            "timeout waiting for {what}; serial so far:\n{serial}\nscreen:\n{}",
            m.screen_text()
        );
        if now_ms() - last_yield > 50.0 {
            sleep(0).await;
            last_yield = now_ms();
        }
    }
}

/// The guest's /proc/uptime in seconds, asked over serial.
async fn uptime(m: &mut Machine, serial: &mut String) -> f64 {
    let parse = |s: &str| {
        s.lines().find_map(|l| {
            let t: Vec<f64> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (t.len() == 2).then(|| t[0])
        })
    };
    serial.clear();
    m.send_serial(b"cat /proc/uptime\n");
    run_until(m, serial, "/proc/uptime", 30_000.0, |_, s| {
        parse(s).is_some()
    })
    .await;
    parse(serial).unwrap_or_default()
}

#[wasm_bindgen_test]
async fn linux_boots_to_a_shell_and_answers_on_serial_and_screen() {
    let mut m = Machine::new(64.0).unwrap();
    m.load_linux(
        KERNEL.to_vec(),
        Some(INITRD.to_vec()),
        // nomodeset keeps the VGA text console (else bochs-drm switches to a graphical one).
        "console=ttyS0 console=tty0 nomodeset".into(),
    )
    .map_err(message)
    .unwrap();
    let mut serial = String::new();
    let t0 = now_ms();
    run_until(
        &mut m,
        &mut serial,
        "the shell prompt",
        120_000.0,
        |_, s| s.contains("wasm86:/ # "),
    )
    .await;
    let boot_s = (now_ms() - t0) / 1000.0;
    let boot_instr = m.instructions();
    run_until(
        &mut m,
        &mut serial,
        "the prompt on tty1",
        30_000.0,
        |m, _| m.screen_text().contains("wasm86:/ #"),
    )
    .await;
    assert!(serial.contains("Welcome to wasm86"), "{serial}");

    let (uptime_before, host_before) = (uptime(&mut m, &mut serial).await, now_ms());

    // Guest speed on a busy loop in the shell.
    let i0 = m.instructions();
    let t1 = now_ms();
    m.send_serial(b"i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; echo loop-$i\n");
    run_until(&mut m, &mut serial, "the busy loop", 120_000.0, |_, s| {
        s.contains("loop-30000")
    })
    .await;
    let busy_s = (now_ms() - t1) / 1000.0;
    let busy_mips = (m.instructions() - i0) / busy_s / 1e6;
    console_log(&format!(
        "wasm86 in Chromium: shell prompt after {boot_s:.1} s ({:.0} M instructions, {:.1} \
         MIPS averaged over boot incl. idle); busy shell loop: {:.0} M instructions in {busy_s:.1} \
         s = {busy_mips:.1} MIPS",
        boot_instr / 1e6,
        boot_instr / boot_s / 1e6,
        (m.instructions() - i0) / 1e6,
    ));

    // Real time: over the busy loop, which the guest runs slower than its nominal speed, the
    // guest's clock kept pace with the host's (it falls behind only if timer ticks are lost;
    // Linux would then also distrust its TSC).
    let guest_s = uptime(&mut m, &mut serial).await - uptime_before;
    let host_s = (now_ms() - host_before) / 1000.0;
    console_log(&format!(
        "guest clock: {guest_s:.2} s passed while the host's clock showed {host_s:.2} s"
    ));
    assert!(
        (guest_s - host_s).abs() < 0.1 * host_s + 0.2,
        "the guest's clock lost time: {guest_s} s vs {host_s} s on the host"
    );
    assert!(!serial.contains("unstable"), "{serial}");

    // The keyboard, through the paced queue, to the shell on tty1 (42 needs every shifted
    // character typed right; kernel messages may interleave with the echo on the screen).
    m.type_text("echo $((6*7))\n");
    run_until(&mut m, &mut serial, "42 on the screen", 30_000.0, |m, _| {
        m.screen_text().lines().any(|l| l.trim() == "42")
    })
    .await;

    // And over serial.
    serial.clear();
    m.send_serial(b"echo $((7*6))\n");
    run_until(&mut m, &mut serial, "42 on serial", 30_000.0, |_, s| {
        s.lines().any(|l| l.trim() == "42")
    })
    .await;

    // The guest reboots: run() says so and boots the kernel again, up to the prompt.
    m.send_serial(b"reboot -f\n");
    let start = now_ms();
    while m.run(now_ms(), 2_000_000.0) != "reset" {
        assert!(now_ms() - start < 30_000.0, "no reset");
    }
    serial.clear();
    run_until(
        &mut m,
        &mut serial,
        "the prompt after the reboot",
        120_000.0,
        |_, s| s.contains("wasm86:/ # "),
    )
    .await;
    assert!(serial.contains("Linux version"), "{serial}");
    assert!(m.take_messages().is_empty());
}

// ---- booting through the BIOS ----

/// Run `m` until its text screen shows `text`; panics, showing the screen, after a minute.
async fn run_until_screen(m: &mut Machine, text: &str) {
    let start = now_ms();
    while !m.screen_text().contains(text) {
        assert!(
            now_ms() - start < 60_000.0,
            "no {text:?} on the screen:\n{}",
            m.screen_text()
        );
        m.run(now_ms(), 1_000_000.0);
        sleep(1).await;
    }
}

const BIOS: &[u8] = include_bytes!("../images/firmware/bios-256k.bin");
const VGA_BIOS: &[u8] = include_bytes!("../images/firmware/vgabios-stdvga.bin");

/// A machine built with the bundled SeaBIOS and SeaVGABIOS boots a floppy given as bytes: its
/// boot sector prints through INT 10h on the text screen. Bad ROMs and orders throw.
#[wasm_bindgen_test]
async fn a_floppy_boots_through_the_bios() {
    #[rustfmt::skip]
    let code = [
        0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0x8E, 0xD0, 0xBC, 0x00, 0x7C, 0xFB, // cli; ds = ss = 0; sp
        0xBE, 0x1F, 0x7C,                                                 // mov si, message
        0xAC, 0x84, 0xC0, 0x74, 0x09,                                     // lodsb; test; jz end
        0xB4, 0x0E, 0xBB, 0x07, 0x00, 0xCD, 0x10,                         // int 10h AH=0Eh
        0xEB, 0xF2, 0xF4, 0xEB, 0xFD,                                     // loop; end: hlt
    ];
    let mut image = vec![0u8; 1_474_560];
    image[..code.len()].copy_from_slice(&code);
    let text = b"BOOTED IN THE BROWSER";
    image[code.len()..code.len() + text.len()].copy_from_slice(text);
    image[510] = 0x55;
    image[511] = 0xAA;
    let mut m = Machine::with_firmware(16.0, BIOS.to_vec(), Some(VGA_BIOS.to_vec()), "a")
        .expect("a machine with firmware");
    m.insert_floppy(Disk::from_bytes("boot.img".into(), image))
        .expect("a 1.44 MB floppy");
    run_until_screen(&mut m, "BOOTED IN THE BROWSER").await;
    assert!(m.screen_text().contains("SeaBIOS"), "{}", m.screen_text());

    let e = Machine::with_firmware(16.0, vec![], None, "a")
        .err()
        .map(message);
    assert!(e.unwrap().contains("empty"));
    let e = Machine::with_firmware(16.0, BIOS.to_vec(), None, "z")
        .err()
        .map(message);
    assert!(e.unwrap().contains("boot z"));
    let mut m = Machine::with_firmware(16.0, BIOS.to_vec(), None, "a").unwrap();
    let e = m.insert_floppy(Disk::from_bytes("odd.img".into(), vec![0; 1000]));
    assert!(message(e.unwrap_err()).contains("fda odd.img"));
}

/// The BIOS keyboard path: keys typed into the page reach a boot sector through the i8042, the
/// BIOS's IRQ 1 handler and INT 16h, and it echoes them through INT 10h.
#[wasm_bindgen_test]
async fn keys_reach_a_boot_sector_through_the_bios() {
    #[rustfmt::skip]
    let code = [
        0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0x8E, 0xD0, 0xBC, 0x00, 0x7C, 0xFB, // cli; ds = ss = 0; sp
        0xB4, 0x00, 0xCD, 0x16,                                           // 7C0B: INT 16h AH=0
        0xB4, 0x0E, 0xBB, 0x07, 0x00, 0xCD, 0x10,                         // INT 10h AH=0Eh
        0xEB, 0xF3,                                                       // jmp 7C0B
    ];
    let mut image = vec![0u8; 1_474_560];
    image[..code.len()].copy_from_slice(&code);
    image[510] = 0x55;
    image[511] = 0xAA;
    let mut m = Machine::with_firmware(16.0, BIOS.to_vec(), Some(VGA_BIOS.to_vec()), "a").unwrap();
    m.insert_floppy(Disk::from_bytes("keys.img".into(), image))
        .unwrap();
    run_until_screen(&mut m, "Booting from Floppy").await;
    m.type_text("Typed, 42!");
    run_until_screen(&mut m, "Typed, 42!").await;
}

// ---- the inspector ----

/// The page's run() stops before the instruction a breakpoint names (a linear address, or an
/// instruction that accesses a port), steps off it when run again, and the inspector's views
/// (registers, disassembly, the walk, memory, counters) describe the machine.
#[wasm_bindgen_test]
fn breakpoints_stop_the_page_s_run_before_their_instruction() {
    #[rustfmt::skip]
    let code = [
        0xB9, 0x05, 0x00, // 1000: mov cx, 5
        0x40,             // 1003: inc ax
        0xE6, 0x80,       // 1004: out 0x80, al
        0xE2, 0xFB,       // 1006: loop 1003
        0xFA, 0xF4,       // 1008: cli; hlt
    ];
    let mut m = with_program(&code);
    let reg = |m: &Machine, name: &str| -> u64 {
        let r: serde_json::Value = serde_json::from_str(&m.registers()).unwrap();
        r[name].as_u64().unwrap_or_else(|| panic!("{name} in {r}"))
    };
    assert!(m.add_breakpoint("linear", 0x1004).unwrap());
    assert!(!m.add_breakpoint("linear", 0x1004).unwrap(), "already set");
    assert_eq!(m.run(now_ms(), 1000.0), "breakpoint");
    assert_eq!((reg(&m, "eip"), reg(&m, "eax") & 0xFFFF), (0x1004, 1));
    assert_eq!(m.breakpoint_hit(), r#"{"kind":"linear","at":4100}"#);
    // Run again: off the breakpoint, once round the loop, and back to it.
    assert_eq!(m.run(now_ms(), 1000.0), "breakpoint");
    assert_eq!((reg(&m, "eip"), reg(&m, "eax") & 0xFFFF), (0x1004, 2));
    // A port breakpoint stops before the OUT too.
    assert!(m.remove_breakpoint("linear", 0x1004).unwrap());
    assert!(m.add_breakpoint("port", 0x80).unwrap());
    assert_eq!(m.breakpoints(), r#"[{"kind":"port","at":128}]"#);
    assert_eq!(m.run(now_ms(), 1000.0), "breakpoint");
    assert_eq!((reg(&m, "eip"), reg(&m, "eax") & 0xFFFF), (0x1004, 3));
    // One step: past the OUT.
    assert_eq!(m.step(1), "budget");
    assert_eq!(reg(&m, "eip"), 0x1006);
    assert!(m.add_breakpoint("port", 0x10000).is_err());
    assert!(m.add_breakpoint("page", 1).is_err());
    // The views.
    let lines: serde_json::Value = serde_json::from_str(&m.disassemble(Some(0x1003), 2)).unwrap();
    assert_eq!(lines[0]["text"], "inc ax");
    assert_eq!(lines[1]["text"], "out 0x80,al");
    let walk: serde_json::Value = serde_json::from_str(&m.translate(0x1004)).unwrap();
    assert_eq!(
        (walk["paging"].as_bool(), walk["physical"].as_u64()),
        (Some(false), Some(0x1004))
    );
    assert_eq!(m.read_memory(0x1003, 3), "[64,230,128]");
    // Without breakpoints the program runs to its end.
    m.clear_breakpoints();
    assert_eq!(m.breakpoints(), "[]");
    m.run(now_ms(), 1000.0);
    assert!(m.core().cpu.halted);
    assert_eq!(reg(&m, "eax") & 0xFFFF, 5);
    let counters: serde_json::Value = serde_json::from_str(&m.counters()).unwrap();
    let privileged = counters["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["title"] == "privileged and intercepted instructions")
        .unwrap();
    let out = privileged["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "OUT")
        .unwrap();
    assert_eq!(out["values"][0], 5, "{out}");
}
