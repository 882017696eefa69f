//! The command line as a user runs it: `wasm86 --hda IMAGE --append "... root=/dev/sda"` boots
//! the disk's own userland (not the bundled initramfs) and leaves the image file unchanged.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn images() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images")
}

/// A private copy of images/disk.img (the test must not depend on the repository's file staying
/// untouched, and checks that its copy does).
fn disk_copy(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasm86-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("disk.img");
    std::fs::copy(images().join("disk.img"), &path).unwrap();
    path
}

fn boot(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wasm86"))
        .args(args)
        .args(["--timeout", "120"])
        .output()
        .expect("wasm86 runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn a_root_on_the_disk_boots_without_the_bundled_initramfs_and_the_image_stays() {
    let disk = disk_copy("root");
    let before = std::fs::read(&disk).unwrap();
    let (ok, out) = boot(&[
        "--hda",
        disk.to_str().unwrap(),
        "--append",
        "console=ttyS0 root=/dev/sda rw",
        "--until",
        "wasm86 disk root is up",
    ]);
    assert!(ok, "the disk's init did not announce itself:\n{out}");
    assert!(
        !out.contains("Welcome to wasm86"),
        "the bundled initramfs booted instead of the disk:\n{out}"
    );
    assert!(out.contains("VFS: Mounted root"), "{out}");
    assert_eq!(std::fs::read(&disk).unwrap(), before, "the image changed");
    if let Some(dir) = disk.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn initrd_none_boots_the_bundled_kernel_alone() {
    // No initrd and no root: the kernel cannot mount a root file system and says so.
    let (ok, out) = boot(&[
        "--initrd",
        "none",
        "--until",
        "VFS: Unable to mount root fs",
    ]);
    assert!(ok, "{out}");
    assert!(!out.contains("Unpacking initramfs"), "{out}");
}

/// The CLI with `args`, no input: (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wasm86"))
        .args(args)
        .args(["--timeout", "120"])
        .output()
        .expect("wasm86 runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `instructions=N` that `--stats` prints.
fn instructions(stderr: &str) -> u64 {
    let at = stderr.find("instructions=").expect("--stats output") + "instructions=".len();
    stderr[at..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count")
}

#[test]
fn a_state_saved_at_until_resumes_into_exactly_the_run_that_would_have_followed() {
    let dir = std::env::temp_dir().join(format!("wasm86-cli-{}-state", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("boot.state");
    let state = state.to_str().unwrap();
    let (ok, first, err) = run(&[
        "--until",
        "Freeing unused",
        "--save-state",
        state,
        "--stats",
    ]);
    assert!(ok && err.contains("state saved to"), "{err}");
    let (ok, resumed, err_resumed) = run(&["--load-state", state, "--until", "/ # ", "--stats"]);
    assert!(ok, "{err_resumed}");
    let (ok, straight, err_straight) = run(&["--until", "/ # ", "--stats"]);
    assert!(ok, "{err_straight}");
    assert_eq!(first + &resumed, straight, "the serial output differs");
    assert_eq!(instructions(&err_resumed), instructions(&err_straight));

    // Not a state file, and a state that needs a disk it was not given.
    let kernel = images().join("bzImage");
    let (ok, _, err) = run(&["--load-state", kernel.to_str().unwrap()]);
    assert!(!ok && err.contains("not a wasm86 state file"), "{err}");
    let disk = disk_copy("state");
    let with_disk = dir.join("disk.state");
    let (ok, _, err) = run(&[
        "--append",
        "console=ttyS0",
        "--hda",
        disk.to_str().unwrap(),
        "--until",
        "Run /init",
        "--save-state",
        with_disk.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["--load-state", with_disk.to_str().unwrap()]);
    assert!(!ok && err.contains("needs the disk image slot 0"), "{err}");
    assert!(err.contains("disk.img"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(d) = disk.parent() {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_recorded_session_replays_exactly_and_a_changed_one_says_where_it_diverged() {
    use wasm86::state::replay::{Event, Recording};
    let dir = std::env::temp_dir().join(format!("wasm86-cli-{}-replay", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rec = dir.join("session.rec");
    let rec_arg = rec.to_str().unwrap();
    let (ok, recorded, err) = common::run_cli(
        &["--record", rec_arg, "--until", "rec-42", "--timeout", "120"],
        "/ # ",
        || {},
        "echo rec-$((6*7))\n",
    );
    assert!(ok && err.contains("recorded"), "{err}");
    let (ok, replayed, err) = run(&["--replay", rec_arg]);
    assert!(ok, "{err}");
    assert!(err.contains("the same as recorded"), "{err}");
    assert_eq!(replayed, recorded, "the replay printed something else");

    // The same input one instruction later: the replay notices at that input.
    let mut r = Recording::from_bytes(&std::fs::read(&rec).unwrap()).unwrap();
    let Some(Event::Serial { at, .. }) = r
        .events
        .iter_mut()
        .find(|e| matches!(e, Event::Serial { .. }))
    else {
        panic!("no serial input was recorded")
    };
    *at += 1;
    let changed = dir.join("changed.rec");
    std::fs::write(&changed, r.to_bytes()).unwrap();
    let (ok, _, err) = run(&["--replay", changed.to_str().unwrap()]);
    assert!(!ok && err.contains("diverged at instruction"), "{err}");
    // A damaged file is refused.
    let mut bytes = std::fs::read(&rec).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&changed, &bytes).unwrap();
    let (ok, _, err) = run(&["--replay", changed.to_str().unwrap()]);
    assert!(!ok && err.contains("corrupt"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn what_the_guest_writes_to_ports_e9_and_402_goes_to_the_debugcon_file() {
    let file = std::env::temp_dir().join(format!("wasm86-cli-{}-debugcon", std::process::id()));
    let path = file.to_str().unwrap();
    // /dev/port: a byte written at offset N is an OUT to port N (0xE9 = 233, 0x402 = 1026).
    let (ok, out, err) = common::run_cli(
        &["--debugcon", path, "--until", "DEBUG42", "--timeout", "120"],
        "/ # ",
        || {},
        "printf A | dd of=/dev/port bs=1 seek=233 2>/dev/null; \
         printf B | dd of=/dev/port bs=1 seek=1026 2>/dev/null; echo DEBUG$((6*7))\n",
    );
    assert!(ok, "{out}\n{err}");
    let written = std::fs::read(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    assert_eq!(written, b"AB", "{out}");
    let (ok, _, err) = run(&["--debugcon", "/nonexistent/dir/x"]);
    assert!(
        !ok && err.contains("--debugcon /nonexistent/dir/x"),
        "{err}"
    );
}

#[test]
fn until_screen_ends_the_run_when_the_vga_text_shows_it_and_stats_give_the_post_code() {
    let (ok, _, err) = run(&[
        "--append",
        "console=ttyS0 console=tty0 nomodeset",
        "--until-screen",
        "Run /init as init process",
        "--screen-text",
        "--stats",
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("post=0x"), "{err}");
    // It stopped there: the boot had not printed its last message yet.
    assert!(instructions(&err) < 250_000_000, "{err}");
    // Text that never shows: the timeout ends the run (exit 2).
    let out = Command::new(env!("CARGO_BIN_EXE_wasm86"))
        .args(["--until-screen", "never shown", "--timeout", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_floppy_image_is_checked_and_a_saved_machine_asks_for_it_again() {
    let dir = std::env::temp_dir().join(format!("wasm86-cli-{}-fda", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fda = dir.join("a.img");
    std::fs::write(&fda, vec![0xF6u8; 1_474_560]).unwrap();
    let fda = fda.to_str().unwrap();
    let (ok, _, err) = run(&["--fda", env!("CARGO_MANIFEST_DIR")]);
    assert!(!ok && err.contains("--fda"), "{err}");
    let toml = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let (ok, _, err) = run(&["--fda", toml]);
    assert!(!ok && err.contains("a floppy image must be"), "{err}");
    let (ok, _, err) = run(&["--fda", "http://127.0.0.1:9/a.img"]);
    assert!(!ok && err.contains("must be a file"), "{err}");

    let state = dir.join("s.state");
    let state = state.to_str().unwrap();
    // The bundled Linux with a floppy attached (without a kernel option, a floppy would boot
    // through the BIOS).
    let initrd = concat!(env!("CARGO_MANIFEST_DIR"), "/images/initramfs.cpio.gz");
    let (ok, _, err) = run(&[
        "--initrd",
        initrd,
        "--fda",
        fda,
        "--until",
        "Run /init",
        "--save-state",
        state,
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["--load-state", state]);
    assert!(
        !ok && err.contains("slot 4 (fda)") && err.contains("a.img"),
        "{err}"
    );
    let (ok, out, err) = run(&["--load-state", state, "--fda", fda, "--until", "/ # "]);
    assert!(ok && out.contains("/ # "), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn counters_print_what_the_boot_did_on_stderr() {
    let (ok, stdout, stderr) = run(&["--until", "/ # ", "--counters"]);
    assert!(ok, "{stderr}");
    assert!(
        !stdout.contains("sensitive unprivileged"),
        "counters go to stderr"
    );
    // The boot's user space makes system calls at CPL 3 (INT 0x80 and SYSENTER), the kernel
    // switches address spaces and talks to the serial port.
    let row = |name: &str| -> Vec<u64> {
        let line = stderr
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{stderr}"));
        line[line.find(name).unwrap() + name.len()..]
            .split_whitespace()
            .map(|v| v.replace(',', "").parse().unwrap())
            .collect()
    };
    let int_n = row("INT n");
    assert!(
        int_n[0] > 0 && int_n[2] == int_n[0],
        "INT n only at CPL 3: {int_n:?}"
    );
    assert!(row("SYSENTER")[2] > 0);
    assert!(row("CR3 loads (address-space switches)")[0] > 0);
    let com1 = row("COM1 16550A");
    assert_eq!(com1[0], com1[1] + com1[2], "accesses = reads + writes");
    assert!(com1[2] > 1000, "{com1:?}");
}
