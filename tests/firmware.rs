//! Booting through the BIOS as a user does: `wasm86 --fda IMAGE`, `--hda IMAGE`, `--boot`, with
//! the bundled SeaBIOS and SeaVGABIOS. The images are made here: a boot sector that prints its
//! message through the VGA BIOS (INT 10h teletype) and halts, so each run shows that the CPU
//! started at the reset vector, the BIOS shadowed itself, ran the display's option ROM, read the
//! boot sector from the drive asked for (the floppy by the 82077AA and DMA, the disk by IDE) and
//! jumped to it.

use std::path::PathBuf;
use std::process::Command;

/// A boot sector that prints `message` with INT 10h AH=0Eh and halts.
fn boot_sector(message: &str) -> [u8; 512] {
    #[rustfmt::skip]
    let code = [
        0xFA,                   // 7C00: cli
        0x31, 0xC0,             //       xor ax, ax
        0x8E, 0xD8,             //       mov ds, ax
        0x8E, 0xD0,             //       mov ss, ax
        0xBC, 0x00, 0x7C,       //       mov sp, 0x7C00
        0xFB,                   //       sti
        0xBE, 0x1F, 0x7C,       //       mov si, message (7C1F)
        0xAC,                   // 7C0E: lodsb
        0x84, 0xC0,             //       test al, al
        0x74, 0x09,             //       jz 7C1C
        0xB4, 0x0E,             //       mov ah, 0x0E
        0xBB, 0x07, 0x00,       //       mov bx, 0x0007
        0xCD, 0x10,             //       int 0x10
        0xEB, 0xF2,             //       jmp 7C0E
        0xF4,                   // 7C1C: hlt
        0xEB, 0xFD,             //       jmp 7C1C
    ];
    let mut s = [0u8; 512];
    s[..code.len()].copy_from_slice(&code);
    s[code.len()..code.len() + message.len()].copy_from_slice(message.as_bytes());
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

/// The file `name` in this test run's private directory.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasm86-firmware-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// An image of `size` bytes starting with a boot sector that prints `message`, in the private
/// directory.
fn image(name: &str, size: usize, message: &str) -> PathBuf {
    let path = scratch(name);
    let mut bytes = vec![0u8; size];
    bytes[..512].copy_from_slice(&boot_sector(message));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Run the CLI with `args`, the screen printed at exit, stopped after `timeout` seconds (exit
/// code 2); its exit code and everything it printed.
fn run_for(args: &[&str], timeout: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wasm86"))
        .args(args)
        .args(["--timeout", timeout, "--screen-text"])
        .output()
        .expect("wasm86 runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// [`run_for`] with two minutes, for a run that must end by itself; whether it exited 0.
fn run(args: &[&str]) -> (bool, String) {
    let (code, out) = run_for(args, "120");
    (code == Some(0), out)
}

#[test]
fn a_floppy_boots_through_the_bios() {
    let fda = image("boot.img", 1_474_560, "WASM86 FLOPPY BOOTED");
    let (ok, out) = run(&[
        "--fda",
        fda.to_str().unwrap(),
        "--until-screen",
        "WASM86 FLOPPY BOOTED",
    ]);
    assert!(ok, "the floppy's boot sector did not print:\n{out}");
    assert!(
        out.contains("SeaBIOS"),
        "the BIOS banner is on the screen:\n{out}"
    );
    assert!(out.contains("Booting from Floppy"), "{out}");
}

#[test]
fn the_boot_order_picks_the_drive() {
    let fda = image("order-a.img", 1_474_560, "FROM THE FLOPPY");
    let hda = image("order-c.img", 1 << 20, "FROM THE HARD DISK");
    for (order, expected, other) in [
        ("c", "FROM THE HARD DISK", "FROM THE FLOPPY"),
        ("ac", "FROM THE FLOPPY", "FROM THE HARD DISK"),
    ] {
        let (ok, out) = run(&[
            "--fda",
            fda.to_str().unwrap(),
            "--hda",
            hda.to_str().unwrap(),
            "--boot",
            order,
            "--until-screen",
            expected,
        ]);
        assert!(ok, "--boot {order}: {expected} did not print:\n{out}");
        assert!(!out.contains(other), "--boot {order}:\n{out}");
    }
}

#[test]
fn bad_firmware_options_are_clear_errors() {
    let fda = image("err.img", 1_474_560, "X");
    let fda = fda.to_str().unwrap();
    let big = scratch("big.rom");
    std::fs::write(&big, vec![0u8; 512 << 10]).unwrap();
    let not_a_rom = scratch("plain.rom");
    std::fs::write(&not_a_rom, [0u8; 4096]).unwrap();
    for (args, says) in [
        (vec!["--fda", fda, "--boot", "x"], "--boot x"),
        (vec!["--fda", fda, "--boot", "aa"], "twice"),
        (
            vec!["--fda", fda, "--bios", "/nonexistent.rom"],
            "/nonexistent.rom",
        ),
        (
            vec!["--fda", fda, "--bios", big.to_str().unwrap()],
            "at most",
        ),
        (
            vec!["--fda", fda, "--vga-bios", not_a_rom.to_str().unwrap()],
            "55 AA",
        ),
        (vec!["--boot", "a", "--kernel", fda], "cannot be used with"),
    ] {
        let (ok, out) = run(&args);
        assert!(!ok && out.contains(says), "{args:?}: {out}");
        assert!(!out.contains("panicked"), "{args:?}: {out}");
    }
}

#[test]
fn a_machine_booted_through_the_bios_is_saved_and_resumed() {
    let fda = image("saved.img", 1_474_560, "SAVED AFTER BOOT");
    let fda = fda.to_str().unwrap();
    let state = scratch("bios.state");
    let state = state.to_str().unwrap();
    let (ok, out) = run(&[
        "--fda",
        fda,
        "--until-screen",
        "SAVED AFTER BOOT",
        "--save-state",
        state,
    ]);
    assert!(ok, "{out}");
    // The resumed machine has its BIOS (the state holds the firmware and the shadow RAM it
    // runs from): it runs on for two seconds, taking the BIOS's timer interrupt all along,
    // without a reset, and the screen is as it was.
    let (code, text) = run_for(
        &[
            "--load-state",
            state,
            "--fda",
            fda,
            "--until-screen",
            "NEVER SHOWN",
            "--stats",
        ],
        "2",
    );
    assert_eq!(code, Some(2), "ran until the timeout:\n{text}");
    assert!(
        text.contains("SAVED AFTER BOOT") && !text.contains("reset"),
        "{text}"
    );
}

#[test]
fn the_bundled_linux_cd_boots_through_the_bios_and_isolinux() {
    let iso = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images/boot.iso");
    let before = std::fs::read(&iso).unwrap();
    let (ok, out) = run(&["--cdrom", iso.to_str().unwrap(), "--until", "/ # "]);
    assert!(ok, "no shell prompt:\n{out}");
    assert!(
        out.contains("ISOLINUX"),
        "ISOLINUX's banner on the serial line:\n{out}"
    );
    assert!(out.contains("Linux version"), "{out}");
    assert_eq!(std::fs::read(&iso).unwrap(), before, "the image changed");
}

#[test]
fn the_bundled_linux_on_a_partitioned_disk_boots_through_syslinux_s_menu() {
    let hda = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images/hdboot.img");
    let before = std::fs::read(&hda).unwrap();
    let (ok, out) = run(&["--hda", hda.to_str().unwrap(), "--until", "/ # "]);
    assert!(ok, "no shell prompt:\n{out}");
    for needle in [
        "SYSLINUX",
        "wasm86 hard disk (SYSLINUX)",
        "Automatic boot in",
        "Linux version",
    ] {
        assert!(
            out.contains(needle),
            "no {needle:?} on the serial line:\n{out}"
        );
    }
    assert_eq!(std::fs::read(&hda).unwrap(), before, "the image changed");
}

#[test]
fn the_grub_floppy_starts_memtest86_from_its_menu() {
    let fda = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images/floppy.img");
    let before = std::fs::read(&fda).unwrap();
    let (ok, out) = run(&[
        "--fda",
        fda.to_str().unwrap(),
        "--until-screen",
        "Press <F1> to configure",
    ]);
    assert!(ok, "Memtest86+ did not start:\n{out}");
    assert!(
        out.contains("GNU GRUB  version 2.06"),
        "GRUB's menu on the serial line:\n{out}"
    );
    assert!(out.contains("Memtest86+ v6.10"), "{out}");
    // What it found: the machine's 128 MiB.
    assert!(out.contains("Memory  :  128MB"), "{out}");
    assert_eq!(std::fs::read(&fda).unwrap(), before, "the image changed");
}

/// A machine booting through the bundled firmware in `order`, with `floppy` in drive A:, `disk`
/// as the first hard disk and `cd` in the CD-ROM drive (file names under images/).
fn bios_machine(
    order: &str,
    floppy: Option<&str>,
    disk: Option<&str>,
    cd: Option<&str>,
) -> wasm86::machine::Machine {
    use wasm86::block::MemBackend;
    use wasm86::dev::atapi::Cdrom;
    use wasm86::dev::fdc::Diskette;
    use wasm86::dev::ide::{AtaDisk, Drive};
    let images = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images");
    let firmware = wasm86::machine::Firmware::new(
        std::fs::read(images.join("firmware/bios-256k.bin")).unwrap(),
        Some(std::fs::read(images.join("firmware/vgabios-stdvga.bin")).unwrap()),
        wasm86::machine::BootOrder::parse(order).unwrap(),
    )
    .unwrap();
    let mut m = wasm86::machine::Machine::new(wasm86::machine::MachineConfig {
        firmware: Some(firmware),
        ..Default::default()
    });
    let backend = |name: &str| Box::new(MemBackend::new(std::fs::read(images.join(name)).unwrap()));
    if let Some(f) = floppy {
        m.insert_floppy(0, Some(Diskette::new(backend(f), false).unwrap()));
    }
    if let Some(d) = disk {
        m.attach_drive(0, Drive::Ata(AtaDisk::new(backend(d)).unwrap()));
    }
    if let Some(c) = cd {
        m.attach_drive(2, Drive::Atapi(Cdrom::with_disc(backend(c))));
    }
    m
}

/// The text screen's rows.
fn screen(m: &wasm86::machine::Machine) -> Vec<String> {
    m.board().vga.borrow().screen_text()
}

/// Run `m` until a row of its text screen shows `text` (at most 2,000 slices of a million
/// instructions: 20 s of virtual time).
fn run_until_screen(m: &mut wasm86::machine::Machine, text: &str) {
    for _ in 0..2_000 {
        if screen(m).iter().any(|r| r.contains(text)) {
            return;
        }
        m.run(1_000_000);
    }
    panic!("no {text:?} on the screen:\n{}", screen(m).join("\n"));
}

/// Press and release the key `code` (a `KeyboardEvent.code`).
fn press(m: &mut wasm86::machine::Machine, code: &str) {
    let make = wasm86::keymap::scancode(code).unwrap();
    m.key_event(make, true);
    m.run(200_000);
    m.key_event(make, false);
    m.run(200_000);
}

#[test]
fn a_key_in_grub_s_menu_chainloads_the_hard_disk_s_syslinux() {
    let mut m = bios_machine("a", Some("floppy.img"), Some("hdboot.img"), None);
    run_until_screen(&mut m, "Boot the first hard disk");
    press(&mut m, "ArrowDown");
    press(&mut m, "Enter");
    run_until_screen(&mut m, "wasm86 hard disk (SYSLINUX)");
    assert!(
        !screen(&m).iter().any(|r| r.contains("Memtest86+ v6.10")),
        "the default entry ran instead"
    );
}

#[test]
fn the_bios_boot_menu_boots_the_device_picked_with_a_digit() {
    // The hard disk comes first in the order, so only the menu can start the CD.
    let mut m = bios_machine("cd", None, Some("hdboot.img"), Some("boot.iso"));
    m.set_boot_menu(2500);
    run_until_screen(&mut m, "Press ESC for boot menu.");
    press(&mut m, "Escape");
    run_until_screen(&mut m, "Select boot device:");
    let rows = screen(&m);
    let cd = rows
        .iter()
        .find(|r| r.contains("DVD/CD"))
        .unwrap_or_else(|| panic!("no CD in the menu:\n{}", rows.join("\n")));
    assert!(
        rows.iter()
            .any(|r| r.contains("WASM86 HARDDISK") || r.contains("ata0-0")),
        "no hard disk in the menu:\n{}",
        rows.join("\n")
    );
    let digit = cd.trim_start().chars().next().unwrap();
    assert!(digit.is_ascii_digit(), "{cd:?}");
    press(&mut m, &format!("Digit{digit}"));
    run_until_screen(&mut m, "ISOLINUX");
    assert!(
        !screen(&m).iter().any(|r| r.contains("SYSLINUX")),
        "the hard disk booted"
    );
}

/// Nothing to boot: SeaBIOS says so on the screen and, 60 s later, resets the machine. A run
/// waiting for a text that never came ends with exit 3, not as a success.
#[test]
fn no_bootable_device_is_shown_and_a_reset_before_the_awaited_text_fails_the_run() {
    // No boot signature: every byte zero.
    let blank = scratch("blank.img");
    std::fs::write(&blank, vec![0u8; 1_474_560]).unwrap();
    let blank = blank.to_str().unwrap();
    let (ok, out) = run(&["--fda", blank, "--until-screen", "No bootable device."]);
    assert!(ok, "{out}");
    assert!(out.contains("Boot failed: not a bootable disk"), "{out}");
    let (code, out) = run_for(&["--fda", blank, "--until-screen", "NEVER SHOWN"], "120");
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("\"NEVER SHOWN\" did not appear"), "{out}");
}
