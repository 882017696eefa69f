//! Boot tests: the bundled Linux (images/bzImage + images/initramfs.cpio.gz) boots natively to a
//! shell on the serial console, which computes `echo $((6*7))`; and the loader's clear errors on
//! the real image. Skipped (with the reason printed) only when the images are absent.
//!
//! Run with `cargo test --release --test boot` (the guest executes about a billion
//! instructions). The guard against a hang is an instruction budget, not a wall-clock limit.

use std::path::{Path, PathBuf};
use wasm86::boot::linux::{self, LoadError};
use wasm86::jit::JitStats;
use wasm86::machine::{Machine, MachineConfig, Stop};

fn image(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("images")
        .join(name)
}

/// The bundled kernel and initramfs, or None (with the reason printed) if they are absent.
/// The bundled kernel and initramfs (committed in images/; a missing file is a failure).
fn bundled() -> (Vec<u8>, Vec<u8>) {
    let read = |name: &str| {
        let path = image(name);
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "bundled guest image {} missing ({e}); images/build.sh builds it",
                path.display()
            )
        })
    };
    (read("bzImage"), read("initramfs.cpio.gz"))
}

/// Collects COM1 output and answers the terminal queries busybox's line editor sends.
struct Console {
    machine: Machine,
    out: Vec<u8>,
    /// How far `out` was scanned for cursor-position queries.
    scanned: usize,
}

impl Console {
    /// Run until `text` appears in the output after `from`, within `budget` instructions.
    fn wait_for(&mut self, text: &str, from: usize, budget: u64) -> Result<usize, String> {
        let start = self.machine.cpu.instructions;
        loop {
            let stop = self.machine.run(5_000_000);
            self.out.extend(self.machine.serial_output(0));
            // "Where is the cursor?" (ESC [ 6 n): answer "row 1, column 1" as a terminal would.
            while let Some(pos) = find(&self.out[self.scanned..], b"\x1b[6n") {
                self.scanned += pos + 4;
                for &b in b"\x1b[1;1R" {
                    self.send(b);
                }
            }
            if let Some(pos) = find(&self.out[from..], text.as_bytes()) {
                return Ok(from + pos + text.len());
            }
            if let Stop::Reset(cause) = stop {
                return Err(format!("guest reset ({cause:?}) waiting for {text:?}"));
            }
            if self.machine.cpu.instructions - start > budget {
                return Err(format!(
                    "{text:?} did not appear within {budget} instructions; output:\n{}",
                    String::from_utf8_lossy(&self.out)
                ));
            }
        }
    }

    fn send(&mut self, b: u8) {
        // Feed only as fast as the UART takes characters.
        for _ in 0..1000 {
            if self.machine.serial_input(0, b) {
                return;
            }
            self.machine.run(10_000);
            self.out.extend(self.machine.serial_output(0));
        }
        panic!("the guest stopped reading COM1");
    }

    fn type_line(&mut self, line: &str) {
        for b in line.bytes() {
            self.send(b);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn bundled_linux_boots_to_a_shell_that_computes() {
    let (kernel, initrd) = bundled();
    let mut machine = Machine::new(MachineConfig::default());
    linux::load(
        &mut machine.cpu,
        &kernel,
        Some(&initrd),
        "console=ttyS0 earlyprintk=serial",
    )
    .expect("the bundled kernel loads");
    let mut con = Console {
        machine,
        out: Vec::new(),
        scanned: 0,
    };
    let at = con
        .wait_for("Linux version", 0, 2_000_000_000)
        .unwrap_or_else(|e| panic!("{e}"));
    let at = con
        .wait_for("/ # ", at, 3_000_000_000)
        .unwrap_or_else(|e| panic!("{e}"));
    con.type_line("echo $((6*7))\n");
    con.wait_for("\n42", at, 500_000_000)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn loader_rejects_a_file_that_is_not_a_bzimage() {
    let (_, initrd) = bundled();
    let mut m = Machine::new(MachineConfig::default());
    assert!(matches!(
        linux::load(&mut m.cpu, &initrd, None, ""),
        Err(LoadError::NotBzImage(_))
    ));
}

#[test]
fn loader_rejects_a_truncated_kernel() {
    let (kernel, _) = bundled();
    let mut m = Machine::new(MachineConfig::default());
    let cut = &kernel[..kernel.len() / 2];
    let err = linux::load(&mut m.cpu, cut, None, "").unwrap_err();
    assert!(matches!(err, LoadError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("truncated"));
}

#[test]
fn loader_rejects_an_initrd_too_large_for_memory() {
    let (kernel, _) = bundled();
    let mut m = Machine::new(MachineConfig {
        ram_bytes: 32 << 20,
        ..MachineConfig::default()
    });
    let huge = vec![0u8; 31 << 20];
    let err = linux::load(&mut m.cpu, &kernel, Some(&huge), "").unwrap_err();
    assert!(matches!(err, LoadError::InitrdTooLarge { .. }), "{err}");
}

/// Boot the bundled image to the shell prompt; return what COM1 printed and the instructions
/// retired by then.
fn boot_to_prompt() -> (Vec<u8>, u64) {
    let (out, n, _, _) = boot_to_prompt_with(|_| {});
    (out, n)
}

/// [`boot_to_prompt`] on a machine that `setup` prepares first; also the compiling tier's
/// counters and the machine's event counters.
fn boot_to_prompt_with(
    setup: impl FnOnce(&mut Machine),
) -> (Vec<u8>, u64, JitStats, wasm86::machine::CounterTable) {
    let (kernel, initrd) = bundled();
    let mut machine = Machine::new(MachineConfig::default());
    setup(&mut machine);
    linux::load(&mut machine.cpu, &kernel, Some(&initrd), "console=ttyS0")
        .expect("the bundled kernel loads");
    let mut con = Console {
        machine,
        out: Vec::new(),
        scanned: 0,
    };
    con.wait_for("/ # ", 0, 5_000_000_000)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(con.machine.cpu.jit_error(), None);
    let stats = con.machine.cpu.jit_stats();
    let counters = con.machine.counters();
    (con.out, con.machine.cpu.instructions, stats, counters)
}

#[test]
fn deterministic_mode_boots_the_same_way_twice() {
    let (out_a, n_a) = boot_to_prompt();
    let (out_b, n_b) = boot_to_prompt();
    assert_eq!(
        n_a, n_b,
        "retired instructions differ between identical boots"
    );
    assert!(
        out_a == out_b,
        "serial output differs between identical boots:\n{}\n---\n{}",
        String::from_utf8_lossy(&out_a),
        String::from_utf8_lossy(&out_b)
    );
}

/// (Native only: the browser runs the same check with its own engine, tests/web_jit.rs.)
#[cfg(not(target_arch = "wasm32"))]
/// The compiling tier changes nothing a guest can see: with it on (through the native wasm
/// engine, at its most eager threshold and at the default) the boot prints the same bytes and
/// retires the same instructions as the interpreter alone, and compiled code did run.
#[test]
fn the_compiling_tier_boots_exactly_as_the_interpreter_does() {
    let (out_plain, n_plain, _, counted_plain) = boot_to_prompt_with(|_| {});
    for threshold in [1, wasm86::jit::DEFAULT_THRESHOLD] {
        let (out, n, stats, counted) = boot_to_prompt_with(|m| {
            m.cpu.set_jit(
                Some(Box::new(wasm86::jit::wasmi_engine::WasmiEngine::new())),
                threshold,
            )
        });
        assert_eq!(
            n, n_plain,
            "retired instructions differ, threshold {threshold}"
        );
        assert!(
            out == out_plain,
            "serial output differs with threshold {threshold}:\n{}\n---\n{}",
            String::from_utf8_lossy(&out_plain),
            String::from_utf8_lossy(&out)
        );
        assert!(
            stats.compiled_instructions > n / 10,
            "threshold {threshold}: {stats:?}"
        );
        // The events the guest caused are the same too (how code was decoded, compiled and
        // looked up in the TLB is the emulator's business).
        use wasm86::machine::counters::{CODE_GROUP, MEMORY_GROUP};
        for (plain, compiled) in counted_plain.groups.iter().zip(&counted.groups) {
            if plain.title != CODE_GROUP && plain.title != MEMORY_GROUP {
                assert_eq!(plain, compiled, "threshold {threshold}");
            }
        }
        assert!(
            counted
                .row(CODE_GROUP, "instructions run compiled")
                .is_some_and(|v| v[0] == stats.compiled_instructions),
            "{}",
            counted.to_text()
        );
        eprintln!("threshold {threshold}: {n} instructions, {stats:?}");
    }
}
